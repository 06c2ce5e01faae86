"""`fuse-swiglu`: recognize the SwiGLU gate `silu(gate) * up` as one `q35nn.swiglu`.

Matches `mulf(silu(g), up)` where silu is `q35nn.silu(g)` or the form exporters write,
`mulf(g, sigmoid(g))` with sigmoid either decomposed as `1 / (1 + exp(-g))`. `q35nn.swiglu`
computes silu in float64 and rounds once, so against the decomposed float32 sequence the
result differs by float32 round-off only.
"""

from __future__ import annotations

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


def sigmoid_input(value: SSAValue) -> SSAValue | None:
    """x if `value` is `1 / (1 + exp(-x))`."""
    div = owner(value, arith.DivfOp)
    if div is None or scalar_of(div.lhs) != 1.0:
        return None
    add = owner(div.rhs, arith.AddfOp)
    pair = operands_matching(add, lambda v: scalar_of(v) == 1.0) if add else None
    exp = owner(pair[1], xmath.ExpOp) if pair else None
    neg = owner(exp.operand, arith.NegfOp) if exp else None
    return neg.operand if neg else None


def silu_input(value: SSAValue) -> SSAValue | None:
    """g if `value` is silu(g): `q35nn.silu(g)` or `g * sigmoid(g)`."""
    if (silu := owner(value, q35nn.SiluOp)) is not None:
        return silu.input
    mul = owner(value, arith.MulfOp)
    if mul is None:
        return None
    a, b = mul.operands
    if sigmoid_input(b) is a:
        return a
    if sigmoid_input(a) is b:
        return b
    return None


class FuseSwiglu(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: arith.MulfOp, rewriter: PatternRewriter, /):
        pair = operands_matching(op, lambda v: silu_input(v) is not None)
        if pair is None or silu_input(op.result) is not None:  # op is itself a silu
            return
        gate = silu_input(pair[0])
        if gate.type != pair[1].type:
            return
        fused = q35nn.SwigluOp(gate, pair[1])
        fused.result.name_hint = op.result.name_hint
        rewriter.replace(op, fused)


@dataclass(frozen=True)
class FuseSwigluPass(ModulePass):
    """Recognize silu(gate) * up (also with a decomposed sigmoid) as q35nn.swiglu."""

    name = "fuse-swiglu"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(FuseSwiglu(), apply_recursively=False).rewrite_module(op)
        erase_dead_ops(op)
