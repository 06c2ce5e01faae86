"""Every corpus kernel, on random inputs, against gfortran: integer results identical,
real32 results within 2 ulp. gfortran is installed by `dev.sh` (apt) in CI; the test
fails, not skips, when it is missing there."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from .oracle import Case, gfortran, procedure, random_inputs, run_gfortran, run_q35c, ulp_distance

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "fortran"

CASES = [
    Case("qmatmul_pair.f90", "qmatmul_pair", {"M": 3, "K": 16, "N": 5},
         ranges={"X": (-127, 127), "W": (0, 127), "scale": (0.0, 0.05),
                 "offset": (0.0, 0.01), "xscale": (0.0, 0.02)}, exact=False),
    Case("qmatmul_pair.f90", "qmatmul_pair_4x64x16", {},
         ranges={"X": (-127, 127), "W": (0, 127), "scale": (0.0, 0.05),
                 "offset": (0.0, 0.01), "xscale": (0.0, 0.02)}, exact=False,
         raise_idioms=True),
    Case("unpack_nibbles.f90", "unpack_nibbles", {"K": 8, "N": 3},
         ranges={"zero": (0, 15)}, exact=False),
    Case("rmsnorm.f90", "rmsnorm", {"D": 16, "T": 3, "eps": np.float32(1e-5)}, exact=False),
    Case("softmax.f90", "softmax_rows", {"R": 3, "C": 10}, ranges={"S": (0.0, 3.0)},
         exact=False),
    Case("silu_mlp.f90", "silu_mlp", {"D": 8, "H": 12}, exact=False),
    Case("rope.f90", "rope", {"Dh": 8, "T": 3, "pos0": 5, "base": np.float32(10000.0)},
         exact=False),
    Case("lut_dequant.f90", "dequant_pairs", {"P": 6, "N": 4}, ranges={"W": (0, 127)},
         exact=False),
    Case("lut_dequant.f90", "pair_levels", {"P": 6, "N": 4}, ranges={"W": (0, 127)}),
    Case("int_ops.f90", "wrap_and_bits", {"N": 40}),
    Case("int_ops.f90", "control", {"N": 30}, ranges={"A": (-5000, 5000)}),
    Case("int_ops.f90", "nearest_sum", {"N": 25}, ranges={"X": (0.0, 40.0)}),
    Case("derived_params.f90", "layer_norm", {"p%n": 6, "p%eps": np.float32(1e-5)},
         ranges={"x": (0.5, 2.0)}, exact=False),
    Case("alloc_components.f90", "qlayer_forward", {"m": 3, "k": 7, "n": 5, "layer%calls": 2},
         ranges={"layer%wq": (-8, 7)}, extents={"layer%wq": (7, 5), "layer%scales": (5,)},
         exact=False),
    Case("alloc_components.f90", "qlinear_ws", {"m": 4, "k": 6, "n": 3},
         ranges={"wq": (-128, 127)}, exact=False),
    Case("elemental_arrays.f90", "epilogue", {"n": 7, "scale": np.float32(0.02)},
         ranges={"acc": (-8000, 8000)}, exact=False),
    Case("elemental_arrays.f90", "affine", {"n": 5, "s": np.float32(-1.5)}, exact=False),
    Case("elemental_arrays.f90", "odds", {"n": 9}),
    Case("dequant_silu.f90", "dequant_silu", {}, exact=False),
    Case("reductions.f90", "token_stats", {"thresh": np.float32(0.25)}, exact=False),
    Case("reductions.f90", "code_sums", {}),
    Case("reductions.f90", "logit_filter", {"cutoff": np.float32(0.5)}, exact=False),
    Case("attn_softmax.f90", "causal_softmax", {"pos0": 5}, exact=False),
    Case("rmsnorm_q8.f90", "rmsnorm_q8", {"eps": np.float32(1e-5)}, exact=False),
    Case("features.f90", "kernels", {"n": 5, "m": 3}, ranges={"B": (-9, 9)}, exact=False),
]


def _id(case: Case) -> str:
    return case.entry


def _require_gfortran():
    if gfortran() is None:
        if os.environ.get("CI"):
            pytest.fail("gfortran is missing (apt-get install gfortran)")
        pytest.skip("gfortran is not installed (apt-get install gfortran)")


@pytest.mark.parametrize("target", ["interp", "c"])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_kernel_matches_gfortran(case: Case, target: str, tmp_path: Path):
    """The interpreter, and the kernel compiled to C by q35c, against gfortran."""
    _require_gfortran()
    path = CORPUS / case.file
    info = procedure(path, case.entry)
    rng = np.random.default_rng(sum(map(ord, case.entry)))
    inputs = random_inputs(info, case, rng)
    want = run_gfortran(path, info, case, inputs, tmp_path / "gfortran")
    got = run_q35c(path, case, inputs, target)
    assert set(got) == set(want), (sorted(got), sorted(want))
    for name, expected in want.items():
        actual = np.asarray(got[name])
        assert actual.shape == expected.shape, name
        assert actual.dtype == expected.dtype, (name, actual.dtype, expected.dtype)
        if case.exact or expected.dtype.kind in "iub":
            np.testing.assert_array_equal(actual, expected, err_msg=name)
        else:
            ulps = ulp_distance(actual, expected)
            worst = int(ulps.max()) if ulps.size else 0
            assert worst <= case.max_ulp, (
                f"{name}: {worst} ulp apart at {np.unravel_index(ulps.argmax(), ulps.shape)}")


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_c_is_bit_exact_with_the_interpreter(case: Case):
    """The C target follows the reference semantics bit for bit (floats included)."""
    path = CORPUS / case.file
    info = procedure(path, case.entry)
    inputs = random_inputs(info, case, np.random.default_rng(7 + len(case.entry)))
    want = run_q35c(path, case, inputs)
    got = run_q35c(path, case, inputs, "c")
    assert set(got) == set(want)
    for name, expected in want.items():
        actual = np.asarray(got[name])
        assert actual.dtype == np.asarray(expected).dtype, name
        np.testing.assert_array_equal(actual, expected, err_msg=name)


def test_corpus_is_fully_covered():
    entries = {(c.file, c.entry) for c in CASES}
    files = {p.name for p in CORPUS.glob("*.f90")}
    assert files == {f for f, _ in entries}
