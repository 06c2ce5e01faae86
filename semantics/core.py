"""The table of op implementations and what every implementation shares.

An implementation is `fn(interp, op, args) -> tuple of results`: `interp` is the running
`Interpreter` (for regions, calls, the weight store), `args` the values of `op`'s operands.
`IMPLEMENTATIONS` maps op classes to implementations; the dialect modules of this package
fill it with `@impl(...)` when `q35c.semantics` is imported, and it is the public way for
passes and targets to run one op (the Groq simulator runs macro instructions through it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Attribute, Operation, SSAValue

from q35c.compiler.ir_attrs import function_name, source_file, source_line
from q35c.compiler.tensors import numpy_dtype

F32 = np.float32
Value = Any  # np.ndarray | Q3P5Tensor | LegacyPairTensor

OpImpl = Callable[..., tuple[Value, ...]]

IMPLEMENTATIONS: dict[type[Operation], OpImpl] = {}
"""Op class -> its numpy implementation (see the module docstring)."""


class InterpreterError(RuntimeError):
    """The IR cannot be executed (unsupported op, missing input, bad entry point), or an op
    fails at run time. `line` is the source line (Fortran) when the failing op has one;
    `message` is the text without it."""

    def __init__(self, message: str, line: int | None = None, file: str | None = None):
        super().__init__(message if line is None else f"line {line}: {message}")
        self.message = message
        self.line = line
        self.file = file
        """The file of `line` when it is not the input's (a module of another file)."""


def located_error(op: Operation, message: str) -> InterpreterError:
    """An error at `op`: names the op and its function, and carries its source line."""
    located = source_line(op)
    fn = located[0] if located is not None else _function_of(op)
    where = f"{op.name} in {function_name(fn)}" if fn is not None else op.name
    return InterpreterError(f"{message} ({where})", located[1] if located else None,
                            source_file(fn))


def _function_of(op: Operation) -> Operation | None:
    current = op.parent_op()
    while current is not None and "sym_name" not in current.properties:
        current = current.parent_op()
    return current


def impl(*op_types: type[Operation]):
    """Register the numpy semantics of one or more op classes."""

    def register(fn: OpImpl) -> OpImpl:
        for op_type in op_types:
            IMPLEMENTATIONS[op_type] = fn
        return fn

    return register


def elementwise(fn: Callable[..., np.ndarray]) -> OpImpl:
    """The implementation of an elementwise op computing `fn` of its operands, cast to the
    result's element type (numpy warnings silenced: special values follow IEEE)."""

    def run(interp, op, args):
        dtype = numpy_element_dtype(op.results[0].type)
        with np.errstate(all="ignore"):
            return (np.asarray(fn(*args), dtype=dtype),)

    return run


def register_elementwise(table: dict[type[Operation], Callable[..., np.ndarray]]) -> None:
    for op_type, fn in table.items():
        IMPLEMENTATIONS[op_type] = elementwise(fn)


def numpy_element_dtype(t: Attribute):
    """The numpy dtype of a tensor type's elements, or of a scalar type."""
    return numpy_dtype(t.get_element_type() if isinstance(t, TensorType) else t)


def type_shape(value: SSAValue) -> tuple[int, ...]:
    assert isinstance(value.type, TensorType)
    return tuple(value.type.get_shape())


def f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=F32)


def f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)
