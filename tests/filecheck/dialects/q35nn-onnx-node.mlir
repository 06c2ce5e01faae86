// RUN: xdsl-opt %s | filecheck %s
// RUN: xdsl-opt %s --print-op-generic | xdsl-opt | filecheck %s
// q35nn.onnx_node: one ONNX node (op type, opset, attributes) on tensors of exact element
// types; input_slots gives the ONNX input position of each operand when an optional input
// is omitted (Clip without min).

builtin.module {
  func.func @ops(%a: tensor<6xi32>, %b: tensor<6xi32>, %x: tensor<2x3xf16>, %k: tensor<1xi64>, %hi: tensor<f16>, %u: tensor<4xui8>) -> tensor<6xi32> {
    %m = q35nn.onnx_node "Mod"(%a, %b) {attributes = {fmod = 0 : i64}, opset = 21 : i64} : (tensor<6xi32>, tensor<6xi32>) -> tensor<6xi32>
    %v, %i = q35nn.onnx_node "TopK"(%x, %k) {attributes = {axis = -1 : i64, largest = 1 : i64}, opset = 21 : i64} : (tensor<2x3xf16>, tensor<1xi64>) -> (tensor<2x1xf16>, tensor<2x1xi64>)
    %c = q35nn.onnx_node "Clip"(%x, %hi) {attributes = {}, opset = 21 : i64, input_slots = array<i64: 0, 2>} : (tensor<2x3xf16>, tensor<f16>) -> tensor<2x3xf16>
    %s = q35nn.onnx_node "BitShift"(%u, %u) {attributes = {direction = "LEFT"}, opset = 21 : i64} : (tensor<4xui8>, tensor<4xui8>) -> tensor<4xui8>
    %r = q35nn.onnx_node "Resize"(%x) {attributes = {mode = "nearest", scales = [1.000000e+00 : f32, 2.000000e+00 : f32]}, opset = 10 : i64} : (tensor<2x3xf16>) -> tensor<2x6xf16>
    func.return %m : tensor<6xi32>
  }
}

// CHECK:      %m = q35nn.onnx_node "Mod"(%a, %b) {attributes = {fmod = 0 : i64}, opset = 21 : i64} : (tensor<6xi32>, tensor<6xi32>) -> tensor<6xi32>
// CHECK-NEXT: %v, %i = q35nn.onnx_node "TopK"(%x, %k) {attributes = {axis = -1 : i64, largest = 1 : i64}, opset = 21 : i64} : (tensor<2x3xf16>, tensor<1xi64>) -> (tensor<2x1xf16>, tensor<2x1xi64>)
// CHECK-NEXT: %c = q35nn.onnx_node "Clip"(%x, %hi) {attributes = {}, opset = 21 : i64, input_slots = array<i64: 0, 2>} : (tensor<2x3xf16>, tensor<f16>) -> tensor<2x3xf16>
// CHECK-NEXT: %s = q35nn.onnx_node "BitShift"(%u, %u) {attributes = {direction = "LEFT"}, opset = 21 : i64} : (tensor<4xui8>, tensor<4xui8>) -> tensor<4xui8>
// CHECK-NEXT: %r = q35nn.onnx_node "Resize"(%x) {attributes = {mode = "nearest", scales = [1.000000e+00 : f32, 2.000000e+00 : f32]}, opset = 10 : i64} : (tensor<2x3xf16>) -> tensor<2x6xf16>
