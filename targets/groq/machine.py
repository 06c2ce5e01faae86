"""The machine model of the Groq target: one data file per chip generation.

Every figure the scheduler, the simulator, the lower bound and the multi-chip planner use
comes from a JSON file in `targets/groq/machines/` (or a path given with the target's
`machine=` option), never from constants in code. Public first-generation figures are
top-level keys; figures that are not public live under `"assumed"` with a note each
(docs/groq.md lists them).

Positions: the floorplan of one superlane runs west to east as
`MXM_W | SXM_W | MEM_W43 .. MEM_W0 | VXM | MEM_E0 .. MEM_E43 | SXM_E | MXM_E`; `position(unit)`
numbers those slices 0, 1, 2, ... so that a value on an eastward stream moves from position
x to x + 1 in one cycle and a westward one from x to x - 1 (hardware.md 1.2, rule 1).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from q35c.compiler.diagnostics import Q35cError

MACHINES_DIR = Path(__file__).parent / "machines"
DEFAULT_MACHINE = "tsp-v1"
SCHEMA = "q35c-groq-machine/1"

INT32_STREAMS = 4
"""Streams an int32 (or float32) vector travels on: one per byte plane, as a group of 4
consecutive stream ids (hardware.md 1.2: streams carry byte vectors). Architectural like
`lanes`, but kept in code: the machine file is embedded verbatim in program.json, whose bytes
must not change."""


@dataclass(frozen=True)
class Machine:
    """A parsed machine file. `raw` keeps the whole document for reports."""

    name: str
    clock_hz: float
    lanes: int
    vector_bytes: int
    streams_per_direction: int
    mem_slices_per_hemisphere: int
    slice_bytes: int
    vectors_per_slice: int
    banks_per_slice: int
    mxm_planes: int
    mxm_planes_per_hemisphere: int
    mxm_rows: int
    mxm_cols: int
    vxm_alus_per_lane: int
    c2c_links: int
    c2c_link_bytes_per_s: float
    assumed: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    int8_levels: bool = False
    """The weight layout too (`groq{levels=int8}`, docs/groq.md "Weight layouts"): the
    weights' int8 levels decoded at compile time, one byte per weight, so installs read
    them from MEM straight into the MXM instead of unpacking pair codes on the VXM."""
    decoded_scales: bool = False
    """Not a figure of the file but the weight layout the target compiles for
    (`groq{scales=f32}`, docs/groq.md "Decoded group scales"): each group's float32 scale
    and offset decoded at compile time and held in MEM instead of the packed group codes and
    column words, so the rescale does no decode work on the VXM."""
    int_scales: bool = False
    """The integer rescale contract (`groq{scales=int}`, docs/groq.md "The integer rescale
    contract"): the matmuls' `rescale_rows` attribute, integer group scales (one byte per
    group and column), the group offsets folded into the int8 levels, and per column a
    float32 base and offset; the rescale combines a chunk's groups in int32 (2 ALU ops per
    row, group and column)."""

    @property
    def scales(self) -> str:
        """The `groq{scales=...}` this machine compiles for (`SCALES`)."""
        return "int" if self.int_scales else "f32" if self.decoded_scales else "codes"

    @property
    def mem_slices(self) -> int:
        return 2 * self.mem_slices_per_hemisphere

    @property
    def sram_bytes(self) -> int:
        return self.mem_slices * self.slice_bytes

    def param(self, name: str) -> int | float:
        """An assumed (non-public) latency or rate, by its key in the file's `assumed`."""
        try:
            return self.assumed[name]
        except KeyError:
            raise Q35cError(f"machine {self.name}: missing assumed parameter '{name}'") from None

    @cached_property
    def floorplan(self) -> tuple[str, ...]:
        """Unit names west to east; index = position."""
        units: list[str] = []
        for entry in self.raw.get("floorplan", []):
            m = re.fullmatch(r"([A-Z]+_[WE])(\d+)\.\.\1(\d+)", entry)
            if m:
                a, b = int(m.group(2)), int(m.group(3))
                step = 1 if b >= a else -1
                units += [f"{m.group(1)}{i}" for i in range(a, b + step, step)]
            else:
                units.append(entry)
        return tuple(units)

    def position(self, unit: str) -> int:
        try:
            return self.floorplan.index(unit)
        except ValueError:
            raise Q35cError(f"machine {self.name}: no functional unit '{unit}'") from None

    def slice_name(self, index: int) -> str:
        """The MEM slice with global index `index`: 0..h-1 west (MEM_W0 next to the VXM),
        h..2h-1 east."""
        h = self.mem_slices_per_hemisphere
        return f"MEM_W{index}" if index < h else f"MEM_E{index - h}"

    @cached_property
    def mxm_plane_names(self) -> tuple[str, ...]:
        """The MXM planes in the order matmul tiles take them round robin: alternating
        hemispheres (MXM_W0, MXM_E0, MXM_W1, MXM_E1, ...), so that consecutive tiles use both
        halves of the chip."""
        return tuple(f"MXM_{side}{i}" for i in range(self.mxm_planes_per_hemisphere)
                     for side in "WE")

    @staticmethod
    def plane_unit(plane: str) -> str:
        """The floorplan position of an MXM plane: its hemisphere's MXM (MXM_W0 -> MXM_W)."""
        return plane.rstrip("0123456789")


SCALES = ("codes", "f32", "int")
"""The group scales of `groq{scales=...}`: the packed group codes and column words
(decoded on the VXM by every rescale), decoded float32 scales and offsets (both the float
rescale contract, bit-identical), or integer group scales (the integer rescale contract:
other numerics, with int8 levels only)."""

LEVELS = ("packed", "int8")
"""The weights of `groq{levels=...}`: packed pair codes (unpacked on the VXM on their way
to the MXM), or int8 levels installed from MEM."""


def with_layout(m: Machine, scales: str = "codes", levels: str = "packed") -> Machine:
    """`m` compiling weights in the layout `scales` (one of `SCALES`), `levels` (`LEVELS`)."""
    if scales == "int" and levels != "int8":
        raise Q35cError("--target groq: scales=int (the integer rescale contract) needs "
                        "levels=int8: the group offsets ride on the installed levels")
    return replace(m, decoded_scales=scales == "f32", int8_levels=levels == "int8",
                   int_scales=scales == "int")


def load_machine(name_or_path: str | Path = DEFAULT_MACHINE) -> Machine:
    """Load a machine by name (a file in machines/, e.g. "tsp-v1") or by path (anything with
    a directory part or a suffix, e.g. "./my-chip" or "chip.json"); errors are one line."""
    path = Path(name_or_path)
    if not path.suffix and path.name == str(name_or_path):
        path = MACHINES_DIR / f"{name_or_path}.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in MACHINES_DIR.glob("*.json")))
        raise Q35cError(f"{path}: no such machine file (built-in machines: {known})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise Q35cError(f"{path}: cannot read machine file: {err}") from None
    if doc.get("schema") != SCHEMA:
        raise Q35cError(f"{path}: not a {SCHEMA} machine file")
    try:
        mem, mxm, c2c = doc["mem"], doc["mxm"], doc["c2c"]
        return Machine(
            name=doc["name"], clock_hz=float(doc["clock_hz"]), lanes=int(doc["lanes"]),
            vector_bytes=int(doc["vector_bytes"]),
            streams_per_direction=int(doc["streams_per_direction"]),
            mem_slices_per_hemisphere=int(mem["slices_per_hemisphere"]),
            slice_bytes=int(mem["slice_bytes"]), vectors_per_slice=int(mem["vectors_per_slice"]),
            banks_per_slice=int(mem["banks_per_slice"]), mxm_planes=int(mxm["planes"]),
            mxm_planes_per_hemisphere=int(mxm["planes_per_hemisphere"]),
            mxm_rows=int(mxm["rows"]), mxm_cols=int(mxm["cols"]),
            vxm_alus_per_lane=int(doc["vxm"]["alus_per_lane"]), c2c_links=int(c2c["links"]),
            c2c_link_bytes_per_s=float(c2c["link_bytes_per_s"]),
            assumed={k: v for k, v in doc.get("assumed", {}).items() if k != "notes"},
            raw=doc)
    except (KeyError, TypeError, ValueError) as err:
        raise Q35cError(f"{path}: malformed machine file: missing or bad {err}") from None
