"""`raise-fortran-tensors`: a Fortran kernel whose loops were all raised, as a tensor function.

The Fortran frontend gives a procedure memref arguments (its dummies, in their declared
shapes) and, where it recognises a loop nest, replaces it by tensor ops between
`bufferization.to_tensor` of the arguments it reads and
`bufferization.materialize_in_destination` into the argument it writes
(compiler/frontends/fortran/raising.py). Targets that take tensor functions (groq) need the
procedure as such a function: this pass rewrites every Fortran function whose body is only
raised ops into one with

- the `intent(in)` arrays as tensor arguments (same order, names and shapes),
- each `intent(out)` array that is materialized as a result, named by its dummy,
- the run-time pair-layout matmul (`quant3p5.pack` of argument bytes feeding
  `quant3p5.matmul_int8`, which needs the weights at compile time on groq) spelled as the
  tensor ops of the Fortran loop nest it came from: decode the two levels of each byte with
  shifts (`L(2p-1) = v4`, `L(2p) = 2*v3 + 1`, interleaved along K), the int32 products
  `X * L` summed over K (`linalg.broadcast`, `arith.muli`, `linalg.reduce`), the int32 row
  sums of X, and the rescale `(scale(j) * acc + offset(j) * sx) * xscale(i)` in the loop's
  operation order, so the result is bit-identical to the loops (the byte's bit 7 is
  ignored, as the loops' `iand` masks do).

Functions that still hold loops are left as they are: the target then refuses the loop op
in one line with its source line (driver.check_accepted_ops). Other functions are not
touched. The pass records what it did as `q35c.raised = ["line 49: loop nest -> ..."]` on
the function (printed by `--dump-ir`).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.builder import Builder
from xdsl.context import Context
from xdsl.dialects import arith, bufferization, func, memref, tensor
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DictionaryAttr,
    IntegerAttr,
    MemRefType,
    ModuleOp,
    StringAttr,
    TensorType,
    f32,
    i32,
    i64,
)
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import Attribute, Block, Region, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint

from q35c.dialects import q35nn, quant3p5

_ONNX_INT32 = 6  # onnx.TensorProto.INT32
_ONNX_FLOAT = 1  # onnx.TensorProto.FLOAT
_CAST_OPSET = 21

_RAISED_OPS = (bufferization.ToTensorOp, bufferization.MaterializeInDestinationOp,
               quant3p5.PackOp, quant3p5.MatmulInt8Op, arith.ConstantOp, func.ReturnOp)


def _is_fortran(fn: func.FuncOp) -> bool:
    return "q35c.integer_overflow" in fn.attributes and any(
        isinstance(t, MemRefType) for t in fn.function_type.inputs.data)


def _raisable(fn: func.FuncOp) -> bool:
    """Only raised ops (and unused scalar cells) in the body; array arguments with static
    shapes, read through `to_tensor` or written through `materialize_in_destination`."""
    for op in fn.body.block.ops:
        if isinstance(op, memref.AllocaOp) and not op.results[0].uses:
            continue
        if not isinstance(op, _RAISED_OPS):
            return False
        if isinstance(op, quant3p5.PackOp) and any(
                not isinstance(u.operation, quant3p5.MatmulInt8Op) for u in op.result.uses):
            return False
    for arg in fn.args:
        t = arg.type
        if not isinstance(t, MemRefType) or not t.get_shape() or \
                any(d < 0 for d in t.get_shape()):
            return False
        if any(not isinstance(u.operation, (bufferization.ToTensorOp,
                                            bufferization.MaterializeInDestinationOp))
               for u in arg.uses):
            return False
    return True


def _intent(fn: func.FuncOp, i: int) -> str:
    attrs = fn.arg_attrs.data[i].data if fn.arg_attrs is not None else {}
    intent = attrs.get("q35c.intent")
    return intent.data if isinstance(intent, StringAttr) else "inout"


def shape_of(value: SSAValue) -> tuple[int, ...]:
    return tuple(value.type.get_shape())


class _Builder:
    """Appends tensor ops to a block: constants, reshapes, broadcasts, concatenation."""

    def __init__(self, block: Block):
        self.builder = Builder(InsertPoint.at_end(block))

    def insert(self, op):
        return self.builder.insert(op)

    def splat(self, value: int, shape, element: Attribute = i32) -> SSAValue:
        t = TensorType(element, list(shape))
        return self.insert(arith.ConstantOp(DenseIntOrFPElementsAttr.from_list(t, [value]))
                           ).result

    def reshape(self, value: SSAValue, shape) -> SSAValue:
        shape = tuple(int(d) for d in shape)
        if shape_of(value) == shape:
            return value
        spec = self.insert(arith.ConstantOp(DenseIntOrFPElementsAttr.from_list(
            TensorType(i64, [len(shape)]), list(shape)))).result
        return self.insert(tensor.ReshapeOp(value, spec, TensorType(
            value.type.get_element_type(), list(shape)))).result

    def broadcast_to(self, value: SSAValue, shape) -> SSAValue:
        """numpy.broadcast_to for a value whose dims equal `shape`'s or are 1."""
        shape = tuple(shape)
        src = shape_of(value)
        if src == shape:
            return value
        padded = (1,) * (len(shape) - len(src)) + src
        kept = [i for i, (s, d) in enumerate(zip(padded, shape)) if s == d and s != 1]
        squeezed = self.reshape(value, [shape[i] for i in kept])
        added = [i for i in range(len(shape)) if i not in kept]
        init = self.empty(shape, value.type.get_element_type())
        return self.insert(linalg.BroadcastOp(squeezed, init, DenseArrayBase.from_list(
            i64, added))).results[0]

    def concat(self, values: list[SSAValue], axis: int) -> SSAValue:
        out = list(shape_of(values[0]))
        out[axis] = sum(shape_of(v)[axis] for v in values)
        return self.insert(tensor.ConcatOp(values, axis, TensorType(
            values[0].type.get_element_type(), out))).results[0]

    def empty(self, shape, element: Attribute) -> SSAValue:
        return self.insert(tensor.EmptyOp([], TensorType(element, list(shape)))).results[0]


@dataclass
class _Raiser:
    """Builds the tensor ops that replace a run-time pair matmul."""

    builder: _Builder

    def pair_matmul(self, pack: quant3p5.PackOp, mm: quant3p5.MatmulInt8Op,
                    mapping: dict[SSAValue, SSAValue]) -> SSAValue:
        b = self.builder
        w = mapping[pack.codes]
        scale, offset = mapping[pack.scales], mapping[pack.offsets]
        x, xscale = mapping[mm.operands[0]], mapping[mm.operands[1]]
        k2, n = shape_of(w)
        m, k = shape_of(x)

        def cast(v: SSAValue, shape, element) -> SSAValue:
            """ONNX Cast (xDSL's arith.extsi and sitofp take no tensors): int8 -> int32
            exactly, int32 -> float32 rounded to nearest like `real(acc, real32)`."""
            to = _ONNX_INT32 if element == i32 else _ONNX_FLOAT
            return b.insert(q35nn.OnnxNodeOp(
                "Cast", _CAST_OPSET, [v], [TensorType(element, list(shape))],
                DictionaryAttr({"to": IntegerAttr(to, i64)}))).results[0]

        def widen(v: SSAValue, shape) -> SSAValue:
            return cast(v, shape, i32)

        def field(v: SSAValue, left: int, right: int) -> SSAValue:
            """(v << left) >> right, arithmetic: bits 31 - left down to right - left of v,
            sign-extended."""
            shl = b.insert(arith.ShLIOp(v, b.splat(left, (k2, n)))).result
            return b.insert(arith.ShRSIOp(shl, b.splat(right, (k2, n)))).result

        w32 = widen(w, (k2, n))
        v4 = field(w32, 25, 28)  # bits 6..3 of the byte: iand(ishft(W, -3), 15), 8.. -> -8..
        v3 = field(w32, 29, 29)  # bits 2..0: iand(W, 7), 4.. -> -4..
        odd = b.insert(arith.AddiOp(b.insert(arith.ShLIOp(v3, b.splat(1, (k2, n)))).result,
                                    b.splat(1, (k2, n)))).result  # 2*v3 + 1
        l32 = b.reshape(b.concat([b.reshape(v4, (k2, 1, n)), b.reshape(odd, (k2, 1, n))], 1),
                        (k, n))  # L(2p-1, j) = v4, L(2p, j) = 2*v3 + 1
        x32 = widen(x, (m, k))
        prod = b.insert(arith.MuliOp(b.broadcast_to(b.reshape(x32, (m, k, 1)), (m, k, n)),
                                     b.broadcast_to(b.reshape(l32, (1, k, n)), (m, k, n))
                                     )).result
        acc = self.sum_i32(prod, 1, [m, n])
        sx = self.sum_i32(x32, 1, [m])
        accf = cast(acc, (m, n), f32)
        sxf = cast(sx, (m,), f32)

        def mulf(a, c):
            return b.insert(arith.MulfOp(a, c)).result

        rows = b.broadcast_to(b.reshape(sxf, (m, 1)), (m, n))
        cols = mulf(b.broadcast_to(scale, (m, n)), accf)
        total = b.insert(arith.AddfOp(cols, mulf(b.broadcast_to(offset, (m, n)), rows))).result
        return mulf(total, b.broadcast_to(b.reshape(xscale, (m, 1)), (m, n)))

    def sum_i32(self, v: SSAValue, axis: int, out: list[int]) -> SSAValue:
        b = self.builder
        init = b.insert(linalg.FillOp((b.insert(arith.ConstantOp(IntegerAttr(0, i32))).result,),
                                      (b.empty(out, i32),), (TensorType(i32, out),))).results[0]
        body = Block(arg_types=[i32, i32])
        add = arith.AddiOp(body.args[0], body.args[1])
        body.add_ops([add, linalg.YieldOp(add.result)])
        return b.insert(linalg.ReduceOp(v, init, DenseArrayBase.from_list(i64, [axis]),
                                        Region(body))).results[0]


def raise_function(fn: func.FuncOp) -> func.FuncOp:
    """The tensor function of raisable Fortran function `fn` (see the module docstring)."""
    old_args = list(fn.args)
    inputs = [i for i, a in enumerate(old_args) if _intent(fn, i) == "in"]
    in_types = [TensorType(old_args[i].type.element_type, old_args[i].type.get_shape())
                for i in inputs]
    block = Block(arg_types=in_types)
    mapping: dict[SSAValue, SSAValue] = {}
    arg_of = {old_args[i]: block.args[j] for j, i in enumerate(inputs)}
    raiser = _Raiser(_Builder(block))
    results: dict[int, SSAValue] = {}
    notes = []
    for op in list(fn.body.block.ops):
        if isinstance(op, (memref.AllocaOp, func.ReturnOp, quant3p5.PackOp)):
            continue
        if isinstance(op, bufferization.ToTensorOp):
            mapping[op.results[0]] = arg_of[op.operands[0]]
        elif isinstance(op, bufferization.MaterializeInDestinationOp):
            dest = old_args.index(op.operands[1])
            results[dest] = mapping[op.operands[0]]
            line = op.attributes.get("q35c.raised_from_line")
            notes.append((line.value.data if isinstance(line, IntegerAttr) else None, dest))
        elif isinstance(op, quant3p5.MatmulInt8Op) and isinstance(op.operands[2].owner,
                                                                   quant3p5.PackOp):
            mapping[op.results[0]] = raiser.pair_matmul(op.operands[2].owner, op, mapping)
        else:
            clone = op.clone(value_mapper=mapping)
            raiser.builder.insert(clone)
            for old, new in zip(op.results, clone.results):
                mapping[old] = new
    order = sorted(results)
    raiser.builder.insert(func.ReturnOp(*(results[i] for i in order)))
    arg_attrs = [fn.arg_attrs.data[i] for i in inputs]
    res_attrs = [DictionaryAttr({"q35c.name": fn.arg_attrs.data[i].data["q35c.name"]})
                 for i in order]
    new = func.FuncOp(fn.sym_name.data, (in_types, [results[i].type for i in order]),
                      Region(block), arg_attrs=ArrayAttr(arg_attrs),
                      res_attrs=ArrayAttr(res_attrs))
    new.attributes.update({k: v for k, v in fn.attributes.items()
                           if k.startswith("q35c.")})
    names = {i: fn.arg_attrs.data[i].data["q35c.name"].data for i in order}
    new.attributes["q35c.raised"] = ArrayAttr([StringAttr(
        f"line {line}: loop nest -> {names[dest]} (tensor ops)" if line is not None
        else f"{names[dest]} (tensor ops)") for line, dest in notes])
    return new


@dataclass(frozen=True)
class RaiseFortranTensorsPass(ModulePass):
    """Fortran functions whose loops were all raised become tensor functions (see the
    module docstring); the others are left as they are."""

    name = "raise-fortran-tensors"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        called = {c.callee.root_reference.data for c in op.walk() if isinstance(c, func.CallOp)}
        for fn in [f for f in op.body.block.ops if isinstance(f, func.FuncOp)]:
            if not _is_fortran(fn) or fn.sym_name.data in called or not _raisable(fn):
                continue
            new = raise_function(fn)
            op.body.block.insert_op_before(new, fn)
            op.body.block.erase_op(fn)
