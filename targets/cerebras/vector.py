"""Vector stages of a decode step on a row of PEs: elementwise add and mul, SiLU, SwiGLU
and RMSNorm, as xDSL `csl` IR (numeric mode: `q35c.semantics.cerebras`).

A vector of D elements lies on a 1 x `width` row of PEs, `v_tile` elements per PE (PE p
holds [p*v_tile, (p+1)*v_tile), zero-padded). The host copies the inputs into `a` (and
`b`, the second operand, or `g`, RMSNorm's gamma), launches the stage's function and reads
`y` back.

* add, mul, neg: one `@fadds` / `@fmuls` / `@fnegs` over the tile.
* silu, swiglu: a scalar loop per element (exp and the division have no DSD operation):
  the `silu_f32` order of the numeric mode, 2^n from the table `pow2` (copied in by the
  host); swiglu then `@fmuls(y, y, b)`.
* rms_norm: each PE sums its squares (scalar loop, ascending); the partials go west to east
  over the checkerboard chain of the GEMV (colors 0/1, one wavelet per PE); the east-most
  PE computes r = rsqrt(total * (1/D) + eps) (the numeric mode's scalar rsqrt) and
  broadcasts it west on color `BCAST_COLOR` (every PE on the way takes it from EAST to RAMP
  and WEST); then `@fmuls(y, a, r)`, `@fmuls(y, y, g)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.builder import ImplicitBuilder
from xdsl.dialects import arith, csl, memref, scf
from xdsl.dialects.builtin import FloatAttr, i16
from xdsl.ir import Block, SSAValue

from q35c.compiler.diagnostics import Q35cError
from q35c.semantics import cerebras as mode
from q35c.targets.cerebras.emit import _index, _int, declare_arrays, f32, fab_dsd
from q35c.targets.cerebras.plan import INPUT_QUEUE, OUTPUT_QUEUE, role_colors

KINDS = ("add", "mul", "neg", "silu", "swiglu", "rms_norm", "softmax")
CHAINED = ("rms_norm", "softmax", "attention")
"""Stages whose PEs reduce over the row (chain) and share the result (broadcast)."""
BCAST_COLOR = 2
"""RMSNorm's broadcast of r from the east-most PE back west."""
BCAST_QUEUE = 4
"""The input queue the broadcast is read from (the chain's is INPUT_QUEUE)."""
DEFAULT_V_TILE = 64


@dataclass(frozen=True)
class VectorPlan:
    kind: str
    n: int
    v_tile: int
    eps: float = 0.0

    @classmethod
    def choose(cls, kind: str, n: int, v_tile: int = 0, eps: float = 0.0) -> VectorPlan:
        if kind not in KINDS:
            raise Q35cError(f"cerebras target: no vector stage '{kind}'")
        return cls(kind, n, v_tile or min(DEFAULT_V_TILE, n), eps)

    @property
    def width(self) -> int:
        return -(-self.n // self.v_tile)

    height = 1

    def role(self, x: int) -> str:
        if self.kind not in CHAINED or self.width == 1:
            return "single"
        if x == 0:
            return "first"
        parity = "odd" if x % 2 else "even"
        return f"{'last' if x == self.width - 1 else 'mid'}_{parity}"

    def roles(self) -> list[str]:
        return sorted({self.role(x) for x in range(self.width)})

    def inputs(self) -> tuple[str, ...]:
        """The arrays the host copies per launch (`g` and `pow2` are copied once)."""
        return ("a", "b") if self.kind in ("add", "mul", "swiglu") else ("a",)

    def constants(self) -> tuple[str, ...]:
        return {"silu": ("pow2",), "swiglu": ("pow2",), "softmax": ("pow2",),
                "rms_norm": ("g",)}.get(self.kind, ())

    def valid(self, x: int) -> int:
        """Elements of PE x that are part of the vector (the rest is padding)."""
        return min(self.v_tile, self.n - x * self.v_tile)


def buffers(plan: VectorPlan) -> dict[str, tuple[object, int]]:
    vt = plan.v_tile
    out = {name: (f32, vt) for name in (*plan.inputs(), "y")}
    if "pow2" in plan.constants():
        out["pow2"] = (f32, len(mode.POW2))
    if plan.kind == "rms_norm":
        out["g"] = (f32, vt)
    if plan.kind in CHAINED:
        out.update({"part": (f32, 1), "tot": (f32, 1), "r": (f32, 1)})
    return out


def routes(plan: VectorPlan, x: int) -> list[tuple[int, tuple[str, ...], tuple[str, ...]]]:
    """(color, rx, tx) of column x of the stage (RMSNorm only: the chain and the broadcast)."""
    if plan.kind not in CHAINED or plan.width == 1:
        return []
    out = []
    cin, cout = role_colors(plan.role(x))
    if cout is not None:
        out.append((cout, ("RAMP",), ("EAST",)))
    if cin is not None:
        out.append((cin, ("WEST",), ("RAMP",)))
    if x == plan.width - 1:
        out.append((BCAST_COLOR, ("RAMP",), ("WEST",)))
    else:
        out.append((BCAST_COLOR, ("EAST",), ("RAMP",) if x == 0 else ("RAMP", "WEST")))
    return out


def _f(value: float) -> SSAValue:
    return arith.ConstantOp(FloatAttr(float(value), f32)).result


def _select(cond: SSAValue, a: SSAValue, b: SSAValue) -> SSAValue:
    return arith.SelectOp(cond, a, b).result


class VectorProgram:
    """Builds one vector stage's PE program body (inside an ImplicitBuilder)."""

    def __init__(self, plan: VectorPlan, role: str):
        self.plan, self.role = plan, role
        self.bufs: dict[str, SSAValue] = {}
        self.dsds: dict[str, SSAValue] = {}

    def declare(self) -> None:
        self.bufs, self.dsds = declare_arrays(
            buffers(self.plan), lambda name, size: None if name == "pow2" else size)

    def _fab(self, kind: str, color: int, queue: int) -> SSAValue:
        return fab_dsd(kind, color, queue, 1)

    def exp_neg(self, a: SSAValue) -> SSAValue:
        """exp_neg_f32 of one element a <= 0 (q35c.semantics.cerebras)."""
        lo = _f(mode.EXP_CLAMP)
        a = _select(arith.CmpfOp(a, lo, "olt").result, lo, a)
        t = arith.SubfOp(arith.MulfOp(a, _f(mode.LOG2E)).result, _f(0.5)).result
        n = arith.FPToSIOp(t, i16).result
        nf = arith.SIToFPOp(n, f32).result
        r = arith.SubfOp(a, arith.MulfOp(nf, _f(mode.LN2_HI)).result).result
        r = arith.SubfOp(r, arith.MulfOp(nf, _f(mode.LN2_LO)).result).result
        p = _f(mode.TAYLOR[0])
        for c in mode.TAYLOR[1:]:
            p = arith.AddfOp(arith.MulfOp(p, r).result, _f(c)).result
        j = _index(arith.AddiOp(n, _int(126)).result)
        return arith.MulfOp(p, memref.LoadOp.get(self.bufs["pow2"], [j]).res).result

    def silu(self, x: SSAValue) -> SSAValue:
        """silu_f32 of one element (q35c.semantics.cerebras), scalar f32 operations."""
        zero, one = _f(0.0), _f(1.0)
        a = _select(arith.CmpfOp(x, zero, "olt").result, x, arith.SubfOp(zero, x).result)
        e = self.exp_neg(a)
        d = arith.AddfOp(one, e).result
        num = _select(arith.CmpfOp(x, zero, "oge").result, one, e)
        return arith.MulfOp(x, arith.DivfOp(num, d).result).result

    def rsqrt(self, v: SSAValue) -> SSAValue:
        """rsqrt_f32 (q35c.semantics.cerebras): scale into [1, 4), Newton steps."""
        s = _f(1.0)
        steps = [("oge", 4.0 ** k, -k) for k in mode.DOWN_STEPS] + \
            [("olt", 4.0 ** (1 - k), k) for k in mode.UP_STEPS]
        for test, bound, k in steps:  # unrolled: 13 steps of compare, 2 products, 2 selects
            take = arith.CmpfOp(v, _f(bound), test).result
            v, s = (_select(take, arith.MulfOp(v, _f(4.0 ** k)).result, v),
                    _select(take, arith.MulfOp(s, _f(2.0 ** k)).result, s))
        h = arith.MulfOp(v, _f(0.5)).result
        y = arith.SubfOp(_f(1.0), arith.MulfOp(arith.SubfOp(v, _f(1.0)).result,
                                               _f(mode.SIXTH)).result).result
        for _ in range(mode.NEWTON_STEPS):
            t = arith.MulfOp(arith.MulfOp(y, y).result, h).result
            y = arith.MulfOp(y, arith.SubfOp(_f(1.5), t).result).result
        return arith.MulfOp(y, s).result

    def body(self) -> None:
        """The stage's work on this PE (the launch function's body, before unblocking)."""
        kind, d, v = self.plan.kind, self.dsds, self.plan.v_tile
        if kind == "add":
            csl.FaddsOp(operands=[[d["y"], d["a"], d["b"]]])
        elif kind == "mul":
            csl.FmulsOp(operands=[[d["y"], d["a"], d["b"]]])
        elif kind == "neg":
            csl.FnegsOp(operands=[[d["y"], d["a"]]])
        elif kind in ("silu", "swiglu"):
            loop = scf.ForOp(_int(0), _int(v), _int(1), [], Block(arg_types=[i16]))
            with ImplicitBuilder(loop.body.block) as (i,):
                ii = _index(i)
                x = memref.LoadOp.get(self.bufs["a"], [ii]).res
                memref.StoreOp.get(self.silu(x), self.bufs["y"], [ii])
                scf.YieldOp()
            if kind == "swiglu":
                csl.FmulsOp(operands=[[d["y"], d["y"], d["b"]]])
        elif kind == "rms_norm":
            self.rms_norm()
        else:
            self.softmax()

    def _valid(self) -> int:
        """Elements of this program's PEs that belong to the vector: a role's programs
        are either all full tiles or the east-most (last) PE."""
        plan = self.plan
        last = self.role == "single" or self.role.startswith("last")
        return plan.valid(plan.width - 1) if last else plan.v_tile

    def _reduce_and_share(self, combine: type, finish) -> SSAValue:
        """The row's reduction of `part` (west to east over the chain, `combine` the DSD
        op), `finish(total)` on the east-most PE, its result broadcast back west; the
        shared value on every PE."""
        d, zero = self.dsds, _index(_int(0))
        cin, cout = role_colors(self.role)
        if cout is not None:
            out = self._fab("fabout_dsd", cout, OUTPUT_QUEUE)
            if cin is None:
                csl.FmovsOp(operands=[[out, d["part"]]])
            else:
                combine(operands=[[out, self._fab("fabin_dsd", cin, INPUT_QUEUE), d["part"]]])
            csl.FmovsOp(operands=[[d["r"], self._fab("fabin_dsd", BCAST_COLOR, BCAST_QUEUE)]])
        else:
            if cin is None:
                csl.FmovsOp(operands=[[d["tot"], d["part"]]])
            else:
                combine(operands=[[d["tot"], self._fab("fabin_dsd", cin, INPUT_QUEUE),
                                   d["part"]]])
            tot = memref.LoadOp.get(self.bufs["tot"], [zero]).res
            memref.StoreOp.get(finish(tot), self.bufs["r"], [zero])
            if self.plan.width > 1:
                csl.FmovsOp(operands=[[self._fab("fabout_dsd", BCAST_COLOR, OUTPUT_QUEUE),
                                       d["r"]]])
        return memref.LoadOp.get(self.bufs["r"], [zero]).res

    def _local(self, init: SSAValue, step) -> None:
        """part = fold of `step(acc, i)` over this PE's valid elements (ascending)."""
        loop = scf.ForOp(_int(0), _int(self._valid()), _int(1), [init],
                         Block(arg_types=[i16, f32]))
        with ImplicitBuilder(loop.body.block) as (i, acc):
            scf.YieldOp(step(acc, _index(i)))
        memref.StoreOp.get(loop.res[0], self.bufs["part"], [_index(_int(0))])

    def rms_norm(self) -> None:
        d, plan = self.dsds, self.plan

        def square(acc, i):
            x = memref.LoadOp.get(self.bufs["a"], [i]).res
            return arith.AddfOp(acc, arith.MulfOp(x, x).result).result

        def finish(tot):
            ms = arith.MulfOp(tot, _f(mode.F32(1.0 / plan.n))).result
            return self.rsqrt(arith.AddfOp(ms, _f(mode.F32(plan.eps))).result)

        self._local(_f(0.0), square)
        r = self._reduce_and_share(csl.FaddsOp, finish)
        csl.FmulsOp(operands=[[d["y"], d["a"], r]])
        csl.FmulsOp(operands=[[d["y"], d["y"], d["g"]]])

    def softmax(self) -> None:
        """The row's max (chain of @fmaxs, broadcast), y = exp(a - max) and its sum (chain
        of @fadds), inv = 1 / sum (broadcast), y *= inv."""
        d, a, y = self.dsds, self.bufs["a"], self.bufs["y"]
        first = memref.LoadOp.get(a, [_index(_int(0))]).res

        def bigger(acc, i):
            x = memref.LoadOp.get(a, [i]).res
            return _select(arith.CmpfOp(x, acc, "ogt").result, x, acc)

        self._local(first, bigger)
        top = self._reduce_and_share(csl.FmaxsOp, lambda tot: tot)

        def exp_sum(acc, i):
            e = self.exp_neg(arith.SubfOp(memref.LoadOp.get(a, [i]).res, top).result)
            memref.StoreOp.get(e, y, [i])
            return arith.AddfOp(acc, e).result

        self._local(_f(0.0), exp_sum)
        inv = self._reduce_and_share(csl.FaddsOp,
                                     lambda tot: arith.DivfOp(_f(1.0), tot).result)
        csl.FmulsOp(operands=[[d["y"], d["y"], inv]])

