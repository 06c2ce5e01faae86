"""Calibrated Q3P5 encoders: minimize a layer's OUTPUT error instead of its weight error.

Given the Gram matrix ``H = X^T X`` of a matmul's inputs ``X`` (rows = tokens, collected on
calibration data: compiler/calibration.py), the output error of a quantized weight
``W + D`` is ``||X D||^2 = sum_n D[:, n]^T H D[:, n]``.  These encoders write ordinary Q3P5
tensors (the format, docs/format.md, does not change; every decoder reads them); they differ
from :func:`q3p5.quantize` only in which codes and group codes they choose:

``gptq``  error feedback over the input Hessian (Frantar et al. 2022, "GPTQ"), adapted to
          the pair code: the K axis is walked a pair at a time; both weights of a pair get
          one code, chosen as the nearest codebook point under the pair's own 2x2 metric
          (from the Cholesky factor of H^-1, so the choice sees the correlation of the two
          inputs), and the pair's error is pushed onto the weights not yet quantized.
          Group codes (scale step and offset) are chosen when the walk reaches a group,
          from the weights as the feedback has updated them, by a search over scale steps
          that minimizes the group's diag(H)-weighted error.
``imatrix`` no feedback: the diagonal of H only (llama.cpp's importance matrix).  Codes are
          the nearest points under that diagonal metric and the group scale step is
          searched to minimize the importance-weighted error.

Both keep the per-column words (super-scale, offset grid) of the round-to-nearest encoder,
with its constraint (shared by column blocks, float16 where the shape needs it to stay within
3.75 bits per weight: `word_layout`), so the tensors serialize as compactly as its own.
The result is deterministic: the same W and H give byte-identical tensors.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .q3p5 import (
    _LATTICE,
    CODEBOOK,
    DEFAULT_GROUP_SIZE,
    OFFSET_GRID,
    SCALE_STEPS,
    Q3P5Tensor,
    _check_group_size,
    _check_matrix,
    _check_words,
    _choose_meta,
    _group_stats,
    _nearest_code_table,
    pack_codes,
    word_layout,
)

METHODS = ("gptq", "imatrix")
DEFAULT_METHOD = "gptq"
DEFAULT_DAMP = 0.1
"""Dampening: H + DAMP * mean(diag H) * I (keeps H^-1 well conditioned). GPTQ's paper uses
0.01; on SmolLM2 statistics of 1,280 tokens 0.1 gave much lower output errors on held-out
text, and with 6,656 tokens the same as 0.01 (docs/benchmarks.md): a Gram matrix of 1,536
inputs from few tokens is nearly singular and the feedback overfits it."""
DEFAULT_ACT_ORDER = True
"""Walk the pairs by decreasing input energy with static group codes (docs/quantization.md)."""

DEFAULT_REFINE = 0
"""Coordinate-descent passes after the GPTQ walk (`refine`, docs/quantization.md)."""

_SCALE_CANDIDATES = (-1, 0, 1, 2, 3)
"""Scale steps tried per group, relative to the round-to-nearest encoder's choice (each step
is a fifth of an octave; positive = a finer scale that clips the group's extremes)."""
_CANDIDATES = 12
"""Codes the metric search compares per pair: the Euclidean-nearest one and its nearest
codebook neighbours (the pair metrics of real Hessians are not anisotropic enough for a
farther code to win; tests/quant/test_calibrated.py checks against the full search)."""

_REFINE_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))
"""Group codes the refinement tries besides the current one: (scale step, offset index)
changes."""

_LEVELS = CODEBOOK.astype(np.float64)  # [128, 2]
_ORIGIN_CODE = int(np.argmin((_LEVELS**2).sum(axis=1)))  # the code nearest (0, 0)


def output_error(w: np.ndarray, deq: np.ndarray, gram: np.ndarray) -> float:
    """||X (W - deq)|| / ||X W|| from H = X^T X (0 when X W = 0), in float64."""
    w = np.asarray(w, np.float64)
    d = w - np.asarray(deq, np.float64)
    err = float(np.einsum("ij,ij->", d, gram @ d))
    ref = float(np.einsum("ij,ij->", w, gram @ w))
    return float(np.sqrt(max(err, 0.0) / ref)) if ref > 0 else 0.0


def _prepare_hessian(gram: np.ndarray, k: int, padded: int, damp: float) -> np.ndarray:
    """The dampened H, padded to `padded` rows with an identity block (padding weights are
    independent of the real ones); dead inputs (zero diagonal) get 1 on the diagonal."""
    h = np.zeros((padded, padded), np.float64)
    h[:k, :k] = gram
    diag = np.diagonal(h)[:k].copy()
    dead = diag <= 0
    h[np.arange(k)[dead], np.arange(k)[dead]] = 1.0
    mean = float(np.mean(diag[~dead])) if (~dead).any() else 1.0
    h[np.arange(k), np.arange(k)] += damp * mean
    h[np.arange(k, padded), np.arange(k, padded)] = 1.0
    return h


def _inverse_cholesky(h: np.ndarray) -> np.ndarray:
    """Upper-triangular U with U^T U = H^-1 (GPTQ's factor: row i is the update of input i)."""
    hinv = np.linalg.inv(h)
    hinv = (hinv + hinv.T) * 0.5
    return np.linalg.cholesky(hinv).T


def _pair_metric(u: np.ndarray, a: int) -> np.ndarray:
    """2x2 metric M of pair (a, a+1): the loss of errors (e_a, e_b) is e^T M e when a's
    error feeds into b first (GPTQ's sequential update), from the rows a, a+1 of U."""
    uaa, uab, ubb = u[a, a], u[a, a + 1], u[a + 1, a + 1]
    t = np.array([[1 / uaa, 0.0], [-uab / (uaa * ubb), 1 / ubb]])
    return t.T @ t


@cache
def _neighbours() -> np.ndarray:
    """intp [128, _CANDIDATES]: each code's nearest codes (itself first; by Euclidean
    distance, ties to the lower code), the candidates of the metric search."""
    d = ((_LEVELS[:, None, :] - _LEVELS[None, :, :]) ** 2).sum(axis=2)
    return np.argsort(d, axis=1, kind="stable")[:, :_CANDIDATES]


def _lattice_codes(y: np.ndarray) -> np.ndarray:
    """The reference encoder's codes (Euclidean nearest via its lattice table) of
    normalized pairs y [..., 2]."""
    lattice = np.clip(np.floor(y + (_LATTICE + 0.5)), 0, 2 * _LATTICE).astype(np.intp)
    return _nearest_code_table()[lattice[..., 0] * (2 * _LATTICE + 1) + lattice[..., 1]]


def _nearest_codes(y: np.ndarray, metric: np.ndarray) -> np.ndarray:
    """Codes [N] nearest to normalized pairs y [N, 2] under the 2x2 metric, searched among
    the _CANDIDATES codebook neighbours of the Euclidean-nearest code (ties: first)."""
    candidates = _neighbours()[_lattice_codes(y)]  # [N, C]
    d = y[:, None, :] - _LEVELS[candidates]  # [N, C, 2]
    cost = (metric[0, 0] * d[..., 0] ** 2 + 2 * metric[0, 1] * d[..., 0] * d[..., 1]
            + metric[1, 1] * d[..., 1] ** 2)
    return np.take_along_axis(candidates, cost.argmin(axis=1)[:, None], axis=1)[:, 0]


def _decode_pair(codes: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """float64 [2, N] of the decoder's float32 values scale * level + offset."""
    levels = CODEBOOK.astype(np.float32)[codes].T  # [2, N]
    return (scale * levels + offset).astype(np.float64)


def _round_to_nearest(rows: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """float64 [g, N]: rows [g, N] (g even) through the Euclidean-nearest codes of the
    reference encoder's lattice (fast: one table look-up per pair), decoded."""
    y = (rows - offset) * np.divide(1.0, scale, out=np.zeros(scale.shape, np.float64),
                                    where=scale > 0)
    codes = _lattice_codes(y.reshape(-1, 2, y.shape[1]).transpose(0, 2, 1))  # [g/2, N]
    levels = CODEBOOK.astype(np.float32)[codes]  # [g/2, N, 2]
    levels = levels.transpose(0, 2, 1).reshape(rows.shape)
    return (scale * levels + offset).astype(np.float64)


def _normalized(w: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """(w - offset) / scale as [N, 2] from rows w [2, N]; 0 where the scale is 0."""
    inv = np.divide(1.0, scale, out=np.zeros(scale.shape, np.float64), where=scale > 0)
    return ((w - offset) * inv).T


def _objective_change(delta: np.ndarray, grad: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Per column, how much tr(D^T H D) changes when the rows D_g (with grad = (H D)_g and
    h = H_gg) change by delta: 2 delta^T grad + delta^T h delta."""
    return 2 * (delta * grad).sum(axis=0) + (delta * (h @ delta)).sum(axis=0)


class _Encoder:
    """The state of one calibrated encoding: working weights, column words, group codes.

    The walk visits the pairs of rows in `rows` order (the identity, or with `act_order`
    the pairs by decreasing input energy diag(H), padding last), in blocks of one group
    size; the weights, H and its factor U are held in that order. Group codes are chosen
    when the walk reaches the group (identity order: block = group), or all up front from
    the original weights (`act_order`: a block then mixes groups, GPTQ's static groups)."""

    def __init__(self, w: np.ndarray, gram: np.ndarray, group_size: int, method: str,
                 damp: float, act_order: bool, name: str, words: tuple[int, str]):
        k, n = w.shape
        self.k, self.n, self.g, self.words = k, n, group_size, words
        self.groups = -(-k // group_size)
        padded = self.groups * group_size
        mean, hi, lo = _group_stats(w, group_size, name)
        self.group_codes, self.super_scale, self.offset_base, self.offset_step = \
            _choose_meta(mean, hi, lo, words)
        self.scale = np.zeros((self.groups, n), np.float32)
        self.offset = np.zeros((self.groups, n), np.float32)
        self.w = np.zeros((padded, n), np.float64)
        self.w[:k] = w
        h = _prepare_hessian(np.asarray(gram, np.float64), k, padded, damp)
        self.importance = np.diagonal(h).copy()
        if method == "imatrix":
            h = np.diag(self.importance)
        self.static = act_order
        self.rows = np.arange(padded)
        if act_order:
            for g in range(self.groups):
                self.choose_group(g)
            energy = self.importance.reshape(-1, 2).sum(axis=1)
            padding = np.arange(padded // 2) * 2 >= k
            pairs = np.lexsort((-energy, padding))  # padding last, then by energy
            self.rows = np.stack([2 * pairs, 2 * pairs + 1], axis=1).ravel()
            self.w = self.w[self.rows]
            h = h[np.ix_(self.rows, self.rows)]
        self.h = h  # in walk order: the metric the walk and the refinement minimize
        self.w0 = self.w.copy()  # the weights before any feedback, in walk order
        self.u = _inverse_cholesky(h)
        self.codes = np.full((padded // 2, n), _ORIGIN_CODE, np.uint8)

    def group_meta(self, g: int, e: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, ...]:
        """float32 scale and offset [N] of group g with codes e, j (the decoding rule)."""
        scale = self.super_scale * SCALE_STEPS[e]
        offset = self.offset_base + self.offset_step * OFFSET_GRID[j]
        return scale.astype(np.float32), offset.astype(np.float32)

    def real_rows(self, g: int) -> tuple[int, int]:
        return g * self.g, min(self.k, (g + 1) * self.g)

    def choose_group(self, g: int) -> None:
        """Group codes of group g from the current weights (in original row order): the
        offset bin of the group's mean, then the scale step (around the min/max choice)
        whose round-to-nearest codes have the least importance-weighted error."""
        r0, r1 = self.real_rows(g)
        rows = self.w[r0:r0 + self.g]
        mean = self.w[r0:r1].mean(axis=0).astype(np.float32)
        bins = np.divide(mean - self.offset_base, self.offset_step,
                         out=np.zeros_like(mean), where=self.offset_step > 0)
        j = np.clip(np.floor(bins) + 2, 0, 3).astype(np.uint8)
        base = (self.group_codes[g] & 31).astype(np.int64)
        weights = np.zeros((self.g, 1))
        weights[:r1 - r0, 0] = self.importance[r0:r1]
        best_err = np.full(self.n, np.inf)
        best_e = base.astype(np.uint8)
        for delta in _SCALE_CANDIDATES:
            e = np.clip(base + delta, 0, 31).astype(np.uint8)
            scale, offset = self.group_meta(g, e, j)
            deq = _round_to_nearest(rows, scale, offset)
            err = (weights * (rows - deq) ** 2).sum(axis=0)
            better = err < best_err
            best_err[better] = err[better]
            best_e[better] = e[better]
        self.group_codes[g] = best_e | (j << 5)
        self.scale[g], self.offset[g] = self.group_meta(g, best_e, j)

    def encode_block(self, b0: int) -> None:
        """Codes of the pairs at walk positions b0 .. b0 + group size with error feedback
        inside the block, then the block's accumulated error pushed onto every later
        position (GPTQ's lazy block update)."""
        b1 = b0 + self.g
        u = self.u
        err = np.zeros((self.g, self.n), np.float64)
        for a in range(b0, b1, 2):
            first, second = self.rows[a], self.rows[a + 1]
            if first >= self.k:  # padding pairs keep the origin code (as the reference encoder)
                continue
            g = first // self.g
            scale, offset = self.scale[g], self.offset[g]
            pair = self.w[a:a + 2]
            metric = _pair_metric(u, a) if second < self.k else np.diag([1.0, 1e-12])
            codes = _nearest_codes(_normalized(pair, scale, offset), metric)
            self.codes[first // 2] = codes
            q = _decode_pair(codes, scale, offset)
            ea = (pair[0] - q[0]) / u[a, a]
            self.w[a + 1:b1] -= np.outer(u[a, a + 1:b1], ea)
            eb = (self.w[a + 1] - q[1]) / u[a + 1, a + 1]
            self.w[a + 2:b1] -= np.outer(u[a + 1, a + 2:b1], eb)
            err[a - b0], err[a + 1 - b0] = ea, eb
        if b1 < self.w.shape[0]:
            self.w[b1:] -= u[b0:b1, b1:].T @ err

    def encode(self) -> None:
        for b0 in range(0, self.w.shape[0], self.g):
            if not self.static:
                self.choose_group(b0 // self.g)
            self.encode_block(b0)

    def _pair_block(self, a: int) -> np.ndarray:
        """H's 2x2 block of the pair at walk position a (a padding partner costs nothing)."""
        block = self.h[a:a + 2, a:a + 2].copy()
        if self.rows[a + 1] >= self.k:
            block[0, 1] = block[1, 0] = 0.0
            block[1, 1] = block[0, 0] * 1e-12
        return block

    def _sweep(self, positions: list[int], d: np.ndarray, grad: np.ndarray, h: np.ndarray,
               scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """One coordinate-descent sweep over the pairs at walk positions `positions` (of one
        group, under `scale`/`offset`), updating d (their errors, the pairs' rows in order)
        and grad (= h @ d plus the fixed rest) in place; returns the codes [len, N]."""
        w0, all_codes = self.w0, []
        for i, a in enumerate(positions):
            block = self._pair_block(a)
            rest = grad[2 * i:2 * i + 2] - block @ d[2 * i:2 * i + 2]
            padded = self.rows[a + 1] >= self.k
            if padded:
                rest[1] = 0.0
            target = w0[a:a + 2] + np.linalg.solve(block, rest)
            codes = _nearest_codes(_normalized(target, scale, offset), block)
            new = w0[a:a + 2] - _decode_pair(codes, scale, offset)
            if padded:
                new[1] = 0.0
            delta = new - d[2 * i:2 * i + 2]
            if delta.any():
                grad += h[:, 2 * i:2 * i + 2] @ delta
                d[2 * i:2 * i + 2] = new
            all_codes.append(codes)
        return np.array(all_codes)

    def refine(self, passes: int, scales: bool = True) -> None:
        """Coordinate descent after the walk on the whole layer's output error tr(D^T H D)
        (D = W - deq, H dampened), group by group: each pair gets the code nearest, under
        its 2x2 block of H, to its weights plus the other pairs' errors fed back through H
        (the best code with every other code fixed); with `scales`, each group then also
        tries the neighbouring scale steps (e - 1, e + 1) with its codes re-chosen the same
        way, and each column keeps whichever lowers the objective most. The objective never
        rises; the column words stay as they are."""
        h, w0 = self.h, self.w0
        padded = w0.shape[0]
        deq = np.zeros_like(w0)
        real = self.rows < self.k
        for a in range(0, padded, 2):
            first = self.rows[a]
            if first < self.k:
                g = first // self.g
                deq[a:a + 2] = _decode_pair(self.codes[first // 2], self.scale[g],
                                            self.offset[g])
        d = np.where(real[:, None], w0 - deq, 0.0)
        grad = h @ d
        groups: list[list[int]] = [[] for _ in range(self.groups)]
        for a in range(0, padded, 2):
            if self.rows[a] < self.k:
                groups[self.rows[a] // self.g].append(a)
        for _ in range(passes):
            for g, positions in enumerate(groups):
                if not positions:
                    continue
                idx = np.array([p + i for p in positions for i in (0, 1)])
                hg = h[np.ix_(idx, idx)]
                d_g, grad_g = d[idx], grad[idx]
                codes = self._sweep(positions, d_g, grad_g, hg, self.scale[g], self.offset[g])
                new_d, new_codes = d_g, codes
                e = (self.group_codes[g] & 31).astype(np.int64)
                j = self.group_codes[g] >> 5
                best_e, best_j = e.astype(np.uint8), j.copy()
                if scales:
                    before, fixed = d[idx], grad[idx]
                    best = _objective_change(d_g - before, fixed, hg)
                    for step, shift in _REFINE_STEPS:
                        e_try = np.clip(e + step, 0, 31).astype(np.uint8)
                        j_try = np.clip(j.astype(np.int64) + shift, 0, 3).astype(np.uint8)
                        scale, offset = self.group_meta(g, e_try, j_try)
                        d_try, grad_try = before.copy(), fixed.copy()
                        codes_try = self._sweep(positions, d_try, grad_try, hg, scale, offset)
                        cost = _objective_change(d_try - before, fixed, hg)
                        better = cost < best
                        if better.any():
                            best[better] = cost[better]
                            new_d, new_codes = new_d.copy(), new_codes.copy()
                            new_d[:, better] = d_try[:, better]
                            new_codes[:, better] = codes_try[:, better]
                            best_e[better] = e_try[better]
                            best_j[better] = j_try[better]
                delta = new_d - d[idx]
                grad += h[:, idx] @ delta
                d[idx] = new_d
                for i, a in enumerate(positions):
                    self.codes[self.rows[a] // 2] = new_codes[i]
                self.group_codes[g] = best_e | (best_j << 5)
                self.scale[g], self.offset[g] = self.group_meta(g, best_e, best_j)

    def tensor(self) -> Q3P5Tensor:
        return Q3P5Tensor((self.k, self.n), self.g, pack_codes(self.codes),
                          pack_codes(self.group_codes), self.super_scale, self.offset_base,
                          self.offset_step, *self.words)


def quantize_calibrated(w: np.ndarray, gram: np.ndarray, *, group_size: int =
                        DEFAULT_GROUP_SIZE, method: str = DEFAULT_METHOD,
                        damp: float = DEFAULT_DAMP, act_order: bool = DEFAULT_ACT_ORDER,
                        name: str = "tensor", words: tuple[int, str] | None = None,
                        refine: int = DEFAULT_REFINE, scales: bool = True) -> Q3P5Tensor:
    """Quantize W[K, N] to Q3P5 minimizing ||X (W - deq)|| for inputs with Gram H = X^T X
    (float [K, K], symmetric positive semi-definite). `words` = (column block, word
    format) as in `q3p5.quantize` (default: `word_layout`). Raises ValueError on a bad W,
    H or method (the message names `name`)."""
    _check_group_size(group_size)
    w = _check_matrix(w, name)
    if method not in METHODS:
        raise ValueError(f"{name!r}: unknown calibrated method {method!r} "
                         f"(one of {', '.join(METHODS)})")
    gram = np.asarray(gram)
    if gram.shape != (w.shape[0], w.shape[0]) or not np.isfinite(gram).all():
        raise ValueError(f"{name!r}: calibration statistics of shape {gram.shape} do not fit "
                         f"a weight of shape {w.shape} (expected a finite "
                         f"[{w.shape[0]}, {w.shape[0]}] Gram matrix)")
    shape = (w.shape[0], w.shape[1])
    words = word_layout(shape, group_size) if words is None else _check_words(shape, words)
    enc = _Encoder(w, gram, group_size, method, damp, act_order, name, words)
    enc.encode()
    if method == "gptq" and refine:
        enc.refine(refine, scales)
    return enc.tensor()
