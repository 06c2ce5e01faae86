"""The `q35nn` dialect: graph-level neural-network ops that xDSL's dialects do not model.

Everything else in a q35c graph reuses xDSL: elementwise math is `arith`/`math` on tensors,
2-D matmul/transpose/broadcast/fill are `linalg`, reshape/concat/slice are `tensor`. This
dialect adds only what those lack in xDSL 0.74: batched (broadcasting) matmul, softmax,
layer and RMS normalization, GELU, SiLU and gather, plus the fused forms that fusion passes
produce for hardware targets: SwiGLU and scaled dot-product attention. All ops are pure, on static-shape
float32 tensors (gather indices are integer), and carry plain builtin attributes so that
upstream `mlir-opt` can check dumps with the IRDL export.

Semantics (the rounding and order of every op) are defined by the reference interpreter.
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import (
    I64,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    TensorType,
    i64,
)
from xdsl.ir import Dialect, SSAValue
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    attr_def,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    result_def,
    traits_def,
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
    """

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
    """

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
            raise ValueError(f"q35nn.batch_matmul: incompatible shapes {_shape(lhs)} and {_shape(rhs)}")
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
    """

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
    """

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
        "$query `,` $key `,` $values (`mask` $mask^)? attr-dict `:` type($query) `,` type($key) `,` "
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


Q35nn = Dialect(
    "q35nn",
    [SiluOp, GeluOp, SoftmaxOp, LayerNormOp, RMSNormOp, BatchMatmulOp, GatherOp, SwigluOp,
     AttentionOp],
    [],
)
