"""Write a LLaMA-shaped ONNX graph whose weights are external data that is never written.

    python examples/models/build_llama_shapes.py llama-70b /tmp/llama70b.onnx
    python examples/models/build_llama_shapes.py tiny out.onnx --layers 4 --hidden 512
    python examples/models/build_llama_shapes.py llama-70b /tmp/l70.onnx --context 4096
    python examples/models/build_llama_shapes.py llama-70b h.onnx --context 4096 --kv-cache heads
    q35c /tmp/llama70b.onnx --target groq --shape-only -o out/     # the multi-chip plan

The graph is a decoder forward pass over `seq` tokens (default 1: one decode step):
token embedding (Gather), then per layer RMSNorm -> q/k/v projections -> RoPE -> grouped-
query attention (causal) -> o projection -> residual, RMSNorm -> SwiGLU FFN (gate, up,
down) -> residual; a final RMSNorm and the lm_head projection.

`--context N` (default 0) adds a KV cache of N earlier tokens per layer, so that a pass is
a real decode step: the cache is resident state of the layer's chip, written as float32
initializers `model.layers.<i>.past_key` [1, kv_heads, head_dim, N] (keys stored
transposed, as the score product reads them) and `...past_value` [1, kv_heads, N,
head_dim]. Attention groups the query heads by KV head (GQA without copying the cache:
q [1, heads, seq, d] -> [1, kv_heads, heads/kv_heads * seq, d]), scores the cache and the
new keys separately, concatenates the scores (mask on the new block only: every cached
token is visible), softmax, and adds the two weighted sums of the cached and the new
values. Appending the new keys and values to the cache (one [kv_heads, seq, d] row pair
per layer) is not an op of the graph. `--kv-cache heads` writes the cache as one 2-D
initializer per KV head and product instead (`...past_key.<j>` [head_dim, N],
`...past_value.<j>` [N, head_dim]), each cached product a MatMul of that head's query rows
by it, so that quantize-weights packs the cache and the products run as int8 matmuls (on
Groq: the MXM); q is scaled by 1/sqrt(d) before the score products, and each KV head has
its own Concat, Softmax and Slices. Matmul weights are stored
[K, N] for `MatMul`. Every initializer with more than 64 elements is an external-data
tensor pointing into `<stem>.weights`, which this script does NOT write: the model is only
usable with `--shape-only`, which never reads weight data. Small shape constants (Reshape
shapes, axes) are inline.

Weight names follow the Hugging Face convention (`model.layers.<i>.self_attn.q_proj.weight`,
...), which the Groq planner uses to group matmuls into layers. The output is deterministic.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 18
PRODUCER = "q35c examples/models/build_llama_shapes.py"


@dataclass(frozen=True)
class LlamaConfig:
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    vocab: int
    seq: int = 1
    context: int = 0
    kv_cache: str = "float"
    rms_eps: float = 1e-5
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def check(self) -> None:
        values = (self.layers, self.hidden, self.ffn, self.heads, self.kv_heads, self.vocab,
                  self.seq)
        if min(values) <= 0 or self.context < 0:
            raise ValueError("every size must be positive (the context may be 0)")
        if self.kv_cache not in KV_CACHES:
            raise ValueError(f"kv_cache must be one of {', '.join(KV_CACHES)}")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError("hidden must be a multiple of heads, heads of kv_heads")
        if self.head_dim % 2:
            raise ValueError("the head dimension must be even (RoPE)")

    def parameters(self) -> int:
        """Parameter count (embedding + layers + final norm + lm_head)."""
        kv = self.kv_heads * self.head_dim
        layer = (self.hidden * (self.hidden + 2 * kv) + self.hidden * self.hidden
                 + 3 * self.hidden * self.ffn + 2 * self.hidden)
        return 2 * self.vocab * self.hidden + self.layers * layer + self.hidden


KV_CACHES = ("float", "heads")

PRESETS: dict[str, LlamaConfig] = {
    "llama-70b": LlamaConfig(layers=80, hidden=8192, ffn=28672, heads=64, kv_heads=8,
                             vocab=128256, rope_theta=500000.0),
    "llama-8b": LlamaConfig(layers=32, hidden=4096, ffn=14336, heads=32, kv_heads=8,
                            vocab=128256, rope_theta=500000.0),
    "llama-7b": LlamaConfig(layers=32, hidden=4096, ffn=11008, heads=32, kv_heads=32,
                            vocab=32000),
    "tiny": LlamaConfig(layers=4, hidden=512, ffn=1536, heads=8, kv_heads=2, vocab=2048),
}


class _Graph:
    def __init__(self, data_file: str):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.data_file = data_file
        self.offset = 0
        self.count = 0

    def weight(self, name: str, shape: tuple[int, ...]) -> str:
        """A float32 initializer stored as external data in the (unwritten) data file."""
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape))
        length = 4 * math.prod(shape)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.data_file), ("offset", str(self.offset)),
                           ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.offset += -(-length // 4096) * 4096
        self.inits.append(tensor)
        return name

    def ints(self, name: str, values) -> str:
        self.inits.append(helper.make_tensor(name, TensorProto.INT64, [len(values)],
                                             [int(v) for v in values]))
        return name

    def node(self, op: str, inputs: list[str], name: str, outputs: int = 1,
             **attrs) -> list[str] | str:
        outs = [f"{name}_out{i}" if outputs > 1 else f"{name}_out" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs if outputs > 1 else outs[0]


def build(config: LlamaConfig, data_file: str) -> onnx.ModelProto:
    """The ONNX model for `config`; weights point into `data_file` (not written)."""
    config.check()
    c, g = config, _Graph(data_file)
    s, h, d, nh, nkv = c.seq, c.hidden, c.head_dim, c.heads, c.kv_heads
    rep = nh // nkv
    g.ints("shape_q", [1, s, nh, d])
    g.ints("shape_kv", [1, s, nkv, d])
    g.ints("shape_kv_rep", [1, nkv, rep, s, d])
    g.ints("shape_kv_heads", [1, nh, s, d])
    g.ints("shape_hidden", [1, s, h])
    g.ints("axis_2", [2])
    g.ints("half_0", [0])
    g.ints("half_1", [d // 2])
    g.ints("half_2", [d])
    g.ints("axis_last", [-1])
    if c.context:  # the cached attention's shapes, Slice bounds and new-block mask
        rows = rep * s
        g.ints("shape_q_grouped", [1, nkv, rows, d])
        g.ints("cache_n", [c.context])
        g.ints("cache_end", [c.context + s])
        g.ints("axis_1", [1])
        if c.kv_cache == "heads":  # Slice bounds of KV head j: [j, j + 1) on axis 1
            for j in range(nkv + 1):
                g.ints(f"head_{j}", [j])
        # row r * seq + i (query head r of a group, new token i) sees the new tokens <= i
        causal = np.where(np.arange(s)[None, :] > np.arange(rows)[:, None] % s, -np.inf, 0.0)
        g.inits.append(helper.make_tensor("new_mask", TensorProto.FLOAT, [rows, s],
                                          causal.astype(np.float32).ravel().tolist()))
    # RoPE tables and the causal mask are initializers too (external when large).
    cos = g.weight("rope.cos", (s, d)) if s * d > 64 else _inline(g, "rope.cos", (s, d), 1.0)
    sin = g.weight("rope.sin", (s, d)) if s * d > 64 else _inline(g, "rope.sin", (s, d), 0.0)
    mask = g.weight("causal_mask", (s, s)) if s * s > 64 else _inline(g, "causal_mask", (s, s),
                                                                      0.0)
    x = g.node("Gather", [g.weight("model.embed_tokens.weight", (c.vocab, h)), "input_ids"],
               "/model/embed_tokens/Gather")
    scale = _inline(g, "attn_scale", (), 1.0 / math.sqrt(d))
    for i in range(c.layers):
        p, w = f"/model/layers.{i}", f"model.layers.{i}"
        hn = g.node("SimplifiedLayerNormalization",
                    [x, g.weight(f"{w}.input_layernorm.weight", (h,))],
                    f"{p}/input_layernorm", axis=-1, epsilon=c.rms_eps)
        heads = {}
        for proj, width, shape in (("q", nh * d, "shape_q"), ("k", nkv * d, "shape_kv"),
                                   ("v", nkv * d, "shape_kv")):
            y = g.node("MatMul", [hn, g.weight(f"{w}.self_attn.{proj}_proj.weight", (h, width))],
                       f"{p}/self_attn/{proj}_proj/MatMul")
            y = g.node("Reshape", [y, shape], f"{p}/self_attn/{proj}/Reshape")
            heads[proj] = g.node("Transpose", [y], f"{p}/self_attn/{proj}/Transpose",
                                 perm=[0, 2, 1, 3])
        for proj in ("q", "k"):
            t = heads[proj]
            lo = g.node("Slice", [t, "half_0", "half_1", "axis_last"], f"{p}/rope/{proj}/lo")
            hi = g.node("Slice", [t, "half_1", "half_2", "axis_last"], f"{p}/rope/{proj}/hi")
            rot = g.node("Concat", [g.node("Neg", [hi], f"{p}/rope/{proj}/Neg"), lo],
                         f"{p}/rope/{proj}/Concat", axis=-1)
            heads[proj] = g.node("Add", [g.node("Mul", [t, cos], f"{p}/rope/{proj}/cos"),
                                         g.node("Mul", [rot, sin], f"{p}/rope/{proj}/sin")],
                                 f"{p}/rope/{proj}/Add")
        for proj in ("k", "v"):
            if rep > 1 and not c.context:  # with a cache: q is grouped by KV head instead
                t = g.node("Unsqueeze", [heads[proj], "axis_2"], f"{p}/gqa/{proj}/Unsqueeze")
                t = g.node("Expand", [t, "shape_kv_rep"], f"{p}/gqa/{proj}/Expand")
                heads[proj] = g.node("Reshape", [t, "shape_kv_heads"], f"{p}/gqa/{proj}/Reshape")
        if c.context:
            ctx = _cached_attention(g, c, p, w, heads, scale)
        else:
            kt = g.node("Transpose", [heads["k"]], f"{p}/self_attn/kT", perm=[0, 1, 3, 2])
            scores = g.node("MatMul", [heads["q"], kt], f"{p}/self_attn/scores")
            scores = g.node("Mul", [scores, scale], f"{p}/self_attn/scale")
            scores = g.node("Add", [scores, mask], f"{p}/self_attn/mask")
            probs = g.node("Softmax", [scores], f"{p}/self_attn/Softmax", axis=-1)
            ctx = g.node("MatMul", [probs, heads["v"]], f"{p}/self_attn/context")
        ctx = g.node("Transpose", [ctx], f"{p}/self_attn/ctx/Transpose", perm=[0, 2, 1, 3])
        ctx = g.node("Reshape", [ctx, "shape_hidden"], f"{p}/self_attn/ctx/Reshape")
        o = g.node("MatMul", [ctx, g.weight(f"{w}.self_attn.o_proj.weight", (nh * d, h))],
                   f"{p}/self_attn/o_proj/MatMul")
        x = g.node("Add", [x, o], f"{p}/attn_residual")
        hn = g.node("SimplifiedLayerNormalization",
                    [x, g.weight(f"{w}.post_attention_layernorm.weight", (h,))],
                    f"{p}/post_attention_layernorm", axis=-1, epsilon=c.rms_eps)
        gate = g.node("MatMul", [hn, g.weight(f"{w}.mlp.gate_proj.weight", (h, c.ffn))],
                      f"{p}/mlp/gate_proj/MatMul")
        up = g.node("MatMul", [hn, g.weight(f"{w}.mlp.up_proj.weight", (h, c.ffn))],
                    f"{p}/mlp/up_proj/MatMul")
        silu = g.node("Mul", [gate, g.node("Sigmoid", [gate], f"{p}/mlp/Sigmoid")],
                      f"{p}/mlp/silu")
        act = g.node("Mul", [silu, up], f"{p}/mlp/Mul")
        down = g.node("MatMul", [act, g.weight(f"{w}.mlp.down_proj.weight", (c.ffn, h))],
                      f"{p}/mlp/down_proj/MatMul")
        x = g.node("Add", [x, down], f"{p}/mlp_residual")
    x = g.node("SimplifiedLayerNormalization", [x, g.weight("model.norm.weight", (h,))],
               "/model/norm", axis=-1, epsilon=c.rms_eps)
    logits = g.node("MatMul", [x, g.weight("lm_head.weight", (h, c.vocab))], "/lm_head/MatMul")
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="/logits"))
    graph = helper.make_graph(
        g.nodes, "llama_shapes",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, s])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, s, c.vocab])],
        initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=PRODUCER, producer_version="1")
    model.ir_version = 8
    return model


def _cached_attention(g: _Graph, c: LlamaConfig, p: str, w: str, heads: dict[str, str],
                      scale: str) -> str:
    """Grouped-query attention of the new tokens over the layer's KV cache and themselves
    (module docstring); returns the context [1, heads, seq, head_dim]. `scale`: 1/sqrt(d)."""
    d, nkv, n = c.head_dim, c.kv_heads, c.context
    q = g.node("Reshape", [heads["q"], "shape_q_grouped"], f"{p}/self_attn/q/grouped")
    kt = g.node("Transpose", [heads["k"]], f"{p}/self_attn/kT", perm=[0, 1, 3, 2])
    if c.kv_cache == "heads":
        return _cached_attention_heads(g, c, p, w, q, kt, heads["v"], scale)
    past_k = g.weight(f"{w}.past_key", (1, nkv, d, n))
    past_v = g.weight(f"{w}.past_value", (1, nkv, n, d))
    old = g.node("MatMul", [q, past_k], f"{p}/self_attn/scores_cache")
    new = g.node("Add", [g.node("MatMul", [q, kt], f"{p}/self_attn/scores_new"), "new_mask"],
                 f"{p}/self_attn/mask")
    scores = g.node("Concat", [old, new], f"{p}/self_attn/scores", axis=-1)
    scores = g.node("Mul", [scores, scale], f"{p}/self_attn/scale")
    probs = g.node("Softmax", [scores], f"{p}/self_attn/Softmax", axis=-1)
    p_old = g.node("Slice", [probs, "half_0", "cache_n", "axis_last"], f"{p}/self_attn/p_cache")
    p_new = g.node("Slice", [probs, "cache_n", "cache_end", "axis_last"],
                   f"{p}/self_attn/p_new")
    ctx = g.node("Add", [g.node("MatMul", [p_old, past_v], f"{p}/self_attn/context_cache"),
                         g.node("MatMul", [p_new, heads["v"]], f"{p}/self_attn/context_new")],
                 f"{p}/self_attn/context")
    return g.node("Reshape", [ctx, "shape_kv_heads"], f"{p}/self_attn/context/heads")


def _cached_attention_heads(g: _Graph, c: LlamaConfig, p: str, w: str, q: str, kt: str,
                            v: str, scale: str) -> str:
    """`--kv-cache heads`: the same attention with a 2-D cache initializer per KV head and
    product (`past_key.<j>` [head_dim, context], `past_value.<j>` [context, head_dim]), so
    that each cached product is a matmul on a 2-D weight, which quantize-weights packs and
    int8-activations turns into an int8 MXM matmul. The scale is applied to q (before both
    score products, [kv_heads, rows, head_dim] elements rather than the scores' rows *
    (context + seq)); each KV head's group of rows has its own Concat, Softmax and Slices,
    so no op copies all heads' scores or probabilities."""
    d, nkv, n = c.head_dim, c.kv_heads, c.context
    q = g.node("Mul", [q, scale], f"{p}/self_attn/q/scale")
    new = g.node("Add", [g.node("MatMul", [q, kt], f"{p}/self_attn/scores_new"), "new_mask"],
                 f"{p}/self_attn/mask")
    cached, p_new = [], []
    for j in range(nkv):
        name, bounds = f"{p}/self_attn/head_{j}", [f"head_{j}", f"head_{j + 1}", "axis_1"]
        q_j = g.node("Slice", [q] + bounds, f"{name}/q")
        old = g.node("MatMul", [q_j, g.weight(f"{w}.past_key.{j}", (d, n))],
                     f"{name}/scores_cache")
        scores = g.node("Concat", [old, g.node("Slice", [new] + bounds, f"{name}/scores_new")],
                        f"{name}/scores", axis=-1)
        probs = g.node("Softmax", [scores], f"{name}/Softmax", axis=-1)
        p_old = g.node("Slice", [probs, "half_0", "cache_n", "axis_last"], f"{name}/p_cache")
        p_new.append(g.node("Slice", [probs, "cache_n", "cache_end", "axis_last"],
                            f"{name}/p_new"))
        cached.append(g.node("MatMul", [p_old, g.weight(f"{w}.past_value.{j}", (n, d))],
                             f"{name}/context_cache"))
    p_new = g.node("Concat", p_new, f"{p}/self_attn/p_new", axis=1)
    ctx = g.node("Add", [g.node("Concat", cached, f"{p}/self_attn/context_cache", axis=1),
                         g.node("MatMul", [p_new, v], f"{p}/self_attn/context_new")],
                 f"{p}/self_attn/context")
    return g.node("Reshape", [ctx, "shape_kv_heads"], f"{p}/self_attn/context/heads")


def _inline(g: _Graph, name: str, shape: tuple[int, ...], value: float) -> str:
    g.inits.append(helper.make_tensor(name, TensorProto.FLOAT, list(shape),
                                      np.full(shape, value, np.float32).ravel().tolist()))
    return name


def write(config: LlamaConfig, path: Path) -> Path:
    """Write the model to `path` (its weights file, `<stem>.weights`, is not written)."""
    model = build(config, f"{path.stem}.weights")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString(deterministic=True))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("output", type=Path)
    for field in ("layers", "hidden", "ffn", "heads", "kv_heads", "vocab", "seq", "context"):
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, dest=field)
    parser.add_argument("--kv-cache", choices=KV_CACHES, dest="kv_cache",
                        help="with --context: 'float' (default) one [1, kv_heads, ...] "
                        "float32 cache per layer and product; 'heads' a 2-D [K, N] cache "
                        "initializer per KV head and product, which quantize-weights packs "
                        "like any matmul weight (the products run as int8 matmuls)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items()
                 if k not in ("preset", "output") and v is not None}
    config = replace(PRESETS[args.preset], **overrides)
    try:
        path = write(config, args.output)
    except ValueError as err:
        print(f"build_llama_shapes: error: {err}", file=sys.stderr)
        return 2
    print(f"{path}: {config.layers} layers, hidden {config.hidden}, FFN {config.ffn}, "
          f"heads {config.heads}/{config.kv_heads}, vocab {config.vocab}, "
          f"{config.seq} token(s) per pass over a context of {config.context} "
          f"({config.kv_cache} cache), "
          f"{config.parameters() / 1e9:.2f} G parameters (weights not written)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
