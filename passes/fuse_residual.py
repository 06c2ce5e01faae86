"""`fuse-residual`: fold a residual add into the quantized matmul that produces its input.

`quant3p5.matmul(x, W) + r` or `quant3p5.fused_matmul(...) + r` (no residual yet), where the
matmul result has no other use and `r` has the same shape, becomes
`quant3p5.fused_matmul(..., residual r)`. Run after `fuse-matmul-bias-act`. Bit-identical:
the residual is added last, in float32, as the unfused add does.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import arith
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from q35c.dialects import quant3p5
from q35c.passes.matching import copy_origin, erase_dead_ops, operands_matching, single_use


def _fusable(value) -> bool:
    op = value.owner
    if isinstance(op, quant3p5.MatmulOp):
        return single_use(value)
    return (isinstance(op, quant3p5.FusedMatmulOp) and op.residual is None
            and single_use(value))


class FuseResidualAdd(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: arith.AddfOp, rewriter: PatternRewriter, /):
        pair = operands_matching(op, _fusable)
        if pair is None or pair[1].type != op.result.type:
            return
        product, residual = pair[0].owner, pair[1]
        if isinstance(product, quant3p5.MatmulOp):
            fused = quant3p5.FusedMatmulOp(product.lhs, product.weights, None, residual)
        else:
            fused = quant3p5.FusedMatmulOp(product.lhs, product.weights, product.bias, residual,
                                           product.activation.data)
        fused.result.name_hint = op.result.name_hint
        copy_origin(product, fused)
        rewriter.replace(op, fused)


@dataclass(frozen=True)
class FuseResidualPass(ModulePass):
    """Fuse a residual add into the quantized matmul that produces one of its operands."""

    name = "fuse-residual"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(FuseResidualAdd(), apply_recursively=False).rewrite_module(op)
        erase_dead_ops(op)
