"""Native rules for ONNX ops added late to the C target: SwiGLU, GroupNormalization,
CenterCropPad, TensorScatter, AffineGrid, GridSample and MelWeightMatrix, as onnx's reference
computes them (the interpreter's semantics). Each is one step rendered by
targets/c/onnx_extra.py; what depends only on the static shapes (crop and pad offsets, group
sizes, the affine base grid) is resolved here, operands that must agree with the static
output shape are checked at run time.
"""

from __future__ import annotations

import math

import numpy as np

from q35c.targets.native.lower import strides
from q35c.targets.native.onnx_node import lowers
from q35c.targets.native.onnx_tensor import _error, _ins, _results, _step, attributes, operands


@lowers("SwiGLU")
def lower_swiglu(lowering, op) -> None:
    """`a * sigmoid(alpha * a) * b` elementwise; A and B have the same shape (the operator
    does not broadcast) and a float type."""
    a, b = _ins(lowering, op, list(op.inputs))
    [out] = _results(lowering, op)
    if a.shape != b.shape or a.dtype != b.dtype or a.dtype.kind != "f":
        raise _error(lowering, op, "A and B must have the same float type and shape")
    _step(lowering, op, "onnx_swiglu", [out], [a, b],
          {"alpha": float(attributes(op).get("alpha", 1.0))})


@lowers("GroupNormalization")
def lower_group_norm(lowering, op) -> None:
    """Per batch row and group of channels, `(x - mean) / sqrt(var + epsilon)` times the
    scale and plus the bias of each channel (opset 21) or group (opset 18)."""
    x, scale, bias = _ins(lowering, op, list(op.inputs))
    [out] = _results(lowering, op)
    attrs = attributes(op)
    groups = int(attrs["num_groups"])
    if len(x.shape) < 2 or groups < 1 or x.shape[1] % groups:
        raise _error(lowering, op, f"{x.shape[1] if len(x.shape) > 1 else 0} channels do "
                                   f"not split into {groups} groups")
    if x.dtype.kind != "f":
        raise _error(lowering, op, f"element type {x.dtype} is not supported (float only)")
    per_group = op.opset.value.data < 21
    if scale.size != (groups if per_group else x.shape[1]) or bias.size != scale.size:
        raise _error(lowering, op, "scale and bias do not match the channels or groups")
    _step(lowering, op, "onnx_group_norm", [out], [x, scale, bias], {
        "batch": x.shape[0], "channels": x.shape[1], "groups": groups,
        "spatial": math.prod(x.shape[2:]), "per_group": per_group,
        "epsilon": float(np.float32(attrs.get("epsilon", 1e-5)))})


def _center(inner: int, outer: int) -> int:
    """The reference's offset of a centred extent `inner` inside `outer` (odd margins put
    the extra element at the end)."""
    return (outer - inner) // 2


@lowers("CenterCropPad")
def lower_center_crop_pad(lowering, op) -> None:
    """Crop or zero-pad the given axes to the (static) output shape around the centre. The
    `shape` operand is read at run time and must agree with the output shape."""
    given = operands(op)
    x, shape = _ins(lowering, op, [given[0], given[1]])
    [out] = _results(lowering, op)
    rank = len(x.shape)
    axes = attributes(op).get("axes")
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
    if shape.shape != (len(axes),):
        raise _error(lowering, op, f"shape has {shape.shape} elements for {len(axes)} axes")
    region = [min(i, o) for i, o in zip(x.shape, out.shape)]
    src = [_center(r, i) for r, i in zip(region, x.shape)]
    dst = [_center(r, o) for r, o in zip(region, out.shape)]
    _step(lowering, op, "onnx_center_crop_pad", [out], [x, shape], {
        "axes": axes, "out_shape": list(out.shape), "region": region,
        "src": int(np.dot(src, strides(x.shape))) if rank else 0,
        "dst": int(np.dot(dst, strides(out.shape))) if rank else 0,
        "in_strides": list(strides(x.shape)), "out_strides": list(strides(out.shape))})


@lowers("TensorScatter")
def lower_tensor_scatter(lowering, op) -> None:
    """The past cache copied, then each batch row's update written along `axis` from that
    row's write index (linear: out-of-range positions fail the run; circular: modulo the
    axis length)."""
    given = operands(op)
    ins = _ins(lowering, op, [given[s] for s in sorted(given)])
    past, update = ins[0], ins[1]
    [out] = _results(lowering, op)
    attrs = attributes(op)
    mode = attrs.get("mode", "linear")
    rank = len(past.shape)
    axis = int(attrs.get("axis", -2)) % max(rank, 1)
    if mode not in ("linear", "circular"):
        raise _error(lowering, op, f"mode '{mode}' is not supported (linear, circular)")
    if rank < 2 or axis == 0 or any(p != u for i, (p, u) in
                                     enumerate(zip(past.shape, update.shape)) if i != axis) \
            or update.shape[axis] > past.shape[axis]:
        raise _error(lowering, op, f"update shape {update.shape} does not fit the cache "
                                   f"{past.shape} along axis {axis}")
    _step(lowering, op, "onnx_tensor_scatter", [out], ins, {
        "circular": mode == "circular", "batch": past.shape[0],
        "prefix": math.prod(past.shape[1:axis]), "max_len": past.shape[axis],
        "len": update.shape[axis], "inner": math.prod(past.shape[axis + 1:]),
        "has_indices": 2 in given})


@lowers("AffineGrid")
def lower_affine_grid(lowering, op) -> None:
    """Each batch row's theta applied to the base grid of the (static) output's spatial
    shape. The grid's coordinates per axis are those the reference constructs (computed here
    by its own function); the `size` operand is read at run time and must name the output's
    batch and spatial sizes."""
    from onnx.reference.ops.op_affine_grid import construct_original_grid

    theta, size = _ins(lowering, op, list(op.inputs))
    [out] = _results(lowering, op)
    spatial = list(out.shape[1:-1])
    dims = len(spatial)
    if dims not in (2, 3) or theta.shape != (out.shape[0], dims, dims + 1) \
            or size.shape != (dims + 2,) or out.dtype != np.float32:
        raise _error(lowering, op, f"theta {theta.shape} and output {out.shape} are not a "
                                   "2-D or 3-D affine grid")
    try:
        with np.errstate(all="raise"):
            grid = construct_original_grid(spatial, int(attributes(op).get("align_corners", 0)))
    except (FloatingPointError, ValueError) as err:
        raise _error(lowering, op, f"the base grid of {spatial} is undefined ({err})") from None
    # coordinate j (x, y, z) varies along spatial axis dims - 1 - j
    axes = []
    for j in range(dims):
        index = [0] * dims
        index[dims - 1 - j] = slice(None)
        axes.append([float(v) for v in grid[(*index, j)]])
    _step(lowering, op, "onnx_affine_grid", [out], [theta, size], {
        "batch": out.shape[0], "spatial": spatial, "axes": axes})


GRID_MODES = {"linear": 0, "bilinear": 0, "cubic": 1, "bicubic": 1, "nearest": 2}
PADDING_MODES = ("zeros", "border", "reflection")


@lowers("GridSample")
def lower_grid_sample(lowering, op) -> None:
    """Per batch row, channel and grid point, the input sampled at the grid's normalized
    coordinates (nearest, linear or cubic; zeros, border or reflection padding), float32,
    1 to 3 spatial axes."""
    x, grid = _ins(lowering, op, list(op.inputs))
    [out] = _results(lowering, op)
    attrs = attributes(op)
    mode, padding = attrs.get("mode", "linear"), attrs.get("padding_mode", "zeros")
    nd = len(x.shape) - 2
    if mode not in GRID_MODES or padding not in PADDING_MODES:
        raise _error(lowering, op, f"mode '{mode}' with padding '{padding}' is not supported")
    if not 1 <= nd <= 3 or grid.shape[-1] != nd or len(grid.shape) != nd + 2:
        raise _error(lowering, op, f"input {x.shape} and grid {grid.shape} are not 1 to 3 "
                                   "spatial axes")
    if x.dtype != np.float32 or grid.dtype != np.float32:
        raise _error(lowering, op, "only float32 input and grid are supported")
    align = int(attrs.get("align_corners", 0))
    dims = list(x.shape[2:])
    _step(lowering, op, "onnx_grid_sample", [out], [x, grid], {
        "batch": x.shape[0], "channels": x.shape[1], "dims": dims,
        "points": math.prod(grid.shape[1:-1]), "align": align,
        "mode": GRID_MODES[mode], "pad": PADDING_MODES.index(padding),
        "lo": [0.0 if align else -0.5] * nd,
        "hi": [d - 1.0 if align else d - 0.5 for d in dims]})


@lowers("MelWeightMatrix")
def lower_mel_weight_matrix(lowering, op) -> None:
    """The triangular mel filter bank of the reference from its five scalar operands, read
    at run time; the output's static shape must be (dft_length // 2 + 1, num_mel_bins)."""
    ins = _ins(lowering, op, list(op.inputs))
    [out] = _results(lowering, op)
    if len(out.shape) != 2 or any(b.size != 1 for b in ins):
        raise _error(lowering, op, "the operands must be scalars and the output a matrix")
    if any(b.dtype not in (np.float32, np.float64) for b in ins[3:]):
        raise _error(lowering, op, "the edge frequencies must be float32 or float64")
    _step(lowering, op, "onnx_mel_weight_matrix", [out], ins,
          {"rows": out.shape[0], "bins": out.shape[1]})
