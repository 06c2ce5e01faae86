"""C renderer of the recurrent ops' step (targets/native/onnx_rnn.py): per direction, time
step and batch row, the gates as onnx's reference defines them, computed in double (the
states stay double between steps; outputs are rounded to the data's type). The reference
computes in the data's type with BLAS dot products, so results agree to the float path's
tolerance, not bit for bit.
"""

from __future__ import annotations

from q35c.targets.c.kernels import renders
from q35c.targets.c.onnx_tensor import RUNTIME, load, store
from q35c.targets.native.program import Step

SIGMOID = "(1.0 / (1.0 + exp(-({0}))))"


def _act(q: dict, value: str) -> str:
    """RNN's activation."""
    if q.get("act") == "affine":
        return f"({q['alpha']!r} * ({value}) + {q['beta']!r})"
    return f"tanh({value})"


@renders("onnx_rnn", runtime=RUNTIME)
def render_rnn(printer, step: Step) -> str:
    q = step.params
    *outs, scratch = step.outs
    x, w, r, *rest = step.ins
    given = dict(zip(q["in_slots"], rest))
    out = dict(zip(q["out_slots"], outs))
    T, N, K, H, D, G = (q[k] for k in ("steps", "batch", "input", "hidden", "dirs", "gates"))
    lay = q["layout"]
    s = printer.ptr(scratch)
    xi = f"((n * {T} + t) * {K} + i)" if lay else f"((t * {N} + n) * {K} + i)"
    state = (lambda j: f"((n * {D} + d) * {H} + {j})") if lay else \
        (lambda j: f"((d * {N} + n) * {H} + {j})")
    yi = f"(((n * {T} + t) * {D} + d) * {H} + j)" if lay else \
        f"(((t * {D} + d) * {N} + n) * {H} + j)"
    bias = (lambda k: f"(double){load(printer, given[3], f'd * {2 * G * H} + {k}')}") \
        if 3 in given else (lambda k: "0.0")
    rbias = lambda k: bias(f"{G * H} + {k}")  # noqa: E731
    peep = (lambda m: f"(double){load(printer, given[7], f'd * {3 * H} + {m}')}") \
        if 7 in given else (lambda m: "0.0")
    h, c, g, hn = (f"{s}[{off} + " for off in (0, N * H, 2 * N * H, 2 * N * H + G * H))

    def dot(buf, row: str, vec: str, length: int, var: str) -> list[str]:
        weight = load(printer, buf, f"(d * {G * H} + {row}) * {length} + {var}")
        return [f"for ({var} = 0; {var} < {length}; {var}++)",
                f"    acc += (double){weight} * {vec};"]

    lines = ["int64_t d, st, t, n, i, j, k;",
             f"for (d = 0; d < {D}; d++) {{",
             f"    const int rev = {int(q['reverse'])} || d == 1;",
             f"    for (n = 0; n < {N}; n++)",
             f"        for (j = 0; j < {H}; j++) {{"]
    init_h = f"(double){load(printer, given[5], state('j'))}" if 5 in given else "0.0"
    init_c = f"(double){load(printer, given[6], state('j'))}" if 6 in given else "0.0"
    lines += [f"            {h}n * {H} + j] = {init_h};",
              f"            {c}n * {H} + j] = {init_c};",
              "        }",
              f"    for (st = 0; st < {T}; st++) {{",
              f"        t = rev ? {T} - 1 - st : st;",
              f"        for (n = 0; n < {N}; n++) {{"]
    body = []
    # the gates with their recurrent term (GRU: only z and r)
    with_r = 2 * H if q["op"] == "GRU" else G * H
    body += [f"for (k = 0; k < {with_r}; k++) {{",
             f"    double acc = {bias('k')} + {rbias('k')};",
             *("    " + line for line in dot(w, "k", f"(double){load(printer, x, xi)}", K, "i")),
             *("    " + line for line in dot(r, "k", f"{h}n * {H} + i]", H, "i")),
             f"    {g}k] = acc;",
             "}"]
    if q["op"] == "RNN":
        body += [f"for (j = 0; j < {H}; j++)", f"    {hn}j] = {_act(q, f'{g}j]')};"]
    elif q["op"] == "LSTM":
        pi, po, pf = peep("j"), peep(f"{H} + j"), peep(f"{2 * H} + j")
        gi, go, gf, gc = (f"{g}{m * H} + j]" for m in range(4))
        body += [f"for (j = 0; j < {H}; j++) {{",
                 f"    const double ct = {c}n * {H} + j];",
                 f"    const double ig = {SIGMOID.format(gi + ' + ' + pi + ' * ct')};",
                 f"    const double fg = {SIGMOID.format(gf + ' + ' + pf + ' * ct')};",
                 f"    const double cn = fg * ct + ig * tanh({gc});",
                 f"    const double og = {SIGMOID.format(go + ' + ' + po + ' * cn')};",
                 f"    {c}n * {H} + j] = cn;",
                 f"    {hn}j] = og * tanh(cn);",
                 "}"]
    else:  # GRU
        hk = f"{2 * H} + j"
        body += [f"for (j = 0; j < {2 * H}; j++)",
                 f"    {g}j] = {SIGMOID.format(f'{g}j]')};",
                 f"for (j = 0; j < {H}; j++) {{",
                 "    double acc = 0, xw, hr;",
                 *("    " + line for line in dot(w, hk, f"(double){load(printer, x, xi)}", K, "i")),
                 "    xw = acc;",
                 "    acc = 0;"]
        if q["lbr"]:
            body += [*("    " + line for line in dot(r, hk, f"{h}n * {H} + i]", H, "i")),
                     f"    hr = {g}{H} + j] * (acc + {rbias(hk)});",
                     f"    acc = tanh(xw + hr + {bias(hk)});"]
        else:
            body += [*("    " + line for line in dot(r, hk, f"{g}{H} + i] * {h}n * {H} + i]", H,
                                                     "i")),
                     "    hr = acc;",
                     f"    acc = tanh(xw + hr + {bias(hk)} + {rbias(hk)});"]
        body += [f"    {hn}j] = (1.0 - {g}j]) * acc + {g}j] * {h}n * {H} + j];", "}"]
    body += [f"for (j = 0; j < {H}; j++) {{", f"    {h}n * {H} + j] = {hn}j];"]
    if 0 in out:
        body += [f"    {printer.ptr(out[0])}[{yi}] = {store(out[0], f'{hn}j]', True)};"]
    body += ["}"]
    lines += ["            " + line for line in body]
    lines += ["        }", "    }"]
    for slot, src in ((1, h), (2, c)):
        if slot in out:
            lines += [f"    for (n = 0; n < {N}; n++)", f"        for (j = 0; j < {H}; j++)",
                      f"            {printer.ptr(out[slot])}[{state('j')}] = "
                      f"{store(out[slot], f'{src}n * {H} + j]', True)};"]
    lines += ["}", "(void)k;", "(void)i;"]
    return "\n".join(lines)
