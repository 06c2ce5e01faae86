"""Print the op-type histogram of ONNX files: what an importer has to cover, most used first.

    python examples/smollm2/op_census.py examples/smollm2/out/full/*.onnx
    python examples/smollm2/op_census.py --markdown a.onnx b.onnx   # one table, a column per file

Reads only the graph (never the external data). Nodes inside subgraphs (If, Loop, Scan
bodies) and inside model-local functions are counted too, under their own op type, since an
importer meets them all; an op of a non-default domain is written `domain::Op`.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError


def op_key(node: onnx.NodeProto) -> str:
    return f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


def graph_nodes(graph: onnx.GraphProto):
    """Every node of `graph` and of the subgraphs in its nodes' attributes, depth first."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            subgraphs = list(attribute.graphs)
            if attribute.HasField("g"):
                subgraphs.insert(0, attribute.g)
            for sub in subgraphs:
                yield from graph_nodes(sub)


def census(model: onnx.ModelProto) -> Counter[str]:
    """Op-type counts over the main graph, its subgraphs and the model's local functions."""
    counts = Counter(op_key(n) for n in graph_nodes(model.graph))
    for function in model.functions:
        counts.update(op_key(n) for n in function.node)
    return counts


def load_graph(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path), load_external_data=False)


def text_report(path: Path, counts: Counter[str]) -> str:
    lines = [f"{path}: {sum(counts.values())} nodes, {len(counts)} op types"]
    lines += [f"  {count:6d}  {op}" for op, count in sorted(counts.items(),
                                                            key=lambda kv: (-kv[1], kv[0]))]
    return "\n".join(lines) + "\n"


def markdown_table(columns: list[tuple[str, Counter[str]]]) -> str:
    """One row per op type (sorted by total count), one column per file, plus a total row."""
    ops = sorted({op for _, c in columns for op in c},
                 key=lambda op: (-sum(c[op] for _, c in columns), op))
    lines = ["| op | " + " | ".join(name for name, _ in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    lines += [f"| {op} | " + " | ".join(str(c[op]) if c[op] else "" for _, c in columns) + " |"
              for op in ops]
    lines.append("| **nodes** | " + " | ".join(str(sum(c.values())) for _, c in columns) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, metavar="MODEL.onnx")
    parser.add_argument("--markdown", action="store_true",
                        help="one markdown table with a column per file")
    args = parser.parse_args(argv)
    try:
        columns = [(path.name, census(load_graph(path))) for path in args.files]
    except (OSError, DecodeError) as error:
        print(f"op_census.py: error: {error}", file=sys.stderr)
        return 2
    if args.markdown:
        sys.stdout.write(markdown_table(columns))
    else:
        for path, (_, counts) in zip(args.files, columns):
            sys.stdout.write(text_report(path, counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
