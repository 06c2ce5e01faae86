"""Graph IR (int8-activation path) -> a list of nodes over buffers, before scheduling.

One node per op that computes something:

- `MatmulNode` for `quant3p5.matmul_int8`: scheduled instruction by instruction
  (schedule/: MEM reads of packed weights, VXM unpack, MXM install, masked MXM passes,
  MEM writes of int32 group partials, then a VXM decode of group scales and a VXM rescale
  macro per 320-column tile).
- `MacroNode` for every other op: one VXM or SXM macro instruction that reads its operand
  buffers and writes its result buffers; the simulator runs the interpreter's function for
  the op on the bytes it reads.

Reshapes are free aliases; constants, float weights and inputs are buffers in the initial
MEM image; `tensor.empty` is a virtual zero tensor that occupies no memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects import arith, func, tensor
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import Operation, SSAValue

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.entry import argument_names, entry_function, result_names
from q35c.compiler.quant import Q3P5Tensor
from q35c.compiler.tensors import constant_value, numpy_dtype
from q35c.compiler.weights import WeightStore
from q35c.dialects import q35nn, quant3p5
from q35c.semantics import IMPLEMENTATIONS
from q35c.semantics.quant3p5 import IntScaled, int_scaled
from q35c.targets.groq.cost import ONNX_NODE_WORK, op_work


@dataclass
class Buf:
    """A tensor in MEM. `layout` says how its bytes sit in 320-byte vectors:
    `flat` (row-major little-endian bytes), `rows` (the same bytes: an embedding table in
    weight slice groups, which a gather reads row by row), `chunks:C` (int8 rows cut into C-element
    chunks, one zero-padded vector each: MXM activation vectors), `planes` ([R, 320]
    int32/float32, 4 byte-plane vectors per row: a 4-stream group), `raw` (packed bytes,
    one vector per 320 lanes)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    layout: str = "flat"
    kind: str = "temp"  # input | const | weight | temp | virtual
    value: np.ndarray | None = None  # initial contents (const/weight), already encoded bytes
    packed_bytes: int = 0  # exact Q3P5 bytes held (weights)
    slices: list[int] = field(default_factory=list)
    addr: int = 0
    nvec: int = 0
    order: tuple[int, int] = (0, 0)  # op-order live range (def node, last use node)
    used: bool = False
    hemisphere: str = ""  # "W"/"E": place next to the VXM in that hemisphere
    chip: int = 0
    label: str = ""  # the IR tensor it holds (weight name or SSA name), for messages

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def vectors(self, lanes: int) -> int:
        if self.layout in ("flat", "rows"):
            return max(1, -(-self.nbytes // lanes))
        if self.layout.startswith("chunks:"):
            c = int(self.layout[7:])
            k = self.shape[-1]
            rows = int(np.prod(self.shape[:-1], dtype=np.int64))
            return max(1, rows * -(-k // c))
        if self.layout == "planes":
            return self.shape[0] * np.dtype(self.dtype).itemsize
        if self.layout == "raw":
            return self.shape[0]
        raise AssertionError(self.layout)

    def place(self, v: int) -> tuple[int, int]:
        """(slice index, address) of vector v."""
        s = len(self.slices)
        return self.slices[v % s], self.addr + v // s

    def addresses(self) -> int:
        """Addresses used in each of its slices."""
        return -(-self.nvec // len(self.slices)) if self.slices else 0


def encode(buf: Buf, array: np.ndarray, lanes: int) -> np.ndarray:
    """uint8 [nvec, lanes]: the buffer's vectors for `array`."""
    a = np.ascontiguousarray(np.asarray(array).astype(buf.dtype, copy=False))
    nvec = buf.vectors(lanes)
    out = np.zeros((nvec, lanes), np.uint8)
    if buf.layout in ("flat", "rows"):
        raw = a.reshape(-1).view(np.uint8)
        out.reshape(-1)[:raw.size] = raw
    elif buf.layout.startswith("chunks:"):
        c = int(buf.layout[7:])
        k = a.shape[-1]
        rows = a.reshape(-1, k).view(np.uint8)
        nch = -(-k // c)
        view = out.reshape(rows.shape[0], nch, lanes)
        for i in range(nch):
            part = rows[:, i * c:(i + 1) * c]
            view[:, i, :part.shape[1]] = part
    elif buf.layout == "planes":
        r = a.shape[0]
        out[:] = a.reshape(r, lanes).view(np.uint8).reshape(r, lanes, 4).transpose(
            0, 2, 1).reshape(r * 4, lanes)
    elif buf.layout == "raw":
        out[:] = a.reshape(nvec, lanes)
    return out


def decode(buf: Buf, vectors: np.ndarray, lanes: int) -> np.ndarray:
    """Inverse of `encode`: the array held in uint8 [nvec, lanes]."""
    dt = np.dtype(buf.dtype)
    if buf.layout in ("flat", "rows"):
        return vectors.reshape(-1)[:buf.nbytes].copy().view(dt).reshape(buf.shape)
    if buf.layout.startswith("chunks:"):
        c = int(buf.layout[7:])
        k = buf.shape[-1]
        rows = int(np.prod(buf.shape[:-1], dtype=np.int64))
        nch = -(-k // c)
        view = vectors.reshape(rows, nch, lanes)[:, :, :c].reshape(rows, nch * c)[:, :k]
        return np.ascontiguousarray(view).view(dt).reshape(buf.shape)
    if buf.layout == "planes":
        r = buf.shape[0]
        planes = vectors.reshape(r, 4, lanes).transpose(0, 2, 1)
        return np.ascontiguousarray(planes).reshape(r, lanes * 4).view(dt).reshape(buf.shape)
    return vectors.copy()


@dataclass
class MacroNode:
    index: int  # position of the op in the entry function (the simulator re-runs it)
    op: Operation
    kind: str  # cost class, see cost.macro_cycles
    unit: str  # "VXM" or "SXM"
    inputs: list[str]
    outputs: list[str]
    elements: int
    passes: int
    chip: int = 0


@dataclass
class MatmulNode:
    index: int
    op: Operation
    q: str
    scale: str
    weight: str  # store name
    tensor: Q3P5Tensor
    out: str
    rows: int  # M
    chunk: int  # K rows per MXM block (multiple of the group size, <= 320)
    chip: int = 0
    int_scaled: IntScaled | None = None
    """The integer rescale contract's weights (the op's `rescale_rows` = `chunk`)."""


@dataclass
class Graph:
    buffers: dict[str, Buf]
    nodes: list[MacroNode | MatmulNode]
    inputs: list[tuple[str, str]]  # (argument name, buffer)
    outputs: list[tuple[str, str]]  # (result name, buffer)
    aliases: dict[str, str]


_UNSUPPORTED = (quant3p5.MatmulOp, quant3p5.FusedMatmulOp, quant3p5.QuantizeOp,
                quant3p5.DequantizeOp, quant3p5.UnpackOp, quant3p5.PackOp, func.CallOp)


def _shape(v: SSAValue) -> tuple[int, ...]:
    t = v.type
    return tuple(t.get_shape()) if isinstance(t, TensorType) else ()


def _dtype(v: SSAValue) -> str:
    t = v.type
    el = t.get_element_type() if isinstance(t, TensorType) else t
    dt = np.dtype(numpy_dtype(el))
    return "uint8" if dt == np.bool_ else dt.str.lstrip("<|=")


def _chunk(lanes: int, group: int) -> int:
    if group > lanes:
        raise Q35cError(f"groq target: Q3P5 group size {group} exceeds the {lanes}-row MXM")
    return lanes // group * group


def lower(module: ModuleOp, store: WeightStore, lanes: int, entry: str | None = None
          ) -> Graph:
    fn = entry_function(module, entry)
    buffers: dict[str, Buf] = {}
    names: dict[SSAValue, str] = {}
    aliases: dict[str, str] = {}
    nodes: list[MacroNode | MatmulNode] = []
    packed: dict[str, tuple[str, Q3P5Tensor]] = {}

    def new(v: SSAValue, kind: str, value=None, layout="flat") -> str:
        name = f"v{len(buffers)}"
        label = v.owner.weight_name.data if isinstance(v.owner, quant3p5.WeightOp) else \
            v.name_hint or ""
        buffers[name] = Buf(name, _shape(v), _dtype(v), layout, kind, value, label=label)
        names[v] = name
        return name

    def root(name: str) -> str:
        while name in aliases:
            name = aliases[name]
        return name

    arg_names = argument_names(fn)
    inputs = []
    for name, arg in zip(arg_names, fn.args):
        if not isinstance(arg.type, TensorType):
            raise Q35cError(f"groq target: argument '{name}' must be a tensor")
        inputs.append((name, new(arg, "input")))
    ops = list(fn.body.block.ops)
    for index, op in enumerate(ops):
        if isinstance(op, func.ReturnOp):
            outputs = [(n, root(names[v])) for n, v in zip(result_names(fn), op.operands)]
            break
        if isinstance(op, _UNSUPPORTED) or type(op) not in IMPLEMENTATIONS or op.regions and not \
                isinstance(op, (linalg.ReduceOp, linalg.FillOp, linalg.TransposeOp,
                                linalg.BroadcastOp)):
            hint = " (compile with --act int8)" if isinstance(op, quant3p5.MatmulOp) else ""
            raise Q35cError(f"groq target: {op.name} is not supported{hint}")
        if isinstance(op, q35nn.OnnxNodeOp) and op.op_type.data not in ONNX_NODE_WORK:
            raise Q35cError(f'groq target: {op.name} "{op.op_type.data}" (op {index}) is not '
                            "supported")
        if isinstance(op, arith.ConstantOp):
            value = constant_value(op.value, op.result.type)
            new(op.result, "const", np.asarray(value))
            continue
        if isinstance(op, quant3p5.WeightOp):
            w = store[op.weight_name.data]
            if isinstance(op.result.type, quant3p5.PackedWeightType):
                if not isinstance(w, Q3P5Tensor):
                    raise Q35cError(f"groq target: weight '{op.weight_name.data}' is not in "
                                    "the q3p5 layout")
                names[op.result] = f"W:{op.weight_name.data}"
                packed[names[op.result]] = (op.weight_name.data, w)
            else:
                new(op.result, "const", np.asarray(w).astype(_dtype(op.result)))
            continue
        if isinstance(op, tensor.EmptyOp):
            new(op.tensor, "virtual")
            continue
        if isinstance(op, (tensor.ReshapeOp, tensor.CollapseShapeOp, tensor.ExpandShapeOp)):
            src = root(names[op.operands[0]])
            name = new(op.results[0], "alias")
            aliases[name] = src
            continue
        args = [root(names[v]) for v in op.operands]
        if isinstance(op, quant3p5.MatmulInt8Op):
            wname, tensor_ = packed[args[2]]
            chunk = _chunk(lanes, tensor_.group_size)
            out = new(op.results[0], "temp")
            m = int(np.prod(_shape(op.operands[0])[:-1], dtype=np.int64))
            scaled = None
            if op.rescale_rows is not None:  # one int32 block per K chunk
                rows = op.rescale_rows.value.data
                if rows != chunk:
                    raise Q35cError(f"groq target: {op.name} on weight {wname}: rescale_rows "
                                    f"{rows} is not the MXM chunk of {chunk} rows")
                scaled = int_scaled(tensor_)
            nodes.append(MatmulNode(index, op, args[0], args[1], wname, tensor_, out, m, chunk,
                                    int_scaled=scaled))
            qbuf = buffers[args[0]]
            want = f"chunks:{chunk}"
            if qbuf.layout not in ("flat", want) or qbuf.kind != "temp":
                raise Q35cError(f"groq target: {op.name}: activations shared by matmuls of "
                                "different group sizes")
            qbuf.layout = want
            continue
        if any(a.startswith("W:") for a in args):
            raise Q35cError(f"groq target: {op.name} on packed weights is not supported")
        outs = [new(r, "temp") for r in op.results]
        unit, kind, elements, passes = op_work(op, _shape)  # targets/groq/cost.py
        nodes.append(MacroNode(index, op, kind, unit, args, outs, elements, passes))
    else:
        raise Q35cError("groq target: the entry function has no func.return")
    # Op-order live ranges: def node .. last use node; inputs, constants live throughout.
    end = len(nodes) + 1
    for b in buffers.values():
        b.order = (0, end) if b.kind in ("input", "const") else (end, 0)
    for i, node in enumerate(nodes, 1):
        if isinstance(node, MatmulNode):
            reads, writes = [node.q, node.scale], [node.out]
        else:
            reads, writes = node.inputs, node.outputs
        for r in reads:
            b = buffers[r]
            b.used = True
            b.order = (min(b.order[0], i), max(b.order[1], i))
        for w in writes:
            b = buffers[w]
            b.used = True
            b.order = (min(b.order[0], i), max(b.order[1], i))
    for _, name in outputs:
        if name.startswith("W:"):
            raise Q35cError("groq target: returning packed weights is not supported")
        b = buffers[name]
        b.used = True
        b.order = (min(b.order[0], end), end)
    for _, name in inputs:
        buffers[name].used = True
    return Graph(buffers, nodes, inputs, outputs, aliases)
