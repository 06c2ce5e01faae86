"""The Cerebras target on a decode step: the embedding gather, attention of one token over
a KV cache (grouped-query), the host's data moves, and LLaMA-style decode-step models
end to end, bit-exact with the interpreter's numeric mode for this target."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import q35c
from hypothesis import given, settings, strategies as st
from xdsl.dialects import csl
from xdsl.dialects.builtin import IntAttr
from xdsl.parser import Parser

from q35c.compiler.context import make_context
from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.weights import store_of
from q35c.semantics import Interpreter, cerebras as mode
from q35c.targets.cerebras.attention import AttentionPlan
from q35c.targets.cerebras.gather import GatherPlan
from q35c.targets.cerebras.graph import Stage, numeric_mode, project_of, simulate_graph
from q35c.targets.cerebras.machine import load_machine
from q35c.targets.cerebras.ops import SetColorConfigOp
from q35c.targets.cerebras.parse import parse_csl
from q35c.targets.cerebras.printer import csl_files
from q35c.targets.cerebras.simulate import SimulationError, check
from q35c.targets.cerebras.vector import BCAST_COLOR

WSE2 = load_machine("wse2")
# Several interleaving seeds run in the slow tier; the default tier runs one.
SEEDS = [1, pytest.param(3, marks=pytest.mark.slow)]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TARGET_PASSES = ("default,dequantize-gathers,fuse-norms,fuse-swiglu,canonicalize,drop-nan-guards,"
                 "fuse-attention")
"""The IR `--target cerebras` lowers: the default pipeline, then the target's passes."""


# -- attention of one token over a KV cache ------------------------------------------------


def _attention(s_len, kv, group, d, dv, t_tile, masked, scale=0.25):
    plan = AttentionPlan.make(s_len, kv, group, d, dv, scale, masked, t_tile)
    heads = kv * group
    names = ["q", "k", "v", *(["m"] if masked else [])]
    stage = Stage("attention", plan, names, "t0",
                  shapes=((1, heads, 1, d), (1, heads, 1, s_len) if masked else ()))
    shapes = {"q": (1, heads, 1, d), "k": (1, kv, s_len, d), "v": (1, kv, s_len, dv),
              "m": (1, heads, 1, s_len)}
    return project_of([stage], {n: shapes[n] for n in names}, ["t0"], ["y"],
                      shapes={"t0": (1, heads, 1, dv)})


def _attention_want(ins, group, scale, t_tile):
    k = np.repeat(ins["k"], group, axis=1)  # what the grouped heads read
    v = np.repeat(ins["v"], group, axis=1)
    return mode.attention_f32(ins["q"], k, v, ins.get("m"), scale, t_tile)


@settings(max_examples=12, deadline=None)
@given(s_len=st.integers(1, 40), kv=st.integers(1, 3), group=st.integers(1, 3),
       d=st.integers(1, 12), dv=st.integers(1, 12), t_tile=st.integers(1, 16),
       masked=st.booleans(), seed=st.integers(0, 3))
def test_attention_stage_is_bit_exact_over_random_shapes(s_len, kv, group, d, dv, t_tile,
                                                         masked, seed):
    rng = np.random.default_rng(seed)
    p = _attention(s_len, kv, group, d, dv, min(t_tile, s_len), masked)
    ins = {n: (rng.standard_normal(shape) * 2).astype(np.float32)
           for n, shape in p.inputs.items()}
    if masked:  # some tokens hidden, as a causal or padding mask does
        ins["m"] = np.where(rng.random(ins["m"].shape) < 0.3, -1e9, 0).astype(np.float32)
    outs, _, cycles = simulate_graph(p, WSE2, ins, seed)
    want = _attention_want(ins, group, np.float32(0.25), min(t_tile, s_len))
    assert np.array_equal(outs["y"].view(np.uint32), want.view(np.uint32))
    assert cycles[0] > 0


def test_attention_mode_is_close_to_float64_attention():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s).astype(np.float32)
               for s in ((1, 4, 1, 16), (1, 4, 37, 16), (1, 4, 37, 8)))
    got = mode.attention_f32(q, k, v, None, 0.25, 8)
    s = (q.astype(np.float64) @ np.swapaxes(k, -1, -2)) * 0.25
    p = np.exp(s - s.max(-1, keepdims=True))
    want = (p / p.sum(-1, keepdims=True)) @ v
    assert np.abs(got - want).max() < 2e-6 * np.abs(want).max()


def test_attention_programs_parse_and_fit():
    p = _attention(100, 2, 2, 16, 16, 32, True)
    for name, text in csl_files(p.csl).items():
        parse_csl(text, name)
    layout = check(p.csl, WSE2)
    assert (layout.width, layout.height) == (4, 2)  # token blocks x KV heads


def _route(p, x: int, y: int, color: int) -> SetColorConfigOp:
    """The route of PE (x, y) on `color` (the layout loops over y: set it for row y)."""
    for op in p.csl.walk():
        if isinstance(op, SetColorConfigOp) and op.color.data == color and \
                op.x_coord.owner.value.value.data == x:
            return op
    raise AssertionError("no such route")


def test_a_dropped_attention_chain_route_is_caught():
    p = _attention(24, 2, 2, 4, 4, 8, False)
    _route(p, 1, 0, 0).detach()  # PE 1 receives the chain on color 0 (every row)
    with pytest.raises(SimulationError, match=r"PE \(1,[01]\) color 0: wavelets arrive from "
                       "the WEST but the PE has no route for the color"):
        check(p.csl, WSE2)


def test_an_attention_context_chain_with_one_wavelet_too_many_is_caught():
    p = _attention(24, 1, 1, 4, 4, 8, False)
    prog = next(m for m in p.csl.body.ops if m.sym_name.data == "s0_first")
    fab = [op for op in prog.walk() if isinstance(op, csl.GetFabDsdOp)
           and op.sizes[0].owner.value.value.data == 4]  # the context chain: dv wavelets
    assert len(fab) == 1
    const = fab[0].sizes[0].owner
    const.properties["value"] = type(const.value)(5, const.value.type)
    with pytest.raises(SimulationError, match=r"PE \(1,0\) color 0: 7 wavelets arrive, its "
                       "program consumes 6"):
        check(p.csl, WSE2)


def test_an_attention_broadcast_on_the_wrong_color_is_caught():
    p = _attention(24, 1, 2, 4, 4, 8, False)
    _route(p, 2, 0, BCAST_COLOR).properties["color"] = IntAttr(3)  # the east-most sender
    with pytest.raises(SimulationError, match=rf"color {BCAST_COLOR}"):
        check(p.csl, WSE2)


def test_an_attention_of_several_query_rows_is_refused():
    from q35c.targets.cerebras.attention import check_decode

    with pytest.raises(Q35cError, match="only one query row per head"):
        check_decode((1, 4, 3, 16))


# -- the embedding gather -------------------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, 600), n=st.integers(1, 100), v_tile=st.sampled_from([0, 16, 64]),
       row=st.integers(-600, 599), seed=st.integers(0, 3))
def test_gather_stage_copies_the_row(rows, n, v_tile, row, seed):
    row = row % rows - (rows if row < 0 else 0)  # in range, negative ones too
    table = np.random.default_rng(seed).standard_normal((rows, n)).astype(np.float32)
    plan = GatherPlan.choose(rows, n, v_tile)
    p = project_of([Stage("gather", plan, ["ids"], "t0", gamma=table)],
                   {"ids": (1, 1)}, ["t0"], ["y"], shapes={"t0": (1, 1, n)})
    outs, _, _ = simulate_graph(p, WSE2, {"ids": np.array([[row]], np.int64)}, seed)
    assert np.array_equal(outs["y"].reshape(-1).view(np.uint32), table[row].view(np.uint32))
    with pytest.raises(Q35cError, match="out of range"):
        simulate_graph(p, WSE2, {"ids": np.array([[rows]], np.int64)}, seed)


def test_a_tall_table_is_cut_into_row_blocks_and_fits():
    plan = GatherPlan.choose(49152, 576)  # SmolLM2's embedding table
    assert (plan.v_tile, plan.block, plan.width, plan.height) == (64, 128, 9, 384)
    table = np.zeros((600, 64), np.float32)
    p = project_of([Stage("gather", GatherPlan.choose(600, 64), ["ids"], "t0", gamma=table)],
                   {"ids": (1, 1)}, ["t0"], ["y"])
    check(p.csl, WSE2)  # 5 row blocks, each within a PE's memory
    with pytest.raises(Q35cError, match="does not fit"):
        GatherPlan.choose(10, 10000, 10000)


# -- decode-step models end to end -----------------------------------------------------------


def _interp(model, tmp_path, ins, *options):
    """The interpreter's outputs on the IR the target lowers: numeric mode, default."""
    ir = tmp_path / "ir"
    q35c(model, "--target", "mlir", "--passes", TARGET_PASSES, "-o", ir, *options)
    module = Parser(make_context(), (ir / f"{model.stem}.mlir").read_text()).parse_module()
    store = store_of(module, ir)
    return (Interpreter(module, store, overrides=numeric_mode()).run(ins),
            Interpreter(module, store).run(ins))


@pytest.fixture(scope="module")
def llama_decode(tmp_path_factory):
    """build_llama_decode's step (vocab 300: 3 blocks of rows) compiled once for the tests
    below: the project in out/, the IR the target lowers in ir/ and its module."""
    sys.path.insert(0, str(EXAMPLES / "models"))
    from build_llama_decode import Config, write

    tmp = tmp_path_factory.mktemp("llama_decode")
    model = write(tmp / "llama_decode.onnx", Config(vocab=300))
    q35c(model, "--target", "cerebras", "-o", tmp / "out")
    q35c(model, "--target", "mlir", "--passes", TARGET_PASSES, "-o", tmp / "ir")
    module = Parser(make_context(), (tmp / "ir" / "llama_decode.mlir").read_text()).parse_module()
    return model, tmp / "out", tmp / "ir", module


@pytest.mark.parametrize("seeds", SEEDS)
def test_a_llama_decode_step_with_a_kv_cache_is_bit_exact(llama_decode, tmp_path, seeds):
    model, out, ir, module = llama_decode
    doc = json.loads((out / "project.json").read_text())
    kinds = [s["kind"] for s in doc["stages"]]
    assert {"gather", "attention", "neg", "move", "rms_norm", "swiglu", "gemv"} <= set(kinds)
    att = next(s for s in doc["stages"] if s["kind"] == "attention")
    assert (att["kv_heads"], att["group"], att["n"]) == (2, 2, 8)  # GQA: the cache not copied
    for f in out.glob("*.csl"):
        parse_csl(f.read_text(), f.name)
    compile((out / "run.py").read_text(), "run.py", "exec")
    q35c("report", out)
    assert "attention" in (out / "report.html").read_text()
    rng = np.random.default_rng(3)
    ins = {"input_ids": np.array([[11]], np.int64), "position_ids": np.array([[7]], np.int64),
           "past_key_values.0.key": rng.standard_normal((1, 2, 7, 16)).astype(np.float32),
           "past_key_values.0.value": rng.standard_normal((1, 2, 7, 16)).astype(np.float32)}
    args = []
    for name, v in ins.items():
        np.save(tmp_path / f"{name}.npy", v)
        args += ["--input", f"{name}={tmp_path / f'{name}.npy'}"]
    runs = tmp_path / "runs"
    q35c("run", model, "--target", f"cerebras{{seeds={seeds}}}", "-o", runs, *args)
    store = store_of(module, ir)
    want = Interpreter(module, store, overrides=numeric_mode()).run(ins)
    ref = Interpreter(module, store).run(ins)
    for name in ("logits", "present.0.key", "present.0.value"):
        y = np.load(runs / f"{name}.npy").reshape(want[name].shape)
        assert np.array_equal(y.view(np.uint32), want[name].view(np.uint32)), name
        assert np.allclose(y, ref[name], rtol=0, atol=2e-3 * np.abs(ref[name]).max())


@pytest.mark.slow
def test_llama_tiny_one_token_is_bit_exact(tmp_path):
    """examples/models/llama_tiny.onnx (2 layers, no cache input) on one token: 72 stages."""
    model = EXAMPLES / "models" / "llama_tiny.onnx"
    runs = tmp_path / "runs"
    q35c("run", model, "--target", "cerebras{seeds=2}", "--shape", "input_ids=1,1", "-o", runs)
    ids = np.load(runs / "input_ids.npy")
    want, _ = _interp(model, tmp_path, {"input_ids": ids}, "--shape", "input_ids=1,1")
    y = np.load(runs / "logits.npy").reshape(want["logits"].shape)
    assert np.array_equal(y.view(np.uint32), want["logits"].view(np.uint32))


# -- run.py, the host program, against the simulator ----------------------------------------


class _SimRuntime:
    """A stand-in for the SDK's SdkRuntime that runs the simulator: memcpy into and out of
    simulated PE memory (32-bit words, 16-bit arrays zero-extended), launch = sim.run."""

    sim = None

    def __init__(self, name, cmaddr=None):
        self.sim = _SimRuntime.sim

    def load(self):
        pass

    def run(self):
        pass

    def stop(self):
        pass

    def get_id(self, symbol):
        return symbol

    def memcpy_h2d(self, symbol, values, px, py, w, h, count, streaming, data_type, order,
                   nonblock):
        mem = self.sim.pes[(px, py)].memory[symbol]
        words = np.asarray(values, np.uint32)[:count]
        if mem.dtype.itemsize == 2:
            assert data_type == "16"
            mem[:count] = words.astype(np.uint16).view(mem.dtype)
        else:
            assert data_type == "32"
            mem[:count] = words.view(mem.dtype)

    def memcpy_d2h(self, out, symbol, px, py, w, h, count, streaming, data_type, order,
                   nonblock):
        out[:count] = self.sim.pes[(px, py)].memory[symbol][:count].view(np.uint32)

    def launch(self, name, nonblock):
        self.sim.run(name)
        self.sim.restart()


def test_run_py_drives_the_decode_step_bit_exactly(llama_decode, tmp_path, monkeypatch):
    """The emitted host program (moves, gathers, attention inputs, launches) on a
    stand-in runtime backed by the simulator gives the simulator's own outputs."""
    import shutil

    from q35c.targets.cerebras.graph import compile_graph

    _, built, ir, module = llama_decode
    out = tmp_path / "out"  # run.py writes its outputs next to itself: a copy of the project
    shutil.copytree(built, out)
    doc = json.loads((out / "project.json").read_text())
    assert [s["height"] for s in doc["stages"] if s["kind"] == "gather"][-1] == 3
    rng = np.random.default_rng(5)
    ins = {"input_ids": np.array([[-3]], np.int64), "position_ids": np.array([[2]], np.int64),
           "past_key_values.0.key": rng.standard_normal((1, 2, 7, 16)).astype(np.float32),
           "past_key_values.0.value": rng.standard_normal((1, 2, 7, 16)).astype(np.float32)}
    args = []
    for name, v in ins.items():
        np.save(tmp_path / f"{name}.npy", v)
        args.append(f"{name}={tmp_path / f'{name}.npy'}")
    project = compile_graph(module, store_of(module, ir), None, 0, 0, 0)
    _run_py(project, out, ins, args, monkeypatch)


def _run_py(project, out: Path, ins: dict, args: list[str], monkeypatch) -> None:
    """Run out/run.py on the stand-in runtime (a fresh simulation of `project`, seed 1);
    its outputs must be the simulator's own (seed 0) bit for bit."""
    import types

    from q35c.targets.cerebras.simulate import Simulation

    want, _, _ = simulate_graph(project, WSE2, ins, 0)
    _SimRuntime.sim = Simulation(project.csl, check(project.csl, WSE2), WSE2, 1)
    fake = types.ModuleType("cerebras.sdk.runtime.sdkruntimepybind")
    fake.SdkRuntime = _SimRuntime
    fake.MemcpyDataType = types.SimpleNamespace(MEMCPY_16BIT="16", MEMCPY_32BIT="32")
    fake.MemcpyOrder = types.SimpleNamespace(ROW_MAJOR="row")
    for name in ("cerebras", "cerebras.sdk", "cerebras.sdk.runtime"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    monkeypatch.chdir(out)
    monkeypatch.setattr(sys, "argv", ["run.py", "--name", "out", *args])
    exec(compile((out / "run.py").read_text(), "run.py", "exec"), {"__name__": "__main__"})
    for name, value in want.items():
        got = np.load(out / f"{name}.npy")
        assert got.shape == value.shape
        assert np.array_equal(got.view(np.uint32), value.view(np.uint32)), name


# -- moves: the host's data movement ---------------------------------------------------------


def _t(shape) -> str:
    return "tensor<" + "x".join(map(str, shape)) + "xf32>"


@settings(max_examples=10, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=3, max_size=3), perm=st.permutations(range(3)),
       lo=st.integers(0, 3), axis=st.integers(0, 2), rep=st.integers(1, 3),
       seed=st.integers(0, 3))
def test_moves_match_the_interpreter(shape, perm, lo, axis, rep, seed):
    """transpose -> static slice -> concat with itself -> broadcast -> reshape -> neg: the
    host's index maps give the interpreter's values."""
    t_shape = [shape[p] for p in perm]
    lo = min(lo, t_shape[axis] - 1)
    s_shape = list(t_shape)
    s_shape[axis] -= lo
    offs = [lo if i == axis else 0 for i in range(3)]
    c_shape = list(s_shape)
    c_shape[axis] *= 2
    b_shape = [rep, *c_shape]
    flat = int(np.prod(b_shape))
    ints = ", ".join
    text = f"""
func.func @main(%x: {_t(shape)}) -> tensor<1x{flat}xf32> {{
  %e = tensor.empty() : {_t(t_shape)}
  %t = "linalg.transpose"(%x, %e) <{{permutation = array<i64: {ints(map(str, perm))}>}}> ({{
  ^bb0(%a: f32, %b: f32):
    "linalg.yield"(%a) : (f32) -> ()
  }}) : ({_t(shape)}, {_t(t_shape)}) -> {_t(t_shape)}
  %s = "tensor.extract_slice"(%t) <{{static_offsets = array<i64: {ints(map(str, offs))}>,
    static_sizes = array<i64: {ints(map(str, s_shape))}>, static_strides = array<i64: 1, 1, 1>,
    operandSegmentSizes = array<i32: 1, 0, 0, 0>}}> : ({_t(t_shape)}) -> {_t(s_shape)}
  %c = "tensor.concat"(%s, %s) <{{dim = {axis} : i64}}> :
    ({_t(s_shape)}, {_t(s_shape)}) -> {_t(c_shape)}
  %f = tensor.empty() : {_t(b_shape)}
  %b = "linalg.broadcast"(%c, %f) <{{dimensions = array<i64: 0>}}> ({{
  ^bb0(%a: f32, %o: f32):
    "linalg.yield"(%a) : (f32) -> ()
  }}) : ({_t(c_shape)}, {_t(b_shape)}) -> {_t(b_shape)}
  %k = arith.constant dense<[1, {flat}]> : tensor<2xi64>
  %r = "tensor.reshape"(%b, %k) : ({_t(b_shape)}, tensor<2xi64>) -> tensor<1x{flat}xf32>
  %n = arith.negf %r : tensor<1x{flat}xf32>
  func.return %n : tensor<1x{flat}xf32>
}}
"""
    from q35c.compiler.weights import WeightStore
    from q35c.targets.cerebras.graph import compile_graph

    module = Parser(make_context(), text).parse_module()
    project = compile_graph(module, WeightStore(), None, 0, 0, 0)
    # transpose and slice compose into one move, broadcast and reshape into another (a
    # move of several sources, the concat, is not composed through)
    assert [s.kind for s in project.stages] == ["move", "move", "move", "neg"]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    name = next(iter(project.inputs))
    outs, _, _ = simulate_graph(project, WSE2, {name: x}, seed)
    want = Interpreter(module, WeightStore()).run({name: x})
    got, ref = next(iter(outs.values())), next(iter(want.values()))
    assert np.array_equal(got.reshape(-1).view(np.uint32), ref.reshape(-1).view(np.uint32))


def test_gather_and_attention_tiles_too_large_for_a_pe_are_caught():
    rows = 400
    big = GatherPlan(rows, 64, 64, rows)  # 400 x 64 f32 = 102,400 bytes on one PE
    table = np.zeros((rows, 64), np.float32)
    p = project_of([Stage("gather", big, ["ids"], "t0", gamma=table)], {"ids": (1, 1)},
                   ["t0"], ["y"])
    with pytest.raises(SimulationError, match=r"PE \(0,0\) \(s0_single.csl\): memory \d+ "
                       r"bytes > 49152"):
        check(p.csl, WSE2)
    p = _attention(128, 1, 1, 64, 64, 128, False)  # keys and values: 64 KB per PE
    with pytest.raises(SimulationError, match=r"memory \d+ bytes > 49152"):
        check(p.csl, WSE2)


def _sdpa_model(path: Path) -> Path:
    """Attention as torch's exporter writes it: q and the transposed keys each scaled by
    d**-0.25, the mask from a boolean input (Where), the probabilities guarded by
    Where(IsNaN(p), 0, p); the position's cos as a host-side op."""
    import onnx
    from onnx import TensorProto, helper as oh

    s = float(np.float32(8 ** -0.25))
    f = TensorProto.FLOAT
    nodes = [
        oh.make_node("Mul", ["q", "s"], ["qs"]),
        oh.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        oh.make_node("Mul", ["kt", "s"], ["kts"]),
        oh.make_node("MatMul", ["qs", "kts"], ["scores"]),
        oh.make_node("Cast", ["keep"], ["keepb"], to=TensorProto.BOOL),
        oh.make_node("Where", ["keepb", "zero", "low"], ["mask"]),
        oh.make_node("Add", ["scores", "mask"], ["masked"]),
        oh.make_node("Softmax", ["masked"], ["p"], axis=-1),
        oh.make_node("IsNaN", ["p"], ["nan"]),
        oh.make_node("Where", ["nan", "zero", "p"], ["pg"]),
        oh.make_node("MatMul", ["pg", "v"], ["ctx"]),
        oh.make_node("Cos", ["pos"], ["cpos"]),
        oh.make_node("Mul", ["ctx", "cpos"], ["y"]),
    ]
    inits = [oh.make_tensor("s", f, [], [s]), oh.make_tensor("zero", f, [], [0.0]),
             oh.make_tensor("low", f, [], [float(np.finfo(np.float32).min)])]
    graph = oh.make_graph(nodes, "sdpa", [
        oh.make_tensor_value_info("q", f, [1, 2, 1, 8]),
        oh.make_tensor_value_info("k", f, [1, 2, 5, 8]),
        oh.make_tensor_value_info("v", f, [1, 2, 5, 8]),
        oh.make_tensor_value_info("keep", TensorProto.INT64, [1, 1, 1, 5]),
        oh.make_tensor_value_info("pos", f, [1, 2, 1, 8])],
        [oh.make_tensor_value_info("y", f, [1, 2, 1, 8])], inits)
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)]), path)
    return path


@pytest.mark.parametrize("seeds", SEEDS)
def test_torch_sdpa_with_a_nan_guard_and_host_ops_is_bit_exact(tmp_path, monkeypatch, seeds):
    """fuse-attention takes torch's pattern (drop-nan-guards first), the mask's Cast and
    Where and the cos run as host stages (host_ops.mlir for run.py), and the simulated
    step equals the interpreter's numeric mode; on finite inputs the lowered IR equals
    the unlowered graph's default interpretation bit for bit."""
    model = _sdpa_model(tmp_path / "sdpa.onnx")
    rng = np.random.default_rng(2)
    ins = {n: rng.standard_normal(s).astype(np.float32) for n, s in
           (("q", (1, 2, 1, 8)), ("k", (1, 2, 5, 8)), ("v", (1, 2, 5, 8)), ("pos", (1, 2, 1, 8)))}
    ins["keep"] = np.array([[[[1, 1, 0, 1, 1]]]], np.int64)
    args = []
    for name, v in ins.items():
        np.save(tmp_path / f"{name}.npy", v)
        args += ["--input", f"{name}={tmp_path / f'{name}.npy'}"]
    out = tmp_path / "out"
    q35c(model, "--target", "cerebras", "-o", out)
    doc = json.loads((out / "project.json").read_text())
    kinds = [s["kind"] for s in doc["stages"]]
    assert "attention" in kinds and kinds.count("host") == 3, kinds  # Cast, Where, cos
    assert "func.func" in (out / "host_ops.mlir").read_text()
    compile((out / "run.py").read_text(), "run.py", "exec")
    q35c("run", model, "--target", f"cerebras{{seeds={seeds}}}", "-o", tmp_path / "runs",
         *args)
    want, _ = _interp(model, tmp_path, ins)
    y = np.load(tmp_path / "runs" / "y.npy").reshape(want["y"].shape)
    assert np.array_equal(y.view(np.uint32), want["y"].view(np.uint32))
    module = Parser(make_context(), (tmp_path / "ir" / "sdpa.mlir").read_text()).parse_module()
    assert {"q35nn.attention"} <= {op.name for op in module.walk()}
    assert not {"q35nn.batch_matmul", "q35nn.onnx_node"} & {
        op.name for op in module.walk() if "IsNaN" in str(op) or op.name.endswith("matmul")}
    q35c(model, "--target", "mlir", "--passes", "", "-o", tmp_path / "plain")
    plain = Parser(make_context(), (tmp_path / "plain" / "sdpa.mlir").read_text()).parse_module()
    unfused = Interpreter(plain, store_of(plain, tmp_path / "plain")).run(ins)["y"]
    fused = Interpreter(module, store_of(module, tmp_path / "ir")).run(ins)["y"]
    assert np.array_equal(unfused.view(np.uint32), fused.view(np.uint32))
    from q35c.targets.cerebras.graph import compile_graph  # run.py's host_ops.mlir path

    project = compile_graph(module, store_of(module, tmp_path / "ir"), None, 0, 0, 0)
    _run_py(project, out, ins, [a for a in args if a != "--input"], monkeypatch)
