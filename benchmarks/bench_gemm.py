"""M-row GEMM (prefill, batches): q35c's float GEMM on Q3P5 weights (the path `--target c`
takes by default) against onnxruntime's fp32 MatMul (MLAS) and 4-bit MatMulNBits, in one
process, the contenders alternating.

Contenders, for y[M, N] = x[M, K] @ W[K, N]:
  q35c float   Q3P5 weights (group 32), float activations: the runtime's GEMM
               (q35rt_gemm.c), loaded into this process as a shared library (CSession)
  q35c int8    the same weights, int8 activations (--act int8): the int8 GEMM, for reference
  q35c float @REV, q35c int8 @REV   (with --before REV) the float and int8 paths of the
               runtime at git revision REV, same generated program otherwise
  ort fp32     onnxruntime MatMul on the float32 weights (prepacked by MLAS)
  ort nbits0   onnxruntime MatMulNBits, 4 bit, block 32, accuracy_level 0 (float compute)
  ort nbits4   the same, accuracy_level 4 (int8 activations)

Every contender runs in this process, on inputs and outputs allocated once (onnxruntime
through IOBinding with a bound output buffer, q35c through its run entry point without
copying the output). Per round every contender does `runs` timed runs after one warm-up,
in turn; the table gives the median over rounds of each round's median, the minimum over
all runs, GFLOP/s (2 M K N / median) and "it / q35c", the contender's median over q35c
float's (above 1: q35c is faster). "CPU ms" is the median of the process's CPU time per
run (all its threads, spinning included): on a shared machine, where a run longer than a
scheduler time slice waits for other jobs, it shows the work a run took (at one thread;
at two, a pool that spins while it waits counts that too). Each thread count runs in its
own process (the thread pools are sized once per process), and the load average
(`uptime`) is printed before and after it: the machine may be shared.

    python benchmarks/bench_gemm.py [--shapes 128x576x576,512x4096x4096] [--threads 1,2]
                                    [--rounds 5] [--runs 20] [--before REV]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# SmolLM2-135M's matmul shapes (hidden 576, MLP 1536, vocabulary 49152) at 128 and 512
# rows, and 4096 x 4096.
DEFAULT_SHAPES = ",".join(
    f"{m}x{k}x{n}" for m in (128, 512)
    for k, n in ((576, 576), (576, 1536), (1536, 576), (576, 49152), (4096, 4096)))


def load_average() -> str:
    return os.getloadavg().__repr__()


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    get = lambda key: fields.get(key, "?").strip()  # noqa: E731
    return (f"{get('Model name')}, family {get('CPU family')} model {get('Model')}, "
            f"{get('CPU(s)')} CPUs, L1d {get('L1d cache')}, L2 {get('L2 cache')}, "
            f"L3 {get('L3 cache')}")


def q35c_runner(m: int, k: int, n: int, mode: str, before: str | None):
    """A callable running the q35c GEMM once (and its output array)."""
    sys.path.insert(0, str(HERE))
    from bench_gemv import gemv_module

    from q35c.targets.c import printer
    from q35c.targets.c.emit import emit
    from q35c.targets.c.session import CSession

    module, store = gemv_module(k, n, mode, m)
    saved = printer.RUNTIME_DIR, printer.RUNTIME_FILES
    try:
        if before:  # the runtime of revision REV in place of this checkout's
            old = Path(tempfile.mkdtemp(prefix="q35c-runtime-"))
            names = subprocess.run(
                ["git", "ls-tree", "--name-only", f"{before}:targets/c/runtime"],
                capture_output=True, text=True, check=True, cwd=HERE.parent).stdout.split()
            for name in names:
                (old / name).write_bytes(subprocess.run(
                    ["git", "show", f"{before}:targets/c/runtime/{name}"],
                    capture_output=True, check=True, cwd=HERE.parent).stdout)
            printer.RUNTIME_DIR = old
            printer.RUNTIME_FILES = tuple(f for f in saved[1] if (old / f).exists())
        session = CSession.from_emitted(emit(module, store, None, f"gemm_{mode}"))
    finally:
        printer.RUNTIME_DIR, printer.RUNTIME_FILES = saved
    x = np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)
    pointers = (ctypes.c_void_p * 1)(x.ctypes.data)
    run, handle, outs = session._run, session._handle, session._out_ptrs

    def once():
        if run(handle, pointers, outs) != 0:
            raise RuntimeError("q35c run failed")

    return once, (session, x)


def ort_runner(model, m: int, k: int, n: int, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)
    y = np.empty((m, n), np.float32)
    binding = session.io_binding()
    binding.bind_cpu_input("A", x)
    binding.bind_output("Y", "cpu", 0, np.float32, [m, n], y.ctypes.data)

    def once():
        session.run_with_iobinding(binding)

    return once, (session, binding, x, y)


def ort_models(m: int, k: int, n: int) -> dict:
    """onnxruntime fp32 MatMul on bench_gemv's weights, and MatMulNBits at levels 0 and 4
    (bench_gemv builds them)."""
    sys.path.insert(0, str(HERE))
    from bench_gemv import ort_models as gemv_models

    models = gemv_models(k, n, m)
    if "ort fp32" not in models:
        raise SystemExit(f"{k}x{n} is too large for bench_gemv's float weights")
    return {name: models[name][0] for name in ("ort fp32", "ort nbits0", "ort nbits4")}


def bench_shape(m: int, k: int, n: int, threads: int, rounds: int, runs: int,
                before: str | None) -> None:
    flops = 2.0 * m * k * n
    runs = max(3, min(runs, int(4e10 / flops)))
    contenders = {}
    keep = []
    for mode in ("float", "int8"):
        once, ref = q35c_runner(m, k, n, mode, None)
        contenders[f"q35c {mode}"] = once
        keep.append(ref)
    if before:
        for mode in ("float", "int8"):
            once, ref = q35c_runner(m, k, n, mode, before)
            contenders[f"q35c {mode} @{before}"] = once
            keep.append(ref)
    for name, model in ort_models(m, k, n).items():
        once, ref = ort_runner(model, m, k, n, threads)
        contenders[name] = once
        keep.append(ref)
    medians = {name: [] for name in contenders}
    cpu = {name: [] for name in contenders}
    least = dict.fromkeys(contenders, float("inf"))
    for once in contenders.values():
        once()
    load0 = load_average()
    for _ in range(rounds):
        for name, once in contenders.items():
            once()
            times, cpus = [], []
            for _ in range(runs):
                c0, t0 = time.process_time(), time.perf_counter()
                once()
                times.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            medians[name].append(statistics.median(times))
            cpu[name].append(statistics.median(cpus))
            least[name] = min(least[name], min(times))
    base = statistics.median(medians["q35c float"])
    print(f"\n#### {m}x{k}x{n} (M x K x N), {threads} thread(s); {rounds} rounds of {runs} "
          f"runs; load average {load0} -> {load_average()}\n")
    base_cpu = statistics.median(cpu["q35c float"])
    print("| kernel | median ms | min ms | GFLOP/s | it / q35c float | CPU ms | CPU it / q35c |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in contenders:
        med, med_cpu = statistics.median(medians[name]), statistics.median(cpu[name])
        print(f"| {name} | {med * 1e3:.3f} | {least[name] * 1e3:.3f} | "
              f"{flops / med / 1e9:.1f} | {med / base:.2f} | {med_cpu * 1e3:.3f} | "
              f"{med_cpu / base_cpu:.2f} |")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="M x K x N, comma-separated")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per round (at most)")
    parser.add_argument("--before", default=None,
                        help="also time the float and int8 paths of the runtime at this revision")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",") if s]
    if args.child:
        for m, k, n in shapes:
            bench_shape(m, k, n, args.child, args.rounds, args.runs, args.before)
        return
    import onnxruntime

    from q35c.targets.c.build import DEFAULT_FLAGS, compiler

    print(f"`q35c GEMM benchmark; {compiler()} {' '.join(DEFAULT_FLAGS)} -fopenmp; "
          f"onnxruntime {onnxruntime.__version__}; {cpu_model()}`")
    for threads in (int(t) for t in args.threads.split(",")):
        print(f"\n### {threads} thread(s); load average before {load_average()}")
        sys.stdout.flush()
        command = [sys.executable, __file__, "--shapes", args.shapes, "--rounds",
                   str(args.rounds), "--runs", str(args.runs), "--child", str(threads)]
        if args.before:
            command += ["--before", args.before]
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        print(f"\nload average after {load_average()}")


if __name__ == "__main__":
    main()
