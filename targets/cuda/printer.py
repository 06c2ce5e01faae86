"""The CUDA printer: renders a planned `Program` as model.cuh, model.cu, main.cu, Makefile.

The same program the C printer renders (targets/native), one kernel launch (or async copy
or memset) per step on the model's stream; `render_<kernel>` returns the host statements
of a step, and elementwise steps get a kernel of their own (`elementwise_kernels`). GPU
memory is one blob (the weights, uploaded once at load) and one region holding the arena
and then the inputs and outputs, so every tensor is a constant offset from one of two
base pointers. The launches of a run are captured once in a CUDA graph and replayed.

Names from the model reach the files only through `q35c.compiler.codegen_names`, as in
the C printer (docs/security.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from q35c.compiler.codegen_names import c_comment, c_identifiers, c_string
from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.quant import CODEBOOK, LEGACY_LEVELS, SCALE_STEPS
from q35c.targets.c.printer import (
    ACTIVATIONS,
    ANY_EXPR,
    BLOB_HEADER,
    BLOB_MAGIC,
    C_TYPES,
    DTYPE_CODES,
    FLOAT_EXPR,
    LIBM,
    REDUCE_OPS,
    _float_literal,
    _int_array,
    blob_checksum,
    io_file_stems,
    model_prefix,
)
from q35c.targets.cuda import onnx
from q35c.targets.cuda.blob import Q3P5Layout
from q35c.targets.native.program import Buffer, Program, Step

RUNTIME_DIR = Path(__file__).parent / "runtime"
GEMV_TILE = 32  # columns of a GEMV block (blob.TILE: one per lane)
GEMV_MAX_ROWS = 8  # Q35_GEMV_MAX_ROWS: rows of a q35_gemv_f32 / q35_gemv_i8 launch
GEMV_MMA_ROWS = 9
"""int8 steps of at least this many rows take q35_gemv_i8_mma (tensor cores), up to
MMA_MAX_ROWS rows a launch; fewer rows take q35_gemv_i8 (dp4a). Measured on an H100
(docs/benchmarks.md, fifth run): at 16 rows faster than two 8-row dp4a launches on all
five goal shapes, at 8 rows on 3 of 5 only."""
MMA_MAX_ROWS = 16
GEMV_MAX_KS = {"f32": 16, "i8": 16, "mma": 4}  # warps splitting K, by kernel
SIMPLE_THREADS = 128  # block size of the one-thread-per-column kernels
IO_ALIGN = 256


def ctype(buf: Buffer) -> str:
    return C_TYPES[buf.dtype]


FILL_WARPS = 2048
"""GEMV warps that keep every SM of an H100 (132 SMs) at about 16 warps."""


@dataclass(frozen=True)
class GemvLaunch:
    """One launch of a GEMV kernel: rows [row0, row0 + rows) of the activations; blocks of
    `ksplit` warps, each block 32 columns (a column per lane), its warps splitting K;
    `kernel` is "f32" (q35_gemv_f32), "i8" (q35_gemv_i8) or "mma" (q35_gemv_i8_mma)."""

    row0: int
    rows: int
    grid: int
    ksplit: int
    kernel: str = "f32"

    @property
    def block(self) -> int:
        return self.ksplit * 32


def gemv_max_ks(kernel: str, rows: int) -> int:
    """The largest K split of a kernel at `rows` rows (q35_gemv_i8: its round's terms,
    ks * rows <= 16, fit 16 KiB of shared memory)."""
    return min(GEMV_MAX_KS[kernel], 16 // rows) if kernel == "i8" else GEMV_MAX_KS[kernel]


def gemv_ksplit(k: int, n: int, rows: int, kernel: str) -> int:
    """Warps per GEMV block (1, 2, 4, 8 or 16, at most gemv_max_ks): doubled while the GPU
    would hold fewer than FILL_WARPS warps and every warp keeps at least two chunks of 256
    weights."""
    limit = gemv_max_ks(kernel, rows)
    tiles, chunks = -(-n // GEMV_TILE), -(-k // 256)
    ks = 1
    while 2 * ks <= limit and tiles * ks < FILL_WARPS and chunks >= 4 * ks:
        ks *= 2
    return ks


def gemv_kernel(rows: int, int8: bool) -> str:
    """The GEMV kernel of a step of `rows` activation rows."""
    return "f32" if not int8 else "mma" if rows >= GEMV_MMA_ROWS else "i8"


def gemv_launches(rows: int, k: int, n: int, int8: bool = False) -> list[GemvLaunch]:
    """The launches of a GEMV over `rows` activation rows: up to 8 rows each (16 on the
    tensor-core kernel), one block per 32 columns."""
    grid = -(-n // GEMV_TILE)
    kernel = gemv_kernel(rows, int8)
    per = MMA_MAX_ROWS if kernel == "mma" else GEMV_MAX_ROWS
    launches = []
    for r in range(0, rows, per):
        m = min(per, rows - r)
        kern = kernel if kernel != "mma" or m >= GEMV_MMA_ROWS else "i8"
        launches.append(GemvLaunch(r, m, grid, gemv_ksplit(k, n, m, kern), kern))
    return launches


GEMM_BN = 128  # Q35_GEMM_BN: columns of a tensor-core GEMM block
GEMM_THREADS = 256  # Q35_GEMM_THREADS: 8 warps, 2 (rows) by 4 (columns)


@dataclass(frozen=True)
class GemmLaunch:
    """The launch of the tensor-core GEMM `q35_gemm_f16<mt>`: blocks of 32 * mt rows
    (grid x) by GEMM_BN columns (grid y), with sizeof(q35_gemm_smem<mt>) bytes of dynamic
    shared memory."""

    mt: int
    grid: tuple[int, int]
    block: int = GEMM_THREADS

    @property
    def rows(self) -> int:
        return 32 * self.mt


def gemm_launch(rows: int, n: int) -> GemmLaunch:
    """The tensor-core GEMM launch for `rows` activation rows (more than GEMV_MAX_ROWS):
    the smallest row tile of 32, 64 or 128 that holds them, else 128. The row blocks of
    one column block are consecutive blocks (grid x), so they run together and the
    weights come from DRAM about once."""
    mt = next((m for m in (1, 2) if rows <= 32 * m), 4)
    return GemmLaunch(mt, (-(-rows // (32 * mt)), -(-n // GEMM_BN)))


def uses_gemv(lay: Q3P5Layout) -> bool:
    """Whether the fast GEMV kernels handle this tensor (else the portable kernels)."""
    return lay.tiled


def io_offsets(program: Program) -> tuple[dict[int, int], int]:
    """Offsets of the inputs and outputs in the device region after the arena, by buffer
    id, and the region's size."""
    at = -(-program.arena_bytes // IO_ALIGN) * IO_ALIGN
    offsets = {}
    for _, buf in program.inputs + program.outputs:
        offsets[id(buf)] = at
        at += -(-max(buf.nbytes, 1) // IO_ALIGN) * IO_ALIGN
    return offsets, max(at, IO_ALIGN)


class CudaPrinter:
    def __init__(self, program: Program, blob: bytes, layouts: dict[int, Q3P5Layout]):
        self.p = program
        self.prefix = model_prefix(program.name)
        self.blob = blob
        self.layouts = layouts
        self.io, self.region_bytes = io_offsets(program)
        self.tables: list[tuple[str, list[int]]] = []  # device int64 arrays: name, values
        self.gemm_tiles: set[int] = set()  # the q35_gemm_f16<mt> the launcher uses
        self.uses_gather = any(s.kernel in ("gather", "onnx_index") for s in program.steps)

    # -- buffers --------------------------------------------------------------------------

    def ptr(self, buf: Buffer) -> str:
        """A device pointer expression for `buf`'s first element (in the launcher)."""
        root = buf.root
        t = ctype(buf)
        if root.kind == "weight":
            return f"(({t} *)(W + {root.offset}))"
        offset = self.io[id(root)] if root.kind in ("input", "output") else root.offset
        return f"(({t} *)(A + {offset}))"

    def table(self, index: int, suffix: str, values) -> str:
        """A device int64 array for step `index`; the launcher's pointer to it."""
        name = f"q35_s{index}_{suffix}"
        self.tables.append((name, [int(v) for v in values]))
        return f"m->tables[{len(self.tables) - 1}]"

    def q3p5(self, w: Buffer) -> str:
        lay = self.layouts[id(w)]
        return (f"q35_view(W + {w.offset}, {lay.k}, {lay.n}, {lay.group}, {lay.meta_row}, "
                f"{lay.prow}, {lay.meta_off}, {lay.payload_off})")

    # -- steps ----------------------------------------------------------------------------

    def render(self, index: int, step: Step) -> str:
        method = getattr(self, f"render_{step.kernel}", None)
        if method is None:
            raise Q35cError(f"cuda target: no CUDA kernel for step '{step.kernel}' "
                            f"({step.origin})")
        return method(index, step)

    @staticmethod
    def grid(count: int) -> str:
        return f"q35_grid({count}), Q35_THREADS, 0, s"

    def elementwise_expr(self, step: Step) -> str:
        out = step.outs[0]
        op = step.params["op"]
        if op in LIBM:
            arity = 2 if op == "pow" else 1
            expr = f"{LIBM[op]}(" + ", ".join(f"(double){{{i}}}" for i in range(arity)) + ")"
        elif op in FLOAT_EXPR:
            expr = FLOAT_EXPR[op]
            if ctype(out) == "double":
                expr = re.sub(r"(sqrt|fabs)f\(", r"\1(", expr).replace("1.0f", "1.0")
        else:
            expr = ANY_EXPR[op]
        args = [f"in{i}[{'i' if b.size == out.size else '0'}]" for i, b in enumerate(step.ins)]
        return expr.format(*args, T=ctype(out))

    def elementwise_kernel(self, index: int, step: Step) -> str:
        out = step.outs[0]
        params = [f"{ctype(out)} *out"] + [f"const {ctype(b)} *in{i}"
                                          for i, b in enumerate(step.ins)]
        return (f"/* {index}: {c_comment(step.origin)} */\n"
                f"__global__ void q35_step{index}({', '.join(params)})\n"
                "{\n"
                f"    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; "
                f"i < {out.size}; i += (int64_t)gridDim.x * blockDim.x)\n"
                f"        out[i] = ({ctype(out)})({self.elementwise_expr(step)});\n"
                "}\n")

    def render_elementwise(self, index: int, step: Step) -> str:
        args = ", ".join(self.ptr(b) for b in [*step.outs, *step.ins])
        return f"q35_step{index}<<<{self.grid(step.outs[0].size)}>>>({args});"

    def render_copy(self, index: int, step: Step) -> str:
        out, src = step.outs[0], step.ins[0]
        return (f"q35_check(cudaMemcpyAsync({self.ptr(out)}, {self.ptr(src)}, {out.nbytes}, "
                "cudaMemcpyDeviceToDevice, s));")

    def render_zero(self, index: int, step: Step) -> str:
        out = step.outs[0]
        return f"q35_check(cudaMemsetAsync({self.ptr(out)}, 0, {out.nbytes}, s));"

    def render_fill(self, index: int, step: Step) -> str:
        out = step.outs[0]
        v = step.params["value"]
        lit = (_float_literal(v, ctype(out)) if ctype(out) in ("float", "double")
               else f"({ctype(out)}){int(v)}")
        return (f"q35_fill<{ctype(out)}><<<{self.grid(out.size)}>>>({self.ptr(out)}, "
                f"({ctype(out)}){lit}, {out.size});")

    def render_copy_strided(self, index: int, step: Step) -> str:
        out, src = step.outs[0], step.ins[0]
        q = step.params
        rank = len(q["dims"])
        count = int(np.prod(q["dims"], dtype=np.int64)) if rank else 1
        dims = list(q["dims"]) or [1]
        dst, srcs = list(q["dst_strides"]) or [0], list(q["src_strides"]) or [0]
        if len(dims) > 8:
            raise Q35cError(f"cuda target: {step.origin}: copies of rank {rank} > 8 are not "
                            "supported")
        pad = [0] * (8 - len(dims))
        return (f"{{ const q35_strides st = {{{len(dims)}, {_int_array(dims + pad)}, "
                f"{_int_array(dst + pad)}, {_int_array(srcs + pad)}}};\n"
                f"  q35_copy_strided<{ctype(out)}><<<{self.grid(count)}>>>({self.ptr(out)}, "
                f"{self.ptr(src)}, {count}, {q['dst_off']}, {q['src_off']}, st); }}")

    def render_reduce(self, index: int, step: Step) -> str:
        out, (src, acc) = step.outs[0], step.ins
        q = step.params
        return (f"q35_reduce_f32<<<{self.grid(q['outer'] * q['inner'])}>>>({self.ptr(out)}, "
                f"{self.ptr(src)}, {self.ptr(acc)}, {REDUCE_OPS[q['op']]}, {q['outer']}, "
                f"{q['red']}, {q['inner']});")

    def render_matmul(self, index: int, step: Step) -> str:
        out, (a, b, acc) = step.outs[0], step.ins
        q = step.params
        return (f"q35_matmul_f32<<<{self.grid(q['m'] * q['n'])}>>>({self.ptr(out)}, "
                f"{self.ptr(a)}, {self.ptr(b)}, {self.ptr(acc)}, {q['m']}, {q['k']}, "
                f"{q['n']});")

    def render_batch_matmul(self, index: int, step: Step) -> str:
        out, (a, b) = step.outs[0], step.ins
        q = step.params
        batches = len(q["a_off"])
        a_off = self.table(index, "a_off", q["a_off"])
        b_off = self.table(index, "b_off", q["b_off"])
        return (f"q35_batch_matmul_f32<<<{self.grid(batches * q['m'] * q['n'])}>>>("
                f"{self.ptr(out)}, {self.ptr(a)}, {self.ptr(b)}, {batches}, {a_off}, {b_off}, "
                f"{q['m']}, {q['k']}, {q['n']});")

    def render_softmax(self, index: int, step: Step) -> str:
        q = step.params
        return (f"q35_softmax_f32<<<{self.grid(q['outer'] * q['inner'])}>>>("
                f"{self.ptr(step.outs[0])}, {self.ptr(step.ins[0])}, {q['outer']}, {q['len']}, "
                f"{q['inner']});")

    def render_layer_norm(self, index: int, step: Step) -> str:
        x, g, b = step.ins
        q = step.params
        return (f"q35_layer_norm_f32<<<{q['rows']}, Q35_THREADS, 0, s>>>("
                f"{self.ptr(step.outs[0])}, {self.ptr(x)}, {self.ptr(g)}, {self.ptr(b)}, "
                f"{q['len']}, {q['eps']!r});")

    def render_rms_norm(self, index: int, step: Step) -> str:
        x, g = step.ins
        q = step.params
        return (f"q35_rms_norm_f32<<<{q['rows']}, Q35_THREADS, 0, s>>>("
                f"{self.ptr(step.outs[0])}, {self.ptr(x)}, {self.ptr(g)}, {q['len']}, "
                f"{q['eps']!r});")

    def render_silu(self, index: int, step: Step) -> str:
        n = step.outs[0].size
        return (f"q35_silu_f32<<<{self.grid(n)}>>>({self.ptr(step.outs[0])}, "
                f"{self.ptr(step.ins[0])}, {n});")

    def render_gelu(self, index: int, step: Step) -> str:
        n = step.outs[0].size
        return (f"q35_gelu_f32<<<{self.grid(n)}>>>({self.ptr(step.outs[0])}, "
                f"{self.ptr(step.ins[0])}, {n}, {int(step.params['tanh'])});")

    def render_swiglu(self, index: int, step: Step) -> str:
        gate, up = step.ins
        n = step.outs[0].size
        return (f"q35_swiglu_f32<<<{self.grid(n)}>>>({self.ptr(step.outs[0])}, "
                f"{self.ptr(gate)}, {self.ptr(up)}, {n});")

    def render_gather(self, index: int, step: Step) -> str:
        data, idx = step.ins
        out = step.outs[0]
        q = step.params
        return (f"q35_gather<{ctype(out)}><<<{self.grid(out.size)}>>>({self.ptr(out)}, "
                f"{self.ptr(data)}, {self.ptr(idx)}, {q['count']}, {q['outer']}, {q['size']}, "
                f"{q['inner']}, m->bad + {index});")

    def render_onnx_map(self, index: int, step: Step) -> str:
        return onnx.render_map(self, index, step)

    def render_onnx_index(self, index: int, step: Step) -> str:
        return onnx.render_index(self, index, step)

    def render_attention(self, index: int, step: Step) -> str:
        out = step.outs[0]
        q, k, v, *mask = step.ins
        p = step.params
        mask_args = "NULL, NULL, 0, 0"
        if mask:
            off = self.table(index, "mask_off", p["mask_off"])
            mask_args = f"{self.ptr(mask[0])}, {off}, {p['mask_row']}, {p['mask_col']}"
        return (f"q35_attention_f32<<<{p['batches'] * p['sq']}, 128, {p['sk'] * 4}, s>>>("
                f"{self.ptr(out)}, {self.ptr(q)}, {self.ptr(k)}, {self.ptr(v)}, {p['sq']}, "
                f"{p['sk']}, {p['d']}, {p['dv']}, {_float_literal(p['scale'], 'float')}, "
                f"{mask_args});")

    def render_quantize_activations(self, index: int, step: Step) -> str:
        q, s = step.outs
        return (f"q35_quantize_activations<<<{step.params['rows']}, Q35_THREADS, 0, s>>>("
                f"{self.ptr(q)}, {self.ptr(s)}, {self.ptr(step.ins[0])}, {step.params['k']});")

    def _epilogue(self, bias: Buffer | None, residual: Buffer | None, act: str,
                  row_shift: int = 0) -> str:
        """The `q35_epi(...)` of a quantized matmul; `row_shift` elements into the residual
        for a launch that starts at a later row."""
        b = self.ptr(bias) if bias is not None else "NULL"
        r = "NULL" if residual is None else (
            self.ptr(residual) + (f" + {row_shift}" if row_shift else ""))
        return f"q35_epi({b}, {r}, {ACTIVATIONS[act]})"

    def _qmatmul(self, step: Step, x: Buffer, w: Buffer, bias: Buffer | None = None,
                 residual: Buffer | None = None, act: str = "none") -> str:
        lay = self.layouts[id(w)]
        rows = step.params["rows"]
        out = step.outs[0]
        if not uses_gemv(lay):
            grid = -(-lay.n // SIMPLE_THREADS)
            return (f"q35_qmatmul_f32_simple<<<{grid}, {SIMPLE_THREADS}, 0, s>>>("
                    f"{self.ptr(out)}, {self.ptr(x)}, {rows}, {self.q3p5(w)}, "
                    f"{self._epilogue(bias, residual, act)});")
        gemv = "\n".join(
            f"q35_gemv_f32<{launch.rows}, {launch.ksplit}><<<{launch.grid}, {launch.block}, "
            "0, s>>>("
            f"{self.ptr(out)} + {launch.row0 * lay.n}, {self.ptr(x)} + {launch.row0 * lay.k}, "
            f"{self.q3p5(w)}, {self._epilogue(bias, residual, act, launch.row0 * lay.n)});"
            for launch in gemv_launches(rows, lay.k, lay.n, False))
        if rows <= GEMV_MAX_ROWS:
            return gemv
        gemm = gemm_launch(rows, lay.n)
        self.gemm_tiles.add(gemm.mt)
        return "\n".join((
            "#if Q35_TENSOR_CORES",
            f"q35_gemm_f16<{gemm.mt}><<<dim3({gemm.grid[0]}, {gemm.grid[1]}), {gemm.block}, "
            f"sizeof(q35_gemm_smem<{gemm.mt}>), s>>>({self.ptr(out)}, {self.ptr(x)}, {rows}, "
            f"{self.q3p5(w)}, "
            f"{self._epilogue(bias, residual, act)});",
            "#else", gemv, "#endif"))

    def render_qmatmul_f32(self, index: int, step: Step) -> str:
        x, w = step.ins
        return self._qmatmul(step, x, w)

    def render_fused_matmul_f32(self, index: int, step: Step) -> str:
        x, w, *rest = step.ins
        q = step.params
        it = iter(rest)
        bias = next(it) if q["bias"] else None
        residual = next(it) if q["residual"] else None
        return self._qmatmul(step, x, w, bias, residual, q["activation"])

    def render_qmatmul_i8(self, index: int, step: Step) -> str:
        q, s, w = step.ins
        lay = self.layouts[id(w)]
        rows = step.params["rows"]
        out = step.outs[0]
        if not uses_gemv(lay):
            grid = -(-lay.n // SIMPLE_THREADS)
            return (f"q35_qmatmul_i8_simple<<<{grid}, {SIMPLE_THREADS}, 0, s>>>("
                    f"{self.ptr(out)}, {self.ptr(q)}, {self.ptr(s)}, {rows}, {self.q3p5(w)});")
        return "\n".join(self._i8_launch(launch, out, q, s, w, lay)
                         for launch in gemv_launches(rows, lay.k, lay.n, True))

    def _i8_launch(self, launch: GemvLaunch, out: Buffer, q: Buffer, s: Buffer, w: Buffer,
                   lay: Q3P5Layout) -> str:
        args = (f"{self.ptr(out)} + {launch.row0 * lay.n}, {self.ptr(q)} + {launch.row0 * lay.k}, "
                f"{self.ptr(s)} + {launch.row0}")
        if launch.kernel == "mma":
            return (f"q35_gemv_i8_mma<{launch.ksplit}, {'true' if launch.rows > 8 else 'false'}>"
                    f"<<<{launch.grid}, {launch.block}, 0, s>>>({args}, {launch.rows}, "
                    f"{self.q3p5(w)});")
        return (f"q35_gemv_i8<{launch.rows}, {launch.ksplit}><<<{launch.grid}, {launch.block}, "
                f"0, s>>>({args}, {self.q3p5(w)});")

    def _pair(self, step: Step, x: Buffer, w: Buffer, epilogue: str) -> str:
        """The legacy pair43 matmul (one thread per column), with `epilogue`."""
        q = step.params
        return (f"q35_pair_matmul_f32<<<{-(-q['n'] // SIMPLE_THREADS)}, {SIMPLE_THREADS}, 0, s>>>("
                f"{self.ptr(step.outs[0])}, {self.ptr(x)}, {q['rows']}, {q['k']}, {q['n']}, "
                f"W + {w.offset}, {epilogue});")

    def render_pair_matmul_f32(self, index: int, step: Step) -> str:
        x, w = step.ins
        return self._pair(step, x, w, self._epilogue(None, None, "none"))

    def render_pair_fused_matmul_f32(self, index: int, step: Step) -> str:
        x, w, *rest = step.ins
        q = step.params
        it = iter(rest)
        bias = next(it) if q["bias"] else None
        residual = next(it) if q["residual"] else None
        return self._pair(step, x, w, self._epilogue(bias, residual, q["activation"]))

    def render_pair_matmul_i8(self, index: int, step: Step) -> str:
        qa, s, w = step.ins
        q = step.params
        return (f"q35_pair_matmul_i8<<<{-(-q['n'] // SIMPLE_THREADS)}, {SIMPLE_THREADS}, 0, s>>>("
                f"{self.ptr(step.outs[0])}, {self.ptr(qa)}, {self.ptr(s)}, {q['rows']}, "
                f"{q['k']}, {q['n']}, W + {w.offset});")

    # -- files ----------------------------------------------------------------------------

    def io_params(self) -> str:
        idents = (c_identifiers([n for n, _ in self.p.inputs], "in_")
                  + c_identifiers([n for n, _ in self.p.outputs], "out_"))
        bufs = self.p.inputs + self.p.outputs
        return ", ".join(
            f"{'const ' if i < len(self.p.inputs) else ''}{ctype(b)} *{ident}"
            for i, ((_, b), ident) in enumerate(zip(bufs, idents)))

    def header(self) -> str:
        P, M = self.prefix, self.prefix.upper()
        lines = [
            f"/* {P}: generated by q35c (target cuda) from '{c_comment(self.p.name)}'. "
            "Do not edit.",
            " *",
            " * Usage (host code; compile with nvcc, or link model.o with a C++ compiler):",
            f" *     {P}_model *m = {P}_load(\"model.bin\");   (NULL on failure: {P}_error())",
            f" *     {P}_run(m, inputs..., outputs...);         (0 on success)",
            f" *     {P}_free(m);",
            " *",
            " * Inputs and outputs are host arrays (dense, row-major, in the element types",
            f" * below); {P}_run copies them to and from the GPU. The weights are uploaded once",
            f" * by {P}_load and stay packed on the GPU (Q3P5: 3.5-bit codes plus metadata).",
            f" * {P}_run_device runs on the device copies of the inputs and outputs",
            f" * ({P}_device_input/_output) without any host transfer. The kernel launches of a",
            " * run are captured in a CUDA graph on the first run and replayed (environment",
            " * variable Q35_CUDA_GRAPH=0: plain launches). One thread at a time per model.",
            " */",
            f"#ifndef {M}_MODEL_CUH",
            f"#define {M}_MODEL_CUH",
            "",
            "#include <stdint.h>",
            "",
            "#ifdef __cplusplus",
            'extern "C" {',
            "#endif",
            "",
            f"#define {M}_ARENA_BYTES {self.p.arena_bytes}",
            f"#define {M}_DEVICE_BYTES {self.region_bytes}",
            f"#define {M}_WEIGHT_BYTES {len(self.blob)}",
            f"#define {M}_NUM_INPUTS {len(self.p.inputs)}",
            f"#define {M}_NUM_OUTPUTS {len(self.p.outputs)}",
            "",
        ]
        for kind, tensors in (("input", self.p.inputs), ("output", self.p.outputs)):
            for i, (name, b) in enumerate(tensors):
                shape = "x".join(map(str, b.shape)) or "scalar"
                lines.append(f"/* {kind} {i} '{c_comment(name)}': {ctype(b)}[{shape}] */")
                lines.append(f"#define {M}_{kind.upper()}_{i}_SIZE {b.size}")
        lines += [
            "",
            "/* Description of one input or output, for generic callers such as main.cu. */",
            "typedef struct {",
            "    const char *name;",
            "    int dtype;          /* 1 float, 2 double, 3 int64, 4 int32, 5 int16, 6 int8, "
            "7 bool/uint8 */",
            "    int elem_size;      /* bytes per element */",
            "    int rank;",
            "    const int64_t *shape;",
            "    int64_t size;       /* elements */",
            f"}} {P}_tensor_info;",
            "",
            f"extern const {P}_tensor_info {P}_inputs[];",
            f"extern const {P}_tensor_info {P}_outputs[];",
            "",
            f"typedef struct {P}_model {P}_model;",
            "",
            "/* Read the weight blob, upload it, allocate the device arena. NULL on failure. */",
            f"{P}_model *{P}_load(const char *weights_path);",
            "",
            "/* Run once on host arrays. Returns 0, or -1 with the reason in error(). */",
            f"int {P}_run({P}_model *model, {self.io_params()});",
            "",
            "/* The same, with inputs and outputs as arrays in the order of inputs[]/outputs[]. */",
            f"int {P}_run_tensors({P}_model *model, const void *const *inputs, "
            "void *const *outputs);",
            "",
            "/* Run on the device copies of the inputs and outputs (no host transfer); waits",
            " * for the GPU. Returns 0 or -1. */",
            f"int {P}_run_device({P}_model *model);",
            "",
            "/* Device pointers of input / output i (valid until free). */",
            f"void *{P}_device_input({P}_model *model, int i);",
            f"void *{P}_device_output({P}_model *model, int i);",
            "",
            f"void {P}_free({P}_model *model);",
            "",
            "/* The reason of the last failure (static storage). */",
            f"const char *{P}_error(void);",
            "",
            "#ifdef __cplusplus",
            "}",
            "#endif",
            "",
            f"#endif /* {M}_MODEL_CUH */",
            "",
        ]
        return "\n".join(lines)

    def runtime(self) -> str:
        """q35cu.cuh with its tables filled in, and the generic ONNX op's device helpers
        (q35cu_onnx.cuh) when a step needs them."""
        text = (RUNTIME_DIR / "q35cu.cuh").read_text()
        if any(s.kernel in onnx.KERNELS for s in self.p.steps):
            text += "\n" + (RUNTIME_DIR / onnx.RUNTIME).read_text()
        rows = ",\n".join("    " + ", ".join(f"{{{a}, {b}}}" for a, b in CODEBOOK[i:i + 8])
                          for i in range(0, 128, 8))
        steps = SCALE_STEPS.view(np.uint32)
        bits = ",\n".join("    " + ", ".join(f"0x{int(v):08x}u" for v in steps[i:i + 8])
                          for i in range(0, 32, 8))
        legacy = ",\n".join("    " + ", ".join(f"{{{a}, {b}}}" for a, b in LEGACY_LEVELS[i:i + 8])
                           for i in range(0, 128, 8))
        return (text.replace("Q35_CODEBOOK_ROWS", rows).replace("Q35_SCALE_STEP_BITS", bits)
                .replace("Q35_LEGACY_LEVEL_ROWS", legacy))

    def launcher(self) -> list[str]:
        out = [f"static void {self.prefix}_launch({self.prefix}_model *m, cudaStream_t s)",
               "{",
               "    const uint8_t *W = m->blob;",
               "    uint8_t *A = m->region;",
               "    (void)W;",
               "    (void)A;"]
        for index, step in enumerate(self.p.steps):
            out.append(f"    {{ /* {index}: {c_comment(step.origin)} -> {step.kernel} */")
            out.append("        " + self.render(index, step).replace("\n", "\n        "))
            out.append("    }")
        out += ["}", ""]
        return out

    def source(self) -> str:
        P = self.prefix
        launcher = self.launcher()  # first: it collects the tables
        kernels = [self.elementwise_kernel(i, s) if s.kernel == "elementwise"
                   else onnx.map_kernel(i, s) for i, s in enumerate(self.p.steps)
                   if s.kernel in ("elementwise", "onnx_map")]
        tables = [f"__device__ const int64_t {name}[] = {_int_array(values)};"
                  for name, values in self.tables]
        n_tables = max(1, len(self.tables))
        steps = max(1, len(self.p.steps))
        out = [
            f"/* {P}: generated by q35c (target cuda) from '{c_comment(self.p.name)}'. "
            "Do not edit. Build with -fmad=false (runtime comment). */",
            '#include "model.cuh"',
            "",
            "#include <stdio.h>",
            "#include <stdlib.h>",
            "#include <string.h>",
            "",
            self.runtime(),
            "",
            f"static const char *{P}_error_text = \"\";",
            f"const char *{P}_error(void) {{ return {P}_error_text; }}",
            f"static int {P}_fail(const char *why) {{ {P}_error_text = why; return -1; }}",
            "",
            "/* The last CUDA error of a launch sequence (checked after the run). */",
            "static cudaError_t q35_status = cudaSuccess;",
            "static void q35_check(cudaError_t e)",
            "{",
            "    if (e != cudaSuccess && q35_status == cudaSuccess)",
            "        q35_status = e;",
            "}",
            "",
            "[[maybe_unused]] static q35_q3p5 q35_view(const uint8_t *entry, int k, int n, "
            "int group, "
            "int meta_row, int prow, int meta_off, int payload_off)",
            "{",
            "    q35_q3p5 t;",
            "    t.k = k;",
            "    t.n = n;",
            "    t.group = group;",
            "    t.groups = (k + group - 1) / group;",
            "    t.meta_row = meta_row;",
            "    t.prow = prow;",
            "    t.tiled = group == 32 && k % 16 == 0; /* blob.py's tiled layout */",
            "    t.super_scale = (const float *)(const void *)entry;",
            "    t.offset_base = t.super_scale + n;",
            "    t.offset_step = t.offset_base + n;",
            "    t.meta = entry + meta_off;",
            "    t.payload = entry + payload_off;",
            "    return t;",
            "}",
            "",
            "[[maybe_unused]] static q35_epilogue q35_epi(const float *bias, "
            "const float *residual, int act)",
            "{",
            "    q35_epilogue e;",
            "    e.bias = bias;",
            "    e.residual = residual;",
            "    e.act = act;",
            "    return e;",
            "}",
            "",
            *tables,
            "",
            *kernels,
        ]
        for kind, tensors in (("inputs", self.p.inputs), ("outputs", self.p.outputs)):
            for i, (_, b) in enumerate(tensors):
                out.append(f"static const int64_t {P}_{kind}_{i}_shape[] = "
                           f"{_int_array(b.shape or (1,))};")
            entries = [
                f"    {{{c_string(name)}, {DTYPE_CODES[ctype(b)]}, {b.dtype.itemsize}, "
                f"{len(b.shape)}, {P}_{kind}_{i}_shape, {b.size}}}"
                for i, (name, b) in enumerate(tensors)]
            out.append(f"const {P}_tensor_info {P}_{kind}[] = {{\n" + ",\n".join(
                entries or ["    {\"\", 0, 0, 0, 0, 0}"]) + "\n};")
        io_in = ", ".join(str(self.io[id(b)]) for _, b in self.p.inputs) or "0"
        io_out = ", ".join(str(self.io[id(b)]) for _, b in self.p.outputs) or "0"
        out += [
            f"static const int64_t {P}_input_offsets[] = {{{io_in}}};",
            f"static const int64_t {P}_output_offsets[] = {{{io_out}}};",
            "",
            f"struct {P}_model {{",
            "    uint8_t *blob;              /* device: the weights */",
            "    uint8_t *region;            /* device: arena, then inputs and outputs */",
            "    int *bad;                   /* device: a flag per step (gather indices) */",
            f"    const int64_t *tables[{n_tables}];  /* device: offset tables of steps */",
            "    cudaStream_t stream;",
            "    cudaGraphExec_t graph;",
            "    int use_graph;",
            "};",
            "",
            *launcher,
            f"void {P}_free({P}_model *m)",
            "{",
            "    if (!m)",
            "        return;",
            "    if (m->graph)",
            "        cudaGraphExecDestroy(m->graph);",
            "    if (m->stream)",
            "        cudaStreamDestroy(m->stream);",
            "    cudaFree(m->blob);",
            "    cudaFree(m->region);",
            "    cudaFree(m->bad);",
            "    free(m);",
            "}",
            "",
            f"static {P}_model *{P}_load_fail({P}_model *m, const char *why, FILE *f, "
            "uint8_t *host)",
            "{",
            "    if (f)",
            "        fclose(f);",
            "    free(host);",
            f"    {P}_free(m);",
            f"    {P}_fail(why);",
            "    return NULL;",
            "}",
            "",
            f"{P}_model *{P}_load(const char *weights_path)",
            "{",
            "    static const unsigned char magic[8] = "
            f"{{{', '.join(str(b) for b in BLOB_MAGIC)}}};",
            f"    const uint64_t want_size = {len(self.blob)}u, "
            f"want_sum = 0x{blob_checksum(self.blob[BLOB_HEADER:]):016x}u;",
            "    uint64_t sum = 0, i;",
            "    const char *graphs = getenv(\"Q35_CUDA_GRAPH\");",
            f"    {P}_model *m;",
            "    FILE *f;",
            "    long size;",
            "    uint8_t *host;",
            "    int devices = 0;",
            "    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)",
            f"        return {P}_load_fail(NULL, \"no CUDA GPU on this machine\", NULL, NULL);",
            "    f = fopen(weights_path, \"rb\");",
            "    if (!f)",
            f"        return {P}_load_fail(NULL, \"cannot open the weight blob\", NULL, NULL);",
            "    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || "
            "fseek(f, 0, SEEK_SET) != 0 ||",
            "        (uint64_t)size != want_size)",
            f"        return {P}_load_fail(NULL, \"the weight blob has the wrong size for this "
            "model\", f, NULL);",
            "    host = (uint8_t *)malloc((size_t)want_size);",
            f"    m = ({P}_model *)calloc(1, sizeof *m);",
            "    if (!host || !m)",
            f"        return {P}_load_fail(m, \"out of memory\", f, host);",
            "    if (fread(host, 1, (size_t)want_size, f) != (size_t)want_size)",
            f"        return {P}_load_fail(m, \"cannot read the weight blob\", f, host);",
            "    fclose(f);",
            "    f = NULL;",
            f"    for (i = 0; i < (want_size - {BLOB_HEADER}) / 4; i++) {{",
            "        uint32_t word;",
            f"        memcpy(&word, host + {BLOB_HEADER} + 4 * i, 4);",
            "        sum += (uint64_t)word * (2 * i + 1);",
            "    }",
            "    if (memcmp(host, magic, 8) != 0 || sum != want_sum)",
            f"        return {P}_load_fail(m, \"the weight blob does not belong to this model\", "
            "NULL, host);",
            "    if (cudaMalloc((void **)&m->blob, (size_t)want_size) != cudaSuccess ||",
            f"        cudaMalloc((void **)&m->region, {self.region_bytes}u) != cudaSuccess ||",
            f"        cudaMalloc((void **)&m->bad, {steps} * sizeof(int)) != cudaSuccess ||",
            "        cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking) != cudaSuccess)",
            f"        return {P}_load_fail(m, \"out of GPU memory\", NULL, host);",
            "    if (cudaMemcpy(m->blob, host, (size_t)want_size, cudaMemcpyHostToDevice) != "
            "cudaSuccess ||",
            f"        cudaMemset(m->region, 0, {self.region_bytes}u) != cudaSuccess ||",
            f"        cudaMemset(m->bad, 0, {steps} * sizeof(int)) != cudaSuccess)",
            f"        return {P}_load_fail(m, \"cannot upload the weights\", NULL, host);",
            "    free(host);",
        ]
        if self.gemm_tiles:  # the GEMM's dynamic shared memory, before any capture
            out += ["#if Q35_TENSOR_CORES",
                    "    if (" + " ||\n        ".join(
                        f"q35_gemm_setup<{mt}>() != cudaSuccess"
                        for mt in sorted(self.gemm_tiles)) + ")",
                    f"        return {P}_load_fail(m, \"cannot set up the tensor-core GEMM\", "
                    "NULL, NULL);",
                    "#endif"]
        for t, (name, _) in enumerate(self.tables):
            out += [f"    if (cudaGetSymbolAddress((void **)&m->tables[{t}], {name}) != "
                    "cudaSuccess)",
                    f"        return {P}_load_fail(m, \"cannot find a device table\", NULL, "
                    "NULL);"]
        out += [
            "    m->use_graph = !(graphs && strcmp(graphs, \"0\") == 0);",
            "    return m;",
            "}",
            "",
            f"void *{P}_device_input({P}_model *m, int i)",
            "{",
            f"    return i >= 0 && i < {len(self.p.inputs)} ? m->region + "
            f"{P}_input_offsets[i] : NULL;",
            "}",
            "",
            f"void *{P}_device_output({P}_model *m, int i)",
            "{",
            f"    return i >= 0 && i < {len(self.p.outputs)} ? m->region + "
            f"{P}_output_offsets[i] : NULL;",
            "}",
            "",
            "/* The launches on the model's stream: replayed from the graph (captured on the",
            " * first run) or launched one by one. */",
            f"static int {P}_enqueue({P}_model *m)",
            "{",
            "    q35_status = cudaSuccess;",
            "    if (!m->use_graph) {",
            f"        {P}_launch(m, m->stream);",
            "        q35_check(cudaGetLastError());",
            "        return q35_status == cudaSuccess ? 0 : "
            f"{P}_fail(cudaGetErrorString(q35_status));",
            "    }",
            "    if (!m->graph) {",
            "        cudaGraph_t graph;",
            "        if (cudaStreamBeginCapture(m->stream, cudaStreamCaptureModeThreadLocal) != "
            "cudaSuccess)",
            f"            return {P}_fail(\"cannot capture the CUDA graph\");",
            f"        {P}_launch(m, m->stream);",
            "        q35_check(cudaGetLastError());",
            "        q35_check(cudaStreamEndCapture(m->stream, &graph));",
            "        if (q35_status != cudaSuccess)",
            f"            return {P}_fail(cudaGetErrorString(q35_status));",
            "        q35_check(cudaGraphInstantiate(&m->graph, graph, 0));",
            "        cudaGraphDestroy(graph);",
            "        if (q35_status != cudaSuccess)",
            f"            return {P}_fail(cudaGetErrorString(q35_status));",
            "    }",
            "    if (cudaGraphLaunch(m->graph, m->stream) != cudaSuccess)",
            f"        return {P}_fail(\"cannot launch the CUDA graph\");",
            "    return 0;",
            "}",
            "",
            "/* Waits for the stream; a kernel failure or a bad gather index is an error. */",
            f"static int {P}_finish({P}_model *m)",
            "{",
            f"    int bad[{steps}];",
            "    int i;",
            "    cudaError_t e = cudaStreamSynchronize(m->stream);",
            "    if (e != cudaSuccess)",
            f"        return {P}_fail(cudaGetErrorString(e));",
        ]
        if self.uses_gather:
            out += [
                "    if (cudaMemcpy(bad, m->bad, sizeof bad, cudaMemcpyDeviceToHost) != "
                "cudaSuccess)",
                f"        return {P}_fail(\"cannot read the error flags\");",
                f"    for (i = 0; i < {steps}; i++)",
                "        if (bad[i]) {",
                "            cudaMemset(m->bad, 0, sizeof bad);",
                f"            return {P}_fail(\"a gather index is out of range\");",
                "        }",
            ]
        else:
            out += ["    (void)bad;", "    (void)i;"]
        out += [
            "    return 0;",
            "}",
            "",
            f"int {P}_run_device({P}_model *m)",
            "{",
            f"    if ({P}_enqueue(m) != 0)",
            "        return -1;",
            f"    return {P}_finish(m);",
            "}",
            "",
            f"int {P}_run_tensors({P}_model *m, const void *const *inputs, void *const *outputs)",
            "{",
            "    int i;",
            f"    for (i = 0; i < {len(self.p.inputs)}; i++)",
            f"        if (cudaMemcpyAsync(m->region + {P}_input_offsets[i], inputs[i],",
            f"                            (size_t)({P}_inputs[i].size * {P}_inputs[i].elem_size),",
            "                            cudaMemcpyHostToDevice, m->stream) != cudaSuccess)",
            f"            return {P}_fail(\"cannot copy an input to the GPU\");",
            f"    if ({P}_enqueue(m) != 0)",
            "        return -1;",
            f"    for (i = 0; i < {len(self.p.outputs)}; i++)",
            f"        if (cudaMemcpyAsync(outputs[i], m->region + {P}_output_offsets[i],",
            f"                            (size_t)({P}_outputs[i].size * "
            f"{P}_outputs[i].elem_size),",
            "                            cudaMemcpyDeviceToHost, m->stream) != cudaSuccess)",
            f"            return {P}_fail(\"cannot copy an output from the GPU\");",
            f"    return {P}_finish(m);",
            "}",
            "",
        ]
        n_in = len(self.p.inputs)
        out += [
            f"int {P}_run({P}_model *m, {self.io_params()})",
            "{",
            f"    const void *inputs[{max(1, n_in)}] = {{"
            + (", ".join(self._io_idents()[:n_in]) or "NULL") + "};",
            f"    void *const outputs[{max(1, len(self.p.outputs))}] = {{"
            + (", ".join(self._io_idents()[n_in:]) or "NULL") + "};",
            f"    return {P}_run_tensors(m, inputs, outputs);",
            "}",
            "",
        ]
        return "\n".join(out)

    def _io_idents(self) -> list[str]:
        return (c_identifiers([n for n, _ in self.p.inputs], "in_")
                + c_identifiers([n for n, _ in self.p.outputs], "out_"))

    def main(self) -> str:
        text = (RUNTIME_DIR / "main.cu").read_text()
        text = text.replace("q35_prefix", self.prefix).replace("Q35_PREFIX", self.prefix.upper())
        in_stems, out_stems = io_file_stems(self.p)
        tables = "\n".join(
            f"static const char *const {kind}_files[] = {{"
            + "".join(f"{c_string(stem)}, " for stem in stems) + "NULL};"
            for kind, stems in (("in", in_stems), ("out", out_stems)))
        return text.replace("Q35_FILE_STEMS", "/* File stems of the inputs and outputs. */\n"
                            + tables)

    def makefile(self) -> str:
        return (RUNTIME_DIR / "Makefile").read_text()
