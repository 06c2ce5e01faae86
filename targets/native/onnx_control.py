"""Native rules for ONNX control flow: If, Loop and Scan as nested sub-programs.

Each body (If's two branches, the body of Loop or Scan) is imported as a module of its own
(`compiler/subgraphs.py`: formal inputs with static types, the enclosing graph's known
values folded in, its run-time ones as further arguments) and lowered by a `Lowering` of
its own into a `Body`: a `Program` with its own arena, planned here, whose weights go into
the parent's blob. The parent's step (`onnx_if`, `onnx_loop`, `onnx_scan`) runs the body
with pointers to its buffers (the printer: targets/c/onnx_control.py):

- If: the branch the condition picks writes the node's outputs.
- Loop: the loop-carried values live in state buffers (initialized from the node's
  initial values); each iteration the body reads them and writes the node's outputs, which
  are copied back; iteration i writes slice i of every scan output. The trip count and the
  condition are read at run time (an omitted one does not bound the loop, as the
  specification says); a loop that would run more iterations than its scan outputs'
  static leading dimension holds, or fewer, fails the run.
- Scan: the same over the scan inputs' slices; `scan_input_axes` / `scan_output_axes`
  other than 0 become strided copies before / after the step, and reverse directions
  index the slices from the end.

A body whose loop-carried value changes shape from one iteration to the next (a growing
Concat), or whose outputs' shapes do not match the node's, is refused with one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.ir_attrs import origin_of
from q35c.compiler.subgraphs import BodyRequest, BodyValue, import_body
from q35c.targets.native.lower import Lowering, _dtype, _shape, strides
from q35c.targets.native.memory import plan_arena
from q35c.targets.native.onnx_node import lowers
from q35c.targets.native.onnx_tensor import (
    _error,
    _ins,
    _results,
    _step,
    attributes,
    constant,
    operands,
)
from q35c.targets.native.program import Buffer, Program


@dataclass(eq=False)
class Body:
    """A body lowered to a program: `program.inputs` are its formal inputs, then the
    enclosing graph's run-time values it reads (the last `outer` inputs of the step)."""

    program: Program
    outer: int

    @property
    def steps(self):
        return self.program.steps


class _BodyLowering(Lowering):
    """A Lowering of a body: its weights go into the parent's blob (its own names kept
    apart: two bodies may have initializers of the same name)."""

    def __init__(self, parent: Lowering, module, store):
        super().__init__(module, store, None, parent.name, parent.target)
        self.blob = parent.blob


def _where(op) -> str:
    origin = origin_of(op)
    return f'q35nn.onnx_node "{op.op_type.data}"' + (f" ({origin})" if origin else "")


def _outer(lowering, op) -> tuple[list[BodyValue], list[Buffer]]:
    """The enclosing graph's values the bodies read: known ones with their data, run-time
    ones as (value, buffer) in operand order."""
    names = op.outer()
    values = list(op.inputs)[len(op.inputs) - len(names):]
    known, runtime, buffers = [], [], []
    for name, value in zip(names, values):
        data = constant(lowering, value)
        if data is not None:
            known.append(BodyValue(name, _dtype(value), _shape(value), data))
        else:
            runtime.append(BodyValue(name, _dtype(value), _shape(value)))
            buffers.append(lowering.buffer_of(value, op))
    return known + runtime, buffers


def _body(lowering, op, key: str, formal: list[BodyValue], outer: list[BodyValue]) -> Body:
    """Import and lower body `key` of `op`, its arena planned."""
    graph = attributes(op)[key]
    where = f"{_where(op)} body '{key}'"
    request = BodyRequest(where, graph, tuple(formal), tuple(outer),
                          (("", op.opset.value.data),), 0)
    module, store = import_body(request)
    try:
        program = _BodyLowering(lowering, module, store).run()
    except Q35cError as err:
        message = str(err).removeprefix(f"{lowering.target} target: ")
        raise _error(lowering, op, f"body '{key}': {message}") from None
    plan_arena(program)
    return Body(program, sum(1 for v in outer if v.value is None))


def _scratch(lowering, bodies: list[Body]) -> Buffer:
    size = max(b.program.arena_bytes for b in bodies)
    return lowering.new("arena", np.dtype(np.uint8), (size,), "body")


def _check_outputs(lowering, op, key: str, outputs: list[Buffer], want: list[tuple],
                   what: list[str]):
    """Body `key`'s `outputs` must have the (dtype, shape)s of `want`."""
    got = [(b.dtype, b.shape) for b in outputs]
    if len(got) != len(want):
        raise _error(lowering, op, f"body '{key}' has {len(got)} outputs, the node needs "
                                   f"{len(want)}")
    for (dtype, shape), (wd, ws), name in zip(got, want, what):
        if np.dtype(dtype) != np.dtype(wd) or tuple(shape) != tuple(ws):
            raise _error(lowering, op, f"body '{key}': {name} is {np.dtype(dtype)}{list(shape)}, "
                                       f"the node needs {np.dtype(wd)}{list(ws)} (values "
                                       "whose shape changes per iteration or per branch are "
                                       "not supported)")


@lowers("If")
def lower_if(lowering, op) -> None:
    given = operands(op)
    [cond] = _ins(lowering, op, [given[0]])
    outer, outer_bufs = _outer(lowering, op)
    _, out_slots = op.slots()
    outs = _results(lowering, op)
    if len(out_slots) != len(outs) or out_slots != list(range(len(outs))):
        raise _error(lowering, op, "omitted outputs are not supported")
    bodies = []
    for key in ("then_branch", "else_branch"):
        body = _body(lowering, op, key, [], outer)
        _check_outputs(lowering, op, key, [b for _, b in body.program.outputs],
                       [(b.dtype, b.shape) for b in outs],
                       [f"output {i}" for i in range(len(outs))])
        bodies.append(body)
    scratch = _scratch(lowering, bodies)
    _step(lowering, op, "onnx_if", [*outs, scratch], [cond, *outer_bufs],
          {"bodies": bodies, "where": _where(op)})


def _state(lowering, init: Buffer, hint: str) -> Buffer:
    return lowering.new("arena", init.dtype, init.shape, hint)


@lowers("Loop")
def lower_loop(lowering, op) -> None:
    given = operands(op)
    graph = attributes(op)["body"]
    n_carried = len(graph.input) - 2
    n_scan = len(graph.output) - 1 - n_carried
    if n_carried < 0 or n_scan < 0:
        raise _error(lowering, op, "the body must take the iteration number and the "
                                   "condition, and return the condition")
    if 0 not in given and 1 not in given:
        raise _error(lowering, op, "a Loop with neither a trip count nor a condition never "
                                   "ends")
    trip = _ins(lowering, op, [given[0]])[0] if 0 in given else None
    cond = _ins(lowering, op, [given[1]])[0] if 1 in given else None
    inits = _ins(lowering, op, [given[2 + j] for j in range(n_carried)])
    outer, outer_bufs = _outer(lowering, op)
    results = dict(zip(op.slots()[1], _results(lowering, op)))
    formal = [BodyValue("iter", np.dtype(np.int64), ()),
              BodyValue("cond", np.dtype(np.bool_), ())]
    formal += [BodyValue(f"v{j}", b.dtype, b.shape) for j, b in enumerate(inits)]
    body = _body(lowering, op, "body", formal, outer)
    outputs = [b for _, b in body.program.outputs]
    if len(outputs) != 1 + n_carried + n_scan:
        raise _error(lowering, op, "the body's outputs do not match its inputs")
    finals = [results.get(j) or _state(lowering, inits[j], "final") for j in range(n_carried)]
    scans = []
    for k in range(n_scan):
        out = results.get(n_carried + k)
        if out is None:  # omitted: one slice of scratch, overwritten every iteration
            out = lowering.new("arena", outputs[1 + n_carried + k].dtype,
                               (1, *outputs[1 + n_carried + k].shape), "scan")
        scans.append(out)
    if outputs[0].dtype != np.bool_ or outputs[0].size != 1:
        raise _error(lowering, op, "the body's condition output must be one bool")
    want = [(b.dtype, b.shape) for b in inits] + [(b.dtype, b.shape[1:]) for b in scans]
    names = [*(f"loop-carried value {j}" for j in range(n_carried)),
             *(f"scan output {k}" for k in range(n_scan))]
    _check_outputs(lowering, op, "body", outputs[1:], want, names)
    limit = {scans[k].shape[0] for k in range(n_scan) if results.get(n_carried + k)}
    if len(limit) > 1:
        raise _error(lowering, op, "the scan outputs have different leading dimensions")
    states = [_state(lowering, b, "state") for b in inits]
    scratch = _scratch(lowering, [body])
    ins = [*([trip] if trip else []), *([cond] if cond else []), *inits, *outer_bufs]
    _step(lowering, op, "onnx_loop", [*finals, *scans, *states, scratch], ins, {
        "bodies": [body], "where": _where(op), "trip": trip is not None,
        "cond": cond is not None, "carried": n_carried, "scans": n_scan,
        "limit": limit.pop() if limit else None,
        "scan_fixed": [results.get(n_carried + k) is None for k in range(n_scan)]})


def _moved_front(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    return (shape[axis], *shape[:axis], *shape[axis + 1:])


@lowers("Scan")
def lower_scan(lowering, op) -> None:
    if op.opset.value.data < 9:
        raise _error(lowering, op, "Scan before opset 9 (batched, with sequence_lens) is "
                                   "not supported")
    attrs = attributes(op)
    given = operands(op)
    graph = attrs["body"]
    m = int(attrs["num_scan_inputs"])
    count = len(given)
    n_state = count - m
    n_scan = len(graph.output) - n_state
    if m < 1 or n_state < 0 or n_scan < 0 or len(graph.input) != count:
        raise _error(lowering, op, "the body's inputs and outputs do not match the node's")
    ins = _ins(lowering, op, [given[i] for i in range(count)])
    inits, xs = ins[:n_state], ins[n_state:]

    def axes(name: str, n: int, ranks: list[int]) -> list[int]:
        values = list(attrs.get(name) or [0] * n) + [0] * n
        out = []
        for a, r in zip(values[:n], ranks):
            a = int(a) + (r if int(a) < 0 else 0)
            if not 0 <= a < max(r, 1):
                raise _error(lowering, op, f"{name} {int(a)} is out of range")
            out.append(a)
        return out

    in_axes = axes("scan_input_axes", m, [len(x.shape) for x in xs])
    in_dirs = [int(d) for d in (list(attrs.get("scan_input_directions") or []) + [0] * m)[:m]]
    lengths = {x.shape[a] for x, a in zip(xs, in_axes)}
    if len(lengths) != 1:
        raise _error(lowering, op, "the scan inputs have different lengths along their axes")
    steps = lengths.pop()
    fronts = []
    for x, a in zip(xs, in_axes):
        if a == 0:
            fronts.append(x)
            continue
        moved = lowering.new("arena", x.dtype, _moved_front(x.shape, a), "scan_in")
        st = strides(x.shape)
        lowering.strided_copy(op, moved, x, moved.shape, 0, strides(moved.shape), 0,
                              [st[a], *st[:a], *st[a + 1:]])
        fronts.append(moved)
    outer, outer_bufs = _outer(lowering, op)
    formal = [BodyValue(f"s{j}", b.dtype, b.shape) for j, b in enumerate(inits)]
    formal += [BodyValue(f"x{j}", b.dtype, b.shape[1:]) for j, b in enumerate(fronts)]
    body = _body(lowering, op, "body", formal, outer)
    outputs = [b for _, b in body.program.outputs]
    if len(outputs) != n_state + n_scan:
        raise _error(lowering, op, "the body's outputs do not match the node's")
    results = dict(zip(op.slots()[1], _results(lowering, op)))
    out_axes = axes("scan_output_axes", n_scan,
                    [len(b.shape) + 1 for b in outputs[n_state:]])
    out_dirs = [int(d) for d in
                (list(attrs.get("scan_output_directions") or []) + [0] * n_scan)[:n_scan]]
    finals = [results.get(j) or _state(lowering, inits[j], "final") for j in range(n_state)]
    stacked, after = [], []
    for k in range(n_scan):
        piece = outputs[n_state + k]
        out = results.get(n_state + k)
        shape = (steps, *piece.shape)
        if out is not None and out_axes[k] == 0:
            stacked.append(out)
            continue
        buf = lowering.new("arena", piece.dtype, shape, "scan_out")
        stacked.append(buf)
        if out is not None:
            after.append((buf, out, out_axes[k]))
    want = [(b.dtype, b.shape) for b in inits] + [(b.dtype, b.shape[1:]) for b in stacked]
    names = [*(f"state {j}" for j in range(n_state)), *(f"scan output {k}" for k in range(n_scan))]
    _check_outputs(lowering, op, "body", outputs, want, names)
    for buf, out, axis in after:
        want_shape = (*buf.shape[1:axis + 1], steps, *buf.shape[axis + 1:])
        if tuple(out.shape) != want_shape:
            raise _error(lowering, op, f"a scan output is {list(out.shape)}, the body "
                                       f"gives {list(want_shape)}")
    states = [_state(lowering, b, "state") for b in inits]
    scratch = _scratch(lowering, [body])
    _step(lowering, op, "onnx_scan", [*finals, *stacked, *states, scratch],
          [*inits, *fronts, *outer_bufs], {
              "bodies": [body], "where": _where(op), "states": n_state, "scans": n_scan,
              "inputs": m, "steps": steps, "in_dirs": in_dirs, "out_dirs": out_dirs})
    for buf, out, axis in after:
        sst = strides(buf.shape)
        src = [sst[d + 1] if d < axis else sst[0] if d == axis else sst[d]
               for d in range(len(out.shape))]
        lowering.strided_copy(op, out, buf, out.shape, 0, strides(out.shape), 0, src)
