"""The Cerebras target's graphs of several ops (targets/cerebras/graph.py, vector.py): the
vector ops' numeric mode (q35c.semantics.cerebras), vector stages simulated bit-exactly
over random sizes, corrupted broadcast routes, and a LLaMA MLP block from .mlir through
`q35c MODEL --target cerebras` and `q35c run --target cerebras`, bit-exact with the
interpreter in the target's numeric mode."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import q35c
from hypothesis import given, settings, strategies as st
from xdsl.dialects import csl
from xdsl.dialects.builtin import ArrayAttr, IntAttr, StringAttr
from xdsl.parser import Parser

from q35c.compiler.context import make_context
from q35c.compiler.quant import quantize
from q35c.compiler.weights import WeightStore, store_of
from q35c.semantics import Interpreter, cerebras as mode
from q35c.targets.cerebras.estimate import graph_estimate
from q35c.targets.cerebras.graph import Stage, numeric_mode, project_of, simulate_graph
from q35c.targets.cerebras.machine import load_machine
from q35c.targets.cerebras.ops import SetColorConfigOp
from q35c.targets.cerebras.parse import parse_csl
from q35c.targets.cerebras.plan import GemvPlan
from q35c.targets.cerebras.printer import csl_files
from q35c.targets.cerebras.simulate import SimulationError, check
from q35c.targets.cerebras.vector import BCAST_COLOR, VectorPlan

WSE2 = load_machine("wse2")
# Several interleaving seeds run in the slow tier; the default tier runs one.
SEEDS = [1, pytest.param(3, marks=pytest.mark.slow)]


# -- numeric mode ------------------------------------------------------------------------


def test_silu_and_rsqrt_modes_are_close_to_float64():
    x = np.linspace(-100, 100, 20001).astype(np.float32)
    ref = x.astype(np.float64) / (1 + np.exp(-x.astype(np.float64)))
    got = mode.silu_f32(x)
    assert got.dtype == np.float32
    inside = x >= -87  # below, exp's argument is clamped to -87: |error| < |x| e^-87
    assert np.all(np.abs(got - ref)[inside] <= 4e-7 * np.abs(ref)[inside] + 1e-38)
    assert np.all(np.abs(got - ref)[~inside] <= np.abs(x[~inside]) * np.exp(-87.0))
    assert mode.silu_f32(np.float32([0.0]))[0] == 0
    v = np.concatenate([(10.0 ** np.linspace(-30, 30, 601)).astype(np.float32),
                        np.float32([2.0 ** -149, 2.0 ** -127, 1.5 * 2.0 ** -140,
                                    np.finfo(np.float32).max, 3.99999976, 4.0, 1.0])])
    r = np.array([mode.rsqrt_f32(t) for t in v])
    assert np.all(np.abs(r - 1 / np.sqrt(v.astype(np.float64))) * np.sqrt(v) <= 2.5e-7)


def test_rms_norm_mode_is_the_stated_order_and_close_to_the_interpreter():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 100)).astype(np.float32)
    g = (1 + rng.standard_normal(100) / 8).astype(np.float32)
    got = mode.rms_norm_f32(x, g, 1e-5, 32)
    parts = [np.float32(0)] * 4  # by hand: four PEs of 32, 32, 32, 4 elements
    for i, xi in enumerate(x[0]):
        parts[i // 32] = np.float32(parts[i // 32] + np.float32(xi * xi))
    total = np.float32(np.float32(np.float32(parts[0] + parts[1]) + parts[2]) + parts[3])
    r = mode.rsqrt_f32(np.float32(np.float32(total * np.float32(1 / 100)) + np.float32(1e-5)))
    assert np.array_equal(got, (x * r) * g)
    ref = x / np.sqrt((x.astype(np.float64) ** 2).mean() + 1e-5) * g
    assert np.allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_softmax_mode_is_close_to_the_interpreter():
    x = (np.random.default_rng(5).standard_normal((1, 300)) * 6).astype(np.float32)
    from q35c.semantics import softmax
    got, ref = mode.softmax_f32(x, 64), softmax(x, -1)
    assert np.allclose(got, ref, rtol=2e-6, atol=1e-12) and got.dtype == np.float32


@pytest.mark.parametrize("n,v_tile", [(1, 1), (7, 3), (130, 64)])
def test_softmax_stage_excludes_padding_from_max_and_sum(n, v_tile):
    x = -np.abs(np.random.default_rng(n).standard_normal((1, n)) * 3).astype(np.float32) - 1
    outs, _, _ = simulate_graph(_vector_project("softmax", n, v_tile), WSE2, {"a": x}, 0)
    want = mode.softmax_f32(x, v_tile)  # every x < 0: a padding 0 would win the max
    assert np.array_equal(outs["y"].view(np.uint32), want.view(np.uint32))


# -- vector stages in the simulator ------------------------------------------------------


def _vector_project(kind: str, n: int, v_tile: int, gamma=None, eps=1e-5):
    plan = VectorPlan.choose(kind, n, v_tile, eps)
    names = ["a", "b"] if kind in ("add", "mul", "swiglu") else ["a"]
    stage = Stage(kind, plan, names, "t0", gamma=gamma)
    return project_of([stage], {k: (1, n) for k in names}, ["t0"], ["y"])


def _want(kind, ins, gamma, v_tile, eps=1e-5):
    a = ins["a"]
    return {"add": lambda: a + ins["b"], "mul": lambda: a * ins["b"],
            "silu": lambda: mode.silu_f32(a), "swiglu": lambda: mode.swiglu_f32(a, ins["b"]),
            "rms_norm": lambda: mode.rms_norm_f32(a, gamma, eps, v_tile),
            "softmax": lambda: mode.softmax_f32(a, v_tile)}[kind]()


@settings(max_examples=16, deadline=None)
@given(kind=st.sampled_from(["add", "mul", "silu", "swiglu", "rms_norm", "softmax"]),
       n=st.integers(1, 150), v_tile=st.integers(1, 48), seed=st.integers(0, 3))
def test_vector_stages_are_bit_exact_over_random_sizes(kind, n, v_tile, seed):
    rng = np.random.default_rng(seed)
    ins = {k: (rng.standard_normal((1, n)) * 4).astype(np.float32) for k in ("a", "b")}
    gamma = (1 + rng.standard_normal(n) / 8).astype(np.float32)
    p = _vector_project(kind, n, v_tile, gamma if kind == "rms_norm" else None)
    ins = {k: ins[k] for k in p.inputs}
    outs, _, cycles = simulate_graph(p, WSE2, ins, seed)
    want = _want(kind, ins, gamma, min(v_tile, n))
    assert np.array_equal(outs["y"].view(np.uint32), want.view(np.uint32))
    assert len(cycles) == 1 and cycles[0] > 0


def test_every_vector_program_parses():
    for kind in ("add", "silu", "swiglu", "rms_norm", "softmax"):
        gamma = np.ones(100, np.float32) if kind == "rms_norm" else None
        for name, text in csl_files(_vector_project(kind, 100, 16, gamma).csl).items():
            parse_csl(text, name)


# -- corrupted RMSNorm broadcasts ----------------------------------------------------------


def _rms(n=96, v_tile=32):
    return _vector_project("rms_norm", n, v_tile, np.ones(n, np.float32))


def _bcast_route(p, x: int) -> SetColorConfigOp:
    return next(op for op in p.csl.walk() if isinstance(op, SetColorConfigOp)
                and op.color.data == BCAST_COLOR and op.x_coord.owner.value.value.data == x)


def test_a_dropped_broadcast_route_is_caught():
    p = _rms()
    _bcast_route(p, 1).detach()
    with pytest.raises(SimulationError, match=rf"PE \(1,0\) color {BCAST_COLOR}: wavelets "
                       "arrive from the EAST but the PE has no route for the color"):
        check(p.csl, WSE2)


def test_a_broadcast_that_skips_a_pe_is_caught():
    p = _rms()
    _bcast_route(p, 1).properties["tx"] = ArrayAttr([StringAttr("WEST")])
    with pytest.raises(SimulationError, match=rf"PE \(1,0\) color {BCAST_COLOR}: 0 wavelets "
                       "arrive, its program consumes 1"):
        check(p.csl, WSE2)


def test_a_broadcast_on_a_chain_color_is_caught():
    p = _rms()
    _bcast_route(p, 1).properties["color"] = IntAttr(0)  # PE 1 receives the chain on 0
    with pytest.raises(SimulationError, match=r"PE \(1,0\) color 0: a second route at switch "
                       "position 0"):
        check(p.csl, WSE2)


def test_a_softmax_broadcast_sent_once_instead_of_twice_is_caught():
    p = _vector_project("softmax", 96, 32)  # max, then 1 / sum: two wavelets per PE
    prog = next(m for m in p.csl.body.ops if m.sym_name.data == "s0_last_even")
    sends = [op for op in prog.walk() if isinstance(op, csl.FmovsOp)
             and isinstance(op.operands[0].owner, csl.GetFabDsdOp)
             and op.operands[0].owner.fabric_color.value.data == BCAST_COLOR]
    assert len(sends) == 2
    sends[1].detach()
    with pytest.raises(SimulationError, match=rf"PE \(0,0\) color {BCAST_COLOR}: 1 wavelets "
                       "arrive, its program consumes 2"):
        check(p.csl, WSE2)


# -- a LLaMA MLP block from .mlir --------------------------------------------------------


def _write_mlp(tmp, d: int, f: int, seed: int = 0, swiglu: bool = False) -> None:
    act = (f"    %m = q35nn.swiglu %g, %u : tensor<1x{f}xf32>, tensor<1x{f}xf32> -> "
           f"tensor<1x{f}xf32>\n" if swiglu else
           f"    %s = q35nn.silu %g : tensor<1x{f}xf32> -> tensor<1x{f}xf32>\n"
           f"    %m = arith.mulf %s, %u : tensor<1x{f}xf32>\n")

    def mm(name, a, w, k, n):
        return (f"    %{name} = linalg.matmul ins(%{a}, %{w} : tensor<1x{k}xf32>, "
                f"tensor<{k}x{n}xf32>) outs(%a{n} : tensor<1x{n}xf32>) -> tensor<1x{n}xf32>\n")

    fills = "".join(f"    %e{n} = tensor.empty() : tensor<1x{n}xf32>\n    %a{n} = linalg.fill "
                    f"ins(%zero : f32) outs(%e{n} : tensor<1x{n}xf32>) -> tensor<1x{n}xf32>\n"
                    for n in sorted({d, f}))
    text = f"""builtin.module attributes {{quant3p5.weights = "mlp.q35w"}} {{
  func.func @main(%x: tensor<1x{d}xf32> {{q35c.name = "x"}})
      -> (tensor<1x{d}xf32> {{q35c.name = "y"}}) {{
    %zero = arith.constant 0.000000e+00 : f32
    %nw = quant3p5.weight "norm.weight" : tensor<{d}xf32>
    %h = q35nn.rms_norm %x, %nw {{epsilon = 1.0e-05 : f32}} : tensor<1x{d}xf32>, tensor<{d}xf32> -> tensor<1x{d}xf32>
    %wg = quant3p5.weight "gate.weight" : tensor<{d}x{f}xf32>
    %wu = quant3p5.weight "up.weight" : tensor<{d}x{f}xf32>
    %wd = quant3p5.weight "down.weight" : tensor<{f}x{d}xf32>
{fills}{mm("g", "h", "wg", d, f)}{mm("u", "h", "wu", d, f)}{act}{mm("dn", "m", "wd", f, d)}\
    %y = arith.addf %x, %dn : tensor<1x{d}xf32>
    func.return %y : tensor<1x{d}xf32>
  }}
}}
"""  # noqa: E501
    (tmp / "mlp.mlir").write_text(text)
    store = WeightStore()
    rng = np.random.default_rng(seed)
    store["norm.weight"] = (1 + rng.standard_normal(d) / 8).astype(np.float32)
    for name, shape in (("gate", (d, f)), ("up", (d, f)), ("down", (f, d))):
        store[f"{name}.weight"] = (rng.standard_normal(shape) / 16).astype(np.float32)
    store.save(tmp / "mlp.q35w")


def _write_mlp_onnx(tmp, d: int, f: int, seed: int = 0) -> None:
    """The same block as ONNX: SimplifiedLayerNormalization, MatMul, Sigmoid, Mul, Add
    (the target's pipeline fuses the decomposed SiLU * up into q35nn.swiglu)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((1 + rng.standard_normal(d) / 8).astype(np.float32),
                                     "norm.weight")]
    for name, shape in (("gate", (d, f)), ("up", (d, f)), ("down", (f, d))):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal(shape) / 16).astype(np.float32), f"{name}.weight"))
    node = helper.make_node
    nodes = [node("SimplifiedLayerNormalization", ["x", "norm.weight"], ["h"], epsilon=1e-5,
                  axis=-1),
             node("MatMul", ["h", "gate.weight"], ["g"]),
             node("MatMul", ["h", "up.weight"], ["u"]),
             node("Sigmoid", ["g"], ["sg"]), node("Mul", ["g", "sg"], ["s"]),
             node("Mul", ["s", "u"], ["m"]), node("MatMul", ["m", "down.weight"], ["dn"]),
             node("Add", ["x", "dn"], ["y"])]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, d])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp / "mlp.onnx")


TARGET_PASSES = "default,dequantize-gathers,fuse-norms,fuse-swiglu,canonicalize"
"""The IR `--target cerebras` lowers: the default pipeline, then the target's passes."""


@pytest.mark.parametrize("seeds", SEEDS)
@pytest.mark.parametrize("source", ["mlir", "mlir-swiglu", "onnx"])
def test_a_llama_mlp_block_compiles_and_runs_bit_exactly(tmp_path, source, seeds):
    if source == "onnx":
        _write_mlp_onnx(tmp_path, 64, 96)
    else:
        _write_mlp(tmp_path, 64, 96, swiglu=source == "mlir-swiglu")
    model = tmp_path / ("mlp.onnx" if source == "onnx" else "mlp.mlir")
    weights = "f16" if source == "mlir-swiglu" else "packed"  # f16: a graph of its GEMVs
    target = f"cerebras{{n_tile=32 v_tile=32 weights={weights}}}"
    out = tmp_path / "out"
    result = q35c(model, "--target", target, "-o", out)
    kinds = "rms_norm, gemv, gemv, swiglu, gemv, add"  # silu * up is fused into swiglu
    assert f"stages ({kinds})" in result.stdout
    doc = json.loads((out / "project.json").read_text())
    assert [s["kind"] for s in doc["stages"]] == kinds.split(", ")
    assert max(doc["pe_memory_bytes"].values()) <= 49152
    for f in out.glob("*.csl"):
        parse_csl(f.read_text(), f.name)
    compile((out / "run.py").read_text(), "run.py", "exec")
    q35c("report", out)
    assert f"{len(doc['stages'])} stages ({kinds})" in (out / "report.html").read_text()
    runs = tmp_path / "runs"
    q35c("run", model, "--target", target[:-1] + f" seeds={seeds}}}", "-o", runs)
    x, y = np.load(runs / "x.npy"), np.load(runs / "y.npy")
    ir = tmp_path / "ir"
    q35c(model, "--target", "mlir", "--passes", TARGET_PASSES, "-o", ir)
    module = Parser(make_context(), (ir / "mlp.mlir").read_text()).parse_module()
    assert "q35nn.swiglu" in (ir / "mlp.mlir").read_text()
    store = store_of(module, ir)
    want = Interpreter(module, store, overrides=numeric_mode(0, 32, 32, weights)).run(
        {"x": x})["y"]
    assert np.array_equal(y.view(np.uint32), want.view(np.uint32))
    ref = Interpreter(module, store).run({"x": x})["y"]  # the default semantics: close
    assert np.allclose(y, ref, rtol=0, atol=1e-3 * np.abs(ref).max())


def test_silu_then_mul_are_two_stages_when_not_fused():
    rng = np.random.default_rng(2)
    g, u = (rng.standard_normal((1, 70)).astype(np.float32) * 3 for _ in range(2))
    sts = [Stage("silu", VectorPlan.choose("silu", 70, 16), ["g"], "t0"),
           Stage("mul", VectorPlan.choose("mul", 70, 16), ["t0", "u"], "t1")]
    p = project_of(sts, {"g": (1, 70), "u": (1, 70)}, ["t1"], ["y"])
    outs, _, cycles = simulate_graph(p, WSE2, {"g": g, "u": u}, 1)
    assert np.array_equal(outs["y"].view(np.uint32), mode.swiglu_f32(g, u).view(np.uint32))
    assert len(cycles) == 2


@pytest.mark.parametrize("seeds", SEEDS)
def test_chained_gemvs_run_bit_exactly_on_two_rectangles(seeds):
    rng = np.random.default_rng(4)
    w1 = quantize((rng.standard_normal((128, 48)) / 16).astype(np.float32), group_size=32)
    w2 = quantize((rng.standard_normal((48, 40)) / 16).astype(np.float32), group_size=32)
    sts = [Stage("gemv", GemvPlan.choose(128, 48, 32, 64, 16), ["x"], "t0", weights=w1),
           Stage("gemv", GemvPlan.choose(48, 40, 32, 0, 16), ["t0"], "t1", weights=w2)]
    p = project_of(sts, {"x": (1, 128)}, ["t1"], ["y"])
    assert (p.width, p.height) == (2 + 1, 3) and sts[1].x0 == 2
    x = rng.standard_normal((1, 128)).astype(np.float32)
    from q35c.semantics import matmul_q3p5_f16
    want = matmul_q3p5_f16(matmul_q3p5_f16(x, w1, 64), w2, 64)
    for seed in range(seeds):
        outs, sim, cycles = simulate_graph(p, WSE2, {"x": x}, seed)
        assert np.array_equal(outs["y"].view(np.uint32), want.view(np.uint32))
        assert sim.cycles == sum(cycles)


@settings(max_examples=3, deadline=None)
@given(d=st.integers(20, 100), f=st.integers(20, 140), n_tile=st.sampled_from([16, 32]),
       v_tile=st.integers(8, 40), seed=st.integers(0, 9))
def test_mlp_stages_over_random_sizes_match_the_numeric_mode(d, f, n_tile, v_tile, seed):
    """The block built from stages (no CLI), against the numeric mode's functions composed
    by hand: the GEMVs' chains, the vector rows and the host's hand-offs together."""
    rng = np.random.default_rng(seed)
    w = {name: quantize((rng.standard_normal(shape) / 16).astype(np.float32), group_size=32)
         for name, shape in (("g", (d, f)), ("u", (d, f)), ("d", (f, d)))}
    gamma = (1 + rng.standard_normal(d) / 8).astype(np.float32)

    def gemv(k, n, src, out, name):
        return Stage("gemv", GemvPlan.choose(k, n, 32, 0, n_tile), [src], out, weights=w[name])

    sts = [Stage("rms_norm", VectorPlan.choose("rms_norm", d, v_tile, 1e-5), ["x"], "h",
                 gamma=gamma),
           gemv(d, f, "h", "g", "g"), gemv(d, f, "h", "u", "u"),
           Stage("swiglu", VectorPlan.choose("swiglu", f, v_tile), ["g", "u"], "m"),
           gemv(f, d, "m", "dn", "d"),
           Stage("add", VectorPlan.choose("add", d, v_tile), ["x", "dn"], "y")]
    p = project_of(sts, {"x": (1, d)}, ["y"], ["y"])
    x = rng.standard_normal((1, d)).astype(np.float32)
    from q35c.semantics import matmul_q3p5_f16

    def mm(v, name):
        k = w[name].shape[0]
        return matmul_q3p5_f16(v, w[name], GemvPlan.choose(k, 1, 32).k_tile)

    h = mode.rms_norm_f32(x, gamma, 1e-5, min(v_tile, d))
    want = x + mm(mode.swiglu_f32(mm(h, "g"), mm(h, "u")), "d")
    outs, _, _ = simulate_graph(p, WSE2, {"x": x}, seed)
    assert np.array_equal(outs["y"].view(np.uint32), want.view(np.uint32))


def test_a_vector_tile_too_large_for_a_pe_is_caught():
    p = _vector_project("swiglu", 4096, 4096)
    with pytest.raises(SimulationError, match=r"PE \(0,0\) \(s0_single.csl\): memory [0-9]+ "
                       r"bytes > 49152 \(arrays 49660, "):
        check(p.csl, WSE2)


def test_graph_estimate_is_above_its_lower_bound():
    r = graph_estimate(64, 96, WSE2, n_tile=32, v_tile=32)
    assert [s["kind"] for s in r["stages"]] == ["rms_norm", "gemv", "gemv", "swiglu", "gemv",
                                                "add"]
    for s in r["stages"]:
        assert s["cycles"] >= s["lower_bound"] > 0
    assert r["cycles"] == sum(s["cycles"] for s in r["stages"])
    assert r["lower_bound"] == sum(s["lower_bound"] for s in r["stages"])
    assert math.isclose(r["ratio"], r["cycles"] / r["lower_bound"], abs_tol=0.01)
