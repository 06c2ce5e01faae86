import pytest

from .harness import Sandbox


@pytest.fixture
def box(tmp_path):
    """A fresh sandbox (in/, outside/ with a canary; out/ not created)."""
    return Sandbox.create(tmp_path / "box")
