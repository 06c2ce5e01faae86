"""MEM placement: which slices and addresses every buffer of one chip takes.

- Weights: each matmul is cut into column tiles of `lanes` columns; a tile's packed pair
  codes go to a group of `BLOCK_BYTES` (7) slices, so that one install block (7 bytes per
  lane) is read in one cycle. Groups run from the outer edge inwards (weights are read
  ahead of time), preferring the hemisphere of the tile's MXM plane; weights grow up from
  address 0. A tile's group codes and column words are data buffers next to the VXM (the
  rescale reads them).
- Data (inputs, constants, temporaries, matmul scratch): `DATA_SLICES` (4) slices, 8 for
  int32/float32 planes, nearest the VXM of their hemisphere while those have fresh memory,
  else windows of a round robin over the inner 16 slices; addresses from the top down,
  first fit against buffers whose op-order live ranges intersect. If that overflows (small
  SRAMs, e.g. the multi-chip tests' 16- and 64-vector slices) the round robin alone, which
  packs tighter.
- Memory reuse: a buffer that reuses memory of one earlier in op order may be written only
  after that one's last access (`Placement.reuses`; the scheduler waits for it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.quant import group_scales, integer_levels
from q35c.dialects import q35nn
from q35c.targets.groq.cost import (
    BLOCK_BYTES,
    COLUMN_WORDS,
    DATA_SLICES,
    DECODED_WORDS,
    INSTALL_BLOCK_ROWS,
    INT_WORDS,
    packed_bytes,
    rescale_spans,
)
from q35c.targets.groq.lower import Buf, Graph, MacroNode, MatmulNode, encode
from q35c.targets.groq.machine import Machine

WEIGHT_GROUPS_NEAR = 4
"""Weight slice groups per hemisphere a tile prefers: the outermost ones, on its plane's
side (nearest its MXM plane)."""

INNER_GROUPS = 4
"""Groups of `DATA_SLICES` slices next to the VXM, per hemisphere, that data buffers take."""

OUT_CHUNKS = 6
"""With integer scales, a one-row matmul's activations of more than this many K chunks go
two data slice groups out (`Placer._place_data`): GEMV 2048x8192 (7 chunks) 1133 -> 1053
cycles, GEMV 4096x4096 (13) 1089 -> 1053; SmolLM2's down_proj (5 chunks) lost by it (the
decode step of the 2-layer cut 7235 -> 7267)."""

HOLD_OUT = 8
"""Addresses per slice above which a weight tile's rescale operands are placed one data
slice group out of the activations (see `_place_data`)."""

GROUP_CODE_BLOCK = 8
"""Group codes per 7-byte block of the packed group codes (docs/format.md)."""


@dataclass
class WeightTile:
    """`lanes` columns [cols[0], cols[1]) of a matmul's weight, on MXM plane `plane`: the
    packed pair codes (`payload`), group codes (`meta`), column words (`words`) or, with
    decoded scales, the float32 scales and offsets of its groups (`scales`), the int32
    group partials of each K chunk, and the float32 running sum of the rescale between
    chunks (`running_sum`, only with several chunks)."""

    index: int
    plane: str
    cols: tuple[int, int]
    payload: Buf
    meta: Buf | None
    words: Buf | None
    partials: list[Buf] = field(default_factory=list)
    running_sum: Buf | None = None
    scales: dict[int, Buf] = field(default_factory=dict)
    """Decoded scales: the float32 scales and offsets of each rescale macro's groups, by
    its first group."""
    parts: list[tuple[int, int, str, Buf]] = field(default_factory=list)
    """A tile split by K over several planes (`Placer.place_matmul`): per part its K chunks
    [c0, c1), its plane and its payload (those chunks' install blocks, in a slice group on
    the plane's side); empty: all chunks on `plane` from `payload`."""

    @property
    def hemisphere(self) -> str:
        return self.plane[4]  # MXM_W0 -> W

    def chunk_plane(self, c: int) -> str:
        return next((p for c0, c1, p, _ in self.parts if c0 <= c < c1), self.plane)

    def chunk_payload(self, c: int) -> tuple[Buf, int]:
        """(the payload holding K chunk `c`'s install blocks, the first chunk it holds)."""
        return next(((b, c0) for c0, c1, _, b in self.parts if c0 <= c < c1),
                    (self.payload, 0))

    @property
    def packed_bytes(self) -> int:
        return sum(b.packed_bytes for _, _, _, b in self.parts) if self.parts else \
            self.payload.packed_bytes


@dataclass
class Placement:
    """What placing one chip's buffers decided: the tiles of every matmul (by node index),
    the group-sum buffer every matmul reads, and for every data buffer the buffers whose
    memory it reuses (it is written only after their last access)."""

    tiles: dict[int, list[WeightTile]] = field(default_factory=dict)
    group_sums: dict[int, str] = field(default_factory=dict)
    reuses: dict[str, list[str]] = field(default_factory=dict)
    initially_ready: list[str] = field(default_factory=list)
    packed_bytes: int = 0


def weight_group_width(m: Machine) -> int:
    """Slices per weight slice group: the `BLOCK_BYTES` byte vectors of a packed install
    block, or with int8 levels its `INSTALL_BLOCK_ROWS` level rows (one read per slice and
    cycle: the vectors of one install travel together)."""
    return INSTALL_BLOCK_ROWS if m.int8_levels else BLOCK_BYTES


def weight_slice_groups(m: Machine) -> dict[str, list[list[int]]]:
    """Per hemisphere, groups of `weight_group_width` slices from the outer edge inwards."""
    h = m.mem_slices_per_hemisphere
    width = weight_group_width(m)
    outer = [list(range(h - 1 - width * i, h - 1 - width * (i + 1), -1))
             for i in range(h // width)]
    return {"W": outer, "E": [[h + s for s in g] for g in outer]}


def data_slice_groups(m: Machine) -> dict[str, list[list[int]]]:
    """Per hemisphere, up to `INNER_GROUPS` groups of `DATA_SLICES` slices next to the VXM
    (those the weight groups leave)."""
    h = m.mem_slices_per_hemisphere
    left = h - BLOCK_BYTES * min(WEIGHT_GROUPS_NEAR, h // BLOCK_BYTES)
    count = max(1, min(INNER_GROUPS, left // DATA_SLICES))
    west = [list(range(DATA_SLICES * i, DATA_SLICES * (i + 1))) for i in range(count)]
    return {"W": west, "E": [[h + s for s in g] for g in west]}


class Placer:
    """Places the buffers of chip `chip` of `graph` (adding the weight tiles' and the
    matmul scratch buffers to it)."""

    def __init__(self, graph: Graph, m: Machine, chip: int):
        self.graph, self.m, self.chip = graph, m, chip
        self.weight_top = [0] * m.mem_slices  # next free address per slice (weights)
        self.next_plane = 0
        self.result = Placement()
        self.scratch_rows: dict[str, int] = {}  # matmul partials, running sums -> rows

    def run(self) -> Placement:
        for b in self.tables():
            self.place_table(b)
        for node in self.graph.nodes:
            if isinstance(node, MatmulNode) and node.chip == self.chip:
                self.place_matmul(node)
        self.place_data()
        return self.result

    # -- tables ----------------------------------------------------------------------------

    def tables(self) -> list[Buf]:
        """Embedding tables of this chip larger than a data slice group: constants that a
        gather reads as its table (tables.py cuts larger ones into row pieces that fit one
        weight slice group)."""
        limit = DATA_SLICES * self.m.vectors_per_slice * self.m.lanes
        out = []
        for node in self.graph.nodes:
            if isinstance(node, MacroNode) and node.chip == self.chip and isinstance(
                    node.op, q35nn.GatherOp):
                b = self.graph.buffers[node.inputs[0]]
                if b.kind == "const" and b.used and b.nbytes > limit and b not in out:
                    out.append(b)
        return out

    def place_table(self, b: Buf) -> None:
        """A table in one weight slice group (the outer ones first, alternating
        hemispheres), growing up from the weights' free address like a weight tile; a
        table that fits no group is an SRAM overflow naming it."""
        m = self.m
        b.layout = "rows"
        b.nvec = b.vectors(m.lanes)
        groups = weight_slice_groups(m)
        order = [g for pair in zip(groups["W"], groups["E"]) for g in pair]
        need = -(-b.nvec // weight_group_width(m))
        fits = [g for g in order if self.weight_top[g[0]] + need <= m.vectors_per_slice]
        if not fits:
            raise Q35cError(
                f"groq target: SRAM overflow: table '{b.label or b.name}' ({b.nbytes} bytes) "
                f"does not fit in any free {weight_group_width(m)}-slice group of chip "
                f"{self.chip} "
                f"({need} of {m.vectors_per_slice} addresses per slice); machine {m.name} "
                f"has {m.sram_bytes} bytes of SRAM")
        group = min(fits, key=lambda g: self.weight_top[g[0]])
        b.slices = list(group)
        b.addr = self.weight_top[group[0]]
        for s in group:
            self.weight_top[s] = b.addr + need

    # -- weights ---------------------------------------------------------------------------

    def place_matmul(self, node: MatmulNode) -> None:
        m = self.m
        lanes = m.lanes
        w = node.tensor
        if m.int_scales != (node.int_scaled is not None):
            raise Q35cError(
                f"groq target: matmul on weight {node.weight} is in the "
                f"{'integer' if node.int_scaled is not None else 'float'} rescale contract "
                f"but the target compiles scales={m.scales}")
        n = w.shape[1]
        groups = w.num_groups
        blocks = groups * w.group_size // INSTALL_BLOCK_ROWS
        meta_blocks = -(-groups // GROUP_CODE_BLOCK)
        slice_groups = weight_slice_groups(m)
        planes = m.mxm_plane_names
        tiles = []
        count = -(-n // lanes)
        chunks = -(-groups * w.group_size // node.chunk)
        # the tiles past the last whole wave (one tile per plane) are split by K chunks over
        # all planes, so that no plane does one more tile than the others (GEMV 4096x4096:
        # 13 tiles, the 13th alone on one plane for a quarter of the run)
        whole = count - count % len(planes) if chunks > 1 else count
        units = [(t, c) for t in range(whole, count) for c in range(chunks)]
        split: dict[int, list[tuple[int, int, str]]] = {}
        for j in range(len(planes) if units else 0):
            a, b = j * len(units) // len(planes), (j + 1) * len(units) // len(planes)
            plane = planes[(self.next_plane + j) % len(planes)]
            for t in range(whole, count):
                mine = [c for u, c in units[a:b] if u == t]
                if mine:
                    split.setdefault(t, []).append((mine[0], mine[-1] + 1, plane))
        for t in range(count):
            plane = split[t][0][2] if t in split else planes[self.next_plane % len(planes)]
            if t not in split:
                self.next_plane += 1
            cols = (t * lanes, min(n, (t + 1) * lanes))
            ncols = cols[1] - cols[0]
            packed = packed_bytes(w.shape[0], ncols, w.group_size, m.decoded_scales,
                                  m.int8_levels, m.int_scales)
            tile = self._weight_tile(node, t, plane, cols, blocks, meta_blocks, packed,
                                     slice_groups, split.get(t, []))
            self.result.packed_bytes += packed
            tiles.append(tile)
        self.result.tiles[node.index] = tiles
        self._group_sums(node)
        self._matmul_scratch(node, tiles)

    def _weight_tile(self, node: MatmulNode, t: int, plane: str, cols: tuple[int, int],
                     blocks: int, meta_blocks: int, packed: int,
                     slice_groups: dict[str, list[list[int]]],
                     split: list[tuple[int, int, str]]) -> WeightTile:
        """One column tile; `split`: its parts (chunks [c0, c1), plane), each with a
        payload of its own."""
        m, lanes, w = self.m, self.m.lanes, node.tensor
        side = plane[4]
        other = "E" if side == "W" else "W"
        fits = [g for g in slice_groups[side] + slice_groups[other]
                if self.weight_top[g[0]] + blocks <= m.vectors_per_slice]
        if split:  # the payload is in parts (`_payload`)
            fits = fits or slice_groups[side]
        if not fits:
            raise Q35cError(
                f"groq target: SRAM overflow: weight {node.weight} tile {t} "
                f"({packed} packed bytes) does not fit; machine {m.name} has {m.sram_bytes} "
                f"bytes of SRAM")
        group = self._weight_group(fits, plane, slice_groups)
        base = self.weight_top[group[0]]
        bufs = {}
        rows_per_block = INSTALL_BLOCK_ROWS if m.int8_levels else BLOCK_BYTES
        parts = [("payload", rows_per_block * blocks, "raw", "uint8")] if not split else []
        spans = rescale_spans(m, w.num_groups, node.chunk // w.group_size, t,
                              -(-w.shape[1] // lanes), node.rows)
        if m.int_scales:  # per macro its groups' integer scales; per tile base, offset
            parts += [(f"scales{g0}", g1 - g0, "flat", "uint8") for g0, g1 in spans]
            parts += [("words", INT_WORDS, "planes", "float32")]
        elif m.decoded_scales:
            parts += [(f"scales{g0}", DECODED_WORDS * (g1 - g0), "planes", "float32")
                      for g0, g1 in spans]
        else:
            parts += [("meta", BLOCK_BYTES * meta_blocks, "raw", "uint8"),
                      ("words", COLUMN_WORDS, "planes", "float32")]
        for part, rows, layout, dtype in parts:
            b = Buf(f"{node.weight}:t{t}:{part}", (rows, lanes), dtype, layout, "weight",
                    label=node.weight)
            b.nvec = b.vectors(lanes)
            if part == "payload":
                b.slices = list(group)
                b.addr = base
                base += b.addresses()
            else:  # group codes and column words (scales): next to the VXM (the rescale)
                b.hemisphere = side
                if split and part.startswith("scales") and \
                        [f"scales{g0}" for g0, _ in spans].index(part) % 2:
                    # a split tile's decoded scales alternate hemispheres span by span: a
                    # rescale holds the read ports of the slices it streams its scales
                    # from, and the extra tile's would all load one hemisphere's
                    b.hemisphere = other
            b.used = True
            b.chip = self.chip
            b.order = (0, len(self.graph.nodes) + 1)
            bufs[part] = b
        # initial contents, lane j = column cols[0] + j
        columns = slice(*cols)
        ncols = cols[1] - cols[0]
        payload = np.zeros((lanes, rows_per_block * blocks), np.uint8)
        scaled = node.int_scaled if m.int_scales else None
        if m.int8_levels:  # level row k of the tile's columns in lane order; 0 past K
            source = integer_levels(w) if scaled is None else scaled.levels
            levels = np.ascontiguousarray(source[:, columns].T, dtype=np.int8)
            payload[:ncols, :levels.shape[1]] = levels.view(np.uint8)
        else:
            payload[:ncols] = w.payload[columns]
        pieces = []
        if split:
            total = w.num_groups * w.group_size  # K rows
            for c0, c1, part_plane in split:
                k0, k1 = c0 * node.chunk, min(total, c1 * node.chunk)
                nb = (k1 - k0) // INSTALL_BLOCK_ROWS
                b = self._payload(node, t, f"payload.c{c0}", part_plane, nb, slice_groups)
                r0 = k0 // INSTALL_BLOCK_ROWS * rows_per_block
                b.value = encode(b, payload[:, r0:r0 + nb * rows_per_block].T.copy(), lanes)
                b.packed_bytes = packed * (k1 - k0) // total  # by K rows (for the report)
                pieces.append((c0, c1, part_plane, b))
            pieces[-1][3].packed_bytes += packed - sum(x[3].packed_bytes for x in pieces)
            bufs["payload"] = pieces[0][3]
        else:
            bufs["payload"].value = encode(bufs["payload"], payload.T.copy(), lanes)
        if scaled is not None:
            # the integer rescale contract (semantics int_scaled): uint8 scales per macro
            for g0, g1 in spans:
                ints = np.zeros((g1 - g0, lanes), np.uint8)
                ints[:, :ncols] = scaled.scales[g0:g1, columns]
                b = bufs[f"scales{g0}"]
                b.value = encode(b, ints, lanes)
            words = np.zeros((INT_WORDS, lanes), np.float32)
            words[0, :ncols] = scaled.base[columns]
            words[1, :ncols] = scaled.offset[columns]
            bufs["words"].value = encode(bufs["words"], words, lanes)
        elif m.decoded_scales:
            # docs/format.md section 3 evaluated at compile time (bit-identical float32), one
            # buffer per rescale macro: its groups' scales, then their offsets
            scales, offsets = group_scales(w)  # [G, N] each
            for g0, g1 in spans:
                words = np.zeros((DECODED_WORDS * (g1 - g0), lanes), np.float32)
                words[:g1 - g0, :ncols] = scales[g0:g1, columns]
                words[g1 - g0:, :ncols] = offsets[g0:g1, columns]
                b = bufs[f"scales{g0}"]
                b.value = encode(b, words, lanes)
        else:
            meta = np.zeros((lanes, BLOCK_BYTES * meta_blocks), np.uint8)
            meta[:ncols] = w.meta[columns]
            bufs["meta"].value = encode(bufs["meta"], meta.T.copy(), lanes)
            words = np.zeros((COLUMN_WORDS, lanes), np.float32)
            words[0, :ncols] = w.super_scale[columns]
            words[1, :ncols] = w.offset_base[columns]
            words[2, :ncols] = w.offset_step[columns]
            bufs["words"].value = encode(bufs["words"], words, lanes)
        if not split:
            bufs["payload"].packed_bytes = packed
            for s in group:
                self.weight_top[s] = base
        for b in bufs.values():
            self.graph.buffers[b.name] = b
        return WeightTile(t, plane, cols, bufs["payload"], bufs.get("meta"), bufs.get("words"),
                          scales={g0: bufs[f"scales{g0}"] for g0, _ in spans
                                  if f"scales{g0}" in bufs}, parts=pieces)

    def _weight_group(self, fits: list[list[int]], plane: str,
                      slice_groups: dict[str, list[list[int]]]) -> list[int]:
        """The weight slice group, of those with room (`fits`), for a payload installed into
        `plane`: the least filled near the plane. With int8 levels, each plane of a
        hemisphere installs from a 16-slice group of its own while it has room: an install
        reads one level row per slice and cycle, so two planes on one group install 16 rows
        per cycle between them rather than 32 (SmolLM2's LM head: the east planes took 70
        and 8 of their tiles from the two east groups, the outer one being mostly the
        embedding table's pieces)."""
        m, side = self.m, plane[4]
        near = [g for g in fits[:WEIGHT_GROUPS_NEAR]
                if g in slice_groups[side][:WEIGHT_GROUPS_NEAR]]
        per_side = m.mxm_planes_per_hemisphere
        own = [g for g in near if m.int8_levels
               and slice_groups[side].index(g) % per_side == int(plane[5:]) % per_side]
        return min(own or near or fits, key=lambda g: (self.weight_top[g[0]], g[0]))

    def _payload(self, node: MatmulNode, t: int, part: str, plane: str, blocks: int,
                 slice_groups: dict[str, list[list[int]]]) -> Buf:
        """A payload of `blocks` install blocks in the least filled weight slice group near
        `plane` (else any group with room), at that group's free address."""
        m, lanes = self.m, self.m.lanes
        side = plane[4]
        other = "E" if side == "W" else "W"
        fits = [g for g in slice_groups[side] + slice_groups[other]
                if self.weight_top[g[0]] + blocks <= m.vectors_per_slice]
        if not fits:
            raise Q35cError(
                f"groq target: SRAM overflow: weight {node.weight} tile {t} ({part}) does "
                f"not fit; machine {m.name} has {m.sram_bytes} bytes of SRAM")
        group = self._weight_group(fits, plane, slice_groups)
        rows_per_block = INSTALL_BLOCK_ROWS if m.int8_levels else BLOCK_BYTES
        b = Buf(f"{node.weight}:t{t}:{part}", (rows_per_block * blocks, lanes), "uint8",
                "raw", "weight", label=node.weight)
        b.nvec = b.vectors(lanes)
        b.slices = list(group)
        b.addr = self.weight_top[group[0]]
        b.used, b.chip = True, self.chip
        b.order = (0, len(self.graph.nodes) + 1)
        for s in group:
            self.weight_top[s] = b.addr + b.addresses()
        self.graph.buffers[b.name] = b
        return b

    def _group_sums(self, node: MatmulNode) -> None:
        """The activation group sums, shared by the matmuls that read the same
        activations with the same group size."""
        w = node.tensor
        name = f"{node.q}:sx{w.group_size}"
        order = self.graph.nodes.index(node) + 1
        if name not in self.graph.buffers:
            b = Buf(name, (node.rows, w.num_groups), "int32", "flat", "temp")
            b.used, b.chip = True, self.chip
            b.order = (order, order)
            self.graph.buffers[name] = b
        sums = self.graph.buffers[name]
        sums.order = (sums.order[0], order)
        self.result.group_sums[node.index] = name

    def _matmul_scratch(self, node: MatmulNode, tiles: list[WeightTile]) -> None:
        """Per tile: the int32 group partials of each K chunk, and the float32 running sum
        of the rescale between chunks."""
        lanes = self.m.lanes
        groups = node.tensor.num_groups
        groups_per_chunk = node.chunk // node.tensor.group_size
        chunks = -(-groups // groups_per_chunk)
        order = self.graph.nodes.index(node) + 1

        def scratch(name: str, shape: tuple[int, int], dtype: str, side: str) -> Buf:
            b = Buf(name, shape, dtype, "planes", "temp", label=node.weight)
            b.used, b.order, b.hemisphere = True, (order, order), side
            b.chip = self.chip
            self.scratch_rows[name] = node.rows
            return b

        for tile in tiles:
            for c in range(chunks):
                ng = min(groups, (c + 1) * groups_per_chunk) - c * groups_per_chunk
                # next to the VXM on the side of the plane that makes them
                part = scratch(f"v{node.index}:t{tile.index}:c{c}:partials",
                               (node.rows * ng, lanes), "int32", tile.chunk_plane(c)[4])
                tile.partials.append(part)
                if chunks > 1 and c == 0:
                    acc = scratch(f"v{node.index}:t{tile.index}:yacc", (node.rows, lanes),
                                  "float32", tile.hemisphere)
                    tile.running_sum = acc
                    self.graph.buffers[acc.name] = acc
                self.graph.buffers[part.name] = part

    # -- data ------------------------------------------------------------------------------

    def place_data(self) -> None:
        """Activations, constants, temporaries and matmul scratch. Nearest the VXM rather
        than round robin over the inner 16 slices: every macro's duration includes the
        stream travel to its farthest slice (and the matmul's rescale is on every layer's
        critical path), which costs more than the MEM-port conflicts of buffers sharing
        slices (measured: llama_tiny 6613 -> 5252 cycles, every example and GEMV/GEMM model
        faster or equal)."""
        order = [b for b in self.graph.buffers.values()
                 if b.used and b.chip == self.chip and b.layout != "rows" and (
                     b.kind in ("input", "const", "temp")
                     or b.kind == "weight" and not b.slices)]
        inner = data_slice_groups(self.m)
        try:
            placed = self._place_data(order, inner, near=True)
        except Q35cError:  # small SRAM: the round robin alone packs tighter
            placed = self._place_data(order, inner, near=False)
        # a buffer that reuses memory of one earlier in op order is written only after that
        # one's last access (its accesses are scheduled first: nodes go in op order)
        for b in placed:
            self.result.reuses[b.name] = [
                o.name for o in placed if o is not b and set(o.slices) & set(b.slices)
                and b.addr < o.addr + o.addresses() and o.addr < b.addr + b.addresses()
                and o.order[1] < b.order[0]]
        for b in self.graph.buffers.values():
            if (b.kind in ("input", "const", "weight") and b.slices and b.chip == self.chip
                    or b.kind == "virtual"):
                self.result.initially_ready.append(b.name)

    def _place_data(self, order: list[Buf], inner: dict[str, list[list[int]]], near: bool
                    ) -> list[Buf]:
        m, lanes = self.m, self.m.lanes
        placed: list[Buf] = []
        next_slice = {"W": 0, "E": 0}
        next_hemisphere = 0  # buffers without a hemisphere alternate W, E
        for b in order:
            b.nvec = b.vectors(lanes)
            # int32/float32 planes over up to 8 slices, others up to 4; a running sum of one
            # row (4 vectors) on 4, as its rescale's travel counts the slices it spans
            # (GEMV 4096x4096 f32/int8: 1162 -> 1150 cycles)
            width = min(2 * DATA_SLICES if b.layout == "planes" else DATA_SLICES, b.nvec)
            side = b.hemisphere or "WE"[next_hemisphere % 2]
            if not b.hemisphere:
                next_hemisphere += 1
            candidates = [s for g in inner[side] for s in g]
            # the `width` slices nearest the VXM while they have fresh memory, else (SRAM
            # filling up) the next window of the round robin over the inner slices
            addr, low = -1, 0
            if near:
                # a weight tile's large rescale operands (group codes and words, or
                # scales, of more than `HOLD_OUT` addresses per slice) go one data slice
                # group out: a rescale holds the read queues of the slices it reads while
                # it streams them in, and the matmul's passes read their activations from
                # the nearest slices all along (GEMV 4096x4096 with decoded scales:
                # 80-cycle holds stalled every pass behind each rescale); not further out,
                # where weight slice groups begin (int8 levels: slice 12). Small ones stay
                # nearest: their holds are short and the travel is on every rescale.
                out = DATA_SLICES if b.kind == "weight" and -(-b.nvec // width) > HOLD_OUT \
                    and len(candidates) >= DATA_SLICES + width else 0
                # a matmul's partials and running sums of several activation rows go one
                # data slice group out too, away from the activations: a rescale holds
                # the read queues of its partials' slices for up to 40 cycles, and
                # passes of several rows read an activation vector nearly every cycle
                # (GEMM 8x4096x4096 f32/int8: its passes ended at cycle 4483 rather than
                # 3662, 5546 -> 5400 cycles); with one row the travel costs more than the
                # waits (GEMV 4096x4096: 1142 -> 1159)
                if self.scratch_rows.get(b.name, 1) > 1 and \
                        len(candidates) >= DATA_SLICES + width:
                    out = DATA_SLICES
                # the activations of a one-row matmul with more than `OUT_CHUNKS` K chunks
                # go two data slice groups out (slices 8..11), away from its partials,
                # running sums and rescale operands in slices 0..7: every pass reads an
                # activation vector while the partials of earlier passes are written to
                # those slices and the rescales hold their read queues (GEMV 4096x4096,
                # scales=int: passes paused up to 12 cycles; 1089 -> 1053 cycles; with
                # several rows, whose partials are out already, GEMM 8x4096 4106 -> 5251,
                # so not there; nor with decoded float32 scales, which fill slices 4..11:
                # GEMV 4096x4096 f32/int8 1147 -> 1759)
                if self.m.int_scales and b.layout.startswith("chunks:") and \
                        b.nvec > OUT_CHUNKS and \
                        int(np.prod(b.shape[:-1])) == 1 and \
                        len(candidates) >= 2 * DATA_SLICES + width:
                    out = 2 * DATA_SLICES
                b.slices = candidates[out:out + width]
                addr, low = self._fit(b, placed, fresh=True)
            # the next window of the round robin; when it is full, the windows after it
            # (weights from below can fill some inner slices, e.g. a large table's model)
            for shift in range(0, len(candidates) if addr < low else 0, DATA_SLICES):
                b.slices = [candidates[(next_slice[side] + shift + j) % len(candidates)]
                            for j in range(width)]
                addr, low = self._fit(b, placed)
                if addr >= low:
                    break
            next_slice[side] += width
            b.addr = addr
            if addr < low:
                used = sum(o.nvec for o in self.graph.buffers.values() if o.slices) * lanes
                what = f"{b.name} ('{b.label}', " if b.label else f"{b.name} ("
                raise Q35cError(
                    f"groq target: SRAM overflow: buffer {what}{b.nbytes} bytes) does not "
                    f"fit in slices {', '.join(m.slice_name(s) for s in b.slices)} "
                    f"({m.vectors_per_slice} vectors of {lanes} B each); the model needs at "
                    f"least {used} bytes, machine {m.name} has {m.sram_bytes}")
            placed.append(b)
        return placed

    def _fit(self, b: Buf, placed: list[Buf], fresh: bool = False) -> tuple[int, int]:
        """(address, lowest free address) for buffer `b` on its slices: fresh memory first
        (no reuse: no false dependencies between independent ops), else the highest hole
        among buffers whose op-order live ranges intersect its own; address < lowest: no
        room. `fresh`: fresh memory only."""
        need = b.addresses()
        top = self.m.vectors_per_slice
        low = max(self.weight_top[s] for s in b.slices)
        sharing = [o for o in placed if set(o.slices) & set(b.slices)]
        addr = min([o.addr for o in sharing] + [top]) - need
        if addr < low and not fresh:
            clashes = [o for o in sharing
                       if o.order[0] <= b.order[1] and b.order[0] <= o.order[1]]
            candidates = sorted({top - need} | {o.addr - need for o in clashes}, reverse=True)
            addr = next((a for a in candidates if a >= low and not any(
                a < o.addr + o.addresses() and o.addr < a + need for o in clashes)), -1)
        return addr, low


def weight_vectors(node: MacroNode | MatmulNode, m: Machine) -> int:
    """MEM vectors a node's packed weights take (0 for macros): what the multi-chip
    `partition` balances."""
    if not isinstance(node, MatmulNode):
        return 0
    w = node.tensor
    groups = w.num_groups
    tiles = -(-w.shape[1] // m.lanes)
    if m.int8_levels or m.decoded_scales:  # the layout's bytes, in whole vectors per tile
        return tiles * -(-packed_bytes(w.shape[0], m.lanes, w.group_size, m.decoded_scales,
                                       m.int8_levels, m.int_scales) // m.lanes)
    return tiles * (BLOCK_BYTES * (groups * w.group_size // INSTALL_BLOCK_ROWS)
                    + BLOCK_BYTES * -(-groups // GROUP_CODE_BLOCK) + COLUMN_WORDS)
