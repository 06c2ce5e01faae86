"""`q35nn`: the composite neural-network ops, in float64 rounded once to float32."""

from __future__ import annotations

import numpy as np

from q35c.dialects import q35nn

from .core import F32, InterpreterError, f32, f64, impl
from .numerics import apply_activation, matmul_f64, sequential_sum, softmax


@impl(q35nn.SiluOp)
def _silu(interp, op, args):
    return (apply_activation("silu", args[0]),)


@impl(q35nn.GeluOp)
def _gelu(interp, op: q35nn.GeluOp, args):
    tanh = op.approximate.data == "tanh"
    return (apply_activation("gelu_tanh" if tanh else "gelu", args[0]),)


@impl(q35nn.SoftmaxOp)
def _softmax(interp, op: q35nn.SoftmaxOp, args):
    return (softmax(args[0], op.axis.value.data),)


@impl(q35nn.LayerNormOp)
def _layer_norm(interp, op: q35nn.LayerNormOp, args):
    x, gamma, beta = (f64(a) for a in args)
    eps = op.epsilon.value.data
    n = x.shape[-1]
    mean = sequential_sum(x, keepdims=True) / n
    var = sequential_sum((x - mean) * (x - mean), keepdims=True) / n
    return (f32((x - mean) / np.sqrt(var + eps) * gamma + beta),)


@impl(q35nn.RMSNormOp)
def _rms_norm(interp, op: q35nn.RMSNormOp, args):
    x, gamma = (f64(a) for a in args)
    eps = op.epsilon.value.data
    mean_square = sequential_sum(x * x, keepdims=True) / x.shape[-1]
    return (f32(x / np.sqrt(mean_square + eps) * gamma),)


@impl(q35nn.BatchMatmulOp)
def _batch_matmul(interp, op, args):
    return (f32(matmul_f64(*args)),)


@impl(q35nn.GatherOp)
def _gather(interp, op: q35nn.GatherOp, args):
    data, indices = args
    axis = op.axis.value.data % data.ndim
    size = data.shape[axis]
    if np.any((indices < -size) | (indices >= size)):
        raise InterpreterError(f"q35nn.gather: index out of range for axis of size {size}")
    return (np.take(data, np.where(indices < 0, indices + size, indices), axis=axis),)


@impl(q35nn.SwigluOp)
def _swiglu(interp, op, args):
    gate, up = args
    (silu,) = _silu(interp, op, [gate])
    return ((silu * f32(up)).astype(F32),)


@impl(q35nn.AttentionOp)
def _attention(interp, op: q35nn.AttentionOp, args):
    """Exactly the unfused sequence: matmul, scale, mask add, softmax, matmul."""
    q, k, v, *mask = args
    scores = f32(matmul_f64(q, np.swapaxes(k, -1, -2)))
    scores = (scores * F32(op.scale.value.data)).astype(F32)
    if mask:
        scores = (scores + f32(mask[0])).astype(F32)
    return (f32(matmul_f64(softmax(scores, -1), v)),)


@impl(q35nn.OnnxNodeOp)
def _onnx_node(interp, op: q35nn.OnnxNodeOp, args):
    from .onnx_node import OnnxNodeError, run_onnx_node

    try:
        return run_onnx_node(op, args)
    except OnnxNodeError as err:
        raise InterpreterError(str(err)) from None
