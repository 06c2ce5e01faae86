"""Build the emitted CUDA with nvcc (cached by content hash) and run it on the GPU.

The cache, the private build folder and the error reporting are the C target's
(`q35c.targets.c.build.cached_build`); the command is nvcc's, with the Makefile's flags.
`require_gpu` makes `q35c run --target cuda` say in one line that there is no GPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from q35c.compiler.codegen_names import plain_text
from q35c.compiler.diagnostics import Q35cError
from q35c.targets.c.build import _first_error, cached_build
from q35c.targets.c.printer import io_file_stems
from q35c.targets.cuda.emit import BLOB_FILE, Emitted

ARCH = "sm_90"
PTX = "compute_90"
FLAGS = ("-std=c++17", "-O3", "-fmad=false", "-gencode", f"arch={PTX},code={ARCH}",
         "-gencode", f"arch={PTX},code={PTX}", "-Werror", "all-warnings",
         "-Xcompiler", "-Wall,-Wextra,-Werror")
"""nvcc flags of `q35c run` (the Makefile's, plus -Werror)."""
NO_GPU_EXIT = 3  # main.cu's exit code when cudaGetDeviceCount finds no GPU


def nvcc() -> str:
    """The nvcc to use: $NVCC, nvcc on PATH, or /usr/local/cuda/bin/nvcc."""
    found = (os.environ.get("NVCC") or shutil.which("nvcc")
             or shutil.which("/usr/local/cuda/bin/nvcc"))
    if not found:
        raise Q35cError("cuda target: nvcc not found (install the CUDA toolkit, or set NVCC)")
    return found


def has_gpu() -> bool:
    """Whether the machine has an NVIDIA GPU the driver exposes."""
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir() and any(gpus.iterdir()):
        return True
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        result = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0 and "GPU" in result.stdout


def require_gpu() -> None:
    if not has_gpu():
        raise Q35cError("cuda target: no CUDA GPU on this machine (q35c MODEL --target cuda "
                        "-o DIR writes the sources without one)")


def build(emitted: Emitted) -> Path:
    """The cache folder holding the sources and the built `main`, compiling it if needed."""
    command = [nvcc(), *FLAGS, "main.cu", "model.cu", "-o", "main"]
    return cached_build(emitted.files, command, "main", prefix="cuda-")


def execute(emitted: Emitted, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Build (or reuse) the runner, feed it `inputs`, return its outputs by name."""
    program = emitted.program
    in_stems, out_stems = io_file_stems(program)
    directory = build(emitted)
    with tempfile.TemporaryDirectory(prefix="q35c-cuda-run-") as tmp:
        in_dir, out_dir = Path(tmp) / "in", Path(tmp) / "out"
        in_dir.mkdir()
        out_dir.mkdir()
        for (name, buf), stem in zip(program.inputs, in_stems):
            if name not in inputs:
                raise Q35cError(f"cuda target: missing input '{plain_text(name)}'")
            value = np.asarray(inputs[name])
            if value.shape != buf.shape:
                raise Q35cError(f"cuda target: input '{plain_text(name)}' has shape "
                                f"{value.shape}, expected {buf.shape}")
            data = value.astype(buf.dtype.newbyteorder("<"), copy=False)
            (in_dir / f"{stem}.raw").write_bytes(np.ascontiguousarray(data).tobytes())
        result = subprocess.run([str(directory / "main"), str(directory / BLOB_FILE),
                                 str(in_dir), str(out_dir)], capture_output=True, text=True)
        if result.returncode == NO_GPU_EXIT:
            raise Q35cError("cuda target: no CUDA GPU on this machine")
        if result.returncode != 0:
            why = (f"exit code {result.returncode}" if result.returncode > 0
                   else f"signal {-result.returncode}")
            raise Q35cError(f"cuda target: the compiled model failed ({why}): "
                            f"{_first_error(result.stderr)} (sources kept in {directory})")
        outputs = {}
        for (name, buf), stem in zip(program.outputs, out_stems):
            raw = (out_dir / f"{stem}.raw").read_bytes()
            outputs[name] = np.frombuffer(raw, dtype=buf.dtype.newbyteorder("<")).astype(
                buf.dtype).reshape(buf.shape)
        return outputs
