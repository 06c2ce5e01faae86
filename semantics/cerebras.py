"""The Cerebras target's numeric mode for the vector ops of a decode step (docs/cerebras.md):
what its PE programs compute, bit for bit, in float32 with one IEEE rounding per operation
and in the order written here. The PEs have no exp or square-root instruction that q35c
relies on, so both are spelled out as float32 scalar code (the same operations the CSL
programs run, targets/cerebras/vector.py):

- `exp_neg_f32(a)` for a <= 0: a is clamped to -87, n = trunc(a * LOG2E - 0.5) (so n is
  round-to-nearest of a / ln 2 for a <= 0, in [-126, 0]), r = (a - n * LN2_HI) - n * LN2_LO,
  p = the degree-7 Taylor polynomial of exp at 0 in Horner form, e = p * 2^n (a table).
- `silu_f32(x)`: a = x if x < 0 else 0 - x; e = exp_neg_f32(a); d = 1 + e;
  q = (1 if x >= 0 else e) / d; y = x * q.
- `rsqrt_f32(v)` for v > 0 finite: v is scaled by powers of 4 into [1, 4), exactly:
  for k in DOWN_STEPS, if v >= 4^k: v = v * 4^-k, s = s * 2^-k; then for k in UP_STEPS,
  if v < 4^(1-k): v = v * 4^k, s = s * 2^k (each step keeps v < 4, and the steps reach
  [1, 4) from every positive float32, subnormals included); y = 1 - (v - 1) * SIXTH; six
  Newton steps y = y * (1.5 - (y * y) * (v * 0.5)); the result y * s (exact).
- `rms_norm_f32(x, gamma, eps, v_tile)`: per slice of v_tile elements (one PE each),
  part = sum of x[i] * x[i] (i ascending, from 0); total = ((part0 + part1) + part2) + ...
  (the PE row's chain); r = rsqrt_f32(total * f32(1 / D) + eps); y = (x * r) * gamma.
- `softmax_f32(x, v_tile)` over the last axis of [1, D]: M = max of x (exact, any order);
  per slice e[i] = exp_neg_f32(x[i] - M), part = sum of e (ascending, from 0);
  total = ((part0 + part1) + part2) + ...; inv = 1 / total; y = e * inv.
- `swiglu_f32(gate, up)` = silu_f32(gate) * up; elementwise `arith.addf`/`mulf` are already
  float32 with one rounding in the interpreter.
- `attention_f32(q, k, v, mask, scale, t_tile)`, one query row per head ([..., 1, d]):
  per head, scores s[i] = (dot(q, k[i]) * scale) + mask[i] with the dot product summed in
  c ascending from 0; p = softmax_f32(s, t_tile) (the tokens split into blocks of t_tile,
  one PE each); per block the partial context ctx_b = sum of p[i] * v[i] (i ascending,
  from 0, a product and a sum rounding per step); the result ((ctx_0 + ctx_1) + ...).
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
LOG2E = F32(1.4426950408889634)
LN2_HI = F32(0.693145751953125)
"""ln 2 to 16 bits: n * LN2_HI is exact for |n| <= 126."""
LN2_LO = F32(1.4286067653301870e-06)
EXP_CLAMP = F32(-87.0)
TAYLOR = tuple(F32(1.0 / f) for f in (5040, 720, 120, 24, 6, 2, 1, 1))
"""exp's Taylor coefficients from degree 7 down to 0 (Horner order)."""
POW2 = np.array([2.0 ** (j - 126) for j in range(127)], F32)
"""2^n for n = -126..0, index n + 126 (every entry a normal float32)."""
SIXTH = F32(1.0 / 6.0)
DOWN_STEPS = (32, 16, 8, 4, 2, 1)
"""v < 2^128 = 4^64: after the step k, v < 4^k."""
UP_STEPS = (32, 32, 16, 8, 4, 2, 1)
"""v >= 2^-149 > 4^-75: after the steps 32, 32, v >= 4^-31, after the step k, v >= 4^(1-k)."""
NEWTON_STEPS = 6


def exp_neg_f32(a: np.ndarray) -> np.ndarray:
    """exp(a) for a <= 0 (the clamp keeps 2^n normal), elementwise."""
    a = np.asarray(a, F32)
    a = np.where(a < EXP_CLAMP, EXP_CLAMP, a).astype(F32)
    t = (a * LOG2E).astype(F32)
    t = (t - F32(0.5)).astype(F32)
    n = np.trunc(t).astype(np.int32)
    nf = n.astype(F32)
    r = (a - (nf * LN2_HI).astype(F32)).astype(F32)
    r = (r - (nf * LN2_LO).astype(F32)).astype(F32)
    p = np.full(a.shape, TAYLOR[0], F32)
    for c in TAYLOR[1:]:
        p = ((p * r).astype(F32) + c).astype(F32)
    return (p * POW2[n + 126]).astype(F32)


def silu_f32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, F32)
    a = np.where(x < 0, x, (F32(0) - x).astype(F32)).astype(F32)
    e = exp_neg_f32(a)
    d = (F32(1) + e).astype(F32)
    q = (np.where(x >= 0, F32(1), e).astype(F32) / d).astype(F32)
    return (x * q).astype(F32)


def swiglu_f32(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    return (silu_f32(gate) * np.asarray(up, F32)).astype(F32)


def rsqrt_f32(v: F32) -> F32:
    v, s = F32(v), F32(1)
    for k in DOWN_STEPS:
        if v >= F32(4.0 ** k):
            v, s = F32(v * F32(4.0 ** -k)), F32(s * F32(2.0 ** -k))
    for k in UP_STEPS:
        if v < F32(4.0 ** (1 - k)):
            v, s = F32(v * F32(4.0 ** k)), F32(s * F32(2.0 ** k))
    h = F32(v * F32(0.5))
    y = F32(F32(1) - F32(F32(v - F32(1)) * SIXTH))
    for _ in range(NEWTON_STEPS):
        t = F32(y * y)
        t = F32(t * h)
        t = F32(F32(1.5) - t)
        y = F32(y * t)
    return F32(y * s)


def rms_norm_f32(x: np.ndarray, gamma: np.ndarray, eps: float, v_tile: int) -> np.ndarray:
    """x [1, D] (or [D]); one PE per v_tile elements."""
    xv = np.asarray(x, F32).reshape(-1)
    d = xv.size
    total = None
    for p0 in range(0, d, v_tile):
        part = F32(0)
        for xi in xv[p0:p0 + v_tile]:
            part = F32(part + F32(xi * xi))
        total = part if total is None else F32(total + part)
    r = rsqrt_f32(F32(F32(total * F32(1.0 / d)) + F32(eps)))
    y = ((xv * r).astype(F32) * np.asarray(gamma, F32).reshape(-1)).astype(F32)
    return y.reshape(np.shape(x))


def softmax_f32(x: np.ndarray, v_tile: int) -> np.ndarray:
    """x [1, D] (or [D]); one PE per v_tile elements."""
    xv = np.asarray(x, F32).reshape(-1)
    e = exp_neg_f32((xv - np.max(xv)).astype(F32))
    total = None
    for p0 in range(0, xv.size, v_tile):
        part = F32(0)
        for ei in e[p0:p0 + v_tile]:
            part = F32(part + ei)
        total = part if total is None else F32(total + part)
    return (e * F32(F32(1) / total)).astype(F32).reshape(np.shape(x))


def attention_f32(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None,
                  scale: float, t_tile: int) -> np.ndarray:
    """q [..., 1, d], k [..., S, d], v [..., S, dv], mask broadcasting to [..., 1, S]."""
    q, k, v = (np.asarray(a, F32) for a in (q, k, v))
    batch, s_len, d, dv = q.shape[:-2], k.shape[-2], q.shape[-1], v.shape[-1]
    m = np.broadcast_to(np.zeros((), F32) if mask is None else np.asarray(mask, F32),
                        (*batch, 1, s_len)).reshape(-1, s_len)
    qs, ks, vs = (a.reshape(-1, *a.shape[-2:]) for a in (q, k, v))
    out = np.zeros((qs.shape[0], dv), F32)
    for h in range(qs.shape[0]):
        acc = np.zeros(s_len, F32)
        for c in range(d):
            acc = (acc + (ks[h, :, c] * qs[h, 0, c]).astype(F32)).astype(F32)
        sc = ((acc * F32(scale)).astype(F32) + m[h]).astype(F32)
        p = softmax_f32(sc, t_tile)
        total = None
        for b0 in range(0, s_len, t_tile):
            part = np.zeros(dv, F32)
            for i in range(b0, min(b0 + t_tile, s_len)):
                part = (part + (vs[h, i] * p[i]).astype(F32)).astype(F32)
            total = part if total is None else (total + part).astype(F32)
        out[h] = total
    return out.reshape(*batch, 1, dv)
