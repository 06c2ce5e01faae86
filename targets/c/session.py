"""A persistent handle on a compiled C model: the shared library loaded once, run many times.

`q35c run --target c` builds a runner program and starts it once per call (build.py). Token
by token generation calls the model hundreds of times, so `CSession` instead compiles
model.c into a shared library (cached by content hash, like build.py's runner), loads it
with ctypes, calls `<m>_load` once and `<m>_run_tensors` for every step. Inputs and
outputs are numpy arrays owned by the session and passed by pointer: nothing is copied
into or out of a separate process, and the weights and arena stay in memory between runs.

The library describes its own inputs and outputs (`<m>_inputs[]`, `<m>_outputs[]` in
model.h), so a session works on an emitted model (`emit`) and on a directory written by
`q35c MODEL --target c -o OUT` alike.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from q35c.compiler.codegen_names import plain_text
from q35c.compiler.diagnostics import Q35cError
from q35c.targets.c.build import (
    DEFAULT_FLAGS,
    cached_build,
    compiler,
    extra_flags,
)
from q35c.targets.c.emit import BLOB_FILE, Emitted
from q35c.targets.c.printer import model_prefix

_DTYPES = {1: np.float32, 2: np.float64, 3: np.int64, 4: np.int32, 5: np.int16, 6: np.int8,
           7: np.uint8, 8: np.uint16, 9: np.uint32, 10: np.uint64}
"""model.h's tensor_info dtype codes (8 is also float16 and bfloat16, kept as their bits)."""
LIBRARY = "libmodel.so"


class _TensorInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int),
                ("elem_size", ctypes.c_int), ("rank", ctypes.c_int),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("size", ctypes.c_int64)]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


def build_library(sources: dict[str, bytes], openmp: bool = True) -> Path:
    """The directory holding `sources` and `libmodel.so` built from model.c (cached)."""
    cc = compiler()
    command = [cc, *DEFAULT_FLAGS, *(["-fopenmp"] if openmp else []), *extra_flags(),
               "-shared", "-fPIC", "model.c", "-o", LIBRARY, "-lm"]
    files = {name: sources[name] for name in ("model.c", "model.h")}
    return cached_build(files, command, LIBRARY, prefix="lib-")


class CSession:
    """One loaded model: `run(inputs)` as often as needed, `close()` (or `with`) at the end.

    `sources` are the emitted files (model.c, model.h and the blob `model.bin`); `prefix`
    is the API prefix of model.h (the stem the model was emitted with)."""

    LABEL = "c target"
    """How errors name the target (the CUDA target's session shares this class)."""

    def __init__(self, sources: dict[str, bytes], prefix: str, blob_path: Path | None = None,
                 threads: int | None = None):
        directory = build_library(sources)
        if blob_path is None:
            blob_path = directory / BLOB_FILE
            if not blob_path.exists():
                blob_path.write_bytes(sources[BLOB_FILE])
        self._open(directory / LIBRARY, blob_path, sources["model.h"], prefix)
        if threads:
            self.set_threads(threads)

    def set_threads(self, threads: int) -> int:
        """Run on `threads` threads from now on (the library's `<prefix>_set_threads`: its
        quantized-matmul pool and OpenMP loops, for runs from the calling Python thread);
        0 goes back to OMP_NUM_THREADS. Returns the count in force. Setting
        OMP_NUM_THREADS in os.environ would not do: libgomp reads it once, when the first
        library that needs it loads."""
        setter = getattr(self._lib, f"{self._prefix}_set_threads", None)
        if setter is None:  # a library without the call (the CUDA target's)
            return 1
        setter.restype = ctypes.c_int
        setter.argtypes = [ctypes.c_int]
        return int(setter(int(threads)))

    def set_inputs_in_outputs(self, on: bool) -> int:
        """The library's `<prefix>_set_inputs_in_outputs`: with `on`, the caller vouches
        that the output buffers (those `run(..., copy=False)` returns) already hold, where
        a concatenation would copy an input into them, that input's values, and the runs
        skip those copies. Returns how many copies a run skips (0: none, or a library
        without the call)."""
        setter = getattr(self._lib, f"{self._prefix}_set_inputs_in_outputs", None)
        if setter is None or not self._handle:
            return 0
        setter.restype = ctypes.c_int
        setter.argtypes = [ctypes.c_void_p, ctypes.c_int]
        return int(setter(self._handle, int(bool(on))))

    def _open(self, library: Path, blob_path: Path, header: bytes, prefix: str) -> None:
        """Load `library`, bind its `<prefix>_*` API, describe its tensors from `header`
        and load the weights of `blob_path`."""
        self._lib = ctypes.CDLL(str(library))
        self._prefix = p = prefix
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
        counts = dict(re.findall(rb"#define \w+_NUM_(INPUTS|OUTPUTS) (\d+)", header))
        self.inputs = self._specs(f"{p}_inputs", int(counts[b"INPUTS"]))
        self.outputs = self._specs(f"{p}_outputs", int(counts[b"OUTPUTS"]))
        self._out_arrays = [np.zeros(s.shape, s.dtype) for s in self.outputs]
        self._out_ptrs = (ctypes.c_void_p * len(self.outputs))(
            *[a.ctypes.data for a in self._out_arrays])
        self._handle = self._load(str(blob_path).encode())
        if not self._handle:
            raise Q35cError(f"{self.LABEL}: cannot load {blob_path}: {self._message()}")

    def _specs(self, symbol: str, count: int) -> list[TensorSpec]:
        table = (_TensorInfo * count).in_dll(self._lib, symbol)
        return [TensorSpec(t.name.decode(), np.dtype(_DTYPES[t.dtype]),
                           tuple(t.shape[i] for i in range(t.rank))) for t in table]

    def _message(self) -> str:
        text = self._error()
        return text.decode(errors="replace") if text else "(no message)"

    @classmethod
    def from_emitted(cls, emitted: Emitted, threads: int | None = None) -> CSession:
        return cls(emitted.files, model_prefix(emitted.program.name), threads=threads)

    @classmethod
    def from_directory(cls, out_dir: Path, threads: int | None = None) -> CSession:
        """A directory written by `q35c MODEL --target c -o OUT` (model.h, model.c,
        model.bin); the API prefix is read from model.h's `<m>_load` declaration."""
        try:
            header = (out_dir / "model.h").read_bytes()
            source = (out_dir / "model.c").read_bytes()
        except OSError as err:
            raise Q35cError(f"{out_dir}: not a c target output ({err.strerror}: "
                            f"{Path(err.filename).name})") from None
        marker = b"_model *"
        start = header.find(marker)
        if start < 0 or not (out_dir / BLOB_FILE).exists():
            raise Q35cError(f"{out_dir}: not a c target output (model.h or model.bin)")
        line = header[header.rfind(b"\n", 0, start) + 1:start]
        prefix = line.split()[-1].decode()
        return cls({"model.c": source, "model.h": header}, prefix, out_dir / BLOB_FILE,
                   threads)

    def run(self, inputs: dict[str, np.ndarray], copy: bool = True) -> dict[str, np.ndarray]:
        """Run once; the outputs are fresh copies, or with `copy=False` the session's own
        buffers, valid until the next run (a decode step's `present` outputs are megabytes
        of which the caller keeps one slot: copying them all cost more than the step's
        attention, docs/benchmarks.md "Where a SmolLM2 step's time goes")."""
        keep = []
        for spec in self.inputs:
            if spec.name not in inputs:
                raise Q35cError(f"{self.LABEL}: missing input '{plain_text(spec.name)}'")
            value = np.ascontiguousarray(inputs[spec.name], dtype=spec.dtype)
            if value.shape != spec.shape:
                raise Q35cError(f"{self.LABEL}: input '{plain_text(spec.name)}' has shape "
                                f"{value.shape}, expected {spec.shape}")
            keep.append(value)
        pointers = (ctypes.c_void_p * max(1, len(keep)))(*[a.ctypes.data for a in keep])
        if self._run(self._handle, pointers, self._out_ptrs) != 0:
            raise Q35cError(f"{self.LABEL}: the compiled model failed: {self._message()}")
        return {s.name: a.copy() if copy else a for s, a in zip(self.outputs, self._out_arrays)}

    def close(self) -> None:
        if self._handle:
            self._free(self._handle)
            self._handle = None

    def __enter__(self) -> CSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
