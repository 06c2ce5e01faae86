"""The C printer: renders a planned `Program` as model.h, model.c, main.c and a Makefile.

One method per step kernel (`render_<kernel>`), or a renderer registered by a kernel family
(`kernels.py`); each returns the C statements for that step. Kernels with real work are
calls into the runtime (`runtime/q35rt.c`, copied into model.c with its tables filled in);
elementwise ops are printed as loops. Everything here is deterministic: the same program
gives byte-identical files.

Names from the model (inputs, outputs, the model's file stem) reach the files only through
`q35c.compiler.codegen_names` (`c_string`, `c_comment`, `c_identifiers`): a name can never
end a literal or comment and add code (docs/security.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import ml_dtypes
import numpy as np

from q35c.compiler.codegen_names import (
    c_comment,
    c_identifier,
    c_identifiers,
    c_string,
    file_stems,
)
from q35c.compiler.quant import CODEBOOK, LEGACY_LEVELS, SCALE_STEPS
from q35c.targets.c import kernels
from q35c.targets.native.program import Buffer, Program, Step, all_steps

RUNTIME_DIR = Path(__file__).parent / "runtime"
# The runtime's fragments, concatenated into model.c in this order (q35rt.h says why).
RUNTIME_FILES = ("q35rt.h", "q35rt_avx512.c", "q35rt_avx2.c", "q35rt_gemm.c", "q35rt.c")
BLOB_MAGIC = b"Q35CBLOB"
BLOB_HEADER = 64
C_TYPES = {
    np.dtype(np.float32): "float", np.dtype(np.float64): "double",
    np.dtype(np.int64): "int64_t", np.dtype(np.int32): "int32_t",
    np.dtype(np.int16): "int16_t", np.dtype(np.int8): "int8_t",
    np.dtype(np.bool_): "uint8_t", np.dtype(np.uint8): "uint8_t",
    np.dtype(np.uint16): "uint16_t", np.dtype(np.uint32): "uint32_t",
    np.dtype(np.uint64): "uint64_t",
    # stored as their bits; the generic ONNX ops' kernels convert them (onnx_tensor.py)
    np.dtype(np.float16): "uint16_t", np.dtype(ml_dtypes.bfloat16): "uint16_t",
    **{np.dtype(t): "uint8_t" for t in (
        ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz, ml_dtypes.float8_e5m2,
        ml_dtypes.float8_e5m2fnuz, ml_dtypes.float8_e8m0fnu, ml_dtypes.float4_e2m1fn,
        ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2, ml_dtypes.uint2)},
}
"""The C element type of each of the native program's element types."""
DTYPE_CODES = {"float": 1, "double": 2, "int64_t": 3, "int32_t": 4, "int16_t": 5,
               "int8_t": 6, "uint8_t": 7, "uint16_t": 8, "uint32_t": 9, "uint64_t": 10}


def ctype(buf: Buffer) -> str:
    """The C element type of `buf`."""
    return C_TYPES[buf.dtype]

FLOAT_EXPR = {
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}",
    "neg": "-{0}", "maxf": "q35_maxf({0}, {1})", "minf": "q35_minf({0}, {1})",
    "sqrt": "sqrtf({0})", "rsqrt": "1.0f / sqrtf({0})", "abs": "fabsf({0})",
}
# Transcendental functions: the C library's double-precision function, then one rounding
# to the result type, exactly as the interpreter defines them (it calls the same libm
# through Python's math module); `expf` and friends may differ in the last bit.
LIBM = {"exp": "exp", "log": "log", "tanh": "tanh", "sin": "sin", "cos": "cos",
        "pow": "pow", "erf": "erf"}
ANY_EXPR = {
    "cast": "({T}){0}", "fptosi": "({T}){0}", "select": "{0} ? {1} : {2}",
    "addi": "({T})((uint64_t){0} + (uint64_t){1})",
    "subi": "({T})((uint64_t){0} - (uint64_t){1})",
    "muli": "({T})((uint64_t){0} * (uint64_t){1})",
    # MIN / -1 overflows (undefined in C, a trap on x86): it wraps, as the interpreter's
    "divsi": "{1} == 0 ? ({T})0 : {1} == -1 ? ({T})(0u - (uint64_t){0}) : ({T})({0} / {1})",
    "cmp_eq": "{0} == {1}", "cmp_gt": "{0} > {1}", "cmp_ge": "{0} >= {1}",
    "cmp_lt": "{0} < {1}", "cmp_le": "{0} <= {1}", "cmp_ne": "{0} != {1}",
}
ACTIVATIONS = {"none": "Q35_ACT_NONE", "relu": "Q35_ACT_RELU", "gelu": "Q35_ACT_GELU",
               "gelu_tanh": "Q35_ACT_GELU_TANH", "silu": "Q35_ACT_SILU"}
FUSED_KERNELS = frozenset({"fused_matmul_f32", "pair_fused_matmul_f32", "swiglu", "attention"})
"""The steps whose kernels are in runtime/q35rt_fused.c, which model.c includes only when
the program has one (so the C of an unfused model stays as it was)."""
RUN_PART_STEPS = 64
"""Steps per function of a long run (CPrinter.run_function)."""
REDUCE_OPS = {"add": "Q35_RED_ADD", "mul": "Q35_RED_MUL", "max": "Q35_RED_MAX",
              "min": "Q35_RED_MIN"}


def model_prefix(stem: str) -> str:
    """The prefix of the API's identifiers (`<m>_load`, `<M>_ARENA_BYTES`): the file stem
    as a C identifier, kept out of the runtime's own `q35_` namespace."""
    ident = c_identifier(stem)
    return f"m_{ident}" if ident == "q35" or ident.startswith("q35_") else ident


def io_file_stems(program: Program) -> tuple[list[str], list[str]]:
    """File stems of the runner's .raw files for (inputs, outputs): `q35c run`'s stems
    (outputs first, so an input never takes an output's name)."""
    outs = [name for name, _ in program.outputs]
    stems = file_stems(outs + [name for name, _ in program.inputs])
    return stems[len(outs):], stems[:len(outs)]


def blob_checksum(data: bytes) -> int:
    """sum_i word_i * (2i + 1) mod 2^64 over the little-endian uint32 words of `data`.

    model.c recomputes it on load, so a blob from another model or a corrupted one is
    refused; it is a check, not a cryptographic hash, and is one multiply-add per word.
    """
    words = np.frombuffer(data, dtype="<u4").astype(np.uint64)
    odd = np.arange(len(words), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    with np.errstate(over="ignore"):
        return int(np.sum(words * odd, dtype=np.uint64))


def _float_literal(v: float, c_type: str) -> str:
    if c_type == "double":
        return repr(float(v)) if np.isfinite(v) else ("INFINITY" if v > 0 else "-INFINITY")
    f = np.float32(v)
    if np.isnan(f):
        return "NAN"
    if np.isinf(f):
        return "INFINITY" if f > 0 else "-INFINITY"
    return f"{float(f)!r}f"


def _int_array(values) -> str:
    return "{" + ", ".join(str(int(v)) for v in values) + "}"


def input_into_output(step: Step) -> bool:
    """A concatenation's copy of a model input into a model output (a decoder's past KV
    cache into `present`): skipped while the caller keeps the input's values in the output
    (`<m>_set_inputs_in_outputs`)."""
    return (step.kernel == "copy_strided" and step.origin == "tensor.concat"
            and step.ins[0].root.kind == "input" and step.outs[0].root.kind == "output")


class CPrinter:
    def __init__(self, program: Program, blob_bytes: bytes):
        self.p = program
        self.prefix = model_prefix(program.name)
        # the parameter name of each input and output buffer of `<m>_run`
        idents = (c_identifiers([n for n, _ in program.inputs], "in_")
                  + c_identifiers([n for n, _ in program.outputs], "out_"))
        self.io_idents = {id(b): ident for (_, b), ident in
                          zip(program.inputs + program.outputs, idents)}
        self.blob = blob_bytes

    # -- buffers --------------------------------------------------------------------------

    def ptr(self, buf: Buffer, const: bool = False) -> str:
        """A C expression for a pointer to `buf`'s first element."""
        root = buf.root
        t = f"const {ctype(buf)}" if const or root.kind in ("input", "weight") else ctype(buf)
        if root.kind in ("input", "output"):
            return self.io_idents[id(root)]
        base = "W" if root.kind == "weight" else "A"
        cv = "const void" if root.kind == "weight" else "void"
        return f"(({t} *)({cv} *)({base} + {root.offset}))"

    # -- steps ----------------------------------------------------------------------------

    def render(self, step: Step) -> str:
        method = getattr(self, f"render_{step.kernel}", None)
        if method is not None:
            return method(step)
        render = kernels.renderer(step.kernel)
        if render is None:
            raise ValueError(f"no C renderer for kernel {step.kernel}")
        return render(self, step)

    def render_elementwise(self, step: Step) -> str:
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
        args = [f"{self.ptr(b, True)}[{'i' if b.size == out.size else '0'}]" for b in step.ins]
        value = expr.format(*args, T=ctype(out))
        return (f"for (i = 0; i < {out.size}; i++)\n"
                f"    {self.ptr(out)}[i] = ({ctype(out)})({value});")

    def render_copy(self, step: Step) -> str:
        out, src = step.outs[0], step.ins[0]
        return f"memcpy({self.ptr(out)}, {self.ptr(src, True)}, {out.nbytes});"

    def render_zero(self, step: Step) -> str:
        out = step.outs[0]
        return f"memset({self.ptr(out)}, 0, {out.nbytes});"

    def render_fill(self, step: Step) -> str:
        out = step.outs[0]
        v = step.params["value"]
        lit = (_float_literal(v, ctype(out)) if ctype(out) in ("float", "double")
               else str(int(v)))
        return f"for (i = 0; i < {out.size}; i++)\n    {self.ptr(out)}[i] = {lit};"

    def render_copy_strided(self, step: Step) -> str:
        out, src = step.outs[0], step.ins[0]
        q = step.params
        rank = len(q["dims"])
        if rank == 0:
            return f"{self.ptr(out)}[{q['dst_off']}] = {self.ptr(src, True)}[{q['src_off']}];"
        return (f"static const int64_t dims[] = {_int_array(q['dims'])}, "
                f"dst_st[] = {_int_array(q['dst_strides'])}, "
                f"src_st[] = {_int_array(q['src_strides'])};\n"
                f"q35_copy_strided({self.ptr(out)}, {self.ptr(src, True)}, "
                f"sizeof({ctype(out)}), {rank}, dims, {q['dst_off']}, dst_st, "
                f"{q['src_off']}, src_st);")

    def render_reduce(self, step: Step) -> str:
        out, (src, acc) = step.outs[0], step.ins
        q = step.params
        return (f"q35_reduce_f32({self.ptr(out)}, {self.ptr(src, True)}, {self.ptr(acc, True)}, "
                f"{REDUCE_OPS[q['op']]}, {q['outer']}, {q['red']}, {q['inner']});")

    def render_matmul(self, step: Step) -> str:
        out, (a, b, acc) = step.outs[0], step.ins
        q = step.params
        return (f"q35_matmul_f32({self.ptr(out)}, {self.ptr(a, True)}, {self.ptr(b, True)}, "
                f"{self.ptr(acc, True)}, {q['m']}, {q['k']}, {q['n']});")

    def render_batch_matmul(self, step: Step) -> str:
        out, (a, b) = step.outs[0], step.ins
        q = step.params
        return (f"static const int64_t a_off[] = {_int_array(q['a_off'])}, "
                f"b_off[] = {_int_array(q['b_off'])};\n"
                f"q35_batch_matmul_f32({self.ptr(out)}, {self.ptr(a, True)}, "
                f"{self.ptr(b, True)}, {len(q['a_off'])}, a_off, b_off, {q['m']}, {q['k']}, "
                f"{q['n']});")

    def render_softmax(self, step: Step) -> str:
        q = step.params
        return (f"q35_softmax_f32({self.ptr(step.outs[0])}, {self.ptr(step.ins[0], True)}, "
                f"{q['outer']}, {q['len']}, {q['inner']});")

    def render_layer_norm(self, step: Step) -> str:
        x, g, b = step.ins
        q = step.params
        return (f"q35_layer_norm_f32({self.ptr(step.outs[0])}, {self.ptr(x, True)}, "
                f"{self.ptr(g, True)}, {self.ptr(b, True)}, {q['rows']}, {q['len']}, "
                f"{q['eps']!r});")

    def render_rms_norm(self, step: Step) -> str:
        x, g = step.ins
        q = step.params
        return (f"q35_rms_norm_f32({self.ptr(step.outs[0])}, {self.ptr(x, True)}, "
                f"{self.ptr(g, True)}, {q['rows']}, {q['len']}, {q['eps']!r});")

    def render_silu(self, step: Step) -> str:
        return (f"q35_silu_f32({self.ptr(step.outs[0])}, {self.ptr(step.ins[0], True)}, "
                f"{step.outs[0].size});")

    def render_gelu(self, step: Step) -> str:
        return (f"q35_gelu_f32({self.ptr(step.outs[0])}, {self.ptr(step.ins[0], True)}, "
                f"{step.outs[0].size}, {int(step.params['tanh'])});")

    def render_gather(self, step: Step) -> str:
        data, idx = step.ins
        q = step.params
        return (f"if (q35_gather_f32({self.ptr(step.outs[0])}, {self.ptr(data, True)}, "
                f"{self.ptr(idx, True)}, {q['count']}, {q['outer']}, {q['size']}, "
                f"{q['inner']}) != 0)\n"
                f"    return {self.prefix}_fail("
                f"{c_string(step.origin + ': index out of range')});")

    def render_qmatmul_f32(self, step: Step) -> str:
        x, w = step.ins
        out, work = step.outs
        return (f"q35_qmatmul_f32({self.ptr(out)}, {self.ptr(x, True)}, "
                f"{step.params['rows']}, W + {w.offset}, {self.ptr(work)});")

    def render_quantize_activations(self, step: Step) -> str:
        q, s = step.outs
        return (f"q35_quantize_activations({self.ptr(q)}, {self.ptr(s)}, "
                f"{self.ptr(step.ins[0], True)}, {step.params['rows']}, {step.params['k']});")

    def render_qmatmul_i8(self, step: Step) -> str:
        out, scratch = step.outs
        q, s, w = step.ins
        return (f"q35_qmatmul_i8({self.ptr(out)}, {self.ptr(q, True)}, {self.ptr(s, True)}, "
                f"{step.params['rows']}, W + {w.offset}, {self.ptr(scratch)});")

    def render_pair_matmul_f32(self, step: Step) -> str:
        x, w = step.ins
        q = step.params
        return (f"q35_pair_matmul_f32({self.ptr(step.outs[0])}, {self.ptr(x, True)}, "
                f"{q['rows']}, {q['k']}, {q['n']}, W + {w.offset});")

    def render_pair_matmul_i8(self, step: Step) -> str:
        qa, s, w = step.ins
        q = step.params
        return (f"q35_pair_matmul_i8({self.ptr(step.outs[0])}, {self.ptr(qa, True)}, "
                f"{self.ptr(s, True)}, {q['rows']}, {q['k']}, {q['n']}, W + {w.offset});")

    # -- fused ops (runtime/q35rt_fused.c) -----------------------------------------------

    def _epilogue_args(self, step: Step, operands: list[Buffer]) -> str:
        """The bias, activation and residual arguments of a fused matmul (NULL if absent)."""
        q = step.params
        rest = iter(operands)
        bias = self.ptr(next(rest), True) if q["bias"] else "NULL"
        residual = self.ptr(next(rest), True) if q["residual"] else "NULL"
        return f"{bias}, {ACTIVATIONS[q['activation']]}, {residual}"

    def render_fused_matmul_f32(self, step: Step) -> str:
        x, w, *rest = step.ins
        out, work = step.outs
        return (f"q35_fused_qmatmul_f32({self.ptr(out)}, {self.ptr(x, True)}, "
                f"{step.params['rows']}, W + {w.offset}, {self.ptr(work)}, "
                f"{self._epilogue_args(step, rest)});")

    def render_pair_fused_matmul_f32(self, step: Step) -> str:
        x, w, *rest = step.ins
        q = step.params
        return (f"q35_fused_pair_matmul_f32({self.ptr(step.outs[0])}, {self.ptr(x, True)}, "
                f"{q['rows']}, {q['k']}, {q['n']}, W + {w.offset}, "
                f"{self._epilogue_args(step, rest)});")

    def render_swiglu(self, step: Step) -> str:
        gate, up = step.ins
        return (f"q35_swiglu_f32({self.ptr(step.outs[0])}, {self.ptr(gate, True)}, "
                f"{self.ptr(up, True)}, {step.outs[0].size});")

    def render_attention(self, step: Step) -> str:
        out, work = step.outs
        q, k, v, *mask = step.ins
        p = step.params
        head = ""
        mask_args = "NULL, NULL, 0, 0"
        if mask:
            head = f"static const int64_t mask_off[] = {_int_array(p['mask_off'])};\n"
            mask_args = (f"{self.ptr(mask[0], True)}, mask_off, {p['mask_row']}, "
                         f"{p['mask_col']}")
        return (f"{head}q35_attention_f32({self.ptr(out)}, {self.ptr(q, True)}, "
                f"{self.ptr(k, True)}, {self.ptr(v, True)}, {p['batches']}, {p['sq']}, "
                f"{p['sk']}, {p['d']}, {p['dv']}, {_float_literal(p['scale'], 'float')}, "
                f"{mask_args}, {self.ptr(work)});")

    # -- files ----------------------------------------------------------------------------

    def io_params(self) -> str:
        params = [f"const {ctype(b)} *{self.io_idents[id(b)]}" for _, b in self.p.inputs]
        params += [f"{ctype(b)} *{self.io_idents[id(b)]}" for _, b in self.p.outputs]
        return ", ".join(params)

    def header(self) -> str:
        P, M = self.prefix, self.prefix.upper()
        lines = [
            f"/* {P}: generated by q35c (target c) from '{c_comment(self.p.name)}'. Do not edit.",
            " *",
            " * Usage:",
            f" *     {P}_model *m = {P}_load(\"model.bin\");   (NULL on failure: {P}_error())",
            f" *     {P}_run(m, inputs..., outputs...);         (0 on success)",
            f" *     {P}_free(m);",
            " *",
            " * Tensors are dense, row-major, in the element types below; inputs and outputs",
            " * must not overlap (outputs may be written before every input is read). Nothing is",
            f" * allocated by {P}_run: intermediates live in one arena of {M}_ARENA_BYTES bytes",
            f" * allocated by {P}_load. A model may be run by one thread at a time (the",
            " * kernels themselves use OpenMP when compiled with -fopenmp).",
            " */",
            f"#ifndef {M}_MODEL_H",
            f"#define {M}_MODEL_H",
            "",
            "#include <stdint.h>",
            "",
            "#ifdef __cplusplus",
            'extern "C" {',
            "#endif",
            "",
            f"#define {M}_ARENA_BYTES {self.p.arena_bytes}",
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
            "/* Description of one input or output, for generic callers such as main.c. */",
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
            "/* Read the weight blob (one read) and allocate the arena. NULL on failure. */",
            f"{P}_model *{P}_load(const char *weights_path);",
            "",
            "/* Run once. Returns 0, or -1 with the reason in error(). */",
            f"int {P}_run({P}_model *model, {self.io_params()});",
            "",
            "/* The same, with inputs and outputs as arrays in the order of inputs[]/outputs[]. */",
            f"int {P}_run_tensors({P}_model *model, const void *const *inputs, "
            "void *const *outputs);",
            "",
            f"void {P}_free({P}_model *model);",
            "",
            "/* Threads of later runs from the calling thread (quantized matmuls and OpenMP",
            " * loops): n >= 1, at most Q35_THREADS_MAX (256); 0 goes back to OMP_NUM_THREADS.",
            " * Returns the count in force (1 without -fopenmp). */",
            f"int {P}_set_threads(int n);",
            "",
            "/* on = 1: the caller vouches that, in the runs from now on, every output",
            " * region that a concatenation would copy an input into already holds that",
            " * input's values (a decoder's KV cache kept in the `present` outputs from run",
            " * to run), and those copies are skipped; 0 (the default) copies. Returns how",
            " * many copies a run skips. */",
            f"int {P}_set_inputs_in_outputs({P}_model *model, int on);",
            "",
            "/* The reason of the last failure (static storage). */",
            f"const char *{P}_error(void);",
            "",
            "#ifdef __cplusplus",
            "}",
            "#endif",
            "",
            f"#endif /* {M}_MODEL_H */",
            "",
        ]
        return "\n".join(lines)

    def runtime(self) -> str:
        text = "".join((RUNTIME_DIR / name).read_text() for name in RUNTIME_FILES)
        rows = ",\n".join("    " + ", ".join(f"{{{a}, {b}}}" for a, b in CODEBOOK[i:i + 8])
                          for i in range(0, 128, 8))
        steps = SCALE_STEPS.view(np.uint32)
        bits = ",\n".join("    " + ", ".join(f"0x{int(v):08x}u" for v in steps[i:i + 8])
                          for i in range(0, 32, 8))
        legacy = ",\n".join("    " + ", ".join(f"{{{a}, {b}}}" for a, b in LEGACY_LEVELS[i:i + 8])
                           for i in range(0, 128, 8))
        if any(step.kernel in FUSED_KERNELS for step in all_steps(self.p.steps)):
            text += "\n" + (RUNTIME_DIR / "q35rt_fused.c").read_text()
        for name in kernels.runtime_fragments(all_steps(self.p.steps)):
            text += "\n" + (RUNTIME_DIR / name).read_text()
        return (text.replace("Q35_CODEBOOK_ROWS", rows).replace("Q35_SCALE_STEP_BITS", bits)
                .replace("Q35_LEGACY_LEVEL_ROWS", legacy))

    def source(self) -> str:
        P = self.prefix
        out = [
            f"/* {P}: generated by q35c (target c) from '{c_comment(self.p.name)}'. "
            "Do not edit. */",
            "#if defined(__clang__)",
            "#pragma STDC FP_CONTRACT OFF",
            "#endif",
            '#include "model.h"',
            "",
            "#include <stdio.h>",
            "#include <stdlib.h>",
            "",
            self.runtime(),
            "",
            f"static const char *{P}_error_text = \"\";",
            f"const char *{P}_error(void) {{ return {P}_error_text; }}",
            f"int {P}_set_threads(int n) {{ return q35_set_threads(n); }}",
            f"static int {P}_fail(const char *why) {{ {P}_error_text = why; return -1; }}",
            "",
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
        out += [
            "",
            f"struct {P}_model {{",
            "    void *blob_alloc, *arena_alloc;",
            "    const uint8_t *blob;",
            "    uint8_t *arena;",
            "    int inputs_in_outputs;",
            "};",
            "",
            "static void *q35_aligned(void *p) "
            "{ return (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }",
            "",
            f"{P}_model *{P}_load(const char *weights_path)",
            "{",
            "    static const unsigned char magic[8] = "
            f"{{{', '.join(str(b) for b in BLOB_MAGIC)}}};",
            f"    const uint64_t want_size = {len(self.blob)}u, "
            f"want_sum = 0x{blob_checksum(self.blob[BLOB_HEADER:]):016x}u;",
            "    const uint16_t one = 1;",
            "    uint64_t sum = 0, i;",
            f"    {P}_model *m;",
            "    FILE *f;",
            "    long size;",
            "    uint8_t *blob;",
            "    if (*(const uint8_t *)&one != 1)",
            f"        return {P}_fail(\"big-endian hosts are not supported\"), NULL;",
            "    f = fopen(weights_path, \"rb\");",
            "    if (!f)",
            f"        return {P}_fail(\"cannot open the weight blob\"), NULL;",
            "    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || "
            "fseek(f, 0, SEEK_SET) != 0 ||",
            "        (uint64_t)size != want_size) {",
            "        fclose(f);",
            f"        return {P}_fail(\"the weight blob has the wrong size "
            "for this model\"), NULL;",
            "    }",
            f"    m = (struct {P}_model *)calloc(1, sizeof *m);",
            "    if (!m) {",
            "        fclose(f);",
            f"        return {P}_fail(\"out of memory\"), NULL;",
            "    }",
            "    m->blob_alloc = malloc((size_t)want_size + 64);",
            f"    m->arena_alloc = malloc((size_t){self.p.arena_bytes}u + 64);",
            "    if (!m->blob_alloc || !m->arena_alloc) {",
            "        fclose(f);",
            f"        {P}_free(m);",
            f"        return {P}_fail(\"out of memory\"), NULL;",
            "    }",
            "    blob = (uint8_t *)q35_aligned(m->blob_alloc);",
            "    m->arena = (uint8_t *)q35_aligned(m->arena_alloc);",
            "    if (fread(blob, 1, (size_t)want_size, f) != (size_t)want_size) {",
            "        fclose(f);",
            f"        {P}_free(m);",
            f"        return {P}_fail(\"cannot read the weight blob\"), NULL;",
            "    }",
            "    fclose(f);",
            f"    for (i = 0; i < (want_size - {BLOB_HEADER}) / 4; i++) {{",
            "        uint32_t word;",
            f"        memcpy(&word, blob + {BLOB_HEADER} + 4 * i, 4);",
            "        sum += (uint64_t)word * (2 * i + 1);",
            "    }",
            "    if (memcmp(blob, magic, 8) != 0 || sum != want_sum) {",
            f"        {P}_free(m);",
            f"        return {P}_fail(\"the weight blob does not belong to this model\"), NULL;",
            "    }",
            "    m->blob = blob;",
            "    return m;",
            "}",
            "",
            f"int {P}_set_inputs_in_outputs({P}_model *m, int on)",
            "{",
            "    m->inputs_in_outputs = on != 0;",
            f"    return {sum(map(input_into_output, self.p.steps))};",
            "}",
            "",
            f"void {P}_free({P}_model *m)",
            "{",
            "    if (!m)",
            "        return;",
            "    free(m->blob_alloc);",
            "    free(m->arena_alloc);",
            "    free(m);",
            "}",
            "",
        ]
        out += self.run_function()
        args = [f"(const {ctype(b)} *)inputs[{i}]" for i, (_, b) in enumerate(self.p.inputs)]
        args += [f"({ctype(b)} *)outputs[{i}]" for i, (_, b) in enumerate(self.p.outputs)]
        out += [
            f"int {P}_run_tensors({P}_model *m, const void *const *inputs, void *const *outputs)",
            "{",
            "    (void)inputs;",
            "    (void)outputs;",
            f"    return {P}_run({', '.join(['m', *args])});",
            "}",
            "",
        ]
        return "\n".join(out)

    def run_function(self) -> list[str]:
        """`<m>_run`: the steps in order. A program of more than RUN_PART_STEPS steps is
        split into functions of that many steps that `<m>_run` calls in turn: C compilers
        optimize a function in time that grows faster than its length (gcc -O3: 8.6 s of
        CPU for one function of the 2,699 steps of SmolLM2-135M's decode graph, 3.7 s
        split)."""
        P = self.prefix
        steps = list(enumerate(self.p.steps))
        params = f"{P}_model *m, {self.io_params()}"
        if len(steps) <= RUN_PART_STEPS:
            return [f"int {P}_run({params})", "{", *self.run_body(steps), "}", ""]
        names = ", ".join(["m", *(self.io_idents[id(b)]
                                  for _, b in self.p.inputs + self.p.outputs)])
        out = ["/* Parts of the run (never inlined: that would undo the split). */",
               "#if defined(__GNUC__)",
               "#define Q35_RUN_PART static __attribute__((noinline))",
               "#else",
               "#define Q35_RUN_PART static",
               "#endif"]
        calls = []
        for part, start in enumerate(range(0, len(steps), RUN_PART_STEPS)):
            chunk = steps[start:start + RUN_PART_STEPS]
            used = {id(b.root) for _, step in chunk for b in step.ins + step.outs}
            unused = [self.io_idents[id(b)] for _, b in self.p.inputs + self.p.outputs
                      if id(b) not in used]
            out += [f"Q35_RUN_PART int {P}_run_part{part}({params})", "{",
                    *self.run_body(chunk, unused), "}", ""]
            calls.append(f"    if ({P}_run_part{part}({names}) != 0)\n        return -1;")
        return out + [f"int {P}_run({params})", "{", *calls, "    return 0;", "}", ""]

    def run_body(self, steps: list[tuple[int, Step]], unused: list[str] | None = None
                 ) -> list[str]:
        """The statements of `steps` (index, step), then `return 0;`, inside a function
        whose parameters are the run's (m and the inputs and outputs); `unused`: the
        parameters the steps do not use (those of a part of the run)."""
        out = [
            "    const uint8_t *W = m->blob;",
            "    uint8_t *A = m->arena;",
            "    int64_t i = 0;",
            "    (void)W;",
            "    (void)A;",
            "    (void)i;",
        ]
        if unused is None:
            # inputs no step reads (an Expand's shape, a Range's limit): -Wunused-parameter
            read = {id(b.root) for step in self.p.steps for b in step.ins}
            unused = [self.io_idents[id(b)] for _, b in self.p.inputs if id(b) not in read]
        out += [f"    (void){name};" for name in unused]
        for index, step in steps:
            out.append(f"    {{ /* {index}: {c_comment(step.origin)} -> {step.kernel} */")
            body = self.render(step)
            if input_into_output(step):
                body = "if (!m->inputs_in_outputs) {\n    " + body.replace("\n", "\n    ") + "\n}"
            out.append("        " + body.replace("\n", "\n        "))
            out.append("    }")
        return out + ["    return 0;"]

    def main(self) -> str:
        text = (RUNTIME_DIR / "main.c").read_text()
        text = text.replace("q35_prefix", self.prefix).replace("Q35_PREFIX", self.prefix.upper())
        in_stems, out_stems = io_file_stems(self.p)
        tables = "\n".join(
            f"static const char *const {kind}_files[] = {{"
            + "".join(f"{c_string(stem)}, " for stem in stems) + "NULL};"
            for kind, stems in (("in", in_stems), ("out", out_stems)))
        return text.replace("Q35_FILE_STEMS", "/* File stems of the inputs and outputs. */\n"
                            + tables)

    def makefile(self) -> str:
        text = (RUNTIME_DIR / "Makefile").read_text()
        return text


def blob_bytes(program: Program, size: int) -> bytes:
    """The weight blob: a 64-byte header, then every entry at its planned offset."""
    data = bytearray(size)
    for entry in program.blob:
        data[entry.buffer.offset:entry.buffer.offset + len(entry.data)] = entry.data
    header = BLOB_MAGIC + np.array([1, len(program.blob)], "<u4").tobytes() + \
        np.array([size], "<u8").tobytes()
    data[:len(header)] = header
    return bytes(data)
