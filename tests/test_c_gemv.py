"""The C target's int8 GEMV kernels at small M (decode, batched decode: 1 to 8 rows),
bit-exact with the interpreter on odd shapes at every kernel level this CPU runs
(Q35_KERNELS caps the run-time choice: AVX-512 VBMI/VNNI, AVX2, portable C).

The float GEMV of 2 to 7 rows (the AVX2 kernel decodes each block of a column once for
every row): each row of the product equals that row's 1-row product bit for bit, and the
interpreter within the float path's 1e-5.

On AVX-512, 2 to 8 rows take the groups-in-lanes kernel (q35_i8_lanes_columns: a column's
decoded levels serve every row), 1 row the two-column GEMV kernel, 9 rows and more the
GEMM; each case here runs one of them. Several matmuls share one module, so one C build
covers a whole list of shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from xdsl.builder import Builder
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType, f32
from xdsl.ir import Block, Region
from xdsl.rewriter import InsertPoint

from q35c.compiler.quant import quantize
from q35c.compiler.weights import WeightStore
from q35c.dialects import quant3p5
from q35c.semantics import run_module
from q35c.targets.c import CTarget

SANITIZE = "-O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"

# (rows, K, N): K with partial groups, partial 4-group chunks, a mostly-padding second
# 16-group block (576: 18 groups), a partial last 7-byte block; N not a multiple of 16.
SHAPES = [(2, 5, 3), (3, 33, 17), (4, 77, 10), (5, 130, 1), (6, 500, 33), (7, 576, 50),
          (2, 1000, 19), (3, 2080, 40), (7, 4096, 18), (8, 300, 20), (1, 77, 5), (1, 576, 33),
          (9, 77, 20)]


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("Q35C_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "c-cache"))


def _cpu_flags() -> set[str]:
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return set()


AVX512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512vbmi", "avx512_vbmi2",
          "avx512_vnni"}
LEVELS = ["native", "avx2", "portable"]


def _require_level(level: str) -> None:
    flags = _cpu_flags()
    if level == "native" and not AVX512 <= flags:
        pytest.skip("no AVX-512 VBMI/VNNI: the native level is AVX2 or portable, run below")
    if level == "avx2" and not {"avx2", "fma"} <= flags:
        pytest.skip("no AVX2")


def _use_level(level: str, monkeypatch) -> None:
    """Run the C target's kernels at `level` (Q35_KERNELS; "native" = the CPU's best)."""
    _require_level(level)
    if level == "native":
        monkeypatch.delenv("Q35_KERNELS", raising=False)
    else:
        monkeypatch.setenv("Q35_KERNELS", level)


def _module(shapes, seed: int):
    """@main(x_0, x_1, ...) -> (y_0, y_1, ...), y_i = matmul_int8(quantize(x_i), W_i)."""
    store = WeightStore()
    block = Block(arg_types=[TensorType(f32, (m, k)) for m, k, _ in shapes])
    b = Builder(InsertPoint.at_end(block))
    outs = []
    for i, (_, k, n) in enumerate(shapes):
        rng = np.random.default_rng(seed + 97 * i)
        store[f"w{i}"] = quantize(rng.standard_t(4, (k, n)).astype(np.float32), group_size=32)
        w = b.insert(quant3p5.WeightOp(f"w{i}", quant3p5.PackedWeightType((k, n), 32))).result
        qa = b.insert(quant3p5.QuantizeActivationsOp(block.args[i]))
        outs.append(b.insert(quant3p5.MatmulInt8Op(qa.quantized, qa.scale, w)).result)
    b.insert(func.ReturnOp(*outs))
    fn = func.FuncOp("main", ([a.type for a in block.args], [o.type for o in outs]),
                     Region(block))
    module = ModuleOp([fn])
    module.verify()
    return module, store


def _inputs(shapes, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = {}
    for i, (m, k, _) in enumerate(shapes):
        x = rng.standard_normal((m, k)).astype(np.float32)
        x[0, : k // 3] = 0.0  # a partly zero row
        if m > 2:
            x[1] = 0.0  # an all-zero row (scale 1)
            x[2] = np.where(rng.random(k) < 0.5, -1e3, 1e3)  # every q at +-127
        if m > 4:
            x[3] *= 1e-30  # tiny, far from the others: the per-row scales differ
        inputs[f"arg{i}"] = x
    return inputs


def _check(shapes, seed: int) -> None:
    module, store = _module(shapes, seed)
    inputs = _inputs(shapes, seed)
    want = run_module(module, store, inputs)
    got = CTarget().run(None, module, store, inputs, None)
    for name, ref in want.items():
        np.testing.assert_array_equal(got[name], ref, err_msg=name)


@pytest.mark.parametrize("level", LEVELS)
def test_small_m_int8_gemv_is_bit_exact_at_every_kernel_level(level, monkeypatch):
    _use_level(level, monkeypatch)
    _check(SHAPES, 35)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_small_m_int8_gemv_through_the_pool_under_sanitizers(threads, monkeypatch):
    """Big enough (2^18 multiply-adds and more) for the thread pool: 2 to 8 rows at 1 and 2
    threads, bit-exact, under AddressSanitizer and UBSan (the lanes kernel's term buffer,
    the activation layout past K, the last partial code block)."""
    monkeypatch.setenv("Q35C_CFLAGS", SANITIZE)
    monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    monkeypatch.setenv("OMP_NUM_THREADS", threads)
    monkeypatch.delenv("Q35_KERNELS", raising=False)
    _check([(2, 4096, 70), (5, 2500, 45), (8, 1100, 300)], 4096)


def test_rows_of_a_batch_do_not_interact():
    """Row r of a 7-row product equals the 1-row product of that row alone (the kernels for
    1 and for 2 to 8 rows differ; the per-row int8 scale makes rows independent)."""
    k, n = 1000, 37
    many = _module([(7, k, n)], 11)
    x = _inputs([(7, k, n)], 11)["arg0"]
    got = CTarget().run(None, *many, {"arg0": x}, None)["out0"]
    one = _module([(1, k, n)], 11)
    for r in range(7):
        row = CTarget().run(None, *one, {"arg0": x[r : r + 1]}, None)["out0"]
        np.testing.assert_array_equal(got[r : r + 1], row, err_msg=f"row {r}")


def _float_module(shapes, seed: int):
    """@main(x_0, x_0 row 0, x_0 row 1, ..., x_1, ...) -> (x_0 @ W_0, row 0 @ W_0, ...):
    every row of each product also alone, against the same weights."""
    store = WeightStore()
    types = []
    for m, k, _ in shapes:
        types += [TensorType(f32, (m, k))] + [TensorType(f32, (1, k))] * m
    block = Block(arg_types=types)
    b = Builder(InsertPoint.at_end(block))
    outs, arg = [], 0
    for i, (m, k, n) in enumerate(shapes):
        rng = np.random.default_rng(seed + 97 * i)
        store[f"w{i}"] = quantize(rng.standard_t(4, (k, n)).astype(np.float32), group_size=32)
        w = b.insert(quant3p5.WeightOp(f"w{i}", quant3p5.PackedWeightType((k, n), 32))).result
        for _ in range(m + 1):
            outs.append(b.insert(quant3p5.MatmulOp(block.args[arg], w)).result)
            arg += 1
    b.insert(func.ReturnOp(*outs))
    fn = func.FuncOp("main", (types, [o.type for o in outs]), Region(block))
    module = ModuleOp([fn])
    module.verify()
    return module, store


def _check_float_rows(shapes, seed: int) -> None:
    module, store = _float_module(shapes, seed)
    inputs, arg = {}, 0
    for i, (m, k, _) in enumerate(shapes):
        x = _inputs([(m, k, 0)], seed + i)["arg0"]
        inputs[f"arg{arg}"] = x
        for r in range(m):
            inputs[f"arg{arg + 1 + r}"] = x[r : r + 1]
        arg += m + 1
    want = run_module(module, store, inputs)
    got = CTarget().run(None, module, store, inputs, None)
    out = 0
    for m, k, n in shapes:
        many = got[f"out{out}"]
        ref = want[f"out{out}"]
        np.testing.assert_allclose(many, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max(),
                                   err_msg=f"{m}x{k}x{n}")
        for r in range(m):
            np.testing.assert_array_equal(many[r : r + 1], got[f"out{out + 1 + r}"],
                                          err_msg=f"{m}x{k}x{n} row {r}")
        out += m + 1


# (rows, K, N): 2 to 7 rows (8 and more take the GEMM); K odd, not a multiple of the
# group, with a partial last 8-group block and one below a single block.
FLOAT_SHAPES = [(2, 5, 3), (3, 33, 17), (4, 77, 10), (5, 500, 9), (6, 576, 20), (7, 1000, 19),
                (7, 4096, 6), (2, 300, 33)]


@pytest.mark.parametrize("level", LEVELS)
def test_small_m_float_gemv_rows_equal_their_one_row_products(level, monkeypatch):
    _use_level(level, monkeypatch)
    _check_float_rows(FLOAT_SHAPES, 7)


@settings(max_examples=6, deadline=None)
@given(st.lists(st.tuples(st.integers(2, 7), st.integers(1, 700), st.integers(1, 12)),
                min_size=1, max_size=3), st.integers(0, 1000))
def test_small_m_float_gemv_on_drawn_shapes(shapes, seed):
    """The kernel this CPU runs (no cap), on drawn row counts, K and N."""
    _check_float_rows(shapes, seed)


def test_small_m_float_gemv_under_sanitizers(monkeypatch):
    """AddressSanitizer and UBSan on the float GEMV of 2 to 7 rows: the decoded-level buffer
    shared by the rows and the activation layout past K (2 threads: the pool)."""
    monkeypatch.setenv("Q35C_CFLAGS", SANITIZE)
    monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.delenv("Q35_KERNELS", raising=False)
    _check_float_rows([(7, 2500, 45), (3, 1100, 300)], 4096)


def test_float_gemv_error_is_float32_sized_per_row():
    """The AVX-512 float GEMV writes each group's activations as 24-bit fixed point (three
    int8 digits, step 2^-23 of the group's largest): on activations spanning nine decades
    within a group, a row scaled by 1e-30 and periodic outliers, each row's error stays at
    float32 size relative to that row's own largest output (measured: 1.2e-7 to 2.5e-7)."""
    k, n = 1000, 37
    module, store = _float_module([(3, k, n)], 5)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, k)).astype(np.float32)
    x[0] *= (10.0 ** rng.uniform(-6, 3, k)).astype(np.float32)
    x[1] *= np.float32(1e-30)
    x[2, ::64] = 1e4
    inputs = {"arg0": x} | {f"arg{1 + r}": x[r : r + 1] for r in range(3)}
    want = run_module(module, store, inputs)
    got = CTarget().run(None, module, store, inputs, None)
    for r in range(3):
        ref = want[f"out{1 + r}"][0]
        err = np.abs(got[f"out{1 + r}"][0] - ref).max() / np.abs(ref).max()
        assert err < 1e-6, (r, err)
