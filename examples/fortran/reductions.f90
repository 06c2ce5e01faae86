! Per-token statistics of an activation block, as an int8 quantizer and a sampler use them:
! the extremes and the sum of each token's column (maxval/minval/sum of sections), the
! symmetric int8 scale they give, how many logits pass a threshold (a masked count); for
! int8 codes the int32 column sums of an int8 matmul's zero-point correction and each row's
! largest magnitude; a sampler's filter with `dim=` and `mask=`. Fixed sizes:
! `raise-fortran-tensors` turns every reduction into tensor ops in the loops' order, so the
! kernels compile for groq (docs/fortran.md).
module reductions_mod
  use iso_fortran_env, only: int8, int32, real32
  implicit none
  integer, parameter :: NT = 4, D = 24
contains
  subroutine token_stats(x, thresh, hi, lo, total, scale, nabove)
    real(real32), intent(in) :: x(D, NT)
    real(real32), value :: thresh
    real(real32), intent(out) :: hi(NT), lo(NT), total(NT), scale(NT)
    integer(int32), intent(out) :: nabove(NT)
    integer :: t, k
    do t = 1, NT
      hi(t) = maxval(x(:, t))
      lo(t) = minval(x(:, t))
      total(t) = sum(x(:, t))
      scale(t) = max(abs(hi(t)), abs(lo(t))) / 127.0_real32
      nabove(t) = 0
      do k = 1, D
        if (x(k, t) > thresh) nabove(t) = nabove(t) + 1
      end do
    end do
  end subroutine token_stats

  subroutine code_sums(q, colsum, rowmax)
    integer(int8), intent(in) :: q(NT, D)
    integer(int32), intent(out) :: colsum(D), rowmax(NT)
    integer :: i, j
    colsum = 0
    do j = 1, D
      do i = 1, NT
        colsum(j) = colsum(j) + int(q(i, j), int32)
      end do
    end do
    do i = 1, NT
      rowmax(i) = 0
      do j = 1, D
        rowmax(i) = max(rowmax(i), abs(int(q(i, j), int32)))
      end do
    end do
  end subroutine code_sums

  ! A sampler's filter over a block of logits (one column per sequence): how many tokens
  ! pass the cutoff, their sum and best logit (dim= and mask=), whether any is far above it,
  ! and each token's lowest logit across the block.
  subroutine logit_filter(logits, cutoff, kept, keptsum, best, far, lowest)
    integer, parameter :: V = 16, NB = 3
    real(real32), intent(in) :: logits(V, NB)
    real(real32), value :: cutoff
    integer(int32), intent(out) :: kept(NB), far(NB)
    real(real32), intent(out) :: keptsum(NB), best(NB), lowest(V)
    kept = count(logits >= cutoff, dim=1)
    keptsum = sum(logits, dim=1, mask=logits >= cutoff)
    best = maxval(logits, 1, logits >= cutoff)
    far = merge(1, 0, any(logits > 2.0_real32 * cutoff, dim=1))
    lowest = minval(logits, dim=2)
  end subroutine logit_filter
end module reductions_mod
