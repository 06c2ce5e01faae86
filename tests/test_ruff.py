"""Ruff (configured in pyproject.toml: E, F, W, I, B, UP at 100 columns) on the source tree.

`CLEAN` lists the paths already free of findings: they must stay so. The whole tree is
checked too; it still has findings in files outside those paths (see the xfail reason),
which `ruff check --fix` and small edits remove.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLEAN = [
    "semantics", "compiler/quant", "compiler/entry.py", "compiler/ir_attrs.py",
    "compiler/constants.py", "compiler/quantizable.py", "compiler/context.py",
    "compiler/frontends/mlir.py", "compiler/frontends/onnx/inspect.py", "passes/matching.py",
    "passes/externalize_constants.py", "passes/verify_quant_error.py", "passes/quant_error",
    "compiler/frontends/fortran", "targets/interp", "tests/test_layering.py",
    "tests/test_ruff.py", "tests/fortran/test_run_errors.py", "targets/native",
    "passes/unfuse_ops.py", "tests/test_fused_targets.py",
]


def _ruff(*paths: str) -> subprocess.CompletedProcess[str]:
    ruff = Path(sys.executable).with_name("ruff")
    command = [str(ruff)] if ruff.exists() else [shutil.which("ruff") or "ruff"]
    if not Path(command[0]).exists() and shutil.which(command[0]) is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    return subprocess.run([*command, "check", "--output-format", "concise", *paths],
                          cwd=ROOT, capture_output=True, text=True)


def test_clean_paths_stay_clean():
    result = _ruff(*CLEAN)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.xfail(strict=False, reason="files outside CLEAN still have findings (mostly "
                   "E501 long lines, I001 import order, UP037): fixed when the branches "
                   "are merged and `ruff check --fix` is run")
def test_the_whole_tree_is_clean():
    result = _ruff(".")
    assert result.returncode == 0, result.stdout + result.stderr
