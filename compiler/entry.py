"""The entry function of a module and the names and shapes of its arguments and results.

One rule picks the function every consumer runs or compiles (the driver's `q35c run`, the
reference semantics, the C and Groq targets): the function named with `--entry`, else
`main`, else the module's only public function with a body.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, MemRefType, ModuleOp, StringAttr

from q35c.compiler.diagnostics import Q35cError

ENTRY_ATTR = "q35c.entry"
"""Module attribute naming the entry function chosen with `--entry` at compile time."""


class EntryError(Q35cError):
    """No function to run, or an argument whose shape cannot be known."""


def entry_function(module: ModuleOp, name: str | None = None) -> func.FuncOp:
    """The function to run: `name`, else the module's `q35c.entry` attribute (what the
    driver records for `--entry` when compiling), else `main`, else the module's only
    public function."""
    funcs = [op for op in module.ops if isinstance(op, func.FuncOp) and op.body.blocks]
    by_name = {f.sym_name.data: f for f in funcs}
    recorded = module.attributes.get(ENTRY_ATTR)
    if name is None and isinstance(recorded, StringAttr):
        name = recorded.data
    if name is not None:
        if name not in by_name:
            raise EntryError(f"no function @{name}; the module has {sorted(by_name)}")
        return by_name[name]
    if "main" in by_name:
        return by_name["main"]
    public = [f for f in funcs if f.sym_visibility is None or f.sym_visibility.data == "public"]
    if len(public) != 1:
        raise EntryError(
            f"cannot pick an entry point among {sorted(by_name)}: name one with --entry"
        )
    return public[0]


def argument_names(fn: func.FuncOp) -> list[str]:
    """Input names: the `q35c.name` argument attribute, else arg0, arg1, ..."""
    return _names(fn.arg_attrs, len(fn.args), "arg")


def result_names(fn: func.FuncOp) -> list[str]:
    """Output names: the `q35c.name` result attribute, else out0, out1, ..."""
    return _names(fn.res_attrs, len(fn.function_type.outputs.data), "out")


def _names(attrs, count: int, prefix: str) -> list[str]:
    names = [f"{prefix}{i}" for i in range(count)]
    if attrs is not None:
        for i, d in enumerate(attrs.data):
            name = d.data.get("q35c.name")
            if isinstance(name, StringAttr):
                names[i] = name.data
    return names


def argument_attr_strings(fn: func.FuncOp, key: str) -> list[str | None]:
    """The string attribute `key` (e.g. `q35c.intent`) of every argument, None where absent."""
    values: list[str | None] = [None] * len(fn.args)
    if fn.arg_attrs is not None:
        for i, d in enumerate(fn.arg_attrs.data):
            attr = d.data.get(key)
            if isinstance(attr, StringAttr):
                values[i] = attr.data
    return values


def memref_argument_shape(fn: func.FuncOp, index: int, scalars: Mapping[str, Any]
                          ) -> tuple[int, ...] | None:
    """The shape of memref argument `index`: its static extents, else the `q35c.dims`
    argument attribute (integer expressions over scalar argument names, such as "2*(P)",
    evaluated with `scalars`); None if it cannot be known without the array itself."""
    want = fn.args[index].type
    assert isinstance(want, MemRefType)
    shape = list(want.get_shape())
    if all(d >= 0 for d in shape):
        return tuple(shape)
    dims = fn.arg_attrs.data[index].data.get("q35c.dims") if fn.arg_attrs else None
    if not isinstance(dims, ArrayAttr):
        return None
    try:
        return tuple(_shape_expression(d.data, scalars) for d in dims.data)
    except KeyError:
        return None


def _shape_expression(text: str, scalars: Mapping[str, Any]) -> int:
    """Evaluate `+ - * /` (truncating), parentheses, integers and names."""

    def value(node) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            return int(np.asarray(scalars[node.id]))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.BinOp):
            a, b = value(node.left), value(node.right)
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if isinstance(node.op, ast.Div) and b:
                return abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
        raise EntryError(f"cannot evaluate the shape expression '{text}'")

    return max(0, value(ast.parse(text, mode="eval").body))
