"""Reservation tables: which queue, MEM bank and stream segment is taken in which cycle.

- queues: one instruction per queue per cycle (a macro holds its unit's queue from its
  operands' arrival to its results' leaving, `macro_queue_window`, and the read/write
  queues of every MEM slice it touches while it streams from / to them: `macro_mem_spans`);
- MEM banks: a read and a write in one slice in one cycle must hit different banks;
- streams: (direction, stream, diagonal, position). A value put on an eastward stream at
  position p at cycle t is at p + k at t + k, so it keeps the diagonal d = t - p (westward:
  d = t + p); it occupies the positions from its producer to its consumer. A macro holds
  one stream per MEM slice it reads or writes, between the slice and its unit, for its
  whole duration (a rectangle in position x cycle).

The simulator checks the same rules independently (simulate.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from q35c.targets.groq.lower import Buf
from q35c.targets.groq.machine import Machine

TIME_BUCKET = 256
"""Cycles per bucket of the held-stream rectangle index (a lookup structure, not a machine
figure: any value gives the same answers)."""

_GROWTH = 1024
"""Cycles a queue's occupancy row grows by beyond what is taken (amortizes the resizes)."""


def read_addresses(b: Buf, writes: list[Buf]) -> int:
    """Addresses per slice a macro reads of operand `b`: all of them, except for a table in
    weight slice groups (layout `rows`), of which a gather reads only the rows it looks
    up, as many vectors as it writes, spread over the table's slices."""
    if b.layout != "rows":
        return b.addresses()
    return max(1, -(-sum(w.nvec for w in writes) // len(b.slices)))


def column_vectors(b: Buf, cols: tuple[int, int], lanes: int) -> dict[int, int]:
    """Vectors per slice that hold columns [c0, c1) of every row of a row-major (`flat`)
    buffer: what a rescale of one column tile writes of the matmul's result."""
    item = np.dtype(b.dtype).itemsize
    n = b.shape[-1] if b.shape else 1
    rows = int(np.prod(b.shape[:-1], dtype=np.int64)) if b.shape else 1
    out: dict[int, int] = {}
    for r in range(rows):
        first = (r * n + cols[0]) * item // lanes
        last = ((r * n + cols[1]) * item - 1) // lanes
        for v in range(first, last + 1):
            s = b.place(v)[0]
            out[s] = out.get(s, 0) + 1
    return out


def macro_mem_spans(m: Machine, reads: list[Buf], writes: list[Buf], cycle: int,
                    duration: int, cols: tuple[int, int] | None = None
                    ) -> list[tuple[str, int, int]]:
    """The MEM queues a macro holds: (queue, first cycle, end cycle). A slice's read queue
    for the first `addresses` cycles (operands stream out, one vector per slice per cycle),
    its write queue for the last `addresses` cycles (results land at the end). `cols`: the
    macro writes only these columns of each row of its (`flat`) results (a matmul's last
    rescale of one column tile), so only the vectors holding them."""
    read_vectors: dict[int, int] = {}
    write_vectors: dict[int, int] = {}
    for b in reads:
        for s in b.slices:
            read_vectors[s] = max(read_vectors.get(s, 0), read_addresses(b, writes))
    for b in writes:
        touched = column_vectors(b, cols, m.lanes) if cols and b.layout == "flat" else \
            {s: b.addresses() for s in b.slices}
        for s, n in touched.items():
            write_vectors[s] = max(write_vectors.get(s, 0), n)
    spans = [(f"{m.slice_name(s)}.r", cycle, cycle + min(duration, n))
             for s, n in sorted(read_vectors.items())]
    spans += [(f"{m.slice_name(s)}.w", cycle + duration - min(duration, n), cycle + duration)
              for s, n in sorted(write_vectors.items())]
    return spans


def macro_travel(m: Machine, unit: str, reads: list[Buf], writes: list[Buf],
                 cols: tuple[int, int] | None = None) -> tuple[int, int]:
    """(travel in, travel out) of a macro on `unit`: the stream hops from the farthest slice
    it reads to the unit, and from the unit to the farthest slice it writes (`cols`: see
    `macro_mem_spans`)."""
    unit_pos = m.position(unit)
    read_slices = {s for b in reads for s in b.slices}
    write_slices = {s for b in writes for s in (
        column_vectors(b, cols, m.lanes) if cols and b.layout == "flat" else b.slices)}

    def hops(slices: set[int]) -> int:
        return max([abs(m.position(m.slice_name(s)) - unit_pos) for s in slices] + [0])

    return hops(read_slices), hops(write_slices)


def macro_queue_window(duration: int, travel: tuple[int, int]) -> tuple[int, int]:
    """The cycles (offset from its issue, count) in which a macro of `duration` cycles holds
    its unit's queue: from its first operands' arrival at the unit to its last results'
    leaving it, i.e. its duration less the stream travel in and out (`macro_travel`).
    While its operands and results travel, they are on the streams the macro holds, and
    the unit issues nothing for it."""
    return travel[0], duration - travel[0] - travel[1]


def diagonal(direction: str, position: int, cycle: int) -> int:
    """The diagonal a value moving `direction` keeps: cycle - position eastward,
    cycle + position westward."""
    return cycle - position if direction == "E" else cycle + position


@dataclass(frozen=True, slots=True)
class HeldStream:
    """A stream held over positions [p0, p1] for cycles [t0, t1)."""

    p0: int
    p1: int
    t0: int
    t1: int

    def crossed_by(self, direction: str, diag: int, lo: int, hi: int) -> bool:
        """Whether a value on diagonal `diag` over positions lo..hi crosses it."""
        a, b = max(lo, self.p0), min(hi, self.p1)
        if a > b:
            return False
        # the cycles along the diagonal over positions a..b
        ta, tb = (diag + a, diag + b) if direction == "E" else (diag - b, diag - a)
        return ta < self.t1 and tb >= self.t0

    def overlaps(self, other: HeldStream) -> bool:
        return (self.p0 <= other.p1 and other.p0 <= self.p1 and self.t0 < other.t1
                and other.t0 < self.t1)


class ReservationTables:
    """The reservations of one chip, taken by the scheduler as it places instructions."""

    def __init__(self, m: Machine):
        self.m = m
        self.queue_busy: dict[str, bytearray] = {}
        self.banks: dict[tuple[int, int, str], int] = {}  # (slice, cycle, r|w) -> bank
        # (direction, stream, diagonal) -> positions taken by values on that diagonal
        self.values: dict[tuple[str, int, int], bytearray] = {}
        # (direction, stream) -> time bucket -> held rectangles
        self.held: dict[tuple[str, int], dict[int, list[HeldStream]]] = {}
        self.positions = len(m.floorplan)

    # -- queues ----------------------------------------------------------------------------

    def queue_free(self, queue: str, cycle: int, duration: int = 1) -> bool:
        busy = self.queue_busy.get(queue)
        if busy is None or cycle >= len(busy):
            return True
        return busy.find(1, cycle, cycle + duration) < 0

    def queue_next_free(self, queue: str, cycle: int, duration: int = 1) -> int:
        """Smallest c >= cycle where [c, c + duration) is free on `queue`."""
        while True:
            busy = self.queue_busy.get(queue)
            if busy is None:
                return cycle
            taken = busy.find(1, cycle, cycle + duration)
            if taken < 0:
                return cycle
            cycle = taken + 1

    def take_queue(self, queue: str, cycle: int, duration: int = 1) -> None:
        busy = self.queue_busy.setdefault(queue, bytearray())
        if len(busy) < cycle + duration + 1:
            busy.extend(bytes(cycle + duration + _GROWTH - len(busy)))
        busy[cycle:cycle + duration] = b"\x01" * duration

    # -- MEM banks -------------------------------------------------------------------------

    def bank_of(self, addr: int) -> int:
        return (addr // int(self.m.param("mem_bank_interleave"))) % self.m.banks_per_slice

    def bank_free(self, mem_slice: int, cycle: int, rw: str, addr: int) -> bool:
        """Whether a `rw` ("r"/"w") access of `addr` may share `cycle` with the other kind
        of access in that slice (they must hit different banks)."""
        other = self.banks.get((mem_slice, cycle, "w" if rw == "r" else "r"))
        return other is None or other != self.bank_of(addr)

    def take_bank(self, mem_slice: int, cycle: int, rw: str, addr: int) -> None:
        self.banks[(mem_slice, cycle, rw)] = self.bank_of(addr)

    # -- streams ---------------------------------------------------------------------------

    def path_free(self, direction: str, stream: int, p0: int, p1: int, t0: int) -> bool:
        """Whether a value on `stream` put at position p0 at cycle t0 can travel to p1."""
        lo, hi = min(p0, p1), max(p0, p1)
        diag = diagonal(direction, p0, t0)
        row = self.values.get((direction, stream, diag))
        if row is not None and row.find(1, lo, hi + 1) >= 0:
            return False
        t1 = t0 + (hi - lo)
        return not any(h.crossed_by(direction, diag, lo, hi)
                       for h in self._held_between(direction, stream, t0, t1))

    def take_path(self, direction: str, stream: int, p0: int, p1: int, t0: int) -> None:
        lo, hi = min(p0, p1), max(p0, p1)
        row = self.values.setdefault((direction, stream, diagonal(direction, p0, t0)),
                                     bytearray(self.positions))
        row[lo:hi + 1] = b"\x01" * (hi - lo + 1)

    def _held_between(self, direction: str, stream: int, t0: int, t1: int
                      ) -> list[HeldStream]:
        buckets = self.held.get((direction, stream))
        if not buckets:
            return []
        seen: list[HeldStream] = []
        for b in range(t0 // TIME_BUCKET, t1 // TIME_BUCKET + 1):
            for h in buckets.get(b, ()):
                if h not in seen:
                    seen.append(h)
        return seen

    def hold_free(self, direction: str, stream: int, hold: HeldStream) -> bool:
        """Whether `stream` can be held over the rectangle: no other hold, and no value on a
        diagonal crossing it."""
        if any(h.overlaps(hold) for h in self._held_between(direction, stream, hold.t0,
                                                             hold.t1)):
            return False
        for t in range(hold.t0, hold.t1):
            for p in (hold.p0, hold.p1):
                row = self.values.get((direction, stream, diagonal(direction, p, t)))
                if row is not None and row.find(1, hold.p0, hold.p1 + 1) >= 0:
                    return False
        return True

    def take_hold(self, direction: str, stream: int, hold: HeldStream) -> None:
        buckets = self.held.setdefault((direction, stream), {})
        for b in range(hold.t0 // TIME_BUCKET, (hold.t1 - 1) // TIME_BUCKET + 1):
            buckets.setdefault(b, []).append(hold)
