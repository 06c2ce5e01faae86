"""Lowering from q35c's graph IR to a flat program of kernel steps over planned buffers.

The output, a `Program`, is what every native printer renders: a list of `Step`s (one
kernel call or elementwise loop each) over `Buffer`s whose storage is decided here
(inputs and outputs are the caller's, weights live in the blob, everything else in one
arena planned by `memory.plan_arena`). Views (`tensor.reshape` and friends) become aliases
of their source's storage, so they cost nothing. The printer for C lives in `printer.py`;
a CUDA printer would render the same steps.

This module knows op semantics only as far as it must to pick a kernel and its static
parameters (shapes, strides, axes); the numerics are in the kernels
(`runtime/q35rt.c`), written to match `targets/interp/interpreter.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import singledispatchmethod

import numpy as np
from xdsl.dialects import arith, func, math as xmath, tensor
from xdsl.dialects.builtin import (
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    TensorType,
)
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import Operation, SSAValue

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.quant import LegacyPairTensor, Q3P5Tensor
from q35c.compiler.tensors import constant_value, numpy_dtype
from q35c.compiler.weights import WeightStore
from q35c.dialects import q35nn, quant3p5
from q35c.targets.interp.interpreter import argument_names, entry_function, result_names

C_TYPES = {
    np.dtype(np.float32): "float", np.dtype(np.float64): "double",
    np.dtype(np.int64): "int64_t", np.dtype(np.int32): "int32_t",
    np.dtype(np.int16): "int16_t", np.dtype(np.int8): "int8_t",
    np.dtype(np.bool_): "uint8_t", np.dtype(np.uint8): "uint8_t",
}


@dataclass(eq=False)
class Buffer:
    """Storage for one tensor: the caller's (input/output), the blob's, or the arena's."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    kind: str  # "input", "output", "weight", "arena"
    alias_of: Buffer | None = None
    offset: int = -1  # byte offset in the arena or the blob, once planned

    @property
    def root(self) -> Buffer:
        return self.alias_of.root if self.alias_of else self

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def ctype(self) -> str:
        return C_TYPES[self.dtype]


@dataclass
class Step:
    """One kernel invocation: `kernel` names what to do, `params` its static parameters."""

    kernel: str
    outs: list[Buffer]
    ins: list[Buffer]
    params: dict = field(default_factory=dict)
    origin: str = ""  # the op it came from, for comments and error messages


@dataclass
class BlobEntry:
    """One weight in the blob: its bytes (Q3P5 serialization or raw little-endian array)."""

    name: str
    data: bytes
    buffer: Buffer


@dataclass
class Program:
    name: str
    inputs: list[tuple[str, Buffer]]
    outputs: list[tuple[str, Buffer]]
    buffers: list[Buffer]
    steps: list[Step]
    blob: list[BlobEntry]
    arena_bytes: int = 0


ELEMENTWISE = {
    arith.AddfOp: "add", arith.SubfOp: "sub", arith.MulfOp: "mul", arith.DivfOp: "div",
    arith.NegfOp: "neg", arith.MaximumfOp: "maxf", arith.MinimumfOp: "minf",
    arith.AddiOp: "addi", arith.SubiOp: "subi", arith.MuliOp: "muli", arith.DivSIOp: "divsi",
    arith.SIToFPOp: "cast", arith.FPToSIOp: "fptosi", arith.ExtFOp: "cast",
    arith.TruncFOp: "cast", arith.ExtSIOp: "cast", arith.TruncIOp: "cast",
    arith.SelectOp: "select",
    xmath.ExpOp: "exp", xmath.LogOp: "log", xmath.SqrtOp: "sqrt", xmath.RsqrtOp: "rsqrt",
    xmath.TanhOp: "tanh", xmath.AbsFOp: "abs", xmath.SinOp: "sin", xmath.CosOp: "cos",
    xmath.PowFOp: "pow", xmath.ErfOp: "erf",
}
CMPF = {1: "eq", 2: "gt", 3: "ge", 4: "lt", 5: "le", 6: "ne", 13: "ne"}
REDUCERS = {arith.AddfOp: "add", arith.MulfOp: "mul", arith.MaximumfOp: "max",
            arith.MinimumfOp: "min"}


def _shape(value: SSAValue) -> tuple[int, ...]:
    t = value.type
    return tuple(t.get_shape()) if isinstance(t, TensorType) else ()


def _dtype(value: SSAValue) -> np.dtype:
    t = value.type
    return numpy_dtype(t.get_element_type() if isinstance(t, TensorType) else t)


def strides(shape: tuple[int, ...]) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def _split(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    """[outer, shape[axis], inner] sizes around `axis`."""
    return (int(np.prod(shape[:axis], dtype=np.int64)), shape[axis],
            int(np.prod(shape[axis + 1:], dtype=np.int64)))


class Lowering:
    """Walks the entry function once, op by op, appending steps."""

    def __init__(self, module: ModuleOp, store: WeightStore, entry: str | None, name: str):
        try:
            self.fn = entry_function(module, entry)
        except Exception as err:
            raise Q35cError(f"c target: {err}") from None
        self.store = store
        self.name = name
        self.values: dict[SSAValue, Buffer] = {}
        self.scalars: dict[SSAValue, float | int] = {}
        self.packed: dict[SSAValue, tuple[Buffer, Q3P5Tensor | LegacyPairTensor]] = {}
        self.lazy: dict[SSAValue, Operation] = {}  # constants / empties made on first use
        self.buffers: list[Buffer] = []
        self.steps: list[Step] = []
        self.blob: list[BlobEntry] = []
        self.blob_by_name: dict[str, BlobEntry] = {}

    # -- buffers --------------------------------------------------------------------------

    def new(self, kind: str, dtype: np.dtype, shape: tuple[int, ...], hint: str) -> Buffer:
        buf = Buffer(f"t{len(self.buffers)}_{hint}", np.dtype(dtype), tuple(shape), kind)
        self.buffers.append(buf)
        return buf

    def result(self, value: SSAValue, hint: str) -> Buffer:
        buf = self.new("arena", _dtype(value), _shape(value), hint)
        self.values[value] = buf
        return buf

    def blob_buffer(self, name: str, array: np.ndarray) -> Buffer:
        key = name
        if key in self.blob_by_name:
            return self.blob_by_name[key].buffer
        array = np.ascontiguousarray(array)
        dtype = array.dtype
        if dtype not in C_TYPES:
            raise Q35cError(f"c target: weight '{name}' has unsupported dtype {dtype}")
        data = array.astype(dtype.newbyteorder("<"), copy=False).tobytes()
        buf = self.new("weight", dtype, array.shape, "w")
        entry = BlobEntry(name, data, buf)
        self.blob.append(entry)
        self.blob_by_name[key] = entry
        return buf

    def buffer_of(self, value: SSAValue, op: Operation) -> Buffer:
        if value in self.values:
            return self.values[value]
        if value in self.lazy:
            return self.materialize(value)
        if value in self.scalars:
            arr = np.asarray(self.scalars[value], dtype=_dtype(value))
            buf = self.blob_buffer(f"scalar:{value.name_hint}:{id(value)}", arr)
            self.values[value] = buf
            return buf
        raise Q35cError(f"c target: {op.name}: operand has no tensor value (packed weights "
                        "are only accepted by quant3p5.matmul and matmul_int8)")

    def materialize(self, value: SSAValue) -> Buffer:
        op = self.lazy[value]
        if isinstance(op, arith.ConstantOp):
            arr = constant_value(op.value, op.result.type)
            buf = self.blob_buffer(f"const:{len(self.blob)}", arr)
        else:  # tensor.empty: the interpreter's zeros
            buf = self.result(value, "zeros")
            self.steps.append(Step("zero", [buf], [], {}, op.name))
        self.values[value] = buf
        return buf

    # -- ops ------------------------------------------------------------------------------

    def run(self) -> Program:
        names = argument_names(self.fn)
        inputs = []
        for name, arg in zip(names, self.fn.args):
            if not isinstance(arg.type, TensorType):
                raise Q35cError(f"c target: input '{name}' must be a tensor, got {arg.type}")
            buf = self.new("input", _dtype(arg), _shape(arg), "in")
            self.values[arg] = buf
            inputs.append((name, buf))
        outputs = None
        for op in self.fn.body.block.ops:
            if isinstance(op, func.ReturnOp):
                outputs = self.returns(op)
                break
            self.lower(op)
        if outputs is None:
            raise Q35cError(f"c target: @{self.fn.sym_name.data} has no func.return")
        return Program(self.name, inputs, outputs, self.buffers, self.steps, self.blob)

    def returns(self, op: func.ReturnOp) -> list[tuple[str, Buffer]]:
        outputs = []
        for name, value in zip(result_names(self.fn), op.arguments):
            src = self.buffer_of(value, op)
            out = self.new("output", src.dtype, src.shape, "out")
            self.steps.append(Step("copy", [out], [src], {}, "func.return"))
            outputs.append((name, out))
        return outputs

    @singledispatchmethod
    def lower(self, op: Operation) -> None:
        kind = ELEMENTWISE.get(type(op))
        if kind is not None:
            return self.elementwise(op, kind)
        raise Q35cError(f"c target: {op.name} is not supported")

    def elementwise(self, op: Operation, kind: str) -> None:
        if not isinstance(op.results[0].type, TensorType):
            raise Q35cError(f"c target: {op.name} on scalars outside a region is not supported")
        ins = [self.buffer_of(v, op) for v in op.operands]
        out = self.result(op.results[0], kind)
        self.steps.append(Step("elementwise", [out], ins, {"op": kind}, op.name))

    @lower.register
    def _(self, op: arith.CmpfOp) -> None:
        pred = op.predicate.value.data
        if pred not in CMPF:
            raise Q35cError(f"c target: arith.cmpf predicate {pred} is not supported")
        self.elementwise(op, "cmp_" + CMPF[pred])

    @lower.register
    def _(self, op: arith.ConstantOp) -> None:
        if isinstance(op.value, DenseIntOrFPElementsAttr):
            self.lazy[op.result] = op
            return
        if isinstance(op.value, (IntegerAttr, FloatAttr)):
            self.scalars[op.result] = op.value.value.data
            return
        raise Q35cError(f"c target: arith.constant {op.value} is not supported")

    @lower.register
    def _(self, op: tensor.EmptyOp) -> None:
        self.lazy[op.tensor] = op

    @lower.register
    def _(self, op: quant3p5.WeightOp) -> None:
        name = op.weight_name.data
        if name not in self.store:
            raise Q35cError(f"c target: weight '{name}' is not in the weight store")
        value = self.store[name]
        if isinstance(op.result.type, quant3p5.PackedWeightType):
            if not isinstance(value, (Q3P5Tensor, LegacyPairTensor)):
                raise Q35cError(f"c target: weight '{name}': packed weights must be q3p5 or "
                                f"pair43 (got {type(value).__name__})")
            if name not in self.blob_by_name:
                data = (value.to_bytes() if isinstance(value, Q3P5Tensor)
                        else pair43_bytes(value))
                hint = "q3p5" if isinstance(value, Q3P5Tensor) else "pair43"
                buf = self.new("weight", np.dtype(np.uint8), (len(data),), hint)
                entry = BlobEntry(name, data, buf)
                self.blob.append(entry)
                self.blob_by_name[name] = entry
            self.packed[op.result] = (self.blob_by_name[name].buffer, value)
            return
        array = np.asarray(value).astype(_dtype(op.result), copy=False)
        if array.shape != _shape(op.result):
            raise Q35cError(f"c target: weight '{name}' has shape {array.shape}, the IR "
                            f"expects {_shape(op.result)}")
        self.values[op.result] = self.blob_buffer(name, array)

    @lower.register(tensor.ReshapeOp)
    @lower.register(tensor.CollapseShapeOp)
    @lower.register(tensor.ExpandShapeOp)
    def _(self, op: Operation) -> None:
        src = self.buffer_of(op.operands[0], op)
        view = Buffer(f"{src.root.name}_v{len(self.buffers)}", src.dtype,
                      _shape(op.results[0]), src.root.kind, alias_of=src)
        self.buffers.append(view)
        self.values[op.results[0]] = view

    @lower.register
    def _(self, op: linalg.FillOp) -> None:
        scalar = op.inputs[0]
        if scalar not in self.scalars:
            raise Q35cError("c target: linalg.fill needs a constant scalar")
        out = self.result(op.results[0], "fill")
        self.steps.append(Step("fill", [out], [], {"value": self.scalars[scalar]}, op.name))

    def strided_copy(self, op: Operation, out: Buffer, src: Buffer, dims, dst_off,
                     dst_strides, src_off, src_strides) -> None:
        self.steps.append(Step("copy_strided", [out], [src], {
            "dims": list(dims), "dst_off": dst_off, "dst_strides": list(dst_strides),
            "src_off": src_off, "src_strides": list(src_strides)}, op.name))

    @lower.register
    def _(self, op: linalg.TransposeOp) -> None:
        src = self.buffer_of(op.inputs[0], op)
        perm = tuple(op.permutation.get_values())
        out = self.result(op.results[0], "transpose")
        st = strides(src.shape)
        self.strided_copy(op, out, src, out.shape, 0, strides(out.shape), 0,
                          [st[p] for p in perm])

    @lower.register
    def _(self, op: linalg.BroadcastOp) -> None:
        src = self.buffer_of(op.operands[0], op)
        added = set(op.dimensions.get_values())
        out = self.result(op.results[0], "broadcast")
        src_st = iter(strides(src.shape))
        st = [0 if d in added else next(src_st) for d in range(len(out.shape))]
        self.strided_copy(op, out, src, out.shape, 0, strides(out.shape), 0, st)

    @lower.register
    def _(self, op: tensor.ExtractSliceOp) -> None:
        if len(op.operands) != 1:
            raise Q35cError("c target: tensor.extract_slice with dynamic offsets is not supported")
        src = self.buffer_of(op.source, op)
        offsets = op.static_offsets.get_values()
        sizes = op.static_sizes.get_values()
        steps_ = op.static_strides.get_values()
        st = strides(src.shape)
        out = self.result(op.result, "slice")
        start = sum(o * s for o, s in zip(offsets, st))
        self.strided_copy(op, out, src, sizes, 0, strides(tuple(sizes)), start,
                          [s * k for s, k in zip(st, steps_)])

    @lower.register
    def _(self, op: tensor.ConcatOp) -> None:
        axis = op.dim.value.data
        out = self.result(op.results[0], "concat")
        out_st = strides(out.shape)
        at = 0
        for value in op.operands:
            src = self.buffer_of(value, op)
            self.strided_copy(op, out, src, src.shape, at * out_st[axis], out_st, 0,
                              strides(src.shape))
            at += src.shape[axis]

    @lower.register
    def _(self, op: linalg.ReduceOp) -> None:
        body = list(op.region.block.ops)
        combiner = REDUCERS.get(type(body[0])) if len(body) == 2 else None
        source, init = op.operands[0], op.operands[1]
        if combiner is None or _dtype(source) != np.float32:
            raise Q35cError("c target: linalg.reduce: only single-op float add/mul/max/min "
                            "bodies are supported")
        axes = sorted(op.dimensions.get_values())
        shape = _shape(source)
        if axes != list(range(axes[0], axes[-1] + 1)):
            raise Q35cError("c target: linalg.reduce over non-adjacent axes is not supported")
        src = self.buffer_of(source, op)
        acc = self.buffer_of(init, op)
        out = self.result(op.results[0], "reduce")
        outer = int(np.prod(shape[:axes[0]], dtype=np.int64))
        red = int(np.prod(shape[axes[0]:axes[-1] + 1], dtype=np.int64))
        inner = int(np.prod(shape[axes[-1] + 1:], dtype=np.int64))
        self.steps.append(Step("reduce", [out], [src, acc], {
            "op": combiner, "outer": outer, "red": red, "inner": inner}, op.name))

    @lower.register
    def _(self, op: linalg.MatmulOp) -> None:
        a, b = (self.buffer_of(v, op) for v in op.inputs)
        acc = self.buffer_of(op.outputs[0], op)
        if len(a.shape) != 2 or a.dtype != np.float32:
            raise Q35cError("c target: linalg.matmul: only 2-D float32 is supported")
        out = self.result(op.results[0], "matmul")
        self.steps.append(Step("matmul", [out], [a, b, acc], {
            "m": a.shape[0], "k": a.shape[1], "n": b.shape[1]}, op.name))

    @lower.register
    def _(self, op: q35nn.BatchMatmulOp) -> None:
        a, b = self.buffer_of(op.lhs, op), self.buffer_of(op.rhs, op)
        out = self.result(op.result, "bmm")
        batch = out.shape[:-2]
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]

        def offsets(shape):
            dims = (1,) * (len(batch) - (len(shape) - 2)) + tuple(shape[:-2])
            st = strides(dims)
            mat = shape[-2] * shape[-1]
            return [sum((0 if dims[d] == 1 else i[d]) * st[d] for d in range(len(batch))) * mat
                    for i in np.ndindex(*batch)] if batch else [0]

        self.steps.append(Step("batch_matmul", [out], [a, b], {
            "a_off": offsets(a.shape), "b_off": offsets(b.shape), "m": m, "k": k, "n": n},
            op.name))

    @lower.register
    def _(self, op: q35nn.SoftmaxOp) -> None:
        src = self.buffer_of(op.input, op)
        axis = op.axis.value.data % len(src.shape)
        out = self.result(op.result, "softmax")
        outer, length, inner = _split(src.shape, axis)
        self.steps.append(Step("softmax", [out], [src],
                               {"outer": outer, "len": length, "inner": inner}, op.name))

    @lower.register
    def _(self, op: q35nn.LayerNormOp) -> None:
        ins = [self.buffer_of(v, op) for v in (op.input, op.gamma, op.beta)]
        out = self.result(op.result, "layer_norm")
        self.steps.append(Step("layer_norm", [out], ins, self.norm_params(op, ins[0]), op.name))

    @lower.register
    def _(self, op: q35nn.RMSNormOp) -> None:
        ins = [self.buffer_of(v, op) for v in (op.input, op.gamma)]
        out = self.result(op.result, "rms_norm")
        self.steps.append(Step("rms_norm", [out], ins, self.norm_params(op, ins[0]), op.name))

    @staticmethod
    def norm_params(op, x: Buffer) -> dict:
        return {"rows": x.size // x.shape[-1], "len": x.shape[-1],
                "eps": float(op.epsilon.value.data)}

    @lower.register
    def _(self, op: q35nn.SiluOp) -> None:
        src = self.buffer_of(op.input, op)
        out = self.result(op.result, "silu")
        self.steps.append(Step("silu", [out], [src], {}, op.name))

    @lower.register
    def _(self, op: q35nn.GeluOp) -> None:
        src = self.buffer_of(op.input, op)
        out = self.result(op.result, "gelu")
        self.steps.append(Step("gelu", [out], [src],
                               {"tanh": op.approximate.data == "tanh"}, op.name))

    @lower.register
    def _(self, op: q35nn.GatherOp) -> None:
        data, idx = self.buffer_of(op.data, op), self.buffer_of(op.indices, op)
        if idx.dtype != np.int64:
            raise Q35cError(f"c target: q35nn.gather: indices must be i64, got {idx.dtype}")
        axis = op.axis.value.data % len(data.shape)
        out = self.result(op.result, "gather")
        outer, size, inner = _split(data.shape, axis)
        self.steps.append(Step("gather", [out], [data, idx], {
            "count": idx.size, "outer": outer, "size": size, "inner": inner}, op.name))

    def packed_operand(self, op: Operation, value: SSAValue
                       ) -> tuple[Buffer, Q3P5Tensor | LegacyPairTensor]:
        if value not in self.packed:
            raise Q35cError(f"c target: {op.name}: weights must come from quant3p5.weight")
        return self.packed[value]

    @lower.register
    def _(self, op: quant3p5.MatmulOp) -> None:
        x = self.buffer_of(op.lhs, op)
        wbuf, w = self.packed_operand(op, op.weights)
        rows = x.size // w.shape[0]
        out = self.result(op.result, "qmatmul")
        if isinstance(w, LegacyPairTensor):
            self.steps.append(Step("pair_matmul_f32", [out], [x, wbuf], {
                "rows": rows, "k": w.shape[0], "n": w.shape[1]}, op.name))
            return
        work = self.new("arena", np.dtype(np.uint8), (work_bytes(rows, w, int8=False),), "work")
        self.steps.append(Step("qmatmul_f32", [out, work], [x, wbuf], {
            "rows": rows, "k": w.shape[0], "n": w.shape[1]}, op.name))

    @lower.register
    def _(self, op: quant3p5.QuantizeActivationsOp) -> None:
        x = self.buffer_of(op.input, op)
        q = self.result(op.quantized, "q")
        s = self.result(op.scale, "qscale")
        self.steps.append(Step("quantize_activations", [q, s], [x], {
            "rows": x.size // x.shape[-1], "k": x.shape[-1]}, op.name))

    @lower.register
    def _(self, op: quant3p5.MatmulInt8Op) -> None:
        q, s = self.buffer_of(op.lhs, op), self.buffer_of(op.lhs_scale, op)
        wbuf, w = self.packed_operand(op, op.weights)
        rows = q.size // w.shape[0]
        out = self.result(op.result, "qmatmul_i8")
        if isinstance(w, LegacyPairTensor):
            self.steps.append(Step("pair_matmul_i8", [out], [q, s, wbuf], {
                "rows": rows, "k": w.shape[0], "n": w.shape[1]}, op.name))
            return
        # Group sums and de-interleaved activations: scratch, live during this step only.
        scratch = self.new("arena", np.dtype(np.uint8), (work_bytes(rows, w, int8=True),),
                           "work")
        self.steps.append(Step("qmatmul_i8", [out, scratch], [q, s, wbuf], {
            "rows": rows, "k": w.shape[0], "n": w.shape[1]}, op.name))


def pair43_bytes(w: LegacyPairTensor) -> bytes:
    """A legacy pair tensor in the blob: scale[N] and offset[N] (float32), then per column
    its ceil(K/2) pair bytes (q35_pair_matmul_* in runtime/q35rt.c read this)."""
    return b"".join((w.scale.astype("<f4").tobytes(), w.offset.astype("<f4").tobytes(),
                     np.ascontiguousarray(w.packed.T).astype(np.uint8).tobytes()))


def work_bytes(rows: int, w: Q3P5Tensor, int8: bool) -> int:
    """Scratch of a quantized matmul (q35_qmatmul_work_bytes in runtime/q35rt.c)."""
    groups = -(-w.num_groups // 16) * 16  # the SIMD kernels pad groups to a multiple of 16
    kp = groups * w.group_size
    rows16 = -(-rows // 16) * 16  # the GEMMs pad rows to a multiple of 16
    if not int8:
        return max(rows * (kp + groups) * 4, rows16 * kp * 4)
    return max(rows * (groups * 4 + kp), rows16 * (kp + groups * 4))


def lower_module(module: ModuleOp, store: WeightStore, entry: str | None, name: str) -> Program:
    """The `Program` for the entry function of `module`; storage is planned separately."""
    return Lowering(module, store, entry, name).run()
