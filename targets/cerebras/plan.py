"""The mapping of one batch-1 Q3P5 GEMV onto a PE rectangle, and what each PE holds.

A [K, N] weight matrix is cut into `width` x `height` tiles of `k_tile` x `n_tile`: PE
(x, y) holds rows [x*k_tile, (x+1)*k_tile) and columns [y*n_tile, (y+1)*n_tile), packed.
Each PE computes its partial y over its rows; the partials of a PE row are added west to
east by a chain (the SDK's checkerboard: PE x sends on `CHAIN_COLORS[x % 2]`, so every
PE receives on one color and sends on the other), and the east-most PE holds y.
docs/cerebras.md draws it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.quant import Q3P5Tensor, unpack_codes
from q35c.semantics import InterpreterError, dequantize_f16

CHAIN_COLORS = (0, 1)
"""The reduction chain's two colors (routable, reserved by no runtime on WSE-2/WSE-3)."""
REDUCE_TASK_ID = 8
"""The local task that runs the chain step once the PE's partial is ready (an ID no color
of the program uses; local and data task IDs share one space on WSE-2)."""
INPUT_QUEUE, OUTPUT_QUEUE = 2, 3
"""Fabric queues of the chain's DSDs (memcpy uses queues 0 and 1 on WSE-3)."""
WORDS_PER_GROUP = 7
"""A group of 32 weights is 16 pair codes of 7 bits: 112 bits, exactly 7 u16 words."""
DEFAULT_K_TILE, DEFAULT_N_TILE = 512, 64
DECODED_K_TILE, DECODED_N_TILE = 64, 128
"""Default tile of a decoded or f16 plan: its f16 levels or weights (16 KB) and the rest
fit a PE's 48 KB."""
WEIGHT_MODES = ("packed", "decoded", "f16")
TABLES = ("cb0", "cb1", "stepm", "gridm")
"""The decoding tables every PE of a decoded plan holds: CODEBOOK's two level columns, and
SCALE_STEPS and OFFSET_GRID indexed by a group's 7-bit meta code b (stepm[b] =
SCALE_STEPS[b & 31], gridm[b] = OFFSET_GRID[b >> 5])."""
PACKED_TABLES = ("cb01", "stepm", "gridm")
"""A packed plan's: CODEBOOK as f16 pairs (code c's levels at 2c, 2c + 1, so one 32-bit
load reads both), stepm and gridm."""


class Grid:
    """A plan cut into tiles along x and y: `spans()` gives (extent, tile) of each; the
    rectangle is `width` x `height` PEs."""

    def spans(self) -> tuple[tuple[int, int], tuple[int, int]]:
        raise NotImplementedError

    @property
    def width(self) -> int:
        (extent, tile), _ = self.spans()
        return -(-extent // tile)

    @property
    def height(self) -> int:
        _, (extent, tile) = self.spans()
        return -(-extent // tile)


@dataclass(frozen=True)
class GemvPlan(Grid):
    """The tiling of one [K, N] GEMV (group size 32) over a width x height rectangle."""

    k: int
    n: int
    group: int
    k_tile: int
    n_tile: int
    weights: str = "packed"
    """`packed`: the tile stays packed and every `compute` decodes it. `decoded`: the host
    transfers the packed tile, a load-time `decode` turns it into f16 levels and f32 group
    scales and offsets kept in PE memory. `f16`: the host decodes the tile to float16
    weights (`q35c.semantics.dequantize_f16`) and transfers those; `compute` is one
    `@fmachs` per weight row."""

    @property
    def decoded(self) -> bool:
        return self.weights == "decoded"

    @property
    def f16(self) -> bool:
        return self.weights == "f16"

    def weight_arrays(self) -> tuple[str, ...]:
        """The per-PE weight arrays the host copies in (`pe_data`'s keys)."""
        return ("w16",) if self.f16 else ("payload", "meta", "ss", "ob", "os")

    def tables(self) -> tuple[str, ...]:
        """The decoding tables the host copies into every PE."""
        return () if self.f16 else TABLES if self.decoded else PACKED_TABLES

    @classmethod
    def choose(cls, k: int, n: int, group: int, k_tile: int = 0, n_tile: int = 0,
               weights: str = "packed") -> GemvPlan:
        """The plan for given tile sizes (0: the default, capped by the matrix)."""
        if group != 32:
            raise Q35cError(f"cerebras target: Q3P5 group size {group} (only 32 maps onto "
                            "7 u16 words per group)")
        pair = 2 * group  # the group loop is unrolled by two (one meta word per two groups)
        if weights not in WEIGHT_MODES:
            raise Q35cError(f"cerebras target: weights={weights} (one of "
                            f"{', '.join(WEIGHT_MODES)})")
        kd, nd = (DEFAULT_K_TILE, DEFAULT_N_TILE) if weights == "packed" else (
            DECODED_K_TILE, DECODED_N_TILE)
        k_tile = k_tile or min(kd, -(-k // pair) * pair)
        n_tile = n_tile or min(nd, n)
        if k_tile % pair:
            raise Q35cError(f"cerebras target: k_tile {k_tile} must be a multiple of {pair}")
        return cls(k, n, group, k_tile, n_tile, weights)

    def spans(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return (self.k, self.k_tile), (self.n, self.n_tile)

    @property
    def groups(self) -> int:
        """Groups per PE (along K)."""
        return self.k_tile // self.group

    def role(self, x: int) -> str:
        """The program variant of PE column x (its chain position and colors)."""
        if self.width == 1:
            return "single"
        if x == 0:
            return "first"
        parity = "odd" if x % 2 else "even"
        return f"{'last' if x == self.width - 1 else 'mid'}_{parity}"

    def roles(self) -> list[str]:
        return sorted({self.role(x) for x in range(self.width)})


def role_colors(role: str) -> tuple[int | None, int | None]:
    """(input color, output color) of a program variant."""
    a, b = CHAIN_COLORS
    return {"single": (None, None), "first": (None, a), "mid_odd": (a, b),
            "mid_even": (b, a), "last_odd": (a, None), "last_even": (b, None)}[role]


def pe_data(plan: GemvPlan, w: Q3P5Tensor, x: int, y: int) -> dict[str, np.ndarray]:
    """The packed weight tile of PE (x, y), as the host copies it in: payload u16
    [groups*7 + 1, n_tile] (group g's 7 words of every column, then a zero row the
    unpacking may read past the last group), meta u16 [groups/2, n_tile] (the 7-bit group
    codes of groups 2i and 2i+1 in the low and high byte) and the columns' float32 words.
    Padding rows and columns are zero."""
    k, n = w.shape
    gs, nt = plan.group, plan.n_tile
    cols = slice(y * nt, min((y + 1) * nt, n))
    width = cols.stop - cols.start
    g0 = x * plan.groups
    payload = np.zeros((plan.groups * WORDS_PER_GROUP + 1, nt), np.uint16)
    meta = np.zeros((plan.groups // 2, nt), np.uint16)
    per_group = gs // 16 * 7  # payload bytes of one group of one column
    stored = w.num_groups
    gcodes = unpack_codes(w.meta, stored, n)  # [G, N]
    for g in range(plan.groups):
        if g0 + g >= stored:
            break
        block = w.payload[cols, (g0 + g) * per_group:(g0 + g + 1) * per_group]  # [cols, 14]
        words = block.reshape(width, WORDS_PER_GROUP, 2).astype(np.uint16)
        payload[g * WORDS_PER_GROUP:(g + 1) * WORDS_PER_GROUP, :width] = (
            words[..., 0] | (words[..., 1] << 8)).T
        meta[g // 2, :width] |= gcodes[g0 + g, cols].astype(np.uint16) << (8 * (g % 2))
    words = {name: np.zeros(nt, np.float32) for name in ("ss", "ob", "os")}
    for name, src in (("ss", w.super_scale), ("ob", w.offset_base), ("os", w.offset_step)):
        words[name][:width] = src[cols]
    return {"payload": payload.reshape(-1), "meta": meta.reshape(-1), **words}


def tiles_data(plan: GemvPlan, w: Q3P5Tensor):
    """((x, y), {array: values}) of every PE of the plan, as the host copies them in: the
    packed tile (`pe_data`), or with f16 weights the PE's rows and columns of
    `dequantize_f16` (row k at k * n_tile, zero padding)."""
    if not plan.f16:
        for x in range(plan.width):
            for y in range(plan.height):
                yield (x, y), pe_data(plan, w, x, y)
        return
    try:
        full = dequantize_f16(w, plan.k_tile)
    except InterpreterError as e:
        raise Q35cError(f"cerebras target: {e}") from None
    kt, nt = plan.k_tile, plan.n_tile
    for x in range(plan.width):
        for y in range(plan.height):
            tile = np.zeros((kt, nt), np.float16)
            part = full[x * kt:(x + 1) * kt, y * nt:(y + 1) * nt]
            tile[:, :part.shape[1]] = part
            yield (x, y), {"w16": tile.reshape(-1)}


def x_slice(plan: GemvPlan, xv: np.ndarray, x: int) -> np.ndarray:
    """PE column x's rows of the input vector (float32, zero-padded to k_tile)."""
    out = np.zeros(plan.k_tile, np.float32)
    part = np.asarray(xv, np.float32).reshape(-1)[x * plan.k_tile:(x + 1) * plan.k_tile]
    out[:len(part)] = part
    return out
