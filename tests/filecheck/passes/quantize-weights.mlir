// RUN: q35c %s --passes 'quantize-weights{min-elements=64 group-size=16}' | filecheck %s
// RUN: q35c %s --passes 'quantize-weights{min-elements=64 keep-float="^const$"}' | filecheck %s --check-prefix=KEEP
// RUN: q35c %s --passes 'quantize-weights{min-elements=64 layout="pair43"}' | filecheck %s --check-prefix=LEGACY
// The .mlir frontend externalizes the 32x4 constant as weight "const"; quantize-weights packs
// it, rewrites both matmuls (a 2-D linalg.matmul with a zero init, and a batched matmul with
// a non-zero accumulator becoming an addf) and quantizes the shared weight once. Each packed
// weight records the relative RMSE that quantization added (no q35c.source here: the weight
// was float in the input, so nothing is reported on stderr either).

func.func @main(%x: tensor<2x32xf32>, %xb: tensor<3x2x32xf32>, %acc: tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<3x2x4xf32>) {
  %w = arith.constant dense<"0x000080C000007CC0000078C0000074C0000070C000006CC0000068C0000064C0000060C000005CC0000058C0000054C0000050C000004CC0000048C0000044C0000040C000003CC0000038C0000034C0000030C000002CC0000028C0000024C0000020C000001CC0000018C0000014C0000010C000000CC0000008C0000004C0000000C00000F8BF0000F0BF0000E8BF0000E0BF0000D8BF0000D0BF0000C8BF0000C0BF0000B8BF0000B0BF0000A8BF0000A0BF000098BF000090BF000088BF000080BF000070BF000060BF000050BF000040BF000030BF000020BF000010BF000000BF0000E0BE0000C0BE0000A0BE000080BE000040BE000000BE000080BD000000000000803D0000003E0000403E0000803E0000A03E0000C03E0000E03E0000003F0000103F0000203F0000303F0000403F0000503F0000603F0000703F0000803F0000883F0000903F0000983F0000A03F0000A83F0000B03F0000B83F0000C03F0000C83F0000D03F0000D83F0000E03F0000E83F0000F03F0000F83F00000040000004400000084000000C4000001040000014400000184000001C4000002040000024400000284000002C4000003040000034400000384000003C4000004040000044400000484000004C4000005040000054400000584000005C4000006040000064400000684000006C4000007040000074400000784000007C40"> : tensor<32x4xf32>
  %y = linalg.matmul ins(%x, %w : tensor<2x32xf32>, tensor<32x4xf32>) outs(%acc : tensor<2x4xf32>) -> tensor<2x4xf32>
  %yb = q35nn.batch_matmul %xb, %w : tensor<3x2x32xf32>, tensor<32x4xf32> -> tensor<3x2x4xf32>
  func.return %y, %yb : tensor<2x4xf32>, tensor<3x2x4xf32>
}

// CHECK:      %[[W:.*]] = "quant3p5.weight"() {name = "const.q3p5", q35c.rel_rmse = [[ERR:[0-9.]+(e-0[1-3])?]] : f32} : () -> !quant3p5.packed<[32 : i64, 4 : i64], 16 : i64, "q3p5">
// CHECK-NEXT: %[[M:.*]] = "quant3p5.matmul"(%{{.*}}, %[[W]]) : (tensor<2x32xf32>, !quant3p5.packed<[32 : i64, 4 : i64], 16 : i64, "q3p5">) -> tensor<2x4xf32>
// CHECK-NEXT: %{{.*}} = "arith.addf"(%[[M]], %{{.*}}) <{fastmath = #arith.fastmath<none>}> : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
// CHECK-NEXT: %[[W2:.*]] = "quant3p5.weight"() {name = "const.q3p5", q35c.rel_rmse = [[ERR]] : f32} : () -> !quant3p5.packed<[32 : i64, 4 : i64], 16 : i64, "q3p5">
// CHECK-NEXT: %{{.*}} = "quant3p5.matmul"(%{{.*}}, %[[W2]]) : (tensor<3x2x32xf32>, !quant3p5.packed<[32 : i64, 4 : i64], 16 : i64, "q3p5">) -> tensor<3x2x4xf32>
// CHECK-NOT:  linalg.matmul
// CHECK-NOT:  q35nn.batch_matmul

// KEEP:       "linalg.matmul"
// KEEP:       "q35nn.batch_matmul"
// KEEP-NOT:   quant3p5.matmul

// LEGACY:     "quant3p5.weight"() {name = "const.pair43", q35c.rel_rmse = {{[0-9.]+(e-0[1-3])?}} : f32} : () -> !quant3p5.packed<[32 : i64, 4 : i64], 32 : i64, "pair43">
