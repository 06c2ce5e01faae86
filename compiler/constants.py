"""Moving large dense constants of a module into its weight store.

Shared by the `.mlir` frontend (which does it on load, so even the first IR dump stays
small) and the `externalize-constants` pass; it lives below both so that the frontend does
not run a pass.
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects import arith
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, ModuleOp, StringAttr, TensorType
from xdsl.rewriter import Rewriter

from q35c.compiler.tensors import constant_value
from q35c.compiler.weights import store_of
from q35c.dialects import quant3p5

DEFAULT_MIN_ELEMENTS = 64
"""Constants with fewer elements stay in the IR."""


def externalize_constants(module: ModuleOp, min_elements: int = DEFAULT_MIN_ELEMENTS) -> None:
    """Replace every `arith.constant dense<...>` tensor with at least `min_elements`
    elements by a `quant3p5.weight` of the same type whose data is put in the module's
    weight store, named `const`, `const.1`, ... in IR order, or by the constant's
    `q35c.name` attribute."""
    store = store_of(module)
    for const in [o for o in module.walk() if isinstance(o, arith.ConstantOp)]:
        value, result_type = const.value, const.result.type
        if not isinstance(value, DenseIntOrFPElementsAttr):
            continue
        assert isinstance(result_type, TensorType)
        if np.prod(result_type.get_shape()) < min_elements:
            continue
        label = const.attributes.get("q35c.name")
        name = store.fresh_name(label.data if isinstance(label, StringAttr) else "const")
        store[name] = constant_value(value, result_type)
        Rewriter.replace_op(const, quant3p5.WeightOp(name, result_type))
