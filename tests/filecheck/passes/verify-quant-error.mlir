// RUN: q35c %s --passes 'quantize-weights{min-elements=64 group-size=16},verify-quant-error{arg-range=1.0 column-bounds=true}' | filecheck %s
// RUN: q35c %s --passes 'quantize-weights{min-elements=64 group-size=16},int8-activations,verify-overflow,verify-quant-error{arg-range=1.0}' | filecheck %s --check-prefix=INT8
// RUN: q35c %s --passes 'quantize-weights{min-elements=64 group-size=16},verify-quant-error' | filecheck %s --check-prefix=UNBOUNDED
// RUN: q35c %s --passes 'quantize-weights{min-elements=64 group-size=16},verify-quant-error{arg-range=1.0}' --report -o %t | filecheck %s --check-prefix=REPORT

// x @ W with |x| <= 1 (arg-range): the pass records, on the quantized matmul, the proven input
// range, the worst-case error bound over all output elements (and per column with
// column-bounds), the RMS estimate and which error sources the bound covers.
func.func @main(%x: tensor<2x32xf32> {q35c.name = "x"}) -> tensor<2x4xf32> {
  %w = "arith.constant"() <{value = dense<[[-0.401, -0.662, -0.124, 0.210], [0.568, 0.055, -0.276, -0.392], [0.374, 0.817, 0.136, -0.617], [-0.479, 0.800, 0.101, -0.866], [-0.042, -0.582, -0.315, -0.244], [-0.357, 0.277, -0.032, -0.295], [0.205, 0.415, -0.822, -0.128], [-0.490, -0.087, -0.645, 0.010], [-0.019, -0.152, -0.524, -0.198], [-0.546, -0.678, 0.112, -0.555], [0.585, 0.358, -0.999, 0.136], [-0.551, 0.017, 0.022, -0.994], [-0.117, -0.128, 0.481, -0.591], [0.369, -0.549, -0.166, -0.420], [0.724, 0.284, 1.216, 0.321], [0.422, 0.420, -0.303, -0.035], [0.675, -0.198, 0.094, -0.011], [0.305, -0.182, -0.076, 0.121], [0.052, -0.432, 0.448, -0.649], [-0.601, -0.641, 0.483, -0.180], [-0.486, -0.568, 0.211, -0.527], [-0.636, 0.307, -0.598, -0.161], [-0.003, -0.223, -0.027, 0.669], [-0.258, -0.630, -0.918, -0.102], [-0.176, 0.133, -0.232, -0.239], [-0.361, -0.260, 0.080, -0.190], [0.050, 0.951, 0.240, -0.788], [0.867, 0.174, -0.471, 0.454], [0.009, -0.308, -0.317, -0.497], [0.024, 0.534, -0.163, 0.210], [0.938, -0.607, 0.129, -0.153], [-0.530, -0.513, -0.008, 0.217]]> : tensor<32x4xf32>}> {q35c.name = "proj"} : () -> tensor<32x4xf32>
  %y = q35nn.batch_matmul %x, %w : tensor<2x32xf32>, tensor<32x4xf32> -> tensor<2x4xf32>
  func.return %y : tensor<2x4xf32>
}

// CHECK:      "quant3p5.matmul"(%{{.*}}, %{{.*}}) {q35c.err_parts = "weights+rounding", q35c.input_absmax = 1.000000e+00 : f32, q35c.err_bound = {{[0-9.e+-]+}} : f32, q35c.err_rms = {{[0-9.e+-]+}} : f32, q35c.err_bound_cols = dense<[{{[0-9.e+-]+}}, {{[0-9.e+-]+}}, {{[0-9.e+-]+}}, {{[0-9.e+-]+}}]> : tensor<4xf32>}

// INT8:      "quant3p5.quantize_activations"(%x) {q35c.int_range = array<i64: -127, 127>}
// INT8-NEXT: "quant3p5.matmul_int8"({{.*}}) {q35c.acc_bound = {{[0-9]+}} : i64, q35c.sx_bound = 2032 : i64, q35c.err_parts = "weights+int8+rounding", q35c.input_absmax = {{.*}}, q35c.err_bound = {{.*}}, q35c.err_rms = {{.*}}}

// An unbounded float input: nothing is claimed.
// UNBOUNDED: "quant3p5.matmul"(%{{.*}}, %{{.*}}) {q35c.err_parts = "input range unbounded"}

// REPORT:      layer  op      K x N   |x| <=  err bound  err rms  parts             acc bound  int32 use
// REPORT-NEXT: -----
// REPORT-NEXT: proj   matmul  32 x 4  1       {{[0-9.]+}}  {{ +}}{{[0-9.]+}}  {{ +}}weights+rounding  -          -
