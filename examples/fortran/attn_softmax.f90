! Attention probabilities of a block of queries (one column per query, keys contiguous):
! scores scaled by 1/sqrt(head dim), keys after the query's position masked out (causal,
! the first query at position pos0 + 1), then the max-subtracted softmax. Fixed sizes and
! explicit loops: the running max and the sum become tensor ops over the queries, step by
! step over the keys in the loops' order, so groq's result is the interpreter's bit for bit.
module attn_softmax_mod
  use iso_fortran_env, only: real32
  implicit none
  integer, parameter :: NK = 16, NQ = 4, HEAD_DIM = 64
contains
  subroutine causal_softmax(scores, pos0, probs)
    real(real32), intent(in) :: scores(NK, NQ)
    integer, value :: pos0
    real(real32), intent(out) :: probs(NK, NQ)
    integer :: q, k
    real(real32) :: m, s, scale
    scale = 1.0_real32 / sqrt(real(HEAD_DIM, real32))
    do q = 1, NQ
      m = -huge(m)
      do k = 1, NK
        if (k <= pos0 + q) m = max(m, scores(k, q) * scale)
      end do
      s = 0.0_real32
      do k = 1, NK
        if (k <= pos0 + q) then
          probs(k, q) = exp(scores(k, q) * scale - m)
        else
          probs(k, q) = 0.0_real32
        end if
        s = s + probs(k, q)
      end do
      probs(:, q) = probs(:, q) / s
    end do
  end subroutine causal_softmax
end module attn_softmax_mod
