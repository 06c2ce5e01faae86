"""Symbol tables of the Fortran checker (semantics.py): symbols, derived types, procedures and
nested scopes, and the checked program they make up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import ast
from .diagnostics import Diagnostics
from .semantics_types import FType


@dataclass
class Symbol:
    name: str
    spelling: str
    line: int
    col: int
    kind: str = "var"  # var | param | proc
    type: FType | None = None
    dims: list[ast.Dim] | None = None
    intent: str | None = None
    is_arg: bool = False
    value_attr: bool = False
    allocatable: bool = False
    value: Any = None
    """Folded value of a parameter (int, float, bool or numpy array)."""
    proc: ProcInfo | None = None
    declared: bool = False
    derived: DerivedType | None = None
    """For a variable of derived type (kind "derived"): its type; for a component
    variable `p%c` (kind "var"): None, and `parent` names the variable."""
    parent: Symbol | None = None

    @property
    def rank(self) -> int:
        return len(self.dims) if self.dims else 0


@dataclass
class DerivedType:
    """A `type ... end type` with scalar, constant-shape array or allocatable (deferred-shape)
    array components. Variables of the type are flattened: component `c` of `p` is the
    variable `p%c` (allocatable if the component is)."""
    name: str
    spelling: str
    components: list[Symbol]


@dataclass
class ProcInfo:
    proc: ast.Procedure
    scope: Scope
    args: list[Symbol] = field(default_factory=list)
    result: Symbol | None = None
    bound: list[str] = field(default_factory=list)
    """Dummy arguments that `--bind` made constants (no longer arguments)."""


@dataclass
class Scope:
    parent: Scope | None
    symbols: dict[str, Symbol] = field(default_factory=dict)
    implicit_none: bool = False

    def lookup(self, name: str) -> Symbol | None:
        scope = self
        while scope is not None:
            if name in scope.symbols:
                return scope.symbols[name]
            scope = scope.parent
        return None

    def strict(self) -> bool:
        scope = self
        while scope is not None:
            if scope.implicit_none:
                return True
            scope = scope.parent
        return False


@dataclass
class CheckedProgram:
    program: ast.Program
    procedures: list[ProcInfo]
    diags: Diagnostics


def _spelling(diags: Diagnostics, line: int, col: int, name: str) -> str:
    lines = diags.source.splitlines()
    if 0 < line <= len(lines):
        text = lines[line - 1][col - 1: col - 1 + len(name)]
        if text.lower() == name:
            return text
    return name
