"""Writing outputs: `-o OUT` all or nothing, and the `--dump-ir DIR` stage dumps.

`write_atomically(out, write)` lets `write` fill a private staging folder and publishes it
only when `write` returned:

- OUT does not exist: the staging folder `.OUT.q35c-stage-XXXX` is made beside it and
  renamed to OUT in one step, so OUT appears complete or not at all.
- OUT is a folder: the staging folder `OUT/.q35c-stage-XXXX` is made inside it, on OUT's
  own file system (so `-o` may be a mount point), and its files replace the same-named
  files of OUT while OUT is locked (`flock` on the folder): two compiles into one OUT
  publish one after the other, never interleaved, and files of OUT that q35c does not
  write are kept. A move that still crosses devices (EXDEV) falls back to copy, fsync,
  rename.

Every staging folder holds a marker file with the owner's host and PID. On SIGINT, SIGTERM
or SIGHUP during the write the staging folder is removed before the process exits (during
the publish itself they are held until it is done, so OUT is never half-replaced); one
left by a killed process (SIGKILL, power loss) is removed by the next q35c that writes to
the same place, once its owner is no longer running. File-system failures (read-only or
unwritable place, a file where a folder is expected, a name too long, a full disk) are
one-line `Q35cError`s naming the path.

`Q35C_TEST_WRITE_DELAY` (seconds, tests only): sleep after `write` filled the staging
folder and before publishing, so tests can signal a process in the middle of a write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from xdsl.dialects.builtin import ModuleOp

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.ir_text import module_text, referenced_weights
from q35c.compiler.weights import WeightStore

STAGE_TAG = ".q35c-stage-"
"""Staging folders are `.q35c-stage-XXXX` inside OUT or `.OUT.q35c-stage-XXXX` beside it."""
OWNER_FILE = ".q35c-owner"
"""Marker inside a staging folder: JSON {"host", "pid"} of the process writing it."""
DUMP_MARKER = ".q35c-dump"
"""Marker of a folder that `--dump-ir` created or adopted while empty: only such a folder's
old stage files are deleted."""
TEST_DELAY_ENV = "Q35C_TEST_WRITE_DELAY"
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Turned into `Terminated` while a staging folder exists (SIGINT already raises
KeyboardInterrupt), so the folder is removed on the way out."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived during a write; the CLI exits with 128 + `signum`."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def os_error(what: str, err: OSError, staging: Path | None = None,
             out_dir: Path | None = None) -> Q35cError:
    """A one-line error for a file-system failure at `what` (a path or an option and path);
    a file name inside `staging` is shown as the `out_dir` file it was to become."""
    reason = err.strerror or type(err).__name__
    name = str(err.filename) if err.filename is not None else ""
    if staging is not None and out_dir is not None:
        name = name.replace(str(staging), str(out_dir))
    where = f" ({name})" if name and name not in what else ""
    return Q35cError(f"{what}: {reason}{where}")


# -- staging folders ------------------------------------------------------------------------


def _make_staging(place: Path, prefix: str) -> Path:
    """A fresh staging folder in `place` with the owner marker inside."""
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=place))
    (staging / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(),
                                                  "pid": os.getpid()}))
    return staging


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_stale_staging(place: Path) -> None:
    """Remove staging folders in `place` whose owner (on this host) is no longer running.

    Only folders named like q35c's and holding its owner marker are touched; a folder of a
    live process, of another host, or without a readable marker is left alone."""
    try:
        candidates = [p for p in place.iterdir() if p.name.startswith(".")
                      and STAGE_TAG in p.name and p.is_dir() and not p.is_symlink()]
    except OSError:
        return
    host = socket.gethostname()
    for folder in candidates:
        try:
            owner = json.loads((folder / OWNER_FILE).read_text())
            pid = int(owner["pid"])
            stale = owner["host"] == host and pid != os.getpid() and not _alive(pid)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _cleanup_on_signals(staging: Path) -> Iterator[None]:
    """Remove `staging` however the block ends: return, exception, or SIGINT/TERM/HUP."""
    def terminate(signum, frame):
        raise Terminated(signum)

    previous = {}
    try:
        for sig in HANDLED_SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: leave signals be
                previous[sig] = signal.signal(sig, terminate)
        yield
    finally:
        try:
            shutil.rmtree(staging, ignore_errors=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


# -- publishing -----------------------------------------------------------------------------


def _move(item: Path, target: Path) -> None:
    """Replace `target` by `item` (same folder tree); across devices copy, fsync, rename."""
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    try:
        os.replace(item, target)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        temp = target.with_name(f".{target.name}{STAGE_TAG}copy")
        if temp.is_dir() and not temp.is_symlink():
            shutil.rmtree(temp)
        if item.is_dir():
            shutil.copytree(item, temp, symlinks=True)
        else:
            shutil.copy2(item, temp)
            with open(temp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(temp, target)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive `flock` on `folder` itself (no lock file is left behind)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _merge(staging: Path, out_dir: Path) -> None:
    """Move every file of `staging` into the existing folder `out_dir`, under its lock."""
    with _locked(out_dir):
        for item in sorted(staging.iterdir()):
            if item.name != OWNER_FILE:
                _move(item, out_dir / item.name)
        out_dir_fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(out_dir_fd)
        finally:
            os.close(out_dir_fd)


def _publish_new(staging: Path, out_dir: Path) -> None:
    """Rename the finished staging folder to `out_dir` in one step; if another process
    created `out_dir` meanwhile, merge into it instead."""
    (staging / OWNER_FILE).unlink()
    try:
        os.rename(staging, out_dir)
        return
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EXDEV):
            raise
    (staging / OWNER_FILE).write_text("{}")
    _merge(staging, out_dir)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP until the block ends, so a publish is never cut
    halfway; a signal that arrived meanwhile is handled right after."""
    blocked = {signal.SIGINT, *HANDLED_SIGNALS}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _delay_for_tests() -> None:
    delay = os.environ.get(TEST_DELAY_ENV)
    if delay:
        time.sleep(float(delay))


def write_atomically(out_dir: Path, write: Callable[[Path], None]) -> None:
    """Call `write(staging_dir)`, then publish its files as `out_dir`; on failure or
    interruption nothing is written to `out_dir` and the staging folder is gone."""
    label = f"-o {out_dir}"
    try:
        exists = out_dir.exists()
        if exists and not out_dir.is_dir():
            raise Q35cError(f"{label}: exists and is not a folder")
        place = out_dir if exists else out_dir.absolute().parent
        place.mkdir(parents=True, exist_ok=True)
        for folder in {place, out_dir.absolute().parent}:  # inside and beside OUT
            remove_stale_staging(folder)
    except OSError as err:
        raise os_error(label, err) from None
    try:
        staging = _make_staging(place, STAGE_TAG if exists else f".{out_dir.name}{STAGE_TAG}")
    except OSError as err:
        raise Q35cError(f"{label}: cannot write in {place}: "
                        f"{err.strerror or type(err).__name__}") from None
    with _cleanup_on_signals(staging):
        try:
            write(staging)
            _delay_for_tests()
            with _signals_deferred():
                if exists:
                    _merge(staging, out_dir)
                else:
                    _publish_new(staging, out_dir)
        except OSError as err:
            raise os_error(label, err, staging, out_dir) from None


# -- --dump-ir ------------------------------------------------------------------------------


@dataclass
class IRDumper:
    """Writes `NN-<pass>.mlir` after each stage into `directory`, and the weights at the end.

    The folder is q35c's: created with a `.q35c-dump` marker, or adopted while empty. Old
    stage files are deleted only from such a folder; a non-empty folder without the marker
    is refused, so a dump never deletes files q35c did not write."""

    directory: Path
    weights: set[str] = field(default_factory=set)
    WEIGHTS_FILE = "weights.q35w"

    def __post_init__(self) -> None:
        label = f"--dump-ir {self.directory}"
        try:
            if self.directory.exists() and not self.directory.is_dir():
                raise Q35cError(f"{label}: exists and is not a folder")
            self.directory.mkdir(parents=True, exist_ok=True)
            marker = self.directory / DUMP_MARKER
            if not marker.exists():
                if any(self.directory.iterdir()):
                    raise Q35cError(f"{label}: folder is not empty and was not made by "
                                    f"--dump-ir (no {DUMP_MARKER}); name a new or empty one")
                marker.write_text("q35c --dump-ir output; its NN-*.mlir files are replaced "
                                  "on each run\n")
            for stale in [*self.directory.glob("[0-9][0-9]-*.mlir"),
                          self.directory / self.WEIGHTS_FILE]:
                if stale.is_file() or stale.is_symlink():
                    stale.unlink()
        except OSError as err:
            raise os_error(label, err) from None

    def dump(self, index: int, label: str, spec: str, module: ModuleOp) -> None:
        names = referenced_weights(module)
        self.weights |= names
        text = module_text(module, weights_file=self.WEIGHTS_FILE if names else None)
        path = self.directory / f"{index:02d}-{label}.mlir"
        try:
            path.write_text(f"// q35c stage {index:02d}: {spec}\n{text}")
        except OSError as err:
            raise os_error(f"--dump-ir {self.directory}", err) from None

    def finish(self, store: WeightStore) -> None:
        if self.weights:
            try:
                store.save(self.directory / self.WEIGHTS_FILE, keep=self.weights)
            except OSError as err:
                raise os_error(f"--dump-ir {self.directory}", err) from None
