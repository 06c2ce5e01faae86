// RUN: xdsl-opt %s -p fuse-residual | filecheck %s

func.func @main(%x: tensor<4x64xf32>, %p: !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5">, %b: tensor<32xf32>, %r: tensor<4x32xf32>) -> (tensor<4x32xf32>, tensor<4x32xf32>) {
  %m = quant3p5.matmul %x, %p : tensor<4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5"> -> tensor<4x32xf32>
  %y = arith.addf %r, %m : tensor<4x32xf32>
  %f = quant3p5.fused_matmul %x, %p bias %b {activation = "silu"} : tensor<4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5"> bias tensor<32xf32> -> tensor<4x32xf32>
  %z = arith.addf %f, %y : tensor<4x32xf32>
  func.return %y, %z : tensor<4x32xf32>, tensor<4x32xf32>
}

// CHECK:      func.func @main
// CHECK-NEXT:   %y = quant3p5.fused_matmul %x, %p residual %r {activation = "none"} : tensor<4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5"> residual tensor<4x32xf32> -> tensor<4x32xf32>
// CHECK-NEXT:   %z = quant3p5.fused_matmul %x, %p bias %b residual %y {activation = "silu"} : tensor<4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5"> bias tensor<32xf32> residual tensor<4x32xf32> -> tensor<4x32xf32>
