"""C renderers of targets/native/onnx_misc.py's steps."""

from __future__ import annotations

from q35c.targets.c.kernels import renders
from q35c.targets.c.onnx_tensor import RUNTIME, _fail, compute_type, load, store
from q35c.targets.c.printer import _int_array
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
        stored = store(out[0], value, c in ("float", "double"))
        lines.append(f"    {printer.ptr(out[0])}[i] = {stored};")
    if 1 in out:
        lines.append(f"    {printer.ptr(out[1])}[i] = (uint8_t)keep;")
    lines.append("}")
    return "\n".join(lines)


@renders("onnx_dft", runtime=RUNTIME)
def render_dft(printer, step: Step) -> str:
    """A direct transform in double, twiddles from (k * n mod N) / N."""
    q = step.params
    x, *rest = step.ins
    given = dict(zip(q["in_slots"], rest))
    out = step.outs[0]
    shape, rank = q["shape"], len(q["shape"])
    c, cout = shape[-1], q["out_shape"][-1]
    axis = f"(int64_t){load(printer, given[2], '0')}" if 2 in given else str(q["axis"])
    inverse, onesided = int(q["inverse"]), int(q["onesided"])
    length = (f"(int64_t){load(printer, given[1], '0')}" if 1 in given else
              f"({inverse} && {onesided} ? 2 * (len - 1) : len)")
    xp = lambda n, part: load(printer, x, f"((o * len + {n}) * inner + r) * {c} + {part}")  # noqa: E731
    lines = [f"static const int64_t shape[] = {_int_array(shape)}, "
             f"oshape[] = {_int_array(q['out_shape'])};",
             f"int64_t a = {axis}, len, n_fft, bins, outer = 1, inner = 1, o, r, k, n;",
             "int d;",
             f"if (a < 0)\n    a += {rank};",
             f"if (a < 0 || a >= {rank - 1})\n    {_fail(printer, step, 'axis out of range')}",
             "len = shape[a];",
             f"n_fft = {length};",
             f"if (n_fft < 1)\n    {_fail(printer, step, 'dft_length must be positive')}",
             f"bins = {int(onesided and not inverse)} ? n_fft / 2 + 1 : n_fft;",
             f"for (d = 0; d < {rank - 1}; d++) {{",
             "    if (d < a)\n        outer *= shape[d];",
             "    if (d > a)\n        inner *= shape[d];",
             "    if (oshape[d] != (d == a ? bins : shape[d]))",
             f"        {_fail(printer, step, 'the output shape does not match the axis')}",
             "}",
             "for (o = 0; o < outer; o++)",
             "    for (k = 0; k < bins; k++)",
             "        for (r = 0; r < inner; r++) {",
             "            double re = 0, im = 0;",
             "            const int64_t at = ((o * bins + k) * inner + r);"]
    im = (lambda n: f"(double){xp(n, 1)}") if c == 2 else (lambda n: "0.0")
    if inverse and onesided:  # numpy's irfft: Hermitian bins, real output
        lines += ["            for (n = 0; n < len && n <= n_fft / 2; n++) {",
                  "                const double ang = 6.283185307179586 * "
                  "(double)((n * k) % n_fft) / (double)n_fft;",
                  f"                const double xr = (double){xp('n', 0)}, xi = {im('n')};",
                  "                if (n == 0)\n                    re += xr;",
                  "                else if (n_fft % 2 == 0 && n == n_fft / 2)",
                  "                    re += xr * cos(ang);",
                  "                else",
                  "                    re += 2.0 * (xr * cos(ang) - xi * sin(ang));",
                  "            }",
                  "            re /= (double)n_fft;"]
    else:
        sign = "" if inverse else "-"
        lines += ["            for (n = 0; n < len && n < n_fft; n++) {",
                  f"                const double ang = {sign}6.283185307179586 * "
                  "(double)((n * k) % n_fft) / (double)n_fft;",
                  f"                const double xr = (double){xp('n', 0)}, xi = {im('n')};",
                  "                re += xr * cos(ang) - xi * sin(ang);",
                  "                im += xr * sin(ang) + xi * cos(ang);",
                  "            }"]
        if inverse:
            lines += ["            re /= (double)n_fft;", "            im /= (double)n_fft;"]
    lines += [f"            {printer.ptr(out)}[at * {cout}] = {store(out, 're', True)};"]
    if cout == 2:
        lines += [f"            {printer.ptr(out)}[at * {cout} + 1] = {store(out, 'im', True)};"]
    lines += ["            (void)im;", "        }"]
    return "\n".join(lines)


@renders("onnx_nms", runtime=(RUNTIME, "q35rt_misc.c"))
def render_nms(printer, step: Step) -> str:
    q = step.params
    out, scratch = step.outs
    boxes, scores, *rest = step.ins
    given = dict(zip(q["in_slots"], rest))
    n, sel = q["boxes"], q["selected"]
    cand, chosen = printer.ptr(scratch), f"{printer.ptr(scratch)} + {n}"
    bp, sp = printer.ptr(boxes, True), printer.ptr(scores, True)
    limit = f"(int64_t){load(printer, given[2], '0')}"
    iou = f"(float){load(printer, given[3], '0')}" if 3 in given else "0.0f"
    score = f"(float){load(printer, given[4], '0')}" if 4 in given else "0.0f"
    too_many = _fail(printer, step, "more boxes selected than the compiled shape has")
    return "\n".join([
        f"const int64_t limit = {limit} > 0 ? {limit} : 0;",
        f"const float iou = {iou}, threshold = {score};",
        f"int64_t *cand = {cand}, *chosen = {chosen};",
        "int64_t b, c, j, t, count = 0;",
        "(void)threshold;",
        f"for (b = 0; b < {q['batches']}; b++)",
        f"    for (c = 0; c < {q['classes']}; c++) {{",
        f"        const float *s = {sp} + (b * {q['classes']} + c) * {n};",
        f"        const float *bx = {bp} + b * {n} * 4;",
        "        int64_t left = 0, taken = 0;",
        f"        for (j = 0; j < {n}; j++)",
        f"            if ({int(4 not in given)} || s[j] > threshold)",
        "                cand[left++] = j;",
        "        while (left > 0 && taken < limit) {",
        "            int64_t best = 0, top;",
        "            int keep = 1;",
        "            for (j = 1; j < left; j++)",
        "                if (s[cand[j]] > s[cand[best]] || "
        "(s[cand[j]] == s[cand[best]] && cand[j] < cand[best]))",
        "                    best = j;",
        "            top = cand[best];",
        "            cand[best] = cand[--left];",
        "            for (t = 0; t < taken; t++)",
        f"                if (q35_nms_suppress(bx + top * 4, bx + chosen[t] * 4, {q['center']}, "
        "iou)) {",
        "                    keep = 0;",
        "                    break;",
        "                }",
        "            if (!keep)",
        "                continue;",
        "            chosen[taken++] = top;",
        f"            if (count == {sel})",
        f"                {too_many}",
        f"            {printer.ptr(out)}[count * 3] = b;",
        f"            {printer.ptr(out)}[count * 3 + 1] = c;",
        f"            {printer.ptr(out)}[count * 3 + 2] = top;",
        "            count++;",
        "        }",
        "    }",
        f"if (count != {sel})",
        f"    {_fail(printer, step, 'fewer boxes selected than the compiled shape has')}"])


@renders("onnx_tfidf", runtime=RUNTIME)
def render_tfidf(printer, step: Step) -> str:
    """onnx.reference's compute_impl per row over the trie's tables, counts in int64, then
    the weighting (TFIDF: the double product rounded to float32, as the reference's
    assignment does)."""
    q = step.params
    out, freq = step.outs
    x = step.ins[0]
    size = max(q["indexes"]) + 1
    first, count, keys, kids = [], [], [], []
    for node in q["children"]:
        first.append(len(keys))
        count.append(len(node))
        keys += [k for k, _ in node]
        kids += [c for _, c in node]
    weights = q["weights"]
    f = printer.ptr(freq)
    value = {"TF": "(double)fr",
             "IDF": "fr > 0 ? w[j] : 0.0" if weights else "fr > 0 ? 1.0 : 0.0",
             "TFIDF": "w[j] * (double)fr" if weights else "(double)fr"}[q["mode"]]
    lines = [f"static const int64_t first[] = {_int_array(first)}, "
             f"count[] = {_int_array(count)}, key[] = {_int_array(keys or [0])}, "
             f"kid[] = {_int_array(kids or [0])}, id[] = {_int_array(q['ids'])}, "
             f"index[] = {_int_array(q['indexes'])};"]
    if weights:
        lines.append("static const double w[] = {"
                     + ", ".join(repr(v) for v in weights) + "};")
    cols = q["cols"]
    lines += [
        "int64_t row, skip, at, item, node, size, start, c, j;",
        f"for (i = 0; i < {freq.size}; i++)",
        f"    {f}[i] = 0;",
        f"for (row = 0; row < {q['rows']}; row++) {{",
        f"    start = {q['min']};",
        f"    for (skip = 1; skip <= {q['skip'] + 1}; skip++) {{",
        f"        for (at = 0; at < {cols}; at++) {{",
        f"            if (at + skip * (start - 1) >= {cols})",
        "                break;",
        "            item = at;",
        "            node = 0;",
        "            size = 1;",
        f"            while (count[node] > 0 && size <= {q['max']} && item < {cols}) {{",
        f"                const int64_t v = (int64_t){printer.ptr(x, True)}[row * {cols} + item];",
        "                for (c = first[node]; c < first[node] + count[node]; c++)",
        "                    if (key[c] == v)",
        "                        break;",
        "                if (c == first[node] + count[node])",
        "                    break;",
        "                if (size >= start && id[kid[c]] != 0)",
        f"                    {f}[row * {size} + index[id[kid[c]] - 1]]++;",
        "                node = kid[c];",
        "                size++;",
        "                item += skip;",
        "            }",
        "        }",
        "        if (start == 1) {",
        "            start++;",
        f"            if (start > {q['max']})",
        "                break;",
        "        }",
        "    }",
        "}",
        f"for (row = 0; row < {q['rows']}; row++)",
        f"    for (j = 0; j < {size}; j++) {{",
        f"        const int64_t fr = {f}[row * {size} + j];",
        f"        {printer.ptr(out)}[row * {size} + j] = {store(out, value, True)};",
        "    }"]
    return "\n".join(lines)


@renders("onnx_nonzero", runtime=RUNTIME)
def render_nonzero(printer, step: Step) -> str:
    q = step.params
    out, x = step.outs[0], step.ins[0]
    shape, count = q["shape"], q["count"]
    return "\n".join([
        f"static const int64_t dims[] = {_int_array(shape)};",
        "int64_t k = 0, r;",
        "int a;",
        f"for (i = 0; i < {x.size}; i++) {{",
        f"    if (!({load(printer, x, 'i')} != 0))",
        "        continue;",
        f"    if (k == {count})",
        f"        {_fail(printer, step, 'more non-zero elements than the compiled shape has')}",
        "    r = i;",
        f"    for (a = {len(shape) - 1}; a >= 0; a--) {{",
        f"        {printer.ptr(out)}[a * {count} + k] = r % dims[a];",
        "        r /= dims[a];",
        "    }",
        "    k++;",
        "}",
        f"if (k != {count})",
        f"    {_fail(printer, step, 'fewer non-zero elements than the compiled shape has')}"])


@renders("onnx_stft", runtime=RUNTIME)
def render_stft(printer, step: Step) -> str:
    """Per frame, the windowed samples rounded to the data's type (the reference multiplies
    in it), then a direct transform in double."""
    q = step.params
    out = step.outs[0]
    x, hop_buf, *rest = step.ins
    given = dict(zip(q["in_slots"], rest))
    batch, length, c = x.shape
    _, frames, bins, _ = q["out_shape"]
    ct = compute_type(x.dtype)
    wsize = f"{given[2].size}" if 2 in given else ("flen" if 3 in given else str(length))
    flen = (f"(int64_t){load(printer, given[3], '0')}" if 3 in given else wsize)
    weight = f"({ct}){load(printer, given[2], 'n')}" if 2 in given else f"({ct})1"
    xv = lambda part: f"{load(printer, x, f'(b * {length} + at) * {c} + {part}')}"  # noqa: E731
    im = f"(double)({ct})({xv(1)} * w)" if c == 2 else "0.0"
    mismatch = _fail(printer, step, "the output shape does not match frame_step / frame_length")
    positive = _fail(printer, step, "frame_step and frame_length must be positive")
    return "\n".join([
        f"const int64_t hop = (int64_t){load(printer, hop_buf, '0')};",
        "int64_t flen, wsize, frames, bins, b, f, k, n;",
        f"flen = {flen};",
        f"wsize = {wsize};",
        f"if (hop < 1 || flen < 1)\n    {positive}",
        f"frames = {length} - flen >= 0 ? 1 + ({length} - flen) / hop : "
        f"1 - (flen - {length} + hop - 1) / hop;",
        f"bins = {int(q['onesided'])} ? flen / 2 + 1 : flen;",
        f"if (frames != {frames} || bins != {bins})\n    {mismatch}",
        f"for (b = 0; b < {batch}; b++)",
        "    for (f = 0; f < frames; f++)",
        "        for (k = 0; k < bins; k++) {",
        "            double re = 0, im = 0;",
        "            for (n = 0; n < wsize && n < flen; n++) {",
        "                const int64_t at = f * hop + n;",
        "                double ang, vr, vi;",
        f"                {ct} w;",
        f"                if (at >= {length})",
        "                    break;",
        f"                w = {weight};",
        f"                vr = (double)({ct})({xv(0)} * w);",
        f"                vi = {im};",
        "                ang = -6.283185307179586 * (double)((n * k) % flen) / (double)flen;",
        "                re += vr * cos(ang) - vi * sin(ang);",
        "                im += vr * sin(ang) + vi * cos(ang);",
        "            }",
        f"            {printer.ptr(out)}[((b * frames + f) * bins + k) * 2] = "
        f"{store(out, 're', True)};",
        f"            {printer.ptr(out)}[((b * frames + f) * bins + k) * 2 + 1] = "
        f"{store(out, 'im', True)};",
        "        }"])


@renders("onnx_det", runtime=RUNTIME)
def render_det(printer, step: Step) -> str:
    out, lu = step.outs
    x, n = step.ins[0], step.params["n"]
    a = printer.ptr(lu)
    return "\n".join([
        "int64_t m, r, c, p;",
        f"for (m = 0; m < {out.size}; m++) {{",
        "    double det = 1;",
        f"    for (r = 0; r < {n * n}; r++)",
        f"        {a}[r] = (double){load(printer, x, f'm * {n * n} + r')};",
        f"    for (c = 0; c < {n}; c++) {{",
        "        p = c;",
        f"        for (r = c + 1; r < {n}; r++)",
        f"            if (fabs({a}[r * {n} + c]) > fabs({a}[p * {n} + c]))",
        "                p = r;",
        "        if (p != c) {",
        f"            for (r = 0; r < {n}; r++) {{",
        f"                const double t = {a}[c * {n} + r];",
        f"                {a}[c * {n} + r] = {a}[p * {n} + r];",
        f"                {a}[p * {n} + r] = t;",
        "            }",
        "            det = -det;",
        "        }",
        f"        det *= {a}[c * {n} + c];",
        f"        if ({a}[c * {n} + c] == 0)",
        "            break;",
        f"        for (r = c + 1; r < {n}; r++) {{",
        f"            const double f = {a}[r * {n} + c] / {a}[c * {n} + c];",
        f"            for (p = c; p < {n}; p++)",
        f"                {a}[r * {n} + p] -= f * {a}[c * {n} + p];",
        "        }",
        "    }",
        f"    {printer.ptr(out)}[m] = {store(out, 'det', True)};",
        "}"])


@renders("onnx_unique", runtime=(RUNTIME, "q35rt_misc.c"))
def render_unique(printer, step: Step) -> str:
    """Sort keys loaded from x, `q35_unique`, then Y gathered (bytes, any element type)
    and the int64 outputs copied from the scratch."""
    q = step.params
    x = step.ins[0]
    slots = q["out_slots"]
    outs = dict(zip(slots, step.outs))
    keys, perm, tmp, first, inverse, counts = step.outs[len(slots):]
    length, outer, inner, count = q["length"], q["outer"], q["inner"], q["count"]
    kind = {"float64": 0, "int64": 1, "uint64": 2}[str(keys.dtype)]
    key_type = {0: "double", 1: "int64_t", 2: "uint64_t"}[kind]
    t_outer, t_len, t_inner = q["take"]
    y = outs[0]
    lines = [
        "{",
        "int64_t o, j, p, u;",
        f"for (o = 0; o < {outer}; o++)",
        f"    for (j = 0; j < {length}; j++)",
        f"        for (p = 0; p < {inner}; p++)",
        f"            {printer.ptr(keys)}[j * {outer * inner} + o * {inner} + p] = "
        f"({key_type}){load(printer, x, f'(o * {length} + j) * {inner} + p')};",
        f"u = q35_unique({printer.ptr(keys, True)}, {kind}, {length}, {outer * inner}, "
        f"{int(q['nan_equal'])}, {int(q['sorted'])}, {printer.ptr(perm)}, {printer.ptr(tmp)}, "
        f"{printer.ptr(first)}, {printer.ptr(inverse)}, {printer.ptr(counts)});",
        f"if (u != {count})",
        f"    {_fail(printer, step, f'the number of unique values is not the compiled {count}')}",
        f"for (j = 0; j < {count}; j++) {{",
        f"    const int64_t at = {printer.ptr(first, True)}[j];",
        f"    if (at >= {t_len})",
        f"        {_fail(printer, step, 'an index is out of range for axis 0 (sorted=0)')}",
        f"    for (o = 0; o < {t_outer}; o++)",
        f"        memcpy((unsigned char *){printer.ptr(y)} + (size_t)((o * {count} + j) * "
        f"{t_inner}) * sizeof *{printer.ptr(y)},",
        f"               (const unsigned char *){printer.ptr(x, True)} + (size_t)((o * {t_len} "
        f"+ at) * {t_inner}) * sizeof *{printer.ptr(y)},",
        f"               (size_t){t_inner} * sizeof *{printer.ptr(y)});",
        "}"]
    for slot, src, size in ((1, first, count), (2, inverse, length), (3, counts, count)):
        if slot in outs:
            lines.append(f"memcpy({printer.ptr(outs[slot])}, {printer.ptr(src, True)}, "
                         f"(size_t){size} * sizeof(int64_t));")
    lines += ["(void)u;", "}"]
    return "\n".join(lines)
