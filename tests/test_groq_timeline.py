"""`q35c report OUT_DIR`: the self-contained HTML timeline of a Groq program.json.

The programs here are synthetic but follow the q35c-groq-program/1 schema (chip, unit,
queue, cycle, cycles, op per instruction), so these tests do not depend on the scheduler.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from q35c.compiler.cli import main
from q35c.targets.groq import timeline


class _Page(HTMLParser):
    """Collects the bars (rects), row labels, header values and external references."""

    def __init__(self):
        super().__init__()
        self.bars: list[dict] = []
        self.labels: list[dict] = []
        self.header: dict[str, str] = {}
        self.body: dict = {}
        self.external: list[str] = []
        self._in: list[str] = []
        self._key: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name in ("src", "href"):
            if name in a:
                self.external.append(a[name])
        if tag in ("link", "iframe", "img", "object"):
            self.external.append(tag)
        if tag == "body":
            self.body = a
        if tag == "rect":
            self.bars.append({**a, "title": ""})
        if tag == "div" and a.get("class") == "label":
            self.labels.append(a)
        if tag == "b" and "data-key" in a:
            self._key = a["data-key"]
        self._in.append(tag)

    def handle_endtag(self, tag):
        if self._in:
            self._in.pop()
        self._key = None

    def handle_data(self, data):
        if self._in and self._in[-1] == "title" and self.bars:
            self.bars[-1]["title"] += data
        if self._key:
            self.header[self._key] = self.header.get(self._key, "") + data


def _program(chips: int = 2, per_chip: int = 40) -> dict:
    ins = []
    for c in range(chips):
        for k in range(per_chip):
            ins.append({"chip": c, "unit": f"MEM_W{k % 3}", "queue": f"MEM_W{k % 3}.r",
                        "cycle": 4 * k, "cycles": 1, "op": "read", "buf": f"w{k}"})
            ins.append({"chip": c, "unit": "MXM_W0", "queue": "MXM_W0.iw", "cycle": 4 * k + 1,
                        "cycles": 1, "op": "install"})
            ins.append({"chip": c, "unit": "MXM_W0", "queue": "MXM_W0.acc",
                        "cycle": 4 * k + 2, "cycles": 2, "op": "mxm"})
        ins.append({"chip": c, "unit": "VXM", "queue": "VXM.0", "cycle": 4 * per_chip,
                    "cycles": 10, "op": "macro", "ir_name": "q35nn.rms_norm"})
        if c + 1 < chips:
            ins.append({"chip": c, "unit": "C2C0", "queue": "C2C0.tx", "cycle": 4 * per_chip + 10,
                        "cycles": 30, "op": "send", "bytes": 1280, "to_chip": c + 1})
    cycles = max(i["cycle"] + i["cycles"] for i in ins)
    return {"schema": "q35c-groq-program/1", "machine": "tsp-v1", "chips": chips,
            "cycles": cycles, "instructions": ins}


def _write(out: Path, program, report=None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "program.json").write_text(program if isinstance(program, str)
                                      else json.dumps(program))
    if report is not None:
        (out / "report.json").write_text(report if isinstance(report, str)
                                         else json.dumps(report))
    return out


def _report(out: Path):
    return CliRunner().invoke(main, ["report", str(out)])


def _parse(out: Path) -> _Page:
    page = _Page()
    page.feed((out / "timeline.html").read_text())
    return page


def test_one_bar_per_instruction(tmp_path):
    program = _program()
    out = _write(tmp_path / "out", program, {"lower_bound_cycles": 150, "chips": 2,
                                              "utilization": {"MEM": 0.1, "VXM": 0.05}})
    result = _report(out)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {out / 'timeline.html'}"
    page = _parse(out)
    assert page.body["data-mode"] == "instructions"
    assert len(page.bars) == len(program["instructions"])
    # one row per functional unit per chip; MXM_W0's two queues get a row each
    rows = {(int(label["data-chip"]), label["data-unit"], label["data-queue"])
            for label in page.labels}
    expected = set()
    for c in range(2):
        expected |= {(c, f"MEM_W{k}", "") for k in range(3)}
        expected |= {(c, "MXM_W0", "MXM_W0.iw"), (c, "MXM_W0", "MXM_W0.acc"), (c, "VXM", "")}
    expected.add((0, "C2C0", ""))
    assert rows == expected
    assert len(page.labels) == len(expected)
    # rows are ordered chip by chip, west to east
    units0 = [label["data-unit"] for label in page.labels if label["data-chip"] == "0"]
    assert units0.index("MXM_W0") < units0.index("MEM_W2") < units0.index("MEM_W0") \
        < units0.index("VXM") < units0.index("C2C0")
    # bars: coloured by op, hover text names the instruction, geometry follows cycles
    colours: dict[str, set] = {}
    for bar, ins in zip(page.bars, program["instructions"]):
        assert bar["data-op"] == ins["op"]
        assert bar["title"].startswith(f"{ins['op']} chip {ins['chip']} {ins['unit']} "
                                       f"cycle {ins['cycle']} +{ins['cycles']}")
        colours.setdefault(ins["op"], set()).add(bar["fill"])
        scale = timeline.WIDTH / program["cycles"]
        assert float(bar["x"]) == pytest.approx(ins["cycle"] * scale, abs=1e-3)
        assert float(bar["width"]) == pytest.approx(ins["cycles"] * scale, abs=1e-3)
    assert all(len(c) == 1 for c in colours.values())
    assert len({next(iter(c)) for c in colours.values()}) == len(colours)
    assert "bytes=1280" in next(b["title"] for b in page.bars if b["data-op"] == "send")
    # summary header from program.json and report.json
    assert page.header["cycles"] == f"{program['cycles']:,}"
    assert page.header["lower bound"] == "150"
    assert page.header["ratio"] == f"{program['cycles'] / 150:.3f}"
    assert page.header["utilization"] == "MEM 10.0%, VXM 5.0%"
    assert page.header["chips"] == "2"
    # self-contained: nothing fetched from anywhere
    html = (out / "timeline.html").read_text()
    assert page.external == []
    assert re.findall(r"https?://[^\"' ]+", html) == ["http://www.w3.org/2000/svg"]
    assert "<script>" in html and "<style>" in html


def test_without_report_json(tmp_path):
    out = _write(tmp_path / "out", _program(chips=1, per_chip=5))
    assert _report(out).exit_code == 0
    page = _parse(out)
    assert page.header["lower bound"] == "n/a" and page.header["ratio"] == "n/a"
    assert page.header["utilization"].startswith("mean over units shown")


def test_big_programs_are_aggregated(tmp_path, monkeypatch):
    monkeypatch.setattr(timeline, "MAX_BARS", 100)
    monkeypatch.setattr(timeline, "BUCKETS", 10)
    program = _program(chips=2, per_chip=60)  # 2 * (3 * 60 + 1) + 1 = 363 instructions
    out = _write(tmp_path / "out", program)
    assert _report(out).exit_code == 0
    page = _parse(out)
    assert page.body["data-mode"] == "buckets"
    assert 0 < len(page.bars) <= len(page.labels) * 10
    assert len(page.bars) < len(program["instructions"])
    assert all("% busy" in b["title"] for b in page.bars)
    # the busy cycles of every row survive aggregation
    busy = sum(int(n) for b in page.bars for n in re.findall(r" (\d+)(?:,|$)", b["title"]))
    assert busy == sum(max(1, i["cycles"]) for i in program["instructions"])


@pytest.mark.parametrize("program,report,message", [
    (None, None, "no target output to report on (cerebras: project.json; groq: program.json"),
    ("{not json", None, "program.json: not valid JSON"),
    (json.dumps({"schema": "other/1", "cycles": 1, "instructions": []}), None,
     "not a q35c-groq-program/1 program"),
    (json.dumps({"schema": "q35c-groq-program/1", "cycles": 1, "instructions": {}}), None,
     "'instructions' must be a list"),
    (json.dumps({"schema": "q35c-groq-program/1", "cycles": 5,
                 "instructions": [{"chip": 0, "cycle": 0, "cycles": 1, "op": "read"}]}),
     None, "instruction 0: 'unit' must be a string"),
    (json.dumps({"schema": "q35c-groq-program/1", "cycles": -1, "instructions": []}), None,
     "'cycles' must be a non-negative integer"),
    (json.dumps(_program(1, 2)), "[1, 2", "report.json: not valid JSON"),
])
def test_bad_input_is_one_line(tmp_path, program, report, message):
    out = tmp_path / "out"
    out.mkdir()
    if program is not None:
        (out / "program.json").write_text(program)
    if report is not None:
        (out / "report.json").write_text(report)
    result = _report(out)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("q35c: error: ") and message in lines[0]
    assert not (out / "timeline.html").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        n for n, v in (("program.json", program), ("report.json", report)) if v is not None)


def test_missing_directory(tmp_path):
    result = _report(tmp_path / "nope")
    assert result.exit_code == 2 and "no such directory" in result.output


def test_malformed_plan_json(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "plan.json").write_text(json.dumps({"schema": "q35c-groq-plan/1", "chips": [{}]}))
    result = _report(out)
    assert result.exit_code == 2 and "plan.json: malformed plan" in result.output
    assert not (out / "timeline.html").exists()


def test_real_groq_program(tmp_path):
    """The timeline of GroqTarget's own program.json (skipped while that target is not
    available in this checkout)."""
    out = tmp_path / "out"
    mlp = Path(__file__).resolve().parents[1] / "examples" / "mlp.mlir"
    compiled = CliRunner().invoke(main, [str(mlp), "--target", "groq", "-o", str(out)])
    if compiled.exit_code != 0 or not (out / "program.json").exists():
        pytest.skip(f"groq target unavailable: {compiled.output.strip()[:200]}")
    program = json.loads((out / "program.json").read_text())
    assert _report(out).exit_code == 0
    page = _parse(out)
    assert len(page.bars) == len(program["instructions"])
    assert {(int(label["data-chip"]), label["data-unit"]) for label in page.labels} == {
        (i["chip"], i["unit"]) for i in program["instructions"]}
    report = json.loads((out / "report.json").read_text())
    assert page.header["lower bound"] == f"{report['lower_bound_cycles']:,}"
    # the legend says what each op is; the macros, whose bars stand for many
    # instructions, are explained on the page itself
    from q35c.targets.groq.timeline import OP_MEANING

    ops = {i["op"] for i in program["instructions"]}
    assert ops <= OP_MEANING.keys()
    html = (out / "timeline.html").read_text()
    for op in ops & {"macro", "group_sums", "rescale"}:
        assert f"<b>{op}</b>: {OP_MEANING[op]}" in html.replace("&#x27;", "'")


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.comments = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_comment(self, data):
        self.comments += 1


HOSTILE = ['"><script>alert(1)</script>', "</title></svg><img src=x onerror=alert(1)>",
           "<!--", "a\0b\x1b[31m\u2028", "</script>"]


@pytest.mark.parametrize("aggregated", [False, True])
def test_names_from_the_program_cannot_add_markup(tmp_path, monkeypatch, aggregated):
    """A program.json (or report.json) from anywhere: every string in it is text."""
    if aggregated:
        monkeypatch.setattr(timeline, "MAX_BARS", 2)
    ins = [{"chip": 0, "unit": u, "queue": q, "cycle": 2 * k, "cycles": 1, "op": o, "buf": b}
           for k, (u, q, o, b) in enumerate(zip(HOSTILE, HOSTILE[1:] + HOSTILE[:1],
                                                HOSTILE[2:] + HOSTILE[:2], HOSTILE[::-1]))]
    program = {"schema": "q35c-groq-program/1", "machine": HOSTILE[0], "chips": HOSTILE[1],
               "cycles": 10, "instructions": ins}
    out = _write(tmp_path / "out", program, {"utilization": {HOSTILE[4]: 0.5}})
    assert _report(out).exit_code == 0
    text = (out / "timeline.html").read_text(encoding="utf-8")
    page = _Tags()
    page.feed(text)
    own = _Tags()
    own.feed(timeline.render({**program, "machine": "m", "chips": 1, "instructions": [
        {**i, "unit": "VXM", "queue": f"q{n}", "op": f"o{n}", "buf": "b"}
        for n, i in enumerate(ins)]}, {"utilization": {"x": 0.5}}))
    assert page.tags == own.tags and page.comments == own.comments == 0
    assert "<script>alert" not in text and "<img" not in text and "\0" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
