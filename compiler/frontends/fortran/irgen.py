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

from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects import arith, func, math as xmath, memref, scf
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    ArrayAttr,
    DenseIntOrFPElementsAttr,
    DictionaryAttr,
    FloatAttr,
    IndexType,
    IntegerAttr,
    IntegerType,
    MemRefType,
    ModuleOp,
    StringAttr,
    TensorType,
    UnitAttr,
    f32,
    f64,
    i1,
)
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue

from . import ast
from .semantics import (
    Checker, CheckedProgram, FType, ProcInfo, Symbol, _promote, _walk)

INDEX = IndexType()
DYN = DYNAMIC_INDEX


def mlir_type(t: FType) -> Attribute:
    if t.base == "integer":
        return IntegerType(8 * t.kind)
    if t.base == "real":
        return f32 if t.kind == 4 else f64
    return i1


@dataclass
class Var:
    sym: Symbol
    kind: str  # value | scalar | array | const
    value: SSAValue | None = None
    lbounds: list = field(default_factory=list)
    extents: list = field(default_factory=list)
    """Per dimension: python int (constant) or an index SSA value."""
    index_base: tuple | None = None
    """Inside a counted loop with constant start and step 1: (iv, start), the index
    variable is start + iv, so subscripts by it need no load or cast."""


@dataclass
class LoopCtx:
    stmt: ast.Stmt
    exit_flag: SSAValue | None = None
    cycle_flag: SSAValue | None = None


class IRGen:
    def __init__(self, checked: CheckedProgram, raise_idioms: bool = True):
        self.raise_idioms = raise_idioms
        self.checked = checked
        self.folder = Checker(checked.program, checked.diags)
        self.diags = checked.diags
        self.module = ModuleOp([])
        self.globals: dict[int, str] = {}
        self.funcs: dict[str, func.FuncOp] = {}

    def err(self, node, message: str):
        return self.diags.error(node.line, max(node.col, 1), message)

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
        inputs = [self.arg_type(s) for s in info.args]
        outputs = [mlir_type(info.result.type)] if info.result is not None else []
        arg_attrs = []
        for i, sym in enumerate(info.args):
            attrs: dict[str, Attribute] = {"q35c.name": StringAttr(sym.spelling),
                                           "q35c.intent": StringAttr(self.intent(sym))}
            if sym.rank and any(e is None for e in self.static_extents(sym)):
                dims = self.dims_attr(sym, info)
                if dims is not None:
                    attrs["q35c.dims"] = ArrayAttr([StringAttr(d) for d in dims])
            arg_attrs.append(DictionaryAttr(attrs))
        res_attrs = None
        if info.result is not None:
            res_attrs = ArrayAttr([DictionaryAttr({"q35c.name": StringAttr(
                info.result.spelling if info.result.name != proc.name else proc.spelling)})])
        fn = func.FuncOp(proc.name, (inputs, outputs), Region(Block(arg_types=inputs)),
                         arg_attrs=ArrayAttr(arg_attrs), res_attrs=res_attrs)
        # Fortran integer arithmetic wraps (as with gfortran -fwrapv): overflow is defined
        # behaviour here, not an error for verify-overflow to report.
        attrs = {"q35c.source_line": IntegerAttr(proc.line, 64),
                 "q35c.integer_overflow": StringAttr("wrap")}
        if proc.bind is not None:
            attrs["q35c.bind_c"] = StringAttr(proc.bind or proc.name)
        if proc.prefixes:
            attrs["q35c.prefixes"] = ArrayAttr([StringAttr(p) for p in proc.prefixes])
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
        fn = self.funcs[info.proc.name]
        self.block = fn.body.block
        self.consts: list[dict] = [{}]
        self.vars: dict[str, Var] = {}
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
        if info.result is not None:
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

    # -- statements ----------------------------------------------------------------------

    def stmts(self, body: list[ast.Stmt]) -> None:
        for i, stmt in enumerate(body):
            self.stmt(stmt)
            flags = self.pending_flags(stmt)
            rest = body[i + 1:]
            if flags and rest:
                go_on = self.not_any(flags)
                self.emit(scf.IfOp(go_on, [], self.in_region(
                    lambda _args, rest=rest: (self.stmts(rest), self.emit(scf.YieldOp())))))
                return

    def pending_flags(self, stmt: ast.Stmt) -> list[SSAValue]:
        """Flag cells a jump inside `stmt` may have set, that the code after it must test."""
        flags: list[SSAValue] = []
        for kind, target in sorted(self.jumps(stmt, [])):
            if kind == "return":
                cell = self.ret_flag
            else:
                ctx = self.loop_flags.get(target)
                cell = None if ctx is None else (ctx.exit_flag if kind == "exit"
                                                 else ctx.cycle_flag)
            if cell is not None and cell not in flags:
                flags.append(cell)
        return flags

    def jumps(self, stmt: ast.Stmt, inner: list) -> set[tuple[str, int]]:
        """(kind, id of target loop) of every exit/cycle/return in `stmt` leaving `stmt`."""
        out: set[tuple[str, int]] = set()
        if isinstance(stmt, ast.Return):
            out.add(("return", 0))
        elif isinstance(stmt, (ast.Exit, ast.Cycle)):
            target = self.jump_target(stmt, inner)
            if target is not None and all(target is not l for l in inner):
                out.add(("exit" if isinstance(stmt, ast.Exit) else "cycle", id(target)))
        elif isinstance(stmt, (ast.Do, ast.DoWhile, ast.DoConcurrent)):
            for s in stmt.body:
                out |= self.jumps(s, inner + [stmt])
        elif isinstance(stmt, ast.If):
            for _, b in stmt.branches:
                for s in b:
                    out |= self.jumps(s, inner)
            for s in stmt.orelse or []:
                out |= self.jumps(s, inner)
        elif isinstance(stmt, ast.Select):
            for c in stmt.cases:
                for s in c.body:
                    out |= self.jumps(s, inner)
        return out

    def jump_target(self, stmt, inner: list):
        chain = [c.stmt for c in self.loops] + inner
        if stmt.label is None:
            return chain[-1] if chain else None
        for loop in reversed(chain):
            if getattr(loop, "label", None) == stmt.label:
                return loop
        return None

    def not_any(self, flags: list[SSAValue]) -> SSAValue:
        acc = None
        for cell in flags:
            v = self.emit(memref.LoadOp.get(cell, []))
            acc = v if acc is None else self.emit(arith.OrIOp(acc, v))
        return self.emit(arith.XOrIOp(acc, self.const_int(1, i1)))

    def stmt(self, stmt: ast.Stmt) -> None:
        block, last = self.block, self.block.last_op
        getattr(self, "stmt_" + type(stmt).__name__.lower())(stmt)
        if stmt.line and block is self.block:
            op = last.next_op if last is not None else block.first_op
            while op is not None:
                _mark_line(op, stmt.line)
                op = op.next_op

    def stmt_continue(self, stmt) -> None:
        pass

    def stmt_return(self, stmt) -> None:
        self.emit(memref.StoreOp.get(self.const_int(1, i1), self.ret_flag, []))

    def stmt_exit(self, stmt) -> None:
        ctx = self.loop_flags[id(self.jump_target(stmt, []))]
        self.emit(memref.StoreOp.get(self.const_int(1, i1), ctx.exit_flag, []))

    def stmt_cycle(self, stmt) -> None:
        ctx = self.loop_flags[id(self.jump_target(stmt, []))]
        self.emit(memref.StoreOp.get(self.const_int(1, i1), ctx.cycle_flag, []))

    def stmt_if(self, stmt: ast.If) -> None:
        self.depth += 1
        self.if_chain(stmt.branches, stmt.orelse)
        self.depth -= 1

    def if_chain(self, branches, orelse) -> None:
        (cond, body), rest = branches[0], branches[1:]
        c = self.case_cond(cond) if isinstance(cond, _CaseCond) else self.expr(cond)

        def then(_):
            self.stmts(body)
            self.emit(scf.YieldOp())

        def otherwise(_):
            if rest:
                self.if_chain(rest, orelse)
            elif orelse:
                self.stmts(orelse)
            self.emit(scf.YieldOp())

        has_else = bool(rest or orelse)
        self.emit(scf.IfOp(c, [], self.in_region(then),
                           self.in_region(otherwise) if has_else else None))

    def stmt_select(self, stmt: ast.Select) -> None:
        selector = self.expr(stmt.expr)
        st = stmt.expr.type
        branches = []
        default = None
        for case in stmt.cases:
            if case.selectors is None:
                default = case.body
                continue
            branches.append((_CaseCond(case, selector, st), case.body))
        if not branches:
            self.stmts(default or [])
            return
        self.depth += 1
        self.if_chain(branches, default)
        self.depth -= 1

    def case_cond(self, cond: _CaseCond) -> SSAValue:
        acc = None
        for sel in cond.case.selectors:
            if isinstance(sel, ast.Section):
                parts = []
                if sel.lo is not None:
                    parts.append(self.compare(">=", cond.selector, cond.type, sel.lo))
                if sel.hi is not None:
                    parts.append(self.compare("<=", cond.selector, cond.type, sel.hi))
                test = parts[0] if len(parts) == 1 else self.emit(arith.AndIOp(*parts))
            else:
                test = self.compare("==", cond.selector, cond.type, sel)
            acc = test if acc is None else self.emit(arith.OrIOp(acc, test))
        return acc

    def compare(self, op: str, v: SSAValue, vt: FType, rhs: ast.Expr) -> SSAValue:
        r = self.expr(rhs)
        common = _promote(vt, rhs.type) if vt.numeric else vt
        return self.cmp(op, self.convert(v, vt, common), self.convert(r, rhs.type, common),
                        common)

    # loops

    def loop_ctx(self, stmt) -> LoopCtx:
        ctx = LoopCtx(stmt)
        kinds = set()
        for kind, target in self._inner_jumps(stmt):
            if target == id(stmt):
                kinds.add(kind)
        if "exit" in kinds:
            ctx.exit_flag = self.flag_cell()
        if "cycle" in kinds:
            ctx.cycle_flag = self.flag_cell()
        self.loop_flags[id(stmt)] = ctx
        return ctx

    def _inner_jumps(self, stmt) -> set:
        self.loops.append(LoopCtx(stmt))
        try:
            out = set()
            for s in stmt.body:
                out |= self.jumps(s, [])
            return out
        finally:
            self.loops.pop()

    def outer_flags(self, stmt, ctx: LoopCtx) -> list[SSAValue]:
        """Flags that end this loop early: its exit, outer exits/cycles, return."""
        self.loops.append(ctx)
        try:
            flags = []
            for s in stmt.body:
                for cell in self.pending_flags(s):
                    if cell is not ctx.cycle_flag and cell not in flags:
                        flags.append(cell)
            return flags
        finally:
            self.loops.pop()

    def loop_body(self, stmt, ctx: LoopCtx, prologue) -> None:
        self.loops.append(ctx)
        self.depth += 1
        try:
            if ctx.cycle_flag is not None:
                self.emit(memref.StoreOp.get(self.const_int(0, i1), ctx.cycle_flag, []))
            prologue()
            for op in self.block.ops:  # the index update belongs to the loop's statement
                op.attributes.setdefault("q35c.source_line", IntegerAttr(stmt.line, 64))
            self.stmts(stmt.body)
        finally:
            self.loops.pop()
            self.depth -= 1

    def hint_attrs(self, stmt) -> dict[str, Attribute]:
        if not stmt.hints:
            return {}
        return {"q35c.hints": ArrayAttr([StringAttr(h) for h in stmt.hints])}

    def stmt_do(self, stmt: ast.Do) -> None:
        if self.raise_idioms:
            from .raising import emit_pair_matmul, match_pair_matmul
            match = match_pair_matmul(self, stmt)
            if match is not None:
                emit_pair_matmul(self, match, stmt)
                return
        ctx = self.loop_ctx(stmt)
        if stmt.var is None:
            return self.endless(stmt, ctx)
        var = self.vars[stmt.var]
        vt = var.sym.type
        cell = var.value
        start = self.expr(stmt.start)
        start = self.convert(start, stmt.start.type, vt)
        stop = self.convert(self.expr(stmt.stop), stmt.stop.type, vt)
        ity = mlir_type(vt)
        if stmt.step is None:
            step = self.const_int(1, ity)
            if self.fold(stmt.start) == 1:
                trip = stop
            else:
                trip = self.emit(arith.AddiOp(self.emit(arith.SubiOp(stop, start)),
                                              self.const_int(1, ity)))
        else:
            step = self.convert(self.expr(stmt.step), stmt.step.type, vt)
            trip = self.emit(arith.DivSIOp(self.emit(arith.AddiOp(
                self.emit(arith.SubiOp(stop, start)), step)), step))
        trip = self.emit(arith.MaxSIOp(trip, self.const_int(0, ity)))
        early = self.outer_flags(stmt, ctx)

        start_const = self.fold(stmt.start) if stmt.step is None else None

        def set_var(iv):
            if stmt.step is None:
                i = self.emit(arith.AddiOp(start, self.emit(arith.IndexCastOp(iv, ity))))
            else:
                i = self.emit(arith.AddiOp(start, self.emit(arith.MuliOp(
                    self.emit(arith.IndexCastOp(iv, ity)), step))))
            if early:  # the value an `exit` leaves behind
                self.emit(memref.StoreOp.get(i, cell, []))
            # Fortran forbids assigning the index inside the loop: read the SSA value
            base = (iv, int(start_const)) if start_const is not None else None
            self.vars[stmt.var] = Var(var.sym, "value", i, index_base=base)

        trip_index = self.index(trip)
        if not early:
            def body(args):
                self.loop_body(stmt, ctx, lambda: set_var(args[0]))
                self.emit(scf.YieldOp())
            loop = scf.ForOp(self.const_int(0, INDEX), trip_index, self.const_int(1, INDEX),
                             [], self.in_region(body, (INDEX,)))
            loop.attributes.update(self.hint_attrs(stmt))
            self.emit(loop)
        else:
            self.while_loop(stmt, ctx, early, trip_index, set_var)
        self.vars[stmt.var] = var
        # the index's value after a completed loop, as in Fortran: start + trip * step
        final = self.emit(arith.AddiOp(start, self.emit(arith.MuliOp(trip, step))))
        if ctx.exit_flag is None:
            self.emit(memref.StoreOp.get(final, cell, []))
            return
        exited = self.emit(memref.LoadOp.get(ctx.exit_flag, []))
        self.emit(scf.IfOp(exited, [], self.in_region(lambda _: self.emit(scf.YieldOp())),
                           self.in_region(lambda _: (self.emit(memref.StoreOp.get(
                               final, cell, [])), self.emit(scf.YieldOp())))))

    def while_loop(self, stmt, ctx, early, trip_index, set_var) -> None:
        """`scf.while` over iv = 0.. with an early-leave test on flag cells."""
        def before(args):
            iv = args[0]
            more = self.emit(arith.CmpiOp(iv, trip_index, "slt")) if trip_index is not None \
                else self.const_int(1, i1)
            go = self.emit(arith.AndIOp(more, self.not_any(early))) if early else more
            self.emit(scf.ConditionOp(go, iv))

        def after(args):
            iv = args[0]
            self.loop_body(stmt, ctx, lambda: set_var(iv) if set_var else None)
            self.emit(scf.YieldOp(self.emit(arith.AddiOp(iv, self.const_int(1, INDEX)))))

        loop = scf.WhileOp([self.const_int(0, INDEX)], [INDEX],
                           self.in_region(before, (INDEX,)), self.in_region(after, (INDEX,)))
        loop.attributes.update(self.hint_attrs(stmt))
        self.emit(loop)

    def endless(self, stmt: ast.Do, ctx: LoopCtx) -> None:
        early = self.outer_flags(stmt, ctx)
        if not early:
            raise self.err(stmt, "a do loop without a control must contain an exit")
        self.while_loop(stmt, ctx, early, None, None)

    def stmt_dowhile(self, stmt: ast.DoWhile) -> None:
        ctx = self.loop_ctx(stmt)
        early = self.outer_flags(stmt, ctx)

        def before(args):
            go = self.guarded_cond(early, stmt.cond) if early else self.expr(stmt.cond)
            self.emit(scf.ConditionOp(go))

        def after(args):
            self.loop_body(stmt, ctx, lambda: None)
            self.emit(scf.YieldOp())

        loop = scf.WhileOp([], [], self.in_region(before), self.in_region(after))
        loop.attributes.update(self.hint_attrs(stmt))
        self.emit(loop)

    def guarded_cond(self, early, cond: ast.Expr) -> SSAValue:
        """`!flags && cond`, evaluating cond only when no flag is set."""
        go_on = self.not_any(early)

        def then(_):
            self.emit(scf.YieldOp(self.expr(cond)))

        def otherwise(_):
            self.emit(scf.YieldOp(self.const_int(0, i1)))

        return self.emit(scf.IfOp(go_on, [i1], self.in_region(then), self.in_region(otherwise)))

    def stmt_doconcurrent(self, stmt: ast.DoConcurrent) -> None:
        ctx = self.loop_ctx(stmt)
        specs = stmt.specs

        def nest(level: int):
            name, lo, hi, step = specs[level]
            var = self.vars[name]
            vt = var.sym.type
            ity = mlir_type(vt)
            lo_v = self.convert(self.expr(lo), lo.type, vt)
            hi_v = self.convert(self.expr(hi), hi.type, vt)
            st_v = self.convert(self.expr(step), step.type, vt) if step is not None else \
                self.const_int(1, ity)
            trip = self.emit(arith.DivSIOp(self.emit(arith.AddiOp(
                self.emit(arith.SubiOp(hi_v, lo_v)), st_v)), st_v))
            trip = self.index(self.emit(arith.MaxSIOp(trip, self.const_int(0, ity))))

            lo_const = self.fold(lo) if step is None else None

            def body(args):
                if step is None:
                    i = self.emit(arith.AddiOp(lo_v, self.emit(arith.IndexCastOp(args[0], ity))))
                else:
                    i = self.emit(arith.AddiOp(lo_v, self.emit(arith.MuliOp(
                        self.emit(arith.IndexCastOp(args[0], ity)), st_v))))
                base = (args[0], int(lo_const)) if lo_const is not None else None
                self.vars[name] = Var(var.sym, "value", i, index_base=base)
                if level + 1 < len(specs):
                    nest(level + 1)
                else:
                    self.loop_body(stmt, ctx, lambda: None)
                self.vars[name] = var
                self.emit(scf.YieldOp())

            loop = scf.ForOp(self.const_int(0, INDEX), trip, self.const_int(1, INDEX), [],
                             self.in_region(body, (INDEX,)))
            loop.attributes["q35c.concurrent"] = UnitAttr()
            if level == 0:
                loop.attributes.update(self.hint_attrs(stmt))
            self.emit(loop)

        nest(0)

    # assignment

    def stmt_assign(self, stmt: ast.Assign) -> None:
        target, value = stmt.target, stmt.value
        lt = target.type
        if not lt.rank:
            v = self.convert(self.expr(value), value.type, lt)
            self.store(target, v)
            return
        if isinstance(value, ast.Designator) and value.name == "matmul" and \
                value.parts[0].args is not None and self.is_intrinsic(value):
            return self.matmul(target, value)
        if isinstance(value, ast.ArrayCtor):
            return self.store_ctor(target, value)
        extents = self.extents_of(target)
        if self.reads(value, target.name):
            # Fortran evaluates the whole right-hand side first: go through a temporary
            t = MemRefType(mlir_type(lt), [DYN] * lt.rank)
            tmp = self.emit(memref.AllocOp.get(mlir_type(lt), shape=t.get_shape(),
                                               dynamic_sizes=[self.index(e) for e in extents]))
            self.loop_nest(extents, lambda ivs: self.emit(memref.StoreOp.get(
                self.convert(self.expr(value, ivs), value.type, lt), tmp, ivs)))
            self.loop_nest(extents, lambda ivs: self.store(
                target, self.emit(memref.LoadOp.get(tmp, ivs)), ivs))
            self.emit(memref.DeallocOp.get(tmp))
            return
        self.loop_nest(extents, lambda ivs: self.store(
            target, self.convert(self.expr(value, ivs), value.type, lt), ivs))

    def reads(self, expr: ast.Expr, name: str) -> bool:
        found = False

        def visit(e):
            nonlocal found
            if isinstance(e, ast.Designator):
                if e.name == name:
                    found = True
                for a in e.parts[0].args or []:
                    visit(a)
            elif isinstance(e, ast.BinOp):
                visit(e.lhs), visit(e.rhs)
            elif isinstance(e, ast.UnOp):
                visit(e.operand)
            elif isinstance(e, ast.Section):
                for x in (e.lo, e.hi, e.step):
                    if x is not None:
                        visit(x)
            elif isinstance(e, ast.KeywordArg):
                visit(e.value)
            elif isinstance(e, ast.ArrayCtor):
                for x in e.items:
                    visit(x)
        visit(expr)
        return found

    def store_ctor(self, target: ast.Designator, ctor: ast.ArrayCtor) -> None:
        lt = target.type
        for k, item in enumerate(ctor.items):
            v = self.convert(self.expr(item), item.type, lt)
            self.store(target, v, [self.const_int(k, INDEX)])

    def loop_nest(self, extents: list, body, ivs: list | None = None) -> None:
        """Loops over 0..extent-1 per dimension, first dimension innermost."""
        ivs = ivs or [None] * len(extents)
        dims = [d for d in range(len(extents)) if ivs[d] is None]
        if not dims:
            body(ivs)
            return
        d = dims[-1]
        ub = self.index(extents[d])

        def region(args):
            inner = list(ivs)
            inner[d] = args[0]
            self.loop_nest(extents, body, inner)
            self.emit(scf.YieldOp())

        self.emit(scf.ForOp(self.const_int(0, INDEX), ub, self.const_int(1, INDEX), [],
                            self.in_region(region, (INDEX,))))

    def matmul(self, target: ast.Designator, value: ast.Designator) -> None:
        a, b = value.parts[0].args
        va, vb = self.array_of(a), self.array_of(b)
        lt = target.type
        et = a.type.scalar()
        m, k = va.extents
        _, n = vb.extents
        ty = mlir_type(et)

        def body(ivs):
            i, j = ivs

            def kloop(args):
                kk, acc = args
                x = self.emit(memref.LoadOp.get(va.value, [i, kk]))
                y = self.emit(memref.LoadOp.get(vb.value, [kk, j]))
                mul = arith.MulfOp if et.base == "real" else arith.MuliOp
                add = arith.AddfOp if et.base == "real" else arith.AddiOp
                self.emit(scf.YieldOp(self.emit(add(acc, self.emit(mul(x, y))))))

            zero = self.const_float(0.0, ty) if et.base == "real" else self.const_int(0, ty)
            loop = self.emit(scf.ForOp(self.const_int(0, INDEX), self.index(k),
                                       self.const_int(1, INDEX), [zero],
                                       self.in_region(kloop, (INDEX, ty))))
            self.store(target, self.convert(loop, et, lt), ivs)

        self.loop_nest([m, n], body)

    def array_of(self, e: ast.Expr) -> Var:
        if not isinstance(e, ast.Designator) or e.parts[0].args is not None:
            raise self.err(e, "this intrinsic needs whole arrays as arguments")
        return self.var(e)

    # calls, allocation

    def stmt_call(self, stmt: ast.Call) -> None:
        self.call(stmt.callee)

    def call(self, d: ast.Designator):
        part = d.parts[0]
        sym = self.scope.lookup(part.name)
        info = sym.proc
        fn = self.funcs[info.proc.name]
        operands = []
        for actual, dummy, want in zip(part.args or [], info.args, fn.function_type.inputs):
            if isinstance(want, MemRefType):
                v = self.var(actual).value
                if v.type != want:
                    v = self.emit(memref.CastOp.get(v, want))
                operands.append(v)
            else:
                operands.append(self.expr(actual))
        outs = list(fn.function_type.outputs)
        op = func.CallOp(info.proc.name, operands, outs)
        self.emit(op)
        return op.results[0] if outs else None

    def stmt_allocate(self, stmt: ast.Allocate) -> None:
        if self.depth:
            raise self.err(stmt, "allocate is supported at the top level of a procedure only "
                                 "(not inside loops or if blocks)")
        for item in stmt.items:
            sym = self.scope.lookup(item.name)
            lbs, exts = [], []
            for a in item.parts[0].args:
                if isinstance(a, ast.Section):
                    lo = self.index(self.expr(a.lo)) if a.lo is not None else \
                        self.const_int(1, INDEX)
                    hi = self.index(self.expr(a.hi))
                    lbs.append(lo)
                    ext = self.emit(arith.AddiOp(self.emit(arith.SubiOp(hi, lo)),
                                                 self.const_int(1, INDEX)))
                else:
                    lbs.append(1)
                    ext = self.index(self.expr(a))
                exts.append(self.emit(arith.MaxSIOp(ext, self.const_int(0, INDEX))))
            ref = self.emit(memref.AllocOp.get(mlir_type(sym.type), shape=[DYN] * sym.rank,
                                               dynamic_sizes=exts))
            self.vars[sym.name] = Var(sym, "array", ref, lbs, exts)

    def stmt_deallocate(self, stmt: ast.Deallocate) -> None:
        if self.depth:
            raise self.err(stmt, "deallocate is supported at the top level of a procedure only")
        for item in stmt.items:
            var = self.vars.get(item.name)
            if var is None:
                raise self.err(item, f"'{item.name}' is deallocated before it is allocated")
            self.emit(memref.DeallocOp.get(var.value))
            del self.vars[item.name]

    # -- variables -----------------------------------------------------------------------

    def var(self, d: ast.Designator) -> Var:
        name = d.name
        if self.info.result is not None and name == self.info.proc.name and \
                self.info.result.name == name:
            name = self.info.result.name
        if name in self.vars:
            return self.vars[name]
        sym = self.scope.lookup(name)
        if sym is not None and sym.kind == "param":
            return self.param_var(sym)
        if sym is not None and sym.allocatable:
            raise self.err(d, f"'{sym.spelling}' is used before it is allocated")
        raise self.err(d, f"'{d.parts[0].spelling}' cannot be used here")

    def param_var(self, sym: Symbol) -> Var:
        value = np.asarray(sym.value)
        if not value.ndim:
            return Var(sym, "const", None)
        gname = self.global_for(sym)
        t = MemRefType(mlir_type(sym.type), list(value.shape))
        ref = self.emit(memref.GetGlobalOp(gname, t))
        lbs = [int(self.fold(d.lower)) if d.lower is not None else 1 for d in sym.dims]
        return Var(sym, "array", ref, lbs, list(value.shape))

    def global_for(self, sym: Symbol) -> str:
        if id(sym) in self.globals:
            return self.globals[id(sym)]
        name = f"{sym.name}"
        taken = {g for g in self.globals.values()}
        k = 0
        while name in taken:
            k += 1
            name = f"{sym.name}_{k}"
        value = np.asarray(sym.value)
        elem = mlir_type(sym.type)
        t = MemRefType(elem, list(value.shape))
        flat = value.flatten().tolist()
        if sym.type.base == "logical":
            flat = [int(bool(x)) for x in flat]
        dense = DenseIntOrFPElementsAttr.from_list(TensorType(elem, list(value.shape)), flat)
        op = memref.GlobalOp.get(StringAttr(name), t, dense, constant=UnitAttr())
        self.module.body.block.insert_op_before(op, self.module.body.block.first_op)
        self.globals[id(sym)] = name
        return name

    def element_indices(self, var: Var, part: ast.Part, ivs: list | None) -> list[SSAValue]:
        """0-based memref indices of `part` (subscripts and sections) at positions `ivs`."""
        out = []
        it = iter(ivs or [])
        args = part.args
        for dim in range(var.sym.rank if var.sym.rank else len(var.extents)):
            lb = var.lbounds[dim]
            if args is None:
                out.append(next(it))
                continue
            a = args[dim]
            if isinstance(a, ast.Section):
                pos = next(it)
                lo = self.index(self.expr(a.lo)) if a.lo is not None else None
                if a.step is not None:
                    pos = self.emit(arith.MuliOp(pos, self.index(self.expr(a.step))))
                if lo is not None:
                    pos = self.emit(arith.AddiOp(pos, self.emit(arith.SubiOp(
                        lo, self.index(lb)))))
                out.append(pos)
                continue
            loop_var = self.vars.get(a.name) if isinstance(a, ast.Designator) and \
                a.parts[0].args is None else None
            if loop_var is not None and loop_var.index_base is not None and \
                    isinstance(lb, int):
                iv, start = loop_var.index_base
                out.append(iv if start == lb else self.emit(arith.AddiOp(
                    iv, self.const_int(start - lb, INDEX))))
                continue
            sub = self.index(self.expr(a))
            if isinstance(lb, int) and lb == 0:
                out.append(sub)
            else:
                out.append(self.emit(arith.SubiOp(sub, self.index(lb))))
        return out

    def extents_of(self, e: ast.Expr) -> list:
        """Extents (int or index value) of an array-valued expression."""
        if isinstance(e, ast.Designator) and not self.is_intrinsic(e):
            var = self.var(e)
            args = e.parts[0].args
            if args is None:
                return list(var.extents)
            out = []
            for dim, a in enumerate(args):
                if not isinstance(a, ast.Section):
                    continue
                if a.lo is None and a.hi is None and a.step is None:  # `:`, the whole dim
                    out.append(var.extents[dim])
                    continue
                lb = var.lbounds[dim]
                lo = self.index(self.expr(a.lo)) if a.lo is not None else self.index(lb)
                if a.hi is not None:
                    hi = self.index(self.expr(a.hi))
                else:
                    hi = self.emit(arith.SubiOp(self.emit(arith.AddiOp(
                        self.index(lb), self.index(var.extents[dim]))), self.const_int(1, INDEX)))
                if a.step is None:
                    n = self.emit(arith.AddiOp(self.emit(arith.SubiOp(hi, lo)),
                                               self.const_int(1, INDEX)))
                else:
                    st = self.index(self.expr(a.step))
                    n = self.emit(arith.DivSIOp(self.emit(arith.AddiOp(
                        self.emit(arith.SubiOp(hi, lo)), st)), st))
                out.append(self.emit(arith.MaxSIOp(n, self.const_int(0, INDEX))))
            return out
        if isinstance(e, ast.BinOp):
            side = e.lhs if e.lhs.type.rank else e.rhs
            return self.extents_of(side)
        if isinstance(e, ast.UnOp):
            return self.extents_of(e.operand)
        if isinstance(e, ast.ArrayCtor):
            return [len(e.items)]
        if isinstance(e, ast.Designator):  # elemental intrinsic on arrays
            for a in e.parts[0].args:
                a = a.value if isinstance(a, ast.KeywordArg) else a
                if a.type is not None and a.type.rank:
                    return self.extents_of(a)
        raise self.err(e, "cannot determine the shape of this array expression")

    def store(self, target: ast.Designator, v: SSAValue, ivs: list | None = None) -> None:
        var = self.var(target)
        if var.kind == "scalar":
            self.emit(memref.StoreOp.get(v, var.value, []))
            return
        if var.kind != "array":
            raise self.err(target, f"cannot assign to '{target.parts[0].spelling}'")
        idx = self.element_indices(var, target.parts[0], ivs)
        self.emit(memref.StoreOp.get(v, var.value, idx))

    # -- expressions ---------------------------------------------------------------------

    def is_intrinsic(self, d: ast.Designator) -> bool:
        sym = self.scope.lookup(d.name)
        return (sym is None or (sym.kind == "var" and not sym.declared)) and \
            d.parts[0].args is not None and d.name not in self.vars

    def expr(self, e: ast.Expr, ivs: list | None = None) -> SSAValue:
        """The scalar value of `e`; for an array expression, its element at `ivs`."""
        t = e.type
        if isinstance(e, ast.IntLit):
            return self.const_int(e.value, mlir_type(t))
        if isinstance(e, ast.BozLit):
            return self.const_int(e.value, mlir_type(t))
        if isinstance(e, ast.RealLit):
            value = np.float64(e.text) if t.kind == 8 else np.float32(e.text)
            return self.const_float(float(value), mlir_type(t))
        if isinstance(e, ast.LogicalLit):
            return self.const_int(1 if e.value else 0, i1)
        if isinstance(e, ast.UnOp):
            v = self.expr(e.operand, ivs)
            if e.op == ".not.":
                return self.emit(arith.XOrIOp(v, self.const_int(1, i1)))
            if e.op == "+":
                return v
            if t.base == "real":
                return self.emit(arith.NegfOp(v))
            return self.emit(arith.SubiOp(self.const_int(0, mlir_type(t)), v))
        if isinstance(e, ast.BinOp):
            return self.binop(e, ivs)
        if isinstance(e, ast.Designator):
            return self.designator(e, ivs)
        if isinstance(e, ast.ArrayCtor):
            raise self.err(e, "array constructors are supported as a whole right-hand side "
                              "or a parameter value only")
        raise self.err(e, f"unsupported expression {type(e).__name__}")

    def binop(self, e: ast.BinOp, ivs) -> SSAValue:
        op = e.op
        a = self.expr(e.lhs, ivs if e.lhs.type.rank else None)
        if op in (".and.", ".or.", ".eqv.", ".neqv."):
            b = self.expr(e.rhs, ivs if e.rhs.type.rank else None)
            cls = {".and.": arith.AndIOp, ".or.": arith.OrIOp, ".neqv.": arith.XOrIOp}.get(op)
            if cls is not None:
                return self.emit(cls(a, b))
            return self.emit(arith.CmpiOp(a, b, "eq"))
        if op == "**" and e.rhs.type.base == "integer" and not e.rhs.type.rank:
            n = int(self.fold(e.rhs))
            return self.power(a, n, e.type)
        b = self.expr(e.rhs, ivs if e.rhs.type.rank else None)
        if op in ("==", "/=", "<", "<=", ">", ">="):
            common = _promote(e.lhs.type, e.rhs.type)
            return self.cmp(op, self.convert(a, e.lhs.type, common),
                            self.convert(b, e.rhs.type, common), common)
        a = self.convert(a, e.lhs.type, t := e.type)
        b = self.convert(b, e.rhs.type, t)
        if t.base == "real":
            cls = {"+": arith.AddfOp, "-": arith.SubfOp, "*": arith.MulfOp, "/": arith.DivfOp,
                   "**": xmath.PowFOp}[op]
        else:
            cls = {"+": arith.AddiOp, "-": arith.SubiOp, "*": arith.MuliOp,
                   "/": arith.DivSIOp}[op]
        return self.emit(cls(a, b))

    def power(self, x: SSAValue, n: int, t: FType) -> SSAValue:
        """x**n for a constant n >= 0 by square-and-multiply, like gfortran's powi."""
        if n == 0:
            return self.const_float(1.0, x.type) if t.base == "real" else \
                self.const_int(1, x.type)
        mul = arith.MulfOp if t.base == "real" else arith.MuliOp
        if n == 1:
            return x
        half = self.power(x, n // 2, t)
        sq = self.emit(mul(half, half))
        return self.emit(mul(sq, x)) if n % 2 else sq

    def cmp(self, op: str, a: SSAValue, b: SSAValue, t: FType) -> SSAValue:
        if t.base == "real":
            pred = {"==": "oeq", "/=": "une", "<": "olt", "<=": "ole", ">": "ogt",
                    ">=": "oge"}[op]
            return self.emit(arith.CmpfOp(a, b, pred))
        pred = {"==": "eq", "/=": "ne", "<": "slt", "<=": "sle", ">": "sgt", ">=": "sge"}[op]
        return self.emit(arith.CmpiOp(a, b, pred))

    def designator(self, d: ast.Designator, ivs) -> SSAValue:
        part = d.parts[0]
        sym = self.scope.lookup(d.name)
        if self.is_intrinsic(d):
            return self.intrinsic(d, ivs)
        if sym is not None and sym.kind == "proc" and not (
                self.info.result is not None and d.name == self.info.result.name):
            return self.call(d)
        var = self.var(d)
        if var.kind == "const":
            value = sym.value
            if sym.type.base == "real":
                return self.const_float(float(value), mlir_type(sym.type))
            return self.const_int(int(value), mlir_type(sym.type))
        if var.kind == "value":
            return var.value
        if var.kind == "scalar":
            return self.emit(memref.LoadOp.get(var.value, []))
        idx = self.element_indices(var, part, ivs)
        return self.emit(memref.LoadOp.get(var.value, idx))

    def intrinsic(self, d: ast.Designator, ivs) -> SSAValue:
        part = d.parts[0]
        name = part.name
        t = d.type
        pos = [a for a in part.args if not isinstance(a, ast.KeywordArg)]
        kw = {a.name: a.value for a in part.args if isinstance(a, ast.KeywordArg)}

        def arg(i: int) -> SSAValue:
            a = pos[i]
            return self.expr(a, ivs if a.type.rank else None)

        if name in ("int", "real", "dble"):
            return self.convert(arg(0), pos[0].type, t)
        if name == "nint":
            r = self.emit(xmath.RoundOp(arg(0)))
            return self.convert(r, pos[0].type, t)
        if name == "abs":
            v = arg(0)
            return self.emit(xmath.AbsFOp(v) if t.base == "real" else xmath.AbsIOp(v))
        if name in ("sqrt", "exp", "log", "tanh", "sin", "cos"):
            cls = {"sqrt": xmath.SqrtOp, "exp": xmath.ExpOp, "log": xmath.LogOp,
                   "tanh": xmath.TanhOp, "sin": xmath.SinOp, "cos": xmath.CosOp}[name]
            return self.emit(cls(arg(0)))
        if name in ("min", "max"):
            acc = arg(0)
            for i in range(1, len(pos)):
                b = arg(i)
                if t.base == "real":
                    # gfortran: max(a, b) = b > a ? b : a (a NaN-free select, in order)
                    pred = "ogt" if name == "max" else "olt"
                    acc = self.emit(arith.SelectOp(self.emit(arith.CmpfOp(b, acc, pred)), b, acc))
                else:
                    cls = arith.MaxSIOp if name == "max" else arith.MinSIOp
                    acc = self.emit(cls(acc, b))
            return acc
        if name == "merge":
            return self.emit(arith.SelectOp(arg(2), arg(0), arg(1)))
        if name == "mod":
            return self.emit(arith.RemSIOp(arg(0), arg(1)))
        if name in ("iand", "ior", "ieor"):
            cls = {"iand": arith.AndIOp, "ior": arith.OrIOp, "ieor": arith.XOrIOp}[name]
            return self.emit(cls(arg(0), arg(1)))
        if name == "not":
            return self.emit(arith.XOrIOp(arg(0), self.const_int(-1, mlir_type(t))))
        if name in ("shiftl", "shiftr", "ishft"):
            return self.shift(name, arg(0), pos[1], t, ivs)
        if name == "ibits":
            ty = mlir_type(t)
            p = self.convert(arg(1), pos[1].type, t)
            n = self.convert(arg(2), pos[2].type, t)
            shifted = self.emit(arith.ShRUIOp(arg(0), p))
            ones = self.const_int(-1, ty)
            mask = self.emit(arith.XOrIOp(self.emit(arith.ShLIOp(ones, n)), ones))
            bits = 8 * t.kind
            full = self.emit(arith.CmpiOp(n, self.const_int(bits, ty), "sge"))
            mask = self.emit(arith.SelectOp(full, ones, mask))
            return self.emit(arith.AndIOp(shifted, mask))
        if name in ("sum", "product", "maxval", "minval"):
            return self.reduce(name, pos[0], t)
        if name == "dot_product":
            return self.dot(pos[0], pos[1], t)
        if name in ("size", "lbound", "ubound"):
            var = self.array_of(pos[0])
            if len(pos) == 1:
                total = None
                for e in var.extents:
                    v = self.index(e)
                    total = v if total is None else self.emit(arith.MuliOp(total, v))
                return self.emit(arith.IndexCastOp(total, mlir_type(t)))
            dim = int(self.fold(pos[1])) - 1
            lb = self.index(var.lbounds[dim])
            if name == "lbound":
                v = lb
            elif name == "size":
                v = self.index(var.extents[dim])
            else:
                v = self.emit(arith.SubiOp(self.emit(arith.AddiOp(
                    lb, self.index(var.extents[dim]))), self.const_int(1, INDEX)))
            return self.emit(arith.IndexCastOp(v, mlir_type(t)))
        if name in ("huge", "tiny", "epsilon", "kind"):
            at = pos[0].type
            if name == "kind":
                return self.const_int(at.kind, mlir_type(t))
            if at.base == "integer":
                return self.const_int((1 << (8 * at.kind - 1)) - 1, mlir_type(t))
            info = np.finfo(np.float32 if at.kind == 4 else np.float64)
            value = {"huge": info.max, "tiny": info.tiny, "epsilon": info.eps}[name]
            return self.const_float(float(value), mlir_type(t))
        if name == "matmul":
            raise self.err(d, "matmul is supported as the whole right-hand side of an "
                              "assignment to an array")
        raise self.err(d, f"intrinsic {name} is not supported")

    def shift(self, name: str, x: SSAValue, amount: ast.Expr, t: FType, ivs) -> SSAValue:
        ty = mlir_type(t)
        n = self.convert(self.expr(amount, ivs if amount.type.rank else None), amount.type, t)
        if name == "shiftl":
            return self.emit(arith.ShLIOp(x, n))
        if name == "shiftr":
            return self.emit(arith.ShRUIOp(x, n))
        # ishft: left for n >= 0, logical right for n < 0; |n| >= bits gives 0
        zero = self.const_int(0, ty)
        neg = self.emit(arith.SubiOp(zero, n))
        left = self.emit(arith.ShLIOp(x, n))
        right = self.emit(arith.ShRUIOp(x, neg))
        is_left = self.emit(arith.CmpiOp(n, zero, "sge"))
        v = self.emit(arith.SelectOp(is_left, left, right))
        mag = self.emit(arith.SelectOp(is_left, n, neg))
        big = self.emit(arith.CmpiOp(mag, self.const_int(8 * t.kind, ty), "sge"))
        return self.emit(arith.SelectOp(big, zero, v))

    def reduce(self, name: str, a: ast.Expr, t: FType) -> SSAValue:
        ty = mlir_type(t)
        extents = self.extents_of(a)
        if name == "sum":
            init = self.const_float(0.0, ty) if t.base == "real" else self.const_int(0, ty)
        elif name == "product":
            init = self.const_float(1.0, ty) if t.base == "real" else self.const_int(1, ty)
        elif t.base == "real":
            big = float(np.finfo(np.float32 if t.kind == 4 else np.float64).max)
            init = self.const_float(-big if name == "maxval" else big, ty)
        else:
            init = self.const_int(-(1 << (8 * t.kind - 1)) if name == "maxval"
                                  else (1 << (8 * t.kind - 1)) - 1, ty)

        def combine(acc, x):
            if name == "sum":
                return self.emit((arith.AddfOp if t.base == "real" else arith.AddiOp)(acc, x))
            if name == "product":
                return self.emit((arith.MulfOp if t.base == "real" else arith.MuliOp)(acc, x))
            if t.base == "real":
                pred = "ogt" if name == "maxval" else "olt"
                return self.emit(arith.SelectOp(self.emit(arith.CmpfOp(x, acc, pred)), x, acc))
            return self.emit((arith.MaxSIOp if name == "maxval" else arith.MinSIOp)(acc, x))

        return self.fold_loops(extents, init, lambda ivs, acc: combine(
            acc, self.expr(a, ivs)))

    def dot(self, a: ast.Expr, b: ast.Expr, t: FType) -> SSAValue:
        ty = mlir_type(t)
        init = self.const_float(0.0, ty) if t.base == "real" else self.const_int(0, ty)

        def step(ivs, acc):
            x = self.convert(self.expr(a, ivs), a.type, t)
            y = self.convert(self.expr(b, ivs), b.type, t)
            if t.base == "real":
                return self.emit(arith.AddfOp(acc, self.emit(arith.MulfOp(x, y))))
            return self.emit(arith.AddiOp(acc, self.emit(arith.MuliOp(x, y))))

        return self.fold_loops(self.extents_of(a), init, step)

    def fold_loops(self, extents: list, init: SSAValue, step, ivs=None, dim=None) -> SSAValue:
        """Accumulate `step(ivs, acc)` over all positions, first index fastest."""
        ivs = ivs if ivs is not None else [None] * len(extents)
        dim = len(extents) - 1 if dim is None else dim

        def region(args):
            inner = list(ivs)
            inner[dim] = args[0]
            if dim == 0:
                r = step(inner, args[1])
            else:
                r = self.fold_loops(extents, args[1], step, inner, dim - 1)
            self.emit(scf.YieldOp(r))

        return self.emit(scf.ForOp(self.const_int(0, INDEX), self.index(extents[dim]),
                                   self.const_int(1, INDEX), [init],
                                   self.in_region(region, (INDEX, init.type))))


@dataclass
class _CaseCond:
    """A case selector list standing in for an if condition in IRGen.if_chain."""
    case: ast.Case
    selector: SSAValue
    type: FType


def _mark_line(op: Operation, line: int) -> None:
    """`q35c.source_line` on a statement-level op a statement emitted at the top of its block:
    stores, calls and control flow (ops with regions). Pure ops (arith) stay unmarked, so CSE
    still merges them across statements; `passes.matching.origin_of` gives them the line of
    the next marked op in their block, the statement they belong to. Ops of a nested
    statement were marked by it (in their own blocks)."""
    if "q35c.source_line" not in op.attributes and (
            isinstance(op, (memref.StoreOp, func.CallOp)) or op.regions):
        op.attributes["q35c.source_line"] = IntegerAttr(line, 64)


def generate(checked: CheckedProgram, raise_idioms: bool = True) -> ModuleOp:
    """Lower a checked program; with `raise_idioms`, recognised loop nests become
    quant3p5 ops (raising.py)."""
    return IRGen(checked, raise_idioms).generate()
