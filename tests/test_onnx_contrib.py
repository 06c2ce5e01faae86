"""onnxruntime contrib ops (compiler/frontends/onnx/contrib.py) against onnxruntime itself:
the fused normalizations and GroupQueryAttention that onnxruntime-genai's model builder
writes, on the interpreter and the C target."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.driver import Options, run_file

F = TensorProto.FLOAT


def _model(tmp_path, nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, "m", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return path


def _check(tmp_path, path, feeds, target, rtol=2e-6):
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    names = [o.name for o in onnx.load(path).graph.output]
    got = run_file(path, feeds, tmp_path / f"out-{target}", Options(target=target, passes=""))
    for name, w in zip(names, want):
        g = got[name]
        assert g.shape == w.shape, name
        scale = max(float(np.max(np.abs(w))), 1e-30)
        assert float(np.max(np.abs(g - w))) / scale < rtol, name


@pytest.mark.parametrize("target", ["interp", "c"])
def test_skip_and_simplified_layer_norms(tmp_path, target):
    rng = np.random.default_rng(0)
    d = 48
    inits = [numpy_helper.from_array(rng.standard_normal(d).astype(np.float32), n)
             for n in ("gamma", "beta", "bias", "gamma2")]
    nodes = [
        helper.make_node("SkipSimplifiedLayerNormalization", ["x", "skip", "gamma", "bias"],
                         ["rms", "", "", "sum"], domain="com.microsoft", epsilon=1e-5),
        helper.make_node("SkipLayerNormalization", ["rms", "skip", "gamma2", "beta"],
                         ["ln", "", "", "sum2"], domain="com.microsoft", epsilon=1e-4),
        helper.make_node("SimplifiedLayerNormalization", ["ln", "gamma"], ["out"],
                         epsilon=1e-6, axis=-1, stash_type=1),
    ]
    shape = [2, 5, d]
    path = _model(tmp_path, nodes, [helper.make_tensor_value_info("x", F, shape),
                                    helper.make_tensor_value_info("skip", F, shape)],
                  [helper.make_tensor_value_info(n, F, shape) for n in ("out", "sum", "sum2")],
                  inits)
    feeds = {"x": rng.standard_normal(shape).astype(np.float32),
             "skip": rng.standard_normal(shape).astype(np.float32)}
    _check(tmp_path, path, feeds, target)


GQA_CASES = {
    # name: (batch, seq, past, heads, kv_heads, head, packed, rotary, interleaved, rot, extra)
    "prompt-packed-rotary": (1, 6, 0, 4, 2, 16, True, True, False, 16, {}),
    "decode-packed-rotary": (1, 1, 7, 4, 2, 16, True, True, False, 16, {}),
    "batch2-decode-separate-interleaved": (2, 1, 5, 4, 1, 16, False, True, True, 16, {}),
    "chunk-after-past": (1, 3, 5, 4, 2, 16, False, True, False, 16, {}),
    "partial-rotary": (1, 1, 4, 2, 2, 32, True, True, False, 16, {}),
    "no-rotary-window-softcap": (1, 5, 3, 6, 3, 16, True, False, False, 0,
                                 {"local_window_size": 3, "softcap": 2.0}),
    "scale": (1, 4, 2, 4, 4, 16, False, False, False, 0, {"scale": 0.5}),
    # ragged rows and cache buffers longer than the rows' pasts (seqlens_k, and
    # total_sequence_length above the buffer or equal to S for a first prompt)
    "ragged-decode-batch2": (2, 1, 6, 4, 2, 16, True, True, False, 16,
                             {"seqlens": [3, 6], "total": 7}),
    "decode-in-a-longer-buffer": (1, 1, 8, 4, 2, 16, False, True, False, 16,
                                  {"seqlens": [4], "total": 9}),
    "ragged-first-prompt": (2, 5, 0, 4, 2, 16, True, True, False, 16,
                            {"seqlens": [4, 2], "total": 5}),
    "chunk-in-a-longer-buffer": (1, 3, 8, 2, 1, 16, True, True, True, 16,
                                 {"seqlens": [7], "total": 11, "local_window_size": 4}),
}


@pytest.mark.parametrize("target", ["interp", "c"])
@pytest.mark.parametrize("case", list(GQA_CASES))
def test_group_query_attention_matches_onnxruntime(tmp_path, case, target):
    b, s, past, h, kvh, d, packed, rotary, interleaved, rot, extra = GQA_CASES[case]
    extra = dict(extra)
    total = extra.pop("total", past + s)
    seqlens = extra.pop("seqlens", [total - 1] * b)
    slots = max(total, past)
    rng = np.random.default_rng(len(case))
    feeds = {}
    if packed:
        inputs = ["qkv", "", ""]
        feeds["qkv"] = rng.standard_normal((b, s, (h + 2 * kvh) * d)).astype(np.float32)
    else:
        inputs = ["q", "k", "v"]
        feeds["q"] = rng.standard_normal((b, s, h * d)).astype(np.float32)
        feeds["k"] = rng.standard_normal((b, s, kvh * d)).astype(np.float32)
        feeds["v"] = rng.standard_normal((b, s, kvh * d)).astype(np.float32)
    feeds["past_k"] = rng.standard_normal((b, kvh, past, d)).astype(np.float32)
    feeds["past_v"] = rng.standard_normal((b, kvh, past, d)).astype(np.float32)
    inputs += ["past_k", "past_v", "seqlens", "total"]
    inits = [numpy_helper.from_array(np.array(seqlens, np.int32), "seqlens"),
             numpy_helper.from_array(np.array(total, np.int32), "total")]
    if rotary:
        angles = np.arange(32)[:, None] / 10000 ** (np.arange(rot // 2) / (rot // 2))
        inits += [numpy_helper.from_array(np.cos(angles).astype(np.float32), "cos"),
                  numpy_helper.from_array(np.sin(angles).astype(np.float32), "sin")]
        inputs += ["cos", "sin"]
    node = helper.make_node("GroupQueryAttention", inputs, ["out", "present_k", "present_v"],
                            domain="com.microsoft", num_heads=h, kv_num_heads=kvh,
                            do_rotary=int(rotary), rotary_interleaved=int(interleaved),
                            **extra)
    ins = [helper.make_tensor_value_info(n, F, list(v.shape)) for n, v in feeds.items()]
    outs = [helper.make_tensor_value_info("out", F, [b, s, h * d]),
            helper.make_tensor_value_info("present_k", F, [b, kvh, slots, d]),
            helper.make_tensor_value_info("present_v", F, [b, kvh, slots, d])]
    path = _model(tmp_path, [node], ins, outs, inits)
    _check(tmp_path, path, feeds, target, rtol=1e-5)


def test_group_query_attention_bad_heads_is_one_line(tmp_path):
    node = helper.make_node("GroupQueryAttention", ["q", "k", "v", "pk", "pv", "sl", "t"],
                            ["out"], domain="com.microsoft", num_heads=3, kv_num_heads=2)
    ins = [helper.make_tensor_value_info("q", F, [1, 2, 24]),
           helper.make_tensor_value_info("k", F, [1, 2, 16]),
           helper.make_tensor_value_info("v", F, [1, 2, 16]),
           helper.make_tensor_value_info("pk", F, [1, 2, 0, 8]),
           helper.make_tensor_value_info("pv", F, [1, 2, 0, 8])]
    inits = [numpy_helper.from_array(np.array([1], np.int32), "sl"),
             numpy_helper.from_array(np.array(2, np.int32), "t")]
    path = _model(tmp_path, [node], ins, [helper.make_tensor_value_info("out", F, [1, 2, 24])],
                  inits)
    with pytest.raises(Q35cError, match="GroupQueryAttention.*num_heads 3"):
        run_file(path, {}, tmp_path / "out", Options(target="interp", passes=""))


def test_group_query_attention_crafted_total_length_is_bounded(tmp_path):
    """A total_sequence_length of 2^31 - 1 would make a present of 2^31 slots: refused by
    --max-tensor-bytes before anything of that size is built."""
    node = helper.make_node("GroupQueryAttention", ["q", "k", "v", "pk", "pv", "sl", "t"],
                            ["out", "pk2", "pv2"], domain="com.microsoft", num_heads=2,
                            kv_num_heads=2)
    ins = [helper.make_tensor_value_info(n, F, shape) for n, shape in (
        ("q", [1, 1, 32]), ("k", [1, 1, 32]), ("v", [1, 1, 32]), ("pk", [1, 2, 4, 16]),
        ("pv", [1, 2, 4, 16]))]
    inits = [numpy_helper.from_array(np.array([4], np.int32), "sl"),
             numpy_helper.from_array(np.array(2**31 - 1, np.int32), "t")]
    path = _model(tmp_path, [node], ins, [helper.make_tensor_value_info("out", F, None)], inits)
    with pytest.raises(Q35cError, match="max-tensor-bytes"):
        run_file(path, {}, tmp_path / "out", Options(target="interp", passes=""))


@pytest.mark.parametrize("target", ["interp", "c"])
def test_transformer_optimizer_activations(tmp_path, target):
    """Gelu, BiasGelu, FastGelu (with and without its bias) and QuickGelu, as onnxruntime's
    transformer optimizer writes them."""
    rng = np.random.default_rng(3)
    shape = [2, 3, 40]
    inits = [numpy_helper.from_array(rng.standard_normal(40).astype(np.float32), "bias")]
    nodes = [
        helper.make_node("Gelu", ["x"], ["gelu"], domain="com.microsoft"),
        helper.make_node("BiasGelu", ["x", "bias"], ["bias_gelu"], domain="com.microsoft"),
        helper.make_node("FastGelu", ["x", "bias"], ["fast_bias"], domain="com.microsoft"),
        helper.make_node("FastGelu", ["x"], ["fast"], domain="com.microsoft"),
        helper.make_node("QuickGelu", ["x"], ["quick"], domain="com.microsoft"),
        helper.make_node("QuickGelu", ["x"], ["quick_alpha"], domain="com.microsoft",
                         alpha=1.5),
    ]
    outs = [n.output[0] for n in nodes]
    path = _model(tmp_path, nodes, [helper.make_tensor_value_info("x", F, shape)],
                  [helper.make_tensor_value_info(n, F, shape) for n in outs], inits)
    feeds = {"x": (3 * rng.standard_normal(shape)).astype(np.float32)}
    _check(tmp_path, path, feeds, target, rtol=1e-5)


ROTARY_CASES = {
    # name: (input shape, attributes, position_ids, cache width)
    "3d-heads-given": ([1, 5, 64], {"num_heads": 4}, "rows", 8),
    "3d-head-is-rotary": ([2, 3, 48], {}, "rows", 8),
    "4d": ([2, 3, 4, 16], {}, "rows", 8),
    "interleaved": ([1, 4, 32], {"num_heads": 2, "interleaved": 1}, "rows", 8),
    "partial": ([1, 4, 64], {"num_heads": 2, "rotary_embedding_dim": 16}, "rows", 8),
    "start-position": ([2, 4, 32], {"num_heads": 2}, "start", 8),
}


@pytest.mark.parametrize("target", ["interp", "c"])
@pytest.mark.parametrize("case", list(ROTARY_CASES))
def test_rotary_embedding_matches_onnxruntime(tmp_path, case, target):
    shape, attrs, positions, half = ROTARY_CASES[case]
    rng = np.random.default_rng(len(case))
    b, s = shape[0], shape[-2] if len(shape) == 4 else shape[1]
    angles = np.arange(32)[:, None] / 10000 ** (np.arange(half) / half)
    if positions == "start":
        pos = np.array([5], np.int64)
    else:
        pos = rng.integers(0, 32, (b, s)).astype(np.int64)
    inits = [numpy_helper.from_array(pos, "pos"),
             numpy_helper.from_array(np.cos(angles).astype(np.float32), "cos"),
             numpy_helper.from_array(np.sin(angles).astype(np.float32), "sin")]
    node = helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"],
                            domain="com.microsoft", **attrs)
    path = _model(tmp_path, [node], [helper.make_tensor_value_info("x", F, shape)],
                  [helper.make_tensor_value_info("y", F, shape)], inits)
    _check(tmp_path, path, {"x": rng.standard_normal(shape).astype(np.float32)}, target,
           rtol=1e-6)


def test_rotary_embedding_bad_cache_is_one_line(tmp_path):
    inits = [numpy_helper.from_array(np.zeros((1, 4), np.int64), "pos"),
             numpy_helper.from_array(np.zeros((32, 8), np.float32), "cos"),
             numpy_helper.from_array(np.zeros((32, 6), np.float32), "sin")]
    node = helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"],
                            domain="com.microsoft", num_heads=2)
    path = _model(tmp_path, [node], [helper.make_tensor_value_info("x", F, [1, 4, 32])],
                  [helper.make_tensor_value_info("y", F, [1, 4, 32])], inits)
    with pytest.raises(Q35cError, match="RotaryEmbedding.*sin_cache must match"):
        run_file(path, {}, tmp_path / "out", Options(target="interp", passes=""))


ATTENTION_CASES = {
    # name: (batch, seq, past, heads, head, mask form, extra attributes)
    "bert-key-padding": (2, 5, 0, 4, 8, "2d", {}),
    "no-mask": (1, 4, 0, 2, 16, None, {}),
    "key-lengths": (2, 6, 0, 2, 8, "1d", {}),
    "end-and-start": (2, 6, 0, 2, 8, "1d-start", {}),
    "3d-mask-scale": (1, 5, 0, 4, 8, "3d", {"scale": 0.3}),
    "gpt2-causal-past": (1, 3, 4, 4, 8, "2d", {"unidirectional": 1}),
    "causal-no-mask": (2, 5, 0, 2, 8, None, {"unidirectional": 1}),
    "filter-value": (1, 4, 0, 2, 8, "2d", {"mask_filter_value": -1e4 * 3}),
    "row-with-every-key-masked": (2, 4, 0, 2, 8, "2d-empty", {"unidirectional": 1}),
    "qkv-hidden-sizes": (1, 4, 0, 2, 8, "2d", {"qkv_hidden_sizes": [16, 16, 32]}),
}


def _mask_feed(rng, form, b, s, total):
    if form in ("2d", "2d-empty"):
        mask = np.ones((b, total), np.int32)
        mask[0, -2:] = 0
        if form == "2d-empty":
            mask[1] = 0
        return mask
    if form == "3d":
        return (rng.random((b, s, total)) > 0.3).astype(np.int32)
    lengths = np.array([total - 1 - i for i in range(b)], np.int32)
    if form == "1d-start":
        return np.concatenate([lengths, np.arange(b, dtype=np.int32) + 1])
    return lengths


@pytest.mark.parametrize("target", ["interp", "c"])
@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_attention_matches_onnxruntime(tmp_path, case, target):
    """com.microsoft.Attention (onnxruntime's transformer optimizer fuses BERT's and GPT-2's
    self-attention into it) against onnxruntime."""
    b, s, past, heads, d, form, extra = ATTENTION_CASES[case]
    rng = np.random.default_rng(len(case))
    sizes = extra.get("qkv_hidden_sizes", [heads * d] * 3)
    hidden = 3 * heads * d
    total = past + s
    inputs = [helper.make_tensor_value_info("x", F, [b, s, hidden])]
    feeds = {"x": rng.standard_normal((b, s, hidden)).astype(np.float32)}
    names = ["x", "w", "bias", "mask" if form else ""]
    if form:
        feeds["mask"] = _mask_feed(rng, form, b, s, total)
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT32,
                                                    list(feeds["mask"].shape)))
    outputs = [helper.make_tensor_value_info("out", F, [b, s, sizes[2]])]
    if past:
        names.append("past")
        feeds["past"] = rng.standard_normal((2, b, heads, past, d)).astype(np.float32)
        inputs.append(helper.make_tensor_value_info("past", F, [2, b, heads, past, d]))
        outputs.append(helper.make_tensor_value_info("present", F, [2, b, heads, total, d]))
    inits = [numpy_helper.from_array(
        (rng.standard_normal((hidden, sum(sizes))) / np.sqrt(hidden)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(sum(sizes)).astype(np.float32), "bias")]
    node = helper.make_node("Attention", names, [o.name for o in outputs],
                            domain="com.microsoft", num_heads=heads, **extra)
    path = _model(tmp_path, [node], inputs, outputs, inits)
    _check(tmp_path, path, feeds, target, rtol=1e-5)


MHA_CASES = {
    # name: (batch, seq, key length, past, heads, head, value head, key form, mask, extra)
    "encoder": (2, 4, 4, 0, 2, 8, 8, "3d", "2d", {}),
    "cross-attention-bias": (1, 3, 7, 0, 4, 8, 16, "3d", None, {"bias": True}),
    "decoder-past-causal": (1, 2, 2, 5, 2, 8, 8, "3d", None, {"unidirectional": 1}),
    "per-head-keys": (2, 3, 6, 0, 2, 8, 8, "4d", "1d", {}),
    "attention-bias-scale": (1, 4, 4, 0, 2, 8, 8, "3d", None, {"attention_bias": True,
                                                                "scale": 0.2}),
}


@pytest.mark.parametrize("target", ["interp", "c"])
@pytest.mark.parametrize("case", list(MHA_CASES))
def test_multi_head_attention_matches_onnxruntime(tmp_path, case, target):
    """com.microsoft.MultiHeadAttention (onnxruntime's optimizer writes it for encoder,
    decoder and cross attention) against onnxruntime."""
    b, s, length, past, heads, d, dv, key_form, form, extra = MHA_CASES[case]
    extra = dict(extra)
    rng = np.random.default_rng(len(case) + 7)
    total = past + length
    shapes = {"q": [b, s, heads * d]}
    shapes["k"], shapes["v"] = ([b, length, heads * d], [b, length, heads * dv]) \
        if key_form == "3d" else ([b, heads, length, d], [b, heads, length, dv])
    names = ["q", "k", "v", "", "", "", "", ""]
    if extra.pop("bias", False):
        names[3] = "bias"
        shapes["bias"] = [2 * heads * d + heads * dv]
    if extra.pop("attention_bias", False):
        names[5] = "attention_bias"
        shapes["attention_bias"] = [1, heads, s, total]
    if past:
        names[6], names[7] = "past_key", "past_value"
        shapes["past_key"], shapes["past_value"] = [b, heads, past, d], [b, heads, past, dv]
    feeds = {n: rng.standard_normal(shape).astype(np.float32) for n, shape in shapes.items()}
    inputs = [helper.make_tensor_value_info(n, F, shape) for n, shape in shapes.items()]
    if form:
        names[4] = "mask"
        feeds["mask"] = _mask_feed(rng, form, b, s, total)
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT32,
                                                    list(feeds["mask"].shape)))
    while names and not names[-1]:
        names.pop()
    outputs = [helper.make_tensor_value_info("out", F, [b, s, heads * dv])]
    if past:
        outputs += [helper.make_tensor_value_info("present_key", F, [b, heads, total, d]),
                    helper.make_tensor_value_info("present_value", F, [b, heads, total, dv])]
    node = helper.make_node("MultiHeadAttention", names, [o.name for o in outputs],
                            domain="com.microsoft", num_heads=heads, **extra)
    path = _model(tmp_path, [node], inputs, outputs)
    _check(tmp_path, path, feeds, target, rtol=1e-5)


def test_attention_unsupported_forms_are_one_line(tmp_path):
    node = helper.make_node("Attention", ["x", "w"], ["out"], domain="com.microsoft",
                            num_heads=2, do_rotary=1)
    w = numpy_helper.from_array(np.zeros((8, 24), np.float32), "w")
    path = _model(tmp_path, [node], [helper.make_tensor_value_info("x", F, [1, 3, 8])],
                  [helper.make_tensor_value_info("out", F, [1, 3, 8])], [w])
    with pytest.raises(Q35cError, match="do_rotary is not supported"):
        run_file(path, {"x": np.zeros((1, 3, 8), np.float32)}, tmp_path / "o",
                 Options(target="interp", passes=""))
