"""Calibration: run the float model on sample inputs and collect per-matmul input statistics.

For every float matmul weight `quantize-weights` would quantize, the Gram matrix
``H = X^T X`` of the matmul's inputs (X = the left operand, flattened to [tokens, K]) is
accumulated over all calibration runs, in float32, one matrix per distinct input value
(q/k/v projections share theirs, as do gate/up).  The quantizer then minimizes each layer's
output error ``||X (W - deq)||`` (compiler/quant/calibrated.py, docs/quantization.md).

Statistics files (`q35c calibrate ... -o stats.npz`, or written on the fly by
`--calibration TEXT`) are numpy .npz archives: ``gram.<i>`` (float32 [K, K]) and
``names`` (a JSON object: weight name -> [i, rows]), read lazily one matrix at a time.

The float model runs on the reference interpreter (`q35c.semantics`); language models take
token windows of a text (`--tokenizer`): a graph with `input_ids` (and optionally
`attention_mask`, `position_ids`, a KV cache `past_key_values.N.key/value` of one masked
slot) is compiled once for windows of `window` tokens.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import SSAValue

from q35c.compiler.diagnostics import Q35cError, first_line
from q35c.compiler.quantizable import DEFAULT_MIN_ELEMENTS, quantizable_weight
from q35c.compiler.weights import WeightStore
from q35c.dialects import q35nn

DEFAULT_WINDOW = 256
"""Tokens per calibration run (windows of the text, the last partial one dropped)."""
MIN_TOKENS = 16
"""A calibration text must give at least this many tokens."""


@dataclass
class Statistics:
    """Gram matrices of matmul inputs: `grams[i]` (float32 [K, K]) with its row count, and
    the weight names that read each one."""

    grams: list[np.ndarray] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    names: dict[str, int] = field(default_factory=dict)

    def add(self, index: int, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=np.float32)
        self.grams[index] += x.T @ x
        self.rows[index] += x.shape[0]

    def save(self, path: Path) -> None:
        """Write the .npz byte-reproducibly: members in a fixed order with a fixed
        timestamp (np.savez would stamp the current time), readable by np.load."""
        index = {name: [i, self.rows[i]] for name, i in sorted(self.names.items())}
        members = [("names", np.array(json.dumps(index, sort_keys=True)))]
        members += [(f"gram.{i}", g) for i, g in enumerate(self.grams)]
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            for name, array in members:
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with archive.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


class StatisticsFile:
    """A statistics .npz opened for reading: `gram(name)` loads one matrix (H / rows, the
    mean of x x^T per token, float64), or None for a weight it has no statistics for."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._npz = np.load(self.path, allow_pickle=False)
            self._index = json.loads(str(self._npz["names"]))
            if not isinstance(self._index, dict):
                raise ValueError("names is not a JSON object")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise Q35cError(f"{self.path}: not a q35c calibration statistics file "
                            f"({type(err).__name__}: {first_line(err)})") from None

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def gram(self, name: str, k: int) -> np.ndarray | None:
        if name not in self._index:
            return None
        index, rows = self._index[name]
        try:
            g = self._npz[f"gram.{index}"]
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
            raise Q35cError(f"{self.path}: statistics of {name} unreadable "
                            f"({type(err).__name__})") from None
        if g.shape != (k, k) or not np.isfinite(g).all() or rows < 1:
            raise Q35cError(f"{self.path}: statistics of {name} have shape {g.shape} and "
                            f"{rows} rows; the weight needs a finite [{k}, {k}] matrix")
        return g.astype(np.float64) / rows


def watched_matmuls(module: ModuleOp, min_elements: int = DEFAULT_MIN_ELEMENTS
                    ) -> tuple[dict[object, int], Statistics]:
    """The matmul ops whose right operand is a quantizable float weight, each mapped to the
    index of its input's Gram matrix (one per distinct left operand), and empty statistics."""
    stats = Statistics()
    by_input: dict[SSAValue, int] = {}
    watched: dict[object, int] = {}
    for op in module.walk():
        if not isinstance(op, (linalg.MatmulOp, q35nn.BatchMatmulOp)):
            continue
        weight = quantizable_weight(op.operands[1], min_elements, None)
        if weight is None:
            continue
        lhs = op.operands[0]
        k = weight.result.type.get_shape()[0]
        if lhs not in by_input:
            by_input[lhs] = len(stats.grams)
            stats.grams.append(np.zeros((k, k), np.float32))
            stats.rows.append(0)
        watched[op] = by_input[lhs]
        stats.names.setdefault(weight.weight_name.data, by_input[lhs])
    return watched, stats


def _fast_linalg_matmul(interp, op, args):
    a, b, acc = args
    return ((acc.astype(np.float32) + np.matmul(a, b, dtype=np.float32)).astype(np.float32),)


def _fast_batch_matmul(interp, op, args):
    return (np.matmul(args[0], args[1], dtype=np.float32),)


def _fast_softmax(interp, op, args):
    x = np.asarray(args[0])
    e = np.exp(x - x.max(axis=op.axis.value.data, keepdims=True))
    return ((e / e.sum(axis=op.axis.value.data, keepdims=True)).astype(x.dtype),)


def _fast_unary(fn: Callable[[np.ndarray], np.ndarray]) -> Callable:
    """An elementwise op as one vectorized numpy call in the operand's own precision."""
    def run(interp, op, args):
        x = np.asarray(args[0])
        return (fn(x).astype(x.dtype),)
    return run


def _fast_silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


def _fast_swiglu(interp, op, args):
    gate, up = (np.asarray(a, np.float32) for a in args)
    return ((_fast_silu(gate) * up).astype(np.float32),)


def _fast_implementations() -> dict[type, Callable]:
    """Vectorized float32 numpy versions of the ops that dominate a float LLM's run on the
    reference semantics (BLAS instead of sequential float64 sums, numpy's exp instead of
    libm one element at a time): statistics need neither bit-exact products nor
    correctly rounded transcendentals."""
    from xdsl.dialects import math as xmath

    return {linalg.MatmulOp: _fast_linalg_matmul, q35nn.BatchMatmulOp: _fast_batch_matmul,
            q35nn.SoftmaxOp: _fast_softmax, q35nn.SiluOp: _fast_unary(_fast_silu),
            q35nn.SwigluOp: _fast_swiglu, xmath.ExpOp: _fast_unary(np.exp),
            xmath.TanhOp: _fast_unary(np.tanh)}


def _feeds_only_outputs(op) -> bool:
    """Whether every use of the op's result is the function's return (a graph output such
    as an LLM's logits): calibration needs the op's input, never that output."""
    from xdsl.dialects import func

    uses = list(op.results[0].uses)
    return bool(uses) and all(isinstance(u.operation, func.ReturnOp) for u in uses)


@contextmanager
def observing(watched: dict[object, int], stats: Statistics) -> Iterator[None]:
    """While active, the interpreter adds the left operand of every watched matmul to the
    statistics (once per distinct operand value and run: q/k/v read one input), and runs
    the float matmuls, softmax and activations as vectorized float32 numpy
    (`_fast_implementations`) instead of the reference semantics' sequential float64
    sums and per-element libm calls, which would take hours on a 135M-parameter model.
    A watched matmul whose result is only a graph output (the LM head's logits) is not
    computed: it returns zeros of its shape. The implementations are restored on exit."""
    from q35c.semantics import IMPLEMENTATIONS

    fast = _fast_implementations()
    originals = {t: IMPLEMENTATIONS[t] for t in fast if t in IMPLEMENTATIONS}
    unused = {op for op in watched if _feeds_only_outputs(op)}
    last: dict[int, object] = {}

    def wrap(run: Callable) -> Callable:
        def observed(interp, op, args):
            index = watched.get(op)
            if index is None:
                return run(interp, op, args)
            if last.get(index) is not args[0]:  # the same operand object: already added
                stats.add(index, np.asarray(args[0]))
                last[index] = args[0]
            if op in unused:
                shape = op.results[0].type.get_shape()
                return (np.zeros(shape, np.float32),)
            return run(interp, op, args)
        return observed

    try:
        for t, run in fast.items():
            IMPLEMENTATIONS[t] = wrap(run) if t in (linalg.MatmulOp, q35nn.BatchMatmulOp) \
                else run
        yield
    finally:
        for t in fast:
            if t in originals:
                IMPLEMENTATIONS[t] = originals[t]
            else:
                IMPLEMENTATIONS.pop(t, None)


def read_text_tokens(text_file: Path, tokenizer: Path | None) -> list[int]:
    """Token ids of a calibration text; one-line errors for what cannot be used."""
    from q35c.compiler.files import open_input
    from q35c.compiler.generate import Tokenizer

    if tokenizer is None:
        raise Q35cError(f"--calibration {text_file}: a text needs --tokenizer (or pass a "
                        "statistics .npz written by `q35c calibrate`)")
    with open_input(text_file, text=True) as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Q35cError(f"{text_file}: calibration text is not UTF-8 (byte {err.start})"
                        ) from None
    ids = Tokenizer(tokenizer).encode(text)
    if len(ids) < MIN_TOKENS:
        raise Q35cError(f"{text_file}: calibration text has {len(ids)} tokens, at least "
                        f"{MIN_TOKENS} are needed")
    return ids


def _token_inputs(path: Path, window: int) -> tuple[dict[str, tuple[int, ...]],
                                                     Callable[[list[int]], dict]]:
    """Static shapes for a token model and a function building one window's inputs."""
    import onnx

    from q35c.compiler.generate import INPUT_IDS, MASK, PAST, POSITIONS

    graph = onnx.load(str(path), load_external_data=False).graph
    names = {v.name for v in graph.input}
    if INPUT_IDS not in names:
        raise Q35cError(f"{path}: calibration from a text needs a model with an "
                        f"'{INPUT_IDS}' input")
    past = {}
    for v in graph.input:
        if PAST.match(v.name):
            dims = [d.dim_value for d in v.type.tensor_type.shape.dim]
            if len(dims) != 4 or not dims[1] or not dims[3]:
                raise Q35cError(f"{path}: input {v.name} must be [batch, heads, past, "
                                "head_dim] with static heads and head_dim")
            past[v.name] = (1, dims[1], 1, dims[3])  # one slot, masked out
    shapes = {INPUT_IDS: (1, window), **past}
    if POSITIONS in names:
        shapes[POSITIONS] = (1, window)
    if MASK in names:
        shapes[MASK] = (1, window + (1 if past else 0))

    def inputs(tokens: list[int]) -> dict:
        feed = {INPUT_IDS: np.array([tokens], np.int64)}
        if POSITIONS in names:
            feed[POSITIONS] = np.arange(window, dtype=np.int64)[None]
        if MASK in names:
            mask = np.ones((1, shapes[MASK][1]), np.int64)
            if past:
                mask[0, 0] = 0
            feed[MASK] = mask
        feed.update({n: np.zeros(s, np.float32) for n, s in past.items()})
        return feed

    return shapes, inputs


def collect_from_text(path: Path, texts: list[list[int]], window: int = DEFAULT_WINDOW,
                      progress: Callable[[int], None] = lambda n: None) -> Statistics:
    """Run the float model `path` (ONNX) on the interpreter over the windows of each
    text's token ids (the model is compiled once, for windows of `window` tokens or the
    shortest text's length)."""
    from q35c.compiler.cli import _options
    from q35c.compiler.driver import compile_to_module, get_target
    from q35c.compiler.weights import store_of
    from q35c.semantics import run_module

    window = min(window, *map(len, texts))
    shapes, inputs = _token_inputs(path, window)
    options = _options("interp", "", None, False, None, (), None)
    options.shapes = shapes
    _, module = compile_to_module(path, options, get_target("interp"))
    store: WeightStore = store_of(module)
    watched, stats = watched_matmuls(module)
    if not watched:
        raise Q35cError(f"{path}: no float matmul weights to calibrate")
    with observing(watched, stats):
        for ids in texts:
            for begin in range(0, len(ids) - window + 1, window):
                run_module(module, store, inputs(ids[begin:begin + window]))
                progress(window)
    return stats


def is_statistics_file(path: Path) -> bool:
    """Whether `path` is a statistics .npz (a zip archive) rather than a text."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def calibrate_text(model: Path, text_files: Path | list[Path], tokenizer: Path | None,
                   out: Path, window: int = DEFAULT_WINDOW) -> Statistics:
    """`q35c calibrate`: statistics of `model` on the texts (each cut into its own
    windows), written to `out`."""
    from q35c.compiler.progress import progress_bar

    if window < 2:
        raise Q35cError(f"--window must be at least 2, got {window}")
    files = [text_files] if isinstance(text_files, Path) else list(text_files)
    texts = [read_text_tokens(f, tokenizer) for f in files]
    size = min(window, *map(len, texts))
    with progress_bar(sum(len(t) - len(t) % size for t in texts), "calibrate") as bar:
        stats = collect_from_text(model, texts, window, bar.update)
    stats.save(out)
    return stats


@contextmanager
def statistics_for(model: Path, calibration: Path | None, tokenizer: Path | None
                   ) -> Iterator[str | None]:
    """The statistics file `--calibration` names for `model`: a statistics .npz as is
    (checked to open), or, for a text, statistics collected now into a temporary file
    that lives as long as the block. None without --calibration."""
    import tempfile

    if calibration is None:
        yield None
        return
    if is_statistics_file(calibration):
        StatisticsFile(calibration)
        yield str(calibration)
        return
    with tempfile.TemporaryDirectory(prefix="q35c-calibration-") as tmp:
        out = Path(tmp) / "statistics.npz"
        calibrate_text(model, calibration, tokenizer, out)
        yield str(out)
