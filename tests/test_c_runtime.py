"""The C runtime's glue kernels on shapes that take each of their paths, bit for bit against
the interpreter, and a long run split into functions (printer.RUN_PART_STEPS).

- q35_copy_strided: merged dimensions copied as one run (a slice of whole rows, a
  concatenation), broadcasts (a fill), 2-d transposes by 16 x 16 tiles with ragged edges,
  a transpose too small for tiles, and a permutation of three axes;
- q35_batch_matmul_f32: N below, at and above its 32-output tile, broadcast batches;
- q35_softmax_f32: the last axis (each exp once), a middle axis, and a row longer than its
  stack scratch (Q35_SOFTMAX_ROW).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import INT8
from onnx import helper
from test_c_target import MODELS, assert_matches_interpreter

from q35c.compiler.driver import Options, run_file
from q35c.targets.c import printer


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Each test session builds into its own cache, never the user's."""
    monkeypatch.setenv("Q35C_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "c-cache"))


def _model(nodes, inputs: dict[str, np.ndarray], outputs: dict[str, tuple]) -> onnx.ModelProto:
    def info(name, shape):
        return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(shape))

    graph = helper.make_graph(nodes, "g", [info(k, v.shape) for k, v in inputs.items()],
                              [info(k, v) for k, v in outputs.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def _agree(model: onnx.ModelProto, feeds: dict[str, np.ndarray], tmp_path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    shapes = {k: v.shape for k, v in feeds.items()}
    got = {}
    for target in ("interp", "c"):
        got[target] = run_file(path, feeds, tmp_path / target,
                               Options(target=target, passes="", shapes=shapes))
    assert got["interp"].keys() == got["c"].keys()
    for name, want in got["interp"].items():
        c = got["c"][name]
        assert c.shape == want.shape, name
        assert np.array_equal(c.view(np.uint32), want.view(np.uint32)), name


def test_copies_take_every_path_of_copy_strided(tmp_path):
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((3, 20, 37)).astype(np.float32),
             "b": rng.standard_normal((5, 7)).astype(np.float32),
             "c": rng.standard_normal((1, 37)).astype(np.float32)}
    nodes = [
        helper.make_node("Transpose", ["a"], ["t2"], perm=[0, 2, 1]),  # tiles, ragged
        helper.make_node("Transpose", ["a"], ["t3"], perm=[2, 0, 1]),  # three axes
        helper.make_node("Transpose", ["b"], ["t_small"], perm=[1, 0]),  # no tiles
        helper.make_node("Concat", ["a", "a"], ["cat"], axis=1),  # whole rows: one run
        helper.make_node("Slice", ["a", "starts", "ends", "axes"], ["sl"]),
        helper.make_node("Expand", ["c", "shape"], ["ex"]),  # a fill per row
    ]
    graph_inits = [helper.make_tensor("starts", onnx.TensorProto.INT64, [1], [3]),
                   helper.make_tensor("ends", onnx.TensorProto.INT64, [1], [30]),
                   helper.make_tensor("axes", onnx.TensorProto.INT64, [1], [2]),
                   helper.make_tensor("shape", onnx.TensorProto.INT64, [2], [6, 37])]
    model = _model(nodes, feeds, {"t2": (3, 37, 20), "t3": (37, 3, 20), "t_small": (7, 5),
                                  "cat": (3, 40, 37), "sl": (3, 20, 27), "ex": (6, 37)})
    model.graph.initializer.extend(graph_inits)
    _agree(model, feeds, tmp_path)


def test_batch_matmul_and_softmax_are_bit_exact_on_every_tile_shape(tmp_path):
    rng = np.random.default_rng(1)
    feeds = {"q": rng.standard_normal((2, 3, 5, 24)).astype(np.float32),
             "k": rng.standard_normal((2, 3, 24, 70)).astype(np.float32),
             "v": rng.standard_normal((1, 3, 70, 32)).astype(np.float32),
             "w": rng.standard_normal((24, 7)).astype(np.float32),
             "long": (rng.standard_normal((2, 4100)) * 8).astype(np.float32)}
    nodes = [
        helper.make_node("MatMul", ["q", "k"], ["s"]),  # N = 70: two tiles and a tail
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["o"]),  # N = 32: one tile, batch broadcast
        helper.make_node("MatMul", ["q", "w"], ["small"]),  # N = 7: tail only
        helper.make_node("Softmax", ["s"], ["p1"], axis=2),  # a middle axis
        helper.make_node("Softmax", ["long"], ["p_long"], axis=-1),  # past the stack row
    ]
    model = _model(nodes, feeds, {"s": (2, 3, 5, 70), "p": (2, 3, 5, 70), "o": (2, 3, 5, 32),
                                  "small": (2, 3, 5, 7), "p1": (2, 3, 5, 70),
                                  "p_long": (2, 4100)})
    _agree(model, feeds, tmp_path)


def test_a_run_split_into_parts_matches_the_interpreter(monkeypatch, tmp_path):
    """llama_tiny's steps in functions of 16 steps: the same outputs (int8 bit-exact)."""
    monkeypatch.setattr(printer, "RUN_PART_STEPS", 16)
    for passes in (None, INT8):
        assert_matches_interpreter("llama_tiny", passes)


def test_long_runs_are_split_and_short_ones_are_not(monkeypatch):
    from q35c.compiler.driver import compile_to_module
    from q35c.compiler.weights import store_of
    from q35c.targets.c.emit import emit

    def model_c(model: str) -> tuple[str, int]:
        path, name, shape, _ = MODELS[model]
        shapes = {} if path.suffix == ".mlir" else {name: shape}
        _, module = compile_to_module(path, Options(shapes=shapes))
        emitted = emit(module, store_of(module), None, "m")
        return emitted.files["model.c"].decode(), len(emitted.program.steps)

    text, steps = model_c("mlp")
    assert steps <= printer.RUN_PART_STEPS and "run_part" not in text
    text, steps = model_c("llama_tiny")
    assert steps > printer.RUN_PART_STEPS
    parts = -(-steps // printer.RUN_PART_STEPS)
    assert text.count("Q35_RUN_PART int m_run_part") == parts
    assert text.count("    if (m_run_part") == parts


def test_step_profile_times_every_step_kind_of_a_compiled_model(tmp_path):
    """benchmarks/c_step_profile.py on the mlp example: a row per step kind, and the run."""
    import subprocess
    import sys

    from conftest import EXAMPLES, ROOT, q35c

    q35c(EXAMPLES / "mlp.mlir", "--target", "c", "-o", tmp_path / "out")
    result = subprocess.run([sys.executable, ROOT / "benchmarks" / "c_step_profile.py",
                             tmp_path / "out", "--runs", "3"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stderr.splitlines() if line.startswith("| ")]
    kinds = {row.split("|")[4].strip() for row in rows[1:]}
    assert "qmatmul_f32: quant3p5.matmul" in kinds and "softmax: q35nn.softmax" in kinds
    assert "runs 3" in result.stdout
