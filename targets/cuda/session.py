"""A persistent handle on a compiled CUDA model, for token-by-token generation.

`q35c run --target cuda` builds a runner program and starts it once per call (build.py),
which uploads the weights every time. `CudaSession` instead builds model.cu into a shared
library (nvcc, cached by content hash), loads it with ctypes, calls `<m>_load` once (the
weights stay on the GPU) and `<m>_run_tensors` per step; the launches of a step replay from
the model's CUDA graph. model.cuh declares the same API and tensor descriptions as the C
target's model.h, so the ctypes side is the C target's (`targets/c/session.py`).
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import numpy as np

from q35c.compiler.codegen_names import plain_text
from q35c.compiler.diagnostics import Q35cError
from q35c.targets.c.build import cached_build
from q35c.targets.c.printer import model_prefix
from q35c.targets.c.session import _DTYPES, TensorSpec, _TensorInfo
from q35c.targets.cuda.build import FLAGS, nvcc, require_gpu
from q35c.targets.cuda.emit import BLOB_FILE, Emitted

LIBRARY = "libmodel.so"


def build_library(sources: dict[str, bytes]) -> Path:
    """The cache folder holding model.cu, model.cuh and `libmodel.so` built from them."""
    command = [nvcc(), *FLAGS, "-shared", "-Xcompiler", "-fPIC", "model.cu", "-o", LIBRARY]
    files = {name: sources[name] for name in ("model.cu", "model.cuh")}
    return cached_build(files, command, LIBRARY, prefix="cudalib-")


class CudaSession:
    """One model loaded on the GPU: `run(inputs)` as often as needed, then `close()`."""

    def __init__(self, sources: dict[str, bytes], prefix: str):
        require_gpu()
        directory = build_library(sources)
        blob_path = directory / BLOB_FILE
        if not blob_path.exists():
            blob_path.write_bytes(sources[BLOB_FILE])
        self._lib = ctypes.CDLL(str(directory / LIBRARY))
        p = prefix
        self._load = getattr(self._lib, f"{p}_load")
        self._load.restype = ctypes.c_void_p
        self._load.argtypes = [ctypes.c_char_p]
        self._run = getattr(self._lib, f"{p}_run_tensors")
        self._run.restype = ctypes.c_int
        self._run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self._free = getattr(self._lib, f"{p}_free")
        self._free.argtypes = [ctypes.c_void_p]
        self._error = getattr(self._lib, f"{p}_error")
        self._error.restype = ctypes.c_char_p
        counts = dict(re.findall(rb"#define \w+_NUM_(INPUTS|OUTPUTS) (\d+)",
                                 sources["model.cuh"]))
        self.inputs = self._specs(f"{p}_inputs", int(counts[b"INPUTS"]))
        self.outputs = self._specs(f"{p}_outputs", int(counts[b"OUTPUTS"]))
        self._out_arrays = [np.zeros(s.shape, s.dtype) for s in self.outputs]
        self._out_ptrs = (ctypes.c_void_p * len(self.outputs))(
            *[a.ctypes.data for a in self._out_arrays])
        self._handle = self._load(str(blob_path).encode())
        if not self._handle:
            raise Q35cError(f"cuda target: cannot load {blob_path}: {self._message()}")

    @classmethod
    def from_emitted(cls, emitted: Emitted) -> CudaSession:
        return cls(emitted.files, model_prefix(emitted.program.name))

    def _specs(self, symbol: str, count: int) -> list[TensorSpec]:
        table = (_TensorInfo * count).in_dll(self._lib, symbol)
        return [TensorSpec(t.name.decode(), np.dtype(_DTYPES[t.dtype]),
                           tuple(t.shape[i] for i in range(t.rank))) for t in table]

    def _message(self) -> str:
        text = self._error()
        return text.decode(errors="replace") if text else "(no message)"

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; the outputs are fresh copies (the session reuses its buffers)."""
        keep = []
        for spec in self.inputs:
            if spec.name not in inputs:
                raise Q35cError(f"cuda target: missing input '{plain_text(spec.name)}'")
            value = np.ascontiguousarray(inputs[spec.name], dtype=spec.dtype)
            if value.shape != spec.shape:
                raise Q35cError(f"cuda target: input '{plain_text(spec.name)}' has shape "
                                f"{value.shape}, expected {spec.shape}")
            keep.append(value)
        pointers = (ctypes.c_void_p * max(1, len(keep)))(*[a.ctypes.data for a in keep])
        if self._run(self._handle, pointers, self._out_ptrs) != 0:
            raise Q35cError(f"cuda target: the compiled model failed: {self._message()}")
        return {s.name: a.copy() for s, a in zip(self.outputs, self._out_arrays)}

    def close(self) -> None:
        if self._handle:
            self._free(self._handle)
            self._handle = None
