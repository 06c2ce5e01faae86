// RUN: xdsl-opt %s -p fuse-swiglu | filecheck %s

func.func @main(%g: tensor<4x32xf32>, %u: tensor<4x32xf32>) -> (tensor<4x32xf32>, tensor<4x32xf32>) {
  %one = arith.constant dense<1.000000e+00> : tensor<4x32xf32>
  %n = arith.negf %g : tensor<4x32xf32>
  %e = math.exp %n : tensor<4x32xf32>
  %d = arith.addf %one, %e : tensor<4x32xf32>
  %sig = arith.divf %one, %d : tensor<4x32xf32>
  %silu = arith.mulf %g, %sig : tensor<4x32xf32>
  %y = arith.mulf %silu, %u : tensor<4x32xf32>
  %s2 = q35nn.silu %g : tensor<4x32xf32> -> tensor<4x32xf32>
  %z = arith.mulf %u, %s2 : tensor<4x32xf32>
  func.return %y, %z : tensor<4x32xf32>, tensor<4x32xf32>
}

// CHECK:      func.func @main
// CHECK-NEXT:   %y = q35nn.swiglu %g, %u : tensor<4x32xf32>, tensor<4x32xf32> -> tensor<4x32xf32>
// CHECK-NEXT:   %z = q35nn.swiglu %g, %u : tensor<4x32xf32>, tensor<4x32xf32> -> tensor<4x32xf32>
// CHECK-NEXT:   func.return %y, %z : tensor<4x32xf32>, tensor<4x32xf32>
