"""The `quant3p5` dialect: packed 3.5-bit weights and the ops that produce and consume them.

A `!quant3p5.packed<[K, N], group, "layout">` value is a weight matrix W[K, N] (K is the
reduction axis) stored in one of two layouts:

- ``"q3p5"``: the Q3P5 format (docs/format.md): a 7-bit code per pair of consecutive-K
  weights, 8 codes in 7 bytes, a scale and an offset per group of ``group`` K-values;
- ``"pair43"``: the legacy pair layout of existing Fortran kernels: one int8 per pair and one
  fp32 scale and offset per output column (``group`` equals K).

Weight data never lives in the IR: `quant3p5.weight` names a tensor of the module's weight
store (compiler/weights.py), so IR dumps stay small. Types and ops use only MLIR builtin
attributes as parameters and attributes (no properties), because upstream `mlir-opt` accepts
IRDL-defined ops only with attribute dictionaries and parses IRDL types as `<attr, attr>`.

The exact numerics of every op are defined by the reference interpreter
(semantics/quant3p5.py); this file defines structure and verification only.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import (
    I64,
    ArrayAttr,
    Float32Type,
    IntegerAttr,
    IntegerType,
    StringAttr,
    TensorType,
    i8,
    i64,
)
from xdsl.ir import Attribute, Dialect, ParametrizedAttribute, SSAValue, TypeAttribute
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    attr_def,
    base,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_attr_def,
    opt_operand_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

LAYOUTS = ("q3p5", "pair43")
"""Packed layouts: the Q3P5 format and the legacy Fortran pair layout."""


@irdl_attr_definition
class PackedWeightType(ParametrizedAttribute, TypeAttribute):
    """A packed 3.5-bit weight matrix W[K, N], quantized in groups of `group_size` along K.

    Printed as `!quant3p5.packed<[4096 : i64, 11008 : i64], 64 : i64, "q3p5">`, the form
    upstream MLIR gives IRDL-defined types, so dumps parse in `mlir-opt`.
    """

    name = "quant3p5.packed"

    shape: ArrayAttr[IntegerAttr[I64]]
    group_size: IntegerAttr[I64]
    layout: StringAttr

    def __init__(self, shape: Sequence[int], group_size: int, layout: str = "q3p5"):
        super().__init__(
            ArrayAttr(IntegerAttr(d, i64) for d in shape),
            IntegerAttr(group_size, i64),
            StringAttr(layout),
        )

    def get_shape(self) -> tuple[int, int]:
        k, n = (d.value.data for d in self.shape.data)
        return k, n

    @property
    def group(self) -> int:
        return self.group_size.value.data

    @property
    def num_groups(self) -> int:
        k, _ = self.get_shape()
        return -(-k // self.group)

    @property
    def num_pairs(self) -> int:
        return -(-self.get_shape()[0] // 2)

    def verify(self) -> None:
        dims = [d.value.data for d in self.shape.data]
        if len(dims) != 2 or min(dims) <= 0:
            raise VerifyException(
                f"!quant3p5.packed: shape must be [K, N] with K, N > 0, got {dims}"
            )
        layout = self.layout.data
        if layout not in LAYOUTS:
            raise VerifyException(
                f"!quant3p5.packed: unknown layout '{layout}', expected one of {LAYOUTS}"
            )
        group = self.group_size.value.data
        if layout == "q3p5" and (group <= 0 or group % 16):
            raise VerifyException(
                f"!quant3p5.packed: group size {group} must be a positive multiple of 16 "
                "(a group is a whole number of 7-byte blocks)"
            )
        if layout == "pair43" and group != dims[0]:
            raise VerifyException(
                f"!quant3p5.packed: the pair43 layout has one scale per column, so the "
                f"group size must equal K={dims[0]}, got {group}"
            )


def _tensor_shape(value: SSAValue, op: IRDLOperation, role: str) -> tuple[int, ...]:
    if not isinstance(value.type, TensorType):
        raise VerifyException(f"{op.name}: {role} must be a ranked tensor, got {value.type}")
    shape = tuple(value.type.get_shape())
    if any(d < 0 for d in shape):
        raise VerifyException(f"{op.name}: {role} must have a static shape, got {value.type}")
    return shape


def _expect(op: IRDLOperation, role: str, got: object, want: object) -> None:
    if got != want:
        raise VerifyException(f"{op.name}: {role} is {got}, expected {want}")


def _matmul_output_shape(op: IRDLOperation, lhs: SSAValue,
                         packed: PackedWeightType) -> tuple[int, ...]:
    """Shape of `lhs[..., K] x W[K, N]`, after checking the reduction dimension."""
    k, n = packed.get_shape()
    shape = _tensor_shape(lhs, op, "activation")
    if not shape:
        raise VerifyException(f"{op.name}: activation must have rank >= 1")
    if shape[-1] != k:
        raise VerifyException(
            f"{op.name}: activation reduction dimension {shape[-1]} does not match "
            f"packed weight K={k}"
        )
    return (*shape[:-1], n)


@irdl_op_definition
class WeightOp(IRDLOperation):
    """A named tensor of the module's weight store: packed weights or a float tensor.

    ```mlir
    %w = quant3p5.weight "layers.0.mlp.up" : !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5">
    ```
    """  # noqa: E501

    name = "quant3p5.weight"

    weight_name = attr_def(StringAttr, attr_name="name")
    result = result_def(base(PackedWeightType) | base(TensorType))

    traits = traits_def(Pure())
    assembly_format = "$name attr-dict `:` type($result)"

    def __init__(self, weight_name: str, result_type: Attribute):
        super().__init__(attributes={"name": StringAttr(weight_name)}, result_types=[result_type])

    def verify_(self) -> None:
        if not self.weight_name.data:
            raise VerifyException("quant3p5.weight: the weight name must not be empty")
        if isinstance(self.result.type, TensorType):
            _tensor_shape(self.result, self, "result")


@irdl_op_definition
class QuantizeOp(IRDLOperation):
    """Quantize a float matrix W[K, N] to the packed type of the result (Q3P5 or pair43).

    ```mlir
    %p = quant3p5.quantize %w : tensor<64x32xf32> -> !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5">
    ```
    """  # noqa: E501

    name = "quant3p5.quantize"

    input = operand_def(TensorType[Float32Type])
    result = result_def(PackedWeightType)

    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, input: SSAValue, result_type: PackedWeightType):
        super().__init__(operands=[input], result_types=[result_type])

    def verify_(self) -> None:
        assert isinstance(self.result.type, PackedWeightType)
        _expect(self, "input shape", _tensor_shape(self.input, self, "input"),
                self.result.type.get_shape())


@irdl_op_definition
class DequantizeOp(IRDLOperation):
    """Expand packed weights to the float32 matrix they encode.

    ```mlir
    %w = quant3p5.dequantize %p : !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5"> -> tensor<64x32xf32>
    ```
    """  # noqa: E501

    name = "quant3p5.dequantize"

    input = operand_def(PackedWeightType)
    result = result_def(TensorType[Float32Type])

    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, input: SSAValue):
        assert isinstance(input.type, PackedWeightType)
        super().__init__(
            operands=[input], result_types=[TensorType(Float32Type(), input.type.get_shape())]
        )

    def verify_(self) -> None:
        assert isinstance(self.input.type, PackedWeightType)
        _expect(self, "result shape", _tensor_shape(self.result, self, "result"),
                self.input.type.get_shape())


@irdl_op_definition
class UnpackOp(IRDLOperation):
    """Split packed weights into codes, per-group scales and per-group offsets.

    `codes[p, n]` is the 7-bit code (q3p5) or the legacy byte (pair43) of pair p of column
    n; `scales` and `offsets` are the decoded float32 [G, N] group parameters.

    ```mlir
    %c, %s, %o = quant3p5.unpack %p : !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5"> -> tensor<32x32xi8>, tensor<1x32xf32>, tensor<1x32xf32>
    ```
    """  # noqa: E501

    name = "quant3p5.unpack"

    input = operand_def(PackedWeightType)
    codes = result_def(TensorType[IntegerType])
    scales = result_def(TensorType[Float32Type])
    offsets = result_def(TensorType[Float32Type])

    traits = traits_def(Pure())
    assembly_format = (
        "$input attr-dict `:` type($input) `->` type($codes) `,` type($scales) `,` type($offsets)"
    )

    def __init__(self, input: SSAValue):
        packed = input.type
        assert isinstance(packed, PackedWeightType)
        _, n = packed.get_shape()
        groups = TensorType(Float32Type(), (packed.num_groups, n))
        super().__init__(
            operands=[input],
            result_types=[TensorType(i8, (packed.num_pairs, n)), groups, groups],
        )

    def verify_(self) -> None:
        _verify_components(self, self.input.type, self.codes, self.scales, self.offsets)


@irdl_op_definition
class PackOp(IRDLOperation):
    """Assemble legacy pair-layout weights from runtime bytes, scales and offsets.

    The inverse of `quant3p5.unpack` for the `pair43` layout: the result holds exactly the
    given pair bytes and per-column fp32 scale and offset, as Fortran kernels receive them.
    Q3P5 values are made only by `quant3p5.quantize` (their group scales have a compact
    encoding that arbitrary float scales cannot be put into without loss).

    ```mlir
    %p = quant3p5.pack %c, %s, %o : tensor<32x32xi8>, tensor<32xf32>, tensor<32xf32> -> !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "pair43">
    ```
    """  # noqa: E501

    name = "quant3p5.pack"

    codes = operand_def(TensorType[IntegerType])
    scales = operand_def(TensorType[Float32Type])
    offsets = operand_def(TensorType[Float32Type])
    result = result_def(PackedWeightType)

    traits = traits_def(Pure())
    assembly_format = (
        "$codes `,` $scales `,` $offsets attr-dict `:` type($codes) `,` type($scales) `,` "
        "type($offsets) `->` type($result)"
    )

    def __init__(self, codes: SSAValue, scales: SSAValue, offsets: SSAValue,
                 result_type: PackedWeightType):
        super().__init__(operands=[codes, scales, offsets], result_types=[result_type])

    def verify_(self) -> None:
        assert isinstance(self.result.type, PackedWeightType)
        if self.result.type.layout.data != "pair43":
            raise VerifyException(
                "quant3p5.pack: builds only the pair43 layout, "
                f"got \"{self.result.type.layout.data}\" "
                "(Q3P5 weights come from quant3p5.quantize)"
            )
        _verify_components(self, self.result.type, self.codes, self.scales, self.offsets)


def _verify_components(op: IRDLOperation, packed: Attribute, codes: SSAValue,
                       scales: SSAValue, offsets: SSAValue) -> None:
    """Codes are [pairs, N] of i8; scales/offsets are [groups, N] (pair43 also accepts [N])."""
    assert isinstance(packed, PackedWeightType)
    _, n = packed.get_shape()
    assert isinstance(codes.type, TensorType)
    _expect(op, "code element type", codes.type.get_element_type(), i8)
    _expect(op, "codes shape", _tensor_shape(codes, op, "codes"), (packed.num_pairs, n))
    allowed = {(packed.num_groups, n)}
    if packed.layout.data == "pair43":
        allowed.add((n,))
    for role, value in (("scales", scales), ("offsets", offsets)):
        shape = _tensor_shape(value, op, role)
        if shape not in allowed:
            raise VerifyException(
                f"{op.name}: {role} shape is {shape}, expected one of {sorted(allowed)} "
                f"for {packed.num_groups} group(s) of {packed.group} and N={n}"
            )


@irdl_op_definition
class MatmulOp(IRDLOperation):
    """Float-activation quantized matmul: `y[..., n] = sum_k x[..., k] * deq(W)[k, n]`.

    Weights are decoded inside the dot product; the fp32 matrix is never materialized by
    targets. Leading dimensions of `x` are batch dimensions.

    ```mlir
    %y = quant3p5.matmul %x, %p : tensor<4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5"> -> tensor<4x32xf32>
    ```
    """  # noqa: E501

    name = "quant3p5.matmul"

    lhs = operand_def(TensorType[Float32Type])
    weights = operand_def(PackedWeightType)
    result = result_def(TensorType[Float32Type])

    traits = traits_def(Pure())
    assembly_format = (
        "$lhs `,` $weights attr-dict `:` type($lhs) `,` type($weights) `->` type($result)"
    )

    def __init__(self, lhs: SSAValue, weights: SSAValue):
        assert isinstance(weights.type, PackedWeightType)
        assert isinstance(lhs.type, TensorType)
        shape = (*lhs.type.get_shape()[:-1], weights.type.get_shape()[1])
        super().__init__(operands=[lhs, weights],
                         result_types=[TensorType(Float32Type(), shape)])

    def verify_(self) -> None:
        assert isinstance(self.weights.type, PackedWeightType)
        want = _matmul_output_shape(self, self.lhs, self.weights.type)
        _expect(self, "result shape", _tensor_shape(self.result, self, "result"), want)


@irdl_op_definition
class GatherOp(IRDLOperation):
    """Gather rows of an embedding table stored transposed as packed weights, decoded.

    The table `E[V, D]` is stored as the packed matrix `W = E^T` (`[K, N] = [D, V]`), the
    layout of a tied LM head's weight: `y[i..., k] = deq(W)[k, ids[i...]]`, so row `t` of
    the table is column `t` of `W`, which the Q3P5 format stores contiguously (its pair
    codes, its group codes, its three column words). Negative indices count from `V`, as
    ONNX Gather's; an index outside [-V, V) is an error at run time.

    ```mlir
    %y = quant3p5.gather %p, %ids : !quant3p5.packed<[64 : i64, 100 : i64], 32 : i64, "q3p5">, tensor<1x5xi64> -> tensor<1x5x64xf32>
    ```
    """  # noqa: E501

    name = "quant3p5.gather"

    table = operand_def(PackedWeightType)
    indices = operand_def(TensorType[IntegerType])
    result = result_def(TensorType[Float32Type])

    traits = traits_def(Pure())
    assembly_format = (
        "$table `,` $indices attr-dict `:` type($table) `,` type($indices) `->` type($result)"
    )

    def __init__(self, table: SSAValue, indices: SSAValue):
        assert isinstance(table.type, PackedWeightType)
        assert isinstance(indices.type, TensorType)
        shape = (*indices.type.get_shape(), table.type.get_shape()[0])
        super().__init__(operands=[table, indices],
                         result_types=[TensorType(Float32Type(), shape)])

    def verify_(self) -> None:
        packed = self.table.type
        assert isinstance(packed, PackedWeightType)
        if packed.layout.data != "q3p5":
            raise VerifyException(
                f"quant3p5.gather: gathers from the q3p5 layout only, got "
                f"\"{packed.layout.data}\" (pair43 tables have no row-gather kernel)")
        ids = _tensor_shape(self.indices, self, "indices")
        want = (*ids, packed.get_shape()[0])
        _expect(self, "result shape", _tensor_shape(self.result, self, "result"), want)


@irdl_op_definition
class QuantizeActivationsOp(IRDLOperation):
    """Quantize activations to int8, symmetric, one scale per row (last axis).

    `scale[r] = max_k |x[r, k]| / 127` (1.0 for an all-zero row) and
    `q[r, k] = clamp(round_half_even(x[r, k] / scale[r]), -127, 127)`, all in float32.

    ```mlir
    %q, %s = quant3p5.quantize_activations %x : tensor<4x64xf32> -> tensor<4x64xi8>, tensor<4xf32>
    ```
    """

    name = "quant3p5.quantize_activations"

    input = operand_def(TensorType[Float32Type])
    quantized = result_def(TensorType[IntegerType])
    scale = result_def(TensorType[Float32Type])

    traits = traits_def(Pure())
    assembly_format = (
        "$input attr-dict `:` type($input) `->` type($quantized) `,` type($scale)"
    )

    def __init__(self, input: SSAValue):
        assert isinstance(input.type, TensorType)
        shape = tuple(input.type.get_shape())
        super().__init__(
            operands=[input],
            result_types=[TensorType(i8, shape), TensorType(Float32Type(), shape[:-1])],
        )

    def verify_(self) -> None:
        shape = _tensor_shape(self.input, self, "input")
        if not shape:
            raise VerifyException(f"{self.name}: input must have rank >= 1")
        assert isinstance(self.quantized.type, TensorType)
        _expect(self, "quantized element type", self.quantized.type.get_element_type(), i8)
        _expect(self, "quantized shape", _tensor_shape(self.quantized, self, "quantized"), shape)
        _expect(self, "scale shape", _tensor_shape(self.scale, self, "scale"), shape[:-1])


INT_RESCALE_MAX_ROWS = (2**31 - 1) // (128 * 127 * 255)
"""The most K rows per int32 block of the integer rescale contract (`MatmulInt8Op`
`rescale_rows`): |q * level * s| <= 128 * 127 * 255 for int8 activations, levels in
[-127, 127] and integer scales up to 255, so no block sum leaves int32."""


@irdl_op_definition
class MatmulInt8Op(IRDLOperation):
    """Int8-activation quantized matmul with int32 accumulation and an explicit rescale.

    For each group g of K, with integer levels `L` from the codebook:
    `acc[r, g, n] = sum_{k in g} q[r, k] * L[k, n]` and `sx[r, g] = sum_{k in g} q[r, k]`
    in int32, then in float32, group by group in order:
    `y[r, n] = scale[r] * sum_g (s[g, n] * acc[r, g, n] + o[g, n] * sx[r, g])`.

    With `rescale_rows = R` (a multiple of the group size) the op computes the integer
    rescale contract instead (semantics/quant3p5.py `int_scaled`, docs/groq.md): integer
    group scales `s` (0 .. 255) times a float32 column base, group offsets folded into the
    levels; per block of R rows of K the groups combine exactly in int32
    (`sum_g s[g, n] * acc'[r, g, n]`), and each block is converted and scaled once.

    ```mlir
    %y = quant3p5.matmul_int8 %q, %s, %p : tensor<4x64xi8>, tensor<4xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5"> -> tensor<4x32xf32>
    ```
    """  # noqa: E501

    name = "quant3p5.matmul_int8"

    lhs = operand_def(TensorType[IntegerType])
    lhs_scale = operand_def(TensorType[Float32Type])
    weights = operand_def(PackedWeightType)
    result = result_def(TensorType[Float32Type])
    rescale_rows = opt_attr_def(IntegerAttr[I64])

    traits = traits_def(Pure())
    assembly_format = (
        "$lhs `,` $lhs_scale `,` $weights attr-dict `:` type($lhs) `,` type($lhs_scale) `,` "
        "type($weights) `->` type($result)"
    )

    def __init__(self, lhs: SSAValue, lhs_scale: SSAValue, weights: SSAValue,
                 rescale_rows: int = 0):
        assert isinstance(weights.type, PackedWeightType)
        assert isinstance(lhs.type, TensorType)
        shape = (*lhs.type.get_shape()[:-1], weights.type.get_shape()[1])
        super().__init__(
            operands=[lhs, lhs_scale, weights], result_types=[TensorType(Float32Type(), shape)],
            attributes={"rescale_rows": IntegerAttr(rescale_rows, i64)} if rescale_rows else {})

    def verify_(self) -> None:
        assert isinstance(self.weights.type, PackedWeightType)
        assert isinstance(self.lhs.type, TensorType)
        _expect(self, "activation element type", self.lhs.type.get_element_type(), i8)
        want = _matmul_output_shape(self, self.lhs, self.weights.type)
        _expect(self, "activation scale shape",
                _tensor_shape(self.lhs_scale, self, "activation scale"), want[:-1])
        _expect(self, "result shape", _tensor_shape(self.result, self, "result"), want)
        if self.rescale_rows is not None:
            rows, group = self.rescale_rows.value.data, self.weights.type.group
            if self.weights.type.layout.data != "q3p5":
                raise VerifyException(f"{self.name}: rescale_rows needs q3p5 weights")
            if rows <= 0 or rows % group:
                raise VerifyException(f"{self.name}: rescale_rows {rows} is not a positive "
                                      f"multiple of the group size {group}")
            if rows > INT_RESCALE_MAX_ROWS:
                raise VerifyException(
                    f"{self.name}: rescale_rows {rows}: an int32 block sum could overflow "
                    f"(at most {INT_RESCALE_MAX_ROWS} rows)")


ACTIVATIONS = ("none", "relu", "gelu", "gelu_tanh", "silu")


@irdl_op_definition
class FusedMatmulOp(IRDLOperation):
    """`act(x * deq(W) + bias) + residual`: a quantized matmul with its epilogue fused.

    `bias` ([N]) and `residual` (the result's shape) are optional; `activation` is one of
    none, relu, gelu, gelu_tanh, silu. Each step rounds to float32 as the unfused ops do,
    so fusing changes no result.

    ```mlir
    %y = quant3p5.fused_matmul %x, %p bias %b {activation = "gelu"} : tensor<4x64xf32>, !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5"> bias tensor<32xf32> -> tensor<4x32xf32>
    ```
    """  # noqa: E501

    name = "quant3p5.fused_matmul"

    lhs = operand_def(TensorType[Float32Type])
    weights = operand_def(PackedWeightType)
    bias = opt_operand_def(TensorType[Float32Type])
    residual = opt_operand_def(TensorType[Float32Type])
    result = result_def(TensorType[Float32Type])
    activation = attr_def(StringAttr)

    irdl_options = (AttrSizedOperandSegments(),)
    traits = traits_def(Pure())
    assembly_format = (
        "$lhs `,` $weights (`bias` $bias^)? (`residual` $residual^)? attr-dict `:` "
        "type($lhs) `,` type($weights) (`bias` type($bias)^)? (`residual` type($residual)^)? "
        "`->` type($result)"
    )

    def __init__(self, lhs: SSAValue, weights: SSAValue, bias: SSAValue | None,
                 residual: SSAValue | None, activation: str = "none"):
        assert isinstance(weights.type, PackedWeightType)
        assert isinstance(lhs.type, TensorType)
        shape = (*lhs.type.get_shape()[:-1], weights.type.get_shape()[1])
        super().__init__(
            operands=[lhs, weights, [bias] if bias else [], [residual] if residual else []],
            result_types=[TensorType(Float32Type(), shape)],
            attributes={"activation": StringAttr(activation)})

    def verify_(self) -> None:
        assert isinstance(self.weights.type, PackedWeightType)
        want = _matmul_output_shape(self, self.lhs, self.weights.type)
        _expect(self, "result shape", _tensor_shape(self.result, self, "result"), want)
        if self.bias is not None:
            _expect(self, "bias shape", _tensor_shape(self.bias, self, "bias"), want[-1:])
        if self.residual is not None:
            _expect(self, "residual shape", _tensor_shape(self.residual, self, "residual"), want)
        if self.activation.data not in ACTIVATIONS:
            raise VerifyException(
                f"quant3p5.fused_matmul: activation \"{self.activation.data}\" is not one of "
                f"{', '.join(ACTIVATIONS)}")


Quant3p5 = Dialect(
    "quant3p5",
    [WeightOp, QuantizeOp, DequantizeOp, UnpackOp, PackOp, MatmulOp, GatherOp,
     QuantizeActivationsOp, MatmulInt8Op, FusedMatmulOp],
    [PackedWeightType],
)
