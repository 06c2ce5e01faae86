"""Frontends: turn an input file into a verified module with an attached weight store.

Looked up by file extension. `.mlir` is here; `.onnx` and `.f90` arrive with their issues.
"""

from collections.abc import Callable
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp


def _mlir() -> Callable[[Path, Context], ModuleOp]:
    from q35c.compiler.frontends.mlir import load_mlir

    return load_mlir


FRONTENDS: dict[str, Callable[[], Callable[[Path, Context], ModuleOp]]] = {".mlir": _mlir}
PLANNED = {".onnx": "ONNX", ".f90": "Fortran", ".f95": "Fortran", ".f03": "Fortran"}
