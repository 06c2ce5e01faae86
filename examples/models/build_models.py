"""Build the small example ONNX models in examples/models/ from fixed seeds.

    python examples/models/build_models.py            # writes into examples/models/
    python examples/models/build_models.py OUT_DIR    # writes somewhere else

The .onnx files are committed so that tests need neither torch nor the
onnxruntime quantization tools; this script documents where they came from and
rewrites them byte-identically (given the same torch / onnx / onnxruntime
versions: the exporter's and the quantizer's output legitimately change between
releases).  README.md next to this file describes every model.

Needs: numpy, onnx, onnxruntime (quantization tools need `onnx_ir` and
`ml_dtypes`), and torch for llama_tiny (the TorchScript exporter, dynamo=False).
"""

from __future__ import annotations

import io
import logging
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent

PRODUCER_NAME = "q35c examples/models/build_models.py"
PRODUCER_VERSION = "1"

# The versions the committed files were built with.  Other versions of torch (the
# exporter) or onnxruntime (the quantizer) may legitimately produce different bytes.
BUILT_WITH = {"torch": "2.13.0", "onnx": "1.23.2", "onnxruntime": "1.32.0", "numpy": "2.4.6"}


def installed_versions() -> dict[str, str | None]:
    """Versions of the BUILT_WITH packages installed now (None when missing)."""
    from importlib import metadata

    found: dict[str, str | None] = {}
    for name in BUILT_WITH:
        try:
            found[name] = metadata.version(name).split("+")[0]
        except metadata.PackageNotFoundError:
            found[name] = None
    return found

# LLaMA-style decoder.
LLAMA_VOCAB = 256
LLAMA_HIDDEN = 64
LLAMA_LAYERS = 2
LLAMA_HEADS = 4
LLAMA_KV_HEADS = 2
LLAMA_HEAD_DIM = 16
LLAMA_INTERMEDIATE = 128
LLAMA_ROPE_THETA = 10000.0
LLAMA_RMS_EPS = 1e-5
LLAMA_OPSET = 18
LLAMA_SEED = 35

# GPT-2-style (pre-LN) encoder.
ENC_HIDDEN = 64
ENC_LAYERS = 2
ENC_HEADS = 4
ENC_HEAD_DIM = 16
ENC_FFN = 256
ENC_LN_EPS = 1e-5
ENC_OPSET = 17
ENC_SEED = 3535

# Quantization settings for the llama variants.
Q_BITS = 4
Q_BLOCK = 32

MODEL_FILES = (
    "llama_tiny.onnx",
    "llama_tiny_matmulnbits.onnx",
    "llama_tiny_qdq_int4.onnx",
    "llama_tiny_gather_quantized.onnx",
    "encoder_tiny.onnx",
    "encoder_tiny_qdq_int8.onnx",
)
INVALID_FILES = (
    "invalid/truncated.onnx",
    "invalid/missing_initializer.onnx",
    "invalid/unsupported_ops.onnx",
    "invalid/bad_external_data.onnx",
    "invalid/shape_mismatch.onnx",
)
ALL_FILES = MODEL_FILES + INVALID_FILES


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def normalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Strip everything that depends on the tool versions or the run, not on the model."""
    model.producer_name = PRODUCER_NAME
    model.producer_version = PRODUCER_VERSION
    model.ClearField("doc_string")
    model.graph.ClearField("doc_string")
    del model.metadata_props[:]
    for node in model.graph.node:
        node.ClearField("doc_string")
    # Deterministic opset order.
    opsets = sorted(((o.domain, o.version) for o in model.opset_import))
    del model.opset_import[:]
    for domain, version in opsets:
        model.opset_import.append(helper.make_opsetid(domain, version))
    return model


def save(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = normalize(model).SerializeToString(deterministic=True)
    path.write_bytes(data)


def make_model(graph: onnx.GraphProto, opset: int, ir_version: int = 8,
               extra_opsets: tuple[tuple[str, int], ...] = ()) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", opset)]
    opsets += [helper.make_opsetid(d, v) for d, v in extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)
    return normalize(model)


def f32(array) -> np.ndarray:
    return np.asarray(array, dtype=np.float32)


def const_i64(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


# --------------------------------------------------------------------------
# 1. llama_tiny.onnx (torch export)
# --------------------------------------------------------------------------

def _llama_module():
    import torch
    from torch import nn

    class RMSNorm(nn.Module):
        """HF LlamaRMSNorm, written out (pow / mean / rsqrt / mul)."""

        def __init__(self, dim: int, eps: float):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))
            self.eps = eps

        def forward(self, x):
            variance = x.pow(2).mean(-1, keepdim=True)
            x = x * torch.rsqrt(variance + self.eps)
            return self.weight * x

    def rotate_half(x):
        half = x.shape[-1] // 2
        x1 = x[..., :half]
        x2 = x[..., half:]
        return torch.cat((-x2, x1), dim=-1)

    def repeat_kv(x, n_rep: int):
        b, n_kv, s, d = x.shape
        x = x[:, :, None, :, :].expand(b, n_kv, n_rep, s, d)
        return x.reshape(b, n_kv * n_rep, s, d)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            h, d = LLAMA_HIDDEN, LLAMA_HEAD_DIM
            self.q_proj = nn.Linear(h, LLAMA_HEADS * d, bias=False)
            self.k_proj = nn.Linear(h, LLAMA_KV_HEADS * d, bias=False)
            self.v_proj = nn.Linear(h, LLAMA_KV_HEADS * d, bias=False)
            self.o_proj = nn.Linear(LLAMA_HEADS * d, h, bias=False)

        def forward(self, x, cos, sin, mask):
            b, s, _ = x.shape
            d = LLAMA_HEAD_DIM
            q = self.q_proj(x).view(b, s, LLAMA_HEADS, d).transpose(1, 2)
            k = self.k_proj(x).view(b, s, LLAMA_KV_HEADS, d).transpose(1, 2)
            v = self.v_proj(x).view(b, s, LLAMA_KV_HEADS, d).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            n_rep = LLAMA_HEADS // LLAMA_KV_HEADS
            k = repeat_kv(k, n_rep)
            v = repeat_kv(v, n_rep)
            scores = torch.matmul(q, k.transpose(2, 3)) * (1.0 / math.sqrt(d))
            scores = scores + mask
            probs = torch.softmax(scores, dim=-1)
            out = torch.matmul(probs, v)
            out = out.transpose(1, 2).reshape(b, s, LLAMA_HEADS * d)
            return self.o_proj(out)

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj = nn.Linear(LLAMA_HIDDEN, LLAMA_INTERMEDIATE, bias=False)
            self.up_proj = nn.Linear(LLAMA_HIDDEN, LLAMA_INTERMEDIATE, bias=False)
            self.down_proj = nn.Linear(LLAMA_INTERMEDIATE, LLAMA_HIDDEN, bias=False)

        def forward(self, x):
            return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))

    class DecoderLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_layernorm = RMSNorm(LLAMA_HIDDEN, LLAMA_RMS_EPS)
            self.self_attn = Attention()
            self.post_attention_layernorm = RMSNorm(LLAMA_HIDDEN, LLAMA_RMS_EPS)
            self.mlp = MLP()

        def forward(self, x, cos, sin, mask):
            x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
            return x + self.mlp(self.post_attention_layernorm(x))

    class LlamaTiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(LLAMA_VOCAB, LLAMA_HIDDEN)
            self.layers = nn.ModuleList(DecoderLayer() for _ in range(LLAMA_LAYERS))
            self.norm = RMSNorm(LLAMA_HIDDEN, LLAMA_RMS_EPS)
            self.lm_head = nn.Linear(LLAMA_HIDDEN, LLAMA_VOCAB, bias=False)
            inv_freq = 1.0 / (LLAMA_ROPE_THETA ** (
                torch.arange(0, LLAMA_HEAD_DIM, 2, dtype=torch.float32) / LLAMA_HEAD_DIM))
            self.register_buffer("inv_freq", inv_freq, persistent=False)

        def forward(self, input_ids):
            seq = input_ids.shape[1]
            x = self.embed_tokens(input_ids)
            # Rotary embeddings from positions, in the graph.
            positions = torch.arange(seq, dtype=torch.int64, device=input_ids.device)
            freqs = positions[:, None].to(torch.float32) * self.inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)           # [seq, head_dim]
            cos = emb.cos()[None, None, :, :]                 # [1, 1, seq, head_dim]
            sin = emb.sin()[None, None, :, :]
            # Causal mask, in the graph: 0 on/below the diagonal, finfo.min above.
            upper = torch.triu(torch.ones(seq, seq, dtype=torch.bool,
                                          device=input_ids.device), diagonal=1)
            neg = torch.full((seq, seq), torch.finfo(torch.float32).min,
                             dtype=torch.float32, device=input_ids.device)
            mask = torch.where(upper, neg, torch.zeros_like(neg))
            mask = mask[None, None, :, :].expand(input_ids.shape[0], 1, seq, seq)
            for layer in self.layers:
                x = layer(x, cos, sin, mask)
            return self.lm_head(self.norm(x))

    torch.manual_seed(LLAMA_SEED)
    model = LlamaTiny()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name == "embed_tokens.weight":
                p.normal_(0.0, 0.1)
            else:
                p.normal_(0.0, 0.05)
    model.eval()
    return model


def _rename_matmul_weights(model: onnx.ModelProto) -> None:
    """The exporter names pre-transposed Linear weights `onnx::MatMul_<n>`; name them
    after the module instead (`layers.0.self_attn.q_proj.weight_t`, shape [in, out])."""
    inits = {t.name: t for t in model.graph.initializer}
    renames = {}
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        for i, name in enumerate(node.input):
            if name in inits and name.startswith("onnx::"):
                module = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
                new = f"{module}.weight_t"
                assert new not in inits and new not in renames.values(), new
                renames[name] = new
                node.input[i] = new
    for t in model.graph.initializer:
        t.name = renames.get(t.name, t.name)


def build_llama_tiny() -> onnx.ModelProto:
    import torch

    module = _llama_module()
    example = torch.zeros((2, 7), dtype=torch.int64)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), buf,
            dynamo=False,
            opset_version=LLAMA_OPSET,
            input_names=["input_ids"],
            output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                          "logits": {0: "batch", 1: "seq"}},
            do_constant_folding=True,
        )
    model = onnx.load_from_string(buf.getvalue())
    _rename_matmul_weights(model)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    # Keep only the declared graph inputs/outputs shapes; drop inferred value_info so
    # the file does not depend on the shape-inference version.
    del model.graph.value_info[:]
    return normalize(model)


# --------------------------------------------------------------------------
# 2. encoder_tiny.onnx (onnx.helper)
# --------------------------------------------------------------------------

class _GraphBuilder:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self._names: set[str] = set()

    def init(self, name: str, array: np.ndarray) -> str:
        assert name not in self._names, name
        self._names.add(name)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, n_out: int = 1, **attrs) -> list[str] | str:
        outs = [f"{name}_out{i}" if n_out > 1 else f"{name}_out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs if n_out > 1 else outs[0]


def _encoder_weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(ENC_SEED)
    h, f = ENC_HIDDEN, ENC_FFN
    w: dict[str, np.ndarray] = {}
    for i in range(ENC_LAYERS):
        p = f"layers.{i}"
        w[f"{p}.ln_1.weight"] = f32(1.0 + 0.1 * rng.standard_normal(h))
        w[f"{p}.ln_1.bias"] = f32(0.02 * rng.standard_normal(h))
        for proj in ("q_proj", "k_proj", "v_proj"):
            # Gemm(transB=1) weights: [out, in], like torch.nn.Linear.
            w[f"{p}.attn.{proj}.weight"] = f32(0.08 * rng.standard_normal((h, h)))
            w[f"{p}.attn.{proj}.bias"] = f32(0.02 * rng.standard_normal(h))
        # MatMul weights: [in, out].
        w[f"{p}.attn.o_proj.weight_t"] = f32(0.08 * rng.standard_normal((h, h)))
        w[f"{p}.attn.o_proj.bias"] = f32(0.02 * rng.standard_normal(h))
        w[f"{p}.ln_2.weight"] = f32(1.0 + 0.1 * rng.standard_normal(h))
        w[f"{p}.ln_2.bias"] = f32(0.02 * rng.standard_normal(h))
        w[f"{p}.mlp.fc1.weight_t"] = f32(0.08 * rng.standard_normal((h, f)))
        w[f"{p}.mlp.fc1.bias"] = f32(0.02 * rng.standard_normal(f))
        w[f"{p}.mlp.fc2.weight_t"] = f32(0.05 * rng.standard_normal((f, h)))
        w[f"{p}.mlp.fc2.bias"] = f32(0.02 * rng.standard_normal(h))
    w["ln_f.weight"] = f32(1.0 + 0.1 * rng.standard_normal(h))
    w["ln_f.bias"] = f32(0.02 * rng.standard_normal(h))
    return w


def _int8_per_channel(w: np.ndarray, axis: int, symmetric: bool):
    """Per-channel int8 quantization along `axis` (the channel axis keeps its size)."""
    reduce = tuple(a for a in range(w.ndim) if a != axis)
    lo = np.minimum(w.min(axis=reduce), 0.0).astype(np.float64)
    hi = np.maximum(w.max(axis=reduce), 0.0).astype(np.float64)
    if symmetric:
        scale = np.maximum(np.abs(lo), np.abs(hi)) / 127.0
        zp = np.zeros_like(scale, dtype=np.int8)
    else:
        scale = (hi - lo) / 255.0
        zp = np.clip(np.round(-128.0 - lo / scale), -128, 127).astype(np.int8)
    scale = scale.astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.round(w / scale.reshape(shape)) + zp.reshape(shape).astype(np.float64)
    q = np.clip(q, -128, 127).astype(np.int8)
    return q, scale, zp


def build_encoder_tiny(int8_weights: bool = False) -> onnx.ModelProto:
    """GPT-2-style pre-LN encoder.  With int8_weights, every Gemm/MatMul weight becomes
    DequantizeLinear(int8 weight, per-output-channel scale, zero point)."""
    w = _encoder_weights()
    g = _GraphBuilder()
    h, nh, hd = ENC_HIDDEN, ENC_HEADS, ENC_HEAD_DIM

    g.init("const.shape_2d", np.asarray([-1, h], dtype=np.int64))
    g.init("const.shape_heads", np.asarray([0, 0, nh, hd], dtype=np.int64))
    g.init("const.shape_merge", np.asarray([0, 0, h], dtype=np.int64))
    g.init("const.attn_scale", f32(1.0 / math.sqrt(hd)))
    g.init("const.half", f32(0.5))
    g.init("const.one", f32(1.0))
    g.init("const.sqrt2", f32(math.sqrt(2.0)))

    def weight(name: str, channel_axis: int, symmetric: bool) -> str:
        """Name of the float weight to feed Gemm/MatMul (maybe via DequantizeLinear)."""
        if not int8_weights:
            return g.init(name, w[name])
        q, scale, zp = _int8_per_channel(w[name], channel_axis, symmetric)
        g.init(f"{name}_quantized", q)
        g.init(f"{name}_scale", scale)
        g.init(f"{name}_zero_point", zp)
        return g.node("DequantizeLinear",
                      [f"{name}_quantized", f"{name}_scale", f"{name}_zero_point"],
                      f"/{name.replace('.', '/')}/DequantizeLinear", axis=channel_axis)

    x = "hidden"
    shape_x = g.node("Shape", [x], "/Shape")  # [batch, seq, hidden]
    for i in range(ENC_LAYERS):
        p = f"layers.{i}"
        n = f"/layers.{i}"
        ln1 = g.node("LayerNormalization",
                     [x, g.init(f"{p}.ln_1.weight", w[f"{p}.ln_1.weight"]),
                      g.init(f"{p}.ln_1.bias", w[f"{p}.ln_1.bias"])],
                     f"{n}/ln_1/LayerNormalization", axis=-1, epsilon=ENC_LN_EPS)
        ln1_2d = g.node("Reshape", [ln1, "const.shape_2d"], f"{n}/attn/Reshape_2d")
        heads = {}
        for proj in ("q_proj", "k_proj", "v_proj"):
            # Gemm weights are [out, in] (transB=1): the output channel is axis 0.
            wname = weight(f"{p}.attn.{proj}.weight", channel_axis=0, symmetric=True)
            y2d = g.node("Gemm", [ln1_2d, wname, g.init(f"{p}.attn.{proj}.bias",
                                                        w[f"{p}.attn.{proj}.bias"])],
                         f"{n}/attn/{proj}/Gemm", alpha=1.0, beta=1.0, transA=0, transB=1)
            y3d = g.node("Reshape", [y2d, shape_x], f"{n}/attn/{proj}/Reshape_3d")
            y4d = g.node("Reshape", [y3d, "const.shape_heads"], f"{n}/attn/{proj}/Reshape_heads")
            perm = [0, 2, 3, 1] if proj == "k_proj" else [0, 2, 1, 3]
            heads[proj] = g.node("Transpose", [y4d], f"{n}/attn/{proj}/Transpose", perm=perm)
        scores = g.node("MatMul", [heads["q_proj"], heads["k_proj"]], f"{n}/attn/MatMul_qk")
        scores = g.node("Mul", [scores, "const.attn_scale"], f"{n}/attn/Mul_scale")
        probs = g.node("Softmax", [scores], f"{n}/attn/Softmax", axis=-1)
        ctx = g.node("MatMul", [probs, heads["v_proj"]], f"{n}/attn/MatMul_pv")
        ctx = g.node("Transpose", [ctx], f"{n}/attn/Transpose_merge", perm=[0, 2, 1, 3])
        ctx = g.node("Reshape", [ctx, "const.shape_merge"], f"{n}/attn/Reshape_merge")
        # MatMul weights are [in, out]: the output channel is axis 1.
        wname = weight(f"{p}.attn.o_proj.weight_t", channel_axis=1, symmetric=False)
        o = g.node("MatMul", [ctx, wname], f"{n}/attn/o_proj/MatMul")
        o = g.node("Add", [o, g.init(f"{p}.attn.o_proj.bias", w[f"{p}.attn.o_proj.bias"])],
                   f"{n}/attn/o_proj/Add")
        x = g.node("Add", [x, o], f"{n}/Add_residual_attn")

        ln2 = g.node("LayerNormalization",
                     [x, g.init(f"{p}.ln_2.weight", w[f"{p}.ln_2.weight"]),
                      g.init(f"{p}.ln_2.bias", w[f"{p}.ln_2.bias"])],
                     f"{n}/ln_2/LayerNormalization", axis=-1, epsilon=ENC_LN_EPS)
        wname = weight(f"{p}.mlp.fc1.weight_t", channel_axis=1, symmetric=False)
        h1 = g.node("MatMul", [ln2, wname], f"{n}/mlp/fc1/MatMul")
        h1 = g.node("Add", [h1, g.init(f"{p}.mlp.fc1.bias", w[f"{p}.mlp.fc1.bias"])],
                    f"{n}/mlp/fc1/Add")
        # GELU, erf form: x * 0.5 * (1 + erf(x / sqrt(2))).
        t = g.node("Div", [h1, "const.sqrt2"], f"{n}/mlp/gelu/Div")
        t = g.node("Erf", [t], f"{n}/mlp/gelu/Erf")
        t = g.node("Add", [t, "const.one"], f"{n}/mlp/gelu/Add")
        t = g.node("Mul", [h1, t], f"{n}/mlp/gelu/Mul")
        act = g.node("Mul", [t, "const.half"], f"{n}/mlp/gelu/Mul_half")
        wname = weight(f"{p}.mlp.fc2.weight_t", channel_axis=1, symmetric=False)
        h2 = g.node("MatMul", [act, wname], f"{n}/mlp/fc2/MatMul")
        h2 = g.node("Add", [h2, g.init(f"{p}.mlp.fc2.bias", w[f"{p}.mlp.fc2.bias"])],
                    f"{n}/mlp/fc2/Add")
        x = g.node("Add", [x, h2], f"{n}/Add_residual_mlp")

    g.nodes.append(helper.make_node(
        "LayerNormalization",
        [x, g.init("ln_f.weight", w["ln_f.weight"]), g.init("ln_f.bias", w["ln_f.bias"])],
        ["last_hidden_state"], name="/ln_f/LayerNormalization", axis=-1, epsilon=ENC_LN_EPS))

    graph = helper.make_graph(
        g.nodes, "encoder_tiny_qdq_int8" if int8_weights else "encoder_tiny",
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", h])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                       ["batch", "seq", h])],
        initializer=g.inits)
    return make_model(graph, ENC_OPSET)


# --------------------------------------------------------------------------
# 3. Quantized llama variants (onnxruntime's MatMulNBitsQuantizer)
# --------------------------------------------------------------------------

def quantize_nbits(model: onnx.ModelProto, qdq: bool,
                   op_types: tuple[str, ...] = ("MatMul",)) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer)

    config = DefaultWeightOnlyQuantConfig(
        block_size=Q_BLOCK,
        is_symmetric=False,
        accuracy_level=None,
        quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
        op_types_to_quantize=op_types,
        quant_axes=(("MatMul", 0), ("Gather", 1)),
        bits=Q_BITS,
    )
    quantizer = MatMulNBitsQuantizer(onnx.ModelProto.FromString(model.SerializeToString()),
                                     algo_config=config)
    logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = logger.level
    logger.setLevel(logging.ERROR)  # silence the "forcing opset 21" warnings
    try:
        quantizer.process()
    finally:
        logger.setLevel(level)
    out = quantizer.model.model
    onnx.checker.check_model(out, full_check=True)
    return normalize(out)


# --------------------------------------------------------------------------
# 4. Deliberately invalid models
# --------------------------------------------------------------------------

def _small_valid_model() -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    w = f32(rng.standard_normal((8, 8)) * 0.1)
    b = f32(rng.standard_normal(8) * 0.1)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"], name="/fc/MatMul"),
         helper.make_node("Add", ["xw", "b"], ["y"], name="/fc/Add")],
        "small_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return make_model(graph, 17)


def build_truncated() -> bytes:
    data = _small_valid_model().SerializeToString(deterministic=True)
    return data[: len(data) // 2]


def build_missing_initializer() -> onnx.ModelProto:
    """`fc.weight` is consumed by the MatMul but is neither an input, an initializer
    nor a node output."""
    rng = np.random.default_rng(8)
    b = f32(rng.standard_normal(8) * 0.1)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "fc.weight"], ["xw"], name="/fc/MatMul"),
         helper.make_node("Add", ["xw", "fc.bias"], ["y"], name="/fc/Add")],
        "missing_initializer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        initializer=[numpy_helper.from_array(b, "fc.bias")])
    return make_model(graph, 17)


def build_unsupported_ops() -> onnx.ModelProto:
    """A valid model (runs in onnxruntime) with ops q35c does not support: a random dropout
    mask (RandomUniformLike, Bernoulli) ahead of LSTM, Einsum and TopK."""
    rng = np.random.default_rng(9)
    seq, batch, inp, hid = 5, 1, 8, 4
    w_lstm = f32(0.2 * rng.standard_normal((1, 4 * hid, inp)))
    r_lstm = f32(0.2 * rng.standard_normal((1, 4 * hid, hid)))
    b_lstm = f32(0.1 * rng.standard_normal((1, 8 * hid)))
    w_e = f32(0.2 * rng.standard_normal((hid, 6)))
    nodes = [
        helper.make_node("RandomUniformLike", ["x"], ["u"], name="/drop/RandomUniformLike"),
        helper.make_node("Bernoulli", ["u"], ["keep"], name="/drop/Bernoulli"),
        helper.make_node("Mul", ["x", "keep"], ["xd"], name="/drop/Mul"),
        helper.make_node("LSTM", ["xd", "lstm.W", "lstm.R", "lstm.B"], ["lstm_y", "lstm_h"],
                         name="/lstm/LSTM", hidden_size=hid, direction="forward"),
        # lstm_y: [seq, num_directions=1, batch, hid]
        helper.make_node("Einsum", ["lstm_y", "proj.weight"], ["proj_y"], name="/proj/Einsum",
                         equation="sdbh,hk->sbk"),
        helper.make_node("TopK", ["proj_y", "topk.k"], ["topk_values", "topk_indices"],
                         name="/head/TopK", axis=-1, largest=1, sorted=1),
    ]
    graph = helper.make_graph(
        nodes, "unsupported_ops",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, batch, inp])],
        [helper.make_tensor_value_info("topk_values", TensorProto.FLOAT, [seq, batch, 2]),
         helper.make_tensor_value_info("topk_indices", TensorProto.INT64, [seq, batch, 2])],
        initializer=[numpy_helper.from_array(w_lstm, "lstm.W"),
                     numpy_helper.from_array(r_lstm, "lstm.R"),
                     numpy_helper.from_array(b_lstm, "lstm.B"),
                     numpy_helper.from_array(w_e, "proj.weight"),
                     const_i64("topk.k", [2])])
    return make_model(graph, 17)


def build_bad_external_data() -> onnx.ModelProto:
    """`fc.weight` claims to live in `../outside.bin` (outside the model's directory;
    the file does not exist)."""
    weight = TensorProto()
    weight.name = "fc.weight"
    weight.data_type = TensorProto.FLOAT
    weight.dims.extend([8, 8])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../outside.bin"), ("offset", "0"), ("length", "256")):
        entry = weight.external_data.add()
        entry.key = key
        entry.value = value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "fc.weight"], ["y"], name="/fc/MatMul")],
        "bad_external_data",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        initializer=[weight])
    return make_model(graph, 17)


def build_shape_mismatch() -> onnx.ModelProto:
    """MatMul([2,3] x [3,4]) gives [2,4], but the graph output is declared [2,3]."""
    rng = np.random.default_rng(10)
    w = f32(0.1 * rng.standard_normal((3, 4)))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "fc.weight"], ["y"], name="/fc/MatMul")],
        "shape_mismatch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        initializer=[numpy_helper.from_array(w, "fc.weight")])
    return make_model(graph, 17)


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

def build_all(out_dir: str | Path = HERE, *, with_torch: bool = True) -> list[Path]:
    """Write every model into out_dir (and out_dir/invalid); return the paths written.

    with_torch=False skips the llama models (which need torch for the export)."""
    out = Path(out_dir)
    (out / "invalid").mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def put(name: str, model: onnx.ModelProto | bytes) -> None:
        path = out / name
        if isinstance(model, bytes):
            path.write_bytes(model)
        else:
            save(model, path)
        written.append(path)

    if with_torch:
        llama = build_llama_tiny()
        put("llama_tiny.onnx", llama)
        put("llama_tiny_matmulnbits.onnx", quantize_nbits(llama, qdq=False))
        put("llama_tiny_qdq_int4.onnx", quantize_nbits(llama, qdq=True))
        put("llama_tiny_gather_quantized.onnx",
            quantize_nbits(llama, qdq=False, op_types=("MatMul", "Gather")))
    put("encoder_tiny.onnx", build_encoder_tiny())
    put("encoder_tiny_qdq_int8.onnx", build_encoder_tiny(int8_weights=True))

    put("invalid/truncated.onnx", build_truncated())
    put("invalid/missing_initializer.onnx", build_missing_initializer())
    put("invalid/unsupported_ops.onnx", build_unsupported_ops())
    put("invalid/bad_external_data.onnx", build_bad_external_data())
    put("invalid/shape_mismatch.onnx", build_shape_mismatch())
    return written


def main(argv: list[str]) -> None:
    out = Path(argv[1]) if len(argv) > 1 else HERE
    for path in build_all(out):
        print(f"{path.stat().st_size:>9}  {path}")


if __name__ == "__main__":
    main(sys.argv)
