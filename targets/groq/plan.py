"""The multi-chip planner of the Groq target: which chip holds which weights, and what moves
over C2C, from shapes and packed types alone (docs/groq-multichip.md).

    plan = plan_module(module, PlanOptions(machine="tsp-v1"))
    plan.write(out_dir)          # plan.json, report.txt, report.json
    print(plan.text())

The planner never reads weight data: it needs only the `!quant3p5.packed<[K, N], g, ...>`
types and tensor shapes, so it runs on shape-only modules (`--shape-only`) and on fully
materialized ones alike (GroqTarget takes its chips' layer ranges from it).

Model: the entry function's ops, in program order, become *units*. A weighted matmul
(`quant3p5.matmul`, `matmul_int8`, `fused_matmul`) is a unit with an exact packed-weight
size and a cycle cost from the machine file (targets/groq/cost.py, shared with
GroqTarget's report); one whose weights do not fit a chip is split
by output columns (multiples of the MXM width) into shards on consecutive chips. Every
other op is a vector unit (VXM/SXM). The sequence of units is cut into contiguous ranges,
one per chip (a pipeline across layers, cuts may fall inside a layer), with the fewest
chips whose SRAM holds the range (weights + activation buffers), balanced by cycles. Every
value that is defined before a cut and used after it crosses the cut as an explicit C2C
transfer (a column split forwards the partial outputs of earlier shards: a gather along
the chain). All figures come from the machine file; the formulas are in
docs/groq-multichip.md.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xdsl.dialects import arith, func, tensor
from xdsl.dialects.builtin import (
    IntegerType,
    ModuleOp,
    TensorType,
)
from xdsl.ir import Operation, SSAValue

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.entry import EntryError, entry_function
from q35c.compiler.options import check_choice, check_int, check_text
from q35c.dialects import q35nn, quant3p5
from q35c.targets.groq import cost as costs
from q35c.targets.groq.machine import (
    DEFAULT_MACHINE,
    LEVELS,
    SCALES,
    Machine,
    load_machine,
    with_layout,
)

PLAN_SCHEMA = "q35c-groq-plan/1"
REPORT_SCHEMA = "q35c-groq-plan-report/1"

_MATMULS = (quant3p5.MatmulOp, quant3p5.MatmulInt8Op, quant3p5.FusedMatmulOp)
_FREE = (quant3p5.WeightOp, arith.ConstantOp, tensor.EmptyOp, tensor.ReshapeOp, func.ReturnOp)
"""Ops that cost no cycles: weights and constants are resident, reshapes are aliases."""
_LAYER_RE = re.compile(r"(?:^|[./_])(?:layers?|blocks?|h)[./_](\d+)(?:[./_]|$)")


@dataclass(frozen=True)
class PlanOptions:
    """Planner options; from the target spec with `groq{machine="tsp-v1" chips=8}`."""

    machine: str = DEFAULT_MACHINE
    """A machine name (targets/groq/machines/) or a path to a machine file."""
    chips: int | None = None
    """Use exactly this many pipeline stages if possible (>= the minimum); None: the fewest."""
    table_bytes: int | None = None
    """Bytes per element of an embedding table (`q35nn.gather` on a weight) kept in SRAM;
    None: the table's element size in the IR, as GroqTarget keeps it (a float32 table
    takes 4 bytes per element, so the plan agrees with the compiled program); 1: int8
    rows, a what-if for a table quantized to int8."""
    granule: int = 16
    """Weights larger than 1/granule of a chip's SRAM are cut into column (table: row)
    chunks of at most that size, so that chips fill up; chunks of one op that land on one
    chip are merged again. 1: split only what does not fit a chip at all."""

    scales: str = "codes"
    """The weight layout (GroqTarget's `scales`): "codes" the packed group codes and column
    words, "f32" decoded float32 scales and offsets per group."""

    levels: str = "packed"
    """The weights (GroqTarget's `levels`): "packed" pair codes, "int8" levels."""

    timeline: str = "chain"
    """How one token's pass is timed: "chain" (chip after chip, every value crossing a cut
    forwarded to the next chip, a split matmul's shards one after the other) or "dataflow"
    (each op starts when its inputs have arrived; every value goes straight from its
    producer's chip to each chip that reads it, and a split matmul's column shards run in
    parallel, their outputs gathered on the last shard's chip: what the compiled multi-chip
    program does, `columns.py`). docs/groq-multichip.md, "Per-token figures"."""

    KEYS = {"machine": "machine", "chips": "chips", "table-bytes": "table_bytes",
            "granule": "granule", "scales": "scales", "levels": "levels",
            "timeline": "timeline"}
    TIMELINES = ("chain", "dataflow")
    MAX_TABLE_BYTES = 8
    """An embedding element is at most a float64."""
    MAX_GRANULE = 1024
    """Finer than 1/1024 of a chip's SRAM only multiplies chunks."""

    def __post_init__(self) -> None:
        where = "--target groq"
        check_text(where, "machine", self.machine)
        if self.chips is not None:
            check_int(where, "chips", self.chips, 1)
        if self.table_bytes is not None:
            check_int(where, "table-bytes", self.table_bytes, 1, self.MAX_TABLE_BYTES)
        check_int(where, "granule", self.granule, 1, self.MAX_GRANULE)
        check_choice(where, "scales", self.scales, SCALES)
        check_choice(where, "levels", self.levels, LEVELS)
        check_choice(where, "timeline", self.timeline, self.TIMELINES)

    @classmethod
    def from_spec_args(cls, args: dict[str, tuple]) -> PlanOptions:
        values: dict[str, Any] = {}
        for key, value in sorted(args.items()):
            if key not in cls.KEYS:
                raise Q35cError(f"--target groq: unknown option '{key}' for --shape-only "
                                f"(known: {', '.join(sorted(cls.KEYS))})")
            if len(value) != 1:
                raise Q35cError(f"--target groq: option '{key}' takes one value")
            values[cls.KEYS[key]] = value[0]  # checked by __post_init__
        return cls(**values)


# -- cost model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CostModel:
    """Every rate and latency the planner uses, read from one machine file."""

    machine: Machine

    @property
    def capacity(self) -> int:
        return self.machine.sram_bytes

    @property
    def vector_bytes(self) -> int:
        return self.machine.vector_bytes

    @property
    def mem_bytes_per_cycle(self) -> int:
        return costs.mem_bytes_per_cycle(self.machine)

    @property
    def c2c_bytes_per_cycle(self) -> float:
        links = int(self.machine.param("c2c_links_per_peer"))
        return links * self.machine.c2c_link_bytes_per_s / self.machine.clock_hz

    def vectors(self, nbytes: int) -> int:
        """`nbytes` rounded up to whole MEM vectors (MEM addresses are vector-granular)."""
        return -(-nbytes // self.vector_bytes) * self.vector_bytes

    def packed_bytes(self, k: int, n: int, group: int) -> int:
        """Exact on-chip bytes of a Q3P5 [K, n] weight in the machine's weight layout
        (targets/groq/cost.py)."""
        return costs.packed_bytes(k, n, group, self.machine.decoded_scales,
                                  self.machine.int8_levels, self.machine.int_scales)

    def matmul(self, k: int, n: int, group: int, rows: int) -> dict[str, int]:
        """Cycle components of one packed matmul (or column shard) over `rows` activation
        vectors: GroqTarget's per-layer cost (targets/groq/cost.py `matmul_cost`) without
        the install prefetch credit (layers follow each other on a chip, each with its own
        installs), and with the VXM term (unpacks + per-group float32 rescale + group sums
        over the VXM queues): cycles = max(mxm, install, mem, vxm) + latency."""
        c = costs.matmul_cost(self.machine, costs.matmul_work(self.machine, k, n, group, rows),
                              prefetch=False)
        return {x: c[x] for x in ("mxm", "install", "mem", "vxm", "latency", "cycles")}

    def vector(self, op: Operation) -> int:
        """A VXM/SXM op: GroqTarget's macro cost (targets/groq/cost.py `op_work`,
        `macro_cycles`) with io = the vectors of its largest operand/result over
        `DATA_SLICES` slices, without the placement-dependent stream travel."""
        unit, kind, elements, passes = costs.op_work(op, _shape)
        nbytes = max([_value_bytes(v) for v in list(op.operands) + list(op.results)] + [1])
        io = -(-self.vectors(nbytes) // self.vector_bytes // costs.DATA_SLICES)
        return costs.macro_cycles(self.machine, kind, elements, passes, io)

    def lookup(self, elements: int) -> int:
        """An embedding lookup of `elements` output elements (SXM-like data movement at one
        vector per cycle, plus the VXM pipeline latency)."""
        return -(-elements // self.machine.lanes) + int(self.machine.param("vxm_latency"))

    def c2c(self, nbytes: int) -> int:
        """Cycles to move `nbytes` to the next chip: bandwidth over the peer links plus the
        link latency."""
        if nbytes <= 0:
            return 0
        return math.ceil(nbytes / self.c2c_bytes_per_cycle) + int(
            self.machine.param("c2c_latency_cycles"))


# -- units ---------------------------------------------------------------------------------


@dataclass
class Unit:
    """One op (or one column shard of a matmul) in program order."""

    index: int
    op_index: int
    kind: str  # matmul | gather | vector
    name: str
    layer: str
    cycles: int
    weights: dict[str, int] = field(default_factory=dict)
    """weight (or weight shard) name -> bytes in SRAM, rounded to whole vectors."""
    detail: dict[str, Any] = field(default_factory=dict)


def _shape(value: SSAValue) -> tuple[int, ...]:
    t = value.type
    return tuple(t.get_shape()) if isinstance(t, TensorType) else ()


def _elements(value: SSAValue) -> int:
    t = value.type
    if isinstance(t, TensorType):
        return math.prod(t.get_shape())
    return 1


def _element_bytes(value: SSAValue) -> int:
    t = value.type
    elem = t.get_element_type() if isinstance(t, TensorType) else t
    if isinstance(elem, IntegerType):
        return max(1, -(-elem.width.data // 8))
    width = getattr(elem, "bitwidth", 32)
    return max(1, -(-int(width) // 8))


def _value_bytes(value: SSAValue) -> int:
    return _elements(value) * _element_bytes(value)


def _weight_of(value: SSAValue) -> quant3p5.WeightOp | None:
    owner = value.owner
    return owner if isinstance(owner, quant3p5.WeightOp) else None


def _layer_of(name: str) -> str | None:
    match = _LAYER_RE.search(name)
    return f"layer {int(match.group(1))}" if match else None


def _entry(module: ModuleOp, entry: str | None = None) -> func.FuncOp:
    try:
        return entry_function(module, entry)
    except EntryError as err:
        raise Q35cError(f"groq plan: {err}") from None


@dataclass
class _Program:
    units: list[Unit]
    defs: list[tuple[int, int, int, str]]
    """(def position, last-use position, bytes, name) of every activation value."""
    rows: int
    packed_weight_bytes: int
    parameters: int
    inputs: dict[int, list[tuple[int, int, str]]] = field(default_factory=dict)
    """op index -> (op index of the producer, bytes, name) of each activation operand
    (producer -1: a function argument, on every chip from the start)."""
    result_bytes: dict[int, int] = field(default_factory=dict)
    """op index -> bytes of its (first) result."""


def _build_units(module: ModuleOp, cost: CostModel, options: PlanOptions,
                 entry: str | None = None) -> _Program:
    fn = _entry(module, entry)
    ops = list(fn.body.block.ops)
    capacity = cost.capacity
    units: list[Unit] = []
    position: dict[int, tuple[int, int]] = {}  # id(op) -> (first, last) unit index
    partial_defs: list[tuple[int, int, int, str]] = []
    explicit: dict[int, str] = {}  # unit index -> layer named by its weights
    current_layer = "pre"
    rows_seen = 0
    packed_total = 0
    parameters = 0
    counted: set[str] = set()
    for op_index, op in enumerate(ops):
        if isinstance(op, _FREE):
            continue
        names = [w.weight_name.data for v in op.operands if (w := _weight_of(v)) is not None]
        layer = next((lbl for n in names if (lbl := _layer_of(n))), None)
        if layer is not None:
            current_layer = layer
        first = len(units)
        if isinstance(op, _MATMULS) and _weight_of(op.weights) is not None:
            wtype = op.weights.type
            assert isinstance(wtype, quant3p5.PackedWeightType)
            if wtype.layout.data != "q3p5":
                raise Q35cError(f"groq plan: weight '{names[0]}' has layout "
                                f"'{wtype.layout.data}'; the planner sizes Q3P5 only")
            k, n = wtype.get_shape()
            group = wtype.group
            rows = math.prod(op.lhs.type.get_shape()[:-1]) if isinstance(
                op.lhs.type, TensorType) else 1
            rows_seen = rows_seen or rows
            wname = _weight_of(op.weights).weight_name.data
            full = cost.packed_bytes(k, n, group)
            if wname not in counted:
                counted.add(wname)
                packed_total += full
                parameters += k * n
            io_bytes = _value_bytes(op.lhs) + _value_bytes(op.results[0])
            reserve = 4 * io_bytes
            other = {w.weight_name.data: _dense_weight_bytes(w, cost, options)
                     for v in op.operands
                     if v is not op.weights and (w := _weight_of(v)) is not None}
            shards = _split_columns(k, n, group, capacity - reserve - sum(other.values()),
                                    capacity // options.granule, cost, wname)
            for j, (c0, c1) in enumerate(shards):
                nbytes = cost.vectors(cost.packed_bytes(k, c1 - c0, group))
                comp = cost.matmul(k, c1 - c0, group, rows)
                key = wname if len(shards) == 1 else f"{wname}[:, {c0}:{c1}]"
                weights = {key: nbytes, **(other if j == 0 else {})}
                detail = {"k": k, "n": n, "cols": [c0, c1], "group": group, "rows": rows,
                          **{c: comp[c] for c in ("mxm", "install", "mem", "vxm", "latency")}}
                units.append(Unit(len(units), op_index, "matmul", wname, current_layer,
                                  comp["cycles"], weights, detail))
                if len(shards) > 1 and j < len(shards) - 1:
                    # The columns computed so far travel on to the next shard (a gather
                    # along the chain of chips).
                    out = _value_bytes(op.results[0]) * c1 // n
                    partial_defs.append((len(units) - 1, len(units), out,
                                         f"{wname} partial [:, 0:{c1}]"))
        elif isinstance(op, q35nn.GatherOp) and (table := _weight_of(op.operands[0])):
            # An embedding table: split by rows (vocabulary) when it does not fit a chip;
            # each shard looks up the rows it holds and adds them into the running output.
            tname = table.weight_name.data
            vocab = table.result.type.get_shape()[0]
            table_bytes = options.table_bytes or _element_bytes(op.operands[0])
            row_bytes = _elements(op.operands[0]) // vocab * table_bytes
            if tname not in counted:
                counted.add(tname)
                parameters += _elements(op.operands[0])
            out_bytes = _value_bytes(op.results[0])
            hard = capacity - 4 * out_bytes
            if cost.vectors(row_bytes) > hard:
                raise Q35cError(f"groq plan: embedding table '{tname}': one row does not "
                                "fit one chip's SRAM")
            if cost.vectors(vocab * row_bytes) <= capacity // options.granule:
                per_shard = vocab
            else:
                per_shard = min(hard, max(capacity // options.granule, row_bytes)) // \
                    cost.vectors(row_bytes)
            parts = -(-vocab // per_shard)
            cycles = cost.lookup(_elements(op.results[0]) * table_bytes)
            start = 0
            for j in range(parts):
                stop = min(vocab, start + vocab // parts + (1 if j < vocab % parts else 0))
                key = tname if parts == 1 else f"{tname}[{start}:{stop}, :]"
                detail = {"table_rows": [start, stop], "vocab": vocab, "row_bytes": row_bytes}
                units.append(Unit(len(units), op_index, "gather", tname, current_layer, cycles,
                                  {key: cost.vectors((stop - start) * row_bytes)}, detail))
                if parts > 1 and j < parts - 1:
                    partial_defs.append((len(units) - 1, len(units), out_bytes,
                                         f"{tname} partial lookup"))
                start = stop
        else:
            weights = {w.weight_name.data: _dense_weight_bytes(w, cost, options)
                       for v in op.operands if (w := _weight_of(v)) is not None}
            units.append(Unit(len(units), op_index, "vector", op.name, current_layer,
                              cost.vector(op), weights))
        position[id(op)] = (first, len(units) - 1)
        if layer is not None:
            explicit.update((i, layer) for i in range(first, len(units)))
    if not units:
        raise Q35cError("groq plan: the entry function computes nothing")
    # Layers: units between two units of one numbered layer belong to it; after the last
    # numbered unit comes "post" (final norm, lm_head), before the first "pre" (embedding).
    if explicit:
        last = max(explicit)
        for u in units[last + 1:]:
            u.layer = "post"
    # Activation values: defined at their op's last unit, live until their last user's.
    defs = list(partial_defs)
    for arg in fn.body.block.args:
        last = max((position[id(u.operation)][1] for u in arg.uses
                    if id(u.operation) in position), default=-1)
        defs.append((-1, last, _value_bytes(arg), arg.name_hint or "arg"))
    for op_index, op in enumerate(ops):
        if id(op) not in position:
            continue
        _, at = position[id(op)]
        for result in op.results:
            last = max((_last_use(u.operation, position) for u in result.uses), default=at)
            defs.append((at, last, _value_bytes(result),
                         result.name_hint or f"{op.name}#{op_index}"))
    index_of = {id(op): i for i, op in enumerate(ops)}
    inputs: dict[int, list[tuple[int, int, str]]] = {}
    for op_index, op in enumerate(ops):
        if id(op) not in position:
            continue
        for v in op.operands:
            src = _producer(v)
            if src is None:
                continue
            at = -1 if src is fn else index_of[id(src)]
            name = v.name_hint or (f"{src.name}#{at}" if at >= 0 else "arg")
            inputs.setdefault(op_index, []).append((at, _value_bytes(v), name))
    results = {i: _value_bytes(op.results[0]) for i, op in enumerate(ops)
               if id(op) in position and op.results}
    return _Program(units, defs, rows_seen or 1, packed_total, parameters, inputs, results)


def _producer(value: SSAValue) -> Operation | None:
    """The op whose result `value` is, through reshapes (aliases); None for weights and
    constants (resident); the function op itself for its arguments."""
    while isinstance(value.owner, tensor.ReshapeOp):
        value = value.owner.operands[0]
    owner = value.owner
    if not isinstance(owner, Operation):  # a block argument: the function's input
        return owner.parent_op()
    if isinstance(owner, (quant3p5.WeightOp, arith.ConstantOp, tensor.EmptyOp)):
        return None
    return owner


def _last_use(op: Operation, position: dict[int, tuple[int, int]]) -> int:
    """Unit index of `op`'s last unit; free ops (reshapes) forward to their own users."""
    if id(op) in position:
        return position[id(op)][1]
    if isinstance(op, func.ReturnOp):
        return 1 << 40  # the function's results stay live to the end
    return max((_last_use(u.operation, position) for r in op.results for u in r.uses),
               default=-1)


def _dense_weight_bytes(weight: quant3p5.WeightOp, cost: CostModel,
                        options: PlanOptions) -> int:
    t = weight.result.type
    if isinstance(t, quant3p5.PackedWeightType):
        k, n = t.get_shape()
        return cost.vectors(cost.packed_bytes(k, n, t.group))
    return cost.vectors(_value_bytes(weight.result))


def _split_columns(k: int, n: int, group: int, hard: int, soft: int, cost: CostModel,
                   name: str) -> list[tuple[int, int]]:
    """Column ranges (multiples of the MXM width) of at most `soft` bytes each (but at
    least one tile), never over `hard` bytes; one range when the weight fits `soft`."""
    full = cost.vectors(cost.packed_bytes(k, n, group))
    if full <= min(hard, soft):
        return [(0, n)]
    width = cost.machine.mxm_cols
    tiles = -(-n // width)
    tile_bytes = cost.vectors(cost.packed_bytes(k, width, group))
    if tile_bytes > hard:
        raise Q35cError(f"groq plan: weight '{name}' [{k}, {n}]: one {width}-column tile "
                        f"({tile_bytes} bytes) does not fit one chip's SRAM")
    max_tiles = max(1, min(hard, max(soft, tile_bytes)) // tile_bytes)
    parts = -(-tiles // max_tiles)
    ranges, start = [], 0
    for j in range(parts):
        count = tiles // parts + (1 if j < tiles % parts else 0)
        stop = min(n, start + count * width)
        ranges.append((start, stop))
        start = stop
    return ranges


# -- partition -----------------------------------------------------------------------------


@dataclass
class _Liveness:
    cut: list[int]
    """cut[p]: bytes of the values defined at or before unit p and used after it (function
    arguments count as defined before unit 0, function results as used after the end)."""

    @classmethod
    def of(cls, program: _Program) -> _Liveness:
        n = len(program.units)
        diff = [0] * (n + 1)
        for at, last, nbytes, _ in program.defs:
            lo, hi = max(at, 0), min(last, n)
            if hi > lo:
                diff[lo] += nbytes
                diff[hi] -= nbytes
        cut, run = [], 0
        for p in range(n):
            run += diff[p]
            cut.append(run)
        return cls(cut)


def _chip_bytes(units: list[Unit], start: int, end: int, live: _Liveness,
                cost: CostModel) -> tuple[int, int]:
    weights: dict[str, int] = {}
    for u in units[start:end + 1]:
        weights.update(u.weights)
    peak = max(live.cut[start:end + 1])
    incoming = live.cut[start - 1] if start > 0 else 0
    outgoing = live.cut[end] if end < len(units) - 1 else 0
    activations = cost.vectors(peak) + cost.vectors(incoming) + cost.vectors(outgoing)
    return sum(weights.values()), activations


def _greedy(units: list[Unit], live: _Liveness, cost: CostModel,
            bound: int | None) -> list[tuple[int, int]] | None:
    """Contiguous ranges, each as long as SRAM (and the cycle bound) allow."""
    capacity = cost.capacity
    ranges: list[tuple[int, int]] = []
    start, n = 0, len(units)
    while start < n:
        weights: dict[str, int] = {}
        wsum, cycles, peak, best = 0, 0, 0, None
        incoming = cost.vectors(live.cut[start - 1]) if start > 0 else 0
        for end in range(start, n):
            u = units[end]
            for key, nbytes in u.weights.items():
                if key not in weights:
                    weights[key] = nbytes
                    wsum += nbytes
            cycles += u.cycles
            peak = max(peak, live.cut[end])
            if wsum > capacity or (bound is not None and cycles > bound and end > start):
                break
            outgoing = cost.vectors(live.cut[end]) if end < n - 1 else 0
            if wsum + cost.vectors(peak) + incoming + outgoing <= capacity:
                best = end
        if best is None:
            return None
        ranges.append((start, best))
        start = best + 1
    return ranges


def _partition(units: list[Unit], live: _Liveness, cost: CostModel,
               chips: int | None) -> list[tuple[int, int]]:
    fewest = _greedy(units, live, cost, None)
    if fewest is None:
        bad = next(u for u in units if sum(u.weights.values()) > cost.capacity
                   or not _greedy([u], _Liveness([live.cut[u.index]]), cost, None))
        raise Q35cError(f"groq plan: {bad.kind} '{bad.name}' needs more SRAM than one chip "
                        f"has ({cost.capacity} bytes)")
    target = len(fewest)
    if chips is not None:
        if chips < target:
            raise Q35cError(f"groq plan: the model needs at least {target} chips; chips={chips} "
                            "is too few")
        target = min(chips, len(units))
    if target == 1:
        return fewest
    lo = max(u.cycles for u in units)
    hi = sum(u.cycles for u in units)
    best = fewest
    while lo < hi:  # the smallest per-chip cycle bound that still needs <= target chips
        mid = (lo + hi) // 2
        ranges = _greedy(units, live, cost, mid)
        if ranges is not None and len(ranges) <= target:
            hi, best = mid, ranges
        else:
            lo = mid + 1
    final = _greedy(units, live, cost, lo)
    return final if final is not None and len(final) <= target else best


def _join(a: Unit, b: Unit, cost: CostModel) -> Unit:
    """Two consecutive chunks of one op on one chip as one unit."""
    own_a, own_b = next(iter(a.weights)), next(iter(b.weights))
    others = {k: v for k, v in {**a.weights, **b.weights}.items() if k not in (own_a, own_b)}
    d = dict(a.detail)
    if a.kind == "matmul":
        c0, c1 = a.detail["cols"][0], b.detail["cols"][1]
        k, n, group = d["k"], d["n"], d["group"]
        nbytes = cost.vectors(cost.packed_bytes(k, c1 - c0, group))
        comp = cost.matmul(k, c1 - c0, group, d["rows"])
        d.update({"cols": [c0, c1],
                  **{c: comp[c] for c in ("mxm", "install", "mem", "vxm", "latency")}})
        key = a.name if (c0, c1) == (0, n) else f"{a.name}[:, {c0}:{c1}]"
        cycles = comp["cycles"]
    else:
        r0, r1 = a.detail["table_rows"][0], b.detail["table_rows"][1]
        nbytes = cost.vectors((r1 - r0) * d["row_bytes"])
        d["table_rows"] = [r0, r1]
        key = a.name if (r0, r1) == (0, d["vocab"]) else f"{a.name}[{r0}:{r1}, :]"
        cycles = a.cycles
    return Unit(a.index, a.op_index, a.kind, a.name, a.layer, cycles, {key: nbytes, **others}, d)


def _merge(units: list[Unit], ranges: list[tuple[int, int]],
           cost: CostModel) -> list[list[Unit]]:
    """Per chip, its units with the chunks of one op merged; shards numbered per op."""
    chips: list[list[Unit]] = []
    for start, end in ranges:
        placed: list[Unit] = []
        for u in units[start:end + 1]:
            prev = placed[-1] if placed else None
            if (prev is not None and u.kind in ("matmul", "gather") and prev.kind == u.kind
                    and prev.op_index == u.op_index):
                placed[-1] = _join(prev, u, cost)
            else:
                placed.append(Unit(u.index, u.op_index, u.kind, u.name, u.layer, u.cycles,
                                   dict(u.weights), dict(u.detail)))
        chips.append(placed)
    by_op: dict[int, list[Unit]] = {}
    for placed in chips:
        for u in placed:
            if u.kind in ("matmul", "gather"):
                by_op.setdefault(u.op_index, []).append(u)
    for shards in by_op.values():
        if len(shards) > 1:
            for j, u in enumerate(shards):
                u.detail["shard"] = [j, len(shards)]
    return chips


# -- the plan ------------------------------------------------------------------------------


@dataclass
class Plan:
    """A partition of one model over `len(chips)` chips, with its C2C transfers and costs."""

    machine: Machine
    options: PlanOptions
    chips: list[dict[str, Any]]
    transfers: list[dict[str, Any]]
    matmuls: list[dict[str, Any]]
    summary: dict[str, Any]

    # -- outputs ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        m = self.machine
        return {
            "schema": PLAN_SCHEMA,
            "machine": {"name": m.name, "clock_hz": m.clock_hz, "sram_bytes": m.sram_bytes,
                        "c2c_link_bytes_per_s": m.c2c_link_bytes_per_s,
                        "c2c_links_per_peer": m.param("c2c_links_per_peer"),
                        "c2c_latency_cycles": m.param("c2c_latency_cycles")},
            "options": {"chips": self.options.chips, "table_bytes": self.options.table_bytes},
            "summary": self.summary,
            "chips": self.chips,
            "transfers": self.transfers,
            "matmuls": self.matmuls,
        }

    def report_json(self) -> dict[str, Any]:
        s = self.summary
        return {
            "schema": REPORT_SCHEMA,
            "mode": "plan",
            "machine": self.machine.name,
            "chips": s["chips"],
            "cycles": s["cycles_per_pass"],
            "lower_bound_cycles": s["lower_bound_cycles"],
            "bound_terms": s["bound_terms"],
            "roofline_cycles": s["roofline_cycles"],
            "weight_layout": {"scales": self.machine.scales,
                              "levels": "int8" if self.machine.int8_levels else "packed"},
            "sram_bytes": s["sram_bytes"],
            "sram_capacity_bytes_per_chip": self.machine.sram_bytes,
            "sram_bytes_per_chip": [c["sram_bytes"] for c in self.chips],
            "cycles_per_token": s["cycles_per_token"],
            "tokens_per_s": s["tokens_per_s"],
            "tokens_per_s_per_chip": round(s["tokens_per_s"] / s["chips"], 3),
            "pipelined_tokens_per_s": s["pipelined_tokens_per_s"],
            "c2c_bytes_per_token": s["c2c_bytes_per_token"],
            "c2c_cycles_per_token": s["c2c_cycles_per_token"],
            "per_chip": [{k: c[k] for k in ("chip", "layers", "sram_bytes", "weight_bytes",
                                            "activation_bytes", "cycles")}
                         for c in self.chips],
        }

    def text(self) -> str:
        s, m = self.summary, self.machine
        lines = [
            f"groq plan ({m.name}, {m.clock_hz / 1e6:g} MHz, {_mib(m.sram_bytes)} SRAM per chip)",
            f"  parameters      {s['parameters']:,} ({s['packed_weight_bytes']:,} bytes "
            + ("packed Q3P5)" if m.scales == "codes" and not m.int8_levels else
               f"of weights: levels {'int8' if m.int8_levels else 'packed'}, scales "
               f"{m.scales})"),
            f"  chips           {s['chips']}",
            f"  SRAM            {s['sram_bytes']:,} bytes used of "
            f"{s['chips'] * m.sram_bytes:,} ({100 * s['sram_utilization']:.1f}%)",
            f"  cycles/pass     {s['cycles_per_pass']:,} ({s['tokens_per_pass']} token(s) per "
            f"pass; lower bound {s['lower_bound_cycles']:,})",
            f"  cycles/token    {s['cycles_per_token']:,} -> {s['tokens_per_s']:.1f} tokens/s "
            f"at {m.clock_hz / 1e6:g} MHz (one sequence)",
            f"  pipelined       {s['stage_cycles']:,} cycles/stage -> "
            f"{s['pipelined_tokens_per_s']:.1f} tokens/s ({s['chips']} sequences in flight)",
            "  bound terms     " + ", ".join(f"{k} {v:,}" for k, v in s["bound_terms"].items())
            + (f" (matmuls summed; roofline sum of max(mxm, install, mem) + c2c "
               f"{s['roofline_cycles']:,})" if s["timeline"] == "chain" else
               f" (summed over matmuls and transfers; dataflow timeline: roofline critical "
               f"path with matmuls at max(mxm, install, mem), plus c2c, "
               f"{s['roofline_cycles']:,})"),
            f"  C2C per token   {s['c2c_bytes_per_token']:,} bytes, "
            f"{s['c2c_cycles_per_token']:,} cycles over {len(self.transfers)} transfer(s)",
            f"  column splits   {s['column_splits']}",
            "",
            f"  {'chip':>4}  {'layers':<24} {'SRAM bytes':>13} {'used':>6} {'cycles':>10} "
            f"{'C2C out':>10}",
        ]
        out = {t["from_chip"]: t for t in self.transfers}
        for c in self.chips:
            t = out.get(c["chip"])
            lines.append(f"  {c['chip']:>4}  {_layers_text(c['layers']):<24} "
                         f"{c['sram_bytes']:>13,} {100 * c['sram_bytes'] / m.sram_bytes:>5.1f}% "
                         f"{c['cycles']:>10,} {t['bytes'] if t else 0:>10,}")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path) -> None:
        """plan.json, report.txt and report.json into `out_dir`."""
        out_dir = Path(out_dir)
        (out_dir / "plan.json").write_text(json.dumps(self.to_json(), indent=1) + "\n")
        (out_dir / "report.txt").write_text(self.text())
        (out_dir / "report.json").write_text(json.dumps(self.report_json(), indent=1) + "\n")


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:g} MiB"


def _layers_text(layers: list[dict[str, Any]]) -> str:
    if not layers:
        return "-"
    def one(entry):
        return entry["layer"] + ("*" if entry["partial"] else "")
    if len(layers) <= 2:
        return ", ".join(one(e) for e in layers)
    return f"{one(layers[0])} .. {one(layers[-1])}"


def _shard(u: Unit) -> tuple[int, int]:
    return tuple(u.detail.get("shard", (0, 1)))  # type: ignore[return-value]


def _shard_out_bytes(u: Unit, out_bytes: int) -> int:
    """Bytes of a matmul shard's columns (or a table shard's running lookup)."""
    if u.kind == "matmul":
        c0, c1 = u.detail["cols"]
        return out_bytes * (c1 - c0) // u.detail["n"]
    return out_bytes


def _dataflow(merged: list[list[Unit]], program: _Program, cost: CostModel,
              cycles_of, c2c: bool = True):
    """One token's pass as dataflow (`PlanOptions.timeline` "dataflow"): each unit starts
    when its chip is free and its inputs are on its chip; a value goes from its producer's
    chip to each chip that reads it (one transfer per value and chip); the column shards of
    a split matmul start as soon as the matmul's inputs are on their chips and their
    outputs are gathered on the last shard's chip; a table's row shards run one after the
    other (each adds into the running lookup). `cycles_of(unit)`: its cycles; `c2c`:
    transfers cost their cycles (else nothing). Returns ({id(unit): start}, transfers,
    end of the pass)."""
    ready: dict[int, tuple[int, int]] = {}  # op index -> (chip, cycle) of its complete result
    shards: dict[int, list[tuple[int, int, int]]] = {}  # op -> [(chip, end, bytes)]
    arrived: dict[tuple[int, int], int] = {}  # (op, chip) -> arrival of its result there
    transfers: list[dict[str, Any]] = []
    starts: dict[int, int] = {}
    out_bytes = program.result_bytes
    end_of_pass = 0

    def send(src: int, chip: int, at: int, nbytes: int, name: str, when: int) -> int:
        cycles = cost.c2c(nbytes) if c2c else 0
        transfers.append({"from_chip": src, "to_chip": chip, "bytes": nbytes,
                          "cycles": cycles, "send_cycle": when,
                          "arrive_cycle": when + cycles, "values": [name],
                          "value_count": 1, "op": at})
        return when + cycles

    for chip, placed in enumerate(merged):
        clock = 0
        for u in placed:
            t = clock
            for at, nbytes, name in program.inputs.get(u.op_index, []):
                if at < 0 or at == u.op_index:
                    continue
                src, when = ready[at]
                if src != chip:
                    if (at, chip) not in arrived:
                        arrived[(at, chip)] = send(src, chip, at, nbytes, name, when)
                    when = arrived[(at, chip)]
                t = max(t, when)
            j, count = _shard(u)
            if u.kind == "gather" and j > 0:  # the running lookup of the previous shard
                src, when, nbytes = shards[u.op_index][-1]
                if src != chip:
                    when = send(src, chip, u.op_index, nbytes, f"{u.name} partial lookup", when)
                t = max(t, when)
            starts[id(u)] = t
            clock = t + cycles_of(u)
            end_of_pass = max(end_of_pass, clock)
            nbytes = _shard_out_bytes(u, out_bytes.get(u.op_index, 0))
            if j < count - 1:
                shards.setdefault(u.op_index, []).append((chip, clock, nbytes))
                continue
            done = clock
            if u.kind == "matmul":  # the other shards' columns, gathered here
                for src, when, part in shards.get(u.op_index, []):
                    if src != chip:
                        when = send(src, chip, u.op_index, part,
                                    f"{u.name} columns from chip {src}", when)
                    done = max(done, when)
            ready[u.op_index] = (chip, done)
            clock = done
            end_of_pass = max(end_of_pass, done)
    return starts, transfers, end_of_pass


def _dataflow_figures(merged: list[list[Unit]], program: _Program, cost: CostModel,
                      chips: list[dict[str, Any]], matmuls: list[dict[str, Any]]
                      ) -> dict[str, Any]:
    """The dataflow timeline's figures (`_dataflow`): per chip and matmul its start and end
    cycles (rewritten in `chips`, `matmuls`), the transfers, the end of the pass, and the
    critical paths with every matmul at max(MXM, install, MEM) plus the transfers
    (roofline) and at max(MXM, install, MEM, VXM) without them (lower bound)."""
    starts, transfers, end = _dataflow(merged, program, cost, lambda u: u.cycles)
    by_unit = {(c, u.index): starts[id(u)] for c, placed in enumerate(merged) for u in placed}
    for c, placed in zip(chips, merged):
        c["start_cycle"] = starts[id(placed[0])]
        c["end_cycle"] = starts[id(placed[-1])] + placed[-1].cycles
        c["timeline"] = [[starts[id(u)], u.cycles, u.kind, u.name, 1] for u in placed]
    for m in matmuls:
        m["start_cycle"] = by_unit[(m["chip"], m["unit"])]

    def term(keys):
        return lambda u: max(u.detail[k] for k in keys) if u.kind == "matmul" else 0

    roofline = _dataflow(merged, program, cost, term(("mxm", "install", "mem")))[2]
    lower = _dataflow(merged, program, cost, term(("mxm", "install", "mem", "vxm")), False)[2]
    return {"transfers": transfers, "end": end, "roofline": roofline, "lower": lower}


def plan_module(module: ModuleOp, options: PlanOptions | None = None,
                machine: Machine | None = None, entry: str | None = None) -> Plan:
    """Partition function `entry` (default `main`) of `module` (shape-only or not) over the
    fewest chips of `machine` (default: `options.machine`) whose SRAM holds it; see the
    module docstring and docs/groq-multichip.md."""
    options = options or PlanOptions()
    machine = machine or with_layout(load_machine(options.machine), options.scales,
                                     options.levels)
    cost = CostModel(machine)
    program = _build_units(module, cost, options, entry)
    units = program.units
    live = _Liveness.of(program)
    ranges = _partition(units, live, cost, options.chips)
    layer_units: dict[str, int] = {}
    for u in units:
        layer_units[u.layer] = layer_units.get(u.layer, 0) + 1
    merged = _merge(units, ranges, cost)
    chips, transfers, matmuls = [], [], []
    clock = 0  # one token of one sequence, chip after chip
    for chip, (start, end) in enumerate(ranges):
        placed = merged[chip]
        chip_start = clock
        runs: list[list[Any]] = []  # [start, cycles, kind, name, count]
        starts: dict[int, int] = {}
        for u in placed:
            starts[id(u)] = clock
            if u.kind == "vector" and runs and runs[-1][2] == "vector":
                runs[-1][1] += u.cycles
                runs[-1][4] += 1
            else:
                runs.append([clock, u.cycles, u.kind, u.name, 1])
            clock += u.cycles
        _, act_bytes = _chip_bytes(units, start, end, live, cost)
        weights: dict[str, int] = {}
        for u in placed:
            weights.update(u.weights)
        weight_bytes = sum(weights.values())
        layers: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        for u in units[start:end + 1]:
            counts[u.layer] = counts.get(u.layer, 0) + 1
            if not layers or layers[-1]["layer"] != u.layer:
                layers.append({"layer": u.layer, "partial": False})
        for entry in layers:
            entry["partial"] = counts[entry["layer"]] != layer_units[entry["layer"]]
        chips.append({
            "chip": chip, "units": [start, end],
            "ops": [units[start].op_index, units[end].op_index], "layers": layers,
            "weight_bytes": weight_bytes, "activation_bytes": act_bytes,
            "sram_bytes": weight_bytes + act_bytes, "capacity_bytes": cost.capacity,
            "cycles": sum(u.cycles for u in placed),
            "matmul_cycles": sum(u.cycles for u in placed if u.kind == "matmul"),
            "vector_cycles": sum(u.cycles for u in placed if u.kind != "matmul"),
            "weights": sorted(weights),
            "start_cycle": chip_start, "end_cycle": clock, "timeline": runs,
        })
        for u in placed:
            if u.kind in ("matmul", "gather"):
                matmuls.append({"chip": chip, "unit": u.index, "op": u.op_index,
                                "kind": u.kind, "weight": u.name, "layer": u.layer,
                                "bytes": sum(u.weights.values()), "cycles": u.cycles,
                                "start_cycle": starts[id(u)], **u.detail})
        if end < len(units) - 1:
            nbytes = live.cut[end]
            values = sorted({name for at, last, b, name in program.defs
                             if at <= end < last and b > 0})
            transfers.append({"from_chip": chip, "to_chip": chip + 1, "after_unit": end,
                              "bytes": nbytes, "cycles": cost.c2c(nbytes),
                              "send_cycle": clock, "arrive_cycle": clock + cost.c2c(nbytes),
                              "values": values[:16], "value_count": len(values)})
            clock += cost.c2c(nbytes)
    compute = sum(c["cycles"] for c in chips)
    if options.timeline == "dataflow":
        per_pass = _dataflow_figures(merged, program, cost, chips, matmuls)
        transfers = per_pass["transfers"]
    c2c_cycles = sum(t["cycles"] for t in transfers)
    c2c_bytes = sum(t["bytes"] for t in transfers)
    if options.timeline == "dataflow":
        roofline, lower = per_pass["roofline"], per_pass["lower"]
        per_pass = per_pass["end"]
    else:
        per_pass = compute + c2c_cycles
    rows = program.rows
    per_token = -(-per_pass // rows)
    latency = int(machine.param("c2c_latency_cycles"))
    sends: dict[int, int] = {}  # chip -> the bandwidth part of its largest transfer out
    for t in transfers:
        sends[t["from_chip"]] = max(sends.get(t["from_chip"], 0), t["cycles"] - latency)
    stage = max(c["cycles"] + max(0, sends.get(c["chip"], 0)) for c in chips)
    mm = [m for m in matmuls if m["kind"] == "matmul"]
    if options.timeline == "chain":
        lower = sum(max(m["mxm"], m["install"], m["mem"], m["vxm"]) for m in mm)
        roofline = sum(max(m["mxm"], m["install"], m["mem"]) for m in mm) + c2c_cycles
    sram = sum(c["sram_bytes"] for c in chips)
    terms = {t: sum(m[t] for m in mm) for t in ("mxm", "install", "mem", "vxm", "latency")}
    terms["vector"] = sum(u.cycles for c in merged for u in c if u.kind != "matmul")
    terms["c2c"] = c2c_cycles
    summary = {
        "chips": len(chips),
        "parameters": program.parameters,
        "packed_weight_bytes": program.packed_weight_bytes,
        "sram_bytes": sram,
        "sram_utilization": round(sram / (len(chips) * cost.capacity), 6),
        "tokens_per_pass": rows,
        "cycles_per_pass": per_pass,
        "compute_cycles_per_pass": compute,
        "lower_bound_cycles": lower,
        "bound_terms": terms,
        "roofline_cycles": roofline,
        "timeline": options.timeline,
        "cycles_per_token": per_token,
        "tokens_per_s": round(machine.clock_hz / per_token, 3),
        "stage_cycles": stage,
        "pipelined_tokens_per_s": round(machine.clock_hz * rows / stage, 3),
        "c2c_bytes_per_token": -(-c2c_bytes // rows),
        "c2c_cycles_per_token": -(-c2c_cycles // rows),
        "units": len(units),
        "column_splits": len({m["weight"] for m in matmuls
                              if "shard" in m and m["kind"] == "matmul"}),
        "table_splits": len({m["weight"] for m in matmuls
                             if "shard" in m and m["kind"] == "gather"}),
    }
    return Plan(machine, options, chips, transfers, matmuls, summary)
