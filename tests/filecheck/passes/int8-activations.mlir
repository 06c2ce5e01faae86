// RUN: xdsl-opt %s -p int8-activations | filecheck %s

func.func @main(%x: tensor<2x4x64xf32>, %p: !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5">) -> tensor<2x4x32xf32> {
  %y = quant3p5.matmul %x, %p : tensor<2x4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5"> -> tensor<2x4x32xf32>
  func.return %y : tensor<2x4x32xf32>
}

// CHECK:      func.func @main(%x: tensor<2x4x64xf32>, %p: !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5">) -> tensor<2x4x32xf32> {
// CHECK-NEXT:   %x_i8, %x_scale = quant3p5.quantize_activations %x : tensor<2x4x64xf32> -> tensor<2x4x64xi8>, tensor<2x4xf32>
// CHECK-NEXT:   %y = quant3p5.matmul_int8 %x_i8, %x_scale, %p : tensor<2x4x64xi8>, tensor<2x4xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5"> -> tensor<2x4x32xf32>
// CHECK-NEXT:   func.return %y : tensor<2x4x32xf32>
