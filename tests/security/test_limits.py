"""Abuse cases for resource limits, user errors and plugin containment (docs/security.md).

Every input is generated here (onnx.helper for ONNX, strings for Fortran); each case runs
the real `q35c` in a sandbox under the harness's memory and time limits.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from .harness import check_ok, check_refused, run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


# -- plugins -------------------------------------------------------------------------------

PLUGIN_PASS = """\
import sys

from xdsl.passes import ModulePass
from xdsl.universe import Universe


class Escape(BaseException):
    pass


class Misbehave(ModulePass):
    name = "misbehave"

    def apply(self, ctx, op):
        {body}


UNIVERSE = Universe(all_passes={{"misbehave": lambda: Misbehave}})
"""


def install_plugin(site: Path, source: str, name: str = "evil_plugin") -> dict[str, str]:
    """A plugin module `name` with an `xdsl.universe` entry point `name:UNIVERSE`, installed
    as a bare .dist-info in `site`; returns the environment that makes q35c see it."""
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text(source)
    info = site / f"{name}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[xdsl.universe]\n{name} = {name}:UNIVERSE\n")
    return {"PYTHONPATH": str(site)}


def _mlp(box) -> Path:
    for name in ("mlp.mlir", "mlp.q35w"):
        (box.input_dir / name).write_bytes((EXAMPLES / name).read_bytes())
    return box.input_dir / "mlp.mlir"


@pytest.mark.parametrize("body, why", [
    ("raise Escape('out')", "Escape: out"),
    ("sys.exit(0)", "sys.exit(0)"),
    ("sys.exit('bye')", "sys.exit('bye')"),
    ("raise GeneratorExit()", "GeneratorExit"),
    ("raise RecursionError('deep')", "RecursionError: deep"),
])
def test_plugin_pass_cannot_escape_error_handling(box, tmp_path, body, why):
    env = install_plugin(tmp_path / "site", PLUGIN_PASS.format(body=body))
    line = check_refused(box, [_mlp(box), "--passes", "misbehave", "-o", box.out], env=env,
                         names="pass 'misbehave' (plugin 'evil_plugin') failed")
    assert why in line


def test_plugin_that_exits_on_import_is_skipped_and_named(box, tmp_path):
    env = install_plugin(tmp_path / "site", "import sys\nsys.exit(3)\n")
    check_ok(box, [_mlp(box), "-o", box.out], env=env)  # the rest of q35c still works
    line = check_refused(box, [_mlp(box), "--passes", "misbehave", "-o", box.out], env=env,
                         names="plugin 'evil_plugin' failed to load (SystemExit")
    assert "unknown pass 'misbehave'" in line


def test_plugin_pass_class_that_exits_on_load(box, tmp_path):
    source = PLUGIN_PASS.format(body="pass").replace(
        'lambda: Misbehave', 'lambda: sys.exit(0)')
    env = install_plugin(tmp_path / "site", source)
    check_refused(box, [_mlp(box), "--passes", "misbehave", "-o", box.out], env=env,
                  names="pass 'misbehave' (plugin 'evil_plugin') failed to load: SystemExit")
