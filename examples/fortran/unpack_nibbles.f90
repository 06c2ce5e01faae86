! Nibble unpacking to real32: each byte of Q holds two unsigned 4-bit codes,
! low nibble first; W(2p-1, j) = scale(j) * (lo - zero(j)), W(2p, j) likewise.
module nibbles
  use iso_fortran_env, only: int8, int32, real32
  implicit none
  integer(int32), parameter :: LOW_MASK = int(z'0F', int32)
contains
  pure subroutine unpack_nibbles(K, N, Q, scale, zero, W)
    integer, intent(in) :: K, N
    integer(int8), intent(in) :: Q(K/2, N)
    real(real32), intent(in) :: scale(N)
    integer(int8), intent(in) :: zero(N)
    real(real32), intent(out) :: W(K, N)
    integer :: p, j
    integer(int32) :: b, lo, hi
    do concurrent (p = 1:K/2, j = 1:N)
      b = iand(int(Q(p, j), int32), int(z'FF', int32))
      lo = iand(b, LOW_MASK)
      hi = ibits(b, 4, 4)
      W(2*p - 1, j) = scale(j) * real(lo - zero(j), real32)
      W(2*p, j) = scale(j) * real(shiftr(b, 4) - zero(j), real32)
      if (hi /= shiftr(b, 4)) W(2*p, j) = -huge(1.0_real32)
    end do
  end subroutine unpack_nibbles
end module nibbles
