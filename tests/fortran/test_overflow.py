"""verify-overflow on Fortran integer loops: scf.for bodies are analysed (induction variable
in [lb, ub - 1], variables through a fixpoint over the loop), ranges are exact for short
counted loops, widening keeps long or unbounded ones finite, and a possible wrap is
recorded (`q35c.may_wrap`) with the statement's Fortran line, an error with check-arith.
A wrap the interpreter confirms on a candidate input is an error by default (Fortran leaves
integer overflow undefined) unless the procedure opts out (`allow-wrap`, `!$q35c allow-wrap`)."""

from __future__ import annotations

import numpy as np
import pytest

from q35c.compiler.driver import build_pipeline, make_context, run_pipeline
from q35c.compiler.frontends.fortran import compile_source
from q35c.compiler.weights import WeightStore
from q35c.passes.matching import origin_of
from q35c.passes.verify_overflow import OverflowFound
from q35c.semantics import run_module

ACC = """\
subroutine acc16(x, s)
  use iso_fortran_env, only: int8, int32
  integer(int8), intent(in) :: x(16)
  integer({kind}), intent(out) :: s
  integer :: i
  s = 0
  do i = 1, 16
    s = s + x(i)
  end do
end subroutine acc16
"""

SQUARES = """\
subroutine sumsq(n, s)
  integer, intent(in) :: n
  integer, intent(out) :: s
  integer :: i, t
  s = 0
  do i = 1, n
    t = i * i
    s = s + t
  end do
end subroutine sumsq
"""


def _verify(source: str, options: str = ""):
    module = compile_source(source, "kernel.f90")
    run_pipeline(make_context(), module, build_pipeline(f"verify-overflow{options}"))
    return module


def _range(op) -> tuple[int, int]:
    return tuple(op.attributes["q35c.int_range"].get_values())


def _at(module, name: str, line: int):
    """The one `name` op of Fortran statement `line` (origin_of: the line of its statement)."""
    (op,) = [op for op in module.walk() if op.name == name
             and (origin_of(op) or "").endswith(f" at line {line}")]
    return op


def _accumulation(module):
    """The `s + x(i)` add of line 8 (the loop body's statement)."""
    return _at(module, "arith.addi", 8)


def test_int32_accumulation_in_a_loop_is_proven_with_the_exact_bound():
    module = _verify(ACC.format(kind="int32"), "{check-arith=true}")  # no error
    add = _accumulation(module)
    assert _range(add) == (-16 * 128, 16 * 127) and "q35c.may_wrap" not in add.attributes
    assert origin_of(add) == "in 'acc16' at line 8"
    # the bound is attained: the interpreter reaches both ends
    plain = compile_source(ACC.format(kind="int32"), "kernel.f90")
    for value in (127, -128):
        out = run_module(plain, WeightStore(), {"x": np.full(16, value, np.int8)}, "acc16")
        assert int(out["s"]) == 16 * value


def test_int8_accumulation_that_overflows_fails_by_default_with_a_confirmed_witness():
    with pytest.raises(OverflowFound, match=r"arith.addi \(in 'acc16' at line 8\) overflows "
                                            r"i8: .* for the inputs x = (127|-128) everywhere "
                                            r"\[16\] \(confirmed by the interpreter\)"
                                            r".*allow-wrap=acc16") as info:
        _verify(ACC.format(kind="int8"))
    # the interpreter confirms it: 16 * 127 = 2032 does not fit int8 and wraps to -16
    plain = compile_source(ACC.format(kind="int8"), "kernel.f90")
    out = run_module(plain, WeightStore(), info.value.witness, "acc16")
    exact = int(np.sum(info.value.witness["x"].astype(np.int64)))
    assert int(out["s"]) != exact and not -128 <= exact <= 127


@pytest.mark.parametrize("opt_out", ["option", "directive"])
def test_intended_wrapping_opts_out_and_is_recorded(opt_out):
    source = ACC.format(kind="int8")
    options = "{allow-wrap=acc16}"
    if opt_out == "directive":
        source = source.replace("  integer :: i\n", "  integer :: i\n  !$q35c allow-wrap\n")
        options = ""
    module = _verify(source, options)
    add = _accumulation(module) if opt_out == "option" else _at(module, "arith.addi", 9)
    assert "q35c.may_wrap" in add.attributes and _range(add) == (-128, 127)
    with pytest.raises(OverflowFound, match=r"can leave i8: its range is \[-256, 254\]"):
        _verify(source, "{check-arith=true}")  # check-arith still fails on any possible wrap


DOT16 = """\
subroutine dot16(x, y, s)
  use iso_fortran_env, only: int16, int32
  integer(int16), intent(in) :: x(8), y(8)
  integer(int32), intent(out) :: s
  integer :: i
  s = 0
  do i = 1, 8
    s = s + int(x(i), int32) * int(y(i), int32)
  end do
end subroutine dot16
"""


def test_an_int32_dot_product_accumulator_that_overflows_is_rejected():
    """8 products of int16 reach 8 * 2^30: the int32 accumulator overflows."""
    with pytest.raises(OverflowFound, match=r"arith.addi \(in 'dot16' at line 8\) overflows "
                                            r"i32") as info:
        _verify(DOT16)
    x = info.value.witness["x"].astype(np.int64)
    y = info.value.witness["y"].astype(np.int64)
    assert np.max(np.abs(np.cumsum(x * y))) > 2**31 - 1


def test_a_safe_int8_dot_product_is_proven_not_just_unflagged():
    source = DOT16.replace("int16", "int8")
    module = _verify(source, "{check-arith=true}")  # check-arith: any possible wrap fails
    add = _at(module, "arith.addi", 8)
    assert _range(add) == (8 * -128 * 127, 8 * 128 * 128)
    assert "q35c.may_wrap" not in add.attributes


def test_the_cli_rejects_an_overflow_in_one_line_and_the_option_opts_out(tmp_path):
    from conftest import q35c

    path = tmp_path / "dot16.f90"
    path.write_text(DOT16)
    result = q35c(path, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "(in 'dot16' at line 8) overflows i32" in lines[0], lines
    q35c(path, "--passes", "default,verify-overflow{allow-wrap=dot16}")


def test_loop_bound_from_a_declared_argument_range():
    module = _verify(SQUARES, '{arg-ranges="n=0:100" check-arith=true}')  # proven
    square = _at(module, "arith.muli", 7)
    assert _range(square) == (1, 100 * 100)  # i in 1..100 (a square is >= 0)
    add = _at(module, "arith.addi", 8)
    # intervals are not relational: each of up to 100 iterations adds at most 100 * 100
    assert _range(add) == (1, 100 * 100 * 100)
    plain = compile_source(SQUARES, "kernel.f90")
    out = run_module(plain, WeightStore(), {"n": 100}, "sumsq")
    assert int(out["s"]) == sum(i * i for i in range(1, 101)) <= _range(add)[1]


COUNT = """subroutine count(n, s)
  integer, intent(in) :: n
  integer, intent(out) :: s
  integer :: i
  s = 0
  do i = 1, n
    s = s + 1
  end do
end subroutine count
"""


def test_a_count_too_long_to_iterate_gets_its_closed_form_bound():
    # 10^6 iterations are not iterated one by one: `s = s + 1` is an accumulator, bounded
    # by the trip count times its increment
    module = _verify(COUNT, '{arg-ranges="n=0:1000000" check-arith=true}')
    add = _at(module, "arith.addi", 7)
    assert _range(add) == (1, 1000000) and "q35c.may_wrap" not in add.attributes
    out = run_module(compile_source(COUNT, "kernel.f90"), WeightStore(), {"n": 1000}, "count")
    assert 1 <= int(out["s"]) <= 1000000


def test_a_loop_too_long_to_iterate_that_is_no_accumulator_widens_soundly():
    # `s = 2 * s + 1` is not a sum of increments: the moving bound widens to the type's
    # end, so the add is (imprecisely, but soundly) marked as a possible wrap (it does
    # wrap: allowed here, the witness search would reject it)
    source = COUNT.replace("s = s + 1", "s = 2 * s + 1")
    module = _verify(source, '{arg-ranges="n=0:1000000" allow-wrap=count}')
    add = _at(module, "arith.addi", 7)
    lo, hi = _range(add)
    assert hi == 2**31 - 1 and "q35c.may_wrap" in add.attributes


LONG_DOT = """subroutine dot(x, y, s)
  use iso_fortran_env, only: int8, int32
  integer(int8), intent(in) :: x({n}), y({n})
  integer(int32), intent(out) :: s
  integer :: i
  s = 0
  do i = 1, {n}
    s = s + int(x(i), int32) * int(y(i), int32)
  end do
end subroutine dot
"""


def test_a_2_to_the_16_term_int8_dot_product_is_proven():
    """Too long to iterate (65536 iterations): trip count x the product's range."""
    module = _verify(LONG_DOT.format(n=65536), "{check-arith=true}")
    add = _at(module, "arith.addi", 8)
    assert _range(add) == (65536 * -128 * 127, 65536 * 128 * 128)
    assert "q35c.may_wrap" not in add.attributes


@pytest.mark.slow  # about 1.4 million interpreter steps; smaller witnesses run in the fast tier
def test_a_2_to_the_17_term_int8_dot_product_is_rejected_with_its_extreme_witness():
    """2^17 products of (-128) * (-128) reach 2^31: the closed form says which inputs do,
    and one interpreter run at them confirms it (about 1.4 million steps)."""
    with pytest.raises(OverflowFound, match=r"arith.addi \(in 'dot' at line 8\) overflows "
                                            r"i32: 2147467264 and 16384 give 2147483648") as info:
        _verify(LONG_DOT.format(n=131072))
    assert set(np.unique(info.value.witness["x"])) == {-128}
    assert set(np.unique(info.value.witness["y"])) == {-128}


DOT_PRODUCT = """subroutine dp(x, y, s)
  use iso_fortran_env, only: int8, int32
  integer(int8), intent(in) :: x(65536), y(65536)
  integer(int32), intent(out) :: s
  s = dot_product(int(x, int32), int(y, int32)) - sum(int(x, int32))
end subroutine dp
"""


def test_reductions_carried_through_loop_values_get_closed_forms_too():
    module = _verify(DOT_PRODUCT, "{check-arith=true}")
    sub = _at(module, "arith.subi", 5)
    dot_hi, sum_lo = 65536 * 128 * 128, 65536 * -128
    assert _range(sub)[1] == dot_hi - sum_lo


def test_short_symbolic_loop_is_exact_and_undeclared_n_widens_to_a_wrap():
    module = _verify(SQUARES, '{arg-ranges="n=0:10" check-arith=true}')
    add = _at(module, "arith.addi", 8)
    assert _range(add) == (1, 10 * 10 * 10)
    module = _verify(SQUARES)  # n up to huge(n): i * i and the sum can wrap
    square = _at(module, "arith.muli", 7)
    assert "q35c.may_wrap" in square.attributes
    with pytest.raises(OverflowFound, match=r"in 'sumsq' at line 7"):
        _verify(SQUARES, "{check-arith=true}")


# -- soundness on the corpus: every value the interpreter computes lies in its proven range --

from .oracle import procedure, random_inputs  # noqa: E402
from .test_gfortran_oracle import CASES, CORPUS  # noqa: E402

INTEGER_CASES = [c for c in CASES if c.file in ("int_ops.f90", "lut_dequant.f90",
                                                "unpack_nibbles.f90", "features.f90")]


@pytest.mark.parametrize("case", INTEGER_CASES, ids=lambda c: c.entry)
def test_recorded_ranges_hold_when_the_interpreter_runs_the_kernel(case, monkeypatch):
    from q35c import semantics

    path = CORPUS / case.file
    info = procedure(path, case.entry)
    declared = {**{k: (int(v), int(v)) for k, v in case.scalars.items()
                   if np.issubdtype(np.asarray(v).dtype, np.integer)},
                **{k: (int(lo), int(hi)) for k, (lo, hi) in case.ranges.items()
                   if float(lo).is_integer() and float(hi).is_integer()
                   and any(s.spelling == k and oracle_int(s) for s in info.args)}}
    spec = ",".join(f"{k}={lo}:{hi}" for k, (lo, hi) in declared.items())
    module = compile_source(path.read_text(), str(path), raise_idioms=case.raise_idioms)
    run_pipeline(make_context(), module, build_pipeline(f'verify-overflow{{arg-ranges="{spec}"}}'))
    checked = []

    def wrap(kind, original):
        def run(interp, op, args):
            results = original(interp, op, args)
            attr = op.attributes.get("q35c.int_range")
            if attr is not None and results:
                lo, hi = attr.get_values()
                value = np.asarray(results[0])
                if value.size and value.dtype.kind in "iu":
                    assert lo <= value.min() and value.max() <= hi, (op.name, lo, hi, value)
                    checked.append(op.name)
            return results
        return run

    for kind, original in list(semantics.IMPLEMENTATIONS.items()):
        monkeypatch.setitem(semantics.IMPLEMENTATIONS, kind, wrap(kind, original))
    rng = np.random.default_rng(sum(map(ord, case.entry)))
    for _ in range(3):
        run_module(module, WeightStore(), random_inputs(info, case, rng), case.entry)
    assert checked


def oracle_int(sym) -> bool:
    from .oracle import dtype_of

    return dtype_of(sym.type).kind == "i"
