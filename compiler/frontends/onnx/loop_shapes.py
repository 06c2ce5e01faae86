"""Static result shapes of an ONNX Loop whose trip count the compiler can work out.

ONNX shape inference leaves a Loop's results unshaped: the loop-carried values may change
shape from one iteration to the next, and the scan outputs' leading dimension is the number
of iterations, which the body's condition decides. Exporters that turn a while loop into a
Loop (tf2onnx's Keras LSTM and GRU layers, say) write a condition that depends only on
counters (`i < n and i < max_iterations`), so the number of iterations is known at compile
time, and so are the result shapes:

* a loop-carried value whose shape the body keeps (body shape inference, fed the initial
  values' types, gives the output the input's shape) has that shape;
* the iteration count is the trip count where the node has no condition input (the body's
  condition is then ignored, as the specification says); otherwise it comes from running
  the part of the body the condition depends on (the *static slice*: nodes whose inputs
  are the iteration number, the condition, known constants and loop-carried values that
  are themselves static) with onnx's reference implementation, iteration by iteration, up
  to `MAX_ITERATIONS` iterations and `MAX_SECONDS`;
* a scan output has shape [iterations, *body output shape].

Where any of this is not known, the result stays unshaped and the importer refuses the node
as before, unless the model declares the shape.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import NodeProto, numpy_helper
from onnx.reference import ReferenceEvaluator
from xdsl.ir import SSAValue

from q35c.compiler.tensors import numpy_dtype
from q35c.semantics.onnx_node import REFERENCE_FIXES

if TYPE_CHECKING:
    from q35c.compiler.frontends.onnx.importer import OnnxImporter
    from q35c.compiler.frontends.onnx.ops import Value

MAX_ITERATIONS = 10_000
"""A condition still true after this many compile-time iterations leaves the shapes unknown."""
MAX_SECONDS = 5.0
"""Nor may counting the iterations take longer than this (a crafted slice of heavy ops)."""


def _type_of(value: Value) -> tuple[np.dtype, tuple[int, ...]]:
    if isinstance(value, SSAValue):
        return numpy_dtype(value.type.get_element_type()), tuple(value.type.get_shape())
    array = np.asarray(value)
    return array.dtype, array.shape


def _info(name: str, dtype: np.dtype, shape) -> onnx.ValueInfoProto:
    return onnx.helper.make_tensor_value_info(
        name, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), list(shape))


def _static_nodes(body: onnx.GraphProto, sources: set[str]) -> tuple[list[NodeProto], set[str]]:
    """The body's nodes computable from `sources` alone, and every value they make."""
    from q35c.compiler.frontends.onnx.generic import outer_names

    known = set(sources) | {t.name for t in body.initializer} | {""}
    nodes = []
    for node in body.node:
        if all(name in known for name in node.input) and all(
                name in known for name in outer_names(node)):
            nodes.append(node)
            known.update(node.output)
    return nodes, known


def loop_result_dims(imp: OnnxImporter, node: NodeProto, inputs: list[Value],
                     outer: dict[str, Value]) -> dict[int, list[int]]:
    """{output slot: static dims} for the Loop `node`'s results that can be shaped (module
    docstring); `outer` maps the names its body reads from the enclosing graph to their
    values. Empty where nothing can."""
    body = next((a.g for a in node.attribute if a.name == "body"), None)
    if body is None or len(body.input) < 2 or len(body.output) < len(body.input) - 1:
        return {}
    carried = len(body.input) - 2
    initial = [inputs[2 + j] if len(inputs) > 2 + j else None for j in range(carried)]
    if any(value is None for value in initial):
        return {}
    types = [_type_of(value) for value in initial]
    known_outer = {n: np.asarray(v) for n, v in outer.items() if isinstance(v, np.ndarray)}
    body_shapes = _body_output_shapes(imp, body, types, outer, known_outer)
    dims: dict[int, list[int]] = {}
    for j in range(carried):  # a value the body keeps at its initial shape
        if body_shapes.get(1 + j) == types[j][1]:
            dims[j] = list(types[j][1])
    count = _iterations(imp, body, inputs, initial, known_outer)
    for k in range(len(body.output) - 1 - carried):
        shape = body_shapes.get(1 + carried + k)
        if count is not None and shape is not None:
            dims[carried + k] = [count, *shape]
    return dims


def _body_output_shapes(imp: OnnxImporter, body: onnx.GraphProto,
                        types: list[tuple[np.dtype, tuple[int, ...]]],
                        outer: dict[str, Value], known_outer: dict[str, np.ndarray]
                        ) -> dict[int, tuple[int, ...]]:
    """Static shapes of the body's outputs by ONNX shape inference on the body as a graph,
    its inputs typed from the iteration number, the condition and the initial values."""
    graph = onnx.GraphProto()
    graph.CopyFrom(body)
    del graph.input[:], graph.output[:], graph.value_info[:]
    graph.input.extend([_info(body.input[0].name, np.int64, []),
                        _info(body.input[1].name, np.bool_, [])])
    graph.input.extend(_info(info.name, dtype, shape)
                       for info, (dtype, shape) in zip(body.input[2:], types))
    for name, value in outer.items():
        if name in known_outer:
            graph.initializer.append(numpy_helper.from_array(known_outer[name], name))
        else:
            graph.input.append(_info(name, *_type_of(value)))
    graph.output.extend(onnx.helper.make_empty_tensor_value_info(o.name) for o in body.output)
    model = onnx.helper.make_model(graph, opset_imports=list(imp.model.opset_import),
                                   ir_version=imp.model.ir_version or onnx.IR_VERSION)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # the importer reports the node as it does today
        return {}
    infos = {v.name: v.type for v in [*inferred.graph.value_info, *inferred.graph.output,
                                      *inferred.graph.input]}
    shapes = {}
    for index, out in enumerate(body.output):
        proto = infos.get(out.name)
        if proto is None or not proto.HasField("tensor_type") or \
                not proto.tensor_type.HasField("shape"):
            continue
        dims = proto.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[index] = tuple(d.dim_value for d in dims)
    return shapes


def _iterations(imp: OnnxImporter, body: onnx.GraphProto, inputs: list[Value],
                initial: list[Value], known_outer: dict[str, np.ndarray]) -> int | None:
    """How many times the Loop runs, from the trip count, the initial condition and the
    body's static slice; None where that depends on run-time values."""
    trip = inputs[0] if inputs and inputs[0] is not None else None
    cond = inputs[1] if len(inputs) > 1 and inputs[1] is not None else None
    if trip is not None and not isinstance(trip, np.ndarray) or \
            cond is not None and not isinstance(cond, np.ndarray):
        return None
    limit = int(np.asarray(trip).reshape(-1)[0]) if trip is not None else None
    running = bool(np.asarray(cond).reshape(-1)[0]) if cond is not None else True
    if not running or (limit is not None and limit <= 0):
        return 0
    if cond is None:  # the specification: without a condition input the body's is ignored
        return limit if limit is not None and limit <= MAX_ITERATIONS else None
    names = [info.name for info in body.input]
    carried = {names[2 + j]: (j, np.asarray(v)) for j, v in enumerate(initial)
               if isinstance(v, np.ndarray)}
    while True:  # drop carried values whose update is not static, until none is
        nodes, made = _static_nodes(body, {*names[:2], *carried, *known_outer})
        lost = [n for n, (j, _) in carried.items() if body.output[1 + j].name not in made]
        if not lost:
            break
        for name in lost:
            del carried[name]
    cond_out = body.output[0].name
    if cond_out not in made:
        return None
    if limit is None and cond_out == names[1]:  # true forever
        return None
    if limit is not None and limit <= MAX_ITERATIONS and cond_out == names[1]:
        return limit
    outputs = [cond_out, *(body.output[1 + j].name for j, _ in carried.values())]
    graph = onnx.helper.make_graph(
        nodes, "slice",
        [_info(names[0], np.int64, []), _info(names[1], np.bool_, []),
         *(_info(n, v.dtype, v.shape) for n, (_, v) in carried.items())],
        [onnx.helper.make_empty_tensor_value_info(o) for o in dict.fromkeys(outputs)],
        [*body.initializer, *(numpy_helper.from_array(v, n) for n, v in known_outer.items())])
    try:
        evaluator = ReferenceEvaluator(onnx.helper.make_model(
            graph, opset_imports=list(imp.model.opset_import),
            ir_version=imp.model.ir_version or onnx.IR_VERSION), new_ops=REFERENCE_FIXES)
        state = {n: v for n, (_, v) in carried.items()}
        count, deadline = 0, time.monotonic() + MAX_SECONDS
        while running and (limit is None or count < limit):
            if count >= MAX_ITERATIONS or time.monotonic() > deadline:
                return None
            results = dict(zip(dict.fromkeys(outputs), evaluator.run(None, {
                names[0]: np.array(count, np.int64), names[1]: np.array(True), **state})))
            count += 1
            running = bool(np.asarray(results[cond_out]).reshape(-1)[0])
            state = {n: np.asarray(results[body.output[1 + j].name])
                     for n, (j, _) in carried.items()}
    except Exception:  # the run reports what the body does wrong
        return None
    return count
