"""Q3P5 format version 2 against version 1: bits per weight and accuracy, by shape.

Version 2 (docs/format.md) shares the three per-column words by blocks of adjacent
columns and stores them as float16 * 2**shift where per-column float32 words would take a
tensor past 3.75 bits per weight; version 1 kept per-column float32 words at every shape.
This prints

1. the serialized bits per weight of both versions at K in --ks (N = --n, group 32), with
   the word layout version 2 chooses;
2. per matrix shape of a real model (a safetensors file: every 2-D `*.weight` of a
   transformer layer, [out, in] as Hugging Face stores them, quantized as W = weight.T
   with K = in; the tied embedding too, as its LM head E^T), the rel RMSE
   ||W - deq(q(W))||_F / ||W||_F of version-1 words (`words=(1, "float32")`) and of the
   version-2 default, aggregated over the matrices of that shape (sum of squared errors
   over sum of squares), and both sizes;
3. the same for the synthetic N(0, 1) and Student-t (df = 4) matrices of
   benchmarks/bench_format.py (--size, same seeds).

    python benchmarks/bench_words.py --model /work/models/smollm2/full/hf/model.safetensors
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from q35c.compiler.quant import dequantize, quantize, storage_bytes, word_layout

KS = (256, 576, 1536, 2048, 3072, 4096, 11008, 14336)
V1_WORDS = (1, "float32")


def bits(shape: tuple[int, int], version: int) -> float:
    return storage_bytes(shape, 32, version=version) * 8 / (shape[0] * shape[1])


def size_table(ks: tuple[int, ...], n: int) -> None:
    print(f"\nSerialized bits per weight, N = {n}, group 32 (storage_bytes)")
    print("| K | version 1 | version 2 | version-2 words (column block, format) |")
    print("|---:|---:|---:|---|")
    for k in ks:
        block, fmt = word_layout((k, n), 32)
        print(f"| {k} | {bits((k, n), 1):.4f} | {bits((k, n), 2):.4f} | {block}, {fmt} |")


def errors(w: np.ndarray) -> tuple[float, float, float, tuple[int, str]]:
    """(squared norm of W, squared error with version-1 words, with version-2 words, the
    version-2 words), in float64."""
    ref = float(np.sum(np.square(w, dtype=np.float64)))
    out = []
    for words in (V1_WORDS, None):
        q = quantize(w, words=words)
        d = dequantize(q).astype(np.float64) - w
        out.append(float(np.sum(d * d)))
    return ref, out[0], out[1], q.words


def print_rows(title: str, rows: dict) -> None:
    print(f"\n{title}")
    print("| matrices | K x N | count | bits v1 | bits v2 | v2 words | rel RMSE v1 | "
          "rel RMSE v2 | v2 / v1 |")
    print("|---|---|---:|---:|---:|---|---:|---:|---:|")
    for (kind, shape), (count, ref, e1, e2, words) in rows.items():
        r1, r2 = np.sqrt(e1 / ref), np.sqrt(e2 / ref)
        print(f"| {kind} | {shape[0]} x {shape[1]} | {count} | {bits(shape, 1):.4f} | "
              f"{bits(shape, 2):.4f} | {words[0]}, {words[1]} | {r1:.5f} | {r2:.5f} | "
              f"{r2 / r1:.4f} |")


def real_model(path: str) -> None:
    from safetensors import safe_open

    rows: dict = defaultdict(lambda: [0, 0.0, 0.0, 0.0, None])
    with safe_open(path, "numpy") as f:
        names = [n for n in f.keys() if n.endswith(".weight")]
        for name in names:
            t = f.get_tensor(name)
            if t.ndim != 2 or not (".layers." in name or "embed_tokens" in name):
                continue
            w = np.ascontiguousarray(t.T.astype(np.float32))  # [in, out] = [K, N]
            kind = "embed_tokens (as LM head)" if "embed_tokens" in name else name.split(".")[-2]
            ref, e1, e2, words = errors(w)
            row = rows[(kind, w.shape)]
            row[0] += 1
            row[1] += ref
            row[2] += e1
            row[3] += e2
            row[4] = words
    print_rows(f"{path}: per matrix shape, aggregated over the layers", rows)


def synthetic(size: int) -> None:
    samples = {"N(0,1)": np.random.default_rng(0).standard_normal((size, size)),
               "Student-t df=4": np.random.default_rng(1).standard_t(4, (size, size))}
    rows = {}
    for kind, w in samples.items():
        w = w.astype(np.float32)
        ref, e1, e2, words = errors(w)
        rows[(kind, w.shape)] = (1, ref, e1, e2, words)
    print_rows(f"bench_format.py's synthetic matrices, {size} x {size}", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a safetensors file of a transformer")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--ks", type=lambda s: tuple(int(x) for x in s.split(",")), default=KS)
    args = parser.parse_args()
    print(f"numpy {np.__version__}")
    size_table(args.ks, args.n)
    if args.model:
        real_model(args.model)
    if args.size:
        synthetic(args.size)


if __name__ == "__main__":
    main()
