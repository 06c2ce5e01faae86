"""Export q35c's own dialects to IRDL text that upstream `mlir-opt --irdl-file=` loads.

xDSL's `pyrdl_to_irdl` turns every constraint into `irdl.any` and types into attributes; this
exporter keeps what upstream can check: base types and attribute kinds of operands, results,
attributes and type parameters, variadicity, and references between our own types.
Constraints it cannot express (element types, shapes) become `irdl.any`; those are checked by
q35c's own verifiers before any dump is written.
"""

from __future__ import annotations

from collections.abc import Iterable

from xdsl.dialects.builtin import (
    ArrayAttr,
    ArrayOfConstraint,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
)
from xdsl.ir import Dialect, ParametrizedAttribute, TypeAttribute
from xdsl.irdl import IRDLOperation, OptionalDef, VariadicDef
from xdsl.irdl.constraints import (
    AnyOf,
    BaseAttr,
    ParamAttrConstraint,
    RangeLengthConstraint,
    RangeOf,
    SingleOf,
)

_BUILTIN_NAMES: dict[type, str] = {
    TensorType: "!builtin.tensor",
    IntegerAttr: "#builtin.integer",
    FloatAttr: "#builtin.float",
    StringAttr: "#builtin.string",
    ArrayAttr: "#builtin.array",
}


class _Body:
    """Collects the SSA constraint lines of one irdl.type / irdl.operation body."""

    def __init__(self, dialect_name: str, own: dict[type, str]):
        self.dialect_name = dialect_name
        self.own = own
        self.lines: list[str] = []

    def _emit(self, rhs: str) -> str:
        name = f"%{len(self.lines)}"
        self.lines.append(f"{name} = {rhs}")
        return name

    def constraint(self, constr: object) -> str:
        if isinstance(constr, RangeLengthConstraint):
            return self.constraint(constr.constraint)
        if isinstance(constr, (SingleOf, RangeOf)):
            return self.constraint(constr.constr)
        if isinstance(constr, ArrayOfConstraint):
            return self._base(ArrayAttr)
        if isinstance(constr, BaseAttr):
            return self._base(constr.attr)
        if isinstance(constr, ParamAttrConstraint):
            return self._base(constr.base_attr)
        if isinstance(constr, AnyOf):
            names = [self.constraint(c) for c in constr.attr_constrs]
            return self._emit(f"irdl.any_of({', '.join(names)})")
        return self._emit("irdl.any")

    def _base(self, attr: type) -> str:
        if attr in self.own:
            return self._emit(f"irdl.base @{self.dialect_name}::@{self.own[attr]}")
        if attr in _BUILTIN_NAMES:
            return self._emit(f'irdl.base "{_BUILTIN_NAMES[attr]}"')
        return self._emit("irdl.any")


def _variadicity(field_def: object) -> str:
    if isinstance(field_def, VariadicDef):
        return "variadic "
    if isinstance(field_def, OptionalDef):
        return "optional "
    return ""


def _short(name: str) -> str:
    return name.split(".", 1)[1]


def _attribute_lines(attr: type[ParametrizedAttribute], body: _Body) -> list[str]:
    kind = "type" if issubclass(attr, TypeAttribute) else "attribute"
    params = [f"{pname}: {body.constraint(pdef.constr)}"
              for pname, pdef in attr.get_irdl_definition().parameters]
    inner = [*body.lines, f"irdl.parameters({', '.join(params)})"]
    return [f"irdl.{kind} @{_short(attr.name)} {{", *(f"  {line}" for line in inner), "}"]


def _operation_lines(op: type[IRDLOperation], body: _Body) -> list[str]:
    op_def = op.get_irdl_definition()
    sections: list[str] = []
    for keyword, fields in (("operands", op_def.operands), ("results", op_def.results)):
        if fields:
            items = [f"{fname}: {_variadicity(fdef)}{body.constraint(fdef.constr)}"
                     for fname, fdef in fields]
            sections.append(f"irdl.{keyword}({', '.join(items)})")
    # IRDL has no optional attributes (mlir-opt would require them); an undeclared
    # attribute is accepted as a discardable one, so optional ones are left out
    attributes = {name: adef for name, adef in {**op_def.attributes,
                                                **op_def.properties}.items()
                  if not isinstance(adef, OptionalDef)}
    if attributes:
        items = [f'"{aname}" = {body.constraint(adef.constr)}'
                 for aname, adef in sorted(attributes.items())]
        sections.append(f"irdl.attributes {{{', '.join(items)}}}")
    inner = [*body.lines, *sections]
    return [f"irdl.operation @{_short(op_def.name)} {{", *(f"  {line}" for line in inner), "}"]


def dialect_to_irdl(dialect: Dialect) -> str:
    """One `irdl.dialect` block for `dialect`."""
    own = {attr: _short(attr.name) for attr in dialect.attributes}
    lines: list[str] = []
    for attr in dialect.attributes:
        assert issubclass(attr, ParametrizedAttribute)
        lines += _attribute_lines(attr, _Body(dialect.name, own))
    for op in dialect.operations:
        assert issubclass(op, IRDLOperation)
        lines += _operation_lines(op, _Body(dialect.name, own))
    return "\n".join([f"irdl.dialect @{dialect.name} {{", *(f"  {line}" for line in lines), "}"])


def dialects_to_irdl(dialects: Iterable[Dialect]) -> str:
    """A whole IRDL file (a module of dialect blocks) for `mlir-opt --irdl-file=`."""
    blocks = [dialect_to_irdl(d) for d in dialects]
    return "builtin.module {\n" + "\n".join(
        "  " + line for block in blocks for line in block.splitlines()
    ) + "\n}\n"
