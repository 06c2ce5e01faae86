"""The tile simulator: static checks of a CSL project (its xDSL IR), then an event-driven
run of that IR on a model of the fabric.

Static checks (`check`), each failure one line naming the PE, color or task:
per-PE memory (arrays + code estimate + stack + memcpy reserve) <= the PE's memory;
colors routable and not reserved; one route per (PE, color, switch position); routes on
the grid, acyclic, no PE both injecting and forwarding on one color; each task ID bound
once and every activated task bound; on every color, the wavelets routed to each PE equal
the wavelets its program consumes.

Execution (`Simulation`): every PE runs its program (the csl/arith/scf/memref ops the
emitter builds) on numpy arrays; DSD operations compute exactly as the numeric mode
(`q35c.semantics.matmul_q3p5_f16`) says. Fabric DSD operations move one wavelet per
step through FIFOs per (PE, color, input direction) and per (PE, color) input queue, all
bounded (`link_buffer_wavelets`): a full FIFO stalls its producer. Which runnable PE or
router moves next is drawn from a seeded RNG, so every seed is a different interleaving
across colors; if nothing can move before every PE has finished, the run stops with a
deadlock report naming the blocked PEs and colors. Cycles: each PE has a clock advanced
by the machine model's costs; a wavelet leaves a router no earlier than the link is free
and arrives `hop_cycles` later.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects import arith, csl, memref, scf
from xdsl.dialects.builtin import Float16Type, Float32Type, ModuleOp
from xdsl.ir import Operation, SSAValue

from q35c.compiler.diagnostics import Q35cError
from q35c.targets.cerebras.machine import Machine
from q35c.targets.cerebras.ops import Copy32Op, SetColorConfigOp

STEP = {"EAST": (1, 0), "WEST": (-1, 0), "NORTH": (0, -1), "SOUTH": (0, 1)}
OPPOSITE = {"EAST": "WEST", "WEST": "EAST", "NORTH": "SOUTH", "SOUTH": "NORTH"}
_DTYPES = {"f16": np.float16, "f32": np.float32, "u16": np.uint16, "i16": np.int16}


class SimulationError(Q35cError):
    """A program the checker or the simulator rejects (one line, naming PE/color/task)."""


def _dtype(elem) -> np.dtype:
    if isinstance(elem, Float16Type):
        return np.dtype(np.float16)
    if isinstance(elem, Float32Type):
        return np.dtype(np.float32)
    return np.dtype(np.uint16 if elem.signedness.data.value == "unsigned" else np.int16)


# -- the project's structure ------------------------------------------------------------


@dataclass
class Layout:
    """What the layout module says: the rectangle, each PE's program file, the routes."""

    width: int
    height: int
    tiles: dict[tuple[int, int], str]
    routes: dict[tuple[int, int, int], tuple[tuple[str, ...], tuple[str, ...]]]
    """(x, y, color) -> (rx, tx) at switch position 0 (the only one q35c uses)."""
    traffic: dict[int, dict[str, int]] = field(default_factory=dict)
    """color -> senders, wavelets sent, wavelet link crossings (filled by `check`)."""


def _layout_values(op: Operation, env: dict[SSAValue, object]) -> None:
    if isinstance(op, arith.ConstantOp):
        env[op.result] = op.value.value.data


def read_layout(module: ModuleOp) -> Layout:
    """Evaluate the layout module (constants, scf.for over y, the layout ops)."""
    lay = next(m for m in module.body.ops
               if isinstance(m, csl.CslModuleOp) and m.kind.data == csl.ModuleKind.LAYOUT)
    env: dict[SSAValue, object] = {}
    result = Layout(0, 0, {}, {})

    def run(block, scope):
        for op in block.ops:
            _layout_values(op, scope)
            if isinstance(op, csl.LayoutOp):
                run(op.body.block, scope)
            elif isinstance(op, csl.SetRectangleOp):
                result.width, result.height = scope[op.x_dim], scope[op.y_dim]
            elif isinstance(op, scf.ForOp):
                for i in range(scope[op.lb], scope[op.ub], scope[op.step]):
                    inner = dict(scope)
                    inner[op.body.block.args[0]] = i
                    run(op.body.block, inner)
            elif isinstance(op, csl.SetTileCodeOp):
                result.tiles[(scope[op.x_coord], scope[op.y_coord])] = op.file.data
            elif isinstance(op, SetColorConfigOp):
                key = (scope[op.x_coord], scope[op.y_coord], op.color.data)
                if key in result.routes:
                    raise SimulationError(
                        f"PE ({key[0]},{key[1]}) color {key[2]}: a second route at switch "
                        "position 0 (one route per PE, color and position)")
                result.routes[key] = (tuple(d.data for d in op.rx),
                                      tuple(d.data for d in op.tx))

    run(lay.body.block, env)
    return result


def programs(module: ModuleOp) -> dict[str, csl.CslModuleOp]:
    """File name -> program module."""
    return {f"{m.sym_name.data}.csl": m for m in module.body.ops
            if isinstance(m, csl.CslModuleOp) and m.kind.data == csl.ModuleKind.PROGRAM}


def _fabric_ops(prog: csl.CslModuleOp) -> list[tuple[str, int, int, str]]:
    """(kind, color, extent, where) of every fabric DSD a DSD operation uses; a fabric
    operation inside a loop is refused (its count would depend on the trip count)."""
    out = []
    for op in prog.walk():
        if not isinstance(op, csl.BuiltinDsdOp):
            continue
        for v in op.ops:
            owner = v.owner
            if isinstance(owner, csl.GetFabDsdOp):
                parent = op.parent_op()
                if isinstance(parent, scf.ForOp):
                    raise SimulationError(f"{prog.sym_name.data}: a fabric DSD operation "
                                          "inside a loop (not supported by the checker)")
                out.append((owner.result.type.data.value, owner.fabric_color.value.data,
                            owner.sizes[0].owner.value.value.data,
                            _where(op)))
    return out


def _access(op: csl.GetMemDsdOp) -> tuple[int, int]:
    """(offset, stride) of a one-dimensional `tensor_access` |i| -> buf[stride * i +
    offset]."""
    amap = op.tensor_access.data
    if amap.num_dims != 1 or len(amap.results) != 1:
        raise SimulationError("a DSD's tensor_access must map one index to one element")
    offset, = amap.eval([0], [])
    stride = amap.eval([1], [])[0] - offset
    if stride < 1:
        raise SimulationError(f"a DSD's tensor_access stride {stride} (must be positive)")
    return offset, stride


def _where(op: Operation) -> str:
    """'task NAME' / 'fn NAME' of the op's enclosing function or task."""
    while op is not None and not isinstance(op, (csl.FuncOp, csl.TaskOp)):
        op = op.parent_op()
    if op is None:
        return "module scope"
    return f"{'task' if isinstance(op, csl.TaskOp) else 'fn'} {op.sym_name.data}"


def memory_use(prog: csl.CslModuleOp, machine: Machine) -> dict[str, int]:
    """Bytes by kind: arrays, code (statements x code_bytes_per_op), stack, memcpy."""
    arrays = sum(math.prod(op.result.type.get_shape()) * _dtype(
        op.result.type.get_element_type()).itemsize
        for op in prog.walk() if isinstance(op, csl.ZerosOp))
    statements = sum(1 for op in prog.walk()
                     if not isinstance(op, (arith.ConstantOp, csl.ZerosOp, csl.CslModuleOp)))
    return {"arrays": arrays, "code": statements * machine.code_bytes_per_op,
            "stack": machine.stack_bytes, "memcpy": machine.memcpy_reserve_bytes}


def check(module: ModuleOp, machine: Machine) -> Layout:
    """The static checks (module docstring); the layout when all pass."""
    layout = read_layout(module)
    progs = programs(module)
    if layout.width > machine.width or layout.height > machine.height:
        raise SimulationError(f"layout: rectangle {layout.width}x{layout.height} exceeds the "
                              f"{machine.name} fabric {machine.width}x{machine.height}")
    for name, prog in progs.items():
        use = memory_use(prog, machine)
        total = sum(use.values())
        if total > machine.pe_memory_bytes:
            pe = next(p for p, f in sorted(layout.tiles.items()) if f == name)
            parts = ", ".join(f"{k} {v}" for k, v in use.items())
            raise SimulationError(f"PE ({pe[0]},{pe[1]}) ({name}): memory {total} bytes > "
                                  f"{machine.pe_memory_bytes} ({parts})")
        ids: dict[int, str] = {}
        for op in prog.walk():
            if isinstance(op, csl.TaskOp) and op.id is not None:
                tid = op.id.value.data
                if tid in ids:
                    raise SimulationError(f"{name}: task ID {tid} bound twice (task "
                                          f"{ids[tid]} and task {op.sym_name.data})")
                ids[tid] = op.sym_name.data
        for op in prog.walk():
            if isinstance(op, csl.ActivateOp) and op.id.value.data not in ids:
                raise SimulationError(f"{name} ({_where(op)}): activates task ID "
                                      f"{op.id.value.data}, which no task is bound to")
    for pe, name in layout.tiles.items():
        if name not in progs:
            raise SimulationError(f"PE ({pe[0]},{pe[1]}): tile code {name} is not in the "
                                  "project")
    for (x, y, color), (rx, tx) in layout.routes.items():
        if (why := machine.color_problem(color)):
            raise SimulationError(f"PE ({x},{y}) route: {why}")
        if "RAMP" in rx and len(rx) > 1:
            raise SimulationError(f"PE ({x},{y}) color {color}: the PE both injects (RAMP) "
                                  f"and forwards {', '.join(d for d in rx if d != 'RAMP')}")
        for d in tx:
            if d in STEP:
                nx, ny = x + STEP[d][0], y + STEP[d][1]
                if not (0 <= nx < layout.width and 0 <= ny < layout.height):
                    raise SimulationError(f"PE ({x},{y}) color {color}: route leaves the "
                                          f"rectangle to the {d}")
    produced: dict[tuple[int, int, int], int] = {}
    consumed: dict[tuple[int, int, int], int] = {}
    for (x, y), name in layout.tiles.items():
        for kind, color, extent, where in _fabric_ops(progs[name]):
            if (why := machine.color_problem(color)):
                raise SimulationError(f"PE ({x},{y}) ({name}, {where}): {why}")
            book = produced if kind == "fabout_dsd" else consumed
            book[(x, y, color)] = book.get((x, y, color), 0) + extent
    received: dict[tuple[int, int, int], int] = {}
    layout.traffic = {}
    for (x, y, color), count in produced.items():
        dests, hops = _trace(layout, x, y, color)
        for dest in dests:
            received[dest] = received.get(dest, 0) + count
        t = layout.traffic.setdefault(color, {"senders": 0, "wavelets": 0, "link_wavelets": 0})
        t["senders"] += 1
        t["wavelets"] += count
        t["link_wavelets"] += count * hops
    for key in sorted(set(received) | set(consumed)):
        got, used = received.get(key, 0), consumed.get(key, 0)
        if got != used:
            raise SimulationError(f"PE ({key[0]},{key[1]}) color {key[2]}: {got} wavelets "
                                  f"arrive, its program consumes {used}")
    return layout


def _trace(layout: Layout, x: int, y: int, color: int
           ) -> tuple[list[tuple[int, int, int]], int]:
    """The PEs whose RAMP a wavelet injected at (x, y) on `color` reaches, and the links
    it crosses."""
    route = layout.routes.get((x, y, color))
    if route is None or "RAMP" not in route[0]:
        raise SimulationError(f"PE ({x},{y}) color {color}: the program sends, but the "
                              "route does not take the color from RAMP")
    out, seen, hops = [], set(), 0
    stack = [(x, y, "RAMP")]
    while stack:
        px, py, came = stack.pop()
        if (px, py) in seen:
            raise SimulationError(f"color {color}: the routes form a cycle through PE "
                                  f"({px},{py})")
        seen.add((px, py))
        route = layout.routes.get((px, py, color))
        if route is None:
            raise SimulationError(f"PE ({px},{py}) color {color}: wavelets arrive from the "
                                  f"{came} but the PE has no route for the color")
        if came not in route[0]:
            raise SimulationError(f"PE ({px},{py}) color {color}: wavelets arrive from the "
                                  f"{came}, the route takes only {', '.join(route[0])}")
        for d in route[1]:
            if d == "RAMP":
                out.append((px, py, color))
            else:
                hops += 1
                stack.append((px + STEP[d][0], py + STEP[d][1], OPPOSITE[d]))
    return out, hops


# -- execution ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MemDsd:
    buf: str
    offset: int
    length: int
    stride: int = 1
    """Elements of `buf` between consecutive elements of the DSD (`tensor_access`
    |i|{length} -> buf[stride * i + offset])."""


@dataclass(frozen=True)
class FabDsd:
    kind: str
    color: int
    extent: int


@dataclass
class Wavelet:
    value: np.float32
    time: int


@dataclass
class PE:
    """One PE's state while the program runs."""

    x: int
    y: int
    program: csl.CslModuleOp
    memory: dict[str, np.ndarray]
    clock: int = 0
    spent: dict[str, int] = field(default_factory=dict)
    """Cycles by kind of work: scalar, dsd, fabric (including waits), task."""

    def charge(self, kind: str, cycles: int) -> None:
        self.clock += cycles
        self.spent[kind] = self.spent.get(kind, 0) + cycles
    wait: tuple[str, tuple] | None = None
    done: bool = False
    tasks: deque = field(default_factory=deque)


class Simulation:
    """One run of a checked project under one interleaving seed."""

    def __init__(self, module: ModuleOp, layout: Layout, machine: Machine, seed: int = 0):
        self.layout, self.machine = layout, machine
        self.rng = random.Random(seed)
        self.progs = programs(module)
        self.pes: dict[tuple[int, int], PE] = {}
        for (x, y), name in sorted(layout.tiles.items()):
            prog = self.progs[name]
            mem = {op.result.name_hint: np.zeros(
                op.result.type.get_shape(), _dtype(op.result.type.get_element_type()))
                for op in prog.body.block.ops if isinstance(op, csl.ZerosOp)}
            self.pes[(x, y)] = PE(x, y, prog, mem)
        self.queues: dict[tuple, deque] = {}
        """(x, y, color, from) -> FIFO at the router input; (x, y, color, 'PE') -> the
        PE's input queue."""
        self.link_free: dict[tuple, int] = {}
        self.load_cycles = 0
        """Cycles of a load-time launch before `restart` (a decoded plan's `decode`)."""

    def load(self, x: int, y: int, name: str, values: np.ndarray) -> None:
        """memcpy_h2d: copy `values` into array `name` of PE (x, y)."""
        mem = self.pes[(x, y)].memory
        if name not in mem or mem[name].size < values.size:
            raise SimulationError(f"PE ({x},{y}): no array '{name}' of {values.size} elements")
        mem[name][:values.size] = values.astype(mem[name].dtype)

    def restart(self) -> None:
        """Ready every PE for the next host launch: memory stays, clocks restart at 0."""
        for pe in self.pes.values():
            pe.clock, pe.spent, pe.wait, pe.done = 0, {}, None, False
        self.link_free.clear()

    def queue(self, key: tuple) -> deque:
        return self.queues.setdefault(key, deque())

    # -- the scheduler -----------------------------------------------------------------

    def run(self, entry: str = "compute") -> int:
        """Launch `entry` on every PE, run to the end; the cycle count (the latest PE).

        A PE whose `entry` only hands the command stream back (another stage's launch) is
        finished at once, charged its one call. The others and the routers move one at a
        time, drawn by the seeded RNG from those that can move: the set is kept up to date
        as queues change (a PE waits on one queue; a router's input queue can move when it
        holds a wavelet and every queue it feeds has room)."""
        gens = {}
        for pos, pe in self.pes.items():
            if self._noop(pe.program, entry):
                pe.charge("scalar", self.machine.scalar_op)  # unblock_cmd_stream
                pe.done, pe.wait = True, None
            else:
                gens[pos] = self._launch(pe, entry)
        self._movable: list[tuple] = []
        self._slot: dict[tuple, int] = {}
        self._waiter: dict[tuple, tuple[int, int]] = {}
        self._dirty: set[tuple] = set()
        for pos, gen in gens.items():
            self._step_pe(pos, gen)
        while self._movable:
            kind, key = self._movable[self.rng.randrange(len(self._movable))]
            if kind == "pe":
                self._step_pe(key, gens[key])
            else:
                self._forward(key)
                self._update(("router", key))
            self._settle()
        blocked = [pe for pe in self.pes.values() if not pe.done]
        if blocked:
            waits = "; ".join(f"PE ({pe.x},{pe.y}) waits to {pe.wait[0]} color {pe.wait[1][2]}"
                              for pe in blocked[:6])
            more = f" (and {len(blocked) - 6} more PEs)" if len(blocked) > 6 else ""
            raise SimulationError(f"deadlock: {waits}{more}")
        for key, q in sorted(self.queues.items(), key=lambda kv: str(kv[0])):
            if q:
                raise SimulationError(f"PE ({key[0]},{key[1]}) color {key[2]}: {len(q)} "
                                      "wavelet(s) left undelivered after every PE finished")
        self.cycles = max(pe.clock for pe in self.pes.values())
        return self.cycles

    def _noop(self, prog: csl.CslModuleOp, entry: str) -> bool:
        """Whether `entry` of `prog` is only `unblock_cmd_stream()` and a return."""
        cache = self.__dict__.setdefault("_noops", {})
        key = (prog.sym_name.data, entry)
        if key not in cache:
            fn = next((op for op in prog.body.block.ops
                       if isinstance(op, csl.FuncOp) and op.sym_name.data == entry), None)
            ops = list(fn.body.block.ops) if fn is not None else []
            cache[key] = len(ops) == 2 and isinstance(ops[0], csl.MemberCallOp) and \
                ops[0].field.data == "unblock_cmd_stream" and isinstance(ops[1], csl.ReturnOp)
        return cache[key]

    def _step_pe(self, pos: tuple[int, int], gen: Iterator) -> None:
        """Run PE `pos` to its next wait (or its end), then update what can move."""
        pe = self.pes[pos]
        if pe.wait is not None:
            self._waiter.pop(pe.wait[1], None)
        self._advance(pe, gen)
        if pe.wait is not None:
            self._waiter[pe.wait[1]] = pos
        self._update(("pe", pos))
        self._settle()

    def _touch(self, key: tuple) -> None:
        """Queue `key` changed: what waits on it or feeds it is looked at again."""
        self._dirty.add(key)

    def _settle(self) -> None:
        while self._dirty:
            key = self._dirty.pop()
            if (pos := self._waiter.get(key)) is not None:
                self._update(("pe", pos))
            if key[3] != "PE":
                self._update(("router", key))
            for src in self._upstream().get(key, ()):
                self._update(("router", src))

    def _upstream(self) -> dict[tuple, list[tuple]]:
        """Queue key -> the router input queues that feed it (from the routes)."""
        if "_feeds" not in self.__dict__:
            feeds: dict[tuple, list[tuple]] = {}
            for (x, y, color), (rx, _) in self.layout.routes.items():
                for came in rx:
                    src = (x, y, color, came)
                    for dest, _ in self._destinations(src):
                        feeds.setdefault(dest, []).append(src)
            self._feeds = feeds
        return self._feeds

    def _update(self, item: tuple) -> None:
        """Put `item` (("pe", pos) or ("router", key)) in the movable set or take it out."""
        kind, key = item
        if kind == "pe":
            pe = self.pes[key]
            can = not pe.done and self._ready(pe)
        else:
            can = bool(self.queues.get(key)) and self._can_forward(key)
        at = self._slot.get(item)
        if can and at is None:
            self._slot[item] = len(self._movable)
            self._movable.append(item)
        elif not can and at is not None:
            last = self._movable.pop()
            if last != item:
                self._movable[at] = last
                self._slot[last] = at
            del self._slot[item]

    def _ready(self, pe: PE) -> bool:
        kind, key = pe.wait
        q = self.queue(key)
        return bool(q) if kind == "receive" else len(q) < self.machine.link_buffer_wavelets

    def _advance(self, pe: PE, gen: Iterator) -> None:
        try:
            pe.wait = next(gen)
        except StopIteration:
            pe.done, pe.wait = True, None

    def _can_forward(self, key: tuple) -> bool:
        return all(len(self.queue(d)) < self.machine.link_buffer_wavelets
                   for d, _ in self._destinations(key))

    def _destinations(self, key: tuple) -> list[tuple[tuple, str]]:
        x, y, color, came = key
        route = self.layout.routes.get((x, y, color))
        if route is None or came not in route[0]:
            raise SimulationError(f"PE ({x},{y}) color {color}: a wavelet arrives from the "
                                  f"{came} and no route takes it")
        out = []
        for d in route[1]:
            if d == "RAMP":
                out.append(((x, y, color, "PE"), d))
            else:
                out.append(((x + STEP[d][0], y + STEP[d][1], color, OPPOSITE[d]), d))
        return out

    def _forward(self, key: tuple) -> None:
        w = self.queue(key).popleft()
        self._touch(key)
        for dest, d in self._destinations(key):
            link = (key[0], key[1], d)
            leave = max(w.time, self.link_free.get(link, 0))
            self.link_free[link] = leave + 1
            self.queue(dest).append(Wavelet(w.value, leave + self.machine.hop_cycles))
            self._touch(dest)

    # -- one PE's program --------------------------------------------------------------

    def _launch(self, pe: PE, entry: str) -> Iterator:
        env: dict[SSAValue, object] = {}
        fns = {}
        for op in pe.program.body.block.ops:
            if isinstance(op, csl.FuncOp | csl.TaskOp):
                fns[op.sym_name.data] = op
            elif not isinstance(op, (csl.SymbolExportOp,)):
                yield from self._op(pe, op, env, comptime=True)
        tasks = {op.id.value.data: op for op in fns.values()
                 if isinstance(op, csl.TaskOp) and op.id is not None}
        yield from self._block(pe, fns[entry].body.block, env)
        while pe.tasks:
            pe.charge("task", self.machine.task_switch)
            yield from self._block(pe, tasks[pe.tasks.popleft()].body.block, env)

    def _block(self, pe: PE, block, env) -> Iterator:
        for op in block.ops:
            if isinstance(op, (csl.ReturnOp, scf.YieldOp)):
                return
            yield from self._op(pe, op, env)

    def _op(self, pe: PE, op: Operation, env: dict, comptime: bool = False) -> Iterator:
        """Run `op`; `comptime`: a module-scope declaration, which costs no cycles."""
        m = self.machine
        if isinstance(op, arith.ConstantOp):
            v = op.value
            env[op.result] = np.float32(v.value.data) if isinstance(
                v.type, Float32Type) else v.value.data
            return
        if isinstance(op, (csl.ZerosOp,)):
            env[op.result] = op.result.name_hint
            return
        pe.charge("scalar", 0 if comptime else m.scalar_op)
        if isinstance(op, (csl.ParamOp, csl.ImportModuleConstOp, csl.AddressOfOp)):
            env[op.results[0]] = None
        elif isinstance(op, csl.GetMemDsdOp):
            offset, stride = _access(op) if op.tensor_access else (0, 1)
            env[op.result] = MemDsd(env[op.base_addr], offset, env[op.sizes[0]], stride)
        elif isinstance(op, csl.IncrementDsdOffsetOp):
            d = env[op.op]
            env[op.result] = MemDsd(d.buf, d.offset + env[op.offset], d.length, d.stride)
        elif isinstance(op, Copy32Op):  # a 32-bit load and a 32-bit store
            pe.charge("scalar", m.scalar_op)
            src, dst = pe.memory[env[op.src]], pe.memory[env[op.dst]]
            j, i = 2 * env[op.src_index], 2 * env[op.dst_index]
            self._bounds(pe, op, src, j + 1)
            self._bounds(pe, op, dst, i + 1)
            dst[i:i + 2] = src[j:j + 2]
        elif isinstance(op, csl.GetFabDsdOp):
            env[op.result] = FabDsd(op.result.type.data.value, op.fabric_color.value.data,
                                    env[op.sizes[0]])
        elif isinstance(op, (arith.IndexCastOp, csl.SignednessCastOp)):
            env[op.results[0]] = int(env[op.operands[0]])
        elif isinstance(op, (arith.AddiOp, arith.MuliOp, arith.DivSIOp)):
            a, b = env[op.lhs], env[op.rhs]
            r = a + b if isinstance(op, arith.AddiOp) else a * b if isinstance(
                op, arith.MuliOp) else int(a / b)
            if not -2**15 <= r < 2**15:
                raise SimulationError(f"PE ({pe.x},{pe.y}) ({_where(op)}): i16 overflow "
                                      f"in {op.name} ({r})")
            env[op.result] = r
        elif isinstance(op, (arith.AddfOp, arith.SubfOp, arith.MulfOp, arith.DivfOp)):
            a, b = np.float32(env[op.lhs]), np.float32(env[op.rhs])
            with np.errstate(all="ignore"):  # IEEE results (inf, nan) as the PE gives them
                env[op.result] = np.float32(_FLOAT_OPS[type(op)](a, b))
        elif isinstance(op, arith.CmpfOp):
            pred = arith.CMPF_COMPARISON_OPERATIONS[op.predicate.value.data]
            if pred not in _CMPF:
                raise SimulationError(f"PE ({pe.x},{pe.y}) ({_where(op)}): the simulator "
                                      f"does not model arith.cmpf {pred}")
            env[op.result] = bool(_CMPF[pred](np.float32(env[op.lhs]),
                                              np.float32(env[op.rhs])))
        elif isinstance(op, arith.SelectOp):
            env[op.result] = env[op.lhs] if env[op.cond] else env[op.rhs]
        elif isinstance(op, arith.FPToSIOp):
            v = float(env[op.input])
            if not -2**15 <= math.trunc(v) < 2**15:
                raise SimulationError(f"PE ({pe.x},{pe.y}) ({_where(op)}): {v} does not "
                                      "convert to i16")
            env[op.result] = math.trunc(v)  # toward zero
        elif isinstance(op, arith.SIToFPOp):
            env[op.result] = np.float32(env[op.input])
        elif isinstance(op, memref.LoadOp):
            arr, (i,) = pe.memory[env[op.memref]], [env[v] for v in op.indices]
            self._bounds(pe, op, arr, i)
            env[op.res] = arr[i]
        elif isinstance(op, memref.StoreOp):
            arr, (i,) = pe.memory[env[op.memref]], [env[v] for v in op.indices]
            self._bounds(pe, op, arr, i)
            arr[i] = env[op.value]
        elif isinstance(op, scf.ForOp):
            carried = [env[v] for v in op.iter_args]
            block = op.body.block
            for i in range(env[op.lb], env[op.ub], env[op.step]):
                pe.charge("scalar", m.scalar_op)
                env[block.args[0]] = i
                env.update(zip(block.args[1:], carried))
                yield from self._block(pe, block, env)
                carried = [env[v] for v in block.last_op.operands]
            env.update(zip(op.results, carried))
        elif isinstance(op, csl.ActivateOp):
            pe.tasks.append(op.id.value.data)
        elif isinstance(op, csl.MemberCallOp):
            if op.field.data != "unblock_cmd_stream":
                raise SimulationError(f"PE ({pe.x},{pe.y}): unknown call {op.field.data}")
        elif isinstance(op, csl.BuiltinDsdOp):
            yield from self._dsd(pe, op, [env[v] for v in op.ops])
        else:
            raise SimulationError(f"PE ({pe.x},{pe.y}) ({_where(op)}): the simulator does "
                                  f"not model {op.name}")

    @staticmethod
    def _bounds(pe: PE, op: Operation, arr: np.ndarray, i: int) -> None:
        if not 0 <= i < arr.size:
            raise SimulationError(f"PE ({pe.x},{pe.y}) ({_where(op)}): index {i} outside "
                                  f"an array of {arr.size}")

    def _view(self, pe: PE, d: MemDsd) -> np.ndarray:
        arr = pe.memory[d.buf]
        end = d.offset + d.stride * (d.length - 1) + 1
        if d.offset < 0 or end > arr.size:
            raise SimulationError(f"PE ({pe.x},{pe.y}): DSD over {d.buf}[{d.offset}:"
                                  f"{end}:{d.stride}] leaves the array of {arr.size}")
        return arr[d.offset:end:d.stride]

    def _dsd(self, pe: PE, op: csl.BuiltinDsdOp, args: list) -> Iterator:
        name = op.name.removeprefix("csl.")
        dst, *srcs = args
        if any(isinstance(a, FabDsd) for a in args):
            yield from self._fabric(pe, name, dst, srcs)
            return
        n = dst.length
        width = self.machine.simd["i16" if name.endswith("16") else
                                  "f16" if name in ("fmachs", "fs2h", "fh2s") else "f32"]
        pe.charge("dsd", self.machine.dsd_issue + -(-n // width))
        vals = [self._view(pe, s) if isinstance(s, MemDsd) else s for s in srcs]
        out = self._view(pe, dst)
        out[:] = compute(name, vals)

    def _fabric(self, pe: PE, name: str, dst, srcs: list) -> Iterator:
        """A DSD operation with fabric operands, one wavelet at a time."""
        n = dst.extent if isinstance(dst, FabDsd) else dst.length
        pe.charge("fabric", self.machine.dsd_issue)
        for i in range(n):
            row = []
            for s in srcs:
                if isinstance(s, FabDsd):
                    key = (pe.x, pe.y, s.color, "PE")
                    yield ("receive", key)
                    w = self.queue(key).popleft()
                    self._touch(key)
                    pe.charge("fabric", max(0, w.time - pe.clock))
                    row.append(np.float32(w.value))
                elif isinstance(s, MemDsd):
                    row.append(self._view(pe, s)[i:i + 1])
                else:
                    row.append(s)
            value = compute(name, row)
            pe.charge("fabric", 1)
            if isinstance(dst, FabDsd):
                key = (pe.x, pe.y, dst.color, "RAMP")
                yield ("send", key)
                self.queue(key).append(Wavelet(np.float32(value).reshape(-1)[0], pe.clock))
                self._touch(key)
            else:
                self._view(pe, dst)[i:i + 1] = value


_FLOAT_OPS = {arith.AddfOp: np.add, arith.SubfOp: np.subtract, arith.MulfOp: np.multiply,
              arith.DivfOp: np.divide}
_CMPF = {"olt": lambda a, b: a < b, "oge": lambda a, b: a >= b,
         "ogt": lambda a, b: a > b, "ole": lambda a, b: a <= b}


def compute(name: str, vals: list) -> np.ndarray:
    """The numbers of one DSD operation (the numeric mode: one rounding per op; f16 x f16
    products are exact in f32, so @fmachs has one rounding too)."""
    f32 = np.float32
    if name == "fs2h":
        return np.asarray(vals[0], f32).astype(np.float16)
    if name == "fh2s":
        return np.asarray(vals[0], np.float16).astype(f32)
    if name == "fmovs":
        return np.asarray(vals[0], f32)
    if name == "fadds":
        return np.asarray(vals[0], f32) + np.asarray(vals[1], f32)
    if name == "fmaxs":
        return np.maximum(np.asarray(vals[0], f32), np.asarray(vals[1], f32))
    if name == "fnegs":
        return -np.asarray(vals[0], f32)
    if name == "fmuls":
        return np.asarray(vals[0], f32) * np.asarray(vals[1], f32)
    if name == "fmachs":
        return np.asarray(vals[0], f32) + (np.asarray(vals[1], np.float16).astype(f32)
                                           * f32(np.float16(vals[2])))
    u = [np.asarray(v).astype(np.uint16) for v in vals]
    if name == "and16":
        return u[0] & u[1]
    if name == "or16":
        return u[0] | u[1]
    if name in ("sll16", "slr16"):
        shift = int(u[1])
        if not 0 <= shift < 16:
            raise SimulationError(f"@{name}: shift {shift} outside 0..15")
        return (u[0] << np.uint16(shift)) if name == "sll16" else (u[0] >> np.uint16(shift))
    raise SimulationError(f"the simulator does not model @{name}")
