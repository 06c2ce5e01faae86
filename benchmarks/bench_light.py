"""The `light` CNNs of the onnx wheel through q35c: accuracy and run time per model.

    python benchmarks/bench_light.py [--target interp|c] [--random-weights] [NAME ...]

The models (onnx/backend/test/data/light: AlexNet, ResNet-50, DenseNet-121, Inception v1
and v2, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512) ship with weights made by
ConstantOfShape nodes and one expected output, for the input `arange(n) / n`.

- By default each model runs once in float (`--passes ''`) on that input and is compared
  with its `*_output_0.pb` (what `onnx_node_suite.py --light` checks, here with figures).
- `--random-weights` replaces every float weight (each ConstantOfShape output and float
  initializer) by seeded random values of a sane scale (He-normal for conv and dense
  weights, batch-norm statistics near their identity), feeds a standard-normal image and
  compares q35c's logits (a final Softmax is dropped: random weights make it nearly
  one-hot, which hides errors) with onnxruntime's (CPU, float32) twice: float
  (`--passes ''`) and with the default quantizing pipeline (`default`, what `q35c run`
  does without --passes). Today that pipeline quantizes the Gemm (dense) weights to
  Q3P5; Conv weights stay float32 (Conv is a `q35nn.onnx_node`, which the quantization
  passes do not touch).

Columns: max abs error of the output, the same relative to the largest |reference|
output, the relative L2 error ||got - want|| / ||want||, whether the top-1 class agrees,
and seconds to compile (import + passes + lowering, C build cached) and to run once (C:
the loaded model's run alone; interp: the interpreter's run).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def light_models() -> list[str]:
    return sorted(p.stem.removeprefix("light_") for p in LIGHT_DIR.glob("light_*.onnx"))


@dataclass
class Result:
    model: str
    mode: str
    max_abs: float
    max_rel: float
    rel_l2: float
    top1: bool
    compile_s: float
    run_s: float

    def row(self) -> str:
        return (f"| {self.model} | {self.mode} | {self.max_abs:.3g} | {self.max_rel:.3g} | "
                f"{self.rel_l2:.3g} | "
                f"{'yes' if self.top1 else 'no'} | {self.compile_s:.1f} | {self.run_s:.2f} |")


HEADER = ("| model | run | max abs error | max rel error | rel L2 error | top-1 agrees "
          "| compile s | run s |\n|---|---|---:|---:|---:|---|---:|---:|")


def data_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    initializers = {t.name for t in model.graph.initializer}
    return next(i for i in model.graph.input if i.name not in initializers)


def input_shape(info: onnx.ValueInfoProto) -> tuple[int, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else 1
                 for d in info.type.tensor_type.shape.dim)


def _consumers(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for slot, name in enumerate(node.input):
            uses.setdefault(name, []).append((node, slot))
    return uses


def _is_scale(name: str, uses) -> bool:
    """Whether a 1-D weight multiplies (a batch-norm scale or variance, or the Mul of an
    unfolded batch norm): such weights are drawn near 1, not near 0."""
    for node, slot in uses.get(name, []):
        if node.op_type == "BatchNormalization" and slot in (1, 4):
            return True
        if node.op_type == "Mul":
            return True
        if node.op_type == "Unsqueeze" and _is_scale(node.output[0], uses):
            return True
    return False


def random_weight(name: str, shape: tuple[int, ...], uses, rng) -> np.ndarray:
    """A float32 weight of `shape`: He-normal over the fan-in (all dims but the first) for
    conv and dense weights, U(0.5, 1.5) for 1-D scales and variances, N(0, 0.1) for
    other 1-D weights (biases, means, shifts)."""
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    if _is_scale(name, uses):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    return (rng.standard_normal(shape) * 0.1).astype(np.float32)


def randomize(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """`model` with every ConstantOfShape output and float initializer replaced by a
    random initializer (`random_weight`), the ConstantOfShape nodes removed, and a final
    Softmax dropped (its input, the logits, becomes the output)."""
    rng = np.random.default_rng(seed)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    uses = _consumers(model)
    shapes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    keep, weights = [], {}
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
            shape = tuple(int(d) for d in shapes[node.input[0]])
            weights[node.output[0]] = random_weight(node.output[0], shape, uses, rng)
        else:
            keep.append(node)
    if keep[-1].op_type == "Softmax":  # compare logits: a peaky softmax hides the error
        last = keep.pop()
        graph.output[0].name = last.input[0]
    del graph.node[:]
    graph.node.extend(keep)
    used = {name for node in keep for name in node.input}
    inits = []
    for t in graph.initializer:
        if t.name not in used:
            continue
        array = numpy_helper.to_array(t)
        if array.dtype == np.float32:
            array = random_weight(t.name, array.shape, uses, rng)
        inits.append(numpy_helper.from_array(array, t.name))
    inits += [numpy_helper.from_array(a, n) for n, a in weights.items()]
    inputs = [i for i in graph.input if i.name in used]
    del graph.input[:]
    graph.input.extend(inputs)
    declared = {i.name for i in inputs}  # IR version 3: initializers are inputs too
    graph.input.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, a.shape)
                       for n, a in weights.items() if n not in declared)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return model


def run_q35c(path: Path, feeds: dict[str, np.ndarray], target: str, passes: str | None
             ) -> tuple[np.ndarray, float, float]:
    """The first output of `path` on `feeds`, the compile seconds and the run seconds."""
    from q35c.compiler.driver import Options, compile_to_module, get_target
    from q35c.compiler.weights import store_of

    start = time.perf_counter()
    tgt = get_target(target)
    options = Options(target=target, passes=passes,
                      shapes={k: v.shape for k, v in feeds.items()})
    ctx, module = compile_to_module(path, options, tgt)
    store = store_of(module)
    if target == "c":
        from q35c.targets.c.emit import emit
        from q35c.targets.c.session import CSession

        with CSession.from_emitted(emit(module, store, None, "model")) as session:
            compiled = time.perf_counter() - start
            start = time.perf_counter()
            out = session.run(feeds)
            ran = time.perf_counter() - start
        return next(iter(out.values())), compiled, ran
    compiled = time.perf_counter() - start
    start = time.perf_counter()
    out = tgt.run(ctx, module, store, feeds, None)
    ran = time.perf_counter() - start
    return np.asarray(next(iter(out.values()))), compiled, ran


def compare(model: str, mode: str, got: np.ndarray, want: np.ndarray, compiled: float,
            ran: float) -> Result:
    got64, want64 = got.astype(np.float64).ravel(), want.astype(np.float64).ravel()
    err = float(np.abs(got64 - want64).max())
    return Result(model, mode, err, err / float(np.abs(want64).max()),
                  float(np.linalg.norm(got64 - want64) / np.linalg.norm(want64)),
                  int(got64.argmax()) == int(want64.argmax()), compiled, ran)


def bench_expected(name: str, target: str) -> Result:
    path = LIGHT_DIR / f"light_{name}.onnx"
    info = data_input(onnx.load(path))
    shape = input_shape(info)
    count = int(np.prod(shape))
    feeds = {info.name: (np.arange(count).reshape(shape) / count).astype(np.float32)}
    want = numpy_helper.to_array(onnx.load_tensor(str(LIGHT_DIR / f"light_{name}_output_0.pb")))
    got, compiled, ran = run_q35c(path, feeds, target, "")
    return compare(name, f"{target} float vs expected", got, want, compiled, ran)


def bench_random(name: str, target: str, seed: int, work: Path,
                 modes: tuple[str, ...] = ("float", "quantized")) -> list[Result]:
    import onnxruntime

    model = randomize(onnx.load(LIGHT_DIR / f"light_{name}.onnx"), seed)
    path = work / f"{name}_random.onnx"
    onnx.save(model, path)
    info = data_input(model)
    rng = np.random.default_rng(seed + 1)
    feeds = {info.name: rng.standard_normal(input_shape(info)).astype(np.float32)}
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    want = session.run(None, feeds)[0]
    results = []
    for mode in modes:
        passes = {"float": "", "quantized": None}[mode]
        got, compiled, ran = run_q35c(path, feeds, target, passes)
        results.append(compare(name, f"{target} {mode} vs onnxruntime", got, want,
                               compiled, ran))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"models (default all: {', '.join(light_models())})")
    parser.add_argument("--target", default="c", choices=("c", "interp"))
    parser.add_argument("--random-weights", action="store_true",
                        help="random weights, compared with onnxruntime (float and quantized)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(light_models()))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}")
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in args.names or light_models():
            results = (bench_random(name, args.target, args.seed, Path(tmp))
                       if args.random_weights else [bench_expected(name, args.target)])
            for r in results:
                print(r.row(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
