"""The `.mlir` frontend: parse MLIR text (custom or generic syntax) into a module.

Large dense constants are moved into the weight store right away (as `externalize-constants`
does), so even the first IR dump stays small. A `quant3p5.weights` module attribute names a
weight store file relative to the input file.
"""

from __future__ import annotations

from pathlib import Path

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser
from xdsl.utils.exceptions import ParseError, VerifyException

from q35c.compiler.constants import externalize_constants
from q35c.compiler.diagnostics import Q35cError, first_line
from q35c.compiler.frontends import FrontendOptions
from q35c.compiler.weights import WeightStoreError, store_of


def load_mlir(path: Path, ctx: Context, options: FrontendOptions) -> ModuleOp:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise Q35cError(f"{path}: cannot read: {err}") from None
    try:
        module = Parser(ctx, text, str(path)).parse_module()
    except ParseError as err:
        loc = err.span.get_location()
        raise Q35cError(f"{path}:{loc.line}:{loc.col}: {err.msg}") from None
    try:
        module.verify()
    except VerifyException as err:
        raise Q35cError(f"{path}: invalid IR: {first_line(err)}") from None
    try:
        store_of(module, base_dir=path.parent)
    except WeightStoreError as err:
        raise Q35cError(str(err)) from None
    externalize_constants(module)
    return module
