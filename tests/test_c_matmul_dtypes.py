"""MatMul of the element types the dedicated converter leaves to the generic op (float16,
bfloat16, float64 and the integers) on the C target, lowered as an Einsum
(targets/native/onnx_attention.py): c against the interpreter (and numpy's matmul, which
the interpreter runs) for every rank combination numpy allows, batch axes broadcast.
Integers wrap as numpy's do and are exact; the float types are exact here too but for
float64, whose sums numpy leaves to BLAS (another order: within a few ulps)."""

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
    if np.dtype(dtype).kind in "iu":  # full-range values: the sums wrap around
        info = np.iinfo(dtype)
        a, b = (rng.integers(info.min, info.max, s, dtype=dtype, endpoint=True)
                for s in (a_shape, b_shape))
    else:
        a, b = (rng.standard_normal(s).astype(dtype) for s in (a_shape, b_shape))
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
    assert got.dtype == want.dtype and got.shape == want.shape == np.matmul(a, b).shape
    if np.dtype(dtype) == np.float64:
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-14)
    else:
        assert got.tobytes() == want.tobytes()
