"""The ONNX importer: walk the graph once, fold what is known, emit IR for the rest.

Every ONNX value is either known at import time (initializers, Constant nodes, and the
results of nodes whose inputs are all known: shape arithmetic, masks, rotary tables, and
pre-quantized weights run through their DequantizeLinear) or computed at run time (an
`SSAValue`). Known values are folded with onnx's reference implementation, so folding
follows the ONNX specification exactly; run-time nodes go through the converters in
ops.py. Known values become IR constants only where a run-time op uses them, large ones
through the weight store (`quant3p5.weight`) under their ONNX name.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import NodeProto, TensorProto
from onnx.reference import ReferenceEvaluator
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    ModuleOp,
    StringAttr,
    TensorType,
)
from xdsl.ir import Block, Region, SSAValue

from q35c.compiler.diagnostics import Q35cError, first_line
from q35c.compiler.frontends.onnx.builder import (
    TensorBuilder,
    ir_array,
    is_float,
    mlir_element,
    shape_of,
)
from q35c.compiler.frontends.onnx.model import (
    InitializerReader,
    bind_input_shapes,
    value_shape,
)
from q35c.compiler.frontends.onnx.ops import CONVERTERS, FOLD_ONLY, Value
from q35c.compiler.weights import WeightStore

_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16,
                TensorProto.DOUBLE}


def unsupported_ops(graph: onnx.GraphProto) -> dict[str, list[str]]:
    """op type -> node names, for every node q35c cannot convert or fold."""
    found: dict[str, list[str]] = {}
    for node in graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        if key not in CONVERTERS and key not in FOLD_ONLY:
            found.setdefault(key, []).append(node.name or f"<unnamed {node.op_type}>")
    return found


def unsupported_message(path: Path, found: dict[str, list[str]]) -> str:
    parts = []
    for op_type, names in sorted(found.items()):
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        parts.append(f"{op_type} x{len(names)} ({shown})")
    return f"{path}: unsupported operators: {'; '.join(parts)}"


class OnnxImporter:
    """Builds `func.func @main` for one ONNX graph."""

    def __init__(self, path: Path, model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]],
                 store: WeightStore):
        self.path = path
        self.model = model
        self.graph = model.graph
        self.opsets = {e.domain or "": e.version for e in model.opset_import}
        self.reader = InitializerReader(path, self.graph)
        self.store = store
        self.input_shapes = bind_input_shapes(path, model, shapes)
        self.env: dict[str, Value] = {}
        self.materialized: dict[str, SSAValue] = {}
        self.array_names: dict[int, str] = {}
        """id() of each known array in `env` -> its ONNX value name."""
        self.tb: TensorBuilder
        self.current: NodeProto | None = None

    # -- helpers for converters ------------------------------------------------------------
    def error(self, node: NodeProto, message: str) -> Q35cError:
        return Q35cError(f"{self.path}: node '{node.name or node.op_type}' ({node.op_type}): "
                         f"{message}")

    def attr(self, node: NodeProto, name: str, default):
        for attribute in node.attribute:
            if attribute.name == name:
                value = onnx.helper.get_attribute_value(attribute)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def ssa(self, value: Value) -> SSAValue:
        """A run-time value for `value`, materializing known arrays as constants.

        An array that is a graph value (an initializer or a folded result) is materialized
        once, and stored under its ONNX name when it is large.
        """
        if isinstance(value, SSAValue):
            return value
        if value is None:
            raise Q35cError("internal: a required input is missing")
        name = self.array_names.get(id(value))
        if name is None:
            return self.tb.constant(np.asarray(value))
        if name not in self.materialized:
            self.materialized[name] = self.tb.constant(np.asarray(value), name)
        return self.materialized[name]

    def float_ssa(self, node: NodeProto, value: Value) -> SSAValue:
        result = self.ssa(value)
        if not is_float(result):
            raise self.error(node, "expects a float tensor, got an integer one")
        return result

    def fold_transposed(self, name: str, value: np.ndarray) -> np.ndarray:
        """`value.T` for a known Gemm weight, stored as [K, N] under `<name>.T`."""
        transposed = np.ascontiguousarray(np.asarray(value).T)
        self.array_names[id(transposed)] = f"{name}.T"
        self.env[f"{name}.T"] = transposed  # keeps the array (and so its id) alive
        return transposed

    # -- values ----------------------------------------------------------------------------
    def lookup(self, name: str) -> Value:
        if not name:
            return None
        if name in self.env:
            return self.env[name]
        if name in self.reader:
            array = self.reader.read(name)
            self.env[name] = array
            self.array_names[id(array)] = name
            return array
        node = self.current
        where = f"node '{node.name or node.op_type}' ({node.op_type})" if node else "the graph"
        raise Q35cError(f"{self.path}: {where} uses '{name}', which no node, input or "
                        "initializer defines")

    def bind(self, node: NodeProto, outputs: list[Value]) -> None:
        for name, value in zip(node.output, outputs):
            if name:
                self.env[name] = value
                if isinstance(value, np.ndarray):
                    self.array_names.setdefault(id(value), name)

    # -- the walk --------------------------------------------------------------------------
    def fold(self, node: NodeProto, inputs: list[Value]) -> list[Value]:
        feeds = {n: np.asarray(v) for n, v in zip(node.input, inputs) if n}
        try:
            evaluator = ReferenceEvaluator(node, opsets=self.opsets)
            results = evaluator.run(None, feeds)
        except Exception as err:
            raise self.error(node, f"cannot evaluate at import time: {first_line(err)}") from None
        return [np.asarray(r) for r in results]

    def convert(self, node: NodeProto, inputs: list[Value]) -> list[Value]:
        if all(v is None or isinstance(v, np.ndarray) for v in inputs) and node.op_type not in (
                "Identity",):
            return self.fold(node, inputs)
        if node.op_type in FOLD_ONLY:
            raise self.error(node, "is supported only when all its inputs are known at "
                                   "compile time (static shapes and constant operands)")
        try:
            outputs = CONVERTERS[node.op_type](self, node, inputs)
        except Q35cError:
            raise
        except (ValueError, TypeError, IndexError, AssertionError) as err:
            raise self.error(node, first_line(err)) from None
        return outputs

    def argument_types(self) -> list[tuple[str, TensorType]]:
        args = []
        for info in self.graph.input:
            if info.name in self.reader:
                continue
            elem = info.type.tensor_type.elem_type
            dtype = np.dtype(np.float32) if elem in _FLOAT_TYPES else (
                np.dtype(np.bool_) if elem == TensorProto.BOOL else np.dtype(np.int64))
            args.append((info.name, TensorType(mlir_element(dtype),
                                               list(self.input_shapes[info.name]))))
        return args

    def check_output_shape(self, info: onnx.ValueInfoProto, value: SSAValue) -> None:
        declared = value_shape(info)
        actual = shape_of(value)
        if declared and (len(declared) != len(actual) or any(
                isinstance(d, int) and d != a for d, a in zip(declared, actual))):
            producer = next((n for n in self.graph.node if info.name in n.output), None)
            node = f"node '{producer.name or producer.op_type}'" if producer else "the graph"
            raise Q35cError(f"{self.path}: output '{info.name}' of {node} is declared "
                            f"{declared} but computes {list(actual)}")

    def run(self) -> ModuleOp:
        found = unsupported_ops(self.graph)
        if found:
            raise Q35cError(unsupported_message(self.path, found))
        args = self.argument_types()
        block = Block(arg_types=[t for _, t in args])
        self.tb = TensorBuilder(block, self.store)
        for (name, _), arg in zip(args, block.args):
            self.env[name] = arg
            arg.name_hint = _hint(name)
        for node in self.graph.node:
            self.current = node
            self.bind(node, self.convert(node, [self.lookup(n) for n in node.input]))
        self.current = None
        results = []
        for info in self.graph.output:
            value = self.ssa(self.lookup(info.name))
            self.check_output_shape(info, value)
            results.append(value)
        self.tb.insert(func.ReturnOp(*results))
        function = func.FuncOp(
            "main", ([t for _, t in args], [r.type for r in results]), Region(block),
            arg_attrs=_names([n for n, _ in args]),
            res_attrs=_names([o.name for o in self.graph.output]))
        return ModuleOp([function])


def _names(names: list[str]) -> ArrayAttr:
    return ArrayAttr([DictionaryAttr({"q35c.name": StringAttr(n)}) for n in names])


def _hint(name: str) -> str | None:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name).strip("_")
    return cleaned if cleaned and not cleaned[0].isdigit() else None


def op_histogram(graph: onnx.GraphProto) -> Counter[str]:
    return Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                   for n in graph.node)
