! Allocatable components of derived types: a layer whose int8 weights and per-column
! scales live in allocatable components (a dummy of derived type), and a kernel with a
! local workspace type whose buffers it allocates, fills, passes on and frees.
module alloc_components
  use iso_fortran_env, only: int8, int32, real32
  implicit none

  type :: qlayer
    integer(int8), allocatable :: wq(:,:)
    real(real32), allocatable :: scales(:)
    integer(int32) :: calls
  end type qlayer

  type :: workspace
    real(real32), allocatable :: deq(:,:)
    integer(int32), allocatable :: acc(:)
    real(real32) :: total
  end type workspace

contains

  subroutine dequant_cols(wq, scales, deq, k, n)
    integer(int32), intent(in) :: k, n
    integer(int8), intent(in) :: wq(k, n)
    real(real32), intent(in) :: scales(:)
    real(real32), intent(out) :: deq(k, n)
    integer(int32) :: j
    do j = 1, n
      deq(:, j) = real(wq(:, j), real32) * scales(j)
    end do
  end subroutine dequant_cols

  ! column sums of the workspace: ws arrives with its components allocated
  subroutine ws_accumulate(ws, wq, k, n)
    integer(int32), intent(in) :: k, n
    type(workspace), intent(inout) :: ws
    integer(int8), intent(in) :: wq(k, n)
    integer(int32) :: j
    ws%total = 0.0
    do j = 1, size(ws%deq, 2)
      ws%acc(j) = sum(int(wq(:, j), int32))
      ws%total = ws%total + sum(ws%deq(:, j))
    end do
  end subroutine ws_accumulate

  ! y(m, n) = x(m, k) * (layer%wq * layer%scales); the layer arrives allocated
  subroutine qlayer_forward(layer, x, y, m, k, n)
    integer(int32), intent(in) :: m, k, n
    type(qlayer), intent(inout) :: layer
    real(real32), intent(in) :: x(m, k)
    real(real32), intent(out) :: y(m, n)
    integer(int32) :: i, j, l
    real(real32) :: s
    do j = 1, size(layer%wq, 2)
      do i = 1, m
        s = 0.0
        do l = 1, k
          s = s + x(i, l) * real(layer%wq(l, j), real32)
        end do
        y(i, j) = s * layer%scales(j)
      end do
    end do
    if (allocated(layer%scales)) layer%calls = layer%calls + 1
    layer%scales(1:n:2) = -layer%scales(1:n:2)
  end subroutine qlayer_forward

  ! the same product through a local workspace: dequantize into ws%deq, sum in ws%acc
  subroutine qlinear_ws(wq, scales, x, y, rowsum, m, k, n)
    integer(int32), intent(in) :: m, k, n
    integer(int8), intent(in) :: wq(k, n)
    real(real32), intent(in) :: scales(n), x(m, k)
    real(real32), intent(out) :: y(m, n)
    integer(int32), intent(out) :: rowsum(n)
    type(workspace) :: ws, tmp
    integer(int32) :: i, j
    if (.not. allocated(ws%deq)) allocate(ws%deq(k, n))
    allocate(ws%acc(n), tmp%acc(0:n - 1))
    call dequant_cols(wq, scales, ws%deq, k, n)
    do j = 1, n
      do i = 1, m
        y(i, j) = dot_product(x(i, :), ws%deq(:, j))
      end do
    end do
    call ws_accumulate(ws, wq, k, n)
    tmp%acc(0:n - 1) = ws%acc * 2
    rowsum = tmp%acc + lbound(tmp%acc, 1)
    deallocate(tmp%acc)
    if (allocated(ws%acc)) then
      deallocate(ws%acc)
    end if
    y(1, 1) = y(1, 1) + ws%total
    deallocate(ws%deq)
    if (.not. allocated(ws%deq)) y(m, n) = y(m, n) + real(lbound(x, 1))
  end subroutine qlinear_ws

end module alloc_components
