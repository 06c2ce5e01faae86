"""Tests of the Q3P5 format: packing, decoding rule, error bound, size, quality,
serialization (versions 1 and 2) and input validation."""

import hashlib
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from q35c.compiler.quant import (
    CODEBOOK,
    DEFAULT_GROUP_SIZE,
    OFFSET_GRID,
    SCALE_STEPS,
    WORD_FORMATS,
    Q3P5Tensor,
    dequantize,
    error_bound,
    pack_codes,
    quantize,
    serialized_size,
    storage_bytes,
    unpack_codes,
    word_layout,
)

DATA = Path(__file__).parent / "data"

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


@st.composite
def word_constraints(draw, n: int):
    """None (the default layout), or a (column block, word format) to force."""
    if draw(st.booleans()):
        return None
    return draw(st.integers(1, n)), draw(st.sampled_from(WORD_FORMATS))


@FAST
@given(matrices(), st.sampled_from([16, 32, 48, 64]), st.data())
def test_every_element_within_error_bound(w, group_size, data):
    """Also with the words shared by column blocks and rounded to float16 (version 2):
    the bound is derived from the decoded words, whatever constrained them."""
    words = data.draw(word_constraints(w.shape[1]))
    q = quantize(w, group_size=group_size, words=words)
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
    # plus a 24-byte header (16 in version 1) and a 4-byte checksum per tensor.
    assert word_layout((4096, 4096)) == (1, "float32")
    assert storage_bytes((4096, 4096)) == 24 + 4096 * (1792 + 112 + 12) + 4
    assert storage_bytes((4096, 4096), version=1) == 16 + 4096 * (1792 + 112 + 12) + 4
    assert storage_bytes((4096, 4096)) * 8 / 4096**2 <= 3.75
    # The sizes are those of a real tensor with the same K.
    q = quantize(np.random.default_rng(0).standard_normal((4096, 2)).astype(np.float32))
    assert q.nbytes() == storage_bytes((4096, 2)) == len(q.to_bytes())
    assert q.bits_per_weight() == q.nbytes() * 8 / (4096 * 2)


def _fits(k: int, n: int, g: int) -> bool:
    return storage_bytes((k, n), g) * 8 <= 3.75 * k * n


def test_budget_holds_at_every_shape_of_the_guaranteed_range():
    """format.md section 6: for N >= 64 and a group size g >= 32 (and at most K rounded up
    to 16), every K >= 256 that is a multiple of 32 and every K >= 512 stores at most 3.75
    bits per weight, all counted."""
    ns = [64, 65, 67, 71, 96, 100, 127, 192, 576, 1000, 1536, 4096, 49152]
    for g in (32, 48, 64, 96, 128, 1024):
        for k in [*range(256, 2100), *range(2100, 70000, 131)]:
            if (k % 32 and k < 512) or g > -(-k // 16) * 16:
                continue
            bad = [n for n in ns if not _fits(k, n, g)]
            assert not bad, (g, k, bad)
    # exhaustively over N for the small K where the margin is thinnest
    for k in range(256, 1100):
        if k % 32 == 0 or k >= 512:
            assert all(_fits(k, n, 32) for n in range(64, 700)), k


def test_budget_at_the_shapes_of_real_models():
    """The real shapes of the issue; version 1 exceeded 3.75 below K = 3328."""
    expected = {256: (7, "float16"), 576: (3, "float16"), 1536: (2, "float16"),
                2048: (1, "float16"), 4096: (1, "float32"), 11008: (1, "float32"),
                14336: (1, "float32")}
    for k, words in expected.items():
        assert word_layout((k, 4096)) == words, k
        assert storage_bytes((k, 4096)) * 8 / (k * 4096) <= 3.75
    assert storage_bytes((576, 4096), version=1) * 8 / (576 * 4096) > 3.95
    w = np.random.default_rng(1).standard_normal((576, 192)).astype(np.float32)
    q = quantize(w)
    assert q.words == word_layout((576, 192)) and q.words[1] == "float16"
    assert q.bits_per_weight() <= 3.75 and q.nbytes() == len(q.to_bytes())


def test_outside_the_range_the_words_stay_per_column_float32():
    """Where no block size reaches the budget (K = 257 at group 32, tiny N), sharing would
    cost accuracy for nothing: the words stay those of version 1."""
    for shape in [(257, 4096), (5, 2), (256, 8), (100, 7)]:
        assert word_layout(shape) == (1, "float32"), shape
        assert not _fits(*shape, 32)


def test_float32_words_where_they_fit_are_version_1_words():
    """K >= 4096: per-column float32 words, so quantization is unchanged from version 1."""
    w = np.random.default_rng(2).standard_normal((4096, 8)).astype(np.float32)
    assert word_layout(w.shape) == (1, "float32")
    q, q1 = quantize(w), quantize(w, words=(1, "float32"))
    assert q.to_bytes() == q1.to_bytes()
    np.testing.assert_array_equal(dequantize(q), dequantize(q1))


def _float16_with_some_shift(values: np.ndarray) -> bool:
    """Whether values == float16 * 2**s exactly for some one s (brute force over s)."""
    x = values.astype(np.float64)
    for shift in range(-125, 113):
        with np.errstate(over="ignore"):
            h = np.ldexp(x, -shift).astype(np.float16)
        if np.isfinite(h).all() and (np.ldexp(h.astype(np.float64), shift) == x).all():
            return True
    return False


def test_shared_words_obey_their_constraint():
    w = np.random.default_rng(3).standard_t(4, (96, 23)).astype(np.float32)
    w[:, 5] += 3.0  # a column whose mean differs: its block's offset grid must span it
    q = quantize(w, words=(4, "float16"))
    for arr in (q.super_scale, q.offset_base, q.offset_step):
        for b in range(0, 23, 4):
            assert (arr[b:b + 4] == arr[b]).all()
        assert _float16_with_some_shift(arr)
    assert not _float16_with_some_shift(quantize(w).super_scale)  # K = 96: float32 words
    assert rel_rmse(w, q) < 0.2


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
    big = np.random.default_rng(9).standard_normal((576, 70)).astype(np.float32)
    assert quantize(big).to_bytes() == quantize(big.copy()).to_bytes()
    assert quantize(big).words[1] == "float16"


def test_serialization_round_trip(small_tensor):
    _, q = small_tensor
    blob = q.to_bytes()
    assert blob[:4] == b"Q3P5"
    r = Q3P5Tensor.from_bytes(blob)
    assert (r.shape, r.group_size) == (q.shape, q.group_size)
    for field in ("payload", "meta", "super_scale", "offset_base", "offset_step"):
        np.testing.assert_array_equal(getattr(r, field), getattr(q, field))
    np.testing.assert_array_equal(dequantize(r), dequantize(q))


def _assert_same_tensor(a: Q3P5Tensor, b: Q3P5Tensor) -> None:
    assert (a.shape, a.group_size) == (b.shape, b.group_size)
    for field in ("payload", "meta", "super_scale", "offset_base", "offset_step"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes(), field  # bit for bit, -0.0 included


@FAST
@given(st.integers(1, 300), st.integers(1, 40), st.sampled_from([16, 32, 48, 64]),
       st.data())
def test_both_versions_round_trip_any_shape(k, n, group_size, data):
    """Odd K, partial groups, G not a multiple of 8, blocks that do not divide N."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    w = (rng.standard_t(4, (k, n)) * 10.0 ** data.draw(st.integers(-20, 20))).astype(np.float32)
    words = data.draw(word_constraints(n))
    q = quantize(w, group_size=group_size, words=words)
    short = group_size > -(-k // 16) * 16  # a group longer than the column: version 1 only
    if short:
        with pytest.raises(ValueError, match="version 1"):
            q.to_bytes(version=2)
    for version in (1,) if short else (1, 2):
        blob = q.to_bytes(version=version)
        assert struct.unpack_from("<H", blob, 4)[0] == version
        assert serialized_size(blob[:24]) == ((k, n), group_size, len(blob))
        r = Q3P5Tensor.from_bytes(blob)
        _assert_same_tensor(r, q)
        assert r.to_bytes(version=version) == blob
        np.testing.assert_array_equal(dequantize(r), dequantize(q))
    default = q.to_bytes()
    assert default == q.to_bytes(version=1 if short else 2) and len(default) == q.nbytes()
    assert len(default) == storage_bytes((k, n), group_size, words=q.words)
    if words is None:
        assert len(default) == storage_bytes((k, n), group_size)
    assert Q3P5Tensor.from_bytes(default).words == (q.words if not short else (1, "float32"))


@pytest.mark.parametrize("name", sorted(json.loads(
    (DATA / "v1_dequantized_sha256.json").read_text())))
def test_version_1_blobs_still_decode_bit_identically(name):
    """Blobs written by version 1 (main at b8b3b12); the hashes are of that code's
    dequantize output, float32 bytes."""
    blob = (DATA / name).read_bytes()
    want = json.loads((DATA / "v1_dequantized_sha256.json").read_text())[name]
    assert struct.unpack_from("<H", blob, 4)[0] == 1
    q = Q3P5Tensor.from_bytes(blob)
    assert q.words == (1, "float32")
    assert hashlib.sha256(dequantize(q).tobytes()).hexdigest() == want
    assert q.to_bytes(version=1) == blob
    assert serialized_size(blob[:16]) == (q.shape, q.group_size, len(blob))
    r = Q3P5Tensor.from_bytes(q.to_bytes())  # re-stored as version 2
    _assert_same_tensor(r, q)
    assert hashlib.sha256(dequantize(r).tobytes()).hexdigest() == want


def test_version_1_worked_example_of_the_old_spec():
    """The 72-byte serialization that docs/format.md gave for version 1."""
    blob = bytes.fromhex(
        "51335035010010000500000002000000bc74933cef85493ccdcc4cbe33d7a3bc"
        "000000000000000040000000000000400000000000006679"
        "40a7d3e974 02635ea7d3e974e115a009".replace(" ", ""))
    q = Q3P5Tensor.from_bytes(blob)
    deq = dequantize(q)  # the spec printed these to 8 decimals
    np.testing.assert_allclose(deq, np.array(
        [[0.59199995, -1.2254], [-0.73999995, 0.2628999], [0.93399996, 0.02919992],
         [0.35799998, -0.30290005], [-1.964, 1.0008998]], dtype=np.float32), rtol=0, atol=5e-9)
    # w[0, 0] = 0.018 * 44 + (-0.2) from the stored float32 words, exactly
    assert deq[0, 0] == np.float32(np.float32(0.018) * np.float32(44)) + np.float32(-0.2)
    assert q.to_bytes(version=1) == blob


def test_version_2_worked_examples_of_the_spec():
    """docs/format.md section 7: the same W in version 2, with its own words and with
    float16 words shared by both columns."""
    w = np.array([[0.50, -1.25], [-0.75, 0.40], [1.00, 0.10], [0.25, -0.30], [-2.00, 0.95]],
                 np.float32)
    q = quantize(w, group_size=16)
    assert q.words == (1, "float32")
    assert q.to_bytes().hex() == (
        "51335035020010000500000002000000010000000000000 0bc74933cef85493c"
        "cdcc4cbe33d7a3bc0000000000000000402000000000006679 4060cc0300b6364a7a"
    ).replace(" ", "")
    shared = quantize(w, group_size=16, words=(2, "float16"))
    assert shared.to_bytes().hex() == (
        "51335035020010000500000002000000020000 0001ebedecab780afbc3798031"
        "0000000000667940 00cd0300311ed89d").replace(" ", "")
    np.testing.assert_array_equal(shared.super_scale.view(np.uint32), [0x3C956000] * 2)
    np.testing.assert_array_equal(shared.group_codes(), [[0, 99]])


def test_padding_that_version_2_would_not_restore_keeps_version_1():
    """A version-1 blob from another encoder may hold any codes in padding pairs and
    padding group codes; they are kept by writing version 1."""
    q = quantize(np.random.default_rng(4).standard_normal((40, 3)).astype(np.float32))
    codes = unpack_codes(q.payload, 32, 3)  # K = 40: pairs 20..31 are padding
    codes[25, 1] = 7
    odd = Q3P5Tensor(q.shape, q.group_size, pack_codes(codes), q.meta, q.super_scale,
                     q.offset_base, q.offset_step)
    assert odd.to_bytes() == odd.to_bytes(version=1) and odd.nbytes() == len(odd.to_bytes())
    with pytest.raises(ValueError, match="version 1"):
        odd.to_bytes(version=2)
    group_codes = unpack_codes(q.meta, 8, 3)
    group_codes[5, 0] = 1  # G = 2: codes 2..7 pad the block
    odd = Q3P5Tensor(q.shape, q.group_size, q.payload, pack_codes(group_codes),
                     q.super_scale, q.offset_base, q.offset_step)
    assert struct.unpack_from("<H", odd.to_bytes(), 4)[0] == 1
    assert struct.unpack_from("<H", q.to_bytes(), 4)[0] == 2


def test_tensor_rejects_words_that_break_their_constraint():
    q = quantize(np.random.default_rng(5).standard_normal((64, 6)).astype(np.float32),
                 words=(3, "float16"))
    fields = (q.shape, q.group_size, q.payload, q.meta)
    ss = q.super_scale.copy()
    ss[4] = np.nextafter(ss[4], np.float32(1))
    with pytest.raises(ValueError, match="within a block"):
        Q3P5Tensor(*fields, ss, q.offset_base, q.offset_step, 3, "float16")
    ss[3:6] = ss[4]  # constant per block again, but 12+ significant bits
    with pytest.raises(ValueError, match="float16"):
        Q3P5Tensor(*fields, ss, q.offset_base, q.offset_step, 3, "float16")
    Q3P5Tensor(*fields, ss, q.offset_base, q.offset_step, 3, "float32")  # float32 holds it
    for words in [(0, "float16"), (7, "float16"), (2, "bfloat16"), (True, "float32")]:
        with pytest.raises(ValueError):
            Q3P5Tensor(*fields, q.super_scale, q.offset_base, q.offset_step, *words)
        with pytest.raises(ValueError):
            quantize(np.ones((64, 6)), words=words)


@pytest.fixture(scope="module")
def v2_tensor():
    """Version 2 with everything that differs from version 1: float16 words shared by a
    block that does not divide N, dense group codes (G = 3) and dense pair codes (odd K)."""
    w = np.random.default_rng(6).standard_t(4, (45, 5)).astype(np.float32)
    q = quantize(w, group_size=16, words=(2, "float16"))
    assert struct.unpack_from("<H", q.to_bytes(), 4)[0] == 2
    return q


def test_truncated_bytes_raise_value_error(small_tensor, v2_tensor):
    for q in (small_tensor[1], v2_tensor):
        for version in (1, 2):
            blob = q.to_bytes(version=version)
            for length in range(len(blob)):
                with pytest.raises(ValueError):
                    Q3P5Tensor.from_bytes(blob[:length])
            with pytest.raises(ValueError):
                Q3P5Tensor.from_bytes(blob + b"\0")


@FAST
@given(st.data())
def test_corrupt_bytes_raise_value_error(small_tensor, v2_tensor, data):
    q = data.draw(st.sampled_from([small_tensor[1], v2_tensor]))
    blob = bytearray(q.to_bytes(version=data.draw(st.sampled_from([1, 2]))))
    position = data.draw(st.integers(0, len(blob) - 1))
    blob[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(ValueError):
        Q3P5Tensor.from_bytes(bytes(blob))


def _resealed(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_version_2_rejects_non_canonical_fields_even_with_a_valid_checksum(v2_tensor):
    """Every tensor has one version-2 encoding: a header field or padding that to_bytes
    would not write is refused, not silently normalized (the CRC is recomputed here)."""
    body = bytearray(v2_tensor.to_bytes()[:-4])
    cases = {
        "block 0": (16, struct.pack("<I", 0)),
        "block > N": (16, struct.pack("<I", 6)),
        "word format": (20, b"\x02"),
        "shift out of range": (21, struct.pack("<b", 113)),
        "version 3": (4, struct.pack("<H", 3)),
    }
    for what, (at, value) in cases.items():
        bad = body.copy()
        bad[at:at + len(value)] = value
        with pytest.raises(ValueError):
            Q3P5Tensor.from_bytes(_resealed(bytes(bad)))
            pytest.fail(what)
    # the same super_scale words as h / 2 * 2**(shift + 1): equal values, but not the
    # canonical (smallest) shift
    shift = struct.unpack_from("<b", body, 21)[0]
    halves = np.frombuffer(bytes(body[24:30]), "<f2") / np.float16(2)
    assert (np.ldexp(halves.astype(np.float32), shift + 1) == v2_tensor.super_scale[::2]).all()
    bad = body.copy()
    bad[21:22] = struct.pack("<b", shift + 1)
    bad[24:30] = halves.astype("<f2").tobytes()
    with pytest.raises(ValueError, match="canonical"):
        Q3P5Tensor.from_bytes(_resealed(bytes(bad)))
    # the last byte of the dense pair codes: K = 45 -> 23 pairs x 5 columns = 115 codes,
    # so the top 5 codes of the last block of 8 are padding
    bad = body.copy()
    bad[-1] |= 0x80
    with pytest.raises(ValueError, match="padding"):
        Q3P5Tensor.from_bytes(_resealed(bytes(bad)))
    # a group longer than K rounded up to 16 (K = 45: 48): padding that is not stored
    # would make a short blob decode to large arrays
    bad = body.copy()
    bad[6:8] = struct.pack("<H", 64)
    with pytest.raises(ValueError, match="group size"):
        Q3P5Tensor.from_bytes(_resealed(bytes(bad)))
    with pytest.raises(ValueError):
        serialized_size(bytes(bad))
    # float32 words must not carry a shift
    f32 = bytearray(quantize(np.ones((32, 2)), words=(1, "float32")).to_bytes()[:-4])
    f32[21] = 1
    with pytest.raises(ValueError, match="shift"):
        Q3P5Tensor.from_bytes(_resealed(bytes(f32)))


def test_serialized_size_rejects_bad_headers(v2_tensor):
    blob = v2_tensor.to_bytes()
    assert serialized_size(blob) == ((45, 5), 16, len(blob))
    for bad in (blob[:20], b"Q3P6" + blob[4:], blob[:4] + b"\x03\x00" + blob[6:],
                blob[:6] + b"\x08\x00" + blob[8:]):
        with pytest.raises(ValueError):
            serialized_size(bad)


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
