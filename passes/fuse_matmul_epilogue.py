"""`fuse-matmul-bias-act`: fold a quantized matmul's bias add and activation into it.

`act(quant3p5.matmul(x, W) + broadcast(b))`, with act one of relu (`maximumf` with 0),
`q35nn.gelu` or `q35nn.silu`, and each of bias and activation optional, becomes
`quant3p5.fused_matmul(x, W, bias b) {activation}`. Intermediate values must have no other
use. Bit-identical: `fused_matmul` rounds each step to float32 as the unfused ops do.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import arith
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from q35c.dialects import q35nn, quant3p5
from q35c.passes.matching import (
    copy_origin,
    erase_dead_ops,
    operands_matching,
    scalar_of,
    single_use,
    source_of,
)


def _bias_of(value: SSAValue, n: int) -> SSAValue | None:
    """The [N] vector `value` broadcasts, if it is one."""
    source = source_of(value)
    if isinstance(source.type, TensorType) and tuple(source.type.get_shape()) == (n,):
        return source
    return None


def _activation(op: Operation) -> tuple[str, SSAValue] | None:
    """(activation name, its input) if `op` is an activation fused_matmul supports."""
    if isinstance(op, q35nn.SiluOp):
        return "silu", op.input
    if isinstance(op, q35nn.GeluOp):
        return ("gelu_tanh" if op.approximate.data == "tanh" else "gelu"), op.input
    if isinstance(op, arith.MaximumfOp):
        pair = operands_matching(op, lambda v: scalar_of(v) == 0.0)
        if pair is not None:
            return "relu", pair[1]
    return None


class FuseBiasAndActivation(RewritePattern):
    """Match from the matmul down: matmul -> (add bias)? -> (activation)?"""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: quant3p5.MatmulOp, rewriter: PatternRewriter, /):
        n = op.weights.type.get_shape()[1]
        last, bias, activation = op.result, None, "none"
        users = [use.operation for use in last.uses]
        if len(users) == 1 and isinstance(users[0], arith.AddfOp):
            pair = operands_matching(users[0], lambda v: v is last)
            bias = _bias_of(pair[1], n) if pair else None
            if bias is not None:
                last = users[0].result
        users = [use.operation for use in last.uses] if single_use(last) else []
        if users and (act := _activation(users[0])) is not None and act[1] is last:
            activation, last = act[0], users[0].results[0]
        if last is op.result:
            return
        fused = quant3p5.FusedMatmulOp(op.lhs, op.weights, bias, None, activation)
        copy_origin(op, fused)
        fused.result.name_hint = last.name_hint
        rewriter.replace(last.owner, fused)  # the matmul and bias add are dead now


@dataclass(frozen=True)
class FuseMatmulBiasActPass(ModulePass):
    """Fuse quantized matmul + bias + activation (relu/gelu/silu) into fused_matmul."""

    name = "fuse-matmul-bias-act"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(FuseBiasAndActivation(), apply_recursively=False).rewrite_module(op)
        erase_dead_ops(op)
