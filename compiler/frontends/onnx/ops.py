"""ONNX operator converters: one function per op type, from ONNX semantics to IR.

A converter gets the importer (for `ssa()`, `tb` and the node's attributes) and the node's
inputs, each either an `SSAValue` (computed at run time), a numpy array (known at compile
time) or None (an omitted optional input), and returns one value per node output.
Converters run only when some input is a run-time value: nodes whose inputs are all
known are folded by the ONNX reference implementation instead (importer.py), which is how
exporters' shape subgraphs (Shape, Gather, Concat, Range, ...) disappear at import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from onnx import NodeProto, TensorProto
from xdsl.dialects import arith
from xdsl.ir import SSAValue

from q35c.compiler.frontends.onnx.builder import (
    BINARY_FLOAT,
    BINARY_INT,
    UNARY_MATH,
    is_float,
    shape_of,
)
from q35c.dialects import q35nn

if TYPE_CHECKING:
    from q35c.compiler.frontends.onnx.importer import OnnxImporter

Value = SSAValue | np.ndarray | None
Converter = Callable[["OnnxImporter", NodeProto, list[Value]], list[Value]]

CONVERTERS: dict[str, Converter] = {}

FOLD_ONLY = frozenset({
    "Constant", "Range", "ConstantOfShape", "Trilu", "EyeLike",
    "NonZero", "CumSum", "Mod", "Floor", "Ceil", "Round", "Not", "And", "Or", "Xor",
    "LessOrEqual", "GreaterOrEqual", "IsNaN", "IsInf", "Sign", "ReduceProd", "ArgMax",
    "ArgMin", "DequantizeLinear", "QuantizeLinear", "Tile",
})
"""Ops q35c evaluates only at import time, when all their inputs are known."""


def converter(*op_types: str):
    def register(fn: Converter) -> Converter:
        for op_type in op_types:
            CONVERTERS[op_type] = fn
        return fn

    return register


def _shown(values: list[int]) -> str:
    """A list for an error message, cut short when it is long (fuzzed models have them)."""
    if len(values) <= 8:
        return str(list(values))
    return f"[{', '.join(map(str, values[:6]))}, ... ({len(values)} values)]"


def _const_ints(imp: OnnxImporter, node: NodeProto, value: Value, what: str) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, np.ndarray):
        raise imp.error(node, f"{what} must be known at compile time (bind shapes with --shape)")
    return [int(v) for v in np.asarray(value).ravel()]


@converter("Shape")
def _shape(imp, node, inputs):
    """Static shapes make Shape a constant even of a run-time tensor."""
    shape = shape_of(imp.ssa(inputs[0]))
    start, end = imp.attr(node, "start", 0), imp.attr(node, "end", len(shape))
    return [np.array(shape[start:end], dtype=np.int64)]


@converter("Size")
def _size(imp, node, inputs):
    return [np.array(int(np.prod(shape_of(imp.ssa(inputs[0])))), dtype=np.int64)]


@converter("Identity", "Dropout")
def _identity(imp, node, inputs):
    return [inputs[0]] + [None] * (len(node.output) - 1)


@converter(*BINARY_FLOAT)
def _binary(imp, node, inputs):
    if len(inputs) != 2:  # Max, Min (and Sum, Mean) are variadic in ONNX
        raise imp.error(node, f"{node.op_type} of {len(inputs)} inputs is not supported (only 2)")
    a, b = inputs
    if node.op_type == "Pow" and isinstance(b, np.ndarray) and b.size == 1:
        exponent = float(b.ravel()[0])
        if exponent == 2.0:
            x = imp.ssa(a)
            return [imp.tb.binary(arith.MulfOp, x, x)]
        if exponent == 0.5:
            return [imp.tb.unary(UNARY_MATH["Sqrt"], imp.ssa(a))]
    a, b = imp.ssa(a), imp.ssa(b)
    if is_float(a) != is_float(b):
        raise imp.error(node, "mixes float and integer operands")
    if not is_float(a):
        if node.op_type not in BINARY_INT:
            raise imp.error(node, f"{node.op_type} on integer tensors is not supported")
        return [imp.tb.binary(BINARY_INT[node.op_type], a, b)]
    return [imp.tb.binary(BINARY_FLOAT[node.op_type], a, b)]


@converter(*UNARY_MATH)
def _unary(imp, node, inputs):
    return [imp.tb.unary(UNARY_MATH[node.op_type], imp.float_ssa(node, inputs[0]))]


@converter("Reciprocal")
def _reciprocal(imp, node, inputs):
    x = imp.float_ssa(node, inputs[0])
    return [imp.tb.binary(arith.DivfOp, imp.tb.constant(np.array(1.0, np.float32)), x)]


@converter("Sigmoid")
def _sigmoid(imp, node, inputs):
    x = imp.float_ssa(node, inputs[0])
    exp = imp.tb.unary(UNARY_MATH["Exp"], imp.tb.unary(arith.NegfOp, x))
    one = imp.tb.constant(np.array(1.0, np.float32))
    return [imp.tb.binary(arith.DivfOp, one, imp.tb.binary(arith.AddfOp, one, exp))]


@converter("Relu")
def _relu(imp, node, inputs):
    x = imp.float_ssa(node, inputs[0])
    return [imp.tb.binary(arith.MaximumfOp, x, imp.tb.constant(np.array(0.0, np.float32)))]


@converter("Softmax")
def _softmax(imp, node, inputs):
    return [imp.tb.insert(q35nn.SoftmaxOp(imp.float_ssa(node, inputs[0]),
                                          imp.attr(node, "axis", -1))).result]


@converter("Gelu")
def _gelu(imp, node, inputs):
    approximate = imp.attr(node, "approximate", "none")
    return [imp.tb.insert(q35nn.GeluOp(imp.float_ssa(node, inputs[0]), approximate)).result]


def _norm_axis_is_last(imp, node, x: SSAValue) -> None:
    axis = imp.attr(node, "axis", -1)
    if axis % len(shape_of(x)) != len(shape_of(x)) - 1:
        raise imp.error(node, f"normalization over axis {axis} (not the last) is not supported")


@converter("LayerNormalization")
def _layer_norm(imp, node, inputs):
    x = imp.float_ssa(node, inputs[0])
    _norm_axis_is_last(imp, node, x)
    features = shape_of(x)[-1]
    gamma = imp.ssa(inputs[1])
    beta = imp.ssa(inputs[2] if len(inputs) > 2 and inputs[2] is not None
                   else np.zeros(features, np.float32))
    eps = imp.attr(node, "epsilon", 1e-5)
    y = imp.tb.insert(q35nn.LayerNormOp(x, gamma, beta, eps)).result
    return [y] + [None] * (len(node.output) - 1)


@converter("RMSNormalization", "SimplifiedLayerNormalization")
def _rms_norm(imp, node, inputs):
    x = imp.float_ssa(node, inputs[0])
    _norm_axis_is_last(imp, node, x)
    eps = imp.attr(node, "epsilon", 1e-5)
    y = imp.tb.insert(q35nn.RMSNormOp(x, imp.ssa(inputs[1]), eps)).result
    return [y] + [None] * (len(node.output) - 1)


@converter("MatMul")
def _matmul(imp, node, inputs):
    a, b = (imp.float_ssa(node, v) for v in inputs)
    return [imp.tb.matmul(a, b)]


@converter("Gemm")
def _gemm(imp, node, inputs):
    a, b = inputs[0], inputs[1]
    name_b = node.input[1]
    c = inputs[2] if len(inputs) > 2 else None
    if imp.attr(node, "transA", 0):
        a = a.T if isinstance(a, np.ndarray) else imp.tb.transpose(imp.ssa(a), (1, 0))
    if imp.attr(node, "transB", 0):
        # A constant weight is transposed at import, so it is stored as [K, N] for Q3P5.
        b = (imp.fold_transposed(name_b, b) if isinstance(b, np.ndarray)
             else imp.tb.transpose(imp.ssa(b), (1, 0)))
    y = imp.tb.matmul(imp.float_ssa(node, a), imp.float_ssa(node, b))
    alpha, beta = imp.attr(node, "alpha", 1.0), imp.attr(node, "beta", 1.0)
    if alpha != 1.0:
        y = imp.tb.binary(arith.MulfOp, y, imp.tb.constant(np.array(alpha, np.float32)))
    if c is not None:
        if isinstance(c, np.ndarray) and beta != 1.0:
            c = (c * beta).astype(np.float32)
        elif beta != 1.0:
            c = imp.tb.binary(arith.MulfOp, imp.ssa(c), imp.tb.constant(np.array(beta, np.float32)))
        y = imp.tb.binary(arith.AddfOp, y, imp.ssa(c))
    return [y]


def _reshape_target(imp, node, in_shape, spec: list[int], allowzero: bool) -> list[int]:
    if not allowzero and any(d == 0 and i >= len(in_shape) for i, d in enumerate(spec)):
        raise imp.error(node, f"reshape of {list(in_shape)} to {_shown(spec)} copies a "
                              "dimension the input does not have (0)")
    out = [in_shape[i] if d == 0 and not allowzero else d for i, d in enumerate(spec)]
    if out.count(-1) > 1:
        raise imp.error(node, f"reshape to {spec} has more than one -1")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        out[out.index(-1)] = int(np.prod(in_shape)) // max(known, 1)
    if int(np.prod(out)) != int(np.prod(in_shape)):
        raise imp.error(node, f"cannot reshape {list(in_shape)} to {_shown(spec)}")
    return out


@converter("Reshape")
def _reshape(imp, node, inputs):
    x = imp.ssa(inputs[0])
    spec = _const_ints(imp, node, inputs[1], "the target shape")
    out = _reshape_target(imp, node, shape_of(x), spec, bool(imp.attr(node, "allowzero", 0)))
    return [imp.tb.reshape(x, out)]


def _axes(imp, node, inputs, rank: int) -> list[int]:
    axes = (_const_ints(imp, node, inputs[1], "axes") if len(inputs) > 1
            else list(imp.attr(node, "axes", [])))
    return sorted(a % rank for a in axes)


@converter("Unsqueeze")
def _unsqueeze(imp, node, inputs):
    x = imp.ssa(inputs[0])
    shape = list(shape_of(x))
    axes = _axes(imp, node, inputs, len(shape) + len(
        _const_ints(imp, node, inputs[1], "axes") if len(inputs) > 1
        else imp.attr(node, "axes", [])))
    for axis in axes:
        shape.insert(axis, 1)
    return [imp.tb.reshape(x, shape)]


@converter("Squeeze")
def _squeeze(imp, node, inputs):
    x = imp.ssa(inputs[0])
    shape = shape_of(x)
    axes = _axes(imp, node, inputs, len(shape)) or [i for i, d in enumerate(shape) if d == 1]
    return [imp.tb.reshape(x, [d for i, d in enumerate(shape) if i not in axes])]


@converter("Flatten")
def _flatten(imp, node, inputs):
    x = imp.ssa(inputs[0])
    shape = shape_of(x)
    axis = imp.attr(node, "axis", 1)
    if not -len(shape) <= axis <= len(shape):
        raise imp.error(node, f"axis {axis} is out of range for rank {len(shape)}")
    axis += len(shape) if axis < 0 else 0  # -1 is the last axis, not the end
    return [imp.tb.reshape(x, [int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))])]


@converter("Transpose")
def _transpose(imp, node, inputs):
    x = imp.ssa(inputs[0])
    perm = imp.attr(node, "perm", list(reversed(range(len(shape_of(x))))))
    if sorted(perm) != list(range(len(shape_of(x)))):
        raise imp.error(node, f"perm {_shown(perm)} is not a permutation of the "
                              f"{len(shape_of(x))} axes of its input")
    if (folded := imp.shape_only_transposed(x, perm, node.output[0])) is not None:
        return [folded]
    return [imp.tb.transpose(x, perm)]


@converter("Concat")
def _concat(imp, node, inputs):
    values = [imp.ssa(v) for v in inputs if v is not None]
    shapes = [list(shape_of(v)) for v in values]
    if not shapes or not shapes[0]:
        raise imp.error(node, "concatenates no tensors, or scalars")
    axis = imp.attr(node, "axis", 0) % len(shapes[0])
    if any(len(s) != len(shapes[0]) or s[:axis] + s[axis + 1:] != shapes[0][:axis] +
           shapes[0][axis + 1:] for s in shapes):
        raise imp.error(node, f"cannot concatenate shapes {shapes} along axis {axis}")
    return [imp.tb.concat(values, axis)]


def _slice_params(imp, node, shape, starts, ends, axes, steps):
    axes = [a % len(shape) for a in (axes or range(len(starts)))]
    steps = steps or [1] * len(starts)
    offsets, sizes, strides = [0] * len(shape), list(shape), [1] * len(shape)
    for axis, start, end, step in zip(axes, starts, ends, steps):
        if step <= 0:
            raise imp.error(node, "slices with a non-positive step are not supported")
        begin, stop, _ = slice(start, end, step).indices(shape[axis])
        offsets[axis], strides[axis] = begin, step
        sizes[axis] = max(0, -(-(stop - begin) // step))
    return offsets, sizes, strides


@converter("Slice")
def _slice(imp, node, inputs):
    x = imp.ssa(inputs[0])
    ints = [_const_ints(imp, node, inputs[i] if len(inputs) > i else None, "slice bounds")
            for i in range(1, 5)]
    offsets, sizes, strides = _slice_params(imp, node, shape_of(x), *ints)
    if 0 in sizes:
        raise imp.error(node, "empty slices are not supported")
    return [imp.tb.slice(x, offsets, sizes, strides)]


@converter("Split")
def _split(imp, node, inputs):
    x = imp.ssa(inputs[0])
    shape = shape_of(x)
    axis = imp.attr(node, "axis", 0) % len(shape)
    sizes = (_const_ints(imp, node, inputs[1], "split sizes") if len(inputs) > 1 and inputs[1]
             is not None else list(imp.attr(node, "split", [])))
    if not sizes:
        parts = len(node.output)
        chunk = -(-shape[axis] // parts)
        sizes = [min(chunk, shape[axis] - i * chunk) for i in range(parts)]
    outputs, start = [], 0
    for size in sizes:
        offsets = [0] * len(shape)
        offsets[axis] = start
        out_shape = list(shape)
        out_shape[axis] = size
        outputs.append(imp.tb.slice(x, offsets, out_shape, [1] * len(shape)))
        start += size
    return outputs


@converter("Gather")
def _gather(imp, node, inputs):
    data, indices = inputs
    axis = imp.attr(node, "axis", 0)
    if isinstance(indices, np.ndarray):
        x = imp.ssa(data)
        shape = shape_of(x)
        axis %= len(shape)
        idx = np.where(indices < 0, indices + shape[axis], indices).astype(np.int64)
        if idx.size == 1:  # a scalar index: a slice and a reshape
            offsets = [0] * len(shape)
            offsets[axis] = int(idx.ravel()[0])
            sizes = list(shape)
            sizes[axis] = 1
            sliced = imp.tb.slice(x, offsets, sizes, [1] * len(shape))
            out = [*shape[:axis], *idx.shape, *shape[axis + 1:]]
            return [imp.tb.reshape(sliced, out)]
        indices = idx
    x = imp.float_ssa(node, data)
    return [imp.tb.insert(q35nn.GatherOp(x, imp.ssa(indices), axis)).result]


@converter("Expand")
def _expand(imp, node, inputs):
    x = imp.ssa(inputs[0])
    target = _const_ints(imp, node, inputs[1], "the expand shape")
    try:
        shape = np.broadcast_shapes(shape_of(x), tuple(target))
    except (ValueError, RuntimeError):  # RuntimeError: too many dimensions for numpy
        raise imp.error(node, f"cannot expand {list(shape_of(x))} to {_shown(target)}"
                        ) from None
    return [imp.tb.broadcast_to(x, shape)]


@converter("Where")
def _where(imp, node, inputs):
    cond, a, b = (imp.ssa(v) for v in inputs)
    return [imp.tb.select(cond, a, b)]


@converter("Equal", "Less", "Greater")
def _compare(imp, node, inputs):
    predicate = {"Equal": "oeq", "Less": "olt", "Greater": "ogt"}[node.op_type]
    return [imp.tb.compare(predicate, imp.ssa(inputs[0]), imp.ssa(inputs[1]))]


_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}


@converter("Cast")
def _cast(imp, node, inputs):
    to = imp.attr(node, "to", TensorProto.FLOAT)
    if to == TensorProto.BOOL:
        raise imp.error(node, "Cast to bool of a run-time value is not supported")
    return [imp.tb.cast(imp.ssa(inputs[0]), to in _FLOAT_TYPES)]


@converter("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def _reduce(imp, node, inputs):
    x = imp.float_ssa(node, inputs[0])
    rank = len(shape_of(x))
    axes = _axes(imp, node, inputs, rank)
    if not axes:
        if imp.attr(node, "noop_with_empty_axes", 0):
            return [x]
        axes = list(range(rank))
    kind = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max",
            "ReduceMin": "min"}[node.op_type]
    return [imp.tb.reduce(kind, x, axes, bool(imp.attr(node, "keepdims", 1)))]
