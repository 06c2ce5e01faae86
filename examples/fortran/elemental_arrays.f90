! Elemental functions applied to arrays, array-valued functions and array constructors in
! expressions (with implied-do loops), in the style of a quantized MLP epilogue: requantize
! int32 accumulators to int8, a SiLU activation and per-channel scales built on the fly.
module elemental_arrays
  use iso_fortran_env, only: int8, int16, int32, real32
  implicit none
contains
  elemental function silu(x) result(y)
    real(real32), intent(in) :: x
    real(real32) :: y
    y = x / (1.0_real32 + exp(-x))
  end function silu

  elemental function requant(acc, scale, zero) result(q)
    integer(int32), intent(in) :: acc, zero
    real(real32), intent(in) :: scale
    integer(int8) :: q
    q = int(max(-128, min(127, nint(real(acc, real32) * scale) + zero)), int8)
  end function requant

  ! y(i) = s * x(i) + i: an array-valued function whose extent comes from an argument
  function affine(x, n, s) result(y)
    integer, intent(in) :: n
    real(real32), intent(in) :: x(n), s
    real(real32) :: y(n)
    integer :: i
    y = s * x + [(real(i, real32), i = 1, n)]
  end function affine

  ! the odd numbers 1, 3, ..., 2n-1
  function odds(n) result(r)
    integer, intent(in) :: n
    integer(int32) :: r(n)
    integer :: i
    r = [(2 * i - 1, i = 1, n)]
  end function odds

  subroutine epilogue(acc, x, n, scale, q, y, w, t)
    integer, intent(in) :: n
    integer(int16), intent(in) :: acc(n)
    real(real32), intent(in) :: x(n), scale
    integer(int8), intent(out) :: q(n)
    real(real32), intent(out) :: y(n), w(n + 4), t
    integer :: i
    q = requant(int(acc, int32) + odds(n), scale, -3)
    y = silu(x) + affine(x, n, 0.5_real32)
    w = [silu(x(1)), affine(x, n, 2.0_real32), (/ (real(i * i, real32), i = 1, 3) /)]
    t = sum(silu([(real(i, real32) / 4.0_real32, i = -n, n, 2)])) + maxval(affine(x, n, -1.0))
  end subroutine epilogue
end module elemental_arrays
