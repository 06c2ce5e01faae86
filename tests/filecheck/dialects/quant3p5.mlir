// RUN: xdsl-opt %s | filecheck %s
// RUN: xdsl-opt %s --print-op-generic | xdsl-opt | filecheck %s
// RUN: xdsl-opt %s --print-op-generic | filecheck %s --check-prefix=GENERIC

builtin.module {
  func.func @ops(%x: tensor<4x64xf32>, %w: tensor<64x32xf32>, %c: tensor<32x32xi8>, %s: tensor<32xf32>, %o: tensor<32xf32>) -> tensor<4x32xf32> {
    %p = quant3p5.weight "fc.weight.q3p5" : !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5">
    %q = quant3p5.quantize %w : tensor<64x32xf32> -> !quant3p5.packed<[64 : i64, 32 : i64], 16 : i64, "q3p5">
    %d = quant3p5.dequantize %q : !quant3p5.packed<[64 : i64, 32 : i64], 16 : i64, "q3p5"> -> tensor<64x32xf32>
    %codes, %scales, %offsets = quant3p5.unpack %p : !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5"> -> tensor<32x32xi8>, tensor<1x32xf32>, tensor<1x32xf32>
    %legacy = quant3p5.pack %c, %s, %o : tensor<32x32xi8>, tensor<32xf32>, tensor<32xf32> -> !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "pair43">
    %y = quant3p5.matmul %x, %p : tensor<4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5"> -> tensor<4x32xf32>
    %xq, %xs = quant3p5.quantize_activations %x : tensor<4x64xf32> -> tensor<4x64xi8>, tensor<4xf32>
    %z = quant3p5.matmul_int8 %xq, %xs, %legacy : tensor<4x64xi8>, tensor<4xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "pair43"> -> tensor<4x32xf32>
    func.return %z : tensor<4x32xf32>
  }
  func.func @gather(%ids: tensor<1x5xi64>) -> tensor<1x5x64xf32> {
    %t = quant3p5.weight "embed.weight.T.q3p5" : !quant3p5.packed<[64 : i64, 100 : i64], 32 : i64, "q3p5">
    %e = quant3p5.gather %t, %ids : !quant3p5.packed<[64 : i64, 100 : i64], 32 : i64, "q3p5">, tensor<1x5xi64> -> tensor<1x5x64xf32>
    func.return %e : tensor<1x5x64xf32>
  }
}

// CHECK:      %p = quant3p5.weight "fc.weight.q3p5" : !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5">
// CHECK-NEXT: %q = quant3p5.quantize %w : tensor<64x32xf32> -> !quant3p5.packed<[64 : i64, 32 : i64], 16 : i64, "q3p5">
// CHECK-NEXT: %d = quant3p5.dequantize %q : !quant3p5.packed<[64 : i64, 32 : i64], 16 : i64, "q3p5"> -> tensor<64x32xf32>
// CHECK-NEXT: %codes, %scales, %offsets = quant3p5.unpack %p : !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5"> -> tensor<32x32xi8>, tensor<1x32xf32>, tensor<1x32xf32>
// CHECK-NEXT: %legacy = quant3p5.pack %c, %s, %o : tensor<32x32xi8>, tensor<32xf32>, tensor<32xf32> -> !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "pair43">
// CHECK-NEXT: %y = quant3p5.matmul %x, %p : tensor<4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5"> -> tensor<4x32xf32>
// CHECK-NEXT: %xq, %xs = quant3p5.quantize_activations %x : tensor<4x64xf32> -> tensor<4x64xi8>, tensor<4xf32>
// CHECK-NEXT: %z = quant3p5.matmul_int8 %xq, %xs, %legacy : tensor<4x64xi8>, tensor<4xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "pair43"> -> tensor<4x32xf32>
// CHECK:      %e = quant3p5.gather %t, %ids : !quant3p5.packed<[64 : i64, 100 : i64], 32 : i64, "q3p5">, tensor<1x5xi64> -> tensor<1x5x64xf32>

// GENERIC:      "quant3p5.weight"() {name = "fc.weight.q3p5"} : () -> !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5">
// GENERIC:      "quant3p5.matmul_int8"(%xq, %xs, %legacy) : (tensor<4x64xi8>, tensor<4xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "pair43">) -> tensor<4x32xf32>
// GENERIC:      "quant3p5.gather"(%t, %ids) : (!quant3p5.packed<[64 : i64, 100 : i64], 32 : i64, "q3p5">, tensor<1x5xi64>) -> tensor<1x5x64xf32>
