"""Array temporaries of the IR generator (irgen.py): array constructors (with implied-do
loops and rank-1 array items) and calls of array-valued functions inside expressions are
evaluated into a temporary (`memref.alloc`) before the statement that uses them, as Fortran
evaluates an expression before it is used, and freed after it. Elemental functions applied
to arrays need no temporary: they are called element by element (irgen_stmts.call)."""

from __future__ import annotations

from collections.abc import Iterator

from xdsl.dialects import arith, func, memref, scf
from xdsl.dialects.builtin import MemRefType
from xdsl.ir import SSAValue

from . import ast
from .irgen_common import DYN, INDEX, Var, mlir_type
from .semantics import FType, ProcInfo


class ArrayGen:
    """IRGen's array temporaries (a mixin of `IRGen`); `self.temps` maps id(expression) to
    the temporary holding its value, which `IRGen.expr` and `extents_of` read."""

    def hoist(self, stmt: ast.Stmt) -> list[SSAValue]:
        """Evaluate the array constructors and array-valued calls of `stmt`'s own
        expressions (not of the statements it contains) into temporaries; returns them,
        for `free` after the statement."""
        made: list[SSAValue] = []
        for e in self.header_exprs(stmt):
            self.hoist_expr(e, made)
        return made

    def header_exprs(self, stmt: ast.Stmt) -> list[ast.Expr]:
        if isinstance(stmt, ast.Assign):
            v = stmt.value
            if isinstance(v, ast.ArrayCtor) and stmt.target.type.rank and \
                    all(not i.type.rank for i in v.items):
                return list(v.items)  # stored element by element (store_ctor)
            return [v]
        if isinstance(stmt, ast.Call):
            return list(stmt.callee.parts[0].args or [])
        if isinstance(stmt, ast.If):
            return [cond for cond, _ in stmt.branches]
        if isinstance(stmt, ast.Do):
            return [e for e in (stmt.start, stmt.stop, stmt.step) if e is not None]
        if isinstance(stmt, ast.Select):
            return [stmt.expr]
        if isinstance(stmt, ast.DoConcurrent):
            return [e for spec in stmt.specs for e in spec[1:] if e is not None]
        if isinstance(stmt, ast.DoWhile):
            for e in _walk(stmt.cond):
                if isinstance(e, ast.ArrayCtor) or self.is_array_call(e):
                    raise self.err(e, "array constructors and array-valued function calls "
                                      "are not supported in a do while condition")
        return []

    def hoist_expr(self, e: ast.Expr, made: list[SSAValue]) -> None:
        if isinstance(e, ast.ImpliedDo):
            return  # its items are evaluated for each value of its variable (fill)
        for child in _children(e):
            self.hoist_expr(child, made)
        if isinstance(e, ast.ArrayCtor):
            var = self.materialize_ctor(e)
        elif self.is_array_call(e):
            var = self.materialize_call(e)
        else:
            return
        self.temps[id(e)] = var
        made.append(var.value)

    def free(self, made: list[SSAValue]) -> None:
        for tmp in made:
            self.emit(memref.DeallocOp.get(tmp))
        for key in [k for k, v in self.temps.items() if v.value in made]:
            del self.temps[key]

    def is_array_call(self, e: ast.Expr) -> bool:
        """A call of a user function whose result is an array (not an elemental call)."""
        if not isinstance(e, ast.Designator) or e.parts[0].args is None:
            return False
        sym = self.scope.lookup(e.name)
        return sym is not None and sym.kind == "proc" and sym.proc.result is not None and \
            bool(sym.proc.result.rank) and not (self.info.result is not None and
                                                e.name == self.info.result.name)

    def load_temp(self, e: ast.Expr, ivs: list | None) -> SSAValue:
        return self.emit(memref.LoadOp.get(self.temps[id(e)].value, ivs or []))

    # -- array constructors ----------------------------------------------------------------

    def materialize_ctor(self, e: ast.ArrayCtor) -> Var:
        n = self.ctor_length(e.items)
        et = e.type
        tmp = self.emit(memref.AllocOp.get(mlir_type(et), shape=[DYN], dynamic_sizes=[n]))
        self.fill(e.items, tmp, self.const_int(0, INDEX), et)
        return Var(None, "array", tmp, [1], [n])

    def ctor_length(self, items: list[ast.Expr]) -> SSAValue:
        """The number of elements of constructor items (an index value)."""
        total = self.const_int(0, INDEX)
        for item in items:
            if isinstance(item, ast.ImpliedDo):
                if self.shape_reads(item.items, item.var):
                    raise self.err(item, "an implied-do loop whose inner extents depend on "
                                         f"'{item.var_spelling}' is not supported")
                _, _, trip = self.implied_bounds(item)
                n = self.emit(arith.MuliOp(trip, self.ctor_length(item.items)))
            elif item.type.rank:
                n = self.index(self.extents_of(item)[0])
            else:
                n = self.const_int(1, INDEX)
            total = self.emit(arith.AddiOp(total, n))
        return total

    def shape_reads(self, items: list[ast.Expr], name: str) -> bool:
        """Whether the number of elements of `items` may depend on variable `name`."""
        for item in items:
            if isinstance(item, ast.ImpliedDo):
                bounds = [b for b in (item.start, item.stop, item.step) if b is not None]
                if any(self.reads(b, name) for b in bounds) or \
                        self.shape_reads(item.items, name):
                    return True
            elif item.type.rank and any(self.reads(s, name) for s in _walk(item)
                                        if isinstance(s, ast.Section)):
                return True
        return False

    def implied_bounds(self, item: ast.ImpliedDo) -> tuple[SSAValue, SSAValue, SSAValue]:
        """start, step and trip count max((stop - start + step) / step, 0), as index values."""
        start = self.index(self.expr(item.start))
        stop = self.index(self.expr(item.stop))
        step = self.index(self.expr(item.step)) if item.step is not None else \
            self.const_int(1, INDEX)
        span = self.emit(arith.AddiOp(self.emit(arith.SubiOp(stop, start)), step))
        trip = self.emit(arith.MaxSIOp(self.emit(arith.DivSIOp(span, step)),
                                       self.const_int(0, INDEX)))
        return start, step, trip

    def fill(self, items: list[ast.Expr], tmp: SSAValue, pos: SSAValue, et: FType
             ) -> SSAValue:
        """Store the elements of `items` into `tmp` from `pos`; returns the next position."""
        one = self.const_int(1, INDEX)
        for item in items:
            if isinstance(item, ast.ImpliedDo):
                pos = self.fill_implied(item, tmp, pos, et)
            elif item.type.rank:
                ext = self.index(self.extents_of(item)[0])
                self.loop_nest([ext], lambda ivs, item=item, pos=pos: self.emit(
                    memref.StoreOp.get(self.convert(self.expr(item, ivs), item.type, et), tmp,
                                       [self.emit(arith.AddiOp(pos, ivs[0]))])))
                pos = self.emit(arith.AddiOp(pos, ext))
            else:
                v = self.convert(self.expr(item), item.type, et)
                self.emit(memref.StoreOp.get(v, tmp, [pos]))
                pos = self.emit(arith.AddiOp(pos, one))
        return pos

    def fill_implied(self, item: ast.ImpliedDo, tmp: SSAValue, pos: SSAValue, et: FType
                     ) -> SSAValue:
        start, step, trip = self.implied_bounds(item)
        inner = self.ctor_length(item.items)
        sym = self.scope.lookup(item.var)

        def body(args):
            k = args[0]
            value = self.emit(arith.AddiOp(start, self.emit(arith.MuliOp(k, step))))
            saved = self.vars.get(item.var)
            self.vars[item.var] = Var(sym, "value", self.emit(arith.IndexCastOp(
                value, mlir_type(sym.type))))
            made: list[SSAValue] = []
            for sub in item.items:
                self.hoist_expr(sub, made)
            self.fill(item.items, tmp, self.emit(arith.AddiOp(
                pos, self.emit(arith.MuliOp(k, inner)))), et)
            self.free(made)
            if saved is None:
                del self.vars[item.var]
            else:
                self.vars[item.var] = saved
            self.emit(scf.YieldOp())

        self.emit(scf.ForOp(self.const_int(0, INDEX), trip, self.const_int(1, INDEX), [],
                            self.in_region(body, (INDEX,))))
        return self.emit(arith.AddiOp(pos, self.emit(arith.MuliOp(trip, inner))))

    # -- array-valued functions ------------------------------------------------------------

    def materialize_call(self, d: ast.Designator) -> Var:
        """Call an array-valued function with a new temporary as its result argument (the
        last argument of its func), shaped by the result's declared bounds evaluated on
        the actual arguments."""
        info = self.scope.lookup(d.name).proc
        fn = self.funcs[info.proc.name]
        operands = self.call_operands(d, info, fn, None)
        extents = self.callee_extents(info, d.parts[0].args, operands)
        want = fn.function_type.inputs.data[-1]
        dyn = [self.index(e) for e, s in zip(extents, want.get_shape()) if s == DYN]
        tmp = self.emit(memref.AllocOp.get(want.element_type, shape=want.get_shape(),
                                           dynamic_sizes=dyn))
        self.emit(func.CallOp(info.proc.name, [*operands, tmp], []))
        return Var(info.result, "array", tmp, [1] * len(extents), extents)

    def callee_extents(self, info: ProcInfo, actuals: list[ast.Expr],
                       operands: list[SSAValue]) -> list:
        """The result extents of `info`'s function, its bounds evaluated in its own scope
        with each dummy argument bound to the actual one."""
        bound: dict[str, Var] = {}
        for sym, actual, v in zip(info.args, actuals, operands):
            if sym.rank:
                caller = self.var(actual)
                bound[sym.name] = Var(sym, "array", v, [1] * sym.rank, list(caller.extents))
            else:
                bound[sym.name] = Var(sym, "scalar" if isinstance(v.type, MemRefType)
                                      else "value", v)
        saved = (self.scope, self.info, self.vars)
        self.scope, self.info, self.vars = info.scope, info, bound
        try:
            _, extents = self.bounds(info.result, None)
        finally:
            self.scope, self.info, self.vars = saved
        return extents


def _children(e: ast.Expr) -> Iterator[ast.Expr]:
    if isinstance(e, ast.Designator):
        for part in e.parts:
            yield from part.args or []
    elif isinstance(e, ast.BinOp):
        yield e.lhs
        yield e.rhs
    elif isinstance(e, ast.UnOp):
        yield e.operand
    elif isinstance(e, ast.KeywordArg):
        yield e.value
    elif isinstance(e, ast.Section):
        yield from (x for x in (e.lo, e.hi, e.step) if x is not None)
    elif isinstance(e, ast.ArrayCtor):
        yield from e.items
    elif isinstance(e, ast.ImpliedDo):
        yield from e.items
        yield from (x for x in (e.start, e.stop, e.step) if x is not None)


def _walk(e: ast.Expr) -> Iterator[ast.Expr]:
    yield e
    for child in _children(e):
        yield from _walk(child)
