"""Fusion passes on the example models: the ops they produce, and unchanged outputs.

Passes whose fused op is defined as exactly the unfused sequence of float32 roundings
(dequant+matmul, matmul epilogue, residual, attention) must give bit-identical outputs;
the recognitions whose fused op computes in float64 (norms, SwiGLU) differ by float32
round-off only.
"""

import numpy as np
import pytest
from conftest import EXAMPLES, q35c

MODELS = EXAMPLES / "models"
CASES = {"llama_tiny": ("input_ids", "1,8"), "encoder_tiny": ("hidden", "1,8,64")}
EXACT = ["fuse-matmul-bias-act", "fuse-residual", "fuse-attention",
         "fuse-matmul-bias-act,fuse-residual"]
ROUNDOFF = ["fuse-norms", "fuse-swiglu", "fuse-gelu"]
ALL = "fuse-norms,fuse-swiglu,fuse-gelu,fuse-attention,fuse-matmul-bias-act,fuse-residual"


def run(name: str, passes: str, out) -> np.ndarray:
    input_name, shape = CASES[name]
    flags = ["--shape", f"{input_name}={shape}", "--seed", "4", "-o", out]
    q35c("run", MODELS / f"{name}.onnx", "--passes", passes, *flags)
    (result,) = [p for p in out.glob("*.npy") if p.stem != input_name]
    return np.load(result)


def compiled(name: str, passes: str) -> str:
    input_name, shape = CASES[name]
    return q35c(MODELS / f"{name}.onnx", "--shape", f"{input_name}={shape}",
                "--passes", passes).stdout


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return {name: run(name, "default", tmp_path_factory.mktemp(name)) for name in CASES}


@pytest.mark.parametrize("passes", EXACT)
@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_fusions_leave_outputs_bit_identical(name, passes, baseline, tmp_path):
    np.testing.assert_array_equal(run(name, f"default,{passes}", tmp_path), baseline[name])


@pytest.mark.parametrize("passes", [*ROUNDOFF, ALL])
@pytest.mark.parametrize("name", sorted(CASES))
def test_recognitions_change_outputs_by_roundoff_only(name, passes, baseline, tmp_path):
    np.testing.assert_allclose(run(name, f"default,{passes}", tmp_path), baseline[name],
                               rtol=1e-5, atol=1e-6)


def test_llama_fuses_into_the_expected_ops():
    out = compiled("llama_tiny", f"default,{ALL},canonicalize")
    counts = {op: out.count(f'"{op}"') for op in (
        "q35nn.rms_norm", "q35nn.swiglu", "q35nn.attention", "quant3p5.fused_matmul",
        "q35nn.softmax", "linalg.reduce", "math.sqrt")}
    assert counts == {"q35nn.rms_norm": 5, "q35nn.swiglu": 2, "q35nn.attention": 2,
                      "quant3p5.fused_matmul": 4, "q35nn.softmax": 0, "linalg.reduce": 0,
                      "math.sqrt": 0}


def test_encoder_fuses_gemm_bias_erf_gelu_and_attention():
    out = compiled("encoder_tiny", f"default,{ALL},canonicalize")
    assert out.count('"q35nn.layer_norm"') == 5
    assert out.count('"q35nn.attention"') == 2
    assert out.count('"quant3p5.fused_matmul"') == 12
    assert out.count('activation = "gelu"') == 2
    assert '"quant3p5.matmul"' not in out and '"math.erf"' not in out
