"""ONNX control flow on the C target (issue #13): If, Loop and Scan, each body a nested
sub-program (targets/native/onnx_control.py, targets/c/onnx_control.py). The node suite's
cases run on c and on the interpreter and match the expected outputs; hand-built models
cover what the suite does not: an If inside a Loop's body, a Loop without a trip count or
without a condition, Scan's axes and directions, and the hostile cases (a huge trip count,
a loop running past its scan outputs, a loop-carried value that grows).
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings

import numpy as np
import onnx
import pytest
from conftest import require_tool
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper
from test_c_cnn import _suite
from test_c_cnn_extra import node_case_outputs

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.driver import Options, run_file

CASES = ["test_if", "test_scan9_multi_state", "test_scan9_scalar", "test_scan9_sum",
         "test_linear_attention_linear_expanded",
         "test_linear_attention_gated_delta_expanded"]
F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


@pytest.fixture(scope="module")
def suite():
    require_tool("cc")
    return _suite()


@pytest.mark.parametrize("name", CASES)
def test_node_case_on_c(suite, tmp_path, name):
    for c, interp, want in node_case_outputs(suite, tmp_path, name):
        assert suite._matches(interp, want) == ""
        assert suite._matches(c, want) == ""
        assert c.dtype == interp.dtype and c.shape == interp.shape


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], target: str, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    options = Options(target=target, passes="", shapes={k: v.shape for k, v in feeds.items()})
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_file(path, feeds, tmp_path / target, options)


def _both(model, feeds, tmp_path) -> tuple[dict, dict]:
    require_tool("cc")
    return (_run(model, feeds, "c", tmp_path), _run(model, feeds, "interp", tmp_path))


def _model(nodes, inputs, outputs, opset: int = 21) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _const(name, value):
    return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(
        np.asarray(value), name))


def _loop_body(nodes, extra_inputs=(), outputs=()):
    return helper.make_graph(nodes, "body", [_vi("i", I64, []), _vi("c", B, []),
                                             *extra_inputs], list(outputs))


def test_if_on_a_run_time_condition_reads_outer_values(tmp_path):
    then = helper.make_graph([helper.make_node("Add", ["x", "y"], ["t"])], "then", [],
                             [_vi("t", F, [2, 3])])
    other = helper.make_graph([helper.make_node("Mul", ["x", "y"], ["e"])], "else", [],
                              [_vi("e", F, [2, 3])])
    model = _model([helper.make_node("If", ["cond"], ["out"], then_branch=then,
                                     else_branch=other)],
                   [_vi("cond", B, []), _vi("x", F, [2, 3]), _vi("y", F, [2, 3])],
                   [_vi("out", F, [2, 3])])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = np.full((2, 3), 0.5, np.float32)
    for cond, want in ((True, x + y), (False, x * y)):
        c, interp = _both(model, {"cond": np.array(cond), "x": x, "y": y}, tmp_path)
        np.testing.assert_array_equal(interp["out"], want)
        np.testing.assert_array_equal(c["out"], want)


def _nested_model() -> onnx.ModelProto:
    """y = y + x on even iterations, y - 2 x on odd ones (an If in the Loop's body);
    every y is a scan output; the body's condition stops the loop after iteration 4."""
    then = helper.make_graph([helper.make_node("Add", ["y_in", "x"], ["a"])], "then", [],
                             [_vi("a", F, [3])])
    other = helper.make_graph([_const("two", np.float32(2)),
                               helper.make_node("Mul", ["x", "two"], ["x2"]),
                               helper.make_node("Sub", ["y_in", "x2"], ["s"])], "else", [],
                              [_vi("s", F, [3])])
    body = _loop_body([
        _const("k2", np.int64(2)), _const("zero", np.int64(0)), _const("four", np.int64(4)),
        helper.make_node("Mod", ["i", "k2"], ["r"]),
        helper.make_node("Equal", ["r", "zero"], ["even"]),
        helper.make_node("If", ["even"], ["y_out"], then_branch=then, else_branch=other),
        helper.make_node("Less", ["i", "four"], ["c_out"]),
        helper.make_node("Identity", ["y_out"], ["scan"]),
    ], [_vi("y_in", F, [3])], [_vi("c_out", B, []), _vi("y_out", F, [3]),
                               _vi("scan", F, [3])])
    return _model([helper.make_node("Loop", ["M", "cond", "y0"], ["y", "ys"], body=body)],
                  [_vi("M", I64, []), _vi("cond", B, []), _vi("y0", F, [3]),
                   _vi("x", F, [3])],
                  [_vi("y", F, [3]), _vi("ys", F, [5, 3])])


def _nested_expected(y0, x, iterations):
    y, ys = y0.copy(), []
    for i in range(iterations):
        y = y + x if i % 2 == 0 else y - x * np.float32(2)
        ys.append(y)
    return y, np.stack(ys)


def test_if_nested_in_loop_body_equals_interp(tmp_path):
    y0 = np.array([1, 2, 3], np.float32)
    x = np.array([0.5, -1, 2], np.float32)
    feeds = {"M": np.array(10, np.int64), "cond": np.array(True), "y0": y0, "x": x}
    c, interp = _both(_nested_model(), feeds, tmp_path)
    y, ys = _nested_expected(y0, x, 5)
    for got in (c, interp):
        np.testing.assert_array_equal(got["y"], y)
        np.testing.assert_array_equal(got["ys"], ys)


def test_loop_past_its_scan_outputs_fails_the_run(tmp_path):
    """A trip count of 3 stops the loop before the 5 iterations its scan output holds: both
    targets refuse the run with one line (the interpreter: the shape; c: the iterations)."""
    feeds = {"M": np.array(3, np.int64), "cond": np.array(True),
             "y0": np.zeros(3, np.float32), "x": np.ones(3, np.float32)}
    for target in ("c", "interp"):
        require_tool("cc")
        with pytest.raises(Q35cError) as err:
            _run(_nested_model(), feeds, target, tmp_path)
        assert "\n" not in str(err.value)
    with pytest.raises(Q35cError, match="fewer than the 5 iterations"):
        _run(_nested_model(), feeds, "c", tmp_path)


def _counting_model(with_trip: bool, with_cond: bool, declared_scan: int | None = None):
    """y += 1 per iteration; the body's condition is `i < 3` (false from iteration 3)."""
    outputs = [_vi("c_out", B, []), _vi("y_out", F, [2])]
    nodes = [_const("one", np.float32(1)), _const("three", np.int64(3)),
             helper.make_node("Add", ["y_in", "one"], ["y_out"]),
             helper.make_node("Less", ["i", "three"], ["c_out"])]
    graph_outputs = [_vi("y", F, [2])]
    loop_outputs = ["y"]
    if declared_scan is not None:
        nodes.append(helper.make_node("Identity", ["y_out"], ["scan"]))
        outputs.append(_vi("scan", F, [2]))
        graph_outputs.append(_vi("ys", F, [declared_scan, 2]))
        loop_outputs.append("ys")
    body = _loop_body(nodes, [_vi("y_in", F, [2])], outputs)
    inputs = [_vi("y0", F, [2])]
    if with_trip:
        inputs.append(_vi("M", I64, []))
    if with_cond:
        inputs.append(_vi("cond", B, []))
    node = helper.make_node("Loop", ["M" if with_trip else "", "cond" if with_cond else "",
                                     "y0"], loop_outputs, body=body)
    return _model([node], inputs, graph_outputs)


@pytest.mark.parametrize("with_trip, with_cond, iterations", [
    (True, False, 7),   # a for loop: the body's condition is ignored
    (False, True, 4),   # a while loop: iterations 0..3 (the condition false after 3)
    (True, True, 4),
])
def test_loop_with_omitted_trip_count_or_condition(tmp_path, with_trip, with_cond, iterations):
    feeds = {"y0": np.array([1, -1], np.float32)}
    if with_trip:
        feeds["M"] = np.array(7, np.int64)
    if with_cond:
        feeds["cond"] = np.array(True)
    c, interp = _both(_counting_model(with_trip, with_cond), feeds, tmp_path)
    want = feeds["y0"] + np.float32(iterations)
    np.testing.assert_array_equal(interp["y"], want)
    np.testing.assert_array_equal(c["y"], want)


def test_loop_condition_false_at_entry_runs_no_iteration(tmp_path):
    feeds = {"y0": np.array([1, -1], np.float32), "M": np.array(7, np.int64),
             "cond": np.array(False)}
    c, interp = _both(_counting_model(True, True), feeds, tmp_path)
    np.testing.assert_array_equal(c["y"], feeds["y0"])
    np.testing.assert_array_equal(interp["y"], feeds["y0"])


def test_huge_trip_count_neither_hangs_the_compiler_nor_the_run(tmp_path):
    """A trip count of 2^62 is read at run time: compiling takes no longer than for 7, and
    the body's condition ends the loop."""
    feeds = {"y0": np.zeros(2, np.float32), "M": np.array(1 << 62, np.int64),
             "cond": np.array(True)}
    start = time.process_time()
    c, interp = _both(_counting_model(True, True), feeds, tmp_path)
    assert time.process_time() - start < 60
    np.testing.assert_array_equal(c["y"], np.full(2, 4, np.float32))
    np.testing.assert_array_equal(interp["y"], c["y"])


def test_huge_trip_count_past_the_scan_outputs_fails_the_run(tmp_path):
    """Without a condition, a trip count of 2^62 would overrun the 3 rows of the declared
    scan output: the run stops at the fourth iteration with a one-line error."""
    require_tool("cc")
    model = _counting_model(True, False, declared_scan=3)
    feeds = {"y0": np.zeros(2, np.float32), "M": np.array(1 << 62, np.int64)}
    with pytest.raises(Q35cError, match="runs more than the 3 iterations") as err:
        _run(model, feeds, "c", tmp_path)
    assert "\n" not in str(err.value)
    feeds["M"] = np.array(3, np.int64)
    c, interp = _both(model, feeds, tmp_path)
    want = np.array([[1, 1], [2, 2], [3, 3]], np.float32)
    np.testing.assert_array_equal(c["ys"], want)
    np.testing.assert_array_equal(interp["ys"], want)


def test_loop_without_trip_count_or_condition_is_refused(tmp_path):
    model = _counting_model(False, False)
    feeds = {"y0": np.zeros(2, np.float32)}
    for target in ("c", "interp"):
        require_tool("cc")
        with pytest.raises(Q35cError, match="never ends") as err:
            _run(model, feeds, target, tmp_path)
        assert "\n" not in str(err.value)


def test_growing_loop_carried_value_is_refused_on_c(tmp_path):
    """A Concat that grows the loop-carried value each iteration: its final shape is
    declared, so the interpreter runs it; c compiles bodies for one static shape and says
    so in one line."""
    body = _loop_body([helper.make_node("Identity", ["c"], ["c_out"]),
                       helper.make_node("Concat", ["y_in", "x"], ["y_out"], axis=0)],
                      [_vi("y_in", F, ["n"])], [_vi("c_out", B, []), _vi("y_out", F, ["m"])])
    model = _model([helper.make_node("Loop", ["M", "", "y0"], ["y"], body=body)],
                   [_vi("M", I64, []), _vi("y0", F, [1]), _vi("x", F, [1])],
                   [_vi("y", F, [4])])
    feeds = {"M": np.array(3, np.int64), "y0": np.ones(1, np.float32),
             "x": np.full(1, 2, np.float32)}
    interp = _run(model, feeds, "interp", tmp_path)
    np.testing.assert_array_equal(interp["y"], np.array([1, 2, 2, 2], np.float32))
    require_tool("cc")
    with pytest.raises(Q35cError, match="shape changes per iteration") as err:
        _run(model, feeds, "c", tmp_path)
    assert "\n" not in str(err.value)


def test_scan_axes_and_directions_follow_the_spec(tmp_path):
    """A running sum over axis 1 of x [2, 4], read backwards; the per-step sums stacked on
    axis 1 of the output, written backwards too (onnx's reference implements axis 0 and
    forward only: semantics/onnx_node.py's Scan does the rest; numpy is the oracle)."""
    body = helper.make_graph([helper.make_node("Add", ["s_in", "xi"], ["s_out"]),
                              helper.make_node("Identity", ["s_out"], ["scan"])], "body",
                             [_vi("s_in", F, [2]), _vi("xi", F, [2])],
                             [_vi("s_out", F, [2]), _vi("scan", F, [2])])
    node = helper.make_node("Scan", ["s0", "x"], ["s", "ys"], body=body, num_scan_inputs=1,
                            scan_input_axes=[1], scan_input_directions=[1],
                            scan_output_axes=[-1], scan_output_directions=[1])
    model = _model([node], [_vi("s0", F, [2]), _vi("x", F, [2, 4])],
                   [_vi("s", F, [2]), _vi("ys", F, [2, 4])])
    s0 = np.array([10, 20], np.float32)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    c, interp = _both(model, {"s0": s0, "x": x}, tmp_path)
    sums, s = [], s0.copy()
    for t in range(3, -1, -1):  # input read backwards
        s = s + x[:, t]
        sums.append(s)
    ys = np.stack(sums[::-1], axis=1)  # output written backwards: the last sum first
    for got in (c, interp):
        np.testing.assert_array_equal(got["s"], s)
        np.testing.assert_array_equal(got["ys"], ys)


@settings(max_examples=4, deadline=None, database=None)
@given(data=st.data())
def test_scan_axes_and_directions_property(tmp_path_factory, data):
    """Any input axis and direction of a rank-3 scan input, any output axis (negative
    ones too) and direction: c equals the interpreter and numpy's moveaxis / flip, bit
    for bit (the body: a state times 0.5 plus the slice, and the slice's square)."""
    shape = tuple(data.draw(st.lists(st.integers(1, 3), min_size=3, max_size=3)))
    in_axis = data.draw(st.integers(-3, 2))
    in_dir, out_dir = data.draw(st.integers(0, 1)), data.draw(st.integers(0, 1))
    out_axis = data.draw(st.integers(-3, 2))
    piece = tuple(int(d) for d in np.delete(np.array(shape), in_axis % 3))
    half = onnx.numpy_helper.from_array(np.float32(0.5), "half")
    body = helper.make_graph(
        [helper.make_node("Constant", [], ["h"], value=half),
         helper.make_node("Mul", ["s_in", "h"], ["sh"]),
         helper.make_node("Add", ["sh", "xi"], ["s_out"]),
         helper.make_node("Mul", ["xi", "xi"], ["sq"])], "body",
        [_vi("s_in", F, list(piece)), _vi("xi", F, list(piece))],
        [_vi("s_out", F, list(piece)), _vi("sq", F, list(piece))])
    node = helper.make_node("Scan", ["s0", "x"], ["s", "ys"], body=body, num_scan_inputs=1,
                            scan_input_axes=[in_axis], scan_input_directions=[in_dir],
                            scan_output_axes=[out_axis], scan_output_directions=[out_dir])
    steps = shape[in_axis % 3]
    ys_shape = [int(d) for d in np.insert(np.array(piece), out_axis % 3, steps)]
    model = _model([node], [_vi("s0", F, list(piece)), _vi("x", F, list(shape))],
                   [_vi("s", F, list(piece)), _vi("ys", F, ys_shape)])
    rng = np.random.default_rng(abs(hash((shape, in_axis, out_axis))) % 1000)
    x = rng.standard_normal(shape).astype(np.float32)
    s0 = rng.standard_normal(piece).astype(np.float32)
    c, interp = _both(model, {"s0": s0, "x": x}, tmp_path_factory.mktemp("scan"))
    xs = np.moveaxis(x, in_axis, 0)
    xs = xs[::-1] if in_dir else xs
    s, squares = s0, []
    for t in range(steps):
        s = s * np.float32(0.5) + xs[t]
        squares.append(xs[t] * xs[t])
    ys = np.moveaxis(np.stack(squares[::-1] if out_dir else squares), 0, out_axis % 3)
    for got in (c, interp):
        np.testing.assert_array_equal(got["s"], s)
        np.testing.assert_array_equal(got["ys"], ys)


def test_loop_output_is_byte_identical_across_compiles(tmp_path):
    from q35c.compiler.driver import compile_file

    require_tool("cc")
    path = tmp_path / "m.onnx"
    onnx.save(_nested_model(), path)
    texts = []
    for out in ("a", "b"):
        with contextlib.redirect_stdout(io.StringIO()):
            compile_file(path, tmp_path / out, Options(target="c", passes=""))
        texts.append((tmp_path / out / "model.c").read_bytes())
    assert texts[0] == texts[1]


def test_bodies_read_weights_of_their_own_and_of_the_enclosing_graph(tmp_path):
    """Large initializers (they go to the weight store, then the blob) inside a body and in
    the enclosing graph, read by both branches of an If in a Scan's body."""
    rng = np.random.default_rng(3)
    inner = rng.standard_normal(100).astype(np.float32)
    outer = rng.standard_normal(100).astype(np.float32)
    then = helper.make_graph([helper.make_node("Add", ["xi", "w_inner"], ["a"])], "then", [],
                             [_vi("a", F, [100])],
                             [onnx.numpy_helper.from_array(inner, "w_inner")])
    other = helper.make_graph([helper.make_node("Mul", ["xi", "w_outer"], ["b"])], "else", [],
                              [_vi("b", F, [100])])
    body = helper.make_graph(
        [helper.make_node("ReduceSum", ["xi"], ["r"], keepdims=0),
         _const("zero", np.float32(0)),
         helper.make_node("Greater", ["r", "zero"], ["pos"]),
         helper.make_node("If", ["pos"], ["y"], then_branch=then, else_branch=other),
         helper.make_node("Add", ["s_in", "y"], ["s_out"])], "body",
        [_vi("s_in", F, [100]), _vi("xi", F, [100])],
        [_vi("s_out", F, [100]), _vi("y", F, [100])])
    graph = helper.make_graph(
        [helper.make_node("Scan", ["s0", "x"], ["s", "ys"], body=body, num_scan_inputs=1)],
        "g", [_vi("s0", F, [100]), _vi("x", F, [3, 100])],
        [_vi("s", F, [100]), _vi("ys", F, [3, 100])],
        [onnx.numpy_helper.from_array(outer, "w_outer")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    x = rng.standard_normal((3, 100)).astype(np.float32)
    x[1] = -np.abs(x[1])  # the else branch once
    x[0], x[2] = np.abs(x[0]), np.abs(x[2])
    s0 = np.zeros(100, np.float32)
    c, interp = _both(model, {"s0": s0, "x": x}, tmp_path)
    ys = np.stack([x[0] + inner, x[1] * outer, x[2] + inner])
    for got in (c, interp):
        np.testing.assert_array_equal(got["ys"], ys)
        np.testing.assert_array_equal(got["s"], s0 + ys[0] + ys[1] + ys[2])


def test_a_body_the_c_target_cannot_compile_is_refused_in_one_line(suite, tmp_path):
    """test_loop11's body slices a constant at the run-time iteration number: no static
    shape; the refusal names the Loop, its body and the Slice."""
    [case] = [c for c in suite.collect("test_loop11") if c.name == "test_loop11"]
    inputs, _ = case.data_sets[0]
    feeds = {i.name: suite._to_array(v) for i, v in zip(case.model.graph.input, inputs)}
    with pytest.raises(Q35cError, match=r"Loop.* body 'body': node 'Slice'") as err:
        _run(case.model, feeds, "c", tmp_path)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"{tmp_path / 'm.onnx'}: ")
