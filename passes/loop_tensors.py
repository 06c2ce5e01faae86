"""Loop nests of a Fortran function as tensor ops: the engine of `raise-fortran-tensors`.

Every array (argument, local or temporary) has a tensor for its current contents; the body is
executed symbolically, op by op, in program order. A counted loop (`scf.for` with constant
bounds) is either

- *vectorized*: its iterations are independent (no loop-carried SSA value; every array it
  writes is indexed, in some dimension, by the same injective affine function of its index
  in every load and store of the loop; every scalar it writes is written before it is read
  in each iteration), so the loop index becomes a tensor dimension and each op of the body
  becomes one op on tensors over all iterations at once; or
- *unrolled*: otherwise (a reduction: `s = s + x(j)`, `m = max(m, x(j))`, counts, masked
  sums, ...) the body is executed once per iteration, in order, with the index a constant,
  each op on the tensors of the enclosing vectorized loops. The loop's operation order and
  its roundings are the tensor ops' (a `linalg.reduce` would round a float sum once, in
  float64, which is not what the loop computes).

Values are kept symbolic where they can be: integer and index values that are affine in
the loop indices (subscripts, `real(i)`) are folded and become constant tensors only where
data needs them. An `scf.if` whose condition is not a constant is if-converted: both
branches run, stores under a condition store `select(cond, new, old)`. A subscript is an
affine function of at most one loop index per dimension; every subscript range is checked
against the array's shape at compile time (all shapes are constants), so an out-of-bounds
access is refused with the interpreter's message instead of being raised.

Whatever does not fit raises `NotRaised(line, reason)`: the caller leaves the function's
loops in place and the target refuses them with that line and reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects import arith, func, memref, scf, tensor
from xdsl.dialects.builtin import (
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DictionaryAttr,
    IndexType,
    IntegerAttr,
    IntegerType,
    MemRefType,
    TensorType,
    i64,
)
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import Attribute, Operation, SSAValue

from q35c.compiler.ir_attrs import SOURCE_LINE_ATTR
from q35c.dialects import q35nn

MAX_UNROLLED_OPS = 200_000
"""Ops an unrolled loop nest may emit in one function before raising gives up."""

_CAST_OPSET = 21
_ONNX_TYPES = {"f32": 1, "f64": 11, "i8": 3, "i16": 5, "i32": 6, "i64": 7, "i1": 9}
_CMPF = {1: ("Equal", False), 2: ("Greater", False), 3: ("GreaterOrEqual", False),
         4: ("Less", False), 5: ("LessOrEqual", False), 13: ("Equal", True)}
"""arith.cmpf predicates (oeq, ogt, oge, olt, ole, une) as ONNX comparisons (false for
NaN operands, as the ordered predicates; une is the negated Equal, true for NaN)."""
_CMPI = {0: ("Equal", False), 1: ("Equal", True), 2: ("Less", False),
         3: ("LessOrEqual", False), 4: ("Greater", False), 5: ("GreaterOrEqual", False)}
_CASTS = (arith.SIToFPOp, arith.FPToSIOp, arith.ExtSIOp, arith.TruncIOp, arith.ExtFOp,
          arith.TruncFOp)


class NotRaised(Exception):
    """A loop (or op) that does not map to tensor ops: its source line and why."""

    def __init__(self, line: int | None, reason: str):
        super().__init__(reason)
        self.line, self.reason = line, reason


def line_of(op: Operation | None) -> int | None:
    while op is not None:
        attr = op.attributes.get(SOURCE_LINE_ATTR)
        if isinstance(attr, IntegerAttr):
            return attr.value.data
        op = op.parent_op()
    return None


@dataclass(frozen=True)
class Aff:
    """An integer/index value `const + sum(coef * index of vectorized loop pos)`."""

    terms: tuple[tuple[int, int], ...]  # (context position, coefficient), sorted, nonzero
    const: int
    type: Attribute

    def depth(self) -> int:
        return max((p for p, _ in self.terms), default=-1) + 1


@dataclass(frozen=True)
class Const:
    """A float scalar constant."""

    value: float
    type: Attribute


@dataclass(frozen=True)
class Ten:
    """A tensor of shape ctx[:depth] (rank 0 when depth is 0) of element type `type`."""

    value: SSAValue
    depth: int

    @property
    def type(self) -> Attribute:
        return self.value.type.get_element_type()


Val = Aff | Const | Ten


@dataclass
class Cell:
    """The contents of an array: shape ctx[:pdepth] + the array's shape (`pdepth` > 0 for a
    scalar or temporary private to the iterations of the first pdepth vectorized loops)."""

    value: SSAValue
    pdepth: int


def _wrap(value: int, t: Attribute) -> int:
    if isinstance(t, IntegerType):
        bits = t.width.data
        value &= (1 << bits) - 1
        return value - (1 << bits) if bits > 1 and value >> (bits - 1) else value
    return value


@dataclass
class LoopRaiser:
    """Executes a function body (or a part of it) on tensors; see the module docstring."""

    builder: object  # raise_fortran_tensors._Builder
    shapes: dict[SSAValue, tuple[int, ...]]
    names: dict[SSAValue, str]
    mem: dict[SSAValue, Cell] = field(default_factory=dict)
    env: dict[SSAValue, Val] = field(default_factory=dict)
    ctx: list[int] = field(default_factory=list)  # extents of the vectorized loops
    ctx_ivs: list[SSAValue] = field(default_factory=list)
    pred: Val | None = None
    emitted: int = 0
    unrolled: list[tuple[int | None, int]] = field(default_factory=list)
    vectorized: list[tuple[int | None, int]] = field(default_factory=list)
    private: set[SSAValue] = field(default_factory=set)

    # ---------------------------------------------------------------- emitting
    def insert(self, op: Operation) -> Operation:
        self.emitted += 1
        if self.emitted > MAX_UNROLLED_OPS:
            raise NotRaised(None, f"more than {MAX_UNROLLED_OPS} tensor ops after unrolling "
                                  "its loops")
        return self.builder.insert(op)

    def constant(self, array: np.ndarray, element: Attribute) -> SSAValue:
        t = TensorType(element, list(array.shape))
        kind = bool if str(element) == "i1" else int if isinstance(
            element, (IntegerType, IndexType)) else float
        values = [kind(v) for v in array.reshape(-1).tolist()]
        if len(set(values)) == 1 and values:
            attr = DenseIntOrFPElementsAttr.from_list(t, values[:1])
        else:
            attr = DenseIntOrFPElementsAttr.from_list(t, values)
        return self.insert(arith.ConstantOp(attr)).result

    def reshape(self, value: SSAValue, shape) -> SSAValue:
        shape = tuple(int(d) for d in shape)
        if tuple(value.type.get_shape()) == shape:
            return value
        self.emitted += 1
        return self.builder.reshape(value, shape)

    def broadcast(self, value: SSAValue, shape) -> SSAValue:
        """`value` has `shape`'s dims or 1 in each (same rank), or is rank 0."""
        if tuple(value.type.get_shape()) == tuple(shape):
            return value
        if not value.type.get_shape():
            value = self.reshape(value, (1,) * len(shape))
        self.emitted += 1
        return self.builder.broadcast_to(value, shape)

    def transpose(self, value: SSAValue, perm: list[int]) -> SSAValue:
        if perm == sorted(perm):
            return value
        shape = value.type.get_shape()
        out = [shape[p] for p in perm]
        init = self.builder.empty(out, value.type.get_element_type())
        return self.insert(linalg.TransposeOp(value, init, DenseArrayBase.from_list(
            i64, perm), TensorType(value.type.get_element_type(), out))).results[0]

    def slice(self, value: SSAValue, offsets, sizes, strides) -> SSAValue:
        shape = tuple(value.type.get_shape())
        if all(o == 0 and s == d and st == 1 for o, s, st, d in
               zip(offsets, sizes, strides, shape)):
            return value
        return self.insert(tensor.ExtractSliceOp(value, list(offsets), list(sizes),
                                                 list(strides), TensorType(
            value.type.get_element_type(), list(sizes)))).results[0]

    def concat(self, values: list[SSAValue], axis: int) -> SSAValue:
        if len(values) == 1:
            return values[0]
        self.emitted += 1
        return self.builder.concat(values, axis)

    # ---------------------------------------------------------------- values
    def tensor(self, val: Val, depth: int) -> SSAValue:
        """`val` as a tensor of shape ctx[:depth] (depth >= val's depth)."""
        shape = self.ctx[:depth]
        if isinstance(val, Const):
            return self.constant(np.full(shape, val.value), val.type)
        if isinstance(val, Aff):
            if isinstance(val.type, IndexType):
                raise NotRaised(None, "an index value is used as data")
            grid = np.full(shape, val.const, dtype=np.int64)
            for pos, coef in val.terms:
                axis = np.arange(self.ctx[pos], dtype=np.int64).reshape(
                    [-1 if d == pos else 1 for d in range(depth)])
                grid = grid + coef * axis
            bits = val.type.width.data
            grid = np.array([_wrap(int(v), val.type) for v in grid.reshape(-1)],
                            dtype=np.int64).reshape(shape) if bits < 64 else grid
            return self.constant(grid, val.type)
        if val.depth == depth:
            return val.value
        padded = self.reshape(val.value, tuple(self.ctx[:val.depth]) +
                              (1,) * (depth - val.depth))
        return self.broadcast(padded, shape)

    def depth_of(self, val: Val) -> int:
        return val.depth() if isinstance(val, Aff) else val.depth if isinstance(val, Ten) else 0

    def aff(self, v: SSAValue) -> Aff | None:
        val = self.env.get(v)
        return val if isinstance(val, Aff) else None

    def const_int(self, v: SSAValue, what: str, op: Operation) -> int:
        val = self.aff(v)
        if val is None or val.terms:
            raise NotRaised(line_of(op), f"{what} is not a constant")
        return val.const

    # ---------------------------------------------------------------- execution
    def run(self, ops) -> None:
        for op in ops:
            self.step(op)

    def step(self, op: Operation) -> None:
        if isinstance(op, scf.YieldOp):
            return
        if isinstance(op, arith.ConstantOp):
            if isinstance(op.result.type, TensorType):
                raise NotRaised(line_of(op), "a tensor constant in a loop body")
            attr = op.value
            if isinstance(op.result.type, (IntegerType, IndexType)):
                self.env[op.result] = Aff((), _wrap(attr.value.data, op.result.type),
                                          op.result.type)
            else:
                self.env[op.result] = Const(attr.value.data, op.result.type)
            return
        if isinstance(op, (memref.AllocaOp, memref.AllocOp)):
            shape = []
            sizes = iter(op.dynamic_sizes)
            for d in op.memref.type.get_shape():
                shape.append(d if d >= 0 else self.const_int(next(sizes), "an array extent",
                                                             op))
            self.shapes[op.memref] = tuple(shape)
            if self.ctx:
                self.private.add(op.memref)
            self.mem.pop(op.memref, None)
            return
        if isinstance(op, memref.DeallocOp):
            return
        if isinstance(op, memref.LoadOp):
            self.env[op.res] = self.load(op)
            return
        if isinstance(op, memref.StoreOp):
            self.store(op)
            return
        if isinstance(op, scf.ForOp):
            self.loop(op)
            return
        if isinstance(op, scf.IfOp):
            self.branch(op)
            return
        if isinstance(op, scf.WhileOp):
            raise NotRaised(line_of(op), "a loop that can be left early (exit, cycle, return "
                                         "or do while) has no tensor form")
        if op.regions or not op.results or len(op.results) != 1 or any(
                isinstance(v.type, (TensorType, MemRefType)) for v in op.operands):
            raise NotRaised(line_of(op), f"{op.name} has no tensor form here")
        self.env[op.results[0]] = self.compute(op)

    def compute(self, op: Operation) -> Val:
        vals = [self.env[v] for v in op.operands]
        folded = self.fold(op, vals)
        if folded is not None:
            return folded
        from q35c.semantics import IMPLEMENTATIONS

        if isinstance(op, arith.IndexCastOp):
            raise NotRaised(line_of(op), "a subscript or loop bound computed from run-time "
                                         "values (array elements, scalar arguments) has no "
                                         "tensor form")
        if isinstance(op, func.CallOp):
            raise NotRaised(line_of(op), f"a call of '{op.callee.root_reference.data}' (calls "
                                         "are not inlined)")
        if type(op) not in IMPLEMENTATIONS or op.name.split(".")[0] not in ("arith", "math"):
            raise NotRaised(line_of(op), f"{op.name} has no tensor form")
        depth = max(self.depth_of(v) for v in vals)
        args = [self.tensor(v, depth) for v in vals]
        result = TensorType(op.results[0].type, self.ctx[:depth])
        if isinstance(op, (arith.CmpfOp, arith.CmpiOp)):
            return Ten(self.compare(op, args, depth), depth)
        if isinstance(op, arith.SelectOp):
            return Ten(self.onnx("Where", args, result), depth)
        logic = {arith.AndIOp: "And", arith.OrIOp: "Or", arith.XOrIOp: "Xor"}
        if type(op) in logic and op.results[0].type == IntegerType(1):
            return Ten(self.onnx(logic[type(op)], args, result), depth)
        if isinstance(op, _CASTS):
            to = _ONNX_TYPES.get(str(op.results[0].type))
            if to is None:
                raise NotRaised(line_of(op), f"{op.name} to {op.results[0].type}")
            return Ten(self.onnx("Cast", args, result, {"to": IntegerAttr(to, i64)}), depth)
        else:
            new = self.insert(type(op).build(operands=args, result_types=[result],
                                             properties=dict(op.properties)))
        return Ten(new.results[0], depth)

    def onnx(self, op_type: str, args: list[SSAValue], result: TensorType,
             attrs: dict | None = None) -> SSAValue:
        """A generic ONNX node (xDSL's arith comparisons, select and casts take no
        tensors here)."""
        return self.insert(q35nn.OnnxNodeOp(op_type, _CAST_OPSET, args, [result],
                                            DictionaryAttr(attrs or {}))).results[0]

    def compare(self, op: arith.CmpfOp | arith.CmpiOp, args, depth: int) -> SSAValue:
        table = _CMPF if isinstance(op, arith.CmpfOp) else _CMPI
        found = table.get(op.predicate.value.data)
        if found is None:
            raise NotRaised(line_of(op), f"{op.name} predicate {op.predicate.value.data}")
        name, negate = found
        result = TensorType(IntegerType(1), self.ctx[:depth])
        value = self.onnx(name, args, result)
        return self.onnx("Not", [value], result) if negate else value

    def fold(self, op: Operation, vals: list[Val]) -> Val | None:
        """Integer/index arithmetic on affine values, kept symbolic."""
        if not all(isinstance(v, Aff) for v in vals):
            return None
        t = op.results[0].type
        if isinstance(op, (arith.IndexCastOp, arith.ExtSIOp, arith.TruncIOp)):
            a = vals[0]
            return Aff(a.terms, _wrap(a.const, t), t) if not a.terms or isinstance(
                op, (arith.IndexCastOp, arith.ExtSIOp)) else None
        if isinstance(op, (arith.AddiOp, arith.SubiOp)):
            a, b = vals
            sign = 1 if isinstance(op, arith.AddiOp) else -1
            terms = dict(a.terms)
            for p, c in b.terms:
                terms[p] = terms.get(p, 0) + sign * c
            return Aff(tuple(sorted((p, c) for p, c in terms.items() if c)),
                       _wrap(a.const + sign * b.const, t), t)
        if isinstance(op, arith.MuliOp):
            a, b = vals
            if b.terms and not a.terms:
                a, b = b, a
            if b.terms:
                return None
            return Aff(tuple((p, c * b.const) for p, c in a.terms if c * b.const),
                       _wrap(a.const * b.const, t), t)
        if any(v.terms for v in vals):
            return None
        c = [v.const for v in vals]
        simple = {arith.MaxSIOp: max, arith.MinSIOp: min}
        if type(op) in simple:
            return Aff((), simple[type(op)](c), t)
        if isinstance(op, arith.DivSIOp) and c[1] != 0:
            q = abs(c[0]) // abs(c[1])
            return Aff((), _wrap(q if (c[0] < 0) == (c[1] < 0) else -q, t), t)
        if isinstance(op, arith.CmpiOp):
            preds = {0: c[0] == c[1], 1: c[0] != c[1], 2: c[0] < c[1], 3: c[0] <= c[1],
                     4: c[0] > c[1], 5: c[0] >= c[1]}
            p = op.predicate.value.data
            if p in preds:
                return Aff((), int(preds[p]), t)
        return None

    # ---------------------------------------------------------------- memory
    def subscripts(self, op, ref: SSAValue, indices) -> list[tuple[int | None, int, int]]:
        """Per dimension (context position or None, stride, offset); checks the bounds."""
        shape = self.shapes.get(ref)
        if shape is None:
            raise NotRaised(line_of(op), "an array of run-time shape")
        subs = []
        for d, v in enumerate(indices):
            a = self.aff(v)
            if a is None or len(a.terms) > 1:
                raise NotRaised(line_of(op), f"subscript {d + 1} of '{self.label(ref)}' is "
                                             "not an affine function of one loop index")
            if a.terms:
                (pos, coef), = a.terms
                subs.append((pos, coef, a.const))
            else:
                subs.append((None, 0, a.const))
        used = [p for p, _, _ in subs if p is not None]
        if len(set(used)) != len(used):
            raise NotRaised(line_of(op), f"'{self.label(ref)}' is indexed by one loop index "
                                         "in two dimensions")
        # bounds, at both ends of every range
        for corner in (0, 1):
            idx = tuple(b + (c * (self.ctx[p] - 1) if p is not None and corner else 0)
                        for p, c, b in subs)
            if any(not 0 <= i < n for i, n in zip(idx, shape)):
                raise BoundsError(line_of(op), f"index {_tuple(idx)} of array "
                                  f"'{self.label(ref)}' is out of bounds for shape "
                                  f"{_tuple(shape)} ({op.name})")
        return subs

    def label(self, ref: SSAValue) -> str:
        return self.names.get(ref, "a temporary")

    def cell(self, ref: SSAValue, op) -> Cell:
        if ref not in self.mem:  # never written: zeros, as the interpreter allocates
            el = ref.type.get_element_type()
            self.mem[ref] = Cell(self.constant(np.zeros(self.shapes[ref]), el), 0)
        return self.mem[ref]

    def load(self, op: memref.LoadOp) -> Val:
        ref = op.memref
        subs = self.subscripts(op, ref, op.indices)
        cell = self.cell(ref, op)
        p = cell.pdepth
        if any(pos is not None and pos < p for pos, _, _ in subs):
            raise NotRaised(line_of(op), f"'{self.label(ref)}' is indexed by the loop it is "
                                         "private to")
        offsets = [0] * p + [b for _, _, b in subs]
        sizes = self.ctx[:p] + [self.ctx[pos] if pos is not None else 1 for pos, _, _ in subs]
        strides = [1] * p + [c if pos is not None else 1 for pos, c, _ in subs]
        part = self.slice(cell.value, offsets, sizes, strides)
        order = list(range(p)) + [pos for pos, _, _ in subs if pos is not None]
        part = self.reshape(part, [self.ctx[q] for q in order])
        perm = sorted(range(len(order)), key=lambda k: order[k])
        part = self.transpose(part, perm)
        present = sorted(order)
        depth = max(present, default=-1) + 1
        part = self.reshape(part, [self.ctx[q] if q in present else 1 for q in range(depth)])
        part = self.broadcast(part, self.ctx[:depth]) if depth else part
        return Ten(part, depth)

    def store(self, op: memref.StoreOp) -> None:
        ref = op.memref
        subs = self.subscripts(op, ref, op.indices)
        val = self.env[op.value]
        if self.pred is not None:  # under a condition: keep the old value where it is false
            val = self.select(self.pred, val, self._load_like(op, ref), op)
        used = {pos for pos, _, _ in subs if pos is not None}
        dv = max(self.depth_of(val), max(used, default=-1) + 1)
        missing = [q for q in range(self.depth_of(val)) if q not in used]
        old = self.mem.get(ref)
        pnew = max([q + 1 for q in missing] + [old.pdepth if old else 0])
        if pnew and ref not in self.private and not (
                isinstance(ref.type, MemRefType) and not ref.type.get_shape()):
            raise NotRaised(line_of(op), f"every iteration writes the same element of "
                                         f"'{self.label(ref)}'")
        if any(q < pnew for q in used):
            raise NotRaised(line_of(op), f"'{self.label(ref)}' is indexed by the loop it is "
                                         "private to")
        # the value over ctx[:pnew] + the indexed dims; other positions: their last
        # iteration (the value does not depend on them)
        v = self.tensor(val, dv)
        keep = list(range(pnew)) + sorted(used)
        drop = [q for q in range(dv) if q not in keep]
        if drop:
            v = self.slice(v, [self.ctx[q] - 1 if q in drop else 0 for q in range(dv)],
                           [1 if q in drop else self.ctx[q] for q in range(dv)], [1] * dv)
            v = self.reshape(v, [self.ctx[q] for q in range(dv) if q not in drop])
        # into the array's dimension order, size-1 dims for constant subscripts
        in_ref = [pos for pos, _, _ in subs if pos is not None]
        present = list(range(pnew)) + sorted(used)
        perm = [present.index(q) for q in list(range(pnew)) + in_ref]
        v = self.transpose(v, perm)
        patch_shape = [self.ctx[pos] if pos is not None else 1 for pos, _, _ in subs]
        v = self.reshape(v, self.ctx[:pnew] + patch_shape)
        shape = self.shapes[ref]
        ranges = [(b, n, c if pos is not None else 1) for (pos, c, b), n in
                  zip(subs, patch_shape)]
        if all(b == 0 and n == d and st == 1 for (b, n, st), d in zip(ranges, shape)):
            self.mem[ref] = Cell(v, pnew)
            return
        if any(st != 1 and n > 1 for b, n, st in ranges):
            raise NotRaised(line_of(op), f"a strided store into '{self.label(ref)}'")
        base = self.cell(ref, op)
        full = base.value
        if base.pdepth < pnew:
            full = self.reshape(full, self.ctx[:base.pdepth] + [1] * (pnew - base.pdepth) +
                                list(shape))
            full = self.broadcast(full, self.ctx[:pnew] + list(shape))
        self.mem[ref] = Cell(self.splice(full, v, pnew, ranges, shape), pnew)

    def _load_like(self, op: memref.StoreOp, ref: SSAValue) -> Val:
        probe = memref.LoadOp.get(ref, list(op.indices))
        probe.attributes.update(op.attributes)
        try:
            return self.load(probe)
        finally:
            probe.erase(safe_erase=False)

    def splice(self, full: SSAValue, patch: SSAValue, p: int, ranges, shape) -> SSAValue:
        """`full` with `patch` written at `ranges` (offset, size, stride 1) of the array dims
        after the first p."""
        for k, ((b, n, _), d) in enumerate(zip(ranges, shape)):
            if b == 0 and n == d:
                continue
            axis = p + k
            mid = self.splice(self.band(full, axis, b, b + n), patch, p,
                              ranges[:k] + [(0, n, 1)] + ranges[k + 1:],
                              shape[:k] + (n,) + shape[k + 1:])
            pieces = ([self.band(full, axis, 0, b)] if b else []) + [mid] + (
                [self.band(full, axis, b + n, d)] if b + n < d else [])
            return self.concat(pieces, axis)
        return patch

    def band(self, value: SSAValue, axis: int, lo: int, hi: int) -> SSAValue:
        """Elements lo..hi-1 of `value` along `axis`."""
        dims = list(value.type.get_shape())
        return self.slice(value, [lo if a == axis else 0 for a in range(len(dims))],
                          [hi - lo if a == axis else dims[a] for a in range(len(dims))],
                          [1] * len(dims))

    def select(self, cond: Val, a: Val, b: Val, op) -> Val:
        depth = max(self.depth_of(cond), self.depth_of(a), self.depth_of(b))
        t = TensorType(a.type, self.ctx[:depth])
        return Ten(self.onnx("Where", [self.tensor(cond, depth), self.tensor(a, depth),
                                      self.tensor(b, depth)], t), depth)

    # ---------------------------------------------------------------- control flow
    def loop(self, op: scf.ForOp) -> None:
        lb = self.const_int(op.lb, "a loop's start", op)
        ub = self.const_int(op.ub, "a loop's trip count", op)
        st = self.const_int(op.step, "a loop's step", op)
        trips = len(range(lb, ub, st)) if st > 0 else 0
        iv = op.body.block.args[0]
        carried = [self.env[v] for v in op.iter_args]
        if trips and not op.iter_args and self.independent(op):
            self.vectorized.append((line_of(op), trips))
            self.ctx.append(trips)
            self.ctx_ivs.append(iv)
            pos = len(self.ctx) - 1
            self.env[iv] = Aff(((pos, st),), lb, iv.type)
            self.run(op.body.block.ops)
            self.ctx.pop()
            self.ctx_ivs.pop()
            for ref, cell in list(self.mem.items()):
                if cell.pdepth > pos:  # after the loop: the last iteration's value
                    dims = list(cell.value.type.get_shape())
                    last = self.slice(cell.value, [t - 1 if a == pos else 0
                                                   for a, t in enumerate(dims)],
                                      [1 if a == pos else t for a, t in enumerate(dims)],
                                      [1] * len(dims))
                    self.mem[ref] = Cell(self.reshape(last, dims[:pos] + dims[pos + 1:]),
                                         cell.pdepth - 1)
            return
        if trips:
            self.unrolled.append((line_of(op), trips))
        for k in range(trips):
            self.env[iv] = Aff((), lb + k * st, iv.type)
            for arg, val in zip(op.body.block.args[1:], carried):
                self.env[arg] = val
            self.run(op.body.block.ops)
            carried = [self.env[v] for v in op.body.block.last_op.operands]
        for res, val in zip(op.results, carried):
            self.env[res] = val

    def branch(self, op: scf.IfOp) -> None:
        cond = self.env[op.cond]
        if isinstance(cond, Aff) and not cond.terms:
            region = op.true_region if cond.const else op.false_region
            if region.blocks:
                self.run(region.block.ops)
                yielded = [self.env[v] for v in region.block.last_op.operands]
                for res, val in zip(op.results, yielded):
                    self.env[res] = val
            return
        outer = self.pred
        results = []
        for region, when in ((op.true_region, cond), (op.false_region, None)):
            if when is None:
                when = self.logical_not(cond, op)
            self.pred = when if outer is None else self.logical_and(outer, when, op)
            if region.blocks:
                self.run(region.block.ops)
                results.append([self.env[v] for v in region.block.last_op.operands])
        self.pred = outer
        if op.results:
            for res, a, b in zip(op.results, results[0], results[1]):
                self.env[res] = self.select(cond, a, b, op)

    def logical_not(self, cond: Val, op) -> Val:
        depth = self.depth_of(cond)
        t = TensorType(IntegerType(1), self.ctx[:depth])
        return Ten(self.onnx("Not", [self.tensor(cond, depth)], t), depth)

    def logical_and(self, a: Val, b: Val, op) -> Val:
        depth = max(self.depth_of(a), self.depth_of(b))
        t = TensorType(IntegerType(1), self.ctx[:depth])
        return Ten(self.onnx("And", [self.tensor(a, depth), self.tensor(b, depth)], t), depth)

    # ---------------------------------------------------------------- dependences
    def independent(self, loop: scf.ForOp) -> bool:
        """Whether the iterations of `loop` may run at once (module docstring)."""
        iv = loop.body.block.args[0]
        accesses: dict[SSAValue, list[tuple[str, Operation]]] = {}
        inside: set[SSAValue] = set()
        for o in loop.body.walk():
            if isinstance(o, (memref.AllocOp, memref.AllocaOp)):
                inside.add(o.memref)
            if isinstance(o, (memref.LoadOp, memref.StoreOp)):
                kind = "store" if isinstance(o, memref.StoreOp) else "load"
                accesses.setdefault(o.memref, []).append((kind, o))
        for ref, acc in accesses.items():
            if not any(k == "store" for k, _ in acc) or ref in inside:
                continue
            if isinstance(ref.type, MemRefType) and not ref.type.get_shape():
                first_kind, first = acc[0]
                if first_kind != "store" or _conditional(first, loop):
                    return False
                continue
            forms = [[_linear(v, iv, loop) for v in o.indices] for _, o in acc]
            if not any(all(f[d] is not None and f[d] == forms[0][d] and
                           dict(f[d][0]).get(iv, 0) != 0 for f in forms)
                       for d in range(len(forms[0]))):
                return False
        return True


class BoundsError(NotRaised):
    """A subscript outside its array, found at compile time."""


def _tuple(values) -> str:
    return "(" + ",".join(str(v) for v in values) + ("," if len(values) == 1 else "") + ")"


def _conditional(op: Operation, loop: scf.ForOp) -> bool:
    parent = op.parent_op()
    while parent is not None and parent is not loop:
        if isinstance(parent, (scf.IfOp, scf.WhileOp)):
            return True
        parent = parent.parent_op()
    return False


def _linear(v: SSAValue, iv: SSAValue, loop: scf.ForOp):
    """`v` as (sorted ((atom, coef), ...), const) over block arguments and values defined
    outside `loop`, or None."""
    owner = v.owner
    inside = isinstance(owner, Operation) and loop.is_ancestor(owner)
    if not inside:
        return (((v, 1),), 0) if not isinstance(owner, arith.ConstantOp) else \
            ((), owner.value.value.data) if isinstance(owner.value, IntegerAttr) else None
    if isinstance(owner, arith.ConstantOp):
        return ((), owner.value.value.data) if isinstance(owner.value, IntegerAttr) else None
    if isinstance(owner, (arith.IndexCastOp, arith.ExtSIOp)):
        return _linear(owner.operands[0], iv, loop)
    if isinstance(owner, (arith.AddiOp, arith.SubiOp, arith.MuliOp)):
        a, b = (_linear(x, iv, loop) for x in owner.operands)
        if a is None or b is None:
            return None
        if isinstance(owner, arith.MuliOp):
            if b[0] and not a[0]:
                a, b = b, a
            if b[0]:
                return None
            return (tuple((x, c * b[1]) for x, c in a[0] if c * b[1]), a[1] * b[1])
        sign = 1 if isinstance(owner, arith.AddiOp) else -1
        terms = dict(a[0])
        for x, c in b[0]:
            terms[x] = terms.get(x, 0) + sign * c
        return (tuple(sorted(((x, c) for x, c in terms.items() if c), key=lambda t: id(t[0]))),
                a[1] + sign * b[1])
    return (((v, 1),), 0)
