"""Tests of the Q3P5 format: packing, decoding rule, error bound, size, quality,
serialization and input validation."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from q35c.compiler.quant import (
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

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rel_rmse(w: np.ndarray, q: Q3P5Tensor) -> float:
    return float(np.linalg.norm(dequantize(q) - w) / np.linalg.norm(w))


# --------------------------------------------------------------------------- #
# Packing                                                                      #
# --------------------------------------------------------------------------- #


@FAST
@given(
    hnp.arrays(
        np.uint8,
        st.tuples(st.integers(1, 40), st.integers(1, 9)),
        elements=st.integers(0, 127),
    )
)
def test_pack_unpack_round_trip(codes):
    p, n = codes.shape
    payload = pack_codes(codes)
    assert payload.dtype == np.uint8
    assert payload.shape == (n, -(-p // 8) * 7)
    np.testing.assert_array_equal(unpack_codes(payload, p, n), codes)


def test_pack_bit_order_little_endian_56_bit_word():
    codes = np.array([1, 2, 3, 4, 5, 6, 7, 127], dtype=np.uint8)[:, None]
    word = sum(int(c) << (7 * i) for i, c in enumerate(codes[:, 0]))
    assert pack_codes(codes)[0].tobytes() == word.to_bytes(7, "little")
    # The worked example of docs/format.md.
    assert pack_codes(codes)[0].tobytes().hex() == "01c18050301cfe"


def test_pack_is_column_major_and_pads_with_zero_codes():
    codes = np.arange(18, dtype=np.uint8).reshape(9, 2)  # P = 9 -> 2 blocks per column
    payload = pack_codes(codes)
    assert payload.shape == (2, 14)
    np.testing.assert_array_equal(payload[1], pack_codes(codes[:, 1:])[0])
    np.testing.assert_array_equal(unpack_codes(payload, 16, 2)[9:], 0)


def test_pack_rejects_out_of_range_codes():
    with pytest.raises(ValueError):
        pack_codes(np.array([[128]]))
    with pytest.raises(ValueError):
        pack_codes(np.array([1, 2, 3]))


# --------------------------------------------------------------------------- #
# Tables and decoding rule                                                     #
# --------------------------------------------------------------------------- #


def test_tables():
    assert CODEBOOK.shape == (128, 2) and CODEBOOK.dtype == np.int8
    assert len({tuple(p) for p in CODEBOOK.tolist()}) == 128  # every code is a distinct point
    assert np.abs(CODEBOOK.astype(int)).max() <= 127
    exact = 2.0 ** (-np.arange(32) / 5)
    assert SCALE_STEPS.dtype == np.float32
    assert (np.abs(SCALE_STEPS - exact) <= np.spacing(SCALE_STEPS) / 2).all()  # correctly rounded
    np.testing.assert_array_equal(OFFSET_GRID, [-1.5, -0.5, 0.5, 1.5])


def test_decoding_rule_is_bit_exact():
    w = np.random.default_rng(3).standard_normal((100, 7)).astype(np.float32)
    q = quantize(w, group_size=32)
    e, j = q.group_codes() & 31, q.group_codes() >> 5
    scale = q.super_scale * SCALE_STEPS[e]
    offset = q.offset_base + q.offset_step * OFFSET_GRID[j]
    np.testing.assert_array_equal(q.scales(), scale)
    np.testing.assert_array_equal(q.offsets(), offset)
    k = np.arange(100)
    level = CODEBOOK[q.codes()[k // 2], (k % 2)[:, None]]  # [K, N]
    g = k // 32
    expected = np.float32(scale[g]) * np.float32(level) + np.float32(offset[g])
    assert expected.dtype == np.float32
    np.testing.assert_array_equal(dequantize(q), expected)


# --------------------------------------------------------------------------- #
# Error bound on arbitrary shapes and values                                   #
# --------------------------------------------------------------------------- #


@st.composite
def matrices(draw):
    k, n = draw(st.integers(1, 150)), draw(st.integers(1, 6))
    kinds = ["normal", "student", "shifted", "constant", "outlier", "uniform", "signs", "raw"]
    kind = draw(st.sampled_from(kinds))
    if kind == "raw":  # arbitrary float32 values, subnormals and repeats included
        return draw(
            hnp.arrays(
                np.float32, (k, n),
                elements=st.floats(
                    -(2.0**100), 2.0**100, width=32, allow_nan=False, allow_infinity=False
                ),
            )
        )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = 10.0 ** draw(st.integers(-30, 30))
    w = {
        "normal": lambda: rng.standard_normal((k, n)),
        "student": lambda: rng.standard_t(3, (k, n)),
        "shifted": lambda: rng.standard_normal((k, n)) + rng.normal(0, 50, n),
        "constant": lambda: np.full((k, n), rng.normal()),
        "outlier": lambda: rng.standard_normal((k, n)) * (rng.random((k, n)) < 0.02) * 1e4,
        "uniform": lambda: rng.uniform(-1, 1, (k, n)),  # fills the corners of the pair square
        "signs": lambda: rng.choice([-1.0, 1.0], (k, n)),  # pairs only at the corners
    }[kind]()
    return (w * scale).astype(draw(st.sampled_from([np.float32, np.float64])))


@FAST
@given(matrices(), st.sampled_from([16, 32, 48, 64]))
def test_every_element_within_error_bound(w, group_size):
    q = quantize(w, group_size=group_size)
    deq = dequantize(q)
    assert deq.shape == w.shape and deq.dtype == np.float32
    bound = error_bound(w, q)
    assert bound.shape == (q.num_groups, w.shape[1])
    per_element = np.repeat(bound.astype(np.float64), group_size, axis=0)[: w.shape[0]]
    error = np.abs(w.astype(np.float64) - deq.astype(np.float64))
    assert (error <= per_element).all(), float((error - per_element).max())


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (7, 1), (33, 3), (31, 2), (2, 2)])
def test_small_and_odd_shapes(shape):
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    q = quantize(w)
    assert q.codes().shape == (-(-shape[0] // 2), shape[1])
    assert dequantize(q).shape == shape
    assert Q3P5Tensor.from_bytes(q.to_bytes()).to_bytes() == q.to_bytes()


def test_constant_column_is_exact():
    w = np.full((5, 2), 0.3, dtype=np.float32)
    np.testing.assert_array_equal(dequantize(quantize(w)), w)


# --------------------------------------------------------------------------- #
# Size and quality                                                             #
# --------------------------------------------------------------------------- #


def test_bits_per_weight_at_default_for_4096x4096():
    assert DEFAULT_GROUP_SIZE == 32
    # Per column: 2048 codes (1792 B) + 128 group codes (112 B) + 3 float32 (12 B);
    # plus a 16-byte header and a 4-byte checksum per tensor.
    assert storage_bytes((4096, 4096)) == 16 + 4096 * (1792 + 112 + 12) + 4
    assert storage_bytes((4096, 4096)) * 8 / 4096**2 <= 3.75
    # The sizes are those of a real tensor with the same K.
    q = quantize(np.random.default_rng(0).standard_normal((4096, 2)).astype(np.float32))
    assert q.nbytes() == storage_bytes((4096, 2)) == len(q.to_bytes())
    assert q.bits_per_weight() == q.nbytes() * 8 / (4096 * 2)


@pytest.mark.parametrize(
    "sample, limit",
    [
        (lambda rng: rng.standard_normal((1024, 512)), 0.125),
        (lambda rng: rng.standard_t(4, (1024, 512)), 0.160),
    ],
    ids=["gaussian", "student-t4"],
)
def test_quality(sample, limit):
    w = sample(np.random.default_rng(0)).astype(np.float32)
    assert rel_rmse(w, quantize(w)) <= limit


# --------------------------------------------------------------------------- #
# Determinism and serialization                                                #
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def small_tensor():
    w = np.random.default_rng(5).standard_t(4, (45, 3)).astype(np.float32)
    return w, quantize(w, group_size=16)


def test_deterministic(small_tensor):
    w, q = small_tensor
    assert quantize(w.copy(), group_size=16).to_bytes() == q.to_bytes()
    assert quantize(w.astype(np.float64), group_size=16).to_bytes() == q.to_bytes()


def test_serialization_round_trip(small_tensor):
    _, q = small_tensor
    blob = q.to_bytes()
    assert blob[:4] == b"Q3P5"
    r = Q3P5Tensor.from_bytes(blob)
    assert (r.shape, r.group_size) == (q.shape, q.group_size)
    for field in ("payload", "meta", "super_scale", "offset_base", "offset_step"):
        np.testing.assert_array_equal(getattr(r, field), getattr(q, field))
    np.testing.assert_array_equal(dequantize(r), dequantize(q))


def test_truncated_bytes_raise_value_error(small_tensor):
    blob = small_tensor[1].to_bytes()
    for length in range(len(blob)):
        with pytest.raises(ValueError):
            Q3P5Tensor.from_bytes(blob[:length])
    with pytest.raises(ValueError):
        Q3P5Tensor.from_bytes(blob + b"\0")


@FAST
@given(st.data())
def test_corrupt_bytes_raise_value_error(small_tensor, data):
    blob = bytearray(small_tensor[1].to_bytes())
    position = data.draw(st.integers(0, len(blob) - 1))
    blob[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(ValueError):
        Q3P5Tensor.from_bytes(bytes(blob))


# --------------------------------------------------------------------------- #
# Input validation                                                             #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_name_the_tensor(bad):
    w = np.zeros((40, 3), dtype=np.float32)
    w[37, 1] = bad
    with pytest.raises(ValueError, match="blk.0.ffn_up.weight"):
        quantize(w, name="blk.0.ffn_up.weight")


@pytest.mark.parametrize("bad", [np.zeros(8), np.zeros((2, 2, 2)), np.zeros((0, 4))])
def test_non_matrix_input_rejected(bad):
    with pytest.raises(ValueError, match="w0"):
        quantize(bad, name="w0")


@pytest.mark.parametrize("group_size", [0, 8, 24, 33])
def test_bad_group_size_rejected(group_size):
    with pytest.raises(ValueError, match="group_size"):
        quantize(np.zeros((4, 4)), group_size=group_size)
