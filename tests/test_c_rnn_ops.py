"""RNN, GRU and LSTM on the C target against the interpreter (onnx's reference), within
the float path's tolerance: bidirectional and reverse, both layouts, every optional input,
Y_h / Y_c without Y, RNN's Affine activation, GRU's linear_before_reset."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from test_c_quant_ops import _model, _run

T, N, K, H = 4, 3, 5, 6


def _case(op: str, direction: str, layout: int, rng, **attrs):
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    dirs = 2 if direction == "bidirectional" else 1
    x = rng.normal(0, 1, (N, T, K) if layout else (T, N, K)).astype(np.float32)
    state = (N, dirs, H) if layout else (dirs, N, H)
    feeds = {"x": x, "w": rng.normal(0, 0.5, (dirs, gates * H, K)).astype(np.float32),
             "r": rng.normal(0, 0.5, (dirs, gates * H, H)).astype(np.float32),
             "b": rng.normal(0, 0.3, (dirs, 2 * gates * H)).astype(np.float32),
             "h0": rng.normal(0, 0.5, state).astype(np.float32)}
    inputs = ["x", "w", "r", "b", "", "h0"]
    if op == "LSTM":
        feeds["c0"] = rng.normal(0, 0.5, state).astype(np.float32)
        feeds["p"] = rng.normal(0, 0.3, (dirs, 3 * H)).astype(np.float32)
        inputs += ["c0", "p"]
    y = (N, T, dirs, H) if layout else (T, dirs, N, H)
    names = ["y", "yh"] + (["yc"] if op == "LSTM" else [])
    outputs = {"y": (np.float32, y), "yh": (np.float32, state), "yc": (np.float32, state)}
    node = helper.make_node(op, inputs, names, hidden_size=H, direction=direction,
                            layout=layout, **attrs)
    return _model([node], feeds, {n: outputs[n] for n in names}, opset=22), feeds


CASES = [("RNN", "bidirectional", 0, {}), ("RNN", "reverse", 1, {}),
         ("RNN", "forward", 0, {"activations": ["Affine"], "activation_alpha": [0.7],
                                "activation_beta": [0.1]}),
         ("GRU", "bidirectional", 1, {}), ("GRU", "forward", 0, {"linear_before_reset": 1}),
         ("GRU", "reverse", 0, {}), ("LSTM", "bidirectional", 0, {}),
         ("LSTM", "reverse", 1, {})]


@pytest.mark.parametrize("op, direction, layout, attrs", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}{'-' + next(iter(c[3])) if c[3] else ''}"
                              for c in CASES])
def test_recurrent_op_matches_interpreter(tmp_path, op, direction, layout, attrs):
    model, feeds = _case(op, direction, layout, np.random.default_rng(11), **attrs)
    interp = _run(model, feeds, "interp", tmp_path)
    c = _run(model, feeds, "c", tmp_path)
    for name, want in interp.items():
        assert c[name].dtype == want.dtype and c[name].shape == want.shape
        np.testing.assert_allclose(c[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_final_states_without_the_sequence(tmp_path):
    """Y omitted: only Y_h and Y_c are computed and returned."""
    model, feeds = _case("LSTM", "forward", 0, np.random.default_rng(12))
    node = model.graph.node[0]
    node.output[0] = ""
    del model.graph.output[0]
    interp = _run(model, feeds, "interp", tmp_path)
    c = _run(model, feeds, "c", tmp_path)
    assert sorted(c) == ["yc", "yh"]
    for name, want in interp.items():
        np.testing.assert_allclose(c[name], want, rtol=1e-5, atol=1e-6, err_msg=name)
