"""From graph IR to a CSL project, its host data and its files; the simulated run.

    graph IR (one batch-1 quant3p5.matmul) --plan.py--> tiling --emit.py--> csl IR
    --printer.py--> layout.csl, pe_<role>.csl; host.npz + run.py (the host side)
    --simulate.py--> static checks, then y, bit-exact with `matmul_q3p5_f16`
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import BlockArgument

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.entry import argument_names, entry_function, result_names
from q35c.compiler.quant import CODEBOOK, OFFSET_GRID, SCALE_STEPS, Q3P5Tensor
from q35c.compiler.weights import WeightStore
from q35c.dialects import quant3p5
from q35c.targets.cerebras.emit import csl_module
from q35c.targets.cerebras.host import HOST_OP_NAMES
from q35c.targets.cerebras.machine import Machine
from q35c.targets.cerebras.moves import MOVE_OP_NAMES
from q35c.targets.cerebras.parse import parse_csl
from q35c.targets.cerebras.plan import GemvPlan, tiles_data, x_slice
from q35c.targets.cerebras.printer import csl_files
from q35c.targets.cerebras.simulate import Simulation, check, memory_use, programs

ACCEPTED_OPS = frozenset({"quant3p5.weight", "quant3p5.matmul", "func.return",
                          "q35nn.rms_norm", "q35nn.silu", "q35nn.swiglu", "q35nn.softmax",
                          "q35nn.gather", "q35nn.attention", "arith.addf", "arith.mulf",
                          "arith.negf", "arith.constant"}) | MOVE_OP_NAMES | HOST_OP_NAMES
"""What the lowering maps today: batch-1 GEMVs on Q3P5 weights, RMSNorm, SiLU, SwiGLU,
softmax, elementwise add, mul and neg, the embedding gather of one token, attention of one
token over a KV cache, and the data movement between them (reshapes, transposes,
broadcasts, static slices, concatenations: moves.py) (docs/cerebras.md). A function that
is one GEMV is the single-GEMV project below; any other is a graph of stages (graph.py)."""


def is_single_gemv(fn: func.FuncOp) -> bool:
    """One quant3p5.matmul and nothing but its weight and the return."""
    ops = [op for op in fn.body.block.ops if not isinstance(op, quant3p5.WeightOp)]
    return len(ops) == 2 and isinstance(ops[0], quant3p5.MatmulOp)


@dataclass
class Project:
    plan: GemvPlan
    csl: ModuleOp
    weights: Q3P5Tensor
    x_name: str
    y_name: str

    def host_data(self) -> dict[str, np.ndarray]:
        """What run.py copies into the PEs, by '<x>_<y>/<symbol>' (weights) and
        '<symbol>' (the decoding tables, the same on every PE)."""
        out = {k: v for k, v in decoding_tables().items() if k in self.plan.tables()}
        for (x, y), arrs in tiles_data(self.plan, self.weights):
            for name, arr in arrs.items():
                out[f"{x}_{y}/{name}"] = arr
        return out


def _gemv(fn: func.FuncOp) -> quant3p5.MatmulOp:
    """The function's one quant3p5.matmul, its input an argument and its result returned."""
    mms = [op for op in fn.body.block.ops if isinstance(op, quant3p5.MatmulOp)]
    if len(mms) != 1:
        raise Q35cError(f"cerebras target: the function has {len(mms)} quant3p5.matmul ops; "
                        "the lowering maps exactly one GEMV")
    mm = mms[0]
    ret = fn.body.block.last_op
    if not isinstance(mm.operands[0], BlockArgument) or list(ret.operands) != [mm.results[0]]:
        raise Q35cError("cerebras target: quant3p5.matmul must read a function argument "
                        "and its result must be the function's only result")
    shape = mm.operands[0].type.get_shape() if isinstance(mm.operands[0].type,
                                                           TensorType) else ()
    if len(shape) != 2 or shape[0] != 1:
        raise Q35cError(f"cerebras target: quant3p5.matmul input of shape {tuple(shape)}: "
                        "only batch-1 GEMV ([1, K]) is mapped")
    return mm


def compile_project(module: ModuleOp, store: WeightStore, entry: str | None, k_tile: int,
                    n_tile: int, weights_mode: str = "packed") -> Project:
    fn = entry_function(module, entry)
    mm = _gemv(fn)
    w_op = mm.operands[1].owner
    if not isinstance(w_op, quant3p5.WeightOp):
        raise Q35cError("cerebras target: quant3p5.matmul weights must come from "
                        "quant3p5.weight")
    weights = store[w_op.weight_name.data]
    if not isinstance(weights, Q3P5Tensor):
        raise Q35cError(f"cerebras target: weight '{w_op.weight_name.data}' is not in the "
                        "q3p5 layout")
    k, n = weights.shape
    plan = GemvPlan.choose(k, n, weights.group_size, k_tile, n_tile, weights_mode)
    x_name = argument_names(fn)[mm.operands[0].index]
    return Project(plan, csl_module(plan), weights, x_name, result_names(fn)[0])


def simulate(project: Project, machine: Machine, x: np.ndarray, seed: int
             ) -> tuple[np.ndarray, Simulation]:
    """Check the project, then run it under `seed`: y [1, N] and the finished simulation
    (its `cycles`, each PE's `spent` cycles by kind)."""
    plan = project.plan
    layout = check(project.csl, machine)
    sim = Simulation(project.csl, layout, machine, seed)
    data = project.host_data()
    for (px, py) in sim.pes:
        for name in plan.tables():
            sim.load(px, py, name, data[name])
        for name in plan.weight_arrays():
            sim.load(px, py, name, data[f"{px}_{py}/{name}"])
        sim.load(px, py, "x", x_slice(plan, x, px))
    if plan.decoded:  # load time: decode the packed tiles once, then time `compute` alone
        sim.load_cycles = sim.run("decode")
        sim.restart()
    sim.run()
    y = np.concatenate([sim.pes[(plan.width - 1, j)].memory["y"] for j in range(plan.height)])
    return y[:plan.n].reshape(1, plan.n), sim


RUNTIME_PY = '''runner = SdkRuntime(args.name, cmaddr=None)
runner.load()
runner.run()


def h2d(symbol, px, py, values):
    """Copy `values` into array `symbol` of PE (px, py), 32 bits per element."""
    values = np.ascontiguousarray(values)
    if values.dtype.itemsize == 2:  # 16-bit arrays travel zero-extended to 32 bits
        values = values.view(np.uint16).astype(np.uint32)
        kind = MemcpyDataType.MEMCPY_16BIT
    else:
        values = values.view(np.uint32)
        kind = MemcpyDataType.MEMCPY_32BIT
    runner.memcpy_h2d(runner.get_id(symbol), values, px, py, 1, 1, values.size,
                      streaming=False, data_type=kind, order=MemcpyOrder.ROW_MAJOR,
                      nonblock=False)
'''
"""run.py's start of the SDK runtime and its host-to-device copy (both templates)."""

RUN_PY = '''#!/usr/bin/env cs_python
"""Host program for {name} (Cerebras SDK style; written by q35c, not run here: no SDK).

    cs_python run.py --name out   # after: cslc layout.csl --fabric-dims={fw},{fh} \\
                                  #   --fabric-offsets=4,1 --memcpy --channels=1 -o out

Loads every PE's {what} with memcpy_h2d, copies x,
launches `compute` on every PE and reads y from the east-most column (project.json).
"""

import argparse
import json

import numpy as np
from cerebras.sdk.runtime.sdkruntimepybind import (  # pylint: disable=no-name-in-module
    MemcpyDataType,
    MemcpyOrder,
    SdkRuntime,
)

parser = argparse.ArgumentParser()
parser.add_argument("--name", required=True, help="the compiled program's directory")
parser.add_argument("--x", default="x.npy", help="the input vector (.npy, [1, K])")
args = parser.parse_args()
project = json.load(open("project.json"))
plan = project["plan"]
data = np.load("host.npz")
x = np.load(args.x).astype(np.float32).reshape(-1)

{runtime}

for px in range(plan["width"]):
    xs = np.zeros(plan["k_tile"], np.float32)
    part = x[px * plan["k_tile"]:(px + 1) * plan["k_tile"]]
    xs[:part.size] = part
    for py in range(plan["height"]):
        for name in {tables}:
            h2d(name, px, py, data[name])
        for name in {arrays}:
            h2d(name, px, py, data[f"{{px}}_{{py}}/{{name}}"])
        h2d("x", px, py, xs)
{decode}runner.launch("compute", nonblock=False)
y = np.zeros(plan["height"] * plan["n_tile"], np.uint32)
last = plan["width"] - 1
for py in range(plan["height"]):
    part = np.zeros(plan["n_tile"], np.uint32)
    runner.memcpy_d2h(part, runner.get_id("y"), last, py, 1, 1, plan["n_tile"],
                      streaming=False, data_type=MemcpyDataType.MEMCPY_32BIT,
                      order=MemcpyOrder.ROW_MAJOR, nonblock=False)
    y[py * plan["n_tile"]:(py + 1) * plan["n_tile"]] = part
runner.stop()
np.save("y.npy", y.view(np.float32)[:plan["n"]].reshape(1, -1))
'''


def names_tuple(names: tuple[str, ...]) -> str:
    """A tuple of names as run.py spells it: ("a", "b") or ("a",) or ()."""
    inner = ", ".join(f'"{n}"' for n in names)
    return f"({inner}{',' if len(names) == 1 else ''})"


def decoding_tables() -> dict[str, np.ndarray]:
    """The decoding tables a packed or decoded GEMV's PEs hold (plan.TABLES,
    plan.PACKED_TABLES)."""
    return {"cb0": CODEBOOK[:, 0].astype(np.float16),
            "cb1": CODEBOOK[:, 1].astype(np.float16),
            "cb01": CODEBOOK.reshape(-1).astype(np.float16),
            "stepm": np.asarray(SCALE_STEPS, np.float32)[np.arange(128) & 31],
            "gridm": np.asarray(OFFSET_GRID, np.float32)[np.arange(128) >> 5]}


def write_project(project: Project, machine: Machine, out_dir: Path, stem: str) -> dict:
    """layout.csl, pe_<role>.csl, run.py, host.npz, project.json; the project summary."""
    layout = check(project.csl, machine)
    files = csl_files(project.csl)
    for name, text in files.items():
        parse_csl(text, name)  # the printer's output stays inside the CSL subset
    for name, text in files.items():
        (out_dir / name).write_text(text)
    np.savez(out_dir / "host.npz", **project.host_data())
    plan = project.plan
    decode = 'runner.launch("decode", nonblock=False)  # once, at load time\n' \
        if plan.decoded else ""
    (out_dir / "run.py").write_text(RUN_PY.format(
        name=stem, decode=decode, runtime=RUNTIME_PY, fw=plan.width + 7, fh=plan.height + 2,
        tables=names_tuple(plan.tables()), arrays=names_tuple(plan.weight_arrays()),
        what="float16 weight tile" if plan.f16 else
        "packed weight tile and the decoding tables"))
    memory = {name: memory_use(prog, machine) for name, prog in programs(project.csl).items()}
    summary = {
        "machine": machine.name,
        "pe_memory_capacity": machine.pe_memory_bytes,
        "plan": {"k": plan.k, "n": plan.n, "group": plan.group, "k_tile": plan.k_tile,
                 "n_tile": plan.n_tile, "width": plan.width, "height": plan.height,
                 **({"weights": plan.weights} if plan.weights != "packed" else {})},
        "input": project.x_name, "output": project.y_name,
        "files": sorted(files),
        "pe_memory_bytes": {name: sum(use.values()) for name, use in memory.items()},
        "pe_memory_parts": memory,
        "routes": len(layout.routes),
        "columns": [plan.role(x) for x in range(plan.width)],
        "traffic": {str(c): t for c, t in sorted(layout.traffic.items())},
    }
    (out_dir / "project.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
