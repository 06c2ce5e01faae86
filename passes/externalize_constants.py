"""`externalize-constants`: move large dense constants out of the IR into the weight store.

An `arith.constant dense<...>` tensor with at least `min-elements` elements becomes a
`quant3p5.weight` of the same type whose data lives in the module's weight store, so IR
dumps stay small and diffable and later passes (e.g. `quantize-weights`) see weights by name.
Names are `const`, `const.1`, ... in IR order, or the `q35c.name` attribute of the constant.
The work is `q35c.compiler.constants.externalize_constants`, which the `.mlir` frontend also
calls on load.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from q35c.compiler.constants import DEFAULT_MIN_ELEMENTS, externalize_constants


@dataclass(frozen=True)
class ExternalizeConstantsPass(ModulePass):
    """Move dense tensor constants with >= min-elements elements into the weight store."""

    name = "externalize-constants"

    min_elements: int = DEFAULT_MIN_ELEMENTS

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        externalize_constants(op, self.min_elements)
