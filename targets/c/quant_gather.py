"""C renderer of the `qgather_f32` step (`quant3p5.gather`: rows of a Q3P5-packed table).

The kernel, `q35_qgather_f32` in runtime/q35rt_qgather.c, decodes each gathered row from
its column of the packed transpose (docs/format.md section 5: one contiguous payload row,
one meta row and three column words per table row); an index out of range fails the run
with the op's name, as `q35nn.gather` does.
"""

from __future__ import annotations

from q35c.compiler.codegen_names import c_string
from q35c.targets.c.kernels import renders
from q35c.targets.native.program import Step


@renders("qgather_f32", runtime="q35rt_qgather.c")
def render_qgather(printer, step: Step) -> str:
    table, idx = step.ins
    return (f"if (q35_qgather_f32({printer.ptr(step.outs[0])}, W + {table.offset}, "
            f"{printer.ptr(idx, True)}, {step.params['count']}) != 0)\n"
            f"    return {printer.prefix}_fail("
            f"{c_string(step.origin + ': index out of range')});")
