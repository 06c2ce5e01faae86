"""`--shape-only --target cerebras`: where a model's GEMVs would sit on one wafer.

From shapes and packed types alone (no weight data): every `quant3p5.matmul` of the entry
function becomes a resident GEMV rectangle. One tile bound serves every GEMV: the smallest
(the fastest) whose programs fit a PE (the real programs' memory, as the checker counts
it) and that puts every GEMV on the wafer at once, else the largest that fits a PE. The
plan adds up PEs, weight bytes and cycles per token. Cycles of one GEMV: the simulator's
cycles for one PE of that tile (its compute does not depend on data) plus the chain,
n_tile + (width - 1) x (hop + 1) cycles (a model of the chain, not simulated here); the
GEMVs of a decode step run one after another. Everything else in the graph (norms,
attention, RoPE, embeddings, ...) is listed but not costed: the target does not map it yet
(docs/cerebras.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.entry import entry_function
from q35c.compiler.quant import quantize
from q35c.dialects import quant3p5
from q35c.targets.cerebras.emit import csl_module
from q35c.targets.cerebras.machine import Machine
from q35c.targets.cerebras.plan import GemvPlan
from q35c.targets.cerebras.project import Project, simulate
from q35c.targets.cerebras.simulate import SimulationError, check, memory_use, programs

K_TILES = (1024, 512, 256, 128, 64)
N_TILES = (64, 32, 16, 8)
WIDE_N_TILES = (128, 256, 512, 1024)
"""Wider tiles a GEMV gets when the common tile makes its rectangle taller than the
fabric (an LM head's N columns): fewer PE rows, the same per-PE memory check."""
WAFERLLM = ("WaferLLM (OSDI'25, arXiv 2502.04563 v2 abstract): Llama-3-8B decode at about "
            "2,700 tokens/s per request in 16-bit on a WSE-2")


@dataclass(frozen=True)
class Gemv:
    name: str
    k: int
    n: int
    group: int


def gemvs(module: ModuleOp, entry: str | None) -> tuple[list[Gemv], dict[str, int]]:
    """The entry function's quant3p5.matmul ops, and a count of every other op kind."""
    fn = entry_function(module, entry)
    out, other = [], {}
    for op in fn.body.block.ops:
        t = op.operands[1].type if isinstance(op, quant3p5.MatmulOp) else None
        if isinstance(t, quant3p5.PackedWeightType) and t.layout.data == "q3p5":
            k, n = t.get_shape()
            label = op.attributes.get("q35c.onnx_node")
            out.append(Gemv(label.data if label else f"matmul {len(out)}", k, n, t.group))
        elif op.name not in ("func.return", "quant3p5.weight"):
            other[op.name] = other.get(op.name, 0) + 1
    return out, other


@cache
def _fits(k_tile: int, n_tile: int, machine: Machine, weights: str = "packed") -> int | None:
    """The largest per-PE memory of a 3-wide chain of this tile (None: does not fit)."""
    plan = GemvPlan(3 * k_tile, n_tile, 32, k_tile, n_tile, weights)
    module = csl_module(plan)
    try:
        check(module, machine)
    except SimulationError:
        return None
    return max(sum(memory_use(p, machine).values()) for p in programs(module).values())


@cache
def _pe_cycles(k_tile: int, n_tile: int, machine: Machine, weights: str = "packed") -> int:
    """Simulated cycles of one PE computing one tile (one-PE plan, zero weights; with
    decoded weights `compute` alone, after the load-time decode)."""
    plan = GemvPlan(k_tile, n_tile, 32, k_tile, n_tile, weights)
    zeros = quantize(np.zeros((k_tile, n_tile), np.float32), group_size=32)
    _, sim = simulate(Project(plan, csl_module(plan), zeros, "x", "y"), machine,
                      np.zeros((1, k_tile), np.float32), seed=0)
    return sim.cycles


def place(g: Gemv, machine: Machine, k_tile: int, n_tile: int, weights: str = "packed"
          ) -> dict:
    """GEMV `g` with tiles of at most k_tile x n_tile, and what it costs."""
    if g.group != 32:
        raise Q35cError(f"cerebras target: {g.name}: Q3P5 group size {g.group} (only 32)")
    kt, nt = min(k_tile, -(-g.k // 64) * 64), min(n_tile, g.n)
    plan = GemvPlan.choose(g.k, g.n, g.group, kt, nt, weights)
    chain = plan.n_tile + (plan.width - 1) * (machine.hop_cycles + 1)
    return {"name": g.name, "k": g.k, "n": g.n, "k_tile": kt, "n_tile": nt,
            "rectangle": [plan.width, plan.height], "pes": plan.width * plan.height,
            "pe_memory_bytes": _fits(kt, nt, machine, weights),
            "weight_bytes": g.k * g.n * 7 // 16 if weights == "packed" else g.k * g.n * 2,
            "cycles": _pe_cycles(kt, nt, machine, weights) + (chain if plan.width > 1 else 0)}


def _rectangle(g: Gemv, k_tile: int, n_tile: int) -> tuple[int, int]:
    """(width, height) of GEMV g's rectangle with tiles of at most k_tile x n_tile."""
    return -(-g.k // min(k_tile, -(-g.k // 64) * 64)), -(-g.n // min(n_tile, g.n))


def tile_of(g: Gemv, machine: Machine, k_tile: int, n_tile: int, weights: str = "packed"
            ) -> tuple[int, int]:
    """GEMV g's tile bound: the common one, or where that makes g's rectangle larger than
    the fabric, the smallest tile (of N_TILES + WIDE_N_TILES columns) that fits a PE's
    memory and puts g's rectangle within the fabric. None: an error naming g, its
    rectangle and the fabric."""
    w, h = _rectangle(g, k_tile, n_tile)
    if w <= machine.width and h <= machine.height:
        return k_tile, n_tile
    tiles = sorted(((kt, nt) for kt in K_TILES for nt in N_TILES + WIDE_N_TILES),
                   key=lambda t: (t[0] * t[1], t[0]))
    for kt, nt in tiles:
        gw, gh = _rectangle(g, kt, nt)
        if gw <= machine.width and gh <= machine.height and \
                _fits(min(kt, -(-g.k // 64) * 64), min(nt, g.n), machine, weights):
            return kt, nt
    raise Q35cError(
        f"cerebras target: --shape-only: GEMV {g.name} ({g.k}x{g.n}) needs a {w}x{h} PE "
        f"rectangle with {k_tile}x{n_tile} tiles, and no tile of at most "
        f"{max(K_TILES)}x{max(WIDE_N_TILES)} that fits a PE's memory puts it within "
        f"{machine.name}'s fabric of {machine.width}x{machine.height} PEs")


def choose_tile(found: list[Gemv], machine: Machine, weights: str = "packed"
                ) -> tuple[int, int]:
    """One tile bound for every GEMV: the smallest (fastest) that fits a PE's memory and
    puts all GEMVs on the wafer at once (each GEMV's rectangle within the fabric, with
    `tile_of`'s wider tile where needed, and `placed_rows` places them all within the
    fabric's rows), else the largest that fits a PE."""
    tiles = sorted(((kt, nt) for kt in K_TILES for nt in N_TILES),
                   key=lambda t: (t[0] * t[1], t[0]))
    wafer = machine.width * machine.height
    fitting = []
    for kt, nt in tiles:
        if _fits(kt, nt, machine, weights) is None:
            continue
        fitting.append((kt, nt))
        rects = [_rectangle(g, *tile_of(g, machine, kt, nt, weights)) for g in found]
        if sum(w * h for w, h in rects) <= wafer and \
                placed_rows(rects, machine.width) <= machine.height:
            return kt, nt
    if not fitting:
        raise Q35cError("cerebras target: no tile fits a PE's memory")
    return fitting[-1]


def placed_rows(rects: list[tuple[int, int]], width: int) -> int:
    """Fabric rows a placement of the rectangles (w, h) takes (every w <= width): tallest
    first, each at the column where it rests lowest on those already placed (a skyline,
    bottom-left); they never overlap. A placement exists if that is at most the fabric's
    height."""
    sky = np.zeros(width, np.int64)
    for w, h in sorted(rects, key=lambda r: (-r[1], -r[0])):
        tops = np.lib.stride_tricks.sliding_window_view(sky, w).max(axis=1)
        x = int(np.argmin(tops))
        sky[x:x + w] = tops[x] + h
    return int(sky.max())


def _counts(ops: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in ops.items()) or "nothing"


def plan_text(plan: dict) -> str:
    t = plan["totals"]
    lines = [f"cerebras --shape-only plan on {plan['machine']} "
             f"({plan['fabric'][0]}x{plan['fabric'][1]} = {t['wafer_pes']} PEs)"]
    for row in plan["gemv_shapes"]:
        lines.append(f"  {row['count']:4d} x GEMV {row['k']}x{row['n']}: tile "
                     f"{row['k_tile']}x{row['n_tile']}, {row['rectangle'][0]}x"
                     f"{row['rectangle'][1]} PEs, {row['pe_memory_bytes']} B/PE, "
                     f"{row['cycles']} cycles")
    fit = (f"fits on one wafer, placed in {t['fabric_rows']} of {plan['fabric'][1]} rows"
           if t["fits"] else "does NOT fit on one wafer")
    kind = {"packed": "packed", "decoded": "decoded f16", "f16": "f16"}[plan["weights"]]
    lines += [f"GEMVs: {t['gemvs']}, {t['pes']} PEs ({fit}), {kind} weights "
              f"{t['weight_bytes'] / 1e9:.2f} GB",
              f"cycles per token (GEMVs only, one after another): {t['cycles_per_token']} "
              f"= {t['tokens_per_second']:.1f} tokens/s at {plan['clock_hz'] / 1e6:g} MHz",
              f"not mapped or costed: {_counts(plan['not_costed'])}",
              f"for comparison: {WAFERLLM}"]
    return "\n".join(lines) + "\n"


def shape_only_plan(module: ModuleOp, entry: str | None, machine: Machine,
                    weights: str = "packed") -> dict:
    """`weights`: the GEMVs' weight mode (plan.WEIGHT_MODES); packed weights are 3.5 bits
    per weight, decoded and f16 ones 16 bits in PE memory."""
    found, other = gemvs(module, entry)
    if not found:
        raise Q35cError("cerebras target: --shape-only found no quant3p5.matmul on Q3P5 "
                        "weights to place")
    k_tile, n_tile = choose_tile(found, machine, weights)
    shapes: dict[tuple[int, int], dict] = {}
    for g in found:
        key = (g.k, g.n)
        if key not in shapes:
            kt, nt = tile_of(g, machine, k_tile, n_tile, weights)
            shapes[key] = {**place(g, machine, kt, nt, weights), "count": 0}
        shapes[key]["count"] += 1
    rows = [shapes[(g.k, g.n)] for g in found]
    cycles = sum(r["cycles"] for r in rows)
    pes = sum(r["pes"] for r in rows)
    fabric_rows = placed_rows([tuple(r["rectangle"]) for r in rows], machine.width)
    totals = {"gemvs": len(found), "pes": pes,
              "wafer_pes": machine.width * machine.height, "fabric_rows": fabric_rows,
              "fits": pes <= machine.width * machine.height and fabric_rows <= machine.height,
              "weight_bytes": sum(r["weight_bytes"] for r in rows),
              "cycles_per_token": cycles,
              "tokens_per_second": round(machine.clock_hz / cycles, 1)}
    for row in shapes.values():
        row.pop("name")
    return {"machine": machine.name, "weights": weights,
            "fabric": [machine.width, machine.height],
            "clock_hz": machine.clock_hz, "gemv_shapes": list(shapes.values()),
            "totals": totals, "not_costed": dict(sorted(other.items())),
            "comparison": WAFERLLM}


def write_plan(plan: dict, out_dir: Path) -> None:
    (out_dir / "cerebras_plan.json").write_text(json.dumps(plan, indent=1) + "\n")
    (out_dir / "report.txt").write_text(plan_text(plan))
