// RUN: q35c %inputs/norms.onnx --shape x=2,8 --passes '' | filecheck %s --check-prefix=BEFORE
// RUN: q35c %inputs/norms.onnx --shape x=2,8 --passes fuse-norms | filecheck %s
// Decomposed RMSNorm (x * 1/sqrt(mean(x*x) + eps) * gamma) and LayerNorm
// ((x - mean) / sqrt(var + eps) * gamma + beta), as exporters write them (Inputs/make_inputs.py).

// BEFORE:     "linalg.reduce"
// BEFORE:     "math.sqrt"
// BEFORE:     "linalg.reduce"
// BEFORE:     "linalg.reduce"
// BEFORE:     "math.sqrt"

// CHECK:      ^bb0(%x: tensor<2x8xf32>):
// CHECK-NEXT:   %[[G:.*]] = "arith.constant"() <{value = dense<{{.*}}> : tensor<8xf32>}> : () -> tensor<8xf32>
// CHECK-NEXT:   %[[RMS:.*]] = "q35nn.rms_norm"(%x, %[[G]]) {epsilon = 1.000000e-06 : f32} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
// CHECK-NEXT:   %[[B:.*]] = "arith.constant"() <{value = dense<{{.*}}> : tensor<8xf32>}> : () -> tensor<8xf32>
// CHECK-NEXT:   %[[LN:.*]] = "q35nn.layer_norm"(%x, %[[G]], %[[B]]) {epsilon = 1.000000e-06 : f32} : (tensor<2x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
// CHECK-NEXT:   "func.return"(%[[RMS]], %[[LN]])
