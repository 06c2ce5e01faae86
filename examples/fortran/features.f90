! Language coverage: kind parameters via kind(), double precision and real*8,
! assumed-shape and automatic arrays, allocatables, sections with steps,
! whole-array expressions, matmul, product/merge/size/lbound/ubound, an endless
! do with exit, negative steps, calls between procedures, functions without a
! result clause, semicolons and continuation lines with a leading &.
module feature_kinds
  implicit none
  integer, parameter :: dp = kind(1.0d0), sp = kind(1.0)
  integer, parameter :: ik = kind(1_8)
end module feature_kinds

module features
  use feature_kinds
  implicit none
contains
  pure integer function clamp_add(a, b)
    integer, intent(in) :: a, b
    clamp_add = max(min(a + b, 1000), -1000)
  end function clamp_add

  subroutine scale_rows(A, f)
    real(sp), intent(inout) :: A(:, :)
    real(sp), intent(in) :: f
    integer :: i
    do i = size(A, 1), 1, -1
      A(i, :) = A(i, :) * f + real(i, sp)
    end do
  end subroutine scale_rows

  subroutine kernels(n, m, A, B, C, v, d, total, flags)
    !$q35c allow-wrap   (sums of arbitrary int32 B may wrap: documented, not rejected)
    integer, intent(in) :: n, m
    real(sp), intent(inout) :: A(n, m)
    integer, intent(in) :: B(n, m)
    integer, intent(out) :: C(n, n)
    real(sp), intent(out) :: v(0:n-1)
    real*8, intent(out) :: d
    integer(ik), intent(out) :: total
    integer, intent(out) :: flags(3)
    real(sp) :: work(n)
    integer, allocatable :: tmp(:, :)
    integer :: i, k
    double precision :: acc
    allocate(tmp(m, n))
    call scale_rows(A, 0.5_sp)
    work = A(:, 1) - A(:, m); v = work * 2.0_sp
    v(0:n-1:2) = -v(0:n-1:2)
    do i = 1, m
      tmp(i, :) = B(:, i)
    end do
    C = matmul(B, tmp)
    acc = 0.0d0
    do i = lbound(v, 1), ubound(v, 1)
      acc = acc + real(v(i), dp) ** 2
    end do
    d = sqrt(acc) + tiny(1.0_dp) * 0.0_dp + epsilon(1.0_dp)
    total = product(int(B(1, :), ik)) &  ! a continued line
          & + sum(int(B(:, 1), ik))
    k = 0
    do
      k = k + 1
      if (k * k > n * m) exit
    end do
    flags(1) = k
    flags(2) = clamp_add(size(B), merge(7, -7, d > 1.0d0))
    flags(3) = count_positive(B, n, m)
    deallocate(tmp)
  end subroutine kernels

  integer function count_positive(x, n, m)
    integer, intent(in) :: n, m
    integer, intent(in) :: x(n, m)
    integer :: i
    count_positive = 0
    do i = 1, n
      if (x(i, 1) <= 0) cycle
      count_positive = count_positive + 1
    end do
  end function count_positive
end module features
