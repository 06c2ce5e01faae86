"""`fuse-norms`: recognize RMSNorm and LayerNorm written out as elementwise ops and means.

Exporters often decompose normalization (HF LLaMA's RMSNorm is pow, mean, add, rsqrt, mul,
mul). After the ONNX frontend, over the last axis and with numpy broadcasting made explicit:

    RMSNorm:   gamma * (x * (1 / sqrt(mean(x * x) + eps)))     (or x / sqrt(...), rsqrt)
    LayerNorm: gamma * ((x - mean(x)) / sqrt(mean(d * d) + eps)) + beta,  d = x - mean(x)

where `mean(t)` is `linalg.reduce` (sum over the last axis) divided by its size, and gamma and
beta are [D] vectors. The whole chain becomes `q35nn.rms_norm` / `q35nn.layer_norm`.
The fused ops compute in float64 and round once, so the result differs from the decomposed
float32 chain by float32 round-off only.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import arith, math as xmath
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from q35c.dialects import q35nn
from q35c.passes.matching import (
    erase_dead_ops,
    is_zero_fill,
    operands_matching,
    owner,
    scalar_of,
    source_of,
)


def _shape(value: SSAValue) -> tuple[int, ...]:
    assert isinstance(value.type, TensorType)
    return tuple(value.type.get_shape())


def mean_input(value: SSAValue) -> SSAValue | None:
    """t if `value` is mean(t) over t's last axis (reduce-sum, then divide by its size)."""
    div = owner(source_of(value), arith.DivfOp)
    reduce = owner(div.lhs, linalg.ReduceOp) if div else None
    if reduce is None or not isinstance(next(iter(reduce.region.block.ops)), arith.AddfOp):
        return None
    t = reduce.input
    if list(reduce.dimensions.get_values()) != [len(_shape(t)) - 1]:
        return None
    if scalar_of(div.rhs) != float(_shape(t)[-1]) or not is_zero_fill(reduce.init):
        return None
    return t


def square_input(value: SSAValue) -> SSAValue | None:
    mul = owner(value, arith.MulfOp)
    return mul.lhs if mul is not None and mul.lhs is mul.rhs else None


def inv_std(value: SSAValue) -> tuple[SSAValue, float] | None:
    """(t, eps) if `value` is 1 / sqrt(mean(t*t) + eps) or rsqrt(...)."""
    value = source_of(value)
    if (rsqrt := owner(value, xmath.RsqrtOp)) is not None:
        return _mean_square_plus_eps(rsqrt.operand)
    div = owner(value, arith.DivfOp)
    if div is None or scalar_of(div.lhs) != 1.0:
        return None
    sqrt = owner(source_of(div.rhs), xmath.SqrtOp)
    return _mean_square_plus_eps(sqrt.operand) if sqrt else None


def _mean_square_plus_eps(value: SSAValue) -> tuple[SSAValue, float] | None:
    add = owner(source_of(value), arith.AddfOp)
    pair = operands_matching(add, lambda v: scalar_of(v) is not None) if add else None
    if pair is None:
        return None
    t = square_input(mean_input(pair[1])) if mean_input(pair[1]) is not None else None
    return (t, scalar_of(pair[0])) if t is not None else None


def normalized(value: SSAValue) -> tuple[SSAValue, float] | None:
    """(t, eps) if `value` is t * inv_std(t) or t / sqrt(mean(t*t) + eps)."""
    if (mul := owner(value, arith.MulfOp)) is not None:
        for t, other in ((mul.lhs, mul.rhs), (mul.rhs, mul.lhs)):
            found = inv_std(other)
            if found is not None and found[0] is t:
                return found
    if (div := owner(value, arith.DivfOp)) is not None:
        sqrt = owner(source_of(div.rhs), xmath.SqrtOp)
        found = _mean_square_plus_eps(sqrt.operand) if sqrt else None
        if found is not None and found[0] is div.lhs:
            return found
    return None


def feature_vector(value: SSAValue, features: int) -> SSAValue | None:
    source = source_of(value)
    return source if _shape(source) == (features,) else None


class FuseNorms(RewritePattern):
    """Match at the final gamma multiply (RMSNorm) or the beta add (LayerNorm)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: arith.MulfOp | arith.AddfOp, rewriter: PatternRewriter, /):
        if not isinstance(op.result.type, TensorType) or not _shape(op.result):
            return  # scalar arithmetic (e.g. inside a linalg body)
        features = _shape(op.result)[-1]
        if isinstance(op, arith.AddfOp):
            self.layer_norm(op, features, rewriter)
            return
        for gamma_side, norm_side in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
            gamma = feature_vector(gamma_side, features)
            found = normalized(norm_side) if gamma is not None else None
            if found is None:
                continue
            x, eps = found
            if centered_input(x) is not None:
                return  # the LayerNorm pattern takes it, at its beta add
            self.replace(op, q35nn.RMSNormOp(x, gamma, eps), rewriter)
            return

    def layer_norm(self, op: arith.AddfOp, features: int, rewriter: PatternRewriter) -> None:
        for beta_side, scaled_side in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
            beta = feature_vector(beta_side, features)
            mul = owner(scaled_side, arith.MulfOp) if beta is not None else None
            if mul is None:
                continue
            for gamma_side, norm_side in ((mul.lhs, mul.rhs), (mul.rhs, mul.lhs)):
                gamma = feature_vector(gamma_side, features)
                found = normalized(norm_side) if gamma is not None else None
                x = centered_input(found[0]) if found else None
                if x is not None:
                    self.replace(op, q35nn.LayerNormOp(x, gamma, beta, found[1]), rewriter)
                    return

    def replace(self, op, fused, rewriter: PatternRewriter) -> None:
        fused.result.name_hint = op.result.name_hint
        rewriter.replace(op, fused)


def centered_input(value: SSAValue) -> SSAValue | None:
    """x if `value` is x - mean(x)."""
    sub = owner(value, arith.SubfOp)
    if sub is None:
        return None
    return sub.lhs if mean_input(sub.rhs) is sub.lhs else None


@dataclass(frozen=True)
class FuseNormsPass(ModulePass):
    """Recognize decomposed RMSNorm and LayerNorm (mean/pow/sqrt/div/mul) as single ops."""

    name = "fuse-norms"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(FuseNorms(), apply_recursively=False).rewrite_module(op)
        erase_dead_ops(op)
