"""The C target: emitted files, -Werror cleanliness, memory plan, and every example model
run through the system C compiler against the reference interpreter: bit-identical on the
int8-activation path (every model, several shapes and seeds), within 1e-5 relative on the
float path; also under AddressSanitizer and UBSan."""

from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    BIN,
    EXAMPLES,
    INT8,
    MODELS_DIR,
    ROOT,
    hidden_input,
    ids_input,
    q35c,
    require_tool,
    x_input,
)
from xdsl.builder import Builder
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType, f32
from xdsl.ir import Block, Region
from xdsl.rewriter import InsertPoint

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.driver import Options, compile_to_module
from q35c.compiler.quant import quantize
from q35c.compiler.weights import WeightStore, store_of
from q35c.dialects import quant3p5
from q35c.semantics import run_module
from q35c.targets.c import CTarget
from q35c.targets.c.emit import emit
from q35c.targets.native.lower import lower_module
from q35c.targets.native.memory import lifetimes, plan_arena

# name -> (file, input name, shape, input maker). Every example model that compiles, plus
# other shapes of the two base models (sequence length 1, batch 2, odd lengths).
MODELS = {
    "mlp": (EXAMPLES / "mlp.mlir", "x", (4, 128), x_input),
    **{stem: (MODELS_DIR / f"{stem}.onnx", "input_ids", (1, 8), ids_input) for stem in (
        "llama_tiny", "llama_tiny_gather_quantized", "llama_tiny_matmulnbits",
        "llama_tiny_qdq_int4")},
    "llama_tiny@1x1": (MODELS_DIR / "llama_tiny.onnx", "input_ids", (1, 1), ids_input),
    "llama_tiny@2x5": (MODELS_DIR / "llama_tiny.onnx", "input_ids", (2, 5), ids_input),
    **{stem: (MODELS_DIR / f"{stem}.onnx", "hidden", (1, 8, 64), hidden_input) for stem in (
        "encoder_tiny", "encoder_tiny_qdq_int8")},
    "encoder_tiny@2x3": (MODELS_DIR / "encoder_tiny.onnx", "hidden", (2, 3, 64), hidden_input),
}
SANITIZED = ["encoder_tiny", "llama_tiny", "mlp"]
SEEDS = (0, 35, 4096)
SANITIZE = "-O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Each test session builds into its own cache, never the user's."""
    monkeypatch.setenv("Q35C_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "c-cache"))


def test_every_example_onnx_model_is_covered():
    covered = {path.name for path, *_ in MODELS.values()}
    assert {p.name for p in MODELS_DIR.glob("*.onnx")} <= covered


@functools.cache
def compiled(model: str, passes: str | None):
    path, input_name, shape, make_inputs = MODELS[model]
    shapes = {} if path.suffix == ".mlir" else {input_name: shape}
    ctx, module = compile_to_module(path, Options(passes=passes, shapes=shapes))
    return ctx, module, store_of(module), make_inputs(np.random.default_rng(35), shape)


def assert_matches_interpreter(model: str, passes: str | None, seeds=(35,)) -> None:
    """int8 path: bit-identical outputs. Float path: |c - interp| <= 1e-5 |interp| +
    1e-5 max|interp| (the quantized float kernels sum in another order than BLAS)."""
    ctx, module, store, _ = compiled(model, passes)
    _, _, shape, make_inputs = MODELS[model]
    for seed in seeds:
        inputs = make_inputs(np.random.default_rng(seed), shape)
        want = run_module(module, store, inputs)
        got = CTarget().run(ctx, module, store, inputs, None)
        assert sorted(got) == sorted(want)
        for name, ref in want.items():
            assert got[name].dtype == ref.dtype and got[name].shape == ref.shape
            message = f"{model} seed {seed}: {name}"
            if passes == INT8:
                np.testing.assert_array_equal(got[name], ref, err_msg=message)
            else:
                scale = float(np.max(np.abs(ref)))
                np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-5 * scale,
                                           err_msg=message)


@pytest.mark.parametrize("passes", [None, INT8], ids=["float", "int8"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_example_model_matches_the_interpreter(model, passes):
    assert_matches_interpreter(model, passes, SEEDS)


@pytest.mark.parametrize("model", SANITIZED)
def test_example_model_runs_clean_under_address_and_undefined_sanitizers(model, monkeypatch):
    monkeypatch.setenv("Q35C_CFLAGS", SANITIZE)
    monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    for passes in (None, INT8):
        assert_matches_interpreter(model, passes)


def test_compile_writes_the_documented_files_deterministically(tmp_path):
    for run in ("a", "b"):
        result = q35c(MODELS["mlp"][0], "--target", "c", "-o", tmp_path / run)
        assert "arena" in result.stdout and "bytes" in result.stdout
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["Makefile", "main.c", "model.bin", "model.c", "model.h"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    header = (tmp_path / "a" / "model.h").read_text()
    for api in ("mlp_load(", "mlp_run(", "mlp_free(", "MLP_ARENA_BYTES"):
        assert api in header


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_generated_code_is_warning_free_c99(cc, tmp_path):
    tool = require_tool(cc)
    for model, passes in (("llama_tiny", INT8), ("encoder_tiny", None)):
        path, input_name, shape, _ = MODELS[model]
        out = tmp_path / f"{model}"
        args = [path, "--target", "c", "-o", out] + (["--passes", passes] if passes else [])
        args += ["--shape", f"{input_name}={','.join(map(str, shape))}"]
        q35c(*args)
        # Compile only (clang's libomp may be absent); main.c has no OpenMP code. On x86
        # also with the AVX2 kernels (-march=haswell).
        builds = [([], "main.c"), ([], "model.c"), (["-fopenmp"], "model.c")]
        if _is_x86():
            builds += [(["-march=haswell"], "model.c"), (["-march=haswell", "-fopenmp"], "model.c")]
        for flags, source in builds:
            result = subprocess.run(
                [tool, "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-O2",
                 "-ffp-contract=off", *flags, "-c", source, "-o", "/dev/null"],
                cwd=out, capture_output=True, text=True)
            assert result.returncode == 0, (flags, result.stderr)


def test_makefile_builds_a_runner_that_reproduces_q35c_run(tmp_path):
    require_tool("make")
    q35c(MODELS["mlp"][0], "--target", "c", "-o", tmp_path / "out", "--passes", INT8)
    subprocess.run(["make", "-s"], cwd=tmp_path / "out", check=True, capture_output=True)
    q35c("run", MODELS["mlp"][0], "--target", "c", "--passes", INT8, "-o", tmp_path / "r")
    x = np.load(tmp_path / "r" / "x.npy")
    (tmp_path / "in").mkdir()
    (tmp_path / "o").mkdir()
    (tmp_path / "in" / "x.raw").write_bytes(x.tobytes())
    result = subprocess.run([tmp_path / "out" / "main", "--bench", "3",
                             tmp_path / "out" / "model.bin", tmp_path / "in", tmp_path / "o"],
                            capture_output=True, text=True, check=True)
    assert "median" in result.stdout
    probs = np.frombuffer((tmp_path / "o" / "probs.raw").read_bytes(), np.float32)
    np.testing.assert_array_equal(probs.reshape(4, 32), np.load(tmp_path / "r" / "probs.npy"))


def test_the_documented_commands_run_verbatim(tmp_path):
    """docs/c-target.md's first sh block, as written: compile, make, the runner with
    --seed (it creates res/ and writes the inputs it drew), the runner on those inputs,
    --bench, and `q35c run --target c`."""
    require_tool("make")
    doc = (ROOT / "docs" / "c-target.md").read_text()
    block = re.search(r"```sh\n(.*?)```", doc, re.S).group(1)
    (tmp_path / "examples").symlink_to(EXAMPLES)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    res = tmp_path / "out" / "res"
    assert sorted(p.name for p in res.iterdir()) == ["input_ids.raw", "logits.raw"]
    assert (tmp_path / "out" / "res2" / "logits.raw").read_bytes() == \
        (res / "logits.raw").read_bytes()
    ids = np.frombuffer((res / "input_ids.raw").read_bytes(), np.int64)
    assert ids.shape == (8,) and ids.min() >= 0 and ids.max() < 16
    assert "median" in result.stdout and (tmp_path / "results" / "probs.npy").exists()


def test_runner_seed_is_deterministic_and_usage_is_checked(tmp_path):
    require_tool("make")
    q35c(MODELS["mlp"][0], "--target", "c", "-o", tmp_path / "out")
    out = tmp_path / "out"
    subprocess.run(["make", "-s"], cwd=out, check=True, capture_output=True)
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        subprocess.run(["./main", "model.bin", "--seed", seed, name], cwd=out, check=True)
    raw = {n: (out / n / "x.raw").read_bytes() for n in "abc"}
    assert raw["a"] == raw["b"] != raw["c"]
    x = np.frombuffer(raw["a"], np.float32)
    assert x.shape == (4 * 128,) and -1 <= x.min() < x.max() < 1
    for bad in (["model.bin"], ["model.bin", "--seed", "x", "r"], ["--bench", "-1", "m", "i", "o"],
                ["model.bin", "--seed", "1", "in", "r"]):
        result = subprocess.run(["./main", *bad], cwd=out, capture_output=True, text=True)
        assert result.returncode == 2 and result.stderr.startswith("usage:"), bad


def test_arena_plan_never_overlaps_tensors_that_are_live_together():
    _, module, store, _ = compiled("llama_tiny", INT8)
    program = lower_module(module, store, None, "llama_tiny")
    size = plan_arena(program)
    spans = lifetimes(program)
    bufs = sorted(spans, key=lambda b: b.offset)
    for i, a in enumerate(bufs):
        assert a.offset % 64 == 0 and a.offset + a.nbytes <= size
        for b in bufs[i + 1:]:
            live_together = spans[a][0] <= spans[b][1] and spans[b][0] <= spans[a][1]
            overlap = a.offset < b.offset + b.nbytes and b.offset < a.offset + a.nbytes
            assert not (live_together and overlap), (a.name, b.name)
    assert size < sum(b.nbytes for b in spans) / 2  # storage is actually reused


def _qmatmul_module(rows: int, k: int, n: int, group: int, int8: bool):
    store = WeightStore()
    w = np.random.default_rng(k * n + group).standard_t(4, (k, n)).astype(np.float32)
    store["w"] = quantize(w, group_size=group)
    packed = quant3p5.PackedWeightType((k, n), group)
    block = Block(arg_types=[TensorType(f32, (rows, k))])
    b = Builder(InsertPoint.at_end(block))
    weights = b.insert(quant3p5.WeightOp("w", packed)).result
    x = block.args[0]
    if int8:
        qa = b.insert(quant3p5.QuantizeActivationsOp(x))
        y = b.insert(quant3p5.MatmulInt8Op(qa.quantized, qa.scale, weights)).result
    else:
        y = b.insert(quant3p5.MatmulOp(x, weights)).result
    b.insert(func.ReturnOp(y))
    fn = func.FuncOp("main", ([x.type], [y.type]), Region(block))
    module = ModuleOp([fn])
    module.verify()
    return module, store


@pytest.mark.parametrize("rows,k,n,group", [
    (1, 5, 3, 16), (9, 77, 10, 32), (3, 130, 7, 64), (2, 256, 33, 32),
    # group 32 with a multiple of 16 groups: the SIMD kernels where the CPU has them
    (1, 512, 40, 32), (3, 1000, 17, 32), (1, 2048, 16, 32),
    # 18 groups (SmolLM2's K = 576): the second block of 16 groups is mostly padding
    (1, 576, 50, 32), (2, 576, 33, 32),
    # 8 rows and more: the GEMM kernels (rows in lanes, 16 per block; K blocks of 64 groups)
    (8, 300, 20, 32), (16, 4096, 16, 32), (37, 2500, 35, 32), (40, 64, 3, 32)])
@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
def test_q3p5_kernels_match_on_odd_k_partial_groups_and_many_rows(rows, k, n, group, int8):
    """Ragged K, partial groups, more rows than one pass, N not a multiple of 16."""
    module, store = _qmatmul_module(rows, k, n, group, int8)
    x = np.random.default_rng(rows).standard_normal((rows, k)).astype(np.float32)
    x[0, : k // 3] = 0.0  # a partly zero row
    want = run_module(module, store, {"arg0": x})["out0"]
    got = CTarget().run(None, module, store, {"arg0": x}, None)["out0"]
    if int8:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("threads", ["1", "2"])
def test_gemv_gemm_and_thread_pool_match_and_run_clean_under_sanitizers(threads, monkeypatch):
    """Matmuls big enough (4M multiply-adds) for the thread pool, on the GEMV (1 row) and
    GEMM (16 and 37 rows, several K blocks) kernels: int8 bit-identical and float within
    1e-5 at 1 and 2 threads, under AddressSanitizer and UBSan."""
    monkeypatch.setenv("Q35C_CFLAGS", SANITIZE)
    monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    monkeypatch.setenv("OMP_NUM_THREADS", threads)
    for int8 in (True, False):
        for rows, k, n in ((1, 4096, 1030), (16, 4096, 80), (37, 2500, 70)):
            test_q3p5_kernels_match_on_odd_k_partial_groups_and_many_rows(rows, k, n, 32, int8)


def test_build_is_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("Q35C_CACHE_DIR", str(tmp_path / "cache"))
    for _ in range(2):
        assert_matches_interpreter("mlp", INT8)
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 1


def test_c_compiler_errors_are_one_line_with_the_kept_sources(tmp_path):
    import os

    env = {**os.environ, "Q35C_CACHE_DIR": str(tmp_path / "cache"),
           "Q35C_CFLAGS": "-include q35c_missing_header.h"}
    result = q35c("run", MODELS["mlp"][0], "--target", "c", "-o", tmp_path / "r", env=env,
                  check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "q35c_missing_header.h" in lines[0] and "kept in" in lines[0]
    kept = Path(lines[0].rsplit("kept in ", 1)[1].rstrip(")"))
    assert (kept / "model.c").exists() and (kept / "build.log").exists()
    assert not (tmp_path / "r").exists()


def test_runtime_failures_of_the_compiled_model_are_reported():
    ctx, module, store, _ = compiled("llama_tiny", None)
    with pytest.raises(Q35cError, match="index out of range"):
        CTarget().run(ctx, module, store, {"input_ids": np.full((1, 8), 999)}, None)


def test_weights_blob_holds_q3p5_at_its_exact_size():
    _, module, store, _ = compiled("llama_tiny", None)
    emitted = emit(module, store, None, "llama_tiny")
    q3p5 = [e for e in emitted.program.blob if e.buffer.dtype == np.uint8]
    # the version-1 layout (per-column words and group-code rows) the kernels read
    assert q3p5 and all(e.data == store[e.name].to_bytes(version=1) for e in q3p5)
    model_c = emitted.files["model.c"].decode()
    assert "q35_qmatmul_f32" in model_c and "w[i] = scale * w[i] + offset" in model_c


def test_float_ops_between_the_kernels_are_bit_exact():
    """The float ops the int8 path runs between its kernels (transcendentals, norms,
    softmax, GELU/SiLU, attention matmuls), on rows long enough that summation order and
    libm-versus-numpy routines would show: bit-identical to the interpreter."""
    from xdsl.dialects import math as xmath

    from q35c.dialects import q35nn

    rows, n = 3, 300
    row_t, vec_t = TensorType(f32, (rows, n)), TensorType(f32, (n,))
    a_t, b_t = TensorType(f32, (2, rows, n)), TensorType(f32, (n, 5))
    block = Block(arg_types=[row_t, row_t, vec_t, vec_t, a_t, b_t])
    x, pos, gamma, beta, a, w = block.args
    b = Builder(InsertPoint.at_end(block))
    results = [b.insert(op(x)).result for op in (xmath.ExpOp, xmath.TanhOp, xmath.ErfOp,
                                                  xmath.SinOp, xmath.CosOp, xmath.SqrtOp)]
    results += [b.insert(xmath.LogOp(pos)).result, b.insert(xmath.PowFOp(pos, x)).result]
    results += [b.insert(q35nn.SoftmaxOp(x)).result,
                b.insert(q35nn.LayerNormOp(x, gamma, beta, 1e-5)).result,
                b.insert(q35nn.RMSNormOp(x, gamma, 1e-6)).result,
                b.insert(q35nn.GeluOp(x)).result, b.insert(q35nn.GeluOp(x, "tanh")).result,
                b.insert(q35nn.SiluOp(x)).result, b.insert(q35nn.BatchMatmulOp(a, w)).result]
    b.insert(func.ReturnOp(*results))
    fn = func.FuncOp("main", (list(block.arg_types), [r.type for r in results]),
                     Region(block))
    module = ModuleOp([fn])
    module.verify()
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        inputs = {"arg0": (rng.standard_normal((rows, n)) * 4).astype(np.float32),
                  "arg1": rng.exponential(3.0, (rows, n)).astype(np.float32),
                  "arg2": rng.standard_normal(n).astype(np.float32),
                  "arg3": rng.standard_normal(n).astype(np.float32),
                  "arg4": rng.standard_normal((2, rows, n)).astype(np.float32),
                  "arg5": rng.standard_normal((n, 5)).astype(np.float32)}
        inputs["arg0"][0, :4] = [0.0, -0.0, 100.0, -100.0]  # exp overflow and underflow
        inputs["arg1"][0, :2] = [0.0, 1e-30]  # log(0) = -inf
        want = run_module(module, WeightStore(), inputs)
        got = CTarget().run(None, module, WeightStore(), inputs, None)
        for name, ref in want.items():
            np.testing.assert_array_equal(got[name], ref, err_msg=f"seed {seed}: {name}")


@pytest.mark.parametrize("model", ["mlp", "llama_tiny"])
def test_legacy_pair43_weights_run_and_match(model):
    """pair43 (one group per column): int8 path bit-identical, float path within 1e-5."""
    pair43 = 'quantize-weights{layout="pair43"},canonicalize,cse'
    for passes in (pair43, pair43 + ",int8-activations"):
        path, input_name, shape, make_inputs = MODELS[model]
        shapes = {} if path.suffix == ".mlir" else {input_name: shape}
        ctx, module = compile_to_module(path, Options(passes=passes, shapes=shapes))
        store = store_of(module)
        inputs = make_inputs(np.random.default_rng(3), shape)
        want = run_module(module, store, inputs)
        got = CTarget().run(ctx, module, store, inputs, None)
        for name, ref in want.items():
            if passes.endswith("int8-activations"):
                np.testing.assert_array_equal(got[name], ref, err_msg=name)
            else:
                np.testing.assert_allclose(got[name], ref, rtol=1e-5,
                                           atol=1e-5 * float(np.abs(ref).max()), err_msg=name)


@pytest.mark.parametrize("model", ["encoder_tiny", "llama_tiny@2x5"])
def test_portable_kernels_without_simd_extensions_match(model, monkeypatch):
    """Built for baseline x86-64 and run with Q35_KERNELS=portable (no SIMD kernels)."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("-march=x86-64 is an x86 flag")
    monkeypatch.setenv("Q35C_CFLAGS", "-march=x86-64")
    monkeypatch.setenv("Q35_KERNELS", "portable")
    for passes in (None, INT8):
        assert_matches_interpreter(model, passes)


def _is_x86() -> bool:
    import platform

    return platform.machine() in ("x86_64", "AMD64")


def _require_avx2() -> None:
    """Code built with -march=haswell must be able to run here (AVX2, FMA, BMI2)."""
    if not _is_x86():
        pytest.skip("-march=haswell is an x86 flag")
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        pytest.skip("no /proc/cpuinfo to tell whether the CPU has AVX2")
    if not {"avx2", "fma", "bmi2"} <= set(flags):
        pytest.skip("the CPU lacks AVX2")


def _cpu_flags() -> set[str]:
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return set()


AVX512_KERNEL_FLAGS = {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512vbmi",
                       "avx512_vbmi2", "avx512_vnni"}


@pytest.mark.parametrize("march", ["-march=x86-64", "-march=haswell"])
@pytest.mark.parametrize("cap", [None, "avx2", "portable"])
def test_runtime_picks_the_kernels_by_cpu_features_not_by_march(march, cap, tmp_path,
                                                                 monkeypatch):
    """The SIMD kernels are compiled into every x86-64 build and chosen at run time by the
    CPU's features, whatever -march says; Q35_KERNELS caps the choice (q35_kernel_variant,
    a static function of every model.c, names it)."""
    _require_avx2()
    tool = require_tool("gcc")
    flags = _cpu_flags()
    best = "avx512-vbmi" if AVX512_KERNEL_FLAGS <= flags else "avx2"
    want = {None: best, "avx2": "avx2", "portable": "portable"}[cap]
    path, input_name, shape, _ = MODELS["mlp"]
    q35c(path, "--target", "c", "-o", tmp_path / "out", "--passes", INT8)
    (tmp_path / "out" / "probe.c").write_text(
        '#include "model.c"\n#include <stdio.h>\n'
        "int main(void) { puts(q35_kernel_variant()); return 0; }\n")
    subprocess.run([tool, "-std=c99", "-O2", "-ffp-contract=off", march, "probe.c", "-o",
                    "probe", "-lm"], cwd=tmp_path / "out", check=True, capture_output=True)
    if cap:
        monkeypatch.setenv("Q35_KERNELS", cap)
    else:
        monkeypatch.delenv("Q35_KERNELS", raising=False)
    result = subprocess.run([tmp_path / "out" / "probe"], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == want


@pytest.mark.parametrize("model", sorted(MODELS))
def test_avx2_kernels_match_the_interpreter_on_every_example_model(model, monkeypatch):
    """The AVX2 kernels (Q35_KERNELS=avx2, in a -march=haswell build: no AVX-512 in the
    compiler's own code either): int8 bit-identical, float within 1e-5, like every other
    kernel."""
    _require_avx2()
    monkeypatch.setenv("Q35C_CFLAGS", "-march=haswell")
    monkeypatch.setenv("Q35_KERNELS", "avx2")
    for passes in (INT8, None):
        assert_matches_interpreter(model, passes, (35, 4096))


@pytest.mark.parametrize("rows,k,n", [(1, 512, 1024), (1, 4096, 48), (2, 1000, 17),
                                      (3, 224, 9), (1, 160, 5), (1, 64, 3), (1, 32, 2),
                                      (1, 33, 4), (2, 5, 3),
                                      # 8 rows and more: the AVX2 float GEMM (K blocks of
                                      # 32 groups, rows and columns past a block's end)
                                      (8, 300, 20), (16, 4096, 16), (37, 2500, 35),
                                      (9, 33, 4)])
@pytest.mark.parametrize("int8", [True, False], ids=["int8", "float"])
def test_avx2_q3p5_kernels_match_on_random_matmuls(rows, k, n, int8, monkeypatch):
    """Group counts 1 to 128 (odd, not a multiple of 8: the AVX2 kernels work in blocks of
    8 groups and pairs of groups), ragged K, more than one row, and the float GEMM."""
    _require_avx2()
    monkeypatch.setenv("Q35_KERNELS", "avx2")
    test_q3p5_kernels_match_on_odd_k_partial_groups_and_many_rows(rows, k, n, 32, int8)


def test_avx2_kernels_run_clean_under_address_and_undefined_sanitizers(monkeypatch):
    _require_avx2()
    monkeypatch.setenv("Q35_KERNELS", "avx2")
    monkeypatch.setenv("Q35C_CFLAGS", SANITIZE)
    monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    for int8 in (True, False):
        for rows, k, n in ((1, 512, 40), (2, 224, 9), (1, 33, 4), (17, 1100, 20)):
            test_q3p5_kernels_match_on_odd_k_partial_groups_and_many_rows(rows, k, n, 32, int8)
    for passes in (None, INT8):
        assert_matches_interpreter("llama_tiny", passes)
