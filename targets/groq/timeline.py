"""`q35c report OUT_DIR`: a self-contained HTML timeline of a Groq program.

Reads OUT_DIR/program.json (schema `q35c-groq-program/1`) and, when present,
OUT_DIR/report.json, and writes OUT_DIR/timeline.html: one row per functional unit per
chip (a unit with several queues, such as an MXM plane's install and compute queues,
gets one row per queue), one bar per instruction (colour = op; hovering shows the
instruction), zoom and
scroll, and a summary header (cycles, lower bound, ratio, utilization). Everything is
inline (CSS, JS, SVG); the page loads nothing from the network.

An output directory of `--shape-only` (plan.json, no program.json) gets the timeline of
the multi-chip plan instead: per chip its matmuls, lookups, vector-op runs and C2C
transfers, for one token passing the chips in turn (`plan_program`).

Programs with more than `MAX_BARS` instructions are drawn aggregated: the cycle axis is
cut into at most `BUCKETS` buckets, and each (unit, bucket) cell is one bar whose opacity
is the unit's busy fraction in that bucket and whose colour is its dominant op.

Errors (missing or malformed program.json / report.json) are one-line `Q35cError`s; the
HTML is written to a temporary file and renamed, so a failure leaves nothing behind.

Everything in the page that came from the program (names of buffers, weights, units,
queues, ops, the machine) goes through `codegen_names.html_text`; the script embeds no
data, only numbers checked above (docs/security.md).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from q35c.compiler.codegen_names import html_text
from q35c.compiler.diagnostics import Q35cError

PROGRAM_SCHEMA = "q35c-groq-program/1"
PLAN_SCHEMA = "q35c-groq-plan/1"
MAX_BARS = 20000
BUCKETS = 2000
ROW_HEIGHT = 14
WIDTH = 1600
"""Width of the cycle axis in pixels at zoom 1."""
_REQUIRED = {"chip": int, "unit": str, "cycle": int, "cycles": int, "op": str}
_PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
            "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#d62728", "#2ca02c", "#9467bd",
            "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8"]
_HIDDEN_FIELDS = ("chip", "unit", "cycle", "cycles", "op")


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise Q35cError(f"{path}: no such file{what}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise Q35cError(f"{path}: cannot read: {err}") from None
    except json.JSONDecodeError as err:
        raise Q35cError(f"{path}: not valid JSON: {err.msg} at line {err.lineno}") from None


def load_program(out_dir: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """program.json (checked against the fields the timeline needs) and report.json."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise Q35cError(f"{out_dir}: no such directory")
    path = out_dir / "program.json"
    if not path.exists() and (out_dir / "plan.json").exists():
        path = out_dir / "plan.json"
        doc = plan_program(_load_json(path, ""), path)
    else:
        doc = _load_json(path, " (write it with `q35c MODEL --target groq -o DIR`)")
    if not isinstance(doc, dict) or doc.get("schema") != PROGRAM_SCHEMA:
        raise Q35cError(f"{path}: not a {PROGRAM_SCHEMA} program")
    instructions = doc.get("instructions")
    if not isinstance(instructions, list):
        raise Q35cError(f"{path}: 'instructions' must be a list")
    cycles = doc.get("cycles")
    if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 0:
        raise Q35cError(f"{path}: 'cycles' must be a non-negative integer")
    for index, ins in enumerate(instructions):
        if not isinstance(ins, dict):
            raise Q35cError(f"{path}: instruction {index} is not an object")
        for key, kind in _REQUIRED.items():
            value = ins.get(key)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise Q35cError(f"{path}: instruction {index}: '{key}' must be "
                                f"{'an integer' if kind is int else 'a string'}")
        if ins["cycle"] < 0 or ins["cycles"] < 0 or ins["chip"] < 0:
            raise Q35cError(f"{path}: instruction {index}: negative chip, cycle or cycles")
    report = None
    report_path = out_dir / "report.json"
    if report_path.exists():
        report = _load_json(report_path, "")
        if not isinstance(report, dict):
            raise Q35cError(f"{report_path}: not a JSON object")
    return doc, report


def plan_program(plan: Any, path: Path) -> dict[str, Any]:
    """A multi-chip plan (plan.json, `q35c-groq-plan/1`) as a program document for the
    timeline: per chip an `MXM` row (one bar per matmul or shard), a `MEM` row (embedding
    lookups), a `VXM` row (one bar per run of vector ops) and `C2C` send/receive rows, on
    the cycle axis of one token passing every chip in turn."""
    if not isinstance(plan, dict) or plan.get("schema") != PLAN_SCHEMA:
        raise Q35cError(f"{path}: not a {PLAN_SCHEMA} plan")
    rows = {"matmul": "MXM", "gather": "MEM", "vector": "VXM"}
    try:
        ins: list[dict[str, Any]] = []
        for c in plan["chips"]:
            for start, cycles, kind, name, count in c["timeline"]:
                ins.append({"chip": c["chip"], "unit": rows[kind], "queue": rows[kind],
                            "cycle": start, "cycles": cycles, "op": kind,
                            "what": f"{count} ops" if kind == "vector" else name})
        for t in plan["transfers"]:
            common = {"unit": "C2C", "cycle": t["send_cycle"], "cycles": t["cycles"],
                      "bytes": t["bytes"], "from_chip": t["from_chip"],
                      "to_chip": t["to_chip"]}
            ins.append({"chip": t["from_chip"], "queue": "C2C.tx", "op": "c2c_send", **common})
            ins.append({"chip": t["to_chip"], "queue": "C2C.rx", "op": "c2c_receive",
                        **common})
        return {"schema": PROGRAM_SCHEMA, "machine": plan["machine"]["name"],
                "machine_file": {"clock_hz": plan["machine"]["clock_hz"]},
                "chips": plan["summary"]["chips"],
                "cycles": plan["summary"]["cycles_per_pass"], "instructions": ins}
    except (KeyError, TypeError, ValueError) as err:
        raise Q35cError(f"{path}: malformed plan: {type(err).__name__} {err}") from None


def _unit_key(unit: str) -> tuple:
    """West to east as in the floorplan, then C2C and anything else by name."""
    m = re.fullmatch(r"([A-Z0-9]+?)_?([WE])?(\d+)?", unit)
    family, side, num = (m.group(1), m.group(2), m.group(3)) if m else (unit, None, None)
    n = int(num) if num is not None else 0
    order = {("MXM", "W"): (0, -n), ("SXM", "W"): (1, 0), ("MEM", "W"): (2, -n),
             ("VXM", None): (3, 0), ("MEM", "E"): (4, n), ("SXM", "E"): (5, 0),
             ("MXM", "E"): (6, n)}
    if (family, side) in order:
        return (*order[(family, side)], unit)
    return (7, 0, unit)


def _describe(ins: dict[str, Any]) -> str:
    extra = " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in ins.items()
                     if k not in _HIDDEN_FIELDS)
    text = (f"{ins['op']} chip {ins['chip']} {ins['unit']} cycle {ins['cycle']} "
            f"+{ins['cycles']} {extra}").strip()
    return text if len(text) <= 300 else text[:297] + "..."


def _utilization(doc: dict[str, Any], rows: list[tuple[int, str, str]],
                 busy: dict[tuple[int, str, str], int]) -> float:
    cycles = max(1, doc["cycles"])
    return sum(busy[r] for r in rows) / (cycles * max(1, len(rows)))


def render(doc: dict[str, Any], report: dict[str, Any] | None) -> str:
    """The timeline page for a checked program document."""
    instructions = doc["instructions"]
    total = max([doc["cycles"]] + [i["cycle"] + i["cycles"] for i in instructions] + [1])
    queues: dict[tuple[int, str], set[str]] = {}
    for i in instructions:
        queues.setdefault((i["chip"], i["unit"]), set()).add(str(i.get("queue", "")))

    def row_key(i: dict[str, Any]) -> tuple[int, str, str]:
        # a unit with several queues (MXM install/compute, VXM ALUs) gets one row per queue
        many = len(queues[(i["chip"], i["unit"])]) > 1
        return (i["chip"], i["unit"], str(i.get("queue", "")) if many else "")

    rows = sorted({row_key(i) for i in instructions},
                  key=lambda r: (r[0], _unit_key(r[1]), r[2]))
    row_of = {r: n for n, r in enumerate(rows)}
    ops = sorted({i["op"] for i in instructions})
    colour = {op: _PALETTE[n % len(_PALETTE)] for n, op in enumerate(ops)}
    busy: dict[tuple[int, str, str], int] = {r: 0 for r in rows}
    for i in instructions:
        busy[row_key(i)] += max(1, i["cycles"])
    aggregated = len(instructions) > MAX_BARS
    bucket = -(-total // BUCKETS)
    scale = WIDTH / total
    bars: list[str] = []
    if not aggregated:
        for index, i in enumerate(instructions):
            y = row_of[row_key(i)] * ROW_HEIGHT + 1
            w = max(i["cycles"], 1) * scale
            bars.append(
                f'<rect class="bar" x="{i["cycle"] * scale:.3f}" y="{y}" width="{w:.3f}" '
                f'height="{ROW_HEIGHT - 2}" fill="{colour[i["op"]]}" data-op="{html_text(i["op"])}"'
                f' data-i="{index}"><title>{html_text(_describe(i))}</title></rect>')
    else:
        width = bucket
        cells: dict[tuple[int, int], dict[str, int]] = {}
        for i in instructions:
            start, end = i["cycle"], i["cycle"] + max(1, i["cycles"])
            row = row_of[row_key(i)]
            for b in range(start // width, (end - 1) // width + 1):
                overlap = min(end, (b + 1) * width) - max(start, b * width)
                cell = cells.setdefault((row, b), {})
                cell[i["op"]] = cell.get(i["op"], 0) + overlap
        for (row, b), per_op in sorted(cells.items()):
            used = sum(per_op.values())
            top = max(sorted(per_op), key=lambda op: per_op[op])
            fraction = min(1.0, used / width)
            label = (f"{rows[row][1]} {rows[row][2]} chip {rows[row][0]} cycles "
                     f"{b * width}-{(b + 1) * width}: {100 * fraction:.0f}% busy; "
                     + ", ".join(f"{op} {n}" for op, n in sorted(per_op.items())))
            bars.append(
                f'<rect class="bar bucket" x="{b * width * scale:.3f}" '
                f'y="{row * ROW_HEIGHT + 1}" width="{width * scale:.3f}" '
                f'height="{ROW_HEIGHT - 2}" fill="{colour[top]}" '
                f'fill-opacity="{0.25 + 0.75 * fraction:.2f}" data-op="{html_text(top)}">'
                f'<title>{html_text(label)}</title></rect>')
    height = max(1, len(rows)) * ROW_HEIGHT
    labels = "".join(
        f'<div class="label" data-unit="{html_text(u)}" data-chip="{c}" '
        f'data-queue="{html_text(q)}" title="{html_text(f"chip {c} {u} {q}".strip())}">'
        f'{html_text(f"c{c} {q or u}")}</div>' for c, u, q in rows)
    report = report or {}
    lower = report.get("lower_bound_cycles")
    ratio = (f"{doc['cycles'] / lower:.3f}" if isinstance(lower, (int, float)) and lower > 0
             else "n/a")
    util = report.get("utilization")
    if isinstance(util, dict) and util and all(isinstance(v, (int, float))
                                               for v in util.values()):
        util_text = ", ".join(f"{k} {100 * v:.1f}%" for k, v in sorted(util.items()))
    else:
        util_text = f"mean over units shown {100 * _utilization(doc, rows, busy):.1f}%"
    chips = doc.get("chips", report.get("chips", 1))
    clock = (doc.get("machine_file") or {}).get("clock_hz") if isinstance(
        doc.get("machine_file"), dict) else None
    micro = f" ({doc['cycles'] / clock * 1e6:.2f} us)" if isinstance(clock, (int, float)) \
        and clock > 0 else ""
    summary = [
        ("machine", str(doc.get("machine", "?"))), ("chips", str(chips)),
        ("cycles", f"{doc['cycles']:,}{micro}"),
        ("lower bound", f"{lower:,}" if isinstance(lower, (int, float)) else "n/a"),
        ("ratio", ratio), ("utilization", util_text),
        ("instructions", f"{len(instructions):,}"),
        ("view", f"aggregated into {-(-total // bucket):,} buckets of {bucket:,} cycles"
                 if aggregated else "one bar per instruction"),
    ]
    header = "".join(f'<div class="kv"><span>{html_text(k)}</span> '
                     f'<b data-key="{html_text(k)}">{html_text(v)}</b></div>'
                     for k, v in summary)
    legend = "".join(f'<span title="{html_text(OP_MEANING.get(op, op))}">'
                     f'<span class="sw" style="background:{colour[op]}"></span>'
                     f'{html_text(op)}</span> ' for op in ops)
    notes = [f"<b>{html_text(op)}</b>: {html_text(OP_MEANING[op])}"
             for op in ("macro", "group_sums", "rescale") if op in ops]
    if notes:
        legend += '<div class="note">' + "; ".join(notes) + " (hover an entry for the others)</div>"
    return _PAGE.format(
        title=html_text(f"q35c groq timeline: {doc.get('machine', '')}"),
        header=header, legend=legend, labels=labels, height=height, width=WIDTH,
        total=total, bars="\n".join(bars), mode="buckets" if aggregated else "instructions",
        row=ROW_HEIGHT)


def write_timeline(out_dir: Path) -> Path:
    """Write OUT_DIR/timeline.html; returns its path."""
    out_dir = Path(out_dir)
    doc, report = load_program(out_dir)
    page = render(doc, report)
    target = out_dir / "timeline.html"
    tmp = out_dir / ".timeline.html.tmp"
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise Q35cError(f"{target}: cannot write: {err}") from None
    return target


OP_MEANING = {
    "read": "a MEM slice reads a vector onto a stream",
    "write": "a MEM slice stores a vector from a stream",
    "unpack": "VXM decodes Q3P5 codes into int8 weight levels (16 rows per instruction)",
    "install": "MXM writes 16 rows of a weight buffer (IW)",
    "matmul_pass": "MXM multiplies the activations by one quantization group's rows",
    "group_sums": "a macro: VXM sums each row's activations per quantization group",
    "rescale": "a macro: VXM turns int32 group partials into float outputs with their scales",
    "send": "a chip-to-chip transfer out over a C2C link",
    "receive": "the matching transfer in on the peer chip",
    "macro": "one graph op (a norm, softmax, RoPE, a generic ONNX op...) that holds its "
             "unit's queue for its whole duration, standing for the sequence of that "
             "unit's instructions it would take; its result is the interpreter's",
    "matmul": "a matmul or a column shard of one (plan view)",
    "gather": "an embedding lookup (plan view)",
    "vector": "a run of vector ops between matmuls (plan view)",
    "c2c_send": "a transfer out to the next chip (plan view)",
    "c2c_receive": "the transfer in from the previous chip (plan view)",
}
"""What each instruction op (and plan-view bar) is: the legend's hover text, and a visible
line for the macros, whose bars stand for many instructions."""


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 12px/1.35 system-ui, sans-serif; margin: 0; color: #222; }}
header {{ padding: 8px 12px; background: #f4f4f4; border-bottom: 1px solid #ccc; }}
.kv {{ display: inline-block; margin-right: 18px; }} .kv span {{ color: #666; }}
.legend {{ margin-top: 4px; }} .sw {{ display: inline-block; width: 10px; height: 10px;
  margin: 0 3px 0 8px; vertical-align: middle; }}
.tools button {{ margin-right: 4px; }} .note {{ color: #555; margin: 2px 0 0 8px; }}
#wrap {{ display: flex; position: relative; }}
#labels {{ flex: none; width: 130px; padding-top: 18px; border-right: 1px solid #ccc;
  background: #fafafa; }}
.label {{ height: {row}px; line-height: {row}px; font-size: 10px; padding-left: 4px;
  white-space: nowrap; overflow: hidden; }}
#scroll {{ overflow: auto; flex: 1; }}
#axis {{ position: relative; height: 18px; border-bottom: 1px solid #ccc; }}
.tick {{ position: absolute; top: 2px; font-size: 10px; color: #555;
  border-left: 1px solid #bbb; padding-left: 2px; }}
#info {{ position: fixed; bottom: 0; left: 0; right: 0; background: #222; color: #eee;
  padding: 4px 8px; font: 11px monospace; min-height: 14px; }}
rect.bar:hover {{ stroke: #000; stroke-width: 1px; }}
</style></head>
<body data-mode="{mode}" data-total="{total}">
<header><div>{header}</div><div class="legend">{legend}</div>
<div class="tools">zoom: <button id="zin">+</button><button id="zout">&minus;</button>
<button id="zfit">fit</button> (ctrl + wheel zooms; scroll to pan)</div></header>
<div id="wrap"><div id="labels">{labels}</div>
<div id="scroll"><div id="axis"></div>
<svg id="tl" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"
 viewBox="0 0 {width} {height}" preserveAspectRatio="none">
{bars}
</svg></div></div>
<div id="info">hover a bar for its instruction</div>
<script>
(function () {{
  var W = {width}, total = {total}, zoom = 1;
  var svg = document.getElementById('tl'), axis = document.getElementById('axis');
  var scroll = document.getElementById('scroll'), info = document.getElementById('info');
  function ticks() {{
    var px = W * zoom, step = Math.pow(10, Math.ceil(Math.log10(total * 100 / px)));
    if (total * 100 / px <= step / 2) step = step / 2;
    axis.style.width = px + 'px'; axis.innerHTML = '';
    for (var c = 0; c <= total; c += step) {{
      var d = document.createElement('div'); d.className = 'tick';
      d.style.left = (c / total * px) + 'px'; d.textContent = c; axis.appendChild(d);
    }}
  }}
  function setZoom(z, anchor) {{
    var old = zoom; zoom = Math.max(1, Math.min(z, 100000));
    var a = anchor === undefined ? scroll.clientWidth / 2 : anchor;
    var at = (scroll.scrollLeft + a) / old;
    svg.setAttribute('width', W * zoom); ticks();
    scroll.scrollLeft = at * zoom - a;
  }}
  document.getElementById('zin').onclick = function () {{ setZoom(zoom * 2); }};
  document.getElementById('zout').onclick = function () {{ setZoom(zoom / 2); }};
  document.getElementById('zfit').onclick = function () {{ setZoom(1); }};
  scroll.addEventListener('wheel', function (e) {{
    if (!e.ctrlKey) return; e.preventDefault();
    var r = scroll.getBoundingClientRect();
    setZoom(zoom * (e.deltaY < 0 ? 1.25 : 0.8), e.clientX - r.left);
  }}, {{passive: false}});
  svg.addEventListener('mousemove', function (e) {{
    var t = e.target.querySelector ? e.target.querySelector('title') : null;
    if (t) info.textContent = t.textContent;
  }});
  ticks();
}})();
</script>
</body></html>
"""
