"""`quantize-weights`: turn float matmul weights from the weight store into Q3P5.

Matches `linalg.matmul(x, W)` and `q35nn.batch_matmul(x, W)` where `W` is a 2-D float
`quant3p5.weight`, quantizes W with the Q3P5 library (or the legacy pair layout), stores the
packed tensor under a new name and rewrites the product to `quant3p5.matmul`, so the float
matrix is dead afterwards. Small weights (fewer than `min-elements`) and weights whose name
matches the `keep-float` regular expression stay in float. A weight shared by several
matmuls is quantized once.

Every packed weight op records the error quantization added, as `q35c.rel_rmse` (f32,
||W - deq(q(W))|| / ||W||), and keeps the `q35c.source` attribute of a float weight that the
frontend dequantized from a pre-quantized form (an int4 DequantizeLinear, MatMulNBits...).
For those, re-encoding adds error on top of the source quantization, so the pass reports
it on stderr, one line per tensor; weights that were float in the input stay silent.

With calibration statistics (`calibration=STATS.npz`, written by `q35c calibrate` or by the
CLI's `--calibration`), every weight that has statistics is encoded by a calibrated encoder
(`method`: `gptq`, the default, or `imatrix`; compiler/quant/calibrated.py) that minimizes
the layer's output error on the calibration inputs; the format does not change. Its op
then also records `q35c.output_error` (||X (W - deq)|| / ||X W|| on those inputs).

Embedding tables (`gathers`, default true, Q3P5 layout only): a `q35nn.gather` along axis 0
of a 2-D float weight table `E[V, D]` (the same `min-elements` and `keep-float` rules)
becomes `quant3p5.gather` from packed weights `W = E^T` ([D, V]: one column per table row,
so a row is one column's contiguous bytes). When a quantized matmul weight is that same
tensor transposed (a tied LM head: the same file range, or equal data), the gather reads the
LM head's packed tensor, so the table is stored once, quantized as the LM head is (its
calibration and group size); otherwise `E^T` is packed by round to nearest at `group-size`
under `<E>.T.q3p5`. The gather records the float table's name in `q35c.table`.
`gathers=false` keeps every table in float.

A shape-only weight (`--shape-only`) is never read: the pass stores a shape-only packed
entry (layout and group, no data) and rewrites the matmul the same way, without
`q35c.rel_rmse`. A shape-only table is never found tied (there is no data to compare): it
gets a shape-only packed entry of its own.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from xdsl.context import Context
from xdsl.dialects import arith
from xdsl.dialects.builtin import FloatAttr, ModuleOp, StringAttr, f32
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.transforms.dead_code_elimination import region_dce

from q35c.compiler.calibration import StatisticsFile
from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.ir_attrs import ONNX_NAME_ATTR, SOURCE_ATTR
from q35c.compiler.options import check_choice, check_int, check_regex
from q35c.compiler.progress import progress_bar
from q35c.compiler.quant import (
    BUDGET_BITS,
    DEFAULT_GROUP_SIZE,
    LegacyPairTensor,
    Q3P5Tensor,
    dequantize,
    dequantize_legacy,
    quantize,
    quantize_legacy,
    storage_bytes,
)
from q35c.compiler.quant.calibrated import (
    DEFAULT_ACT_ORDER,
    DEFAULT_DAMP,
    DEFAULT_REFINE,
    output_error,
    quantize_calibrated,
)
from q35c.compiler.quantizable import (
    DEFAULT_LAYOUT,
    DEFAULT_MIN_ELEMENTS,
    quantizable_table,
    quantizable_weight,
    tied_transpose,
)
from q35c.compiler.weights import ShapeOnlyWeight, WeightStore, store_of
from q35c.dialects import q35nn, quant3p5
from q35c.passes.matching import copy_origin
from q35c.passes.quantize_allocation import Choice, allocate, choice_for

REL_RMSE_ATTR = "q35c.rel_rmse"
"""On a packed weight: ||W - deq(q(W))|| / ||W|| of its float source W."""
TABLE_ATTR = "q35c.table"
"""On a `quant3p5.gather` made by this pass: the name of the float table it replaced."""
OUTPUT_ERROR_ATTR = "q35c.output_error"
"""On a calibrated packed weight: ||X (W - deq)|| / ||X W|| over the calibration inputs X."""
CALIBRATED_METHODS = ("gptq", "imatrix", "rtn")
"""`method`: a calibrated encoder, or `rtn` (round to nearest; output error still reported)."""


MAX_GROUP_SIZE = 0xFFF0
CALIBRATED_MIX = "v_proj=16;q_proj=64"
"""The group sizes `mix` gives with calibration (when they fit BUDGET_BITS): measured on
SmolLM2-135M, perplexity 35.38 -> 34.54 (docs/benchmarks.md, issue 16)."""
"""The largest group size a Q3P5 header holds (16 bits, a multiple of 16)."""
_RMSE_CHUNK_ELEMENTS = 1 << 18
"""Weights per column chunk when `relative_rmse` decodes a Q3P5 tensor (1 MiB of float32)."""


def _q3p5_columns(q: Q3P5Tensor, c0: int, c1: int) -> Q3P5Tensor:
    """Columns c0..c1 of `q` as a tensor of their own (columns are independent: format.md)."""
    return Q3P5Tensor((q.shape[0], c1 - c0), q.group_size, q.payload[c0:c1], q.meta[c0:c1],
                      q.super_scale[c0:c1], q.offset_base[c0:c1], q.offset_step[c0:c1])


def relative_rmse(w: np.ndarray, packed: Q3P5Tensor | LegacyPairTensor) -> float:
    """||W - deq(packed)|| / ||W|| (0 for an all-zero W); sums of squares in float64.

    A Q3P5 tensor is decoded a column chunk at a time into the difference (elementwise the
    same float32 values as a whole decode), so this holds W and W - deq, not more copies."""
    w = np.asarray(w, dtype=np.float32)
    if isinstance(packed, LegacyPairTensor):
        d = np.subtract(w, dequantize_legacy(packed), dtype=np.float32)
    else:
        k, n = w.shape
        d = np.empty((k, n), dtype=np.float32)  # C order, as np.subtract(w, deq) gave
        step = max(1, _RMSE_CHUNK_ELEMENTS // max(1, k))
        for c0 in range(0, n, step):
            c1 = min(n, c0 + step)
            np.subtract(w[:, c0:c1], dequantize(_q3p5_columns(packed, c0, c1)),
                        out=d[:, c0:c1], dtype=np.float32)
    err = float(np.einsum("ij,ij->", d, d, dtype=np.float64))
    del d
    ref = float(np.einsum("ij,ij->", w, w, dtype=np.float64))
    return float(np.sqrt(err / ref)) if ref > 0 else 0.0


def _is_zero_fill(value: SSAValue) -> bool:
    fill = value.owner
    if not isinstance(fill, linalg.FillOp):
        return False
    scalar = fill.inputs[0].owner
    return (isinstance(scalar, arith.ConstantOp) and isinstance(scalar.value, FloatAttr)
            and scalar.value.value.data == 0.0)


@dataclass
class QuantizeMatmulWeights(RewritePattern):
    """Rewrite one float-weight matmul into `quant3p5.matmul` on packed weights."""

    store: WeightStore
    group_size: int
    min_elements: int
    keep_float: re.Pattern[str] | None
    layout: str
    on_quantized: Callable[[str], None] = lambda name: None
    statistics: StatisticsFile | None = None
    method: str = "gptq"
    damp: float = DEFAULT_DAMP
    act_order: bool = DEFAULT_ACT_ORDER
    refine: int = DEFAULT_REFINE
    group_sizes: dict[str, int] = field(default_factory=dict)
    """Per-weight group sizes chosen by the bit allocation (`bpw`)."""
    packed_names: dict[str, str] = field(default_factory=dict)
    rel_rmse: dict[str, float] = field(default_factory=dict)
    """Float weight name -> the relative RMSE its packing added, in quantization order."""
    output_errors: dict[str, float] = field(default_factory=dict)
    """Float weight name -> its calibrated output error (weights with statistics only)."""
    table_names: dict[str, str] = field(default_factory=dict)
    """Untied embedding table name -> the name of its packed transpose."""
    table_rmse: dict[str, float] = field(default_factory=dict)
    """Untied embedding table name -> the relative RMSE of its packed transpose."""

    def float_weight(self, value: SSAValue) -> quant3p5.WeightOp | None:
        """The weight op behind `value` if it is a 2-D float weight this pass quantizes."""
        return quantizable_weight(value, self.min_elements, self.keep_float)

    def packed(self, weight: quant3p5.WeightOp) -> quant3p5.WeightOp:
        name = weight.weight_name.data
        k, n = weight.result.type.get_shape()
        group = k if self.layout == "pair43" else self.group_sizes.get(name, self.group_size)
        spec = self.store.spec(name)
        if spec is not None and name not in self.packed_names:  # --shape-only: no data
            packed_name = self.store.fresh_name(f"{name}.{self.layout}")
            self.store[packed_name] = ShapeOnlyWeight((k, n), self.layout, self.layout, group)
            self.packed_names[name] = packed_name
            self.on_quantized(name)
        if name not in self.packed_names:
            data = self.store[name]
            packed_name = self.store.fresh_name(f"{name}.{self.layout}")
            gram = None if self.statistics is None else self.statistics.gram(name, k)
            if self.layout == "pair43":
                self.store[packed_name] = quantize_legacy(data, name=name)
            elif gram is not None and self.method != "rtn":
                self.store[packed_name] = quantize_calibrated(
                    data, gram, group_size=group, method=self.method, damp=self.damp,
                    act_order=self.act_order, refine=self.refine, name=name)
            else:
                self.store[packed_name] = quantize(data, group_size=group, name=name)
            self.packed_names[name] = packed_name
            self.rel_rmse[name] = relative_rmse(data, self.store[packed_name])
            if gram is not None:
                self.output_errors[name] = output_error(data, self._dequantized(packed_name),
                                                        gram)
            self.on_quantized(name)
        op = quant3p5.WeightOp(self.packed_names[name],
                               quant3p5.PackedWeightType((k, n), group, self.layout))
        if name in self.rel_rmse:  # not for shape-only weights
            op.attributes[REL_RMSE_ATTR] = FloatAttr(self.rel_rmse[name], f32)
        if name in self.output_errors:
            op.attributes[OUTPUT_ERROR_ATTR] = FloatAttr(self.output_errors[name], f32)
        for attr in (SOURCE_ATTR, ONNX_NAME_ATTR):
            if isinstance(value := weight.attributes.get(attr), StringAttr):
                op.attributes[attr] = value
        return op

    def packed_table(self, table: quant3p5.WeightOp) -> quant3p5.WeightOp:
        """Packed weights `E^T` for the float table `E[V, D]` of an untied gather (round to
        nearest, this pass's group size), created once per table."""
        name = table.weight_name.data
        v, d = table.result.type.get_shape()
        if name not in self.table_names:
            packed_name = self.store.fresh_name(f"{name}.T.{self.layout}")
            if self.store.spec(name) is not None:  # --shape-only: no data
                self.store[packed_name] = ShapeOnlyWeight((d, v), self.layout, self.layout,
                                                          self.group_size)
            else:
                data = np.ascontiguousarray(np.asarray(self.store[name], np.float32).T)
                self.store[packed_name] = quantize(data, group_size=self.group_size, name=name)
                self.table_rmse[name] = relative_rmse(data, self.store[packed_name])
            self.table_names[name] = packed_name
            self.on_quantized(name)
        op = quant3p5.WeightOp(self.table_names[name],
                               quant3p5.PackedWeightType((d, v), self.group_size, self.layout))
        if name in self.table_rmse:
            op.attributes[REL_RMSE_ATTR] = FloatAttr(self.table_rmse[name], f32)
        return op

    def _dequantized(self, packed_name: str) -> np.ndarray:
        packed = self.store[packed_name]
        if isinstance(packed, LegacyPairTensor):
            return dequantize_legacy(packed)
        return dequantize(packed)

    def rewrite(self, op: Operation, lhs: SSAValue, weight: quant3p5.WeightOp,
                acc: SSAValue | None, rewriter: PatternRewriter) -> None:
        packed = self.packed(weight)
        packed.result.name_hint = weight.result.name_hint
        product = quant3p5.MatmulOp(lhs, packed.result)
        new_ops: list[Operation] = [packed, product]
        if acc is not None:
            new_ops.append(arith.AddfOp(product.result, acc))
        init = op.operands[-1].owner if isinstance(op, linalg.MatmulOp) else None
        copy_origin(op, *new_ops[1:])  # the product (and the accumulator add)
        rewriter.replace(op, new_ops)
        new_ops[-1].results[0].name_hint = op.results[0].name_hint
        if isinstance(init, linalg.FillOp) and not init.results[0].uses:
            rewriter.erase(init)  # the zero accumulator of the float matmul

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: linalg.MatmulOp | q35nn.BatchMatmulOp,
                          rewriter: PatternRewriter, /):
        if isinstance(op, linalg.MatmulOp):
            lhs, rhs = op.inputs
            acc = None if _is_zero_fill(op.outputs[0]) else op.outputs[0]
        else:
            lhs, rhs, acc = op.lhs, op.rhs, None
        weight = self.float_weight(rhs)
        if weight is None:
            return
        self.rewrite(op, lhs, weight, acc, rewriter)


@dataclass
class QuantizeGatherTables(RewritePattern):
    """Rewrite `q35nn.gather` (axis 0) of a float weight table into `quant3p5.gather`."""

    weights: QuantizeMatmulWeights
    heads: dict[str, quant3p5.WeightOp]
    """Table name -> the matmul weight op that is its transpose (tied LM heads)."""

    def table(self, op: q35nn.GatherOp) -> quant3p5.WeightOp | None:
        """The float table behind `op` if this pass quantizes it."""
        return quantizable_table(op, self.weights.min_elements, self.weights.keep_float)

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: q35nn.GatherOp, rewriter: PatternRewriter, /):
        table = self.table(op)
        if table is None:
            return
        name = table.weight_name.data
        head = self.heads.get(name)
        packed = self.weights.packed(head) if head is not None else (
            self.weights.packed_table(table))
        gather = quant3p5.GatherOp(packed.result, op.indices)
        gather.attributes[TABLE_ATTR] = StringAttr(name)
        copy_origin(op, gather)
        hint = op.result.name_hint
        rewriter.replace(op, [packed, gather])
        packed.result.name_hint = (head or table).result.name_hint
        gather.result.name_hint = hint


@dataclass(frozen=True)
class QuantizeWeightsPass(ModulePass):
    """Quantize float matmul weights in the weight store to Q3P5 (or the legacy layout)."""

    name = "quantize-weights"

    group_size: int = DEFAULT_GROUP_SIZE
    min_elements: int = DEFAULT_MIN_ELEMENTS
    keep_float: str = ""
    layout: str = DEFAULT_LAYOUT
    calibration: str = ""
    """A statistics .npz (compiler/calibration.py); empty: data-free round to nearest."""
    method: str = "gptq"
    """With `calibration`: the encoder (CALIBRATED_METHODS)."""
    damp: float = DEFAULT_DAMP
    """With `calibration`: H + damp * mean(diag H) * I is what the encoders invert."""
    act_order: bool = DEFAULT_ACT_ORDER
    """With `calibration` and `gptq`: walk the pairs by decreasing input energy, group codes
    chosen up front (compiler/quant/calibrated.py)."""
    refine: int = DEFAULT_REFINE
    """With `calibration` and `gptq`: passes of coordinate descent on the output error after
    the walk (codes, then each group's neighbouring scale and offset codes)."""
    bpw: float = 0.0
    """> 0: a budget in bits per matmul weight (all metadata counted); each weight gets
    the Q3P5 group size the allocation chooses (passes/quantize_allocation.py)."""
    gathers: bool = True
    """Quantize the float tables of gathers (embeddings) too, sharing a tied LM head's
    packed weights; false keeps them in float."""
    mix: bool = True
    """With `calibration` and neither `bpw` nor `group-for`: give the weights named like
    LLaMA's value and query projections the group sizes of CALIBRATED_MIX, if all the
    matmul weights then still average at most BUDGET_BITS bits per weight."""
    group_for: str = ""
    """Per-weight group sizes: `REGEX=G` entries separated by `;`; a matmul weight whose
    name the first matching regular expression finds (`re.search`) gets group size G
    (e.g. `past_value=128` for the value caches of `build_llama_shapes.py --kv-cache
    heads`), any other `group-size`. Not with `bpw`, which chooses every weight's group."""

    def group_rules(self) -> list[tuple[re.Pattern[str], int]]:
        """`group_for` parsed: (regex, group size) in order."""
        rules = []
        for entry in filter(None, (e.strip() for e in self.group_for.split(";"))):
            regex, _, group = entry.rpartition("=")
            where = f"--passes {self.name}"
            check_regex(where, "group-for", regex)
            if not regex or not group.strip().isdigit():
                raise Q35cError(f"{where}: option group-for must be REGEX=G entries separated "
                                f"by ';', got {entry!r}")
            check_int(where, "group-for", int(group), 16, MAX_GROUP_SIZE, multiple_of=16)
            rules.append((re.compile(regex), int(group)))
        return rules

    def __post_init__(self) -> None:
        where = f"--passes {self.name}"
        check_choice(where, "method", self.method, CALIBRATED_METHODS)
        if not (isinstance(self.damp, int | float) and 0 < self.damp <= 10):
            raise Q35cError(f"{where}: option damp must be in (0, 10], got {self.damp}")
        if not (self.bpw == 0 or 3.5 < self.bpw <= 64):
            raise Q35cError(f"{where}: option bpw must be 0 (off) or in (3.5, 64], got "
                            f"{self.bpw}")
        check_int(where, "group-size", self.group_size, 16, MAX_GROUP_SIZE, multiple_of=16)
        check_int(where, "min-elements", self.min_elements, 0)
        check_int(where, "refine", self.refine, 0, 16)
        check_regex(where, "keep-float", self.keep_float)
        check_choice(where, "layout", self.layout, quant3p5.LAYOUTS)
        if self.group_rules() and self.bpw:
            raise Q35cError(f"{where}: options group-for and bpw exclude each other (the "
                            "budget chooses every weight's group size)")

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        pattern = QuantizeMatmulWeights(
            store_of(op), self.group_size, self.min_elements,
            re.compile(self.keep_float) if self.keep_float else None, self.layout,
            statistics=StatisticsFile(Path(self.calibration)) if self.calibration else None,
            method=self.method, damp=self.damp, act_order=self.act_order, refine=self.refine)
        candidates = {w.weight_name.data for m in op.walk()
                      if isinstance(m, (linalg.MatmulOp, q35nn.BatchMatmulOp))
                      for w in [pattern.float_weight(m.operands[1])] if w is not None}
        if pattern.statistics is not None and candidates and not any(
                name in pattern.statistics for name in candidates):
            raise Q35cError(f"{self.calibration}: the calibration statistics match none of "
                            "the model's matmul weights (collected on another model?)")
        choices = self._allocate(op, pattern) if self.bpw and self.layout == "q3p5" else []
        pattern.group_sizes = {c.name: c.group_size for c in choices}
        rules = self.group_rules()
        if (not rules and self.mix and not self.bpw and self.layout == "q3p5"
                and pattern.statistics is not None):
            rules = self._calibrated_mix({
                w.weight_name.data: tuple(w.result.type.get_shape()) for m in op.walk()
                if isinstance(m, (linalg.MatmulOp, q35nn.BatchMatmulOp))
                for w in [pattern.float_weight(m.operands[1])] if w is not None})
        for name in sorted(candidates) if rules else ():
            group = next((g for regex, g in rules if regex.search(name)), None)
            if group is not None:
                pattern.group_sizes[name] = group
        sources: dict[str, str] = {}
        for weight in op.walk():
            if (isinstance(weight, quant3p5.WeightOp)
                    and isinstance(attr := weight.attributes.get(SOURCE_ATTR), StringAttr)):
                sources[weight.weight_name.data] = attr.data
        gathers = self._gathers(op, pattern)
        untied = set() if gathers is None else {
            t.weight_name.data for m in op.walk() if isinstance(m, q35nn.GatherOp)
            for t in [gathers.table(m)] if t is not None} - set(gathers.heads)
        with progress_bar(len(candidates) + len(untied), "quantize-weights") as bar:
            pattern.on_quantized = lambda name: bar.update()
            patterns = [pattern] if gathers is None else [pattern, gathers]
            PatternRewriteWalker(GreedyRewritePatternApplier(patterns),
                                 apply_recursively=False).rewrite_module(op)
        region_dce(op.body)
        if choices:
            self._print_allocation(pattern, choices)
        target = "Q3P5" if self.layout == "q3p5" else self.layout
        for name, error in pattern.rel_rmse.items():
            if name in sources:
                print(f"q35c: note: {name} ({sources[name]}) re-encoded to {target}: added "
                      f"rel RMSE {error:.3f}", file=sys.stderr)

    def _calibrated_mix(self, shapes: dict[str, tuple[int, int]]
                        ) -> list[tuple[re.Pattern[str], int]]:
        """CALIBRATED_MIX's rules if some weight matches and the mixed sizes keep the
        matmul weights (name -> [K, N]) within BUDGET_BITS (storage_bytes, all metadata),
        else none."""
        rules = [(re.compile(regex), int(group)) for regex, _, group in (
            entry.rpartition("=") for entry in CALIBRATED_MIX.split(";"))]
        bits = params = matched = 0
        for name, shape in sorted(shapes.items()):
            group = next((g for regex, g in rules if regex.search(name)), None)
            matched += group is not None
            bits += 8 * storage_bytes(shape, min(group or self.group_size, shape[0]))
            params += shape[0] * shape[1]
        return rules if matched and bits <= BUDGET_BITS * params else []

    def _gathers(self, module: ModuleOp, pattern: QuantizeMatmulWeights
                 ) -> QuantizeGatherTables | None:
        """The gather pattern (None with `gathers=false` or a layout other than q3p5), with
        each table's tied LM head among the matmul weights this pass quantizes."""
        if not self.gathers or self.layout != "q3p5":
            return None
        gathers = QuantizeGatherTables(pattern, {})
        heads: dict[tuple[int, int], dict[str, quant3p5.WeightOp]] = {}
        for m in module.walk():
            if isinstance(m, (linalg.MatmulOp, q35nn.BatchMatmulOp)):
                w = pattern.float_weight(m.operands[1])
                if w is not None:
                    shape = tuple(w.result.type.get_shape())
                    heads.setdefault(shape, {}).setdefault(w.weight_name.data, w)
        for m in module.walk():
            table = gathers.table(m) if isinstance(m, q35nn.GatherOp) else None
            if table is None or table.weight_name.data in gathers.heads:
                continue
            v, d = table.result.type.get_shape()
            for head in heads.get((d, v), {}).values():
                if tied_transpose(pattern.store, table.weight_name.data,
                                  head.weight_name.data):
                    gathers.heads[table.weight_name.data] = head
                    break
        return gathers

    def _allocate(self, module: ModuleOp, pattern: QuantizeMatmulWeights) -> list[Choice]:
        """Group size per weight within `bpw` (the weights in module order, each once)."""
        names: list[str] = []
        for m in module.walk():
            if isinstance(m, (linalg.MatmulOp, q35nn.BatchMatmulOp)):
                w = pattern.float_weight(m.operands[1])
                if w is not None and w.weight_name.data not in names:
                    names.append(w.weight_name.data)
        choices = []
        for name in names:
            if pattern.store.spec(name) is not None:
                raise Q35cError(f"--passes {self.name}: bpw needs weight data (not "
                                "--shape-only)")
            data = pattern.store[name]
            gram = None if pattern.statistics is None else pattern.statistics.gram(
                name, data.shape[0])
            choices.append(choice_for(name, data, None if gram is None else np.diag(gram)))
        allocate(choices, self.bpw)
        return choices

    def _print_allocation(self, pattern: QuantizeMatmulWeights, choices: list[Choice]
                          ) -> None:
        """The allocation table on stderr: each weight's group size, bits and errors."""
        bits = params = 0
        print(f"q35c: bit allocation for --bpw {self.bpw:g} (weight, shape, group size, "
              "bits/weight, estimated and measured error):", file=sys.stderr)
        for c in choices:
            measured = pattern.output_errors.get(c.name)
            kind = "output error" if measured is not None else "rel RMSE"
            value = measured if measured is not None else pattern.rel_rmse.get(c.name, 0.0)
            n = c.shape[0] * c.shape[1]
            bits += c.bits[c.chosen]
            params += n
            print(f"q35c:   {c.name} {c.shape[0]}x{c.shape[1]} g{c.group_size} "
                  f"{c.bits[c.chosen] / n:.3f} bpw, estimated {c.errors[c.chosen]:.4f}, "
                  f"{kind} {value:.4f}", file=sys.stderr)
        print(f"q35c: bit allocation total: {bits / max(params, 1):.4f} bits per matmul weight "
              f"over {params:,} weights", file=sys.stderr)
