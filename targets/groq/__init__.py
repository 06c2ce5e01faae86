"""The Groq target: a statically scheduled TSP program and a cycle-level simulator.

    graph IR (int8 activations) --lower.py--> nodes over buffers --schedule/--> placement,
    stream ids, issue cycles --program.py--> program.json, memory.bin, memory.json,
    program.s --simulate.py--> outputs (bit-exact with the interpreter's int8 path)

`--target groq` (options: `groq{machine=NAME_OR_PATH chips=N mlir=false scales=codes|f32|int
levels=packed|int8}`; `--shape-only` also `table-bytes`, `granule`, `timeline=chain|dataflow`)
writes the
artifacts; `q35c run --target groq` compiles and simulates. The target's pipeline
(`GroqTarget.pipeline`: `unfuse-ops` of fused matmuls, `int8-activations`, then
`verify-overflow` on the int8 IR) runs in the
driver after the user's passes, so `--dump-ir` shows it. `--shape-only` writes the
multi-chip plan instead (plan.py); `q35c report OUT` draws the timeline (timeline.py).
docs/groq.md describes the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.weights import WeightStore
from q35c.targets.groq.columns import chip_assignment, split_columns
from q35c.targets.groq.compile import MAX_CHIPS, compile_module
from q35c.targets.groq.plan import PlanOptions
from q35c.targets.target import Q35cTarget


@dataclass
class Compiled:
    module: ModuleOp
    doc: dict
    image: bytes
    memory: dict
    report: dict
    ops: list
    store: WeightStore | None = None
    """The store of `module`: the caller's, plus the column shards of split weights."""


SHAPE_ONLY_PIPELINE = "dequantize-gathers"
"""The passes of `--shape-only` compiles (the plan and the program alike): the planner costs
the decoded float table a packed embedding table becomes on the chip."""
PIPELINE = (SHAPE_ONLY_PIPELINE + ',raise-fortran-tensors,unfuse-ops{ops="quant3p5.fused_matmul"},'
            'int8-activations,verify-overflow')
"""GroqTarget's own passes: gathers from packed embedding tables read decoded float tables
(passes/dequantize_gathers.py: the chip gathers float rows, groq/tables.py), Fortran
kernels whose loops were raised become tensor functions
(passes/raise_fortran_tensors.py; a no-op for other inputs), the fused matmuls of
`fuse-matmul-bias-act`/`fuse-residual` back
into matmul and epilogue ops (lower.py has no fused matmul; the chip runs the epilogue on
the VXM either way), the chip computes matmuls on int8 activations, and the overflow check
must see the int8 IR it runs."""


def pipeline_for(int_rescale: int = 0) -> str:
    """PIPELINE, with the integer rescale contract over blocks of `int_rescale` K rows
    (`groq{scales=int}`: the MXM's rows) when it is not 0."""
    if not int_rescale:
        return PIPELINE
    return PIPELINE.replace("int8-activations", f"int8-activations{{int-rescale={int_rescale}}}")


def int8_module(ctx: Context, module: ModuleOp, int_rescale: int = 0) -> ModuleOp:
    """The module on the int8-activation path, gathers from packed tables decoded (a copy
    when a pass has to run); `int_rescale`: `Int8ActivationsPass.int_rescale`.

    Through the driver the target's pipeline (PIPELINE) has already run and this returns
    `module` itself; it is for callers of `compile_module` that skip the driver."""
    from q35c.dialects import quant3p5

    if not any(isinstance(op, (quant3p5.MatmulOp, quant3p5.FusedMatmulOp, quant3p5.GatherOp))
               for op in module.walk()):
        return module
    from q35c.compiler.weights import attach_store, store_of
    from q35c.passes.dequantize_gathers import DequantizeGathersPass
    from q35c.passes.int8_activations import Int8ActivationsPass
    from q35c.passes.unfuse_ops import UnfuseOpsPass
    from q35c.passes.verify_overflow import VerifyOverflowPass

    store = store_of(module)
    copy = module.clone()
    attach_store(copy, store)
    DequantizeGathersPass().apply(ctx, copy)
    UnfuseOpsPass(("quant3p5.fused_matmul",)).apply(ctx, copy)
    Int8ActivationsPass(int_rescale).apply(ctx, copy)
    VerifyOverflowPass().apply(ctx, copy)
    return copy


def _accepted_ops() -> frozenset[str]:
    """What lower.py lowers: the interpreter's ops that it does not reject, of which only
    linalg.reduce/fill/transpose/broadcast may have regions; the generic ONNX op for the op
    types of `cost.ONNX_NODE_WORK`; and func.return."""
    from xdsl.dialects.linalg.ops import BroadcastOp, FillOp, ReduceOp, TransposeOp

    from q35c.dialects.q35nn import OnnxNodeOp
    from q35c.semantics import IMPLEMENTATIONS
    from q35c.targets.groq.cost import ONNX_NODE_WORK
    from q35c.targets.groq.lower import _UNSUPPORTED

    with_regions = (ReduceOp, FillOp, TransposeOp, BroadcastOp)
    generic = {f'{OnnxNodeOp.name} "{t}"' for t in ONNX_NODE_WORK}
    return frozenset({"func.return"} | generic | {
        t.name for t in IMPLEMENTATIONS if not issubclass(t, (*_UNSUPPORTED, OnnxNodeOp)) and (
            not t.get_irdl_definition().regions or issubclass(t, with_regions))})


def _raised_loops(module: ModuleOp) -> list[str]:
    """The entry function's `q35c.raised` notes (raise-fortran-tensors: which loops of a
    Fortran kernel became which tensor ops)."""
    from xdsl.dialects.builtin import ArrayAttr, StringAttr

    from q35c.compiler.entry import entry_function

    try:
        notes = entry_function(module, None).attributes.get("q35c.raised")
    except Exception:
        return []
    return [a.data for a in notes.data if isinstance(a, StringAttr)] if isinstance(
        notes, ArrayAttr) else []


@dataclass(frozen=True)
class GroqTarget(Q35cTarget):
    """A statically scheduled TSP program (program.json, program.s) and its simulator."""

    name = "groq"
    supports_shape_only = True
    output_markers = ("program.json", "plan.json")
    machine: str = "tsp-v1"
    chips: int = 0
    """0: the fewest chips that hold the model; N: exactly N chips (pipeline across layers)."""
    mlir: bool = True
    """Also write program.mlir (the groq dialect); `groq{mlir=false}` skips it (large
    programs: printing 40k ops takes longer than scheduling them)."""

    scales: str = "codes"
    """The weight layout: "codes" (the packed group codes and column words, decoded by every
    rescale on the VXM) or "f32" (each group's float32 scale and offset decoded at compile
    time: bit-identical results, no decode work on the VXM, 8 bytes per group and column
    of SRAM instead of 7/8; docs/groq.md "Weight layouts"), or "int": the integer rescale
    contract (other numerics: integer group scales, offsets folded into the int8 levels,
    groups combined in int32 per K chunk; with levels=int8; docs/groq.md "The integer
    rescale contract"); the pipeline's int8-activations then has int-rescale=lanes."""
    levels: str = "packed"
    """The weights: "packed" (3.5-bit pair codes, unpacked on the VXM on their way to the
    MXM) or "int8" (the int8 levels decoded at compile time, 8 bits per weight, installed
    from MEM straight into the MXM; bit-identical results)."""

    def __post_init__(self) -> None:
        from q35c.compiler.options import check_choice, check_int, check_text
        from q35c.targets.groq.machine import LEVELS, SCALES

        check_text("--target groq", "machine", self.machine)
        check_int("--target groq", "chips", self.chips, 0, MAX_CHIPS)
        check_choice("--target groq", "scales", self.scales, SCALES)
        check_choice("--target groq", "levels", self.levels, LEVELS)
        if self.scales == "int" and self.levels != "int8":
            raise Q35cError("--target groq: scales=int (the integer rescale contract) needs "
                            "levels=int8: the group offsets ride on the installed levels")

    def pipeline(self, shape_only: bool = False) -> str:
        if shape_only:
            return SHAPE_ONLY_PIPELINE
        if self.scales != "int":
            return PIPELINE
        from q35c.targets.groq.machine import load_machine

        return pipeline_for(load_machine(self.machine).lanes)

    def accepted_ops(self) -> frozenset[str]:
        return _accepted_ops()

    @classmethod
    def shape_only_from_spec(cls, spec) -> Q35cTarget:
        return GroqPlanTarget(PlanOptions.from_spec_args(dict(spec.parameters)))

    @classmethod
    def report(cls, out_dir: Path) -> Path:
        """OUT/timeline.html from program.json (or a --shape-only plan.json)."""
        from q35c.targets.groq.timeline import write_timeline

        return write_timeline(out_dir)

    def write(self, ctx: Context, module: ModuleOp, store: WeightStore, out_dir: Path,
              stem: str) -> None:
        from q35c.compiler.ir_text import module_text
        from q35c.targets.groq.program import dumps, listing
        from q35c.targets.groq.report import report_text

        c = compile_module(ctx, module, store, None, self.machine, self.chips,
                           self.scales, self.levels)
        raised = _raised_loops(module)
        if raised:
            c.report["raised_loops"] = raised
        (out_dir / "program.json").write_text(dumps(c.doc))
        (out_dir / "memory.bin").write_bytes(c.image)
        (out_dir / "memory.json").write_text(json.dumps(c.memory, indent=1) + "\n")
        (out_dir / "program.s").write_text(listing(c.doc))
        (out_dir / "report.json").write_text(json.dumps(c.report, indent=1) + "\n")
        text = report_text(c.report)
        (out_dir / "report.txt").write_text(text)
        (out_dir / "model.mlir").write_text(module_text(c.module, weights_file=None))
        from q35c.dialects.groq import program_module
        if self.mlir:
            (out_dir / "program.mlir").write_text(
                module_text(program_module(c.doc), weights_file=None))
        r = c.report
        print(f"groq target: {r['chips']} chip(s), {r['cycles']} cycles ({r['microseconds']} us), "
              f"lower bound {r['lower_bound_cycles']} (ratio {r['ratio']}), {r['instructions']} "
              f"instructions, SRAM {r['sram_bytes']} bytes; see report.txt")
        if raised:
            print(f"groq target: {len(raised)} Fortran loop nest(s) raised to tensor ops; "
                  "listed in report.txt")

    def run(self, ctx: Context, module: ModuleOp, store: WeightStore,
            inputs: dict[str, np.ndarray], entry: str | None) -> dict[str, np.ndarray]:
        from q35c.semantics import Interpreter
        from q35c.targets.groq.machine import load_machine
        from q35c.targets.groq.simulate import simulate

        c = compile_module(ctx, module, store, entry, self.machine, self.chips,
                           self.scales, self.levels)
        return simulate(c.doc, c.image, load_machine(self.machine), c.ops,
                        Interpreter(c.module, c.store or store), inputs)


@dataclass(frozen=True)
class GroqPlanTarget(Q35cTarget):
    """`--target groq --shape-only`: the multi-chip plan (plan.json, report.txt,
    report.json) from shapes and packed types alone; its text goes to stdout."""

    name = "groq"
    plan: PlanOptions = field(default_factory=PlanOptions)
    supports_shape_only = True

    def pipeline(self, shape_only: bool = False) -> str:
        """Gathers from packed embedding tables gather float rows on the chip (tables.py)."""
        return SHAPE_ONLY_PIPELINE

    def accepted_ops(self) -> None:
        return None  # the planner costs every op it knows and ignores the others

    def write(self, ctx: Context, module: ModuleOp, store: WeightStore, out_dir: Path,
              stem: str) -> None:
        raise Q35cError("the groq plan is written with --shape-only")

    def _plan(self, module: ModuleOp, entry: str | None):
        from q35c.targets.groq.plan import plan_module

        return plan_module(module, self.plan, entry=entry)

    def write_shape_only(self, ctx: Context, module: ModuleOp, store: WeightStore,
                         out_dir: Path, stem: str, entry: str | None) -> None:
        plan = self._plan(module, entry)
        plan.write(out_dir)
        print(plan.text(), end="", flush=True)

    def emit_shape_only(self, ctx: Context, module: ModuleOp, output: IO[str],
                        entry: str | None) -> None:
        output.write(self._plan(module, entry).text())
        output.flush()


def simulate_dir(out_dir: Path, inputs: dict[str, np.ndarray], ctx: Context | None = None
                 ) -> dict[str, np.ndarray]:
    """Simulate a written program (program.json + memory.bin + model.mlir in out_dir)."""
    from xdsl.parser import Parser

    from q35c.compiler.context import make_context
    from q35c.compiler.entry import entry_function
    from q35c.semantics import Interpreter
    from q35c.targets.groq.machine import load_machine
    from q35c.targets.groq.simulate import simulate

    doc = json.loads((out_dir / "program.json").read_text())
    image = (out_dir / doc["image"]["file"]).read_bytes()
    ctx = ctx or make_context()
    module = Parser(ctx, (out_dir / doc["ir"]).read_text()).parse_module()
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:  # the machine the program was scheduled for
        path = Path(tmp) / "machine.json"
        path.write_text(json.dumps(doc["machine_file"]))
        m = load_machine(path)
    ops = list(entry_function(module).body.block.ops)
    return simulate(doc, image, m, ops, Interpreter(module, WeightStore()), inputs)


__all__ = ["GroqTarget", "MAX_CHIPS", "chip_assignment", "compile_module", "simulate_dir",
           "split_columns", "Q35cError"]
