"""Conversions between MLIR element types / constant attributes and numpy arrays."""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import (
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IndexType,
    IntegerAttr,
    IntegerType,
    TensorType,
)
from xdsl.ir import Attribute

_FLOATS = {"f16": np.float16, "f32": np.float32, "f64": np.float64}


def numpy_dtype(element_type: Attribute) -> np.dtype:
    """The numpy dtype that holds values of an MLIR element type."""
    if isinstance(element_type, IntegerType):
        width = element_type.width.data
        if width == 1:
            return np.dtype(np.bool_)
        return np.dtype(f"int{max(8, 1 << (width - 1).bit_length())}")
    if isinstance(element_type, IndexType):
        return np.dtype(np.int64)
    if str(element_type) in _FLOATS:
        return np.dtype(_FLOATS[str(element_type)])
    raise ValueError(f"element type {element_type} has no numpy equivalent in q35c")


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
