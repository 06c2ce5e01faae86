! A Fortran kernel compiled for the C target: one C function per procedure, pointer
! arguments in Fortran order (intent(in) arrays const), scalars by value, dynamic extents
! from the scalar arguments, real loops, wrap-around integer arithmetic in unsigned,
! subscripts checked under -DQ35C_BOUNDS_CHECK, division by zero a located stop.
! RUN: rm -rf %t && q35c %s --target c -o %t && filecheck %s --check-prefix=H < %t/kernels.h && filecheck %s < %t/kernels.c

! H: /* scale_sum(n intent(in), k intent(in), x intent(in), y intent(out), q intent(out)) */
! H-NEXT: void scale_sum(int32_t n, int32_t k, const float *x, float *y, int32_t *q);

! CHECK:      static void q35f_scale_sum(int32_t n, int32_t k, float *x, int64_t x_n0, float *y, int64_t y_n0, int32_t *q)
! CHECK:      for (int64_t [[I:i[0-9]+]] = {{.*}}; [[I]] < {{.*}}; [[I]] += {{.*}}) {
! CHECK:      #ifdef Q35C_BOUNDS_CHECK
! CHECK-NEXT: if ({{.*}} < 0 || {{.*}} >= x_n0) q35f_bounds(27, " of array 'x'", 1,
! CHECK:      const float [[V:v[0-9]+]] = x[
! CHECK:      = (int32_t)((uint64_t){{.*}} + (uint64_t){{.*}});
! CHECK:      if ({{.*}} == 0) q35f_trap("line 30: integer division by zero (arith.divsi in 'scale_sum')");
! CHECK:      void scale_sum(int32_t n, int32_t k, const float *x, float *y, int32_t *q)
! CHECK-NEXT: {
! CHECK-NEXT:     q35f_scale_sum(n, k, (float *)x, q35f_extent((int64_t)n), (float *)y, q35f_extent((int64_t)n), (int32_t *)q);
subroutine scale_sum(n, k, x, y, q)
  integer, intent(in) :: n, k
  real, intent(in) :: x(n)
  real, intent(out) :: y(n)
  integer, intent(out) :: q
  integer :: i
  do i = 1, n
    y(i) = 2.0 * x(i)
  end do
  q = n + k
  q = q / k
end subroutine scale_sum
