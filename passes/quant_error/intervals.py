"""The interval domain of `verify-quant-error`: elementwise [lo, hi] boxes and their transfer
functions (arithmetic, matmul, activations), outward-rounded after every op."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import IntegerType, TensorType
from xdsl.ir import Operation, SSAValue

from q35c.compiler.diagnostics import Q35cError
from q35c.dialects import q35nn, quant3p5

# Fused ops of the fusion passes; looked up so this file also works without them.
_FUSED_MATMUL = getattr(quant3p5, "FusedMatmulOp", ())
_SWIGLU = getattr(q35nn, "SwigluOp", ())
_ATTENTION = getattr(q35nn, "AttentionOp", ())
QUANTIZED_MATMULS = tuple(t for t in (quant3p5.MatmulOp, quant3p5.MatmulInt8Op, _FUSED_MATMUL)
                          if isinstance(t, type))

U32 = 2.0**-24  # unit roundoff of float32
U64 = 2.0**-53
WIDEN = 2.0**-20  # outward rounding after every op: covers float32 rounding of the model
TINY = 2.0**-120
SLACK = 1 + 2.0**-20  # relative slack on bounds, for float64 rounding of this analysis


@dataclass
class Box:
    """Elementwise interval [lo, hi] (float64 arrays of the tensor's shape)."""

    lo: np.ndarray
    hi: np.ndarray

    @staticmethod
    def point(v: np.ndarray) -> Box:
        v = np.asarray(v, dtype=np.float64)
        return Box(v, v)

    @staticmethod
    def full(shape, lo=-math.inf, hi=math.inf) -> Box:
        """The same interval for every element: read-only broadcast views, so an unknown
        or declared-range tensor costs no memory however large its shape."""
        return Box(np.broadcast_to(np.float64(lo), shape), np.broadcast_to(np.float64(hi), shape))

    def absmax(self) -> np.ndarray:
        return np.maximum(np.abs(self.lo), np.abs(self.hi))

    def mid_rad(self) -> tuple[np.ndarray, np.ndarray]:
        if not (np.isfinite(self.lo).all() and np.isfinite(self.hi).all()):
            raise _Unbounded()
        return (self.lo + self.hi) / 2, (self.hi - self.lo) / 2


class _Unbounded(Exception):
    pass


def _clean(lo, hi) -> Box:
    """Outward-round and replace NaN (from inf - inf and the like) by infinities."""
    with np.errstate(all="ignore"):
        lo = np.asarray(lo, np.float64)
        hi = np.asarray(hi, np.float64)
        lo = np.where(np.isnan(lo), -math.inf, lo - (np.abs(lo) * WIDEN + TINY))
        hi = np.where(np.isnan(hi), math.inf, hi + (np.abs(hi) * WIDEN + TINY))
    return Box(lo, hi)


def _shape(value: SSAValue) -> tuple[int, ...]:
    t = value.type
    return tuple(t.get_shape()) if isinstance(t, TensorType) else ()


def _is_int(value: SSAValue) -> bool:
    t = value.type
    el = t.get_element_type() if isinstance(t, TensorType) else t
    return isinstance(el, IntegerType)


def _out_of_memory(op: Operation) -> Q35cError:
    """The analysis holds two float64 bounds per element of every live tensor: say which
    op's values did not fit, instead of a bare MemoryError."""
    shapes = ", ".join(str(list(_shape(r))) for r in op.results) or "no results"
    return Q35cError(f"pass 'verify-quant-error': out of memory bounding {op.name} "
                     f"(results {shapes}; 16 bytes per element); use a smaller --shape or "
                     "leave verify-quant-error out of --passes")


def _unknown(value: SSAValue) -> Box:
    if _is_int(value):
        el = value.type.get_element_type() if isinstance(value.type, TensorType) else value.type
        w = el.width.data
        return Box.full(_shape(value), -(2.0 ** (w - 1)), 2.0 ** (w - 1) - 1)
    return Box.full(_shape(value))


def _mul(a: Box, b: Box) -> Box:
    with np.errstate(all="ignore"):
        c = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]
        c = [np.where(np.isnan(x), 0.0, x) for x in c]  # 0 * inf: the 0 is exact
    return _clean(np.minimum.reduce(c), np.maximum.reduce(c))


def _div(a: Box, b: Box) -> Box:
    if np.any((b.lo <= 0) & (b.hi >= 0)):
        return Box.full(np.broadcast_shapes(a.lo.shape, b.lo.shape))
    with np.errstate(all="ignore"):
        inv = Box(1 / b.hi, 1 / b.lo)
    return _mul(a, inv)


def _matmul(a: Box, b: Box) -> Box:
    """Interval product (midpoint-radius form) with numpy matmul broadcasting."""
    try:
        am, ar = a.mid_rad()
        bm, br = b.mid_rad()
    except _Unbounded:
        shape = np.broadcast_shapes(a.lo.shape[:-2], b.lo.shape[:-2]) + a.lo.shape[-2:-1] + (
            b.lo.shape[-1:])
        return Box.full(shape)
    mid = np.matmul(am, bm)
    rad = np.matmul(np.abs(am), br) + np.matmul(ar, np.abs(bm) + br)
    rad = rad + (np.matmul(np.abs(am) + ar, np.abs(bm) + br)) * (a.lo.shape[-1] * U64 * 2)
    return _clean(mid - rad, mid + rad)


def _monotone(fn, a: Box) -> Box:
    with np.errstate(all="ignore"):
        return _clean(fn(a.lo), fn(a.hi))


def _with_min(fn, a: Box, x_min: float, y_min: float) -> Box:
    """A function decreasing below x_min and increasing above it (silu, gelu)."""
    with np.errstate(all="ignore"):
        flo, fhi = fn(a.lo), fn(a.hi)
        lo = np.where(a.hi <= x_min, fhi, np.where(a.lo >= x_min, flo, y_min))
        hi = np.maximum(flo, fhi)
    return _clean(lo, hi)


def _silu(x):
    return x / (1 + np.exp(-x))


_ERF = np.vectorize(math.erf, otypes=[np.float64])


def _gelu_erf(x):
    with np.errstate(all="ignore"):
        y = 0.5 * x * (1 + _ERF(x / math.sqrt(2)))
        return np.where(np.isinf(x), np.where(x > 0, x, 0.0), y)


def _gelu_tanh(x):
    with np.errstate(all="ignore"):
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
        return np.where(np.isinf(x), np.where(x > 0, x, 0.0), 0.5 * x * (1 + np.tanh(inner)))


def _silu_safe(x):
    with np.errstate(all="ignore"):
        return np.where(np.isinf(x), np.where(x > 0, x, 0.0), _silu(x))


# Minima (location, value) rounded down in value, so the intervals stay sound.
_SILU_MIN = (-1.2784645, -0.27847)
_GELU_MIN = (-0.7517916, -0.16999)
_GELU_TANH_MIN = (-0.7522, -0.17005)
# Lipschitz constants (max |derivative|, rounded up) of the fused_matmul activations.
_LIPSCHITZ = {"none": 1.0, "relu": 1.0, "silu": 1.0999, "gelu": 1.1290, "gelu_tanh": 1.1300}


def activation_box(name: str, x: Box) -> Box:
    if name == "none":
        return x
    if name == "relu":
        return Box(np.maximum(x.lo, 0.0), np.maximum(x.hi, 0.0))
    if name == "silu":
        return _with_min(_silu_safe, x, *_SILU_MIN)
    if name == "gelu_tanh":
        return _with_min(_gelu_tanh, x, *_GELU_TANH_MIN)
    return _with_min(_gelu_erf, x, *_GELU_MIN)
