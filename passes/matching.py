"""IR matching helpers shared by the fusion passes (looking through ONNX-style broadcasts).

The ONNX frontend writes numpy broadcasting as `tensor.reshape` (dropping size-1 dims)
followed by `linalg.broadcast`, and scalars as 0-d `arith.constant`s. Fusion patterns want
the value before all that: `source_of` strips it, `scalar_of` reads a broadcast constant.
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects import arith, tensor
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, FloatAttr, MemRefType, TensorType
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import Operation, SSAValue
from xdsl.traits import is_side_effect_free

from q35c.compiler.ir_attrs import (  # noqa: F401  (re-exported for the passes)
    ONNX_NODE_ATTR,
    ORIGIN_ATTRS,
    SOURCE_LINE_ATTR,
    copy_origin,
    origin_of,
)
from q35c.compiler.tensors import constant_value


def owner(value: SSAValue, op_type: type[Operation]) -> Operation | None:
    """The op that defines `value` if it is an `op_type`."""
    op = value.owner
    return op if isinstance(op, op_type) else None


def source_of(value: SSAValue) -> SSAValue:
    """`value` before any `linalg.broadcast` / `tensor.reshape` that only adds dims."""
    while True:
        op = value.owner
        if isinstance(op, linalg.BroadcastOp):
            value = op.input
        elif isinstance(op, tensor.ReshapeOp) and _only_unit_dims_differ(op.source, op.result):
            value = op.source
        else:
            return value


def _only_unit_dims_differ(a: SSAValue, b: SSAValue) -> bool:
    assert isinstance(a.type, TensorType) and isinstance(b.type, TensorType)
    return ([d for d in a.type.get_shape() if d != 1]
            == [d for d in b.type.get_shape() if d != 1])


def scalar_of(value: SSAValue) -> float | None:
    """The number a (broadcast) splat float constant holds, else None."""
    const = owner(source_of(value), arith.ConstantOp)
    if const is None:
        return None
    if isinstance(const.value, FloatAttr):
        return const.value.value.data
    if isinstance(const.value, DenseIntOrFPElementsAttr):
        array = constant_value(const.value, const.result.type)
        if array.size and np.all(array == array.ravel()[0]):
            return float(array.ravel()[0])
    return None


def is_zero_fill(value: SSAValue) -> bool:
    """`value` is a `linalg.fill` of 0.0 (the init of a plain matmul)."""
    fill = owner(value, linalg.FillOp)
    return fill is not None and scalar_of(fill.inputs[0]) == 0.0


def operands_matching(op: Operation, first) -> tuple[SSAValue, SSAValue] | None:
    """(a, b) = op's two operands in the order where `first(a)` is true, for commutative ops."""
    a, b = op.operands
    if first(a):
        return a, b
    if first(b):
        return b, a
    return None


def single_use(value: SSAValue) -> bool:
    return value.has_one_use()


def leading_broadcast_source(value: SSAValue) -> SSAValue:
    """The input of a `linalg.broadcast` that only adds leading dims (numpy-compatible)."""
    op = owner(value, linalg.BroadcastOp)
    if op is None:
        return value
    added = list(op.dimensions.get_values())
    return op.input if added == list(range(len(added))) else value


def _removable(op: Operation) -> bool:
    """Unused, and without effects: xDSL-pure, or a linalg op on values (no memrefs)."""
    if not op.results or any(r.uses for r in op.results):
        return False
    if is_side_effect_free(op):
        return True
    return op.name.startswith("linalg.") and not any(
        isinstance(v.type, MemRefType) for v in (*op.operands, *op.results))


def erase_dead_ops(module: Operation) -> None:
    """Dead-code elimination that also knows tensor-only linalg ops have no effects.

    xDSL's DCE keeps unused `linalg.broadcast`/`linalg.reduce` on tensors (they are not
    marked pure), which would keep whole decomposed chains alive after a fusion.
    """
    changed = True
    while changed:
        changed = False
        for op in reversed(list(module.walk())):
            if op.parent is not None and _removable(op):
                op.detach()
                op.erase()
                changed = True
