"""Native rules for the generic ONNX ops that fit no other family: Dropout in training
mode (seeded: the reference draws its mask from numpy's RandomState(seed)) and DFT.
"""

from __future__ import annotations

import numpy as np

from q35c.targets.native.onnx_node import lowers
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


@lowers("DFT")
def lower_dft(lowering, op) -> None:
    """The discrete Fourier transform along one axis (forward, inverse, one-sided, or a
    one-sided inverse: numpy's fft / ifft / rfft-like slice / irfft), as the reference
    computes it; the axis (opset 20: an operand) and dft_length may be read at run time,
    the output's static shape must then agree (the run fails otherwise)."""
    attrs = attributes(op)
    given = operands(op)
    x = _ins(lowering, op, [given[0]])[0]
    [out] = _results(lowering, op)
    rest = {s: _ins(lowering, op, [given[s]])[0] for s in (1, 2) if s in given}
    params = {"shape": list(x.shape), "out_shape": list(out.shape),
              "inverse": bool(attrs.get("inverse", 0)),
              "onesided": bool(attrs.get("onesided", 0)), "in_slots": sorted(rest),
              "axis": int(attrs.get("axis", 1 if op.opset.value.data < 20 else -2))}
    if x.shape[-1] not in (1, 2) or out.shape[-1] not in (1, 2):
        raise _error(lowering, op, "the last axis must hold a real or complex value (1 or 2)")
    _step(lowering, op, "onnx_dft", [out], [x, *(rest[s] for s in sorted(rest))], params)


@lowers("NonMaxSuppression")
def lower_nms(lowering, op) -> None:
    """Per batch and class, the reference's greedy selection (scores above the threshold,
    highest first, ties by lower index, dropped when their IoU with a selected box exceeds
    the threshold, at most max_output_boxes_per_class), in float32 as the reference's
    numpy scalars compute; the number selected must be the output's static extent (the
    run fails otherwise)."""
    given = operands(op)
    if 2 not in given:
        raise _error(lowering, op, "max_output_boxes_per_class is required")
    boxes, scores = _ins(lowering, op, [given[0], given[1]])
    rest = {s: _ins(lowering, op, [given[s]])[0] for s in (2, 3, 4) if s in given}
    [out] = _results(lowering, op)
    if boxes.dtype != np.float32 or scores.dtype != np.float32:
        raise _error(lowering, op, "boxes and scores must be float32")
    n = boxes.shape[1]
    scratch = lowering.new("arena", np.dtype(np.int64), (2 * n,), "nms")
    _step(lowering, op, "onnx_nms", [out, scratch],
          [boxes, scores, *(rest[s] for s in sorted(rest))],
          {"batches": boxes.shape[0], "classes": scores.shape[1], "boxes": n,
           "center": int(attributes(op).get("center_point_box", 0)),
           "in_slots": sorted(rest), "selected": out.shape[0]})
