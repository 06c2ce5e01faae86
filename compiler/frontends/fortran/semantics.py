"""Semantic checks and typing of the Fortran AST.

Builds one symbol table per module and per procedure, folds `parameter` constants, gives
every expression an FType, and reports (with file:line:col) what Fortran rejects:
undeclared names under `implicit none`, names that clash case-insensitively, assignment to
`intent(in)` arguments and to constants, rank and shape mismatches, and kind mismatches
(bad kind values, intrinsic arguments of different kinds, actual/dummy argument kinds).
It does not decide how anything is stored; irgen.py does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import ast
from .diagnostics import Diagnostics, FortranError

INT_KINDS = (1, 2, 4, 8)
REAL_KINDS = (4, 8)
INTRINSIC_MODULES: dict[str, dict[str, int]] = {
    "iso_fortran_env": {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "real32": 4,
                        "real64": 8},
    "iso_c_binding": {"c_int8_t": 1, "c_int16_t": 2, "c_int32_t": 4, "c_int64_t": 8,
                      "c_int": 4, "c_long": 8, "c_float": 4, "c_double": 8, "c_bool": 1},
}


@dataclass(frozen=True)
class FType:
    base: str  # integer | real | logical
    kind: int
    rank: int = 0

    def scalar(self) -> FType:
        return FType(self.base, self.kind)

    def with_rank(self, rank: int) -> FType:
        return FType(self.base, self.kind, rank)

    @property
    def numeric(self) -> bool:
        return self.base in ("integer", "real")

    def __str__(self) -> str:
        text = f"{self.base}({self.kind})"
        return text + (f", rank {self.rank}" if self.rank else "")


INTEGER = FType("integer", 4)
REAL = FType("real", 4)
LOGICAL = FType("logical", 4)


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
    arg_index: int = -1
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

    @property
    def assumed_shape(self) -> bool:
        return bool(self.dims) and all(d.is_range and d.upper is None for d in self.dims) \
            and not self.allocatable


@dataclass
class DerivedType:
    """A `type ... end type` with scalar or constant-shape array components. Variables of
    the type are flattened: component `c` of `p` is the variable `p%c`."""
    name: str
    spelling: str
    components: list[Symbol]


@dataclass
class ProcInfo:
    proc: ast.Procedure
    scope: Scope
    args: list[Symbol] = field(default_factory=list)
    result: Symbol | None = None


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
    module_scopes: dict[str, Scope]
    diags: Diagnostics


# intrinsic name -> category; types are decided in Checker._intrinsic
ELEMENTAL_INTRINSICS = {"int", "real", "nint", "abs", "min", "max", "mod", "sqrt", "exp", "log",
                        "tanh", "sin", "cos", "iand", "ior", "ieor", "not", "ishft", "ibits",
                        "shiftl", "shiftr", "dble", "merge"}
REDUCTION_INTRINSICS = {"sum", "maxval", "minval", "dot_product", "product"}
INQUIRY_INTRINSICS = {"size", "huge", "kind", "lbound", "ubound", "tiny", "epsilon"}
INTRINSICS = ELEMENTAL_INTRINSICS | REDUCTION_INTRINSICS | INQUIRY_INTRINSICS | {"matmul"}


class Checker:
    def __init__(self, program: ast.Program, diags: Diagnostics):
        self.program = program
        self.diags = diags
        self.modules: dict[str, Scope] = {}
        self.procs: list[ProcInfo] = []
        self.globals = Scope(None)  # external procedures

    def err(self, node, message: str, col: int | None = None) -> FortranError:
        if col is not None:
            return self.diags.error(node.line, col, message)
        return self.diags.error(node.line, max(node.col, 1), message)

    # -- program structure ---------------------------------------------------------------

    def check(self) -> CheckedProgram:
        for mod in self.program.modules:
            if mod.name in self.modules:
                raise self.err(mod, f"module '{mod.name}' is defined twice")
            scope = Scope(None)
            self.modules[mod.name] = scope
            self.spec_part(mod.body, scope, None, executable_allowed=False)
            for proc in mod.procedures:
                self.declare_proc(proc, scope)
        for proc in self.program.procedures:
            self.declare_proc(proc, self.globals)
        for info in self.procs:
            self.spec_of_proc(info)
        for info in self.procs:
            self.exec_part(info)
        return CheckedProgram(self.program, self.procs, self.modules, self.diags)

    def declare_proc(self, proc: ast.Procedure, scope: Scope) -> None:
        self.add_symbol(scope, Symbol(proc.name, proc.spelling, proc.line, proc.col,
                                      kind="proc", declared=True), proc)
        info = ProcInfo(proc, Scope(scope if scope is not self.globals else self.globals))
        scope.symbols[proc.name].proc = info
        self.procs.append(info)

    def add_symbol(self, scope: Scope, sym: Symbol, node) -> Symbol:
        old = scope.symbols.get(sym.name)
        if old is not None:
            if old.spelling != sym.spelling:
                raise self.err(node, f"'{sym.spelling}' clashes with '{old.spelling}' "
                                     f"declared at line {old.line}: Fortran names are "
                                     "case-insensitive", col=sym.col)
            raise self.err(node, f"'{sym.spelling}' is already declared at line {old.line}",
                           col=sym.col)
        scope.symbols[sym.name] = sym
        return sym

    def spec_of_proc(self, info: ProcInfo) -> None:
        self.current = info
        proc, scope = info.proc, info.scope
        for i, (name, spelling, line, col) in enumerate(proc.args):
            if name in scope.symbols:
                raise self.diags.error(line, col, f"dummy argument '{spelling}' appears twice")
            scope.symbols[name] = Symbol(name, spelling, line, col, is_arg=True, arg_index=i)
        if proc.kind == "function":
            rname = proc.result or proc.name
            if rname in scope.symbols:
                raise self.err(proc, f"function result '{rname}' clashes with a dummy argument")
            scope.symbols[rname] = Symbol(rname, rname, proc.line, proc.col)
            info.result = scope.symbols[rname]
            if proc.return_type is not None:
                info.result.type = self.type_of_spec(proc.return_type, scope)
                info.result.declared = True
        self.spec_part(proc.body, scope, info, executable_allowed=True)
        for name, spelling, line, col in proc.args:
            sym = scope.symbols[name]
            if not sym.declared:
                if scope.strict():
                    raise self.diags.error(line, col, f"dummy argument '{spelling}' has no "
                                                      "type declaration (implicit none)")
                sym.type = self.implicit_type(name)
            if sym.kind == "derived":  # one argument per component
                info.args += [scope.symbols[f"{name}%{c.name}"] for c in sym.derived.components]
            else:
                info.args.append(sym)
        for index, sym in enumerate(info.args):
            sym.arg_index = index
        if info.result is not None and info.result.type is None:
            if scope.strict():
                raise self.err(proc, f"function '{proc.spelling}' has no result type "
                                     "(implicit none)")
            info.result.type = self.implicit_type(info.result.name)
        if info.result is not None and info.result.rank:
            raise self.err(proc, "array-valued function results are not supported; "
                                 "use a subroutine with an intent(out) argument")

    def implicit_type(self, name: str) -> FType:
        return INTEGER if name[0] in "ijklmn" else REAL

    def spec_part(self, body: list[ast.Stmt], scope: Scope, info: ProcInfo | None,
                  executable_allowed: bool) -> None:
        seen_exec = False
        self.pending_bounds: list = []
        for stmt in body:
            if isinstance(stmt, ast.Use):
                self.use(stmt, scope)
            elif isinstance(stmt, ast.ImplicitNone):
                scope.implicit_none = True
            elif isinstance(stmt, ast.Access):
                continue
            elif isinstance(stmt, ast.TypeDef):
                self.type_def(stmt, scope)
            elif isinstance(stmt, ast.Decl):
                if seen_exec:
                    raise self.err(stmt, "declaration after an executable statement")
                self.decl(stmt, scope, info)
            else:
                if not executable_allowed:
                    raise self.err(stmt, "executable statement outside a procedure")
                seen_exec = True
        # bounds may name dummy arguments declared later in the same specification part
        for bound, bscope, ent in self.pending_bounds:
            self.spec_expr(bound, bscope, ent)

    def use(self, stmt: ast.Use, scope: Scope) -> None:
        if stmt.module in INTRINSIC_MODULES:
            table = INTRINSIC_MODULES[stmt.module]
            names = [n for n, _, _ in stmt.only] if stmt.only is not None else list(table)
            for (n, line, col) in (stmt.only or [(n, stmt.line, stmt.col) for n in names]):
                if n not in table:
                    raise self.diags.error(line, col, f"'{n}' is not in module {stmt.module}")
                if n not in scope.symbols:
                    scope.symbols[n] = Symbol(n, n, line, col, kind="param", type=INTEGER,
                                              value=table[n], declared=True)
            return
        if stmt.module not in self.modules:
            raise self.err(stmt, f"module '{stmt.module}' is not defined before this use")
        source = self.modules[stmt.module]
        wanted = stmt.only if stmt.only is not None else [
            (n, stmt.line, stmt.col) for n in source.symbols]
        for n, line, col in wanted:
            if n not in source.symbols:
                raise self.diags.error(line, col, f"'{n}' is not in module {stmt.module}")
            if n in scope.symbols and scope.symbols[n] is not source.symbols[n]:
                raise self.diags.error(line, col, f"'{n}' is already declared here")
            scope.symbols[n] = source.symbols[n]

    def type_def(self, stmt: ast.TypeDef, scope: Scope) -> None:
        components: list[Symbol] = []
        names: dict[str, Symbol] = {}
        for decl in stmt.components:
            if decl.type_spec.base == "type":
                raise self.err(decl, "derived-type components of derived type are not "
                                     "supported")
            if set(decl.attrs) - {"dimension"}:
                raise self.err(decl, f"component attributes {sorted(set(decl.attrs))} are "
                                     "not supported")
            ftype = self.type_of_spec(decl.type_spec, scope)
            for ent in decl.entities:
                if ent.init is not None:
                    raise self.err(ent, "default component values are not supported")
                dims = ent.dims if ent.dims is not None else decl.attrs.get("dimension")
                for d in dims or []:
                    if d.upper is None:
                        raise self.err(ent, f"component '{ent.spelling}' needs a constant "
                                            "shape")
                    for bound in (d.lower, d.upper):
                        if bound is not None:
                            self.const_int(bound, scope, "a component bound")
                if ent.name in names:
                    raise self.err(ent, f"component '{ent.spelling}' is declared twice")
                comp = Symbol(ent.name, ent.spelling, ent.line, ent.col, declared=True,
                              type=ftype.with_rank(len(dims) if dims else 0), dims=dims)
                names[ent.name] = comp
                components.append(comp)
        spelling = _spelling(self.diags, stmt.line, stmt.col, stmt.name)
        sym = Symbol(stmt.name, stmt.name, stmt.line, stmt.col, kind="type", declared=True)
        sym.derived = DerivedType(stmt.name, spelling, components)
        self.add_symbol(scope, sym, stmt)

    def derived_type(self, spec: ast.TypeSpec, scope: Scope) -> DerivedType:
        sym = scope.lookup(spec.type_name)
        if sym is None or sym.kind != "type":
            raise self.err(spec, f"'{spec.type_name}' is not a derived type")
        return sym.derived

    def flatten(self, d: ast.Designator, scope: Scope) -> None:
        """Rewrite `p%c(args)` in place to the component variable `p%c`."""
        if len(d.parts) == 1:
            return
        base, comp = d.parts[0], d.parts[1]
        if len(d.parts) > 2:
            raise self.err(d, "nested derived-type components are not supported")
        sym = scope.lookup(base.name)
        if sym is None or sym.kind != "derived":
            raise self.err(base, f"'{base.spelling}' is not a variable of derived type")
        if base.args is not None:
            raise self.err(base, "arrays of derived type are not supported")
        name = f"{base.name}%{comp.name}"
        if scope.lookup(name) is None:
            raise self.err(comp, f"type '{sym.derived.spelling}' has no component "
                                 f"'{comp.spelling}'")
        d.parts = [ast.Part(name=name, spelling=f"{base.spelling}%{comp.spelling}",
                            args=comp.args, line=base.line, col=base.col)]

    def type_of_spec(self, spec: ast.TypeSpec, scope: Scope) -> FType:
        if spec.base == "type":
            raise self.err(spec, "a derived type is not allowed here")
        default = {"integer": 4, "real": 4, "logical": 4}[spec.base]
        if spec.kind is None:
            return FType(spec.base, default)
        kind = self.const_int(spec.kind, scope, "a kind")
        allowed = REAL_KINDS if spec.base == "real" else INT_KINDS
        if kind not in allowed:
            raise self.err(spec.kind, f"kind {kind} is not a valid {spec.base} kind "
                                      f"(valid: {', '.join(map(str, allowed))})")
        return FType(spec.base, kind)

    def decl(self, stmt: ast.Decl, scope: Scope, info: ProcInfo | None) -> None:
        if stmt.type_spec.base == "type":
            return self.derived_decl(stmt, scope, info)
        ftype = self.type_of_spec(stmt.type_spec, scope)
        attrs = stmt.attrs
        for ent in stmt.entities:
            dims = ent.dims if ent.dims is not None else attrs.get("dimension")
            sym = scope.symbols.get(ent.name)
            if sym is not None and (sym.is_arg or (info and sym is info.result)) \
                    and not sym.declared:
                if sym.spelling != ent.spelling and sym.is_arg:
                    raise self.err(ent, f"'{ent.spelling}' clashes with the dummy argument "
                                        f"'{sym.spelling}': Fortran names are case-insensitive")
            else:
                if "intent" in attrs or "value" in attrs:
                    raise self.err(ent, f"'{ent.spelling}' has intent/value but is not a "
                                        "dummy argument")
                sym = self.add_symbol(scope, Symbol(ent.name, ent.spelling, ent.line,
                                                    ent.col), ent)
            sym.declared = True
            sym.type = ftype.with_rank(len(dims) if dims else 0)
            sym.dims = dims
            sym.intent = attrs.get("intent")
            sym.value_attr = bool(attrs.get("value"))
            sym.allocatable = bool(attrs.get("allocatable"))
            if sym.value_attr and sym.intent in ("out", "inout"):
                raise self.err(ent, f"'{ent.spelling}' cannot be both value and intent(out)")
            if dims:
                if len(dims) > 3:
                    raise self.err(ent, f"'{ent.spelling}' has rank {len(dims)}; at most 3 "
                                        "is supported")
                deferred = [d.is_range and d.upper is None and d.lower is None for d in dims]
                if sym.allocatable and not all(deferred):
                    raise self.err(ent, f"allocatable '{ent.spelling}' needs a deferred "
                                        "shape like (:, :)")
                if any(deferred) and not sym.allocatable and not sym.is_arg:
                    raise self.err(ent, f"local array '{ent.spelling}' with deferred shape "
                                        "must be allocatable")
                for d in dims:
                    for bound in (d.lower, d.upper):
                        if bound is not None:
                            self.pending_bounds.append((bound, scope, ent))
            if attrs.get("parameter"):
                if ent.init is None:
                    raise self.err(ent, f"parameter '{ent.spelling}' needs a value")
                sym.kind = "param"
                sym.value = self.fold_param(ent, sym, scope)
            elif ent.init is not None:
                raise self.err(ent.init, f"initializing '{ent.spelling}' in its declaration "
                                         "implies SAVE, which kernels do not support; assign "
                                         "it in the body")

    def derived_decl(self, stmt: ast.Decl, scope: Scope, info: ProcInfo | None) -> None:
        dtype = self.derived_type(stmt.type_spec, scope)
        attrs = stmt.attrs
        if set(attrs) - {"intent", "target"}:
            raise self.err(stmt, f"attributes {sorted(set(attrs) - {'intent', 'target'})} "
                                 "are not supported on derived-type variables")
        for ent in stmt.entities:
            if ent.dims is not None or ent.init is not None:
                raise self.err(ent, "arrays and initializers of derived type are not "
                                    "supported")
            sym = scope.symbols.get(ent.name)
            if sym is not None and sym.is_arg and not sym.declared:
                if sym.spelling != ent.spelling:
                    raise self.err(ent, f"'{ent.spelling}' clashes with the dummy argument "
                                        f"'{sym.spelling}': Fortran names are case-insensitive")
            else:
                if "intent" in attrs:
                    raise self.err(ent, f"'{ent.spelling}' has intent but is not a dummy "
                                        "argument")
                sym = self.add_symbol(scope, Symbol(ent.name, ent.spelling, ent.line,
                                                    ent.col), ent)
            sym.kind, sym.declared, sym.derived = "derived", True, dtype
            sym.intent = attrs.get("intent")
            for comp in dtype.components:
                name = f"{ent.name}%{comp.name}"
                scope.symbols[name] = Symbol(
                    name, f"{sym.spelling}%{comp.spelling}", ent.line, ent.col,
                    type=comp.type, dims=comp.dims, intent=sym.intent, is_arg=sym.is_arg,
                    declared=True, parent=sym)

    def spec_expr(self, expr: ast.Expr, scope: Scope, ent) -> None:
        t = self.expr(expr, scope)
        if t.base != "integer" or t.rank:
            raise self.err(expr, "array bounds must be scalar integer expressions")

    def fold_param(self, ent: ast.Entity, sym: Symbol, scope: Scope):
        init = ent.init
        t = self.expr(init, scope)
        value = self.fold(init, scope)
        if value is None:
            raise self.err(init, f"the value of parameter '{ent.spelling}' is not a constant "
                                 "expression")
        ftype = sym.type
        if not _assignable(ftype, t):
            raise self.err(init, f"cannot initialize {ftype.base} parameter "
                                 f"'{ent.spelling}' with {t.base}")
        if ftype.rank:
            arr = np.asarray(value)
            shape = []
            for d in sym.dims:
                lo = self.const_int(d.lower, scope, "a bound") if d.lower is not None else 1
                if d.upper is None:
                    raise self.err(ent, "parameter arrays need explicit bounds")
                shape.append(self.const_int(d.upper, scope, "a bound") - lo + 1)
            if arr.size != int(np.prod(shape)):
                raise self.err(init, f"parameter '{ent.spelling}' has {int(np.prod(shape))} "
                                     f"elements but its value has {arr.size}")
            return _convert(arr, ftype).reshape(shape, order="F")
        if t.rank:
            raise self.err(init, f"scalar parameter '{ent.spelling}' given an array value")
        return _convert(np.asarray(value), ftype)[()]

    # -- constants -----------------------------------------------------------------------

    def const_int(self, expr: ast.Expr, scope: Scope, what: str) -> int:
        self.expr(expr, scope)
        value = self.fold(expr, scope)
        if value is None or np.ndim(value) or not isinstance(value, (int, np.integer)):
            raise self.err(expr, f"{what} must be a constant integer expression")
        return int(value)

    def fold(self, expr: ast.Expr, scope: Scope):
        """The constant value of a typed expression, or None if it is not constant."""
        if isinstance(expr, ast.IntLit):
            return _wrap(expr.value, expr.type.kind)
        if isinstance(expr, ast.BozLit):
            return _wrap(expr.value, expr.type.kind)
        if isinstance(expr, ast.RealLit):
            return np.float64(expr.text) if expr.type.kind == 8 else np.float32(expr.text)
        if isinstance(expr, ast.LogicalLit):
            return expr.value
        if isinstance(expr, ast.ArrayCtor):
            values = [self.fold(i, scope) for i in expr.items]
            if any(v is None for v in values):
                return None
            return _convert(np.asarray(values), expr.type)
        if isinstance(expr, ast.UnOp):
            v = self.fold(expr.operand, scope)
            if v is None:
                return None
            if expr.op == "-":
                if expr.type.base == "integer" and not np.ndim(v):
                    return self.exact_int(expr, -int(v))
                return _convert(-np.asarray(v), expr.type)[()]
            if expr.op == ".not.":
                return not v
            return v
        if isinstance(expr, ast.BinOp):
            a, b = self.fold(expr.lhs, scope), self.fold(expr.rhs, scope)
            if a is None or b is None or expr.type.rank:
                return None
            if expr.op in ("+", "-", "*", "/") and expr.type.numeric:
                a = _convert(np.asarray(a), expr.type)[()]
                b = _convert(np.asarray(b), expr.type)[()]
                if expr.type.base == "integer" and expr.op != "/":
                    exact = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__}[expr.op]
                    return self.exact_int(expr, exact(int(a), int(b)))
                with np.errstate(all="ignore"):
                    if expr.op == "/" and expr.type.base == "integer":
                        if b == 0:
                            raise self.err(expr, "integer division by zero in a constant")
                        q = abs(int(a)) // abs(int(b))
                        return _wrap(-q if (a < 0) != (b < 0) else q, expr.type.kind)
                    r = {"+": np.add, "-": np.subtract, "*": np.multiply,
                         "/": np.divide}[expr.op](a, b)
                return _convert(np.asarray(r), expr.type)[()]
            return None
        if isinstance(expr, ast.Designator) and len(expr.parts) == 1:
            part = expr.parts[0]
            sym = scope.lookup(part.name)
            if sym is not None and sym.kind == "param" and part.args is None:
                return sym.value
            if sym is None or sym.kind != "var":
                return self.fold_intrinsic(expr, scope)
        return None

    def exact_int(self, expr: ast.Expr, value: int) -> np.integer:
        """The exact result of a constant integer operation, which must fit the
        expression's kind (gfortran: "Arithmetic overflow"), never wrapped."""
        kind = expr.type.kind
        if not -_huge(kind) - 1 <= value <= _huge(kind):
            raise self.err(expr, f"arithmetic overflow in a constant expression: {value} "
                                 f"does not fit integer({kind}) (range {-_huge(kind) - 1} "
                                 f"to {_huge(kind)})")
        return np.dtype(f"int{8 * kind}").type(value)

    def fold_intrinsic(self, expr: ast.Designator, scope: Scope):
        part = expr.parts[0]
        args = part.args or []
        if part.name == "kind" and len(args) == 1:
            return args[0].type.kind
        if part.name == "huge" and len(args) == 1:
            t = args[0].type
            if t.base == "integer":
                return _wrap((1 << (8 * t.kind - 1)) - 1, t.kind)
            return np.finfo(np.float32 if t.kind == 4 else np.float64).max
        if part.name in ("int", "real", "dble") and args:
            v = self.fold(args[0], scope)
            if v is None or np.ndim(v):
                return None
            return _convert(np.asarray(v), expr.type)[()]
        return None

    # -- executable part -----------------------------------------------------------------

    def exec_part(self, info: ProcInfo) -> None:
        self.current = info
        self.loops: list[ast.Stmt] = []
        for stmt in info.proc.body:
            if not isinstance(stmt, (ast.Decl, ast.Use, ast.ImplicitNone, ast.Access)):
                self.stmt(stmt, info.scope)

    def stmts(self, body: list[ast.Stmt], scope: Scope) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.Decl, ast.Use, ast.ImplicitNone, ast.Access, ast.TypeDef)):
                raise self.err(stmt, "declaration inside an executable construct")
            self.stmt(stmt, scope)

    def stmt(self, stmt: ast.Stmt, scope: Scope) -> None:
        method = getattr(self, "stmt_" + type(stmt).__name__.lower())
        method(stmt, scope)

    def stmt_assign(self, stmt: ast.Assign, scope: Scope) -> None:
        target = stmt.target
        sym = self.variable(target, scope, writing=True)
        lt = self.expr(target, scope)
        rt = self.expr(stmt.value, scope)
        if not _assignable(lt, rt):
            raise self.err(stmt.value, f"cannot assign {rt.base}({rt.kind}) to "
                                       f"'{sym.spelling}' of type {lt.base}({lt.kind})")
        if rt.rank and rt.rank != lt.rank:
            raise self.err(stmt.value, f"rank mismatch in assignment: '{sym.spelling}' "
                                       f"{'element' if not lt.rank else 'section'} has rank "
                                       f"{lt.rank}, the value has rank {rt.rank}")
        self.check_conformable(target, stmt.value, scope)

    def check_conformable(self, a: ast.Expr, b: ast.Expr, scope: Scope) -> None:
        sa, sb = self.static_shape(a, scope), self.static_shape(b, scope)
        if sa and sb and len(sa) == len(sb) and any(
                x is not None and y is not None and x != y for x, y in zip(sa, sb)):
            raise self.err(b, f"shape mismatch: {_fmt_shape(sa)} and {_fmt_shape(sb)}")

    def static_shape(self, expr: ast.Expr, scope: Scope) -> list[int | None] | None:
        """Extents known at compile time (None where not), for rank > 0 expressions."""
        if expr.type is None or not expr.type.rank:
            return None
        if isinstance(expr, ast.Designator) and len(expr.parts) == 1:
            sym = scope.lookup(expr.name)
            if sym is None or sym.kind == "proc" or not sym.dims:
                return None
            part = expr.parts[0]
            extents = []
            for i, d in enumerate(sym.dims):
                full = self.static_extent(d, scope)
                if part.args is None:
                    extents.append(full)
                    continue
                a = part.args[i]
                if not isinstance(a, ast.Section):
                    continue
                lo = self.fold(a.lo, scope) if a.lo is not None else (
                    self.fold(d.lower, scope) if d.lower is not None else 1)
                hi = self.fold(a.hi, scope) if a.hi is not None else (
                    self.fold(d.upper, scope) if d.upper is not None else None)
                st = self.fold(a.step, scope) if a.step is not None else 1
                if lo is None or hi is None or st is None or st == 0:
                    extents.append(None)
                else:
                    extents.append(max(0, (int(hi) - int(lo) + int(st)) // int(st)))
            return extents
        if isinstance(expr, ast.BinOp):
            return self.static_shape(expr.lhs, scope) or self.static_shape(expr.rhs, scope)
        if isinstance(expr, ast.UnOp):
            return self.static_shape(expr.operand, scope)
        if isinstance(expr, ast.ArrayCtor):
            return [len(expr.items)]
        return None

    def static_extent(self, d: ast.Dim, scope: Scope) -> int | None:
        if d.upper is None:
            return None
        hi = self.fold(d.upper, scope)
        lo = self.fold(d.lower, scope) if d.lower is not None else 1
        if hi is None or lo is None:
            return None
        return max(0, int(hi) - int(lo) + 1)

    def variable(self, target: ast.Designator, scope: Scope, writing: bool) -> Symbol:
        self.flatten(target, scope)
        part = target.parts[0]
        sym = self.resolve(part, scope)
        if sym.kind == "param":
            raise self.err(target, f"cannot assign to the constant '{sym.spelling}'")
        if sym.kind in ("derived", "type", "intrinsic"):
            raise self.err(target, f"cannot assign to '{part.spelling}' as a whole")
        if sym.kind == "proc":
            info = sym.proc
            if info is self.current and info.result is not None and \
                    info.result.name == sym.name:
                return info.result
            raise self.err(target, f"cannot assign to the procedure '{sym.spelling}'")
        if writing and sym.intent == "in":
            raise self.err(target, f"cannot assign to '{sym.spelling}': it is intent(in)")
        if writing and any(_loop_vars(loop) & {sym.name} for loop in self.loops):
            raise self.err(target, f"cannot assign to '{sym.spelling}': it is the index of an "
                                   "enclosing do loop")
        return sym

    def resolve(self, part: ast.Part, scope: Scope) -> Symbol:
        sym = scope.lookup(part.name)
        if sym is not None and sym.kind == "proc" and self.current is not None and \
                sym.proc is self.current and self.current.result is not None:
            return self.current.result if self.current.result.name == part.name else sym
        if sym is None or (sym.kind == "var" and not sym.declared):
            if sym is None and part.name in INTRINSICS and part.args is not None:
                return Symbol(part.name, part.spelling, part.line, part.col, kind="intrinsic")
            if scope.strict() or sym is not None and sym.is_arg and scope.strict():
                raise self.err(part, f"'{part.spelling}' is not declared (implicit none is "
                                     "in effect)")
            if sym is None:
                sym = Symbol(part.name, part.spelling, part.line, part.col,
                             type=self.implicit_type(part.name), declared=True)
                scope.symbols[part.name] = sym
            else:
                sym.type = self.implicit_type(part.name)
                sym.declared = True
        return sym

    def stmt_call(self, stmt: ast.Call, scope: Scope) -> None:
        part = stmt.callee.parts[0]
        sym = scope.lookup(part.name)
        if sym is None or sym.kind != "proc":
            raise self.err(stmt.callee, f"'{part.spelling}' is not a known subroutine")
        if sym.proc.proc.kind != "subroutine":
            raise self.err(stmt.callee, f"'{part.spelling}' is a function, not a subroutine")
        self.check_actuals(part, sym.proc, scope)

    def check_actuals(self, part: ast.Part, info: ProcInfo, scope: Scope) -> None:
        args = part.args or []
        if len(args) != len(info.proc.args):
            raise self.err(part, f"'{part.spelling}' takes {len(info.proc.args)} argument(s), "
                                 f"{len(args)} given")
        for actual, dummy in zip(args, info.args):
            if isinstance(actual, (ast.KeywordArg, ast.Section)):
                raise self.err(actual, "keyword arguments and sections are not supported in "
                                       "calls")
            t = self.expr(actual, scope)
            if dummy.type is None:
                continue
            if t.base != dummy.type.base or t.kind != dummy.type.kind:
                raise self.err(actual, f"argument '{dummy.spelling}' of '{part.spelling}' is "
                                       f"{dummy.type.base}({dummy.type.kind}), got "
                                       f"{t.base}({t.kind})")
            if t.rank != dummy.type.rank:
                raise self.err(actual, f"argument '{dummy.spelling}' of '{part.spelling}' has "
                                       f"rank {dummy.type.rank}, got rank {t.rank}")
            writes = dummy.intent in ("out", "inout") or (dummy.intent is None and
                                                          not dummy.value_attr)
            if writes and not (isinstance(actual, ast.Designator) and
                               all(not isinstance(a, ast.Section)
                                   for a in actual.parts[0].args or [])):
                raise self.err(actual, f"argument '{dummy.spelling}' of '{part.spelling}' is "
                                       f"intent({dummy.intent or 'inout'}) and needs a variable")
            if writes and t.rank == 0 and actual.parts[0].args:
                raise self.err(actual, "passing an array element to an intent(out/inout) "
                                       "argument is not supported")
            if writes:
                self.variable(actual, scope, writing=True)
            if t.rank and (not isinstance(actual, ast.Designator) or actual.parts[0].args):
                raise self.err(actual, "array arguments must be whole arrays")

    def stmt_if(self, stmt: ast.If, scope: Scope) -> None:
        for cond, body in stmt.branches:
            self.logical_scalar(cond, scope, "an if condition")
            self.stmts(body, scope)
        if stmt.orelse:
            self.stmts(stmt.orelse, scope)

    def logical_scalar(self, expr: ast.Expr, scope: Scope, what: str) -> None:
        t = self.expr(expr, scope)
        if t.base != "logical" or t.rank:
            raise self.err(expr, f"{what} must be a scalar logical, got {t}")

    def loop_var(self, name: str, line: int, col: int, scope: Scope) -> Symbol:
        part = ast.Part(name=name, spelling=_spelling(self.diags, line, col, name),
                        line=line, col=col)
        sym = self.resolve(part, scope)
        if sym.is_arg:
            clash = (f": '{part.spelling}' and '{sym.spelling}' are the same name "
                     "(Fortran names are case-insensitive)" if part.spelling != sym.spelling
                     else "")
            raise self.diags.error(line, col, f"loop index '{part.spelling}' is the dummy "
                                              f"argument '{sym.spelling}'{clash}")
        if sym.kind != "var" or sym.type.base != "integer" or sym.rank:
            raise self.diags.error(line, col, f"loop index '{part.spelling}' must be a scalar "
                                              "integer variable")
        for loop in self.loops:
            if getattr(loop, "var", None) == name:
                raise self.diags.error(line, col, f"loop index '{part.spelling}' is already the "
                                                  "index of an enclosing loop")
        return sym

    def stmt_do(self, stmt: ast.Do, scope: Scope) -> None:
        if stmt.var is not None:
            self.loop_var(stmt.var, stmt.var_line, stmt.var_col, scope)
            for e in (stmt.start, stmt.stop, stmt.step):
                if e is None:
                    continue
                t = self.expr(e, scope)
                if t.base != "integer" or t.rank:
                    raise self.err(e, "loop bounds must be scalar integers")
            if stmt.step is not None and self.fold(stmt.step, scope) == 0:
                raise self.err(stmt.step, "the loop step must not be zero")
        self.loop_body(stmt, scope)

    def loop_body(self, stmt, scope: Scope) -> None:
        if stmt.label and any(getattr(l, "label", None) == stmt.label for l in self.loops):
            raise self.err(stmt, f"loop label '{stmt.label}' is already in use")
        self.loops.append(stmt)
        try:
            self.stmts(stmt.body, scope)
        finally:
            self.loops.pop()

    def stmt_dowhile(self, stmt: ast.DoWhile, scope: Scope) -> None:
        self.logical_scalar(stmt.cond, scope, "a do while condition")
        self.loop_body(stmt, scope)

    def stmt_doconcurrent(self, stmt: ast.DoConcurrent, scope: Scope) -> None:
        for name, lo, hi, step in stmt.specs:
            self.loop_var(name, stmt.line, stmt.col, scope)
            for e in (lo, hi, step):
                if e is not None:
                    t = self.expr(e, scope)
                    if t.base != "integer" or t.rank:
                        raise self.err(e, "loop bounds must be scalar integers")
        for inner in _walk(stmt.body):
            if isinstance(inner, (ast.Exit, ast.Return)):
                raise self.err(inner, "exit and return are not allowed in do concurrent")
        self.loop_body(stmt, scope)

    def stmt_select(self, stmt: ast.Select, scope: Scope) -> None:
        t = self.expr(stmt.expr, scope)
        if t.base not in ("integer", "logical") or t.rank:
            raise self.err(stmt.expr, "select case needs a scalar integer or logical")
        defaults = [c for c in stmt.cases if c.selectors is None]
        if len(defaults) > 1:
            raise self.err(defaults[1], "more than one case default")
        for case in stmt.cases:
            for sel in case.selectors or []:
                for e in ([sel.lo, sel.hi] if isinstance(sel, ast.Section) else [sel]):
                    if e is None:
                        continue
                    self.expr(e, scope)
                    if self.fold(e, scope) is None:
                        raise self.err(e, "case values must be constants")
                    if e.type.base != t.base:
                        raise self.err(e, f"case value is {e.type.base}, the selector is "
                                          f"{t.base}")
            self.stmts(case.body, scope)

    def target_loop(self, stmt, what: str):
        if not self.loops:
            raise self.err(stmt, f"'{what}' outside a loop")
        if stmt.label is None:
            return self.loops[-1]
        for loop in reversed(self.loops):
            if getattr(loop, "label", None) == stmt.label:
                return loop
        raise self.err(stmt, f"no enclosing loop is labelled '{stmt.label}'")

    def stmt_exit(self, stmt: ast.Exit, scope: Scope) -> None:
        self.target_loop(stmt, "exit")

    def stmt_cycle(self, stmt: ast.Cycle, scope: Scope) -> None:
        self.target_loop(stmt, "cycle")

    def stmt_return(self, stmt, scope) -> None:
        pass

    def stmt_continue(self, stmt, scope) -> None:
        pass

    def stmt_allocate(self, stmt: ast.Allocate, scope: Scope) -> None:
        for item in stmt.items:
            self.flatten(item, scope)
            sym = self.resolve(item.parts[0], scope)
            if not sym.allocatable:
                raise self.err(item, f"'{sym.spelling}' is not allocatable")
            args = item.parts[0].args or []
            if len(args) != sym.rank:
                raise self.err(item, f"allocate of '{sym.spelling}' needs {sym.rank} extents")
            for a in args:
                if isinstance(a, ast.KeywordArg):
                    raise self.err(a, "allocate options are not supported")
                for e in ([a.lo, a.hi] if isinstance(a, ast.Section) else [a]):
                    if e is not None:
                        t = self.expr(e, scope)
                        if t.base != "integer" or t.rank:
                            raise self.err(e, "allocate bounds must be scalar integers")

    def stmt_deallocate(self, stmt: ast.Deallocate, scope: Scope) -> None:
        for item in stmt.items:
            sym = self.resolve(item.parts[0], scope)
            if not sym.allocatable or item.parts[0].args is not None:
                raise self.err(item, f"'{sym.spelling}' is not an allocatable array name")

    # -- expressions ---------------------------------------------------------------------

    def expr(self, expr: ast.Expr, scope: Scope) -> FType:
        t = self._expr(expr, scope)
        expr.type = t
        return t

    def kind_name(self, name: str | None, node, scope: Scope, base: str) -> int:
        if name is None:
            return 4
        if name.isdigit():
            kind = int(name)
        else:
            sym = scope.lookup(name)
            if sym is None or sym.kind != "param" or np.ndim(sym.value):
                raise self.err(node, f"kind '{name}' is not a named integer constant")
            kind = int(sym.value)
        allowed = REAL_KINDS if base == "real" else INT_KINDS
        if kind not in allowed:
            raise self.err(node, f"kind {kind} is not a valid {base} kind")
        return kind

    def _expr(self, expr: ast.Expr, scope: Scope) -> FType:
        if isinstance(expr, ast.IntLit):
            kind = self.kind_name(expr.kind, expr, scope, "integer")
            if expr.value > _huge(kind):  # literals are unsigned: -2147483648 overflows too
                hint = "; use a _8 suffix" if kind < 8 else ""
                raise self.err(expr, f"integer literal {expr.value} is too big for its kind "
                                     f"{kind} (the largest is {_huge(kind)}{hint})")
            return FType("integer", kind)
        if isinstance(expr, ast.RealLit):
            if expr.double:
                if expr.kind:
                    raise self.err(expr, "a 'd' exponent cannot have a kind suffix")
                return FType("real", 8)
            return FType("real", self.kind_name(expr.kind, expr, scope, "real"))
        if isinstance(expr, ast.BozLit):
            return INTEGER if expr.value < (1 << 32) else FType("integer", 8)
        if isinstance(expr, ast.LogicalLit):
            return LOGICAL
        if isinstance(expr, ast.StringLit):
            raise self.err(expr, "character values are not supported")
        if isinstance(expr, ast.UnOp):
            t = self.expr(expr.operand, scope)
            if expr.op == ".not.":
                if t.base != "logical":
                    raise self.err(expr, f".not. needs a logical operand, got {t.base}")
            elif not t.numeric:
                raise self.err(expr, f"unary {expr.op} needs a numeric operand, got {t.base}")
            return t
        if isinstance(expr, ast.BinOp):
            t = self.binop(expr, scope)
            if t.base == "integer" and not t.rank and expr.op in ("+", "-", "*"):
                expr.type = t
                self.fold(expr, scope)  # a constant operation that overflows is an error
            return t
        if isinstance(expr, ast.ArrayCtor):
            if not expr.items:
                raise self.err(expr, "empty array constructors are not supported")
            types = [self.expr(i, scope) for i in expr.items]
            first = types[0]
            for i, t in zip(expr.items, types):
                if t.rank:
                    raise self.err(i, "nested arrays in a constructor are not supported")
                if (t.base, t.kind) != (first.base, first.kind):
                    raise self.err(i, f"array constructor items must have the same type and "
                                      f"kind: {first.base}({first.kind}) and {t.base}({t.kind})")
            return first.with_rank(1)
        if isinstance(expr, (ast.Section, ast.KeywordArg)):
            raise self.err(expr, "a section or keyword argument is not allowed here")
        if isinstance(expr, ast.Designator):
            return self.designator(expr, scope)
        raise self.err(expr, f"unsupported expression {type(expr).__name__}")

    def binop(self, expr: ast.BinOp, scope: Scope) -> FType:
        a, b = self.expr(expr.lhs, scope), self.expr(expr.rhs, scope)
        if a.rank and b.rank and a.rank != b.rank:
            raise self.err(expr, f"rank mismatch: operands of '{expr.op}' have ranks "
                                 f"{a.rank} and {b.rank}")
        if a.rank and b.rank:
            self.check_conformable(expr.lhs, expr.rhs, scope)
        rank = max(a.rank, b.rank)
        op = expr.op
        if op in (".and.", ".or.", ".eqv.", ".neqv."):
            if a.base != "logical" or b.base != "logical":
                raise self.err(expr, f"{op} needs logical operands, got {a.base} and {b.base}")
            return LOGICAL.with_rank(rank)
        if not a.numeric or not b.numeric:
            raise self.err(expr, f"'{op}' needs numeric operands, got {a.base} and {b.base}")
        result = _promote(a, b)
        if op in ("==", "/=", "<", "<=", ">", ">="):
            return LOGICAL.with_rank(rank)
        if op == "**":
            if b.base == "integer" and b.rank == 0:
                value = self.fold(expr.rhs, scope)
                if value is None or not 0 <= int(value) <= 16:
                    raise self.err(expr.rhs, "integer exponents must be constants in 0..16")
                return a
            if a.base == "integer":
                raise self.err(expr, "an integer base needs a constant integer exponent")
        return result.with_rank(rank)

    def designator(self, expr: ast.Designator, scope: Scope) -> FType:
        self.flatten(expr, scope)
        part = expr.parts[0]
        sym = self.resolve(part, scope)
        if sym.kind == "derived":
            raise self.err(part, f"'{part.spelling}' is a derived-type value; only its "
                                 "components can be used here")
        if sym.kind == "type":
            raise self.err(part, f"'{part.spelling}' is a type name")
        if sym.kind == "intrinsic":
            return self.intrinsic(expr, part, scope)
        if sym.kind == "proc":
            info = sym.proc
            if info.proc.kind != "function":
                raise self.err(part, f"'{part.spelling}' is a subroutine; use call")
            if part.args is None:
                raise self.err(part, f"function '{part.spelling}' needs an argument list")
            for d in info.args:
                if d.intent in ("out", "inout") or (d.intent is None and not d.value_attr):
                    raise self.err(part, f"calling function '{part.spelling}' with an "
                                         f"intent({d.intent or 'inout'}) argument in an "
                                         "expression is not supported")
            self.check_actuals(part, info, scope)
            return info.result.type
        t = sym.type
        if part.args is None:
            return t
        if not sym.rank:
            raise self.err(part, f"'{part.spelling}' is a scalar and cannot be subscripted")
        if len(part.args) != sym.rank:
            raise self.err(part, f"rank mismatch: '{sym.spelling}' has rank {sym.rank}, "
                                 f"{len(part.args)} subscript(s) given")
        rank = 0
        for a in part.args:
            if isinstance(a, ast.KeywordArg):
                raise self.err(a, "keyword arguments are not subscripts")
            if isinstance(a, ast.Section):
                rank += 1
                for e in (a.lo, a.hi, a.step):
                    if e is not None:
                        et = self.expr(e, scope)
                        if et.base != "integer" or et.rank:
                            raise self.err(e, "section bounds must be scalar integers")
                a.type = INTEGER
                continue
            at = self.expr(a, scope)
            if at.base != "integer" or at.rank:
                raise self.err(a, f"subscripts must be scalar integers, got {at}")
        return t.scalar().with_rank(rank)

    def intrinsic(self, expr: ast.Designator, part: ast.Part, scope: Scope) -> FType:
        name = part.name
        pos: list[ast.Expr] = []
        kw: dict[str, ast.Expr] = {}
        for a in part.args:
            if isinstance(a, ast.KeywordArg):
                kw[a.name] = a.value
            else:
                if kw:
                    raise self.err(a, "positional argument after a keyword argument")
                pos.append(a)
        if name not in ("kind",):
            for a in pos:
                self.expr(a, scope)
        else:
            for a in pos:
                self.expr(a, scope)
        for v in kw.values():
            self.expr(v, scope)
        types = [a.type for a in pos]

        def need(n_min, n_max=None):
            n_max = n_min if n_max is None else n_max
            if not n_min <= len(pos) <= n_max:
                raise self.err(part, f"{name} takes {n_min}" +
                               (f" to {n_max}" if n_max != n_min else "") +
                               f" argument(s), {len(pos)} given")

        def kind_arg(index: int, base: str, default: int) -> int:
            e = kw.pop("kind", None)
            if e is None and len(pos) > index:
                e = pos.pop(index)
                types.pop(index)
            if e is None:
                return default
            kind = self.const_int(e, scope, "a kind")
            allowed = REAL_KINDS if base == "real" else INT_KINDS
            if kind not in allowed:
                raise self.err(e, f"kind {kind} is not a valid {base} kind")
            return kind

        def numeric(i, bases=("integer", "real")):
            if types[i].base not in bases:
                raise self.err(pos[i], f"argument {i + 1} of {name} must be "
                                       f"{' or '.join(bases)}, got {types[i].base}")

        if name in ("int", "nint"):
            kind = kind_arg(1, "integer", 4)
            need(1)
            numeric(0, ("real",) if name == "nint" else ("integer", "real"))
            return FType("integer", kind, types[0].rank)
        if name in ("real", "dble"):
            kind = kind_arg(1, "real", 8 if name == "dble" else 4)
            need(1)
            numeric(0)
            return FType("real", kind, types[0].rank)
        if name in ("abs", "sqrt", "exp", "log", "tanh", "sin", "cos"):
            need(1)
            numeric(0, ("integer", "real") if name == "abs" else ("real",))
            return types[0]
        if name in ("min", "max", "mod", "iand", "ior", "ieor", "merge"):
            if name == "merge":
                need(3)
                if types[2].base != "logical":
                    raise self.err(pos[2], "merge's mask must be logical")
                types = types[:2]
            else:
                need(2, 2 if name != "min" and name != "max" else 16)
            for i in range(len(types)):
                numeric(i, ("integer",) if name in ("iand", "ior", "ieor", "mod") else
                        ("integer", "real"))
            first = types[0]
            for i, t in enumerate(types[1:], 1):
                if (t.base, t.kind) != (first.base, first.kind):
                    raise self.err(pos[i], f"arguments of {name} must have the same type and "
                                           f"kind: {first.base}({first.kind}) and "
                                           f"{t.base}({t.kind})")
            rank = max(t.rank for t in types)
            return first.scalar().with_rank(rank)
        if name == "not":
            need(1)
            numeric(0, ("integer",))
            return types[0]
        if name in ("ishft", "shiftl", "shiftr"):
            need(2)
            numeric(0, ("integer",))
            numeric(1, ("integer",))
            return types[0]
        if name == "ibits":
            need(3)
            for i in range(3):
                numeric(i, ("integer",))
            return types[0]
        if name in ("sum", "maxval", "minval", "product"):
            need(1)
            if kw:
                raise self.err(part, f"{name} with dim or mask is not supported")
            numeric(0)
            if not types[0].rank:
                raise self.err(pos[0], f"{name} needs an array argument")
            return types[0].scalar()
        if name == "dot_product":
            need(2)
            numeric(0)
            numeric(1)
            if types[0].rank != 1 or types[1].rank != 1:
                raise self.err(part, "dot_product needs two rank-1 arrays")
            self.check_conformable(pos[0], pos[1], scope)
            return _promote(types[0], types[1]).scalar()
        if name == "matmul":
            need(2)
            numeric(0)
            numeric(1)
            if types[0].rank != 2 or types[1].rank != 2:
                raise self.err(part, "matmul is supported for two rank-2 arrays")
            if (types[0].base, types[0].kind) != (types[1].base, types[1].kind):
                raise self.err(part, "matmul operands must have the same type and kind here")
            return types[0].scalar().with_rank(2)
        if name in ("size", "lbound", "ubound"):
            if "dim" in kw:
                pos.append(kw.pop("dim"))
                types.append(pos[-1].type)
            need(1, 2)
            if not isinstance(pos[0], ast.Designator) or pos[0].parts[0].args is not None \
                    or not types[0].rank:
                raise self.err(pos[0], f"{name} needs a whole array")
            if len(pos) == 2:
                d = self.const_int(pos[1], scope, "dim")
                if not 1 <= d <= types[0].rank:
                    raise self.err(pos[1], f"dim={d} is out of range for rank {types[0].rank}")
            elif name != "size":
                raise self.err(part, f"{name} without dim is not supported")
            return INTEGER
        if name in ("huge", "kind", "tiny", "epsilon"):
            need(1)
            if name == "kind":
                return INTEGER
            if name in ("tiny", "epsilon"):
                numeric(0, ("real",))
            return types[0].scalar()
        raise self.err(part, f"intrinsic {name} is not supported")


def _spelling(diags: Diagnostics, line: int, col: int, name: str) -> str:
    lines = diags.source.splitlines()
    if 0 < line <= len(lines):
        text = lines[line - 1][col - 1: col - 1 + len(name)]
        if text.lower() == name:
            return text
    return name


def _walk(body):
    for stmt in body:
        yield stmt
        for attr in ("body", "orelse"):
            child = getattr(stmt, attr, None)
            if isinstance(child, list):
                yield from _walk(child)
        if isinstance(stmt, ast.If):
            for _, b in stmt.branches:
                yield from _walk(b)
        if isinstance(stmt, ast.Select):
            for c in stmt.cases:
                yield from _walk(c.body)


def _loop_vars(loop) -> set[str]:
    if isinstance(loop, ast.Do) and loop.var is not None:
        return {loop.var}
    if isinstance(loop, ast.DoConcurrent):
        return {name for name, *_ in loop.specs}
    return set()


def _promote(a: FType, b: FType) -> FType:
    if a.base == "real" and b.base == "real":
        return FType("real", max(a.kind, b.kind))
    if a.base == "real":
        return a.scalar()
    if b.base == "real":
        return b.scalar()
    return FType("integer", max(a.kind, b.kind))


def _assignable(target: FType, value: FType) -> bool:
    if target.base == "logical" or value.base == "logical":
        return target.base == value.base
    return True


def _huge(kind: int) -> int:
    """huge() of integer(kind)."""
    return (1 << (8 * kind - 1)) - 1


def _wrap(value: int, kind: int) -> np.integer:
    bits = 8 * kind
    value &= (1 << bits) - 1
    if value >= 1 << (bits - 1):
        value -= 1 << bits
    return np.dtype(f"int{bits}").type(value)


def _convert(arr: np.ndarray, t: FType) -> np.ndarray:
    if t.base == "logical":
        return arr.astype(bool)
    if t.base == "real":
        return arr.astype(np.float32 if t.kind == 4 else np.float64)
    if arr.dtype.kind == "f":
        arr = np.trunc(arr)
    return arr.astype(np.int64).astype(f"int{8 * t.kind}")


def _fmt_shape(shape) -> str:
    return "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"


def check(program: ast.Program, diags: Diagnostics) -> CheckedProgram:
    checker = Checker(program, diags)
    checker.current = None
    return checker.check()
