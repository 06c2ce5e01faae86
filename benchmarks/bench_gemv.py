"""Batch-1 GEMV (the LLM decode case) and M-row GEMM (prefill): q35c's generated C kernels
against onnxruntime and numpy, at 1 and 2 threads, with the machine's memory read bandwidth
measured in the same run.

Contenders, for y[M, N] = x[M, K] @ W[K, N] (M = 1 for a GEMV):
  q35c int8   Q3P5 weights (group 32), int8 activations, int32 accumulation (--act int8)
  q35c float  Q3P5 weights, float activations
  ort nbits0  onnxruntime MatMulNBits, 4 bit, block 32, accuracy_level 0 (float compute)
  ort nbits4  the same, accuracy_level 4 (int8 activations)
  ort fp32    onnxruntime MatMul on float32 weights
  numpy fp32  x @ W (OpenBLAS)
  ggml q4_K / q3_K   ggml's CPU mul_mat (llama.cpp's kernels, activations quantized to
              8 bits), only with --ggml-lib DIR (a ggml build: DIR/include, DIR/lib64)

q35c's kernels are the ones `q35c --target c` emits, built with -O3 -march=native -fopenmp
and timed by the generated runner (`main --bench`, in C). onnxruntime is timed through
its Python API with IOBinding (this adds a few microseconds per run to its times); numpy
runs in a subprocess so its BLAS thread count can be set. Contenders take turns, round by
round; each reports the median over rounds of its median time per run, and its minimum.
"it / q35c" columns are time ratios: above 1 means q35c is faster.

    python benchmarks/bench_gemv.py [--shapes 4096x4096,4096x11008] [--threads 1,2]
                                    [--gemm 128x4096x4096,512x4096x11008]
                                    [--rounds 3] [--runs 200] [--e2e] [--ggml-lib DIR]

--shapes are K x N GEMVs; --gemm M x K x N GEMMs (none unless given; --shapes '' skips the
GEMVs). q35c's kernel choice is the runtime's: on an AVX-512 VNNI/VBMI CPU the AVX-512
kernels, else AVX2, else portable C (set Q35_KERNELS=avx2 to compare).

Matrices of more than 2^28 weights (e.g. 16384x40960, whose 314 MiB of Q3P5 exceed the
260 MiB last-level cache) use random Q3P5 codes and skip the fp32 peers; runs per round
are scaled down with the size (at least 10).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CFLAGS = ["-std=c99", "-O3", "-march=native", "-ffp-contract=off", "-fopenmp"]


def cc() -> str:
    return os.environ.get("CC") or shutil.which("cc") or "gcc"


# Above this many weights the float matrix is not made (the fp32 peers are skipped: 4 bytes
# a weight, and onnxruntime's protobuf models stop at 2 GB) and the Q3P5 tensor holds random
# codes: the kernels' speed does not depend on the values, and quantizing a billion weights
# in numpy would take longer than the benchmark.
RANDOM_ABOVE = 1 << 28


@functools.cache
def weights(k: int, n: int):
    """(float32 W or None, its Q3P5 encoding)."""
    from q35c.compiler.quant import Q3P5Tensor, quantize

    rng = np.random.default_rng(4096)
    if k * n <= RANDOM_ABOVE:
        w = rng.standard_normal((k, n), dtype=np.float32)
        return w, quantize(w, group_size=32)
    groups = -(-k // 32)
    return None, Q3P5Tensor(
        shape=(k, n), group_size=32,
        payload=rng.integers(0, 256, (n, groups * 14), dtype=np.uint8),
        meta=rng.integers(0, 256, (n, -(-groups // 8) * 7), dtype=np.uint8),
        super_scale=np.full(n, 0.01, np.float32), offset_base=np.zeros(n, np.float32),
        offset_step=np.full(n, 0.001, np.float32))


def gemv_module(k: int, n: int, mode: str, m: int = 1):
    """@main(x[M, K]) -> x @ W with W in Q3P5, on the float or the int8 path."""
    from xdsl.builder import Builder
    from xdsl.dialects import func
    from xdsl.dialects.builtin import ModuleOp, TensorType, f32
    from xdsl.ir import Block, Region
    from xdsl.rewriter import InsertPoint

    from q35c.compiler.weights import WeightStore
    from q35c.dialects import quant3p5

    store = WeightStore()
    store["w"] = weights(k, n)[1]
    block = Block(arg_types=[TensorType(f32, (m, k))])
    b = Builder(InsertPoint.at_end(block))
    packed = b.insert(quant3p5.WeightOp("w", quant3p5.PackedWeightType((k, n), 32))).result
    x = block.args[0]
    if mode == "int8":
        q = b.insert(quant3p5.QuantizeActivationsOp(x))
        y = b.insert(quant3p5.MatmulInt8Op(q.quantized, q.scale, packed)).result
    else:
        y = b.insert(quant3p5.MatmulOp(x, packed)).result
    b.insert(func.ReturnOp(y))
    module = ModuleOp([func.FuncOp("main", ([x.type], [y.type]), Region(block))])
    module.verify()
    return module, store


def build_q35c(k: int, n: int, mode: str, work: Path, m: int = 1) -> Path:
    """Emit and build the C target for the GEMV (GEMM); returns the directory with ./main."""
    from q35c.targets.c.emit import emit

    module, store = gemv_module(k, n, mode, m)
    directory = work / f"q35c_{mode}_{m}x{k}x{n}"
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "in").mkdir(parents=True)
    (directory / "out").mkdir()
    for name, data in emit(module, store, None, f"gemv_{mode}").files.items():
        (directory / name).write_bytes(data)
    x = np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)
    (directory / "in" / "arg0.raw").write_bytes(x.tobytes())
    subprocess.run([cc(), *CFLAGS, "main.c", "model.c", "-o", "main", "-lm"], cwd=directory,
                   check=True)
    return directory


def time_q35c(directory: Path, threads: int, runs: int) -> tuple[float, float]:
    """(median, minimum) seconds per run, as the generated runner measures them."""
    out = subprocess.run([str(directory / "main"), "--bench", str(runs),
                          str(directory / "model.bin"), str(directory / "in"),
                          str(directory / "out")], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return (float(out.stdout.split("median")[1].split()[0]) * 1e-3,
            float(out.stdout.split("min")[1].split()[0]) * 1e-3)


def ort_session(model, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


@functools.cache
def ort_models(k: int, n: int, m: int = 1):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    blocks = k // 32
    models = {}
    for level in (0, 4):
        b = rng.integers(0, 256, (n, blocks, 16), dtype=np.uint8)
        scales = (rng.random(n * blocks, dtype=np.float32) * 0.02).astype(np.float32)
        node = helper.make_node("MatMulNBits", ["A", "B", "scales"], ["Y"],
                                domain="com.microsoft", K=k, N=n, bits=4, block_size=32,
                                accuracy_level=level)
        graph = helper.make_graph(
            [node], "nbits",
            [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])],
            [numpy_helper.from_array(b, "B"), numpy_helper.from_array(scales, "scales")])
        models[f"ort nbits{level}"] = (helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17),
                                  helper.make_opsetid("com.microsoft", 1)]),
            n * blocks * 16 + n * blocks * 4)
    w = weights(k, n)[0]
    if w is None:
        return models
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "W"], ["Y"])], "fp32",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])],
        [numpy_helper.from_array(w, "W")])
    models["ort fp32"] = (helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                          4 * k * n)
    return models


def time_ort(session, k: int, runs: int, m: int = 1) -> tuple[float, float]:
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)
    binding = session.io_binding()
    binding.bind_cpu_input("A", x)
    binding.bind_output("Y", "cpu")
    for _ in range(5):
        session.run_with_iobinding(binding)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run_with_iobinding(binding)
        times.append(time.perf_counter() - t0)
    del ort
    return statistics.median(times), min(times)


NUMPY_TIMER = """
import statistics, sys, time, numpy as np
k, n, runs, m = map(int, sys.argv[1:5])
w = np.random.default_rng(4096).standard_normal((k, n), dtype=np.float32)
x = np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)
out = np.empty((m, n), np.float32)
for _ in range(5):
    np.matmul(x, w, out=out)
times = []
for _ in range(runs):
    t0 = time.perf_counter(); np.matmul(x, w, out=out); times.append(time.perf_counter() - t0)
print(statistics.median(times), min(times))
"""


def time_numpy(k: int, n: int, threads: int, runs: int, m: int = 1) -> tuple[float, float]:
    env = {**os.environ, **{v: str(threads) for v in (
        "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    out = subprocess.run([sys.executable, "-c", NUMPY_TIMER, str(k), str(n), str(runs), str(m)],
                         capture_output=True, text=True, check=True, env=env)
    median, least = out.stdout.split()
    return float(median), float(least)


GGML_TYPES = ("q4_K", "q3_K")


def build_ggml(lib: Path, work: Path) -> Path:
    """benchmarks/gemv/ggml_gemv.c linked against the ggml build in `lib`."""
    exe = work / "ggml_gemv"
    if not exe.exists():
        subprocess.run([cc(), "-O2", "-std=c99", "-D_POSIX_C_SOURCE=199309L",
                        str(HERE / "gemv" / "ggml_gemv.c"), f"-I{lib / 'include'}",
                        f"-L{lib / 'lib64'}", f"-Wl,-rpath,{lib / 'lib64'}", "-lggml-cpu",
                        "-lggml-base", "-lm", "-o", str(exe)], check=True)
    return exe


def time_ggml(exe: Path, kind: str, m: int, k: int, n: int, threads: int,
              runs: int) -> tuple[float, float, int]:
    """(median, minimum) seconds per run of ggml's mul_mat, and its weight bytes."""
    out = subprocess.run([str(exe), kind, str(k), str(n), str(m), str(threads), str(runs)],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[1]) * 1e-3, float(out[3]) * 1e-3, int(out[5])


def bandwidth(work: Path, threads: int) -> float:
    """Read bandwidth in bytes/s: sum over a 2 GiB buffer (>> the last-level cache)."""
    exe = work / "membw"
    if not exe.exists():
        subprocess.run([cc(), *CFLAGS, str(HERE / "gemv" / "membw.c"), "-o", str(exe)],
                       check=True)
    out = subprocess.run([str(exe), "2048", "5"], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return float(out.stdout.split()[0]) * 1e9


def bench_shape(k: int, n: int, threads_list: list[int], rounds: int, runs: int,
                work: Path, m: int = 1, ggml: Path | None = None) -> None:
    from q35c.compiler.quant import storage_bytes

    q35c_bytes = storage_bytes((k, n), 32)
    q35c_dirs = {f"q35c {mode}": build_q35c(k, n, mode, work, m) for mode in ("int8", "float")}
    models = ort_models(k, n, m)
    with_fp32 = weights(k, n)[0] is not None
    # about as long per shape: at least 10 runs of a GEMV, 3 of a GEMM
    runs = max(10 if m == 1 else 3, min(runs, runs * 4096 * 11008 // (k * n * m)))
    for threads in threads_list:
        sessions = {name: ort_session(model, threads) for name, (model, _) in models.items()}
        samples: dict[str, list[tuple[float, float]]] = {}
        ggml_bytes: dict[str, int] = {}
        bw = []
        for _ in range(rounds):
            if m == 1:
                bw.append(bandwidth(work, threads))
            for name, directory in q35c_dirs.items():
                samples.setdefault(name, []).append(time_q35c(directory, threads, runs))
            for name, session in sessions.items():
                samples.setdefault(name, []).append(time_ort(session, k, runs, m))
            if with_fp32:
                samples.setdefault("numpy fp32", []).append(time_numpy(k, n, threads, runs, m))
            for kind in GGML_TYPES if ggml else ():
                median_s, min_s, ggml_bytes[f"ggml {kind}"] = time_ggml(ggml, kind, m, k, n,
                                                                        threads, runs)
                samples.setdefault(f"ggml {kind}", []).append((median_s, min_s))
        bytes_of = {"q35c int8": q35c_bytes, "q35c float": q35c_bytes, "numpy fp32": 4 * k * n,
                    **{name: b for name, (_, b) in models.items()}, **ggml_bytes}
        median = {name: statistics.median(t for t, _ in v) for name, v in samples.items()}
        least = {name: min(t for _, t in v) for name, v in samples.items()}
        note = "" if with_fp32 else "; random Q3P5 codes, no fp32 peers"
        head = (f"{k}x{n} (K x N)" if m == 1 else f"{m}x{k}x{n} (M x K x N)")
        bw_note = (f"read bandwidth {statistics.median(bw) / 1e9:.1f} GB/s; " if bw else "")
        print(f"\n### {head}, {threads} thread(s); {bw_note}load average "
              f"{os.getloadavg()[0]:.2f}; {runs} runs per round; q35c weights "
              f"{q35c_bytes / 2**20:.0f} MiB{note}\n")
        if m == 1:
            read_bw = statistics.median(bw)
            print("| kernel | weight MB | median ms | min ms | it / q35c int8 | it / q35c float "
                  "| weight GB/s | of bandwidth | bandwidth limit ms |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        else:
            print("| kernel | weight MB | median ms | min ms | it / q35c int8 | it / q35c float "
                  "| GFLOP/s |")
            print("|---|---:|---:|---:|---:|---:|---:|")
        for name, t in median.items():
            wb = bytes_of[name]
            row = (f"| {name} | {wb / 1e6:.1f} | {t * 1e3:.3f} | {least[name] * 1e3:.3f} | "
                   f"{t / median['q35c int8']:.2f} | {t / median['q35c float']:.2f} | ")
            if m == 1:
                print(row + f"{wb / t / 1e9:.1f} | {wb / t / read_bw:.2f} | "
                      f"{wb / read_bw * 1e3:.3f} |")
            else:
                print(row + f"{2 * m * k * n / t / 1e9:.1f} |")
        sys.stdout.flush()


def bench_e2e(work: Path, threads_list: list[int], runs: int) -> None:
    """Runs/s of the example LLaMA (batch 1, 8 tokens): q35c C (float and int8 activations)
    against onnxruntime on the fp32 ONNX model."""
    import onnx

    from q35c.compiler.driver import Options, compile_to_module
    from q35c.compiler.weights import store_of
    from q35c.targets.c.emit import emit

    model_path = HERE.parent / "examples" / "models" / "llama_tiny.onnx"
    ids = np.random.default_rng(0).integers(0, 256, (1, 8))
    dirs = {}
    for label, passes in (("q35c float", None), ("q35c int8", "default,int8-activations")):
        _, module = compile_to_module(model_path, Options(passes=passes,
                                                          shapes={"input_ids": (1, 8)}))
        directory = work / f"e2e_{label.split()[1]}"
        shutil.rmtree(directory, ignore_errors=True)
        (directory / "in").mkdir(parents=True)
        (directory / "out").mkdir()
        for name, data in emit(module, store_of(module), None, "llama_tiny").files.items():
            (directory / name).write_bytes(data)
        (directory / "in" / "input_ids.raw").write_bytes(ids.astype("<i8").tobytes())
        subprocess.run([cc(), *CFLAGS, "main.c", "model.c", "-o", "main", "-lm"],
                       cwd=directory, check=True)
        dirs[label] = directory
    print("\n### example LLaMA (llama_tiny.onnx, batch 1, 8 tokens)\n")
    print("| threads | q35c float runs/s | q35c int8 runs/s | onnxruntime fp32 runs/s |")
    print("|---:|---:|---:|---:|")
    for threads in threads_list:
        session = ort_session(onnx.load(model_path), threads)
        feed = {"input_ids": ids}
        for _ in range(10):
            session.run(None, feed)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - t0)
        ort_t = statistics.median(times)
        q = {label: time_q35c(d, threads, runs)[0] for label, d in dirs.items()}
        print(f"| {threads} | {1 / q['q35c float']:.0f} | {1 / q['q35c int8']:.0f} | "
              f"{1 / ort_t:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="4096x4096,4096x11008")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--gemm", default="", help="M x K x N shapes, e.g. 128x4096x4096")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--e2e", action="store_true", help="also the example LLaMA end to end")
    parser.add_argument("--ggml-lib", type=Path, help="a ggml build (include/, lib64/): "
                        "also time ggml's q4_K and q3_K mul_mat")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    import onnxruntime

    print(f"q35c GEMV benchmark; {cc()} {' '.join(CFLAGS)}; onnxruntime "
          f"{onnxruntime.__version__}; numpy {np.__version__}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="q35c-gemv-") as tmp:
        work = Path(tmp)
        ggml = build_ggml(args.ggml_lib, work) if args.ggml_lib else None
        for shape in filter(None, args.shapes.split(",")):  # --shapes '' --e2e: e2e only
            k, n = (int(v) for v in shape.split("x"))
            bench_shape(k, n, threads, args.rounds, args.runs, work, ggml=ggml)
        for shape in filter(None, args.gemm.split(",")):
            m, k, n = (int(v) for v in shape.split("x"))
            bench_shape(k, n, threads, args.rounds, args.runs, work, m, ggml)
        if args.e2e:
            bench_e2e(work, threads, args.runs)


if __name__ == "__main__":
    main()
