"""`func`: calls (the entry function itself is run by the engine)."""

from __future__ import annotations

from xdsl.dialects import func

from .core import impl


@impl(func.CallOp)
def _call(interp, op: func.CallOp, args):
    callee = interp.function(op.callee.root_reference.data)
    return interp.call(callee, list(args))
