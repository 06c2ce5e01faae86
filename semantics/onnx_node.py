"""Semantics of `q35nn.onnx_node`: the node run by onnx's reference implementation.

The op stands for one ONNX node (op type, opset, attributes); its meaning is what
`onnx.reference.ReferenceEvaluator` computes for that node on the operand values, at that
opset, with results converted to the op's declared element types (ONNX shape inference gave
them at import) and checked against the declared shapes. Evaluators are built once per
distinct node signature (op type, attributes, operand types) and reused. The reference
implementation is deterministic; the only randomness it has, a training-mode Dropout
without a seed, draws from numpy's global generator.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.reference.ops.op_batch_normalization import (
    BatchNormalization_14,
    _batchnorm_test_mode,
)
from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_25
from onnx.reference.ops.op_einsum import Einsum as _ReferenceEinsum
from onnx.reference.ops.op_loop import Loop as _ReferenceLoop
from onnx.reference.ops.op_scan import Scan as _ReferenceScan

from q35c.compiler.tensors import numpy_dtype
from q35c.dialects import q35nn
from q35c.semantics import einsum as _einsum


class OnnxNodeError(RuntimeError):
    """The reference implementation failed on, or disagreed with, an `onnx_node`."""


def run_onnx_node(op: q35nn.OnnxNodeOp, args: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """The results of `op` on the operand values `args`."""
    ins, outs = op.slots()
    evaluator = _evaluator(op)
    names = [f"i{slot}" for slot in ins] + op.outer()
    feeds = {name: np.asarray(arg) for name, arg in zip(names, args)}
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = evaluator.run(None, feeds)
    except Exception as err:  # the reference raises whatever numpy raises
        raise OnnxNodeError(f"q35nn.onnx_node {op.op_type.data}: {type(err).__name__}: "
                            f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}"
                            ) from None
    results = []
    for slot, result, value in zip(outs, op.outputs, values):
        want = tuple(result.type.get_shape())
        value = np.asarray(value)
        if value.shape != want:
            raise OnnxNodeError(f"q35nn.onnx_node {op.op_type.data}: output {slot} has shape "
                                f"{value.shape}, declared {want}")
        results.append(value.astype(numpy_dtype(result.type.get_element_type()), copy=False))
    return tuple(results)


_EVALUATORS: dict[tuple[str, ...], ReferenceEvaluator] = {}
_CACHE_LIMIT = 1024


def _evaluator(op: q35nn.OnnxNodeOp) -> ReferenceEvaluator:
    """A reference evaluator for the node of `op`, shared by every op with the same
    attributes (op type, opset, ONNX attributes, slots) and operand and result types."""
    key = (str(op.attributes), *(str(v.type) for v in (*op.inputs, *op.outputs)))
    evaluator = _EVALUATORS.get(key)
    if evaluator is None:
        ins, outs = op.slots()
        names = [f"i{slot}" for slot in ins] + op.outer()
        inputs = [_value_info(name, v.type) for name, v in zip(names, op.inputs)]
        outputs = [_value_info(f"o{slot}", r.type) for slot, r in zip(outs, op.outputs)]
        graph = onnx.helper.make_graph([op.node_proto()], op.op_type.data, inputs, outputs)
        model = onnx.helper.make_model(
            graph, opset_imports=[onnx.helper.make_opsetid("", op.opset.value.data)])
        evaluator = ReferenceEvaluator(model, new_ops=REFERENCE_FIXES)
        if len(_EVALUATORS) >= _CACHE_LIMIT:
            _EVALUATORS.clear()
        _EVALUATORS[key] = evaluator
    return evaluator


def _value_info(name: str, ttype) -> onnx.ValueInfoProto:
    dtype = numpy_dtype(ttype.get_element_type())
    return onnx.helper.make_tensor_value_info(
        name, onnx.helper.np_dtype_to_tensor_dtype(dtype), list(ttype.get_shape()))


class BatchNormalization(OpRun):
    """BatchNormalization as the operator defines it: inference mode unless
    `training_mode` (opset 14+) says otherwise. onnx's reference (1.23) runs opsets 9 to 13
    in a training-like mode whenever `momentum` is set, and it always is (the schema's
    default, 0.9), so it would mix batch statistics into every inference."""

    def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None,
             training_mode=None):
        if training_mode:
            return BatchNormalization_14._run(self, x, scale, bias, mean, var, epsilon,
                                              momentum, training_mode)
        return (_batchnorm_test_mode(x, scale, bias, mean, var, epsilon=epsilon),)

class Einsum(_ReferenceEinsum):
    """Einsum of float16 and bfloat16 as `q35c.semantics.einsum` defines it (float64 sums
    in a fixed order, rounded once): onnx's reference (1.23) runs `np.einsum(...,
    optimize=True)`, whose float16 result depends on the contraction path numpy picks
    (it rounds intermediates to float16). Other element types are the reference's."""

    def _run(self, *args, equation=None):
        if args and all(np.asarray(a).dtype == args[0].dtype for a in args) and \
                args[0].dtype in _einsum.EXPLICIT and isinstance(equation, str) and \
                equation.strip():
            return (_einsum.einsum(equation.strip(), [np.asarray(a) for a in args]),)
        return super()._run(*args, equation=equation)


class DequantizeLinear(DequantizeLinear_25):
    """DequantizeLinear at every opset. onnx's reference (1.23) implements opset 19 and later
    only, so the opset 10 and 13 forms had no implementation: onnxruntime's quantization
    tools write them into every model below opset 19 (`quantize_dynamic` of a legacy export
    at opset 17, the ONNX model zoo's int8 models). The later operator with its defaults
    (per-tensor or per-axis scale, no blocks, the scale's element type out) is the earlier
    one."""


class GatherElements(OpRun):
    """GatherElements as the operator defines it (`np.take_along_axis`, negative indices
    counted from the end of the axis, an index out of range an error). onnx's reference
    (1.23) uses `np.choose`, which takes at most 64 choices, and its fallback for longer
    axes returns one element: it fails on the token-type-id gather over a 512-entry axis
    that torch.onnx's exports of BERT-style models contain."""

    def _run(self, data, indices, axis=None):
        axis = int(axis or 0)
        rank = data.ndim
        if not -rank <= axis < rank:
            raise ValueError(f"axis {axis} out of range for rank {rank}")
        axis %= rank
        if indices.ndim != rank:
            raise ValueError(f"indices of rank {indices.ndim} for data of rank {rank}")
        size = data.shape[axis]
        index = indices.astype(np.int64)
        if index.size and (index.min() < -size or index.max() >= size):
            raise IndexError(f"an index is out of range [-{size}, {size}) on axis {axis}")
        index = np.where(index < 0, index + size, index)
        for dim, (d, i) in enumerate(zip(data.shape, index.shape)):
            if dim != axis and i > d:
                raise ValueError(f"indices dimension {dim} ({i}) exceeds the data's ({d})")
        view = data[tuple(slice(0, i) if dim != axis else slice(None)
                          for dim, i in enumerate(index.shape))]
        return (np.take_along_axis(view, index, axis=axis),)


class GlobalLpPool(OpRun):
    """GlobalLpPool (the p-norm over all spatial axes, kept as size-1 axes), which onnx's
    reference (1.23) does not implement."""

    def _run(self, x, p=None):
        p = 2 if p is None else int(p)
        axes = tuple(range(2, x.ndim))
        norm = np.sum(np.abs(x.astype(np.float64)) ** p, axis=axes, keepdims=True) ** (1 / p)
        return (norm.astype(x.dtype),)


class LRN(OpRun):
    """LRN as the operator defines it, over a window of channels. onnx's reference (1.23)
    loops over the batch axis instead, so its result is wrong whenever N != C; this is
    its code with that loop fixed (same float32 numerics)."""

    def _run(self, x, alpha=None, beta=None, bias=None, size=None):
        square_sum = np.zeros(x.shape, dtype=x.dtype)
        before, after = math.floor((size - 1) / 2), math.ceil((size - 1) / 2) + 1
        for c in range(x.shape[1]):
            begin, end = max(0, c - before), min(x.shape[1], c + after)
            square_sum[:, c] = np.sum(x[:, begin:end] ** 2, axis=1)
        return ((x / ((bias + (alpha / size) * square_sum) ** beta)).astype(x.dtype),)


class Loop(_ReferenceLoop):
    """Loop as the operator defines it. onnx's reference (1.23) runs no iteration when the
    condition input is omitted (`while None`), where the specification runs up to the trip
    count and ignores the body's condition output; and it stacks scan outputs with
    `np.vstack`, which merges the iteration axis into the first axis of each value of rank
    2 or more (and gives [T, 1] for scalars) instead of adding it: the specification's
    (and shape inference's) scan output is [T, *value shape]. With both the trip count
    and the condition omitted the specification's loop never ends (`for (i = 0; ; ++i)`,
    the body's condition ignored): that is an error here, not a hang."""

    def _run(self, M, cond, *args, context=None, body=None, attributes=None, bindings=None):
        body = self.body
        names = body.input_names
        inputs = dict.fromkeys(names)
        for name, value in zip(names[2:], args):
            inputs[name] = value
        if context is not None:
            inputs.update(context)
        if M is None and cond is None:
            raise RuntimeError("a Loop with neither a trip count nor a condition never ends")
        use_cond = cond is not None
        going = True if cond is None else bool(np.asarray(cond).reshape(-1)[0])
        scans: list[list[np.ndarray]] = [[] for _ in range(self.K)]
        carried = [inputs[name] for name in names[2:]]
        it = 0
        while going and (M is None or it < int(np.asarray(M).reshape(-1)[0])):
            if names and names[0]:
                inputs[names[0]] = np.array(it, dtype=np.int64 if M is None else M.dtype)
            if len(names) > 1 and names[1]:
                inputs[names[1]] = np.array(going)
            outputs = self._run_body(inputs, attributes=attributes, bindings=bindings)
            for k in range(self.K):
                scans[k].append(np.asarray(outputs[len(outputs) - self.K + k]))
            if use_cond:
                going = bool(np.asarray(outputs[0]).reshape(-1)[0])
            carried = list(outputs[1:1 + self.N])
            for name, value in zip(names[2:], carried):
                inputs[name] = value
            it += 1
        results = [*carried, *(np.stack(values) for values in scans if values)]
        if any(not values for values in scans):
            raise RuntimeError("a Loop with scan outputs ran no iteration (their shape is "
                               "unknown)")
        return self._check_and_fix_outputs(tuple(results))


class Scan(_ReferenceScan):
    """Scan (opset 9+) as the operator defines it: onnx's reference (1.23) implements
    `scan_input_axes`, `scan_output_axes` and both directions only at their defaults (axis
    0, forward) and refuses the others. A scan input is read along its axis, from the end
    when its direction is 1; a scan output stacks the per-iteration values along its axis
    (negative: counted from the end of the output's rank), the first iteration's value last
    when its direction is 1."""

    def __init__(self, onnx_node, run_params):  # the reference's checks refuse other axes
        OpRun.__init__(self, onnx_node, run_params)
        self.input_names = self.body.input_names
        self.output_names = self.body.output_names

    def _run(self, *args, context=None, body=None, num_scan_inputs=None,
             scan_input_axes=None, scan_input_directions=None, scan_output_axes=None,
             scan_output_directions=None, attributes=None, bindings=None):
        m = int(self.num_scan_inputs)
        n = len(args) - m
        k = len(self.output_names) - n

        def listed(values, count):
            return [int(v) for v in (list(values or []) + [0] * count)[:count]]

        xs = []
        for x, axis, reverse in zip(args[n:], listed(self.scan_input_axes, m),
                                    listed(self.scan_input_directions, m)):
            x = np.moveaxis(np.asarray(x), axis, 0)
            xs.append(x[::-1] if reverse else x)
        states = list(args[:n])
        stacked: list[list[np.ndarray]] = [[] for _ in range(k)]
        for t in range(xs[0].shape[0] if xs else 0):
            inputs = dict(context or {})
            inputs.update(zip(self.input_names[:n], states))
            inputs.update(zip(self.input_names[n:], (x[t] for x in xs)))
            outputs = self._run_body(inputs, bindings=bindings)
            states = list(outputs[:n])
            for i in range(k):
                stacked[i].append(np.asarray(outputs[n + i]))
        results = list(states)
        for values, axis, reverse in zip(stacked, listed(self.scan_output_axes, k),
                                         listed(self.scan_output_directions, k)):
            if not values:
                raise RuntimeError("a Scan with scan outputs ran no iteration (their shape "
                                   "is unknown)")
            y = np.stack(values[::-1] if reverse else values)
            results.append(np.moveaxis(y, 0, axis % y.ndim))
        return self._check_and_fix_outputs(tuple(results))


#: The operators whose onnx reference implementation q35c replaces (above): the interpreter's
#: `onnx_node` and the ONNX frontend's import-time folding both evaluate with these.
REFERENCE_FIXES = [BatchNormalization, DequantizeLinear, Einsum, GatherElements,
                   GlobalLpPool, LRN, Loop, Scan]
