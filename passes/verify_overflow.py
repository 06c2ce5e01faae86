"""`verify-overflow`: prove that no integer computation overflows, or show an input that does.

Interval analysis, in exact (Python) integers, over every integer value of each function:

- integer function arguments: their type's range, or the range `arg-ranges` declares
  (`"input_ids=0:255,n=1:64"`);
- `arith.constant`: the range of its values; `arith` integer ops (addi, subi, muli, maxsi,
  minsi, select, extsi, trunci) and `linalg.reduce` with an `addi` body: interval arithmetic;
  with `check-arith=true` the result must fit its type (by default a result that may not is
  taken to wrap, as MLIR and the Fortran frontend define, and gets the type's range);
- control flow and variables (the Fortran frontend's loops): `scf.for` (induction variable in
  [lb, ub - 1]), `scf.while` and `scf.if` bodies are analysed; integer scalar variables
  (rank-0 memrefs) are tracked through loads and stores, and loop heads reach a fixpoint
  (exact for short counted loops, widened to the type's range otherwise); an op whose
  result may wrap gets `q35c.may_wrap`;
- `quant3p5.quantize_activations`: [-127, 127] (it clamps); `quant3p5.unpack`: codes 0..127;
- code decoding: the integer level of every weight, from the actual weights (a
  `quant3p5.weight`, or `quant3p5.pack` of constant codes) or, for run-time codes, the
  extreme level of each position over every code;
- `quant3p5.matmul_int8`: for every group g and column n the exact extreme of
  acc[r, g, n] = sum_{k in g} q[r, k] * L[k, n] over the activation range (127 * sum |L| for
  quantized activations, attained by q_k = 127 * sign(L)), and sx = sum_k q[r, k].

Each `matmul_int8` gets `q35c.acc_bound` and `q35c.sx_bound` (i64) and every analysed integer
result `q35c.int_range = array<i64: lo, hi>`. If a bound leaves int32 (or an op's result
leaves its type), the pass fails with the op, where it is (weight name, value names) and a
concrete witness: function inputs for which the interpreter reports the overflow. With
`witness-dir=DIR` the witness inputs are also written as DIR/<argument>.npy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from xdsl.context import Context
from xdsl.dialects import arith, func, memref, scf, tensor
from xdsl.dialects.builtin import (
    DenseArrayBase,
    IndexType,
    IntegerAttr,
    IntegerType,
    MemRefType,
    ModuleOp,
    TensorType,
    UnitAttr,
    i64,
)
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.entry import argument_names
from q35c.compiler.quant import CODEBOOK, LEGACY_LEVELS, integer_levels, pair_levels
from q35c.compiler.tensors import constant_value
from q35c.compiler.weights import WeightStore, store_of
from q35c.dialects import quant3p5
from q35c.passes.matching import origin_of

INT32 = (-(2**31), 2**31 - 1)
ATTR_ACC = "q35c.acc_bound"
ATTR_SX = "q35c.sx_bound"
ATTR_RANGE = "q35c.int_range"
ATTR_MAY_WRAP = "q35c.may_wrap"
"""On an integer op whose exact result may leave its type (it wraps; without check-arith)."""
UNROLL_LIMIT = 100_000
"""A counted loop whose trip bound times its body's op count is at most this is iterated
abstractly once per iteration (exact interval bounds); longer ones, unbounded ones and all
loops once the function's VISIT_BUDGET of op visits is spent widen after WIDEN_AFTER."""
WIDEN_AFTER = 3
VISIT_BUDGET = 1_000_000
_SHAPE_OPS = (tensor.ReshapeOp, tensor.CollapseShapeOp, tensor.ExpandShapeOp)


class OverflowFound(Q35cError):
    """An integer computation can overflow; `witness` maps argument names to inputs that
    make it overflow (None when only an op-level witness exists: `op_witness`)."""

    def __init__(self, message: str, witness: dict[str, np.ndarray] | None,
                 op_witness: dict[str, np.ndarray] | None = None):
        super().__init__(message)
        self.witness = witness
        self.op_witness = op_witness


def _width(value: SSAValue) -> int | None:
    t = value.type
    el = t.get_element_type() if isinstance(t, TensorType) else t
    if isinstance(el, IndexType):
        return 64
    return el.width.data if isinstance(el, IntegerType) else None


def _cell_width(value: SSAValue) -> int | None:
    """The element width of an integer memref (a Fortran variable or array), else None."""
    t = value.type
    if not isinstance(t, MemRefType):
        return None
    el = t.get_element_type()
    if isinstance(el, IndexType):
        return 64
    return el.width.data if isinstance(el, IntegerType) and el.width.data > 1 else None


def _is_cell(value: SSAValue) -> bool:
    """A rank-0 integer memref: a Fortran scalar variable, tracked flow-sensitively."""
    return (_cell_width(value) is not None and isinstance(value.type, MemRefType)
            and not value.type.get_shape())


Range = tuple[int, int]


def _hull(a: Range, b: Range) -> Range:
    return min(a[0], b[0]), max(a[1], b[1])


def _type_range(width: int) -> tuple[int, int]:
    return -(2 ** (width - 1)), 2 ** (width - 1) - 1


def _shape(value: SSAValue) -> tuple[int, ...]:
    return tuple(value.type.get_shape()) if isinstance(value.type, TensorType) else ()


def _describe(value: SSAValue) -> str:
    if value.name_hint:
        return f"%{value.name_hint}"
    owner = value.owner
    return f"<result of {owner.name}>" if isinstance(owner, Operation) else "<argument>"


def parse_arg_ranges(spec: str) -> dict[str, tuple[int, int]]:
    """`NAME=LO:HI,...` -> {NAME: (LO, HI)}; a malformed item, or LO > HI, is an error."""
    ranges = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, bounds = item.partition("=")
        lo, sep2, hi = bounds.partition(":")
        try:
            if not sep or not sep2 or not name:
                raise ValueError
            ranges[name] = (int(lo), int(hi))
            if ranges[name][0] > ranges[name][1]:
                raise ValueError
        except ValueError:
            raise Q35cError(f"--passes verify-overflow: option 'arg-ranges' must be "
                            f"NAME=LO:HI,... with integers LO <= HI, got '{item}'") from None
    return ranges


@dataclass
class _Weights:
    """What is known about a packed weight value's integer levels."""

    source: object  # the packed tensor (decoded on demand) or int64 [K, N] levels; None
    extreme: np.ndarray | None  # int64 [K]: max |level| per row when the codes are not
    group: int
    layout: str
    name: str
    codes_arg: SSAValue | None = None  # run-time codes: the pack op's codes operand

    @property
    def known(self) -> bool:
        return self.source is not None

    @property
    def levels(self) -> np.ndarray | None:
        """int16 [K, N] levels when the codes are known (decoded only for `matmul_int8`, so
        a float pipeline never holds the levels of every weight at once)."""
        if self.source is None or isinstance(self.source, np.ndarray):
            return self.source
        return _levels_of(self.source)


def _levels_of(value) -> np.ndarray:
    return integer_levels(value, np.int16)


@dataclass
class _Analysis:
    store: WeightStore
    arg_ranges: dict[str, tuple[int, int]]
    fn: func.FuncOp
    check_arith: bool = False
    ranges: dict[SSAValue, tuple[int, int]] = field(default_factory=dict)
    weights: dict[SSAValue, _Weights] = field(default_factory=dict)
    written: set[SSAValue] = field(default_factory=set)
    """Memrefs something other than a load uses (stores, calls, views): not read-only."""
    cells: dict[SSAValue, Range] = field(default_factory=dict)
    """Flow-sensitive ranges of the integer scalar variables (rank-0 memrefs) at this point."""
    visits: int = 0
    extremes: list[tuple[dict[str, int], int]] = field(default_factory=list)
    """For accumulators whose closed-form bound leaves their type: the array values that
    reach that bound (argument name -> the value filling it) and the interpreter steps a
    run takes, tried first by the witness search (verify_overflow_witness.confirm)."""

    def run(self) -> None:
        for name, arg in zip(argument_names(self.fn), self.fn.args):
            width = _width(arg) or _cell_width(arg)  # scalars, and elements of memrefs
            if width is not None:  # declared by its q35c.name (or argN) or its SSA name
                declared = self.arg_ranges.get(name) or self.arg_ranges.get(arg.name_hint or "")
                self.ranges[arg] = declared or _type_range(width)
        self.written = {v for op in self.fn.walk() if not isinstance(op, memref.LoadOp)
                        for v in op.operands if isinstance(v.type, MemRefType)}
        self.visit_block(self.fn.body.blocks[0])

    # -- control flow and memory (the Fortran frontend's scf loops and variable cells) ---------

    def visit_block(self, block) -> list[SSAValue]:
        """Visit `block`'s ops in order; the operands of its terminator if that yields."""
        for op in block.ops:
            self.visits += 1
            if isinstance(op, (scf.YieldOp, scf.ConditionOp)):
                return list(op.operands)
            self.visit(op)
        return []

    def initial(self, cell: SSAValue) -> Range:
        """A variable's range where nothing is known: declared (arguments), else its type's."""
        return self.ranges.get(cell) or _type_range(_cell_width(cell))

    def cell_range(self, cell: SSAValue) -> Range:
        return self.cells.get(cell) or self.initial(cell)

    def join_cells(self, a: dict[SSAValue, Range], b: dict[SSAValue, Range]) -> dict:
        out = {}
        for cell in a.keys() | b.keys():
            out[cell] = _hull(a.get(cell) or self.initial(cell), b.get(cell) or self.initial(cell))
        return out

    def widen(self, old: dict, new: dict) -> dict:
        """Every bound that still moves goes to the type's end (a sound, finite fixpoint)."""
        out = {}
        for cell, (lo, hi) in new.items():
            tlo, thi = _type_range(_cell_width(cell))
            olo, ohi = old.get(cell) or self.initial(cell)
            out[cell] = (lo if lo >= olo else tlo, hi if hi <= ohi else thi)
        return out

    def widen_values(self, old: list[Range], new: list[Range], values) -> list[Range]:
        out = []
        for (olo, ohi), (lo, hi), v in zip(old, new, values):
            tlo, thi = _type_range(_width(v) or 64)
            out.append((lo if lo >= olo else tlo, hi if hi <= ohi else thi))
        return out

    def fixpoint(self, entry_cells: dict, init: list[Range], body, trips: int | None,
                 closed: _Accumulators | None = None):
        """The loop-head state: iterate `body(cells, carried) -> (cells, carried)` from the
        entry state, joining. A loop of at most `trips` iterations (None: unknown) stops
        after that many rounds (the head state then covers every iteration: exact interval
        bounds: the last round runs on the state before the last iteration, and returns the
        state after it); otherwise bounds still moving after WIDEN_AFTER rounds widen to
        their type's end, so the iteration ends, and the last round runs on the returned
        stable state. Either way the attributes the last round records hold for every
        iteration. `closed`: accumulators of a loop of `closed.trips` iterations too long to
        iterate, whose head state is the closed form entry + k * (range of one iteration's
        increments), k < trips, instead of a widened bound."""
        exact = trips is not None
        cells, carried = dict(entry_cells), list(init)
        rounds = 0
        while True:
            out_cells, out_carried = body(dict(cells), list(carried))
            new_cells = self.join_cells(cells, out_cells)
            new_carried = [_hull(a, b) for a, b in zip(carried, out_carried)]
            if closed is not None and rounds < 2 * WIDEN_AFTER:
                for cell, terms in closed.cells.items():
                    new_cells[cell] = self.closed_form(
                        entry_cells.get(cell) or self.initial(cell), terms, closed.trips)
                for k, terms in closed.carried.items():
                    new_carried[k] = self.closed_form(init[k], terms, closed.trips)
            if exact and rounds >= trips - 1:  # the body ran on every iteration's state
                return (cells, carried) if trips == 0 else (new_cells, new_carried)
            if new_cells == cells and new_carried == carried:
                return cells, carried
            rounds += 1
            if (not exact and rounds >= WIDEN_AFTER) or self.visits > VISIT_BUDGET:
                keep = closed if closed is not None and rounds < 2 * WIDEN_AFTER else None
                widened_cells = self.widen(cells, new_cells)
                widened = self.widen_values(carried, new_carried, body.values)
                if keep is not None:  # accumulators keep their closed form a while longer
                    widened_cells.update({c: new_cells[c] for c in keep.cells})
                    for k in keep.carried:
                        widened[k] = new_carried[k]
                new_cells, new_carried = widened_cells, widened
                exact = False
            cells, carried = new_cells, new_carried

    def closed_form(self, entry: Range, terms: list[tuple[SSAValue, int]], trips: int
                    ) -> Range:
        """The range of an accumulator before each of `trips` iterations that each add
        `terms` (value, sign): entry + k * [sum of the terms' lows, sum of their highs] for
        k = 0 .. trips - 1 (the increments' ranges come from the round just run; they cannot
        depend on the accumulator)."""
        dlo = dhi = 0
        for value, sign in terms:
            lo, hi = self.rng(value)
            dlo, dhi = (dlo + lo, dhi + hi) if sign > 0 else (dlo - hi, dhi - lo)
        k = max(0, trips - 1)
        return entry[0] + min(0, k * dlo), entry[1] + max(0, k * dhi)

    def note_extreme(self, op: scf.ForOp, final: Range, width: int | None,
                     terms: list[tuple[SSAValue, int]], closed: _Accumulators) -> None:
        """Where an accumulator's closed-form bound leaves its type: the array arguments'
        values that push every increment to that end (each increment a read-only array
        element, or a product of two, possibly widened), if the terms are of that form."""
        if width is None:
            return
        tlo, thi = _type_range(width)
        if tlo <= final[0] and final[1] <= thi:
            return
        up = final[1] > thi
        names = dict(zip(self.fn.args, argument_names(self.fn)))
        values: dict[str, int] = {}
        for value, sign in terms:
            factors = [value]
            if isinstance(value.owner, arith.MuliOp):
                factors = list(value.owner.operands)
            sources = [_array_argument(f, names) for f in factors]
            if any(s is None for s in sources):
                return
            ends = [(self.initial(a)[0], self.initial(a)[1]) for a in sources]
            best = None
            for choice in np.ndindex(*(2,) * len(ends)):
                picked = [e[c] for e, c in zip(ends, choice)]
                product = sign * int(np.prod(picked, dtype=object))
                if best is None or (product > best[0] if up else product < best[0]):
                    best = (product, picked)
            for a, v in zip(sources, best[1]):
                if values.setdefault(names[a], v) != v:
                    return  # one array would need two values
        steps = closed.trips * (sum(1 for _ in op.body.walk()) + 2)
        self.extremes.append((values, steps))

    def visit_for(self, op: scf.ForOp) -> None:
        (lb, _), (_, ub) = self.rng(op.lb), self.rng(op.ub)
        slo, shi = self.rng(op.step)
        iv_range = (lb, max(lb, ub - 1))
        trips = max(0, (ub - lb + slo - 1) // slo) if slo > 0 else None
        closed = None
        if trips is not None and trips * sum(1 for _ in op.body.walk()) > UNROLL_LIMIT:
            closed = _accumulators(op, trips)  # too long to iterate: closed forms, widening
            trips = None
        block = op.body.block
        iv, args = block.args[0], block.args[1:]

        def body(cells, carried):
            self.cells = cells
            self.ranges[iv] = iv_range
            for arg, r in zip(args, carried):
                self.ranges[arg] = r
            yielded = self.visit_block(block)
            return self.cells, [self.rng(v) for v in yielded]

        body.values = list(args)
        init = [self.rng(v) for v in op.iter_args]
        entry = dict(self.cells)
        self.cells, carried = self.fixpoint(dict(self.cells), init, body, trips, closed)
        if closed is not None:  # the state after the last iteration: one more increment
            for cell, terms in closed.cells.items():
                self.cells[cell] = _hull(self.cells[cell], self.closed_form(
                    entry.get(cell) or self.initial(cell), terms, closed.trips + 1))
                self.note_extreme(op, self.cells[cell], _cell_width(cell), terms, closed)
            for k, terms in closed.carried.items():
                carried[k] = _hull(carried[k], self.closed_form(init[k], terms,
                                                                closed.trips + 1))
                self.note_extreme(op, carried[k], _width(op.results[k]), terms, closed)
        for result, r in zip(op.results, carried):
            self.set(op, result, *r)

    def visit_while(self, op: scf.WhileOp) -> None:
        before, after = op.before_region.block, op.after_region.block
        passed: list[Range] = []

        def body(cells, carried):
            self.cells = cells
            for arg, r in zip(before.args, carried):
                self.ranges[arg] = r
            forwarded = self.visit_block(before)[1:]  # scf.condition(cond, args...)
            passed[:] = [self.rng(v) for v in forwarded]
            for arg, r in zip(after.args, passed):
                self.ranges[arg] = r
            yielded = self.visit_block(after)
            return self.cells, [self.rng(v) for v in yielded]

        body.values = list(before.args)
        init = [self.rng(v) for v in op.arguments]
        self.cells, carried = self.fixpoint(dict(self.cells), init, body, None)
        # the exit runs `before` once more on the head state: that is the last round's
        for result, r in zip(op.results, passed):
            self.set(op, result, *r)

    def visit_if(self, op: scf.IfOp) -> None:
        entry = dict(self.cells)
        outs, states = [], []
        for region in (op.true_region, op.false_region):
            self.cells = dict(entry)
            outs.append([self.rng(v) for v in self.visit_block(region.block)]
                        if region.blocks else [])
            states.append(self.cells)
        self.cells = self.join_cells(*states)
        for i, result in enumerate(op.results):
            ranges = [o[i] for o in outs if len(o) > i]
            if ranges and _width(result):
                self.set(op, result, min(r[0] for r in ranges), max(r[1] for r in ranges))

    def visit_memory(self, op: Operation) -> None:
        if isinstance(op, memref.LoadOp) and _width(op.res):
            cell = op.memref
            if _is_cell(cell):
                self.set(op, op.res, *self.cell_range(cell))
            elif cell in self.written:  # an array the function writes: anything in its type
                self.set(op, op.res, *_type_range(_width(op.res)))
            else:  # an array argument it only reads: declared, else its type's range
                self.set(op, op.res, *self.initial(cell))
        elif isinstance(op, memref.StoreOp) and _is_cell(op.memref):
            self.cells[op.memref] = self.rng(op.value)
        else:  # a call or a view may write a variable it is given: forget what we knew
            for v in op.operands:
                if _is_cell(v):
                    self.cells.pop(v, None)

    def rng(self, value: SSAValue) -> tuple[int, int]:
        width = _width(value)
        return self.ranges.get(value, _type_range(width or 64))

    def set(self, op: Operation, value: SSAValue, lo: int, hi: int) -> None:
        width = _width(value)
        if width is not None and width > 1:
            tlo, thi = _type_range(width)
            if lo < tlo or hi > thi:
                if self.check_arith:
                    raise self.generic_overflow(op, value, lo, hi, width)
                lo, hi = tlo, thi  # wraps (MLIR arith semantics): anything in the type
                op.attributes[ATTR_MAY_WRAP] = UnitAttr()
            elif ATTR_MAY_WRAP in op.attributes and value is op.results[0]:
                del op.attributes[ATTR_MAY_WRAP]  # an earlier fixpoint round's
        self.ranges[value] = (lo, hi)
        if width is not None and width > 1:
            if value is op.results[0]:
                op.attributes[ATTR_RANGE] = DenseArrayBase.from_list(i64, [lo, hi])

    def visit(self, op: Operation) -> None:
        if isinstance(op, scf.ForOp):
            self.visit_for(op)
        elif isinstance(op, scf.WhileOp):
            self.visit_while(op)
        elif isinstance(op, scf.IfOp):
            self.visit_if(op)
        elif isinstance(op, (memref.LoadOp, memref.StoreOp)) or any(
                _is_cell(v) for v in op.operands):
            self.visit_memory(op)
        elif isinstance(op, arith.IndexCastOp):
            self.set(op, op.result, *self.rng(op.input))
        elif isinstance(op, (arith.DivSIOp, arith.RemSIOp)) and _width(op.result):
            (a, b), (c, d) = self.rng(op.lhs), self.rng(op.rhs)
            m = max(abs(a), abs(b))
            if isinstance(op, arith.DivSIOp):
                if c > 0 or d < 0:  # the divisor keeps its sign: extremes at the corners
                    qs = [_trunc_div(x, y) for x in (a, b) for y in (c, d)]
                    self.set(op, op.result, min(qs), max(qs))
                else:
                    self.set(op, op.result, -m, m)  # |x / y| <= |x| (x / -1 may leave it)
            else:  # the sign of the dividend, |r| < |divisor| and |r| <= |x|
                r = min(m, max(abs(c), abs(d)) - 1) if (c, d) != (0, 0) else m
                self.set(op, op.result, -r if a < 0 else 0, r if b > 0 else 0)
        elif isinstance(op, arith.ConstantOp) and _width(op.result):
            values = np.asarray(constant_value(op.value, op.result.type))
            if values.size:
                self.set(op, op.result, int(values.min()), int(values.max()))
        elif isinstance(op, (arith.AddiOp, arith.SubiOp, arith.MuliOp)):
            (a, b), (c, d) = self.rng(op.lhs), self.rng(op.rhs)
            if isinstance(op, arith.AddiOp):
                lo, hi = a + c, b + d
            elif isinstance(op, arith.SubiOp):
                lo, hi = a - d, b - c
            elif op.lhs is op.rhs:  # a square
                lo = 0 if a <= 0 <= b else min(a * a, b * b)
                hi = max(a * a, b * b)
            else:
                products = (a * c, a * d, b * c, b * d)
                lo, hi = min(products), max(products)
            self.set(op, op.result, lo, hi)
        elif isinstance(op, (arith.MaxSIOp, arith.MinSIOp, arith.SelectOp)):
            (a, b), (c, d) = self.rng(op.lhs), self.rng(op.rhs)
            fn = {arith.MaxSIOp: max, arith.MinSIOp: min}.get(type(op))
            lo, hi = (fn(a, c), fn(b, d)) if fn else (min(a, c), max(b, d))
            if _width(op.result):
                self.set(op, op.result, lo, hi)
        elif isinstance(op, (arith.ExtSIOp, arith.TruncIOp)) or (
                isinstance(op, _SHAPE_OPS + (linalg.TransposeOp, linalg.BroadcastOp,
                                             tensor.ExtractSliceOp)) and _width(op.results[0])):
            self.set(op, op.results[0], *self.rng(op.operands[0]))
        elif isinstance(op, linalg.ReduceOp) and _width(op.results[0]):
            body = list(op.region.block.ops)
            if len(body) == 2 and isinstance(body[0], arith.AddiOp):
                count = int(np.prod(_shape(op.operands[0]))) // max(
                    1, int(np.prod(_shape(op.results[0]))))
                (a, b), (c, d) = self.rng(op.operands[0]), self.rng(op.operands[1])
                self.set(op, op.results[0], a * count + c, b * count + d)
        elif isinstance(op, quant3p5.QuantizeActivationsOp):
            self.set(op, op.quantized, -127, 127)
        elif isinstance(op, quant3p5.UnpackOp):
            self.set(op, op.codes, 0, 127)
        elif isinstance(op, quant3p5.WeightOp) and isinstance(
                op.result.type, quant3p5.PackedWeightType):
            value = self.store[op.weight_name.data]
            self.weights[op.result] = _Weights(
                value, None, op.result.type.group, op.result.type.layout.data,
                f"weight '{op.weight_name.data}'")
        elif isinstance(op, quant3p5.PackOp):
            self.visit_pack(op)
        elif isinstance(op, quant3p5.MatmulInt8Op):
            self.visit_matmul_int8(op)

    def visit_pack(self, op: quant3p5.PackOp) -> None:
        packed = op.result.type
        k, n = packed.get_shape()
        codes = op.codes.owner
        where = f"quant3p5.pack of {_describe(op.codes)}"
        if isinstance(codes, arith.ConstantOp):
            raw = np.asarray(constant_value(codes.value, codes.result.type)).astype(np.int64)
            levels = pair_levels(raw & 127, LEGACY_LEVELS, k, np.int64)
            self.weights[op.result] = _Weights(levels, None, k, "pair43", where)
            return
        lo, hi = self.rng(op.codes)
        candidates = LEGACY_LEVELS.astype(np.int64)[max(lo, 0):min(hi, 127) + 1]
        extreme = np.abs(candidates).max(axis=0)  # (even, odd)
        per_row = np.tile(extreme, -(-k // 2))[:k]
        self.weights[op.result] = _Weights(None, per_row, k, "pair43", where, op.codes)

    def visit_matmul_int8(self, op: quant3p5.MatmulInt8Op) -> None:
        info = self.weights.get(op.weights)
        k, n = op.weights.type.get_shape()
        if info is None:  # weights of unknown provenance: every level the layout allows
            table = CODEBOOK if op.weights.type.layout.data == "q3p5" else LEGACY_LEVELS
            extreme = np.abs(table.astype(np.int64)).max(axis=0)
            info = _Weights(None, np.tile(extreme, -(-k // 2))[:k], op.weights.type.group,
                            op.weights.type.layout.data, f"<{op.weights.owner}>")
        qlo, qhi = self.rng(op.lhs)
        group = info.group
        groups = -(-k // group)
        pad = groups * group - k
        if info.known:
            levels = info.levels
            acc_hi = np.zeros((groups, n), np.int64)
            acc_lo = np.zeros((groups, n), np.int64)
            width = max(1, (1 << 20) // max(k, 1))  # column chunks: O(K x chunk) temporaries
            for c0 in range(0, n, width):
                lv = np.pad(levels[:, c0:c0 + width].astype(np.int64),
                            ((0, pad), (0, 0))).reshape(groups, group, -1)
                acc_hi[:, c0:c0 + width] = np.maximum(qhi * lv, qlo * lv).sum(axis=1)  # [G, N]
                acc_lo[:, c0:c0 + width] = np.minimum(qhi * lv, qlo * lv).sum(axis=1)
            del levels
        else:
            ex = np.pad(info.extreme, (0, pad)).reshape(groups, group)
            m = max(abs(qlo), abs(qhi))
            acc_hi = np.repeat((m * ex).sum(axis=1)[:, None], n, axis=1)
            acc_lo = -acc_hi
        sizes = np.minimum(group, k - np.arange(groups) * group)
        sx = (int(qlo) * int(sizes.max()), int(qhi) * int(sizes.max()))
        acc = (int(acc_lo.min()), int(acc_hi.max()))
        bound = max(abs(acc[0]), abs(acc[1]))
        op.attributes[ATTR_ACC] = IntegerAttr(bound, i64)
        op.attributes[ATTR_SX] = IntegerAttr(max(abs(sx[0]), abs(sx[1])), i64)
        if acc[1] > INT32[1] or acc[0] < INT32[0]:
            high = acc[1] > INT32[1]
            g, col = np.unravel_index(np.argmax(acc_hi) if high else np.argmin(acc_lo),
                                      acc_hi.shape)
            raise self.accumulator_overflow(op, info, int(g), int(col), high,
                                            int(acc_hi[g, col] if high else acc_lo[g, col]),
                                            qlo, qhi)
        if sx[1] > INT32[1] or sx[0] < INT32[0]:
            raise OverflowFound(
                f"verify-overflow: quant3p5.matmul_int8 {_describe(op.result)} on {info.name}: "
                f"the int32 activation sum of a group of {group} can reach {sx}", None)

    # -- witnesses --------------------------------------------------------------------------

    def accumulator_overflow(self, op, info: _Weights, g: int, col: int, high: bool,
                             value: int, qlo: int, qhi: int) -> OverflowFound:
        k, n = op.weights.type.get_shape()
        block = slice(g * info.group, min(k, (g + 1) * info.group))
        rows = int(np.prod(_shape(op.lhs)[:-1]))
        q = np.zeros((rows, k), np.int64)
        codes = None
        if info.known:
            lv = info.levels[block, col].astype(np.int64)
            best_hi, best_lo = (qhi, qlo) if high else (qlo, qhi)
            q[0, block] = np.where(lv > 0, best_hi, np.where(lv < 0, best_lo, 0))
            pattern = (f"q[0, k] = {best_hi} where L[k, {col}] > 0 and {best_lo} where "
                       f"L[k, {col}] < 0 for k in {block.start}:{block.stop}, 0 elsewhere")
        else:  # run-time codes: the byte whose two levels have the largest same-sign sum
            sums = LEGACY_LEVELS.astype(np.int64).sum(axis=1)
            byte = int(np.argmax(np.abs(sums)))
            sign = 1 if sums[byte] > 0 else -1
            qv = (qhi if sign > 0 else qlo) if high else (qlo if sign > 0 else qhi)
            q[0, block] = qv
            codes = np.full(_shape(info.codes_arg), byte, np.int8)
            pattern = (f"q[0, {block.start}:{block.stop}] = {qv}, codes = {byte} "
                       f"(levels {tuple(int(v) for v in LEGACY_LEVELS[byte])}) everywhere")
        q = q.reshape(_shape(op.lhs))
        witness = self.model_witness(op, q, info, codes)
        where = f"{info.name}"
        if origin_of(op):
            where = f"{origin_of(op)}, {where}"
        if op.result.name_hint:
            where += f", result %{op.result.name_hint}"
        limit = INT32[1] if high else INT32[0]
        message = (f"verify-overflow: quant3p5.matmul_int8 ({where}) can overflow its int32 "
                   f"accumulator: group {g} of column {col} reaches {value} "
                   f"{'>' if high else '<'} {limit}; witness: {pattern}")
        if witness is None:
            message += " (the int8 activations are computed, so this is an op-level witness)"
        else:
            message += "; inputs: " + ", ".join(
                f"{name} = {_summary(v)}" for name, v in witness.items())
        return OverflowFound(message, witness, {"q": q.astype(np.int8)})

    def model_witness(self, op, q: np.ndarray, info: _Weights,
                      codes: np.ndarray | None) -> dict[str, np.ndarray] | None:
        """Function inputs that make `op` see activations `q` (and codes), if traceable."""
        from q35c.compiler.tensors import numpy_dtype

        source = op.lhs
        if isinstance(source.owner, quant3p5.QuantizeActivationsOp):
            source = source.owner.input  # max |q| is 127, so scale 1 and x = q exactly
            if np.abs(q).max() != 127:
                return None
        while isinstance(source.owner, _SHAPE_OPS):
            source = source.owner.operands[0]
        args = list(self.fn.args)
        if source not in args or (codes is not None and info.codes_arg not in args):
            return None
        names = argument_names(self.fn)
        witness = {}
        for name, arg in zip(names, args):
            dtype = numpy_dtype(arg.type.get_element_type()) if isinstance(
                arg.type, TensorType) else np.float32
            shape = _shape(arg)
            if arg is source:
                value = q.reshape(shape)
            elif codes is not None and arg is info.codes_arg:
                value = codes
            elif np.issubdtype(dtype, np.floating):
                value = np.ones(shape)  # scales and the like: any finite value
            else:
                value = np.zeros(shape)
            witness[name] = value.astype(dtype)
        return witness

    def generic_overflow(self, op, value, lo, hi, width) -> OverflowFound:
        operands = ", ".join(f"{_describe(v)} in {list(self.rng(v))}" for v in op.operands
                             if _width(v))
        at = f" ({origin_of(op)})" if origin_of(op) else ""
        message = (f"verify-overflow: {op.name} {_describe(value)}{at} can leave i{width}: its "
                   f"range is [{lo}, {hi}] for operands {operands}")
        witness = self.endpoint_witness(op, width)
        if witness is not None:
            names = {n for n, a in zip(argument_names(self.fn), self.fn.args) if a in op.operands}
            message += "; witness: " + ", ".join(
                f"{name} = {_summary(v)}" for name, v in witness.items() if name in names)
            message += " (other inputs 0)"
        return OverflowFound(message, witness)

    def endpoint_witness(self, op, width) -> dict[str, np.ndarray] | None:
        """For addi/subi/muli of function arguments (and constants): arguments at the ends of
        their ranges for which the exact result leaves the type."""
        from itertools import product

        if not isinstance(op, (arith.AddiOp, arith.SubiOp, arith.MuliOp)):
            return None
        args = list(self.fn.args)
        free = [v for v in dict.fromkeys(op.operands) if v in args]
        if any(v not in args and not isinstance(v.owner, arith.ConstantOp)
               for v in op.operands) or not free:
            return None
        tlo, thi = _type_range(width)
        for ends in product(*[self.rng(v) for v in free]):
            choice = dict(zip(free, ends))
            a, b = (choice.get(v, self.rng(v)[0]) for v in op.operands)
            exact = a + b if isinstance(op, arith.AddiOp) else a - b if isinstance(
                op, arith.SubiOp) else a * b
            if not tlo <= exact <= thi:
                witness = {}
                for name, arg in zip(argument_names(self.fn), args):
                    dtype = np.dtype(f"int{_width(arg)}") if _width(arg) in (8, 16, 32, 64) \
                        else np.float32
                    witness[name] = np.full(_shape(arg), choice.get(arg, 0), dtype)
                return witness
        return None


@dataclass
class _Accumulators:
    """The accumulators of a counted loop of `trips` iterations: variable cells and
    loop-carried values (by position) each iteration increments by a sum of terms."""
    trips: int
    cells: dict[SSAValue, list[tuple[SSAValue, int]]]
    carried: dict[int, list[tuple[SSAValue, int]]]


def _accumulators(op: scf.ForOp, trips: int) -> _Accumulators | None:
    """`s = s + e1 - e2 + ...` in the body of `op` (dot products, sums, counts): a chain of
    `arith.addi`/`subi` at the top of the body from the body's only read of s (its only
    load of cell s, or the loop-carried block argument) to its only write (the store to
    the cell, or the yielded value), each chain value used only by the next link, so no
    increment e_i can depend on s. Their terms (e_i, +1 or -1)."""
    block = op.body.block
    inside = set(op.body.walk())
    cells: dict[SSAValue, list[tuple[SSAValue, int]]] = {}
    for load in block.ops:
        if not isinstance(load, memref.LoadOp) or not _is_cell(load.memref):
            continue
        uses = [u.operation for u in load.memref.uses if u.operation in inside]
        stores = [u for u in uses if isinstance(u, memref.StoreOp)]
        if len(uses) != 2 or len(stores) != 1 or stores[0].parent_block() is not block:
            continue
        terms = _chain(load.res, stores[0].value, block)
        if terms:
            cells[load.memref] = terms
    carried: dict[int, list[tuple[SSAValue, int]]] = {}
    yielded = block.last_op.operands if isinstance(block.last_op, scf.YieldOp) else ()
    for k, (arg, out) in enumerate(zip(block.args[1:], yielded)):
        terms = _chain(arg, out, block)
        if terms:
            carried[k] = terms
    return _Accumulators(trips, cells, carried) if cells or carried else None


def _array_argument(value: SSAValue, names: dict) -> SSAValue | None:
    """The array argument of the function that `value` is an element of (through integer
    widening), or None."""
    while isinstance(value.owner, arith.ExtSIOp):
        value = value.owner.input
    if isinstance(value.owner, memref.LoadOp) and value.owner.memref in names and \
            value.owner.memref.type.get_shape():
        return value.owner.memref
    return None


def _chain(start: SSAValue, end: SSAValue, block) -> list[tuple[SSAValue, int]] | None:
    terms = []
    value = start
    while value is not end:
        uses = list(value.uses)
        if len(uses) != 1 or _width(value) is None:
            return None
        user, index = uses[0].operation, uses[0].index
        if user.parent_block() is not block:
            return None
        if isinstance(user, arith.AddiOp):
            terms.append((user.operands[1 - index], 1))
        elif isinstance(user, arith.SubiOp) and index == 0:
            terms.append((user.operands[1], -1))
        else:
            return None
        value = user.result
    return terms or None


def _trunc_div(x: int, y: int) -> int:
    """x / y rounded toward zero, as arith.divsi (exact for Python's big integers)."""
    q = abs(x) // abs(y)
    return q if (x >= 0) == (y > 0) else -q


def _summary(v: np.ndarray) -> str:
    values, counts = np.unique(v, return_counts=True)
    if len(values) == 1:
        return f"{values[0].item()!r} everywhere {list(v.shape)}"
    top = ", ".join(f"{x.item()!r} x{c}" for x, c in zip(values, counts))
    return f"{list(v.shape)} with values {top}"


@dataclass(frozen=True)
class VerifyOverflowPass(ModulePass):
    """Prove int32 accumulators cannot overflow (or fail with a witness); bound integer ops."""

    name = "verify-overflow"

    arg_ranges: str = ""
    """Declared ranges of integer arguments, `NAME=LO:HI,...` (default: the type's range)."""
    witness_dir: str = ""
    """On failure, write the witness inputs to WITNESS-DIR/<argument>.npy."""
    check_arith: bool = False
    """Also fail on plain `arith` integer ops that can leave their type. Off by default: they
    wrap by definition (MLIR arith), so only their ranges are recorded. int8-path
    accumulators are always checked, and so is Fortran (below)."""
    allow_wrap: str = ""
    """Fortran procedures (comma-separated names, or `*` for all) whose integer overflow is
    intended wrapping. Every other Fortran procedure (`q35c.integer_overflow` set by the
    frontend) fails when an interval-flagged op overflows for an input the interpreter
    confirms (verify_overflow_witness.py): Fortran leaves signed overflow undefined."""

    def __post_init__(self) -> None:
        parse_arg_ranges(self.arg_ranges)  # a malformed or empty range fails up front

    def allowed(self, fn: func.FuncOp) -> bool:
        names = {n.strip() for n in self.allow_wrap.split(",") if n.strip()}
        return "*" in names or fn.sym_name.data in names

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        ranges = parse_arg_ranges(self.arg_ranges)
        store = store_of(op)
        for fn in op.walk():
            if isinstance(fn, func.FuncOp) and fn.body.blocks:
                try:
                    analysis = _Analysis(store, ranges, fn, self.check_arith)
                    analysis.run()
                    if ("q35c.integer_overflow" in fn.attributes and not self.allowed(fn)
                            and "q35c.allow_wrap" not in fn.attributes):
                        _reject_confirmed(op, fn, ranges, analysis.extremes)
                except OverflowFound as err:
                    if self.witness_dir and err.witness:
                        out = Path(self.witness_dir)
                        out.mkdir(parents=True, exist_ok=True)
                        for name, value in err.witness.items():
                            np.save(out / f"{name}.npy", value)
                    raise


def _reject_confirmed(module: ModuleOp, fn: func.FuncOp, ranges, extremes=()) -> None:
    """Fail if an op of Fortran procedure `fn` marked `q35c.may_wrap` overflows for a
    candidate input, confirmed by the interpreter; the witness is in the error. The inputs
    that reach an accumulator's closed-form bound (`extremes`) are tried first."""
    from q35c.passes.verify_overflow_witness import confirm

    flagged = [op for op in fn.walk() if ATTR_MAY_WRAP in op.attributes]
    if not flagged:
        return
    found = confirm(module, fn, flagged, ranges, extremes)
    if found is None:
        return
    name = fn.sym_name.data
    at = f" ({origin_of(found.op)})" if origin_of(found.op) else ""
    inputs = ", ".join(f"{n} = {_summary(np.asarray(v))}" for n, v in found.inputs.items())
    raise OverflowFound(
        f"verify-overflow: {found.op.name}{at} overflows i{found.width}: "
        f"{found.operands[0]} and {found.operands[1]} give {found.exact} for the inputs "
        f"{inputs} (confirmed by the interpreter); Fortran leaves integer overflow undefined: "
        f"use a wider kind, or allow wrapping with --passes "
        f"'default,verify-overflow{{allow-wrap={name}}}'", found.inputs)
