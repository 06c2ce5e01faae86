"""Which weights cost a language model its quality: perplexity and KL of mixed quantizations.

    python benchmarks/quant_sensitivity.py DECODE.onnx TOKENIZER.json TEXT \
        [--stats STATS.npz] [--cache DIR] [--windows W] --config SPEC [--config SPEC ...]

A SPEC is `;`-separated rules `REGEX=ENCODER` (the first rule whose regular expression
`re.search`es a matmul weight's label decides it: q35c's name, a space and the torch
parameter or initializer it comes from, e.g. `val_76 p_model_model_layers_0_self_attn_q_
proj_weight` for a dynamo export; weights no rule matches are quantized by `gptq` when
--stats is given, else `rtn`). ENCODER is `float`, `rtn`, `imatrix` or `gptq`, optionally
followed by `/gG` (Q3P5 group size G) and `,key=value` options of `quantize_calibrated`
(`damp=0.03`, `act_order=0`, `refine=1`). Examples: `v_proj=float` (every v projection
float, the rest the default), `.=rtn/g16`, `lm_head.weight$=gptq/g64` (the tied LM head),
`v_proj=gptq;.=float` (only the v projections quantized).

Each matmul weight of the graph (q35c's names, as `q35c calibrate` writes them) is encoded
with the library functions directly (no q35c compile of the quantized model:
`compiler/quant`), its decoded float32 matrix is given to onnxruntime in place of the float
one (`SessionOptions.add_initializer`), and the text is scored with `q35c perplexity`'s
windows and formula (the first W windows only with --windows). The embedding table follows
the tied LM head (q35c stores them once) unless a rule matches the table's label, its name
followed by `[table]` (`\\[table\\]=float` keeps it float). Prints per SPEC: perplexity,
mean KL(float || quantized) of the next-token distributions over the scored tokens, bits
per matmul weight (`storage_bytes` of every packed tensor, float weights at 32 bits), and
the mean output error of the calibrated weights. Decoded matrices are cached under --cache
by weight, encoder and statistics. `--collect OUT.npz --calib-text T ...` first writes the
statistics of the texts (windows of --context tokens) in q35c's format, computed by
onnxruntime rather than the reference interpreter.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import time
from pathlib import Path

import numpy as np

ENCODERS = ("float", "rtn", "imatrix", "gptq")


def parse_encoder(text: str) -> tuple[str, int, dict]:
    head, *options = text.split(",")
    method, _, group = head.partition("/g")
    if method not in ENCODERS:
        raise SystemExit(f"unknown encoder {text!r} (one of {ENCODERS})")
    opts = {}
    for option in options:
        key, _, value = option.partition("=")
        opts[key] = (bool(int(value)) if key == "act_order" else int(value)
                     if key == "refine" else float(value))
    return method, int(group) if group else 32, opts


def parse_spec(spec: str) -> list[tuple[re.Pattern, str]]:
    rules = []
    for entry in filter(None, spec.split(";")):
        match = re.match(rf"(.*?)=((?:{'|'.join(ENCODERS)})\b.*)$", entry)
        if match is None:
            raise SystemExit(f"bad rule {entry!r}: expected REGEX=ENCODER")
        regex, encoder = match.groups()
        parse_encoder(encoder)
        rules.append((re.compile(regex), encoder))
    return rules


def float_model(model: Path) -> tuple[dict[str, np.ndarray], str | None, str | None]:
    """{q35c weight name: float32 [K, N]} of the matmul weights that `quantize-weights`
    would quantize, the tied embedding table's ONNX name (or None) and the LM head's."""
    from q35c.compiler.calibration import watched_matmuls
    from q35c.compiler.cli import _options
    from q35c.compiler.driver import compile_to_module
    from q35c.compiler.generate import static_shapes
    from q35c.compiler.weights import store_of

    options = _options("interp", "", None, False, None, (), None)
    options.shapes = static_shapes(model, 8, 8)
    _, module = compile_to_module(model, options, None)
    store = store_of(module)
    _, stats = watched_matmuls(module)
    weights = {name: np.asarray(store[name], np.float32) for name in stats.names}
    return weights, None, None


class Scorer:
    """onnxruntime over the text's windows with some initializers replaced."""

    def __init__(self, model: Path, ids: list[int], context: int, stride: int, windows: int,
                 threads: int, weights: dict[str, np.ndarray]):
        import onnx
        from onnx import numpy_helper

        from q35c.compiler.generate import windows as window_list

        proto = onnx.load(str(model))
        graph = proto.graph
        inits = {i.name for i in graph.initializer}
        # Values that are node outputs (a folded LM-head Transpose) become initializers, so
        # every weight can be overridden; the float model is unchanged by this.
        # The name each weight is known by: its initializer, or the initializer a
        # Transpose node reads (the dynamo export transposes every nn.Linear weight).
        producer = {o: n for n in graph.node for o in n.output}
        self.display: dict[str, str] = {}
        for name in weights:
            node = producer.get(name)
            source = (node.input[0] if node is not None and node.op_type == "Transpose"
                      and node.input[0] in inits else name)
            self.display[name] = source
        for node in graph.node:  # the torch parameter a dynamo-exported MatMul reads
            if node.op_type == "MatMul" and self.display.get(node.input[1]) == node.input[1]:
                fx = next((p.value for p in node.metadata_props
                           if p.key == "pkg.torch.onnx.fx_node"), "")
                if match := re.search(r"%p_(\w+_weight)\b", fx):
                    self.display[node.input[1]] = match.group(1)
        tables = {n.input[0] for n in graph.node if n.op_type == "Gather"
                  and n.input[0] in inits}
        self.head = next((n for n, src in self.display.items() if src in tables), None)
        self.table = self.display[self.head] if self.head else None
        for name, value in weights.items():
            if name in inits:
                continue
            node = producer[name]
            graph.node.remove(node)
            graph.initializer.append(numpy_helper.from_array(value, name))
        # Each weight's matmul input, as an extra graph output (for --collect).
        self.inputs: dict[str, str] = {}
        for node in graph.node:
            if node.op_type in ("MatMul", "Gemm") and node.input[1] in weights:
                self.inputs.setdefault(node.input[1], node.input[0])
        outputs = {o.name for o in graph.output}
        for x in sorted(set(self.inputs.values()) - outputs):
            graph.output.append(onnx.helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT,
                                                                   None))
        self.onnx = proto.SerializeToString()
        del proto
        self.ids = ids
        self.windows = list(window_list(len(ids), context, stride))[:windows or None]
        self.threads = threads
        self.reference = None

    def run(self, replaced: dict[str, np.ndarray]) -> tuple[float, float, int]:
        """(perplexity, mean KL(reference || this), scored tokens); the first call (no
        reference yet) becomes the reference."""
        import onnxruntime as ort

        from q35c.compiler.generate import PAST

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        keep = []
        for name, value in replaced.items():
            ortvalue = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value, np.float32))
            keep.append(ortvalue)
            options.add_initializer(name, ortvalue)
        session = ort.InferenceSession(self.onnx, options, providers=["CPUExecutionProvider"])
        empty = {v.name: np.zeros((1, v.shape[1], 0, v.shape[3]), np.float32)
                 for v in session.get_inputs() if PAST.match(v.name)}
        nll, kl, count, logps = 0.0, 0.0, 0, []
        for i, (begin, end, first) in enumerate(self.windows):
            window = self.ids[begin:end - 1]
            feed = {"input_ids": np.array([window], np.int64),
                    "attention_mask": np.ones((1, len(window)), np.int64),
                    "position_ids": np.arange(len(window), dtype=np.int64)[None], **empty}
            logits = session.run(["logits"], feed)[0][0][first - 1 - begin:end - 1 - begin]
            logits = logits.astype(np.float64)
            top = logits.max(axis=1, keepdims=True)
            logp = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
            targets = np.array(self.ids[first:end])
            nll -= float(logp[np.arange(len(targets)), targets].sum())
            count += len(targets)
            if self.reference is None:
                logps.append(logp.astype(np.float32))
            else:
                ref = self.reference[i].astype(np.float64)
                kl += float((np.exp(ref) * (ref - logp)).sum())
        if self.reference is None:
            self.reference = logps
        return math.exp(nll / count), kl / count, count


def collect(scorer: Scorer, texts: list[list[int]], window: int, out: Path) -> None:
    """Gram matrices of every weight's matmul input over windows of `window` tokens of each
    text (a last partial window dropped), in q35c's statistics format: what `q35c
    calibrate` collects, computed by onnxruntime instead of the reference interpreter."""
    import onnxruntime as ort

    from q35c.compiler.calibration import Statistics
    from q35c.compiler.generate import PAST

    options = ort.SessionOptions()
    options.intra_op_num_threads = scorer.threads
    options.log_severity_level = 3
    session = ort.InferenceSession(scorer.onnx, options, providers=["CPUExecutionProvider"])
    empty = {v.name: np.zeros((1, v.shape[1], 0, v.shape[3]), np.float32)
             for v in session.get_inputs() if PAST.match(v.name)}
    stats = Statistics()
    index: dict[str, int] = {}
    xs = sorted(set(scorer.inputs.values()))
    for weight, x in sorted(scorer.inputs.items()):
        if x not in index:
            index[x] = len(stats.grams)
            stats.grams.append(None)
            stats.rows.append(0)
        stats.names[weight] = index[x]
    for ids in texts:
        for begin in range(0, len(ids) - window + 1, window):
            tokens = ids[begin:begin + window]
            feed = {"input_ids": np.array([tokens], np.int64),
                    "attention_mask": np.ones((1, window), np.int64),
                    "position_ids": np.arange(window, dtype=np.int64)[None], **empty}
            for x, value in zip(xs, session.run(xs, feed), strict=True):
                i = index[x]
                if stats.grams[i] is None:
                    stats.grams[i] = np.zeros((value.shape[-1],) * 2, np.float32)
                stats.add(i, value)
    stats.save(out)


class Encoders:
    """Decoded matrices by (weight, encoder), cached in memory and under `cache`."""

    def __init__(self, weights: dict[str, np.ndarray], stats: Path | None, cache: Path | None):
        from q35c.compiler.calibration import StatisticsFile

        self.weights = weights
        self.stats = StatisticsFile(stats) if stats else None
        self.tag = hashlib.sha256(stats.read_bytes()).hexdigest()[:12] if stats else "none"
        self.cache = cache
        self.memory: dict[tuple[str, str], tuple[np.ndarray, float, float | None]] = {}

    def encode(self, name: str, encoder: str) -> tuple[np.ndarray, float, float | None]:
        """(decoded float32 [K, N], bits per weight, output error or None)."""
        from q35c.compiler.quant import dequantize, quantize
        from q35c.compiler.quant.calibrated import output_error, quantize_calibrated

        key = (name, encoder)
        if key in self.memory:
            return self.memory[key]
        w = self.weights[name]
        method, group, opts = parse_encoder(encoder)
        gram = self.stats.gram(name, w.shape[0]) if self.stats else None
        path = None
        if self.cache and method != "float":
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{name}@{encoder}@{self.tag}")
            path = self.cache / f"{safe}.npz"
        if path is not None and path.exists():
            data = np.load(path)
            result = (data["deq"], float(data["bits"]),
                      float(data["err"]) if data["err"] >= 0 else None)
        else:
            if method == "float":
                deq, bits = w, 32.0
            elif method == "rtn" or gram is None:
                q = quantize(w, group_size=group, name=name)
                deq, bits = dequantize(q), q.bits_per_weight()
            else:
                q = quantize_calibrated(w, gram, group_size=group, method=method, name=name,
                                        **opts)
                deq, bits = dequantize(q), q.bits_per_weight()
            err = output_error(w, deq, gram) if gram is not None and method != "float" else None
            result = (deq, bits, err)
            if path is not None:
                np.savez(path, deq=deq, bits=bits, err=-1.0 if err is None else err)
        self.memory[key] = result
        return result


def main() -> None:
    from q35c.compiler.generate import Tokenizer, check_windows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("text", type=Path)
    parser.add_argument("--stats", type=Path)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--stride", type=int, default=255)
    parser.add_argument("--windows", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--collect", type=Path, help="write statistics of --calib-text here")
    parser.add_argument("--calib-text", type=Path, action="append", default=[])
    args = parser.parse_args()
    check_windows(args.context, args.stride)
    default = "gptq" if args.stats else "rtn"
    specs = [(spec, parse_spec(spec)) for spec in args.config]
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)
    ids = Tokenizer(args.tokenizer).encode(args.text.read_text(encoding="utf-8"))
    start = time.perf_counter()
    weights, _, _ = float_model(args.model)
    print(f"{len(weights)} matmul weights, {sum(w.size for w in weights.values())} "
          f"parameters (import {time.perf_counter() - start:.0f} s)", flush=True)
    scorer = Scorer(args.model, ids, args.context, args.stride, args.windows, args.threads,
                    weights)
    if args.collect:
        start = time.perf_counter()
        tokenizer = Tokenizer(args.tokenizer)
        collect(scorer, [tokenizer.encode(t.read_text(encoding="utf-8"))
                         for t in args.calib_text], args.context, args.collect)
        print(f"statistics written to {args.collect} ({time.perf_counter() - start:.0f} s)",
              flush=True)
        if not args.stats:
            args.stats = args.collect
            default = "gptq"
    encoders = Encoders(weights, args.stats, args.cache)
    start = time.perf_counter()
    ppl, _, count = scorer.run({})
    print(f"float: perplexity {ppl:.4f} over {count} tokens ({time.perf_counter() - start:.0f}"
          f" s)", flush=True)
    for spec, rules in specs:
        start = time.perf_counter()
        replaced, params, bits, errors = {}, 0, 0.0, []
        table_rule = None
        for regex, encoder in rules:
            if scorer.table and regex.search(f"{scorer.table}[table]"):
                table_rule = encoder
                break
        for name, w in weights.items():
            label = f"{name} {scorer.display[name]}"
            encoder = next((e for r, e in rules if r.search(label)), default)
            deq, b, err = encoders.encode(name, encoder)
            params += w.size
            bits += w.size * b
            if err is not None:
                errors.append(err)
            if encoder != "float":
                replaced[name] = deq
            if name == scorer.head and scorer.table and table_rule is None:
                replaced[scorer.table] = np.ascontiguousarray(deq.T)
        if table_rule is not None and table_rule != "float":
            deq, _, _ = encoders.encode(scorer.head, table_rule)
            replaced[scorer.table] = np.ascontiguousarray(deq.T)
        encoded = time.perf_counter() - start
        ppl, kl, count = scorer.run(replaced)
        mean_err = f", mean output error {np.mean(errors):.4f}" if errors else ""
        print(f"{spec!r}: perplexity {ppl:.4f}, KL {kl:.5f} over {count} tokens, "
              f"{bits / params:.4f} bits per matmul weight{mean_err} (encode {encoded:.0f} s, "
              f"score {time.perf_counter() - start - encoded:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
