! RMSNorm of each token followed by the int8 quantization of the normalized activations, the
! input of the next int8 matmul: y = x / sqrt(mean(x**2) + eps) * w, then a per-token scale
! from max |y| and codes nint(y / scale). Fixed sizes: raised to tensor ops for groq.
module rmsnorm_q8_mod
  use iso_fortran_env, only: int8, real32
  implicit none
  integer, parameter :: DM = 32, NTOK = 3
contains
  subroutine rmsnorm_q8(x, w, eps, xq, xs)
    real(real32), intent(in) :: x(DM, NTOK), w(DM)
    real(real32), value :: eps
    integer(int8), intent(out) :: xq(DM, NTOK)
    real(real32), intent(out) :: xs(NTOK)
    real(real32) :: y(DM), ss
    integer :: t, i
    do t = 1, NTOK
      ss = 0.0_real32
      do i = 1, DM
        ss = ss + x(i, t)**2
      end do
      y = x(:, t) * (1.0_real32 / sqrt(ss / real(DM, real32) + eps)) * w
      xs(t) = max(maxval(abs(y)), 1.0e-8_real32) / 127.0_real32
      xq(:, t) = int(nint(y / xs(t)), int8)
    end do
  end subroutine rmsnorm_q8
end module rmsnorm_q8_mod
