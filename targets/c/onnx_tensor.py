"""C renderers of the generic ONNX ops' steps (targets/native/onnx_tensor.py): inline loops
typed by the buffers, calling the helpers of runtime/q35rt_onnx.c.

Values are loaded in a compute type: float16 and bfloat16 (stored as their bits) and float32
compute in float, float64 in double, integers and bools in their own type. Each
transcendental function is the C library's double-precision one rounded to the compute type
once (`q35_<fn>_f` for float), so every float step rounds where numpy's float32 does.
Integer arithmetic that numpy wraps is done in uint64_t; `store` converts the result to the
output's element type (float to integer through q35_f2i64, to float16 and bfloat16 rounding
to nearest-even, to bool as != 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from q35c.compiler.codegen_names import c_string
from q35c.targets.c import narrow
from q35c.targets.c.kernels import renders
from q35c.targets.c.printer import _float_literal, _int_array, ctype
from q35c.targets.native.program import Buffer, Step

RUNTIME = "q35rt_onnx.c"
HALF = {"float16": ("q35_f16_to_f32", "q35_f64_to_f16"),
        "bfloat16": ("q35_bf16_to_f32", "q35_f64_to_bf16")}


def compute_type(dtype: np.dtype) -> str:
    """The C type values of `dtype` are computed in."""
    if narrow.is_narrow(dtype):
        return narrow.compute_type(dtype)
    if str(dtype) in HALF or dtype == np.float32:
        return "float"
    if dtype == np.float64:
        return "double"
    return {"b": "uint8_t", "i": f"int{dtype.itemsize * 8}_t",
            "u": f"uint{dtype.itemsize * 8}_t"}[dtype.kind]


def is_float(dtype: np.dtype) -> bool:
    return compute_type(dtype) in ("float", "double")


def load(printer, buf: Buffer, index: str) -> str:
    """The element `index` of `buf` in its compute type."""
    value = f"{printer.ptr(buf, True)}[{index}]"
    if narrow.is_narrow(buf.dtype):
        return narrow.load(buf.dtype, value)
    half = HALF.get(str(buf.dtype))
    return f"{half[0]}({value})" if half else value


def store(out: Buffer, value: str, value_is_float: bool) -> str:
    """`value` converted to `out`'s element type, as numpy's astype does."""
    if narrow.is_narrow(out.dtype):
        return narrow.store(out.dtype, value, value_is_float)
    half = HALF.get(str(out.dtype))
    if half:
        return f"{half[1]}((double)({value}))"
    if out.dtype == np.bool_:
        return f"(uint8_t)(({value}) != 0)"
    if value_is_float and out.dtype.kind in "iu":
        conv = "q35_f2u64" if out.dtype == np.uint64 else "q35_f2i64"
        return f"({ctype(out)}){conv}((double)({value}))"
    return f"({ctype(out)})({value})"


def libm(name: str, c: str) -> str:
    """The libm function `name` in compute type `c` (float: double's, rounded once)."""
    return f"q35_{name}_f" if c == "float" else name


# -- elementwise ---------------------------------------------------------------------------

@dataclass
class Ctx:
    """What an expression builder knows: the loaded operands `a`, their element types, the
    node's attributes, the output's element type."""

    a: list[str]
    dtypes: list[np.dtype]
    attrs: dict
    slots: list[int]
    out: np.dtype

    @property
    def c(self) -> str:
        return compute_type(self.dtypes[0])

    @property
    def fl(self) -> bool:
        return is_float(self.dtypes[0])

    def f(self, name: str, *args: str) -> str:
        return f"{libm(name, self.c)}({', '.join(args)})"

    def lit(self, value: float) -> str:
        return _float_literal(float(value), self.c) if self.c in ("float", "double") \
            else str(int(value))

    def wrap(self, sym: str) -> str:
        """A binary integer op folded over every operand, wrapping in uint64_t."""
        return "(" + f" {sym} ".join(f"(uint64_t){x}" for x in self.a) + ")"


def _chain(fn: Callable[[str, str], str], args: list[str]) -> str:
    acc = args[0]
    for x in args[1:]:
        acc = fn(acc, x)
    return acc


def _unary_float(name: str) -> Callable[[Ctx], str]:
    return lambda x: x.f(name, x.a[0])


def _minmax(kind: str) -> Callable[[Ctx], str]:
    def build(x: Ctx) -> str:
        if x.fl:
            return _chain(lambda p, q: f"q35_f{kind}n({p}, {q})", x.a)
        fn = "q35_i" if x.dtypes[0].kind in "ib" else "q35_u"
        return _chain(lambda p, q: f"{fn}{kind}({p}, {q})", x.a)
    return build


def _div(x: Ctx) -> str:
    a, b = x.a
    if x.fl:
        return f"{a} / {b}"
    if x.dtypes[0].kind == "u":
        return f"q35_div_u64({a}, {b})"
    return f"q35_div_i64({a}, {b})"


def _mod(x: Ctx) -> str:
    a, b = x.a
    fmod = x.attrs.get("fmod", 0)
    if x.fl:
        return f"fmod((double){a}, (double){b})" if fmod else f"q35_mod_f64({a}, {b})"
    if x.dtypes[0].kind == "u":
        return f"q35_mod_u64({a}, {b})"
    return f"q35_{'fmod' if fmod else 'mod'}_i64({a}, {b})"


def _pow(x: Ctx) -> str:
    a, b = x.a
    if x.fl:
        if is_float(x.dtypes[1]) and x.c == compute_type(x.dtypes[1]):
            return x.f("pow", a, b)
        return f"pow((double){a}, (double){b})"  # numpy promotes to float64
    if is_float(x.dtypes[1]):
        return f"pow((double){a}, (double){b})"
    return f"q35_ipow((uint64_t){a}, (int64_t){b})"


def _shift(x: Ctx) -> str:
    a, b = x.a
    bits = x.dtypes[0].itemsize * 8
    if x.attrs["direction"] == "LEFT":
        return f"q35_shl((uint64_t){a}, (uint64_t){b}, {bits})"
    if x.dtypes[0].kind == "i":
        return f"q35_sar((int64_t){a}, (int64_t){b}, {bits})"
    return f"q35_shr((uint64_t){a}, (uint64_t){b}, {bits})"


def _clip(x: Ctx) -> str:
    value = x.a[0]
    bounds = dict(zip(x.slots[1:], x.a[1:]))
    if not bounds and "min" in x.attrs:  # Clip-6: attributes
        bounds = {1: x.lit(x.attrs["min"]), 2: x.lit(x.attrs["max"])}
    pick = _minmax("max")(Ctx([value, bounds[1]], x.dtypes[:1] * 2, {}, [], x.out)) \
        if 1 in bounds else value
    return _minmax("min")(Ctx([pick, bounds[2]], x.dtypes[:1] * 2, {}, [], x.out)) \
        if 2 in bounds else pick


def _mean(x: Ctx) -> str:
    n = len(x.a)
    if x.fl:
        return f"({_chain(lambda p, q: f'({p} + {q})', x.a)}) / {x.lit(n)}"
    return f"(double)({compute_type(x.out)}){x.wrap('+')} / {n}.0"


def _isinf(x: Ctx) -> str:
    v = x.a[0]
    pos, neg = x.attrs.get("detect_positive", 1), x.attrs.get("detect_negative", 1)
    tests = ([f"{v} == INFINITY"] if pos else []) + ([f"{v} == -INFINITY"] if neg else [])
    return " || ".join(tests) or "0"


def _erf(x: Ctx, arg: str) -> str:
    """The reference's Erf: math.erf vectorized with otypes 'f', so rounded to float32
    whatever the input's type (then converted back to it)."""
    return f"(double)(float)erf({arg})" if x.c == "double" else x.f("erf", arg)


def _gelu(x: Ctx) -> str:
    """Gelu's function body (opset 20): its constants are float32 tensors cast to the
    input's type, the square roots taken in that type, Erf rounded as the reference's."""
    v, c = x.a[0], x.c
    f32 = np.float32
    if x.attrs.get("approximate", "none") == "tanh":
        root = np.sqrt(f32(0.63661975)) if c == "float" else np.sqrt(float(f32(0.63661975)))
        cube = f"pow({v}, 3.0)" if c == "double" else f"({c})pow((double){v}, 3.0)"
        inner = f"({c})({x.lit(root)} * ({c})({v} + ({c})({x.lit(f32(0.044715))} * {cube})))"
        return f"({c})({x.lit(0.5)} * {v}) * ({x.lit(1)} + {x.f('tanh', inner)})"
    root = np.sqrt(f32(2)) if c == "float" else np.sqrt(2.0)
    return f"({c})({x.lit(0.5)} * {v}) * ({x.lit(1)} + {_erf(x, f'({c})({v} / {x.lit(root)})')})"


def _celu(x: Ctx) -> str:
    v, alpha = x.a[0], x.lit(x.attrs["alpha"])
    e = x.f("exp", f"({x.c})({v} / {alpha})")
    return f"({v} > 0 ? {v} : 0) + ({x.c})q35_fminn(0, ({x.c})({alpha} * ({e} - {x.lit(1)})))"


def _mish(x: Ctx) -> str:
    v = x.a[0]
    softplus = x.f("log", f"({x.c})({x.lit(1)} + {x.f('exp', v)})")
    return f"{v} * {x.f('tanh', softplus)}"


def _swish(x: Ctx) -> str:
    v = x.a[0]
    e = x.f("exp", f"-({x.c})({x.lit(x.attrs['alpha'])} * {v})")
    return f"{v} / ({x.lit(1)} + {e})"


def _where(x: Ctx) -> str:
    return f"{x.a[0]} ? {x.a[1]} : {x.a[2]}"


FLOAT_UNARY = ("Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Cos", "Cosh", "Sin",
               "Sinh", "Tan", "Tanh", "Exp", "Log", "Sqrt", "Erf")
EXPRESSIONS: dict[str, Callable[[Ctx], str]] = {
    **{op: _unary_float(op.lower()) for op in FLOAT_UNARY},
    "Erf": lambda x: _erf(x, x.a[0]),
    "Abs": lambda x: (x.f("fabs", x.a[0]) if x.fl else
                      f"({x.a[0]} < 0 ? 0u - (uint64_t){x.a[0]} : (uint64_t){x.a[0]})"
                      if x.dtypes[0].kind == "i" else x.a[0]),
    "Neg": lambda x: f"-{x.a[0]}" if x.fl else f"0u - (uint64_t){x.a[0]}",
    "Reciprocal": lambda x: f"{x.lit(1)} / {x.a[0]}",
    "Ceil": lambda x: x.f("ceil", x.a[0]),
    "Floor": lambda x: x.f("floor", x.a[0]),
    "Round": lambda x: x.f("nearbyint", x.a[0]),
    "Sign": lambda x: (f"q35_signf({x.a[0]})" if x.fl else
                       f"({x.a[0]} > 0 ? 1 : ({x.a[0]} < 0 ? -1 : 0))"),
    "Sigmoid": lambda x: f"{x.lit(1)} / ({x.lit(1)} + {x.f('exp', '-' + x.a[0])})",
    "Softplus": lambda x: x.f("log", f"({x.c})({x.f('exp', x.a[0])} + {x.lit(1)})"),
    "Softsign": lambda x: f"{x.a[0]} / ({x.lit(1)} + {x.f('fabs', x.a[0])})",
    "Relu": lambda x: f"({x.a[0]} > 0 ? {x.a[0]} : 0)",
    "IsNaN": lambda x: f"{x.a[0]} != {x.a[0]}",
    "IsInf": _isinf,
    "Not": lambda x: f"!{x.a[0]}",
    "BitwiseNot": lambda x: f"~(uint64_t){x.a[0]}",
    "Elu": lambda x: (f"({x.a[0]} < 0 ? ({x.c})({x.lit(x.attrs['alpha'])} * "
                      f"({x.f('exp', x.a[0])} - {x.lit(1)})) : {x.a[0]})"),
    "Celu": lambda x: _celu(x),
    "Selu": lambda x: (f"({x.a[0]} > 0 ? {x.a[0]} : ({x.c})({x.f('exp', x.a[0])} * "
                       f"{x.lit(x.attrs['alpha'])} - {x.lit(x.attrs['alpha'])})) * "
                       f"{x.lit(x.attrs['gamma'])}"),
    "LeakyRelu": lambda x: f"({x.a[0]} > 0 ? {x.a[0]} : {x.a[0]} * {x.lit(x.attrs['alpha'])})",
    "HardSigmoid": lambda x: (f"q35_fmaxn(0, q35_fminn(1, {x.a[0]} * "
                              f"{x.lit(x.attrs['alpha'])} + {x.lit(x.attrs['beta'])}))"),
    # HardSwish's body is HardSigmoid with the float32 attribute alpha = 1/6
    "HardSwish": lambda x: (f"{x.a[0]} * ({x.c})q35_fmaxn(0, q35_fminn(1, {x.a[0]} * "
                            f"{x.lit(np.float32(1 / 6))} + {x.lit(0.5)}))"),
    "ThresholdedRelu": lambda x: f"({x.a[0]} > {x.lit(x.attrs['alpha'])} ? {x.a[0]} : 0)",
    "Shrink": lambda x: (f"({x.a[0]} < -{x.lit(x.attrs['lambd'])} ? {x.a[0]} + "
                         f"{x.lit(x.attrs['bias'])} : ({x.a[0]} > {x.lit(x.attrs['lambd'])}"
                         f" ? {x.a[0]} - {x.lit(x.attrs['bias'])} : 0))"),
    "Mish": lambda x: _mish(x),
    "Swish": lambda x: _swish(x),
    "Gelu": _gelu,
    "Cast": lambda x: x.a[0], "CastLike": lambda x: x.a[0], "Expand": lambda x: x.a[0],
    "Add": lambda x: f"{x.a[0]} + {x.a[1]}" if x.fl else x.wrap("+"),
    "Sub": lambda x: f"{x.a[0]} - {x.a[1]}" if x.fl else x.wrap("-"),
    "Mul": lambda x: f"{x.a[0]} * {x.a[1]}" if x.fl else x.wrap("*"),
    "Div": _div, "Mod": _mod, "Pow": _pow, "BitShift": _shift,
    "Equal": lambda x: f"{x.a[0]} == {x.a[1]}",
    "Less": lambda x: f"{x.a[0]} < {x.a[1]}",
    "Greater": lambda x: f"{x.a[0]} > {x.a[1]}",
    "LessOrEqual": lambda x: f"{x.a[0]} <= {x.a[1]}",
    "GreaterOrEqual": lambda x: f"{x.a[0]} >= {x.a[1]}",
    "And": lambda x: f"{x.a[0]} && {x.a[1]}",
    "Or": lambda x: f"{x.a[0]} || {x.a[1]}",
    "Xor": lambda x: f"(!{x.a[0]}) != (!{x.a[1]})",
    "BitwiseAnd": lambda x: f"{x.a[0]} & {x.a[1]}",
    "BitwiseOr": lambda x: f"{x.a[0]} | {x.a[1]}",
    "BitwiseXor": lambda x: f"{x.a[0]} ^ {x.a[1]}",
    "PRelu": lambda x: f"({x.a[0]} < 0 ? {x.a[1]} * {x.a[0]} : {x.a[0]})",
    "Where": _where,
    "Max": _minmax("max"), "Min": _minmax("min"),
    "Sum": lambda x: (_chain(lambda p, q: f"({p} + {q})", x.a) if x.fl else x.wrap("+")),
    "Mean": _mean,
    "Clip": _clip,
}
"""The C expression of each elementwise op type (targets/native/onnx_tensor.py MAP_OPS)."""


def _result_is_float(op: str, x: Ctx) -> bool:
    """Whether the expression's value is a float (so a store to integers truncates)."""
    if op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or",
              "Xor", "Not", "IsNaN", "IsInf"):
        return False
    if op == "Pow":
        return x.fl or is_float(x.dtypes[1])
    if op == "Mean":
        return True
    if op == "Where":
        return is_float(x.dtypes[1])
    return x.fl


def operand_index(buf: Buffer, st: list[int], out: Buffer, printer, name: str
                  ) -> tuple[str, str]:
    """(declarations, index expression) of operand `buf` at output element i."""
    if buf.size == out.size and buf.shape == out.shape:
        return "", "i"
    if buf.size == 1:
        return "", "0"
    return (f"static const int64_t {name}[] = {_int_array(st)};\n",
            f"q35_bcast(i, {len(out.shape)}, dims, {name})")


@renders("onnx_map", runtime=RUNTIME)
def render_map(printer, step: Step) -> str:
    out, q = step.outs[0], step.params
    decls, args = "", []
    for n, (buf, st) in enumerate(zip(step.ins, q["strides"])):
        decl, index = operand_index(buf, st, out, printer, f"st{n}")
        decls += decl
        args.append(load(printer, buf, index))
    if "q35_bcast" in "".join(args):
        decls = f"static const int64_t dims[] = {_int_array(out.shape)};\n" + decls
    x = Ctx(args, [b.dtype for b in step.ins], q["attrs"], q["slots"], out.dtype)
    value = EXPRESSIONS[q["op"]](x)
    converted = store(out, value, _result_is_float(q["op"], x))
    if q["op"] in ("Cast", "CastLike"):
        converted = narrow.cast_store(out.dtype, step.ins[0].dtype, value, x.fl,
                                      q["attrs"]) or converted
    return (f"{decls}for (i = 0; i < {out.size}; i++)\n"
            f"    {printer.ptr(out)}[i] = {converted};")


# -- indexing ------------------------------------------------------------------------------

def _fail(printer, step: Step, why: str) -> str:
    return f"return {printer.prefix}_fail({c_string(step.origin + ': ' + why)});"


def _index(printer, step: Step, buf: Buffer, at: str, size: str, var: str) -> str:
    """C statements: `var` = index element `at` of `buf`, wrapped if negative, checked
    against `size`."""
    return (f"{var} = (int64_t){printer.ptr(buf, True)}[{at}];\n"
            f"if ({var} < 0)\n    {var} += {size};\n"
            f"if ({var} < 0 || {var} >= {size})\n    {_fail(printer, step, 'index out of range')}")


def _prod(values) -> int:
    return int(np.prod(values, dtype=np.int64))


def _strides(shape) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


REDUCE_APPLY = {"none": "{o} = {u};", "add": "{o} = ({T})({o} + {u});",
                "mul": "{o} = ({T})({o} * {u});", "max": "if ({u} > {o}) {o} = {u};",
                "min": "if ({u} < {o}) {o} = {u};"}


def _apply(reduction: str, out: Buffer, o: str, u: str) -> str:
    if str(out.dtype) in HALF and reduction != "none":
        half = HALF[str(out.dtype)]
        a, b = f"{half[0]}({o})", f"{half[0]}({u})"
        value = {"add": f"{a} + {b}", "mul": f"{a} * {b}", "max": f"q35_fmaxn({a}, {b})",
                 "min": f"q35_fminn({a}, {b})"}[reduction]
        return f"{o} = {half[1]}((double)({value}));"
    if out.dtype.kind in "iub" and reduction in ("add", "mul"):
        sym = "+" if reduction == "add" else "*"
        return f"{o} = ({ctype(out)})((uint64_t){o} {sym} (uint64_t){u});"
    return REDUCE_APPLY[reduction].format(o=o, u=u, T=ctype(out))


@renders("onnx_index", runtime=RUNTIME)
def render_index(printer, step: Step) -> str:
    out, q = step.outs[0], step.params
    data, idx = step.ins[:2]
    out_p, data_p, X = printer.ptr(out), printer.ptr(data, True), idx
    op = q["op"]
    dshape, ishape = q["data_shape"], q["index_shape"]
    T = ctype(out)
    if op == "Gather":
        axis = q["axis"]
        outer, size, inner = _prod(dshape[:axis]), dshape[axis], _prod(dshape[axis + 1:])
        return (f"int64_t o, j, k;\n"
                f"for (o = 0; o < {outer}; o++)\n"
                f"    for (j = 0; j < {idx.size}; j++) {{\n"
                + _indent(_index(printer, step, X, "j", str(size), "k"), 8) + "\n"
                f"        memcpy({out_p} + (o * {idx.size} + j) * {inner}, "
                f"{data_p} + (o * {size} + k) * {inner}, {inner} * sizeof({T}));\n"
                f"    }}")
    if op in ("GatherElements", "ScatterElements"):
        axis, rank = q["axis"], len(ishape)
        head = (f"static const int64_t idims[] = {_int_array(ishape)}, "
                f"dst[] = {_int_array(_strides(dshape))};\n"
                f"int64_t j, k, r, off, d;\nint a;\n")
        locate = (f"off = 0;\nr = j;\n"
                  f"for (a = {rank - 1}; a >= 0; a--) {{\n"
                  f"    d = r % idims[a];\n    r /= idims[a];\n"
                  f"    if (a != {axis})\n        off += d * dst[a];\n}}\n"
                  + _index(printer, step, X, "j", str(dshape[axis]), "k") + "\n"
                  f"off += k * dst[{axis}];\n")
        if op == "GatherElements":
            return (head + f"for (j = 0; j < {idx.size}; j++) {{\n" + _indent(locate, 4)
                    + f"\n    {out_p}[j] = {data_p}[off];\n}}")
        upd_p = printer.ptr(step.ins[2], True)
        return (head + f"memcpy({out_p}, {data_p}, {out.nbytes});\n"
                f"for (j = 0; j < {idx.size}; j++) {{\n" + _indent(locate, 4) + "\n"
                + _indent(_apply(q["reduction"], out, f"{out_p}[off]", f"{upd_p}[j]"), 4) + "\n}")
    # GatherND / ScatterND
    b = q.get("batch_dims", 0)
    m = ishape[-1]
    dst = _strides(dshape)
    slice_size = _prod(dshape[b + m:])
    count = _prod(ishape[:-1])
    per_batch = _prod(ishape[b:-1])
    lines = [f"static const int64_t dsizes[] = {_int_array(dshape[b:b + m] or [1])}, "
             f"dst[] = {_int_array(dst[b:b + m] or [1])};",
             "int64_t p, t, k, off;",
             f"for (p = 0; p < {count}; p++) {{",
             f"    off = (p / {per_batch}) * {_prod(dshape[b:])};",
             f"    for (t = 0; t < {m}; t++) {{",
             _indent(_index(printer, step, X, f"p * {m} + t", "dsizes[t]", "k"), 8),
             "        off += k * dst[t];",
             "    }"]
    if op == "GatherND":
        lines.append(f"    memcpy({out_p} + p * {slice_size}, {data_p} + off, "
                     f"{slice_size} * sizeof({T}));")
    else:
        upd_p = printer.ptr(step.ins[2], True)
        lines.insert(2, f"memcpy({out_p}, {data_p}, {out.nbytes});")
        lines += [f"    for (t = 0; t < {slice_size}; t++)",
                  _indent(_apply(q["reduction"], out, f"{out_p}[off + t]",
                                 f"{upd_p}[p * {slice_size} + t]"), 8)]
    lines.append("}")
    return "\n".join(lines)


def _indent(text: str, n: int) -> str:
    return "\n".join(" " * n + line for line in text.split("\n"))


# -- reductions ----------------------------------------------------------------------------

def _axes_setup(printer, step: Step, shape: list[int], axes_buf: Buffer | None,
                axes: list[int] | None, noop: bool) -> list[str]:
    """C that splits the axes of `shape` into kept (kdims/kst, nk of them) and reduced
    (rdims/rst, nr; rcount elements), the reduced ones read from `axes_buf` at run time
    when given (negative ones counted from the end, out of range a failure)."""
    rank = len(shape)
    size = max(rank, 1)
    lines = [f"static const int64_t shape[] = {_int_array(shape or [1])}, "
             f"st[] = {_int_array(_strides(shape) or [1])};",
             f"int64_t kdims[{size}], kst[{size}], rdims[{size}], rst[{size}], rcount = 1, t, a;",
             f"uint8_t red[{size}] = {{0}};",
             "int nk = 0, nr = 0, d;"]
    if axes_buf is not None:
        lines += [f"for (t = 0; t < {axes_buf.size}; t++) {{",
                  f"    a = (int64_t){printer.ptr(axes_buf, True)}[t];",
                  f"    if (a < 0)\n        a += {rank};",
                  f"    if (a < 0 || a >= {rank})",
                  f"        {_fail(printer, step, 'axis out of range')}",
                  "    red[a] = 1;",
                  "}"]
    else:
        lines += [f"red[{a}] = 1;" for a in axes]
    lines += ["(void)t;", "(void)a;",
              f"for (d = 0; d < {rank}; d++) {{",
              "    if (red[d]) {",
              "        rdims[nr] = shape[d];",
              "        rst[nr++] = st[d];",
              "        rcount *= shape[d];",
              "    } else {",
              "        kdims[nk] = shape[d];",
              "        kst[nk++] = st[d];",
              "    }",
              "}",
              "if (nk == 0) {",
              "    kdims[0] = 1;",
              "    kst[0] = 0;",
              "    nk = 1;",
              "}",
              "if (nr == 0) {",
              "    rdims[0] = 1;",
              "    rst[0] = 0;",
              "    nr = 1;",
              "}"]
    return lines


def _empty_extreme(dtype: np.dtype, op: str) -> str:
    """ReduceMax's (lowest) or ReduceMin's (highest) value of an empty set, as onnx's
    reference gives it: False / True for bool, the integer type's limit, -inf / inf."""
    lowest = op == "ReduceMax"
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return "0" if lowest else "1"
    if is_float(dtype):
        return "-INFINITY" if lowest else "INFINITY"
    info = ml_dtypes.iinfo(dtype)
    value = int(info.min if lowest else info.max)
    return "INT64_MIN" if value == -2**63 else f"{value}{'ULL' if value >= 2**63 else 'LL'}"


@renders("onnx_reduce", runtime=RUNTIME)
def render_reduce(printer, step: Step) -> str:
    """Kept axes outer, reduced axes inner: every output element sums (or ...) its
    reduced elements in index order, floats in double."""
    out, src, q = step.outs[0], step.ins[0], step.params
    axes_buf = step.ins[1] if len(step.ins) > 1 else None
    op = q["op"]
    fl = is_float(src.dtype)
    x = load(printer, src, "base + q35_bcast(r, nr, rdims, rst)")
    acc_t = "double" if fl or op not in ("ReduceSum", "ReduceProd", "ReduceMax",
                                         "ReduceMin") else \
        ("uint64_t" if op in ("ReduceSum", "ReduceProd") else compute_type(src.dtype))
    init = {"ReduceProd": "1", "ReduceMax": "v", "ReduceMin": "v"}.get(op, "0")
    if fl:
        update = {"ReduceSum": "acc += v;", "ReduceMean": "acc += v;",
                  "ReduceProd": "acc *= v;", "ReduceMax": "acc = q35_fmaxn(acc, v);",
                  "ReduceMin": "acc = q35_fminn(acc, v);", "ReduceL1": "acc += fabs(v);",
                  "ReduceL2": "acc += v * v;", "ReduceSumSquare": "acc += v * v;",
                  "ReduceLogSum": "acc += v;", "ReduceLogSumExp": "acc += exp(v - mx);"}[op]
        update = update.replace("v * v", "(double)v * v")
    else:
        update = {"ReduceSum": "acc += (uint64_t)v;", "ReduceProd": "acc *= (uint64_t)v;",
                  "ReduceMax": "if (v > acc) acc = v;", "ReduceMin": "if (v < acc) acc = v;",
                  "ReduceMean": "acc += (uint64_t)v;", "ReduceL1": "acc += fabs((double)v);",
                  "ReduceL2": "acc += (double)v * (double)v;",
                  "ReduceSumSquare": "acc += (double)v * (double)v;",
                  "ReduceLogSum": "acc += (double)v;",
                  "ReduceLogSumExp": "acc += exp((double)v - mx);"}[op]
    final = {"ReduceMean": "acc / (double)rcount", "ReduceL2": "sqrt(acc)",
             "ReduceLogSum": "log(acc)", "ReduceLogSumExp": "log(acc) + mx"}.get(op, "acc")
    if op == "ReduceMean" and not fl:  # numpy: an integer sum, then a true division
        acc_t = "uint64_t"
        final = f"(double)({compute_type(src.dtype)})acc / (double)rcount"
    vt = compute_type(src.dtype)
    lines = _axes_setup(printer, step, q["shape"], axes_buf, q.get("axes"), q["noop"])
    lines += ["int64_t o, r, base;",
              f"for (o = 0; o < {out.size}; o++) {{",
              f"    {acc_t} acc;",
              "    base = q35_bcast(o, nk, kdims, kst);"]
    if op == "ReduceLogSumExp":
        lines += ["    double mx = -INFINITY;",
                  "    for (r = 0; r < rcount; r++) {",
                  f"        double v = (double){x};",
                  "        if (v > mx && !isinf(v))",
                  "            mx = v;",
                  "    }",
                  "    if (mx == -INFINITY)",
                  "        mx = 0;"]
    if init == "v":  # an empty set gives the reference's identity (onnx ReduceMax-18)
        init = (f"rcount ? ({acc_t})({load(printer, src, 'base')}) : "
                f"({acc_t})({_empty_extreme(src.dtype, op)})")
    lines += [f"    acc = {init};",
              "    for (r = 0; r < rcount; r++) {",
              f"        {vt} v = {x};",
              f"        {update}",
              "    }",
              f"    {printer.ptr(out)}[o] = {store(out, final, fl or final != 'acc')};",
              "}"]
    return "\n".join(lines)


@renders("onnx_slice", runtime=RUNTIME)
def render_slice(printer, step: Step) -> str:
    """ONNX Slice with starts (and axes, steps) read at run time: each start is counted
    from the end if negative and clamped as the reference does; the output's extent is
    static."""
    out, src, q = step.outs[0], step.ins[0], step.params
    rest = iter(step.ins[1:])
    starts = next(rest)
    axes = next(rest) if q["axes"] else None
    steps = next(rest) if q["steps"] else None
    shape = q["shape"]
    rank = len(shape)
    ax = f"(int64_t){printer.ptr(axes, True)}[t]" if axes else "t"
    k = f"(int64_t){printer.ptr(steps, True)}[t]" if steps else "1"
    return "\n".join([
        f"static const int64_t shape[] = {_int_array(shape)}, "
        f"st[] = {_int_array(_strides(shape))}, odims[] = {_int_array(out.shape)}, "
        f"ost[] = {_int_array(_strides(out.shape))};",
        f"int64_t first[{rank}] = {{0}}, step[{rank}], sst[{rank}], off = 0, t, a, s, k, dim;",
        "int d;",
        f"for (d = 0; d < {rank}; d++)",
        "    step[d] = 1;",
        f"for (t = 0; t < {starts.size}; t++) {{",
        f"    a = {ax};",
        f"    if (a < 0)\n        a += {rank};",
        f"    if (a < 0 || a >= {rank})\n        {_fail(printer, step, 'axis out of range')}",
        f"    k = {k};",
        f"    s = (int64_t){printer.ptr(starts, True)}[t];",
        "    dim = shape[a];",
        "    if (s < 0)\n        s += dim;",
        "    if (k > 0)\n        s = s < 0 ? 0 : (s > dim ? dim : s);",
        "    else\n        s = s < 0 ? -1 : (s > dim - 1 ? dim - 1 : s);",
        "    first[a] = s;",
        "    step[a] = k;",
        "}",
        f"for (d = 0; d < {rank}; d++) {{",
        "    off += first[d] * st[d];",
        "    sst[d] = st[d] * step[d];",
        "}",
        f"q35_copy_strided({printer.ptr(out)}, {printer.ptr(src, True)}, sizeof({ctype(out)}), "
        f"{rank}, odims, 0, ost, off, sst);"])


# -- one axis -----------------------------------------------------------------------------

@renders("onnx_axis", runtime=RUNTIME)
def render_axis(printer, step: Step) -> str:
    """[outer, n, inner] around the axis; a cumulative op's axis operand, when not
    constant, is read at run time."""
    out, src, q = step.outs[0], step.ins[0], step.params
    op = q["op"]
    vt = compute_type(src.dtype)
    fl = is_float(src.dtype)
    x = load(printer, src, "base + j * inner")
    out_p = printer.ptr(out)
    head = [f"int64_t outer = {q['outer']}, n = {q['len']}, inner = {q['inner']};"]
    if len(step.ins) > 1:
        shape = q["shape"]
        rank = len(shape)
        head += [f"static const int64_t shape[] = {_int_array(shape)};",
                 f"int64_t a = (int64_t){printer.ptr(step.ins[1], True)}[0];",
                 "int d;",
                 f"if (a < 0)\n    a += {rank};",
                 f"if (a < 0 || a >= {rank})\n    {_fail(printer, step, 'axis out of range')}",
                 "outer = 1;",
                 "inner = 1;",
                 "n = shape[a];",
                 f"for (d = 0; d < {rank}; d++) {{",
                 "    if (d < a)\n        outer *= shape[d];",
                 "    if (d > a)\n        inner *= shape[d];",
                 "}"]
    head += ["int64_t o, c, j, base;",
             "for (o = 0; o < outer; o++)",
             "    for (c = 0; c < inner; c++) {",
             "        base = o * n * inner + c;"]
    body: list[str] = []
    if op in ("ArgMax", "ArgMin", "Hardmax"):
        cmp = "<" if op == "ArgMin" else ">"
        last = q.get("last", False)
        nan_best = "best != best" if fl else "0"
        nan_v = "v != v" if fl else "0"
        take = (f"({nan_v}) || (!({nan_best}) && v {cmp}= best)" if last
                else f"!({nan_best}) && (({nan_v}) || v {cmp} best)")
        body = [f"{vt} best = {load(printer, src, 'base')};",
                "int64_t at = 0;",
                "for (j = 1; j < n; j++) {",
                f"    {vt} v = {x};",
                f"    if ({take}) {{",
                "        best = v;",
                "        at = j;",
                "    }",
                "}"]
        if op == "Hardmax":
            body += ["for (j = 0; j < n; j++)",
                     f"    {out_p}[base + j * inner] = {store(out, 'j == at', False)};"]
        else:
            body += [f"{out_p}[o * inner + c] = at;"]
    elif op in ("CumSum", "CumProd"):
        sym = "+" if op == "CumSum" else "*"
        acc_t = vt if fl else "uint64_t"
        order = "n - 1 - j" if q["reverse"] else "j"
        body = [f"{acc_t} acc = {'0' if sym == '+' else '1'};",
                "for (j = 0; j < n; j++) {",
                f"    int64_t at = base + ({order}) * inner;",
                f"    {vt} v = {load(printer, src, 'at')};"]
        upd = f"acc = ({acc_t})(acc {sym} {'v' if fl else '(uint64_t)v'});"
        st = f"    {out_p}[at] = {store(out, 'acc', fl)};"
        body += ([st, f"    {upd}"] if q["exclusive"] else [f"    {upd}", st]) + ["}"]
    elif op == "LpNormalization":  # the reference's sum of x**p (not |x|), then ** (1/p)
        power = f"{x}" if q["p"] == 1 else f"{x} * {x}"
        norm = "sum" if q["p"] == 1 else "sqrt(sum)"
        body = ["double sum = 0, norm;",
                "for (j = 0; j < n; j++)",
                f"    sum += (double)({vt})({power});",
                f"norm = {norm};",
                "for (j = 0; j < n; j++)",
                f"    {out_p}[base + j * inner] = "
                f"{store(out, f'norm == 0 ? 0 : (double){x} / norm', True)};"]
    else:  # Softmax, LogSoftmax
        body = ["double mx = -INFINITY, sum = 0;",
                "for (j = 0; j < n; j++) {",
                f"    double v = (double){x};",
                "    mx = v > mx ? v : mx;",
                "}",
                "for (j = 0; j < n; j++)",
                f"    sum += exp((double){x} - mx);",
                "for (j = 0; j < n; j++) {"]
        value = ("(double)" + x + " - mx - log(sum)" if op == "LogSoftmax"
                 else f"exp((double){x} - mx) / sum")
        body += [f"    {out_p}[base + j * inner] = {store(out, value, True)};", "}"]
    return "\n".join(head + ["        " + line for line in ["{"] + body + ["}"]] + ["    }"])


# -- the rest ------------------------------------------------------------------------------

@renders("onnx_trilu", runtime=RUNTIME)
def render_trilu(printer, step: Step) -> str:
    out, q = step.outs[0], step.params
    src = step.ins[0]
    k = f"(int64_t){printer.ptr(step.ins[1], True)}[0]" if len(step.ins) > 1 else "0"
    rows, cols = q["rows"], q["cols"]
    keep = "j - r >= k" if q["upper"] else "j - r <= k"
    return (f"const int64_t k = {k};\nint64_t b, r, j, at;\n"
            f"for (b = 0; b < {out.size // max(rows * cols, 1)}; b++)\n"
            f"    for (r = 0; r < {rows}; r++)\n"
            f"        for (j = 0; j < {cols}; j++) {{\n"
            f"            at = (b * {rows} + r) * {cols} + j;\n"
            f"            {printer.ptr(out)}[at] = ({keep}) ? {printer.ptr(src, True)}[at] : 0;\n"
            f"        }}")


@renders("onnx_range", runtime=RUNTIME)
def render_range(printer, step: Step) -> str:
    out = step.outs[0]
    start, delta = (load(printer, b, "0") for b in step.ins)
    if is_float(out.dtype):
        c = compute_type(out.dtype)
        value = f"s + ({c})i * d"
        head = f"const {c} s = {start}, d = ({c})(({c})({start} + {delta}) - {start});\n"
    else:
        value = "(uint64_t)s + (uint64_t)i * (uint64_t)d"
        head = f"const int64_t s = (int64_t){start}, d = (int64_t){delta};\n"
    return (f"{head}for (i = 0; i < {out.size}; i++)\n"
            f"    {printer.ptr(out)}[i] = {store(out, value, is_float(out.dtype))};")


@renders("onnx_tile", runtime=RUNTIME)
def render_tile(printer, step: Step) -> str:
    out, src = step.outs[0], step.ins[0]
    shape = step.params["shape"]
    return (f"static const int64_t odims[] = {_int_array(out.shape)}, "
            f"idims[] = {_int_array(shape)}, ist[] = {_int_array(_strides(shape))};\n"
            f"int64_t r, off, d;\nint a;\n"
            f"for (i = 0; i < {out.size}; i++) {{\n"
            f"    off = 0;\n    r = i;\n"
            f"    for (a = {len(shape) - 1}; a >= 0; a--) {{\n"
            f"        d = r % odims[a];\n        r /= odims[a];\n"
            f"        off += (d % idims[a]) * ist[a];\n    }}\n"
            f"    {printer.ptr(out)}[i] = {printer.ptr(src, True)}[off];\n}}")


@renders("onnx_topk", runtime=RUNTIME)
def render_topk(printer, step: Step) -> str:
    """Insertion sort of each lane's indices (stable), NaN above every number as numpy's
    sort order has it, then the first k."""
    values, indices, scratch = step.outs
    src, q = step.ins[0], step.params
    n, inner, k = q["len"], q["inner"], q["k"]
    vt = compute_type(src.dtype)
    at = "o * {n} * {inner} + c + {j} * {inner}"
    v = lambda j: load(printer, src, at.format(n=n, inner=inner, j=j))  # noqa: E731
    nan = "{0} != {0}" if is_float(src.dtype) else "0"
    # b strictly before a: larger (or NaN), or equal and earlier
    above = ("(({nb}) && !({na})) || (!({nb}) && !({na}) && vb > va)" if q["largest"]
             else "(!({nb}) && ({na})) || (!({nb}) && !({na}) && vb < va)")
    above = above.format(na=nan.format("va"), nb=nan.format("vb"))
    idx = printer.ptr(scratch)
    return "\n".join([
        "int64_t o, c, j, m, t;",
        f"for (o = 0; o < {q['outer']}; o++)",
        f"    for (c = 0; c < {inner}; c++) {{",
        f"        for (j = 0; j < {n}; j++) {{",
        f"            {vt} vb = {v('j')};",
        "            m = j;",
        "            while (m > 0) {",
        f"                {vt} va = {v(f'{idx}[m - 1]')};",
        f"                if (!({above}))",
        "                    break;",
        f"                {idx}[m] = {idx}[m - 1];",
        "                m--;",
        "            }",
        f"            {idx}[m] = j;",
        "        }",
        f"        for (t = 0; t < {k}; t++) {{",
        f"            int64_t to = o * {k} * {inner} + c + t * {inner};",
        f"            {printer.ptr(values)}[to] = "
        f"{printer.ptr(src, True)}[{at.format(n=n, inner=inner, j=f'{idx}[t]')}];",
        f"            {printer.ptr(indices)}[to] = {idx}[t];",
        "        }",
        "    }"])


@renders("onnx_onehot", runtime=RUNTIME)
def render_onehot(printer, step: Step) -> str:
    """The reference's `hot * (on - off) + off` in the values' type; an index matches
    depth position j when equal to it (negative ones first moved up by depth)."""
    out, (indices, values), q = step.outs[0], step.ins, step.params
    c = compute_type(values.dtype)
    off, on = load(printer, values, "0"), load(printer, values, "1")
    if is_float(values.dtype):
        hot = f"({c})(({c})({on} - {off}) + {off})"
        cold = f"({c})(({c})0 * ({on} - {off}) + {off})"
    else:
        hot = f"(uint64_t){on} - (uint64_t){off} + (uint64_t){off}"
        cold = f"(uint64_t){off}"
    depth, inner = q["depth"], q["inner"]
    return "\n".join([
        "int64_t p, j, r;",
        f"for (p = 0; p < {q['outer']}; p++)",
        f"    for (j = 0; j < {depth}; j++)",
        f"        for (r = 0; r < {inner}; r++) {{",
        f"            double v = (double){load(printer, indices, f'p * {inner} + r')};",
        "            if (v < 0)",
        f"                v += {depth};",
        f"            {printer.ptr(out)}[(p * {depth} + j) * {inner} + r] = v == (double)j ? "
        f"{store(out, hot, False)} : {store(out, cold, False)};",
        "        }"])


@renders("onnx_norm", runtime=RUNTIME)
def render_norm(printer, step: Step) -> str:
    """Per row, in double: LayerNormalization's mean, variance, 1 / sqrt(var + eps) and
    (x - mean) * inv * scale + bias; RMSNormalization's x * 1 / sqrt(mean(x^2) + eps) *
    scale."""
    q = step.params
    x, *params = step.ins
    n, tail = q["len"], q["tail"]
    outs = dict(zip(q["out_slots"], step.outs))
    decls = [f"static const int64_t dims[] = {_int_array(tail)};"]
    loads = []
    for m, (buf, st) in enumerate(zip(params, q["strides"])):
        decls.append(f"static const int64_t st{m}[] = {_int_array(st)};")
        loads.append(f"(double){load(printer, buf, f'q35_bcast(j, {len(tail)}, dims, st{m})')}")
    xv = f"(double){load(printer, x, f'r * {n} + j')}"
    lines = decls + ["int64_t r, j;", f"for (r = 0; r < {q['rows']}; r++) {{",
                     "    double mean = 0, var = 0, inv;"]
    if q["op"] == "LayerNormalization":
        bias = f" + {loads[1]}" if len(loads) > 1 else ""
        lines += [f"    for (j = 0; j < {n}; j++)", f"        mean += {xv};",
                  f"    mean /= {n};",
                  f"    for (j = 0; j < {n}; j++)",
                  f"        var += ({xv} - mean) * ({xv} - mean);",
                  f"    var /= {n};",
                  f"    inv = 1.0 / sqrt(var + {q['eps']!r});",
                  f"    for (j = 0; j < {n}; j++)",
                  f"        {printer.ptr(outs[0])}[r * {n} + j] = "
                  f"{store(outs[0], f'({xv} - mean) * inv * {loads[0]}{bias}', True)};"]
        for slot, value in ((1, "mean"), (2, "inv")):
            if slot in outs:
                target = outs[slot]
                lines.append(f"    {printer.ptr(target)}[r] = {store(target, value, True)};")
    else:
        lines += [f"    for (j = 0; j < {n}; j++)", f"        var += {xv} * {xv};",
                  f"    inv = 1.0 / sqrt(var / {n} + {q['eps']!r});",
                  f"    for (j = 0; j < {n}; j++)",
                  f"        {printer.ptr(outs[0])}[r * {n} + j] = "
                  f"{store(outs[0], f'{xv} * inv * {loads[0]}', True)};",
                  "    (void)mean;"]
    return "\n".join(lines + ["}"])


@renders("onnx_nll", runtime=RUNTIME)
def render_nll(printer, step: Step) -> str:
    """Per (n, d) position in double: the log-probabilities log(exp(x - max) / sum) when
    from a softmax (written out as the second result when asked for), the weighted
    negative log-likelihood of the target, then the reduction."""
    q = step.params
    x, target, *weight = step.ins
    outs = dict(zip(q["out_slots"], step.outs))
    c, d = q["c"], q["d"]
    xv = lambda cls: f"(double){load(printer, x, f'(i * {c} + {cls}) * {d} + p')}"  # noqa: E731
    ignore = q["ignore"]
    loss = outs[0]
    lines = ["int64_t i, p, t, k;", "double total = 0, weights = 0;",
             f"for (i = 0; i < {q['n']}; i++)", f"    for (p = 0; p < {d}; p++) {{",
             "        double w = 1, v, mx = -INFINITY, sum = 0;",
             f"        t = (int64_t){printer.ptr(target, True)}[i * {d} + p];"]
    if q["softmax"]:
        lines += [f"        for (k = 0; k < {c}; k++)",
                  f"            mx = q35_fmaxn(mx, {xv('k')});",
                  f"        for (k = 0; k < {c}; k++)",
                  f"            sum += exp({xv('k')} - mx);"]
        if 1 in outs:
            lp = outs[1]
            lines += [f"        for (k = 0; k < {c}; k++)",
                      f"            {printer.ptr(lp)}[(i * {c} + k) * {d} + p] = "
                      f"{store(lp, f'log(exp({xv(chr(107))} - mx) / sum)', True)};"]
    else:
        lines += ["        (void)mx;", "        (void)sum;", "        (void)k;"]
    skip = f"t == {ignore}" if ignore is not None else "0"
    value = f"log(exp({xv('t')} - mx) / sum)" if q["softmax"] else xv("t")
    lines += [f"        if ({skip}) {{", "            w = 0;", "            v = 0;",
              "        } else {",
              f"            if (t < 0 || t >= {c})",
              f"                {_fail(printer, step, 'target out of range')}"]
    if weight:
        lines += [f"            w = (double){load(printer, weight[0], 't')};"]
    lines += ["            v = -w * " + value + ";", "        }"]
    if q["reduction"] == "none":
        lines += [f"        {printer.ptr(loss)}[i * {d} + p] = {store(loss, 'v', True)};"]
    lines += ["        total += v;", "        weights += w;", "    }"]
    if q["reduction"] != "none":
        final = "total / weights" if q["reduction"] == "mean" else "total"
        lines += [f"{printer.ptr(loss)}[0] = {store(loss, final, True)};"]
    else:
        lines += ["(void)total;", "(void)weights;"]
    return "\n".join(lines)


@renders("onnx_reverse_sequence", runtime=RUNTIME)
def render_reverse_sequence(printer, step: Step) -> str:
    """Element e at time t < len[b] of its batch b comes from time len[b] - 1 - t."""
    out, (data, lens), q = step.outs[0], step.ins, step.params
    bst, tst = q["batch_stride"], q["time_stride"]
    return "\n".join([
        "int64_t b, t, sl, from;",
        f"for (i = 0; i < {out.size}; i++) {{",
        f"    b = (i / {bst}) % {q['batch']};",
        f"    t = (i / {tst}) % {q['time']};",
        f"    sl = (int64_t){printer.ptr(lens, True)}[b];",
        f"    if (sl < 0 || sl > {q['time']})",
        f"        {_fail(printer, step, 'sequence length out of range')}",
        f"    from = t < sl ? i + (sl - 1 - 2 * t) * {tst} : i;",
        f"    {printer.ptr(out)}[i] = {printer.ptr(data, True)}[from];",
        "}"])


@renders("onnx_compress", runtime=RUNTIME)
def render_compress(printer, step: Step) -> str:
    out, (data, cond), q = step.outs[0], step.ins, step.params
    n, inner, kept = q["len"], q["inner"], q["kept"]
    return "\n".join([
        "int64_t o, j, k = 0;",
        f"for (j = 0; j < {min(n, cond.size)}; j++) {{",
        f"    if (!{printer.ptr(cond, True)}[j])",
        "        continue;",
        f"    if (k == {kept})",
        f"        {_fail(printer, step, 'more true conditions than the compiled shape has')}",
        f"    for (o = 0; o < {q['outer']}; o++)",
        f"        memcpy({printer.ptr(out)} + (o * {kept} + k) * {inner}, "
        f"{printer.ptr(data, True)} + (o * {n} + j) * {inner}, {inner} * sizeof({ctype(out)}));",
        "    k++;",
        "}",
        f"if (k != {kept})",
        f"    {_fail(printer, step, 'fewer true conditions than the compiled shape has')}"])
