"""Compile the emitted C with the system compiler (cached by content hash) and run it.

The cache key covers every emitted file, the compiler command and its version, so a
changed model, runtime or flag rebuilds. Build and run failures raise `Q35cError` with the
compiler's (or program's) first error line and the directory where the sources are kept.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from q35c.compiler.codegen_names import plain_text
from q35c.compiler.diagnostics import Q35cError
from q35c.targets.c.emit import BLOB_FILE, Emitted
from q35c.targets.c.printer import io_file_stems

DEFAULT_FLAGS = ("-std=c99", "-O3", "-march=native", "-ffp-contract=off", "-Wall", "-Wextra",
                 "-Werror")


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise Q35cError("c target: no C compiler found (set CC, or install gcc or clang)")
    return cc


def extra_flags() -> list[str]:
    """Flags from Q35C_CFLAGS (e.g. '-fsanitize=address,undefined -g'), appended."""
    return os.environ.get("Q35C_CFLAGS", "").split()


def cache_root() -> Path:
    if os.environ.get("Q35C_CACHE_DIR"):
        return Path(os.environ["Q35C_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "q35c" / "c"


def _version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True,
                              timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise Q35cError(f"c target: cannot run the C compiler '{cc}': {err}") from None


def _host() -> str:
    """The CPU, since -march=native code built on one machine may not run on another."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        return next((line for line in info.splitlines() if line.startswith("flags")), "")
    except OSError:
        return os.uname().machine


def _first_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower():
            return line
    return lines[0] if lines else "(no message)"


def build(emitted: Emitted, openmp: bool = True) -> Path:
    """The directory holding the sources and the built `main`, compiling it if needed."""
    cc = compiler()
    command = [cc, *DEFAULT_FLAGS, *(["-fopenmp"] if openmp else []), *extra_flags(),
               "main.c", "model.c", "-o", "main", "-lm"]
    return cached_build(emitted.files, command, "main")


def cached_build(files: dict[str, bytes], command: list[str], product: str,
                 prefix: str = "") -> Path:
    """Run the compiler `command` on `files` in a cache folder keyed by the command, the
    compiler version, the host and the files' contents; the folder holding `product`.

    The build happens in a private folder renamed into place, so concurrent builds of the
    same sources are safe; a failed one is kept as `<key>.failed` with its build.log."""
    cc = command[0]
    key = hashlib.sha256()
    key.update("\0".join(command).encode() + _version(cc).encode() + _host().encode())
    for name in sorted(files):
        key.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    directory = cache_root() / f"{prefix}{key.hexdigest()[:24]}"
    if (directory / product).exists():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=directory.parent))
    for name, data in files.items():
        (work / name).write_bytes(data)
    result = subprocess.run(command, cwd=work, capture_output=True, text=True)
    (work / "build.log").write_text(" ".join(command) + "\n" + result.stdout + result.stderr)
    if result.returncode != 0:
        kept = directory.with_name(directory.name + ".failed")
        shutil.rmtree(kept, ignore_errors=True)
        work.rename(kept)
        raise Q35cError(f"c target: {Path(cc).name} failed on the generated code: "
                        f"{_first_error(result.stderr + result.stdout)} (sources and "
                        f"build.log kept in {kept})")
    try:
        work.rename(directory)
    except OSError:  # built concurrently by another process: use theirs
        shutil.rmtree(work, ignore_errors=True)
    return directory


def execute(emitted: Emitted, inputs: dict[str, np.ndarray], threads: int | None = None
            ) -> dict[str, np.ndarray]:
    """Build (or reuse) the runner, feed it `inputs`, return its outputs by name.

    The .raw files are named by the runner's file stems (`io_file_stems`), never by the
    raw tensor names, so a name such as `../../x` stays inside the temporary folders."""
    program = emitted.program
    in_stems, out_stems = io_file_stems(program)
    directory = build(emitted)
    with tempfile.TemporaryDirectory(prefix="q35c-c-run-") as tmp:
        in_dir, out_dir = Path(tmp) / "in", Path(tmp) / "out"
        in_dir.mkdir()
        out_dir.mkdir()
        for (name, buf), stem in zip(program.inputs, in_stems):
            if name not in inputs:
                raise Q35cError(f"c target: missing input '{plain_text(name)}'")
            value = np.asarray(inputs[name])
            if value.shape != buf.shape:
                raise Q35cError(f"c target: input '{plain_text(name)}' has shape {value.shape}, "
                                f"expected {buf.shape}")
            data = value.astype(buf.dtype.newbyteorder("<"), copy=False)
            (in_dir / f"{stem}.raw").write_bytes(np.ascontiguousarray(data).tobytes())
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        result = subprocess.run([str(directory / "main"), str(directory / BLOB_FILE),
                                 str(in_dir), str(out_dir)], capture_output=True, text=True,
                                env=env)
        if result.returncode != 0:
            why = (f"exit code {result.returncode}" if result.returncode > 0
                   else f"signal {-result.returncode}")
            raise Q35cError(f"c target: the compiled model failed ({why}): "
                            f"{_first_error(result.stderr)} (sources kept in {directory})")
        outputs = {}
        for (name, buf), stem in zip(program.outputs, out_stems):
            raw = (out_dir / f"{stem}.raw").read_bytes()
            outputs[name] = np.frombuffer(raw, dtype=buf.dtype.newbyteorder("<")).astype(
                buf.dtype).reshape(buf.shape)
        return outputs
