"""Errors on bad ONNX input: one line naming the file and the node, exit code 2, nothing
written; `--shape` binding; external data (lazy, confined to the model's directory); and a
hypothesis fuzz test that mutates valid models and checks that no traceback escapes.

The mutations (below) edit a `ModelProto` drawing their choices from a `Picker`, so the same
code runs under hypothesis (deterministic in CI) and from `random.Random` to explore with
many more examples than CI can afford:

    python tests/test_onnx_errors.py 5000 SEED     # prints each distinct problem found

(`FUZZ_KEEP=DIR` keeps the first model of each problem; `Q35C_FUZZ_SCALE=10` runs the
hypothesis tests with ten times the examples.)
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import EXAMPLES, q35c
from hypothesis import HealthCheck, given, settings, strategies as st
from onnx import AttributeProto, TensorProto, helper, numpy_helper
from test_cli import assert_user_error

from q35c.compiler.driver import Options, run_file

MODELS_DIR = EXAMPLES / "models"
INVALID_DIR = MODELS_DIR / "invalid"


# -- mutation machinery --------------------------------------------------------------------


class Picker:
    """Where a mutation's choices come from."""

    def int(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def choice(self, seq):
        seq = list(seq)
        return seq[self.int(0, len(seq) - 1)]

    def bool(self) -> bool:
        return self.int(0, 1) == 1

    def float(self) -> float:
        return self.choice([0.0, 1.0, -1.0, 0.5, 2.0, 1e-5, 1e30, -1e30, float("inf"),
                            float("nan"), 3.0])


class RandomPicker(Picker):
    def __init__(self, rng: random.Random):
        self.rng = rng

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)


class HypothesisPicker(Picker):
    def __init__(self, data):
        self.data = data

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))


# -- seed models -------------------------------------------------------------------------


def _init(name: str, array) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def mlp_model() -> onnx.ModelProto:
    """MatMul (quantized: 16x64), Add, Relu, Gemm transB, Softmax; static shapes."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((16, 64)) * 0.1).astype(np.float32)
    b1 = (rng.standard_normal(64) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((32, 64)) * 0.1).astype(np.float32)
    b2 = np.zeros(32, np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "fc1.weight"], ["h0"], name="/fc1/MatMul"),
        helper.make_node("Add", ["h0", "fc1.bias"], ["h1"], name="/fc1/Add"),
        helper.make_node("Relu", ["h1"], ["h2"], name="/act/Relu"),
        helper.make_node("Gemm", ["h2", "fc2.weight", "fc2.bias"], ["h3"], name="/fc2/Gemm",
                         transB=1, alpha=1.0, beta=1.0),
        helper.make_node("Softmax", ["h3"], ["probs"], name="/head/Softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [4, 32])],
        initializer=[_init("fc1.weight", w1), _init("fc1.bias", b1), _init("fc2.weight", w2),
                     _init("fc2.bias", b2)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def shapes_model() -> onnx.ModelProto:
    """Shape arithmetic and data movement: the ops exporters emit around attention."""
    rng = np.random.default_rng(1)
    emb = (rng.standard_normal((32, 16)) * 0.1).astype(np.float32)
    norm = np.ones(16, np.float32)
    nodes = [
        helper.make_node("Gather", ["embed.weight", "ids"], ["h"], name="/embed/Gather"),
        helper.make_node("Shape", ["h"], ["shape"], name="/Shape"),
        helper.make_node("Constant", [], ["one"], name="/Constant_1",
                         value=helper.make_tensor("v", TensorProto.INT64, [1], [1])),
        helper.make_node("Gather", ["shape", "one"], ["seq"], name="/Gather_seq", axis=0),
        helper.make_node("Constant", [], ["zero"], name="/Constant_0",
                         value=helper.make_tensor("v", TensorProto.INT64, [], [0])),
        helper.make_node("Squeeze", ["seq"], ["seq_s"], name="/Squeeze"),
        helper.make_node("Range", ["zero", "seq_s", "one_s"], ["pos"], name="/Range"),
        helper.make_node("Cast", ["pos"], ["posf"], name="/Cast", to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["posf", "ax1"], ["posf2"], name="/Unsqueeze"),
        helper.make_node("Sin", ["posf2"], ["sin"], name="/Sin"),
        helper.make_node("Add", ["h", "sin"], ["h2"], name="/Add_pos"),
        helper.make_node("Pow", ["h2", "two"], ["sq"], name="/norm/Pow"),
        helper.make_node("ReduceMean", ["sq", "axm1"], ["ms"], name="/norm/ReduceMean",
                         keepdims=1),
        helper.make_node("Sqrt", ["ms"], ["rms"], name="/norm/Sqrt"),
        helper.make_node("Div", ["h2", "rms"], ["hn"], name="/norm/Div"),
        helper.make_node("Mul", ["hn", "norm.weight"], ["hw"], name="/norm/Mul"),
        helper.make_node("Reshape", ["hw", "heads"], ["hr"], name="/Reshape"),
        helper.make_node("Transpose", ["hr"], ["ht"], name="/Transpose", perm=[0, 2, 1, 3]),
        helper.make_node("Slice", ["ht", "s_start", "s_end", "s_axes"], ["hs"], name="/Slice"),
        helper.make_node("Neg", ["hs"], ["hneg"], name="/Neg"),
        helper.make_node("Concat", ["hneg", "hs"], ["hc"], name="/Concat", axis=-1),
        helper.make_node("ConstantOfShape", ["mask_shape"], ["ones"], name="/ConstantOfShape",
                         value=helper.make_tensor("v", TensorProto.BOOL, [1], [True])),
        helper.make_node("Trilu", ["ones"], ["upper"], name="/Trilu", upper=1),
        helper.make_node("Where", ["upper", "neg_inf", "fzero"], ["mask"], name="/Where"),
        helper.make_node("MatMul", ["hc", "hcT"], ["scores"], name="/MatMul_qk"),
        helper.make_node("Add", ["scores", "mask"], ["masked"], name="/Add_mask"),
        helper.make_node("Softmax", ["masked"], ["probs"], name="/Softmax", axis=-1),
        helper.make_node("Transpose", ["hc"], ["hcT"], name="/Transpose_k", perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["probs", "hc"], ["ctx"], name="/MatMul_pv"),
        helper.make_node("Transpose", ["ctx"], ["ctx_t"], name="/Transpose_out",
                         perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_t", "flat"], ["out"], name="/Reshape_out"),
        helper.make_node("Expand", ["out", "out_shape"], ["y"], name="/Expand"),
    ]
    # /Transpose_k is listed after its user: move it into topological order.
    nodes.insert(24, nodes.pop(27))
    inits = [
        _init("embed.weight", emb), _init("norm.weight", norm),
        _init("one_s", np.array(1, np.int64)), _init("ax1", np.array([1], np.int64)),
        _init("two", np.array(2.0, np.float32)), _init("axm1", np.array([-1], np.int64)),
        _init("heads", np.array([0, 0, 2, 8], np.int64)),
        _init("s_start", np.array([0], np.int64)), _init("s_end", np.array([4], np.int64)),
        _init("s_axes", np.array([3], np.int64)),
        _init("mask_shape", np.array([5, 5], np.int64)),
        _init("neg_inf", np.array(-1e9, np.float32)), _init("fzero", np.array(0.0, np.float32)),
        _init("flat", np.array([0, 0, 16], np.int64)),
        _init("out_shape", np.array([2, 1, 1], np.int64)),
    ]
    graph = helper.make_graph(
        nodes, "shapes", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 16])],
        initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def seed_models() -> dict[str, tuple[onnx.ModelProto, list[str]]]:
    """name -> (model, CLI arguments that bind its dynamic dims)."""
    return {
        "mlp": (mlp_model(), []),
        "shapes": (shapes_model(), []),
        "encoder_tiny": (onnx.load(MODELS_DIR / "encoder_tiny.onnx"),
                         ["--shape", "hidden=2,3,64"]),
        "llama_tiny": (onnx.load(MODELS_DIR / "llama_tiny.onnx"), ["--shape", "input_ids=1,3"]),
    }


# -- mutations ---------------------------------------------------------------------------

OP_TYPES = [
    "Add", "Sub", "Mul", "Div", "Pow", "MatMul", "Gemm", "Relu", "Sigmoid", "Softmax",
    "Gelu", "LayerNormalization", "RMSNormalization", "Reshape", "Transpose", "Concat",
    "Slice", "Split", "Gather", "Expand", "Where", "Equal", "Less", "Cast", "ReduceMean",
    "ReduceSum", "ReduceMax", "Unsqueeze", "Squeeze", "Flatten", "Shape", "Size", "Identity",
    "Dropout", "Exp", "Log", "Sqrt", "Neg", "Reciprocal", "Range", "ConstantOfShape", "Trilu",
    "Tile", "Einsum", "Mod", "ArgMax", "DequantizeLinear", "Constant", "Max", "Min", "Abs",
    "LSTM", "TopK", "NoSuchOp", "If", "Loop", "Scan",
]
ATTRIBUTE_NAMES = ["axis", "axes", "perm", "transA", "transB", "alpha", "beta", "to",
                   "keepdims", "epsilon", "approximate", "start", "end", "allowzero", "split",
                   "noop_with_empty_axes", "upper", "value", "value_float", "value_ints",
                   "block_size", "equation", "stash_type"]
DTYPES = [v for v in TensorProto.DataType.values()] + [99, -1]
INTS = [0, 1, -1, 2, 3, -2, 7, 64, 1000, -1000, 2**31, 2**62, -(2**63)]


def _all_values(graph: onnx.GraphProto) -> list[str]:
    names = [i.name for i in graph.input] + [t.name for t in graph.initializer]
    names += [o for n in graph.node for o in n.output]
    return names or ["x"]


def _ints(p: Picker, max_len: int = 5) -> list[int]:
    return [p.choice(INTS) for _ in range(p.int(0, max_len))]


def _node(p: Picker, graph: onnx.GraphProto) -> onnx.NodeProto | None:
    return graph.node[p.int(0, len(graph.node) - 1)] if graph.node else None


def drop_node(p, model):
    if model.graph.node:
        del model.graph.node[p.int(0, len(model.graph.node) - 1)]


def duplicate_node(p, model):
    node = _node(p, model.graph)
    if node is not None:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        model.graph.node.insert(p.int(0, len(model.graph.node)), copy)


def swap_nodes(p, model):
    nodes = model.graph.node
    if len(nodes) > 1:
        i, j = p.int(0, len(nodes) - 1), p.int(0, len(nodes) - 1)
        a, b = onnx.NodeProto(), onnx.NodeProto()
        a.CopyFrom(nodes[i])
        b.CopyFrom(nodes[j])
        nodes[i].CopyFrom(b)
        nodes[j].CopyFrom(a)


def _set_attribute_value(p: Picker, attr: AttributeProto) -> None:
    kind = p.choice(["same", "int", "float", "ints", "string", "tensor", "floats"])
    if kind == "same":
        kind = {AttributeProto.INT: "int", AttributeProto.FLOAT: "float",
                AttributeProto.INTS: "ints", AttributeProto.STRING: "string",
                AttributeProto.TENSOR: "tensor", AttributeProto.FLOATS: "floats"}.get(
            attr.type, "int")
    name = attr.name
    attr.Clear()
    attr.name = name
    if kind == "int":
        attr.type, attr.i = AttributeProto.INT, p.choice(INTS)
    elif kind == "float":
        attr.type, attr.f = AttributeProto.FLOAT, p.float()
    elif kind == "ints":
        attr.type = AttributeProto.INTS
        attr.ints.extend(_ints(p))
    elif kind == "floats":
        attr.type = AttributeProto.FLOATS
        attr.floats.extend(p.float() for _ in range(p.int(0, 3)))
    elif kind == "string":
        attr.type = AttributeProto.STRING
        attr.s = p.choice([b"", b"tanh", b"none", b"ij,jk->ik", b"\xff\xfe", b"abc"])
    else:
        attr.type = AttributeProto.TENSOR
        attr.t.CopyFrom(_random_tensor(p))


def _random_tensor(p: Picker) -> TensorProto:
    dtype = p.choice([np.float32, np.int64, np.bool_, np.float16, np.int32, np.uint8,
                      np.float64])
    shape = [p.int(0, 3) for _ in range(p.int(0, 3))]
    array = np.full(shape, p.choice([0, 1, -1, 7])).astype(dtype)
    return numpy_helper.from_array(array, "t")


def change_attribute(p, model):
    nodes = [n for n in model.graph.node if n.attribute]
    if nodes:
        node = p.choice(nodes)
        _set_attribute_value(p, node.attribute[p.int(0, len(node.attribute) - 1)])


def add_attribute(p, model):
    node = _node(p, model.graph)
    if node is not None:
        attr = node.attribute.add()
        attr.name = p.choice(ATTRIBUTE_NAMES)
        _set_attribute_value(p, attr)


def drop_attribute(p, model):
    nodes = [n for n in model.graph.node if n.attribute]
    if nodes:
        node = p.choice(nodes)
        del node.attribute[p.int(0, len(node.attribute) - 1)]


def change_op_type(p, model):
    node = _node(p, model.graph)
    if node is not None:
        node.op_type = p.choice(OP_TYPES)


def change_domain(p, model):
    node = _node(p, model.graph)
    if node is not None:
        node.domain = p.choice(["com.microsoft", "ai.onnx", "bogus.domain", ""])


def rename_input(p, model):
    nodes = [n for n in model.graph.node if n.input]
    if nodes:
        node = p.choice(nodes)
        k = p.int(0, len(node.input) - 1)
        node.input[k] = p.choice(_all_values(model.graph) + ["", "no_such_value"])


def rename_output(p, model):
    nodes = [n for n in model.graph.node if n.output]
    if nodes:
        node = p.choice(nodes)
        k = p.int(0, len(node.output) - 1)
        node.output[k] = p.choice(_all_values(model.graph) + ["", "fresh_value"])


def add_input_or_output(p, model):
    node = _node(p, model.graph)
    if node is not None:
        target = node.input if p.bool() else node.output
        target.append(p.choice(_all_values(model.graph) + ["", "extra"]))


def drop_input_or_output(p, model):
    node = _node(p, model.graph)
    if node is not None:
        target = node.input if p.bool() else node.output
        if target:
            del target[p.int(0, len(target) - 1)]


def _initializer(p, model) -> TensorProto | None:
    inits = model.graph.initializer
    return inits[p.int(0, len(inits) - 1)] if inits else None


def change_initializer_dims(p, model):
    t = _initializer(p, model)
    if t is not None:
        dims = list(t.dims)
        how = p.choice(["swap", "random", "drop", "add", "zero"])
        if how == "swap" and len(dims) > 1:
            dims.reverse()
        elif how == "random":
            dims = [p.choice([0, 1, 2, 3, 8, 16, 64, -1, 2**40]) for _ in range(p.int(0, 4))]
        elif how == "drop" and dims:
            dims.pop()
        elif how == "add":
            dims.append(p.choice([1, 2, 3]))
        elif how == "zero" and dims:
            dims[p.int(0, len(dims) - 1)] = 0
        del t.dims[:]
        t.dims.extend(dims)


def change_initializer_dtype(p, model):
    t = _initializer(p, model)
    if t is not None:
        t.data_type = p.choice(DTYPES)


def change_initializer_data(p, model):
    t = _initializer(p, model)
    if t is not None:
        how = p.choice(["truncate_raw", "to_float_data", "clear", "garbage"])
        if how == "truncate_raw" and t.raw_data:
            t.raw_data = t.raw_data[: p.int(0, len(t.raw_data) - 1)]
        elif how == "to_float_data":
            t.raw_data = b""
            t.float_data.extend([1.0] * p.int(0, 5))
        elif how == "clear":
            t.raw_data = b""
        else:
            t.raw_data = bytes(p.int(0, 255) for _ in range(p.int(0, 9)))


def drop_initializer(p, model):
    if model.graph.initializer:
        del model.graph.initializer[p.int(0, len(model.graph.initializer) - 1)]


def rename_initializer(p, model):
    t = _initializer(p, model)
    if t is not None:
        t.name = p.choice(_all_values(model.graph) + ["", "renamed"])


def external_data(p, model):
    """Move an initializer to external data; the file may or may not be written (see
    `EXTERNAL_FILE`)."""
    t = _initializer(p, model)
    if t is None:
        return
    t.raw_data = b""
    del t.float_data[:], t.int64_data[:], t.int32_data[:]
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    entries = {"location": p.choice([EXTERNAL_FILE, EXTERNAL_FILE, "../escape.bin",
                                     "/etc/hostname", "", "sub/../" + EXTERNAL_FILE,
                                     "missing.bin", "."])}
    if p.bool():
        entries["offset"] = p.choice(["0", "4", "64", "-8", "abc", "99999999"])
    if p.bool():
        entries["length"] = p.choice(["0", "16", "4096", "-1", "x", "99999999"])
    for key, value in entries.items():
        entry = t.external_data.add()
        entry.key, entry.value = key, value


EXTERNAL_FILE = "weights.bin"
EXTERNAL_BYTES = np.linspace(-1, 1, 4096, dtype=np.float32).tobytes()
"""What `external_data` mutations may point at: written next to every fuzzed model."""


def change_graph_input(p, model):
    inputs = model.graph.input
    if not inputs:
        return
    info = inputs[p.int(0, len(inputs) - 1)]
    how = p.choice(["elem_type", "dims", "dim_param", "no_shape", "rename", "drop"])
    ttype = info.type.tensor_type
    if how == "elem_type":
        ttype.elem_type = p.choice(DTYPES)
    elif how == "dims" and ttype.HasField("shape"):
        for dim in ttype.shape.dim:
            if p.bool():
                dim.dim_value = p.choice([0, 1, 2, 3, 7, 64, -1])
        if p.bool():
            ttype.shape.dim.add().dim_value = p.choice([1, 2])
    elif how == "dim_param" and ttype.HasField("shape") and ttype.shape.dim:
        ttype.shape.dim[p.int(0, len(ttype.shape.dim) - 1)].dim_param = "dyn"
    elif how == "no_shape":
        ttype.ClearField("shape")
    elif how == "rename":
        info.name = p.choice(_all_values(model.graph) + ["renamed_input"])
    elif how == "drop":
        del inputs[p.int(0, len(inputs) - 1)]


def change_graph_output(p, model):
    outputs = model.graph.output
    if not outputs:
        return
    info = outputs[p.int(0, len(outputs) - 1)]
    how = p.choice(["elem_type", "dims", "rename", "drop", "add"])
    ttype = info.type.tensor_type
    if how == "elem_type":
        ttype.elem_type = p.choice(DTYPES)
    elif how == "dims":
        ttype.ClearField("shape")
        for _ in range(p.int(0, 4)):
            ttype.shape.dim.add().dim_value = p.choice([0, 1, 2, 4, 5, 16, 32])
    elif how == "rename":
        info.name = p.choice(_all_values(model.graph) + ["renamed_output"])
    elif how == "drop":
        del outputs[p.int(0, len(outputs) - 1)]
    else:
        outputs.add().CopyFrom(helper.make_tensor_value_info(
            p.choice(_all_values(model.graph)), TensorProto.FLOAT, None))


def change_opset(p, model):
    version = p.choice([1, 7, 11, 12, 13, 17, 18, 21, 23, 99, 0, -1])
    if model.opset_import:
        model.opset_import[0].version = version
    if p.bool():
        model.ir_version = p.choice([0, 3, 7, 10, 99])


def clear_graph(p, model):
    how = p.choice(["nodes", "graph", "opset"])
    if how == "nodes":
        del model.graph.node[:]
    elif how == "graph":
        model.ClearField("graph")
    else:
        del model.opset_import[:]


# Mutations that keep the graph well-formed, so the importer gets past its structural checks
# and the converters see odd shapes, values and attributes: that is where bugs hide.


def _random_array(p: Picker, dtype) -> np.ndarray:
    shape = [p.choice([1, 1, 2, 3, 4, 8, 16, 64]) for _ in range(p.int(0, 4))]
    values = p.choice(["normal", "ints", "special", "zeros"])
    rng = np.random.default_rng(p.int(0, 1000))
    if values == "normal":
        array = rng.standard_normal(shape)
    elif values == "ints":
        array = rng.integers(-3, 70, size=shape)
    elif values == "special":
        array = rng.choice([np.inf, -np.inf, np.nan, 1e30, -2.0**63, 0.0], size=shape)
    else:
        array = np.zeros(shape)
    with np.errstate(all="ignore"):
        return np.asarray(array).astype(dtype)


def reshape_initializer(p, model):
    """Replace an initializer by a consistent tensor of another shape (and maybe values)."""
    t = _initializer(p, model)
    if t is not None and t.data_type in (TensorProto.FLOAT, TensorProto.INT64,
                                         TensorProto.BOOL, TensorProto.FLOAT16):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        t.CopyFrom(numpy_helper.from_array(_random_array(p, dtype), t.name))


def change_constant(p, model):
    """Give a Constant node a different (well-formed) value."""
    nodes = [n for n in model.graph.node if n.op_type == "Constant"]
    if nodes:
        node = p.choice(nodes)
        dtype = p.choice([np.float32, np.int64, np.int64, np.bool_])
        del node.attribute[:]
        node.attribute.append(helper.make_attribute(
            "value", numpy_helper.from_array(_random_array(p, dtype), "v")))


def rewire_input(p, model):
    """Point a node input at another value defined before it (keeps topological order)."""
    graph = model.graph
    if not graph.node:
        return
    index = p.int(0, len(graph.node) - 1)
    node = graph.node[index]
    earlier = [i.name for i in graph.input] + [t.name for t in graph.initializer]
    earlier += [o for n in graph.node[:index] for o in n.output if o]
    if node.input and earlier:
        node.input[p.int(0, len(node.input) - 1)] = p.choice(earlier)


def change_attribute_value(p, model):
    """A new value of the attribute's own type (the schema check lets it through)."""
    nodes = [n for n in model.graph.node if n.attribute]
    if not nodes:
        return
    node = p.choice(nodes)
    attr = node.attribute[p.int(0, len(node.attribute) - 1)]
    if attr.type == AttributeProto.INT:
        attr.i = p.choice(INTS + [4, 5, -3, 2 ** 31 - 1])
    elif attr.type == AttributeProto.INTS:
        del attr.ints[:]
        attr.ints.extend(p.choice([0, 1, 2, 3, -1, 4, 64]) for _ in range(p.int(0, 5)))
    elif attr.type == AttributeProto.FLOAT:
        attr.f = p.float()
    elif attr.type == AttributeProto.STRING:
        attr.s = p.choice([b"", b"tanh", b"none", b"exact", b"x"])
    elif attr.type == AttributeProto.TENSOR:
        attr.t.CopyFrom(_random_tensor(p))


def change_op_type_same_arity(p, model):
    """Another default-domain op that accepts the node's numbers of inputs and outputs."""
    node = _node(p, model.graph)
    if node is None:
        return
    fitting = []
    for op in OP_TYPES:
        try:
            schema = onnx.defs.get_schema(op, 18, "")
        except onnx.defs.SchemaError:
            continue
        if (schema.min_input <= len(node.input) <= schema.max_input
                and schema.min_output <= len(node.output) <= schema.max_output):
            fitting.append(op)
    if fitting:
        node.op_type = p.choice(fitting)
        node.domain = ""


MUTATIONS = [drop_node, duplicate_node, swap_nodes, change_attribute, add_attribute,
             drop_attribute, change_op_type, change_domain, rename_input, rename_output,
             add_input_or_output, drop_input_or_output, change_initializer_dims,
             change_initializer_dtype, change_initializer_data, drop_initializer,
             rename_initializer, external_data, change_graph_input, change_graph_output,
             change_opset, clear_graph]
WELL_FORMED = [reshape_initializer, change_constant, rewire_input, change_attribute_value,
               change_op_type_same_arity]
WEIGHTED = MUTATIONS + WELL_FORMED * 5
"""About half the mutations keep the graph well-formed."""


def mutate_bytes(p: Picker, data: bytes) -> bytes:
    how = p.choice(["truncate", "flip", "overwrite", "delete", "insert"])
    if not data:
        return data
    at = p.int(0, len(data) - 1)
    if how == "truncate":
        return data[:at]
    if how == "flip":
        return data[:at] + bytes([data[at] ^ (1 << p.int(0, 7))]) + data[at + 1:]
    if how == "overwrite":
        return data[:at] + bytes([p.int(0, 255)]) + data[at + 1:]
    if how == "delete":
        return data[:at] + data[at + p.int(1, 8):]
    return data[:at] + bytes(p.int(0, 255) for _ in range(p.int(1, 8))) + data[at:]


def mutate(p: Picker, model: onnx.ModelProto) -> tuple[bytes, list[str]]:
    """Serialized `model` after 1 to 3 protobuf mutations and maybe a byte-level one."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    applied = []
    for _ in range(p.int(1, 3)):
        mutation = p.choice(WEIGHTED)
        mutation(p, model)
        applied.append(mutation.__name__)
    data = model.SerializeToString()
    if p.int(0, 9) == 0:
        data = mutate_bytes(p, data)
        applied.append("bytes")
    return data, applied


# -- running q35c in-process -----------------------------------------------------------------

PASS_DATA_ERROR = re.compile(r"^q35c: error: pass 'quantize-weights' failed: ValueError: "
                             r"cannot quantize '[^']*': ")
"""Weights the Q3P5 encoder rejects (NaN, Inf, |w| > 2**120): bad input that the pass reports
naming the weight, though not the file."""


def invoke(*args):
    """`q35c ARGS` in this process (much faster than a subprocess per fuzzed model)."""
    from click.testing import CliRunner

    from q35c.compiler.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def cli_problem(path: Path, args: list[str], out: Path) -> str | None:
    """None if `q35c PATH ARGS -o OUT` succeeds, or fails with exit code 2, one
    `q35c: error: ...` line that names the file, and nothing written; else what is wrong."""
    result = invoke(path, *args, "-o", out)
    written = out.exists()
    shutil.rmtree(out, ignore_errors=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"exception escaped: {type(result.exception).__name__}: {result.exception}"
    if result.exit_code == 0:
        return None
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not line.startswith("q35c: note: ")]
    if lines and PASS_DATA_ERROR.match(lines[-1]):
        # Known, outside the frontend: the Q3P5 encoder lets numpy warn (overflow or invalid
        # value in its group sums) before it rejects the weight.
        lines = lines[-1:]
    if result.exit_code != 2 or len(lines) != 1 or "Traceback" in result.stderr:
        return f"exit code {result.exit_code}, stderr:\n{result.stderr[-2000:]}"
    line = lines[0]
    if not line.startswith("q35c: error: ") or "internal error" in line:
        return line
    if str(path) not in line and not PASS_DATA_ERROR.match(line):
        return f"the error does not name the file: {line}"
    if written:
        return f"failed but wrote {out}: {line}"
    return None


SEEDS = seed_models()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / EXTERNAL_FILE).write_bytes(EXTERNAL_BYTES)
    return directory


def test_seed_models_compile(fuzz_dir):
    for name, (model, args) in SEEDS.items():
        onnx.checker.check_model(model)
        path = fuzz_dir / f"{name}.onnx"
        onnx.save(model, path)
        result = invoke(path, *args, "-o", fuzz_dir / name)
        assert result.exit_code == 0, result.stderr
        assert (fuzz_dir / name / f"{name}.mlir").is_file()


# -- the fuzz tests ----------------------------------------------------------------------------

FUZZ = settings(derandomize=True, deadline=None, database=None, print_blob=False,
                suppress_health_check=list(HealthCheck))
"""Fixed: the same examples on every run, so CI is deterministic."""
SCALE = float(os.environ.get("Q35C_FUZZ_SCALE", "1"))
"""Multiplies the example counts, for a deeper (still deterministic) run locally."""


@settings(FUZZ, max_examples=int(400 * SCALE))
@given(seed=st.integers(0, 2**32 - 1))
def test_mutated_models_fail_with_one_line_or_compile(seed, fuzz_dir):
    """Hypothesis draws the seed; the mutations draw uniformly from it (hypothesis' own
    integers favour small values, which would keep hitting the first node and attribute)."""
    rng = random.Random(seed)
    name = rng.choice(sorted(SEEDS))
    model, args = SEEDS[name]
    blob, applied = mutate(RandomPicker(rng), model)
    path = fuzz_dir / "model.onnx"
    path.write_bytes(blob)
    problem = cli_problem(path, args, fuzz_dir / "out")
    assert problem is None, f"{name} after {applied}: {problem}"


@settings(FUZZ, max_examples=int(200 * SCALE))
@given(data=st.data())
def test_corrupted_bytes_fail_with_one_line_or_compile(data, fuzz_dir):
    blob = SEEDS["mlp"][0].SerializeToString()
    picker = HypothesisPicker(data)
    for _ in range(data.draw(st.integers(1, 4))):
        blob = mutate_bytes(picker, blob)
    path = fuzz_dir / "bytes.onnx"
    path.write_bytes(blob)
    problem = cli_problem(path, [], fuzz_dir / "out")
    assert problem is None, problem


# -- the broken example files ------------------------------------------------------------------


BROKEN = {
    "truncated.onnx": ["not a valid ONNX model", "Wire format was corrupt"],
    "missing_initializer.onnx": ["node '/fc/MatMul' (MatMul) uses 'fc.weight', which no node, "
                                 "input or initializer defines"],
    "unsupported_ops.onnx": ["unsupported operators: ", "Bernoulli x1 (/drop/Bernoulli)",
                             "RandomUniformLike x1 (/drop/RandomUniformLike)"],
    "bad_external_data.onnx": ["initializer 'fc.weight' (input of node '/fc/MatMul' (MatMul))",
                               "external data at '../outside.bin', outside the model's "
                               "directory"],
    "shape_mismatch.onnx": ["output 'y' of node '/fc/MatMul' is declared [2, 3] but computes "
                            "[2, 4]"],
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_example_gives_one_line_naming_file_and_node(name, tmp_path):
    path = INVALID_DIR / name
    result = q35c(path, "-o", tmp_path / "out", check=False)
    assert_user_error(result, f"q35c: error: {path}: ", *BROKEN[name])
    assert not (tmp_path / "out").exists()
    assert result.stdout == ""


def test_broken_examples_fail_the_same_without_shapes_and_with_run(tmp_path):
    """The structural errors come before --shape binding: no need to bind `batch` first."""
    for name in ("missing_initializer.onnx", "bad_external_data.onnx"):
        path = INVALID_DIR / name
        for args in ([path], [path, "--shape", "x=2,8"], ["run", path, "-o", tmp_path / "r"]):
            assert_user_error(q35c(*args, check=False), *BROKEN[name])
    assert not (tmp_path / "r").exists()


# -- unsupported operators -----------------------------------------------------------------------


def _model(nodes, inputs, outputs, initializers=(), opset=18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                   helper.make_opsetid("com.example", 1)],
                             ir_version=8)


def _f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_unsupported_ops_are_listed_with_counts_and_first_names(tmp_path):
    nodes, previous = [], "x"
    for i in range(5):
        nodes.append(helper.make_node("RandomUniformLike", [previous], [f"h{i}"],
                                      name=f"/hard/{i}"))
        previous = f"h{i}"
    nodes.append(helper.make_node("Fancy", [previous], ["f"], name="/custom/Fancy",
                                  domain="com.example"))
    nodes.append(helper.make_node("Relu", ["f"], ["y"], name="/Relu"))
    path = tmp_path / "m.onnx"
    # Dynamic dims too: the unsupported operators are reported first, since --shape cannot
    # help with them.
    onnx.save(_model(nodes, [_f32("x", ["batch", 4])], [_f32("y", ["batch", 4])]), path)
    result = q35c(path, "-o", tmp_path / "out", check=False)
    assert_user_error(result, f"{path}: unsupported operators: ",
                      "RandomUniformLike x5 (/hard/0, /hard/1, /hard/2, ...)",
                      "com.example.Fancy x1 (/custom/Fancy)")
    assert "Relu" not in result.stderr
    assert not (tmp_path / "out").exists()


# -- structural and value errors, each naming the file and the node ------------------------------


def _mlp_variant(edit) -> onnx.ModelProto:
    model = mlp_model()
    edit(model)
    return model


def _swap_first_two(m):
    a, b = onnx.NodeProto(), onnx.NodeProto()
    a.CopyFrom(m.graph.node[0])
    b.CopyFrom(m.graph.node[1])
    m.graph.node[0].CopyFrom(b)
    m.graph.node[1].CopyFrom(a)


def _set_attr(node_index, attribute):
    def edit(m):
        node = m.graph.node[node_index]
        for a in list(node.attribute):
            if a.name == attribute.name:
                node.attribute.remove(a)
        node.attribute.append(attribute)
    return edit


def _init_edit(name, **fields):
    def edit(m):
        (t,) = [t for t in m.graph.initializer if t.name == name]
        for key, value in fields.items():
            if key == "dims":
                del t.dims[:]
                t.dims.extend(value)
            else:
                setattr(t, key, value)
    return edit


def _node_edit(index, **fields):
    def edit(m):
        node = m.graph.node[index]
        for key, value in fields.items():
            if key in ("input", "output"):
                del getattr(node, key)[:]
                getattr(node, key).extend(value)
            else:
                setattr(node, key, value)
    return edit


def _input_type(elem_type=None, dims=None):
    def edit(m):
        ttype = m.graph.input[0].type.tensor_type
        if elem_type is not None:
            ttype.elem_type = elem_type
        if dims is not None:
            ttype.ClearField("shape")
            for d in dims:
                ttype.shape.dim.add().dim_value = d
    return edit


def _opset(version):
    def edit(m):
        m.opset_import[0].version = version
    return edit


def _drop_opset(m):
    del m.opset_import[:]
    m.opset_import.append(helper.make_opsetid("com.example", 1))


STRUCTURAL = {
    "not topologically sorted": (_swap_first_two, [
        "node '/fc1/Add' (Add) uses 'h0' before node '/fc1/MatMul' (MatMul) computes it"]),
    "defined twice": (_node_edit(2, output=["h0"]), [
        "node '/act/Relu' (Relu) defines 'h0', which node '/fc1/MatMul' (MatMul) already "
        "defines"]),
    "output not computed": (lambda m: setattr(m.graph.output[0], "name", "nope"), [
        "graph output 'nope' is not computed by any node"]),
    "too few inputs": (_node_edit(1, input=["h0"]), [
        "node '/fc1/Add' (Add) has 1 inputs; Add-17 takes 2"]),
    "empty required input": (_node_edit(3, input=["h2", "", "fc2.bias"]), [
        "node '/fc2/Gemm' (Gemm): its required input 1 ('B') is empty"]),
    "mistyped attribute": (_set_attr(4, helper.make_attribute("axis", "last")), [
        "node '/head/Softmax' (Softmax): attribute 'axis' must be INT, got STRING"]),
    "missing required attribute": (
        lambda m: (m.graph.node[2].CopyFrom(helper.make_node("Cast", ["h1"], ["h2"],
                                                             name="/act/Cast"))), [
            "node '/act/Cast' (Cast): required attribute(s) to missing"]),
    "initializer data too short": (_init_edit("fc1.bias", raw_data=b"\0" * 12), [
        "initializer 'fc1.bias' (input of node '/fc1/Add' (Add)): 12 bytes of data, but its "
        "type FLOAT and shape [64] need 256"]),
    "initializer of unknown type": (_init_edit("fc1.weight", data_type=99), [
        "initializer 'fc1.weight' (input of node '/fc1/MatMul' (MatMul)): element type 99 is "
        "not supported"]),
    "initializer negative dim": (_init_edit("fc1.bias", dims=[-64]), [
        "initializer 'fc1.bias' (input of node '/fc1/Add' (Add)): negative dimension"]),
    "string input": (_input_type(elem_type=TensorProto.STRING), [
        "graph input 'x' has element type STRING, which q35c does not support"]),
    "negative-size input": (_input_type(dims=[-1, 16]), [
        "graph input 'x' declares the shape [-1, 16]; sizes must be 0 or more"]),
    "invalid opset": (_opset(0), ["the default-domain opset version 0 is not valid"]),
    "no default opset": (_drop_opset, ["imports no default-domain (ai.onnx) opset"]),
    "invalid UTF-8 op type": (_node_edit(2, op_type="Rel\u00ff"), None),
}


@pytest.mark.parametrize("case", sorted(STRUCTURAL))
def test_bad_model_gives_one_line_naming_file_and_node(case, tmp_path):
    edit, fragments = STRUCTURAL[case]
    path = tmp_path / "model.onnx"
    model = _mlp_variant(edit)
    data = model.SerializeToString()
    if fragments is None:  # write bytes protobuf would refuse to serialize from a str
        assert data.count(b"Rel\xc3\xbf") == 1
        data = data.replace(b"Rel\xc3\xbf", b"Rel\xff\xfe")
        fragments = ["not a valid ONNX model (model.graph.node[2].op_type is not valid UTF-8)"]
    path.write_bytes(data)
    result = q35c(path, "-o", tmp_path / "out", check=False)
    assert_user_error(result, f"q35c: error: {path}: ", *fragments)
    assert not (tmp_path / "out").exists()


def test_errors_found_inside_converters_name_the_node(tmp_path):
    """Regressions of what the fuzz test found: exceptions that escaped as internal errors."""
    cases = {
        # int(inf) in a converter's constant operand: OverflowError
        "slice to infinity": (_model(
            [helper.make_node("Constant", [], ["ends"], name="/ends",
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [np.inf])),
             helper.make_node("Slice", ["x", "starts", "ends"], ["y"], name="/Slice")],
            [_f32("x", [4])], [_f32("y", None)],
            [numpy_helper.from_array(np.array([0], np.int64), "starts")]),
            "node '/Slice' (Slice): cannot convert float infinity to integer"),
        # was axis % rank with rank 0: ZeroDivisionError
        "concat of scalars": (_model(
            [helper.make_node("Concat", ["x", "x"], ["y"], name="/Concat", axis=0)],
            [_f32("x", [])], [_f32("y", None)]),
            "node '/Concat' (Concat): concatenates no tensors, or scalars"),
        # a folded Gather with an out-of-range index (and numpy's warnings while folding)
        "gather out of range": (_model(
            [helper.make_node("Constant", [], ["idx"], name="/idx",
                              value=helper.make_tensor("v", TensorProto.INT64, [1], [-2**63])),
             helper.make_node("Gather", ["table", "idx"], ["row"], name="/Gather"),
             helper.make_node("Add", ["x", "row"], ["y"], name="/Add")],
            [_f32("x", [1, 4])], [_f32("y", None)],
            [numpy_helper.from_array(np.ones((3, 4), np.float32), "table")]),
            "node '/Gather' (Gather): cannot evaluate at import time"),
    }
    for case, (model, fragment) in cases.items():
        path = tmp_path / f"{case.replace(' ', '_')}.onnx"
        onnx.save(model, path)
        assert_user_error(q35c(path, check=False), f"{path}: ", fragment)


def test_ranks_past_the_builders_limit_take_the_generic_op(tmp_path):
    """The dedicated converters refuse Expand to rank 64 and Add of rank 40 (numpy's
    broadcasting helpers stop at 32 dimensions); the node then becomes one
    `q35nn.onnx_node`, which runs it."""
    model = _model(
        [helper.make_node("Constant", [], ["shape"], name="/shape",
                          value=helper.make_tensor("v", TensorProto.INT64, [64], [1] * 64)),
         helper.make_node("Expand", ["x", "shape"], ["y"], name="/Expand")],
        [_f32("x", [4])], [_f32("y", None)])
    path = tmp_path / "expand64.onnx"
    onnx.save(model, path)
    x = np.arange(4, dtype=np.float32)
    got = run_file(path, {"x": x}, tmp_path / "out", Options(target="interp", passes=""))
    assert got["y"].shape == (1,) * 63 + (4,) and np.array_equal(got["y"].ravel(), x)
    # the same inside the builder's broadcasting
    model = _model([helper.make_node("Add", ["x", "x"], ["y"], name="/Add")],
                   [_f32("x", [1] * 40)], [_f32("y", None)])
    onnx.save(model, path)
    x = np.full((1,) * 40, 1.5, np.float32)
    got = run_file(path, {"x": x}, tmp_path / "out2", Options(target="interp", passes=""))
    assert got["y"].shape == x.shape and got["y"].ravel()[0] == 3.0


def test_folding_overflow_warns_nothing(tmp_path):
    """Folding follows ONNX arithmetic, overflow included, without numpy warnings on stderr."""
    big = helper.make_tensor("v", TensorProto.FLOAT, [2], [1e30, -1e30])
    model = _model(
        [helper.make_node("Constant", [], ["c"], name="/c", value=big),
         helper.make_node("Mul", ["c", "c"], ["inf"], name="/Mul"),
         helper.make_node("Sub", ["inf", "inf"], ["nan"], name="/Sub"),
         helper.make_node("Add", ["x", "nan"], ["y"], name="/Add")],
        [_f32("x", [2])], [_f32("y", [2])])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = q35c(path, "-o", tmp_path / "out")
    assert result.stderr == ""


def test_mistyped_attribute_of_a_converted_node_names_it(tmp_path):
    """The importer checks attribute types itself too (ops without an onnx schema)."""
    from q35c.compiler.diagnostics import Q35cError
    from q35c.compiler.frontends.onnx.importer import OnnxImporter
    from q35c.compiler.weights import WeightStore

    model = _model([helper.make_node("Softmax", ["x"], ["y"], name="/Softmax")],
                   [_f32("x", [2, 3])], [_f32("y", [2, 3])])
    model.graph.node[0].attribute.append(helper.make_attribute("axis", 1.5))
    with pytest.raises(Q35cError, match=r"m.onnx: node '/Softmax' \(Softmax\): attribute "
                                        r"'axis' must be an int, got FLOAT"):
        OnnxImporter(tmp_path / "m.onnx", model, {}, WeightStore()).run()


# -- dynamic dimensions and --shape --------------------------------------------------------------

LLAMA = MODELS_DIR / "llama_tiny.onnx"


def test_unbound_dynamic_dims_are_listed_with_the_flag(tmp_path):
    result = q35c(LLAMA, "-o", tmp_path / "out", check=False)
    assert_user_error(result, f"{LLAMA}: dynamic input dimensions need values: "
                              "input_ids[batch, seq]", "--shape input_ids=...")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, fragment", [
    ("input_ids=2", "--shape input_ids=2 does not fit the declared shape [batch, seq]"),
    ("ids=2,3", "--shape names unknown input(s) ids; the model's inputs are input_ids"),
    ("input_ids=2,x", "--shape expects NAME=d1,d2,... with sizes of 0 or more"),
    ("input_ids=-1,3", "--shape expects NAME=d1,d2,... with sizes of 0 or more"),
])
def test_bad_shape_flags(flag, fragment):
    assert_user_error(q35c(LLAMA, "--shape", flag, check=False), fragment)


def test_shape_binds_dynamic_dims_and_runs(tmp_path):
    result = q35c("run", LLAMA, "--shape", "input_ids=2,5", "-o", tmp_path / "r")
    assert "logits: float32[2, 5, 256]" in result.stdout
    ids = np.load(tmp_path / "r" / "input_ids.npy")
    assert ids.shape == (2, 5) and ids.dtype == np.int64


def test_bind_input_shapes():
    from q35c.compiler.diagnostics import Q35cError
    from q35c.compiler.frontends.onnx.model import bind_input_shapes

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 8])
    fixed = helper.make_tensor_value_info("mask", TensorProto.BOOL, [4, 4])
    anyrank = helper.make_tensor_value_info("any", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.ones(3, np.float32), "w")
    winput = helper.make_tensor_value_info("w", TensorProto.FLOAT, [3])
    model = _model([helper.make_node("Identity", ["x"], ["y"])], [x, fixed, anyrank, winput],
                   [_f32("y", None)], [w])
    path = Path("m.onnx")
    shapes = {"x": (2, 8), "any": (5,)}
    assert bind_input_shapes(path, model, shapes) == {"x": (2, 8), "mask": (4, 4), "any": (5,)}
    with pytest.raises(Q35cError, match=r"need values: x\[b, 8\]; any\[\?\] \(bind them with "
                                        r"--shape x=\.\.\. --shape any=\.\.\.\)"):
        bind_input_shapes(path, model, {})
    with pytest.raises(Q35cError, match=r"--shape x=2,9 does not fit the declared shape \[b, 8\]"):
        bind_input_shapes(path, model, {**shapes, "x": (2, 9)})
    with pytest.raises(Q35cError, match=r"unknown input\(s\) w; the model's inputs are x, mask, "
                                        r"any"):
        bind_input_shapes(path, model, {**shapes, "w": (3,)})


def test_llama_compiles_for_one_token(tmp_path):
    """Broadcasting an all-ones tensor reshapes it to rank 0 through `dense<> : tensor<0xi64>`."""
    q35c(LLAMA, "--shape", "input_ids=1,1", "-o", tmp_path / "out")


# -- external data ------------------------------------------------------------------------------


def _save_external(model: onnx.ModelProto, directory: Path, name="model.onnx",
                   location="weights.bin") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location=location, size_threshold=0)
    return path


def _set_external(model: onnx.ModelProto, tensor: str, **entries: str) -> None:
    (t,) = [t for t in model.graph.initializer if t.name == tensor]
    current = {e.key: e.value for e in t.external_data}
    current.update(entries)
    del t.external_data[:]
    for key, value in current.items():
        entry = t.external_data.add()
        entry.key, entry.value = key, value


def test_external_data_model_imports_lazily_and_runs(tmp_path):
    from q35c.compiler.frontends.onnx.model import InitializerReader, load_model

    path = _save_external(mlp_model(), tmp_path / "m")
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx", "weights.bin"]
    model = load_model(path)
    assert all(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)
    weight = InitializerReader(path, model.graph).read("fc1.weight")
    base = weight
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap), "external data is mapped, not read"
    assert not weight.flags.writeable

    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    q35c("run", path, "--passes", "", "--input", f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "r")
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x})
    np.testing.assert_allclose(np.load(tmp_path / "r" / "probs.npy"), expected, rtol=1e-5,
                               atol=1e-6)
    q35c(path, "-o", tmp_path / "out")  # and quantizes
    assert (tmp_path / "out" / "model.q35w").is_file()


def test_unused_external_tensor_is_never_read(tmp_path):
    """A 1 GiB initializer in a sparse file: importing touches only what the graph uses."""
    path = _save_external(mlp_model(), tmp_path / "m")
    model = onnx.load(path, load_external_data=False)
    model.graph.initializer.append(TensorProto(name="unused.table", data_type=TensorProto.FLOAT,
                                               dims=[16384, 16384],
                                               data_location=TensorProto.EXTERNAL))
    _set_external(model, "unused.table", location="big.bin", offset="0", length=str(2**30))
    onnx.save(model, path)
    with open(path.parent / "big.bin", "wb") as f:
        f.truncate(2**30)
    q35c(path, "-o", tmp_path / "out")


@pytest.mark.parametrize("entries, fragment", [
    ({"location": "../weights.bin"}, "external data at '../weights.bin', outside the model's "
                                     "directory"),
    ({"location": "sub/../../weights.bin"}, "outside the model's directory"),
    ({"location": "ABSOLUTE"}, "outside the model's directory"),
    ({"location": "LINK"}, "external data at 'link.bin', outside the model's directory"),
    ({"location": "missing.bin"}, "external data file 'missing.bin' not found"),
    ({"location": ""}, "external data without a location"),
    ({"offset": "-4"}, "external data offset '-4' is not a non-negative integer"),
    ({"length": "ten"}, "external data length 'ten' is not a non-negative integer"),
    ({"length": "100"}, "external data length 100 does not match its type FLOAT and shape "
                        "[16, 64] (4096 bytes)"),
    ({"offset": "12000"}, "external data in 'weights.bin' is truncated"),
])
def test_bad_external_data_is_rejected(entries, fragment, tmp_path):
    model_dir = tmp_path / "model"
    path = _save_external(mlp_model(), model_dir)
    (tmp_path / "weights.bin").write_bytes((model_dir / "weights.bin").read_bytes())
    (model_dir / "link.bin").symlink_to(tmp_path / "weights.bin")
    model = onnx.load(path, load_external_data=False)
    replace = {"ABSOLUTE": str(tmp_path / "weights.bin"), "LINK": "link.bin"}
    _set_external(model, "fc1.weight",
                  **{k: replace.get(v, v) for k, v in entries.items()})
    onnx.save(model, path)
    for args in ([path], ["run", path]):
        result = q35c(*args, "-o", tmp_path / "out", check=False)
        assert_user_error(result, f"{path}: initializer 'fc1.weight' (input of node "
                                  "'/fc1/MatMul' (MatMul)): ", fragment)
        assert not (tmp_path / "out").exists()


# -- exploring outside pytest ----------------------------------------------------------------


def explore(count: int, seed: int) -> None:
    """Run `count` random mutations; print the first example of each distinct problem."""
    import tempfile

    rng = random.Random(seed)
    found: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / EXTERNAL_FILE).write_bytes(EXTERNAL_BYTES)
        for i in range(count):
            name = rng.choice(sorted(SEEDS))
            model, args = SEEDS[name]
            blob, applied = mutate(RandomPicker(rng), model)
            path = directory / "model.onnx"
            path.write_bytes(blob)
            problem = cli_problem(path, args, directory / "out")
            if problem:
                key = re.sub(r"'[^']*'", "'_'", problem.replace(str(path), "M"))[:80]
                found[key] = found.get(key, 0) + 1
                if found[key] == 1:
                    keep = Path(os.environ.get("FUZZ_KEEP", tmp))
                    (keep / f"case{i}_{name}.onnx").write_bytes(blob)
                    print(f"[{i}] {name} {applied}: {problem.replace(str(path), 'M')}",
                          flush=True)
    print(f"{sum(found.values())} problems, {len(found)} distinct")


if __name__ == "__main__":
    explore(int(sys.argv[1]), int(sys.argv[2]))
