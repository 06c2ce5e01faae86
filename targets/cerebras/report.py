"""`q35c report OUT` on a Cerebras project: OUT/report.html, a self-contained page with
the PE grid (each PE colored by the memory its program uses, out of the PE's 48 KB) and
the per-color traffic of the chain (senders, wavelets, link crossings), from project.json.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from q35c.compiler.diagnostics import Q35cError

CELL = 14
MAX_CELLS = 4096
"""Larger rectangles are drawn one cell per PE column group (rows of one column look alike:
every PE of a column runs the same program)."""


def _shade(used: int, capacity: int) -> str:
    """White (empty) to dark red (full) by the fraction of memory used."""
    f = max(0.0, min(1.0, used / capacity))
    return f"rgb(255,{round(255 * (1 - f))},{round(255 * (1 - f) * 0.8)})"


def render(doc: dict) -> str:
    plan, capacity = doc["plan"], doc["pe_memory_capacity"]
    width, height = plan["width"], plan["height"]
    rows = height if width * height <= MAX_CELLS else 1
    cells = []
    grid = doc.get("grid") or [[f"pe_{role}.csl"] * height for role in doc["columns"]]
    for x, column in enumerate(grid):  # a graph's project.json lists each PE's program
        for y in range(rows):
            used = doc["pe_memory_bytes"][column[y]]
            tip = html.escape(f"PE ({x},{y}) {column[y]}: {used} of {capacity} bytes")
            cells.append(f'<rect x="{x * CELL}" y="{y * CELL}" width="{CELL - 1}" '
                         f'height="{CELL - 1}" fill="{_shade(used, capacity)}">'
                         f"<title>{tip}</title></rect>")
    note = "" if rows == height else (f"<p>{height} rows of identical PEs drawn as one "
                                      "row.</p>")
    traffic = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{t['senders']}</td><td>{t['wavelets']}</td>"
        f"<td>{t['link_wavelets']}</td></tr>" for c, t in doc["traffic"].items())
    memory = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{total}</td>"
        + "".join(f"<td>{doc['pe_memory_parts'][name][k]}</td>"
                  for k in ("arrays", "code", "stack", "memcpy")) + "</tr>"
        for name, total in sorted(doc["pe_memory_bytes"].items()))
    if "stages" in doc:
        kinds = ", ".join(st["kind"] for st in doc["stages"])
        title = html.escape(f"{len(doc['stages'])} stages ({kinds}) on {doc['machine']}: "
                            f"{width}x{height} PEs")
    else:
        title = html.escape(f"GEMV {plan['k']}x{plan['n']} on {doc['machine']}: "
                            f"{width}x{height} PEs, tiles {plan['k_tile']}x{plan['n_tile']}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body {{ font: 13px/1.4 system-ui, sans-serif; margin: 12px; }}
table {{ border-collapse: collapse; margin: 8px 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}</style>
</head><body><h1>{title}</h1>
<h2>PE grid: memory per PE (white empty, red full {capacity} bytes)</h2>{note}
<svg width="{width * CELL}" height="{rows * CELL}" role="img">{"".join(cells)}</svg>
<h2>Memory by program (bytes)</h2>
<table><tr><th>program</th><th>total</th><th>arrays</th><th>code</th><th>stack</th>
<th>memcpy</th></tr>{memory}</table>
<h2>Traffic per color (per run)</h2>
<table><tr><th>color</th><th>senders</th><th>wavelets sent</th><th>link crossings</th></tr>
{traffic}</table>
<p>Busy time per PE is not drawn: `q35c run --target cerebras` and the estimate
(docs/cerebras.md) report cycles.</p>
</body></html>
"""


def write_report(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    path = out_dir / "project.json"
    try:
        doc = json.loads(path.read_text())
        page = render(doc)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise Q35cError(f"{path}: not a cerebras project: {err}") from None
    target = out_dir / "report.html"
    tmp = out_dir / ".report.html.tmp"
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise Q35cError(f"{target}: cannot write: {err}") from None
    return target
