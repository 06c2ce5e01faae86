! SiLU-gated MLP for one token: h = silu(x . Wg) * (x . Wu); y = h . Wd
module silu_mlp_mod
  use iso_fortran_env, only: real32
  implicit none
contains
  elemental function silu(v) result(s)
    real(real32), intent(in) :: v
    real(real32) :: s
    s = v / (1.0_real32 + exp(-v))
  end function silu

  subroutine silu_mlp(D, H, x, Wg, Wu, Wd, y)
    integer, intent(in) :: D, H
    real(real32), intent(in) :: x(D), Wg(D, H), Wu(D, H), Wd(H, D)
    real(real32), intent(out) :: y(D)
    real(real32), allocatable :: hid(:)
    integer :: j
    allocate(hid(H))
    do j = 1, H
      hid(j) = silu(dot_product(x, Wg(:, j))) * dot_product(x, Wu(:, j))
    end do
    do j = 1, D
      y(j) = dot_product(hid, Wd(:, j))
    end do
    deallocate(hid)
  end subroutine silu_mlp
end module silu_mlp_mod
