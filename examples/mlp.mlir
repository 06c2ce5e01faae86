// The bundled example: a small MLP block (RMSNorm, two quantizable matmuls, SiLU, softmax).
// Weights are named here and live in mlp.q35w, written by `python examples/make_mlp.py`.
// `q35c examples/mlp.mlir --target mlir` packs fc1 and fc2 into Q3P5 (quantize-weights).
builtin.module attributes {quant3p5.weights = "mlp.q35w"} {
  func.func @main(%x: tensor<4x128xf32> {q35c.name = "x"}) -> (tensor<4x32xf32> {q35c.name = "probs"}) {
    %norm = quant3p5.weight "norm.weight" : tensor<128xf32>
    %h0 = q35nn.rms_norm %x, %norm {epsilon = 1.0e-06 : f32} : tensor<4x128xf32>, tensor<128xf32> -> tensor<4x128xf32>
    %zero = arith.constant 0.000000e+00 : f32

    %w1 = quant3p5.weight "fc1.weight" : tensor<128x64xf32>
    %e1 = tensor.empty() : tensor<4x64xf32>
    %a1 = linalg.fill ins(%zero : f32) outs(%e1 : tensor<4x64xf32>) -> tensor<4x64xf32>
    %h1 = linalg.matmul ins(%h0, %w1 : tensor<4x128xf32>, tensor<128x64xf32>) outs(%a1 : tensor<4x64xf32>) -> tensor<4x64xf32>
    %b1 = quant3p5.weight "fc1.bias" : tensor<64xf32>
    %bb = linalg.broadcast ins(%b1 : tensor<64xf32>) outs(%e1 : tensor<4x64xf32>) dimensions = [0]
    %h2 = arith.addf %h1, %bb : tensor<4x64xf32>
    %h3 = q35nn.silu %h2 : tensor<4x64xf32> -> tensor<4x64xf32>

    %w2 = quant3p5.weight "fc2.weight" : tensor<64x32xf32>
    %e2 = tensor.empty() : tensor<4x32xf32>
    %a2 = linalg.fill ins(%zero : f32) outs(%e2 : tensor<4x32xf32>) -> tensor<4x32xf32>
    %logits = linalg.matmul ins(%h3, %w2 : tensor<4x64xf32>, tensor<64x32xf32>) outs(%a2 : tensor<4x32xf32>) -> tensor<4x32xf32>
    %probs = q35nn.softmax %logits {axis = -1 : i64} : tensor<4x32xf32> -> tensor<4x32xf32>
    func.return %probs : tensor<4x32xf32>
  }
}
