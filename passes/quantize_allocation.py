"""Bit allocation for `quantize-weights{bpw=B}`: a Q3P5 group size per matmul weight.

Every target reads Q3P5 at any group size (a multiple of 16), so the budget is spent by
choosing, per weight, among GROUP_SIZES: a smaller group costs more metadata bits and
follows the weights more closely. Each weight's sensitivity at each size is its estimated
relative output error: the round-to-nearest error weighted by the calibration inputs'
mean squares (diag of X^T X / tokens, llama.cpp's importance matrix), or the plain
relative weight error without calibration. A greedy marginal allocation starts every
weight at the cheapest size and repeatedly upgrades the weight with the largest drop of
squared error (relative error squared times its parameter count) per added bit while
the total (all metadata counted: `storage_bytes`) stays within B bits per matmul weight.
The result is deterministic (ties: the first weight in module order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.quant import dequantize, quantize, storage_bytes

GROUP_SIZES = (128, 64, 32, 16)
"""The sizes the allocation chooses among (those up to K rounded up to 16), cheapest
first for K >= 128."""


@dataclass
class Choice:
    """One weight's options, cheapest first: group sizes, their bits and estimated errors,
    and the index chosen."""

    name: str
    shape: tuple[int, int]
    sizes: list[int]
    bits: list[int]
    errors: list[float]
    chosen: int = 0

    @property
    def group_size(self) -> int:
        return self.sizes[self.chosen]


def estimated_errors(w: np.ndarray, importance: np.ndarray | None, sizes: list[int]
                     ) -> list[float]:
    """Relative error of round-to-nearest Q3P5 at each group size, weighted per input row
    by `importance` (the inputs' mean squares) when given."""
    w = np.asarray(w, np.float32)
    weights = np.ones(w.shape[0]) if importance is None else np.maximum(importance, 0)
    ref = float(np.einsum("k,kn,kn->", weights, w, w, dtype=np.float64))
    errors = []
    for g in sizes:
        d = w - dequantize(quantize(w, group_size=g))
        err = float(np.einsum("k,kn,kn->", weights, d, d, dtype=np.float64))
        errors.append(float(np.sqrt(err / ref)) if ref > 0 else 0.0)
    return errors


def allocate(choices: list[Choice], bpw: float) -> None:
    """Set `chosen` on every choice: minimize the sum over weights of squared relative error
    times parameter count (every weight element counts alike, so a large matrix such as
    the LM head is not outvoted by many small ones) within `bpw` bits per weight (greedy
    by error drop per added bit)."""
    params = sum(c.shape[0] * c.shape[1] for c in choices)
    budget = bpw * params
    spent = sum(c.bits[0] for c in choices)
    if spent > budget:
        raise Q35cError(f"--bpw {bpw}: the matmul weights need at least "
                        f"{spent / params:.3f} bits per weight (Q3P5 at its cheapest "
                        "group sizes)")
    while True:
        best, best_gain = None, 0.0
        for c in choices:
            if c.chosen + 1 >= len(c.sizes):
                continue
            extra = c.bits[c.chosen + 1] - c.bits[c.chosen]
            if spent + extra > budget:
                continue
            params = c.shape[0] * c.shape[1]
            gain = params * (c.errors[c.chosen] ** 2 - c.errors[c.chosen + 1] ** 2) / extra
            if gain > best_gain:
                best, best_gain = c, gain
        if best is None:
            return
        spent += best.bits[best.chosen + 1] - best.bits[best.chosen]
        best.chosen += 1


def choice_for(name: str, w: np.ndarray, importance: np.ndarray | None) -> Choice:
    """The options of weight `name`: group sizes up to K (rounded up to 16), cheapest
    first; of sizes that cost the same bits only the smallest (finest) is kept."""
    shape = (int(w.shape[0]), int(w.shape[1]))
    limit = max(16, -(-shape[0] // 16) * 16)
    cost = {g: storage_bytes(shape, g) * 8 for g in GROUP_SIZES if g <= limit}
    sizes, bits = [], []
    for g in sorted(cost, key=lambda g: (cost[g], g)):
        if not bits or cost[g] > bits[-1]:
            sizes.append(g)
            bits.append(cost[g])
    return Choice(name, shape, sizes, bits, estimated_errors(w, importance, sizes))
