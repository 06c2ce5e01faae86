"""The generic path: an ONNX node as one `q35nn.onnx_node` op, for the long tail of operators.

The dedicated converters in ops.py emit arith/linalg/tensor/q35nn ops that the quantization
passes and the C and Groq targets understand; they are written for float32, int64 and bool
tensors. A node goes the generic way instead when

- its op type has no dedicated converter (or is fold-only) but onnx's reference
  implementation defines it (`q35nn.onnx_generic_ops()`);
- an operand has an element type the dedicated converters do not take (int8..int32, uint*,
  float16, bfloat16, float64, float8, int4...), or its result type differs from what they
  emit (a Cast to float16, a Dropout in training mode);
- or its dedicated converter refuses it (a variadic Max, an integer Pow, a normalization
  over another axis...): the importer then rolls back what that converter emitted.

The result types come from ONNX shape inference on the single node, with the node's known
inputs as initializers (so shape operands such as Reshape's or Tile's count). Where the
shape depends on run-time values (NonZero, a run-time Reshape target or Resize scales), the
shape the model declares for that value (a graph output or `value_info`) is used, and the
interpreter checks that the computed result has it; with no declaration, the node is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import NodeProto, TensorProto, numpy_helper
from xdsl.dialects.builtin import DictionaryAttr, TensorType
from xdsl.ir import SSAValue

from q35c.compiler.diagnostics import first_line
from q35c.compiler.frontends.onnx.builder import element_of
from q35c.compiler.frontends.onnx.loop_shapes import loop_result_dims
from q35c.compiler.tensors import exact_element, numpy_dtype
from q35c.dialects import q35nn

if TYPE_CHECKING:
    from q35c.compiler.frontends.onnx.importer import OnnxImporter
    from q35c.compiler.frontends.onnx.ops import Value

DEDICATED_DTYPES = (np.dtype(np.float32), np.dtype(np.int64), np.dtype(np.bool_))
"""The element types the dedicated converters are written for."""

SHAPE_DATA_LIMIT = 1 << 16
"""Known inputs up to this many elements are given to shape inference as values."""

_DEDICATED_CASTS = {TensorProto.FLOAT, TensorProto.INT64}


def generic_ops() -> frozenset[str]:
    return q35nn.onnx_generic_ops()


def _dtype(value: Value) -> np.dtype:
    if isinstance(value, SSAValue):
        return numpy_dtype(element_of(value))
    return np.asarray(value).dtype


def needs_generic(imp: OnnxImporter, node: NodeProto, inputs: list[Value]) -> bool:
    """Whether `node` (with a run-time input) must take the generic path although it may
    have a dedicated converter: its types are not the dedicated ones (module docstring)."""
    if node.op_type in ("Shape", "Size"):  # constants from the static shape, any dtype
        return False
    runtime = [_dtype(v) for v in inputs if isinstance(v, SSAValue)]
    if any(d not in DEDICATED_DTYPES for d in runtime):
        return True
    kinds = {d.kind for d in runtime}
    for value in inputs:  # a known float16 operand of a float32 node is a weight to widen
        if isinstance(value, np.ndarray) and value.dtype not in DEDICATED_DTYPES and \
                ("f" if value.dtype.kind == "f" else "i") not in kinds:
            return True
    if node.op_type == "Where":  # xDSL 0.74's arith.select takes a scalar i1 condition only
        return True
    if node.op_type == "Cast":
        return imp.attr(node, "to", TensorProto.FLOAT) not in _DEDICATED_CASTS
    if node.op_type == "Dropout":  # training mode, or its mask wanted
        training = inputs[2] if len(inputs) > 2 else None
        return (len(node.output) > 1 and bool(node.output[1])) or (
            training is not None and not (isinstance(training, np.ndarray)
                                          and not training.any()))
    return False


def convert_generic(imp: OnnxImporter, node: NodeProto, inputs: list[Value]) -> list[Value]:
    """`node` as one `q35nn.onnx_node`; one value per node output (None where omitted)."""
    if node.op_type not in generic_ops():
        raise imp.error(node, "is not supported")
    slots = [i for i, name in enumerate(node.input) if name]
    operands = []
    for slot in slots:
        value = inputs[slot]
        operands.append(value if isinstance(value, SSAValue) else imp.exact_ssa(value))
    _check_attributes(imp, node)
    try:
        attributes = DictionaryAttr({a.name: q35nn.ir_attribute(a) for a in node.attribute})
    except (ValueError, UnicodeDecodeError) as err:
        raise imp.error(node, first_line(err)) from None
    outer, known = [], {}
    for name in outer_names(node):
        value = imp.lookup(name)
        if isinstance(value, np.ndarray):
            known[name] = value
        outer.append((name, value if isinstance(value, SSAValue) else imp.exact_ssa(value)))
    out_slots = [i for i, name in enumerate(node.output) if name]
    result_types = infer_result_types(imp, node, inputs, slots, out_slots, outer, known)
    op = imp.tb.insert(q35nn.OnnxNodeOp(node.op_type, imp.opsets.get("", 1), operands,
                                        result_types, attributes, slots, out_slots, outer))
    outputs: list[Value] = [None] * len(node.output)
    for slot, result in zip(out_slots, op.results):
        outputs[slot] = result
    return outputs


def outer_names(node: NodeProto) -> list[str]:
    """The values of the enclosing graph that `node`'s bodies (If, Loop, Scan) read, in the
    order they first appear."""
    names: list[str] = []

    def visit(graph: onnx.GraphProto, bound: set[str]) -> None:
        bound = bound | {i.name for i in graph.input} | {t.name for t in graph.initializer}
        for inner in graph.node:
            for name in inner.input:
                if name and name not in bound and name not in names:
                    names.append(name)
            for attribute in inner.attribute:
                for sub in [attribute.g, *attribute.graphs] if attribute.type in (
                        onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) else []:
                    visit(sub, bound)
            bound = bound | set(inner.output)
        for info in graph.output:
            if info.name not in bound and info.name not in names:
                names.append(info.name)

    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            visit(attribute.g, set())
    return names


def _check_attributes(imp: OnnxImporter, node: NodeProto) -> None:
    """Every attribute of `node` is one its schema declares, of the declared kind."""
    try:
        schema = onnx.defs.get_schema(node.op_type, imp.opsets.get("", 1), "")
    except onnx.defs.SchemaError:
        raise imp.error(node, f"no schema at opset {imp.opsets.get('', 1)}") from None
    for attribute in node.attribute:
        declared = schema.attributes.get(attribute.name)
        if declared is None:
            raise imp.error(node, f"has no attribute '{attribute.name}'")
        if int(declared.type) != attribute.type:
            kind = onnx.AttributeProto.AttributeType.Name
            raise imp.error(node, f"attribute '{attribute.name}' must be "
                                  f"{kind(int(declared.type))}, got {kind(attribute.type)}")


def _static_dims(tensor_type: onnx.TypeProto.Tensor) -> list[int] | None:
    """The dims of a fully static tensor type, else None."""
    if not tensor_type.HasField("shape") or any(
            not d.HasField("dim_value") for d in tensor_type.shape.dim):
        return None
    return [d.dim_value for d in tensor_type.shape.dim]


def _value_info(name: str, dtype: np.dtype, shape) -> onnx.ValueInfoProto:
    try:
        elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    except (KeyError, ValueError, TypeError):
        raise ValueError(f"element type {dtype} is not supported") from None
    return onnx.helper.make_tensor_value_info(name, elem, list(shape))


def infer_result_types(imp: OnnxImporter, node: NodeProto, inputs: list[Value],
                       slots: list[int], out_slots: list[int],
                       outer: list[tuple[str, SSAValue]] = (),
                       known: dict[str, np.ndarray] | None = None) -> list[TensorType]:
    """The static result types of `node`, by ONNX shape inference on the node alone.
    Small known values, of the node's inputs and of the outer-scope values its subgraphs
    use (`known`: a Scan body's Unsqueeze axes, put in each body as a Constant, since
    ONNX infers a subgraph with its own constants only), go in as data, so shapes computed
    from them are inferred."""
    known = known or {}
    single = onnx.NodeProto()
    single.CopyFrom(node)
    del single.input[:], single.output[:]
    single.input.extend(f"i{i}" if name else "" for i, name in enumerate(node.input))
    single.output.extend(f"o{i}" if name else "" for i, name in enumerate(node.output))
    graph_inputs, initializers = [], []
    for slot in slots:
        value = inputs[slot]
        if isinstance(value, np.ndarray) and value.size <= SHAPE_DATA_LIMIT:
            initializers.append(numpy_helper.from_array(np.asarray(value), f"i{slot}"))
        else:
            shape = value.shape if isinstance(value, np.ndarray) else \
                value.type.get_shape()
            graph_inputs.append(_value_info(f"i{slot}", _dtype(value), shape))
    constants = []
    for name, value in outer:
        if name in known and known[name].size <= SHAPE_DATA_LIMIT:
            constants.append(onnx.helper.make_node("Constant", [], [name], value=(
                numpy_helper.from_array(np.asarray(known[name]), name))))
        else:
            graph_inputs.append(_value_info(name, _dtype(value), value.type.get_shape()))
    for attribute in single.attribute:  # subgraph inference sees only its own constants
        if attribute.type == onnx.AttributeProto.GRAPH and constants:
            nodes = [*constants, *attribute.g.node]
            del attribute.g.node[:]
            attribute.g.node.extend(nodes)
    graph = onnx.helper.make_graph([single], "node", graph_inputs, [], initializers)
    model = onnx.helper.make_model(graph, opset_imports=list(imp.model.opset_import),
                                   ir_version=imp.model.ir_version or onnx.IR_VERSION)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True,
                                                     data_prop=True)
    except Exception as err:  # InferenceError, ValidationError: the node is malformed
        raise imp.error(node, f"shape inference: {first_line(err)}") from None
    infos = {v.name: v.type for v in inferred.graph.value_info}
    loop_dims = None
    types = []
    for slot in out_slots:
        proto = infos.get(f"o{slot}")
        declared = imp.declared_types.get(node.output[slot])
        if proto is None or not proto.HasField("tensor_type"):
            proto = declared
        if proto is None or not proto.HasField("tensor_type"):
            raise imp.error(node, f"the type of output {slot} cannot be inferred (not a "
                                  "tensor, or it depends on run-time values)")
        tensor_type = proto.tensor_type
        dims = _static_dims(tensor_type)
        if dims is None and node.op_type == "Loop":  # a trip count known at compile time
            if loop_dims is None:
                loop_dims = loop_result_dims(imp, node, inputs,
                                             {n: known.get(n, v) for n, v in outer})
            dims = loop_dims.get(slot)
        if dims is None and declared is not None and declared.HasField("tensor_type"):
            dims = _static_dims(declared.tensor_type)  # the model's promise, checked at run
        if dims is None:
            raise imp.error(node, f"the shape of output {slot} depends on run-time values "
                                  "(and the model does not declare it)")
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
            element = exact_element(dtype)
        except (KeyError, ValueError, TypeError):
            name = TensorProto.DataType.Name(tensor_type.elem_type) if tensor_type.elem_type in \
                TensorProto.DataType.values() else str(tensor_type.elem_type)
            raise imp.error(node, f"output {slot} has element type {name}, which q35c does "
                                  "not support") from None
        types.append(TensorType(element, dims))
    return types
