"""Fortran reductions, softmax and RMSNorm on `--target groq`: `raise-fortran-tensors`
(passes/loop_tensors.py) vectorizes independent loops and unrolls carried ones (maxval,
minval, sum, masked counts, running maxima, int32 column sums), and the simulated groq
program is bit-identical to the interpreter running the Fortran loops. What cannot be raised
is refused in one line naming file:line and the reason; report.txt lists what was raised."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import q35c
from hypothesis import given, settings, strategies as st
from xdsl.context import Context
from xdsl.dialects import func

from q35c.compiler.frontends.fortran import compile_source
from q35c.compiler.weights import WeightStore
from q35c.passes.raise_fortran_tensors import RaiseFortranTensorsPass
from q35c.semantics import run_module

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "fortran"


def _inputs(entry: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random inputs; the scalars as the literals `q35c run --input` takes."""
    f32 = np.float32
    return {
        "token_stats": lambda: {"x": rng.standard_normal((24, 4)).astype(f32),
                                "thresh": np.asarray(0.25)},
        "code_sums": lambda: {"q": rng.integers(-128, 128, (4, 24)).astype(np.int8)},
        "logit_filter": lambda: {"logits": (rng.standard_normal((16, 3)) * 2).astype(f32),
                                 "cutoff": np.asarray(float(rng.choice([0.5, 9.0])))},
        "causal_softmax": lambda: {"scores": (rng.standard_normal((16, 4)) * 6).astype(f32),
                                   "pos0": np.asarray(int(rng.integers(-3, 14)))},
        "rmsnorm_q8": lambda: {"x": (rng.standard_normal((32, 3)) * 3).astype(f32),
                               "w": rng.standard_normal(32).astype(f32),
                               "eps": np.asarray(1e-5)},
    }[entry]()


KERNELS = [("reductions.f90", "token_stats"), ("reductions.f90", "code_sums"),
           ("reductions.f90", "logit_filter"),
           ("attn_softmax.f90", "causal_softmax"), ("rmsnorm_q8.f90", "rmsnorm_q8")]


def _args(inputs: dict[str, np.ndarray], where: Path) -> list[str]:
    args = []
    for name, value in inputs.items():
        if value.ndim:
            np.save(where / f"{name}.npy", value)
            args += ["--input", f"{name}={where / name}.npy"]
        else:
            args += ["--input", f"{name}={value.item()!r}"]
    return args


@pytest.mark.parametrize("file,entry", KERNELS, ids=[e for _, e in KERNELS])
def test_kernel_simulates_on_groq_bit_exactly(tmp_path, file, entry):
    path = CORPUS / file
    inputs = _inputs(entry, np.random.default_rng(7))
    q35c("run", path, "--entry", entry, "--target", "groq", *_args(inputs, tmp_path),
         "-o", tmp_path / "out")
    loops = compile_source(path.read_text(), str(path), raise_idioms=False)
    wanted = run_module(loops, WeightStore(), dict(inputs), entry)
    assert wanted
    for name, want in wanted.items():
        want = np.asarray(want)
        got = np.load(tmp_path / "out" / f"{name}.npy")
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert got.tobytes() == want.tobytes(), name


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("file,entry", KERNELS, ids=[e for _, e in KERNELS])
def test_raised_function_equals_the_loops_on_the_interpreter(file, entry, seed):
    """The raised tensor function itself (no groq), on more inputs: bit-identical."""
    path = CORPUS / file
    module = compile_source(path.read_text(), str(path))
    RaiseFortranTensorsPass().apply(Context(), module)
    fn = next(f for f in module.body.block.ops
              if isinstance(f, func.FuncOp) and f.sym_name.data == entry)
    assert "q35c.raised" in fn.attributes and not any(
        op.name.startswith(("scf.", "memref.")) for op in fn.walk())
    inputs = _inputs(entry, np.random.default_rng(seed))
    loops = compile_source(path.read_text(), str(path), raise_idioms=False)
    want = run_module(loops, WeightStore(), dict(inputs), entry)
    got = run_module(module, WeightStore(), dict(inputs), entry)
    for name in want:
        assert np.asarray(got[name]).tobytes() == np.asarray(want[name]).tobytes(), name


def test_report_says_which_loops_were_raised_to_which_ops(tmp_path):
    result = q35c(CORPUS / "attn_softmax.f90", "--target", "groq", "-o", tmp_path / "out")
    assert "1 Fortran loop nest(s) raised to tensor ops" in result.stdout
    report = (tmp_path / "out" / "report.txt").read_text()
    (note,) = [line.strip() for line in report.splitlines() if line.startswith("  line ")]
    # the query loop is vectorized; the running max (line 20) and the sum (line 24) are
    # unrolled over the 16 keys
    assert note.startswith("line 18: loop nest -> probs: vectorized line 18 (4)")
    assert "unrolled line 20 (16), line 24 (16)" in note
    assert "math.exp x16" in note and "onnx LessOrEqual" in note


def _refusal(tmp_path, source: str) -> str:
    path = tmp_path / "k.f90"
    path.write_text(source)
    result = q35c(path, "--target", "groq", "-o", tmp_path / "out", check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0].replace(str(path), "k.f90")


_HEAD = ("subroutine k(x, idx, y)\n  integer, intent(in) :: idx(8)\n"
         "  real, intent(in) :: x(8)\n  real, intent(out) :: y(8)\n  integer :: i\n")


@pytest.mark.parametrize("body,line,reason", [
    ("  do i = 1, 8\n    y(i) = x(idx(i))\n  end do\n", 6,
     "a subscript or loop bound computed from run-time values (array elements, scalar "
     "arguments) has no tensor form"),
    ("  do i = 1, 8\n    y(i) = x(i + 1)\n  end do\n", 6,
     "index (8,) of array 'x' is out of bounds for shape (8,) (memref.load)"),
    ("  y = 0\n  i = 1\n  do while (i < 8)\n    y(i) = x(i)\n    i = i + 2\n  end do\n", 8,
     "a loop that can be left early (exit, cycle, return or do while) has no tensor form"),
], ids=["indirect", "out-of-bounds", "do-while"])
def test_what_cannot_be_raised_is_refused_with_file_line_and_reason(tmp_path, body, line,
                                                                    reason):
    assert _refusal(tmp_path, _HEAD + body + "end subroutine k\n") == (
        f"q35c: error: k.f90:{line}: target groq cannot raise 'k' to tensor ops: {reason}")


def test_sections_and_scalar_arguments_are_raised(tmp_path):
    """A section store (spliced into the array), a scalar argument (a rank-0 tensor) and an
    if-converted loop, on groq against the loops."""
    source = ("subroutine k(x, s, y)\n  real, intent(in) :: x(8, 6)\n  real, value :: s\n"
              "  real, intent(out) :: y(8, 6)\n  integer :: i, j\n  y = 0\n"
              "  y(2:5, :) = x(1:4, :) * s\n  do j = 1, 6\n    do i = 1, 8\n"
              "      if (x(i, j) < 0) y(i, j) = -y(i, j) + 1\n    end do\n  end do\n"
              "end subroutine k\n")
    path = tmp_path / "k.f90"
    path.write_text(source)
    x = np.random.default_rng(5).standard_normal((8, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    q35c("run", path, "--target", "groq", "--input", f"x={tmp_path / 'x.npy'}",
         "--input", "s=1.5", "-o", tmp_path / "out")
    want = run_module(compile_source(source, str(path)), WeightStore(),
                      {"x": x, "s": np.asarray(1.5)}, "k")["y"]
    assert np.load(tmp_path / "out" / "y.npy").tobytes() == np.asarray(want).tobytes()


_DIM_MASK = """subroutine k(x, lim, s, m, c, far, tot)
  real, intent(in) :: x(5, 3)
  real, value :: lim
  real, intent(out) :: s(5), m(3), tot
  integer, intent(out) :: c(3), far(5)
  s = sum(x, 2, x > lim)
  m = maxval(x, dim=1, mask=x < lim)
  c = count(x > lim, dim=1)
  far = merge(1, 0, any(x > 2 * lim, dim=2) .and. .not. all(x > lim, 2))
  tot = product(x, mask=x > 0)
end subroutine k
"""


@pytest.mark.parametrize("lim", [0.3, -9.0, 9.0])
def test_dim_and_mask_reductions_mean_what_fortran_says(lim):
    """On the interpreter (loops) and raised: numpy's reading of the standard, an
    all-false mask included (maxval gives -huge, product 1, count 0)."""
    x = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32) * 3
    inputs = {"x": x, "lim": np.asarray(lim)}
    raised = compile_source(_DIM_MASK, "k.f90")
    RaiseFortranTensorsPass().apply(Context(), raised)
    assert "q35c.raised" in raised.body.block.first_op.attributes
    loops = run_module(compile_source(_DIM_MASK, "k.f90"), WeightStore(), dict(inputs), "k")
    got = run_module(raised, WeightStore(), dict(inputs), "k")
    for name in loops:
        assert np.asarray(got[name]).tobytes() == np.asarray(loops[name]).tobytes(), name
    lim32, big = np.float32(lim), np.finfo(np.float32).max
    s = np.zeros(5, np.float32)
    for j in range(3):  # element order, one rounding per addition
        s = np.where(x[:, j] > lim32, s + x[:, j], s)
    assert np.array_equal(loops["s"], s)
    assert np.array_equal(loops["m"], np.where(x < lim32, x, -big).max(axis=0))
    assert np.array_equal(loops["c"], (x > lim32).sum(axis=0))
    assert np.array_equal(loops["far"], ((x > 2 * lim32).any(axis=1) &
                                         ~(x > lim32).all(axis=1)).astype(np.int32))


@pytest.mark.parametrize("call,message", [
    ("sum(x, dim=3)", "4:18: dim=3 is out of range for rank 2"),
    ("sum(x, mask=x)", "4:19: the mask of sum must be logical, got real"),
    ("count(x, dim=1)", "4:13: the mask of count must be logical, got real"),
    ("sum(x, 1, x(1, :) > 0)", "4:25: the mask of sum has rank 1, the array 2"),
    ("maxval(x, 1, x > 0, 2)", "4:7: maxval takes at most 3 arguments"),
], ids=["dim-range", "mask-type", "count-type", "mask-rank", "too-many"])
def test_bad_reduction_arguments_are_located_errors(tmp_path, call, message):
    path = tmp_path / "k.f90"
    path.write_text("subroutine k(x, y)\n  real, intent(in) :: x(4, 2)\n"
                    f"  real, intent(out) :: y(2)\n  y = {call}\nend subroutine k\n")
    result = q35c(path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0] == f"q35c: error: {path}:{message}"


def test_a_scalar_function_runs_on_groq_and_a_called_one_is_refused_with_its_caller(tmp_path):
    """A function's result is the tensor function's first result (rank 0); a procedure that
    another one calls keeps its memref form, and groq says so at its line."""
    path = tmp_path / "g.f90"
    source = ("pure real function gelu_tanh(x) result(y)\n  real, intent(in) :: x\n"
              "  y = 0.5 * x * (1.0 + tanh(0.7978846 * (x + 0.044715 * x**3)))\n"
              "end function gelu_tanh\n")
    path.write_text(source)
    q35c("run", path, "--target", "groq", "--input", "x=0.75", "-o", tmp_path / "out")
    want = run_module(compile_source(source, str(path)), WeightStore(),
                      {"x": np.asarray(0.75)}, "gelu_tanh")["y"]
    got = np.load(tmp_path / "out" / "y.npy")
    assert got.shape == () and got.tobytes() == np.asarray(want).tobytes()
    line = _refusal(tmp_path, source + "subroutine k(x, y)\n  real, intent(in) :: x(4)\n"
                    "  real, intent(out) :: y(4)\n  integer :: i\n  do i = 1, 4\n"
                    "    y(i) = gelu_tanh(x(i))\n  end do\nend subroutine k\n")
    assert line == ("q35c: error: k.f90: groq plan: cannot pick an entry point among "
                    "['gelu_tanh', 'k']: name one with --entry")
    path = tmp_path / "k.f90"
    result = q35c(path, "--entry", "gelu_tanh", "--target", "groq", "-o", tmp_path / "o2",
                  check=False)
    assert result.stderr.strip() == (
        f"q35c: error: {path}:1: target groq cannot raise 'gelu_tanh' to tensor ops: it is "
        "called by 'k' (a procedure that another one calls is left as it is)")
    result = q35c(path, "--entry", "k", "--target", "groq", "-o", tmp_path / "o3", check=False)
    assert result.stderr.strip() == (
        f"q35c: error: {path}:10: target groq cannot raise 'k' to tensor ops: a call of "
        "'gelu_tanh' (calls are not inlined)")


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 4), n=st.integers(1, 4),
       op=st.sampled_from(["sum", "product", "maxval", "minval", "count", "any", "all"]),
       dim=st.sampled_from([None, 1, 2]), masked=st.booleans(),
       lim=st.floats(-1.5, 1.5, width=32), seed=st.integers(0, 2**16))
def test_random_reductions_raise_to_the_loops_results(m, n, op, dim, masked, lim, seed):
    """Any reduction, along any dimension, with or without a mask, after an elementwise
    step and inside a row loop: the raised function equals the loops bit for bit."""
    logical = op in ("count", "any", "all")
    arg = "x > lim" if logical else "x * 2.0 - 1.0"
    args = arg + (f", dim={dim}" if dim else "") + (", mask=x < lim" if masked and not
                                                    logical else "")
    rank = 0 if dim is None else 1
    extent = {1: n, 2: m}.get(dim, 1)
    kind = "integer" if op == "count" else "logical" if logical else "real"
    shape = f"({extent})" if rank else ""
    value = "merge(1.0, 0.0, r)" if op in ("any", "all") else "real(r)"
    source = (f"subroutine k(x, lim, y, z)\n  real, intent(in) :: x({m}, {n})\n"
              f"  real, value :: lim\n  real, intent(out) :: y{shape}, z({m})\n"
              f"  {kind} :: r{shape}\n  integer :: i\n  r = {op}({args})\n  y = {value}\n"
              f"  do i = 1, {m}\n    z(i) = maxval(x(i, :) + y{'(1)' if rank else ''})\n"
              "  end do\nend subroutine k\n")
    x = np.random.default_rng(seed).standard_normal((m, n)).astype(np.float32)
    inputs = {"x": x, "lim": np.asarray(lim, np.float32)}
    raised = compile_source(source, "k.f90")
    RaiseFortranTensorsPass().apply(Context(), raised)
    assert "q35c.raised" in raised.body.block.first_op.attributes, source
    want = run_module(compile_source(source, "k.f90"), WeightStore(), dict(inputs), "k")
    got = run_module(raised, WeightStore(), dict(inputs), "k")
    for name in ("y", "z"):
        assert np.asarray(got[name]).tobytes() == np.asarray(want[name]).tobytes(), source


BOUND = [("softmax.f90", ["R=4", "C=16"], {"S": (4, 16)}),
         ("rmsnorm.f90", ["D=16", "T=3"], {"X": (16, 3), "g": (16,), "eps": ()})]


@pytest.mark.parametrize("file,binds,shapes", BOUND, ids=[f for f, _, _ in BOUND])
def test_run_time_shape_kernels_raise_for_groq_once_bound(tmp_path, file, binds, shapes):
    """The corpus's run-time-shape kernels: refused for groq as they are (their arrays have
    run-time shapes), raised and bit-identical to the interpreter once --bind fixes them."""
    path = CORPUS / file
    refused = q35c(path, "--target", "groq", "-o", tmp_path / "no", check=False)
    assert refused.returncode == 2 and "has a run-time shape" in refused.stderr
    rng = np.random.default_rng(3)
    inputs = {n: (rng.standard_normal(s) * 3).astype(np.float32) if s else np.asarray(1e-5)
              for n, s in shapes.items()}
    bind = [a for b in binds for a in ("--bind", b)]
    outs = {}
    for target in ("groq", "interp"):
        out = tmp_path / target
        q35c("run", path, "--target", target, *bind, *_args(inputs, tmp_path), "-o", out)
        outs[target] = {p.name: np.load(p) for p in out.glob("*.npy")}
    assert outs["groq"].keys() == outs["interp"].keys() and outs["groq"]
    for name, got in outs["groq"].items():
        assert got.tobytes() == outs["interp"][name].tobytes(), name
