"""verify-overflow and verify-quant-error: proven bounds, the crafted overflow and its witness,
bounds never exceeded (hypothesis), never loose by 100x on typical inputs, and --report."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, q35c, require_tool
from hypothesis import HealthCheck, given, settings, strategies as st
from xdsl.builder import Builder
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType, f32
from xdsl.ir import Block, Region
from xdsl.rewriter import InsertPoint

from q35c import semantics
from q35c.compiler.driver import (
    Options,
    build_pipeline,
    compile_to_module,
    load_input,
    make_context,
    run_pipeline,
)
from q35c.compiler.quant import LegacyPairTensor, group_size_of, integer_levels
from q35c.compiler.weights import WeightStore, attach_store, store_of
from q35c.dialects import q35nn, quant3p5
from q35c.passes.matching import origin_of
from q35c.passes.verify_overflow import OverflowFound
from q35c.passes.verify_quant_error import _l1_box_max, analyse_function, float_source
from q35c.semantics import (
    InterpreterError,
    matmul_int8,
    run_module,
)

OVERFLOW = EXAMPLES / "overflow" / "long_k_pair43.mlir"
LLAMA = EXAMPLES / "models" / "llama_tiny.onnx"
INT32_MAX = 2**31 - 1


def compile_mlir(path: Path, passes: str):
    ctx = make_context()
    module = load_input(path, ctx)
    run_pipeline(ctx, module, build_pipeline(passes))
    return module


def ops_of(module, kind):
    return [op for op in module.walk() if isinstance(op, kind)]


# -- verify-overflow -------------------------------------------------------------------------


def test_crafted_overflow_fails_with_a_witness_the_interpreter_confirms():
    with pytest.raises(OverflowFound) as info:
        compile_mlir(OVERFLOW, "default")
    err = info.value
    message = str(err)
    assert "quant3p5.matmul_int8" in message and "pack of %codes" in message
    assert "2147485545 > 2147483647" in message and "witness" in message
    assert set(err.witness) == {"x", "codes", "scale", "offset"}
    assert np.all(err.witness["codes"] == 68) and np.all(err.witness["x"] == -127)
    module = load_input(OVERFLOW, make_context())  # the input IR, no passes
    with pytest.raises(InterpreterError, match="matmul_int8: int32 overflow.*2147485545"):
        run_module(module, store_of(module), err.witness)


def test_one_pair_fewer_is_proven_safe_and_the_bound_is_attained(tmp_path):
    safe = tmp_path / "safe.mlir"
    safe.write_text(OVERFLOW.read_text().replace("2254578", "2254576")
                    .replace("1127289", "1127288"))
    module = compile_mlir(safe, "verify-overflow")
    (op,) = ops_of(module, quant3p5.MatmulInt8Op)
    bound = op.attributes["q35c.acc_bound"].value.data
    assert bound == 127 * 15 * 1127288 <= INT32_MAX
    assert op.attributes["q35c.sx_bound"].value.data == 127 * 2254576
    # the extreme input the bound assumes runs, and reaches exactly the bound
    x = np.full((1, 2254576), -127, np.float32)
    codes = np.full((1127288, 1), 68, np.int8)
    packed = LegacyPairTensor((2254576, 1), codes, np.ones(1, np.float32),
                                          np.zeros(1, np.float32))
    y = matmul_int8(*semantics.quantize_activations(x), packed)
    assert y[0, 0] == np.float32(bound)


def test_crafted_overflow_cli_error_is_one_line_and_writes_the_witness(tmp_path):
    result = q35c(OVERFLOW, "--passes", f'verify-overflow{{witness-dir="{tmp_path / "w"}"}}',
                  "-o", tmp_path / "out", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("q35c: error: verify-overflow: quant3p5.matmul_int8")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [
        "codes.npy", "offset.npy", "scale.npy", "x.npy"]
    run = q35c("run", OVERFLOW, "--passes", "", "-o", tmp_path / "r",
               *[a for n in ("x", "codes", "scale", "offset")
                 for a in ("--input", f"{n}={tmp_path / 'w' / (n + '.npy')}")], check=False)
    assert run.returncode == 2 and "int32 overflow of the accumulator" in run.stderr


def _matmul_module(k: int, n: int, rows: int = 1) -> ModuleOp:
    block = Block(arg_types=[TensorType(f32, (rows, k))])
    b = Builder(InsertPoint.at_end(block))
    w = b.insert(quant3p5.WeightOp("w", TensorType(f32, (k, n))))
    y = b.insert(q35nn.BatchMatmulOp(block.args[0], w.result))
    b.insert(func.ReturnOp(y.result))
    fn = func.FuncOp("main", ([block.args[0].type], [y.result.type]), Region(block))
    return ModuleOp([fn])


def test_stored_pair43_weight_overflow_names_the_weight_and_confirms_end_to_end():
    k = 2_500_000  # pair43 levels of +-1 weights are +-7: 127 * 7 * K > 2^31
    rng = np.random.default_rng(0)
    module = _matmul_module(k, 1)
    (matmul,) = ops_of(module, q35nn.BatchMatmulOp)  # as the ONNX importer marks it
    matmul.attributes["q35c.onnx_node"] = StringAttr("/crafted/MatMul")
    store = WeightStore()
    store["w"] = np.where(rng.random((k, 1)) < 0.5, -1.0, 1.0).astype(np.float32)
    attach_store(module, store)
    ctx = make_context()
    with pytest.raises(OverflowFound) as info:
        run_pipeline(ctx, module, build_pipeline(
            'quantize-weights{layout="pair43"},int8-activations,verify-overflow'))
    # the source survives quantize-weights and int8-activations
    assert "(ONNX node '/crafted/MatMul', weight 'w.pair43'" in str(info.value)
    witness = info.value.witness
    assert set(witness) == {"arg0"} and set(np.unique(witness["arg0"])) <= {-127.0, 0.0, 127.0}
    with pytest.raises(InterpreterError, match="int32 overflow"):
        run_module(module, store, witness)


def test_acc_bounds_of_a_real_model_are_exact_worst_cases():
    module = compile_mlir(EXAMPLES / "mlp.mlir", "default,int8-activations")
    store = store_of(module)
    for op in ops_of(module, quant3p5.MatmulInt8Op):
        weights = store[op.weights.owner.weight_name.data]
        levels, group = integer_levels(weights), group_size_of(weights)
        k, n = levels.shape
        sums = np.abs(levels.astype(np.int64)).reshape(k // group, group, n).sum(axis=1)
        assert op.attributes["q35c.acc_bound"].value.data == 127 * sums.max()
        assert op.attributes["q35c.sx_bound"].value.data == 127 * group
        # q = 127 * sign(L) in the worst group reaches the bound exactly
        g, col = np.unravel_index(np.argmax(sums), sums.shape)
        q = np.zeros((1, k), np.int64)
        q[0, g * group:(g + 1) * group] = 127 * np.sign(levels[g * group:(g + 1) * group, col])
        assert int((q @ levels.astype(np.int64))[0, col]) == 127 * sums.max()
    (qa,) = ops_of(module, quant3p5.QuantizeActivationsOp)[:1]
    assert list(qa.attributes["q35c.int_range"].get_values()) == [-127, 127]


# -- verify-quant-error: bounds never exceeded, never loose by 100x ---------------------------


def _quantized(k, n, group, layout, int8, rng):
    """A module x[rows, K] @ W (W in the store), quantized, with verify-quant-error run."""
    module = _matmul_module(k, n, rows=4)
    store = WeightStore()
    w = (rng.standard_normal((k, n)) * rng.uniform(0.01, 2.0)).astype(np.float32)
    store["w"] = w
    attach_store(module, store)
    spec = f'quantize-weights{{layout="{layout}" group-size={group} min-elements=1}}'
    if int8:
        spec += ",int8-activations"
    ctx = make_context()
    run_pipeline(ctx, module, build_pipeline(spec))
    return module, store, w.astype(np.float64)


def _bounds(module, store, r):
    fn = next(op for op in module.walk() if isinstance(op, func.FuncOp))
    (layer,) = analyse_function(fn, store, arg_range=r)
    return layer


def _error(module, store, w, x):
    y = run_module(module, store, {"arg0": x.astype(np.float32)})["out0"]
    return np.abs(y.astype(np.float64) - x.astype(np.float64) @ w)


CASES = st.tuples(st.sampled_from([16, 48, 64, 200]), st.sampled_from([1, 8, 24]),
                  st.sampled_from([16, 32]), st.sampled_from(["q3p5", "pair43"]), st.booleans(),
                  st.floats(0.01, 100.0), st.integers(0, 2**32 - 1))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CASES, st.sampled_from(["uniform", "corners", "sparse", "gauss", "worst"]))
def test_worst_case_bound_is_never_exceeded(case, kind):
    k, n, group, layout, int8, r, seed = case
    rng = np.random.default_rng(seed)
    module, store, w = _quantized(k, n, group, layout, int8, rng)
    layer = _bounds(module, store, r)
    assert layer.float_name == "w" and layer.bound is not None
    shape = (4, k)
    if kind == "uniform":
        x = rng.uniform(-r, r, shape)
    elif kind == "corners":
        x = r * rng.choice([-1.0, 1.0], shape)
    elif kind == "sparse":
        x = np.where(rng.random(shape) < 0.1, rng.uniform(-r, r, shape), 0.0)
    elif kind == "gauss":
        x = np.clip(rng.standard_normal(shape) * r / 3, -r, r)
    else:  # the weight-error worst case of column 0: x = r * sign(E[:, 0])
        e = w - semantics.dequantized(store[layer.weight_name]).astype(np.float64)
        x = np.broadcast_to(r * np.where(e[:, 0] >= 0, 1.0, -1.0), shape)
    x = np.clip(x.astype(np.float32), -np.float32(r), np.float32(r))
    assert np.all(_error(module, store, w, x) <= layer.bound)


@pytest.mark.parametrize("layout,int8", [("q3p5", False), ("q3p5", True), ("pair43", False),
                                         ("pair43", True)])
def test_bound_is_tight_within_100x_on_typical_gaussian_inputs(layout, int8):
    rng = np.random.default_rng(7)
    k, n, r = 256, 32, 3.0
    module, store, w = _quantized(k, n, 32, layout, int8, rng)
    layer = _bounds(module, store, r)
    x = np.clip(rng.standard_normal((4, k)) * r / 3, -r, r)  # typical: |x| <= r, sigma r/3
    ratio = _error(module, store, w, x).max() / layer.bound.max()
    assert 1 / 100 < ratio <= 1, ratio
    if not int8:  # the weight part is attained: x = r * sign(E[:, n]) reaches 99% of it
        e = w - semantics.dequantized(store[layer.weight_name]).astype(np.float64)
        x = np.broadcast_to(r * np.sign(e[:, 0]), (4, k))
        assert _error(module, store, w, x)[0, 0] >= 0.99 * layer.bound[0, 0]


def test_rms_estimate_matches_uniform_inputs():
    rng = np.random.default_rng(3)
    module, store, w = _quantized(128, 64, 32, "q3p5", True, rng)
    layer = _bounds(module, store, 2.0)
    errors = np.concatenate([
        (_error(module, store, w, rng.uniform(-2, 2, (4, 128))) ** 2).ravel() for _ in range(8)])
    measured = np.sqrt(errors.mean())
    assert 0.6 < measured / layer.rms < 1.6, (measured, layer.rms)


FUSED = ("default,fuse-dequant-matmul,fuse-norms,fuse-swiglu,fuse-attention,"
         "fuse-matmul-bias-act,fuse-residual")
ENCODER = EXAMPLES / "models" / "encoder_tiny.onnx"


def _activation64(name, y):
    if name == "relu":
        return np.maximum(y, 0.0)
    if name == "silu":
        return y / (1.0 + np.exp(-y))
    if name == "gelu_tanh":
        return 0.5 * y * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (y + 0.044715 * y**3)))
    if name == "gelu":
        return 0.5 * y * (1.0 + np.vectorize(math.erf)(y / math.sqrt(2.0)))
    return y


@pytest.mark.parametrize("model,shape,passes", [
    (LLAMA, {"input_ids": (1, 8)}, None),
    (LLAMA, {"input_ids": (1, 8)}, "default,int8-activations"),
    (LLAMA, {"input_ids": (1, 8)}, FUSED),
    (ENCODER, {"hidden": (1, 7, 64)}, None),
    (ENCODER, {"hidden": (1, 7, 64)}, FUSED),
])
def test_intervals_and_bounds_hold_on_real_activations(monkeypatch, model, shape, passes):
    """Interval analysis through whole models (gather, decomposed RMSNorm, LayerNorm, RoPE,
    softmax, SiLU, fused ops): every matmul input stays in its proven range, every error in
    its bound, and the RMS estimate of the norm-fed layers is within 1.5x of the measured."""
    arg_range = 4.0 if model == ENCODER else 0.0
    passes = (passes or "default") + f",verify-quant-error{{arg-range={arg_range}}}"
    _, module = compile_to_module(model, Options(passes=passes, shapes=shape))
    store = store_of(module)
    fn = next(op for op in module.walk() if isinstance(op, func.FuncOp))
    layers = {id(layer.op): layer for layer in analyse_function(fn, store, arg_range)}
    assert layers and all(layer.bound is not None for layer in layers.values())
    inputs, seen = {}, []
    fused = getattr(quant3p5, "FusedMatmulOp", None)

    def wrap(kind):
        original = semantics.IMPLEMENTATIONS[kind]

        def checked(interp, op, args):
            results = original(interp, op, args)
            if kind is quant3p5.QuantizeActivationsOp:
                inputs[op.quantized] = args[0]
                return results
            layer = layers[id(op)]
            x = (inputs[op.lhs] if kind is quant3p5.MatmulInt8Op else args[0]).astype(np.float64)
            assert np.abs(x).max() <= op.attributes["q35c.input_absmax"].value.data
            ref = x @ np.asarray(store[layer.float_name], np.float64)
            y = results[0].astype(np.float64)
            slack = 0.0
            if kind is fused:
                rest = iter(args[2:])
                if op.bias is not None:
                    ref = ref + next(rest)
                ref = _activation64(op.activation.data, ref)
                if op.residual is not None:  # the residual add is not part of the bound
                    ref, slack = ref + next(rest), 2.0**-23 * np.abs(y)
            error = np.abs(y - ref)
            assert np.all(error <= layer.bound + slack)
            seen.append((layer.weight_name, error.max() / layer.bound.max(),
                         np.sqrt((error**2).mean()) / layer.rms))
            return results

        monkeypatch.setitem(semantics.IMPLEMENTATIONS, kind, checked)

    for kind in (quant3p5.MatmulOp, quant3p5.MatmulInt8Op, quant3p5.QuantizeActivationsOp,
                 *([fused] if fused else [])):
        wrap(kind)
    rng = np.random.default_rng(0)
    for _ in range(3):
        if model == ENCODER:
            feed = {"hidden": np.clip(rng.standard_normal((1, 7, 64)), -4, 4)}
        else:
            feed = {"input_ids": rng.integers(0, 256, (1, 8))}
        run_module(module, store, feed)
    assert len(seen) == 3 * len(layers)
    for name, tight, rms in seen:
        if any(p in name for p in ("q_proj", "up_proj", "lm_head", "fc1")):  # norm-fed
            assert tight > 1 / 10 and 1 / 1.5 < rms < 1.5, (name, tight, rms)
    # down_proj's input silu(gate) * up: the L1 fact (a product of two balls) keeps the
    # bound within 75x of the measured error (it was 76x to 97x with the ball alone; 70.3x
    # at most since format version 2's words, shared by 11 columns at K = 256, N = 64)
    down = [max(t for n, t, _ in seen if n == name) for name in
            {n for n, _, _ in seen if "down_proj" in n}]
    assert all(t > 1 / 75 for t in down), down


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 5), st.floats(0.0, 20.0), st.integers(0, 2**32 - 1))
def test_l1_box_bound_is_the_exact_knapsack_optimum(k, n, total, seed):
    """max sum_k |y_k||c_kn| over |y_k| <= cap_k, sum |y_k| <= total: never below a feasible
    point (sound) and equal to the greedy optimum (tight)."""
    rng = np.random.default_rng(seed)
    cap, c = rng.uniform(0, 3, k), rng.standard_normal((k, n))
    bound = _l1_box_max(cap, total, c)
    for col in range(n):
        a = np.abs(c[:, col])
        left, best = total, 0.0
        for i in np.argsort(-a):
            take = min(cap[i], left)
            best, left = best + take * a[i], left - take
        assert best <= bound[col] <= best * (1 + 1e-8) + 1e-12
        for _ in range(20):  # random feasible points stay below
            y = rng.uniform(-1, 1, k) * cap
            y *= min(1.0, total / max(np.abs(y).sum(), 1e-300))
            assert np.abs(y) @ a <= bound[col] * (1 + 1e-12)


def test_onnx_importer_records_the_node_of_each_matmul():
    # import only: the matmuls carry their ONNX node
    _, module = compile_to_module(LLAMA, Options(passes="", shapes={"input_ids": (1, 8)}))
    matmuls = [op for op in module.walk() if op.name in ("linalg.matmul", "q35nn.batch_matmul")
               and "q35c.onnx_node" in op.attributes]
    assert matmuls and origin_of(matmuls[0]) == "ONNX node '/layers.0/self_attn/q_proj/MatMul'"


@pytest.mark.parametrize("passes", ["default", FUSED + ",int8-activations"])
def test_onnx_node_survives_quantization_int8_and_fusion(passes):
    # every op that replaced an imported matmul still names its ONNX node, so the --report
    # source column and overflow errors point at the model (passes/matching.py: copy_origin)
    _, module = compile_to_module(LLAMA, Options(passes=passes, shapes={"input_ids": (1, 8)}))
    kinds = (quant3p5.MatmulOp, quant3p5.MatmulInt8Op, quant3p5.FusedMatmulOp,
             q35nn.AttentionOp, q35nn.BatchMatmulOp)
    ops = [op for op in module.walk() if isinstance(op, kinds)]
    assert len([op for op in ops if not isinstance(op, q35nn.AttentionOp)]) >= 15
    for op in ops:
        assert (origin_of(op) or "").startswith("ONNX node '/"), op.name
    names = {origin_of(op) for op in ops}
    assert "ONNX node '/layers.1/mlp/down_proj/MatMul'" in names
    assert "ONNX node '/lm_head/MatMul'" in names
    if "fuse-attention" in passes:
        assert any(isinstance(op, q35nn.AttentionOp) for op in ops)


def test_report_source_column_names_onnx_nodes_on_the_int8_path(tmp_path):
    result = q35c(LLAMA, "--shape", "input_ids=1,8", "--act", "int8", "--report",
                  "-o", tmp_path / "out")
    rows = result.stdout.splitlines()[2:]
    assert len(rows) == 15 and all("matmul_int8" in row for row in rows)
    assert rows[0].endswith("ONNX node '/layers.0/self_attn/q_proj/MatMul'")
    assert rows[-1].endswith("ONNX node '/lm_head/MatMul'")


def test_float_source_is_found_only_for_matching_entries():
    store = WeightStore()
    store["a"] = np.zeros((4, 2), np.float32)
    assert float_source(store, "a.q3p5", (4, 2)) == "a"
    assert float_source(store, "a.pair43.1", (4, 2)) == "a"
    assert float_source(store, "a.q3p5", (2, 4)) is None
    assert float_source(store, "b.q3p5", (4, 2)) is None


def test_unknown_weights_are_reported_not_guessed():
    module = compile_mlir(OVERFLOW, "verify-quant-error")
    (op,) = ops_of(module, quant3p5.MatmulInt8Op)
    assert op.attributes["q35c.err_parts"].data == "weights known only at run time"
    assert "q35c.err_bound" not in op.attributes


# -- pipeline, report, dumps -------------------------------------------------------------------


def test_default_pipeline_ends_with_both_verification_passes():
    names = [p.name for p in build_pipeline(None)]
    assert names[-2:] == ["verify-overflow", "verify-quant-error"]
    names = [p.name for p in build_pipeline("default,int8-activations")]
    assert names[-3:] == ["int8-activations", "verify-overflow", "verify-quant-error"]
    names = [p.name for p in build_pipeline("default,verify-quant-error{input-range=2.0}")]
    assert names.count("verify-quant-error") == 1 and names[-1] == "verify-overflow"
    assert [p.name for p in build_pipeline("canonicalize")] == ["canonicalize"]


def test_report_table_on_stdout_only_when_asked(tmp_path):
    plain = q35c(LLAMA, "--shape", "input_ids=1,8", "-o", tmp_path / "a")
    assert plain.stdout == ""
    result = q35c(LLAMA, "--shape", "input_ids=1,8", "--report", "-o", tmp_path / "b")
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["layer", "op", "K"] and len(lines) == 2 + 15
    assert lines[2].startswith("layers.0.self_attn.q_proj.weight_t  matmul")
    ir = q35c(EXAMPLES / "mlp.mlir", "--report", "--passes", "default,int8-activations")
    assert ir.stdout.startswith('"builtin.module"') and "fc1.weight" in ir.stderr
    assert "matmul_int8" in ir.stderr and "%" in ir.stderr.splitlines()[2]


def test_dumps_with_bounds_parse_in_upstream_mlir_opt(tmp_path):
    mlir_opt = require_tool("mlir-opt-22")
    irdl = tmp_path / "q35c.irdl.mlir"
    irdl.write_text(q35c("irdl").stdout)
    q35c(EXAMPLES / "mlp.mlir", "-o", tmp_path / "out", "--passes",
         "default,int8-activations,verify-quant-error{column-bounds=true}")
    text = (tmp_path / "out" / "mlp.mlir").read_text()
    assert "q35c.err_bound_cols = dense<" in text and "q35c.acc_bound" in text
    result = subprocess.run([mlir_opt, f"--irdl-file={irdl}", str(tmp_path / "out" / "mlp.mlir"),
                             "-o", "/dev/null"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
