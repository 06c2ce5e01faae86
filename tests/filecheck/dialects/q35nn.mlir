// RUN: xdsl-opt %s | filecheck %s
// RUN: xdsl-opt %s --print-op-generic | xdsl-opt | filecheck %s

builtin.module {
  func.func @ops(%x: tensor<2x4x8xf32>, %g: tensor<8xf32>, %w: tensor<8x3xf32>, %table: tensor<100x8xf32>, %ids: tensor<1x5xi64>) -> tensor<2x4x3xf32> {
    %a = q35nn.rms_norm %x, %g {epsilon = 1.0e-06 : f32} : tensor<2x4x8xf32>, tensor<8xf32> -> tensor<2x4x8xf32>
    %b = q35nn.layer_norm %a, %g, %g {epsilon = 1.0e-05 : f32} : tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<2x4x8xf32>
    %c = q35nn.gelu %b {approximate = "tanh"} : tensor<2x4x8xf32> -> tensor<2x4x8xf32>
    %d = q35nn.silu %c : tensor<2x4x8xf32> -> tensor<2x4x8xf32>
    %e = q35nn.softmax %d {axis = -1 : i64} : tensor<2x4x8xf32> -> tensor<2x4x8xf32>
    %f = q35nn.batch_matmul %e, %w : tensor<2x4x8xf32>, tensor<8x3xf32> -> tensor<2x4x3xf32>
    %emb = q35nn.gather %table, %ids {axis = 0 : i64} : tensor<100x8xf32>, tensor<1x5xi64> -> tensor<1x5x8xf32>
    func.return %f : tensor<2x4x3xf32>
  }
}

// CHECK:      %a = q35nn.rms_norm %x, %g {epsilon = 1.000000e-06 : f32} : tensor<2x4x8xf32>, tensor<8xf32> -> tensor<2x4x8xf32>
// CHECK-NEXT: %b = q35nn.layer_norm %a, %g, %g {epsilon = 1.000000e-05 : f32} : tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<2x4x8xf32>
// CHECK-NEXT: %c = q35nn.gelu %b {approximate = "tanh"} : tensor<2x4x8xf32> -> tensor<2x4x8xf32>
// CHECK-NEXT: %d = q35nn.silu %c : tensor<2x4x8xf32> -> tensor<2x4x8xf32>
// CHECK-NEXT: %e = q35nn.softmax %d {axis = -1 : i64} : tensor<2x4x8xf32> -> tensor<2x4x8xf32>
// CHECK-NEXT: %f = q35nn.batch_matmul %e, %w : tensor<2x4x8xf32>, tensor<8x3xf32> -> tensor<2x4x3xf32>
// CHECK-NEXT: %emb = q35nn.gather %table, %ids {axis = 0 : i64} : tensor<100x8xf32>, tensor<1x5xi64> -> tensor<1x5x8xf32>
