// RUN: q35c %inputs/attention.onnx --passes '' | filecheck %s --check-prefix=BEFORE
// RUN: q35c %inputs/attention.onnx --passes fuse-attention | filecheck %s
// softmax(q k^T * 0.25 + mask) v, with k transposed by a Transpose node (Inputs/make_inputs.py).
// The fused op keeps the ONNX node of the V product (q35c.onnx_node) for reports and errors.

// BEFORE: "linalg.transpose"
// BEFORE: "q35nn.batch_matmul"
// BEFORE: "q35nn.softmax"
// BEFORE: "q35nn.batch_matmul"

// CHECK:      ^bb0(%q: tensor<1x2x4x16xf32>, %k: tensor<1x2x4x16xf32>, %v: tensor<1x2x4x16xf32>):
// CHECK-NEXT:   %[[MASK:.*]] = "arith.constant"() <{value = dense<{{.*}}> : tensor<4x4xf32>}> : () -> tensor<4x4xf32>
// CHECK-NEXT:   %[[OUT:.*]] = "q35nn.attention"(%q, %k, %v, %[[MASK]]) {scale = 2.500000e-01 : f32, operandSegmentSizes = array<i32: 1, 1, 1, 1>, q35c.onnx_node = "attn/pv"} : (tensor<1x2x4x16xf32>, tensor<1x2x4x16xf32>, tensor<1x2x4x16xf32>, tensor<4x4xf32>) -> tensor<1x2x4x16xf32>
// CHECK-NEXT:   "func.return"(%[[OUT]])
