"""The measuring rules of benchmarks/bench_llm.py, kept free of peer libraries so that
tests/test_bench_llm.py can check them without llama.cpp, onnxruntime-genai or a model.

- `chunks`: the perplexity windows. stride == context is the non-overlapping protocol of
  issue 16's goal figures: floor(n / context) full windows, each scoring all its tokens but
  the first (the text's tail that does not fill a window is dropped; llama.cpp's
  perplexity tool cuts the same windows but scores only their second halves).
  stride < context is `q35c perplexity`'s sliding window
  (q35c.compiler.generate.windows, docs/generate.md): every token but the first is scored
  once, with at least `context - stride` tokens before it in its window.
- `score`: the mean negative log-likelihood over those windows, from any logits function,
  so that every runtime is scored by the same code on the same token ids.
- `Tally`: stored bits over parameters, split into the per-layer projection matrices
  (comparable across formats), the LM head and the rest (embeddings, norms).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np


def chunks(n: int, context: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """(begin, end, first scored) of each window over n tokens (see the module docstring)."""
    if not 0 < stride <= context:
        raise ValueError(f"stride must be in 1..{context}, got {stride}")
    if stride == context:
        for begin in range(0, n - context + 1, context):
            yield begin, begin + context, begin + 1
        return
    previous_end = 1
    for begin in range(0, max(n - 1, 1), stride):
        end = min(begin + context, n)
        yield begin, end, max(previous_end, begin + 1)
        previous_end = end
        if end == n:
            return


def token_nll(logits: np.ndarray, targets: Iterable[int]) -> np.ndarray:
    """-log softmax(logits[i])[targets[i]] per row, in float64 (log-sum-exp shifted by the
    row maximum)."""
    rows = np.asarray(logits, np.float64)
    top = rows.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
    picked = rows[np.arange(rows.shape[0]), np.fromiter(targets, np.int64)]
    return log_z - picked


@dataclass
class Score:
    """Summed negative log-likelihood over `tokens` scored tokens."""

    nll: float = 0.0
    tokens: int = 0

    @property
    def ppl(self) -> float:
        return math.exp(self.nll / self.tokens)


def score(logits_of: Callable[[list[int]], np.ndarray], ids: list[int], context: int,
          stride: int) -> Score:
    """Perplexity of `ids`: `logits_of(tokens)` returns the [len(tokens), vocab] logits of
    one window fed from an empty cache; row i predicts token i + 1."""
    total = Score()
    for begin, end, first in chunks(len(ids), context, stride):
        logits = logits_of(ids[begin:end - 1])
        rows = logits[first - 1 - begin:end - 1 - begin]
        total.nll += float(token_nll(rows, ids[first:end]).sum())
        total.tokens += end - first
    if not total.tokens:
        raise ValueError(f"{len(ids)} tokens do not fill one window of {context}")
    return total


PROJECTION = "projection"  # the per-layer q/k/v/o/gate/up/down matrices
LM_HEAD = "lm_head"
OTHER = "other"  # embedding table, norms


@dataclass
class Tally:
    """Stored bits and parameter counts per kind (PROJECTION, LM_HEAD, OTHER).

    `unique_params` is the model's own parameter count: a tied table stored twice (q35c's
    float Gather table and quantized LM head) counts its bits twice but its parameters once
    in `whole_bpw`."""

    bits: dict[str, int] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    unique_params: int | None = None

    def add(self, kind: str, bits: int, params: int) -> None:
        self.bits[kind] = self.bits.get(kind, 0) + bits
        self.params[kind] = self.params.get(kind, 0) + params

    def bpw(self, kind: str) -> float:
        return self.bits[kind] / self.params[kind]

    @property
    def total_bits(self) -> int:
        return sum(self.bits.values())

    @property
    def whole_bpw(self) -> float:
        params = self.unique_params or sum(self.params.values())
        return self.total_bits / params


def median(values: list[float]) -> float:
    return statistics.median(values)


def per_second(count: int, seconds: list[float]) -> float:
    """Tokens per second of the median run."""
    return count / median(seconds)
