"""`externalize-constants`: move large dense constants out of the IR into the weight store.

An `arith.constant dense<...>` tensor with at least `min-elements` elements becomes a
`quant3p5.weight` of the same type whose data lives in the module's weight store, so IR
dumps stay small and diffable and later passes (e.g. `quantize-weights`) see weights by name.
Names are `const`, `const.1`, ... in IR order, or the `q35c.name` attribute of the constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import arith
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, ModuleOp, StringAttr, TensorType
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from q35c.compiler.tensors import constant_value
from q35c.compiler.weights import store_of
from q35c.dialects import quant3p5


@dataclass(frozen=True)
class ExternalizeConstantsPass(ModulePass):
    """Move dense tensor constants with >= min-elements elements into the weight store."""

    name = "externalize-constants"

    min_elements: int = 64

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        store = store_of(op)
        for const in [o for o in op.walk() if isinstance(o, arith.ConstantOp)]:
            value, result_type = const.value, const.result.type
            if not isinstance(value, DenseIntOrFPElementsAttr):
                continue
            assert isinstance(result_type, TensorType)
            if np.prod(result_type.get_shape()) < self.min_elements:
                continue
            label = const.attributes.get("q35c.name")
            name = store.fresh_name(label.data if isinstance(label, StringAttr) else "const")
            store[name] = constant_value(value, result_type)
            Rewriter.replace_op(const, quant3p5.WeightOp(name, result_type))
