"""The program every native printer renders: kernel steps over planned buffers.

`Program`, `Buffer`, `Step` and `BlobEntry` say nothing about the language they are printed
in: element types are numpy dtypes (one of `ELEMENT_TYPES`), kernels are names with static
parameters, storage is an offset in the arena or the weight blob. The C printer
(`targets/c/printer.py`) maps them to C types and runtime calls; a CUDA printer renders the
same program.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

ELEMENT_TYPES = frozenset(np.dtype(t) for t in (
    np.float32, np.float64, np.int64, np.int32, np.int16, np.int8, np.bool_, np.uint8,
    np.uint16, np.uint32, np.uint64, np.float16, ml_dtypes.bfloat16,
    # ONNX's narrow types, one byte each (ml_dtypes' layout): targets/c/narrow.py
    ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz, ml_dtypes.float8_e5m2,
    ml_dtypes.float8_e5m2fnuz, ml_dtypes.float8_e8m0fnu, ml_dtypes.float4_e2m1fn,
    ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2, ml_dtypes.uint2))
"""The element types a native program's buffers may have (float16, bfloat16 and the narrow
types are kept as their bits; the kernels of the generic ONNX ops convert them,
targets/c/onnx_tensor.py and targets/c/narrow.py)."""


@dataclass(eq=False)
class Buffer:
    """Storage for one tensor: the caller's (input/output), the blob's, or the arena's."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    kind: str  # "input", "output", "weight", "arena"
    alias_of: Buffer | None = None
    offset: int = -1  # byte offset in the arena or the blob, once planned

    @property
    def root(self) -> Buffer:
        return self.alias_of.root if self.alias_of else self

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


@dataclass
class Step:
    """One kernel invocation: `kernel` names what to do, `params` its static parameters."""

    kernel: str
    outs: list[Buffer]
    ins: list[Buffer]
    params: dict = field(default_factory=dict)
    origin: str = ""  # the op it came from, for comments and error messages


@dataclass
class BlobEntry:
    """One weight in the blob: its bytes (Q3P5 serialization or raw little-endian array)."""

    name: str
    data: bytes
    buffer: Buffer


@dataclass
class Program:
    """The entry function as steps: inputs and outputs by name, every buffer, the steps in
    order, the weight blob's entries, and the arena size once `memory.plan_arena` ran."""

    name: str
    inputs: list[tuple[str, Buffer]]
    outputs: list[tuple[str, Buffer]]
    buffers: list[Buffer]
    steps: list[Step]
    blob: list[BlobEntry]
    arena_bytes: int = 0


def all_steps(steps: list[Step]):
    """`steps`, each followed by the steps of the sub-programs it runs (the bodies of
    If, Loop and Scan, `params["bodies"]`: targets/native/onnx_control.py), depth first."""
    for step in steps:
        yield step
        for body in step.params.get("bodies", ()):
            yield from all_steps(body.steps)
