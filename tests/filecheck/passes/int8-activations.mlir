// RUN: xdsl-opt %s -p int8-activations | filecheck %s

func.func @main(%x: tensor<2x4x64xf32>, %p: !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5">) -> tensor<2x4x32xf32> {
  %y = quant3p5.matmul %x, %p : tensor<2x4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5"> -> tensor<2x4x32xf32>
  func.return %y : tensor<2x4x32xf32>
}

// CHECK:      func.func @main(%x: tensor<2x4x64xf32>, %p: !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5">) -> tensor<2x4x32xf32> {
// CHECK-NEXT:   %x_i8, %x_scale = quant3p5.quantize_activations %x : tensor<2x4x64xf32> -> tensor<2x4x64xi8>, tensor<2x4xf32>
// CHECK-NEXT:   %y = quant3p5.matmul_int8 %x_i8, %x_scale, %p : tensor<2x4x64xi8>, tensor<2x4xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5"> -> tensor<2x4x32xf32>
// CHECK-NEXT:   func.return %y : tensor<2x4x32xf32>

// Matmuls that read the same input share one quantization.

func.func @shared(%x: tensor<4x64xf32>, %p: !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5">, %q: !quant3p5.packed<[64 : i64, 16 : i64], 32 : i64, "q3p5">) -> (tensor<4x32xf32>, tensor<4x16xf32>) {
  %a = quant3p5.matmul %x, %p : tensor<4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5"> -> tensor<4x32xf32>
  %b = quant3p5.matmul %x, %q : tensor<4x64xf32>, !quant3p5.packed<[64 : i64, 16 : i64], 32 : i64, "q3p5"> -> tensor<4x16xf32>
  func.return %a, %b : tensor<4x32xf32>, tensor<4x16xf32>
}

// CHECK:      func.func @shared(
// CHECK-NEXT:   %x_i8, %x_scale = quant3p5.quantize_activations %x
// CHECK-NEXT:   %a = quant3p5.matmul_int8 %x_i8, %x_scale, %p
// CHECK-NEXT:   %b = quant3p5.matmul_int8 %x_i8, %x_scale, %q
// CHECK-NEXT:   func.return %a, %b
