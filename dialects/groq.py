"""The `groq` dialect: scheduled TSP instructions on named functional units.

One op per instruction kind of the Groq target (docs/groq.md). After scheduling every op
carries, as builtin attributes, its functional unit (`unit`, e.g. "MEM_W12", "VXM",
"MXM_E1"), its ICU queue, its issue cycle and duration, and its operands' stream ids,
directions and MEM addresses. Ops have no SSA operands or results: data moves on streams,
at the positions and cycles the attributes say, exactly as in program.json. Like the other
q35c dialects, only builtin attributes are used, so a dump is plain generic MLIR.

`program_module(doc)` turns a program.json document into a module of these ops (the
`program.mlir` the target writes).
"""

from __future__ import annotations

from typing import ClassVar

from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    i64,
)
from xdsl.ir import Attribute, Dialect
from xdsl.irdl import IRDLOperation, attr_def, irdl_op_definition
from xdsl.utils.exceptions import VerifyException


class _Instruction(IRDLOperation):
    """Common attributes: where and when the instruction issues."""

    unit = attr_def(StringAttr)
    queue = attr_def(StringAttr)
    cycle = attr_def(IntegerAttr)
    cycles = attr_def(IntegerAttr)
    chip = attr_def(IntegerAttr)
    UNITS: ClassVar[tuple[str, ...]] = ()

    def verify_(self) -> None:
        if self.cycle.value.data < 0 or self.cycles.value.data < 1:
            raise VerifyException(f"{self.name}: bad issue cycle or duration")
        if self.UNITS and not self.unit.data.startswith(self.UNITS):
            raise VerifyException(f"{self.name} cannot issue on {self.unit.data}")


@irdl_op_definition
class ReadOp(_Instruction):
    """MEM Read: the vector at `addr` of slice `unit` onto a stream (`out`)."""

    name = "groq.read"
    UNITS: ClassVar[tuple[str, ...]] = ("MEM_",)


@irdl_op_definition
class WriteOp(_Instruction):
    """MEM Write: the vector on a stream (`in`) to `addr` of slice `unit`."""

    name = "groq.write"
    UNITS: ClassVar[tuple[str, ...]] = ("MEM_",)


@irdl_op_definition
class UnpackOp(_Instruction):
    """VXM: 7 packed Q3P5 byte vectors -> 16 int8 level vectors, lane-locally."""

    name = "groq.unpack"
    UNITS: ClassVar[tuple[str, ...]] = ("VXM",)


@irdl_op_definition
class InstallOp(_Instruction):
    """MXM IW: 16 int8 level vectors -> 16 rows of a plane's weight buffer."""

    name = "groq.install"
    UNITS: ClassVar[tuple[str, ...]] = ("MXM_",)


@irdl_op_definition
class MatmulPassOp(_Instruction):
    """MXM ABC/ACC: an int8 activation vector times rows [lo, hi) -> int32 (4 streams)."""

    name = "groq.matmul_pass"
    UNITS: ClassVar[tuple[str, ...]] = ("MXM_",)


@irdl_op_definition
class MacroOp(_Instruction):
    """A VXM/SXM macro instruction (graph op, group sums or rescale) over MEM buffers."""

    name = "groq.macro"
    UNITS: ClassVar[tuple[str, ...]] = ("VXM", "SXM_")


@irdl_op_definition
class SendOp(_Instruction):
    """C2C Send of a whole MEM buffer to chip `to` over link `link` (multi-chip programs)."""

    name = "groq.send"
    UNITS: ClassVar[tuple[str, ...]] = ("C2C",)


@irdl_op_definition
class ReceiveOp(_Instruction):
    """C2C Receive (the peer of a send, `c2c_latency_cycles` later) into a MEM buffer."""

    name = "groq.receive"
    UNITS: ClassVar[tuple[str, ...]] = ("C2C",)


OPS = {"read": ReadOp, "write": WriteOp, "unpack": UnpackOp, "install": InstallOp,
       "matmul_pass": MatmulPassOp, "send": SendOp, "receive": ReceiveOp}

Groq = Dialect("groq", [ReadOp, WriteOp, UnpackOp, InstallOp, MatmulPassOp, MacroOp, SendOp,
                        ReceiveOp], [])


def _attr(value) -> Attribute:
    if isinstance(value, bool):
        return IntegerAttr(int(value), i64)
    if isinstance(value, int):
        return IntegerAttr(value, i64)
    if isinstance(value, str):
        return StringAttr(value)
    if value is None:
        return StringAttr("")
    if isinstance(value, dict):
        return DictionaryAttr({k: _attr(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return ArrayAttr([_attr(v) for v in value])
    raise TypeError(f"cannot encode {value!r}")


def program_module(doc: dict) -> ModuleOp:
    """The program's instructions as `groq` ops, in issue order."""
    ops = []
    for ins in sorted(doc["instructions"], key=lambda i: (i["cycle"], i["id"])):
        cls = OPS.get(ins["op"], MacroOp)
        attrs = {k: _attr(v) for k, v in ins.items()}
        if cls is MacroOp:
            attrs["kind"] = StringAttr(ins["op"])
        ops.append(cls.create(attributes=attrs))
    module = ModuleOp(ops)
    module.attributes["groq.schema"] = StringAttr(doc["schema"])
    module.attributes["groq.cycles"] = IntegerAttr(doc["cycles"], i64)
    return module
