// RUN: xdsl-opt %s -p unfuse-ops | filecheck %s
// RUN: xdsl-opt %s -p 'unfuse-ops{ops="q35nn.swiglu"}' | filecheck %s --check-prefix=ONLY

// Every fused op back into the ops it stands for; the results keep their names.

func.func @main(%x: tensor<4x64xf32>, %p: !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5">, %b: tensor<32xf32>, %r: tensor<4x32xf32>, %g: tensor<4x32xf32>, %q: tensor<2x4x16xf32>, %k: tensor<2x6x16xf32>, %v: tensor<2x6x8xf32>, %m: tensor<4x1xf32>) -> (tensor<4x32xf32>, tensor<4x32xf32>, tensor<2x4x8xf32>) {
  %z = quant3p5.fused_matmul %x, %p bias %b residual %r {activation = "relu"} : tensor<4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5"> bias tensor<32xf32> residual tensor<4x32xf32> -> tensor<4x32xf32>
  %s = q35nn.swiglu %g, %z : tensor<4x32xf32>, tensor<4x32xf32> -> tensor<4x32xf32>
  %a = q35nn.attention %q, %k, %v mask %m {scale = 0.25 : f32} : tensor<2x4x16xf32>, tensor<2x6x16xf32>, tensor<2x6x8xf32>, tensor<4x1xf32> -> tensor<2x4x8xf32>
  func.return %z, %s, %a : tensor<4x32xf32>, tensor<4x32xf32>, tensor<2x4x8xf32>
}

// CHECK:      func.func @main
// CHECK-NEXT:   %0 = quant3p5.matmul %x, %p : tensor<4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5"> -> tensor<4x32xf32>
// CHECK-NEXT:   %1 = tensor.empty() : tensor<4x32xf32>
// CHECK-NEXT:   %2 = linalg.broadcast ins(%b:tensor<32xf32>) outs(%1:tensor<4x32xf32>) dimensions = [0]
// CHECK-NEXT:   %3 = arith.addf %0, %2 : tensor<4x32xf32>
// CHECK-NEXT:   %4 = arith.constant dense<0.000000e+00> : tensor<4x32xf32>
// CHECK-NEXT:   %5 = arith.maximumf %3, %4 : tensor<4x32xf32>
// CHECK-NEXT:   %z = arith.addf %5, %r : tensor<4x32xf32>
// CHECK-NEXT:   %6 = q35nn.silu %g : tensor<4x32xf32> -> tensor<4x32xf32>
// CHECK-NEXT:   %s = arith.mulf %6, %z : tensor<4x32xf32>
// CHECK-NEXT:   %7 = tensor.empty() : tensor<2x16x6xf32>
// CHECK-NEXT:   %8 = linalg.transpose ins(%k:tensor<2x6x16xf32>) outs(%7:tensor<2x16x6xf32>) permutation = [0, 2, 1]
// CHECK-NEXT:   %9 = q35nn.batch_matmul %q, %8 : tensor<2x4x16xf32>, tensor<2x16x6xf32> -> tensor<2x4x6xf32>
// CHECK-NEXT:   %10 = arith.constant dense<2.500000e-01> : tensor<2x4x6xf32>
// CHECK-NEXT:   %11 = arith.mulf %9, %10 : tensor<2x4x6xf32>
// CHECK-NEXT:   %12 = arith.constant dense<4> : tensor<1xi64>
// CHECK-NEXT:   %13 = tensor.reshape %m(%12) : (tensor<4x1xf32>, tensor<1xi64>) -> tensor<4xf32>
// CHECK-NEXT:   %14 = tensor.empty() : tensor<2x4x6xf32>
// CHECK-NEXT:   %15 = linalg.broadcast ins(%13:tensor<4xf32>) outs(%14:tensor<2x4x6xf32>) dimensions = [0, 2]
// CHECK-NEXT:   %16 = arith.addf %11, %15 : tensor<2x4x6xf32>
// CHECK-NEXT:   %17 = q35nn.softmax %16 {axis = -1 : i64} : tensor<2x4x6xf32> -> tensor<2x4x6xf32>
// CHECK-NEXT:   %a = q35nn.batch_matmul %17, %v : tensor<2x4x6xf32>, tensor<2x6x8xf32> -> tensor<2x4x8xf32>
// CHECK-NEXT:   func.return %z, %s, %a : tensor<4x32xf32>, tensor<4x32xf32>, tensor<2x4x8xf32>

// ONLY:      %z = quant3p5.fused_matmul
// ONLY-NEXT: %0 = q35nn.silu %g
// ONLY-NEXT: %s = arith.mulf %0, %z
// ONLY-NEXT: %a = q35nn.attention
