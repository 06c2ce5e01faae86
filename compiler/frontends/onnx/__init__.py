"""The ONNX frontend: `.onnx` models (fp32/fp16/bf16, or pre-quantized) into q35c IR.

    model.py     read the protobuf, opsets, external data (mapped lazily), --shape binding
    importer.py  walk the graph: fold known values, convert run-time nodes
    ops.py       one converter per ONNX op type
    builder.py   numpy-style tensor operations as xDSL ops

    quantized.py pre-quantized weights (DequantizeLinear, MatMulNBits, GatherBlockQuantized)
    contrib.py   onnxruntime contrib ops (GroupQueryAttention, Skip/SimplifiedLayerNormalization)
                 expanded into standard ONNX nodes

Float MatMul/Gemm weights enter the IR as named float `quant3p5.weight`s; the default
pipeline's `quantize-weights` pass turns them into Q3P5. Weights dequantized from a
pre-quantized form carry their origin as the `q35c.source` attribute.
"""

from __future__ import annotations

from pathlib import Path

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.frontends import FrontendOptions
from q35c.compiler.frontends.onnx import contrib  # noqa: F401  (registers converters)
from q35c.compiler.frontends.onnx.importer import OnnxImporter
from q35c.compiler.frontends.onnx.model import load_model
from q35c.compiler.frontends.onnx.quantized import mark_sources  # also registers converters
from q35c.compiler.verification import attach_verified, verify_module
from q35c.compiler.weights import WeightStore, attach_store


def load_onnx(path: Path, ctx: Context, options: FrontendOptions) -> ModuleOp:
    model = load_model(path, shape_only=options.shape_only)
    store = WeightStore()
    importer = OnnxImporter(path, model, options.shapes, store, shape_only=options.shape_only,
                            max_tensor_bytes=options.max_tensor_bytes,
                            given_shapes=options.given_shapes)
    module = importer.run()
    mark_sources(importer)
    attach_store(module, store)
    attach_verified(module, importer.verified)  # each node's ops verified as converted:
    verify_module(module, lambda reason: Q35cError(  # the rest, and what changed since
        f"{path}: the imported IR does not verify: {reason}"))
    return module
