"""The Q3P5 weight format and the legacy pair layout (numpy, vectorized)."""

from .legacy import (
    LEGACY_LEVELS,
    LegacyPairTensor,
    dequantize_legacy,
    legacy_to_q3p5,
    quantize_legacy,
)
from .q3p5 import (
    CODEBOOK,
    DEFAULT_GROUP_SIZE,
    OFFSET_GRID,
    SCALE_STEPS,
    Q3P5Tensor,
    dequantize,
    error_bound,
    pack_codes,
    quantize,
    storage_bytes,
    unpack_codes,
)

__all__ = [
    "CODEBOOK",
    "DEFAULT_GROUP_SIZE",
    "LEGACY_LEVELS",
    "OFFSET_GRID",
    "SCALE_STEPS",
    "LegacyPairTensor",
    "Q3P5Tensor",
    "dequantize",
    "dequantize_legacy",
    "error_bound",
    "legacy_to_q3p5",
    "pack_codes",
    "quantize",
    "quantize_legacy",
    "storage_bytes",
    "unpack_codes",
]
