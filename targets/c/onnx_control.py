"""C for ONNX control flow (targets/native/onnx_control.py): If, Loop and Scan.

A body is printed inline, inside the parent's step, as a block that first binds its inputs
and outputs to local pointers (the parent's buffers, a slice of a scan input or output, the
loop counter and condition) and then shadows the arena pointer `A` with the body's own
arena (a scratch buffer of the parent's): the body's steps are printed by a `BodyPrinter`,
the C printer with those locals as its inputs and outputs, so every kernel a body uses is
the one the top level would use. Nested control flow nests blocks; the locals carry the
depth in their names. A failing check returns from `<m>_run` with a message, as every
kernel's does.
"""

from __future__ import annotations

from q35c.compiler.codegen_names import c_comment, c_string
from q35c.targets.c.kernels import renders
from q35c.targets.c.printer import CPrinter, ctype


class BodyPrinter(CPrinter):
    """Prints a body's steps: its inputs and outputs are the locals `idents` names."""

    def __init__(self, parent: CPrinter, program, idents: dict[int, str], depth: int):
        self.p = program
        self.prefix = parent.prefix
        self.io_idents = idents
        self.blob = parent.blob
        self.depth = depth


def _depth(printer) -> int:
    return getattr(printer, "depth", 0) + 1


def body_block(printer, body, scratch, feeds: list[str], sinks: list[str]) -> str:
    """The block running `body` (a native `Body`) with its inputs at the pointers `feeds`
    and its outputs at `sinks` (C expressions in the enclosing scope)."""
    d = _depth(printer)
    program = body.program
    lines = ["{", f"    uint8_t *q35_arena{d} = {printer.ptr(scratch)};"]
    idents: dict[int, str] = {}
    names = []
    for i, ((_, buf), feed) in enumerate(zip(program.inputs, feeds, strict=True)):
        name = f"q35_in{d}_{i}"
        lines.append(f"    const {ctype(buf)} *{name} = (const {ctype(buf)} *)({feed});")
        idents[id(buf)] = name
        names.append(name)
    for i, ((_, buf), sink) in enumerate(zip(program.outputs, sinks, strict=True)):
        name = f"q35_out{d}_{i}"
        lines.append(f"    {ctype(buf)} *{name} = ({ctype(buf)} *)({sink});")
        idents[id(buf)] = name
        names.append(name)
    lines += ["    {", f"        uint8_t *A = q35_arena{d};", "        (void)A;"]
    lines += [f"        (void){name};" for name in names]
    inner = BodyPrinter(printer, program, idents, d)
    for index, step in enumerate(program.steps):
        lines.append(f"        {{ /* {index}: {c_comment(step.origin)} -> {step.kernel} */")
        lines.append("            " + inner.render(step).replace("\n", "\n            "))
        lines.append("        }")
    lines += ["    }", "}"]
    return "\n".join(lines)


def _fail(printer, step, why: str) -> str:
    return f"return {printer.prefix}_fail({c_string(step.params['where'] + ': ' + why)});"


def _copy(printer, dst, src) -> list[str]:
    if dst.nbytes == 0:
        return []
    return [f"memcpy({printer.ptr(dst)}, {printer.ptr(src, True)}, {dst.nbytes});"]


@renders("onnx_if")
def render_if(printer, step) -> str:
    then_body, else_body = step.params["bodies"]
    cond, *outer = step.ins
    *outs, scratch = step.outs
    sinks = [printer.ptr(b) for b in outs]
    feeds = [printer.ptr(b, True) for b in outer]
    blocks = [body_block(printer, body, scratch, feeds[len(feeds) - body.outer:], sinks)
              for body in (then_body, else_body)]
    return (f"if ({printer.ptr(cond, True)}[0])\n" + blocks[0] + "\nelse\n" + blocks[1])


@renders("onnx_loop")
def render_loop(printer, step) -> str:
    p = step.params
    [body] = p["bodies"]
    d = _depth(printer)
    ins = list(step.ins)
    trip = ins.pop(0) if p["trip"] else None
    cond = ins.pop(0) if p["cond"] else None
    n, k = p["carried"], p["scans"]
    inits, outer = ins[:n], ins[n:]
    finals, scans = step.outs[:n], step.outs[n:n + k]
    states, scratch = step.outs[n + k:n + k + n], step.outs[-1]
    it, m, c, co = f"q35_it{d}", f"q35_m{d}", f"q35_c{d}", f"q35_co{d}"
    lines = [f"int64_t {it} = 0, {m} = "
             + (f"{printer.ptr(trip, True)}[0];" if trip else "INT64_MAX;"),
             f"uint8_t {c} = " + (f"{printer.ptr(cond, True)}[0] != 0" if cond else "1")
             + f", {co} = 1;"]
    for state, final, init in zip(states, finals, inits):
        lines += _copy(printer, state, init) + _copy(printer, final, init)
    feeds = [f"&{it}", f"&{c}", *(printer.ptr(b, True) for b in states),
             *(printer.ptr(b, True) for b in outer)]
    sinks = [f"&{co}", *(printer.ptr(b) for b in finals)]
    for buf, fixed in zip(scans, p["scan_fixed"]):
        size = buf.size // buf.shape[0] if buf.shape[0] else 0
        sinks.append(printer.ptr(buf) if fixed else f"{printer.ptr(buf)} + {it} * {size}")
    limit = p["limit"]
    lines.append(f"for (; {it} < {m} && {c}; {it}++) {{")
    if limit is not None:
        lines.append(f"    if ({it} >= {limit})\n        "
                     + _fail(printer, step, f"the loop runs more than the {limit} iterations "
                                            "its scan outputs hold"))
    block = body_block(printer, body, scratch, feeds, sinks)
    lines.append("    " + block.replace("\n", "\n    "))
    if cond is not None:
        lines.append(f"    {c} = {co} != 0;")
    for state, final in zip(states, finals):
        lines += ["    " + line for line in _copy(printer, state, final)]
    lines.append("}")
    lines.append(f"(void){co};")
    if limit is not None:
        lines.append(f"if ({it} != {limit})\n    "
                     + _fail(printer, step, f"the loop ran fewer than the {limit} iterations "
                                            "its scan outputs hold"))
    return "\n".join(lines)


@renders("onnx_scan")
def render_scan(printer, step) -> str:
    p = step.params
    [body] = p["bodies"]
    d = _depth(printer)
    n, k, m, steps = p["states"], p["scans"], p["inputs"], p["steps"]
    inits, xs, outer = step.ins[:n], step.ins[n:n + m], step.ins[n + m:]
    finals, stacked = step.outs[:n], step.outs[n:n + k]
    states, scratch = step.outs[n + k:n + k + n], step.outs[-1]
    it = f"q35_it{d}"
    lines = [f"int64_t {it};"]
    for state, final, init in zip(states, finals, inits):
        lines += _copy(printer, state, init) + _copy(printer, final, init)

    def at(buf, reverse: int) -> str:
        size = buf.size // steps if steps else 0
        index = f"({steps - 1} - {it})" if reverse else it
        return f"{printer.ptr(buf)} + {index} * {size}"

    feeds = [printer.ptr(b, True) for b in states]
    feeds += [at(x, r) for x, r in zip(xs, p["in_dirs"])]
    feeds += [printer.ptr(b, True) for b in outer]
    sinks = [printer.ptr(b) for b in finals] + [at(b, r) for b, r in zip(stacked, p["out_dirs"])]
    lines.append(f"for ({it} = 0; {it} < {steps}; {it}++) {{")
    block = body_block(printer, body, scratch, feeds, sinks)
    lines.append("    " + block.replace("\n", "\n    "))
    for state, final in zip(states, finals):
        lines += ["    " + line for line in _copy(printer, state, final)]
    lines.append("}")
    return "\n".join(lines)
