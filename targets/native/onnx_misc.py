"""Native rules for the generic ONNX ops that fit no other family: Dropout in training
mode (seeded: the reference draws its mask from numpy's RandomState(seed)).
"""

from __future__ import annotations

import numpy as np

from q35c.targets.native.onnx_tensor import _error, _ins, _results, _step, attributes, operands


def lower_training_dropout(lowering, op) -> None:
    """Dropout whose training_mode operand is true or known only at run time (the rule of
    targets/native/onnx_tensor.py hands it here): with a `seed`, the reference's mask
    `RandomState(seed).uniform(0, 1, shape) >= ratio` (MT19937 and numpy's 53-bit doubles,
    runtime/q35rt_misc.c) and `mask * x * (1 / (1 - ratio))`; without one the mask is
    random, so the node is refused."""
    seed = attributes(op).get("seed")
    if seed is None:
        raise _error(lowering, op, "training mode without a seed is not supported (its "
                                   "mask is random)")
    given = operands(op)
    x = _ins(lowering, op, [given[0]])[0]
    rest = _ins(lowering, op, [given[s] for s in (1, 2) if s in given])
    _, out_slots = op.slots()
    outs = _results(lowering, op)
    if int(seed) < 0 or int(seed) > 0xFFFFFFFF:
        raise _error(lowering, op, f"seed {seed} is out of range (numpy's RandomState)")
    _step(lowering, op, "onnx_dropout_train", outs, [x, *rest], {
        "seed": int(seed), "out_slots": out_slots,
        "in_slots": [s for s in (1, 2) if s in given], "x_type": str(np.dtype(x.dtype))})
