"""Native rules for ONNX's linear quantization ops: QuantizeLinear and DequantizeLinear,
per tensor, per axis and blocked, to and from every quantized type (8- and 16-bit
integers, int4 / uint4 / int2 / uint2, the float8s, float4 e2m1).

Each is one elementwise step over the data; the scale and zero point are indexed by the
element's position (one value, one per index along `axis`, or one per block of
`block_size` along `axis`). The numerics are in targets/c/onnx_quant.py: the step carries
the numpy types the reference computes in (`x / scale`, `x - zero_point`, `* scale`), so the
renderer rounds where numpy does.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from q35c.targets.native.onnx_node import lowers
from q35c.targets.native.onnx_tensor import (
    _error,
    _ins,
    _results,
    _step,
    attributes,
    broadcast_strides,
    operands,
)

FLOAT4 = np.dtype(ml_dtypes.float4_e2m1fn)


def _index_params(x_shape: tuple[int, ...], scale_shape: tuple[int, ...], axis: int,
                  block: int) -> dict:
    """How element i of the data finds its scale: [outer, dim, inner] around `axis`, and
    the block size along it (0: one scale per index; the scale a single value: dim 1)."""
    size = int(np.prod(scale_shape, dtype=np.int64))
    if size == 1 or not x_shape:
        return {"mode": "tensor"}
    axis %= len(x_shape)
    dim = x_shape[axis]
    inner = int(np.prod(x_shape[axis + 1:], dtype=np.int64))
    if not block:
        return {"mode": "axis", "dim": dim, "inner": inner}
    return {"mode": "block", "dim": dim, "inner": inner, "block": block,
            "blocks": scale_shape[axis]}


@lowers("QuantizeLinear", "DequantizeLinear")
def lower_quant(lowering, op) -> None:
    attrs = attributes(op)
    given = operands(op)
    x, scale = _ins(lowering, op, [given[0], given[1]])
    zero = _ins(lowering, op, [given[2]]) if 2 in given else []
    [out] = _results(lowering, op)
    block = int(attrs.get("block_size", 0) or 0)
    axis = int(attrs.get("axis", 1))
    if block and len(scale.shape) != len(x.shape):
        raise _error(lowering, op, "a blocked scale must have the data's rank")
    params = _index_params(x.shape, scale.shape, axis, block)
    quantize = op.op_type.data == "QuantizeLinear"
    if quantize:
        precision = attrs.get("precision")
        if precision:
            from onnx.helper import tensor_dtype_to_np_dtype
            div = np.dtype(tensor_dtype_to_np_dtype(precision))
        else:
            div = np.result_type(x.dtype, scale.dtype)
        params.update(div=str(div), saturate=bool(attrs.get("saturate", 1)))
        if zero and out.dtype == FLOAT4:  # float4 adds its zero point; float8s ignore it
            params["add"] = str(np.result_type(div, zero[0].dtype))
    else:
        low = np.dtype(np.float32)
        if zero and _is_plain(x.dtype):
            low = np.result_type(np.float32, zero[0].dtype)
        params.update(sub=str(low), mul=str(np.result_type(low, scale.dtype)),
                      subtract=bool(zero) and _is_plain(x.dtype),
                      zero_check=bool(zero) and str(x.dtype).startswith("float8"))
    params["op"] = op.op_type.data
    _step(lowering, op, "onnx_quant", [out], [x, scale, *zero], params)


def _is_plain(dtype: np.dtype) -> bool:
    """Whether DequantizeLinear subtracts the zero point from data of `dtype` (the
    integers; float8 and float4 data have a zero point of zero, checked)."""
    return np.dtype(dtype).kind in "iu" or str(dtype) in ("int4", "uint4", "int2", "uint2")


def _matmul_int(lowering, op, a, b, azp, bzp, out) -> None:
    """out (int32) = (a - azp) @ (b - bzp), numpy's matmul of int32 operands (wrapping),
    batch axes broadcast; the zero points broadcast to their operand (numpy's rules, as
    the reference subtracts them)."""
    if len(a.shape) < 2 or len(b.shape) < 2:
        raise _error(lowering, op, "operands of rank 1 are not supported")
    batch = out.shape[:-2]
    m, k = a.shape[-2:]
    n = b.shape[-1]
    params = {"batch": list(batch), "m": m, "k": k, "n": n,
              "a_batch": [s * m * k for s in broadcast_strides(a.shape[:-2], batch)],
              "b_batch": [s * k * n for s in broadcast_strides(b.shape[:-2], batch)],
              "a_shape": list(a.shape), "b_shape": list(b.shape), "zero": []}
    zeros = []
    for slot, (zp, operand) in enumerate(((azp, a), (bzp, b))):
        if zp is not None:
            params["zero"].append([slot, broadcast_strides(zp.shape, operand.shape)])
            zeros.append(zp)
    _step(lowering, op, "onnx_matmul_int", [out], [a, b, *zeros], params)


@lowers("MatMulInteger")
def lower_matmul_integer(lowering, op) -> None:
    given = operands(op)
    a, b = _ins(lowering, op, [given[0], given[1]])
    azp = _ins(lowering, op, [given[2]])[0] if 2 in given else None
    bzp = _ins(lowering, op, [given[3]])[0] if 3 in given else None
    [out] = _results(lowering, op)
    _matmul_int(lowering, op, a, b, azp, bzp, out)


@lowers("QLinearMatMul")
def lower_qlinear_matmul(lowering, op) -> None:
    """The int32 product of the zero-point-shifted operands, then times
    `a_scale * b_scale / y_scale` (numpy's types) in float64, plus the output zero
    point, rounded and clipped to the output's type."""
    given = operands(op)
    a, a_scale, azp, b, b_scale, bzp, y_scale = _ins(
        lowering, op, [given[s] for s in range(7)])
    yzp = _ins(lowering, op, [given[7]])[0] if 7 in given else None
    [out] = _results(lowering, op)
    product = lowering.new("arena", np.dtype(np.int32), out.shape, "qlinear")
    _matmul_int(lowering, op, a, b, azp, bzp, product)
    ab = np.result_type(a_scale.dtype, b_scale.dtype)
    scales = [a_scale, b_scale, y_scale, *([yzp] if yzp is not None else [])]
    _step(lowering, op, "onnx_qlinear_out", [out], [product, *scales], {
        "ab": str(ab), "mult": str(np.result_type(ab, y_scale.dtype)),
        "strides": [broadcast_strides(s.shape, out.shape) for s in scales]})


@lowers("DynamicQuantizeLinear")
def lower_dynamic_quantize(lowering, op) -> None:
    """uint8 quantization of the data with its own range (extended to 0): scale
    (max - min) / 255 and a zero point, computed at run time as the reference does."""
    [x] = _ins(lowering, op, op.inputs[:1])
    outs = _results(lowering, op)
    if x.dtype != np.float32:
        raise _error(lowering, op, f"data of type {x.dtype} is not supported (float32)")
    _step(lowering, op, "onnx_dynamic_quant", outs, [x], {})
