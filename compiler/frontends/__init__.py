"""Frontends: turn an input file into a verified module with an attached weight store.

Looked up by file extension: `.mlir`, `.onnx`, and `.f90`/`.f95`/`.f03`/`.f08` (Fortran).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp

DEFAULT_MAX_TENSOR_BYTES = 1 << 30
"""1 GiB: far above any activation or folded table of the models q35c targets (SmolLM2's
49152x576 float32 embedding is 113 MB), far below what a 300-byte hostile model can ask for.
Initializers are file ranges and do not count."""


@dataclass(frozen=True)
class FrontendOptions:
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Values for dynamic input dimensions, from `--shape NAME=d1,d2,...`."""
    given_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """The shapes of the arrays `q35c run --input` was given: they bind an input's dynamic
    dimensions that `shapes` leaves open."""
    shape_only: bool = False
    """`--shape-only`: never read weight data; large initializers become shape-only
    store entries (`ShapeOnlyWeight`). Only the ONNX frontend supports it."""
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
    """`--max-tensor-bytes`: the largest tensor a frontend computes at import time, and the
    largest static shape of an input or intermediate value (docs/security.md)."""
    sources: tuple[Path, ...] = ()
    """Further inputs (`q35c kernel.f90 mods.f90`): Fortran sources whose modules the
    input may use. Only the Fortran frontend takes them."""
    include_dirs: tuple[Path, ...] = ()
    """`-I DIR`: where the Fortran frontend looks for `<module>.f90` of a `use`d module
    (after the input's directory)."""
    bindings: dict[str, str] = field(default_factory=dict)
    """`--bind NAME=VALUE`: values for scalar parameters and scalar arguments of the entry,
    which fix shapes at compile time. Only the Fortran frontend takes them."""
    entry: str | None = None
    """`--entry NAME`, for frontends that specialize the entry (Fortran `--bind`)."""


Frontend = Callable[[Path, Context, FrontendOptions], ModuleOp]


def _mlir() -> Frontend:
    from q35c.compiler.frontends.mlir import load_mlir

    return load_mlir


def _onnx() -> Frontend:
    from q35c.compiler.frontends.onnx import load_onnx

    return load_onnx


def _fortran() -> Frontend:
    from q35c.compiler.frontends.fortran import load_fortran

    return load_fortran


FRONTENDS: dict[str, Callable[[], Frontend]] = {
    ".mlir": _mlir, ".onnx": _onnx, ".f90": _fortran, ".f95": _fortran, ".f03": _fortran,
    ".f08": _fortran,
}
PLANNED: dict[str, str] = {}
