"""The Fortran kernel frontend: free-form Fortran subset -> func/scf/memref/arith/math.

    parser.py (grammar.lark) -> ast.py -> semantics.py -> irgen.py (+ raising.py)

`load_fortran` is the frontend entry point (registered for .f90/.f95/.f03); `compile_source`
is the same pipeline on a string, for tests and benchmarks. Every problem in the source is
a FortranError (`file:line:col: message`, the line, a caret), never a traceback.
docs/fortran.md describes the subset and its semantics.
"""

from __future__ import annotations

from pathlib import Path

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.utils.exceptions import VerifyException

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.files import read_input_text
from q35c.compiler.frontends import FrontendOptions
from q35c.compiler.verification import verify_reason

from .diagnostics import Diagnostics, FortranError
from .irgen import generate
from .parser import run_deep
from .semantics import check
from .sources import gather

__all__ = ["FortranError", "compile_source", "load_fortran"]


def compile_source(source: str, path: str = "<input>", *, raise_idioms: bool = True,
                   inputs: tuple[Path, ...] = (), include_dirs: tuple[Path, ...] = (),
                   bindings: dict[str, str] | None = None, entry: str | None = None
                   ) -> ModuleOp:
    """Parse, check and lower one Fortran source, with the modules it uses from `inputs`
    and the search path (`path`'s directory, then `include_dirs`; sources.py); verified
    module (idioms raised). `bindings` (`--bind NAME=VALUE`) give values to scalar
    parameters and to scalar arguments of `entry` (semantics_decls.py). Runs with a deep
    stack: nesting up to parser.MAX_NESTING levels compiles."""
    return run_deep(_compile, source, path, raise_idioms, inputs, include_dirs,
                    bindings or {}, entry)


def _compile(source: str, path: str, raise_idioms: bool, inputs: tuple[Path, ...],
             include_dirs: tuple[Path, ...], bindings: dict[str, str],
             entry: str | None) -> ModuleOp:
    program = gather(path, source, inputs, include_dirs)
    checked = check(program, Diagnostics(path, source), bindings, entry)
    module = generate(checked, raise_idioms)
    try:
        module.verify()
    except VerifyException as err:
        raise Q35cError(f"{path}: internal error: the generated IR does not verify: "
                        f"{verify_reason(err)}") from None
    return module


def load_fortran(path: Path, ctx: Context, options: FrontendOptions) -> ModuleOp:
    return compile_source(read_input_text(path), str(path), inputs=options.sources,
                          include_dirs=options.include_dirs, bindings=options.bindings,
                          entry=options.entry)
