! A module of parameter lookup tables: the legacy pair levels (v4 and 2*v3+1 of
! each 7-bit byte) built with array constructors, and a dequantizer using them.
module pair_tables
  use iso_fortran_env, only: int8, int32, real32
  implicit none
  integer(int8), parameter :: V4_OF_NIBBLE(0:15) = &
      [0_int8, 1_int8, 2_int8, 3_int8, 4_int8, 5_int8, 6_int8, 7_int8, &
       -8_int8, -7_int8, -6_int8, -5_int8, -4_int8, -3_int8, -2_int8, -1_int8]
  integer(int8), parameter :: ODD_LEVEL(0:7) = (/ 1_int8, 3_int8, 5_int8, 7_int8, &
                                                  -7_int8, -5_int8, -3_int8, -1_int8 /)
end module pair_tables

module pair_dequant
  use iso_fortran_env, only: int8, int32, real32
  use pair_tables, only: V4_OF_NIBBLE, ODD_LEVEL
  implicit none
contains
  subroutine dequant_pairs(P, N, W, scale, offset, Wf)
    integer, intent(in) :: P, N
    integer(int8), intent(in) :: W(P, N)
    real(real32), intent(in) :: scale(N), offset(N)
    real(real32), intent(out) :: Wf(2*P, N)
    integer :: p2, j
    integer(int32) :: b
    do j = 1, N
      do p2 = 1, P
        b = int(W(p2, j), int32)
        Wf(2*p2 - 1, j) = scale(j) * real(V4_OF_NIBBLE(shiftr(b, 3)), real32) + offset(j)
        Wf(2*p2, j) = scale(j) * real(ODD_LEVEL(iand(b, 7)), real32) + offset(j)
      end do
    end do
  end subroutine dequant_pairs

  ! Integer levels through the tables: must equal q35c's LEGACY_LEVELS exactly.
  subroutine pair_levels(P, N, W, L)
    integer, intent(in) :: P, N
    integer(int8), intent(in) :: W(P, N)
    integer(int32), intent(out) :: L(2*P, N)
    integer :: p2, j
    do j = 1, N
      do p2 = 1, P
        L(2*p2 - 1, j) = V4_OF_NIBBLE(ishft(int(W(p2, j), int32), -3))
        L(2*p2, j) = ODD_LEVEL(iand(int(W(p2, j), int32), 7))
      end do
    end do
  end subroutine pair_levels
end module pair_dequant
