"""The Q3P5 weight format and the legacy pair layout (numpy, vectorized), and the one
code-to-level decoding rule both share (`pair_levels`, `integer_levels`, `decode_meta`)."""

from .legacy import (
    LEGACY_LEVELS,
    LegacyPairTensor,
    dequantize_legacy,
    legacy_to_q3p5,
    quantize_legacy,
)
from .levels import (
    PackedWeights,
    group_scales,
    group_size_of,
    integer_levels,
    level_table,
    pair_codes,
)
from .q3p5 import (
    CODEBOOK,
    DEFAULT_GROUP_SIZE,
    OFFSET_GRID,
    SCALE_STEPS,
    Q3P5Tensor,
    decode_meta,
    dequantize,
    dequantize_columns,
    error_bound,
    pack_codes,
    pair_levels,
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
    "PackedWeights",
    "Q3P5Tensor",
    "decode_meta",
    "dequantize",
    "dequantize_columns",
    "dequantize_legacy",
    "error_bound",
    "group_scales",
    "group_size_of",
    "integer_levels",
    "legacy_to_q3p5",
    "level_table",
    "pack_codes",
    "pair_codes",
    "pair_levels",
    "quantize",
    "quantize_legacy",
    "storage_bytes",
    "unpack_codes",
]
