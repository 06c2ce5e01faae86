"""Static scheduling: MEM placement, stream ids and issue cycles for a lowered graph.

List scheduling in op order with earliest-fit reservation tables over
- queues: (queue, cycle), one instruction per queue per cycle (a macro holds its queue, and
  the read/write queues of every MEM slice it touches, for its whole duration);
- MEM banks: a read and a write in one slice in one cycle must hit different banks;
- streams: (direction, stream, diagonal, position). A value put on an eastward stream at
  position p at cycle t is at p + k at t + k, so it keeps the diagonal d = t - p (westward:
  d = t + p); it occupies the positions from its producer to its consumer. A macro holds
  one stream per MEM slice it reads or writes, between the slice and its unit, for its
  whole duration (a rectangle in position x cycle).

Everything iterates in list order (no dict/set-order dependence), so output is
deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from q35c.compiler.diagnostics import Q35cError
from q35c.targets.groq import cost as costs
from q35c.targets.groq.cost import RESCALE_CHUNKS
from q35c.targets.groq.lower import Buf, Graph, MatmulNode, encode
from q35c.targets.groq.machine import Machine

PLANES = ("MXM_W0", "MXM_E0", "MXM_W1", "MXM_E1")
BUCKET = 256
# RESCALE_CHUNKS (cost.py): K chunks (320 rows each) whose group partials one rescale macro
# consumes: fewer, larger macros amortize their stream travel and latency, more, smaller
# ones shorten the tail.


def slice_name(m: Machine, i: int) -> str:
    h = m.mem_slices_per_hemisphere
    return f"MEM_W{i}" if i < h else f"MEM_E{i - h}"


def ncols_of(n: int, t: int, lanes: int) -> int:
    return min(n, (t + 1) * lanes) - t * lanes


def plane_unit(plane: str) -> str:
    return plane[:5]  # MXM_W0 -> MXM_W (its floorplan position)


def macro_mem_spans(m: Machine, bufs_r: list[Buf], bufs_w: list[Buf], c: int, dur: int
                    ) -> list[tuple[str, int, int]]:
    """The MEM queues a macro holds: (queue, first cycle, end cycle). A slice's read queue
    for the first `addresses` cycles (operands stream out, one vector per slice per cycle),
    its write queue for the last `addresses` cycles (results land at the end)."""
    reads: dict[int, int] = {}
    writes: dict[int, int] = {}
    for b in bufs_r:
        for s in b.slices:
            reads[s] = max(reads.get(s, 0), b.addresses())
    for b in bufs_w:
        for s in b.slices:
            writes[s] = max(writes.get(s, 0), b.addresses())
    spans = [(f"{slice_name(m, s)}.r", c, c + min(dur, n)) for s, n in sorted(reads.items())]
    spans += [(f"{slice_name(m, s)}.w", c + dur - min(dur, n), c + dur)
              for s, n in sorted(writes.items())]
    return spans


class Tables:
    """Reservation tables shared by the scheduler (and mirrored by the simulator)."""

    def __init__(self, m: Machine):
        self.m = m
        self.busy: dict[str, bytearray] = {}
        self.banks: dict[tuple[int, int, str], int] = {}  # (slice, cycle, r|w) -> bank
        self.diag: dict[tuple[str, int, int], bytearray] = {}
        self.rects: dict[tuple[str, int], dict[int, list[tuple[int, int, int, int]]]] = {}
        self.npos = len(m.floorplan)

    # queues
    def q_free(self, q: str, c: int, d: int = 1) -> bool:
        b = self.busy.get(q)
        if b is None or c >= len(b):
            return True
        return b.find(1, c, c + d) < 0

    def q_next(self, q: str, c: int, d: int = 1) -> int:
        """Smallest c' >= c where [c', c'+d) is free on q."""
        while True:
            b = self.busy.get(q)
            if b is None:
                return c
            i = b.find(1, c, c + d)
            if i < 0:
                return c
            c = i + 1

    def q_take(self, q: str, c: int, d: int = 1) -> None:
        b = self.busy.setdefault(q, bytearray())
        if len(b) < c + d + 1:
            b.extend(bytes(c + d + 1024 - len(b)))
        b[c:c + d] = b"\x01" * d

    # streams
    @staticmethod
    def diagonal(direction: str, p: int, t: int) -> int:
        return t - p if direction == "E" else t + p

    def path_free(self, direction: str, s: int, p0: int, p1: int, t0: int) -> bool:
        """A value on stream s put at position p0 at cycle t0, travelling to p1."""
        lo, hi = min(p0, p1), max(p0, p1)
        d = self.diagonal(direction, p0, t0)
        row = self.diag.get((direction, s, d))
        if row is not None and row.find(1, lo, hi + 1) >= 0:
            return False
        t1 = t0 + (hi - lo)
        for r in self._rects(direction, s, t0, t1):
            if self._hits(direction, d, lo, hi, r):
                return False
        return True

    def _rects(self, direction, s, t0, t1):
        buckets = self.rects.get((direction, s))
        if not buckets:
            return []
        seen = []
        for b in range(t0 // BUCKET, t1 // BUCKET + 1):
            for r in buckets.get(b, ()):
                if r not in seen:
                    seen.append(r)
        return seen

    @staticmethod
    def _hits(direction, d, lo, hi, rect) -> bool:
        P0, P1, T0, T1 = rect
        a, b = max(lo, P0), min(hi, P1)
        if a > b:
            return False
        # times along the diagonal over positions a..b
        ta, tb = (d + a, d + b) if direction == "E" else (d - b, d - a)
        return ta < T1 and tb >= T0

    def path_take(self, direction: str, s: int, p0: int, p1: int, t0: int) -> None:
        lo, hi = min(p0, p1), max(p0, p1)
        d = self.diagonal(direction, p0, t0)
        row = self.diag.setdefault((direction, s, d), bytearray(self.npos))
        row[lo:hi + 1] = b"\x01" * (hi - lo + 1)

    def rect_free(self, direction: str, s: int, P0: int, P1: int, T0: int, T1: int) -> bool:
        for r in self._rects(direction, s, T0, T1):
            if r[0] <= P1 and P0 <= r[1] and r[2] < T1 and T0 < r[3]:
                return False
        # values on diagonals crossing the rectangle
        for t in range(T0, T1):
            for p in (P0, P1):
                row = self.diag.get((direction, s, self.diagonal(direction, p, t)))
                if row is not None and row.find(1, P0, P1 + 1) >= 0:
                    return False
        return True

    def rect_take(self, direction: str, s: int, P0: int, P1: int, T0: int, T1: int) -> None:
        buckets = self.rects.setdefault((direction, s), {})
        r = (P0, P1, T0, T1)
        for b in range(T0 // BUCKET, (T1 - 1) // BUCKET + 1):
            buckets.setdefault(b, []).append(r)


@dataclass
class Program:
    machine: Machine
    instructions: list[dict] = field(default_factory=list)
    buffers: dict[str, Buf] = field(default_factory=dict)
    inputs: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)
    outputs: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)
    cycles: int = 0
    lower_bound: dict = field(default_factory=dict)
    weight_packed_bytes: int = 0
    deps: list[dict] = field(default_factory=list)  # per node: reads, writes, cycles/layer
    chips: int = 1


class Scheduler:
    """Schedules the nodes of one chip; the schedulers of a multi-chip program share the
    program, the buffer readiness and the writer tables (buffer names are unique)."""

    def __init__(self, graph: Graph, m: Machine, chip: int = 0,
                 shared: "Scheduler | None" = None):
        self.g, self.m, self.chip = graph, m, chip
        self.t = Tables(m)
        self.p = shared.p if shared else Program(m)
        self.L = m.lanes
        self.rl = int(m.param("mem_read_latency"))
        self.wl = int(m.param("mem_write_latency"))
        self.ul = int(m.param("vxm_unpack_latency"))
        self.ml = int(m.param("mxm_latency"))
        self.rows_pc = int(m.param("mxm_install_rows_per_cycle"))
        self.nbuf = int(m.param("mxm_weight_buffers"))
        self.vxm_queues = [f"VXM.{i}" for i in range(int(m.param("vxm_queues")))]
        self.inter = int(m.param("mem_bank_interleave"))
        self.pos_vxm = m.position("VXM")
        # buffer -> cycle its contents are complete, its writers, its last access
        self.ready: dict[str, int] = shared.ready if shared else {}
        self.writers: dict[str, list[int]] = shared.writers if shared else {}
        self.last_access: dict[str, int] = shared.last_access if shared else {}
        self.war: dict[str, list[str]] = shared.war if shared else {}
        self.plane_rr = 0
        self.buf_free: dict[tuple[str, int], int] = {}
        self.buf_next: dict[str, int] = {}
        self.unpack_rr = 0
        self.rescale_chunks = RESCALE_CHUNKS

    # -- placement ---------------------------------------------------------------------------

    def place(self) -> None:
        m, L = self.m, self.L
        h = m.mem_slices_per_hemisphere
        # weights: groups of 7 slices from the outer edge inwards (they are read ahead of
        # time); activations and scratch: groups of 4 next to the VXM (read often, late)
        outer = [list(range(h - 1 - 7 * i, h - 8 - 7 * i, -1)) for i in range(h // 7)]
        groups = {"W": outer, "E": [[h + s for s in g] for g in outer]}
        n_inner = max(1, min(4, (h - 7 * min(4, h // 7)) // 4))
        inner = {"W": [list(range(4 * i, 4 * i + 4)) for i in range(n_inner)]}
        inner["E"] = [[h + s for s in g] for g in inner["W"]]
        self.inner = inner
        self.wtop = [0] * m.mem_slices  # weights grow up from address 0
        self.tiles: dict[int, list[dict]] = {}
        self.sx: dict[int, str] = {}
        packed_total = 0
        for node in self.g.nodes:
            if not isinstance(node, MatmulNode) or node.chip != self.chip:
                continue
            tiles = []
            w = node.tensor
            k, n = w.shape
            G = w.num_groups
            B = G * w.group_size // 16
            MB = -(-G // 8)
            for t in range(-(-n // L)):
                plane = PLANES[self.plane_rr % len(PLANES)]
                self.plane_rr += 1
                hemi = plane[4]
                need = B
                fits = [gs for gs in groups[hemi] + groups["E" if hemi == "W" else "W"]
                        if self.wtop[gs[0]] + need <= m.vectors_per_slice]
                if not fits:
                    raise Q35cError(
                        f"groq target: SRAM overflow: weight {node.weight} tile {t} "
                        f"({ncols_of(n, t, L) * (7 * B + 7 * MB + 12)} packed bytes) does not "
                        f"fit; machine {m.name} has {m.sram_bytes} bytes of SRAM")
                preferred = [gs for gs in fits[:4] if gs in groups[hemi][:4]]
                grp = min(preferred or fits, key=lambda gs: (self.wtop[gs[0]], gs[0]))
                base = self.wtop[grp[0]]
                cols = slice(t * L, min(n, (t + 1) * L))
                ncols = cols.stop - cols.start
                bufs = {}
                for part, rows, layout, dtype in (("payload", 7 * B, "raw", "uint8"),
                                                  ("meta", 7 * MB, "raw", "uint8"),
                                                  ("words", 3, "planes", "float32")):
                    name = f"{node.weight}:t{t}:{part}"
                    b = Buf(name, (rows, L) if part != "words" else (3, L), dtype, layout,
                            "weight")
                    b.nvec = b.vectors(L)
                    if part == "payload":
                        b.slices = list(grp)
                        b.addr = base
                        base += b.addresses()
                    else:  # group codes and column words: next to the VXM (the rescale)
                        b.hemisphere = hemi
                    b.used = True
                    b.chip = self.chip
                    b.order = (0, len(self.g.nodes) + 1)
                    bufs[part] = b
                # initial contents, lane n = column cols.start + n
                pay = np.zeros((L, 7 * B), np.uint8)
                pay[:ncols] = w.payload[cols]
                bufs["payload"].value = encode(bufs["payload"], pay.T.copy(), L)
                meta = np.zeros((L, 7 * MB), np.uint8)
                meta[:ncols] = w.meta[cols]
                bufs["meta"].value = encode(bufs["meta"], meta.T.copy(), L)
                words = np.zeros((3, L), np.float32)
                words[0, :ncols] = w.super_scale[cols]
                words[1, :ncols] = w.offset_base[cols]
                words[2, :ncols] = w.offset_step[cols]
                bufs["words"].value = encode(bufs["words"], words, L)
                packed = ncols * (7 * B + 7 * MB + 12)
                bufs["payload"].packed_bytes = packed
                packed_total += packed
                for s in grp:
                    self.wtop[s] = base
                for b in bufs.values():
                    self.g.buffers[b.name] = b
                tiles.append(dict(t=t, plane=plane, cols=(cols.start, cols.stop), B=B, MB=MB,
                                  G=G, **bufs))
            self.tiles[node.index] = tiles
            # activation group sums, shared by the matmuls that read the same activations
            key = f"{node.q}:sx{w.group_size}"
            i = self.g.nodes.index(node) + 1
            if key not in self.g.buffers:
                b = Buf(key, (node.rows, G), "int32", "flat", "temp")
                b.used, b.chip = True, self.chip
                b.order = (i, i)
                self.g.buffers[key] = b
            sx = self.g.buffers[key]
            sx.order = (sx.order[0], i)
            self.sx[node.index] = key
            # scratch per tile: int32 group partials of each K chunk, and the float32
            # running sum of the rescale between chunks
            gpc = node.chunk // w.group_size
            nch = -(-G // gpc)
            i = self.g.nodes.index(node) + 1
            for tile in tiles:
                tile["partials"] = []
                for c in range(nch):
                    ng = min(G, (c + 1) * gpc) - c * gpc
                    name = f"v{node.index}:t{tile['t']}:c{c}:partials"
                    b = Buf(name, (node.rows * ng, L), "int32", "planes", "temp")
                    tile["partials"].append(b)
                    if nch > 1 and c == 0:
                        acc = Buf(f"v{node.index}:t{tile['t']}:yacc", (node.rows, L), "float32",
                                  "planes", "temp")
                        tile["yacc"] = acc
                        self.g.buffers[acc.name] = acc
                        acc.used, acc.order, acc.hemisphere = True, (i, i), tile["plane"][4]
                        acc.chip = self.chip
                    b.used, b.order, b.hemisphere = True, (i, i), tile["plane"][4]
                    b.chip = self.chip
                    self.g.buffers[name] = b
        self.p.weight_packed_bytes += packed_total
        # data buffers: the 4 slices (8 for int32/float32 planes) nearest the VXM of their
        # hemisphere while they have fresh memory, else groups round robin over the inner 16
        # slices (and if that overflows, the round robin alone, as before: it packs small
        # SRAMs tighter, e.g. the multi-chip tests' 16- and 64-vector slices), addresses from the top down, first fit against buffers with
        # intersecting op-order live ranges. Nearest rather than round robin over the inner
        # 16 slices: every macro's duration includes the stream travel to its farthest
        # slice (and the matmul's rescale is on every layer's critical path), which costs
        # more than the MEM-port conflicts of buffers sharing slices (measured: llama_tiny
        # 6613 -> 5252 cycles, every example and GEMV/GEMM model faster or equal)
        order = [b for b in self.g.buffers.values()
                 if b.used and b.chip == self.chip and (b.kind in ("input", "const", "temp")
                                                         or b.kind == "weight" and not b.slices)]
        try:
            placed = self._place_data(order, inner, near=True)
        except Q35cError:  # small SRAM: the round robin alone packs tighter
            placed = self._place_data(order, inner, near=False)
        # a buffer that reuses memory of one earlier in op order is written only after that
        # one's last access (its accesses are scheduled first: nodes go in op order)
        for b in placed:
            self.war[b.name] = [
                o.name for o in placed if o is not b and set(o.slices) & set(b.slices)
                and b.addr < o.addr + o.addresses() and o.addr < b.addr + b.addresses()
                and o.order[1] < b.order[0]]
        for b in self.g.buffers.values():
            if b.kind in ("input", "const", "weight") and b.slices and b.chip == self.chip:
                self.ready[b.name] = 0
            if b.kind == "virtual":
                self.ready[b.name] = 0

    def _place_data(self, order: list[Buf], inner: dict, near: bool) -> list[Buf]:
        m, L = self.m, self.L
        placed: list[Buf] = []
        rr = {"W": 0, "E": 0, "": 0}
        for b in order:
            b.nvec = b.vectors(L)
            width = 8 if b.layout == "planes" else min(4, b.nvec)
            hemi = b.hemisphere or "WE"[rr[""] % 2]
            if not b.hemisphere:
                rr[""] += 1
            cands = [x for g in inner[hemi] for x in g]
            # the `width` slices nearest the VXM while they have fresh memory, else (SRAM
            # filling up) the next window of the round robin over the inner slices
            addr, low = -1, 0
            if near:
                b.slices = cands[:width]
                addr, low = self._fit(b, placed, fresh=True)
            if addr < low:
                b.slices = [cands[(rr[hemi] + j) % len(cands)] for j in range(width)]
                addr, low = self._fit(b, placed)
            rr[hemi] += width
            b.addr = addr
            if addr < low:
                used = sum(o.nvec for o in self.g.buffers.values() if o.slices) * L
                raise Q35cError(
                    f"groq target: SRAM overflow: buffer {b.name} ({b.nbytes} bytes) does not "
                    f"fit in slices {', '.join(slice_name(m, s) for s in b.slices)} "
                    f"({m.vectors_per_slice} vectors of {L} B each); the model needs at "
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
        low = max(self.wtop[s] for s in b.slices)
        sharing = [o for o in placed if set(o.slices) & set(b.slices)]
        addr = min([o.addr for o in sharing] + [top]) - need
        if addr < low and not fresh:
            clashes = [o for o in sharing
                       if o.order[0] <= b.order[1] and b.order[0] <= o.order[1]]
            cands = sorted({top - need} | {o.addr - need for o in clashes}, reverse=True)
            addr = next((a for a in cands if a >= low and not any(
                a < o.addr + o.addresses() and o.addr < a + need for o in clashes)), -1)
        return addr, low

    # -- helpers -----------------------------------------------------------------------------

    def emit(self, **fields) -> dict:
        ins = {"id": len(self.p.instructions), "chip": self.chip, **fields}
        self.p.instructions.append(ins)
        return ins

    def pos(self, unit: str) -> int:
        return self.m.position(unit)

    def bank(self, addr: int) -> int:
        return (addr // self.inter) % self.m.banks_per_slice

    def direction(self, p0: int, p1: int) -> str:
        return "E" if p1 >= p0 else "W"

    def free_streams(self, n: int, direction: str, p0: int, p1: int, t0: int,
                     group: int = 1, avoid=()) -> list[int] | None:
        got: list[int] = []
        if group == 1:
            for s in range(self.m.streams_per_direction):
                if s not in avoid and self.t.path_free(direction, s, p0, p1, t0):
                    got.append(s)
                    if len(got) == n:
                        return got
            return None
        for s0 in range(0, self.m.streams_per_direction, group):
            ids = list(range(s0, s0 + group))
            if any(s in avoid for s in ids):
                continue
            if all(self.t.path_free(direction, s, p0, p1, t0) for s in ids):
                return ids
        return None

    def touch(self, buf: str, end: int) -> None:
        self.last_access[buf] = max(self.last_access.get(buf, 0), end)

    def war_ready(self, buf: str) -> int:
        return max([self.last_access.get(o, 0) for o in self.war.get(buf, [])] + [0])

    def mem_ok(self, s: int, c: int, rw: str, addr: int) -> bool:
        other = self.t.banks.get((s, c, "w" if rw == "r" else "r"))
        return other is None or other != self.bank(addr)

    # -- macros ------------------------------------------------------------------------------

    def macro_cost(self, kind: str, elements: int, passes: int, io: int) -> int:
        return costs.macro_cycles(self.m, kind, elements, passes, io)  # targets/groq/cost.py

    def _macro_slot(self, units, queues, bufs_r, bufs_w, reads, base, earliest):
        """Earliest (cycle, duration, unit, queue, holds, MEM spans) of a macro of `base`
        cycles plus its stream travel on one of `queues` (of `units`)."""
        m = self.m
        rslices = sorted({s for b in bufs_r for s in b.slices})
        wslices = sorted({s for b in bufs_w for s in b.slices})
        pu0 = self.pos(units[0])
        travel = max([abs(self.pos(slice_name(m, s)) - pu0) for s in rslices] + [0]) + \
            max([abs(self.pos(slice_name(m, s)) - pu0) for s in wslices] + [0])
        dur = base + travel
        c = earliest
        for b in bufs_w:
            c = max(c, self.war_ready(b.name))
        for b in reads:
            c = max(c, self.ready[b])
        spans = macro_mem_spans(m, bufs_r, bufs_w, 0, dur)
        while True:
            # queues: the MEM slices' (while the macro streams its operands in / results out)
            nxt = c
            for q, a, b in spans:
                nxt = max(nxt, self.t.q_next(q, nxt + a, b - a) - a)
            if nxt != c:
                c = nxt
                continue
            if any(not self.t.q_free(q, c + a, b - a) for q, a, b in spans):
                c += 1
                continue
            qi = next((i for i, q in enumerate(queues) if self.t.q_free(q, c, dur)), None)
            if qi is None:
                c += 1
                continue
            unit, queue = units[qi], queues[qi]
            pu = self.pos(unit)
            holds, ok, used = [], True, {"E": set(), "W": set()}
            for q, a, b in spans:
                sl = q.split(".")[0]
                ps = self.pos(sl)
                towards = q.endswith(".r")
                d = self.direction(ps, pu) if towards else self.direction(pu, ps)
                lo, hi = min(ps, pu), max(ps, pu)
                t0, t1 = (c + a, c + b + hi - lo) if towards else (c + a - (hi - lo), c + b)
                sid = next((i for i in range(m.streams_per_direction) if i not in used[d]
                            and self.t.rect_free(d, i, lo, hi, t0, t1)), None)
                if sid is None:
                    ok = False
                    break
                used[d].add(sid)
                holds.append(dict(stream=sid, dir=d, slice=sl, p0=lo, p1=hi, t0=t0, t1=t1))
            if not ok:
                c += 1
                continue
            break
        return c, dur, unit, queue, holds, spans

    def schedule_macro(self, unit_kind: str, kind: str, reads: list[str], writes: list[str],
                       elements: int, passes: int, earliest: int, fields: dict) -> dict:
        m = self.m
        bufs_r = [self.g.buffers[b] for b in reads if self.g.buffers[b].kind != "virtual"]
        bufs_w = [self.g.buffers[b] for b in writes]
        io = max([-(-b.nvec // len(b.slices)) for b in bufs_r + bufs_w] + [1])
        dur = self.macro_cost(kind, elements, passes, io)
        if unit_kind == "SXM":
            # either SXM (the one whose result lands first; ties: the one on the hemisphere
            # of the first operand, as before)
            first = (bufs_r or bufs_w)[0].slices[0]
            sides = ["SXM_W", "SXM_E"] if first < m.mem_slices_per_hemisphere else \
                ["SXM_E", "SXM_W"]
            options = [([u], [f"{u}.0"]) for u in sides]
        else:
            # the first VXM queue is left to unpacks (weight decode feeds the MXM planes)
            queues = self.vxm_queues[1:] or self.vxm_queues
            options = [(["VXM"] * len(queues), queues)]
        base = dur
        best = None
        for units, queues in options:
            got = self._macro_slot(units, queues, bufs_r, bufs_w, reads, base, earliest)
            if best is None or got[0] + got[1] < best[0] + best[1]:
                best = got
        c, dur, unit, queue, holds, spans = best
        self.t.q_take(queue, c, dur)
        for q, a, b in spans:
            self.t.q_take(q, c + a, b - a)
        for h in holds:
            self.t.rect_take(h["dir"], h["stream"], h["p0"], h["p1"], h["t0"], h["t1"])
        srcs = sorted({w for b in reads for w in self.writers.get(b, [])})
        alu = 0 if unit_kind == "SXM" else costs.macro_alu_cycles(m, elements, passes)
        ins = self.emit(unit=unit, queue=queue, cycle=c, cycles=dur, alu_cycles=alu, **fields,
                        reads=[b for b in reads], writes=list(writes), srcs=srcs,
                        holds=[{k: h[k] for k in ("stream", "dir", "slice", "t0", "t1")}
                               for h in holds])
        for b in reads + list(writes):
            self.touch(b, c + dur)
        for b in writes:
            self.writers.setdefault(b, []).append(ins["id"])
            self.ready[b] = max(self.ready.get(b, 0), c + dur)
        return ins

    # -- the int8 matmul ---------------------------------------------------------------------

    def install_block(self, tile: dict, plane: str, bf: int, row: int, block: int,
                      earliest: int, tag: str) -> int:
        """Read 7 packed byte vectors, unpack to 16 level vectors, install 16 rows."""
        m = self.m
        pay: Buf = tile["payload"]
        places = [pay.place(7 * block + j) for j in range(7)]
        ppos = [self.pos(slice_name(m, s)) for s, _ in places]
        pv, pp = self.pos_vxm, self.pos(plane_unit(plane))
        hop_out = abs(pp - pv)
        iwq = f"{plane}.iw"
        u = max(earliest, self.rl + max(abs(p - pv) for p in ppos))
        while True:
            i_cycle = u + self.ul + hop_out
            if not self.t.q_free(iwq, i_cycle):
                u = self.t.q_next(iwq, i_cycle) - self.ul - hop_out
                continue
            ok = True
            reads = []
            for j, ((s, a), p) in enumerate(zip(places, ppos)):
                r = u - self.rl - abs(p - pv)
                q = f"{slice_name(m, s)}.r"
                if not self.t.q_free(q, r) or not self.mem_ok(s, r, "r", a):
                    ok = False
                    break
                reads.append(r)
            if not ok:
                u += 1
                continue
            vq = next((q for q in self.vxm_queues[self.unpack_rr % len(self.vxm_queues):]
                       + self.vxm_queues if self.t.q_free(q, u)), None)
            if vq is None:
                u += 1
                continue
            in_streams = []
            for j, p in enumerate(ppos):
                d = self.direction(p, pv)
                got = self.free_streams(1, d, p, pv, reads[j] + self.rl,
                                        avoid=[x for dd, x in in_streams if dd == d])
                if got is None:
                    ok = False
                    break
                in_streams.append((d, got[0]))
            if not ok:
                u += 1
                continue
            dout = self.direction(pv, pp)
            outs = self.free_streams(16, dout, pv, pp, u + self.ul)
            if outs is None:
                u += 1
                continue
            break
        self.unpack_rr += 1
        ids = []
        for j, ((s, a), r) in enumerate(zip(places, reads)):
            d, sid = in_streams[j]
            self.t.q_take(f"{slice_name(m, s)}.r", r)
            self.t.banks[(s, r, "r")] = self.bank(a)
            self.t.path_take(d, sid, ppos[j], pv, r + self.rl)
            ids.append(self.emit(unit=slice_name(m, s), queue=f"{slice_name(m, s)}.r",
                                 cycle=r, cycles=1, op="read", buf=pay.name, addr=a,
                                 src=-1, out=[{"stream": sid, "dir": d, "dtype": "i8"}])["id"])
        self.t.q_take(vq, u)
        for sid in outs:
            self.t.path_take(dout, sid, pv, pp, u + self.ul)
        un = self.emit(unit="VXM", queue=vq, cycle=u, cycles=1, op="unpack",
                       **{"in": [{"stream": in_streams[j][1], "dir": in_streams[j][0],
                                  "dtype": "i8", "src": ids[j], "src_out": 0}
                                 for j in range(7)]},
                       out=[{"stream": s, "dir": dout, "dtype": "i8"} for s in outs])
        self.t.q_take(iwq, i_cycle)
        self.emit(unit=plane, queue=iwq, cycle=i_cycle, cycles=1, op="install", buffer=bf,
                  row=row, tag=tag,
                  **{"in": [{"stream": s, "dir": dout, "dtype": "i8", "src": un["id"],
                             "src_out": k} for k, s in enumerate(outs)]})
        self.touch(pay.name, max(reads) + 1)
        return i_cycle

    def matmul_pass(self, node: MatmulNode, tile: dict, plane: str, bf: int, mrow: int,
                    chunk: int, gi: int, earliest: int, tag: str) -> int:
        m = self.m
        qb = self.g.buffers[node.q]
        nch = -(-node.tensor.shape[0] // node.chunk)
        v = mrow * nch + chunk
        s, a = qb.place(v)
        ps = self.pos(slice_name(m, s))
        pp = self.pos(plane_unit(plane))
        accq = f"{plane}.acc"
        part: Buf = tile["partials"][chunk]
        gpc = node.chunk // node.tensor.group_size
        prow = mrow * (part.shape[0] // node.rows) + gi - chunk * gpc
        wplaces = [part.place(4 * prow + j) for j in range(4)]
        wpos = [self.pos(slice_name(m, x)) for x, _ in wplaces]
        hop_in = abs(pp - ps)
        c = max(earliest, self.rl + hop_in, self.ready[node.q] + self.rl + hop_in)
        din = self.direction(ps, pp)
        while True:
            if not self.t.q_free(accq, c):
                c = self.t.q_next(accq, c)
                continue
            r = c - hop_in - self.rl
            rq = f"{slice_name(m, s)}.r"
            if not self.t.q_free(rq, r) or not self.mem_ok(s, r, "r", a):
                c += 1
                continue
            sin = self.free_streams(1, din, ps, pp, r + self.rl)
            if sin is None:
                c += 1
                continue
            ok = True
            writes = []
            for (x, wa), wp in zip(wplaces, wpos):
                w = c + self.ml + abs(wp - pp)
                q = f"{slice_name(m, x)}.w"
                if not self.t.q_free(q, w) or not self.mem_ok(x, w, "w", wa):
                    ok = False
                    break
                writes.append(w)
            if not ok:
                c += 1
                continue
            # the int32 result: a group of 4 streams from the plane towards the partials
            far = max(wpos, key=lambda p: abs(p - pp))
            dout = self.direction(pp, far)
            if any(self.direction(pp, p) != dout for p in wpos):
                raise Q35cError("groq target: partial buffer spans both hemispheres")
            sout = self.free_streams(4, dout, pp, far, c + self.ml, group=4)
            if sout is None:
                c += 1
                continue
            break
        self.t.q_take(rq, r)
        self.t.banks[(s, r, "r")] = self.bank(a)
        self.t.path_take(din, sin[0], ps, pp, r + self.rl)
        rd = self.emit(unit=slice_name(m, s), queue=rq, cycle=r, cycles=1, op="read",
                       buf=qb.name, addr=a, src=self._writer(qb.name),
                       out=[{"stream": sin[0], "dir": din, "dtype": "i8"}])
        self.t.q_take(accq, c)
        for j, sid in enumerate(sout):
            # byte plane j goes to slice j of the group; the stream is held to that slice
            self.t.path_take(dout, sid, pp, wpos[j], c + self.ml)
        lo = gi % (node.chunk // node.tensor.group_size) * node.tensor.group_size
        ps_ = self.emit(unit=plane, queue=accq, cycle=c, cycles=1, op="matmul_pass",
                        buffer=bf, rows=[lo, lo + node.tensor.group_size], tag=tag,
                        **{"in": [{"stream": sin[0], "dir": din, "dtype": "i8",
                                   "src": rd["id"], "src_out": 0}]},
                        out=[{"stream": sid, "dir": dout, "dtype": "i32", "group": 4,
                              "lane": j} for j, sid in enumerate(sout)])
        for j, ((x, wa), w) in enumerate(zip(wplaces, writes)):
            q = f"{slice_name(m, x)}.w"
            self.t.q_take(q, w)
            self.t.banks[(x, w, "w")] = self.bank(wa)
            wi = self.emit(unit=slice_name(m, x), queue=q, cycle=w, cycles=1, op="write",
                           buf=part.name, addr=wa,
                           **{"in": [{"stream": sout[j], "dir": dout, "dtype": "i32",
                                      "group": 4, "lane": j, "src": ps_["id"],
                                      "src_out": j}]})
            self.writers.setdefault(part.name, []).append(wi["id"])
            self.ready[part.name] = max(self.ready.get(part.name, 0), w + self.wl)
        self.touch(qb.name, r + 1)
        self.touch(part.name, max(writes) + self.wl)
        return c

    def _writer(self, buf: str) -> int:
        w = self.writers.get(buf, [])
        if len(w) != 1:
            return -1 if not w else w[-1]
        return w[0]

    def schedule_matmul(self, node: MatmulNode) -> dict:
        w = node.tensor
        tiles = self.tiles[node.index]
        q_ready = max(self.ready[node.q], self.ready[node.scale])
        ends = []
        first_issue = None
        G, g = w.num_groups, w.group_size
        gpc = node.chunk // g
        nch = -(-G * g // node.chunk)
        mxm_passes = installs = 0
        sx = self.sx[node.index]
        for tile in tiles:
            plane = tile["plane"]
            pending: list[int] = []
            for c in range(nch):
                partials: Buf = tile["partials"][c]
                pass_end = self.war_ready(partials.name)
                last_pass = 0
                bf = self.buf_next.get(plane, 0)
                self.buf_next[plane] = (bf + 1) % self.nbuf
                tag = f"{node.weight}:t{tile['t']}:c{c}"
                b0, b1 = c * node.chunk // 16, min(G * g, (c + 1) * node.chunk) // 16
                earliest = self.buf_free.get((plane, bf), 0)
                done = 0
                for blk in range(b0, b1):
                    ic = self.install_block(tile, plane, bf, 16 * (blk - b0), blk, earliest,
                                            tag)
                    installs += 1
                    done = max(done, ic + 1)
                    earliest = ic - self.ul - abs(self.pos(plane_unit(plane)) - self.pos_vxm)
                    first_issue = ic if first_issue is None else min(first_issue, ic)
                groups = range(c * gpc, min(G, (c + 1) * gpc))
                start = max(done, pass_end)
                for mrow in range(node.rows):
                    for gi in groups:
                        pc = self.matmul_pass(node, tile, plane, bf, mrow, c, gi, start, tag)
                        mxm_passes += 1
                        last_pass = max(last_pass, pc)
                self.buf_free[(plane, bf)] = last_pass + 1
                if sx not in self.ready:  # after the passes: they need q's MEM ports first
                    self.schedule_macro("VXM", "vxm", [node.q], [sx], node.rows * G * g, 1, 0,
                                        dict(op="group_sums", group=g, k=w.shape[0]))
                # the ordered float32 rescale of the groups of the last `rescale_chunks`
                # chunks for the tile's 320 columns, added to the running sum in group
                # order; scales and offsets are decoded lane-locally from the packed group
                # codes and column words on the way (ALU ops per lane: 5 per row and group,
                # 9 per group)
                pending.append(c)
                last = c == nch - 1
                if len(pending) < self.rescale_chunks and not last:
                    continue
                first = pending[0] == 0
                g0 = pending[0] * gpc
                g1 = min(G, (c + 1) * gpc)
                ng = g1 - g0
                parts = [tile["partials"][x].name for x in pending]
                pending = []
                reads = parts + [tile["meta"].name, tile["words"].name, sx]
                if not first:
                    reads.append(tile["yacc"].name)
                if last:
                    reads.append(node.scale)
                result = node.out if last else tile["yacc"].name
                rs = self.schedule_macro(
                    "VXM", "vxm", reads, [result], costs.rescale_elements(node.rows, ng, self.L), 1,
                    0, dict(op="rescale", tile=tile["t"], cols=list(tile["cols"]), group=g,
                            groups=G, g0=g0, g1=g1, first=first, last=last,
                            k=w.shape[0], partials=parts, meta=tile["meta"].name,
                            words=tile["words"].name, sx=sx,
                            acc=None if first else tile["yacc"].name,
                            row_scale=node.scale if last else None, result=result))
            ends.append(rs["cycle"] + rs["cycles"])
        return dict(op_index=node.index, weight=node.weight, shape=list(w.shape), group=g,
                    rows=node.rows, tiles=len(tiles), mxm_passes=mxm_passes,
                    installs=installs, input_ready=q_ready, end=max(ends),
                    last_rescale_groups=G - (nch - 1) * gpc,
                    first_install=first_issue, packed_bytes=sum(
                        t["payload"].packed_bytes for t in tiles))

    def schedule_node(self, node) -> None:
        if isinstance(node, MatmulNode):
            self.p.deps.append(dict(reads=[node.q, node.scale], writes=[node.out],
                                    layer=len(self.p.layers)))
            self.p.layers.append(self.schedule_matmul(node))
            return
        fields = dict(op="macro", ir_op=node.index, ir_name=node.op.name)
        ins = self.schedule_macro(node.unit, node.kind, node.inputs, node.outputs,
                                  node.elements, node.passes, 0, fields)
        self.p.deps.append(dict(reads=list(node.inputs), writes=list(node.outputs),
                                cycles=ins["cycles"]))

    def finish(self) -> Program:
        self.p.buffers = self.g.buffers
        self.p.cycles = max([i["cycle"] + i["cycles"] for i in self.p.instructions] + [0])
        # an output still being written: wait for its last write to land
        for ins in self.p.instructions:
            if ins["op"] == "write":
                self.p.cycles = max(self.p.cycles, ins["cycle"] + self.wl)
        return self.p

    def run(self) -> Program:
        self.place()
        for node in self.g.nodes:
            self.schedule_node(node)
        return self.finish()


# -- several chips -------------------------------------------------------------------------


def _weight_vectors(node, m: Machine) -> int:
    """MEM vectors a node's packed weights take (0 for macros)."""
    if not isinstance(node, MatmulNode):
        return 0
    w = node.tensor
    G = w.num_groups
    tiles = -(-w.shape[1] // m.lanes)
    return tiles * (7 * (G * w.group_size // 16) + 7 * -(-G // 8) + 3)


def partition(graph: Graph, m: Machine, chips: int) -> None:
    """Contiguous ranges of nodes (a pipeline across layers), balanced by weight size."""
    sizes = [_weight_vectors(n, m) for n in graph.nodes]
    total = max(1, sum(sizes))
    acc = 0
    for node, size in zip(graph.nodes, sizes):
        node.chip = min(chips - 1, acc * chips // total)
        acc += size


def _reads(node) -> list[str]:
    return [node.q, node.scale] if isinstance(node, MatmulNode) else list(node.inputs)


def _copy_cross_chip(graph: Graph) -> list[tuple[str, str, int]]:
    """Give every node on chip b a copy of each operand that lives on another chip.
    Inputs and constants are copied in the initial image (the host loads every chip);
    intermediate results travel over C2C: returns (source, copy, destination chip)."""
    owner: dict[str, int] = {}
    for node in graph.nodes:
        for w in ([node.out] if isinstance(node, MatmulNode) else node.outputs):
            owner[w] = node.chip
    transfers: list[tuple[str, str, int]] = []
    copies: dict[tuple[str, int], str] = {}
    for node in graph.nodes:
        renamed = {}
        for r in _reads(node):
            b = graph.buffers[r]
            home = owner.get(r, 0)
            if b.kind == "virtual" or home == node.chip and b.kind == "temp":
                continue
            if b.kind in ("input", "const") and node.chip == 0:
                continue
            key = (r, node.chip)
            if key not in copies:
                name = f"{r}@{node.chip}"
                c = Buf(name, b.shape, b.dtype, b.layout, b.kind, b.value)
                c.used, c.chip = True, node.chip
                c.order = b.order if b.kind != "temp" else (b.order[0], b.order[1])
                graph.buffers[name] = c
                copies[key] = name
                if b.kind == "temp":
                    transfers.append((r, name, node.chip))
            renamed[r] = copies[key]
        if renamed:
            if isinstance(node, MatmulNode):
                node.q = renamed.get(node.q, node.q)
                node.scale = renamed.get(node.scale, node.scale)
            else:
                node.inputs = [renamed.get(x, x) for x in node.inputs]
    for name, b in graph.buffers.items():
        if b.kind in ("input", "const") and "@" not in name:
            b.chip = 0
    return transfers


def schedule_chips(graph: Graph, m: Machine, chips: int,
                   assign: dict[int, int] | None = None) -> Program:
    """`assign`: IR op index -> chip of every node (GroqTarget takes it from the multi-chip
    planner, targets/groq/plan.py); None: `partition` by weight size."""
    if assign is None:
        partition(graph, m, chips)
    else:
        for node in graph.nodes:
            node.chip = assign[node.index]
    transfers = _copy_cross_chip(graph)
    # temps live on the chip of the node that writes them
    for node in graph.nodes:
        for w in ([node.out] if isinstance(node, MatmulNode) else node.outputs):
            graph.buffers[w].chip = node.chip
    first = Scheduler(graph, m, 0)
    scheds = [first] + [Scheduler(graph, m, c, first) for c in range(1, chips)]
    for s in scheds:
        s.place()
    pending = {copy: (src, dst) for src, copy, dst in transfers}
    lat = int(m.param("c2c_latency_cycles"))
    per_cycle = m.c2c_link_bytes_per_s / m.clock_hz
    for node in graph.nodes:
        for r in _reads(node):
            if r in pending:
                src, dst = pending.pop(r)
                _transfer(scheds, graph, m, src, r, dst, lat, per_cycle)
        scheds[node.chip].schedule_node(node)
    prog = first.finish()
    prog.chips = chips
    return prog


def _transfer(scheds, graph, m, src: str, copy: str, dst: int, lat: int, per_cycle: float):
    """C2C Send of buffer `src` on its chip, Receive into `copy` on chip `dst`, `lat` cycles
    later; each holds one link of its chip for the vectors' time on the wire."""
    a, b = graph.buffers[src], graph.buffers[copy]
    sa, sb = scheds[a.chip], scheds[dst]
    d = max(1, int(-(-a.nvec * m.lanes // per_cycle)))
    la, lb = f"C2C.{dst % m.c2c_links}", f"C2C.{a.chip % m.c2c_links}"
    spans_a = macro_mem_spans(m, [a], [], 0, d)
    spans_b = macro_mem_spans(m, [], [b], 0, d)
    s = max(sa.ready[src], sb.war_ready(copy) - lat)
    while True:
        busy = [(sa.t, la, 0, d)] + [(sa.t, q, x, y - x) for q, x, y in spans_a] + \
            [(sb.t, lb, lat, d)] + [(sb.t, q, lat + x, y - x) for q, x, y in spans_b]
        if all(t.q_free(q, s + off, n) for t, q, off, n in busy):
            break
        s += 1
    for t, q, off, n in busy:
        t.q_take(q, s + off, n)
    send = sa.emit(unit="C2C", queue=la, cycle=s, cycles=d, op="send", link=dst % m.c2c_links,
                   to=dst, reads=[src], writes=[], srcs=sorted(sa.writers.get(src, [])),
                   holds=[], alu_cycles=0)
    recv = sb.emit(unit="C2C", queue=lb, cycle=s + lat, cycles=d, op="receive",
                   link=a.chip % m.c2c_links, src=send["id"], reads=[], writes=[copy],
                   srcs=[], holds=[], alu_cycles=0, **{"from": a.chip})
    send["peer"] = recv["id"]
    sa.p.deps.append(dict(reads=[src], writes=[copy], cycles=lat + d))
    sa.touch(src, s + d)
    sb.touch(copy, s + lat + d)
    sb.writers[copy] = [recv["id"]]
    sb.ready[copy] = s + lat + d


def schedule(graph: Graph, m: Machine, chips: int = 1,
             assign: dict[int, int] | None = None) -> Program:
    if chips <= 1:
        return Scheduler(graph, m).run()
    return schedule_chips(graph, m, chips, assign)
