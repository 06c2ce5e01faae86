"""IR emission for the ONNX frontend: numpy-style tensor operations as xDSL ops.

`TensorBuilder` appends ops to one block and hides the bookkeeping ONNX semantics need:
numpy broadcasting (reshape away size-1 dims, then `linalg.broadcast`), destination tensors
for linalg ops, reshapes through `tensor.reshape` with a constant shape, and constants
(small ones inline as `arith.constant`, large ones in the weight store behind
`quant3p5.weight`). Everything it emits is in the op set the reference interpreter runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from xdsl.builder import Builder
from xdsl.dialects import arith, math as xmath, tensor
from xdsl.dialects.builtin import (
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    TensorType,
    f32,
    i1,
    i64,
)
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.rewriter import InsertPoint

from q35c.compiler.tensors import exact_element
from q35c.compiler.weights import FileWeight, WeightStore
from q35c.dialects import q35nn, quant3p5

_CMPF = {"oeq": 1, "ogt": 2, "olt": 4}
_CMPI = {"oeq": 0, "olt": 2, "ogt": 4}  # eq, slt, sgt

INLINE_LIMIT = 64
"""Constants with more elements than this go to the weight store instead of the IR text."""


def shape_of(value: SSAValue) -> tuple[int, ...]:
    assert isinstance(value.type, TensorType)
    return tuple(value.type.get_shape())


def element_of(value: SSAValue) -> Attribute:
    assert isinstance(value.type, TensorType)
    return value.type.get_element_type()


def is_float(value: SSAValue) -> bool:
    return not isinstance(element_of(value), IntegerType)


def mlir_element(dtype: np.dtype) -> Attribute:
    """The IR element type for a numpy dtype (all floats become f32, all ints i64)."""
    if dtype == np.bool_:
        return i1
    if np.issubdtype(dtype, np.integer):
        return i64
    return f32


def ir_array(array: np.ndarray) -> np.ndarray:
    """`array` converted to the dtype the IR uses for it (float32, int64 or bool)."""
    if array.dtype == np.bool_:
        return array
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    return array.astype(np.float32)


class TensorBuilder:
    """Appends ops for numpy-like tensor operations at the end of `block`."""

    def __init__(self, block: Block, store: WeightStore):
        self.builder = Builder(InsertPoint.at_end(block))
        self.store = store

    def insert(self, op: Operation) -> Operation:
        return self.builder.insert(op)

    # -- constants ---------------------------------------------------------------------
    def constant(self, array: np.ndarray, name: str | None = None,
                 exact: bool = False) -> SSAValue:
        """A tensor constant; large ones are stored by (a fresh variant of) `name`.
        It has the IR's type for the array (`ir_array`), or with `exact` its own dtype."""
        array = np.asarray(array) if exact else ir_array(np.asarray(array))
        element = exact_element(array.dtype) if exact else mlir_element(array.dtype)
        ttype = TensorType(element, array.shape)
        if array.size > INLINE_LIMIT:
            key = self.store.fresh_name(name or "const")
            self.store[key] = array
            return self.insert(quant3p5.WeightOp(key, ttype)).result
        if array.dtype == np.bool_:
            values = [int(v) for v in array.ravel()]
        elif isinstance(element, IntegerType):
            values = [int(v) for v in array.ravel()]
        else:
            values = [float(v) for v in array.ravel()]
        if array.size == 0 and array.shape != (0,):  # `dense<>` spells only the shape (0,);
            return self.insert(tensor.EmptyOp([], ttype)).tensor  # no values to hold
        attr = DenseIntOrFPElementsAttr.from_list(ttype, values)
        return self.insert(arith.ConstantOp(attr, ttype)).result

    def file_constant(self, weight: FileWeight, name: str) -> SSAValue:
        """A large constant whose data stays in a file: stored as a `FileWeight` that reads
        (and converts to the IR's dtype) when used, like `constant` would have stored it."""
        dtype = ir_array(np.zeros(0, np.dtype(weight.dtype))).dtype
        weight = FileWeight(weight.path, weight.offset, weight.dtype, weight.shape, dtype.str,
                            weight.transpose, weight.order)
        key = self.store.fresh_name(name)
        self.store[key] = weight
        ttype = TensorType(mlir_element(dtype), list(weight.result_shape))
        return self.insert(quant3p5.WeightOp(key, ttype)).result

    def scalar_f32(self, value: float) -> SSAValue:
        return self.insert(arith.ConstantOp(FloatAttr(value, f32))).result

    def empty(self, shape: Sequence[int], element: Attribute = f32) -> SSAValue:
        return self.insert(tensor.EmptyOp([], TensorType(element, list(shape)))).results[0]

    # -- shapes ------------------------------------------------------------------------
    def reshape(self, value: SSAValue, shape: Sequence[int]) -> SSAValue:
        shape = tuple(int(d) for d in shape)
        if shape_of(value) == shape:
            return value
        spec = self.constant(np.array(shape, dtype=np.int64))
        result = TensorType(element_of(value), list(shape))
        return self.insert(tensor.ReshapeOp(value, spec, result)).result

    def transpose(self, value: SSAValue, perm: Sequence[int]) -> SSAValue:
        perm = [int(p) for p in perm]
        if perm == sorted(perm):
            return value
        shape = shape_of(value)
        init = self.empty([shape[p] for p in perm], element_of(value))
        op = linalg.TransposeOp(value, init, DenseArrayBase.from_list(i64, perm))
        return self.insert(op).results[0]

    def broadcast_to(self, value: SSAValue, shape: Sequence[int]) -> SSAValue:
        """numpy.broadcast_to: drop size-1 source dims, then add the missing ones."""
        shape = tuple(shape)
        src = shape_of(value)
        if src == shape:
            return value
        padded = (1,) * (len(shape) - len(src)) + src
        kept = [i for i, (s, d) in enumerate(zip(padded, shape)) if s == d and s != 1]
        squeezed = self.reshape(value, [shape[i] for i in kept])
        added = [i for i in range(len(shape)) if i not in kept]
        init = self.empty(shape, element_of(value))
        op = linalg.BroadcastOp(squeezed, init, DenseArrayBase.from_list(i64, added))
        return self.insert(op).results[0]

    def broadcast_all(self, *values: SSAValue) -> list[SSAValue]:
        shape = np.broadcast_shapes(*(shape_of(v) for v in values))
        return [self.broadcast_to(v, shape) for v in values]

    # -- elementwise -------------------------------------------------------------------
    def binary(self, op_type: type[Operation], a: SSAValue, b: SSAValue) -> SSAValue:
        a, b = self.broadcast_all(a, b)
        return self.insert(op_type(a, b)).result

    def unary(self, op_type: type[Operation], a: SSAValue) -> SSAValue:
        return self.insert(op_type(a)).result

    def compare(self, predicate: str, a: SSAValue, b: SSAValue) -> SSAValue:
        a, b = self.broadcast_all(a, b)
        result = TensorType(i1, list(shape_of(a)))
        if is_float(a):
            op = arith.CmpfOp.build(operands=[a, b], result_types=[result], properties={
                "predicate": IntegerAttr(_CMPF[predicate], 64),
                "fastmath": arith.FastMathFlagsAttr("none")})
        else:
            op = arith.CmpiOp.build(operands=[a, b], result_types=[result], properties={
                "predicate": IntegerAttr(_CMPI[predicate], 64)})
        return self.insert(op).result

    def select(self, cond: SSAValue, a: SSAValue, b: SSAValue) -> SSAValue:
        cond, a, b = self.broadcast_all(cond, a, b)
        return self.insert(arith.SelectOp(cond, a, b)).result

    def cast(self, value: SSAValue, to_float: bool) -> SSAValue:
        if is_float(value) == to_float:
            return value
        shape = list(shape_of(value))
        if to_float:
            op = arith.SIToFPOp(value, TensorType(f32, shape))
        else:
            op = arith.FPToSIOp(value, TensorType(i64, shape))
        return self.insert(op).result

    # -- reductions and products -------------------------------------------------------
    def reduce(self, kind: str, value: SSAValue, axes: Sequence[int], keepdims: bool) -> SSAValue:
        """sum / max / min / mean over `axes` (normalized, non-negative)."""
        shape = shape_of(value)
        axes = sorted({a % len(shape) for a in axes})
        out_shape = [d for i, d in enumerate(shape) if i not in axes]
        init_value = {"sum": 0.0, "mean": 0.0, "max": -np.inf, "min": np.inf}[kind]
        init = self.insert(linalg.FillOp((self.scalar_f32(init_value),),
                                         (self.empty(out_shape),),
                                         (TensorType(f32, out_shape),))).results[0]
        combiner = {"sum": arith.AddfOp, "mean": arith.AddfOp, "max": arith.MaximumfOp,
                    "min": arith.MinimumfOp}[kind]
        body = Block(arg_types=[f32, f32])
        combined = combiner(body.args[0], body.args[1])
        body.add_ops([combined, linalg.YieldOp(combined.result)])
        op = linalg.ReduceOp(value, init, DenseArrayBase.from_list(i64, axes), Region(body))
        result = self.insert(op).results[0]
        if kind == "mean":
            count = int(np.prod([shape[a] for a in axes]))
            result = self.binary(arith.DivfOp, result,
                                 self.constant(np.array(count, dtype=np.float32)))
        if keepdims:
            result = self.reshape(result, [1 if i in axes else d for i, d in enumerate(shape)])
        return result

    def matmul(self, a: SSAValue, b: SSAValue) -> SSAValue:
        """numpy.matmul for ranks >= 1 (vectors are promoted and the dim dropped again)."""
        sa, sb = shape_of(a), shape_of(b)
        if len(sa) == 1:
            return self.reshape(self.matmul(self.reshape(a, (1, *sa)), b),
                                (*np.broadcast_shapes(sb[:-2]), sb[-1]) if len(sb) > 1 else ())
        if len(sb) == 1:
            out = self.matmul(a, self.reshape(b, (*sb, 1)))
            return self.reshape(out, shape_of(out)[:-1])
        if len(sa) == 2 and len(sb) == 2:
            init = self.insert(linalg.FillOp((self.scalar_f32(0.0),),
                                             (self.empty((sa[0], sb[1])),),
                                             (TensorType(f32, [sa[0], sb[1]]),))).results[0]
            return self.insert(linalg.MatmulOp((a, b), (init,))).results[0]
        return self.insert(q35nn.BatchMatmulOp(a, b)).result

    # -- slicing -----------------------------------------------------------------------
    def slice(self, value: SSAValue, starts: Sequence[int], sizes: Sequence[int],
              steps: Sequence[int]) -> SSAValue:
        op = tensor.ExtractSliceOp.from_static_parameters(value, list(starts), list(sizes),
                                                          list(steps))
        return self.insert(op).results[0]

    def concat(self, values: Sequence[SSAValue], axis: int) -> SSAValue:
        shapes = [shape_of(v) for v in values]
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        return self.insert(tensor.ConcatOp(values, axis, TensorType(element_of(values[0]), out))
                           ).results[0]


UNARY_MATH = {"Exp": xmath.ExpOp, "Log": xmath.LogOp, "Sqrt": xmath.SqrtOp,
              "Tanh": xmath.TanhOp, "Erf": xmath.ErfOp, "Abs": xmath.AbsFOp,
              "Sin": xmath.SinOp, "Cos": xmath.CosOp, "Neg": arith.NegfOp}
BINARY_FLOAT = {"Add": arith.AddfOp, "Sub": arith.SubfOp, "Mul": arith.MulfOp,
                "Div": arith.DivfOp, "Max": arith.MaximumfOp, "Min": arith.MinimumfOp,
                "Pow": xmath.PowFOp}
BINARY_INT = {"Add": arith.AddiOp, "Sub": arith.SubiOp, "Mul": arith.MuliOp,
              "Div": arith.DivSIOp}
