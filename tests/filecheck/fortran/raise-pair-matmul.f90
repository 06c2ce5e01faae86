! The int8 x legacy-pair loop nest becomes quant3p5.pack + quant3p5.matmul_int8;
! a nest that decodes the pair layout wrongly stays loops.
! RUN: q35c %s --passes canonicalize,cse | filecheck %s

! CHECK-LABEL: "func.func"() <{sym_name = "qmm"
! CHECK-NOT:   "scf.for"
! CHECK:       %[[X:.*]] = "bufferization.to_tensor"(%{{.*}}) <{restrict}> : (memref<2x8xi8>) -> tensor<2x8xi8>
! CHECK:       %[[XS:.*]] = "bufferization.to_tensor"(%{{.*}}) <{restrict}> : (memref<2xf32>) -> tensor<2xf32>
! CHECK:       %[[W:.*]] = "bufferization.to_tensor"(%{{.*}}) <{restrict}> : (memref<4x3xi8>) -> tensor<4x3xi8>
! CHECK:       %[[P:.*]] = "quant3p5.pack"(%[[W]], %{{.*}}, %{{.*}}) : (tensor<4x3xi8>, tensor<3xf32>, tensor<3xf32>) -> !quant3p5.packed<[8 : i64, 3 : i64], 8 : i64, "pair43">
! CHECK:       %[[Y:.*]] = "quant3p5.matmul_int8"(%[[X]], %[[XS]], %[[P]]) : (tensor<2x8xi8>, tensor<2xf32>, !quant3p5.packed<[8 : i64, 3 : i64], 8 : i64, "pair43">) -> tensor<2x3xf32>
! CHECK:       "bufferization.materialize_in_destination"(%[[Y]], %{{.*}}) <{restrict, writable}> {q35c.raised_from_line = 32 : i64}
! CHECK-NOT:   "scf.for"
! CHECK:       "func.return"

! CHECK-LABEL: "func.func"() <{sym_name = "qmm_levels_swapped"
! CHECK-NOT:   quant3p5
! CHECK:       "scf.for"
! CHECK-NOT:   quant3p5
! CHECK:       "func.return"
module raise_test
  use iso_fortran_env, only: int8, int32, real32
  implicit none
  integer, parameter :: M = 2, K = 8, N = 3
contains
  subroutine qmm(X, xscale, W, scale, offset, Y)
    integer(int8), intent(in) :: X(M, K), W(K/2, N)
    real(real32), intent(in) :: xscale(M), scale(N), offset(N)
    real(real32), intent(out) :: Y(M, N)
    integer :: i, j, p
    integer(int32) :: acc, sx, b, hi, lo
    do i = 1, M
      do j = 1, N
        sx = 0
        acc = 0
        do p = 1, K/2
          b = W(p, j)
          hi = ibits(b, 3, 4) - 16 * ibits(b, 6, 1)
          lo = 2 * (ibits(b, 0, 3) - 8 * ibits(b, 2, 1)) + 1
          acc = acc + lo * X(i, 2*p) + hi * int(X(i, 2*p - 1), int32)
          sx = sx + X(i, 2*p) + X(i, 2*p - 1)
        end do
        Y(i, j) = xscale(i) * (real(sx, real32) * offset(j) + scale(j) * real(acc, real32))
      end do
    end do
  end subroutine qmm

  subroutine qmm_levels_swapped(X, xscale, W, scale, offset, Y)
    integer(int8), intent(in) :: X(M, K), W(K/2, N)
    real(real32), intent(in) :: xscale(M), scale(N), offset(N)
    real(real32), intent(out) :: Y(M, N)
    integer :: i, j, p
    integer(int32) :: acc, sx, b, hi, lo
    do i = 1, M
      do j = 1, N
        sx = 0
        acc = 0
        do p = 1, K/2
          b = W(p, j)
          hi = ibits(b, 3, 4) - 16 * ibits(b, 6, 1)
          lo = 2 * (ibits(b, 0, 3) - 8 * ibits(b, 2, 1)) + 1
          acc = acc + hi * X(i, 2*p) + lo * int(X(i, 2*p - 1), int32)
          sx = sx + X(i, 2*p) + X(i, 2*p - 1)
        end do
        Y(i, j) = xscale(i) * (real(sx, real32) * offset(j) + scale(j) * real(acc, real32))
      end do
    end do
  end subroutine qmm_levels_swapped
end module raise_test
