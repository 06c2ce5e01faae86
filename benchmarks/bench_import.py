"""Import time of real exporter output: the SmolLM2-135M exports (examples/smollm2/export.py).

For each graph (prefill/decode x legacy/dynamo: the legacy exporter writes ~7,700 nodes, the
dynamo one ~2,200) and each pipeline, runs in a fresh process

    q35c GRAPH.onnx --shape ... --passes PIPELINE --target mlir -o TMPDIR

where `float` is `--passes ''` (import only) and `default` the default pipeline (quantize,
canonicalize, cse, verify-overflow, verify-quant-error), and reports the median over
--repeat runs of wall time, CPU time (user + system, which the machine's load does not
inflate as much as wall time) and peak RSS (`wait4`'s ru_maxrss). Dynamic dimensions are
bound from their names: batch_size 1, sequence_length --seq (1 for decode graphs),
past_sequence_length --past, total_sequence_length past + seq.

    python benchmarks/bench_import.py [--models /work/models/smollm2/full]
        [--graphs prefill.legacy ...] [--pipelines float default] [--repeat 3]
        [--seq 12] [--past 12] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

GRAPHS = ("prefill.legacy", "prefill.dynamo", "decode.legacy", "decode.dynamo")
PIPELINES = {"float": "", "default": None}


def shape_args(path: Path, seq: int, past: int) -> list[str]:
    """`--shape NAME=dims` for every graph input with a named dimension."""
    model = onnx.load(path, load_external_data=False)
    decode = any(i.name.startswith("past_key_values") for i in model.graph.input)
    step = 1 if decode else seq
    sizes = {"batch_size": 1, "sequence_length": step, "past_sequence_length": past,
             "total_sequence_length": past + step}
    args = []
    for info in model.graph.input:
        dims = info.type.tensor_type.shape.dim
        if any(d.dim_param for d in dims):
            values = [sizes[d.dim_param] if d.dim_param else d.dim_value for d in dims]
            args += ["--shape", f"{info.name}={','.join(map(str, values))}"]
    return args


def run_once(command: list[str]) -> dict[str, float]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one run of `command`."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stderr = process.stderr.read().decode()
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench_import: {' '.join(command)} failed:\n{stderr}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024}


def measure(path: Path, pipeline: str | None, repeat: int, seq: int, past: int
            ) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="q35c-bench-import-") as out:
            command = [sys.executable, "-m", "q35c.compiler.cli", str(path),
                       *shape_args(path, seq, past), "--target", "mlir", "-o", out]
            if pipeline is not None:
                command += ["--passes", pipeline]
            runs.append(run_once(command))
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} CPUs, load average {load}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("/work/models/smollm2/full"))
    parser.add_argument("--graphs", nargs="+", default=list(GRAPHS))
    parser.add_argument("--pipelines", nargs="+", choices=list(PIPELINES),
                        default=list(PIPELINES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seq", type=int, default=12)
    parser.add_argument("--past", type=int, default=12)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    print(f"machine: {machine()}")
    print("| graph | nodes | pipeline | wall s | CPU s | peak RSS MiB |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    rows = []
    for graph in args.graphs:
        path = args.models / f"{graph}.onnx"
        nodes = len(onnx.load(path, load_external_data=False).graph.node)
        for name in args.pipelines:
            result = measure(path, PIPELINES[name], args.repeat, args.seq, args.past)
            rows.append({"graph": graph, "nodes": nodes, "pipeline": name, **result})
            print(f"| {graph} | {nodes} | {name} | {result['wall_s']:.2f} | "
                  f"{result['cpu_s']:.2f} | {result['peak_rss_mib']:.0f} |", flush=True)
    print(f"machine after: {machine()}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
