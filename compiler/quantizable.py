"""Which float weights `quantize-weights` packs, and its defaults.

The rule lives below the pass so that `q35c inspect` (a frontend tool) can say what the
default pipeline would quantize without importing the pass: a 2-D float `quant3p5.weight`
with at least `min_elements` elements whose name does not match `--keep-float`.
"""

from __future__ import annotations

import re

from xdsl.dialects.builtin import TensorType
from xdsl.ir import SSAValue

from q35c.compiler.quant import DEFAULT_GROUP_SIZE
from q35c.dialects import quant3p5

__all__ = ["DEFAULT_GROUP_SIZE", "DEFAULT_LAYOUT", "DEFAULT_MIN_ELEMENTS", "quantizable_weight"]

DEFAULT_MIN_ELEMENTS = 1024
"""Weights with fewer elements stay in float."""
DEFAULT_LAYOUT = "q3p5"


def quantizable_weight(value: SSAValue, min_elements: int, keep_float: re.Pattern[str] | None
                       ) -> quant3p5.WeightOp | None:
    """The weight op behind `value` if it is a 2-D float weight `quantize-weights` packs."""
    op = value.owner
    if not isinstance(op, quant3p5.WeightOp) or not isinstance(op.result.type, TensorType):
        return None
    shape = tuple(op.result.type.get_shape())
    name = op.weight_name.data
    if len(shape) != 2 or shape[0] * shape[1] < min_elements:
        return None
    if keep_float is not None and keep_float.search(name):
        return None
    return op
