"""Elemental functions applied to arrays, array-valued functions and array constructors in
expressions (implied-do loops, rank-1 items): results on the interpreter and the C target,
the IR of an array result, and located errors for shapes that do not conform. The corpus
kernel examples/fortran/elemental_arrays.f90 is checked against gfortran in
test_gfortran_oracle.py."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import q35c

from q35c.compiler.frontends.fortran import FortranError, compile_source
from q35c.compiler.weights import WeightStore
from q35c.semantics import run_module
from q35c.targets.c.loops import run as run_c

ELEMENTAL = """\
module m
  implicit none
contains
  elemental function twice_plus(x, y) result(z)
    integer, intent(in) :: x, y
    integer :: z
    z = 2 * x + y
  end function twice_plus
"""


def _run(source: str, entry: str, inputs: dict, target: str) -> dict:
    module = compile_source(source, "k.f90")
    if target == "c":
        return run_c(module, inputs, entry)
    return run_module(module, WeightStore(), inputs, entry)


@pytest.mark.parametrize("target", ["interp", "c"])
@pytest.mark.parametrize("lo,hi,step", [(1, 7, 1), (7, 1, -2), (3, 2, 1), (-4, 9, 3),
                                        (5, 5, 4)])
def test_implied_do_follows_fortran_trip_counts(lo, hi, step, target):
    """`[(i * 10, i = lo, hi, step)]` has max((hi - lo + step) / step, 0) elements, summed
    here with a scalar before and an array after: the same as Python's range."""
    source = f"""\
subroutine k(a, n, t)
  integer, intent(in) :: n
  integer, intent(in) :: a(n)
  integer, intent(out) :: t
  integer :: i
  t = sum([-1, (i * 10, i = {lo}, {hi}, {step}), a]) + sum([(1, i = {lo}, {hi}, {step})])
end subroutine k
"""
    a = np.array([3, 4, 5], dtype=np.int32)
    got = _run(source, "k", {"a": a, "n": np.int32(3)}, target)
    values = [i * 10 for i in range(lo, hi + (1 if step > 0 else -1), step)]
    assert int(got["t"]) == -1 + sum(values) + 12 + len(values)


@pytest.mark.parametrize("target", ["interp", "c"])
def test_elemental_call_broadcasts_scalars_over_arrays(target):
    source = ELEMENTAL + """\
  subroutine k(a, b, n, c, d)
    integer, intent(in) :: n
    integer, intent(in) :: a(n, 2), b(n, 2)
    integer, intent(out) :: c(n, 2), d(n, 2)
    c = twice_plus(a, b) - 1
    d = twice_plus(7, a(:, :))
  end subroutine k
end module m
"""
    a = np.arange(6, dtype=np.int32).reshape(3, 2)
    b = (10 * np.arange(6, dtype=np.int32)).reshape(3, 2)
    got = _run(source, "k", {"a": a, "b": b, "n": np.int32(3)}, target)
    np.testing.assert_array_equal(got["c"], 2 * a + b - 1)
    np.testing.assert_array_equal(got["d"], 14 + a)


@pytest.mark.parametrize("target", ["interp", "c"])
def test_array_valued_function_inside_expressions_and_reductions(target):
    source = """\
module m
  implicit none
contains
  function window(x, n, k) result(w)
    integer, intent(in) :: n, k
    real, intent(in) :: x(n)
    real :: w(2 * k)
    integer :: i
    w = [(x(i), i = 1, k), (-x(i), i = 1, k)]
  end function window

  subroutine k(x, n, y, t)
    integer, intent(in) :: n
    real, intent(in) :: x(n)
    real, intent(out) :: y(4), t
    y = 1.0 + window(x, n, 2) * 2.0
    t = maxval(window(x, n, n)) + sum(window(x, n, 1))
  end subroutine k
end module m
"""
    x = np.array([1.5, -2.0, 4.0], dtype=np.float32)
    got = _run(source, "k", {"x": x, "n": np.int32(3)}, target)
    np.testing.assert_array_equal(got["y"], np.float32([4.0, -3.0, -2.0, 5.0]))
    assert float(got["t"]) == 4.0 + 0.0


def test_an_array_result_is_a_trailing_out_argument():
    module = compile_source("""\
function ramp(n) result(r)
  integer, intent(in) :: n
  integer :: r(2 * n)
  integer :: i
  r = [(i, i = 1, 2 * n)]
end function ramp
""", "k.f90")
    text = str(module)
    assert ('%1: memref<?xi32> {q35c.name = "r", q35c.intent = "out", q35c.result, '
            'q35c.dims = ["(2)*(n)"]})') in text
    got = run_module(module, WeightStore(), {"n": np.int32(3)}, "ramp")
    np.testing.assert_array_equal(got["r"], np.arange(1, 7, dtype=np.int32))


def test_q35c_run_an_array_valued_function_on_c(tmp_path):
    out = tmp_path / "out"
    q35c("run", "examples/fortran/elemental_arrays.f90", "--entry", "odds", "--target", "c",
         "--input", "n=4", "-o", out)
    np.testing.assert_array_equal(np.load(out / "r.npy"), np.int32([1, 3, 5, 7]))


HEAD = "subroutine k(a, b)\n  implicit none\n  integer :: i\n"

ERRORS = [
    # (source, line, col, message fragment)
    (ELEMENTAL + "  subroutine k(a, b, c)\n    integer, intent(in) :: a(4), b(5)\n"
     "    integer, intent(out) :: c(4)\n    c = twice_plus(a, b)\n  end subroutine k\n"
     "end module m\n", 12, 23, "shape mismatch: (4) and (5)"),
    (ELEMENTAL + "  subroutine k(a, b, c)\n    integer, intent(in) :: a(4), b(4, 2)\n"
     "    integer, intent(out) :: c(4)\n    c = twice_plus(a, b)\n  end subroutine k\n"
     "end module m\n", 12, 23,
     "arguments of elemental 'twice_plus' are not conformable: rank 1 and rank 2"),
    (ELEMENTAL + "  subroutine k(a, c)\n    integer, intent(in) :: a(4)\n"
     "    integer, intent(out) :: c(3)\n    c = twice_plus(a, 1)\n  end subroutine k\n"
     "end module m\n", 12, 9, "shape mismatch: (3) and (4)"),
    (HEAD + "  integer, intent(in) :: a(3)\n  integer, intent(out) :: b(4)\n"
     "  b = a + [(i, i = 1, 3)]\nend subroutine k\n", 6, 9, "shape mismatch: (4) and (3)"),
    (HEAD + "  integer, intent(in) :: a(3)\n  integer, intent(out) :: b(4)\n"
     "  b = [a, 1, 2]\nend subroutine k\n", 6, 7, "shape mismatch: (4) and (5)"),
    ("module m\ncontains\n  function f() result(r)\n    integer :: r(5)\n    r = 0\n"
     "  end function f\n  subroutine k(b)\n    integer, intent(out) :: b(4)\n    b = f()\n"
     "  end subroutine k\nend module m\n", 9, 9, "shape mismatch: (4) and (5)"),
    (HEAD + "  integer, intent(in) :: a(3)\n  integer, intent(out) :: b(3)\n  real :: x\n"
     "  b = [(1, x = 1, 3)]\nend subroutine k\n", 7, 8,
     "the implied-do variable 'x' must be a scalar integer variable"),
    (HEAD + "  integer, intent(in) :: a(3)\n  real, intent(out) :: b(4)\n"
     "  b = [(i, 1.0, i = 1, 2)]\nend subroutine k\n", 6, 12,
     "array constructor items must have the same type and kind"),
    ("function f(n) result(r)\n  integer, intent(in) :: n\n  integer, allocatable :: r(:)\n"
     "  allocate(r(n))\nend function f\n", 1, 1,
     "an array-valued function result needs an explicit shape"),
    ("elemental function f(x) result(r)\n  integer, intent(in) :: x\n  integer :: r(2)\n"
     "  r = x\nend function f\n", 1, 1, "an elemental function must have a scalar result"),
]


@pytest.mark.parametrize("source,line,col,fragment", ERRORS)
def test_shape_errors_are_located(source, line, col, fragment):
    with pytest.raises(FortranError) as info:
        compile_source(source, "k.f90")
    text = str(info.value)
    assert text.startswith(f"k.f90:{line}:{col}: "), text
    assert fragment in text, text


DYNAMIC = """\
module dyn
  implicit none
contains
  function odds(n) result(r)
    integer, intent(in) :: n
    integer :: r(n)
    integer :: i
    r = [(2 * i - 1, i = 1, n)]
  end function odds

  subroutine shift(a, n, m)
    integer, intent(in) :: n, m
    integer, intent(inout) :: a(n)
    !$q35c allow-wrap
    a = a + odds(m)
  end subroutine shift
end module dyn
"""


@pytest.mark.parametrize("target", ["interp", "c"])
def test_a_shorter_operand_at_run_time_is_a_located_error(target, tmp_path):
    """Shapes known only at run time: an operand shorter than the target is caught by the
    bounds check of the read, at the statement's line (file:line, one line, exit 2)."""
    source = tmp_path / "dyn.f90"
    source.write_text(DYNAMIC)
    np.save(tmp_path / "a.npy", np.zeros(5, np.int32))
    result = q35c("run", source, "--entry", "shift", "--target", target, "--input",
                  f"a={tmp_path / 'a.npy'}", "--input", "n=5", "--input", "m=3",
                  "-o", tmp_path / "out", check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"q35c: error: {source}:15: index (3,) is out of bounds"), \
        lines[0]
    assert not (tmp_path / "out").exists()
