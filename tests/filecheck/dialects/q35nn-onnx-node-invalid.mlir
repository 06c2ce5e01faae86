// RUN: xdsl-opt %s --split-input-file --verify-diagnostics | filecheck %s

func.func @unknown_op(%x: tensor<4xf32>) -> tensor<4xf32> {
  %y = q35nn.onnx_node "NoSuchOp"(%x) {attributes = {}, opset = 21 : i64} : (tensor<4xf32>) -> tensor<4xf32>
  func.return %y : tensor<4xf32>
}
// CHECK: q35nn.onnx_node: ONNX op type 'NoSuchOp' is not supported

// -----

func.func @random_op(%x: tensor<4xf32>) -> tensor<4xf32> {
  %y = q35nn.onnx_node "RandomUniformLike"(%x) {attributes = {}, opset = 21 : i64} : (tensor<4xf32>) -> tensor<4xf32>
  func.return %y : tensor<4xf32>
}
// CHECK: q35nn.onnx_node: ONNX op type 'RandomUniformLike' is not supported

// -----

func.func @dynamic(%x: tensor<?xf32>) -> tensor<?xf32> {
  %y = q35nn.onnx_node "Relu"(%x) {attributes = {}, opset = 21 : i64} : (tensor<?xf32>) -> tensor<?xf32>
  func.return %y : tensor<?xf32>
}
// CHECK: q35nn.onnx_node Relu: tensor<?xf32> is not static

// -----

func.func @slots(%x: tensor<4xf32>, %lo: tensor<f32>) -> tensor<4xf32> {
  %y = q35nn.onnx_node "Clip"(%x, %lo) {attributes = {}, opset = 21 : i64, input_slots = array<i64: 1, 0>} : (tensor<4xf32>, tensor<f32>) -> tensor<4xf32>
  func.return %y : tensor<4xf32>
}
// CHECK: q35nn.onnx_node Clip: input_slots [1, 0] must be 2 increasing positions
