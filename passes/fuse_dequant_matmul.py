"""`fuse-dequant-matmul`: a matmul on dequantized weights becomes one quantized matmul.

`linalg.matmul(x, quant3p5.dequantize(p))` (zero init) and
`q35nn.batch_matmul(x, quant3p5.dequantize(p))` become `quant3p5.matmul(x, p)`, so the float
weights are never materialized. The result is bit-identical: the interpreter defines
`quant3p5.matmul` as exactly that product.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.linalg import ops as linalg
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from q35c.dialects import q35nn, quant3p5
from q35c.passes.matching import copy_origin, erase_dead_ops, is_zero_fill, owner


class FuseDequantizeIntoMatmul(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: linalg.MatmulOp | q35nn.BatchMatmulOp,
                          rewriter: PatternRewriter, /):
        if isinstance(op, linalg.MatmulOp):
            if not is_zero_fill(op.outputs[0]):
                return
            lhs, rhs = op.inputs
        else:
            lhs, rhs = op.lhs, op.rhs
        dequant = owner(rhs, quant3p5.DequantizeOp)
        if dequant is None:
            return
        product = quant3p5.MatmulOp(lhs, dequant.input)
        copy_origin(op, product)
        rewriter.replace(op, product)
        product.result.name_hint = op.results[0].name_hint


@dataclass(frozen=True)
class FuseDequantMatmulPass(ModulePass):
    """Fuse dequantize + matmul into quant3p5.matmul (fp weights never materialized)."""

    name = "fuse-dequant-matmul"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(FuseDequantizeIntoMatmul(), apply_recursively=False).rewrite_module(op)
        erase_dead_ops(op)
