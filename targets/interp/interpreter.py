"""Moved: the reference semantics live in `q35c.semantics` (one module per dialect).

This module only re-exports the public names it used to define, so code written against
`q35c.targets.interp.interpreter` keeps importing; new code imports `q35c.semantics` (and
`q35c.compiler.entry` for the entry function and argument names).
"""

from q35c.compiler.entry import (  # noqa: F401
    argument_attr_strings,
    argument_names,
    entry_function,
    memref_argument_shape,
    result_names,
)
from q35c.semantics import (  # noqa: F401
    IMPLEMENTATIONS,
    Interpreter,
    InterpreterError,
    apply_activation,
    dequantized,
    erf64,
    exp64,
    libm,
    matmul_f64,
    matmul_int8,
    quantize_activations,
    run_module,
    sequential_sum,
    softmax,
    tanh64,
)
