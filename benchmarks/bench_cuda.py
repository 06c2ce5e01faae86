"""All GPU checks and benchmarks of the CUDA target, prepared here and run in one command.

    python benchmarks/bench_cuda.py prepare OUT     # on any machine with nvcc (no GPU needed)
    cd OUT && bash run_all.sh RESULTS              # on the GPU machine (numpy; torch optional)

`prepare` compiles every example model for `--target cuda` on the float path, the int8
path and with every fusion pass (plus other shapes of the base models), builds each with
nvcc for sm_90, and saves the inputs and the reference interpreter's outputs as .npy. It
also builds `gemv_bench`, which times the Q3P5 GEMV kernels of runtime/q35cu.cuh (every K
split; single launches and back to back) and the opt-in tensor-core GEMM on SHAPES (weights
rotated through more memory than the L2 cache holds, CUDA events) and checks them against
the interpreter: the GEMVs on a real 4096x4096 and a ragged 1040x200 Q3P5 tensor at 1..8
rows and every K split, the GEMM on it and on ragged shapes (GEMM_CHECK_ROWS) at 9..130
rows. `prepare OUT --only gemv` makes a bundle of the GEMV part alone, with BASE_COMMIT's
kernels (gemv_old/; `--base COMMIT` for another commit's) timed beside today's and torch's
int4 tinygemm among the peers.

`run_all.sh` then runs, on the device: every model against the interpreter (int8 path
bit-exact, float path within 1e-3 relative; results in RESULTS/models.txt), the float cases
with steps of more than 8 rows again built with the tensor-core GEMM
(RESULTS/models_tc.txt), the models under `compute-sanitizer` (RESULTS/sanitizer.txt),
`main --bench` per model (RESULTS/models.txt), the GEMV and GEMM checks and timings
(RESULTS/gemv.txt), and the peers on the same GPU: torch fp16 matmul (cuBLAS) on the same
shapes (M 1..16, and 128 and 512 for the prefill shapes), torch's int4 tinygemm
(`_weight_int4pack_mm`, group 32) on PEER_SHAPES at M 1, 4, 16, and a device-to-device copy
(RESULTS/torch.txt). The output folder stays under 64 MiB.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MODELS_DIR = EXAMPLES / "models"
INT8 = "default,int8-activations"
FUSED = ("default,fuse-dequant-matmul,fuse-norms,fuse-swiglu,fuse-gelu,fuse-attention,"
         "fuse-matmul-bias-act,fuse-residual,canonicalize")
PAIR43 = 'quantize-weights{layout="pair43"},canonicalize,cse'
PASSES = {"float": None, "int8": INT8, "fused": FUSED,
          "pair43": PAIR43, "pair43int8": PAIR43 + ",int8-activations"}
SHAPES = [(4096, 4096), (4096, 11008), (4096, 14336), (11008, 4096), (14336, 4096),
          (8192, 28672), (28672, 8192)]
"""GEMV shapes K x N (the weight of a [M, K] @ [K, N] product)."""
PEER_SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (8192, 28672), (28672, 8192)]
"""The shapes of the issue's GEMV goals: the torch int4 tinygemm peer runs on these."""
CHECK_SHAPE = (4096, 4096)
CHECK_RAGGED = (1040, 200)
"""A second GEMV check: a K tail (1040 = 4 chunks of 256 + 16, half a group) and ragged N."""
BASE_COMMIT = "47103fb"
"""The commit whose GEMV kernels (and blob layout) `--only gemv` times beside the current
ones (gemv_old/): the kernels before the tiled layout."""
ROWS = (1, 2, 4, 8, 16)


def _ids(rng, shape):
    return {"input_ids": rng.integers(0, 256, shape)}


def _hidden(rng, shape):
    return {"hidden": rng.standard_normal(shape).astype(np.float32)}


def _x(rng, shape):
    return {"x": rng.standard_normal(shape).astype(np.float32)}


MODELS = {
    "mlp": (EXAMPLES / "mlp.mlir", "x", (4, 128), _x),
    **{stem: (MODELS_DIR / f"{stem}.onnx", "input_ids", (1, 8), _ids) for stem in (
        "llama_tiny", "llama_tiny_gather_quantized", "llama_tiny_matmulnbits",
        "llama_tiny_qdq_int4")},
    "llama_tiny@1x1": (MODELS_DIR / "llama_tiny.onnx", "input_ids", (1, 1), _ids),
    "llama_tiny@2x5": (MODELS_DIR / "llama_tiny.onnx", "input_ids", (2, 5), _ids),
    **{stem: (MODELS_DIR / f"{stem}.onnx", "hidden", (1, 8, 64), _hidden) for stem in (
        "encoder_tiny", "encoder_tiny_qdq_int8")},
    "encoder_tiny@2x3": (MODELS_DIR / "encoder_tiny.onnx", "hidden", (2, 3, 64), _hidden),
}
"""name -> (file, input name, shape, input maker): the models of tests/test_c_target.py."""


QMATMULS = {f"qmm_r{r}_k{k}_n{n}_g{g}": (r, k, n, g) for r, k, n, g in (
    (1, 4096, 512, 32), (9, 256, 200, 32), (3, 100, 70, 16), (5, 192, 64, 64),
    (70, 1040, 136, 32))}
"""Single quantized matmuls (rows, K, N, group): the GEMV at a long K, over two launches
and a ragged N, the portable kernels (K not a multiple of 16, other group sizes), and 70
rows for the tensor-core GEMM's 64-row tile (two row blocks, K % 64 == 16, N % 64 == 8)."""


def qmatmul_module(rows: int, k: int, n: int, group: int, int8: bool):
    """A module computing x[rows, K] @ W[K, N] with W quantized at `group` (as the C
    target's tests build it)."""
    from xdsl.builder import Builder
    from xdsl.dialects import func
    from xdsl.dialects.builtin import ModuleOp, TensorType, f32
    from xdsl.ir import Block, Region
    from xdsl.rewriter import InsertPoint

    from q35c.compiler.quant import quantize
    from q35c.compiler.weights import WeightStore, attach_store
    from q35c.dialects import quant3p5

    store = WeightStore()
    w = np.random.default_rng(k * n + group).standard_t(4, (k, n)).astype(np.float32)
    store["w"] = quantize(w, group_size=group)
    block = Block(arg_types=[TensorType(f32, (rows, k))])
    b = Builder(InsertPoint.at_end(block))
    weights = b.insert(quant3p5.WeightOp("w", quant3p5.PackedWeightType((k, n), group))).result
    x = block.args[0]
    if int8:
        qa = b.insert(quant3p5.QuantizeActivationsOp(x))
        y = b.insert(quant3p5.MatmulInt8Op(qa.quantized, qa.scale, weights)).result
    else:
        y = b.insert(quant3p5.MatmulOp(x, weights)).result
    b.insert(func.ReturnOp(y))
    module = ModuleOp([func.FuncOp("main", ([x.type], [y.type]), Region(block))])
    attach_store(module, store)
    return module


def onnx_ops_model(path: Path) -> Path:
    """An ONNX model of generic ops with CUDA kernels (targets/cuda/onnx.py) over bool,
    int64, float16 and float32 tensors with broadcasting: IsNaN, Not, And, Where, Cast
    (float to int64, to and from float16), float16 Mul, Gather, GatherElements (a negative
    index), GatherND. Written to `path`."""
    import onnx
    from onnx import TensorProto as T, helper as h

    F, B, INT, H = T.FLOAT, T.BOOL, T.INT64, T.FLOAT16
    nodes = [
        h.make_node("IsNaN", ["x"], ["nan"]), h.make_node("Not", ["nan"], ["num"]),
        h.make_node("And", ["num", "m"], ["keep"]),
        h.make_node("Where", ["keep", "x", "zero"], ["w"]),
        h.make_node("Cast", ["w"], ["wi"], to=INT),
        h.make_node("Cast", ["w"], ["wh"], to=H), h.make_node("Mul", ["wh", "wh"], ["sq"]),
        h.make_node("Cast", ["sq"], ["sqf"], to=F),
        h.make_node("Gather", ["x", "idx"], ["g"], axis=1),
        h.make_node("GatherElements", ["x", "idx2"], ["ge"], axis=1),
        h.make_node("GatherND", ["x", "idx3"], ["gnd"])]
    graph = h.make_graph(
        nodes, "onnx_ops",
        [h.make_tensor_value_info("x", F, [2, 3]), h.make_tensor_value_info("m", B, [3]),
         h.make_tensor_value_info("idx", INT, [2])],
        [h.make_tensor_value_info(n, t, None) for n, t in (
            ("w", F), ("wi", INT), ("sqf", F), ("g", F), ("ge", F), ("gnd", F))],
        [h.make_tensor("zero", F, [1], [0.0]),
         h.make_tensor("idx2", INT, [2, 2], [2, 0, -1, 1]),
         h.make_tensor("idx3", INT, [2, 1], [1, 0])])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 21)]), path)
    return path


def _onnx_ops_inputs(rng, shape):
    x = (rng.standard_normal(shape) * 300).astype(np.float32)
    x[0, 1] = np.nan
    return {"x": x, "m": np.array([True, False, True]), "idx": np.array([2, -3], np.int64)}


SMOLLM2_DIR = Path(os.environ.get("Q35C_SMOLLM2_DIR", EXAMPLES / "smollm2" / "out" / "layers2"))
"""SmolLM2-135M's 2-layer cut (examples/smollm2/export.py); its cases are skipped without it."""
SMOLLM2_FULL_DIR = Path(os.environ.get("Q35C_SMOLLM2_FULL_DIR", SMOLLM2_DIR.parent / "full"))
"""The whole SmolLM2-135M export: `prepare --only decode` times its decode step."""
SMOLLM2_CONTEXT = 256
SMOLLM2 = {"smollm2_s16": 16, "smollm2_s1": 1}
"""SmolLM2 cases: the decode graph compiled for 16 new tokens (a prefill chunk: the prompt
of reference/input_ids.npy, M = 16 matmul rows) and for 1 (a decode step after that
prompt, its cache from the interpreter's prefill), both with 256 cache slots."""
SEGMENT = 4 << 20


def smollm2_graph(tmp: Path, folder: Path = SMOLLM2_DIR) -> Path:
    """layers2's decode graph with its embedding table untied from lm_head: the Gather reads
    a copy whose rows no prepared input uses are zero (lm_head keeps the full table), so the
    weight blob compresses to fit the bundle; on the prepared inputs the model computes what
    the real one computes."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(folder / "decode.dynamo.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    [gather] = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits]
    table = numpy_helper.to_array(inits[gather.input[0]])
    keep = np.zeros(table.shape[0], bool)
    prompt, after = smollm2_tokens(folder)
    keep[prompt] = True
    keep[after] = True
    sparse = np.where(keep[:, None], table, np.float32(0))
    model.graph.initializer.append(numpy_helper.from_array(sparse, "q35c_bench_embedding"))
    gather.input[0] = "q35c_bench_embedding"
    path = tmp / "decode.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="decode.onnx.data")
    return path


def smollm2_tokens(folder: Path = SMOLLM2_DIR) -> tuple[np.ndarray, int]:
    """The prompt (reference/input_ids.npy) and the token the decode case is fed after it
    (the reference's first generated token, reference/dynamo.tokens.npy)."""
    ref = folder / "reference"
    prompt = np.load(ref / "input_ids.npy").reshape(-1)[:16]
    return prompt, int(np.load(ref / "dynamo.tokens.npy").reshape(-1)[0])


def smollm2_inputs(step: int, prefill: dict | None, shapes: dict,
                   folder: Path = SMOLLM2_DIR) -> dict[str, np.ndarray]:
    """Inputs of a SmolLM2 case: the prompt at position 0 (step 16), or (step 1) the token
    after it with the prompt's keys and values (`prefill`: the s16 case's outputs) cached
    (zeros without `prefill`: the same work)."""
    from q35c.compiler.generate import PAST

    prompt, after = smollm2_tokens(folder)
    n, L = len(prompt), SMOLLM2_CONTEXT
    mask = np.zeros((1, L + step), np.int64)
    inputs = {}
    if step > 1:
        ids = np.zeros((1, step), np.int64)
        ids[0, :n] = prompt
        mask[0, L:L + n] = 1
        inputs.update(input_ids=ids, position_ids=np.arange(step, dtype=np.int64)[None])
    else:
        mask[0, :n] = 1
        mask[0, L] = 1
        inputs.update(input_ids=np.array([[after]], np.int64),
                      position_ids=np.array([[n]], np.int64))
    inputs["attention_mask"] = mask
    for name, shape in shapes.items():
        if PAST.match(name):
            cache = np.zeros(shape, np.float32)
            if prefill is not None:
                present = prefill[name.replace("past_key_values", "present")]
                cache[:, :, :n] = present[:, :, L:L + n]
            inputs[name] = cache
    return inputs


def prepare_smollm2(out: Path, kind: str) -> list:
    """The SmolLM2 cases of `kind` (float: within 1e-3 of the interpreter, and how far from
    onnxruntime's float model; int8: bit-exact): one (command, folder) per case."""
    import tempfile

    import onnxruntime

    from q35c.compiler.driver import Options, compile_to_module
    from q35c.compiler.generate import static_shapes
    from q35c.compiler.weights import store_of
    from q35c.semantics import run_module
    from q35c.targets.cuda import CudaTarget

    builds, prefill = [], None
    with tempfile.TemporaryDirectory(prefix="q35c-smollm2-") as tmp:
        path = smollm2_graph(Path(tmp))
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for name, step in SMOLLM2.items():
            shapes = static_shapes(path, SMOLLM2_CONTEXT, step)
            _, module = compile_to_module(path, Options(passes=PASSES[kind], shapes=shapes),
                                          CudaTarget())  # its pipeline: dequantize-gathers
            inputs = smollm2_inputs(step, prefill, shapes)
            store = store_of(module)
            want = run_module(module, store, inputs)
            if step > 1:
                prefill = want
            names = [o.name for o in session.get_outputs()]
            ort = dict(zip(names, session.run(None, inputs))) if kind == "float" else None
            builds.append(write_case(out, f"{name}.{kind}", module, store, inputs, want, ort))
    return builds


def prepare_smollm2_full(out: Path, kind: str) -> list:
    """The whole SmolLM2-135M's decode step (`smollm2_full_s1.KIND`, 256 cache slots): one
    token after the prompt with a zero cache in the prompt's slots, checked against the
    interpreter like the cut's cases and timed on the device beside a PyTorch fp16 decode
    step of the same shapes (`torch_decode` in device_checks.py). bytes.txt: the bytes a
    step reads (weights without the embedding table, of which it reads one row; the KV
    cache), for the fraction of the bandwidth limit."""
    import tempfile

    from q35c.compiler.driver import Options, compile_to_module
    from q35c.compiler.generate import static_shapes
    from q35c.compiler.weights import store_of
    from q35c.semantics import run_module
    from q35c.targets.cuda import CudaTarget
    from q35c.targets.cuda.emit import emit

    with tempfile.TemporaryDirectory(prefix="q35c-smollm2-full-") as tmp:
        path = smollm2_graph(Path(tmp), SMOLLM2_FULL_DIR)
        shapes = static_shapes(path, SMOLLM2_CONTEXT, 1)
        _, module = compile_to_module(path, Options(passes=PASSES[kind], shapes=shapes),
                                      CudaTarget())
        inputs = smollm2_inputs(1, None, shapes, SMOLLM2_FULL_DIR)
        store = store_of(module)
        want = run_module(module, store, inputs)
        build = write_case(out, f"smollm2_full_s1.{kind}", module, store, inputs, want)
        program = emit(module, store, None, "model").program
    gathered = {id(s.ins[0]) for s in program.steps if s.kernel.startswith("onnx_") and
                s.params.get("op") == "Gather"} | {
        id(s.ins[0]) for s in program.steps if s.kernel == "gather"}
    weights = sum(len(e.data) for e in program.blob if id(e.buffer) not in gathered)
    cache = sum(np.asarray(v).nbytes for k, v in inputs.items() if k.startswith("past"))
    (build[1] / "bytes.txt").write_text(f"weights {weights} cache {cache}\n")
    for file in [build[1] / "model.cu", *build[1].glob("in/*"), *build[1].glob("want/*")]:
        if file.stat().st_size > 1 << 16:  # to fit the 64 MiB transfer (unpack_blobs)
            file.with_name(file.name + ".gz").write_bytes(gzip.compress(file.read_bytes(), 6))
    return [build]


def pack_blob(out: Path, case: Path, emitted) -> None:
    """model.bin as segments stored once under OUT/blobs (zlib), cut at every weight's start
    and every SEGMENT bytes within it, so weights that several cases share travel once;
    case/model.bin.segments lists them (device_checks.py reassembles model.bin)."""
    import hashlib
    import zlib

    blob = emitted.files["model.bin"]
    starts = sorted({0, *(e.buffer.offset for e in emitted.program.blob), len(blob)})
    cuts = sorted({c for a, b in zip(starts, starts[1:]) for c in range(a, b, SEGMENT)}
                  | {len(blob)})
    names = []
    (out / "blobs").mkdir(exist_ok=True)
    for a, b in zip(cuts, cuts[1:]):
        piece = blob[a:b]
        name = hashlib.sha256(piece).hexdigest()[:32]
        target = out / "blobs" / name
        if not target.exists():
            target.write_bytes(zlib.compress(piece, 6))
        names.append(name)
    (case / "model.bin.segments").write_text("\n".join(names) + "\n")


def nvcc() -> str:
    from q35c.targets.cuda.build import nvcc as find

    return find()


def compile_model(model: str, passes: str | None):
    from q35c.compiler.driver import Options, compile_to_module
    from q35c.targets.cuda import CudaTarget

    path, input_name, shape, _ = MODELS[model]
    shapes = {} if path.suffix == ".mlir" else {input_name: shape}
    # with the target's own pipeline (dequantize-gathers), as `--target cuda` compiles
    return compile_to_module(path, Options(passes=passes, shapes=shapes), CudaTarget())


def prepare_model(out: Path, model: str, kind: str) -> list[str]:
    """Sources, inputs and expected outputs of one case; the nvcc command that builds it."""
    from q35c.compiler.weights import store_of
    from q35c.semantics import run_module

    if model in QMATMULS:
        rows, k, n, group = QMATMULS[model]
        from q35c.compiler.entry import argument_names, entry_function

        module = qmatmul_module(rows, k, n, group, kind == "int8")
        (arg,) = argument_names(entry_function(module, None))
        inputs = {arg: _x(np.random.default_rng(35), (rows, k))["x"]}
    elif model == "onnx_ops":
        from q35c.compiler.driver import Options, compile_to_module

        _, module = compile_to_module(onnx_ops_model(out / "onnx_ops.onnx"), Options())
        inputs = _onnx_ops_inputs(np.random.default_rng(35), (2, 3))
    else:
        _, module = compile_model(model, PASSES[kind])
        _, _, shape, make_inputs = MODELS[model]
        inputs = make_inputs(np.random.default_rng(35), shape)
    store = store_of(module)
    want = run_module(module, store, inputs)
    return write_case(out, f"{model.replace('@', '_')}.{kind}", module, store, inputs, want)


def write_case(out: Path, name: str, module, store, inputs: dict, want: dict,
               peer: dict | None = None):
    """A case folder: the emitted project, in/*.raw, want/*.npy (the interpreter's outputs)
    and ort/*.npy (`peer`: onnxruntime's float outputs); the nvcc command that builds it.
    A weight blob over SEGMENT bytes is stored as segments (`pack_blob`)."""
    from q35c.targets.c.printer import io_file_stems
    from q35c.targets.cuda.build import FLAGS
    from q35c.targets.cuda.emit import emit

    emitted = emit(module, store, None, "model")
    case = out / "models" / name
    shutil.rmtree(case, ignore_errors=True)
    (case / "in").mkdir(parents=True)
    (case / "want").mkdir()
    for file, data in emitted.files.items():
        if file == "model.bin" and len(data) > SEGMENT:
            pack_blob(out, case, emitted)
        else:
            (case / file).write_bytes(data)
    in_stems, out_stems = io_file_stems(emitted.program)
    for (key, buf), stem in zip(emitted.program.inputs, in_stems):
        data = np.asarray(inputs[key]).astype(buf.dtype.newbyteorder("<"))
        (case / "in" / f"{stem}.raw").write_bytes(np.ascontiguousarray(data).tobytes())
    for (key, _), stem in zip(emitted.program.outputs, out_stems):
        np.save(case / "want" / f"{stem}.npy", want[key])
        if peer is not None:
            (case / "ort").mkdir(exist_ok=True)
            np.save(case / "ort" / f"{stem}.npy", peer[key])
    return [nvcc(), *FLAGS, "main.cu", "model.cu", "-o", "main"], case


GEMV_MAIN = r"""
/* gemv_bench: times and checks the Q3P5 GEMV kernels (generated by bench_cuda.py). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include <algorithm>

static void check(cudaError_t e, const char *what)
{
    if (e != cudaSuccess) {
        fprintf(stderr, "gemv_bench: %s: %s\n", what, cudaGetErrorString(e));
        exit(1);
    }
}

/* A well-mixed 32-bit hash of element i (the fills' random bits). */
__device__ static uint32_t fill_hash(int64_t i, uint32_t seed)
{
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    return h ^ (h >> 13);
}

/* Plausible per-column words and random codes: the kernels' cost does not depend on
 * the values. */
__global__ void fill_entry(uint8_t *e, int64_t bytes, int n, uint32_t seed)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < bytes;
         i += (int64_t)gridDim.x * blockDim.x) {
        uint32_t h = fill_hash(i, seed);
        if (i < 12 * (int64_t)n && i % 4 == 0)
            *(float *)(e + i) = 0.01f;
        else if (i >= 12 * (int64_t)n)
            e[i] = (uint8_t)h;
    }
}

/* Activations in [-1, 1) from a hash (timings never run on zeros). */
__global__ void fill_x(float *x, int64_t count, uint32_t seed)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x) {
        uint32_t h = fill_hash(i, seed);
        x[i] = (float)(h >> 8) * (2.0f / 16777216.0f) - 1.0f;
    }
}

static q35_q3p5 view(const uint8_t *e, int k, int n, int meta_row, int prow, int meta_off,
                     int payload_off)
{
    q35_q3p5 t;
    t.k = k; t.n = n; t.group = 32; t.groups = (k + 31) / 32;
    t.meta_row = meta_row; t.prow = prow;
    t.tiled = k % 16 == 0; /* blob.py: group 32, K % 16 == 0 */
    t.super_scale = (const float *)(const void *)e;
    t.offset_base = t.super_scale + n; t.offset_step = t.offset_base + n;
    t.meta = e + meta_off; t.payload = e + payload_off;
    return t;
}

/* The tensor-core GEMM over `rows` rows (the row tile printer.gemm_launch picks). */
static void launch_gemm(int rows, float *y, const float *x, q35_q3p5 t)
{
    static bool ready = false;
    if (!ready) {
        check(q35_gemm_setup<1>(), "gemm setup");
        check(q35_gemm_setup<2>(), "gemm setup");
        check(q35_gemm_setup<4>(), "gemm setup");
        ready = true;
    }
    q35_epilogue e = {NULL, NULL, Q35_ACT_NONE};
    const int mt = rows <= 32 ? 1 : rows <= 64 ? 2 : 4;
    const dim3 grid((rows + 32 * mt - 1) / (32 * mt), (t.n + Q35_GEMM_BN - 1) / Q35_GEMM_BN);
    if (mt == 1)
        q35_gemm_f16<1><<<grid, Q35_GEMM_THREADS, sizeof(q35_gemm_smem<1>)>>>(y, x, rows, t, e);
    else if (mt == 2)
        q35_gemm_f16<2><<<grid, Q35_GEMM_THREADS, sizeof(q35_gemm_smem<2>)>>>(y, x, rows, t, e);
    else
        q35_gemm_f16<4><<<grid, Q35_GEMM_THREADS, sizeof(q35_gemm_smem<4>)>>>(y, x, rows, t, e);
}

/* The GEMV paths: 0 float (8 rows a launch), 1 int8 on dp4a (q35_gemv_i8, 8 rows a launch),
 * 3 int8 on tensor cores (q35_gemv_i8_mma, 16 rows a launch), 4 int8 as the printer routes
 * it (dp4a below GEMV_MMA_ROWS rows, else tensor cores); 2: the tensor-core GEMM. ks = 0:
 * the printer's K split (gemv_ksplit in targets/cuda/printer.py, mirrored here). */
#define MMA_ROWS Q35_BENCH_MMA_ROWS
static int route(int path, int rows)
{
    return path == 4 ? (rows >= MMA_ROWS ? 3 : 1) : path;
}

static int max_ks(int path, int rows)
{
    return path == 3 ? 4 : path == 1 ? (16 / rows < 16 ? 16 / rows : 16) : 16;
}

static int pick_ks(int path, int k, int n, int rows)
{
    return Q35_BENCH_PICK_KS(route(path, rows), k, n, rows);
}

template <int M>
static void launch_m(int path, int ks, float *y, const float *x, const int8_t *q,
                     const float *s, q35_q3p5 t)
{
    q35_epilogue e = {NULL, NULL, Q35_ACT_NONE};
    const int grid = (t.n + 31) / 32;
    if (path == 0) {
        if constexpr (M <= 8) { /* float launches take 8 rows at most */
            if (ks == 1) q35_gemv_f32<M, 1><<<grid, 32>>>(y, x, t, e);
            else if (ks == 2) q35_gemv_f32<M, 2><<<grid, 64>>>(y, x, t, e);
            else if (ks == 4) q35_gemv_f32<M, 4><<<grid, 128>>>(y, x, t, e);
            else if (ks == 8) q35_gemv_f32<M, 8><<<grid, 256>>>(y, x, t, e);
            else q35_gemv_f32<M, 16><<<grid, 512>>>(y, x, t, e);
        }
    } else if (path == 3) {
        if (ks == 1) q35_gemv_i8_mma<1, (M > 8)><<<grid, 32>>>(y, q, s, M, t);
        else if (ks == 2) q35_gemv_i8_mma<2, (M > 8)><<<grid, 64>>>(y, q, s, M, t);
        else q35_gemv_i8_mma<4, (M > 8)><<<grid, 128>>>(y, q, s, M, t);
    } else if constexpr (M <= 8) {
        if constexpr (M == 1) {
            if (ks == 16) {
                q35_gemv_i8<M, 16><<<grid, 512>>>(y, q, s, t);
                return;
            }
        }
        if constexpr (M <= 2) {
            if (ks == 8) {
                q35_gemv_i8<M, 8><<<grid, 256>>>(y, q, s, t);
                return;
            }
        }
        if constexpr (M <= 4) {
            if (ks == 4) {
                q35_gemv_i8<M, 4><<<grid, 128>>>(y, q, s, t);
                return;
            }
        }
        if (ks == 1) q35_gemv_i8<M, 1><<<grid, 32>>>(y, q, s, t);
        else q35_gemv_i8<M, 2><<<grid, 64>>>(y, q, s, t); /* ks * M <= 16 */
    }
}

static void launch(int path, int ks, int rows, float *y, const float *x, const int8_t *q,
                   const float *s, q35_q3p5 t)
{
    if (path == 2) {
        launch_gemm(rows, y, x, t);
        return;
    }
    path = route(path, rows);
    const int per = path == 3 ? 16 : 8;
    for (int r0 = 0; r0 < rows; r0 += per) {
        const int m = rows - r0 < per ? rows - r0 : per;
        const int k_s = ks ? ks : pick_ks(path, t.k, t.n, m);
        float *yr = y + (int64_t)r0 * t.n;
        const float *xr = x + (int64_t)r0 * t.k;
        const int8_t *qr = q + (int64_t)r0 * t.k;
        switch (m) {
        case 1: launch_m<1>(path, k_s, yr, xr, qr, s + r0, t); break;
        case 2: launch_m<2>(path, k_s, yr, xr, qr, s + r0, t); break;
        case 3: launch_m<3>(path, k_s, yr, xr, qr, s + r0, t); break;
        case 4: launch_m<4>(path, k_s, yr, xr, qr, s + r0, t); break;
        case 5: launch_m<5>(path, k_s, yr, xr, qr, s + r0, t); break;
        case 6: launch_m<6>(path, k_s, yr, xr, qr, s + r0, t); break;
        case 7: launch_m<7>(path, k_s, yr, xr, qr, s + r0, t); break;
        case 8: launch_m<8>(path, k_s, yr, xr, qr, s + r0, t); break;
        default: launch_m<16>(path, k_s, yr, xr, qr, s + r0, t); break; /* mma: 9..16 */
        }
    }
}

static void *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "gemv_bench: cannot open %s\n", path); exit(1); }
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(*size);
    if (fread(p, 1, *size, f) != *size) { fprintf(stderr, "short read\n"); exit(1); }
    fclose(f);
    return p;
}

/* gemv_bench check DIR K N meta_row prow meta_off payload_off: runs rows 1..8 on DIR's
 * entry.bin, x.bin (float [16, K]), q.bin (int8 [16, K]), s.bin (float [16]) with every K
 * split and writes DIR/y_{f32,i8}_ksKS_M.bin.
 * gemv_bench gemm DIR K N meta_row prow meta_off payload_off ROWS: the tensor-core GEMM
 * on DIR's entry.bin and x_tc_ROWS.bin (float [ROWS, K]); writes DIR/y_tc_ROWS.bin.
 * gemv_bench time K N meta_row prow meta_off payload_off bytes: prints the timings. */
int main(int argc, char **argv)
{
    if (argc < 9) { fprintf(stderr, "usage: see bench_cuda.py\n"); return 2; }
    const int k = atoi(argv[3]), n = atoi(argv[4]), meta_row = atoi(argv[5]),
              prow = atoi(argv[6]), meta_off = atoi(argv[7]), payload_off = atoi(argv[8]);
    const int max_rows = 512;
    float *x, *y, *s;
    int8_t *q;
    check(cudaMalloc((void **)&x, max_rows * (size_t)k * 4), "malloc x");
    check(cudaMalloc((void **)&q, max_rows * (size_t)k), "malloc q");
    check(cudaMalloc((void **)&s, max_rows * 4), "malloc s");
    check(cudaMalloc((void **)&y, max_rows * (size_t)n * 4), "malloc y");
    if (strcmp(argv[1], "gemm") == 0) {
        char path[4096];
        size_t size, xs;
        const int rows = atoi(argv[9]);
        snprintf(path, sizeof path, "%s/entry.bin", argv[2]);
        void *entry = read_file(path, &size);
        snprintf(path, sizeof path, "%s/x_tc_%d.bin", argv[2], rows);
        void *hx = read_file(path, &xs);
        if (rows > max_rows || xs != (size_t)rows * k * 4) { fprintf(stderr, "x.bin\n"); return 1; }
        uint8_t *e;
        check(cudaMalloc((void **)&e, size), "malloc entry");
        check(cudaMemcpy(e, entry, size, cudaMemcpyHostToDevice), "copy entry");
        check(cudaMemcpy(x, hx, xs, cudaMemcpyHostToDevice), "copy x");
        check(cudaMemset(y, 0xff, (size_t)rows * n * 4), "poison y"); /* NaN if not written */
        launch_gemm(rows, y, x, view(e, k, n, meta_row, prow, meta_off, payload_off));
        check(cudaDeviceSynchronize(), "gemm run");
        std::vector<float> out((size_t)rows * n);
        check(cudaMemcpy(out.data(), y, out.size() * 4, cudaMemcpyDeviceToHost), "y");
        snprintf(path, sizeof path, "%s/y_tc_%d.bin", argv[2], rows);
        FILE *f = fopen(path, "wb");
        fwrite(out.data(), 4, out.size(), f);
        fclose(f);
        return 0;
    }
    if (strcmp(argv[1], "check") == 0) {
        char path[4096];
        size_t size, xs, qs, ss;
        snprintf(path, sizeof path, "%s/entry.bin", argv[2]);
        void *entry = read_file(path, &size);
        snprintf(path, sizeof path, "%s/x.bin", argv[2]);
        void *hx = read_file(path, &xs);
        snprintf(path, sizeof path, "%s/q.bin", argv[2]);
        void *hq = read_file(path, &qs);
        snprintf(path, sizeof path, "%s/s.bin", argv[2]);
        void *hs = read_file(path, &ss);
        uint8_t *e;
        check(cudaMalloc((void **)&e, size), "malloc entry");
        check(cudaMemcpy(e, entry, size, cudaMemcpyHostToDevice), "copy entry");
        check(cudaMemcpy(x, hx, xs, cudaMemcpyHostToDevice), "copy x");
        check(cudaMemcpy(q, hq, qs, cudaMemcpyHostToDevice), "copy q");
        check(cudaMemcpy(s, hs, ss, cudaMemcpyHostToDevice), "copy s");
        std::vector<float> out((size_t)16 * n);
        const char *names[] = {"f32", "i8", "", "mma"};
        for (int path_ : {0, 1, 3})
            for (int ks = 1; ks <= max_ks(path_, 1); ks *= 2)
                for (int m = 1; m <= (path_ == 3 ? 16 : 8); m++) {
                    if (ks > max_ks(path_, m > 8 ? 8 : m))
                        continue;
                    check(cudaMemset(y, 0xff, (size_t)16 * n * 4), "poison y");
                    launch(path_, ks, m, y, x, q, s,
                           view(e, k, n, meta_row, prow, meta_off, payload_off));
                    check(cudaDeviceSynchronize(), "check run");
                    check(cudaMemcpy(out.data(), y, (size_t)m * n * 4, cudaMemcpyDeviceToHost),
                          "y");
                    snprintf(path, sizeof path, "%s/y_%s_ks%d_%d.bin", argv[2], names[path_], ks,
                             m);
                    FILE *f = fopen(path, "wb");
                    fwrite(out.data(), 4, (size_t)m * n, f);
                    fclose(f);
                }
        return 0;
    }
    /* time: enough copies of the weights to overflow the L2 cache, used in turn */
    const int64_t bytes = atoll(argv[9]);
    int dev = 0, l2 = 0;
    check(cudaGetDevice(&dev), "device");
    check(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev), "l2");
    int copies = (int)((4 * (int64_t)l2 + bytes - 1) / bytes);
    copies = copies < 2 ? 2 : copies;
    std::vector<uint8_t *> entries(copies);
    for (int c = 0; c < copies; c++) {
        check(cudaMalloc((void **)&entries[c], (size_t)bytes), "malloc entries");
        fill_entry<<<1024, 256>>>(entries[c], bytes, n, 77u + c);
    }
    fill_x<<<1024, 256>>>(x, max_rows * (int64_t)k, 5u); /* not zeros: real data's cost */
    check(cudaMemset(q, 1, max_rows * (size_t)k), "q");
    check(cudaMemset(s, 0, max_rows * 4), "s");
    check(cudaDeviceSynchronize(), "fill");
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    auto time_one = [&](int path, int ks, int rows) {
        std::vector<float> times;
        for (int it = 0; it < 10; it++)
            launch(path, ks, rows, y, x, q, s, view(entries[it % copies], k, n, meta_row, prow,
                                                   meta_off, payload_off));
        for (int it = 0; it < 300; it++) {
            q35_q3p5 t = view(entries[it % copies], k, n, meta_row, prow, meta_off, payload_off);
            cudaEventRecord(a);
            launch(path, ks, rows, y, x, q, s, t);
            cudaEventRecord(b);
            cudaEventSynchronize(b);
            float ms;
            cudaEventElapsedTime(&ms, a, b);
            times.push_back(ms * 1000.0f);
        }
        /* back to back: 30 launches (weights in turn) between two events, as a CUDA graph
         * or a stream replays them; the median of 11 such batches, per launch */
        std::vector<float> batches;
        for (int it = 0; it < 11; it++) {
            cudaEventRecord(a);
            for (int j = 0; j < 30; j++)
                launch(path, ks, rows, y, x, q, s, view(entries[(it * 30 + j) % copies], k, n,
                                                        meta_row, prow, meta_off, payload_off));
            cudaEventRecord(b);
            cudaEventSynchronize(b);
            float ms;
            cudaEventElapsedTime(&ms, a, b);
            batches.push_back(ms * 1000.0f / 30);
        }
        std::sort(batches.begin(), batches.end());
        check(cudaGetLastError(), "launch");
        std::sort(times.begin(), times.end());
        const char *name = path == 2 ? "tc" : path == 3 ? "mma" : path == 1 ? "i8" : "f32";
        const int per = path == 3 ? 16 : 8;
        const int pick = path == 2 ? 0 : pick_ks(path, k, n, rows < per ? rows : per);
        if (path != 2 && ks == 0)
            ks = pick;
        printf("%s %s ks=%d%s%s K=%d N=%d M=%d median_us %.2f min_us %.2f weight_bytes %lld "
               "GBps_median %.1f TFLOPs_median %.2f\n", path == 2 ? "gemm" : "gemv", name, ks,
               path != 2 && ks == pick ? "(pick)" : "",
               path != 2 && path != 0 && route(4, rows) == path ? "(route)" : "",
               k, n, rows, times[150], times[0], (long long)bytes, bytes / (times[150] * 1e3),
               2.0 * rows * k * n / (times[150] * 1e6));
        printf("    b2b_us %.2f GBps_b2b %.1f\n", batches[5], bytes / (batches[5] * 1e3));
    };
    /* the GEMVs (float, int8) at 1..16 rows: the printer's K split (ks=0 in the output
     * line: "pick"), then every other one */
    const int rows_list[] = {1, 2, 4, 8, 16};
    const char *only_path = getenv("Q35_BENCH_PATH"); /* 0, 1 or 3: that path only */
    for (int path : {0, 1, 3}) {
        if (only_path && atoi(only_path) != path)
            continue;
        for (int rows : rows_list) {
            if (path == 3 && rows < 4)
                continue;
            const int m = rows < (path == 3 ? 16 : 8) ? rows : (path == 3 ? 16 : 8);
            for (int ks = 0; ks <= max_ks(path, m); ks = ks ? 2 * ks : 1) {
                if (ks && ks == pick_ks(path, k, n, m))
                    continue;
                time_one(path, ks, rows);
                if (getenv("Q35_BENCH_FIRST")) /* one configuration (for a profiler) */
                    return 0;
            }
        }
    }
    /* prefill (unless Q35_BENCH_PREFILL=0): the tensor-core GEMM and the float GEMV
     * launches it replaces (8 rows each) */
    const char *prefill = getenv("Q35_BENCH_PREFILL");
    const int big_rows[] = {16, 64, 128, 256, 512};
    const bool gemm_only = only_path && atoi(only_path) == 2; /* the GEMM alone */
    if ((!only_path || gemm_only) && (!prefill || strcmp(prefill, "0") != 0))
        for (int rows : big_rows) {
            time_one(2, 1, rows);
            if (!gemm_only && rows <= 128)
                time_one(0, 0, rows);
        }
    return 0;
}
"""


GEMM_CHECK_ROWS = {CHECK_SHAPE: (9, 64, 200), (64, 64): (9, 16), (80, 70): (17, 33),
                   (1040, 200): (37, 100), (2048, 520): (130,)}
"""Tensor-core GEMM checks: K x N -> row counts (row tiles of 32, 64 and 128, several row
blocks, ragged rows and columns (N % 128 of 64, 70, 72, 8), K tails of half a group)."""


def gemm_check_data(folder: Path, w, rng, rows: int) -> None:
    """x_tc_ROWS.bin and the interpreter's product (want_tc_ROWS.npy, float64 sums rounded
    once) with the tensor-core contract's scale sum_k |x_k w_k| (bound_tc_ROWS.npy)."""
    from q35c.semantics.numerics import matmul_unordered
    from q35c.semantics.quant3p5 import dequantized

    weights = dequantized(w).astype(np.float64)
    x = rng.standard_normal((rows, weights.shape[0])).astype(np.float32)
    (folder / f"x_tc_{rows}.bin").write_bytes(x.tobytes())
    np.save(folder / f"want_tc_{rows}.npy", np.float32(matmul_unordered(x, weights)))
    bound = np.abs(x.astype(np.float64)) @ np.abs(weights)
    np.save(folder / f"bound_tc_{rows}.npy", np.float32(bound))


def gemv_check_data(folder: Path, w, rng) -> None:
    """entry.bin, layout.txt, x.bin, q.bin, s.bin (8 rows) and the interpreter's outputs at
    1..8 rows: want_f32_M.npy (float64 sums rounded once) and at 1..16 rows want_i8_M.npy
    (matmul_int8); x.bin and q.bin have 16 rows."""
    from q35c.semantics import matmul_int8, quantize_activations
    from q35c.semantics.numerics import matmul_unordered
    from q35c.semantics.quant3p5 import dequantized
    from q35c.targets.cuda.blob import gpu_q3p5_bytes

    entry, lay = gpu_q3p5_bytes(w.to_bytes())
    folder.mkdir()
    (folder / "entry.bin").write_bytes(entry)
    (folder / "layout.txt").write_text(f"{lay.k} {lay.n} {lay.meta_row} {lay.prow} "
                                       f"{lay.meta_off} {lay.payload_off}\n")
    x = rng.standard_normal((16, lay.k)).astype(np.float32)
    q, s = quantize_activations(x)
    (folder / "x.bin").write_bytes(x.tobytes())
    (folder / "q.bin").write_bytes(q.tobytes())
    (folder / "s.bin").write_bytes(s.tobytes())
    weights = dequantized(w)
    for m in range(1, 17):
        if m <= 8:
            np.save(folder / f"want_f32_{m}.npy", np.float32(matmul_unordered(x[:m], weights)))
        np.save(folder / f"want_i8_{m}.npy", matmul_int8(q[:m], s[:m], w))


def prepare_gemv_old(out: Path, base: str = BASE_COMMIT) -> list[str]:
    """gemv_old/: the GEMV kernels and gemv_bench of commit `base` (by default BASE_COMMIT,
    the layout before the tiled one), to time them beside the current ones in the same run
    (`time` only)."""
    from q35c.targets.cuda.printer import CudaPrinter
    from q35c.targets.native.program import Program

    def show(path):
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{base}:{path}"],
                              check=True, capture_output=True, text=True).stdout

    old = out / "gemv_old"
    old.mkdir()
    # the tables as today's runtime() fills them in (they did not change)
    filled = CudaPrinter(Program("gemv", [], [], [], [], []), b"", {}).runtime()
    header = show("targets/cuda/runtime/q35cu.cuh")
    for name, table in (("Q35_CODEBOOK_ROWS", "q35_codebook[128][2] = {\n"),
                        ("Q35_SCALE_STEP_BITS", "q35_scale_step_bits[32] = {\n"),
                        ("Q35_LEGACY_LEVEL_ROWS", "q35_legacy_levels[128][2] = {\n")):
        body = filled[filled.index(table) + len(table):]
        header = header.replace(name, body[:body.index("\n};")])
    main = show("benchmarks/bench_cuda.py")
    main = main[main.index('GEMV_MAIN = r"""') + len('GEMV_MAIN = r"""'):]
    main = main[:main.index('"""')].replace("const int big_rows[] = {16, 128, 512};",
                                            "const int big_rows[] = {16};")
    # the back-to-back timing of today's time_one, into an old one without it
    ours = "" if "b2b_us" in main else GEMV_MAIN[GEMV_MAIN.index("        /* back to back:"):]
    if ours:
        ours = ours[:ours.index('        check(cudaGetLastError(), "launch");')]
        at = '        check(cudaGetLastError(), "launch");\n        std::sort(times.begin()'
        main = main.replace(at, ours + at)
        at = "2.0 * rows * k * n / (times[150] * 1e6));\n"
        main = main.replace(at, at + '        printf("    b2b_us %.2f GBps_b2b %.1f\\n", '
                            'batches[5], bytes / (batches[5] * 1e3));\n')
    if "b2b_us" not in main:
        raise RuntimeError("the old gemv_bench did not take the back-to-back timing")
    (old / "gemv_bench_old.cu").write_text(header + main)
    namespace: dict = {}
    exec(compile(show("targets/cuda/blob.py"), "blob_old.py", "exec"), namespace)
    rows = []
    for kk, nn in SHAPES:
        lay = namespace["layout_of"](kk, nn, 32)
        rows.append(f"{kk} {nn} {lay.meta_row} {lay.prow} {lay.meta_off} {lay.payload_off} "
                    f"{lay.size}")
    (old / "shapes.txt").write_text("\n".join(rows) + "\n")
    from q35c.targets.cuda.build import FLAGS

    return [nvcc(), *FLAGS, "gemv_bench_old.cu", "-o", "gemv_bench_old"], old


def pick_table() -> str:
    """The printer's K split (gemv_ksplit) and int8 routing for gemv_bench, as a C table over
    the timed and checked shapes and 1..16 rows."""
    from q35c.targets.cuda.printer import GEMV_MMA_ROWS, gemv_ksplit

    kernels = {0: "f32", 1: "i8", 3: "mma"}
    rows = [f"{{{path}, {k}, {n}, {m}, {gemv_ksplit(k, n, m, kern)}}},"
            for k, n in [*SHAPES, CHECK_SHAPE, CHECK_RAGGED] for path, kern in kernels.items()
            for m in range(1, 17 if kern == "mma" else 9)]
    return ("\n/* generated by bench_cuda.py from targets/cuda/printer.py */\n"
            "#include <stdio.h>\n#include <stdlib.h>\n"
            f"#define Q35_BENCH_MMA_ROWS {GEMV_MMA_ROWS}\n"
            "static const int q35_bench_picks[][5] = {\n" + "\n".join(rows) + "\n};\n"
            "static int q35_bench_pick(int path, int k, int n, int rows)\n{\n"
            "    for (const auto &p : q35_bench_picks)\n"
            "        if (p[0] == path && p[1] == k && p[2] == n && p[3] == rows)\n"
            "            return p[4];\n"
            "    fprintf(stderr, \"gemv_bench: no K split for %d %d %d %d\\n\",\n"
            "            path, k, n, rows);\n"
            "    exit(1);\n}\n#define Q35_BENCH_PICK_KS q35_bench_pick\n")


def prepare_gemv(out: Path, gemm_checks: bool = True) -> list[str]:
    """gemv_bench.cu, the check data of CHECK_SHAPE and CHECK_RAGGED, the GEMM's checks
    (unless gemm_checks is false), the shape table; the build command."""
    from q35c.compiler.quant import quantize
    from q35c.targets.cuda.blob import gpu_q3p5_bytes, layout_of
    from q35c.targets.cuda.printer import CudaPrinter
    from q35c.targets.native.program import Program

    gemv = out / "gemv"
    gemv.mkdir()
    runtime = CudaPrinter(Program("gemv", [], [], [], [], []), b"", {}).runtime()
    (gemv / "gemv_bench.cu").write_text(runtime + pick_table() + GEMV_MAIN)
    rng = np.random.default_rng(35)
    k, n = CHECK_SHAPE
    w = quantize((rng.standard_normal((k, n)) * 0.02).astype(np.float32))
    check = gemv / "check"
    gemv_check_data(check, w, rng)
    kr, nr = CHECK_RAGGED
    gemv_check_data(gemv / f"check_{kr}x{nr}",
                    quantize((rng.standard_normal((kr, nr)) * 0.02).astype(np.float32)), rng)
    if gemm_checks:
        for m in GEMM_CHECK_ROWS[CHECK_SHAPE]:
            gemm_check_data(check, w, rng, m)
        for (kk, nn), ms in GEMM_CHECK_ROWS.items():
            if (kk, nn) == CHECK_SHAPE:
                continue
            folder = gemv / f"gemm_{kk}x{nn}"
            folder.mkdir()
            wt = quantize((rng.standard_normal((kk, nn)) * 0.02).astype(np.float32))
            entry, small = gpu_q3p5_bytes(wt.to_bytes())
            (folder / "entry.bin").write_bytes(entry)
            (folder / "layout.txt").write_text(f"{kk} {nn} {small.meta_row} {small.prow} "
                                               f"{small.meta_off} {small.payload_off}\n")
            for m in ms:
                gemm_check_data(folder, wt, rng, m)
    rows = [f"{kk} {nn} {layout_of(kk, nn, 32).meta_row} {layout_of(kk, nn, 32).prow} "
            f"{layout_of(kk, nn, 32).meta_off} {layout_of(kk, nn, 32).payload_off} "
            f"{layout_of(kk, nn, 32).size}" for kk, nn in SHAPES]
    (gemv / "shapes.txt").write_text("\n".join(rows) + "\n")
    from q35c.targets.cuda.build import FLAGS

    return [nvcc(), *FLAGS, "gemv_bench.cu", "-o", "gemv_bench"], gemv


RUN_ALL = r"""#!/bin/bash
# Runs every GPU check and benchmark of the CUDA target (see bench_cuda.py); results in $1.
set -u
RESULTS=${1:-results}
mkdir -p "$RESULTS"
HERE=$(cd "$(dirname "$0")" && pwd)
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv > "$RESULTS/gpu.txt" 2>&1
python3 "$HERE/device_checks.py" "$HERE" "$RESULTS"
"""

DEVICE_CHECKS = r'''"""Device half of bench_cuda.py: the prepared cases and benchmarks."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE, RESULTS = Path(sys.argv[1]), Path(sys.argv[2])
ALL_TOOLS = ("memcheck", "racecheck", "initcheck")
SANITIZE = {"mlp.float": ALL_TOOLS, "mlp.int8": ALL_TOOLS, "llama_tiny.float": ("memcheck",),
            "llama_tiny.int8": ("memcheck",), "mlp.pair43": ("memcheck",),
            "qmm_r9_k256_n200_g32.int8": ALL_TOOLS, "qmm_r1_k4096_n512_g32.int8": ALL_TOOLS,
            "qmm_r1_k4096_n512_g32.float": ALL_TOOLS, "qmm_r3_k100_n70_g16.float": ("memcheck",),
            "encoder_tiny.fused": ALL_TOOLS, "llama_tiny.fused": ("memcheck",),
            "smollm2_s1.float": ("memcheck",), "smollm2_s16.int8": ("memcheck",)}
SANITIZE_TC = ("qmm_r9_k256_n200_g32.float", "qmm_r70_k1040_n136_g32.float")


def compare(case, out):
    lines, ok = [], True
    exact = case.name.rsplit(".", 1)[-1].endswith("int8")
    for want_path in sorted((case / "want").glob("*.npy")):
        want = np.load(want_path)
        got = np.fromfile(out / (want_path.stem + ".raw"), dtype=want.dtype).reshape(want.shape)
        if exact:
            bad = int(np.sum(got.view(np.uint8) != want.view(np.uint8)))
            good = bad == 0
            lines.append(f"{want_path.stem}: bit-exact={good}")
        else:
            finite = np.abs(want[np.isfinite(want)])
            scale = float(np.max(finite, initial=0.0)) or 1.0
            diff = np.abs(got.astype(np.float64) - want)
            if want.dtype.kind == "f":  # equal infinities and NaN against NaN agree
                diff[(got == want) | (np.isnan(got) & np.isnan(want))] = 0
            err = float(np.max(diff, initial=0.0))
            good = bool(np.all((diff == 0) | (diff <= 1e-3 * np.abs(want) + 1e-3 * scale)))
            lines.append(f"{want_path.stem}: max_abs_err={err:.3e} max|ref|={scale:.3e} "
                         f"within_1e-3={good}")
        ok = ok and good
    return ok, lines


def peer_error(case):
    """How far the case's outputs are from onnxruntime's float model (ort/*.npy; weight
    quantization error, reported, not checked)."""
    lines = []
    for ref_path in sorted((case / "ort").glob("*.npy")):
        ref = np.load(ref_path)
        got = np.fromfile(case / "out" / (ref_path.stem + ".raw"),
                          dtype=ref.dtype).reshape(ref.shape)
        scale = float(np.max(np.abs(ref))) or 1.0
        err = float(np.max(np.abs(got.astype(np.float64) - ref)))
        lines.append(f"{ref_path.stem}: max_abs_err_vs_onnxruntime={err:.3e} "
                     f"max|ref|={scale:.3e}")
    return lines


def unpack_blobs():
    """model.bin of the cases whose blob travels as shared segments (blobs/, zlib), and
    the case files that travel gzipped (FILE.gz)."""
    import gzip
    import zlib
    for packed in sorted((HERE / "models").glob("*/**/*.gz")):
        packed.with_suffix("").write_bytes(gzip.decompress(packed.read_bytes()))
        packed.unlink()
    for listing in sorted((HERE / "models").glob("*/model.bin.segments")):
        with (listing.parent / "model.bin").open("wb") as f:
            for name in listing.read_text().split():
                f.write(zlib.decompress((HERE / "blobs" / name).read_bytes()))


def tool(name):
    """A CUDA tool on PATH or in the usual install folders."""
    found = shutil.which(name)
    if found:
        return found
    for pattern in (f"/usr/local/cuda*/bin/{name}", f"/usr/local/cuda*/{name}/{name}",
                    f"/opt/nvidia/*/{name}"):
        hits = sorted(Path("/").glob(pattern.lstrip("/")))
        if hits:
            return str(hits[-1])
    return None


def ensure_built():
    """Rebuild everything with this machine's nvcc if the prepared binaries do not run
    (a driver older than the CUDA that built them)."""
    log = RESULTS / "build.txt"
    decode = not (HERE / "gemv").is_dir()  # prepare --only decode: no GEMV part
    if not (HERE / "models").is_dir():  # a GEMV-only bundle (prepare --only gemv)
        probe = subprocess.run(["./gemv_bench"], cwd=HERE / "gemv", capture_output=True,
                               text=True)
        if probe.returncode == 2:  # its usage line: the binary runs here
            log.write_text("prepared binaries run\n")
            return
    elif (HERE / "models" / "mlp.float" / "main").exists():
        probe = subprocess.run(["./main", "model.bin", "in", "out"],
                               cwd=HERE / "models" / "mlp.float", capture_output=True, text=True)
        if probe.returncode == 0:
            log.write_text("prepared binaries run\n")
            return
    else:  # prepared without binaries (they would not fit the 64 MiB transfer)
        probe = subprocess.CompletedProcess([], -1, "", "not shipped")
    nvcc = tool("nvcc")
    log.write_text(f"prepared binaries fail ({probe.returncode}: {probe.stderr.strip()}); "
                   f"rebuilding with {nvcc}\n")
    flags = ["-std=c++17", "-O3", "-fmad=false", "-arch=sm_90"]
    jobs = [([nvcc, *flags, "main.cu", "model.cu", "-o", "main"], case)
            for case in sorted((HERE / "models").iterdir())] if (HERE / "models").is_dir() else []
    if not decode:
        jobs.append(([nvcc, *flags, "gemv_bench.cu", "-o", "gemv_bench"], HERE / "gemv"))
    if (HERE / "gemv_old").is_dir():
        jobs.append(([nvcc, *flags, "gemv_bench_old.cu", "-o", "gemv_bench_old"],
                     HERE / "gemv_old"))
    run_jobs(jobs, log)


def tc_cases():
    """The float cases with steps of more than 8 rows (the tensor-core GEMM's)."""
    return [case for case in sorted((HERE / "models").iterdir())
            if "q35_gemm_f16<" in (case / "model.cu").read_text()]


def build_tc():
    """main_tc of every tc case: its model.cu built with Q35_TENSOR_CORES=1."""
    log = RESULTS / "build_tc.txt"
    log.write_text("")
    flags = ["-std=c++17", "-O3", "-fmad=false", "-arch=sm_90", "-DQ35_TENSOR_CORES=1"]
    run_jobs([([tool("nvcc"), *flags, "main.cu", "model.cu", "-o", "main_tc"], case)
              for case in tc_cases()], log)


def run_jobs(jobs, log):
    """Runs the (command, folder) builds, 16 at a time, logging each one's status."""
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for (cmd, cwd), r in zip(jobs, pool.map(
                lambda j: subprocess.run(j[0], cwd=j[1], capture_output=True, text=True), jobs)):
            with log.open("a") as f:
                f.write(f"{cwd.name}: rc={r.returncode} {r.stderr[-500:]}\n")


class Log(list):
    """Lines that are also appended to a file at once (a timeout keeps what was done)."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        path.write_text("")

    def append(self, line):
        super().append(line)
        with self.path.open("a") as f:
            f.write(line + "\n")


def models():
    report = Log(RESULTS / "models.txt")
    san = Log(RESULTS / "sanitizer.txt")
    for case in sorted((HERE / "models").iterdir()):
        out = case / "out"
        out.mkdir(exist_ok=True)
        run = subprocess.run(["./main", "--bench", "100", "model.bin", "in", "out"], cwd=case,
                             capture_output=True, text=True)
        if run.returncode != 0:
            report.append(f"{case.name}: FAILED rc={run.returncode} {run.stderr.strip()}")
            continue
        ok, lines = compare(case, out)
        report.append(f"{case.name}: {'PASS' if ok else 'FAIL'} " + "; ".join(lines))
        if (case / "ort").is_dir():
            report.append("    " + "; ".join(peer_error(case)))
        timing = re.search(r"device runs \d+ +median ([0-9.]+) ms", run.stdout)
        if case.name.startswith(("smollm2_s1.", "smollm2_full_s1.")) and timing:
            ms = float(timing.group(1))
            layers = 30 if "full" in case.name else 2
            report.append(f"    decode tokens/s ({layers} layers, 256 cache slots, device "
                          f"median): {1000 / ms:.1f}")
            if (case / "bytes.txt").exists():
                fields = (case / "bytes.txt").read_text().split()
                read = int(fields[1]) + int(fields[3])
                report.append(f"    bytes read per step {read} (weights {fields[1]}, cache "
                              f"{fields[3]}): {read / (ms * 1e6):.1f} GB/s")
        report.append("    " + run.stdout.strip().replace("\n", "\n    "))
        sanitizer = tool("compute-sanitizer")
        if case.name in SANITIZE and sanitizer:
            for check in SANITIZE[case.name]:
                s = subprocess.run([sanitizer, "--tool", check, "--error-exitcode",
                                    "9", "./main", "model.bin", "in", "out"], cwd=case,
                                   capture_output=True, text=True)
                last = (s.stdout.strip().splitlines() or [""])[-1]
                san.append(f"{case.name} {check}: rc={s.returncode} {last}")


def models_tc():
    """The tc cases again with the tensor-core GEMM, held to the float tolerance."""
    report = Log(RESULTS / "models_tc.txt")
    sanitizer = tool("compute-sanitizer")
    for case in tc_cases():
        out = case / "out_tc"
        out.mkdir(exist_ok=True)
        run = subprocess.run(["./main_tc", "--bench", "100", "model.bin", "in", "out_tc"],
                             cwd=case, capture_output=True, text=True)
        if run.returncode != 0:
            report.append(f"{case.name} tc: FAILED rc={run.returncode} {run.stderr.strip()}")
            continue
        ok, lines = compare(case, out)
        report.append(f"{case.name} tc: {'PASS' if ok else 'FAIL'} " + "; ".join(lines))
        report.append("    " + run.stdout.strip().replace("\n", "\n    "))
        if sanitizer and case.name in SANITIZE_TC:
            for check in ALL_TOOLS:
                s = subprocess.run([sanitizer, "--tool", check, "--error-exitcode", "9",
                                    "./main_tc", "model.bin", "in", "out_tc"], cwd=case,
                                   capture_output=True, text=True)
                last = (s.stdout.strip().splitlines() or [""])[-1]
                report.append(f"    {check}: rc={s.returncode} {last}")


def gemv():
    """The GEMV checks against the interpreter (every K split, 1..8 rows; int8 bit-exact),
    compute-sanitizer on the ragged check, the GEMM checks, and the timings of the current
    kernels (gemv/) and, where prepared, of BASE_COMMIT's (gemv_old/)."""
    g = HERE / "gemv"
    if not g.is_dir():  # prepare --only decode
        return
    lines = Log(RESULTS / "gemv.txt")
    name = "gemv_bench"
    for check in sorted(g.glob("check*")):
        layout = (check / "layout.txt").read_text().split()
        for old in check.glob("y_*.bin"):
            old.unlink()
        r = subprocess.run([f"./{name}", "check", str(check), *layout], cwd=g,
                           capture_output=True, text=True)
        lines.append(f"{name} check {check.name} rc={r.returncode} {r.stderr.strip()}")
        for f in sorted(check.glob("y_*.bin")):
            path, ks, m = re.fullmatch(r"y_(f32|i8|mma)_ks(\d+)_(\d+)\.bin", f.name).groups()
            want = np.load(check / f"want_{'i8' if path == 'mma' else path}_{m}.npy")
            got = np.fromfile(f, dtype=np.float32).reshape(want.shape)
            label = f"{name} check {check.name} {path} ks={ks} M={m}"
            if path != "f32":
                same = bool(np.array_equal(got.view(np.uint32), want.view(np.uint32)))
                lines.append(f"{label}: bit-exact={same}")
            else:
                err = np.abs(got.astype(np.float64) - want)
                ok = bool(np.isfinite(got).all() and (
                    err <= 1e-3 * np.abs(want) + 1e-3 * np.abs(want).max()).all())
                lines.append(f"{label}: {'ok' if ok else 'FAIL'} max_err/max|ref|="
                             f"{err.max() / np.abs(want).max():.3e} max_rel_err="
                             f"{(err / np.maximum(np.abs(want), 1e-30)).max():.3e}")
    sanitizer = tool("compute-sanitizer")
    ragged = sorted(g.glob("check_*"))
    if sanitizer and ragged and os.environ.get("Q35_BENCH_PATH") != "2":  # GEMM-only run
        layout = (ragged[0] / "layout.txt").read_text().split()
        for check in ALL_TOOLS:
            s = subprocess.run([sanitizer, "--tool", check, "--error-exitcode", "9",
                                f"./{name}", "check", str(ragged[0]), *layout], cwd=g,
                               capture_output=True, text=True)
            last = (s.stdout.strip().splitlines() or [""])[-1]
            lines.append(f"{name} {ragged[0].name} {check}: rc={s.returncode} {last}")
    for line in gemm_checks(g, name):
        lines.append(line)
    for folder, binary in ((g, name), (HERE / "gemv_old", "gemv_bench_old")):
        if not (folder / binary).exists():
            continue
        for row in (folder / "shapes.txt").read_text().split("\n"):
            if not row.strip():
                continue
            k2, n2, mr, pr, mo, po, size = row.split()
            r = subprocess.run([f"./{binary}", "time", "-", k2, n2, mr, pr, mo, po, size],
                               cwd=folder, capture_output=True, text=True)
            out = re.sub(r"\n(gem[mv]) ", f"\n{binary} \\1 ", r.stdout.strip())
            lines.append(f"{binary} {out}" + (f" ERR {r.stderr.strip()}" if r.returncode else ""))


def gemm_checks(g, name):
    """The tensor-core GEMM on every prepared check against the interpreter: each output
    within (2^-10 + K 2^-24) sum_k |x_k w_k| (docs/cuda.md), and every output written."""
    lines = []
    for folder in [g / "check", *sorted(g.glob("gemm_*"))]:
        k, n, meta_row, prow, meta_off, payload_off = (folder / "layout.txt").read_text().split()
        for want_path in sorted(folder.glob("want_tc_*.npy")):
            rows = want_path.stem.rsplit("_", 1)[1]
            r = subprocess.run([f"./{name}", "gemm", str(folder), k, n, meta_row, prow,
                                meta_off, payload_off, rows], cwd=g, capture_output=True,
                               text=True)
            label = f"{name} check tc K={k} N={n} M={rows}"
            if r.returncode:
                lines.append(f"{label}: rc={r.returncode} {r.stderr.strip()} FAIL")
                continue
            want = np.load(want_path).astype(np.float64)
            bound = np.load(folder / f"bound_tc_{rows}.npy").astype(np.float64)
            got = np.fromfile(folder / f"y_tc_{rows}.bin", dtype=np.float32).reshape(want.shape)
            err = np.abs(got.astype(np.float64) - want)
            limit = (2.0 ** -10 + int(k) * 2.0 ** -24) * bound
            ok = bool(np.isfinite(got).all() and (err <= limit).all())
            lines.append(f"{label}: {'ok' if ok else 'FAIL'} max_err/limit="
                         f"{(err / np.maximum(limit, 1e-30)).max():.3e} max_err/max|ref|="
                         f"{err.max() / np.abs(want).max():.3e} within_1e-3_rel+1e-3_max="
                         f"{bool((err <= 1e-3 * np.abs(want) + 1e-3 * np.abs(want).max()).all())}")
    return lines


PREFILL = ((4096, 4096), (4096, 11008))  # shapes of the prefill GEMM peers (M 128, 512)
PEER_SHAPES = ((4096, 4096), (4096, 11008), (11008, 4096), (8192, 28672), (28672, 8192))
GEMM_SHAPES = ((4096, 4096), (4096, 11008), (4096, 14336), (11008, 4096), (14336, 4096),
               (8192, 28672), (28672, 8192))  # gemv_bench's SHAPES


def peers():
    lines = []
    try:
        import torch
    except ImportError:
        (RESULTS / "torch.txt").write_text("torch missing\n")
        return
    dev = torch.device("cuda")
    lines = Log(RESULTS / "torch.txt")
    lines.append(f"device {torch.cuda.get_device_name(0)} torch {torch.__version__}")
    l2 = 64 << 20

    def timed(fn, iters=300):
        for _ in range(10):
            fn(0)
        times = []
        for it in range(iters):
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            fn(it)
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) * 1000)
        times.sort()
        return times[len(times) // 2], times[0]

    def b2b(fn, batch=30):
        """Median per-call time of 11 batches of `batch` back-to-back calls."""
        fn(0)
        per = []
        for it in range(11):
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            for j in range(batch):
                fn(it * batch + j)
            b.record()
            b.synchronize()
            per.append(a.elapsed_time(b) * 1000 / batch)
        return sorted(per)[5]

    src = torch.empty(1 << 28, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    med, mn = timed(lambda it: dst.copy_(src), 100)
    rate = 2 * src.numel() / (med * 1e3)
    lines.append(f"copy 256MiB d2d median_us {med:.1f} GBps(read+write) {rate:.1f}")
    if not (HERE / "gemv").is_dir():  # prepare --only decode: its peer is torch_decode
        return
    gemv_only = not (HERE / "models").is_dir()
    gemm_only = os.environ.get("Q35_BENCH_PATH") == "2"  # the GEMM's peers alone
    fp16_shapes = GEMM_SHAPES if gemm_only else PEER_SHAPES if gemv_only else (
        (4096, 4096), (4096, 11008), (4096, 14336), (11008, 4096), (14336, 4096))
    for k, n in fp16_shapes:
        nbytes = k * n * 2
        copies = max(2, -(-4 * l2 // nbytes))
        ws = [torch.randn(n, k, dtype=torch.float16, device=dev) for _ in range(copies)]
        for m in (16, 64, 128, 256, 512) if gemm_only else (1, 4, 16) if gemv_only else (
                1, 2, 4, 8, 16, *((128, 512) if (k, n) in PREFILL else ())):
            x = torch.randn(m, k, dtype=torch.float16, device=dev)
            med, mn = timed(lambda it: torch.nn.functional.linear(x, ws[it % copies]))
            back = b2b(lambda it: torch.nn.functional.linear(x, ws[it % copies]))
            lines.append(f"torch_fp16 K={k} N={n} M={m} median_us {med:.2f} min_us {mn:.2f} "
                         f"weight_bytes {nbytes} GBps_median {nbytes / (med * 1e3):.1f} "
                         f"TFLOPs_median {2 * m * k * n / (med * 1e6):.2f} b2b_us {back:.2f} "
                         f"GBps_b2b {nbytes / (back * 1e3):.1f}")
        del ws
    for k, n in () if gemm_only else PEER_SHAPES:  # int4 tinygemm (gpt-fast's kernel):
        # group 32, bf16 scale+zero
        try:
            nbytes = n * k // 2 + (k // 32) * n * 4
            copies = max(2, -(-4 * l2 // nbytes))
            packed = []
            for _ in range(copies):
                codes = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device=dev)
                packed.append(torch.ops.aten._convert_weight_to_int4pack(codes, 8))
            sz = torch.rand(k // 32, n, 2, dtype=torch.bfloat16, device=dev)
            for m in (1, 4, 16):
                x = torch.randn(m, k, dtype=torch.bfloat16, device=dev)
                def int4(it):
                    return torch.ops.aten._weight_int4pack_mm(x, packed[it % copies], 32, sz)
                med, mn = timed(int4)
                back = b2b(int4)
                lines.append(f"torch_int4 K={k} N={n} M={m} median_us {med:.2f} min_us "
                             f"{mn:.2f} weight_bytes {nbytes} GBps_median "
                             f"{nbytes / (med * 1e3):.1f} b2b_us {back:.2f} GBps_b2b "
                             f"{nbytes / (back * 1e3):.1f}")
            del packed
        except Exception as err:  # report, go on
            lines.append(f"torch_int4 K={k} N={n}: {err!r}"[:400])


def torch_decode():
    """The PyTorch peer of the smollm2_full_s1 cases: SmolLM2-135M's decode step (LLaMA:
    30 layers, hidden 576, 9 query and 3 key/value heads of 64, SwiGLU 1536, 49152-token
    tied embedding) written with torch ops in float16, random weights (a step's work does
    not depend on them), a static 256-slot KV cache and greedy sampling on the device;
    timed eager and replayed from a CUDA graph (the next token and position stay on the
    device, so a replay is a whole step). tokens/s from the median of 11 batches of 50."""
    if not (HERE / "models" / "smollm2_full_s1.float").is_dir():
        return
    import torch
    import torch.nn.functional as F
    lines = Log(RESULTS / "torch_decode.txt")
    dev, dt = torch.device("cuda"), torch.float16
    hidden, layers, heads, kv, hd, inter, vocab, ctx = 576, 30, 9, 3, 64, 1536, 49152, 256
    gen = torch.Generator(device=dev).manual_seed(0)

    def w(*shape):
        return torch.randn(*shape, device=dev, dtype=dt, generator=gen) * 0.02

    ones = torch.ones(hidden, device=dev, dtype=dt)
    blocks = [dict(q=w(heads * hd, hidden), k=w(kv * hd, hidden), v=w(kv * hd, hidden),
                   o=w(hidden, heads * hd), gate=w(inter, hidden), up=w(inter, hidden),
                   down=w(hidden, inter)) for _ in range(layers)]
    emb = w(vocab, hidden)
    kcache = torch.zeros(layers, 1, kv, ctx, hd, device=dev, dtype=dt)
    vcache = torch.zeros_like(kcache)
    inv_freq = 1.0 / (100000.0 ** (torch.arange(0, hd, 2, device=dev).float() / hd))
    slots = torch.arange(ctx, device=dev)
    token = torch.zeros(1, 1, dtype=torch.long, device=dev)
    pos = torch.zeros(1, dtype=torch.long, device=dev)

    def rms(x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dt) * ones

    def rope(x, cos, sin):
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), -1)

    def step():
        x = emb[token]
        freqs = pos.float()[:, None] * inv_freq
        cos, sin = freqs.cos().to(dt), freqs.sin().to(dt)
        mask = (slots <= pos)[None, None, None, :]
        for i, b in enumerate(blocks):
            h = rms(x)
            q = rope(F.linear(h, b["q"]).view(1, 1, heads, hd).transpose(1, 2), cos, sin)
            k = rope(F.linear(h, b["k"]).view(1, 1, kv, hd).transpose(1, 2), cos, sin)
            v = F.linear(h, b["v"]).view(1, 1, kv, hd).transpose(1, 2)
            kcache[i].index_copy_(2, pos, k)
            vcache[i].index_copy_(2, pos, v)
            o = F.scaled_dot_product_attention(q, kcache[i], vcache[i], attn_mask=mask,
                                               enable_gqa=True)
            x = x + F.linear(o.transpose(1, 2).reshape(1, 1, heads * hd), b["o"])
            h = rms(x)
            x = x + F.linear(F.silu(F.linear(h, b["gate"])) * F.linear(h, b["up"]), b["down"])
        token.copy_(F.linear(rms(x), emb).argmax(-1))
        pos.add_(1)
        pos.remainder_(ctx)

    def per_step(fn, batch=50):
        per = []
        for _ in range(11):
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(batch):
                fn()
            b.record()
            b.synchronize()
            per.append(a.elapsed_time(b) / batch)
        return sorted(per)[5], min(per)

    lines.append(f"device {torch.cuda.get_device_name(0)} torch {torch.__version__}")
    weights = sum(t.numel() * 2 for b in blocks for t in b.values()) + emb.numel() * 2
    cache = 2 * kcache.numel() * 2
    with torch.no_grad():
        for _ in range(3):
            step()
        med, mn = per_step(step)
        lines.append(f"torch_fp16 eager decode step median_ms {med:.4f} min_ms {mn:.4f} "
                     f"tokens/s {1000 / med:.1f} bytes {weights + cache} (weights {weights} "
                     f"cache {cache}) GB/s {(weights + cache) / (med * 1e6):.1f}")
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        med, mn = per_step(graph.replay)
        lines.append(f"torch_fp16 cuda-graph decode step median_ms {med:.4f} min_ms {mn:.4f} "
                     f"tokens/s {1000 / med:.1f} GB/s {(weights + cache) / (med * 1e6):.1f}")


for step in (unpack_blobs, ensure_built, build_tc, models, models_tc, gemv, peers,
             torch_decode):
    try:
        step()
    except Exception as err:  # report and go on: one call must bring back everything
        (RESULTS / f"{step.__name__}.error.txt").write_text(repr(err))
'''


GEMM_CASES = r"^(qmm_r9_|qmm_r70_|llama_tiny@2x5\.).*float$"
"""`prepare --only gemm`: the float model cases with steps of more than 8 rows."""


def cases() -> list[tuple[str, str]]:
    """(model, kind) of every prepared model case."""
    out = [(model, kind) for model in MODELS for kind in ("float", "int8", "fused")
           if not (kind == "fused" and "@" in model)]
    out += [("mlp", "pair43"), ("mlp", "pair43int8"), ("onnx_ops", "float")]
    return out + [(model, kind) for model in QMATMULS for kind in ("float", "int8")]


def tc_build(build: tuple[list[str], Path]) -> tuple[list[str], Path]:
    """The case's build, followed, where model.cu has tensor-core GEMM steps, by its
    Q35_TENSOR_CORES=1 build (main_tc): both must compile warning-free here."""
    command, case = build
    if "q35_gemm_f16<" not in (case / "model.cu").read_text():
        return build
    tc = [*command[:-1], "main_tc"]
    tc.insert(1, "-DQ35_TENSOR_CORES=1")
    return ["bash", "-c", f"{shlex.join(command)} && {shlex.join(tc)}"], case


def prepare(out: Path, jobs: int, only: str | None, keep_binaries: bool = False,
            base: str = BASE_COMMIT) -> None:
    if only in (None, "gemv", "decode") and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if only == "gemv":  # the GEMV checks and timings (old and new kernels) and the peers
        builds = [prepare_gemv(out), prepare_gemv_old(out, base)]
        keep_binaries = True
    elif only == "gemm":  # the GEMV/GEMM checks, the float models with GEMM steps
        builds = [prepare_gemv(out)]
        keep_binaries = True
    else:
        builds = [prepare_gemv(out)] if only is None else []
    for model, kind in cases() if only not in ("gemv", "decode") else ():
        if only is None or re.search(GEMM_CASES if only == "gemm" else only,
                                     f"{model}.{kind}"):
            builds.append(tc_build(prepare_model(out, model, kind)))
    for kind in ("float", "int8"):
        if only == "decode":
            builds += prepare_smollm2_full(out, kind)
        elif (SMOLLM2_DIR / "decode.dynamo.onnx").exists() and only not in ("gemv", "gemm") and (
                only is None or re.search(only, f"smollm2.{kind}")):
            builds += [tc_build(b) for b in prepare_smollm2(out, kind)]
    (out / "run_all.sh").write_text(RUN_ALL)
    (out / "device_checks.py").write_text(DEVICE_CHECKS)

    def build(item):
        command, cwd = item
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
        return cwd, result.returncode, result.stderr

    failed = 0
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for cwd, rc, err in pool.map(build, builds):
            print(f"built {cwd.relative_to(out)}: rc={rc}" + (f"\n{err}" if rc else ""))
            failed += rc != 0
    for packed in out.glob("models/*/**/*.gz"):  # built: the packed copies travel alone
        packed.with_suffix("").unlink(missing_ok=True)
    if not keep_binaries:  # built here to check; device_checks.py rebuilds them there
        for binary in [*out.glob("models/*/main"), *out.glob("models/*/main_tc"),
                       out / "gemv" / "gemv_bench"]:
            binary.unlink(missing_ok=True)
    sys.exit(1 if failed else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="generate and build everything into OUT")
    p.add_argument("out", type=Path)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--only", help="(re)build only the model cases matching this regex; "
                   "'gemv': a bundle of the GEMV checks and timings only (current kernels, "
                   "BASE_COMMIT's, cuBLAS fp16 and torch int4 peers), with its binaries; "
                   "'gemm': the GEMM's checks, timings and peers; 'decode': the whole "
                   "SmolLM2-135M's decode step against a PyTorch fp16 decode step")
    p.add_argument("--keep-binaries", action="store_true",
                   help="keep the nvcc-built runners (by default removed after the build "
                        "check, so the folder fits 64 MiB; run_all.sh builds them with the "
                        "GPU machine's nvcc)")
    p.add_argument("--base", default=BASE_COMMIT,
                   help="with --only gemv: the commit whose GEMV kernels gemv_old/ times "
                        f"(default {BASE_COMMIT})")
    args = parser.parse_args()
    prepare(args.out, args.jobs, args.only, args.keep_binaries, args.base)


if __name__ == "__main__":
    main()
