"""The generic ONNX path (`q35nn.onnx_node`), exact element types, `If` inlining and the
importer's one-line verifier messages (the node suite covers the operators themselves)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects import arith
from xdsl.dialects.builtin import IntegerType, Signedness, TensorType, f32
from xdsl.ir import Block
from xdsl.utils.exceptions import VerifyException

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.driver import Options, compile_to_module, run_file
from q35c.compiler.tensors import exact_element, numpy_dtype
from q35c.compiler.verification import verify_reason
from q35c.compiler.weights import store_of
from q35c.dialects import q35nn

INTERP = Options(target="interp", passes="")


def _save(tmp_path, nodes, inputs, outputs, initializers=(), opset=18, name="m.onnx"):
    graph = helper.make_graph(nodes, "m", inputs, outputs, list(initializers))
    path = tmp_path / name
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def _info(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32,
                                   np.uint32, np.int64, np.uint64, np.float16, np.float32,
                                   np.float64, ml_dtypes.bfloat16, ml_dtypes.int4,
                                   ml_dtypes.uint4, ml_dtypes.float8_e4m3fn])
def test_element_types_round_trip(dtype):
    assert numpy_dtype(exact_element(np.dtype(dtype))) == np.dtype(dtype)


def test_rollback_leaves_no_orphan_constant(tmp_path):
    """LayerNormalization over axis 0: the dedicated converter stores gamma, then refuses;
    the rollback forgets that weight, and the generic op stores it once under its name."""
    gamma = np.linspace(0.5, 1.5, 2 * 40).astype(np.float32).reshape(2, 40)
    path = _save(tmp_path, [helper.make_node("LayerNormalization", ["x", "gamma"], ["y"],
                                             name="ln", axis=0)],
                 [_info("x", TensorProto.FLOAT, [2, 40])], [_info("y", TensorProto.FLOAT, [2, 40])],
                 [numpy_helper.from_array(gamma, "gamma")])
    _, module = compile_to_module(path, Options(target="mlir", passes=""))
    assert store_of(module).names() == ["gamma"]
    ops = [op for op in module.walk() if isinstance(op, q35nn.OnnxNodeOp)]
    assert [op.op_type.data for op in ops] == ["LayerNormalization"]
    x = np.random.default_rng(0).standard_normal((2, 40)).astype(np.float32)
    got = run_file(path, {"x": x}, tmp_path / "out", INTERP)["y"]
    mean, var = x.mean(), x.var()
    np.testing.assert_allclose(got, (x - mean) / np.sqrt(var + 1e-5) * gamma, rtol=1e-4,
                               atol=1e-5)


def _if_model(tmp_path, cond):
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["t"], name="then/mul")], "then", [],
        [_info("t", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.full(3, 2, np.float32), "two")])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"], name="else/neg")],
                               "else", [], [_info("e", TensorProto.FLOAT, [3])])
    nodes = [helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_g,
                              else_branch=else_g)]
    inputs = [_info("x", TensorProto.FLOAT, [3])]
    initializers = []
    if cond is None:
        inputs.append(_info("c", TensorProto.BOOL, []))
    else:
        initializers.append(numpy_helper.from_array(np.array(cond), "c"))
    return _save(tmp_path, nodes, inputs, [_info("y", TensorProto.FLOAT, [3])], initializers,
                 name=f"if_{cond}.onnx")


@pytest.mark.parametrize("cond, want", [(True, [2, 4, 6]), (False, [-1, -2, -3])])
def test_if_on_a_known_condition_inlines_its_branch(tmp_path, cond, want):
    path = _if_model(tmp_path, cond)
    got = run_file(path, {"x": np.array([1, 2, 3], np.float32)}, tmp_path / "out", INTERP)
    assert np.array_equal(got["y"], np.array(want, np.float32))


@pytest.mark.parametrize("cond, want", [(True, [2, 4, 6]), (False, [-1, -2, -3])])
def test_if_on_a_run_time_condition_is_one_generic_op(tmp_path, cond, want):
    """Both branches travel as serialized bodies; `x`, which they read from the enclosing
    graph, is an extra operand named in `outer_names`."""
    path = _if_model(tmp_path, None)
    _, module = compile_to_module(path, INTERP)
    [op] = [op for op in module.walk() if isinstance(op, q35nn.OnnxNodeOp)]
    assert op.op_type.data == "If" and op.outer() == ["x"] and len(op.inputs) == 2
    got = run_file(path, {"x": np.array([1, 2, 3], np.float32), "c": np.array(cond)},
                   tmp_path / "out", INTERP)
    assert np.array_equal(got["y"], np.array(want, np.float32))


def test_unsupported_op_inside_an_if_branch_is_reported_up_front(tmp_path):
    branch = helper.make_graph(
        [helper.make_node("RandomUniformLike", ["x"], ["r"], name="then/random")], "then", [],
        [_info("r", TensorProto.FLOAT, [3])])
    node = helper.make_node("If", ["c"], ["y"], name="if", then_branch=branch,
                            else_branch=branch)
    path = _save(tmp_path, [node], [_info("x", TensorProto.FLOAT, [3])],
                 [_info("y", TensorProto.FLOAT, [3])],
                 [numpy_helper.from_array(np.array(True), "c")])
    with pytest.raises(Q35cError, match=r"unsupported operators: RandomUniformLike x2 "
                                        r"\(then/random, then/random\)"):
        compile_to_module(path, INTERP)


def test_shape_from_the_models_declaration_is_checked_at_run_time(tmp_path):
    """NonZero's result shape depends on the data: the declared [1, 2] is used, and data
    with another count of non-zeros is a clean error, not a wrong answer."""
    path = _save(tmp_path, [helper.make_node("NonZero", ["x"], ["y"], name="nz")],
                 [_info("x", TensorProto.FLOAT, [4])], [_info("y", TensorProto.INT64, [1, 2])])
    got = run_file(path, {"x": np.array([0, 3, 0, 5], np.float32)}, tmp_path / "a", INTERP)
    assert np.array_equal(got["y"], [[1, 3]])
    with pytest.raises(Q35cError, match="NonZero: output 0 has shape \\(1, 3\\), declared "
                                        "\\(1, 2\\)"):
        run_file(path, {"x": np.array([1, 3, 0, 5], np.float32)}, tmp_path / "b", INTERP)


def test_undeclared_data_dependent_shape_is_refused(tmp_path):
    path = _save(tmp_path, [helper.make_node("NonZero", ["x"], ["y"], name="nz"),
                            helper.make_node("Cast", ["y"], ["z"], name="cast", to=1)],
                 [_info("x", TensorProto.FLOAT, [4])], [_info("z", TensorProto.FLOAT, None)])
    with pytest.raises(Q35cError, match=r"node 'nz' \(NonZero\): the shape of output 0 depends "
                                        "on run-time values"):
        compile_to_module(path, INTERP)


def test_mistyped_attribute_of_a_generic_node_is_refused(tmp_path):
    node = helper.make_node("Mod", ["a", "a"], ["y"], name="mod")
    node.attribute.append(helper.make_attribute("fmod", 1.5))
    path = _save(tmp_path, [node], [_info("a", TensorProto.INT32, [3])],
                 [_info("y", TensorProto.INT32, [3])])
    with pytest.raises(Q35cError, match=r"node 'mod' \(Mod\): attribute 'fmod' must be INT, "
                                        "got FLOAT"):
        compile_to_module(path, INTERP)


def test_verifier_reason_is_kept_on_one_line():
    """xDSL puts the reason after "... does not verify:" on the next lines; the importer's
    messages used to stop at the colon."""
    block = Block(arg_types=[TensorType(IntegerType(8, Signedness.UNSIGNED), [2])])
    op = arith.SIToFPOp(block.args[0], TensorType(f32, [2]))
    block.add_op(op)
    with pytest.raises(VerifyException) as info:
        op.verify()
    reason = verify_reason(info.value)
    assert "\n" not in reason
    assert reason.startswith("operand 'input' at position 0 does not verify: tensor<2xui8>")


def test_exporter_patterns_import_and_run(tmp_path):
    """What torch.onnx emits around attention and positions (issue 13): Where(IsNaN(softmax),
    0, softmax), a run-time int64 -> float Cast of position ids, a run-time Cast to bool, and
    a GatherND that depends only on shapes (folded)."""
    nodes = [
        helper.make_node("Softmax", ["scores"], ["p"], name="softmax", axis=-1),
        helper.make_node("IsNaN", ["p"], ["nan"], name="isnan"),
        helper.make_node("Where", ["nan", "zero", "p"], ["attn"], name="where"),
        helper.make_node("Cast", ["pos"], ["posf"], name="cast_pos", to=TensorProto.FLOAT),
        helper.make_node("Cast", ["pos"], ["posb"], name="cast_bool", to=TensorProto.BOOL),
        helper.make_node("Shape", ["scores"], ["shape"], name="shape"),
        helper.make_node("GatherND", ["shape", "idx"], ["last"], name="gathernd"),
        helper.make_node("Cast", ["last"], ["lastf"], name="cast_last", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["posf", "lastf"], ["scaled"], name="mul"),
    ]
    path = _save(tmp_path, nodes,
                 [_info("scores", TensorProto.FLOAT, [2, 4]), _info("pos", TensorProto.INT64, [4])],
                 [_info("attn", TensorProto.FLOAT, [2, 4]), _info("scaled", TensorProto.FLOAT, [4]),
                  _info("posb", TensorProto.BOOL, [4])],
                 [numpy_helper.from_array(np.float32(0), "zero"),
                  numpy_helper.from_array(np.array([1], np.int64), "idx")])
    scores = np.array([[0, 1, 2, 3], [np.nan, 0, 0, 0]], np.float32)
    pos = np.array([0, 1, 2, 0], np.int64)
    got = run_file(path, {"scores": scores, "pos": pos}, tmp_path / "out", INTERP)
    e = np.exp(scores[0] - 3)
    np.testing.assert_allclose(got["attn"][0], e / e.sum(), rtol=1e-6)
    assert np.array_equal(got["attn"][1], np.zeros(4, np.float32))
    assert np.array_equal(got["scaled"], pos.astype(np.float32) * 4)
    assert got["posb"].dtype == np.bool_ and np.array_equal(got["posb"], pos != 0)


def test_scan_body_reading_an_outer_constant_gets_its_output_shapes(tmp_path):
    """A Scan whose body Unsqueezes with axes defined in the enclosing graph (as the expanded
    LinearAttention of the node suite does): the per-step output's shape needs the axes'
    value, which ONNX infers only from the body's own constants."""
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"]),
         helper.make_node("Unsqueeze", ["s_out", "axes"], ["y_t"])],
        "step", [_info("s_in", TensorProto.FLOAT, [3]), _info("x_t", TensorProto.FLOAT, [3])],
        [_info("s_out", TensorProto.FLOAT, [3]), _info("y_t", TensorProto.FLOAT, None)])
    path = _save(tmp_path, [
        helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(
            np.array([0], np.int64))),
        helper.make_node("Scan", ["s0", "xs"], ["s", "ys"], body=body, num_scan_inputs=1)],
        [_info("s0", TensorProto.FLOAT, [3]), _info("xs", TensorProto.FLOAT, [4, 3])],
        [_info("s", TensorProto.FLOAT, [3]), _info("ys", TensorProto.FLOAT, None)])
    xs = np.arange(12, dtype=np.float32).reshape(4, 3)
    outputs = run_file(path, {"s0": np.ones(3, np.float32), "xs": xs}, tmp_path / "out",
                       INTERP)
    want = np.ones(3, np.float32) + np.cumsum(xs, axis=0)
    np.testing.assert_array_equal(outputs["ys"], want[:, None, :])
    np.testing.assert_array_equal(outputs["s"], want[-1])


@pytest.mark.parametrize("folded", [True, False])
def test_gather_elements_over_a_long_axis(tmp_path, folded):
    """GatherElements over an axis of more than 64 entries, as torch.onnx's BERT exports
    gather token-type ids from a [1, 512] buffer: onnx's reference (1.23) fails there
    (np.choose takes at most 64 choices), so the interpreter and the import-time fold define
    it with take_along_axis; negative indices count from the end."""
    rng = np.random.default_rng(3)
    data = rng.standard_normal((3, 200)).astype(np.float32)
    index = rng.integers(-200, 200, size=(2, 9)).astype(np.int64)
    node = helper.make_node("GatherElements", ["data", "index"], ["out"], name="ge", axis=1)
    inits = [numpy_helper.from_array(data, "data")]
    inputs = [_info("index", TensorProto.INT64, [2, 9])]
    if folded:
        inits.append(numpy_helper.from_array(index, "index"))
        inputs = []
    path = _save(tmp_path, [node], inputs, [_info("out", TensorProto.FLOAT, [2, 9])], inits)
    got = run_file(path, {} if folded else {"index": index}, tmp_path / "out", INTERP)
    want = np.take_along_axis(data[:2], np.where(index < 0, index + 200, index), axis=1)
    assert np.array_equal(got["out"], want)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert np.array_equal(sess.run(None, {} if folded else {"index": index})[0], want)


def test_gather_elements_index_out_of_range_is_an_error(tmp_path):
    node = helper.make_node("GatherElements", ["data", "index"], ["out"], name="ge", axis=0)
    path = _save(tmp_path, [node], [_info("index", TensorProto.INT64, [1, 2])],
                 [_info("out", TensorProto.FLOAT, [1, 2])],
                 [numpy_helper.from_array(np.zeros((70, 2), np.float32), "data")])
    with pytest.raises(Exception, match="out of range"):
        run_file(path, {"index": np.array([[0, 70]], np.int64)}, tmp_path / "out", INTERP)


@pytest.mark.parametrize("opset", [10, 13, 17])
@pytest.mark.parametrize("folded", [True, False])
def test_dequantize_linear_below_opset_19(tmp_path, opset, folded):
    """DequantizeLinear at the opsets onnxruntime's quantization tools write below 19 (10:
    per tensor; 13: per axis): onnx's reference (1.23) implements 19 and later only, q35c
    defines the earlier forms. Folded (int8 weights, as quantize_dynamic writes them) and at
    run time, against onnxruntime."""
    rng = np.random.default_rng(opset)
    x = rng.integers(-128, 128, (4, 6)).astype(np.int8)
    per_axis = opset >= 13
    scale = (rng.random(6 if per_axis else ()) + 0.1).astype(np.float32)
    zero = rng.integers(-5, 5, 6 if per_axis else ()).astype(np.int8)
    inits = [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(zero, "zero")]
    attrs = {"axis": 1} if per_axis else {}
    node = helper.make_node("DequantizeLinear", ["x", "scale", "zero"], ["y"], name="dq",
                            **attrs)
    inputs = [_info("x", TensorProto.INT8, [4, 6])]
    if folded:
        inits.append(numpy_helper.from_array(x, "x"))
        inputs = []
    path = _save(tmp_path, [node], inputs, [_info("y", TensorProto.FLOAT, [4, 6])], inits,
                 opset=opset)
    feeds = {} if folded else {"x": x}
    got = run_file(path, feeds, tmp_path / "out", INTERP)["y"]
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_array_equal(got, want[0])
    np.testing.assert_array_equal(got, (x.astype(np.float32) - zero) * scale)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_global_lp_pool(tmp_path, p):
    """GlobalLpPool, which onnx's reference (1.23) lacks, against onnxruntime."""
    x = np.random.default_rng(p).standard_normal((2, 3, 4, 5)).astype(np.float32)
    node = helper.make_node("GlobalLpPool", ["x"], ["y"], name="lp", p=p)
    path = _save(tmp_path, [node], [_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
                 [_info("y", TensorProto.FLOAT, [2, 3, 1, 1])])
    got = run_file(path, {"x": x}, tmp_path / "out", INTERP)["y"]
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_every_operator_q35c_defines_is_accepted_by_the_generic_op():
    from q35c.semantics.onnx_node import REFERENCE_FIXES

    assert {fix.__name__ for fix in REFERENCE_FIXES} <= q35nn.onnx_generic_ops()


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT32])
def test_shape_of_a_generic_tensor_is_a_constant(tmp_path, dtype):
    """Shape and Size of a tensor of a type the dedicated converters do not take (float16
    exports) stay compile-time constants, so the Reshape / Slice they feed has a static
    shape (the legacy exporter's float16 ViT and Phi-3 graphs)."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Size", ["x"], ["n"], name="size"),
             helper.make_node("Gather", ["s", "zero"], ["d0"], name="g", axis=0),
             helper.make_node("Div", ["n", "d0"], ["rest"], name="div"),
             helper.make_node("Concat", ["d0", "rest"], ["target"], name="cat", axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape")]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero")]
    path = _save(tmp_path, nodes, [_info("x", dtype, [2, 3, 4])], [_info("y", dtype, None)],
                 inits)
    x = np.arange(24).reshape(2, 3, 4).astype(helper.tensor_dtype_to_np_dtype(dtype))
    got = run_file(path, {"x": x}, tmp_path / "out", INTERP)["y"]
    np.testing.assert_array_equal(got, x.reshape(2, 12))
