// RUN: q35c %inputs/generic.onnx --passes '' | filecheck %s
// ONNX import of nodes that take the generic q35nn.onnx_node (Inputs/make_inputs.py):
// int32 Mod, a Cast to float16 and IsNaN keep their exact element types; the
// LayerNormalization over axis 0, which the dedicated converter refuses, is rolled back to
// one generic op (its gamma materialized once); Relu keeps its dedicated conversion.

// CHECK:      ^bb0(%a: tensor<6xi32>, %b: tensor<6xi32>, %x: tensor<2x4xf32>):
// CHECK-NEXT:   %0 = "q35nn.onnx_node"(%a, %b) {op_type = "Mod", opset = 18 : i64, attributes = {}} : (tensor<6xi32>, tensor<6xi32>) -> tensor<6xi32>
// CHECK-NEXT:   %1 = "q35nn.onnx_node"(%x) {op_type = "Cast", opset = 18 : i64, attributes = {to = 10 : i64}} : (tensor<2x4xf32>) -> tensor<2x4xf16>
// CHECK-NEXT:   %2 = "q35nn.onnx_node"(%x) {op_type = "IsNaN", opset = 18 : i64, attributes = {}} : (tensor<2x4xf32>) -> tensor<2x4xi1>
// CHECK-NEXT:   %3 = "arith.constant"() <{value = dense<5.000000e-01> : tensor<2x4xf32>}> : () -> tensor<2x4xf32>
// CHECK-NEXT:   %4 = "q35nn.onnx_node"(%x, %3) {op_type = "LayerNormalization", opset = 18 : i64, attributes = {axis = 0 : i64}} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
// CHECK:        "arith.maximumf"(%x,
// CHECK:        "func.return"(%0, %1, %2, %4, %{{.*}}) : (tensor<6xi32>, tensor<2x4xf16>, tensor<2x4xi1>, tensor<2x4xf32>, tensor<2x4xf32>) -> ()
