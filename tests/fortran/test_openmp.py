"""OpenMP in the C target: loops that `!$omp parallel do` or `do concurrent` declare
independent become `#pragma omp parallel for` with the frontend's scalar cells they write
made private; a loop whose scalar carries a value between iterations stays serial. Results
on several threads are checked against gfortran -fopenmp in test_gfortran_oracle.py (the
oracle builds with -fopenmp) and against the interpreter here."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from q35c.compiler.frontends.fortran import compile_source
from q35c.compiler.weights import WeightStore
from q35c.semantics import run_module
from q35c.targets.c.loops import run as run_c, write_files

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "fortran"


def _c_source(source: str, name: str = "k.f90") -> str:
    return write_files(compile_source(source, name, raise_idioms=False), "k")["kernels.c"
                                                                          ].decode()


def _pragmas(text: str) -> list[str]:
    return re.findall(r"#pragma omp parallel for[^\n]*", text)


def test_omp_parallel_do_privatizes_the_scalars_each_iteration_writes():
    text = _c_source((CORPUS / "qmatmul_pair.f90").read_text())
    # the dynamic kernel's `!$omp parallel do private(i, p, acc, sx, v4, v3)`: six cells
    (pragma,) = _pragmas(text)
    cells = re.fullmatch(r"#pragma omp parallel for private\(([^)]*)\)", pragma).group(1)
    assert len(cells.split(", ")) == 6
    assert "#ifdef _OPENMP\n" in text  # builds without -fopenmp stay serial and warning-free


def test_do_concurrent_becomes_a_parallel_loop():
    assert len(_pragmas(_c_source((CORPUS / "unpack_nibbles.f90").read_text()))) == 1


CARRIED = """\
subroutine running(x, n, total, y)
  integer, intent(in) :: n
  integer, intent(in) :: x(n)
  integer, intent(out) :: total, y(n)
  integer :: i, s
  s = 0
  !$omp parallel do
  do i = 1, n
    s = s + x(i)
    y(i) = s
  end do
  total = s
end subroutine running
"""


def test_a_scalar_carried_between_iterations_keeps_the_loop_serial(monkeypatch):
    assert _pragmas(_c_source(CARRIED)) == []
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    x = np.arange(1, 40, dtype=np.int32)
    got = run_c(compile_source(CARRIED, "k.f90"), {"x": x, "n": np.int32(39)}, "running")
    np.testing.assert_array_equal(got["y"], np.cumsum(x))
    assert int(got["total"]) == int(x.sum())


def test_a_scalar_read_after_the_loop_keeps_it_serial():
    source = CARRIED.replace("    s = s + x(i)\n", "    s = x(i)\n")
    assert _pragmas(_c_source(source)) == []


def test_parallel_kernels_on_four_threads_match_the_interpreter(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    path = CORPUS / "qmatmul_pair.f90"
    rng = np.random.default_rng(2)
    inputs = {"M": np.int32(37), "K": np.int32(16), "N": np.int32(29),
              "X": rng.integers(-127, 128, (37, 16)).astype(np.int8),
              "xscale": rng.random(37).astype(np.float32),
              "W": rng.integers(0, 128, (8, 29)).astype(np.int8),
              "scale": rng.random(29).astype(np.float32),
              "offset": rng.random(29).astype(np.float32)}
    module = compile_source(path.read_text(), str(path))
    want = run_module(module, WeightStore(), inputs, "qmatmul_pair")["Y"]
    got = run_c(module, inputs, "qmatmul_pair")["Y"]
    assert np.array_equal(np.asarray(got).view(np.int32), np.asarray(want).view(np.int32))
