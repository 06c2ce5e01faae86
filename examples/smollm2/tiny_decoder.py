"""A tiny decoder-only language model with a KV cache, for fast tests without torch.

    python examples/smollm2/tiny_decoder.py OUT_DIR    OUT_DIR/decode.onnx, tokenizer.json,
                                                       tokenizer_config.json
    python examples/smollm2/tiny_decoder.py OUT_DIR --gqa    the same in onnxruntime-genai's
                                                       layout (+ genai_config.json)

The graph has the interface of examples/smollm2/export.py's decode graphs (the naming of
optimum and onnxruntime-genai): inputs `input_ids` [1, sequence_length], `attention_mask`
[1, total_sequence_length], `position_ids` [1, sequence_length] and
`past_key_values.N.key/value` [1, heads, past_sequence_length, head_dim]; outputs `logits`
[1, sequence_length, vocab] and `present.N.key/value` (past followed by the new tokens).
Inside: token and learned position embeddings, LAYERS pre-norm blocks of multi-head
attention (the padding mask from attention_mask plus a causal mask over the new tokens, as
transformers builds them) and a ReLU MLP, a final norm and an LM head. The weights are
random (seeded), so the text it writes is not English; the tests compare token streams.

The tokenizer (built with the `tokenizers` library) is byte-level: one token per byte,
plus `<eos>`, so any text encodes.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LAYERS, HIDDEN, HEADS, HEAD_DIM, FFN, MAX_POSITIONS = 2, 64, 2, 32, 128, 512
VOCAB = 257  # 256 bytes + <eos>
EOS = "<eos>"
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}"
                 "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")


class _Initializers(list):
    """The graph's initializers: constants (`init`) and seeded random weights (`weight`,
    N(0, 1/fan-in) unless `scale` is given); both return the name."""

    def __init__(self, rng: np.random.Generator):
        super().__init__()
        self.rng = rng

    def init(self, name: str, value) -> str:
        self.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, name: str, *shape: int, scale: float | None = None) -> str:
        std = scale if scale is not None else 1 / math.sqrt(shape[0])
        return self.init(name, (self.rng.standard_normal(shape) * std).astype(np.float32))


def build_decoder(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = _Initializers(rng)
    init, weight = inits.init, inits.weight
    nodes: list[onnx.NodeProto] = []

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def norm(x: str, name: str) -> str:
        return node("LayerNormalization",
                    [x, init(f"{name}.weight", np.ones(HIDDEN, np.float32)),
                     init(f"{name}.bias", np.zeros(HIDDEN, np.float32))],
                    f"{name}/out", axis=-1, epsilon=1e-5)

    init("c.heads", np.array([1, -1, HEADS, HEAD_DIM], np.int64))
    init("c.merge", np.array([1, -1, HIDDEN], np.int64))
    init("c.one", np.float32(1.0))
    init("c.neg", np.float32(-1e9))
    init("c.scale", np.float32(1 / math.sqrt(HEAD_DIM)))
    init("c.axes01", np.array([0, 1], np.int64))
    init("c.axis1", np.array([1], np.int64))
    init("c.last", np.array([-1], np.int64))

    x = node("Add", [node("Gather", [weight("embed", VOCAB, HIDDEN, scale=1.0), "input_ids"],
                          "embed/out"),
                     node("Gather", [weight("positions", MAX_POSITIONS, HIDDEN, scale=0.5),
                                     "position_ids"], "positions/out")], "x0")

    # Additive mask [1, 1, S, T]: -1e9 where attention_mask is 0 or key j > P + query i.
    # (a Gather from [-1e9, 0] by the mask: a Cast of int64 to float would do the same)
    init("c.pad_values", np.array([-1e9, 0.0], np.float32))
    pad = node("Gather", ["c.pad_values", "attention_mask"], "mask/pad")
    pad = node("Unsqueeze", [pad, "c.axis1"], "mask/pad3")  # [1, 1, T]
    seq = node("Gather", [node("Shape", ["input_ids"], "mask/ids_shape"), "c.axis1"],
               "mask/S")
    total = node("Gather", [node("Shape", ["attention_mask"], "mask/mask_shape"), "c.axis1"],
                 "mask/T")
    past = node("Sub", [total, seq], "mask/P")
    ones = node("ConstantOfShape", [node("Concat", [seq, total], "mask/ST", axis=0)],
                "mask/ones", value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))
    allowed = node("Trilu", [ones, node("Squeeze", [past], "mask/Pk")], "mask/allowed",
                   upper=0)
    causal = node("Mul", [node("Sub", ["c.one", allowed], "mask/future"), "c.neg"],
                  "mask/causal")
    bias = node("Add", [node("Unsqueeze", [causal, "c.axes01"], "mask/causal4"), pad],
                "mask/bias")

    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64,
                                            [1, "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                            [1, "total_sequence_length"]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64,
                                            [1, "sequence_length"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                             [1, "sequence_length", VOCAB])]
    kv = [1, HEADS, "past_sequence_length", HEAD_DIM]
    for i in range(LAYERS):
        p = f"layers.{i}"
        h = norm(x, f"{p}.norm1")
        heads = {}
        for proj in ("q", "k", "v"):
            y = node("MatMul", [h, weight(f"{p}.{proj}_proj", HIDDEN, HIDDEN)], f"{p}/{proj}")
            y = node("Reshape", [y, "c.heads"], f"{p}/{proj}/heads")
            heads[proj] = node("Transpose", [y], f"{p}/{proj}/t", perm=[0, 2, 1, 3])
        for kind, proj in (("key", "k"), ("value", "v")):
            past_name = f"past_key_values.{i}.{kind}"
            inputs.append(helper.make_tensor_value_info(past_name, TensorProto.FLOAT, kv))
            nodes.append(helper.make_node("Concat", [past_name, heads[proj]],
                                          [f"present.{i}.{kind}"], name=f"{p}/{kind}/concat",
                                          axis=2))
            outputs.append(helper.make_tensor_value_info(
                f"present.{i}.{kind}", TensorProto.FLOAT,
                [1, HEADS, "total_sequence_length", HEAD_DIM]))
        keys_t = node("Transpose", [f"present.{i}.key"], f"{p}/kt", perm=[0, 1, 3, 2])
        scores = node("Mul", [node("MatMul", [heads["q"], keys_t], f"{p}/qk"), "c.scale"],
                      f"{p}/scaled")
        probs = node("Softmax", [node("Add", [scores, bias], f"{p}/masked")], f"{p}/probs",
                     axis=-1)
        ctx = node("MatMul", [probs, f"present.{i}.value"], f"{p}/pv")
        ctx = node("Reshape", [node("Transpose", [ctx], f"{p}/ctx_t", perm=[0, 2, 1, 3]),
                               "c.merge"], f"{p}/ctx")
        x = node("Add", [x, node("MatMul", [ctx, weight(f"{p}.o_proj", HIDDEN, HIDDEN)],
                                 f"{p}/o")], f"{p}/x1")
        h = node("Relu", [node("MatMul", [norm(x, f"{p}.norm2"),
                                          weight(f"{p}.up_proj", HIDDEN, FFN)], f"{p}/up")],
                 f"{p}/act")
        x = node("Add", [x, node("MatMul", [h, weight(f"{p}.down_proj", FFN, HIDDEN)],
                                 f"{p}/down")], f"{p}/x2")
    nodes.append(helper.make_node("MatMul", [norm(x, "final_norm"),
                                             weight("lm_head", HIDDEN, VOCAB, scale=0.5)],
                                  ["logits"], name="lm_head/out"))
    graph = helper.make_graph(nodes, "tiny_decoder", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="q35c-tiny-decoder")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


KV_HEADS = 1


def build_gqa_decoder(seed: int = 1) -> onnx.ModelProto:
    """The layout onnxruntime-genai's model builder writes: no position_ids (positions
    follow from the mask), RMSNorm as `SimplifiedLayerNormalization` and
    `com.microsoft.SkipSimplifiedLayerNormalization`, packed QKV into
    `com.microsoft.GroupQueryAttention` (rotary from cos/sin caches, the cache's head size
    symbolic: genai_config.json gives it), and a SiLU-gated MLP."""
    rng = np.random.default_rng(seed)
    inits = _Initializers(rng)
    init, weight = inits.init, inits.weight
    nodes: list[onnx.NodeProto] = []

    def node(op: str, inputs: list[str], outputs: list[str] | str, domain: str = "",
             **attrs) -> str:
        outputs = [outputs] if isinstance(outputs, str) else outputs
        nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0], domain=domain,
                                      **attrs))
        return outputs[0]

    def gamma(name: str) -> str:
        return init(name, (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32))

    init("c.one", np.array([1], np.int64))
    init("c.index1", np.array(1, np.int64))
    angles = np.arange(MAX_POSITIONS)[:, None] / 10000 ** (np.arange(HEAD_DIM // 2)
                                                          / (HEAD_DIM // 2))
    init("cos_cache", np.cos(angles).astype(np.float32))
    init("sin_cache", np.sin(angles).astype(np.float32))
    summed = node("ReduceSum", ["attention_mask", "c.one"], "mask/sum", keepdims=0)
    seqlens = node("Cast", [node("Sub", [summed, "c.one"], "mask/sub")], "mask/seqlens",
                   to=TensorProto.INT32)
    total = node("Cast", [node("Gather", [node("Shape", ["attention_mask"], "mask/shape"),
                                          "c.index1"], "mask/total64", axis=0)],
                 "mask/total", to=TensorProto.INT32)
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64,
                                            ["batch_size", "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                            ["batch_size", "total_sequence_length"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                             ["batch_size", "sequence_length", VOCAB])]
    x = node("Gather", [weight("embed", VOCAB, HIDDEN, scale=1.0), "input_ids"], "embed/out")
    h = node("SimplifiedLayerNormalization", [x, gamma("layers.0.norm1")], "layers.0/norm1",
             epsilon=1e-6, axis=-1)
    kv_dims = ["batch_size", KV_HEADS, "past_sequence_length", "kv_cache_dim"]
    for i in range(LAYERS):
        p = f"layers.{i}"
        qkv = node("MatMul", [h, weight(f"{p}.qkv_proj", HIDDEN,
                                        (HEADS + 2 * KV_HEADS) * HEAD_DIM)], f"{p}/qkv")
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}",
                                                        TensorProto.FLOAT, kv_dims))
            outputs.append(helper.make_tensor_value_info(
                f"present.{i}.{kind}", TensorProto.FLOAT,
                ["batch_size", KV_HEADS, "total_sequence_length", "kv_cache_dim"]))
        attn = node("GroupQueryAttention",
                    [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value",
                     seqlens, total, "cos_cache", "sin_cache"],
                    [f"{p}/attn", f"present.{i}.key", f"present.{i}.value"],
                    domain="com.microsoft", num_heads=HEADS, kv_num_heads=KV_HEADS,
                    do_rotary=1, rotary_interleaved=0, local_window_size=-1)
        o = node("MatMul", [attn, weight(f"{p}.o_proj", HEADS * HEAD_DIM, HIDDEN)], f"{p}/o")
        h2 = node("SkipSimplifiedLayerNormalization", [x, o, gamma(f"{p}.norm2")],
                  [f"{p}/norm2", "", "", f"{p}/x1"], domain="com.microsoft", epsilon=1e-6)
        x = f"{p}/x1"
        gate = node("MatMul", [h2, weight(f"{p}.gate_proj", HIDDEN, FFN)], f"{p}/gate")
        up = node("MatMul", [h2, weight(f"{p}.up_proj", HIDDEN, FFN)], f"{p}/up")
        act = node("Mul", [node("Mul", [gate, node("Sigmoid", [gate], f"{p}/sig")],
                                f"{p}/silu"), up], f"{p}/act")
        down = node("MatMul", [act, weight(f"{p}.down_proj", FFN, HIDDEN)], f"{p}/down")
        name = f"layers.{i + 1}.norm1" if i + 1 < LAYERS else "final_norm"
        h = node("SkipSimplifiedLayerNormalization", [x, down, gamma(name)],
                 [f"{name}/out", "", "", f"{p}/x2"], domain="com.microsoft", epsilon=1e-6)
        x = f"{p}/x2"
    node("MatMul", [h, weight("lm_head", HIDDEN, VOCAB, scale=0.5)], "logits")
    graph = helper.make_graph(nodes, "tiny_gqa_decoder", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("com.microsoft", 1)],
                              producer_name="q35c-tiny-decoder")
    model.ir_version = 10
    return model


def genai_config() -> dict:
    """The part of onnxruntime-genai's genai_config.json that q35c reads."""
    return {"model": {"decoder": {"num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
                                  "num_key_value_heads": KV_HEADS, "head_size": HEAD_DIM,
                                  "hidden_size": HIDDEN}, "vocab_size": VOCAB}}


def build_tokenizer():
    """A byte-level BPE tokenizer without merges: token i < 256 is byte i's symbol."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_symbols = sorted(alphabet, key=lambda ch: _byte_of(ch))
    vocab = {ch: i for i, ch in enumerate(byte_symbols)}
    vocab[EOS] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS])
    return tok


def _byte_of(symbol: str) -> int:
    """The byte a ByteLevel symbol stands for (GPT-2's bytes_to_unicode, inverted)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    code = ord(symbol)
    if code in printable:
        return code
    others = [b for b in range(256) if b not in printable]
    return others[code - 256]


def write(out_dir: Path, gqa: bool = False) -> Path:
    """decode.onnx, tokenizer.json and tokenizer_config.json in `out_dir` (with `gqa`, the
    onnxruntime-genai layout of `build_gqa_decoder` and its genai_config.json); the graph."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if gqa:
        onnx.save_model(build_gqa_decoder(), out_dir / "decode.onnx")
        (out_dir / "genai_config.json").write_text(json.dumps(genai_config(), indent=1))
    else:
        onnx.save_model(build_decoder(), out_dir / "decode.onnx")
    build_tokenizer().save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": EOS, "chat_template": CHAT_TEMPLATE}, indent=1))
    return out_dir / "decode.onnx"


if __name__ == "__main__":
    print(write(Path(sys.argv[1]), gqa="--gqa" in sys.argv[2:]))
