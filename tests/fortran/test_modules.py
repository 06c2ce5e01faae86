"""Kernels that `use` modules of other files (further inputs, `-I DIR`), `--bind NAME=VALUE`,
`omp_lib`, `if` on `allocated()` around allocate/deallocate, and `random_number` /
`random_seed`: located errors, the interpreter and the C target against gfortran (and,
for the random numbers, which are q35c's own, against a model of the documented
generator)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from conftest import q35c

from q35c.compiler.frontends.fortran import FortranError, compile_source
from q35c.compiler.weights import WeightStore
from q35c.semantics import run_module
from q35c.targets.c.loops import run as run_c

from .oracle import GFORTRAN_FLAGS, gfortran

needs_gfortran = pytest.mark.skipif(gfortran() is None, reason="gfortran is not installed")

CONSTS = """\
module kernel_consts
  use iso_fortran_env, only: int32, real32
  implicit none
  integer(int32), parameter :: width = 5
  real(real32), parameter :: weights(width) = [0.5, -1.0, 2.0, 0.25, 3.0]
contains
  pure function scaled(x, k) result(y)
    real(real32), intent(in) :: x
    integer(int32), intent(in) :: k
    real(real32) :: y
    y = x * weights(k) + 1.0
  end function scaled
end module kernel_consts
"""

LAYER = """\
module kernel_layer
  use kernel_consts, only: width, scaled
  implicit none
contains
  subroutine apply(x, y, rows)
    integer, intent(in) :: rows
    real, intent(in) :: x(rows, width)
    real, intent(out) :: y(rows, width)
    integer :: i, j
    do j = 1, width
      do i = 1, rows
        y(i, j) = scaled(x(i, j), j)
      end do
    end do
  end subroutine apply
end module kernel_layer
"""

KERNEL = """\
subroutine run_layer(x, y, rows)
  use kernel_layer, only: apply
  use kernel_consts, only: width
  implicit none
  integer, intent(in) :: rows
  real, intent(in) :: x(rows, width)
  real, intent(out) :: y(rows, width)
  call apply(x, y, rows)
end subroutine run_layer
"""


def _write(directory, name: str, text: str):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def _one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.splitlines()[0]


def _gfortran_run(tmp_path, sources: list[str], driver: str, env=None) -> str:
    work = tmp_path / "gfortran"
    work.mkdir()
    names = []
    for i, text in enumerate([*sources, driver]):
        names.append(f"s{i}.f90")
        (work / names[-1]).write_text(text)
    subprocess.run([gfortran(), *GFORTRAN_FLAGS, "-o", "prog", *names], cwd=work, check=True,
                   capture_output=True, text=True)
    return subprocess.run(["./prog"], cwd=work, check=True, capture_output=True, text=True,
                          env=env, timeout=60).stdout


# -- modules of other files --------------------------------------------------------------


def test_modules_from_further_inputs_and_the_search_path_compile_the_same(tmp_path):
    lib = tmp_path / "lib"
    consts = _write(lib, "kernel_consts.f90", CONSTS)
    layer = _write(lib, "Kernel_Layer.F90", LAYER)  # file names match case-insensitively
    kernel = _write(tmp_path, "kernel.f90", KERNEL)
    by_search = q35c(kernel, "-I", lib).stdout
    by_inputs = q35c(kernel, layer, consts).stdout
    assert by_search == by_inputs
    assert '"func.func"() <{sym_name = "scaled"' in by_search
    assert f'q35c.source_file = "{consts}"' in by_search


def test_the_input_directory_is_searched_first(tmp_path):
    _write(tmp_path, "kernel_consts.f90", CONSTS)
    _write(tmp_path, "kernel_layer.f90", LAYER)
    kernel = _write(tmp_path, "kernel.f90", KERNEL)
    assert "sym_name = \"apply\"" in q35c(kernel).stdout


@needs_gfortran
def test_a_kernel_using_modules_of_other_files_runs_like_gfortran(tmp_path):
    lib = tmp_path / "lib"
    _write(lib, "kernel_consts.f90", CONSTS)
    _write(lib, "kernel_layer.f90", LAYER)
    x = np.random.default_rng(3).standard_normal((3, 5)).astype(np.float32)
    module = compile_source(KERNEL, str(tmp_path / "kernel.f90"), include_dirs=(lib,))
    interp = run_module(module, WeightStore(), {"x": x, "rows": np.int32(3)}, "run_layer")
    c = run_c(module, {"x": x, "rows": np.int32(3)}, "run_layer")
    values = ", ".join(f"{v!r}" for v in x.flatten(order="F").tolist())
    driver = ("program drv\n  implicit none\n  real :: x(3, 5), y(3, 5)\n"
              f"  x = reshape([{values}], [3, 5])\n  call run_layer(x, y, 3)\n"
              "  write(*, '(15z9)') y\nend program drv\n")
    out = _gfortran_run(tmp_path, [CONSTS, LAYER, KERNEL], driver)
    expected = np.array([int(w, 16) for w in out.split()], dtype=np.uint32).view(np.float32)
    expected = expected.reshape((3, 5), order="F")
    np.testing.assert_array_equal(interp["y"], expected)
    np.testing.assert_array_equal(c["y"], expected)


def test_a_missing_module_is_a_located_error(tmp_path):
    kernel = _write(tmp_path / "src", "kernel.f90", KERNEL)
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _one_line_error(q35c(kernel, "-I", empty, check=False))
    assert line == (f"q35c: error: {kernel}:2:3: module 'kernel_layer' not found: no input "
                    f"defines it and no kernel_layer.f90 is in {kernel.parent}, {empty}; give "
                    "its source file as another input or its directory with -I")


def test_an_error_in_a_module_of_another_file_names_that_file(tmp_path):
    lib = tmp_path / "lib"
    _write(lib, "kernel_consts.f90", CONSTS.replace("y = x * weights(k)", "y = x * weightz(k)"))
    _write(lib, "kernel_layer.f90", LAYER)
    kernel = _write(tmp_path, "kernel.f90", KERNEL)
    line = _one_line_error(q35c(kernel, "-I", lib, check=False))
    assert line.startswith(f"q35c: error: {lib / 'kernel_consts.f90'}:11:"), line
    assert "weightz" in line


@pytest.mark.parametrize("target", ["interp", "c"])
def test_a_run_time_error_in_a_module_of_another_file_names_that_file(tmp_path, target):
    lib = _write(tmp_path / "lib", "divmod.f90",
                 "module divmod\ncontains\n  subroutine divide(a, b, q)\n"
                 "    integer, intent(in) :: a, b\n    integer, intent(out) :: q\n"
                 "    q = a / b\n  end subroutine divide\nend module divmod\n")
    kernel = _write(tmp_path, "k.f90", "subroutine k(a, b, q)\n  use divmod\n"
                                       "  integer, intent(in) :: a, b\n"
                                       "  integer, intent(out) :: q\n  call divide(a, b, q)\n"
                                       "end subroutine k\n")
    line = _one_line_error(q35c("run", kernel, "-I", lib.parent, "--entry", "k", "--input",
                                "a=1", "--input", "b=0", "--target", target, "-o",
                                tmp_path / "out", check=False))
    assert line == (f"q35c: error: {lib}:6: integer division by zero (arith.divsi in "
                    "'divide')")


def test_modules_that_use_each_other_across_files_are_an_error(tmp_path):
    a = _write(tmp_path, "ma.f90", "module ma\n  use mb\nend module ma\n")
    _write(tmp_path, "mb.f90", "module mb\n  use ma\nend module mb\n")
    kernel = _write(tmp_path, "k.f90", "subroutine k()\n  use ma\nend subroutine k\n")
    line = _one_line_error(q35c(kernel, check=False))
    assert "the modules of these files use each other" in line, line
    assert str(a) in line


def test_a_module_defined_in_two_inputs_is_an_error(tmp_path):
    first = _write(tmp_path / "one", "kernel_consts.f90", CONSTS)
    second = _write(tmp_path / "two", "kernel_consts.f90", CONSTS)
    kernel = _write(tmp_path, "k.f90", "subroutine k()\n  use kernel_consts\nend subroutine k\n")
    line = _one_line_error(q35c(kernel, first, second, check=False))
    assert line == (f"q35c: error: {second}:1:1: module 'kernel_consts' is also defined in "
                    f"{first}:1")


def test_further_inputs_and_search_paths_are_for_fortran_only(tmp_path):
    kernel = _write(tmp_path, "k.f90", "subroutine k()\nend subroutine k\n")
    line = _one_line_error(q35c(kernel, tmp_path / "x.onnx", check=False))
    assert line.endswith("a further input must be a Fortran source (.f90, .f95, .f03, .f08)")
    line = _one_line_error(q35c("examples/mlp.mlir", "-I", tmp_path, check=False))
    assert line == ("q35c: error: examples/mlp.mlir: -I: only for Fortran inputs (.f90, .f95, "
                    ".f03, .f08), not '.mlir'")


# -- --bind --------------------------------------------------------------------------------

INT4 = """\
subroutine int4_dot(a, w, c, m, k)
  use iso_fortran_env, only: int8, int32
  implicit none
  integer(int32), intent(in) :: m, k
  integer(int8), intent(in) :: a(m, k), w(k / 2)
  integer(int32), intent(out) :: c(m)
  integer(int32) :: i, p, lo, hi
  do i = 1, m
    c(i) = 0
    do p = 1, k / 2
      lo = iand(int(w(p), int32), 15)
      if (lo >= 8) lo = lo - 16
      hi = iand(ishft(int(w(p), int32), -4), 15)
      if (hi >= 8) hi = hi - 16
      c(i) = c(i) + int(a(i, 2 * p - 1), int32) * lo + int(a(i, 2 * p), int32) * hi
    end do
  end do
end subroutine int4_dot
"""


def test_bind_fixes_argument_shapes_and_keeps_results():
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, (3, 8), dtype=np.int8)
    w = rng.integers(-128, 128, (4,), dtype=np.int8)
    free = compile_source(INT4, "int4.f90")
    bound = compile_source(INT4, "int4.f90", bindings={"M": "3", "k": "8"})
    fn = next(op for op in bound.ops if getattr(op, "sym_name", None) is not None)
    assert str(fn.function_type) == "(memref<3x8xi8>, memref<4xi8>, memref<3xi32>) -> ()"
    expected = run_module(free, WeightStore(), {"a": a, "w": w, "m": np.int32(3),
                                                "k": np.int32(8)}, "int4_dot")["c"]
    got = run_module(bound, WeightStore(), {"a": a, "w": w}, "int4_dot")["c"]
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(run_c(bound, {"a": a, "w": w}, "int4_dot")["c"], expected)


def test_bind_gives_a_parameter_a_value():
    source = CONSTS.replace("width = 5", "width = 4096").replace(
        "weights(width) = [0.5, -1.0, 2.0, 0.25, 3.0]", "weights(5) = [0.5, -1.0, 2.0, 0.25, 3.0]")
    module = compile_source(source + LAYER, "k.f90", bindings={"WIDTH": "5"})
    assert "memref<?x5xf32>" in str(module)


@pytest.mark.parametrize("binding, message", [
    ({"m": "2.5"}, "k.f90:1:30: --bind m=2.5: not an integer literal for 'm'"),
    ({"m": "4294967296"}, "k.f90:1:30: --bind m=4294967296: out of range for integer(4) 'm'"),
    ({"a": "1"}, "k.f90:1:21: --bind a: 'a' of 'int4_dot' is not a scalar intent(in) or "
                 "value argument"),
    ({"q": "1"}, "k.f90: --bind q: no scalar parameter and no scalar intent(in) or value "
                 "argument of 'int4_dot' is named 'q'"),
])
def test_bind_errors_name_the_binding(binding, message):
    with pytest.raises(Exception) as err:
        compile_source(INT4, "k.f90", bindings=binding)
    assert str(err.value).splitlines()[0] == message


def test_bind_refuses_a_procedure_that_others_call():
    caller = INT4 + ("subroutine outer(a, w, c)\n  use iso_fortran_env, only: int8, int32\n"
                     "  integer(int8), intent(in) :: a(2, 4), w(2)\n"
                     "  integer(int32), intent(out) :: c(2)\n"
                     "  call int4_dot(a, w, c, 2, 4)\nend subroutine outer\n")
    with pytest.raises(FortranError, match="--bind made its argument 'm' a constant"):
        compile_source(caller, "k.f90", bindings={"m": "2"}, entry="int4_dot")


def test_bind_from_the_command_line_compiles_for_c(tmp_path):
    kernel = _write(tmp_path, "int4.f90", INT4)
    out = tmp_path / "out"
    q35c(kernel, "--bind", "M=3", "--bind", "K=8", "--target", "c", "-o", out)
    header = (out / "kernels.h").read_text()
    assert "void int4_dot(const int8_t *a, const int8_t *w, int32_t *c);" in header
    line = _one_line_error(q35c(kernel, "--bind", "M", check=False))
    assert line == "q35c: error: --bind expects NAME=VALUE, got 'M'"


# -- omp_lib -------------------------------------------------------------------------------

OMP = """\
module omp_info
  use omp_lib
  implicit none
contains
  subroutine info(t, n, mx, dt)
    integer, intent(out) :: t, n, mx
    double precision, intent(out) :: dt
    double precision :: t0
    t0 = omp_get_wtime()
    t = omp_get_thread_num()
    n = omp_get_num_threads()
    mx = omp_get_max_threads()
    dt = omp_get_wtime() - t0
  end subroutine info
end module omp_info
"""


@needs_gfortran
def test_omp_lib_gives_a_sequential_runs_values(tmp_path):
    module = compile_source(OMP, "omp.f90")
    interp = run_module(module, WeightStore(), {}, "info")
    c = run_c(module, {}, "info")
    for result in (interp, c):
        assert [int(result[k]) for k in ("t", "n", "mx")] == [0, 1, 1]
        assert float(result["dt"]) == 0.0
    driver = ("program drv\n  use omp_info\n  integer :: t, n, mx\n  double precision :: dt\n"
              "  call info(t, n, mx, dt)\n  print *, t, n, mx\nend program drv\n")
    out = _gfortran_run(tmp_path, [OMP], driver, env={"OMP_NUM_THREADS": "1"})
    assert [int(v) for v in out.split()] == [0, 1, 1]


def test_omp_lib_names_are_checked():
    with pytest.raises(FortranError, match="'omp_get_nothing' is not in module omp_lib"):
        compile_source("subroutine k()\n  use omp_lib, only: omp_get_nothing\n"
                       "end subroutine k\n", "k.f90")
    with pytest.raises(FortranError, match="omp_get_thread_num takes 0 argument"):
        compile_source("subroutine k(t)\n  use omp_lib\n  integer, intent(out) :: t\n"
                       "  t = omp_get_thread_num(1)\nend subroutine k\n", "k.f90")


# -- allocated() and one-line allocate/deallocate ------------------------------------------

ALLOC = """\
subroutine staged(n, x, y, flags)
  implicit none
  integer, intent(in) :: n
  real, intent(in) :: x(n)
  real, intent(out) :: y(n)
  integer, intent(out) :: flags(3)
  real, allocatable :: t(:), u(:)
  flags = 0
  if (.not. allocated(t)) allocate(t(n))
  t = 2.0 * x
  if (allocated(u)) deallocate(u)
  if (allocated(t) .and. .not. allocated(u)) then
    allocate(u(n))
  else
    flags(3) = 7
  end if
  if (allocated(u)) flags(1) = 1
  u = t + 1.0
  y = u
  if (allocated(t)) deallocate(t)
  if (allocated(t)) flags(2) = 1
  if (allocated(u)) deallocate(u)
end subroutine staged
"""


@needs_gfortran
def test_if_on_allocated_runs_like_gfortran(tmp_path):
    x = np.array([1.5, -2.0, 0.25], dtype=np.float32)
    module = compile_source(ALLOC, "alloc.f90")
    interp = run_module(module, WeightStore(), {"x": x, "n": np.int32(3)}, "staged")
    c = run_c(module, {"x": x, "n": np.int32(3)}, "staged")
    driver = ("program drv\n  real :: x(3), y(3)\n  integer :: flags(3)\n"
              "  x = [1.5, -2.0, 0.25]\n  call staged(3, x, y, flags)\n"
              "  print *, y\n  print *, flags\nend program drv\n")
    lines = _gfortran_run(tmp_path, [ALLOC], driver).splitlines()
    expected_y = np.array([float(v) for v in lines[0].split()], dtype=np.float32)
    expected_flags = [int(v) for v in lines[1].split()]
    for result in (interp, c):
        np.testing.assert_array_equal(result["y"], expected_y)
        assert result["flags"].tolist() == expected_flags == [1, 0, 0]


def test_allocate_under_a_run_time_condition_is_still_refused():
    source = ("subroutine k(n, c)\n  integer, intent(in) :: n\n  logical, intent(in) :: c\n"
              "  real, allocatable :: t(:)\n  if (c) allocate(t(n))\nend subroutine k\n")
    with pytest.raises(FortranError, match="k.f90:5:10: allocate is supported at the top "
                                           "level of a procedure only"):
        compile_source(source, "k.f90")


# -- random_number, random_seed ------------------------------------------------------------

RANDOM = """\
subroutine draws(x, d, size_, got, y, again)
  implicit none
  real, intent(out) :: x(3, 2)
  double precision, intent(out) :: d
  integer, intent(out) :: size_, got(2)
  real, intent(out) :: y, again
  integer :: seed(1)
  call random_seed(size=size_)
  call random_number(x)
  call random_number(d)
  got = 0
  call random_seed(get=got)
  seed(1) = -5
  call random_seed(put=seed)
  call random_number(y)
  call random_seed(put=seed)
  call random_number(harvest=again)
end subroutine draws
"""


def _minstd(state: int, count: int) -> list[int]:
    out = []
    for _ in range(count):
        state = state * 48271 % (2**31 - 1)
        out.append(state)
    return out


def test_random_number_is_the_documented_generator_on_every_target():
    module = compile_source(RANDOM, "random.f90")
    interp = run_module(module, WeightStore(), {}, "draws")
    c = run_c(module, {}, "draws")
    states = _minstd(1, 7)  # a run starts from state 1
    x = np.array([((s - 1) >> 7) * 2.0**-24 for s in states[:6]], dtype=np.float32)
    put = 1 + (-5) % (2**31 - 2)  # random_seed(put=[-5])
    y = np.float32(((_minstd(put, 1)[0] - 1) >> 7) * 2.0**-24)
    for result in (interp, c):
        np.testing.assert_array_equal(result["x"], x.reshape((3, 2), order="F"))
        assert float(result["d"]) == (states[6] - 1) * 2.0**-31
        assert int(result["size_"]) == 1
        assert result["got"].tolist() == [states[6], 0]
        assert result["y"] == y == result["again"]


def test_random_number_state_persists_across_calls_and_procedures():
    source = ("module r\ncontains\n  subroutine one(v)\n    real, intent(out) :: v\n"
              "    call random_number(v)\n  end subroutine one\n"
              "  subroutine two(a, b)\n    real, intent(out) :: a, b\n"
              "    call one(a)\n    call one(b)\n  end subroutine two\nend module r\n")
    result = run_module(compile_source(source, "r.f90"), WeightStore(), {}, "two")
    first, second = _minstd(1, 2)
    assert result["a"] == np.float32(((first - 1) >> 7) * 2.0**-24)
    assert result["b"] == np.float32(((second - 1) >> 7) * 2.0**-24)


@pytest.mark.parametrize("call, message", [
    ("call random_number(n)", "random_number needs a real variable"),
    ("call random_seed(put=v)", "random_seed's put must be a whole rank-1 default integer"),
    ("call random_seed(seed=s)", "random_seed has no argument 'seed'"),
    ("call random_seed(size=n, get=s)", "random_seed takes at most one argument"),
    ("call random_number(v(1:2))", "random_number needs a real variable, element or whole"),
])
def test_random_subroutine_arguments_are_checked(call, message):
    source = ("subroutine k(n, v, s)\n  integer, intent(inout) :: n, s(2)\n"
              f"  real, intent(inout) :: v(4)\n  {call}\nend subroutine k\n")
    with pytest.raises(FortranError, match=message):
        compile_source(source, "k.f90")
