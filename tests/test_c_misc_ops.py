"""Dropout in training mode, DFT and NonMaxSuppression on the C target against the
interpreter (onnx's reference): the dropout mask bit for bit (numpy's RandomState stream),
the transforms within the float path's tolerance, the selected boxes exactly."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator
from test_c_quant_ops import _agree, _model, _run

from q35c.compiler.diagnostics import Q35cError


@pytest.mark.parametrize("train", [True, False])
def test_training_dropout_matches_numpy_random_state(tmp_path, train):
    rng = np.random.default_rng(21)
    feeds = {"x": rng.normal(0, 1, (3, 700)).astype(np.float32),
             "r": np.array(0.3, np.float32), "t": np.array(train)}
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y", "mask"], seed=1234)
    model = _model([node], feeds, {"y": (np.float32, (3, 700)), "mask": (np.bool_, (3, 700))},
                   opset=22)
    c = _agree(model, feeds, tmp_path)
    assert c["mask"].all() != train  # training drops some (ratio 0.3 of 2100 values)


def test_training_dropout_without_a_seed_is_refused(tmp_path):
    feeds = {"x": np.ones((2, 3), np.float32), "r": np.array(0.3, np.float32),
             "t": np.array(True)}
    model = _model([helper.make_node("Dropout", ["x", "r", "t"], ["y"], name="drop")], feeds,
                   {"y": (np.float32, (2, 3))}, opset=22)
    with pytest.raises(Q35cError, match="without a seed") as err:
        _run(model, feeds, "c", tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("attrs, length, channels, out_len, out_c", [
    ({"axis": 1, "onesided": 1}, 12, 1, 7, 2),              # rfft, dft_length pads
    ({"axis": 1}, 7, 2, 7, 2),                              # complex forward, truncates
    ({"axis": 1, "inverse": 1}, None, 2, 9, 2),              # inverse
    ({"axis": 1, "inverse": 1, "onesided": 1}, 9, 2, 9, 1),  # irfft, odd length
    ({"axis": 2, "inverse": 1, "onesided": 1}, None, 2, 8, 1),  # irfft, default length
], ids=["rfft-pad", "fft-trunc", "ifft", "irfft-odd", "irfft-axis2"])
def test_dft_matches_interpreter(tmp_path, attrs, length, channels, out_len, out_c):
    rng = np.random.default_rng(22)
    shape = (2, 9, 5, channels)
    feeds = {"x": rng.normal(0, 1, shape).astype(np.float32)}
    inputs = ["x"]
    if length is not None:
        feeds["n"] = np.array(length, np.int64)
        inputs.append("n")
    out_shape = list(shape)
    out_shape[attrs["axis"]] = out_len
    out_shape[-1] = out_c
    model = _model([helper.make_node("DFT", inputs, ["y"], **attrs)], feeds,
                   {"y": (np.float32, tuple(out_shape))}, opset=19)
    want = _run(model, feeds, "interp", tmp_path)["y"]
    got = _run(model, feeds, "c", tmp_path)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("center", [0, 1])
def test_non_max_suppression_matches_interpreter(tmp_path, center):
    rng = np.random.default_rng(23 + center)
    corners = rng.uniform(0, 10, (2, 30, 4)).astype(np.float32)
    feeds = {"boxes": corners, "scores": rng.uniform(0, 1, (2, 3, 30)).astype(np.float32),
             "limit": np.array([5], np.int64), "iou": np.array([0.3], np.float32),
             "score": np.array([0.2], np.float32)}
    node = helper.make_node("NonMaxSuppression", list(feeds), ["sel"],
                            center_point_box=center)
    probe = _model([node], feeds, {"sel": (np.int64, (None, 3))}, opset=11)
    count = ReferenceEvaluator(probe).run(None, feeds)[0].shape[0]
    model = _model([node], feeds, {"sel": (np.int64, (count, 3))}, opset=11)
    c = _agree(model, feeds, tmp_path)
    assert 10 < c["sel"].shape[0] <= 30


@pytest.mark.parametrize("mode, weighted", [("TF", False), ("IDF", True), ("TFIDF", True)])
def test_tfidf_vectorizer_matches_interpreter(tmp_path, mode, weighted):
    """Uni-, bi- and trigrams with skips over a batch of int64 rows (IDF and TFIDF with
    weights: onnx's reference fails without them)."""
    rng = np.random.default_rng(24)
    feeds = {"x": rng.integers(0, 6, (3, 16), dtype=np.int64)}
    pool = [1, 2, 3, 4, 1, 2, 2, 3, 5, 1, 0, 4, 1, 2, 3, 5, 5, 0]
    attrs = {"mode": mode, "min_gram_length": 1, "max_gram_length": 3, "pool_int64s": pool,
             "max_skip_count": 2, "ngram_counts": [0, 4, 12],
             "ngram_indexes": [7, 0, 1, 2, 3, 4, 5, 6, 8, 9]}
    if weighted:
        attrs["weights"] = [0.1 * (k + 1) for k in range(10)]
    node = helper.make_node("TfIdfVectorizer", ["x"], ["y"], **attrs)
    c = _agree(_model([node], feeds, {"y": (np.float32, (3, 10))}, opset=9), feeds, tmp_path)
    assert c["y"].any()


@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.bool_],
                         ids=lambda t: np.dtype(t).name)
def test_nonzero_matches_interpreter(tmp_path, dtype):
    """Row-major indices, NaN counted and -0.0 not (numpy's nonzero)."""
    rng = np.random.default_rng(25)
    x = rng.integers(0, 3, (3, 4, 5)).astype(dtype)
    if dtype == np.float32:
        x.reshape(-1)[[0, 7]] = [np.nan, -0.0]
    feeds = {"x": x}
    count = int(np.count_nonzero(x))
    _agree(_model([helper.make_node("NonZero", ["x"], ["y"])], feeds,
                  {"y": (np.int64, (3, count))}, opset=13), feeds, tmp_path)


@pytest.mark.parametrize("channels, window, onesided", [(1, True, 1), (2, False, 0)])
def test_stft_matches_interpreter(tmp_path, channels, window, onesided):
    """Frames every 5 samples (the last ones zero-padded), a Hann-like window or none."""
    rng = np.random.default_rng(26)
    feeds = {"x": rng.normal(0, 1, (2, 40, channels)).astype(np.float32),
             "step": np.array(5, np.int64)}
    inputs = ["x", "step"]
    if window:
        feeds["w"] = (0.5 - 0.5 * np.cos(np.arange(12) / 12 * 2 * np.pi)).astype(np.float32)
        inputs.append("w")
    else:
        feeds["n"] = np.array(12, np.int64)
        inputs += ["", "n"]
    bins = 7 if onesided else 12
    model = _model([helper.make_node("STFT", inputs, ["y"], onesided=onesided)], feeds,
                   {"y": (np.float32, (2, 6, bins, 2))}, opset=17)
    want = _run(model, feeds, "interp", tmp_path)["y"]
    got = _run(model, feeds, "c", tmp_path)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_det_matches_interpreter(tmp_path):
    """Batched 4x4 determinants, one of them singular, one needing a row swap."""
    rng = np.random.default_rng(27)
    x = rng.normal(0, 1, (3, 4, 4)).astype(np.float32)
    x[1, 3] = x[1, 0]
    x[2, 0, 0] = 0
    feeds = {"x": x}
    model = _model([helper.make_node("Det", ["x"], ["y"])], feeds, {"y": (np.float32, (3,))},
                   opset=22)
    want = _run(model, feeds, "interp", tmp_path)["y"]
    got = _run(model, feeds, "c", tmp_path)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
