"""Which float weights `quantize-weights` packs, and its defaults.

The rule lives below the pass so that `q35c inspect` (a frontend tool) can say what the
default pipeline would quantize without importing the pass: a 2-D float `quant3p5.weight`
with at least `min_elements` elements whose name does not match `--keep-float`.
"""

from __future__ import annotations

import re

import numpy as np
from xdsl.dialects.builtin import TensorType
from xdsl.ir import SSAValue

from q35c.compiler.quant import DEFAULT_GROUP_SIZE
from q35c.compiler.weights import WeightStore
from q35c.dialects import q35nn, quant3p5

__all__ = ["DEFAULT_GROUP_SIZE", "DEFAULT_LAYOUT", "DEFAULT_MIN_ELEMENTS", "quantizable_table",
           "quantizable_weight", "tied_transpose"]

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


def quantizable_table(op: q35nn.GatherOp, min_elements: int,
                      keep_float: re.Pattern[str] | None) -> quant3p5.WeightOp | None:
    """The float table behind a row gather (axis 0 of a 2-D table) `quantize-weights{gathers}`
    packs, under the same rule as a matmul weight; a column gather is left alone (it would
    read every stored column)."""
    table = quantizable_weight(op.data, min_elements, keep_float)
    if table is None or op.axis.value.data % 2 != 0:
        return None
    return table


def tied_transpose(store: WeightStore, table: str, head: str) -> bool:
    """Whether weight `head` [D, V] is exactly the transpose of weight `table` [V, D]: the
    same range of the same file read transposed, or (weights in memory, or two copies in
    a file) bit-equal data. Shape-only weights are never tied (nothing to compare)."""
    if store.spec(table) is not None or store.spec(head) is not None:
        return False
    a, b = store.file_weight(table), store.file_weight(head)
    if a is not None and b is not None and a.transpose != b.transpose and (
            a.path, a.offset, a.dtype, a.shape) == (b.path, b.offset, b.dtype, b.shape):
        return True
    t, h = np.asarray(store[table]), np.asarray(store[head])
    if t.ndim != 2 or t.shape != h.shape[::-1] or t.dtype != h.dtype:
        return False
    return bool(np.array_equal(t.T, h))
