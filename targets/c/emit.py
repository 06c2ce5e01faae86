"""From a module to the files of the C target: lower, plan memory, print."""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.dialects.builtin import ModuleOp

from q35c.compiler.weights import WeightStore
from q35c.targets.c.printer import BLOB_HEADER, CPrinter, blob_bytes
from q35c.targets.native.fold import fold_program
from q35c.targets.native.lower import lower_module
from q35c.targets.native.memory import plan_arena, plan_blob
from q35c.targets.native.program import Program

BLOB_FILE = "model.bin"


@dataclass
class Emitted:
    program: Program
    files: dict[str, bytes]  # file name -> content

    def summary(self) -> str:
        p = self.program
        arena = sum(1 for b in p.buffers if b.kind == "arena" and b.alias_of is None)
        weights = len(self.files[BLOB_FILE])
        return (f"c target: {len(p.steps)} steps; arena {p.arena_bytes} bytes for {arena} "
                f"intermediate tensors; weights {weights} bytes ({len(p.blob)} entries)")


def emit(module: ModuleOp, store: WeightStore, entry: str | None, name: str,
         fold: bool = True) -> Emitted:
    """The C target's files; `fold=False` skips targets/native/fold.py's copy removal (the
    same outputs, bit for bit: tests compare the two)."""
    program = lower_module(module, store, entry, name)
    if fold:
        fold_program(program)
    plan_arena(program)
    blob = blob_bytes(program, plan_blob(program, BLOB_HEADER))
    printer = CPrinter(program, blob)
    files = {
        "model.h": printer.header().encode(),
        "model.c": printer.source().encode(),
        "main.c": printer.main().encode(),
        "Makefile": printer.makefile().encode(),
        BLOB_FILE: blob,
    }
    return Emitted(program, files)
