"""The machine model of a Cerebras wafer, read from machines/<name>.json.

Every figure in those files carries its source; the ones marked ASSUMPTION are not public
(per-op issue cost, task switch, SIMD widths, router buffer depth) and are parameters to
calibrate against the SDK's cycle-accurate simulator (docs/cerebras.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from q35c.compiler.diagnostics import Q35cError

MACHINES = Path(__file__).with_name("machines")


@dataclass(frozen=True, eq=False)
class Machine:
    """One machine file (hashed by identity: a loaded machine keys the planners' caches)."""

    name: str
    width: int
    height: int
    pe_memory_bytes: int
    memcpy_reserve_bytes: int
    stack_bytes: int
    colors: int
    reserved_colors: frozenset[int]
    hop_cycles: int
    link_buffer_wavelets: int
    clock_hz: int
    memory_read_bytes_per_cycle: int
    simd: dict[str, int]
    dsd_issue: int
    task_switch: int
    scalar_op: int
    code_bytes_per_op: int

    def color_problem(self, color: int) -> str | None:
        """Why `color` may not be used (None: it may)."""
        if not 0 <= color < self.colors:
            return f"color {color} is not routable (0..{self.colors - 1})"
        if color in self.reserved_colors:
            return f"color {color} is reserved by the memcpy runtime on {self.name}"
        return None


def load_machine(name: str) -> Machine:
    """The machine `name` (wse2, wse3) or the JSON file at that path."""
    path = Path(name) if name.endswith(".json") else MACHINES / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in MACHINES.glob("*.json")))
        raise Q35cError(f"--target cerebras: unknown machine '{name}' (known: {known})")
    d = json.loads(path.read_text())
    c = d["costs"]
    return Machine(
        name=d["name"], width=d["fabric"]["width"], height=d["fabric"]["height"],
        pe_memory_bytes=d["pe_memory_bytes"], memcpy_reserve_bytes=d["memcpy_reserve_bytes"],
        stack_bytes=d["stack_bytes"], colors=d["colors"]["routable"],
        reserved_colors=frozenset(d["colors"]["reserved"]), hop_cycles=d["hop_cycles"],
        link_buffer_wavelets=d["link_buffer_wavelets"], clock_hz=d["clock_hz"],
        memory_read_bytes_per_cycle=d["memory_read_bytes_per_cycle"],
        simd={k: v for k, v in d["simd"].items() if k != "source"},
        dsd_issue=c["dsd_issue"], task_switch=c["task_switch"], scalar_op=c["scalar_op"],
        code_bytes_per_op=d["code_bytes_per_op"])
