! RMSNorm of every column (one token per column, column-major):
!   Y(:, t) = X(:, t) / sqrt(mean(X(:, t)**2) + eps) * g
module rmsnorm_mod
  use iso_fortran_env, only: real32
  implicit none
contains
  subroutine rmsnorm(D, T, X, g, eps, Y)
    integer, intent(in) :: D, T
    real(real32), intent(in) :: X(D, T), g(D)
    real(real32), value :: eps
    real(real32), intent(out) :: Y(D, T)
    integer :: tok
    real(real32) :: ms, inv
    do tok = 1, T
      ms = sum(X(:, tok) * X(:, tok)) / real(D, real32)
      inv = 1.0_real32 / sqrt(ms + eps)
      Y(:, tok) = X(:, tok) * inv * g
    end do
  end subroutine rmsnorm
end module rmsnorm_mod
