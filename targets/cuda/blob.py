"""The CUDA target's weight blob: the C target's blob, with Q3P5 entries laid out for GPUs.

A Q3P5 entry keeps every bit of its serialization (docs/format.md section 6), in this
order, each section 16-byte aligned from the entry's start:

    super_scale[N], offset_base[N], offset_step[N]   float32
    meta[N, meta_row]                                the group codes, as serialized
    payload[N, prow]                                 each column's pair codes, as
                                                     serialized, zero-padded to prow bytes

`prow` is the serialized row (G * g/16 * 7 bytes) rounded up to whole 64-weight units of
28 bytes and then to 16 bytes, so the GEMV kernels read a column's codes as aligned 32-bit
words and never past its row (runtime/q35cu.cuh). Zero bytes are pair code 0, which only
ever meets activations the kernels treat as zero. Everything else (float tensors, legacy
pair43 entries) is stored as the C target stores it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from q35c.targets.native.program import BlobEntry

HEADER = struct.Struct("<4sHHII")  # magic, version, group size, K, N (format.md)
SLACK = 16  # readable bytes after the payload


def _align16(n: int) -> int:
    return (n + 15) // 16 * 16


@dataclass(frozen=True)
class Q3P5Layout:
    """Where the parts of one Q3P5 entry lie, in bytes from the entry's start."""

    k: int
    n: int
    group: int
    groups: int
    meta_row: int
    prow: int
    meta_off: int
    payload_off: int
    size: int

    @property
    def payload_row(self) -> int:
        """Bytes of pair codes per column in the serialization."""
        return self.groups * self.group // 16 * 7


def layout_of(k: int, n: int, group: int) -> Q3P5Layout:
    """The GPU layout of a [K, N] Q3P5 tensor of group size `group`."""
    groups = -(-k // group)
    meta_row = -(-groups // 8) * 7
    units = -(-groups * group // 64)  # 64-weight units the GEMV kernels read
    prow = _align16(max(groups * group // 16 * 7, units * 28))
    meta_off = _align16(12 * n)
    payload_off = _align16(meta_off + n * meta_row)
    return Q3P5Layout(k, n, group, groups, meta_row, prow, meta_off, payload_off,
                      payload_off + n * prow + SLACK)


def gpu_q3p5_bytes(serialized: bytes) -> tuple[bytes, Q3P5Layout]:
    """A serialized Q3P5 tensor (`Q3P5Tensor.to_bytes`) re-laid for the GPU."""
    magic, _version, group, k, n = HEADER.unpack_from(serialized)
    if magic != b"Q3P5":
        raise ValueError("not a Q3P5 serialization")
    lay = layout_of(k, n, group)
    at = HEADER.size
    words = serialized[at:at + 12 * n]
    at += 12 * n
    meta = serialized[at:at + n * lay.meta_row]
    at += n * lay.meta_row
    payload = np.frombuffer(serialized, np.uint8, n * lay.payload_row, at).reshape(n, -1)
    out = bytearray(lay.size)
    out[:12 * n] = words
    out[lay.meta_off:lay.meta_off + len(meta)] = meta
    rows = np.zeros((n, lay.prow), np.uint8)
    rows[:, :lay.payload_row] = payload
    out[lay.payload_off:lay.payload_off + rows.size] = rows.tobytes()
    return bytes(out), lay


def relayout(blob: list[BlobEntry], q3p5: set[int]) -> dict[int, Q3P5Layout]:
    """Replace the data of the entries whose buffer id is in `q3p5` by their GPU layout
    (in place, before the blob is planned); their layouts by buffer id."""
    layouts = {}
    for entry in blob:
        if id(entry.buffer) in q3p5:
            entry.data, layouts[id(entry.buffer)] = gpu_q3p5_bytes(entry.data)
            entry.buffer.shape = (len(entry.data),)
    return layouts
