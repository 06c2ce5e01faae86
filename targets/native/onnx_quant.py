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


def _conv_int(lowering, op, x, w, xzp, wzp, bias, out) -> None:
    """out (int32) = the convolution of (x - xzp) and (w - wzp) (a scalar zero point, or
    one per output channel for w), plus an int32 bias; the geometry as Conv's
    (targets/native/onnx_cnn.py)."""
    from q35c.targets.native.onnx_cnn import Node, _pads, spatial

    node = Node(lowering, op)
    rank = len(x.shape) - 2
    kernel = list(node.attr("kernel_shape", w.shape[2:]))
    strides = list(node.attr("strides", [1] * rank))
    dilations = list(node.attr("dilations", [1] * rank))
    y_shape = out.shape
    total = [(o - 1) * s + (k - 1) * d + 1 - i for o, s, k, d, i in
             zip(y_shape[2:], strides, kernel, dilations, x.shape[2:])]
    pads = _pads(node, rank, total)
    group = int(node.attr("group", 1))
    for zp, what in ((xzp, "x"), (wzp, "w")):
        if zp is not None and zp.size != 1 and (what == "x" or zp.size != w.shape[0]):
            raise _error(lowering, op, f"the {what} zero point must be a scalar"
                                       + (" or one per output channel" if what == "w" else ""))
    q = [x.shape[0], x.shape[1], w.shape[0], group,
         *spatial(node, x.shape[2:], y_shape[2:], kernel, strides, pads[:rank], dilations)]
    ins = [x, w] + [b for b in (xzp, wzp, bias) if b is not None]
    _step(lowering, op, "onnx_conv_int", [out], ins, {
        "q": q, "xzp": xzp is not None, "wzp": None if wzp is None else wzp.size,
        "bias": bias is not None})


@lowers("ConvInteger")
def lower_conv_integer(lowering, op) -> None:
    given = operands(op)
    x, w = _ins(lowering, op, [given[0], given[1]])
    xzp = _ins(lowering, op, [given[2]])[0] if 2 in given else None
    wzp = _ins(lowering, op, [given[3]])[0] if 3 in given else None
    [out] = _results(lowering, op)
    _conv_int(lowering, op, x, w, xzp, wzp, None, out)


@lowers("QLinearConv")
def lower_qlinear_conv(lowering, op) -> None:
    """The int32 convolution of the shifted operands plus the bias, times
    `x_scale * w_scale / y_scale` (w_scale one value or one per output channel) in
    float64, plus the output zero point, clipped and rounded."""
    given = operands(op)
    x, x_scale, xzp, w, w_scale, wzp, y_scale = _ins(lowering, op,
                                                     [given[s] for s in range(7)])
    yzp = _ins(lowering, op, [given[7]])[0] if 7 in given else None
    bias = _ins(lowering, op, [given[8]])[0] if 8 in given else None
    [out] = _results(lowering, op)
    product = lowering.new("arena", np.dtype(np.int32), out.shape, "qlinearconv")
    _conv_int(lowering, op, x, w, xzp, wzp, bias, product)
    per_channel = [0] * len(out.shape)
    per_channel[1] = 1
    scales = [x_scale, w_scale, y_scale, *([yzp] if yzp is not None else [])]
    strides = [per_channel if s is w_scale and s.size > 1 else [0] * len(out.shape)
               for s in scales]
    ab = np.result_type(x_scale.dtype, w_scale.dtype)
    _step(lowering, op, "onnx_qlinear_out", [out], [product, *scales], {
        "ab": str(ab), "mult": str(np.result_type(ab, y_scale.dtype)), "strides": strides})
