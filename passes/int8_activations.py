"""`int8-activations`: run quantized matmuls on int8 activations with int32 accumulation.

Rewrites `quant3p5.matmul(x, W)` into `quant3p5.quantize_activations(x)` followed by
`quant3p5.matmul_int8`, the integer path that hardware targets (MXM-style int8 units)
execute. The interpreter defines both paths; this pass only chooses between them. Matmuls
that share an input (q, k and v projections; gate and up) share one quantization: it is a
pure function of the input, and quantizing once is what a target wants to execute.
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
from q35c.passes.matching import copy_origin


def _earlier_quantization(op: quant3p5.MatmulOp) -> quant3p5.QuantizeActivationsOp | None:
    """A quantization of `op`'s input already placed before `op` in the same block."""
    block = op.parent_block()
    for use in op.lhs.uses:
        user = use.operation
        if (isinstance(user, quant3p5.QuantizeActivationsOp) and block is not None
                and user.parent_block() is block and block.get_operation_index(user)
                < block.get_operation_index(op)):
            return user
    return None


@dataclass
class UseInt8Activations(RewritePattern):
    int_rescale: int = 0

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: quant3p5.MatmulOp, rewriter: PatternRewriter, /):
        quantized = _earlier_quantization(op)
        new_ops: list = []
        if quantized is None:
            quantized = quant3p5.QuantizeActivationsOp(op.lhs)
            base = op.lhs.name_hint or "act"
            quantized.quantized.name_hint = f"{base}_i8"
            quantized.scale.name_hint = f"{base}_scale"
            new_ops.append(quantized)
        rows = 0
        if self.int_rescale:  # whole groups, at most int_rescale rows (at least one group)
            group = op.weights.type.group
            rows = max(group, self.int_rescale // group * group)
        product = quant3p5.MatmulInt8Op(quantized.quantized, quantized.scale, op.weights, rows)
        copy_origin(op, product)
        rewriter.replace(op, [*new_ops, product])
        product.result.name_hint = op.result.name_hint


@dataclass(frozen=True)
class Int8ActivationsPass(ModulePass):
    """Quantize matmul activations to int8 (per row) and accumulate in int32."""

    name = "int8-activations"

    int_rescale: int = 0
    """0: the float32 rescale contract (group by group, docs/quantization.md). N: the
    integer rescale contract (`quant3p5.matmul_int8` `rescale_rows`: integer group scales,
    groups combined in int32 over blocks of at most N rows of K, whole groups; docs/groq.md
    "The integer rescale contract"). The Groq target uses its MXM rows (320)."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        from q35c.compiler.options import check_int

        check_int(f"--passes {self.name}", "int-rescale", self.int_rescale, 0,
                  quant3p5.INT_RESCALE_MAX_ROWS)
        PatternRewriteWalker(UseInt8Activations(self.int_rescale),
                             apply_recursively=False).rewrite_module(op)
