"""The Groq target: scheduled TSP programs simulated bit-exactly against the interpreter's
int8-activation path, corrupted programs rejected with precise messages, deterministic
artifacts, the report, SRAM overflow and unsupported ops (docs/groq.md)."""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, INT8, MODELS_DIR, hidden_input, ids_input, q35c, x_input

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.driver import Options, compile_to_module, make_context
from q35c.compiler.quant import storage_bytes
from q35c.compiler.weights import store_of
from q35c.semantics import Interpreter, run_module
from q35c.targets.groq import compile_module, simulate_dir
from q35c.targets.groq.machine import MACHINES_DIR, load_machine
from q35c.targets.groq.simulate import IllegalProgram, simulate

MACHINE = load_machine()


MODELS = {
    "mlp": (EXAMPLES / "mlp.mlir", {}, (4, 128), x_input),
    **{stem: (MODELS_DIR / f"{stem}.onnx", {"input_ids": (1, 8)}, (1, 8), ids_input) for stem in (
        "llama_tiny", "llama_tiny_gather_quantized", "llama_tiny_matmulnbits",
        "llama_tiny_qdq_int4")},
    "llama_tiny@2x5": (MODELS_DIR / "llama_tiny.onnx", {"input_ids": (2, 5)}, (2, 5), ids_input),
    **{stem: (MODELS_DIR / f"{stem}.onnx", {"hidden": (1, 8, 64)}, (1, 8, 64), hidden_input)
       for stem in ("encoder_tiny", "encoder_tiny_qdq_int8")},
}


@functools.cache
def compiled(name: str, passes: str = INT8):
    path, shapes, _, _ = MODELS[name]
    ctx, module = compile_to_module(path, Options(passes=passes, shapes=shapes))
    store = store_of(module)
    return ctx, module, store, compile_module(ctx, module, store)


def _simulate(c, store, inputs, doc=None):
    return simulate(doc if doc is not None else c.doc, c.image, MACHINE, c.ops,
                    Interpreter(c.module, store), inputs)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bit_exact_with_interpreter_int8_path(name):
    _, module, store, c = compiled(name)
    _, _, shape, make = MODELS[name]
    inputs = make(np.random.default_rng(7), shape)
    want = run_module(module, store, inputs)
    got = _simulate(c, store, inputs)
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape
        assert np.array_equal(got[key], want[key]), key


def test_float_module_gets_the_int8_path():
    """Without --act int8 the target inserts int8-activations itself."""
    _, module, store, c = compiled("mlp", "default")
    _, _, shape, make = MODELS["mlp"]
    inputs = make(np.random.default_rng(3), shape)
    _, module8, store8, _ = compiled("mlp")
    want = run_module(module8, store8, inputs)["probs"]
    assert np.array_equal(_simulate(c, store, inputs)["probs"], want)


def test_program_schema_and_report():
    _, _, _, c = compiled("llama_tiny")
    doc, rep = c.doc, c.report
    assert doc["schema"] == "q35c-groq-program/1"
    assert doc["machine"] == "tsp-v1" and doc["chips"] == 1 and doc["cycles"] > 0
    units = set(MACHINE.floorplan) | {"MXM_W0", "MXM_W1", "MXM_E0", "MXM_E1"}
    for ins in doc["instructions"]:
        assert {"chip", "unit", "queue", "cycle", "cycles", "op"} <= set(ins)
        assert ins["unit"] in units and ins["cycles"] >= 1
        assert ins["cycle"] + ins["cycles"] <= doc["cycles"] + 1
    ops = {ins["op"] for ins in doc["instructions"]}
    assert {"read", "write", "unpack", "install", "matmul_pass", "rescale", "macro"} <= ops
    for key in ("cycles", "microseconds", "lower_bound_cycles", "ratio", "utilization",
                "sram_bytes", "chips", "matmul_layers"):
        assert key in rep
    assert rep["cycles"] == doc["cycles"]
    assert rep["lower_bound_cycles"] <= rep["cycles"]
    assert rep["ratio"] == round(rep["cycles"] / rep["lower_bound_cycles"], 3)
    assert abs(rep["microseconds"] - rep["cycles"] / 900) < 1e-2
    assert len(rep["matmul_layers"]) == 15
    for layer in rep["matmul_layers"]:
        assert layer["achieved_cycles"] >= layer["bound_cycles"] > 0
    # weights are held packed: exactly the version-1 Q3P5 bytes (less the 20-byte header +
    # CRC): the per-column arrays, whatever the store's file holds
    store = compiled("llama_tiny")[2]
    want = 0
    for layer in rep["matmul_layers"]:
        t = store[layer["weight"]]
        want += storage_bytes(t.shape, t.group_size, version=1) - 20
    assert rep["weight_packed_bytes"] == want
    assert 0 < rep["sram_bytes"] <= MACHINE.sram_bytes


def test_written_artifacts_deterministic_and_simulatable(tmp_path):
    outs = []
    for i in range(2):
        out = tmp_path / f"o{i}"
        q35c(MODELS["mlp"][0], "--target", "groq", "-o", out)
        outs.append(out)
    names = sorted(p.name for p in outs[0].iterdir())
    assert {"program.json", "program.s", "memory.json", "memory.bin", "report.json",
            "report.txt"} <= set(names)
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    memory = json.loads((outs[0] / "memory.json").read_text())
    assert all(b["live"] is not None for b in memory["buffers"].values())
    assert '"groq.install"() {' in (outs[0] / "program.mlir").read_text()
    listing = (outs[0] / "program.s").read_text()
    assert ".unit VXM" in listing and "IW" in listing and "Unpack" in listing
    # the files alone are enough to run the program
    _, _, shape, make = MODELS["mlp"]
    inputs = make(np.random.default_rng(5), shape)
    _, module8, store8, _ = compiled("mlp")
    got = simulate_dir(outs[0], inputs, make_context())
    assert np.array_equal(got["probs"], run_module(module8, store8, inputs)["probs"])


def test_groq_dialect_module():
    from xdsl.utils.exceptions import VerifyException

    from q35c.dialects.groq import program_module

    doc = copy.deepcopy(compiled("mlp")[3].doc)
    module = program_module(doc)
    module.verify()
    names = {op.name for op in module.ops}
    assert {"groq.read", "groq.write", "groq.unpack", "groq.install", "groq.matmul_pass",
            "groq.macro"} <= names
    _first(doc, "install")["unit"] = "VXM"
    with pytest.raises(VerifyException, match="groq.install cannot issue on VXM"):
        program_module(doc).verify()


def test_cli_run(tmp_path):
    res = q35c("run", MODELS["mlp"][0], "--target", "groq", "--seed", "2", "-o", tmp_path / "g")
    q35c("run", MODELS["mlp"][0], "--act", "int8", "--seed", "2", "-o", tmp_path / "i")
    assert res.returncode == 0
    assert np.array_equal(np.load(tmp_path / "g" / "probs.npy"),
                          np.load(tmp_path / "i" / "probs.npy"))


def test_sram_overflow_tiny_machine(tmp_path):
    doc = json.loads((Path(MACHINE.raw and __file__).parent.parent / "targets" / "groq" /
                      "machines" / "tsp-v1.json").read_text())
    doc["name"] = "tiny"
    doc["mem"]["vectors_per_slice"] = 16
    doc["mem"]["slice_bytes"] = 16 * 320
    machine = tmp_path / "tiny.json"
    machine.write_text(json.dumps(doc))
    out = tmp_path / "out"
    res = q35c(MODELS["llama_tiny"][0], "--shape", "input_ids=1,8", "--target",
               f'groq{{machine="{machine}"}}', "-o", out, check=False)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "SRAM overflow" in res.stderr
    assert re.search(r"buffer \S+ \('[^']+', \d+ bytes\)", res.stderr)  # names the tensor
    assert not out.exists()


def test_unsupported_op(tmp_path):
    src = tmp_path / "floor.mlir"
    src.write_text('''builtin.module {
  func.func @main(%x: tensor<4xf32> {q35c.name = "x"}) -> (tensor<4xf32> {q35c.name = "y"}) {
    %y = "math.floor"(%x) <{fastmath = #arith.fastmath<none>}> : (tensor<4xf32>) -> tensor<4xf32>
    func.return %y : tensor<4xf32>
  }
}
''')
    out = tmp_path / "out"
    res = q35c(src, "--target", "groq", "-o", out, check=False)
    assert res.returncode == 2
    assert res.stderr.strip() == (f"q35c: error: {src}: target groq does not support: "
                                  "math.floor x1 (op 0 of @main)")
    assert not out.exists()


# -- corrupted programs ------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp():
    _, _, store, c = compiled("mlp")
    _, _, shape, make = MODELS["mlp"]
    return c, store, make(np.random.default_rng(1), shape)


def _first(doc, op, **match):
    return next(i for i in doc["instructions"] if i["op"] == op
                and all(i.get(k) == v for k, v in match.items()))


def _movable(doc, op, delta, **match):
    """An instruction of kind `op` that can move by `delta` cycles without meeting another
    instruction on its queue (so that the stream checks are what catch it)."""
    def free(i):
        a, b = i["cycle"] + delta, i["cycle"] + delta + i["cycles"]
        return a >= 0 and not any(o is not i and o["queue"] == i["queue"] and o["chip"] ==
                                  i["chip"] and o["cycle"] < b and a < o["cycle"] + o["cycles"]
                                  for o in doc["instructions"])
    return next(i for i in doc["instructions"] if i["op"] == op
                and all(i.get(k) == v for k, v in match.items()) and free(i))


def _rejects(mlp, doc, *needles):
    c, store, inputs = mlp
    with pytest.raises(IllegalProgram) as err:
        _simulate(c, store, inputs, doc)
    message = str(err.value)
    assert "\n" not in message and message.startswith("cycle ")
    for needle in needles:
        assert needle in message, message
    return message


def test_valid_program_runs(mlp):
    c, store, inputs = mlp
    _simulate(c, store, inputs, copy.deepcopy(c.doc))


def test_move_unpack_one_cycle(mlp):
    doc = copy.deepcopy(mlp[0].doc)
    ins = _movable(doc, "unpack", 1)
    ins["cycle"] += 1
    msg = _rejects(mlp, doc, "stream", f"#{ins['id']} unpack")
    assert "reads no value" in msg or "reads the value of" in msg or "two producers" in msg


def test_move_read_one_cycle(mlp):
    doc = copy.deepcopy(mlp[0].doc)
    ins = _movable(doc, "read", -1, src=-1)
    ins["cycle"] -= 1
    _rejects(mlp, doc, "stream", "unit VXM", "reads no value")


def test_move_pass_one_cycle(mlp):
    doc = copy.deepcopy(mlp[0].doc)
    ins = _first(doc, "matmul_pass")
    others = {i["cycle"] for i in doc["instructions"] if i["queue"] == ins["queue"]}
    ins["cycle"] += 1
    needles = ["queue", "two instructions"] if ins["cycle"] in others else ["stream"]
    _rejects(mlp, doc, *needles)


def test_two_instructions_one_queue(mlp):
    doc = copy.deepcopy(mlp[0].doc)
    a, b = [i for i in doc["instructions"] if i["op"] == "install"][:2]
    b["cycle"] = a["cycle"]
    _rejects(mlp, doc, f"cycle {a['cycle']}", f"queue {a['queue']}", "two instructions")


def test_swap_two_stream_ids(mlp):
    doc = copy.deepcopy(mlp[0].doc)
    ins = _first(doc, "unpack")
    o = ins["out"]
    o[0]["stream"], o[1]["stream"] = o[1]["stream"], o[0]["stream"]
    _rejects(mlp, doc, "unit MXM_", "reads the value of", f"#{ins['id']} unpack")


def test_two_producers_on_one_stream(mlp):
    doc = copy.deepcopy(mlp[0].doc)
    unpack = _first(doc, "unpack")
    a, b = (doc["instructions"][e["src"]] for e in unpack["in"][:2])
    b["out"][0]["stream"] = a["out"][0]["stream"]
    if b["out"][0]["dir"] != a["out"][0]["dir"]:
        pytest.skip("first block's slices lie in different hemispheres")
    _rejects(mlp, doc, "two producers", f"stream {a['out'][0]['dir']}{a['out'][0]['stream']}")


def test_stream_group_mismatch(mlp):
    doc = copy.deepcopy(mlp[0].doc)
    ins = _first(doc, "matmul_pass")
    ins["out"][0]["lane"], ins["out"][1]["lane"] = 1, 0
    _rejects(mlp, doc, "data-type/stream-group mismatch", f"unit {ins['unit']}")


def test_data_type_mismatch(mlp):
    doc = copy.deepcopy(mlp[0].doc)
    ins = _first(doc, "install")
    ins["in"][3]["dtype"] = "i32"
    _rejects(mlp, doc, "data-type/stream-group mismatch")


def test_overlapping_live_buffers(mlp):
    doc = copy.deepcopy(mlp[0].doc)
    temps = [(n, b) for n, b in doc["buffers"].items() if b["kind"] == "temp"]
    (na, a), (nb, b) = temps[0], temps[1]
    b["slices"], b["addr"] = list(a["slices"]), a["addr"]
    for ins in doc["instructions"]:  # keep the instructions consistent with the placement
        if ins.get("buf") == nb:
            ins["addr"] = a["addr"]
    msg = _rejects(mlp, doc, "overlap", "while both are live")
    assert na in msg and nb in msg


def test_sram_overflow_in_program(mlp):
    doc = copy.deepcopy(mlp[0].doc)
    name, b = next((n, b) for n, b in doc["buffers"].items() if b["kind"] == "const")
    b["addr"] = MACHINE.vectors_per_slice
    _rejects(mlp, doc, "SRAM overflow", name)


def test_bank_conflict(mlp):
    doc = copy.deepcopy(mlp[0].doc)
    w = _first(doc, "write")
    # a read of the same slice and bank in the same cycle
    same = [i for i in doc["instructions"] if i["op"] == "read" and i["unit"] == w["unit"]
            and i["cycle"] != w["cycle"]]
    if not same:
        pytest.skip("no read on the written slice")
    r = same[0]
    r["cycle"] = w["cycle"]
    if (r["addr"] - w["addr"]) % 2:
        pytest.skip("different banks")
    _rejects(mlp, doc, f"unit {w['unit']}", "read and write of bank", f"cycle {w['cycle']}")


def test_wrong_weight_buffer(mlp):
    doc = copy.deepcopy(mlp[0].doc)
    ins = _first(doc, "matmul_pass")
    ins["buffer"] = 1 - ins["buffer"]
    _rejects(mlp, doc, f"unit {ins['unit']}", "uses weight buffer")


def test_macro_before_its_producer(mlp):
    doc = copy.deepcopy(mlp[0].doc)
    ins = _first(doc, "rescale")
    ins["cycle"] -= 30
    for h in ins["holds"]:  # its streams move with it
        h["t0"] -= 30
        h["t1"] -= 30
    msg = _rejects(mlp, doc)
    assert "before its producer" in msg or "not of its producers" in msg


def test_move_macro_one_cycle(mlp):
    doc = copy.deepcopy(mlp[0].doc)
    ins = _movable(doc, "macro", 1)
    ins["cycle"] += 1
    _rejects(mlp, doc, f"#{ins['id']} macro", "stream")


def test_read_before_write(mlp):
    doc = copy.deepcopy(mlp[0].doc)
    ins = next(i for i in doc["instructions"] if i["op"] == "read" and i["src"] >= 0)
    ins["src"] = ins["src"] + 1 if ins["src"] + 1 < len(doc["instructions"]) else 0
    _rejects(mlp, doc, f"unit {ins['unit']}", "expected #")


def test_error_names_the_machine_file_problem():
    with pytest.raises(Q35cError, match="built-in machines: .*tsp-v1"):
        load_machine("no-such-machine")


def test_machine_by_path_without_suffix(tmp_path: Path):
    """A path is a path even without `.json`; a bare word is a built-in machine's name."""
    chip = tmp_path / "my-chip"
    chip.write_text((MACHINES_DIR / "tsp-v1.json").read_text().replace(
        '"name": "tsp-v1"', '"name": "my-chip"'))
    assert load_machine(chip).name == load_machine(str(chip)).name == "my-chip"
    assert load_machine("tsp-v1") == MACHINE


def _matmul_model(tmp_path: Path, m: int, k: int, n: int) -> Path:
    from q35c.compiler.weights import WeightStore

    store = WeightStore()
    rng = np.random.default_rng(11)
    store["w"] = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    store.save(tmp_path / "mm.q35w")
    src = tmp_path / "mm.mlir"
    t, r = f"tensor<{m}x{k}xf32>", f"tensor<{m}x{n}xf32>"
    src.write_text(f'''builtin.module attributes {{quant3p5.weights = "mm.q35w"}} {{
  func.func @main(%x: {t} {{q35c.name = "x"}}) -> ({r} {{q35c.name = "y"}}) {{
    %zero = arith.constant 0.000000e+00 : f32
    %w = quant3p5.weight "w" : tensor<{k}x{n}xf32>
    %e = tensor.empty() : {r}
    %a = linalg.fill ins(%zero : f32) outs(%e : {r}) -> {r}
    %y = linalg.matmul ins(%x, %w : {t}, tensor<{k}x{n}xf32>) outs(%a : {r}) -> {r}
    func.return %y : {r}
  }}
}}
''')
    return src


@pytest.mark.parametrize("group", [32, 64])
def test_ragged_shapes_and_group_sizes(tmp_path, group):
    """K not a multiple of the group or of 320, N not a multiple of 320, several rows."""
    src = _matmul_model(tmp_path, 3, 1000, 333)
    ctx, module = compile_to_module(src, Options(
        passes=f"quantize-weights{{group-size={group}}},int8-activations"))
    store = store_of(module)
    c = compile_module(ctx, module, store)
    inputs = {"x": np.random.default_rng(4).standard_normal((3, 1000)).astype(np.float32)}
    want = run_module(module, store, inputs)["y"]
    assert np.array_equal(_simulate(c, store, inputs)["y"], want)
    assert c.report["matmul_layers"][0]["tiles"] == 2


# -- several chips -----------------------------------------------------------------------


@functools.cache
def multichip(tmp_dir: str):
    """llama_tiny on a machine whose slices hold 40 vectors: it needs three chips (more
    than the plan's one: the placement's slice groups)."""
    doc = json.loads(MACHINE_FILE.read_text())
    doc["name"] = "small"
    doc["mem"]["vectors_per_slice"] = 40
    doc["mem"]["slice_bytes"] = 40 * 320
    path = Path(tmp_dir) / "small.json"
    path.write_text(json.dumps(doc))
    ctx, module, store, _ = compiled("llama_tiny")
    return module, store, compile_module(ctx, module, store, machine=str(path)), load_machine(path)


MACHINE_FILE = Path(__file__).resolve().parents[1] / "targets" / "groq" / "machines" / "tsp-v1.json"


@pytest.fixture(scope="module")
def chips(tmp_path_factory):
    return multichip(str(tmp_path_factory.mktemp("machine")))


def _sim_chips(chips, doc, inputs):
    module, store, c, machine = chips
    return simulate(doc, c.image, machine, c.ops, Interpreter(c.module, store), inputs)


def test_multichip_when_weights_do_not_fit(chips):
    module, store, c, machine = chips
    assert c.doc["chips"] > 1 and c.report["chips"] == c.doc["chips"]
    assert len(c.report["sram_bytes_per_chip"]) == c.doc["chips"]
    assert all(0 < x <= machine.sram_bytes for x in c.report["sram_bytes_per_chip"])
    sends = [i for i in c.doc["instructions"] if i["op"] == "send"]
    assert sends and c.report["c2c_transfers"] == len(sends)
    inputs = ids_input(np.random.default_rng(9), (1, 8))
    want = run_module(module, store, inputs)["logits"]
    assert np.array_equal(_sim_chips(chips, c.doc, inputs)["logits"], want)


def test_instructions_round_trip_through_their_classes(chips):
    """Every program.json entry is one typed instruction whose `to_json` gives back the
    entry, keys in the same order (program.json is written from `to_json`)."""
    from q35c.targets.groq.instructions import INSTRUCTION_CLASSES, instruction_from_json

    doc = chips[2].doc
    kinds = set()
    for entry in doc["instructions"]:
        ins = instruction_from_json(entry)
        kinds.add(type(ins))
        assert json.dumps(ins.to_json()) == json.dumps(entry)
        assert instruction_from_json(ins.to_json()) == ins
    assert kinds == set(INSTRUCTION_CLASSES.values())  # every kind is exercised


def test_multichip_receive_off_by_one(chips):
    doc = copy.deepcopy(chips[2].doc)
    recv = _first(doc, "receive")
    recv["cycle"] += 1
    with pytest.raises(IllegalProgram) as err:
        _sim_chips(chips, doc, ids_input(np.random.default_rng(9), (1, 8)))
    msg = str(err.value)
    assert msg.startswith("cycle ") and "C2C" in msg and (
        f"#{recv['id']} receive receives at cycle" in msg or "two" in msg), msg


def test_multichip_two_sends_on_one_link(chips):
    doc = copy.deepcopy(chips[2].doc)
    sends = [i for i in doc["instructions"] if i["op"] == "send"]
    a = sends[0]
    b = next((s for s in sends[1:] if s["chip"] == a["chip"] and s["to"] == a["to"]), None)
    if b is None:
        pytest.skip("no two sends between the same chips")
    recv = doc["instructions"][b["peer"]]
    shift = a["cycle"] - b["cycle"]
    b["cycle"] += shift
    recv["cycle"] += shift
    with pytest.raises(IllegalProgram, match=r"two transfers use the link"):
        _sim_chips(chips, doc, ids_input(np.random.default_rng(9), (1, 8)))


def test_explicit_chip_count(tmp_path):
    out = tmp_path / "o"
    res = q35c(MODELS["mlp"][0], "--target", "groq{chips=2 mlir=false}", "-o", out)
    assert "2 chip(s)" in res.stdout
    doc = json.loads((out / "program.json").read_text())
    assert doc["chips"] == 2 and {i["chip"] for i in doc["instructions"]} == {0, 1}
    _, _, shape, make = MODELS["mlp"]
    inputs = make(np.random.default_rng(6), shape)
    _, module8, store8, _ = compiled("mlp")
    assert np.array_equal(simulate_dir(out, inputs, make_context())["probs"],
                          run_module(module8, store8, inputs)["probs"])


def test_multichip_follows_the_plan(chips):
    """GroqTarget's chips are the planner's layer ranges (plan.py, granule 1): every macro
    and matmul issues on the chip the plan gives its IR op."""
    from q35c.targets.groq import chip_assignment
    from q35c.targets.groq.plan import PlanOptions, plan_module

    module, store, c, machine = chips
    # the plan's SRAM model says fewer chips than the scheduler's placement needs here
    # (40-vector slices); GroqTarget re-plans with one more chip until the program fits
    assert c.report["plan"]["fewest_chips"] < c.doc["chips"]
    plan = plan_module(c.module, PlanOptions(chips=c.doc["chips"], granule=1), machine=machine)
    assert c.report["plan"]["chips"] == plan.summary["chips"] == c.doc["chips"]
    assign = chip_assignment(plan)
    checked = 0
    for ins in c.doc["instructions"]:
        if ins["op"] == "macro":
            assert ins["chip"] == assign[ins["ir_op"]], ins
            checked += 1
    for layer in c.report["matmul_layers"]:
        passes = [i for i in c.doc["instructions"] if i["op"] == "matmul_pass"
                  and i["tag"].startswith(layer["weight"] + ":")]
        assert passes and {i["chip"] for i in passes} == {assign[layer["op_index"]]}
        checked += 1
    assert checked > 10 and len(set(assign.values())) == c.doc["chips"] > 2


def _small_machine(tmp_path: Path, vectors: int) -> Path:
    doc = json.loads(MACHINE_FILE.read_text())
    doc["name"] = f"tiny{vectors}"
    doc["mem"]["vectors_per_slice"] = vectors  # 88 x 16 x 320 = 450,560 bytes per chip
    doc["mem"]["slice_bytes"] = vectors * 320
    path = tmp_path / f"tiny{vectors}.json"
    path.write_text(json.dumps(doc))
    return path


@functools.cache
def column_split(tmp_dir: str):
    """One [256, 3840] matmul (503,040 packed bytes) on a machine of 450,560 bytes per chip:
    its columns are split over chips."""
    tmp = Path(tmp_dir)
    path = _small_machine(tmp, 16)
    src = _matmul_model(tmp, 1, 256, 3840)
    ctx, module = compile_to_module(src, Options(
        passes="quantize-weights{group-size=32},int8-activations"))
    store = store_of(module)
    return src, path, module, store, compile_module(ctx, module, store, machine=str(path))


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return column_split(str(tmp_path_factory.mktemp("split")))


def test_column_split_compiles_bit_exact(split):
    """A weight larger than one chip: one matmul per column shard on the plan's chips, the
    int8 activations sent to every shard's chip and the shards' outputs gathered by a
    tensor.concat; the simulator checks the C2C transfers and the result is bit-exact."""
    src, path, module, store, c = split
    machine = load_machine(path)
    k, n = 256, 3840
    assert storage_bytes((k, n), 32, version=1) > machine.sram_bytes
    (entry,) = c.report["plan"]["column_splits"]
    assert entry["weight"] == "w.q3p5" and entry["shape"] == [k, n]
    shards = entry["shards"]
    chips_of = [s["chip"] for s in shards]
    assert len(set(chips_of)) == len(shards) >= 2 and c.doc["chips"] >= len(shards)
    cols = [s["cols"] for s in shards]
    assert cols[0][0] == 0 and cols[-1][1] == n
    assert all(a[1] == b[0] and a[1] % 320 == 0 for a, b in zip(cols, cols[1:]))
    # every shard's MXM passes run on its chip, and no shard holds all the columns
    for s in shards:
        passes = {i["chip"] for i in c.doc["instructions"]
                  if i["op"] == "matmul_pass" and i["tag"].startswith(s["weight"] + ":")}
        assert passes == {s["chip"]}, s
        assert storage_bytes((k, s["cols"][1] - s["cols"][0]), 32, version=1) < \
            machine.sram_bytes
    # C2C: activations (int8 rows + row scales) into every other shard chip, the partial
    # outputs into the chip of the concat
    recv = [i for i in c.doc["instructions"] if i["op"] == "receive"]
    gather = entry["concat_chip"]
    into = {(i["from"], i["chip"]) for i in recv}
    assert {(x, gather) for x in chips_of if x != gather} <= into
    assert all((chips_of[0], x) in into for x in chips_of[1:])
    assert c.report["c2c_transfers"] == len(recv) >= 2 * (len(shards) - 1) + len(shards) - 1
    cat = [i for i in c.doc["instructions"] if i["op"] == "macro"
           and c.ops[i["ir_op"]].name == "tensor.concat"]
    assert len(cat) == 1 and cat[0]["chip"] == gather
    # the caller's module and store are untouched; the shards live in the target's copy
    assert not any(name.startswith("w.q3p5.cols") for name in store.names())
    assert "tensor.concat" not in str(module) and "tensor.concat" in str(c.module)
    inputs = x_input(np.random.default_rng(12), (1, k))
    want = run_module(module, store, inputs)["y"]
    got = simulate(c.doc, c.image, machine, c.ops, Interpreter(c.module, c.store), inputs)
    assert np.array_equal(got["y"], want)


def test_column_split_corrupted_transfer_rejected(split):
    """The simulator checks the shards' C2C like any other: a receive moved one cycle early
    is rejected."""
    src, path, module, store, c = split
    doc = copy.deepcopy(c.doc)
    recv = _first(doc, "receive")
    recv["cycle"] -= 1
    with pytest.raises(IllegalProgram) as err:
        simulate(doc, c.image, load_machine(path), c.ops, Interpreter(c.module, c.store),
                 x_input(np.random.default_rng(12), (1, 256)))
    assert str(err.value).startswith("cycle ") and "C2C" in str(err.value)


def test_column_split_cli_run_and_determinism(split, tmp_path):
    src, path, module, store, c = split
    target = f'groq{{machine="{path}" mlir=false}}'
    res = q35c("run", src, "--target", target, "--seed", "3", "-o", tmp_path / "g")
    assert res.returncode == 0
    q35c("run", src, "--act", "int8", "--seed", "3", "-o", tmp_path / "i")
    assert np.array_equal(np.load(tmp_path / "g" / "y.npy"), np.load(tmp_path / "i" / "y.npy"))
    outs = []
    for i in range(2):
        out = tmp_path / f"o{i}"
        res = q35c(src, "--target", target, "-o", out)
        outs.append(out)
    names = sorted(p.name for p in outs[0].iterdir())
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    rep = json.loads((outs[0] / "report.json").read_text())
    assert rep["plan"]["column_splits"] and rep["chips"] > 1
    inputs = x_input(np.random.default_rng(13), (1, 256))
    _, module8 = compile_to_module(src, Options(passes=INT8))
    assert np.array_equal(simulate_dir(outs[0], inputs, make_context())["y"],
                          run_module(module8, store_of(module8), inputs)["y"])


def test_cost_model_counts_match_the_schedule():
    """targets/groq/cost.py's per-matmul work (used by the planner) equals what the
    scheduler issues, layer by layer."""
    from q35c.targets.groq import cost

    for name in ("llama_tiny", "mlp"):
        ctx, module, store, _ = compiled(name)
        c = compile_module(ctx, module, store)
        vxm_alu = {}
        for ins in c.doc["instructions"]:
            if ins["op"] == "rescale":
                key = ins["partials"][0].split(":")[0]
                vxm_alu[key] = vxm_alu.get(key, 0) + ins["alu_cycles"]
        for layer in c.report["matmul_layers"]:
            k, n = layer["shape"]
            work = cost.matmul_work(MACHINE, k, n, layer["group"], layer["rows"])
            assert work["mxm_passes"] == layer["mxm_passes"], layer["weight"]
            assert work["installs"] == layer["installs"], layer["weight"]
            assert work["packed_bytes"] == layer["packed_bytes"], layer["weight"]
            assert work["last_rescale_groups"] == layer["last_rescale_groups"]
            assert work["rescale_alu_cycles"] == vxm_alu[f"v{layer['op_index']}"]


# -- weight layouts (groq{scales=f32}, groq{levels=int8}) --------------------------------

LAYOUTS = [("f32", "packed"), ("codes", "int8"), ("f32", "int8")]


@functools.cache
def compiled_layout(name: str, scales: str, levels: str):
    ctx, module, store, _ = compiled(name)
    return compile_module(ctx, module, store, scales=scales, levels=levels)


@pytest.mark.parametrize("scales,levels", LAYOUTS)
@pytest.mark.parametrize("name", ["mlp", "llama_tiny", "llama_tiny@2x5", "encoder_tiny"])
def test_weight_layouts_bit_exact(name, scales, levels):
    """Decoded scales and int8 levels change where the bytes sit and which unit decodes
    them, never a result: bit-exact with the interpreter's int8 path."""
    _, module, store, _ = compiled(name)
    c = compiled_layout(name, scales, levels)
    _, _, shape, make = MODELS[name]
    inputs = make(np.random.default_rng(7), shape)
    want = run_module(module, store, inputs)
    got = _simulate(c, store, inputs)
    for key in want:
        assert np.array_equal(got[key], want[key]), key
    ops = {ins["op"] for ins in c.doc["instructions"]}
    assert ("unpack" in ops) == (levels == "packed")
    rescales = [ins for ins in c.doc["instructions"] if ins["op"] == "rescale"]
    assert all((ins.get("scales") is not None) == (scales == "f32") for ins in rescales)


@pytest.mark.parametrize("scales,levels", LAYOUTS)
def test_weight_layout_cost_model_counts_match_the_schedule(scales, levels):
    """cost.py's work per matmul in each layout (installs, bytes, rescale ALU cycles: no
    decode ops with decoded scales) equals what the scheduler issues."""
    from q35c.targets.groq.machine import with_layout

    assert_cost_model_matches(with_layout(MACHINE, scales, levels),
                              compiled_layout("llama_tiny", scales, levels))


def assert_cost_model_matches(machine, c) -> None:
    """cost.matmul_work on `machine` gives each matmul layer of the compiled program `c`
    the installs, packed bytes and rescale ALU cycles its schedule issues."""
    from q35c.targets.groq import cost

    vxm_alu: dict[str, int] = {}
    for ins in c.doc["instructions"]:
        if ins["op"] == "rescale":
            key = ins["partials"][0].split(":")[0]
            vxm_alu[key] = vxm_alu.get(key, 0) + ins["alu_cycles"]
    for layer in c.report["matmul_layers"]:
        k, n = layer["shape"]
        work = cost.matmul_work(machine, k, n, layer["group"], layer["rows"])
        assert work["installs"] == layer["installs"]
        assert work["packed_bytes"] == layer["packed_bytes"]
        assert work["rescale_alu_cycles"] == vxm_alu[f"v{layer['op_index']}"]


def test_int8_levels_corrupted_install_read_rejected():
    """An install fed by MEM reads checks them like unpacked levels: a level row read one
    cycle late no longer reaches the plane with the others."""
    c = compiled_layout("mlp", "codes", "int8")
    doc = copy.deepcopy(c.doc)
    busy = {(i["queue"], i["cycle"]) for i in doc["instructions"]}
    ins = next(i for i in doc["instructions"] if i["op"] == "read"
               and i["buf"].endswith(":payload") and (i["queue"], i["cycle"] + 1) not in busy)
    ins["cycle"] += 1
    _, _, store, _ = compiled("mlp")
    with pytest.raises(IllegalProgram, match="reads"):
        _simulate(c, store, {"x": np.zeros((4, 128), np.float32)}, doc)


def test_weight_layout_options_checked(tmp_path):
    result = q35c(EXAMPLES / "mlp.mlir", "--target", "groq{levels=int4}", "-o",
                  tmp_path / "out", check=False)
    assert result.returncode == 2 and "levels" in result.stderr
    assert not (tmp_path / "out" / "program.json").exists()


# -- large matmuls: split tiles, shared activation reads, partial installs (issue #20) ------

@functools.cache
def compiled_matmul(tmp: str, scales: str, levels: str, mkn=(1, 960, 1600)):
    """y = x @ W as benchmarks/bench_groq.py writes it: K 960 (3 chunks), N 1600 (5 column
    tiles: one whole wave of 4 and one tile split by K over the planes)."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_groq import write_matmul

    path = write_matmul("mm", mkn, Path(tmp))
    ctx, module = compile_to_module(path, Options(passes=INT8))
    store = store_of(module)
    return module, store, compile_module(ctx, module, store, scales=scales, levels=levels)


@pytest.mark.parametrize("scales,levels", [("codes", "packed"), ("f32", "int8")])
def test_split_tiles_and_shared_reads_bit_exact(tmp_path_factory, scales, levels):
    """A tile past the last whole wave is split by K chunks over the planes (a payload per
    part), the two planes of an MXM edge pass on one read of the activation vector, and
    with int8 levels installs take the rows that fit the edge's free streams: all of it
    simulated bit-exactly against the interpreter."""
    module, store, c = compiled_matmul(str(tmp_path_factory.mktemp("mm")), scales, levels)
    doc = c.doc
    ins = doc["instructions"]
    parts = {b for b in doc["buffers"] if ":payload.c" in b}
    assert len(parts) >= 2  # the fifth tile's parts
    planes = {i["unit"] for i in ins if i["op"] == "install" and ":t4:" in i["tag"]}
    assert len(planes) >= 2
    consumers: dict[int, int] = {}
    for i in ins:
        if i["op"] == "matmul_pass":
            src = i["in"][0]["src"]
            consumers[src] = consumers.get(src, 0) + 1
    assert max(consumers.values()) == 2  # a read feeds both planes of an edge
    layer = c.report["matmul_layers"][0]
    assert layer["installs"] == 5 * 960 // 16  # counted in 16-row blocks
    rows = sum(len(i["in"]) for i in ins if i["op"] == "install")
    assert rows == 5 * 960
    x = np.random.default_rng(11).standard_normal((1, 960)).astype(np.float32)
    want = run_module(module, store, {"x": x})
    got = _simulate(c, store, {"x": x})
    assert np.array_equal(got["y"], want["y"])


def test_macro_queue_window():
    """A macro holds its unit's queue from its operands' arrival to its results' leaving
    (`macro_queue_window`): llama_tiny's program has macros on one queue whose durations
    overlap only in their stream travel, which the simulator accepts; moving one so that
    the windows overlap is rejected."""
    from q35c.targets.groq.schedule.reservations import macro_queue_window, macro_travel
    from q35c.targets.groq.simulate import Simulator

    _, _, store, c = compiled("llama_tiny")
    doc = c.doc
    sim = Simulator(doc, c.image, MACHINE, c.ops, Interpreter(c.module, store))
    macros = [i for i in sim.ins if i.op in ("macro", "rescale", "group_sums")]

    def window(i):
        reads = [sim.bufs[n] for n in i.reads if sim.bufs[n].kind != "virtual"]
        cols = i.cols if i.op == "rescale" and i.last else None
        a, n = macro_queue_window(i.cycles, macro_travel(
            MACHINE, i.unit, reads, [sim.bufs[n] for n in i.writes], cols))
        return i.cycle + a, i.cycle + a + n

    pairs = [(a, b) for a in macros for b in macros if a.queue == b.queue
             and a.cycle < b.cycle < a.cycle + a.cycles]
    assert pairs  # durations overlap on one queue, windows do not
    for a, b in pairs:
        assert window(a)[1] <= window(b)[0]
    a, b = pairs[0]
    bad = copy.deepcopy(doc)
    moved = bad["instructions"][b.id]
    shift = window(a)[1] - 1 - window(b)[0]  # b's window starts in a's last cycle
    moved["cycle"] += shift
    for h in moved["holds"]:
        h["t0"] += shift
        h["t1"] += shift
    _, _, shape, make = MODELS["llama_tiny"]
    with pytest.raises(IllegalProgram, match="two instructions issue"):
        _simulate(c, store, make(np.random.default_rng(1), shape), bad)


def test_rescale_spans_per_tile():
    """Int8 levels: one row ends the last wave's tiles with the last K chunk alone; several
    rows ramp up 1, 2, 3 chunks; the planner's work counts the same spans."""
    from q35c.targets.groq import cost
    from q35c.targets.groq.machine import with_layout

    m = with_layout(MACHINE, "f32", "int8")
    assert cost.tile_chunk_spans(m, 13, 0, 13, 1) == [(0, 4), (4, 8), (8, 13)]
    assert cost.tile_chunk_spans(m, 13, 11, 13, 1) == [(0, 4), (4, 8), (8, 12), (12, 13)]
    assert cost.tile_chunk_spans(m, 13, 12, 13, 1) == [(0, 4), (4, 8), (8, 13)]  # split
    assert cost.tile_chunk_spans(m, 13, 0, 13, 8) == [(0, 1), (1, 3), (3, 6), (6, 10),
                                                      (10, 13)]
