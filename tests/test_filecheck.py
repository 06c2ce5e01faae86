"""Runs the lit/FileCheck suite (tests/filecheck) as part of pytest."""

import subprocess
import sys

from conftest import BIN, ROOT


def test_lit_filecheck_suite_passes():
    result = subprocess.run([sys.executable, str(BIN / "lit"), "-q", str(ROOT / "tests/filecheck")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
