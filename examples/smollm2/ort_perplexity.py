"""The float reference of `q35c perplexity`: the same windows and formula, in onnxruntime.

    python examples/smollm2/ort_perplexity.py DECODE.onnx TOKENIZER.json TEXT
        [--context N] [--stride S] [--threads T]

Each window runs the decode graph once, from an empty cache (past length 0), with all its
tokens; the scored tokens and the formula are q35c.compiler.generate's (`windows`,
docs/generate.md). Prints the same line as `q35c perplexity`.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np


def main() -> None:
    import onnxruntime as ort

    from q35c.compiler.generate import PAST, Tokenizer, check_windows, windows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("tokenizer")
    parser.add_argument("text")
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    stride = args.stride or args.context // 2
    check_windows(args.context, stride)
    with open(args.text, encoding="utf-8") as f:
        ids = Tokenizer(Path(args.tokenizer)).encode(f.read())
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    empty = {}
    for value in session.get_inputs():
        if PAST.match(value.name):
            heads, head_dim = value.shape[1], value.shape[3]
            empty[value.name] = np.zeros((1, heads, 0, head_dim), np.float32)
    start = time.perf_counter()
    nll, count = 0.0, 0
    for begin, end, first in windows(len(ids), args.context, stride):
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
    print(f"perplexity {math.exp(nll / count):.4f} over {count} scored tokens "
          f"({len(ids)} tokens of text, context {args.context}, stride {stride})")
    print(f"onnxruntime: scored in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
