"""CPU time of the C runtime's quantized matmul alone (q35_qmatmul_f32: the float GEMM from
8 rows), for comparing runtime revisions without Python or onnxruntime in the loop.

For each revision (a git revision of this repository, or `.` for the working tree) it writes
the runtime files as the C printer concatenates them (the codebook tables filled in) plus a
small driver into a temporary folder, builds it with the C target's flags and runs it: the
driver makes a Q3P5 weight of random codes (K x N, group 32), random activations (M x K),
and prints the least and the mean process CPU time of `reps` calls. Revisions take turns,
`--alternations` times, and the table gives each one's least time over all its runs (on a
shared machine the least is the run with the fewest interruptions). Q35_KERNELS and
OMP_NUM_THREADS (default 1 here) pass through. `--wall` times wall-clock (monotonic) time
instead, for thread counts above 1 (process CPU time adds up the threads).

    python benchmarks/time_gemm_runtime.py [--shapes 128x4096x4096,512x4096x4096]
                                           [--revisions 1fac3fc,.] [--reps 3]
                                           [--alternations 3] [--wall]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNTIME = "targets/c/runtime"
FILES = ("q35rt.h", "q35rt_avx512.c", "q35rt_avx2.c", "q35rt_gemm.c", "q35rt.c")

DRIVER = r"""
#include <stdio.h>
#include <time.h>
static double q35t_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
int main(int argc, char **argv)
{
    int64_t m, k, n, groups, prow, mrow, i;
    int reps, r;
    size_t bytes;
    uint8_t *e, *work;
    uint16_t g = 32;
    uint32_t k32, n32;
    float *f, *x, *y;
    double best = 1e30, total = 0;
    if (argc != 5)
        return 2;
    m = atoll(argv[1]), k = atoll(argv[2]), n = atoll(argv[3]), reps = atoi(argv[4]);
    groups = (k + 31) / 32, prow = groups * 32 / 16 * 7, mrow = (groups + 7) / 8 * 7;
    bytes = (size_t)(16 + 12 * n + n * mrow + n * prow + 4096);
    e = calloc(bytes, 1);
    k32 = (uint32_t)k, n32 = (uint32_t)n;
    memcpy(e + 6, &g, 2);
    memcpy(e + 8, &k32, 4);
    memcpy(e + 12, &n32, 4);
    f = (float *)(void *)(e + 16);
    for (i = 0; i < n; i++)
        f[i] = 0.01f, f[n + i] = 0.001f * (float)(i % 7), f[2 * n + i] = 0.002f;
    srand(1);
    for (i = 16 + 12 * n; i < (int64_t)bytes - 4096; i++)
        e[i] = (uint8_t)(rand() & 0xff);
    x = malloc((size_t)(m * k) * sizeof(float));
    y = malloc((size_t)(m * n) * sizeof(float));
    for (i = 0; i < m * k; i++)
        x[i] = (float)(rand() % 1000) / 1000.0f - 0.5f;
    work = malloc((size_t)q35_qmatmul_work_bytes(m, k, 32, 0));
    for (r = 0; r < reps; r++) {
        double t0 = q35t_now(), t;
        q35_qmatmul_f32(y, x, m, e, work);
        t = q35t_now() - t0;
        best = t < best ? t : best;
        total += t;
    }
    printf("%s %.3f %.3f %g\n", q35_kernel_variant(), best * 1e3, total / reps * 1e3, y[0]);
    return 0;
}
"""


def runtime_source(revision: str) -> str:
    from q35c.compiler.quant import CODEBOOK, LEGACY_LEVELS, SCALE_STEPS

    def read(name: str) -> str:
        if revision == ".":
            return (ROOT / RUNTIME / name).read_text()
        return subprocess.run(["git", "show", f"{revision}:{RUNTIME}/{name}"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout

    text = "".join(read(name) for name in FILES)
    rows = ",\n".join("    " + ", ".join(f"{{{a}, {b}}}" for a, b in CODEBOOK[i:i + 8])
                      for i in range(0, 128, 8))
    bits = ",\n".join("    " + ", ".join(f"0x{int(v):08x}u" for v in
                                         SCALE_STEPS.view(np.uint32)[i:i + 8])
                      for i in range(0, 32, 8))
    legacy = ",\n".join("    " + ", ".join(f"{{{a}, {b}}}" for a, b in LEGACY_LEVELS[i:i + 8])
                        for i in range(0, 128, 8))
    return (text.replace("Q35_CODEBOOK_ROWS", rows).replace("Q35_SCALE_STEP_BITS", bits)
            .replace("Q35_LEGACY_LEVEL_ROWS", legacy))


def build(revision: str, folder: Path, wall: bool = False) -> Path:
    from q35c.targets.c.build import DEFAULT_FLAGS, compiler

    source = folder / f"time_{len(list(folder.iterdir()))}.c"
    driver = DRIVER.replace("CLOCK_PROCESS_CPUTIME_ID", "CLOCK_MONOTONIC") if wall else DRIVER
    source.write_text(runtime_source(revision) + driver)
    binary = source.with_suffix("")
    subprocess.run([compiler(), *DEFAULT_FLAGS, "-fopenmp", "-D_GNU_SOURCE", str(source), "-o",
                    str(binary), "-lm"], check=True)
    return binary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="128x4096x4096,512x4096x4096")
    parser.add_argument("--revisions", default="1fac3fc,.")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--alternations", type=int, default=3)
    parser.add_argument("--wall", action="store_true",
                        help="wall-clock time (for OMP_NUM_THREADS above 1)")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    revisions = args.revisions.split(",")
    with tempfile.TemporaryDirectory(prefix="q35c-time-") as tmp:
        binaries = {rev: build(rev, Path(tmp), args.wall) for rev in revisions}
        print(f"load average before {os.getloadavg()}")
        print("| M x K x N | " + " | ".join(f"{rev} least ms" for rev in revisions) + " |")
        print("|---|" + "---:|" * len(revisions))
        for shape in args.shapes.split(","):
            m, k, n = shape.split("x")
            least = dict.fromkeys(revisions, float("inf"))
            for _ in range(args.alternations):
                for rev, binary in binaries.items():
                    out = subprocess.run([str(binary), m, k, n, str(args.reps)], env=env,
                                         capture_output=True, text=True, check=True).stdout
                    least[rev] = min(least[rev], float(out.split()[1]))
            print(f"| {shape} | " + " | ".join(f"{least[rev]:.3f}" for rev in revisions) + " |")
            sys.stdout.flush()
        print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
