"""`dequantize-gathers`: turn `quant3p5.gather` back into a gather of a float table.

For targets without a row-gather kernel for packed tables (groq, cuda, cerebras: their
`pipeline()` runs this pass first), every `quant3p5.gather` of packed weights `W[D, V]`
becomes `q35nn.gather` (axis 0) of the float table `deq(W)^T` [V, D], stored once per
packed tensor under `<table>.rows` in the weight store (`<table>`: the float table's name
that `quantize-weights` recorded in `q35c.table`, else the packed weight's name). The
gathered values are exactly those of `quant3p5.gather` (the same float32 decode), so
results do not change; what changes is storage: the table is float again (a tied LM head
keeps its packed weights beside it). With `--shape-only` the table is a shape-only float entry.

A table that does not come from `quant3p5.weight` (a function argument) is refused in one
line naming the op: there is no constant to decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import Float32Type, ModuleOp, StringAttr, TensorType
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.transforms.dead_code_elimination import region_dce

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.ir_attrs import copy_origin
from q35c.compiler.quant import Q3P5Tensor, dequantize
from q35c.compiler.weights import ShapeOnlyWeight, WeightStore, store_of
from q35c.dialects import q35nn, quant3p5


@dataclass
class DequantizeGatherTables(RewritePattern):
    """Rewrite one `quant3p5.gather` into `q35nn.gather` of the decoded table."""

    store: WeightStore
    tables: dict[str, str] = field(default_factory=dict)
    """Packed weight name -> the name of its decoded, transposed float table."""

    def table_name(self, packed: str, shape: tuple[int, int], base: str) -> str:
        if packed in self.tables:
            return self.tables[packed]
        name = self.store.fresh_name(f"{base}.rows")
        d, v = shape
        if self.store.spec(packed) is not None:  # --shape-only: no data
            self.store[name] = ShapeOnlyWeight((v, d), "float32")
        else:
            value = self.store[packed]
            if not isinstance(value, Q3P5Tensor):
                raise Q35cError(f"dequantize-gathers: weight '{packed}' is not a Q3P5 tensor")
            self.store[name] = np.ascontiguousarray(dequantize(value).T)
        self.tables[packed] = name
        return name

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: quant3p5.GatherOp, rewriter: PatternRewriter, /):
        weight = op.table.owner
        if not isinstance(weight, quant3p5.WeightOp):
            raise Q35cError("dequantize-gathers: the table of quant3p5.gather must come from "
                            "quant3p5.weight (a constant), not a function argument")
        shape = op.table.type.get_shape()
        table_attr = op.attributes.get("q35c.table")  # the float table it replaced
        base = table_attr.data if isinstance(table_attr, StringAttr) else weight.weight_name.data
        name = self.table_name(weight.weight_name.data, shape, base)
        table = quant3p5.WeightOp(name, TensorType(Float32Type(), shape[::-1]))
        gather = q35nn.GatherOp(table.result, op.indices, 0)
        copy_origin(op, gather)
        hint = op.result.name_hint
        rewriter.replace(op, [table, gather])
        table.result.name_hint = weight.result.name_hint
        gather.result.name_hint = hint


@dataclass(frozen=True)
class DequantizeGathersPass(ModulePass):
    """Gather from decoded float tables instead of packed ones (targets without qgather)."""

    name = "dequantize-gathers"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(DequantizeGatherTables(store_of(op)),
                             apply_recursively=False).rewrite_module(op)
        region_dce(op.body)  # an untied table's packed weights are dead now
