// RUN: xdsl-opt %s --split-input-file --verify-diagnostics | filecheck %s

func.func @reduction_mismatch(%x: tensor<4x48xf32>, %p: !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5">) -> tensor<4x32xf32> {
  %y = quant3p5.matmul %x, %p : tensor<4x48xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5"> -> tensor<4x32xf32>
  func.return %y : tensor<4x32xf32>
}
// CHECK: quant3p5.matmul: activation reduction dimension 48 does not match packed weight K=64

// -----

func.func @bad_group(%w: tensor<64x32xf32>) {
  %q = quant3p5.quantize %w : tensor<64x32xf32> -> !quant3p5.packed<[64 : i64, 32 : i64], 24 : i64, "q3p5">
  func.return
}
// CHECK: group size 24 must be a positive multiple of 16

// -----

func.func @legacy_group(%w: tensor<64x32xf32>) {
  %q = quant3p5.quantize %w : tensor<64x32xf32> -> !quant3p5.packed<[64 : i64, 32 : i64], 16 : i64, "pair43">
  func.return
}
// CHECK: the pair43 layout has one scale per column, so the group size must equal K=64, got 16

// -----

func.func @quantize_shape(%w: tensor<32x32xf32>) {
  %q = quant3p5.quantize %w : tensor<32x32xf32> -> !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5">
  func.return
}
// CHECK: quant3p5.quantize: input shape is (32, 32), expected (64, 32)

// -----

func.func @unpack_codes(%p: !quant3p5.packed<[63 : i64, 8 : i64], 16 : i64, "q3p5">) {
  %c, %s, %o = quant3p5.unpack %p : !quant3p5.packed<[63 : i64, 8 : i64], 16 : i64, "q3p5"> -> tensor<31x8xi8>, tensor<4x8xf32>, tensor<4x8xf32>
  func.return
}
// CHECK: quant3p5.unpack: codes shape is (31, 8), expected (32, 8)

// -----

func.func @int8_lhs(%x: tensor<4x64xf32>, %s: tensor<4xf32>, %p: !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5">) {
  %y = "quant3p5.matmul_int8"(%s, %s, %p) : (tensor<4xf32>, tensor<4xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5">) -> tensor<4x32xf32>
  func.return
}
// CHECK: operand 'lhs' at position 0 does not verify:
// CHECK-NEXT: f32 should be of base attribute integer_type

// -----

func.func @pack_q3p5(%c: tensor<32x32xi8>, %s: tensor<1x32xf32>) {
  %p = quant3p5.pack %c, %s, %s : tensor<32x32xi8>, tensor<1x32xf32>, tensor<1x32xf32> -> !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5">
  func.return
}
// CHECK: quant3p5.pack: builds only the pair43 layout, got "q3p5" (Q3P5 weights come from quant3p5.quantize)

// -----

func.func @gather_shape(%p: !quant3p5.packed<[64 : i64, 100 : i64], 32 : i64, "q3p5">, %ids: tensor<1x5xi64>) {
  %y = quant3p5.gather %p, %ids : !quant3p5.packed<[64 : i64, 100 : i64], 32 : i64, "q3p5">, tensor<1x5xi64> -> tensor<1x5x100xf32>
  func.return
}
// CHECK: quant3p5.gather: result shape is (1, 5, 100), expected (1, 5, 64)

// -----

func.func @gather_layout(%p: !quant3p5.packed<[64 : i64, 100 : i64], 64 : i64, "pair43">, %ids: tensor<3xi64>) {
  %y = quant3p5.gather %p, %ids : !quant3p5.packed<[64 : i64, 100 : i64], 64 : i64, "pair43">, tensor<3xi64> -> tensor<3x64xf32>
  func.return
}
// CHECK: quant3p5.gather: gathers from the q3p5 layout only, got "pair43" (pair43 tables have no row-gather kernel)

// -----

func.func @gather_indices(%p: !quant3p5.packed<[64 : i64, 100 : i64], 32 : i64, "q3p5">, %ids: tensor<3xf32>) {
  %y = "quant3p5.gather"(%p, %ids) : (!quant3p5.packed<[64 : i64, 100 : i64], 32 : i64, "q3p5">, tensor<3xf32>) -> tensor<3x64xf32>
  func.return
}
// CHECK: operand 'indices' at position 1 does not verify:
// CHECK-NEXT: f32 should be of base attribute integer_type
