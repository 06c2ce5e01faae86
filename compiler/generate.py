"""Text generation and perplexity with a compiled decoder-only language model.

    q35c generate MODEL --tokenizer tokenizer.json --prompt TEXT [--target interp|c|cuda] ...
    q35c perplexity MODEL --tokenizer tokenizer.json --text FILE [--context N --stride S]

MODEL is a decode-step graph with a KV cache in the naming of optimum and onnxruntime-genai
(inputs `input_ids`, `attention_mask`, `position_ids`, `past_key_values.N.key/value`;
outputs `logits`, `present.N.key/value`, where present = past followed by the new tokens),
such as examples/smollm2/export.py's `decode.*.onnx`; for `--target c` also a directory
written by `q35c MODEL --target c -o OUT`. `--target cuda` runs it on the GPU
(targets/cuda/session.py).

The design (docs/generate.md): static shapes with masking. The graph is compiled once with
a fixed past length L (the maximum context) and a fixed number S of new tokens per call
(`--prefill-chunk`; 1 for decoding). The cache is L slots per layer and kind; slot i holds
the key/value of the token at position i. A call with n <= S new tokens at position pos
passes the whole cache as `past` and an attention mask that is 1 for slots [0, pos) and for
the n real new tokens, 0 for the empty slots and the padding; the new keys and values come
back as the last S slots of `present` and are copied into slots [pos, pos + n). Nothing is
recompiled per token and the model stays loaded (the interpreter's module, or the C
target's shared library through `CSession`) for the whole run.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from q35c.compiler.diagnostics import Q35cError, first_line
from q35c.compiler.files import InputFileError, confined_file, read_input_text

INPUT_IDS, MASK, POSITIONS, LOGITS = "input_ids", "attention_mask", "position_ids", "logits"
PAST = re.compile(r"past_key_values\.(\d+)\.(key|value)$")
DEFAULT_CONTEXT = 256


# -- the graph's signature -----------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """What the generation loop needs to know about a compiled decode graph."""

    layers: int
    past: int  # L: cache slots (the maximum context)
    step: int  # S: new tokens per call
    vocab: int
    kv_shape: tuple[int, ...]  # [1, heads, L, head_dim]
    positions: bool = True
    """Whether the graph takes `position_ids` (optimum's layout: present = past followed by
    the new tokens). Without them (onnxruntime-genai's GroupQueryAttention graphs) the
    positions follow from the mask's count and the new tokens land in present at the
    position they take (docs/generate.md)."""

    @classmethod
    def of(cls, inputs: dict[str, tuple[int, ...]], outputs: dict[str, tuple[int, ...]],
           where: str) -> Signature:
        """From the input and output shapes by name; one line says what does not fit."""
        pasts = {m.group(1, 2): shape for name, shape in inputs.items()
                 if (m := PAST.match(name))}
        missing = [n for n in (INPUT_IDS, MASK) if n not in inputs]
        if LOGITS not in outputs:
            missing.append(f"output {LOGITS}")
        if missing or not pasts:
            raise Q35cError(f"{where}: not a decode graph with a KV cache (missing "
                            f"{', '.join(missing) or 'past_key_values.N.key/value inputs'})")
        layers = len({layer for layer, _ in pasts})
        kv_shape = pasts["0", "key"]
        for layer in range(layers):
            for kind in ("key", "value"):
                if pasts.get((str(layer), kind)) != kv_shape \
                        or f"present.{layer}.{kind}" not in outputs:
                    raise Q35cError(f"{where}: layer {layer}'s past/present {kind} is missing "
                                    "or differs in shape from layer 0's")
        ids = inputs[INPUT_IDS]
        if len(ids) != 2 or ids[0] != 1 or len(kv_shape) != 4:
            raise Q35cError(f"{where}: batch 1 and [1, heads, past, head_dim] caches "
                            f"expected, got input_ids {list(ids)}, past {list(kv_shape)}")
        return cls(layers, kv_shape[2], ids[1], outputs[LOGITS][-1], tuple(kv_shape),
                   POSITIONS in inputs)


def onnx_cache_dims(path: Path) -> tuple[int, list[str]]:
    """The number of layers and the names of the past inputs of an ONNX decode graph, read
    without its weights."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise Q35cError(f"{path}: cannot read the ONNX model: {err}") from None
    names = [i.name for i in model.graph.input if PAST.match(i.name)]
    if not names:
        raise Q35cError(f"{path}: not a decode graph with a KV cache (no "
                        "past_key_values.N.key/value inputs)")
    return len(names) // 2, names


def static_shapes(path: Path, context: int, step: int) -> dict[str, tuple[int, ...]]:
    """`--shape` bindings that compile `path` for `step` new tokens and `context` slots."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    shapes = {INPUT_IDS: (1, step), MASK: (1, context + step)}
    if any(value.name == POSITIONS for value in model.graph.input):
        shapes[POSITIONS] = (1, step)
    heads, head_dim = _genai_cache_dims(path)
    for value in model.graph.input:
        if not PAST.match(value.name):
            continue
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if len(dims) == 4:
            dims[1], dims[3] = dims[1] or heads, dims[3] or head_dim
        if len(dims) != 4 or not dims[1] or not dims[3]:
            raise Q35cError(f"{path}: input {value.name} must be [batch, heads, past, "
                            "head_dim] with static heads and head_dim (or a "
                            "genai_config.json beside the model that gives them)")
        shapes[value.name] = (1, dims[1], context, dims[3])
    return shapes


def _genai_cache_dims(path: Path) -> tuple[int, int]:
    """(key/value heads, head size) from onnxruntime-genai's genai_config.json beside the
    model, whose graphs leave the cache's head size symbolic; (0, 0) without one."""
    config = read_json_beside(path.parent, "genai_config.json", limit=1 << 20)
    if config is None:
        return 0, 0
    try:
        decoder = config["model"]["decoder"]
        return int(decoder.get("num_key_value_heads", 0)), int(decoder.get("head_size", 0))
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as err:
        raise Q35cError(f"{path.parent / 'genai_config.json'}: cannot read the decoder's head "
                        f"size: {first_line(err) or type(err).__name__}") from None


def read_json_beside(folder: Path, name: str, limit: int) -> dict | None:
    """The JSON object in the file `name` of `folder` (a regular file inside the folder, at
    most `limit` bytes), or None when there is no such file; Q35cError naming the file
    for anything else."""
    path = folder / name
    if not path.exists() and not path.is_symlink():
        return None
    try:
        doc = json.loads(read_input_text(confined_file(folder, name, limit=limit)))
    except InputFileError as err:
        raise Q35cError(f"{path}: {err}") from None
    except (ValueError, RecursionError) as err:
        raise Q35cError(f"{path}: not valid JSON: {first_line(err)}") from None
    if not isinstance(doc, dict):
        raise Q35cError(f"{path}: not a JSON object")
    return doc


# -- compiled models -----------------------------------------------------------------------


@dataclass
class CompiledStep:
    """One compiled graph: `run(inputs) -> outputs` by name, its signature, its storage."""

    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    """The outputs may be buffers that the next run overwrites (the C target's)."""
    signature: Signature
    storage: Storage | None = None
    close: Callable[[], None] = lambda: None
    cache_in_outputs: Callable[[bool], int] | None = None
    """The C target's `CSession.set_inputs_in_outputs`: with True, the next run skips
    copying the past KV cache into `present`, whose buffers (those `run` returns) the
    caller vouches already hold it (`Decoder` keeps them so)."""


@dataclass
class Storage:
    """Stored weight bits over parameters: all of them, and the matmul weights alone.

    Counted over the weights the compiled module reads (`quant3p5.weight`, every entry
    once) and its float constants of at least two elements (small tables such as
    norm scales that stay inline). "Matmul weights" are the entries a matmul reads. A
    tied table is stored once by default (the embedding gather reads the LM head's packed
    weights) and counts once, as a matmul weight; kept float for the gather
    (`quantize-weights{gathers=false}`, `--keep-float`) it is stored, and counted, twice."""

    bits: int = 0
    params: int = 0
    matmul_bits: int = 0
    matmul_params: int = 0

    def line(self) -> str:
        def bpw(bits: int, params: int) -> str:
            return f"{bits / params:.3f}" if params else "n/a"

        return (f"storage: {self.bits / 8 / 2**20:.1f} MiB for {self.params:,} parameters = "
                f"{bpw(self.bits, self.params)} bits/weight overall; matmul weights "
                f"{self.matmul_bits / 8 / 2**20:.1f} MiB for {self.matmul_params:,} = "
                f"{bpw(self.matmul_bits, self.matmul_params)} bits/weight")


MATMUL_OPS = ("quant3p5.matmul", "quant3p5.matmul_int8", "quant3p5.fused_matmul",
              "linalg.matmul", "q35nn.batch_matmul")


def weight_storage(module, store) -> Storage:
    """`Storage` of a compiled module (see there for what is counted)."""
    from xdsl.dialects import arith
    from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, TensorType

    from q35c.compiler.quant import LegacyPairTensor, Q3P5Tensor
    from q35c.dialects import quant3p5

    storage, seen = Storage(), set()

    def add(bits: int, params: int, matmul: bool) -> None:
        storage.bits += bits
        storage.params += params
        if matmul:
            storage.matmul_bits += bits
            storage.matmul_params += params

    def feeds_matmul(op) -> bool:
        return any(use.operation.name in MATMUL_OPS for use in op.results[0].uses)

    # a weight read by a matmul anywhere (one op for a tied LM head, another for its gather)
    matmul_weights = {op.weight_name.data for op in module.walk()
                      if isinstance(op, quant3p5.WeightOp) and feeds_matmul(op)}
    for op in module.walk():
        if isinstance(op, quant3p5.WeightOp):
            name = op.weight_name.data
            if name in seen:
                continue
            seen.add(name)
            value = store[name]
            if isinstance(value, Q3P5Tensor):  # an untied embedding table is not a matmul's
                add(value.nbytes() * 8, value.shape[0] * value.shape[1], name in matmul_weights)
            elif isinstance(value, LegacyPairTensor):
                bits = 8 * (value.packed.nbytes + value.scale.nbytes + value.offset.nbytes)
                add(bits, value.shape[0] * value.shape[1], True)
            elif np.issubdtype(np.asarray(value).dtype, np.floating):
                value = np.asarray(value)
                add(value.nbytes * 8, value.size, name in matmul_weights)
        elif isinstance(op, arith.ConstantOp) and isinstance(op.value, DenseIntOrFPElementsAttr):
            t = op.result.type
            if isinstance(t, TensorType) and t.get_element_type().name.startswith(("f", "bf")):
                count = math.prod(t.get_shape())
                width = t.get_element_type().bitwidth
                if count >= 2:
                    add(count * width, count, feeds_matmul(op))
    return storage


@dataclass
class CompileRequest:
    """How to compile MODEL: target ('interp', 'c' or 'cuda'), pipeline and --act, cache
    length."""

    target: str = "interp"
    passes: str | None = None
    act: str = "float"
    keep_float: str | None = None
    context: int = DEFAULT_CONTEXT
    threads: int | None = None
    calibration: str | None = None
    """A calibration statistics .npz for quantize-weights (compiler/calibration.py)."""
    bpw: float | None = None
    """--bpw: the bit budget per matmul weight."""
    group_for: str | None = None
    """--group-for: per-weight group sizes (`REGEX=G;...`)."""


def compile_step(path: Path, request: CompileRequest, step: int) -> CompiledStep:
    """Compile MODEL for `step` new tokens per call (or load a c target output folder)."""
    if path.is_dir():
        if request.target != "c":
            raise Q35cError(f"{path}: a compiled folder runs with --target c (it is a c "
                            f"target output), not --target {request.target}")
        return _c_directory(path, request)
    from q35c.compiler.cli import _options
    from q35c.compiler.driver import compile_to_module, get_target
    from q35c.compiler.entry import argument_names, entry_function, result_names
    from q35c.compiler.weights import store_of

    if not path.exists():
        raise Q35cError(f"{path}: no such file")
    if request.target == "cuda":
        from q35c.targets.cuda.build import require_gpu

        require_gpu()  # before the compile: it takes a while
    onnx_cache_dims(path)
    shapes = static_shapes(path, request.context, step)
    options = _options(request.target, request.passes, None, False, None, (),
                       request.keep_float, act=request.act)
    options.shapes = shapes
    options.calibration = request.calibration
    options.bpw = request.bpw
    options.group_for = request.group_for
    target = get_target(request.target)
    _, module = compile_to_module(path, options, target)
    store = store_of(module)
    storage = weight_storage(module, store)
    fn = entry_function(module)
    in_shapes = {n: tuple(a.type.get_shape()) for n, a in zip(argument_names(fn), fn.args)}
    out_shapes = {n: tuple(t.get_shape())
                  for n, t in zip(result_names(fn), fn.function_type.outputs.data)}
    signature = Signature.of(in_shapes, out_shapes, str(path))
    if request.target == "interp":
        from q35c.semantics import run_module

        return CompiledStep(lambda inputs: run_module(module, store, inputs), signature,
                            storage)
    if request.target == "c":
        from q35c.targets.c.emit import emit
        from q35c.targets.c.session import CSession

        session = CSession.from_emitted(emit(module, store, None, "model"), request.threads)
        return CompiledStep(_borrowing(session), signature, storage, session.close,
                            session.set_inputs_in_outputs)
    if request.target == "cuda":
        from q35c.targets.cuda.emit import emit as emit_cuda
        from q35c.targets.cuda.session import CudaSession

        session = CudaSession.from_emitted(emit_cuda(module, store, None, "model"))
        return CompiledStep(session.run, signature, storage, session.close)
    raise Q35cError(f"generate runs on --target interp, c or cuda, not '{request.target}'")


def _c_directory(path: Path, request: CompileRequest) -> CompiledStep:
    from q35c.targets.c.session import CSession

    session = CSession.from_directory(path, request.threads)
    signature = Signature.of({s.name: s.shape for s in session.inputs},
                             {s.name: s.shape for s in session.outputs}, str(path))
    return CompiledStep(_borrowing(session), signature, None, session.close,
                        session.set_inputs_in_outputs)


def _borrowing(session) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """A C session's run without copies of its outputs: `Decoder._call` copies the slots
    and logits it keeps before the next run overwrites them."""
    return lambda inputs: session.run(inputs, copy=False)


# -- the KV cache and the decoding loop ----------------------------------------------------


@dataclass
class Decoder:
    """The cache of L slots per layer and kind, and the compiled graphs that extend it.

    `steps` maps S (new tokens per call) to a compiled graph; every graph has the same L.
    `feed(tokens)` appends tokens and returns their logits [n, vocab] (float32)."""

    steps: dict[int, CompiledStep]
    pos: int = 0
    cache: dict[str, np.ndarray] = field(default_factory=dict)
    calls: int = 0
    holder: CompiledStep | None = field(default=None, repr=False)
    """The step whose `present` output buffers hold the whole cache (slots [0, L) equal
    `cache`, kept so after each of its runs): its next run skips copying the past into
    them (`CompiledStep.cache_in_outputs`). A decode step of SmolLM2-135M copied 7.4 MB
    there, as much as an eighth of the step (docs/benchmarks.md, issue 15)."""

    def __post_init__(self) -> None:
        first = next(iter(self.steps.values())).signature
        for s in self.steps.values():
            if s.signature.past != first.past or s.signature.kv_shape != first.kv_shape:
                raise Q35cError("the prefill and decode graphs differ in their cache shape")
        self.sig = first
        for layer in range(first.layers):
            for kind in ("key", "value"):
                self.cache[f"{layer}.{kind}"] = np.zeros(first.kv_shape, np.float32)

    @property
    def capacity(self) -> int:
        return self.sig.past

    def reset(self) -> None:
        """Forget every token (the mask hides the old slots; no need to clear them)."""
        self.pos = 0

    def feed(self, tokens: list[int]) -> np.ndarray:
        if self.pos + len(tokens) > self.capacity:
            raise Q35cError(f"the context is full: {self.pos} + {len(tokens)} tokens exceed "
                            f"the {self.capacity} cache slots (raise --context)")
        logits = []
        while len(logits) < len(tokens):
            rest = tokens[len(logits):]
            size = self._size(len(rest))
            logits.extend(self._call(self.steps[size], rest[:size]))
        return np.stack(logits)

    def _size(self, n: int) -> int:
        """The graph for the next call with n tokens to go: one token alone goes through
        the 1-token graph; more through the smallest graph that takes them all (padded),
        else the largest one (a padded call costs less than several small ones)."""
        if n == 1 and 1 in self.steps:
            return 1
        fits = [s for s in self.steps if s >= n]
        return min(fits) if fits else max(self.steps)

    def _call(self, step: CompiledStep, tokens: list[int]) -> list[np.ndarray]:
        S, L, n = step.signature.step, self.capacity, len(tokens)
        ids = np.zeros((1, S), np.int64)
        ids[0, :n] = tokens
        mask = np.zeros((1, L + S), np.int64)
        if step.signature.positions:  # present = past, then the S new tokens
            mask[0, :self.pos] = 1
            mask[0, L:L + n] = 1
            first_new = L
        else:  # GroupQueryAttention: the mask's count places the S tokens at pos (the
            # padding after the n real ones is attended only by itself and never kept)
            mask[0, :self.pos + S] = 1
            first_new = self.pos
        inputs = {INPUT_IDS: ids, MASK: mask}
        if step.signature.positions:
            inputs[POSITIONS] = (self.pos + np.arange(S, dtype=np.int64))[None, :]
        for key, value in self.cache.items():
            inputs[f"past_key_values.{key}"] = value
        # present = past, then the new tokens: a step can keep the cache in its outputs
        keep = step.cache_in_outputs is not None and step.signature.positions
        if keep:
            step.cache_in_outputs(self.holder is step)
        self.holder = None
        outputs = step.run(inputs)
        self.calls += 1
        for key, value in self.cache.items():
            present = outputs[f"present.{key}"]
            value[:, :, self.pos:self.pos + n] = present[:, :, first_new:first_new + n]
            if keep:  # the step's own buffer: its slots [0, L) equal the cache again
                present[:, :, self.pos:self.pos + n] = value[:, :, self.pos:self.pos + n]
        if keep:
            self.holder = step
        self.pos += n
        return list(np.array(outputs[LOGITS][0, :n], np.float32))


# -- sampling ------------------------------------------------------------------------------


@dataclass
class Sampler:
    """Greedy (temperature 0, the default: the first index of the largest logit), or
    temperature and top-p (nucleus) sampling from a seeded numpy Generator."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, logits: np.ndarray) -> int:
        if self.temperature <= 0:
            return int(np.argmax(logits))
        z = np.asarray(logits, np.float64) / self.temperature
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        # the smallest set whose probability reaches top_p (all: rounding may keep the
        # total just below 1)
        keep = min(int(np.searchsorted(cumulative, self.top_p)) + 1, len(order))
        kept = probs[order[:keep]] / cumulative[keep - 1]
        choice = int(np.searchsorted(np.cumsum(kept), self.rng.random(), side="right"))
        return int(order[min(choice, keep - 1)])


# -- the tokenizer -------------------------------------------------------------------------

#: a chat template comes with the model, so it is untrusted: jinja's sandbox keeps it away
#: from Python's internals, and these bound what it may cost (a template is a program:
#: nested loops or a huge `center` width would otherwise run or allocate without end)
CHAT_TEMPLATE_SECONDS = 10.0
CHAT_TEMPLATE_MEMORY = 512 << 20
CHAT_TEMPLATE_CHARS = 1 << 20


class BoundExceeded(Exception):
    """A bounded computation ran out of time, memory or output room."""


def _vm_bytes() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_bounded(work: Callable[[], str], seconds: float, memory: int, limit: int) -> str:
    """`work()` in a forked child with `seconds` of wall time, `memory` bytes of address
    space beyond what this process has mapped, and at most `limit` characters of result;
    its exception comes back as BoundExceeded with the exception's first line."""
    import resource
    import select
    import signal

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: limits, work, one tagged message, exit without cleanup
        status = 0
        try:
            os.close(read_end)
            cap = _vm_bytes() + memory
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
            try:
                message = b"o" + work()[:limit + 1].encode("utf-8", "surrogatepass")
            except MemoryError:
                message = b"e" + b"it needs more than %d MiB" % (memory >> 20)
            except BaseException as err:  # noqa: BLE001 - reported to the parent
                message = b"e" + f"{type(err).__name__}: {first_line(err)}".encode()
            with os.fdopen(write_end, "wb") as out:
                out.write(message)
        except BaseException:  # noqa: BLE001
            status = 1
        os._exit(status)
    os.close(write_end)
    chunks, size, deadline = [], 0, time.monotonic() + seconds
    try:
        with os.fdopen(read_end, "rb") as source:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([source], [], [], left)[0]:
                    raise BoundExceeded(f"it runs longer than {seconds:g} s")
                chunk = source.read1(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > 4 * limit + 8:
                    raise BoundExceeded(f"its output is longer than {limit} characters")
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    message = b"".join(chunks)
    if not message:
        raise BoundExceeded("it ended without a result")
    text = message[1:].decode("utf-8", "surrogatepass")
    if message[:1] != b"o":
        raise BoundExceeded(text)
    if len(text) > limit:
        raise BoundExceeded(f"its output is longer than {limit} characters")
    return text



class Tokenizer:
    """A `tokenizers` tokenizer.json, plus tokenizer_config.json beside it when present
    (end-of-sequence token, chat template; chat_template.jinja is read too)."""

    def __init__(self, path: Path):
        try:
            from tokenizers import Tokenizer as HFTokenizer
        except ImportError:
            raise Q35cError("generate and perplexity need the tokenizers package: pip "
                            "install 'q35c[llm]'") from None
        try:
            self.tok = HFTokenizer.from_file(str(path))
        except Exception as err:
            raise Q35cError(f"{path}: cannot load the tokenizer: {err}") from None
        self.path = path
        self.config = read_json_beside(path.parent, "tokenizer_config.json",
                                       limit=64 << 20) or {}
        self.eos = self._special("eos_token")
        self.bos = self._special("bos_token")

    def _special(self, key: str) -> str | None:
        value = self.config.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        return value if isinstance(value, str) else None

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def stop_ids(self) -> set[int]:
        ids = {self.tok.token_to_id(self.eos)} if self.eos else set()
        return {i for i in ids if i is not None}

    def chat(self, prompt: str) -> str:
        """The chat template applied to one user message, with the generation prompt."""
        template = self.config.get("chat_template")
        jinja_file = self.path.with_name("chat_template.jinja")
        if not template and (jinja_file.exists() or jinja_file.is_symlink()):
            try:
                template = read_input_text(confined_file(jinja_file.parent, jinja_file.name,
                                                         limit=1 << 20))
            except InputFileError as err:
                raise Q35cError(f"{jinja_file}: {err}") from None
        if not isinstance(template, str) or not template:
            raise Q35cError(f"{self.path}: --chat needs a chat template (tokenizer_config."
                            "json's chat_template or chat_template.jinja beside it)")
        try:
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError:
            raise Q35cError("--chat needs the jinja2 package: pip install 'q35c[llm]'") from None
        from jinja2 import TemplateError

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def render() -> str:
            return env.from_string(template).render(
                messages=[{"role": "user", "content": prompt}], add_generation_prompt=True,
                bos_token=self.bos or "", eos_token=self.eos or "")

        try:
            return run_bounded(render, seconds=CHAT_TEMPLATE_SECONDS,
                               memory=CHAT_TEMPLATE_MEMORY, limit=CHAT_TEMPLATE_CHARS)
        except (TemplateError, BoundExceeded) as err:
            raise Q35cError(f"{self.path}: the chat template fails: {first_line(err)}"
                            ) from None


def stream_text(tokenizer: Tokenizer, ids: Iterator[int], out: IO[str]) -> list[int]:
    """Write the text of `ids` to `out` as they come (decoding the whole sequence each
    time and writing what is new; an incomplete UTF-8 character waits); the ids."""
    done: list[int] = []
    written = ""
    for token in ids:
        done.append(token)
        text = tokenizer.decode(done)
        if text.endswith("\ufffd"):
            continue
        if text.startswith(written):
            out.write(text[len(written):])
        else:  # the decoding of earlier tokens changed: write the rest only
            out.write(text[len(os.path.commonprefix([text, written])):])
        out.flush()
        written = text
    return done


# -- generate ------------------------------------------------------------------------------


@dataclass
class Timing:
    prefill_tokens: int = 0
    prefill_s: float = 0.0
    decode_tokens: int = 0
    decode_s: float = 0.0

    def line(self) -> str:
        def rate(n: int, s: float) -> str:
            return f"{n / s:.2f} tokens/s" if s > 0 and n else "n/a"

        return (f"prefill: {self.prefill_tokens} tokens in {self.prefill_s:.3f} s "
                f"({rate(self.prefill_tokens, self.prefill_s)}); decode: "
                f"{self.decode_tokens} tokens in {self.decode_s:.3f} s "
                f"({rate(self.decode_tokens, self.decode_s)})")


def generate_ids(decoder: Decoder, prompt: list[int], max_new: int, sampler: Sampler,
                 stop: set[int], timing: Timing) -> Iterator[int]:
    """Prefill `prompt`, then yield up to `max_new` tokens (stopping after a stop token or
    when the cache is full); `timing` is filled in as it goes."""
    if not prompt:
        raise Q35cError("the prompt is empty (no tokens)")
    if max_new <= 0:
        return
    decoder.reset()
    start = time.perf_counter()
    logits = decoder.feed(prompt)[-1]
    timing.prefill_tokens, timing.prefill_s = len(prompt), time.perf_counter() - start
    for produced in range(max_new):
        token = sampler(logits)
        yield token
        if token in stop or produced + 1 == max_new or decoder.pos >= decoder.capacity:
            return
        start = time.perf_counter()
        logits = decoder.feed([token])[0]
        timing.decode_s += time.perf_counter() - start
        timing.decode_tokens += 1


# -- perplexity ----------------------------------------------------------------------------


@dataclass
class Perplexity:
    nll: float  # summed negative log-likelihood (nats)
    tokens: int  # scored tokens

    @property
    def ppl(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else float("nan")


def windows(n: int, context: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """(begin, end, first scored) of each window over n tokens: windows [begin, end) of at
    most `context` tokens, begins 0, stride, 2*stride, ...; each scores the tokens from
    the previous window's end (the first window from token 1); the last ends at n. With
    stride < context every token but the first is scored exactly once, with at least one
    token of the window before it."""
    previous_end = 1
    for begin in range(0, max(n - 1, 1), stride):
        end = min(begin + context, n)
        yield begin, end, max(previous_end, begin + 1)
        previous_end = end
        if end == n:
            return


def check_windows(context: int, stride: int) -> None:
    if not 0 < stride < context:
        raise Q35cError(f"--stride must be in 1..{context - 1} (below --context, so that "
                        f"windows overlap and every token is scored), got {stride}")


def perplexity(decoder: Decoder, ids: list[int], context: int, stride: int,
               progress: Callable[[int], None] = lambda n: None) -> Perplexity:
    """Sliding-window perplexity (docs/generate.md has the formula)."""
    if len(ids) < 2:
        raise Q35cError("perplexity needs at least 2 tokens of text")
    check_windows(context, stride)
    if context > decoder.capacity:
        raise Q35cError(f"--context {context} exceeds the {decoder.capacity} cache slots "
                        "the model was compiled with")
    total = Perplexity(0.0, 0)
    for begin, end, first in windows(len(ids), context, stride):
        decoder.reset()
        logits = decoder.feed(ids[begin:end - 1]).astype(np.float64)
        for t in range(first, end):
            row = logits[t - 1 - begin]
            top = row.max()
            log_z = top + math.log(np.exp(row - top).sum())
            total.nll += log_z - row[ids[t]]
            total.tokens += 1
        progress(end - first)
    return total

