"""C renderers of the attention family's steps (targets/native/onnx_attention.py): calls of
the kernels of runtime/q35rt_attn.c with their static parameters as one int64 table, and
Einsum as an inline loop nest (output labels outer, summed labels inner) over the helpers
of runtime/q35rt_onnx.c.

Einsum sums in double for floats (rounded through float32 for float32, float16 and
bfloat16 results: the reference sums bfloat16 in float32) and in uint64_t for integers
(numpy's wrapping sums of products, modulo the width).
"""

from __future__ import annotations

from q35c.compiler.codegen_names import c_string
from q35c.targets.c.kernels import renders
from q35c.targets.c.onnx_tensor import RUNTIME as ONNX_RUNTIME, is_float, load, store
from q35c.targets.c.printer import _float_literal, _int_array
from q35c.targets.native.lower import strides
from q35c.targets.native.program import Step

RUNTIME = (ONNX_RUNTIME, "q35rt_attn.c")
"""The attention kernels use q35rt_onnx.c's float16 / bfloat16 conversions."""


def _ptr(printer, buf, const: bool = False) -> str:
    return "NULL" if buf is None else printer.ptr(buf, const)


def _outputs(step: Step, count: int) -> list:
    """The step's results by output slot 0..count-1 (None where not asked for)."""
    given = dict(zip(step.params["slots"], step.outs))
    return [given.get(s) for s in range(count)]


@renders("onnx_attention", runtime=RUNTIME)
def render_attention(printer, step: Step) -> str:
    q = step.params
    y, present_k, present_v, qk = _outputs(step, 4)
    work = step.outs[-1]
    ins = iter(step.ins)
    query, key, value = next(ins), next(ins), next(ins)
    mask = next(ins) if q["mask"][0] >= 0 else None
    past_k, past_v = (next(ins), next(ins)) if q["past"] else (None, None)
    nonpad = next(ins) if q["nonpad"] else None
    table = [q["mode"], q["softmax_mode"], *q["dims"], *q["qst"], *q["kst"], *q["vst"],
             *q["yst"], *q["mask"], q["causal"], *q["window"], q["qk_mode"], q["score_mode"],
             q["causal_per_query"]]
    return (f"static const int64_t p[] = {_int_array(table)};\n"
            f"q35_attention({_ptr(printer, y)}, {_ptr(printer, present_k)}, "
            f"{_ptr(printer, present_v)}, {_ptr(printer, qk)}, {printer.ptr(work)}, "
            f"{printer.ptr(query, True)}, {printer.ptr(key, True)}, "
            f"{printer.ptr(value, True)}, {_ptr(printer, mask, True)}, "
            f"{_ptr(printer, past_k, True)}, {_ptr(printer, past_v, True)}, "
            f"{_ptr(printer, nonpad, True)}, p, {_float_literal(q['scale'], 'double')}, "
            f"{_float_literal(q['softcap'], 'double')});")


@renders("onnx_rotary", runtime=RUNTIME)
def render_rotary(printer, step: Step) -> str:
    q = step.params
    x, cos, sin, *pos = step.ins
    table = [*q["dims"], *q["xst"], *q["lead"], q["interleaved"]]
    return (f"static const int64_t p[] = {_int_array(table)};\n"
            f"if (q35_rotary({printer.ptr(step.outs[0])}, {printer.ptr(x, True)}, "
            f"{printer.ptr(cos, True)}, {printer.ptr(sin, True)}, "
            f"{_ptr(printer, pos[0] if pos else None, True)}, p, {q['mode']}) != 0)\n"
            f"    return {printer.prefix}_fail("
            f"{c_string(step.origin + ': position id out of range')});")


@renders("onnx_linear_attention", runtime=RUNTIME)
def render_linear_attention(printer, step: Step) -> str:
    q = step.params
    y, present = _outputs(step, 2)
    work = step.outs[-1]
    has_past, gated, delta = q["has"]
    ins = iter(step.ins)
    query, key, value = next(ins), next(ins), next(ins)
    past, decay, beta = (next(ins) if flag else None for flag in (has_past, gated, delta))
    codes = iter(q["codes"][3:])
    optional = [next(codes) if flag else -1 for flag in (has_past, gated, delta)]
    outs = dict(zip(q["slots"], q["out_codes"]))
    table = [*q["dims"], gated, delta, q["decay_per_key"], q["beta_per_head"],
             *q["codes"][:3], *optional, outs.get(0, -1), outs.get(1, -1)]
    return (f"static const int64_t p[] = {_int_array(table)};\n"
            f"q35_linear_attention({_ptr(printer, y)}, {_ptr(printer, present)}, "
            f"{printer.ptr(work)}, {printer.ptr(query, True)}, {printer.ptr(key, True)}, "
            f"{printer.ptr(value, True)}, {_ptr(printer, past, True)}, "
            f"{_ptr(printer, decay, True)}, {_ptr(printer, beta, True)}, p, "
            f"{_float_literal(q['scale'], 'double')});")


@renders("onnx_causal_conv", runtime=RUNTIME)
def render_causal_conv(printer, step: Step) -> str:
    q = step.params
    y, present = _outputs(step, 2)
    ins = iter(step.ins)
    x, w = next(ins), next(ins)
    bias = next(ins) if q["bias"] else None
    past = next(ins) if q["past"] else None
    table = [*q["dims"], q["bias"], q["silu"]]
    return (f"static const int64_t p[] = {_int_array(table)};\n"
            f"q35_causal_conv({_ptr(printer, y)}, {_ptr(printer, present)}, "
            f"{printer.ptr(x, True)}, {printer.ptr(w, True)}, {_ptr(printer, bias, True)}, "
            f"{_ptr(printer, past, True)}, p, {q['mode']});")


@renders("onnx_einsum", runtime=ONNX_RUNTIME)
def render_einsum(printer, step: Step) -> str:
    """for each output label: (acc = 0; for each summed label: acc += product; store)."""
    out, q = step.outs[0], step.params
    extents, outer = q["extents"], q["outer"]
    fl = is_float(out.dtype)
    idx = [f"e{a}" for a in range(len(extents))]

    def at(st: list[int]) -> str:
        terms = [f"{i} * {s}" if s != 1 else i for i, s in zip(idx, st) if s]
        return " + ".join(terms) or "0"

    cast = "(double)" if fl else "(uint64_t)"
    product = " * ".join(f"{cast}{load(printer, buf, at(st))}"
                         for buf, st in zip(step.ins, q["strides"]))
    ost = strides(out.shape)
    acc_t = "double" if fl else "uint64_t"
    via_float = fl and out.dtype.itemsize <= 4 and not q.get("round_once")
    final = "(double)(float)acc" if via_float else "acc"
    loops = [f"for ({i} = 0; {i} < {n}; {i}++)" for i, n in zip(idx, extents)]
    lines = [f"int64_t {', '.join(idx)};"] if idx else []
    lines += ["    " * depth + loop for depth, loop in enumerate(loops[:outer])]
    if lines and outer:
        lines[-1] += " {"
    else:
        lines.append("{")
    pad = "    " * max(outer, 1)
    lines.append(f"{pad}{acc_t} acc = 0;")
    lines += [pad + "    " * depth + loop for depth, loop in enumerate(loops[outer:])]
    lines += [pad + "    " * (len(loops) - outer) + f"acc += {product};",
              f"{pad}{printer.ptr(out)}[{at(ost) if outer else '0'}] = {store(out, final, fl)};",
              "    " * max(outer - 1, 0) + "}"]
    return "\n".join(lines)


@renders("onnx_gemm_scale", runtime=ONNX_RUNTIME)
def render_gemm_scale(printer, step: Step) -> str:
    """Gemm's `o * alpha + c * beta` as the reference computes it (see lower_gemm): alpha
    and beta are float32 scalars, so float16, bfloat16 and float32 compute in float32
    (rounded to the element type once, at the end), float64 and the integers in double."""
    out, (dot, *c) = step.outs[0], step.ins
    q = step.params
    r = "double" if out.dtype.itemsize == 8 or out.dtype.kind in "iu" else "float"
    value = f"({r}){load(printer, dot, 'i')} * {_float_literal(q['alpha'], r)}"
    if c:
        n, (s0, s1) = q["n"], q["c_strides"]
        cv = load(printer, c[0], f"(i / {n}) * {s0} + (i % {n}) * {s1}")
        value = f"({r})({value}) + ({r})(({r}){cv} * {_float_literal(q['beta'], r)})"
    return (f"for (i = 0; i < {out.size}; i++)\n"
            f"    {printer.ptr(out)}[i] = {store(out, f'({r})({value})', True)};")
