"""The weight store: named tensors that IR refers to with `quant3p5.weight "name"`.

Weights never live in the IR text. A store holds float/integer arrays, Q3P5 tensors and
legacy pair tensors by name, and serializes to one `.q35w` file:

    b"Q35W" | u32 version | u64 header length | JSON header | 64-byte aligned blobs

The JSON header lists, per entry, its kind and the (dtype, shape, offset) of each blob.
Reading maps the file (`numpy.memmap`), so a loaded store costs address space, not memory:
memory follows the tensor being used, not the model. Writing is deterministic: entries are
written in name order and the header is canonical JSON.

A shape-only entry (`ShapeOnlyWeight`, from `--shape-only`) has a shape and type but no
data: it is written as kind "shape-only" with its spec and no blobs, and reading it raises.

A file entry (`FileWeight`, from ONNX external data) names a range of a file: the store
holds no data for it, each read returns a fresh array read from the file (`np.fromfile`),
and it is dropped when the reader is done with it. So a store filled from a large model
holds no float weights at all; reading, quantizing and writing touch one tensor at a time.
`save` streams too: the header is computed from shapes, then entries are read (or
packed) and written one at a time.

A module names its store file in the `quant3p5.weights` module attribute; a store built
in memory (by a frontend or a pass) is attached to the module object for the process.
"""

from __future__ import annotations

import json
import os
import struct
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp, StringAttr

from q35c.compiler.files import InputFileError, confined_file, open_input
from q35c.compiler.quant import LegacyPairTensor, Q3P5Tensor

MAGIC = b"Q35W"
VERSION = 1
ALIGN = 64
MODULE_ATTR = "quant3p5.weights"
SHAPE_ONLY_KIND = "shape-only"
"""Header kind of an entry written from a `ShapeOnlyWeight`: a spec and no blobs."""


class WeightStoreError(ValueError):
    """A store file is missing, corrupt, or lacks a tensor the IR names."""


@dataclass(frozen=True)
class ShapeOnlyWeight:
    """A weight whose data was never read (`--shape-only`): its shape and type only.

    `dtype` is a numpy dtype string for float/integer tensors; `layout` ("q3p5", "pair43")
    and `group` mark a packed weight of logical shape [K, N]. Reading the data of such an
    entry from a store raises `WeightStoreError`; `WeightStore.spec` returns it.
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str | None = None
    group: int | None = None

    def to_json(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype, "layout": self.layout,
                "group": self.group}


@dataclass(frozen=True)
class FileWeight:
    """A float/integer weight whose data lies in a file (ONNX external data), read when used.

    `dtype` is the stored (little-endian) numpy dtype at byte `offset` of `path`, `shape`
    the stored shape; a read converts to `as_dtype` (the dtype the IR uses) and, with
    `transpose`, returns the 2-D transpose (a folded Transpose of an initializer): a
    Fortran-ordered view of the data read, or with `order` "C" a C-contiguous copy (the
    layouts the importer's in-memory arrays had, so that quantization sums in the same
    order). The path was checked by the frontend (inside the model's directory).
    """

    path: Path
    offset: int
    dtype: str
    shape: tuple[int, ...]
    as_dtype: str
    transpose: bool = False
    order: str = "K"
    """"C": the result is made C-contiguous; "K": it keeps the layout of the data read."""

    @property
    def result_shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.shape)) if self.transpose else self.shape

    def transposed(self, order: str = "K") -> FileWeight:
        assert len(self.shape) == 2
        return FileWeight(self.path, self.offset, self.dtype, self.shape, self.as_dtype,
                          not self.transpose, order)

    def load(self) -> np.ndarray:
        """A fresh array with the data (anonymous memory, freed when dropped)."""
        dtype = np.dtype(self.dtype)
        count = int(np.prod(self.shape, dtype=np.int64))
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = np.fromfile(f, dtype=dtype, count=count)
        except OSError as err:
            raise WeightStoreError(f"{self.path}: cannot read weight data: {err}") from None
        if data.size != count:
            raise WeightStoreError(f"{self.path}: weight data at byte {self.offset} is "
                                   f"truncated ({data.size} of {count} elements)")
        data = data.reshape(self.shape).astype(self.as_dtype, copy=False)
        data = data.T if self.transpose else data
        return np.ascontiguousarray(data) if self.order == "C" else data


Weight = np.ndarray | Q3P5Tensor | LegacyPairTensor


@dataclass(frozen=True)
class _Blob:
    dtype: str
    shape: tuple[int, ...]
    offset: int


def _entry_arrays(value: Weight) -> tuple[str, dict[str, np.ndarray]]:
    if isinstance(value, Q3P5Tensor):
        return "q3p5", {"bytes": np.frombuffer(value.to_bytes(), dtype=np.uint8)}
    if isinstance(value, LegacyPairTensor):
        return "pair43", {"packed": value.packed, "scale": value.scale, "offset": value.offset,
                          "k": np.array([value.shape[0]], dtype=np.int64)}
    return "tensor", {"data": np.asarray(value)}


def _entry_layout(value: Weight | FileWeight) -> tuple[str, list[tuple[str, np.dtype,
                                                                          tuple[int, ...]]]]:
    """The kind and (key, dtype, shape) of each blob of `value`, without reading its data."""
    if isinstance(value, FileWeight):
        return "tensor", [("data", np.dtype(value.as_dtype), value.result_shape)]
    if isinstance(value, Q3P5Tensor):
        return "q3p5", [("bytes", np.dtype(np.uint8), (value.nbytes(),))]
    kind, arrays = _entry_arrays(value)  # written C-contiguous, a 0-d array as shape [1]
    return kind, [(key, a.dtype, a.shape or (1,)) for key, a in arrays.items()]


def _entry_value(kind: str, arrays: dict[str, np.ndarray]) -> Weight:
    if kind == "q3p5":
        return Q3P5Tensor.from_bytes(arrays["bytes"].tobytes())
    if kind == "pair43":
        packed = np.asarray(arrays["packed"])
        return LegacyPairTensor(shape=(int(arrays["k"][0]), packed.shape[1]), packed=packed,
                                scale=np.asarray(arrays["scale"]),
                                offset=np.asarray(arrays["offset"]))
    return arrays["data"]


BLOB_KEYS = {"tensor": {"data"}, "q3p5": {"bytes"},
             "pair43": {"packed", "scale", "offset", "k"}, SHAPE_ONLY_KIND: set()}
"""The blobs each entry kind has in a store file."""
BLOB_DTYPE_KINDS = "biuf"
"""numpy dtype kinds a blob may have (no objects, strings or structured records)."""


def _dims(value) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(d) is int and d >= 0 for d in value):
        raise ValueError(f"shape {value!r} is not a list of non-negative integers")
    return tuple(value)


def _checked_entry(name: str, entry, data_start: int, size: int
                   ) -> tuple[str, dict[str, _Blob]]:
    """The (kind, blobs) of header entry `name`, each blob checked to lie in the file."""
    if not isinstance(entry, dict) or entry.get("kind") not in BLOB_KEYS:
        raise ValueError(f"entry '{name}' has no known kind")
    kind = entry["kind"]
    if not isinstance(entry["blobs"], dict) or set(entry["blobs"]) != BLOB_KEYS[kind]:
        raise ValueError(f"entry '{name}' ({kind}) must have blobs "
                         f"{sorted(BLOB_KEYS[kind])}")
    blobs = {}
    for key, b in entry["blobs"].items():
        dtype = np.dtype(b["dtype"])
        if dtype.kind not in BLOB_DTYPE_KINDS or dtype.fields is not None:
            raise ValueError(f"entry '{name}' blob '{key}' has dtype {b['dtype']!r}")
        shape, offset = _dims(b["shape"]), b["offset"]
        end = (offset + dtype.itemsize * int(np.prod(shape, dtype=object))
               if type(offset) is int else -1)
        if not data_start <= offset <= end <= size:
            raise ValueError(f"entry '{name}' blob '{key}' lies outside the file's data")
        blobs[key] = _Blob(dtype.str, shape, offset)
    if kind == "q3p5" and len(blobs["bytes"].shape) != 1:
        raise ValueError(f"entry '{name}' q3p5 bytes must be one-dimensional")
    return kind, blobs


class WeightStore:
    """A name -> weight mapping, loaded lazily from a `.q35w` file or filled in memory."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self._values: dict[str, Weight] = {}
        self._index: dict[str, tuple[str, dict[str, _Blob]]] = {}
        self._map: np.memmap | None = None
        self._specs: dict[str, ShapeOnlyWeight] = {}
        """Shape-only entries (in memory or from the file): never readable as data."""
        self._files: dict[str, FileWeight] = {}
        """Entries whose data stays in a file: read afresh on each access, never held."""
        if path is not None:
            self._open(path)

    # -- reading ---------------------------------------------------------------------------
    def _open(self, path: Path) -> None:
        """Map `path` and check its header: every entry's kind and blobs, and every blob's
        dtype, shape and byte range inside the file, so a corrupt store fails here, naming
        the file and the entry, not in the first pass that reads it."""
        with open_input(path, text=False) as f:
            try:
                raw = np.memmap(f, dtype=np.uint8, mode="r")
            except (OSError, ValueError) as err:
                raise WeightStoreError(f"{path}: cannot read weight store: {err}") from None
        if raw.size < 16 or bytes(raw[:4]) != MAGIC:
            raise WeightStoreError(f"{path}: not a q35c weight store (bad magic)")
        version, header_len = struct.unpack("<IQ", bytes(raw[4:16]))
        if version != VERSION:
            raise WeightStoreError(f"{path}: unsupported weight store version {version}")
        if header_len > raw.size - 16:
            raise WeightStoreError(f"{path}: corrupt weight store header: its length "
                                   f"{header_len} runs past the end of the file")
        try:
            header = json.loads(bytes(raw[16:16 + header_len]))
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
            for name, entry in header.items():
                self._index[name] = _checked_entry(name, entry, 16 + header_len, raw.size)
                if entry["kind"] == SHAPE_ONLY_KIND:
                    spec = entry["spec"]
                    self._specs[name] = ShapeOnlyWeight(
                        _dims(spec["shape"]), str(spec["dtype"]),
                        spec.get("layout"), spec.get("group"))
        except (ValueError, KeyError, TypeError, RecursionError) as err:
            raise WeightStoreError(f"{path}: corrupt weight store header: {err}") from None
        self._map = raw

    def check_types(self, module: ModuleOp) -> None:
        """Check every `quant3p5.weight` of `module` against this store: the entry exists
        and its kind, shape and dtype (or packed size) fit the op's result type."""
        from q35c.compiler.tensors import numpy_dtype
        from q35c.dialects.quant3p5 import PackedWeightType, WeightOp

        for op in module.walk():
            if not isinstance(op, WeightOp):
                continue
            name, type_ = op.weight_name.data, op.result.type
            if name not in self:
                raise WeightStoreError(f"weight '{name}' not found{self._where()}")
            if name in self._specs or name not in self._index:
                continue  # shape-only, or filled in memory by this process
            kind, blobs = self._index[name]

            def mismatch(what: str, *, name=name, type_=type_) -> WeightStoreError:
                return WeightStoreError(f"{self.path}: tensor '{name}': {what} does not fit "
                                        f"its IR type {type_}")

            if isinstance(type_, PackedWeightType):
                if kind != type_.layout.data:
                    raise mismatch(f"kind '{kind}'")
                if kind == "q3p5":
                    self._check_q3p5_blob(blobs["bytes"], type_, mismatch)
                if kind == "pair43":
                    k, n = type_.get_shape()
                    if blobs["packed"].shape != (-(-k // 2), n):
                        raise mismatch(f"packed shape {list(blobs['packed'].shape)}")
                continue
            if kind != "tensor":
                raise mismatch(f"kind '{kind}'")
            blob = blobs["data"]
            shape = tuple(type_.get_shape())
            if blob.shape != (shape or (1,)) and blob.shape != shape:
                raise mismatch(f"shape {list(blob.shape)}")
            try:
                expected = numpy_dtype(type_.get_element_type())
            except ValueError:
                continue
            if (np.dtype(blob.dtype).kind == "f") != (expected.kind == "f"):
                raise mismatch(f"dtype {np.dtype(blob.dtype)}")

    def _check_q3p5_blob(self, blob: _Blob, type_, mismatch) -> None:
        """A q3p5 entry's serialization (either format version, docs/format.md) declares
        the IR type's shape and group size, and exactly the blob's length."""
        from q35c.compiler.quant import serialized_size

        assert self._map is not None
        length = blob.shape[0]
        try:
            shape, group, size = serialized_size(
                bytes(self._map[blob.offset:blob.offset + min(length, 64)]))
        except ValueError:
            raise mismatch("a malformed Q3P5 header") from None
        if shape != tuple(type_.get_shape()) or group != type_.group:
            raise mismatch(f"shape {list(shape)} with group size {group}")
        if size != length:
            raise mismatch(f"{length} bytes")

    def _where(self) -> str:
        return f" in {self.path}" if self.path else ""

    def _load(self, name: str) -> Weight:
        kind, blobs = self._index[name]
        if kind == SHAPE_ONLY_KIND:
            raise self._shape_only_error(name)
        assert self._map is not None
        arrays = {}
        for key, blob in blobs.items():
            dtype = np.dtype(blob.dtype)
            count = int(np.prod(blob.shape, dtype=np.int64))
            end = blob.offset + count * dtype.itemsize
            if end > self._map.size:
                raise WeightStoreError(f"{self.path}: tensor '{name}' is truncated")
            arrays[key] = self._map[blob.offset:end].view(dtype).reshape(blob.shape)
        try:
            return _entry_value(kind, arrays)
        except ValueError as err:
            raise WeightStoreError(f"{self.path}: tensor '{name}': {err}") from None

    def _shape_only_error(self, name: str) -> WeightStoreError:
        return WeightStoreError(f"weight '{name}' is shape-only (--shape-only): its data was "
                                "never read and cannot be used")

    def spec(self, name: str) -> ShapeOnlyWeight | None:
        """The shape-only description of `name`, or None when `name` holds real data."""
        return self._specs.get(name)

    def __getitem__(self, name: str) -> Weight:
        if name in self._specs:
            raise self._shape_only_error(name)
        if name in self._values:
            return self._values[name]
        if name in self._files:
            return self._files[name].load()
        if name not in self._index:
            raise WeightStoreError(f"weight '{name}' not found{self._where()}")
        return self._load(name)

    def __contains__(self, name: object) -> bool:
        return (name in self._values or name in self._files or name in self._index
                or name in self._specs)

    def names(self) -> list[str]:
        return sorted(set(self._values) | set(self._files) | set(self._index)
                      | set(self._specs))

    def file_weight(self, name: str) -> FileWeight | None:
        """The file range behind `name` when its data is read from a file on each access."""
        return self._files.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    # -- writing ---------------------------------------------------------------------------
    def __setitem__(self, name: str, value: Weight | ShapeOnlyWeight | FileWeight) -> None:
        self._specs.pop(name, None)
        self._values.pop(name, None)
        self._files.pop(name, None)
        if isinstance(value, ShapeOnlyWeight):
            self._specs[name] = value
        elif isinstance(value, FileWeight):
            self._files[name] = value
        else:
            self._values[name] = value

    def discard(self, name: str) -> None:
        """Forget an entry set in memory (`store[name] = ...`); no error when absent."""
        self._specs.pop(name, None)
        self._values.pop(name, None)
        self._files.pop(name, None)

    def fresh_name(self, base: str) -> str:
        """`base`, or `base.1`, `base.2`... whichever is not taken yet."""
        if base not in self:
            return base
        i = 1
        while f"{base}.{i}" in self:
            i += 1
        return f"{base}.{i}"

    def save(self, path: Path, keep: set[str] | None = None) -> None:
        """Write the entries named in `keep` (all if None) to `path`, atomically.

        Streaming: the header comes from shapes alone, then each entry is read (a file
        entry), packed (a Q3P5 tensor) or taken as is, written, and dropped, so writing
        holds one entry's data at a time."""
        names = [n for n in self.names() if keep is None or n in keep]
        header: dict[str, dict] = {}
        offset = 0
        pending: list[tuple[str, list[tuple[str, int]]]] = []
        for name in names:
            if name in self._specs:  # shape-only: described, no data
                header[name] = {"kind": SHAPE_ONLY_KIND, "blobs": {},
                                "spec": self._specs[name].to_json()}
                continue
            value = self._files[name] if name in self._files else self[name]
            kind, layout = _entry_layout(value)
            blobs, places = {}, []
            for key, dtype, shape in layout:
                offset = -(-offset // ALIGN) * ALIGN
                blobs[key] = {"dtype": dtype.str, "shape": list(shape), "offset": offset}
                places.append((key, offset))
                offset += dtype.itemsize * int(np.prod(shape, dtype=np.int64))
            header[name] = {"kind": kind, "blobs": blobs}
            pending.append((name, places))
            del value
        # Offsets are relative to the data start; fix them once the header size is known.
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        start = -(-(16 + len(text) + 32) // ALIGN) * ALIGN
        for entry in header.values():
            for blob in entry["blobs"].values():
                blob["offset"] += start
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        assert 16 + len(text) <= start, "header grew past its reserved space"
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(MAGIC + struct.pack("<IQ", VERSION, len(text)) + text)
            f.write(b"\0" * (start - 16 - len(text)))
            for name, places in pending:
                _, arrays = _entry_arrays(self[name])
                for key, rel_offset in places:
                    array = np.ascontiguousarray(arrays[key])
                    f.write(b"\0" * (start + rel_offset - f.tell()))
                    f.write(memoryview(array.reshape(-1)).cast("B") if array.size else b"")
                arrays = array = None  # drop this entry's data before the next one
        os.replace(tmp, path)


_ATTACHED: weakref.WeakKeyDictionary[ModuleOp, WeightStore] = weakref.WeakKeyDictionary()


def attach_store(module: ModuleOp, store: WeightStore) -> None:
    """Make `store` the weight store of `module` for this process."""
    _ATTACHED[module] = store


def store_of(module: ModuleOp, base_dir: Path | None = None) -> WeightStore:
    """The module's weight store: attached in memory, else the file its attribute names.

    With `base_dir` (the input's folder) that file must be a regular file inside it, like
    ONNX external data (`confined_file`); the store is checked when opened.

    A module without weights gets an empty store, attached so that passes can add to it.
    """
    if module in _ATTACHED:
        return _ATTACHED[module]
    attr = module.attributes.get(MODULE_ATTR)
    if isinstance(attr, StringAttr):
        path = Path(attr.data)
        if base_dir is not None:
            try:
                path = confined_file(base_dir, attr.data)
            except InputFileError as err:
                raise WeightStoreError(f"weights file (module attribute {MODULE_ATTR}) "
                                       f"{err}") from None
        store = WeightStore(path)
    else:
        store = WeightStore()
    _ATTACHED[module] = store
    return store
