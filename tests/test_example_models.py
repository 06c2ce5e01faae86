"""The committed example ONNX models in examples/models/ (see its README.md).

Needs onnx and numpy; the onnxruntime tests skip without onnxruntime; only the
full-rebuild determinism test needs torch.
"""

from __future__ import annotations

import collections
import importlib.util
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

MODELS_DIR = Path(__file__).resolve().parents[1] / "examples" / "models"
INVALID_DIR = MODELS_DIR / "invalid"


def _load_build_module():
    spec = importlib.util.spec_from_file_location("q35c_build_example_models",
                                                  MODELS_DIR / "build_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_models = _load_build_module()

# name -> (input name, input dtype, shapes to run with, output name, output last dim)
VALID = {
    "llama_tiny.onnx": ("input_ids", np.int64, [(1, 1), (2, 7), (3, 16)], "logits", 256),
    "llama_tiny_matmulnbits.onnx": ("input_ids", np.int64, [(1, 1), (2, 7)], "logits", 256),
    "llama_tiny_qdq_int4.onnx": ("input_ids", np.int64, [(1, 1), (2, 7)], "logits", 256),
    "llama_tiny_gather_quantized.onnx": ("input_ids", np.int64, [(1, 1), (2, 7)], "logits", 256),
    "encoder_tiny.onnx": ("hidden", np.float32, [(1, 1), (2, 7), (3, 16)],
                          "last_hidden_state", 64),
    "encoder_tiny_qdq_int8.onnx": ("hidden", np.float32, [(1, 1), (2, 7)],
                                   "last_hidden_state", 64),
}
FP32_OF = {
    "llama_tiny_matmulnbits.onnx": "llama_tiny.onnx",
    "llama_tiny_qdq_int4.onnx": "llama_tiny.onnx",
    "llama_tiny_gather_quantized.onnx": "llama_tiny.onnx",
    "encoder_tiny_qdq_int8.onnx": "encoder_tiny.onnx",
}
# Max relative (Frobenius) error vs the fp32 model; measured 0.153 / 0.154 / 0.172 / 0.0056.
REL_TOL = {
    "llama_tiny_matmulnbits.onnx": 0.25,
    "llama_tiny_qdq_int4.onnx": 0.25,
    "llama_tiny_gather_quantized.onnx": 0.25,
    "encoder_tiny_qdq_int8.onnx": 0.02,
}


def load(name: str) -> onnx.ModelProto:
    return onnx.load(MODELS_DIR / name)


def histogram(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter((f"{n.domain}." if n.domain else "") + n.op_type
                               for n in model.graph.node)


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def make_input(name: str, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = VALID[name][1]
    if dtype == np.int64:
        return rng.integers(0, 256, size=shape, dtype=np.int64)
    return rng.standard_normal((*shape, 64)).astype(np.float32)


def run_ort(name: str, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(MODELS_DIR / name), options,
                                   providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {VALID[name][0]: x})
    return out


def rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", build_models.ALL_FILES)
def test_file_is_small_and_self_contained(name):
    path = MODELS_DIR / name
    assert path.is_file()
    assert path.stat().st_size < 1_000_000
    if name in VALID or name == "invalid/unsupported_ops.onnx":
        model = onnx.load(path, load_external_data=False)
        assert not any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)
        assert model.producer_name == build_models.PRODUCER_NAME


# --------------------------------------------------------------------------
# Valid models
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", [*VALID, "invalid/unsupported_ops.onnx"])
def test_check_model_full(name):
    onnx.checker.check_model(load(name), full_check=True)


@pytest.mark.parametrize("name", VALID)
def test_io_signature(name):
    model = load(name)
    in_name, in_dtype, _, out_name, last = VALID[name]
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == in_name
    assert out.name == out_name
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    if in_dtype == np.int64:
        assert inp.type.tensor_type.elem_type == TensorProto.INT64
        assert in_dims == ["batch", "seq"]
    else:
        assert inp.type.tensor_type.elem_type == TensorProto.FLOAT
        assert in_dims == ["batch", "seq", 64]
    assert out.type.tensor_type.elem_type == TensorProto.FLOAT
    assert out_dims == ["batch", "seq", last]


@pytest.mark.parametrize("name", VALID)
def test_runs_in_onnxruntime(name):
    _, _, shapes, _, last = VALID[name]
    for shape in shapes:
        y = run_ort(name, make_input(name, shape))
        assert y.shape == (*shape, last)
        assert y.dtype == np.float32
        assert np.isfinite(y).all()


def test_llama_graph_structure():
    model = load("llama_tiny.onnx")
    h = histogram(model)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 18)]
    # 7 projections x 2 layers + lm_head, plus QK^T and PV per layer.
    assert h["MatMul"] == 19
    # RMSNorm decomposed (pow / mean / sqrt / div / mul), 2 per layer + final.
    assert h["Pow"] == h["ReduceMean"] == h["Sqrt"] == 5
    # Rotary from positions; causal mask built in the graph.
    for op in ("Range", "Cos", "Sin", "Neg", "Slice", "Trilu", "Where", "Expand",
               "ConstantOfShape", "Shape", "Softmax", "Sigmoid"):
        assert h[op] >= 1, op
    inits = {t.name: t for t in model.graph.initializer}
    assert list(inits["embed_tokens.weight"].dims) == [256, 64]
    assert list(inits["lm_head.weight_t"].dims) == [64, 256]
    assert list(inits["layers.0.self_attn.k_proj.weight_t"].dims) == [64, 32]  # 2 KV heads
    norm = numpy_helper.to_array(inits["norm.weight"])
    assert not np.allclose(norm, 1.0) and np.allclose(norm, 1.0, atol=0.5)


def test_encoder_graph_structure():
    model = load("encoder_tiny.onnx")
    h = histogram(model)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert h["LayerNormalization"] == 5
    assert h["Erf"] == 2 and h["Softmax"] == 2
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert len(gemms) == 6
    assert all(attrs(n).get("transB") == 1 and len(n.input) == 3 for n in gemms)
    assert h["MatMul"] == 10  # o_proj, fc1, fc2, QK^T, PV per layer


# --------------------------------------------------------------------------
# Quantized variants
# --------------------------------------------------------------------------

def _weight_matmuls(model: onnx.ModelProto) -> int:
    inits = {t.name for t in model.graph.initializer}
    return sum(1 for n in model.graph.node
               if n.op_type == "MatMul" and any(i in inits for i in n.input))


def test_matmulnbits_ops():
    model = load("llama_tiny_matmulnbits.onnx")
    nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == 15 and all(n.domain == "com.microsoft" for n in nodes)
    assert _weight_matmuls(model) == 0
    assert ("com.microsoft", 1) in [(o.domain, o.version) for o in model.opset_import]
    inits = {t.name: t for t in model.graph.initializer}
    for n in nodes:
        a = attrs(n)
        assert a["bits"] == 4 and a["block_size"] == 32
        k, nn = a["K"], a["N"]
        blocks = math.ceil(k / 32)
        assert len(n.input) == 4  # asymmetric: packed zero points present
        assert list(inits[n.input[1]].dims) == [nn, blocks, 16]
        assert inits[n.input[1]].data_type == TensorProto.UINT8
        assert list(inits[n.input[2]].dims) == [nn, blocks]
        assert list(inits[n.input[3]].dims) == [nn, math.ceil(blocks * 4 / 8)]


def test_qdq_int4_ops():
    model = load("llama_tiny_qdq_int4.onnx")
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 21)]
    inits = {t.name: t for t in model.graph.initializer}
    consumers = collections.defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            consumers[i].append(n.op_type)
    dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dqs) == 15
    assert _weight_matmuls(model) == 0
    for n in dqs:
        assert attrs(n) == {"axis": 0, "block_size": 32}
        w, s, zp = (inits[i] for i in n.input)
        assert w.data_type == TensorProto.UINT4 and zp.data_type == TensorProto.UINT4
        k, nn = w.dims
        assert list(s.dims) == list(zp.dims) == [math.ceil(k / 32), nn]
        assert consumers[n.output[0]] == ["MatMul"]


def test_gather_quantized_ops():
    model = load("llama_tiny_gather_quantized.onnx")
    h = histogram(model)
    assert h["com.microsoft.GatherBlockQuantized"] == 1
    assert h["com.microsoft.MatMulNBits"] == 15
    (node,) = [n for n in model.graph.node if n.op_type == "GatherBlockQuantized"]
    assert attrs(node) == {"block_size": 32, "gather_axis": 0, "quantize_axis": 1}
    inits = {t.name: t for t in model.graph.initializer}
    assert "embed_tokens.weight" not in inits
    data, ids, scales, zp = node.input
    assert ids == "input_ids"
    assert inits[data].data_type == TensorProto.UINT4 and list(inits[data].dims) == [256, 64]
    assert list(inits[scales].dims) == list(inits[zp].dims) == [256, 2]


def test_encoder_int8_ops():
    model = load("encoder_tiny_qdq_int8.onnx")
    inits = {t.name: t for t in model.graph.initializer}
    consumer = {i: n for n in model.graph.node for i in n.input}
    dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dqs) == 12
    assert _weight_matmuls(model) == 0
    assert not any(n.op_type == "Gemm" and n.input[1] in inits for n in model.graph.node)
    for n in dqs:
        w, s, zp = (inits[i] for i in n.input)
        use = consumer[n.output[0]]
        axis = attrs(n)["axis"]
        assert w.data_type == TensorProto.INT8 and zp.data_type == TensorProto.INT8
        assert s.data_type == TensorProto.FLOAT
        # Per output channel: axis 1 of a MatMul [K, N] weight, axis 0 of a Gemm transB=1 [N, K].
        assert (use.op_type, axis) in {("MatMul", 1), ("Gemm", 0)}
        assert list(s.dims) == list(zp.dims) == [w.dims[axis]]
        if use.op_type == "MatMul":
            assert use.input[1] == n.output[0]
        else:
            assert use.input[1] == n.output[0] and attrs(use)["transB"] == 1


@pytest.mark.parametrize("name", FP32_OF)
def test_quantized_close_to_fp32(name, record_property):
    x = make_input(name, (2, 9), seed=1)
    ref = run_ort(FP32_OF[name], x)
    err = rel_err(run_ort(name, x), ref)
    record_property("rel_err", err)
    print(f"{name}: rel err vs fp32 = {err:.4f}")
    assert err < REL_TOL[name]
    # Sanity: the quantized model is not just the fp32 one.
    assert err > 1e-4


@pytest.mark.parametrize("name", ["llama_tiny_qdq_int4.onnx", "encoder_tiny_qdq_int8.onnx",
                                  "encoder_tiny.onnx"])
def test_reference_evaluator_matches_onnxruntime(name):
    """Standard-ONNX models run in onnx's pure-Python evaluator too (a dependency-free
    oracle); with ORT's graph optimizations off (no DQ+MatMul fusion) they agree."""
    from onnx.reference import ReferenceEvaluator

    model = load(name)
    if name == "encoder_tiny_qdq_int8.onnx":
        # onnx 1.23's evaluator implements DequantizeLinear from opset 19 only; nothing
        # this model uses changes meaning between opsets 17 and 19.
        model.opset_import[0].version = 19
    x = make_input(name, (2, 5), seed=2)
    (ref,) = ReferenceEvaluator(model).run(None, {VALID[name][0]: x})
    np.testing.assert_allclose(ref, run_ort(name, x, optimize=False), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------
# Invalid models
# --------------------------------------------------------------------------

def test_invalid_truncated():
    data = (INVALID_DIR / "truncated.onnx").read_bytes()
    with pytest.raises(Exception, match="(?i)pars|corrupt|decode"):
        onnx.load_from_string(data)


def test_invalid_missing_initializer():
    model = onnx.load(INVALID_DIR / "missing_initializer.onnx")
    produced = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer}
    produced |= {o for n in model.graph.node for o in n.output}
    assert [i for n in model.graph.node for i in n.input if i not in produced] == ["fc.weight"]
    with pytest.raises(onnx.checker.ValidationError, match="fc.weight"):
        onnx.checker.check_model(model)


def test_invalid_unsupported_ops():
    model = onnx.load(INVALID_DIR / "unsupported_ops.onnx")
    assert {n.name: n.op_type for n in model.graph.node} == {
        "/drop/RandomUniformLike": "RandomUniformLike", "/drop/Bernoulli": "Bernoulli",
        "/drop/Mul": "Mul", "/lstm/LSTM": "LSTM", "/proj/Einsum": "Einsum",
        "/head/TopK": "TopK"}
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(INVALID_DIR / "unsupported_ops.onnx"),
                                   providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((5, 1, 8)).astype(np.float32)
    values, indices = session.run(None, {"x": x})
    assert values.shape == indices.shape == (5, 1, 2) and np.isfinite(values).all()


def test_invalid_bad_external_data():
    path = INVALID_DIR / "bad_external_data.onnx"
    assert not (MODELS_DIR / "outside.bin").exists()
    model = onnx.load(path, load_external_data=False)
    (t,) = model.graph.initializer
    assert t.data_location == TensorProto.EXTERNAL
    assert {e.key: e.value for e in t.external_data}["location"] == "../outside.bin"
    with pytest.raises(Exception, match="outside"):
        onnx.load(path)


def test_invalid_shape_mismatch():
    model = onnx.load(INVALID_DIR / "shape_mismatch.onnx")
    onnx.checker.check_model(model)  # structurally fine ...
    with pytest.raises(onnx.shape_inference.InferenceError, match="differ"):
        onnx.checker.check_model(model, full_check=True)  # ... but [2,4] is declared [2,3]


# --------------------------------------------------------------------------
# Rebuild
# --------------------------------------------------------------------------

def _differing(out: Path, names) -> list[str]:
    return [n for n in names if (out / n).read_bytes() != (MODELS_DIR / n).read_bytes()]


def test_rebuild_without_torch_is_identical(tmp_path):
    """The encoder and invalid/ models need only numpy and onnx."""
    build_models.build_all(tmp_path, with_torch=False)
    names = [n for n in build_models.ALL_FILES if not n.startswith("llama")]
    assert _differing(tmp_path, names) == []


def test_rebuild_is_byte_identical(tmp_path):
    pytest.importorskip("torch", exc_type=ImportError)  # CI may lack torch
    pytest.importorskip("onnxruntime")
    build_models.build_all(tmp_path / "a")
    differing = _differing(tmp_path / "a", build_models.ALL_FILES)
    if not differing:
        return
    installed = build_models.installed_versions()
    if installed == build_models.BUILT_WITH:
        pytest.fail(f"rebuilt files differ from the committed ones: {differing}")
    # Other tool versions: the bytes may change, but the build must still be deterministic.
    build_models.build_all(tmp_path / "b")
    for name in build_models.ALL_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    pytest.skip(f"{differing} differ from the committed files, built with "
                f"{build_models.BUILT_WITH}; installed: {installed}")
