"""`unfuse-ops`: rewrite fused ops back into the primitive ops they stand for.

The inverse of the fusion passes (docs/fusion.md), for a target that lowers the primitive
ops but not a fused one: its `pipeline()` runs `unfuse-ops{ops="quant3p5.fused_matmul"}`
(groq does, before `int8-activations` turns the matmul into its int8 form), so every
target accepts what the fusion passes make.

- `quant3p5.fused_matmul` -> `quant3p5.matmul`, then `arith.addf` of the bias broadcast by
  `linalg.broadcast`, the activation (`arith.maximumf` with 0, `q35nn.gelu`, `q35nn.silu`),
  and `arith.addf` of the residual;
- `q35nn.swiglu` -> `q35nn.silu` of the gate, `arith.mulf` with up;
- `q35nn.attention` -> `linalg.transpose` of k, `q35nn.batch_matmul`, `arith.mulf` by the
  scale, `arith.addf` of the mask (broadcast as numpy does), `q35nn.softmax`, and the V
  `q35nn.batch_matmul`.

Bit-identical: each fused op's reference semantics (q35c.semantics) is defined as exactly
this sequence of float32 roundings. `ops` (default: all three) picks which ops to unfuse;
the new ops keep the fused op's source location (`q35c.onnx_node`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import arith, tensor
from xdsl.dialects.builtin import (
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    Float32Type,
    ModuleOp,
    TensorType,
    i64,
)
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
)
from xdsl.rewriter import InsertPoint

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.ir_attrs import copy_origin
from q35c.dialects import q35nn, quant3p5

FUSED_OPS = ("quant3p5.fused_matmul", "q35nn.swiglu", "q35nn.attention")
"""The ops `unfuse-ops` knows how to unfuse (its default `ops`)."""


def _shape(value: SSAValue) -> tuple[int, ...]:
    assert isinstance(value.type, TensorType)
    return tuple(value.type.get_shape())


class _Builder:
    """Creates ops before `anchor`, each with the anchor's source location."""

    def __init__(self, rewriter: PatternRewriter, anchor: Operation):
        self.rewriter, self.anchor = rewriter, anchor

    def add(self, op: Operation) -> SSAValue:
        copy_origin(self.anchor, op)
        self.rewriter.insert(op, InsertPoint.before(self.anchor))
        return op.results[0]

    def splat(self, value: float, like: SSAValue) -> SSAValue:
        """A float32 constant of `like`'s shape, all `value`."""
        ttype = TensorType(Float32Type(), _shape(like))
        return self.add(arith.ConstantOp(DenseIntOrFPElementsAttr.from_list(ttype, [value]),
                                         ttype))

    def empty(self, shape: tuple[int, ...]) -> SSAValue:
        return self.add(tensor.EmptyOp([], TensorType(Float32Type(), list(shape))))

    def broadcast_to(self, value: SSAValue, shape: tuple[int, ...]) -> SSAValue:
        """numpy.broadcast_to as the ONNX frontend spells it: drop the size-1 dims (a
        `tensor.reshape`), then add the missing ones (`linalg.broadcast`)."""
        src = _shape(value)
        if src == shape:
            return value
        padded = (1,) * (len(shape) - len(src)) + src
        kept = [i for i, (s, d) in enumerate(zip(padded, shape)) if s == d and s != 1]
        squeezed = tuple(shape[i] for i in kept)
        if squeezed != src:
            ttype = TensorType(i64, [len(squeezed)])
            spec = self.add(arith.ConstantOp(
                DenseIntOrFPElementsAttr.from_list(ttype, list(squeezed)), ttype))
            value = self.add(tensor.ReshapeOp(
                value, spec, TensorType(Float32Type(), list(squeezed))))
        added = [i for i in range(len(shape)) if i not in kept]
        return self.add(linalg.BroadcastOp(value, self.empty(shape),
                                           DenseArrayBase.from_list(i64, added)))


def _activation(b: _Builder, name: str, y: SSAValue) -> SSAValue:
    if name == "relu":
        return b.add(arith.MaximumfOp(y, b.splat(0.0, y)))
    if name in ("gelu", "gelu_tanh"):
        return b.add(q35nn.GeluOp(y, "tanh" if name == "gelu_tanh" else "none"))
    if name == "silu":
        return b.add(q35nn.SiluOp(y))
    return y


def _unfuse_matmul(b: _Builder, op: quant3p5.FusedMatmulOp) -> SSAValue:
    y = b.add(quant3p5.MatmulOp(op.lhs, op.weights))
    if op.bias is not None:
        y = b.add(arith.AddfOp(y, b.broadcast_to(op.bias, _shape(y))))
    y = _activation(b, op.activation.data, y)
    if op.residual is not None:
        y = b.add(arith.AddfOp(y, op.residual))
    return y


def _unfuse_swiglu(b: _Builder, op: q35nn.SwigluOp) -> SSAValue:
    return b.add(arith.MulfOp(b.add(q35nn.SiluOp(op.gate)), op.up))


def _unfuse_attention(b: _Builder, op: q35nn.AttentionOp) -> SSAValue:
    k_shape = _shape(op.key)
    perm = [*range(len(k_shape) - 2), len(k_shape) - 1, len(k_shape) - 2]
    key_t = b.add(linalg.TransposeOp(op.key, b.empty(tuple(k_shape[p] for p in perm)),
                                     DenseArrayBase.from_list(i64, perm)))
    scores = b.add(q35nn.BatchMatmulOp(op.query, key_t))
    scores = b.add(arith.MulfOp(scores, b.splat(op.scale.value.data, scores)))
    if op.mask is not None:
        scores = b.add(arith.AddfOp(scores, b.broadcast_to(op.mask, _shape(scores))))
    probs = b.add(q35nn.SoftmaxOp(scores, -1))
    return b.add(q35nn.BatchMatmulOp(probs, op.values))


UNFUSE = {quant3p5.FusedMatmulOp: _unfuse_matmul, q35nn.SwigluOp: _unfuse_swiglu,
          q35nn.AttentionOp: _unfuse_attention}


@dataclass
class _Unfuse(RewritePattern):
    ops: frozenset[str]

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter, /):
        rule = UNFUSE.get(type(op))
        if rule is None or op.name not in self.ops:
            return
        result = rule(_Builder(rewriter, op), op)
        result.name_hint = op.results[0].name_hint
        rewriter.replace(op, [], [result])


@dataclass(frozen=True)
class UnfuseOpsPass(ModulePass):
    """Rewrite fused ops (fused_matmul, swiglu, attention) into their primitive ops."""

    name = "unfuse-ops"

    ops: tuple[str, ...] = FUSED_OPS
    """The fused ops to rewrite, by name: `unfuse-ops{ops="quant3p5.fused_matmul"}`."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        unknown = [name for name in self.ops if name not in FUSED_OPS]
        if unknown:
            raise Q35cError(f"unfuse-ops: cannot unfuse {', '.join(unknown)} (it unfuses "
                            f"{', '.join(FUSED_OPS)})")
        PatternRewriteWalker(_Unfuse(frozenset(self.ops)),
                             apply_recursively=False).rewrite_module(op)
