"""The CNN-family ops lowered for issue #13 on the C target: MaxPool of uint8, Col2Im,
MaxUnpool, RoiAlign, DeformConv and antialiased Resize with run-time sizes or scales. Each
node-suite case runs on c and on the interpreter (the oracle): both match the suite's
expected outputs and c matches the interpreter exactly (Resize within the suite's
tolerance: its taps are summed in another order).
Hand-built nodes cover other settings and the run-time refusals (the shapes and indices
only known when the model runs)."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import onnx
import pytest
from conftest import require_tool
from onnx import TensorProto, helper
from test_c_cnn import _suite

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.driver import Options, run_file

CASES = ["test_maxpool_2d_uint8",
         "test_col2im", "test_col2im_5d", "test_col2im_dilations", "test_col2im_pads",
         "test_col2im_strides",
         "test_maxunpool_export_with_output_shape", "test_maxunpool_export_without_output_shape",
         "test_roialign_aligned_false", "test_roialign_aligned_true", "test_roialign_mode_max",
         "test_basic_deform_conv_with_padding", "test_basic_deform_conv_without_padding",
         "test_deform_conv_with_mask_bias", "test_deform_conv_with_multiple_offset_groups"]
RESIZE_CASES = ["test_resize_downsample_sizes_cubic_antialias",
                "test_resize_downsample_sizes_linear_antialias",
                "test_resize_downsample_scales_cubic_antialias",
                "test_resize_downsample_scales_linear_antialias"]


@pytest.fixture(scope="module")
def suite():
    require_tool("cc")
    return _suite()


def run(path, feeds: dict[str, np.ndarray], target: str, out) -> dict[str, np.ndarray]:
    options = Options(target=target, passes="", shapes={k: v.shape for k, v in feeds.items()})
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_file(path, feeds, out, options)


def node_case_outputs(suite, tmp_path, name):
    """(c's, the interpreter's, the expected) outputs of node-suite case `name`."""
    [case] = [c for c in suite.collect(name) if c.name == name]
    path = tmp_path / f"{name}.onnx"
    onnx.save(case.model, path)
    inputs, outputs = case.data_sets[0]
    feeds = {i.name: suite._to_array(v) for i, v in zip(case.model.graph.input, inputs)}
    got = {t: run(path, feeds, t, tmp_path / t) for t in ("interp", "c")}
    for o, want in zip(case.model.graph.output, outputs):
        yield got["c"][o.name], got["interp"][o.name], suite._to_array(want)


@pytest.mark.parametrize("name", CASES)
def test_node_case_on_c_equals_interp(suite, tmp_path, name):
    for c, interp, want in node_case_outputs(suite, tmp_path, name):
        assert suite._matches(interp, want) == ""
        assert c.dtype == interp.dtype
        np.testing.assert_array_equal(c, interp)


@pytest.mark.parametrize("name", RESIZE_CASES)
def test_antialiased_resize_case_on_c_matches_interp(suite, tmp_path, name):
    for c, interp, want in node_case_outputs(suite, tmp_path, name):
        assert suite._matches(interp, want) == ""
        assert suite._matches(c, interp) == ""


def _model(node, inputs, output) -> onnx.ModelProto:
    graph = helper.make_graph([node], "g", inputs, [output])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_maxpool_uint8_with_indices_equals_interp(tmp_path, dtype):
    """uint8 and int8 MaxPool with its Indices output, strides and pads (first maximum
    of ties, flat index into x)."""
    require_tool("cc")
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[3, 2],
                            strides=[2, 2], pads=[1, 0, 1, 1])
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", elem, [2, 3, 7, 6])],
        [helper.make_tensor_value_info("y", elem, None),
         helper.make_tensor_value_info("i", TensorProto.INT64, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "pool.onnx"
    onnx.save(model, path)
    low = 0 if dtype == np.uint8 else -8  # many ties; int8 windows of negatives only
    x = np.random.default_rng(0).integers(low, 8, (2, 3, 7, 6), dtype=dtype)
    want = run(path, {"x": x}, "interp", tmp_path / "i")
    got = run(path, {"x": x}, "c", tmp_path / "c")
    for name in ("y", "i"):
        np.testing.assert_array_equal(got[name], want[name])


def test_col2im_refuses_an_image_shape_unlike_the_compiled_one(tmp_path):
    require_tool("cc")
    node = helper.make_node("Col2Im", ["x", "image", "block"], ["y"])
    model = _model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16]),
                          helper.make_tensor_value_info("image", TensorProto.INT64, [2]),
                          helper.make_tensor_value_info("block", TensorProto.INT64, [2])],
                   helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 5, 5]))
    path = tmp_path / "col2im.onnx"
    onnx.save(model, path)
    x = np.arange(64, dtype=np.float32).reshape(1, 4, 16)
    good = {"x": x, "image": np.array([5, 5]), "block": np.array([2, 2])}
    np.testing.assert_array_equal(run(path, good, "c", tmp_path / "ok")["y"],
                                  run(path, good, "interp", tmp_path / "i")["y"])
    bad = {**good, "block": np.array([1, 4])}  # 4 values per block too, but 10 positions
    with pytest.raises(Q35cError, match="image and block shapes"):
        run(path, bad, "c", tmp_path / "bad")


def test_max_unpool_refuses_an_index_out_of_range(tmp_path):
    require_tool("cc")
    node = helper.make_node("MaxUnpool", ["x", "i"], ["y"], kernel_shape=[2, 2],
                            strides=[2, 2])
    model = _model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2]),
                          helper.make_tensor_value_info("i", TensorProto.INT64, [1, 1, 2, 2])],
                   helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4]))
    path = tmp_path / "unpool.onnx"
    onnx.save(model, path)
    x = np.array([1, 2, 3, 4], dtype=np.float32).reshape(1, 1, 2, 2)
    with pytest.raises(Q35cError, match="an index or the output shape"):
        run(path, {"x": x, "i": np.array([0, 5, 16, 3]).reshape(1, 1, 2, 2)}, "c", tmp_path)


@pytest.mark.parametrize("attrs", [
    {"coordinate_transformation_mode": "output_half_pixel", "spatial_scale": 0.5},
    {"coordinate_transformation_mode": "half_pixel", "spatial_scale": 0.25, "mode": "max"},
    {"coordinate_transformation_mode": "output_half_pixel", "sampling_ratio": 3,
     "mode": "max"}])
def test_roi_align_equals_interp(tmp_path, attrs):
    """RoiAlign off the suite's settings: adaptive sampling grids (sampling_ratio 0),
    rois thinner than a pixel (widened to 1 with output_half_pixel), rois partly off
    the image, two images."""
    require_tool("cc")
    node = helper.make_node("RoiAlign", ["x", "rois", "b"], ["y"], output_height=3,
                            output_width=4, **attrs)
    model = _model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 9, 8]),
                          helper.make_tensor_value_info("rois", TensorProto.FLOAT, [4, 4]),
                          helper.make_tensor_value_info("b", TensorProto.INT64, [4])],
                   helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3, 3, 4]))
    path = tmp_path / "roi.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((2, 3, 9, 8), dtype=np.float32),
             "rois": np.array([[0, 0, 15, 17], [3.3, 2.1, 3.7, 2.4], [-4, 5, 20, 30],
                               [7.5, 1.25, 12.5, 9]], dtype=np.float32),
             "b": np.array([1, 0, 1, 0])}
    np.testing.assert_array_equal(run(path, feeds, "c", tmp_path / "c")["y"],
                                  run(path, feeds, "interp", tmp_path / "i")["y"])


@pytest.mark.parametrize("x_shape, y_shape, feeds, attrs", [
    ((1, 2, 9, 11), (1, 2, 3, 4), {"scales": [1, 1, 0.37, 0.4]},
     {"mode": "cubic", "exclude_outside": 1}),
    ((1, 1, 5, 4), (1, 1, 8, 2), {"scales": [1, 1, 1.7, 0.6]}, {"mode": "linear"}),
    ((2, 12, 7), (2, 3, 7), {"scales": [0.3]},
     {"mode": "cubic", "axes": [1], "coordinate_transformation_mode": "pytorch_half_pixel"}),
    ((1, 1, 200, 3), (1, 1, 1, 3), {"scales": [1, 1, 0.0051, 1]}, {"mode": "cubic"}),
    ((1, 1, 13, 9), (1, 1, 5, 3), {"sizes": [5, 4]},
     {"mode": "linear", "axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"}),
    ((1, 1, 13, 13), (1, 1, 4, 5),
     {"roi": [0, 0, 0.1, 0.2, 1, 1, 0.9, 0.7], "scales": [1, 1, 0.33, 0.4]},
     {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
      "extrapolation_value": 3.0})])
def test_antialiased_resize_with_run_time_scales_matches_interp(tmp_path, x_shape, y_shape,
                                                                feeds, attrs):
    """Antialias whose filter width is only known at run time (scales, sizes under a
    keep_aspect_ratio_policy, a roi): the taps are computed when the model runs, up to
    a compile-time bound (400-odd for the 200 -> 1 cubic axis). Within 1e-5 relative of
    the interpreter (c rounds to float32 between axes, the reference does not)."""
    require_tool("cc")
    feeds = {"x": np.random.default_rng(0).standard_normal(x_shape, dtype=np.float32),
             **{k: np.array(v, dtype=np.int64 if k == "sizes" else np.float32)
                for k, v in feeds.items()}}
    names = ["x", "roi" if "roi" in feeds else "", "scales" if "scales" in feeds else "",
             "sizes" if "sizes" in feeds else ""]
    while not names[-1]:
        names.pop()
    node = helper.make_node("Resize", names, ["y"], antialias=1, **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(
            k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)])
    path = tmp_path / "resize.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), path)
    want = run(path, feeds, "interp", tmp_path / "i")["y"]
    got = run(path, feeds, "c", tmp_path / "c")["y"]
    assert got.shape == want.shape == y_shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _deform_conv_model(path, feeds, **attrs) -> None:
    names = ["x", "w", "off", "b" if "b" in feeds else "", "mask" if "mask" in feeds else ""]
    while not names[-1]:
        names.pop()
    node = helper.make_node("DeformConv", names, ["y"], **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape)
                      for k, v in feeds.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)]), path)


def _deform_conv_feeds(rng, n, c, m, hw, k, out, group, og, scale, bias, mask):
    feeds = {"x": rng.standard_normal((n, c, *hw), dtype=np.float32),
             "w": rng.standard_normal((m, c // group, *k), dtype=np.float32),
             "off": (rng.standard_normal((n, og * k[0] * k[1] * 2, *out)) * scale
                     ).astype(np.float32)}
    if bias:
        feeds["b"] = rng.standard_normal(m, dtype=np.float32)
    if mask:
        feeds["mask"] = rng.random((n, og * k[0] * k[1], *out), dtype=np.float32)
    return feeds


@pytest.mark.parametrize("shapes, attrs", [
    # groups and offset groups, a mask, padding on every side
    ((2, 4, 6, (7, 6), (3, 3), (7, 6), 2, 2, 1.5, True, True),
     {"group": 2, "offset_group": 2, "pads": [1, 1, 1, 1]}),
    # strides, dilations, uneven pads, offsets reaching far past the borders, no bias/mask
    ((1, 6, 3, (9, 8), (3, 2), (3, 9), 3, 3, 40.0, False, False),
     {"group": 3, "offset_group": 3, "strides": [2, 1], "pads": [0, 2, 1, 0],
      "dilations": [2, 1]}),
    # a 5x5 kernel: 25 products per channel, numpy's 8-accumulator pairwise sum
    ((1, 2, 2, (10, 10), (5, 5), (10, 10), 1, 1, 2.0, True, False),
     {"pads": [2, 2, 2, 2]})])
def test_deform_conv_equals_interp(tmp_path, shapes, attrs):
    """DeformConv off the suite's settings, bit for bit: c samples and sums in the
    reference's float32/float64 order."""
    require_tool("cc")
    feeds = _deform_conv_feeds(np.random.default_rng(len(attrs)), *shapes)
    path = tmp_path / "deform.onnx"
    _deform_conv_model(path, feeds, **attrs)
    want = run(path, feeds, "interp", tmp_path / "i")["y"]
    np.testing.assert_array_equal(run(path, feeds, "c", tmp_path / "c")["y"], want)


def test_deform_conv_fails_on_a_non_finite_offset(tmp_path):
    """A NaN offset gives no sampling position (the reference raises): the run fails."""
    require_tool("cc")
    feeds = _deform_conv_feeds(np.random.default_rng(0), 1, 1, 1, (4, 4), (2, 2), (3, 3),
                               1, 1, 1.0, False, False)
    feeds["off"][0, 3, 1, 1] = np.nan
    path = tmp_path / "deform.onnx"
    _deform_conv_model(path, feeds)
    with pytest.raises(Q35cError, match="sampling position is not finite"):
        run(path, feeds, "c", tmp_path / "c")


@pytest.mark.parametrize("elem", [TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_half_precision_cnn_ops_compute_in_float32_on_c(tmp_path, elem):
    """Conv (with bias), BatchNormalization, MaxPool (with Indices), AveragePool and
    GlobalAveragePool of float16 / bfloat16 (a `model.half()` export's patch embedding or
    CNN): the C target widens the operands exactly, computes in float32 and rounds each
    result once, so it agrees with the interpreter (which rounds inside onnx's reference
    kernels) to the half type's precision and equals float32 arithmetic on the same
    values rounded once."""
    require_tool("cc")
    import ml_dtypes

    dtype = np.float16 if elem == TensorProto.FLOAT16 else ml_dtypes.bfloat16
    rng = np.random.default_rng(1)

    def init(name, shape):
        return onnx.numpy_helper.from_array(
            rng.standard_normal(shape).astype(np.float32).astype(dtype), name)

    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "m", "v"], ["n"]),
             helper.make_node("MaxPool", ["n"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("AveragePool", ["n"], ["a"], kernel_shape=[3, 3]),
             helper.make_node("GlobalAveragePool", ["p"], ["ga"])]
    inits = [init("w", (4, 3, 3, 3)), init("b", (4,)), init("g", (4,)), init("beta", (4,)),
             init("m", (4,)),
             onnx.numpy_helper.from_array(np.full(4, 1.5, np.float32).astype(dtype), "v")]
    outs = [helper.make_tensor_value_info(n, elem, None) for n in ("c", "n", "p", "a", "ga")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", elem, [1, 3, 8, 8])],
        outs + [helper.make_tensor_value_info("i", TensorProto.INT64, None)], inits)
    path = tmp_path / "half.onnx"  # bfloat16 Conv and pools since opset 22
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)]), path)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32).astype(dtype)
    want = run(path, {"x": x}, "interp", tmp_path / "i")
    got = run(path, {"x": x}, "c", tmp_path / "c")
    eps = float(ml_dtypes.finfo(dtype).eps)
    for name in ("c", "n", "p", "a", "ga"):
        assert got[name].dtype == want[name].dtype == np.dtype(dtype), name
        g, w = got[name].astype(np.float64), want[name].astype(np.float64)
        assert np.max(np.abs(g - w)) <= 8 * eps * max(np.max(np.abs(w)), 1.0), name
    np.testing.assert_array_equal(got["i"], want["i"])
    # the Conv alone: float32 arithmetic on the half values, rounded once
    conv = np.zeros((1, 4, 8, 8), np.float64)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    w4 = onnx.numpy_helper.to_array(inits[0]).astype(np.float64)
    for r in range(8):
        for c in range(8):
            conv[0, :, r, c] = np.tensordot(w4, xp[0, :, r:r + 3, c:c + 3], axes=3)
    conv += onnx.numpy_helper.to_array(inits[1]).astype(np.float64)[:, None, None]
    assert np.max(np.abs(got["c"].astype(np.float64) - conv)) <= eps * np.max(np.abs(conv))
