"""Fortran kernels on `--target groq`: the fixed-size pair-layout matmul, raised by the
frontend and turned into a tensor function by `raise-fortran-tensors`, compiles and its
simulation is bit-identical to the interpreter running the Fortran loops (all 256 byte
values of W, which the loops' masks and the raised decode both read by bits 6..0)."""

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

QMATMUL = Path(__file__).resolve().parents[2] / "examples" / "fortran" / "qmatmul_pair.f90"
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
        "line 49: loop nest -> Y (tensor ops)"]
    # the dynamic-size kernel keeps its loops (groq refuses it in one line, test_targets.py)
    assert not any(isinstance(t, TensorType) for t in fns["qmatmul_pair"].function_type.inputs)
    inputs = _inputs(5)
    want = run_module(compile_source(QMATMUL.read_text(), str(QMATMUL), raise_idioms=False),
                      WeightStore(), inputs, ENTRY)["Y"]
    got = run_module(module, WeightStore(), inputs, ENTRY)["Y"]
    assert np.array_equal(np.asarray(got).view(np.int32), np.asarray(want).view(np.int32))
