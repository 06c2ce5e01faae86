"""The C target for loop-level IR (the Fortran frontend's func/scf/memref/arith/math).

A module whose functions take memrefs (a Fortran kernel file) is not a tensor graph: it is
printed function by function, statement by statement, as C99 with real loops instead of
being lowered to kernel steps (targets/native/lower.py). Every `func.func` with a body
becomes

- `static RT q35f_<name>(...)`: the implementation; every memref argument is a pointer
  (row-major in the memref's shape, which for Fortran is the declared shape, as the .npy
  inputs of `q35c run` are) followed by an `int64_t` extent per dynamic dimension;
  scalars are passed by value;
- `RT <name>(...)`: the public function declared in kernels.h, with the Fortran
  arguments in Fortran order (`intent(in)` arrays `const`), whose dynamic extents are
  computed from the scalar arguments (the `q35c.dims` argument attribute), exactly as the
  interpreter computes them; an extent that depends on nothing (assumed shape) is an
  extra trailing `int64_t <arg>_extent<d>` parameter.

Semantics follow the reference interpreter (q35c.semantics) bit for bit: integer
arithmetic wraps (computed in unsigned), shifts past the bit width give 0, division and
remainder by zero stop the program with the source line (as the interpreter's error does),
transcendental functions are libm's double-precision ones rounded once to the result type,
and locals start zeroed. Array subscripts are checked against the extents when compiled
with `-DQ35C_BOUNDS_CHECK` (`q35c run --target c` does), with the line, array and bounds.
A failed check prints `line N: message` on stderr and exits with status 2, as gfortran's
runtime errors do.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects import arith, bufferization, func, math as xmath, memref, scf
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseIntOrFPElementsAttr,
    Float32Type,
    Float64Type,
    FloatAttr,
    IndexType,
    IntegerAttr,
    IntegerType,
    MemRefType,
    ModuleOp,
    StringAttr,
    TensorType,
)
from xdsl.ir import Attribute, Block, Operation, SSAValue

from q35c.compiler.codegen_names import c_comment, c_identifier, c_string
from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.entry import argument_attr_strings, argument_names, result_names
from q35c.compiler.ir_attrs import origin_of, source_file, source_line
from q35c.compiler.quant import LEGACY_LEVELS
from q35c.compiler.tensors import constant_value
from q35c.dialects import quant3p5

HEADER = "kernels.h"
SOURCE = "kernels.c"


def is_loop_module(module: ModuleOp) -> bool:
    """Whether `module` is loop-level IR (some function takes or makes a memref), which
    this printer handles instead of the tensor lowering."""
    for op in module.walk():
        if isinstance(op, func.FuncOp) and any(isinstance(t, MemRefType)
                                                for t in op.function_type.inputs.data):
            return True
        if isinstance(op, (memref.AllocaOp, memref.AllocOp)):
            return True
    return False


LOOP_OPS = frozenset({
    "func.return", "func.call", "scf.for", "scf.while", "scf.if", "scf.yield",
    "scf.condition", "memref.alloca", "memref.alloc", "memref.dealloc", "memref.load",
    "memref.store", "memref.dim", "memref.get_global", "memref.cast",
    "bufferization.to_tensor", "bufferization.materialize_in_destination",
    "quant3p5.pack", "quant3p5.matmul_int8",
    *(f"arith.{n}" for n in (
        "constant", "addi", "subi", "muli", "divsi", "remsi", "andi", "ori", "xori", "shli",
        "shrui", "shrsi", "maxsi", "minsi", "extsi", "extui", "trunci", "index_cast",
        "sitofp", "fptosi", "extf", "truncf", "addf", "subf", "mulf", "divf", "negf",
        "maximumf", "minimumf", "cmpi", "cmpf", "select")),
    *(f"math.{n}" for n in ("exp", "log", "tanh", "sin", "cos", "powf", "erf", "sqrt",
                            "rsqrt", "absf", "absi", "round")),
})
"""The ops this printer handles (the C target's accepted ops for loop-level IR)."""


def c_type(t: Attribute) -> str:
    """The C type of a scalar IR type."""
    if isinstance(t, IndexType):
        return "int64_t"
    if isinstance(t, IntegerType):
        width = t.width.data
        if width == 1:
            return "bool"
        if width in (8, 16, 32, 64):
            return f"int{width}_t"
    if isinstance(t, Float32Type):
        return "float"
    if isinstance(t, Float64Type):
        return "double"
    raise Q35cError(f"c target: element type {t} is not supported")


def bits(t: Attribute) -> int:
    return 64 if isinstance(t, IndexType) else t.width.data


def unsigned(t: Attribute) -> str:
    return "bool" if bits(t) == 1 else f"uint{bits(t)}_t"


def float_literal(v: float, ctype: str) -> str:
    if np.isnan(v):
        return "NAN" if ctype == "float" else "(double)NAN"
    if np.isinf(v):
        return ("" if v > 0 else "-") + ("INFINITY" if ctype == "float" else "(double)INFINITY")
    return f"{float(np.float32(v))!r}f" if ctype == "float" else repr(float(v))


def int_literal(v: int, t: Attribute) -> str:
    width = bits(t)
    if width == 1:
        return "true" if v & 1 else "false"
    v = int(np.array(v).astype(f"int{width}"))
    if v == -(2**63):
        return "INT64_MIN"
    return f"(({c_type(t)}){v}{'LL' if abs(v) > 2**31 - 1 else ''})"


@dataclass
class Array:
    """A memref (or a tensor of the raised ops) in C: a pointer and its extents."""

    ptr: str
    extents: list[str]
    element: Attribute
    name: str  # for bounds-check messages

    def linear(self, indices: list[str]) -> str:
        if not indices:
            return "0"
        text = indices[0]
        for extent, index in zip(self.extents[1:], indices[1:]):
            text = f"({text}) * {extent} + {index}"
        return text


@dataclass
class Packed:
    """A `quant3p5.pack` result: the pair-layout bytes [K/2, N] and per-column scale/offset."""

    codes: Array
    scale: Array
    offset: Array


def _line(op: Operation) -> int:
    located = source_line(op)
    return located[1] if located else 0


def _where(op: Operation) -> str:
    return origin_of(op) or op.name


def _function(op: Operation) -> str:
    """`'name'` of the function holding `op`."""
    parent = op.parent_op()
    while parent is not None and not isinstance(parent, func.FuncOp):
        parent = parent.parent_op()
    return f"'{parent.sym_name.data}'" if parent is not None else "?"


def _file_of_message(module: ModuleOp, text: str) -> str | None:
    """The source file of a run-time message's function (`... (op in 'name')`), when it
    is not the input's (ir_attrs.source_file)."""
    found = re.search(r" in '([^']*)'\)$", text)
    if found is None:
        return None
    fn = next((op for op in module.ops if isinstance(op, func.FuncOp)
               and op.sym_name.data == found.group(1)), None)
    return source_file(fn)


def _within(op: Operation, block: Block) -> bool:
    """Whether `op` is in `block` or in a region nested in it."""
    current = op.parent_block()
    while current is not None:
        if current is block:
            return True
        parent = current.parent_op()
        current = parent.parent_block() if parent is not None else None
    return False


def _dims(fn: func.FuncOp, index: int) -> list[str] | None:
    attrs = fn.arg_attrs.data[index].data if fn.arg_attrs else {}
    dims = attrs.get("q35c.dims")
    if isinstance(dims, ArrayAttr):
        return [d.data for d in dims.data if isinstance(d, StringAttr)]
    return None


@dataclass
class Signature:
    """How one function is called: its C names and, per argument, what is passed."""

    fn: func.FuncOp
    public: str
    impl: str
    arg_names: list[str]  # Fortran names
    params: list[str] = field(default_factory=list)  # C parameter names, per argument

    @property
    def result(self) -> str:
        outs = self.fn.function_type.outputs.data
        if not outs:
            return "void"
        if len(outs) > 1 or isinstance(outs[0], (MemRefType, TensorType)):
            raise Q35cError(f"c target: function '{self.fn.sym_name.data}' returns "
                            f"{', '.join(map(str, outs))}: only one scalar result is supported")
        return c_type(outs[0])


class FunctionPrinter:
    """Prints one `func.func` as the C implementation function."""

    def __init__(self, unit: LoopUnit, sig: Signature):
        self.unit = unit
        self.sig = sig
        self.lines: list[str] = []
        self.depth = 1
        self.values: dict[SSAValue, str | Array | Packed] = {}
        self.count = 0
        self.parallel = 0
        """Depth of enclosing OpenMP parallel loops (nested ones stay serial)."""

    def fresh(self, hint: str = "v") -> str:
        self.count += 1
        return f"{hint}{self.count}"

    def emit(self, text: str) -> None:
        self.lines.append("    " * self.depth + text)

    def error(self, op: Operation, message: str) -> Q35cError:
        return Q35cError(f"c target: {message} ({op.name} {_where(op)})")

    # -- values ---------------------------------------------------------------------------

    def scalar(self, value: SSAValue) -> str:
        got = self.values[value]
        assert isinstance(got, str)
        return got

    def array(self, value: SSAValue) -> Array:
        got = self.values[value]
        assert isinstance(got, Array)
        return got

    def define(self, value: SSAValue, expr: str) -> None:
        """`value` as a new const local holding `expr` (or `expr` itself if it is a name)."""
        if not value.uses:
            self.emit(f"(void)({expr});")
            self.values[value] = "0"
            return
        name = self.fresh()
        self.emit(f"const {c_type(value.type)} {name} = {expr};")
        self.values[value] = name

    def declare(self, values, hint: str) -> list[str]:
        """Mutable locals (loop-carried values, branch results), zero-initialised."""
        names = []
        for value in values:
            name = self.fresh(hint)
            self.emit(f"{c_type(value.type)} {name} = 0;")
            names.append(name)
        return names

    def assign(self, names: list[str], values) -> None:
        exprs = [self.scalar(v) for v in values]
        if len(names) > 1:  # parallel assignment: read every value first
            temps = []
            for expr, value in zip(exprs, values):
                temp = self.fresh("t")
                self.emit(f"const {c_type(value.type)} {temp} = {expr};")
                temps.append(temp)
            exprs = temps
        for name, expr in zip(names, exprs):
            self.emit(f"{name} = {expr};")

    def trap(self, op: Operation, condition: str, message: str) -> None:
        text = c_string(f"line {_line(op)}: {message} ({op.name} in {_function(op)})")
        self.emit(f"if ({condition}) q35f_trap({text});")

    # -- the function ---------------------------------------------------------------------

    def print(self) -> list[str]:
        fn = self.sig.fn
        params = []
        block = fn.body.block
        for index, arg in enumerate(block.args):
            name = self.sig.params[index]
            if isinstance(arg.type, MemRefType):
                element = arg.type.get_element_type()
                params.append(f"{c_type(element)} *{name}")
                extents = []
                for d, size in enumerate(arg.type.get_shape()):
                    if size < 0:
                        params.append(f"int64_t {name}_n{d}")
                    extents.append(f"{name}_n{d}" if size < 0 else str(size))
                self.values[arg] = Array(name, extents, element, self.sig.arg_names[index])
            else:
                params.append(f"{c_type(arg.type)} {name}")
                self.values[arg] = name
        head = f"static {self.sig.result} {self.sig.impl}({', '.join(params) or 'void'})"
        for p in params:
            self.emit(f"(void){p.split()[-1].lstrip('*')};")
        self.block(block)
        return [head, "{", *self.lines, "}"]

    def block(self, block: Block) -> None:
        for op in block.ops:
            self.op(op)

    def op(self, op: Operation) -> None:
        method = getattr(self, "op_" + op.name.replace(".", "_"), None)
        if method is not None:
            return method(op)
        if type(op) in BINARY:
            return self.binary(op)
        if type(op) in UNARY:
            return self.unary(op)
        raise self.error(op, "is not supported by the C target for loop code")

    # -- arith and math -------------------------------------------------------------------

    def op_arith_constant(self, op: arith.ConstantOp) -> None:
        value, t = op.value, op.result.type
        if isinstance(value, IntegerAttr):
            self.values[op.result] = int_literal(value.value.data, t)
        elif isinstance(value, FloatAttr):
            self.values[op.result] = float_literal(value.value.data, c_type(t))
        elif isinstance(value, DenseIntOrFPElementsAttr) and isinstance(t, TensorType):
            self.values[op.result] = self.unit.constant_array(
                constant_value(value, t), t.get_element_type())
        else:
            raise self.error(op, f"constant {value} is not supported")

    def binary(self, op: Operation) -> None:
        a, b = (self.scalar(v) for v in op.operands)
        t = op.results[0].type
        T = c_type(t)
        integer = T not in ("float", "double")
        self.define(op.results[0], BINARY[type(op)].format(
            a=a, b=b, T=T, U=unsigned(t) if integer else T, W=bits(t) if integer else 0))

    def unary(self, op: Operation) -> None:
        a = self.scalar(op.operands[0])
        t = op.results[0].type
        T = c_type(t)
        form = UNARY[type(op)]
        if isinstance(form, tuple):  # (float form, double form)
            form = form[0] if T == "float" else form[1]
        self.define(op.results[0], form.format(a=a, T=T, U=unsigned(t) if T != "float"
                                               and T != "double" else T))

    def divide(self, op: Operation, form: str) -> None:
        a, b = (self.scalar(v) for v in op.operands)
        t = op.results[0].type
        what = "division" if isinstance(op, arith.DivSIOp) else "remainder"
        self.trap(op, f"{b} == 0", f"integer {what} by zero")
        self.define(op.results[0], form.format(a=a, b=b, T=c_type(t), U=unsigned(t)))

    def op_arith_divsi(self, op: arith.DivSIOp) -> None:
        self.divide(op, "({b} == -1 ? ({T})((uint64_t)0 - (uint64_t){a}) : ({T})({a} / {b}))")

    def op_arith_remsi(self, op: arith.RemSIOp) -> None:
        self.divide(op, "({b} == -1 ? ({T})0 : ({T})({a} % {b}))")

    def op_arith_cmpi(self, op: arith.CmpiOp) -> None:
        pred = op.predicate.value.data
        a, b = (self.scalar(v) for v in op.operands)
        if pred >= 6:  # unsigned predicates
            U = unsigned(op.lhs.type)
            a, b = f"({U}){a}", f"({U}){b}"
        self.define(op.result, f"{a} {CMP[pred]} {b}")

    def op_arith_cmpf(self, op: arith.CmpfOp) -> None:
        pred = op.predicate.value.data
        if pred not in CMPF:
            raise self.error(op, f"predicate {pred} is not supported")
        a, b = (self.scalar(v) for v in op.operands)
        self.define(op.result, f"{a} {CMPF[pred]} {b}")

    def op_arith_select(self, op: arith.SelectOp) -> None:
        c, a, b = (self.scalar(v) for v in op.operands)
        self.define(op.result, f"{c} ? {a} : {b}")

    # -- memory ---------------------------------------------------------------------------

    def allocate(self, op: Operation, heap: bool) -> None:
        t = op.results[0].type
        element = c_type(t.get_element_type())
        sizes = iter(self.scalar(v) for v in op.operands)
        extents = [next(sizes) if d < 0 else str(d) for d in t.get_shape()]
        name = self.fresh("a")
        count = " * ".join(f"(size_t){e}" for e in extents) or "1"
        if all(d >= 0 for d in t.get_shape()):
            self.emit(f"{element} {name}[{max(1, int(np.prod(t.get_shape())))}] = {{0}};")
        else:
            self.emit(f"const size_t {name}_count = {count};")
            if heap:
                self.emit(f"{element} *{name} = ({element} *)calloc({name}_count ? "
                          f"{name}_count : 1, sizeof({element}));")
                self.emit(f"if (!{name}) "
                          f"q35f_trap({c_string(f'line {_line(op)}: out of memory')});")
            else:
                self.emit(f"{element} {name}[{name}_count ? {name}_count : 1];")
                self.emit(f"memset({name}, 0, sizeof {name});")
        self.emit(f"(void){name};")
        self.values[op.results[0]] = Array(name, extents, t.get_element_type(), "")

    def op_memref_alloca(self, op: memref.AllocaOp) -> None:
        self.allocate(op, heap=False)

    def op_memref_alloc(self, op: memref.AllocOp) -> None:
        self.allocate(op, heap=True)

    def op_memref_dealloc(self, op: memref.DeallocOp) -> None:
        t = op.memref.type
        if any(d < 0 for d in t.get_shape()):
            self.emit(f"free({self.array(op.memref).ptr});")

    def element(self, op: Operation, ref: SSAValue, index_values) -> str:
        """The C lvalue of one element; with -DQ35C_BOUNDS_CHECK, a subscript outside the
        array stops the program with the interpreter's message for it."""
        array = self.array(ref)
        indices = [self.scalar(v) for v in index_values]
        if indices:
            outside = " || ".join(f"{i} < 0 || {i} >= {e}"
                                  for i, e in zip(indices, array.extents))
            named = f" of array '{array.name}'" if array.name else ""
            self.emit("#ifdef Q35C_BOUNDS_CHECK")
            self.emit(f"if ({outside}) q35f_bounds({_line(op)}, {c_string(named)}, "
                      f"{len(indices)}, (const int64_t[]){{{', '.join(indices)}}}, "
                      f"(const int64_t[]){{{', '.join(array.extents)}}}, "
                      f"{c_string(f' ({op.name} in {_function(op)})')});")
            self.emit("#endif")
        return f"{array.ptr}[{array.linear(indices)}]"

    def op_memref_load(self, op: memref.LoadOp) -> None:
        self.define(op.res, self.element(op, op.memref, op.indices))

    def op_memref_store(self, op: memref.StoreOp) -> None:
        self.emit(f"{self.element(op, op.memref, op.indices)} = {self.scalar(op.value)};")

    def op_memref_dim(self, op: memref.DimOp) -> None:
        array = self.array(op.source)
        index = op.index.owner
        if not isinstance(index, arith.ConstantOp):
            raise self.error(op, "a dimension that is not a constant is not supported")
        self.values[op.result] = f"((int64_t){array.extents[index.value.value.data]})"

    def op_memref_get_global(self, op: memref.GetGlobalOp) -> None:
        name = op.name_.root_reference.data
        ident, t = self.unit.globals[name]
        self.values[op.memref] = Array(ident, [str(d) for d in t.get_shape()],
                                       t.get_element_type(), "")

    def op_memref_cast(self, op: memref.CastOp) -> None:
        self.values[op.dest] = self.array(op.source)

    # -- raised ops (raising.py): the pair-layout matmul ----------------------------------

    def op_bufferization_to_tensor(self, op: bufferization.ToTensorOp) -> None:
        self.values[op.tensor] = self.array(op.memref)

    def op_bufferization_materialize_in_destination(self, op) -> None:
        src, dest = self.array(op.source), self.array(op.dest)
        count = " * ".join(dest.extents) or "1"
        self.emit(f"memcpy({dest.ptr}, {src.ptr}, (size_t)({count}) * sizeof *{dest.ptr});")

    def op_quant3p5_pack(self, op: quant3p5.PackOp) -> None:
        packed = op.result.type
        if packed.layout.data != "pair43":
            raise self.error(op, f"layout {packed.layout.data} is not supported")
        codes, scale, offset = (self.array(v) for v in op.operands)
        self.values[op.result] = Packed(codes, scale, offset)

    def op_quant3p5_matmul_int8(self, op: quant3p5.MatmulInt8Op) -> None:
        """quant3p5.matmul_int8 on pair-layout weights (one group over K): exact integer
        sums, then (scale * acc + offset * sx) added to 0 and times the row scale, each
        operation rounded to float (semantics/quant3p5.py: rescale_group, rescale_rows)."""
        x, row_scale = self.array(op.lhs), self.array(op.lhs_scale)
        w = self.values[op.weights]
        assert isinstance(w, Packed)
        shape = op.result.type.get_shape()
        rows, n = int(np.prod(shape[:-1])), shape[-1]
        k = int(x.extents[-1])
        y = self.fresh("y")
        self.unit.need_levels = True
        self.emit(f"float {y}[{rows * n}];")
        self.emit(f"for (int64_t i = 0; i < {rows}; i++)")
        self.emit(f"    for (int64_t j = 0; j < {n}; j++) {{")
        self.emit("        int64_t acc = 0, sx = 0;")
        self.emit(f"        for (int64_t p = 0; p < {k // 2}; p++) {{")
        self.emit(f"            const int l = {w.codes.ptr}[p * {n} + j] & 127;")
        self.emit(f"            const int64_t a = {x.ptr}[i * {k} + 2 * p], "
                  f"b = {x.ptr}[i * {k} + 2 * p + 1];")
        self.emit("            acc += a * q35f_levels[l][0] + b * q35f_levels[l][1];")
        self.emit("            sx += a + b;")
        self.emit("        }")
        self.emit(f"        {{ const float term = {w.scale.ptr}[j] * (float)acc + "
                  f"{w.offset.ptr}[j] * (float)sx;")
        self.emit("          const float sum = 0.0f + term;")
        self.emit(f"          {y}[i * {n} + j] = sum * {row_scale.ptr}[i]; }}")
        self.emit("    }")
        self.values[op.result] = Array(y, [str(d) for d in shape], op.result.type
                                       .get_element_type(), "")

    # -- control flow ---------------------------------------------------------------------

    def op_scf_for(self, op: scf.ForOp) -> None:
        lb, ub, step = (self.scalar(v) for v in (op.lb, op.ub, op.step))
        carried = self.declare(op.results, "c")
        for name, init in zip(carried, op.iter_args):
            self.emit(f"{name} = {self.scalar(init)};")
        body = op.body.block
        iv = self.fresh("i")
        parallel = self.parallel_loop(op)
        if parallel is not None:
            cells = [self.array(c).ptr for c in parallel]
            clause = f" private({', '.join(cells)})" if cells else ""
            self.emit("#ifdef _OPENMP")
            self.emit(f"#pragma omp parallel for{clause}")
            self.emit("#endif")
            self.parallel += 1
        self.emit(f"for (int64_t {iv} = {lb}; {iv} < {ub}; {iv} += {step}) {{")
        self.depth += 1
        self.values[body.args[0]] = iv
        for arg, name in zip(body.args[1:], carried):
            self.values[arg] = name
        self.region_body(body, carried)
        self.depth -= 1
        self.emit("}")
        if parallel is not None:
            self.parallel -= 1
        for result, name in zip(op.results, carried):
            self.values[result] = name

    def parallel_loop(self, op: scf.ForOp) -> list[SSAValue] | None:
        """For a loop that `!$omp parallel do` or `do concurrent` declares free of
        cross-iteration dependences (not inside another parallel loop, no loop-carried
        SSA values): the scalar cells (rank-0 `memref.alloca`s of the function) it must
        make private; None where it stays serial. A cell written in the loop is private
        when each iteration writes it before any read (its first access is a store, and
        every access in the loop is in the block of that store, after it) and nothing
        after the loop reads it; otherwise the loop
        carries a value between iterations and runs serially. Arrays are shared: the
        directive asserts that iterations touch different elements."""
        hints = op.attributes.get("q35c.hints")
        asked = "q35c.concurrent" in op.attributes or (
            isinstance(hints, ArrayAttr) and any(
                " ".join(h.data.lower().split()).startswith("omp parallel do")
                for h in hints.data))
        if not asked or self.parallel or op.results:
            return None
        inside = set(op.walk())
        cells: list[SSAValue] = []
        seen: set[SSAValue] = set()
        for inner in op.body.walk():
            if not isinstance(inner, (memref.LoadOp, memref.StoreOp)):
                continue
            cell = inner.memref
            if cell in seen or cell.type.get_shape():
                continue
            seen.add(cell)
            writes = any(isinstance(u.operation, memref.StoreOp) and u.operation in inside
                         and u.operation.memref is cell for u in cell.uses)
            if not writes or (isinstance(cell.owner, memref.AllocaOp) and cell.owner in inside):
                continue
            if not isinstance(cell.owner, memref.AllocaOp) or not isinstance(
                    inner, memref.StoreOp):
                return None
            block = inner.parent_block()  # each run of it writes the cell before reading it
            if any(u.operation in inside and not _within(u.operation, block)
                   for u in cell.uses):
                return None
            if any(isinstance(u.operation, memref.LoadOp) and u.operation not in inside
                   for u in cell.uses):
                return None
            cells.append(cell)
        return cells

    def region_body(self, block: Block, targets: list[str]) -> None:
        """The ops of `block`; its terminator's operands are assigned to `targets`."""
        for inner in block.ops:
            if isinstance(inner, scf.YieldOp):
                self.assign(targets, inner.operands)
            else:
                self.op(inner)

    def op_scf_if(self, op: scf.IfOp) -> None:
        results = self.declare(op.results, "r")
        self.emit(f"if ({self.scalar(op.cond)}) {{")
        self.depth += 1
        self.region_body(op.true_region.block, results)
        self.depth -= 1
        if op.false_region.blocks:
            self.emit("} else {")
            self.depth += 1
            self.region_body(op.false_region.block, results)
            self.depth -= 1
        self.emit("}")
        for result, name in zip(op.results, results):
            self.values[result] = name

    def op_scf_while(self, op: scf.WhileOp) -> None:
        before, after = op.before_region.block, op.after_region.block
        state = self.declare(before.args, "w")
        for name, init in zip(state, op.arguments):
            self.emit(f"{name} = {self.scalar(init)};")
        results = self.declare(op.results, "r")
        self.emit("for (;;) {")
        self.depth += 1
        for arg, name in zip(before.args, state):
            self.values[arg] = name
        for inner in before.ops:
            if isinstance(inner, scf.ConditionOp):
                self.assign(results, inner.args)
                self.emit(f"if (!({self.scalar(inner.condition)})) break;")
            else:
                self.op(inner)
        for arg, name in zip(after.args, results):
            self.values[arg] = name
        self.region_body(after, state)
        self.depth -= 1
        self.emit("}")
        for result, name in zip(op.results, results):
            self.values[result] = name

    def op_func_call(self, op: func.CallOp) -> None:
        callee = self.unit.signatures.get(op.callee.root_reference.data)
        if callee is None:
            raise self.error(op, f"callee @{op.callee.root_reference.data} has no body")
        args = []
        for value in op.arguments:
            got = self.values[value]
            if isinstance(got, Array):
                args.append(got.ptr)
                args += [e for e, d in zip(got.extents, value.type.get_shape()) if d < 0]
            else:
                args.append(got)
        call = f"{callee.impl}({', '.join(args)})"
        if op.results:
            self.define(op.results[0], call)
        else:
            self.emit(call + ";")

    def op_func_return(self, op: func.ReturnOp) -> None:
        if op.arguments:
            self.emit(f"return {self.scalar(op.arguments[0])};")
        elif op.parent_block() is not self.sig.fn.body.block:
            self.emit("return;")


BINARY: dict[type, str] = {
    # in uint64_t: narrower unsigned types would be promoted to (signed) int
    arith.AddiOp: "({T})((uint64_t){a} + (uint64_t){b})",
    arith.SubiOp: "({T})((uint64_t){a} - (uint64_t){b})",
    arith.MuliOp: "({T})((uint64_t){a} * (uint64_t){b})",
    arith.AndIOp: "({T})({a} & {b})", arith.OrIOp: "({T})({a} | {b})",
    arith.XOrIOp: "({T})({a} ^ {b})",
    arith.ShLIOp: "((uint64_t)({U}){b} >= {W} ? ({T})0 : ({T})(({U}){a} << {b}))",
    arith.ShRUIOp: "((uint64_t)({U}){b} >= {W} ? ({T})0 : ({T})(({U}){a} >> {b}))",
    arith.ShRSIOp: "({T})({a} >> ((uint64_t)({U}){b} >= {W} ? {W} - 1 : {b}))",
    arith.MaxSIOp: "({a} > {b} ? {a} : {b})", arith.MinSIOp: "({a} < {b} ? {a} : {b})",
    arith.AddfOp: "{a} + {b}", arith.SubfOp: "{a} - {b}", arith.MulfOp: "{a} * {b}",
    arith.DivfOp: "{a} / {b}",
    arith.MaximumfOp: "({a} != {a} || {b} != {b} ? {a} + {b} : {a} > {b} ? {a} : {b})",
    arith.MinimumfOp: "({a} != {a} || {b} != {b} ? {a} + {b} : {a} < {b} ? {a} : {b})",
    xmath.PowFOp: "({T})pow((double){a}, (double){b})",
}
UNARY: dict[type, str | tuple[str, str]] = {
    arith.ExtSIOp: "({T}){a}", arith.TruncIOp: "({T})({U}){a}", arith.IndexCastOp: "({T}){a}",
    arith.ExtUIOp: "({T})({U}){a}",
    arith.SIToFPOp: "({T}){a}", arith.FPToSIOp: "({T}){a}", arith.ExtFOp: "({T}){a}",
    arith.TruncFOp: "({T}){a}", arith.NegfOp: "-{a}",
    xmath.ExpOp: "({T})exp((double){a})", xmath.LogOp: "({T})log((double){a})",
    xmath.TanhOp: "({T})tanh((double){a})", xmath.SinOp: "({T})sin((double){a})",
    xmath.CosOp: "({T})cos((double){a})", xmath.ErfOp: "({T})erf((double){a})",
    xmath.SqrtOp: ("sqrtf({a})", "sqrt({a})"), xmath.RsqrtOp: ("1.0f / sqrtf({a})",
                                                                "1.0 / sqrt({a})"),
    xmath.AbsFOp: ("fabsf({a})", "fabs({a})"), xmath.RoundOp: ("roundf({a})", "round({a})"),
    xmath.AbsIOp: "({a} < 0 ? ({T})(({U})0 - ({U}){a}) : {a})",
}
CMP = {0: "==", 1: "!=", 2: "<", 3: "<=", 4: ">", 5: ">=", 6: "<", 7: "<=", 8: ">", 9: ">="}
CMPF = {1: "==", 2: ">", 3: ">=", 4: "<", 5: "<=", 6: "!=", 13: "!="}

PRELUDE = """\
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif
#include "kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A run-time error (division by zero, a subscript out of bounds): like gfortran's runtime
   errors, it ends the program with exit status 2 after one line on stderr. */
static inline void q35f_trap(const char *message)
{
    fprintf(stderr, "%s\\n", message);
    exit(2);
}

/* An extent computed from scalar arguments: negative extents are 0, as in Fortran. */
static inline int64_t q35f_extent(int64_t n) { return n > 0 ? n : 0; }

#ifdef Q35C_BOUNDS_CHECK
/* A subscript outside its array: the interpreter's message, "line N: index (i, j) of
   array 'a' is out of bounds for shape (m, n) (memref.load in 'f')", 0-based. */
static inline void q35f_tuple(const int64_t *values, int rank)
{
    int d;
    fputc('(', stderr);
    for (d = 0; d < rank; d++)
        fprintf(stderr, d ? ", %lld" : "%lld", (long long)values[d]);
    fputs(rank == 1 ? ",)" : ")", stderr);
}

static inline void q35f_bounds(int line, const char *array, int rank, const int64_t *index,
                               const int64_t *shape, const char *where)
{
    fprintf(stderr, "line %d: index ", line);
    q35f_tuple(index, rank);
    fprintf(stderr, "%s is out of bounds for shape ", array);
    q35f_tuple(shape, rank);
    fprintf(stderr, "%s\\n", where);
    exit(2);
}
#endif
"""


class LoopUnit:
    """The C files of one loop-level module: kernels.h and kernels.c."""

    def __init__(self, module: ModuleOp, stem: str):
        self.module = module
        self.stem = stem
        self.globals: dict[str, tuple[str, MemRefType]] = {}
        self.constants: list[str] = []
        self.need_levels = False
        self.signatures: dict[str, Signature] = {}
        used: set[str] = set()
        for op in module.ops:
            if isinstance(op, memref.GlobalOp):
                ident = f"q35f_g_{c_identifier(op.sym_name.data)}_{len(self.globals)}"
                self.globals[op.sym_name.data] = (ident, op.type)
            if isinstance(op, func.FuncOp) and op.body.blocks:
                public = c_identifier(op.sym_name.data)
                while public in used:
                    public += "_"
                used.add(public)
                names = argument_names(op)
                sig = Signature(op, public, f"q35f_{public}", names)
                params = []
                for name in names:
                    ident = c_identifier(name) or "arg"
                    while ident in params:
                        ident += "_"
                    params.append(ident)
                sig.params = params
                self.signatures[op.sym_name.data] = sig

    def constant_array(self, values: np.ndarray, element: Attribute) -> Array:
        name = f"q35f_c{len(self.constants)}"
        self.constants.append(self.array_text(name, values, element))
        return Array(name, [str(d) for d in values.shape], element, "")

    @staticmethod
    def array_text(name: str, values: np.ndarray, element: Attribute,
                   constant: bool = True) -> str:
        """A static C array; a variable (`memref.global` without `constant`: the state of
        random_number) keeps its value from call to call, as the global does."""
        ctype = c_type(element)
        flat = np.asarray(values).reshape(-1)
        if ctype in ("float", "double"):
            items = [float_literal(float(v), ctype) for v in flat]
        else:
            items = [int_literal(int(v), element) for v in flat]
        qualifier = "static const" if constant else "static"
        return (f"{qualifier} {ctype} {name}[{max(1, flat.size)}] = {{"
                + ", ".join(items or ["0"]) + "};")

    # -- files ----------------------------------------------------------------------------

    def public_params(self, sig: Signature) -> tuple[list[str], list[str]]:
        """The public function's parameters and the implementation call's arguments."""
        fn = sig.fn
        intents = argument_attr_strings(fn, "q35c.intent")
        params, extra, args = [], [], []
        scalars = {sig.arg_names[i]: sig.params[i] for i, arg in enumerate(fn.args)
                   if not isinstance(arg.type, MemRefType)}
        for index, arg in enumerate(fn.args):
            name = sig.params[index]
            t = arg.type
            if not isinstance(t, MemRefType):
                params.append(f"{c_type(t)} {name}")
                args.append(name)
                continue
            const = "const " if intents[index] == "in" else ""
            params.append(f"{const}{c_type(t.get_element_type())} *{name}")
            args.append(f"({c_type(t.get_element_type())} *){name}")
            dims = _dims(fn, index)
            for d, size in enumerate(t.get_shape()):
                if size >= 0:
                    continue
                expr = None
                if dims is not None and d < len(dims):
                    expr = shape_expression_c(dims[d], scalars)
                if expr is None:
                    extra.append(f"int64_t {name}_extent{d}")
                    expr = f"{name}_extent{d}"
                args.append(expr)
        return params + extra, args

    def header(self) -> str:
        guard = f"Q35F_{c_identifier(self.stem).upper()}_KERNELS_H"
        lines = [
            f"/* Generated by q35c (target c) from '{c_comment(self.stem)}'. Do not edit.",
            " *",
            " * One function per procedure, arguments in the procedure's order: arrays are",
            " * pointers to dense row-major buffers in the declared shape (A(M, K) is",
            " * a[M][K]; element A(i, k) is a[i-1][k-1]), scalars with intent(in) or value",
            " * are passed by value, other scalars by pointer. intent(in) arrays are const.",
            " * Division by zero (and, compiled with -DQ35C_BOUNDS_CHECK, a subscript out of",
            " * bounds) prints the source line on stderr and exits with status 2.",
            " */",
            f"#ifndef {guard}",
            f"#define {guard}",
            "",
            "#include <stdbool.h>",
            "#include <stdint.h>",
            "",
            "#ifdef __cplusplus",
            'extern "C" {',
            "#endif",
            "",
        ]
        for sig in self.signatures.values():
            fn = sig.fn
            intents = argument_attr_strings(fn, "q35c.intent")
            described = ", ".join(
                f"{n} intent({i or 'inout'})" for n, i in zip(sig.arg_names, intents))
            lines.append(f"/* {c_comment(fn.sym_name.data)}({c_comment(described)}) */")
            params, _ = self.public_params(sig)
            lines.append(f"{sig.result} {sig.public}({', '.join(params) or 'void'});")
            lines.append("")
        lines += ["#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */", ""]
        return "\n".join(lines)

    def source(self) -> str:
        printed = [FunctionPrinter(self, sig).print() for sig in self.signatures.values()]
        out = [f"/* Generated by q35c (target c) from '{c_comment(self.stem)}'. "
               "Do not edit. */", PRELUDE]
        for name, (ident, t) in self.globals.items():
            g = next(op for op in self.module.ops if isinstance(op, memref.GlobalOp)
                     and op.sym_name.data == name)
            tensor = TensorType(t.get_element_type(), t.get_shape())
            out.append(self.array_text(ident, constant_value(g.initial_value, tensor),
                                       t.get_element_type(), g.constant is not None))
        if self.need_levels:
            rows = ", ".join(f"{{{a}, {b}}}" for a, b in LEGACY_LEVELS)
            out.append(f"static const int8_t q35f_levels[128][2] = {{{rows}}};")
        out += self.constants
        out.append("")
        out += [lines[0] + ";" for lines in printed]
        out.append("")
        out += ["\n".join(lines) + "\n" for lines in printed]
        for sig in self.signatures.values():
            params, args = self.public_params(sig)
            ret = "" if sig.result == "void" else "return "
            out += [f"{sig.result} {sig.public}({', '.join(params) or 'void'})", "{",
                    f"    {ret}{sig.impl}({', '.join(args)});", "}", ""]
        return "\n".join(out)


def shape_expression_c(text: str, scalars: dict[str, str]) -> str | None:
    """A `q35c.dims` extent (integer `+ - * /` over scalar argument names, as evaluated by
    `entry.memref_argument_shape`) as a C expression, clamped at 0; None if it names
    something that is not a scalar argument."""

    def c(node) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return f"(int64_t){node.value}"
        if isinstance(node, ast.Name):
            return f"(int64_t){scalars[node.id]}" if node.id in scalars else None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = c(node.operand)
            return None if inner is None else f"(-{inner})"
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            a, b = c(node.left), c(node.right)
            return None if a is None or b is None else f"({a} {OPS[type(node.op)]} {b})"
        return None

    try:
        expr = c(ast.parse(text, mode="eval").body)
    except SyntaxError:
        return None
    return None if expr is None else f"q35f_extent({expr})"


OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


# -- q35c run --target c ---------------------------------------------------------------


def write_files(module: ModuleOp, stem: str) -> dict[str, bytes]:
    """kernels.h, kernels.c and a Makefile building libkernels.a."""
    unit = LoopUnit(module, stem)
    source = unit.source()  # first: it decides which tables the source needs
    return {HEADER: unit.header().encode(), SOURCE: source.encode(),
            "Makefile": MAKEFILE.encode()}


MAKEFILE = """\
# Generated by q35c (target c). `make` builds libkernels.a; add -DQ35C_BOUNDS_CHECK to
# CFLAGS to check every array subscript. -ffp-contract=off keeps one rounding per
# operation, as the reference semantics define.
CC ?= cc
CFLAGS ?= -std=c99 -O2 -ffp-contract=off -fopenmp

libkernels.a: kernels.o
\tar rcs $@ kernels.o

kernels.o: kernels.c kernels.h
\t$(CC) $(CFLAGS) -c kernels.c -o $@

clean:
\trm -f kernels.o libkernels.a
"""


def _harness(unit: LoopUnit, sig: Signature, shapes: list[tuple[int, ...]]) -> str:
    """main.c for one call of `sig` on arguments of `shapes`: reads argument i from
    IN/i.raw (intent(out) arrays start zeroed), calls, writes every intent(out)/(inout)
    argument i to OUT/i.raw and the result to OUT/result.raw."""
    fn = sig.fn
    intents = argument_attr_strings(fn, "q35c.intent")
    lines = ['#include "kernels.h"', "#include <stdio.h>", "#include <stdlib.h>",
             "#include <string.h>", "",
             "static void *load(const char *dir, int index, size_t bytes, int required)",
             "{",
             "    char path[4096];",
             "    void *data = calloc(bytes ? bytes : 1, 1);",
             "    FILE *f;",
             "    snprintf(path, sizeof path, \"%s/%d.raw\", dir, index);",
             "    f = fopen(path, \"rb\");",
             "    if (!data || (!f && required)) { fprintf(stderr, \"cannot read %s\\n\", path);"
             " exit(3); }",
             "    if (f) {",
             "        if (fread(data, 1, bytes, f) != bytes) { fprintf(stderr, "
             "\"short read %s\\n\", path); exit(3); }",
             "        fclose(f);",
             "    }",
             "    return data;",
             "}", "",
             "static void save(const char *dir, const char *name, const void *data, "
             "size_t bytes)",
             "{",
             "    char path[4096];",
             "    FILE *f;",
             "    snprintf(path, sizeof path, \"%s/%s.raw\", dir, name);",
             "    f = fopen(path, \"wb\");",
             "    if (!f || fwrite(data, 1, bytes, f) != bytes) { fprintf(stderr, "
             "\"cannot write %s\\n\", path); exit(3); }",
             "    fclose(f);",
             "}", "",
             "int main(int argc, char **argv)",
             "{",
             "    if (argc != 3) return 3;"]
    params, _ = unit.public_params(sig)
    args, extra, saves = [], [], []
    for index, arg in enumerate(fn.args):
        t, shape = arg.type, shapes[index]
        element = c_type(t.get_element_type() if isinstance(t, MemRefType) else t)
        count = int(np.prod(shape, dtype=np.int64))
        bytes_ = f"(size_t){max(count, 0)} * sizeof({element})"
        name = f"a{index}"
        required = int(intents[index] != "out")
        lines.append(f"    {element} *{name} = ({element} *)load(argv[1], {index}, {bytes_}, "
                     f"{required});")
        if isinstance(t, MemRefType):
            args.append(name)
            extra += [str(n) for d, n in enumerate(shape)
                      if t.get_shape()[d] < 0 and f"{sig.params[index]}_extent{d}"
                      in " ".join(params)]
            if intents[index] in ("out", "inout", None):
                saves.append(f"    save(argv[2], \"{index}\", {name}, {bytes_});")
        else:
            args.append(f"*{name}")
    call = f"{sig.public}({', '.join(args + extra)})"
    if sig.result == "void":
        lines.append(f"    {call};")
    else:
        lines.append(f"    {sig.result} result = {call};")
        saves.append("    save(argv[2], \"result\", &result, sizeof result);")
    lines += saves + ["    return 0;", "}", ""]
    return "\n".join(lines)


def run(module: ModuleOp, inputs: dict[str, np.ndarray], entry: str | None
        ) -> dict[str, np.ndarray]:
    """Build the kernels and a harness for the entry function, run it on `inputs` with
    subscripts checked; its outputs by name, as the interpreter returns them."""
    import subprocess
    import tempfile
    from pathlib import Path

    from q35c.compiler.entry import EntryError, entry_function, memref_argument_shape
    from q35c.compiler.tensors import numpy_dtype
    from q35c.semantics import SourceLineError
    from q35c.targets.c.build import DEFAULT_FLAGS, cached_build, compiler, extra_flags

    try:
        fn = entry_function(module, entry)
    except EntryError as err:
        raise Q35cError(f"c target: {err}") from None
    unit = LoopUnit(module, "kernels")
    source = unit.source()
    sig = unit.signatures[fn.sym_name.data]
    names = argument_names(fn)
    intents = argument_attr_strings(fn, "q35c.intent")
    values, shapes = [], []
    for index, (name, arg) in enumerate(zip(names, fn.args)):
        t = arg.type
        if isinstance(t, MemRefType):
            dtype = numpy_dtype(t.get_element_type())
            shape = memref_argument_shape(fn, index, inputs)
            if name not in inputs:
                if intents[index] != "out" or shape is None:
                    raise Q35cError(f"c target: missing input '{name}'")
                value = np.zeros(shape, dtype)
            else:
                value = np.asarray(inputs[name])
                want = t.get_shape()
                if (value.ndim != len(want) or (shape is not None and value.shape != shape)
                        or any(d >= 0 and d != v for d, v in zip(want, value.shape))):
                    raise Q35cError(f"c target: input '{name}' has shape {value.shape}, "
                                    f"expected {shape if shape is not None else t}")
        else:
            dtype = numpy_dtype(t)
            if name not in inputs:
                raise Q35cError(f"c target: missing input '{name}'")
            value = np.asarray(inputs[name])
            if value.shape != ():
                raise Q35cError(f"c target: input '{name}' must be a scalar")
        values.append(np.array(value, dtype=dtype, order="C", copy=True))
        shapes.append(values[-1].shape)
    files = {HEADER: unit.header().encode(), SOURCE: source.encode(),
             "main.c": _harness(unit, sig, shapes).encode()}
    command = [compiler(), *DEFAULT_FLAGS, "-fopenmp", "-DQ35C_BOUNDS_CHECK", *extra_flags(),
               "main.c", SOURCE, "-o", "main", "-lm"]
    directory = cached_build(files, command, "main", prefix="fortran-")
    with tempfile.TemporaryDirectory(prefix="q35c-c-loops-") as tmp:
        in_dir, out_dir = Path(tmp) / "in", Path(tmp) / "out"
        in_dir.mkdir()
        out_dir.mkdir()
        for index, (name, value) in enumerate(zip(names, values)):
            if name in inputs or intents[index] != "out":
                (in_dir / f"{index}.raw").write_bytes(value.tobytes())
        done = subprocess.run([str(directory / "main"), str(in_dir), str(out_dir)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["(no message)"])[0]
            if done.returncode == 2 and message.startswith("line "):
                line, _, text = message[5:].partition(": ")
                raise SourceLineError(text, int(line), _file_of_message(module, text))
            raise Q35cError(f"c target: the compiled kernel failed (exit code "
                            f"{done.returncode}): {message} (sources kept in {directory})")
        outputs: dict[str, np.ndarray] = {}
        results = fn.function_type.outputs.data
        if results:
            dtype = numpy_dtype(results[0])
            raw = (out_dir / "result.raw").read_bytes()
            outputs[result_names(fn)[0]] = np.frombuffer(raw, dtype)[0].copy()
        for index, (name, value) in enumerate(zip(names, values)):
            if intents[index] in ("out", "inout"):
                raw = (out_dir / f"{index}.raw").read_bytes()
                outputs[name] = np.frombuffer(raw, value.dtype).reshape(value.shape).copy()
        return outputs
