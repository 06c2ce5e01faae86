"""`histogram`: a tiny q35c target that writes how often each op occurs in the final IR.

    q35c MODEL --target histogram -o OUT     OUT/ops.json
    q35c MODEL --target histogram            the same JSON on stdout

It shows the parts of q35c's target interface (q35c.targets.target.Q35cTarget): a pipeline
suffix that the driver runs (and `--dump-ir` shows), `--shape-only` support, and `write` /
`emit`. It reads no weight data, so it works on shape-only imports too.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from q35c.compiler.weights import WeightStore
from q35c.targets.target import Q35cTarget


def op_histogram(module: ModuleOp, nested: bool = True) -> dict:
    """{"ops": {op name: count}, "total": count}, names sorted, for every op in `module`
    (not the module itself); `nested=False` counts only the ops directly in function bodies
    (not those in the regions of linalg.generic, scf.for, ...)."""
    ops = [op for op in module.walk() if op is not module
           and (nested or isinstance(op.parent_op(), func.FuncOp))]
    counts = Counter(op.name for op in ops)
    return {"ops": dict(sorted(counts.items())), "total": len(ops)}


@dataclass(frozen=True)
class HistogramTarget(Q35cTarget):
    """A JSON histogram of the final IR's op names (ops.json)."""

    name = "histogram"
    nested: bool = True
    """`histogram{nested=false}`: count only the top-level ops of each function."""
    supports_shape_only = True

    def pipeline(self, shape_only: bool = False) -> str:
        # Count the canonical form, even when the user's pipeline does not canonicalize
        # (`--passes ''`): the driver runs this after the user's passes.
        return "canonicalize"

    def emit(self, ctx: Context, module: ModuleOp, output: IO[str]) -> None:
        output.write(json.dumps(op_histogram(module, self.nested), indent=1) + "\n")

    def write(self, ctx: Context, module: ModuleOp, store: WeightStore, out_dir: Path,
              stem: str) -> None:
        with open(out_dir / "ops.json", "w") as output:
            self.emit(ctx, module, output)
