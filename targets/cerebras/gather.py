"""The embedding gather of a decode step (`q35nn.gather` of one row of a float table) as a
stage on a row of PEs, as xDSL `csl` IR.

The table [V, D] is cut by columns: PE p holds columns [p*v_tile, (p+1)*v_tile) of every
row, row r at element r*v_tile of its array `tab` (zero-padded past D), copied in once by
the host. Per launch the host copies the row number into `idx` (i16, after numpy's rule for
negative numbers and a range check, as the interpreter's gather does) and every PE copies
its slice of that row with one `@fmovs(y, tab[idx*v_tile ...])`: a DSD whose offset is
computed at run time. No value changes, so the stage is exact in any numeric mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects import arith, csl, memref
from xdsl.dialects.builtin import MemRefType, i16
from xdsl.ir import SSAValue

from q35c.compiler.diagnostics import Q35cError
from q35c.targets.cerebras.emit import _index, _int, f32

TABLE_BYTES = 32768
"""The most bytes of table per PE the default tile asks for (of a PE's 48 KB)."""


@dataclass(frozen=True)
class GatherPlan:
    rows: int
    """V, the table's rows."""
    n: int
    """D, the elements of a row (the output)."""
    v_tile: int
    kind: str = "gather"
    height = 1

    @classmethod
    def choose(cls, rows: int, n: int, v_tile: int = 0) -> GatherPlan:
        vt = v_tile or min(64, n, TABLE_BYTES // (4 * rows))
        if vt < 1:
            raise Q35cError(f"cerebras target: an embedding table of {rows} rows does not "
                            f"fit one PE column ({4 * rows} bytes per column; splitting the "
                            "rows over PEs is not implemented)")
        if rows * vt >= 2 ** 15:
            raise Q35cError(f"cerebras target: an embedding table of {rows} x {vt} per PE "
                            "needs offsets beyond i16")
        return cls(rows, n, vt)

    @property
    def width(self) -> int:
        return -(-self.n // self.v_tile)

    def role(self, x: int) -> str:
        return "single"

    def roles(self) -> list[str]:
        return ["single"]

    def inputs(self) -> tuple[str, ...]:
        return ("idx",)

    def constants(self) -> tuple[str, ...]:
        return ("tab",)


def buffers(plan: GatherPlan) -> dict[str, tuple[object, int]]:
    return {"tab": (f32, plan.rows * plan.v_tile), "idx": (i16, 1), "y": (f32, plan.v_tile)}


class GatherProgram:
    """Builds the gather stage's PE program (inside an ImplicitBuilder)."""

    def __init__(self, plan: GatherPlan, role: str):
        self.plan, self.role = plan, role
        self.bufs: dict[str, SSAValue] = {}
        self.dsds: dict[str, SSAValue] = {}

    def declare(self) -> None:
        for name, (elem, size) in buffers(self.plan).items():
            buf = csl.ZerosOp(MemRefType(elem, (size,)))
            buf.result.name_hint = name
            self.bufs[name] = buf.result
            if name == "idx":
                continue
            dsd = csl.GetMemDsdOp.build(operands=[buf, [_int(self.plan.v_tile)]],
                                        result_types=[csl.DsdType(csl.DsdKind.mem1d_dsd)])
            dsd.result.name_hint = f"{name}_dsd"
            self.dsds[name] = dsd.result

    def body(self) -> None:
        row = memref.LoadOp.get(self.bufs["idx"], [_index(_int(0))]).res
        offset = arith.MuliOp(row, _int(self.plan.v_tile)).result
        src = csl.IncrementDsdOffsetOp.build(
            operands=[self.dsds["tab"], offset], properties={"elem_type": f32},
            result_types=[csl.DsdType(csl.DsdKind.mem1d_dsd)]).result
        csl.FmovsOp(operands=[[self.dsds["y"], src]])


def table_slice(plan: GatherPlan, table, x: int):
    """PE x's part of the table: columns [x*v_tile, ...), rows one after another."""
    out = np.zeros((plan.rows, plan.v_tile), np.float32)
    part = np.asarray(table, np.float32)[:, x * plan.v_tile:(x + 1) * plan.v_tile]
    out[:, :part.shape[1]] = part
    return out.reshape(-1)


def row_number(plan: GatherPlan, ids) -> int:
    """The table row of a [1]-element index input (numpy's negative numbers), range
    checked as the interpreter's `q35nn.gather` does."""
    flat = np.asarray(ids).reshape(-1)
    if flat.size != 1:
        raise Q35cError(f"cerebras target: a gather of {flat.size} rows (one token per "
                        "decode step is mapped)")
    r = int(flat[0])
    if not -plan.rows <= r < plan.rows:
        raise Q35cError(f"cerebras target: gather index {r} out of range for a table of "
                        f"{plan.rows} rows")
    return r % plan.rows
