"""From int8 IR to a scheduled program: plan the chips, compile the column splits, lower,
schedule; and, when the schedule's MEM placement overflows, plan again.

The re-planning loop (`plan_and_schedule`) exists because the multi-chip planner
(plan.py) decides chips from an SRAM model of its own (packed weight bytes against the
chip's capacity), while the scheduler's placement (schedule/placement.py) packs whole
slice groups per column tile and needs scratch buffers the planner does not count. So a
plan can fit in the planner's model and overflow in the placement; only scheduling finds
out. Each attempt:

1. plans with a chip count request (None: the fewest that hold the model) and a column
   `granule` (1: whole layers per chip);
2. assigns every IR op to a chip and compiles the plan's column splits (`columns.py`);
3. lowers and schedules on the resulting chip count.

An attempt whose schedule overflows SRAM is followed by one with a request of one more chip
than it used; if the plan split a weight over chips, also with `granule` = that request
(column chunks of at most 1/N of a chip), so that the extra chip takes part of the split.
An attempt that would repeat an earlier (chips, granule) pair is skipped. It stops at the
first schedule that fits, with an explicit `chips=N` at the first overflow, and at
`MAX_CHIPS`. It cannot be a pass before scheduling: whether a plan fits is known only by
placing it, which is what scheduling does.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.entry import entry_function
from q35c.compiler.weights import WeightStore
from q35c.targets.groq.columns import chip_assignment, split_columns, table_rows
from q35c.targets.groq.lower import Graph, lower
from q35c.targets.groq.machine import Machine, load_machine, with_layout
from q35c.targets.groq.plan import Plan, PlanOptions, plan_module
from q35c.targets.groq.program import to_documents
from q35c.targets.groq.report import build_report
from q35c.targets.groq.schedule import Program, schedule
from q35c.targets.groq.tables import split_tables

MAX_CHIPS = 16
"""`chips=0` (the default): the planner's fewest chips; on an SRAM overflow of the
scheduler's placement, one more, up to this many."""


@dataclass
class Scheduled:
    """The attempt that fit: its plan, the module and store with the column splits
    compiled, the lowered graph and its program; `fewest`: the chips of the first plan,
    `granule` and `splits` as planned."""

    plan: Plan
    module: ModuleOp
    store: WeightStore
    graph: Graph
    program: Program
    fewest: int
    granule: int
    splits: list[dict]
    tables: list[dict]
    """The row splits of tables (`tables.split_tables`)."""


def _overflows(err: Q35cError) -> bool:
    return "SRAM overflow" in str(err)


def plan_and_schedule(module: ModuleOp, store: WeightStore, m: Machine,
                      entry: str | None, chips: int) -> Scheduled:
    """The re-planning loop of the module docstring: `chips` 0 for the fewest chips that
    fit, N for exactly N."""
    request = chips if chips > 0 else None
    granule = 1
    tried: set[tuple[int, int]] = set()
    fewest = 0
    overflow = ""
    while True:
        plan = plan_module(module, PlanOptions(chips=request, granule=granule), machine=m,
                           entry=entry)
        assign = chip_assignment(plan)
        # a weight larger than one chip: one matmul per column shard, on the plan's chips
        work, work_store, assign, splits = split_columns(module, store, plan, assign, entry)
        # a table larger than a slice group or a chip: row pieces and selects
        work, work_store, assign, tables = split_tables(work, work_store, table_rows(plan),
                                                        assign, m, entry)
        count = max(assign.values(), default=0) + 1
        fewest = fewest or count
        last_try = chips > 0 or (request or count) >= MAX_CHIPS
        if (count, granule) not in tried:
            tried.add((count, granule))
            graph = lower(work, work_store, m.lanes, entry)
            try:
                program = schedule(graph, m, count, assign if count > 1 else None)
                return Scheduled(plan, work, work_store, graph, program, fewest, granule,
                                 splits, tables)
            except Q35cError as err:
                if not _overflows(err) or last_try:
                    raise Q35cError(f"{err} (planned on {count} chip(s))") from None
                overflow = f"on {count} chip(s): {str(err).removeprefix('groq target: ')}"
        elif (request or count) >= MAX_CHIPS:
            raise Q35cError(f"groq target: SRAM overflow: the planner's partitions over up to "
                            f"{MAX_CHIPS} chips do not fit machine {m.name}; last attempt "
                            f"{overflow}") from None
        request = max(request or count, count) + 1
        if splits:  # finer column chunks, so that the extra chip takes part of the split
            granule = request


def compile_module(ctx: Context, module: ModuleOp, store: WeightStore,
                   entry: str | None = None, machine: str = "tsp-v1", chips: int = 0,
                   scales: str = "codes", levels: str = "packed"):
    """Compile `module` (int8 activations are added if its pipeline did not) to the
    program documents of GroqTarget (`Compiled`); `scales`, `levels`: the weight layout
    (`machine.SCALES`, `machine.LEVELS`)."""
    from q35c.targets.groq import Compiled, int8_module

    m = with_layout(load_machine(machine), scales, levels)
    module = int8_module(ctx, module, m.lanes if m.int_scales else 0)
    done = plan_and_schedule(module, store, m, entry, chips)
    graph, prog, plan = done.graph, done.program, done.plan
    fn = entry_function(done.module, entry)
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
    report["plan"] = {"chips": plan.summary["chips"], "fewest_chips": done.fewest,
                      "cycles_per_pass": plan.summary["cycles_per_pass"],
                      "layers_per_chip": [c["layers"] for c in plan.chips],
                      "granule": done.granule, "column_splits": done.splits}
    if done.tables:
        report["plan"]["table_splits"] = done.tables
    return Compiled(done.module, doc, image, memory, report, ops, done.store)
