"""`q35c.semantics.einsum`, the interpreter's float16 / bfloat16 Einsum: each output element
is the float64 sum, in row-major order of the summed labels, of the float64 products of the
operands' elements, rounded once; checked against that definition written out element by
element, and against numpy's path-dependent result it replaces."""

from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import pytest

from q35c.semantics import einsum as module
from q35c.semantics.einsum import einsum, parse_einsum

CASES = [(",iju,->i", [(), (3, 3, 3), ()]), ("ij,jk,k->i", [(3, 2), (2, 3), (3,)]),
         ("i,i,i->", [(3,), (3,), (3,)]), ("a...b,b...->...a", [(2, 3, 2), (2, 1)]),
         ("iju,,->ui", [(3, 3, 3), (), ()]), ("ii,i->i", [(3, 3), (3,)]),
         ("ij->", [(4, 0)]), ("ij,jk", [(0, 2), (2, 3)]), ("...", [(2, 1)]),
         ("bij,bjk->bik", [(2, 6, 30), (2, 30, 5)])]


def written_out(equation: str, arrays: list[np.ndarray], dtype) -> np.ndarray:
    """The definition, one element and one product at a time in Python floats."""
    ops_labels, out, extents = parse_einsum(equation, [a.shape for a in arrays])
    summed = [label for label in extents if label not in out]
    result = np.zeros([extents[label] for label in out], dtype=np.float64)
    for where in itertools.product(*(range(extents[label]) for label in out)):
        acc = 0.0
        for what in itertools.product(*(range(extents[label]) for label in summed)):
            at = dict(zip(out + summed, where + what))
            product = None
            for labels, array in zip(ops_labels, arrays):
                index = tuple(at[label] if n != 1 else 0
                              for label, n in zip(labels, array.shape))
                value = float(array[index])
                product = value if product is None else product * value
            acc += product
        result[where] = acc
    with np.errstate(over="ignore"):
        if np.dtype(dtype) == np.dtype(ml_dtypes.bfloat16):
            return result.astype(np.float32).astype(dtype)
        return result.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize(("equation", "shapes"), CASES, ids=[c[0] for c in CASES])
def test_einsum_is_its_definition(equation, shapes, dtype):
    rng = np.random.default_rng(1)
    for _ in range(5):
        arrays = [(rng.standard_normal(s) * 8).astype(dtype) for s in shapes]
        got, want = einsum(equation, arrays), written_out(equation, arrays, dtype)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes(), (got, want)


def test_numpys_optimized_path_rounds_an_intermediate():
    """Why the definition is needed: onnx's reference (`optimize=True`) contracts `iju`
    with the last scalar first and rounds that to float16, so it differs from the float64
    sum rounded once on some of these inputs; the definition never does."""
    rng = np.random.default_rng(0)
    numpy_off = 0
    for _ in range(20):
        arrays = [rng.standard_normal(s).astype(np.float16) for s in [(), (3, 3, 3), ()]]
        once = np.einsum(",iju,->i", *(a.astype(np.float64) for a in arrays)
                         ).astype(np.float16)
        numpy_off += not np.array_equal(
            np.einsum(",iju,->i", *arrays, optimize=True), once)
        assert np.array_equal(einsum(",iju,->i", arrays), once)
    assert numpy_off


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_chunks_do_not_change_the_order(monkeypatch, chunk):
    """The summed positions go in chunks (bounded memory); every chunk size adds the
    same terms in the same order, so gives the same bits."""
    rng = np.random.default_rng(2)
    arrays = [(rng.standard_normal(s) * 4).astype(np.float16) for s in [(4, 50), (50, 3)]]
    want = written_out("ij,jk->ik", arrays, np.float16)
    monkeypatch.setattr(module, "_CHUNK", chunk)
    assert einsum("ij,jk->ik", arrays).tobytes() == want.tobytes()
