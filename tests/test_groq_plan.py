"""Shape-only import and the Groq multi-chip planner (targets/groq/plan.py).

The LLaMA-shaped models come from examples/models/build_llama_shapes.py: their weights are
external data in a file that is never written, so any attempt to read weight data fails.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from q35c.compiler.cli import main
from q35c.compiler.driver import Options, compile_to_module
from q35c.compiler.quant import storage_bytes
from q35c.compiler.weights import ShapeOnlyWeight, WeightStore, WeightStoreError, store_of
from q35c.targets.groq import GroqPlanTarget, cost as costs
from q35c.targets.groq.machine import MACHINES_DIR, load_machine
from q35c.targets.groq.plan import CostModel, PlanOptions, plan_module

ROOT = Path(__file__).resolve().parents[1]
LLAMA_TINY = ROOT / "examples" / "models" / "llama_tiny.onnx"


@functools.cache
def _builder():
    spec = importlib.util.spec_from_file_location(
        "build_llama_shapes", ROOT / "examples" / "models" / "build_llama_shapes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    """4 layers, hidden 512, FFN 1536, GQA 8/2 heads, vocab 2048; weights not written."""
    b = _builder()
    path = tmp_path_factory.mktemp("shapes") / "small.onnx"
    b.write(b.PRESETS["tiny"], path)
    assert not (path.parent / "small.weights").exists()
    return path


def _small_machine(tmp_path: Path, slice_bytes: int) -> Path:
    """tsp-v1 with smaller MEM slices, so that the small model needs several chips."""
    doc = json.loads((MACHINES_DIR / "tsp-v1.json").read_text())
    doc["name"] = f"tsp-small-{slice_bytes}"
    doc["mem"]["slice_bytes"] = slice_bytes
    path = tmp_path / f"small-{slice_bytes}.json"
    path.write_text(json.dumps(doc))
    return path


def _compile(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _check_plan(out: Path, model_weights: dict[str, tuple[int, int]]) -> dict:
    """The invariants every plan must satisfy; returns plan.json."""
    plan = json.loads((out / "plan.json").read_text())
    report = json.loads((out / "report.json").read_text())
    chips, transfers, summary = plan["chips"], plan["transfers"], plan["summary"]
    capacity = plan["machine"]["sram_bytes"]
    assert plan["schema"] == "q35c-groq-plan/1"
    assert summary["chips"] == len(chips) == report["chips"]
    # every chip within SRAM; totals add up
    for c in chips:
        assert c["sram_bytes"] == c["weight_bytes"] + c["activation_bytes"] <= capacity
        assert c["capacity_bytes"] == capacity
    assert summary["sram_bytes"] == sum(c["sram_bytes"] for c in chips) == report["sram_bytes"]
    assert report["sram_bytes_per_chip"] == [c["sram_bytes"] for c in chips]
    # units cut into contiguous ranges, in order, covering everything once
    assert chips[0]["units"][0] == 0
    for a, b in zip(chips, chips[1:]):
        assert b["units"][0] == a["units"][1] + 1
    assert chips[-1]["units"][1] == summary["units"] - 1
    # every weight's columns (tables: rows) assigned exactly once
    seen: dict[str, list[tuple[int, int, int]]] = {}
    for m in plan["matmuls"]:
        lo, hi = m["cols"] if m["kind"] == "matmul" else m["table_rows"]
        seen.setdefault(m["weight"], []).append((lo, hi, m["chip"]))
    for name, (_, n) in model_weights.items():
        parts = sorted(seen.pop(name))
        assert parts[0][0] == 0 and parts[-1][1] == n, name
        for (_, a1, ca), (b0, _, cb) in zip(parts, parts[1:]):
            assert a1 == b0 and cb == ca + 1, name  # consecutive chips, no overlap or gap
    assert not seen
    # layers: each layer's chips form one contiguous run
    runs: dict[str, list[int]] = {}
    for c in chips:
        for entry in c["layers"]:
            runs.setdefault(entry["layer"], []).append(c["chip"])
    for layer, on in runs.items():
        assert on == list(range(on[0], on[0] + len(on))), layer
    # one C2C transfer between each pair of consecutive chips, with its cost
    machine = plan["machine"]
    per_cycle = (machine["c2c_links_per_peer"] * machine["c2c_link_bytes_per_s"]
                 / machine["clock_hz"])
    assert [(t["from_chip"], t["to_chip"]) for t in transfers] == [
        (i, i + 1) for i in range(len(chips) - 1)]
    for t in transfers:
        assert t["bytes"] > 0
        assert t["cycles"] == math.ceil(t["bytes"] / per_cycle) + machine["c2c_latency_cycles"]
    assert summary["c2c_bytes_per_token"] == sum(t["bytes"] for t in transfers)
    assert summary["cycles_per_pass"] == (sum(c["cycles"] for c in chips)
                                          + sum(t["cycles"] for t in transfers))
    assert summary["tokens_per_s"] == pytest.approx(machine["clock_hz"]
                                                    / summary["cycles_per_token"], rel=1e-6)
    assert summary["lower_bound_cycles"] <= summary["cycles_per_pass"]
    # one token's pass in time: chip after chip, each transfer between them
    assert chips[0]["start_cycle"] == 0 and chips[-1]["end_cycle"] == summary["cycles_per_pass"]
    for c, t, d in zip(chips, transfers, chips[1:]):
        assert c["end_cycle"] - c["start_cycle"] == c["cycles"]
        assert t["send_cycle"] == c["end_cycle"] and d["start_cycle"] == t["arrive_cycle"]
        assert t["arrive_cycle"] - t["send_cycle"] == t["cycles"]
    return plan


def _weights(config) -> dict[str, tuple[int, int]]:
    """Planner weight names -> [K, N] (tables: [vocab, hidden]) of a build_llama_shapes model."""
    h, f, kv = config.hidden, config.ffn, config.kv_heads * config.head_dim
    out = {"model.embed_tokens.weight.rows": (config.vocab, config.vocab),
           "lm_head.weight.q3p5": (h, config.vocab)}
    for i in range(config.layers):
        w = f"model.layers.{i}."
        for name, shape in (("self_attn.q_proj", (h, h)), ("self_attn.k_proj", (h, kv)),
                            ("self_attn.v_proj", (h, kv)), ("self_attn.o_proj", (h, h)),
                            ("mlp.gate_proj", (h, f)), ("mlp.up_proj", (h, f)),
                            ("mlp.down_proj", (f, h))):
            out[f"{w}{name}.weight.q3p5"] = shape
    return out


def test_small_model_fits_one_chip(small_model, tmp_path):
    out = tmp_path / "out"
    result = _compile([str(small_model), "--target", "groq", "--shape-only", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "chips           1" in result.output
    plan = _check_plan(out, _weights(_builder().PRESETS["tiny"]))
    assert plan["summary"]["chips"] == 1 and plan["transfers"] == []
    assert (out / "report.txt").read_text() == result.output
    c = plan["chips"][0]
    assert [e["layer"] for e in c["layers"]] == ["pre", *[f"layer {i}" for i in range(4)],
                                                 "post"]
    assert not any(e["partial"] for e in c["layers"])


@pytest.mark.parametrize("slice_bytes,granule", [(16384, 16), (4096, 1)])
def test_small_model_multi_chip(small_model, tmp_path, slice_bytes, granule):
    machine = _small_machine(tmp_path, slice_bytes)
    out = tmp_path / "out"
    result = _compile([str(small_model), "--target",
                       f'groq{{machine="{machine}" granule={granule}}}', "--shape-only",
                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    plan = _check_plan(out, _weights(_builder().PRESETS["tiny"]))
    summary = plan["summary"]
    assert summary["chips"] > 1 and plan["transfers"]
    # the fewest chips: no two neighbours could share one chip's weights
    capacity = plan["machine"]["sram_bytes"]
    assert summary["chips"] >= math.ceil(summary["packed_weight_bytes"] / capacity)
    # `q35c report` draws the plan when there is no program.json
    result = _compile(["report", str(out)])
    assert result.exit_code == 0, result.output
    html = (out / "timeline.html").read_text()
    bars = re.findall(r'<rect class="bar"[^>]*data-op="([a-z0-9_]+)"', html)
    assert bars.count("matmul") == sum(m["kind"] == "matmul" for m in plan["matmuls"])
    assert bars.count("c2c_send") == bars.count("c2c_receive") == len(plan["transfers"])
    assert {int(c) for c in re.findall(r'class="label"[^>]*data-chip="(\d+)"', html)} == set(
        range(summary["chips"]))
    if granule == 1:
        # 512 x 1536 gate/up (384 KiB packed) exceed a 88 x 4 KiB chip: column-split,
        # and only weights that do not fit are split
        assert summary["column_splits"] > 0
        cost = CostModel(load_machine(machine))
        for m in plan["matmuls"]:
            if "shard" in m and m["kind"] == "matmul":
                whole = cost.vectors(cost.packed_bytes(m["k"], m["n"], m["group"]))
                reserve = 4 * (4 * m["k"] + 4 * m["n"])  # 4 x (f32 input + output row)
                assert whole > capacity - reserve, m["weight"]
                assert m["cols"][0] % 320 == 0


def test_plan_is_deterministic_and_nothing_is_read(small_model, tmp_path):
    machine = _small_machine(tmp_path, 16384)
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = _compile([str(small_model), "--target", f'groq{{machine="{machine}"}}',
                           "--shape-only", "-o", str(out)])
        assert result.exit_code == 0, result.output
        outs.append(out)
    for file in ("plan.json", "report.json", "report.txt"):
        assert (outs[0] / file).read_bytes() == (outs[1] / file).read_bytes()
    # the same import through the API: every weight is shape-only and refuses to be read
    _, module = compile_to_module(small_model, Options(shape_only=True))
    store = store_of(module)
    spec = store.spec("lm_head.weight.q3p5")
    assert spec == ShapeOnlyWeight((512, 2048), "q3p5", "q3p5", 32)
    with pytest.raises(WeightStoreError, match="shape-only"):
        store["model.layers.0.mlp.up_proj.weight"]


def test_shape_only_and_real_weights_give_the_same_plan(tmp_path):
    """llama_tiny has real (inline) weights: planning the quantized module and the
    shape-only import of the same file gives the same plan."""
    out = tmp_path / "so"
    result = _compile([str(LLAMA_TINY), "--shape", "input_ids=1,1", "--target", "groq",
                       "--shape-only", "-o", str(out)])
    assert result.exit_code == 0, result.output
    _, module = compile_to_module(LLAMA_TINY, Options(shapes={"input_ids": (1, 1)}),
                                  GroqPlanTarget())  # its pipeline: dequantize-gathers
    plan = plan_module(module, PlanOptions())
    assert plan.to_json() == json.loads((out / "plan.json").read_text())
    assert plan.summary["chips"] == 1


def test_shape_only_mlir_target(small_model, tmp_path):
    out = tmp_path / "ir"
    result = _compile([str(small_model), "--target", "mlir", "--shape-only", "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "small.mlir").read_text()
    assert text.count('"quant3p5.matmul"') == 29
    store = WeightStore(out / "small.q35w")
    assert store.spec("model.layers.3.mlp.down_proj.weight.q3p5") == ShapeOnlyWeight(
        (1536, 512), "q3p5", "q3p5", 32)
    # the embedding table is packed too (transposed; not found tied without data)
    assert store.spec("model.embed_tokens.weight.T.q3p5").layout == "q3p5"
    with pytest.raises(WeightStoreError, match="shape-only"):
        store["model.embed_tokens.weight.T.q3p5"]


@pytest.mark.parametrize("args,message", [
    (["--target", "c"], "--shape-only is supported by --target cerebras and groq and mlir, "
                         "not 'c'"),
    (["--target", "interp"], "not 'interp'"),
    (["--target", "groq{bogus=1}"], "unknown option 'bogus'"),
    (["--target", "groq{chips=0}"], "option 'chips' must be an integer in [1, inf], got 0"),
    (["--target", 'groq{machine="nope"}'], "no such machine file"),
    (["--target", "groq{chips=1}", "--passes", "quantize-weights"], "needs at least"),
    (["--target", "groq", "--passes", "default,verify-overflow"], "shape-only"),
])
def test_bad_input_is_one_line_and_writes_nothing(small_model, tmp_path, args, message):
    machine = _small_machine(tmp_path, 16384)
    args = [a.replace("groq{chips=1}", f'groq{{machine="{machine}" chips=1}}') for a in args]
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [str(small_model), "--shape-only", "-o", str(out), *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("q35c: error: "), result.output
    assert message in lines[0]
    assert not out.exists()


def test_shape_only_rejects_other_inputs(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [str(ROOT / "examples" / "mlp.mlir"), "--target", "groq",
                                       "--shape-only", "-o", str(out)])
    assert result.exit_code == 2
    assert "--shape-only imports ONNX models only" in result.output
    assert not out.exists()


def test_without_shape_only_missing_weights_fail(small_model, tmp_path):
    result = CliRunner().invoke(main, [str(small_model), "--target", "mlir", "-o",
                                       str(tmp_path / "x")])
    assert result.exit_code == 2 and "not found" in result.output


@pytest.mark.parametrize("k,n,g", [(512, 512, 32), (1536, 512, 32), (8192, 28672, 32),
                                   (100, 7, 32), (4096, 11008, 64)])
def test_packed_bytes_match_the_format(k, n, g):
    """On-chip bytes = the version-1 serialized size (docs/format.md section 6: the
    per-column arrays every target reads) minus the 16-byte header and 4-byte CRC."""
    assert (CostModel(load_machine()).packed_bytes(k, n, g)
            == storage_bytes((k, n), g, version=1) - 20)


@pytest.mark.parametrize("k,n,g", [(512, 512, 32), (100, 7, 32), (4096, 11008, 64)])
def test_decoded_scales_bytes(k, n, g):
    """With decoded scales a column holds its pair codes and two float32 words per group
    (scale, offset) instead of the group codes and the three column words."""
    groups = -(-k // g)
    codes = CostModel(load_machine()).packed_bytes(k, n, g)
    decoded = CostModel(replace(load_machine(), decoded_scales=True)).packed_bytes(k, n, g)
    assert decoded - codes == n * (8 * groups - 7 * -(-groups // 8) - 12)


def test_matmul_cost_formula():
    cost = CostModel(load_machine())
    # K = 8192, N = 640, g = 32: 256 groups x 2 column tiles over 4 planes; installs 16
    # rows per cycle per plane: 8192 * 2 / 64; MEM: exact bytes / (88 slices x 320 B)
    comp = cost.matmul(8192, 640, 32, 1)
    assert comp["mxm"] == 256 * 2 // 4
    assert comp["install"] == 8192 * 2 // 64
    assert comp["mem"] == math.ceil(640 * (256 * 2 * 7 + 32 * 7 + 12) / (88 * 320))
    hops = 46  # MXM_W, SXM_W, MEM_W43..MEM_W0, VXM
    # the rescale after the last pass: the last K chunk's groups (256 - 25 * 10 = 6), 5 ALU
    # ops per row and group + 9 per group, on one VXM queue's 16 / 4 ALUs per lane
    last = math.ceil((1 * 6 * 5 + 6 * 9) / 4)
    assert comp["latency"] == 2 + 2 * hops + 24 + 1 + 4 + last
    # VXM: one unpack per install block (2 tiles x 512), the rescale of each tile (one macro
    # of 16 chunks = 160 groups, one of the other 96) and the group sums, over 4 queues,
    # less the last rescale (in the latency)
    rescale = 2 * (math.ceil((160 * 5 + 160 * 9) / 4) + math.ceil((96 * 5 + 96 * 9) / 4))
    sums = math.ceil(8192 / (320 * 4))
    assert comp["vxm"] == math.ceil((2 * 512 + rescale + sums - last) / 4)
    assert comp["vxm"] > comp["install"]  # GEMV with per-group float32 rescale: VXM-bound
    assert comp["cycles"] == max(comp["mxm"], comp["install"], comp["mem"],
                                 comp["vxm"]) + comp["latency"]


def test_llama_70b_graph_has_only_unwritten_external_weights(tmp_path):
    b = _builder()
    config = b.PRESETS["llama-70b"]
    assert (config.layers, config.hidden, config.ffn, config.heads, config.kv_heads,
            config.vocab) == (80, 8192, 28672, 64, 8, 128256)
    assert config.parameters() == 70_553_706_496  # incl. the 161 norm weights
    path = b.write(config, tmp_path / "llama70b.onnx")
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    big = [t for t in model.graph.initializer if math.prod(t.dims) > 64]
    # embedding, lm_head, 9 per layer, final norm, RoPE cos/sin [1, 128]
    assert len(big) == 2 + 80 * 9 + 1 + 2
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in big)
    assert sum(math.prod(t.dims) for t in big) == config.parameters() + 2 * 128
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama70b.onnx"]
    assert b.main(["tiny", str(tmp_path / "bad.onnx"), "--heads", "7"]) == 2


def _filled(model, rng, values: dict):
    """`model` with every external initializer given data: `values[name]` or seeded noise."""
    import onnx
    from onnx import numpy_helper

    for i, t in enumerate(model.graph.initializer):
        if t.name in values or t.data_location == onnx.TensorProto.EXTERNAL:
            array = values.get(t.name)
            if array is None:
                array = (0.2 * rng.standard_normal(tuple(t.dims))).astype(np.float32)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(
                np.asarray(array, np.float32).reshape(tuple(t.dims)), t.name))
    return model


@pytest.mark.parametrize("kv_cache", ["float", "heads"])
def test_context_decode_step_equals_attention_over_the_whole_sequence(kv_cache):
    """`--context C` (one new token over a KV cache of C) gives the last position's logits
    of the cache-free graph over C + 1 tokens, when the cache holds that graph's keys (after
    RoPE) and values of the first C tokens (onnxruntime, seeded weights); with `--kv-cache
    heads` the cache is one [d, C] key and one [C, d] value initializer per KV head."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    def run(model, ids):
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        return dict(zip([o.name for o in model.graph.output],
                        session.run(None, {"input_ids": ids})))

    b = _builder()
    C = 5
    base = replace(b.PRESETS["tiny"], layers=2, hidden=32, ffn=48, heads=4, kv_heads=2,
                   vocab=40)
    full_cfg, step_cfg = replace(base, seq=C + 1), replace(base, context=C, kv_cache=kv_cache)
    d, s = base.head_dim, C + 1
    rng = np.random.default_rng(3)
    rope = {"rope.cos": rng.standard_normal((s, d)), "rope.sin": rng.standard_normal((s, d)),
            "causal_mask": np.triu(np.full((s, s), -np.inf), 1)}
    full = b.build(full_cfg, "x.weights")
    names = [t.name for t in full.graph.initializer]
    keep = {}
    for i in range(base.layers):  # expose each layer's keys (after RoPE) and values
        for out in (f"/model/layers.{i}/rope/k/Add_out",
                    f"/model/layers.{i}/self_attn/v/Transpose_out"):
            full.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT,
                                                                   None))
            keep[i] = keep.get(i, ()) + (out,)
    weights = {n: (0.2 * rng.standard_normal(tuple(t.dims))).astype(np.float32)
               for n, t in zip(names, full.graph.initializer)
               if t.data_location == 1 and n not in rope}
    _filled(full, rng, {**weights, **rope})
    ids = rng.integers(0, base.vocab, (1, s))
    got_full = run(full, ids)
    cache = {}
    for i, (k_name, v_name) in keep.items():
        k, v = got_full[k_name], got_full[v_name]  # [1, kv, s, d]
        if kv_cache == "heads":
            for j in range(base.kv_heads):
                cache[f"model.layers.{i}.past_key.{j}"] = k[0, j, :C].T
                cache[f"model.layers.{i}.past_value.{j}"] = v[0, j, :C]
        else:
            cache[f"model.layers.{i}.past_key"] = np.swapaxes(k[:, :, :C], 2, 3)
            cache[f"model.layers.{i}.past_value"] = v[:, :, :C]
    step = _filled(b.build(step_cfg, "x.weights"), rng, {
        **weights, **cache, "rope.cos": rope["rope.cos"][C:], "rope.sin": rope["rope.sin"][C:]})
    logits = run(step, ids[:, C:])["logits"]
    np.testing.assert_allclose(logits[0, 0], got_full["logits"][0, C], rtol=1e-4, atol=1e-5)


def test_context_plan_holds_the_kv_cache(small_model, tmp_path):
    """The planner keeps each layer's cache in SRAM as resident state: the plan's weight
    bytes grow by exactly 2 * layers caches of kv_heads * head_dim * context float32 values,
    each in whole 320-byte MEM vectors."""
    b = _builder()
    config = b.PRESETS["tiny"]
    path = b.write(replace(config, context=256), tmp_path / "ctx.onnx")
    totals = []
    for model, out in ((small_model, tmp_path / "a"), (path, tmp_path / "b")):
        result = _compile([str(model), "--target", "groq", "--shape-only", "-o", str(out)])
        assert result.exit_code == 0, result.output
        plan = json.loads((out / "plan.json").read_text())
        totals.append(sum(c["weight_bytes"] for c in plan["chips"]))
    cache = CostModel(load_machine()).vectors(config.kv_heads * config.head_dim * 256 * 4)
    assert totals[1] - totals[0] == 2 * config.layers * cache
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert set(report["bound_terms"]) == {"mxm", "install", "mem", "vxm", "latency", "vector",
                                          "c2c"}
    assert report["roofline_cycles"] <= report["cycles"]


def test_context_heads_plan_packs_the_kv_cache(small_model, tmp_path):
    """With `--kv-cache heads` every KV head's cache is a packed matmul weight: the plan's
    weight bytes grow by exactly the packed bytes of 2 * layers * kv_heads caches ([d, C]
    keys, [C, d] values, each in whole MEM vectors), and the cached products are matmul units
    (16 per layer more than without a cache), not vector ops."""
    b = _builder()
    config, context = b.PRESETS["tiny"], 256
    path = b.write(replace(config, context=context, kv_cache="heads"), tmp_path / "ctx.onnx")
    plans = []
    for model, out in ((small_model, tmp_path / "a"), (path, tmp_path / "b")):
        result = _compile([str(model), "--target", "groq", "--shape-only", "-o", str(out)])
        assert result.exit_code == 0, result.output
        plans.append(json.loads((out / "plan.json").read_text()))
    totals = [sum(c["weight_bytes"] for c in plan["chips"]) for plan in plans]
    cost = CostModel(load_machine())
    d, group = config.head_dim, 32
    cache = (cost.vectors(costs.packed_bytes(d, context, group))
             + cost.vectors(costs.packed_bytes(context, d, group)))
    assert totals[1] - totals[0] == config.layers * config.kv_heads * cache
    cached = [m for m in plans[1]["matmuls"] if ".past_" in m["weight"]]
    assert len(cached) == 2 * config.layers * config.kv_heads
    rows = config.heads // config.kv_heads
    assert {(m["k"], m["n"], m["rows"]) for m in cached} == {(d, context, rows),
                                                             (context, d, rows)}
    assert len(plans[1]["matmuls"]) == len(plans[0]["matmuls"]) + len(cached)


def test_dataflow_timeline(small_model, tmp_path):
    """`timeline=dataflow`: the same chips and units as the chain; every unit starts after
    its chip's previous unit and after its inputs have arrived; a split matmul's column
    shards start before the previous shard ends (in parallel), their columns gathered on
    the last shard's chip; the pass is no longer than the chain's, and its bounds are
    critical paths."""
    machine = _small_machine(tmp_path, 4096)
    plans = {}
    for timeline in ("chain", "dataflow"):
        out = tmp_path / timeline
        result = _compile([str(small_model), "--target",
                           f'groq{{machine="{machine}" granule=1 timeline={timeline}}}',
                           "--shape-only", "-o", str(out)])
        assert result.exit_code == 0, result.output
        plans[timeline] = json.loads((out / "plan.json").read_text())
    chain, flow = plans["chain"], plans["dataflow"]
    assert [c["layers"] for c in chain["chips"]] == [c["layers"] for c in flow["chips"]]
    assert [c["cycles"] for c in chain["chips"]] == [c["cycles"] for c in flow["chips"]]
    s = flow["summary"]
    assert s["timeline"] == "dataflow" and chain["summary"]["timeline"] == "chain"
    assert s["cycles_per_pass"] < chain["summary"]["cycles_per_pass"]
    assert s["lower_bound_cycles"] <= s["roofline_cycles"] <= s["cycles_per_pass"]
    for c in flow["chips"]:
        ends = 0
        for start, cycles, *_ in c["timeline"]:
            assert start >= ends
            ends = start + cycles
        assert c["end_cycle"] == ends <= s["cycles_per_pass"]
    for t in flow["transfers"]:
        assert t["arrive_cycle"] - t["send_cycle"] == t["cycles"] > 0
        assert t["from_chip"] < t["to_chip"]
    shards: dict[int, list[dict]] = {}
    for m in flow["matmuls"]:
        if m["kind"] == "matmul" and "shard" in m:
            shards.setdefault(m["op"], []).append(m)
    assert shards
    for parts in shards.values():
        parts.sort(key=lambda m: m["shard"][0])
        for a, b in zip(parts, parts[1:]):  # b does not wait for a's columns to travel
            latency = flow["machine"]["c2c_latency_cycles"]
            assert b["start_cycle"] < a["start_cycle"] + a["cycles"] + latency
        gathered = [t for t in flow["transfers"] if t["to_chip"] == parts[-1]["chip"]
                    and t["values"][0].endswith(f"columns from chip {parts[0]['chip']}")]
        assert gathered
    assert not any("partial [:" in v for t in flow["transfers"] for v in t["values"])
    assert any("partial [:" in v for t in chain["transfers"] for v in t["values"])
