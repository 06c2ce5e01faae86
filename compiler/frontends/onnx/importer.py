"""The ONNX importer: walk the graph once, fold what is known, emit IR for the rest.

Every ONNX value is either known at import time (initializers, Constant nodes, and the
results of nodes whose inputs are all known: shape arithmetic, masks, rotary tables, and
pre-quantized weights run through their DequantizeLinear) or computed at run time (an
`SSAValue`). Known values are folded with onnx's reference implementation, so folding
follows the ONNX specification exactly; run-time nodes go through the converters in
ops.py. Known values become IR constants only where a run-time op uses them, large ones
through the weight store (`quant3p5.weight`) under their ONNX name. A large initializer in
external data (or its folded 2-D Transpose) that reaches the IR unchanged is stored as a
`FileWeight`, a file range read when used, so import holds no weight data.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import NodeProto, TensorProto, numpy_helper
from onnx.reference import ReferenceEvaluator
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    ModuleOp,
    StringAttr,
    TensorType,
)
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.utils.exceptions import VerifyException

from q35c.compiler.diagnostics import Q35cError, first_line
from q35c.compiler.frontends import DEFAULT_MAX_TENSOR_BYTES
from q35c.compiler.frontends.onnx.builder import (
    INLINE_LIMIT,
    TensorBuilder,
    ir_array,
    is_float,
    mlir_element,
    shape_of,
)
from q35c.compiler.frontends.onnx.generic import (
    convert_generic,
    generic_ops,
    needs_generic,
    outer_names,
)
from q35c.compiler.frontends.onnx.model import (
    InitializerReader,
    bind_input_shapes,
    value_shape,
)
from q35c.compiler.frontends.onnx.names import readable_names
from q35c.compiler.frontends.onnx.ops import CONVERTERS, FOLD_ONLY, Value
from q35c.compiler.ir_attrs import ONNX_NAME_ATTR, ONNX_NODE_ATTR
from q35c.compiler.tensors import exact_element
from q35c.compiler.verification import VerifiedIR, verify_op, verify_reason
from q35c.compiler.weights import FileWeight, WeightStore
from q35c.dialects import q35nn, quant3p5
from q35c.semantics.onnx_node import REFERENCE_FIXES

NUMPY_FOLDERS: dict[str, Callable[[OnnxImporter, NodeProto, list[Value]], list[Value]]] = {}
"""op key -> a numpy folder used instead of onnx's reference evaluator when all inputs are
known. quantized.py registers DequantizeLinear (exact for opsets 13+, and it names the
dequantized weight after its quantized initializer) and Transpose (keeps that name)."""


def _op_key(node: NodeProto) -> str:
    """The key of `node` in CONVERTERS / FOLD_ONLY: `OpType`, or `domain.OpType`."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def supported(key: str) -> bool:
    """Whether q35c can import a node of op key `key`: convert it (a dedicated converter or
    the generic `q35nn.onnx_node`), fold it (FOLD_ONLY, only ever with known inputs) or
    inline it (`If`, on a known condition)."""
    return key in CONVERTERS or key in FOLD_ONLY or key in generic_ops() or key == "If"


def unsupported_ops(graph: onnx.GraphProto,
                    found: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """op type -> node names, for every node q35c cannot convert or fold (the branches of
    an `If` included)."""
    found = {} if found is None else found
    for node in graph.node:
        key = _op_key(node)
        if not supported(key):
            found.setdefault(key, []).append(node.name or f"<unnamed {node.op_type}>")
        elif key == "If":
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    unsupported_ops(attribute.g, found)
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
                 store: WeightStore, shape_only: bool = False,
                 max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
                 given_shapes: dict[str, tuple[int, ...]] | None = None):
        self.path = path
        self.shape_only = shape_only
        """Large initializers become shape-only weights: their data is never read."""
        self.max_tensor_bytes = max_tensor_bytes
        """The largest tensor folding may create (unless no larger than an input), and the
        largest static shape of an input or intermediate value (`--max-tensor-bytes`)."""
        self.model = model
        self.graph = model.graph
        self.opsets = {e.domain or "": e.version for e in model.opset_import}
        self.reader = InitializerReader(path, self.graph)
        self.store = store
        self.verified = VerifiedIR()
        """The ops verified as their node was converted (load_onnx verifies the rest)."""
        found = unsupported_ops(self.graph)  # before --shape: binding cannot help these
        if found:
            raise Q35cError(unsupported_message(path, found))
        self.input_shapes = bind_input_shapes(path, model, shapes, given_shapes or {})
        self.env: dict[str, Value] = {}
        self.materialized: dict[str, SSAValue] = {}
        self.used_names = _used_names(self.graph)
        self.declared_types = {info.name: info.type for info in (
            *self.graph.value_info, *self.graph.output)}
        """The types the model declares for its values (shapes may be symbolic)."""
        """The values some node or the graph's outputs use."""
        self.exact_materialized: dict[str, SSAValue] = {}
        """Like `materialized`, for arrays materialized with their own dtype (`exact_ssa`)."""
        self.array_names: dict[int, str] = {}
        """id() of each known array in `env` -> its ONNX value name."""
        self.tb: TensorBuilder
        self.block: Block
        self.current: NodeProto | None = None
        self.prequantized: dict[str, str] = {}
        """Name of each weight dequantized from a pre-quantized form -> that form."""
        self.in_file: dict[int, tuple[np.ndarray, FileWeight]] = {}
        """id() of a known array whose data is an external-data file range (a mapped
        initializer, or a folded transpose of one) -> (the array, kept alive, and the range)."""
        self.readable = readable_names(self.graph)
        """ONNX value name -> the readable name its weight is stored under (names.py)."""

    # -- helpers for converters ------------------------------------------------------------
    def error(self, node: NodeProto, message: str) -> Q35cError:
        return Q35cError(f"{self.path}: node '{node.name or node.op_type}' ({node.op_type}): "
                         f"{message}")

    def attr(self, node: NodeProto, name: str, default):
        """Attribute `name` of `node`, which must have the type of `default` (ints for a
        list); a mistyped attribute is an error naming the node."""
        for attribute in node.attribute:
            if attribute.name == name:
                value = onnx.helper.get_attribute_value(attribute)
                value = value.decode() if isinstance(value, bytes) else value
                return _typed_attr(self, node, attribute, value, default)
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
            held = self.in_file.get(id(value))
            key = self.store_key(name)
            if held is not None and held[0] is value and value.size > INLINE_LIMIT:
                self.materialized[name] = self.tb.file_constant(held[1], key)
            else:
                self.materialized[name] = self.tb.constant(np.asarray(value), key)
            self.mark_onnx_name(self.materialized[name], name)
        return self.materialized[name]

    def exact_ssa(self, value: np.ndarray) -> SSAValue:
        """A run-time value for a known array, of the array's own element type (`ssa`
        gives the dedicated converters float32 / int64 / bool)."""
        array = np.asarray(value)
        if ir_array(np.zeros(0, array.dtype)).dtype == array.dtype:
            return self.ssa(value)
        name = self.array_names.get(id(value))
        if name is None:
            return self.tb.constant(array, exact=True)
        if name not in self.exact_materialized:
            self.exact_materialized[name] = self.tb.constant(array, self.store_key(name),
                                                             exact=True)
            self.mark_onnx_name(self.exact_materialized[name], name)
        return self.exact_materialized[name]

    def float_ssa(self, node: NodeProto, value: Value) -> SSAValue:
        result = self.ssa(value)
        if not is_float(result):
            raise self.error(node, "expects a float tensor, got an integer one")
        return result

    def fold_transposed(self, name: str, value: np.ndarray) -> np.ndarray:
        """`value.T` for a known Gemm weight, stored as [K, N] under `<name>.T`."""
        name = self.array_names.get(id(value), name)
        if name in self.prequantized:
            self.prequantized[f"{name}.T"] = self.prequantized[name]
        held = self.in_file.get(id(value))
        if held is not None and held[0] is value:  # stays a (transposed) file range
            transposed = value.T
            self.in_file[id(transposed)] = (transposed, held[1].transposed(order="C"))
        else:
            transposed = np.ascontiguousarray(np.asarray(value).T)
        self.array_names[id(transposed)] = f"{name}.T"
        self.env[f"{name}.T"] = transposed  # keeps the array (and so its id) alive
        return transposed

    def store_key(self, name: str) -> str:
        """The name value `name` is stored under: its readable name (names.py), also for a
        folded `<name>.T`, else `name`."""
        if name in self.readable:
            return self.readable[name]
        base, dot_t, _ = name.rpartition(".T")
        if dot_t and not _ and base in self.readable:
            return f"{self.readable[base]}.T"
        return name

    def mark_onnx_name(self, value: SSAValue, name: str) -> None:
        """Keep the ONNX name of a weight stored under another name (`q35c.onnx_name`)."""
        owner = value.owner
        if isinstance(owner, quant3p5.WeightOp) and owner.weight_name.data != name:
            owner.attributes[ONNX_NAME_ATTR] = StringAttr(name)

    # -- values ----------------------------------------------------------------------------
    def lookup(self, name: str) -> Value:
        if not name:
            return None
        if name in self.env:
            return self.env[name]
        if name in self.reader:
            if self.shape_only and (weight := self._shape_only_weight(name)) is not None:
                self.env[name] = weight
                return weight
            array = self.reader.read(name)
            self.env[name] = array
            self.array_names[id(array)] = name
            if (weight := self.reader.file_weight(name)) is not None:
                self.in_file[id(array)] = (array, weight)
            return array
        node = self.current
        where = f"node '{node.name or node.op_type}' ({node.op_type})" if node else "the graph"
        raise Q35cError(f"{self.path}: {where} uses '{name}', which no node, input or "
                        "initializer defines")

    def _shape_only_weight(self, name: str) -> SSAValue | None:
        """`--shape-only`: a large initializer as a `quant3p5.weight` whose store entry is a
        `ShapeOnlyWeight` (never read); small ones (shape constants) return None and are read."""
        from q35c.compiler.frontends.onnx.builder import INLINE_LIMIT
        from q35c.compiler.frontends.onnx.model import type_name
        from q35c.compiler.weights import ShapeOnlyWeight
        from q35c.dialects import quant3p5

        tensor = self.reader.tensors[name]
        shape = tuple(int(d) for d in tensor.dims)
        if any(d <= 0 for d in shape) or int(np.prod(shape, dtype=np.int64)) <= INLINE_LIMIT:
            return None
        try:
            dtype = ir_array(np.zeros(0, onnx.helper.tensor_dtype_to_np_dtype(
                tensor.data_type))).dtype
        except (KeyError, ValueError, TypeError):
            raise self.reader.fail(name, f"element type {type_name(tensor.data_type)} is not "
                                         "supported") from None
        key = self.store.fresh_name(self.store_key(name))
        self.store[key] = ShapeOnlyWeight(shape, dtype.name)
        op = self.tb.insert(quant3p5.WeightOp(key, TensorType(mlir_element(dtype), list(shape))))
        self.mark_onnx_name(op.result, name)
        return op.result

    def shape_only_transposed(self, value: SSAValue, perm: list[int], name: str
                              ) -> SSAValue | None:
        """`--shape-only`: the Transpose of a shape-only weight as a shape-only weight of the
        permuted shape named `name`, as a real import folds it (tied embeddings: the LM
        head's transposed table), so that later passes see the same weights; else None."""
        from q35c.compiler.weights import ShapeOnlyWeight
        from q35c.dialects import quant3p5

        owner = value.owner
        if not self.shape_only or not isinstance(owner, quant3p5.WeightOp):
            return None
        spec = self.store.spec(owner.weight_name.data)
        if spec is None or spec.layout is not None:
            return None
        shape = tuple(spec.shape[p] for p in perm)
        key = self.store.fresh_name(self.store_key(name))
        self.store[key] = ShapeOnlyWeight(shape, spec.dtype)
        element = value.type.get_element_type()
        result = self.tb.insert(quant3p5.WeightOp(key, TensorType(element, list(shape)))).result
        self.mark_onnx_name(result, name)
        return result

    def bind(self, node: NodeProto, outputs: list[Value]) -> None:
        for name, value in zip(node.output, outputs):
            if name:
                self.env[name] = value
                if isinstance(value, np.ndarray):
                    self.array_names.setdefault(id(value), name)

    # -- size limits -----------------------------------------------------------------------
    def check_static_size(self, node: NodeProto | None, what: str, shape, itemsize: int) -> None:
        """A value of static `shape` must fit --max-tensor-bytes: later stages (the
        interpreter, verify-quant-error, the C target) hold it whole."""
        elements = _elements(shape)
        if elements * itemsize > self.max_tensor_bytes:
            where = f"node '{node.name or node.op_type}' ({node.op_type}): " if node else ""
            raise Q35cError(f"{self.path}: {where}{what} of shape {list(shape)} has "
                            f"{elements * itemsize} bytes, over --max-tensor-bytes "
                            f"{self.max_tensor_bytes} (raise it for a trusted model)")

    def check_fold_size(self, node: NodeProto, inputs: list[Value],
                        outputs: list[tuple[str, tuple | None, int]]) -> None:
        """Folding may create an output of (name, shape, itemsize) larger than
        --max-tensor-bytes only if it has no more elements than its largest input (a
        transposed, cast or dequantized weight): so a tiny model cannot make q35c allocate
        without bound, and any folded tensor is bounded by the limit or by the model's data."""
        largest = max((v.size for v in inputs if isinstance(v, np.ndarray)), default=0)
        for name, shape, itemsize in outputs:
            if shape is None:
                continue
            elements = _elements(shape)
            if elements * itemsize > self.max_tensor_bytes and elements > largest:
                raise self.error(node, f"folding would create output '{name}' of shape "
                                       f"{list(shape)} ({elements * itemsize} bytes), over "
                                       f"--max-tensor-bytes {self.max_tensor_bytes} (raise "
                                       "it for a trusted model)")

    def inferred_outputs(self, node: NodeProto, inputs: list[Value]
                         ) -> list[tuple[str, tuple | None, int]]:
        """(name, shape or None, itemsize) of each output of `node`, from ONNX shape
        inference with its small known inputs as constants: computed before folding, so a
        ConstantOfShape, Expand, Tile, Range, Resize, Pad, OneHot, ... that would allocate
        too much is refused without allocating."""
        values, constants, seen = [], [], set()
        for name, value in zip(node.input, inputs):
            if not name or not isinstance(value, np.ndarray) or name in seen:
                continue
            seen.add(name)
            if value.size <= INFERENCE_DATA_LIMIT and value.dtype != object:
                constants.append(onnx.numpy_helper.from_array(value, name))
            else:
                values.append(onnx.helper.make_tensor_value_info(
                    name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), value.shape))
        outputs = [onnx.helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None)
                   for o in node.output if o]
        graph = onnx.helper.make_graph([node], "fold", values, outputs, initializer=constants)
        model = onnx.helper.make_model(graph, opset_imports=[
            onnx.helper.make_opsetid(domain, version) for domain, version in self.opsets.items()])
        try:
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True).graph.output
        except Exception:  # inference cannot tell: the fold itself checks (or reports)
            return []
        return [(info.name, _inferred_shape(info), _itemsize(info)) for info in inferred]

    # -- the walk --------------------------------------------------------------------------
    def fold(self, node: NodeProto, inputs: list[Value]) -> list[Value]:
        feeds = {n: np.asarray(v) for n, v in zip(node.input, inputs) if n}
        # what the node's bodies (Loop, Scan) read from this graph: known, since it folds
        feeds.update((n, np.asarray(self.lookup(n))) for n in outer_names(node))
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # folding follows ONNX, overflow and all
                evaluator = ReferenceEvaluator(node, opsets=self.opsets, new_ops=REFERENCE_FIXES)
                results = evaluator.run(None, feeds)
        except Exception as err:
            raise self.error(node, f"cannot evaluate at import time: {first_line(err)}") from None
        results = [np.asarray(r) for r in results]
        held = self.in_file.get(id(inputs[0])) if inputs else None
        if (node.op_type == "Transpose" and held is not None and held[0] is inputs[0]
                and inputs[0].ndim == 2 and self.attr(node, "perm", [1, 0]) == [1, 0]):
            # A transposed initializer (tied embeddings): stored as a transposed file range.
            self.in_file[id(results[0])] = (results[0], held[1].transposed())
        return results

    def inline_if(self, node: NodeProto, inputs: list[Value]) -> list[Value]:
        """`If` on a known condition (exporters' shape logic): the taken branch's nodes are
        imported in place, reading the enclosing graph's values; its outputs are the If's."""
        cond = inputs[0]
        if not isinstance(cond, np.ndarray):  # both branches run by the reference
            return convert_generic(self, node, inputs)
        if cond.size != 1:
            raise self.error(node, f"the condition has {cond.size} elements, not 1")
        name = "then_branch" if bool(cond.ravel()[0]) else "else_branch"
        branch = next((a.g for a in node.attribute if a.name == name), None)
        if branch is None:
            raise self.error(node, f"has no {name}")
        constants = {t.name: numpy_helper.to_array(t) for t in branch.initializer}
        outputs = self.expand(node, list(branch.node), constants,
                              [info.name for info in branch.output])
        if len(outputs) != len(node.output):
            raise self.error(node, f"its {name} has {len(outputs)} outputs, the node "
                                   f"{len(node.output)}")
        return outputs

    def expand(self, node: NodeProto, nodes: list[NodeProto], constants: dict[str, np.ndarray],
               outputs: list[str | None]) -> list[Value]:
        """Import `nodes` (standard ONNX nodes that together compute `node`: an expansion
        from contrib.py, or an If's taken branch) in place of `node`, with `constants` as
        initializers; return the values of `outputs` (None where the node's output is not
        computed)."""
        self.env.update(constants)
        for inner in nodes:
            self.current = inner
            self.bind(inner, self.convert_node(inner, self.block,
                                               [self.lookup(n) for n in inner.input]))
        self.current = node
        return [self.lookup(name) if name else None for name in outputs]

    def convert(self, node: NodeProto, inputs: list[Value]) -> list[Value]:
        key = _op_key(node)
        if key == "If":
            return self.inline_if(node, inputs)
        known = all(v is None or isinstance(v, np.ndarray) for v in inputs) and all(
            isinstance(self.lookup(name), np.ndarray) for name in outer_names(node))
        folds = known and (key in NUMPY_FOLDERS or (key != "Identity" and key == node.op_type))
        if folds:
            self.check_fold_size(node, inputs, self.inferred_outputs(node, inputs))
            folder = NUMPY_FOLDERS.get(key, OnnxImporter.fold)
            outputs = folder(self, node, inputs)
            self.check_fold_size(node, inputs, [  # what inference could not predict
                (name, value.shape, value.dtype.itemsize) for name, value in
                zip(node.output, outputs) if isinstance(value, np.ndarray)])
            return outputs
        convert = CONVERTERS.get(key)
        if key == node.op_type and key in generic_ops() and (
                convert is None or needs_generic(self, node, inputs)):
            convert = convert_generic
        elif key in FOLD_ONLY:
            raise self.error(node, "is supported only when all its inputs are known at "
                                   "compile time (static shapes and constant operands)")
        try:
            outputs = convert(self, node, inputs)
        except Q35cError:
            raise
        except (ValueError, TypeError, IndexError, AssertionError, ArithmeticError,
                RuntimeError) as err:  # numpy on odd shapes: rank over 32, overflow, ...
            raise self.error(node, first_line(err)) from None
        return outputs

    def argument_types(self) -> list[tuple[str, TensorType]]:
        args = []
        for info in self.graph.input:
            if info.name in self.reader:
                continue
            elem = info.type.tensor_type.elem_type
            dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
            shape = self.input_shapes[info.name]
            if not self.shape_only:
                self.check_static_size(None, f"input '{info.name}'", shape, dtype.itemsize)
            args.append((info.name, TensorType(exact_element(dtype), list(shape))))
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

    def verify_new_ops(self, node: NodeProto, block: Block, last: Operation | None) -> None:
        """Verify the ops that converting `node` appended after `last`, so that what the
        verifier rejects (an axis out of range, a parameter of the wrong shape) names the node."""
        op = last.next_op if last is not None else block.first_op
        while op is not None:
            try:
                _verify_quietly(op)
            except VerifyException as err:
                raise self.error(node, verify_reason(err)) from None
            if not self.shape_only and not isinstance(op, quant3p5.WeightOp):
                for index, result in enumerate(op.results):  # weights are file ranges
                    if isinstance(result.type, TensorType):
                        self.check_static_size(node, f"result {index} of {op.name}",
                                               result.type.get_shape(),
                                               _element_bytes(result.type))
            if op.name in ONNX_NODE_OPS:  # where verification errors and reports point
                op.attributes[ONNX_NODE_ATTR] = StringAttr(node.name or f"<{node.op_type}>")
            self.verified.record(op)
            op = op.next_op

    def convert_node(self, node: NodeProto, block: Block, inputs: list[Value]) -> list[Value]:
        """Convert `node` and verify what it emitted. Where a dedicated converter refuses
        the node (or emits IR that does not verify) and the generic `q35nn.onnx_node` can
        take it, what the converter emitted is rolled back and the node goes generic."""
        last = block.last_op
        try:
            outputs = self.convert(node, inputs)
            missing = [i for i, (name, value) in enumerate(zip(node.output, outputs))
                       if value is None and name in self.used_names]
            if missing:  # e.g. LayerNormalization's Mean and InvStdDev, where used
                raise self.error(node, f"output {missing[0]} is not supported")
            self.verify_new_ops(node, block, last)
            return outputs
        except Q35cError as err:
            key = _op_key(node)
            if key != node.op_type or key not in generic_ops() or not any(
                    isinstance(v, SSAValue) for v in inputs) or self._emitted_generic(
                    block, last):
                raise
            self.rollback(block, last)
            try:
                outputs = convert_generic(self, node, inputs)
                self.verify_new_ops(node, block, last)
            except (Q35cError, ValueError):
                self.rollback(block, last)
                raise err from None
            return outputs

    @staticmethod
    def _emitted_generic(block: Block, last: Operation | None) -> bool:
        op = last.next_op if last is not None else block.first_op
        while op is not None:
            if isinstance(op, q35nn.OnnxNodeOp):
                return True
            op = op.next_op
        return False

    def rollback(self, block: Block, last: Operation | None) -> None:
        """Erase the ops appended after `last`, and forget the constants among them."""
        erased = set()
        while block.last_op is not last:
            op = block.last_op
            erased.update(op.results)
            if isinstance(op, quant3p5.WeightOp) and op.weight_name.data in self.store:
                self.store.discard(op.weight_name.data)
            self.verified.forget(op)
            block.erase_op(op)
        for cache in (self.materialized, self.exact_materialized):
            for name in [n for n, v in cache.items() if v in erased]:
                del cache[name]

    def run(self) -> ModuleOp:
        args = self.argument_types()
        block = Block(arg_types=[t for _, t in args])
        self.block = block
        self.tb = TensorBuilder(block, self.store)
        for (name, _), arg in zip(args, block.args):
            self.env[name] = arg
            arg.name_hint = _hint(name)
        with np.errstate(all="ignore"):  # converters and folders follow ONNX, inf and all
            for node in self.graph.node:
                self.current = node
                self.bind(node, self.convert_node(node, block,
                                                  [self.lookup(n) for n in node.input]))
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


def _used_names(graph: onnx.GraphProto) -> set[str]:
    """The values that some node of `graph` or of its subgraphs, or an output, uses."""
    used = {info.name for info in graph.output}
    for node in graph.node:
        used.update(name for name in node.input if name)
        for attribute in node.attribute:
            for sub in [attribute.g, *attribute.graphs]:
                used |= _used_names(sub)
    return used


def _verify_quietly(op: Operation) -> None:
    """`op.verify()` without its diagnostic: xDSL's `verify` prints the whole enclosing block
    into every error (as a note), which made each refused dedicated conversion cost time in
    proportion to the graph imported so far. This checks the same (`verify_op` on each op),
    nested ops first."""
    for region in op.regions:
        for block in region.blocks:
            for inner in block.ops:
                _verify_quietly(inner)
    verify_op(op)


INFERENCE_DATA_LIMIT = 4096
"""Known inputs up to this many elements go to shape inference as data (shapes, repeats,
pads, scales); larger ones as shapes only."""


def _elements(shape) -> int:
    return math.prod(int(d) for d in shape)


def _inferred_shape(info: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    tensor = info.type.tensor_type
    if not tensor.HasField("shape") or not all(d.HasField("dim_value")
                                                for d in tensor.shape.dim):
        return None
    return tuple(d.dim_value for d in tensor.shape.dim)


def _itemsize(info: onnx.ValueInfoProto) -> int:
    """Bytes per element of an inferred output (8 when the type is unknown)."""
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type).itemsize
    except (KeyError, ValueError, TypeError):
        return 8


def _element_bytes(ttype: TensorType) -> int:
    """Bytes per element (`size` of xDSL's fixed-width types; 8 for index and the rest)."""
    size = getattr(ttype.get_element_type(), "size", None)
    return size if isinstance(size, int) else 8


def _names(names: list[str]) -> ArrayAttr:
    return ArrayAttr([DictionaryAttr({"q35c.name": StringAttr(n)}) for n in names])


ONNX_NODE_OPS = ("linalg.matmul", "q35nn.batch_matmul")


def _hint(name: str) -> str | None:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name).strip("_")
    # xDSL wants an ASCII letter first ('º' and 'é' are alphanumeric too)
    return cleaned if cleaned and cleaned[0].isascii() and not cleaned[0].isdigit() else None


def op_histogram(graph: onnx.GraphProto) -> Counter[str]:
    return Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                   for n in graph.node)


def _typed_attr(imp: OnnxImporter, node: NodeProto, attribute: onnx.AttributeProto, value,
                default):
    if isinstance(default, bool | int):
        ok, kind = isinstance(value, int), "an int"
    elif isinstance(default, float):
        ok, kind, value = isinstance(value, int | float), "a float", (
            float(value) if isinstance(value, int | float) else value)
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    elif isinstance(default, list):
        ok, kind = isinstance(value, list) and all(isinstance(v, int) for v in value), "ints"
    else:
        ok, kind = True, ""
    if not ok:
        got = onnx.AttributeProto.AttributeType.Name(attribute.type)
        raise imp.error(node, f"attribute '{attribute.name}' must be {kind}, got {got}")
    return value
