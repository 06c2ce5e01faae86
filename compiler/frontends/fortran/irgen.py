"""IR generation: checked Fortran AST -> func/scf/memref/arith/math.

Storage model (what the interpreter and every target see):

- An array dummy argument is a `memref` with the Fortran declared shape in Fortran index
  order: `A(M, K)` is `memref<?x?xi8>` (static extents where they are constants) and element
  `A(i, k)` is `memref.load %A[i - lb1, k - lb2]`. Column-major storage is the caller's
  business: .npy inputs are given in the declared shape and the interpreter indexes them
  logically. Extents that depend on scalar arguments are recorded in the `q35c.dims`
  argument attribute (a constant >= 0, or -(j + 1) for "the value of argument j").
- An `intent(in)` or `value` scalar argument is an SSA value; any other scalar argument is
  a rank-0 `memref` (the interpreter writes it back as an output). Local scalars are rank-0
  `memref.alloca`s; local arrays are `memref.alloca`, allocatables `memref.alloc`.
- Integer arithmetic is `arith` on iN: it wraps in two's complement (gfortran -fwrapv).
  Division truncates (`arith.divsi`), `mod` is `arith.remsi`.
- `do` loops without `exit`/`return` become `scf.for`; loops left early become `scf.while`
  with flag cells, and statements after a possible jump are guarded by `scf.if`.
- Reductions (`sum`, `dot_product`, ...) accumulate in array element order (first index
  fastest) from zero, as gfortran does, in the element type.
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects import arith, func, memref
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    FloatAttr,
    IndexType,
    IntegerAttr,
    IntegerType,
    MemRefType,
    ModuleOp,
    StringAttr,
    UnitAttr,
    i1,
)
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue

from . import ast
from .irgen_arrays import ArrayGen
from .irgen_common import DYN, INDEX, LoopCtx, Var, mlir_type
from .irgen_exprs import ExpressionGen
from .irgen_intrinsics import IntrinsicGen
from .irgen_loops import LoopGen
from .irgen_random import RandomGen
from .irgen_stmts import StatementGen
from .semantics import CheckedProgram, Checker, FType, ProcInfo, Symbol, _walk


class IRGen(StatementGen, LoopGen, ExpressionGen, IntrinsicGen, ArrayGen, RandomGen):
    """The IR generator: the program and its procedures here; statements, loops, expressions,
    intrinsics and array temporaries in the mixins of irgen_stmts.py, irgen_loops.py,
    irgen_exprs.py, irgen_intrinsics.py and irgen_arrays.py."""

    def __init__(self, checked: CheckedProgram, raise_idioms: bool = True):
        self.raise_idioms = raise_idioms
        self.checked = checked
        self.folder = Checker(checked.program, checked.diags)
        self.diags = checked.diags
        self.module = ModuleOp([])
        self.globals: dict[int | str, str] = {}
        """memref.global names: of parameter arrays (by symbol id), "random": the state of
        random_number (irgen_random.py)."""
        self.funcs: dict[str, func.FuncOp] = {}

    def err(self, node, message: str):
        return self.diags.error(node.line, max(node.col, 1), message)

    def enter_unit(self, proc: ast.Procedure) -> None:
        """Errors from here on name the file that defines `proc` (sources.py)."""
        self.diags = proc.diags if proc.diags is not None else self.checked.diags
        self.folder.diags = self.diags

    # -- emission helpers ----------------------------------------------------------------

    def emit(self, op: Operation):
        self.block.add_op(op)
        return op.results[0] if len(op.results) == 1 else op

    def constant(self, attr: Attribute) -> SSAValue:
        """An arith.constant, reused from this block or an enclosing one (it dominates)."""
        key = (attr, attr.type)
        for scope in reversed(self.consts):
            if key in scope:
                return scope[key]
        value = self.emit(arith.ConstantOp(attr))
        self.consts[-1][key] = value
        return value

    def const_int(self, value: int, type_: Attribute) -> SSAValue:
        if isinstance(type_, IndexType):
            return self.constant(IntegerAttr(int(value), INDEX))
        width = type_.width.data
        value = int(value) & ((1 << width) - 1)
        if width > 1 and value >= 1 << (width - 1):
            value -= 1 << width
        if width == 1:
            value = -1 if value else 0
        return self.constant(IntegerAttr(value, type_))

    def const_float(self, value: float, type_: Attribute) -> SSAValue:
        return self.constant(FloatAttr(float(value), type_))

    def index(self, v) -> SSAValue:
        """An index SSA value from a python int or an integer SSA value."""
        if isinstance(v, (int, np.integer)):
            return self.const_int(int(v), INDEX)
        if isinstance(v.type, IndexType):
            return v
        return self.emit(arith.IndexCastOp(v, INDEX))

    def in_region(self, build, args: tuple[Attribute, ...] = ()) -> Region:
        """A one-block region filled by `build(block_args)`; returns the region."""
        block = Block(arg_types=args)
        saved, self.block = self.block, block
        self.consts.append({})
        try:
            build(block.args)
        finally:
            self.block = saved
            self.consts.pop()
        return Region(block)

    def convert(self, v: SSAValue, src: FType, dst: FType) -> SSAValue:
        src, dst = src.scalar(), dst.scalar()
        if (src.base, src.kind) == (dst.base, dst.kind):
            return v
        target = mlir_type(dst)
        if src.base == "integer" and dst.base == "integer":
            op = arith.ExtSIOp if dst.kind > src.kind else arith.TruncIOp
            return self.emit(op(v, target))
        if src.base == "integer" and dst.base == "real":
            return self.emit(arith.SIToFPOp(v, target))
        if src.base == "real" and dst.base == "integer":
            return self.emit(arith.FPToSIOp(v, target))
        if src.base == "real" and dst.base == "real":
            op = arith.ExtFOp if dst.kind > src.kind else arith.TruncFOp
            return self.emit(op(v, target))
        return v

    # -- program -------------------------------------------------------------------------

    def generate(self) -> ModuleOp:
        names: dict[str, ast.Procedure] = {}
        for info in self.checked.procedures:
            proc = info.proc
            self.enter_unit(proc)
            if proc.name in names:
                raise self.err(proc, f"procedure '{proc.spelling}' is defined twice (module "
                                     f"'{names[proc.name].module}')")
            names[proc.name] = proc
        for info in self.checked.procedures:
            self.declare_function(info)
        for info in self.checked.procedures:
            self.function(info)
        return self.module

    def arg_type(self, sym: Symbol) -> Attribute:
        t = mlir_type(sym.type)
        if not sym.rank:
            if sym.intent == "in" or sym.value_attr:
                return t
            return MemRefType(t, [])
        return MemRefType(t, [DYN if e is None else e for e in self.static_extents(sym)])

    def static_extents(self, sym: Symbol) -> list[int | None]:
        out = []
        for d in sym.dims:
            if d.upper is None or sym.allocatable:
                out.append(None)
                continue
            hi = self.fold(d.upper)
            lo = self.fold(d.lower) if d.lower is not None else 1
            out.append(None if hi is None or lo is None else max(0, int(hi) - int(lo) + 1))
        return out

    def fold(self, expr: ast.Expr):
        """The constant value of a checked expression, or None (semantics' folding)."""
        return self.folder.fold(expr, self.scope)

    def declare_function(self, info: ProcInfo) -> None:
        self.scope = info.scope
        proc = info.proc
        self.enter_unit(proc)
        result = info.result
        array_result = result is not None and bool(result.rank)
        # an array result is a trailing intent(out) argument that the caller provides
        params = info.args + ([result] if array_result else [])
        inputs = [self.arg_type(s) for s in params]
        outputs = [mlir_type(result.type)] if result is not None and not array_result else []
        result_name = None if result is None else (
            result.spelling if result.name != proc.name else proc.spelling)
        arg_attrs = []
        for sym in params:
            attrs: dict[str, Attribute] = {"q35c.name": StringAttr(sym.spelling),
                                           "q35c.intent": StringAttr(self.intent(sym))}
            if sym is result:
                attrs["q35c.name"] = StringAttr(result_name)
                attrs["q35c.intent"] = StringAttr("out")
                attrs["q35c.result"] = UnitAttr()
            if sym.rank and any(e is None for e in self.static_extents(sym)):
                dims = self.dims_attr(sym, info)
                if dims is not None:
                    attrs["q35c.dims"] = ArrayAttr([StringAttr(d) for d in dims])
            arg_attrs.append(DictionaryAttr(attrs))
        res_attrs = None
        if result is not None and not array_result:
            res_attrs = ArrayAttr([DictionaryAttr({"q35c.name": StringAttr(result_name)})])
        fn = func.FuncOp(proc.name, (inputs, outputs), Region(Block(arg_types=inputs)),
                         arg_attrs=ArrayAttr(arg_attrs), res_attrs=res_attrs)
        # Fortran integer arithmetic wraps (as with gfortran -fwrapv): overflow is defined
        # behaviour here, not an error for verify-overflow to report.
        attrs = {"q35c.source_line": IntegerAttr(proc.line, 64),
                 "q35c.integer_overflow": StringAttr("wrap")}
        if proc.allow_wrap:  # !$q35c allow-wrap: verify-overflow accepts confirmed wraps
            attrs["q35c.allow_wrap"] = UnitAttr()
        if proc.bind is not None:
            attrs["q35c.bind_c"] = StringAttr(proc.bind or proc.name)
        if proc.prefixes:
            attrs["q35c.prefixes"] = ArrayAttr([StringAttr(p) for p in proc.prefixes])
        if self.diags is not self.checked.diags:  # a module of another file (sources.py)
            attrs["q35c.source_file"] = StringAttr(self.diags.path)
        fn.attributes.update(attrs)
        self.funcs[proc.name] = fn
        self.module.body.block.add_op(fn)

    def intent(self, sym: Symbol) -> str:
        if sym.value_attr:
            return "in"
        return sym.intent or "inout"

    def dims_attr(self, sym: Symbol, info: ProcInfo) -> list[str] | None:
        """Extents as integer expressions over scalar argument names (`"2*P"`, `"N"`),
        for callers that must allocate outputs; None if some extent is not such an
        expression (an assumed shape, a bound using a module variable)."""
        out = []
        for d in sym.dims:
            upper = self.shape_text(d.upper, info) if d.upper is not None else None
            lower = self.shape_text(d.lower, info) if d.lower is not None else "1"
            if upper is None or lower is None:
                return None
            out.append(upper if lower == "1" else f"({upper})-({lower})+1")
        return out

    def shape_text(self, e: ast.Expr, info: ProcInfo) -> str | None:
        value = self.fold(e)
        if value is not None and not np.ndim(value):
            return str(int(value))
        if isinstance(e, ast.Designator) and e.parts[0].args is None:
            s = info.scope.lookup(e.name)
            if s is not None and s.is_arg and not s.rank and s.type.base == "integer" \
                    and s.spelling.isidentifier():
                return s.spelling
            return None
        if isinstance(e, ast.BinOp) and e.op in ("+", "-", "*", "/"):
            a, b = self.shape_text(e.lhs, info), self.shape_text(e.rhs, info)
            if a is None or b is None:
                return None
            return f"({a}){e.op}({b})"
        return None

    # -- one procedure -------------------------------------------------------------------

    def function(self, info: ProcInfo) -> None:
        self.info = info
        self.scope = info.scope
        self.enter_unit(info.proc)
        fn = self.funcs[info.proc.name]
        self.block = fn.body.block
        self.consts: list[dict] = [{}]
        self.vars: dict[str, Var] = {}
        self.temps: dict[int, Var] = {}
        self.loops: list[LoopCtx] = []
        self.loop_flags: dict[int, LoopCtx] = {}
        for sym, arg in zip(info.args, fn.body.block.args):
            if not sym.rank:
                kind = "value" if isinstance(arg.type, (IntegerType,)) or \
                    not isinstance(arg.type, MemRefType) else "scalar"
                self.vars[sym.name] = Var(sym, kind, arg)
        for sym, arg in zip(info.args, fn.body.block.args):
            if sym.rank:
                self.vars[sym.name] = self.array_var(sym, arg)
        array_result = info.result is not None and bool(info.result.rank)
        if array_result:
            self.vars[info.result.name] = self.array_var(info.result, fn.body.block.args[-1])
        for sym in info.scope.symbols.values():
            if sym.kind != "var" or sym.is_arg or sym.name in self.vars:
                continue
            if not sym.rank:
                cell = self.emit(memref.AllocaOp.get(mlir_type(sym.type), shape=[]))
                self.vars[sym.name] = Var(sym, "scalar", cell)
            elif not sym.allocatable:
                self.vars[sym.name] = self.local_array(sym)
        self.ret_flag = None
        body = [s for s in info.proc.body
                if not isinstance(s, (ast.Decl, ast.Use, ast.ImplicitNone, ast.Access))]
        if any(isinstance(s, ast.Return) for s in _walk(body)):
            self.ret_flag = self.flag_cell()
        self.depth = 0
        self.stmts(body)
        results = []
        if info.result is not None and not array_result:
            cell = self.vars[info.result.name].value
            results = [self.emit(memref.LoadOp.get(cell, []))]
        self.emit(func.ReturnOp(*results))

    def flag_cell(self) -> SSAValue:
        cell = self.emit(memref.AllocaOp.get(i1, shape=[]))
        self.emit(memref.StoreOp.get(self.const_int(0, i1), cell, []))
        return cell

    def bounds(self, sym: Symbol, source: SSAValue | None):
        """Lower bounds and extents of an explicit- or assumed-shape array."""
        lbs, exts = [], []
        for i, d in enumerate(sym.dims):
            lo = self.scalar_int(d.lower) if d.lower is not None else 1
            if d.upper is None:
                ext = self.emit(memref.DimOp(source, self.const_int(i, INDEX)))
            else:
                static = self.fold(d.upper)
                lo_static = self.fold(d.lower) if d.lower is not None else 1
                if static is not None and lo_static is not None:
                    ext = max(0, int(static) - int(lo_static) + 1)
                else:
                    hi = self.index(self.scalar_int(d.upper))
                    if lo_static != 1:
                        lo_i = self.index(lo)
                        one = self.const_int(1, INDEX)
                        hi = self.emit(arith.AddiOp(self.emit(arith.SubiOp(hi, lo_i)), one))
                    ext = self.emit(arith.MaxSIOp(hi, self.const_int(0, INDEX)))
            if not isinstance(lo, int):
                static_lo = self.fold(d.lower)
                lo = int(static_lo) if static_lo is not None else self.index(lo)
            lbs.append(lo)
            exts.append(ext)
        return lbs, exts

    def scalar_int(self, expr: ast.Expr) -> SSAValue:
        return self.expr(expr)

    def array_var(self, sym: Symbol, arg: SSAValue) -> Var:
        lbs, exts = self.bounds(sym, arg)
        return Var(sym, "array", arg, lbs, exts)

    def local_array(self, sym: Symbol) -> Var:
        static = self.static_extents(sym)
        lbs, exts = self.bounds(sym, None)
        dyn = [self.index(e) for e, s in zip(exts, static) if s is None]
        t = MemRefType(mlir_type(sym.type), [DYN if s is None else s for s in static])
        cell = self.emit(memref.AllocaOp.get(mlir_type(sym.type), shape=t.get_shape(),
                                             dynamic_sizes=dyn))
        return Var(sym, "array", cell, lbs, exts)


def generate(checked: CheckedProgram, raise_idioms: bool = True) -> ModuleOp:
    """Lower a checked program; with `raise_idioms`, recognised loop nests become
    quant3p5 ops (raising.py)."""
    return IRGen(checked, raise_idioms).generate()
