"""Native rules for ONNX's recurrent ops RNN, GRU and LSTM, as onnx's reference computes
them (the semantics q35c's interpreter has): forward, reverse or bidirectional, layout 0 or
1, optional bias, initial states and peepholes; RNN's activation Tanh or Affine, GRU and
LSTM with sigmoid and tanh (the reference does not read their `activations`, `clip` or
`sequence_lens`, so neither does this), GRU's `linear_before_reset`.

One step per node (targets/c/onnx_rnn.py); its scratch (the states and gates in double) is
an arena buffer.
"""

from __future__ import annotations

import numpy as np

from q35c.targets.native.onnx_node import lowers
from q35c.targets.native.onnx_tensor import _error, _ins, _results, _step, attributes, operands

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


@lowers("RNN", "GRU", "LSTM")
def lower_rnn(lowering, op) -> None:
    op_type = op.op_type.data
    attrs = attributes(op)
    given = operands(op)
    x, w, r = _ins(lowering, op, [given[0], given[1], given[2]])
    optional = {s: _ins(lowering, op, [given[s]])[0] for s in (3, 5, 6, 7) if s in given}
    _, out_slots = op.slots()
    outs = _results(lowering, op)
    layout = int(attrs.get("layout", 0))
    direction = attrs.get("direction", "forward")
    dirs, hidden = w.shape[0], r.shape[-1]
    if direction not in ("forward", "reverse", "bidirectional") or \
            dirs != (2 if direction == "bidirectional" else 1):
        raise _error(lowering, op, f"direction '{direction}' does not match the weights")
    steps, batch = (x.shape[1], x.shape[0]) if layout else (x.shape[0], x.shape[1])
    params = {"op": op_type, "layout": layout, "reverse": direction == "reverse",
              "dirs": dirs, "steps": steps, "batch": batch, "input": x.shape[2],
              "hidden": hidden, "gates": GATES[op_type], "out_slots": out_slots,
              "in_slots": sorted(optional), "lbr": int(attrs.get("linear_before_reset", 0))}
    if op_type == "RNN":
        act = attrs.get("activations") or ["Tanh"]
        name = act[0].decode() if isinstance(act[0], bytes) else act[0]
        if name.lower() not in ("tanh", "affine"):
            raise _error(lowering, op, f"activation '{name}' is not supported (Tanh, "
                                       "Affine)")
        params["act"] = name.lower()
        if params["act"] == "affine":
            params["alpha"] = float((attrs.get("activation_alpha") or [0.0])[0])
            params["beta"] = float((attrs.get("activation_beta") or [0.0])[0])
    gates = GATES[op_type] * hidden
    scratch = lowering.new("arena", np.dtype(np.float64),
                           (2 * batch * hidden + gates + hidden,), "rnn")
    _step(lowering, op, "onnx_rnn", [*outs, scratch],
          [x, w, r, *(optional[s] for s in sorted(optional))], params)
