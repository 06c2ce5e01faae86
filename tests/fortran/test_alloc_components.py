"""Allocatable components of derived types from the command line: a dummy's allocatable
components are inputs of their run-time shape (`--input layer%wq=w.npy`) and, for an
intent(inout) dummy, outputs; refused forms are one-line located errors (exit code 2).
The kernels are checked against gfortran in test_gfortran_oracle.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import q35c

KERNEL = Path(__file__).resolve().parents[2] / "examples" / "fortran" / "alloc_components.f90"


@pytest.mark.parametrize("target", ["interp", "c"])
def test_dummy_components_are_run_time_shape_inputs_and_outputs(tmp_path, target):
    rng = np.random.default_rng(3)
    m, k, n = 2, 6, 5  # the shapes come from the .npy files, not from m, k, n
    wq = rng.integers(-8, 8, size=(k, n), dtype=np.int8)
    scales = rng.standard_normal(n).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    for name, value in {"wq": wq, "scales": scales, "x": x}.items():
        np.save(tmp_path / f"{name}.npy", value)
    out = tmp_path / "out"
    q35c("run", KERNEL, "--entry", "qlayer_forward", "--target", target,
         "--input", f"layer%wq={tmp_path / 'wq.npy'}",
         "--input", f"layer%scales={tmp_path / 'scales.npy'}", "--input", "layer%calls=4",
         "--input", f"x={tmp_path / 'x.npy'}", "--input", f"m={m}", "--input", f"k={k}",
         "--input", f"n={n}", "-o", out)
    want = (x.astype(np.float64) @ wq.astype(np.float64)) * scales
    np.testing.assert_allclose(np.load(out / "y.npy"), want, rtol=1e-5, atol=1e-5)
    flipped = scales.copy()
    flipped[0::2] = -flipped[0::2]
    np.testing.assert_array_equal(np.load(out / "layer_scales.npy"), flipped)
    assert np.load(out / "layer_calls.npy") == 5


def test_allocating_a_dummy_component_is_a_located_error(tmp_path):
    source = tmp_path / "k.f90"
    source.write_text("module m\n  type :: t\n    real, allocatable :: w(:, :)\n  end type\n"
                      "contains\n  subroutine init(p, n)\n    integer, intent(in) :: n\n"
                      "    type(t), intent(inout) :: p\n    allocate(p%w(n, n))\n"
                      "  end subroutine\nend module\n")
    result = q35c("compile", source, "--target", "c", "-o", tmp_path / "out", check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[0] == (
        f"q35c: error: {source}:9:14: allocate of the dummy argument 'p%w' is not supported "
        "(allocatable dummies and allocatable components of derived-type dummies are passed "
        "allocated)")
