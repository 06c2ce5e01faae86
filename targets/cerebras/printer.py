"""Print the CSL project: xDSL's CSL printer, plus q35c's `set_color_config` and `copy32`,
split into one file per `csl.module` (the printer writes one stream with `// FILE:`
markers)."""

from __future__ import annotations

import io
from dataclasses import dataclass

from xdsl.backend.csl.print_csl import CslPrintContext, print_to_csl
from xdsl.dialects import csl
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from q35c.targets.cerebras.ops import Copy32Op, SetColorConfigOp


@dataclass
class _Context(CslPrintContext):
    """xDSL's printer context, with the ops q35c adds and colors as `@get_color(N)`."""

    def print_op(self, op: Operation) -> None:
        if isinstance(op, SetColorConfigOp):
            x, y = (self._get_variable_name_for(v) for v in (op.x_coord, op.y_coord))
            rx = ", ".join(d.data for d in op.rx)
            tx = ", ".join(d.data for d in op.tx)
            self.print(f"@set_color_config({x}, {y}, @get_color({op.color.data}), "
                       f".{{ .routes = .{{ .rx = .{{ {rx} }}, .tx = .{{ {tx} }} }} }});")
            return
        if isinstance(op, Copy32Op):
            d, i, s, j = (self._get_variable_name_for(v)
                          for v in (op.dst, op.dst_index, op.src, op.src_index))
            self.print(f"@ptrcast([*]u32, &{d})[{i}] = @ptrcast([*]u32, &{s})[{j}];")
            return
        if isinstance(op, csl.GetFabDsdOp):
            kind = op.result.type.data.value
            queue = "input" if kind == "fabin_dsd" else "output"
            self.print(f"{self._var_use(op.result)} = @get_dsd({kind}, .{{ "
                       f".extent = {self._get_variable_name_for(op.sizes[0])}, "
                       f".{queue}_queue = @get_{queue}_queue({op.queue_id.value.data}), "
                       f".fabric_color = @get_color({op.fabric_color.value.data}) }});")
            return
        super().print_op(op)


def csl_files(module: ModuleOp) -> dict[str, str]:
    """File name -> CSL text, one per csl.module (`<sym_name>.csl`)."""
    out = io.StringIO()
    print_to_csl(module, out, _Context)
    files: dict[str, str] = {}
    name = None
    for line in out.getvalue().splitlines(keepends=True):
        if line.startswith("// FILE: "):
            name = line.removeprefix("// FILE: ").strip() + ".csl"
            files[name] = ""
        elif line.strip() == "// -----":
            continue
        elif name is not None:
            files[name] += line
    return files
