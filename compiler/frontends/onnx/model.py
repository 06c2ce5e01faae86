"""Reading ONNX files: the protobuf, its opset, external data, and input shape binding.

Initializers stored as external data are memory-mapped one at a time when the importer asks
for them (`InitializerReader`), so the importer's memory follows the largest tensor, not the
model. Every problem is a one-line `Q35cError` naming the file (and the tensor or node).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, numpy_helper

from q35c.compiler.diagnostics import Q35cError, first_line

MIN_OPSET = 13


def load_model(path: Path) -> onnx.ModelProto:
    """Parse `path` without loading external data; upgrade opsets older than 13."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as err:
        raise Q35cError(f"{path}: not a valid ONNX model ({first_line(err)})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise Q35cError(f"{path}: not a valid ONNX model (no graph or no nodes)")
    opset = default_opset(model)
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise Q35cError(f"{path}: opset {opset} is newer than the newest this onnx package "
                        f"supports ({newest})")
    if opset < MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, MIN_OPSET)
        except Exception as err:
            raise Q35cError(f"{path}: opset {opset} is older than {MIN_OPSET} and could not be "
                            f"upgraded: {first_line(err)}") from None
    return model


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise Q35cError("model imports no default-domain opset")


class InitializerReader:
    """Initializer values by name, external data mapped lazily from the model's directory."""

    def __init__(self, path: Path, graph: onnx.GraphProto):
        self.path = path
        self.base = path.resolve().parent
        self.tensors = {t.name: t for t in graph.initializer}

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def read(self, name: str) -> np.ndarray:
        tensor = self.tensors[name]
        try:
            if tensor.data_location == TensorProto.EXTERNAL:
                return self._external(tensor)
            return numpy_helper.to_array(tensor)
        except Q35cError:
            raise
        except Exception as err:
            raise Q35cError(f"{self.path}: initializer '{name}' is corrupt: "
                            f"{first_line(err)}") from None

    def _external(self, tensor: TensorProto) -> np.ndarray:
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        target = (self.base / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(self.base):
            raise Q35cError(f"{self.path}: initializer '{tensor.name}' has external data at "
                            f"'{location}', outside the model's directory")
        if not target.is_file():
            raise Q35cError(f"{self.path}: initializer '{tensor.name}': external data file "
                            f"'{location}' not found")
        shape = tuple(tensor.dims)
        offset = int(info.get("offset", 0))
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        count = int(np.prod(shape, dtype=np.int64))
        plain = dtype.kind in "fiub" and tensor.data_type not in (
            TensorProto.INT4, TensorProto.UINT4, TensorProto.BFLOAT16)
        length = int(info.get("length", count * dtype.itemsize if plain else 0))
        if offset + length > target.stat().st_size:
            raise Q35cError(f"{self.path}: initializer '{tensor.name}': external data in "
                            f"'{location}' is truncated")
        raw = np.memmap(target, dtype=np.uint8, mode="r", offset=offset, shape=(length,))
        if plain:
            if length != count * dtype.itemsize:
                raise Q35cError(f"{self.path}: initializer '{tensor.name}': external data "
                                f"length {length} does not match its shape {list(shape)}")
            return raw.view(dtype).reshape(shape)
        inline = TensorProto()
        inline.CopyFrom(tensor)
        del inline.external_data[:]
        inline.data_location = TensorProto.DEFAULT
        inline.raw_data = raw.tobytes()
        return numpy_helper.to_array(inline)


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


def bind_input_shapes(path: Path, model: onnx.ModelProto,
                      shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Static shapes of the graph inputs, dynamic dims taken from `--shape NAME=d1,d2,...`."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    unknown = sorted(set(shapes) - {i.name for i in inputs})
    if unknown:
        raise Q35cError(f"{path}: --shape names unknown input(s) {', '.join(unknown)}; the "
                        f"model's inputs are {', '.join(i.name for i in inputs)}")
    bound: dict[str, tuple[int, ...]] = {}
    unbound: list[str] = []
    for info in inputs:
        declared = value_shape(info)
        if info.name in shapes:
            given = shapes[info.name]
            if len(given) != len(declared) or any(
                    isinstance(d, int) and d != g for d, g in zip(declared, given)):
                raise Q35cError(f"{path}: --shape {info.name}={','.join(map(str, given))} "
                                f"does not fit the declared shape {declared}")
            bound[info.name] = tuple(given)
        elif all(isinstance(d, int) for d in declared):
            bound[info.name] = tuple(declared)  # type: ignore[arg-type]
        else:
            unbound.append(f"{info.name}{declared}".replace("'", ""))
    if unbound:
        example = " ".join(f"--shape {u.split('[')[0]}=..." for u in unbound)
        raise Q35cError(f"{path}: dynamic input dimensions need values: {'; '.join(unbound)} "
                        f"(bind them with {example})")
    return bound
