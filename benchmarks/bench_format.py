"""Benchmark the Q3P5 format against gguf peers and the legacy pair layout.

For a Gaussian N(0, 1) and a Student-t (df = 4) matrix of --size x --size
float32 weights (fixed seeds) it prints, per format: bits per weight, relative
RMSE ||W - deq(q(W))||_F / ||W||_F and quantize throughput in million weights
per second (median of --repeat runs; the formats take turns within each run so
that load changes on the machine hit them alike), then the ratio of Q3P5's
throughput to gguf's numpy Q4_0 quantizer.

gguf quantizes rows along the last axis, so it is fed W.T (made contiguous
before timing) and its blocks run along K, like Q3P5 groups.  gguf-py can only
dequantize Q3_K; pass --ggml-lib (or set GGML_BASE_LIB) to a libggml-base.so,
e.g. from the libggml-python wheel, to produce Q3_K data with ggml's own C
quantizer (no importance matrix); otherwise the Q3_K row is skipped.

    python benchmarks/bench_format.py [--size 4096] [--repeat 3] [--ggml-lib PATH]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from q35c.compiler.quant import dequantize, dequantize_legacy, quantize, quantize_legacy

DISTRIBUTIONS: dict[str, Callable[[int], np.ndarray]] = {
    "N(0,1)": lambda size: np.random.default_rng(0).standard_normal((size, size)),
    "Student-t df=4": lambda size: np.random.default_rng(1).standard_t(4, (size, size)),
}


@dataclass
class Format:
    """How to quantize one matrix to a format and measure the result."""

    name: str
    quantizer: str
    quantize: Callable[[], object]  # returns the quantized form
    bits_per_weight: Callable[[object], float]
    dequantize: Callable[[object], np.ndarray]  # back to the layout of ``reference``
    reference: np.ndarray


@dataclass
class Row:
    format: str
    quantizer: str
    bpw: float
    rel_rmse: float
    mweights_per_s: float


def measure(formats: list[Format], repeat: int) -> list[Row]:
    """Time every format ``repeat`` times, interleaved so that a change of machine
    load hits all formats alike; report the median time of each."""
    seconds: dict[str, list[float]] = {f.name: [] for f in formats}
    results: dict[str, object] = {}
    for _ in range(repeat):
        for f in formats:
            start = time.perf_counter()
            results[f.name] = f.quantize()
            seconds[f.name].append(time.perf_counter() - start)
    rows = []
    for f in formats:
        q, ref = results[f.name], f.reference
        error = float(np.linalg.norm(f.dequantize(q) - ref) / np.linalg.norm(ref))
        rate = ref.size / statistics.median(seconds[f.name]) / 1e6
        rows.append(Row(f.name, f.quantizer, f.bits_per_weight(q), error, rate))
    return rows


GgufQuantizer = Callable[[np.ndarray, GGMLQuantizationType], np.ndarray]


def gguf_format(
    name: str, kind: GGMLQuantizationType, w_t: np.ndarray, quantizer: str, fn: GgufQuantizer
) -> Format:
    """A llama.cpp format: quantized by ``fn``, dequantized by gguf-py."""
    return Format(
        name, quantizer, lambda: fn(w_t, kind),
        lambda blocks: blocks.nbytes * 8 / w_t.size,
        lambda blocks: quants.dequantize(blocks, kind), w_t,
    )


def ggml_quantizer(path: str) -> GgufQuantizer:
    """ggml_quantize_chunk from libggml-base (no importance matrix), as a numpy function."""
    fn = ctypes.CDLL(path).ggml_quantize_chunk
    fn.restype = ctypes.c_size_t
    pointer = ctypes.c_void_p
    fn.argtypes = [ctypes.c_int, pointer, pointer] + [ctypes.c_int64] * 3 + [pointer]

    def run(rows: np.ndarray, kind: GGMLQuantizationType) -> np.ndarray:
        block, type_size = GGML_QUANT_SIZES[kind]
        out = np.empty((rows.shape[0], rows.shape[1] // block * type_size), dtype=np.uint8)
        nrows, per_row = rows.shape
        written = fn(int(kind), rows.ctypes.data, out.ctypes.data, 0, nrows, per_row, None)
        assert written == out.nbytes, (written, out.nbytes)
        return out

    return run


def formats_for(w: np.ndarray, ggml_lib: str | None) -> list[Format]:
    w_t = np.ascontiguousarray(w.T)  # gguf blocks run along the last axis: K
    formats = [
        Format("Q3P5 (g32)", "q35c numpy", lambda: quantize(w, name="bench"),
               lambda q: q.bits_per_weight(), dequantize, w),
        gguf_format("Q4_0", GGMLQuantizationType.Q4_0, w_t, "gguf numpy", quants.quantize),
    ]
    if ggml_lib:
        q3_k = GGMLQuantizationType.Q3_K
        formats.append(gguf_format("Q3_K", q3_k, w_t, "ggml C", ggml_quantizer(ggml_lib)))
    formats.append(
        Format("legacy pair 4+3", "q35c numpy", lambda: quantize_legacy(w, name="bench"),
               lambda t: t.bits_per_weight(), dequantize_legacy, w)
    )
    return formats


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    print("| format | quantizer | bits/weight | rel RMSE | quantize M weights/s |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r.format} | {r.quantizer} | {r.bpw:.4f} | {r.rel_rmse:.4f} "
              f"| {r.mweights_per_s:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ggml-lib", default=os.environ.get("GGML_BASE_LIB"),
                        help="path to libggml-base.so, to quantize Q3_K with ggml's C code")
    args = parser.parse_args()

    print(f"numpy {np.__version__}, gguf {version('gguf')}, {os.cpu_count()} CPUs; "
          f"{args.size}x{args.size} float32, median of {args.repeat} runs")
    print("gguf is fed W.T (contiguous, made before timing), so its blocks run along K "
          "like Q3P5 groups.")
    if not args.ggml_lib:
        print("Q3_K: skipped. gguf-py can only dequantize Q3_K, and no ggml C library was "
              "given (--ggml-lib).")
    quantize(np.ones((32, 1), np.float32))  # build the encoder's look-up table outside the timing

    for name, sample in DISTRIBUTIONS.items():
        w = sample(args.size).astype(np.float32)
        rows = measure(formats_for(w, args.ggml_lib), args.repeat)
        print_table(f"{name}, {args.size}x{args.size}", rows)
        ratio = rows[0].mweights_per_s / rows[1].mweights_per_s
        print(f"Q3P5 / Q4_0 quantize throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()
