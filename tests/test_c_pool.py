"""The C runtime's thread pool (targets/c/runtime/q35rt.h): the thread count is read at
every quantized matmul (q35_set_threads / <prefix>_set_threads / the runner's --threads,
else OpenMP's count), so one process can run a model at 1 thread and then at 2 (as
benchmarks/bench_llm.py does); the pool really runs that many threads on a job; results
do not depend on the count."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, q35c, require_tool
from test_c_target import _qmatmul_module

from q35c.semantics import run_module
from q35c.targets.c.emit import emit
from q35c.targets.c.session import CSession

RUNTIME = ROOT / "targets" / "c" / "runtime"


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("Q35C_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "c-cache"))


def threads_max() -> int:
    return int(re.search(r"#define Q35_THREADS_MAX (\d+)",
                         (RUNTIME / "q35rt.h").read_text()).group(1))


# A probe that includes model.c and drives the pool directly: a job of `units` units whose
# every unit records its thread and then waits (up to `wait_ms`) until `target` distinct
# threads have joined, so a thread that claimed a unit cannot claim another before the
# others arrive. It prints the number of distinct threads that ran units.
PROBE = r"""
#include "model.c"
#include <pthread.h>
#include <stdio.h>
#include <time.h>

static pthread_t seen_threads[64];
static int seen_count, target, wait_ms;
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static void unit_fn(const q35_qjob *job, int64_t n0, int64_t n1)
{
    int i, known = 0;
    double t0 = now_ms();
    (void)job, (void)n0, (void)n1;
    pthread_mutex_lock(&seen_lock);
    for (i = 0; i < seen_count; i++)
        known |= pthread_equal(seen_threads[i], pthread_self());
    if (!known && seen_count < 64)
        seen_threads[seen_count++] = pthread_self();
    pthread_mutex_unlock(&seen_lock);
    while (__atomic_load_n(&seen_count, __ATOMIC_SEQ_CST) < target && now_ms() - t0 < wait_ms)
        ;
}

static int job_threads(int units, int want, int ms)
{
    q35_qjob job;
    memset(&job, 0, sizeof job);
    job.t.n = units;
    seen_count = 0;
    target = want;
    wait_ms = ms;
    q35_parallel_columns(unit_fn, &job, 1, (int64_t)1 << 30);
    return seen_count;
}

int main(void)
{
    /* OpenMP's count (OMP_NUM_THREADS=1 in the environment) */
    printf("%d", job_threads(4, 4, 300));
    printf(" %d", q35_set_threads(3));
    printf(" %d", job_threads(3, 3, 10000));
    q35_set_threads(2); /* fewer: the third thread stays out */
    printf(" %d", job_threads(4, 3, 300));
    /* back to OpenMP's count, changed after the start as bench_llm.py does */
    q35_set_threads(0);
    omp_set_num_threads(2);
    printf(" %d", job_threads(2, 2, 10000));
    printf(" %d", q35_set_threads(100000));
    printf(" %d\n", q35_pool.threads);
    return 0;
}
"""


def test_pool_runs_the_requested_threads_and_follows_later_changes(tmp_path, monkeypatch):
    """Until the fix the pool was sized once, at its first job (1 thread here), and later
    counts (omp_set_num_threads, as bench_llm.py sets them) were ignored."""
    tool = require_tool("gcc")
    module, store = _qmatmul_module(1, 64, 16, 32, True)
    for name, data in emit(module, store, None, "probe").files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "probe.c").write_text(PROBE)
    subprocess.run([tool, "-std=c99", "-O1", "-fopenmp", "-ffp-contract=off", "-Wall", "-Wextra",
                    "-Werror", "-Wno-unused-function", "probe.c", "-o", "probe", "-lm"],
                   cwd=tmp_path, check=True, capture_output=True)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = subprocess.run([tmp_path / "probe"], capture_output=True, text=True, check=True,
                         timeout=120).stdout.split()
    assert [int(v) for v in out] == [1, 3, 3, 2, 2, threads_max(), 3]


def test_runner_threads_flag_is_checked(tmp_path):
    q35c(ROOT / "examples" / "mlp.mlir", "--target", "c", "-o", tmp_path / "out")
    text = (tmp_path / "out" / "main.c").read_text()
    assert "--threads T" in text and "mlp_set_threads" in text.replace("q35_prefix", "mlp")
    header = (tmp_path / "out" / "model.h").read_text()
    set_threads = re.search(r"int (\w+)_set_threads\(int n\);", header)
    assert set_threads, "model.h declares <prefix>_set_threads"
    assert f"at most Q35_THREADS_MAX ({threads_max()})" in header
    docs = (ROOT / "docs" / "c-target.md").read_text()
    assert "Q35_THREADS_MAX" in docs and "--threads" in docs


@pytest.mark.parametrize("int8", [True, False], ids=["int8", "float"])
@pytest.mark.parametrize("rows", [1, 3, 8])
def test_session_thread_counts_in_one_process_give_identical_results(rows, int8):
    """Sessions of one library at 1, 2 and 1 thread again in one process (libgomp already
    loaded, so OMP_NUM_THREADS would not change anything): set_threads returns the count
    and the outputs are bit-identical across counts (int8: and to the interpreter)."""
    module, store = _qmatmul_module(rows, 1024, 300, 32, int8)  # 300K multiply-adds a row
    x = np.random.default_rng(rows).standard_normal((rows, 1024)).astype(np.float32)
    emitted = emit(module, store, None, "pool")
    outs = []
    with CSession.from_emitted(emitted, threads=1) as session:
        for threads in (1, 2, 1, 2):
            assert session.set_threads(threads) == threads
            outs.append(session.run({"arg0": x})["out0"])
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    if int8:
        np.testing.assert_array_equal(outs[0], run_module(module, store, {"arg0": x})["out0"])


def test_runner_rejects_a_bad_thread_count(tmp_path):
    q35c(ROOT / "examples" / "mlp.mlir", "--target", "c", "-o", tmp_path / "out")
    out = tmp_path / "out"
    subprocess.run(["make", "-s"], cwd=out, check=True, capture_output=True)
    for bad in ("0", "x", "-1"):
        result = subprocess.run([out / "main", "--threads", bad, out / "model.bin", "--seed",
                                 "1", tmp_path / "o"], capture_output=True, text=True)
        assert result.returncode == 2 and "usage" in result.stderr
    result = subprocess.run([out / "main", "--threads", "2", out / "model.bin", "--seed", "1",
                             tmp_path / "o2"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert Path(tmp_path / "o2").is_dir()
