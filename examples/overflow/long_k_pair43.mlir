// A crafted int32 overflow (issue 7): a legacy pair43 kernel whose reduction is so long
// that int8 activations times 4-bit levels overflow the int32 group accumulator.
// The pair bytes, scale and offset arrive at run time, as Fortran kernels receive them.
// K = 2 * 1127289: byte 68 decodes to levels (-8, -7), so q = -127 everywhere gives
// acc = 127 * 15 * 1127289 = 2147485545 > 2^31 - 1. One pair fewer (K = 2254576) is safe.
//
//   q35c examples/overflow/long_k_pair43.mlir        fails in verify-overflow with a witness
//   q35c examples/overflow/long_k_pair43.mlir --passes 'verify-overflow{witness-dir=w}'
//                                                    ...and writes it to w/<input>.npy
func.func @main(%x: tensor<1x2254578xf32> {q35c.name = "x"},
                %codes: tensor<1127289x1xi8> {q35c.name = "codes"},
                %scale: tensor<1xf32> {q35c.name = "scale"},
                %offset: tensor<1xf32> {q35c.name = "offset"}) -> (tensor<1x1xf32> {q35c.name = "y"}) {
  %w = quant3p5.pack %codes, %scale, %offset : tensor<1127289x1xi8>, tensor<1xf32>, tensor<1xf32> -> !quant3p5.packed<[2254578 : i64, 1 : i64], 2254578 : i64, "pair43">
  %x_i8, %x_scale = quant3p5.quantize_activations %x : tensor<1x2254578xf32> -> tensor<1x2254578xi8>, tensor<1xf32>
  %y = quant3p5.matmul_int8 %x_i8, %x_scale, %w : tensor<1x2254578xi8>, tensor<1xf32>, !quant3p5.packed<[2254578 : i64, 1 : i64], 2254578 : i64, "pair43"> -> tensor<1x1xf32>
  func.return %y : tensor<1x1xf32>
}
