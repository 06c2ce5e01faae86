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


QUOTE_WIDTH = 200
"""Most characters of a source line quoted in an error (around the column at fault)."""
ELLIPSIS = "..."


def quote_source_line(text: str, col: int, width: int = QUOTE_WIDTH) -> tuple[str, int]:
    """The part of source line `text` that an error shows, and the caret's column in it.

    A line longer than `width` is cut to `width` characters around column `col` (1-based),
    with an ellipsis on each cut side, so a minified one-megabyte line costs a few hundred
    bytes of stderr, not megabytes."""
    col = max(col, 1)
    if len(text) <= width:
        return text, col
    start = min(max(col - 1 - width // 2, 0), len(text) - width)
    head = ELLIPSIS if start > 0 else ""
    tail = ELLIPSIS if start + width < len(text) else ""
    return head + text[start:start + width] + tail, col - start + len(head)


def clip(text: str, width: int = 2 * QUOTE_WIDTH) -> str:
    """`text` cut to `width` characters with an ellipsis: for messages that quote input
    (a token, a name) of unbounded length."""
    return text if len(text) <= width else text[:width] + ELLIPSIS
