! Rotary position embedding on Q(Dh, T): pairs (2i-1, 2i) of token tok rotate by
! angle = (pos0 + tok - 1) * base**(-2(i-1)/Dh). The angle is rounded to real32;
! cos/sin are taken in real64 and rounded once.
module rope_mod
  use iso_fortran_env, only: int32, real32, real64
  implicit none
contains
  subroutine rope(Dh, T, pos0, base, Q)
    integer(int32), intent(in) :: Dh, T, pos0
    real(real32), intent(in) :: base
    real(real32), intent(inout) :: Q(Dh, T)
    integer :: i, tok
    real(real32) :: freq, angle, c, s, a, b
    do tok = 1, T
      do i = 1, Dh / 2
        freq = base ** (-real(2*(i - 1), real32) / real(Dh, real32))
        angle = real(pos0 + tok - 1, real32) * freq
        c = real(cos(real(angle, real64)), real32)
        s = real(sin(real(angle, real64)), real32)
        a = Q(2*i - 1, tok)
        b = Q(2*i, tok)
        Q(2*i - 1, tok) = a * c - b * s
        Q(2*i, tok) = a * s + b * c
      end do
    end do
  end subroutine rope
end module rope_mod
