"""Zero-size tensors (a dimension of 0) through ONNX import, the interpreter and the C
target: buffers of no elements, loops that run no iteration, reductions over an empty axis
that give their identity, and constants of no values."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import q35c
from onnx import TensorProto, helper

from q35c.compiler.driver import Options, run_file


def _model(path, nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(
        nodes, "empty",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def empty_model(tmp_path):
    """Elementwise ops and a MatMul on [2, 0, 3]; a MatMul whose inner dimension is 0; a
    ReduceSum over the empty axis; a Concat with an empty operand."""
    return _model(
        tmp_path / "empty.onnx",
        [helper.make_node("Add", ["x", "x"], ["s"]), helper.make_node("Relu", ["s"], ["r"]),
         helper.make_node("MatMul", ["r", "w"], ["z"]),
         helper.make_node("MatMul", ["a", "b"], ["m"]),
         helper.make_node("ReduceSum", ["a", "axes"], ["sum"], keepdims=0),
         helper.make_node("Concat", ["a", "c"], ["cat"], axis=1)],
        [("x", [2, 0, 3]), ("a", [2, 0]), ("b", [0, 3]), ("c", [2, 2])],
        [("z", [2, 0, 4]), ("m", [2, 3]), ("sum", [2]), ("cat", [2, 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, [3, 4], [0.5] * 12),
         helper.make_tensor("axes", TensorProto.INT64, [1], [1])])


@pytest.mark.parametrize("target", ["interp", "c"])
def test_zero_size_tensors_run(empty_model, tmp_path, target):
    c = np.arange(4, dtype=np.float32).reshape(2, 2)
    inputs = {"x": np.zeros((2, 0, 3), np.float32), "a": np.zeros((2, 0), np.float32),
              "b": np.zeros((0, 3), np.float32), "c": c}
    outputs = run_file(empty_model, inputs, tmp_path / "out",
                       Options(target=target, passes=""))
    assert outputs["z"].shape == (2, 0, 4)
    np.testing.assert_array_equal(outputs["m"], np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(outputs["sum"], np.zeros(2, np.float32))
    np.testing.assert_array_equal(outputs["cat"], c)
    assert np.load(tmp_path / "out" / "z.npy").shape == (2, 0, 4)


def test_zero_size_constant_imports_as_tensor_empty(tmp_path):
    """`dense<>` spells only the shape (0,): a constant of shape [0, 3] has no values and
    becomes `tensor.empty`."""
    path = _model(tmp_path / "const.onnx",
                  [helper.make_node("Concat", ["k", "x"], ["y"], axis=0)],
                  [("x", [2, 3])], [("y", [2, 3])],
                  [helper.make_tensor("k", TensorProto.FLOAT, [0, 3], [])])
    text = q35c(path, "--passes", "", "--target", "mlir").stdout
    assert '"tensor.empty"() : () -> tensor<0x3xf32>' in text
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    outputs = run_file(path, {"x": x}, tmp_path / "out", Options(passes=""))
    np.testing.assert_array_equal(outputs["y"], x)


def test_shape_flag_binds_a_zero_size(tmp_path):
    path = _model(tmp_path / "dyn.onnx", [helper.make_node("Relu", ["x"], ["y"])],
                  [("x", ["n", 4])], [("y", ["n", 4])])
    result = q35c("run", path, "--passes", "", "--shape", "x=0,4", "-o", tmp_path / "r")
    assert "y: float32[0, 4]" in result.stdout
