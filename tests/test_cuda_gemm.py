"""The opt-in tensor-core GEMM of the CUDA target without a GPU: its launch plan covers
every output once, steps of more than 8 rows select it under Q35_TENSOR_CORES (the fp32
GEMV otherwise) and set up its shared memory at load, the generated code compiles
warning-free with it on, every GEMV and GEMM instance compiles warning-free, and the
GEMM's reading of the packed codes (which words a thread loads for its group of a unit,
the window shift, the group code) decodes like the interpreter. Their numerics are checked
on the GPU by benchmarks/bench_cuda.py (gemv_bench check and gemm, models_tc)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from conftest import MODELS_DIR
from hypothesis import given, settings, strategies as st
from test_cuda_target import nvcc_or_skip

from q35c.compiler.driver import Options, compile_to_module
from q35c.compiler.quant import CODEBOOK, SCALE_STEPS, dequantize, quantize
from q35c.compiler.weights import store_of
from q35c.targets.cuda.blob import RECORD, gpu_q3p5_bytes, layout_of
from q35c.targets.cuda.build import FLAGS
from q35c.targets.cuda.emit import emit
from q35c.targets.cuda.printer import (
    GEMM_BN,
    GEMM_THREADS,
    GEMV_MAX_ROWS,
    CudaPrinter,
    gemm_launch,
    gemv_max_ks,
)
from q35c.targets.native.program import Program


@pytest.mark.parametrize("rows", [9, 16, 17, 32, 33, 64, 65, 128, 129, 512, 1000])
@pytest.mark.parametrize("n", [1, 63, 64, 65, 127, 128, 129, 200, 4096, 11008])
def test_gemm_launch_covers_every_row_and_column_once(rows, n):
    launch = gemm_launch(rows, n)
    tile = 32 * launch.mt
    assert launch.block == GEMM_THREADS == 256 and launch.mt in (1, 2, 4)
    assert launch.rows == tile
    assert (launch.grid[0] - 1) * tile < rows <= launch.grid[0] * tile
    assert (launch.grid[1] - 1) * GEMM_BN < n <= launch.grid[1] * GEMM_BN
    # the smallest row tile that holds the rows, 128 rows beyond
    assert launch.mt == 4 or rows <= tile and (launch.mt == 1 or rows > 16 * launch.mt)


def decode_like_the_gemm(entry: bytes, k: int, n: int) -> np.ndarray:
    """float16 [K, N] from a tiled GPU blob entry, read as q35_gemm_fetch and q35_gemm_store
    read it: the thread of column c and group half h of unit u (64 weights) loads the 4
    little-endian words at byte 28 (u % 4) + 4 (3 h + j) (j = 0..3) of the column's 112
    code bytes of chunk u // 4 (16-byte piece b // 16 at record + (32 (b // 16) + c % 32)
    * 16), shifts them right by 16 h bits, takes code i at bits 7 i; the group code of
    group 2 u + h at bit 7 ((2 u + h) % 8) of the 8 bytes at record + 3584 + 8 (c % 32);
    w = f32(scale * level) + offset rounded to fp16."""
    words = np.frombuffer(entry, "<f4", 3 * n).reshape(3, n)
    lay = layout_of(k, n, 32)
    out = np.zeros((k, n), np.float16)
    for col in range(n):
        for u in range(-(-k // 64)):
            rec = lay.payload_off + ((col // 32) * lay.chunks + u // 4) * RECORD
            meta = int.from_bytes(entry[rec + 3584 + 8 * (col % 32):][:8], "little")
            for h in range(2):
                g = 2 * u + h
                if g >= lay.groups:
                    continue
                window = 0
                for j in range(4):
                    b = 28 * (u % 4) + 4 * (3 * h + j)
                    at = rec + (32 * (b // 16) + col % 32) * 16 + b % 16
                    window |= int.from_bytes(entry[at:at + 4], "little") << (32 * j)
                window >>= 16 * h
                gcode = (meta >> (7 * (g % 8))) & 127
                scale = np.float32(words[0, col] * SCALE_STEPS[gcode & 31])
                offset = np.float32(words[1, col] + np.float32(
                    words[2, col] * np.float32((gcode >> 5) - 1.5)))
                for i in range(16):
                    code = (window >> (7 * i)) & 127
                    for e in range(2):
                        kk = 64 * u + 32 * h + 2 * i + e
                        if kk < k:
                            out[kk, col] = np.float16(np.float32(
                                scale * np.float32(CODEBOOK[code, e])) + offset)
    return out


@settings(max_examples=10, deadline=None)
@given(k=st.integers(1, 40), n=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_gemm_reads_the_codes_like_the_interpreter_decodes_them(k, n, seed):
    k *= 16  # the tiled layout's K % 16 == 0: K tails of half a group included
    q = quantize(np.random.default_rng(seed).standard_t(4, (k, n)).astype(np.float32))
    entry, lay = gpu_q3p5_bytes(q.to_bytes())
    assert lay.tiled
    np.testing.assert_array_equal(decode_like_the_gemm(entry, k, n),
                                  dequantize(q).astype(np.float16))


@pytest.fixture(scope="module")
def encoder_16_rows():
    """encoder_tiny at 16 tokens: its quantized matmuls run on 16 rows."""
    _, module = compile_to_module(MODELS_DIR / "encoder_tiny.onnx",
                                  Options(shapes={"hidden": (1, 16, 64)}))
    return emit(module, store_of(module), None, "model")


def test_steps_of_more_than_8_rows_select_the_gemm_under_the_macro(encoder_16_rows):
    source = encoder_16_rows.files["model.cu"].decode()
    launches = "\n".join(line.strip() for line in source[source.index("_launch("):].splitlines())
    assert ("#if Q35_TENSOR_CORES\nq35_gemm_f16<1><<<dim3(1, 1), 256, "
            "sizeof(q35_gemm_smem<1>), s>>>(") in launches
    # its dynamic shared memory is set up once at load, before any graph capture
    load = source[source.index("_load(const char"):source.index("_device_input(")]
    assert "#if Q35_TENSOR_CORES\n    if (q35_gemm_setup<1>() != cudaSuccess)" in load
    # the default build keeps the fp32 GEMV, 8 rows per launch
    default = launches.split("#else\n")[1].split("#endif")[0]
    assert f"q35_gemv_f32<{GEMV_MAX_ROWS}, " in default
    assert "-DQ35_TENSOR_CORES=$(TC)" in encoder_16_rows.files["Makefile"].decode()


def test_small_steps_never_mention_the_gemm():
    _, module = compile_to_module(MODELS_DIR / "encoder_tiny.onnx",
                                  Options(shapes={"hidden": (1, 8, 64)}))
    source = emit(module, store_of(module), None, "model").files["model.cu"].decode()
    assert "q35_gemm_f16<" not in source[source.index("_launch("):]


@pytest.mark.parametrize("tensor_cores", [0, 1])
def test_gemm_build_compiles_warning_free(encoder_16_rows, tensor_cores, tmp_path):
    compiler = nvcc_or_skip()
    for name, data in encoder_16_rows.files.items():
        (tmp_path / name).write_bytes(data)
    result = subprocess.run([compiler, *FLAGS, f"-DQ35_TENSOR_CORES={tensor_cores}",
                             "-Xptxas", "-warn-spills", "-c", "model.cu"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr


def test_every_gemv_and_gemm_instance_compiles_warning_free(tmp_path):
    """All template instances of the runtime's GEMVs (1..8 rows, every K split the launches
    may pick; the tensor-core int8 GEMV at 8 and 16 rows) and GEMM (row tiles 1, 2, 4)."""
    compiler = nvcc_or_skip()
    runtime = CudaPrinter(Program("kernels", [], [], [], [], []), b"", {}).runtime()
    instances = [f"template __global__ void q35_gemv_{kernel}<{m}, {k}>({args});"
                 for kernel, args in (
                     ("f32", "float *, const float *, q35_q3p5, q35_epilogue"),
                     ("i8", "float *, const int8_t *, const float *, q35_q3p5"))
                 for m in range(1, GEMV_MAX_ROWS + 1) for k in (1, 2, 4, 8, 16)
                 if k <= gemv_max_ks(kernel, m)]
    instances += [f"template __global__ void q35_gemv_i8_mma<{k}, {h16}>(float *, "
                  "const int8_t *, const float *, int, q35_q3p5);"
                  for k in (1, 2, 4) if k <= gemv_max_ks("mma", 16) for h16 in ("false", "true")]
    instances += [f"template __global__ void q35_gemm_f16<{mt}>(float *, const float *, int, "
                  f"q35_q3p5, q35_epilogue);\ntemplate cudaError_t q35_gemm_setup<{mt}>();"
                  for mt in (1, 2, 4)]
    (tmp_path / "kernels.cu").write_text(runtime + "\n".join(instances) + "\n")
    result = subprocess.run([compiler, *FLAGS, "-c", "kernels.cu"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr
