"""The Cerebras target: batch-1 Q3P5 GEMVs and the vector ops around them (RMSNorm, SiLU,
SwiGLU, softmax, add, mul) as a CSL project for a WSE-like wafer, and a tile simulator
that checks and runs it.

    graph IR --project.py/plan.py--> tiling over a PE rectangle --emit.py--> xDSL csl IR
    --printer.py--> layout.csl, pe_<role>.csl (+ run.py, host.npz, project.json)
    --simulate.py--> static checks, event-driven run: y bit-exact with the interpreter's
    numeric mode for this target (`q35c.semantics.matmul_q3p5_f16`)

A function that is more than one GEMV is a graph of stages (graph.py, vector.py,
gather.py, attention.py: one PE region per op, vectors chained through the host, data
movement as the host's index maps, moves.py; numeric mode `q35c.semantics.cerebras`).

`--target cerebras` (options `cerebras{machine=wse2 k_tile=0 n_tile=0 v_tile=0 seeds=2
weights=packed}`, weights one of packed, decoded, f16; 0 picks the default tile) writes
the project; `q35c run --target
cerebras` simulates it under `seeds` interleavings and requires them to agree.
docs/cerebras.md describes the mapping, the machine model and what is not there yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.weights import WeightStore
from q35c.targets.target import Q35cTarget

MAX_SEEDS = 64


@dataclass(frozen=True)
class CerebrasTarget(Q35cTarget):
    """A CSL project for a Cerebras wafer (batch-1 GEMVs, norms, SwiGLU), tile-simulated."""

    name = "cerebras"
    supports_shape_only = True
    output_markers = ("project.json",)
    machine: str = "wse2"
    k_tile: int = 0
    """Rows of the weight matrix per PE (a multiple of 64; 0: min(512, K))."""
    n_tile: int = 0
    """Columns per PE (0: min(64, N))."""
    seeds: int = 2
    """Interleaving seeds `q35c run` simulates (their outputs must agree)."""
    v_tile: int = 0
    """Vector elements per PE of the vector stages (RMSNorm, SiLU, ...; 0: min(64, D))."""
    weights: str = "packed"
    """`packed`: PEs keep the Q3P5 tile packed and decode it in every `compute`;
    `decoded`: the host still copies the packed tile, a load-time `decode` turns it into
    f16 levels in PE memory (4x the bytes: small tiles only), and `compute` runs DSD
    operations but for x's loads and sums; `f16`: the host decodes the tile to float16
    weights (numeric mode `q35c.semantics.matmul_q3p5_w16`, 16 bits per weight in PE
    memory) and `compute` is one `@fmachs` per weight row."""

    def __post_init__(self) -> None:
        from q35c.compiler.options import check_choice, check_int, check_text
        from q35c.targets.cerebras.plan import WEIGHT_MODES

        check_text("--target cerebras", "machine", self.machine)
        check_int("--target cerebras", "k_tile", self.k_tile, 0, 1 << 14, multiple_of=64)
        check_int("--target cerebras", "n_tile", self.n_tile, 0, 1 << 12)
        check_int("--target cerebras", "seeds", self.seeds, 1, MAX_SEEDS)
        check_int("--target cerebras", "v_tile", self.v_tile, 0, 1 << 12)
        check_choice("--target cerebras", "weights", self.weights, WEIGHT_MODES)

    def pipeline(self, shape_only: bool = False) -> str:
        """Gathers from packed embedding tables read decoded float tables, as before
        embeddings were quantized (passes/dequantize_gathers.py; the shape-only plan lists
        them among the ops it does not cost). Decomposed RMSNorms and SiLU * up become
        `q35nn.rms_norm` and `q35nn.swiglu` (the vector stages a graph maps; an ONNX
        Sigmoid arrives as exp and a division), and canonicalize drops what they leave."""
        if shape_only:
            return "dequantize-gathers"
        return ("dequantize-gathers,fuse-norms,fuse-swiglu,canonicalize,drop-nan-guards,"
                "fuse-attention")

    def accepted_ops(self) -> frozenset[str]:
        from q35c.targets.cerebras.project import ACCEPTED_OPS

        return ACCEPTED_OPS

    @classmethod
    def report(cls, out_dir: Path) -> Path:
        """OUT/report.html: the PE grid (memory per PE) and the traffic per color."""
        from q35c.targets.cerebras.report import write_report

        return write_report(out_dir)

    @classmethod
    def shape_only_from_spec(cls, spec) -> Q35cTarget:
        return CerebrasPlanTarget.from_spec(spec)

    def _project(self, module: ModuleOp, store: WeightStore, entry: str | None):
        """The single-GEMV project, or a graph of stages (graph.py) for anything else."""
        from q35c.compiler.entry import entry_function
        from q35c.targets.cerebras.graph import compile_graph
        from q35c.targets.cerebras.machine import load_machine
        from q35c.targets.cerebras.project import compile_project, is_single_gemv

        machine = load_machine(self.machine)
        if is_single_gemv(entry_function(module, entry)):
            return compile_project(module, store, entry, self.k_tile, self.n_tile,
                                   self.weights), machine
        return compile_graph(module, store, entry, self.k_tile, self.n_tile, self.v_tile,
                             self.weights), machine

    def numeric_mode(self) -> dict:
        """Interpreter overrides for this target's numeric mode (graph.numeric_mode)."""
        from q35c.targets.cerebras.graph import numeric_mode

        return numeric_mode(self.k_tile, self.n_tile, self.v_tile, self.weights)

    def write(self, ctx: Context, module: ModuleOp, store: WeightStore, out_dir: Path,
              stem: str) -> None:
        from q35c.targets.cerebras.graph import GraphProject, write_graph
        from q35c.targets.cerebras.project import write_project

        project, machine = self._project(module, store, None)
        if isinstance(project, GraphProject):
            s = write_graph(project, machine, out_dir, stem)
            kinds = ", ".join(st["kind"] for st in s["stages"])
            print(f"cerebras target: {len(s['stages'])} stages ({kinds}) on "
                  f"{s['plan']['width']}x{s['plan']['height']} PEs of {machine.name}, "
                  f"{len(s['files'])} CSL files, at most {max(s['pe_memory_bytes'].values())}"
                  f" of {machine.pe_memory_bytes} bytes per PE; see project.json")
            return
        s = write_project(project, machine, out_dir, stem)
        p = s["plan"]
        worst = max(s["pe_memory_bytes"].values())
        print(f"cerebras target: {p['width']}x{p['height']} PEs on {machine.name}, "
              f"{len(s['files'])} CSL files, at most {worst} of "
              f"{machine.pe_memory_bytes} bytes per PE; see project.json")

    def run(self, ctx: Context, module: ModuleOp, store: WeightStore,
            inputs: dict[str, np.ndarray], entry: str | None) -> dict[str, np.ndarray]:
        from q35c.targets.cerebras.graph import GraphProject
        from q35c.targets.cerebras.project import simulate

        project, machine = self._project(module, store, entry)
        if isinstance(project, GraphProject):
            return self._run_graph(project, machine, inputs)
        if project.x_name not in inputs:
            raise Q35cError(f"cerebras target: missing input '{project.x_name}'")
        x = np.asarray(inputs[project.x_name], np.float32)
        if x.shape != (1, project.plan.k):
            raise Q35cError(f"cerebras target: input '{project.x_name}' has shape "
                            f"{x.shape}, expected (1, {project.plan.k})")
        first = None
        for seed in range(self.seeds):
            y, _ = simulate(project, machine, x, seed)
            if first is None:
                first = y
            elif not np.array_equal(first.view(np.uint32), y.view(np.uint32)):
                raise Q35cError(f"cerebras target: interleaving seed {seed} gives different "
                                "outputs than seed 0 (a race between colors)")
        return {project.y_name: first}

    def _run_graph(self, project, machine, inputs: dict[str, np.ndarray]
                   ) -> dict[str, np.ndarray]:
        from q35c.targets.cerebras.graph import simulate_graph

        xs = {}
        for name, shape in project.inputs.items():
            if name not in inputs:
                raise Q35cError(f"cerebras target: missing input '{name}'")
            xs[name] = np.asarray(inputs[name])
            if xs[name].dtype.kind == "f":  # token numbers (a gather's) stay integers
                xs[name] = xs[name].astype(np.float32)
            if xs[name].shape != shape:
                raise Q35cError(f"cerebras target: input '{name}' has shape "
                                f"{xs[name].shape}, expected {shape}")
        first = None
        for seed in range(self.seeds):
            outs, _, cycles = simulate_graph(project, machine, xs, seed)
            if first is None:
                first = outs
                _print_cycles(project, cycles)
            elif any(not np.array_equal(first[k].view(np.uint32), v.view(np.uint32))
                     for k, v in outs.items()):
                raise Q35cError(f"cerebras target: interleaving seed {seed} gives different "
                                "outputs than seed 0 (a race between colors)")
        return first


def _print_cycles(project, cycles: list[int]) -> None:
    """One line: the simulated cycles of the graph's launches, by stage kind."""
    from q35c.targets.cerebras.graph import HOST_KINDS

    by: dict[str, list[int]] = {}
    for st, c in zip([st for st in project.stages if st.kind not in HOST_KINDS], cycles):
        by.setdefault(st.kind, []).append(c)
    parts = ", ".join(f"{k} x{len(v)} {sum(v)}" for k, v in
                      sorted(by.items(), key=lambda kv: -sum(kv[1])))
    print(f"cerebras target: {sum(cycles)} cycles simulated over {len(cycles)} launches "
          f"({parts}); the host's copies and moves are not counted", flush=True)


@dataclass(frozen=True)
class CerebrasPlanTarget(CerebrasTarget):
    """`--target cerebras --shape-only`: where the model's GEMVs would sit on one wafer
    (cerebras_plan.json, report.txt; the text goes to stdout), from shapes alone."""

    def accepted_ops(self) -> None:
        return None  # the planner places every GEMV and lists the other ops

    def _plan(self, module: ModuleOp, entry: str | None) -> dict:
        from q35c.targets.cerebras.machine import load_machine
        from q35c.targets.cerebras.shape_only import shape_only_plan

        return shape_only_plan(module, entry, load_machine(self.machine), self.weights)

    def write_shape_only(self, ctx: Context, module: ModuleOp, store: WeightStore,
                         out_dir: Path, stem: str, entry: str | None) -> None:
        from q35c.targets.cerebras.shape_only import plan_text, write_plan

        plan = self._plan(module, entry)
        write_plan(plan, out_dir)
        print(plan_text(plan), end="", flush=True)

    def emit_shape_only(self, ctx: Context, module: ModuleOp, output, entry: str | None
                        ) -> None:
        from q35c.targets.cerebras.shape_only import plan_text

        output.write(plan_text(self._plan(module, entry)))
        output.flush()


__all__ = ["CerebrasPlanTarget", "CerebrasTarget"]
