"""The scheduled program as files: program.json, memory.json, memory.bin, program.s.

`program.json` (schema `q35c-groq-program/1`, docs/groq.md) is what the simulator executes
and what `q35c report` draws; `memory.bin` is the initial MEM image (weights, constants) it
references; `memory.json` is the placement of every buffer. In program.s every name
(buffers are named after the model's weights) is an `asm_symbol` and the header line is
`plain_text`, so a name cannot start a line or a comment (docs/security.md).
"""

from __future__ import annotations

import json

import numpy as np

from q35c.compiler.codegen_names import asm_symbol, plain_text
from q35c.targets.groq.lower import Buf
from q35c.targets.groq.schedule import Program, slice_name

SCHEMA = "q35c-groq-program/1"
IMAGE_FILE = "memory.bin"


def buffer_doc(prog: Program, b: Buf) -> dict:
    m = prog.machine
    return {"chip": b.chip, "shape": list(b.shape), "dtype": b.dtype, "layout": b.layout,
            "kind": b.kind,
            "slices": [slice_name(m, s) for s in b.slices], "addr": b.addr, "nvec": b.nvec,
            "addresses": b.addresses(), "bytes": b.nbytes if b.kind != "weight" else
            (b.packed_bytes or None), "allocated_bytes": b.addresses() * len(b.slices)
            * m.lanes}


def live_ranges(doc: dict) -> dict[str, list[int]]:
    """Cycle live range [first write issue, last access end) of every placed buffer."""
    cycles = doc["cycles"]
    live: dict[str, list[int]] = {}
    for name, b in doc["buffers"].items():
        if b["kind"] in ("input", "const", "weight"):
            live[name] = [0, cycles]
    for ins in doc["instructions"]:
        end = ins["cycle"] + ins["cycles"]
        touched = []
        if ins["op"] in ("read", "write"):
            touched = [ins["buf"]]
        elif "reads" in ins:
            touched = list(ins["reads"]) + list(ins["writes"])
        for name in touched:
            if name not in doc["buffers"] or not doc["buffers"][name]["slices"]:
                continue
            r = live.setdefault(name, [ins["cycle"], end])
            r[0], r[1] = min(r[0], ins["cycle"]), max(r[1], end)
    for _, name, _ in doc["outputs"]:
        if name in live:
            live[name][1] = cycles
    return live


def to_documents(prog: Program, ir_file: str) -> tuple[dict, bytes, dict]:
    """(program.json document, memory.bin bytes, memory.json document)."""
    m = prog.machine
    placed = {n: b for n, b in prog.buffers.items() if b.slices}
    image, segments, offset = [], [], 0
    for name, b in placed.items():
        if b.kind in ("const", "weight"):
            data = b.value if b.kind == "weight" else None
            if data is None:
                from q35c.targets.groq.lower import encode
                data = encode(b, b.value, m.lanes)
            raw = np.ascontiguousarray(data, dtype=np.uint8).tobytes()
            segments.append({"buf": name, "offset": offset, "nvec": b.nvec})
            image.append(raw)
            offset += len(raw)
    doc = {
        "schema": SCHEMA,
        "machine": m.name,
        "machine_file": m.raw,
        "chips": prog.chips,
        "cycles": prog.cycles,
        "ir": ir_file,
        "image": {"file": IMAGE_FILE, "segments": segments},
        "inputs": [list(x) for x in prog.inputs],
        "outputs": [list(x) for x in prog.outputs],
        "buffers": {n: buffer_doc(prog, b) for n, b in prog.buffers.items()
                    if b.slices or (b.kind == "virtual" and b.used)},
        "instructions": prog.instructions,
    }
    for entry in doc["inputs"] + doc["outputs"]:
        entry[2] = list(entry[2])
    live = live_ranges(doc)
    memory = {"schema": "q35c-groq-memory/1", "machine": m.name,
              "slices": m.mem_slices, "vectors_per_slice": m.vectors_per_slice,
              "vector_bytes": m.lanes,
              "buffers": {n: {**doc["buffers"][n], "live": live.get(n)} for n in placed}}
    return doc, b"".join(image), memory


def dumps(doc) -> str:
    return json.dumps(doc, indent=None, separators=(",", ":"), sort_keys=False) + "\n"


def listing(doc: dict) -> str:
    """program.s: instructions grouped by functional unit, in issue order."""
    by_unit: dict[str, list[dict]] = {}
    for ins in doc["instructions"]:
        by_unit.setdefault(ins["unit"], []).append(ins)
    h = doc["machine_file"]["mem"]["slices_per_hemisphere"]
    units = sorted(by_unit, key=lambda u: _unit_key(u, h))
    lines = [f"; q35c groq program, machine {plain_text(doc['machine'])}, {doc['cycles']} cycles, "
             f"{len(doc['instructions'])} instructions", "; cycle  (duration)  queue  op  operands"]
    for unit in units:
        lines.append(f"\n.unit {asm_symbol(unit)}")
        for ins in sorted(by_unit[unit], key=lambda i: (i["cycle"], i["id"])):
            lines.append(f"  {ins['cycle']:>8}  ({ins['cycles']})  {asm_symbol(ins['queue']):<12} "
                         f"{_operands(ins)}")
    return "\n".join(lines) + "\n"


def _unit_key(unit: str, h: int):
    """West to east, as on the floorplan."""
    num = "".join(ch for ch in unit if ch.isdigit())
    if unit.startswith("MXM_W"):
        return (0, int(num))
    if unit == "SXM_W":
        return (1, 0)
    if unit.startswith("MEM_W"):
        return (2, h - int(num))
    if unit == "VXM":
        return (3, 0)
    if unit.startswith("MEM_E"):
        return (4, int(num))
    if unit == "SXM_E":
        return (5, 0)
    return (6, int(num) if num else 0)


def _streams(entries) -> str:
    return ",".join(f"{e['dir']}{e['stream']}" for e in entries)


def _operands(ins: dict) -> str:
    op = ins["op"]
    tag = f"#{ins['id']}"
    if op == "read":
        return f"Read    {asm_symbol(ins['buf'])}[@{ins['addr']}] -> {_streams(ins['out'])}  {tag}"
    if op == "write":
        return f"Write   {_streams(ins['in'])} -> {asm_symbol(ins['buf'])}[@{ins['addr']}]  {tag}"
    if op == "unpack":
        return f"Unpack  {_streams(ins['in'])} -> {_streams(ins['out'])}  {tag}"
    if op == "install":
        return (f"IW      {_streams(ins['in'])} -> buf{ins['buffer']} rows "
                f"{ins['row']}..{ins['row'] + 15} ({asm_symbol(ins['tag'])})  {tag}")
    if op == "matmul_pass":
        lo, hi = ins["rows"]
        return (f"ABC/ACC {_streams(ins['in'])} x buf{ins['buffer']}[{lo}:{hi}] -> "
                f"{_streams(ins['out'])} i32  {tag}")
    name = asm_symbol(ins.get("ir_name", op))
    return (f"{name:<7} {' '.join(map(asm_symbol, ins['reads']))} -> "
            f"{' '.join(map(asm_symbol, ins['writes']))}  "
            f"streams {','.join(h['dir'] + str(h['stream']) for h in ins['holds'])}  {tag}")
