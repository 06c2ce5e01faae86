"""Semantic checks and typing of the Fortran AST.

Builds one symbol table per module and per procedure, folds `parameter` constants, gives
every expression an FType, and reports (with file:line:col) what Fortran rejects:
undeclared names under `implicit none`, names that clash case-insensitively, assignment to
`intent(in)` arguments and to constants, rank and shape mismatches, and kind mismatches
(bad kind values, intrinsic arguments of different kinds, actual/dummy argument kinds).
It does not decide how anything is stored; irgen.py does.
"""

from __future__ import annotations

from . import ast
from .diagnostics import Diagnostics, FortranError
from .semantics_constants import ConstantFolder
from .semantics_decls import DeclarationChecker
from .semantics_exprs import ExpressionChecker
from .semantics_intrinsics import IntrinsicChecker

# The `X as X` names are re-exported: irgen.py, raising.py and the tests import them from here.
from .semantics_scopes import CheckedProgram, ProcInfo as ProcInfo, Scope, Symbol as Symbol
from .semantics_stmts import StatementChecker, _walk as _walk
from .semantics_types import FType as FType, _promote as _promote


class Checker(DeclarationChecker, ConstantFolder, StatementChecker, ExpressionChecker,
              IntrinsicChecker):
    """Checks and types one program: the program structure here; declarations, constant folding,
    statements, expressions and intrinsics in the mixins of semantics_decls.py,
    semantics_constants.py, semantics_stmts.py, semantics_exprs.py and semantics_intrinsics.py."""

    def __init__(self, program: ast.Program, diags: Diagnostics,
                 bindings: dict[str, str] | None = None, entry: str | None = None):
        self.program = program
        self.diags = diags
        self.bindings = {k.lower(): v for k, v in (bindings or {}).items()}
        self.binding_names = {k.lower(): k for k in (bindings or {})}
        """`--bind NAME=VALUE`: scalar parameters named NAME, and the scalar argument NAME
        of the entry procedure, take VALUE (semantics_decls.bound_value)."""
        self.bound: set[str] = set()
        self.bind_entry = entry.lower() if entry else None
        self.modules: dict[str, Scope] = {}
        self.procs: list[ProcInfo] = []
        self.globals = Scope(None)  # external procedures

    def err(self, node, message: str, col: int | None = None) -> FortranError:
        if col is not None:
            return self.diags.error(node.line, col, message)
        return self.diags.error(node.line, max(node.col, 1), message)

    # -- program structure ---------------------------------------------------------------

    def unit_diags(self, unit) -> Diagnostics:
        """The Diagnostics of the file that defines a module or procedure (sources.py)."""
        return unit.diags if unit.diags is not None else self.input_diags

    def check(self) -> CheckedProgram:
        self.input_diags = self.diags
        for mod in self.program.modules:
            self.diags = self.unit_diags(mod)
            if mod.name in self.modules:
                raise self.err(mod, f"module '{mod.name}' is defined twice")
            scope = Scope(None)
            self.modules[mod.name] = scope
            self.spec_part(mod.body, scope, None, executable_allowed=False)
            for proc in mod.procedures:
                self.declare_proc(proc, scope)
        for proc in self.program.procedures:
            self.diags = self.unit_diags(proc)
            self.declare_proc(proc, self.globals)
        if self.bind_entry is None and len(self.procs) == 1:
            self.bind_entry = self.procs[0].proc.name
        for info in self.procs:
            self.diags = self.unit_diags(info.proc)
            self.spec_of_proc(info)
        for info in self.procs:
            self.diags = self.unit_diags(info.proc)
            self.exec_part(info)
        self.diags = self.input_diags
        self.check_bindings()
        return CheckedProgram(self.program, self.procs, self.diags)


def check(program: ast.Program, diags: Diagnostics, bindings: dict[str, str] | None = None,
          entry: str | None = None) -> CheckedProgram:
    checker = Checker(program, diags, bindings, entry)
    checker.current = None
    return checker.check()
