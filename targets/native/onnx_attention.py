"""Native rules for the attention family of `q35nn.onnx_node`: Attention (3-D and 4-D,
grouped-query heads, boolean or additive masks, causal and sliding-window masks, softcap,
past/present key-value cache, `nonpad_kv_seqlen`, every `qk_matmul_output_mode`,
`softmax_precision`), RotaryEmbedding, LinearAttention (the linear, gated, delta and
gated-delta update rules), CausalConvWithState, Einsum (any equation: ellipsis, repeated
labels, sums over labels, implicit outputs), and MatMul and Gemm of the element types the
dedicated converters leave to the generic op (as an Einsum).

The rules work out each node's geometry here (heads, sequence lengths, element strides of
every operand's layout, scale factors rounded as the reference rounds them) and append one
step whose parameters are plain numbers. The kernels (`targets/c/runtime/q35rt_attn.c`,
rendered by `targets/c/onnx_attention.py`) compute in double and round every intermediate
to the element type where onnx's reference implementation (numpy, ml_dtypes) rounds it, so
float16 and bfloat16 results match the interpreter's bit for bit but for the order of long
sums; Einsum is an inline loop nest over the equation's labels.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx

from q35c.semantics.einsum import label_strides, parse_einsum
from q35c.targets.native.onnx_node import lowers
from q35c.targets.native.onnx_tensor import (
    _error,
    _ins,
    _results,
    attributes,
    broadcast_strides,
    operands,
)
from q35c.targets.native.program import Buffer, Step

F64, F32, F16, BF16, BOOL = (np.dtype(np.float64), np.dtype(np.float32),
                             np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16),
                             np.dtype(np.bool_))
CODES = {F64: 0, F32: 1, F16: 2, BF16: 3, BOOL: 4}
"""The runtime's element-type codes (Q35_T_F64 ... Q35_T_BOOL in q35rt_attn.c)."""

FLOATS = (F64, F32, F16, BF16)


def code(lowering, op, buf: Buffer, what: str, allowed=FLOATS) -> int:
    """The runtime's code of `buf`'s element type, refused unless in `allowed`."""
    if buf.dtype not in allowed:
        raise _error(lowering, op, f"{what} of element type {buf.dtype} is not supported")
    return CODES[buf.dtype]


def rounded(value: float, dtype: np.dtype) -> float:
    """`value` converted to `dtype` and back, as numpy's `dtype.type(value)` rounds it."""
    return float(dtype.type(value))


def _layout(shape: tuple[int, ...], heads: int) -> tuple[int, int, list[int]]:
    """(sequence length, head size, and the element strides of batch, head and position)
    of a (B, H, S, D) tensor, or of a (B, S, H*D) one split into `heads` heads."""
    if len(shape) == 4:
        _, _, s, d = shape
        return s, d, [heads * s * d, s * d, d]
    _, s, hd = shape
    d = hd // heads
    return s, d, [s * hd, d, hd]


def _step(lowering, op, kernel: str, outs, ins, params: dict) -> None:
    """Appends the step; its origin (for the C comments and run-time failures) names the
    op type."""
    origin = f'{op.name} "{op.op_type.data}"'
    lowering.steps.append(Step(kernel, outs, ins, params, origin))


def _scratch(lowering, count: int) -> Buffer:
    return lowering.new("arena", F64, (max(count, 1),), "work")


# -- Attention ------------------------------------------------------------------------------

@lowers("Attention")
def lower_attention(lowering, op) -> None:
    """Softmax(Q K^T * scale (+ softcap) + bias) V per (batch, head, query): the bias sums
    the mask (padded with -inf past its length), the causal and window frontiers (offset by
    the past length, or per batch by nonpad_kv_seqlen) and the padding of nonpad_kv_seqlen,
    as the reference adds them; rows whose bias is all -inf give 0."""
    attrs = attributes(op)
    given = operands(op)
    q, k, v = _ins(lowering, op, [given[0], given[1], given[2]])
    mode = code(lowering, op, q, "Q")
    for buf, what in ((k, "K"), (v, "V")):
        if buf.dtype != q.dtype:
            raise _error(lowering, op, f"{what} of element type {buf.dtype} with Q of "
                         f"{q.dtype} is not supported")
    if not len(q.shape) == len(k.shape) == len(v.shape) or len(q.shape) not in (3, 4):
        raise _error(lowering, op, "Q, K and V must all be 3-D or all 4-D")
    batch = q.shape[0]
    if len(q.shape) == 4:
        if op.opset.value.data >= 25 and ("q_num_heads" in attrs or "kv_num_heads" in attrs):
            raise _error(lowering, op, "q_num_heads and kv_num_heads must not be given for "
                         "4-D inputs")
        hq, hkv = q.shape[1], k.shape[1]
    else:
        hq, hkv = attrs.get("q_num_heads"), attrs.get("kv_num_heads")
        if not hq or not hkv:
            raise _error(lowering, op, "3-D inputs need q_num_heads and kv_num_heads")
        if q.shape[2] % hq or k.shape[2] % hkv or v.shape[2] % hkv:
            raise _error(lowering, op, "the hidden sizes must be multiples of the head counts")
    if hq % hkv:
        raise _error(lowering, op, f"{hq} query heads are not a multiple of {hkv} "
                     "key/value heads")
    sq, dk, qst = _layout(q.shape, hq)
    skv, _, kst = _layout(k.shape, hkv)
    _, dv, vst = _layout(v.shape, hkv)

    mask = _ins(lowering, op, [given[3]])[0] if 3 in given else None
    past = _ins(lowering, op, [given[4], given[5]]) if 4 in given and 5 in given else []
    if (4 in given) != (5 in given):
        raise _error(lowering, op, "past_key and past_value must be given together")
    nonpad = _ins(lowering, op, [given[6]])[0] if 6 in given else None
    if nonpad is not None and past:
        raise _error(lowering, op, "nonpad_kv_seqlen cannot be combined with a past cache")
    if nonpad is not None and nonpad.dtype != np.int64:
        raise _error(lowering, op, f"nonpad_kv_seqlen of element type {nonpad.dtype} is "
                     "not supported")
    for buf in past:
        if buf.dtype != q.dtype:
            raise _error(lowering, op, f"a past cache of element type {buf.dtype} with Q "
                         f"of {q.dtype} is not supported")
    npast = past[0].shape[2] if past else 0
    kv = npast + skv

    mask_code, mask_st, mask_len = -1, [0, 0, 0, 0], 0
    if mask is not None:
        mask_code = code(lowering, op, mask, "attn_mask", (q.dtype, BOOL))
        full = (batch, hq, sq, kv)
        if not 1 <= len(mask.shape) <= 4 or mask.shape[-1] > kv or any(
                n not in (1, m) for n, m in zip(mask.shape[::-1][1:], full[::-1][1:])):
            raise _error(lowering, op, f"attn_mask of shape {list(mask.shape)} does not "
                         f"broadcast to {list(full)}")
        mask_len = mask.shape[-1]
        mask_st = broadcast_strides(mask.shape, (batch, hq, sq, mask_len))

    causal = bool(attrs.get("is_causal", 0))
    window = [int(attrs.get("left_window_size", -1)), int(attrs.get("right_window_size", -1))]
    # The reference builds the causal mask on the attn_mask's own last two axes (a window
    # first widens them to (queries, keys)): a mask with one row gives every query the
    # first query's causal frontier, and a 1-D mask fails.
    causal_per_query = 1
    if causal and mask is not None and max(window) < 0:
        if len(mask.shape) == 1:
            raise _error(lowering, op, "is_causal with a 1-D attn_mask and no window fails "
                         "in the reference implementation")
        causal_per_query = int(mask.shape[-2] == sq)
    qk_mode = int(attrs.get("qk_matmul_output_mode", 0))
    if qk_mode not in (0, 1, 2, 3):
        raise _error(lowering, op, f"qk_matmul_output_mode={qk_mode} is not supported")
    # The reference's float attributes are numpy float32 scalars, which numpy does not
    # cast down to float16 / bfloat16 operands: a softcap makes the scores (and so the
    # softmax) float32 for them. A given scale's square root is a float32 one.
    softcap = np.float32(attrs.get("softcap", 0.0))
    score_mode = CODES[F32] if softcap > 0 and q.dtype in (F16, BF16) else mode
    precision = attrs.get("softmax_precision")
    softmax_mode = score_mode
    if precision is not None:
        softmax_dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(precision))
        if softmax_dtype not in FLOATS:
            raise _error(lowering, op, f"softmax_precision {softmax_dtype} is not supported")
        softmax_mode = CODES[softmax_dtype]
    scale = attrs.get("scale")
    scale = 1 / np.sqrt(dk) if scale is None else np.float32(scale)

    _, out_slots = op.slots()
    outs = dict(zip(out_slots, _results(lowering, op)))
    y = outs[0]
    params = {
        "mode": mode, "softmax_mode": softmax_mode,
        "dims": [batch, hq, hkv, sq, skv, npast, dk, dv],
        "qst": qst, "kst": kst, "vst": vst, "yst": _layout(y.shape, hq)[2],
        "mask": [mask_code, *mask_st, mask_len],
        "causal": int(causal), "window": window, "causal_per_query": causal_per_query,
        "qk_mode": qk_mode,
        "scale": rounded(np.sqrt(scale), q.dtype), "score_mode": score_mode,
        "softcap": float(softcap) if softcap > 0 else 0.0,
        "past": int(bool(past)), "nonpad": int(nonpad is not None), "slots": sorted(outs)}
    ins = [q, k, v, *([mask] if mask is not None else []), *past,
           *([nonpad] if nonpad is not None else [])]
    work = _scratch(lowering, dk + kv)
    _step(lowering, op, "onnx_attention", [*(outs[s] for s in sorted(outs)), work], ins,
          params)


# -- RotaryEmbedding ------------------------------------------------------------------------

@lowers("RotaryEmbedding")
def lower_rotary(lowering, op) -> None:
    """Rotates the first rotary_embedding_dim features of every head by the cos/sin rows of
    its (batch, position) (picked by position_ids when given; an id out of range fails the
    run), halves or interleaved pairs; the rest is copied."""
    attrs = attributes(op)
    given = operands(op)
    x, cos, sin = _ins(lowering, op, [given[0], given[1], given[2]])
    pos = _ins(lowering, op, [given[3]])[0] if 3 in given else None
    [out] = _results(lowering, op)
    mode = code(lowering, op, x, "the input")
    for buf in (cos, sin):
        if buf.dtype != x.dtype:
            raise _error(lowering, op, f"a cache of element type {buf.dtype} with an input "
                         f"of {x.dtype} is not supported")
    if len(x.shape) == 4:
        batch, heads, seq, head = x.shape
        xst = [heads * seq * head, seq * head, head]  # batch, head, position
    elif len(x.shape) == 3:
        heads = attrs.get("num_heads")
        if not heads:
            raise _error(lowering, op, "a 3-D input needs num_heads")
        batch, seq, hidden = x.shape
        head = hidden // heads
        xst = [seq * hidden, head, hidden]
    else:
        raise _error(lowering, op, f"an input of rank {len(x.shape)} is not supported")
    rot = int(attrs.get("rotary_embedding_dim", 0)) or head
    half = rot // 2
    if cos.shape != sin.shape or cos.shape[-1] != half:
        raise _error(lowering, op, f"the caches' last dimension must be {half} "
                     "(rotary_embedding_dim / 2)")
    if pos is not None:
        if pos.dtype != np.int64 or len(cos.shape) != 2:
            raise _error(lowering, op, "position_ids must be int64 and the caches 2-D")
        lead, rows = broadcast_strides(pos.shape, (batch, seq)), cos.shape[0]
    else:
        if len(cos.shape) > 3:
            raise _error(lowering, op, "without position_ids the caches must be 2-D or 3-D")
        lead = broadcast_strides(cos.shape[:-1], (batch, seq))
        rows = 0
    _step(lowering, op, "onnx_rotary", [out], [x, cos, sin, *([pos] if pos is not None else [])], {
        "mode": mode, "dims": [batch, heads, seq, head, rot, rows],
        "xst": xst, "lead": lead, "interleaved": int(bool(attrs.get("interleaved", 0)))})


# -- LinearAttention ------------------------------------------------------------------------

@lowers("LinearAttention")
def lower_linear_attention(lowering, op) -> None:
    """The recurrence over time of a (d_k, d_v) state per batch and key/value head, in
    float32 as the reference computes it: decay by exp(g), delta correction
    v <- beta (v - S^T k), write S += k v^T, read o = scale q S (query heads grouped onto
    key/value heads)."""
    attrs = attributes(op)
    given = operands(op)
    q, k, v = _ins(lowering, op, [given[0], given[1], given[2]])
    rule = attrs.get("update_rule", "gated_delta")
    if rule not in ("linear", "gated", "delta", "gated_delta"):
        raise _error(lowering, op, f"update_rule '{rule}' is not supported")
    gated, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    for slot, name, wanted in ((4, "decay", gated), (5, "beta", delta)):
        if wanted != (slot in given):
            raise _error(lowering, op, f"update_rule '{rule}' "
                         f"{'needs' if wanted else 'forbids'} the {name} input")
    hq, hkv = attrs.get("q_num_heads"), attrs.get("kv_num_heads")
    if not hq or not hkv or hq % hkv:
        raise _error(lowering, op, "q_num_heads must be a positive multiple of kv_num_heads")
    if not len(q.shape) == len(k.shape) == len(v.shape) == 3:
        raise _error(lowering, op, "query, key and value must be 3-D")
    batch, seq, _ = q.shape
    dk, dv = q.shape[2] // hq, v.shape[2] // hkv
    past = _ins(lowering, op, [given[3]])[0] if 3 in given else None
    decay = _ins(lowering, op, [given[4]])[0] if gated else None
    beta = _ins(lowering, op, [given[5]])[0] if delta else None
    if decay is not None and (len(decay.shape) != 3 or decay.shape[-1] not in (hkv, hkv * dk)):
        raise _error(lowering, op, f"decay must be (B, T, {hkv}) or (B, T, {hkv * dk})")
    if beta is not None and (len(beta.shape) != 3 or beta.shape[-1] not in (hkv, 1)):
        raise _error(lowering, op, f"beta must be (B, T, {hkv}) or (B, T, 1)")
    if past is not None and past.shape != (batch, hkv, dk, dv):
        raise _error(lowering, op, f"past_state must be {[batch, hkv, dk, dv]}")
    ins = [q, k, v, *(b for b in (past, decay, beta) if b is not None)]
    codes = [code(lowering, op, b, "an operand") for b in ins]
    _, out_slots = op.slots()
    outs = dict(zip(out_slots, _results(lowering, op)))
    for buf in outs.values():
        code(lowering, op, buf, "a result")
    scale = float(attrs.get("scale", 0.0))
    work = _scratch(lowering, batch * hkv * dk * dv + dv)
    _step(lowering, op, "onnx_linear_attention", [*(outs[s] for s in sorted(outs)), work], ins, {
        "dims": [batch, seq, hq, hkv, dk, dv],
        "codes": codes, "out_codes": [CODES[outs[s].dtype] for s in sorted(outs)],
        "slots": sorted(outs), "has": [int(past is not None), int(gated), int(delta)],
        "decay_per_key": int(decay is not None and decay.shape[-1] == hkv * dk and dk != 1),
        "beta_per_head": int(beta is not None and beta.shape[-1] == hkv),
        # a given scale is a Python float (weak: rounded to float32 first), the default is
        # numpy's float64 1 / sqrt(d_k) (the product is then a float64 one)
        "scale": rounded(scale, F32) if scale else float(1.0 / np.sqrt(dk))})


# -- CausalConvWithState --------------------------------------------------------------------

@lowers("CausalConvWithState")
def lower_causal_conv(lowering, op) -> None:
    """A depthwise 1-D convolution over the input left-padded by the past state (zeros if
    none), plus bias, optionally SiLU (in float32, as the reference computes it); the
    present state is the padded input's last k - 1 positions."""
    attrs = attributes(op)
    given = operands(op)
    x, w = _ins(lowering, op, [given[0], given[1]])
    bias = _ins(lowering, op, [given[2]])[0] if 2 in given else None
    past = _ins(lowering, op, [given[3]])[0] if 3 in given else None
    activation = attrs.get("activation", "none")
    if activation not in ("none", "silu", "swish"):
        raise _error(lowering, op, f"activation '{activation}' is not supported")
    mode = code(lowering, op, x, "the input")
    if len(x.shape) != 3 or len(w.shape) != 3 or w.shape[1] != 1 or w.shape[0] != x.shape[1]:
        raise _error(lowering, op, "input must be (B, C, L) and weight (C, 1, k)")
    batch, channels, length = x.shape
    taps = w.shape[2]
    for buf in (w, bias, past):
        if buf is not None and buf.dtype != x.dtype:
            raise _error(lowering, op, f"an operand of element type {buf.dtype} with an "
                         f"input of {x.dtype} is not supported")
    if bias is not None and bias.size not in (1, channels):
        raise _error(lowering, op, f"bias must have 1 or {channels} elements")
    if past is not None and past.shape != (batch, channels, taps - 1):
        raise _error(lowering, op, f"past_state must be {[batch, channels, taps - 1]}")
    _, out_slots = op.slots()
    outs = dict(zip(out_slots, _results(lowering, op)))
    _step(lowering, op, "onnx_causal_conv", [outs[s] for s in sorted(outs)],
          [x, w, *(b for b in (bias, past) if b is not None)], {
              "mode": mode, "dims": [batch, channels, length, taps],
              "bias": 0 if bias is None else bias.size, "past": int(past is not None),
              "silu": int(activation != "none"), "slots": sorted(outs)})


# -- Einsum ---------------------------------------------------------------------------------

@lowers("Einsum")
def lower_einsum(lowering, op) -> None:
    """Every output element sums, over the labels the output lacks, the product of the
    operands' elements (a label repeated in one operand walks its diagonal; ellipsis
    axes broadcast)."""
    ins = _ins(lowering, op, list(op.inputs))
    [out] = _results(lowering, op)
    einsum_step(lowering, op, ins, out, attributes(op)["equation"], round_once=True)


@lowers("MatMul")
def lower_matmul(lowering, op) -> None:
    """numpy's matmul of the element types the dedicated converter leaves to the generic
    op (float16, bfloat16, float64, the integers) as the Einsum of its ranks: batch axes
    broadcast, a 1-D operand's axis contracted and dropped. Floats accumulate in double
    (the reference: float32 for float16, BLAS's order for float64), integers wrap as
    numpy's."""
    a, b = _ins(lowering, op, list(op.inputs))
    [out] = _results(lowering, op)
    if not a.shape or not b.shape:
        raise _error(lowering, op, "a scalar operand is not supported (numpy refuses it)")
    left = "j" if len(a.shape) == 1 else "...ij"
    right = "j" if len(b.shape) == 1 else "...jk"
    result = ("..." if len(a.shape) > 1 or len(b.shape) > 1 else "") + (
        "i" if len(a.shape) > 1 else "") + ("k" if len(b.shape) > 1 else "")
    einsum_step(lowering, op, [a, b], out, f"{left},{right}->{result}")


@lowers("Gemm")
def lower_gemm(lowering, op) -> None:
    """The reference's Gemm (opset 7+) of the element types the dedicated converter leaves
    to the generic op: `dot(A', B') * alpha + C * beta` with numpy's types, the product as
    an Einsum, then (unless alpha is 1 and C absent, for floats) a `onnx_gemm_scale` step.
    The reference's alpha and beta are numpy float32 scalars: float16 and bfloat16
    products are scaled and summed in float32 and rounded once at the end, integers go
    through float64 (numpy's int * float32) and are cast back."""
    given = operands(op)
    a, b = _ins(lowering, op, [given[0], given[1]])
    c = _ins(lowering, op, [given[2]])[0] if 2 in given else None
    [out] = _results(lowering, op)
    attrs = attributes(op)
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if op.opset.value.data < 7:
        raise _error(lowering, op, "opset < 7 (the broadcast attribute) is not supported")
    if out.dtype not in FLOATS and out.dtype.kind not in "iu":
        raise _error(lowering, op, f"element type {out.dtype} is not supported")
    if len(a.shape) != 2 or len(b.shape) != 2 or len(out.shape) != 2 or (
            c is not None and len(c.shape) > 2):
        raise _error(lowering, op, "A and B must be matrices, C of rank 2 at most")
    use_c = c is not None and beta != 0
    plain = out.dtype in FLOATS and alpha == 1.0 and not use_c
    dot = out if plain else lowering.new("arena", out.dtype, out.shape, "gemm")
    left = "ki" if attrs.get("transA", 0) else "ik"
    right = "jk" if attrs.get("transB", 0) else "kj"
    einsum_step(lowering, op, [a, b], dot, f"{left},{right}->ij")
    if plain:
        return
    params = {"alpha": alpha, "beta": beta, "n": out.shape[1]}
    if use_c:
        params["c_strides"] = broadcast_strides(c.shape, out.shape)
    _step(lowering, op, "onnx_gemm_scale", [out], [dot, *([c] if use_c else [])], params)


def einsum_step(lowering, op, ins: list[Buffer], out: Buffer, equation: str,
                round_once: bool = False) -> None:
    """The `onnx_einsum` step of `equation` over `ins` into `out`: the float64 loop nest
    `q35c.semantics.einsum` defines, rounded once to the element type with `round_once`
    (Einsum), else through float32 (MatMul and Gemm, whose reference accumulates float16
    in float32)."""
    try:
        ops_labels, out_labels, extents = parse_einsum(equation, [b.shape for b in ins])
    except ValueError as err:
        raise _error(lowering, op, f"equation: {err}") from None
    if any(b.dtype == BOOL for b in ins):
        raise _error(lowering, op, "bool operands are not supported")
    if len(out_labels) != len(out.shape) or any(
            extents[label] != n for label, n in zip(out_labels, out.shape)):
        raise _error(lowering, op, f"the equation's output does not have the result's "
                     f"shape {list(out.shape)}")
    summed = [label for label in extents if label not in out_labels]
    order = out_labels + summed
    op_strides = []
    for labels, buf in zip(ops_labels, ins):
        op_strides.append(label_strides(labels, buf.shape, extents, order))
    _step(lowering, op, "onnx_einsum", [out], ins, {
        "extents": [extents[label] for label in order], "outer": len(out_labels),
        "strides": op_strides, "round_once": int(round_once)})
