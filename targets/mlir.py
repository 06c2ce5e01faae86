"""The `mlir` target: the final IR in generic syntax, plus its weight store.

Generic syntax is what upstream `mlir-opt` can read for IRDL-defined dialects, so the output
checks with `mlir-opt-22 --irdl-file=<q35c irdl>`. Weights go to `<stem>.q35w` beside the IR,
which names that file in its `quant3p5.weights` module attribute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp

from q35c.compiler.ir_text import module_text, referenced_weights
from q35c.compiler.weights import WeightStore
from q35c.targets.target import Q35cTarget


@dataclass(frozen=True)
class MLIRTarget(Q35cTarget):
    """Final IR as text (generic op syntax) and the weights it names."""

    name = "mlir"
    supports_shape_only = True
    """With --shape-only: the IR, and a store of shape-only entries (no weight data)."""

    def emit(self, ctx: Context, module: ModuleOp, output: IO[str]) -> None:
        output.write(module_text(module, weights_file=None))

    def write(self, ctx: Context, module: ModuleOp, store: WeightStore, out_dir: Path,
              stem: str) -> None:
        names = referenced_weights(module)
        weights_file = f"{stem}.q35w" if names else None
        (out_dir / f"{stem}.mlir").write_text(module_text(module, weights_file=weights_file))
        if weights_file:
            store.save(out_dir / weights_file, keep=names)
