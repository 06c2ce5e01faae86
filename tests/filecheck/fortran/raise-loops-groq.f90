! raise-fortran-tensors on a row softmax: the loop over rows is vectorized (a tensor
! dimension of 2), the max and the sum over the 3 columns are unrolled in the loop's order
! (one comparison and select, or one addition, per column on tensor<2xf32>), and the
! function records what it raised.
! RUN: q35c %s --passes raise-fortran-tensors | filecheck %s

! CHECK-LABEL: "func.func"() <{sym_name = "rows"
! CHECK-SAME:  function_type = (tensor<2x3xf32>) -> tensor<2x3xf32>
! CHECK-NOT:   "scf.for"
! CHECK-NOT:   "memref.
! CHECK-COUNT-3: "q35nn.onnx_node"({{.*}}) {op_type = "Greater"
! CHECK:       "math.exp"({{.*}}) <{fastmath = #arith.fastmath<none>}> : (tensor<2x3xf32>) -> tensor<2x3xf32>
! CHECK-COUNT-3: "arith.addf"({{.*}}) <{fastmath = #arith.fastmath<none>}> : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
! CHECK:       "arith.divf"({{.*}}) <{fastmath = #arith.fastmath<none>}> : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
! CHECK:       "arith.mulf"({{.*}}) <{fastmath = #arith.fastmath<none>}> : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
! CHECK:       "func.return"
! CHECK:       q35c.raised = ["line 22: loop nest -> y: vectorized line 22 (2), line 23 (3), line 24 (3) x2; unrolled line 23 (3), line 24 (3);
subroutine rows(x, y)
  real, intent(in) :: x(2, 3)
  real, intent(out) :: y(2, 3)
  integer :: i
  do i = 1, 2
    y(i, :) = exp(x(i, :) - maxval(x(i, :)))
    y(i, :) = y(i, :) * (1.0 / sum(y(i, :)))
  end do
end subroutine rows
