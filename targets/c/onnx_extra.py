"""C renderers of targets/native/onnx_extra.py's steps: inline loops typed by the buffers,
using the float16 / bfloat16 conversions of runtime/q35rt_onnx.c."""

from __future__ import annotations

import numpy as np

from q35c.targets.c.kernels import renders
from q35c.targets.c.onnx_tensor import HALF, RUNTIME, _fail, compute_type, is_float, load, store
from q35c.targets.c.printer import _float_literal, _int_array
from q35c.targets.native.lower import strides
from q35c.targets.native.program import Step


def _rounded(dtype: np.dtype, expr: str) -> str:
    """`expr` rounded to `dtype` and back to its compute type, as each numpy operation on
    arrays of `dtype` rounds its result."""
    half = HALF.get(str(dtype))
    if half:
        return f"{half[0]}({half[1]}((double)({expr})))"
    return f"({compute_type(dtype)})({expr})"


@renders("onnx_swiglu", runtime=RUNTIME)
def render_swiglu(printer, step: Step) -> str:
    """The reference's `a * (1 / (1 + exp(-alpha * a))).astype(T) * b`: alpha is a float32
    scalar, so the sigmoid is computed in float32 (float64 for float64 data) and rounded to
    the data's type T once; the two products are T's operations. exp is the C library's
    double one."""
    a, b = step.ins
    [out] = step.outs
    dt, ct = a.dtype, compute_type(a.dtype)
    st = "double" if dt == np.float64 else "float"
    neg_alpha = _float_literal(float(-np.float32(step.params["alpha"])), "float")
    sig = _rounded(dt, f"({st})1 / (({st})1 + e)")
    y = _rounded(dt, f"{_rounded(dt, 'x * s')} * {load(printer, b, 'i')}")
    return "\n".join([
        "int64_t i;",
        f"for (i = 0; i < {out.size}; i++) {{",
        f"    const {ct} x = {load(printer, a, 'i')};",
        f"    const {st} t = ({st}){neg_alpha} * ({st})x;",
        f"    const {st} e = ({st})exp((double)t);",
        f"    const {ct} s = {sig};",
        f"    const {ct} y = {y};",
        f"    {printer.ptr(out)}[i] = {store(out, 'y', True)};",
        "}"])


@renders("onnx_group_norm", runtime=RUNTIME)
def render_group_norm(printer, step: Step) -> str:
    """Per (batch row, group): the mean and the mean squared deviation summed in double,
    first element to last; then each element normalized in double, rounded to float32 (the
    reference's stash type) and scaled and shifted per channel (or group) in float32."""
    q = step.params
    x, scale, bias = step.ins
    [out] = step.outs
    C, G, S = q["channels"], q["groups"], q["spatial"]
    cpg = C // G
    n = cpg * S
    k = "g" if q["per_group"] else "c"
    y = (f"(float)((double)({load(printer, x, 'at')} - mean) * inv) * "
         f"(float){load(printer, scale, k)} + (float){load(printer, bias, k)}")
    return "\n".join([
        "int64_t b, g, c, i;",
        f"for (b = 0; b < {q['batch']}; b++)",
        f"    for (g = 0; g < {G}; g++) {{",
        f"        const int64_t base = (b * {C} + g * {cpg}) * {S};",
        "        double mean = 0.0, var = 0.0, inv;",
        f"        for (i = 0; i < {n}; i++)",
        f"            mean += (double){load(printer, x, 'base + i')};",
        f"        mean /= {n}.0;",
        f"        for (i = 0; i < {n}; i++) {{",
        f"            const double d = (double){load(printer, x, 'base + i')} - mean;",
        "            var += d * d;",
        "        }",
        f"        inv = 1.0 / sqrt((double)(float)(var / {n}.0) + "
        f"(double){_float_literal(q['epsilon'], 'float')});",
        f"        for (c = g * {cpg}; c < (g + 1) * {cpg}; c++)",
        f"            for (i = 0; i < {S}; i++) {{",
        f"                const int64_t at = c * {S} + i + b * {C * S};",
        f"                {printer.ptr(out)}[at] = {store(out, y, True)};",
        "            }",
        "    }",
        "(void)c;"])


@renders("onnx_center_crop_pad", runtime=RUNTIME)
def render_center_crop_pad(printer, step: Step) -> str:
    """Zeros, then the centred region copied; the run fails if the `shape` operand does not
    name the compiled output shape on the given axes."""
    q = step.params
    x, shape = step.ins
    [out] = step.outs
    o = printer.ptr(out)
    lines = ["int64_t i, rest, src, dst;"]
    for k, axis in enumerate(q["axes"]):
        lines += [f"if ((int64_t){printer.ptr(shape, True)}[{k}] != {q['out_shape'][axis]})",
                  f"    {_fail(printer, step, 'shape does not match the compiled output shape')}"]
    lines += [f"for (i = 0; i < {out.size}; i++)", f"    {o}[i] = {store(out, '0', False)};"]
    region = q["region"]
    total = int(np.prod(region)) if region else 1
    lines += [f"for (i = 0; i < {total}; i++) {{",
              "    rest = i;", f"    src = {q['src']};", f"    dst = {q['dst']};"]
    for axis in reversed(range(len(region))):
        lines += [f"    src += (rest % {region[axis]}) * {q['in_strides'][axis]};",
                  f"    dst += (rest % {region[axis]}) * {q['out_strides'][axis]};",
                  f"    rest /= {region[axis]};"]
    lines += [f"    {o}[dst] = {store(out, load(printer, x, 'src'), is_float(x.dtype))};", "}"]
    return "\n".join(lines)


@renders("onnx_tensor_scatter", runtime=RUNTIME)
def render_tensor_scatter(printer, step: Step) -> str:
    """The cache copied to the output, then each update row written at its batch row's
    write index plus its position (modulo the axis length when circular)."""
    q = step.params
    past, update, *rest = step.ins
    [out] = step.outs
    o = printer.ptr(out)
    B, P, M, L, In = (q[k] for k in ("batch", "prefix", "max_len", "len", "inner"))
    start = f"(int64_t){printer.ptr(rest[0], True)}[b]" if q["has_indices"] else "0"
    if q["circular"]:
        pos = [f"pos = ((start + s) % {M} + {M}) % {M};"]
    else:
        pos = ["pos = start + s;", "if (pos < 0)", f"    pos += {M};",
               f"if (pos < 0 || pos >= {M})",
               f"    {_fail(printer, step, 'write index out of range')}"]
    fl = is_float(past.dtype)
    return "\n".join([
        "int64_t i, b, p, s, pos, start;",
        f"for (i = 0; i < {out.size}; i++)",
        f"    {o}[i] = {store(out, load(printer, past, 'i'), fl)};",
        f"for (b = 0; b < {B}; b++) {{",
        f"    start = {start};",
        f"    for (p = 0; p < {P}; p++)",
        f"        for (s = 0; s < {L}; s++) {{",
        *("            " + line for line in pos),
        f"            for (i = 0; i < {In}; i++)",
        f"                {o}[((b * {P} + p) * {M} + pos) * {In} + i] = "
        f"{store(out, load(printer, update, f'((b * {P} + p) * {L} + s) * {In} + i'), fl)};",
        "        }",
        "}"])


@renders("onnx_affine_grid", runtime=RUNTIME)
def render_affine_grid(printer, step: Step) -> str:
    """Per batch row and grid point, theta times the homogeneous coordinates (x, y[, z], 1)
    summed in double in that order and rounded to float32, as the reference's float64
    matmul; the run fails if `size` is not the compiled output's batch and spatial sizes."""
    q = step.params
    theta, size = step.ins
    [out] = step.outs
    spatial, dims = q["spatial"], len(q["spatial"])
    points = int(np.prod(spatial))
    lines = ["int64_t n, p, k, rest;"]
    wanted = [q["batch"], None, *spatial]
    for k, want in enumerate(wanted):
        if want is not None:
            lines += [f"if ((int64_t){printer.ptr(size, True)}[{k}] != {want})",
                      f"    {_fail(printer, step, 'size does not match the compiled output')}"]
    for j, values in enumerate(q["axes"]):
        lines += [f"static const double ax{j}[{len(values)}] = "
                  f"{{{', '.join(repr(v) for v in values)}}};"]
    lines += [f"for (n = 0; n < {q['batch']}; n++)",
              f"    for (p = 0; p < {points}; p++) {{",
              f"        double c[{dims + 1}];",
              "        rest = p;"]
    for j in range(dims):  # x along the last spatial axis, then y, z
        extent = spatial[dims - 1 - j]
        lines += [f"        c[{j}] = ax{j}[rest % {extent}];", f"        rest /= {extent};"]
    t = load(printer, theta, f"(n * {dims} + k) * {dims + 1} + j")
    lines += [f"        c[{dims}] = 1.0;",
              f"        for (k = 0; k < {dims}; k++) {{",
              "            double acc = 0.0;",
              "            int64_t j;",
              f"            for (j = 0; j <= {dims}; j++)",
              f"                acc += (double){t} * c[j];",
              f"            {printer.ptr(out)}[(n * {points} + p) * {dims} + k] = (float)acc;",
              "        }",
              "    }"]
    return "\n".join(lines)


@renders("onnx_grid_sample", runtime=(RUNTIME, "q35rt_extra.c"))
def render_grid_sample(printer, step: Step) -> str:
    """A call of runtime/q35rt_extra.c's `q35_grid_sample_point` per output element."""
    q = step.params
    x, grid = step.ins
    [out] = step.outs
    dims, nd = q["dims"], len(q["dims"])
    plane, points = int(np.prod(dims)), q["points"]
    doubles = lambda vs: "{" + ", ".join(repr(float(v)) for v in vs) + "}"  # noqa: E731
    return "\n".join([
        f"static const int64_t dims[{nd}] = {_int_array(dims)};",
        f"static const int64_t step[{nd}] = {_int_array(strides(dims))};",
        f"static const double lo[{nd}] = {doubles(q['lo'])}, hi[{nd}] = {doubles(q['hi'])};",
        "int64_t n, ch, p;",
        f"for (n = 0; n < {q['batch']}; n++)",
        f"    for (ch = 0; ch < {q['channels']}; ch++) {{",
        f"        const q35_gs g = {{{printer.ptr(x, True)} + (n * {q['channels']} + ch) * "
        f"{plane}, dims, step, lo, hi, {nd}, {q['pad']}, {int(q['mode'] == 1)}}};",
        f"        for (p = 0; p < {points}; p++)",
        f"            {printer.ptr(out)}[(n * {q['channels']} + ch) * {points} + p] = "
        f"q35_grid_sample_point(&g, {printer.ptr(grid, True)} + (n * {points} + p) * {nd}, "
        f"{q['align']}, {int(q['mode'] == 2)});",
        "    }"])


@renders("onnx_mel_weight_matrix", runtime=(RUNTIME, "q35rt_extra.c"))
def render_mel_weight_matrix(printer, step: Step) -> str:
    """The reference's filter bank: the edges' mels `2595 * log1p(hz / 700)` in the edges'
    type, divided by log(10) in double, the bin frequencies in double, numpy's floor
    division by the sample rate truncated to integers, then each triangle's weights as
    `(j - left) / (center - left)` and `(right - j) / (right - center)` in double. The run
    fails if the operands do not give the compiled shape or a bin falls outside it (the
reference raises an IndexError)."""
    q = step.params
    bins_in, dft, rate, low, high = step.ins
    [out] = step.outs
    o = printer.ptr(out)
    rows, bins = q["rows"], q["bins"]

    def mel(edge) -> str:
        if edge.dtype == np.float32:
            return f"(double)(2595.0f * log1pf({load(printer, edge, '0')} / 700.0f))"
        return f"(2595.0 * log1p((double){load(printer, edge, '0')} / 700.0))"

    def at(j: str, i: str) -> str:
        return f"{o}[({j}) * {bins} + ({i})]"

    rise = store(out, "(double)(j - f[i]) / (double)(f[i + 1] - f[i])", True)
    fall = store(out, "(double)(f[i + 2] - j) / (double)(f[i + 2] - f[i + 1])", True)
    return "\n".join([
        "int64_t i, j, f[" + str(bins + 2) + "];",
        f"const int64_t dft = (int64_t){load(printer, dft, '0')};",
        f"const double rate = (double){load(printer, rate, '0')};",
        f"const double lo = {mel(low)} / log(10.0);",
        f"const double step = ({mel(high)} / log(10.0) - lo) / {bins + 2}.0;",
        f"if ((int64_t){load(printer, bins_in, '0')} != {bins} || dft / 2 + 1 != {rows})",
        f"    {_fail(printer, step, 'the operands do not give the compiled output shape')}",
        f"for (i = 0; i < {bins + 2}; i++) {{",
        "    const double hz = 700.0 * expm1(((double)i * step + lo) / 2595.0 * log(10.0));",
        "    f[i] = (int64_t)q35_floor_divide((double)(dft + 1) * hz, rate);",
        f"    if (f[i] < 0 || f[i] >= {rows} + (i == {bins + 1}))",
        f"        {_fail(printer, step, 'a mel bin falls outside the spectrogram bins')}",
        "}",
        f"for (i = 0; i < {rows * bins}; i++)",
        f"    {o}[i] = {store(out, '0', False)};",
        f"for (i = 0; i < {bins}; i++) {{",
        "    if (f[i + 1] == f[i])",
        f"        {at('f[i + 1]', 'i')} = {store(out, '1', False)};",
        "    else",
        "        for (j = f[i]; j <= f[i + 1]; j++)",
        f"            {at('j', 'i')} = {rise};",
        "    for (j = f[i + 1]; j < f[i + 2]; j++)",
        f"        {at('j', 'i')} = {fall};",
        "}"])
