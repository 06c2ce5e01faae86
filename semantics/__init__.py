"""The reference semantics: the executable definition of every op q35c compiles.

Every target is checked against this package, so it is written to be obviously right rather
than fast: each op is a few lines of numpy, one module per dialect (as xDSL keeps
`xdsl/interpreters/<dialect>.py`), registered by op class in the public table
`IMPLEMENTATIONS`; `engine.py` runs functions op by op. The numeric rules (a
target that follows them reproduces the int8-activation path bit for bit; the functions
named in brackets implement them):

- Tensors are numpy arrays; float tensors are float32. Elementwise `arith` ops and
  `math.sqrt`/`rsqrt`/`absf` run in float32, one IEEE rounding per op (C: float operators,
  `sqrtf`, `1.0f / sqrtf(x)`, `fabsf`).
- Transcendental functions (exp, log, tanh, erf, sin, cos, pow), elementwise or inside a
  composite op, are the C library's double-precision functions [`libm`]: Python's `math`
  module calls the platform libm, so `math.exp(x)` is bit-identical to C's `exp(x)` on the
  same machine. A float32 op evaluates `f((double)x)` and rounds once to float32 (C:
  `(float)exp((double)x)`, not `expf`, and not numpy's own SIMD routines, which differ in
  the last bit). Special values (overflow, poles, domain errors) follow C99 Annex F.
- Composite `q35nn` ops (softmax, layer/RMS norm, GELU, SiLU) compute in float64 and round
  once to float32. Every sum over an axis is sequential, first element to last, in
  float64 [`sequential_sum`] (numpy's own `np.sum` is pairwise and unspecified), and each
  formula is evaluated left to right exactly as written in its function, with no fused
  multiply-add (C: `-ffp-contract=off`). `linalg.reduce` is sequential in float64 too.
- Float matmuls whose operands are both activations or float weights (`linalg.matmul`,
  `q35nn.batch_matmul`, and the two products of `q35nn.attention`) sum the float64
  products `(double)a * (double)b` sequentially over k starting from 0.0 [`matmul_f64`]:
  products of float32 values are exact in float64, so the C loop
  `for (p = 0; p < K; p++) s += (double)a[i][p] * (double)b[p][j];` reproduces it bit for
  bit. `linalg.matmul` then adds its accumulator operand in float64 and rounds once.
- `quant3p5.matmul` and `fused_matmul` (float activations) multiply by the dequantized
  weights (`scale * level + offset` in float32, see compiler/quant) with float64
  accumulation in an unspecified order (BLAS): targets match them to 1e-5 relative.
- `quant3p5.quantize_activations` and `quant3p5.matmul_int8` are the integer path: int8
  activations, int32 accumulation per group, then a float32 rescale in a fixed order. Targets
  must reproduce this path bit-exactly. Accumulators never wrap: one that leaves int32 raises
  InterpreterError (verify-overflow proves at compile time that none can).
- Signed integer division and remainder by zero (`arith.divsi`/`remsi`, Fortran `/` and
  `mod`) and `memref.load`/`store` outside the array are errors at the op's source line,
  not values.

Layering: this package imports only q35c's compiler core (quant, tensors, weights, entry,
ir_attrs, diagnostics) and dialects; passes and targets import it, never the reverse
(tests/test_layering.py).
"""

from . import arith, func, linalg, math, memref, q35nn, quant3p5, scf, tensor  # noqa: F401  (registration)
from .core import IMPLEMENTATIONS, InterpreterError, OpImpl, Value, impl, located_error
from .engine import (
    DEFAULT_MAX_STEPS,
    Interpreter,
    SourceLineError,
    run_module,
    step_limit,
)
from .numerics import (
    apply_activation,
    erf64,
    exp64,
    libm,
    matmul_f64,
    matmul_unordered,
    sequential_sum,
    softmax,
    tanh64,
)
from .quant3p5 import (
    dequantize_f16,
    dequantized,
    int_rescale_block,
    int_rescale_end,
    int_scaled,
    matmul_int8,
    matmul_q3p5_f16,
    matmul_q3p5_w16,
    quantize_activations,
    rescale_group,
    rescale_rows,
)

__all__ = [
    "DEFAULT_MAX_STEPS",
    "IMPLEMENTATIONS",
    "Interpreter",
    "InterpreterError",
    "OpImpl",
    "SourceLineError",
    "Value",
    "apply_activation",
    "dequantize_f16",
    "dequantized",
    "erf64",
    "exp64",
    "impl",
    "int_rescale_block",
    "int_rescale_end",
    "int_scaled",
    "libm",
    "located_error",
    "matmul_f64",
    "matmul_int8",
    "matmul_q3p5_f16",
    "matmul_q3p5_w16",
    "matmul_unordered",
    "quantize_activations",
    "rescale_group",
    "rescale_rows",
    "run_module",
    "sequential_sum",
    "softmax",
    "step_limit",
    "tanh64",
]
