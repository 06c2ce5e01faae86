"""`linalg` on tensors: matmul, fill, transpose, broadcast and single-op reductions."""

from __future__ import annotations

import numpy as np
from xdsl.dialects import arith
from xdsl.dialects.linalg import ops as linalg

from .core import InterpreterError, f32, impl
from .numerics import matmul_f64


@impl(linalg.MatmulOp)
def _linalg_matmul(interp, op: linalg.MatmulOp, args):
    a, b, acc = args
    return (f32(acc.astype(np.float64) + matmul_f64(a, b)),)


@impl(linalg.FillOp)
def _linalg_fill(interp, op: linalg.FillOp, args):
    scalar, out = args
    return (np.full_like(out, scalar),)


@impl(linalg.TransposeOp)
def _linalg_transpose(interp, op: linalg.TransposeOp, args):
    perm = tuple(op.permutation.get_values())
    return (np.ascontiguousarray(np.transpose(args[0], perm)),)


@impl(linalg.BroadcastOp)
def _linalg_broadcast(interp, op: linalg.BroadcastOp, args):
    source, init = args
    added = tuple(op.dimensions.get_values())
    expanded = np.expand_dims(source, added)
    return (np.broadcast_to(expanded, init.shape).astype(init.dtype),)


_REDUCERS = {arith.AddfOp: np.add, arith.MulfOp: np.multiply,
             arith.MaximumfOp: np.maximum, arith.MinimumfOp: np.minimum,
             arith.AddiOp: np.add, arith.MaxSIOp: np.maximum, arith.MinSIOp: np.minimum}


@impl(linalg.ReduceOp)
def _linalg_reduce(interp, op: linalg.ReduceOp, args):
    """A reduction whose body is one combiner op; float sums and products run in float64,
    sequentially in row-major order over the reduced axes."""
    source, init = args
    body = list(op.region.block.ops)
    combiner = _REDUCERS.get(type(body[0])) if len(body) == 2 else None
    if combiner is None:
        raise InterpreterError("linalg.reduce: only single-op add/mul/max/min bodies are supported")
    axes = tuple(op.dimensions.get_values())
    wide = source.astype(np.float64) if np.issubdtype(source.dtype, np.floating) else source
    # The reduced axes last, flattened in row-major order: [kept..., reduced].
    kept = [d for d in range(wide.ndim) if d not in axes]
    flat = np.transpose(wide, kept + list(axes)).reshape(*(wide.shape[d] for d in kept), -1)
    if flat.shape[-1] == 0:  # nothing to combine: the result is the init (max has no identity)
        return (np.array(init, dtype=init.dtype, copy=True),)
    reduced = combiner.accumulate(flat, axis=-1)[..., -1]  # x0 op x1 op ... in order
    reduced = reduced.astype(init.dtype)
    return (combiner(init, reduced).astype(init.dtype),)
