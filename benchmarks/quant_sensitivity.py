"""Which weights cost a language model its quality: perplexity and KL of mixed quantizations.

    python benchmarks/quant_sensitivity.py DECODE.onnx TOKENIZER.json TEXT \
        [--stats STATS.npz] [--cache DIR] [--windows W] --config SPEC [--config SPEC ...]

A SPEC is `;`-separated rules `REGEX=ENCODER` (the first rule whose regular expression
`re.search`es a matmul weight's label decides it: q35c's name, a space and the ONNX
initializer it comes from, e.g. `model.model.layers.0.self_attn.q_proj.weight val_76` for
a dynamo export; weights no rule matches are quantized by `gptq` when
--stats is given, else `rtn`). ENCODER is `float`, `rtn`, `imatrix` or `gptq`, optionally
followed by `/gG` (Q3P5 group size G) and `,key=value` options of `quantize_calibrated`
(`damp=0.03`, `act_order=0`, `refine=1`). Examples: `v_proj=float` (every v projection
float, the rest the default), `.=rtn/g16`, `lm_head.weight$=gptq/g64` (the tied LM head),
`v_proj=gptq;.=float` (only the v projections quantized).

Each matmul weight of the graph (q35c's names, as `q35c calibrate` writes them) is encoded
with the library functions directly (no q35c compile of the quantized model:
`compiler/quant`), its decoded float32 matrix is given to onnxruntime in place of the float
one (`SessionOptions.add_initializer`), and the text is scored with `q35c perplexity`'s
windows and formula (the first W windows only with --windows, and of those the ones after
the first S with --skip-windows S). The embedding table follows
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

        from q35c.compiler.frontends.onnx.names import readable_names
        from q35c.compiler.generate import windows as window_list

        proto = onnx.load(str(model))
        graph = proto.graph
        inits = {i.name for i in graph.initializer}
        # q35c stores weights under readable names (compiler/frontends/onnx/names.py): the
        # ONNX value each one is, to replace it in the graph.
        by_onnx = {onnx_name: name for onnx_name, name in readable_names(graph).items()
                   if name in weights}
        by_onnx.update((name, name) for name in weights if name not in by_onnx.values())
        self.onnx_name = {name: onnx_name for onnx_name, name in by_onnx.items()}
        # Values that are node outputs (a folded LM-head Transpose) become initializers, so
        # every weight can be overridden; the float model is unchanged by this.
        # The name each weight is known by: its initializer, or the initializer a
        # Transpose node reads (the dynamo export transposes every nn.Linear weight).
        producer = {o: n for n in graph.node for o in n.output}
        self.display: dict[str, str] = {}
        for name in weights:
            node = producer.get(self.onnx_name[name])
            source = (node.input[0] if node is not None and node.op_type == "Transpose"
                      and node.input[0] in inits else self.onnx_name[name])
            self.display[name] = source
        tables = {n.input[0] for n in graph.node if n.op_type == "Gather"
                  and n.input[0] in inits}
        self.head = next((n for n, src in self.display.items() if src in tables), None)
        self.table = self.display[self.head] if self.head else None
        for name, value in weights.items():
            if self.onnx_name[name] in inits:
                continue
            node = producer[self.onnx_name[name]]
            graph.node.remove(node)
            graph.initializer.append(numpy_helper.from_array(value, self.onnx_name[name]))
        # Each weight's matmul input, as an extra graph output (for --collect).
        self.inputs: dict[str, str] = {}
        for node in graph.node:
            if node.op_type in ("MatMul", "Gemm") and node.input[1] in by_onnx:
                self.inputs.setdefault(by_onnx[node.input[1]], node.input[0])
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
            options.add_initializer(self.onnx_name.get(name, name), ortvalue)
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


def orthogonal(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A random n x n orthogonal matrix: `orth` Haar-distributed (QR of a Gaussian), `had`
    a Hadamard matrix (Kronecker products of Paley's order 12 and Sylvester's order 2, so
    n = 12^a 2^b) with random signs on its rows, scaled to be orthogonal."""
    if kind == "orth":
        q, r = np.linalg.qr(rng.standard_normal((n, n)))
        return q * np.sign(np.diag(r))
    residues = {(i * i) % 11 for i in range(1, 11)}
    paley = np.ones((12, 12))  # Paley I for q = 11 (= 3 mod 4)
    paley[1:, 0] = -1
    paley[1:, 1:] = [[1 if i == j else (1 if (j - i) % 11 in residues else -1)
                      for j in range(11)] for i in range(11)]
    h, rest = np.ones((1, 1)), n
    while rest % 12 == 0:
        h, rest = np.kron(h, paley), rest // 12
    while rest % 2 == 0:
        h, rest = np.kron(h, [[1, 1], [1, -1]]), rest // 2
    if rest != 1:
        raise SystemExit(f"no Hadamard matrix of order {n} here (n = 12^a 2^b)")
    assert np.allclose(h @ h.T, n * np.eye(n))
    return (h * rng.choice([-1.0, 1.0], n)[:, None]) / math.sqrt(n)


class Rotation:
    """Incoherence processing folded into the weights of a LLaMA-style decoder, emulated:
    each weight is quantized in a rotated basis and rotated back, which is what the rotated
    model computes with the quantized weights (exactly, in real arithmetic).

    The residual stream is rotated by one orthogonal Q[D, D]: each RMSNorm's gain g is
    folded into the matmuls that read it (q, k, v after input_layernorm, gate and up after
    post_attention_layernorm, the LM head after the final norm), which then read
    norm(r) Q: W' = Q^T diag(g) W, H' = Q^T diag(g)^-1 H diag(g)^-1 Q. The matmuls that
    write it (o, down) and the embedding table write r Q: W' = W Q, E' = E Q. Inside
    attention, each head's values are rotated by R[d, d]: v's columns W' R (per head), o's
    rows R^T W (per head), H' = R^T H R. The table and the LM head are no longer each
    other's transpose: the table is packed on its own (round to nearest, as q35c packs an
    untied table)."""

    def __init__(self, spec: str, norms: dict[str, np.ndarray], dim: int, head_dim: int):
        kind, _, seed = spec.partition(":")
        if kind not in ("orth", "had"):
            raise SystemExit(f"--rotate {spec!r}: expected orth:SEED or had:SEED")
        rng = np.random.default_rng(int(seed or 0))
        self.spec = spec
        self.q = orthogonal(dim, kind, rng)
        self.r = orthogonal(head_dim, kind, rng)
        self.norms = norms
        self.head_dim = head_dim

    def _parts(self, name: str) -> tuple[np.ndarray | None, bool, bool, bool]:
        """(gain folded into the rows, rows read the rotated stream, columns write it,
        per-head rotation of rows / columns) for weight `name`."""
        match = re.search(r"layers\.(\d+)\.(self_attn|mlp)\.(\w+)_proj", name)
        if match is None:
            if "lm_head" in name:
                return self.norms["model.model.norm.weight"], True, False, False
            raise SystemExit(f"--rotate: do not know where {name} sits")
        layer, kind = match.group(1), match.group(3)
        norm = "input_layernorm" if kind in "qkv" else "post_attention_layernorm"
        gain = self.norms[f"model.model.layers.{layer}.{norm}.weight"]
        if kind in ("q", "k", "v", "gate", "up"):
            return gain, True, False, kind == "v"
        return None, False, True, kind == "o"

    def _heads(self, n: int) -> np.ndarray:
        return np.kron(np.eye(n // self.head_dim), self.r)

    def weight(self, name: str, w: np.ndarray) -> np.ndarray:
        gain, rows, cols, heads = self._parts(name)
        w = w.astype(np.float64)
        if rows:
            w = self.q.T @ (gain[:, None] * w)
            if heads:  # v: columns per head
                w = w @ self._heads(w.shape[1])
        if cols:
            if heads:  # o: rows per head
                w = self._heads(w.shape[0]).T @ w
            w = w @ self.q
        return w.astype(np.float32)

    def gram(self, name: str, h: np.ndarray) -> np.ndarray:
        gain, rows, _, heads = self._parts(name)
        if rows:
            h = h / np.outer(gain, gain)
            return self.q.T @ h @ self.q
        if heads:
            b = self._heads(h.shape[0])
            return b.T @ h @ b
        return h

    def back(self, name: str, deq: np.ndarray) -> np.ndarray:
        gain, rows, cols, heads = self._parts(name)
        w = deq.astype(np.float64)
        if rows:
            if heads:
                w = w @ self._heads(w.shape[1]).T
            w = (self.q @ w) / gain[:, None]
        if cols:
            w = w @ self.q.T
            if heads:
                w = self._heads(w.shape[0]) @ w
        return w.astype(np.float32)


class Encoders:
    """Decoded matrices by (weight, encoder), cached in memory and under `cache`."""

    def __init__(self, weights: dict[str, np.ndarray], stats: Path | None, cache: Path | None,
                 rotation: Rotation | None = None):
        from q35c.compiler.calibration import StatisticsFile

        self.weights = weights
        self.stats = StatisticsFile(stats) if stats else None
        self.tag = hashlib.sha256(stats.read_bytes()).hexdigest()[:12] if stats else "none"
        self.rotation = rotation
        if rotation is not None:
            self.tag += f"_rot_{rotation.spec.replace(':', '_')}"
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
            rot = self.rotation if method != "float" else None
            wq = rot.weight(name, w) if rot else w
            hq = rot.gram(name, gram) if rot and gram is not None else gram
            if method == "float":
                deq, bits = w, 32.0
            elif method == "rtn" or gram is None:
                q = quantize(wq, group_size=group, name=name)
                deq, bits = dequantize(q), q.bits_per_weight()
            else:
                q = quantize_calibrated(wq, hq, group_size=group, method=method, name=name,
                                        **opts)
                deq, bits = dequantize(q), q.bits_per_weight()
            if rot:
                deq = rot.back(name, deq)
            err = output_error(w, deq, gram) if gram is not None and method != "float" else None
            result = (deq, bits, err)
            if path is not None:
                np.savez(path, deq=deq, bits=bits, err=-1.0 if err is None else err)
        self.memory[key] = result
        return result


    def rotated_table(self, head: str, encoder: str) -> np.ndarray:
        """The embedding table E = head^T of a rotated model: E Q packed as (E Q)^T by
        `encoder` without statistics, decoded and rotated back ([V, D])."""
        from q35c.compiler.quant import dequantize, quantize

        method, group, _ = parse_encoder(encoder)
        if method != "rtn":
            raise SystemExit("--rotate: the untied table is packed by rtn only")
        q = self.rotation.q
        packed = quantize((q.T @ self.weights[head].astype(np.float64)).astype(np.float32),
                          group_size=group, name="table")
        return np.ascontiguousarray((q @ dequantize(packed).astype(np.float64)).T,
                                    np.float32)


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
    parser.add_argument("--skip-windows", type=int, default=0,
                        help="score only the windows after the first S (of the first W)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--collect", type=Path, help="write statistics of --calib-text here")
    parser.add_argument("--calib-text", type=Path, action="append", default=[])
    parser.add_argument("--rotate", metavar="orth:SEED|had:SEED",
                        help="emulate a rotated residual stream and value heads (Rotation)")
    parser.add_argument("--head-dim", type=int, default=64)
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
    scorer.windows = scorer.windows[args.skip_windows:]
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
    rotation = None
    if args.rotate:
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(args.model), load_external_data=False).graph
        norms = {t.name: numpy_helper.to_array(t, base_dir=str(args.model.parent)).astype(
            np.float64) for t in graph.initializer if t.name.endswith("norm.weight")}
        rotation = Rotation(args.rotate, norms, weights[scorer.head].shape[0], args.head_dim)
    encoders = Encoders(weights, args.stats, args.cache, rotation)
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
            if name == scorer.head and scorer.table and table_rule is None and not rotation:
                replaced[scorer.table] = np.ascontiguousarray(deq.T)
        if rotation is not None and scorer.table and table_rule is None:
            table_rule = "rtn"  # untied by the rotation: packed on its own
        if rotation is not None and table_rule is not None and table_rule != "float":
            replaced[scorer.table] = encoders.rotated_table(scorer.head, table_rule)
        elif table_rule is not None and table_rule != "float":
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
