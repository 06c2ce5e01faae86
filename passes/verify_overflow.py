"""`verify-overflow`: prove that no integer computation overflows, or show an input that does.

Interval analysis, in exact (Python) integers, over every integer value of each function:

- integer function arguments: their type's range, or the range `arg-ranges` declares
  (`"input_ids=0:255,n=1:64"`);
- `arith.constant`: the range of its values; `arith` integer ops (addi, subi, muli, maxsi,
  minsi, select, extsi, trunci) and `linalg.reduce` with an `addi` body: interval arithmetic;
  with `check-arith=true` the result must fit its type (by default a result that may not is
  taken to wrap, as MLIR and the Fortran frontend define, and gets the type's range);
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
from xdsl.dialects import arith, func, tensor
from xdsl.dialects.builtin import (
    DenseArrayBase,
    IntegerAttr,
    IntegerType,
    ModuleOp,
    TensorType,
    i64,
)
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.quant import CODEBOOK, LEGACY_LEVELS, Q3P5Tensor
from q35c.compiler.tensors import constant_value
from q35c.compiler.weights import WeightStore, store_of
from q35c.dialects import quant3p5

INT32 = (-(2**31), 2**31 - 1)
ATTR_ACC = "q35c.acc_bound"
ATTR_SX = "q35c.sx_bound"
ATTR_RANGE = "q35c.int_range"
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
    return el.width.data if isinstance(el, IntegerType) else None


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
    ranges = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, bounds = item.partition("=")
        lo, sep2, hi = bounds.partition(":")
        try:
            if not sep or not sep2:
                raise ValueError
            ranges[name] = (int(lo), int(hi))
        except ValueError:
            raise Q35cError(f"verify-overflow: arg-ranges expects NAME=LO:HI,..., got '{item}'"
                            ) from None
    return ranges


@dataclass
class _Weights:
    """What is known about a packed weight value's integer levels."""

    levels: np.ndarray | None  # int64 [K, N] when the codes are known
    extreme: np.ndarray | None  # int64 [K]: max |level| per row when the codes are not
    group: int
    layout: str
    name: str
    codes_arg: SSAValue | None = None  # run-time codes: the pack op's codes operand


def _levels_of(value) -> np.ndarray:
    if isinstance(value, Q3P5Tensor):
        table, codes = CODEBOOK, value.codes()
    else:
        table, codes = LEGACY_LEVELS, value.packed
    k, n = value.shape
    levels = table.astype(np.int64)[codes.astype(np.int64)]
    return levels.transpose(0, 2, 1).reshape(-1, n)[:k]


@dataclass
class _Analysis:
    store: WeightStore
    arg_ranges: dict[str, tuple[int, int]]
    fn: func.FuncOp
    check_arith: bool = False
    ranges: dict[SSAValue, tuple[int, int]] = field(default_factory=dict)
    weights: dict[SSAValue, _Weights] = field(default_factory=dict)

    def run(self) -> None:
        from q35c.targets.interp.interpreter import argument_names

        for name, arg in zip(argument_names(self.fn), self.fn.args):
            width = _width(arg)
            if width is not None:  # declared by its q35c.name (or argN) or its SSA name
                declared = self.arg_ranges.get(name) or self.arg_ranges.get(arg.name_hint or "")
                self.ranges[arg] = declared or _type_range(width)
        for op in self.fn.body.blocks[0].ops:  # not region bodies: their block args are scalars
            self.visit(op)

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
        self.ranges[value] = (lo, hi)
        if width is not None and width > 1:
            if value is op.results[0]:
                op.attributes[ATTR_RANGE] = DenseArrayBase.from_list(i64, [lo, hi])

    def visit(self, op: Operation) -> None:
        if isinstance(op, arith.ConstantOp) and _width(op.result):
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
                _levels_of(value), None, op.result.type.group, op.result.type.layout.data,
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
            levels = LEGACY_LEVELS.astype(np.int64)[raw & 127]
            levels = levels.transpose(0, 2, 1).reshape(-1, n)[:k]
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
        if info.levels is not None:
            lv = np.pad(info.levels, ((0, pad), (0, 0))).reshape(groups, group, n)
            acc_hi = (np.maximum(qhi * lv, qlo * lv)).sum(axis=1)  # [G, N]
            acc_lo = (np.minimum(qhi * lv, qlo * lv)).sum(axis=1)
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
        if info.levels is not None:
            lv = info.levels[block, col]
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
        from q35c.targets.interp.interpreter import argument_names
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
        message = (f"verify-overflow: {op.name} {_describe(value)} can leave i{width}: its "
                   f"range is [{lo}, {hi}] for operands {operands}")
        witness = self.endpoint_witness(op, width)
        if witness is not None:
            from q35c.targets.interp.interpreter import argument_names

            names = {n for n, a in zip(argument_names(self.fn), self.fn.args) if a in op.operands}
            message += "; witness: " + ", ".join(
                f"{name} = {_summary(v)}" for name, v in witness.items() if name in names)
            message += " (other inputs 0)"
        return OverflowFound(message, witness)

    def endpoint_witness(self, op, width) -> dict[str, np.ndarray] | None:
        """For addi/subi/muli of function arguments (and constants): arguments at the ends of
        their ranges for which the exact result leaves the type."""
        from itertools import product

        from q35c.targets.interp.interpreter import argument_names

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
    wrap by definition (MLIR arith, and the Fortran frontend's two's-complement integers), so
    only their ranges are recorded. int8-path accumulators are always checked."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        ranges = parse_arg_ranges(self.arg_ranges)
        store = store_of(op)
        for fn in op.walk():
            if isinstance(fn, func.FuncOp) and fn.body.blocks:
                try:
                    _Analysis(store, ranges, fn, self.check_arith).run()
                except OverflowFound as err:
                    if self.witness_dir and err.witness:
                        out = Path(self.witness_dir)
                        out.mkdir(parents=True, exist_ok=True)
                        for name, value in err.witness.items():
                            np.save(out / f"{name}.npy", value)
                    raise
