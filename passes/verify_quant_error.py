"""`verify-quant-error`: bound the error every quantized matmul adds, per output element.

For every `quant3p5.matmul`, `matmul_int8` and `fused_matmul` the pass computes, for each output
element y[r, n], a worst-case bound on |y_quantized - y_float| where y_float = x @ W uses the
float weights W and the *same* input x, exactly (real arithmetic), and an RMS estimate of
that error. The error has up to three parts (docs/verification.md gives the derivation):

- weights: x . E[:, n] with E = W - deq(W), exact worst case over the input box
  |mid . E| + rad . |E| (attained by x at the box corners with sign(E));
- int8 activations (matmul_int8 fed by quantize_activations): |x - s*q| <= s/2 per element with
  s = max_k |x_k| / 127, so (R_r / 254) * sum_k |deq(W)[k, n]|;
- float rounding of the computation itself (a few float32 roundings, float64 accumulation).

Input ranges come from a sound interval analysis of the whole function (elementwise
[lo, hi] per tensor element, outward-rounded after every op), starting from `arg-range`
(|x| <= arg-range for float arguments; unbounded when 0) and the actual weights and
constants. `input-range=R` additionally declares |x| <= R at the input of every quantized
matmul (intersected with the analysed range). An op without a transfer function yields an
unbounded result, so the analysis never claims more than it proves. Two relational facts
keep real models tight: a decomposed RMSNorm is recognized (|x_k / rms| <= sqrt(K)), and
normalized rows carry an L2 ball (||(y - center) / scale||_2 <= R) through matmuls.

Results are builtin attributes on each matmul: `q35c.input_absmax`, `q35c.err_bound` (max over
output elements of the worst case), `q35c.err_rms`, `q35c.err_parts` (which parts are included)
and, with `column-bounds=true`, `q35c.err_bound_cols` (per output column, max over rows).
`report_table(module)` renders them (and verify-overflow's `q35c.acc_bound`) for `--report`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    DenseIntOrFPElementsAttr,
    FloatAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    f32,
)
from xdsl.passes import ModulePass

from q35c.compiler.options import check_float
from q35c.compiler.weights import store_of

# Re-exported: the driver's --report and the tests import these from the pass.
from q35c.passes.quant_error.analysis import (
    analyse_function as analyse_function,
    float_source as float_source,
)
from q35c.passes.quant_error.bounds import _l1_box_max as _l1_box_max
from q35c.passes.quant_error.report import (
    ATTR_BOUND,
    ATTR_COLS,
    ATTR_INPUT,
    ATTR_PARTS,
    ATTR_RMS,
    report_table as report_table,
)


@dataclass(frozen=True)
class VerifyQuantErrorPass(ModulePass):
    """Bound the error of every quantized matmul (worst case per output element, and RMS)."""

    name = "verify-quant-error"

    arg_range: float = 0.0
    """|x| <= arg-range for every float function argument; 0: unbounded."""
    input_range: float = 0.0
    """Declares |x| <= input-range at the input of every quantized matmul; 0: none."""
    column_bounds: bool = False
    """Also record the per-column bounds as a dense `q35c.err_bound_cols` attribute."""

    def __post_init__(self) -> None:
        check_float(f"--passes {self.name}", "arg-range", self.arg_range, 0.0)
        check_float(f"--passes {self.name}", "input-range", self.input_range, 0.0)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        store = store_of(op)
        for fn in op.walk():
            if not isinstance(fn, func.FuncOp) or not fn.body.blocks:
                continue
            # The bound computations are many small float64 matmuls (K x chunk): BLAS
            # threads only add synchronisation (docs/benchmarks.md, 17.2 s -> 14.0 s).
            with threadpool_limits(1, user_api="blas"):
                layers = analyse_function(fn, store, self.arg_range, self.input_range)
            for layer in layers:
                attrs = layer.op.attributes
                for stale in (ATTR_INPUT, ATTR_BOUND, ATTR_RMS, ATTR_COLS):
                    attrs.pop(stale, None)
                attrs[ATTR_PARTS] = StringAttr(layer.parts)
                if layer.bound is None:
                    continue
                attrs[ATTR_INPUT] = FloatAttr(_round_up(layer.input_absmax), f32)
                attrs[ATTR_BOUND] = FloatAttr(_round_up(float(layer.bound.max(initial=0))), f32)
                attrs[ATTR_RMS] = FloatAttr(float(np.float32(layer.rms)), f32)
                if self.column_bounds:
                    cols = layer.bound.reshape(-1, layer.shape[1]).max(axis=0)
                    cols = np.nextafter(cols.astype(np.float32), np.float32(np.inf))
                    attrs[ATTR_COLS] = DenseIntOrFPElementsAttr.from_list(
                        TensorType(f32, [layer.shape[1]]), cols.tolist())


def _round_up(x: float) -> float:
    """x as a float32 no smaller than x, so the recorded attribute is still a bound."""
    y = np.float32(x)
    if y < x:
        y = np.nextafter(y, np.float32(np.inf))
    return float(y)
