"""The Cerebras target on SmolLM2-135M with real weights: the 2-layer cut's decode step.

Slow: it needs examples/smollm2/export.py's outputs (docs/smollm2.md); the `cut` fixture
(test_groq_smollm2.py) finds them, exports them, or skips (fails under CI). The step is
compiled with `weights=f16` (packed or decoded tiles of the 576 x 49,152 LM head would
take hours in the Python simulator) and `v_tile=256` (so the stages fit a WSE-2's width).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import q35c
from test_cerebras_decode import TARGET_PASSES
from test_groq_smollm2 import cut, decode_inputs, decode_shapes  # noqa: F401 (fixture)
from xdsl.parser import Parser

from q35c.compiler.context import make_context
from q35c.compiler.weights import store_of
from q35c.semantics import Interpreter
from q35c.targets.cerebras.graph import numeric_mode

TARGET = "cerebras{weights=f16 v_tile=256 seeds=1}"


@pytest.mark.slow
def test_layers2_decode_step_simulates_bit_exactly(cut, tmp_path):  # noqa: F811
    """`q35c run --target cerebras` (compile, static checks, the tile simulator) equals the
    interpreter's numeric mode for the target on every output (logits, the present KV of
    both layers), and stays within float32 round-off of the interpreter's default mode."""
    graph = cut / "decode.dynamo.onnx"
    shapes = decode_shapes(graph)
    result = q35c("run", graph, *shapes, *decode_inputs(graph, tmp_path / "in"),
                  "--target", TARGET, "-o", tmp_path / "run")
    line = next(x for x in result.stdout.splitlines() if "cycles simulated" in x)
    kinds = dict(re.findall(r"(\w+) x\d+ (\d+)", line))
    assert {"gemv", "attention", "rms_norm", "swiglu", "gather"} <= set(kinds), line
    ir = tmp_path / "ir"
    q35c(graph, *shapes, "--target", "mlir", "--passes", TARGET_PASSES, "-o", ir)
    module = Parser(make_context(), (ir / "decode.dynamo.mlir").read_text()).parse_module()
    ops = {op.name for op in module.walk()}
    assert "q35nn.attention" in ops and "q35nn.batch_matmul" not in ops
    store = store_of(module, ir)
    ins = {p.stem: np.load(p) for p in (tmp_path / "in").glob("*.npy")}
    want = Interpreter(module, store, overrides=numeric_mode(0, 0, 256, "f16")).run(ins)
    ref = Interpreter(module, store).run(ins)
    names = sorted(want)
    assert "logits" in names and sum(n.startswith("present.") for n in names) == 4
    for name in names:
        got = np.load(tmp_path / "run" / f"{name}.npy").reshape(want[name].shape)
        assert np.array_equal(got.view(np.uint32), want[name].view(np.uint32)), name
        assert np.allclose(got, ref[name], rtol=0, atol=2e-3 * np.abs(ref[name]).max()), name
