"""The narrow element types of ONNX in C: float8 (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz, e8m0fnu),
float4 e2m1fn and the 2- and 4-bit integers, each stored in one byte (its bits in the low
ones, as ml_dtypes keeps them) and computed in float or a small C integer.

The generic ONNX ops' renderers (targets/c/onnx_tensor.py) load and store through these
helpers, so every op that moves or converts values handles them; the conversions are in
runtime/q35rt_quant.c and match the interpreter's (numpy with ml_dtypes, and for ONNX
Cast onnx's own `saturate_cast` and `to_float8e8m0`) bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

RUNTIME = "q35rt_quant.c"


@dataclass(frozen=True)
class FloatFormat:
    """A narrow float: exponent and mantissa bits, bias, and its special values' kind
    (runtime/q35rt_quant.c: 0 IEEE, 1 FN, 2 FNUZ, 3 none)."""

    ebits: int
    mbits: int
    bias: int
    kind: int

    @property
    def args(self) -> str:
        return f"{self.ebits}, {self.mbits}, {self.bias}, {self.kind}"


FLOATS = {
    np.dtype(ml_dtypes.float8_e4m3fn): FloatFormat(4, 3, 7, 1),
    np.dtype(ml_dtypes.float8_e4m3fnuz): FloatFormat(4, 3, 8, 2),
    np.dtype(ml_dtypes.float8_e5m2): FloatFormat(5, 2, 15, 0),
    np.dtype(ml_dtypes.float8_e5m2fnuz): FloatFormat(5, 2, 16, 2),
    np.dtype(ml_dtypes.float4_e2m1fn): FloatFormat(2, 1, 1, 3),
}
"""The narrow floats with a sign, exponent and mantissa."""
E8M0 = np.dtype(ml_dtypes.float8_e8m0fnu)
SATURABLE = frozenset(list(FLOATS)[:4])
"""The float8 types ONNX Cast and QuantizeLinear saturate (`saturate=1`)."""
INTS = {np.dtype(ml_dtypes.int4): (4, True), np.dtype(ml_dtypes.uint4): (4, False),
        np.dtype(ml_dtypes.int2): (2, True), np.dtype(ml_dtypes.uint2): (2, False)}
"""The narrow integers: bits and signedness."""
NARROW_TYPES = frozenset([*FLOATS, E8M0, *INTS])
ROUND_MODES = {"down": 0, "up": 1, "nearest": 2}
"""Cast's `round_mode` to float8 e8m0, as runtime/q35rt_quant.c numbers them."""


def is_narrow(dtype: np.dtype) -> bool:
    return np.dtype(dtype) in NARROW_TYPES


def is_narrow_float(dtype: np.dtype) -> bool:
    return np.dtype(dtype) in FLOATS or np.dtype(dtype) == E8M0


def compute_type(dtype: np.dtype) -> str:
    """The C type a narrow value is computed in."""
    if is_narrow_float(dtype):
        return "float"
    bits, signed = INTS[np.dtype(dtype)]
    return "int8_t" if signed else "uint8_t"


def load(dtype: np.dtype, bits: str) -> str:
    """The value of the stored byte `bits` in its compute type."""
    dtype = np.dtype(dtype)
    if dtype in FLOATS:
        return f"q35_f8_to_f32({bits}, {FLOATS[dtype].args})"
    if dtype == E8M0:
        return f"q35_e8m0_to_f32({bits})"
    width, signed = INTS[dtype]
    if signed:
        return f"q35_intn_value({bits}, {width})"
    return f"(uint8_t)({bits} & {(1 << width) - 1}u)"


def store(dtype: np.dtype, value: str, value_is_float: bool, saturate: bool = False,
          round_mode: str | None = None) -> str:
    """The stored byte of `value` converted to `dtype`: floats to nearest (saturated to
    the largest value for a float8 with `saturate`; to float8 e8m0 by the float32
    exponent, rounded as `round_mode` says, as ONNX Cast does), integers wrapped,
    floats to a narrow integer truncated (0 when out of range)."""
    dtype = np.dtype(dtype)
    if dtype in FLOATS:
        fn = "q35_f64_to_f8_sat" if saturate and dtype in SATURABLE else "q35_f64_to_f8"
        return f"{fn}((double)({value}), {FLOATS[dtype].args})"
    if dtype == E8M0:
        mode = ROUND_MODES[round_mode or "down"]
        return f"q35_f32_to_e8m0((float)({value}), {int(saturate)}, {mode})"
    width, signed = INTS[dtype]
    if value_is_float:
        return f"q35_f64_to_intn((double)({value}), {width}, {int(signed)})"
    return f"(uint8_t)((uint64_t)({value}) & {(1 << width) - 1}u)"


def float_to_int(out: np.dtype, value: str) -> str:
    """A narrow float's value converted to the (ordinary) integer type `out` as ml_dtypes
    converts: truncated, 0 when out of `out`'s range or NaN."""
    info = np.iinfo(out)
    if out == np.uint64:
        return f"q35_f64_to_u64_or0((double)({value}))"
    if out == np.int64:
        return f"q35_f64_to_i64_or0((double)({value}))"
    return f"q35_f64_to_int_or0((double)({value}), {float(info.min)!r}, {float(info.max)!r})"


def cast_store(out: np.dtype, src: np.dtype, value: str, value_is_float: bool,
               attrs: dict) -> str | None:
    """ONNX Cast's conversion of `value` (of element type `src`) to `out` where it differs
    from a plain store: to a narrow type with the node's `saturate` (default 1) and
    `round_mode` (default "up"), and from a narrow float to an integer; None otherwise."""
    if is_narrow(out):
        return store(out, value, value_is_float, bool(attrs.get("saturate", 1)),
                     attrs.get("round_mode", "up"))
    if is_narrow_float(src) and np.dtype(out).kind in "iu":
        return f"({_C_INTS[np.dtype(out)]}){float_to_int(out, value)}"
    return None


_C_INTS = {np.dtype(t): f"{np.dtype(t).kind.replace('i', 'int').replace('u', 'uint')}"
           f"{np.dtype(t).itemsize * 8}_t"
           for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                     np.uint64)}
