"""Several chips: nodes assigned to chips (a pipeline across layers), operands that live on
another chip copied, intermediate results moved over C2C links.

Each chip has its own `Scheduler` (its own reservation tables and placement); they share
the program, the buffer readiness and the writer tables (buffer names are unique: a copy
on chip c is named `buffer@c`). Nodes are scheduled in op order, each on its chip's
scheduler, and a C2C transfer is scheduled just before the first node that reads its copy.
"""

from __future__ import annotations

from q35c.targets.groq.instructions import Receive, Send
from q35c.targets.groq.lower import Buf, Graph, MacroNode, MatmulNode
from q35c.targets.groq.machine import Machine
from q35c.targets.groq.schedule.placement import weight_vectors
from q35c.targets.groq.schedule.reservations import macro_mem_spans
from q35c.targets.groq.schedule.scheduler import Program, Scheduler


def partition(graph: Graph, m: Machine, chips: int) -> None:
    """Contiguous ranges of nodes (a pipeline across layers), balanced by weight size."""
    sizes = [weight_vectors(n, m) for n in graph.nodes]
    total = max(1, sum(sizes))
    before = 0
    for node, size in zip(graph.nodes, sizes):
        node.chip = min(chips - 1, before * chips // total)
        before += size


def reads_of(node: MacroNode | MatmulNode) -> list[str]:
    return [node.q, node.scale] if isinstance(node, MatmulNode) else list(node.inputs)


def writes_of(node: MacroNode | MatmulNode) -> list[str]:
    return [node.out] if isinstance(node, MatmulNode) else list(node.outputs)


def copy_cross_chip(graph: Graph) -> list[tuple[str, str, int]]:
    """Give every node on chip c a copy of each operand that lives on another chip.
    Inputs and constants are copied in the initial image (the host loads every chip);
    intermediate results travel over C2C: returns (source, copy, destination chip)."""
    owner: dict[str, int] = {}
    for node in graph.nodes:
        for w in writes_of(node):
            owner[w] = node.chip
    transfers: list[tuple[str, str, int]] = []
    copies: dict[tuple[str, int], str] = {}
    for node in graph.nodes:
        renamed = {}
        for r in reads_of(node):
            b = graph.buffers[r]
            home = owner.get(r, 0)
            if b.kind == "virtual" or home == node.chip and b.kind == "temp":
                continue
            if b.kind in ("input", "const") and node.chip == 0:
                continue
            key = (r, node.chip)
            if key not in copies:
                name = f"{r}@{node.chip}"
                c = Buf(name, b.shape, b.dtype, b.layout, b.kind, b.value, label=b.label)
                c.used, c.chip = True, node.chip
                c.order = b.order
                graph.buffers[name] = c
                copies[key] = name
                if b.kind == "temp":
                    transfers.append((r, name, node.chip))
            renamed[r] = copies[key]
        if renamed:
            if isinstance(node, MatmulNode):
                node.q = renamed.get(node.q, node.q)
                node.scale = renamed.get(node.scale, node.scale)
            else:
                node.inputs = [renamed.get(x, x) for x in node.inputs]
    on_first = {r for node in graph.nodes if node.chip == 0 for r in reads_of(node)}
    for name, b in graph.buffers.items():
        if b.kind in ("input", "const") and "@" not in name:
            b.chip = 0
            if b.kind == "const" and name not in on_first and any(
                    r == name for r, _ in copies):
                b.used = False  # a constant sits only on the chips that read it
    return transfers


def schedule_chips(graph: Graph, m: Machine, chips: int,
                   assign: dict[int, int] | None = None) -> Program:
    """`assign`: IR op index -> chip of every node (GroqTarget takes it from the multi-chip
    planner, targets/groq/plan.py); None: `partition` by weight size."""
    if assign is None:
        partition(graph, m, chips)
    else:
        for node in graph.nodes:
            node.chip = assign[node.index]
    transfers = copy_cross_chip(graph)
    # temps live on the chip of the node that writes them
    for node in graph.nodes:
        for w in writes_of(node):
            graph.buffers[w].chip = node.chip
    first = Scheduler(graph, m, 0)
    schedulers = [first] + [Scheduler(graph, m, c, first) for c in range(1, chips)]
    for s in schedulers:
        s.place()
    pending = {copy: (src, dst) for src, copy, dst in transfers}
    for node in graph.nodes:
        for r in reads_of(node):
            if r in pending:
                src, dst = pending.pop(r)
                transfer(schedulers, graph, m, src, r, dst)
        schedulers[node.chip].schedule_node(node)
    program = first.finish()
    program.chips = chips
    return program


def transfer(schedulers: list[Scheduler], graph: Graph, m: Machine, src: str, copy: str,
             dst: int) -> None:
    """C2C Send of buffer `src` on its chip, Receive into `copy` on chip `dst`
    `c2c_latency_cycles` later; each holds one link of its chip (and the MEM queues of the
    buffer's slices) for the vectors' time on the wire."""
    latency = int(m.param("c2c_latency_cycles"))
    bytes_per_cycle = m.c2c_link_bytes_per_s / m.clock_hz
    a, b = graph.buffers[src], graph.buffers[copy]
    sender, receiver = schedulers[a.chip], schedulers[dst]
    duration = max(1, int(-(-a.nvec * m.lanes // bytes_per_cycle)))
    send_link, receive_link = dst % m.c2c_links, a.chip % m.c2c_links
    send_queue, receive_queue = f"C2C.{send_link}", f"C2C.{receive_link}"
    send_spans = macro_mem_spans(m, [a], [], 0, duration)
    receive_spans = macro_mem_spans(m, [], [b], 0, duration)
    # (tables, queue, offset from the send cycle, cycles)
    busy = [(sender.tables, send_queue, 0, duration)] + \
        [(sender.tables, q, x, y - x) for q, x, y in send_spans] + \
        [(receiver.tables, receive_queue, latency, duration)] + \
        [(receiver.tables, q, latency + x, y - x) for q, x, y in receive_spans]
    s = max(sender.ready[src], receiver.reuse_ready(copy) - latency)
    while not all(t.queue_free(q, s + off, n) for t, q, off, n in busy):
        s += 1
    for t, q, off, n in busy:
        t.take_queue(q, s + off, n)
    send = sender.emit(Send, unit="C2C", queue=send_queue, cycle=s, cycles=duration,
                       link=send_link, to=dst, reads=(src,), writes=(),
                       srcs=tuple(sorted(sender.writers.get(src, []))), holds=(), alu_cycles=0,
                       peer=len(sender.program.instructions) + 1)
    recv = receiver.emit(Receive, unit="C2C", queue=receive_queue, cycle=s + latency,
                         cycles=duration, link=receive_link, src=send.id, reads=(),
                         writes=(copy,), srcs=(), holds=(), alu_cycles=0, from_=a.chip)
    assert recv.id == send.peer
    sender.program.deps.append(dict(reads=[src], writes=[copy], cycles=latency + duration))
    sender.touch(src, s + duration)
    receiver.touch(copy, s + latency + duration)
    receiver.writers[copy] = [recv.id]
    receiver.ready[copy] = s + latency + duration
