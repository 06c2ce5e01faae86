"""Printing IR the way q35c writes it: generic op syntax, weights referenced by file name."""

from __future__ import annotations

import io

from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.printer import Printer

from q35c.compiler.weights import MODULE_ATTR
from q35c.dialects.quant3p5 import WeightOp


def referenced_weights(module: ModuleOp) -> set[str]:
    """Names of the weight-store entries the module's `quant3p5.weight` ops use."""
    return {op.weight_name.data for op in module.walk() if isinstance(op, WeightOp)}


def module_text(module: ModuleOp, *, weights_file: str | None) -> str:
    """The module in generic syntax, its weight attribute set to `weights_file` (or absent).

    Generic syntax is what upstream MLIR parses for IRDL-defined dialects; the output is
    byte-identical for identical IR.
    """
    saved = module.attributes.pop(MODULE_ATTR, None)
    if weights_file is not None:
        module.attributes[MODULE_ATTR] = StringAttr(weights_file)
    try:
        out = io.StringIO()
        Printer(stream=out, print_generic_format=True).print_op(module)
        out.write("\n")
        return out.getvalue()
    finally:
        module.attributes.pop(MODULE_ATTR, None)
        if saved is not None:
            module.attributes[MODULE_ATTR] = saved
