"""The CUDA target's weight blob: the C target's blob, with Q3P5 entries laid out for GPUs.

A Q3P5 entry keeps every bit of its serialization (docs/format.md section 6), in this
order, each section 16-byte aligned from the entry's start:

    super_scale[N], offset_base[N], offset_step[N]   float32
    meta[N, meta_row]                                the group codes, as serialized
    payload[N, prow]                                 each column's pair codes, as
                                                     serialized, zero-padded to prow bytes

`prow` is the serialized row (G * g/16 * 7 bytes) rounded up to whole 64-weight units of
28 bytes and then to 16 bytes (the portable kernels read it, runtime/q35cu.cuh).

The tensors the GEMV kernels take (group 32, K % 16 == 0: `tiled`) store the codes and
group codes in tiles instead, so that a warp's loads are whole, contiguous 512-byte lines
with one column per lane:

    super_scale[N], offset_base[N], offset_step[N]   float32, as above
    record[ceil(N / 32)][chunks]                     3840 bytes each (RECORD)

A chunk is 256 weights of K (8 groups, 4 units, 128 pair codes: 112 bytes of a column's
serialized row, one 7-byte block of its group codes); chunks = ceil(units / 4). Record
(tile, c) holds, for the columns n = 32 tile + l (l = 0..31): bytes 16j..16j+15 of column
n's 112 bytes of chunk c at offset (32 j + l) * 16 (j = 0..6), then its 7 group-code bytes
zero-padded to 8 at 3584 + 8 l. Columns past N and codes past the row are zero bytes:
pair code 0, which only ever meets activations the kernels treat as zero, and group code
0, whose groups the kernels skip. Everything else (float tensors, legacy pair43 entries) is
stored as the C target stores it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from q35c.targets.native.program import BlobEntry

HEADER = struct.Struct("<4sHHII")  # magic, version, group size, K, N (format.md)
SLACK = 16  # readable bytes after the payload
TILE = 32  # columns per tiled record (one per lane)
CHUNK = 256  # weights of K per record
CODE_BYTES = 112  # pair-code bytes of a column in a chunk (7 uint4)
RECORD = TILE * CODE_BYTES + TILE * 8  # 3840


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
    tiled: bool = False

    @property
    def chunks(self) -> int:
        """Chunks of 256 weights per column (tiled layout)."""
        return -(-self.groups * self.group // CHUNK)

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
    if tiled(k, group):
        chunks = -(-groups * group // CHUNK)
        return Q3P5Layout(k, n, group, groups, meta_row, prow, meta_off, meta_off,
                          meta_off + -(-n // TILE) * chunks * RECORD + SLACK, True)
    payload_off = _align16(meta_off + n * meta_row)
    return Q3P5Layout(k, n, group, groups, meta_row, prow, meta_off, payload_off,
                      payload_off + n * prow + SLACK)


def tiled(k: int, group: int) -> bool:
    """Whether a [K, N] tensor of this group size takes the tiled layout (the GEMV's)."""
    return group == 32 and k % 16 == 0


def tile_records(payload: np.ndarray, meta: np.ndarray, chunks: int) -> np.ndarray:
    """The tiled records (uint8 [tiles, chunks, RECORD]) of the rows of pair codes
    `payload` (uint8 [N, >= chunks * 112], zero-padded) and group codes `meta`
    (uint8 [N, >= chunks * 7])."""
    n = payload.shape[0]
    tiles = -(-n // TILE)
    codes = np.zeros((tiles * TILE, chunks * CODE_BYTES), np.uint8)
    codes[:n] = payload[:, :chunks * CODE_BYTES]
    groups = np.zeros((tiles * TILE, chunks, 8), np.uint8)
    groups[:n, :, :7] = meta[:, :chunks * 7].reshape(n, chunks, 7)
    # [tile, lane, chunk, j, 16] -> [tile, chunk, j, lane, 16]
    codes = codes.reshape(tiles, TILE, chunks, 7, 16).transpose(0, 2, 3, 1, 4)
    groups = groups.reshape(tiles, TILE, chunks, 8).transpose(0, 2, 1, 3)
    return np.concatenate([codes.reshape(tiles, chunks, -1), groups.reshape(tiles, chunks, -1)],
                          axis=2)


def gpu_q3p5_bytes(serialized: bytes) -> tuple[bytes, Q3P5Layout]:
    """A serialized Q3P5 tensor (`Q3P5Tensor.to_bytes`, either version) re-laid for the GPU."""
    magic, version, group, k, n = HEADER.unpack_from(serialized)
    if magic != b"Q3P5":
        raise ValueError("not a Q3P5 serialization")
    if version != 1:  # the GPU layout starts from version 1's per-column arrays
        from q35c.compiler.quant import Q3P5Tensor

        serialized = Q3P5Tensor.from_bytes(serialized).to_bytes(version=1)
    lay = layout_of(k, n, group)
    at = HEADER.size
    words = serialized[at:at + 12 * n]
    at += 12 * n
    meta = serialized[at:at + n * lay.meta_row]
    at += n * lay.meta_row
    payload = np.frombuffer(serialized, np.uint8, n * lay.payload_row, at).reshape(n, -1)
    out = bytearray(lay.size)
    out[:12 * n] = words
    if lay.tiled:
        chunks = lay.chunks
        rows = np.zeros((n, chunks * CODE_BYTES), np.uint8)
        rows[:, :lay.payload_row] = payload
        metas = np.zeros((n, chunks * 7), np.uint8)
        metas[:, :lay.meta_row] = np.frombuffer(meta, np.uint8).reshape(n, lay.meta_row)
        records = tile_records(rows, metas, chunks).tobytes()
        out[lay.payload_off:lay.payload_off + len(records)] = records
        return bytes(out), lay
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
