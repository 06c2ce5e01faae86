"""ONNX graphs from other exporters: Keras models through tf2onnx, Flax (NNX) modules through
jax2onnx and Hugging Face models through optimum, then run through q35c and compared with
onnxruntime.

    python examples/exporters/frameworks.py export OUT     # OUT/<name>.<exporter>.onnx
    python examples/exporters/frameworks.py check OUT [--target c] [--quantized] [--markdown]

`export` needs TensorFlow, tf2onnx, JAX, Flax and jax2onnx (`pip install tensorflow-cpu
tf2onnx jax2onnx`), and torch with optimum (`pip install torch==2.13.0 optimum-onnx`, which
pins transformers 4.x), best each in a virtual environment of its own: they pin other
versions of numpy, protobuf and transformers than q35c's `models` extra does; an exporter
that is missing is skipped with a note, so running `export` in each environment collects
them all.
`check` needs only q35c and onnxruntime. The models are small and random (seeded): a CNN
(convolution, batch norm, depthwise convolution, pooling, swish, softmax), a transformer
encoder block (Keras MultiHeadAttention, LayerNorm, GELU) and a recurrent model (LSTM and
GRU, which tf2onnx writes as Loop nodes with while-loop conditions) from Keras; an MLP, a
pre-norm transformer block (RMSNorm, MultiHeadAttention, SiLU) and a CNN from Flax;
LLaMA, Qwen2 and GPT-2 decoders with their KV cache (optimum's `text-generation-with-past`:
`past_key_values.*` in, `present.*` out) and a BERT encoder from optimum.
docs/onnx.md ("Other exporters") has the measured table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # noqa: E402  (q35c run and the result table, shared with zoo.py)

SEED = 0


def _keras(out: Path) -> dict[str, str]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import tf2onnx

    tf.random.set_seed(SEED)
    layers = tf.keras.layers
    status = {}

    def save(name, inputs, outputs):
        spec = [tf.TensorSpec(inputs.shape, tf.float32, name=inputs.name)]
        try:
            tf2onnx.convert.from_keras(tf.keras.Model(inputs, outputs), input_signature=spec,
                                       opset=17, output_path=str(out / f"{name}.tf2onnx.onnx"))
            status[name] = "ok"
        except Exception as err:  # the exporter's own failure, not q35c's
            status[name] = f"tf2onnx: {type(err).__name__}: {str(err)[:120]}"

    image = tf.keras.Input((32, 32, 3), batch_size=1, name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(image)
    x = layers.BatchNormalization()(x)
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(16, 3, strides=2, activation="swish")(x)
    x = layers.GlobalAveragePooling2D()(x)
    save("keras_cnn", image, layers.Dense(10, activation="softmax")(x))

    tokens = tf.keras.Input((16, 64), batch_size=1, name="tokens")
    h = layers.LayerNormalization()(tokens + layers.MultiHeadAttention(4, 16)(tokens, tokens))
    f = layers.Dense(128, activation=lambda t: tf.keras.activations.gelu(t, approximate=True))(h)
    save("keras_encoder", tokens, layers.LayerNormalization()(h + layers.Dense(64)(f)))

    seq = tf.keras.Input((12, 20), batch_size=1, name="seq")
    x = layers.GRU(16)(layers.LSTM(32, return_sequences=True)(seq))
    save("keras_rnn", seq, layers.Dense(4)(x))
    return status


def _flax(out: Path) -> dict[str, str]:
    import jax
    from flax import nnx
    from jax2onnx import to_onnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1, self.ln = nnx.Linear(32, 64, rngs=rngs), nnx.LayerNorm(64, rngs=rngs)
            self.l2 = nnx.Linear(64, 10, rngs=rngs)

        def __call__(self, x):
            return jax.nn.softmax(self.l2(jax.nn.gelu(self.ln(self.l1(x)))))

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.att = nnx.MultiHeadAttention(num_heads=4, in_features=64, qkv_features=64,
                                              decode=False, rngs=rngs)
            self.n1, self.n2 = nnx.RMSNorm(64, rngs=rngs), nnx.RMSNorm(64, rngs=rngs)
            self.up, self.down = nnx.Linear(64, 128, rngs=rngs), nnx.Linear(128, 64, rngs=rngs)

        def __call__(self, x):
            h = x + self.att(self.n1(x))
            return h + self.down(jax.nn.silu(self.up(self.n2(h))))

    class CNN(nnx.Module):
        def __init__(self, rngs):
            self.c1 = nnx.Conv(3, 8, kernel_size=(3, 3), rngs=rngs)
            self.c2 = nnx.Conv(8, 16, kernel_size=(3, 3), strides=(2, 2), rngs=rngs)
            self.fc = nnx.Linear(16, 5, rngs=rngs)

        def __call__(self, x):
            x = jax.nn.relu(self.c2(jax.nn.relu(self.c1(x))))
            return self.fc(x.mean(axis=(1, 2)))

    status = {}
    for name, module, shape in [("flax_mlp", MLP, (2, 32)), ("flax_block", Block, (1, 16, 64)),
                                ("flax_cnn", CNN, (1, 16, 16, 3))]:
        try:
            to_onnx(module(nnx.Rngs(SEED)), [shape], return_mode="file",
                    output_path=str(out / f"{name}.jax2onnx.onnx"))
            status[name] = "ok"
        except Exception as err:
            status[name] = f"jax2onnx: {type(err).__name__}: {str(err)[:120]}"
    return status


def _optimum(out: Path) -> dict[str, str]:
    """Tiny random Hugging Face models through optimum's ONNX exporter (`optimum-cli export
    onnx`): decoders with their KV cache as inputs and outputs, and a BERT encoder."""
    import torch
    import transformers
    from optimum.exporters.onnx import main_export

    torch.manual_seed(SEED)
    small = {"vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "intermediate_size": 128,
             "max_position_embeddings": 128}
    models = {
        "llama": (transformers.LlamaConfig(**small, num_key_value_heads=2),
                  transformers.LlamaForCausalLM, "text-generation-with-past"),
        "qwen2": (transformers.Qwen2Config(**small, num_key_value_heads=2),
                  transformers.Qwen2ForCausalLM, "text-generation-with-past"),
        "gpt2": (transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4,
                                         n_positions=128),
                 transformers.GPT2LMHeadModel, "text-generation-with-past"),
        "bert": (transformers.BertConfig(**small), transformers.BertModel,
                 "feature-extraction"),
    }
    status = {}
    for name, (config, model_class, task) in models.items():
        with tempfile.TemporaryDirectory() as tmp:
            model_class(config).save_pretrained(Path(tmp) / "hf")
            try:
                main_export(str(Path(tmp) / "hf"), output=Path(tmp) / "onnx", task=task)
                (Path(tmp) / "onnx" / "model.onnx").replace(out / f"optimum_{name}.optimum.onnx")
                status[f"optimum_{name}"] = "ok"
            except Exception as err:
                status[f"optimum_{name}"] = f"optimum: {type(err).__name__}: {str(err)[:120]}"
    return status


EXPORTERS = {"tf2onnx": _keras, "jax2onnx": _flax, "optimum": _optimum}


def export(out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    status = {}
    for exporter, make in EXPORTERS.items():
        try:
            status.update(make(out))
        except ImportError as err:
            status[exporter] = f"skipped: {err.name} is not installed"
    return status


#: values of the symbolic input dimensions the exporters write (others are 1)
DIMS = {"sequence_length": 4, "past_sequence_length": 3,
        "past_sequence_length + sequence_length": 7}
VOCAB = 256


def feeds_for(session, seed: int = SEED) -> dict[str, np.ndarray]:
    """Inputs of the graph's input shapes (symbolic dims from DIMS, else 1): token ids
    below VOCAB, an all-ones attention mask, positions after the past, zero token types,
    standard-normal floats (images, states, the past keys and values)."""
    rng = np.random.default_rng(seed)
    past = DIMS["past_sequence_length"] if any(
        i.name.startswith("past") for i in session.get_inputs()) else 0
    feeds = {}
    for info in session.get_inputs():
        shape = [d if isinstance(d, int) else DIMS.get(d, 1) for d in info.shape]
        if info.type == "tensor(float)":
            feeds[info.name] = rng.standard_normal(shape).astype(np.float32)
        elif info.name == "input_ids":
            feeds[info.name] = rng.integers(0, VOCAB, shape).astype(np.int64)
        elif info.name == "position_ids":
            feeds[info.name] = np.broadcast_to(np.arange(past, past + shape[-1]),
                                               shape).astype(np.int64)
        elif info.name == "attention_mask":
            feeds[info.name] = np.ones(shape, np.int64)
        else:
            feeds[info.name] = np.zeros(shape, np.int64)
    return feeds


def check(path: Path, target: str, quantized: bool, q35c: list[str]) -> dict:
    """`q35c run --target TARGET` (float import unless `quantized`) against onnxruntime on
    every output: {"status": "ok" | q35c's error line, "rel": the largest over the outputs
    of max abs error / max abs of onnxruntime's output}."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # tf2onnx leaves unused initializers: not our business
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = feeds_for(session)
    outputs = zoo.run_q35c(path, feeds, target, quantized, q35c)
    if isinstance(outputs, str):
        return {"status": outputs, "rel": None}
    rel = 0.0
    for info, reference in zip(session.get_outputs(), session.run(None, feeds)):
        got = outputs[info.name]
        if got.shape != reference.shape:
            return {"status": f"{info.name}: shape {got.shape}, onnxruntime "
                              f"{reference.shape}", "rel": None}
        rel = max(rel, float(np.max(np.abs(got.astype(np.float64) - reference)) /
                             max(float(np.max(np.abs(reference))), 1e-30)))
    return {"status": "ok", "rel": rel}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("export", help="export the models").add_argument("out", type=Path)
    zoo.add_check_command(sub)
    args = parser.parse_args(argv)
    if args.command == "export":
        for name, status in export(args.out).items():
            print(f"{name}: {status}")
        return 0
    q35c = [sys.executable, "-m", "q35c.compiler.cli"]
    results = {path: check(path, args.target, args.quantized, q35c)
               for path in sorted(args.out.glob("*.onnx"))}
    return 1 if zoo.print_results(results, args.target, args.markdown) else 0

if __name__ == "__main__":
    sys.exit(main())
