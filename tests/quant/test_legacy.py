"""Tests of the legacy pair layout: bit layout, decoding rule, quantizer, size and
conversion to Q3P5."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from q35c.compiler.quant import (
    LEGACY_LEVELS,
    LegacyPairTensor,
    dequantize,
    dequantize_legacy,
    error_bound,
    legacy_to_q3p5,
    quantize_legacy,
)


def signed(value: np.ndarray, bits: int) -> np.ndarray:
    """Two's complement value of the low ``bits`` bits (written independently of the library)."""
    value = value.astype(np.int64) & ((1 << bits) - 1)
    return np.where(value >= 1 << (bits - 1), value - (1 << bits), value)


def test_hand_made_bytes_decode():
    # 0x43 = 0_1000_011: v4 = -8, v3 = 3 -> levels (-8, 7)
    # 0x3C = 0_0111_100: v4 = 7,  v3 = -4 -> levels (7, -7)
    packed = np.asfortranarray(np.array([[0x43], [0x3C]], dtype=np.int8))
    t = LegacyPairTensor((4, 1), packed, np.float32([0.5]), np.float32([1.0]))
    np.testing.assert_array_equal(dequantize_legacy(t)[:, 0], [-3.0, 4.5, 4.5, -2.5])


def test_level_table_matches_bit_fields():
    byte = np.arange(128)
    np.testing.assert_array_equal(LEGACY_LEVELS[:, 0], signed(byte >> 3, 4))
    np.testing.assert_array_equal(LEGACY_LEVELS[:, 1], 2 * signed(byte, 3) + 1)
    np.testing.assert_array_equal(LEGACY_LEVELS[0x7F], [-1, -1])
    np.testing.assert_array_equal(LEGACY_LEVELS[0x00], [0, 1])


def test_quantized_bytes_follow_the_layout():
    w = np.random.default_rng(1).standard_normal((9, 4)).astype(np.float32)
    t = quantize_legacy(w)
    assert t.packed.dtype == np.int8 and t.packed.shape == (5, 4)
    assert t.packed.flags.f_contiguous  # column-major, as the Fortran kernels read it
    assert (t.packed.astype(np.int64) & 0x80 == 0).all()  # bit 7 is zero
    assert (t.packed[-1] & 0x7 == 0).all()  # odd K: the padding weight has v3 = 0
    v4 = signed(t.packed >> 3, 4)
    v3 = signed(t.packed, 3)
    levels = np.stack([v4, 2 * v3 + 1], axis=1).reshape(-1, 4)[:9]  # rows k = 0, 1, 2, ...
    expected = t.scale * levels.astype(np.float32) + t.offset
    np.testing.assert_array_equal(dequantize_legacy(t), expected)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 5), st.integers(0, 2**32 - 1), st.floats(1e-3, 1e3))
def test_round_trip_picks_nearest_level(k, n, seed, magnitude):
    w = (np.random.default_rng(seed).standard_t(5, (k, n)) * magnitude).astype(np.float32)
    t = quantize_legacy(w)
    error = np.abs(dequantize_legacy(t).astype(np.float64) - w)
    z = (w - t.offset) / np.where(t.scale > 0, t.scale, 1)
    # Even rows: levels -8..7 (half step 0.5); odd rows: -7, -5, ..., 7 (half step 1).
    allowed = np.empty_like(z, dtype=np.float64)
    allowed[0::2] = np.maximum(0.5, np.maximum(z[0::2] - 7, -8 - z[0::2]))
    allowed[1::2] = np.maximum(1.0, np.abs(z[1::2]) - 7)
    tolerance = 1e-5 * (np.abs(w) + np.abs(t.offset) + 8 * t.scale)
    assert (error <= allowed * t.scale + tolerance).all()


def test_constant_column_is_exact():
    w = np.full((6, 2), -2.25, dtype=np.float32)
    np.testing.assert_array_equal(dequantize_legacy(quantize_legacy(w)), w)


def test_bits_per_weight():
    t = quantize_legacy(np.random.default_rng(0).standard_normal((4096, 3)))
    assert t.nbytes() == 2048 * 3 + 8 * 3
    assert t.bits_per_weight() == 4 + 64 / 4096  # 8 bits per pair + 64 bits per column
    odd = quantize_legacy(np.ones((5, 2)))
    assert odd.nbytes() == 3 * 2 + 8 * 2


def test_conversion_to_q3p5():
    w = np.random.default_rng(2).standard_normal((70, 5)).astype(np.float32)
    t = quantize_legacy(w)
    q = legacy_to_q3p5(t)
    assert q.shape == (70, 5)
    source = dequantize_legacy(t)
    bound = np.repeat(error_bound(source, q), q.group_size, axis=0)[:70]
    assert (np.abs(dequantize(q) - source) <= bound).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_name_the_tensor(bad):
    w = np.ones((4, 4))
    w[2, 3] = bad
    with pytest.raises(ValueError, match="enc.layer3"):
        quantize_legacy(w, name="enc.layer3")


def test_invalid_tensor_rejected():
    with pytest.raises(ValueError, match="bit 7"):
        bad_byte = np.array([[-1]], dtype=np.int8)
        LegacyPairTensor((2, 1), bad_byte, np.ones(1, np.float32), np.zeros(1, np.float32))
    with pytest.raises(ValueError):
        quantize_legacy(np.ones(4))
