"""Pre-quantized weights in ONNX models: dequantized at import, re-encoded to Q3P5 later.

Three forms are understood (docs: /work/shared/docs/quantization.md section 3):

* standard `DequantizeLinear` (opset 13 and newer) of a known tensor: int8/uint8/int16/
  uint16/int32, int4/uint4 and int2/uint2, float8/float4; per-tensor, per-axis and blocked
  (`block_size`, opset 21+). It is folded by `dequantize_linear` below, a numpy version of
  the operator (onnx's reference evaluator has it only from opset 19), whatever consumes it
  (MatMul, Gemm, Gather...);
* onnxruntime's `com.microsoft.MatMulNBits` (2/4/8-bit blocks along K, packed or float zero
  points, `g_idx`, bias): the weight is dequantized to a float [K, N] matrix and the node
  becomes an ordinary matmul;
* onnxruntime's `com.microsoft.GatherBlockQuantized` (int4/uint4, or uint8 holding 2/4/8-bit
  codes): the table is dequantized and the node becomes an ordinary Gather.

Each dequantized weight is named after its quantized initializer without the quantizer's
suffix (`layers.0.mlp.up_proj.weight_t_Q4` -> `layers.0.mlp.up_proj.weight_t`) and
recorded in `importer.prequantized` (name -> a description of its source format).
`load_onnx` copies that description onto the weight's `quant3p5.weight` op as the
`q35c.source` attribute, and the `quantize-weights` pass reports the error that
re-encoding to Q3P5 adds to each such tensor.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto
from onnx.helper import np_dtype_to_tensor_dtype, tensor_dtype_to_np_dtype
from xdsl.dialects import arith
from xdsl.dialects.builtin import StringAttr

from q35c.compiler.frontends.onnx.builder import shape_of
from q35c.compiler.frontends.onnx.importer import NUMPY_FOLDERS
from q35c.compiler.frontends.onnx.ops import _gather, converter
from q35c.dialects import quant3p5

if TYPE_CHECKING:
    from q35c.compiler.frontends.onnx.importer import OnnxImporter

SOURCE_ATTR = "q35c.source"
"""Discardable attribute of a `quant3p5.weight` op: the pre-quantized form it came from."""

# TensorProto type -> bit width, for integer element types (signedness below).
_INT_BITS = {
    TensorProto.INT2: 2, TensorProto.UINT2: 2, TensorProto.INT4: 4, TensorProto.UINT4: 4,
    TensorProto.INT8: 8, TensorProto.UINT8: 8, TensorProto.INT16: 16, TensorProto.UINT16: 16,
    TensorProto.INT32: 32, TensorProto.UINT32: 32,
}
_SIGNED = {TensorProto.INT2, TensorProto.INT4, TensorProto.INT8, TensorProto.INT16,
           TensorProto.INT32}
_FP8 = {TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2,
        TensorProto.FLOAT8E5M2FNUZ}
_FLOAT_SCALES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16,
                 TensorProto.DOUBLE, TensorProto.FLOAT8E8M0}
_QUANTIZER_SUFFIX = re.compile(r"(_DQ)?_Q\d+$|_quantized$")


def _onnx_type(array: np.ndarray) -> int:
    """The TensorProto element type of a numpy array (ml_dtypes int4 etc. included).

    ml_dtypes' narrow types have numpy kind 'V', so `np.issubdtype(..., np.integer)` is
    False for them: classify through onnx's type table instead.
    """
    try:
        return np_dtype_to_tensor_dtype(array.dtype)
    except (KeyError, ValueError, TypeError):
        raise ValueError(f"unsupported element type {array.dtype}") from None


def _type_name(array: np.ndarray) -> str:
    return TensorProto.DataType.Name(_onnx_type(array)).lower()


def _expand(value: np.ndarray, shape: tuple[int, ...], axis: int, block_size: int,
            what: str) -> np.ndarray:
    """A scale or zero point broadcastable to `shape` (per-tensor, per-axis or blocked)."""
    value = np.asarray(value)
    if value.size == 1:  # per-tensor; also a 1-element 1-D or blocked tensor, as in onnx
        return value.reshape(())
    if not block_size:
        if value.ndim != 1 or value.shape[0] != shape[axis]:
            raise ValueError(f"per-axis {what} must be 1-D of length {shape[axis]} (the size "
                             f"of axis {axis} of {list(shape)}), got {list(value.shape)}")
        dims = [1] * len(shape)
        dims[axis] = value.shape[0]
        return value.reshape(dims)
    blocks = -(-shape[axis] // block_size)
    expected = [blocks if i == axis else d for i, d in enumerate(shape)]
    if list(value.shape) != expected:
        raise ValueError(f"blocked {what} for {list(shape)} with block_size {block_size} "
                         f"along axis {axis} must have shape {expected}, got "
                         f"{list(value.shape)}")
    return np.repeat(value, block_size, axis=axis).take(range(shape[axis]), axis=axis)


def dequantize_linear(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None = None,
                      axis: int = 1, block_size: int = 0,
                      output_dtype: int = 0) -> np.ndarray:
    """ONNX DequantizeLinear, opsets 13 to 25: `y = (x - zero_point) * scale`.

    `x` as onnx.numpy_helper returns it: int8/uint8/int16/uint16/int32 numpy arrays, or
    ml_dtypes int4/uint4/int2/uint2/float8/float4 arrays. `scale` and `zero_point` are
    scalars or 1-element (per-tensor), 1-D along `axis` (per-axis), or of x's rank with
    axis `axis` of length ceil(x.shape[axis] / block_size) (blocked; the last block may be
    short). `y` has the dtype of `scale`, or the TensorProto type `output_dtype` if not 0.

    Arithmetic: `x - zero_point` exactly (in int64), converted to float32, times the
    float32 scale, one rounding, then cast to the output type: bit-identical to onnx's
    reference implementation and onnxruntime for every type up to 16 bits.
    """
    x = np.asarray(x)
    scale = np.asarray(scale)
    if block_size < 0:
        raise ValueError(f"block_size must not be negative, got {block_size}")
    if _onnx_type(scale) not in _FLOAT_SCALES:
        raise ValueError(f"the scale must be a float tensor, got {_type_name(scale)}")
    shape = tuple(x.shape)
    if scale.size != 1 or block_size:
        if not -len(shape) <= axis < len(shape):
            raise ValueError(f"axis {axis} is out of range for a rank-{len(shape)} input")
        axis %= len(shape)
    x_type = _onnx_type(x)
    if x_type in _INT_BITS:
        diff = x.astype(np.int64)
        if zero_point is not None:
            zero_point = np.asarray(zero_point)
            if _onnx_type(zero_point) != x_type:
                raise ValueError(f"zero point type {_type_name(zero_point)} differs from the "
                                 f"input type {_type_name(x)}")
            diff = diff - _expand(zero_point.astype(np.int64), shape, axis, block_size,
                                  "zero point")
        dx = diff.astype(np.float32)
    elif x_type in _FP8 or x_type == TensorProto.FLOAT4E2M1:
        if (x_type in _FP8 and zero_point is not None
                and np.any(np.asarray(zero_point).astype(np.float32) != 0)):
            raise ValueError("a float8 input's zero point must be zero")
        dx = x.astype(np.float32)
    else:
        raise ValueError(f"DequantizeLinear of {_type_name(x)} tensors is not supported")
    y = dx * _expand(scale.astype(np.float32), shape, axis, block_size, "scale")
    out = tensor_dtype_to_np_dtype(output_dtype) if output_dtype else scale.dtype
    return np.asarray(y).astype(out)


def unpack_bits(packed: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes packed `8 // bits` per byte, lowest bits first, along the last axis."""
    if bits not in (2, 4, 8):
        raise ValueError(f"only 2, 4 and 8-bit codes are supported, got bits={bits}")
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise ValueError(f"packed codes must be uint8, got {packed.dtype}")
    if bits == 8:
        return packed
    shifts = np.arange(0, 8, bits, dtype=np.uint8)
    codes = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return codes.reshape(*packed.shape[:-1], packed.shape[-1] * (8 // bits))


def dequantize_matmul_nbits(b: np.ndarray, scales: np.ndarray,
                            zero_points: np.ndarray | None, k: int, n: int, bits: int,
                            block_size: int, g_idx: np.ndarray | None = None) -> np.ndarray:
    """The [K, N] float weight of `com.microsoft.MatMulNBits` (`Y = A @ W + bias`).

    `b` is uint8 [N, k_blocks, block_size * bits / 8] (N-major; codes packed lowest bits
    first along K); `scales` [N, k_blocks] (or flat); `zero_points` packed uint8
    [N, ceil(k_blocks * bits / 8)] (each row padded to whole bytes), or float [N, k_blocks]
    like `scales`, or None for the midpoint 2^(bits-1). `g_idx` [K] (deprecated) maps each
    k to its block. W[k, n] = (code - zero_point) * scale, in float32.
    """
    if bits not in (2, 4, 8):
        raise ValueError(f"bits={bits} is not supported (2, 4 or 8, as in onnxruntime)")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of 2 of at least 16, got {block_size}")
    k_blocks = -(-k // block_size)
    blob = block_size * bits // 8
    b = np.asarray(b)
    if b.dtype != np.uint8 or b.size != n * k_blocks * blob:
        raise ValueError(f"B must be uint8 [{n}, {k_blocks}, {blob}] for K={k}, N={n}, "
                         f"bits={bits}, block_size={block_size}; got {b.dtype} "
                         f"{list(b.shape)}")
    codes = unpack_bits(b.reshape(n, k_blocks, blob), bits).reshape(n, k_blocks * block_size)
    scales = np.asarray(scales)
    if scales.size != n * k_blocks:
        raise ValueError(f"scales must have {n} x {k_blocks} elements, got "
                         f"{list(scales.shape)}")
    scales = scales.reshape(n, k_blocks).astype(np.float32)
    if zero_points is None:
        zp = np.full((n, k_blocks), float(1 << (bits - 1)), dtype=np.float32)
    else:
        zero_points = np.asarray(zero_points)
        if zero_points.dtype == np.uint8:
            row = -(-k_blocks * bits // 8)
            if zero_points.size != n * row:
                raise ValueError(f"packed zero points must be uint8 [{n}, {row}], got "
                                 f"{list(zero_points.shape)}")
            zp = unpack_bits(zero_points.reshape(n, row), bits)[:, :k_blocks]
        elif zero_points.dtype.kind == "f" and zero_points.size == n * k_blocks:
            zp = zero_points.reshape(n, k_blocks)
        else:
            raise ValueError(f"zero points must be packed uint8 or float [{n}, {k_blocks}], "
                             f"got {zero_points.dtype} {list(zero_points.shape)}")
        zp = zp.astype(np.float32)
    if g_idx is not None and np.asarray(g_idx).size:  # act-order: block of each k
        block_of = np.asarray(g_idx).astype(np.int64).ravel()
        if block_of.shape != (k,) or block_of.min() < 0 or block_of.max() >= k_blocks:
            raise ValueError(f"g_idx must hold {k} block indices below {k_blocks}")
        weight = (codes[:, :k].astype(np.float32) - zp[:, block_of]) * scales[:, block_of]
    else:
        blocked = codes.reshape(n, k_blocks, block_size).astype(np.float32)
        weight = ((blocked - zp[:, :, None]) * scales[:, :, None]).reshape(n, -1)[:, :k]
    return np.ascontiguousarray(weight.T)


def dequantize_block_quantized(data: np.ndarray, scales: np.ndarray,
                               zero_points: np.ndarray | None, quantize_axis: int,
                               block_size: int, bits: int = 4) -> np.ndarray:
    """The float table of `com.microsoft.GatherBlockQuantized` (onnxruntime's semantics).

    int4/uint4 `data` holds one code per element, zero point default 0; uint8 `data` holds
    `8 // bits` codes per byte along the last axis (which must be `quantize_axis`), with
    zero points packed the same way and default 2^(bits-1). Blocks of `block_size` run
    along `quantize_axis`; scales have data's (unpacked) shape with that axis divided.
    Float8 data has no zero point, and `block_size` 0 means one block per row.
    """
    data = np.asarray(data)
    rank = data.ndim
    if not -rank <= quantize_axis < rank:
        raise ValueError(f"quantize_axis {quantize_axis} is out of range for rank {rank}")
    quantize_axis %= rank
    data_type = _onnx_type(data)
    if data_type == TensorProto.UINT8:
        if quantize_axis != rank - 1:
            raise ValueError("uint8 data must be quantized along its last axis")
        codes = unpack_bits(data, bits)
        default_zp = 1 << (bits - 1)
    elif data_type in (TensorProto.INT4, TensorProto.UINT4):
        if bits != 4:
            raise ValueError(f"int4/uint4 data needs bits=4, got bits={bits}")
        codes = data.astype(np.int64)
        default_zp = 0
    elif data_type in _FP8 or data_type == TensorProto.FLOAT4E2M1:
        if zero_points is not None:
            raise ValueError("float8/float4 data takes no zero points")
        codes = data.astype(np.float32)
        default_zp = 0
        block_size = block_size or data.shape[quantize_axis]
    else:
        raise ValueError(f"GatherBlockQuantized of {_type_name(data)} data is not supported")
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    scales = np.asarray(scales)
    if scales.ndim != rank:
        raise ValueError(f"scales must have the rank of data ({rank}), got "
                         f"{list(scales.shape)}")
    if zero_points is None:
        zp = np.array(default_zp)
    else:
        zero_points = np.asarray(zero_points)
        if _onnx_type(zero_points) != data_type:
            raise ValueError("zero points must have the type of data")
        zp = zero_points
        if data_type == TensorProto.UINT8:
            zp = unpack_bits(zero_points, bits)[..., :scales.shape[-1]]
        zp = _expand(zp.astype(np.int64), codes.shape, quantize_axis, block_size,
                     "zero point")
    scale = _expand(scales.astype(np.float32), codes.shape, quantize_axis, block_size, "scale")
    table = (codes - zp).astype(np.float32) * scale
    return table.astype(scales.dtype)


# -- naming and provenance -------------------------------------------------------------------
def _graph_names(graph: onnx.GraphProto) -> set[str]:
    names = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    names.update(o for node in graph.node for o in node.output)
    return names


def register_weight(imp: OnnxImporter, array: np.ndarray, source_name: str, fallback: str,
                    source: str) -> np.ndarray:
    """Name a dequantized weight after its quantized initializer and record its source.

    The name is `source_name` without the quantizer's suffix (`_Q4`, `_DQ_Q4`,
    `_quantized`) if that is no other ONNX value's name, else `fallback` (made unique).
    """
    taken = _graph_names(imp.graph) | set(imp.env) | set(imp.prequantized)
    name = _QUANTIZER_SUFFIX.sub("", source_name)
    if not name or name in taken:
        name, i = fallback, 1
        while name in taken:
            name, i = f"{fallback}.{i}", i + 1
    imp.array_names[id(array)] = name
    imp.env.setdefault(name, array)  # keeps the array (and so its id) alive
    imp.prequantized[name] = source
    return array


def _symmetry(zero_point: np.ndarray | int, signed: bool, bits: int) -> str:
    """"symmetric" if every (effective) zero point is the midpoint of the code range."""
    midpoint = 0 if signed else 1 << (bits - 1)
    values = np.asarray(zero_point).astype(np.float64)
    return "symmetric" if np.all(values == midpoint) else "asymmetric"


def _describe_dq(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int,
                 block_size: int) -> str:
    x_type = _onnx_type(x)
    if np.asarray(scale).size == 1:
        layout = "per-tensor"
    elif block_size:
        layout = f"blocked (axis {axis}, block {block_size})"
    else:
        layout = f"per-axis (axis {axis})"
    symmetry = ("" if x_type not in _INT_BITS else " " + _symmetry(
        0 if zero_point is None else zero_point, x_type in _SIGNED, _INT_BITS[x_type]))
    return f"DequantizeLinear {_type_name(x)} {layout}{symmetry}"


def _known(imp: OnnxImporter, node: onnx.NodeProto, inputs: list, names: dict[int, str]
           ) -> None:
    for index, what in names.items():
        if index < len(inputs) and inputs[index] is not None and not isinstance(
                inputs[index], np.ndarray):
            raise imp.error(node, f"input {what} must be known at compile time (an "
                                  "initializer or a constant)")


# -- DequantizeLinear --------------------------------------------------------------------------
def _fold_dequantize_linear(imp: OnnxImporter, node: onnx.NodeProto, inputs: list) -> list:
    x, scale = inputs[0], inputs[1]
    zero_point = inputs[2] if len(inputs) > 2 else None
    axis = imp.attr(node, "axis", 1)
    block_size = imp.attr(node, "block_size", 0)
    try:
        y = dequantize_linear(x, scale, zero_point, axis, block_size,
                              imp.attr(node, "output_dtype", 0))
    except (ValueError, IndexError) as err:
        raise imp.error(node, str(err)) from None
    if y.ndim >= 1 and y.size > 1:
        source_name = imp.array_names.get(id(x), node.input[0])
        register_weight(imp, y, source_name, node.output[0],
                        _describe_dq(x, scale, zero_point, axis, block_size))
    return [y]


def _fold_transpose(imp: OnnxImporter, node: onnx.NodeProto, inputs: list) -> list:
    """Transpose folds as usual; a transposed pre-quantized weight keeps its provenance."""
    (out,) = imp.fold(node, inputs)
    name = imp.array_names.get(id(inputs[0]))
    if (name in imp.prequantized and out.ndim == 2 and imp.attr(node, "perm", [1, 0]) == [1, 0]
            and name + ".T" not in imp.prequantized):
        imp.array_names[id(out)] = name + ".T"
        imp.env.setdefault(name + ".T", out)
        imp.prequantized[name + ".T"] = imp.prequantized[name]
    return [out]


NUMPY_FOLDERS["DequantizeLinear"] = _fold_dequantize_linear
NUMPY_FOLDERS["Transpose"] = _fold_transpose


# -- com.microsoft ops -------------------------------------------------------------------------
def _required(imp: OnnxImporter, node: onnx.NodeProto, name: str) -> int:
    value = imp.attr(node, name, None)
    if value is None:
        raise imp.error(node, f"the required attribute '{name}' is missing")
    return int(value)


@converter("com.microsoft.MatMulNBits")
def _matmul_nbits(imp, node, inputs):
    """`Y = A @ dequant(B)^T + bias`: dequantize B to [K, N] now, matmul at run time."""
    _known(imp, node, inputs, {1: "B", 2: "scales", 3: "zero_points", 4: "g_idx"})
    a, b, scales = inputs[:3]
    zero_points, g_idx, bias = (inputs[i] if len(inputs) > i else None for i in (3, 4, 5))
    k, n = _required(imp, node, "K"), _required(imp, node, "N")
    bits, block_size = imp.attr(node, "bits", 4), _required(imp, node, "block_size")
    try:
        weight = dequantize_matmul_nbits(b, scales, zero_points, k, n, bits, block_size, g_idx)
    except ValueError as err:
        raise imp.error(node, str(err)) from None
    if zero_points is None:
        symmetry = "symmetric"
    elif zero_points.dtype.kind == "f":
        symmetry = "asymmetric (float zero points)"
    else:
        k_blocks = -(-k // block_size)
        symmetry = _symmetry(unpack_bits(zero_points.reshape(n, -1), bits)[:, :k_blocks],
                             False, bits)
    register_weight(imp, weight, node.input[1], f"{node.input[1]}.dequantized",
                    f"MatMulNBits {bits}-bit block {block_size} {symmetry}")
    x = imp.float_ssa(node, a)
    if not shape_of(x) or shape_of(x)[-1] != k:
        raise imp.error(node, f"A has shape {list(shape_of(x))}, but K={k}")
    y = imp.tb.matmul(x, imp.ssa(weight))
    if bias is not None:
        y = imp.tb.binary(arith.AddfOp, y, imp.float_ssa(node, bias))
    return [y]


@converter("com.microsoft.GatherBlockQuantized")
def _gather_block_quantized(imp, node, inputs):
    """Gather from a block-quantized table: dequantize the table now, gather at run time."""
    _known(imp, node, inputs, {0: "data", 2: "scales", 3: "zero_points"})
    data, indices, scales = inputs[:3]
    zero_points = inputs[3] if len(inputs) > 3 else None
    gather_axis = imp.attr(node, "gather_axis", 0)
    quantize_axis = imp.attr(node, "quantize_axis", 1)
    block_size, bits = imp.attr(node, "block_size", 128), imp.attr(node, "bits", 4)
    if _onnx_type(data) == TensorProto.UINT8 and gather_axis % data.ndim != 0:
        raise imp.error(node, "uint8 data can be gathered only along axis 0")
    try:
        table = dequantize_block_quantized(data, scales, zero_points, quantize_axis,
                                           block_size, bits)
    except ValueError as err:
        raise imp.error(node, str(err)) from None
    data_type = _onnx_type(data)
    if data_type == TensorProto.UINT8:
        type_name = f"{bits}-bit"
        zp = (1 << (bits - 1) if zero_points is None else
              unpack_bits(zero_points, bits)[..., :np.asarray(scales).shape[-1]])
        symmetry = " " + _symmetry(zp, False, bits)
    elif data_type in (TensorProto.INT4, TensorProto.UINT4):
        type_name = _type_name(data)
        symmetry = " " + _symmetry(0 if zero_points is None else zero_points,
                                   data_type == TensorProto.INT4, 4)
    else:
        type_name, symmetry = _type_name(data), ""
    register_weight(imp, table, node.input[0], f"{node.input[0]}.dequantized",
                    f"GatherBlockQuantized {type_name} block {block_size} "
                    f"(axis {quantize_axis % data.ndim}){symmetry}")
    if isinstance(indices, np.ndarray):  # all known: gather now (out of range -> 0, as ORT)
        axis = gather_axis % table.ndim
        size = table.shape[axis]
        idx = np.asarray(indices).astype(np.int64)
        valid = (idx >= -size) & (idx < size)
        out = np.take(table, np.where(valid, idx % size, 0), axis=axis)
        mask = valid.reshape((1,) * axis + idx.shape + (1,) * (table.ndim - axis - 1))
        return [np.where(mask, out, np.zeros((), table.dtype)).astype(table.dtype)]
    gather = onnx.helper.make_node("Gather", list(node.input[:2]), list(node.output),
                                   name=node.name, axis=gather_axis)
    return _gather(imp, gather, [table, indices])


# -- provenance on the IR --------------------------------------------------------------------
def mark_sources(imp: OnnxImporter) -> None:
    """Attach `q35c.source` to the `quant3p5.weight` op of every pre-quantized weight."""
    for name, value in imp.materialized.items():
        source = imp.prequantized.get(name)
        if source is not None and isinstance(value.owner, quant3p5.WeightOp):
            value.owner.attributes[SOURCE_ATTR] = StringAttr(source)
