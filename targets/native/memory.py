"""Memory planning: every intermediate tensor gets a fixed offset in one arena.

A buffer is live from the step that first writes it to the last step that reads it (or
any view of it). Buffers are placed largest first at the lowest offset that overlaps no
already placed buffer with an intersecting lifetime (greedy best-fit by offset, as in
TFLite's arena planner). A step's outputs never share bytes with its inputs, because
both are live at that step. The result is deterministic: ties break by creation order.
"""

from __future__ import annotations

from q35c.targets.native.program import Buffer, Program

ALIGN = 64  # bytes; a cache line, and enough for any SIMD load


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def lifetimes(program: Program) -> dict[Buffer, tuple[int, int]]:
    """[first write, last read] step indices of every arena buffer."""
    live: dict[Buffer, list[int]] = {}
    for index, step in enumerate(program.steps):
        for buf in (*step.outs, *step.ins):
            root = buf.root
            if root.kind != "arena":
                continue
            span = live.setdefault(root, [index, index])
            span[0] = min(span[0], index)
            span[1] = max(span[1], index)
    return {buf: (a, b) for buf, (a, b) in live.items()}


def plan_arena(program: Program) -> int:
    """Set `offset` on every arena buffer; return the arena size in bytes."""
    spans = lifetimes(program)
    order = sorted(spans, key=lambda b: (-b.nbytes, program.buffers.index(b)))
    placed: list[tuple[int, int, int, int]] = []  # offset, end, first, last
    size = 0
    for buf in order:
        first, last = spans[buf]
        conflicts = sorted((o, e) for o, e, start, end in placed if start <= last and first <= end)
        offset = 0
        for o, e in conflicts:
            if offset + _align(buf.nbytes) <= o:
                break
            offset = max(offset, e)
        buf.offset = offset
        end = offset + _align(max(buf.nbytes, 1))
        placed.append((offset, end, first, last))
        size = max(size, end)
    program.arena_bytes = size
    return size


TAIL = 8  # readable bytes after every blob entry: the SIMD kernels load 64 bytes for 56


def plan_blob(program: Program, header: int) -> int:
    """Set `offset` on every blob buffer (after a `header`-byte header); return the size."""
    at = _align(header)
    for entry in program.blob:
        entry.buffer.offset = at
        at = _align(at + len(entry.data) + TAIL)
    return at
