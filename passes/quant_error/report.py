"""The `--report` table of the verification passes, and the attributes they record on each
quantized matmul."""

from __future__ import annotations

import re

from xdsl.dialects.builtin import FloatAttr, ModuleOp, StringAttr
from xdsl.ir import Operation

from q35c.passes.matching import origin_of
from q35c.passes.quant_error.analysis import _weight_op
from q35c.passes.quant_error.intervals import QUANTIZED_MATMULS

ATTR_INPUT = "q35c.input_absmax"
ATTR_BOUND = "q35c.err_bound"
ATTR_RMS = "q35c.err_rms"
ATTR_PARTS = "q35c.err_parts"
ATTR_COLS = "q35c.err_bound_cols"
ATTR_ACC = "q35c.acc_bound"  # written by verify-overflow


def _attr(op: Operation, name: str):
    a = op.attributes.get(name)
    if isinstance(a, FloatAttr):
        return a.value.data
    if isinstance(a, StringAttr):
        return a.data
    if a is not None and hasattr(a, "value"):
        return a.value.data
    return None


def report_table(module: ModuleOp) -> str:
    """One row per quantized matmul, from the attributes the verification passes recorded."""
    header = ("layer", "op", "K x N", "|x| <=", "err bound", "err rms", "parts",
              "acc bound", "int32 use", "source")
    rows = []
    for op in module.walk():
        if not isinstance(op, QUANTIZED_MATMULS):
            continue
        packed = op.weights.type
        k, n = packed.get_shape()
        wop = _weight_op(op.weights)
        name = wop.weight_name.data if wop else f"<{op.weights.owner.name}>"
        name = re.sub(r"\.(q3p5|pair43)(\.\d+)?$", "", name)
        def fmt(v):
            return "-" if v is None else f"{v:.3g}"
        acc = _attr(op, ATTR_ACC)
        rows.append((name, op.name.split(".")[1], f"{k} x {n}", fmt(_attr(op, ATTR_INPUT)),
                     fmt(_attr(op, ATTR_BOUND)), fmt(_attr(op, ATTR_RMS)),
                     _attr(op, ATTR_PARTS) or "not verified",
                     "-" if acc is None else str(int(acc)),
                     "-" if acc is None else f"{acc / (2**31 - 1):.2%}",
                     origin_of(op) or "-"))
    if not rows:
        return "q35c report: no quantized matmuls\n"
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
             for r in [header, tuple("-" * w for w in widths), *rows]]
    return "\n".join(lines) + "\n"
