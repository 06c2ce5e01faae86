// RUN: xdsl-opt %s -p 'verify-overflow{arg-ranges="n=-300:300"}' | filecheck %s
// RUN: not q35c %s --passes 'verify-overflow{check-arith=true}' 2>&1 | filecheck %s --check-prefix=WIDE
// RUN: q35c %s --passes verify-overflow | filecheck %s --check-prefix=WRAP
// RUN: not q35c %S/../../../examples/overflow/long_k_pair43.mlir 2>&1 | filecheck %s --check-prefix=CRAFTED

// A pair43 kernel of K = 64 with run-time codes: every level is at most 8 (even k) or 7 (odd
// k), so quantized activations (|q| <= 127) give |acc| <= 127 * 15 * 32 = 60960; raw i8
// activations (-128..127) give 128 * 15 * 32 = 61440.
func.func @main(%x: tensor<3x64xf32>, %codes: tensor<32x2xi8>, %s: tensor<2xf32>, %o: tensor<2xf32>, %raw: tensor<3x64xi8>, %rs: tensor<3xf32>, %n: tensor<4xi32>) -> (tensor<3x2xf32>, tensor<3x2xf32>, tensor<4xi32>) {
  %w = quant3p5.pack %codes, %s, %o : tensor<32x2xi8>, tensor<2xf32>, tensor<2xf32> -> !quant3p5.packed<[64 : i64, 2 : i64], 64 : i64, "pair43">
  %q, %qs = quant3p5.quantize_activations %x : tensor<3x64xf32> -> tensor<3x64xi8>, tensor<3xf32>
  %y = quant3p5.matmul_int8 %q, %qs, %w : tensor<3x64xi8>, tensor<3xf32>, !quant3p5.packed<[64 : i64, 2 : i64], 64 : i64, "pair43"> -> tensor<3x2xf32>
  %y2 = quant3p5.matmul_int8 %raw, %rs, %w : tensor<3x64xi8>, tensor<3xf32>, !quant3p5.packed<[64 : i64, 2 : i64], 64 : i64, "pair43"> -> tensor<3x2xf32>
  %sq = arith.muli %n, %n : tensor<4xi32>
  func.return %y, %y2, %sq : tensor<3x2xf32>, tensor<3x2xf32>, tensor<4xi32>
}

// CHECK:      %q, %qs = quant3p5.quantize_activations %x {q35c.int_range = array<i64: -127, 127>}
// CHECK-NEXT: %y = quant3p5.matmul_int8 %q, %qs, %w {q35c.acc_bound = 60960 : i64, q35c.sx_bound = 8128 : i64}
// CHECK-NEXT: %y2 = quant3p5.matmul_int8 %raw, %rs, %w {q35c.acc_bound = 61440 : i64, q35c.sx_bound = 8192 : i64}
// CHECK-NEXT: %sq = arith.muli %n, %n {q35c.int_range = array<i64: 0, 90000>} : tensor<4xi32>

// By default plain arith ops wrap (MLIR semantics): the square gets the whole i32 range.
// WRAP: "arith.muli"(%n, %n) <{{.*}}> {q35c.may_wrap, q35c.int_range = array<i64: -2147483648, 2147483647>}

// With check-arith=true and no declared range, %n * %n can leave i32; the witness says how:
// WIDE: q35c: error: verify-overflow: arith.muli %sq can leave i32: its range is [0, 4611686018427387904] for operands %n in [-2147483648, 2147483647], %n in [-2147483648, 2147483647]; witness: arg6 = -2147483648 everywhere [4] (other inputs 0)

// The crafted overflow (examples/overflow): the op, where, the exact extreme, and a witness.
// CRAFTED: q35c: error: verify-overflow: quant3p5.matmul_int8 (quant3p5.pack of %codes, result %y) can overflow its int32 accumulator: group 0 of column 0 reaches 2147485545 > 2147483647; witness: q[0, 0:2254578] = -127, codes = 68 (levels (-8, -7)) everywhere; inputs: x = -127.0 everywhere [1, 2254578], codes = 68 everywhere [1127289, 1], scale = 1.0 everywhere [1], offset = 1.0 everywhere [1]
