! Integer semantics: two's-complement wrap, truncating division, mod, shifts,
! bit fields, select case, do while, named exit/cycle, early return, nint/int.
module int_ops
  use iso_fortran_env, only: int8, int16, int32, int64, real32
  implicit none
  integer(int32), parameter :: PRIMES(5) = [2, 3, 5, 7, 11]
contains
  subroutine wrap_and_bits(N, A, B, R8, R32, R64)
    !$q35c allow-wrap   (the products below wrap on purpose, as with gfortran -fwrapv)
    integer, intent(in) :: N
    integer(int32), intent(in) :: A(N), B(N)
    integer(int8), intent(out) :: R8(N)
    integer(int32), intent(out) :: R32(N, 8)
    integer(int64), intent(out) :: R64(N)
    integer :: i
    integer(int8) :: small
    do i = 1, N
      small = int(A(i), int8)
      small = small * 3_int8 + 100_int8
      R8(i) = small
      R32(i, 1) = A(i) * B(i) + 2147483647
      R32(i, 2) = A(i) / merge(B(i), 1, B(i) /= 0)
      R32(i, 3) = mod(A(i), merge(B(i), 7, B(i) /= 0))
      R32(i, 4) = ieor(not(A(i)), ishft(B(i), -mod(i, 5)))
      R32(i, 5) = ior(shiftl(A(i), 3), ibits(B(i), 2, 9))
      R32(i, 6) = min(A(i), B(i), 17) - max(abs(A(i)), -B(i))
      R32(i, 7) = ishft(A(i), mod(A(i), 40) - 20)
      R32(i, 8) = iand(A(i), z'00FF00FF')
      R64(i) = int(A(i), int64) * int(B(i), int64) - huge(1_int64) / 3_int64
    end do
  end subroutine wrap_and_bits

  subroutine control(N, A, hist, steps, first_neg)
    integer, intent(in) :: N
    integer(int32), intent(in) :: A(N)
    integer(int32), intent(out) :: hist(4)
    integer(int32), intent(out) :: steps(N)
    integer(int32), intent(out) :: first_neg
    integer :: i, k
    integer(int32) :: v, count
    hist = 0
    first_neg = -1
    rows: do i = 1, N
      select case (mod(A(i), 10))
      case (:-1)
        hist(1) = hist(1) + 1
      case (0)
        hist(2) = hist(2) + 1
        cycle rows
      case (1:4, 6)
        hist(3) = hist(3) + 1
      case default
        hist(4) = hist(4) + 1
      end select
      if (A(i) < 0 .and. first_neg < 0) first_neg = i
    end do rows
    do i = 1, N
      v = abs(mod(A(i), 1000)) + 1
      count = 0
      do while (v /= 1 .and. count < 200)
        if (mod(v, 2) == 0) then
          v = v / 2
        else
          v = 3 * v + 1
        end if
        count = count + 1
      end do
      steps(i) = count
      do k = 1, size(PRIMES)
        if (mod(v + i, PRIMES(k)) == 0) exit
        steps(i) = steps(i) + k
      end do
    end do
    do i = N, 1, -2
      if (steps(i) > 1000000) return
      steps(i) = steps(i) * 2
    end do
  end subroutine control

  function nearest_sum(N, X) result(total)
    integer, intent(in) :: N
    real(real32), intent(in) :: X(N)
    integer(int32) :: total
    integer :: i
    total = 0
    do i = 1, N
      total = total + nint(X(i)) * 1000 + int(X(i) * 10.0_real32)
    end do
  end function nearest_sum
end module int_ops
