"""Shared fixtures: paths, the q35c command, and system-tool lookup that fails under CI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MODELS_DIR = EXAMPLES / "models"
INT8 = "default,int8-activations"
"""The pipeline of the int8-activation path (what `--act int8` runs)."""


# Seeded inputs for the example models, by their input's name: (rng, shape) -> {name: array}.
def ids_input(rng, shape):
    return {"input_ids": rng.integers(0, 256, shape)}


def hidden_input(rng, shape):
    return {"hidden": rng.standard_normal(shape).astype(np.float32)}


def x_input(rng, shape):
    return {"x": rng.standard_normal(shape).astype(np.float32)}
BIN = Path(sys.executable).parent


def require_tool(name: str) -> str:
    """Path of a system tool; skip locally when it is missing, but fail in CI (CI=true)."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (./dev.sh setup installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def q35c(*args: str | os.PathLike, cwd: Path | None = None, env: dict | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the installed `q35c` command line in a subprocess."""
    result = subprocess.run([str(BIN / "q35c"), *map(str, args)], cwd=cwd, env=env,
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"q35c {' '.join(map(str, args))} failed "
                             f"({result.returncode}):\n{result.stderr}")
    return result


@pytest.fixture
def run_q35c():
    return q35c


def _smollm2_unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the SmolLM2 cut is needed under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def smollm2_cut() -> Path:
    """SmolLM2-135M's 2-layer cut with real weights (examples/smollm2/export.py): from
    Q35C_SMOLLM2_DIR, examples/smollm2/out/layers2, or exported here when the `models` extra
    is installed (a few minutes). Without any of them it skips locally and fails under CI:
    the tests on a real model must not go silently untested there. Slow-tier tests only."""
    given = os.environ.get("Q35C_SMOLLM2_DIR")
    if given:
        return Path(given)
    local = EXAMPLES / "smollm2" / "out" / "layers2"
    if (local / "manifest.json").exists():
        return local
    for module in ("torch", "transformers", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            _smollm2_unavailable(f"no Q35C_SMOLLM2_DIR and no {module} to export the cut "
                                 "(pip install -e '.[models]')")
    result = subprocess.run([sys.executable, str(EXAMPLES / "smollm2" / "export.py"),
                             "--layers", "2"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        _smollm2_unavailable(result.stderr.strip().splitlines()[-1])
    return Path(result.stdout.strip().splitlines()[-1])
