"""ONNX's narrow element types and quantization ops on the C target: the same bits as the
interpreter (onnx's reference implementation, numpy and ml_dtypes).

Casts to and from float8 (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz, e8m0), float4 e2m1 and the 2-
and 4-bit integers run over every value of the narrow types and over every float16 (NaNs,
infinities, subnormals, ties, values past the largest); QuantizeLinear / DequantizeLinear
(per tensor, per axis, blocked), MatMulInteger, QLinearMatMul and DynamicQuantizeLinear
over edge values; and the node suite's cases of these ops. A hypothesis property checks the
float32 to float8 conversions against onnx's own converters.
"""

from __future__ import annotations

import importlib.util
import sys

import ml_dtypes
import numpy as np
import onnx
import pytest
from conftest import ROOT
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from onnx import TensorProto, helper

from q35c.compiler.driver import Options, run_file

FLOAT8 = [ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz, ml_dtypes.float8_e5m2,
          ml_dtypes.float8_e5m2fnuz]
NARROW_FLOATS = [*FLOAT8, ml_dtypes.float4_e2m1fn, ml_dtypes.float8_e8m0fnu]
NARROW_INTS = [ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2, ml_dtypes.uint2]
WIDE = [np.float32, np.float64, np.float16, ml_dtypes.bfloat16, np.int8, np.uint8, np.int16,
        np.int32, np.int64, np.uint64, np.bool_]


def _tensor_type(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _model(nodes, inputs: dict[str, np.ndarray], outputs: dict[str, tuple], opset: int = 25
           ) -> onnx.ModelProto:
    def info(name, dtype, shape):
        return helper.make_tensor_value_info(name, _tensor_type(dtype), list(shape))

    graph = helper.make_graph(nodes, "g", [info(k, v.dtype, v.shape) for k, v in inputs.items()],
                              [info(k, *v) for k, v in outputs.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _run(model, feeds, target: str, tmp_path) -> dict[str, np.ndarray]:
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    return run_file(path, feeds, tmp_path / target,
                    Options(target=target, passes="",
                            shapes={k: v.shape for k, v in feeds.items()}))


def _agree(model, feeds, tmp_path) -> dict[str, np.ndarray]:
    """Both targets' outputs, which must have the same element types, shapes and bits."""
    interp = _run(model, feeds, "interp", tmp_path)
    c = _run(model, feeds, "c", tmp_path)
    assert interp.keys() == c.keys()
    for name, want in interp.items():
        got = c[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        flat_got, flat_want = got.reshape(-1), want.reshape(-1)
        bad = (flat_got.view(np.uint8).reshape(got.size, -1)
               != flat_want.view(np.uint8).reshape(got.size, -1)).any(axis=1)
        assert not bad.any(), (f"{name}: at {np.flatnonzero(bad)[:8]} c {flat_got[bad][:8]} "
                               f"!= interp {flat_want[bad][:8]}")
    return c


def _every_float16() -> np.ndarray:
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)


def _every_value(dtype) -> np.ndarray:
    """Every value of a narrow type (each encoding once)."""
    if dtype in NARROW_INTS:
        info = ml_dtypes.iinfo(dtype)
        return np.arange(info.min, info.max + 1).astype(dtype)
    count = 16 if dtype == ml_dtypes.float4_e2m1fn else 256
    return np.arange(count, dtype=np.uint8).view(dtype)


def _casts_to_narrow(source: np.ndarray, tmp_path) -> None:
    nodes, outputs = [], {}
    for n, dtype in enumerate(NARROW_FLOATS[:5] + NARROW_INTS):
        for saturate in (0, 1):
            name = f"y{n}_{saturate}"
            nodes.append(helper.make_node("Cast", ["x"], [name], to=_tensor_type(dtype),
                                          saturate=saturate))
            outputs[name] = (dtype, source.shape)
    for mode in ("up", "down", "nearest"):
        for saturate in (0, 1):
            name = f"e8m0_{mode}_{saturate}"
            nodes.append(helper.make_node(
                "Cast", ["x"], [name], to=TensorProto.FLOAT8E8M0, saturate=saturate,
                round_mode=mode))
            outputs[name] = (ml_dtypes.float8_e8m0fnu, source.shape)
    _agree(_model(nodes, {"x": source}, outputs), {"x": source}, tmp_path)


def test_casts_of_every_float16_to_each_narrow_type(tmp_path):
    """Rounding to nearest-even at every exponent, subnormals, overflow to infinity / NaN /
    the largest value, saturation, float8 e8m0's three rounding modes."""
    _casts_to_narrow(_every_float16(), tmp_path)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, ml_dtypes.bfloat16, np.int32,
                                   np.uint8, np.bool_], ids=lambda t: np.dtype(t).name)
def test_casts_of_edge_values_to_each_narrow_type(tmp_path, dtype):
    rng = np.random.default_rng(3)
    if np.dtype(dtype).kind in "iub":
        values = np.concatenate([np.arange(-300, 300), rng.integers(-2**31, 2**31, 200)])
        source = values.astype(dtype)
    else:
        base = np.concatenate([
            np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 448, 464, 465, 480, 240,
                      248, 57344, 61440, 6.0, 7.0, 5.0, 1e-45, 1e-300, 3.4e38, 1e300,
                      0.5, 1.5, 2.5, -7.5, -8.5, 15.5, 16.0, 1 + 2**-4 + 2**-40]),
            rng.normal(0, 100, 200), np.exp2(rng.uniform(-150, 130, 200))])
        with np.errstate(over="ignore"):
            source = base.astype(dtype)
    _casts_to_narrow(source, tmp_path)


def test_casts_from_every_narrow_value(tmp_path):
    """Every value of every narrow type to the wide types (floats exact, integers by
    truncation, 0 out of range), and between narrow types."""
    feeds = {f"x{n}": _every_value(t) for n, t in enumerate(NARROW_FLOATS + NARROW_INTS)}
    nodes, outputs = [], {}
    for name, value in feeds.items():
        for dtype in [*WIDE, ml_dtypes.float8_e5m2, ml_dtypes.int4]:
            out = f"{name}_{np.dtype(dtype).name}"
            nodes.append(helper.make_node("Cast", [name], [out], to=_tensor_type(dtype)))
            outputs[out] = (dtype, value.shape)
    _agree(_model(nodes, feeds, outputs), feeds, tmp_path)


@settings(max_examples=20, deadline=None)
@given(values=arrays(np.float32, 64,  # one shape: one C build, cached, for every example
                     elements=st.floats(width=32, allow_nan=True, allow_infinity=True)),
       saturate=st.booleans())
def test_float8_casts_match_onnx_converters(tmp_path_factory, values, saturate):
    """Cast float32 -> float8 / int4 / uint4 on the C target gives what onnx's reference
    converters give (`saturate_cast`, or ml_dtypes' conversion without saturation; the 4-bit
    integers ignore `saturate`)."""
    targets = [*FLOAT8, ml_dtypes.int4, ml_dtypes.uint4]
    nodes = [helper.make_node("Cast", ["x"], [f"y{n}"], to=_tensor_type(t),
                              saturate=int(saturate)) for n, t in enumerate(targets)]
    outputs = {f"y{n}": (t, values.shape) for n, t in enumerate(targets)}
    got = _run(_model(nodes, {"x": values}, outputs), {"x": values}, "c",
               tmp_path_factory.mktemp("h"))
    for n, dtype in enumerate(targets):
        with np.errstate(all="ignore"):
            want = (onnx.numpy_helper.saturate_cast(values, np.dtype(dtype))
                    if saturate and dtype in FLOAT8 else values.astype(dtype))
        assert np.array_equal(got[f"y{n}"].view(np.uint8), want.view(np.uint8)), dtype


QUANT_TYPES = [np.uint8, np.int8, np.uint16, np.int16, *NARROW_INTS, *FLOAT8,
               ml_dtypes.float4_e2m1fn]


@pytest.mark.parametrize("x_type", [np.float32, np.float16],
                         ids=lambda t: np.dtype(t).name)
def test_quantize_linear_to_every_type(tmp_path, x_type):
    """Per tensor, per axis and blocked, with zero points, saturate on and off: ties of
    rint, values past the range, NaN and infinities (numpy's INT32_MIN)."""
    rng = np.random.default_rng(5)
    with np.errstate(over="ignore"):
        x = np.concatenate([[0.5, 1.5, 2.5, -0.5, -2.5, np.nan, np.inf, -np.inf, 1e9, -1e9],
                            rng.normal(0, 40, 38)]).astype(x_type).reshape(4, 12)
    feeds = {"x": x, "s1": np.array(0.37, x_type),
             "sa": np.array([0.5, 2.0, 0.3, 7.0], x_type),
             "sb": rng.uniform(0.1, 3, (4, 3)).astype(x_type)}
    nodes, outputs = [], {}
    for n, dtype in enumerate(QUANT_TYPES):
        values = _every_value(dtype)
        if dtype in FLOAT8 or dtype == ml_dtypes.float4_e2m1fn:
            zeros = np.zeros(4, np.uint8).view(dtype) if dtype != ml_dtypes.float4_e2m1fn \
                else values[[0, 2, 5, 9]]
        else:
            info = ml_dtypes.iinfo(dtype)
            zeros = np.array([info.min, 0, info.max, (info.min + info.max) // 2]).astype(dtype)
        feeds[f"z{n}"] = zeros
        feeds[f"zb{n}"] = np.resize(zeros, (4, 3)).astype(dtype)
        for kind, scale, zero, attrs in (
                ("t", "s1", None, {}), ("a", "sa", f"z{n}", {"axis": 0}),
                ("b", "sb", f"zb{n}", {"axis": 1, "block_size": 4})):
            for saturate in (0, 1):
                out = f"q{n}{kind}{saturate}"
                inputs = ["x", scale] + ([zero] if zero else [])
                extra = {} if zero else {"output_dtype": _tensor_type(dtype)}
                nodes.append(helper.make_node("QuantizeLinear", inputs, [out],
                                              saturate=saturate, **attrs, **extra))
                outputs[out] = (dtype, x.shape)
    _agree(_model(nodes, feeds, outputs), feeds, tmp_path)


def test_dequantize_linear_from_every_type(tmp_path):
    """Every value of each quantized type (and int32), per tensor / per axis / blocked,
    float32 and float16 scales."""
    rng = np.random.default_rng(6)
    feeds, nodes, outputs = {}, [], {}
    for n, dtype in enumerate([*QUANT_TYPES, np.int32]):
        values = _every_value(dtype) if dtype not in (np.uint8, np.int8, np.uint16, np.int16,
                                                      np.int32) else \
            np.concatenate([[np.iinfo(dtype).min, np.iinfo(dtype).max, 0, 1],
                            rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, 252,
                                         endpoint=True)]).astype(dtype)
        x = np.resize(values, (4, 64)).astype(dtype)
        feeds[f"x{n}"] = x
        zeros = np.resize(values[::7], 4).astype(dtype)
        if dtype in FLOAT8:
            zeros = np.zeros(4, np.uint8).view(dtype)
        feeds[f"z{n}"] = zeros
        feeds[f"zb{n}"] = np.resize(zeros, (4, 8)).astype(dtype)
        for scale_type in (np.float32, np.float16):
            s = f"{np.dtype(scale_type).name}"
            feeds.setdefault(f"s_{s}", np.array(0.0123, scale_type))
            feeds.setdefault(f"sa_{s}", np.array([0.5, 1e-3, 3.0, 70.0], scale_type))
            feeds.setdefault(f"sb_{s}", rng.uniform(0.01, 2, (4, 8)).astype(scale_type))
            for kind, scale, zero, attrs in (
                    ("t", f"s_{s}", None, {}), ("a", f"sa_{s}", f"z{n}", {"axis": 0}),
                    ("b", f"sb_{s}", f"zb{n}", {"axis": 1, "block_size": 8})):
                out = f"d{n}{kind}{s}"
                nodes.append(helper.make_node("DequantizeLinear",
                                              [f"x{n}", scale] + ([zero] if zero else []),
                                              [out], **attrs))
                outputs[out] = (scale_type, x.shape)
    _agree(_model(nodes, feeds, outputs), feeds, tmp_path)


def test_integer_matmuls_and_dynamic_quantization(tmp_path):
    """MatMulInteger with a per-column zero point and broadcast batches (int32 wrapping),
    QLinearMatMul with float16 scales, DynamicQuantizeLinear on data all negative, all
    positive, and mixed."""
    rng = np.random.default_rng(7)
    feeds = {
        "a": rng.integers(0, 256, (2, 1, 3, 5), dtype=np.uint8),
        "b": rng.integers(0, 256, (4, 5, 6), dtype=np.uint8),
        "azp": np.array(17, np.uint8), "bzp": rng.integers(0, 256, 6, dtype=np.uint8),
        "qa": rng.integers(-128, 128, (3, 5), dtype=np.int8),
        "qb": rng.integers(-128, 128, (5, 6), dtype=np.int8),
        "sa": np.array([0.031], np.float16), "sb": np.array([0.7], np.float16),
        "sy": np.array([0.05], np.float16), "za": np.array([3], np.int8),
        "zb": np.array([-2], np.int8), "zy": np.array([5], np.int8),
        "neg": -rng.uniform(0.1, 9, 7).astype(np.float32),
        "pos": rng.uniform(0.1, 9, 7).astype(np.float32),
        "mix": rng.normal(0, 3, (3, 4)).astype(np.float32)}
    nodes = [helper.make_node("MatMulInteger", ["a", "b", "azp", "bzp"], ["mm"]),
             helper.make_node("QLinearMatMul", ["qa", "sa", "za", "qb", "sb", "zb", "sy",
                                                "zy"], ["ql"])]
    outputs = {"mm": (np.int32, (2, 4, 3, 6)), "ql": (np.int8, (3, 6))}
    for name in ("neg", "pos", "mix"):
        nodes.append(helper.make_node("DynamicQuantizeLinear", [name],
                                      [f"{name}_y", f"{name}_s", f"{name}_z"]))
        outputs.update({f"{name}_y": (np.uint8, feeds[name].shape),
                        f"{name}_s": (np.float32, ()), f"{name}_z": (np.uint8, ())})
    _agree(_model(nodes, feeds, outputs, opset=21), feeds, tmp_path)


def test_integer_convolutions(tmp_path):
    """ConvInteger and QLinearConv with pads, strides, dilations and groups, a per-output-
    channel weight zero point and scale, an int32 bias."""
    rng = np.random.default_rng(8)
    feeds = {"x": rng.integers(0, 256, (2, 4, 7, 6), dtype=np.uint8),
             "w": rng.integers(0, 256, (6, 2, 3, 2), dtype=np.uint8),
             "xz": np.array(100, np.uint8), "wz": rng.integers(0, 256, 6, dtype=np.uint8),
             "xs": np.array(0.02, np.float32), "ws": rng.uniform(0.001, 0.01, 6).astype(
                 np.float32), "ys": np.array(0.3, np.float32), "yz": np.array(120, np.uint8),
             "bias": rng.integers(-5000, 5000, 6, dtype=np.int32)}
    geometry = {"pads": [1, 0, 2, 1], "strides": [2, 1], "dilations": [1, 2], "group": 2}
    nodes = [helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["ci"], **geometry),
             helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz",
                                              "bias"], ["qc"], **geometry)]
    shape = (2, 6, 4, 5)
    _agree(_model(nodes, feeds, {"ci": (np.int32, shape), "qc": (np.uint8, shape)},
                  opset=10), feeds, tmp_path)


def test_a_nonzero_float8_zero_point_fails_the_run(tmp_path):
    """DequantizeLinear's float8 zero point must be zero: the reference raises, the
    compiled model fails with one line naming the node."""
    from q35c.compiler.diagnostics import Q35cError

    feeds = {"x": np.arange(4, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn),
             "s": np.array(2.0, np.float32),
             "z": np.array([2.0], np.float32).astype(ml_dtypes.float8_e4m3fn)}
    model = _model([helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], axis=0,
                                     name="dq")], feeds, {"y": (np.float32, (4,))})
    with pytest.raises(Q35cError, match="zero point must be zero"):
        _run(model, feeds, "c", tmp_path)


SUITE_OPS = ("Cast", "CastLike", "QuantizeLinear", "DequantizeLinear",
             "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul", "ConvInteger",
             "QLinearConv")
SUITE_STEP = 4
"""Every 4th node-suite case of these ops (in name order) runs here; all of them:
`python benchmarks/onnx_node_suite.py --target c -k cast` (and -k quantize, qlinear,
integer)."""


def _suite():
    spec = importlib.util.spec_from_file_location(
        "onnx_node_suite", ROOT / "benchmarks" / "onnx_node_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_node_suite_cases_of_these_ops_pass_on_c(tmp_path):
    suite = _suite()
    cases = [c for c in suite.collect() if suite.op_type(c) in SUITE_OPS
             and "STRING" not in c.name][::SUITE_STEP]
    assert len(cases) >= 40
    bad = []
    for case in cases:
        work = tmp_path / case.name
        work.mkdir()
        outcome = suite.run_case(case, "c", work)
        if outcome.status != "pass":
            bad.append(f"{case.name}: {outcome.status}: {outcome.detail}")
    assert not bad, "\n".join(bad)
