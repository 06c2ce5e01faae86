// RUN: xdsl-opt %s -p fuse-dequant-matmul | filecheck %s

func.func @main(%x: tensor<4x64xf32>, %xb: tensor<2x4x64xf32>, %p: !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5">) -> (tensor<4x32xf32>, tensor<2x4x32xf32>) {
  %w = quant3p5.dequantize %p : !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5"> -> tensor<64x32xf32>
  %zero = arith.constant 0.000000e+00 : f32
  %e = tensor.empty() : tensor<4x32xf32>
  %init = linalg.fill ins(%zero : f32) outs(%e : tensor<4x32xf32>) -> tensor<4x32xf32>
  %y = linalg.matmul ins(%x, %w : tensor<4x64xf32>, tensor<64x32xf32>) outs(%init : tensor<4x32xf32>) -> tensor<4x32xf32>
  %yb = q35nn.batch_matmul %xb, %w : tensor<2x4x64xf32>, tensor<64x32xf32> -> tensor<2x4x32xf32>
  func.return %y, %yb : tensor<4x32xf32>, tensor<2x4x32xf32>
}

// CHECK:      func.func @main
// CHECK-NEXT:   %y = quant3p5.matmul %x, %p : tensor<4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5"> -> tensor<4x32xf32>
// CHECK-NEXT:   %yb = quant3p5.matmul %xb, %p : tensor<2x4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5"> -> tensor<2x4x32xf32>
// CHECK-NEXT:   func.return %y, %yb : tensor<4x32xf32>, tensor<2x4x32xf32>
