"""The integer rescale contract of `quant3p5.matmul_int8` (`rescale_rows`,
`int8-activations{int-rescale=N}`, `groq{scales=int}`): its definition in the interpreter,
its verifier, and the Groq simulator bit-exact with it on the example models
(docs/groq.md, "The integer rescale contract")."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from conftest import EXAMPLES, MODELS_DIR, hidden_input, ids_input, q35c, x_input
from hypothesis import given, settings, strategies as st
from test_groq_target import assert_cost_model_matches

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.driver import Options, compile_to_module
from q35c.compiler.quant import dequantize, integer_levels, quantize
from q35c.compiler.weights import store_of
from q35c.dialects import quant3p5
from q35c.semantics import Interpreter, run_module
from q35c.semantics.quant3p5 import (
    INT_SCALE_MAX,
    int_block_totals,
    int_scaled,
    matmul_int8_int,
)
from q35c.targets.groq import compile_module
from q35c.targets.groq.machine import load_machine, with_layout
from q35c.targets.groq.simulate import simulate

INT = "default,int8-activations{int-rescale=320}"
MACHINE = load_machine()
MODELS = {
    "mlp": (EXAMPLES / "mlp.mlir", {}, (4, 128), x_input),
    "llama_tiny": (MODELS_DIR / "llama_tiny.onnx", {"input_ids": (1, 8)}, (1, 8), ids_input),
    "llama_tiny@2x5": (MODELS_DIR / "llama_tiny.onnx", {"input_ids": (2, 5)}, (2, 5), ids_input),
    "encoder_tiny": (MODELS_DIR / "encoder_tiny.onnx", {"hidden": (1, 8, 64)}, (1, 8, 64),
                     hidden_input),
}


def _weights(k: int, n: int, group: int, seed: int, tail: bool = False):
    rng = np.random.default_rng(seed)
    w = (rng.standard_t(3, (k, n)) if tail else rng.standard_normal((k, n))).astype(np.float32)
    return quantize(w, group_size=group)


# -- the contract in the interpreter ----------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 200), n=st.integers(1, 24), rows=st.integers(1, 3),
       group=st.sampled_from([16, 32, 64]), per_block=st.integers(1, 4),
       seed=st.integers(0, 2**16), tail=st.booleans())
def test_int_contract_blocks_are_exact_and_close_to_the_float_contract(
        k, n, rows, group, per_block, seed, tail):
    """The float64 block sums are the exact int64 sums of s * (q . levels) per group; the
    weights keep int8 levels and uint8 scales; the product is the contract's weights times
    the activations up to float32 rounding."""
    packed = _weights(k, n, group, seed, tail)
    w = int_scaled(packed)
    assert w.levels.dtype == np.int8 and np.abs(w.levels.astype(int)).max() <= 127
    assert w.scales.min() >= 0 and w.scales.max() <= INT_SCALE_MAX
    block = group * per_block
    rng = np.random.default_rng(seed + 1)
    q = rng.integers(-127, 128, (rows, k)).astype(np.int8)
    totals = int_block_totals(q, w, block)
    levels = w.levels.astype(np.int64)
    for b, b0 in enumerate(range(0, k, block)):
        want = np.zeros((rows, n), np.int64)
        for g0 in range(b0, min(k, b0 + block), group):
            g1 = min(k, g0 + group)
            want += (q[:, g0:g1].astype(np.int64) @ levels[g0:g1]) * w.scales[g0 // group]
        assert np.array_equal(totals[b], want)
    row_scale = np.full(rows, 0.01, np.float32)
    y = matmul_int8_int(q, row_scale, packed, block)
    exact = (q.astype(np.float64) @ w.dequantized().astype(np.float64)) * 0.01
    assert np.allclose(y, exact, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(exact).max()))


def test_int_contract_weights_stay_near_the_q3p5_weights():
    """What the contract changes against Q3P5 (scales rounded to 8 bits of the column's
    largest, offsets to whole steps) is small against Q3P5's own error."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((512, 64)).astype(np.float32)
    packed = quantize(w)
    q3p5, ints = dequantize(packed), int_scaled(packed).dequantized()
    rms = np.sqrt((w ** 2).mean())
    base_err = np.sqrt(((q3p5 - w) ** 2).mean()) / rms
    int_err = np.sqrt(((ints - w) ** 2).mean()) / rms
    assert int_err < base_err * 1.02
    assert np.sqrt(((ints - q3p5) ** 2).mean()) / rms < 0.2 * base_err


def test_int_contract_levels_are_the_codebook_levels_plus_a_group_offset():
    packed = _weights(96, 8, 32, 3)
    w = int_scaled(packed)
    shift = w.levels.astype(int) - integer_levels(packed)
    for g in range(3):
        block = shift[32 * g:32 * (g + 1)]
        assert (block == block[0]).all()


def test_matmul_int8_op_verifier_and_pass_option():
    from xdsl.utils.exceptions import VerifyException

    ctx, module = compile_to_module(EXAMPLES / "mlp.mlir", Options(passes=INT))
    ops = [op for op in module.walk() if isinstance(op, quant3p5.MatmulInt8Op)]
    assert ops and all(op.rescale_rows.value.data % op.weights.type.group == 0 for op in ops)
    op = ops[0]
    group = op.weights.type.group
    for bad in (group + 1, 0, (quant3p5.INT_RESCALE_MAX_ROWS // group + 1) * group):
        op.attributes["rescale_rows"] = quant3p5.IntegerAttr(bad, quant3p5.i64)
        with pytest.raises(VerifyException, match="rescale_rows"):
            op.verify()
    r = q35c(EXAMPLES / "mlp.mlir", "--passes", "default,int8-activations{int-rescale=999}",
             "-o", "/nonexistent-dir-q35c", check=False)
    assert r.returncode == 2 and "int-rescale" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# -- the Groq target: simulator bit-exact with the contract -----------------------------------

@functools.cache
def compiled(name: str):
    path, shapes, _, _ = MODELS[name]
    ctx, module = compile_to_module(path, Options(passes=INT, shapes=shapes))
    store = store_of(module)
    return module, store, compile_module(ctx, module, store, scales="int", levels="int8")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_groq_int_scales_bit_exact_with_the_interpreter(name):
    module, store, c = compiled(name)
    _, _, shape, make = MODELS[name]
    inputs = make(np.random.default_rng(7), shape)
    want = run_module(module, store, inputs)
    got = simulate(c.doc, c.image, MACHINE, c.ops, Interpreter(c.module, store), inputs)
    assert sorted(got) == sorted(want)
    for key in want:
        assert np.array_equal(got[key], want[key]), key
    rescales = [ins for ins in c.doc["instructions"] if ins["op"] == "rescale"]
    assert rescales and all(ins["block"] > 0 and ins["scales"] for ins in rescales)


def test_groq_int_scales_differ_from_the_float_contract():
    """The contract is other numerics: the same model in the float contract gives other
    bits (so the bit-exact test above compares the right path)."""
    module, store, _ = compiled("llama_tiny")
    path, shapes, shape, make = MODELS["llama_tiny"]
    _, floats = compile_to_module(path, Options(passes="default,int8-activations",
                                                shapes=shapes))
    inputs = make(np.random.default_rng(7), shape)
    a = run_module(module, store, inputs)["logits"]
    b = run_module(floats, store_of(floats), inputs)["logits"]
    assert not np.array_equal(a, b)
    assert np.abs(a - b).max() < 0.05 * np.abs(b).max()


def test_groq_int_scales_cost_model_counts_match_the_schedule():
    _, _, c = compiled("llama_tiny")
    assert_cost_model_matches(with_layout(MACHINE, "int", "int8"), c)


def test_groq_int_scales_mismatches_are_one_line_errors():
    with pytest.raises(Q35cError, match="scales=int .* needs levels=int8"):
        with_layout(MACHINE, "int", "packed")
    path, shapes, _, _ = MODELS["mlp"]
    ctx, floats = compile_to_module(path, Options(passes="default,int8-activations",
                                                  shapes=shapes))
    with pytest.raises(Q35cError, match="float rescale contract but the target compiles "
                                        "scales=int"):
        compile_module(ctx, floats, store_of(floats), scales="int", levels="int8")
    module, store, _ = compiled("mlp")
    with pytest.raises(Q35cError, match="integer rescale contract but the target compiles "
                                        "scales=f32"):
        compile_module(ctx, module, store, scales="f32", levels="int8")
    r = q35c(EXAMPLES / "mlp.mlir", "--target", "groq{scales=int}", "-o",
             "/nonexistent-dir-q35c", check=False)
    assert r.returncode == 2 and "needs levels=int8" in r.stderr


def test_other_targets_reject_the_integer_contract(tmp_path):
    """The C target (and CUDA, which shares its lowering) do not implement the contract:
    one line, exit 2, nothing written, rather than the float contract's numbers."""
    r = q35c(EXAMPLES / "mlp.mlir", "--target", "c", "--passes", INT, "-o", tmp_path / "c",
             check=False)
    assert r.returncode == 2 and "integer rescale contract" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()
