"""Confirmed overflow witnesses for `verify-overflow` on Fortran procedures.

Fortran does not define signed integer overflow (gfortran assumes it cannot happen unless
`-fwrapv`), so a Fortran procedure whose integer arithmetic overflows for some input is
rejected. The interval analysis (verify_overflow.py) marks every `addi`/`subi`/`muli` whose
range may leave its type with `q35c.may_wrap`; an interval is an over-approximation, so
this module looks for a concrete input that makes one of them overflow and runs the
reference interpreter on it to confirm: the exact (unbounded) result of the marked op must
leave its type during the run. Only a confirmed witness is an error; a possible wrap that
no candidate input reaches (a loop bound that would take 2^31 iterations, say) stays a
`q35c.may_wrap` note.

Candidate inputs put every integer array at one end of its range (`arg-ranges`, else its
element type's range), filled with one value, every integer scalar at an end of its
declared range (else 1 or 64: UNDECLARED_SCALARS), reals 0; candidates whose arrays would be
larger than MAX_ELEMENTS, and runs beyond the procedure's STEP_BUDGET of interpreter steps,
are inconclusive.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice, product

import numpy as np
from xdsl.dialects import arith, func
from xdsl.dialects.builtin import IndexType, IntegerType, MemRefType, TensorType
from xdsl.ir import Operation

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.entry import argument_attr_strings, argument_names, memref_argument_shape

MAX_CANDIDATES = 16
UNDECLARED_SCALARS = (1, 64)
"""The values tried for an integer scalar argument without a declared range: scalars are
sizes, counts and offsets, and `huge()` for each would only find overflows of the index
arithmetic that no caller means (`arg-ranges` declares the real range)."""
MAX_ELEMENTS = 1 << 22
STEP_BUDGET = 300_000
"""Interpreter steps all candidate runs of one procedure may take together (about a second
of CPU time on the development machine: ~3 us a step, docs/fortran.md); a run stopped by it
is inconclusive, so an overflow that needs a longer run (an int8 x int8 dot product needs
2^17 terms to pass 2^31) stays a `q35c.may_wrap` note."""
EXTREME_BUDGET = 4_000_000
"""The most interpreter steps one run at an accumulator's extreme inputs may take (about
twelve seconds): a 2^17-term int8 dot product takes 1.4 million."""
_EXACT = {arith.AddiOp: lambda a, b: a + b, arith.SubiOp: lambda a, b: a - b,
          arith.MuliOp: lambda a, b: a * b}


@dataclass
class Witness:
    """Inputs for which `op` computed `exact`, which does not fit its `width`-bit type."""

    op: Operation
    inputs: dict[str, np.ndarray]
    operands: tuple[int, int]
    exact: int
    width: int


class _Overflowed(Exception):
    def __init__(self, op: Operation, operands: tuple[int, int], exact: int, width: int):
        super().__init__()
        self.found = (op, operands, exact, width)


def _element(t):
    return t.get_element_type() if isinstance(t, (MemRefType, TensorType)) else t


def _width(t) -> int | None:
    el = _element(t)
    if isinstance(el, IndexType):
        return 64
    return el.width.data if isinstance(el, IntegerType) else None


def candidates(fn: func.FuncOp, ranges: dict[str, tuple[int, int]]
               ) -> Iterator[dict[str, np.ndarray]]:
    """Inputs with every integer argument at an end of its range (at most MAX_CANDIDATES)."""
    names = argument_names(fn)
    intents = argument_attr_strings(fn, "q35c.intent")
    choices = []
    for name, arg, intent in zip(names, fn.args, intents):
        width = _width(arg.type)
        if intent == "out":
            choices.append([None])
        elif width is not None and width > 1 and isinstance(arg.type, MemRefType):
            lo, hi = ranges.get(name, (-(2 ** (width - 1)), 2 ** (width - 1) - 1))
            choices.append([hi, lo] if hi != lo else [hi])
        elif width is not None and width > 1:
            lo, hi = ranges.get(name, UNDECLARED_SCALARS)
            choices.append([hi, lo] if hi != lo else [hi])
        else:
            choices.append([0])
    for combo in islice(product(*choices), MAX_CANDIDATES):
        scalars = {n: v for n, a, v in zip(names, fn.args, combo)
                   if v is not None and not isinstance(a.type, MemRefType)}
        inputs: dict[str, np.ndarray] = {}
        ok = True
        for index, (name, arg, value) in enumerate(zip(names, fn.args, combo)):
            if value is None:
                continue
            el = _element(arg.type)
            dtype = (np.dtype(f"int{_width(arg.type)}") if _width(arg.type) in (8, 16, 32, 64)
                     else np.dtype(np.float64 if "64" in str(el) else np.float32))
            if isinstance(arg.type, MemRefType):
                shape = memref_argument_shape(fn, index, scalars)
                if shape is None or int(np.prod(shape, dtype=np.int64)) > MAX_ELEMENTS:
                    ok = False
                    break
                inputs[name] = np.full(shape, value, dtype)
            else:
                inputs[name] = np.asarray(value, dtype)
        if ok:
            yield inputs


def confirm(module, fn: func.FuncOp, flagged: list[Operation],
            ranges: dict[str, tuple[int, int]],
            extremes: Sequence[tuple[dict[str, int], int]] = ()) -> Witness | None:
    """A candidate input for which the interpreter overflows one of `flagged`, or None.
    `extremes` (array values that reach an accumulator's closed-form bound, and the steps a
    run takes) go first, each with a budget of its own run's steps (up to EXTREME_BUDGET):
    a long accumulation gets the one run that decides it."""
    from q35c.compiler.weights import WeightStore
    from q35c.semantics import IMPLEMENTATIONS, Interpreter, InterpreterError

    checked = {op for op in flagged if type(op) in _EXACT}
    if not checked:
        return None
    saved = {t: IMPLEMENTATIONS[t] for t in _EXACT}

    def watching(original):
        def run(interp, op, args):
            if op in checked:
                a, b = (int(x) for x in args)
                width = _width(op.results[0].type)
                exact = _EXACT[type(op)](a, b)
                if not -(2 ** (width - 1)) <= exact < 2 ** (width - 1):
                    raise _Overflowed(op, (a, b), exact, width)
            return original(interp, op, args)
        return run

    try:
        IMPLEMENTATIONS.update({t: watching(f) for t, f in saved.items()})
        first = next(candidates(fn, ranges), None)
        for values, steps in extremes:
            if first is None or steps > EXTREME_BUDGET:
                continue
            inputs = {n: np.full_like(v, values[n]) if n in values else v
                      for n, v in first.items()}
            interp = Interpreter(module, WeightStore(), steps + STEP_BUDGET)
            try:
                interp.run(inputs, fn.sym_name.data)
            except _Overflowed as hit:
                op, operands, exact, width = hit.found
                return Witness(op, inputs, operands, exact, width)
            except (Q35cError, InterpreterError):
                pass  # inconclusive
        budget = STEP_BUDGET
        for inputs in candidates(fn, ranges):
            if budget <= 0:
                break
            interp = Interpreter(module, WeightStore(), budget)
            try:
                interp.run(inputs, fn.sym_name.data)
            except _Overflowed as hit:
                op, operands, exact, width = hit.found
                return Witness(op, inputs, operands, exact, width)
            except (Q35cError, InterpreterError):
                pass  # the step budget, a division by zero, ...: inconclusive
            budget -= interp.steps
    finally:
        IMPLEMENTATIONS.update(saved)
    return None
