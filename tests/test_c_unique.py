"""Unique on the C target (targets/native/onnx_misc.py, rendered by targets/c/onnx_misc.py,
`q35_unique` in runtime/q35rt_misc.c) for every element type the interpreter runs it on:
c equals the interpreter bit for bit (values, first indices, inverse indices, counts) and
both equal the node suite's expected outputs. The node suite declares no output shapes for
6 of its 7 cases (refused on both targets): here they run with the shapes declared."""

from __future__ import annotations

import contextlib
import io
import warnings

import ml_dtypes
import numpy as np
import onnx
import onnx.reference
import pytest
from conftest import require_tool
from onnx import TensorProto, helper
from test_c_cnn import _suite

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.driver import Options, run_file

SUITE_CASES = ["test_unique_bfloat16_sorted_without_axis", "test_unique_length_1",
               "test_unique_not_sorted_without_axis", "test_unique_sorted_with_axis",
               "test_unique_sorted_with_axis_3d", "test_unique_sorted_with_negative_axis",
               "test_unique_sorted_without_axis"]
DTYPES = [np.float32, np.float64, np.float16, ml_dtypes.bfloat16, np.int8, np.int16,
          np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_]
"""Unique's element types that q35c imports (the schema's T less strings and complex)."""


def run(path, feeds, target, out) -> dict[str, np.ndarray]:
    options = Options(target=target, passes="", shapes={k: v.shape for k, v in feeds.items()})
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_file(path, feeds, out, options)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    """Equal dtype, shape and bits (NaNs and -0.0 included)."""
    got, want = np.asarray(got), np.asarray(want)
    assert (got.dtype, got.shape) == (want.dtype, want.shape)
    assert got.tobytes() == want.tobytes(), (got, want)


def declared(model: onnx.ModelProto, outputs: list[np.ndarray]) -> onnx.ModelProto:
    """`model` with its outputs' shapes declared as those of `outputs`."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for info, value in zip(model.graph.output, outputs):
        info.type.tensor_type.ClearField("shape")
        for d in value.shape:
            info.type.tensor_type.shape.dim.add().dim_value = d
    return model


@pytest.mark.parametrize("name", SUITE_CASES)
def test_node_suite_case_with_declared_shapes(tmp_path, name):
    require_tool("cc")
    suite = _suite()
    [case] = [c for c in suite.collect(name) if c.name == name]
    inputs, outputs = case.data_sets[0]
    want = [suite._to_array(o) for o in outputs]
    path = tmp_path / "unique.onnx"
    onnx.save(declared(case.model, want), path)
    feeds = {i.name: suite._to_array(v) for i, v in zip(case.model.graph.input, inputs)}
    got = {t: run(path, feeds, t, tmp_path / t) for t in ("interp", "c")}
    for info, expected in zip(case.model.graph.output, want):
        assert suite._matches(got["interp"][info.name], expected) == ""
        assert_same(got["c"][info.name], got["interp"][info.name])


def unique_model(path, x: np.ndarray, outputs: int = 4, **attrs) -> None:
    """A Unique node of `x`'s type with its output shapes declared (those onnx's reference
    gives for `x`)."""
    names = ["y", "indices", "inverse", "counts"][:outputs]
    node = helper.make_node("Unique", ["x"], names, **attrs)
    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    inputs = [helper.make_tensor_value_info("x", elem, x.shape)]

    def graph(shapes):
        return helper.make_graph([node], "g", inputs, [
            helper.make_tensor_value_info(n, elem if n == "y" else TensorProto.INT64, s)
            for n, s in zip(names, shapes)])

    opset = [helper.make_opsetid("", 28)]
    ref = onnx.reference.ReferenceEvaluator(helper.make_model(graph([None] * outputs),
                                                              opset_imports=opset))
    shapes = [r.shape for r in ref.run(None, {"x": x})]
    onnx.save(helper.make_model(graph(shapes), opset_imports=opset), path)


def _data(dtype, shape, rng) -> np.ndarray:
    """Small values with many repeats; floats with -0.0 next to 0.0 and two NaNs."""
    v = rng.integers(-3, 4, shape)
    if np.dtype(dtype) == np.bool_:
        return v > 0
    if np.dtype(dtype).kind == "u":
        return np.abs(v).astype(dtype)
    if np.dtype(dtype).kind in "iu":
        return v.astype(dtype)
    x = v * 0.5
    x.flat[0], x.flat[6] = -0.0, 0.0
    if x.ndim == 1:
        x.flat[2] = x.flat[9] = np.nan
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
def test_every_element_type_equals_interp(tmp_path, dtype):
    """Sorted, without an axis: the values, first indices, inverse and counts. NaNs are
    one value for numpy's float types and distinct for bfloat16 (numpy.unique's
    equal_nan only applies to kind 'f'); -0.0 and 0.0 are one value, the first kept."""
    require_tool("cc")
    x = _data(dtype, (12,), np.random.default_rng(0))
    path = tmp_path / "unique.onnx"
    unique_model(path, x)
    want = run(path, {"x": x}, "interp", tmp_path / "i")
    got = run(path, {"x": x}, "c", tmp_path / "c")
    for name in want:
        assert_same(got[name], want[name])


@pytest.mark.parametrize("dtype, shape, attrs, outputs", [
    (np.float32, (12,), {"sorted": 0}, 4),
    (np.int64, (4, 3, 5), {"axis": 1}, 4),
    (np.float16, (5, 4), {"axis": 0, "sorted": 0}, 4),
    (ml_dtypes.bfloat16, (3, 6), {"axis": -1}, 3),
    (np.uint8, (12,), {"sorted": 0}, 1)])  # one output: the sorted values, whatever `sorted`
def test_axis_and_first_occurrence_order_equal_interp(tmp_path, dtype, shape, attrs, outputs):
    """Slices along an axis compared lexicographically, and sorted=0 (groups in
    first-occurrence order, Y taken along axis 0 as the reference does)."""
    require_tool("cc")
    rng = np.random.default_rng(1)
    x = _data(dtype, shape, rng)
    if "axis" in attrs:  # repeated slices
        axis = attrs["axis"] % len(shape)
        x = np.moveaxis(x, axis, 0).copy()
        x[2] = x[0]
        x = np.moveaxis(x, 0, axis).copy()
    path = tmp_path / "unique.onnx"
    unique_model(path, x, outputs, **attrs)
    want = run(path, {"x": x}, "interp", tmp_path / "i")
    got = run(path, {"x": x}, "c", tmp_path / "c")
    assert len(want) == outputs
    for name in want:
        assert_same(got[name], want[name])


def test_another_number_of_unique_values_fails_the_run(tmp_path):
    """The output shapes are compiled for 3 unique values: data with 4 fails the run with
    a message, as the interpreter's shape check does."""
    require_tool("cc")
    path = tmp_path / "unique.onnx"
    unique_model(path, np.array([1, 2, 2, 3, 1], dtype=np.int32))
    other = {"x": np.array([1, 2, 4, 3, 1], dtype=np.int32)}
    with pytest.raises(Q35cError, match="number of unique values is not the compiled 3"):
        run(path, other, "c", tmp_path / "c")
    with pytest.raises(Q35cError):
        run(path, other, "interp", tmp_path / "i")
