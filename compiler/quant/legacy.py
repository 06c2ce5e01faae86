"""The legacy pair layout read by the existing Fortran kernels.

What it is
----------
One byte per pair of consecutive-K weights ``(W[2i, n], W[2i+1, n])`` (0-based;
the odd and even 1-based K indices), and one float32 scale and one float32
offset per output column::

    bit 7      0
    bits 6..3  v4, signed 4-bit (two's complement, -8..7), for the even 0-based k
    bits 2..0  v3, signed 3-bit (two's complement, -4..3), for the odd 0-based k

    w[2i,   n] = scale[n] * v4           + offset[n]
    w[2i+1, n] = scale[n] * (2 * v3 + 1) + offset[n]

The 3-bit value counts in steps of two 4-bit units at the odd positions -7..7,
so both members of a pair cover the same range [-8, 7] * scale around the
offset.  Because bit 7 is zero, the byte is itself a 7-bit pair code, and the
rule above is the Q3P5 decoding rule with the integer table ``LEGACY_LEVELS``
in place of ``CODEBOOK`` and one group per column.  Storage is 8 bits per pair
plus 64 bits per column: 4 + 64 / K bits per weight.

The quantizer centres each column on its mid-range and picks, per column, the
range shrink factor (clipping) with the least squared error among a handful.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .q3p5 import DEFAULT_GROUP_SIZE, Q3P5Tensor, pair_levels, quantize

__all__ = [
    "LEGACY_LEVELS",
    "LegacyPairTensor",
    "dequantize_legacy",
    "legacy_to_q3p5",
    "quantize_legacy",
]

_CODES = np.arange(128, dtype=np.int16)
#: ``LEGACY_LEVELS[byte]`` = (v4, 2 * v3 + 1): the integer levels of a pair byte.
LEGACY_LEVELS: np.ndarray = np.stack(
    [((_CODES >> 3) ^ 8) - 8, 2 * (((_CODES & 7) ^ 4) - 4) + 1], axis=1
).astype(np.int8)
LEGACY_LEVELS.setflags(write=False)

# Range shrink factors tried per column: level 7.5 * scale lands at this
# fraction of the column's half range.
_SHRINK = np.linspace(1.0, 0.5, 11, dtype=np.float32)
_COLUMN_CHUNK = 1 << 20  # weights processed at once, to bound memory


@dataclass(frozen=True, eq=False)
class LegacyPairTensor:
    """A [K, N] matrix in the legacy layout.

    packed  int8 [ceil(K/2), N], Fortran (column-major) order as the kernels read it
    scale   float32 [N]
    offset  float32 [N]
    """

    shape: tuple[int, int]
    packed: np.ndarray
    scale: np.ndarray
    offset: np.ndarray

    def __post_init__(self) -> None:
        k, n = self.shape
        if k < 1 or n < 1:
            raise ValueError(f"shape must be positive, got {self.shape}")
        for field, dtype, shape in (
            ("packed", np.int8, (-(-k // 2), n)),
            ("scale", np.float32, (n,)),
            ("offset", np.float32, (n,)),
        ):
            arr = getattr(self, field)
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.shape != shape:
                raise ValueError(f"{field} must be a {np.dtype(dtype)} array of shape {shape}")
        if (self.packed < 0).any():
            raise ValueError("bit 7 of every pair byte must be zero")

    def nbytes(self) -> int:
        """Pair bytes plus the float32 scale and offset of every column."""
        return self.packed.size + self.scale.nbytes + self.offset.nbytes

    def bits_per_weight(self) -> float:
        return self.nbytes() * 8 / (self.shape[0] * self.shape[1])


def _pair_levels(z: np.ndarray) -> np.ndarray:
    """Nearest representable levels of normalized weights z [K, N]: integers
    -8..7 at even rows, odd integers -7..7 at odd rows."""
    levels = np.empty_like(z)
    levels[0::2] = np.clip(np.rint(z[0::2]), -8, 7)
    levels[1::2] = 2 * np.clip(np.rint((z[1::2] - 1) / 2), -4, 3) + 1
    return levels


def _fit_columns(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 (scale, offset) of columns w [K, n]: mid-range offset and the
    candidate scale with the least squared error."""
    hi, lo = w.max(axis=0), w.min(axis=0)
    offset = (hi + lo) * np.float32(0.5)
    centred = w - offset
    best_scale = np.zeros_like(offset)
    best_error = np.full_like(offset, np.inf)
    for shrink in _SHRINK:
        scale = (hi - lo) * (shrink / np.float32(15))
        inv = np.divide(1, scale, out=np.zeros_like(scale), where=scale > 0)
        error = np.square(centred - scale * _pair_levels(centred * inv)).sum(axis=0)
        better = error < best_error
        best_error[better], best_scale[better] = error[better], scale[better]
    return best_scale, offset


def _pack_pairs(levels: np.ndarray) -> np.ndarray:
    """Levels [2P, N] from _pair_levels (even row count) -> int8 pair bytes [P, N]."""
    v4 = levels[0::2].astype(np.int8)
    v3 = ((levels[1::2] - 1) / 2).astype(np.int8)
    return ((v4 & 0xF) << 3 | (v3 & 0x7)).astype(np.int8)


def quantize_legacy(w: np.ndarray, *, name: str = "tensor") -> LegacyPairTensor:
    """Quantize a real matrix W[K, N] to the legacy pair layout.  For odd K the
    last pair's missing odd weight is stored as v3 = 0."""
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
        raise ValueError(f"{name!r}: expected a non-empty 2-D [K, N] matrix, got shape {w.shape}")
    if w.dtype.kind not in "fiu":
        raise ValueError(f"{name!r}: expected a real numeric dtype, got {w.dtype}")
    k, n = w.shape
    pairs = -(-k // 2)
    packed = np.empty((pairs, n), dtype=np.int8, order="F")
    scale = np.empty(n, dtype=np.float32)
    offset = np.empty(n, dtype=np.float32)
    step = max(1, _COLUMN_CHUNK // k)
    for n0 in range(0, n, step):
        cols = slice(n0, min(n, n0 + step))
        x = w[:, cols].astype(np.float32)
        if not np.isfinite(x).all():
            raise ValueError(f"cannot quantize {name!r}: it contains NaN or Inf")
        scale[cols], offset[cols] = _fit_columns(x)
        inv = np.divide(1, scale[cols], out=np.zeros_like(scale[cols]), where=scale[cols] > 0)
        levels = _pair_levels((x - offset[cols]) * inv)
        if k % 2:  # the padding weight: v3 = 0, i.e. level 1
            levels = np.concatenate([levels, np.ones((1, levels.shape[1]), np.float32)])
        packed[:, cols] = _pack_pairs(levels)
    return LegacyPairTensor((k, n), packed, scale, offset)


def dequantize_legacy(t: LegacyPairTensor) -> np.ndarray:
    """float32 [K, N]: scale * LEGACY_LEVELS[byte, k % 2] + offset, in float32."""
    levels = pair_levels(t.packed, LEGACY_LEVELS, t.shape[0], np.float32)
    return t.scale * levels + t.offset


def legacy_to_q3p5(
    t: LegacyPairTensor, *, group_size: int = DEFAULT_GROUP_SIZE, name: str = "tensor"
) -> Q3P5Tensor:
    """Convert by re-encoding the legacy tensor's dequantized values as Q3P5."""
    return quantize(dequantize_legacy(t), group_size=group_size, name=name)
