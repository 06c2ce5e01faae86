"""The Q3P5 weight format: 3.5 bits per weight plus 7 bits of metadata per group.

What it is
----------
A weight matrix ``W[K, N]`` (K = reduction axis, N = output columns) is cut, per
column, into groups of ``group_size`` consecutive K.  Every pair of consecutive
weights ``(W[2i, n], W[2i+1, n])`` is replaced by ONE 7-bit code, an index into
the constant table ``CODEBOOK`` of 128 integer points in the plane, and codes
are stored densely, 8 codes in 7 bytes.  Every group also gets a 7-bit code
``e | j << 5``: a scale step ``e`` under a per-column float32 super-scale and an
offset index ``j`` into a per-column 4-entry offset grid.  Decoding, in float32::

    w[k, n]      = scale[g, n] * CODEBOOK[code, k % 2] + offset[g, n],  g = k // group_size
    scale[g, n]  = super_scale[n] * SCALE_STEPS[e]
    offset[g, n] = offset_base[n] + offset_step[n] * OFFSET_GRID[j]

Why this design
---------------
* A 2-D codebook (vector quantization of pairs) beats a product of two scalar
  quantizers at 7 bits per pair: its cells are nearly hexagonal and it spends
  no points in the corners of the square, where bell-shaped pairs rarely fall.
* Groups of 32 follow outliers (heavy-tailed weights need small groups); packed
  7-bit group codes and three float32 words per column keep the whole tensor at
  3.742 bits per weight for K = 4096.
* The per-column offset grid removes any column-wide mean exactly; the 2-bit
  per-group index follows group means that wander inside the column.
* The encoder needs only the mean, max and min of each group and one table
  look-up per pair, so it quantizes at least as fast as gguf's numpy Q4_0
  quantizer (docs/benchmarks-format.md).  The codebook was trained (Lloyd's
  algorithm) on pairs normalized exactly as this encoder normalizes them, which
  is what makes that cheap, search-free scale choice good.

The byte-level specification and the codebook's derivation are in docs/format.md.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np

__all__ = [
    "CODEBOOK",
    "BUDGET_BITS",
    "DEFAULT_GROUP_SIZE",
    "OFFSET_GRID",
    "SCALE_STEPS",
    "WORD_FORMATS",
    "Q3P5Tensor",
    "decode_meta",
    "dequantize",
    "error_bound",
    "pack_codes",
    "pair_levels",
    "quantize",
    "serialized_size",
    "storage_bytes",
    "unpack_codes",
    "word_layout",
]

#: Decode table: ``CODEBOOK[code]`` = (level of the even-k weight, level of the odd-k weight).
# fmt: off
CODEBOOK: np.ndarray = np.array([
     -98, -27,   -98,  -1,   -98,  23,   -96, -58,   -96,  53,   -87,  88,   -85, -91,   -81, -14,
     -78, -40,   -78,  11,   -76,  36,   -69,  59,   -66, -66,   -66,  -4,   -64, -23,   -63,  22,
     -58, -43,   -55,   7,   -55,  39,   -53,  75,   -52,  97,   -50, -93,   -50,  -9,   -47, -26,
     -47,  23,   -46,  54,   -45, -61,   -41, -42,   -41,   8,   -37,  -4,   -37,  36,   -35, -16,
     -32,  19,   -31, -30,   -31,  72,   -30, -72,   -29,  53,   -28,   6,   -27, -47,   -26,  96,
     -24,  -7,   -23, -97,   -21, -19,   -21,  27,   -21,  40,   -19,  14,   -17, -33,   -16, -59,
     -16,   2,   -13, -10,   -13,  54,   -12,  74,   -11, -79,   -11, -45,    -9, -22,    -9,  22,
      -9,  36,    -8,  10,    -5,  -2,    -3, -34,    -3,  98,    -1, -12,     0, -64,     1, -98,
       2,   6,     2,  17,     2,  60,     3,  29,     3,  44,     4, -49,     4, -23,     6,  -3,
       7,  79,    10, -80,    10, -35,    11, -12,    12,   9,    14,  20,    15,  34,    17, -64,
      17, -23,    17,  -1,    18,  49,    18,  64,    20, -48,    20,  98,    24, -12,    25, -98,
      25, -33,    25,  12,    25,  26,    29,   0,    31,  40,    32, -22,    32,  78,    35, -78,
      35, -43,    35,  58,    36, -60,    36,  20,    39, -10,    39,   6,    44, -30,    45,  32,
      50,  97,    51,  17,    51,  48,    52, -17,    52,  -1,    53, -48,    56, -97,    56,  71,
      59, -71,    63, -31,    63,  31,    66,  10,    67, -10,    73,  53,    75, -52,    82, -26,
      82,  26,    83,   0,    87,  85,    91, -82,    97,  45,    98, -43,    99, -12,    99,  14,
], dtype=np.int8).reshape(128, 2)
# fmt: on
CODEBOOK.setflags(write=False)

DEFAULT_GROUP_SIZE: int = 32

#: ``SCALE_STEPS[e]`` = 2 ** (-e / 5) rounded to float32, e = 0..31.  Built from the
#: bit patterns of five mantissas times exact powers of two, so no math library
#: is involved and every target can reproduce the table bit for bit.
_STEP_MANTISSAS = np.array(
    [0x3F800000, 0x3F5EDC67, 0x3F420300, 0x3F28E5A3, 0x3F13088C], dtype=np.uint32
).view(np.float32)
SCALE_STEPS: np.ndarray = np.ldexp(
    _STEP_MANTISSAS[np.arange(32) % 5], -(np.arange(32) // 5)
).astype(np.float32)
SCALE_STEPS.setflags(write=False)

#: Offset grid in units of ``offset_step``: the centres of four equal bins.
OFFSET_GRID: np.ndarray = np.array([-1.5, -0.5, 0.5, 1.5], dtype=np.float32)
OFFSET_GRID.setflags(write=False)

_MAGIC = b"Q3P5"
_VERSION = 2  # what to_bytes writes; from_bytes reads versions 1 and 2
_HEADER = struct.Struct("<4sHHII")  # magic, version, group_size, K, N (both versions)
_HEADER_V2 = struct.Struct("<IBbbb")  # column block B, word format, three float16 shifts
_CRC = struct.Struct("<I")
_COLUMN_WORDS = 3  # super_scale, offset_base, offset_step per column

#: Word formats of version 2: how each stored word decodes to the in-memory float32.
WORD_FORMATS: tuple[str, ...] = ("float32", "float16")
_WORD_BYTES = {"float32": 4, "float16": 2}
_SHIFT_RANGE = (-125, 112)  # float16 * 2**shift is an exact float32 for shifts in this range
_F16_MAX = 65504.0
BUDGET_BITS = 3.75
"""Bits per weight (everything stored counted) that `word_layout` keeps a tensor within
wherever the shape allows (docs/format.md section 6)."""
_ORIGIN_CODE = 58  # CODEBOOK[58] = (-5, -2), the code nearest (0, 0): every padding pair

# Encoder constants (not part of the decoding rule).
_RANGE = np.float32(100.0)  # a group's largest |w - offset| maps to 100 level units
_LATTICE = 127  # normalized weights are rounded to the integer lattice [-127, 127]^2
_MIN_SUPER_SCALE = np.float32(2.0**-96)  # columns this small are stored as scale 0
_MAX_ABS = np.float32(2.0**120)  # keeps every float32 intermediate finite
_CHUNK_ELEMENTS = 1 << 18  # weights per encoder step, sized for the L2 cache


# --------------------------------------------------------------------------- #
# 7-bit packing                                                                #
# --------------------------------------------------------------------------- #


def _pack_rows(codes: np.ndarray) -> np.ndarray:
    """uint8 codes [8*B, N] -> bytes [B, 7, N].  Code i of a block occupies bits
    7i..7i+6 of a little-endian 56-bit word: byte b = (c[b] >> b) | (c[b+1] << (7-b))."""
    blocks = codes.reshape(-1, 8, codes.shape[-1])
    out = np.empty((blocks.shape[0], 7, blocks.shape[2]), dtype=np.uint8)
    for b in range(7):
        np.right_shift(blocks[:, b], np.uint8(b), out=out[:, b])
        out[:, b] |= blocks[:, b + 1] << np.uint8(7 - b)  # uint8 shift drops the high bits
    return out


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Pack 7-bit codes [P, N] (0..127) into uint8 [N, ceil(P/8) * 7]: row n holds
    column n's codes in P order, 8 codes per 7 bytes, the last block padded with 0."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D [P, N], got shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() > 127):
        raise ValueError("codes must lie in 0..127")
    p, n = codes.shape
    padded = np.zeros((-(-p // 8) * 8, n), dtype=np.uint8)
    padded[:p] = codes
    return np.ascontiguousarray(_pack_rows(padded).transpose(2, 0, 1)).reshape(n, -1)


def unpack_codes(payload: np.ndarray, P: int, N: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: uint8 [N, ceil(P/8) * 7] -> codes uint8 [P, N]."""
    blocks = -(-P // 8)
    payload = np.asarray(payload, dtype=np.uint8)
    if payload.size != N * blocks * 7:
        raise ValueError(f"payload has {payload.size} bytes, expected {N * blocks * 7}")
    words = np.zeros((N, blocks, 8), dtype=np.uint8)
    words[:, :, :7] = payload.reshape(N, blocks, 7)
    shifts = np.arange(0, 56, 7, dtype=np.uint64)
    codes = (words.view("<u8") >> shifts) & np.uint64(0x7F)  # [N, blocks, 8]
    return np.ascontiguousarray(codes.astype(np.uint8).reshape(N, blocks * 8)[:, :P].T)


# --------------------------------------------------------------------------- #
# The tensor                                                                   #
# --------------------------------------------------------------------------- #


def _check_group_size(group_size: int) -> None:
    if not isinstance(group_size, (int, np.integer)) or group_size < 16 or group_size % 16:
        raise ValueError(f"group_size must be a positive multiple of 16, got {group_size!r}")
    if group_size > 0xFFF0:
        raise ValueError(f"group_size must fit in 16 bits, got {group_size}")


def _layout(shape: tuple[int, int], group_size: int) -> tuple[int, int, int]:
    """(groups per column, payload bytes per column, group-code bytes per column) of the
    in-memory arrays (and of version 1, which stores them as they are)."""
    groups = -(-shape[0] // group_size)
    return groups, groups * group_size // 16 * 7, -(-groups // 8) * 7


def _dense_bytes(codes: int) -> int:
    """Bytes of `codes` 7-bit codes packed densely, 8 per 7 bytes."""
    return -(-codes // 8) * 7


def _v1_bytes(shape: tuple[int, int], group_size: int) -> int:
    _, payload_bytes, meta_bytes = _layout(shape, group_size)
    return _HEADER.size + shape[1] * (4 * _COLUMN_WORDS + meta_bytes + payload_bytes) + _CRC.size


def _v2_bytes(shape: tuple[int, int], group_size: int, column_block: int, word_format: str
              ) -> int:
    k, n = shape
    words = _COLUMN_WORDS * _WORD_BYTES[word_format] * -(-n // column_block)
    return (_HEADER.size + _HEADER_V2.size + words + _dense_bytes(n * -(-k // group_size))
            + _dense_bytes(n * -(-k // 2)) + _CRC.size)


def _v2_group_ok(k: int, group_size: int) -> bool:
    """Version 2 stores a group size no longer than K rounded up to 16: its padding rows
    are not stored, so this bounds what decoding a blob allocates (a longer group decodes
    like that one anyway, but pads every column with up to group_size rows)."""
    return group_size <= -(-k // 16) * 16


def _check_words(shape: tuple[int, int], words: tuple[int, str]) -> tuple[int, str]:
    column_block, word_format = words
    if word_format not in WORD_FORMATS:
        raise ValueError(f"word format must be one of {WORD_FORMATS}, got {word_format!r}")
    if (not isinstance(column_block, (int, np.integer)) or isinstance(column_block, bool)
            or not 1 <= column_block <= shape[1]):
        raise ValueError(f"column block must be an integer in 1..N = {shape[1]}, "
                         f"got {column_block!r}")
    return int(column_block), word_format


def word_layout(shape: tuple[int, int], group_size: int = DEFAULT_GROUP_SIZE
                ) -> tuple[int, str]:
    """(column block B, word format) that the encoders give a [K, N] tensor: per-column
    float32 words (B = 1, the words of format version 1) if the serialized tensor then
    fits BUDGET_BITS per weight; else float16 words shared by blocks of the smallest B
    that fits; else (no B fits: K < 256, or a tiny N) per-column float32 again, since
    sharing would cost accuracy without reaching the budget (docs/format.md section 6)."""
    _check_group_size(group_size)
    k, n = shape
    budget = k * n * 15 // 32  # bytes: 3.75 bits per weight is 15/32 bytes
    if not _v2_group_ok(k, group_size) or _v2_bytes(shape, group_size, 1, "float32") <= budget:
        return 1, "float32"
    block_bytes = _COLUMN_WORDS * _WORD_BYTES["float16"]
    blocks = (budget - _v2_bytes(shape, group_size, n, "float16") + block_bytes) // block_bytes
    if blocks >= 1:
        return -(-n // blocks), "float16"
    return 1, "float32"


def storage_bytes(shape: tuple[int, int], group_size: int = DEFAULT_GROUP_SIZE, *,
                  version: int | None = None, words: tuple[int, str] | None = None) -> int:
    """Exact size in bytes of a serialized [K, N] tensor (header, arrays, checksum) in
    format `version`: by default what `to_bytes()` writes for `quantize`'s output (version
    2, or 1 for a group longer than K rounded up to 16); for version 2 with `words` =
    (column block, word format), by default the encoders' `word_layout(shape, group_size)`."""
    _check_group_size(group_size)
    if version is None:
        version = 2 if _v2_group_ok(shape[0], group_size) else 1
    if version == 1:
        return _v1_bytes(shape, group_size)
    if version != 2:
        raise ValueError(f"unknown Q3P5 version {version!r}")
    if not _v2_group_ok(shape[0], group_size):
        raise ValueError(f"version 2 stores groups of at most K = {shape[0]} rounded up to "
                         f"16, not {group_size}")
    words = word_layout(shape, group_size) if words is None else _check_words(shape, words)
    return _v2_bytes(shape, group_size, *words)


def serialized_size(header: bytes) -> tuple[tuple[int, int], int, int]:
    """((K, N), group size, total bytes) that a serialization starting with `header` (its
    first 24 bytes or more, either version) declares; ValueError if they are malformed.
    Lets a reader check a blob's length without parsing it."""
    header = bytes(header)
    if len(header) < _HEADER.size:
        raise ValueError(f"Q3P5 header too short ({len(header)} bytes)")
    magic, version, group_size, k, n = _HEADER.unpack_from(header)
    if magic != _MAGIC or version not in (1, 2) or k < 1 or n < 1:
        raise ValueError("not a Q3P5 header")
    _check_group_size(group_size)
    if version == 1:
        return (k, n), group_size, _v1_bytes((k, n), group_size)
    if len(header) < _HEADER.size + _HEADER_V2.size:
        raise ValueError(f"Q3P5 header too short ({len(header)} bytes)")
    block, fmt = _HEADER_V2.unpack_from(header, _HEADER.size)[:2]
    if fmt >= len(WORD_FORMATS) or not 1 <= block <= n or not _v2_group_ok(k, group_size):
        raise ValueError("not a Q3P5 header")
    return (k, n), group_size, _v2_bytes((k, n), group_size, block, WORD_FORMATS[fmt])


# --------------------------------------------------------------------------- #
# Version-2 words: shared by column blocks, float32 or float16 * 2**shift        #
# --------------------------------------------------------------------------- #


def _float16_shift(values: np.ndarray) -> int:
    """The smallest shift s in _SHIFT_RANGE with max|values| <= 65504 * 2**s: the one
    shift that version 2 stores for a float16 word array (the finest that cannot
    overflow, so it represents every array that any other shift represents)."""
    top = float(np.abs(values).max()) if values.size else 0.0
    shift = _SHIFT_RANGE[0]
    if top > 0:
        exponent = math.frexp(top)[1]  # top < 2**exponent
        shift = max(shift, exponent - 16 if top <= math.ldexp(_F16_MAX, exponent - 16)
                    else exponent - 15)
    return min(shift, _SHIFT_RANGE[1])


def _float16_words(values: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(shift, float16 h) with values == float32(h) * 2**shift bit for bit, or None when
    float32 `values` have no such form (too many significant bits, out of range)."""
    shift = _float16_shift(values)
    with np.errstate(over="ignore"):
        h = np.ldexp(values.astype(np.float64), -shift).astype(np.float16)
    if not np.isfinite(h).all():
        return None
    back = np.ldexp(h.astype(np.float32), shift).astype(np.float32)
    return (shift, h) if np.array_equal(back.view(np.uint32), values.view(np.uint32)) else None


def _round_float16(values: np.ndarray, up: bool) -> np.ndarray:
    """float32 `values` rounded to the float16 * 2**shift grid of their array (to nearest,
    or upwards when `up`): the encoder's version-2 word constraint."""
    shift = _float16_shift(values)
    x = np.ldexp(values.astype(np.float64), -shift)
    h = x.astype(np.float16)  # round to nearest even; |x| <= 65504 cannot overflow
    if up:
        low = h.astype(np.float64) < x
        h[low] = np.nextafter(h[low], np.float16(np.inf))
    return np.ldexp(h.astype(np.float32), shift).astype(np.float32)


def _per_block(values: np.ndarray, block: int, reduce) -> np.ndarray:
    """[N] -> [ceil(N / block)]: `reduce` over each block of `block` adjacent columns."""
    if block == 1:
        return values
    pad = -values.shape[0] % block
    if pad:
        values = np.concatenate([values, np.repeat(values[-1:], pad)])
    return reduce(values.reshape(-1, block), axis=1)


def _per_column(values: np.ndarray, block: int, n: int) -> np.ndarray:
    """[ceil(N / block)] -> [N]: each block's value repeated over its columns."""
    return values if block == 1 else np.repeat(values, block)[:n]


def decode_meta(
    group_codes: np.ndarray,
    super_scale: np.ndarray,
    offset_base: np.ndarray,
    offset_step: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """float32 [G, N] scale and offset from the group codes [G, N] (``e | j << 5``) and the
    per-column words: ``super_scale * SCALE_STEPS[e]``, ``offset_base + offset_step *
    OFFSET_GRID[j]`` (format.md section 3)."""
    scale = super_scale * SCALE_STEPS[group_codes & 31]
    offset = offset_base + offset_step * OFFSET_GRID[group_codes >> 5]
    return scale, offset


@dataclass(frozen=True, eq=False)
class Q3P5Tensor:
    """A quantized [K, N] matrix, holding the decoded arrays (per column, as every target
    reads them; version 1 stores exactly these).

    payload      uint8 [N, G*group_size/16*7]  column n's pair codes, 8 per 7 bytes
    meta         uint8 [N, ceil(G/8)*7]         column n's group codes e | j << 5, 8 per 7 bytes
    super_scale  float32 [N]                    scale unit of each column
    offset_base  float32 [N]                    centre of each column's offset grid
    offset_step  float32 [N]                    spacing of each column's offset grid
    column_block B: the three words are equal over each block of B adjacent columns
                 (columns b*B .. b*B + B - 1; the last block may be shorter)
    word_format  "float32", or "float16": every word is float16 * 2**shift exactly, one
                 shift per word array

    The last two are the constraint that format version 2 stores compactly: one word of
    each kind per block, in 2 or 4 bytes (docs/format.md section 6). The defaults (1,
    "float32") constrain nothing.
    """

    shape: tuple[int, int]
    group_size: int
    payload: np.ndarray
    meta: np.ndarray
    super_scale: np.ndarray
    offset_base: np.ndarray
    offset_step: np.ndarray
    column_block: int = 1
    word_format: str = "float32"

    def __post_init__(self) -> None:
        k, n = self.shape
        if k < 1 or n < 1:
            raise ValueError(f"shape must be positive, got {self.shape}")
        _check_group_size(self.group_size)
        _check_words(self.shape, (self.column_block, self.word_format))
        _, payload_bytes, meta_bytes = _layout(self.shape, self.group_size)
        for field, dtype, shape in (
            ("payload", np.uint8, (n, payload_bytes)),
            ("meta", np.uint8, (n, meta_bytes)),
            ("super_scale", np.float32, (n,)),
            ("offset_base", np.float32, (n,)),
            ("offset_step", np.float32, (n,)),
        ):
            arr = getattr(self, field)
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.shape != shape:
                raise ValueError(f"{field} must be a {np.dtype(dtype)} array of shape {shape}")
        words = np.stack([self.super_scale, self.offset_base, self.offset_step])
        if not np.isfinite(words).all() or (self.super_scale < 0).any():
            raise ValueError("per-column words must be finite, super_scale non-negative")
        block = self.column_block
        for name, arr in zip(("super_scale", "offset_base", "offset_step"), words, strict=True):
            heads = arr[::block]
            if block > 1 and not np.array_equal(
                    _per_column(heads, block, n).view(np.uint32), arr.view(np.uint32)):
                raise ValueError(f"{name} differs within a block of {block} columns")
            if self.word_format == "float16" and _float16_words(heads) is None:
                raise ValueError(f"{name} is not float16 * 2**shift for one shift")

    @property
    def num_groups(self) -> int:
        return _layout(self.shape, self.group_size)[0]

    @property
    def words(self) -> tuple[int, str]:
        """(column block, word format)."""
        return self.column_block, self.word_format

    def nbytes(self) -> int:
        """Size of :meth:`to_bytes`: header, words, group codes, payload, checksum."""
        if self._v2_ok():
            return _v2_bytes(self.shape, self.group_size, *self.words)
        return _v1_bytes(self.shape, self.group_size)

    def bits_per_weight(self) -> float:
        return self.nbytes() * 8 / (self.shape[0] * self.shape[1])

    def group_codes(self) -> np.ndarray:
        """uint8 [G, N]: bits 0..4 scale step e, bits 5..6 offset index j."""
        return unpack_codes(self.meta, self.num_groups, self.shape[1])

    def scales(self) -> np.ndarray:
        """float32 [G, N] decoded group scales."""
        return self._meta()[0]

    def offsets(self) -> np.ndarray:
        """float32 [G, N] decoded group offsets."""
        return self._meta()[1]

    def _meta(self) -> tuple[np.ndarray, np.ndarray]:
        words = (self.super_scale, self.offset_base, self.offset_step)
        return decode_meta(self.group_codes(), *words)

    def _stored_pairs(self) -> int:
        return self.num_groups * self.group_size // 2

    def codes(self) -> np.ndarray:
        """uint8 [ceil(K/2), N] pair codes, padding pairs dropped."""
        stored = unpack_codes(self.payload, self._stored_pairs(), self.shape[1])
        return stored[: -(-self.shape[0] // 2)]

    def _v2_ok(self) -> bool:
        """Whether version 2 holds this tensor exactly (else to_bytes() writes version 1)."""
        return _v2_group_ok(self.shape[0], self.group_size) and self._canonical_padding()

    def _canonical_padding(self) -> bool:
        """Whether the padding that version 2 does not store is what it restores: the
        origin code in every pair of padding rows, code 0 in every padding group code."""
        k, n = self.shape
        groups, stored, real = self.num_groups, self._stored_pairs(), -(-k // 2)
        if real < stored and (unpack_codes(self.payload, stored, n)[real:] != _ORIGIN_CODE).any():
            return False
        return not (groups % 8 and unpack_codes(self.meta, -(-groups // 8) * 8, n)[groups:].any())

    def to_bytes(self, version: int | None = None) -> bytes:
        """The serialization (docs/format.md section 6). Version 2 (the default) stores one
        word of each kind per column block and packs the group codes and the real pair
        codes densely across the matrix; version 1 stores the arrays as they are (the
        layout the targets' kernels read). A tensor whose padding codes version 2 would not
        restore (a version-1 blob from another encoder) is written as version 1 by default;
        both decode to the same arrays."""
        if version is None:
            version = 2 if self._v2_ok() else 1
        if version == 1:
            return self._to_bytes_v1()
        if version != 2:
            raise ValueError(f"unknown Q3P5 version {version!r}")
        if not _v2_group_ok(self.shape[0], self.group_size):
            raise ValueError(f"version 2 stores groups of at most K = {self.shape[0]} rounded "
                             f"up to 16, not {self.group_size} (write it as version 1)")
        if not self._canonical_padding():
            raise ValueError("this tensor's padding codes are not the ones version 2 "
                             "restores (write it as version 1)")
        return self._to_bytes_v2()

    def _to_bytes_v1(self) -> bytes:
        k, n = self.shape
        body = b"".join(
            (
                _HEADER.pack(_MAGIC, 1, self.group_size, k, n),
                self.super_scale.astype("<f4").tobytes(),
                self.offset_base.astype("<f4").tobytes(),
                self.offset_step.astype("<f4").tobytes(),
                self.meta.tobytes(),
                self.payload.tobytes(),
            )
        )
        return body + _CRC.pack(zlib.crc32(body))

    def _to_bytes_v2(self) -> bytes:
        k, n = self.shape
        block, word_format = self.words
        shifts, words = [], []
        for arr in (self.super_scale, self.offset_base, self.offset_step):
            heads = arr[::block]
            if word_format == "float32":
                shifts.append(0)
                words.append(heads.astype("<f4").tobytes())
            else:
                shift, h = _float16_words(heads)
                shifts.append(shift)
                words.append(h.astype("<f2").tobytes())
        groups = self.num_groups
        meta = (self.meta if groups % 8 == 0
                else pack_codes(self.group_codes().T.reshape(-1, 1)))
        payload = (self.payload if -(-k // 2) == self._stored_pairs()
                   else pack_codes(self.codes().T.reshape(-1, 1)))
        body = b"".join(
            (
                _HEADER.pack(_MAGIC, 2, self.group_size, k, n),
                _HEADER_V2.pack(block, WORD_FORMATS.index(word_format), *shifts),
                *words,
                meta.tobytes(),
                payload.tobytes(),
            )
        )
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> Q3P5Tensor:
        """Parse :meth:`to_bytes` output of either version; malformed input raises
        ValueError."""
        data = bytes(data)
        if len(data) < _HEADER.size + _CRC.size:
            raise ValueError(f"Q3P5 blob too short ({len(data)} bytes)")
        magic, version, group_size, k, n = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise ValueError(f"not a Q3P5 blob (magic {magic!r})")
        if version not in (1, 2):
            raise ValueError(f"unsupported Q3P5 version {version}")
        if k < 1 or n < 1:
            raise ValueError(f"Q3P5 blob has an empty shape ({k}, {n})")
        _check_group_size(group_size)
        if version == 1:
            return cls._from_bytes_v1(data, group_size, k, n)
        return cls._from_bytes_v2(data, group_size, k, n)

    @staticmethod
    def _check_length_and_crc(data: bytes, expected: int) -> None:
        if len(data) != expected:
            raise ValueError(f"Q3P5 blob has {len(data)} bytes, its header implies {expected}")
        (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
        if crc != zlib.crc32(data[: -_CRC.size]):
            raise ValueError("Q3P5 blob checksum mismatch (corrupt data)")

    @classmethod
    def _from_bytes_v1(cls, data: bytes, group_size: int, k: int, n: int) -> Q3P5Tensor:
        cls._check_length_and_crc(data, _v1_bytes((k, n), group_size))
        _, payload_bytes, meta_bytes = _layout((k, n), group_size)
        words = np.frombuffer(data, "<f4", _COLUMN_WORDS * n, _HEADER.size).astype(np.float32)
        super_scale, offset_base, offset_step = words.reshape(_COLUMN_WORDS, n)
        start = _HEADER.size + 4 * _COLUMN_WORDS * n
        meta = np.frombuffer(data, np.uint8, n * meta_bytes, start).reshape(n, meta_bytes)
        payload = np.frombuffer(data, np.uint8, n * payload_bytes, start + meta.size)
        return cls(
            (k, n), group_size, payload.reshape(n, payload_bytes).copy(), meta.copy(),
            super_scale.copy(), offset_base.copy(), offset_step.copy(),
        )

    @classmethod
    def _from_bytes_v2(cls, data: bytes, group_size: int, k: int, n: int) -> Q3P5Tensor:
        if len(data) < _HEADER.size + _HEADER_V2.size + _CRC.size:
            raise ValueError(f"Q3P5 blob too short ({len(data)} bytes)")
        block, fmt, *shifts = _HEADER_V2.unpack_from(data, _HEADER.size)
        if fmt >= len(WORD_FORMATS):
            raise ValueError(f"Q3P5 blob has an unknown word format {fmt}")
        word_format = WORD_FORMATS[fmt]
        if not 1 <= block <= n:
            raise ValueError(f"Q3P5 blob has a column block of {block} for N = {n}")
        if not _v2_group_ok(k, group_size):
            raise ValueError(f"Q3P5 version-2 blob has a group size of {group_size} for "
                             f"K = {k} (at most K rounded up to 16)")
        cls._check_length_and_crc(data, _v2_bytes((k, n), group_size, block, word_format))
        at = _HEADER.size + _HEADER_V2.size
        blocks = -(-n // block)
        words = []
        for shift in shifts:
            if word_format == "float32":
                if shift:
                    raise ValueError("Q3P5 blob has a shift for float32 words")
                heads = np.frombuffer(data, "<f4", blocks, at).astype(np.float32)
            else:
                if not _SHIFT_RANGE[0] <= shift <= _SHIFT_RANGE[1]:
                    raise ValueError(f"Q3P5 blob has a float16 shift {shift} outside "
                                     f"{_SHIFT_RANGE[0]}..{_SHIFT_RANGE[1]}")
                h = np.frombuffer(data, "<f2", blocks, at)
                if not np.isfinite(h).all():
                    raise ValueError("Q3P5 blob has non-finite words")
                heads = np.ldexp(h.astype(np.float32), shift).astype(np.float32)
                if _float16_shift(heads) != shift:
                    raise ValueError(f"Q3P5 blob's float16 shift {shift} is not the "
                                     f"canonical {_float16_shift(heads)}")
            at += heads.size * _WORD_BYTES[word_format]
            words.append(_per_column(heads, block, n).copy())
        groups, payload_bytes, meta_bytes = _layout((k, n), group_size)
        real, stored = -(-k // 2), groups * group_size // 2
        if groups % 8 == 0:  # whole blocks per column: the dense stream is the rows
            meta = np.frombuffer(data, np.uint8, n * meta_bytes, at).reshape(n, meta_bytes)
            meta = meta.copy()
        else:
            meta = pack_codes(_dense_codes(data, at, n * groups).reshape(n, groups).T)
        at += _dense_bytes(n * groups)
        if real == stored:
            payload = np.frombuffer(data, np.uint8, n * payload_bytes, at)
            payload = payload.reshape(n, payload_bytes).copy()
        else:
            codes = np.full((stored, n), _ORIGIN_CODE, np.uint8)
            codes[:real] = _dense_codes(data, at, n * real).reshape(n, real).T
            payload = pack_codes(codes)
        return cls((k, n), group_size, payload, meta, *words, block, word_format)


def _dense_codes(data: bytes, at: int, count: int) -> np.ndarray:
    """`count` codes packed densely at byte `at` of `data`; the codes that pad the last
    block of 8 must be 0 (version 2 has one encoding of each tensor)."""
    blocks = -(-count // 8)
    codes = unpack_codes(np.frombuffer(data, np.uint8, blocks * 7, at), blocks * 8, 1)[:, 0]
    if codes[count:].any():
        raise ValueError("Q3P5 blob has non-zero padding codes")
    return codes[:count]


# --------------------------------------------------------------------------- #
# Encoder                                                                      #
# --------------------------------------------------------------------------- #


def _check_matrix(w: np.ndarray, name: str) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"{name!r}: expected a 2-D [K, N] matrix, got shape {w.shape}")
    if w.shape[0] < 1 or w.shape[1] < 1:
        raise ValueError(f"{name!r}: empty matrix of shape {w.shape}")
    if w.dtype.kind not in "fiu":
        raise ValueError(f"{name!r}: expected a real numeric dtype, got {w.dtype}")
    return w


def _group_blocks(w: np.ndarray, group_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first group, float32 [groups, group_size, N]) over whole groups, a
    cache-sized batch at a time.  A partial last group is padded by repeating row
    K-1, which leaves its max and min unchanged."""
    k, n = w.shape
    groups = -(-k // group_size)
    step = max(1, _CHUNK_ELEMENTS // (group_size * n))
    for g0 in range(0, groups, step):
        g1 = min(groups, g0 + step)
        rows = w[g0 * group_size : g1 * group_size]
        missing = (g1 - g0) * group_size - rows.shape[0]
        if missing:
            rows = np.concatenate([rows, np.repeat(rows[-1:], missing, axis=0)])
        yield g0, np.asarray(rows, dtype=np.float32).reshape(g1 - g0, group_size, n)


def _group_stats(w: np.ndarray, group_size: int, name: str) -> tuple[np.ndarray, ...]:
    """float32 [G, N] mean, max and min of every group, over its real rows only
    (padding copies row K-1, so it changes neither max nor min)."""
    groups = -(-w.shape[0] // group_size)
    total, hi, lo = (np.empty((groups, w.shape[1]), dtype=np.float32) for _ in range(3))
    for g0, x in _group_blocks(w, group_size):
        g1 = g0 + x.shape[0]
        x.sum(axis=1, out=total[g0:g1])
        x.max(axis=1, out=hi[g0:g1])  # NaN and +-Inf propagate into max or min
        x.min(axis=1, out=lo[g0:g1])
    if not (np.isfinite(hi).all() and np.isfinite(lo).all()):
        raise ValueError(f"cannot quantize {name!r}: it contains NaN or Inf (in float32)")
    if max(-lo.min(), hi.max()) > _MAX_ABS:
        raise ValueError(f"cannot quantize {name!r}: |w| exceeds 2**120")
    rows = np.full((groups, 1), group_size, dtype=np.float32)
    padding = groups * group_size - w.shape[0]
    if padding:
        total[-1] -= np.float32(padding) * np.asarray(w[-1], dtype=np.float32)
        rows[-1] -= padding
    return np.clip(total / rows, lo, hi), hi, lo  # clip: rounding must not leave [lo, hi]


def _choose_meta(
    mean: np.ndarray, hi: np.ndarray, lo: np.ndarray, words: tuple[int, str] = (1, "float32")
) -> tuple[np.ndarray, ...]:
    """The encoder's choice of per-column words and group codes.

    Offsets: each column block's grid spans its group means in four equal bins; every
    group takes the bin of its mean.  Scales: the decoded offset's largest
    distance to the group's max or min maps to _RANGE level units (the
    normalization the codebook was trained for), rounded to the nearest fifth
    of an octave below the block's largest group scale.  `words` = (column block B,
    word format): the words are shared by blocks of B adjacent columns and, for
    "float16", rounded to float16 * 2**shift (offset_base to nearest, offset_step and
    super_scale upwards, so the grid still spans the means and the largest scale fits).
    With (1, "float32") every column has its own words, as in format version 1.
    Returns (group_codes [G, N], super_scale, offset_base, offset_step).
    """
    block, word_format = words
    n = mean.shape[1]
    half = word_format == "float16"
    top = _per_block(mean.max(axis=0), block, np.max)
    bottom = _per_block(mean.min(axis=0), block, np.min)
    offset_base = (top + bottom) * np.float32(0.5)
    offset_step = (top - bottom) * np.float32(0.25)
    if half:
        offset_base = _round_float16(offset_base, up=False)
        offset_step = _round_float16(offset_step, up=True)
    offset_base = _per_column(offset_base, block, n)
    offset_step = _per_column(offset_step, block, n)
    bins = np.divide(
        mean - offset_base, offset_step, out=np.zeros_like(mean), where=offset_step > 0
    )
    j = np.clip(np.floor(bins) + 2, 0, 3).astype(np.uint8)
    offset = offset_base + offset_step * OFFSET_GRID[j]
    scale = np.maximum(hi - offset, offset - lo) / _RANGE
    super_scale = _per_block(scale.max(axis=0), block, np.max)
    if half:
        super_scale = _round_float16(super_scale, up=True)
    super_scale[super_scale < _MIN_SUPER_SCALE] = 0
    super_scale = _per_column(super_scale, block, n)
    ratio = np.divide(super_scale, scale, out=np.full_like(scale, np.inf), where=scale > 0)
    with np.errstate(divide="ignore"):  # ratio 0 (zero column) -> e = 0
        e = np.clip(np.rint(5 * np.log2(ratio)), 0, 31).astype(np.uint8)
    return e | (j << 5), super_scale, offset_base, offset_step


def _lattice_map(scale: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inv, bias) such that y = w * inv + bias (two float32 roundings) is
    (w - offset) / scale + 127.5; floor(y) - 127 is then the nearest lattice
    point.  A zero scale maps every weight to y = 127.5, the lattice origin."""
    inv = np.divide(1, scale, out=np.zeros_like(scale), where=scale > 0)
    return inv, np.float32(_LATTICE + 0.5) - offset * inv


@cache
def _nearest_code_table() -> np.ndarray:
    """uint8 [255 * 255]: the code nearest (ties to the lower code) to every
    lattice point (a, b) in [-127, 127]^2, at index (a + 127) * 255 + (b + 127)."""
    axis = np.arange(-_LATTICE, _LATTICE + 1, dtype=np.int32)
    cb = CODEBOOK.astype(np.int32)
    dx = (axis[:, None] - cb[:, 0]) ** 2  # [255, 128]
    dy = (axis[:, None] - cb[:, 1]) ** 2
    return (dx[:, None, :] + dy[None, :, :]).argmin(axis=2).astype(np.uint8).ravel()


def _encode(
    w: np.ndarray, group_size: int, inv: np.ndarray, bias: np.ndarray, needs_clip: np.ndarray
) -> np.ndarray:
    """Packed pair codes [N, bytes] of w under the lattice map (inv, bias).
    ``needs_clip[g, n]`` marks groups whose y leaves [0, 255)."""
    groups, n = inv.shape
    padding = groups * group_size - w.shape[0]
    lut = _nearest_code_table()
    blocks_per_group = group_size // 16
    payload = np.empty((n, groups * blocks_per_group, 7), dtype=np.uint8)
    for g0, x in _group_blocks(w, group_size):
        g1 = g0 + x.shape[0]
        y = np.multiply(x, inv[g0:g1, None])
        y += bias[g0:g1, None]
        if needs_clip[g0:g1].any():
            np.clip(y, 0, 2 * _LATTICE, out=y)
        if padding and g1 == groups:  # padding is encoded as the offset: the lattice origin
            y[-1, group_size - padding :] = _LATTICE + 0.5
        lattice = y.astype(np.uint16).reshape(-1, 2, n)  # truncation is floor since y >= 0
        index = np.multiply(lattice[:, 0], np.uint16(2 * _LATTICE + 1))
        index += lattice[:, 1]
        packed = _pack_rows(lut.take(index))
        payload[:, g0 * blocks_per_group : g1 * blocks_per_group] = packed.transpose(2, 0, 1)
    return payload.reshape(n, -1)


def _lattice_extent(
    hi: np.ndarray, lo: np.ndarray, inv: np.ndarray, bias: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """y of each group's min and max, with the encoder's float32 operations.  Both
    roundings are monotonic, so every y of the group lies in [y_lo, y_hi]."""
    return lo * inv + bias, hi * inv + bias


def quantize(
    w: np.ndarray, *, group_size: int = DEFAULT_GROUP_SIZE, name: str = "tensor",
    words: tuple[int, str] | None = None,
) -> Q3P5Tensor:
    """Quantize a real matrix W[K, N] (groups run along K) to Q3P5.

    `words` = (column block, word format) constrains the per-column words (see
    :class:`Q3P5Tensor`); by default `word_layout(W.shape, group_size)`, which keeps the
    serialized tensor within BUDGET_BITS per weight wherever the shape allows.

    Raises ValueError if W is not 2-D, is empty, or holds NaN or Inf (the
    message names ``name``)."""
    _check_group_size(group_size)
    w = _check_matrix(w, name)
    shape = (w.shape[0], w.shape[1])
    words = word_layout(shape, group_size) if words is None else _check_words(shape, words)
    mean, hi, lo = _group_stats(w, group_size, name)
    group_codes, super_scale, offset_base, offset_step = _choose_meta(mean, hi, lo, words)
    inv, bias = _lattice_map(*decode_meta(group_codes, super_scale, offset_base, offset_step))
    y_lo, y_hi = _lattice_extent(hi, lo, inv, bias)
    needs_clip = (y_lo < 0) | (y_hi >= 2 * _LATTICE + 1)
    payload = _encode(w, group_size, inv, bias, needs_clip)
    return Q3P5Tensor(
        shape, group_size, payload, pack_codes(group_codes),
        super_scale, offset_base, offset_step, *words,
    )


# --------------------------------------------------------------------------- #
# Decoder and error bound                                                      #
# --------------------------------------------------------------------------- #


def pair_levels(codes: np.ndarray, table: np.ndarray, k: int, dtype=np.int32) -> np.ndarray:
    """The levels [k, N] of pair codes [P, N] through a (128, 2) table (``CODEBOOK``, or
    ``LEGACY_LEVELS`` for the pair layout): row 2i is ``table[code, 0]``, row 2i + 1
    ``table[code, 1]``; rows past k (padding) are dropped. The one code-to-level decoding
    rule, used by the decoders, the reference semantics and the verification passes."""
    levels = table.astype(dtype)[np.asarray(codes).astype(np.intp)]  # [P, N, 2]
    return levels.transpose(0, 2, 1).reshape(-1, levels.shape[1])[:k]


def dequantize(q: Q3P5Tensor) -> np.ndarray:
    """float32 [K, N]: scale * CODEBOOK[code, k % 2] + offset, elementwise in float32."""
    k, n = q.shape
    codes = unpack_codes(q.payload, q.num_groups * q.group_size // 2, n)
    levels = pair_levels(codes, CODEBOOK, q.num_groups * q.group_size, np.float32)
    levels = levels.reshape(q.num_groups, q.group_size, n)
    scale, offset = q._meta()
    out = scale[:, None, :] * levels + offset[:, None, :]
    return out.reshape(-1, n)[:k]


def dequantize_columns(q: Q3P5Tensor, columns: np.ndarray) -> np.ndarray:
    """float32 [K, len(columns)]: columns `columns` (0 <= c < N) of ``dequantize(q)``, bit
    for bit (every column decodes from its own stored row, words and group codes alone),
    without decoding the others: what a row gather from a transposed table reads."""
    columns = np.asarray(columns, dtype=np.intp).reshape(-1)
    if columns.size == 0:
        return np.zeros((q.shape[0], 0), np.float32)
    part = Q3P5Tensor((q.shape[0], columns.size), q.group_size, q.payload[columns],
                      q.meta[columns], q.super_scale[columns], q.offset_base[columns],
                      q.offset_step[columns])
    return dequantize(part)


@cache
def _radius_error_table() -> np.ndarray:
    """float32 [128]: entry r is the largest per-coordinate distance between a
    lattice point with max(|a|, |b|) <= r and the code the encoder gives it."""
    axis = np.arange(-_LATTICE, _LATTICE + 1)
    a, b = np.meshgrid(axis, axis, indexing="ij")
    levels = CODEBOOK.astype(np.int64)[_nearest_code_table()].reshape(a.shape + (2,))
    distance = np.maximum(np.abs(a - levels[..., 0]), np.abs(b - levels[..., 1]))
    ring = np.maximum(np.abs(a), np.abs(b))
    worst = np.zeros(_LATTICE + 1, dtype=np.int64)
    np.maximum.at(worst, ring.ravel(), distance.ravel())
    return np.maximum.accumulate(worst).astype(np.float32)


def error_bound(w: np.ndarray, q: Q3P5Tensor) -> np.ndarray:
    """float32 [G, N]: a bound on |w - dequantize(q)| over every element of each group,
    valid when ``q == quantize(w, group_size=q.group_size)``.

    The encoder maps a weight to y = (w - offset) / scale + 127.5 and picks the
    code of lattice point clip(floor(y), 0, 254) - 127.  Within a group every
    lattice point has Chebyshev radius <= r (from the group's min and max), so
    the chosen level is within _radius_error_table()[r] of it, and the lattice
    point is within 0.5 of (w - offset) / scale plus how far the group leaves
    the lattice (clipping).  The result is scaled back and padded generously
    for float32 rounding (2**-10 level units, 2**-20 relative, 2**-126 absolute)."""
    w = _check_matrix(w, "w")
    if w.shape != q.shape:
        raise ValueError(f"w has shape {w.shape}, tensor has {q.shape}")
    _, hi, lo = _group_stats(w, q.group_size, "w")
    scale, offset = q._meta()
    y_lo, y_hi = _lattice_extent(hi, lo, *_lattice_map(scale, offset))
    top = 2 * _LATTICE
    radius = np.maximum(
        np.abs(np.clip(np.floor(y_lo), 0, top) - _LATTICE),
        np.abs(np.clip(np.floor(y_hi), 0, top) - _LATTICE),
    ).astype(np.intp)
    outside = np.maximum(np.maximum(-y_lo, y_hi - (top + 1)), 0)
    level_error = _radius_error_table()[radius] + np.float32(0.5) + outside + np.float32(2.0**-10)
    magnitude = np.maximum(np.abs(hi), np.abs(lo))
    rounding = np.float32(2.0**-20) * (magnitude + np.abs(offset) + scale * np.float32(_LATTICE))
    rounding += np.float32(2.0**-126)  # subnormal inputs round in absolute, not relative, terms
    # A zero scale (a column below _MIN_SUPER_SCALE) decodes every weight to its offset.
    spread = np.maximum(hi - offset, offset - lo)
    return np.where(scale > 0, scale * level_error, spread) + rounding
