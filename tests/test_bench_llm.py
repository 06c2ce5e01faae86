"""The pure helpers of benchmarks/bench_llm.py (benchmarks/llm_protocol.py): perplexity
windows and arithmetic, bits-per-weight accounting. No peer library or model needed."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

from q35c.compiler.generate import windows

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "llm_protocol", ROOT / "benchmarks" / "llm_protocol.py")
proto = importlib.util.module_from_spec(_spec)
sys.modules["llm_protocol"] = proto  # its dataclasses look their module up there
_spec.loader.exec_module(proto)


def test_non_overlapping_windows_drop_the_tail():
    # 10 tokens, windows of 4: [0, 4) and [4, 8) score 3 tokens each; 8, 9 are dropped
    assert list(proto.chunks(10, 4, 4)) == [(0, 4, 1), (4, 8, 5)]
    assert list(proto.chunks(3, 4, 4)) == []


@given(n=st.integers(2, 300), context=st.integers(2, 64), data=st.data())
def test_sliding_windows_are_q35c_perplexity_windows(n, context, data):
    stride = data.draw(st.integers(1, context - 1))
    got = list(proto.chunks(n, context, stride))
    assert got == list(windows(n, context, stride))
    scored = [t for _, end, first in got for t in range(first, end)]
    assert scored == list(range(1, n))


def test_token_nll_by_hand():
    logits = np.array([[0.0, math.log(3.0), 0.0], [1.0, 1.0, 1.0]])
    nll = proto.token_nll(logits, [1, 2])
    assert nll == pytest.approx([-math.log(3 / 5), math.log(3)])


def test_score_matches_a_hand_computation():
    # every row is [0, ln 3, 0]: p(token 1) = 3/5, p(token 0 or 2) = 1/5
    row = np.array([0.0, math.log(3.0), 0.0], np.float32)
    ids = [0, 1, 1, 2, 0, 1, 1, 0]

    def logits_of(tokens):
        return np.tile(row, (len(tokens), 1))

    result = proto.score(logits_of, ids, 4, 4)  # windows [0, 4), [4, 8)
    # scored: ids[1:4] = 1, 1, 2 and ids[5:8] = 1, 1, 0
    expected = 4 * -math.log(3 / 5) + 2 * -math.log(1 / 5)
    assert result.tokens == 6
    assert result.nll == pytest.approx(expected, rel=1e-6)
    assert result.ppl == pytest.approx(math.exp(expected / 6), rel=1e-6)


def test_score_aligns_each_row_with_the_next_token():
    """A model that predicts `token + 1` is perfect on 0, 1, 2, ... and poor if misaligned."""
    vocab, ids = 7, [i % 7 for i in range(40)]

    def logits_of(tokens):
        out = np.zeros((len(tokens), vocab), np.float32)
        out[np.arange(len(tokens)), (np.array(tokens) + 1) % vocab] = 30.0
        return out

    for context, stride in ((8, 8), (8, 3), (16, 5)):
        assert proto.score(logits_of, ids, context, stride).ppl == pytest.approx(1.0, abs=1e-9)
    shifted = [ids[0]] + ids[:-1]
    assert proto.score(logits_of, shifted, 8, 8).ppl > 2


def test_tally_bits_per_weight():
    tally = proto.Tally()
    tally.add(proto.PROJECTION, 1000 * 4, 1000)
    tally.add(proto.PROJECTION, 500 * 3, 500)
    tally.add(proto.LM_HEAD, 200 * 4, 200)
    tally.add(proto.OTHER, 200 * 32 + 10 * 32, 210)  # a float embedding table and norms
    assert tally.bpw(proto.PROJECTION) == pytest.approx(5500 / 1500)
    assert tally.whole_bpw == pytest.approx(tally.total_bits / 1910)
    # the tied table is stored twice (float Gather table, quantized LM head) but is one
    # set of parameters
    tally.unique_params = 1710
    assert tally.whole_bpw == pytest.approx((5500 + 800 + 6720) / 1710)


def test_per_second_takes_the_median_run():
    assert proto.per_second(128, [2.0, 1.0, 100.0]) == pytest.approx(64.0)


def test_q35c_speed_runs_the_c_decoder_at_the_thread_count_asked(tmp_path):
    """bench_llm's q35c c runner on the tiny decoder: it times a prefill and decode steps,
    and each run sets the OpenMP thread count of the C library it runs (libgomp's)."""
    import ctypes

    _bench_spec = importlib.util.spec_from_file_location(
        "bench_llm", ROOT / "benchmarks" / "bench_llm.py")
    bench = importlib.util.module_from_spec(_bench_spec)
    sys.modules["bench_llm"] = bench  # its dataclasses look their module up there
    _bench_spec.loader.exec_module(bench)
    tiny_spec = importlib.util.spec_from_file_location(
        "tiny_decoder", ROOT / "examples" / "smollm2" / "tiny_decoder.py")
    tiny = importlib.util.module_from_spec(tiny_spec)
    tiny_spec.loader.exec_module(tiny)
    tiny.write(tmp_path)
    run = bench.q35c_speed(tmp_path / "decode.onnx", "int8", [1, 2, 3, 4], 3)
    gomp = ctypes.CDLL("libgomp.so.1")
    for threads in (1, 2, 1):
        prefill_s, decode_s = run(threads)
        assert prefill_s > 0 and decode_s > 0
        assert gomp.omp_get_max_threads() == threads
