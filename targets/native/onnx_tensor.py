"""Native rules for the generic ONNX ops of tensor semantics (everything but the CNN family):
elementwise maps over numpy broadcasting, casts, views, gathers and scatters, reductions,
arg-max/min, cumulative sums, softmax-likes, Trilu, Range, Tile and the ops whose results
depend on their operands' shapes only.

The rules are table-driven: `MAP_OPS` names the elementwise op types (the C renderer's
expression table, targets/c/onnx_tensor.py, says how each computes), `VIEW_OPS` those that
only reinterpret their first operand, `SHAPE_ONLY_OPS` those computed at compile time by the
op's own semantics (`q35c.semantics.onnx_node`) on zeros of the operands' shapes. The steps
carry plain data (op type, attributes, strides); the numerics are in the renderers and
runtime/q35rt_onnx.c, written to match onnx's reference implementation.
"""

from __future__ import annotations

import numpy as np
import onnx
from xdsl.dialects import arith
from xdsl.ir import SSAValue

from q35c.compiler.codegen_names import plain_text
from q35c.compiler.ir_attrs import origin_of
from q35c.compiler.tensors import constant_value
from q35c.targets.native.lower import _dtype, _shape, strides
from q35c.targets.native.onnx_node import lowers
from q35c.targets.native.program import ELEMENT_TYPES, Buffer, Step

MAP_OPS = (
    # unary
    "Abs", "Neg", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Cos", "Cosh", "Sin",
    "Sinh", "Tan", "Tanh", "Exp", "Log", "Sqrt", "Reciprocal", "Ceil", "Floor", "Round",
    "Sign", "Erf", "Sigmoid", "Softplus", "Softsign", "Relu", "IsNaN", "IsInf", "Not",
    "BitwiseNot", "Elu", "Celu", "Selu", "LeakyRelu", "HardSigmoid", "HardSwish",
    "ThresholdedRelu", "Shrink", "Mish", "Swish", "Cast", "CastLike", "Expand", "Gelu",
    # binary and more
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Equal", "Less", "Greater", "LessOrEqual",
    "GreaterOrEqual", "And", "Or", "Xor", "BitShift", "BitwiseAnd", "BitwiseOr",
    "BitwiseXor", "PRelu", "Where", "Max", "Min", "Sum", "Mean", "Clip",
)
"""Elementwise op types: one output, every operand broadcast to it (numpy rules)."""

VIEW_OPS = ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity")
"""The output is the first operand's data in row-major order, under the output's shape."""

SHAPE_ONLY_OPS = {
    "ConstantOfShape": lambda out: out, "HannWindow": lambda out: out[0],
    "HammingWindow": lambda out: out[0], "BlackmanWindow": lambda out: out[0],
    "EyeLike": None, "Shape": None, "Size": None}
"""The output depends on the operands' shapes (static here) only, never on their values;
for those listed with a function, the first operand's value is given by the (static) output
shape: ConstantOfShape's is that shape, a window's its length."""

REDUCE_OPS = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


def attributes(op) -> dict:
    """The node's attributes as Python values (ints, floats, strings, lists, arrays), the
    schema's defaults filled in."""
    schema = onnx.defs.get_schema(op.op_type.data, op.opset.value.data, "")
    values = {name: onnx.helper.get_attribute_value(a.default_value)
              for name, a in schema.attributes.items() if a.default_value.name}
    for attr in op.node_proto().attribute:
        values[attr.name] = onnx.helper.get_attribute_value(attr)
    for name, value in values.items():
        if isinstance(value, onnx.TensorProto):
            values[name] = onnx.numpy_helper.to_array(value)
        elif isinstance(value, bytes):
            values[name] = value.decode()
    return values


def operands(op) -> dict[int, SSAValue]:
    """The node's operands by ONNX input position (omitted optional inputs absent)."""
    ins, _ = op.slots()
    return dict(zip(ins, op.inputs))


def constant(lowering, value: SSAValue) -> np.ndarray | None:
    """The compile-time value of `value` (an `arith.constant`), or None."""
    if value in lowering.lazy and isinstance(lowering.lazy[value], arith.ConstantOp):
        c = lowering.lazy[value]
        return constant_value(c.value, c.result.type)
    if value in lowering.scalars:
        return np.asarray(lowering.scalars[value], dtype=_dtype(value))
    return None


def _error(lowering, op, message: str):
    """A one-line error naming the node (its ONNX name when known) and its op type."""
    where = origin_of(op)
    node = f"q35nn.onnx_node \"{plain_text(op.op_type.data)}\""
    return lowering.error(f"{node} ({where}): {message}" if where else f"{node}: {message}")


def _check_types(lowering, op, buffers: list[Buffer]) -> None:
    for buf in buffers:
        if buf.dtype not in ELEMENT_TYPES:
            raise _error(lowering, op, f"element type {buf.dtype} is not supported")


def _results(lowering, op) -> list[Buffer]:
    outs = [lowering.result(r, op.op_type.data.lower()) for r in op.outputs]
    _check_types(lowering, op, outs)
    return outs


def _ins(lowering, op, values) -> list[Buffer]:
    bufs = [lowering.buffer_of(v, op) for v in values]
    _check_types(lowering, op, bufs)
    return bufs


def broadcast_strides(shape: tuple[int, ...], out: tuple[int, ...]) -> list[int]:
    """Element strides of an operand of `shape` broadcast to `out` (0 on broadcast axes)."""
    shape = (1,) * (len(out) - len(shape)) + tuple(shape)
    return [0 if n == 1 and m != 1 else s for n, m, s in zip(shape, out, strides(shape))]


def _step(lowering, op, kernel: str, outs, ins, params: dict) -> None:
    lowering.steps.append(Step(kernel, outs, ins, params, op.name))


@lowers(*MAP_OPS)
def lower_map(lowering, op) -> None:
    """One elementwise step; CastLike's second operand only gives the type, Expand's the
    shape (the output's, static), so neither is read."""
    op_type = op.op_type.data
    values = list(op.inputs)
    if op_type in ("CastLike", "Expand"):
        values = values[:1]
    ins = _ins(lowering, op, values)
    [out] = _results(lowering, op)
    slots = [s for s, _ in sorted(operands(op).items())][:len(ins)]
    _step(lowering, op, "onnx_map", [out], ins, {
        "op": op_type, "attrs": _plain(attributes(op)), "slots": slots,
        "strides": [broadcast_strides(b.shape, out.shape) for b in ins]})


def _plain(attrs: dict) -> dict:
    """Attributes a step may carry (no arrays: those are turned into lists)."""
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in attrs.items()}


@lowers(*VIEW_OPS)
def lower_view(lowering, op) -> None:
    src = lowering.buffer_of(op.inputs[0], op)
    _check_types(lowering, op, [src])
    result = op.outputs[0]
    view = Buffer(f"{src.root.name}_v{len(lowering.buffers)}", src.dtype, _shape(result),
                  src.root.kind, alias_of=src)
    lowering.buffers.append(view)
    lowering.values[result] = view


@lowers("Dropout")
def lower_dropout(lowering, op) -> None:
    """Inference mode (no training_mode operand, or a constant false one): the data, and a
    mask of ones; otherwise targets/native/onnx_misc.py's seeded training mode."""
    mode = operands(op).get(2)
    if mode is not None and (constant(lowering, mode) is None or
                             bool(constant(lowering, mode))):
        from q35c.targets.native.onnx_misc import lower_training_dropout

        return lower_training_dropout(lowering, op)
    _, outs = op.slots()
    src = _ins(lowering, op, op.inputs[:1])[0]
    for slot, result in zip(outs, op.outputs):
        buf = lowering.result(result, "dropout")
        if slot == 0:
            _step(lowering, op, "copy", [buf], [src], {})
        else:
            _step(lowering, op, "fill", [buf], [], {"value": 1})


@lowers(*SHAPE_ONLY_OPS)
def lower_shape_only(lowering, op) -> None:
    """Computed now by the op's own semantics, on zeros (or on the value the output's static
    shape implies), into the weight blob."""
    from q35c.semantics.onnx_node import run_onnx_node

    implied = SHAPE_ONLY_OPS[op.op_type.data]
    args = [np.zeros(_shape(v), dtype=_dtype(v)) for v in op.inputs]
    if implied is not None:
        args[0] = np.asarray(implied(_shape(op.outputs[0])), dtype=_dtype(op.inputs[0])
                             ).reshape(_shape(op.inputs[0]))
    for result, value in zip(op.outputs, run_onnx_node(op, args)):
        lowering.values[result] = lowering.blob_buffer(
            f"onnx_node:{len(lowering.blob)}", np.asarray(value))


@lowers("BitCast")
def lower_bitcast(lowering, op) -> None:
    """The operand's bytes under the result's element type and shape: a view."""
    src = _ins(lowering, op, op.inputs[:1])[0]
    result = op.outputs[0]
    dtype, shape = _dtype(result), _shape(result)
    view = Buffer(f"{src.root.name}_v{len(lowering.buffers)}", dtype, shape, src.root.kind,
                  alias_of=src)
    _check_types(lowering, op, [view])
    if view.nbytes != src.nbytes:
        raise _error(lowering, op, "the result must have as many bytes as the operand")
    lowering.buffers.append(view)
    lowering.values[result] = view


@lowers("Gather", "GatherElements", "GatherND", "ScatterElements", "ScatterND")
def lower_index(lowering, op) -> None:
    """Data movement driven by an index tensor; negative indices count from the end, and an
    index out of range fails the run (as the reference raises)."""
    op_type = op.op_type.data
    ins = _ins(lowering, op, op.inputs)
    [out] = _results(lowering, op)
    attrs = attributes(op)
    data = ins[0]
    params = {"op": op_type, "data_shape": list(data.shape),
              "index_shape": list(ins[1].shape), "out_shape": list(out.shape)}
    if op_type in ("Gather", "GatherElements", "ScatterElements"):
        params["axis"] = attrs.get("axis", 0) % max(len(data.shape), 1)
    if op_type == "GatherND":
        params["batch_dims"] = attrs.get("batch_dims", 0)
    if op_type in ("ScatterElements", "ScatterND"):
        reduction = attrs.get("reduction", "none")
        if reduction not in ("none", "add", "mul", "max", "min"):
            raise _error(lowering, op, f"reduction '{reduction}' is not supported")
        params["reduction"] = reduction
    _step(lowering, op, "onnx_index", [out], ins, params)


@lowers(*REDUCE_OPS)
def lower_reduce(lowering, op) -> None:
    """Axes from the attribute, or the second operand (read at run time unless constant);
    none: every axis, or none with noop_with_empty_axes (a copy)."""
    attrs = attributes(op)
    [src] = _ins(lowering, op, op.inputs[:1])
    [out] = _results(lowering, op)
    given = operands(op).get(1)
    params = {"op": op.op_type.data, "shape": list(src.shape),
              "noop": bool(attrs.get("noop_with_empty_axes", 0))}
    axes = attrs.get("axes")
    if given is not None and 0 in _shape(given):  # an empty axes tensor: none given
        given = None
    if given is not None and constant(lowering, given) is None:
        _step(lowering, op, "onnx_reduce", [out], [src, lowering.buffer_of(given, op)],
              params)
        return
    if given is not None:
        axes = constant(lowering, given).reshape(-1).tolist()
    if not axes and params["noop"]:
        _step(lowering, op, "copy", [out], [src], {})
        return
    rank = len(src.shape)
    params["axes"] = sorted(a % rank for a in axes) if axes else list(range(rank))
    _step(lowering, op, "onnx_reduce", [out], [src], params)


@lowers("ArgMax", "ArgMin", "CumSum", "CumProd", "Softmax", "LogSoftmax", "Hardmax",
        "LpNormalization")
def lower_axis(lowering, op) -> None:
    """Ops along one axis: [outer, len, inner] around it."""
    attrs = attributes(op)
    [src] = _ins(lowering, op, op.inputs[:1])
    [out] = _results(lowering, op)
    op_type = op.op_type.data
    runtime_axis = []
    if op_type in ("CumSum", "CumProd"):
        given = constant(lowering, op.inputs[1])
        if given is None:  # read at run time: the step gets the shape
            runtime_axis = [lowering.buffer_of(op.inputs[1], op)]
            given = np.zeros(1, np.int64)
        axis = int(given.reshape(-1)[0])
    else:
        axis = attrs["axis"]
    rank = max(len(src.shape), 1)
    axis %= rank
    shape = src.shape or (1,)
    params = {"op": op_type, "outer": int(np.prod(shape[:axis], dtype=np.int64)),
              "len": shape[axis], "inner": int(np.prod(shape[axis + 1:], dtype=np.int64))}
    if op_type == "LpNormalization":
        params["p"] = int(attrs.get("p", 2))
        if params["p"] not in (1, 2):
            raise _error(lowering, op, f"p={params['p']} is not supported (1 or 2)")
    if op_type in ("ArgMax", "ArgMin"):
        params["last"] = bool(attrs.get("select_last_index", 0))
    if op_type in ("CumSum", "CumProd"):
        params["shape"] = list(src.shape)
        params["exclusive"] = bool(attrs.get("exclusive", 0))
        params["reverse"] = bool(attrs.get("reverse", 0))
    if op_type in ("Softmax", "LogSoftmax", "Hardmax") and op.opset.value.data < 13:
        # opsets 1-12: the input is flattened to 2-D at `axis` (default 1)
        axis = attrs["axis"] % rank
        params.update(outer=int(np.prod(shape[:axis], dtype=np.int64)),
                      len=int(np.prod(shape[axis:], dtype=np.int64)), inner=1)
    _step(lowering, op, "onnx_axis", [out], [src, *runtime_axis], params)


@lowers("Trilu")
def lower_trilu(lowering, op) -> None:
    ins = _ins(lowering, op, op.inputs)
    [out] = _results(lowering, op)
    rows, cols = out.shape[-2:]
    _step(lowering, op, "onnx_trilu", [out], ins, {
        "upper": bool(attributes(op).get("upper", 1)), "rows": rows, "cols": cols})


@lowers("Range")
def lower_range(lowering, op) -> None:
    """start + i * delta; the limit only sets the output's (static) length."""
    start, _, delta = _ins(lowering, op, op.inputs)
    [out] = _results(lowering, op)
    _step(lowering, op, "onnx_range", [out], [start, delta], {})


@lowers("Tile")
def lower_tile(lowering, op) -> None:
    """out[i] = in[i mod shape] per axis: a broadcast copy over [reps, dim] pairs."""
    [src] = _ins(lowering, op, op.inputs[:1])
    [out] = _results(lowering, op)
    _step(lowering, op, "onnx_tile", [out], [src], {"shape": list(src.shape)})


@lowers("Split")
def lower_split(lowering, op) -> None:
    src = _ins(lowering, op, op.inputs[:1])[0]
    outs = _results(lowering, op)
    axis = attributes(op).get("axis", 0) % len(src.shape)
    st = strides(src.shape)
    at = 0
    for out in outs:
        lowering.strided_copy(op, out, src, out.shape, 0, strides(out.shape), at * st[axis],
                              st)
        at += out.shape[axis]


@lowers("Transpose")
def lower_transpose(lowering, op) -> None:
    """A strided copy (element types the dedicated path does not take: float16, int8...)."""
    [src] = _ins(lowering, op, op.inputs[:1])
    [out] = _results(lowering, op)
    rank = len(src.shape)
    perm = attributes(op).get("perm")
    perm = list(range(rank))[::-1] if perm is None else [int(p) % rank for p in perm]
    st = strides(src.shape)
    lowering.strided_copy(op, out, src, out.shape, 0, strides(out.shape), 0,
                          [st[p] for p in perm])


@lowers("Concat")
def lower_concat(lowering, op) -> None:
    """One strided copy per (non-empty) input into its place along the axis."""
    srcs = _ins(lowering, op, op.inputs)
    [out] = _results(lowering, op)
    axis = int(attributes(op)["axis"]) % len(out.shape)
    st = strides(out.shape)
    at = 0
    for src in srcs:
        if all(src.shape):
            lowering.strided_copy(op, out, src, src.shape, at * st[axis], st, 0,
                                  strides(src.shape))
        at += src.shape[axis]


@lowers("Slice")
def lower_slice(lowering, op) -> None:
    """Starts, ends, axes and steps must be constants (the output's static shape needs them
    anyway): a strided copy."""
    src = _ins(lowering, op, op.inputs[:1])[0]
    [out] = _results(lowering, op)
    attrs = attributes(op)
    given = operands(op)
    if op.opset.value.data < 10:
        starts, ends, axes = attrs["starts"], attrs["ends"], attrs.get("axes")
        steps = None
    else:
        values = [None if given.get(s) is None else constant(lowering, given[s])
                  for s in range(1, 5)]
        if any(given.get(s) is not None and v is None for s, v in zip(range(1, 5), values)):
            ins = [lowering.buffer_of(given[s], op) if s in given else None
                   for s in (1, 3, 4)]
            _step(lowering, op, "onnx_slice", [out], [src, *(b for b in ins if b)], {
                "shape": list(src.shape), "axes": ins[1] is not None,
                "steps": ins[2] is not None})
            return
        starts, ends, axes, steps = (None if v is None else v.reshape(-1).tolist()
                                     for v in values)
    rank = len(src.shape)
    axes = list(range(len(starts))) if axes is None else [a % rank for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    first = [0] * rank
    step = [1] * rank
    for a, s, e, k in zip(axes, starts, ends, steps):
        first[a] = slice(s, e, k).indices(src.shape[a])[0]
        step[a] = k
    st = strides(src.shape)
    lowering.strided_copy(op, out, src, out.shape, 0, strides(out.shape),
                          sum(f * s for f, s in zip(first, st)),
                          [s * k for s, k in zip(st, step)])


@lowers("TopK")
def lower_topk(lowering, op) -> None:
    """The k (the output's extent, static) largest or smallest along the axis, sorted
    (stable: ties by index); one scratch row of indices."""
    attrs = attributes(op)
    [src] = _ins(lowering, op, op.inputs[:1])
    values, indices = _results(lowering, op)
    if not attrs.get("sorted", 1):
        raise _error(lowering, op, "sorted=0 is not supported")
    axis = attrs.get("axis", -1) % len(src.shape)
    outer, n, inner = (int(np.prod(src.shape[:axis], dtype=np.int64)), src.shape[axis],
                       int(np.prod(src.shape[axis + 1:], dtype=np.int64)))
    scratch = lowering.new("arena", np.dtype(np.int64), (n,), "work")
    _step(lowering, op, "onnx_topk", [values, indices, scratch], [src], {
        "outer": outer, "len": n, "inner": inner, "k": values.shape[axis],
        "largest": bool(attrs.get("largest", 1))})


@lowers("OneHot")
def lower_onehot(lowering, op) -> None:
    """Depth is the output's extent along the axis (static); off/on values read at run
    time."""
    attrs = attributes(op)
    indices, _, values = _ins(lowering, op, op.inputs)
    [out] = _results(lowering, op)
    axis = attrs.get("axis", -1) % len(out.shape)
    _step(lowering, op, "onnx_onehot", [out], [indices, values], {
        "outer": int(np.prod(out.shape[:axis], dtype=np.int64)), "depth": out.shape[axis],
        "inner": int(np.prod(out.shape[axis + 1:], dtype=np.int64))})


@lowers("LayerNormalization", "RMSNormalization")
def lower_norm(lowering, op) -> None:
    """Normalization over the axes from `axis` on (any axis; the dedicated q35nn ops cover
    the last one), scale and bias broadcast to those axes; LayerNormalization's optional
    Mean and InvStdDev outputs too."""
    attrs = attributes(op)
    given = operands(op)
    ins = _ins(lowering, op, [given[s] for s in sorted(given)])
    x = ins[0]
    _, out_slots = op.slots()
    outs = _results(lowering, op)
    axis = attrs.get("axis", -1) % len(x.shape)
    tail = x.shape[axis:]
    _step(lowering, op, "onnx_norm", outs, ins, {
        "op": op.op_type.data, "rows": int(np.prod(x.shape[:axis], dtype=np.int64)),
        "len": int(np.prod(tail, dtype=np.int64)), "eps": float(attrs.get("epsilon", 1e-5)),
        "out_slots": out_slots,
        "strides": [broadcast_strides(b.shape, tail) for b in ins[1:]], "tail": list(tail)})


@lowers("NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss")
def lower_nll(lowering, op) -> None:
    """The loss of each (n, d...) position: -x[n, target, d...] (of the log-softmax over
    axis 1 for SoftmaxCrossEntropyLoss) times the target's weight, 0 where target is
    ignore_index; then none / sum / mean (a weighted mean: sum over sum of weights)."""
    attrs = attributes(op)
    given = operands(op)
    x, target = _ins(lowering, op, [given[0], given[1]])
    weight = _ins(lowering, op, [given[2]]) if 2 in given else []
    _, out_slots = op.slots()
    outs = _results(lowering, op)
    ignore = attrs.get("ignore_index")
    _step(lowering, op, "onnx_nll", outs, [x, target, *weight], {
        "softmax": op.op_type.data == "SoftmaxCrossEntropyLoss",
        "n": x.shape[0], "c": x.shape[1],
        "d": int(np.prod(x.shape[2:], dtype=np.int64)),
        "reduction": attrs.get("reduction", "mean"),
        "ignore": None if ignore is None else int(ignore), "out_slots": out_slots})


@lowers("ReverseSequence")
def lower_reverse_sequence(lowering, op) -> None:
    attrs = attributes(op)
    data, lens = _ins(lowering, op, op.inputs)
    [out] = _results(lowering, op)
    st = strides(data.shape)
    batch, time = attrs.get("batch_axis", 1), attrs.get("time_axis", 0)
    _step(lowering, op, "onnx_reverse_sequence", [out], [data, lens], {
        "batch_stride": st[batch], "batch": data.shape[batch], "time_stride": st[time],
        "time": data.shape[time]})


@lowers("Compress")
def lower_compress(lowering, op) -> None:
    """The slices along the axis (of the flattened data without one) whose condition is
    true; their count must be the output's static extent, else the run fails."""
    attrs = attributes(op)
    data, cond = _ins(lowering, op, op.inputs)
    [out] = _results(lowering, op)
    axis = attrs.get("axis")
    shape = data.shape if axis is not None else (data.size,)
    axis = 0 if axis is None else axis % len(shape)
    _step(lowering, op, "onnx_compress", [out], [data, cond], {
        "outer": int(np.prod(shape[:axis], dtype=np.int64)), "len": shape[axis],
        "inner": int(np.prod(shape[axis + 1:], dtype=np.int64)),
        "kept": out.shape[axis] if len(out.shape) else 1})
