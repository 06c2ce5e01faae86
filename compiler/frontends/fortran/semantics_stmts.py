"""Statement checks of the Fortran checker (semantics.py): assignments and their shapes,
variables, calls and actual arguments, `if`, loops and their jumps, `select case`,
allocation."""

from __future__ import annotations

from . import ast
from .semantics_intrinsics import ELEMENTAL_INTRINSICS, INTRINSIC_SUBROUTINES, INTRINSICS
from .semantics_scopes import ProcInfo, Scope, Symbol, _spelling
from .semantics_types import FType, _assignable, _fmt_shape


class StatementChecker:
    """The Checker's executable statements (a mixin of `Checker`)."""

    def exec_part(self, info: ProcInfo) -> None:
        self.current = info
        self.loops: list[ast.Stmt] = []
        for stmt in info.proc.body:
            if not isinstance(stmt, (ast.Decl, ast.Use, ast.ImplicitNone, ast.Access)):
                self.stmt(stmt, info.scope)

    def stmts(self, body: list[ast.Stmt], scope: Scope) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.Decl, ast.Use, ast.ImplicitNone, ast.Access, ast.TypeDef)):
                raise self.err(stmt, "declaration inside an executable construct")
            self.stmt(stmt, scope)

    def stmt(self, stmt: ast.Stmt, scope: Scope) -> None:
        method = getattr(self, "stmt_" + type(stmt).__name__.lower())
        method(stmt, scope)

    def stmt_assign(self, stmt: ast.Assign, scope: Scope) -> None:
        target = stmt.target
        sym = self.variable(target, scope, writing=True)
        lt = self.expr(target, scope)
        rt = self.expr(stmt.value, scope)
        if not _assignable(lt, rt):
            raise self.err(stmt.value, f"cannot assign {rt.base}({rt.kind}) to "
                                       f"'{sym.spelling}' of type {lt.base}({lt.kind})")
        if rt.rank and rt.rank != lt.rank:
            raise self.err(stmt.value, f"rank mismatch in assignment: '{sym.spelling}' "
                                       f"{'element' if not lt.rank else 'section'} has rank "
                                       f"{lt.rank}, the value has rank {rt.rank}")
        self.check_conformable(target, stmt.value, scope)

    def check_conformable(self, a: ast.Expr, b: ast.Expr, scope: Scope) -> None:
        sa, sb = self.static_shape(a, scope), self.static_shape(b, scope)
        if sa and sb and len(sa) == len(sb) and any(
                x is not None and y is not None and x != y for x, y in zip(sa, sb)):
            raise self.err(b, f"shape mismatch: {_fmt_shape(sa)} and {_fmt_shape(sb)}")

    def static_shape(self, expr: ast.Expr, scope: Scope) -> list[int | None] | None:
        """Extents known at compile time (None where not), for rank > 0 expressions."""
        if expr.type is None or not expr.type.rank:
            return None
        if isinstance(expr, ast.Designator) and len(expr.parts) == 1:
            sym = scope.lookup(expr.name)
            if sym is None or sym.kind == "proc":
                return self.call_shape(expr, scope)
            if not sym.dims:
                return None
            part = expr.parts[0]
            extents = []
            for i, d in enumerate(sym.dims):
                full = self.static_extent(d, scope)
                if part.args is None:
                    extents.append(full)
                    continue
                a = part.args[i]
                if not isinstance(a, ast.Section):
                    continue
                lo = self.fold(a.lo, scope) if a.lo is not None else (
                    self.fold(d.lower, scope) if d.lower is not None else 1)
                hi = self.fold(a.hi, scope) if a.hi is not None else (
                    self.fold(d.upper, scope) if d.upper is not None else None)
                st = self.fold(a.step, scope) if a.step is not None else 1
                if lo is None or hi is None or st is None or st == 0:
                    extents.append(None)
                else:
                    extents.append(max(0, (int(hi) - int(lo) + int(st)) // int(st)))
            return extents
        if isinstance(expr, ast.BinOp):
            return self.static_shape(expr.lhs, scope) or self.static_shape(expr.rhs, scope)
        if isinstance(expr, ast.UnOp):
            return self.static_shape(expr.operand, scope)
        if isinstance(expr, ast.ArrayCtor):
            n = self.static_length(expr.items, scope)
            return [n] if n is not None else None
        if isinstance(expr, ast.Designator) and len(expr.parts) == 1:
            return self.call_shape(expr, scope)
        return None

    def call_shape(self, expr: ast.Designator, scope: Scope) -> list[int | None] | None:
        """The static shape of an elemental or array-valued function call."""
        sym = scope.lookup(expr.name)
        if sym is not None and sym.kind == "proc" and \
                "elemental" not in sym.proc.proc.prefixes:
            result = sym.proc.result
            return [self.static_extent(d, sym.proc.scope) for d in result.dims]
        if sym is None and expr.name not in ELEMENTAL_INTRINSICS:
            return None
        for a in expr.parts[0].args or []:
            a = a.value if isinstance(a, ast.KeywordArg) else a
            if a.type is not None and a.type.rank:
                return self.static_shape(a, scope)
        return None

    def static_length(self, items: list[ast.Expr], scope: Scope) -> int | None:
        """The number of elements of array constructor items, if constant."""
        total = 0
        for item in items:
            if isinstance(item, ast.ImpliedDo):
                lo, hi = self.fold(item.start, scope), self.fold(item.stop, scope)
                st = self.fold(item.step, scope) if item.step is not None else 1
                inner = self.static_length(item.items, scope)
                if lo is None or hi is None or st is None or inner is None:
                    return None
                total += max(0, (int(hi) - int(lo) + int(st)) // int(st)) * inner
            elif item.type.rank:
                shape = self.static_shape(item, scope)
                if not shape or shape[0] is None:
                    return None
                total += shape[0]
            else:
                total += 1
        return total

    def static_extent(self, d: ast.Dim, scope: Scope) -> int | None:
        if d.upper is None:
            return None
        hi = self.fold(d.upper, scope)
        lo = self.fold(d.lower, scope) if d.lower is not None else 1
        if hi is None or lo is None:
            return None
        return max(0, int(hi) - int(lo) + 1)

    def variable(self, target: ast.Designator, scope: Scope, writing: bool) -> Symbol:
        self.flatten(target, scope)
        part = target.parts[0]
        sym = self.resolve(part, scope)
        if sym.kind == "param":
            raise self.err(target, f"cannot assign to the constant '{sym.spelling}'")
        if sym.kind in ("derived", "type", "intrinsic"):
            raise self.err(target, f"cannot assign to '{part.spelling}' as a whole")
        if sym.kind == "proc":
            info = sym.proc
            if info is self.current and info.result is not None and \
                    info.result.name == sym.name:
                return info.result
            raise self.err(target, f"cannot assign to the procedure '{sym.spelling}'")
        if writing and sym.intent == "in":
            raise self.err(target, f"cannot assign to '{sym.spelling}': it is intent(in)")
        if writing and any(_loop_vars(loop) & {sym.name} for loop in self.loops):
            raise self.err(target, f"cannot assign to '{sym.spelling}': it is the index of an "
                                   "enclosing do loop")
        return sym

    def resolve(self, part: ast.Part, scope: Scope) -> Symbol:
        sym = scope.lookup(part.name)
        if sym is not None and sym.kind == "proc" and self.current is not None and \
                sym.proc is self.current and self.current.result is not None:
            return self.current.result if self.current.result.name == part.name else sym
        if sym is None or (sym.kind == "var" and not sym.declared):
            if sym is None and part.name in INTRINSICS and part.args is not None:
                return Symbol(part.name, part.spelling, part.line, part.col, kind="intrinsic")
            if scope.strict() or sym is not None and sym.is_arg and scope.strict():
                raise self.err(part, f"'{part.spelling}' is not declared (implicit none is "
                                     "in effect)")
            if sym is None:
                sym = Symbol(part.name, part.spelling, part.line, part.col,
                             type=self.implicit_type(part.name), declared=True)
                scope.symbols[part.name] = sym
            else:
                sym.type = self.implicit_type(part.name)
                sym.declared = True
        return sym

    def stmt_call(self, stmt: ast.Call, scope: Scope) -> None:
        part = stmt.callee.parts[0]
        sym = scope.lookup(part.name)
        if sym is None and part.name in INTRINSIC_SUBROUTINES:
            self.random_subroutine(part, scope)
            return
        if sym is None or sym.kind != "proc":
            raise self.err(stmt.callee, f"'{part.spelling}' is not a known subroutine")
        if sym.proc.proc.kind != "subroutine":
            raise self.err(stmt.callee, f"'{part.spelling}' is a function, not a subroutine")
        self.check_actuals(part, sym.proc, scope)

    def check_actuals(self, part: ast.Part, info: ProcInfo, scope: Scope) -> None:
        args = part.args or []
        if info.bound:
            raise self.err(part, f"'{part.spelling}' is called here, but --bind made its "
                                 f"argument '{info.bound[0]}' a constant: bind the arguments "
                                 "of a procedure that no other procedure calls")
        if not part.expanded:
            if len(args) != len(info.proc.args):
                raise self.err(part, f"'{part.spelling}' takes {len(info.proc.args)} "
                                     f"argument(s), {len(args)} given")
            args = part.args = self.expand_derived_actuals(part, info, scope)
            part.expanded = True
        for actual, dummy in zip(args, info.args):
            if isinstance(actual, (ast.KeywordArg, ast.Section)):
                raise self.err(actual, "keyword arguments and sections are not supported in "
                                       "calls")
            t = self.expr(actual, scope)
            if dummy.type is None:
                continue
            if t.base != dummy.type.base or t.kind != dummy.type.kind:
                raise self.err(actual, f"argument '{dummy.spelling}' of '{part.spelling}' is "
                                       f"{dummy.type.base}({dummy.type.kind}), got "
                                       f"{t.base}({t.kind})")
            if t.rank != dummy.type.rank:
                raise self.err(actual, f"argument '{dummy.spelling}' of '{part.spelling}' has "
                                       f"rank {dummy.type.rank}, got rank {t.rank}")
            writes = dummy.intent in ("out", "inout") or (dummy.intent is None and
                                                          not dummy.value_attr)
            if writes and not (isinstance(actual, ast.Designator) and
                               all(not isinstance(a, ast.Section)
                                   for a in actual.parts[0].args or [])):
                raise self.err(actual, f"argument '{dummy.spelling}' of '{part.spelling}' is "
                                       f"intent({dummy.intent or 'inout'}) and needs a variable")
            if writes and t.rank == 0 and actual.parts[0].args:
                raise self.err(actual, "passing an array element to an intent(out/inout) "
                                       "argument is not supported")
            if writes:
                self.variable(actual, scope, writing=True)
            if t.rank and (not isinstance(actual, ast.Designator) or actual.parts[0].args):
                raise self.err(actual, "array arguments must be whole arrays")

    def expand_derived_actuals(self, part: ast.Part, info: ProcInfo, scope: Scope
                               ) -> list[ast.Expr]:
        """The actuals of `part` with each derived-type actual `q` (for a derived-type
        dummy) replaced by its components `q%c1, q%c2, ...`: the dummy is flattened into
        one argument per component, so the actual is too. An allocatable component goes
        as the array it is, and must be allocated at the call (the callee receives it
        allocated)."""
        out: list[ast.Expr] = []
        for actual, (name, spelling, *_) in zip(part.args or [], info.proc.args):
            dummy = info.scope.symbols[name]
            if dummy.kind != "derived":
                out.append(actual)
                continue
            sym = None
            if isinstance(actual, ast.Designator) and len(actual.parts) == 1 \
                    and actual.parts[0].args is None:
                sym = scope.lookup(actual.name)
            if sym is None or sym.kind != "derived":
                raise self.err(actual, f"argument '{spelling}' of '{part.spelling}' is "
                                       f"type({dummy.derived.spelling}) and needs a variable "
                                       "of that type")
            if sym.derived is not dummy.derived:
                raise self.err(actual, f"argument '{spelling}' of '{part.spelling}' is "
                                       f"type({dummy.derived.spelling}), got "
                                       f"type({sym.derived.spelling})")
            base = actual.parts[0]
            out += [ast.Designator(parts=[ast.Part(
                        name=f"{base.name}%{c.name}", spelling=f"{base.spelling}%{c.spelling}",
                        line=base.line, col=base.col)], line=actual.line, col=actual.col)
                    for c in dummy.derived.components]
        return out

    def elemental_call(self, part: ast.Part, info: ProcInfo, scope: Scope) -> FType:
        """An elemental function applied to scalars and conformable arrays (scalars are
        broadcast): the result has the shape of the array arguments."""
        args = part.args or []
        if info.bound:
            raise self.err(part, f"'{part.spelling}' is called here, but --bind made its "
                                 f"argument '{info.bound[0]}' a constant")
        if len(args) != len(info.proc.args):
            raise self.err(part, f"'{part.spelling}' takes {len(info.proc.args)} argument(s), "
                                 f"{len(args)} given")
        shaped = None
        for actual, dummy in zip(args, info.args):
            if isinstance(actual, (ast.KeywordArg, ast.Section)):
                raise self.err(actual, "keyword arguments and sections are not supported in "
                                       "calls")
            t = self.expr(actual, scope)
            if dummy.rank:
                raise self.err(actual, f"argument '{dummy.spelling}' of elemental "
                                       f"'{part.spelling}' must be a scalar dummy")
            if t.base != dummy.type.base or t.kind != dummy.type.kind:
                raise self.err(actual, f"argument '{dummy.spelling}' of '{part.spelling}' is "
                                       f"{dummy.type.base}({dummy.type.kind}), got "
                                       f"{t.base}({t.kind})")
            if not t.rank:
                continue
            if shaped is None:
                shaped = actual
            elif t.rank != shaped.type.rank:
                raise self.err(actual, f"arguments of elemental '{part.spelling}' are not "
                                       f"conformable: rank {shaped.type.rank} and rank {t.rank}")
            else:
                self.check_conformable(shaped, actual, scope)
        return info.result.type.with_rank(shaped.type.rank if shaped is not None else 0)

    def stmt_if(self, stmt: ast.If, scope: Scope) -> None:
        for cond, body in stmt.branches:
            self.logical_scalar(cond, scope, "an if condition")
            self.stmts(body, scope)
        if stmt.orelse:
            self.stmts(stmt.orelse, scope)

    def logical_scalar(self, expr: ast.Expr, scope: Scope, what: str) -> None:
        t = self.expr(expr, scope)
        if t.base != "logical" or t.rank:
            raise self.err(expr, f"{what} must be a scalar logical, got {t}")

    def loop_var(self, name: str, line: int, col: int, scope: Scope) -> Symbol:
        part = ast.Part(name=name, spelling=_spelling(self.diags, line, col, name),
                        line=line, col=col)
        sym = self.resolve(part, scope)
        if sym.is_arg:
            clash = (f": '{part.spelling}' and '{sym.spelling}' are the same name "
                     "(Fortran names are case-insensitive)" if part.spelling != sym.spelling
                     else "")
            raise self.diags.error(line, col, f"loop index '{part.spelling}' is the dummy "
                                              f"argument '{sym.spelling}'{clash}")
        if sym.kind != "var" or sym.type.base != "integer" or sym.rank:
            raise self.diags.error(line, col, f"loop index '{part.spelling}' must be a scalar "
                                              "integer variable")
        for loop in self.loops:
            if getattr(loop, "var", None) == name:
                raise self.diags.error(line, col, f"loop index '{part.spelling}' is already the "
                                                  "index of an enclosing loop")
        return sym

    def stmt_do(self, stmt: ast.Do, scope: Scope) -> None:
        if stmt.var is not None:
            self.loop_var(stmt.var, stmt.var_line, stmt.var_col, scope)
            for e in (stmt.start, stmt.stop, stmt.step):
                if e is None:
                    continue
                t = self.expr(e, scope)
                if t.base != "integer" or t.rank:
                    raise self.err(e, "loop bounds must be scalar integers")
            if stmt.step is not None and self.fold(stmt.step, scope) == 0:
                raise self.err(stmt.step, "the loop step must not be zero")
        self.loop_body(stmt, scope)

    def loop_body(self, stmt, scope: Scope) -> None:
        if stmt.label and any(getattr(loop, "label", None) == stmt.label for loop in self.loops):
            raise self.err(stmt, f"loop label '{stmt.label}' is already in use")
        self.loops.append(stmt)
        try:
            self.stmts(stmt.body, scope)
        finally:
            self.loops.pop()

    def stmt_dowhile(self, stmt: ast.DoWhile, scope: Scope) -> None:
        self.logical_scalar(stmt.cond, scope, "a do while condition")
        self.loop_body(stmt, scope)

    def stmt_doconcurrent(self, stmt: ast.DoConcurrent, scope: Scope) -> None:
        for name, lo, hi, step in stmt.specs:
            self.loop_var(name, stmt.line, stmt.col, scope)
            for e in (lo, hi, step):
                if e is not None:
                    t = self.expr(e, scope)
                    if t.base != "integer" or t.rank:
                        raise self.err(e, "loop bounds must be scalar integers")
        for inner in _walk(stmt.body):
            if isinstance(inner, (ast.Exit, ast.Return)):
                raise self.err(inner, "exit and return are not allowed in do concurrent")
        self.loop_body(stmt, scope)

    def stmt_select(self, stmt: ast.Select, scope: Scope) -> None:
        t = self.expr(stmt.expr, scope)
        if t.base not in ("integer", "logical") or t.rank:
            raise self.err(stmt.expr, "select case needs a scalar integer or logical")
        defaults = [c for c in stmt.cases if c.selectors is None]
        if len(defaults) > 1:
            raise self.err(defaults[1], "more than one case default")
        for case in stmt.cases:
            for sel in case.selectors or []:
                for e in ([sel.lo, sel.hi] if isinstance(sel, ast.Section) else [sel]):
                    if e is None:
                        continue
                    self.expr(e, scope)
                    if self.fold(e, scope) is None:
                        raise self.err(e, "case values must be constants")
                    if e.type.base != t.base:
                        raise self.err(e, f"case value is {e.type.base}, the selector is "
                                          f"{t.base}")
            self.stmts(case.body, scope)

    def target_loop(self, stmt, what: str):
        if not self.loops:
            raise self.err(stmt, f"'{what}' outside a loop")
        if stmt.label is None:
            return self.loops[-1]
        for loop in reversed(self.loops):
            if getattr(loop, "label", None) == stmt.label:
                return loop
        raise self.err(stmt, f"no enclosing loop is labelled '{stmt.label}'")

    def stmt_exit(self, stmt: ast.Exit, scope: Scope) -> None:
        self.target_loop(stmt, "exit")

    def stmt_cycle(self, stmt: ast.Cycle, scope: Scope) -> None:
        self.target_loop(stmt, "cycle")

    def stmt_return(self, stmt, scope) -> None:
        pass

    def stmt_continue(self, stmt, scope) -> None:
        pass

    def stmt_allocate(self, stmt: ast.Allocate, scope: Scope) -> None:
        for item in stmt.items:
            self.flatten(item, scope)
            sym = self.resolve(item.parts[0], scope)
            if not sym.allocatable:
                raise self.err(item, f"'{sym.spelling}' is not allocatable")
            self.check_not_dummy(item, sym, "allocate")
            args = item.parts[0].args or []
            if len(args) != sym.rank:
                raise self.err(item, f"allocate of '{sym.spelling}' needs {sym.rank} extents")
            for a in args:
                if isinstance(a, ast.KeywordArg):
                    raise self.err(a, "allocate options are not supported")
                for e in ([a.lo, a.hi] if isinstance(a, ast.Section) else [a]):
                    if e is not None:
                        t = self.expr(e, scope)
                        if t.base != "integer" or t.rank:
                            raise self.err(e, "allocate bounds must be scalar integers")

    def stmt_deallocate(self, stmt: ast.Deallocate, scope: Scope) -> None:
        for item in stmt.items:
            self.flatten(item, scope)
            sym = self.resolve(item.parts[0], scope)
            if not sym.allocatable or item.parts[0].args is not None:
                raise self.err(item, f"'{sym.spelling}' is not an allocatable array name")
            self.check_not_dummy(item, sym, "deallocate")

    def check_not_dummy(self, item: ast.Designator, sym, verb: str) -> None:
        """An allocatable dummy (or component of a derived dummy) arrives allocated, as an
        array argument with its run-time shape; re-allocating it would not reach the
        caller, so it is refused."""
        if sym.is_arg:
            raise self.err(item, f"{verb} of the dummy argument '{sym.spelling}' is not "
                                 "supported (allocatable dummies and allocatable components "
                                 "of derived-type dummies are passed allocated)")


def _walk(body):
    for stmt in body:
        yield stmt
        for attr in ("body", "orelse"):
            child = getattr(stmt, attr, None)
            if isinstance(child, list):
                yield from _walk(child)
        if isinstance(stmt, ast.If):
            for _, b in stmt.branches:
                yield from _walk(b)
        if isinstance(stmt, ast.Select):
            for c in stmt.cases:
                yield from _walk(c.body)


def _loop_vars(loop) -> set[str]:
    if isinstance(loop, ast.Do) and loop.var is not None:
        return {loop.var}
    if isinstance(loop, ast.DoConcurrent):
        return {name for name, *_ in loop.specs}
    return set()
