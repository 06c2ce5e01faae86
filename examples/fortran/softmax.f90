! Row softmax (rows of S(R, C)), max-subtracted, in place.
module softmax_mod
  use iso_fortran_env, only: real32
  implicit none
contains
  subroutine softmax_rows(R, C, S)
    integer, intent(in) :: R, C
    real(real32), intent(inout) :: S(R, C)
    integer :: i
    real(real32) :: m, total
    do i = 1, R
      m = maxval(S(i, :))
      S(i, :) = exp(S(i, :) - m)
      total = sum(S(i, :))
      S(i, :) = S(i, :) / total
    end do
  end subroutine softmax_rows
end module softmax_mod
