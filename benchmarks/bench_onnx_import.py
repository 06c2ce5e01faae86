"""Import + quantize benchmark on a LLaMA-shaped ONNX graph the size of a 135M model.

Builds (once, cached in --workdir) a decoder with SmolLM2-135M's shapes: 30 layers, hidden
576, 9 heads / 3 KV heads of 64, SwiGLU FFN 1536, vocabulary 49152 with tied embeddings
(134.5M parameters, fp32 in an external-data file), written with onnx.helper the way
exporters write it: decomposed RMSNorm, rotary tables and the causal mask computed from
Shape/Range/Trilu subgraphs, grouped-query attention through Expand/Reshape, dynamic
`batch` and `seq` dims. Then it measures, each in a fresh process, wall time, peak RSS and peak
anonymous memory (RssAnon sampled every 5 ms from /proc: RSS less the pages of mapped files) of

- q35c import+quantize: `q35c model.onnx --shape input_ids=1,128 --target mlir -o OUT
  --passes quantize-weights,canonicalize,cse` (import, fold, quantize every matmul weight
  to Q3P5, write IR + weights);
- q35c default pipeline: the same with the default passes, which add the verification
  passes `verify-overflow,verify-quant-error`;
- onnxruntime: creating an InferenceSession on the same fp32 model (its load + graph
  optimization), a named peer for "load this model";

and prints medians over --repeat runs and the ratios.

    python benchmarks/bench_onnx_import.py [--repeat 3] [--workdir /tmp/q35c-bench-135m]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LAYERS, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, VOCAB = 30, 576, 9, 3, 64, 1536, 49152


class Graph:
    """A tiny helper that names nodes and values like the torch exporter does."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        self.count += 1
        out = f"/{op_type}_{self.count}_output_0"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out],
                                           name=f"/{op_type}_{self.count}", **attrs))
        return out

    def const(self, value, dtype=np.float32) -> str:
        self.count += 1
        name = f"/Constant_{self.count}_output_0"
        self.nodes.append(helper.make_node("Constant", [], [name], name=f"/Constant_{self.count}",
                                           value=numpy_helper.from_array(np.array(value, dtype))))
        return name

    def weight(self, name: str, shape: tuple[int, ...], std: float = 0.02,
               mean: float = 0.0) -> str:
        data = (mean + std * self.rng.standard_normal(shape)).astype(np.float32)
        self.inits.append(numpy_helper.from_array(data, name))
        return name

    def rms_norm(self, x: str, name: str) -> str:
        var = self.op("ReduceMean", self.op("Pow", x, self.const(2.0)), self.const([-1], np.int64),
                      keepdims=1)
        inv = self.op("Div", self.const(1.0),
                      self.op("Sqrt", self.op("Add", var, self.const(1e-5))))
        return self.op("Mul", self.weight(name, (HIDDEN,), 0.1, 1.0), self.op("Mul", x, inv))

    def heads(self, x: str, count: int) -> str:
        shaped = self.op("Reshape", x, self.const([0, 0, count, HEAD_DIM], np.int64))
        return self.op("Transpose", shaped, perm=[0, 2, 1, 3])

    def rotary(self, x: str, cos: str, sin: str) -> str:
        half = HEAD_DIM // 2
        x1 = self.op("Slice", x, self.const([0], np.int64), self.const([half], np.int64),
                     self.const([-1], np.int64))
        x2 = self.op("Slice", x, self.const([half], np.int64), self.const([HEAD_DIM], np.int64),
                     self.const([-1], np.int64))
        rotated = self.op("Concat", self.op("Neg", x2), x1, axis=-1)
        return self.op("Add", self.op("Mul", x, cos), self.op("Mul", rotated, sin))


def build_model(path: Path) -> None:
    g = Graph(np.random.default_rng(135))
    embed = g.weight("model.embed_tokens.weight", (VOCAB, HIDDEN))
    x = g.op("Gather", embed, "input_ids")
    seq = g.op("Gather", g.op("Shape", "input_ids"), g.const(1, np.int64))
    seq1 = g.op("Unsqueeze", seq, g.const([0], np.int64))
    # Rotary tables: positions (Range) x inverse frequencies.
    positions = g.op("Cast", g.op("Range", g.const(0, np.int64), seq, g.const(1, np.int64)),
                     to=TensorProto.FLOAT)
    inv_freq = 1.0 / (10000 ** (np.arange(0, HEAD_DIM, 2) / HEAD_DIM))
    freqs = g.op("Mul", g.op("Unsqueeze", positions, g.const([1], np.int64)),
                 g.const(inv_freq[None, :]))
    emb = g.op("Concat", freqs, freqs, axis=-1)
    cos, sin = g.op("Cos", emb), g.op("Sin", emb)
    # Causal mask from the sequence length: Trilu of a ConstantOfShape.
    square = g.op("Concat", seq1, seq1, axis=0)
    ones = g.op("ConstantOfShape", square,
                value=numpy_helper.from_array(np.array([1.0], np.float32)))
    mask = g.op("Mul", g.op("Trilu", ones, g.const(1, np.int64), upper=1), g.const(-1e9))
    for layer in range(LAYERS):
        p = f"model.layers.{layer}"
        h = g.rms_norm(x, f"{p}.input_layernorm.weight")
        q = g.heads(g.op("MatMul", h, g.weight(f"{p}.self_attn.q_proj.weight_t",
                                               (HIDDEN, HIDDEN))), HEADS)
        k = g.heads(g.op("MatMul", h, g.weight(f"{p}.self_attn.k_proj.weight_t",
                                               (HIDDEN, KV_HEADS * HEAD_DIM))), KV_HEADS)
        v = g.heads(g.op("MatMul", h, g.weight(f"{p}.self_attn.v_proj.weight_t",
                                               (HIDDEN, KV_HEADS * HEAD_DIM))), KV_HEADS)
        q, k = g.rotary(q, cos, sin), g.rotary(k, cos, sin)
        shape_kv = g.op("Concat", g.const([1, KV_HEADS, HEADS // KV_HEADS], np.int64), seq1,
                        g.const([HEAD_DIM], np.int64), axis=0)
        k = g.op("Reshape", g.op("Expand", g.op("Unsqueeze", k, g.const([2], np.int64)), shape_kv),
                 g.const([1, HEADS, -1, HEAD_DIM], np.int64))
        v = g.op("Reshape", g.op("Expand", g.op("Unsqueeze", v, g.const([2], np.int64)), shape_kv),
                 g.const([1, HEADS, -1, HEAD_DIM], np.int64))
        scores = g.op("Mul", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])),
                      g.const(1.0 / np.sqrt(HEAD_DIM)))
        attn = g.op("MatMul", g.op("Softmax", g.op("Add", scores, mask), axis=-1), v)
        merged = g.op("Reshape", g.op("Transpose", attn, perm=[0, 2, 1, 3]),
                      g.const([0, 0, HIDDEN], np.int64))
        x = g.op("Add", x, g.op("MatMul", merged,
                                g.weight(f"{p}.self_attn.o_proj.weight_t", (HIDDEN, HIDDEN))))
        h = g.rms_norm(x, f"{p}.post_attention_layernorm.weight")
        gate = g.op("MatMul", h, g.weight(f"{p}.mlp.gate_proj.weight_t", (HIDDEN, FFN)))
        up = g.op("MatMul", h, g.weight(f"{p}.mlp.up_proj.weight_t", (HIDDEN, FFN)))
        act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)
        x = g.op("Add", x, g.op("MatMul", act,
                                g.weight(f"{p}.mlp.down_proj.weight_t", (FFN, HIDDEN))))
    logits = g.op("MatMul", g.rms_norm(x, "model.norm.weight"),
                  g.op("Transpose", embed, perm=[1, 0]))
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="/output"))
    graph = helper.make_graph(
        g.nodes, "llama_135m_shape",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", VOCAB])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="q35c-bench")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.stem + ".data", size_threshold=1024)


PEER_SCRIPT = """
import sys, onnxruntime as ort
ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
"""


def measure(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS in MiB, peak RssAnon in MiB) of `cmd`, run in a fresh child
    via a tiny wrapper; RssAnon is sampled from /proc every 5 ms (so a shorter spike can be
    missed; peak RSS is the kernel's exact high-water mark)."""
    wrapper = ("import resource, subprocess, sys, time, json\n"
               "def anon(pid):\n"
               "    try:\n"
               "        for line in open(f'/proc/{pid}/status'):\n"
               "            if line.startswith('RssAnon:'):\n"
               "                return int(line.split()[1]) / 1024\n"
               "    except OSError:\n"
               "        pass\n"
               "    return 0.0\n"
               "t = time.perf_counter(); p = subprocess.Popen(sys.argv[1:]); peak = 0.0\n"
               "while p.poll() is None:\n"
               "    peak = max(peak, anon(p.pid)); time.sleep(0.005)\n"
               "w = time.perf_counter() - t\n"
               "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
               "print(json.dumps([p.returncode, w, rss, peak]))")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    code, wall, rss, anon = json.loads(out.stdout.strip().splitlines()[-1])
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{out.stderr[-3000:]}")
    return wall, rss, anon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/q35c-bench-135m"))
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()
    model = args.workdir / "llama_135m_shape.onnx"
    if not model.exists():
        start = time.perf_counter()
        build_model(model)
        print(f"built {model} in {time.perf_counter() - start:.1f} s")
    initializers = onnx.load(str(model), load_external_data=False).graph.initializer
    params = sum(int(np.prod(t.dims)) for t in initializers)
    q35c = str(Path(sys.executable).with_name("q35c"))
    compile_cmd = [q35c, str(model), "--shape", f"input_ids=1,{args.seq}", "--target", "mlir",
                   "-o", str(args.workdir / "out")]
    runs = {"q35c import+quantize": [*compile_cmd, "--passes", "quantize-weights,canonicalize,cse"],
            "q35c default pipeline (+ verification)": compile_cmd,
            "onnxruntime session (fp32)": [sys.executable, "-c", PEER_SCRIPT, str(model)]}
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runs}
    load_start = os.getloadavg()[0]
    for _ in range(args.repeat):
        for name, cmd in runs.items():  # alternate, so load changes hit both alike
            results[name].append(measure(cmd))
    out_bytes = sum(p.stat().st_size for p in (args.workdir / "out").iterdir())
    print(f"model: {LAYERS} layers, hidden {HIDDEN}, FFN {FFN}, vocab {VOCAB}, "
          f"{params / 1e6:.1f}M parameters, "
          f"fp32 {model.with_suffix('.data').stat().st_size / 2**20:.0f} MiB "
          f"external data; q35c output {out_bytes / 2**20:.1f} MiB; median of {args.repeat}; "
          f"load average {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    print("| run | wall s | peak RSS MiB | peak RssAnon MiB |")
    print("|---|---:|---:|---:|")
    medians = {}
    for name, samples in results.items():
        wall = statistics.median(s[0] for s in samples)
        rss = statistics.median(s[1] for s in samples)
        anon = statistics.median(s[2] for s in samples)
        medians[name] = (wall, rss)
        print(f"| {name} | {wall:.2f} | {rss:.0f} | {anon:.0f} |")
    o_wall, o_rss = medians["onnxruntime session (fp32)"]
    for name in list(runs)[:2]:
        wall, rss = medians[name]
        print(f"{name} / onnxruntime: wall {wall / o_wall:.2f}x, peak RSS {rss / o_rss:.2f}x")
    print("goals (import+quantize): < 60 s and < 3072 MiB")


if __name__ == "__main__":
    main()
