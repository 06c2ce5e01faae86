"""The evaluation engine: runs a module's functions op by op through `IMPLEMENTATIONS`.

It binds inputs to the entry function's arguments (tensors, scalars and Fortran-style
memrefs with shapes from scalar arguments), runs blocks, and counts steps: every executed
op and every region entered (a loop iteration) is one step, and a run that takes more than
its budget (`--max-steps`, default `DEFAULT_MAX_STEPS`) stops with an error at the op it
was executing, so a loop that does not end cannot hang `q35c run`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    Float32Type,
    Float64Type,
    IndexType,
    IntegerType,
    MemRefType,
    ModuleOp,
    TensorType,
)
from xdsl.ir import Operation, SSAValue
from xdsl.traits import IsTerminator

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.entry import (
    EntryError,
    argument_attr_strings,
    argument_names,
    entry_function,
    memref_argument_shape,
    result_names,
)
from q35c.compiler.tensors import numpy_dtype
from q35c.compiler.weights import WeightStore

from .core import IMPLEMENTATIONS, InterpreterError, OpImpl, Value, located_error

DEFAULT_MAX_STEPS = 10**8
"""Steps (executed ops plus entered regions) one run may take: minutes of interpretation,
far more than any model or kernel of the test corpus needs."""

_MAX_STEPS: ContextVar[int] = ContextVar("q35c_max_steps", default=DEFAULT_MAX_STEPS)


@contextmanager
def step_limit(max_steps: int) -> Iterator[None]:
    """Interpreters created inside this block stop after `max_steps` steps (`--max-steps`:
    the driver sets it around a target's run, whose interface does not carry it)."""
    if max_steps < 1:
        raise Q35cError(f"--max-steps must be at least 1, got {max_steps}")
    token = _MAX_STEPS.set(max_steps)
    try:
        yield
    finally:
        _MAX_STEPS.reset(token)


class SourceLineError(Q35cError):
    """A run-time error at a line of the input's source (a Fortran statement). `str()` is
    `line N: message`; the driver, which knows the input file, reports `FILE:N: message`."""

    def __init__(self, message: str, line: int, file: str | None = None):
        super().__init__(f"line {line}: {message}")
        self.message = message
        self.line = line
        self.file = file
        """The file of `line` when it is not the input (a module of another file)."""


class Interpreter:
    """Runs the functions of one module on numpy values, with weights from a store."""

    def __init__(self, module: ModuleOp, store: WeightStore, max_steps: int | None = None,
                 overrides: Mapping[type, OpImpl] | None = None):
        self.module = module
        self.store = store
        self.overrides = dict(overrides or {})
        """A target's numeric mode: implementations that replace IMPLEMENTATIONS' for
        their op types (e.g. the Cerebras target's `matmul_q3p5_f16`)."""
        self.max_steps = _MAX_STEPS.get() if max_steps is None else max_steps
        self.steps = 0
        self.mutable_globals: dict[str, np.ndarray] = {}
        """The buffers of `memref.global`s without `constant` (Fortran's random_number
        state): made from their initial value on first use, kept for this interpreter's
        lifetime, as a C program's static variables are."""

    def function(self, name: str) -> func.FuncOp:
        try:
            return entry_function(self.module, name)
        except EntryError as err:
            raise InterpreterError(str(err)) from None

    def call(self, fn: func.FuncOp, args: list[Value]) -> tuple[Value, ...]:
        saved = getattr(self, "_env", None)
        self._env: dict[SSAValue, Value] = {}
        try:
            return self.run_region(fn.body, args, func.ReturnOp)
        finally:
            self._env = saved

    def _step(self, op: Operation) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise located_error(op, f"stopped after {self.max_steps} steps, the limit set "
                                    "by --max-steps")

    def run_region(self, region, args: list[Value], terminator=None) -> tuple[Value, ...]:
        """Run the single block of `region` with `args`; the values its terminator passes."""
        env = self._env
        block = region.block
        env.update(zip(block.args, args))
        self._step(region.parent_op())
        for op in block.ops:
            if op.has_trait(IsTerminator) or isinstance(op, func.ReturnOp):
                return tuple(env[v] for v in op.operands)
            self.steps += 1  # inline: the one cost every op pays
            if self.steps > self.max_steps:
                self._step(op)
            run = self.overrides.get(type(op)) or IMPLEMENTATIONS.get(type(op))
            if run is None:
                raise InterpreterError(f"{op.name} is not supported by the interpreter")
            results = run(self, op, [env[v] for v in op.operands])
            env.update(zip(op.results, results))
        if terminator is func.ReturnOp:
            raise InterpreterError(f"function @{region.parent_op().sym_name.data} has no "
                                   "func.return")
        return ()

    def run(self, inputs: Mapping[str, np.ndarray], entry: str | None = None
            ) -> dict[str, np.ndarray]:
        self.steps = 0
        try:
            fn = entry_function(self.module, entry)
            names = argument_names(fn)
            intents = argument_attr_strings(fn, "q35c.intent")
            missing = [n for n, i in zip(names, intents) if n not in inputs and i != "out"]
            if missing:
                raise InterpreterError(f"missing inputs: {', '.join(missing)}")
            args = [_argument(fn, index, names, inputs) for index in range(len(names))]
        except EntryError as err:
            raise InterpreterError(str(err)) from None
        outputs = dict(zip(result_names(fn), self.call(fn, args)))
        for name, intent, value in zip(names, intents, args):
            if intent in ("out", "inout"):  # memref arguments, updated in place
                outputs[name] = value
        return outputs


def _argument(fn: func.FuncOp, index: int, names: list[str],
              inputs: Mapping[str, np.ndarray]) -> Value:
    """The value bound to argument `index`: a tensor or scalar of its type, or a fresh
    array for a memref."""
    name, want = names[index], fn.args[index].type
    if isinstance(want, MemRefType):
        return _memref_argument(fn, index, names, inputs)
    value = np.asarray(inputs[name])
    if isinstance(want, TensorType):
        shape = tuple(want.get_shape())
        if value.shape != shape:
            raise InterpreterError(f"input '{name}' has shape {value.shape}, expected {shape}")
        return value.astype(numpy_dtype(want.get_element_type()), copy=False)
    if isinstance(want, (IntegerType, IndexType, Float32Type, Float64Type)):
        if value.shape != ():
            raise InterpreterError(f"input '{name}' must be a scalar")
        return value.astype(numpy_dtype(want))
    return value


def _memref_argument(fn: func.FuncOp, index: int, names: list[str],
                     inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """A fresh numpy array for a memref argument (a copy: the callee writes into it)."""
    name = names[index]
    want = fn.args[index].type
    dtype = numpy_dtype(want.get_element_type())
    shape = memref_argument_shape(fn, index, inputs)
    if name not in inputs:
        if shape is None:
            raise InterpreterError(f"output '{name}': its shape depends on values that "
                                   "are not inputs; pass it with --input")
        return np.zeros(shape, dtype)
    value = np.asarray(inputs[name])
    rank = len(want.get_shape())
    ok = value.ndim == rank and all(
        d < 0 or d == v for d, v in zip(want.get_shape(), value.shape))
    if shape is not None and value.shape != shape:
        ok = False
    if not ok:
        raise InterpreterError(f"input '{name}' has shape {value.shape}, expected "
                               f"{shape if shape is not None else want}")
    if value.dtype.kind == "f" and np.dtype(dtype).kind in "iub":
        raise InterpreterError(f"input '{name}' is {value.dtype}, expected {dtype}")
    return np.array(value, dtype=dtype, copy=True)


def run_module(module: ModuleOp, store: WeightStore, inputs: Mapping[str, np.ndarray],
               entry: str | None = None, max_steps: int | None = None
               ) -> dict[str, np.ndarray]:
    """Execute `module` (its entry function) and return its outputs by name; at most
    `max_steps` steps (default: the `step_limit` in force, else `DEFAULT_MAX_STEPS`)."""
    return Interpreter(module, store, max_steps).run(inputs, entry)
