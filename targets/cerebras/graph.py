"""A batch-1 decode-step graph of several ops as one CSL program: every op is a *stage* on
its own PE region, and the host chains them.

    func (quant3p5.matmul, q35nn.rms_norm/silu/swiglu, arith.addf/mulf on [1, D] vectors)
    --stages()--> [GEMV plans (plan.py), vector plans (vector.py)], regions side by side
    --graph_module()--> csl IR: programs s<i>_<role> (and `idle`), one layout

Stage i occupies columns [x0, x0 + width) and rows [0, height) of the rectangle; PEs of the
rectangle that no stage uses run `idle.csl`. Every program defines the launch function of
every stage (`s0`, `s1`, ...): its own stage's does the work, the others only hand the
command stream back, because a memcpy launch reaches every PE. **Vectors move between
stages through the host**: after launching `s<i>`, run.py reads the stage's output (the
east-most column of a GEMV, every PE of a vector stage) with memcpy_d2h and copies it into
the next stages' input arrays with memcpy_h2d; the values never change on the way (32-bit
copies), so the chain adds no rounding. The host's copies are not in the cycle count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xdsl.builder import ImplicitBuilder
from xdsl.dialects import arith, csl, func, scf
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType, i16
from xdsl.ir import Block, Region, SSAValue

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.entry import argument_names, entry_function, result_names
from q35c.compiler.quant import CODEBOOK, OFFSET_GRID, SCALE_STEPS, Q3P5Tensor
from q35c.compiler.tensors import constant_value
from q35c.compiler.weights import WeightStore
from q35c.dialects import q35nn, quant3p5
from q35c.semantics import cerebras as mode, matmul_q3p5_f16
from q35c.targets.cerebras import emit
from q35c.targets.cerebras.emit import _int, noop_functions
from q35c.targets.cerebras.machine import Machine
from q35c.targets.cerebras.ops import SetColorConfigOp
from q35c.targets.cerebras.parse import parse_csl
from q35c.targets.cerebras.plan import GemvPlan, pe_data, x_slice
from q35c.targets.cerebras.printer import csl_files
from q35c.targets.cerebras.simulate import Simulation, check, memory_use, programs
from q35c.targets.cerebras.vector import VectorPlan, VectorProgram, routes as vector_routes

VECTOR_OPS = {q35nn.SiluOp: "silu", q35nn.SwigluOp: "swiglu", arith.AddfOp: "add",
              arith.MulfOp: "mul", q35nn.RMSNormOp: "rms_norm", q35nn.SoftmaxOp: "softmax"}
TABLES = ("cb0", "cb1", "steps", "grid")
WEIGHT_ARRAYS = ("payload", "meta", "ss", "ob", "os")


@dataclass
class Stage:
    kind: str
    """"gemv" or a vector kind (vector.KINDS)."""
    plan: GemvPlan | VectorPlan
    inputs: list[str]
    """Host values read by the stage: x (GEMV), a and b (vector ops)."""
    output: str
    x0: int = 0
    weights: Q3P5Tensor | None = None
    gamma: np.ndarray | None = None

    @property
    def width(self) -> int:
        return self.plan.width

    @property
    def height(self) -> int:
        return self.plan.height


@dataclass
class GraphProject:
    stages: list[Stage]
    csl: ModuleOp
    inputs: dict[str, tuple[int, ...]]
    """Function argument name -> shape ([1, D])."""
    outputs: list[str]
    """Host value of each function result."""
    output_names: list[str]
    width: int
    height: int
    decoded: bool = False

    def host_data(self) -> dict[str, np.ndarray]:
        """What run.py copies in once: decoding tables, each GEMV PE's packed tile
        ('s<i>/<x>_<y>/<symbol>', x and y within the stage), gammas and the pow2 table."""
        out = {"cb0": CODEBOOK[:, 0].astype(np.float16),
               "cb1": CODEBOOK[:, 1].astype(np.float16),
               "steps": np.asarray(SCALE_STEPS, np.float32),
               "grid": np.asarray(OFFSET_GRID, np.float32), "pow2": mode.POW2}
        for i, st in enumerate(self.stages):
            if st.kind == "gemv":
                for x in range(st.width):
                    for y in range(st.height):
                        for name, arr in pe_data(st.plan, st.weights, x, y).items():
                            out[f"s{i}/{x}_{y}/{name}"] = arr
            elif st.gamma is not None:
                out[f"s{i}/g"] = _padded(st.plan, st.gamma)
        return out


def _padded(plan: VectorPlan, v: np.ndarray) -> np.ndarray:
    out = np.zeros(plan.width * plan.v_tile, np.float32)
    flat = np.asarray(v, np.float32).reshape(-1)
    out[:flat.size] = flat
    return out


def _vector_shape(value: SSAValue, what: str) -> int:
    shape = value.type.get_shape() if isinstance(value.type, TensorType) else ()
    if len(shape) != 2 or shape[0] != 1:
        raise Q35cError(f"cerebras target: {what} of shape {tuple(shape)}: only batch-1 "
                        "vectors ([1, D]) are mapped")
    return shape[1]


def stages(fn: func.FuncOp, store: WeightStore, k_tile: int, n_tile: int, v_tile: int,
           decoded: bool) -> tuple[list[Stage], dict[str, tuple[int, ...]], list[str]]:
    """The function's ops in order as stages; its inputs; the host value of each result."""
    names: dict[SSAValue, str] = {}
    inputs = {}
    for arg, name in zip(fn.body.block.args, argument_names(fn)):
        inputs[name] = (1, _vector_shape(arg, f"argument '{name}'"))
        names[arg] = name
    weights: dict[SSAValue, object] = {}
    out: list[Stage] = []

    def operand(v: SSAValue, op) -> str:
        if v not in names:
            raise Q35cError(f"cerebras target: {op.name} reads a value that is neither a "
                            "function argument nor a mapped op's result")
        return names[v]

    for op in fn.body.block.ops:
        if isinstance(op, quant3p5.WeightOp):
            weights[op.results[0]] = store[op.weight_name.data]
            continue
        if isinstance(op, arith.ConstantOp):  # a folded small initializer (a gamma)
            if isinstance(op.result.type, TensorType):
                weights[op.result] = np.asarray(constant_value(op.value, op.result.type))
            continue
        if isinstance(op, func.ReturnOp):
            results = [operand(v, op) for v in op.operands]
            break
        tag = f"t{len(out)}"
        if isinstance(op, quant3p5.MatmulOp):
            w = weights.get(op.operands[1])
            if not isinstance(w, Q3P5Tensor):
                raise Q35cError("cerebras target: quant3p5.matmul weights must be a Q3P5 "
                                "quant3p5.weight")
            k = _vector_shape(op.operands[0], "quant3p5.matmul input")
            plan = GemvPlan.choose(k, w.shape[1], w.group_size, k_tile, n_tile, decoded)
            out.append(Stage("gemv", plan, [operand(op.operands[0], op)], tag, weights=w))
        elif type(op) in VECTOR_OPS:
            kind = VECTOR_OPS[type(op)]
            n = _vector_shape(op.results[0], op.name)
            gamma = None
            args = list(op.operands)
            if kind == "rms_norm":
                gamma = weights.get(op.operands[1])
                if not isinstance(gamma, np.ndarray) or gamma.shape != (n,):
                    raise Q35cError("cerebras target: q35nn.rms_norm gamma must be a float "
                                    f"quant3p5.weight or constant of shape ({n},)")
                args = args[:1]
            for a in args:
                if _vector_shape(a, f"{op.name} operand") != n:
                    raise Q35cError(f"cerebras target: {op.name} operands of different "
                                    "shapes (no broadcasting is mapped)")
            if kind == "softmax" and op.axis.value.data not in (-1, 1):
                raise Q35cError("cerebras target: q35nn.softmax over the batch axis is not "
                                "mapped (only the last axis of [1, D])")
            eps = op.epsilon.value.data if kind == "rms_norm" else 0.0
            plan = VectorPlan.choose(kind, n, v_tile, eps)
            out.append(Stage(kind, plan, [operand(a, op) for a in args], tag,
                             gamma=None if gamma is None else np.asarray(gamma, np.float32)))
        else:
            raise Q35cError(f"cerebras target: {op.name} is not mapped")
        names[op.results[0]] = tag
    else:
        raise Q35cError("cerebras target: the function has no func.return")
    if not out:
        raise Q35cError("cerebras target: the function computes nothing")
    return out, inputs, results


def _program_name(i: int, role: str) -> str:
    return f"s{i}_{role}"


def _vector_module(i: int, st: Stage, role: str, launches: tuple[str, ...]
                   ) -> csl.CslModuleOp:
    body = Block()
    prog = VectorProgram(st.plan, role)
    with ImplicitBuilder(body):
        params = csl.ParamOp("memcpy_params", csl.ComptimeStructType())
        memcpy = csl.ImportModuleConstOp("<memcpy/memcpy>", params)
        prog.declare()
        fn = csl.FuncOp(f"s{i}", ((), None))
        with ImplicitBuilder(fn.body.block):
            prog.body()
            csl.MemberCallOp("unblock_cmd_stream", None, memcpy.result, [])
            csl.ReturnOp()
        others = noop_functions(tuple(n for n in launches if n != f"s{i}"), memcpy.result)
        for name in (*st.plan.inputs(), *st.plan.constants(), "y"):
            elem = prog.bufs[name].type.get_element_type()
            ptr = csl.AddressOfOp(prog.bufs[name], csl.PtrType(
                elem, csl.PtrKindAttr(csl.PtrKind.MANY), csl.PtrConstAttr(csl.PtrConst.VAR)))
            csl.SymbolExportOp(name, ptr.res)
        for f in sorted((fn, *others), key=lambda f: launches.index(f.sym_name.data)):
            csl.SymbolExportOp(f.sym_name.data, f.function_type)
    return csl.CslModuleOp(regions=[Region(body)], properties={
        "kind": csl.ModuleKindAttr(csl.ModuleKind.PROGRAM),
        "sym_name": StringAttr(_program_name(i, role))})


def _idle_module(launches: tuple[str, ...]) -> csl.CslModuleOp:
    body = Block()
    with ImplicitBuilder(body):
        params = csl.ParamOp("memcpy_params", csl.ComptimeStructType())
        memcpy = csl.ImportModuleConstOp("<memcpy/memcpy>", params)
        for f in noop_functions(launches, memcpy.result):
            csl.SymbolExportOp(f.sym_name.data, f.function_type)
    return csl.CslModuleOp(regions=[Region(body)], properties={
        "kind": csl.ModuleKindAttr(csl.ModuleKind.PROGRAM), "sym_name": StringAttr("idle")})


def _launches(sts: list[Stage], decoded: bool) -> tuple[str, ...]:
    return (*(("decode",) if decoded else ()), *(f"s{i}" for i in range(len(sts))))


def graph_module(sts: list[Stage], decoded: bool) -> ModuleOp:
    """Every stage's programs, `idle` where the rectangle has PEs no stage uses, the layout."""
    launches = _launches(sts, decoded)
    mods = []
    for i, st in enumerate(sts):
        for role in st.plan.roles():
            if st.kind == "gemv":
                others = tuple(n for n in launches if n not in (f"s{i}", "decode"))
                mods.append(emit.program_module(st.plan, role, _program_name(i, role),
                                                f"s{i}", others))
            else:
                mods.append(_vector_module(i, st, role, launches))
    height = max(st.height for st in sts)
    if any(st.height < height for st in sts):
        mods.append(_idle_module(launches))
    module = ModuleOp([*mods, _layout(sts, height)])
    module.verify()
    return module


def _layout(sts: list[Stage], height: int) -> csl.CslModuleOp:
    width = sum(st.width for st in sts)
    body = Block()
    with ImplicitBuilder(body):
        w, h = _int(width), _int(height)
        get_params = csl.ImportModuleConstOp(
            "<memcpy/get_params>", csl.ConstStructOp(("width", w), ("height", h)))
        layout = csl.LayoutOp(Region(Block()))
        with ImplicitBuilder(layout.body.block):
            csl.SetRectangleOp(operands=[w, h])
            for i, st in enumerate(sts):
                for x in range(st.width):
                    xc = _int(st.x0 + x)
                    spans = [(0, st.height, _program_name(i, st.plan.role(x)))]
                    if st.height < height:
                        spans.append((st.height, height, "idle"))
                    for lo, hi, prog in spans:
                        loop = scf.ForOp(_int(lo), _int(hi), _int(1), [],
                                         Block(arg_types=[i16]))
                        with ImplicitBuilder(loop.body.block) as (y,):
                            mp = csl.MemberCallOp("get_params", csl.ComptimeStructType(),
                                                  get_params, [xc])
                            params = csl.ConstStructOp(("memcpy_params", mp))
                            csl.SetTileCodeOp(f"{prog}.csl", xc, y, params)
                            if prog != "idle":
                                rts = (emit.routes(st.plan, x) if st.kind == "gemv"
                                       else vector_routes(st.plan, x))
                                for color, rx, tx in rts:
                                    SetColorConfigOp(xc, y, color, rx, tx)
                            scf.YieldOp()
    return csl.CslModuleOp(regions=[Region(body)], properties={
        "kind": csl.ModuleKindAttr(csl.ModuleKind.LAYOUT),
        "sym_name": StringAttr("layout")})


def compile_graph(module: ModuleOp, store: WeightStore, entry: str | None, k_tile: int,
                  n_tile: int, v_tile: int, decoded: bool) -> GraphProject:
    fn = entry_function(module, entry)
    sts, inputs, results = stages(fn, store, k_tile, n_tile, v_tile, decoded)
    return project_of(sts, inputs, results, result_names(fn), decoded)


def project_of(sts: list[Stage], inputs: dict[str, tuple[int, ...]], results: list[str],
               names: list[str], decoded: bool = False) -> GraphProject:
    """Place the stages side by side (stage i from column x0) and build the csl IR."""
    x0 = 0
    for st in sts:
        st.x0, x0 = x0, x0 + st.width
    return GraphProject(sts, graph_module(sts, decoded), inputs, results, names,
                        x0, max(st.height for st in sts), decoded)


def numeric_mode(k_tile: int = 0, n_tile: int = 0, v_tile: int = 0) -> dict:
    """Interpreter overrides: the target's numeric mode for every op it maps (for
    `Interpreter(module, store, overrides=...)`; q35c.semantics.cerebras)."""

    def matmul(interp, op, args):
        k = args[0].shape[-1]
        plan = GemvPlan.choose(k, args[1].shape[1], args[1].group_size, k_tile, n_tile)
        return (matmul_q3p5_f16(args[0], args[1], plan.k_tile),)

    def rms(interp, op, args):
        n = args[0].shape[-1]
        vt = VectorPlan.choose("rms_norm", n, v_tile).v_tile
        return (mode.rms_norm_f32(args[0], args[1], op.epsilon.value.data, vt),)

    def softmax(interp, op, args):
        vt = VectorPlan.choose("softmax", args[0].shape[-1], v_tile).v_tile
        return (mode.softmax_f32(args[0], vt),)

    return {quant3p5.MatmulOp: matmul, q35nn.RMSNormOp: rms, q35nn.SoftmaxOp: softmax,
            q35nn.SiluOp: lambda interp, op, args: (mode.silu_f32(args[0]),),
            q35nn.SwigluOp: lambda interp, op, args: (mode.swiglu_f32(*args),)}


def simulate_graph(project: GraphProject, machine: Machine, inputs: dict[str, np.ndarray],
                   seed: int) -> tuple[dict[str, np.ndarray], Simulation, list[int]]:
    """Check, load, then launch every stage in order; the function's results by name, the
    simulation and each stage's cycles."""
    layout = check(project.csl, machine)
    sim = Simulation(project.csl, layout, machine, seed)
    data = project.host_data()
    values = {name: np.asarray(v, np.float32).reshape(-1) for name, v in inputs.items()}
    for i, st in enumerate(project.stages):
        for x in range(st.width):
            for y in range(st.height):
                pe = (st.x0 + x, y)
                if st.kind == "gemv":
                    for name in TABLES:
                        sim.load(*pe, name, data[name])
                    for name in WEIGHT_ARRAYS:
                        sim.load(*pe, name, data[f"s{i}/{x}_{y}/{name}"])
                elif st.gamma is not None:
                    sim.load(*pe, "g", _slice(st.plan, data[f"s{i}/g"], x))
                elif "pow2" in st.plan.constants():
                    sim.load(*pe, "pow2", data["pow2"])
    cycles = []
    if project.decoded:
        sim.load_cycles = sim.run("decode")
        sim.restart()
    for i, st in enumerate(project.stages):
        ins = [values[name] for name in st.inputs]
        for x in range(st.width):
            for y in range(st.height):
                pe = (st.x0 + x, y)
                if st.kind == "gemv":
                    sim.load(*pe, "x", x_slice(st.plan, ins[0], x))
                else:
                    for name, v in zip(st.plan.inputs(), ins):
                        sim.load(*pe, name, _slice(st.plan, _padded(st.plan, v), x))
        cycles.append(sim.run(f"s{i}"))
        sim.restart()
        if st.kind == "gemv":
            last = st.x0 + st.width - 1
            y = np.concatenate([sim.pes[(last, j)].memory["y"] for j in range(st.height)])
            values[st.output] = y[:st.plan.n].copy()
        else:
            y = np.concatenate([sim.pes[(st.x0 + x, 0)].memory["y"]
                                for x in range(st.width)])
            values[st.output] = y[:st.plan.n].copy()
    sim.cycles = sum(cycles)
    outs = {name: values[v].reshape(1, -1) for name, v in zip(project.output_names,
                                                              project.outputs)}
    return outs, sim, cycles


def _slice(plan: VectorPlan, padded: np.ndarray, x: int) -> np.ndarray:
    return padded[x * plan.v_tile:(x + 1) * plan.v_tile]


RUN_PY = '''#!/usr/bin/env cs_python
"""Host program for {name} (Cerebras SDK style; written by q35c, not run here: no SDK).

    cs_python run.py --name out   # after: cslc layout.csl --fabric-dims={fw},{fh} \\\\
                                  #   --fabric-offsets=4,1 --memcpy --channels=1 -o out

Copies the constants once (host.npz: packed tiles, tables, gammas){decode_doc}, then per
stage of project.json: copies its inputs into its PEs, launches `s<i>`, and reads its
output back (vectors go from stage to stage through the host).
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
parser.add_argument("inputs", nargs="*", help="NAME=FILE.npy for each input ([1, D])")
args = parser.parse_args()
project = json.load(open("project.json"))
data = np.load("host.npz")
values = {{}}
for item in args.inputs:
    key, path = item.split("=", 1)
    values[key] = np.load(path).astype(np.float32).reshape(-1)

runner = SdkRuntime(args.name, cmaddr=None)
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


def d2h(symbol, px, py, count):
    out = np.zeros(count, np.uint32)
    runner.memcpy_d2h(out, runner.get_id(symbol), px, py, 1, 1, count, streaming=False,
                      data_type=MemcpyDataType.MEMCPY_32BIT, order=MemcpyOrder.ROW_MAJOR,
                      nonblock=False)
    return out.view(np.float32)


def tile(v, size, i):
    out = np.zeros(size, np.float32)
    part = v[i * size:(i + 1) * size]
    out[:part.size] = part
    return out


stages = project["stages"]
for i, st in enumerate(stages):  # constants, once
    for x in range(st["width"]):
        for y in range(st["height"]):
            pe = (st["x0"] + x, y)
            if st["kind"] == "gemv":
                for name in ("cb0", "cb1", "steps", "grid"):
                    h2d(name, *pe, data[name])
                for name in ("payload", "meta", "ss", "ob", "os"):
                    h2d(name, *pe, data[f"s{{i}}/{{x}}_{{y}}/{{name}}"])
            elif st["kind"] == "rms_norm":
                h2d("g", *pe, tile(data[f"s{{i}}/g"], st["v_tile"], x))
            elif st["kind"] in ("silu", "swiglu", "softmax"):
                h2d("pow2", *pe, data["pow2"])
{decode}for i, st in enumerate(stages):
    ins = [values[name] for name in st["inputs"]]
    for x in range(st["width"]):
        for y in range(st["height"]):
            pe = (st["x0"] + x, y)
            if st["kind"] == "gemv":
                h2d("x", *pe, tile(ins[0], st["k_tile"], x))
            else:
                for name, v in zip(("a", "b"), ins):
                    h2d(name, *pe, tile(v, st["v_tile"], x))
    runner.launch(f"s{{i}}", nonblock=False)
    if st["kind"] == "gemv":
        last = st["x0"] + st["width"] - 1
        y = np.concatenate([d2h("y", last, j, st["n_tile"]) for j in range(st["height"])])
    else:
        y = np.concatenate([d2h("y", st["x0"] + x, 0, st["v_tile"])
                            for x in range(st["width"])])
    values[st["output"]] = y[:st["n"]]
runner.stop()
for name, value in zip(project["outputs"], project["output_values"]):
    np.save(f"{{name}}.npy", values[value].reshape(1, -1))
'''


def stage_summary(st: Stage) -> dict:
    p = st.plan
    out = {"kind": st.kind, "inputs": st.inputs, "output": st.output, "x0": st.x0,
           "width": st.width, "height": st.height, "n": p.n}
    if st.kind == "gemv":
        out.update({"k": p.k, "k_tile": p.k_tile, "n_tile": p.n_tile})
    else:
        out["v_tile"] = p.v_tile
    return out


def write_graph(project: GraphProject, machine: Machine, out_dir: Path, stem: str) -> dict:
    """layout.csl, s<i>_<role>.csl (and idle.csl), run.py, host.npz, project.json."""
    layout = check(project.csl, machine)
    files = csl_files(project.csl)
    for name, text in files.items():
        parse_csl(text, name)
    for name, text in files.items():
        (out_dir / name).write_text(text)
    np.savez(out_dir / "host.npz", **project.host_data())
    decode = ('runner.launch("decode", nonblock=False)  # once, at load time\n'
              if project.decoded else "")
    (out_dir / "run.py").write_text(RUN_PY.format(
        name=stem, decode=decode, fw=project.width + 7, fh=project.height + 2,
        decode_doc=", launches `decode` once" if project.decoded else ""))
    memory = {name: memory_use(prog, machine) for name, prog in programs(project.csl).items()}
    summary = {
        "machine": machine.name,
        "pe_memory_capacity": machine.pe_memory_bytes,
        "plan": {"width": project.width, "height": project.height,
                 **({"weights": "decoded"} if project.decoded else {})},
        "stages": [stage_summary(st) for st in project.stages],
        "inputs": {k: list(v) for k, v in project.inputs.items()},
        "outputs": project.output_names, "output_values": project.outputs,
        "files": sorted(files),
        "pe_memory_bytes": {name: sum(use.values()) for name, use in memory.items()},
        "pe_memory_parts": memory,
        "routes": len(layout.routes),
        "grid": [[layout.tiles[(x, y)] for y in range(project.height)]
                 for x in range(project.width)],
        "traffic": {str(c): t for c, t in sorted(layout.traffic.items())},
    }
    (out_dir / "project.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
