"""From a module to the files of the CUDA target: lower, plan memory, lay out the blob, print."""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.dialects.builtin import ModuleOp

from q35c.compiler.weights import WeightStore
from q35c.targets.c.printer import BLOB_HEADER, blob_bytes
from q35c.targets.cuda.blob import Q3P5Layout, relayout
from q35c.targets.cuda.printer import CudaPrinter
from q35c.targets.native.lower import lower_module
from q35c.targets.native.memory import plan_arena, plan_blob
from q35c.targets.native.program import Program

BLOB_FILE = "model.bin"
Q3P5_KERNELS = {"qmatmul_f32": 1, "fused_matmul_f32": 1, "qmatmul_i8": 2}
"""The steps that read a Q3P5 tensor, and the index of its buffer among their inputs."""


@dataclass
class Emitted:
    program: Program
    layouts: dict[int, Q3P5Layout]  # Q3P5 blob buffers by id
    files: dict[str, bytes]  # file name -> content

    def summary(self) -> str:
        p = self.program
        arena = sum(1 for b in p.buffers if b.kind == "arena" and b.alias_of is None)
        return (f"cuda target: {len(p.steps)} steps; arena {p.arena_bytes} bytes for {arena} "
                f"intermediate tensors; weights {len(self.files[BLOB_FILE])} bytes "
                f"({len(p.blob)} entries, {len(self.layouts)} Q3P5)")


def emit(module: ModuleOp, store: WeightStore, entry: str | None, name: str) -> Emitted:
    program = lower_module(module, store, entry, name, target="cuda")
    plan_arena(program)
    q3p5 = {id(step.ins[Q3P5_KERNELS[step.kernel]]) for step in program.steps
            if step.kernel in Q3P5_KERNELS}
    layouts = relayout(program.blob, q3p5)
    blob = blob_bytes(program, plan_blob(program, BLOB_HEADER))
    printer = CudaPrinter(program, blob, layouts)
    files = {
        "model.cuh": printer.header().encode(),
        "model.cu": printer.source().encode(),
        "main.cu": printer.main().encode(),
        "Makefile": printer.makefile().encode(),
        BLOB_FILE: blob,
    }
    return Emitted(program, layouts, files)
