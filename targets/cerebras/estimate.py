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
from q35c.targets.cerebras.emit import csl_module
from q35c.targets.cerebras.machine import Machine, load_machine
from q35c.targets.cerebras.plan import GemvPlan
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


def estimate(plan: GemvPlan, m: Machine) -> dict:
    """Simulated cycles of one PE row, the lower bound, their ratio, and the time."""
    row = GemvPlan(plan.k, min(plan.n, plan.n_tile), plan.group, plan.k_tile, plan.n_tile,
                   plan.decoded)
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
            **({"load_cycles": sim.load_cycles} if plan.decoded else {})}


VECTOR_OPS_PER_ELEMENT = {"add": 1, "mul": 1, "silu": 4, "swiglu": 5, "rms_norm": 3,
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


def graph_estimate(d: int, f: int, m: Machine, k_tile: int = 0, n_tile: int = 0,
                   v_tile: int = 0, decoded: bool = False) -> dict:
    """A LLaMA MLP block (RMSNorm, gate and up GEMVs [d, f], SwiGLU, down GEMV [f, d],
    residual add), its stages run one after another: cycles and lower bound per stage
    and in all (the host's copies between stages are not counted)."""
    gemv: dict[tuple[int, int], dict] = {}
    out = []
    for kind, k, n in (("rms_norm", 0, d), ("gemv", d, f), ("gemv", d, f), ("swiglu", 0, f),
                       ("gemv", f, d), ("add", 0, d)):
        if kind == "gemv":
            if (k, n) not in gemv:
                gemv[(k, n)] = estimate(GemvPlan.choose(k, n, 32, k_tile, n_tile, decoded), m)
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
    ap.add_argument("--weights", choices=("packed", "decoded"), default="packed")
    ap.add_argument("--mlp", action="store_true",
                    help="a LLaMA MLP block with hidden size K and intermediate size N")
    ap.add_argument("--v-tile", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        m = load_machine(a.machine)
        if a.k <= 0 or a.n <= 0 or a.k_tile < 0 or a.n_tile < 0:
            raise Q35cError(f"K, N must be positive and tiles non-negative (got K={a.k} "
                            f"N={a.n} k_tile={a.k_tile} n_tile={a.n_tile})")
        plan = GemvPlan.choose(a.k, a.n, 32, a.k_tile, a.n_tile, a.weights == "decoded")
        if plan.width > m.width or plan.height > m.height:
            raise Q35cError(f"GEMV {a.k}x{a.n} needs a {plan.width}x{plan.height} PE "
                            f"rectangle; {m.name}'s fabric is {m.width}x{m.height}")
        if tile_bytes(plan) > m.pe_memory_bytes:
            raise Q35cError(f"a {plan.k_tile}x{plan.n_tile} tile takes {tile_bytes(plan)} "
                            f"bytes packed; a PE has {m.pe_memory_bytes}")
        if a.v_tile < 0:
            raise Q35cError(f"v_tile must be non-negative (got {a.v_tile})")
        if a.mlp:
            r = graph_estimate(a.k, a.n, m, a.k_tile, a.n_tile, a.v_tile,
                               a.weights == "decoded")
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
    if "load_cycles" in r:
        print(f"load-time decode (once, not per GEMV): {r['load_cycles']} cycles")


if __name__ == "__main__":
    main()
