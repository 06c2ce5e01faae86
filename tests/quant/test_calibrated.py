"""Calibrated Q3P5 encoders (compiler/quant/calibrated.py), calibration statistics
(compiler/calibration.py) and their CLI (`q35c calibrate`, `--calibration`)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, q35c
from hypothesis import given, settings, strategies as st

from q35c.compiler.quant import Q3P5Tensor, dequantize, quantize
from q35c.compiler.quant.calibrated import (
    _LEVELS,
    _nearest_codes,
    output_error,
    quantize_calibrated,
)

TEXT = ("The lighthouse keepers trimmed the wicks at dusk, polished the lenses and wrote the "
        "weather in their books. Ships passed on the horizon, and the light turned all night. ")


def _correlated_layer(seed: int, k: int, n: int, rho: float, tokens: int = 512):
    """W [k, n] and the Gram matrix of inputs whose neighbouring features correlate (an
    AR(1) process along K with coefficient rho) and whose scales differ per feature."""
    rng = np.random.default_rng(seed)
    x = np.empty((tokens, k))
    x[:, 0] = rng.standard_normal(tokens)
    for i in range(1, k):
        x[:, i] = rho * x[:, i - 1] + np.sqrt(1 - rho**2) * rng.standard_normal(tokens)
    x *= np.exp(rng.standard_normal(k))
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    return w, x.T @ x


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), k=st.sampled_from([64, 96, 128]),
       n=st.integers(8, 48), rho=st.floats(0.5, 0.95))
def test_gptq_reduces_output_error_against_round_to_nearest(seed, k, n, rho):
    w, gram = _correlated_layer(seed, k, n, rho)
    rtn = output_error(w, dequantize(quantize(w)), gram)
    gptq = output_error(w, dequantize(quantize_calibrated(w, gram)), gram)
    assert gptq < rtn


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), rho=st.floats(0.0, 0.9))
def test_imatrix_reduces_output_error_with_uneven_feature_scales(seed, rho):
    w, gram = _correlated_layer(seed, 64, 32, rho)
    rtn = output_error(w, dequantize(quantize(w)), gram)
    weighted = output_error(w, dequantize(quantize_calibrated(w, gram, method="imatrix")),
                            gram)
    assert weighted < rtn


@pytest.mark.parametrize("method", ["gptq", "imatrix"])
def test_calibrated_words_fit_the_budget_like_round_to_nearest(method):
    """At K = 576 the calibrated encoders share float16 words by column blocks exactly as
    `quantize` does (the format's <= 3.75 bits per weight), and still beat it on the
    output error; the tensor round-trips through version 2."""
    from q35c.compiler.quant import word_layout

    w, gram = _correlated_layer(11, 576, 96, 0.8, tokens=1024)
    q = quantize_calibrated(w, gram, method=method)
    assert q.words == word_layout(w.shape) == quantize(w).words
    assert q.words[1] == "float16" and q.bits_per_weight() <= 3.75
    blob = q.to_bytes()
    assert Q3P5Tensor.from_bytes(blob).to_bytes() == blob
    assert output_error(w, dequantize(q), gram) < output_error(w, dequantize(quantize(w)), gram)


def test_candidate_search_finds_the_metric_nearest_code():
    """The restricted search agrees with a search over all 128 codes for metrics of the
    anisotropy GPTQ's pair metrics have (condition number <= 20)."""
    rng = np.random.default_rng(0)
    agree = total = 0
    for _ in range(50):
        a = rng.standard_normal((2, 2))
        u, _, vt = np.linalg.svd(a)
        metric = u @ np.diag([1.0, rng.uniform(1 / 20, 1)]) @ u.T
        y = rng.standard_normal((400, 2)) * 40
        fast = _nearest_codes(y, metric)
        d = y[:, None, :] - _LEVELS[None]
        full = np.einsum("nci,ij,ncj->nc", d, metric, d).argmin(axis=1)
        cost = np.einsum("ni,ij,nj->n", y - _LEVELS[fast], metric, y - _LEVELS[fast])
        best = np.einsum("ni,ij,nj->n", y - _LEVELS[full], metric, y - _LEVELS[full])
        agree += int(np.sum(cost <= best + 1e-9))
        total += len(y)
    assert agree / total > 0.995


@pytest.mark.parametrize("k", [64, 70, 33])
def test_calibrated_tensors_are_valid_q3p5_and_deterministic(k):
    w, gram = _correlated_layer(1, k, 20, 0.8)
    a = quantize_calibrated(w, gram)
    b = quantize_calibrated(w, gram)
    assert a.to_bytes() == b.to_bytes()
    back = Q3P5Tensor.from_bytes(a.to_bytes())
    assert np.array_equal(dequantize(back), dequantize(a))
    assert dequantize(a).shape == (k, 20)


def test_bad_statistics_shape_is_a_value_error():
    w, gram = _correlated_layer(2, 64, 8, 0.5)
    with pytest.raises(ValueError, match="do not fit"):
        quantize_calibrated(w, gram[:32, :32], name="w")
    with pytest.raises(ValueError, match="unknown calibrated method"):
        quantize_calibrated(w, gram, method="awq", name="w")


# -- the command line, on the tiny decoder of tests/test_generate.py ------------------------


def _tiny_module():
    spec = importlib.util.spec_from_file_location(
        "tiny_decoder", EXAMPLES / "smollm2" / "tiny_decoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    pytest.importorskip("tokenizers")
    out = tmp_path_factory.mktemp("tiny")
    _tiny_module().write(out)
    (out / "calibration.txt").write_text(TEXT * 4)
    return out


def _shapes(model: Path) -> list[str]:
    from q35c.compiler.generate import static_shapes

    return [a for name, dims in static_shapes(model, 8, 8).items()
            for a in ("--shape", f"{name}={','.join(map(str, dims))}")]


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_calibrate_then_compile_is_byte_identical_and_records_output_errors(tiny, tmp_path):
    model = tiny / "decode.onnx"
    stats = [tmp_path / "a.npz", tmp_path / "b.npz"]
    for out in stats:
        q35c("calibrate", model, "--tokenizer", tiny / "tokenizer.json", "--text",
             tiny / "calibration.txt", "-o", out, "--window", "64")
    assert stats[0].read_bytes() == stats[1].read_bytes()
    digests = []
    for i, calibration in enumerate([stats[0], tiny / "calibration.txt"]):
        out = tmp_path / f"out{i}"
        q35c(model, *_shapes(model), "--calibration", calibration, "--tokenizer",
             tiny / "tokenizer.json", "--target", "c", "-o", out)
        digests.append(_tree_digest(out))
    # statistics from the text on the fly (window 256 > the text: one window of all its
    # tokens) differ from 64-token windows, so compare each with a rerun of itself
    out = tmp_path / "again"
    q35c(model, *_shapes(model), "--calibration", stats[0], "--target", "c", "-o", out)
    assert _tree_digest(out) == digests[0]
    ir = q35c(model, *_shapes(model), "--calibration", stats[0]).stdout
    assert "q35c.output_error" in ir
    options = f'quantize-weights{{calibration="{stats[0]}" act-order=false damp=0.01}}'
    ordered = q35c(model, *_shapes(model), "--passes", options).stdout
    assert "q35c.output_error" in ordered and ordered != ir
    plain = q35c(model, *_shapes(model)).stdout
    assert "q35c.output_error" not in plain


def test_calibrated_weights_lower_the_output_error_of_the_tiny_decoder(tiny, tmp_path):
    from q35c.compiler.calibration import StatisticsFile, calibrate_text
    from q35c.compiler.quant.calibrated import output_error as err
    from q35c.compiler.weights import WeightStore  # noqa: F401  (store API under test below)

    stats_path = tmp_path / "s.npz"
    calibrate_text(tiny / "decode.onnx", tiny / "calibration.txt", tiny / "tokenizer.json",
                   stats_path, window=64)
    import onnx
    from onnx import numpy_helper

    stats = StatisticsFile(stats_path)
    inits = {i.name: numpy_helper.to_array(i)
             for i in onnx.load(str(tiny / "decode.onnx")).graph.initializer}
    compared = 0
    for name, w in inits.items():
        if w.ndim != 2 or name not in stats:
            continue
        gram = stats.gram(name, w.shape[0])
        rtn = err(w, dequantize(quantize(w)), gram)
        gptq = err(w, dequantize(quantize_calibrated(w, gram)), gram)
        assert gptq <= rtn * 1.001, name
        compared += 1
    assert compared >= 4


def test_perplexity_with_calibration_runs(tiny, tmp_path):
    text = tmp_path / "eval.txt"
    text.write_text("It was a bright cold day in April, and the clocks were striking.")
    result = q35c("perplexity", tiny / "decode.onnx", "--tokenizer", tiny / "tokenizer.json",
                  "--text", text, "--context", "16", "--stride", "8",
                  "--calibration", tiny / "calibration.txt")
    assert result.stdout.startswith("perplexity ")


@pytest.mark.parametrize("kind,message", [
    ("no-tokenizer", "needs --tokenizer"),
    ("short", "at least 16 are needed"),
    ("corrupt", "not a q35c calibration statistics file"),
    ("missing", "missing.txt"),
    ("other-model", "match none of the model's matmul weights"),
    ("bad-method", "method"),
    ("bad-damp", "option damp must be in (0, 10]"),
    ("bad-refine", "option 'refine' must be an integer in [0, 16]"),
])
def test_bad_calibration_is_one_line_exit_2(tiny, tmp_path, kind, message):
    model = tiny / "decode.onnx"
    args = ["--calibration"]
    tokenizer = ["--tokenizer", tiny / "tokenizer.json"]
    passes: list = []
    if kind == "no-tokenizer":
        args += [tiny / "calibration.txt"]
        tokenizer = []
    elif kind == "short":
        (tmp_path / "short.txt").write_text("tiny")
        args += [tmp_path / "short.txt"]
    elif kind == "corrupt":
        (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
        args += [tmp_path / "bad.npz"]
    elif kind == "missing":
        args += [tmp_path / "missing.txt"]
    elif kind == "other-model":
        from q35c.compiler.calibration import Statistics

        other = Statistics([np.eye(64, dtype=np.float32)], [10], {"not.a.weight": 0})
        other.save(tmp_path / "other.npz")
        args += [tmp_path / "other.npz"]
    else:
        args += [tiny / "calibration.txt"]
        option = {"bad-method": "method=awq", "bad-damp": "damp=0.0"}.get(kind, "refine=17")
        passes = ["--passes", f"quantize-weights{{{option}}}"]
    result = q35c(model, *_shapes(model), *args, *tokenizer, *passes, check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_verification_bounds_hold_on_calibrated_weights(tiny, tmp_path):
    """The default pipeline's verification passes accept calibrated weights, and the
    --report table is produced from the packed weights the calibrated encoder chose."""
    model = tiny / "decode.onnx"
    result = q35c(model, *_shapes(model), "--calibration", tiny / "calibration.txt",
                  "--tokenizer", tiny / "tokenizer.json", "--report", "-o", tmp_path / "o",
                  "--target", "c")
    assert result.returncode == 0


# -- bit allocation (quantize-weights{bpw=B}, --bpw) -----------------------------------------


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), extra=st.floats(0.0, 0.8))
def test_allocation_stays_within_budget_and_leaves_no_affordable_upgrade(seed, extra):
    from q35c.passes.quantize_allocation import allocate, choice_for

    rng = np.random.default_rng(seed)
    weights = {f"w{i}": (rng.standard_normal((k, n)) * rng.uniform(0.1, 2)).astype(np.float32)
               for i, (k, n) in enumerate([(256, 48), (512, 32), (384, 64)])}
    choices = [choice_for(name, w, None) for name, w in weights.items()]
    params = sum(c.shape[0] * c.shape[1] for c in choices)
    bpw = sum(c.bits[0] for c in choices) / params + extra
    allocate(choices, bpw)
    spent = sum(c.bits[c.chosen] for c in choices)
    assert spent <= bpw * params
    for c in choices:
        assert (c.chosen + 1 == len(c.sizes)
                or spent + c.bits[c.chosen + 1] - c.bits[c.chosen] > bpw * params
                or c.errors[c.chosen + 1] >= c.errors[c.chosen])  # no gain: not taken


def test_allocation_gives_the_important_weight_the_finer_group():
    from q35c.passes.quantize_allocation import allocate, choice_for

    rng = np.random.default_rng(3)
    w = (rng.standard_normal((512, 64))).astype(np.float32)
    w[::37] *= 20  # outlier rows: a coarse group follows them badly
    plain = rng.standard_normal((512, 64)).astype(np.float32)
    choices = [choice_for("outliers", w, None), choice_for("plain", plain, None)]
    budget = (choices[0].bits[1] + choices[1].bits[0]) / (2 * 512 * 64)
    allocate(choices, budget)
    assert choices[0].chosen >= 1 and choices[1].chosen == 0


def test_bpw_cli_prints_the_allocation_and_refuses_a_budget_too_small(tiny, tmp_path):
    model = tiny / "decode.onnx"
    result = q35c(model, *_shapes(model), "--bpw", "6")
    assert "bit allocation total:" in result.stderr
    assert "lm_head" in result.stderr
    small = q35c(model, *_shapes(model), "--bpw", "3.6", check=False)  # < 3.5 + 7/128
    assert small.returncode == 2 and "need at least" in small.stderr
    assert len(small.stderr.strip().splitlines()) == 1


# -- GPTQ options: act-order (static groups), dampening --------------------------------------


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), k=st.sampled_from([64, 80, 97]), n=st.integers(4, 24))
def test_act_order_with_a_diagonal_hessian_changes_nothing(seed, k, n):
    """Uncorrelated inputs: no error feedback, so the walk order cannot matter and the
    static group codes equal the dynamic ones; any slip of the pair permutation (codes
    stored at the wrong pair, a group's scale taken for another) breaks the equality."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    gram = np.diag(np.exp(2 * rng.standard_normal(k)))
    plain = quantize_calibrated(w, gram, act_order=False)
    ordered = quantize_calibrated(w, gram, act_order=True)
    assert ordered.to_bytes() == plain.to_bytes()


@pytest.mark.parametrize("act_order", [False, True])
def test_act_order_and_damp_give_valid_deterministic_tensors(act_order):
    w, gram = _correlated_layer(3, 96, 40, 0.9)
    gram[:, 7] *= 30
    gram[7, :] *= 30
    a = quantize_calibrated(w, gram, act_order=act_order, damp=0.1)
    b = quantize_calibrated(w, gram, act_order=act_order, damp=0.1)
    assert a.to_bytes() == b.to_bytes()
    assert Q3P5Tensor.from_bytes(a.to_bytes()).shape == (96, 40)
    rtn = output_error(w, dequantize(quantize(w)), gram)
    assert output_error(w, dequantize(a), gram) < rtn


def test_calibration_statistics_equal_the_reference_semantics_inputs(tiny):
    """The fast calibration run (BLAS matmuls, numpy softmax/activations, one update per
    distinct input, the logits not computed) gives the Gram matrices of the inputs the
    reference interpreter computes, and counts each token once per matrix."""
    from q35c.compiler import calibration as cal
    from q35c.compiler.cli import _options
    from q35c.compiler.driver import compile_to_module, get_target
    from q35c.compiler.weights import store_of
    from q35c.semantics import IMPLEMENTATIONS, run_module

    model, ids = tiny / "decode.onnx", list(range(3, 35))
    shapes, inputs = cal._token_inputs(model, 16)
    options = _options("interp", "", None, False, None, (), None)
    options.shapes = shapes
    _, module = compile_to_module(model, options, get_target("interp"))
    store = store_of(module)
    watched, fast = cal.watched_matmuls(module)
    assert any(cal._feeds_only_outputs(op) for op in watched)  # the LM head
    with cal.observing(watched, fast):
        for begin in (0, 16):
            run_module(module, store, inputs(ids[begin:begin + 16]))
    _, reference = cal.watched_matmuls(module)
    originals = {t: IMPLEMENTATIONS[t] for t in (cal.linalg.MatmulOp, cal.q35nn.BatchMatmulOp)}
    seen: dict[int, set[int]] = {}

    def capture(run):
        def observed(interp, op, args):
            index = watched.get(op)
            if index is not None and id(args[0]) not in seen.setdefault(index, set()):
                seen[index].add(id(args[0]))
                reference.add(index, np.asarray(args[0], np.float64))
            return run(interp, op, args)
        return observed

    try:
        for t, run in originals.items():
            IMPLEMENTATIONS[t] = capture(run)
        for begin in (0, 16):
            seen.clear()
            run_module(module, store, inputs(ids[begin:begin + 16]))
    finally:
        IMPLEMENTATIONS.update(originals)
    assert fast.rows == reference.rows == [32] * len(fast.rows)
    for got, want in zip(fast.grams, reference.grams, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-4 * np.abs(want).max())


def _damped_objective(w, deq, gram, damp):
    """tr(D^T (H + damp * mean(diag H) * I) D): what the refinement descends on."""
    h = np.asarray(gram, np.float64)
    h = h + damp * np.mean(np.diag(h)) * np.eye(h.shape[0])
    d = np.asarray(w, np.float64) - np.asarray(deq, np.float64)
    return float(np.einsum("ij,ij->", d, h @ d))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31), k=st.sampled_from([64, 70, 97]), n=st.integers(4, 24),
       act_order=st.booleans(), scales=st.booleans())
def test_refinement_never_raises_the_objective_and_is_deterministic(seed, k, n, act_order,
                                                                    scales):
    """Coordinate descent after the walk (codes, and with `scales` the group codes) only
    accepts changes that lower the dampened output error; odd K and partial groups (a
    padding partner) included; the result is a valid, deterministic tensor."""
    w, gram = _correlated_layer(seed, k, n, 0.8)
    w = w + np.float32(0.02) * np.random.default_rng(seed).standard_normal(n, np.float32)
    plain = quantize_calibrated(w, gram, act_order=act_order)
    refined = quantize_calibrated(w, gram, act_order=act_order, refine=2, scales=scales)
    again = quantize_calibrated(w, gram, act_order=act_order, refine=2, scales=scales)
    assert refined.to_bytes() == again.to_bytes()
    back = Q3P5Tensor.from_bytes(refined.to_bytes())
    assert np.array_equal(dequantize(back), dequantize(refined))
    before = _damped_objective(w, dequantize(plain), gram, 0.1)
    after = _damped_objective(w, dequantize(refined), gram, 0.1)
    assert after <= before * (1 + 1e-9)
