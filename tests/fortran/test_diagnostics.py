"""Fortran diagnostics: `file:line:col: message`, the source line and a caret, for syntax
and semantic errors; and never anything but a diagnostic or IR for mutated sources."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.frontends.fortran import FortranError, compile_source

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "fortran"

SUB = "subroutine f(n, A)\n  implicit none\n  integer, intent(in) :: n\n"

CALLS_T = ("module m\n  type :: t\n    real, allocatable :: w(:)\n  end type\n"
           "  type :: u\n    real :: a\n  end type\ncontains\n"
           "  subroutine g(p)\n    type(t), intent(inout) :: p\n    p%w = 1.0\n  end subroutine\n"
           "  subroutine f(n)\n    integer, intent(in) :: n\n    type(t) :: q\n    type(u) :: r\n")
"""A caller f of g(p), p of type t with an allocatable component; the body follows."""

ERRORS = [
    # (source, line, col, message fragment)
    (SUB + "  real, intent(inout) :: A(n)\n  x = n\nend subroutine\n", 5, 3,
     "'x' is not declared (implicit none"),
    ("subroutine f(K, A)\n  implicit none\n  integer, intent(in) :: K\n"
     "  real, intent(out) :: A(K)\n  integer :: k\n  A = 0\nend subroutine\n", 5, 14,
     "'k' clashes with 'K' declared at line 1: Fortran names are case-insensitive"),
    ("subroutine f(K, A)\n  implicit none\n  integer, intent(in) :: K\n"
     "  real, intent(out) :: A(K)\n  do k = 1, 3\n    A(k) = 0\n  end do\nend subroutine\n",
     5, 6, "loop index 'k' is the dummy argument 'K'"),
    (SUB + "  real, intent(in) :: A(n)\n  A(1) = 2.0\nend subroutine\n", 5, 3,
     "cannot assign to 'A': it is intent(in)"),
    (SUB + "  real, intent(in) :: A(n)\n  n = 2\nend subroutine\n", 5, 3,
     "cannot assign to 'n': it is intent(in)"),
    (SUB + "  real, intent(inout) :: A(n, n)\n  A(1) = 2.0\nend subroutine\n", 5, 3,
     "rank mismatch: 'A' has rank 2, 1 subscript(s) given"),
    (SUB + "  real, intent(inout) :: A(n, n)\n  real :: b(n)\n  b = A\nend subroutine\n", 6, 7,
     "rank mismatch in assignment"),
    ("subroutine f(A, B)\n  implicit none\n  real, intent(inout) :: A(4), B(5)\n"
     "  A = B\nend subroutine\n", 4, 7, "shape mismatch: (4) and (5)"),
    ("subroutine f(A)\n  implicit none\n  integer(kind=3), intent(inout) :: A(4)\n"
     "end subroutine\n", 3, 16, "kind 3 is not a valid integer kind"),
    ("subroutine f(a, b)\n  use iso_fortran_env, only: int8\n  implicit none\n"
     "  integer(int8), intent(in) :: a\n  integer, intent(inout) :: b\n  b = iand(a, b)\n"
     "end subroutine\n", 6, 15, "arguments of iand must have the same type and kind"),
    ("subroutine f(b)\n  implicit none\n  integer, intent(inout) :: b\n  b = .true.\n"
     "end subroutine\n", 4, 7, "cannot assign logical(4) to 'b' of type integer(4)"),
    ("module m\ncontains\nsubroutine g(x)\n  real(8), intent(inout) :: x\nend subroutine\n"
     "subroutine f(y)\n  real, intent(inout) :: y\n  call g(y)\nend subroutine\nend module\n",
     8, 10, "argument 'x' of 'g' is real(8), got real(4)"),
    ("subroutine f(x)\n  implicit none\n  real, intent(inout) :: x\n  x = 1.0_int8\n"
     "end subroutine\n", 4, 7, "kind 'int8' is not a named integer constant"),
    ("subroutine f(x)\n  implicit none\n  integer, parameter :: c = 3\n"
     "  integer, intent(inout) :: x\n  c = x\nend subroutine\n", 5, 3,
     "cannot assign to the constant 'c'"),
    ("subroutine f(x)\n  implicit none\n  integer, intent(inout) :: x\n  exit\n"
     "end subroutine\n", 4, 3, "'exit' outside a loop"),
    ("subroutine f(x)\n  implicit none\n  integer, intent(inout) :: x\n"
     "  x = sum(x)\nend subroutine\n", 4, 11, "sum needs an array argument"),
    ("module m\n  type :: t\n    real :: a\n  end type\ncontains\n  subroutine f(p)\n"
     "    type(t), intent(inout) :: p\n    p%b = 1.0\n  end subroutine\nend module\n", 8, 7,
     "type 't' has no component 'b'"),
    ("module m\n  type :: t\n    real :: a\n  end type\ncontains\n  subroutine f(p, x)\n"
     "    type(t), intent(in) :: p\n    real, intent(out) :: x\n    x = p\n"
     "  end subroutine\nend module\n", 9, 9, "'p' is a derived-type value"),
    ("module m\n  type :: t\n    real :: a\n  end type\ncontains\n  subroutine f(p)\n"
     "    type(t), intent(in) :: p\n    p%a = 1.0\n  end subroutine\nend module\n", 8, 5,
     "cannot assign to 'p%a': it is intent(in)"),
    # allocatable components
    ("module m\n  type :: t\n    real, allocatable :: w(4)\n  end type\nend module\n", 3, 26,
     "allocatable component 'w' needs a deferred shape"),
    ("module m\n  type :: t\n    real, allocatable, target :: w(:)\n  end type\nend module\n",
     3, 5, "component attributes ['target'] are not supported"),
    ("module m\n  type :: t\n    real, allocatable :: w(:)\n  end type\ncontains\n"
     "  subroutine f(p, n)\n    integer, intent(in) :: n\n    type(t), intent(inout) :: p\n"
     "    allocate(p%w(n))\n  end subroutine\nend module\n", 9, 14,
     "allocate of the dummy argument 'p%w' is not supported"),
    ("module m\n  type :: t\n    real, allocatable :: w(:)\n  end type\ncontains\n"
     "  subroutine f(p)\n    type(t), intent(out) :: p\n  end subroutine\nend module\n",
     7, 29, "intent(out) dummy 'p' has allocatable components"),
    ("module m\n  type :: t\n    real, allocatable :: w(:)\n  end type\ncontains\n"
     "  subroutine f(x, n)\n    integer, intent(in) :: n\n    real, intent(out) :: x\n"
     "    type(t) :: q\n    allocate(q%w(n))\n    deallocate(q%w)\n    x = q%w(1)\n"
     "  end subroutine\nend module\n", 12, 9, "'q%w' is used before it is allocated"),
    ("module m\n  type :: t\n    real, allocatable :: w(:)\n  end type\ncontains\n"
     "  subroutine f(x, n)\n    integer, intent(in) :: n\n    real, intent(inout) :: x\n"
     "    type(t) :: q\n    if (x > 0.0) allocate(q%w(n))\n  end subroutine\nend module\n",
     10, 18, "allocate is supported at the top level of a procedure only"),
    # derived-type actual arguments
    (CALLS_T + "    allocate(q%w(0:n))\n    call g(q)\n  end subroutine\nend module\n", 18, 12,
     "'q%w' is allocated with lower bounds other than 1"),
    (CALLS_T + "    call g(r)\n  end subroutine\nend module\n", 17, 12,
     "argument 'p' of 'g' is type(t), got type(u)"),
    (CALLS_T + "    call g(q%w)\n  end subroutine\nend module\n", 17, 12,
     "argument 'p' of 'g' is type(t) and needs a variable of that type"),
    (CALLS_T + "    call g(q)\n  end subroutine\nend module\n", 17, 12,
     "'q%w' is used before it is allocated"),
    # syntax errors
    ("subroutine f(a)\n  real :: a\n  a = (1.0 + \nend subroutine\n", 3, 14,
     "syntax error: unexpected end of line"),
    ("subroutine f(a)\n  real :: a\n  a = 1.0 @ 2\nend subroutine\n", 3, 11,
     "unexpected character '@'"),
    ("subroutine f(a)\n  integer :: a, i\n  do i = 1, 2\n    a = i\nend subroutine\n", 5, 1,
     "expected 'end do'"),
    ("subroutine f(a)\n  real, intent(inoot) :: a\nend subroutine\n", 2, 16,
     "expected in, out or inout"),
]


@pytest.mark.parametrize("source,line,col,fragment", ERRORS,
                         ids=[e[3][:40] for e in ERRORS])
def test_error_is_located_with_source_line_and_caret(source, line, col, fragment):
    with pytest.raises(FortranError) as info:
        compile_source(source, "k.f90")
    err = info.value
    head, text, caret = str(err).split("\n")
    assert head.startswith(f"k.f90:{line}:{col}: "), head
    assert fragment in head
    assert text == source.splitlines()[line - 1]
    assert caret == " " * (col - 1) + "^"


def test_cli_reports_fortran_errors_without_traceback(tmp_path):
    import subprocess
    import sys

    kernel = tmp_path / "bad.f90"
    kernel.write_text(ERRORS[3][0])
    result = subprocess.run([sys.executable, "-m", "q35c.compiler.cli", str(kernel)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"q35c: error: {kernel}:5:3: cannot assign to 'A': it is intent(in)"
    assert lines[1:] == ["  A(1) = 2.0", "  ^"]


def test_directives_are_hints_never_syntax_errors():
    source = ("subroutine f(n, a)\n  implicit none\n  integer, intent(in) :: n\n"
              "  real, intent(inout) :: a(n)\n  integer :: i\n"
              "!$omp parallel do simd &\n!$omp& private(i)\n  !$acc kernels loop\n"
              "  do i = 1, n\n    a(i) = 2.0 * a(i)  !$omp this is only a comment\n"
              "  end do\n!$omp end parallel do\nend subroutine\n")
    from q35c.compiler.ir_text import module_text

    text = module_text(compile_source(source, "k.f90"), weights_file=None)
    assert 'q35c.hints = ["omp parallel do simd &", "omp& private(i)", "acc kernels loop"]' \
        in text


# -- hypothesis: mutated corpus sources -----------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d*)?(?:_\w+)?|\.\w+\.|::|\*\*|[/=<>]=|"
                    r"\(/|/\)|\S")
SOURCES = {p.name: p.read_text() for p in sorted(CORPUS.glob("*.f90"))}


def _tokens(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _TOKEN.finditer(text)]


@st.composite
def mutated_sources(draw):
    name = draw(st.sampled_from(sorted(SOURCES)))
    text = SOURCES[name]
    for _ in range(draw(st.integers(1, 3))):
        spans = _tokens(text)
        i = draw(st.integers(0, len(spans) - 1))
        a, b = spans[i]
        kind = draw(st.sampled_from(["delete", "swap", "duplicate", "newline"]))
        if kind == "delete":
            text = text[:a] + text[b:]
        elif kind == "duplicate":
            text = text[:b] + " " + text[a:b] + text[b:]
        elif kind == "newline":
            text = text[:a] + "\n" + text[a:]
        else:
            j = min(i + 1, len(spans) - 1)
            c, d = spans[j]
            if j != i:
                text = text[:a] + text[c:d] + text[b:c] + text[a:b] + text[d:]
    return name, text


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_sources())
def test_mutated_sources_give_ir_or_a_located_diagnostic(case):
    name, text = case
    try:
        module = compile_source(text, name)
    except FortranError as err:
        first = str(err).splitlines()[0]
        assert re.match(rf"{re.escape(name)}:\d+:\d+: \S", first), first
        return
    except Q35cError as err:  # anything else is a frontend bug
        raise AssertionError(f"not a located diagnostic: {err}") from None
    module.verify()
