"""`dequantize-weights`: put chosen layers back in float32, the inverse of quantize-weights.

Rewrites `quant3p5.matmul(x, W)`, where `W` is a packed `quant3p5.weight` whose name matches
the `pattern` regular expression (searched, so `fc2` matches `fc2.weight.q3p5`), into
`q35nn.batch_matmul(x, W_float)`. `W_float` is the matrix the packed weights decode to,
stored in the weight store as `<name>.dequantized`. The quantization error stays: the float
product computes what `quant3p5.matmul` defines, up to float round-off, but with a plain
float matmul. That separates the two sources of error when a target disagrees with the
interpreter (the weights, or the target's quantized kernel), and runs chosen layers on
targets or tools without Q3P5 kernels. To keep a layer's *original* float weights instead,
use `quantize-weights{keep-float=...}`.

Only matmuls on float activations are rewritten: run it before `int8-activations`. An
activation of rank 1 is left alone (`q35nn.batch_matmul` needs rank >= 2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from xdsl.context import Context
from xdsl.dialects.builtin import Float32Type, ModuleOp, TensorType
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.transforms.dead_code_elimination import region_dce

from q35c.compiler.quant import dequantize, dequantize_legacy
from q35c.compiler.weights import WeightStore, store_of
from q35c.dialects import q35nn, quant3p5


@dataclass
class DequantizeMatmulWeights(RewritePattern):
    """Rewrite one `quant3p5.matmul` on matching packed weights into a float matmul."""

    store: WeightStore
    pattern: re.Pattern[str]
    float_names: dict[str, str] = field(default_factory=dict)
    """Packed weight name -> its dequantized entry, so a shared weight is decoded once."""

    def float_weight(self, packed: quant3p5.WeightOp) -> quant3p5.WeightOp:
        packed_type = packed.result.type
        assert isinstance(packed_type, quant3p5.PackedWeightType)
        name = packed.weight_name.data
        if name not in self.float_names:
            data = self.store[name]
            float_name = self.store.fresh_name(f"{name}.dequantized")
            if packed_type.layout.data == "pair43":
                self.store[float_name] = dequantize_legacy(data)
            else:
                self.store[float_name] = dequantize(data)
            self.float_names[name] = float_name
        return quant3p5.WeightOp(self.float_names[name],
                                 TensorType(Float32Type(), packed_type.get_shape()))

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: quant3p5.MatmulOp, rewriter: PatternRewriter, /):
        packed = op.weights.owner
        if not isinstance(packed, quant3p5.WeightOp):
            return
        if not self.pattern.search(packed.weight_name.data):
            return
        assert isinstance(op.lhs.type, TensorType)
        if op.lhs.type.get_num_dims() < 2:
            return
        weight = self.float_weight(packed)
        weight.result.name_hint = packed.result.name_hint
        product = q35nn.BatchMatmulOp(op.lhs, weight.result)
        rewriter.replace(op, [weight, product])


@dataclass(frozen=True)
class DequantizeWeightsPass(ModulePass):
    """Replace quantized matmuls whose weight name matches `pattern` by float matmuls."""

    name = "dequantize-weights"

    pattern: str
    """A Python regular expression, searched in the packed weight's name."""

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as err:
            raise ValueError(
                f"pattern {self.pattern!r} is not a regular expression: {err}") from None

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        pattern = DequantizeMatmulWeights(store_of(op), re.compile(self.pattern))
        PatternRewriteWalker(pattern, apply_recursively=False).rewrite_module(op)
        region_dce(op.body)  # the packed weights of rewritten layers are now unused
