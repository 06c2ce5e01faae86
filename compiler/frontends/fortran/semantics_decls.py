"""Declarations of the Fortran checker (semantics.py): procedures and their specification parts,
`use`, derived types, type declarations and `parameter` constants."""

from __future__ import annotations

import numpy as np

from q35c.compiler.diagnostics import Q35cError

from . import ast
from .semantics_intrinsics import INTRINSIC_MODULE_FUNCTIONS
from .semantics_scopes import DerivedType, ProcInfo, Scope, Symbol, _spelling
from .semantics_types import (
    INT_KINDS,
    INTEGER,
    INTRINSIC_MODULES,
    REAL,
    REAL_KINDS,
    FType,
    _assignable,
    _convert,
    unsupported_intrinsic_module,
)


class DeclarationChecker:
    """The Checker's specification parts (a mixin of `Checker`)."""

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
        for name, spelling, line, col in proc.args:
            if name in scope.symbols:
                raise self.diags.error(line, col, f"dummy argument '{spelling}' appears twice")
            scope.symbols[name] = Symbol(name, spelling, line, col, is_arg=True)
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
            if name in self.bindings and proc.name == self.bind_entry:
                self.bind_argument(sym, proc)
                info.bound.append(spelling)
                continue
            if sym.kind == "derived":  # one argument per component
                info.args += [scope.symbols[f"{name}%{c.name}"] for c in sym.derived.components]
            else:
                info.args.append(sym)
        if info.result is not None and info.result.type is None:
            if scope.strict():
                raise self.err(proc, f"function '{proc.spelling}' has no result type "
                                     "(implicit none)")
            info.result.type = self.implicit_type(info.result.name)
        if info.result is not None and info.result.rank and (
                info.result.allocatable or any(d.upper is None for d in info.result.dims)):
            raise self.err(proc, "an array-valued function result needs an explicit shape "
                                 "(allocatable and assumed-shape results are not supported)")
        if info.result is not None and info.result.rank and "elemental" in proc.prefixes:
            raise self.err(proc, "an elemental function must have a scalar result")

    def bound_value(self, name: str, sym: Symbol):
        """The value `--bind NAME=VALUE` gives the scalar `sym`, in its type."""
        text = self.bindings[name]
        self.bound.add(name)
        flag = f"--bind {self.binding_names[name]}={text}"
        value = None
        for kind in (int, float):
            try:
                value = kind(text)
                break
            except ValueError:
                continue
        if value is None or sym.type.base == "logical" or (
                sym.type.base == "integer" and not isinstance(value, int)):
            article = "an" if sym.type.base == "integer" else "a"
            raise self.err(sym, f"{flag}: not {article} {sym.type.base} literal for "
                                f"'{sym.spelling}'", col=sym.col)
        converted = _convert(np.asarray(value), sym.type.scalar())
        if sym.type.base == "integer" and int(converted) != value:
            raise self.err(sym, f"{flag}: out of range for "
                                f"integer({sym.type.kind}) '{sym.spelling}'", col=sym.col)
        return converted[()]

    def bind_argument(self, sym: Symbol, proc: ast.Procedure) -> None:
        """`--bind NAME=VALUE` on a dummy argument of the entry: a constant inside it, no
        longer an argument, so extents that use it are static."""
        if sym.kind != "var" or sym.rank or not (sym.intent == "in" or sym.value_attr):
            raise self.err(sym, f"--bind {self.binding_names[sym.name]}: '{sym.spelling}' of "
                                f"'{proc.spelling}' "
                                "is not a scalar intent(in) or value argument", col=sym.col)
        sym.value = self.bound_value(sym.name, sym)
        sym.kind, sym.is_arg = "param", False

    def check_bindings(self) -> None:
        """Every `--bind NAME` must have given a value to something."""
        unused = sorted(set(self.bindings) - self.bound)
        if not unused:
            return
        name = self.binding_names[unused[0]]
        where = (f"no scalar intent(in) or value argument of '{self.bind_entry}'"
                 if self.bind_entry else "no argument of the entry (name it with --entry)")
        raise Q35cError(f"{self.diags.path}: --bind {name}: no scalar parameter and {where} "
                        f"is named '{name}'")

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
        if stmt.nature == "intrinsic" and stmt.module not in INTRINSIC_MODULES:
            raise self.err(stmt, unsupported_intrinsic_module(stmt.module))
        if stmt.module in INTRINSIC_MODULES and stmt.nature != "non_intrinsic":
            table = INTRINSIC_MODULES[stmt.module]
            functions = INTRINSIC_MODULE_FUNCTIONS.get(stmt.module, {})
            names = [n for n, _, _ in stmt.only] if stmt.only is not None else [
                *table, *functions]
            for (n, line, col) in (stmt.only or [(n, stmt.line, stmt.col) for n in names]):
                if n not in table and n not in functions:
                    raise self.diags.error(line, col, f"'{n}' is not in module {stmt.module}")
                if n in scope.symbols:
                    continue
                if n in functions:
                    scope.symbols[n] = Symbol(n, n, line, col, kind="intrinsic",
                                              type=functions[n], declared=True)
                else:
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
            if set(decl.attrs) - {"dimension", "allocatable"}:
                extra = sorted(set(decl.attrs) - {"dimension", "allocatable"})
                raise self.err(decl, f"component attributes {extra} are not supported")
            allocatable = bool(decl.attrs.get("allocatable"))
            ftype = self.type_of_spec(decl.type_spec, scope)
            for ent in decl.entities:
                if ent.init is not None:
                    raise self.err(ent, "default component values are not supported")
                dims = ent.dims if ent.dims is not None else decl.attrs.get("dimension")
                if allocatable:
                    if not dims or not all(d.is_range and d.upper is None and d.lower is None
                                           for d in dims):
                        raise self.err(ent, f"allocatable component '{ent.spelling}' needs a "
                                            "deferred shape like (:, :)")
                    if len(dims) > 3:
                        raise self.err(ent, f"component '{ent.spelling}' has rank "
                                            f"{len(dims)}; at most 3 is supported")
                for d in dims or []:
                    if allocatable:
                        continue
                    if d.upper is None:
                        raise self.err(ent, f"component '{ent.spelling}' needs a constant "
                                            "shape")
                    for bound in (d.lower, d.upper):
                        if bound is not None:
                            self.const_int(bound, scope, "a component bound")
                if ent.name in names:
                    raise self.err(ent, f"component '{ent.spelling}' is declared twice")
                comp = Symbol(ent.name, ent.spelling, ent.line, ent.col, declared=True,
                              type=ftype.with_rank(len(dims) if dims else 0), dims=dims,
                              allocatable=allocatable)
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
                if ent.name in self.bindings and not sym.rank:
                    sym.value = self.bound_value(ent.name, sym)
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
            if sym.is_arg and sym.intent == "out" and any(c.allocatable
                                                          for c in dtype.components):
                raise self.err(ent, f"intent(out) dummy '{ent.spelling}' has allocatable "
                                    "components, which intent(out) deallocates on entry; "
                                    "only intent(in) and intent(inout) are supported (each "
                                    "allocatable component is passed allocated, as an "
                                    "array argument with its run-time shape)")
            for comp in dtype.components:
                name = f"{ent.name}%{comp.name}"
                scope.symbols[name] = Symbol(
                    name, f"{sym.spelling}%{comp.spelling}", ent.line, ent.col,
                    type=comp.type, dims=comp.dims, intent=sym.intent, is_arg=sym.is_arg,
                    allocatable=comp.allocatable, declared=True, parent=sym)

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
