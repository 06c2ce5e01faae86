"""Rewrites of a lowered native program that drop copies without changing a bit of output.

    Program (lower.py) --fold_program--> Program with fewer copies --memory.py--> ...

Two rewrites, run by the C target before memory planning (targets/c/emit.py):

- **Outputs in place.** A returned value that a step computes into the arena is computed
  into the caller's output buffer instead, and `func.return`'s copy goes. For an LLM's
  decode step that is every `present` key and value (the KV-cache concatenation writes
  straight into its output) and the logits.
- **Operands in place.** A `batch_matmul` operand that is a chain of strided copies
  (transposes, broadcasts, slices), reshapes and at most one multiply by a single float is
  read from the chain's source through per-batch offsets and row and column strides, with
  the multiply applied on the fly (kernel `batch_matmul_strided`). For the attention of
  an exported LLM (the dynamo export's `q k^T` with K transposed, broadcast from the KV
  heads to the query heads and scaled, and `p v` with V broadcast) this reads the KV cache
  where it lies. The copies nobody reads any more are dropped.

Why the bits stay: a copy moves floats unchanged; the multiply is the same float32
multiply of the same two floats; and the kernel sums the same exact products in double in
the same order as `batch_matmul` (runtime/q35rt_bmm.c). What is not done: reading an
operand through more than one multiply (two roundings do not compose into one), through a
concatenation (several writers), or through anything but copies, reshapes and the
multiply. A caller's inputs and outputs must not overlap (model.h says so): an output is
now written while inputs are still being read.

Each rewrite checks that the source it reads is not written between the copy it bypasses
and the step that now reads it, so buffers written more than once (a concatenation's
parts) are safe. The program stays deterministic: the rewrites walk the steps in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from q35c.targets.native.program import Buffer, Program, Step

BYPASSABLE = frozenset({"copy_strided", "elementwise"})
"""Step kinds that folding may bypass and then drop once nothing reads their result."""
FLOAT = np.dtype(np.float32)


@dataclass
class Access:
    """Where each element of an operand lives: flat element `index` (shaped like the
    operand) of buffer `root`, multiplied by element `scale_index` of `scale` if given."""

    root: Buffer
    index: np.ndarray
    scale: Buffer | None = None
    scale_index: int = 0


class Folder:
    def __init__(self, program: Program):
        self.p = program
        self.bypassed: set[int] = set()  # ids of steps some operand now reads around
        self._index()

    def _index(self) -> None:
        """Which steps write each root buffer (positions in the step list)."""
        self.writers: dict[int, list[int]] = {}
        for at, step in enumerate(self.p.steps):
            for buf in step.outs:
                self.writers.setdefault(id(buf.root), []).append(at)

    def written_between(self, root: Buffer, first: int, last: int) -> bool:
        return any(first <= at <= last for at in self.writers.get(id(root), ()))

    # -- outputs in place -----------------------------------------------------------------

    def outputs_in_place(self) -> None:
        claimed: set[int] = set()
        for _, out in self.p.outputs:
            at = next((i for i, s in enumerate(self.p.steps)
                       if s.kernel == "copy" and s.outs[0] is out), None)
            if at is None:
                continue
            root = self.p.steps[at].ins[0].root
            if (root.kind != "arena" or id(root) in claimed or root.nbytes != out.nbytes
                    or self.written_between(root, at, len(self.p.steps))
                    or any(b.root is root and b.dtype != out.dtype for b in self.p.buffers)):
                continue
            claimed.add(id(root))
            root.alias_of, root.kind = out, "output"
            for view in self.p.buffers:
                if view.root is out:
                    view.kind = "output"
            del self.p.steps[at]
            self._index()

    # -- operands in place ----------------------------------------------------------------

    def access(self, buf: Buffer, reader: int) -> Access:
        """Trace `buf`, read by step `reader`, back through copies and one multiply."""
        acc = Access(buf.root, np.arange(buf.size, dtype=np.int64).reshape(buf.shape))
        if buf.dtype != FLOAT or buf.root.dtype != FLOAT:
            return acc
        while True:
            found = self._step_back(acc, reader)
            if found is None:
                return acc
            acc, at = found
            self.bypassed.add(id(self.p.steps[at]))

    def _step_back(self, acc: Access, reader: int) -> tuple[Access, int] | None:
        """The access one step further back (and that step's position), or None."""
        writers = self.writers.get(id(acc.root), [])
        if len(writers) != 1 or acc.root.kind != "arena":
            return None
        at = writers[0]
        step = self.p.steps[at]
        if (step.kernel not in BYPASSABLE or len(step.outs) != 1
                or any(b.dtype != FLOAT or b.root.dtype != FLOAT for b in step.ins)):
            return None
        if step.kernel == "copy_strided":
            index = self._through_copy(step, acc)
            if index is None:
                return None
            new = Access(step.ins[0].root, index, acc.scale, acc.scale_index)
        else:
            new = self._through_multiply(step, acc, at)
            if new is None:
                return None
        for part in (new.root, new.scale):
            if part is not None and self.written_between(part, at, reader):
                return None
        return new, at

    @staticmethod
    def _through_copy(step: Step, acc: Access) -> np.ndarray | None:
        """`acc.index` mapped from the copy's destination to its source, if the copy
        writes every element of its destination exactly once."""
        q = step.params
        dims = [int(d) for d in q["dims"]]
        if np.prod(dims, dtype=np.int64) != acc.root.size:
            return None
        grids = np.indices(dims, dtype=np.int64) if dims else np.zeros((0,), np.int64)
        dst = q["dst_off"] + sum((g * s for g, s in zip(grids, q["dst_strides"])),
                                 np.zeros(dims, np.int64))
        src = q["src_off"] + sum((g * s for g, s in zip(grids, q["src_strides"])),
                                 np.zeros(dims, np.int64))
        dst, src = dst.ravel(), src.ravel()
        if dst.min(initial=0) < 0 or dst.max(initial=-1) >= acc.root.size:
            return None
        table = np.full(acc.root.size, -1, np.int64)
        table[dst] = src
        if (table < 0).any():
            return None  # some element not written: another step writes it
        return table[acc.index]

    def _through_multiply(self, step: Step, acc: Access, at: int) -> Access | None:
        """Through `x * s` with s one float (a size-1 buffer, or a splat of one element):
        the access of x, scaled by s."""
        out = step.outs[0]
        if step.params.get("op") != "mul" or acc.scale is not None or len(step.ins) != 2:
            return None
        for x, s in (step.ins, step.ins[::-1]):
            if x.size != out.size:
                continue
            single = self.single_element(s, at)
            if single is None:
                continue
            return Access(x.root, acc.index, *single)
        return None

    def single_element(self, buf: Buffer, reader: int) -> tuple[Buffer, int] | None:
        """(root, element) if every element of `buf` is that one element of root."""
        if buf.size == 1:
            return buf.root, 0
        acc = self.access(buf, reader)
        if acc.scale is not None:
            return None
        flat = acc.index.ravel()
        if (flat == flat[0]).all():
            return acc.root, int(flat[0])
        entry = next((e for e in self.p.blob if e.buffer is acc.root), None)
        if entry is None:
            return None
        words = np.frombuffer(entry.data, np.uint8).reshape(-1, acc.root.dtype.itemsize)
        return (acc.root, int(flat[0])) if (words == words[0]).all() else None

    def strided_batch_matmul(self, at: int) -> Step | None:
        """The `batch_matmul_strided` step that replaces batch_matmul step `at`, or None
        if neither operand reads through a copy."""
        step = self.p.steps[at]
        out, (a, b) = step.outs[0], step.ins
        q = step.params
        m, k, n = q["m"], q["k"], q["n"]
        sides = {}
        for name, buf, rows, cols in (("a", a, m, k), ("b", b, k, n)):
            acc = self.access(buf, at)
            layout = _matrix_layout(acc.index, q[f"{name}_off"], rows, cols)
            if layout is None:
                acc = Access(buf.root, np.arange(buf.size, dtype=np.int64).reshape(buf.shape))
                layout = _matrix_layout(acc.index, q[f"{name}_off"], rows, cols)
            sides[name] = (acc, layout)
        (a_acc, a_lay), (b_acc, b_lay) = sides["a"], sides["b"]
        if a_acc.root is a.root and b_acc.root is b.root and a_acc.scale is None \
                and b_acc.scale is None:
            return None
        ins = [a_acc.root, b_acc.root]
        params = {"m": m, "k": k, "n": n}
        for name, acc, (offsets, row, col) in (("a", a_acc, a_lay), ("b", b_acc, b_lay)):
            params.update({f"{name}_off": offsets, f"{name}_row": row, f"{name}_col": col,
                           f"{name}_scale": None})
            if acc.scale is not None:
                params[f"{name}_scale"] = acc.scale_index
                ins.append(acc.scale)
        outs = [out]
        if b_lay[2] != 1:  # B is transposed into a scratch matrix (runtime/q35rt_bmm.c)
            tile = Buffer(f"t{len(self.p.buffers)}_work", np.dtype(np.uint8), (k * n * 4,),
                          "arena")
            self.p.buffers.append(tile)
            outs.append(tile)
        return Step("batch_matmul_strided", outs, ins, params, step.origin)

    def operands_in_place(self) -> None:
        for at, step in enumerate(self.p.steps):
            if step.kernel != "batch_matmul" or step.outs[0].dtype != np.float32:
                continue
            folded = self.strided_batch_matmul(at)
            if folded is not None:
                self.p.steps[at] = folded
        self.drop_dead()

    def drop_dead(self) -> None:
        """Drop bypassed steps whose results nothing reads any more."""
        needed: set[int] = set()
        keep: list[Step] = []
        for step in reversed(self.p.steps):
            dead = id(step) in self.bypassed and all(
                b.root.kind == "arena" and id(b.root) not in needed for b in step.outs)
            if dead:
                continue
            keep.append(step)
            needed.update(id(b.root) for b in step.ins)
        self.p.steps[:] = keep[::-1]
        used = {id(b.root) for s in self.p.steps for b in (*s.ins, *s.outs)}
        self.p.buffers[:] = [b for b in self.p.buffers
                             if b.root.kind != "arena" or id(b.root) in used]
        self._index()


def _matrix_layout(index: np.ndarray, offsets: list[int], rows: int, cols: int
                   ) -> tuple[list[int], int, int] | None:
    """(per-batch offsets, row stride, column stride) if the [rows, cols] matrix that
    starts at each flat operand offset in `offsets` sits at offset + i * row + j * col
    of the source; else None."""
    size = rows * cols
    if size == 0 or not offsets:
        return None
    chosen = index.reshape(-1, rows, cols)[[o // size for o in offsets]]
    row = int(chosen[0, 1, 0] - chosen[0, 0, 0]) if rows > 1 else 0
    col = int(chosen[0, 0, 1] - chosen[0, 0, 0]) if cols > 1 else 0
    start = chosen[:, 0, 0]
    expect = (start[:, None, None] + row * np.arange(rows)[None, :, None]
              + col * np.arange(cols)[None, None, :])
    if not np.array_equal(chosen, expect):
        return None
    return [int(s) for s in start], row, col


def fold_program(program: Program) -> Program:
    """Apply both rewrites to `program` (in place) and return it."""
    folder = Folder(program)
    folder.outputs_in_place()
    folder.operands_in_place()
    return program
