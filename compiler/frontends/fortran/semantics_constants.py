"""Constant folding of the Fortran checker (semantics.py): `parameter` values, constant integer
expressions and foldable intrinsics, with the kind's wrapping."""

from __future__ import annotations

import numpy as np

from . import ast
from .semantics_scopes import Scope
from .semantics_types import _convert, _huge, _wrap


class ConstantFolder:
    """The Checker's constant folding (a mixin of `Checker`)."""

    def const_int(self, expr: ast.Expr, scope: Scope, what: str) -> int:
        self.expr(expr, scope)
        value = self.fold(expr, scope)
        if value is None or np.ndim(value) or not isinstance(value, (int, np.integer)):
            raise self.err(expr, f"{what} must be a constant integer expression")
        return int(value)

    def fold(self, expr: ast.Expr, scope: Scope):
        """The constant value of a typed expression, or None if it is not constant."""
        if isinstance(expr, ast.IntLit):
            return _wrap(expr.value, expr.type.kind)
        if isinstance(expr, ast.BozLit):
            return _wrap(expr.value, expr.type.kind)
        if isinstance(expr, ast.RealLit):
            return np.float64(expr.text) if expr.type.kind == 8 else np.float32(expr.text)
        if isinstance(expr, ast.LogicalLit):
            return expr.value
        if isinstance(expr, ast.ArrayCtor):
            if any(isinstance(i, ast.ImpliedDo) for i in expr.items):
                return None
            values = [self.fold(i, scope) for i in expr.items]
            if any(v is None for v in values):
                return None
            return _convert(np.concatenate([np.atleast_1d(v) for v in values]), expr.type)
        if isinstance(expr, ast.UnOp):
            v = self.fold(expr.operand, scope)
            if v is None:
                return None
            if expr.op == "-":
                if expr.type.base == "integer" and not np.ndim(v):
                    return self.exact_int(expr, -int(v))
                return _convert(-np.asarray(v), expr.type)[()]
            if expr.op == ".not.":
                return not v
            return v
        if isinstance(expr, ast.BinOp):
            a, b = self.fold(expr.lhs, scope), self.fold(expr.rhs, scope)
            if a is None or b is None or expr.type.rank:
                return None
            if expr.op in ("+", "-", "*", "/") and expr.type.numeric:
                a = _convert(np.asarray(a), expr.type)[()]
                b = _convert(np.asarray(b), expr.type)[()]
                if expr.type.base == "integer" and expr.op != "/":
                    exact = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__}[expr.op]
                    return self.exact_int(expr, exact(int(a), int(b)))
                with np.errstate(all="ignore"):
                    if expr.op == "/" and expr.type.base == "integer":
                        if b == 0:
                            raise self.err(expr, "integer division by zero in a constant")
                        q = abs(int(a)) // abs(int(b))
                        return _wrap(-q if (a < 0) != (b < 0) else q, expr.type.kind)
                    r = {"+": np.add, "-": np.subtract, "*": np.multiply,
                         "/": np.divide}[expr.op](a, b)
                return _convert(np.asarray(r), expr.type)[()]
            return None
        if isinstance(expr, ast.Designator) and len(expr.parts) == 1:
            part = expr.parts[0]
            sym = scope.lookup(part.name)
            if sym is not None and sym.kind == "param" and part.args is None:
                return sym.value
            if sym is None or sym.kind != "var":
                return self.fold_intrinsic(expr, scope)
        return None

    def exact_int(self, expr: ast.Expr, value: int) -> np.integer:
        """The exact result of a constant integer operation, which must fit the
        expression's kind (gfortran: "Arithmetic overflow"), never wrapped."""
        kind = expr.type.kind
        if not -_huge(kind) - 1 <= value <= _huge(kind):
            raise self.err(expr, f"arithmetic overflow in a constant expression: {value} "
                                 f"does not fit integer({kind}) (range {-_huge(kind) - 1} "
                                 f"to {_huge(kind)})")
        return np.dtype(f"int{8 * kind}").type(value)

    def fold_intrinsic(self, expr: ast.Designator, scope: Scope):
        part = expr.parts[0]
        args = part.args or []
        if part.name == "kind" and len(args) == 1:
            return args[0].type.kind
        if part.name == "huge" and len(args) == 1:
            t = args[0].type
            if t.base == "integer":
                return _wrap((1 << (8 * t.kind - 1)) - 1, t.kind)
            return np.finfo(np.float32 if t.kind == 4 else np.float64).max
        if part.name in ("int", "real", "dble") and args:
            v = self.fold(args[0], scope)
            if v is None or np.ndim(v):
                return None
            return _convert(np.asarray(v), expr.type)[()]
        return None
