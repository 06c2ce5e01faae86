// RUN: xdsl-opt %s -p fuse-matmul-bias-act | filecheck %s

func.func @main(%x: tensor<4x64xf32>, %p: !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5">, %b: tensor<32xf32>) -> (tensor<4x32xf32>, tensor<4x32xf32>) {
  %m = quant3p5.matmul %x, %p : tensor<4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5"> -> tensor<4x32xf32>
  %e = tensor.empty() : tensor<4x32xf32>
  %bb = linalg.broadcast ins(%b : tensor<32xf32>) outs(%e : tensor<4x32xf32>) dimensions = [0]
  %a = arith.addf %m, %bb : tensor<4x32xf32>
  %y = q35nn.gelu %a {approximate = "none"} : tensor<4x32xf32> -> tensor<4x32xf32>
  %m2 = quant3p5.matmul %x, %p : tensor<4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5"> -> tensor<4x32xf32>
  %zero = arith.constant dense<0.000000e+00> : tensor<4x32xf32>
  %relu = arith.maximumf %zero, %m2 : tensor<4x32xf32>
  func.return %y, %relu : tensor<4x32xf32>, tensor<4x32xf32>
}

// CHECK:      func.func @main
// CHECK-NEXT:   %y = quant3p5.fused_matmul %x, %p bias %b {activation = "gelu"} : tensor<4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5"> bias tensor<32xf32> -> tensor<4x32xf32>
// CHECK-NEXT:   %relu = quant3p5.fused_matmul %x, %p {activation = "relu"} : tensor<4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5"> -> tensor<4x32xf32>
// CHECK-NEXT:   func.return %y, %relu : tensor<4x32xf32>, tensor<4x32xf32>
