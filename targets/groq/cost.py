"""The Groq target's per-op cost formulas, in one place.

Used by `schedule/` (macro durations and ALU cycles), `report.py` (the single-chip lower
bound: per-layer bound, VXM throughput) and `plan.py` (the multi-chip planner's per-matmul
and per-vector-op cycles), so that a plan's cycles per token are built from the same
per-layer costs as the single-chip bound. Every rate and latency comes from the machine
file (docs/groq.md, "Lower bound"; docs/groq-multichip.md, "Cycles").

Per Q3P5 matmul `[K, N]`, group `g`, `G = ceil(K / g)` groups, `tiles = ceil(N / lanes)`
column tiles, over `M` activation rows (`matmul_work`):

    passes     = M * G * tiles                 masked MXM passes (one group x 320 columns)
    installs   = tiles * G * g / 16            16-row install blocks (= VXM unpacks, none
                                               with int8 levels)
    bytes      = the weight layout's bytes (`packed_bytes`: packed Q3P5 as format.md
                 section 5 without header/CRC, or decoded scales, or int8 levels)
    rescale    = per tile and rescale macro of ng groups (`rescale_spans`): ceil((5 M ng +
                 d ng) / A) VXM ALU cycles on one queue (A = alus_per_lane / vxm_queues
                 ALUs per lane; d = 9 decode ops per group, 0 with decoded scales); with
                 integer scales ceil(M (2 ng + 3 nb + 2 last) / A), nb chunks per macro
    group sums = ceil(M * G * g / (lanes * A))

and its cost (`matmul_cost`), with `late` = installs that cannot be prefetched into the
MXM weight buffers before the activations are ready (all of them with `prefetch=False`):

    mxm      = ceil(passes / planes)
    install  = ceil(late / planes)
    mem      = ceil(ceil(bytes / (slices * reads_per_cycle * vector_bytes)) * late / installs)
    vxm      = ceil((late + rescale + group sums - last) / vxm_queues)   (unpacks + ALU work
               over the VXM queues; `last` = the rescale of one tile's last K chunk, which
               is in the latency; no unpacks with int8 levels)
    latency  = mem_read_latency + 2 hops (VXM <-> MXM) + mxm_latency + mem_write_latency
               + vxm_latency + last
    bound    = max(mxm, install, mem) + latency           (the issue's per-layer bound)
    cycles   = max(mxm, install, mem, vxm) + latency      (with the VXM term)
"""

from __future__ import annotations

import math
from typing import Any

from q35c.targets.groq.machine import Machine

RESCALE_CHUNKS = 8
"""K chunks per rescale macro (schedule/scheduler.py) with packed levels: one macro per tile
and up to this many chunks. 8 rather than 16: for K > 8 * 320 the first macro of a tile runs
while its last chunks are still being installed and multiplied, so the tail after the last
pass is shorter (measured: GEMV 4096x4096 3204 -> 3178 cycles, GEMM 8x4096x4096 9250 ->
8966); smaller values lose more to each macro's stream travel and latency than they gain:
with packed levels the VXM's queues are the limit (unpacks, and the rescale's decode)."""

RESCALE_CHUNKS_INT8 = 4
"""K chunks per rescale macro with int8 levels (no unpacks: the VXM has room for more
macros), and `RESCALE_TAIL_INT8` chunks in the last macro of a tile: the chain of a tile's
rescales keeps closer to its partials as they land, so less of it follows the last pass
(GEMV 4096x4096 f32/int8, --no-simulate, with this branch's other changes: 8 chunks per
macro 1416 cycles; 4 and the last chunk alone 1372; 4 and the last 3 chunks 1289). With
the wave scheduling, 4 and the last 5 (13 chunks: spans 0-4, 4-8, 8-13) rather than the last
3 (0-4, 4-8, 8-10, 10-13): one macro less per tile on the VXM queues, whose chains of
rescales the last wave waits for (GEMV 4096 f32/int8 1216 -> 1162 cycles; measured tail
sizes 2 to 7 and spans of 3 to 10 chunks: 1162 to 1376; GEMV 2048x8192 1172 -> 1167,
4096x11008 2932 -> 2757, GEMM 8x4096 5618 -> 5546)."""

RESCALE_TAIL_INT8 = 5

RESCALE_LAST_INT8 = 1
"""With int8 levels and one activation row, the last rescale macro of a tile of the
matmul's last wave takes only this many chunks: it is the one that follows the last pass
(GEMV 4096x4096 f32/int8: with the last 5 chunks 1150 cycles, the last 1 1142, the last 2
1147)."""

RESCALE_LAST_INT = (1, 2)
"""Integer scales (`Machine.int_scales`), one activation row, more than
`RESCALE_CHUNKS_INT8` + 3 K chunks: the chunks of the last rescale macros of a tile of the
matmul's last wave (after spans of `RESCALE_CHUNKS_INT8`): a rescale is 2 ALU ops per group
there, so its macros are mostly stream travel and latency, and smaller ones follow the last
passes' partials more closely (GEMV 4096x4096 scales=int, `--no-simulate`: the last chunk
alone 1053 cycles; (1, 2) 1038, (2, 2) 1040, (2, 1) 1041, (3, 1) 1047, (2, 2, 1) 1041,
(1, 1, 1) 1047, (1, 1, 2) 1042, (3, 3) 1046; with 4 chunks, decode4096's projections,
(2, 1) cost 31 cycles)."""

RESCALE_RAMP_INT8 = (1, 2, 3)
"""With int8 levels and several activation rows (the VXM is the limit: 5 ALU ops per row,
group and column), the chunks of a tile's first rescale macros, before
`RESCALE_CHUNKS_INT8` at a time: the VXM's queues start as soon as a tile's first chunk is
multiplied rather than after 4 (GEMM 8x4096x4096 f32/int8 with the other changes of the
same commit: 4 at a time and the last 5 5151 cycles, 1, 2, 3 then 4 at a time 5114)."""

DATA_SLICES = 4
"""MEM slices an activation/scratch buffer is spread over (schedule/placement.py places data
buffers in groups of up to 4 slices next to the VXM)."""

INSTALL_BLOCK_ROWS = 16
"""K rows per install block: 8 pair codes = 7 packed bytes per lane -> 16 int8 rows."""

BLOCK_BYTES = 7
"""Packed bytes per lane of one install block (8 pair codes, docs/format.md), and of one
block of 8 group codes."""

COLUMN_WORDS = 3
"""float32 words per column: super scale, offset base, offset step (docs/format.md)."""

DECODED_WORDS = 2
"""float32 words per group and column with decoded scales: the scale and the offset."""

INT_WORDS = 2
"""float32 words per column with integer scales: the base and the offset."""

INT_GROUP_OPS = 2
"""Integer rescale contract: VXM ALU ops per row, group and column (int32 multiply by the
group's integer scale, add)."""

INT_BLOCK_OPS = 3
"""Integer rescale contract: VXM ALU ops per row, int32 block (K chunk) and column (cvt,
multiply by the column base, add to the running float32 sum)."""

INT_END_OPS = 2
"""Integer rescale contract: VXM ALU ops per row and column after the last block (the
column offset times the row's activation sum, add); the row scale is the float
contract's too and, as there, not counted."""

DECODE_OPS = 9
"""VXM ALU ops per group and column that decode its scale and offset from the packed group
code and the column words (code extraction, the two table lookups, 2 mul, 1 add ...);
none with decoded scales, which the rescale reads as float32 words."""


# -- machine rates ---------------------------------------------------------------------------

def vxm_queues(m: Machine) -> int:
    return int(m.param("vxm_queues"))


def alus_per_queue(m: Machine) -> int:
    """ALUs per lane that one VXM queue drives."""
    return max(1, m.vxm_alus_per_lane // vxm_queues(m))


def mem_bytes_per_cycle(m: Machine) -> int:
    """MEM read bandwidth of one chip: every slice reads one vector per cycle."""
    reads = int(m.raw.get("mem", {}).get("reads_per_cycle_per_slice", 1))
    return m.mem_slices * reads * m.vector_bytes


def vxm_mxm_hops(m: Machine) -> int:
    """Stream hops between the VXM (where activations are made) and an MXM plane."""
    return abs(m.position("VXM") - m.position("MXM_W"))


def packed_bytes(k: int, n: int, group: int, decoded: bool = False,
                 levels: bool = False, int_scales: bool = False) -> int:
    """Exact on-chip bytes of a Q3P5 [K, n] weight (docs/format.md section 5): per column the
    pair codes (G*g/16 blocks of 7 bytes), the group codes (ceil(G/8) blocks of 7 bytes) and
    three float32 words; the file header and CRC are not loaded. `decoded`
    (`Machine.decoded_scales`): per column the pair codes and G float32 scales and G float32
    offsets instead of the group codes and words. `levels` (`Machine.int8_levels`): one
    int8 level per row of every group instead of the pair codes. `int_scales`
    (`Machine.int_scales`): per column one byte per group (its integer scale) and two
    float32 words (base, offset) instead of the group codes and three words."""
    groups = -(-k // group)
    pairs = groups * group if levels else groups * group // INSTALL_BLOCK_ROWS * BLOCK_BYTES
    if int_scales:
        return n * (pairs + groups + 4 * INT_WORDS)
    if decoded:
        return n * (pairs + 4 * DECODED_WORDS * groups)
    return n * (pairs + -(-groups // 8) * BLOCK_BYTES + 4 * COLUMN_WORDS)


def chunk_rows(lanes: int, group: int) -> int:
    """K rows per MXM weight buffer fill: whole groups, at most `lanes` rows."""
    return lanes // group * group


# -- VXM / SXM macros ------------------------------------------------------------------------

def macro_alu_cycles(m: Machine, elements: int, passes: int) -> int:
    """Cycles one VXM queue's ALUs need for `elements * passes` ALU operations."""
    return -(-elements * passes // (m.lanes * alus_per_queue(m)))


def macro_cycles(m: Machine, kind: str, elements: int, passes: int, io: int) -> int:
    """Duration of a macro without its stream travel (the scheduler adds that): SXM
    `io + sxm_latency`; VXM `max(io, ALU cycles) + latency` (transcendental latency for
    kind "transcendental"). `io`: MEM vectors per slice of its largest buffer."""
    if kind == "sxm":
        return io + int(m.param("sxm_latency"))
    lat = int(m.param("vxm_transcendental_latency" if kind == "transcendental"
                      else "vxm_latency"))
    return max(io, macro_alu_cycles(m, elements, passes)) + lat


def decode_ops(m: Machine) -> int:
    """VXM ALU ops per group and column spent decoding scale and offset (`DECODE_OPS`)."""
    return 0 if m.decoded_scales else DECODE_OPS


def rescale_elements(m: Machine, rows: int, groups: int, blocks: int = 1,
                     last: bool = False) -> int:
    """ALU operations of one rescale macro over `groups` groups of one 320-column tile: per
    row and group cvt, 2 mul, 2 add; per group code extraction and scale/offset decode
    (`decode_ops`). Integer scales (`Machine.int_scales`): per row `INT_GROUP_OPS` per group,
    `INT_BLOCK_OPS` per int32 block (`blocks`: K chunks of the macro) and, for the tile's
    `last` macro, `INT_END_OPS`."""
    if m.int_scales:
        return rows * (INT_GROUP_OPS * groups + INT_BLOCK_OPS * blocks
                       + (INT_END_OPS if last else 0)) * m.lanes
    return (rows * groups * 5 + groups * decode_ops(m)) * m.lanes


# -- the int8 matmul -------------------------------------------------------------------------

def rescale_chunk_spans(m: Machine, chunks: int, last_wave: bool = True, rows: int = 1
                        ) -> list[tuple[int, int]]:
    """The K chunks [c0, c1) of each rescale macro of one tile. Packed levels:
    `RESCALE_CHUNKS` chunks at a time. Int8 levels, one activation row: `RESCALE_CHUNKS_INT8`
    at a time and the last `RESCALE_TAIL_INT8` chunks in a macro of their own, or, in the
    matmul's last wave (`last_wave`), the last chunk alone; several rows: the first macros
    take `RESCALE_RAMP_INT8` chunks, then `RESCALE_CHUNKS_INT8` at a time."""
    if not m.int8_levels:
        return [(c0, min(chunks, c0 + RESCALE_CHUNKS)) for c0 in range(0, chunks, RESCALE_CHUNKS)]
    if rows > 1:
        spans: list[tuple[int, int]] = []
        c0 = 0
        while c0 < chunks:
            n = RESCALE_RAMP_INT8[len(spans)] if len(spans) < len(RESCALE_RAMP_INT8) else \
                RESCALE_CHUNKS_INT8
            spans.append((c0, min(chunks, c0 + n)))
            c0 += n
        return spans
    if m.int_scales and last_wave and chunks > RESCALE_CHUNKS_INT8 + sum(RESCALE_LAST_INT):
        rest = chunks - sum(RESCALE_LAST_INT)
        spans = [(c0, min(rest, c0 + RESCALE_CHUNKS_INT8))
                 for c0 in range(0, rest, RESCALE_CHUNKS_INT8)]
        for n in RESCALE_LAST_INT:
            spans.append((rest, rest + n))
            rest += n
        return spans
    tail = RESCALE_LAST_INT8 if last_wave else RESCALE_TAIL_INT8
    rest = max(0, chunks - tail)
    spans = [(c0, min(rest, c0 + RESCALE_CHUNKS_INT8))
             for c0 in range(0, rest, RESCALE_CHUNKS_INT8)]
    return spans + [(rest, chunks)]


def tile_waves(m: Machine, tiles: int, chunks: int) -> tuple[int, int]:
    """(whole, last): the tiles [0, whole) go in whole waves of one per plane, the tiles
    past them are split by K over the planes (`schedule/placement.py`) and go before the
    last whole wave (`schedule/scheduler.py`); the tiles [last, whole) are the last wave (all
    tiles when there is no whole wave)."""
    planes = m.mxm_planes
    whole = tiles - tiles % planes if chunks > 1 else tiles
    last = whole - planes if whole >= planes else 0
    return whole, last


def tile_chunk_spans(m: Machine, chunks: int, tile: int, tiles: int, rows: int
                     ) -> list[tuple[int, int]]:
    """`rescale_chunk_spans` of column tile `tile` of `tiles` over `rows` activation rows:
    whether it is in the last wave (`tile_waves`; a tile split by K is in it only when there
    is no whole wave)."""
    whole, last = tile_waves(m, tiles, chunks)
    return rescale_chunk_spans(m, chunks, last <= tile < whole or whole == 0, rows)


def rescale_spans(m: Machine, groups: int, groups_per_chunk: int, tile: int, tiles: int,
                  rows: int) -> list[tuple[int, int]]:
    """The groups [g0, g1) of each rescale macro of column tile `tile` of `tiles`
    (`tile_chunk_spans` of its K chunks of `groups_per_chunk` groups each; the last chunk
    may have fewer)."""
    chunks = -(-groups // groups_per_chunk)
    return [(c0 * groups_per_chunk, min(groups, c1 * groups_per_chunk))
            for c0, c1 in tile_chunk_spans(m, chunks, tile, tiles, rows)]


def matmul_work(m: Machine, k: int, n: int, group: int, rows: int) -> dict[str, int]:
    """The work of one Q3P5 matmul `[K, n]` over `rows` activation rows, exactly as
    the scheduler issues it (a test checks the counts against scheduled programs)."""
    L = m.lanes
    G = -(-k // group)
    tiles = -(-n // L)
    chunk = chunk_rows(L, group)
    gpc = chunk // group
    nch = -(-G * group // chunk)
    per_tile = sum(min(G * group, (c + 1) * chunk) // INSTALL_BLOCK_ROWS
                   - c * chunk // INSTALL_BLOCK_ROWS for c in range(nch))
    rescale = 0
    for t in range(tiles):
        for g0, g1 in rescale_spans(m, G, gpc, t, tiles, rows):  # one macro per span of chunks
            rescale += macro_alu_cycles(m, rescale_elements(
                m, rows, g1 - g0, -(-(g1 - g0) // gpc), g1 == G), 1)
    last_groups = G - (nch - 1) * gpc
    return {
        "groups": G, "tiles": tiles, "rows": rows,
        "mxm_passes": rows * G * tiles,
        "installs": tiles * per_tile,
        "packed_bytes": packed_bytes(k, n, group, m.decoded_scales, m.int8_levels,
                                     m.int_scales),
        "rescale_alu_cycles": rescale,
        "group_sums_alu_cycles": macro_alu_cycles(m, rows * G * group, 1),
        "last_rescale_groups": last_groups,
    }


def matmul_cost(m: Machine, work: dict[str, int], prefetch: bool = True) -> dict[str, int]:
    """Cycle terms of one matmul layer from its activations being complete to its result
    being complete (see the module docstring). `prefetch`: installs up to `planes *
    mxm_weight_buffers * (rows / 16)` blocks are done before the input is ready (single
    chip, weights do not depend on activations); the planner, which adds layer after layer,
    passes False (the earlier layers keep the install port busy themselves)."""
    planes = m.mxm_planes
    installs = work["installs"]
    pre = planes * int(m.param("mxm_weight_buffers")) * (
        m.mxm_rows // int(m.param("mxm_install_rows_per_cycle"))) if prefetch else 0
    late = max(0, installs - pre)
    mxm = -(-work["mxm_passes"] // planes)
    mem_all = -(-work["packed_bytes"] // mem_bytes_per_cycle(m))
    mem = -(-mem_all * late // max(1, installs))
    install = -(-late // planes)
    groups = work["last_rescale_groups"]
    last = -(-rescale_elements(m, work["rows"], groups, 1, True) // (
        m.lanes * alus_per_queue(m)))
    unpacks = 0 if m.int8_levels else late  # int8 levels go from MEM to the MXM
    vxm = max(0, -(-(unpacks + work["rescale_alu_cycles"] + work["group_sums_alu_cycles"]
                     - last) // vxm_queues(m)))
    hops = vxm_mxm_hops(m)
    latency = (int(m.param("mem_read_latency")) + 2 * hops + int(m.param("mxm_latency"))
               + int(m.param("mem_write_latency")) + int(m.param("vxm_latency")) + last)
    return {"mxm": mxm, "install": install, "mem": mem, "vxm": vxm, "latency": latency,
            "install_all": -(-installs // planes), "mem_all": mem_all,
            "bound": max(mxm, install, mem) + latency,
            "cycles": max(mxm, install, mem, vxm) + latency}


# -- graph ops -------------------------------------------------------------------------------

ONNX_NODE_WORK: dict[str, tuple[str, int]] = {
    "Cast": ("VXM", 1), "Where": ("VXM", 1), "IsNaN": ("VXM", 1), "IsInf": ("VXM", 1),
    "And": ("VXM", 1), "Or": ("VXM", 1), "Xor": ("VXM", 1), "Not": ("VXM", 1),
    "Equal": ("VXM", 1), "Less": ("VXM", 1), "LessOrEqual": ("VXM", 1),
    "Greater": ("VXM", 1), "GreaterOrEqual": ("VXM", 1),
    "Add": ("VXM", 1), "Sub": ("VXM", 1),
    "GatherND": ("SXM", 1), "GatherElements": ("SXM", 1), "Expand": ("SXM", 1),
}
"""The generic ONNX ops (`q35nn.onnx_node`, by op type) the Groq target runs, each as one
macro with the interpreter's semantics (the onnx reference implementation): the
element-wise logic, comparisons, selects and casts of the exporters' mask and NaN guards
(VXM, one ALU pass per element) and their index-driven data movement (SXM)."""


def op_work(op: Any, shape: Any) -> tuple[str, str, int, int]:
    """(unit "VXM"/"SXM", kind "vxm"/"sxm"/"transcendental", elements, ALU passes per
    element) of a non-matmul graph op; `shape(value)` gives a value's shape. `elements` is
    the largest operand/result; float matmuls (attention scores, batched matmul) count
    `M * N * K` elements of 2 passes, attention `2 * |q| * keys` of 4."""
    from xdsl.dialects import math as xmath, tensor
    from xdsl.dialects.linalg import ops as linalg

    from q35c.dialects import q35nn, quant3p5

    sxm = (linalg.TransposeOp, linalg.BroadcastOp, tensor.ConcatOp, tensor.ExtractSliceOp,
           q35nn.GatherOp)
    transcendental = (xmath.ExpOp, xmath.LogOp, xmath.SqrtOp, xmath.RsqrtOp, xmath.TanhOp,
                      xmath.SinOp, xmath.CosOp, xmath.PowFOp, xmath.ErfOp)
    passes_of = {
        quant3p5.QuantizeActivationsOp: 6,  # |x|, max-reduce, divide, rint, clip, convert
        q35nn.SoftmaxOp: 8, q35nn.RMSNormOp: 6, q35nn.LayerNormOp: 8, q35nn.SiluOp: 6,
        q35nn.GeluOp: 10, q35nn.SwigluOp: 7, linalg.ReduceOp: 2, linalg.FillOp: 1,
    }
    elements = max([math.prod(shape(v)) for v in list(op.operands) + list(op.results)] + [1])
    unit = "SXM" if isinstance(op, sxm) else "VXM"
    passes = passes_of.get(type(op), 1)
    if isinstance(op, q35nn.OnnxNodeOp):
        unit, passes = ONNX_NODE_WORK.get(op.op_type.data, ("VXM", 1))
    kind = "sxm" if unit == "SXM" else "vxm"
    if isinstance(op, transcendental):
        kind, passes = "transcendental", 4
    if isinstance(op, (linalg.MatmulOp, q35nn.BatchMatmulOp)):
        a = shape(op.operands[0])
        elements, passes, kind = math.prod(shape(op.results[0])) * a[-1], 2, "vxm"
    if isinstance(op, q35nn.AttentionOp):
        qs, ks = shape(op.operands[0]), shape(op.operands[1])
        elements = 2 * math.prod(qs) * ks[-2]
        passes, kind = 4, "transcendental"
    return unit, kind, int(elements), passes
