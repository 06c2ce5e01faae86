"""Readable weight names from exporter metadata (compiler/frontends/onnx/names.py).

Hostile names from metadata reaching generated code: tests/security/test_names.py. The
2-layer SmolLM2 cut, addressed by these names from the CLI: test_quant_names_smollm2 below.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from conftest import q35c
from onnx import TensorProto, helper

from q35c.compiler.frontends.onnx.names import generated, readable_names

FOLDED = "pkg.onnxscript.optimizer.folded_from"
SCOPES = "pkg.torch.onnx.name_scopes"


def _weight(name: str, shape=(8, 4)) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.FLOAT, list(shape),
                              np.zeros(shape, np.float32).ravel())


def _info(name: str, **metadata: str) -> onnx.ValueInfoProto:
    info = helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
    helper.set_metadata_props(info, metadata)
    return info


def _graph(nodes, initializers, value_info=()) -> onnx.GraphProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [2, 8])], [helper.make_tensor_value_info(
            n.output[0], TensorProto.FLOAT, None) for n in nodes[-1:]], initializers)
    graph.value_info.extend(value_info)
    return graph


def _scoped(node: onnx.NodeProto, *scopes: str) -> onnx.NodeProto:
    helper.set_metadata_props(node, {SCOPES: repr(["", *scopes, "linear"])})
    return node


@pytest.mark.parametrize("name, expected", [
    ("val_76", True), ("onnx::MatMul_718", True), ("_v_3", True), ("const12", True),
    ("model.layers.0.q_proj.weight", False), ("val", False), ("w_1x", False),
    ("past_key_values.0.key", False)])
def test_generated_names(name, expected):
    assert generated(name) == expected


def test_folded_from_metadata_names_a_dynamo_weight():
    graph = _graph([helper.make_node("MatMul", ["x", "val_76"], ["y"])], [_weight("val_76")],
                   [_info("val_76", **{FOLDED: "['model.layers.0.self_attn.q_proj.weight']"})])
    assert readable_names(graph) == {"val_76": "model.layers.0.self_attn.q_proj.weight"}


def test_consumer_module_names_a_weight_without_folded_from():
    """From name_scopes (dynamo) or from a `/a/b/MatMul` node name (legacy exporter)."""
    graph = _graph([
        _scoped(helper.make_node("MatMul", ["x", "val_5"], ["h"]), "model", "model.mlp.up"),
        helper.make_node("Gemm", ["h", "onnx::Gemm_9", "onnx::Gemm_10"], ["y"],
                         name="/model/mlp/down/Gemm")],
        [_weight("val_5", (8, 8)), _weight("onnx::Gemm_9", (8, 4)), _weight("onnx::Gemm_10",
                                                                            (4,))])
    assert readable_names(graph) == {"val_5": "model.mlp.up.weight",
                                     "onnx::Gemm_9": "model.mlp.down.weight",
                                     "onnx::Gemm_10": "model.mlp.down.bias"}


def test_transpose_of_a_named_weight_is_its_name_dot_t():
    graph = _graph([helper.make_node("Transpose", ["lm_head.weight"], ["val_9"]),
                    helper.make_node("MatMul", ["x", "val_9"], ["y"])],
                   [_weight("lm_head.weight", (4, 8))])
    assert readable_names(graph) == {"val_9": "lm_head.weight.T"}


def test_collisions_get_numbered_in_graph_order_and_never_take_a_used_name():
    """Two values folded from one parameter, and one whose name another value has."""
    meta = {FOLDED: "['w']"}
    graph = _graph([helper.make_node("MatMul", ["x", "val_1"], ["h"]),
                    helper.make_node("MatMul", ["h", "val_2"], ["w.1"]),
                    helper.make_node("MatMul", ["w.1", "val_3"], ["y"])],
                   [_weight("val_1", (8, 8)), _weight("val_2", (8, 8)), _weight("val_3"),
                    _weight("w", (1,))],
                   [_info("val_1", **meta), _info("val_2", **meta),
                    _info("val_3", **{FOLDED: "['h']"})])
    names = readable_names(graph)
    assert names == {"val_1": "w.2", "val_2": "w.3", "val_3": "h.1"}
    assert names == readable_names(graph)  # deterministic


@pytest.mark.parametrize("metadata", [
    "['a', 'b']",                     # folded from two values: no single name
    "['val_12']",                     # a generated name again
    "[",                              # malformed
    "__import__('os').system('x')",   # not a literal: never evaluated
    "['" + "x" * 5000 + "']",         # too long
    "[[" * 2000 + "]]" * 2000,        # nested beyond the parser's patience
    "{'a': 1}"])
def test_unusable_metadata_is_ignored(metadata):
    graph = _graph([helper.make_node("Relu", ["val_1"], ["y"])], [_weight("val_1")],
                   [_info("val_1", **{FOLDED: metadata})])
    assert readable_names(graph) == {}


def test_consumers_in_different_modules_leave_the_name_alone():
    graph = _graph([_scoped(helper.make_node("MatMul", ["x", "val_1"], ["h"]), "m.a"),
                    _scoped(helper.make_node("MatMul", ["x", "val_1"], ["y"]), "m.b")],
                   [_weight("val_1")])
    assert readable_names(graph) == {}


@pytest.mark.slow
def test_group_for_addresses_q_and_v_projections_of_the_smollm2_cut(smollm2_cut):
    """The dynamo export's `val_N` weights get their torch names, the same in the prefill
    and the decode graph, so `--group-for` picks v_proj and q_proj from the CLI."""
    cut = smollm2_cut
    packed = re.compile(r'name = "([^"]+)\.q3p5"(?:, q35c\.onnx_name = "(val_\d+)")?\} : '
                        r'\(\) -> !quant3p5\.packed<\[\d+ : i64, \d+ : i64\], (\d+) : i64')
    found = {}
    for graph in ("prefill", "decode"):
        model = onnx.load(str(cut / f"{graph}.dynamo.onnx"), load_external_data=False)
        tokens = 8 if graph == "prefill" else 1
        shapes = [f"{v.name}=1,3,8,64" if v.name.startswith("past_key_values.") else
                  f"{v.name}=1,{9 if graph == 'decode' and v.name == 'attention_mask' else tokens}"
                  for v in model.graph.input]
        result = q35c(cut / f"{graph}.dynamo.onnx", "--shape-only", "--group-for",
                      "v_proj=16;q_proj=64", *(a for x in shapes for a in ("--shape", x)))
        found[graph] = {m[1]: (m[2], int(m[3])) for m in packed.finditer(result.stdout)}
    assert {k: g for k, (_, g) in found["prefill"].items()} == \
        {k: g for k, (_, g) in found["decode"].items()}
    groups = {k: g for k, (_, g) in found["prefill"].items()}
    assert len(groups) == 15  # 14 projections and the LM head
    for name, group in groups.items():
        kind = name.split(".")[-2]
        assert group == {"v_proj": 16, "q_proj": 64}.get(kind, 32), name
        assert name == "model.lm_head.weight.T" or (  # the tied head, transposed
            name.startswith("model.model.layers.") and name.endswith("_proj.weight"))
    onnx_names = {k: v for k, (v, _) in found["prefill"].items()}
    assert onnx_names["model.model.layers.0.self_attn.q_proj.weight"].startswith("val_")
    assert onnx_names["model.model.layers.0.self_attn.q_proj.weight"] != \
        found["decode"]["model.model.layers.0.self_attn.q_proj.weight"][0]


@pytest.mark.slow
def test_calibration_gives_the_smollm2_cut_the_v_q_mix_unless_told_otherwise(smollm2_cut,
                                                                            tmp_path):
    """With calibration statistics, v_proj gets group 16 and q_proj 64 (CALIBRATED_MIX:
    the mix fits 3.75 bits on these shapes); `mix=false` keeps group 32 everywhere."""
    from q35c.compiler.calibration import Statistics

    cut = smollm2_cut
    stats = Statistics([np.eye(576, dtype=np.float32)], [16],
                       {"model.model.layers.0.self_attn.q_proj.weight": 0})
    stats.save(tmp_path / "stats.npz")
    packed = re.compile(r'name = "([^"]+)\.q3p5".*?-> !quant3p5\.packed<\[\d+ : i64, \d+ : '
                        r'i64\], (\d+) : i64')
    groups = {}
    for mix in ("true", "false"):
        result = q35c(cut / "prefill.dynamo.onnx", "--shape-only", "--calibration",
                      tmp_path / "stats.npz", "--passes",
                      f"quantize-weights{{mix={mix}}},canonicalize,cse",
                      *(a for v in ("input_ids", "attention_mask", "position_ids")
                        for a in ("--shape", f"{v}=1,8")))
        groups[mix] = {m[1].split(".")[-2]: int(m[2]) for m in packed.finditer(result.stdout)}
    assert groups["true"]["v_proj"] == 16 and groups["true"]["q_proj"] == 64
    assert groups["true"]["k_proj"] == groups["true"]["down_proj"] == 32
    assert set(groups["false"].values()) == {32}


@pytest.mark.parametrize("heads, applies", [(3, True), (9, False)])
def test_calibrated_mix_only_within_the_budget(heads, applies):
    """SmolLM2's shapes (v_proj a third of q_proj, the LM head) fit 3.75 bits with the mix;
    the same widths with as many value heads as query heads would not."""
    from q35c.passes.quantize_weights import QuantizeWeightsPass

    shapes = {f"l.{i}.self_attn.{p}_proj.weight": (576, 64 * (heads if p in "kv" else 9))
              for i in range(2) for p in "qkvo"}
    shapes |= {f"l.{i}.mlp.{p}_proj.weight": (576, 1536) for i in range(2) for p in ("gate",
                                                                                      "up")}
    shapes |= {f"l.{i}.mlp.down_proj.weight": (1536, 576) for i in range(2)}
    shapes["lm_head.weight.T"] = (576, 49152 // 15)  # SmolLM2's share per 2 of 30 layers
    rules = QuantizeWeightsPass()._calibrated_mix(shapes)
    assert bool(rules) == applies
    assert not QuantizeWeightsPass()._calibrated_mix({"w": (576, 192)})  # no v_proj, q_proj
