// RUN: q35c %s --passes 'quantize-weights{min-elements=64},fuse-dequant-matmul,fuse-matmul-bias-act,fuse-residual' | filecheck %s
// RUN: q35c %s --passes 'quantize-weights{min-elements=64},fuse-dequant-matmul,int8-activations' | filecheck %s --check-prefix=INT8
// The source location of a matmul (`q35c.onnx_node` from the ONNX importer, `q35c.source_line`
// from the Fortran frontend) survives the passes that replace it, so verify-overflow errors
// and the --report `source` column still name it (passes/matching.py: copy_origin).

func.func @main(%x: tensor<2x32xf32>, %r: tensor<2x4xf32>, %d: !quant3p5.packed<[32 : i64, 4 : i64], 32 : i64, "q3p5">) -> (tensor<2x4xf32>, tensor<2x4xf32>) {
  %w = arith.constant dense<0.5> : tensor<32x4xf32>
  %zero = arith.constant 0.000000e+00 : f32
  %e = tensor.empty() : tensor<2x4xf32>
  %init = linalg.fill ins(%zero : f32) outs(%e : tensor<2x4xf32>) -> tensor<2x4xf32>
  %m = linalg.matmul {q35c.onnx_node = "/mlp/down_proj/MatMul"} ins(%x, %w : tensor<2x32xf32>, tensor<32x4xf32>) outs(%init : tensor<2x4xf32>) -> tensor<2x4xf32>
  %y = arith.addf %r, %m : tensor<2x4xf32>
  %dw = quant3p5.dequantize %d : !quant3p5.packed<[32 : i64, 4 : i64], 32 : i64, "q3p5"> -> tensor<32x4xf32>
  %z = linalg.matmul {q35c.source_line = 7 : i64} ins(%x, %dw : tensor<2x32xf32>, tensor<32x4xf32>) outs(%init : tensor<2x4xf32>) -> tensor<2x4xf32>
  %zeros = arith.constant dense<0.000000e+00> : tensor<2x4xf32>
  %zr = arith.maximumf %z, %zeros : tensor<2x4xf32>
  func.return %y, %zr : tensor<2x4xf32>, tensor<2x4xf32>
}

// CHECK:      %y = "quant3p5.fused_matmul"(%x, %w, %r) {activation = "none", {{.*}}q35c.onnx_node = "/mlp/down_proj/MatMul"}
// CHECK:      %zr = "quant3p5.fused_matmul"(%x, %d) {activation = "relu", {{.*}}q35c.source_line = 7 : i64}

// INT8:       "quant3p5.quantize_activations"(%x)
// INT8-NEXT:  %m = "quant3p5.matmul_int8"({{.*}}) {q35c.onnx_node = "/mlp/down_proj/MatMul"}
// INT8:       %z = "quant3p5.matmul_int8"({{.*}}) {q35c.source_line = 7 : i64}
