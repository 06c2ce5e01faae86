"""C renderers of targets/native/onnx_misc.py's steps."""

from __future__ import annotations

from q35c.targets.c.kernels import renders
from q35c.targets.c.onnx_tensor import RUNTIME, compute_type, load, store
from q35c.targets.native.program import Step


@renders("onnx_dropout_train", runtime=(RUNTIME, "q35rt_misc.c"))
def render_dropout_train(printer, step: Step) -> str:
    """The reference's `_dropout`: the data and a mask of ones when not training or the
    ratio is 0; else numpy's uniform draws from RandomState(seed), kept where >= ratio,
    `mask * x * scale` in the data's type (scale = 1 / (1 - ratio) in the ratio's type, or
    2 for the default ratio 0.5)."""
    q = step.params
    x, *rest = step.ins
    given = dict(zip(q["in_slots"], rest))
    out = dict(zip(q["out_slots"], step.outs))
    c = compute_type(x.dtype)
    if 1 in given:
        rc = compute_type(given[1].dtype)
        ratio = f"{load(printer, given[1], '0')}"
        scale = f"({rc})(({rc})1 / ({rc})(({rc})1 - ratio))"
    else:
        rc, ratio, scale = "double", "0.5", "2.0"
    train = f"{load(printer, given[2], '0')} != 0" if 2 in given else "0"
    lines = [f"const {rc} ratio = {ratio};",
             f"const int train = ({train}) && ratio != 0;",
             f"const {c} scale = ({c})({scale});",
             "q35_mt19937 mt;",
             f"q35_mt_seed(&mt, {q['seed']}u);",
             "(void)scale;",
             f"for (i = 0; i < {x.size}; i++) {{",
             "    const int keep = !train || q35_mt_double(&mt) >= (double)ratio;",
             f"    const {c} v = {load(printer, x, 'i')};"]
    if 0 in out:
        value = f"train ? ({c})(({c})(keep ? v : ({c})0 * v) * scale) : v"
        lines.append(f"    {printer.ptr(out[0])}[i] = {store(out[0], value, c in ('float', 'double'))};")
    if 1 in out:
        lines.append(f"    {printer.ptr(out[1])}[i] = (uint8_t)keep;")
    lines.append("}")
    return "\n".join(lines)
