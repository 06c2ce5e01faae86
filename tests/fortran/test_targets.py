"""Fortran kernels on every target: `--entry` picks the procedure when compiling (a missing
one is an error for every target), `--target c` writes kernels.h/kernels.c/Makefile that
build and run, `--target groq` refuses loops it cannot map in one line naming the op and
the line, and the C target agrees with the interpreter on random inputs (hypothesis)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from conftest import q35c
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from q35c.compiler.frontends.fortran import compile_source
from q35c.compiler.weights import WeightStore
from q35c.semantics import run_module
from q35c.targets.c.loops import run as run_c

from .test_gfortran_oracle import CORPUS

QMATMUL = CORPUS / "qmatmul_pair.f90"


def _one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("target", ["mlir", "c", "groq"])
def test_a_missing_entry_is_an_error_for_every_target(tmp_path, target):
    out = tmp_path / "out"
    line = _one_error_line(q35c(QMATMUL, "--entry", "nonexistent", "--target", target,
                                "-o", out, check=False))
    assert line == (f"q35c: error: {QMATMUL}: --entry nonexistent: no function @nonexistent; "
                    "the module has ['qmatmul_pair', 'qmatmul_pair_4x64x16']")
    assert not out.exists()


def test_the_entry_is_recorded_in_the_ir(tmp_path):
    result = q35c(QMATMUL, "--entry", "qmatmul_pair")
    assert 'q35c.entry = "qmatmul_pair"' in result.stdout


def test_entry_is_honoured_by_the_groq_target_which_refuses_loops_in_one_line(tmp_path):
    """Without --entry the groq target cannot pick one of two procedures; with it, the
    kernel's loop nest is refused with the file:line of the procedure and the reason."""
    line = _one_error_line(q35c(QMATMUL, "--entry", "qmatmul_pair", "--target", "groq",
                                "-o", tmp_path / "out", check=False))
    assert line == (f"q35c: error: {QMATMUL}:13: target groq cannot raise 'qmatmul_pair' to "
                    "tensor ops: array 'X' has a run-time shape (the tensor form needs constant "
                    "extents)")


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                    reason="needs make and cc")
def test_c_output_builds_with_its_makefile_and_links_into_a_c_program(tmp_path):
    out = tmp_path / "out"
    q35c(CORPUS / "int_ops.f90", "--target", "c", "-o", out)
    assert sorted(p.name for p in out.iterdir()) == ["Makefile", "kernels.c", "kernels.h"]
    subprocess.run(["make", "-s", "CFLAGS=-std=c99 -O2 -ffp-contract=off -Wall -Wextra "
                    "-Werror"], cwd=out, check=True, capture_output=True)
    (out / "use.c").write_text(
        '#include "kernels.h"\n#include <stdio.h>\n'
        "int main(void) {\n"
        "    float x[3] = {1.4f, 2.6f, -0.5f};\n"
        '    printf("%d\\n", nearest_sum(3, x));\n'
        "    return 0;\n}\n")
    subprocess.run(["cc", "-std=c99", "use.c", "libkernels.a", "-lm", "-o", "use"], cwd=out,
                   check=True)
    printed = subprocess.run([str(out / "use")], capture_output=True, text=True, check=True)
    module = compile_source((CORPUS / "int_ops.f90").read_text(), "int_ops.f90")
    want = run_module(module, WeightStore(), {"N": np.int32(3), "X": np.array(
        [1.4, 2.6, -0.5], np.float32)}, "nearest_sum")
    assert int(printed.stdout) == int(want["total"])


def test_run_on_c_writes_what_the_interpreter_writes(tmp_path):
    np.save(tmp_path / "s.npy", np.random.default_rng(0).standard_normal((3, 5), np.float32))
    args = ["run", CORPUS / "softmax.f90", "--entry", "softmax_rows", "--input",
            f"S={tmp_path / 's.npy'}", "--input", "R=3", "--input", "C=5"]
    q35c(*args, "--target", "c", "-o", tmp_path / "c")
    q35c(*args, "--target", "interp", "-o", tmp_path / "interp")
    np.testing.assert_array_equal(np.load(tmp_path / "c" / "S.npy"),
                                  np.load(tmp_path / "interp" / "S.npy"))


INT_OPS = compile_source((CORPUS / "int_ops.f90").read_text(), "int_ops.f90")
UNPACK = compile_source((CORPUS / "unpack_nibbles.f90").read_text(), "unpack_nibbles.f90")


def _same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(value), err_msg=name)


@settings(max_examples=15, deadline=None)
@given(a=hnp.arrays(np.int32, 12), b=hnp.arrays(np.int32, 12))
def test_c_wraps_and_shifts_like_the_interpreter(a, b):
    inputs = {"N": np.int32(12), "A": a, "B": b}
    _same(run_c(INT_OPS, inputs, "wrap_and_bits"),
          run_module(INT_OPS, WeightStore(), inputs, "wrap_and_bits"))


@settings(max_examples=15, deadline=None)
@given(q=hnp.arrays(np.int8, (4, 3)), zero=hnp.arrays(np.int8, 3, elements=st.integers(0, 15)),
       scale=hnp.arrays(np.float32, 3, elements=st.floats(-4, 4, width=32)))
def test_c_unpacks_nibbles_like_the_interpreter(q, zero, scale):
    inputs = {"K": np.int32(8), "N": np.int32(3), "Q": q, "zero": zero, "scale": scale}
    _same(run_c(UNPACK, inputs, "unpack_nibbles"),
          run_module(UNPACK, WeightStore(), inputs, "unpack_nibbles"))
