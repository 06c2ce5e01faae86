"""The `.mlir` frontend: parse MLIR text (custom or generic syntax) into a module.

Large dense constants are moved into the weight store right away (as `externalize-constants` does),
so even the first IR dump stays small. A `quant3p5.weights` module attribute names a
weight store file relative to the input file; it must be a regular file inside the input's
directory, and the store is checked against the IR's weight types.

xDSL parses and verifies recursively, so nesting (regions, attributes, types) deeper than
`MAX_NESTING` brackets is refused up front, at the line and column where it gets too deep.
"""

from __future__ import annotations

import re
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser
from xdsl.utils.exceptions import ParseError, VerifyException

from q35c.compiler.constants import externalize_constants
from q35c.compiler.diagnostics import Q35cError, clip, first_line
from q35c.compiler.files import read_input_text
from q35c.compiler.frontends import FrontendOptions
from q35c.compiler.verification import verify_reason
from q35c.compiler.weights import WeightStoreError, store_of

MAX_NESTING = 100
"""Deepest nesting of (, [, { and < that an input may have: the xDSL parser, verifier and
printer recurse per level and exhaust Python's stack at about 150 levels."""

_TOKENS = re.compile(r'"(?:[^"\\\n]|\\.)*"|//[^\n]*|->|<=|>=|[(\[{<]|[)\]}>]')
"""Strings and comments (skipped whole), arrows and comparisons (not brackets), brackets."""


def check_nesting(path: Path, text: str, limit: int = MAX_NESTING) -> None:
    """Refuse `text` if its brackets nest deeper than `limit`, naming the line and column."""
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "([{<":
            depth += 1
            if depth > limit:
                start = match.start()
                line = text.count("\n", 0, start) + 1
                col = start - text.rfind("\n", 0, start)
                raise Q35cError(f"{path}:{line}:{col}: nesting deeper than {limit} levels "
                                "(regions, attributes or types) is not supported")
        elif token in ")]}>":
            depth = max(depth - 1, 0)


def load_mlir(path: Path, ctx: Context, options: FrontendOptions) -> ModuleOp:
    text = read_input_text(path)
    check_nesting(path, text)
    try:
        module = Parser(ctx, text, str(path)).parse_module()
    except ParseError as err:
        loc = err.span.get_location()
        raise Q35cError(f"{path}:{loc.line}:{loc.col}: {clip(first_line(err.msg))}") from None
    except RecursionError:
        raise Q35cError(f"{path}: nested too deeply for the parser") from None
    try:
        module.verify()
    except VerifyException as err:
        raise Q35cError(f"{path}: invalid IR: {clip(verify_reason(err))}") from None
    except RecursionError:
        raise Q35cError(f"{path}: nested too deeply for the verifier") from None
    try:
        store_of(module, base_dir=path.parent).check_types(module)
    except WeightStoreError as err:
        raise Q35cError(f"{path}: {err}") from None
    externalize_constants(module)
    return module
