"""`tensor`: empty, reshapes, concatenation and static slices."""

from __future__ import annotations

import numpy as np
from xdsl.dialects import tensor
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Operation

from q35c.compiler.tensors import numpy_dtype

from .core import InterpreterError, impl, type_shape


@impl(tensor.EmptyOp)
def _tensor_empty(interp, op: tensor.EmptyOp, args):
    result = op.tensor.type
    assert isinstance(result, TensorType)
    return (np.zeros(tuple(result.get_shape()), numpy_dtype(result.get_element_type())),)


@impl(tensor.ReshapeOp, tensor.CollapseShapeOp, tensor.ExpandShapeOp)
def _tensor_reshape(interp, op: Operation, args):
    return (np.reshape(args[0], type_shape(op.results[0])),)


@impl(tensor.ConcatOp)
def _tensor_concat(interp, op: tensor.ConcatOp, args):
    return (np.concatenate(args, axis=op.dim.value.data),)


@impl(tensor.ExtractSliceOp)
def _tensor_extract_slice(interp, op: tensor.ExtractSliceOp, args):
    if len(args) != 1:
        raise InterpreterError("tensor.extract_slice with dynamic offsets is not supported")
    offsets = op.static_offsets.get_values()
    sizes = op.static_sizes.get_values()
    strides = op.static_strides.get_values()
    index = tuple(slice(o, o + s * st, st) for o, s, st in zip(offsets, sizes, strides))
    return (np.reshape(args[0][index], type_shape(op.result)).copy(),)
