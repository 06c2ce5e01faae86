"""Run q35c on untrusted input as a hostile user would, and check its contract.

Every abuse case runs the installed `q35c` in a subprocess inside a sandbox folder:

    sandbox/
      in/        the crafted input (and whatever it references)
      out/       where -o points (may not exist beforehand)
      outside/   a canary folder that q35c must never read from or write to

and `check_refused` / `check_ok` assert the guarantees of docs/security.md: for bad input,
exit code 2 and ONE line `q35c: error: ...` naming the file, no traceback, nothing written
to -o, no staging folders left anywhere, nothing created outside `in/` and `out/`; for good
input, exit code 0. Each run has an address-space limit (RLIMIT_AS) and a wall-clock
timeout, so a case that would allocate without bound or hang fails the test instead of the
machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
MEMORY_LIMIT = 3 << 30
"""Address space of one q35c run (bytes): numpy, xDSL and onnx need ~1 GiB mapped."""
TIME_LIMIT = 120.0
"""Seconds before a case counts as hung."""


@dataclass
class Sandbox:
    root: Path

    @property
    def input_dir(self) -> Path:
        return self.root / "in"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    @classmethod
    def create(cls, root: Path) -> Sandbox:
        box = cls(root)
        box.input_dir.mkdir(parents=True, exist_ok=True)
        box.outside.mkdir(exist_ok=True)
        (box.outside / "canary.txt").write_text("must stay untouched\n")
        return box

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of every path under the sandbox except out/ and in/."""
        seen = {}
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root)
            if rel.parts[0] in ("out",):
                continue
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            seen[str(rel)] = (st.st_size, st.st_mtime_ns)
        return seen


def _limit_memory(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def run(args: list[str | os.PathLike], cwd: Path, *, memory: int = MEMORY_LIMIT,
        timeout: float = TIME_LIMIT, env: dict | None = None) -> subprocess.CompletedProcess:
    """`q35c ARGS` under the memory and time limits; a hang raises TimeoutExpired."""
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return subprocess.run([str(BIN / "q35c"), *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_limit_memory(memory), stdin=subprocess.DEVNULL)


def staging_leftovers(*folders: Path) -> list[Path]:
    """Hidden staging folders (`.NAME.*`) that q35c left beside or inside `folders`."""
    found = []
    for folder in folders:
        for place in {folder, folder.parent}:
            if place.is_dir():
                found += [p for p in place.iterdir()
                          if p.name.startswith(".") and p.is_dir() and p.name != ".git"]
    return found


def check_refused(box: Sandbox, args: list, *, names: str | None = None, **kw) -> str:
    """Run a bad-input case and assert the refusal contract; return the error line.

    `names` is the text the message must contain (the input file's name by default is
    the first argument's file name)."""
    before = box.snapshot()
    out_existed = box.out.exists()
    out_before = sorted(p.name for p in box.out.iterdir()) if out_existed else None
    result = run(args, box.root, **kw)
    detail = f"q35c {' '.join(map(str, args))}\nrc={result.returncode}\nstderr={result.stderr!r}"
    assert result.returncode == 2, detail
    assert "Traceback" not in result.stderr, detail
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("q35c: error: "), detail
    assert "internal error" not in lines[0], detail
    expected = names if names is not None else Path(str(args[0])).name
    assert expected in lines[0], f"message does not name {expected!r}\n{detail}"
    assert len(lines[0]) < 2000, detail
    after = box.snapshot()
    created = sorted(set(after) - set(before))
    changed = sorted(k for k in before if k in after and before[k] != after[k]
                     and not Path(k).is_relative_to("in"))
    assert not created and not changed, f"files touched outside -o: {created or changed}\n{detail}"
    if out_existed:
        assert sorted(p.name for p in box.out.iterdir()) == out_before, detail
    else:
        assert not box.out.exists() or not any(box.out.iterdir()), detail
    assert not staging_leftovers(box.out, box.input_dir), detail
    return lines[0]


def check_ok(box: Sandbox, args: list, **kw) -> subprocess.CompletedProcess:
    """Run a valid case: it must succeed and leave no staging folder."""
    result = run(args, box.root, **kw)
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stderr}"
    assert not staging_leftovers(box.out, box.input_dir)
    return result
