"""What q35c adds to xDSL's csl dialect for its layouts: `@set_color_config` (routes).

xDSL 0.74's csl dialect has no op for a PE's router configuration, so q35c defines it here
(dialect `q35c_csl`) and prints it with its own printer context (printer.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import ArrayAttr, IntAttr, IntegerType, StringAttr
from xdsl.ir import Dialect, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    prop_def,
)
from xdsl.utils.exceptions import VerifyException

DIRECTIONS = ("RAMP", "NORTH", "SOUTH", "EAST", "WEST")


@irdl_op_definition
class SetColorConfigOp(IRDLOperation):
    """`@set_color_config(x, y, color, .{ .routes = .{ .rx = .{..}, .tx = .{..} } })`:
    the router of PE (x, y) takes `color` from the `rx` directions to the `tx` ones."""

    name = "q35c_csl.set_color_config"
    x_coord = operand_def(IntegerType)
    y_coord = operand_def(IntegerType)
    color = prop_def(IntAttr)
    rx = prop_def(ArrayAttr[StringAttr])
    tx = prop_def(ArrayAttr[StringAttr])
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$x_coord `,` $y_coord attr-dict `:` type($x_coord) `,` type($y_coord)"

    def __init__(self, x: SSAValue, y: SSAValue, color: int, rx: Sequence[str],
                 tx: Sequence[str]):
        super().__init__(operands=[x, y], properties={
            "color": IntAttr(color), "rx": ArrayAttr(StringAttr(d) for d in rx),
            "tx": ArrayAttr(StringAttr(d) for d in tx)})

    def verify_(self) -> None:
        for d in (*self.rx, *self.tx):
            if d.data not in DIRECTIONS:
                raise VerifyException(f"route direction {d.data} is not one of {DIRECTIONS}")


Q35cCsl = Dialect("q35c_csl", [SetColorConfigOp])
