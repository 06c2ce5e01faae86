"""User-facing errors: one line that names the file and the op, node or line at fault."""

from __future__ import annotations


class Q35cError(Exception):
    """Bad input or a failing plugin: reported as `q35c: error: <message>`, exit code 2."""


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (xDSL messages are multi-line)."""
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()
    return type(err).__name__
