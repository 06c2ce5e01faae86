"""`fuse-attention`: recognize scaled dot-product attention as one `q35nn.attention`.

Matches `batch_matmul(softmax(scores * c + mask), v)` with
`scores = batch_matmul(q, kt)`, a constant scale `c` (`mulf`, or `divf` by a power of two,
which is the same multiply exactly; none: c = 1, an exact multiply), an optional additive
mask, and softmax over the last axis. `kt` is k with its last two axes swapped: a
transpose (k is its source), or any other value (k is a new transpose of it: torch's
exporter scales q and kt apart, so kt is a product). Intermediate values must have no
other use. Bit-identical: `q35nn.attention` is defined as exactly that sequence of
roundings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import arith, tensor
from xdsl.dialects.builtin import DenseArrayBase, ModuleOp, TensorType, i64
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import InsertPoint

from q35c.dialects import q35nn
from q35c.passes.matching import (
    copy_origin,
    erase_dead_ops,
    leading_broadcast_source,
    operands_matching,
    owner,
    scalar_of,
    single_use,
)


def _shape(value: SSAValue) -> tuple[int, ...]:
    assert isinstance(value.type, TensorType)
    return tuple(value.type.get_shape())


def _rank(value: SSAValue) -> int:
    return len(_shape(value))


def _scale(value: SSAValue) -> tuple[SSAValue, float] | None:
    """(scores, c) if `value` is scores * c, or scores / c with 1/c a power of two."""
    if (mul := owner(value, arith.MulfOp)) is not None:
        pair = operands_matching(mul, lambda v: scalar_of(v) is None)
        if pair is not None and scalar_of(pair[1]) is not None:
            return pair[0], scalar_of(pair[1])
    if (div := owner(value, arith.DivfOp)) is not None:
        c = scalar_of(div.rhs)
        if c and math.frexp(1.0 / c)[0] == 0.5:
            return div.lhs, 1.0 / c
    return None


def _key(value: SSAValue, at, rewriter: PatternRewriter) -> SSAValue:
    """k such that `value` is k with its last two axes swapped.

    If `value` is a transpose, k comes from its source: exporters often transpose straight
    from [B, S, H, D] to [B, H, D, S]; then k is that source transposed to [B, H, S, D] (a
    new transpose). Otherwise k is `value` with its last two axes swapped (a new
    transpose, inserted before `at`).
    """
    transpose = owner(value, linalg.TransposeOp)
    if transpose is None:
        perm, source, at = list(range(_rank(value))), value, at
    else:
        perm, source, at = list(transpose.permutation.get_values()), transpose.inputs[0], \
            transpose
    perm[-1], perm[-2] = perm[-2], perm[-1]
    if perm == sorted(perm):
        return source
    assert isinstance(source.type, TensorType)
    shape = source.type.get_shape()
    init = tensor.EmptyOp([], TensorType(source.type.get_element_type(), [shape[p] for p in perm]))
    key = linalg.TransposeOp(source, init.tensor, DenseArrayBase.from_list(i64, perm))
    rewriter.insert([init, key], InsertPoint.before(at))
    return key.results[0]


def _scores(value: SSAValue) -> tuple[SSAValue, float] | None:
    """(batch_matmul result, c) if `value` is that result * c, or that result (c = 1)."""
    if owner(value, q35nn.BatchMatmulOp) is not None:
        return value, 1.0
    scaled = _scale(value)
    if scaled is not None and owner(scaled[0], q35nn.BatchMatmulOp) is not None:
        return scaled
    return None


class FuseAttention(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: q35nn.BatchMatmulOp, rewriter: PatternRewriter, /):
        softmax = owner(op.lhs, q35nn.SoftmaxOp)
        if softmax is None or softmax.axis.value.data % _rank(softmax.input) != _rank(op.lhs) - 1:
            return
        logits, mask = softmax.input, None
        if (add := owner(logits, arith.AddfOp)) is not None:
            pair = operands_matching(add, lambda v: _scores(v) is not None)
            if pair is None:
                return
            logits, mask = pair[0], leading_broadcast_source(pair[1])
        scaled = _scores(logits)
        scores = owner(scaled[0], q35nn.BatchMatmulOp) if scaled else None
        if scores is None or not all(single_use(v) for v in (softmax.input, logits, scaled[0])):
            return
        key_t = scores.rhs
        if not (_rank(scores.lhs) == _rank(key_t) == _rank(op.rhs) == _rank(op.lhs)):
            return
        batch = _shape(key_t)[:-2]
        if _shape(scores.lhs)[:-2] != batch or batch != _shape(op.rhs)[:-2]:
            return  # broadcast batch dims: not what q35nn.attention covers
        key = _key(key_t, scores, rewriter)
        fused = q35nn.AttentionOp(scores.lhs, key, op.rhs, mask, scaled[1])
        fused.result.name_hint = op.results[0].name_hint
        copy_origin(op, fused)
        rewriter.replace(op, fused)


@dataclass(frozen=True)
class FuseAttentionPass(ModulePass):
    """Recognize QK^T scale, mask, softmax and the V product as q35nn.attention."""

    name = "fuse-attention"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(FuseAttention(), apply_recursively=False).rewrite_module(op)
        erase_dead_ops(op)
