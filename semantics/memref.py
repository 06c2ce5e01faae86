"""`memref` and `bufferization`: arrays and scalar cells (the Fortran frontend's memory).

Memrefs are numpy arrays indexed logically (their declared shape); loads and stores work in
place, so intent(out) arguments are updated in the caller's arrays.
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects import bufferization, memref
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Operation

from q35c.compiler.tensors import constant_value, numpy_dtype

from .core import InterpreterError, impl, located_error


def _memref_shape(op: Operation, dynamic_sizes) -> tuple[int, ...]:
    sizes = iter(int(d) for d in dynamic_sizes)
    shape = op.results[0].type.get_shape()
    return tuple(next(sizes) if d < 0 else d for d in shape)


@impl(memref.AllocOp, memref.AllocaOp)
def _memref_alloc(interp, op, args):
    element = op.results[0].type.get_element_type()
    return (np.zeros(_memref_shape(op, args), numpy_dtype(element)),)


@impl(memref.DeallocOp)
def _memref_dealloc(interp, op, args):
    return ()


def _index(op: Operation, ref: np.ndarray, indices) -> tuple[int, ...]:
    """The element index of a load or store; outside the array (where numpy would wrap a
    negative index or raise IndexError) it is an error at the op's source line, naming the
    array when it is a named function argument (a Fortran dummy)."""
    index = tuple(int(i) for i in indices)
    if any(i < 0 or i >= n for i, n in zip(index, ref.shape)):
        name = _argument_name(op.operands[0 if isinstance(op, memref.LoadOp) else 1])
        named = f" of array '{name}'" if name else ""
        raise located_error(op, f"index {index}{named} is out of bounds for shape {ref.shape}")
    return index


def _argument_name(value) -> str | None:
    """The `q35c.name` of `value` if it is an argument of its function."""
    from xdsl.dialects import func
    from xdsl.ir import BlockArgument

    from q35c.compiler.entry import argument_names

    if isinstance(value, BlockArgument) and isinstance(value.owner.parent_op(), func.FuncOp):
        fn = value.owner.parent_op()
        if value.owner is fn.body.block:
            return argument_names(fn)[value.index]
    return None


@impl(memref.LoadOp)
def _memref_load(interp, op, args):
    ref, *indices = args
    return (ref[_index(op, ref, indices)],)


@impl(memref.StoreOp)
def _memref_store(interp, op, args):
    value, ref, *indices = args
    ref[_index(op, ref, indices)] = value
    return ()


@impl(memref.DimOp)
def _memref_dim(interp, op, args):
    return (np.int64(args[0].shape[int(args[1])]),)


@impl(memref.CastOp)
def _memref_cast(interp, op, args):
    return (args[0],)


@impl(memref.GetGlobalOp)
def _memref_get_global(interp, op: memref.GetGlobalOp, args):
    name = op.name_.root_reference.data
    mutable = interp.mutable_globals
    if name in mutable:
        return (mutable[name],)
    for g in interp.module.ops:
        if isinstance(g, memref.GlobalOp) and g.sym_name.data == name:
            t = g.type
            tensor_type = TensorType(t.get_element_type(), t.get_shape())
            value = constant_value(g.initial_value, tensor_type)
            if g.constant is None:  # a variable: one buffer per interpreter, from its value
                mutable[name] = value
                return (value,)
            value.setflags(write=False)
            return (value,)
    raise InterpreterError(f"memref.get_global: no memref.global @{name}")


@impl(bufferization.ToTensorOp)
def _to_tensor(interp, op, args):
    return (np.array(args[0], copy=True),)


@impl(bufferization.MaterializeInDestinationOp)
def _materialize_in_destination(interp, op, args):
    source, dest = args
    dest[...] = source
    return ()
