"""The opt-in tensor-core GEMM of the CUDA target without a GPU: its launch plan covers
every output once, steps of more than 8 rows select it under Q35_TENSOR_CORES (the fp32
GEMV otherwise), the generated code compiles warning-free with it on, and every GEMV and
GEMM instance compiles warning-free. Their numerics are checked
on the GPU by benchmarks/bench_cuda.py (gemv_bench check and gemm, models_tc)."""

from __future__ import annotations

import subprocess

import pytest
from conftest import MODELS_DIR
from test_cuda_target import nvcc_or_skip

from q35c.compiler.driver import Options, compile_to_module
from q35c.compiler.weights import store_of
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


@pytest.mark.parametrize("rows", [9, 16, 17, 32, 33, 64, 65, 512, 1000])
@pytest.mark.parametrize("n", [1, 63, 64, 65, 200, 4096, 11008])
def test_gemm_launch_covers_every_row_and_column_once(rows, n):
    launch = gemm_launch(rows, n)
    tile = 16 * launch.mt
    assert launch.block == GEMM_THREADS and launch.mt in (1, 2, 4)
    assert (launch.grid[0] - 1) * GEMM_BN < n <= launch.grid[0] * GEMM_BN
    assert (launch.grid[1] - 1) * tile < rows <= launch.grid[1] * tile
    # the smallest row tile that holds the rows, 64 rows beyond
    assert launch.mt == 4 or rows <= tile and (launch.mt == 1 or rows > 8 * launch.mt)


@pytest.fixture(scope="module")
def encoder_16_rows():
    """encoder_tiny at 16 tokens: its quantized matmuls run on 16 rows."""
    _, module = compile_to_module(MODELS_DIR / "encoder_tiny.onnx",
                                  Options(shapes={"hidden": (1, 16, 64)}))
    return emit(module, store_of(module), None, "model")


def test_steps_of_more_than_8_rows_select_the_gemm_under_the_macro(encoder_16_rows):
    source = encoder_16_rows.files["model.cu"].decode()
    launches = "\n".join(line.strip() for line in source[source.index("_launch("):].splitlines())
    assert "#if Q35_TENSOR_CORES\nq35_gemm_f16<1><<<dim3(1, 1), 128, 0, s>>>(" in launches
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
                  "q35_q3p5, q35_epilogue);" for mt in (1, 2, 4)]
    (tmp_path / "kernels.cu").write_text(runtime + "\n".join(instances) + "\n")
    result = subprocess.run([compiler, *FLAGS, "-c", "kernels.cu"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr
