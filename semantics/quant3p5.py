"""`quant3p5`: packed weights, the float matmul on them, and the integer (int8) path.

The int8 path is exact integer arithmetic followed by a float32 rescale in a fixed order
(`rescale_group`, `rescale_rows`); every target reproduces it bit for bit, and the Groq
simulator calls these same functions for its `rescale` instruction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.ir import Operation

from q35c.compiler.quant import (
    CODEBOOK,
    LegacyPairTensor,
    Q3P5Tensor,
    decode_meta,
    dequantize,
    dequantize_columns,
    dequantize_legacy,
    group_scales,
    group_size_of,
    integer_levels,
    pair_levels,
    quantize,
    quantize_legacy,
    unpack_codes,
)
from q35c.compiler.tensors import numpy_dtype
from q35c.dialects import quant3p5

from .core import F32, InterpreterError, Value, f32, impl, type_shape
from .numerics import apply_activation, matmul_unordered


def dequantized(weights: Value) -> np.ndarray:
    """The float32 [K, N] matrix a packed weight value encodes."""
    if isinstance(weights, Q3P5Tensor):
        return dequantize(weights)
    if isinstance(weights, LegacyPairTensor):
        return dequantize_legacy(weights)
    raise InterpreterError(f"expected packed weights, got {type(weights).__name__}")


@impl(quant3p5.WeightOp)
def _weight(interp, op: quant3p5.WeightOp, args):
    value = interp.store[op.weight_name.data]
    result = op.result.type
    if isinstance(result, quant3p5.PackedWeightType):
        want = Q3P5Tensor if result.layout.data == "q3p5" else LegacyPairTensor
        if not isinstance(value, want) or tuple(value.shape) != result.get_shape():
            raise InterpreterError(
                f"weight '{op.weight_name.data}' in the store does not match {result}"
            )
        return (value,)
    value = np.asarray(value)
    if value.shape != type_shape(op.result):
        raise InterpreterError(
            f"weight '{op.weight_name.data}' has shape {value.shape}, IR expects "
            f"{type_shape(op.result)}"
        )
    return (value.astype(numpy_dtype(result.get_element_type()), copy=False),)


@impl(quant3p5.QuantizeOp)
def _quantize(interp, op: quant3p5.QuantizeOp, args):
    packed = op.result.type
    assert isinstance(packed, quant3p5.PackedWeightType)
    if packed.layout.data == "pair43":
        return (quantize_legacy(args[0], name=_origin(op)),)
    return (quantize(args[0], group_size=packed.group, name=_origin(op)),)


def _origin(op: Operation) -> str:
    source = op.operands[0].owner
    if isinstance(source, quant3p5.WeightOp):
        return source.weight_name.data
    return op.name


@impl(quant3p5.DequantizeOp)
def _dequantize(interp, op, args):
    return (dequantized(args[0]),)


@impl(quant3p5.UnpackOp)
def _unpack(interp, op: quant3p5.UnpackOp, args):
    weights = args[0]
    if isinstance(weights, Q3P5Tensor):
        return (weights.codes().astype(np.int8), weights.scales(), weights.offsets())
    groups = type_shape(op.scales)
    return (weights.packed, f32(weights.scale).reshape(groups),
            f32(weights.offset).reshape(groups))


@impl(quant3p5.PackOp)
def _pack(interp, op: quant3p5.PackOp, args):
    codes, scales, offsets = args
    packed = op.result.type
    assert isinstance(packed, quant3p5.PackedWeightType)
    n = packed.get_shape()[1]
    return (LegacyPairTensor(shape=packed.get_shape(), packed=codes.astype(np.int8),
                             scale=f32(scales).reshape(n), offset=f32(offsets).reshape(n)),)


@impl(quant3p5.MatmulOp)
def _quant_matmul(interp, op, args):
    x, weights = args
    return (f32(matmul_unordered(x, dequantized(weights))),)


def gather_rows(table: Value, indices: np.ndarray) -> np.ndarray:
    """`quant3p5.gather`: float32 [*indices.shape, K] with row i equal to column
    `indices[i]` of `dequantize(table)` (negative indices count from N). Only the
    gathered columns are decoded; each decodes bit for bit as in the whole matrix."""
    if not isinstance(table, Q3P5Tensor):
        raise InterpreterError(f"quant3p5.gather: expected a Q3P5 table, got "
                               f"{type(table).__name__}")
    k, n = table.shape
    ids = np.asarray(indices).astype(np.int64, copy=False)
    if np.any((ids < -n) | (ids >= n)):
        raise InterpreterError(f"quant3p5.gather: index out of range for a table of {n} rows")
    ids = np.where(ids < 0, ids + n, ids)
    unique, inverse = np.unique(ids.reshape(-1), return_inverse=True)
    rows = dequantize_columns(table, unique).T
    return np.ascontiguousarray(rows[inverse]).reshape(*ids.shape, k)


@impl(quant3p5.GatherOp)
def _gather(interp, op, args):
    return (gather_rows(*args),)


def _tile_decode(weights: Q3P5Tensor, k_tile: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The levels [tiles * k_tile, N] (float32, exact; zero past the tensor), each group's
    float32 scale and offset [G, N] (groups past the tensor decode group code 0), and the
    number of K tiles."""
    gs = weights.group_size
    if k_tile < gs or k_tile % gs:
        raise InterpreterError(f"k_tile {k_tile} is not a multiple of the group size {gs}")
    k, n = weights.shape
    tiles = -(-k // k_tile)
    padded = tiles * k_tile
    stored = weights.num_groups * gs
    codes = unpack_codes(weights.payload, stored // 2, n)
    levels = np.zeros((padded, n), np.float32)
    levels[:min(stored, padded)] = pair_levels(codes, CODEBOOK, stored, np.float32)[:padded]
    gcodes = np.zeros((padded // gs, n), np.uint8)  # groups past the tensor decode code 0
    gcodes[:weights.num_groups] = weights.group_codes()[:padded // gs]
    scales, offsets = decode_meta(gcodes, weights.super_scale, weights.offset_base,
                                  weights.offset_step)
    return levels, scales, offsets, tiles


def matmul_q3p5_f16(x: np.ndarray, weights: Q3P5Tensor, k_tile: int) -> np.ndarray:
    """The Cerebras target's numeric mode for `quant3p5.matmul` on Q3P5 weights
    (docs/cerebras.md): what its PE programs compute, bit for bit.

    x [M, K] is rounded to float16; the levels (integers |l| <= 99) are exact in float16,
    and so is every float16 x level product in float32. K is cut into tiles of `k_tile`
    rows (a multiple of the group size; x is padded with zeros, and groups past the
    tensor decode group code 0). Per tile, column n and
    group g, in float32 with one rounding per operation:
    s = sum over k of x[k] * level[k, n] (k ascending, from 0), xs = sum over k of x[k];
    acc = acc + scale[g, n] * s, then acc = acc + offset[g, n] * xs (groups ascending,
    acc from 0). The tiles' partial sums are then added in tile order:
    y = ((p0 + p1) + p2) + ... (the PE row's reduction chain)."""
    gs = weights.group_size
    k, n = weights.shape
    levels, scales, offsets, tiles = _tile_decode(weights, k_tile)
    padded = tiles * k_tile
    out = np.empty((x.shape[0], n), np.float32)
    for row, xv in enumerate(np.asarray(x, np.float32).reshape(-1, k)):
        xr = np.zeros(padded, np.float32)
        xr[:k] = xv.astype(np.float16).astype(np.float32)
        y = None
        for t in range(tiles):
            acc = np.zeros(n, np.float32)
            for g in range(t * k_tile // gs, (t + 1) * k_tile // gs):
                s, xs = np.zeros(n, np.float32), F32(0)
                for kk in range(g * gs, (g + 1) * gs):
                    s = s + xr[kk] * levels[kk]
                    xs = F32(xs + xr[kk])
                acc = acc + scales[g] * s
                acc = acc + offsets[g] * xs
            y = acc if y is None else y + acc
        out[row] = y
    return out


def dequantize_f16(weights: Q3P5Tensor, k_tile: int) -> np.ndarray:
    """The Cerebras target's float16 weights (`weights=f16`): w = f16(scale * level +
    offset), the product and the sum in float32 (one rounding each), then one rounding to
    float16; [tiles * k_tile, N], zero rows past the tensor (the padding x meets). A
    weight beyond float16's range is an error."""
    levels, scales, offsets, _ = _tile_decode(weights, k_tile)
    gs = weights.group_size
    rows = np.arange(levels.shape[0]) // gs
    with np.errstate(over="ignore"):
        w = ((scales[rows] * levels) + offsets[rows]).astype(np.float16)
    w[weights.shape[0]:] = 0
    if not np.isfinite(w).all():
        raise InterpreterError("weights=f16: a dequantized weight is beyond float16's range "
                               "(65504)")
    return w


def matmul_q3p5_w16(x: np.ndarray, weights: Q3P5Tensor, k_tile: int) -> np.ndarray:
    """The numeric mode of `weights=f16` (docs/cerebras.md): x [M, K] rounded to float16,
    the weights `dequantize_f16`; per K tile of `k_tile` rows, acc = acc + x[k] * w[k, n]
    in float32 (k ascending, acc from 0; each f16 x f16 product is exact in float32, so
    one rounding per step); the tiles' partial sums added in tile order,
    y = ((p0 + p1) + p2) + ..."""
    k, n = weights.shape
    w = dequantize_f16(weights, k_tile).astype(np.float32)
    tiles = w.shape[0] // k_tile
    out = np.empty((x.shape[0], n), np.float32)
    for row, xv in enumerate(np.asarray(x, np.float32).reshape(-1, k)):
        xr = np.zeros(w.shape[0], np.float32)
        xr[:k] = xv.astype(np.float16).astype(np.float32)
        y = None
        for t in range(tiles):
            acc = np.zeros(n, np.float32)
            for kk in range(t * k_tile, (t + 1) * k_tile):
                acc = acc + xr[kk] * w[kk]
            y = acc if y is None else y + acc
        out[row] = y
    return out


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 quantization (see quant3p5.quantize_activations)."""
    x = f32(x)
    scale = (np.max(np.abs(x), axis=-1) / F32(127)).astype(F32)
    scale = np.where(scale == 0, F32(1), scale).astype(F32)
    q = np.clip(np.rint(x / scale[..., None]), -127, 127).astype(np.int8)
    return q, scale


@impl(quant3p5.QuantizeActivationsOp)
def _quantize_activations(interp, op, args):
    return quantize_activations(args[0])


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _check_int32(value: np.ndarray, what: str, g: int) -> None:
    """Raise if an exact group accumulator leaves int32 (the op is undefined there)."""
    if value.size and (value.min() < INT32_MIN or value.max() > INT32_MAX):
        index = np.unravel_index(np.argmax(np.abs(value)), value.shape)
        raise InterpreterError(
            f"quant3p5.matmul_int8: int32 overflow of the {what} of group {g} at "
            f"{tuple(int(i) for i in index)}: exact value {int(value[index])}")


def rescale_group(y: np.ndarray, acc: np.ndarray, sx: np.ndarray, scale: np.ndarray,
                  offset: np.ndarray) -> np.ndarray:
    """The running float32 sum after one group: y + (scale * f32(acc) + offset * f32(sx)).

    y [rows, N] float32, acc [rows, N] the group's integer accumulators, sx [rows] its
    integer activation sums, scale and offset [N] the group's float32 scale and offset.
    Each operation rounds to float32 in this order; targets must follow it bit for bit."""
    term = scale * acc.astype(F32) + offset * sx.astype(F32)[:, None]
    return (y + term.astype(F32)).astype(F32)


def rescale_rows(y: np.ndarray, row_scale: np.ndarray) -> np.ndarray:
    """The last step of the rescale: y [rows, N] times each row's activation scale, in f32."""
    return (y * f32(row_scale).reshape(-1)[:, None]).astype(F32)


def matmul_int8(q: np.ndarray, row_scale: np.ndarray, weights: Value) -> np.ndarray:
    """The int8 x packed-weight product with int32 group accumulators and ordered rescale.

    Accumulators are computed exactly (int64) and must fit int32: a group accumulator or
    activation sum outside [-2^31, 2^31 - 1] raises InterpreterError naming the op instead
    of wrapping. `verify-overflow` proves at compile time that this cannot happen.
    """
    if not isinstance(weights, (Q3P5Tensor, LegacyPairTensor)):
        raise InterpreterError(f"expected packed weights, got {type(weights).__name__}")
    levels = integer_levels(weights).astype(np.int64)
    scales, offsets = group_scales(weights)
    group = group_size_of(weights)
    k, n = levels.shape
    rows = q.reshape(-1, k).astype(np.int64)
    y = np.zeros((rows.shape[0], n), dtype=F32)
    for g in range(-(-k // group)):
        block = slice(g * group, min(k, (g + 1) * group))
        acc = rows[:, block] @ levels[block]
        sx = rows[:, block].sum(axis=1)
        _check_int32(acc, "accumulator", g)
        _check_int32(sx, "activation sum", g)
        y = rescale_group(y, acc, sx, scales[g], offsets[g])
    y = rescale_rows(y, row_scale)
    return y.reshape(*q.shape[:-1], n)


INT_SCALE_MAX = 255
"""The largest integer group scale of the integer rescale contract (`int_scaled`): uint8."""


@dataclass(frozen=True)
class IntScaled:
    """A Q3P5 weight in the integer rescale contract (`int_scaled`):
    `w[k, n] = base[n] * scales[g, n] * levels[k, n] + offset[n]`, g = k // group."""

    levels: np.ndarray  # int8 [K, N]: the codebook level plus the group's integer offset
    scales: np.ndarray  # int64 [G, N], 0 .. INT_SCALE_MAX
    base: np.ndarray  # float32 [N]
    offset: np.ndarray  # float32 [N]: the column's offset base
    group: int

    def dequantized(self) -> np.ndarray:
        """The float32 [K, N] matrix this contract computes with (exact products in
        float64, then one rounding): what its quality is measured on."""
        k = self.levels.shape[0]
        s = np.repeat(self.scales, self.group, axis=0)[:k]
        return f32(self.base.astype(np.float64) * s * self.levels + self.offset)


def int_scaled(weights: Value) -> IntScaled:
    """The integer rescale contract's weights, derived from a Q3P5 tensor.

    Per column n: `base = f32(max_g scale[g, n] / 255)`; each group's scale becomes the
    integer `s = rint(scale / base)` (0 .. 255), and its offset the column's offset base plus
    an integer number `c = rint((offset - offset_base) / (base * s))` of those steps, folded
    into the group's levels (`L + c`, clipped so that every level of the group stays in
    [-127, 127]). The codebook levels are kept; what changes against the float contract is
    the group scale (rounded to 8 bits relative to the column's largest) and the group
    offset (rounded to a whole step). docs/groq.md, "The integer rescale contract"."""
    if not isinstance(weights, Q3P5Tensor):
        raise InterpreterError("the integer rescale contract needs Q3P5 weights, got "
                               f"{type(weights).__name__}")
    levels = integer_levels(weights).astype(np.int64)
    scales, offsets = group_scales(weights)
    group = weights.group_size
    k, n = levels.shape
    groups = scales.shape[0]
    base = (scales.max(axis=0) / F32(INT_SCALE_MAX)).astype(F32)
    b64 = base.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(b64 > 0, np.rint(scales.astype(np.float64) / b64), 0)
        s = np.clip(s, 0, INT_SCALE_MAX).astype(np.int64)
        step = b64 * s
        offset = f32(weights.offset_base)
        c = np.where(step > 0, np.rint((offsets.astype(np.float64) - offset) / step), 0)
    padded = np.zeros((groups * group, n), np.int64)
    padded[:k] = levels
    lo = padded.reshape(groups, group, n).min(axis=1)
    hi = padded.reshape(groups, group, n).max(axis=1)
    c = np.clip(c, -127 - lo, 127 - hi).astype(np.int64)
    shifted = (levels + np.repeat(c, group, axis=0)[:k]).astype(np.int8)
    return IntScaled(shifted, s, base, offset, group)


def int_rescale_block(y: np.ndarray, total: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The running float32 sum after one int32 block: y + f32(total) * base, each step
    rounded to float32 (total [rows, N] = sum over the block's groups of s * acc)."""
    return (y + (total.astype(F32) * base).astype(F32)).astype(F32)


def int_rescale_end(y: np.ndarray, sx: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The column offsets: y + offset * f32(sx), sx [rows] the int32 sum of a row's
    activations, each step rounded to float32 (then `rescale_rows`)."""
    term = (offset * f32(sx.astype(F32)).reshape(-1)[:, None]).astype(F32)
    return (y + term).astype(F32)


def int_block_totals(q: np.ndarray, weights: IntScaled, rows: int) -> np.ndarray:
    """[blocks, R, N] int64: per block of `rows` K rows (whole groups) the exact
    `sum_g s[g, n] * sum_{k in g} q[r, k] * levels[k, n]` (float64 products and sums are
    exact here: |terms| < 2^23, |sums| < 2^31)."""
    k, n = weights.levels.shape
    q = q.reshape(-1, k).astype(np.float64)
    s = np.repeat(weights.scales, weights.group, axis=0)[:k].astype(np.float64)
    w = weights.levels.astype(np.float64) * s
    out = [np.rint(q[:, b0:b0 + rows] @ w[b0:b0 + rows]).astype(np.int64)
           for b0 in range(0, k, rows)]
    return np.stack(out) if out else np.zeros((0, q.shape[0], n), np.int64)


def matmul_int8_int(q: np.ndarray, row_scale: np.ndarray, weights: Value, rows: int
                    ) -> np.ndarray:
    """`matmul_int8` in the integer rescale contract (`rescale_rows` attribute = `rows`):
    the groups of each block of `rows` K rows combine exactly in int32 with their integer
    scales, each block is converted and scaled by the column base once, then the column
    offset times the row's activation sum, then the row scale. Overflow-free by the op's
    verifier (rows * 128 * 127 * 255 < 2^31); checked again here."""
    w = weights if isinstance(weights, IntScaled) else int_scaled(weights)
    k, n = w.levels.shape
    flat = q.reshape(-1, k)
    y = np.zeros((flat.shape[0], n), dtype=F32)
    for b, total in enumerate(int_block_totals(flat, w, rows)):
        _check_int32(total, "int32 block sum", b * rows // w.group)
        y = int_rescale_block(y, total, w.base)
    sx = flat.astype(np.int64).sum(axis=1)
    _check_int32(sx, "activation sum", 0)
    y = rescale_rows(int_rescale_end(y, sx, w.offset), row_scale)
    return y.reshape(*q.shape[:-1], n)


@impl(quant3p5.MatmulInt8Op)
def _matmul_int8(interp, op, args):
    if op.rescale_rows is not None:
        return (matmul_int8_int(*args, op.rescale_rows.value.data),)
    return (matmul_int8(*args),)


@impl(quant3p5.FusedMatmulOp)
def _fused_matmul(interp, op: quant3p5.FusedMatmulOp, args):
    """matmul, then + bias, activation, + residual, each rounded to float32 in turn."""
    x, weights, *rest = args
    y = f32(matmul_unordered(x, dequantized(weights)))
    rest_iter = iter(rest)
    if op.bias is not None:
        y = (y + f32(next(rest_iter))).astype(F32)
    y = apply_activation(op.activation.data, y)
    if op.residual is not None:
        y = (y + f32(next(rest_iter))).astype(F32)
    return (y,)
