"""`q35c inspect MODEL.onnx`: the summary, and its agreement with what compiling does."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import EXAMPLES, q35c
from onnx import TensorProto, helper, numpy_helper
from test_cli import assert_user_error

MODELS = EXAMPLES / "models"
LLAMA = MODELS / "llama_tiny.onnx"


def _gather_and_matmul_model(path: Path, k: int = 32) -> Path:
    """W [k, 64] feeds both a Gather (rows) and a MatMul (as the right operand); a small V
    and a Gemm(transB=1) weight complete it."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((k, 64)).astype(np.float32)
    small = rng.standard_normal((64, 15)).astype(np.float32)  # 960 < 1024 elements
    proj = rng.standard_normal((32, 64)).astype(np.float32)  # Gemm B, transposed at import
    nodes = [
        helper.make_node("Gather", ["W", "ids"], ["rows"], name="/embed/Gather"),
        helper.make_node("MatMul", ["x", "W"], ["xw"], name="/fc/MatMul"),
        helper.make_node("Add", ["rows", "xw"], ["h"], name="/Add"),
        helper.make_node("MatMul", ["h", "V"], ["small_out"], name="/small/MatMul"),
        helper.make_node("Gemm", ["h", "P"], ["y"], name="/proj/Gemm", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tied",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [2]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 32]),
         helper.make_tensor_value_info("small_out", TensorProto.FLOAT, [2, 15])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(small, "V"),
                     numpy_helper.from_array(proj, "P")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.save(model, path)
    return path


def test_llama_summary():
    out = q35c("inspect", LLAMA).stdout
    lines = out.splitlines()
    assert lines[0] == f"model: {LLAMA}"
    assert "  input_ids: int64 [batch, seq]  (imported as [2, 2]; bind with --shape " \
           "input_ids=...)" in lines
    assert "  logits: float [batch, seq, 256]" in lines
    assert "operators: 517 nodes, 27 op types" in lines
    histogram = dict(re.findall(r"^  (\w+) +(\d+)$", out, re.M))
    assert histogram == {
        "Add": "15", "Cast": "10", "Concat": "24", "Constant": "187", "ConstantOfShape": "8",
        "Cos": "1", "Div": "9", "Equal": "5", "Expand": "5", "Gather": "27", "MatMul": "19",
        "Mul": "34", "Neg": "4", "Pow": "5", "Range": "1", "ReduceMean": "5", "Reshape": "17",
        "Shape": "32", "Sigmoid": "2", "Sin": "1", "Slice": "8", "Softmax": "2", "Sqrt": "5",
        "Transpose": "10", "Trilu": "1", "Unsqueeze": "74", "Where": "6"}
    assert "parameters: 106,816 in 21 initializers, 417.2 KB as stored" in lines
    assert "unsupported operators: none" in lines
    packed = re.findall(r"^  (\S+) +(\d+x\d+) .* Q3P5$", out, re.M)
    assert len(packed) == 15 and ("lm_head.weight_t", "64x256") in packed
    # the embedding table is not tied to lm_head here: its gathers read its own packed
    # transpose, and the float table is not stored at all
    assert re.search(r"^  embed_tokens\.weight +256x64 +16,384 +65,536 +0  dropped \(embedding "
                     r"table: gathers read embed_tokens\.weight\.T \(Q3P5\)\)$", out, re.M)
    # 7,680 bytes = storage_bytes((64, 256)): format version 2 (12,052 in version 1)
    assert re.search(r"^  embed_tokens\.weight\.T +64x256 +16,384 +0 +7,680  Q3P5 \(embedding "
                     r"table embed_tokens\.weight, transposed\)$", out, re.M)
    assert "  quantized:  16 weights, 106,496 elements" in lines
    assert "  kept float: 0 weights, 0 elements" in lines
    assert lines[-1] == "bytes: 425,984 before -> 62,312 after (6.84x smaller)"


def test_shape_and_keep_float_are_respected():
    out = q35c("inspect", LLAMA, "--shape", "input_ids=1,4", "--keep-float",
               "lm_head|down_proj").stdout
    assert "imported as" not in out
    assert "keep-float 'lm_head|down_proj'" in out
    kept = re.findall(r"^  (\S+) .* float \(matches --keep-float\)$", out, re.M)
    assert sorted(kept) == ["layers.0.mlp.down_proj.weight_t", "layers.1.mlp.down_proj.weight_t",
                            "lm_head.weight_t"]
    assert "  quantized:  13 weights, 73,728 elements" in out


def test_bad_flags_are_one_line_errors(tmp_path):
    assert_user_error(q35c("inspect", LLAMA, "--shape", "input_ids=3", check=False),
                      "--shape input_ids=3 does not fit the declared shape [batch, seq]")
    assert_user_error(q35c("inspect", LLAMA, "--shape", "ids=3,4", check=False),
                      "--shape names unknown input(s) ids")
    assert_user_error(q35c("inspect", LLAMA, "--keep-float", "(", check=False),
                      "--keep-float: '(' is not a valid regular expression")
    assert_user_error(q35c("inspect", EXAMPLES / "mlp.mlir", check=False),
                      "q35c inspect reads .onnx models")
    assert_user_error(q35c("inspect", tmp_path / "nope.onnx", check=False), "no such file")


def test_unsupported_ops_are_summarized_not_failed():
    path = MODELS / "invalid" / "unsupported_ops.onnx"
    result = q35c("inspect", path)
    out = result.stdout
    assert "unsupported operators: " in out and "Bernoulli x1 (/drop/Bernoulli)" in out
    assert "RandomUniformLike x1 (/drop/RandomUniformLike)" in out
    assert re.search(r"^  Bernoulli +1  \(unsupported\)$", out, re.M)
    assert "not computed: the model does not import (unsupported operators)" in out
    assert "parameters: 249 in 5 initializers" in out


def test_broken_models(tmp_path):
    invalid = MODELS / "invalid"
    assert_user_error(q35c("inspect", invalid / "truncated.onnx", check=False),
                      "not a valid ONNX model")
    assert_user_error(q35c("inspect", invalid / "missing_initializer.onnx", check=False),
                      "node '/fc/MatMul' (MatMul) uses 'fc.weight'")
    assert_user_error(q35c("inspect", invalid / "bad_external_data.onnx", check=False),
                      "outside the model's directory")
    # Readable, but the import fails: the summary says why.
    out = q35c("inspect", invalid / "shape_mismatch.onnx").stdout
    assert "not computed: the model does not import (output 'y' of node '/fc/MatMul' is " \
           "declared [2, 3] but computes [2, 4])" in out


def test_shared_small_and_transposed_weights(tmp_path):
    out = q35c("inspect", _gather_and_matmul_model(tmp_path / "tied.onnx")).stdout
    rows = {m[0]: m for m in re.findall(
        r"^  (\S+) +(\d+x\d+) +([\d,]+) +([\d,]+) +([\d,]+)  (.*)$", out, re.M)}
    from q35c.compiler.quant import storage_bytes

    w = rows["W"]  # the MatMul packs W, the Gather reads W's own packed transpose
    assert w[5] == "Q3P5"
    assert int(w[4].replace(",", "")) == storage_bytes((32, 64))
    assert rows["W.T"][1] == "64x32" and rows["W.T"][5].startswith("Q3P5 (embedding table W")
    assert int(rows["W.T"][4].replace(",", "")) == storage_bytes((64, 32))
    assert rows["V"][5] == "float (< 1024 elements)"
    assert rows["P.T"][1] == "64x32" and rows["P.T"][5] == "Q3P5"
    out = q35c("inspect", tmp_path / "tied.onnx", "--keep-float", r"^P\b").stdout
    assert re.search(r"^  P\.T .* float \(matches --keep-float\)$", out, re.M)


def test_external_data_is_reported(tmp_path):
    model = onnx.load(LLAMA)
    onnx.save(model, tmp_path / "llama.onnx", save_as_external_data=True,
              all_tensors_to_one_file=True, location="llama.bin", size_threshold=1024)
    out = q35c("inspect", tmp_path / "llama.onnx", "--shape", "input_ids=1,3").stdout
    assert re.search(r"parameters: 106,816 in 21 initializers, 417.2 KB as stored, 16 in "
                     r"external data \(416\.0 KB\)", out)
    assert "  quantized:  16 weights, 106,496 elements" in out


# -- agreement with quantize-weights -------------------------------------------------------------


def _compiled_weights(path: Path, shapes, keep_float):
    """(names the pass packed, bytes before it, bytes after it) from a real compile."""
    from xdsl.dialects.builtin import TensorType

    from q35c.compiler.driver import build_pipeline, load_input, make_context, run_pipeline
    from q35c.compiler.frontends import FrontendOptions
    from q35c.compiler.weights import store_of
    from q35c.dialects import quant3p5

    def referenced(module):
        return {op.weight_name.data: op for op in module.walk()
                if isinstance(op, quant3p5.WeightOp)}

    ctx = make_context()
    module = load_input(path, ctx, FrontendOptions(shapes=shapes))
    store = store_of(module)
    before = sum(np.asarray(store[n]).nbytes for n in referenced(module))
    run_pipeline(ctx, module, build_pipeline(None, keep_float=keep_float))
    after, packed = 0, set()
    for name, op in referenced(module).items():
        if isinstance(op.result.type, TensorType):
            after += np.asarray(store[name]).nbytes
        else:
            after += len(store[name].to_bytes())
            packed.add(re.sub(r"\.q3p5(\.\d+)?$", "", name))
    return packed, before, after


@pytest.mark.parametrize("model, shapes, keep_float", [
    ("llama_tiny.onnx", {"input_ids": (2, 3)}, None),
    ("llama_tiny.onnx", {"input_ids": (1, 5)}, "lm_head|self_attn.q"),
    ("llama_tiny_qdq_int4.onnx", {"input_ids": (2, 2)}, None),
    ("llama_tiny_matmulnbits.onnx", {"input_ids": (2, 2)}, "layers.1"),
    ("llama_tiny_gather_quantized.onnx", {"input_ids": (2, 2)}, None),
    ("encoder_tiny.onnx", {"hidden": (2, 3, 64)}, None),
    ("encoder_tiny_qdq_int8.onnx", {"hidden": (1, 2, 64)}, r"fc\d"),
    ("TIED", {}, None),
    ("TIED", {}, "^W$"),
])
def test_agrees_with_quantize_weights(model, shapes, keep_float, tmp_path):
    from q35c.compiler.frontends.onnx.inspect import inspect_model

    path = _gather_and_matmul_model(tmp_path / "tied.onnx") if model == "TIED" else MODELS / model
    summary = inspect_model(path, shapes, keep_float)
    assert not summary.assumed and summary.weights is not None
    packed, before, after = _compiled_weights(path, shapes, keep_float)
    assert {w.name for w in summary.quantized} == packed
    assert packed, "the case should quantize something"
    assert summary.bytes_before() == before
    assert summary.bytes_after() == after


# -- robustness ----------------------------------------------------------------------------------


def test_inspect_on_mutated_models_never_crashes(tmp_path):
    """The fuzz corpus of test_onnx_errors.py: a summary (exit 0) or one error line."""
    import random

    from hypothesis import given, settings, strategies as st
    from test_onnx_errors import (
        EXTERNAL_BYTES,
        EXTERNAL_FILE,
        FUZZ,
        SEEDS,
        RandomPicker,
        invoke,
        mutate,
    )

    (tmp_path / EXTERNAL_FILE).write_bytes(EXTERNAL_BYTES)

    @settings(FUZZ, max_examples=120)
    @given(seed=st.integers(0, 2**32 - 1))
    def check(seed):
        rng = random.Random(seed)
        name = rng.choice(sorted(SEEDS))
        blob, applied = mutate(RandomPicker(rng), SEEDS[name][0])
        path = tmp_path / "model.onnx"
        path.write_bytes(blob)
        result = invoke("inspect", path, *SEEDS[name][1])
        lines = result.stderr.strip().splitlines()
        assert result.exception is None or isinstance(result.exception, SystemExit), applied
        if result.exit_code != 0:
            assert result.exit_code == 2 and len(lines) == 1, (applied, result.stderr)
            assert lines[0].startswith(f"q35c: error: {path}: ") or \
                lines[0].startswith("q35c: error: --"), (applied, lines[0])
        else:
            assert result.stdout.startswith(f"model: {path}\n"), applied

    check()
