"""Find every node of an exported SmolLM2 graph that q35c's float import cannot take yet.

    python examples/smollm2/import_probe.py examples/smollm2/out/layers2 prefill.dynamo.onnx

`q35c run GRAPH --passes ''` stops at the first failure. To see the failures behind it, this
script peels them off one at a time: it computes the outputs of the failing nodes with
onnxruntime for the reference prompt (reference/input_ids.npy; a decode graph gets the
matching prefill graph's KV cache and the first greedy token), replaces those nodes by
constants in a copy of the graph (written next to the original, `probe.<name>`, so that its
external data resolves, and removed at the end) and runs q35c again, until the run succeeds
or fails in a way that names no node. Each step prints the q35c error line and the nodes
replaced. When the run succeeds, its logits are compared with onnxruntime on the original
graph (max |diff| / max |reference|).

The constants hold only for these inputs: this is a diagnostic for the ONNX-coverage work,
not a way to compile the model.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from export import causal_inputs, graph_file, max_rel_error, past_names
from onnx import numpy_helper

UNSUPPORTED = re.compile(r"unsupported operators: (.*)$")
NODE = re.compile(r"node '([^']*)' \(([A-Za-z0-9_:]+)\)")
MAX_STEPS = 60


def probe_feeds(folder: Path, name: str) -> dict[str, np.ndarray]:
    """Inputs for the graph `name` of an export folder, from its reference prompt."""
    import onnxruntime as ort

    ids = np.load(folder / "reference" / "input_ids.npy")
    if name.startswith("prefill."):
        return causal_inputs(ids, 0)
    exporter = name.split(".")[1]
    prefill = ort.InferenceSession(str(folder / graph_file("prefill", exporter)),
                                   providers=["CPUExecutionProvider"])
    logits, *cache = prefill.run(None, causal_inputs(ids, 0))
    feeds = causal_inputs(np.array([[int(np.argmax(logits[0, -1]))]]), ids.shape[1])
    feeds.update(zip(past_names(len(cache) // 2), cache))
    return feeds


def failing_nodes(message: str, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes a q35c error line blames: every node of an unsupported op type, or the one
    node it names."""
    unsupported = UNSUPPORTED.search(message)
    if unsupported:
        ops = {part.split(" x")[0].strip() for part in unsupported.group(1).split(";")}
        return [n for n in graph.node if n.op_type in ops]
    named = NODE.search(message)
    if named:
        return [n for n in graph.node if (n.name or n.op_type) == named.group(1)
                and n.op_type == named.group(2)][:1]
    return []


def node_values(path: Path, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Values of intermediate tensors of the graph at `path`, computed by onnxruntime."""
    import onnxruntime as ort

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    known = {v.name: v for v in [*model.graph.value_info, *model.graph.output,
                                 *model.graph.input]}
    del model.graph.output[:]
    model.graph.output.extend(known.get(n) or onnx.helper.make_empty_tensor_value_info(n)
                              for n in names)
    scratch = path.with_name("probe.values." + path.name)
    onnx.save(model, str(scratch))
    try:
        session = ort.InferenceSession(str(scratch), providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        return session.run(None, {k: v for k, v in feeds.items() if k in wanted})
    finally:
        scratch.unlink()


def replace_by_constants(path: Path, nodes: list[onnx.NodeProto],
                         values: dict[str, np.ndarray]) -> None:
    """Remove `nodes` from the graph at `path`, their outputs becoming initializers."""
    model = onnx.load(str(path), load_external_data=False)
    drop = {n.name for n in nodes}
    kept = [n for n in model.graph.node if n.name not in drop]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    for node in nodes:
        for output in node.output:
            if output:
                model.graph.initializer.append(numpy_helper.from_array(values[output], output))
    onnx.save(model, str(path))


def run_q35c(path: Path, feeds: dict[str, np.ndarray], work: Path) -> subprocess.CompletedProcess:
    args = [str(Path(sys.executable).parent / "q35c"), "run", str(path), "--passes", "",
            "-o", str(work / "out")]
    for name, value in feeds.items():
        np.save(work / f"{name}.npy", value)
        args += ["--shape", f"{name}={','.join(map(str, value.shape))}",
                 "--input", f"{name}={work / f'{name}.npy'}"]
    return subprocess.run(args, capture_output=True, text=True)


def probe(folder: Path, name: str) -> int:
    original = folder / name
    feeds = probe_feeds(folder, name)
    copy = folder / f"probe.{name}"
    onnx.save(onnx.load(str(original), load_external_data=False), str(copy))
    replaced_total = 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            for step in range(1, MAX_STEPS + 1):
                result = run_q35c(copy, feeds, work)
                if result.returncode == 0:
                    break
                message = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
                message = message.replace(str(copy), name).replace(copy.name, name)
                graph = onnx.load(str(copy), load_external_data=False).graph
                nodes = failing_nodes(message, graph)
                print(f"step {step}: {message}")
                if not nodes:
                    print(f"stopped: the error names no node ({replaced_total} nodes replaced)")
                    return 1
                outputs = [o for n in nodes for o in n.output if o]
                values = dict(zip(outputs, node_values(original, outputs, feeds)))
                replace_by_constants(copy, nodes, values)
                replaced_total += len(nodes)
                print(f"  replaced {len(nodes)} node(s) by constants: "
                      + ", ".join(f"{n.name} ({n.op_type})" for n in nodes[:6])
                      + (", ..." if len(nodes) > 6 else ""))
            else:
                print(f"stopped after {MAX_STEPS} steps")
                return 1
            import onnxruntime as ort

            session = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
            reference = session.run(["logits"], feeds)[0]
            logits = np.load(work / "out" / "logits.npy")
            print(f"q35c run --passes '' succeeded after replacing {replaced_total} node(s); "
                  f"logits max rel error vs onnxruntime: {max_rel_error(logits, reference):.2e}")
            return 0
    finally:
        copy.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="an export.py output folder")
    parser.add_argument("graphs", nargs="+", help="graph file names, e.g. prefill.dynamo.onnx")
    args = parser.parse_args(argv)
    status = 0
    for name in args.graphs:
        print(f"== {name}")
        status |= probe(args.folder, name)
    return status


if __name__ == "__main__":
    sys.exit(main())
