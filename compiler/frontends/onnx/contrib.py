"""onnxruntime contrib ops that LLM exporters emit, expanded into standard ONNX nodes.

onnxruntime-genai's model builder (and onnxruntime's transformer optimizer) write decoder
graphs with fused operators of onnxruntime's `com.microsoft` domain. Each converter here
rewrites one such node into standard ONNX nodes with onnxruntime's semantics and imports
those in its place (`OnnxImporter.expand`), so every target runs them with the ops it
already has:

* `com.microsoft.SkipSimplifiedLayerNormalization` (residual add, then RMSNorm) and
  `com.microsoft.SkipLayerNormalization` (residual add, then LayerNorm), into q35c's
  dedicated norm ops (ops.py converts onnxruntime's `SimplifiedLayerNormalization`);
* `com.microsoft.GroupQueryAttention`: packed or separate Q/K/V, rotary embedding from
  `cos_cache`/`sin_cache` (half-split or interleaved, full or partial), the KV cache as
  `past_key`/`past_value` concatenated with the new keys and values into `present_*`,
  causal masking (optionally within a local window), `softcap`, `attention_bias`,
  `position_ids`, and keys beyond each row's `seqlens_k` masked;
* `com.microsoft.Gelu`, `BiasGelu`, `FastGelu` and `QuickGelu` (onnxruntime's transformer
  optimizer), into q35c's GELU (erf or tanh form) or x * sigmoid(alpha x);
* `com.microsoft.RotaryEmbedding`: 3-D or 4-D input, per-row positions or one start
  position, half-split or interleaved, full or partial;
* `com.microsoft.Attention` and `MultiHeadAttention` (the transformer optimizer's fused
  attention of BERT, GPT-2 and encoder-decoder models): projections, past/present,
  onnxruntime's mask forms, causal masking, attention bias.

GroupQueryAttention follows onnxruntime's cache layout: `present_*` has max(total, past
buffer) slots; row b's past is its first `seqlens_k[b] + 1 - S` slots of the buffer, its new
keys and values follow at that offset, and later slots are zero. A first prompt
(`total_sequence_length` == S, known at compile time) starts every row at position 0, and
keys beyond a row's `seqlens_k` are masked. With `total_sequence_length` a run-time value
the present is taken to be past + S slots long.
"""

from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import onnx
from onnx import NodeProto

from q35c.compiler.frontends.onnx.builder import shape_of
from q35c.compiler.frontends.onnx.ops import converter
from q35c.compiler.tensors import numpy_dtype


class _Graph:
    """Standard ONNX nodes replacing one contrib node: fresh value names under the node's
    name, and constants (initializers)."""

    def __init__(self, imp, node: NodeProto):
        self.imp, self.node = imp, node
        self.prefix = f"{node.name or node.output[0]}/q35c."
        self.nodes: list[NodeProto] = []
        self.constants: dict[str, np.ndarray] = {}
        self.counter = itertools.count()

    def fresh(self, what: str) -> str:
        return f"{self.prefix}{what}{next(self.counter)}"

    def const(self, value, dtype=np.int64) -> str:
        name = self.fresh("c")
        self.constants[name] = np.asarray(value, dtype=dtype)
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.fresh(op_type.lower())
        self.nodes.append(onnx.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def slice_last(self, x: str, start: int, end: int, axis: int = -1) -> str:
        return self.op("Slice", [x, self.const([start]), self.const([end]),
                                 self.const([axis])])

    def run(self, outputs: list[str | None]):
        return self.imp.expand(self.node, self.nodes, self.constants, outputs)


def _static_shape(imp, node, value, what: str) -> tuple[int, ...]:
    if value is None:
        raise imp.error(node, f"{what} is missing")
    shape = np.shape(value) if isinstance(value, np.ndarray) else shape_of(value)
    if not shape and not isinstance(value, np.ndarray):
        raise imp.error(node, f"{what} needs a static shape (bind it with --shape)")
    return tuple(int(d) for d in shape)


def _float_dtype(imp, node, value) -> np.dtype:
    """The element type of a float operand (float32, float16, bfloat16...)."""
    dtype = value.dtype if isinstance(value, np.ndarray) else \
        numpy_dtype(value.type.get_element_type())
    if np.dtype(dtype).kind != "f" and np.dtype(dtype).name != "bfloat16":
        raise imp.error(node, f"query has element type {np.dtype(dtype).name}, not float")
    return np.dtype(dtype)


def _input_name(node: NodeProto, index: int) -> str:
    return node.input[index] if len(node.input) > index else ""


def _norm_width(imp, node, x) -> int:
    shape = _static_shape(imp, node, x, "the input")
    if not shape or shape[-1] <= 0:
        raise imp.error(node, f"the input has shape {list(shape)}; a normalized last axis "
                              "is needed")
    return shape[-1]


@converter("com.microsoft.SkipSimplifiedLayerNormalization",
           "com.microsoft.SkipLayerNormalization")
def _skip_layer_norm(imp, node, inputs):
    """sum = input + skip (+ bias); output = RMSNorm(sum) * gamma, or LayerNorm(sum) * gamma
    (+ beta), over the last axis (q35c's dedicated norm ops); output 3 is sum."""
    _norm_width(imp, node, inputs[0])
    simplified = node.op_type == "SkipSimplifiedLayerNormalization"
    g = _Graph(imp, node)
    total = g.op("Add", [node.input[0], node.input[1]])
    bias = _input_name(node, 3 if simplified else 4)
    if bias:
        total = g.op("Add", [total, bias])
    eps = float(imp.attr(node, "epsilon", 1e-5))
    if simplified:
        y = g.op("SimplifiedLayerNormalization", [total, node.input[2]], epsilon=eps, axis=-1)
    else:
        beta = _input_name(node, 3)
        y = g.op("LayerNormalization", [total, node.input[2]] + ([beta] if beta else []),
                 epsilon=eps, axis=-1)
    return g.run([y, None, None, total][:len(node.output)])


def _rotate(g: _Graph, x: str, cos: str, sin: str, shape: tuple[int, ...], rot: int,
            interleaved: bool) -> str:
    """Rotary embedding of the first `rot` features of x [B, heads, S, D]; cos/sin are
    broadcastable to [B, 1, S, rot/2]."""
    b, heads, s, d = shape
    half = rot // 2
    part = g.slice_last(x, 0, rot) if rot < d else x
    if interleaved:
        pairs = g.op("Reshape", [part, g.const([b, heads, s, half, 2])])
        x1 = g.op("Reshape", [g.slice_last(pairs, 0, 1), g.const([b, heads, s, half])])
        x2 = g.op("Reshape", [g.slice_last(pairs, 1, 2), g.const([b, heads, s, half])])
    else:
        x1, x2 = g.slice_last(part, 0, half), g.slice_last(part, half, rot)
    r1 = g.op("Sub", [g.op("Mul", [x1, cos]), g.op("Mul", [x2, sin])])
    r2 = g.op("Add", [g.op("Mul", [x2, cos]), g.op("Mul", [x1, sin])])
    if interleaved:
        shape5 = g.const([b, heads, s, half, 1])
        both = g.op("Concat", [g.op("Reshape", [r1, shape5]), g.op("Reshape", [r2, shape5])],
                    axis=-1)
        rotated = g.op("Reshape", [both, g.const([b, heads, s, rot])])
    else:
        rotated = g.op("Concat", [r1, r2], axis=-1)
    if rot < d:
        rotated = g.op("Concat", [rotated, g.slice_last(x, rot, d)], axis=-1)
    return rotated


@converter("com.microsoft.GroupQueryAttention")
def _group_query_attention(imp, node, inputs):
    heads = int(imp.attr(node, "num_heads", 0))
    kv_heads = int(imp.attr(node, "kv_num_heads", 0))
    if heads <= 0 or kv_heads <= 0 or heads % kv_heads:
        raise imp.error(node, f"num_heads {heads} and kv_num_heads {kv_heads} must be "
                              "positive, num_heads a multiple of kv_num_heads")
    if imp.attr(node, "qk_output", 0) or _input_name(node, 11) or len(node.output) > 3 and \
            any(node.output[3:]):
        raise imp.error(node, "head_sink and qk_output are not supported")
    if _input_name(node, 3) == "" or _input_name(node, 4) == "":
        raise imp.error(node, "past_key and past_value are required")
    b, s, hidden = _static_shape(imp, node, inputs[0], "query")
    packed = not _input_name(node, 1)
    d = hidden // (heads + 2 * kv_heads) if packed else hidden // heads
    if d <= 0 or hidden != d * ((heads + 2 * kv_heads) if packed else heads):
        raise imp.error(node, f"query width {hidden} does not split into {heads} heads"
                              + (f" and 2 x {kv_heads} key/value heads" if packed else ""))
    past_shape = _static_shape(imp, node, inputs[3], "past_key")
    if len(past_shape) != 4 or past_shape[0] != b or past_shape[1] != kv_heads or \
            past_shape[3] != d:
        raise imp.error(node, f"past_key has shape {list(past_shape)}, expected "
                              f"[{b}, {kv_heads}, past, {d}]")
    if _static_shape(imp, node, inputs[4], "past_value") != past_shape:
        raise imp.error(node, "past_value's shape differs from past_key's")
    past = past_shape[2]
    known_total = inputs[6] if len(inputs) > 6 and isinstance(inputs[6], np.ndarray) else None
    if known_total is not None and known_total.size != 1:
        raise imp.error(node, "total_sequence_length must be a scalar")
    # present holds max(total_sequence_length, past buffer) slots (onnxruntime); a run-time
    # total_sequence_length is taken as past + S, the dense case
    total = max(int(known_total.reshape(-1)[0]), past) if known_total is not None \
        else past + s
    if total < s:
        raise imp.error(node, f"total_sequence_length {total} is less than the "
                              f"sequence length {s}")
    # a first prompt (onnxruntime: total_sequence_length == sequence_length) starts every
    # row at position 0; otherwise row b's past is seqlens_k[b] + 1 - S slots long
    first = known_total is not None and int(known_total.reshape(-1)[0]) == s
    fdt = _float_dtype(imp, node, inputs[0])
    # bounded before any constant of these sizes is made (a crafted total_sequence_length)
    imp.check_static_size(node, "present_key", (b, kv_heads, total, d), fdt.itemsize)
    imp.check_static_size(node, "the attention scores", (b, heads, s, total), fdt.itemsize)
    g = _Graph(imp, node)
    query = node.input[0]
    if packed:
        q = g.slice_last(query, 0, heads * d)
        k = g.slice_last(query, heads * d, (heads + kv_heads) * d)
        v = g.slice_last(query, (heads + kv_heads) * d, (heads + 2 * kv_heads) * d)
    else:
        q, k, v = query, node.input[1], node.input[2]
        for value in (inputs[1], inputs[2]):
            if _static_shape(imp, node, value, "key/value") != (b, s, kv_heads * d):
                raise imp.error(node, f"key and value must have shape [{b}, {s}, "
                                      f"{kv_heads * d}]")

    def split_heads(x: str, n: int) -> str:
        return g.op("Transpose", [g.op("Reshape", [x, g.const([b, s, n, d])])],
                    perm=[0, 2, 1, 3])

    q, k, v = split_heads(q, heads), split_heads(k, kv_heads), split_heads(v, kv_heads)
    seqlens = g.op("Cast", [node.input[5]], to=onnx.TensorProto.INT64)
    # row b's past length: 0 for a first prompt, else seqlens_k[b] + 1 - S
    start = g.const(np.zeros(b, np.int64)) if first else g.op("Add", [seqlens, g.const(1 - s)])
    if imp.attr(node, "do_rotary", 0):
        cos_cache, sin_cache = _input_name(node, 7), _input_name(node, 8)
        if not cos_cache or not sin_cache:
            raise imp.error(node, "do_rotary needs cos_cache and sin_cache")
        cache_shape = _static_shape(imp, node, inputs[7], "cos_cache")
        rot = 2 * cache_shape[-1]
        if len(cache_shape) != 2 or rot > d or rot <= 0:
            raise imp.error(node, f"cos_cache has shape {list(cache_shape)}; expected "
                                  f"[positions, <= {d // 2}]")
        if _input_name(node, 9):
            positions = node.input[9]
        elif first:
            positions = g.const(np.arange(s).reshape(1, s))
        else:  # row b continues after its past
            positions = g.op("Add", [g.op("Reshape", [start, g.const([b, 1])]),
                                     g.const(np.arange(s).reshape(1, s))])
        cos = g.op("Reshape", [g.op("Gather", [cos_cache, positions], axis=0),
                               g.const([-1, 1, s, rot // 2])])
        sin = g.op("Reshape", [g.op("Gather", [sin_cache, positions], axis=0),
                               g.const([-1, 1, s, rot // 2])])
        interleaved = bool(imp.attr(node, "rotary_interleaved", 0))
        q = _rotate(g, q, cos, sin, (b, heads, s, d), rot, interleaved)
        k = _rotate(g, k, cos, sin, (b, kv_heads, s, d), rot, interleaved)
    # present[b, :, t]: the past for t < start[b], the new token t - start[b] for
    # start[b] <= t < start[b] + S, zero after (onnxruntime's layout; the dense case is
    # past followed by the new tokens)
    slot = g.const(np.arange(total).reshape(1, 1, total, 1))
    first_new = g.op("Reshape", [start, g.const([b, 1, 1, 1])])
    is_past = g.op("Less", [slot, first_new])
    is_new = g.op("And", [g.op("Not", [is_past]),
                          g.op("Less", [slot, g.op("Add", [first_new, g.const(s)])])])

    def place(past_name: str, new: str) -> str:
        room = total - past
        if room > 0:
            padded = g.op("Concat", [past_name, g.const(np.zeros((b, kv_heads, room, d)),
                                                        fdt)], axis=2)
        else:
            padded = past_name if room == 0 else g.slice_last(past_name, 0, total, axis=2)
        if s == 1:
            shifted = new  # broadcast along the slots
        else:
            offset = g.op("Max", [g.op("Min", [g.op("Sub", [slot, first_new]),
                                               g.const(s - 1)]), g.const(0)])
            index = g.op("Expand", [offset, g.const([b, kv_heads, total, d])])
            wide = g.op("Concat", [new, g.const(np.zeros((b, kv_heads, total - s, d)), fdt)],
                        axis=2) if total > s else new
            shifted = g.op("GatherElements", [wide, index], axis=2)
        zero = g.const(0.0, fdt)
        return g.op("Where", [is_past, padded, g.op("Where", [is_new, shifted, zero])])

    present_k = place(node.input[3], k)
    present_v = place(node.input[4], v)

    def repeat_heads(x: str) -> str:
        if heads == kv_heads:
            return x
        grouped = g.op("Reshape", [x, g.const([b, kv_heads, 1, total, d])])
        spread = g.op("Expand", [grouped, g.const([b, kv_heads, heads // kv_heads, total, d])])
        return g.op("Reshape", [spread, g.const([b, heads, total, d])])

    keys, values = repeat_heads(present_k), repeat_heads(present_v)
    scale = float(imp.attr(node, "scale", 0.0)) or 1.0 / float(np.sqrt(d))
    scores = g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [keys], perm=[0, 1, 3, 2])]),
                          g.const(scale, fdt)])
    softcap = float(imp.attr(node, "softcap", 0.0))
    if softcap > 0:
        scores = g.op("Mul", [g.op("Tanh", [g.op("Mul", [scores, g.const(1 / softcap, fdt)])]),
                              g.const(softcap, fdt)])
    if _input_name(node, 10):
        scores = g.op("Add", [scores, node.input[10]])
    # query i of row b sits at start[b] + i: it sees keys up to there (within the local
    # window) and none past the row's seqlens_k[b]
    query_at = g.op("Add", [first_new, g.const(np.arange(s).reshape(1, 1, s, 1))])
    key_at = g.const(np.arange(total).reshape(1, 1, 1, total))
    mask = g.op("And", [g.op("Not", [g.op("Greater", [key_at, query_at])]),
                        g.op("Not", [g.op("Greater", [key_at, g.op("Reshape", [
                            seqlens, g.const([b, 1, 1, 1])])])])])
    window = int(imp.attr(node, "local_window_size", -1))
    if window > 0:
        mask = g.op("And", [mask, g.op("Greater", [
            key_at, g.op("Sub", [query_at, g.const(window)])])])
    lowest = g.const(ml_dtypes.finfo(fdt).min, fdt)  # numpy's finfo has no bfloat16
    probs = g.op("Softmax", [g.op("Where", [mask, scores, lowest])], axis=-1)
    attended = g.op("MatMul", [probs, values])
    out = g.op("Reshape", [g.op("Transpose", [attended], perm=[0, 2, 1, 3]),
                           g.const([b, s, heads * d])])
    return g.run([out, present_k, present_v][:len(node.output)])


# -- activations of onnxruntime's transformer optimizer ----------------------------------------


@converter("com.microsoft.Gelu", "com.microsoft.BiasGelu", "com.microsoft.FastGelu")
def _gelu(imp, node, inputs):
    """Gelu (erf), BiasGelu (erf, of A + B) and FastGelu (the tanh form, of X + bias when a
    bias is given): onnxruntime's transformer optimizer writes them for BERT and GPT-2."""
    g = _Graph(imp, node)
    x = node.input[0]
    if _input_name(node, 1):
        x = g.op("Add", [x, node.input[1]])
    tanh = node.op_type == "FastGelu"
    y = g.op("Gelu", [x], approximate="tanh" if tanh else "none")
    return g.run([y])


@converter("com.microsoft.QuickGelu")
def _quick_gelu(imp, node, inputs):
    """x * sigmoid(alpha * x), alpha 1.702 unless given (CLIP's activation)."""
    fdt = _float_dtype(imp, node, inputs[0])
    g = _Graph(imp, node)
    alpha = g.const(float(imp.attr(node, "alpha", 1.702)), fdt)
    y = g.op("Mul", [node.input[0], g.op("Sigmoid", [g.op("Mul", [node.input[0], alpha])])])
    return g.run([y])


@converter("com.microsoft.RotaryEmbedding")
def _rotary_embedding(imp, node, inputs):
    """Rotary embedding of `input` ([B, S, hidden] or [B, heads, S, head]) at `position_ids`
    ([B, S], or one start position for every row), from `cos_cache` / `sin_cache`
    ([positions, rotary_dim / 2]); half-split or interleaved, over the first
    `rotary_embedding_dim` features of each head (all of them by default)."""
    if int(imp.attr(node, "is_packed_batching", 0)):
        raise imp.error(node, "is_packed_batching is not supported")
    shape = _static_shape(imp, node, inputs[0], "input")
    cache = _static_shape(imp, node, inputs[2], "cos_cache")
    if len(cache) != 2 or cache[1] <= 0 or _static_shape(imp, node, inputs[3], "sin_cache") \
            != cache:
        raise imp.error(node, f"cos_cache has shape {list(cache)}, sin_cache must match and "
                              "both be [positions, rotary_dim / 2]")
    rot = int(imp.attr(node, "rotary_embedding_dim", 0)) or 2 * cache[1]
    heads = int(imp.attr(node, "num_heads", 0))
    if len(shape) == 4:
        b, heads, s, d = shape
    elif len(shape) == 3:
        b, s, hidden = shape
        if heads <= 0:  # onnxruntime: the head size is the rotary size then
            heads = hidden // rot if rot > 0 and hidden % rot == 0 else 0
        d = hidden // heads if heads > 0 else 0
        if d <= 0 or heads * d != hidden:
            raise imp.error(node, f"input width {hidden} does not split into heads of the "
                                  "rotary size; give num_heads")
    else:
        raise imp.error(node, f"input has shape {list(shape)}; expected [batch, sequence, "
                              "hidden] or [batch, heads, sequence, head]")
    if rot != 2 * cache[1] or rot > d or rot % 2:
        raise imp.error(node, f"rotary_embedding_dim {rot} must be twice cos_cache's width "
                              f"{cache[1]} and at most the head size {d}")
    g = _Graph(imp, node)
    positions = node.input[1]
    pos_shape = _static_shape(imp, node, inputs[1], "position_ids")
    if int(np.prod(pos_shape)) == 1:  # one start position: it, it + 1, ...
        positions = g.op("Add", [g.op("Reshape", [positions, g.const([1, 1])]),
                                 g.const(np.arange(s).reshape(1, s))])
    elif pos_shape != (b, s):
        raise imp.error(node, f"position_ids has shape {list(pos_shape)}, expected [{b}, "
                              f"{s}] or [1]")
    positions = g.op("Cast", [positions], to=onnx.TensorProto.INT64)
    cos = g.op("Reshape", [g.op("Gather", [node.input[2], positions], axis=0),
                           g.const([-1, 1, s, rot // 2])])
    sin = g.op("Reshape", [g.op("Gather", [node.input[3], positions], axis=0),
                           g.const([-1, 1, s, rot // 2])])
    x = node.input[0]
    if len(shape) == 3:
        x = g.op("Transpose", [g.op("Reshape", [x, g.const([b, s, heads, d])])],
                 perm=[0, 2, 1, 3])
    y = _rotate(g, x, cos, sin, (b, heads, s, d), rot,
                bool(imp.attr(node, "interleaved", 0)))
    if len(shape) == 3:
        y = g.op("Reshape", [g.op("Transpose", [y], perm=[0, 2, 1, 3]),
                             g.const([b, s, heads * d])])
    return g.run([y])


# -- attention of onnxruntime's transformer optimizer (BERT, GPT-2, ViT, T5...) ----------------


def _split_heads(g: _Graph, x: str, b: int, s: int, heads: int, d: int) -> str:
    """[B, S, heads * d] -> [B, heads, S, d]."""
    return g.op("Transpose", [g.op("Reshape", [x, g.const([b, s, heads, d])])],
                perm=[0, 2, 1, 3])


def _key_mask(imp, node, g: _Graph, index: int, value, b: int, s: int, total: int,
              past: int, causal: bool, fdt: np.dtype, filter_value: float) -> str | None:
    """onnxruntime's additive attention mask, broadcastable to [B, heads, S, total]:
    `mask_filter_value` where a key is masked, 0 elsewhere. The mask input may be key
    lengths [B] (keys at or past the length are masked), end and start positions [2B],
    a 0/1 key padding mask [B, total] or a 0/1 attention mask [B, S, total]; with `causal`,
    query i (at position past + i) sees no key after it. Each source adds its own
    `mask_filter_value`."""
    key_at = g.const(np.arange(total).reshape(1, 1, 1, total))
    terms = []
    name = _input_name(node, index)
    shape = _static_shape(imp, node, value, "the mask") if name else ()
    if name and shape not in ((1, 1), (b, 1)):  # onnxruntime: [1, 1] or [B, 1] is no mask
        if shape in ((b,), (2 * b,)):
            bounds = g.op("Reshape", [g.op("Cast", [name], to=onnx.TensorProto.INT64),
                                      g.const([len(shape) and shape[0] // b, b, 1, 1, 1])])
            end = g.op("Squeeze", [g.slice_last(bounds, 0, 1, axis=0), g.const([0])])
            keep = g.op("Less", [key_at, end])
            if shape == (2 * b,):
                begin = g.op("Squeeze", [g.slice_last(bounds, 1, 2, axis=0), g.const([0])])
                keep = g.op("And", [keep, g.op("Not", [g.op("Less", [key_at, begin])])])
        elif shape in ((b, total), (b, s, total)):
            keep = g.op("Greater", [g.op("Cast", [name], to=onnx.TensorProto.FLOAT),
                                    g.const(0.0, np.float32)])
            keep = g.op("Reshape", [keep, g.const([b, 1, shape[1] if len(shape) == 3 else 1,
                                                   total])])
        else:
            raise imp.error(node, f"the mask has shape {list(shape)}; supported: [{b}], "
                                  f"[{2 * b}], [{b}, {total}] or [{b}, {s}, {total}]")
        terms.append(keep)
    if causal:
        query_at = g.const(np.arange(past, past + s).reshape(1, 1, s, 1))
        terms.append(g.op("Not", [g.op("Greater", [key_at, query_at])]))
    if not terms:
        return None
    zero, masked = g.const(0.0, fdt), g.const(filter_value, fdt)
    additive = [g.op("Where", [keep, zero, masked]) for keep in terms]
    return additive[0] if len(additive) == 1 else g.op("Add", additive)


def _attend(imp, node, inputs, g: _Graph, q: str, k: str, v: str, mask_slot: int,
            dims: tuple[int, ...], fdt: np.dtype) -> str:
    """softmax(scale * q k^T + mask + attention_bias) v for q [B, N, S, d] and k/v
    [B, N, total, d(v)], merged back to [B, S, N * dv]: the mask from input `mask_slot`
    and `unidirectional` (`_key_mask`), attention_bias from input 5, `scale` 1/sqrt(d)
    unless given (Attention's and MultiHeadAttention's common tail)."""
    b, heads, s, total, past, d, dv = dims
    bias = []
    mask = _key_mask(imp, node, g, mask_slot, inputs[mask_slot] if len(inputs) > mask_slot
                     else None, b, s, total, past, bool(imp.attr(node, "unidirectional", 0)),
                     fdt, float(imp.attr(node, "mask_filter_value", -10000.0)))
    if mask is not None:
        bias.append(mask)
    if _input_name(node, 5):
        bias.append(node.input[5])
    scale = float(imp.attr(node, "scale", 0.0)) or 1.0 / float(np.sqrt(d))
    scores = g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]),
                          g.const(scale, fdt)])
    if bias:
        scores = g.op("Add", [scores, bias[0] if len(bias) == 1 else g.op("Add", bias)])
    probs = g.op("Softmax", [scores], axis=-1)
    return g.op("Reshape", [g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3]),
                            g.const([b, s, heads * dv])])


def _unsupported(imp, node, attributes: tuple[str, ...], inputs: dict[int, str],
                 outputs: dict[int, str]):
    for name in attributes:
        if imp.attr(node, name, 0):
            raise imp.error(node, f"attribute {name} is not supported")
    for index, what in inputs.items():
        if _input_name(node, index):
            raise imp.error(node, f"input {what} is not supported")
    for index, what in outputs.items():
        if len(node.output) > index and node.output[index]:
            raise imp.error(node, f"output {what} is not supported")


def _heads(imp, node) -> int:
    heads = int(imp.attr(node, "num_heads", 0))
    if heads <= 0:
        raise imp.error(node, f"num_heads {heads} must be positive")
    return heads


@converter("com.microsoft.Attention")
def _attention(imp, node, inputs):
    """Self-attention with its input projection (BERT-style, onnxruntime's transformer
    optimizer): qkv = input @ weights + bias split by `qkv_hidden_sizes` (three equal parts
    by default); an optional `past` [2, B, N, P, d] before the new keys and values, returned
    as `present` [2, B, N, P + S, d]; the mask (`_key_mask`), `unidirectional` (causal) and
    `attention_bias` added to the scaled scores (`scale`, 1/sqrt(d) by default)."""
    heads = _heads(imp, node)
    _unsupported(imp, node, ("do_rotary", "past_present_share_buffer"),
                 {6: "past_sequence_length"}, {})
    b, s, _ = _static_shape(imp, node, inputs[0], "input")
    width = _static_shape(imp, node, inputs[1], "weights")
    sizes = list(imp.attr(node, "qkv_hidden_sizes", [])) or [width[-1] // 3] * 3
    if len(width) != 2 or len(sizes) != 3 or sum(sizes) != width[1] or sizes[0] != sizes[1] \
            or any(size <= 0 or size % heads for size in sizes):
        raise imp.error(node, f"weights of shape {list(width)} do not split into query, key "
                              f"and value widths {sizes} of {heads} heads each")
    d, dv = sizes[0] // heads, sizes[2] // heads
    fdt = _float_dtype(imp, node, inputs[0])
    past = 0
    if _input_name(node, 4):
        past_shape = _static_shape(imp, node, inputs[4], "past")
        if len(past_shape) != 5 or past_shape[:3] != (2, b, heads) or past_shape[4] != d \
                or dv != d:
            raise imp.error(node, f"past has shape {list(past_shape)}, expected [2, {b}, "
                                  f"{heads}, past, {d}] (and value heads as wide)")
        past = past_shape[3]
    total = past + s
    imp.check_static_size(node, "the attention scores", (b, heads, s, total), fdt.itemsize)
    g = _Graph(imp, node)
    qkv = g.op("MatMul", [node.input[0], node.input[1]])
    if _input_name(node, 2):
        qkv = g.op("Add", [qkv, node.input[2]])
    q = _split_heads(g, g.slice_last(qkv, 0, sizes[0]), b, s, heads, d)
    k = _split_heads(g, g.slice_last(qkv, sizes[0], 2 * sizes[0]), b, s, heads, d)
    v = _split_heads(g, g.slice_last(qkv, 2 * sizes[0], width[1]), b, s, heads, dv)
    present = None
    if past:
        def cached(i: int, new: str) -> str:
            old = g.op("Squeeze", [g.slice_last(node.input[4], i, i + 1, axis=0),
                                   g.const([0])])
            return g.op("Concat", [old, new], axis=2)

        k, v = cached(0, k), cached(1, v)
    if len(node.output) > 1 and node.output[1]:
        present = g.op("Concat", [g.op("Unsqueeze", [k, g.const([0])]),
                                  g.op("Unsqueeze", [v, g.const([0])])], axis=0)
    out = _attend(imp, node, inputs, g, q, k, v, 3, (b, heads, s, total, past, d, dv), fdt)
    return g.run([out, present][:len(node.output)])


@converter("com.microsoft.MultiHeadAttention")
def _multi_head_attention(imp, node, inputs):
    """Attention over separate query [B, S, D], key [B, L, D] and value [B, L, Dv]
    (projected already; `bias` [D + D + Dv] added to each), or over key and value given per
    head [B, N, L, d] (cross attention whose keys were computed before); `past_key` /
    `past_value` [B, N, P, d] go before the new keys and values and come back as
    `present_key` / `present_value`; `key_padding_mask`, `unidirectional` and
    `attention_bias` as in Attention."""
    heads = _heads(imp, node)
    _unsupported(imp, node, (), {8: "past_sequence_length", 9: "cache_indirection"},
                 {3: "qk"})
    query = _static_shape(imp, node, inputs[0], "query")
    if len(query) != 3 or not _input_name(node, 1) or not _input_name(node, 2):
        raise imp.error(node, f"query has shape {list(query)} without separate key and "
                              "value; packed QKV/KV forms are not supported")
    b, s, width = query
    key = _static_shape(imp, node, inputs[1], "key")
    value = _static_shape(imp, node, inputs[2], "value")
    d = width // heads
    per_head = len(key) == 4
    if per_head:
        if key[:2] != (b, heads) or key[3] != d or value[:3] != key[:3] or \
                width != heads * d or _input_name(node, 6):
            raise imp.error(node, f"key/value of shapes {list(key)}/{list(value)} must be "
                                  f"[{b}, {heads}, L, {d}], without a past")
        length, dv = key[2], value[3]
    else:
        if len(key) != 3 or key[0] != b or key[2] != width or len(value) != 3 or \
                value[:2] != key[:2] or width % heads or value[2] % heads:
            raise imp.error(node, f"query/key/value of shapes {list(query)}/{list(key)}/"
                                  f"{list(value)} do not split into {heads} heads")
        length, dv = key[1], value[2] // heads
    fdt = _float_dtype(imp, node, inputs[0])
    past = 0
    if _input_name(node, 6) or _input_name(node, 7):
        past_shape = _static_shape(imp, node, inputs[6] if len(inputs) > 6 else None,
                                   "past_key")
        if len(past_shape) != 4 or past_shape[:2] != (b, heads) or past_shape[3] != d or \
                _static_shape(imp, node, inputs[7] if len(inputs) > 7 else None,
                              "past_value") != past_shape[:3] + (dv,):
            raise imp.error(node, f"past_key/past_value must be [{b}, {heads}, past, {d}] "
                                  f"and [{b}, {heads}, past, {dv}]")
        past = past_shape[2]
    total = past + length
    imp.check_static_size(node, "the attention scores", (b, heads, s, total), fdt.itemsize)
    g = _Graph(imp, node)
    q, k, v = node.input[0], node.input[1], node.input[2]
    if _input_name(node, 3):
        _static_shape(imp, node, inputs[3], "bias")
        q = g.op("Add", [q, g.slice_last(node.input[3], 0, width)])
        if not per_head:
            k = g.op("Add", [k, g.slice_last(node.input[3], width, 2 * width)])
            v = g.op("Add", [v, g.slice_last(node.input[3], 2 * width, 2 * width + heads * dv)])
    q = _split_heads(g, q, b, s, heads, d)
    if not per_head:
        k = _split_heads(g, k, b, length, heads, d)
        v = _split_heads(g, v, b, length, heads, dv)
    if past:
        k = g.op("Concat", [node.input[6], k], axis=2)
        v = g.op("Concat", [node.input[7], v], axis=2)
    out = _attend(imp, node, inputs, g, q, k, v, 4, (b, heads, s, total, past, d, dv), fdt)
    return g.run([out, k, v][:len(node.output)])
