"""Integer levels and group scales/offsets of a packed weight, whichever its layout.

A Q3P5 tensor and a legacy pair tensor decode by the same rule (format.md): the level of
weight (k, n) is a (128, 2) table looked up with its pair code, and its value is
``scale[g, n] * level + offset[g, n]`` for group g = k // group. These functions give that
rule's parts for either layout, so the reference semantics, the verification passes and
the targets never branch on the layout to decode."""

from __future__ import annotations

import numpy as np

from .legacy import LEGACY_LEVELS, LegacyPairTensor
from .q3p5 import CODEBOOK, Q3P5Tensor, pair_levels

PackedWeights = Q3P5Tensor | LegacyPairTensor

__all__ = [
    "PackedWeights",
    "group_scales",
    "group_size_of",
    "integer_levels",
    "level_table",
    "pair_codes",
]


def _check(weights: object) -> None:
    if not isinstance(weights, (Q3P5Tensor, LegacyPairTensor)):
        raise TypeError(f"expected packed weights, got {type(weights).__name__}")


def level_table(weights: PackedWeights) -> np.ndarray:
    """The int8 (128, 2) code-to-level table of the layout: CODEBOOK or LEGACY_LEVELS."""
    _check(weights)
    return CODEBOOK if isinstance(weights, Q3P5Tensor) else LEGACY_LEVELS


def pair_codes(weights: PackedWeights) -> np.ndarray:
    """The pair codes [ceil(K/2), N] (uint8 for Q3P5, int8 bytes for the pair layout)."""
    _check(weights)
    return weights.codes() if isinstance(weights, Q3P5Tensor) else weights.packed


def group_size_of(weights: PackedWeights) -> int:
    """Rows per group: the Q3P5 group size, or K (one group per column) for the pair layout."""
    _check(weights)
    return weights.group_size if isinstance(weights, Q3P5Tensor) else weights.shape[0]


def group_scales(weights: PackedWeights) -> tuple[np.ndarray, np.ndarray]:
    """float32 [G, N] scales and offsets of the groups."""
    _check(weights)
    if isinstance(weights, Q3P5Tensor):
        return weights.scales(), weights.offsets()
    return (np.asarray(weights.scale, np.float32)[None, :],
            np.asarray(weights.offset, np.float32)[None, :])


def integer_levels(weights: PackedWeights, dtype=np.int32) -> np.ndarray:
    """The integer levels [K, N] of every weight (`pair_levels` of its codes and table)."""
    return pair_levels(pair_codes(weights), level_table(weights), weights.shape[0], dtype)
