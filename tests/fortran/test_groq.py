"""Fortran kernels on `--target groq`: the fixed-size pair-layout matmul, raised by the
frontend and turned into a tensor function by `raise-fortran-tensors`, and a fixed-size
elementwise kernel (its whole-array loops vectorized into elementwise tensor ops) compile, and
their simulation is bit-identical to the interpreter running the Fortran loops (for the
matmul, all 256 byte values of W, which the loops' masks and the raised decode both read by
bits 6..0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import q35c
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import TensorType

from q35c.compiler.frontends.fortran import compile_source
from q35c.compiler.weights import WeightStore
from q35c.passes.raise_fortran_tensors import RaiseFortranTensorsPass
from q35c.semantics import run_module

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "fortran"
QMATMUL = CORPUS / "qmatmul_pair.f90"
ENTRY = "qmatmul_pair_4x64x16"


def _inputs(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"X": rng.integers(-128, 128, (4, 64)).astype(np.int8),
            "xscale": (rng.random(4) * 0.02).astype(np.float32),
            "W": rng.integers(-128, 128, (32, 16)).astype(np.int8),
            "scale": (rng.standard_normal(16) * 0.05).astype(np.float32),
            "offset": (rng.standard_normal(16) * 0.01).astype(np.float32)}


def test_pair_matmul_simulates_on_groq_bit_exactly(tmp_path):
    inputs = _inputs(11)
    args = []
    for name, value in inputs.items():
        np.save(tmp_path / f"{name}.npy", value)
        args += ["--input", f"{name}={tmp_path / name}.npy"]
    q35c("run", QMATMUL, "--entry", ENTRY, "--target", "groq", *args, "-o", tmp_path / "out")
    got = np.load(tmp_path / "out" / "Y.npy")
    loops = compile_source(QMATMUL.read_text(), str(QMATMUL), raise_idioms=False)
    want = run_module(loops, WeightStore(), inputs, ENTRY)["Y"]
    assert got.dtype == np.float32 and got.shape == (4, 16)
    assert np.array_equal(got.view(np.int32), np.asarray(want).view(np.int32))


def test_the_raised_kernel_is_a_tensor_function_that_says_what_was_raised():
    module = compile_source(QMATMUL.read_text(), str(QMATMUL))
    RaiseFortranTensorsPass().apply(Context(), module)
    fns = {f.sym_name.data: f for f in module.body.block.ops if isinstance(f, func.FuncOp)}
    fn = fns[ENTRY]
    assert all(isinstance(t, TensorType) for t in fn.function_type.inputs.data)
    assert [str(t) for t in fn.function_type.outputs.data] == ["tensor<4x16xf32>"]
    assert [a.data for a in fn.attributes["q35c.raised"].data] == [
        "line 49: loop nest -> Y: pair matmul tensor ops"]
    # the dynamic-size kernel keeps its loops (groq refuses it in one line, test_targets.py)
    assert not any(isinstance(t, TensorType) for t in fns["qmatmul_pair"].function_type.inputs)
    inputs = _inputs(5)
    want = run_module(compile_source(QMATMUL.read_text(), str(QMATMUL), raise_idioms=False),
                      WeightStore(), inputs, ENTRY)["Y"]
    got = run_module(module, WeightStore(), inputs, ENTRY)["Y"]
    assert np.array_equal(np.asarray(got).view(np.int32), np.asarray(want).view(np.int32))


def test_an_elementwise_kernel_simulates_on_groq_bit_exactly(tmp_path):
    path = CORPUS / "dequant_silu.f90"
    rng = np.random.default_rng(4)
    inputs = {"q": rng.integers(-128, 128, (8, 16)).astype(np.int8),
              "s": (rng.random((8, 16)) * 0.1).astype(np.float32),
              "x": (rng.standard_normal((8, 16)) * 3).astype(np.float32)}
    args = []
    for name, value in inputs.items():
        np.save(tmp_path / f"{name}.npy", value)
        args += ["--input", f"{name}={tmp_path / name}.npy"]
    q35c("run", path, "--target", "groq", *args, "-o", tmp_path / "out")
    got = np.load(tmp_path / "out" / "y.npy")
    want = run_module(compile_source(path.read_text(), str(path)), WeightStore(), inputs,
                      "dequant_silu")["y"]
    assert np.array_equal(got.view(np.int32), np.asarray(want).view(np.int32))
    module = compile_source(path.read_text(), str(path))
    RaiseFortranTensorsPass().apply(Context(), module)
    (fn,) = [f for f in module.body.block.ops if isinstance(f, func.FuncOp)]
    notes = [a.data for a in fn.attributes["q35c.raised"].data]
    assert [n.split(";")[0] for n in notes] == [
        "line 14: loop nest -> y: vectorized line 14 (16), line 14 (8)",
        "line 15: loop nest -> a temporary: vectorized line 15 (16), line 15 (8)",
        "line 15: loop nest -> y: vectorized line 15 (16), line 15 (8)"]
    assert "math.exp" in notes[1] and "unrolled" not in "".join(notes)
    assert not any(op.name.startswith(("scf.", "memref.")) for op in fn.walk())


def test_a_dynamic_shape_keeps_its_loops_and_says_why():
    """A run-time extent: not raised; the function records the line and the reason, which
    groq's refusal shows (test_groq_raising.py, test_targets.py)."""
    source = ("subroutine k(x, n, y)\n  integer, intent(in) :: n\n"
              "  real, intent(in) :: x(n)\n  real, intent(out) :: y(n)\n  y = x * 2\n"
              "end subroutine k\n")
    module = compile_source(source, "k.f90")
    RaiseFortranTensorsPass().apply(Context(), module)
    (fn,) = [f for f in module.body.block.ops if isinstance(f, func.FuncOp)]
    assert "q35c.raised" not in fn.attributes
    assert fn.attributes["q35c.not_raised"].data == (
        "line 1: array 'x' has a run-time shape (the tensor form needs constant extents)")
    assert any(op.name == "scf.for" for op in fn.walk())
