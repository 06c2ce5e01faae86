"""What q35c adds to xDSL's csl dialect: `@set_color_config` (routes, in layouts) and a
32-bit copy between two 16-bit arrays (`copy32`, in PE programs).

xDSL 0.74's csl dialect has no op for a PE's router configuration, and its scalar loads
and stores are memref ops of the array's element type, so q35c defines these here
(dialect `q35c_csl`) and prints them with its own printer context (printer.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import ArrayAttr, IndexType, IntAttr, IntegerType, MemRefType, StringAttr
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


@irdl_op_definition
class Copy32Op(IRDLOperation):
    """`@ptrcast([*]u32, &dst)[i] = @ptrcast([*]u32, &src)[j];`: one 32-bit load and one
    32-bit store, copying elements 2j, 2j+1 of the 16-bit array `src` to elements 2i,
    2i+1 of `dst` (the packed plans' pair-code look-up: both levels of a code at once)."""

    name = "q35c_csl.copy32"
    dst = operand_def(MemRefType)
    dst_index = operand_def(IndexType)
    src = operand_def(MemRefType)
    src_index = operand_def(IndexType)
    assembly_format = ("$dst `[` $dst_index `]` `,` $src `[` $src_index `]` attr-dict `:` "
                       "type($dst) `,` type($src)")

    def __init__(self, dst: SSAValue, dst_index: SSAValue, src: SSAValue,
                 src_index: SSAValue):
        super().__init__(operands=[dst, dst_index, src, src_index])

    def verify_(self) -> None:
        for v in (self.dst, self.src):
            elem = v.type.get_element_type()
            if getattr(elem, "bitwidth", None) != 16:
                raise VerifyException(f"copy32 reads and writes 16-bit arrays, not {elem}")


Q35cCsl = Dialect("q35c_csl", [SetColorConfigOp, Copy32Op])
