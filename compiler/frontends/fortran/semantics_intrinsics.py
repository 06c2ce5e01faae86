"""Intrinsic procedures of the Fortran checker (semantics.py): which intrinsics exist and the
type of each call."""

from __future__ import annotations

from . import ast
from .semantics_scopes import Scope
from .semantics_types import INT_KINDS, INTEGER, LOGICAL, REAL_KINDS, FType, _promote

# intrinsic name -> category; types are decided in Checker._intrinsic
ELEMENTAL_INTRINSICS = {"int", "real", "nint", "abs", "min", "max", "mod", "sqrt", "exp", "log",
                        "tanh", "sin", "cos", "iand", "ior", "ieor", "not", "ishft", "ibits",
                        "shiftl", "shiftr", "dble", "merge"}
REDUCTION_INTRINSICS = {"sum", "maxval", "minval", "dot_product", "product"}
INQUIRY_INTRINSICS = {"size", "huge", "kind", "lbound", "ubound", "tiny", "epsilon",
                      "allocated"}
INTRINSICS = ELEMENTAL_INTRINSICS | REDUCTION_INTRINSICS | INQUIRY_INTRINSICS | {"matmul"}
INTRINSIC_SUBROUTINES = {"random_number", "random_seed"}
INTRINSIC_MODULE_FUNCTIONS: dict[str, dict[str, FType]] = {
    # A sequential run's values (one thread, thread 0) and no clock (docs/fortran.md).
    "omp_lib": {"omp_get_thread_num": INTEGER, "omp_get_num_threads": INTEGER,
                "omp_get_max_threads": INTEGER, "omp_get_wtime": FType("real", 8)},
}

class IntrinsicChecker:
    """The Checker's intrinsic calls (a mixin of `Checker`)."""

    def intrinsic(self, expr: ast.Designator, part: ast.Part, scope: Scope) -> FType:
        name = part.name
        pos: list[ast.Expr] = []
        kw: dict[str, ast.Expr] = {}
        for a in part.args:
            if isinstance(a, ast.KeywordArg):
                kw[a.name] = a.value
            else:
                if kw:
                    raise self.err(a, "positional argument after a keyword argument")
                pos.append(a)
        if name not in ("kind",):
            for a in pos:
                self.expr(a, scope)
        else:
            for a in pos:
                self.expr(a, scope)
        for v in kw.values():
            self.expr(v, scope)
        types = [a.type for a in pos]

        def need(n_min, n_max=None):
            n_max = n_min if n_max is None else n_max
            if not n_min <= len(pos) <= n_max:
                raise self.err(part, f"{name} takes {n_min}" +
                               (f" to {n_max}" if n_max != n_min else "") +
                               f" argument(s), {len(pos)} given")

        def kind_arg(index: int, base: str, default: int) -> int:
            e = kw.pop("kind", None)
            if e is None and len(pos) > index:
                e = pos.pop(index)
                types.pop(index)
            if e is None:
                return default
            kind = self.const_int(e, scope, "a kind")
            allowed = REAL_KINDS if base == "real" else INT_KINDS
            if kind not in allowed:
                raise self.err(e, f"kind {kind} is not a valid {base} kind")
            return kind

        def numeric(i, bases=("integer", "real")):
            if types[i].base not in bases:
                raise self.err(pos[i], f"argument {i + 1} of {name} must be "
                                       f"{' or '.join(bases)}, got {types[i].base}")

        if name in ("int", "nint"):
            kind = kind_arg(1, "integer", 4)
            need(1)
            numeric(0, ("real",) if name == "nint" else ("integer", "real"))
            return FType("integer", kind, types[0].rank)
        if name in ("real", "dble"):
            kind = kind_arg(1, "real", 8 if name == "dble" else 4)
            need(1)
            numeric(0)
            return FType("real", kind, types[0].rank)
        if name in ("abs", "sqrt", "exp", "log", "tanh", "sin", "cos"):
            need(1)
            numeric(0, ("integer", "real") if name == "abs" else ("real",))
            return types[0]
        if name in ("min", "max", "mod", "iand", "ior", "ieor", "merge"):
            if name == "merge":
                need(3)
                if types[2].base != "logical":
                    raise self.err(pos[2], "merge's mask must be logical")
                types = types[:2]
            else:
                need(2, 2 if name != "min" and name != "max" else 16)
            for i in range(len(types)):
                numeric(i, ("integer",) if name in ("iand", "ior", "ieor", "mod") else
                        ("integer", "real"))
            first = types[0]
            for i, t in enumerate(types[1:], 1):
                if (t.base, t.kind) != (first.base, first.kind):
                    raise self.err(pos[i], f"arguments of {name} must have the same type and "
                                           f"kind: {first.base}({first.kind}) and "
                                           f"{t.base}({t.kind})")
            rank = max(t.rank for t in types)
            return first.scalar().with_rank(rank)
        if name == "not":
            need(1)
            numeric(0, ("integer",))
            return types[0]
        if name in ("ishft", "shiftl", "shiftr"):
            need(2)
            numeric(0, ("integer",))
            numeric(1, ("integer",))
            return types[0]
        if name == "ibits":
            need(3)
            for i in range(3):
                numeric(i, ("integer",))
            return types[0]
        if name in ("sum", "maxval", "minval", "product", "count", "any", "all"):
            from .semantics_reductions import check_reduction  # dim= and mask=

            return check_reduction(self, part, scope)
        if name == "dot_product":
            need(2)
            numeric(0)
            numeric(1)
            if types[0].rank != 1 or types[1].rank != 1:
                raise self.err(part, "dot_product needs two rank-1 arrays")
            self.check_conformable(pos[0], pos[1], scope)
            return _promote(types[0], types[1]).scalar()
        if name == "matmul":
            need(2)
            numeric(0)
            numeric(1)
            if types[0].rank != 2 or types[1].rank != 2:
                raise self.err(part, "matmul is supported for two rank-2 arrays")
            if (types[0].base, types[0].kind) != (types[1].base, types[1].kind):
                raise self.err(part, "matmul operands must have the same type and kind here")
            return types[0].scalar().with_rank(2)
        if name in ("size", "lbound", "ubound"):
            if "dim" in kw:
                pos.append(kw.pop("dim"))
                types.append(pos[-1].type)
            need(1, 2)
            if not isinstance(pos[0], ast.Designator) or pos[0].parts[0].args is not None \
                    or not types[0].rank:
                raise self.err(pos[0], f"{name} needs a whole array")
            if len(pos) == 2:
                d = self.const_int(pos[1], scope, "dim")
                if not 1 <= d <= types[0].rank:
                    raise self.err(pos[1], f"dim={d} is out of range for rank {types[0].rank}")
            elif name != "size":
                raise self.err(part, f"{name} without dim is not supported")
            return INTEGER
        if name == "allocated":
            need(1)
            target = pos[0]
            if isinstance(target, ast.Designator):
                self.flatten(target, scope)
            sym = scope.lookup(target.name) if isinstance(target, ast.Designator) else None
            if sym is None or not sym.allocatable or target.parts[0].args is not None:
                raise self.err(target, "allocated needs the name of an allocatable array")
            return LOGICAL
        module_function = next((fns[name] for fns in INTRINSIC_MODULE_FUNCTIONS.values()
                                if name in fns), None)
        if module_function is not None:
            need(0)
            if kw:
                raise self.err(part, f"{name} takes no arguments")
            return module_function
        if name in ("huge", "kind", "tiny", "epsilon"):
            need(1)
            if name == "kind":
                return INTEGER
            if name in ("tiny", "epsilon"):
                numeric(0, ("real",))
            return types[0].scalar()
        raise self.err(part, f"intrinsic {name} is not supported")

    def random_subroutine(self, part: ast.Part, scope: Scope) -> None:
        """`call random_number(harvest)` (a real scalar, element or whole array) and `call
        random_seed([size=k | put=seeds | get=seeds])` (integer, seeds a whole rank-1
        default-integer array): q35c's deterministic generator (irgen_random.py)."""
        name = part.name
        args = part.args or []
        keywords = {"harvest"} if name == "random_number" else {"size", "put", "get"}
        given: dict[str, ast.Expr] = {}
        for i, a in enumerate(args):
            key = a.name if isinstance(a, ast.KeywordArg) else (
                "harvest" if name == "random_number" else "size")
            if isinstance(a, ast.KeywordArg) and a.name not in keywords:
                raise self.err(a, f"{name} has no argument '{a.name}' (it takes "
                                  f"{', '.join(sorted(keywords))})")
            if not isinstance(a, ast.KeywordArg) and i:
                raise self.err(a, f"{name} takes one argument here")
            if isinstance(a, ast.Section):
                raise self.err(a, f"sections are not supported as arguments of {name}")
            if key in given:
                raise self.err(a, f"argument '{key}' of {name} is given twice")
            given[key] = a.value if isinstance(a, ast.KeywordArg) else a
        if name == "random_number" and not given:
            raise self.err(part, "random_number needs its argument 'harvest'")
        if len(given) > 1:
            raise self.err(part, f"{name} takes at most one argument")
        for key, value in given.items():
            t = self.expr(value, scope)
            if not isinstance(value, ast.Designator):
                raise self.err(value, f"argument '{key}' of {name} must be a variable")
            whole = value.parts[0].args is None
            if key == "harvest":
                if t.base != "real" or (t.rank and not whole):
                    raise self.err(value, "random_number needs a real variable, element or "
                                          "whole array")
            elif key == "size" and (t.base != "integer" or t.rank):
                raise self.err(value, "random_seed's size must be an integer scalar variable")
            elif key in ("put", "get") and (t != INTEGER.with_rank(1) or not whole):
                raise self.err(value, f"random_seed's {key} must be a whole rank-1 default "
                                      f"integer array, got {t.base}({t.kind}) of rank {t.rank}")
            if key != "put":
                self.variable(value, scope, writing=True)


REDUCTION_INTRINSICS |= {"count", "any", "all"}  # semantics_reductions.MASK_REDUCTIONS
INTRINSICS |= {"count", "any", "all"}
