"""SwiGLU, GroupNormalization, CenterCropPad, TensorScatter, AffineGrid and GridSample on the
C target (targets/native/onnx_extra.py, rendered by targets/c/onnx_extra.py, GridSample's
kernel in runtime/q35rt_extra.c): every node-suite case of these ops against the interpreter
(onnx's reference) and the suite's expected outputs, GridSample's modes and paddings on
grids reaching past the borders, and the run-time checks (a write index out of range, a
`shape` operand that is not the compiled output shape) failing the run with one line."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from test_c_quant_ops import _model, _run, _suite

from q35c.compiler.diagnostics import Q35cError

EXTRA_OPS = ("SwiGLU", "GroupNormalization", "CenterCropPad", "TensorScatter", "AffineGrid",
             "GridSample", "MelWeightMatrix")
EXACT_OPS = ("CenterCropPad", "TensorScatter", "MelWeightMatrix")
"""Copies, and the filter bank (double throughout, as the reference): bit-identical to the
interpreter. SwiGLU rounds every operation as numpy does, but its exp is the C library's
(numpy's float32 exp differs from it in the last bit for some inputs), GroupNormalization
sums in double (numpy pairwise in float32), AffineGrid's and GridSample's small dot products
are numpy's (BLAS) in the reference, so these agree within the float path's tolerance."""

SUITE = _suite()
CASES = [c for c in SUITE.collect() if SUITE.op_type(c) in EXTRA_OPS
         and not c.name.endswith("_expanded")]


def test_every_op_has_suite_cases():
    assert {SUITE.op_type(c) for c in CASES} == set(EXTRA_OPS)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_suite_case_matches_interpreter(tmp_path, case):
    outcome = SUITE.run_case(case, "c", tmp_path)
    assert outcome.status == "pass", outcome.detail
    names = [i.name for i in case.model.graph.input]
    feeds = {n: SUITE._to_array(v) for n, v in zip(names, case.data_sets[0][0])}
    interp = _run(case.model, feeds, "interp", tmp_path)
    c = _run(case.model, feeds, "c", tmp_path)
    assert interp.keys() == c.keys()
    for name, want in interp.items():
        assert c[name].dtype == want.dtype and c[name].shape == want.shape, name
        if SUITE.op_type(case) in EXACT_OPS:
            np.testing.assert_array_equal(c[name], want, err_msg=name)
        else:
            np.testing.assert_allclose(c[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def _scatter(mode: str, index: list[int]):
    rng = np.random.default_rng(3)
    feeds = {"past": rng.normal(size=(2, 3, 4, 5)).astype(np.float32),
             "update": rng.normal(size=(2, 3, 2, 5)).astype(np.float32),
             "at": np.array(index, np.int64)}
    node = helper.make_node("TensorScatter", ["past", "update", "at"], ["y"], mode=mode,
                            name="scatter")
    return _model([node], feeds, {"y": (np.float32, (2, 3, 4, 5))}, opset=24), feeds


def test_circular_scatter_wraps_like_the_interpreter(tmp_path):
    model, feeds = _scatter("circular", [3, 7])
    np.testing.assert_array_equal(_run(model, feeds, "c", tmp_path)["y"],
                                  _run(model, feeds, "interp", tmp_path)["y"])


def test_linear_scatter_past_the_end_fails_the_run(tmp_path):
    model, feeds = _scatter("linear", [1, 3])
    with pytest.raises(Q35cError, match="write index out of range"):
        _run(model, feeds, "c", tmp_path)


def test_center_crop_pad_checks_the_shape_operand(tmp_path):
    feeds = {"x": np.arange(30, dtype=np.int32).reshape(5, 6),
             "shape": np.array([3, 8], np.int64)}
    node = helper.make_node("CenterCropPad", ["x", "shape"], ["y"], name="ccp")
    model = _model([node], feeds, {"y": (np.int32, (3, 8))}, opset=18)
    np.testing.assert_array_equal(_run(model, feeds, "c", tmp_path)["y"],
                                  _run(model, feeds, "interp", tmp_path)["y"])
    feeds["shape"] = np.array([3, 7], np.int64)
    with pytest.raises(Q35cError, match="shape does not match the compiled output shape"):
        _run(model, feeds, "c", tmp_path)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_grid_sample_past_the_borders(tmp_path, mode, padding):
    """Grid coordinates up to 1.8 times the normalized range, both align_corners values."""
    rng = np.random.default_rng(5)
    for align in (0, 1):
        feeds = {"x": rng.normal(size=(2, 3, 4, 5)).astype(np.float32),
                 "grid": rng.uniform(-1.8, 1.8, size=(2, 6, 3, 2)).astype(np.float32)}
        node = helper.make_node("GridSample", ["x", "grid"], ["y"], mode=mode,
                                padding_mode=padding, align_corners=align)
        model = _model([node], feeds, {"y": (np.float32, (2, 3, 6, 3))}, opset=22)
        work = tmp_path / str(align)
        work.mkdir()
        want = _run(model, feeds, "interp", work)["y"]
        np.testing.assert_allclose(_run(model, feeds, "c", work)["y"], want, rtol=1e-5,
                                   atol=1e-6, err_msg=f"align_corners={align}")


@pytest.mark.parametrize("edge_type, out_type", [(np.float32, np.float64),
                                                 (np.float64, np.float32)])
def test_mel_weight_matrix_operands_at_run_time(tmp_path, edge_type, out_type):
    feeds = {"bins": np.array(10, np.int64), "dft": np.array(64, np.int64),
             "rate": np.array(16000, np.int64), "lo": np.array(125.0, edge_type),
             "hi": np.array(7600.0, edge_type)}
    node = helper.make_node("MelWeightMatrix", list(feeds), ["y"],
                            output_datatype=helper.np_dtype_to_tensor_dtype(np.dtype(out_type)))
    model = _model([node], feeds, {"y": (out_type, (33, 10))}, opset=17)
    want = _run(model, feeds, "interp", tmp_path)["y"]
    assert want.any()
    got = _run(model, feeds, "c", tmp_path)["y"]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_group_norm_per_group_and_scatter_on_another_axis(tmp_path):
    """GroupNormalization-18's scale and bias per group; TensorScatter along axis 1 with no
    write indices (all zero)."""
    rng = np.random.default_rng(7)
    feeds = {"x": rng.normal(size=(2, 6, 3, 2)).astype(np.float32),
             "s": rng.normal(size=(3,)).astype(np.float32),
             "b": rng.normal(size=(3,)).astype(np.float32)}
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3,
                            epsilon=1e-3)
    model = _model([node], feeds, {"y": (np.float32, (2, 6, 3, 2))}, opset=18)
    np.testing.assert_allclose(_run(model, feeds, "c", tmp_path)["y"],
                               _run(model, feeds, "interp", tmp_path)["y"], rtol=1e-5,
                               atol=1e-6)
    feeds = {"past": rng.normal(size=(2, 5, 3)).astype(np.float32),
             "update": rng.normal(size=(2, 2, 3)).astype(np.float32)}
    node = helper.make_node("TensorScatter", ["past", "update"], ["y"], axis=1)
    model = _model([node], feeds, {"y": (np.float32, (2, 5, 3))}, opset=24)
    np.testing.assert_array_equal(_run(model, feeds, "c", tmp_path)["y"],
                                  _run(model, feeds, "interp", tmp_path)["y"])
