"""The reference interpreter: each op against an independent formula or a slow oracle."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from xdsl.builder import Builder
from xdsl.dialects import func, math as xmath
from xdsl.dialects.builtin import ModuleOp, TensorType, f32, i8
from xdsl.ir import Block, Region
from xdsl.rewriter import InsertPoint

from q35c.compiler.quant import CODEBOOK, dequantize, quantize
from q35c.compiler.weights import WeightStore
from q35c.dialects import q35nn, quant3p5
from q35c.semantics import (
    InterpreterError,
    matmul_int8,
    quantize_activations,
    run_module,
)


def build(arg_types, body) -> ModuleOp:
    """A module with @main(args) -> body(builder, *args)."""
    block = Block(arg_types=arg_types)
    builder = Builder(InsertPoint.at_end(block))
    results = body(builder, *block.args)
    builder.insert(func.ReturnOp(*results))
    fn = func.FuncOp("main", (arg_types, [r.type for r in results]), Region(block))
    module = ModuleOp([fn])
    module.verify()
    return module


def run(module, store=None, **inputs):
    return run_module(module, store or WeightStore(), inputs)


def t(*shape, element=f32):
    return TensorType(element, shape)


def test_quantized_matmul_is_x_times_dequantized_weights():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((96, 24)).astype(np.float32)
    store = WeightStore()
    store["w"] = quantize(w, group_size=32, name="w")
    packed = quant3p5.PackedWeightType((96, 24), 32)
    module = build([t(3, 96)], lambda b, x: [
        b.insert(quant3p5.MatmulOp(x, b.insert(quant3p5.WeightOp("w", packed)).result)).result])
    x = rng.standard_normal((3, 96)).astype(np.float32)
    y = run(module, store, arg0=x)["out0"]
    want = (x.astype(np.float64) @ dequantize(store["w"]).astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(y, want)


def slow_quantize_activations(row):
    """Per-element oracle for quantize_activations, with Python floats rounded to f32."""
    scale = np.float32(max(abs(float(v)) for v in row)) / np.float32(127)
    scale = np.float32(1.0) if scale == 0 else np.float32(scale)
    q = []
    for v in row:
        r = float(np.float32(v) / scale)
        q.append(max(-127, min(127, round(r))))  # Python round() is half-to-even
    return q, scale


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.floats(-1e4, 1e4, width=32), min_size=5, max_size=5),
                min_size=1, max_size=4))
def test_activation_quantization_matches_slow_oracle(rows):
    x = np.array(rows, dtype=np.float32)
    q, scale = quantize_activations(x)
    for r, row in enumerate(x):
        want_q, want_scale = slow_quantize_activations(row)
        assert scale[r] == want_scale
        assert q[r].tolist() == want_q


def test_activation_quantization_rounds_half_to_even_and_handles_zero_rows():
    x = np.array([[127.0, 0.5, 1.5, -2.5], [0, 0, 0, 0]], dtype=np.float32)
    q, scale = quantize_activations(x)
    assert q.tolist() == [[127, 0, 2, -2], [0, 0, 0, 0]]
    assert scale.tolist() == [1.0, 1.0]


def slow_matmul_int8(q, row_scale, packed):
    """Element-by-element oracle of the int8 path, in the documented order."""
    k, n = packed.shape
    codes, scales, offsets = packed.codes(), packed.scales(), packed.offsets()
    group = packed.group_size
    out = np.zeros((q.shape[0], n), np.float32)
    for r in range(q.shape[0]):
        for j in range(n):
            total = np.float32(0)
            for g in range(-(-k // group)):
                acc = sx = 0
                for kk in range(g * group, min(k, (g + 1) * group)):
                    level = int(CODEBOOK[codes[kk // 2, j], kk % 2])
                    acc += int(q[r, kk]) * level
                    sx += int(q[r, kk])
                term = np.float32(scales[g, j] * np.float32(acc)) + np.float32(
                    offsets[g, j] * np.float32(sx))
                total = np.float32(total + term)
            out[r, j] = np.float32(total * row_scale[r])
    return out


@pytest.mark.parametrize("k,n,group", [(64, 5, 16), (50, 3, 16), (7, 2, 16)])
def test_int8_matmul_matches_slow_oracle_bit_exactly(k, n, group):
    rng = np.random.default_rng(k)
    packed = quantize(rng.standard_normal((k, n)).astype(np.float32), group_size=group)
    q, s = quantize_activations(rng.standard_normal((3, k)).astype(np.float32))
    np.testing.assert_array_equal(matmul_int8(q, s, packed), slow_matmul_int8(q, s, packed))


def test_int8_path_approximates_float_path():
    rng = np.random.default_rng(1)
    packed = quantize(rng.standard_normal((256, 32)).astype(np.float32))
    x = rng.standard_normal((4, 256)).astype(np.float32)
    exact = x @ dequantize(packed)
    approx = matmul_int8(*quantize_activations(x), packed)
    assert np.linalg.norm(approx - exact) / np.linalg.norm(exact) < 0.02


def test_composite_ops_match_their_formulas():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    gamma = rng.standard_normal(8).astype(np.float32)
    beta = rng.standard_normal(8).astype(np.float32)
    module = build([t(3, 8), t(8), t(8)], lambda b, x, g, be: [
        b.insert(q35nn.SoftmaxOp(x)).result,
        b.insert(q35nn.LayerNormOp(x, g, be, 1e-5)).result,
        b.insert(q35nn.RMSNormOp(x, g, 1e-6)).result,
        b.insert(q35nn.GeluOp(x)).result,
        b.insert(q35nn.GeluOp(x, "tanh")).result,
        b.insert(q35nn.SiluOp(x)).result,
    ])
    out = run(module, arg0=x, arg1=gamma, arg2=beta)
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(1, keepdims=True))
    np.testing.assert_allclose(out["out0"], e / e.sum(1, keepdims=True), rtol=1e-6)
    norm = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out["out1"], norm * gamma + beta, rtol=1e-5, atol=1e-6)
    rms = x64 / np.sqrt((x64**2).mean(1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(out["out2"], rms * gamma, rtol=1e-6)
    gelu = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x64.flat]
    np.testing.assert_allclose(out["out3"].ravel(), gelu, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["out4"], out["out3"], atol=1e-3)  # tanh approximation
    np.testing.assert_allclose(out["out5"], x64 / (1 + np.exp(-x64)), rtol=1e-6)


def test_batch_matmul_broadcasts_and_gather_takes_rows():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 4, 8)).astype(np.float32)
    w = rng.standard_normal((8, 3)).astype(np.float32)
    table = rng.standard_normal((10, 8)).astype(np.float32)
    ids = np.array([[0, 9, -1]], dtype=np.int64)
    module = build(
        [t(2, 4, 8), t(8, 3), t(10, 8), TensorType(i8, (1, 3))], lambda b, a, w, tb, ix: [
            b.insert(q35nn.BatchMatmulOp(a, w)).result, b.insert(q35nn.GatherOp(tb, ix)).result])
    out = run(module, arg0=a, arg1=w, arg2=table, arg3=ids.astype(np.int8))
    np.testing.assert_allclose(out["out0"], a @ w, rtol=1e-5)
    np.testing.assert_array_equal(out["out1"], table[[[0, 9, 9]]])


def test_errors_name_the_problem():
    module = build([t(2, 2)], lambda b, x: [b.insert(q35nn.SiluOp(x)).result])
    with pytest.raises(InterpreterError, match="missing inputs: arg0"):
        run(module)
    with pytest.raises(InterpreterError, match=r"input 'arg0' has shape \(3,\), expected \(2, 2\)"):
        run(module, arg0=np.zeros(3, np.float32))
    packed = quant3p5.PackedWeightType((64, 8), 64)
    missing = build([t(1, 64)], lambda b, x: [
        b.insert(quant3p5.MatmulOp(x, b.insert(quant3p5.WeightOp("w", packed)).result)).result])
    with pytest.raises(ValueError, match="weight 'w' not found"):
        run(missing, arg0=np.zeros((1, 64), np.float32))


def test_quantized_example_stays_close_to_its_float_model(tmp_path):
    """End to end on examples/mlp.mlir: Q3P5 output vs the same model kept in float."""
    from conftest import EXAMPLES, q35c

    q35c("run", EXAMPLES / "mlp.mlir", "-o", tmp_path / "q", "--seed", "5")
    q35c("run", EXAMPLES / "mlp.mlir", "-o", tmp_path / "f", "--seed", "5", "--passes", "")
    q = np.load(tmp_path / "q" / "probs.npy")
    f = np.load(tmp_path / "f" / "probs.npy")
    assert not np.array_equal(q, f)
    assert np.abs(q - f).max() < 0.05


def test_sums_and_float_matmuls_run_in_the_documented_sequential_order():
    """The orders the module docstring defines (what a C loop reproduces bit for bit)."""
    from q35c.semantics import matmul_f64, sequential_sum

    rng = np.random.default_rng(8)
    x = (rng.standard_normal((3, 1000)) * 10.0 ** rng.integers(-6, 6, (3, 1000)))
    for r in range(3):
        total = 0.0
        for v in x[r].tolist():
            total += v
        assert sequential_sum(x)[r] == total
    assert sequential_sum(x, axis=0, keepdims=True).shape == (1, 1000)
    assert sequential_sum(np.zeros((2, 0))).tolist() == [0.0, 0.0]
    a = rng.standard_normal((2, 3, 257)).astype(np.float32)
    b = rng.standard_normal((257, 4)).astype(np.float32)
    got = matmul_f64(a, b)
    for t_, i, j in [(0, 0, 0), (1, 2, 3), (1, 1, 0)]:
        s = 0.0
        for p in range(257):
            s += float(a[t_, i, p]) * float(b[p, j])
        assert got[t_, i, j] == s


def test_transcendentals_are_libm_double_rounded_once_to_float32():
    from q35c.semantics import exp64, libm

    x = np.array([-100.0, -1.5, 0.0, 0.3, 88.5, 1000.0, np.nan], dtype=np.float32)
    module = build([t(7)], lambda b, v: [b.insert(xmath.ExpOp(v)).result,
                                        b.insert(xmath.LogOp(v)).result])
    out = run(module, arg0=x)
    want = [np.float32(math.exp(v)) if v < 700 else np.float32(np.inf) for v in x[:-1].tolist()]
    np.testing.assert_array_equal(out["out0"][:-1], want)
    assert np.isnan(out["out0"][-1]) and out["out0"].dtype == np.float32
    log = out["out1"]
    assert np.isnan(log[0]) and log[2] == -np.inf and log[3] == np.float32(math.log(0.3))
    assert exp64(np.array([[1.0, 2.0]])).shape == (1, 2)
    assert libm(math.pow, np.power)(np.float64(2.0), np.float64(10.0)) == 1024.0
