"""Bounds for the quantized matmuls of `verify-quant-error`: spectral norms, L2 balls and L1
facts of normalized rows, and chunked decoding of packed weights (docs/verification.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from q35c.compiler.quant import group_scales, group_size_of, level_table, pair_codes, pair_levels

SVD_LIMIT = 1 << 16
"""Matrices up to this many elements get the exact spectral norm (an SVD); larger ones the
cheaper bound min(Frobenius, sqrt(|m|_1 |m|_inf)). SVDs of every 576x1536 layer of a 135M
model took minutes; the cheap bound is sound but looser."""


def _spectral_bound(m: np.ndarray) -> float:
    """An upper bound on the largest singular value of m (exact for small matrices)."""
    if m.size <= SVD_LIMIT:
        return float(np.linalg.norm(m, 2)) * (1 + 1e-9) + 1e-300
    fro = float(np.sqrt((m**2).sum()))
    return min(fro, float(np.sqrt(np.abs(m).sum(axis=0).max() * np.abs(m).sum(axis=1).max())))


@dataclass
class Ball:
    """Every row y of a value is center + scale * z with ||z||_2 <= radius (scale >= 0,
    elementwise). Then |y . c| <= |center . c| + radius * ||scale * c||_2 (Cauchy-Schwarz)."""

    scale: np.ndarray  # [K]
    radius: float
    center: np.ndarray | None = None  # [K]; None: 0

    def bound(self, c: np.ndarray) -> np.ndarray:
        """[N]: max over the ball of |y . c[:, n]|."""
        spread = self.radius * np.sqrt(((self.scale[:, None] * c) ** 2).sum(axis=0))
        return spread if self.center is None else np.abs(self.center @ c) + spread

    def magnitude(self, c: np.ndarray) -> np.ndarray:
        """[N]: max over the ball of sum_k |y_k| |c[k, n]|."""
        c = np.abs(c)
        spread = self.radius * np.sqrt(((self.scale[:, None] * c) ** 2).sum(axis=0))
        return spread if self.center is None else np.abs(self.center) @ c + spread

    def image(self, w: np.ndarray, rounding: float) -> Ball:
        """The rows of y @ w (w [K, N]), with a relative rounding of each output element."""
        radius = self.radius * _spectral_bound(self.scale[:, None] * w) + rounding * float(
            np.sqrt((self.magnitude(w) ** 2).sum()))
        center = None if self.center is None else self.center @ w
        return Ball(np.ones(w.shape[1]), radius * (1 + 2.0**-20), center)


@dataclass
class L1Fact:
    """Every row y of a value has sum_k |y_k| <= total (rows along the last axis).

    Holds for a product a * b of two values whose rows lie in L2 balls (SwiGLU's
    silu(gate) * up): sum_k |a_k b_k| <= ||a||_2 ||b||_2 (Cauchy-Schwarz). Together with
    the elementwise caps |y_k| <= cap_k of the interval analysis, the worst case of
    |y . c| is a fractional knapsack (`_l1_box_max`), far below sum_k cap_k |c_k| when
    the caps of many coordinates cannot be reached at once.
    """

    total: float


def _l1_box_max(cap: np.ndarray, total: float, c: np.ndarray) -> np.ndarray:
    """[N]: an upper bound on max sum_k |y_k| |c[k, n]| over |y_k| <= cap[k], sum_k |y_k| <=
    total (a fractional knapsack). By LP duality every t >= 0 gives the bound
    t * total + sum_k cap_k max(|c_k| - t, 0); t = the |c| where the greedy fill (largest |c|
    first) runs out of budget makes it exact, and any t keeps it sound."""
    a = np.ascontiguousarray(np.abs(c).T)  # [N, K]
    if a.shape[1] == 0:
        return np.zeros(a.shape[0])
    order = np.argsort(-a, axis=1)
    filled = (np.cumsum(cap[order], axis=1) < total).sum(axis=1)
    t = np.where(filled < a.shape[1], np.take_along_axis(
        a, order[np.arange(a.shape[0]), np.minimum(filled, a.shape[1] - 1)][:, None], 1)[:, 0],
        0.0)
    return (t * total + (np.maximum(a - t[:, None], 0.0) * cap).sum(axis=1)) * (1 + 2.0**-30)


def _ball_norm(ball: Ball) -> float:
    """An upper bound on ||y||_2 for every row y of a ball."""
    center = 0.0 if ball.center is None else float(np.sqrt((ball.center**2).sum()))
    return (center + ball.radius * float(np.max(ball.scale, initial=0.0))) * (1 + 2.0**-40)


CHUNK_ELEMENTS = 1 << 19
"""Weights per column chunk of the bound computations: every temporary of a quantized
matmul's analysis is O(K x chunk) float64 (4 MiB), never O(K x N)."""


class _Decoded:
    """One decode of a packed weight (codes and group scales/offsets); dequantized column
    chunks on demand, each bit-identical to the matching columns of `dequantize`."""

    def __init__(self, weights: Any):
        self.table, self.codes = level_table(weights), pair_codes(weights)
        self.group = group_size_of(weights)
        scales, offsets = group_scales(weights)
        self.k, self.n = weights.shape
        self.scales = np.asarray(scales, np.float32)
        self.offsets = np.asarray(offsets, np.float32)
        self.rows = np.arange(self.k) // self.group
        self.groups = -(-self.k // self.group)
        self.width = max(1, CHUNK_ELEMENTS // max(self.k, 1))

    def chunks(self):
        for c0 in range(0, self.n, self.width):
            yield c0, min(self.n, c0 + self.width)

    def levels(self, c0: int, c1: int) -> np.ndarray:
        return pair_levels(self.codes[:, c0:c1], self.table, self.k)

    def columns(self, c0: int, c1: int, exact: bool, levels: np.ndarray | None = None
                ) -> np.ndarray:
        """float64 [K, c1 - c0]: exact s_g L + o_g (int8 path) or the float32 dequantize."""
        lv = self.levels(c0, c1) if levels is None else levels
        s, o = self.scales[self.rows, c0:c1], self.offsets[self.rows, c0:c1]
        if exact:
            return s.astype(np.float64) * lv + o.astype(np.float64)
        return (s * lv.astype(np.float32) + o).astype(np.float64)

    def spread(self, c0: int, c1: int, levels: np.ndarray) -> np.ndarray:
        """|s_g L| + |o_g| (float64 [K, c]): the magnitude the int8 rescale rounds."""
        s, o = self.scales[self.rows, c0:c1], self.offsets[self.rows, c0:c1]
        return np.abs(s.astype(np.float64) * levels) + np.abs(o.astype(np.float64))


class _SpectralAcc:
    """`_spectral_bound` of a matrix given in column chunks (exact when it has at most
    SVD_LIMIT elements, which is then a single chunk)."""

    def __init__(self, k: int, n: int):
        self.small = k * n <= SVD_LIMIT
        self.exact = 0.0
        self.fro2 = 0.0
        self.col = 0.0
        self.rows = np.zeros(k)

    def add(self, m: np.ndarray) -> None:
        if self.small:
            self.exact = _spectral_bound(m)
            return
        a = np.abs(m)
        self.fro2 += float((m**2).sum())
        self.col = max(self.col, float(a.sum(axis=0).max(initial=0.0)))
        self.rows += a.sum(axis=1)

    def bound(self) -> float:
        if self.small:
            return self.exact
        return min(math.sqrt(self.fro2), math.sqrt(self.col * float(self.rows.max(initial=0.0))))
