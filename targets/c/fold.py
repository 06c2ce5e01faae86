"""C renderer of the step that targets/native/fold.py makes: `batch_matmul_strided`, a call
of runtime/q35rt_bmm.c's kernel with the operands' per-batch offsets and strides as static
tables and the scales (one float each, read at run time) or NULL."""

from __future__ import annotations

from q35c.targets.c.kernels import renders
from q35c.targets.c.printer import _int_array
from q35c.targets.native.program import Step


@renders("batch_matmul_strided", runtime="q35rt_bmm.c")
def render_batch_matmul_strided(printer, step: Step) -> str:
    q = step.params
    a, b, *scales = step.ins
    scales = iter(scales)
    args = {}
    for side in ("a", "b"):
        args[side] = ("NULL" if q[f"{side}_scale"] is None else
                      f"{printer.ptr(next(scales), True)} + {q[f'{side}_scale']}")
    tile = f"(float *)(void *){printer.ptr(step.outs[1])}" if len(step.outs) > 1 else "NULL"
    return (f"static const int64_t a_off[] = {_int_array(q['a_off'])}, "
            f"b_off[] = {_int_array(q['b_off'])};\n"
            f"q35_batch_matmul_strided_f32({printer.ptr(step.outs[0])}, "
            f"{printer.ptr(a, True)}, {printer.ptr(b, True)}, {len(q['a_off'])}, "
            f"a_off, {q['a_row']}, {q['a_col']}, {args['a']}, b_off, {q['b_row']}, "
            f"{q['b_col']}, {args['b']}, {q['m']}, {q['k']}, {q['n']}, {tile});")
