"""`math`: square roots and absolute values in the result type; transcendental functions
through the C library in double precision, then rounded to the result type."""

from __future__ import annotations

import math

import numpy as np
from xdsl.dialects import math as xmath

from .core import register_elementwise
from .numerics import erf64, exp64, libm, tanh64


def _round_half_away(x):
    """math.round: to nearest, ties away from zero (Fortran nint), exact in any float type."""
    x = np.asarray(x)
    r = np.trunc(x)
    frac = np.abs(x - r)  # exact
    return np.where(frac >= 0.5, r + np.sign(x), r).astype(x.dtype)


register_elementwise({
    xmath.SqrtOp: np.sqrt, xmath.RsqrtOp: lambda a: 1 / np.sqrt(a), xmath.AbsFOp: np.abs,
    # transcendental: libm in double, then the result type's rounding (package docstring)
    xmath.ExpOp: exp64, xmath.LogOp: libm(math.log, np.log), xmath.TanhOp: tanh64,
    xmath.SinOp: libm(math.sin, np.sin), xmath.CosOp: libm(math.cos, np.cos),
    xmath.PowFOp: libm(math.pow, np.power), xmath.ErfOp: erf64,
    xmath.AbsIOp: np.abs, xmath.RoundOp: _round_half_away,
})
