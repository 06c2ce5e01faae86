"""Held-out output error of the calibrated Q3P5 encoders, weight by weight.

    python benchmarks/quant_heldout.py MODEL.onnx FIT.npz HELD.npz [--columns 2048]

Each matmul weight of MODEL (compiled with `--passes ''`) is encoded with the statistics
FIT.npz (`q35c calibrate` on one text) by every variant below, and its relative output
error ||X (W - deq)|| / ||X W|| is measured both on FIT (in-sample) and on HELD.npz
(statistics of another text: held-out). Output errors are separable by column, so wide
weights (the LM head) are cut to their first `--columns` columns. Prints one row per
weight (held-out errors, variants in order) and the RMS over weights per variant. This
is how docs/benchmarks.md chose the calibrated defaults (damp, act-order) without the
hours a full-model perplexity run per variant takes on a loaded 2-core machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from q35c.compiler.calibration import StatisticsFile, watched_matmuls
from q35c.compiler.cli import _options
from q35c.compiler.driver import compile_to_module
from q35c.compiler.generate import static_shapes
from q35c.compiler.quant import dequantize, quantize
from q35c.compiler.quant.calibrated import output_error, quantize_calibrated


def _gptq(**options):
    return lambda w, h: dequantize(quantize_calibrated(w, h, **options))


def _awq(alpha: float, **options):
    """AWQ emulated exactly: W*s quantized under H/(s s^T), then divided by s (what
    (x / s) @ deq(W * s) computes), s = diag(H)^(alpha/2) normalized to geometric mean 1."""
    def encode(w, h):
        d = np.sqrt(np.maximum(np.diag(h), 1e-12)) ** alpha
        s = d / np.sqrt(d.max() * d.min())
        return dequantize(quantize_calibrated(w * s[:, None], h / np.outer(s, s), **options)
                           ) / s[:, None]
    return encode


VARIANTS = {
    "rtn": lambda w, h: dequantize(quantize(w)),
    "imatrix": _gptq(method="imatrix"),
    "gptq damp=0.01 K order": _gptq(damp=0.01, act_order=False),
    "gptq damp=0.03 K order": _gptq(damp=0.03, act_order=False),
    "gptq damp=0.1 K order": _gptq(damp=0.1, act_order=False),
    "gptq damp=0.01 act-order": _gptq(damp=0.01, act_order=True),
    "gptq damp=0.03 act-order": _gptq(damp=0.03, act_order=True),
    "gptq damp=0.1 act-order": _gptq(damp=0.1, act_order=True),
    "gptq damp=0.01 K order + awq 0.25": _awq(0.25, damp=0.01, act_order=False),
    "gptq damp=0.01 K order + awq 0.5": _awq(0.5, damp=0.01, act_order=False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("fit", type=Path)
    parser.add_argument("held", type=Path)
    parser.add_argument("--columns", type=int, default=2048)
    parser.add_argument("--only", default="", help="comma-separated variant names to run")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(VARIANTS)
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    variants = {v: VARIANTS[v] for v in chosen}
    fit, held = StatisticsFile(args.fit), StatisticsFile(args.held)
    options = _options("interp", "", None, False, None, (), None)
    options.shapes = static_shapes(args.model, 8, 8)
    _, module = compile_to_module(args.model, options, None)
    from q35c.compiler.weights import store_of

    store = store_of(module)
    _, empty = watched_matmuls(module)
    sums = {v: [0.0, 0.0] for v in variants}
    print("weight shape " + " | ".join(variants))
    for name in empty.names:
        w = np.asarray(store[name], np.float32)[:, :args.columns]
        h_fit, h_held = fit.gram(name, w.shape[0]), held.gram(name, w.shape[0])
        row = []
        for variant, encode in variants.items():
            deq = encode(w, h_fit)
            inside, outside = output_error(w, deq, h_fit), output_error(w, deq, h_held)
            sums[variant][0] += inside**2
            sums[variant][1] += outside**2
            row.append(f"{outside:.4f}")
        print(name, "x".join(map(str, w.shape)), " ".join(row), flush=True)
    count = len(empty.names)
    for variant, (inside, outside) in sums.items():
        print(f"{variant:36s} RMS output error over weights: in-sample "
              f"{np.sqrt(inside / count):.4f}, held-out {np.sqrt(outside / count):.4f}")


if __name__ == "__main__":
    main()
