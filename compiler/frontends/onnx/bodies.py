"""The body of an If, Loop or Scan as a module of its own (`compiler/subgraphs.py`).

A body is an ONNX graph whose formal inputs may lack shapes and which may read values of
the enclosing graph by name. `import_body` makes it a model of its own: the formal inputs
get the static types the caller gives, the enclosing graph's values become initializers
(known ones, so a body's Unsqueeze axes fold) or further graph inputs (run-time ones), and
the model goes through the same checks and importer as a file does (float import: nothing
is quantized). The driver installs it as the body importer around a target's write or run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.frontends.onnx.importer import OnnxImporter
from q35c.compiler.frontends.onnx.model import check_graph
from q35c.compiler.frontends.onnx.quantized import mark_sources
from q35c.compiler.subgraphs import BodyRequest
from q35c.compiler.verification import attach_verified, verify_module
from q35c.compiler.weights import WeightStore, attach_store


def _info(name: str, dtype: np.dtype, shape) -> onnx.ValueInfoProto:
    return onnx.helper.make_tensor_value_info(
        name, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), list(shape))


def body_model(request: BodyRequest) -> onnx.ModelProto:
    """The body of `request` as a model: formal inputs typed, outer values bound."""
    graph = onnx.GraphProto()
    graph.CopyFrom(request.graph)
    if len(graph.input) != len(request.inputs):
        raise Q35cError(f"{request.where}: the body has {len(graph.input)} inputs, the node "
                        f"gives it {len(request.inputs)}")
    formal = [_info(info.name, v.dtype, v.shape)
              for info, v in zip(graph.input, request.inputs)]
    del graph.input[:]
    graph.input.extend(formal)
    for value in request.outer:
        if value.value is not None:
            graph.initializer.append(numpy_helper.from_array(np.asarray(value.value),
                                                             value.name))
        else:
            graph.input.append(_info(value.name, value.dtype, value.shape))
    if not graph.name:
        graph.name = "body"
    return onnx.helper.make_model(
        graph, ir_version=request.ir_version or onnx.IR_VERSION,
        opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in request.opsets])


def import_body(request: BodyRequest):
    """(module, store) of the body of `request` (compiler/subgraphs.BodyImporter)."""
    model = body_model(request)
    path = Path(request.where)
    opset = dict(request.opsets).get("", None)
    check_graph(path, model.graph, opset)
    store = WeightStore()
    importer = OnnxImporter(path, model, {}, store)
    module = importer.run()
    mark_sources(importer)
    attach_store(module, store)
    attach_verified(module, importer.verified)
    verify_module(module, lambda reason: Q35cError(
        f"{path}: the imported IR does not verify: {reason}"))
    return module, store
