"""Cycle estimate and lower bound of a GEMV plan on a machine model.

    python -m q35c.targets.cerebras.estimate K N [--machine wse2] [--k-tile T] [--n-tile T]
        [--weights packed|decoded]

The estimate is the simulator's cycle count for one PE row (rows share no link and run
the same program, so every row takes as long; the weights are zero: the programs' control
flow and so their cycles do not depend on data). The lower bound holds for any program of
this tiling whose PEs finish their partial sums before the chain adds them: each PE must
read its packed tile from memory (bytes / read bandwidth) and do k_tile x n_tile
multiply-adds (f16 SIMD width), whichever is slower; then the last PE must receive n_tile
wavelets, which cross width - 1 links. With `--weights decoded` the estimate times
`compute` after the load-time `decode` (reported apart as load cycles); the bound stays
the packed tiling's (a decoded tile reads more bytes, so its own bound is no lower).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from q35c.compiler.diagnostics import Q35cError, first_line
from q35c.compiler.quant import quantize
from q35c.targets.cerebras.attention import AttentionPlan
from q35c.targets.cerebras.emit import csl_module
from q35c.targets.cerebras.gather import GatherPlan
from q35c.targets.cerebras.machine import Machine, load_machine
from q35c.targets.cerebras.plan import WEIGHT_MODES, GemvPlan
from q35c.targets.cerebras.project import Project, simulate
from q35c.targets.cerebras.vector import VectorPlan


def tile_bytes(plan: GemvPlan) -> int:
    """Bytes of one PE's packed tile: codes, group metadata, per-column words."""
    return plan.k_tile * plan.n_tile * 7 // 16 + plan.groups * plan.n_tile // 2 \
        + 12 * plan.n_tile


def lower_bound(plan: GemvPlan, m: Machine) -> dict[str, int]:
    memory = -(-tile_bytes(plan) // m.memory_read_bytes_per_cycle)
    compute = -(-plan.k_tile * plan.n_tile // m.simd["f16"])
    chain = plan.n_tile + (plan.width - 1) * m.hop_cycles
    return {"memory": memory, "compute": compute, "chain": chain,
            "total": max(memory, compute) + chain}


LOOKUP_SCALAR_OPS = 2
"""Scalar operations per pair code that any program decoding packed Q3P5 in PE memory
needs: the codebook is 128 arbitrary integer points, so a code's levels come from a
table read at an address computed from the code, and no DSD operation reads at
data-dependent addresses (the DSD set of ../shared/docs/hardware.md 2.2: affine
`tensor_access` only, no gather); that is one scalar load, and its value reaches the
multiply-add through at least one more scalar operation (a store into a DSD's array, or
scalar arithmetic)."""


def lookup_floor(plan: GemvPlan, m: Machine) -> dict[str, int]:
    """A lower bound for programs that keep the tile packed and decode it per GEMV
    (`weights=packed`): the tile's k_tile / 2 x n_tile pair codes cost LOOKUP_SCALAR_OPS
    scalar operations each, even if every DSD operation ran beside them (the scalar
    floor and the DSD work overlap perfectly), plus the chain."""
    bound = lower_bound(plan, m)
    scalar = plan.k_tile // 2 * plan.n_tile * LOOKUP_SCALAR_OPS * m.scalar_op
    total = max(bound["memory"], bound["compute"], scalar) + bound["chain"]
    return {"scalar": scalar, "total": total,
            "over_bound": round(total / bound["total"], 2)}


def estimate(plan: GemvPlan, m: Machine) -> dict:
    """Simulated cycles of one PE row, the lower bound, their ratio, and the time."""
    row = GemvPlan(plan.k, min(plan.n, plan.n_tile), plan.group, plan.k_tile, plan.n_tile,
                   plan.weights)
    zeros = quantize(np.zeros((row.k, row.n), np.float32), group_size=row.group)
    project = Project(row, csl_module(row), zeros, "x", "y")
    _, sim = simulate(project, m, np.zeros((1, row.k), np.float32), seed=0)
    cycles = sim.cycles
    last = sim.pes[(row.width - 1, 0)]
    bound = lower_bound(plan, m)
    return {"k": plan.k, "n": plan.n, "rectangle": f"{plan.width}x{plan.height}",
            "pes": plan.width * plan.height, "cycles": cycles, "last_pe": last.spent,
            "lower_bound": bound,
            "ratio": round(cycles / bound["total"], 2),
            "microseconds": round(cycles / m.clock_hz * 1e6, 2),
            **({"load_cycles": sim.load_cycles} if plan.decoded else {}),
            **({"lookup_floor": lookup_floor(plan, m)} if plan.weights == "packed" else {})}


VECTOR_OPS_PER_ELEMENT = {"add": 1, "mul": 1, "neg": 1, "silu": 4, "swiglu": 5, "rms_norm": 3,
                          "softmax": 5}
"""f32 operations per element any program needs (exp counted as one operation; silu:
exp, 1 + e, the division, x * q; swiglu: and * up; rms_norm: x * x + s, x * r, * g;
softmax: the max, x - max, exp, the sum, * inv)."""


def vector_lower_bound(plan: VectorPlan, m: Machine) -> int:
    """The slower of reading a PE's inputs (4 bytes per element each) and its f32
    operations (f32 SIMD width); RMSNorm adds its chain and broadcast hops."""
    memory = -(-plan.v_tile * 4 * len(plan.inputs()) // m.memory_read_bytes_per_cycle)
    compute = -(-plan.v_tile * VECTOR_OPS_PER_ELEMENT[plan.kind] // m.simd["f32"])
    rounds = {"rms_norm": 1, "softmax": 2}.get(plan.kind, 0)  # reduce + broadcast each
    hops = 2 * rounds * (plan.width - 1) * m.hop_cycles
    return max(memory, compute) + hops


def vector_estimate(plan: VectorPlan, m: Machine) -> int:
    """Simulated cycles of one vector stage (zero inputs: the programs' control flow does
    not depend on data)."""
    from q35c.targets.cerebras.graph import Stage, project_of, simulate_graph

    names = ["a", "b"][:len(plan.inputs())]
    gamma = np.ones(plan.n, np.float32) if plan.kind == "rms_norm" else None  # control
    # flow is data-independent, so zero inputs time every program
    p = project_of([Stage(plan.kind, plan, names, "t0", gamma=gamma)],
                   {k: (1, plan.n) for k in names}, ["t0"], ["y"])
    _, sim, _ = simulate_graph(p, m, {k: np.zeros((1, plan.n), np.float32) for k in names},
                               seed=0)
    return sim.cycles


def gather_lower_bound(plan: GatherPlan, m: Machine) -> int:
    """Reading the row's slice of a PE (4 bytes per element)."""
    return -(-plan.v_tile * 4 // m.memory_read_bytes_per_cycle)


def attention_lower_bound(plan: AttentionPlan, m: Machine) -> int:
    """One row of PEs (the KV heads' rows run side by side): the slower of reading a PE's
    keys and values once and the f32 operations of its `group` query heads (per token:
    d multiply-adds for the score, the scale, softmax's 5 as for the softmax stage, dv
    multiply-adds of the context; 2 operations per multiply-add), plus per query head
    the two reduce-and-broadcast rounds' hops and the context chain (dv wavelets over
    width - 1 hops)."""
    t = plan.v_tile
    memory = -(-t * (plan.d + plan.dv) * 4 // m.memory_read_bytes_per_cycle)
    ops = plan.group * t * (2 * plan.d + 1 + VECTOR_OPS_PER_ELEMENT["softmax"] + 2 * plan.dv)
    compute = -(-ops // m.simd["f32"])
    hops = (plan.width - 1) * m.hop_cycles
    chains = plan.group * (4 * hops + (hops + plan.dv if plan.width > 1 else 0))
    return max(memory, compute) + chains


def stage_estimate(stage, m: Machine) -> int:
    """Simulated cycles of one gather or attention stage, zero inputs (their control flow
    does not depend on data); an attention stage is timed on one row of PEs (one KV
    head: the rows share no link and run the same program)."""
    from q35c.targets.cerebras.graph import Stage, project_of, simulate_graph

    plan = stage
    if isinstance(plan, GatherPlan):
        st = Stage("gather", plan, ["ids"], "t0",
                   gamma=np.zeros((plan.rows, plan.n), np.float32))
        p = project_of([st], {"ids": (1, 1)}, ["t0"], ["y"])
        ins = {"ids": np.zeros((1, 1), np.int64)}
    else:
        plan = AttentionPlan.make(plan.n, 1, plan.group, plan.d, plan.dv, plan.scale, False,
                                  plan.v_tile)
        h = plan.group
        st = Stage("attention", plan, ["q", "k", "v"], "t0", shapes=((1, h, 1, plan.d), ()))
        shapes = {"q": (1, h, 1, plan.d), "k": (1, 1, plan.n, plan.d),
                  "v": (1, 1, plan.n, plan.dv)}
        p = project_of([st], shapes, ["t0"], ["y"], shapes={"t0": (1, h, 1, plan.dv)})
        ins = {k: np.zeros(v, np.float32) for k, v in shapes.items()}
    _, sim, _ = simulate_graph(p, m, ins, seed=0)
    return sim.cycles


def decode_estimate(d: int, vocab: int, tokens: int, heads: int, kv_heads: int, m: Machine,
                    v_tile: int = 0) -> list[dict]:
    """The decode step's new stages: the embedding gather of a [vocab, d] table, RoPE's
    neg over the query heads (d elements), attention of one token over `tokens`."""
    head = d // heads
    out = []
    g = GatherPlan.choose(vocab, d)
    out.append({"kind": "gather", "shape": [vocab, d], "pes": g.width * g.height,
                "cycles": stage_estimate(g, m), "lower_bound": gather_lower_bound(g, m)})
    n = VectorPlan.choose("neg", d // 2, v_tile)
    out.append({"kind": "neg", "shape": [d // 2], "pes": n.width,
                "cycles": vector_estimate(n, m), "lower_bound": vector_lower_bound(n, m)})
    a = AttentionPlan.make(tokens, kv_heads, heads // kv_heads, head, head,
                           1 / head ** 0.5, False, v_tile)
    out.append({"kind": "attention", "shape": [tokens, kv_heads, heads // kv_heads, head],
                "pes": a.width * a.height, "cycles": stage_estimate(a, m),
                "lower_bound": attention_lower_bound(a, m)})
    return out


def graph_estimate(d: int, f: int, m: Machine, k_tile: int = 0, n_tile: int = 0,
                   v_tile: int = 0, weights: str = "packed") -> dict:
    """A LLaMA MLP block (RMSNorm, gate and up GEMVs [d, f], SwiGLU, down GEMV [f, d],
    residual add), its stages run one after another: cycles and lower bound per stage
    and in all (the host's copies between stages are not counted)."""
    gemv: dict[tuple[int, int], dict] = {}
    out = []
    for kind, k, n in (("rms_norm", 0, d), ("gemv", d, f), ("gemv", d, f), ("swiglu", 0, f),
                       ("gemv", f, d), ("add", 0, d)):
        if kind == "gemv":
            if (k, n) not in gemv:
                gemv[(k, n)] = estimate(GemvPlan.choose(k, n, 32, k_tile, n_tile, weights), m)
            r = gemv[(k, n)]
            out.append({"kind": kind, "shape": [k, n], "pes": r["pes"],
                        "cycles": r["cycles"], "lower_bound": r["lower_bound"]["total"]})
        else:
            plan = VectorPlan.choose(kind, n, v_tile)
            out.append({"kind": kind, "shape": [n], "pes": plan.width,
                        "cycles": vector_estimate(plan, m),
                        "lower_bound": vector_lower_bound(plan, m)})
    cycles = sum(s["cycles"] for s in out)
    bound = sum(s["lower_bound"] for s in out)
    return {"d": d, "f": f, "stages": out, "cycles": cycles, "lower_bound": bound,
            "ratio": round(cycles / bound, 2), "pes": sum(s["pes"] for s in out),
            "microseconds": round(cycles / m.clock_hz * 1e6, 2)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("k", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("--machine", default="wse2")
    ap.add_argument("--k-tile", type=int, default=0)
    ap.add_argument("--n-tile", type=int, default=0)
    ap.add_argument("--weights", choices=WEIGHT_MODES, default="packed")
    ap.add_argument("--mlp", action="store_true",
                    help="a LLaMA MLP block with hidden size K and intermediate size N")
    ap.add_argument("--v-tile", type=int, default=0)
    ap.add_argument("--decode", type=int, default=0, metavar="S",
                    help="the decode step's gather ([N, K] table), neg and attention of "
                    "one token over S tokens (K: hidden size, --heads, --kv-heads)")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    a = ap.parse_args(argv)
    if a.decode:
        try:
            m = load_machine(a.machine)
            if a.heads <= 0 or a.kv_heads <= 0 or a.heads % a.kv_heads or a.k % a.heads:
                raise Q35cError("heads must divide K and kv-heads divide heads")
            rows = decode_estimate(a.k, a.n, a.decode, a.heads, a.kv_heads, m, a.v_tile)
        except (Q35cError, ValueError) as e:
            print(f"{ap.prog}: error: {first_line(e)}", file=sys.stderr)
            sys.exit(2)
        for s in rows:
            print(f"  {s['kind']:9} {'x'.join(map(str, s['shape'])):>14} {s['pes']:6} PEs "
                  f"{s['cycles']:9} cycles  bound {s['lower_bound']:7}  ratio "
                  f"{s['cycles'] / s['lower_bound']:.2f}")
        return
    try:
        m = load_machine(a.machine)
        if a.k <= 0 or a.n <= 0 or a.k_tile < 0 or a.n_tile < 0:
            raise Q35cError(f"K, N must be positive and tiles non-negative (got K={a.k} "
                            f"N={a.n} k_tile={a.k_tile} n_tile={a.n_tile})")
        plan = GemvPlan.choose(a.k, a.n, 32, a.k_tile, a.n_tile, a.weights)
        if plan.width > m.width or plan.height > m.height:
            raise Q35cError(f"GEMV {a.k}x{a.n} needs a {plan.width}x{plan.height} PE "
                            f"rectangle; {m.name}'s fabric is {m.width}x{m.height}")
        if tile_bytes(plan) > m.pe_memory_bytes:
            raise Q35cError(f"a {plan.k_tile}x{plan.n_tile} tile takes {tile_bytes(plan)} "
                            f"bytes packed; a PE has {m.pe_memory_bytes}")
        if a.v_tile < 0:
            raise Q35cError(f"v_tile must be non-negative (got {a.v_tile})")
        if a.mlp:
            r = graph_estimate(a.k, a.n, m, a.k_tile, a.n_tile, a.v_tile, a.weights)
        else:
            r = estimate(plan, m)
    except (Q35cError, ValueError) as e:
        print(f"{ap.prog}: error: {first_line(e)}", file=sys.stderr)
        sys.exit(2)
    if a.mlp:
        print(f"MLP block D={a.k} F={a.n} on {m.name}: {r['pes']} PEs, {r['cycles']} cycles "
              f"({r['microseconds']} us at {m.clock_hz / 1e6:g} MHz); lower bound "
              f"{r['lower_bound']}; ratio {r['ratio']}")
        for s in r["stages"]:
            print(f"  {s['kind']:8} {'x'.join(map(str, s['shape'])):>12} {s['pes']:6} PEs "
                  f"{s['cycles']:9} cycles  bound {s['lower_bound']:7}  ratio "
                  f"{s['cycles'] / s['lower_bound']:.2f}")
        return
    lb = r["lower_bound"]
    print(f"GEMV {r['k']}x{r['n']} on {m.name}: {r['rectangle']} PEs, {r['cycles']} cycles "
          f"({r['microseconds']} us at {m.clock_hz / 1e6:g} MHz); lower bound {lb['total']} "
          f"(memory {lb['memory']}, f16 MACs {lb['compute']}, chain {lb['chain']}); "
          f"ratio {r['ratio']}")
    spent = ", ".join(f"{k} {v}" for k, v in sorted(r["last_pe"].items()))
    print(f"east-most PE of a row, cycles by kind: {spent}")
    if "lookup_floor" in r:
        f = r["lookup_floor"]
        print(f"packed look-up floor (any program decoding the packed tile per GEMV): "
              f"{f['total']} cycles ({f['scalar']} scalar for the pair codes' look-ups), "
              f"{f['over_bound']} x the lower bound")
    if "load_cycles" in r:
        print(f"load-time decode (once, not per GEMV): {r['load_cycles']} cycles")


if __name__ == "__main__":
    main()
