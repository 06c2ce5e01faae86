"""Where a C target model's time goes: wall time per step kind, from timers in model.c.

Reads the model.c of `q35c MODEL --target c -o OUT`, wraps every step of the run in a
timer (CLOCK_MONOTONIC, added to the total of its kind: kernel and the op it came from),
builds the runner with the C target's flags in OUT/profile/, runs it on seeded inputs
(`main --seed 1 --bench RUNS`) and prints the kinds by time, with the runner's own median:

    q35c compile decode.dynamo.onnx --target c -o out/dec --shape input_ids=1,1 ...
    python benchmarks/c_step_profile.py out/dec [--runs 20] [--threads 1]

The timers are wall time: on a shared machine, time the OS gave to other processes counts
too (compare kinds within one run, and note the load). Each timer costs some 20-50 ns, so a
model of thousands of tiny steps reads a little slower than without them.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

STEP = re.compile(r"^    \{ /\* (\d+): (.*) -> (\w+) \*/$")
INCLUDE = "#include <stdlib.h>"


def instrument(source: str) -> str:
    """model.c with a timer around every step block and a table printed at exit."""
    out, kinds, current = [], {}, None
    for line in source.split("\n"):
        match = STEP.match(line)
        if match:
            kind = f"{match.group(3)}: {match.group(2)}"
            current = kinds.setdefault(kind, len(kinds))
            out.append(f"    {{ const double q35_t0 = q35_prof_now(); /* {match.group(1)} */")
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
static long q35_prof_n[{n}];
static const char *const q35_prof_names[] = {{{names}}};
static double q35_prof_now(void)
{{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}}
__attribute__((destructor)) static void q35_prof_dump(void)
{{
    double total = 0.0;
    int i, j, order[{n}];
    for (i = 0; i < {n}; i++) {{
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
    fprintf(stderr, "| share | ms | steps run | kernel: op |\\n|---:|---:|---:|---|\\n");
    for (i = 0; i < {n}; i++)
        fprintf(stderr, "| %.2f%% | %.3f | %ld | %s |\\n", 100.0 * q35_prof_t[order[i]] / total,
                1e3 * q35_prof_t[order[i]], q35_prof_n[order[i]], q35_prof_names[order[i]]);
    fprintf(stderr, "total %.3f s in steps\\n", total);
}}"""
    text = "\n".join(out)
    if INCLUDE not in text:
        raise SystemExit(f"c_step_profile: model.c lacks '{INCLUDE}'")
    return text.replace(INCLUDE, prelude, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="a `q35c MODEL --target c -o OUT` folder")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from q35c.targets.c.build import DEFAULT_FLAGS, compiler

    src = args.out_dir
    work = src / "profile"
    work.mkdir(exist_ok=True)
    (work / "model.c").write_text(instrument((src / "model.c").read_text()))
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
