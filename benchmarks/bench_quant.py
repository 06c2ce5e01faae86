"""Perplexity of a language model with q35c's quantized weights, run by onnxruntime.

    python benchmarks/bench_quant.py DECODE.onnx TOKENIZER.json TEXT [--passes SPEC]
        [--context 256] [--stride 255] [--threads 2] [--errors] [--int-rescale]

q35c compiles the decode graph with `--passes SPEC` (default: q35c's default pipeline; ''
for the float model) and keeps the weight store; every packed weight `X.q3p5` replaces the
ONNX value `X` it was quantized from (its `q35c.onnx_name` where the importer stored it
under a readable name) by its dequantized float32 matrix (an initializer, or
the output of a folded node such as the LM head's Transpose), and onnxruntime scores the
text with the windows and formula of `q35c perplexity` (docs/generate.md). This measures
exactly the weight quantization of `q35c generate --act float` (weights decode bit-exactly
to these float32 matrices) without the hours the reference interpreter would take for a
135M-parameter model, and without the C target (which does not run these graphs yet).
`--errors` also prints each quantized weight's `q35c.rel_rmse` and, when calibrated,
`q35c.output_error`. A quantized embedding table (`quant3p5.gather`, named by its
`q35c.table` attribute) is replaced by its decoded rows, the transpose of the packed tensor
it gathers from (for a tied table, the LM head's). The last line also gives q35c's storage
line for the compiled graph (`weight_storage`: every stored weight, embeddings included).
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from pathlib import Path

import numpy as np


def quantized_weights(model: Path, passes: str | None, int_rescale: bool = False
                      ) -> tuple[dict[str, np.ndarray], list, str]:
    """{ONNX value name: dequantized float32 matrix}, rows (name, shape, rel RMSE, output
    error, bits per weight) of the q35c-compiled decode graph's quantized matmul weights,
    and its storage line. `int_rescale`: the matmul weights as the integer rescale contract
    computes with them (`int_scaled`, docs/groq.md), the embedding rows as decoded."""
    from q35c.compiler.cli import _options
    from q35c.compiler.driver import compile_to_module
    from q35c.compiler.generate import static_shapes, weight_storage
    from q35c.compiler.quant import Q3P5Tensor, dequantize
    from q35c.compiler.weights import store_of
    from q35c.dialects import quant3p5
    from q35c.semantics import int_scaled

    options = _options("interp", passes, None, False, None, (), None)
    options.shapes = static_shapes(model, 8, 8)
    _, module = compile_to_module(model, options, None)
    store = store_of(module)
    weights, rows = {}, []
    for op in module.walk():
        if isinstance(op, quant3p5.GatherOp) and "q35c.table" in op.attributes:
            packed = store[op.table.owner.weight_name.data]
            weights[op.attributes["q35c.table"].data] = dequantize(packed).T
            continue
        if not isinstance(op, quant3p5.WeightOp) or not op.weight_name.data.endswith(".q3p5"):
            continue
        if all(isinstance(use.operation, quant3p5.GatherOp) for use in op.result.uses):
            continue  # an untied table, replaced through its gather
        packed = store[op.weight_name.data]
        if not isinstance(packed, Q3P5Tensor):
            continue
        attr = op.attributes
        source = (attr["q35c.onnx_name"].data if "q35c.onnx_name" in attr  # a readable name
                  else op.weight_name.data.removesuffix(".q3p5"))
        weights[source] = int_scaled(packed).dequantized() if int_rescale else \
            dequantize(packed)
        rows.append((source, packed.shape, float(attr["q35c.rel_rmse"].value.data),
                     float(attr["q35c.output_error"].value.data)
                     if "q35c.output_error" in attr else None, packed.bits_per_weight()))
    return weights, rows, weight_storage(module, store).line()


def patched_model(model: Path, weights: dict[str, np.ndarray]) -> bytes:
    """The ONNX model with each named value replaced by a float32 initializer."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(model))
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    for name, value in weights.items():
        tensor = numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name)
        if name in inits:
            inits[name].CopyFrom(tensor)
            continue
        producers = [n for n in graph.node if name in n.output]
        if len(producers) != 1 or len(producers[0].output) != 1:
            raise SystemExit(f"cannot replace {name}: not an initializer or a folded node")
        graph.node.remove(producers[0])
        graph.initializer.append(tensor)
    return proto.SerializeToString()


def score(onnx_bytes: bytes, ids: list[int], context: int, stride: int, threads: int
          ) -> tuple[float, int]:
    import onnxruntime as ort

    from q35c.compiler.generate import PAST, windows

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    empty = {v.name: np.zeros((1, v.shape[1], 0, v.shape[3]), np.float32)
             for v in session.get_inputs() if PAST.match(v.name)}
    nll, count = 0.0, 0
    for begin, end, first in windows(len(ids), context, stride):
        window = ids[begin:end - 1]
        feed = {"input_ids": np.array([window], np.int64),
                "attention_mask": np.ones((1, len(window)), np.int64),
                "position_ids": np.arange(len(window), dtype=np.int64)[None], **empty}
        logits = session.run(["logits"], feed)[0][0].astype(np.float64)
        for t in range(first, end):
            row = logits[t - 1 - begin]
            top = row.max()
            nll += top + math.log(np.exp(row - top).sum()) - row[ids[t]]
            count += 1
    return math.exp(nll / count), count


def main() -> None:
    from q35c.compiler.generate import Tokenizer, check_windows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("text", type=Path)
    parser.add_argument("--passes", default=None)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--stride", type=int, default=255)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--errors", action="store_true")
    parser.add_argument("--int-rescale", action="store_true",
                        help="matmul weights as the integer rescale contract computes with "
                             "them (docs/groq.md)")
    args = parser.parse_args()
    check_windows(args.context, args.stride)
    ids = Tokenizer(args.tokenizer).encode(args.text.read_text(encoding="utf-8"))
    start = time.perf_counter()
    weights, rows, storage = quantized_weights(args.model, args.passes, args.int_rescale)
    compiled = time.perf_counter() - start
    if args.errors:
        for name, shape, rel, out, bpw in rows:
            extra = "" if out is None else f" output error {out:.4f}"
            print(f"{name} {shape[0]}x{shape[1]} {bpw:.3f} bpw rel RMSE {rel:.4f}{extra}")
    outs = [r[3] for r in rows if r[3] is not None]
    params = sum(r[1][0] * r[1][1] for r in rows)
    bits = sum(r[1][0] * r[1][1] * r[4] for r in rows)
    ppl, count = score(patched_model(args.model, weights), ids, args.context, args.stride,
                       args.threads)
    mean_out = f", mean output error {np.mean(outs):.4f}" if outs else ""
    print(f"perplexity {ppl:.4f} over {count} scored tokens ({len(ids)} tokens, context "
          f"{args.context}, stride {args.stride}); passes {args.passes!r}; "
          f"{'integer rescale contract; ' if args.int_rescale else ''}"
          f"{len(rows)} quantized matrices at {bits / max(params, 1):.3f} bpw{mean_out}; "
          f"compile {compiled:.0f} s, total {time.perf_counter() - start:.0f} s, peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    print(storage)


if __name__ == "__main__":
    main()
