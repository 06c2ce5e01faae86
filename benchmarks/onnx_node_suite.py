"""Run the ONNX backend node suite (generated in-process by the onnx wheel) through q35c.

Each case is a one- or few-node model with inputs and expected outputs. It is imported with
float weights (`--passes ''`), every input's shape bound to the data, and run on a target
(the interpreter by default). A case ends in one of four ways:

- pass:    every output matches (floats: rtol 1e-3, atol 1e-5, NaNs where expected;
           integers, bools and strings exactly);
- refused: q35c said no with a one-line `Q35cError` (an unsupported op or dtype, a shape
           that depends on run-time values);
- wrong:   it ran, and an output differs from the expected one;
- crash:   any other exception, or a refusal of several lines (a bug: there should be
           none).

    python benchmarks/onnx_node_suite.py [--target interp|c] [-k SUBSTRING] [--json FILE]
                                         [--shard I/N] [--verbose] [--markdown FILE]
    python benchmarks/onnx_node_suite.py [--target T] --from-json FILE ... [--markdown FILE]
    python benchmarks/onnx_node_suite.py --light [NAME ...]

prints one line per operator (passed / refused / wrong / crash) and the totals;
`--markdown docs/onnx.md` rewrites the operator table between the `node-suite-table` markers
of that file (`node-suite-table-c` for `--target c`, and so on). `--from-json` reads the
outcomes of earlier `--json` runs instead of running (shards run in parallel, or a re-run of
some operators: a later file's outcome of a case replaces an earlier one's).
`--light` runs the CNNs the wheel ships instead (onnx/backend/test/data/light:
AlexNet, ResNet-50, ...; all of them, or those named) the way onnx's backend test runner
does: every graph input fed `arange(n) / n`, the output compared with `*_output_0.pb`.
The test module tests/test_onnx_node_suite.py runs it in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

RTOL, ATOL = 1e-3, 1e-5


@dataclass
class Outcome:
    case: str
    op: str
    status: str  # pass | refused | wrong | crash
    detail: str = ""


def collect(substring: str | None = None):
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    return [c for c in sorted(cases, key=lambda c: c.name)
            if substring is None or substring in c.name]


def op_type(case) -> str:
    types = [n.op_type for n in case.model.graph.node]
    return types[0] if len(set(types)) == 1 else case.name.removeprefix("test_").split("_")[0]


def _to_array(value):
    """A tensor as numpy; sequences (lists) and optionals (None) stay as they are: q35c
    refuses non-tensor graph inputs at import, before it looks at the data."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if value is None or isinstance(value, list):
        return value
    return np.asarray(value)


def _matches(got: np.ndarray, want: np.ndarray) -> str:
    """'' when `got` matches `want`, else why not."""
    got = np.asarray(got)
    if got.shape != want.shape:
        return f"shape {got.shape} != {want.shape}"
    if want.dtype.kind in "fc" or str(want.dtype) in ("bfloat16",) or want.dtype.kind == "V":
        got64 = got.astype(np.float64)
        want64 = want.astype(np.float64)
        if got.dtype != want.dtype:
            return f"dtype {got.dtype} != {want.dtype}"
        if not np.allclose(got64, want64, rtol=RTOL, atol=ATOL, equal_nan=True):
            return f"max abs diff {np.nanmax(np.abs(got64 - want64)):.3g}"
        return ""
    if got.dtype != want.dtype:
        return f"dtype {got.dtype} != {want.dtype}"
    return "" if np.array_equal(got, want) else "values differ"


def run_case(case, target: str, work: Path) -> Outcome:
    from q35c.compiler.diagnostics import Q35cError
    from q35c.compiler.driver import Options, run_file

    op = op_type(case)
    model_path = work / f"{case.name}.onnx"
    onnx.save(case.model, model_path)
    graph_inputs = [i.name for i in case.model.graph.input]
    graph_outputs = [o.name for o in case.model.graph.output]
    for index, (inputs, outputs) in enumerate(case.data_sets):
        arrays = {name: _to_array(v) for name, v in zip(graph_inputs, inputs)}
        shapes = {name: tuple(a.shape) for name, a in arrays.items()
                  if isinstance(a, np.ndarray) and a.ndim > 0}
        shapes = {k: v for k, v in shapes.items() if min(v, default=1) > 0}
        options = Options(target=target, passes="", shapes=shapes)
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = run_file(model_path, arrays, work / f"out{index}", options)
        except Q35cError as err:
            message = str(err)
            if "\n" in message:
                return Outcome(case.name, op, "crash", f"refusal not one line: {message!r}"[:300])
            return Outcome(case.name, op, "refused", message[:300])
        except Exception as err:  # noqa: BLE001 - a crash is what this tool reports
            return Outcome(case.name, op, "crash", f"{type(err).__name__}: {err}"[:300])
        for name, want in zip(graph_outputs, outputs):
            want = _to_array(want)
            if not isinstance(want, np.ndarray):
                return Outcome(case.name, op, "wrong", f"{name}: expected a non-tensor")
            if name not in got:
                return Outcome(case.name, op, "wrong", f"output {name} missing")
            why = _matches(got[name], want)
            if why:
                return Outcome(case.name, op, "wrong", f"{name}: {why}")
    return Outcome(case.name, op, "pass")


def run_suite(target: str = "interp", substring: str | None = None,
              shard: tuple[int, int] = (0, 1)) -> list[Outcome]:
    cases = collect(substring)
    index, count = shard
    cases = cases[index::count]
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            work = Path(tmp) / case.name
            work.mkdir()
            outcomes.append(run_case(case, target, work))
    return outcomes


def summary(outcomes: list[Outcome]) -> str:
    per_op: dict[str, Counter] = defaultdict(Counter)
    for o in outcomes:
        per_op[o.op][o.status] += 1
    lines = [f"{'operator':28s} {'pass':>5s} {'refused':>8s} {'wrong':>6s} {'crash':>6s}"]
    for op in sorted(per_op):
        c = per_op[op]
        lines.append(f"{op:28s} {c['pass']:5d} {c['refused']:8d} {c['wrong']:6d} {c['crash']:6d}")
    total = Counter(o.status for o in outcomes)
    lines.append(f"{'total':28s} {total['pass']:5d} {total['refused']:8d} {total['wrong']:6d} "
                 f"{total['crash']:6d}   ({len(outcomes)} cases)")
    return "\n".join(lines) + "\n"


LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_RTOL, LIGHT_ATOL = 1e-3, 1e-7
"""The tolerances of onnx's backend test runner for these models."""


def light_models() -> list[str]:
    return sorted(p.stem for p in LIGHT_DIR.glob("light_*.onnx"))


def run_light(name: str, target: str, work: Path) -> Outcome:
    """One light model, fed and checked as onnx's backend test runner does."""
    from q35c.compiler.diagnostics import Q35cError
    from q35c.compiler.driver import Options, run_file

    path = LIGHT_DIR / f"{name}.onnx"
    model = onnx.load(path)
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for info in model.graph.input:
        if info.name not in initializers:
            shape = tuple(d.dim_value if d.HasField("dim_value") else 1
                          for d in info.type.tensor_type.shape.dim)
            count = int(np.prod(shape))
            feeds[info.name] = (np.arange(count).reshape(shape) / count).astype(np.float32)
    want = numpy_helper.to_array(onnx.load_tensor(str(LIGHT_DIR / f"{name}_output_0.pb")))
    options = Options(target=target, passes="", shapes={k: v.shape for k, v in feeds.items()})
    try:
        got = run_file(path, feeds, work, options)[model.graph.output[0].name]
    except Q35cError as err:
        return Outcome(name, "model", "refused", str(err)[:300])
    if got.shape != want.shape or not np.allclose(got, want, rtol=LIGHT_RTOL, atol=LIGHT_ATOL):
        diff = np.abs(got.astype(np.float64) - want).max() if got.shape == want.shape else "-"
        return Outcome(name, "model", "wrong", f"shape {got.shape}, max abs diff {diff}")
    return Outcome(name, "model", "pass")


TABLE_BEGIN = "<!-- node-suite-table: generated by benchmarks/onnx_node_suite.py --markdown -->"
TABLE_END = "<!-- /node-suite-table -->"


def table_markers(target: str) -> tuple[str, str]:
    """The markers of `target`'s table in docs/onnx.md (the interpreter's have no suffix)."""
    if target == "interp":
        return TABLE_BEGIN, TABLE_END
    return (f"<!-- node-suite-table-{target}: generated by benchmarks/onnx_node_suite.py "
            f"--target {target} --markdown -->", f"<!-- /node-suite-table-{target} -->")


def _reason(detail: str) -> str:
    """A refusal without the temporary model path and node name, for the table."""
    text = detail.split(".onnx: ", 1)[-1]
    if text.startswith("node '"):
        text = text.split(": ", 1)[-1]
    return text.replace("|", "/")[:90]


def markdown_table(outcomes: list[Outcome], target: str) -> str:
    """The per-operator table for docs/onnx.md: counts and the most common refusal."""
    per_op: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        per_op[o.op].append(o)
    total = Counter(o.status for o in outcomes)
    lines = [f"Node suite on the `{target}` target: **{total['pass']} of {len(outcomes)} pass**, "
             f"{total['refused']} refused, {total['wrong']} wrong, {total['crash']} crash.", "",
             "| operator | cases | pass | refused | wrong | most common refusal |",
             "|---|---:|---:|---:|---:|---|"]
    for op in sorted(per_op, key=str.lower):
        c = Counter(o.status for o in per_op[op])
        reasons = Counter(_reason(o.detail) for o in per_op[op] if o.status == "refused")
        why = f"{reasons.most_common(1)[0][0]}" if reasons else ""
        lines.append(f"| {op} | {len(per_op[op])} | {c['pass']} | {c['refused']} | "
                     f"{c['wrong'] + c['crash']} | {why} |")
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, table: str, target: str = "interp") -> None:
    """Replace the text between `target`'s markers (`table_markers`) in `path` with
    `table`."""
    begin, end = table_markers(target)
    text = path.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{path}: no '{begin}' ... '{end}' markers")
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(f"{head}{begin}\n{table}{end}{tail}")


def load_outcomes(paths: list[Path]) -> list[Outcome]:
    """Outcomes from `--json` files, by case in name order; a later file's replace an
    earlier one's."""
    by_case: dict[str, Outcome] = {}
    for path in paths:
        for item in json.loads(path.read_text()):
            by_case[item["case"]] = Outcome(**item)
    return [by_case[name] for name in sorted(by_case)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="interp")
    parser.add_argument("-k", dest="substring")
    parser.add_argument("--json", type=Path, help="write every case's outcome here")
    parser.add_argument("--shard", default="0/1", help="I/N: run every N-th case from I")
    parser.add_argument("--verbose", action="store_true", help="print non-passing cases")
    parser.add_argument("--light", nargs="*", metavar="NAME",
                        help="run the light CNNs (all, or those named) instead of the suite")
    parser.add_argument("--markdown", type=Path,
                        help="rewrite the operator table between the markers of this file")
    parser.add_argument("--from-json", type=Path, nargs="+", metavar="FILE",
                        help="read outcomes written by --json instead of running")
    args = parser.parse_args(argv)
    index, count = map(int, args.shard.split("/"))
    if args.light is not None:
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.light or light_models():
                o = run_light(name, args.target, Path(tmp) / name)
                print(f"{o.status:8s} {o.case} {o.detail}", flush=True)
        return 0
    outcomes = (load_outcomes(args.from_json) if args.from_json
                else run_suite(args.target, args.substring, (index, count)))
    if args.verbose:
        for o in outcomes:
            if o.status != "pass":
                print(f"{o.status:8s} {o.case}: {o.detail}")
    sys.stdout.write(summary(outcomes))
    if args.markdown:
        write_markdown(args.markdown, markdown_table(outcomes, args.target), args.target)
    if args.json:
        args.json.write_text(json.dumps([o.__dict__ for o in outcomes], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
