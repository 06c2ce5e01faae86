"""A parser for the CSL subset q35c emits (csl.lark): every emitted file is checked
against it, so a printer slip fails a test; no CSL compiler is available offline."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from lark import Lark, Tree
from lark.exceptions import LarkError

from q35c.compiler.diagnostics import Q35cError


@cache
def _parser() -> Lark:
    return Lark(Path(__file__).with_name("csl.lark").read_text(), parser="lalr")


def parse_csl(text: str, name: str = "<csl>") -> Tree:
    """The parse tree of `text`; a text outside the subset raises Q35cError naming the
    file, line and column."""
    try:
        return _parser().parse(text)
    except LarkError as err:
        line, col = getattr(err, "line", "?"), getattr(err, "column", "?")
        first = str(err).strip().splitlines()[0]
        raise Q35cError(f"{name}:{line}:{col}: not in q35c's CSL subset: {first}") from None
