"""ONNX Loop nodes as exporters write them (compiler/frontends/onnx/loop_shapes.py and the
importer's folding rule): a body reading run-time values of the enclosing graph, and
while loops whose condition depends only on counters (tf2onnx's Keras LSTM/GRU), so that
their scan outputs have a static number of rows; against onnxruntime on interp and c."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.driver import Options, run_file

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def _save(tmp_path, nodes, inputs, outputs, inits):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path = tmp_path / "loop.onnx"
    onnx.save(model, path)
    return path


def _matches_onnxruntime(tmp_path, path, feeds, target):
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = run_file(path, feeds, tmp_path / target, Options(target=target, passes=""))
    for info, w in zip(onnx.load(path).graph.output, want):
        assert got[info.name].shape == w.shape, info.name
        np.testing.assert_allclose(got[info.name], w, rtol=1e-6, atol=1e-6)


def _while_loop(tmp_path, n_rows: int, trip: int, cond_from_data: bool = False):
    """A tf2onnx-style while loop over the rows of x [n_rows, 4]: carried (counter, h),
    condition `counter < n_rows and iteration < trip`, scan output the h of each step;
    the body reads x (a run-time value of the enclosing graph) and a weight."""
    body = helper.make_graph([
        helper.make_node("Add", ["counter_in", "one"], ["counter_out"]),
        helper.make_node("Gather", ["x", "counter_in"], ["row"], axis=0),
        helper.make_node("MatMul", ["h_in", "w"], ["hw"]),
        helper.make_node("Add", ["hw", "row"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["h_out"]),
        helper.make_node("Identity", ["h_out"], ["h_scan"]),
        helper.make_node("Less", ["counter_out", "rows"], ["more_rows"]),
        helper.make_node("Less", ["iteration", "last"], ["more_steps"]),
        *([helper.make_node("ReduceSum", ["h_out"], ["total"], keepdims=0),
           helper.make_node("Less", ["total", "big"], ["small"]),
           helper.make_node("And", ["more_rows", "small"], ["rows_ok"])]
          if cond_from_data else [helper.make_node("Identity", ["more_rows"], ["rows_ok"])]),
        helper.make_node("And", ["rows_ok", "more_steps"], ["cond_out"]),
    ], "body", [helper.make_tensor_value_info("iteration", I64, []),
                helper.make_tensor_value_info("cond_in", B, []),
                helper.make_tensor_value_info("counter_in", I64, []),
                helper.make_tensor_value_info("h_in", F, [1, 4])],
        [helper.make_tensor_value_info("cond_out", B, []),
         helper.make_tensor_value_info("counter_out", I64, []),
         helper.make_tensor_value_info("h_out", F, [1, 4]),
         helper.make_tensor_value_info("h_scan", F, [1, 4])],
        [numpy_helper.from_array(np.array(1, np.int64), "one"),
         numpy_helper.from_array(np.array(trip - 1, np.int64), "last"),
         numpy_helper.from_array(np.float32(1e9), "big")])
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Loop", ["max_trip", "true", "zero", "h0"],
                              ["counter", "h", "hs"], body=body)]
    inits = [numpy_helper.from_array(np.array(np.iinfo(np.int64).max, np.int64), "max_trip"),
             numpy_helper.from_array(np.array(True), "true"),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.zeros((1, 4), np.float32), "h0"),
             numpy_helper.from_array(np.array(n_rows, np.int64), "rows"),
             numpy_helper.from_array(
                 (rng.standard_normal((4, 4)) / 2).astype(np.float32), "w")]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", F, [n_rows, 4])],
                 [helper.make_tensor_value_info("h", F, [1, 4]),
                  helper.make_tensor_value_info("hs", F, ["steps", 1, 4])], inits)
    return path, {"x": rng.standard_normal((n_rows, 4)).astype(np.float32)}


@pytest.mark.parametrize("target", ["interp", "c"])
@pytest.mark.parametrize("rows, trip", [(6, 100), (6, 4)])
def test_while_loop_with_counter_condition_runs(tmp_path, target, rows, trip):
    """The scan output has min(rows, trip) rows, worked out at compile time."""
    path, feeds = _while_loop(tmp_path, rows, trip)
    _matches_onnxruntime(tmp_path, path, feeds, target)


def test_while_loop_with_data_condition_is_one_line(tmp_path):
    path, feeds = _while_loop(tmp_path, 6, 100, cond_from_data=True)
    with pytest.raises(Q35cError, match="Loop.*output 2 depends on run-time values"):
        run_file(path, feeds, tmp_path / "o", Options(target="interp", passes=""))


def test_while_loop_past_the_iteration_bound_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("q35c.compiler.frontends.onnx.loop_shapes.MAX_ITERATIONS", 3)
    path, feeds = _while_loop(tmp_path, 6, 100)
    with pytest.raises(Q35cError, match="depends on run-time values"):
        run_file(path, feeds, tmp_path / "o", Options(target="interp", passes=""))


@pytest.mark.parametrize("target", ["interp", "c"])
@pytest.mark.parametrize("outer_known", [False, True])
def test_loop_body_reading_the_enclosing_graph(tmp_path, target, outer_known):
    """A body that reads a value of the enclosing graph: computed at run time (the node
    must not be folded at import) or known (then the whole Loop folds)."""
    body = helper.make_graph([
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        helper.make_node("Gather", ["xt", "i"], ["row"], axis=0),
        helper.make_node("Mul", ["row", "k"], ["scaled"]),
        helper.make_node("Add", ["acc_in", "scaled"], ["acc_out"]),
    ], "body", [helper.make_tensor_value_info("i", I64, []),
                helper.make_tensor_value_info("cond_in", B, []),
                helper.make_tensor_value_info("acc_in", F, [4])],
        [helper.make_tensor_value_info("cond_out", B, []),
         helper.make_tensor_value_info("acc_out", F, [4])])
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    inits = [numpy_helper.from_array(np.array(3, np.int64), "trip"),
             numpy_helper.from_array(np.array(True), "cond"),
             numpy_helper.from_array(np.zeros(4, np.float32), "acc0"),
             numpy_helper.from_array(np.float32(2.0), "k")]
    inputs = [helper.make_tensor_value_info("y", F, [4])]
    if outer_known:
        inits.append(numpy_helper.from_array(x, "x"))
    else:
        inputs.append(helper.make_tensor_value_info("x", F, [4, 3]))
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),
             helper.make_node("Loop", ["trip", "cond", "acc0"], ["acc1"], body=body),
             helper.make_node("Add", ["acc1", "y"], ["acc"])]
    path = _save(tmp_path, nodes, inputs, [helper.make_tensor_value_info("acc", F, [4])],
                 inits)
    feeds = {"y": np.ones(4, np.float32)} | ({} if outer_known else {"x": x})
    _matches_onnxruntime(tmp_path, path, feeds, target)
