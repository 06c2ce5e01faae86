"""The Groq target's embedding tables and generic ONNX ops: a table larger than a chip split
by rows over chips and into pieces per MEM slice group (targets/groq/tables.py), errors that
name the table, and the exporters' generic ops (Cast, Where, IsNaN, And, GatherND, ...) as
macros, each simulated bit-exactly against the interpreter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.driver import Options, compile_to_module
from q35c.compiler.weights import store_of
from q35c.semantics import Interpreter, run_module
from q35c.targets.groq import compile_module
from q35c.targets.groq.machine import load_machine
from q35c.targets.groq.plan import PlanOptions, plan_module
from q35c.targets.groq.simulate import simulate

MACHINE_FILE = Path(__file__).resolve().parents[1] / "targets" / "groq" / "machines" / "tsp-v1.json"


def _small_machine(tmp_path: Path, vectors: int) -> Path:
    """tsp-v1 with `vectors` vectors per slice (16: 450,560 bytes per chip; a data slice
    group holds 20,480 bytes, a weight slice group 35,840)."""
    doc = json.loads(MACHINE_FILE.read_text())
    doc["name"] = f"tiny{vectors}"
    doc["mem"]["vectors_per_slice"] = vectors
    doc["mem"]["slice_bytes"] = vectors * 320
    path = tmp_path / f"tiny{vectors}.json"
    path.write_text(json.dumps(doc))
    return path


def _gather_model(tmp_path: Path, vocab: int, dim: int, count: int = 5) -> Path:
    """y = Gather(table, ids) + 1 with a seeded float32 table [vocab, dim]."""
    table = np.random.default_rng(3).standard_normal((vocab, dim)).astype(np.float32)
    one = numpy_helper.from_array(np.ones((), np.float32), "one")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"]),
         helper.make_node("Add", ["rows", "one"], ["y"])], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, count])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, count, dim])],
        initializer=[numpy_helper.from_array(table, "table"), one])
    path = tmp_path / "gather.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_table_larger_than_a_chip_is_split_over_chips_bit_exact(tmp_path):
    """A 1000 x 128 float table (512,000 bytes) on chips of 450,560: the plan splits its
    rows over chips, each chip's rows are cut into pieces of one weight slice group, and
    the lookup (negative index, first and last row, rows on every chip) is bit-exact."""
    machine = _small_machine(tmp_path, 16)
    ctx, module = compile_to_module(_gather_model(tmp_path, 1000, 128), Options(passes=""))
    store = store_of(module)
    c = compile_module(ctx, module, store, machine=str(machine))
    (split,) = c.report["plan"]["table_splits"]
    assert split["table"] == "table" and split["shape"] == [1000, 128]
    pieces = split["pieces"]
    rows = [p["rows"] for p in pieces]
    assert rows[0][0] == 0 and rows[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
    assert len({p["chip"] for p in pieces}) >= 2 and c.doc["chips"] >= 2
    assert all((r1 - r0) * 128 * 4 <= 7 * 16 * 320 for r0, r1 in rows)
    # each piece is a table in one 7-slice group (layout rows) on its chip
    placed = {b: d for b, d in c.doc["buffers"].items() if d["layout"] == "rows"}
    assert len(placed) == len(pieces) and all(len(d["slices"]) == 7 for d in placed.values())
    assert not any(n.startswith("table.rows") for n in store.names())  # caller's store
    ids = np.array([[-1, 0, 999, 500, rows[1][0]]], np.int64)
    want = run_module(module, store, {"ids": ids})["y"]
    got = simulate(c.doc, c.image, load_machine(machine), c.ops,
                   Interpreter(c.module, c.store), {"ids": ids})
    assert np.array_equal(got["y"], want)


def test_plan_counts_a_float_table_at_four_bytes(tmp_path):
    """The plan's table bytes are the IR's (float32: 4 per element), as the compiled program
    keeps them; table-bytes=1 is the int8 what-if."""
    _, module = compile_to_module(_gather_model(tmp_path, 1000, 128), Options(passes=""))
    (lookup,) = [x for x in plan_module(module, PlanOptions()).matmuls if x["kind"] == "gather"]
    assert lookup["row_bytes"] == 128 * 4
    (lookup,) = [x for x in plan_module(module, PlanOptions(table_bytes=1)).matmuls
                 if x["kind"] == "gather"]
    assert lookup["row_bytes"] == 128


def test_a_row_larger_than_a_slice_group_names_the_table(tmp_path):
    """Rows of 40,000 bytes fit a chip (the planner accepts them) but not a weight slice
    group of 35,840: a one-line SRAM overflow naming the table."""
    machine = _small_machine(tmp_path, 16)
    ctx, module = compile_to_module(_gather_model(tmp_path, 4, 10000, 1), Options(passes=""))
    store = store_of(module)
    with pytest.raises(Q35cError) as err:
        compile_module(ctx, module, store, machine=str(machine))
    text = str(err.value)
    assert "\n" not in text and "SRAM overflow" in text and "table 'table'" in text


def _generic_model(tmp_path: Path) -> Path:
    """The exporters' mask and NaN-guard ops: Cast, GatherND, And, Where, IsNaN, Less."""
    idx = numpy_helper.from_array(np.array([[[0, 2]], [[1, 0]]], np.int64), "idx")
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    nodes = [
        helper.make_node("Cast", ["mask"], ["b"], to=TensorProto.BOOL),
        helper.make_node("GatherND", ["b", "idx"], ["picked"]),
        helper.make_node("Less", ["x", "zero"], ["neg"]),
        helper.make_node("And", ["neg", "b"], ["both"]),
        helper.make_node("IsNaN", ["x"], ["nan"]),
        helper.make_node("Where", ["nan", "zero", "x"], ["clean"]),
        helper.make_node("Where", ["both", "zero", "clean"], ["y"]),
        helper.make_node("Cast", ["picked"], ["p"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes, "generic",
        [helper.make_tensor_value_info("mask", TensorProto.INT64, [2, 3]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("p", TensorProto.FLOAT, [2, 1])],
        initializer=[idx, zero])
    path = tmp_path / "generic.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_generic_onnx_ops_run_as_macros_bit_exact(tmp_path):
    ctx, module = compile_to_module(_generic_model(tmp_path), Options(passes=""))
    ops = {op.op_type.data for op in module.walk() if op.name == "q35nn.onnx_node"}
    assert {"Cast", "GatherND", "And", "Where", "IsNaN"} <= ops
    store = store_of(module)
    c = compile_module(ctx, module, store)
    x = np.array([[1.0, np.nan, -2.0], [-0.5, 3.0, np.nan]], np.float32)
    inputs = {"mask": np.array([[1, 0, 1], [0, 1, 1]], np.int64), "x": x}
    want = run_module(module, store, inputs)
    got = simulate(c.doc, c.image, load_machine("tsp-v1"), c.ops,
                   Interpreter(c.module, c.store or store), inputs)
    for name in ("y", "p"):
        assert np.array_equal(got[name], want[name], equal_nan=True), name


def test_shape_only_folds_a_transposed_weight_as_the_real_import(tmp_path):
    """A tied LM head is MatMul(x, Transpose(table)): the real import folds the Transpose
    into a [K, N] weight that the default pipeline quantizes; --shape-only now does the
    same with a shape-only weight, so the plan sees one Q3P5 matmul either way (it used
    to see a float matmul on a run-time transpose)."""
    table = numpy_helper.from_array(
        np.random.default_rng(5).standard_normal((640, 64)).astype(np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["table"], ["head"], perm=[1, 0]),
         helper.make_node("MatMul", ["x", "head"], ["y"])], "tied",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 640])], initializer=[table])
    path = tmp_path / "tied.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    plans = []
    for shape_only in (False, True):
        _, module = compile_to_module(path, Options(shape_only=shape_only))
        assert "linalg.transpose" not in str(module)
        plans.append([(x["kind"], x["weight"], x.get("k"), x.get("n"))
                      for x in plan_module(module, PlanOptions()).matmuls])
    assert plans[0] == plans[1] == [("matmul", "head.q3p5", 64, 640)]
