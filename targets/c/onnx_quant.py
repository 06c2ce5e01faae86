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
from q35c.targets.c.onnx_tensor import (
    HALF,
    RUNTIME,
    _fail,
    compute_type,
    load,
    operand_index,
    store,
)
from q35c.targets.c.printer import _int_array
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
    if not q["subtract"] and zero:  # float8 (checked) and float4 data: not subtracted
        head = [f"(void){printer.ptr(zero[0], True)};"]
    if zero and q["zero_check"]:
        head = [f"for (i = 0; i < {zero[0].size}; i++)",
                f"    if ({narrow.float_to_int(np.dtype(np.uint8), load(printer, zero[0], 'i'))}"
                " != 0)",
                f"        {_fail(printer, step, 'a float8 zero point must be zero')}"]
    elif q["subtract"]:
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


def _dims(values) -> str:
    return _int_array(values or [1])


@renders("onnx_matmul_int", runtime=RUNTIME)
def render_matmul_int(printer, step: Step) -> str:
    """int32 products accumulated with wrap-around (uint32), per broadcast batch."""
    out, q = step.outs[0], step.params
    a, b, *zeros = step.ins
    m, k, n = q["m"], q["k"], q["n"]
    decls = [f"static const int64_t odims[] = {_dims(q['batch'])}, "
             f"ast[] = {_dims(q['a_batch'])}, bst[] = {_dims(q['b_batch'])};"]
    value = {0: f"(int32_t){load(printer, a, 'ai')}", 1: f"(int32_t){load(printer, b, 'bi')}"}
    for (slot, st), zp in zip(q["zero"], zeros):
        shape = q["a_shape"] if slot == 0 else q["b_shape"]
        name = "az" if slot == 0 else "bz"
        decls.append(f"static const int64_t {name}dims[] = {_dims(shape)}, "
                     f"{name}st[] = {_dims(st)};")
        at = "ai" if slot == 0 else "bi"
        index = f"q35_bcast({at}, {len(shape)}, {name}dims, {name}st)"
        value[slot] += f" - (int32_t){load(printer, zp, index)}"
    rank = len(q["batch"])
    return "\n".join(decls + [
        "int64_t bt, r, c, t;",
        f"for (bt = 0; bt < {max(1, int(np.prod(q['batch'], dtype=np.int64)))}; bt++) {{",
        f"    const int64_t ao = q35_bcast(bt, {rank}, odims, ast), "
        f"bo = q35_bcast(bt, {rank}, odims, bst);",
        f"    for (r = 0; r < {m}; r++)",
        f"        for (c = 0; c < {n}; c++) {{",
        "            uint32_t acc = 0;",
        f"            for (t = 0; t < {k}; t++) {{",
        f"                const int64_t ai = ao + r * {k} + t, bi = bo + t * {n} + c;",
        f"                acc += (uint32_t)({value[0]}) * (uint32_t)({value[1]});",
        "            }",
        f"            {printer.ptr(out)}[(bt * {m} + r) * {n} + c] = (int32_t)acc;",
        "        }",
        "}"])


@renders("onnx_qlinear_out", runtime=RUNTIME)
def render_qlinear_out(printer, step: Step) -> str:
    """D = C * (a_scale * b_scale / y_scale) in double (numpy's int32 times float), plus
    the output zero point, rounded to nearest-even and clipped to the output's range."""
    out, q = step.outs[0], step.params
    product, *scales = step.ins
    decls, args = "", []
    for n, (buf, st) in enumerate(zip(scales, q["strides"])):
        decl, index = operand_index(buf, st, out, printer, f"st{n}")
        decls += decl
        args.append(load(printer, buf, index))
    if "q35_bcast" in "".join(args):
        decls = f"static const int64_t dims[] = {_int_array(out.shape)};\n" + decls
    ab, mult = np.dtype(q["ab"]), np.dtype(q["mult"])
    c1, c2 = compute_type(ab), compute_type(mult)
    scale = rounded(mult, f"({c2}){rounded(ab, f'({c1}){args[0]} * ({c1}){args[1]}')} / "
                          f"({c2}){args[2]}")
    d = f"(double){printer.ptr(product, True)}[i] * (double){scale}"
    if len(args) > 3:
        d += f" + (double){args[3]}"
    info = np.iinfo(out.dtype)
    return (f"{decls}for (i = 0; i < {out.size}; i++) {{\n"
            f"    double d = nearbyint({d});\n"
            f"    d = d < {info.min}.0 ? {info.min}.0 : (d > {info.max}.0 ? {info.max}.0 : d);\n"
            f"    {printer.ptr(out)}[i] = {store(out, 'd', True)};\n}}")


@renders("onnx_dynamic_quant", runtime=RUNTIME)
def render_dynamic_quant(printer, step: Step) -> str:
    """The reference's float32 steps: the range extended to 0 (NaN propagating), the
    scale, the zero point (Python's min / max, then rint), then each value."""
    y, y_scale, y_zero = step.outs
    x = printer.ptr(step.ins[0], True)
    n = step.ins[0].size
    return "\n".join([
        "float mx = 0, mn = 0, scale, start;",
        "double zp;",
        f"for (i = 0; i < {n}; i++) {{",
        f"    mx = (float)q35_fmaxn(mx, {x}[i]);",
        f"    mn = (float)q35_fminn(mn, {x}[i]);",
        "}",
        "scale = (mx == mn ? 1.0f : mx - mn) / 255.0f;",
        "start = 0.0f - mn / scale;",
        "zp = start < 255.0f ? (double)start : 255.0;",
        "zp = nearbyint(zp > 0 ? zp : 0.0);",
        f"{printer.ptr(y_scale)}[0] = {store(y_scale, 'scale', True)};",
        f"{printer.ptr(y_zero)}[0] = {store(y_zero, 'zp', True)};",
        f"for (i = 0; i < {n}; i++) {{",
        f"    double v = (double)nearbyintf({x}[i] / scale) + zp;",
        "    v = v < 0 ? 0 : (v > 255 ? 255 : v);",
        f"    {printer.ptr(y)}[i] = {store(y, 'v', True)};",
        "}"])


@renders("onnx_conv_int", runtime=RUNTIME)
def render_conv_int(printer, step: Step) -> str:
    """A direct convolution in int64 (exact), wrapped to int32 as the reference's astype;
    q holds Conv's geometry (targets/native/onnx_cnn.py `spatial`)."""
    out, q = step.outs[0], step.params
    x, w, *rest = step.ins
    rest = iter(rest)
    xzp = next(rest) if q["xzp"] else None
    wzp = next(rest) if q["wzp"] else None
    bias = next(rest) if q["bias"] else None
    n, c, m, group, *sp = q["q"]
    xv = f"(int64_t){load(printer, x, 'xi')}"
    if xzp is not None:
        xv += f" - (int64_t){load(printer, xzp, '0')}"
    wv = f"(int64_t){load(printer, w, 'wi')}"
    if wzp is not None:
        wv += f" - (int64_t){load(printer, wzp, 'oc' if q['wzp'] > 1 else '0')}"
    init = f"(int64_t){load(printer, bias, 'oc')}" if bias is not None else "0"
    return "\n".join([
        f"static const int64_t sp[] = {_int_array(sp)};",
        f"const int64_t cg = {c // group}, mg = {m // group};",
        "int64_t b, oc, od, oh, ow, ic, a, e, f;",
        f"for (b = 0; b < {n}; b++)",
        f"    for (oc = 0; oc < {m}; oc++)",
        "        for (od = 0; od < sp[3]; od++)",
        "            for (oh = 0; oh < sp[4]; oh++)",
        "                for (ow = 0; ow < sp[5]; ow++) {",
        f"                    int64_t acc = {init};",
        "                    const int64_t g = oc / mg;",
        "                    for (ic = 0; ic < cg; ic++)",
        "                        for (a = 0; a < sp[6]; a++)",
        "                            for (e = 0; e < sp[7]; e++)",
        "                                for (f = 0; f < sp[8]; f++) {",
        "                                    const int64_t xd = od * sp[9] - sp[12] + a * sp[15],",
        "                                        xh = oh * sp[10] - sp[13] + e * sp[16],",
        "                                        xw = ow * sp[11] - sp[14] + f * sp[17];",
        "                                    int64_t xi, wi;",
        "                                    if (xd < 0 || xd >= sp[0] || xh < 0 || xh >= sp[1]"
        " || xw < 0 || xw >= sp[2])",
        "                                        continue;",
        f"                                    xi = (((b * {c} + g * cg + ic) * sp[0] + xd) * sp[1]"
        " + xh) * sp[2] + xw;",
        "                                    wi = (((oc * cg + ic) * sp[6] + a) * sp[7] + e)"
        " * sp[8] + f;",
        f"                                    acc += ({xv}) * ({wv});",
        "                                }",
        f"                    {printer.ptr(out)}[(((b * {m} + oc) * sp[3] + od) * sp[4] + oh)"
        " * sp[5] + ow] = (int32_t)(uint32_t)(uint64_t)acc;",
        "                }"])
