"""Quantized embedding tables (`quant3p5.gather`, docs/quantization.md): a tied table is
stored once, the interpreter defines the rows, the C target reproduces them bit for bit,
and the targets without a row-gather kernel (groq, cuda) still compile and agree."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import q35c
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

from q35c.compiler.driver import Options, compile_to_module
from q35c.compiler.generate import weight_storage
from q35c.compiler.quant import dequantize, quantize
from q35c.compiler.weights import WeightStore, store_of
from q35c.dialects import q35nn, quant3p5
from q35c.semantics import InterpreterError
from q35c.semantics.quant3p5 import gather_rows

VOCAB, DIM = 100, 64


def tied_model(path, tied: bool = True):
    """input_ids [1, 8] -> x = Gather(E, ids), logits = (x @ W1) @ E^T (the Transpose of the
    table itself when `tied`, else a table of its own)."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((VOCAB, DIM)).astype(np.float32)
    head = table.T if tied else rng.standard_normal((DIM, VOCAB)).astype(np.float32)
    w1 = (rng.standard_normal((DIM, DIM)) / 8).astype(np.float32)
    nodes = [helper.make_node("Gather", ["embed.weight", "input_ids"], ["x"], axis=0),
             helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1")]
    inits = [numpy_helper.from_array(table, "embed.weight"), numpy_helper.from_array(w1, "w1")]
    if tied:
        nodes.append(helper.make_node("Transpose", ["embed.weight"], ["head"], perm=[1, 0]))
    else:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(head), "head"))
    nodes.append(helper.make_node("MatMul", ["h", "head"], ["logits"], name="lm_head"))
    graph = helper.make_graph(
        nodes, "tied", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8, VOCAB]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, DIM])], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return table


IDS = np.array([[5, 0, 99, -1, 42, 5, -100, 63]], dtype=np.int64)


def _compiled(path, passes=None):
    _, module = compile_to_module(path, Options(passes=passes))
    return module, store_of(module)


def test_a_tied_table_is_stored_once_as_the_lm_heads_packed_weights(tmp_path):
    table = tied_model(tmp_path / "m.onnx")
    module, store = _compiled(tmp_path / "m.onnx")
    gathers = [op for op in module.walk() if isinstance(op, quant3p5.GatherOp)]
    heads = [op for op in module.walk() if isinstance(op, quant3p5.MatmulOp)
             and op.weights.type.get_shape() == (DIM, VOCAB)]
    assert len(gathers) == 1 and len(heads) == 1
    assert not any(isinstance(op, q35nn.GatherOp) for op in module.walk())
    packed = gathers[0].table.owner.weight_name.data
    assert heads[0].weights.owner.weight_name.data == packed
    assert gathers[0].attributes["q35c.table"].data == "embed.weight"
    # the rows are the LM head's decoded columns, and close to the float table
    rows = gather_rows(store[packed], IDS)
    assert np.array_equal(rows[0], dequantize(store[packed]).T[IDS[0] % VOCAB])
    assert np.abs(rows[0] - table[IDS[0] % VOCAB]).max() < 0.25 * np.abs(table).max()
    # counted once: 2 packed weights (w1, the tied table), both matmul weights
    storage = weight_storage(module, store)
    assert storage.params == storage.matmul_params == DIM * DIM + DIM * VOCAB
    (tmp_path / "out").mkdir()
    q35c(tmp_path / "m.onnx", "--target", "mlir", "-o", tmp_path / "out" / "m")
    saved = WeightStore(tmp_path / "out" / "m" / "m.q35w")
    assert sorted(saved.names()) == sorted(["w1.q3p5", packed])


def test_an_untied_table_is_packed_transposed_and_not_counted_as_a_matmul_weight(tmp_path):
    table = tied_model(tmp_path / "m.onnx", tied=False)
    module, store = _compiled(tmp_path / "m.onnx")
    (gather,) = [op for op in module.walk() if isinstance(op, quant3p5.GatherOp)]
    packed = store[gather.table.owner.weight_name.data]
    assert gather.table.owner.weight_name.data == "embed.weight.T.q3p5"
    assert np.array_equal(packed.to_bytes(), quantize(table.T.copy()).to_bytes())
    storage = weight_storage(module, store)
    assert storage.matmul_params == DIM * DIM + DIM * VOCAB
    assert storage.params == storage.matmul_params + VOCAB * DIM


def test_gathers_false_and_keep_float_keep_the_table_float(tmp_path):
    tied_model(tmp_path / "m.onnx")
    for passes in ("quantize-weights{gathers=false},canonicalize,cse",
                   'quantize-weights{keep-float="embed"},canonicalize,cse'):
        module, _ = _compiled(tmp_path / "m.onnx", passes)
        assert not any(isinstance(op, quant3p5.GatherOp) for op in module.walk())
        assert any(isinstance(op, q35nn.GatherOp) for op in module.walk())
        assert any(isinstance(op, quant3p5.MatmulOp) for op in module.walk())


@pytest.mark.parametrize("act", ["float", "int8"])
def test_c_target_gathers_the_interpreters_rows_bit_for_bit(tmp_path, act):
    tied_model(tmp_path / "m.onnx")
    np.save(tmp_path / "ids.npy", IDS)
    out = {}
    for target in ("interp", "c"):
        q35c("run", tmp_path / "m.onnx", "--target", target, "--act", act, "--input",
             f"input_ids={tmp_path / 'ids.npy'}", "-o", tmp_path / target)
        out[target] = {n: np.load(tmp_path / target / f"{n}.npy") for n in ("x", "logits")}
    assert np.array_equal(out["c"]["x"].view(np.uint32), out["interp"]["x"].view(np.uint32))
    if act == "int8":
        assert np.array_equal(out["c"]["logits"], out["interp"]["logits"])
    else:
        np.testing.assert_allclose(out["c"]["logits"], out["interp"]["logits"], rtol=0,
                                   atol=1e-5 * np.abs(out["interp"]["logits"]).max())


@pytest.mark.parametrize("target", ["interp", "c"])
def test_an_index_out_of_range_is_a_one_line_error(tmp_path, target):
    tied_model(tmp_path / "m.onnx")
    np.save(tmp_path / "ids.npy", np.array([[0, 1, 2, 3, 4, 5, 6, VOCAB]], np.int64))
    result = q35c("run", tmp_path / "m.onnx", "--target", target, "--input",
                  f"input_ids={tmp_path / 'ids.npy'}", "-o", tmp_path / "r", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "quant3p5.gather" in result.stderr and "out of range" in result.stderr


def test_groq_and_cuda_compile_a_tied_model_through_dequantize_gathers(tmp_path):
    tied_model(tmp_path / "m.onnx")
    np.save(tmp_path / "ids.npy", IDS)
    q35c("run", tmp_path / "m.onnx", "--target", "interp", "--input",
         f"input_ids={tmp_path / 'ids.npy'}", "-o", tmp_path / "interp")
    q35c("run", tmp_path / "m.onnx", "--target", "groq", "--input",
         f"input_ids={tmp_path / 'ids.npy'}", "-o", tmp_path / "groq")
    x_interp, x_groq = (np.load(tmp_path / t / "x.npy") for t in ("interp", "groq"))
    assert np.array_equal(x_groq.view(np.uint32), x_interp.view(np.uint32))
    q35c(tmp_path / "m.onnx", "--target", "cuda", "-o", tmp_path / "cuda", "--dump-ir",
         tmp_path / "dumps")
    final = sorted((tmp_path / "dumps").glob("*.mlir"))[-1]
    assert final.name.endswith("-dequantize-gathers.mlir")
    text = final.read_text()
    assert '"quant3p5.gather"' not in text and '"q35nn.gather"' in text
    assert (tmp_path / "cuda" / "model.cu").exists()
    q35c(tmp_path / "m.onnx", "--target", "groq", "--shape-only", "-o", tmp_path / "plan")


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 80), n=st.integers(1, 40), group=st.sampled_from([16, 32, 64]),
       seed=st.integers(0, 2**31 - 1), count=st.integers(0, 12))
def test_gathered_rows_are_the_decoded_columns(k, n, group, seed, count):
    rng = np.random.default_rng(seed)
    q = quantize(rng.standard_normal((k, n)).astype(np.float32), group_size=group)
    ids = rng.integers(-n, n, (count,))
    rows = gather_rows(q, ids)
    assert rows.shape == (count, k) and rows.dtype == np.float32
    want = dequantize(q).T[np.where(ids < 0, ids + n, ids)]
    assert np.array_equal(rows.view(np.uint32), want.view(np.uint32))
    with pytest.raises(InterpreterError, match="out of range"):
        gather_rows(q, np.array([n]))
