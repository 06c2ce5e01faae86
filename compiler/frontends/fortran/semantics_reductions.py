"""The reductions' arguments: `dim=` and `mask=` of `sum`, `product`, `maxval`, `minval`, and
the logical reductions `count`, `any`, `all` (checked by semantics_intrinsics.py, lowered by
irgen_intrinsics.py)."""

from __future__ import annotations

from . import ast
from .semantics_scopes import Scope
from .semantics_types import INTEGER, LOGICAL, FType

NUMERIC_REDUCTIONS = {"sum", "product", "maxval", "minval"}
MASK_REDUCTIONS = {"count", "any", "all"}
"""Reductions of a logical array: how many elements are true, whether any or all are."""


def reduction_args(part: ast.Part) -> tuple[ast.Expr | None, ast.Expr | None,
                                            ast.Expr | None, str | None]:
    """(array, dim, mask, problem) of a reduction call: `sum(a, dim, mask)`, `sum(a, mask)`
    (a logical second argument is the mask), keywords `array=`, `dim=`, `mask=`; for
    `count`/`any`/`all`, `(mask, dim)`. `problem` names a bad argument list."""
    logical = part.name in MASK_REDUCTIONS
    names = ["mask", "dim"] if logical else ["array", "dim", "mask"]
    got: dict[str, ast.Expr] = {}
    positional = [a for a in part.args if not isinstance(a, ast.KeywordArg)]
    for i, a in enumerate(positional):
        if i >= len(names):
            return None, None, None, f"{part.name} takes at most {len(names)} arguments"
        name = names[i]
        if not logical and i == 1 and a.type is not None and a.type.base == "logical":
            name = "mask"  # sum(a, mask)
        got[name] = a
    for a in part.args:
        if isinstance(a, ast.KeywordArg):
            if a.name not in names or a.name in got:
                return None, None, None, f"{part.name}: unexpected or repeated argument " \
                                         f"'{a.name}'"
            got[a.name] = a.value
    array = got.get("mask") if logical else got.get("array")
    mask = None if logical else got.get("mask")
    return array, got.get("dim"), mask, None


def check_reduction(chk, part: ast.Part, scope: Scope) -> FType:
    """The type of a reduction call whose arguments the checker has typed."""
    name = part.name
    array, dim, mask, problem = reduction_args(part)
    if problem is not None:
        raise chk.err(part, problem)
    if array is None:
        raise chk.err(part, f"{name} needs an array argument")
    at = array.type
    if name in MASK_REDUCTIONS:
        if at.base != "logical":
            raise chk.err(array, f"the mask of {name} must be logical, got {at.base}")
    elif at.base not in ("integer", "real"):
        raise chk.err(array, f"argument 1 of {name} must be integer or real, got {at.base}")
    if not at.rank:
        raise chk.err(array, f"{name} needs an array argument")
    if mask is not None:
        if mask.type.base != "logical":
            raise chk.err(mask, f"the mask of {name} must be logical, got {mask.type.base}")
        if mask.type.rank not in (0, at.rank):
            raise chk.err(mask, f"the mask of {name} has rank {mask.type.rank}, the array "
                                f"{at.rank}")
        if mask.type.rank:
            chk.check_conformable(array, mask, scope)
    rank = 0
    if dim is not None:
        d = chk.const_int(dim, scope, "dim")
        if not 1 <= d <= at.rank:
            raise chk.err(dim, f"dim={d} is out of range for rank {at.rank}")
        rank = at.rank - 1
    if name == "count":
        return INTEGER.with_rank(rank)
    if name in ("any", "all"):
        return LOGICAL.with_rank(rank)
    return at.scalar().with_rank(rank)
