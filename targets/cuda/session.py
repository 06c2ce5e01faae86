"""A persistent handle on a compiled CUDA model, for token-by-token generation.

`q35c run --target cuda` builds a runner program and starts it once per call (build.py),
which uploads the weights every time. `CudaSession` instead builds model.cu into a shared
library (nvcc, cached by content hash), loads it with ctypes, calls `<m>_load` once (the
weights stay on the GPU) and `<m>_run_tensors` per step; the launches of a step replay from
the model's CUDA graph. model.cuh declares the same API and tensor descriptions as the C
target's model.h, so the ctypes side is the C target's `CSession` (`targets/c/session.py`).
"""

from __future__ import annotations

from pathlib import Path

from q35c.targets.c.build import cached_build
from q35c.targets.c.printer import model_prefix
from q35c.targets.c.session import CSession
from q35c.targets.cuda.build import FLAGS, nvcc, require_gpu
from q35c.targets.cuda.emit import BLOB_FILE, Emitted

LIBRARY = "libmodel.so"


def build_library(sources: dict[str, bytes]) -> Path:
    """The cache folder holding model.cu, model.cuh and `libmodel.so` built from them."""
    command = [nvcc(), *FLAGS, "-shared", "-Xcompiler", "-fPIC", "model.cu", "-o", LIBRARY]
    files = {name: sources[name] for name in ("model.cu", "model.cuh")}
    return cached_build(files, command, LIBRARY, prefix="cudalib-")


class CudaSession(CSession):
    """One model loaded on the GPU: `run(inputs)` as often as needed, then `close()`."""

    LABEL = "cuda target"

    def __init__(self, sources: dict[str, bytes], prefix: str):
        require_gpu()
        directory = build_library(sources)
        blob_path = directory / BLOB_FILE
        if not blob_path.exists():
            blob_path.write_bytes(sources[BLOB_FILE])
        self._open(directory / LIBRARY, blob_path, sources["model.cuh"], prefix)

    @classmethod
    def from_emitted(cls, emitted: Emitted) -> CudaSession:
        return cls(emitted.files, model_prefix(emitted.program.name))
