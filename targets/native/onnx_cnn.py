"""Native rules for the CNN family of `q35nn.onnx_node`: Conv, ConvTranspose, the pools,
BatchNormalization, InstanceNormalization, LRN, Pad, DepthToSpace, SpaceToDepth,
Resize / Upsample, Col2Im, MaxUnpool, RoiAlign, DeformConv (inference-mode Dropout, and Sum for
ResNet's residual adds, are onnx_tensor.py's).

Each rule works out the node's static geometry here (auto_pad, ceil_mode, output_padding,
interpolation tables) from the attributes and the operand and result shapes the importer
fixed, and appends kernel steps whose parameters are plain numbers; the kernels are in
`targets/c/runtime/q35rt_cnn.c` (`targets/c/onnx_cnn.py` renders them). Pure data movement
(DepthToSpace, SpaceToDepth) reuses the strided copy.
The semantics are ONNX's, as onnx's reference implementation (the interpreter) computes
them; float32 only for the arithmetic kernels (MaxPool also uint8 and int8), any element type for
data movement (Pad, MaxUnpool).
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import onnx
from xdsl.dialects import arith
from xdsl.dialects.builtin import TensorType
from xdsl.ir import SSAValue

from q35c.compiler.tensors import constant_value
from q35c.dialects import quant3p5
from q35c.targets.native.onnx_node import lowers
from q35c.targets.native.program import Buffer, Step

F32 = np.dtype(np.float32)
HALF_FLOATS = (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))
"""Computed in float32: read widened (exactly), the result rounded back once at the end."""


# -- operands and attributes ---------------------------------------------------------------


class Node:
    """One `q35nn.onnx_node` seen by a rule: operands by ONNX input slot, results by output
    slot, attributes as Python values (`onnx.helper.get_attribute_value`)."""

    def __init__(self, lowering, op):
        self.lowering, self.op = lowering, op
        ins, outs = op.slots()
        self.inputs: dict[int, SSAValue] = dict(zip(ins, op.inputs))
        self.outputs: dict[int, SSAValue] = dict(zip(outs, op.outputs))
        self.attrs = {a.name: onnx.helper.get_attribute_value(a)
                      for a in op.node_proto().attribute}
        self.type = op.op_type.data
        self.narrowed: list[tuple[Buffer, Buffer]] = []  # (float32 result, the real one)
        self.widened = False

    def error(self, message: str):
        return self.lowering.error(f'q35nn.onnx_node "{self.type}": {message}')

    def attr(self, name: str, default=None):
        value = self.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def buffer(self, slot: int) -> Buffer:
        return self.lowering.buffer_of(self.inputs[slot], self.op)

    def float_buffer(self, slot: int) -> Buffer:
        """Input `slot` as float32: float16 and bfloat16 inputs are widened (exactly) into a
        float32 copy, and the node's results of those types are then computed in float32
        and rounded once (`result`); other types are refused."""
        buf = self.buffer(slot)
        if buf.dtype in HALF_FLOATS:
            wide = self.lowering.new("arena", F32, buf.shape, "wide")
            self._cast(wide, buf)
            self.widened = True
            return wide
        if buf.dtype != F32:
            raise self.error(f"input {slot} is {buf.dtype}; only float32, float16 and "
                             "bfloat16 are supported")
        return buf

    def result(self, slot: int = 0) -> Buffer:
        real = self.lowering.result(self.outputs[slot], self.type.lower())
        if not (self.widened and real.dtype in HALF_FLOATS):
            return real
        wide = self.lowering.new("arena", F32, real.shape, "wide")
        self.narrowed.append((wide, real))
        return wide

    def _cast(self, out: Buffer, src: Buffer) -> None:
        to = onnx.helper.np_dtype_to_tensor_dtype(out.dtype)
        self.lowering.steps.append(Step("onnx_map", [out], [src], {
            "op": "Cast", "attrs": {"to": to, "saturate": 1}, "slots": [0],
            "strides": [_strides(src.shape)]}, self.op.name))

    def is_known(self, slot: int) -> bool:
        """Whether input `slot` is absent or known at compile time."""
        if slot not in self.inputs:
            return True
        value = self.inputs[slot]
        return isinstance(value.owner, arith.ConstantOp) or (
            isinstance(value.owner, quant3p5.WeightOp)
            and not isinstance(value.type, quant3p5.PackedWeightType)
            and value.owner.weight_name.data in self.lowering.store)

    def known(self, slot: int) -> np.ndarray | None:
        """The compile-time value of input `slot` (a constant or a weight), None if absent;
        refused when it is only known at run time."""
        if slot not in self.inputs:
            return None
        value = self.inputs[slot]
        owner = value.owner
        if isinstance(owner, arith.ConstantOp):
            return constant_value(owner.value, owner.result.type)
        if isinstance(owner, quant3p5.WeightOp) and not isinstance(
                value.type, quant3p5.PackedWeightType):
            store = self.lowering.store
            if owner.weight_name.data in store:
                return np.asarray(store[owner.weight_name.data])
        raise self.error(f"input {slot} must be known at compile time")

    def step(self, kernel: str, outs: list[Buffer], ins: list[Buffer], params: dict) -> None:
        self.lowering.steps.append(Step(kernel, outs, ins, params, self.op.name))
        for wide, real in self.narrowed:  # after the last step, the rounding that counts
            if wide in outs:
                self._cast(real, wide)


def _shape(value: SSAValue) -> tuple[int, ...]:
    return tuple(value.type.get_shape()) if isinstance(value.type, TensorType) else ()


def _strides(shape) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def spatial(node: Node, x: tuple[int, ...], y: tuple[int, ...], kernel, strides, pads,
            dilations) -> list[int]:
    """The 18 spatial parameters of the runtime (q35rt_cnn.c): input, output and kernel
    sizes, strides, leading pads and dilations, each widened to 3 dims with leading 1s
    (0 for pads)."""
    rank = len(x)
    if not 1 <= rank <= 3:
        raise node.error(f"{rank} spatial dimensions are not supported (1 to 3)")
    lead = 3 - rank

    def wide(values, fill):
        return [fill] * lead + [int(v) for v in values]

    return (wide(x, 1) + wide(y, 1) + wide(kernel, 1) + wide(strides, 1) + wide(pads, 0)
            + wide(dilations, 1))


def _same_pads(auto_pad: str, total: list[int]) -> list[int]:
    """[begin..., end...] of SAME_UPPER (extra at the end) or SAME_LOWER padding."""
    total = [max(t, 0) for t in total]
    small = [t // 2 for t in total]
    big = [t - t // 2 for t in total]
    return small + big if auto_pad == "SAME_UPPER" else big + small


def _pads(node: Node, rank: int, total: list[int]) -> list[int]:
    """The [begin..., end...] pads of a Conv or pool: its `pads`, or those `auto_pad` picks
    (`total` the padding SAME needs per dim)."""
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(auto_pad, total)
    if auto_pad == "VALID":
        return [0] * 2 * rank
    if auto_pad != "NOTSET":
        raise node.error(f"auto_pad '{auto_pad}' is not supported")
    return list(node.attr("pads", [0] * 2 * rank))


# -- convolution ----------------------------------------------------------------------------


@lowers("Conv")
def conv(lowering, op) -> None:
    node = Node(lowering, op)
    x, w = node.float_buffer(0), node.float_buffer(1)
    bias = node.float_buffer(2) if 2 in node.inputs else None
    y_shape = _shape(node.outputs[0])
    rank = len(x.shape) - 2
    kernel = list(node.attr("kernel_shape", w.shape[2:]))
    strides = list(node.attr("strides", [1] * rank))
    dilations = list(node.attr("dilations", [1] * rank))
    total = [(o - 1) * s + (k - 1) * d + 1 - i for o, s, k, d, i in
             zip(y_shape[2:], strides, kernel, dilations, x.shape[2:])]
    pads = _pads(node, rank, total)
    group = int(node.attr("group", 1))
    q = [x.shape[0], x.shape[1], w.shape[0], group,
         *spatial(node, x.shape[2:], y_shape[2:], kernel, strides, pads[:rank], dilations)]
    out = node.result()
    node.step("conv", [out], [x, w, *([bias] if bias is not None else [])],
              {"q": q, "bias": bias is not None})



@lowers("DeformConv")
def deform_conv(lowering, op) -> None:
    """2-D DeformConv (the only rank the reference implements) of float32 operands: one
    `deform_conv` step that samples every input channel at the offset kernel taps into a
    scratch buffer, then sums them as the reference does (see q35_deform_conv_f32)."""
    node = Node(lowering, op)
    x, w, offset = (node.float_buffer(slot) for slot in range(3))
    bias = node.float_buffer(3) if 3 in node.inputs else None
    mask = node.float_buffer(4) if 4 in node.inputs else None
    y_shape = _shape(node.outputs[0])
    if len(x.shape) != 4:
        raise node.error(f"{len(x.shape) - 2} spatial dimensions are not supported (2, as "
                         "onnx's reference)")
    n, c, ih, iw = x.shape
    if ih < 2 or iw < 2:
        raise node.error("an input of height or width 1 is not supported (the reference "
                         "divides by size - 1)")
    kernel = list(node.attr("kernel_shape", w.shape[2:]))
    strides = list(node.attr("strides", [1, 1]))
    dilations = list(node.attr("dilations", [1, 1]))
    pads = list(node.attr("pads", [0, 0, 0, 0]))
    group, og = int(node.attr("group", 1)), int(node.attr("offset_group", 1))
    k = kernel[0] * kernel[1]
    if (group < 1 or og < 1 or c % group or c % og or w.shape[0] % group
            or w.shape[1] * group != c or list(w.shape[2:]) != kernel
            or offset.shape != (n, og * k * 2, *y_shape[2:])
            or (mask is not None and mask.shape != (n, og * k, *y_shape[2:]))):
        raise node.error("operand shapes do not fit its group, offset_group and kernel")
    q = [n, c, w.shape[0], group, og, ih, iw, y_shape[2], y_shape[3], *kernel, *strides,
         pads[0], pads[1], *dilations]
    col = lowering.new("arena", F32, (c * k * y_shape[2] * y_shape[3],), "samples")
    prod = lowering.new("arena", np.dtype(np.float64), (k,), "products")
    node.step("deform_conv", [node.result(), col, prod],
              [x, w, offset, *([bias] if bias is not None else []),
               *([mask] if mask is not None else [])],
              {"q": q, "bias": bias is not None, "mask": mask is not None})

@lowers("ConvTranspose")
def conv_transpose(lowering, op) -> None:
    node = Node(lowering, op)
    x, w = node.float_buffer(0), node.float_buffer(1)
    bias = node.float_buffer(2) if 2 in node.inputs else None
    y_shape = _shape(node.outputs[0])
    rank = len(x.shape) - 2
    kernel = list(w.shape[2:])
    strides = list(node.attr("strides", [1] * rank))
    dilations = list(node.attr("dilations", [1] * rank))
    out_pad = list(node.attr("output_padding", [0] * rank))
    auto_pad = node.attr("auto_pad", "NOTSET")
    # The full (unpadded) output extent, then how much of it the result drops at the start.
    full = [s * (i - 1) + op_ + (k - 1) * d + 1 for s, i, op_, k, d in
            zip(strides, x.shape[2:], out_pad, kernel, dilations)]
    if "pads" in node.attrs and auto_pad in ("NOTSET", "VALID"):
        begin = list(node.attrs["pads"])[:rank]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER") or "output_shape" in node.attrs:
        total = [f - o for f, o in zip(full, y_shape[2:])]
        upper = auto_pad == "SAME_UPPER"
        begin = [t // 2 if upper else t - t // 2 for t in total]
    else:
        begin = [0] * rank
    group = int(node.attr("group", 1))
    q = [x.shape[0], x.shape[1], y_shape[1], group,
         *spatial(node, x.shape[2:], y_shape[2:], kernel, strides, begin, dilations)]
    out = node.result()
    node.step("conv_transpose", [out], [x, w, *([bias] if bias is not None else [])],
              {"q": q, "bias": bias is not None})


# -- pooling --------------------------------------------------------------------------------

POOL_MODES = {"MaxPool": 0, "AveragePool": 1, "LpPool": 2,
              "GlobalMaxPool": 0, "GlobalAveragePool": 1, "GlobalLpPool": 2}


@lowers(*POOL_MODES)
def pool(lowering, op) -> None:
    node = Node(lowering, op)
    x = node.buffer(0)
    if not (node.type == "MaxPool" and x.dtype in (np.uint8, np.int8)):  # max: no arithmetic
        x = node.float_buffer(0)
    y_shape = _shape(node.outputs[0])
    rank = len(x.shape) - 2
    if node.type.startswith("Global"):
        kernel, strides, dilations = list(x.shape[2:]), [1] * rank, [1] * rank
        pads = [0] * 2 * rank
    else:
        kernel = list(node.attr("kernel_shape"))
        strides = list(node.attr("strides", [1] * rank))
        dilations = list(node.attr("dilations", [1] * rank))
        total = [(o - 1) * s + k - i for o, s, k, i in
                 zip(y_shape[2:], strides, kernel, x.shape[2:])]
        pads = _pads(node, rank, total)
    ends = [0] * (3 - rank) + pads[rank:]
    params = {"planes": x.shape[0] * x.shape[1],
              "sp": spatial(node, x.shape[2:], y_shape[2:], kernel, strides, pads[:rank],
                            dilations),
              "end": ends, "mode": POOL_MODES[node.type],
              "count_include_pad": int(node.attr("count_include_pad", 0)),
              "p": float(node.attr("p", 2)),
              "storage_order": int(node.attr("storage_order", 0))}
    outs = [node.result(slot) for slot in sorted(node.outputs)]  # MaxPool: Indices too
    node.step("pool", outs, [x], params)


# -- normalization --------------------------------------------------------------------------


@lowers("BatchNormalization")
def batch_norm(lowering, op) -> None:
    """Inference mode (one output), or training mode (opset 14+ `training_mode`): batch
    statistics, and the running mean and variance as outputs 1 and 2 if wanted."""
    node = Node(lowering, op)
    training = bool(node.attr("training_mode", 0))
    if set(node.outputs) - {0} and not (training and op.opset.value.data >= 14):
        raise node.error("the saved mean/variance outputs of opset < 14 are not supported")
    ins = [node.float_buffer(slot) for slot in range(5)]
    x = ins[0]
    params = {"n": x.shape[0], "c": x.shape[1] if len(x.shape) > 1 else 1,
              "inner": int(np.prod(x.shape[2:], dtype=np.int64)),
              "eps": float(np.float32(node.attr("epsilon", 1e-5)))}
    if not training:
        node.step("batch_norm", [node.result()], ins, params)
        return
    outs = [node.result(slot) if slot in node.outputs else None for slot in range(3)]
    node.step("batch_norm_train", [b for b in outs if b is not None], ins, {
        **params, "momentum": float(np.float32(node.attr("momentum", 0.9))),
        "running": [slot in node.outputs for slot in (1, 2)]})


@lowers("InstanceNormalization")
def instance_norm(lowering, op) -> None:
    node = Node(lowering, op)
    ins = [node.float_buffer(slot) for slot in range(3)]
    x = ins[0]
    out = node.result()
    node.step("instance_norm", [out], ins, {
        "n": x.shape[0], "c": x.shape[1], "inner": int(np.prod(x.shape[2:], dtype=np.int64)),
        "eps": float(np.float32(node.attr("epsilon", 1e-5)))})


@lowers("LRN")
def lrn(lowering, op) -> None:
    node = Node(lowering, op)
    x = node.float_buffer(0)
    out = node.result()
    node.step("lrn", [out], [x], {
        "n": x.shape[0], "c": x.shape[1], "inner": int(np.prod(x.shape[2:], dtype=np.int64)),
        "size": int(node.attr("size")), "alpha": float(node.attr("alpha", 1e-4)),
        "beta": float(node.attr("beta", 0.75)), "bias": float(node.attr("bias", 1.0))})


# -- data movement --------------------------------------------------------------------------


PAD_MODES = {"constant": 0, "reflect": 1, "edge": 2, "wrap": 3}


@lowers("Pad")
def pad(lowering, op) -> None:
    """Pad with its pads, value and axes read at run time (the kernel checks that the pads
    give the static result shape); before opset 11 they are attributes."""
    node = Node(lowering, op)
    x = node.buffer(0)
    mode = node.attr("mode", "constant")
    if mode not in PAD_MODES:
        raise node.error(f"mode '{mode}' is not supported")
    if op.opset.value.data < 11:
        pads = lowering.blob_buffer(f"pads:{len(lowering.blob)}",
                                    np.asarray(node.attr("pads"), dtype=np.int64))
        value = np.asarray(node.attr("value", 0.0), dtype=x.dtype).reshape(1)
        fill, axes = lowering.blob_buffer(f"fill:{len(lowering.blob)}", value), None
    else:
        pads = node.buffer(1)
        fill = (node.buffer(2) if 2 in node.inputs else lowering.blob_buffer(
            f"fill:{len(lowering.blob)}", np.zeros(1, dtype=x.dtype)))
        axes = node.buffer(3) if 3 in node.inputs else None
    if pads.dtype != np.int64 or fill.dtype != x.dtype or (
            axes is not None and axes.dtype not in (np.int32, np.int64)):
        raise node.error("pads must be int64, the value of the data's type, axes int32/64")
    if len(x.shape) > 8:
        raise node.error(f"rank {len(x.shape)} is not supported (8 at most)")
    out = node.result()
    node.step("pad", [out], [x, pads, fill, *([axes] if axes is not None else [])], {
        "naxes": pads.size // 2, "mode": PAD_MODES[mode],
        "axes_i32": axes is not None and axes.dtype == np.int32})


@lowers("DepthToSpace", "SpaceToDepth")
def depth_space(lowering, op) -> None:
    node = Node(lowering, op)
    x = node.buffer(0)
    n, c, h, w = x.shape
    b = int(node.attr("blocksize"))
    if node.type == "SpaceToDepth":
        view = (n, c, h // b, b, w // b, b)
        perm = (0, 3, 5, 1, 2, 4) if node.attr("mode", "DCR") == "DCR" else (0, 1, 3, 5, 2, 4)
    elif node.attr("mode", "DCR") == "DCR":
        view, perm = (n, b, b, c // (b * b), h, w), (0, 3, 4, 1, 5, 2)
    else:
        view, perm = (n, c // (b * b), b, b, h, w), (0, 1, 4, 2, 5, 3)
    st = _strides(view)
    dims = [view[p] for p in perm]
    out = node.result()
    lowering.strided_copy(op, out, x, dims, 0, _strides(dims), 0, [st[p] for p in perm])


# -- Resize ---------------------------------------------------------------------------------


def _coefficients(node: Node, mode: str):
    """The reference's coefficient function for `mode` (as its Resize._run picks it)."""
    from onnx.reference.ops import op_resize

    antialias = bool(node.attr("antialias", 0))
    if mode == "nearest":
        if antialias:
            raise node.error("antialias is not supported with mode 'nearest'")
        nearest = node.attr("nearest_mode", "round_prefer_floor")
        return lambda ratio, scale: op_resize._nearest_coeffs(ratio, mode=nearest)
    if mode == "cubic":
        alpha = float(node.attr("cubic_coeff_a", -0.75))
        base = op_resize._cubic_coeffs_antialias if antialias else op_resize._cubic_coeffs
        return lambda ratio, scale: base(ratio, scale, A=alpha)
    return op_resize._linear_coeffs_antialias if antialias else op_resize._linear_coeffs


def axis_taps(node: Node, n_in: int, n_out: int, scale: float, roi, mode: str
              ) -> tuple[list[int], list[float]]:
    """Input indices and weights of every output index of one resized axis, `taps` of
    each (index -1: the extrapolation value). They come from the reference's own 1-D
    interpolation (`_interpolate_1d_along_axis`, which is linear in the data) run on the
    identity matrix, so coordinate modes, rounding and antialiasing are exactly its."""
    from onnx.reference.ops import op_resize

    matrix = op_resize._interpolate_1d_along_axis(
        np.eye(n_in), 0, scale, n_out, _coefficients(node, mode), roi=roi,
        extrapolation_value=np.nan,
        coordinate_transformation_mode=node.attr("coordinate_transformation_mode",
                                                 "half_pixel"),
        exclude_outside=bool(node.attr("exclude_outside", 0)))
    taps = max(1, max(int(np.count_nonzero(np.nan_to_num(row))) for row in matrix))
    at: list[int] = []
    wt: list[float] = []
    for row in matrix:
        if np.isnan(row).any():
            idx, weights = [-1], [0.0]
        else:
            idx = [int(i) for i in np.flatnonzero(row)] or [0]
            weights = [float(row[i]) for i in idx]
        at += idx + [0] * (taps - len(idx))
        wt += weights + [0.0] * (taps - len(idx))
    return at, wt


def _resize_geometry(node: Node, x_shape, y_shape) -> tuple[list[float], list]:
    """Per-axis scale factors and rois of a Resize (opset 11+) or Upsample node."""
    rank = len(x_shape)
    opset = node.op.opset.value.data
    if node.type == "Upsample":
        scales = node.known(1).ravel().tolist() if 1 in node.inputs else node.attr("scales")
        return [float(s) for s in scales], [None] * rank
    if opset < 11:
        raise node.error(f"Resize of opset {opset} is not supported (11 or later)")
    axes = node.attr("axes")
    axes = list(range(rank)) if axes is None else [a % rank for a in axes]
    roi, scales, sizes = node.known(1), node.known(2), node.known(3)
    scale = [1.0] * rank
    if scales is not None and scales.size:
        for axis, s in zip(axes, scales.ravel().tolist()):
            scale[axis] = float(s)
    else:
        ratios = [sizes.ravel()[k] / x_shape[a] for k, a in enumerate(axes)]
        policy = node.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            ratios = [min(ratios) if policy == "not_larger" else max(ratios)] * len(axes)
        for axis, s in zip(axes, ratios):
            scale[axis] = float(s)
    rois: list = [None] * rank
    if roi is not None and roi.size:
        flat = roi.ravel().tolist()
        for k, axis in enumerate(axes):
            rois[axis] = [flat[k], flat[len(axes) + k]]
    return scale, rois


@lowers("Resize", "Upsample")
def resize(lowering, op) -> None:
    """Resize as one pass per resized axis (it is separable): `resize_axis` steps whose
    taps come from the reference's 1-D interpolation."""
    node = Node(lowering, op)
    x = node.float_buffer(0)
    y_shape = _shape(node.outputs[0])
    mode = node.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic"):
        raise node.error(f"mode '{mode}' is not supported")
    if not all(node.is_known(slot) for slot in (1, 2, 3)):
        resize_at_run_time(node, x, y_shape, mode)
        return
    scale, rois = _resize_geometry(node, x.shape, y_shape)
    resize_with_tables(node, x, y_shape, scale, rois, mode)


def resize_with_tables(node: Node, x: Buffer, y_shape: tuple[int, ...], scale: list[float],
                       rois: list, mode: str) -> None:
    """The resized axes as `resize_axis` steps whose taps are compile-time tables, from
    each axis's scale factor and roi."""
    lowering = node.lowering
    extrapolation = float(node.attr("extrapolation_value", 0.0))
    resized = [a for a in range(len(x.shape)) if y_shape[a] != x.shape[a] or not (
        math.isclose(scale[a], 1.0) and (rois[a] is None or (
            math.isclose(rois[a][0], 0.0) and math.isclose(rois[a][1], 1.0))))]
    current, shape = x, list(x.shape)
    if not resized:
        node.step("copy", [node.result()], [x], {})
        return
    for k, axis in enumerate(resized):
        n_in, n_out = shape[axis], y_shape[axis]
        if node.type == "Upsample":  # integer nearest repeat (what the reference defines)
            if mode != "nearest" or scale[axis] != int(scale[axis]):
                raise node.error("only nearest Upsample by integer scales is supported")
            at, wt = [j // int(scale[axis]) for j in range(n_out)], [1.0] * n_out
        else:
            at, wt = axis_taps(node, n_in, n_out, scale[axis], rois[axis], mode)
        shape[axis] = n_out
        out = node.result() if k == len(resized) - 1 else lowering.new(
            "arena", F32, tuple(shape), "resize")
        node.step("resize_axis", [out], [current], {
            "outer": int(np.prod(shape[:axis], dtype=np.int64)), "in_len": n_in,
            "out_len": n_out, "inner": int(np.prod(shape[axis + 1:], dtype=np.int64)),
            "taps": len(at) // n_out, "at": at, "wt": wt, "extrapolation": extrapolation})
        current = out


COORDINATE_MODES = {"half_pixel": 0, "half_pixel_symmetric": 1, "pytorch_half_pixel": 2,
                    "align_corners": 3, "asymmetric": 4, "tf_crop_and_resize": 5}
INTERPOLATIONS = {"nearest": 0, "linear": 1, "cubic": 2}
NEAREST_MODES = {"round_prefer_floor": 0, "round_prefer_ceil": 1, "floor": 2, "ceil": 3}
ASPECT_POLICIES = {"stretch": 0, "not_larger": 1, "not_smaller": 2}


def antialias_taps(mode: str, n_in: int, n_out: int, rounded: bool) -> int:
    """An upper bound on the taps of onnx's antialiased filter along an axis of n_in ->
    n_out elements whose scale is only known at run time. The reference's filter
    (`_linear_coeffs_antialias`, `_cubic_coeffs_antialias`) has 2 - 2 * (floor(-reach / s)
    + 1) taps for s = min(scale, 1) and reach 1 (linear) or 2 (cubic); the run-time check
    of the output shape bounds the scale from below: scale * n_in >= n_out (n_out - 1/2
    where sizes are rounded, under a keep_aspect_ratio_policy). Two more taps cover the
    rounding of that product; q35_resize_taps fails the run if the scale needs more."""
    if n_out == 0:
        return 2
    low = min(((n_out - 0.5) if rounded else n_out) / n_in, 1.0)
    reach = 2 if mode == "cubic" else 1
    return 2 - 2 * (math.floor(-reach / low) + 1) + 2


def resize_at_run_time(node: Node, x: Buffer, y_shape: tuple[int, ...], mode: str) -> None:
    """Resize whose scales, sizes or roi are run-time values: a `resize_scales` step finds
    every axis's scale (and checks the output shape), then per axis in `axes` a
    `resize_taps` step computes the taps the reference would, and `resize_axis` applies
    them (2 taps for nearest and linear, 4 for cubic). Antialias makes the tap count depend
    on the scale: with run-time sizes under the stretch policy (and no roi) the checked
    output shape fixes every scale, so the taps are compile-time tables; otherwise
    `resize_taps` computes the antialiased filter at run time into `antialias_taps`
    slots, the unused ones of weight 0."""
    lowering = node.lowering
    upsample = node.type == "Upsample"  # nearest: each input repeated (asymmetric, floor)
    if not upsample and node.op.opset.value.data < 11:
        raise node.error(f"Resize of opset {node.op.opset.value.data} is not supported")
    if upsample and mode != "nearest":
        raise node.error("only nearest Upsample is supported")
    coordinate = ("asymmetric" if upsample
                  else node.attr("coordinate_transformation_mode", "half_pixel"))
    nearest = "floor" if upsample else node.attr("nearest_mode", "round_prefer_floor")
    policy = node.attr("keep_aspect_ratio_policy", "stretch")
    for value, table in ((coordinate, COORDINATE_MODES), (nearest, NEAREST_MODES),
                         (policy, ASPECT_POLICIES)):
        if value not in table:
            raise node.error(f"'{value}' is not supported")
    rank = len(x.shape)
    axes = ([a % rank for a in node.attr("axes")] if "axes" in node.attrs
            else list(range(rank)))
    slot = 1 if upsample else 2
    scales = (node.buffer(slot) if slot in node.inputs and _shape(node.inputs[slot]) != (0,)
              else None)
    sizes = node.buffer(3) if not upsample and 3 in node.inputs and scales is None else None
    if (scales is None) == (sizes is None) or (scales is not None and scales.dtype != F32) or (
            sizes is not None and sizes.dtype != np.int64):
        raise node.error("needs float32 scales or int64 sizes, one per axis")
    roi = node.float_buffer(1) if coordinate == "tf_crop_and_resize" else None
    antialias = bool(node.attr("antialias", 0))
    if antialias and mode == "nearest":
        raise node.error("antialias is not supported with mode 'nearest'")
    scale = lowering.new("arena", np.dtype(np.float64), (rank,), "scale")
    node.step("resize_scales", [scale], [scales if scales is not None else sizes], {
        "sizes": sizes is not None, "axes": axes, "xdims": list(x.shape),
        "ydims": list(y_shape), "policy": ASPECT_POLICIES[policy]})
    if antialias and sizes is not None and policy == "stretch" and roi is None:
        # stretched sizes: the checked output shape gives every scale
        resize_with_tables(node, x, y_shape, [y / i for y, i in zip(y_shape, x.shape)],
                           [None] * rank, mode)
        return
    current, shape = x, list(x.shape)
    for k, axis in enumerate(axes):
        n_in, n_out = shape[axis], y_shape[axis]
        taps = 4 if mode == "cubic" else 2
        if antialias:
            taps = antialias_taps(mode, n_in, n_out, sizes is not None and policy != "stretch")
        at = lowering.new("arena", np.dtype(np.int64), (n_out * taps,), "taps")
        wt = lowering.new("arena", np.dtype(np.float64), (n_out * taps,), "weights")
        node.step("resize_taps", [at, wt], [scale, *([roi] if roi is not None else [])], {
            "axis": axis, "roi0": k, "roi1": len(axes) + k, "in_len": n_in,
            "out_len": n_out, "taps": taps, "coordinate": COORDINATE_MODES[coordinate],
            "kind": INTERPOLATIONS[mode], "nearest": NEAREST_MODES[nearest],
            "cubic_a": float(node.attr("cubic_coeff_a", -0.75)),
            "exclude_outside": int(node.attr("exclude_outside", 0)), "antialias": antialias})
        shape[axis] = n_out
        out = node.result() if k == len(axes) - 1 else lowering.new(
            "arena", F32, tuple(shape), "resize")
        node.step("resize_axis", [out], [current, at, wt], {
            "outer": int(np.prod(shape[:axis], dtype=np.int64)), "in_len": n_in,
            "out_len": n_out, "inner": int(np.prod(shape[axis + 1:], dtype=np.int64)),
            "taps": taps, "extrapolation": float(node.attr("extrapolation_value", 0.0))})
        current = out


# -- Col2Im and MaxUnpool -------------------------------------------------------------------


def _int64_input(node: Node, slot: int, size: int) -> Buffer:
    buf = node.buffer(slot)
    if buf.dtype != np.int64 or buf.shape != (size,):
        raise node.error(f"input {slot} must be {size} int64 values")
    return buf


@lowers("Col2Im")
def col2im(lowering, op) -> None:
    """Col2Im with its image and block shapes read at run time (the kernel checks that
    they give the compiled shapes); dilations, pads and strides are attributes."""
    node = Node(lowering, op)
    x = node.float_buffer(0)
    y_shape = _shape(node.outputs[0])
    rank = len(y_shape) - 2
    if len(x.shape) != 3 or not 1 <= rank <= 8:
        raise node.error("needs a 3-D input and 1 to 8 image dimensions")
    image, block = _int64_input(node, 1, rank), _int64_input(node, 2, rank)
    node.step("col2im", [node.result()], [x, image, block], {
        "n": x.shape[0], "c": y_shape[1], "image": list(y_shape[2:]),
        "dilations": list(node.attr("dilations", [1] * rank)),
        "pads": list(node.attr("pads", [0] * 2 * rank)),
        "strides": list(node.attr("strides", [1] * rank)),
        "ck": x.shape[1], "len": x.shape[2]})


@lowers("MaxUnpool")
def max_unpool(lowering, op) -> None:
    """MaxUnpool: zeros, then each value of X at its flat index (I) in the unpooled shape,
    which the attributes give; an output_shape input (checked at run time) may only
    enlarge it, at the end of each dim."""
    node = Node(lowering, op)
    x, idx = node.buffer(0), node.buffer(1)
    y_shape = _shape(node.outputs[0])
    rank = len(x.shape) - 2
    if idx.dtype != np.int64 or idx.shape != x.shape:
        raise node.error("the indices must be int64 of the values' shape")
    kernel = list(node.attr("kernel_shape"))
    strides = list(node.attr("strides", [1] * rank))
    pads = list(node.attr("pads", [0] * 2 * rank))
    inferred = [*x.shape[:2], *((i - 1) * s - (pads[d] + pads[rank + d]) + k for d, (i, s, k)
                                in enumerate(zip(x.shape[2:], strides, kernel)))]
    if len(y_shape) != len(inferred) or any(i > y for i, y in zip(inferred, y_shape)):
        raise node.error(f"output shape {list(y_shape)} is smaller than the unpooled "
                         f"{inferred}")
    shape_in = [_int64_input(node, 2, len(y_shape))] if 2 in node.inputs else []
    node.step("max_unpool", [node.result()], [x, idx, *shape_in], {
        "inferred": inferred, "ydims": list(y_shape)})


@lowers("RoiAlign")
def roi_align(lowering, op) -> None:
    """RoiAlign of float32 NCHW features over run-time rois and batch indices (the kernel
    checks each index); before opset 16 the coordinates are output_half_pixel."""
    node = Node(lowering, op)
    x, rois = node.float_buffer(0), node.float_buffer(1)
    idx = node.buffer(2)
    y_shape = _shape(node.outputs[0])
    if len(x.shape) != 4 or len(rois.shape) != 2 or rois.shape[1] != 4 or (
            idx.dtype != np.int64 or idx.shape != (rois.shape[0],)):
        raise node.error("needs 4-D X, rois of shape (R, 4) and R int64 batch indices")
    default = "half_pixel" if op.opset.value.data >= 16 else "output_half_pixel"
    coordinate = node.attr("coordinate_transformation_mode", default)
    mode = node.attr("mode", "avg")
    if coordinate not in ("half_pixel", "output_half_pixel") or mode not in ("avg", "max"):
        raise node.error(f"mode '{mode}' with coordinates '{coordinate}' is not supported")
    node.step("roi_align", [node.result()], [x, rois, idx], {
        "n": x.shape[0], "c": x.shape[1], "h": x.shape[2], "w": x.shape[3],
        "rois": rois.shape[0], "oh": y_shape[2], "ow": y_shape[3],
        "sampling": int(node.attr("sampling_ratio", 0)),
        "scale": float(np.float32(node.attr("spatial_scale", 1.0))),
        "half_pixel": int(coordinate == "half_pixel"), "max": int(mode == "max")})
