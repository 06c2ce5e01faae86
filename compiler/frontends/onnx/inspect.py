"""`q35c inspect MODEL.onnx`: what a model holds, and what compiling it would do to it.

The summary has two halves:

* from the protobuf alone: opsets, inputs and outputs, the op histogram, the initializers
  (parameter count and stored bytes, external data), and the operators q35c cannot import;
* from importing the model (the ONNX frontend, no passes): the weights the IR refers to and,
  for each, whether the default pipeline's `quantize-weights` would pack it to Q3P5. The
  decision uses the pass's own test (`QuantizeMatmulWeights.float_weight`: a 2-D float
  weight that is the right operand of a matmul, with at least `min-elements` elements, whose
  name `--keep-float` does not match), so it cannot drift from what compiling does. Bytes
  before are the float weights as the compiler stores them (float32, integers as int64);
  bytes after are `storage_bytes` of each packed weight plus the weights that stay float.

Inputs with dynamic dimensions that `--shape` does not bind are imported with size
`ASSUMED_DIM` for each such dimension (weights do not depend on it; 2 rather than 1, so that
no dimension takes the special paths of size 1 in broadcasting and squeezing); the summary
says so.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from q35c.compiler.diagnostics import Q35cError, first_line
from q35c.compiler.frontends.onnx.builder import INLINE_LIMIT
from q35c.compiler.frontends.onnx.model import (
    bind_input_shapes,
    declared_shape,
    graph_inputs,
    load_model,
    shape_text,
    storage_size,
    type_name,
)
from q35c.compiler.quantizable import (
    DEFAULT_GROUP_SIZE,
    DEFAULT_MIN_ELEMENTS,
    quantizable_table,
    quantizable_weight,
    tied_transpose,
)

ASSUMED_DIM = 2
"""Size given to dynamic input dimensions that --shape leaves unbound."""


@dataclass
class WeightInfo:
    """One weight of the imported IR and what `quantize-weights` would do with it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    float_bytes: int
    quantized: bool
    after_bytes: int
    reason: str
    """Why the weight stays float ('' when it is packed)."""
    source: str = ""
    """The pre-quantized form the frontend dequantized it from, if any (`q35c.source`)."""

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class Summary:
    path: Path
    ir_version: int
    opsets: list[tuple[str, int]]
    producer: str
    inputs: list[tuple[str, str, str]]
    """(name, element type, declared shape) of each graph input."""
    outputs: list[tuple[str, str, str]]
    histogram: Counter[str]
    initializers: int
    parameters: int
    stored_bytes: int
    external: int
    external_bytes: int
    unsupported: dict[str, list[str]]
    assumed: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Inputs whose dynamic dims were set to `ASSUMED_DIM` for the import."""
    group_size: int = 0
    min_elements: int = 0
    keep_float: str | None = None
    weights: list[WeightInfo] | None = None
    import_error: str | None = None

    @property
    def quantized(self) -> list[WeightInfo]:
        return [w for w in self.weights or [] if w.quantized]

    @property
    def kept(self) -> list[WeightInfo]:
        """Weights that stay float (an embedding table whose gathers all read packed weights
        is in neither list: nothing of it is stored)."""
        return [w for w in self.weights or [] if not w.quantized and w.after_bytes]

    def bytes_before(self) -> int:
        return sum(w.float_bytes for w in self.weights or [])

    def bytes_after(self) -> int:
        return sum(w.after_bytes for w in self.weights or [])

    def text(self) -> str:
        lines = [f"model: {self.path}",
                 f"  ir_version {self.ir_version}, opsets "
                 + ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in self.opsets)
                 + (f", producer {self.producer}" if self.producer else "")]
        for title, values in (("inputs", self.inputs), ("outputs", self.outputs)):
            lines.append(f"{title}:")
            for name, elem, shape in values:
                note = ""
                if name in self.assumed:
                    note = (f"  (imported as {list(self.assumed[name])}; "
                            f"bind with --shape {name}=...)")
                lines.append(f"  {name}: {elem.lower()} {shape}{note}")
        total = sum(self.histogram.values())
        lines.append(f"operators: {total} nodes, {len(self.histogram)} op types")
        width = max((len(k) for k in self.histogram), default=0)
        for op, count in sorted(self.histogram.items(), key=lambda kv: (-kv[1], kv[0])):
            mark = "  (unsupported)" if op in self.unsupported else ""
            lines.append(f"  {op:<{width}} {count:>6}{mark}")
        external = (f", {self.external} in external data ({_size(self.external_bytes)})"
                    if self.external else "")
        lines.append(f"parameters: {self.parameters:,} in "
                     f"{_count(self.initializers, 'initializer')}, "
                     f"{_size(self.stored_bytes)} as stored{external}")
        if self.unsupported:
            parts = [f"{op} x{len(names)} ({', '.join(names[:3])}"
                     f"{', ...' if len(names) > 3 else ''})"
                     for op, names in sorted(self.unsupported.items())]
            lines.append(f"unsupported operators: {'; '.join(parts)}")
        else:
            lines.append("unsupported operators: none")
        keep = f", keep-float '{self.keep_float}'" if self.keep_float else ""
        lines.append(f"quantize-weights (Q3P5, group size {self.group_size}, min "
                     f"{self.min_elements} elements{keep}); weights of the imported IR "
                     f"(constants of at most {INLINE_LIMIT} elements stay inline):")
        if self.weights is None:
            lines.append(f"  not computed: the model does not import ({self.import_error})")
            return "\n".join(lines) + "\n"
        rows = [("weight", "shape", "elements", "before", "after", "")]
        for w in self.weights:
            verdict = "Q3P5" if w.quantized else "float" if w.after_bytes else "dropped"
            if w.source:
                verdict += f" <- {w.source}"
            rows.append((w.name, "x".join(map(str, w.shape)) or "scalar", f"{w.elements:,}",
                         f"{w.float_bytes:,}", f"{w.after_bytes:,}",
                         f"{verdict} ({w.reason})" if w.reason else verdict))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for row in rows:
            lines.append("  " + "  ".join(
                cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
                for i, cell in enumerate(row[:5])) + ("  " + row[5] if row[5] else ""))
        q_elems = sum(w.elements for w in self.quantized)
        k_elems = sum(w.elements for w in self.kept)
        lines.append(f"  quantized:  {_count(len(self.quantized), 'weight')}, {q_elems:,} "
                     "elements")
        lines.append(f"  kept float: {_count(len(self.kept), 'weight')}, {k_elems:,} elements")
        before, after = self.bytes_before(), self.bytes_after()
        ratio = f" ({before / after:.2f}x smaller)" if after else ""
        lines.append(f"bytes: {before:,} before -> {after:,} after{ratio}")
        return "\n".join(lines) + "\n"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _io(info: onnx.ValueInfoProto) -> tuple[str, str, str]:
    ttype = info.type.tensor_type
    return info.name, type_name(ttype.elem_type), shape_text(declared_shape(info))


def inspect_model(path: Path, shapes: dict[str, tuple[int, ...]] | None = None,
                  keep_float: str | None = None) -> Summary:
    """The summary of `path`; `Q35cError` if it cannot even be read (or a flag is bad)."""
    from q35c.compiler.frontends.onnx.importer import unsupported_ops

    shapes = dict(shapes or {})
    if not path.exists():
        raise Q35cError(f"{path}: no such file")
    if path.suffix.lower() != ".onnx":
        raise Q35cError(f"{path}: q35c inspect reads .onnx models")
    if keep_float:
        try:
            re.compile(keep_float)
        except re.error as err:
            raise Q35cError(f"--keep-float: '{keep_float}' is not a valid regular "
                            f"expression: {err}") from None
    model = load_model(path)
    graph = model.graph
    parameters = stored = external = external_bytes = 0
    for tensor in graph.initializer:
        count = math.prod(tensor.dims)
        size = storage_size(tensor.data_type, count) or 0
        parameters += count
        stored += size
        if tensor.data_location == TensorProto.EXTERNAL:
            external += 1
            external_bytes += size
    summary = Summary(
        path=path, ir_version=model.ir_version,
        opsets=sorted((e.domain, e.version) for e in model.opset_import),
        producer=" ".join(p for p in (model.producer_name, model.producer_version) if p),
        inputs=[_io(i) for i in graph_inputs(model)], outputs=[_io(o) for o in graph.output],
        histogram=Counter(_op_key(n) for n in graph.node), initializers=len(graph.initializer),
        parameters=parameters, stored_bytes=stored, external=external,
        external_bytes=external_bytes, unsupported=unsupported_ops(graph),
        group_size=DEFAULT_GROUP_SIZE, min_elements=DEFAULT_MIN_ELEMENTS,
        keep_float=keep_float)
    for info in graph_inputs(model):
        declared = declared_shape(info)
        if info.name not in shapes and declared is not None and not all(
                isinstance(d, int) for d in declared):
            summary.assumed[info.name] = tuple(d if isinstance(d, int) else ASSUMED_DIM
                                               for d in declared)
    try:
        bind_input_shapes(path, model, {**summary.assumed, **shapes})
    except Q35cError as err:
        if f"{path}: --shape " in str(err):
            raise  # the flag is wrong, not the model
        summary.import_error = first_line(err).removeprefix(f"{path}: ")
        return summary
    if summary.unsupported:
        summary.import_error = "unsupported operators"
        return summary
    try:
        summary.weights = _weights(path, {**summary.assumed, **shapes}, keep_float)
    except Q35cError as err:
        summary.import_error = first_line(err).removeprefix(f"{path}: ")
    return summary


def _weights(path: Path, shapes: dict[str, tuple[int, ...]], keep_float: str | None
             ) -> list[WeightInfo]:
    """Import `path` and classify every weight its IR uses as `quantize-weights` would."""
    from xdsl.context import Context
    from xdsl.dialects.builtin import StringAttr
    from xdsl.dialects.linalg import ops as linalg

    from q35c.compiler.frontends import FrontendOptions
    from q35c.compiler.frontends.onnx import load_onnx
    from q35c.compiler.ir_attrs import SOURCE_ATTR
    from q35c.compiler.quant import storage_bytes
    from q35c.compiler.weights import store_of
    from q35c.dialects import q35nn, quant3p5

    # The ONNX frontend builds ops directly and parses nothing: no dialect to register.
    module = load_onnx(path, Context(), FrontendOptions(shapes=shapes))
    store = store_of(module)
    keep = re.compile(keep_float) if keep_float else None
    weight_ops: dict[str, list[quant3p5.WeightOp]] = {}
    for op in module.walk():
        if isinstance(op, quant3p5.WeightOp):
            weight_ops.setdefault(op.weight_name.data, []).append(op)
    matmuls = (linalg.MatmulOp, q35nn.BatchMatmulOp)
    candidates = {w.weight_name.data for m in module.walk()
                  if isinstance(m, matmuls)
                  for w in [quantizable_weight(m.operands[1], DEFAULT_MIN_ELEMENTS, keep)]
                  if w is not None}
    # Row gathers of float tables become quant3p5.gather: of the tied LM head's packed
    # weights when one is the table's transpose, else of the table's own packed transpose.
    table_gathers: set[object] = set()
    tables: dict[str, str] = {}  # table -> the packed weights its gathers read
    untied: set[str] = set()  # tables packed on their own (no tied LM head)
    for m in module.walk():
        table = quantizable_table(m, DEFAULT_MIN_ELEMENTS, keep) \
            if isinstance(m, q35nn.GatherOp) else None
        if table is None:
            continue
        table_gathers.add(m)
        name = table.weight_name.data
        if name not in tables:
            v, d = table.result.type.get_shape()
            head = next((h for h in sorted(candidates) if np.shape(store[h]) == (d, v)
                         and tied_transpose(store, name, h)), None)
            tables[name] = head or f"{name}.T"
            if head is None:
                untied.add(name)
    infos = []
    for name, ops in weight_ops.items():
        value = store[name]
        if not isinstance(value, np.ndarray):
            continue  # already packed: nothing to decide
        array = np.asarray(value)
        shape = tuple(array.shape)
        float_bytes = array.nbytes
        quantized = name in candidates
        # Does a use other than a packed matmul or a packed gather keep the float alive?
        still_float = any(
            not ((quantized and isinstance(use.operation, matmuls) and use.index == 1)
                 or use.operation in table_gathers)
            for op in ops for use in op.result.uses)
        after = storage_bytes(shape, DEFAULT_GROUP_SIZE) if quantized else 0
        if still_float:
            after += float_bytes
        if not still_float and not quantized:
            reason = f"embedding table: gathers read {tables[name]} (Q3P5)"
        else:
            reason = "" if quantized and not still_float else _why_float(
                name, shape, array, ops, DEFAULT_MIN_ELEMENTS, keep_float, quantized)
        sources = [op.attributes[SOURCE_ATTR] for op in ops if SOURCE_ATTR in op.attributes]
        source = sources[0].data if sources and isinstance(sources[0], StringAttr) else ""
        infos.append(WeightInfo(name, shape, str(array.dtype), float_bytes, quantized, after,
                                reason, source))
        if name in untied:  # an untied table's own packed transpose
            packed = shape[::-1]
            infos.append(WeightInfo(f"{name}.T", packed, str(array.dtype), 0, True,
                                    storage_bytes(packed, DEFAULT_GROUP_SIZE),
                                    f"embedding table {name}, transposed", source))
    return sorted(infos, key=lambda w: w.name)


def _why_float(name: str, shape: tuple[int, ...], array: np.ndarray, ops, min_elements: int,
               keep_float: str | None, quantized: bool) -> str:
    from xdsl.dialects.linalg import ops as linalg

    from q35c.dialects import q35nn

    users = {use.operation.name for op in ops for use in op.result.uses}
    if quantized:
        others = {use.operation.name for op in ops for use in op.result.uses
                  if not (isinstance(use.operation, (linalg.MatmulOp, q35nn.BatchMatmulOp))
                          and use.index == 1)}
        return "+ float copy for " + ", ".join(sorted(others))
    matmul_rhs = any(isinstance(use.operation, (linalg.MatmulOp, q35nn.BatchMatmulOp))
                     and use.index == 1 for op in ops for use in op.result.uses)
    if not matmul_rhs:
        return "not a matmul weight: used by " + ", ".join(sorted(users))
    if not np.issubdtype(array.dtype, np.floating):
        return "not float"
    if len(shape) != 2:
        return f"{len(shape)}-D"
    if math.prod(shape) < min_elements:
        return f"< {min_elements} elements"
    if keep_float and re.search(keep_float, name):
        return "matches --keep-float"
    return "not quantized"
