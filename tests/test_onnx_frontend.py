"""The ONNX frontend against onnxruntime: exact on float, exact against a fake-quant model.

Oracles (issue #3): (1) compiler correctness: the model with every weight replaced by its
Q3P5-dequantized value, run in onnxruntime, must match q35c's interpreter to float round-off;
(2) quantization quality: the fp32 model in onnxruntime vs q35c, with generous bounds (the
benchmark prints the numbers).
"""

import subprocess

import numpy as np
import onnx
import pytest
from conftest import EXAMPLES, q35c, require_tool
from onnx import numpy_helper

from q35c.compiler.quant import Q3P5Tensor, dequantize
from q35c.compiler.weights import WeightStore

ort = pytest.importorskip("onnxruntime")

MODELS = EXAMPLES / "models"
CASES = {
    "llama_tiny": ("input_ids", (2, 9)),
    "encoder_tiny": ("hidden", (2, 9, 64)),
}


def model_input(name: str) -> np.ndarray:
    input_name, shape = CASES[name]
    rng = np.random.default_rng(11)
    if input_name == "input_ids":
        return rng.integers(0, 256, shape).astype(np.int64)
    return rng.standard_normal(shape).astype(np.float32)


def run_ort(model: onnx.ModelProto | str, name: str) -> np.ndarray:
    data = model if isinstance(model, str) else model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {CASES[name][0]: model_input(name)})[0]


def run_q35c(name: str, tmp_path, *flags: str) -> np.ndarray:
    input_name, shape = CASES[name]
    np.save(tmp_path / "x.npy", model_input(name))
    out = tmp_path / ("out" + "".join(f.strip("-") for f in flags).replace(",", "_"))
    q35c("run", MODELS / f"{name}.onnx", "--shape", f"{input_name}={','.join(map(str, shape))}",
         "--input", f"{input_name}={tmp_path / 'x.npy'}", "-o", out, *flags)
    (output,) = [p for p in out.glob("*.npy") if p.stem != input_name]
    return np.load(output)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


def fake_quant_model(name: str, weights: WeightStore) -> onnx.ModelProto:
    """The ONNX model with each initializer that q35c quantized replaced by deq(Q3P5(W))."""
    model = onnx.load(str(MODELS / f"{name}.onnx"))
    by_name = {t.name: t for t in model.graph.initializer}
    replaced = 0
    for entry in weights.names():
        value = weights[entry]
        if not isinstance(value, Q3P5Tensor):
            continue
        base = entry.removesuffix(".q3p5")
        deq = dequantize(value)
        if base.endswith(".T") and base[:-2] in by_name:  # a Gemm weight stored transposed
            base, deq = base[:-2], deq.T
        by_name[base].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(deq), base))
        replaced += 1
    assert replaced >= 6
    return model


@pytest.mark.parametrize("name", sorted(CASES))
def test_float_import_matches_onnxruntime(name, tmp_path):
    ours = run_q35c(name, tmp_path, "--passes", "")
    assert rel_err(ours, run_ort(str(MODELS / f"{name}.onnx"), name)) < 1e-5


@pytest.mark.parametrize("name", sorted(CASES))
def test_quantized_model_matches_fake_quant_onnxruntime(name, tmp_path):
    input_name, shape = CASES[name]
    q35c(MODELS / f"{name}.onnx", "--shape", f"{input_name}={','.join(map(str, shape))}",
         "-o", tmp_path / "compiled")
    weights = WeightStore(tmp_path / "compiled" / f"{name}.q35w")
    expected = run_ort(fake_quant_model(name, weights), name)
    ours = run_q35c(name, tmp_path)
    assert rel_err(ours, expected) < 1e-4


@pytest.mark.parametrize("name,max_rel_err,min_cosine", [
    ("llama_tiny", 0.30, 0.95), ("encoder_tiny", 0.15, 0.99)])
def test_quantization_quality_against_fp32(name, max_rel_err, min_cosine, tmp_path):
    reference = run_ort(str(MODELS / f"{name}.onnx"), name)
    for flags in ((), ("--passes", "default,int8-activations")):
        ours = run_q35c(name, tmp_path, *flags)
        assert rel_err(ours, reference) < max_rel_err
        assert cosine(ours, reference) > min_cosine


def test_keep_float_leaves_matching_weights_in_float(tmp_path):
    out = q35c(MODELS / "llama_tiny.onnx", "--shape", "input_ids=1,4",
               "--keep-float", "lm_head|down_proj").stdout
    assert '"quant3p5.weight"() {name = "lm_head.weight_t"}' in out
    assert "down_proj.weight_t.q3p5" not in out
    assert "up_proj.weight_t.q3p5" in out


def test_llama_compiles_with_dumps_that_upstream_mlir_opt_accepts(tmp_path):
    mlir_opt = require_tool("mlir-opt-22")
    (tmp_path / "q35c.irdl.mlir").write_text(q35c("irdl").stdout)
    q35c(MODELS / "llama_tiny.onnx", "--shape", "input_ids=1,8", "--target", "mlir",
         "-o", tmp_path / "out", "--dump-ir", tmp_path / "d")
    dumps = sorted((tmp_path / "d").glob("*.mlir"))
    assert [p.name for p in dumps][:2] == ["00-input.mlir", "01-quantize-weights.mlir"]
    for path in [*dumps, tmp_path / "out" / "llama_tiny.mlir"]:
        assert path.stat().st_size < 200_000, path
        result = subprocess.run([mlir_opt, f"--irdl-file={tmp_path / 'q35c.irdl.mlir'}",
                                 str(path), "-o", "/dev/null"], capture_output=True, text=True)
        assert result.returncode == 0, f"{path.name}: {result.stderr[:2000]}"
