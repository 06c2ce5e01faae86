"""Readable weight names for exporters' generated ones (`val_76`, `onnx::MatMul_718`).

torch's dynamo exporter stores each `nn.Linear` weight transposed, as a folded initializer
named `val_N` (N depends on the graph: the same weight is `val_76` in the prefill graph and
`val_84` in the decode graph); the legacy exporter names it `onnx::MatMul_N`. The torch
parameter is only in metadata: the value's `pkg.onnxscript.optimizer.folded_from`
(`"['model.model.layers.0.self_attn.q_proj.weight']"`), the consuming node's
`pkg.torch.onnx.name_scopes` (`"[..., 'model.model.layers.0.self_attn.q_proj', 'linear']"`)
or, from the legacy exporter, the node's name (`/model/model/layers.0/self_attn/q_proj/MatMul`).
`readable_names` derives a name from these for every value whose own name is generated, so
that `--keep-float`, `group-for`, calibration statistics and reports can address
`q_proj` against `v_proj` on a real export, and the same weight has the same name in every
graph of one model.

The rules, first that applies, for a value named like `GENERATED`:

1. its metadata (`value_info` or the initializer itself) says it was folded from exactly one
   value whose name is not generated: that name;
2. it is the output of a 2-D Transpose of a value with a readable name `W`: `W.T`;
3. every node reading it is a MatMul (as input B) or Gemm (input B: `.weight`, C: `.bias`),
   and all of them lie in one module: `<module>.weight` (the innermost module of the node's
   `pkg.torch.onnx.name_scopes`, or the path of a `/a/b/Op` node name, `/` as `.`).

A derived name that another value already has, or that several values would get, becomes
`<name>.1`, `<name>.2`... in graph order (initializers first, then node outputs), skipping
every name in use; so the map is deterministic and its names are unique among all the
graph's value names. Metadata is untrusted like every name in a model: names keep every
character they had (printers escape them, codegen_names.py); overlong metadata and names are
ignored. The importer keeps the ONNX name on the weight op (`q35c.onnx_name`) for messages.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

import onnx

GENERATED = re.compile(r"(?:val|_v|v|const(?:ant)?|initializer|onnx::\w+?)_?\d+")
"""Value names exporters generate (torch dynamo `val_12`, legacy `onnx::MatMul_718`, ...)."""
FOLDED_FROM = "pkg.onnxscript.optimizer.folded_from"
NAME_SCOPES = "pkg.torch.onnx.name_scopes"
MAX_METADATA = 4096
"""Characters of a metadata value parsed at most (a longer one is ignored)."""
MAX_NAME = 512
"""Characters of a derived name at most (a longer one is ignored)."""


def generated(name: str) -> bool:
    return GENERATED.fullmatch(name) is not None


def _string_list(text: str) -> list[str] | None:
    """The Python/JSON list of strings `text` holds, or None (malformed, too long)."""
    if len(text) > MAX_METADATA:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _usable(name: str | None) -> str | None:
    if name and len(name) <= MAX_NAME and not generated(name):
        return name
    return None


def _metadata(props: Iterable[onnx.StringStringEntryProto], key: str) -> str | None:
    return next((p.value for p in props if p.key == key), None)


def _module_of(node: onnx.NodeProto) -> str | None:
    """The module a node lies in: the innermost scope of its name_scopes, else the path of
    a `/a/b/Op`-style node name."""
    scopes = _metadata(node.metadata_props, NAME_SCOPES)
    if scopes is not None:
        parts = _string_list(scopes)
        return parts[-2] if parts and len(parts) >= 2 and parts[-2] else None
    if node.name.startswith("/") and node.name.count("/") >= 2:
        path = node.name[1:].rsplit("/", 1)[0]
        return path.replace("/", ".") if path else None
    return None


def _from_consumers(name: str, users: list[tuple[onnx.NodeProto, int]]) -> str | None:
    found: set[str] = set()
    for node, index in users:
        if node.domain not in ("", "ai.onnx") or (node.op_type, index) not in (
                ("MatMul", 1), ("Gemm", 1), ("Gemm", 2)):
            return None
        module = _module_of(node)
        if module is None:
            return None
        found.add(f"{module}.{'bias' if index == 2 else 'weight'}")
    return found.pop() if len(found) == 1 else None


def readable_names(graph: onnx.GraphProto) -> dict[str, str]:
    """ONNX value name -> readable name, for the generated names rules 1-3 can replace."""
    infos = {info.name: info for info in graph.value_info}
    users: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for index, value in enumerate(node.input):
            if value:
                users.setdefault(value, []).append((node, index))
    producer = {out: node for node in graph.node for out in node.output if out}
    order = [t.name for t in graph.initializer] + [
        out for node in graph.node for out in node.output if out]
    taken = set(order) | {info.name for info in graph.input} | {
        info.name for info in graph.output}
    metadata = {t.name: list(t.metadata_props) for t in graph.initializer}
    for name, info in infos.items():
        metadata.setdefault(name, []).extend(info.metadata_props)

    wanted: dict[str, str] = {}
    for name in order:
        if name in wanted or not generated(name):
            continue
        folded = _metadata(metadata.get(name, []), FOLDED_FROM)
        sources = _string_list(folded) if folded is not None else None
        candidate = _usable(sources[0]) if sources and len(sources) == 1 else None
        node = producer.get(name)
        if candidate is None and node is not None and node.op_type == "Transpose" and \
                node.domain in ("", "ai.onnx") and node.input:
            source = wanted.get(node.input[0], node.input[0])
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [1, 0])
            if perm == [1, 0] and not generated(source):
                candidate = _usable(f"{source}.T")
        if candidate is None:
            candidate = _usable(_from_consumers(name, users.get(name, [])))
        if candidate is not None:
            wanted[name] = candidate

    claims: dict[str, list[str]] = {}
    for name, candidate in wanted.items():
        claims.setdefault(candidate, []).append(name)
    result: dict[str, str] = {}
    used = set(taken)
    for candidate, owners in claims.items():  # unique, unused names first
        if len(owners) == 1 and candidate not in taken:
            result[owners[0]] = candidate
            used.add(candidate)
    for candidate, owners in claims.items():
        if len(owners) == 1 and candidate not in taken:
            continue
        suffix = 1
        for owner in owners:
            while f"{candidate}.{suffix}" in used:
                suffix += 1
            result[owner] = f"{candidate}.{suffix}"
            used.add(result[owner])
    return {name: result[name] for name in order if name in result}
