! Derived types: a parameter block passed to a kernel, a statistics block
! returned through intent(out), and a local accumulator record.
module norm_types
  use iso_fortran_env, only: int32, real32
  implicit none
  type :: norm_params
    integer(int32) :: n
    real(real32) :: eps
    real(real32) :: gain(8), bias(8)
  end type norm_params
  type stats_t
    real(real32) :: mean, var
    integer(int32) :: clipped
  end type
end module norm_types

module norm_kernels
  use iso_fortran_env, only: int32, real32
  use norm_types, only: norm_params, stats_t
  implicit none
contains
  subroutine layer_norm(p, x, y, st)
    type(norm_params), intent(in) :: p
    real(real32), intent(in) :: x(8)
    real(real32), intent(out) :: y(8)
    type(stats_t), intent(out) :: st
    type(stats_t) :: acc
    integer :: i
    acc%mean = 0.0_real32
    acc%var = 0.0_real32
    acc%clipped = 0
    do i = 1, p%n
      acc%mean = acc%mean + x(i)
    end do
    acc%mean = acc%mean / real(p%n, real32)
    do i = 1, p%n
      acc%var = acc%var + (x(i) - acc%mean)**2
    end do
    acc%var = acc%var / real(p%n, real32)
    y = 0.0_real32
    y(1:p%n) = (x(1:p%n) - acc%mean) / sqrt(acc%var + p%eps) * p%gain(1:p%n) + p%bias(1:p%n)
    do i = 1, p%n
      if (abs(y(i)) > 2.0_real32) then
        y(i) = sign_of(y(i)) * 2.0_real32
        acc%clipped = acc%clipped + 1
      end if
    end do
    st%mean = acc%mean
    st%var = acc%var
    st%clipped = acc%clipped
  end subroutine layer_norm

  pure function sign_of(v) result(s)
    real(real32), intent(in) :: v
    real(real32) :: s
    s = merge(1.0_real32, -1.0_real32, v >= 0.0_real32)
  end function sign_of
end module norm_kernels
