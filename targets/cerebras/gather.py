"""The embedding gather of a decode step (`q35nn.gather` of one row of a float table) as a
stage on a row of PEs, as xDSL `csl` IR.

The table [V, D] is cut into blocks of `block` rows by `v_tile` columns: PE (x, y) holds
rows [y*block, (y+1)*block) of columns [x*v_tile, (x+1)*v_tile), row r at element
(r - y*block)*v_tile of its array `tab` (zero-padded), copied in once by the host; `block`
is as many rows as fit 32 KB. Per launch the host finds the token's row (numpy's rule for
negative numbers, a range check, as the interpreter's gather does), copies its number
within the block into `idx` (i16) of the PEs of that block's row (0 elsewhere), and every
PE copies one row slice with one `@fmovs(y, tab[idx*v_tile ...])`: a DSD whose offset is
computed at run time. The host reads `y` of the token's PE row. No value changes, so the
stage is exact in any numeric mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects import arith, csl, memref
from xdsl.dialects.builtin import i16
from xdsl.ir import SSAValue

from q35c.compiler.diagnostics import Q35cError
from q35c.targets.cerebras.emit import _index, _int, declare_arrays, f32, moved_dsd
from q35c.targets.cerebras.plan import Grid

TABLE_BYTES = 32768
"""The most bytes of table per PE (of a PE's 48 KB)."""


@dataclass(frozen=True)
class GatherPlan(Grid):
    rows: int
    """V, the table's rows."""
    n: int
    """D, the elements of a row (the output)."""
    v_tile: int
    """Columns per PE."""
    block: int
    """Rows per PE: PE (x, y) holds rows [y*block, (y+1)*block)."""
    kind: str = "gather"

    @classmethod
    def choose(cls, rows: int, n: int, v_tile: int = 0) -> GatherPlan:
        vt = v_tile or min(64, n)
        block = min(rows, TABLE_BYTES // (4 * vt))
        if block < 1:
            raise Q35cError(f"cerebras target: a gather tile of {vt} columns does not fit "
                            f"{TABLE_BYTES} bytes of a PE")
        return cls(rows, n, vt, block)

    def spans(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return (self.n, self.v_tile), (self.rows, self.block)

    def role(self, x: int) -> str:
        return "single"

    def roles(self) -> list[str]:
        return ["single"]

    def inputs(self) -> tuple[str, ...]:
        return ("idx",)

    def constants(self) -> tuple[str, ...]:
        return ("tab",)


def buffers(plan: GatherPlan) -> dict[str, tuple[object, int]]:
    return {"tab": (f32, plan.block * plan.v_tile), "idx": (i16, 1), "y": (f32, plan.v_tile)}


class GatherProgram:
    """Builds the gather stage's PE program (inside an ImplicitBuilder)."""

    def __init__(self, plan: GatherPlan, role: str):
        self.plan, self.role = plan, role
        self.bufs: dict[str, SSAValue] = {}
        self.dsds: dict[str, SSAValue] = {}

    def declare(self) -> None:
        vt = self.plan.v_tile
        self.bufs, self.dsds = declare_arrays(
            buffers(self.plan), lambda name, size: None if name == "idx" else vt)

    def body(self) -> None:
        row = memref.LoadOp.get(self.bufs["idx"], [_index(_int(0))]).res
        offset = arith.MuliOp(row, _int(self.plan.v_tile)).result
        src = moved_dsd(self.dsds["tab"], offset, f32)
        csl.FmovsOp(operands=[[self.dsds["y"], src]])


def table_slice(plan: GatherPlan, table, x: int, y: int) -> np.ndarray:
    """PE (x, y)'s part of the table: rows [y*block, ...) of columns [x*v_tile, ...), row
    after row, zero-padded."""
    out = np.zeros((plan.block, plan.v_tile), np.float32)
    part = np.asarray(table, np.float32)[y * plan.block:(y + 1) * plan.block,
                                         x * plan.v_tile:(x + 1) * plan.v_tile]
    out[:part.shape[0], :part.shape[1]] = part
    return out.reshape(-1)


def row_number(plan: GatherPlan, ids) -> tuple[int, int]:
    """(PE row holding the token's row, the row within it) for a [1]-element index input
    (numpy's negative numbers), range checked as the interpreter's `q35nn.gather` does."""
    flat = np.asarray(ids).reshape(-1)
    if flat.size != 1:
        raise Q35cError(f"cerebras target: a gather of {flat.size} rows (one token per "
                        "decode step is mapped)")
    r = int(flat[0])
    if not -plan.rows <= r < plan.rows:
        raise Q35cError(f"cerebras target: gather index {r} out of range for a table of "
                        f"{plan.rows} rows")
    return divmod(r % plan.rows, plan.block)
