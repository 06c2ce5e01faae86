"""Host stages of a graph (graph.py): ops that read only the step's inputs and constants
(directly or through other host stages and moves), such as the mask and RoPE rows an
exporter computes from `attention_mask` and `position_ids` (Cast, GatherND, And, Where,
cos, sin). They are input preparation, not the model's data path: the host evaluates them
between launches with the interpreter's own implementation of the op, so they are exactly
the interpreter's values, and they cost no PE cycles (like the moves, moves.py).

run.py evaluates them the same way: each host stage is written as a one-op function
`s<i>` in `host_ops.mlir`, which run.py runs with q35c's interpreter (so a project with
host stages needs q35c on the host).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, Region

from q35c.compiler.ir_attrs import op_key
from q35c.compiler.weights import WeightStore

HOST_OP_NAMES = frozenset({*(f'q35nn.onnx_node "{t}"' for t in (
    "Cast", "GatherND", "And", "Or", "Not", "Where", "Equal", "Less", "Greater",
    "Range", "Unsqueeze")), "math.cos", "math.sin", "arith.cmpf", "arith.select",
    "arith.sitofp", "arith.subf", "arith.divf"})
"""Ops a graph accepts as host stages (only when every operand is a host-only value: a
function argument, a constant, or the result of host stages and moves of those)."""


@dataclass(frozen=True)
class HostPlan:
    """A host stage: the op, evaluated by the host; no PEs."""

    op: Operation
    n: int = 0
    width = 0
    height = 0

    def roles(self) -> list[str]:
        return []


def is_host_op(op: Operation) -> bool:
    return op_key(op) in HOST_OP_NAMES


def evaluate(op: Operation, args: list[np.ndarray]) -> np.ndarray:
    """The op's result, by the interpreter's implementation of it."""
    from q35c.semantics import Interpreter
    from q35c.semantics.core import IMPLEMENTATIONS

    interp = Interpreter(ModuleOp([]), WeightStore())
    (out,) = IMPLEMENTATIONS[type(op)](interp, op, args)
    return np.asarray(out)


def host_module(stages: list[tuple[int, Operation]]) -> ModuleOp:
    """One function `s<i>` per host stage: its operands as arguments, the op, the return."""
    fns = []
    for i, op in stages:
        block = Block(arg_types=[v.type for v in op.operands])
        clone = op.clone()
        for k, arg in enumerate(block.args):
            clone.operands[k] = arg
        block.add_ops([clone, func.ReturnOp(*clone.results)])
        fns.append(func.FuncOp(f"s{i}", ([v.type for v in op.operands],
                                         [r.type for r in op.results]), Region(block)))
    return ModuleOp(fns)
