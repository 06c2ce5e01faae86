"""Run-time errors of `q35c run` on Fortran kernels: a loop that does not end stops at the
step budget (`--max-steps`), an integer division by zero is an error, and both name the
file and the line of the Fortran statement, in one line, with exit code 2."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import q35c

from q35c.compiler.frontends.fortran import compile_source
from q35c.compiler.weights import WeightStore
from q35c.semantics import InterpreterError, run_module

SPIN = """\
subroutine spin(n, total)
  integer, intent(in) :: n
  integer, intent(out) :: total
  integer :: i
  total = 0
  do i = 1, 2147483647
    total = total + n
  end do
end subroutine spin
"""

DIVIDE = """\
subroutine divide(a, b, q, r)
  integer, intent(in) :: a, b
  integer, intent(out) :: q, r
  q = a / b
  r = mod(a, b)
end subroutine divide
"""

REMAINDER = DIVIDE.replace("  q = a / b\n", "  q = a\n")


def _error_line(result) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_loop_that_does_not_end_stops_at_max_steps(tmp_path):
    source = tmp_path / "spin.f90"
    source.write_text(SPIN)
    out = tmp_path / "out"
    line = _error_line(q35c("run", source, "--input", "n=3", "--max-steps", "5000", "-o", out,
                            check=False))
    # at the loop (line 6) or its body (line 7), naming the op it was executing
    assert re.fullmatch(rf"q35c: error: {re.escape(str(source))}:[67]: stopped after 5000 "
                        r"steps, the limit set by --max-steps \([a-z]+\.[a-z_]+ in 'spin'\)",
                        line), line
    assert not out.exists()


def test_the_default_step_budget_lets_ordinary_kernels_run(tmp_path):
    source = tmp_path / "spin.f90"
    source.write_text(SPIN.replace("2147483647", "1000"))
    q35c("run", source, "--input", "n=3", "-o", tmp_path / "out")
    assert np.load(tmp_path / "out" / "total.npy") == 3000


def test_max_steps_counts_every_executed_op_and_iteration():
    module = compile_source(SPIN.replace("2147483647", "10"), "spin.f90")
    run_module(module, WeightStore(), {"n": np.int32(1)}, max_steps=1000)
    with pytest.raises(InterpreterError, match="stopped after 10 steps") as info:
        run_module(module, WeightStore(), {"n": np.int32(1)}, max_steps=10)
    assert info.value.line is not None


def test_max_steps_must_be_positive(tmp_path):
    source = tmp_path / "spin.f90"
    source.write_text(SPIN)
    result = q35c("run", source, "--max-steps", "0", "-o", tmp_path / "out", check=False)
    assert result.returncode == 2 and "--max-steps" in result.stderr


@pytest.mark.parametrize("target", ["interp", "c"])
@pytest.mark.parametrize("source, line, what", [
    (DIVIDE, 4, "integer division by zero (arith.divsi in 'divide')"),
    (REMAINDER, 5, "integer remainder by zero (arith.remsi in 'divide')"),
])
def test_integer_division_by_zero_is_a_located_error(tmp_path, source, line, what, target):
    path = tmp_path / "divide.f90"
    path.write_text(source)
    out = tmp_path / "out"
    error = _error_line(q35c("run", path, "--target", target, "--input", "a=7",
                             "--input", "b=0", "-o", out, check=False))
    assert error == f"q35c: error: {path}:{line}: {what}"
    assert not out.exists()


@pytest.mark.parametrize("target", ["interp", "c"])
def test_integer_division_truncates_toward_zero(tmp_path, target):
    path = tmp_path / "divide.f90"
    path.write_text(DIVIDE)
    q35c("run", path, "--target", target, "--input", "a=-7", "--input", "b=2", "-o",
         tmp_path / "out")
    assert np.load(tmp_path / "out" / "q.npy") == -3
    assert np.load(tmp_path / "out" / "r.npy") == -1


@pytest.mark.parametrize("target", ["interp", "c"])
@pytest.mark.parametrize("a, b, q, r", [(1, -2147483648, 0, 1), (-2147483648, -1, -2147483648, 0),
                                        (-2147483648, 2, -1073741824, 0)])
def test_integer_division_at_the_ends_of_int32(tmp_path, target, a, b, q, r):
    """Regression: the interpreter took |INT_MIN| as INT_MIN, so 1 / INT_MIN gave 1, not
    0 (gfortran: 0); INT_MIN / -1 wraps to INT_MIN (as with -fwrapv)."""
    path = tmp_path / "divide.f90"
    path.write_text(DIVIDE)
    q35c("run", path, "--target", target, "--input", f"a={a}", "--input", f"b={b}", "-o",
         tmp_path / "out")
    assert np.load(tmp_path / "out" / "q.npy") == q
    assert np.load(tmp_path / "out" / "r.npy") == r


def test_run_help_states_the_default_budget():
    from click.testing import CliRunner

    from q35c.compiler.cli import main
    from q35c.semantics import DEFAULT_MAX_STEPS

    result = CliRunner().invoke(main, ["run", "--help"])
    assert "--max-steps N" in result.output and str(DEFAULT_MAX_STEPS) in result.output


OUT_OF_BOUNDS = """\
subroutine pick(n, a, x)
  integer, intent(in) :: n
  real, intent(in) :: a(4)
  real, intent(out) :: x
  x = a(n)
end subroutine pick
"""


@pytest.mark.parametrize("target", ["interp", "c"])
@pytest.mark.parametrize("n", [0, 5])
def test_an_array_index_out_of_bounds_is_a_located_error(tmp_path, n, target):
    """Index 0 would read a[-1] (numpy wraps) and 5 raised IndexError as an internal error;
    the C target checks subscripts under `q35c run` (-DQ35C_BOUNDS_CHECK) with the same
    message: file, line, the array, the (0-based) index and the shape."""
    path = tmp_path / "pick.f90"
    path.write_text(OUT_OF_BOUNDS)
    error = _error_line(q35c("run", path, "--target", target, "--input", f"n={n}", "-o",
                             tmp_path / "out", check=False))
    assert error == (f"q35c: error: {path}:5: index ({n - 1},) of array 'a' is out of bounds "
                     "for shape (4,) (memref.load in 'pick')")


STORE_2D = """\
subroutine put(i, j, b)
  integer, intent(in) :: i, j
  integer, intent(inout) :: b(2, 3)
  b(i, j) = 1
end subroutine put
"""


@pytest.mark.parametrize("target", ["interp", "c"])
def test_a_store_out_of_bounds_names_every_subscript(tmp_path, target):
    path = tmp_path / "put.f90"
    path.write_text(STORE_2D)
    np.save(tmp_path / "b.npy", np.zeros((2, 3), np.int32))
    error = _error_line(q35c("run", path, "--target", target, "--input", "i=2",
                             "--input", "j=4", "--input", f"b={tmp_path / 'b.npy'}", "-o",
                             tmp_path / "out", check=False))
    assert error == (f"q35c: error: {path}:4: index (1, 3) of array 'b' is out of bounds "
                     "for shape (2, 3) (memref.store in 'put')")
