"""`scf`: structured loops and conditionals (the Fortran frontend's control flow).

Every loop iteration runs a region, which the engine counts against its step budget, so a
loop that does not end stops with a located error instead of hanging.
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects import scf

from .core import impl


@impl(scf.ForOp)
def _scf_for(interp, op: scf.ForOp, args):
    lb, ub, step, *carried = args
    for iv in range(int(lb), int(ub), int(step)):
        carried = list(interp.run_region(op.body, [np.int64(iv), *carried]))
    return tuple(carried)


@impl(scf.IfOp)
def _scf_if(interp, op: scf.IfOp, args):
    region = op.true_region if bool(args[0]) else op.false_region
    if not region.blocks:
        return ()
    return interp.run_region(region, [])


@impl(scf.WhileOp)
def _scf_while(interp, op: scf.WhileOp, args):
    values = list(args)
    while True:
        cond, *values = interp.run_region(op.before_region, values)
        if not bool(cond):
            return tuple(values)
        values = list(interp.run_region(op.after_region, values))
