"""The numeric building blocks the op implementations share (rules: package docstring)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .core import F32, f32, f64


def libm(fn: Callable[..., float], fallback: Callable[..., Any]) -> Callable[..., np.ndarray]:
    """`fn` (a `math` function, i.e. the C library's double-precision one) elementwise over
    float64 copies of its arguments; returns float64. Where `math` raises instead of
    returning a special value (overflow, log(0), domain errors), the value is numpy's
    `fallback`, which gives C99 Annex F's special values (inf, -inf, nan)."""

    def safe(*args: float) -> float:
        try:
            return fn(*args)
        except (ValueError, OverflowError):
            with np.errstate(all="ignore"):
                return float(fallback(*args))

    def apply(*arrays) -> np.ndarray:
        wide = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in arrays))
        flat = [a.ravel().tolist() for a in wide]
        try:
            values = list(map(fn, *flat))
        except (ValueError, OverflowError):  # rare: redo element by element
            values = list(map(safe, *flat))
        return np.array(values, dtype=np.float64).reshape(wide[0].shape)

    return apply


exp64 = libm(math.exp, np.exp)
tanh64 = libm(math.tanh, np.tanh)
erf64 = libm(math.erf, math.erf)  # math.erf never raises

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)  # 0.7978845608028654
SQRT_2 = math.sqrt(2.0)  # 1.4142135623730951


def sequential_sum(x: np.ndarray, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    """Sum along `axis` in the order x[0] + x[1] + ... (float64 in, float64 out): the order
    a C loop `s += x[i]` has. An empty axis sums to 0."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[axis] == 0:
        return np.sum(x, axis=axis, keepdims=keepdims)
    total = np.take(np.cumsum(x, axis=axis), [-1], axis=axis)
    return total if keepdims else np.squeeze(total, axis=axis)


def matmul_unordered(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in float64, summation order unspecified (BLAS): the quantized float path."""
    return np.matmul(a.astype(np.float64), b.astype(np.float64))


def matmul_f64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b (numpy broadcasting over batch dimensions) in float64, each output summed
    sequentially over k from 0.0: acc += a[..., :, k] * b[..., k, :] for k = 0, 1, ..."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    acc = np.zeros((*batch, a.shape[-2], b.shape[-1]))
    for k in range(a.shape[-1]):
        acc += a[..., :, k, None] * b[..., k, None, :]
    return acc


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x - max) / sum(exp(x - max)) in float64 (libm exp, sequential sum), to float32."""
    x = f64(x)
    e = exp64(x - np.max(x, axis=axis, keepdims=True))
    return f32(e / sequential_sum(e, axis=axis, keepdims=True))


def apply_activation(name: str, x: np.ndarray) -> np.ndarray:
    """The activations of quant3p5.fused_matmul, rounded as the standalone ops round."""
    if name == "none":
        return x
    if name == "relu":
        return np.maximum(x, F32(0)).astype(F32)
    x64 = f64(x)
    if name == "silu":
        return f32(x64 / (1.0 + exp64(-x64)))
    if name == "gelu_tanh":
        inner = SQRT_2_OVER_PI * (x64 + 0.044715 * (x64 * x64 * x64))
        return f32(0.5 * x64 * (1.0 + tanh64(inner)))
    return f32(0.5 * x64 * (1.0 + erf64(x64 / SQRT_2)))
