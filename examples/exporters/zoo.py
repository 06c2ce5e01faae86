"""Real exporter graphs of many architectures: tiny random-init Hugging Face models exported by
both torch.onnx exporters, then run through q35c and compared with onnxruntime.

    python examples/exporters/zoo.py export OUT [NAME ...]     # OUT/<name>.<exporter>.onnx
    python examples/exporters/zoo.py export OUT --half         # OUT/<name>.<exporter>-fp16.onnx
    python examples/exporters/zoo.py optimize OUT              # OUT/<name>.<exporter>-ortopt.onnx
    python examples/exporters/zoo.py quantize OUT              # OUT/<name>.<exporter>-<form>.onnx
    python examples/exporters/zoo.py check OUT [--target c] [--quantized] [--markdown]

`export` needs the `models` extra (torch, transformers, onnxscript); `optimize`
(onnxruntime's transformer optimizer, as users run it on such exports: fused
SkipLayerNormalization, Gelu, FastGelu, BiasGelu nodes of onnxruntime's contrib domain),
`quantize` (onnxruntime's quantization tools: dynamic int8 with uint8 or int8 weights, 4-bit
MatMulNBits) and `check` need only q35c and onnxruntime. Weights are random (seeded) and
layers tiny (width 64, 2 layers), so the graphs are exactly what the exporters emit for the
real architectures (attention masks, rotary tables, GQA, token-type buffers, patch
embeddings), at a size a test can run. An export that torch itself cannot do is listed as
such, not as a q35c failure. docs/onnx.md
("Exporter graphs of other architectures") has the measured table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

VOCAB, WIDTH, LAYERS, HEADS, FFN, POSITIONS, TOKENS = 256, 64, 2, 4, 128, 64, 8
EXPORTERS = ("dynamo", "legacy")


def _decoder(kind: str, **extra) -> dict:
    return {"kind": kind, "input": "input_ids", "config": {
        "vocab_size": VOCAB, "hidden_size": WIDTH, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "intermediate_size": FFN,
        "max_position_embeddings": POSITIONS, **extra}}


#: name -> (transformers config class, model class, config); every model takes token ids
#: [1, TOKENS] except ViT (an image [1, 3, 32, 32]).
ARCHITECTURES: dict[str, tuple[str, str, dict]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", _decoder("lm", num_key_value_heads=2)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", _decoder("lm", num_key_value_heads=2)),
    "mistral": ("MistralConfig", "MistralForCausalLM", _decoder("lm", num_key_value_heads=2)),
    "gemma": ("GemmaConfig", "GemmaForCausalLM",
              _decoder("lm", num_key_value_heads=2, head_dim=16)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM",
             _decoder("lm", num_key_value_heads=2, pad_token_id=0)),
    "gptneox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", _decoder("lm")),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", {"kind": "lm", "input": "input_ids", "config": {
        "vocab_size": VOCAB, "n_embd": WIDTH, "n_layer": LAYERS, "n_head": HEADS,
        "n_positions": POSITIONS}}),
    "opt": ("OPTConfig", "OPTForCausalLM", {"kind": "lm", "input": "input_ids", "config": {
        "vocab_size": VOCAB, "hidden_size": WIDTH, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "ffn_dim": FFN, "max_position_embeddings": POSITIONS,
        "word_embed_proj_dim": WIDTH}}),
    "bert": ("BertConfig", "BertModel", _decoder("encoder")),
    "distilbert": ("DistilBertConfig", "DistilBertModel", {
        "kind": "encoder", "input": "input_ids", "config": {
            "vocab_size": VOCAB, "dim": WIDTH, "n_layers": LAYERS, "n_heads": HEADS,
            "hidden_dim": FFN, "max_position_embeddings": POSITIONS}}),
    "vit": ("ViTConfig", "ViTModel", {"kind": "encoder", "input": "pixel_values", "config": {
        "hidden_size": WIDTH, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "intermediate_size": FFN, "image_size": 32, "patch_size": 8}}),
}


def example_input(name: str) -> np.ndarray:
    """The input every check feeds `name` (token ids, or an image for ViT)."""
    if ARCHITECTURES[name][2]["input"] == "pixel_values":
        return np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    return (np.arange(TOKENS, dtype=np.int64) * 37 % (VOCAB - 3) + 3).reshape(1, TOKENS)


def export(name: str, out: Path, half: bool = False) -> dict[str, str]:
    """Export `name` with both exporters into `out` (float16 weights and activations with
    `half`: `<name>.<exporter>-fp16.onnx`); returns exporter -> "ok" or torch's one-line
    reason it could not export."""
    import torch
    import transformers

    config_cls, model_cls, spec = ARCHITECTURES[name]

    class Logits(torch.nn.Module):
        """The model with a plain tensor output (no cache object): logits or hidden states."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            # the model's defaults, as a user's export gets them (use_cache=False sends
            # transformers' mask builder through a packed-sequence check, aten::diff,
            # which the legacy exporter cannot convert)
            result = self.model(x, return_dict=True)
            return result.logits if spec["kind"] == "lm" else result.last_hidden_state

    def build(attention: str | None):
        torch.manual_seed(0)
        config = getattr(transformers, config_cls)(**spec["config"])
        if attention:
            config._attn_implementation = attention
        model = getattr(transformers, model_cls)(config).eval()
        return Logits(model.half() if half else model).eval()

    args = (torch.from_numpy(example_input(name)),)
    status = {}
    for exporter in EXPORTERS:
        path = out / f"{name}.{exporter}{'-fp16' if half else ''}.onnx"
        # the legacy exporter cannot convert SDPA with grouped-query attention
        # (enable_gqa): its users export those models with eager attention, and so do we
        attempts = [None, "eager"] if exporter == "legacy" else [None]
        for attention in attempts:
            try:
                with torch.no_grad():
                    if exporter == "dynamo":
                        torch.onnx.export(build(attention), args, path,
                                          input_names=[spec["input"]], output_names=["output"],
                                          dynamo=True, external_data=False)
                    else:
                        torch.onnx.export(build(attention), args, path,
                                          input_names=[spec["input"]], output_names=["output"],
                                          dynamo=False, opset_version=17)
                status[exporter] = "ok" if attention is None else f"ok ({attention} attention)"
                break
            except Exception as err:  # torch's own limits
                path.unlink(missing_ok=True)
                status[exporter] = (f"{type(err).__name__}: "
                                    f"{str(err).strip().splitlines()[0][:160]}")
    return status


#: architectures onnxruntime's transformer optimizer has a model type for
OPTIMIZER_TYPES = {"bert": "bert", "distilbert": "bert", "gpt2": "gpt2", "gptneox": "gpt_neox",
                   "vit": "vit"}


def optimize(out: Path) -> dict[str, str]:
    """Run onnxruntime's transformer optimizer over OUT's exports of the architectures it
    knows, writing `<name>.<exporter>-ortopt.onnx`; {file: "ok" | the optimizer's error}."""
    from onnxruntime.transformers.optimizer import optimize_model

    status = {}
    for name, model_type in OPTIMIZER_TYPES.items():
        for exporter in EXPORTERS:
            source = out / f"{name}.{exporter}.onnx"
            if not source.exists():
                continue
            target = out / f"{name}.{exporter}-ortopt.onnx"
            try:
                optimize_model(str(source), model_type=model_type, num_heads=HEADS,
                               hidden_size=WIDTH).save_model_to_file(str(target))
                status[target.name] = "ok"
            except Exception as err:  # the optimizer's own limits
                target.unlink(missing_ok=True)
                status[target.name] = (f"{type(err).__name__}: "
                                       f"{str(err).strip().splitlines()[0][:160]}"
                                       if str(err).strip() else type(err).__name__)
    return status


#: onnxruntime's quantized forms `quantize` writes: dynamic int8 quantization
#: (DynamicQuantizeLinear, MatMulInteger, ConvInteger, DequantizeLinear at the export's
#: opset) with uint8 or int8 weights, and 4-bit MatMulNBits (block 32, float compute)
QUANTIZED_FORMS = ("dyn-u8", "dyn-s8", "nbits")


def quantize(out: Path, names: list[str] | None = None) -> dict[str, str]:
    """Quantize OUT's exports with onnxruntime's tools, writing
    `<name>.<exporter>-<form>.onnx` for each of QUANTIZED_FORMS; {file: "ok" | error}."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    status = {}
    for name in names or ARCHITECTURES:
        for exporter in EXPORTERS:
            source = out / f"{name}.{exporter}.onnx"
            if not source.exists():
                continue
            for form in QUANTIZED_FORMS:
                target = out / f"{name}.{exporter}-{form}.onnx"
                try:
                    if form == "nbits":
                        quantizer = MatMulNBitsQuantizer(onnx.load(source), block_size=32,
                                                         is_symmetric=False, accuracy_level=0)
                        quantizer.process()
                        quantizer.model.save_model_to_file(str(target), False)
                    else:
                        quantize_dynamic(source, target, weight_type=QuantType.QUInt8
                                         if form == "dyn-u8" else QuantType.QInt8)
                    status[target.name] = "ok"
                except Exception as err:  # the tools' own limits
                    target.unlink(missing_ok=True)
                    status[target.name] = f"{type(err).__name__}: {str(err)[:160]}"
    return status


def run_q35c(path: Path, feeds: dict[str, np.ndarray], target: str, quantized: bool,
             q35c: list[str]) -> dict[str, np.ndarray] | str:
    """`q35c run --target TARGET` on `feeds` (float import unless `quantized`): every
    output by name, or q35c's error line."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [*q35c, "run", str(path), "--target", target, "-o", str(Path(tmp) / "out")]
        for index, (name, value) in enumerate(feeds.items()):
            np.save(Path(tmp) / f"in{index}.npy", value)
            cmd += ["--input", f"{name}={Path(tmp) / f'in{index}.npy'}"]
        if not quantized:
            cmd += ["--passes", ""]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if run.returncode:
            lines = run.stderr.strip().splitlines() or [f"exit {run.returncode}"]
            return lines[-1]
        import onnx

        from q35c.compiler.driver import run_file_stems

        names = [info.name for info in onnx.load(path, load_external_data=False).graph.output]
        stems = run_file_stems(names, [])
        return {name: np.load(Path(tmp) / "out" / f"{stems['output', name]}.npy")
                for name in names}


def add_check_command(sub) -> argparse.ArgumentParser:
    """The `check OUT [--target T] [--quantized] [--markdown]` subcommand."""
    ch = sub.add_parser("check", help="run every OUT/*.onnx through q35c against onnxruntime")
    ch.add_argument("out", type=Path)
    ch.add_argument("--target", default="interp")
    ch.add_argument("--quantized", action="store_true",
                    help="the default pipeline (Q3P5 weights) instead of the float import")
    ch.add_argument("--markdown", action="store_true")
    return ch


def print_results(results: dict[Path, dict], target: str, markdown: bool) -> int:
    """One line (or markdown row) per checked graph; the number that did not match."""
    if markdown:
        print("| model | exporter | q35c | max abs error / max abs |\n|---|---|---|---:|")
    for path, result in results.items():
        name, exporter = path.name.split(".")[:2]
        rel = "" if result["rel"] is None else f"{result['rel']:.2e}"
        if markdown:
            print(f"| {name} | {exporter} | {result['status']} | {rel} |")
        else:
            print(f"{name}.{exporter} [{target}]: {result['status']} {rel}")
    return sum(result["status"] != "ok" for result in results.values())


def check(path: Path, target: str, quantized: bool, q35c: list[str],
          reference: str = "onnxruntime") -> dict:
    """Run `path` through `q35c run --target TARGET` (float import unless `quantized`) and
    compare with `reference`: {"status": "ok" | q35c's error line, "rel": max abs error over
    max |reference|}. The reference is onnxruntime with its graph optimizations off (1.32
    cannot load some of its own optimizer's output with them on), or "onnx": onnx's
    reference implementation, exact in integer arithmetic where onnxruntime's x86 kernels
    for int8 weights (uint8 x int8 products) are not."""
    import onnx
    import onnxruntime as ort

    name = path.name.split(".")[0]
    x = example_input(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # an invalid export (torch's fp16 LayerNorm types, say)
        return {"status": f"onnxruntime cannot load it: {str(err).splitlines()[0][-160:]}",
                "rel": None}
    feed_name = session.get_inputs()[0].name
    if session.get_inputs()[0].type == "tensor(float16)":  # a float16 ViT's image
        x = x.astype(np.float16)
    if reference == "onnx":
        from onnx.reference import ReferenceEvaluator

        from q35c.semantics.onnx_node import REFERENCE_FIXES  # operators onnx lacks

        try:
            want = ReferenceEvaluator(onnx.load(path), new_ops=REFERENCE_FIXES).run(
                None, {feed_name: x})[0]
        except NotImplementedError as err:  # contrib ops (MatMulNBits): no reference
            return {"status": f"onnx's reference cannot run it: {str(err)[:120]}",
                    "rel": None}
    else:
        want = session.run(None, {feed_name: x})[0]
    outputs = run_q35c(path, {feed_name: x}, target, quantized, q35c)
    if isinstance(outputs, str):
        return {"status": outputs, "rel": None}
    got = outputs[session.get_outputs()[0].name]
    if got.shape != want.shape:
        return {"status": f"shape {got.shape}, {reference} {want.shape}", "rel": None}
    rel = float(np.max(np.abs(got.astype(np.float64) - want)) / max(np.max(np.abs(want)), 1e-30))
    return {"status": "ok", "rel": rel}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="export the architectures with both exporters")
    ex.add_argument("out", type=Path)
    ex.add_argument("names", nargs="*", metavar="NAME", help=", ".join(ARCHITECTURES))
    ex.add_argument("--half", action="store_true",
                    help="float16 models (model.half()), written as <name>.<exporter>-fp16.onnx")
    op = sub.add_parser("optimize", help="onnxruntime's transformer optimizer over the exports")
    op.add_argument("out", type=Path)
    qu = sub.add_parser("quantize", help="onnxruntime's quantization tools over the exports")
    qu.add_argument("out", type=Path)
    qu.add_argument("names", nargs="*", metavar="NAME")
    ch = add_check_command(sub)
    ch.add_argument("--reference", choices=["onnxruntime", "onnx"], default="onnxruntime",
                    help="onnxruntime (graph optimizations off), or onnx's reference "
                         "implementation (exact integer arithmetic)")
    args = parser.parse_args(argv)
    if args.command == "export":
        unknown = sorted(set(args.names) - set(ARCHITECTURES))
        if unknown:
            parser.error(f"unknown architecture(s) {', '.join(unknown)}; known: "
                         f"{', '.join(ARCHITECTURES)}")
        args.out.mkdir(parents=True, exist_ok=True)
        manifest = {name: export(name, args.out, args.half)
                    for name in (args.names or ARCHITECTURES)}
        manifest_file = args.out / ("manifest-fp16.json" if args.half else "manifest.json")
        manifest_file.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        for name, status in manifest.items():
            for exporter, result in status.items():
                print(f"{name}.{exporter}: {result}")
        return 0
    if args.command in ("optimize", "quantize"):
        done = optimize(args.out) if args.command == "optimize" else \
            quantize(args.out, args.names)
        for name, result in done.items():
            print(f"{name}: {result}")
        return 0
    q35c = [sys.executable, "-m", "q35c.compiler.cli"]
    results = {path: check(path, args.target, args.quantized, q35c, args.reference)
               for path in sorted(args.out.glob("*.onnx"))}
    return 1 if print_results(results, args.target, args.markdown) else 0


if __name__ == "__main__":
    sys.exit(main())
