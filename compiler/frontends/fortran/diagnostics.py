"""Fortran diagnostics: `file:line:col: message`, the source line and a caret."""

from __future__ import annotations

from q35c.compiler.diagnostics import Q35cError, clip, quote_source_line


class FortranError(Q35cError):
    """A syntax or semantic error in a Fortran source, located at a line and column."""

    def __init__(self, path: str, source: str, line: int, col: int, message: str):
        self.path, self.line, self.col, self.message = path, line, col, message
        lines = source.splitlines()
        text, caret_col = quote_source_line(lines[line - 1] if 0 < line <= len(lines) else "",
                                            col)
        caret = " " * (caret_col - 1) + "^"
        super().__init__(f"{path}:{line}:{col}: {clip(message)}\n{text}\n{caret}")


class Diagnostics:
    """Builds FortranErrors for one source file."""

    def __init__(self, path: str, source: str):
        self.path, self.source = path, source

    def error(self, node_or_line, col: int | None = None, message: str = "") -> FortranError:
        if col is None:
            line, col = node_or_line.line, node_or_line.col
        else:
            line = node_or_line
        return FortranError(self.path, self.source, line, col, message)
