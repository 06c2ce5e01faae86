"""`q35c generate` and `q35c perplexity` on a tiny decoder with a KV cache (no torch).

The model is examples/smollm2/tiny_decoder.py: the interface of the SmolLM2 decode graphs
(optimum naming, past/present caches, a padding and causal mask) with random weights and a
byte-level tokenizer. The real model's checks are in test_generate_smollm2.py (slow).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, q35c
from hypothesis import given, settings, strategies as st

pytest.importorskip("tokenizers", reason="pip install -e '.[llm]'")

from q35c.compiler.diagnostics import Q35cError  # noqa: E402
from q35c.compiler.generate import (  # noqa: E402
    CompileRequest,
    Decoder,
    Sampler,
    Timing,
    Tokenizer,
    compile_step,
    generate_ids,
    perplexity,
    stream_text,
    windows,
)

CONTEXT = 24
PROMPT = "The cat sat"


def _tiny_module():
    spec = importlib.util.spec_from_file_location(
        "tiny_decoder", EXAMPLES / "smollm2" / "tiny_decoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The folder with decode.onnx, tokenizer.json and tokenizer_config.json."""
    out = tmp_path_factory.mktemp("tiny")
    _tiny_module().write(out)
    return out


def _decoder(tiny: Path, target: str, passes: str | None = None, act: str = "float",
             chunk: int = 1, context: int = CONTEXT) -> Decoder:
    request = CompileRequest(target=target, passes=passes, act=act, context=context)
    steps = {1: compile_step(tiny / "decode.onnx", request, 1)}
    if chunk > 1:
        steps[chunk] = compile_step(tiny / "decode.onnx", request, chunk)
    return Decoder(steps)


def _greedy(decoder: Decoder, prompt: list[int], n: int) -> list[int]:
    return list(generate_ids(decoder, prompt, n, Sampler(), set(), Timing()))


def _ort_greedy(model: Path, prompt: list[int], n: int) -> tuple[list[int], list[np.ndarray]]:
    """Greedy decoding with onnxruntime on the dynamic float graph, the cache growing by
    one token per step (no padding, no fixed capacity): the tokens and every step's logits."""
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    layers = sum(1 for i in session.get_inputs() if i.name.startswith("past_key_values"))
    past = {f"past_key_values.{i // 2}.{('key', 'value')[i % 2]}":
            np.zeros((1, 2, 0, 32), np.float32) for i in range(layers)}
    names = [o.name for o in session.get_outputs()]
    tokens, all_logits, ids, pos = [], [], list(prompt), 0
    for _ in range(n):
        feed = {"input_ids": np.array([ids], np.int64),
                "attention_mask": np.ones((1, pos + len(ids)), np.int64),
                "position_ids": np.arange(pos, pos + len(ids), dtype=np.int64)[None], **past}
        out = dict(zip(names, session.run(None, feed)))
        logits = out["logits"][0]
        all_logits.append(logits)
        token = int(np.argmax(logits[-1]))
        tokens.append(token)
        past = {k: out[k.replace("past_key_values", "present")] for k in past}
        pos += len(ids)
        ids = [token]
    return tokens, all_logits


def test_float_import_decodes_greedily_as_onnxruntime(tiny):
    tok = Tokenizer(tiny / "tokenizer.json")
    prompt = tok.encode(PROMPT)
    want, ort_logits = _ort_greedy(tiny / "decode.onnx", prompt, 10)
    decoder = _decoder(tiny, "interp", passes="")
    assert _greedy(decoder, prompt, 10) == want
    # and the logits of the prompt and of every step, within 1e-4 of their scale
    decoder.reset()
    got = decoder.feed(prompt)
    ref = ort_logits[0]
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    for token, ref in zip(want, ort_logits[1:]):
        got = decoder.feed([token])
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_int8_token_streams_are_identical_on_interp_and_c(tiny):
    prompt = Tokenizer(tiny / "tokenizer.json").encode(PROMPT)
    interp = _decoder(tiny, "interp", act="int8")
    c = _decoder(tiny, "c", act="int8")
    assert _greedy(interp, prompt, 12) == _greedy(c, prompt, 12)
    interp.reset()
    c.reset()
    np.testing.assert_array_equal(interp.feed(prompt), c.feed(prompt))  # bit-exact


def test_the_c_decoder_keeps_the_cache_in_its_outputs_with_the_same_bits(tiny):
    """A C step's `present` buffers hold the cache from run to run, and its next run skips
    copying the past into them: the logits are those of runs that copy it, bit for bit,
    through single tokens and prefill chunks taking turns."""
    prompt = Tokenizer(tiny / "tokenizer.json").encode(PROMPT)
    kept, copied = (_decoder(tiny, "c", act="int8", chunk=4) for _ in range(2))
    for step in copied.steps.values():
        step.cache_in_outputs = None
    for tokens in (prompt, [5], [7], [11], prompt[:3], [9], [10]):
        np.testing.assert_array_equal(kept.feed(tokens), copied.feed(tokens))
    assert kept.holder is kept.steps[1] and copied.holder is None
    assert kept.steps[1].cache_in_outputs(True) == 2 * 2  # 2 layers' key and value


def test_float_c_matches_interp(tiny):
    prompt = Tokenizer(tiny / "tokenizer.json").encode(PROMPT)
    interp, c = _decoder(tiny, "interp", passes=""), _decoder(tiny, "c", passes="")
    a, b = interp.feed(prompt), c.feed(prompt)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()


def test_a_prefill_chunk_gives_the_logits_of_single_tokens(tiny):
    """Chunks of 4 (the last one padded) see the same context as single tokens."""
    prompt = Tokenizer(tiny / "tokenizer.json").encode(PROMPT + " on the mat")
    one = _decoder(tiny, "c", passes="").feed(prompt)
    chunked = _decoder(tiny, "c", passes="", chunk=4)
    got = chunked.feed(prompt)
    assert chunked.calls == math.ceil(len(prompt) / 4) and len(prompt) % 4
    assert np.abs(got - one).max() <= 1e-5 * np.abs(one).max()


def test_the_context_full_is_one_line_and_generation_stops_at_capacity(tiny):
    decoder = _decoder(tiny, "c", passes="", context=8)
    prompt = Tokenizer(tiny / "tokenizer.json").encode("abcdef")
    assert len(_greedy(decoder, prompt, 50)) == 8 - len(prompt) + 1
    decoder.reset()
    with pytest.raises(Q35cError, match="the context is full"):
        decoder.feed(list(range(9)))


@pytest.mark.parametrize("context,stride", [(8, 4), (8, 7), (8, 1), (30, 15)])
def test_perplexity_matches_onnxruntime_windows(tiny, context, stride):
    """The sliding-window formula of docs/generate.md, recomputed from onnxruntime's
    logits of each window run from scratch."""
    ort = pytest.importorskip("onnxruntime")
    ids = Tokenizer(tiny / "tokenizer.json").encode("It was a bright cold day in April.")
    decoder = _decoder(tiny, "interp", passes="", context=30)
    got = perplexity(decoder, ids, context, stride)
    session = ort.InferenceSession(str(tiny / "decode.onnx"),
                                   providers=["CPUExecutionProvider"])
    nll, count, previous_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + context, len(ids))
        window = ids[begin:end]
        feed = {"input_ids": np.array([window], np.int64),
                "attention_mask": np.ones((1, len(window)), np.int64),
                "position_ids": np.arange(len(window), dtype=np.int64)[None]}
        feed.update({i.name: np.zeros((1, 2, 0, 32), np.float32)
                     for i in session.get_inputs() if i.name.startswith("past")})
        logits = session.run(["logits"], feed)[0][0].astype(np.float64)
        for t in range(max(previous_end, begin + 1), end):
            row = logits[t - 1 - begin]
            nll += np.log(np.exp(row - row.max()).sum()) + row.max() - row[ids[t]]
            count += 1
        previous_end = end
        if end == len(ids):
            break
    assert got.tokens == count == len(ids) - 1
    assert got.ppl == pytest.approx(math.exp(nll / count), rel=1e-4)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 300), context=st.integers(2, 64), data=st.data())
def test_windows_score_every_token_but_the_first_exactly_once(n, context, data):
    stride = data.draw(st.integers(1, context - 1))
    scored = []
    for begin, end, first in windows(n, context, stride):
        assert 0 <= begin < first <= end <= n and end - begin <= context
        scored += range(first, end)
    assert scored == list(range(1, n))


def test_sampler_is_greedy_at_temperature_zero_and_seeded_otherwise():
    logits = np.array([0.1, 2.0, 1.9, -3.0], np.float32)
    assert Sampler()(logits) == 1
    draws = [Sampler(1.0, 1.0, seed=7)(logits) for _ in range(3)]
    assert len(set(draws)) == 1  # same seed, same first draw
    sampler = Sampler(1.0, 1.0, seed=1)
    counts = np.bincount([sampler(logits) for _ in range(4000)], minlength=4)
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(counts / 4000, probs, atol=0.03)
    nucleus = Sampler(1.0, 0.45, seed=3)  # token 1 alone has p = 0.485 >= 0.45
    assert {nucleus(logits) for _ in range(200)} == {1}


def test_streamed_text_waits_for_whole_utf8_characters(tiny):
    import io

    tok = Tokenizer(tiny / "tokenizer.json")
    ids = tok.encode("naïve café ☕")
    out = io.StringIO()
    assert stream_text(tok, iter(ids), out) == ids
    assert out.getvalue() == "naïve café ☕"


def test_chat_template_wraps_the_prompt(tiny):
    tok = Tokenizer(tiny / "tokenizer.json")
    assert tok.chat("hi") == "<user>hi<eos><assistant>"
    assert tok.stop_ids() == {256}


# -- the command line ----------------------------------------------------------------------


def _cli(tiny: Path, *args: str, check: bool = True):
    return q35c("generate", tiny / "decode.onnx", "--tokenizer", tiny / "tokenizer.json",
                "--context", str(CONTEXT), *args, check=check)


def test_generate_command_streams_the_same_text_on_interp_and_c(tiny):
    interp = _cli(tiny, "--prompt", PROMPT, "--max-new-tokens", "6", "--act", "int8")
    c = _cli(tiny, "--prompt", PROMPT, "--max-new-tokens", "6", "--act", "int8",
             "--target", "c", "--prefill-chunk", "4")
    assert interp.stdout == c.stdout and interp.stdout.strip()
    for result in (interp, c):
        assert "prefill: 3" not in result.stderr  # the prompt is 11 tokens
        assert "prefill: 11 tokens" in result.stderr and "decode: 5 tokens" in result.stderr
        assert "bits/weight overall" in result.stderr


def test_generate_storage_counts_quantized_matmuls_and_float_tables(tiny):
    def bits(*args):
        err = _cli(tiny, "--prompt", "a", "--max-new-tokens", "1", *args).stderr
        line = next(x for x in err.splitlines() if "storage:" in x)
        overall = float(line.split("bits/weight overall")[0].split()[-1])
        return float(line.split("bits/weight")[-2].split()[-1]), overall

    matmul, overall = bits()  # Q3P5 matmuls and embedding tables (token and position)
    # (the tables may take fewer bits than these tiny matmuls: their shapes let format
    # version 2 share the words, so overall can be below the matmul figure)
    assert 3 < matmul < 8 and 3 < overall < 8
    float_tables = bits("--passes", "quantize-weights{gathers=false},canonicalize,cse")
    assert float_tables[0] == matmul and 8 < float_tables[1] < 32  # float32 embeddings


def test_generate_from_a_compiled_c_folder(tiny, tmp_path):
    out = tmp_path / "compiled"
    shapes = ["--shape=input_ids=1,1", "--shape=position_ids=1,1",
              f"--shape=attention_mask=1,{CONTEXT + 1}"]
    shapes += [f"--shape=past_key_values.{i}.{k}=1,2,{CONTEXT},32"
               for i in range(2) for k in ("key", "value")]
    q35c(tiny / "decode.onnx", "--target", "c", "--act", "int8", "-o", out, *shapes)
    from_folder = q35c("generate", out, "--target", "c", "--tokenizer",
                       tiny / "tokenizer.json", "--prompt", PROMPT, "--max-new-tokens", "6")
    direct = _cli(tiny, "--prompt", PROMPT, "--max-new-tokens", "6", "--act", "int8")
    assert from_folder.stdout == direct.stdout


def test_generate_with_sampling_is_reproducible_and_chat_applies_the_template(tiny):
    args = ("--prompt", "hi", "--max-new-tokens", "8", "--temperature", "0.8", "--top-p",
            "0.9", "--seed", "5", "--chat")
    assert _cli(tiny, *args, "--target", "c").stdout == _cli(tiny, *args, "--target",
                                                              "c").stdout


def test_perplexity_command(tiny, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("It was a bright cold day in April, and the clocks were striking.")
    result = q35c("perplexity", tiny / "decode.onnx", "--tokenizer", tiny / "tokenizer.json",
                  "--text", text, "--context", "16", "--stride", "8", "--target", "c")
    words = result.stdout.split()
    assert words[0] == "perplexity" and float(words[1]) > 1
    assert "over 63 scored tokens (64 tokens of text, context 16, stride 8)" in result.stdout


@pytest.mark.parametrize("command,args,message", [
    ("generate", ("--prompt", "x", "--target", "interp"),
     "a compiled folder runs with --target c"),
    ("perplexity", ("--text", "{model}", "--context", "8", "--stride", "8"),
     "--stride must be in 1..7"),
])
def test_errors_are_one_line(tiny, command, args, message):
    model = tiny / "decode.onnx" if command == "perplexity" else tiny
    args = [a.format(model=tiny / "tokenizer_config.json") for a in args]
    result = q35c(command, model, "--tokenizer", tiny / "tokenizer.json", *args,
                  check=False)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_graph_without_a_cache_is_refused_in_one_line(tiny):
    model = EXAMPLES / "models" / "llama_tiny.onnx"
    result = q35c("generate", model, "--tokenizer", tiny / "tokenizer.json", "--prompt", "x",
                  check=False)
    assert result.returncode == 2
    assert "not a decode graph with a KV cache" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_missing_tokenizer_package_is_named(monkeypatch, tiny):
    import builtins

    real = builtins.__import__

    def no_tokenizers(name, *args, **kwargs):
        if name == "tokenizers":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tokenizers)
    with pytest.raises(Q35cError, match=r"pip install 'q35c\[llm\]'"):
        Tokenizer(tiny / "tokenizer.json")


def test_the_onnxruntime_reference_script_agrees_with_q35c(tiny, tmp_path):
    """examples/smollm2/ort_perplexity.py (the float reference of docs/benchmarks.md)."""
    import subprocess
    import sys

    pytest.importorskip("onnxruntime")
    text = tmp_path / "text.txt"
    text.write_text("It was a bright cold day in April, and the clocks were striking.")
    script = EXAMPLES / "smollm2" / "ort_perplexity.py"
    ort_line = subprocess.run(
        [sys.executable, str(script), str(tiny / "decode.onnx"), str(tiny / "tokenizer.json"),
         str(text), "--context", "16", "--stride", "8"], capture_output=True, text=True,
        check=True).stdout.splitlines()[0]
    ours = q35c("perplexity", tiny / "decode.onnx", "--tokenizer", tiny / "tokenizer.json",
                "--text", text, "--context", "16", "--stride", "8", "--passes", "").stdout
    assert ort_line.split()[2:] == ours.split()[2:]
    assert float(ort_line.split()[1]) == pytest.approx(float(ours.split()[1]), rel=1e-4)


# -- onnxruntime-genai's layout (GroupQueryAttention, no position_ids) ---------------------


@pytest.fixture(scope="module")
def tiny_gqa(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_gqa")
    _tiny_module().write(out, gqa=True)
    return out


def _ort_greedy_gqa(model: Path, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding with onnxruntime as onnxruntime-genai feeds the graph: a cache that
    grows by the new tokens, an all-ones mask, no position_ids."""
    ort = pytest.importorskip("onnxruntime")
    tiny_decoder = _tiny_module()
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    past = {f"past_key_values.{layer}.{kind}":
            np.zeros((1, tiny_decoder.KV_HEADS, 0, tiny_decoder.HEAD_DIM), np.float32)
            for layer in range(tiny_decoder.LAYERS) for kind in ("key", "value")}
    tokens, ids, total = [], list(prompt), 0
    for _ in range(n):
        total += len(ids)
        out = dict(zip(names, session.run(None, {
            "input_ids": np.array([ids], np.int64),
            "attention_mask": np.ones((1, total), np.int64), **past})))
        tokens.append(int(np.argmax(out["logits"][0, -1])))
        past = {k: out[k.replace("past_key_values", "present")] for k in past}
        ids = [tokens[-1]]
    return tokens


@pytest.mark.parametrize("target,chunk", [("interp", 1), ("c", 4)])
def test_genai_layout_decodes_greedily_as_onnxruntime(tiny_gqa, target, chunk):
    """GroupQueryAttention graphs: the cache head size from genai_config.json, the new
    tokens placed at the mask's count (a padded prefill chunk included)."""
    tok = Tokenizer(tiny_gqa / "tokenizer.json")
    prompt = tok.encode(PROMPT)
    want = _ort_greedy_gqa(tiny_gqa / "decode.onnx", prompt, 10)
    decoder = _decoder(tiny_gqa, target, passes="", chunk=chunk)
    assert not decoder.sig.positions
    assert _greedy(decoder, prompt, 10) == want


def test_genai_config_outside_the_models_folder_is_refused(tiny_gqa, tmp_path):
    """genai_config.json is read only as a regular file inside the model's folder."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "decode.onnx").write_bytes((tiny_gqa / "decode.onnx").read_bytes())
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text((tiny_gqa / "genai_config.json").read_text())
    (folder / "genai_config.json").symlink_to(elsewhere)
    with pytest.raises(Q35cError, match="genai_config.json.*outside"):
        compile_step(folder / "decode.onnx", CompileRequest(target="interp", passes="",
                                                              context=CONTEXT), 1)


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),  # nesting past the parser's limit
    ('{"model": {"decoder": {"head_size": 1e999}}}', "head size"),
    ('{"model": [1, 2]}', "head size"),
    ("[1, 2]", "not a JSON object"),
])
def test_a_hostile_genai_config_is_one_line(tiny_gqa, tmp_path, text, message):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "decode.onnx").write_bytes((tiny_gqa / "decode.onnx").read_bytes())
    (folder / "genai_config.json").write_text(text)
    with pytest.raises(Q35cError, match=f"genai_config.json: .*{message}"):
        compile_step(folder / "decode.onnx", CompileRequest(target="interp", passes="",
                                                              context=CONTEXT), 1)


@pytest.mark.parametrize("config, template, message", [
    ("{broken", None, "tokenizer_config.json: not valid JSON"),
    ('"a string"', None, "tokenizer_config.json: not a JSON object"),
    ('{"chat_template": "{% for %}"}', None, "the chat template fails"),
    ('{"chat_template": 7}', None, "needs a chat template"),
    ("{}", "outside", "chat_template.jinja: .*outside"),
    # a template is a program: its time, memory and output are bounded
    ('{"chat_template": "{% for i in range(99999) %}{% for j in range(99999) %}'
     '{% endfor %}{% endfor %}"}', None, "the chat template fails: it runs longer than"),
    ('{"chat_template": "{{ \'x\' | center(4000000000) }}"}', None,
     "the chat template fails: it needs more than"),
    ('{"chat_template": "{% for i in range(99999) %}{{ \'x\' | center(99) }}{% endfor %}"}',
     None, "the chat template fails: its output is longer than"),
])
def test_hostile_tokenizer_side_files_are_one_line(tiny, tmp_path, monkeypatch, config,
                                                   template, message):
    """tokenizer_config.json and chat_template.jinja beside the tokenizer come from the same
    untrusted folder as the model: read bounded, from inside the folder, errors naming them;
    the template renders with bounded time, memory and output."""
    monkeypatch.setattr("q35c.compiler.generate.CHAT_TEMPLATE_SECONDS", 1.0)
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes((tiny / "tokenizer.json").read_bytes())
    (folder / "tokenizer_config.json").write_text(config)
    if template == "outside":
        (tmp_path / "secret.jinja").write_text("{{ messages }}")
        (folder / "chat_template.jinja").symlink_to(tmp_path / "secret.jinja")
    with pytest.raises(Q35cError, match=message):
        Tokenizer(folder / "tokenizer.json").chat("hi")
