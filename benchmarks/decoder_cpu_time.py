"""CPU time of `q35c generate --target c`'s decoder on SmolLM2-135M, at one thread.

The decoder of bench_llm's speed stage (`Decoder` with a --prefill-token graph and the
1-token graph, --prefill + --decode cache slots), timed by the calling thread's CPU time
(time.thread_time: at one thread the model runs on it) as well as wall time, so that a
change can be measured on a shared machine where wall times follow the load:

    python benchmarks/decoder_cpu_time.py --model-dir examples/smollm2/out/full --act float

Prints one line: the prefill's CPU ms (min, median), each decode step's (min, median),
the wall medians and the load average. Run it from two checkouts in turn to compare them.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True,
                        help="examples/smollm2/export.py's output folder")
    parser.add_argument("--act", choices=["float", "int8"], default="float")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prefill", type=int, default=128)
    parser.add_argument("--decode", type=int, default=32)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    from q35c.compiler.generate import CompileRequest, Decoder, Sampler, compile_step

    path = args.model_dir / "decode.dynamo.onnx"
    ids = [int(t) for t in np.random.default_rng(0).integers(100, 40000, args.prefill)]
    request = CompileRequest(target="c", act=args.act, context=args.prefill + args.decode,
                             threads=1)
    decoder = Decoder({s: compile_step(path, request, s) for s in (args.prefill, 1)})
    greedy = Sampler()
    prefill, steps = [], []

    def timed(tokens: list[int]) -> np.ndarray:
        cpu, wall = time.thread_time(), time.perf_counter()
        logits = decoder.feed(tokens)
        return logits, (time.thread_time() - cpu, time.perf_counter() - wall)

    for _ in range(args.repeats):
        decoder.reset()
        logits, t = timed(ids)
        prefill.append(t)
        logits = logits[-1]
        for _ in range(args.decode):
            logits, t = timed([greedy(logits)])
            logits = logits[0]
            steps.append(t)
    p, s = np.array(prefill) * 1e3, np.array(steps) * 1e3
    print(f"{args.label} act {args.act}: prefill cpu ms min {p[:, 0].min():.1f} median "
          f"{np.median(p[:, 0]):.1f}, wall median {np.median(p[:, 1]):.1f} | decode step cpu "
          f"ms min {s[:, 0].min():.3f} median {np.median(s[:, 0]):.3f}, wall median "
          f"{np.median(s[:, 1]):.3f} | load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
