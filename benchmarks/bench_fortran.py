"""Benchmark the Fortran frontend: parse + check + lower a generated 2,000-line file.

The file is a module of kernels shaped like the corpus (examples/fortran): nested counted
loops, `if`/`else if`, `select case`, `do while` with `exit`, array sections and
reductions, bit intrinsics, a parameter lookup table, real32 and int8/int32 arithmetic.
Each stage is timed separately (median of --repeat runs, one process); the goal is a total
under 5 s.

    python benchmarks/bench_fortran.py [--lines 2000] [--repeat 3] [--write FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time

from q35c.compiler.frontends.fortran.diagnostics import Diagnostics
from q35c.compiler.frontends.fortran.irgen import generate
from q35c.compiler.frontends.fortran.parser import parse
from q35c.compiler.frontends.fortran.semantics import check

HEADER = """module generated_kernels
  use iso_fortran_env, only: int8, int32, real32
  implicit none
  integer(int32), parameter :: LUT(0:15) = [0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, &
                                            -3, -2, -1]
contains
"""

KERNEL = """
  ! kernel {i}: an int8 x pair-layout product, a normalisation and some control flow
  subroutine kernel_{i}(M, K, N, X, W, scale, Y, flags)
    integer, intent(in) :: M, K, N
    integer(int8), intent(in) :: X(M, K), W(K/2, N)
    real(real32), intent(in) :: scale(N)
    real(real32), intent(inout) :: Y(M, N)
    integer(int32), intent(out) :: flags(M)
    integer :: i, j, p, steps
    integer(int32) :: acc, b, hi, lo
    real(real32) :: norm
    !$omp parallel do private(i, p, acc, b, hi, lo)
    do j = 1, N
      do i = 1, M
        acc = 0
        do p = 1, K / 2
          b = iand(int(W(p, j), int32), 127)
          hi = LUT(shiftr(b, 3))
          lo = 2 * (ibits(b, 0, 3) - 8 * ibits(b, 2, 1)) + 1
          acc = acc + hi * X(i, 2*p - 1) + lo * X(i, 2*p)
        end do
        Y(i, j) = Y(i, j) + scale(j) * real(acc, real32) * {scale}_real32
      end do
    end do
    do i = 1, M
      norm = sqrt(sum(Y(i, :) * Y(i, :)) / real(N, real32) + 1.0e-5_real32)
      Y(i, :) = Y(i, :) / norm
      select case (mod(i, 4))
      case (0)
        flags(i) = maxval(X(i, :))
      case (1, 2)
        flags(i) = minval(X(i, :)) - {i}
      case default
        flags(i) = ieor(int(X(i, 1), int32), ishft(i, 2))
      end select
      steps = 0
      do while (steps < 64)
        steps = steps + 1
        if (mod(flags(i) + steps, 7) == 0) then
          exit
        else if (steps > 50) then
          flags(i) = -flags(i)
        end if
      end do
      flags(i) = flags(i) + steps
    end do
  end subroutine kernel_{i}
"""


def generate_source(lines: int) -> str:
    parts = [HEADER]
    i = 0
    while sum(p.count("\n") for p in parts) + KERNEL.count("\n") + 1 < lines:
        parts.append(KERNEL.format(i=i, scale=f"{1 + i % 7}.0"))
        i += 1
    parts.append("end module generated_kernels\n")
    return "".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", help="also write the generated source to this file")
    args = ap.parse_args()
    source = generate_source(args.lines)
    if args.write:
        with open(args.write, "w") as f:
            f.write(source)
    n_lines = source.count("\n")
    parse(source, "warmup.f90")  # builds the LALR tables once, as a long-lived process would
    times: dict[str, list[float]] = {"parse": [], "check": [], "lower": [], "verify": []}
    ops = 0
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        program = parse(source, "generated.f90")
        t1 = time.perf_counter()
        checked = check(program, Diagnostics("generated.f90", source))
        t2 = time.perf_counter()
        module = generate(checked)
        t3 = time.perf_counter()
        module.verify()
        t4 = time.perf_counter()
        for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[key].append(value)
        ops = sum(1 for _ in module.walk())
    med = {k: statistics.median(v) for k, v in times.items()}
    total = med["parse"] + med["check"] + med["lower"]
    print(f"{n_lines} lines, {program.modules[0].procedures.__len__()} procedures, "
          f"{ops} ops; median of {args.repeat}")
    for key, value in med.items():
        print(f"  {key:7s} {value:7.3f} s")
    print(f"  parse+check+lower {total:.3f} s (goal < 5 s: {'met' if total < 5 else 'MISSED'}); "
          f"with verify {total + med['verify']:.3f} s")


if __name__ == "__main__":
    main()
