"""Reading ONNX files: the protobuf, its opset, external data, and input shape binding.

Initializers stored as external data are memory-mapped one at a time when the importer asks
for them (`InitializerReader`), and the reader records where each one lies
(`InitializerReader.file_weight`): a large one the importer does not fold over enters the
weight store as a `FileWeight` (a file range, read when a pass or the writer uses it), so
import holds no weight data and the compile's memory follows the largest tensor, not the
model. Every problem is a one-line `Q35cError` naming the file (and the tensor or node).

`load_model` checks the graph's structure before anything is imported (`check_graph`):
every value used is defined earlier, once; default-domain nodes fit their onnx schema (input
and output counts, required inputs and attributes, attribute types); external data stays
inside the model's directory; graph inputs have element types q35c computes with. Errors
name the node at fault, so a broken model fails the same way with or without `--shape`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from q35c.compiler.diagnostics import Q35cError, first_line
from q35c.compiler.files import InputFileError, confined_file, max_input_bytes, read_input_bytes
from q35c.compiler.weights import FileWeight

MIN_OPSET = 13

SUB_BYTE_BITS = {TensorProto.INT4: 4, TensorProto.UINT4: 4, TensorProto.FLOAT4E2M1: 4,
                 TensorProto.INT2: 2, TensorProto.UINT2: 2}
"""Element types stored packed, several to a byte."""

UNSUPPORTED_TYPES = {TensorProto.UNDEFINED, TensorProto.STRING, TensorProto.COMPLEX64,
                     TensorProto.COMPLEX128}
"""Element types no q35c tensor can hold."""

INPUT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE,
               TensorProto.BOOL, TensorProto.INT8, TensorProto.INT16, TensorProto.INT32,
               TensorProto.INT64, TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32,
               TensorProto.UINT64, TensorProto.INT4, TensorProto.UINT4, TensorProto.INT2,
               TensorProto.UINT2, TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ,
               TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ, TensorProto.FLOAT8E8M0,
               TensorProto.FLOAT4E2M1}
"""Element types a graph input may have: each becomes its own IR element type."""


def type_name(data_type: int) -> str:
    """`FLOAT`, `INT64`, ... or the number of an element type onnx does not know."""
    try:
        return TensorProto.DataType.Name(data_type)
    except ValueError:
        return str(data_type)


def load_model(path: Path, shape_only: bool = False) -> onnx.ModelProto:
    """Parse and check `path` without loading external data; upgrade opsets older than 13.

    With `shape_only`, external data files need not exist (their data is never read)."""
    data = read_input_bytes(path)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as err:  # DecodeError, OSError, and whatever a corrupt file raises
        raise Q35cError(f"{path}: not a valid ONNX model ({first_line(err)})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise Q35cError(f"{path}: not a valid ONNX model (no graph or no nodes)")
    bad = _non_utf8_field(model)
    if bad:
        raise Q35cError(f"{path}: not a valid ONNX model ({bad} is not valid UTF-8)")
    opset = default_opset(model, path)
    newest = onnx.defs.onnx_opset_version()
    if opset < 1:
        raise Q35cError(f"{path}: the default-domain opset version {opset} is not valid")
    if opset > newest:
        raise Q35cError(f"{path}: opset {opset} is newer than the newest this onnx package "
                        f"supports ({newest})")
    check_graph(path, model.graph, opset, shape_only=shape_only)
    if opset < MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, MIN_OPSET)
        except Exception as err:
            raise Q35cError(f"{path}: opset {opset} is older than {MIN_OPSET} and could not be "
                            f"upgraded: {first_line(err)}") from None
        if not model.graph.node:
            raise Q35cError(f"{path}: opset {opset} is older than {MIN_OPSET} and could not "
                            "be upgraded")
    return model


def _non_utf8_field(message, where: str = "model") -> str | None:
    """The path of the first string field that did not decode (protobuf then gives bytes)."""
    for field, value in message.ListFields():
        if field.type not in (field.TYPE_STRING, field.TYPE_MESSAGE):
            continue
        repeated = (field.is_repeated if hasattr(field, "is_repeated")
                    else field.label == field.LABEL_REPEATED)
        for i, item in enumerate(value if repeated else [value]):
            at = f"{where}.{field.name}" + (f"[{i}]" if repeated else "")
            if field.type == field.TYPE_STRING:
                if not isinstance(item, str):
                    return at
            elif found := _non_utf8_field(item, at):
                return found
    return None


def default_opset(model: onnx.ModelProto, path: Path | None = None) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    where = f"{path}: " if path else ""
    raise Q35cError(f"{where}the model imports no default-domain (ai.onnx) opset")


def node_label(node: onnx.NodeProto) -> str:
    return f"node '{node.name or node.op_type}' ({node.op_type})"


def check_graph(path: Path, graph: onnx.GraphProto, opset: int | None = None,
                shape_only: bool = False) -> None:
    """Reject graphs that use a value before (or without) defining it, or define one twice,
    and default-domain nodes whose inputs, outputs or attributes do not fit their schema
    (at `opset`).

    ONNX requires nodes in topological order and every value defined once (SSA); the
    importer walks the nodes in order and relies on both.
    """
    initializers: set[str] = set()
    for tensor in graph.initializer:
        if not tensor.name:
            raise Q35cError(f"{path}: an initializer has no name")
        if tensor.name in initializers:
            raise Q35cError(f"{path}: initializer '{tensor.name}' is defined twice")
        initializers.add(tensor.name)
    defined = set(initializers)
    inputs: set[str] = set()
    for info in graph.input:
        if info.name in inputs:
            raise Q35cError(f"{path}: graph input '{info.name}' is declared twice")
        inputs.add(info.name)
        if info.name in initializers:
            continue  # an initializer listed as an input too (IR < 4 style): a constant
        if not info.name:
            raise Q35cError(f"{path}: a graph input has no name")
        elem = info.type.tensor_type.elem_type if info.type.HasField("tensor_type") else 0
        if elem not in INPUT_TYPES:
            what = type_name(elem) if info.type.HasField("tensor_type") else "a non-tensor type"
            raise Q35cError(f"{path}: graph input '{info.name}' has element type {what}, "
                            "which q35c does not support")
        defined.add(info.name)
    producer: dict[str, onnx.NodeProto] = {}
    later = {out: node for node in reversed(graph.node) for out in node.output if out}
    for node in graph.node:
        if opset is not None and node.domain in ("", "ai.onnx"):
            check_node_schema(path, node, opset)
        for name in node.input:
            if name and name not in defined:
                if name in later:
                    raise Q35cError(
                        f"{path}: {node_label(node)} uses '{name}' before "
                        f"{node_label(later[name])} computes it (the nodes are not in "
                        "topological order)")
                raise Q35cError(f"{path}: {node_label(node)} uses '{name}', which no node, "
                                "input or initializer defines")
        for name in node.output:
            if not name:
                continue
            if name in defined:
                first = (f"{node_label(producer[name])}" if name in producer
                         else "an initializer" if name in initializers else "a graph input")
                raise Q35cError(f"{path}: {node_label(node)} defines '{name}', which "
                                f"{first} already defines")
            defined.add(name)
            producer[name] = node
    for info in graph.output:
        if info.name not in defined:
            raise Q35cError(f"{path}: graph output '{info.name}' is not computed by any "
                            "node, nor is it an input or initializer")
    reader = InitializerReader(path, graph)
    for tensor in graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            reader.external_file(tensor, must_exist=not shape_only)


def check_node_schema(path: Path, node: onnx.NodeProto, opset: int) -> None:
    """Input and output counts, required inputs and attribute types of a default-domain node.

    Op types onnx does not know at `opset` are left to the unsupported-operator check.
    """
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return
    where = f"{path}: {node_label(node)}"
    for what, values, low, high in (("inputs", node.input, schema.min_input, schema.max_input),
                                    ("outputs", node.output, schema.min_output,
                                     schema.max_output)):
        if not low <= len(values) <= high:
            allowed = str(low) if low == high else (
                f"at least {low}" if high >= 2**31 - 1 else f"{low} to {high}")
            raise Q35cError(f"{where} has {len(values)} {what}; {node.op_type}-{opset} takes "
                            f"{allowed}")
    single = onnx.defs.OpSchema.FormalParameterOption.Single
    for index, formal in enumerate(schema.inputs):
        if formal.option == single and index < len(node.input) and not node.input[index]:
            raise Q35cError(f"{where}: its required input {index} ('{formal.name}') is empty")
    given = {}
    for attribute in node.attribute:
        if attribute.name in given:
            raise Q35cError(f"{where}: attribute '{attribute.name}' is given twice")
        given[attribute.name] = attribute
        spec = schema.attributes.get(attribute.name)
        if spec is not None and not attribute.ref_attr_name and \
                int(attribute.type) != int(spec.type.value):
            raise Q35cError(f"{where}: attribute '{attribute.name}' must be "
                            f"{spec.type.name}, got "
                            f"{onnx.AttributeProto.AttributeType.Name(attribute.type)}")
    missing = [n for n, spec in schema.attributes.items() if spec.required and n not in given]
    if missing:
        raise Q35cError(f"{where}: required attribute(s) {', '.join(sorted(missing))} missing")


class InitializerReader:
    """Initializer values by name, external data mapped lazily from the model's directory."""

    def __init__(self, path: Path, graph: onnx.GraphProto):
        self.path = path
        self.base = path.resolve().parent
        self.graph = graph
        self.tensors = {t.name: t for t in graph.initializer}
        self._users: dict[str, onnx.NodeProto] | None = None
        self._files: dict[str, FileWeight] = {}
        """Name -> file range of each external initializer `read` returned as a mapped view."""

    def file_weight(self, name: str) -> FileWeight | None:
        """Where the data of external initializer `name` lies (after `read`), for a store
        entry that reads it when used; None for inline data and converted types."""
        return self._files.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def where(self, name: str) -> str:
        """`initializer 'w' (input of node 'n' (MatMul))`, for error messages."""
        if self._users is None:
            self._users = {}
            for node in self.graph.node:
                for value in node.input:
                    self._users.setdefault(value, node)
        user = self._users.get(name)
        return f"initializer '{name}'" + (f" (input of {node_label(user)})" if user else "")

    def fail(self, name: str, message: str) -> Q35cError:
        return Q35cError(f"{self.path}: {self.where(name)}: {message}")

    def read(self, name: str) -> np.ndarray:
        tensor = self.tensors[name]
        if tensor.data_type in UNSUPPORTED_TYPES or tensor.data_type not in \
                TensorProto.DataType.values():
            raise self.fail(name, f"element type {type_name(tensor.data_type)} is not supported")
        if any(d < 0 for d in tensor.dims):
            raise self.fail(name, f"negative dimension in its shape {list(tensor.dims)}")
        try:
            if tensor.data_location == TensorProto.EXTERNAL:
                return self._external(tensor)
            self._check_raw_size(tensor)
            return numpy_helper.to_array(tensor)
        except Q35cError:
            raise
        except Exception as err:
            raise self.fail(name, f"corrupt data: {first_line(err)}") from None

    def _check_raw_size(self, tensor: TensorProto) -> None:
        if not tensor.HasField("raw_data"):
            return
        expected = storage_size(tensor.data_type, math.prod(tensor.dims))
        if expected is not None and len(tensor.raw_data) != expected:
            raise self.fail(tensor.name, f"{len(tensor.raw_data)} bytes of data, but its type "
                                         f"{type_name(tensor.data_type)} and shape "
                                         f"{list(tensor.dims)} need {expected}")

    def external_file(self, tensor: TensorProto,
                      must_exist: bool = False) -> tuple[Path, int, int | None]:
        """(file, offset, length or None) of an external tensor, checked to stay inside the
        model's directory (and to exist, if `must_exist`)."""
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        if not location:
            raise self.fail(tensor.name, "external data without a location")
        try:
            target = confined_file(self.base, location, must_exist=must_exist,
                                   limit=max_input_bytes(text=False))
        except InputFileError as err:
            if err.outside:
                raise self.fail(tensor.name, f"external data at '{location}', outside the "
                                             "model's directory") from None
            raise self.fail(tensor.name, f"external data file {err}") from None
        numbers = {}
        for key in ("offset", "length"):
            if key in info:
                try:
                    numbers[key] = int(info[key])
                except ValueError:
                    numbers[key] = -1
                if numbers[key] < 0:
                    raise self.fail(tensor.name, f"external data {key} '{info[key]}' is not a "
                                                 "non-negative integer")
        return target, numbers.get("offset", 0), numbers.get("length")

    def _external(self, tensor: TensorProto) -> np.ndarray:
        target, offset, length = self.external_file(tensor, must_exist=True)
        location = {e.key: e.value for e in tensor.external_data}["location"]
        shape = tuple(tensor.dims)
        count = math.prod(shape)
        expected = storage_size(tensor.data_type, count)
        if length is None:
            if expected is None:
                raise self.fail(tensor.name, "external data of type "
                                             f"{type_name(tensor.data_type)} needs a length")
            length = expected
        elif expected is not None and length != expected:
            raise self.fail(tensor.name, f"external data length {length} does not match its "
                                         f"type {type_name(tensor.data_type)} and shape "
                                         f"{list(shape)} ({expected} bytes)")
        if offset + length > target.stat().st_size:
            raise self.fail(tensor.name, f"external data in '{location}' is truncated (needs "
                                         f"bytes {offset} to {offset + length})")
        if length == 0:
            raw = np.zeros(0, np.uint8)
        else:
            raw = np.memmap(target, dtype=np.uint8, mode="r", offset=offset, shape=(length,))
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        if dtype.kind in "fiub" and tensor.data_type not in SUB_BYTE_BITS and \
                tensor.data_type != TensorProto.BFLOAT16:
            dtype = dtype.newbyteorder("<")  # ONNX raw data is little-endian
            self._files[tensor.name] = FileWeight(target, offset, dtype.str, shape,
                                                  dtype.str)
            return raw.view(dtype).reshape(shape)  # stays memory-mapped
        inline = TensorProto()
        inline.CopyFrom(tensor)
        del inline.external_data[:]
        inline.data_location = TensorProto.DEFAULT
        inline.raw_data = raw.tobytes()
        return numpy_helper.to_array(inline)


def storage_size(data_type: int, count: int) -> int | None:
    """Bytes that `count` elements of `data_type` take in raw data, None if unknown."""
    if data_type in SUB_BYTE_BITS:
        return -(-count * SUB_BYTE_BITS[data_type] // 8)
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(data_type)
    except KeyError:
        return None
    if dtype.kind == "O" or data_type in (TensorProto.FLOAT6E2M3, TensorProto.FLOAT6E3M2):
        return None
    return count * dtype.itemsize


def value_shape(info: onnx.ValueInfoProto) -> list[int | str | None]:
    """Declared dims of a graph input/output: ints, dim_param names, or None if unknown."""
    ttype = info.type.tensor_type
    if not ttype.HasField("shape"):
        return []
    dims: list[int | str | None] = []
    for dim in ttype.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return dims


def shape_text(dims: list[int | str | None] | None) -> str:
    """`[batch, 8]` (and `[?]` for a shape of unknown rank)."""
    if dims is None:
        return "[?]"
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def declared_shape(info: onnx.ValueInfoProto) -> list[int | str | None] | None:
    """Like `value_shape`, but None when the input declares no shape (unknown rank)."""
    if not info.type.tensor_type.HasField("shape"):
        return None
    return value_shape(info)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds: graph inputs that are not initializers."""
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def bind_input_shapes(path: Path, model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]],
                      given: dict[str, tuple[int, ...]] | None = None
                      ) -> dict[str, tuple[int, ...]]:
    """Static shapes of the graph inputs, dynamic dims taken from `--shape NAME=d1,d2,...`,
    else from the shape of the array `q35c run --input NAME=...` was `given`."""
    given = given or {}
    inputs = graph_inputs(model)
    unknown = sorted(set(shapes) - {i.name for i in inputs})
    if unknown:
        raise Q35cError(f"{path}: --shape names unknown input(s) {', '.join(unknown)}; the "
                        f"model's inputs are {', '.join(i.name for i in inputs) or 'none'}")
    bound: dict[str, tuple[int, ...]] = {}
    unbound: list[str] = []
    for info in inputs:
        declared = declared_shape(info)
        bad = [d for d in declared or [] if isinstance(d, int) and d < 0]
        if bad:
            raise Q35cError(f"{path}: graph input '{info.name}' declares the shape "
                            f"{shape_text(declared)}; sizes must be 0 or more")
        if info.name in shapes:
            given = shapes[info.name]
            if declared is not None and (len(given) != len(declared) or any(
                    isinstance(d, int) and d != g for d, g in zip(declared, given))):
                raise Q35cError(f"{path}: --shape {info.name}={','.join(map(str, given))} "
                                f"does not fit the declared shape {shape_text(declared)}")
            bound[info.name] = tuple(given)
        elif declared is not None and all(isinstance(d, int) for d in declared):
            bound[info.name] = tuple(declared)  # type: ignore[arg-type]
        elif info.name in given:
            shape = tuple(given[info.name])
            if declared is not None and (len(shape) != len(declared) or any(
                    isinstance(d, int) and d != g for d, g in zip(declared, shape))):
                raise Q35cError(f"{path}: --input {info.name} has shape {list(shape)}, which "
                                f"does not fit the declared shape {shape_text(declared)}")
            bound[info.name] = shape
        else:
            unbound.append(f"{info.name}{shape_text(declared)}")
    if unbound:
        example = " ".join(f"--shape {u.split('[')[0]}=..." for u in unbound)
        raise Q35cError(f"{path}: dynamic input dimensions need values: {'; '.join(unbound)} "
                        f"(bind them with {example})")
    return bound
