"""Lowering of `q35nn.onnx_node` (the generic ONNX op) for native targets, one rule per ONNX
op type.

Rules live in family modules next to this one (`FAMILIES`, imported on first use), each a
function `rule(lowering, op)` registered with `@lowers("OpType", ...)` that appends the
`Step`s computing the node with the semantics of `q35c.semantics` (onnx's reference
implementation at the node's opset). A rule that cannot lower a particular node (an
attribute value or dtype it does not handle) raises `lowering.error(...)` with one line.

The C target accepts `q35nn.onnx_node "T"` for exactly the op types registered here
(`accepted_keys`), so the driver's up-front check names every op type that would fail.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from q35c.compiler.codegen_names import plain_text

FAMILIES: tuple[str, ...] = ("onnx_tensor", "onnx_cnn", "onnx_attention", "onnx_quant",
                             "onnx_rnn", "onnx_misc", "onnx_extra", "onnx_control")
"""Modules of `q35c.targets.native` that register rules, imported by `rules()`."""

Rule = Callable[..., None]
_RULES: dict[str, Rule] = {}
_loaded = False


def lowers(*op_types: str) -> Callable[[Rule], Rule]:
    """Register the decorated function as the rule for each of `op_types`."""
    def register(rule: Rule) -> Rule:
        for op_type in op_types:
            if op_type in _RULES:
                raise ValueError(f"two native rules for ONNX op type {op_type}")
            _RULES[op_type] = rule
        return rule
    return register


def rules() -> dict[str, Rule]:
    """Every registered rule by ONNX op type (the family modules imported once)."""
    global _loaded
    if not _loaded:
        for family in FAMILIES:
            importlib.import_module(f"q35c.targets.native.{family}")
        _loaded = True
    return _RULES


def accepted_keys() -> frozenset[str]:
    """The `ir_attrs.op_key`s of the generic ONNX ops native targets lower."""
    return frozenset(f'q35nn.onnx_node "{t}"' for t in rules())


def lower_onnx_node(lowering, op) -> None:
    """Append the steps for `op` (a `q35nn.onnx_node`) to `lowering`."""
    op_type = op.op_type.data
    rule = rules().get(op_type)
    if rule is None:
        raise lowering.error(f'q35nn.onnx_node "{plain_text(op_type)}" is not supported')
    rule(lowering, op)
