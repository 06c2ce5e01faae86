"""report.json / report.txt: cycles, the machine-model lower bound, ratio, utilization.

Lower bound (docs/groq.md, "Lower bound"): for the whole program
    max(MXM compute cycles, MEM read bandwidth cycles, weight-install cycles, critical path)
- MXM compute: masked passes over all planes, passes / planes;
- weight install: 16-row blocks / (planes), at mxm_install_rows_per_cycle rows per cycle;
- MEM read bandwidth: bytes that must be read at least once (packed weights) / (slices *
  vector bytes) per cycle;
- critical path: along the op dependency chain, each macro's cost-formula duration and, per
  matmul layer, its layer bound below.
Per matmul layer (time from its activations being complete to its result complete):
    max(passes / planes, installs not prefetchable / planes, MEM bytes not prefetchable
        / bandwidth) + latency
where installs up to planes * weight_buffers * 20 blocks can be done before the input is
ready (weights do not depend on activations), and latency = mem_read_latency + 1 hop +
mxm_latency + 1 hop + mem_write_latency + the minimum rescale macro of one tile.
"""

from __future__ import annotations

import math

from q35c.compiler.codegen_names import plain_text
from q35c.targets.groq import cost as costs
from q35c.targets.groq.schedule import Program


def layer_bound(prog: Program, layer: dict) -> dict:
    """The per-layer bound of a scheduled matmul layer, from targets/groq/cost.py (the same
    formulas the multi-chip planner adds up), with the achieved cycles."""
    m = prog.machine
    k, n = layer["shape"]
    work = costs.matmul_work(m, k, n, layer["group"], layer["rows"])
    c = costs.matmul_cost(m, work, prefetch=True)
    achieved = layer["end"] - layer["input_ready"]
    return {**layer, "mxm_cycles": c["mxm"], "install_cycles": c["install_all"],
            "mem_cycles": c["mem_all"], "vxm_cycles": c["vxm"],
            "latency_cycles": c["latency"], "bound_cycles": c["bound"],
            "bound_with_vxm_cycles": c["cycles"], "achieved_cycles": achieved,
            "ratio": round(achieved / c["bound"], 3)}


def build_report(prog: Program, doc: dict) -> dict:
    m = prog.machine
    layers = [layer_bound(prog, layer) for layer in prog.layers]
    n = prog.chips
    mxm = math.ceil(sum(x["mxm_passes"] for x in layers) / (m.mxm_planes * n))
    install = math.ceil(sum(x["installs"] for x in layers) / (m.mxm_planes * n))
    mem = math.ceil(prog.weight_packed_bytes / (costs.mem_bytes_per_cycle(m) * n))
    ready: dict[str, int] = {}
    for dep in prog.deps:  # nodes are in a topological order
        start = max([ready.get(b, 0) for b in dep["reads"]] + [0])
        cost = dep["cycles"] if "cycles" in dep else layers[dep["layer"]]["bound_cycles"]
        for b in dep["writes"]:
            ready[b] = start + cost
    crit = max(ready.values(), default=0)
    bound = max(mxm, install, mem, crit, 1)
    # not part of the bound: the VXM's own throughput (unpacks + macro ALU work over
    # its queues), which is what limits GEMV with per-group float32 rescale
    queues = costs.vxm_queues(m)
    vxm = math.ceil(sum(1 if i["op"] == "unpack" else i.get("alu_cycles", 0)
                        for i in doc["instructions"] if i["unit"] == "VXM") / (queues * n))
    busy: dict[str, int] = {}
    for ins in doc["instructions"]:
        key = ins["queue"] if ins["unit"].startswith("MXM") else ins["unit"]
        busy[key] = busy.get(key, 0) + ins["cycles"]
    cycles = max(1, prog.cycles)
    groups: dict[str, int] = {}
    for k, v in busy.items():
        g = "MEM" if k.startswith("MEM") else k
        groups[g] = groups.get(g, 0) + v
    util = {k: round(v / cycles / (m.mem_slices if k == "MEM" else
                                   int(m.param("vxm_queues")) if k == "VXM" else 1), 4)
            for k, v in sorted(groups.items())}
    sram = sum(b["allocated_bytes"] for b in doc["buffers"].values())
    per_chip = [sum(b["allocated_bytes"] for b in doc["buffers"].values() if b["chip"] == c)
                for c in range(n)]
    transfers = [i for i in doc["instructions"] if i["op"] == "send"]
    mm = [x for x in layers]
    return {
        "schema": "q35c-groq-report/1",
        "machine": m.name,
        "chips": n,
        "cycles": prog.cycles,
        "microseconds": round(prog.cycles / m.clock_hz * 1e6, 3),
        "clock_hz": m.clock_hz,
        "lower_bound_cycles": bound,
        "lower_bound_terms": {"mxm_compute": mxm, "weight_install": install,
                              "mem_read_bandwidth": mem, "critical_path": crit},
        "ratio": round(prog.cycles / bound, 3),
        "vxm_bound_cycles": vxm,
        "lower_bound_with_vxm_cycles": max(bound, vxm),
        "ratio_with_vxm": round(prog.cycles / max(bound, vxm), 3),
        "instructions": len(doc["instructions"]),
        "sram_bytes": sram,
        "sram_bytes_capacity": m.sram_bytes,
        "sram_bytes_per_chip": per_chip,
        "c2c_transfers": len(transfers),
        "c2c_bytes": sum(doc["buffers"][i["reads"][0]]["nvec"] * m.lanes for i in transfers),
        "weight_packed_bytes": prog.weight_packed_bytes,
        "weight_allocated_bytes": sum(b["allocated_bytes"] for b in doc["buffers"].values()
                                      if b["kind"] == "weight"),
        "utilization": util,
        "matmul_layers": mm,
        "matmul_layers_total": {
            "achieved_cycles": sum(x["achieved_cycles"] for x in mm),
            "bound_cycles": sum(x["bound_cycles"] for x in mm),
            "ratio": round(sum(x["achieved_cycles"] for x in mm)
                           / max(1, sum(x["bound_cycles"] for x in mm)), 3)},
    }


def report_text(rep: dict) -> str:
    t = rep["lower_bound_terms"]
    lines = [
        f"groq target, machine {plain_text(rep['machine'])}, {rep['chips']} chip(s)",
        f"cycles            {rep['cycles']}  ({rep['microseconds']} us at "
        f"{rep['clock_hz'] / 1e6:g} MHz)",
        f"lower bound       {rep['lower_bound_cycles']}  (MXM {t['mxm_compute']}, install "
        f"{t['weight_install']}, MEM read {t['mem_read_bandwidth']}, critical path "
        f"{t['critical_path']})",
        f"ratio             {rep['ratio']}",
        f"VXM throughput    {rep['vxm_bound_cycles']} cycles (unpack + macro ALU work over the "
        f"VXM queues; not in the bound above); ratio to max(bound, VXM) "
        f"{rep['ratio_with_vxm']}",
        f"instructions      {rep['instructions']}",
        f"SRAM              {rep['sram_bytes']} bytes on {rep['chips']} chip(s) of "
        f"{rep['sram_bytes_capacity']} (per chip: "
        f"{', '.join(str(x) for x in rep['sram_bytes_per_chip'])}; {rep['c2c_transfers']} C2C "
        f"transfers, {rep['c2c_bytes']} bytes) "
        f"(weights: {rep['weight_packed_bytes']} packed Q3P5 bytes in "
        f"{rep['weight_allocated_bytes']} allocated)",
        "utilization       " + ", ".join(f"{k} {100 * v:.1f}%"
                                         for k, v in rep["utilization"].items()),
        "",
        "matmul layers (cycles from input ready to result ready):",
        f"  {'op':>4} {'weight':<40} {'K x N':>12} {'M':>4} {'achieved':>9} {'bound':>7} "
        f"{'ratio':>6}  (MXM/install/MEM/latency)",
    ]
    for x in rep["matmul_layers"]:
        kn = f"{x['shape'][0]}x{x['shape'][1]}"
        weight = plain_text(x["weight"])[:40]
        lines.append(f"  {x['op_index']:>4} {weight:<40} {kn:>12} {x['rows']:>4} "
                     f"{x['achieved_cycles']:>9} {x['bound_cycles']:>7} {x['ratio']:>6}  "
                     f"({x['mxm_cycles']}/{x['install_cycles']}/{x['mem_cycles']}/"
                     f"{x['latency_cycles']})")
    tot = rep["matmul_layers_total"]
    lines.append(f"  total{'':>62} {tot['achieved_cycles']:>9} {tot['bound_cycles']:>7} "
                 f"{tot['ratio']:>6}")
    if rep.get("raised_loops"):
        lines += ["", "Fortran loops raised to tensor ops (raise-fortran-tensors; loops "
                  "vectorized or unrolled with their trip counts, ops emitted):"]
        lines += [f"  {plain_text(note)}" for note in rep["raised_loops"]]
    return "\n".join(lines) + "\n"
