"""The discardable attributes q35c puts on ops, and where an op comes from in the source.

Frontends set them, passes carry them over rewrites (`copy_origin`), and errors and reports
read them back (`origin_of`, `source_line`). They live here, below frontends, passes,
semantics and targets, so that every layer can use them without importing another.
"""

from __future__ import annotations

from xdsl.dialects.builtin import IntegerAttr, StringAttr
from xdsl.ir import Operation

from q35c.compiler.codegen_names import plain_text

ONNX_NODE_ATTR = "q35c.onnx_node"
"""Set by the ONNX importer on the matmuls it creates: the ONNX node's name."""
SOURCE_LINE_ATTR = "q35c.source_line"
"""Set by the Fortran frontend (on functions, and on ops where it knows the line)."""
SOURCE_FILE_ATTR = "q35c.source_file"
"""Set by the Fortran frontend on functions from a file other than the input (a module of a
further input or of the search path): the file their `q35c.source_line`s are lines of."""
SOURCE_ATTR = "q35c.source"
"""A weight dequantized from a pre-quantized input format: which one (set by frontends)."""
ONNX_NAME_ATTR = "q35c.onnx_name"
"""A weight the ONNX importer stores under a readable name (frontends/onnx/names.py): the
ONNX value's own name, for messages."""

ORIGIN_ATTRS = (ONNX_NODE_ATTR, SOURCE_LINE_ATTR)


def copy_origin(src: Operation, *new_ops: Operation) -> None:
    """Carry `src`'s source location (`q35c.onnx_node`, `q35c.source_line`) over to the ops
    a rewrite creates in its place, so that reports and errors still name the source."""
    for name in ORIGIN_ATTRS:
        if name in src.attributes:
            for new in new_ops:
                new.attributes.setdefault(name, src.attributes[name])


def source_line(op: Operation) -> tuple[Operation | None, int] | None:
    """(enclosing function, line) of `op` in a source with lines (Fortran): the op's own
    line, else (a pure op inside a routine with a line) the line of the next op in its block
    that has one (the statement-level op of its statement: a store, call or loop), else the
    line of the nearest enclosing op that has one (a loop, the routine); None when the op
    does not come from a source with lines."""
    chain: list[Operation] = []
    current: Operation | None = op
    while current is not None:
        chain.append(current)
        current = current.parent_op()
    fn = next((o for o in chain if "sym_name" in o.properties), None)
    if fn is not None and not isinstance(fn.attributes.get(SOURCE_LINE_ATTR), IntegerAttr):
        return None  # not from a source with lines (ONNX, .mlir): no search
    for level in chain:
        following: Operation | None = level
        while following is not None:
            line = following.attributes.get(SOURCE_LINE_ATTR)
            if isinstance(line, IntegerAttr):
                return fn, line.value.data
            following = following.next_op if level is not fn else None
    return None


def source_file(fn: Operation | None) -> str | None:
    """The file of function `fn`'s source lines when it is not the input (SOURCE_FILE_ATTR),
    else None."""
    name = fn.attributes.get(SOURCE_FILE_ATTR) if fn is not None else None
    return name.data if isinstance(name, StringAttr) else None


def origin_of(op: Operation) -> str | None:
    """Where `op` comes from in the user's source: `ONNX node '/x/MatMul'`, or for Fortran
    `in 'routine' at line 12` (see `source_line`); None when nothing is known."""
    node = op.attributes.get(ONNX_NODE_ATTR)
    if isinstance(node, StringAttr):
        return f"ONNX node '{node.data}'"
    located = source_line(op)
    if located is None:
        return None
    fn, line = located
    where = f"in {function_name(fn)} at line " if fn is not None else "line "
    return where + str(line)


def function_name(op: Operation) -> str:
    """`'name'` of a function-like op (its `sym_name`), else the op's name."""
    name = op.attributes.get("sym_name") or getattr(op, "sym_name", None)
    return f"'{name.data}'" if name is not None and hasattr(name, "data") else op.name


def op_key(op: Operation) -> str:
    """How a target's supported-op check names `op`: its op name, and for the generic ONNX
    op its op type too (`q35nn.onnx_node "Mod"`), since targets lower it per op type."""
    if op.name == "q35nn.onnx_node":
        return f'{op.name} "{plain_text(op.op_type.data)}"'
    return op.name
