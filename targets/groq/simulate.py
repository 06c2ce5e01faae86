"""The cycle-level simulator: checks a program.json against the machine model and runs it.

Checks (each failure is one line naming cycle, unit and stream or queue, raised as
`IllegalProgram`):
1. queues: at most one instruction per queue per cycle (macros hold their unit's queue
   from their operands' arrival to their results' leaving, and the read/write queues of
   every MEM slice they touch while they stream from / to it);
2. MEM: a read and a write in one slice in one cycle hit different banks; every address is
   inside its buffer and the slice; placed buffers that share addresses have disjoint live
   ranges (SRAM overflow and overlap);
3. streams: the occupancy map (direction, stream, position, cycle) -> producer, with values
   moving one position per cycle; two producers on one stream position in one cycle, or a
   value crossing a stream a macro holds, is an error;
4. producer -> consumer: every operand a consumer reads from a stream must be, at that
   position and cycle, the value of the producer it names; every MEM read must return the
   data of the writer it names, and a macro's sources must have landed;
5. data types and stream groups: int8 on one stream, int32/fp32 on a group of 4
   consecutive streams (lane j on stream s0 + j), matching between producer and consumer.

Then it executes the program in cycle order (event-driven): MEM as bytes per slice, values
on streams, the MXM planes' weight buffers, the VXM. Macro instructions run the reference
interpreter's function for their op on the bytes they read, so they are bit-exact by
construction; the int8 matmul runs from the instructions themselves (unpack, install,
masked passes, the rescale in the interpreter's float32 order).
"""

from __future__ import annotations

import numpy as np

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.quant import CODEBOOK, decode_meta, unpack_codes
from q35c.semantics import (
    IMPLEMENTATIONS,
    int_rescale_block,
    int_rescale_end,
    rescale_group,
    rescale_rows,
)
from q35c.targets.groq.cost import BLOCK_BYTES, INSTALL_BLOCK_ROWS
from q35c.targets.groq.instructions import (
    BufferOp,
    GroupSums,
    Install,
    Instruction,
    Macro,
    MatmulPass,
    Read,
    Receive,
    Rescale,
    Send,
    StreamHold,
    StreamValue,
    Unpack,
    Write,
    instruction_from_json,
)
from q35c.targets.groq.lower import Buf, decode, encode
from q35c.targets.groq.machine import INT32_STREAMS
from q35c.targets.groq.schedule.reservations import (
    TIME_BUCKET,
    diagonal,
    macro_mem_spans,
    macro_queue_window,
    macro_travel,
)


class IllegalProgram(Q35cError):
    """The program breaks a rule of the machine model."""


def _buf(name: str, d: dict, slice_index: dict[str, int]) -> Buf:
    b = Buf(name, tuple(d["shape"]), d["dtype"], d["layout"], d["kind"])
    b.slices = [slice_index[s] for s in d["slices"]]
    b.chip = d.get("chip", 0)
    b.addr, b.nvec = d["addr"], d["nvec"]
    return b


class Simulator:
    def __init__(self, doc: dict, image: bytes, machine, ops=None, interp=None):
        if doc.get("schema") != "q35c-groq-program/1":
            raise IllegalProgram("not a q35c-groq-program/1 document")
        self.doc, self.m, self.image = doc, machine, image
        self.ops, self.interp = ops, interp
        self.lanes = machine.lanes
        self.floorplan = machine.floorplan
        self.slice_names = [machine.slice_name(i) for i in range(machine.mem_slices)]
        self.slice_index = {n: i for i, n in enumerate(self.slice_names)}
        self.bufs = {n: _buf(n, d, self.slice_index) for n, d in doc["buffers"].items()}
        self.ins = [instruction_from_json(entry) for entry in doc["instructions"]]
        self.by_id = {i.id: i for i in self.ins}
        self.read_latency = int(machine.param("mem_read_latency"))
        self.write_latency = int(machine.param("mem_write_latency"))
        self.unpack_latency = int(machine.param("vxm_unpack_latency"))
        self.mxm_latency = int(machine.param("mxm_latency"))
        self.bank_interleave = int(machine.param("mem_bank_interleave"))
        self.chips = int(doc.get("chips", 1))
        self.c2c_latency = int(machine.param("c2c_latency_cycles"))

    def pos(self, unit: str) -> int:
        u = unit[:5] if unit.startswith("MXM_") else unit
        try:
            return self.floorplan.index(u)
        except ValueError:
            raise IllegalProgram(f"instruction on unknown unit {unit}") from None

    def where(self, ins: Instruction) -> str:
        return f"#{ins.id} {ins.op}"

    # -- static checks ---------------------------------------------------------------------

    def check(self) -> None:
        self.check_queues()
        self.check_memory()
        self.check_streams()

    def check_queues(self) -> None:
        occ: dict[str, list[tuple[int, int, int]]] = {}
        for ins in self.ins:
            c, d = ins.cycle, ins.cycles
            if c < 0 or d < 1:
                raise IllegalProgram(f"cycle {c}, unit {ins.unit}: {self.where(ins)} has a "
                                     f"bad issue cycle or duration")
            chip = ins.chip
            if not 0 <= chip < self.chips:
                raise IllegalProgram(f"cycle {c}, unit {ins.unit}: {self.where(ins)} on chip "
                                     f"{chip} of a {self.chips}-chip program")
            if isinstance(ins, BufferOp) and ins.unit != "C2C":
                # a macro holds its unit's queue from its operands' arrival to its results'
                # leaving (`macro_queue_window`)
                a, n = macro_queue_window(d, self._macro_travel(ins))
                if n < 1:
                    raise IllegalProgram(f"cycle {c}, unit {ins.unit}: {self.where(ins)} is "
                                         f"shorter than its stream travel")
                c, d = c + a, n
            occ.setdefault((chip, ins.queue), []).append((c, c + d, ins.id))
            if isinstance(ins, BufferOp):
                for q, a, b in self._macro_mem_spans(ins):
                    occ.setdefault((chip, q), []).append((a, b, ins.id))
        for chip, q in sorted(occ):
            spans = sorted(occ[(chip, q)])
            for (_, a1, ia), (b0, _, ib) in zip(spans, spans[1:]):
                if b0 < a1:
                    x, y = self.by_id[ia], self.by_id[ib]
                    on = f"chip {chip}, " if self.chips > 1 else ""
                    what = "transfers use the link" if q.startswith("C2C") else \
                        "instructions issue"
                    raise IllegalProgram(
                        f"cycle {b0}, {on}unit {q.split('.')[0]}, queue {q}: two {what} "
                        f"({self.where(x)} and {self.where(y)})")

    def _macro_travel(self, ins: BufferOp) -> tuple[int, int]:
        reads = [self.bufs[n] for n in ins.reads if n in self.bufs
                 and self.bufs[n].kind != "virtual"]
        writes = [self.bufs[n] for n in ins.writes]
        cols = ins.cols if isinstance(ins, Rescale) and ins.last else None
        return macro_travel(self.m, ins.unit, reads, writes, cols)

    def _macro_mem_spans(self, ins: BufferOp) -> list[tuple[str, int, int]]:
        reads = [self.bufs[n] for n in ins.reads if n in self.bufs
                 and self.bufs[n].kind != "virtual"]
        writes = [self.bufs[n] for n in ins.writes]
        cols = ins.cols if isinstance(ins, Rescale) and ins.last else None
        return macro_mem_spans(self.m, reads, writes, ins.cycle, ins.cycles, cols)

    def check_memory(self) -> None:
        m = self.m
        from q35c.targets.groq.program import live_ranges
        live = live_ranges(self.doc)
        per_slice: dict[int, list[tuple[int, int, str]]] = {}
        for name, b in self.bufs.items():
            if not b.slices:
                continue
            top = b.addr + b.addresses()
            for s in b.slices:
                if b.addr < 0 or top > m.vectors_per_slice:
                    raise IllegalProgram(
                        f"cycle 0, unit {self.slice_names[s]}: buffer {name} at addresses "
                        f"{b.addr}..{top - 1} exceeds the slice's {m.vectors_per_slice} "
                        "vectors (SRAM overflow)")
                per_slice.setdefault((b.chip, s), []).append((b.addr, top, name))
        for chip, s in sorted(per_slice):
            spans = sorted(per_slice[(chip, s)])
            for i, (a0, a1, na) in enumerate(spans):
                for b0, b1, nb in spans[i + 1:]:
                    if b0 >= a1:
                        break
                    la, lb = live.get(na), live.get(nb)
                    if la and lb and la[0] < lb[1] and lb[0] < la[1]:
                        raise IllegalProgram(
                            f"cycle {max(la[0], lb[0])}, unit {self.slice_names[s]}: buffers "
                            f"{na} and {nb} overlap at addresses {max(a0, b0)}..{min(a1, b1) - 1}"
                            f" while both are live")
        banks: dict[tuple[int, int, str], tuple[int, int]] = {}
        for ins in self.ins:
            if not isinstance(ins, (Read, Write)):
                continue
            b = self.bufs.get(ins.buf)
            s = self.slice_index.get(ins.unit)
            if b is None or s is None or s not in b.slices or b.chip != ins.chip or not (
                    b.addr <= ins.addr < b.addr + b.addresses()):
                raise IllegalProgram(
                    f"cycle {ins.cycle}, unit {ins.unit}: {self.where(ins)} address "
                    f"{ins.addr} is not in buffer {ins.buf}")
            rw = "r" if isinstance(ins, Read) else "w"
            bank = (ins.addr // self.bank_interleave) % m.banks_per_slice
            other = banks.get((ins.chip, s, ins.cycle, "w" if rw == "r" else "r"))
            if other is not None and other[0] == bank:
                raise IllegalProgram(
                    f"cycle {ins.cycle}, unit {ins.unit}: read and write of bank {bank} "
                    f"in one cycle (#{other[1]} and #{ins.id})")
            banks[(ins.chip, s, ins.cycle, rw)] = (bank, ins.id)

    def check_streams(self) -> None:
        """Build the occupancy map and check every consumer against it."""
        consumers: dict[tuple[int, int], list[tuple[Instruction, StreamValue]]] = {}
        for ins in self.ins:
            for e in ins.inputs:
                consumers.setdefault((e.src, e.src_out), []).append((ins, e))
        diag: dict[tuple[str, int, int], list[tuple[int, int, int, int]]] = {}
        for ins in self.ins:
            outs = ins.outputs
            if not outs:
                continue
            p = self.pos(ins.unit)
            latency = {"read": self.read_latency, "unpack": self.unpack_latency,
                       "matmul_pass": self.mxm_latency}[ins.op]
            t = ins.cycle + latency
            self._check_group(ins, outs)
            for k, e in enumerate(outs):
                ps = [p] + [self.pos(c.unit) for c, _ in consumers.get((ins.id, k), [])]
                lo, hi = min(ps), max(ps)
                if (e.direction == "E" and lo < p) or (e.direction == "W" and hi > p):
                    raise IllegalProgram(
                        f"cycle {t}, unit {ins.unit}, stream {e.direction}{e.stream}: "
                        f"{self.where(ins)} sends {'east' if e.direction == 'E' else 'west'} "
                        "but a consumer lies the other way")
                self._valid_stream(ins, e, t)
                diag.setdefault((ins.chip, e.direction, e.stream, diagonal(e.direction, p, t)),
                                []).append(
                    (lo, hi, ins.id, k))
        for key in sorted(diag):
            spans = sorted(diag[key])
            for (_, a1, ia, _), (b0, _, ib, _) in zip(spans, spans[1:]):
                if b0 <= a1:
                    _, d, s, dg = key
                    t = dg + b0 if d == "E" else dg - b0
                    raise IllegalProgram(
                        f"cycle {t}, unit {self.floorplan[b0]}, stream {d}{s}: two producers "
                        f"({self.where(self.by_id[ia])} and {self.where(self.by_id[ib])})")
        rects: dict[tuple[str, int], list[tuple[int, int, int, int, int]]] = {}
        for ins in self.ins:
            if not isinstance(ins, BufferOp):
                continue
            if ins.unit != "C2C":
                self._check_holds(ins)
            for h in ins.holds:
                pu, ps = self.pos(ins.unit), self.pos(h.slice)
                self._valid_stream(ins, h, h.t0)
                rects.setdefault((ins.chip, h.direction, h.stream), []).append(
                    (min(pu, ps), max(pu, ps), h.t0, h.t1, ins.id))
        buckets: dict[tuple[str, int], dict[int, list]] = {}
        for key in sorted(rects):
            rs = sorted(rects[key], key=lambda r: (r[2], r[0]))
            for i, a in enumerate(rs):
                for b in rs[i + 1:]:
                    if b[2] >= a[3]:
                        break
                    if a[0] <= b[1] and b[0] <= a[1]:
                        raise IllegalProgram(
                            f"cycle {b[2]}, unit {self.floorplan[max(a[0], b[0])]}, stream "
                            f"{key[1]}{key[2]}: two producers ({self.where(self.by_id[a[4]])} "
                            f"and {self.where(self.by_id[b[4]])} hold it)")
                for bk in range(a[2] // TIME_BUCKET, (a[3] - 1) // TIME_BUCKET + 1):
                    buckets.setdefault(key, {}).setdefault(bk, []).append(a)
        for (chip, d, s, dg), spans in sorted(diag.items()):
            bk = buckets.get((chip, d, s))
            if not bk:
                continue
            for lo, hi, iid, _ in spans:
                ta, tb = (dg + lo, dg + hi) if d == "E" else (dg - hi, dg - lo)
                for b in range(ta // TIME_BUCKET, tb // TIME_BUCKET + 1):
                    for P0, P1, T0, T1, rid in bk.get(b, ()):
                        a, z = max(lo, P0), min(hi, P1)
                        if a > z:
                            continue
                        xa, xb = (dg + a, dg + z) if d == "E" else (dg - z, dg - a)
                        if xa < T1 and xb >= T0:
                            t = max(xa, T0)
                            raise IllegalProgram(
                                f"cycle {t}, unit {self.floorplan[a]}, stream {d}{s}: two "
                                f"producers ({self.where(self.by_id[iid])} crosses the stream "
                                f"{self.where(self.by_id[rid])} holds)")
        # consumers: the value at (position, cycle) must be their producer's
        for ins in self.ins:
            ins_in = ins.inputs
            if not ins_in:
                continue
            self._check_group(ins, ins_in)
            q, t = self.pos(ins.unit), ins.cycle
            for e in ins_in:
                self._valid_stream(ins, e, t)
                spans = diag.get((ins.chip, e.direction, e.stream, diagonal(e.direction, q, t)),
                                 [])
                hit = [x for x in spans if x[0] <= q <= x[1]]
                where = f"cycle {t}, unit {ins.unit}, stream {e.direction}{e.stream}"
                if not hit:
                    raise IllegalProgram(f"{where}: {self.where(ins)} reads no value "
                                         f"(expected #{e.src}'s)")
                _, _, pid, k = hit[0]
                if (pid, k) != (e.src, e.src_out):
                    raise IllegalProgram(
                        f"{where}: {self.where(ins)} reads the value of "
                        f"{self.where(self.by_id[pid])} output {k}, expected #{e.src} "
                        f"output {e.src_out}")
                out = self.by_id[pid].outputs[k]
                if out.dtype != e.dtype or (out.lane or 0) != (e.lane or 0):
                    raise IllegalProgram(
                        f"{where}: data-type/stream-group mismatch: {self.where(ins)} reads "
                        f"{e.dtype} lane {e.lane or 0}, #{pid} sent {out.dtype} "
                        f"lane {out.lane or 0}")

    def _check_holds(self, ins: BufferOp) -> None:
        """A macro streams its operands in and its results out while it runs: it must hold
        one stream per MEM slice it touches, from its issue (reads) or up to its end
        (writes), over the positions between the slice and its unit."""
        pu = self.pos(ins.unit)
        want = []
        for q, a, b in self._macro_mem_spans(ins):
            sl = q.split(".")[0]
            dist = abs(self.pos(sl) - pu)
            want.append((sl, a, b + dist) if q.endswith(".r") else (sl, a - dist, b))
        got = [(h.slice, h.t0, h.t1) for h in ins.holds]
        missing = [w for w in want if w not in got]
        if missing or len(got) != len(want):
            sl, t0, _ = (missing or want or [("?", ins.cycle, 0)])[0]
            h = next((h for h in ins.holds if h.slice == sl), None)
            stream = f"{h.direction}{h.stream}" if h else "none"
            raise IllegalProgram(
                f"cycle {t0}, unit {ins.unit}, stream {stream}: {self.where(ins)} does not "
                f"hold a stream to {sl} while it moves that slice's data")

    def _valid_stream(self, ins: Instruction, e: StreamValue | StreamHold, t: int) -> None:
        if e.direction not in ("E", "W") or not 0 <= e.stream < self.m.streams_per_direction:
            raise IllegalProgram(f"cycle {t}, unit {ins.unit}, stream {e.direction}"
                                 f"{e.stream}: no such stream")

    def _check_group(self, ins: Instruction, entries: tuple[StreamValue, ...]) -> None:
        """int32/fp32 values travel on 4 consecutive streams s0..s0+3 (s0 a multiple of 4),
        byte lane j on stream s0 + j; a consumer may read single lanes."""
        wide = [e for e in entries if e.dtype in ("i32", "f32")]
        for e in wide:
            if e.group != INT32_STREAMS or e.stream % INT32_STREAMS != e.lane or \
                    e.direction != wide[0].direction or \
                    e.stream - e.lane != wide[0].stream - wide[0].lane:
                raise IllegalProgram(
                    f"cycle {ins.cycle}, unit {ins.unit}, stream {e.direction}{e.stream}: "
                    f"data-type/stream-group mismatch: {self.where(ins)} needs {e.dtype} lane "
                    f"{e.lane} on stream 4k+{e.lane} of a group of 4 consecutive "
                    "streams")
        if wide and entries is ins.outputs and len(wide) != INT32_STREAMS:
            raise IllegalProgram(
                f"cycle {ins.cycle}, unit {ins.unit}, stream {wide[0].direction}"
                f"{wide[0].stream}: data-type/stream-group mismatch: {self.where(ins)} sends "
                f"{wide[0].dtype} on {len(wide)} streams, not 4")

    # -- execution ---------------------------------------------------------------------------

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        m, lanes = self.m, self.lanes
        self.mem = [np.zeros((m.mem_slices, m.vectors_per_slice, lanes), np.uint8)
                    for _ in range(self.chips)]
        self.writer = [np.full((m.mem_slices, m.vectors_per_slice), -2, np.int64)
                       for _ in range(self.chips)]
        self.c2c: dict[int, np.ndarray] = {}
        self.landed: dict[int, int] = {}
        for seg in self.doc["image"]["segments"]:
            b = self.bufs[seg["buf"]]
            n = seg["nvec"] * lanes
            data = np.frombuffer(self.image, np.uint8, n, seg["offset"]).reshape(-1, lanes)
            self._store(b, data, -1)
        for name, buf, shape in self.doc["inputs"]:
            if name not in inputs:
                raise Q35cError(f"missing input '{name}'")
            b = self.bufs[buf]
            arr = np.asarray(inputs[name])
            if tuple(arr.shape) != tuple(shape):
                raise Q35cError(f"input '{name}' has shape {arr.shape}, expected {tuple(shape)}")
            self._store(b, encode(b, arr, lanes), -1)
        self.planes: dict[tuple[str, int], np.ndarray] = {}
        self.tags: dict[tuple[str, int], list] = {}
        self.values: dict[tuple[int, int], tuple] = {}
        events = []
        for ins in self.ins:
            events.append((ins.cycle, 1, ins.id))
        events.sort()
        pending: list[tuple[int, int, object]] = []
        import heapq
        for cycle, _, iid in events:
            while pending and pending[0][0] <= cycle:
                _, _, fn = heapq.heappop(pending)
                fn()
            ins = self.by_id[iid]
            landing = self.execute(ins)
            if landing is not None:
                heapq.heappush(pending, (landing[0], iid, landing[1]))
        while pending:
            _, _, fn = heapq.heappop(pending)
            fn()
        outs = {}
        for name, buf, shape in self.doc["outputs"]:
            b = self.bufs[buf]
            outs[name] = decode(b, self._load(b), lanes).reshape(shape)
        return outs

    def _store(self, b: Buf, vectors: np.ndarray, writer: int) -> None:
        for v in range(b.nvec):
            s, a = b.place(v)
            self.mem[b.chip][s, a] = vectors[v]
            self.writer[b.chip][s, a] = writer

    def _load(self, b: Buf) -> np.ndarray:
        out = np.empty((b.nvec, self.lanes), np.uint8)
        for v in range(b.nvec):
            s, a = b.place(v)
            out[v] = self.mem[b.chip][s, a]
        return out

    def _writers(self, b: Buf) -> set[int]:
        return {int(self.writer[b.chip][s, a]) for s, a in (b.place(v) for v in range(b.nvec))}

    def execute(self, ins: Instruction):
        c = ins.cycle
        if isinstance(ins, Read):
            s = self.slice_index[ins.unit]
            a = ins.addr
            got = int(self.writer[ins.chip][s, a])
            if got != ins.src:
                who = "the initial image" if got == -1 else (
                    "nothing" if got == -2 else self.where(self.by_id[got]))
                raise IllegalProgram(
                    f"cycle {c}, unit {ins.unit}, stream {ins.out[0].direction}"
                    f"{ins.out[0].stream}: {self.where(ins)} of address {a} reads data "
                    f"of {who}, expected #{ins.src}")
            self.values[(ins.id, 0)] = (self.mem[ins.chip][s, a].copy(),)
            return None
        if isinstance(ins, Write):
            e = ins.in_[0]
            value, = self.values[(e.src, e.src_out)]
            plane = e.lane or 0
            data = (value.astype(np.int64) >> (8 * plane)).astype(np.uint8) \
                if e.dtype == "i32" else value.view(np.uint8)
            s = self.slice_index[ins.unit]

            def land(s=s, a=ins.addr, data=data, iid=ins.id, chip=ins.chip):
                self.mem[chip][s, a] = data
                self.writer[chip][s, a] = iid
                self.landed[iid] = c + self.write_latency
            return (c + self.write_latency, land)
        if isinstance(ins, Unpack):
            raw = np.stack([self.values[(e.src, e.src_out)][0] for e in ins.in_])
            word = np.zeros(self.lanes, np.uint64)
            for j in range(BLOCK_BYTES):  # lane n: a 56-bit word of 8 pair codes
                word |= raw[j].astype(np.uint64) << np.uint64(8 * j)
            levels = np.empty((INSTALL_BLOCK_ROWS, self.lanes), np.int8)
            for i in range(INSTALL_BLOCK_ROWS // 2):
                code = ((word >> np.uint64(7 * i)) & np.uint64(0x7F)).astype(np.int64)
                levels[2 * i] = CODEBOOK[code, 0]
                levels[2 * i + 1] = CODEBOOK[code, 1]
            for k in range(len(ins.out)):
                self.values[(ins.id, k)] = (levels[k],)
            return None
        if isinstance(ins, Install):
            key = (ins.chip, ins.unit, ins.buffer)
            if not 0 <= ins.buffer < int(self.m.param("mxm_weight_buffers")):
                raise IllegalProgram(f"cycle {c}, unit {ins.unit}: no weight buffer "
                                     f"{ins.buffer}")
            w = self.planes.setdefault(key, np.zeros((self.m.mxm_rows, self.lanes), np.int8))
            tags = self.tags.setdefault(key, [None] * self.m.mxm_rows)
            for k, e in enumerate(ins.in_):
                w[ins.row + k] = self.values[(e.src, e.src_out)][0].view(np.int8)
                tags[ins.row + k] = ins.tag
            return None
        if isinstance(ins, MatmulPass):
            key = (ins.chip, ins.unit, ins.buffer)
            lo, hi = ins.rows
            tags = self.tags.get(key, [None] * self.m.mxm_rows)
            bad = [r for r in range(lo, hi) if tags[r] != ins.tag]
            if bad:
                raise IllegalProgram(
                    f"cycle {c}, unit {ins.unit}: {self.where(ins)} uses weight buffer "
                    f"{ins.buffer} row {bad[0]} holding {tags[bad[0]]}, expected {ins.tag}")
            e = ins.in_[0]
            act = self.values[(e.src, e.src_out)][0].view(np.int8).astype(np.int64)
            w = self.planes[key].astype(np.int64)
            acc = act[lo:hi] @ w[lo:hi]
            if acc.min() < -2**31 or acc.max() >= 2**31:
                raise IllegalProgram(f"cycle {c}, unit {ins.unit}: int32 overflow")
            for k in range(INT32_STREAMS):
                self.values[(ins.id, k)] = (acc.astype(np.int32),)
            return None
        assert isinstance(ins, BufferOp)
        return self.execute_macro(ins)

    def _rescale(self, ins: Rescale, c: int):
        """A rescale's results ({buffer: value}, or a patch of the tile's columns of the
        result for its last macro): the interpreter's float32 group order
        (`rescale_group`), or with `block` the integer rescale contract
        (`int_rescale_block`, `int_rescale_end`)."""
        B, lanes = self.bufs, self.lanes
        sx_b, out_b = B[ins.sx], B[ins.result]
        G, g0, g1 = ins.groups, ins.g0, ins.g1
        sxs = decode(sx_b, self._load(sx_b), lanes)  # [rows, G]
        rows = sxs.shape[0]
        if ins.first:
            y = np.zeros((rows, lanes), np.float32)
        else:
            y = decode(B[ins.acc], self._load(B[ins.acc]), lanes)
        # partials of each chunk: [rows, groups of the chunk, lanes]; concatenated by group
        acc_all = np.concatenate(
            [decode(B[n], self._load(B[n]), lanes).reshape(rows, -1, lanes)
             for n in ins.partials], axis=1)
        words = decode(B[ins.words], self._load(B[ins.words]), lanes) if ins.words else None
        if ins.block:  # integer scales: int32 blocks of `block` groups, then base, offset
            ints = decode(B[ins.scales], self._load(B[ins.scales]), lanes).astype(np.int64)
            for b0 in range(g0, g1, ins.block):
                b1 = min(g1, b0 + ins.block)
                total = (acc_all[:, b0 - g0:b1 - g0].astype(np.int64)
                         * ints[None, b0 - g0:b1 - g0]).sum(axis=1)
                if total.size and (total.min() < -2**31 or total.max() >= 2**31):
                    raise IllegalProgram(f"cycle {c}, unit VXM: {self.where(ins)}: int32 "
                                         f"block sum of groups {b0}..{b1 - 1} overflows")
                y = int_rescale_block(y, total, words[0])
            if ins.last:
                y = int_rescale_end(y, sxs.astype(np.int64).sum(axis=1), words[1])
        else:
            if ins.scales:  # decoded at compile time: float32 scales, offsets of g0..g1-1
                pairs = decode(B[ins.scales], self._load(B[ins.scales]), lanes)
                n = g1 - g0
                scales = np.zeros((G, lanes), np.float32)
                offsets = np.zeros((G, lanes), np.float32)
                scales[g0:g1], offsets[g0:g1] = pairs[:n], pairs[n:]
            else:
                meta_b = B[ins.meta]
                meta = decode(meta_b, self._load(meta_b), lanes)  # [7*MB, lanes]: (block, byte)
                codes = unpack_codes(np.ascontiguousarray(meta.T), G, lanes)  # [G, lanes]
                scales, offsets = decode_meta(codes, words[0], words[1], words[2])
            for gi in range(g0, g1):
                y = rescale_group(y, acc_all[:, gi - g0], sxs[:, gi], scales[gi], offsets[gi])
        if not ins.last:
            return {out_b.name: y}, None
        rs_b = B[ins.row_scale]
        y = rescale_rows(y, decode(rs_b, self._load(rs_b), lanes))
        c0, c1 = ins.cols

        def patch(iid=ins.id, end=c + ins.cycles, out_b=out_b, y=y):
            # the tile's columns only: other tiles write the rest of the rows
            full = decode(out_b, self._load(out_b), lanes).reshape(rows, -1).copy()
            full[:, c0:c1] = y[:, :c1 - c0]
            self._store(out_b, encode(out_b, full.reshape(out_b.shape), lanes), iid)
            self.landed[iid] = end
        return {}, patch

    def execute_macro(self, ins: BufferOp):
        c, lanes = ins.cycle, self.lanes
        allowed = set(ins.srcs)
        for name in ins.reads:
            b = self.bufs.get(name)
            if b is None or b.kind == "virtual":
                continue
            ok = allowed | ({-1} if b.kind in ("input", "const", "weight") else set())
            wrong = sorted(self._writers(b) - ok)
            if wrong:
                who = "nothing" if wrong[0] == -2 else self.where(self.by_id[wrong[0]])
                raise IllegalProgram(
                    f"cycle {c}, unit {ins.unit}: {self.where(ins)} reads buffer {name} "
                    f"holding data of {who}, not of its producers")
        for src in sorted(allowed):
            if self.landed.get(src, 1 << 62) > c:
                raise IllegalProgram(
                    f"cycle {c}, unit {ins.unit}: {self.where(ins)} issues before its "
                    f"producer {self.where(self.by_id[src])} has written its result")
        if isinstance(ins, Send):
            b = self.bufs[ins.reads[0]]
            self.c2c[ins.id] = self._load(b)
            return None
        if isinstance(ins, Receive):
            send = self.by_id.get(ins.src)
            where = f"cycle {c}, chip {ins.chip}, unit C2C, link {ins.link}"
            if not isinstance(send, Send):
                raise IllegalProgram(f"{where}: {self.where(ins)} names no send")
            if send.to != ins.chip or send.chip != ins.from_ or \
                    send.link != ins.chip % self.m.c2c_links or \
                    ins.link != send.chip % self.m.c2c_links:
                raise IllegalProgram(f"{where}: {self.where(ins)} is not on the link "
                                     f"{self.where(send)} sends on")
            if c != send.cycle + self.c2c_latency or ins.cycles != send.cycles:
                raise IllegalProgram(
                    f"{where}: {self.where(ins)} receives at cycle {c}, but "
                    f"{self.where(send)}'s data arrives at cycle "
                    f"{send.cycle + self.c2c_latency}")
            data = self.c2c[send.id]
            out_b = self.bufs[ins.writes[0]]
            if data.shape[0] != out_b.nvec:
                raise IllegalProgram(f"{where}: {self.where(ins)} receives {data.shape[0]} "
                                     f"vectors into {out_b.nvec}")

            def deliver(iid=ins.id, end=c + ins.cycles, out_b=out_b, data=data):
                self._store(out_b, data, iid)
                self.landed[iid] = end
            return (c + ins.cycles, deliver)
        if isinstance(ins, GroupSums):
            q_b = self.bufs[ins.reads[0]]
            g, k = ins.group, ins.k
            q = decode(q_b, self._load(q_b), lanes).reshape(-1, k).astype(np.int64)
            G = -(-k // g)
            sums = np.stack([q[:, gi * g:min(k, (gi + 1) * g)].sum(axis=1) for gi in range(G)],
                            axis=1)
            results = {ins.writes[0]: sums.astype(np.int32)}
        elif isinstance(ins, Rescale):
            results, patch = self._rescale(ins, c)
            if patch is not None:
                return (c + ins.cycles, patch)
        else:
            assert isinstance(ins, Macro)
            if self.ops is None:
                raise Q35cError("simulating macro instructions needs the program's IR")
            from xdsl.dialects.builtin import TensorType
            irop = self.ops[ins.ir_op]
            args = []
            for name, v in zip(ins.reads, irop.operands):
                b = self.bufs[name]
                shape = tuple(v.type.get_shape()) if isinstance(v.type, TensorType) else ()
                if b.kind == "virtual":
                    arr = np.zeros(shape, b.dtype)
                else:
                    arr = decode(b, self._load(b), lanes).reshape(shape)
                if arr.dtype == np.uint8 and b.dtype == "uint8" and "i1" in str(v.type):
                    arr = arr.astype(bool)
                args.append(arr)
            with np.errstate(all="ignore"):
                res = IMPLEMENTATIONS[type(irop)](self.interp, irop, args)
            results = {n: np.asarray(r) for n, r in zip(ins.writes, res)}
        encoded = {n: encode(self.bufs[n], r, lanes) for n, r in results.items()}

        def land(iid=ins.id, end=c + ins.cycles):
            for n, data in encoded.items():
                self._store(self.bufs[n], data, iid)
            self.landed[iid] = end
        return (c + ins.cycles, land)


def simulate(doc: dict, image: bytes, machine, ops=None, interp=None,
             inputs: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    sim = Simulator(doc, image, machine, ops, interp)
    sim.check()
    return sim.run(inputs or {})
