"""`drop-nan-guards`: remove torch's guard `where(isnan(p), 0, p)` after a softmax.

torch's exporter writes scaled dot-product attention's probabilities as
`Where(IsNaN(softmax(s)), 0, softmax(s))`: a row of NaN (from a NaN or an infinite
score, or every score -inf) becomes zeros. With finite scores and a finite additive mask
the softmax has no NaN and the guard changes nothing; this pass replaces it by the
softmax itself so that `fuse-attention` can match the attention. Not bit-identical where
a probability is NaN (its row then stays NaN), so only targets that map attention as one
op (cerebras) run it; docs/cerebras.md says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from q35c.dialects import q35nn
from q35c.passes.matching import erase_dead_ops, owner, scalar_of


def _onnx(value, op_type: str) -> q35nn.OnnxNodeOp | None:
    node = owner(value, q35nn.OnnxNodeOp)
    return node if node is not None and node.op_type.data == op_type else None


class DropNanGuard(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: q35nn.OnnxNodeOp, rewriter: PatternRewriter, /):
        if op.op_type.data != "Where" or len(op.operands) != 3:
            return
        cond, zero, p = op.operands
        isnan = _onnx(cond, "IsNaN")
        if isnan is None or isnan.operands[0] != p or scalar_of(zero) != 0.0:
            return
        if owner(p, q35nn.SoftmaxOp) is None or p.type != op.results[0].type:
            return
        rewriter.replace_op(op, [], [p])


@dataclass(frozen=True)
class DropNanGuardsPass(ModulePass):
    """Replace `where(isnan(softmax(s)), 0, softmax(s))` by the softmax."""

    name = "drop-nan-guards"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(DropNanGuard(), apply_recursively=False).rewrite_module(op)
        erase_dead_ops(op)
