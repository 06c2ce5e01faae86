"""Conversions between MLIR element types / constant attributes and numpy arrays."""

from __future__ import annotations

import ml_dtypes
import numpy as np
from xdsl.dialects.builtin import (
    BFloat16Type,
    DenseIntOrFPElementsAttr,
    Float4E2M1FNType,
    Float8E4M3FNType,
    Float8E4M3FNUZType,
    Float8E5M2FNUZType,
    Float8E5M2Type,
    Float8E8M0FNUType,
    Float16Type,
    Float32Type,
    Float64Type,
    FloatAttr,
    IndexType,
    IntegerAttr,
    IntegerType,
    Signedness,
    TensorType,
)
from xdsl.ir import Attribute

_FLOATS = {"f16": np.float16, "f32": np.float32, "f64": np.float64}

_EXACT_FLOATS: list[tuple[type[Attribute], np.dtype]] = [
    (Float16Type, np.dtype(np.float16)), (Float32Type, np.dtype(np.float32)),
    (Float64Type, np.dtype(np.float64)), (BFloat16Type, np.dtype(ml_dtypes.bfloat16)),
    (Float8E4M3FNType, np.dtype(ml_dtypes.float8_e4m3fn)),
    (Float8E4M3FNUZType, np.dtype(ml_dtypes.float8_e4m3fnuz)),
    (Float8E5M2Type, np.dtype(ml_dtypes.float8_e5m2)),
    (Float8E5M2FNUZType, np.dtype(ml_dtypes.float8_e5m2fnuz)),
    (Float8E8M0FNUType, np.dtype(ml_dtypes.float8_e8m0fnu)),
    (Float4E2M1FNType, np.dtype(ml_dtypes.float4_e2m1fn)),
]
"""Float element types and the numpy dtype that holds each exactly (ml_dtypes for the
narrow ones, the dtypes onnx's own numpy helpers use)."""

_SUB_BYTE = {(4, True): ml_dtypes.int4, (4, False): ml_dtypes.uint4,
             (2, True): ml_dtypes.int2, (2, False): ml_dtypes.uint2}


def numpy_dtype(element_type: Attribute) -> np.dtype:
    """The numpy dtype that holds values of an MLIR element type: i1 is bool, unsigned
    integers (`ui8`...) are uint, 2- and 4-bit integers are ml_dtypes' int2/int4 (uint2/uint4
    when unsigned), other widths the smallest int that holds them; floats exactly."""
    if isinstance(element_type, IntegerType):
        width = element_type.width.data
        if width == 1:
            return np.dtype(np.bool_)
        unsigned = element_type.signedness.data == Signedness.UNSIGNED
        if (width, not unsigned) in _SUB_BYTE:
            return np.dtype(_SUB_BYTE[(width, not unsigned)])
        kind = "uint" if unsigned else "int"
        return np.dtype(f"{kind}{max(8, 1 << (width - 1).bit_length())}")
    if isinstance(element_type, IndexType):
        return np.dtype(np.int64)
    for attr_type, dtype in _EXACT_FLOATS:
        if isinstance(element_type, attr_type):
            return dtype
    raise ValueError(f"element type {element_type} has no numpy equivalent in q35c")


def exact_element(dtype: np.dtype) -> Attribute:
    """The MLIR element type that holds `dtype` exactly (the inverse of `numpy_dtype`):
    bool is i1, intN iN (signless), uintN uiN, floats their own type."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return IntegerType(1)
    for (width, signed), sub in _SUB_BYTE.items():
        if dtype == np.dtype(sub):
            return IntegerType(width, Signedness.SIGNLESS if signed else Signedness.UNSIGNED)
    if dtype.kind in "iu":
        return IntegerType(8 * dtype.itemsize,
                           Signedness.UNSIGNED if dtype.kind == "u" else Signedness.SIGNLESS)
    for attr_type, held in _EXACT_FLOATS:
        if dtype == held:
            return attr_type()
    raise ValueError(f"numpy dtype {dtype} has no MLIR element type in q35c")


def constant_value(attr: Attribute, result_type: Attribute) -> np.ndarray:
    """The value of an `arith.constant` attribute (scalar or dense, splat or not)."""
    if isinstance(attr, DenseIntOrFPElementsAttr):
        assert isinstance(result_type, TensorType)
        dtype = numpy_dtype(result_type.get_element_type())
        shape = tuple(result_type.get_shape())
        flat = np.asarray(attr.get_values(), dtype=dtype)
        if flat.size == int(np.prod(shape)):
            return flat.reshape(shape)
        return np.broadcast_to(flat.reshape(()), shape).copy()  # a splat
    if isinstance(attr, (IntegerAttr, FloatAttr)):
        return np.asarray(attr.value.data, dtype=numpy_dtype(result_type))
    raise ValueError(f"constant attribute {attr} is not supported")
