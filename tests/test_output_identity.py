"""Byte-identity guard: every output q35c writes for the example inputs keeps its sha256.

Each case compiles (or runs) one example input for one target through the CLI's driver API
and hashes every file it writes (and what it prints on stdout) against
tests/output_hashes.json. A refactoring that is meant to change nothing must leave every
hash as it is; a change that is meant to alter outputs regenerates the file and the diff of
the JSON shows exactly which outputs changed:

    Q35C_UPDATE_HASHES=1 .venv/bin/python -m pytest -p no:xdist tests/test_output_identity.py

(one process: parallel workers would each rewrite the table and lose the others' entries)

The hashes are of this machine's numpy and compilers; the C target's `run` outputs are
bit-exact with the interpreter by design, so they do not depend on the C compiler.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, MODELS_DIR, ROOT

HASHES = ROOT / "tests" / "output_hashes.json"
UPDATE = os.environ.get("Q35C_UPDATE_HASHES") == "1"
if UPDATE and os.environ.get("PYTEST_XDIST_WORKER"):
    raise RuntimeError("regenerate the hashes in one process: pytest -p no:xdist ...")

SHAPES = {"llama_tiny": {"input_ids": (1, 4)}, "llama_tiny_matmulnbits": {"input_ids": (1, 4)},
          "llama_tiny_qdq_int4": {"input_ids": (1, 4)},
          "llama_tiny_gather_quantized": {"input_ids": (1, 4)},
          "encoder_tiny": {"hidden": (1, 4, 64)}, "encoder_tiny_qdq_int8": {"hidden": (1, 4, 64)}}
MODELS = [MODELS_DIR / f"{name}.onnx" for name in SHAPES]
MLP = EXAMPLES / "mlp.mlir"
SOFTMAX = EXAMPLES / "fortran" / "softmax.f90"


def _options(path: Path, **kwargs):
    from q35c.compiler.driver import Options

    return Options(shapes=SHAPES.get(path.stem, {}), **kwargs)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _capture(action) -> str:
    """Run `action(stdout)`; return everything it printed (to the stream or sys.stdout), or
    the error it raised (an expected one-line error is an output too)."""
    from q35c.compiler.diagnostics import Q35cError

    stream = io.StringIO()
    with contextlib.redirect_stdout(stream):
        try:
            action(stream)
        except Q35cError as err:
            stream.write(f"error: {err}\n")
    return stream.getvalue()


def _check(case: str, tmp_path: Path, stdout: str) -> None:
    got = _digest(tmp_path)
    got["<stdout>"] = hashlib.sha256(stdout.replace(str(tmp_path), "TMP").encode()).hexdigest()
    table = json.loads(HASHES.read_text()) if HASHES.exists() else {}
    if UPDATE:
        table[case] = got
        HASHES.write_text(json.dumps(dict(sorted(table.items())), indent=1) + "\n")
        return
    assert case in table, f"no hashes for {case}: regenerate with Q35C_UPDATE_HASHES=1"
    want = table[case]
    changed = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
    assert not changed, f"{case}: outputs changed: {changed}"


@pytest.mark.parametrize("target", ["mlir", "c", "groq"])
@pytest.mark.parametrize("path", [*MODELS, MLP, SOFTMAX], ids=lambda p: p.name)
def test_compile_outputs_are_unchanged(path, target, tmp_path):
    from q35c.compiler.driver import compile_file

    if path == SOFTMAX and target != "mlir":
        pytest.skip("the Fortran kernels compile for mlir and run on interp")
    out = tmp_path / "out"
    stdout = _capture(lambda s: compile_file(path, out, _options(path, target=target), s))
    _check(f"compile {path.name} {target}", tmp_path, stdout)


@pytest.mark.parametrize("target", ["interp", "c", "groq"])
@pytest.mark.parametrize("path", [MODELS_DIR / "llama_tiny.onnx", MLP, SOFTMAX],
                         ids=lambda p: p.name)
def test_run_outputs_are_unchanged(path, target, tmp_path):
    from q35c.compiler.driver import run_file

    if path == SOFTMAX and target != "interp":
        pytest.skip("the Fortran kernels compile for mlir and run on interp")
    options = _options(path, target=target, entry="softmax_rows" if path == SOFTMAX else None)
    inputs = {"R": np.asarray(3), "C": np.asarray(5)} if path == SOFTMAX else {}
    stdout = _capture(lambda s: print(sorted(run_file(path, inputs, tmp_path / "out", options,
                                                      seed=1))))
    _check(f"run {path.name} {target}", tmp_path, stdout)


@pytest.mark.parametrize("target", ["mlir", "groq"])
def test_dumps_are_unchanged(target, tmp_path):
    """Every --dump-ir stage of llama_tiny: a target's own passes add stages at the end."""
    from q35c.compiler.driver import compile_file

    path = MODELS_DIR / "llama_tiny.onnx"
    options = _options(path, target=target, dump_ir=tmp_path / "dumps")
    stdout = _capture(lambda s: compile_file(path, tmp_path / "out", options, s))
    _check(f"dumps {path.name} {target}", tmp_path, stdout)


@pytest.mark.parametrize("target", ["mlir", "groq"])
def test_shape_only_outputs_are_unchanged(target, tmp_path):
    from q35c.compiler.driver import compile_file

    path = MODELS_DIR / "llama_tiny.onnx"
    options = _options(path, target=target, shape_only=True)
    stdout = _capture(lambda s: compile_file(path, tmp_path / "out", options, s))
    _check(f"shape-only {path.name} {target}", tmp_path, stdout)


def test_groq_report_is_unchanged(tmp_path):
    from click.testing import CliRunner

    from q35c.compiler.cli import main

    out = tmp_path / "out"
    args = [str(MLP), "--target", "groq", "-o", str(out)]
    assert CliRunner().invoke(main, args).exit_code == 0
    result = CliRunner().invoke(main, ["report", str(out)])
    assert result.exit_code == 0, result.output
    _check("report mlp.mlir groq", tmp_path, result.output)
