"""Write a tiny LLaMA-style decode step with a KV cache input (onnx.helper, numpy weights).

    python examples/models/build_llama_decode.py OUT.onnx [--layers 1] [--past 7]

One new token over a cache of `past` earlier ones, in the Hugging Face LLaMA layout as the
TorchScript exporter writes it: inputs `input_ids` [1, 1], `position_ids` [1, 1] and per
layer `past_key_values.N.key/value` [1, kv_heads, past, head_dim]; outputs `logits`
[1, 1, vocab] and `present.N.key/value` (the cache followed by the new token). Inside:
the token embedding (Gather), per layer RMSNorm (Pow, ReduceMean, Add, Sqrt, Div, Mul,
Mul), q/k/v projections (MatMul, Reshape, Transpose), RoPE with cos/sin rows gathered by
position from tables (theta 10000; rotate_half as Slice, Neg, Concat), the new key and
value concatenated to the cache, grouped-query attention (repeat_kv as Unsqueeze, Expand,
Reshape; MatMul, Mul by 1/sqrt(d), Softmax, MatMul), o projection and residual, RMSNorm,
the SwiGLU MLP (Sigmoid, Mul) and residual; a final RMSNorm and the LM head. Weights are
seeded N(0, 1/fan-in) (norm weights 1 + N(0, 0.1^2)); the output is deterministic.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


@dataclass(frozen=True)
class Config:
    layers: int = 1
    vocab: int = 64
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 128
    past: int = 7
    max_positions: int = 64
    eps: float = 1e-5
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def build(c: Config) -> onnx.ModelProto:
    rng = np.random.default_rng(c.seed)
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    d, nh, nkv = c.head_dim, c.heads, c.kv_heads

    def init(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(name: str, *shape: int) -> str:
        return init(name, (rng.standard_normal(shape) / math.sqrt(shape[0])).astype(np.float32))

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def rms_norm(x: str, name: str) -> str:
        g = init(f"{name}.weight", (1 + 0.1 * rng.standard_normal(c.hidden)).astype(np.float32))
        ms = node("ReduceMean", [node("Pow", [x, "c.two"], f"{name}/pow"), "c.last"],
                  f"{name}/mean", keepdims=1)
        r = node("Div", ["c.one", node("Sqrt", [node("Add", [ms, "c.eps"], f"{name}/eps")],
                                       f"{name}/sqrt")], f"{name}/rsqrt")
        return node("Mul", [g, node("Mul", [x, r], f"{name}/scale")], f"{name}/out")

    init("c.two", np.float32(2.0))
    init("c.one", np.float32(1.0))
    init("c.eps", np.float32(c.eps))
    init("c.last", np.array([-1], np.int64))
    init("c.axis2", np.array([2], np.int64))
    init("c.scale", np.float32(1 / math.sqrt(d)))
    init("c.lo", np.array([0], np.int64))
    init("c.mid", np.array([d // 2], np.int64))
    init("c.end", np.array([d], np.int64))
    init("c.q", np.array([1, 1, nh, d], np.int64))
    init("c.kv", np.array([1, 1, nkv, d], np.int64))
    init("c.rep", np.array([1, nkv, nh // nkv, c.past + 1, d], np.int64))
    init("c.heads", np.array([1, nh, c.past + 1, d], np.int64))
    init("c.merge", np.array([1, 1, c.hidden], np.int64))
    inv = 1.0 / 10000 ** (np.arange(0, d, 2) / d)
    ang = np.arange(c.max_positions)[:, None] * np.concatenate([inv, inv])[None, :]
    init("rope.cos", np.cos(ang).astype(np.float32))
    init("rope.sin", np.sin(ang).astype(np.float32))
    cos = node("Gather", ["rope.cos", "position_ids"], "/rope/cos")  # [1, 1, d]
    sin = node("Gather", ["rope.sin", "position_ids"], "/rope/sin")
    x = node("Gather", [weight("embed_tokens.weight", c.vocab, c.hidden), "input_ids"],
             "/embed_tokens/Gather")
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 1]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, [1, 1])]
    outputs = []
    for i in range(c.layers):
        p = f"/layers.{i}"
        h = rms_norm(x, f"layers.{i}.input_layernorm")
        heads = {}
        for proj, width, shape in (("q", nh * d, "c.q"), ("k", nkv * d, "c.kv"),
                                   ("v", nkv * d, "c.kv")):
            y = node("MatMul", [h, weight(f"layers.{i}.self_attn.{proj}_proj.weight_t",
                                          c.hidden, width)], f"{p}/{proj}_proj")
            y = node("Reshape", [y, shape], f"{p}/{proj}/Reshape")
            heads[proj] = node("Transpose", [y], f"{p}/{proj}/Transpose", perm=[0, 2, 1, 3])
        for proj in ("q", "k"):
            t = heads[proj]
            lo = node("Slice", [t, "c.lo", "c.mid", "c.last"], f"{p}/rope/{proj}/lo")
            hi = node("Slice", [t, "c.mid", "c.end", "c.last"], f"{p}/rope/{proj}/hi")
            rot = node("Concat", [node("Neg", [hi], f"{p}/rope/{proj}/neg"), lo],
                       f"{p}/rope/{proj}/rot", axis=-1)
            heads[proj] = node("Add", [node("Mul", [t, cos], f"{p}/rope/{proj}/cos"),
                                       node("Mul", [rot, sin], f"{p}/rope/{proj}/sin")],
                               f"{p}/rope/{proj}/out")
        for kind in ("key", "value"):
            past = f"past_key_values.{i}.{kind}"
            inputs.append(helper.make_tensor_value_info(past, TensorProto.FLOAT,
                                                        [1, nkv, c.past, d]))
            proj = "k" if kind == "key" else "v"
            present = f"present.{i}.{kind}"
            nodes.append(helper.make_node("Concat", [past, heads[proj]], [present],
                                          name=f"{p}/{kind}/Concat", axis=2))
            outputs.append(helper.make_tensor_value_info(present, TensorProto.FLOAT,
                                                         [1, nkv, c.past + 1, d]))
            t = node("Unsqueeze", [present, "c.axis2"], f"{p}/{kind}/Unsqueeze")
            t = node("Expand", [t, "c.rep"], f"{p}/{kind}/Expand")
            heads[proj] = node("Reshape", [t, "c.heads"], f"{p}/{kind}/repeat_kv")
        kt = node("Transpose", [heads["k"]], f"{p}/kT", perm=[0, 1, 3, 2])
        scores = node("Mul", [node("MatMul", [heads["q"], kt], f"{p}/scores"), "c.scale"],
                      f"{p}/scaled")
        probs = node("Softmax", [scores], f"{p}/Softmax", axis=-1)
        ctx = node("MatMul", [probs, heads["v"]], f"{p}/context")
        ctx = node("Reshape", [node("Transpose", [ctx], f"{p}/ctx/Transpose",
                                    perm=[0, 2, 1, 3]), "c.merge"], f"{p}/ctx/Reshape")
        o = node("MatMul", [ctx, weight(f"layers.{i}.self_attn.o_proj.weight_t", nh * d,
                                        c.hidden)], f"{p}/o_proj")
        x = node("Add", [x, o], f"{p}/attn_residual")
        h = rms_norm(x, f"layers.{i}.post_attention_layernorm")
        gate = node("MatMul", [h, weight(f"layers.{i}.mlp.gate_proj.weight_t", c.hidden,
                                         c.ffn)], f"{p}/gate_proj")
        up = node("MatMul", [h, weight(f"layers.{i}.mlp.up_proj.weight_t", c.hidden, c.ffn)],
                  f"{p}/up_proj")
        act = node("Mul", [node("Mul", [gate, node("Sigmoid", [gate], f"{p}/sigmoid")],
                                f"{p}/silu"), up], f"{p}/swiglu")
        down = node("MatMul", [act, weight(f"layers.{i}.mlp.down_proj.weight_t", c.ffn,
                                           c.hidden)], f"{p}/down_proj")
        x = node("Add", [x, down], f"{p}/mlp_residual")
    x = rms_norm(x, "norm")
    nodes.append(helper.make_node("MatMul", [x, weight("lm_head.weight_t", c.hidden,
                                                       c.vocab)], ["logits"], name="/lm_head"))
    outputs.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                    [1, 1, c.vocab]))
    graph = helper.make_graph(nodes, "llama_decode_tiny", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="q35c examples/models/build_llama_decode.py",
                              producer_version="1")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write(path: Path, config: Config = Config()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(build(config).SerializeToString(deterministic=True))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--past", type=int, default=7)
    args = parser.parse_args(argv)
    write(args.output, Config(layers=args.layers, past=args.past))
    print(f"{args.output}: {args.layers} layer(s), a cache of {args.past} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
