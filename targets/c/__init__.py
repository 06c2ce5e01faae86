"""The C target: self-contained C99 (plus optional OpenMP) for a compiled model.

`write` emits model.h (load/run/free API), model.c (the kernels and the planned program),
model.bin (the weight blob: Q3P5 tensors in their serialized form, float tensors raw),
main.c (a raw-tensor runner with --bench) and a Makefile. `run` compiles them with the
system compiler, cached by content hash (`build.py`), and runs the result.

Pipeline: the native lowering shared with other native targets (targets/native: graph IR ->
kernel steps over buffers -> one arena from liveness), then printer.py (C text). The
runtime kernels are in runtime/q35rt.c and runtime/q35rt_fused.c.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp

from q35c.compiler.weights import WeightStore
from q35c.targets.target import Q35cTarget


@dataclass(frozen=True)
class CTarget(Q35cTarget):
    """C99 sources (model.c, model.h, main.c, Makefile) and the weight blob model.bin."""

    name = "c"

    def accepted_ops(self) -> frozenset[str]:
        """What the native lowering lowers (targets/native/lower.py): the elementwise ops,
        the ops with a `lower` rule of their own (the fused ops included), func.return, and
        the generic ONNX op for the op types with a native rule (targets/native/onnx_node.py);
        and the loop-level ops of Fortran kernels, which loops.py prints (`LOOP_OPS`)."""
        from q35c.targets.c.loops import LOOP_OPS
        from q35c.targets.native.lower import lowered_ops
        from q35c.targets.native.onnx_node import accepted_keys

        return lowered_ops() | accepted_keys() | LOOP_OPS

    def write(self, ctx: Context, module: ModuleOp, store: WeightStore, out_dir: Path,
              stem: str) -> None:
        from q35c.targets.c.emit import emit
        from q35c.targets.c.loops import is_loop_module, write_files

        if is_loop_module(module):  # Fortran kernels: C functions with loops (loops.py)
            for name, data in write_files(module, stem).items():
                (out_dir / name).write_bytes(data)
            return
        emitted = emit(module, store, None, stem)
        for name, data in emitted.files.items():
            (out_dir / name).write_bytes(data)
        print(emitted.summary())

    def run(self, ctx: Context, module: ModuleOp, store: WeightStore,
            inputs: dict[str, np.ndarray], entry: str | None) -> dict[str, np.ndarray]:
        from q35c.targets.c.build import execute
        from q35c.targets.c.emit import emit
        from q35c.targets.c.loops import is_loop_module, run

        if is_loop_module(module):
            return run(module, inputs, entry)
        return execute(emit(module, store, entry, "model"), inputs)
