"""Every target accepts what the fusion passes make (docs/fusion.md, "Targets").

Each example model is compiled with the whole fusion pipeline for every target and its
outputs are checked against the reference interpreter on the unfused model:

- `mlir` writes the fused IR; `interp` runs it (the fused ops' own semantics);
- `c` lowers the fused ops to its fused kernels (runtime/q35rt_fused.c): within the float
  path's tolerance of the unfused interpreter, and bit for bit on the int8 path;
- `groq` unfuses fused matmuls in its pipeline (`unfuse-ops`) and runs on int8
  activations: bit for bit with the interpreter on the IR it runs, and within tolerance
  of the unfused int8 model (the norm/SwiGLU/GELU recognitions round once instead of per
  op).

The kernels' corner cases (every activation, bias and residual present or not, Q3P5 and
pair43 weights, an attention mask with size-1 dims, attention without a mask) run on a
hand-written module at the end.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, INT8, MODELS_DIR, hidden_input, ids_input, q35c, x_input

from q35c.compiler.driver import Options, compile_file, compile_to_module, get_target
from q35c.compiler.quant import quantize, quantize_legacy
from q35c.compiler.weights import WeightStore, store_of
from q35c.semantics import run_module

FUSION = ("fuse-dequant-matmul,fuse-norms,fuse-swiglu,fuse-gelu,fuse-attention,"
          "fuse-matmul-bias-act,fuse-residual,canonicalize")
"""Every fusion pass, in the order of docs/fusion.md."""
FUSED = f"default,{FUSION}"
FUSED_OPS = ("quant3p5.fused_matmul", "q35nn.swiglu", "q35nn.attention", "q35nn.rms_norm",
             "q35nn.layer_norm")

# name -> (file, input name, shape, input maker): every example model.
MODELS = {
    "mlp": (EXAMPLES / "mlp.mlir", "x", (4, 128), x_input),
    **{stem: (MODELS_DIR / f"{stem}.onnx", "input_ids", (1, 8), ids_input) for stem in (
        "llama_tiny", "llama_tiny_gather_quantized", "llama_tiny_matmulnbits",
        "llama_tiny_qdq_int4")},
    **{stem: (MODELS_DIR / f"{stem}.onnx", "hidden", (1, 8, 64), hidden_input) for stem in (
        "encoder_tiny", "encoder_tiny_qdq_int8")},
}


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """C builds go to this session's own cache, never the user's."""
    monkeypatch.setenv("Q35C_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "c-cache"))


def _options(model: str, passes: str, target: str | None = None) -> Options:
    path, input_name, shape, _ = MODELS[model]
    shapes = {} if path.suffix == ".mlir" else {input_name: shape}
    return Options(passes=passes, shapes=shapes, target=target)


def _inputs(model: str) -> dict[str, np.ndarray]:
    _, _, shape, make_inputs = MODELS[model]
    return make_inputs(np.random.default_rng(12), shape)


@functools.cache
def _compiled(model: str, passes: str, target: str | None):
    """(ctx, module, store, target) after `passes` and the target's own pipeline."""
    tgt = get_target(target) if target else None
    ctx, module = compile_to_module(MODELS[model][0], _options(model, passes, target), tgt)
    return ctx, module, store_of(module), tgt


@functools.cache
def _reference(model: str, passes: str) -> dict[str, np.ndarray]:
    """The interpreter's outputs on the model after `passes` (no target pipeline)."""
    _, module, store, _ = _compiled(model, passes, None)
    return run_module(module, store, _inputs(model))


def _run(model: str, passes: str, target: str) -> dict[str, np.ndarray]:
    ctx, module, store, tgt = _compiled(model, passes, target)
    return tgt.run(ctx, module, store, _inputs(model), None)


def _assert_close(got: dict, want: dict, what: str) -> None:
    """The C target's float-path tolerance (tests/test_c_target.py)."""
    assert sorted(got) == sorted(want)
    for name, ref in want.items():
        scale = float(np.max(np.abs(ref)))
        np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-5 * scale,
                                   err_msg=f"{what}: {name}")


def test_every_example_model_is_covered():
    assert {p.name for p in MODELS_DIR.glob("*.onnx")} <= {p.name for p, *_ in MODELS.values()}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_fusion_produces_fused_ops(model):
    """The pipeline under test fuses something in every model (else the rest is vacuous)."""
    _, module, _, _ = _compiled(model, FUSED, None)
    assert any(op.name in FUSED_OPS for op in module.walk())


@pytest.mark.parametrize("target", ["mlir", "c", "groq"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_target_compiles_the_fused_model(model, target, tmp_path):
    compile_file(MODELS[model][0], tmp_path / "out", _options(model, FUSED, target))
    assert any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("model", sorted(MODELS))
def test_interp_and_c_match_the_unfused_interpreter(model):
    want = _reference(model, "default")
    _assert_close(_run(model, FUSED, "interp"), want, f"{model} interp")
    _assert_close(_run(model, FUSED, "c"), want, f"{model} c")


@pytest.mark.parametrize("model", sorted(MODELS))
def test_c_int8_path_with_fusion_is_bit_exact(model):
    """On the int8 path the C target matches the interpreter bit for bit, fused SwiGLU,
    attention and norms included."""
    _, module, store, _ = _compiled(model, f"{INT8},{FUSION}", "c")
    want = run_module(module, store, _inputs(model))
    got = _run(model, f"{INT8},{FUSION}", "c")
    for name, ref in want.items():
        np.testing.assert_array_equal(got[name], ref, err_msg=f"{model}: {name}")


@pytest.mark.parametrize("model", sorted(MODELS))
def test_groq_runs_the_fused_model_bit_exactly(model):
    _, module, store, _ = _compiled(model, FUSED, "groq")
    assert not any(op.name == "quant3p5.fused_matmul" for op in module.walk())
    got = _run(model, FUSED, "groq")
    for name, ref in run_module(module, store, _inputs(model)).items():
        np.testing.assert_array_equal(got[name], ref, err_msg=f"{model}: {name}")
    _assert_close(got, _reference(model, INT8), f"{model} groq vs unfused int8")


# -- the fused kernels' corner cases ------------------------------------------------------

PACKED = '!quant3p5.packed<[64 : i64, 32 : i64], {group} : i64, "{layout}">'
KERNELS = """builtin.module attributes {{quant3p5.weights = "w.q35w"}} {{
  func.func @main(%x: tensor<4x64xf32> {{q35c.name = "x"}},
                  %r: tensor<4x32xf32> {{q35c.name = "r"}},
                  %q: tensor<2x3x4x16xf32> {{q35c.name = "q"}},
                  %k: tensor<2x3x6x16xf32> {{q35c.name = "k"}},
                  %v: tensor<2x3x6x8xf32> {{q35c.name = "v"}},
                  %m: tensor<3x1x6xf32> {{q35c.name = "m"}})
      -> ({results}) {{
    %b = quant3p5.weight "b" : tensor<32xf32>
{body}
    func.return {values} : {types}
  }}
}}
"""


def _kernel_module(tmp_path: Path) -> Path:
    """A module with fused_matmul in every variant, swiglu and attention (two masks)."""
    rng = np.random.default_rng(3)
    store = WeightStore()
    w = (rng.standard_normal((64, 32)) / 8).astype(np.float32)
    store["w"], store["w_pair"] = quantize(w, group_size=32), quantize_legacy(w)
    store["b"] = rng.standard_normal(32).astype(np.float32)
    store.save(tmp_path / "w.q35w")
    body, values, types = [], [], []
    weights = {"q3p5": PACKED.format(group=32, layout="q3p5"),
               "pair43": PACKED.format(group=64, layout="pair43")}
    for layout, packed in weights.items():
        name = "w" if layout == "q3p5" else "w_pair"
        body.append(f'    %p_{layout} = quant3p5.weight "{name}" : {packed}')
        for act in ("none", "relu", "gelu", "gelu_tanh", "silu"):
            for extra, extra_types in (("", ""), (" bias %b", " bias tensor<32xf32>"),
                                       (" residual %r", " residual tensor<4x32xf32>"),
                                       (" bias %b residual %r",
                                        " bias tensor<32xf32> residual tensor<4x32xf32>")):
                value = f"%y{len(values)}"
                body.append(f'    {value} = quant3p5.fused_matmul %x, %p_{layout}{extra} '
                            f'{{activation = "{act}"}} : tensor<4x64xf32>, {packed}'
                            f'{extra_types} -> tensor<4x32xf32>')
                values.append(value)
                types.append("tensor<4x32xf32>")
    body.append(f"    %s = q35nn.swiglu {values[-1]}, %r : tensor<4x32xf32>, tensor<4x32xf32> "
                "-> tensor<4x32xf32>")
    values.append("%s")
    types.append("tensor<4x32xf32>")
    qkv = "tensor<2x3x4x16xf32>, tensor<2x3x6x16xf32>, tensor<2x3x6x8xf32>"
    body.append(f"    %a = q35nn.attention %q, %k, %v mask %m {{scale = 0.25 : f32}} : {qkv}, "
                "tensor<3x1x6xf32> -> tensor<2x3x4x8xf32>")
    body.append(f"    %a2 = q35nn.attention %q, %k, %v {{scale = 0.3 : f32}} : {qkv} "
                "-> tensor<2x3x4x8xf32>")
    values += ["%a", "%a2"]
    types += ["tensor<2x3x4x8xf32>"] * 2
    results = ", ".join(f'{t} {{q35c.name = "o{i}"}}' for i, t in enumerate(types))
    path = tmp_path / "kernels.mlir"
    path.write_text(KERNELS.format(results=results, body="\n".join(body),
                                   values=", ".join(values), types=", ".join(types)))
    return path


def test_fused_kernels_match_their_unfused_ops(tmp_path):
    """C fused kernels == C on the unfused ops (`unfuse-ops`) bit for bit; attention and
    SwiGLU == the interpreter bit for bit; fused matmuls within the float tolerance; and
    the interpreter gives the same on fused and unfused IR (unfuse-ops is exact)."""
    path = _kernel_module(tmp_path)
    rng = np.random.default_rng(5)
    shapes = {"x": (4, 64), "r": (4, 32), "q": (2, 3, 4, 16), "k": (2, 3, 6, 16),
              "v": (2, 3, 6, 8), "m": (3, 1, 6)}
    inputs = {n: (2 * rng.standard_normal(s)).astype(np.float32) for n, s in shapes.items()}
    c = get_target("c")
    results = {}
    for passes in ("canonicalize", "unfuse-ops,canonicalize"):
        ctx, module = compile_to_module(path, Options(passes=passes), c)
        store = store_of(module)
        results[passes] = (c.run(ctx, module, store, inputs, None),
                           run_module(module, store, inputs))
    (fused_c, fused_i), (unfused_c, unfused_i) = results.values()
    for name in fused_i:
        np.testing.assert_array_equal(fused_c[name], unfused_c[name], err_msg=name)
        np.testing.assert_array_equal(fused_i[name], unfused_i[name], err_msg=name)
    for name in ("o40", "o41", "o42"):  # swiglu, attention with and without a mask
        np.testing.assert_array_equal(fused_c[name], fused_i[name], err_msg=name)
    _assert_close(fused_c, fused_i, "fused kernels")


def test_unfuse_ops_refuses_ops_it_cannot_unfuse(tmp_path):
    result = q35c(EXAMPLES / "mlp.mlir", "--passes", 'unfuse-ops{ops="q35nn.softmax"}',
                  "-o", tmp_path / "out", check=False)
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    assert result.stderr == ("q35c: error: unfuse-ops: cannot unfuse q35nn.softmax (it "
                             "unfuses quant3p5.fused_matmul, q35nn.swiglu, q35nn.attention)\n")
