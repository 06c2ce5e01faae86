"""Attention of one new token over a KV cache (`q35nn.attention` with one query row per
head) as a stage of PEs, as xDSL `csl` IR (numeric mode: `attention_f32` of
`q35c.semantics.cerebras`).

The keys and values are distributed over PEs: PE (x, y) holds the tokens
[x*t_tile, (x+1)*t_tile) of KV head y (t_tile: `v_tile`, by default min(64, S, the tokens
whose keys and values fit 32 KB)): `k` [d, t_tile] (transposed: row c holds component c
of every token) and `v` [t_tile, dv] (zero past the last token), and the query rows of
the `group` query heads that share KV head y (grouped-query attention: the cache is not
copied per query head) in `q` [group, d], and, with a mask, its part of each row's mask
in `m` [group, t_tile]. Row y of PEs runs query head y*group + j for j = 0 .. group-1,
one after another:

* scores into `a`: per component c, `@fmuls(ts, k[c, :], q[c])`, `@fadds(a, a, ts)`
  (every token's dot product summed in c ascending), then `@fmuls` by the scale and
  `@fadds` of the mask;
* softmax over the row of PEs exactly as the softmax stage (vector.py): the local max, the
  max chain west to east (colors 0/1) and its broadcast back west (color 2), `exp` and the
  local sums, the sum chain, `1 / total` broadcast, `@fmuls` into `y`;
* the PE's partial context `c = sum_i y[i] * v[i]` (`@fmuls`, `@fadds` over dv per token),
  then the context chain west to east over colors 0/1 (dv wavelets per PE): the east-most
  PE writes `((c_0 + c_1) + ...)` into `o` at j*dv.

The host copies q, k, v (and the mask) per launch and reads `o` of the east-most column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.builder import ImplicitBuilder
from xdsl.dialects import arith, csl, memref, scf
from xdsl.dialects.builtin import FloatAttr, i16
from xdsl.ir import Block

from q35c.compiler.diagnostics import Q35cError
from q35c.semantics import cerebras as mode
from q35c.targets.cerebras.emit import _index, _int, chain_step, declare_arrays, f32, moved_dsd
from q35c.targets.cerebras.vector import VectorPlan, VectorProgram

DEFAULT_T_TILE = 64
CACHE_BYTES = 32768
"""The most bytes of keys and values per PE the default tokens per PE asks for."""


@dataclass(frozen=True)
class AttentionPlan(VectorPlan):
    """`n`: the tokens S; `v_tile`: tokens per PE; `height`: KV heads, `group` query
    heads per KV head; `d`, `dv`: the key and value head sizes."""

    kv_heads: int = 1
    group: int = 1
    d: int = 1
    dv: int = 1
    scale: float = 1.0
    masked: bool = False

    @classmethod
    def make(cls, tokens: int, kv_heads: int, group: int, d: int, dv: int, scale: float,
             masked: bool, t_tile: int = 0) -> AttentionPlan:
        # a given v_tile (shared with the vector stages) is capped by the tokens
        t_tile = min(t_tile, tokens) if t_tile else max(
            1, min(DEFAULT_T_TILE, tokens, CACHE_BYTES // (4 * (d + dv))))
        return cls("attention", tokens, t_tile, 0.0,
                   kv_heads, group, d, dv, float(np.float32(scale)), masked)

    @property
    def height(self) -> int:  # type: ignore[override]
        return self.kv_heads

    @property
    def heads(self) -> int:
        return self.kv_heads * self.group

    def inputs(self) -> tuple[str, ...]:
        return ("q", "k", "v", *(("m",) if self.masked else ()))

    def constants(self) -> tuple[str, ...]:
        return ("pow2",)


def buffers(plan: AttentionPlan, role: str) -> dict[str, tuple[object, int]]:
    t, g = plan.v_tile, plan.group
    out = {"q": (f32, g * plan.d), "k": (f32, t * plan.d), "v": (f32, t * plan.dv)}
    if plan.masked:
        out["m"] = (f32, g * t)
    out.update({"a": (f32, t), "ts": (f32, t), "y": (f32, t), "c": (f32, plan.dv),
                "t": (f32, plan.dv),
                "pow2": (f32, len(mode.POW2)),
                "part": (f32, 1), "tot": (f32, 1), "r": (f32, 1)})
    if role == "single" or role.startswith("last"):
        out["o"] = (f32, g * plan.dv)
    return out


def host_inputs(plan: AttentionPlan, q, k, v, mask) -> dict[tuple[int, int], dict]:
    """Per PE (x, y) of the stage: its q, k, v (and m) arrays. q [heads, d] (the query
    heads in order, head h = y*group + j), k [kv_heads, S, d], v [kv_heads, S, dv], mask
    [heads, S] or None."""
    t, g = plan.v_tile, plan.group
    out = {}
    for y in range(plan.kv_heads):
        for x in range(plan.width):
            lo, hi = x * t, min((x + 1) * t, plan.n)
            kk = np.zeros((plan.d, t), np.float32)  # transposed: component c of every token
            kk[:, :hi - lo] = k[y, lo:hi].T
            vv = np.zeros((t, plan.dv), np.float32)
            vv[:hi - lo] = v[y, lo:hi]
            arrs = {"q": np.ascontiguousarray(q[y * g:(y + 1) * g], np.float32).reshape(-1),
                    "k": kk.reshape(-1), "v": vv.reshape(-1)}
            if plan.masked:
                mm = np.zeros((g, t), np.float32)
                mm[:, :hi - lo] = mask[y * g:(y + 1) * g, lo:hi]
                arrs["m"] = mm.reshape(-1)
            out[(x, y)] = arrs
    return out


class AttentionProgram(VectorProgram):
    """Builds the attention stage's PE program of one role (chain position)."""

    plan: AttentionPlan

    def declare(self) -> None:
        p = self.plan
        lengths = {"v": p.dv, "o": p.dv, "k": p.v_tile, "m": p.v_tile,
                   "q": None, "pow2": None}  # q, pow2: read by scalar code only
        self.bufs, self.dsds = declare_arrays(buffers(p, self.role),
                                              lambda name, size: lengths.get(name, size))

    def _at(self, name: str, offset) -> object:
        return moved_dsd(self.dsds[name], offset, f32)

    def _scores(self, j: int) -> None:
        """a = (sum over c of q_j[c] * k[c, :]) * scale (+ m_j) over the PE's tokens: per
        c, `@fmuls(ts, k row c, q[c])` and `@fadds(a, a, ts)` (keys stored transposed, so
        row c of `k` holds component c of every token: each token's dot product is summed
        in c ascending, from 0)."""
        plan, d = self.plan, self.dsds
        csl.FmovsOp(operands=[[d["a"], arith.ConstantOp(FloatAttr(0.0, f32))]])
        loop = scf.ForOp(_int(0), _int(plan.d), _int(1), [], Block(arg_types=[i16]))
        with ImplicitBuilder(loop.body.block) as (c,):
            qc = memref.LoadOp.get(self.bufs["q"],
                                   [_index(arith.AddiOp(c, _int(j * plan.d)))]).res
            krow = self._at("k", arith.MuliOp(c, _int(plan.v_tile)).result)
            csl.FmulsOp(operands=[[d["ts"], krow, qc]])
            csl.FaddsOp(operands=[[d["a"], d["a"], d["ts"]]])
            scf.YieldOp()
        csl.FmulsOp(operands=[[d["a"], d["a"], arith.ConstantOp(FloatAttr(plan.scale, f32))]])
        if plan.masked:
            csl.FaddsOp(operands=[[d["a"], d["a"], self._at("m", _int(j * plan.v_tile))]])

    def _context(self, j: int) -> None:
        """c = sum of y[i] * v[i] over the valid tokens; the chain; o[j*dv ...] on the
        east-most PE."""
        plan, d = self.plan, self.dsds
        csl.FmovsOp(operands=[[d["c"], arith.ConstantOp(FloatAttr(0.0, f32))]])
        loop = scf.ForOp(_int(0), _int(self._valid()), _int(1), [], Block(arg_types=[i16]))
        with ImplicitBuilder(loop.body.block) as (i,):
            p = memref.LoadOp.get(self.bufs["y"], [_index(i)]).res
            vrow = self._at("v", arith.MuliOp(i, _int(plan.dv)).result)
            csl.FmulsOp(operands=[[d["t"], vrow, p]])
            csl.FaddsOp(operands=[[d["c"], d["c"], d["t"]]])
            scf.YieldOp()
        chain_step(self.role, plan.dv, d["c"], lambda: self._at("o", _int(j * plan.dv)))

    def body(self) -> None:
        for j in range(self.plan.group):
            self._scores(j)
            self.softmax()
            self._context(j)


def check_decode(q_shape) -> None:
    """Only a decode step's attention is mapped: one query row per head."""
    if len(q_shape) < 2 or q_shape[-2] != 1:
        raise Q35cError(f"cerebras target: q35nn.attention with query {tuple(q_shape)}: "
                        "only one query row per head (a decode step) is mapped")

