! int8 activations x weights in the legacy pair layout, int32 accumulation,
! per-column scale/offset and per-row activation scale:
!   Y(i, j) = xscale(i) * (scale(j) * sum_k X(i,k) * L(k,j) + offset(j) * sum_k X(i,k))
! where the byte W(p, j) holds L(2p-1, j) in bits 6..3 (signed 4-bit) and
! L(2p, j) = 2*v3 + 1 with v3 the signed 3-bit value in bits 2..0.
module qmatmul_pair_mod
  use iso_fortran_env, only: int8, int32, real32
  implicit none
  private
  public :: qmatmul_pair, qmatmul_pair_4x64x16
  integer, parameter :: M4 = 4, K64 = 64, N16 = 16
contains
  subroutine qmatmul_pair(M, K, N, X, xscale, W, scale, offset, Y)
    integer, intent(in) :: M, K, N
    integer(int8), intent(in) :: X(M, K)
    real(real32), intent(in) :: xscale(M)
    integer(int8), intent(in) :: W(K/2, N)
    real(real32), intent(in) :: scale(N), offset(N)
    real(real32), intent(out) :: Y(M, N)
    integer :: i, j, p
    integer(int32) :: acc, sx, v4, v3
    !$omp parallel do private(i, p, acc, sx, v4, v3)
    do j = 1, N
      do i = 1, M
        acc = 0_int32
        sx = 0_int32
        do p = 1, K / 2
          v4 = iand(ishft(int(W(p, j), int32), -3), 15)
          if (v4 >= 8) v4 = v4 - 16
          v3 = iand(int(W(p, j), int32), 7)
          if (v3 >= 4) v3 = v3 - 8
          acc = acc + int(X(i, 2*p - 1), int32) * v4 + int(X(i, 2*p), int32) * (2*v3 + 1)
          sx = sx + int(X(i, 2*p - 1), int32) + int(X(i, 2*p), int32)
        end do
        Y(i, j) = (scale(j) * real(acc, real32) + offset(j) * real(sx, real32)) * xscale(i)
      end do
    end do
  end subroutine qmatmul_pair

  ! The same kernel specialized to fixed sizes: q35c raises it to quant3p5 ops.
  subroutine qmatmul_pair_4x64x16(X, xscale, W, scale, offset, Y) bind(c)
    integer(int8), intent(in) :: X(M4, K64)
    real(real32), intent(in) :: xscale(M4)
    integer(int8), intent(in) :: W(K64/2, N16)
    real(real32), intent(in) :: scale(N16), offset(N16)
    real(real32), intent(out) :: Y(M4, N16)
    integer :: i, j, p
    integer(int32) :: acc, sx, v4, v3
    do j = 1, N16
      do i = 1, M4
        acc = 0_int32
        sx = 0_int32
        do p = 1, K64 / 2
          v4 = iand(ishft(int(W(p, j), int32), -3), 15)
          if (v4 >= 8) v4 = v4 - 16
          v3 = iand(int(W(p, j), int32), 7)
          if (v3 >= 4) v3 = v3 - 8
          acc = acc + int(X(i, 2*p - 1), int32) * v4 + int(X(i, 2*p), int32) * (2*v3 + 1)
          sx = sx + int(X(i, 2*p - 1), int32) + int(X(i, 2*p), int32)
        end do
        Y(i, j) = (scale(j) * real(acc, real32) + offset(j) * real(sx, real32)) * xscale(i)
      end do
    end do
  end subroutine qmatmul_pair_4x64x16
end module qmatmul_pair_mod
