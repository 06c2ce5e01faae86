"""MatMul and Gemm of the element types the dedicated converters leave to the generic op
(float16, bfloat16, float64 and the integers) on the C target, lowered as an Einsum
(targets/native/onnx_attention.py): c against the interpreter (and numpy's matmul, which
the interpreter runs) for every rank combination numpy allows, batch axes broadcast, and
Gemm's transposes, alpha, beta and broadcast C. Integers wrap as numpy's do and are exact;
the float types are exact here too but for float64, whose sums numpy leaves to BLAS
(another order: within a few ulps)."""

from __future__ import annotations

import contextlib
import io
import warnings

import ml_dtypes
import numpy as np
import onnx
import pytest
from conftest import require_tool
from onnx import helper

from q35c.compiler.driver import Options, run_file


def _random(rng, dtype, shape) -> np.ndarray:
    if np.dtype(dtype).kind in "iu":  # full-range values: the sums wrap around
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


def _check(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype == np.float64:
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-14)
    else:
        assert got.tobytes() == want.tobytes()


def run(path, feeds, target, out) -> np.ndarray:
    options = Options(target=target, passes="", shapes={k: v.shape for k, v in feeds.items()})
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_file(path, feeds, out, options)["y"]


@pytest.mark.parametrize("dtype, a_shape, b_shape", [
    (np.float16, (3, 64), (64, 5)),
    (ml_dtypes.bfloat16, (2, 3, 40), (40, 2)),
    (np.float64, (2, 1, 3, 4), (5, 4, 2)),
    (np.int32, (4,), (2, 4, 3)),
    (np.int64, (2, 3, 4), (4,)),
    (np.uint32, (7,), (7,)),
    (np.uint64, (3, 4), (4, 2))], ids=lambda v: str(v))
def test_matmul_equals_interp(tmp_path, dtype, a_shape, b_shape):
    require_tool("cc")
    rng = np.random.default_rng(0)
    a, b = _random(rng, dtype, a_shape), _random(rng, dtype, b_shape)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("a", elem, a_shape),
         helper.make_tensor_value_info("b", elem, b_shape)],
        [helper.make_tensor_value_info("y", elem, None)])
    path = tmp_path / "matmul.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    feeds = {"a": a, "b": b}
    want = run(path, feeds, "interp", tmp_path / "i")
    got = run(path, feeds, "c", tmp_path / "c")
    assert want.shape == np.matmul(a, b).shape
    _check(got, want)


@pytest.mark.parametrize("dtype, c_shape, attrs", [
    (np.float16, (5,), {"alpha": 0.3, "beta": 0.7, "transA": 1}),
    (np.float16, None, {}),
    (ml_dtypes.bfloat16, (3, 5), {"alpha": 0.1, "beta": 2.0}),
    (np.float64, (3, 1), {"alpha": 1.5, "transB": 1}),
    (np.int32, (5,), {"alpha": 0.5, "beta": 1.5}),
    (np.int64, (), {}),
    (np.uint32, None, {"alpha": 2.5, "transA": 1, "transB": 1})], ids=lambda v: str(v))
def test_gemm_equals_interp(tmp_path, dtype, c_shape, attrs):
    """The reference's alpha and beta are float32 scalars: float16 / bfloat16 products are
    scaled in float32, integers in float64, and cast back."""
    require_tool("cc")
    rng = np.random.default_rng(1)
    m, k, n = 3, 16, 5
    small = np.dtype(dtype).kind in "iu"  # integers small enough for float64's products
    feeds = {"a": (k, m) if attrs.get("transA") else (m, k),
             "b": (n, k) if attrs.get("transB") else (k, n)}
    if c_shape is not None:
        feeds["c"] = c_shape
    feeds = {name: (rng.integers(0, 1000, shape).astype(dtype) if small
                    else _random(rng, dtype, shape)) for name, shape in feeds.items()}
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        [helper.make_node("Gemm", list(feeds), ["y"], **attrs)], "g",
        [helper.make_tensor_value_info(k, elem, v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info("y", elem, None)])
    path = tmp_path / "gemm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    _check(run(path, feeds, "c", tmp_path / "c"), run(path, feeds, "interp", tmp_path / "i"))
