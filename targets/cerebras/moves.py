"""Pure data movement between the stages of a graph (graph.py): reshapes, transposes,
broadcasts, static slices and concatenations. They change no value, and since a graph's
stages already hand their vectors over through the host, the host does them on the way:
a *move* has no PE region, only an index map.

Every value of a graph is a flat float32 host vector (row-major). A move's output is
`concatenate(flat inputs)[index]`, with `index` computed at compile time by running the op
on arrays of element numbers (`index_map`). run.py and the simulator apply it between
launches; it costs no PE cycles (the host's copies are not in the cycle count, docs/
cerebras.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects import tensor
from xdsl.dialects.builtin import TensorType
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import Operation, SSAValue

from q35c.compiler.diagnostics import Q35cError

MOVE_OPS = (tensor.ReshapeOp, tensor.CollapseShapeOp, tensor.ExpandShapeOp,
            linalg.TransposeOp, linalg.BroadcastOp, tensor.ExtractSliceOp, tensor.ConcatOp)
MOVE_OP_NAMES = frozenset(op.name for op in MOVE_OPS) | {"tensor.empty"}


def shape_of(value: SSAValue) -> tuple[int, ...]:
    if not isinstance(value.type, TensorType):
        raise Q35cError(f"cerebras target: a value of type {value.type} (tensors only)")
    shape = tuple(value.type.get_shape())
    if any(d < 0 for d in shape):
        raise Q35cError(f"cerebras target: a tensor of dynamic shape {shape} (give static "
                        "shapes with --shape)")
    return shape


def data_operands(op: Operation) -> list[SSAValue]:
    """The operands a move reads (not the `tensor.empty` init of linalg ops, nor the shape
    operand of tensor.reshape)."""
    if isinstance(op, (linalg.TransposeOp, linalg.BroadcastOp)):
        return [op.operands[0]]
    if isinstance(op, tensor.ReshapeOp):
        return [op.operands[0]]
    if isinstance(op, tensor.ExtractSliceOp):
        if len(op.operands) != 1:
            raise Q35cError("cerebras target: tensor.extract_slice with dynamic offsets, "
                            "sizes or strides is not mapped")
        return [op.operands[0]]
    return list(op.operands)


def index_map(op: Operation) -> np.ndarray:
    """The flat output of `op` as indices into the concatenation of its flat inputs."""
    ins, offset = [], 0
    for v in data_operands(op):
        shape = shape_of(v)
        size = int(np.prod(shape, dtype=np.int64))
        ins.append(np.arange(offset, offset + size, dtype=np.int64).reshape(shape))
        offset += size
    out_shape = shape_of(op.results[0])
    if isinstance(op, (tensor.ReshapeOp, tensor.CollapseShapeOp, tensor.ExpandShapeOp)):
        out = ins[0].reshape(out_shape)
    elif isinstance(op, linalg.TransposeOp):
        out = np.transpose(ins[0], tuple(op.permutation.get_values()))
    elif isinstance(op, linalg.BroadcastOp):
        dims = tuple(op.dimensions.get_values())
        out = np.broadcast_to(np.expand_dims(ins[0], dims), out_shape)
    elif isinstance(op, tensor.ExtractSliceOp):
        offs = op.static_offsets.get_values()
        sizes = op.static_sizes.get_values()
        strides = op.static_strides.get_values()
        out = ins[0][tuple(slice(o, o + s * st, st) for o, s, st in zip(offs, sizes, strides))]
        out = out.reshape(out_shape)  # a rank-reducing slice drops unit dimensions
    elif isinstance(op, tensor.ConcatOp):
        out = np.concatenate(ins, axis=op.dim.value.data)
    else:  # pragma: no cover - MOVE_OPS lists what is handled
        raise Q35cError(f"cerebras target: {op.name} is not a move")
    if out.shape != out_shape:
        raise Q35cError(f"cerebras target: {op.name} gives shape {out.shape}, its result "
                        f"type says {out_shape}")
    return np.ascontiguousarray(out).reshape(-1)


@dataclass(frozen=True)
class MovePlan:
    """A move: no PEs; `index` into the concatenated inputs."""

    index: np.ndarray
    kind: str = "move"
    width = 0
    height = 0

    @property
    def n(self) -> int:
        return int(self.index.size)

    def roles(self) -> list[str]:
        return []


def apply(plan: MovePlan, inputs: list[np.ndarray]) -> np.ndarray:
    """What the host does: the inputs' flat concatenation, indexed."""
    flat = np.concatenate([np.asarray(v).reshape(-1) for v in inputs])
    return flat[plan.index].copy()
