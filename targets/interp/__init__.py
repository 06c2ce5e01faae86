"""The `interp` target: execute the IR with the reference semantics (`q35c.semantics`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.weights import WeightStore
from q35c.targets.target import Q35cTarget


@dataclass(frozen=True)
class InterpTarget(Q35cTarget):
    """Runs modules with the numpy reference interpreter; it emits nothing."""

    name = "interp"

    def write(self, ctx: Context, module: ModuleOp, store: WeightStore, out_dir: Path,
              stem: str) -> None:
        raise Q35cError("target interp executes IR and writes no code: use `q35c run`")

    def run(self, ctx: Context, module: ModuleOp, store: WeightStore,
            inputs: dict[str, np.ndarray], entry: str | None) -> dict[str, np.ndarray]:
        from q35c.semantics import InterpreterError, SourceLineError, run_module

        try:
            return run_module(module, store, inputs, entry)
        except InterpreterError as err:
            if err.line is not None:  # the driver adds the file: FILE:LINE: message
                raise SourceLineError(err.message, err.line, err.file) from None
            raise Q35cError(str(err)) from None
