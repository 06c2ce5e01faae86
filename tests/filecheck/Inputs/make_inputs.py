"""Writes the small ONNX models the fusion FileCheck tests import (deterministic).

    python tests/filecheck/Inputs/make_inputs.py

norms.onnx:     RMSNorm written out as HF LLaMA does (Pow, ReduceMean, Add, Sqrt, Div, Mul,
                Mul) and LayerNorm written out (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt,
                Div, Mul, Add), both over the last axis of x [batch, 8].
gelu.onnx:      x * 0.5 * (1 + Erf(x / sqrt(2))) on x [2, 8], and the same with the factors
                in another order and x * (1/sqrt(2)).
attention.onnx: softmax(q k^T * 0.25 + mask) v on [1, 2, 4, 16] heads, k transposed with
                Transpose(perm=[0, 1, 3, 2]), a constant causal mask.
generic.onnx:   nodes that take the generic q35nn.onnx_node: Mod on int32, Cast to float16,
                IsNaN (once fold-only), a LayerNormalization over axis 0 (its dedicated
                converter refuses), next to a Relu that keeps its dedicated conversion.
"""

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save_model

HERE = Path(__file__).parent


def const(name: str, value) -> helper.NodeProto:
    return helper.make_node("Constant", [], [name], name=name,
                            value=numpy_helper.from_array(np.asarray(value), name))


def norms() -> None:
    rng = np.random.default_rng(3)
    g = numpy_helper.from_array((1 + 0.1 * rng.standard_normal(8)).astype(np.float32), "gamma")
    b = numpy_helper.from_array((0.1 * rng.standard_normal(8)).astype(np.float32), "beta")
    nodes = [
        const("two", np.float32(2.0)), const("eps", np.float32(1e-6)),
        const("one", np.float32(1.0)), const("axes", np.array([-1], np.int64)),
        helper.make_node("Pow", ["x", "two"], ["sq"], name="rms/pow"),
        helper.make_node("ReduceMean", ["sq", "axes"], ["ms"], name="rms/mean", keepdims=1),
        helper.make_node("Add", ["ms", "eps"], ["mse"], name="rms/add"),
        helper.make_node("Sqrt", ["mse"], ["rms"], name="rms/sqrt"),
        helper.make_node("Div", ["one", "rms"], ["inv"], name="rms/div"),
        helper.make_node("Mul", ["x", "inv"], ["xn"], name="rms/mul"),
        helper.make_node("Mul", ["gamma", "xn"], ["rms_out"], name="rms/scale"),
        helper.make_node("ReduceMean", ["x", "axes"], ["mu"], name="ln/mean", keepdims=1),
        helper.make_node("Sub", ["x", "mu"], ["d"], name="ln/sub"),
        helper.make_node("Pow", ["d", "two"], ["d2"], name="ln/pow"),
        helper.make_node("ReduceMean", ["d2", "axes"], ["var"], name="ln/var", keepdims=1),
        helper.make_node("Add", ["var", "eps"], ["vare"], name="ln/add"),
        helper.make_node("Sqrt", ["vare"], ["std"], name="ln/sqrt"),
        helper.make_node("Div", ["d", "std"], ["n"], name="ln/div"),
        helper.make_node("Mul", ["n", "gamma"], ["ns"], name="ln/scale"),
        helper.make_node("Add", ["ns", "beta"], ["ln_out"], name="ln/shift"),
    ]
    graph = helper.make_graph(
        nodes, "norms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("rms_out", TensorProto.FLOAT, ["batch", 8]),
         helper.make_tensor_value_info("ln_out", TensorProto.FLOAT, ["batch", 8])], [g, b])
    save(graph, "norms.onnx")


def gelu() -> None:
    nodes = [
        const("half", np.float32(0.5)), const("one", np.float32(1.0)),
        const("sqrt2", np.float32(np.sqrt(2.0))), const("inv_sqrt2", np.float32(1 / np.sqrt(2.0))),
        helper.make_node("Div", ["x", "sqrt2"], ["a1"], name="gelu1/div"),
        helper.make_node("Erf", ["a1"], ["e1"], name="gelu1/erf"),
        helper.make_node("Add", ["e1", "one"], ["p1"], name="gelu1/add"),
        helper.make_node("Mul", ["x", "p1"], ["m1"], name="gelu1/mul"),
        helper.make_node("Mul", ["m1", "half"], ["y1"], name="gelu1/half"),
        helper.make_node("Mul", ["x", "inv_sqrt2"], ["a2"], name="gelu2/mul"),
        helper.make_node("Erf", ["a2"], ["e2"], name="gelu2/erf"),
        helper.make_node("Add", ["one", "e2"], ["p2"], name="gelu2/add"),
        helper.make_node("Mul", ["half", "x"], ["m2"], name="gelu2/half"),
        helper.make_node("Mul", ["p2", "m2"], ["y2"], name="gelu2/mul2"),
    ]
    graph = helper.make_graph(
        nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 8]) for n in ("y1", "y2")])
    save(graph, "gelu.onnx")


def attention() -> None:
    mask = np.triu(np.full((4, 4), -1e9, np.float32), 1)
    nodes = [
        const("scale", np.float32(0.25)), const("mask", mask),
        helper.make_node("Transpose", ["k"], ["kt"], name="attn/kt", perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["s"], name="attn/qk"),
        helper.make_node("Mul", ["s", "scale"], ["ss"], name="attn/scale"),
        helper.make_node("Add", ["ss", "mask"], ["sm"], name="attn/mask"),
        helper.make_node("Softmax", ["sm"], ["p"], name="attn/softmax", axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["out"], name="attn/pv"),
    ]
    shape = [1, 2, 4, 16]
    graph = helper.make_graph(
        nodes, "attention",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in "qkv"],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)])
    save(graph, "attention.onnx")


def generic() -> None:
    nodes = [
        helper.make_node("Mod", ["a", "b"], ["mod"], name="mod"),
        helper.make_node("Cast", ["x"], ["half"], name="to_half", to=TensorProto.FLOAT16),
        helper.make_node("IsNaN", ["x"], ["nan"], name="isnan"),
        helper.make_node("LayerNormalization", ["x", "gamma"], ["ln"], name="ln0", axis=0),
        helper.make_node("Relu", ["x"], ["relu"], name="relu"),
    ]
    gamma = numpy_helper.from_array(np.full((2, 4), 0.5, np.float32), "gamma")
    graph = helper.make_graph(
        nodes, "generic",
        [helper.make_tensor_value_info("a", TensorProto.INT32, [6]),
         helper.make_tensor_value_info("b", TensorProto.INT32, [6]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("mod", TensorProto.INT32, [6]),
         helper.make_tensor_value_info("half", TensorProto.FLOAT16, [2, 4]),
         helper.make_tensor_value_info("nan", TensorProto.BOOL, [2, 4]),
         helper.make_tensor_value_info("ln", TensorProto.FLOAT, [2, 4]),
         helper.make_tensor_value_info("relu", TensorProto.FLOAT, [2, 4])], [gamma])
    save(graph, "generic.onnx")


def save(graph, name: str) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="q35c-tests")
    model.ir_version = 8
    save_model(model, str(HERE / name))


if __name__ == "__main__":
    norms()
    gelu()
    attention()
    generic()
