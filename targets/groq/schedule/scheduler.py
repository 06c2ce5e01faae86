"""List scheduling of one chip: nodes in op order, each instruction at the earliest cycle
where its queue, MEM banks and streams are free (`reservations.py`).

A graph op becomes one macro instruction on the VXM (or an SXM); a Q3P5 matmul becomes, per
column tile and K chunk, MEM reads of the packed weights, VXM unpacks (with int8 levels: MEM
reads of the levels straight to the plane), MXM installs into one of the plane's weight
buffers, one masked MXM pass per activation row and group writing int32
partials, the activation group sums (once per activations) and a float32 rescale macro per
span of chunks (`cost.rescale_chunk_spans`); the tiles go in waves of one per plane,
chunk by chunk (`schedule_matmul`, `_wave_chunk`; docs/groq.md, "The int8 matmul").

Everything iterates in list order (no dict/set-order dependence), so output is
deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from q35c.compiler.diagnostics import Q35cError
from q35c.targets.groq import cost as costs
from q35c.targets.groq.cost import INSTALL_BLOCK_ROWS
from q35c.targets.groq.instructions import (
    GroupSums,
    Install,
    Instruction,
    Macro,
    MatmulPass,
    Read,
    Rescale,
    StreamHold,
    StreamValue,
    Unpack,
    Write,
)
from q35c.targets.groq.lower import Buf, Graph, MacroNode, MatmulNode
from q35c.targets.groq.machine import INT32_STREAMS, Machine
from q35c.targets.groq.schedule.placement import Placer, WeightTile
from q35c.targets.groq.schedule.reservations import (
    HeldStream,
    ReservationTables,
    column_vectors,
    macro_mem_spans,
    macro_queue_window,
    macro_travel,
    read_addresses,
)


@dataclass
class Program:
    """A scheduled program: its instructions (ids are list indices), the buffers with
    their placement, inputs/outputs (argument name, buffer, shape), one entry per matmul
    layer (for the report) and per node (`deps`: buffers read and written)."""

    machine: Machine
    instructions: list[Instruction] = field(default_factory=list)
    buffers: dict[str, Buf] = field(default_factory=dict)
    inputs: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)
    outputs: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)
    cycles: int = 0
    weight_packed_bytes: int = 0
    deps: list[dict] = field(default_factory=list)  # per node: reads, writes, cycles/layer
    chips: int = 1


def direction(p0: int, p1: int) -> str:
    """The direction of a stream from position p0 to p1."""
    return "E" if p1 >= p0 else "W"


@dataclass
class MacroSlot:
    """Where a macro fits: issue cycle, duration, unit and queue, the streams it holds (with
    their rectangles) and the MEM queue spans (offsets from the issue cycle)."""

    cycle: int
    duration: int
    unit: str
    queue: str
    holds: list[tuple[StreamHold, HeldStream]]
    mem_spans: list[tuple[str, int, int]]
    window: tuple[int, int]
    """The cycles it holds its queue: (offset from `cycle`, count), `macro_queue_window`."""

    @property
    def end(self) -> int:
        return self.cycle + self.duration


@dataclass
class _MatmulRun:
    """The running totals of one matmul's scheduling (for its layer entry)."""

    node: MatmulNode
    sums: str
    input_ready: int
    ends: list[int] = field(default_factory=list)
    first_install: int | None = None
    mxm_passes: int = 0
    installs: int = 0


class Scheduler:
    """Schedules the nodes of one chip; the schedulers of a multi-chip program share the
    program, the buffer readiness and the writer tables (buffer names are unique)."""

    def __init__(self, graph: Graph, m: Machine, chip: int = 0,
                 shared: Scheduler | None = None):
        self.graph, self.m, self.chip = graph, m, chip
        self.tables = ReservationTables(m)
        self.program = shared.program if shared else Program(m)
        self.lanes = m.lanes
        self.read_latency = int(m.param("mem_read_latency"))
        self.write_latency = int(m.param("mem_write_latency"))
        self.unpack_latency = int(m.param("vxm_unpack_latency"))
        self.mxm_latency = int(m.param("mxm_latency"))
        self.weight_buffers = int(m.param("mxm_weight_buffers"))
        self.vxm_queues = [f"VXM.{i}" for i in range(int(m.param("vxm_queues")))]
        self.vxm_position = m.position("VXM")
        # buffer -> cycle its contents are complete, its writers, its last access, the
        # buffers whose memory it reuses (shared by all chips)
        self.ready: dict[str, int] = shared.ready if shared else {}
        self.writers: dict[str, list[int]] = shared.writers if shared else {}
        self.last_access: dict[str, int] = shared.last_access if shared else {}
        self.reuses: dict[str, list[str]] = shared.reuses if shared else {}
        self.weight_buffer_free: dict[tuple[str, int], int] = {}  # (plane, buffer) -> cycle
        self.next_weight_buffer: dict[str, int] = {}
        self.next_unpack_queue = 0
        # (activation buffer, vector, plane position, pass cycle) -> the read that delivers
        # that vector there then: passes of the planes at one MXM edge share it
        self.pass_reads: dict[tuple[str, int, int, int], Read] = {}
        self.tiles: dict[int, list[WeightTile]] = {}
        self.group_sums: dict[int, str] = {}

    # -- placement -------------------------------------------------------------------------

    def place(self) -> None:
        placement = Placer(self.graph, self.m, self.chip).run()
        self.tiles, self.group_sums = placement.tiles, placement.group_sums
        self.program.weight_packed_bytes += placement.packed_bytes
        self.reuses.update(placement.reuses)
        for name in placement.initially_ready:
            self.ready[name] = 0

    # -- helpers ---------------------------------------------------------------------------

    def emit(self, cls: type[Instruction], **fields) -> Instruction:
        ins = cls(id=len(self.program.instructions), chip=self.chip, **fields)
        self.program.instructions.append(ins)
        return ins

    def pos(self, unit: str) -> int:
        return self.m.position(unit)

    def slice_pos(self, mem_slice: int) -> int:
        return self.m.position(self.m.slice_name(mem_slice))

    def free_streams(self, count: int, way: str, p0: int, p1: int, t0: int,
                     group: int = 1, avoid=()) -> list[int] | None:
        """`count` streams (or one group of `group` consecutive ones) on which values can
        travel from p0 to p1 leaving at t0; None if there are not enough."""
        got: list[int] = []
        if group == 1:
            for s in range(self.m.streams_per_direction):
                if s not in avoid and self.tables.path_free(way, s, p0, p1, t0):
                    got.append(s)
                    if len(got) == count:
                        return got
            return None
        for first in range(0, self.m.streams_per_direction, group):
            ids = list(range(first, first + group))
            if any(s in avoid for s in ids):
                continue
            if all(self.tables.path_free(way, s, p0, p1, t0) for s in ids):
                return ids
        return None

    def touch(self, buf: str, end: int) -> None:
        self.last_access[buf] = max(self.last_access.get(buf, 0), end)

    def reuse_ready(self, buf: str) -> int:
        """The cycle after which `buf` may be written: the last access of every buffer whose
        memory it reuses."""
        return max([self.last_access.get(o, 0) for o in self.reuses.get(buf, [])] + [0])

    def last_writer(self, buf: str) -> int:
        """The instruction whose data a read of `buf` returns (-1: the initial image)."""
        writers = self.writers.get(buf, [])
        return writers[-1] if writers else -1

    def wrote(self, buf: str, ins: int, done: int) -> None:
        self.writers.setdefault(buf, []).append(ins)
        self.ready[buf] = max(self.ready.get(buf, 0), done)

    # -- macros ----------------------------------------------------------------------------

    def _macro_slot(self, units: list[str], queues: list[str], reads: list[Buf],
                    writes: list[Buf], read_names: list[str], base: int, earliest: int,
                    cols: tuple[int, int] | None = None) -> MacroSlot:
        """The earliest slot of a macro of `base` cycles plus its stream travel on one of
        `queues` (of `units`); `cols`: see `macro_mem_spans`."""
        m, tables = self.m, self.tables
        travel = macro_travel(m, units[0], reads, writes, cols)
        duration = base + sum(travel)
        w0, w1 = macro_queue_window(duration, travel)
        c = earliest
        for b in writes:
            c = max(c, self.reuse_ready(b.name))
        for name in read_names:
            c = max(c, self.ready[name])
        spans = macro_mem_spans(m, reads, writes, 0, duration, cols)
        while True:
            # the MEM slices' queues (while the macro streams its operands in / results out)
            later = c
            for q, a, b in spans:
                later = max(later, tables.queue_next_free(q, later + a, b - a) - a)
            if later != c:
                c = later
                continue
            if any(not tables.queue_free(q, c + a, b - a) for q, a, b in spans):
                c += 1
                continue
            choice = next((i for i, q in enumerate(queues)
                           if tables.queue_free(q, c + w0, w1)), None)
            if choice is None:
                c += 1
                continue
            unit, queue = units[choice], queues[choice]
            unit_pos = self.pos(unit)
            holds = self._macro_holds(spans, c, unit_pos)
            if holds is None:
                c += 1
                continue
            return MacroSlot(c, duration, unit, queue, holds, spans, (w0, w1))

    def _macro_holds(self, spans: list[tuple[str, int, int]], c: int, unit_pos: int
                     ) -> list[tuple[StreamHold, HeldStream]] | None:
        """One stream per MEM span between the slice and the unit, free for the span (plus
        the travel); None if some span finds none."""
        holds = []
        used: dict[str, set[int]] = {"E": set(), "W": set()}
        for q, a, b in spans:
            slice_unit = q.split(".")[0]
            slice_pos = self.pos(slice_unit)
            towards_unit = q.endswith(".r")
            way = direction(slice_pos, unit_pos) if towards_unit else \
                direction(unit_pos, slice_pos)
            lo, hi = min(slice_pos, unit_pos), max(slice_pos, unit_pos)
            t0, t1 = (c + a, c + b + hi - lo) if towards_unit else (c + a - (hi - lo), c + b)
            rect = HeldStream(lo, hi, t0, t1)
            stream = next((i for i in range(self.m.streams_per_direction)
                           if i not in used[way] and self.tables.hold_free(way, i, rect)), None)
            if stream is None:
                return None
            used[way].add(stream)
            holds.append((StreamHold(stream, way, slice_unit, t0, t1), rect))
        return holds

    def schedule_macro(self, unit_kind: str, kind: str, read_names: list[str],
                       write_names: list[str], elements: int, passes: int,
                       make: type[Instruction], **fields) -> Instruction:
        """A macro instruction of class `make` (Macro, GroupSums, Rescale) with `fields`. A
        matmul's last rescale of one column tile writes only that tile's columns of the
        result (`macro_mem_spans`'s `cols`): its io and MEM holds count those vectors, not
        the whole result (SmolLM2's 154-tile LM head: every rescale held the whole
        [1, 49152] result's write queues, 77 cycles, one after the other)."""
        m = self.m
        reads = [self.graph.buffers[b] for b in read_names
                 if self.graph.buffers[b].kind != "virtual"]
        writes = [self.graph.buffers[b] for b in write_names]
        cols = fields["cols"] if make is Rescale and fields.get("last") else None
        io = max([read_addresses(b, writes) for b in reads]
                 + [max(column_vectors(b, cols, m.lanes).values()) if cols
                    and b.layout == "flat" else -(-b.nvec // len(b.slices)) for b in writes]
                 + [1])
        base = costs.macro_cycles(m, kind, elements, passes, io)
        if unit_kind == "SXM":
            # either SXM (the one whose result lands first; ties: the one on the hemisphere
            # of the first operand)
            first = (reads or writes)[0].slices[0]
            sides = ["SXM_W", "SXM_E"] if first < m.mem_slices_per_hemisphere else \
                ["SXM_E", "SXM_W"]
            options = [([u], [f"{u}.0"]) for u in sides]
        else:
            # the first VXM queue is left to unpacks (weight decode feeds the MXM planes);
            # with int8 levels there are none
            queues = self.vxm_queues if self.m.int8_levels else \
                self.vxm_queues[1:] or self.vxm_queues
            options = [(["VXM"] * len(queues), queues)]
        best: MacroSlot | None = None
        for units, queues in options:
            slot = self._macro_slot(units, queues, reads, writes, read_names, base, 0, cols)
            if best is None or slot.end < best.end:
                best = slot
        assert best is not None
        c, duration = best.cycle, best.duration
        self.tables.take_queue(best.queue, c + best.window[0], best.window[1])
        for q, a, b in best.mem_spans:
            self.tables.take_queue(q, c + a, b - a)
        for hold, rect in best.holds:
            self.tables.take_hold(hold.direction, hold.stream, rect)
        srcs = sorted({w for b in read_names for w in self.writers.get(b, [])})
        alu = 0 if unit_kind == "SXM" else costs.macro_alu_cycles(m, elements, passes)
        ins = self.emit(make, unit=best.unit, queue=best.queue, cycle=c, cycles=duration,
                        alu_cycles=alu, reads=tuple(read_names), writes=tuple(write_names),
                        srcs=tuple(srcs), holds=tuple(h for h, _ in best.holds), **fields)
        for b in read_names + write_names:
            self.touch(b, c + duration)
        for b in write_names:
            self.wrote(b, ins.id, c + duration)
        return ins

    # -- the int8 matmul -------------------------------------------------------------------

    def install_block(self, payload: Buf, plane: str, weight_buffer: int, row: int,
                      block: int, earliest: int, tag: str) -> int:
        """Read the 7 packed byte vectors of install block `block` of `payload`, unpack them
        to 16 level vectors on the VXM, install them as rows row..row+15 of the plane's
        weight buffer. Returns the install's cycle."""
        m, tables = self.m, self.tables
        places = [payload.place(costs.BLOCK_BYTES * block + j)
                  for j in range(costs.BLOCK_BYTES)]
        read_pos = [self.slice_pos(s) for s, _ in places]
        vxm, plane_pos = self.vxm_position, self.pos(m.plane_unit(plane))
        hops_out = abs(plane_pos - vxm)
        install_queue = f"{plane}.iw"
        unpack = max(earliest, self.read_latency + max(abs(p - vxm) for p in read_pos))
        while True:
            install = unpack + self.unpack_latency + hops_out
            if not tables.queue_free(install_queue, install):
                unpack = tables.queue_next_free(install_queue, install) \
                    - self.unpack_latency - hops_out
                continue
            slot = self._unpack_slot(places, read_pos, plane_pos, unpack)
            if slot is not None:
                break
            unpack += 1
        read_cycles, vxm_queue, in_streams, way_out, outs = slot
        self.next_unpack_queue += 1
        reads = []
        for (s, a), r, p, (way, stream) in zip(places, read_cycles, read_pos, in_streams):
            queue = f"{m.slice_name(s)}.r"
            tables.take_queue(queue, r)
            tables.take_bank(s, r, "r", a)
            tables.take_path(way, stream, p, vxm, r + self.read_latency)
            reads.append(self.emit(Read, unit=m.slice_name(s), queue=queue, cycle=r, cycles=1,
                                   buf=payload.name, addr=a, src=-1,
                                   out=(StreamValue(stream, way, "i8"),)))
        tables.take_queue(vxm_queue, unpack)
        for stream in outs:
            tables.take_path(way_out, stream, vxm, plane_pos, unpack + self.unpack_latency)
        levels = tuple(StreamValue(s, way_out, "i8") for s in outs)
        un = self.emit(Unpack, unit="VXM", queue=vxm_queue, cycle=unpack, cycles=1,
                       in_=tuple(rd.out[0].consumed_by(rd.id, 0) for rd in reads), out=levels)
        tables.take_queue(install_queue, install)
        self.emit(Install, unit=plane, queue=install_queue, cycle=install, cycles=1,
                  buffer=weight_buffer, row=row, tag=tag,
                  in_=tuple(v.consumed_by(un.id, k) for k, v in enumerate(levels)))
        self.touch(payload.name, max(read_cycles) + 1)
        return install

    def install_levels(self, payload: Buf, plane: str, weight_buffer: int, row: int,
                       first: int, count: int, earliest: int, tag: str) -> tuple[int, int]:
        """Int8 levels (`Machine.int8_levels`): read level rows `first .. first+count-1`
        of `payload` (at most 16, consecutive K rows: one per slice of the tile's slice
        group) so that they reach the plane together, and install them as rows row.. of
        its weight buffer, with no VXM on the way. Where fewer streams into the plane's
        MXM edge are free than rows (the other plane of the edge installs 16 in the cycle
        and a pass takes one), the install takes the rows that fit, at least one, and
        the caller installs the rest later: the planes of an edge share its 32 streams
        rather than one of them losing the cycle. `earliest`: the install's earliest
        cycle. Returns (the install's cycle, the rows it installed)."""
        m, tables = self.m, self.tables
        places = [payload.place(first + j) for j in range(count)]
        read_pos = [self.slice_pos(s) for s, _ in places]
        plane_pos = self.pos(m.plane_unit(plane))
        install_queue = f"{plane}.iw"
        install = max(earliest, self.read_latency + max(abs(p - plane_pos) for p in read_pos))
        while True:
            if not tables.queue_free(install_queue, install):
                install = tables.queue_next_free(install_queue, install)
                continue
            slot = self._levels_slot(places, read_pos, plane_pos, install)
            if slot is not None:
                break
            install += 1
        read_cycles, streams = slot
        reads = []
        for (s, a), r, p, (way, stream) in zip(places, read_cycles, read_pos, streams):
            queue = f"{m.slice_name(s)}.r"
            tables.take_queue(queue, r)
            tables.take_bank(s, r, "r", a)
            tables.take_path(way, stream, p, plane_pos, r + self.read_latency)
            reads.append(self.emit(Read, unit=m.slice_name(s), queue=queue, cycle=r, cycles=1,
                                   buf=payload.name, addr=a, src=-1,
                                   out=(StreamValue(stream, way, "i8"),)))
        tables.take_queue(install_queue, install)
        self.emit(Install, unit=plane, queue=install_queue, cycle=install, cycles=1,
                  buffer=weight_buffer, row=row, tag=tag,
                  in_=tuple(rd.out[0].consumed_by(rd.id, 0) for rd in reads))
        self.touch(payload.name, max(read_cycles) + 1)
        return install, len(reads)

    def _levels_slot(self, places: list[tuple[int, int]], read_pos: list[int],
                     plane_pos: int, install: int
                     ) -> tuple[list[int], list[tuple[str, int]]] | None:
        """Reads of the longest prefix of the level rows at `places` that can reach the
        plane at `install`: (their cycles, their streams), or None if not even the first
        row can (a MEM port, bank or stream taken then)."""
        m, tables = self.m, self.tables
        read_cycles: list[int] = []
        streams: list[tuple[str, int]] = []
        for (s, a), p in zip(places, read_pos):
            r = install - self.read_latency - abs(p - plane_pos)
            if not tables.queue_free(f"{m.slice_name(s)}.r", r) or \
                    not tables.bank_free(s, r, "r", a):
                break
            way = direction(p, plane_pos)
            got = self.free_streams(1, way, p, plane_pos, r + self.read_latency,
                                    avoid=[x for w, x in streams if w == way])
            if got is None:
                break
            read_cycles.append(r)
            streams.append((way, got[0]))
        return (read_cycles, streams) if read_cycles else None

    def _unpack_slot(self, places: list[tuple[int, int]], read_pos: list[int],
                     plane_pos: int, unpack: int
                     ) -> tuple[list[int], str, list[tuple[str, int]], str, list[int]] | None:
        """An unpack at cycle `unpack`: (read cycles of the packed vectors, VXM queue, their
        streams to the VXM, direction and streams of the 16 levels to the plane), or None
        if a MEM port, bank, VXM queue or stream is taken then."""
        m, tables, vxm = self.m, self.tables, self.vxm_position
        read_cycles = []
        for (s, a), p in zip(places, read_pos):
            r = unpack - self.read_latency - abs(p - vxm)
            if not tables.queue_free(f"{m.slice_name(s)}.r", r) or \
                    not tables.bank_free(s, r, "r", a):
                return None
            read_cycles.append(r)
        start = self.next_unpack_queue % len(self.vxm_queues)
        vxm_queue = next((q for q in self.vxm_queues[start:] + self.vxm_queues
                          if tables.queue_free(q, unpack)), None)
        if vxm_queue is None:
            return None
        in_streams = self._unpack_inputs(read_pos, read_cycles)
        if in_streams is None:
            return None
        way_out = direction(vxm, plane_pos)
        outs = self.free_streams(INSTALL_BLOCK_ROWS, way_out, vxm, plane_pos,
                                 unpack + self.unpack_latency)
        if outs is None:
            return None
        return read_cycles, vxm_queue, in_streams, way_out, outs

    def _unpack_inputs(self, read_pos: list[int], read_cycles: list[int]
                       ) -> list[tuple[str, int]] | None:
        """A distinct stream per packed byte vector from its slice to the VXM."""
        streams: list[tuple[str, int]] = []
        for p, r in zip(read_pos, read_cycles):
            way = direction(p, self.vxm_position)
            got = self.free_streams(1, way, p, self.vxm_position, r + self.read_latency,
                                    avoid=[s for w, s in streams if w == way])
            if got is None:
                return None
            streams.append((way, got[0]))
        return streams

    def matmul_pass(self, node: MatmulNode, tile: WeightTile, plane: str, weight_buffer: int,
                    row: int, chunk: int, group: int, earliest: int, tag: str) -> int:
        """One masked MXM pass: activation row `row`, K chunk `chunk`, weight group `group`:
        read the activation vector, multiply on the plane, write the int32 result's 4 byte
        planes to the chunk's partials. A read that already brings the same vector to the
        plane's MXM edge in the pass's cycle (another plane's pass there) is shared: the
        value on the stream reaches both planes, so the pass takes no MEM port or stream
        of its own. Returns the pass's cycle."""
        m, tables = self.m, self.tables
        q = self.graph.buffers[node.q]
        chunks = -(-node.tensor.shape[0] // node.chunk)
        vector = row * chunks + chunk
        mem_slice, addr = q.place(vector)
        slice_pos = self.slice_pos(mem_slice)
        plane_pos = self.pos(m.plane_unit(plane))
        acc_queue = f"{plane}.acc"
        partials = tile.partials[chunk]
        groups_per_chunk = node.chunk // node.tensor.group_size
        partial_row = row * (partials.shape[0] // node.rows) + group - chunk * groups_per_chunk
        write_places = [partials.place(INT32_STREAMS * partial_row + j)
                        for j in range(INT32_STREAMS)]
        write_pos = [self.slice_pos(x) for x, _ in write_places]
        hops_in = abs(plane_pos - slice_pos)
        c = max(earliest, self.read_latency + hops_in,
                self.ready[node.q] + self.read_latency + hops_in)
        way_in = direction(slice_pos, plane_pos)
        read_queue = f"{m.slice_name(mem_slice)}.r"
        # the int32 result: a group of 4 streams from the plane to the partials
        farthest = max(write_pos, key=lambda p: abs(p - plane_pos))
        way_out = direction(plane_pos, farthest)
        if any(direction(plane_pos, p) != way_out for p in write_pos):
            raise Q35cError("groq target: partial buffer spans both hemispheres")
        while True:
            if not tables.queue_free(acc_queue, c):
                c = tables.queue_next_free(acc_queue, c)
                continue
            shared = self.pass_reads.get((q.name, vector, plane_pos, c))
            if shared is not None:
                slot = self._pass_out_slot(write_places, write_pos, plane_pos, way_out,
                                           farthest, c)
                if slot is not None:
                    break
            read = c - hops_in - self.read_latency
            slot = self._pass_slot(mem_slice, addr, read, way_in, slice_pos, plane_pos,
                                   write_places, write_pos, way_out, farthest, c)
            if slot is not None:
                shared = None
                break
            c += 1
        if shared is None:
            stream_in, writes, streams_out = slot
            tables.take_queue(read_queue, read)
            tables.take_bank(mem_slice, read, "r", addr)
            tables.take_path(way_in, stream_in[0], slice_pos, plane_pos,
                             read + self.read_latency)
            rd = self.emit(Read, unit=m.slice_name(mem_slice), queue=read_queue, cycle=read,
                           cycles=1, buf=q.name, addr=addr, src=self.last_writer(q.name),
                           out=(StreamValue(stream_in[0], way_in, "i8"),))
            self.pass_reads[(q.name, vector, plane_pos, c)] = rd
            self.touch(q.name, read + 1)
        else:
            rd = shared
            writes, streams_out = slot
        tables.take_queue(acc_queue, c)
        for j, stream in enumerate(streams_out):
            # byte plane j goes to slice j of the group; the stream is held to that slice
            tables.take_path(way_out, stream, plane_pos, write_pos[j], c + self.mxm_latency)
        lo = group % groups_per_chunk * node.tensor.group_size
        result = tuple(StreamValue(stream, way_out, "i32", INT32_STREAMS, j)
                       for j, stream in enumerate(streams_out))
        mp = self.emit(MatmulPass, unit=plane, queue=acc_queue, cycle=c, cycles=1,
                       buffer=weight_buffer, rows=(lo, lo + node.tensor.group_size), tag=tag,
                       in_=(rd.out[0].consumed_by(rd.id, 0),), out=result)
        for j, ((x, wa), w) in enumerate(zip(write_places, writes)):
            queue = f"{m.slice_name(x)}.w"
            tables.take_queue(queue, w)
            tables.take_bank(x, w, "w", wa)
            wr = self.emit(Write, unit=m.slice_name(x), queue=queue, cycle=w, cycles=1,
                           buf=partials.name, addr=wa, in_=(result[j].consumed_by(mp.id, j),))
            self.wrote(partials.name, wr.id, w + self.write_latency)
        self.touch(partials.name, max(writes) + self.write_latency)
        return c

    def _pass_slot(self, mem_slice: int, addr: int, read: int, way_in: str, slice_pos: int,
                   plane_pos: int, write_places: list[tuple[int, int]], write_pos: list[int],
                   way_out: str, farthest: int, c: int
                   ) -> tuple[list[int], list[int], list[int]] | None:
        """A pass at cycle `c` reading its activation vector at `read`: (its stream in, the
        write cycles of the result's byte planes, the result's stream group), or None if a
        MEM port, bank or stream is taken then."""
        if not self.tables.queue_free(f"{self.m.slice_name(mem_slice)}.r", read) or \
                not self.tables.bank_free(mem_slice, read, "r", addr):
            return None
        stream_in = self.free_streams(1, way_in, slice_pos, plane_pos, read + self.read_latency)
        if stream_in is None:
            return None
        out = self._pass_out_slot(write_places, write_pos, plane_pos, way_out, farthest, c)
        if out is None:
            return None
        return stream_in, *out

    def _pass_out_slot(self, write_places: list[tuple[int, int]], write_pos: list[int],
                       plane_pos: int, way_out: str, farthest: int, c: int
                       ) -> tuple[list[int], list[int]] | None:
        """The result of a pass at cycle `c`: (the write cycles of its byte planes, its
        stream group), or None if a MEM port, bank or stream is taken then."""
        writes = self._pass_writes(write_places, write_pos, plane_pos, c)
        if writes is None:
            return None
        streams_out = self.free_streams(INT32_STREAMS, way_out, plane_pos, farthest,
                                        c + self.mxm_latency, group=INT32_STREAMS)
        if streams_out is None:
            return None
        return writes, streams_out

    def _pass_writes(self, places: list[tuple[int, int]], positions: list[int],
                     plane_pos: int, c: int) -> list[int] | None:
        """The write cycles of a pass's int32 byte planes issued at `c`, None if a slice's
        write queue or bank is taken then."""
        writes = []
        for (x, addr), p in zip(places, positions):
            w = c + self.mxm_latency + abs(p - plane_pos)
            if not self.tables.queue_free(f"{self.m.slice_name(x)}.w", w) or \
                    not self.tables.bank_free(x, w, "w", addr):
                return None
            writes.append(w)
        return writes

    def schedule_matmul(self, node: MatmulNode) -> dict:
        """All instructions of one matmul; returns its layer entry (for the report).

        Tiles go in waves of one tile per plane, and a wave's tiles take turns chunk by
        chunk, so that the planes share the MXM edges' streams and the VXM's queues rather
        than the first tile of a wave taking them all (the list scheduler gives each
        instruction the earliest free slot in issue order; tile after tile, the planes of
        one hemisphere ran one after the other: GEMV 4096x4096 2330 -> see docs/groq.md).
        The tiles split by K over the planes (`WeightTile.parts`: those past the last whole
        wave) go first, as one wave of each plane's chunks in turn, so that their rescales
        run while the whole waves install and multiply."""
        w = node.tensor
        tiles = self.tiles[node.index]
        groups, group_size = w.num_groups, w.group_size
        chunks = -(-groups * group_size // node.chunk)
        run = _MatmulRun(node, self.group_sums[node.index],
                         input_ready=max(self.ready[node.q], self.ready[node.scale]))
        planes = len(self.m.mxm_plane_names)
        split = [t for t in tiles if t.parts]
        whole = [t for t in tiles if not t.parts]
        waves: list[list[list[tuple[WeightTile, int]]]] = []  # wave -> step -> jobs
        if split:
            lanes: dict[str, list[tuple[WeightTile, int]]] = {}
            for t in split:
                for c0, c1, plane, _ in t.parts:
                    lanes.setdefault(plane, []).extend((t, c) for c in range(c0, c1))
            steps = max(len(x) for x in lanes.values())
            waves.append([[x[i] for x in lanes.values() if i < len(x)] for i in range(steps)])
        for w0 in range(0, len(whole), planes):
            # the east edge takes the chunks in pairs swapped (1, 0, 3, 2, ...): both edges'
            # passes read their activation vector in the same cycles, and chunk c's is in
            # slice c % 4 of the activations (one read per slice and cycle)
            waves.append([[(t, c ^ 1 if t.plane[4] == "E" and (c ^ 1) < chunks else c)
                           for t in whole[w0:w0 + planes]] for c in range(chunks)])
        if split and node.rows > 1 and len(whole) >= 2 * planes:
            # with several rows (the VXM is the limit) the first whole wave goes before
            # the split tiles: the split tiles' rescale is one chain on one VXM queue, and
            # the first wave's give all queues work from its first chunk on (GEMM
            # 8x4096x4096 f32/int8: 5334 -> 5151 cycles)
            waves.insert(1, waves.pop(0))
        for wave in waves:
            done: dict[int, set[int]] = {}
            issued: dict[int, int] = {}  # tile -> rescale spans issued
            order = list({t.index: t for step in wave for t, _ in step}.values())
            for step in wave:
                self._wave_chunk(run, step)
                for t, c in step:
                    done.setdefault(t.index, set()).add(c)
                for tile in order:
                    # the ordered float32 rescale of the groups of each span's chunks
                    # (`cost.rescale_chunk_spans`), in order, once they are all multiplied,
                    # for the tile's columns, added to the running sum in group order;
                    # scales and offsets are decoded lane-locally from the packed group
                    # codes and column words on the way (ALU ops per lane: 5 per row and
                    # group, 9 per group; none to decode with decoded scales)
                    spans = costs.tile_chunk_spans(self.m, chunks, tile.index, len(tiles),
                                                   node.rows)
                    while issued.get(tile.index, 0) < len(spans):
                        c0, c1 = spans[issued.get(tile.index, 0)]
                        if not done.get(tile.index, set()) >= set(range(c0, c1)):
                            break
                        last = c1 == chunks
                        rs = self._rescale(node, tile, list(range(c0, c1)), last, run.sums)
                        issued[tile.index] = issued.get(tile.index, 0) + 1
                        if last:
                            run.ends.append(rs.end)
        groups_per_chunk = node.chunk // group_size
        return dict(op_index=node.index, weight=node.weight, shape=list(w.shape),
                    group=group_size, rows=node.rows, tiles=len(tiles),
                    mxm_passes=run.mxm_passes, installs=run.installs,
                    input_ready=run.input_ready, end=max(run.ends),
                    last_rescale_groups=groups - (chunks - 1) * groups_per_chunk,
                    first_install=run.first_install, packed_bytes=sum(
                        t.packed_bytes for t in tiles))

    def _wave_chunk(self, run: _MatmulRun, jobs: list[tuple[WeightTile, int]]) -> None:
        """One step of a wave: a K chunk of each of its tiles (`jobs`: tile, chunk; one per
        plane): their install blocks into their planes' next weight buffers, block by block
        in turn (the planes of one MXM edge share its 32 streams, 16 per install: taking
        turns, both finish the chunk together), then their masked passes, group by group in
        turn, so that the two planes of an edge pass in the same cycle on one read of the
        activation vector (`matmul_pass`) when they multiply the same chunk; the second
        plane of an edge takes the chunk's groups in pairs swapped (1, 0, 3, 2, ...), so that
        the two results go to different slices of the partials (a group's int32 row fills 4
        of their 8). After the matmul's first passes: the group sums."""
        node, w = run.node, run.node.tensor
        groups, group_size = w.num_groups, w.group_size
        groups_per_chunk = node.chunk // group_size
        states = []
        for tile, c in jobs:
            plane = tile.chunk_plane(c)
            payload, first = tile.chunk_payload(c)
            weight_buffer = self.next_weight_buffer.get(plane, 0)
            self.next_weight_buffer[plane] = (weight_buffer + 1) % self.weight_buffers
            # the buffer is free for installs after its last pass: the first unpack may
            # issue its travel and unpack latency earlier (int8 levels: `earliest` is the
            # install's)
            hops_out = 0 if self.m.int8_levels else \
                self.unpack_latency + abs(self.pos(self.m.plane_unit(plane)) - self.vxm_position)
            states.append(dict(
                tile=tile, c=c, plane=plane, buffer=weight_buffer, hops_out=hops_out,
                payload=payload, b0=c * node.chunk // INSTALL_BLOCK_ROWS,
                b1=min(groups * group_size, (c + 1) * node.chunk) // INSTALL_BLOCK_ROWS,
                base=first * node.chunk // INSTALL_BLOCK_ROWS,
                g0=c * groups_per_chunk, g1=min(groups, (c + 1) * groups_per_chunk),
                tag=f"{node.weight}:t{tile.index}:c{c}", installed=0,
                earliest=max(0, self.weight_buffer_free.get((plane, weight_buffer), 0)
                             - hops_out)))
        if self.m.int8_levels:
            # level rows, up to 16 per install (`install_levels`), the planes in turn
            for st in states:
                st["rows"] = INSTALL_BLOCK_ROWS * (st["b1"] - st["b0"])
                st["done"] = 0
                run.installs += st["b1"] - st["b0"]  # counted in 16-row blocks
            while any(st["done"] < st["rows"] for st in states):
                for st in states:
                    left = st["rows"] - st["done"]
                    if not left:
                        continue
                    first = INSTALL_BLOCK_ROWS * (st["b0"] - st["base"]) + st["done"]
                    want = min(INSTALL_BLOCK_ROWS, left)  # consecutive rows: one per slice
                    ic, n = self.install_levels(st["payload"], st["plane"], st["buffer"],
                                                st["done"], first, want, st["earliest"],
                                                st["tag"])
                    st["done"] += n
                    st["installed"] = max(st["installed"], ic + 1)
                    st["earliest"] = ic
                    run.first_install = ic if run.first_install is None else \
                        min(run.first_install, ic)
        else:
            for i in range(max(st["b1"] - st["b0"] for st in states)):
                for st in states:
                    block = st["b0"] + i
                    if block >= st["b1"]:
                        continue
                    ic = self.install_block(st["payload"], st["plane"], st["buffer"],
                                            INSTALL_BLOCK_ROWS * i, block - st["base"],
                                            st["earliest"], st["tag"])
                    run.installs += 1
                    st["installed"] = max(st["installed"], ic + 1)
                    st["earliest"] = ic - st["hops_out"]
                    run.first_install = ic if run.first_install is None else \
                        min(run.first_install, ic)
        # the planes of one edge start their passes together; the second swaps group pairs
        edges: dict[int, list[dict]] = {}
        for st in states:
            edges.setdefault(self.pos(self.m.plane_unit(st["plane"])), []).append(st)
        for same in edges.values():
            start = max(st["installed"] for st in same)
            for i, st in enumerate(same):
                st["start"] = max(start, self.reuse_ready(st["tile"].partials[st["c"]].name))
                st["swap"] = i % 2 == 1
                st["last_pass"] = 0
        for row in range(node.rows):
            for k in range(max(st["g1"] - st["g0"] for st in states)):
                for st in states:
                    n = st["g1"] - st["g0"]
                    if k >= n:
                        continue
                    g = st["g0"] + (k ^ 1 if st["swap"] and (k ^ 1) < n else k)
                    pc = self.matmul_pass(node, st["tile"], st["plane"], st["buffer"], row,
                                          st["c"], g, st["start"], st["tag"])
                    run.mxm_passes += 1
                    st["last_pass"] = max(st["last_pass"], pc)
        for st in states:
            self.weight_buffer_free[(st["plane"], st["buffer"])] = st["last_pass"] + 1
        if run.sums not in self.ready:  # after the passes: they need q's MEM ports first
            self.schedule_macro("VXM", "vxm", [node.q], [run.sums],
                                node.rows * groups * group_size, 1, GroupSums,
                                group=group_size, k=w.shape[0])

    def _rescale(self, node: MatmulNode, tile: WeightTile, chunks: list[int], last: bool,
                 sums: str) -> Instruction:
        """The rescale macro of the partials of `chunks` of one tile."""
        w = node.tensor
        groups_per_chunk = node.chunk // w.group_size
        first = chunks[0] == 0
        g0 = chunks[0] * groups_per_chunk
        g1 = min(w.num_groups, (chunks[-1] + 1) * groups_per_chunk)
        partials = [tile.partials[x].name for x in chunks]
        running_sum = tile.running_sum.name if tile.running_sum else None
        scales = tile.scales[g0].name if tile.scales else None
        block = groups_per_chunk if node.int_scaled is not None else 0
        if block:  # integer scales, column base and offset; the group sums for the offset
            weight_words = [scales, tile.words.name]
            reads = partials + weight_words + ([sums] if last else [])
        else:
            weight_words = [scales] if scales else [tile.meta.name, tile.words.name]
            reads = partials + weight_words + [sums]
        if not first:
            reads.append(running_sum)
        if last:
            reads.append(node.scale)
        result = node.out if last else running_sum
        return self.schedule_macro(
            "VXM", "vxm", reads, [result],
            costs.rescale_elements(self.m, node.rows, g1 - g0, len(chunks), last), 1,
            Rescale, tile=tile.index, cols=tile.cols, group=w.group_size,
            groups=w.num_groups, g0=g0, g1=g1, first=first, last=last, k=w.shape[0],
            partials=tuple(partials), meta=tile.meta.name if tile.meta else None,
            words=tile.words.name if tile.words else None,
            scales=scales, sx=sums, block=block,
            acc=None if first else running_sum, row_scale=node.scale if last else None,
            result=result)

    def schedule_node(self, node: MacroNode | MatmulNode) -> None:
        if isinstance(node, MatmulNode):
            self.program.deps.append(dict(reads=[node.q, node.scale], writes=[node.out],
                                          layer=len(self.program.layers)))
            self.program.layers.append(self.schedule_matmul(node))
            return
        ins = self.schedule_macro(node.unit, node.kind, node.inputs, node.outputs,
                                  node.elements, node.passes, Macro, ir_op=node.index,
                                  ir_name=node.op.name)
        self.program.deps.append(dict(reads=list(node.inputs), writes=list(node.outputs),
                                      cycles=ins.cycles))

    def finish(self) -> Program:
        program = self.program
        program.buffers = self.graph.buffers
        program.cycles = max([i.end for i in program.instructions] + [0])
        # an output still being written: wait for its last write to land
        for ins in program.instructions:
            if isinstance(ins, Write):
                program.cycles = max(program.cycles, ins.cycle + self.write_latency)
        return program

    def run(self) -> Program:
        self.place()
        for node in self.graph.nodes:
            self.schedule_node(node)
        return self.finish()
