"""C renderers of ONNX's linear quantization steps (targets/native/onnx_quant.py), with the
reference's numerics (onnx.reference's QuantizeLinear / DequantizeLinear, numpy):

- QuantizeLinear: `x / scale` in numpy's result type of the two (or `precision`), then to an
  integer type `rint`, to int32 (numpy's: INT32_MIN when out of range), plus the zero point
  (wrapping), clipped to the type's range; to a float8 saturated (`saturate`) or not, the
  zero point ignored; to float4 plus the zero point, then converted.
- DequantizeLinear: the data as float32, minus the zero point (integer data) in numpy's
  result type, times the scale in numpy's result type, converted to the output's type; a
  float8 zero point must be zero (the run fails otherwise, as the reference raises).
"""

from __future__ import annotations

import numpy as np

from q35c.targets.c import narrow
from q35c.targets.c.kernels import renders
from q35c.targets.c.onnx_tensor import HALF, RUNTIME, _fail, compute_type, load, store
from q35c.targets.native.program import Step

INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767),
              "uint16": (0, 65535), "int4": (-8, 7), "uint4": (0, 15), "int2": (-2, 1),
              "uint2": (0, 3)}
"""The integer types QuantizeLinear clips to."""


def rounded(dtype: np.dtype, expr: str) -> str:
    """`expr` rounded to `dtype` (a float type numpy computes in), in its compute type."""
    half = HALF.get(str(dtype))
    if half:
        return f"{half[0]}({half[1]}((double)({expr})))"
    return f"({compute_type(dtype)})({expr})"


def scale_index(q: dict) -> str:
    """The index in the scale (and zero point) of data element i."""
    if q["mode"] == "tensor":
        return "0"
    dim, inner = q["dim"], q["inner"]
    if q["mode"] == "axis":
        return f"(i / {inner}) % {dim}"
    return (f"(i / {dim * inner}) * {q['blocks'] * inner} + "
            f"((i / {inner}) % {dim}) / {q['block']} * {inner} + i % {inner}")


def _quantize(printer, step: Step) -> str:
    out, q = step.outs[0], step.params
    x, scale, *zero = step.ins
    div = np.dtype(q["div"])
    c = compute_type(div)
    value = rounded(div, f"({c}){load(printer, x, 'i')} / ({c}){load(printer, scale, 'k')}")
    name = str(out.dtype)
    if name in INT_RANGES:
        lo, hi = INT_RANGES[name]
        r = f"q35_f2i32(nearbyint((double)({value})))"
        if zero:
            r = f"(int32_t)((uint32_t){r} + (uint32_t)(int32_t){load(printer, zero[0], 'k')})"
        body = [f"int32_t r = {r};",
                f"r = r < {lo} ? {lo} : (r > {hi} ? {hi} : r);",
                f"{printer.ptr(out)}[i] = {store(out, 'r', False)};"]
    elif "add" in q:  # float4: plus the zero point
        add = np.dtype(q["add"])
        ca = compute_type(add)
        total = rounded(add, f"({ca}){value} + ({ca}){load(printer, zero[0], 'k')}")
        body = [f"{printer.ptr(out)}[i] = {store(out, total, True)};"]
    else:  # a float8: the zero point is not read
        body = [f"{printer.ptr(out)}[i] = "
                f"{narrow.store(out.dtype, value, True, q['saturate'])};"]
        if zero:
            return f"(void){printer.ptr(zero[0], True)};\n" + _loop(out, q, body)
    return _loop(out, q, body)


def _dequantize(printer, step: Step) -> str:
    out, q = step.outs[0], step.params
    x, scale, *zero = step.ins
    sub, mul = np.dtype(q["sub"]), np.dtype(q["mul"])
    cs, cm = compute_type(sub), compute_type(mul)
    dx = f"({cs})(float){load(printer, x, 'i')}"
    head = []
    if zero and q["zero_check"]:
        head = [f"for (i = 0; i < {zero[0].size}; i++)",
                f"    if ({narrow.float_to_int(np.dtype(np.uint8), load(printer, zero[0], 'i'))}"
                " != 0)",
                f"        {_fail(printer, step, 'a float8 zero point must be zero')}"]
    elif zero:
        dx = rounded(sub, f"{dx} - ({cs}){load(printer, zero[0], 'k')}")
    y = rounded(mul, f"({cm}){dx} * ({cm}){load(printer, scale, 'k')}")
    return "\n".join(head) + ("\n" if head else "") + _loop(
        out, q, [f"{printer.ptr(out)}[i] = {store(out, y, True)};"])


def _loop(out, q: dict, body: list[str]) -> str:
    return "\n".join([f"for (i = 0; i < {out.size}; i++) {{",
                      f"    const int64_t k = {scale_index(q)};",
                      *("    " + line for line in body),
                      "    (void)k;",
                      "}"])


@renders("onnx_quant", runtime=(RUNTIME, narrow.RUNTIME))
def render_quant(printer, step: Step) -> str:
    if step.params["op"] == "QuantizeLinear":
        return _quantize(printer, step)
    return _dequantize(printer, step)
