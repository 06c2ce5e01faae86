"""CUDA kernels of the generic ONNX op's steps (targets/native/onnx_tensor.py): `onnx_map`
(every elementwise op type, numpy broadcasting) and `onnx_index`'s gathers (Gather,
GatherElements, GatherND).

An `onnx_map` step gets a kernel of its own, one thread per output element, whose body is
the C target's expression for the op type (targets/c/onnx_tensor.py `EXPRESSIONS`): the
device helpers it calls (runtime/q35cu_onnx.cuh) have the C runtime's names and results,
so both targets compute the same values. The gathers are templates of q35cu.cuh and
q35cu_onnx.cuh; an index out of range sets the step's error flag, which fails the run.
"""

from __future__ import annotations

import numpy as np

from q35c.compiler.codegen_names import c_comment
from q35c.targets.c.onnx_tensor import EXPRESSIONS, HALF, Ctx, _result_is_float, store
from q35c.targets.c.printer import _int_array, ctype
from q35c.targets.native.onnx_tensor import MAP_OPS
from q35c.targets.native.program import Buffer, Step

GATHERS = ("Gather", "GatherElements", "GatherND")
"""The `onnx_index` op types with a CUDA kernel (the scatters have none yet)."""

ONNX_OPS = (*MAP_OPS, *GATHERS)
"""The ONNX op types the CUDA target lowers through the generic ONNX op."""

RUNTIME = "q35cu_onnx.cuh"
KERNELS = ("onnx_map", "onnx_index")
"""The steps whose kernels need the helpers of `RUNTIME`."""


def accepted_keys() -> frozenset[str]:
    """The `ir_attrs.op_key`s of the generic ONNX ops the CUDA target lowers."""
    return frozenset(f'q35nn.onnx_node "{t}"' for t in ONNX_OPS)


def _prod(values) -> int:
    return int(np.prod(values, dtype=np.int64))


def _strides(shape) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def _load(buf: Buffer, n: int, index: str) -> str:
    value = f"in{n}[{index}]"
    half = HALF.get(str(buf.dtype))
    return f"{half[0]}({value})" if half else value


def map_kernel(index: int, step: Step) -> str:
    """The kernel `q35_step<index>` of an `onnx_map` step (launched by `render_map`)."""
    out, q = step.outs[0], step.params
    name = f"q35_step{index}"
    decls, args = [], []
    for n, (buf, st) in enumerate(zip(step.ins, q["strides"])):
        if buf.size == out.size and buf.shape == out.shape:
            at = "i"
        elif buf.size == 1:
            at = "0"
        else:
            decls.append(f"__device__ const int64_t {name}_st{n}[] = {_int_array(st)};")
            at = f"q35_bcast(i, {len(out.shape)}, {name}_dims, {name}_st{n})"
        args.append(_load(buf, n, at))
    if decls:
        decls.insert(0, f"__device__ const int64_t {name}_dims[] = {_int_array(out.shape)};")
    x = Ctx(args, [b.dtype for b in step.ins], q["attrs"], q["slots"], out.dtype)
    value = EXPRESSIONS[q["op"]](x)
    params = [f"{ctype(out)} *out"] + [f"const {ctype(b)} *in{n}"
                                      for n, b in enumerate(step.ins)]
    return (f"/* {index}: {c_comment(step.origin)} (ONNX {q['op']}) */\n"
            + "".join(d + "\n" for d in decls)
            + f"__global__ void {name}({', '.join(params)})\n"
            "{\n"
            f"    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; "
            f"i < {out.size}; i += (int64_t)gridDim.x * blockDim.x)\n"
            f"        out[i] = {store(out, value, _result_is_float(q['op'], x))};\n"
            "}\n")


def render_map(printer, index: int, step: Step) -> str:
    args = ", ".join(printer.ptr(b) for b in [*step.outs, *step.ins])
    return f"q35_step{index}<<<{printer.grid(step.outs[0].size)}>>>({args});"


def render_index(printer, index: int, step: Step) -> str:
    """A gather: one thread per output element (one kernel launch)."""
    from q35c.compiler.diagnostics import Q35cError

    out, q = step.outs[0], step.params
    data, idx = step.ins[:2]
    op, dshape, ishape = q["op"], q["data_shape"], q["index_shape"]
    T = ctype(out)
    head = f"<{T}><<<{printer.grid(out.size)}>>>({printer.ptr(out)}, {printer.ptr(data)}, " \
           f"{printer.ptr(idx)}, "
    bad = f"m->bad + {index}"
    if op == "Gather":
        axis = q["axis"]
        return (f"q35_gather{head}{idx.size}, {_prod(dshape[:axis])}, {dshape[axis]}, "
                f"{_prod(dshape[axis + 1:])}, {bad});")
    if op == "GatherElements":
        axis = q["axis"]
        idims = printer.table(index, "idims", ishape or [1])
        dst = printer.table(index, "dst", _strides(dshape) or [1])
        return (f"q35_gather_elements{head}{idx.size}, {len(ishape)}, {axis}, "
                f"{dshape[axis]}, {idims}, {dst}, {bad});")
    if op == "GatherND":
        b = q.get("batch_dims", 0)
        m = ishape[-1]
        dsizes = printer.table(index, "dsizes", dshape[b:b + m] or [1])
        dst = printer.table(index, "dst", _strides(dshape)[b:b + m] or [1])
        return (f"q35_gather_nd{head}{_prod(ishape[:-1])}, {m}, {_prod(dshape[b + m:])}, "
                f"{max(1, _prod(ishape[b:-1]))}, {_prod(dshape[b:])}, {dsizes}, {dst}, "
                f"{bad});")
    raise Q35cError(f"cuda target: {step.origin}: ONNX {op} has no CUDA kernel yet")
