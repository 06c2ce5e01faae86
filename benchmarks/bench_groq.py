"""Groq target: cycles of the statically scheduled TSP programs against the machine model's
lower bounds, for the example models and large GEMV/GEMM (docs/groq.md, "Measured").

Models:
  llama_tiny    examples/models/llama_tiny.onnx, --shape input_ids=1,8
  encoder_tiny  examples/models/encoder_tiny.onnx, --shape hidden=1,8,64
  mlp           examples/mlp.mlir (x 4x128)
  gemv4096      y[1, 4096] = x[1, 4096] @ W[4096, 4096]
  gemv2048      y[1, 8192] = x[1, 2048] @ W[2048, 8192]
  gemv11008     y[1, 11008] = x[1, 4096] @ W[4096, 11008]
  gemm8x4096    y[8, 4096] = x[8, 4096] @ W[4096, 4096]
  decode4096    one LLaMA decoder layer's decode step over a 4,096-token KV cache: hidden
                1024, 8 query heads on 1 KV head of dim 128 (a LLaMA-70B KV head's share),
                FFN 320, vocab 320 (examples/models/build_llama_shapes.py --kv-cache heads:
                the cached products are int8 MXM matmuls, the caches packed with group 128,
                `quantize-weights{group-for="past_=128"}`)
  decode4096f   the same layer with the float cache (--kv-cache float: the cached products
                are float batched-matmul macros on the VXM)

The decode models are written by this script too (build_llama_shapes.py's graph, every
weight N(0, 0.2^2) float32 from seed 4096, as ONNX initializers), with input_ids 1x1.
The GEMV/GEMM models are written by this script as a .mlir like examples/mlp.mlir (one
`linalg.matmul` of the input and a `quant3p5.weight "w"` of float32) and a .q35w holding W
(N(0, 1/K) float32, seed 4096), which the default pipeline quantizes to Q3P5 (group 32).
Each model goes through what `q35c MODEL --target 'groq{mlir=false}' -o DIR` does (the
frontend and the default pipeline, then the target, which adds int8-activations), and the
table comes from the report.json written in DIR.

The peers are the machine model's bounds from the same report (cycle counts are
deterministic, so there is nothing to take a median of): `lower_bound_cycles` =
max(MXM compute, weight install, MEM read bandwidth, critical path), and
`vxm_bound_cycles` (unpacks plus every VXM macro's ALU cycles over the VXM queues), which
is not part of the lower bound. "ratio" = cycles / lower bound, "ratio VXM" = cycles /
max(lower bound, VXM bound).

Unless --no-simulate, each program is also run by the cycle-level simulator on seeded random
inputs (from the written artifacts, `simulate_dir`), and its outputs are compared with the
interpreter's int8-activation path (`np.array_equal` on every output). Wall times (compile:
frontend + pipeline + groq target; simulate: load + check + execute) are medians over
--repeat runs, in this one process.

    python benchmarks/bench_groq.py [--models llama_tiny,gemv4096,...] [--repeat 1]
                                    [--no-simulate] [--scales codes|f32|int]
                                    [--levels packed|int8] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"

MATMUL_MLIR = """\
// Written by benchmarks/bench_groq.py: y[{m}, {n}] = x[{m}, {k}] @ W[{k}, {n}], W in {stem}.q35w.
builtin.module attributes {{quant3p5.weights = "{stem}.q35w"}} {{
  func.func @main(%x: tensor<{m}x{k}xf32> {{q35c.name = "x"}}) -> (tensor<{m}x{n}xf32> {{q35c.name = "y"}}) {{
    %zero = arith.constant 0.000000e+00 : f32
    %w = quant3p5.weight "w" : tensor<{k}x{n}xf32>
    %e = tensor.empty() : tensor<{m}x{n}xf32>
    %a = linalg.fill ins(%zero : f32) outs(%e : tensor<{m}x{n}xf32>) -> tensor<{m}x{n}xf32>
    %y = linalg.matmul ins(%x, %w : tensor<{m}x{k}xf32>, tensor<{k}x{n}xf32>) outs(%a : tensor<{m}x{n}xf32>) -> tensor<{m}x{n}xf32>
    func.return %y : tensor<{m}x{n}xf32>
  }}
}}
"""  # noqa: E501 (IR text, kept verbatim)


def _floats(name: str, shape: tuple[int, ...]) -> Callable[[np.random.Generator], dict]:
    return lambda rng: {name: rng.standard_normal(shape).astype(np.float32)}


def _ids(shape: tuple[int, ...]) -> Callable[[np.random.Generator], dict]:
    return lambda rng: {"input_ids": rng.integers(0, 256, shape)}


@dataclass
class Model:
    label: str
    make_inputs: Callable[[np.random.Generator], dict]
    path: Path | None = None
    """An example model; None: a matmul written by `write_matmul` from `mkn`."""
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    mkn: tuple[int, int, int] | None = None
    kv_cache: str | None = None
    """A decode layer written by `write_decoder` with this --kv-cache."""
    passes: str | None = None
    """The pipeline (--passes); None: the default."""


MODELS = {
    "llama_tiny": Model("llama_tiny, 1×8", _ids((1, 8)), EXAMPLES / "models" / "llama_tiny.onnx",
                        {"input_ids": (1, 8)}),
    "encoder_tiny": Model("encoder_tiny, 1×8×64", _floats("hidden", (1, 8, 64)),
                          EXAMPLES / "models" / "encoder_tiny.onnx", {"hidden": (1, 8, 64)}),
    "mlp": Model("mlp.mlir", _floats("x", (4, 128)), EXAMPLES / "mlp.mlir"),
    "gemv4096": Model("GEMV 1×4096 · 4096×4096", _floats("x", (1, 4096)), mkn=(1, 4096, 4096)),
    "gemv2048": Model("GEMV 1×2048 · 2048×8192", _floats("x", (1, 2048)), mkn=(1, 2048, 8192)),
    "gemv11008": Model("GEMV 1×4096 · 4096×11008", _floats("x", (1, 4096)),
                       mkn=(1, 4096, 11008)),
    "gemm8x4096": Model("GEMM 8×4096 · 4096×4096", _floats("x", (8, 4096)), mkn=(8, 4096, 4096)),
    "decode4096": Model("decode layer, 8 q / 1 KV head, cache 4096, int8 MXM", _ids((1, 1)),
                        shapes={"input_ids": (1, 1)}, kv_cache="heads",
                        passes='quantize-weights{group-for="past_=128"},canonicalize,cse'),
    "decode4096f": Model("decode layer, 8 q / 1 KV head, cache 4096, float VXM", _ids((1, 1)),
                         shapes={"input_ids": (1, 1)}, kv_cache="float"),
}

TERM_NAMES = {"mxm_compute": "MXM", "weight_install": "install", "mem_read_bandwidth": "MEM",
              "critical_path": "critical path"}


def write_matmul(stem: str, mkn: tuple[int, int, int], directory: Path) -> Path:
    """`stem.mlir` and `stem.q35w` (W: N(0, 1/K) float32, seed 4096) in `directory`."""
    from q35c.compiler.weights import WeightStore

    m, k, n = mkn
    rng = np.random.default_rng(4096)
    store = WeightStore()
    store["w"] = (rng.standard_normal((k, n), dtype=np.float32) / np.sqrt(k)).astype(np.float32)
    store.save(directory / f"{stem}.q35w")
    path = directory / f"{stem}.mlir"
    path.write_text(MATMUL_MLIR.format(m=m, k=k, n=n, stem=stem))
    return path


def write_decoder(stem: str, kv_cache: str, directory: Path) -> Path:
    """`stem.onnx`: build_llama_shapes.py's graph of one decoder layer over a 4,096-token
    cache (see `decode4096`), every weight N(0, 0.2^2) float32 from seed 4096."""
    import importlib.util
    from dataclasses import replace

    import onnx
    from onnx import numpy_helper

    spec = importlib.util.spec_from_file_location(
        "build_llama_shapes", EXAMPLES / "models" / "build_llama_shapes.py")
    builder = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = builder  # dataclasses look their module up
    spec.loader.exec_module(builder)
    config = replace(builder.PRESETS["tiny"], layers=1, hidden=1024, ffn=320, heads=8,
                     kv_heads=1, vocab=320, context=4096, kv_cache=kv_cache)
    model = builder.build(config, f"{stem}.weights")
    rng = np.random.default_rng(4096)
    for i, t in enumerate(model.graph.initializer):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            data = (0.2 * rng.standard_normal(tuple(t.dims))).astype(np.float32)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(data, t.name))
    path = directory / f"{stem}.onnx"
    onnx.save(model, path)
    return path


def compile_groq(path: Path, shapes: dict, out_dir: Path, scales: str = "codes",
                 levels: str = "packed", passes: str | None = None):
    """What `q35c PATH [--passes PASSES] --target 'groq{mlir=false scales=SCALES
    levels=LEVELS}' -o OUT_DIR` does, in this process.
    Returns (ctx, module after the pipeline, its store)."""
    from q35c.compiler.driver import Options, compile_to_module
    from q35c.compiler.weights import store_of
    from q35c.targets.groq import GroqTarget

    ctx, module = compile_to_module(path, Options(target="groq", shapes=shapes, passes=passes))
    store = store_of(module)
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # its one-line summary
        GroqTarget(mlir=False, scales=scales, levels=levels).write(ctx, module, store, out_dir,
                                                                   path.stem)
    return ctx, module, store


def dominant(report: dict) -> str:
    """The largest term of the lower bound, and when that is the critical path (which
    contains each matmul's own max(MXM, install, MEM) + latency), the largest of the
    three throughput terms in brackets."""
    terms = report["lower_bound_terms"]
    top = max(terms, key=terms.get)
    text = TERM_NAMES.get(top, top)
    if top == "critical_path":
        rest = {k: v for k, v in terms.items() if k != top}
        second = max(rest, key=rest.get)
        text += f" ({TERM_NAMES.get(second, second)} {rest[second]})"
    return text


def bench_model(name: str, model: Model, work: Path, repeat: int, simulate: bool,
                scales: str = "codes", levels: str = "packed") -> dict:
    from q35c.semantics import run_module
    from q35c.targets.groq import int8_module, simulate_dir
    from q35c.targets.groq.machine import load_machine

    if model.path is None:
        (work / "src").mkdir(parents=True, exist_ok=True)
        path = (write_decoder(name, model.kv_cache, work / "src") if model.kv_cache
                else write_matmul(name, model.mkn, work / "src"))
    else:
        path = model.path
    out_dir = work / name
    compile_s = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ctx, module, store = compile_groq(path, model.shapes, out_dir, scales, levels,
                                          model.passes)
        compile_s.append(time.perf_counter() - t0)
    report = json.loads((out_dir / "report.json").read_text())
    row = {"name": name, "model": model, "report": report,
           "compile_s": statistics.median(compile_s)}
    if simulate:
        inputs = model.make_inputs(np.random.default_rng(7))
        simulate_s = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            got = simulate_dir(out_dir, inputs, ctx)
            simulate_s.append(time.perf_counter() - t0)
        lanes = load_machine().lanes if scales == "int" else 0  # the rescale contract
        want = run_module(int8_module(ctx, module, lanes), store, inputs)
        row["simulate_s"] = statistics.median(simulate_s)
        row["exact"] = sorted(got) == sorted(want) and all(
            got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key])
            for key in want)
    return row


def print_table(rows: list[dict], clock_hz: float) -> None:
    simulated = "exact" in rows[0]
    print(f"\nGroq target (machine {rows[0]['report']['machine']}, "
          f"{clock_hz / 1e6:.0f} MHz); ratio = cycles / lower bound, ratio VXM = cycles / "
          "max(lower bound, VXM bound)\n")
    head = ("| model | chips | cycles | µs | lower bound | dominant term | ratio | VXM bound "
            "| ratio VXM | SRAM bytes | instructions | compile s |")
    rule = "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"
    if simulated:
        head += " simulate s | bit-exact |"
        rule += "---:|---|"
    print(head)
    print(rule)
    for row in rows:
        r = row["report"]
        bound, vxm = r["lower_bound_cycles"], r["vxm_bound_cycles"]
        line = (f"| {row['model'].label} | {r['chips']} | {r['cycles']} | "
                f"{r['cycles'] / r['clock_hz'] * 1e6:.2f} | {bound} | {dominant(r)} | "
                f"{r['cycles'] / bound:.2f} | {vxm} | {r['cycles'] / max(bound, vxm):.2f} | "
                f"{r['sram_bytes']} | {r['instructions']} | {row['compile_s']:.2f} |")
        if simulated:
            line += f" {row['simulate_s']:.2f} | {'yes' if row['exact'] else 'NO'} |"
        print(line)
    print("\nlower bound terms (cycles):\n")
    print("| model | MXM | install | MEM | critical path |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        t = row["report"]["lower_bound_terms"]
        print(f"| {row['model'].label} | {t['mxm_compute']} | {t['weight_install']} | "
              f"{t['mem_read_bandwidth']} | {t['critical_path']} |")
    layers = [(row, layer) for row in rows for layer in row["report"]["matmul_layers"]
              if ".past_" in layer["weight"]]
    if layers:
        print("\nKV-cache matmuls (cycles from input ready to result; bound = max(MXM, "
              "install, MEM) + latency):\n")
        print("| model | weight | K x N | rows | group | achieved | bound | with VXM |")
        print("|---|---|---|---:|---:|---:|---:|---:|")
        for row, layer in layers:
            k, n = layer["shape"]
            print(f"| {row['model'].label} | {layer['weight']} | {k}×{n} | {layer['rows']} | "
                  f"{layer['group']} | {layer['achieved_cycles']} | {layer['bound_cycles']} | "
                  f"{layer['bound_with_vxm_cycles']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--repeat", type=int, default=1,
                        help="compile and simulate runs per model (wall times: median)")
    parser.add_argument("--no-simulate", action="store_true",
                        help="skip the simulator run and the comparison with the interpreter")
    parser.add_argument("--scales", choices=("codes", "f32", "int"), default="codes",
                        help="the weight layout (groq{scales=...}): packed group codes, "
                             "decoded float32 scales and offsets, or the integer rescale "
                             "contract (with --levels int8)")
    parser.add_argument("--levels", choices=("packed", "int8"), default="packed",
                        help="the weights (groq{levels=...}): packed pair codes, or int8 "
                             "levels installed from MEM")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep the artifacts (DIR/MODEL/report.json, program.json, ...; "
                             "DIR/src/ the written GEMV/GEMM and decode models)")
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    print(f"q35c Groq target benchmark; numpy {np.__version__}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f}; repeat {args.repeat}; scales {args.scales}; "
          f"levels {args.levels}"
          f"{'' if args.no_simulate else '; simulating'}")
    sys.stdout.flush()
    with tempfile.TemporaryDirectory(prefix="q35c-groq-") as tmp:
        work = args.out if args.out is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        for name in names:
            rows.append(bench_model(name, MODELS[name], work, args.repeat, not args.no_simulate,
                                    args.scales, args.levels))
            print(f"  {name}: {rows[-1]['report']['cycles']} cycles, compile "
                  f"{rows[-1]['compile_s']:.2f} s", file=sys.stderr)
        print_table(rows, rows[0]["report"]["clock_hz"])
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    if any(row.get("exact") is False for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
