"""The Fortran sources of one compilation: the input, further inputs, and the files of `use`d
modules found on the search path.

`gather` parses the input, every further input (`q35c kernel.f90 mods.f90`), and for each
`use`d module that none of them defines, the file `<module>.f90` (or `.f95`, `.f03`, `.f08`;
the file name compared case-insensitively) in the input's directory and then in each
`-I DIR` in order, the way gfortran finds `.mod` files. It returns one `ast.Program` whose
modules come in an order where every module follows the modules it uses (a file's modules
stay in their source order), and whose modules and procedures carry the Diagnostics of
their own file, so that a checker error in a module of another file names that file.

It does not compile modules separately (there are no `.mod` files): every module's
declarations and procedures are checked and lowered with the input, as if one file.
Intrinsic modules (`iso_fortran_env`, `iso_c_binding`, `omp_lib`) are never searched for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from q35c.compiler.files import read_input_text

from . import ast
from .diagnostics import Diagnostics
from .parser import parse
from .semantics_types import INTRINSIC_MODULES

SOURCE_SUFFIXES = (".f90", ".f95", ".f03", ".f08")


@dataclass
class SourceFile:
    path: str
    program: ast.Program
    diags: Diagnostics
    searched: bool = False
    """Found on the search path for a `use` (only its modules are compiled)."""
    uses: list[ast.Use] = field(default_factory=list)


def parse_file(path: str, text: str, searched: bool = False) -> SourceFile:
    program = parse(text, path)
    diags = Diagnostics(path, text)
    for mod in program.modules:
        mod.diags = diags
        for proc in mod.procedures:
            proc.diags = diags
    for proc in program.procedures:
        proc.diags = diags
    file = SourceFile(path, program, diags, searched)
    units: list = [*program.modules, *([] if searched else program.procedures)]
    for unit in units:
        file.uses += _uses(unit)
    return file


def _uses(unit) -> list[ast.Use]:
    body = list(unit.body)
    for proc in getattr(unit, "procedures", []):
        body += proc.body
    return [s for s in body if isinstance(s, ast.Use)]


def gather(main_path: str, main_text: str, inputs: tuple[Path, ...] = (),
           include_dirs: tuple[Path, ...] = ()) -> ast.Program:
    """The program of the input `main_path` with the modules it needs (see the module
    docstring); raises FortranError at the `use` of a module that is found nowhere."""
    main = parse_file(main_path, main_text)
    files = [main] + [parse_file(str(p), read_input_text(p)) for p in inputs]
    loaded = {_key(Path(main_path))} | {_key(p) for p in inputs}
    defined: dict[str, SourceFile] = {}
    for file in files:
        _define(file, defined)
    here = [Path(main_path).parent] if Path(main_path).is_file() else []
    dirs = [*here, *include_dirs]
    pending = list(files)
    while pending:
        file = pending.pop(0)
        for use in file.uses:
            if use.module in INTRINSIC_MODULES or use.module in defined:
                continue
            found = _search(use.module, dirs)
            if found is None or _key(found) in loaded:
                raise file.diags.error(use, message=_missing(use.module, dirs, found))
            loaded.add(_key(found))
            dep = parse_file(str(found), read_input_text(found), searched=True)
            if not any(m.name == use.module for m in dep.program.modules):
                raise file.diags.error(use, message=f"module '{use.module}' is not defined "
                                                    f"in {found}, the file its name finds")
            _define(dep, defined)
            files.append(dep)
            pending.append(dep)
    ordered = _order(files, defined)
    program = ast.Program(modules=[m for f in ordered for m in f.program.modules],
                          procedures=[p for f in ordered if not f.searched
                                      for p in f.program.procedures],
                          line=main.program.line, col=main.program.col)
    return program


def _key(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def _define(file: SourceFile, defined: dict[str, SourceFile]) -> None:
    for mod in file.program.modules:
        other = defined.get(mod.name)
        if other is not None and other is not file:
            first = next(m for m in other.program.modules if m.name == mod.name)
            raise file.diags.error(mod, message=f"module '{mod.name}' is also defined in "
                                                f"{other.path}:{first.line}")
        defined[mod.name] = file


def _search(name: str, dirs: list[Path]) -> Path | None:
    wanted = {name + suffix for suffix in SOURCE_SUFFIXES}
    for d in dirs:
        try:
            entries = sorted(d.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.name.lower() in wanted and entry.is_file():
                return entry
    return None


def _missing(name: str, dirs: list[Path], found: Path | None) -> str:
    if found is not None:
        return f"module '{name}' is not defined in {found}, the file its name finds"
    where = ", ".join(str(d) or "." for d in dirs)
    return (f"module '{name}' not found: no input defines it and no {name}.f90 is in "
            f"{where}; give its source file as another input or its directory with -I")


def _order(files: list[SourceFile], defined: dict[str, SourceFile]) -> list[SourceFile]:
    """Files in an order where a file follows the files whose modules it uses; a file's
    own modules keep their source order (a use of a later module of the same file is the
    checker's error, as in gfortran)."""
    done: list[SourceFile] = []
    state: dict[int, str] = {}

    def visit(file: SourceFile, chain: list[SourceFile]) -> None:
        if state.get(id(file)) == "done":
            return
        if state.get(id(file)) == "active":
            names = " -> ".join(f.path for f in [*chain, file])
            raise file.diags.error(1, 1, f"the modules of these files use each other: {names}")
        state[id(file)] = "active"
        for use in file.uses:
            dep = defined.get(use.module)
            if dep is not None and dep is not file:
                visit(dep, [*chain, file])
        state[id(file)] = "done"
        done.append(file)

    for file in files:
        visit(file, [])
    return done
