"""The CUDA target without a GPU: emitted files, nvcc -Werror cleanliness of the generated
code for every example model (sm_90), and host-side checks of what the GPU will run: the
weight blob's layout decoded the way the GEMV kernels decode it against the interpreter's
decode, GEMV launch configurations, kernel selection and the device buffer plan. Runs on
the GPU (models against the interpreter, GEMV timings) are in benchmarks/bench_cuda.py."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, INT8, MODELS_DIR, q35c
from hypothesis import given, settings, strategies as st

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.driver import Options, compile_to_module
from q35c.compiler.quant import CODEBOOK, SCALE_STEPS, dequantize, quantize
from q35c.compiler.weights import store_of
from q35c.targets.cuda import CudaTarget
from q35c.targets.cuda.blob import RECORD, gpu_q3p5_bytes, layout_of
from q35c.targets.cuda.build import FLAGS, has_gpu, nvcc
from q35c.targets.cuda.emit import emit
from q35c.targets.cuda.printer import (
    GEMV_MAX_ROWS,
    GEMV_MMA_ROWS,
    MMA_MAX_ROWS,
    gemv_ksplit,
    gemv_launches,
    gemv_max_ks,
    io_offsets,
)

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
FUSED = ("default,fuse-dequant-matmul,fuse-norms,fuse-swiglu,fuse-gelu,fuse-attention,"
         "fuse-matmul-bias-act,fuse-residual,canonicalize")
PAIR43 = 'quantize-weights{layout="pair43"},canonicalize,cse'
MODELS = {
    "mlp": (EXAMPLES / "mlp.mlir", {}),
    **{stem: (MODELS_DIR / f"{stem}.onnx", {"input_ids": (1, 8)}) for stem in (
        "llama_tiny", "llama_tiny_gather_quantized", "llama_tiny_matmulnbits",
        "llama_tiny_qdq_int4")},
    **{stem: (MODELS_DIR / f"{stem}.onnx", {"hidden": (1, 8, 64)}) for stem in (
        "encoder_tiny", "encoder_tiny_qdq_int8")},
}
# Every example model on the float path; the other paths on the two base models and mlp.
CASES = ([(model, "float") for model in MODELS]
         + [(model, kind) for model in ("mlp", "llama_tiny", "encoder_tiny")
            for kind in ("int8", "fused")] + [("mlp", "pair43")])
PASSES = {"float": None, "int8": INT8, "fused": FUSED, "pair43": PAIR43}


def test_every_example_onnx_model_is_covered():
    assert {p.name for p in MODELS_DIR.glob("*.onnx")} <= {p.name for p, _ in MODELS.values()}


@functools.cache
def emitted(model: str, kind: str):
    path, shapes = MODELS[model]
    # with the target's own pipeline (dequantize-gathers), as `--target cuda` compiles
    _, module = compile_to_module(path, Options(passes=PASSES[kind], shapes=shapes),
                                  CudaTarget())
    return emit(module, store_of(module), None, "model")


def nvcc_or_skip() -> str:
    """nvcc's path: a skip locally when it is missing, a failure in CI (CI=true)."""
    try:
        return nvcc()
    except Q35cError as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"nvcc is not installed: {err}")
        pytest.skip("nvcc is not installed")


@pytest.mark.parametrize(("model", "kind"), CASES, ids=[f"{m}-{k}" for m, k in CASES])
def test_generated_code_compiles_warning_free(model, kind, tmp_path):
    """nvcc -Werror all-warnings (and the host compiler's -Wall -Wextra -Werror), sm_90
    plus PTX, exactly as `q35c run --target cuda` builds it."""
    compiler = nvcc_or_skip()
    for name, data in emitted(model, kind).files.items():
        (tmp_path / name).write_bytes(data)
    sources = ["main.cu", "model.cu"] if model == "mlp" else ["-c", "model.cu"]
    result = subprocess.run([compiler, *FLAGS, *sources], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr


def test_makefile_builds_for_sm90_with_ptx_and_exact_rounding():
    text = emitted("mlp", "float").files["Makefile"].decode()
    assert "ARCH ?= sm_90" in text and "code=$(PTX)" in text and "-fmad=false" in text


def decode_like_the_gemv(entry: bytes, k: int, n: int, group: int) -> np.ndarray:
    """float32 [K, N] from a GPU blob entry, decoded as the kernels do. Tiled (group 32,
    K % 16 == 0, the GEMV's): column n's chunk c is record (n // 32, c); its codes are
    bytes 16j..16j+15 of uint4 32j + n % 32 (j = 0..6), code i of the chunk at bits
    7i..7i+6 of those 112 little-endian bytes; its group codes 8 bytes at 3584 + 8 (n % 32),
    group code h at bit 7h. Otherwise (the portable kernels' layout): code i of a column is
    bits 7i..7i+6 of its padded row; a group code 7 bits at bit 7 (g % 8) of its 7-byte
    block. Then w = f32(scale * level) + offset."""
    lay = layout_of(k, n, group)
    words = np.frombuffer(entry, "<f4", 3 * n).reshape(3, n)
    out = np.zeros((k, n), np.float32)
    for col in range(n):
        if lay.tiled:
            tile, lane = divmod(col, 32)
            codes, metas = bytearray(), bytearray()
            for c in range(lay.chunks):
                rec = lay.payload_off + (tile * lay.chunks + c) * RECORD
                for j in range(7):
                    at = rec + (32 * j + lane) * 16
                    codes += entry[at:at + 16]
                metas += entry[rec + 3584 + 8 * lane:][:7]
                assert entry[rec + 3584 + 8 * lane + 7] == 0
            row, meta = bytes(codes), bytes(metas)
        else:
            row = entry[lay.payload_off + col * lay.prow:][:lay.prow]
            meta = entry[lay.meta_off + col * lay.meta_row:][:lay.meta_row]
        bits = int.from_bytes(row, "little")
        for kk in range(k):
            code = (bits >> (7 * (kk // 2))) & 127
            g = kk // group
            block = int.from_bytes(meta[(g // 8) * 7:(g // 8) * 7 + 7], "little")
            gcode = (block >> (7 * (g % 8))) & 127
            scale = np.float32(words[0, col] * SCALE_STEPS[gcode & 31])
            offset = np.float32(words[1, col] + np.float32(
                words[2, col] * np.float32((gcode >> 5) - 1.5)))
            out[kk, col] = np.float32(scale * np.float32(CODEBOOK[code, kk % 2])) + offset
    return out


@settings(max_examples=20, deadline=None)
@given(k=st.integers(1, 600), n=st.integers(1, 40), group=st.sampled_from([16, 32, 48, 64]),
       seed=st.integers(0, 2**16))
def test_gpu_blob_decodes_bit_for_bit_like_the_interpreter(k, n, group, seed):
    k = k if group != 32 or k % 3 else k // 16 * 16 + 16  # often the GEMV's K % 16 == 0
    w = np.random.default_rng(seed).standard_t(4, (k, n)).astype(np.float32)
    q = quantize(w, group_size=group)
    entry, lay = gpu_q3p5_bytes(q.to_bytes())
    assert len(entry) == lay.size and lay.prow % 16 == 0
    assert lay.meta_off % 16 == 0 and lay.payload_off % 16 == 0
    assert lay.tiled == (group == 32 and k % 16 == 0)
    np.testing.assert_array_equal(decode_like_the_gemv(entry, k, n, group).view(np.uint32),
                                  dequantize(q).view(np.uint32))
    if lay.tiled:  # the records, then SLACK bytes; columns past N are zero bytes
        assert lay.size == lay.payload_off + -(-n // 32) * lay.chunks * RECORD + 16
        for tile in range(-(-n // 32)):
            for c in range(lay.chunks):
                rec = lay.payload_off + (tile * lay.chunks + c) * RECORD
                for lane in range(n - 32 * tile, 32):
                    assert not any(any(entry[rec + (32 * j + lane) * 16:][:16])
                                   for j in range(7))
                    assert not any(entry[rec + 3584 + 8 * lane:][:8])
        return
    assert lay.prow >= -(-lay.groups * group // 64) * 28  # whole units, never past the row
    for col in range(n):  # padding is zero (pair code 0)
        row = entry[lay.payload_off + col * lay.prow:][:lay.prow]
        assert set(row[lay.payload_row:]) <= {0}


@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("rows", [1, 3, 5, 6, 8, 9, 16, 17, 40])
@pytest.mark.parametrize(("k", "n"), [(64, 1), (4096, 15), (128, 16), (256, 200),
                                      (4096, 4096), (4096, 14336), (14336, 4096),
                                      (8192, 28672), (28672, 8192)])
def test_gemv_launches_cover_every_row_and_column_once(rows, k, n, int8):
    launches = gemv_launches(rows, k, n, int8)
    covered = [r for launch in launches for r in range(launch.row0, launch.row0 + launch.rows)]
    assert covered == list(range(rows))
    for launch in launches:
        ks = launch.ksplit
        if launch.kernel == "mma":  # int8 steps of GEMV_MMA_ROWS rows or more: tensor cores
            assert int8 and rows >= GEMV_MMA_ROWS and GEMV_MMA_ROWS <= launch.rows <= MMA_MAX_ROWS
        else:
            assert launch.kernel == ("i8" if int8 else "f32")
            assert 1 <= launch.rows <= GEMV_MAX_ROWS
            assert not int8 or launch.rows < GEMV_MMA_ROWS
        assert launch.block == ks * 32 and ks in (1, 2, 4, 8, 16)
        assert ks <= gemv_max_ks(launch.kernel, launch.rows)
        assert not launch.kernel == "i8" or ks * launch.rows <= 16  # the round's terms: 16 KiB
        assert (launch.grid - 1) * 32 < n <= launch.grid * 32  # a column per lane
        assert ks == gemv_ksplit(k, n, launch.rows, launch.kernel)
        # every warp keeps two chunks of 256 weights at least (or K has fewer than 2)
        assert ks == 1 or -(-k // 256) >= 2 * ks


def test_kernel_selection_gemv_for_group_32_and_portable_otherwise():
    source = emitted("mlp", "float").files["model.cu"].decode()
    launches = source[source.index("_launch("):]
    assert "q35_gemv_f32<4, 1><<<" in launches and "q35_qmatmul_f32_simple<<<" not in launches
    int8 = emitted("mlp", "int8").files["model.cu"].decode()
    assert "q35_gemv_i8<4, 1><<<" in int8[int8.index("_launch("):]
    pair = emitted("mlp", "pair43").files["model.cu"].decode()
    assert "q35_pair_matmul_f32<<<" in pair[pair.index("_launch("):]
    path, shapes = MODELS["mlp"]
    _, module = compile_to_module(path, Options(passes="quantize-weights{group_size=16}",
                                                shapes=shapes))
    other = emit(module, store_of(module), None, "model").files["model.cu"].decode()
    launches = other[other.index("_launch("):]
    assert "q35_qmatmul_f32_simple<<<" in launches and "q35_gemv_f32<" not in launches


@pytest.mark.parametrize(("model", "kind"), CASES, ids=[f"{m}-{k}" for m, k in CASES])
def test_device_buffer_plan(model, kind):
    """Inputs and outputs sit after the arena, aligned and disjoint; every device pointer
    of the launcher (arena A + offset, blob W + offset) lies inside its allocation."""
    e = emitted(model, kind)
    program = e.program
    offsets, region = io_offsets(program)
    spans = sorted((offsets[id(b)], offsets[id(b)] + b.nbytes)
                   for _, b in program.inputs + program.outputs)
    assert all(start % 256 == 0 and start >= program.arena_bytes for start, _ in spans)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert spans[-1][1] <= region
    source = e.files["model.cu"].decode()
    launcher = source[source.index("_launch("):]
    blob = len(e.files["model.bin"])
    assert all(int(off) < region for off in re.findall(r"\bA \+ (\d+)", launcher))
    assert all(int(off) < blob for off in re.findall(r"\bW \+ (\d+)", launcher))


def test_cli_writes_the_project(tmp_path):
    result = q35c(EXAMPLES / "mlp.mlir", "--target", "cuda", "-o", tmp_path / "out")
    assert "cuda target: 8 steps" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "Makefile", "main.cu", "model.bin", "model.cu", "model.cuh"]


def test_emit_is_deterministic():
    a = emitted("llama_tiny", "float").files
    path, shapes = MODELS["llama_tiny"]
    _, module = compile_to_module(path, Options(shapes=shapes), CudaTarget())
    b = emit(module, store_of(module), None, "model").files
    assert a == b


@pytest.mark.skipif(has_gpu(), reason="this machine has a GPU")
def test_run_without_a_gpu_says_so_in_one_line(tmp_path):
    result = q35c("run", EXAMPLES / "mlp.mlir", "--target", "cuda", "-o", tmp_path / "r",
                  check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert "no CUDA GPU on this machine" in result.stderr
    assert not (tmp_path / "r").exists()


def test_run_without_a_gpu_raises_before_building(monkeypatch):
    import q35c.targets.cuda.build as build

    monkeypatch.setattr(build, "has_gpu", lambda: False)
    monkeypatch.setattr(build, "nvcc", lambda: pytest.fail("built without a GPU"))
    path, _ = MODELS["mlp"]
    ctx, module = compile_to_module(path, Options())
    with pytest.raises(Q35cError, match="no CUDA GPU on this machine"):
        CudaTarget().run(ctx, module, store_of(module), {}, None)


def test_generic_onnx_ops_without_cuda_kernels_are_refused_up_front(tmp_path):
    """A generic-op kernel family only the C target has (here CumSum's): the one-line
    unsupported-op error (exit 2, nothing written), not a printer failure."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("CumSum", ["x", "axis"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [helper.make_tensor("axis", TensorProto.INT64, [], [0])])
    path = tmp_path / "cumsum.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    result = q35c(path, "--target", "cuda", "-o", tmp_path / "out", check=False)
    assert result.returncode == 2, result.stderr
    assert 'target cuda does not support: q35nn.onnx_node "CumSum"' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert q35c(path, "--target", "c", "-o", tmp_path / "c").returncode == 0


# -- the generic ONNX op's kernels (targets/cuda/onnx.py) ------------------------------------

_spec = importlib.util.spec_from_file_location("bench_cuda", BENCHMARKS / "bench_cuda.py")
bench_cuda = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_cuda)


@functools.cache
def onnx_ops_emitted(tmp: str):
    path = bench_cuda.onnx_ops_model(Path(tmp) / "onnx_ops.onnx")
    _, module = compile_to_module(path, Options(), CudaTarget())
    return emit(module, store_of(module), None, "model")


@pytest.fixture
def onnx_ops(tmp_path_factory):
    return onnx_ops_emitted(str(tmp_path_factory.mktemp("onnx_ops")))


def test_every_elementwise_and_gather_op_type_is_accepted():
    from q35c.targets.native.onnx_tensor import MAP_OPS

    accepted = CudaTarget().accepted_ops()
    for op in (*MAP_OPS, "Gather", "GatherElements", "GatherND"):
        assert f'q35nn.onnx_node "{op}"' in accepted
    for op in ("ScatterND", "CumSum", "Softmax", "Trilu", "TopK"):
        assert f'q35nn.onnx_node "{op}"' not in accepted


def test_onnx_op_kernels_compile_warning_free(onnx_ops, tmp_path):
    compiler = nvcc_or_skip()
    kinds = [s.kernel for s in onnx_ops.program.steps]
    assert kinds.count("onnx_map") == 8 and kinds.count("onnx_index") == 2
    for name, data in onnx_ops.files.items():
        (tmp_path / name).write_bytes(data)
    result = subprocess.run([compiler, *FLAGS, "main.cu", "model.cu"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr


def test_onnx_map_kernels_index_broadcast_operands_by_their_strides(onnx_ops):
    """And(num[2,3], m[3]): m is read at q35_bcast(i) with strides [0, 1] over dims [2, 3];
    Where's scalar `zero` at [0]; same-shape operands at [i]; one thread per element."""
    source = onnx_ops.files["model.cu"].decode()
    steps = onnx_ops.program.steps
    [and_] = [i for i, s in enumerate(steps) if s.params.get("op") == "And"]
    [where] = [i for i, s in enumerate(steps) if s.params.get("op") == "Where"]
    assert f"q35_step{and_}_dims[] = {{2, 3}};" in source
    assert f"q35_step{and_}_st1[] = {{0, 1}};" in source
    assert f"in0[i] && in1[q35_bcast(i, 2, q35_step{and_}_dims, q35_step{and_}_st1)]" in source
    assert re.search(rf"q35_step{where}\(float \*out, const uint8_t \*in0, const float \*in1, "
                     r"const float \*in2\)", source)
    assert f"q35_step{where}<<<q35_grid(6), Q35_THREADS, 0, s>>>" in source


def test_onnx_map_conversions_match_the_c_target(onnx_ops):
    """Casts use the C runtime's helpers (ported to the device): float to int64 through
    q35_f2i64, float16 as bits through q35_f64_to_f16 / q35_f16_to_f32."""
    source = onnx_ops.files["model.cu"].decode()
    assert "(int64_t)q35_f2i64((double)(in0[i]))" in source
    assert "q35_f64_to_f16((double)(q35_f16_to_f32(in0[i]) * q35_f16_to_f32(in1[i])))" in source
    assert "Q35_DFN int64_t q35_f2i64(double x)" in source


def test_onnx_gathers_launch_one_thread_per_element_and_flag_bad_indices(onnx_ops):
    source = onnx_ops.files["model.cu"].decode()
    steps = onnx_ops.program.steps
    [ge] = [i for i, s in enumerate(steps) if s.params.get("op") == "GatherElements"]
    [gnd] = [i for i, s in enumerate(steps) if s.params.get("op") == "GatherND"]
    # GatherElements: 4 indices into axis 1 (size 3) of x[2, 3]; tables idims and dst
    assert re.search(rf"q35_gather_elements<float><<<q35_grid\(4\), Q35_THREADS, 0, s>>>\("
                     rf".*, 4, 2, 1, 3, m->tables\[\d+\], m->tables\[\d+\], "
                     rf"m->bad \+ {ge}\);", source)
    # GatherND: 2 tuples of 1 index selecting rows of 3 elements
    assert re.search(rf"q35_gather_nd<float><<<q35_grid\(6\), Q35_THREADS, 0, s>>>\("
                     rf".*, 2, 1, 3, 2, 6, m->tables\[\d+\], m->tables\[\d+\], "
                     rf"m->bad \+ {gnd}\);", source)
    assert "a gather index is out of range" in source
    assert f"__device__ const int64_t q35_s{ge}_dst[] = {{3, 1}};" in source


def test_models_without_onnx_ops_leave_out_their_helpers():
    assert "q35_f2i64" not in emitted("mlp", "float").files["model.cu"].decode()


def test_generate_without_a_gpu_says_so_before_compiling(monkeypatch, tmp_path):
    """`q35c generate --target cuda` compiles through compile_step: without a GPU it
    raises the one-line error before reading the model."""
    import q35c.targets.cuda.build as build
    from q35c.compiler.generate import CompileRequest, compile_step

    monkeypatch.setattr(build, "has_gpu", lambda: False)
    model = tmp_path / "decode.onnx"
    model.write_bytes(b"not an onnx model")
    with pytest.raises(Q35cError, match=r"^cuda target: no CUDA GPU on this machine"):
        compile_step(model, CompileRequest(target="cuda"), 1)


SMOLLM2 = Path(os.environ.get(
    "Q35C_SMOLLM2_DIR", Path(__file__).parents[1] / "examples" / "smollm2" / "out" / "layers2"))


@pytest.mark.slow
@pytest.mark.skipif(not (SMOLLM2 / "decode.dynamo.onnx").exists(),
                    reason="no SmolLM2 export (Q35C_SMOLLM2_DIR)")
@pytest.mark.parametrize("step", [1, 16])
def test_smollm2_decode_graph_compiles_for_cuda(step, tmp_path):
    """SmolLM2's decode graph (its generic ops: IsNaN, And, Cast, Where, GatherND) emits
    and compiles warning-free; 16 rows run the GEMV in two launches of 8."""
    from q35c.compiler.generate import static_shapes

    compiler = nvcc_or_skip()
    path = SMOLLM2 / "decode.dynamo.onnx"
    _, module = compile_to_module(path, Options(shapes=static_shapes(path, 8, step)),
                                  CudaTarget())
    e = emit(module, store_of(module), None, "model")
    ops = {s.params["op"] for s in e.program.steps if s.kernel.startswith("onnx_")}
    assert ops == {"IsNaN", "And", "Cast", "Where", "GatherND"}
    source = e.files["model.cu"].decode()
    assert source.count("q35_gemv_f32<8,") == (30 if step == 16 else 0)
    for name, data in e.files.items():
        if name != "model.bin":
            (tmp_path / name).write_bytes(data)
    result = subprocess.run([compiler, *FLAGS, "-c", "model.cu"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr
