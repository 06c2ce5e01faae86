"""Lowering and raising: the interpreter runs the IR; raising keeps results; upstream
mlir-opt accepts every corpus dump; `q35c run` takes .npy arrays and scalar literals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from q35c.compiler.frontends.fortran import compile_source
from q35c.compiler.ir_text import module_text
from q35c.compiler.quant import LEGACY_LEVELS, quantize_legacy
from q35c.compiler.weights import WeightStore
from q35c.semantics import matmul_int8, run_module

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "fortran"
QMM = CORPUS / "qmatmul_pair.f90"
RAISE_TEST = ROOT / "tests" / "filecheck" / "fortran" / "raise-pair-matmul.f90"


def _ops(module) -> set[str]:
    return {op.name for op in module.walk()}


def _pair_inputs(rng, m, k, n):
    w = quantize_legacy(rng.standard_normal((k, n)).astype(np.float32))
    return {"X": rng.integers(-127, 128, (m, k)).astype(np.int8),
            "xscale": (0.01 + rng.random(m)).astype(np.float32),
            "W": np.asfortranarray(w.packed), "scale": w.scale, "offset": w.offset}, w


def test_pair_matmul_nest_is_raised_and_computes_the_same():
    source = QMM.read_text()
    loops = compile_source(source, str(QMM), raise_idioms=False)
    raised = compile_source(source, str(QMM))
    assert "quant3p5.matmul_int8" not in _ops(loops)
    assert {"quant3p5.pack", "quant3p5.matmul_int8"} <= _ops(raised)
    rng = np.random.default_rng(7)
    inputs, w = _pair_inputs(rng, 4, 64, 16)
    entry = "qmatmul_pair_4x64x16"
    before = run_module(loops, WeightStore(), inputs, entry)["Y"]
    after = run_module(raised, WeightStore(), inputs, entry)["Y"]
    np.testing.assert_array_equal(before, after)
    # and both are the quant3p5 definition itself
    np.testing.assert_array_equal(after, matmul_int8(inputs["X"], inputs["xscale"], w))


def test_dynamic_sizes_are_not_raised_but_run():
    module = compile_source(QMM.read_text(), str(QMM))
    fn = next(op for op in module.ops if getattr(op, "sym_name", None) and
              op.sym_name.data == "qmatmul_pair")
    assert "quant3p5.matmul_int8" not in {op.name for op in fn.walk()}
    rng = np.random.default_rng(3)
    inputs, w = _pair_inputs(rng, 3, 10, 4)
    got = run_module(module, WeightStore(), {**inputs, "M": 3, "K": 10, "N": 4},
                     "qmatmul_pair")["Y"]
    np.testing.assert_array_equal(got, matmul_int8(inputs["X"], inputs["xscale"], w))


def test_wrong_decoding_is_not_raised():
    module = compile_source(RAISE_TEST.read_text(), str(RAISE_TEST))
    names = {}
    for fn in module.ops:
        if hasattr(fn, "sym_name"):
            names[fn.sym_name.data] = {op.name for op in fn.walk()}
    assert "quant3p5.matmul_int8" in names["qmm"]
    assert "quant3p5.matmul_int8" not in names["qmm_levels_swapped"]


def test_loop_index_used_after_the_nest_blocks_raising():
    source = QMM.read_text().replace(
        "  end subroutine qmatmul_pair_4x64x16",
        "    Y(1, 1) = real(p, real32)\n  end subroutine qmatmul_pair_4x64x16")
    module = compile_source(source, "k.f90")
    assert "quant3p5.matmul_int8" not in _ops(module)


def test_legacy_levels_table_kernel_matches_the_library():
    path = CORPUS / "lut_dequant.f90"
    module = compile_source(path.read_text(), str(path))
    codes = np.arange(128, dtype=np.int8).reshape(32, 4)
    out = run_module(module, WeightStore(), {"P": 32, "N": 4, "W": codes}, "pair_levels")["L"]
    expected = LEGACY_LEVELS[codes.astype(np.int64)].transpose(0, 2, 1).reshape(64, 4)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.f90")) + [RAISE_TEST],
                         ids=lambda p: p.name)
def test_corpus_ir_is_accepted_by_upstream_mlir_opt(path, tmp_path):
    from conftest import q35c, require_tool

    mlir_opt = require_tool("mlir-opt-22")
    irdl = tmp_path / "q35c.irdl.mlir"
    irdl.write_text(q35c("irdl").stdout)
    q35c(path, "--passes", "canonicalize,cse", "--dump-ir", tmp_path / "dumps",
         "-o", tmp_path / "out")
    files = sorted((tmp_path / "dumps").glob("*.mlir")) + sorted((tmp_path / "out").glob("*.mlir"))
    assert len(files) == 4
    for file in files:
        result = subprocess.run([mlir_opt, f"--irdl-file={irdl}", str(file), "-o", "/dev/null"],
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{file.name}: {result.stderr}"


def test_q35c_run_takes_npy_arrays_and_scalar_literals(tmp_path):
    path = CORPUS / "softmax.f90"
    s = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    np.save(tmp_path / "s.npy", s)
    result = subprocess.run(
        [sys.executable, "-m", "q35c.compiler.cli", "run", str(path), "--entry",
         "softmax_rows", "--input", f"S={tmp_path / 's.npy'}", "--input", "R=3",
         "--input", "C=5", "--passes", "", "-o", str(tmp_path / "out")],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    out = np.load(tmp_path / "out" / "S.npy")
    e = np.exp(s.astype(np.float64) - s.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(axis=1, keepdims=True), rtol=1e-5)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["S.npy"]


def test_q35c_run_writes_function_results_and_intent_out(tmp_path):
    path = CORPUS / "int_ops.f90"
    x = np.array([0.5, -0.5, 2.4, -7.6], np.float32)
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run(
        [sys.executable, "-m", "q35c.compiler.cli", "run", str(path), "--entry",
         "nearest_sum", "--input", f"X={tmp_path / 'x.npy'}", "--input", "N=4",
         "--passes", "", "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    total = np.load(tmp_path / "out" / "total.npy")
    assert total.dtype == np.int32
    assert int(total) == (1 - 1 + 2 - 8) * 1000 + (5 - 5 + 24 - 76)


def test_hints_and_names_reach_the_ir():
    text = module_text(compile_source(QMM.read_text(), str(QMM)), weights_file=None)
    assert 'q35c.hints = ["omp parallel do private(i, p, acc, sx, v4, v3)"]' in text
    assert 'q35c.name = "X", q35c.intent = "in", q35c.dims = ["M", "K"]' in text
    assert 'q35c.dims = ["(K)/(2)", "N"]' in text
