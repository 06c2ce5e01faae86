"""The bodies of ONNX control flow (If, Loop, Scan) as modules of their own.

A `q35nn.onnx_node` of op type If, Loop or Scan carries its bodies as serialized
`GraphProto`s (the interpreter runs them with onnx's reference implementation). A target
that compiles such a node (the native lowering, targets/native/onnx_control.py) needs each
body as q35c IR: `import_body` turns one body, with the static types of its inputs and the
values it reads from the enclosing graph, into a verified module with its own weight store.

The importing is the ONNX frontend's work, and targets may not import frontends
(docs/architecture.md, "Layers"): the driver, which imports both, installs the frontend's
body importer around a target's write or run (`body_importer`), and `import_body` calls it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from q35c.compiler.diagnostics import Q35cError


@dataclass(frozen=True)
class BodyValue:
    """A value a body reads: a formal input of the body or a value of the enclosing graph.
    `value` holds its data when it is known at compile time (then it is folded into the body
    and is no argument of the body's function)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    value: np.ndarray | None = None


@dataclass(frozen=True)
class BodyRequest:
    """What to import: the body `graph` (an onnx.GraphProto) of node `where` (for messages),
    its formal inputs with static types (in the body's order), the enclosing graph's values
    it reads, and the model's opset imports and IR version."""

    where: str
    graph: object
    inputs: tuple[BodyValue, ...]
    outer: tuple[BodyValue, ...]
    opsets: tuple[tuple[str, int], ...]
    ir_version: int


BodyImporter = Callable[[BodyRequest], tuple[object, object]]
"""(request) -> (a verified ModuleOp whose `@main` takes the body's formal inputs, then the
run-time outer values in the request's order, and returns the body's outputs; its
WeightStore)."""

_IMPORTER: ContextVar[BodyImporter | None] = ContextVar("q35c_body_importer", default=None)


@contextlib.contextmanager
def body_importer(importer: BodyImporter) -> Iterator[None]:
    """Within this block, `import_body` uses `importer`."""
    token = _IMPORTER.set(importer)
    try:
        yield
    finally:
        _IMPORTER.reset(token)


def import_body(request: BodyRequest):
    """The body of `request` as (module, store); a one-line `Q35cError` when it cannot be
    imported."""
    importer = _IMPORTER.get()
    if importer is None:
        raise Q35cError(f"{request.where}: no ONNX body importer is installed (compile "
                        "through q35c's driver, `q35c` or `q35c.compiler.driver`)")
    return importer(request)


def graph_attribute(op, name: str):
    """The body `name` of `op` (a `q35nn.onnx_node`) as an onnx.GraphProto."""
    for attribute in op.node_proto().attribute:
        if attribute.name == name:
            return attribute.g
    raise Q35cError(f"q35nn.onnx_node {op.op_type.data} has no body '{name}'")

