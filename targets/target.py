"""The interface every q35c target implements.

A target is an xDSL `Target` (a frozen dataclass with a `name`, options parsed from the
pipeline syntax `name{key=value ...}`, and `emit` to a text stream), extended with what the
q35c driver needs. Everything target-specific is declared here, so the driver and the CLI
have no per-target branches:

- `pipeline()`: passes the target needs, run by the driver after the user's pipeline (and
  dumped by `--dump-ir`, printed by `--print-ir-after-all`, like any pass);
- `accepted_ops()`: the ops its code generator handles; the driver checks the final IR
  first and reports every other op, with its source location, in one error;
- `write` / `emit`: the artifacts into an output directory (-o) or the text to stdout;
- `run`: for targets that execute (`q35c run`);
- `supports_shape_only` and `shape_only_from_spec` / `write_shape_only` /
  `emit_shape_only`: what `--shape-only` (shapes and packed types, no weight data) makes;
- `output_markers` and `report`: `q35c report OUT` on a directory this target wrote.

Targets register through the `xdsl.universe` entry-point group (`all_targets`), as q35c's
own do in compiler/universe.py; docs/writing-a-target.md walks through a plugin target.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import IO, ClassVar

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.utils.arg_spec import ArgSpec
from xdsl.utils.target import Target

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.weights import WeightStore


@dataclass(frozen=True)
class Q35cTarget(Target):
    """A q35c code-generation target (the first docstring line is `q35c targets`' summary)."""

    supports_shape_only: ClassVar[bool] = False
    """Whether `--shape-only` (ONNX shapes and packed types, no weight data) can compile for
    this target; then `shape_only_from_spec` and `write_shape_only`/`emit_shape_only` say
    what it makes."""
    output_markers: ClassVar[tuple[str, ...]] = ()
    """File names that mark a directory as written by this target (`q35c report OUT` picks
    the target whose marker is in OUT). Empty: the target has no `report`."""

    def pipeline(self, shape_only: bool = False) -> str:
        """The passes this target needs, in xDSL pipeline syntax ('' for none).

        The driver runs them after the user's pipeline (verification included), verifying,
        dumping and printing the IR after each like any pass. `shape_only`: the pipeline for
        `--shape-only` compiles, whose IR has no weight data to read.
        """
        return ""

    def accepted_ops(self) -> Collection[str] | None:
        """Names of the ops this target lowers in the body of the entry function (None:
        any op). The driver checks the IR after the whole pipeline against it and reports
        every other op, with its source location, in one error before the target runs."""
        return None

    def emit(self, ctx: Context, module: ModuleOp, output: IO[str]) -> None:
        """Without -o: the target's text on `output`."""
        raise Q35cError(f"target {self.name} writes a directory: give -o DIR")

    @abstractmethod
    def write(self, ctx: Context, module: ModuleOp, store: WeightStore, out_dir: Path,
              stem: str) -> None:
        """Write the artifacts for `module` into the (new, empty) directory `out_dir`;
        `stem` is the input file's name without its suffix."""

    def run(self, ctx: Context, module: ModuleOp, store: WeightStore,
            inputs: dict[str, np.ndarray], entry: str | None) -> dict[str, np.ndarray]:
        """`q35c run`: execute the entry function on `inputs`; its outputs by name."""
        raise Q35cError(f"target {self.name} cannot run models yet")

    # -- --shape-only --------------------------------------------------------------------

    @classmethod
    def shape_only_from_spec(cls, spec: ArgSpec) -> Q35cTarget:
        """The target instance for `--shape-only --target SPEC` (only called when
        `supports_shape_only`); by default the same options as without it."""
        return cls.from_spec(spec)

    def write_shape_only(self, ctx: Context, module: ModuleOp, store: WeightStore,
                         out_dir: Path, stem: str, entry: str | None) -> None:
        """`--shape-only -o OUT`: by default what `write` writes (the store holds shape-only
        entries, which refuse to be read)."""
        self.write(ctx, module, store, out_dir, stem)

    def emit_shape_only(self, ctx: Context, module: ModuleOp, output: IO[str],
                        entry: str | None) -> None:
        """`--shape-only` without -o: by default what `emit` prints."""
        self.emit(ctx, module, output)

    # -- q35c report OUT -----------------------------------------------------------------

    @classmethod
    def report(cls, out_dir: Path) -> Path:
        """`q35c report OUT` on a directory this target wrote: write a report file into it
        and return its path (only targets with `output_markers`)."""
        raise Q35cError(f"target {cls.name} has no report")
