"""`arith`: constants, elementwise arithmetic on tensors and scalars, comparisons."""

from __future__ import annotations

import numpy as np
from xdsl.dialects import arith

from q35c.compiler.tensors import constant_value

from .core import InterpreterError, elementwise, impl, located_error, register_elementwise


@impl(arith.ConstantOp)
def _constant(interp, op: arith.ConstantOp, args):
    return (constant_value(op.value, op.result.type),)


def _int_trunc_div(a, b):
    """a / b rounded toward zero, in a's type (INT_MIN / -1 wraps). Computed in Python
    integers: `np.abs` of INT_MIN is INT_MIN, which made 1 / INT_MIN give 1."""
    a, b = np.asarray(a), np.asarray(b)
    bits = a.dtype.itemsize * 8
    if bits < 64:  # exact in int64, vectorized
        wa, wb = a.astype(np.int64), b.astype(np.int64)
        q = np.abs(wa) // np.abs(wb)
        return np.where((wa < 0) != (wb < 0), -q, q).astype(a.dtype)
    flat = [_trunc_div_wrapped(int(x), int(y), bits)
            for x, y in zip(*(v.reshape(-1) for v in np.broadcast_arrays(a, b)))]
    return np.array(flat, dtype=a.dtype).reshape(np.broadcast_shapes(a.shape, b.shape))


def _trunc_div_wrapped(x: int, y: int, bits: int) -> int:
    q = abs(x) // abs(y)
    q = -q if (x < 0) != (y < 0) else q
    return (q + 2 ** (bits - 1)) % 2**bits - 2 ** (bits - 1)


def _unsigned(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(f"uint{a.dtype.itemsize * 8}")


def _shift_left(a, b):
    a, b = np.asarray(a), np.asarray(b)
    bits = a.dtype.itemsize * 8
    out = _unsigned(a) << np.minimum(b, bits - 1).astype(_unsigned(a).dtype)
    return np.where(b >= bits, 0, out).astype(_unsigned(a).dtype).astype(a.dtype)


def _shift_right_unsigned(a, b):
    a, b = np.asarray(a), np.asarray(b)
    bits = a.dtype.itemsize * 8
    out = _unsigned(a) >> np.minimum(b, bits - 1).astype(_unsigned(a).dtype)
    return np.where(b >= bits, 0, out).astype(_unsigned(a).dtype).astype(a.dtype)


register_elementwise({
    arith.AddfOp: np.add, arith.SubfOp: np.subtract, arith.MulfOp: np.multiply,
    arith.DivfOp: np.divide, arith.NegfOp: np.negative,
    arith.MaximumfOp: np.maximum, arith.MinimumfOp: np.minimum,
    arith.AddiOp: np.add, arith.SubiOp: np.subtract, arith.MuliOp: np.multiply,
    arith.SIToFPOp: lambda a: a, arith.FPToSIOp: np.trunc,
    arith.ExtFOp: lambda a: a, arith.TruncFOp: lambda a: a,
    arith.ExtSIOp: lambda a: a, arith.TruncIOp: lambda a: a,
    arith.SelectOp: np.where,
    arith.AndIOp: np.bitwise_and, arith.OrIOp: np.bitwise_or,
    arith.XOrIOp: np.bitwise_xor, arith.ShLIOp: _shift_left,
    arith.ShRUIOp: _shift_right_unsigned, arith.ShRSIOp: np.right_shift,
    arith.MaxSIOp: np.maximum, arith.MinSIOp: np.minimum, arith.IndexCastOp: lambda a: a,
})

_DIVIDE = {arith.DivSIOp: ("division", elementwise(_int_trunc_div)),
           arith.RemSIOp: ("remainder", elementwise(np.fmod))}


@impl(*_DIVIDE)
def _divide(interp, op, args):
    """Signed integer division (truncating) and remainder (sign of the dividend). A zero
    divisor is undefined behaviour in `arith` (and an error in Fortran): it is reported at
    the op's source line instead of giving a value."""
    what, run = _DIVIDE[type(op)]
    if np.any(np.asarray(args[1]) == 0):
        raise located_error(op, f"integer {what} by zero")
    return run(interp, op, args)


_CMPF = {1: np.equal, 2: np.greater, 3: np.greater_equal, 4: np.less, 5: np.less_equal,
         6: np.not_equal, 13: np.not_equal}


@impl(arith.CmpfOp)
def _cmpf(interp, op: arith.CmpfOp, args):
    pred = op.predicate.value.data
    if pred not in _CMPF:
        raise InterpreterError(f"arith.cmpf predicate {pred} is not supported")
    return (_CMPF[pred](*args),)


_CMPI = {0: np.equal, 1: np.not_equal, 2: np.less, 3: np.less_equal, 4: np.greater,
         5: np.greater_equal}


@impl(arith.CmpiOp)
def _cmpi(interp, op: arith.CmpiOp, args):
    pred = op.predicate.value.data
    if pred not in _CMPI:
        raise InterpreterError(f"arith.cmpi predicate {pred} is not supported")
    return (_CMPI[pred](*args),)
