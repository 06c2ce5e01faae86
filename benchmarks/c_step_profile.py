"""Where a C target model's time goes: wall time per step kind, from timers in model.c.

Reads the model.c of `q35c MODEL --target c -o OUT`, wraps every step of the run in a
timer (CLOCK_MONOTONIC, added to the total of its kind: kernel and the op it came from),
builds the runner with the C target's flags in OUT/profile/, runs it on seeded inputs
(`main --seed 1 --bench RUNS`) and prints the kinds by time, with the runner's own median:

    q35c compile decode.dynamo.onnx --target c -o out/dec --shape input_ids=1,1 ...
    python benchmarks/c_step_profile.py out/dec [--runs 20] [--threads 1]

With --roles the rows are what the steps do in a LLaMA-style decoder rather than their
kernels: the quantized matmuls by shape (K x N, read from model.bin; the LM head is the
widest), RMSNorm, RoPE, the KV cache concatenation (past into `present`), attention
(scores, mask, softmax, weighted values), head transposes, SwiGLU, residual adds, int8
activation quantization and the prologue (mask and position tables). The roles follow from
the order of the steps (a norm starts at a square, fill, reduce; the matmuls after it are q,
k, v, o or gate, up, down), so they fit graphs shaped like examples/smollm2's exports;
anything else is "other".

The timers are wall time: on a shared machine, time the OS gave to other processes counts
too (compare kinds within one run, and note the load). Each timer costs some 20-50 ns, so a
model of thousands of tiny steps reads a little slower than without them.
"""

from __future__ import annotations

import argparse
import os
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

STEP = re.compile(r"^    \{ /\* (\d+): (.*) -> (\w+) \*/$")
INCLUDE = "#include <stdlib.h>"
KEEP = "if (!m->inputs_in_outputs) {"
MATMUL_KERNELS = ("qmatmul_f32", "qmatmul_i8")
WEIGHT = re.compile(r"\bW \+ (\d+)\)?, ")


def steps_of(source: str) -> list[tuple[str, str, str]]:
    """(op, kernel, body text) of every step of a model.c, in order."""
    steps, body = [], None
    for line in source.split("\n"):
        match = STEP.match(line)
        if match:
            body = []
            steps.append((match.group(2), match.group(3), body))
        elif body is not None and line == "    }":
            body = None
        elif body is not None:
            body.append(line)
    return [(op, kernel, "\n".join(lines)) for op, kernel, lines in steps]


def matmul_shape(body: str, blob: bytes) -> tuple[int, int] | None:
    """(K, N) of a quantized matmul step: its Q3P5 entry's header in the blob."""
    match = WEIGHT.search(body)
    if match is None:
        return None
    offset = int(match.group(1))
    return struct.unpack_from("<II", blob, offset + 8) if offset + 16 <= len(blob) else None


def roles(steps: list[tuple[str, str, str]], blob: bytes) -> list[str]:
    """The role of every step in a LLaMA-style decoder (module docstring)."""
    shapes = [matmul_shape(body, blob) if kernel in MATMUL_KERNELS else None
              for _, kernel, body in steps]
    widest = max((s[1] for s in shapes if s), default=0)
    out, block, count, norm, concat_seen = [], "", 0, False, False
    for i, ((op, kernel, body), shape) in enumerate(zip(steps, shapes)):
        nxt = [o for o, _, _ in steps[i + 1:i + 3]]
        if op == "arith.mulf" and nxt[:2] == ["linalg.fill", "linalg.reduce"]:
            norm, count, concat_seen = True, 0, False
            block = "attn" if block != "attn" else "mlp"
        if shape is not None:
            norm, count = False, count + 1
            k, n = shape
            out.append(f"LM head matmul {k}x{n}" if n == widest and n > 4 * k
                       else f"matmul {k}x{n}")
        elif kernel == "quantize_activations":
            out.append("int8 activation quantization")
        elif kernel == "qgather_f32" or op == "quant3p5.gather":
            out.append("embedding gather")
        elif norm:
            out.append("RMSNorm")
        elif not block:
            out.append("prologue (mask, positions, RoPE tables)")
        elif op == "linalg.transpose":
            out.append("head transposes")
        elif op == "tensor.concat" and "present" in body:
            concat_seen = True
            out.append("KV cache concat (past -> present)")
        elif block == "attn" and count == 3:
            out.append("attention (q k^T, mask, softmax, p v)" if concat_seen else "RoPE")
        elif op == "arith.addf" and count in ((4,) if block == "attn" else (3,)):
            out.append("residual add")
        elif block == "mlp" and count in (1, 2):
            out.append("SwiGLU (silu(gate) * up)")
        else:
            out.append("other")
    return out


def instrument(source: str, label: Callable[[int, str, str], str] | None = None,
               clock: str = "CLOCK_MONOTONIC", keep: bool = False) -> str:
    """model.c with a timer (`clock`) around every step block and a table printed at exit;
    steps add up by label(index, op, kernel) (default: "kernel: op"). The table takes off
    each step the cost of one reading of the clock (measured at exit) and gives the time
    per run of the model. With `keep`, runs after the first skip the concatenations'
    copies of inputs into outputs, as `Decoder` has them skipped (`<m>_set_inputs_in_outputs`:
    the runner feeds the same inputs every run, which the outputs hold after the first)."""
    out, kinds, current, index = [], {}, None, 0
    for line in source.split("\n"):
        match = STEP.match(line)
        if match:
            kind = (label(index, match.group(2), match.group(3)) if label
                    else f"{match.group(3)}: {match.group(2)}")
            index += 1
            current = kinds.setdefault(kind, len(kinds))
            out.append(f"    {{ const double q35_t0 = q35_prof_now(); /* {match.group(1)} */"
                       + (" q35_prof_runs++;" if index == 1 else ""))
        elif current is not None and line == "    }":
            out.append(f"    q35_prof_t[{current}] += q35_prof_now() - q35_t0; "
                       f"q35_prof_n[{current}]++; }}")
            current = None
        else:
            out.append(line)
    if not kinds:
        raise SystemExit("c_step_profile: no steps found (not a q35c --target c model.c?)")
    names = ", ".join('"' + k.replace("\\", "\\\\").replace('"', '\\"') + '"' for k in kinds)
    n = len(kinds)
    prelude = f"""{INCLUDE}
#include <stdio.h>
#include <time.h>
static double q35_prof_t[{n}];
static long q35_prof_n[{n}], q35_prof_runs;
static const char *const q35_prof_names[] = {{{names}}};
static double q35_prof_now(void)
{{
    struct timespec ts;
    clock_gettime({clock}, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}}
__attribute__((destructor)) static void q35_prof_dump(void)
{{
    double total = 0.0, cost, t0;
    int i, j, order[{n}];
    t0 = q35_prof_now();
    for (i = 0; i < 10000; i++)
        cost = q35_prof_now();
    cost = (cost - t0) / 10000;
    for (i = 0; i < {n}; i++) {{
        q35_prof_t[i] -= cost * (double)q35_prof_n[i];
        total += q35_prof_t[i];
        order[i] = i;
    }}
    for (i = 0; i < {n}; i++)
        for (j = i + 1; j < {n}; j++)
            if (q35_prof_t[order[j]] > q35_prof_t[order[i]]) {{
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }}
    fprintf(stderr, "| share | ms per run | steps per run | kind |\\n|---:|---:|---:|---|\\n");
    for (i = 0; i < {n}; i++)
        fprintf(stderr, "| %.2f%% | %.4f | %ld | %s |\\n", 100.0 * q35_prof_t[order[i]] / total,
                1e3 * q35_prof_t[order[i]] / (double)q35_prof_runs,
                q35_prof_n[order[i]] / q35_prof_runs, q35_prof_names[order[i]]);
    fprintf(stderr, "total %.3f ms per run in steps over %ld runs (%s, %.0f ns per reading "
            "taken off)\\n", 1e3 * total / (double)q35_prof_runs, q35_prof_runs, "{clock}",
            1e9 * cost);
}}"""
    text = "\n".join(out)
    if keep:
        text = text.replace(KEEP, "if (!(m->inputs_in_outputs = q35_prof_runs > 1)) {")
    if INCLUDE not in text:
        raise SystemExit(f"c_step_profile: model.c lacks '{INCLUDE}'")
    return text.replace(INCLUDE, prelude, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="a `q35c MODEL --target c -o OUT` folder")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: the calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID), "
                             "what a 1-thread run computed whatever the load")
    parser.add_argument("--keep-cache", action="store_true",
                        help="runs after the first skip the past KV cache's copies into "
                             "the present outputs, as `q35c generate`'s decoder does")
    parser.add_argument("--roles", action="store_true",
                        help="rows by role in a LLaMA-style decoder (module docstring)")
    args = parser.parse_args()
    from q35c.targets.c.build import DEFAULT_FLAGS, compiler

    src = args.out_dir
    work = src / "profile"
    work.mkdir(exist_ok=True)
    source = (src / "model.c").read_text()
    label = None
    if args.roles:
        found = roles(steps_of(source), (src / "model.bin").read_bytes())
        label = lambda index, op, kernel: found[index]  # noqa: E731
    clock = "CLOCK_THREAD_CPUTIME_ID" if args.clock == "cpu" else "CLOCK_MONOTONIC"
    (work / "model.c").write_text(instrument(source, label, clock, args.keep_cache))
    for name in ("model.h", "main.c"):
        (work / name).write_bytes((src / name).read_bytes())
    flags = [f for f in DEFAULT_FLAGS if f != "-Werror"]
    subprocess.run([compiler(), *flags, "-fopenmp", "main.c", "model.c", "-o", "main", "-lm"],
                   cwd=work, check=True)
    (work / "out").mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    print(f"load average {os.getloadavg()[0]:.2f}, {args.threads} thread(s)", file=sys.stderr)
    subprocess.run([str(work / "main"), "--bench", str(args.runs),
                    str((src / "model.bin").resolve()), "--seed", "1", str(work / "out")],
                   cwd=work, env=env, check=True)


if __name__ == "__main__":
    main()
