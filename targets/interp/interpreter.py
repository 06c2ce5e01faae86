"""The reference interpreter: the executable definition of every op q35c compiles.

Every target is checked against this file, so it is written to be obviously right rather
than fast: each op is a few lines of numpy, dispatched by op class. The numeric rules (a
target that follows them reproduces the int8-activation path bit for bit; the functions
named in brackets implement them):

- Tensors are numpy arrays; float tensors are float32. Elementwise `arith` ops and
  `math.sqrt`/`rsqrt`/`absf` run in float32, one IEEE rounding per op (C: float operators,
  `sqrtf`, `1.0f / sqrtf(x)`, `fabsf`).
- Transcendental functions (exp, log, tanh, erf, sin, cos, pow), elementwise or inside a
  composite op, are the C library's double-precision functions [`libm`]: Python's `math`
  module calls the platform libm, so `math.exp(x)` is bit-identical to C's `exp(x)` on the
  same machine. A float32 op evaluates `f((double)x)` and rounds once to float32 (C:
  `(float)exp((double)x)`, not `expf`, and not numpy's own SIMD routines, which differ in
  the last bit). Special values (overflow, poles, domain errors) follow C99 Annex F.
- Composite `q35nn` ops (softmax, layer/RMS norm, GELU, SiLU) compute in float64 and round
  once to float32. Every sum over an axis is sequential, first element to last, in
  float64 [`sequential_sum`] (numpy's own `np.sum` is pairwise and unspecified), and each
  formula is evaluated left to right exactly as written in its function, with no fused
  multiply-add (C: `-ffp-contract=off`). `linalg.reduce` is sequential in float64 too.
- Float matmuls whose operands are both activations or float weights (`linalg.matmul`,
  `q35nn.batch_matmul`, and the two products of `q35nn.attention`) sum the float64
  products `(double)a * (double)b` sequentially over k starting from 0.0 [`matmul_f64`]:
  products of float32 values are exact in float64, so the C loop
  `for (p = 0; p < K; p++) s += (double)a[i][p] * (double)b[p][j];` reproduces it bit for
  bit. `linalg.matmul` then adds its accumulator operand in float64 and rounds once.
- `quant3p5.matmul` and `fused_matmul` (float activations) multiply by the dequantized
  weights (`scale * level + offset` in float32, see compiler/quant) with float64
  accumulation in an unspecified order (BLAS): targets match them to 1e-5 relative.
- `quant3p5.quantize_activations` and `quant3p5.matmul_int8` are the integer path: int8
  activations, int32 accumulation per group, then a float32 rescale in a fixed order. Targets
  must reproduce this path bit-exactly. Accumulators never wrap: one that leaves int32 raises
  InterpreterError (verify-overflow proves at compile time that none can).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from xdsl.dialects import arith, bufferization, func, math as xmath, memref, scf, tensor
from xdsl.dialects.linalg import ops as linalg
from xdsl.dialects.builtin import (
    ArrayAttr,
    Float32Type,
    Float64Type,
    IndexType,
    IntegerType,
    MemRefType,
    ModuleOp,
    StringAttr,
    TensorType,
)
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.traits import IsTerminator

from q35c.compiler.quant import (
    CODEBOOK,
    LEGACY_LEVELS,
    LegacyPairTensor,
    Q3P5Tensor,
    dequantize,
    dequantize_legacy,
    quantize,
    quantize_legacy,
)
from q35c.compiler.tensors import constant_value, numpy_dtype
from q35c.compiler.weights import WeightStore
from q35c.dialects import q35nn, quant3p5

F32 = np.float32
Value = Any  # np.ndarray | Q3P5Tensor | LegacyPairTensor


class InterpreterError(RuntimeError):
    """The IR cannot be executed (unsupported op, missing input, bad entry point)."""


def _type_shape(value: SSAValue) -> tuple[int, ...]:
    assert isinstance(value.type, TensorType)
    return tuple(value.type.get_shape())


def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=F32)


def libm(fn: Callable[..., float], fallback: Callable[..., Any]) -> Callable[..., np.ndarray]:
    """`fn` (a `math` function, i.e. the C library's double-precision one) elementwise over
    float64 copies of its arguments; returns float64. Where `math` raises instead of
    returning a special value (overflow, log(0), domain errors), the value is numpy's
    `fallback`, which gives C99 Annex F's special values (inf, -inf, nan)."""

    def safe(*args: float) -> float:
        try:
            return fn(*args)
        except (ValueError, OverflowError):
            with np.errstate(all="ignore"):
                return float(fallback(*args))

    def apply(*arrays) -> np.ndarray:
        wide = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in arrays))
        flat = [a.ravel().tolist() for a in wide]
        try:
            values = list(map(fn, *flat))
        except (ValueError, OverflowError):  # rare: redo element by element
            values = list(map(safe, *flat))
        return np.array(values, dtype=np.float64).reshape(wide[0].shape)

    return apply


exp64 = libm(math.exp, np.exp)
tanh64 = libm(math.tanh, np.tanh)
erf64 = libm(math.erf, math.erf)  # math.erf never raises


def sequential_sum(x: np.ndarray, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    """Sum along `axis` in the order x[0] + x[1] + ... (float64 in, float64 out): the order
    a C loop `s += x[i]` has. An empty axis sums to 0."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[axis] == 0:
        return np.sum(x, axis=axis, keepdims=keepdims)
    total = np.take(np.cumsum(x, axis=axis), [-1], axis=axis)
    return total if keepdims else np.squeeze(total, axis=axis)


_IMPLS: dict[type[Operation], Callable[..., tuple[Value, ...]]] = {}


def impl(*op_types: type[Operation]):
    """Register the numpy semantics of one or more op classes."""

    def register(fn):
        for op_type in op_types:
            _IMPLS[op_type] = fn
        return fn

    return register


# -- builtin / func / arith / math ----------------------------------------------------------


@impl(arith.ConstantOp)
def _constant(interp, op: arith.ConstantOp, args):
    return (constant_value(op.value, op.result.type),)


def _elementwise(fn: Callable[..., np.ndarray]):
    def run(interp, op, args):
        dtype = numpy_dtype(_element_type(op.results[0].type))
        with np.errstate(all="ignore"):
            return (np.asarray(fn(*args), dtype=dtype),)

    return run


def _element_type(t: Attribute) -> Attribute:
    return t.get_element_type() if isinstance(t, TensorType) else t


def _int_trunc_div(a, b):
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -q, q)


_ELEMENTWISE: dict[type[Operation], Callable[..., np.ndarray]] = {
    arith.AddfOp: np.add, arith.SubfOp: np.subtract, arith.MulfOp: np.multiply,
    arith.DivfOp: np.divide, arith.NegfOp: np.negative,
    arith.MaximumfOp: np.maximum, arith.MinimumfOp: np.minimum,
    arith.AddiOp: np.add, arith.SubiOp: np.subtract, arith.MuliOp: np.multiply,
    arith.DivSIOp: _int_trunc_div,
    arith.SIToFPOp: lambda a: a, arith.FPToSIOp: np.trunc,
    arith.ExtFOp: lambda a: a, arith.TruncFOp: lambda a: a,
    arith.ExtSIOp: lambda a: a, arith.TruncIOp: lambda a: a,
    arith.SelectOp: np.where,
    xmath.SqrtOp: np.sqrt, xmath.RsqrtOp: lambda a: 1 / np.sqrt(a), xmath.AbsFOp: np.abs,
    # transcendental: libm in double, then the result type's rounding (module docstring)
    xmath.ExpOp: exp64, xmath.LogOp: libm(math.log, np.log), xmath.TanhOp: tanh64,
    xmath.SinOp: libm(math.sin, np.sin), xmath.CosOp: libm(math.cos, np.cos),
    xmath.PowFOp: libm(math.pow, np.power), xmath.ErfOp: erf64,
}
for _op_type, _fn in _ELEMENTWISE.items():
    _IMPLS[_op_type] = _elementwise(_fn)


_CMPF = {1: np.equal, 2: np.greater, 3: np.greater_equal, 4: np.less, 5: np.less_equal,
         6: np.not_equal, 13: np.not_equal}


@impl(arith.CmpfOp)
def _cmpf(interp, op: arith.CmpfOp, args):
    pred = op.predicate.value.data
    if pred not in _CMPF:
        raise InterpreterError(f"arith.cmpf predicate {pred} is not supported")
    return (_CMPF[pred](*args),)


@impl(func.CallOp)
def _call(interp, op: func.CallOp, args):
    callee = interp.function(op.callee.root_reference.data)
    return interp.call(callee, list(args))


# -- linalg / tensor -----------------------------------------------------------------------


def _matmul_f64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in float64, summation order unspecified (BLAS): the quantized float path."""
    return np.matmul(a.astype(np.float64), b.astype(np.float64))


def matmul_f64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b (numpy broadcasting over batch dimensions) in float64, each output summed
    sequentially over k from 0.0: acc += a[..., :, k] * b[..., k, :] for k = 0, 1, ..."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    acc = np.zeros((*batch, a.shape[-2], b.shape[-1]))
    for k in range(a.shape[-1]):
        acc += a[..., :, k, None] * b[..., k, None, :]
    return acc


@impl(linalg.MatmulOp)
def _linalg_matmul(interp, op: linalg.MatmulOp, args):
    a, b, acc = args
    return (_f32(acc.astype(np.float64) + matmul_f64(a, b)),)


@impl(linalg.FillOp)
def _linalg_fill(interp, op: linalg.FillOp, args):
    scalar, out = args
    return (np.full_like(out, scalar),)


@impl(linalg.TransposeOp)
def _linalg_transpose(interp, op: linalg.TransposeOp, args):
    perm = tuple(op.permutation.get_values())
    return (np.ascontiguousarray(np.transpose(args[0], perm)),)


@impl(linalg.BroadcastOp)
def _linalg_broadcast(interp, op: linalg.BroadcastOp, args):
    source, init = args
    added = tuple(op.dimensions.get_values())
    expanded = np.expand_dims(source, added)
    return (np.broadcast_to(expanded, init.shape).astype(init.dtype),)


_REDUCERS = {arith.AddfOp: np.add, arith.MulfOp: np.multiply,
             arith.MaximumfOp: np.maximum, arith.MinimumfOp: np.minimum,
             arith.AddiOp: np.add, arith.MaxSIOp: np.maximum, arith.MinSIOp: np.minimum}


@impl(linalg.ReduceOp)
def _linalg_reduce(interp, op: linalg.ReduceOp, args):
    """A reduction whose body is one combiner op; float sums and products run in float64,
    sequentially in row-major order over the reduced axes."""
    source, init = args
    body = list(op.region.block.ops)
    combiner = _REDUCERS.get(type(body[0])) if len(body) == 2 else None
    if combiner is None:
        raise InterpreterError("linalg.reduce: only single-op add/mul/max/min bodies are supported")
    axes = tuple(op.dimensions.get_values())
    wide = source.astype(np.float64) if np.issubdtype(source.dtype, np.floating) else source
    # The reduced axes last, flattened in row-major order: [kept..., reduced].
    kept = [d for d in range(wide.ndim) if d not in axes]
    flat = np.transpose(wide, kept + list(axes)).reshape(*(wide.shape[d] for d in kept), -1)
    if flat.shape[-1] == 0:
        reduced = combiner.reduce(flat, axis=-1)
    else:
        reduced = combiner.accumulate(flat, axis=-1)[..., -1]  # x0 op x1 op ... in order
    reduced = reduced.astype(init.dtype)
    return (combiner(init, reduced).astype(init.dtype),)


@impl(tensor.EmptyOp)
def _tensor_empty(interp, op: tensor.EmptyOp, args):
    result = op.tensor.type
    assert isinstance(result, TensorType)
    return (np.zeros(tuple(result.get_shape()), numpy_dtype(result.get_element_type())),)


@impl(tensor.ReshapeOp, tensor.CollapseShapeOp, tensor.ExpandShapeOp)
def _tensor_reshape(interp, op: Operation, args):
    return (np.reshape(args[0], _type_shape(op.results[0])),)


@impl(tensor.ConcatOp)
def _tensor_concat(interp, op: tensor.ConcatOp, args):
    return (np.concatenate(args, axis=op.dim.value.data),)


@impl(tensor.ExtractSliceOp)
def _tensor_extract_slice(interp, op: tensor.ExtractSliceOp, args):
    if len(args) != 1:
        raise InterpreterError("tensor.extract_slice with dynamic offsets is not supported")
    offsets = op.static_offsets.get_values()
    sizes = op.static_sizes.get_values()
    strides = op.static_strides.get_values()
    index = tuple(slice(o, o + s * st, st) for o, s, st in zip(offsets, sizes, strides))
    return (np.reshape(args[0][index], _type_shape(op.result)).copy(),)


# -- quant3p5 ------------------------------------------------------------------------------


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
    if value.shape != _type_shape(op.result):
        raise InterpreterError(
            f"weight '{op.weight_name.data}' has shape {value.shape}, IR expects "
            f"{_type_shape(op.result)}"
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
    groups = _type_shape(op.scales)
    return (weights.packed, _f32(weights.scale).reshape(groups),
            _f32(weights.offset).reshape(groups))


@impl(quant3p5.PackOp)
def _pack(interp, op: quant3p5.PackOp, args):
    codes, scales, offsets = args
    packed = op.result.type
    assert isinstance(packed, quant3p5.PackedWeightType)
    n = packed.get_shape()[1]
    return (LegacyPairTensor(shape=packed.get_shape(), packed=codes.astype(np.int8),
                             scale=_f32(scales).reshape(n), offset=_f32(offsets).reshape(n)),)


@impl(quant3p5.MatmulOp)
def _quant_matmul(interp, op, args):
    x, weights = args
    return (_f32(_matmul_f64(x, dequantized(weights))),)


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 quantization (see quant3p5.quantize_activations)."""
    x = _f32(x)
    scale = (np.max(np.abs(x), axis=-1) / F32(127)).astype(F32)
    scale = np.where(scale == 0, F32(1), scale).astype(F32)
    q = np.clip(np.rint(x / scale[..., None]), -127, 127).astype(np.int8)
    return q, scale


@impl(quant3p5.QuantizeActivationsOp)
def _quantize_activations(interp, op, args):
    return quantize_activations(args[0])


def _pair_levels(table: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """int32 [K, N] levels of pair codes [P, N] through a (128, 2) table."""
    levels = table.astype(np.int32)[codes.astype(np.int64)]  # [P, N, 2]
    return levels.transpose(0, 2, 1).reshape(-1, codes.shape[1])[:k]


def integer_levels(weights: Value) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(levels int32 [K, N], scales f32 [G, N], offsets f32 [G, N], group size)."""
    if isinstance(weights, Q3P5Tensor):
        k, _ = weights.shape
        levels = _pair_levels(CODEBOOK, weights.codes(), k)
        return levels, weights.scales(), weights.offsets(), weights.group_size
    if isinstance(weights, LegacyPairTensor):
        k, _ = weights.shape
        levels = _pair_levels(LEGACY_LEVELS, weights.packed, k)
        return levels, _f32(weights.scale)[None, :], _f32(weights.offset)[None, :], k
    raise InterpreterError(f"expected packed weights, got {type(weights).__name__}")


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _check_int32(value: np.ndarray, what: str, g: int) -> None:
    """Raise if an exact group accumulator leaves int32 (the op is undefined there)."""
    if value.size and (value.min() < INT32_MIN or value.max() > INT32_MAX):
        index = np.unravel_index(np.argmax(np.abs(value)), value.shape)
        raise InterpreterError(
            f"quant3p5.matmul_int8: int32 overflow of the {what} of group {g} at "
            f"{tuple(int(i) for i in index)}: exact value {int(value[index])}")


def matmul_int8(q: np.ndarray, row_scale: np.ndarray, weights: Value) -> np.ndarray:
    """The int8 x packed-weight product with int32 group accumulators and ordered rescale.

    Accumulators are computed exactly (int64) and must fit int32: a group accumulator or
    activation sum outside [-2^31, 2^31 - 1] raises InterpreterError naming the op instead
    of wrapping. `verify-overflow` proves at compile time that this cannot happen.
    """
    levels, scales, offsets, group = integer_levels(weights)
    k, n = levels.shape
    rows = q.reshape(-1, k).astype(np.int64)
    levels = levels.astype(np.int64)
    y = np.zeros((rows.shape[0], n), dtype=F32)
    for g in range(-(-k // group)):
        block = slice(g * group, min(k, (g + 1) * group))
        acc = rows[:, block] @ levels[block]
        sx = rows[:, block].sum(axis=1)
        _check_int32(acc, "accumulator", g)
        _check_int32(sx, "activation sum", g)
        term = scales[g] * acc.astype(F32) + offsets[g] * sx.astype(F32)[:, None]
        y = (y + term.astype(F32)).astype(F32)
    y = (y * _f32(row_scale).reshape(-1)[:, None]).astype(F32)
    return y.reshape(*q.shape[:-1], n)


@impl(quant3p5.MatmulInt8Op)
def _matmul_int8(interp, op, args):
    return (matmul_int8(*args),)


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def apply_activation(name: str, x: np.ndarray) -> np.ndarray:
    """The activations of quant3p5.fused_matmul, rounded as the standalone ops round."""
    if name == "none":
        return x
    if name == "relu":
        return np.maximum(x, F32(0)).astype(F32)
    x64 = _f64(x)
    if name == "silu":
        return _f32(x64 / (1.0 + exp64(-x64)))
    if name == "gelu_tanh":
        inner = SQRT_2_OVER_PI * (x64 + 0.044715 * (x64 * x64 * x64))
        return _f32(0.5 * x64 * (1.0 + tanh64(inner)))
    return _f32(0.5 * x64 * (1.0 + erf64(x64 / SQRT_2)))


SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)  # 0.7978845608028654
SQRT_2 = math.sqrt(2.0)  # 1.4142135623730951


# -- q35nn ---------------------------------------------------------------------------------


@impl(q35nn.SiluOp)
def _silu(interp, op, args):
    return (apply_activation("silu", args[0]),)


@impl(q35nn.GeluOp)
def _gelu(interp, op: q35nn.GeluOp, args):
    tanh = op.approximate.data == "tanh"
    return (apply_activation("gelu_tanh" if tanh else "gelu", args[0]),)


@impl(q35nn.SoftmaxOp)
def _softmax(interp, op: q35nn.SoftmaxOp, args):
    return (softmax(args[0], op.axis.value.data),)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x - max) / sum(exp(x - max)) in float64 (libm exp, sequential sum), to float32."""
    x = _f64(x)
    e = exp64(x - np.max(x, axis=axis, keepdims=True))
    return _f32(e / sequential_sum(e, axis=axis, keepdims=True))


@impl(q35nn.LayerNormOp)
def _layer_norm(interp, op: q35nn.LayerNormOp, args):
    x, gamma, beta = (_f64(a) for a in args)
    eps = op.epsilon.value.data
    n = x.shape[-1]
    mean = sequential_sum(x, keepdims=True) / n
    var = sequential_sum((x - mean) * (x - mean), keepdims=True) / n
    return (_f32((x - mean) / np.sqrt(var + eps) * gamma + beta),)


@impl(q35nn.RMSNormOp)
def _rms_norm(interp, op: q35nn.RMSNormOp, args):
    x, gamma = (_f64(a) for a in args)
    eps = op.epsilon.value.data
    mean_square = sequential_sum(x * x, keepdims=True) / x.shape[-1]
    return (_f32(x / np.sqrt(mean_square + eps) * gamma),)


@impl(q35nn.BatchMatmulOp)
def _batch_matmul(interp, op, args):
    return (_f32(matmul_f64(*args)),)


@impl(q35nn.GatherOp)
def _gather(interp, op: q35nn.GatherOp, args):
    data, indices = args
    axis = op.axis.value.data % data.ndim
    size = data.shape[axis]
    if np.any((indices < -size) | (indices >= size)):
        raise InterpreterError(f"q35nn.gather: index out of range for axis of size {size}")
    return (np.take(data, np.where(indices < 0, indices + size, indices), axis=axis),)


@impl(q35nn.SwigluOp)
def _swiglu(interp, op, args):
    gate, up = args
    (silu,) = _silu(interp, op, [gate])
    return ((silu * _f32(up)).astype(F32),)


@impl(q35nn.AttentionOp)
def _attention(interp, op: q35nn.AttentionOp, args):
    """Exactly the unfused sequence: matmul, scale, mask add, softmax, matmul."""
    q, k, v, *mask = args
    scores = _f32(matmul_f64(q, np.swapaxes(k, -1, -2)))
    scores = (scores * F32(op.scale.value.data)).astype(F32)
    if mask:
        scores = (scores + _f32(mask[0])).astype(F32)
    return (_f32(matmul_f64(softmax(scores, -1), v)),)


@impl(quant3p5.FusedMatmulOp)
def _fused_matmul(interp, op: quant3p5.FusedMatmulOp, args):
    """matmul, then + bias, activation, + residual, each rounded to float32 in turn."""
    x, weights, *rest = args
    y = _f32(_matmul_f64(x, dequantized(weights)))
    rest_iter = iter(rest)
    if op.bias is not None:
        y = (y + _f32(next(rest_iter))).astype(F32)
    y = apply_activation(op.activation.data, y)
    if op.residual is not None:
        y = (y + _f32(next(rest_iter))).astype(F32)
    return (y,)


# -- scalar loops on memrefs: scf / memref (the Fortran frontend's IR) ---------------------
# Memrefs are numpy arrays indexed logically (their declared shape); loads and stores work
# in place, so intent(out) arguments are updated in the caller's arrays.


def _unsigned(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(f"uint{a.dtype.itemsize * 8}")


def _shift_left(a, b):
    a, b = np.asarray(a), np.asarray(b)
    bits = a.dtype.itemsize * 8
    out = _unsigned(a) << np.minimum(b, bits - 1).astype(_unsigned(a).dtype)
    return np.where(b >= bits, 0, out).astype(_unsigned(a).dtype).astype(a.dtype)


def _shift_right_unsigned(a, b):
    a, b = np.asarray(a), np.asarray(b)
    bits = a.dtype.itemsize * 8
    out = _unsigned(a) >> np.minimum(b, bits - 1).astype(_unsigned(a).dtype)
    return np.where(b >= bits, 0, out).astype(_unsigned(a).dtype).astype(a.dtype)


def _round_half_away(x):
    """math.round: to nearest, ties away from zero (Fortran nint), exact in any float type."""
    x = np.asarray(x)
    r = np.trunc(x)
    frac = np.abs(x - r)  # exact
    return np.where(frac >= 0.5, r + np.sign(x), r).astype(x.dtype)


_SCALAR_ELEMENTWISE: dict[type[Operation], Callable[..., np.ndarray]] = {
    arith.RemSIOp: np.fmod, arith.AndIOp: np.bitwise_and, arith.OrIOp: np.bitwise_or,
    arith.XOrIOp: np.bitwise_xor, arith.ShLIOp: _shift_left,
    arith.ShRUIOp: _shift_right_unsigned, arith.ShRSIOp: np.right_shift,
    arith.MaxSIOp: np.maximum, arith.MinSIOp: np.minimum, arith.IndexCastOp: lambda a: a,
    xmath.AbsIOp: np.abs, xmath.RoundOp: _round_half_away,
}
for _op_type, _fn in _SCALAR_ELEMENTWISE.items():
    _IMPLS[_op_type] = _elementwise(_fn)

_CMPI = {0: np.equal, 1: np.not_equal, 2: np.less, 3: np.less_equal, 4: np.greater,
         5: np.greater_equal}


@impl(arith.CmpiOp)
def _cmpi(interp, op: arith.CmpiOp, args):
    pred = op.predicate.value.data
    if pred not in _CMPI:
        raise InterpreterError(f"arith.cmpi predicate {pred} is not supported")
    return (_CMPI[pred](*args),)


@impl(scf.ForOp)
def _scf_for(interp, op: scf.ForOp, args):
    lb, ub, step, *carried = args
    for iv in range(int(lb), int(ub), int(step)):
        carried = list(interp.run_region(op.body, [np.int64(iv), *carried]))
    return tuple(carried)


@impl(scf.IfOp)
def _scf_if(interp, op: scf.IfOp, args):
    region = op.true_region if bool(args[0]) else op.false_region
    if not region.blocks:
        return ()
    return interp.run_region(region, [])


@impl(scf.WhileOp)
def _scf_while(interp, op: scf.WhileOp, args):
    values = list(args)
    while True:
        cond, *values = interp.run_region(op.before_region, values)
        if not bool(cond):
            return tuple(values)
        values = list(interp.run_region(op.after_region, values))


def _memref_shape(op: Operation, dynamic_sizes) -> tuple[int, ...]:
    sizes = iter(int(d) for d in dynamic_sizes)
    shape = op.results[0].type.get_shape()
    return tuple(next(sizes) if d < 0 else d for d in shape)


@impl(memref.AllocOp, memref.AllocaOp)
def _memref_alloc(interp, op, args):
    element = op.results[0].type.get_element_type()
    return (np.zeros(_memref_shape(op, args), numpy_dtype(element)),)


@impl(memref.DeallocOp)
def _memref_dealloc(interp, op, args):
    return ()


@impl(memref.LoadOp)
def _memref_load(interp, op, args):
    ref, *indices = args
    return (ref[tuple(int(i) for i in indices)],)


@impl(memref.StoreOp)
def _memref_store(interp, op, args):
    value, ref, *indices = args
    index = tuple(int(i) for i in indices)
    if any(i < 0 or i >= n for i, n in zip(index, ref.shape)):
        raise InterpreterError(f"memref.store: index {index} is out of bounds for shape "
                               f"{ref.shape}")
    ref[index] = value
    return ()


@impl(memref.DimOp)
def _memref_dim(interp, op, args):
    return (np.int64(args[0].shape[int(args[1])]),)


@impl(memref.CastOp)
def _memref_cast(interp, op, args):
    return (args[0],)


@impl(memref.GetGlobalOp)
def _memref_get_global(interp, op: memref.GetGlobalOp, args):
    name = op.name_.root_reference.data
    for g in interp.module.ops:
        if isinstance(g, memref.GlobalOp) and g.sym_name.data == name:
            t = g.type
            tensor_type = TensorType(t.get_element_type(), t.get_shape())
            value = constant_value(g.initial_value, tensor_type)
            value.setflags(write=False)
            return (value,)
    raise InterpreterError(f"memref.get_global: no memref.global @{name}")


@impl(bufferization.ToTensorOp)
def _to_tensor(interp, op, args):
    return (np.array(args[0], copy=True),)


@impl(bufferization.MaterializeInDestinationOp)
def _materialize_in_destination(interp, op, args):
    source, dest = args
    dest[...] = source
    return ()


@impl(q35nn.OnnxNodeOp)
def _onnx_node(interp, op: q35nn.OnnxNodeOp, args):
    from q35c.targets.interp.onnx_node import OnnxNodeError, run_onnx_node

    try:
        return run_onnx_node(op, args)
    except OnnxNodeError as err:
        raise InterpreterError(str(err)) from None


# -- driver --------------------------------------------------------------------------------


def argument_names(fn: func.FuncOp) -> list[str]:
    """Input names: the `q35c.name` argument attribute, else arg0, arg1, ..."""
    return _names(fn.arg_attrs, len(fn.args), "arg")


def result_names(fn: func.FuncOp) -> list[str]:
    """Output names: the `q35c.name` result attribute, else out0, out1, ..."""
    return _names(fn.res_attrs, len(fn.function_type.outputs.data), "out")


def _names(attrs, count: int, prefix: str) -> list[str]:
    names = [f"{prefix}{i}" for i in range(count)]
    if attrs is not None:
        for i, d in enumerate(attrs.data):
            name = d.data.get("q35c.name")
            if isinstance(name, StringAttr):
                names[i] = name.data
    return names


def entry_function(module: ModuleOp, name: str | None = None) -> func.FuncOp:
    """The function to run: `name`, else `main`, else the module's only public function."""
    funcs = [op for op in module.ops if isinstance(op, func.FuncOp) and op.body.blocks]
    by_name = {f.sym_name.data: f for f in funcs}
    if name is not None:
        if name not in by_name:
            raise InterpreterError(f"no function @{name}; the module has {sorted(by_name)}")
        return by_name[name]
    if "main" in by_name:
        return by_name["main"]
    public = [f for f in funcs if f.sym_visibility is None or f.sym_visibility.data == "public"]
    if len(public) != 1:
        raise InterpreterError(
            f"cannot pick an entry point among {sorted(by_name)}: name one with --entry"
        )
    return public[0]


class Interpreter:
    """Runs the functions of one module on numpy values, with weights from a store."""

    def __init__(self, module: ModuleOp, store: WeightStore):
        self.module = module
        self.store = store

    def function(self, name: str) -> func.FuncOp:
        return entry_function(self.module, name)

    def call(self, fn: func.FuncOp, args: list[Value]) -> tuple[Value, ...]:
        saved = getattr(self, "_env", None)
        self._env: dict[SSAValue, Value] = {}
        try:
            return self.run_region(fn.body, args, func.ReturnOp)
        finally:
            self._env = saved

    def run_region(self, region, args: list[Value], terminator=None) -> tuple[Value, ...]:
        """Run the single block of `region` with `args`; the values its terminator passes."""
        env = self._env
        block = region.block
        env.update(zip(block.args, args))
        for op in block.ops:
            if op.has_trait(IsTerminator) or isinstance(op, func.ReturnOp):
                return tuple(env[v] for v in op.operands)
            run = _IMPLS.get(type(op))
            if run is None:
                raise InterpreterError(f"{op.name} is not supported by the interpreter")
            results = run(self, op, [env[v] for v in op.operands])
            env.update(zip(op.results, results))
        if terminator is func.ReturnOp:
            raise InterpreterError(f"function @{region.parent_op().sym_name.data} has no "
                                   "func.return")
        return ()

    def run(self, inputs: Mapping[str, np.ndarray], entry: str | None = None
            ) -> dict[str, np.ndarray]:
        fn = entry_function(self.module, entry)
        names = argument_names(fn)
        intents = argument_attr_strings(fn, "q35c.intent")
        missing = [n for n, i in zip(names, intents) if n not in inputs and i != "out"]
        if missing:
            raise InterpreterError(f"missing inputs: {', '.join(missing)}")
        args = []
        for index, (name, arg) in enumerate(zip(names, fn.args)):
            want = arg.type
            if isinstance(want, MemRefType):
                args.append(_memref_argument(fn, index, names, inputs))
                continue
            value = np.asarray(inputs[name])
            if isinstance(want, TensorType):
                shape = tuple(want.get_shape())
                if value.shape != shape:
                    raise InterpreterError(
                        f"input '{name}' has shape {value.shape}, expected {shape}")
                value = value.astype(numpy_dtype(want.get_element_type()), copy=False)
            elif isinstance(want, (IntegerType, IndexType, Float32Type, Float64Type)):
                if value.shape != ():
                    raise InterpreterError(f"input '{name}' must be a scalar")
                value = value.astype(numpy_dtype(want))
            args.append(value)
        outputs = dict(zip(result_names(fn), self.call(fn, args)))
        for name, intent, value in zip(names, intents, args):
            if intent in ("out", "inout"):  # memref arguments, updated in place
                outputs[name] = value
        return outputs


def argument_attr_strings(fn: func.FuncOp, key: str) -> list[str | None]:
    values: list[str | None] = [None] * len(fn.args)
    if fn.arg_attrs is not None:
        for i, d in enumerate(fn.arg_attrs.data):
            attr = d.data.get(key)
            if isinstance(attr, StringAttr):
                values[i] = attr.data
    return values


def memref_argument_shape(fn: func.FuncOp, index: int, scalars: Mapping[str, Any]
                          ) -> tuple[int, ...] | None:
    """The shape of memref argument `index`: its static extents, else the `q35c.dims`
    argument attribute (integer expressions over scalar argument names, such as "2*(P)",
    evaluated with `scalars`); None if it cannot be known without the array itself."""
    want = fn.args[index].type
    assert isinstance(want, MemRefType)
    shape = list(want.get_shape())
    if all(d >= 0 for d in shape):
        return tuple(shape)
    dims = fn.arg_attrs.data[index].data.get("q35c.dims") if fn.arg_attrs else None
    if not isinstance(dims, ArrayAttr):
        return None
    try:
        return tuple(_shape_expression(d.data, scalars) for d in dims.data)
    except KeyError:
        return None


def _shape_expression(text: str, scalars: Mapping[str, Any]) -> int:
    """Evaluate `+ - * /` (truncating), parentheses, integers and names."""
    import ast as pyast

    def value(node) -> int:
        if isinstance(node, pyast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, pyast.Name):
            return int(np.asarray(scalars[node.id]))
        if isinstance(node, pyast.UnaryOp) and isinstance(node.op, pyast.USub):
            return -value(node.operand)
        if isinstance(node, pyast.BinOp):
            a, b = value(node.left), value(node.right)
            if isinstance(node.op, pyast.Add):
                return a + b
            if isinstance(node.op, pyast.Sub):
                return a - b
            if isinstance(node.op, pyast.Mult):
                return a * b
            if isinstance(node.op, pyast.Div) and b:
                return abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
        raise InterpreterError(f"cannot evaluate the shape expression '{text}'")

    return max(0, value(pyast.parse(text, mode="eval").body))


def _memref_argument(fn: func.FuncOp, index: int, names: list[str],
                     inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """A fresh numpy array for a memref argument (a copy: the callee writes into it)."""
    name = names[index]
    want = fn.args[index].type
    dtype = numpy_dtype(want.get_element_type())
    shape = memref_argument_shape(fn, index, inputs)
    if name not in inputs:
        if shape is None:
            raise InterpreterError(f"output '{name}': its shape depends on values that "
                                   "are not inputs; pass it with --input")
        return np.zeros(shape, dtype)
    value = np.asarray(inputs[name])
    rank = len(want.get_shape())
    ok = value.ndim == rank and all(
        d < 0 or d == v for d, v in zip(want.get_shape(), value.shape))
    if shape is not None and value.shape != shape:
        ok = False
    if not ok:
        raise InterpreterError(f"input '{name}' has shape {value.shape}, expected "
                               f"{shape if shape is not None else want}")
    if value.dtype.kind == "f" and np.dtype(dtype).kind in "iub":
        raise InterpreterError(f"input '{name}' is {value.dtype}, expected {dtype}")
    return np.array(value, dtype=dtype, copy=True)


def run_module(module: ModuleOp, store: WeightStore, inputs: Mapping[str, np.ndarray],
               entry: str | None = None) -> dict[str, np.ndarray]:
    """Execute `module` (its entry function) and return its outputs by name."""
    return Interpreter(module, store).run(inputs, entry)
