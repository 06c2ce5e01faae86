"""The instructions of a scheduled Groq program, as typed records.

The scheduler (`schedule/`) makes them, `program.py` writes them to program.json and
program.s, the simulator and the timeline read them back. Each class has one explicit
`to_json` (the program.json entry, keys in the order of schema `q35c-groq-program/1`,
docs/groq.md) and `from_json`; `instruction_from_json` picks the class by the entry's `op`.

Every instruction has an id (its index in the program), the chip, the functional unit and
queue it issues on, its issue cycle and its duration. Streamed instructions (read, write,
unpack, install, matmul_pass) name the stream values they consume (`inputs`, JSON `in`: the
producing instruction and its output index) and produce (`outputs`, JSON `out`); macros
(VXM/SXM ops of the graph, the matmul's group sums and rescale) and C2C transfers name the
buffers they read and write and the streams they hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class StreamValue:
    """A vector on a stream: `direction` "E"/"W", dtype "i8" or "i32". An int32 vector is
    byte plane `lane` of a `group` of consecutive streams. On the consumer side `src` and
    `src_out` name the producing instruction and which of its outputs this is."""

    stream: int
    direction: str
    dtype: str
    group: int | None = None
    lane: int | None = None
    src: int | None = None
    src_out: int | None = None

    def to_json(self) -> Json:
        doc: Json = {"stream": self.stream, "dir": self.direction, "dtype": self.dtype}
        if self.group is not None:
            doc["group"] = self.group
            doc["lane"] = self.lane
        if self.src is not None:
            doc["src"] = self.src
            doc["src_out"] = self.src_out
        return doc

    @classmethod
    def from_json(cls, doc: Json) -> StreamValue:
        return cls(doc["stream"], doc["dir"], doc["dtype"], doc.get("group"), doc.get("lane"),
                   doc.get("src"), doc.get("src_out"))

    def consumed_by(self, producer: int, output: int) -> StreamValue:
        """This value as an operand of a consumer: produced by output `output` of
        instruction `producer`."""
        return StreamValue(self.stream, self.direction, self.dtype, self.group, self.lane,
                           producer, output)


@dataclass(frozen=True, slots=True)
class StreamHold:
    """A stream a macro holds between a MEM slice and its unit: positions between them,
    cycles [t0, t1)."""

    stream: int
    direction: str
    slice: str
    t0: int
    t1: int

    def to_json(self) -> Json:
        return {"stream": self.stream, "dir": self.direction, "slice": self.slice,
                "t0": self.t0, "t1": self.t1}

    @classmethod
    def from_json(cls, doc: Json) -> StreamHold:
        return cls(doc["stream"], doc["dir"], doc["slice"], doc["t0"], doc["t1"])


def _values(docs: list[Json]) -> tuple[StreamValue, ...]:
    return tuple(StreamValue.from_json(d) for d in docs)


@dataclass(frozen=True, slots=True, kw_only=True)
class Instruction:
    """What every instruction has; `op` (a class constant) names its kind in program.json."""

    op: ClassVar[str]
    id: int
    chip: int
    unit: str
    queue: str
    cycle: int
    cycles: int

    @property
    def end(self) -> int:
        return self.cycle + self.cycles

    def _head(self) -> Json:
        return {"id": self.id, "chip": self.chip, "unit": self.unit, "queue": self.queue,
                "cycle": self.cycle, "cycles": self.cycles}

    @staticmethod
    def _head_args(doc: Json) -> Json:
        return {k: doc[k] for k in ("id", "chip", "unit", "queue", "cycle", "cycles")}

    def to_json(self) -> Json:
        raise NotImplementedError

    @property
    def inputs(self) -> tuple[StreamValue, ...]:
        """The stream values it consumes (none for macros and transfers)."""
        return ()

    @property
    def outputs(self) -> tuple[StreamValue, ...]:
        """The stream values it produces (none for macros and transfers)."""
        return ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Read(Instruction):
    """MEM read of vector `addr` of buffer `buf` onto a stream; `src`: the instruction that
    wrote that address (-1: the initial image)."""

    op: ClassVar[str] = "read"
    buf: str
    addr: int
    src: int
    out: tuple[StreamValue, ...]

    @property
    def outputs(self) -> tuple[StreamValue, ...]:
        return self.out

    def to_json(self) -> Json:
        return {**self._head(), "op": self.op, "buf": self.buf, "addr": self.addr,
                "src": self.src, "out": [v.to_json() for v in self.out]}

    @classmethod
    def from_json(cls, doc: Json) -> Read:
        return cls(**cls._head_args(doc), buf=doc["buf"], addr=doc["addr"], src=doc["src"],
                   out=_values(doc["out"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Write(Instruction):
    """MEM write of a stream value to vector `addr` of buffer `buf`."""

    op: ClassVar[str] = "write"
    buf: str
    addr: int
    in_: tuple[StreamValue, ...]

    @property
    def inputs(self) -> tuple[StreamValue, ...]:
        return self.in_

    def to_json(self) -> Json:
        return {**self._head(), "op": self.op, "buf": self.buf, "addr": self.addr,
                "in": [v.to_json() for v in self.in_]}

    @classmethod
    def from_json(cls, doc: Json) -> Write:
        return cls(**cls._head_args(doc), buf=doc["buf"], addr=doc["addr"],
                   in_=_values(doc["in"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Unpack(Instruction):
    """VXM decode of 7 packed Q3P5 byte streams into 16 int8 level streams."""

    op: ClassVar[str] = "unpack"
    in_: tuple[StreamValue, ...]
    out: tuple[StreamValue, ...]

    @property
    def inputs(self) -> tuple[StreamValue, ...]:
        return self.in_

    @property
    def outputs(self) -> tuple[StreamValue, ...]:
        return self.out

    def to_json(self) -> Json:
        return {**self._head(), "op": self.op, "in": [v.to_json() for v in self.in_],
                "out": [v.to_json() for v in self.out]}

    @classmethod
    def from_json(cls, doc: Json) -> Unpack:
        return cls(**cls._head_args(doc), in_=_values(doc["in"]), out=_values(doc["out"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Install(Instruction):
    """MXM weight install: 16 int8 streams become rows `row`..`row + 15` of weight buffer
    `buffer` of the plane; `tag` names the weight chunk (passes check it)."""

    op: ClassVar[str] = "install"
    buffer: int
    row: int
    tag: str
    in_: tuple[StreamValue, ...]

    @property
    def inputs(self) -> tuple[StreamValue, ...]:
        return self.in_

    def to_json(self) -> Json:
        return {**self._head(), "op": self.op, "buffer": self.buffer, "row": self.row,
                "tag": self.tag, "in": [v.to_json() for v in self.in_]}

    @classmethod
    def from_json(cls, doc: Json) -> Install:
        return cls(**cls._head_args(doc), buffer=doc["buffer"], row=doc["row"],
                   tag=doc["tag"], in_=_values(doc["in"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class MatmulPass(Instruction):
    """One masked MXM pass: an int8 activation vector times rows [lo, hi) (one group) of
    weight buffer `buffer`, an int32 result vector on a group of 4 streams."""

    op: ClassVar[str] = "matmul_pass"
    buffer: int
    rows: tuple[int, int]
    tag: str
    in_: tuple[StreamValue, ...]
    out: tuple[StreamValue, ...]

    @property
    def inputs(self) -> tuple[StreamValue, ...]:
        return self.in_

    @property
    def outputs(self) -> tuple[StreamValue, ...]:
        return self.out

    def to_json(self) -> Json:
        return {**self._head(), "op": self.op, "buffer": self.buffer, "rows": list(self.rows),
                "tag": self.tag, "in": [v.to_json() for v in self.in_],
                "out": [v.to_json() for v in self.out]}

    @classmethod
    def from_json(cls, doc: Json) -> MatmulPass:
        lo, hi = doc["rows"]
        return cls(**cls._head_args(doc), buffer=doc["buffer"], rows=(lo, hi), tag=doc["tag"],
                   in_=_values(doc["in"]), out=_values(doc["out"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class BufferOp(Instruction):
    """An instruction over whole buffers (macros, C2C transfers): the buffers it `reads` and
    `writes`, the instructions whose writes it waits for (`srcs`), the streams it holds and
    its VXM ALU cycles."""

    reads: tuple[str, ...]
    writes: tuple[str, ...]
    srcs: tuple[int, ...]
    holds: tuple[StreamHold, ...]
    alu_cycles: int

    def _buffers_json(self) -> Json:
        return {"reads": list(self.reads), "writes": list(self.writes),
                "srcs": list(self.srcs), "holds": [h.to_json() for h in self.holds]}

    @staticmethod
    def _buffers_args(doc: Json) -> Json:
        return {"reads": tuple(doc["reads"]), "writes": tuple(doc["writes"]),
                "srcs": tuple(doc["srcs"]),
                "holds": tuple(StreamHold.from_json(h) for h in doc["holds"]),
                "alu_cycles": doc["alu_cycles"]}


@dataclass(frozen=True, slots=True, kw_only=True)
class Macro(BufferOp):
    """A graph op run on the VXM or an SXM through the reference semantics: IR op number
    `ir_op` of the entry function, named `ir_name`."""

    op: ClassVar[str] = "macro"
    ir_op: int
    ir_name: str

    def to_json(self) -> Json:
        return {**self._head(), "alu_cycles": self.alu_cycles, "op": self.op,
                "ir_op": self.ir_op, "ir_name": self.ir_name, **self._buffers_json()}

    @classmethod
    def from_json(cls, doc: Json) -> Macro:
        return cls(**cls._head_args(doc), **cls._buffers_args(doc), ir_op=doc["ir_op"],
                   ir_name=doc["ir_name"])


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSums(BufferOp):
    """The matmul's per-group sums of the int8 activations (for the group offsets): groups
    of `group` of the `k` inputs."""

    op: ClassVar[str] = "group_sums"
    group: int
    k: int

    def to_json(self) -> Json:
        return {**self._head(), "alu_cycles": self.alu_cycles, "op": self.op,
                "group": self.group, "k": self.k, **self._buffers_json()}

    @classmethod
    def from_json(cls, doc: Json) -> GroupSums:
        return cls(**cls._head_args(doc), **cls._buffers_args(doc), group=doc["group"],
                   k=doc["k"])


@dataclass(frozen=True, slots=True, kw_only=True)
class Rescale(BufferOp):
    """The matmul's float32 rescale of groups [g0, g1) of column tile `tile` (columns
    `cols`): the int32 `partials` of those groups, scaled and offset by the decoded group
    codes (`meta`) and column words (`words`) with the group sums `sx`, added to the running
    sum `acc` (none for the first), times the `row_scale` (only the last), into `result`.
    With decoded scales (`groq{scales=f32}`) `meta` and `words` are None and `scales` names
    the float32 scales and offsets of groups g0..g1-1 ([2 (g1 - g0), 320] planes: the scale
    rows, then the offset rows), which it reads instead of decoding. In the integer rescale
    contract (`groq{scales=int}`) `block` is the groups per int32 block (K chunk; 0: the
    float contract), `scales` names the groups' uint8 integer scales ([g1 - g0, 320]) and
    `words` the column base and offset ([2, 320] float32 planes)."""

    op: ClassVar[str] = "rescale"
    tile: int
    cols: tuple[int, int]
    group: int
    groups: int
    g0: int
    g1: int
    first: bool
    last: bool
    k: int
    partials: tuple[str, ...]
    meta: str | None
    words: str | None
    sx: str
    acc: str | None
    row_scale: str | None
    result: str
    scales: str | None = None
    block: int = 0

    def to_json(self) -> Json:
        return {**self._head(), "alu_cycles": self.alu_cycles, "op": self.op,
                "tile": self.tile, "cols": list(self.cols), "group": self.group,
                "groups": self.groups, "g0": self.g0, "g1": self.g1, "first": self.first,
                "last": self.last, "k": self.k, "partials": list(self.partials),
                "meta": self.meta, "words": self.words, "sx": self.sx, "acc": self.acc,
                "row_scale": self.row_scale, "result": self.result,
                **({"scales": self.scales} if self.scales else {}),
                **({"block": self.block} if self.block else {}), **self._buffers_json()}

    @classmethod
    def from_json(cls, doc: Json) -> Rescale:
        c0, c1 = doc["cols"]
        return cls(**cls._head_args(doc), **cls._buffers_args(doc), tile=doc["tile"],
                   cols=(c0, c1), group=doc["group"], groups=doc["groups"], g0=doc["g0"],
                   g1=doc["g1"], first=doc["first"], last=doc["last"], k=doc["k"],
                   partials=tuple(doc["partials"]), meta=doc["meta"], words=doc["words"],
                   sx=doc["sx"], acc=doc["acc"], row_scale=doc["row_scale"],
                   result=doc["result"], scales=doc.get("scales"),
                   block=int(doc.get("block", 0)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Send(BufferOp):
    """C2C send of a buffer over `link` to chip `to`; `peer`: the matching Receive."""

    op: ClassVar[str] = "send"
    link: int
    to: int
    peer: int

    def to_json(self) -> Json:
        return {**self._head(), "op": self.op, "link": self.link, "to": self.to,
                **self._buffers_json(), "alu_cycles": self.alu_cycles, "peer": self.peer}

    @classmethod
    def from_json(cls, doc: Json) -> Send:
        return cls(**cls._head_args(doc), **cls._buffers_args(doc), link=doc["link"],
                   to=doc["to"], peer=doc["peer"])


@dataclass(frozen=True, slots=True, kw_only=True)
class Receive(BufferOp):
    """C2C receive over `link` from chip `from_` of the data of Send `src`."""

    op: ClassVar[str] = "receive"
    link: int
    src: int
    from_: int

    def to_json(self) -> Json:
        return {**self._head(), "op": self.op, "link": self.link, "src": self.src,
                **self._buffers_json(), "alu_cycles": self.alu_cycles, "from": self.from_}

    @classmethod
    def from_json(cls, doc: Json) -> Receive:
        return cls(**cls._head_args(doc), **cls._buffers_args(doc), link=doc["link"],
                   src=doc["src"], from_=doc["from"])


INSTRUCTION_CLASSES: dict[str, type[Instruction]] = {
    c.op: c for c in (Read, Write, Unpack, Install, MatmulPass, Macro, GroupSums, Rescale,
                      Send, Receive)}


def instruction_from_json(doc: Json) -> Instruction:
    """The instruction of a program.json entry, by its `op`."""
    return INSTRUCTION_CLASSES[doc["op"]].from_json(doc)
