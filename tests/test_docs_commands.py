"""The shell commands of README.md and docs/*.md run as written, the way doctest runs Python.

Every fenced block tagged `sh`, `bash`, `shell` or `console` is one test, with the id
`FILE:LINE` of its opening fence. It runs with `bash -e -o pipefail` in a scratch copy of
the repository (tmp_path), with this test environment's `bin/` first on PATH, and must exit
0. Extra words in the info string mark blocks, like the repo's `excerpt=`/`file=` words:

- ```sh sketch="reason"``` : not runnable as written (placeholders, a GPU, minutes of
  benchmark, the test suite itself); reported as a skipped test with the reason.
- ```sh slow```            : runs only in the slow tier (`./dev.sh test-all`, `-m slow`).

A `console` block holds `$ command` lines, each followed by the output it shows: every
command must exit 0, or 2 when its output starts with `q35c: error:`, and the first output
line shown must appear in what the command printed (`...` in it stands for any text; a
first line of just `...` checks nothing).

Two lines are mapped rather than run, so that a test never changes the environment it runs
in: `source .venv/bin/activate` finds `.venv` as a link to this environment, and
`pip install -e DIR` installs DIR once into a scratch directory (`pip install --target`, as
tests/test_plugin.py does) that is on PYTHONPATH for the rest of that document's blocks.
A fenced block with no info string that starts with a command (`$ `, `q35c `, `python `,
`./`) fails `test_command_blocks_are_tagged`: untagged commands would escape this test.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import BIN, ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_TAGS = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"^(`{3,})(.*)$")
PIP_EDITABLE = re.compile(r"^pip install -e (\S+)\s*$")
UNTAGGED_COMMAND = re.compile(r"^(\$ |q35c |python |\./)")
COPY_IGNORE = shutil.ignore_patterns(".venv", ".git", "out", "results", "__pycache__",
                                     ".pytest_cache", ".hypothesis", "*.egg-info", "build",
                                     "Output", ".lit_test_times.txt")


@dataclass(frozen=True)
class Block:
    """One fenced block of a document: where it starts, its info string and its lines."""

    doc: Path
    line: int
    tag: str
    words: dict[str, str]
    body: list[str]

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def fenced_blocks(doc: Path) -> list[Block]:
    """Every fenced block of `doc` (```tag word key="value" ...), nested fences not allowed."""
    lines = doc.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, words = match.group(1), shlex.split(match.group(2))
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(fence))
        tag = words[0] if words else ""
        options = dict(w.split("=", 1) if "=" in w else (w, "") for w in words[1:])
        blocks.append(Block(doc, i + 1, tag, options, lines[i + 1:end]))
        i = end + 1
    return blocks


def shell_blocks() -> list[Block]:
    return [b for doc in DOCS for b in fenced_blocks(doc) if b.tag in SHELL_TAGS]


def block_param(block: Block):
    marks = []
    if "sketch" in block.words:
        reason = block.words["sketch"] or "marked as a sketch"
        marks.append(pytest.mark.skip(reason=f"sketch: {reason}"))
    if "slow" in block.words:
        marks.append(pytest.mark.slow)
    return pytest.param(block, id=block.id, marks=marks)


# -- running a block ---------------------------------------------------------------------


def install_editable(package: Path, cache: dict[Path, Path], scratch: Path) -> Path:
    """A directory on which `package` is importable, with its entry points (pip --target)."""
    from test_plugin import pip_install

    if package not in cache:
        cache[package] = pip_install(package, scratch / f"site-{len(cache)}" / "site")
    return cache[package]


@pytest.fixture(scope="session")
def editable_sites(tmp_path_factory):
    cache: dict[Path, Path] = {}
    root = tmp_path_factory.mktemp("editable")
    return lambda package: install_editable(package, cache, root)


def script_and_sites(block: Block, editable_sites) -> tuple[str, list[Path]]:
    """The block's script with `pip install -e` lines mapped, and the sites they installed.

    A document's earlier `pip install -e` lines count too: its later blocks rely on them.
    """
    sites = []
    earlier = [b for b in fenced_blocks(block.doc) if b.tag in SHELL_TAGS and b.line < block.line]
    for line in (line for b in earlier for line in b.body):
        if match := PIP_EDITABLE.match(line):
            sites.append(editable_sites(ROOT / match.group(1)))
    script = []
    for line in block.body:
        if match := PIP_EDITABLE.match(line):
            sites.append(editable_sites(ROOT / match.group(1)))
            line = f": {line}"
        script.append(line)
    return "\n".join(script) + "\n", sites


def scratch_copy(dest: Path) -> Path:
    """The repository's sources in `dest`, with `.venv` linked to this test environment.

    Files keep their times (copy2), so dev.sh sees the environment as already set up.
    """
    shutil.copytree(ROOT, dest, ignore=COPY_IGNORE, symlinks=True)
    (dest / ".venv").symlink_to(Path(sys.prefix))
    return dest


def block_env(sites: list[Path]) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    if sites:
        env["PYTHONPATH"] = os.pathsep.join(
            [*map(str, sites), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def require_dev_sh_environment(script: str) -> None:
    """dev.sh reuses `.venv` only when it set it up; otherwise it would install the scratch
    copy into this environment, so such a block is skipped there."""
    stamp = Path(sys.prefix) / ".q35c-installed"
    if "./dev.sh" in script and not (stamp.exists() and stamp.stat().st_mtime
                                     > (ROOT / "pyproject.toml").stat().st_mtime):
        pytest.skip("dev.sh needs an environment that dev.sh set up (.venv/.q35c-installed)")


def console_commands(body: list[str]) -> list[tuple[str, list[str]]]:
    """`$ command` lines of a console block, each with the output lines shown after it."""
    commands: list[tuple[str, list[str]]] = []
    for line in body:
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
        else:
            raise AssertionError(f"a console block starts with output, not '$ ': {line!r}")
    return commands


def shows(line: str, printed: str) -> bool:
    """Whether one printed line matches `line`, in which `...` stands for any text."""
    pattern = ".*".join(map(re.escape, line.strip().split("...")))
    return re.search(pattern, printed) is not None


def run_console(commands, cwd: Path, env: dict[str, str], where: str) -> None:
    for command, shown in commands:
        result = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env,
                                capture_output=True, text=True)
        printed = result.stdout + result.stderr
        expected_rc = 2 if shown and shown[0].startswith("q35c: error:") else 0
        assert result.returncode == expected_rc, (
            f"{where}: `{command}` exited {result.returncode}, not {expected_rc}:\n{printed}")
        if shown and shown[0].strip() != "...":
            assert shows(shown[0], printed), (
                f"{where}: `{command}` did not print its first shown line\n"
                f"  shown:   {shown[0]!r}\n  printed: {printed[:2000]}")


@pytest.mark.parametrize("block", [block_param(b) for b in shell_blocks()])
def test_documented_commands_run(block: Block, tmp_path, editable_sites):
    script, sites = script_and_sites(block, editable_sites)
    require_dev_sh_environment(script)
    cwd = scratch_copy(tmp_path / "repo")
    env = block_env(sites)
    if block.tag == "console":
        run_console(console_commands(block.body), cwd, env, block.id)
        return
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, (
        f"{block.id} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


# -- the blocks themselves ---------------------------------------------------------------


def test_command_blocks_are_tagged():
    """An untagged block whose first line is a command would not be run by the test above."""
    untagged = [b.id for doc in DOCS for b in fenced_blocks(doc)
                if not b.tag and b.body and UNTAGGED_COMMAND.match(b.body[0].lstrip())]
    assert not untagged, f"tag these blocks ```sh or ```console: {untagged}"


def test_the_reader_finds_the_readme_blocks():
    """The block reader sees the fences: README.md has runnable shell blocks."""
    readme = [b for b in shell_blocks() if b.doc.name == "README.md"]
    assert readme and any("sketch" not in b.words for b in readme)


def test_marks_are_read_from_the_info_string(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text('x\n```sh sketch="needs a GPU"\nnvidia-smi\n```\n```console slow\n'
                   "$ q35c targets\n```\n```\nplain\n```\n")
    sketch, console, plain = fenced_blocks(doc)
    assert (sketch.line, sketch.tag, sketch.words, sketch.body) == (
        2, "sh", {"sketch": "needs a GPU"}, ["nvidia-smi"])
    assert (console.tag, console.words) == ("console", {"slow": ""})
    assert console_commands(console.body) == [("q35c targets", [])]
    assert (plain.tag, plain.body) == ("", ["plain"])


def test_console_output_lines_match_with_ellipses():
    printed = "note\nq35c: error: verify-overflow: op (x) can overflow: group 0\n"
    assert shows("q35c: error: verify-overflow: ... group 0", printed)
    assert shows("  q35c: error: verify-overflow: op (x) can overflow: group 0", printed)
    assert not shows("q35c: error: verify-overflow: ... group 1", printed)
    assert not shows("note q35c", printed)
