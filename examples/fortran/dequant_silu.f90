! Fixed-size elementwise kernels, in the style of a quantized MLP's activation step:
! dequantize int8 codes with per-element scales, then add a SiLU of a residual input.
! Whole-array statements over constant shapes: `raise-fortran-tensors` turns them into
! elementwise tensor ops, so the kernel compiles for groq as well as for c.
module dequant_silu_mod
  use iso_fortran_env, only: int8, real32
  implicit none
  integer, parameter :: R = 8, C = 16
contains
  subroutine dequant_silu(q, s, x, y)
    integer(int8), intent(in) :: q(R, C)
    real(real32), intent(in) :: s(R, C), x(R, C)
    real(real32), intent(out) :: y(R, C)
    y = real(q, real32) * s
    y = y + x / (1.0_real32 + exp(-x))
  end subroutine dequant_silu
end module dequant_silu_mod
