"""Opening input files that may be hostile: regular files only, of bounded size.

Every file q35c reads because an input names it (the input itself, ONNX external data, a
`.q35w` weight store, `--input` arrays) goes through here:

- `open_input` refuses anything that is not a regular file after symlinks are resolved
  (a folder, FIFO, socket or device such as /dev/zero): `stat` first, so a FIFO is never
  opened, then `O_NONBLOCK` open and `fstat` of the descriptor, so a swap in between is
  caught too. A file larger than its kind's limit is refused before anything is read.
- `confined_file` resolves a file an input refers to (`location`, relative to the input's
  folder) and refuses it unless it is a regular file inside that folder: no absolute
  path, no `..` and no symlink out.

Limits (bytes) per kind, all raised at once by `--max-input-bytes N` (`input_limit`):
text inputs parsed in memory (.f90, .mlir) 64 MiB; binary inputs (.onnx and its external
data, .q35w, .npy) 16 GiB, since large weights are memory-mapped or read as ranges.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from q35c.compiler.diagnostics import Q35cError

TEXT_LIMIT = 64 << 20
"""Default size limit of text inputs (.f90, .mlir), parsed whole in memory."""
BINARY_LIMIT = 16 << 30
"""Default size limit of binary inputs (.onnx, external data, .q35w, .npy)."""

_LIMIT_OVERRIDE: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "q35c_max_input_bytes", default=None)


class InputFileError(ValueError):
    """A file an input refers to is unsafe to read; the message says why (no path).
    `outside`: it lies outside the input's directory (rather than missing or special)."""

    def __init__(self, message: str, outside: bool = False):
        super().__init__(message)
        self.outside = outside


def set_input_limit(limit: int | None) -> None:
    """From now on (in this context), `limit` bytes if not None is every kind's limit;
    None restores the defaults. The CLI calls it once per command (--max-input-bytes)."""
    _LIMIT_OVERRIDE.set(limit)


@contextlib.contextmanager
def input_limit(limit: int | None) -> Iterator[None]:
    """Within the block, `limit` bytes (if not None) is the size limit of every input kind."""
    token = _LIMIT_OVERRIDE.set(limit)
    try:
        yield
    finally:
        _LIMIT_OVERRIDE.reset(token)


def max_input_bytes(text: bool) -> int:
    """The size limit for a text (True) or binary input now in force."""
    override = _LIMIT_OVERRIDE.get()
    if override is not None:
        return override
    return TEXT_LIMIT if text else BINARY_LIMIT


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def regular_file_problem(path: Path, limit: int | None = None) -> str | None:
    """Why `path` (symlinks followed) may not be read, or None if it is a regular file
    of at most `limit` bytes."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "not found"
    except OSError as err:
        return f"cannot read: {err.strerror}"
    return _stat_problem(info, limit)


def _stat_problem(info: os.stat_result, limit: int | None) -> str | None:
    if not stat.S_ISREG(info.st_mode):
        kind = _kind(info.st_mode)
        return f"is {kind}, not a regular file" if kind != "not a regular file" else kind
    if limit is not None and info.st_size > limit:
        return (f"is {info.st_size} bytes, more than the input size limit of {limit} bytes "
                "(--max-input-bytes raises it)")
    return None


def open_input(path: Path, *, text: bool) -> BinaryIO:
    """`path` opened for binary reading, once checked to be a regular file within the
    size limit of its kind (`text` or binary); otherwise a one-line Q35cError."""
    limit = max_input_bytes(text)
    problem = regular_file_problem(path, limit)
    if problem:
        raise Q35cError(f"{path}: {problem}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise Q35cError(f"{path}: cannot read: {err.strerror}") from None
    problem = _stat_problem(os.fstat(fd), limit)  # replaced since the stat above?
    if problem:
        os.close(fd)
        raise Q35cError(f"{path}: {problem}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_input_bytes(path: Path, *, text: bool = False) -> bytes:
    """The whole content of a checked input file (see `open_input`)."""
    limit = max_input_bytes(text)
    with open_input(path, text=text) as f:
        try:
            data = f.read(min(os.fstat(f.fileno()).st_size, limit) + 1)
        except OSError as err:
            raise Q35cError(f"{path}: cannot read: {err.strerror}") from None
    if len(data) > limit:  # it grew while being read
        raise Q35cError(f"{path}: {_stat_problem(os.stat(path), limit) or 'grew while read'}")
    return data


def read_input_text(path: Path) -> str:
    """A checked text input decoded as UTF-8."""
    data = read_input_bytes(path, text=True)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Q35cError(f"{path}: not UTF-8 text (byte {err.start})") from None


def confined_file(base: Path, location: str, *, must_exist: bool = True,
                  limit: int | None = None) -> Path:
    """The file `location` names relative to the folder `base`, symlinks resolved.

    Raises InputFileError (naming `location`, not `base`) when `location` is empty,
    absolute or leads outside `base` (by `..` or a symlink), or, with `must_exist`, when
    it is missing, not a regular file (folder, FIFO, device...) or over `limit` bytes."""
    if not location:
        raise InputFileError("has no location")
    root = base.resolve()
    target = (root / location).resolve()
    if Path(location).is_absolute() or not target.is_relative_to(root) or target == root:
        raise InputFileError(f"'{location}' is outside the input's directory", outside=True)
    if must_exist:
        problem = regular_file_problem(target, limit)
        if problem:
            raise InputFileError(f"'{location}' {problem}")
    return target
