"""Lowering from q35c's graph IR to a flat program of kernel steps over planned buffers.

The output, a `Program`, is what every native printer renders: a list of `Step`s (one
kernel call or elementwise loop each) over `Buffer`s whose storage is decided here
(inputs and outputs are the caller's, weights live in the blob, everything else in one
arena planned by `memory.plan_arena`). Views (`tensor.reshape` and friends) become aliases
of their source's storage, so they cost nothing. The printer for C is
`targets/c/printer.py`; a CUDA printer would render the same steps (`program.py` holds the
data types, free of any language's).

This module knows op semantics only as far as it must to pick a kernel and its static
parameters (shapes, strides, axes); the numerics are in the kernels (for C,
`targets/c/runtime/q35rt.c` and `q35rt_fused.c`), written to match the reference
semantics (`q35c.semantics`). Fused ops (passes/fuse_*.py) get one step each.
"""

from __future__ import annotations

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

from q35c.compiler.codegen_names import plain_text
from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.entry import argument_names, entry_function, result_names
from q35c.compiler.quant import LegacyPairTensor, Q3P5Tensor
from q35c.compiler.tensors import constant_value, numpy_dtype
from q35c.compiler.weights import WeightStore
from q35c.dialects import q35nn, quant3p5
from q35c.targets.native.onnx_node import lower_onnx_node
from q35c.targets.native.program import ELEMENT_TYPES, BlobEntry, Buffer, Program, Step

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

    def __init__(self, module: ModuleOp, store: WeightStore, entry: str | None, name: str,
                 target: str = "c"):
        self.target = target  # the target's name, for error messages
        try:
            self.fn = entry_function(module, entry)
        except Exception as err:
            raise self.error(f"{err}") from None
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

    def error(self, message: str) -> Q35cError:
        """A user-facing error, prefixed with the target's name."""
        return Q35cError(f"{self.target} target: {message}")

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
        shape = np.shape(array)  # ascontiguousarray makes a 0-d array 1-d
        array = np.ascontiguousarray(array)
        dtype = array.dtype
        if dtype not in ELEMENT_TYPES:
            raise self.error(f"weight '{plain_text(name)}' has unsupported dtype {dtype}")
        data = array.astype(dtype.newbyteorder("<"), copy=False).tobytes()
        buf = self.new("weight", dtype, shape, "w")
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
        raise self.error(f"{op.name}: operand has no tensor value (packed weights "
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
                raise self.error(f"input '{plain_text(name)}' must be a tensor, "
                                f"got {arg.type}")
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
            raise self.error(f"@{self.fn.sym_name.data} has no func.return")
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
        raise self.error(f"{op.name} is not supported")

    def elementwise(self, op: Operation, kind: str) -> None:
        if not isinstance(op.results[0].type, TensorType):
            raise self.error(f"{op.name} on scalars outside a region is not supported")
        ins = [self.buffer_of(v, op) for v in op.operands]
        out = self.result(op.results[0], kind)
        self.steps.append(Step("elementwise", [out], ins, {"op": kind}, op.name))

    @lower.register
    def _(self, op: q35nn.OnnxNodeOp) -> None:
        lower_onnx_node(self, op)

    @lower.register
    def _(self, op: arith.CmpfOp) -> None:
        pred = op.predicate.value.data
        if pred not in CMPF:
            raise self.error(f"arith.cmpf predicate {pred} is not supported")
        self.elementwise(op, "cmp_" + CMPF[pred])

    @lower.register
    def _(self, op: arith.ConstantOp) -> None:
        if isinstance(op.value, DenseIntOrFPElementsAttr):
            self.lazy[op.result] = op
            return
        if isinstance(op.value, (IntegerAttr, FloatAttr)):
            self.scalars[op.result] = op.value.value.data
            return
        raise self.error(f"arith.constant {op.value} is not supported")

    @lower.register
    def _(self, op: tensor.EmptyOp) -> None:
        self.lazy[op.tensor] = op

    @lower.register
    def _(self, op: quant3p5.WeightOp) -> None:
        name = op.weight_name.data
        if name not in self.store:
            raise self.error(f"weight '{plain_text(name)}' is not in the weight store")
        value = self.store[name]
        if isinstance(op.result.type, quant3p5.PackedWeightType):
            if not isinstance(value, (Q3P5Tensor, LegacyPairTensor)):
                raise self.error(f"weight '{plain_text(name)}': packed weights must "
                                f"be q3p5 or pair43 (got {type(value).__name__})")
            if name not in self.blob_by_name:
                # Q3P5: the version-1 layout (per-column float32 words and group-code rows)
                # that the kernels read, whatever the store's file holds (format.md).
                data = (value.to_bytes(version=1) if isinstance(value, Q3P5Tensor)
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
            raise self.error(f"weight '{plain_text(name)}' has shape {array.shape}, "
                            f"the IR expects {_shape(op.result)}")
        self.values[op.result] = self.blob_buffer(name, array)

    @lower.register(tensor.ReshapeOp)
    @lower.register(tensor.CollapseShapeOp)
    @lower.register(tensor.ExpandShapeOp)
    def _(self, op: Operation) -> None:
        self.view(op.results[0], self.buffer_of(op.operands[0], op))

    def view(self, result: SSAValue, src: Buffer) -> None:
        """`result` as `src`'s bytes under another shape (no step)."""
        view = Buffer(f"{src.root.name}_v{len(self.buffers)}", src.dtype, _shape(result),
                      src.root.kind, alias_of=src)
        self.buffers.append(view)
        self.values[result] = view

    @lower.register
    def _(self, op: linalg.FillOp) -> None:
        scalar = op.inputs[0]
        if scalar not in self.scalars:
            raise self.error("linalg.fill needs a constant scalar")
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
        moved = [p for p in perm if src.shape[p] != 1]
        if moved == sorted(moved):  # only axes of size 1 move: the same bytes in order
            return self.view(op.results[0], src)
        out = self.result(op.results[0], "transpose")
        st = strides(src.shape)
        self.strided_copy(op, out, src, out.shape, 0, strides(out.shape), 0,
                          [st[p] for p in perm])

    @lower.register
    def _(self, op: linalg.BroadcastOp) -> None:
        src = self.buffer_of(op.operands[0], op)
        added = set(op.dimensions.get_values())
        if all(_shape(op.results[0])[d] == 1 for d in added):  # axes of size 1 added
            return self.view(op.results[0], src)
        out = self.result(op.results[0], "broadcast")
        src_st = iter(strides(src.shape))
        st = [0 if d in added else next(src_st) for d in range(len(out.shape))]
        self.strided_copy(op, out, src, out.shape, 0, strides(out.shape), 0, st)

    @lower.register
    def _(self, op: tensor.ExtractSliceOp) -> None:
        if len(op.operands) != 1:
            raise self.error("tensor.extract_slice with dynamic offsets is not supported")
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
            raise self.error("linalg.reduce: only single-op float add/mul/max/min "
                            "bodies are supported")
        axes = sorted(op.dimensions.get_values())
        shape = _shape(source)
        src = self.buffer_of(source, op)
        if axes != list(range(axes[0], axes[-1] + 1)):
            # non-adjacent axes: a transposed copy with the reduced axes last first
            perm = [d for d in range(len(shape)) if d not in axes] + axes
            moved = self.new("arena", src.dtype, tuple(shape[p] for p in perm), "moved")
            st = strides(shape)
            self.strided_copy(op, moved, src, moved.shape, 0, strides(moved.shape), 0,
                              [st[p] for p in perm])
            src, shape = moved, moved.shape
            axes = list(range(len(shape) - len(axes), len(shape)))
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
            raise self.error("linalg.matmul: only 2-D float32 is supported")
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
            raise self.error(f"q35nn.gather: indices must be i64, got {idx.dtype}")
        axis = op.axis.value.data % len(data.shape)
        out = self.result(op.result, "gather")
        outer, size, inner = _split(data.shape, axis)
        self.steps.append(Step("gather", [out], [data, idx], {
            "count": idx.size, "outer": outer, "size": size, "inner": inner}, op.name))

    def packed_operand(self, op: Operation, value: SSAValue
                       ) -> tuple[Buffer, Q3P5Tensor | LegacyPairTensor]:
        if value not in self.packed:
            raise self.error(f"{op.name}: weights must come from quant3p5.weight")
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
    def _(self, op: quant3p5.GatherOp) -> None:
        """Rows of a Q3P5-packed table (kernel `qgather_f32`: targets/c/quant_gather.py)."""
        wbuf, w = self.packed_operand(op, op.table)
        idx = self.buffer_of(op.indices, op)
        if idx.dtype != np.int64:
            raise self.error(f"quant3p5.gather: indices must be i64, got {idx.dtype}")
        out = self.result(op.result, "qgather")
        self.steps.append(Step("qgather_f32", [out], [wbuf, idx], {
            "count": idx.size, "k": w.shape[0], "n": w.shape[1]}, op.name))

    @lower.register
    def _(self, op: quant3p5.QuantizeActivationsOp) -> None:
        x = self.buffer_of(op.input, op)
        q = self.result(op.quantized, "q")
        s = self.result(op.scale, "qscale")
        self.steps.append(Step("quantize_activations", [q, s], [x], {
            "rows": x.size // x.shape[-1], "k": x.shape[-1]}, op.name))

    @lower.register
    def _(self, op: quant3p5.MatmulInt8Op) -> None:
        if op.rescale_rows is not None:
            raise self.error(f"{op.name}: the integer rescale contract (rescale_rows, "
                             "int8-activations{int-rescale=N}) is implemented by the "
                             "interpreter and the groq target only")
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

    # -- fused ops (passes/fuse_*.py): one step each, no intermediate tensor ------------

    @lower.register
    def _(self, op: quant3p5.FusedMatmulOp) -> None:
        """The quantized float-path matmul, then bias, activation and residual applied in
        one pass over its output (kernel `fused_matmul_f32` / `pair_fused_matmul_f32`)."""
        x = self.buffer_of(op.lhs, op)
        wbuf, w = self.packed_operand(op, op.weights)
        rows = x.size // w.shape[0]
        bias = None if op.bias is None else self.buffer_of(op.bias, op)
        residual = None if op.residual is None else self.buffer_of(op.residual, op)
        ins = [x, wbuf, *(b for b in (bias, residual) if b is not None)]
        out = self.result(op.result, "fused_matmul")
        params = {"rows": rows, "k": w.shape[0], "n": w.shape[1],
                  "activation": op.activation.data, "bias": bias is not None,
                  "residual": residual is not None}
        if isinstance(w, LegacyPairTensor):
            self.steps.append(Step("pair_fused_matmul_f32", [out], ins, params, op.name))
            return
        work = self.new("arena", np.dtype(np.uint8), (work_bytes(rows, w, int8=False),), "work")
        self.steps.append(Step("fused_matmul_f32", [out, work], ins, params, op.name))

    @lower.register
    def _(self, op: q35nn.SwigluOp) -> None:
        gate, up = self.buffer_of(op.gate, op), self.buffer_of(op.up, op)
        out = self.result(op.result, "swiglu")
        self.steps.append(Step("swiglu", [out], [gate, up], {}, op.name))

    @lower.register
    def _(self, op: q35nn.AttentionOp) -> None:
        """Scores, scale, mask, softmax and the V product per query row, in a scratch row
        of Sk floats and Dv doubles (kernel `attention`): the [.., Sq, Sk] score tensor
        never exists."""
        q, k, v = (self.buffer_of(x, op) for x in (op.query, op.key, op.values))
        mask = None if op.mask is None else self.buffer_of(op.mask, op)
        out = self.result(op.result, "attention")
        batch, (sq, d), (sk, dv) = q.shape[:-2], q.shape[-2:], v.shape[-2:]
        scratch = self.new("arena", np.dtype(np.uint8), (-(-sk * 4 // 8) * 8 + dv * 8,), "work")
        params = {"batches": int(np.prod(batch, dtype=np.int64)), "sq": sq, "sk": sk, "d": d,
                  "dv": dv, "scale": float(op.scale.value.data), "mask": mask is not None}
        if mask is not None:
            params.update(mask_strides((*batch, sq, sk), mask.shape))
        self.steps.append(Step("attention", [out, scratch],
                               [q, k, v, *([mask] if mask is not None else [])], params,
                               op.name))


def mask_strides(scores: tuple[int, ...], mask: tuple[int, ...]) -> dict:
    """Where element [b..., i, j] of a mask broadcast (numpy rules) to `scores` lives: the
    element offset of every flattened batch index `mask_off`, plus i * `mask_row` +
    j * `mask_col`."""
    shape = (1,) * (len(scores) - len(mask)) + tuple(mask)
    st = [0 if n == 1 else s for n, s in zip(shape, strides(shape))]
    batch = scores[:-2]
    offsets = [sum(i * s for i, s in zip(index, st)) for index in np.ndindex(*batch)]
    return {"mask_off": offsets, "mask_row": st[-2], "mask_col": st[-1]}


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


def lowered_ops() -> frozenset[str]:
    """Names of the ops `Lowering` lowers by itself: the elementwise ops, the ops with a
    `lower` rule of their own (the fused ops included) and func.return. The generic ONNX op
    is not among them: its rules are per op type (onnx_node.py), and each printer renders
    the kernels of their steps (the C target's: targets/c/kernels.py)."""
    rules = Lowering.__dict__["lower"].dispatcher.registry
    return frozenset({"func.return"} | {t.name for t in ELEMENTWISE} | {
        t.name for t in rules if isinstance(t, type) and issubclass(t, Operation)
        and t not in (Operation, q35nn.OnnxNodeOp)})


def lower_module(module: ModuleOp, store: WeightStore, entry: str | None, name: str,
                 target: str = "c") -> Program:
    """The `Program` for the entry function of `module`; storage is planned separately.
    `target` names the target in error messages."""
    return Lowering(module, store, entry, name, target).run()
