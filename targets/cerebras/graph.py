"""A batch-1 decode-step graph of several ops as one CSL program: every op is a *stage* on
its own PE region, and the host chains them.

    func (quant3p5.matmul, q35nn.rms_norm/silu/swiglu/softmax/gather/attention,
          arith.addf/mulf/negf on one row; reshapes, transposes, broadcasts, slices, concats)
    --stages()--> [GEMV plans (plan.py), vector plans (vector.py), gathers (gather.py),
                   attention (attention.py), moves (moves.py: the host's, no PEs)],
                  regions side by side
    --graph_module()--> csl IR: programs s<i>_<role> (and `idle`), one layout

Stage i occupies columns [x0, x0 + width) and rows [0, height) of the rectangle; PEs of the
rectangle that no stage uses run `idle.csl`. Every program defines the launch function of
every stage (`s0`, `s1`, ...): its own stage's does the work, the others only hand the
command stream back, because a memcpy launch reaches every PE. **Vectors move between
stages through the host**: after launching `s<i>`, run.py reads the stage's output (the
east-most column of a GEMV, every PE of a vector stage) with memcpy_d2h and copies it into
the next stages' input arrays with memcpy_h2d; the values never change on the way (32-bit
copies), so the chain adds no rounding. Data movement between stages (a reshape, a
transpose, a broadcast, a slice, a concatenation) is a *move*: an index map the host
applies on the way. The host's copies and moves are not in the cycle count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from xdsl.builder import ImplicitBuilder
from xdsl.dialects import arith, csl, func, scf, tensor
from xdsl.dialects.builtin import Float32Type, ModuleOp, StringAttr, TensorType, i16
from xdsl.ir import Block, Region, SSAValue

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.entry import argument_names, entry_function, result_names
from q35c.compiler.quant import Q3P5Tensor
from q35c.compiler.tensors import constant_value
from q35c.compiler.weights import WeightStore
from q35c.dialects import q35nn, quant3p5
from q35c.semantics import cerebras as mode, matmul_q3p5_f16, matmul_q3p5_w16
from q35c.targets.cerebras import emit
from q35c.targets.cerebras.attention import (
    AttentionPlan,
    AttentionProgram,
    check_decode,
    host_inputs as attention_inputs,
)
from q35c.targets.cerebras.emit import _int, noop_functions
from q35c.targets.cerebras.gather import GatherPlan, GatherProgram, row_number, table_slice
from q35c.targets.cerebras.host import HostPlan, evaluate, host_module, is_host_op
from q35c.targets.cerebras.machine import Machine
from q35c.targets.cerebras.moves import (
    MOVE_OPS,
    MovePlan,
    apply as apply_move,
    data_operands,
    index_map,
    shape_of,
)
from q35c.targets.cerebras.ops import SetColorConfigOp
from q35c.targets.cerebras.parse import parse_csl
from q35c.targets.cerebras.plan import GemvPlan, tiles_data, x_slice
from q35c.targets.cerebras.printer import csl_files
from q35c.targets.cerebras.project import RUNTIME_PY, decoding_tables, names_tuple
from q35c.targets.cerebras.simulate import Simulation, check, memory_use, programs
from q35c.targets.cerebras.vector import VectorPlan, VectorProgram, routes as vector_routes

HOST_KINDS = ("move", "host")
"""Stages the host does between launches (no PEs, no cycles)."""
VECTOR_OPS = {q35nn.SiluOp: "silu", q35nn.SwigluOp: "swiglu", arith.AddfOp: "add",
              arith.MulfOp: "mul", arith.NegfOp: "neg", q35nn.RMSNormOp: "rms_norm",
              q35nn.SoftmaxOp: "softmax"}


@dataclass
class Stage:
    kind: str
    """"gemv", a vector kind (vector.KINDS), "gather", "attention" or "move" (the host's
    data movement, moves.py: no PEs)."""
    plan: GemvPlan | VectorPlan | GatherPlan | MovePlan
    inputs: list[str]
    """Host values read by the stage: x (GEMV), a and b (vector ops), the row number
    (gather), q, k, v and the mask (attention), the moved values (move)."""
    output: str
    x0: int = 0
    weights: Q3P5Tensor | None = None
    gamma: np.ndarray | None = None
    """RMSNorm's gamma, or the gather's table."""
    shapes: tuple[tuple[int, ...], ...] = ()
    """Attention: the shapes of q and of the mask (the host broadcasts it)."""

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
    """Function argument name -> shape."""
    outputs: list[str]
    """Host value of each function result."""
    output_names: list[str]
    width: int
    height: int
    weights: str = "packed"
    """The GEMV stages' weight mode (plan.WEIGHT_MODES)."""
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    """Host values that are constants of the function (a RoPE table, a mask)."""
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """The shape of every host value (inputs, constants, stage outputs)."""

    def host_data(self) -> dict[str, np.ndarray]:
        """What run.py copies in once: decoding tables, each GEMV PE's packed tile
        ('s<i>/<x>_<y>/<symbol>', x and y within the stage), gammas, gather tables and the
        pow2 table; the moves' index maps ('s<i>/index') and the constants ('const/<name>')
        the host uses between launches."""
        out = {**(decoding_tables() if self.weights != "f16" else {}), "pow2": mode.POW2}
        for i, st in enumerate(self.stages):
            if st.kind == "gemv":
                for (x, y), arrs in tiles_data(st.plan, st.weights):
                    for name, arr in arrs.items():
                        out[f"s{i}/{x}_{y}/{name}"] = arr
            elif st.kind == "gather":
                for x in range(st.width):
                    for y in range(st.height):
                        out[f"s{i}/{x}_{y}/tab"] = table_slice(st.plan, st.gamma, x, y)
            elif st.kind == "move":
                out[f"s{i}/index"] = st.plan.index
            elif st.kind == "host":
                continue
            elif st.gamma is not None:
                out[f"s{i}/g"] = _padded(st.plan, st.gamma)
        for name, value in self.constants.items():
            out[f"const/{name}"] = value
        return out


def _padded(plan: VectorPlan, v: np.ndarray) -> np.ndarray:
    out = np.zeros(plan.width * plan.v_tile, np.float32)
    flat = np.asarray(v, np.float32).reshape(-1)
    out[:flat.size] = flat
    return out


def _size(value: SSAValue, what: str) -> int:
    shape = shape_of(value)
    if not isinstance(value.type.get_element_type(), Float32Type):
        raise Q35cError(f"cerebras target: {what} of element type "
                        f"{value.type.get_element_type()}: float32 only")
    return int(np.prod(shape, dtype=np.int64))


def _row(value: SSAValue, what: str) -> int:
    """The length of a value that is one row (all leading dimensions 1)."""
    shape = shape_of(value)
    n = _size(value, what)
    if not shape or shape[-1] != n:
        raise Q35cError(f"cerebras target: {what} of shape {tuple(shape)}: only one row "
                        "([1, ..., D]: batch 1, one token) is mapped")
    return n


def _grouping(by_output: dict[str, Stage], name: str, heads: int,
              per_head: int) -> tuple[str, int]:
    """(source, group) if host value `name` ([heads, per_head] flat) is a move that
    repeats each row of a [heads / group, per_head] source `group` times (repeat_kv of
    grouped-query attention), else (name, 1)."""
    st = by_output.get(name)
    if st is None or st.kind != "move" or len(st.inputs) != 1:
        return name, 1
    src = st.inputs[0]
    size = int(st.plan.index.max()) + 1 if st.plan.index.size else 0
    if size == 0 or (heads * per_head) % size or size % per_head:
        return name, 1
    kv = size // per_head
    if heads % kv:
        return name, 1
    group = heads // kv
    want = np.repeat(np.arange(size).reshape(kv, per_head), group, axis=0).reshape(-1)
    if group > 1 and np.array_equal(st.plan.index, want):
        return src, group
    return name, 1


def stages(fn: func.FuncOp, store: WeightStore, k_tile: int, n_tile: int, v_tile: int,
           weight_mode: str) -> tuple[list[Stage], dict[str, tuple[int, ...]], list[str],
                                   dict[str, np.ndarray], dict[str, tuple[int, ...]]]:
    """The function's ops in order as stages; its inputs; the host value of each result;
    the constants the host holds; every host value's shape."""
    names: dict[SSAValue, str] = {}
    inputs = {}
    shapes: dict[str, tuple[int, ...]] = {}
    host_only: set[str] = set()
    """Values the host has without any PE stage: inputs, constants, host stages' results."""
    for arg, name in zip(fn.body.block.args, argument_names(fn)):
        inputs[name] = shapes[name] = shape_of(arg)
        names[arg] = name
        host_only.add(name)
    weights: dict[SSAValue, object] = {}
    consts: dict[str, np.ndarray] = {}
    out: list[Stage] = []
    by_output: dict[str, Stage] = {}

    def operand(v: SSAValue, op) -> str:
        if v not in names and isinstance(weights.get(v), np.ndarray):  # a host constant
            names[v] = f"c{len(consts)}"
            const = np.asarray(weights[v])  # integers and booleans (a host stage's) stay
            consts[names[v]] = (const.astype(np.float32) if const.dtype.kind == "f"
                                else const).reshape(-1)
            host_only.add(names[v])
            shapes[names[v]] = tuple(np.shape(weights[v]))
        if v not in names:
            raise Q35cError(f"cerebras target: {op.name} reads a value that is neither a "
                            "function argument, a constant nor a mapped op's result")
        return names[v]

    def add(stage: Stage, op) -> None:
        out.append(stage)
        by_output[stage.output] = stage
        names[op.results[0]] = stage.output
        shapes[stage.output] = shape_of(op.results[0])

    on_host = _host_side(fn)
    for op in fn.body.block.ops:
        if isinstance(op, quant3p5.WeightOp):
            weights[op.results[0]] = store[op.weight_name.data]
            continue
        if isinstance(op, arith.ConstantOp):  # a folded small initializer (a gamma)
            if isinstance(op.result.type, TensorType):
                weights[op.result] = np.asarray(constant_value(op.value, op.result.type))
            continue
        if isinstance(op, tensor.EmptyOp):  # the init of a linalg move: no data
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
            k = _row(op.operands[0], "quant3p5.matmul input")
            plan = GemvPlan.choose(k, w.shape[1], w.group_size, k_tile, n_tile, weight_mode)
            add(Stage("gemv", plan, [operand(op.operands[0], op)], tag, weights=w), op)
        elif isinstance(op, MOVE_OPS):
            srcs = [operand(v, op) for v in data_operands(op)]
            index = index_map(op)
            prev = by_output.get(srcs[0])
            if len(srcs) == 1 and prev is not None and prev.kind == "move" and \
                    len(prev.inputs) == 1:  # compose moves of one source
                srcs, index = list(prev.inputs), prev.plan.index[index]
            add(Stage("move", MovePlan(index), srcs, tag), op)
            if all(s in host_only for s in srcs):
                host_only.add(tag)
        elif isinstance(op, q35nn.GatherOp):
            table = weights.get(op.operands[0])
            if not isinstance(table, np.ndarray) or table.ndim != 2 or \
                    op.axis.value.data != 0:
                raise Q35cError("cerebras target: q35nn.gather must read rows (axis 0) of a "
                                "float [V, D] quant3p5.weight or constant")
            plan = GatherPlan.choose(table.shape[0], table.shape[1])
            if int(np.prod(shape_of(op.operands[1]))) != 1:
                raise Q35cError(f"cerebras target: q35nn.gather of "
                                f"{tuple(shape_of(op.operands[1]))} indices: one token per "
                                "decode step is mapped")
            add(Stage("gather", plan, [operand(op.operands[1], op)], tag,
                      gamma=np.asarray(table, np.float32)), op)
        elif isinstance(op, q35nn.AttentionOp):
            q_shape, k_shape = shape_of(op.query), shape_of(op.key)
            check_decode(q_shape)
            d, dv, s_len = q_shape[-1], shape_of(op.values)[-1], k_shape[-2]
            heads = int(np.prod(q_shape[:-2], dtype=np.int64))
            args = [operand(v, op) for v in (op.query, op.key, op.values)]
            args[1], group = _grouping(by_output, args[1], heads, s_len * d)
            args[2], gv = _grouping(by_output, args[2], heads, s_len * dv)
            if gv != group:  # keys and values must share the grouping
                args[1:3] = [operand(op.key, op), operand(op.values, op)]
                group = 1
            mask_shape = ()
            if op.mask is not None:
                args.append(operand(op.mask, op))
                mask_shape = shape_of(op.mask)
            plan = AttentionPlan.make(s_len, heads // group, group, d, dv,
                                      op.scale.value.data, op.mask is not None, v_tile)
            add(Stage("attention", plan, args, tag, shapes=(q_shape, mask_shape)), op)
        elif type(op) in VECTOR_OPS and op.results[0] in on_host:  # feeds a host stage
            add(Stage("host", HostPlan(op), [operand(v, op) for v in op.operands], tag), op)
            host_only.add(tag)
        elif type(op) in VECTOR_OPS:
            kind = VECTOR_OPS[type(op)]
            n = _size(op.results[0], op.name)
            gamma = None
            args = list(op.operands)
            if kind == "rms_norm":
                n = _row(op.results[0], op.name)
                gamma = weights.get(op.operands[1])
                if not isinstance(gamma, np.ndarray) or gamma.shape != (n,):
                    raise Q35cError("cerebras target: q35nn.rms_norm gamma must be a float "
                                    f"quant3p5.weight or constant of shape ({n},)")
                args = args[:1]
            if kind == "softmax":
                n = _row(op.results[0], op.name)
                if op.axis.value.data not in (-1, len(shape_of(op.results[0])) - 1):
                    raise Q35cError("cerebras target: q35nn.softmax over an axis other "
                                    "than the last is not mapped")
            for a in args:
                if shape_of(a) != shape_of(op.results[0]):
                    raise Q35cError(f"cerebras target: {op.name} operands of different "
                                    "shapes (a broadcast must be explicit: linalg.broadcast)")
            eps = op.epsilon.value.data if kind == "rms_norm" else 0.0
            plan = VectorPlan.choose(kind, n, v_tile, eps)
            add(Stage(kind, plan, [operand(a, op) for a in args], tag,
                      gamma=None if gamma is None else np.asarray(gamma, np.float32)), op)
        elif is_host_op(op) and len(op.results) == 1:
            srcs = [operand(v, op) for v in op.operands]
            if not all(s in host_only for s in srcs):
                raise Q35cError(f"cerebras target: {op.name} reads a value computed on "
                                "the PEs (only the step's inputs and constants are "
                                "prepared on the host)")
            add(Stage("host", HostPlan(op), srcs, tag), op)
            host_only.add(tag)
        else:
            raise Q35cError(f"cerebras target: {op.name} is not mapped")
    else:
        raise Q35cError("cerebras target: the function has no func.return")
    out = _live(out, results)
    if not any(st.kind not in HOST_KINDS for st in out):
        raise Q35cError("cerebras target: the function computes nothing on the PEs")
    return out, inputs, results, consts, shapes


def _host_side(fn: func.FuncOp) -> set[SSAValue]:
    """Results of elementwise ops (add, mul, neg) the host computes: those that read only
    inputs and constants (through moves and host ops) and whose result a host op reads,
    directly or through moves (the position times the RoPE frequencies, before cos)."""
    ops = list(fn.body.block.ops)
    free = set(fn.body.block.args)
    for op in ops:
        if isinstance(op, (quant3p5.WeightOp, arith.ConstantOp, tensor.EmptyOp)) or (
                isinstance(op, MOVE_OPS + tuple(VECTOR_OPS)) or is_host_op(op)) and \
                all(v in free for v in op.operands):
            free.update(op.results)
    needed: set[SSAValue] = set()
    for op in reversed(ops):
        if is_host_op(op) or (isinstance(op, MOVE_OPS + tuple(VECTOR_OPS))
                              and op.results and op.results[0] in needed):
            needed.update(v for v in op.operands if v in free)
    return {v for v in needed if isinstance(v.owner, tuple(VECTOR_OPS))}


def _live(sts: list[Stage], results: list[str]) -> list[Stage]:
    """The stages whose outputs are used (moves composed into later moves are not)."""
    used = set(results)
    keep = []
    for st in reversed(sts):
        if st.output in used or st.kind not in HOST_KINDS:
            keep.append(st)
            used.update(st.inputs)
    return keep[::-1]


def _program_name(i: int, role: str) -> str:
    return f"s{i}_{role}"


def _vector_module(i: int, st: Stage, role: str, launches: tuple[str, ...]
                   ) -> csl.CslModuleOp:
    body = Block()
    prog = {"gather": GatherProgram, "attention": AttentionProgram}.get(
        st.kind, VectorProgram)(st.plan, role)
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
        out = "o" if st.kind == "attention" else "y"
        for name in (*st.plan.inputs(), *st.plan.constants(), out):
            if name not in prog.bufs:  # the attention output lives on the last PEs only
                continue
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
    """The launch functions: `decode` (decoded weights), one per stage with PEs."""
    return (*(("decode",) if decoded else ()),
            *(f"s{i}" for i, st in enumerate(sts) if st.kind not in HOST_KINDS))


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
                  n_tile: int, v_tile: int, weights: str = "packed") -> GraphProject:
    fn = entry_function(module, entry)
    sts, inputs, results, consts, shapes = stages(fn, store, k_tile, n_tile, v_tile, weights)
    return project_of(sts, inputs, results, result_names(fn), weights, consts, shapes)


def project_of(sts: list[Stage], inputs: dict[str, tuple[int, ...]], results: list[str],
               names: list[str], weights: str = "packed",
               constants: dict[str, np.ndarray] | None = None,
               shapes: dict[str, tuple[int, ...]] | None = None) -> GraphProject:
    """Place the stages side by side (stage i from column x0) and build the csl IR."""
    x0 = 0
    for st in sts:
        st.x0, x0 = x0, x0 + st.width
    return GraphProject(sts, graph_module(sts, weights == "decoded"), inputs, results,
                        names, x0, max(st.height for st in sts), weights, constants or {},
                        shapes or {})


def numeric_mode(k_tile: int = 0, n_tile: int = 0, v_tile: int = 0,
                 weights: str = "packed") -> dict:
    """Interpreter overrides: the target's numeric mode for every op it maps (for
    `Interpreter(module, store, overrides=...)`; q35c.semantics.cerebras)."""
    gemv = matmul_q3p5_w16 if weights == "f16" else matmul_q3p5_f16

    def matmul(interp, op, args):
        k = args[0].shape[-1]
        plan = GemvPlan.choose(k, args[1].shape[1], args[1].group_size, k_tile, n_tile,
                               weights)
        return (gemv(args[0], args[1], plan.k_tile),)

    def rms(interp, op, args):
        n = args[0].shape[-1]
        vt = VectorPlan.choose("rms_norm", n, v_tile).v_tile
        return (mode.rms_norm_f32(args[0], args[1], op.epsilon.value.data, vt),)

    def softmax(interp, op, args):
        vt = VectorPlan.choose("softmax", args[0].shape[-1], v_tile).v_tile
        return (mode.softmax_f32(args[0], vt),)

    def attention(interp, op, args):
        q, k, v, *mask = args
        check_decode(q.shape)
        plan = AttentionPlan.make(k.shape[-2], 1, 1, q.shape[-1], v.shape[-1],
                                  op.scale.value.data, bool(mask), v_tile)
        return (mode.attention_f32(q, k, v, mask[0] if mask else None, plan.scale,
                                   plan.v_tile),)

    return {quant3p5.MatmulOp: matmul, q35nn.RMSNormOp: rms, q35nn.SoftmaxOp: softmax,
            q35nn.AttentionOp: attention,
            q35nn.SiluOp: lambda interp, op, args: (mode.silu_f32(args[0]),),
            q35nn.SwigluOp: lambda interp, op, args: (mode.swiglu_f32(*args),)}


def pe_constants(i: int, st: Stage, data: dict[str, np.ndarray]):
    """(PE within the stage, array, values) the host copies once, before any launch."""
    for x in range(st.width):
        for y in range(st.height):
            if st.kind == "gemv":
                for name in st.plan.tables():
                    yield (x, y), name, data[name]
                for name in st.plan.weight_arrays():
                    yield (x, y), name, data[f"s{i}/{x}_{y}/{name}"]
            elif st.kind == "gather":
                yield (x, y), "tab", data[f"s{i}/{x}_{y}/tab"]
            elif st.gamma is not None:
                yield (x, y), "g", _slice(st.plan, data[f"s{i}/g"], x)
            elif "pow2" in st.plan.constants():
                yield (x, y), "pow2", data["pow2"]


def pe_inputs(st: Stage, ins: list[np.ndarray]):
    """(PE within the stage, array, values) the host copies before launching the stage."""
    if st.kind == "attention":
        plan, (q_shape, mask_shape) = st.plan, st.shapes
        heads, s_len = plan.heads, plan.n
        q = ins[0].reshape(heads, plan.d)
        k = ins[1].reshape(plan.kv_heads, s_len, plan.d)
        v = ins[2].reshape(plan.kv_heads, s_len, plan.dv)
        mask = None
        if plan.masked:  # the host broadcasts the mask to the scores' shape
            scores = (*q_shape[:-1], s_len)
            mask = np.broadcast_to(ins[3].reshape(mask_shape), scores).reshape(heads, s_len)
        for pe, arrs in attention_inputs(plan, q, k, v, mask).items():
            for name, arr in arrs.items():
                yield pe, name, arr
        return
    for x in range(st.width):
        for y in range(st.height):
            if st.kind == "gemv":
                yield (x, y), "x", x_slice(st.plan, ins[0], x)
            elif st.kind == "gather":
                block, row = row_number(st.plan, ins[0])
                yield (x, y), "idx", np.array([row if y == block else 0], np.int16)
            else:
                for name, v in zip(st.plan.inputs(), ins):
                    yield (x, y), name, _slice(st.plan, _padded(st.plan, v), x)


def stage_output(st: Stage, read, ins: list[np.ndarray]) -> np.ndarray:
    """The stage's output as a flat host vector; `read(x, y, name)` reads a PE's array
    (x, y within the stage); `ins`: the stage's inputs."""
    if st.kind == "gather":  # the PE row that holds the token's row
        block = row_number(st.plan, ins[0])[0]
        return np.concatenate([read(x, block, "y") for x in range(st.width)])[:st.plan.n]
    if st.kind == "gemv":
        y = np.concatenate([read(st.width - 1, j, "y") for j in range(st.height)])
    elif st.kind == "attention":  # every head's context, in head order
        return np.concatenate([read(st.width - 1, j, "o") for j in range(st.height)])
    else:
        y = np.concatenate([read(x, 0, "y") for x in range(st.width)])
    return y[:st.plan.n].copy()


def simulate_graph(project: GraphProject, machine: Machine, inputs: dict[str, np.ndarray],
                   seed: int) -> tuple[dict[str, np.ndarray], Simulation, list[int]]:
    """Check, load, then launch every stage in order (a move is the host's, between
    launches); the function's results by name, the simulation and each PE stage's cycles."""
    layout = check(project.csl, machine)
    sim = Simulation(project.csl, layout, machine, seed)
    data = project.host_data()
    values = {name: np.asarray(v).reshape(-1) for name, v in inputs.items()}
    values.update(project.constants)
    for i, st in enumerate(project.stages):
        for (x, y), name, arr in pe_constants(i, st, data):
            sim.load(st.x0 + x, y, name, arr)
    cycles = []
    if project.weights == "decoded":
        sim.load_cycles = sim.run("decode")
        sim.restart()
    for i, st in enumerate(project.stages):
        ins = [values[name] for name in st.inputs]
        if st.kind == "move":
            values[st.output] = apply_move(st.plan, ins)
            continue
        if st.kind == "host":
            args = [np.asarray(v).reshape(project.shapes[name])
                    for v, name in zip(ins, st.inputs)]
            values[st.output] = evaluate(st.plan.op, args).reshape(-1)
            continue
        ins = [v if st.kind == "gather" else np.asarray(v, np.float32) for v in ins]
        for (x, y), name, arr in pe_inputs(st, ins):
            sim.load(st.x0 + x, y, name, arr)
        cycles.append(sim.run(f"s{i}"))
        sim.restart()
        values[st.output] = stage_output(
            st, lambda x, y, name, st=st: sim.pes[(st.x0 + x, y)].memory[name], ins)
    sim.cycles = sum(cycles)
    outs = {}
    for name, v in zip(project.output_names, project.outputs):
        shape = project.shapes.get(v, (1, -1))
        outs[name] = np.asarray(values[v], np.float32).reshape(shape)
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
    values[key] = np.load(path).reshape(-1)  # token numbers stay integers
    if values[key].dtype.kind == "f":
        values[key] = values[key].astype(np.float32)

{runtime}

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
host_ops = None
if any(st["kind"] == "host" for st in stages):  # input preparation: q35c's interpreter
    from q35c.compiler.context import make_context
    from q35c.compiler.weights import WeightStore
    from q35c.semantics import Interpreter
    from xdsl.parser import Parser

    host_ops = Interpreter(Parser(make_context(), open("host_ops.mlir").read())
                           .parse_module(), WeightStore())
for name in project["constants"]:  # host values that are constants (tables, masks)
    values[name] = data[f"const/{{name}}"]
for i, st in enumerate(stages):  # constants, once
    for x in range(st["width"]):
        for y in range(st["height"]):
            pe = (st["x0"] + x, y)
            if st["kind"] == "gemv":
                for name in {tables}:
                    h2d(name, *pe, data[name])
                for name in {arrays}:
                    h2d(name, *pe, data[f"s{{i}}/{{x}}_{{y}}/{{name}}"])
            elif st["kind"] == "gather":
                h2d("tab", *pe, data[f"s{{i}}/{{x}}_{{y}}/tab"])
            elif st["kind"] == "rms_norm":
                h2d("g", *pe, tile(data[f"s{{i}}/g"], st["v_tile"], x))
            elif st["kind"] in ("silu", "swiglu", "softmax", "attention"):
                h2d("pow2", *pe, data["pow2"])
{decode}

def attention_inputs(st, q, k, v, mask):
    """Per PE of an attention stage: its query rows, keys, values (and mask) (attention.py)."""
    t, g, n = st["v_tile"], st["group"], st["n"]
    heads = st["kv_heads"] * g
    q, k = q.reshape(heads, st["d"]), k.reshape(st["kv_heads"], n, st["d"])
    v = v.reshape(st["kv_heads"], n, st["dv"])
    if mask is not None:
        scores = [*st["q_shape"][:-1], n]
        mask = np.broadcast_to(mask.reshape(st["mask_shape"]), scores).reshape(heads, n)
    for y in range(st["kv_heads"]):
        for x in range(st["width"]):
            pe, lo = (st["x0"] + x, y), x * t
            h2d("q", *pe, np.ascontiguousarray(q[y * g:(y + 1) * g]).reshape(-1))
            kk = np.zeros((st["d"], t), np.float32)  # transposed: row c, every token
            part = k[y, lo:lo + t]
            kk[:, :part.shape[0]] = part.T
            h2d("k", *pe, kk.reshape(-1))
            h2d("v", *pe, tile(v[y].reshape(-1), t * st["dv"], x))
            if mask is not None:
                m = np.zeros((g, t), np.float32)
                part = mask[y * g:(y + 1) * g, lo:lo + t]
                m[:, :part.shape[1]] = part
                h2d("m", *pe, m.reshape(-1))


for i, st in enumerate(stages):
    ins = [values[name] for name in st["inputs"]]
    if st["kind"] == "move":  # data movement between stages: the host's
        values[st["output"]] = np.concatenate([v.reshape(-1) for v in ins])[
            data[f"s{{i}}/index"]]
        continue
    if st["kind"] == "host":  # host_ops.mlir's function s<i>, by q35c's interpreter
        args = [np.asarray(v).reshape(project["shapes"][name])
                for v, name in zip(ins, st["inputs"])]
        (out,) = host_ops.call(host_ops.function(f"s{{i}}"), args)
        values[st["output"]] = np.asarray(out).reshape(-1)
        continue
    if st["kind"] == "attention":
        attention_inputs(st, *ins[:3], ins[3] if st["masked"] else None)
    for x in range(st["width"]):
        for y in range(st["height"]):
            pe = (st["x0"] + x, y)
            if st["kind"] == "gemv":
                h2d("x", *pe, tile(ins[0], st["k_tile"], x))
            elif st["kind"] == "gather":  # the row within its block, on the block's PEs
                row = int(ins[0].reshape(-1)[0])
                assert -st["rows"] <= row < st["rows"], f"token {{row}} out of range"
                block, row = divmod(row % st["rows"], st["block"])
                h2d("idx", *pe, np.array([row if y == block else 0], np.int16))
            elif st["kind"] != "attention":
                for name, v in zip(("a", "b"), ins):
                    h2d(name, *pe, tile(v, st["v_tile"], x))
    runner.launch(f"s{{i}}", nonblock=False)
    if st["kind"] == "gemv":
        last = st["x0"] + st["width"] - 1
        y = np.concatenate([d2h("y", last, j, st["n_tile"]) for j in range(st["height"])])
    elif st["kind"] == "gather":
        block = (int(ins[0].reshape(-1)[0]) % st["rows"]) // st["block"]
        y = np.concatenate([d2h("y", st["x0"] + x, block, st["v_tile"])
                            for x in range(st["width"])])
    elif st["kind"] == "attention":
        last, size = st["x0"] + st["width"] - 1, st["group"] * st["dv"]
        y = np.concatenate([d2h("o", last, j, size) for j in range(st["height"])])
    else:
        y = np.concatenate([d2h("y", st["x0"] + x, 0, st["v_tile"])
                            for x in range(st["width"])])
    values[st["output"]] = y if st["kind"] == "attention" else y[:st["n"]]
runner.stop()
for name, value in zip(project["outputs"], project["output_values"]):
    np.save(f"{{name}}.npy", values[value].reshape(project["shapes"][value]))
'''


def stage_summary(st: Stage) -> dict:
    p = st.plan
    out = {"kind": st.kind, "inputs": st.inputs, "output": st.output, "x0": st.x0,
           "width": st.width, "height": st.height, "n": p.n}
    if st.kind == "gemv":
        out.update({"k": p.k, "k_tile": p.k_tile, "n_tile": p.n_tile})
    elif st.kind == "attention":
        out.update({"v_tile": p.v_tile, "kv_heads": p.kv_heads, "group": p.group,
                    "d": p.d, "dv": p.dv, "masked": p.masked,
                    "q_shape": list(st.shapes[0]), "mask_shape": list(st.shapes[1])})
    elif st.kind == "gather":
        out.update({"v_tile": p.v_tile, "rows": p.rows, "block": p.block})
    elif st.kind not in HOST_KINDS:
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
    hosted = [(i, st.plan.op) for i, st in enumerate(project.stages) if st.kind == "host"]
    if hosted:
        (out_dir / "host_ops.mlir").write_text(str(host_module(hosted)) + "\n")
    decoded = project.weights == "decoded"
    decode = ('runner.launch("decode", nonblock=False)  # once, at load time\n'
              if decoded else "")
    gemv = GemvPlan(1, 1, 32, 64, 1, project.weights)  # the mode's array names
    (out_dir / "run.py").write_text(RUN_PY.format(
        runtime=RUNTIME_PY, name=stem, decode=decode, fw=project.width + 7,
        fh=project.height + 2, decode_doc=", launches `decode` once" if decoded else "",
        tables=names_tuple(gemv.tables()), arrays=names_tuple(gemv.weight_arrays())))
    memory = {name: memory_use(prog, machine) for name, prog in programs(project.csl).items()}
    summary = {
        "machine": machine.name,
        "pe_memory_capacity": machine.pe_memory_bytes,
        "plan": {"width": project.width, "height": project.height,
                 **({"weights": project.weights} if project.weights != "packed" else {})},
        "stages": [stage_summary(st) for st in project.stages],
        "inputs": {k: list(v) for k, v in project.inputs.items()},
        "outputs": project.output_names, "output_values": project.outputs,
        "constants": sorted(project.constants),
        "shapes": {k: list(v) for k, v in sorted(project.shapes.items())},
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
