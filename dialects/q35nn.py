"""The `q35nn` dialect: graph-level neural-network ops that xDSL's dialects do not model.

Everything else in a q35c graph reuses xDSL: elementwise math is `arith`/`math` on tensors,
2-D matmul/transpose/broadcast/fill are `linalg`, reshape/concat/slice are `tensor`. This
dialect adds only what those lack in xDSL 0.74: batched (broadcasting) matmul, softmax,
layer and RMS normalization, GELU, SiLU and gather, plus the fused forms that fusion passes
produce for hardware targets: SwiGLU and scaled dot-product attention. All ops are pure, on
static-shape float32 tensors (gather indices are integer), and carry plain builtin attributes so
that upstream `mlir-opt` can check dumps with the IRDL export. `onnx_node` is the exception:
one ONNX node of any other op type, on tensors of any element type, whose semantics is
onnx's reference implementation (the generic op for the long tail of ONNX operators).

Semantics (the rounding and order of every op) are defined by the reference interpreter.
"""

from __future__ import annotations

import base64

import numpy as np
from xdsl.dialects.builtin import (
    I64,
    ArrayAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DictionaryAttr,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    TensorType,
    i64,
)
from xdsl.ir import Attribute, Dialect, SSAValue
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    attr_def,
    irdl_op_definition,
    operand_def,
    opt_attr_def,
    opt_operand_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

F32Tensor = TensorType[Float32Type]


def _shape(value: SSAValue) -> tuple[int, ...]:
    assert isinstance(value.type, TensorType)
    return tuple(value.type.get_shape())


def _check_axis(op: IRDLOperation, axis: int, rank: int) -> None:
    if not -rank <= axis < rank:
        raise VerifyException(f"{op.name}: axis {axis} is out of range for rank {rank}")


def _check_same_shape(op: IRDLOperation, *values: SSAValue) -> None:
    shapes = [_shape(v) for v in values]
    if len(set(shapes)) != 1:
        raise VerifyException(f"{op.name}: operand and result shapes differ: {shapes}")


class _UnaryOp(IRDLOperation):
    """An elementwise float op: one operand, one result of the same shape."""

    input = operand_def(F32Tensor)
    result = result_def(F32Tensor)
    traits = traits_def(Pure())

    def __init__(self, input: SSAValue, attributes: dict | None = None):
        super().__init__(operands=[input], result_types=[input.type], attributes=attributes or {})

    def verify_(self) -> None:
        _check_same_shape(self, self.input, self.result)


@irdl_op_definition
class SiluOp(_UnaryOp):
    """`x * sigmoid(x)`.

    ```mlir
    %y = q35nn.silu %x : tensor<4x8xf32> -> tensor<4x8xf32>
    ```
    """

    name = "q35nn.silu"
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"


@irdl_op_definition
class GeluOp(_UnaryOp):
    """GELU, exact (`approximate = "none"`, with erf) or the tanh approximation.

    ```mlir
    %y = q35nn.gelu %x {approximate = "tanh"} : tensor<4x8xf32> -> tensor<4x8xf32>
    ```
    """

    name = "q35nn.gelu"
    approximate = attr_def(StringAttr)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, input: SSAValue, approximate: str = "none"):
        super().__init__(input, {"approximate": StringAttr(approximate)})

    def verify_(self) -> None:
        super().verify_()
        if self.approximate.data not in ("none", "tanh"):
            raise VerifyException(
                f"q35nn.gelu: approximate must be \"none\" or \"tanh\", got "
                f"\"{self.approximate.data}\""
            )


@irdl_op_definition
class SoftmaxOp(_UnaryOp):
    """Softmax along `axis` (max-subtracted, so it is finite for any finite input).

    ```mlir
    %y = q35nn.softmax %x {axis = -1 : i64} : tensor<4x8xf32> -> tensor<4x8xf32>
    ```
    """

    name = "q35nn.softmax"
    axis = attr_def(IntegerAttr[I64])
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, input: SSAValue, axis: int = -1):
        super().__init__(input, {"axis": IntegerAttr(axis, i64)})

    def verify_(self) -> None:
        super().verify_()
        _check_axis(self, self.axis.value.data, len(_shape(self.input)))


class _NormOp(IRDLOperation):
    """Normalization over the last axis with a learned per-feature scale (and bias)."""

    epsilon = attr_def(FloatAttr)
    traits = traits_def(Pure())

    def _verify_params(self, x: SSAValue, *params: SSAValue) -> None:
        shape = _shape(x)
        if not shape:
            raise VerifyException(f"{self.name}: input must have rank >= 1")
        for param in params:
            if _shape(param) != shape[-1:]:
                raise VerifyException(
                    f"{self.name}: parameter shape {_shape(param)} must be "
                    f"[{shape[-1]}], the size of the normalized (last) axis"
                )
        if self.epsilon.value.data <= 0:
            raise VerifyException(f"{self.name}: epsilon must be positive")


@irdl_op_definition
class LayerNormOp(_NormOp):
    """`(x - mean) / sqrt(var + epsilon) * gamma + beta` over the last axis.

    ```mlir
    %y = q35nn.layer_norm %x, %g, %b {epsilon = 1.0e-05 : f32} : tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<4x8xf32>
    ```
    """  # noqa: E501

    name = "q35nn.layer_norm"
    input = operand_def(F32Tensor)
    gamma = operand_def(F32Tensor)
    beta = operand_def(F32Tensor)
    result = result_def(F32Tensor)
    assembly_format = (
        "$input `,` $gamma `,` $beta attr-dict `:` type($input) `,` type($gamma) `,` "
        "type($beta) `->` type($result)"
    )

    def __init__(self, input: SSAValue, gamma: SSAValue, beta: SSAValue, epsilon: float):
        super().__init__(operands=[input, gamma, beta], result_types=[input.type],
                         attributes={"epsilon": FloatAttr(epsilon, Float32Type())})

    def verify_(self) -> None:
        _check_same_shape(self, self.input, self.result)
        self._verify_params(self.input, self.gamma, self.beta)


@irdl_op_definition
class RMSNormOp(_NormOp):
    """`x / sqrt(mean(x^2) + epsilon) * gamma` over the last axis.

    ```mlir
    %y = q35nn.rms_norm %x, %g {epsilon = 1.0e-06 : f32} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>
    ```
    """  # noqa: E501

    name = "q35nn.rms_norm"
    input = operand_def(F32Tensor)
    gamma = operand_def(F32Tensor)
    result = result_def(F32Tensor)
    assembly_format = (
        "$input `,` $gamma attr-dict `:` type($input) `,` type($gamma) `->` type($result)"
    )

    def __init__(self, input: SSAValue, gamma: SSAValue, epsilon: float):
        super().__init__(operands=[input, gamma], result_types=[input.type],
                         attributes={"epsilon": FloatAttr(epsilon, Float32Type())})

    def verify_(self) -> None:
        _check_same_shape(self, self.input, self.result)
        self._verify_params(self.input, self.gamma)


def broadcast_matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """Result shape of numpy-style matmul of ranks >= 2, or None if incompatible."""
    if len(a) < 2 or len(b) < 2 or a[-1] != b[-2]:
        return None
    batch_a, batch_b = a[:-2], b[:-2]
    rank = max(len(batch_a), len(batch_b))
    batch_a = (1,) * (rank - len(batch_a)) + batch_a
    batch_b = (1,) * (rank - len(batch_b)) + batch_b
    batch = []
    for x, y in zip(batch_a, batch_b):
        if x != y and 1 not in (x, y):
            return None
        batch.append(max(x, y))
    return (*batch, a[-2], b[-1])


@irdl_op_definition
class BatchMatmulOp(IRDLOperation):
    """Float matmul over the last two axes with numpy broadcasting of batch axes.

    ```mlir
    %y = q35nn.batch_matmul %a, %b : tensor<2x4x8xf32>, tensor<8x3xf32> -> tensor<2x4x3xf32>
    ```
    """

    name = "q35nn.batch_matmul"
    lhs = operand_def(F32Tensor)
    rhs = operand_def(F32Tensor)
    result = result_def(F32Tensor)
    traits = traits_def(Pure())
    assembly_format = (
        "$lhs `,` $rhs attr-dict `:` type($lhs) `,` type($rhs) `->` type($result)"
    )

    def __init__(self, lhs: SSAValue, rhs: SSAValue):
        shape = broadcast_matmul_shape(_shape(lhs), _shape(rhs))
        if shape is None:
            raise ValueError(f"q35nn.batch_matmul: incompatible shapes {_shape(lhs)} "
                             f"and {_shape(rhs)}")
        super().__init__(operands=[lhs, rhs], result_types=[TensorType(Float32Type(), shape)])

    def verify_(self) -> None:
        want = broadcast_matmul_shape(_shape(self.lhs), _shape(self.rhs))
        if want is None:
            raise VerifyException(
                f"q35nn.batch_matmul: operand shapes {_shape(self.lhs)} and "
                f"{_shape(self.rhs)} are not matmul-compatible"
            )
        if _shape(self.result) != want:
            raise VerifyException(
                f"q35nn.batch_matmul: result shape is {_shape(self.result)}, expected {want}"
            )


@irdl_op_definition
class GatherOp(IRDLOperation):
    """ONNX Gather: `take(data, indices, axis)`; negative indices count from the end.

    ```mlir
    %y = q35nn.gather %table, %ids {axis = 0 : i64} : tensor<100x8xf32>, tensor<1x5xi64> -> tensor<1x5x8xf32>
    ```
    """  # noqa: E501

    name = "q35nn.gather"
    data = operand_def(F32Tensor)
    indices = operand_def(TensorType[IntegerType])
    result = result_def(F32Tensor)
    axis = attr_def(IntegerAttr[I64])
    traits = traits_def(Pure())
    assembly_format = (
        "$data `,` $indices attr-dict `:` type($data) `,` type($indices) `->` type($result)"
    )

    def __init__(self, data: SSAValue, indices: SSAValue, axis: int = 0):
        shape, idx = _shape(data), _shape(indices)
        axis %= len(shape)
        out = (*shape[:axis], *idx, *shape[axis + 1:])
        super().__init__(operands=[data, indices],
                         result_types=[TensorType(Float32Type(), out)],
                         attributes={"axis": IntegerAttr(axis, i64)})

    def verify_(self) -> None:
        shape, idx = _shape(self.data), _shape(self.indices)
        _check_axis(self, self.axis.value.data, len(shape))
        axis = self.axis.value.data % len(shape)
        want = (*shape[:axis], *idx, *shape[axis + 1:])
        if _shape(self.result) != want:
            raise VerifyException(
                f"q35nn.gather: result shape is {_shape(self.result)}, expected {want}"
            )


@irdl_op_definition
class SwigluOp(IRDLOperation):
    """The SwiGLU gate: `silu(gate) * up`, elementwise.

    ```mlir
    %y = q35nn.swiglu %gate, %up : tensor<4x128xf32>, tensor<4x128xf32> -> tensor<4x128xf32>
    ```
    """

    name = "q35nn.swiglu"
    gate = operand_def(F32Tensor)
    up = operand_def(F32Tensor)
    result = result_def(F32Tensor)
    traits = traits_def(Pure())
    assembly_format = "$gate `,` $up attr-dict `:` type($gate) `,` type($up) `->` type($result)"

    def __init__(self, gate: SSAValue, up: SSAValue):
        super().__init__(operands=[gate, up], result_types=[gate.type])

    def verify_(self) -> None:
        _check_same_shape(self, self.gate, self.up, self.result)


@irdl_op_definition
class AttentionOp(IRDLOperation):
    """Scaled dot-product attention: `softmax(q k^T * scale + mask) v` over the last axes.

    q [..., Sq, D], k [..., Sk, D], v [..., Sk, Dv] share their batch dims; the optional
    additive mask broadcasts (numpy rules) to [..., Sq, Sk]. Result [..., Sq, Dv].

    ```mlir
    %y = q35nn.attention %q, %k, %v mask %m {scale = 0.25 : f32} : tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>, tensor<8x8xf32> -> tensor<1x4x8x16xf32>
    ```
    """  # noqa: E501

    name = "q35nn.attention"
    query = operand_def(F32Tensor)
    key = operand_def(F32Tensor)
    values = operand_def(F32Tensor)
    mask = opt_operand_def(F32Tensor)
    result = result_def(F32Tensor)
    scale = attr_def(FloatAttr)
    irdl_options = (AttrSizedOperandSegments(),)
    traits = traits_def(Pure())
    assembly_format = (
        "$query `,` $key `,` $values (`mask` $mask^)? attr-dict `:` "
        "type($query) `,` type($key) `,` "
        "type($values) (`,` type($mask)^)? `->` type($result)"
    )

    def __init__(self, query: SSAValue, key: SSAValue, values: SSAValue,
                 mask: SSAValue | None, scale: float):
        out = (*_shape(query)[:-1], _shape(values)[-1])
        super().__init__(operands=[query, key, values, [mask] if mask is not None else []],
                         result_types=[TensorType(Float32Type(), out)],
                         attributes={"scale": FloatAttr(scale, Float32Type())})

    def verify_(self) -> None:
        q, k, v = _shape(self.query), _shape(self.key), _shape(self.values)
        if min(len(q), len(k), len(v)) < 2 or not (q[:-2] == k[:-2] == v[:-2]):
            raise VerifyException(
                f"q35nn.attention: query {q}, key {k} and value {v} must have rank >= 2 "
                "and equal batch dimensions")
        if q[-1] != k[-1] or k[-2] != v[-2]:
            raise VerifyException(
                f"q35nn.attention: query {q} / key {k} head dims or key {k} / value {v} "
                "sequence lengths differ")
        scores = (*q[:-1], k[-2])
        if self.mask is not None:
            mask = _shape(self.mask)
            try:
                if np.broadcast_shapes(mask, scores) != scores:
                    raise ValueError
            except ValueError:
                raise VerifyException(
                    f"q35nn.attention: mask {mask} does not broadcast to the scores {scores}"
                ) from None
        if _shape(self.result) != (*q[:-1], v[-1]):
            raise VerifyException(
                f"q35nn.attention: result shape is {_shape(self.result)}, expected "
                f"{(*q[:-1], v[-1])}")


ONNX_GENERIC_EXCLUDED = frozenset({
    # its body maps sequences
    "SequenceMap",
    # random: no deterministic semantics
    "Bernoulli", "Multinomial", "RandomNormal", "RandomNormalLike", "RandomUniform",
    "RandomUniformLike",
    # sequences, optionals and strings: values that are not numeric tensors
    "ConcatFromSequence", "Optional", "OptionalGetElement", "OptionalHasElement",
    "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
    "SequenceLength", "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit",
    "RegexFullMatch",
    # its reference implementation needs Pillow, which q35c does not depend on
    "ImageDecoder",
})
"""Default-domain ops that onnx.reference implements but `q35nn.onnx_node` does not take."""


#: Default-domain ops onnx's reference implementation lacks and q35c's semantics define
#: (semantics/onnx_node.py, REFERENCE_FIXES).
ONNX_GENERIC_DEFINED_BY_Q35C = frozenset({"GlobalLpPool"})


def onnx_generic_ops() -> frozenset[str]:
    """The op types `q35nn.onnx_node` accepts: every default-domain op onnx's reference
    implementation defines (a class in `onnx.reference.ops`, or a function body in its
    schema, which the reference evaluator expands) and those q35c defines in its place
    (ONNX_GENERIC_DEFINED_BY_Q35C), less ONNX_GENERIC_EXCLUDED."""
    global _GENERIC_OPS
    if _GENERIC_OPS is None:
        import onnx.defs
        from onnx.reference.ops import _op_list

        names = {name.split("_")[0] for name in _op_list.__all__ if name != "load_op"}
        names |= {s.name for s in onnx.defs.get_all_schemas() if s.domain == "" and (
            s.has_function or s.has_context_dependent_function)}
        _GENERIC_OPS = frozenset((names | ONNX_GENERIC_DEFINED_BY_Q35C) - ONNX_GENERIC_EXCLUDED)
    return _GENERIC_OPS


_GENERIC_OPS: frozenset[str] | None = None


def ir_attribute(attribute) -> Attribute:
    """An ONNX `AttributeProto` as a builtin attribute: INT an i64 `IntegerAttr`, FLOAT an
    f32 `FloatAttr`, STRING a `StringAttr`, INTS/FLOATS/STRINGS arrays of those, TENSOR a
    dense elements attribute of the tensor's exact element type. Other kinds (graphs,
    sparse tensors, type protos) raise ValueError."""
    from onnx import AttributeProto, numpy_helper

    from q35c.compiler.tensors import exact_element

    kind = attribute.type
    if kind == AttributeProto.INT:
        return IntegerAttr(attribute.i, i64)
    if kind == AttributeProto.FLOAT:
        return FloatAttr(attribute.f, Float32Type())
    if kind == AttributeProto.STRING:
        return StringAttr(attribute.s.decode())
    if kind == AttributeProto.INTS:
        return ArrayAttr([IntegerAttr(v, i64) for v in attribute.ints])
    if kind == AttributeProto.FLOATS:
        return ArrayAttr([FloatAttr(v, Float32Type()) for v in attribute.floats])
    if kind == AttributeProto.STRINGS:
        return ArrayAttr([StringAttr(v.decode()) for v in attribute.strings])
    if kind == AttributeProto.GRAPH:  # a body (If, Loop, Scan): the serialized GraphProto
        return StringAttr(base64.b64encode(attribute.g.SerializeToString()).decode())
    if kind == AttributeProto.TENSOR:
        array = numpy_helper.to_array(attribute.t)
        ttype = TensorType(exact_element(array.dtype), array.shape)
        values = array.ravel().tolist() if array.dtype.kind in "iub" else [
            float(v) for v in array.ravel().astype(np.float64)]
        return DenseIntOrFPElementsAttr.from_list(ttype, values)
    raise ValueError(f"attribute '{attribute.name}' of kind "
                     f"{AttributeProto.AttributeType.Name(kind)} is not supported")


def onnx_attribute(name: str, value: Attribute, declared=None):
    """The inverse of `ir_attribute`; `declared` (the schema's `AttrType`, when known) gives
    the kind of an empty array."""
    import onnx
    from onnx import AttributeProto, numpy_helper

    from q35c.compiler.tensors import constant_value

    if isinstance(value, IntegerAttr):
        return onnx.helper.make_attribute(name, value.value.data)
    if isinstance(value, FloatAttr):
        return onnx.helper.make_attribute(name, float(value.value.data),
                                          attr_type=AttributeProto.FLOAT)
    if isinstance(value, StringAttr) and declared is not None and \
            int(declared) == AttributeProto.GRAPH:
        graph = onnx.GraphProto()
        graph.ParseFromString(base64.b64decode(value.data))
        return onnx.helper.make_attribute(name, graph)
    if isinstance(value, StringAttr):
        return onnx.helper.make_attribute(name, value.data)
    if isinstance(value, DenseIntOrFPElementsAttr):
        return onnx.helper.make_attribute(
            name, numpy_helper.from_array(constant_value(value, value.type)))
    assert isinstance(value, ArrayAttr), value
    items = list(value.data)
    if not items:
        kind = AttributeProto.AttributeType(int(declared)) if declared is not None else \
            AttributeProto.INTS
        return onnx.helper.make_attribute(name, [], attr_type=kind)
    if isinstance(items[0], IntegerAttr):
        return onnx.helper.make_attribute(name, [v.value.data for v in items],
                                          attr_type=AttributeProto.INTS)
    if isinstance(items[0], FloatAttr):
        return onnx.helper.make_attribute(name, [float(v.value.data) for v in items],
                                          attr_type=AttributeProto.FLOATS)
    return onnx.helper.make_attribute(name, [v.data for v in items],
                                      attr_type=AttributeProto.STRINGS)


@irdl_op_definition
class OnnxNodeOp(IRDLOperation):
    """One ONNX node of the default domain, with the semantics of onnx's reference
    implementation (`onnx.reference`) at opset `opset`: the generic op for the long tail of
    ONNX operators that no dedicated op models (like torch-mlir's `torch.operator`).

    Operands and results are static-shape tensors of any element type q35c has (i1, iN,
    uiN, f16, bf16, f32, f64, float8). `attributes` holds the node's attributes as builtin
    attributes (ints i64, floats f32, strings, arrays of them, dense tensors, and the bodies
    of If/Loop/Scan as base64 serialized GraphProtos).
    `input_slots` / `output_slots` give the ONNX input / output position of each operand /
    result where optional ones are omitted (absent: positions 0, 1, ...). A body that reads
    values of the enclosing graph gets them as the last operands, named by `outer_names`.

    ```mlir
    %y = q35nn.onnx_node "Mod"(%a, %b) {attributes = {fmod = 0 : i64}, opset = 21 : i64} : (tensor<6xi32>, tensor<6xi32>) -> tensor<6xi32>
    ```
    """  # noqa: E501

    name = "q35nn.onnx_node"
    inputs = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    op_type = attr_def(StringAttr)
    opset = attr_def(IntegerAttr[I64])
    onnx_attributes = attr_def(DictionaryAttr, attr_name="attributes")
    input_slots = opt_attr_def(DenseArrayBase)
    output_slots = opt_attr_def(DenseArrayBase)
    outer_names = opt_attr_def(ArrayAttr)
    traits = traits_def(Pure())
    assembly_format = "$op_type `(` $inputs `)` attr-dict `:` functional-type($inputs, $outputs)"

    def __init__(self, op_type: str, opset: int, inputs: list[SSAValue],
                 result_types: list[TensorType], attributes: DictionaryAttr,
                 input_slots: list[int] | None = None, output_slots: list[int] | None = None,
                 outer: list[tuple[str, SSAValue]] = ()):
        attrs = {"op_type": StringAttr(op_type), "opset": IntegerAttr(opset, i64),
                 "attributes": attributes}
        if outer:
            attrs["outer_names"] = ArrayAttr([StringAttr(name) for name, _ in outer])
        if input_slots is not None and input_slots != list(range(len(inputs))):
            attrs["input_slots"] = DenseArrayBase.from_list(i64, input_slots)
        if output_slots is not None and output_slots != list(range(len(result_types))):
            attrs["output_slots"] = DenseArrayBase.from_list(i64, output_slots)
        super().__init__(operands=[[*inputs, *(v for _, v in outer)]],
                         result_types=[result_types], attributes=attrs)

    def outer(self) -> list[str]:
        """The names of the enclosing graph's values its bodies read (the last operands)."""
        return [] if self.outer_names is None else [n.data for n in self.outer_names.data]

    def slots(self) -> tuple[list[int], list[int]]:
        """The ONNX input positions of the node's operands (those before the outer values)
        and the output positions of the results."""
        count = len(self.inputs) - len(self.outer())
        ins = (list(self.input_slots.get_values()) if self.input_slots is not None
               else list(range(count)))
        outs = (list(self.output_slots.get_values()) if self.output_slots is not None
                else list(range(len(self.outputs))))
        return ins, outs

    def node_proto(self):
        """The ONNX node this op stands for: inputs named `i<slot>`, outputs `o<slot>`
        (omitted optional ones empty), attributes converted back (`onnx_attribute`)."""
        import onnx

        ins, outs = self.slots()
        inputs = [""] * (max(ins) + 1 if ins else 0)
        for slot in ins:
            inputs[slot] = f"i{slot}"
        outputs = [""] * (max(outs) + 1 if outs else 0)
        for slot in outs:
            outputs[slot] = f"o{slot}"
        node = onnx.helper.make_node(self.op_type.data, inputs, outputs)
        schema = onnx.defs.get_schema(self.op_type.data, self.opset.value.data, "")
        for key, value in self.onnx_attributes.data.items():
            declared = schema.attributes[key].type if key in schema.attributes else None
            node.attribute.append(onnx_attribute(key, value, declared))
        return node

    def verify_(self) -> None:
        from q35c.compiler.tensors import numpy_dtype

        op_type = self.op_type.data
        if op_type not in onnx_generic_ops():
            raise VerifyException(f"q35nn.onnx_node: ONNX op type '{op_type}' is not supported")
        for value in (*self.inputs, *self.outputs):
            shape = _shape(value)
            if any(d < 0 for d in shape):
                raise VerifyException(f"q35nn.onnx_node {op_type}: {value.type} is not static")
            try:
                numpy_dtype(value.type.get_element_type())
            except ValueError as err:
                raise VerifyException(f"q35nn.onnx_node {op_type}: {err}") from None
        if self.outer_names is not None and (len(self.outer()) > len(self.inputs) or not all(
                isinstance(n, StringAttr) for n in self.outer_names.data)):
            raise VerifyException(f"q35nn.onnx_node {op_type}: outer_names must be strings, "
                                  "one per trailing operand")
        ins, outs = self.slots()
        node_inputs = self.inputs[:len(self.inputs) - len(self.outer())]
        for what, slots, values in (("input", ins, node_inputs), ("output", outs, self.outputs)):
            if len(slots) != len(values) or any(b <= a for a, b in zip(slots, slots[1:])) or \
                    any(s < 0 for s in slots):
                raise VerifyException(f"q35nn.onnx_node {op_type}: {what}_slots {slots} must "
                                      f"be {len(values)} increasing positions")


Q35nn = Dialect(
    "q35nn",
    [SiluOp, GeluOp, SoftmaxOp, LayerNormOp, RMSNormOp, BatchMatmulOp, GatherOp, SwigluOp,
     AttentionOp, OnnxNodeOp],
    [],
)
