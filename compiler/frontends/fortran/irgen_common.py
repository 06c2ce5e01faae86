"""Values and helpers shared by the IR generator's modules (irgen.py): the MLIR type of a Fortran
type, a variable's storage (`Var`) and the flags of an enclosing loop (`LoopCtx`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.dialects.builtin import DYNAMIC_INDEX, IndexType, IntegerType, f32, f64, i1
from xdsl.ir import Attribute, SSAValue

from . import ast
from .semantics import FType, Symbol

INDEX = IndexType()
DYN = DYNAMIC_INDEX


def mlir_type(t: FType) -> Attribute:
    if t.base == "integer":
        return IntegerType(8 * t.kind)
    if t.base == "real":
        return f32 if t.kind == 4 else f64
    return i1


@dataclass
class Var:
    sym: Symbol
    kind: str  # value | scalar | array | const
    value: SSAValue | None = None
    lbounds: list = field(default_factory=list)
    extents: list = field(default_factory=list)
    """Per dimension: python int (constant) or an index SSA value."""
    index_base: tuple | None = None
    """Inside a counted loop with constant start and step 1: (iv, start), the index
    variable is start + iv, so subscripts by it need no load or cast."""


@dataclass
class LoopCtx:
    stmt: ast.Stmt
    exit_flag: SSAValue | None = None
    cycle_flag: SSAValue | None = None
