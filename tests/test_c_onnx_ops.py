"""The generic ONNX ops (`q35nn.onnx_node`) on the C target: the same results as the
interpreter (onnx's reference implementation), exactly on integers and bools, and on the
float ops that round once (casts, + - * /, comparisons); the transcendental ones within
1e-5 relative.

Each test builds one small ONNX model of several nodes over operands full of edge values
(0, -1, the extremes of each integer type, NaN, infinities, subnormals, ties) and compares
the two targets output by output; one model per test keeps the C compiles few. The node
suite's cases run on the C target in tests/test_onnx_node_suite.py.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from q35c.compiler.driver import Options, run_file

INT_TYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], target: str, tmp_path
         ) -> dict[str, np.ndarray]:
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    shapes = {k: v.shape for k, v in feeds.items()}
    return run_file(path, feeds, tmp_path / target, Options(target=target, passes="",
                                                           shapes=shapes))


def _model(nodes, inputs: dict[str, np.ndarray], outputs: dict[str, tuple[np.dtype, tuple]],
           opset: int = 21) -> onnx.ModelProto:
    def info(name, dtype, shape):
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(
            np.dtype(dtype)), list(shape))

    graph = helper.make_graph(nodes, "g", [info(k, v.dtype, v.shape) for k, v in inputs.items()],
                              [info(k, *v) for k, v in outputs.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _agree(model, feeds, tmp_path, rtol: float = 0.0) -> dict[str, np.ndarray]:
    interp = _run(model, feeds, "interp", tmp_path)
    c = _run(model, feeds, "c", tmp_path)
    assert interp.keys() == c.keys()
    for name, want in interp.items():
        got = c[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        if rtol and want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=rtol, atol=0, equal_nan=True,
                                       err_msg=name)
        else:
            assert np.array_equal(got.reshape(-1).view(np.uint8),
                                  want.reshape(-1).view(np.uint8)), \
                f"{name}: c {got} != interp {want}"
    return c


def _edge_ints(dtype, count: int, rng) -> np.ndarray:
    info = np.iinfo(dtype)
    edges = [0, 1, 2, 3, 7, info.max, info.min, info.max - 1, info.min + 1]
    if info.min < 0:
        edges += [-1, -2, -3, -7]
    values = rng.integers(info.min, info.max, count, dtype=dtype, endpoint=True)
    values[:len(edges)] = edges
    return values


@pytest.mark.parametrize("dtype", INT_TYPES, ids=lambda t: np.dtype(t).name)
def test_integer_arithmetic_matches_numpy_bit_for_bit(tmp_path, dtype):
    """Div (toward zero), Mod (both signs conventions), Add/Sub/Mul wrapping, Max/Min, Abs,
    Neg, Sign, BitShift, bitwise ops, comparisons, on every pair of edge values (division by
    zero and MIN / -1 included)."""
    rng = np.random.default_rng(1)
    base = _edge_ints(dtype, 24, rng)
    a = np.repeat(base, len(base)).reshape(len(base), len(base))
    b = np.tile(base, len(base)).reshape(len(base), len(base))
    signed = np.dtype(dtype).kind == "i"
    ops = [("Div", {}), ("Mod", {"fmod": 0}), ("Mod", {"fmod": 1}), ("Add", {}), ("Sub", {}),
           ("Mul", {}), ("Max", {}), ("Min", {}), ("BitwiseAnd", {}), ("BitwiseOr", {}),
           ("BitwiseXor", {}), ("Equal", {}), ("Less", {}), ("GreaterOrEqual", {})]
    if not signed:
        ops += [("BitShift", {"direction": "LEFT"}), ("BitShift", {"direction": "RIGHT"})]
    if dtype == np.int64:  # int64 Div imports as arith.divsi, whose division by 0 is an error
        b = np.where(b == 0, 1, b)
    nodes, outputs = [], {}
    for n, (op, attrs) in enumerate(ops):
        bool_out = op in ("Equal", "Less", "GreaterOrEqual")
        nodes.append(helper.make_node(op, ["a", "b"], [f"y{n}"], **attrs))
        outputs[f"y{n}"] = (np.bool_ if bool_out else dtype, a.shape)
    for n, op in enumerate(("Abs", "Neg", "Sign", "BitwiseNot") if signed else
                           ("Abs", "BitwiseNot")):
        nodes.append(helper.make_node(op, ["a"], [f"u{n}"]))
        outputs[f"u{n}"] = (dtype, a.shape)
    feeds = {"a": a, "b": b}
    _agree(_model(nodes, feeds, outputs), feeds, tmp_path)


FLOAT_EDGES = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1.5, 2.5, -2.5, 3.0, 1e-40, -1e-40,
                        1e-30, 65504.0, 65520.0, 70000.0, 3.4e38, -3.4e38, np.inf, -np.inf,
                        np.nan, 6e-8, 3e-8, 1.0009765625, 1.00048828125, 0.1, -7.25, 123.456,
                        2147483647.0, -2147483648.0, 9.3e18, -9.3e18], dtype=np.float32)


@pytest.mark.parametrize("to", [TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE,
                                TensorProto.INT8, TensorProto.INT32, TensorProto.INT64,
                                TensorProto.UINT8, TensorProto.BOOL],
                         ids=lambda t: TensorProto.DataType.Name(t))
def test_cast_from_float_rounds_like_numpy(tmp_path, to):
    """Float32 to float16/bfloat16 rounds to nearest-even once (overflow to inf, subnormals,
    ties); to integers truncates (in-range values: out of range is platform-defined in
    numpy, so the edges past the target's range are left out); to bool is != 0."""
    x = FLOAT_EDGES
    target = helper.tensor_dtype_to_np_dtype(to)
    if target.kind in "iu":
        info = np.iinfo(target)
        x = x[np.isfinite(x) & (x > info.min - 1) & (x < info.max + 1)]
    feeds = {"x": x}
    model = _model([helper.make_node("Cast", ["x"], ["y"], to=to)], feeds,
                   {"y": (target, x.shape)})
    _agree(model, feeds, tmp_path)


def test_half_types_round_trip_and_compute(tmp_path):
    """float16 and bfloat16 operands (stored as bits): arithmetic in float, rounded back."""
    rng = np.random.default_rng(2)
    outputs, nodes, feeds = {}, [], {}
    for n, dtype in enumerate((np.float16, ml_dtypes.bfloat16)):
        a = rng.standard_normal(64).astype(dtype)
        b = rng.standard_normal(64).astype(dtype)
        a[:4] = np.array([np.inf, -np.inf, np.nan, 0], dtype=np.float32).astype(dtype)
        feeds[f"a{n}"], feeds[f"b{n}"] = a, b
        for k, op in enumerate(("Add", "Mul", "Div", "Max", "Less")):
            nodes.append(helper.make_node(op, [f"a{n}", f"b{n}"], [f"y{n}_{k}"]))
            outputs[f"y{n}_{k}"] = (np.bool_ if op == "Less" else dtype, a.shape)
        nodes.append(helper.make_node("Cast", [f"a{n}"], [f"f{n}"], to=TensorProto.FLOAT))
        outputs[f"f{n}"] = (np.float32, a.shape)
    _agree(_model(nodes, feeds, outputs), feeds, tmp_path)


def test_float_unary_ops_within_1e5(tmp_path):
    """Transcendental and activation ops: libm in double, rounded once; numpy's float32
    loops may differ in the last bit, so 1e-5 relative."""
    x = np.linspace(-0.95, 0.95, 77, dtype=np.float32)
    ops = [("Sin", {}), ("Cos", {}), ("Tan", {}), ("Asin", {}), ("Acos", {}), ("Atan", {}),
           ("Sinh", {}), ("Cosh", {}), ("Asinh", {}), ("Atanh", {}), ("Exp", {}), ("Erf", {}),
           ("Sigmoid", {}), ("Softplus", {}), ("Softsign", {}), ("Elu", {"alpha": 0.7}),
           ("Selu", {}), ("Celu", {"alpha": 1.5}), ("LeakyRelu", {"alpha": 0.1}),
           ("HardSigmoid", {}), ("HardSwish", {}), ("Mish", {}), ("ThresholdedRelu", {}),
           ("Shrink", {"lambd": 0.3, "bias": 0.1}), ("Round", {}), ("Ceil", {}),
           ("Floor", {}), ("Sign", {}), ("Reciprocal", {}), ("IsNaN", {}), ("IsInf", {})]
    nodes, outputs = [], {}
    for n, (op, attrs) in enumerate(ops):
        nodes.append(helper.make_node(op, ["x"], [f"y{n}"], **attrs))
        outputs[f"y{n}"] = (np.bool_ if op.startswith("Is") else np.float32, x.shape)
    feeds = {"x": x}
    _agree(_model(nodes, feeds, outputs), feeds, tmp_path, rtol=1e-5)


def test_float64_erf_gelu_hardswish_equal_interp(tmp_path):
    """float64 Erf, Gelu and HardSwish bit for bit: the reference rounds Erf to float32
    (math.erf vectorized with otypes 'f'), and Gelu's and HardSwish's function bodies carry
    float32 constants (1/6; sqrt(2/pi) as 0.63661975 and 0.044715 for the tanh form, which
    is within 1e-12: numpy's float64 tanh and power differ from libm's in the last bit, and
    1 + tanh cancels for negative x)."""
    x = np.linspace(-3.5, 3.5, 81, dtype=np.float64)
    feeds = {"x": x}
    for sub in ("exact", "tanh"):
        (tmp_path / sub).mkdir()
    nodes = [helper.make_node("Erf", ["x"], ["erf"]),
             helper.make_node("Gelu", ["x"], ["gelu"]),
             helper.make_node("HardSwish", ["x"], ["hswish"])]
    outputs = {name: (np.float64, x.shape) for name in ("erf", "gelu", "hswish")}
    _agree(_model(nodes, feeds, outputs, opset=22), feeds, tmp_path / "exact")
    tanh = [helper.make_node("Gelu", ["x"], ["tanh"], approximate="tanh")]
    _agree(_model(tanh, feeds, {"tanh": (np.float64, x.shape)}, opset=22), feeds,
           tmp_path / "tanh", rtol=1e-12)


def test_where_isnan_and_broadcasting(tmp_path):
    """The attention guard both torch exporters write, `Where(IsNaN(s), 0, s)`, with
    And/Equal on broadcast bool masks (SmolLM2's)."""
    s = np.array([[1.0, np.nan, -2.0], [np.nan, 0.5, 3.0]], dtype=np.float32)
    m = np.array([[True], [False]])
    k = np.array([True, False, True])
    feeds = {"s": s, "m": m, "k": k}
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    nodes = [helper.make_node("IsNaN", ["s"], ["n"]),
             helper.make_node("Where", ["n", "zero", "s"], ["y"]),
             helper.make_node("And", ["m", "k"], ["mk"]),
             helper.make_node("Equal", ["m", "k"], ["eq"]),
             helper.make_node("Where", ["mk", "s", "zero"], ["z"])]
    model = _model(nodes, feeds, {"y": (np.float32, (2, 3)), "mk": (np.bool_, (2, 3)),
                                  "eq": (np.bool_, (2, 3)), "z": (np.float32, (2, 3))})
    model.graph.initializer.append(zero)
    c = _agree(model, feeds, tmp_path)
    assert np.array_equal(c["y"], np.where(np.isnan(s), 0, s))


def test_index_ops(tmp_path):
    """Gather on bools with negative indices, GatherND, GatherElements, ScatterND and
    ScatterElements with reductions."""
    rng = np.random.default_rng(3)
    data = rng.standard_normal((4, 5, 3)).astype(np.float32)
    flags = rng.integers(0, 2, (6, 1)).astype(np.bool_)
    feeds = {"data": data, "flags": flags}
    inits = {
        "gi": np.array([[0, -1], [5, 2]], np.int64),
        "ndi": np.array([[1, 2], [-1, 0], [3, 4]], np.int64),
        "ei": rng.integers(-5, 5, (4, 2, 3)).astype(np.int64),
        "su": rng.standard_normal((3, 3)).astype(np.float32),
        "eu": rng.standard_normal((4, 2, 3)).astype(np.float32),
    }
    nodes = [helper.make_node("Gather", ["flags", "gi"], ["g"], axis=0),
             helper.make_node("GatherND", ["data", "ndi"], ["nd"]),
             helper.make_node("GatherElements", ["data", "ei"], ["ge"], axis=1),
             helper.make_node("ScatterND", ["data", "ndi", "su"], ["sn"], reduction="add"),
             helper.make_node("ScatterElements", ["data", "ei", "eu"], ["se"], axis=1,
                              reduction="max")]
    model = _model(nodes, feeds, {"g": (np.bool_, (2, 2, 1)), "nd": (np.float32, (3, 3)),
                                  "ge": (np.float32, (4, 2, 3)), "sn": (np.float32, (4, 5, 3)),
                                  "se": (np.float32, (4, 5, 3))})
    model.graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in inits.items())
    _agree(model, feeds, tmp_path)


def test_axis_ops_and_reductions(tmp_path):
    """ArgMax/ArgMin (NaN first, select_last_index), CumSum (exclusive, reverse), reductions
    over non-adjacent axes, LogSoftmax, Hardmax, Trilu, Tile, on ints and floats."""
    rng = np.random.default_rng(4)
    x = rng.integers(-3, 4, (3, 4, 5)).astype(np.float32)
    x[0, 1, 2] = np.nan
    i = rng.integers(-100, 100, (3, 4, 5)).astype(np.int32)
    feeds = {"x": x, "i": i}
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [0, 2])
    one = helper.make_tensor("one", TensorProto.INT64, [], [1])
    nodes = [helper.make_node("ArgMax", ["x"], ["am"], axis=2, keepdims=0),
             helper.make_node("ArgMin", ["i"], ["an"], axis=1, select_last_index=1),
             helper.make_node("CumSum", ["i", "one"], ["cs"], exclusive=1, reverse=1),
             helper.make_node("ReduceSum", ["i", "axes"], ["rs"], keepdims=0),
             helper.make_node("ReduceMax", ["x", "axes"], ["rm"], keepdims=1),
             helper.make_node("ReduceLogSumExp", ["x", "axes"], ["rl"], keepdims=0),
             helper.make_node("LogSoftmax", ["x"], ["ls"], axis=1),
             helper.make_node("Hardmax", ["x"], ["hm"], axis=-1),
             helper.make_node("Trilu", ["i", "one"], ["tu"], upper=0)]
    model = _model(nodes, feeds, {
        "am": (np.int64, (3, 4)), "an": (np.int64, (3, 1, 5)), "cs": (np.int32, (3, 4, 5)),
        "rs": (np.int32, (4,)), "rm": (np.float32, (1, 4, 1)), "rl": (np.float32, (4,)),
        "ls": (np.float32, (3, 4, 5)), "hm": (np.float32, (3, 4, 5)),
        "tu": (np.int32, (3, 4, 5))})
    model.graph.initializer.extend([axes, one])
    _agree(model, feeds, tmp_path, rtol=1e-5)


def test_max_and_min_of_an_empty_set(tmp_path):
    """ReduceMax / ReduceMin over an empty axis give the reference's extremes (-inf / inf,
    the integer type's limits, False / True); the C target read one element past the
    (empty) input instead."""
    types = [np.float32, np.int8, np.int64, np.uint64, np.bool_]
    feeds = {f"x{k}": np.zeros((0, 3), t) for k, t in enumerate(types)}
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    nodes, outputs = [], {}
    for k, t in enumerate(types):
        for op in ("ReduceMax", "ReduceMin"):
            nodes.append(helper.make_node(op, [f"x{k}", "axes"], [f"{op}{k}"], keepdims=1))
            outputs[f"{op}{k}"] = (t, (1, 3))
    model = _model(nodes, feeds, outputs, opset=20)
    model.graph.initializer.append(axes)
    c = _agree(model, feeds, tmp_path)
    assert np.all(c["ReduceMax0"] == -np.inf) and np.all(c["ReduceMin0"] == np.inf)
    assert np.all(c["ReduceMax2"] == np.iinfo(np.int64).min)
    assert np.all(c["ReduceMin3"] == np.iinfo(np.uint64).max)
    assert not c["ReduceMax4"].any() and c["ReduceMin4"].all()


def test_rank0_constant_output_keeps_its_shape(tmp_path):
    """Size folds to a 0-d constant: the C target returned it as shape (1,) (the weight
    blob's np.ascontiguousarray made it 1-d)."""
    feeds = {"x": np.zeros((2, 3), np.float32)}
    model = _model([helper.make_node("Size", ["x"], ["y"])], feeds, {"y": (np.int64, ())})
    c = _agree(model, feeds, tmp_path)
    assert c["y"].shape == () and c["y"] == 6


def test_run_time_operands_that_only_set_shapes(tmp_path):
    """Expand's shape and Range's limit are graph inputs no step reads (their values only
    set the static output shapes): the C builds with -Werror (no unused parameter) and the
    results match; Range's start and delta are read at run time."""
    feeds = {"x": np.arange(3, dtype=np.float32).reshape(3, 1),
             "shape": np.array([2, 3, 4], np.int64), "start": np.array(5, np.int32),
             "limit": np.array(-4, np.int32), "delta": np.array(-3, np.int32)}
    nodes = [helper.make_node("Expand", ["x", "shape"], ["y"]),
             helper.make_node("Range", ["start", "limit", "delta"], ["r"])]
    model = _model(nodes, feeds, {"y": (np.float32, (2, 3, 4)), "r": (np.int32, (3,))})
    c = _agree(model, feeds, tmp_path)
    assert c["r"].tolist() == [5, 2, -1]


def test_a_lowering_refusal_names_the_model_file(tmp_path):
    """An op the up-front check accepts by op type but the C lowering refuses (here a
    training-mode Dropout without a seed) gives one line naming the model file and the op,
    exit 2, nothing written."""
    from conftest import q35c

    graph = helper.make_graph(
        [helper.make_node("Dropout", ["x", "r", "t"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("r", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("t", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    path = tmp_path / "dropout.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    result = q35c(path, "--passes", "", "--target", "c", "-o", tmp_path / "out", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(
        f'q35c: error: {path}: c target: q35nn.onnx_node "Dropout"')
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.int8, np.uint16,
                                   np.float64])
def test_transpose_and_concat_of_other_element_types(tmp_path, dtype):
    """Transpose (given and default perm) and Concat (an empty input among them) of the
    element types the dedicated converters do not take, as float16 LLM exports have them:
    strided copies, bit for bit."""
    rng = np.random.default_rng(5)
    a = rng.integers(-100, 100, (2, 3, 4)).astype(dtype)
    b = rng.integers(-100, 100, (2, 5, 4)).astype(dtype)
    e = np.zeros((2, 0, 4), dtype)
    nodes = [helper.make_node("Transpose", ["a"], ["t"], perm=[1, 2, 0]),
             helper.make_node("Transpose", ["b"], ["r"]),
             helper.make_node("Concat", ["a", "e", "b", "a"], ["c"], axis=-2)]
    model = _model(nodes, {"a": a, "b": b, "e": e},
                   {"t": (dtype, (3, 4, 2)), "r": (dtype, (4, 5, 2)), "c": (dtype, (2, 11, 4))})
    c = _agree(model, {"a": a, "b": b, "e": e}, tmp_path)
    np.testing.assert_array_equal(c["t"], a.transpose(1, 2, 0))
    np.testing.assert_array_equal(c["c"], np.concatenate([a, b, a], axis=1))


def test_transposes_and_broadcasts_of_size_1_axes_are_views(tmp_path):
    """A Transpose that moves only axes of size 1 and a broadcast that adds only axes of
    size 1 keep the bytes in order: the native lowering makes them views (no copy step),
    also when the view is a graph output or feeds another op, and the C target computes
    what the interpreter and numpy do."""
    from q35c.compiler.driver import compile_to_module
    from q35c.compiler.weights import store_of
    from q35c.targets.c import CTarget
    from q35c.targets.native.lower import lower_module

    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 4, 1, 3)).astype(np.float32)
    v = rng.standard_normal((4, 1, 3)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[2, 1, 0, 3]),
             helper.make_node("Transpose", ["x"], ["s"], perm=[0, 3, 2, 1]),
             helper.make_node("Add", ["t", "v"], ["y"])]  # v broadcast by a leading 1
    model = _model(nodes, {"x": x, "v": v}, {"t": (np.float32, (1, 4, 1, 3)),
                                             "s": (np.float32, (1, 3, 1, 4)),
                                             "y": (np.float32, (1, 4, 1, 3))})
    c = _agree(model, {"x": x, "v": v}, tmp_path)
    np.testing.assert_array_equal(c["t"], x.transpose(2, 1, 0, 3))
    np.testing.assert_array_equal(c["s"], x.transpose(0, 3, 2, 1))
    np.testing.assert_array_equal(c["y"], x.transpose(2, 1, 0, 3) + v)
    _, module = compile_to_module(tmp_path / "model.onnx", Options(
        passes="", shapes={"x": x.shape, "v": v.shape}), CTarget())
    steps = lower_module(module, store_of(module), None, "model", target="c").steps
    copies = [(s.origin, s.outs[0].shape) for s in steps if s.kernel == "copy_strided"]
    assert copies == [("linalg.transpose", (1, 3, 1, 4))], copies  # s: a real transpose
