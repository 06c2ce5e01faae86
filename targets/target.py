"""The interface every q35c target implements.

A target is an xDSL `Target` (a frozen dataclass with a `name`, options parsed from the
pipeline syntax, and `emit` to a text stream), extended with what the q35c driver needs:
`write` the target's artifacts into an output directory, and, for targets that can execute,
`run` the compiled module on numpy inputs.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.utils.target import Target

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.weights import WeightStore


@dataclass(frozen=True)
class Q35cTarget(Target):
    """A q35c code-generation target."""

    def emit(self, ctx: Context, module: ModuleOp, output: IO[str]) -> None:
        raise Q35cError(f"target {self.name} writes a directory: give -o DIR")

    @abstractmethod
    def write(self, ctx: Context, module: ModuleOp, store: WeightStore, out_dir: Path,
              stem: str) -> None:
        """Write the artifacts for `module` into the (new, empty) directory `out_dir`."""

    def run(self, ctx: Context, module: ModuleOp, store: WeightStore,
            inputs: dict[str, np.ndarray], entry: str | None) -> dict[str, np.ndarray]:
        raise Q35cError(f"target {self.name} cannot run models yet")
