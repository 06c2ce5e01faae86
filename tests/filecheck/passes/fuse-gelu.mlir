// RUN: q35c %inputs/gelu.onnx --passes '' | filecheck %s --check-prefix=BEFORE
// RUN: q35c %inputs/gelu.onnx --passes fuse-gelu | filecheck %s
// GELU as x * 0.5 * (1 + erf(x / sqrt(2))), twice, with the factors in different orders
// (Inputs/make_inputs.py).

// BEFORE-COUNT-2: "math.erf"

// CHECK:      ^bb0(%x: tensor<2x8xf32>):
// CHECK-NEXT:   %[[A:.*]] = "q35nn.gelu"(%x) {approximate = "none"} : (tensor<2x8xf32>) -> tensor<2x8xf32>
// CHECK-NEXT:   %[[B:.*]] = "q35nn.gelu"(%x) {approximate = "none"} : (tensor<2x8xf32>) -> tensor<2x8xf32>
// CHECK-NEXT:   "func.return"(%[[A]], %[[B]])
