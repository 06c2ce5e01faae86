"""`fuse-gelu`: recognize GELU written out with `erf` as one `q35nn.gelu`.

Exporters write GELU as `x * 0.5 * (1 + erf(x / sqrt(2)))`, with the three factors in any
order and `x / sqrt(2)` also as `x * (1 / sqrt(2))`. The product of those factors becomes
`q35nn.gelu(x) {approximate = "none"}`, which `fuse-matmul-bias-act` can then fold into the
producing matmul. `q35nn.gelu` computes in float64 and rounds once, so the result differs
from the decomposed float32 chain by float32 round-off only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import arith, math as xmath
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from q35c.dialects import q35nn
from q35c.passes.matching import erase_dead_ops, operands_matching, owner, scalar_of

_SQRT2 = math.sqrt(2.0)


def _factors(value: SSAValue, root: bool = True) -> list[SSAValue]:
    """The leaves of a tree of `mulf`s (inner products must have no other use)."""
    mul = owner(value, arith.MulfOp)
    if mul is None or (not root and not value.has_one_use()):
        return [value]
    return _factors(mul.lhs, False) + _factors(mul.rhs, False)


def _erf_argument(value: SSAValue) -> SSAValue | None:
    """x if `value` is `1 + erf(x / sqrt(2))` (or `erf(x * (1/sqrt(2)))`)."""
    add = owner(value, arith.AddfOp)
    pair = operands_matching(add, lambda v: scalar_of(v) == 1.0) if add else None
    erf = owner(pair[1], xmath.ErfOp) if pair else None
    if erf is None:
        return None
    scaled = erf.operand
    if (div := owner(scaled, arith.DivfOp)) is not None:
        c = scalar_of(div.rhs)
        return div.lhs if c is not None and math.isclose(c, _SQRT2, rel_tol=1e-6) else None
    if (mul := owner(scaled, arith.MulfOp)) is not None:
        found = operands_matching(mul, lambda v: scalar_of(v) is None)
        c = scalar_of(found[1]) if found else None
        if c is not None and math.isclose(c, 1 / _SQRT2, rel_tol=1e-6):
            return found[0]
    return None


class FuseErfGelu(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: arith.MulfOp, rewriter: PatternRewriter, /):
        factors = _factors(op.result)
        if len(factors) != 3:
            return
        halves = [f for f in factors if scalar_of(f) == 0.5]
        erfs = [(f, x) for f in factors if (x := _erf_argument(f)) is not None]
        if len(halves) != 1 or len(erfs) != 1:
            return
        x = erfs[0][1]
        rest = [f for f in factors if f is not halves[0] and f is not erfs[0][0]]
        if rest != [x] or x.type != op.result.type:
            return
        gelu = q35nn.GeluOp(x)
        gelu.result.name_hint = op.result.name_hint
        rewriter.replace(op, gelu)


@dataclass(frozen=True)
class FuseGeluPass(ModulePass):
    """Recognize x * 0.5 * (1 + erf(x / sqrt(2))) as q35nn.gelu."""

    name = "fuse-gelu"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(FuseErfGelu(), apply_recursively=False).rewrite_module(op)
        erase_dead_ops(op)
