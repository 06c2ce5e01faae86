"""`raise-fortran-tensors`: a Fortran kernel whose loops all map to tensor ops, as a tensor
function.

The Fortran frontend gives a procedure memref arguments (its dummies, in their declared
shapes), loop nests over them, and, where it recognises the pair-layout matmul, tensor ops
between `bufferization.to_tensor` of the arguments it reads and
`bufferization.materialize_in_destination` into the one it writes
(compiler/frontends/fortran/raising.py). Targets that take tensor functions (groq) need the
procedure as such a function: this pass rewrites every Fortran function (not called by
another) whose arrays all have constant shapes and whose body is only

- elementwise loop nests: a perfect nest of counted loops from 0 by 1 to constant extents
  whose innermost body loads arrays at the loop indices, computes with elementwise
  `arith`/`math` ops and conversions, and stores one array at the same indices (what
  whole-array statements such as `y = real(q) * s + x / (1 + exp(-x))` become, the
  frontend's temporaries included): the same ops on whole tensors (conversions as ONNX
  `Cast`, as xDSL's `arith` casts take no tensors);
- the raised pair matmul, with `quant3p5.pack` of run-time bytes feeding
  `quant3p5.matmul_int8` (which needs its weights at compile time on groq) spelled as the
  tensor ops of the loop nest it came from: decode the two levels of each byte with shifts
  (`L(2p-1) = v4`, `L(2p) = 2*v3 + 1`, interleaved along K), the int32 products `X * L`
  summed over K (`linalg.broadcast`, `arith.muli`, `linalg.reduce`), the int32 row sums of
  X, and the rescale `(scale(j) * acc + offset(j) * sx) * xscale(i)` in the loop's
  operation order, so the result is bit-identical to the loops (the byte's bit 7 is
  ignored, as the loops' `iand` masks do),

into one with the `intent(in)` arrays as tensor arguments (same order, names and shapes)
and the `intent(out)` arrays as results, named by their dummies. It records what it raised
as `q35c.raised = ["line 14: loop nest -> y (elementwise tensor ops)", ...]`.

Any other function (a reduction or a scalar carried between iterations, a section, a
dynamic shape, a scalar argument, an `intent(inout)` array) is left as it is: the target
then refuses its loop op in one line with its source line (driver.check_accepted_ops).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from xdsl.builder import Builder
from xdsl.context import Context
from xdsl.dialects import arith, bufferization, func, math as xmath, scf, tensor
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
from q35c.passes.loop_tensors import Cell, LoopRaiser, NotRaised, Ten, line_of

_ONNX_INT32 = 6  # onnx.TensorProto.INT32
_ONNX_FLOAT = 1  # onnx.TensorProto.FLOAT
_CAST_OPSET = 21

_ELEMENTWISE = (arith.AddfOp, arith.SubfOp, arith.MulfOp, arith.DivfOp, arith.NegfOp,
                arith.AddiOp, arith.SubiOp, arith.MuliOp, arith.MaxSIOp, arith.MinSIOp,
                arith.AndIOp, arith.OrIOp, arith.XOrIOp, arith.SelectOp, arith.CmpfOp,
                arith.CmpiOp, xmath.ExpOp, xmath.TanhOp, xmath.SqrtOp, xmath.AbsFOp)
"""Scalar ops of an elementwise loop body that become the same op on tensors."""
_CASTS = (arith.SIToFPOp, arith.FPToSIOp, arith.ExtSIOp, arith.TruncIOp, arith.ExtFOp,
          arith.TruncFOp)
"""Conversions, which xDSL's arith has for scalars only: ONNX Cast on tensors."""
_ONNX_TYPES = {"f32": 1, "f64": 11, "i8": 3, "i16": 5, "i32": 6, "i64": 7}


def _is_fortran(fn: func.FuncOp) -> bool:
    return "q35c.integer_overflow" in fn.attributes and not any(
        isinstance(t, TensorType) for t in fn.function_type.inputs.data)


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
    """The tensor function of Fortran function `fn` (see the module docstring); raises
    `NotRaised` (line, reason) where some loop, op or argument does not fit."""
    old_args = list(fn.args)
    names = [fn.arg_attrs.data[i].data["q35c.name"].data for i in range(len(old_args))]
    for arg, name in zip(old_args, names):
        if isinstance(arg.type, MemRefType) and not all(
                d >= 0 for d in arg.type.get_shape()):
            raise NotRaised(line_of(fn), f"array '{name}' has a run-time shape (the tensor "
                                         "form needs constant extents)")
    intents = [_intent(fn, i) for i in range(len(old_args))]
    inputs = [i for i, a in enumerate(old_args)
              if not isinstance(a.type, MemRefType) or intents[i] in ("in", "inout")]
    outputs = [i for i, a in enumerate(old_args)
               if isinstance(a.type, MemRefType) and intents[i] in ("out", "inout")]
    in_types = [TensorType(a.type.element_type, a.type.get_shape()) if isinstance(
        a.type, MemRefType) else TensorType(a.type, []) for a in
        (old_args[i] for i in inputs)]
    block = Block(arg_types=in_types)
    builder = _Builder(block)
    raiser = _Raiser(builder)
    loops = LoopRaiser(builder, {a: tuple(a.type.get_shape()) for a in old_args
                                 if isinstance(a.type, MemRefType)},
                       {a: n for a, n in zip(old_args, names)})
    for j, i in enumerate(inputs):
        if isinstance(old_args[i].type, MemRefType):
            loops.mem[old_args[i]] = Cell(block.args[j], 0)
        else:
            loops.env[old_args[i]] = Ten(block.args[j], 0)
    mapping: dict[SSAValue, SSAValue] = {}
    notes: list[str] = []
    label = {a: n for a, n in zip(old_args, names)}
    returned: list[SSAValue] = []
    for op in list(fn.body.block.ops):
        if isinstance(op, func.ReturnOp):
            returned = [loops.tensor(loops.env[v], 0) for v in op.operands]
            continue
        if isinstance(op, bufferization.ToTensorOp):
            mapping[op.results[0]] = loops.cell(op.operands[0], op).value
        elif isinstance(op, bufferization.MaterializeInDestinationOp):
            loops.mem[op.operands[1]] = Cell(mapping[op.operands[0]], 0)
            line = op.attributes.get("q35c.raised_from_line")
            notes.append((f"line {line.value.data}: " if isinstance(line, IntegerAttr) else
                          "") + f"loop nest -> {label.get(op.operands[1], 'a temporary')}: "
                         "pair matmul tensor ops")
        elif isinstance(op, quant3p5.PackOp):
            if any(not isinstance(u.operation, quant3p5.MatmulInt8Op) for u in op.result.uses):
                raise NotRaised(line_of(op), "quant3p5.pack of run-time bytes feeds "
                                             "something other than quant3p5.matmul_int8")
        elif isinstance(op, quant3p5.MatmulInt8Op) and isinstance(op.operands[2].owner,
                                                                   quant3p5.PackOp):
            mapping[op.results[0]] = raiser.pair_matmul(op.operands[2].owner, op, mapping)
        elif isinstance(op, scf.ForOp):
            notes.append(_describe(loops, op, label))
        else:
            loops.step(op)
    values = [loops.cell(old_args[i], fn).value for i in outputs]
    if any(loops.mem[old_args[i]].pdepth for i in outputs):
        raise NotRaised(line_of(fn), "an output is private to a loop")
    # a function's result (a scalar: rank 0) first, then the intent(out) arrays
    result_attrs = list(fn.res_attrs.data) if fn.res_attrs is not None else [
        DictionaryAttr({"q35c.name": StringAttr("result")})] * len(returned)
    values = returned + values
    builder.insert(func.ReturnOp(*values))
    new = func.FuncOp(fn.sym_name.data, (in_types, [v.type for v in values]),
                      Region(block), arg_attrs=ArrayAttr([fn.arg_attrs.data[i] for i in inputs]),
                      res_attrs=ArrayAttr(result_attrs + [
                          DictionaryAttr({"q35c.name": StringAttr(names[i])})
                          for i in outputs]))
    new.attributes.update({k: v for k, v in fn.attributes.items() if k.startswith("q35c.")})
    new.attributes["q35c.raised"] = ArrayAttr([StringAttr(n) for n in notes])
    return new


def _describe(loops: LoopRaiser, op: scf.ForOp, label: dict[SSAValue, str]) -> str:
    """Runs a top-level loop nest on `loops` and says what it became: the arrays it writes,
    its loops vectorized (trip counts) and unrolled, and the tensor ops it emitted."""
    block = loops.builder.builder.insertion_point.block
    before = len(list(block.ops))
    vec, unr = len(loops.vectorized), len(loops.unrolled)
    cells = dict(loops.mem)
    loops.step(op)
    written = sorted({label[r] for r, c in loops.mem.items()
                      if r in label and cells.get(r) is not c})
    ops = Counter(o.name if not isinstance(o, q35nn.OnnxNodeOp) else f"onnx {o.op_type.data}"
                  for o in list(block.ops)[before:])
    kept = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in sorted(ops.items())
                     if name not in ("arith.constant", "tensor.empty"))

    def loops_of(found):
        counts = Counter(found)
        return ", ".join((f"line {line} ({trips})" if line is not None else f"({trips})") +
                         (f" x{counts[line, trips]}" if counts[line, trips] > 1 else "")
                         for line, trips in dict.fromkeys(found))

    parts = [f"vectorized {loops_of(loops.vectorized[vec:])}"] if loops.vectorized[vec:] else []
    if loops.unrolled[unr:]:
        parts.append(f"unrolled {loops_of(loops.unrolled[unr:])}")
    line = line_of(op)
    return (f"line {line}: " if line is not None else "") + \
        f"loop nest -> {', '.join(written) or ('a value' if op.results else 'a temporary')}: " + \
        "; ".join(parts + [f"tensor ops {kept or 'none (constants)'}"])


@dataclass(frozen=True)
class RaiseFortranTensorsPass(ModulePass):
    """Fortran functions whose loops were all raised become tensor functions (see the
    module docstring); the others are left as they are."""

    name = "raise-fortran-tensors"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        callers: dict[str, str] = {}
        for fn in [f for f in op.body.block.ops if isinstance(f, func.FuncOp)]:
            for c in fn.walk():
                if isinstance(c, func.CallOp):
                    callers.setdefault(c.callee.root_reference.data, fn.sym_name.data)
        for fn in [f for f in op.body.block.ops if isinstance(f, func.FuncOp)]:
            if not _is_fortran(fn):
                continue
            if fn.sym_name.data in callers:  # its callers pass memrefs: keep it as it is
                fn.attributes["q35c.not_raised"] = StringAttr(
                    (f"line {line_of(fn)}: " if line_of(fn) is not None else "") +
                    f"it is called by '{callers[fn.sym_name.data]}' (a procedure that "
                    "another one calls is left as it is)")
                continue
            try:
                new = raise_function(fn)
            except NotRaised as err:
                fn.attributes["q35c.not_raised"] = StringAttr(
                    (f"line {err.line}: " if err.line is not None else "") + err.reason)
                continue
            op.body.block.insert_op_before(new, fn)
            op.body.block.erase_op(fn)
