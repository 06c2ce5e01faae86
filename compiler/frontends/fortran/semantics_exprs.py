"""Expression typing of the Fortran checker (semantics.py): every expression gets an `FType`;
kind names, operators and designators."""

from __future__ import annotations

import numpy as np

from . import ast
from .semantics_scopes import Scope
from .semantics_types import INT_KINDS, INTEGER, LOGICAL, REAL_KINDS, FType, _huge, _promote


class ExpressionChecker:
    """The Checker's expression typing (a mixin of `Checker`)."""

    def expr(self, expr: ast.Expr, scope: Scope) -> FType:
        t = self._expr(expr, scope)
        expr.type = t
        return t

    def kind_name(self, name: str | None, node, scope: Scope, base: str) -> int:
        if name is None:
            return 4
        if name.isdigit():
            kind = int(name)
        else:
            sym = scope.lookup(name)
            if sym is None or sym.kind != "param" or np.ndim(sym.value):
                raise self.err(node, f"kind '{name}' is not a named integer constant")
            kind = int(sym.value)
        allowed = REAL_KINDS if base == "real" else INT_KINDS
        if kind not in allowed:
            raise self.err(node, f"kind {kind} is not a valid {base} kind")
        return kind

    def _expr(self, expr: ast.Expr, scope: Scope) -> FType:
        if isinstance(expr, ast.IntLit):
            kind = self.kind_name(expr.kind, expr, scope, "integer")
            if expr.value > _huge(kind):  # literals are unsigned: -2147483648 overflows too
                hint = "; use a _8 suffix" if kind < 8 else ""
                raise self.err(expr, f"integer literal {expr.value} is too big for its kind "
                                     f"{kind} (the largest is {_huge(kind)}{hint})")
            return FType("integer", kind)
        if isinstance(expr, ast.RealLit):
            if expr.double:
                if expr.kind:
                    raise self.err(expr, "a 'd' exponent cannot have a kind suffix")
                return FType("real", 8)
            return FType("real", self.kind_name(expr.kind, expr, scope, "real"))
        if isinstance(expr, ast.BozLit):
            return INTEGER if expr.value < (1 << 32) else FType("integer", 8)
        if isinstance(expr, ast.LogicalLit):
            return LOGICAL
        if isinstance(expr, ast.StringLit):
            raise self.err(expr, "character values are not supported")
        if isinstance(expr, ast.UnOp):
            t = self.expr(expr.operand, scope)
            if expr.op == ".not.":
                if t.base != "logical":
                    raise self.err(expr, f".not. needs a logical operand, got {t.base}")
            elif not t.numeric:
                raise self.err(expr, f"unary {expr.op} needs a numeric operand, got {t.base}")
            return t
        if isinstance(expr, ast.BinOp):
            t = self.binop(expr, scope)
            if t.base == "integer" and not t.rank and expr.op in ("+", "-", "*"):
                expr.type = t
                self.fold(expr, scope)  # a constant operation that overflows is an error
            return t
        if isinstance(expr, ast.ArrayCtor):
            if not expr.items:
                raise self.err(expr, "empty array constructors are not supported")
            return self.ctor_items(expr.items, scope, None).with_rank(1)
        if isinstance(expr, ast.ImpliedDo):
            raise self.err(expr, "an implied-do loop is allowed inside an array constructor "
                                 "only")
        if isinstance(expr, (ast.Section, ast.KeywordArg)):
            raise self.err(expr, "a section or keyword argument is not allowed here")
        if isinstance(expr, ast.Designator):
            return self.designator(expr, scope)
        raise self.err(expr, f"unsupported expression {type(expr).__name__}")

    def ctor_items(self, items: list[ast.Expr], scope: Scope, first: FType | None) -> FType:
        """The common scalar type of array constructor items (scalars, rank-1 arrays and
        implied-do loops), which must agree in type and kind (as gfortran requires)."""
        for item in items:
            if isinstance(item, ast.ImpliedDo):
                self.implied_do(item, scope)
                t = first = self.ctor_items(item.items, scope, first)
                item.type = t.with_rank(1)
            else:
                t = self.expr(item, scope)
                if t.rank > 1:
                    raise self.err(item, f"a rank-{t.rank} array inside an array constructor "
                                         "is not supported (only scalars and rank-1 arrays)")
            if first is not None and (t.base, t.kind) != (first.base, first.kind):
                raise self.err(item, f"array constructor items must have the same type and "
                                     f"kind: {first.base}({first.kind}) and {t.base}({t.kind})")
            first = first or t.scalar()
        return first.scalar()

    def implied_do(self, item: ast.ImpliedDo, scope: Scope) -> None:
        part = ast.Part(name=item.var, spelling=item.var_spelling, line=item.line,
                        col=item.col)
        sym = self.resolve(part, scope)
        if sym.kind != "var" or sym.rank or sym.type.base != "integer":
            raise self.err(item, f"the implied-do variable '{item.var_spelling}' must be a "
                                 "scalar integer variable")
        for bound in (item.start, item.stop, item.step):
            if bound is not None:
                t = self.expr(bound, scope)
                if t.base != "integer" or t.rank:
                    raise self.err(bound, f"implied-do bounds must be scalar integers, got {t}")
        if item.step is not None and self.fold(item.step, scope) == 0:
            raise self.err(item.step, "the implied-do step must not be zero")

    def binop(self, expr: ast.BinOp, scope: Scope) -> FType:
        a, b = self.expr(expr.lhs, scope), self.expr(expr.rhs, scope)
        if a.rank and b.rank and a.rank != b.rank:
            raise self.err(expr, f"rank mismatch: operands of '{expr.op}' have ranks "
                                 f"{a.rank} and {b.rank}")
        if a.rank and b.rank:
            self.check_conformable(expr.lhs, expr.rhs, scope)
        rank = max(a.rank, b.rank)
        op = expr.op
        if op in (".and.", ".or.", ".eqv.", ".neqv."):
            if a.base != "logical" or b.base != "logical":
                raise self.err(expr, f"{op} needs logical operands, got {a.base} and {b.base}")
            return LOGICAL.with_rank(rank)
        if not a.numeric or not b.numeric:
            raise self.err(expr, f"'{op}' needs numeric operands, got {a.base} and {b.base}")
        result = _promote(a, b)
        if op in ("==", "/=", "<", "<=", ">", ">="):
            return LOGICAL.with_rank(rank)
        if op == "**":
            if b.base == "integer" and b.rank == 0:
                value = self.fold(expr.rhs, scope)
                if value is None or not 0 <= int(value) <= 16:
                    raise self.err(expr.rhs, "integer exponents must be constants in 0..16")
                return a
            if a.base == "integer":
                raise self.err(expr, "an integer base needs a constant integer exponent")
        return result.with_rank(rank)

    def designator(self, expr: ast.Designator, scope: Scope) -> FType:
        self.flatten(expr, scope)
        part = expr.parts[0]
        sym = self.resolve(part, scope)
        if sym.kind == "derived":
            raise self.err(part, f"'{part.spelling}' is a derived-type value; only its "
                                 "components can be used here")
        if sym.kind == "type":
            raise self.err(part, f"'{part.spelling}' is a type name")
        if sym.kind == "intrinsic":
            return self.intrinsic(expr, part, scope)
        if sym.kind == "proc":
            info = sym.proc
            if info.proc.kind != "function":
                raise self.err(part, f"'{part.spelling}' is a subroutine; use call")
            if part.args is None:
                raise self.err(part, f"function '{part.spelling}' needs an argument list")
            for d in info.args:
                if d.intent in ("out", "inout") or (d.intent is None and not d.value_attr):
                    raise self.err(part, f"calling function '{part.spelling}' with an "
                                         f"intent({d.intent or 'inout'}) argument in an "
                                         "expression is not supported")
            if "elemental" in info.proc.prefixes:
                return self.elemental_call(part, info, scope)
            self.check_actuals(part, info, scope)
            return info.result.type
        t = sym.type
        if part.args is None:
            return t
        if not sym.rank:
            raise self.err(part, f"'{part.spelling}' is a scalar and cannot be subscripted")
        if len(part.args) != sym.rank:
            raise self.err(part, f"rank mismatch: '{sym.spelling}' has rank {sym.rank}, "
                                 f"{len(part.args)} subscript(s) given")
        rank = 0
        for a in part.args:
            if isinstance(a, ast.KeywordArg):
                raise self.err(a, "keyword arguments are not subscripts")
            if isinstance(a, ast.Section):
                rank += 1
                for e in (a.lo, a.hi, a.step):
                    if e is not None:
                        et = self.expr(e, scope)
                        if et.base != "integer" or et.rank:
                            raise self.err(e, "section bounds must be scalar integers")
                a.type = INTEGER
                continue
            at = self.expr(a, scope)
            if at.base != "integer" or at.rank:
                raise self.err(a, f"subscripts must be scalar integers, got {at}")
        return t.scalar().with_rank(rank)
