"""The Groq target: a statically scheduled TSP program and a cycle-level simulator.

    graph IR (int8 activations) --lower.py--> nodes over buffers --schedule.py--> placement,
    stream ids, issue cycles --program.py--> program.json, memory.bin, memory.json,
    program.s --simulate.py--> outputs (bit-exact with the interpreter's int8 path)

`--target groq` (options: `groq{machine=NAME_OR_PATH chips=N mlir=false}`) writes the
artifacts; `q35c run --target groq` compiles and simulates. The target's pipeline
(`GroqTarget.pipeline`: `int8-activations`, then `verify-overflow` on the int8 IR) runs in the
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
from xdsl.rewriter import InsertPoint

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.weights import WeightStore
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


PIPELINE = "int8-activations,verify-overflow"
"""GroqTarget's own passes: the chip computes matmuls on int8 activations, and the overflow
check must see the int8 IR it runs."""


def int8_module(ctx: Context, module: ModuleOp) -> ModuleOp:
    """The module on the int8-activation path (a copy when a pass has to run).

    Through the driver the target's pipeline (PIPELINE) has already run and this returns
    `module` itself; it is for callers of `compile_module` that skip the driver."""
    from q35c.dialects import quant3p5

    if not any(isinstance(op, quant3p5.MatmulOp) for op in module.walk()):
        return module
    from q35c.compiler.weights import attach_store, store_of
    from q35c.passes.int8_activations import Int8ActivationsPass
    from q35c.passes.verify_overflow import VerifyOverflowPass

    store = store_of(module)
    copy = module.clone()
    attach_store(copy, store)
    Int8ActivationsPass().apply(ctx, copy)
    VerifyOverflowPass().apply(ctx, copy)
    return copy


MAX_CHIPS = 16
"""`chips=0` (the default): the planner's fewest chips; on an SRAM overflow of the
scheduler's placement, one more, up to this many."""


def chip_assignment(plan, m) -> dict[int, int]:
    """IR op index (of the entry function) -> chip, from a plan's layer ranges. An op whose
    weight the plan splits over chips gets the first of them here (`split_columns` gives
    each column shard its own chip). A split embedding table (rows over chips) is an error.
    Chips are renumbered densely (a range of free ops only, such as reshapes, gets no
    chip)."""
    from q35c.targets.groq.plan import Plan

    assert isinstance(plan, Plan)
    split = [x for x in plan.matmuls if "shard" in x and x["kind"] == "gather"]
    if split:
        x = split[0]
        chips_of = sorted({y["chip"] for y in split if y["weight"] == x["weight"]})
        raise Q35cError(
            f"groq target: embedding table '{x['weight']}' does not fit one chip of machine "
            f"{m.name} ({m.sram_bytes} bytes of SRAM): the plan splits its rows over chips "
            f"{chips_of[0]}..{chips_of[-1]}, and row splits of tables are only planned "
            "(--shape-only), not compiled with real weights")
    raw = _raw_assignment(plan)
    numbering = _numbering(plan, raw)
    return {k: numbering[v] for k, v in raw.items()}


def _raw_assignment(plan) -> dict[int, int]:
    assign: dict[int, int] = {}
    for chip in plan.chips:
        first, last = chip["ops"]
        for op_index in range(first, last + 1):
            assign.setdefault(op_index, chip["chip"])
    return assign


def _numbering(plan, raw: dict[int, int]) -> dict[int, int]:
    """Plan chip -> dense chip number: chips that hold ops or column shards."""
    used = sorted(set(raw.values()) | {x["chip"] for x in plan.matmuls if "shard" in x})
    return {c: i for i, c in enumerate(used)}


class _ShardStore(WeightStore):
    """The module's store plus the column shards of split weights (the target's private
    copy: the caller's store is never written)."""

    def __init__(self, base: WeightStore, shards: dict):
        super().__init__()
        self._base = base
        self._values.update(shards)

    def spec(self, name: str):
        return None if name in self._values else self._base.spec(name)

    def __getitem__(self, name: str):
        return self._values[name] if name in self._values else self._base[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values or name in self._base

    def names(self) -> list[str]:
        return sorted(set(self._values) | set(self._base.names()))


def column_slice(w, c0: int, c1: int):
    """Columns c0..c1 of a Q3P5 tensor as a Q3P5 tensor of their own. Storage is column-major
    and columns are independent (docs/format.md: pair codes, group codes and the three
    per-column words are per column n), so the slice decodes to exactly those columns."""
    from q35c.compiler.quant import Q3P5Tensor

    return Q3P5Tensor((w.shape[0], c1 - c0), w.group_size, w.payload[c0:c1].copy(),
                      w.meta[c0:c1].copy(), w.super_scale[c0:c1].copy(),
                      w.offset_base[c0:c1].copy(), w.offset_step[c0:c1].copy())


def split_columns(module: ModuleOp, store: WeightStore, plan, assign: dict[int, int],
                  entry: str | None = None
                  ) -> tuple[ModuleOp, WeightStore, dict[int, int], list[dict]]:
    """Compile the plan's column splits: in a copy of `module`, every `matmul_int8` whose
    weight the plan splits over chips becomes one `matmul_int8` per shard (same int8
    activations and row scales, a new store entry holding the shard's columns) on the
    shard's chip, followed by a `tensor.concat` along the last axis on the chip of the last
    shard (where the plan gathers the split's outputs). Per-column math is independent, so
    the result is bit-identical. Returns (module, store, op index -> chip of the new
    module, one entry per split: weight, op, shards [{weight, chip, cols}], concat chip).
    Without splits the inputs come back unchanged."""
    from xdsl.dialects import tensor
    from xdsl.dialects.builtin import TensorType
    from xdsl.rewriter import Rewriter

    from q35c.compiler.quant import Q3P5Tensor
    from q35c.compiler.weights import attach_store
    from q35c.compiler.entry import entry_function
    from q35c.dialects import quant3p5

    shards_of: dict[int, list[dict]] = {}
    for x in plan.matmuls:
        if "shard" in x and x["kind"] == "matmul":
            shards_of.setdefault(x["op"], []).append(x)
    if not shards_of:
        return module, store, assign, []
    dense = _numbering(plan, _raw_assignment(plan))  # plan chip -> chip of `assign`
    copy = module.clone()
    ops = list(entry_function(copy, entry).body.block.ops)
    chip_of: dict[int, int] = {id(op): assign[i] for i, op in enumerate(ops) if i in assign}
    extra: dict = {}
    splits: list[dict] = []
    for index in sorted(shards_of):
        op = ops[index]
        if not isinstance(op, quant3p5.MatmulInt8Op) or not isinstance(
                op.weights.owner, quant3p5.WeightOp):
            raise Q35cError(f"groq target: the plan splits the columns of {op.name} (op "
                            f"{index}); only quant3p5.matmul_int8 on a weight is split")
        wname = op.weights.owner.weight_name.data
        w = store[wname]
        if not isinstance(w, Q3P5Tensor):
            raise Q35cError(f"groq target: weight '{wname}' is not in the q3p5 layout")
        parts = sorted(shards_of[index], key=lambda x: x["cols"][0])
        assert [p["cols"][0] for p in parts] == [0] + [p["cols"][1] for p in parts[:-1]]
        assert parts[-1]["cols"][1] == w.shape[1]
        lhs_shape = tuple(op.lhs.type.get_shape())
        results, entries = [], []
        for p in parts:
            c0, c1 = p["cols"]
            name = f"{wname}.cols{c0}-{c1}"
            while name in store or name in extra:
                name += "_"
            extra[name] = column_slice(w, c0, c1)
            wop = quant3p5.WeightOp(name, quant3p5.PackedWeightType(
                (w.shape[0], c1 - c0), w.group_size, "q3p5"))
            mm = quant3p5.MatmulInt8Op(op.lhs, op.lhs_scale, wop.result)
            Rewriter.insert_op([wop, mm], InsertPoint.before(op))
            chip_of[id(wop)] = chip_of[id(mm)] = dense[p["chip"]]
            results.append(mm.result)
            entries.append({"weight": name, "chip": dense[p["chip"]], "cols": [c0, c1]})
        out = op.result.type
        assert isinstance(out, TensorType)
        cat = tensor.ConcatOp(results, len(out.get_shape()) - 1, out)
        Rewriter.insert_op(cat, InsertPoint.before(op))
        chip_of[id(cat)] = entries[-1]["chip"]
        op.result.replace_all_uses_with(cat.result)
        Rewriter.erase_op(op)
        splits.append({"weight": wname, "op": index, "shape": list(w.shape),
                       "lhs_shape": list(lhs_shape), "shards": entries,
                       "concat_chip": entries[-1]["chip"]})
    copy.verify()
    shard_store = _ShardStore(store, extra)
    attach_store(copy, shard_store)
    ops = list(entry_function(copy, entry).body.block.ops)
    new_assign = {i: chip_of[id(op)] for i, op in enumerate(ops) if id(op) in chip_of}
    return copy, shard_store, new_assign, splits


def compile_module(ctx: Context, module: ModuleOp, store: WeightStore,
                   entry: str | None = None, machine: str = "tsp-v1",
                   chips: int = 0) -> Compiled:
    from xdsl.dialects.builtin import TensorType

    from q35c.targets.groq.lower import lower
    from q35c.targets.groq.machine import load_machine
    from q35c.targets.groq.plan import PlanOptions, plan_module
    from q35c.targets.groq.program import to_documents
    from q35c.targets.groq.report import build_report
    from q35c.compiler.entry import entry_function
    from q35c.targets.groq.schedule import schedule

    m = load_machine(machine)
    module = int8_module(ctx, module)
    # The multi-chip planner (plan.py) decides the chips: the fewest whose SRAM holds the
    # model (or exactly `chips`), layer ranges balanced by the per-layer costs of cost.py.
    # Its SRAM model is not the scheduler's placement: on an SRAM overflow, plan one more
    # chip (up to MAX_CHIPS; never with an explicit `chips`).
    n = chips if chips > 0 else None
    granule = 1
    tried: set[tuple[int, int]] = set()
    fewest = 0
    while True:
        plan = plan_module(module, PlanOptions(chips=n, granule=granule), machine=m,
                           entry=entry)
        assign = chip_assignment(plan, m)
        # a weight larger than one chip: one matmul per column shard, on the plan's chips
        work, wstore, assign, splits = split_columns(module, store, plan, assign, entry)
        count = max(assign.values(), default=0) + 1
        fewest = fewest or count
        if (count, granule) not in tried:
            tried.add((count, granule))
            graph = lower(work, wstore, m.lanes, entry)
            try:
                prog = schedule(graph, m, count, assign if count > 1 else None)
                break
            except Q35cError as err:
                if "SRAM overflow" not in str(err) or chips > 0 or (n or count) >= MAX_CHIPS:
                    raise Q35cError(f"{err} (planned on {count} chip(s))") from None
        elif (n or count) >= MAX_CHIPS:
            raise Q35cError(f"groq target: SRAM overflow: the planner's partitions over up to "
                            f"{MAX_CHIPS} chips do not fit machine {m.name}") from None
        n = max(n or count, count) + 1
        if splits:  # finer column chunks, so that the extra chip takes part of the split
            granule = n
    fn = entry_function(work, entry)
    ops = list(fn.body.block.ops)
    ret = ops[-1]
    shapes_in = [tuple(a.type.get_shape()) for a in fn.args]
    shapes_out = [tuple(v.type.get_shape()) if isinstance(v.type, TensorType) else ()
                  for v in ret.operands]
    prog.inputs = [(n, c, s) for (n, b), s in zip(graph.inputs, shapes_in)
                   for c in [b] + sorted(x for x in graph.buffers if x.startswith(b + "@"))
                   if graph.buffers[c].slices]
    prog.outputs = [(n, b, s) for (n, b), s in zip(graph.outputs, shapes_out)]
    doc, image, memory = to_documents(prog, "model.mlir")
    report = build_report(prog, doc)
    report["plan"] = {"chips": plan.summary["chips"], "fewest_chips": fewest,
                      "cycles_per_pass": plan.summary["cycles_per_pass"],
                      "layers_per_chip": [c["layers"] for c in plan.chips],
                      "granule": granule, "column_splits": splits}
    return Compiled(work, doc, image, memory, report, ops, wstore)


def _accepted_ops() -> frozenset[str]:
    """What lower.py lowers: the interpreter's ops that it does not reject, of which only
    linalg.reduce/fill/transpose/broadcast may have regions; and func.return."""
    from xdsl.dialects.linalg.ops import BroadcastOp, FillOp, ReduceOp, TransposeOp

    from q35c.semantics import IMPLEMENTATIONS
    from q35c.targets.groq.lower import _UNSUPPORTED

    with_regions = (ReduceOp, FillOp, TransposeOp, BroadcastOp)
    return frozenset({"func.return"} | {
        t.name for t in IMPLEMENTATIONS if not issubclass(t, _UNSUPPORTED) and (
            not t.get_irdl_definition().regions or issubclass(t, with_regions))})


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

    def __post_init__(self) -> None:
        from q35c.compiler.options import check_int, check_text

        check_text("--target groq", "machine", self.machine)
        check_int("--target groq", "chips", self.chips, 0, MAX_CHIPS)

    def pipeline(self, shape_only: bool = False) -> str:
        return "" if shape_only else PIPELINE

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

        c = compile_module(ctx, module, store, None, self.machine, self.chips)
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

    def run(self, ctx: Context, module: ModuleOp, store: WeightStore,
            inputs: dict[str, np.ndarray], entry: str | None) -> dict[str, np.ndarray]:
        from q35c.targets.groq.machine import load_machine
        from q35c.semantics import Interpreter
        from q35c.targets.groq.simulate import simulate

        c = compile_module(ctx, module, store, entry, self.machine, self.chips)
        return simulate(c.doc, c.image, load_machine(self.machine), c.ops,
                        Interpreter(c.module, c.store or store), inputs)


@dataclass(frozen=True)
class GroqPlanTarget(Q35cTarget):
    """`--target groq --shape-only`: the multi-chip plan (plan.json, report.txt,
    report.json) from shapes and packed types alone; its text goes to stdout."""

    name = "groq"
    plan: PlanOptions = field(default_factory=PlanOptions)
    supports_shape_only = True

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
    from q35c.compiler.context import make_context
    from q35c.targets.groq.machine import load_machine
    from q35c.compiler.entry import entry_function
    from q35c.semantics import Interpreter
    from q35c.targets.groq.simulate import simulate
    from xdsl.parser import Parser

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


__all__ = ["GroqTarget", "compile_module", "simulate_dir", "Q35cError"]
