"""Real exporter graphs of other architectures (examples/exporters/zoo.py): tiny random-init
Hugging Face models (LLaMA, Qwen2, Mistral, Gemma, Phi-3, GPT-NeoX, GPT-2, OPT, BERT,
DistilBERT, ViT) exported by both torch.onnx exporters, run through q35c's interpreter and C
target and compared with onnxruntime. Needs the `models` extra (torch, transformers,
onnxscript; docs/smollm2.md), so it is in the slow tier and skipped without them."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import EXAMPLES

pytestmark = pytest.mark.slow

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxscript")

spec = importlib.util.spec_from_file_location("exporter_zoo", EXAMPLES / "exporters" / "zoo.py")
zoo = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = zoo
spec.loader.exec_module(zoo)


def run(path, target="interp", reference="onnxruntime"):
    """`zoo.check` (float import) through this Python's q35c CLI."""
    return zoo.check(path, target, quantized=False,
                     q35c=[sys.executable, "-m", "q35c.compiler.cli"], reference=reference)


def check(path, target="interp", reference="onnxruntime", tolerance=1e-5):
    """Fail unless q35c's outputs on `path` match the reference within `tolerance`."""
    result = run(path, target, reference)
    assert result["status"] == "ok", result["status"]
    assert result["rel"] < tolerance
    return result


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    status = {name: zoo.export(name, out) for name in zoo.ARCHITECTURES}
    return out, status


@pytest.mark.parametrize("name", list(zoo.ARCHITECTURES))
@pytest.mark.parametrize("exporter", zoo.EXPORTERS)
@pytest.mark.parametrize("target", ["interp", "c"])
def test_exported_architecture_matches_onnxruntime(exported, name, exporter, target):
    out, status = exported
    assert status[name][exporter].startswith("ok"), status[name][exporter]
    check(out / f"{name}.{exporter}.onnx", target)


@pytest.fixture(scope="module")
def optimized(exported):
    out, _ = exported
    return out, zoo.optimize(out)


@pytest.mark.parametrize("name", list(zoo.OPTIMIZER_TYPES))
@pytest.mark.parametrize("exporter", zoo.EXPORTERS)
@pytest.mark.parametrize("target", ["interp", "c"])
def test_onnxruntime_optimized_graph_matches_onnxruntime(optimized, name, exporter, target):
    """The same exports after onnxruntime's transformer optimizer (contrib-domain
    SkipLayerNormalization, Gelu, FastGelu, BiasGelu)."""
    out, status = optimized
    file = f"{name}.{exporter}-ortopt.onnx"
    if status[file] != "ok":  # onnxruntime's optimizer itself fails (gpt2 dynamo, 1.32)
        pytest.skip(f"onnxruntime's optimizer: {status[file]}")
    check(out / file, target)


@pytest.fixture(scope="module")
def quantized(exported):
    out, _ = exported
    return out, zoo.quantize(out)


@pytest.mark.parametrize("name", list(zoo.ARCHITECTURES))
@pytest.mark.parametrize("exporter", zoo.EXPORTERS)
@pytest.mark.parametrize("form", zoo.QUANTIZED_FORMS)
def test_onnxruntime_quantized_graph_matches(quantized, name, exporter, form):
    """The exports after onnxruntime's quantization tools (dynamic int8 with uint8 or int8
    weights, DequantizeLinear at the export's opset; 4-bit MatMulNBits), on the interpreter:
    against onnxruntime, or for int8 weights against onnx's reference (onnxruntime's x86
    uint8 x int8 kernels are not exact)."""
    out, status = quantized
    file = f"{name}.{exporter}-{form}.onnx"
    assert status[file] == "ok", status[file]
    check(out / file, reference="onnx" if form == "dyn-s8" else "onnxruntime")


@pytest.fixture(scope="module")
def exported_half(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo16")
    status = {name: zoo.export(name, out, half=True) for name in zoo.ARCHITECTURES}
    return out, status


#: legacy float16 exports onnxruntime refuses to load (torch writes a float32 LayerNorm
#: scale beside float16 input)
NO_REFERENCE = {("gpt2", "legacy"), ("gptneox", "legacy"), ("opt", "legacy")}


@pytest.mark.parametrize("name", list(zoo.ARCHITECTURES))
@pytest.mark.parametrize("exporter", zoo.EXPORTERS)
@pytest.mark.parametrize("target", ["interp", "c"])
def test_float16_export_matches_onnxruntime(exported_half, name, exporter, target):
    out, status = exported_half
    assert status[name][exporter].startswith("ok"), status[name][exporter]
    path = out / f"{name}.{exporter}-fp16.onnx"
    if (name, exporter) in NO_REFERENCE:
        assert run(path, target)["status"].startswith("onnxruntime cannot load it")
        return
    check(path, target, tolerance=5e-3)  # float16 kernels differ (11 significant bits)
