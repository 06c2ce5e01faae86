"""The C target's float GEMM for Q3P5 weights (runtime/q35rt_gemm.c: 8 rows and more) against
the interpreter, on shapes that are not multiples of its blocks (row blocks of 32 / 16 rows,
column tiles of 14 / 6 / 16, K chunks of 128 and K blocks of up to 2048, row chunks of
256), at 1 and 2 threads, on every kernel level this CPU runs (Q35_KERNELS caps the
run-time choice: AVX-512, AVX2, portable). Every level computes each output as the same
float32 FMA chain in k order, so where the C library's fmaf is the hardware's (this build
uses -march=native) all levels give the same bits."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from test_c_target import SANITIZE, _qmatmul_module

from q35c.semantics import run_module
from q35c.targets.c import CTarget

AVX512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512vbmi", "avx512_vbmi2",
          "avx512_vnni"}


def _flags() -> set[str]:
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return set()


def levels() -> list[str]:
    """The Q35_KERNELS caps this machine can run, best first (None: no cap)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return ["portable"]
    flags = _flags()
    out = []
    if AVX512 <= flags:
        out.append("avx512")
    if {"avx2", "fma"} <= flags:
        out.append("avx2")
    return out + ["portable"]


def _run(module, store, x, level: str, threads: int, monkeypatch) -> np.ndarray:
    monkeypatch.setenv("OMP_NUM_THREADS", str(threads))
    if level == "avx512":
        monkeypatch.delenv("Q35_KERNELS", raising=False)
    else:
        monkeypatch.setenv("Q35_KERNELS", level)
    return CTarget().run(None, module, store, {"arg0": x}, None)["out0"]


@pytest.mark.parametrize("rows,k,n", [
    (8, 33, 5),        # the fewest rows of the GEMM, one partial group, N < a tile
    (9, 100, 15),      # a last row block of 16 lanes with 7 rows past M; N = a tile + 1
    (31, 130, 14),     # two 128-k chunks (the second: 2 of k), exactly one AVX-512 tile
    (33, 640, 43),     # a 32-row block and a 16-row block; 5 chunks, 3 tiles and a part
    (40, 2100, 31),    # 17 chunks: two K blocks (partial sums kept between them)
    (65, 576, 57),     # SmolLM2's K (18 groups); 3 row blocks, the last of 1 row
    (300, 96, 60),     # two row chunks (256 + 44 rows)
])
def test_gemm_matches_the_interpreter_at_every_level_and_thread_count(rows, k, n,
                                                                      monkeypatch):
    module, store = _qmatmul_module(rows, k, n, 32, False)
    rng = np.random.default_rng(rows * k + n)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    x[1, : k // 2] = 0.0  # a partly zero row
    x[-1] = 0.0  # a zero last row: its outputs are exactly 0
    want = run_module(module, store, {"arg0": x})["out0"]
    got = {}
    for level in levels():
        for threads in (1, 2):
            y = _run(module, store, x, level, threads, monkeypatch)
            np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(),
                                       err_msg=f"{level}, {threads} thread(s)")
            assert not np.any(y[-1]), (level, threads)
            got[level, threads] = y
    # the thread split never changes a bit
    for level in levels():
        np.testing.assert_array_equal(got[level, 1], got[level, 2], err_msg=level)
    # the SIMD levels compute the same FMA chains; the portable one does as well where
    # fmaf is the hardware's (x86-64 with FMA under this build's -march=native)
    simd = [lv for lv in levels() if lv != "portable"]
    same = simd + (["portable"] if "avx2" in simd else [])
    for level in same[1:]:
        np.testing.assert_array_equal(got[level, 1], got[same[0], 1],
                                      err_msg=f"{level} vs {same[0]}")


def test_gemm_outputs_are_one_k_ordered_fma_chain_in_float32(monkeypatch):
    """The stated summation order, checked bit for bit: y = fma(x[k], w[k], y) for k = 0,
    1, ..., K - 1 from +0, in float32, w the format's decoded float32 weights. numpy
    emulates each fused step in float64: the product of two float32 is exact there, and
    the sum is checked exact (TwoSum error 0), so its one rounding to float32 is the fused
    operation's."""
    from q35c.compiler.quant import dequantize

    rows, k, n = 12, 200, 20
    module, store = _qmatmul_module(rows, k, n, 32, False)
    w = dequantize(store["w"]).astype(np.float64)
    x = (np.random.default_rng(3).integers(-4, 5, (rows, k)) / 8).astype(np.float32)
    acc = np.zeros((rows, n), np.float32)
    for kk in range(k):
        a, b = acc.astype(np.float64), x[:, kk : kk + 1].astype(np.float64) * w[kk]
        s = a + b
        bv = s - a
        assert not np.any((a - (s - bv)) + (b - bv)), "a float64 sum was not exact"
        acc = s.astype(np.float32)
    for level in levels():
        if level == "portable" and "avx2" not in levels():
            continue  # without hardware FMA the portable level rounds products apart
        y = _run(module, store, x, level, 1, monkeypatch)
        np.testing.assert_array_equal(y, acc, err_msg=level)


@pytest.mark.parametrize("level", ["avx512", "avx2"])
def test_gemm_runs_clean_under_sanitizers_at_two_threads(level, monkeypatch):
    """Row blocks, tiles and K blocks past every end, under AddressSanitizer and UBSan."""
    if level not in levels():
        pytest.skip(f"this CPU does not run the {level} kernels")
    monkeypatch.setenv("Q35C_CFLAGS", SANITIZE)
    monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    rows, k, n = 41, 2100, 45
    module, store = _qmatmul_module(rows, k, n, 32, False)
    x = np.random.default_rng(5).standard_normal((rows, k)).astype(np.float32)
    want = run_module(module, store, {"arg0": x})["out0"]
    y = _run(module, store, x, level, 2, monkeypatch)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@settings(max_examples=6, deadline=None)
@given(rows=st.integers(8, 41), n=st.integers(1, 30),
       k=st.one_of(st.integers(1, 700), st.integers(2040, 2120)), seed=st.integers(0, 2**16))
def test_gemm_odd_shapes_property(rows, k, n, seed):
    """Any shape: K not a multiple of the group (32), of the 128-k chunk or of the K block
    (2048 on AVX2: k up to 2120 crosses it), M not a multiple of the row block (16, or a
    last block of at most 8 rows), N below or between the column tiles (6 / 14 / 16). Each
    SIMD level matches the interpreter and gives the portable level's bits (the same FMA
    chains; this build's fmaf is the hardware's where the CPU has AVX2)."""
    module, store = _qmatmul_module(rows, k, n, 32, False)
    x = np.random.default_rng(seed).standard_normal((rows, k)).astype(np.float32)
    want = run_module(module, store, {"arg0": x})["out0"]
    with pytest.MonkeyPatch.context() as mp:
        got = {level: _run(module, store, x, level, 1, mp) for level in levels()}
    for level, y in got.items():
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(),
                                   err_msg=level)
    if "avx2" in got:
        for level in got:
            np.testing.assert_array_equal(got[level], got["avx2"], err_msg=level)
