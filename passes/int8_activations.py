"""`int8-activations`: run quantized matmuls on int8 activations with int32 accumulation.

Rewrites `quant3p5.matmul(x, W)` into `quant3p5.quantize_activations(x)` followed by
`quant3p5.matmul_int8`, the integer path that hardware targets (MXM-style int8 units)
execute. The interpreter defines both paths; this pass only chooses between them.
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

from q35c.dialects import quant3p5


class UseInt8Activations(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: quant3p5.MatmulOp, rewriter: PatternRewriter, /):
        quantized = quant3p5.QuantizeActivationsOp(op.lhs)
        product = quant3p5.MatmulInt8Op(quantized.quantized, quantized.scale, op.weights)
        base = op.lhs.name_hint or "act"
        quantized.quantized.name_hint, quantized.scale.name_hint = f"{base}_i8", f"{base}_scale"
        rewriter.replace(op, [quantized, product])
        product.result.name_hint = op.result.name_hint


@dataclass(frozen=True)
class Int8ActivationsPass(ModulePass):
    """Quantize matmul activations to int8 (per row) and accumulate in int32."""

    name = "int8-activations"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(UseInt8Activations(), apply_recursively=False).rewrite_module(op)
