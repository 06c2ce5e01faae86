"""Memory follows the largest tensor, not the model (docs/benchmarks.md, ONNX import).

A synthetic decoder-like ONNX model keeps 33 float weights in an external-data file (24
matmul weights of 1 MiB, and a 2 MiB embedding table used by a Gather and, transposed, by
the logits MatMul, as tied embeddings are). Import + quantize + write must never hold them
all: numpy reports its allocations to tracemalloc (memory-mapped pages are not numpy
allocations), so the peak of traced memory during a compile bounds every fp32 copy that
was alive at once. The bound is a few times the largest tensor plus the packed output,
well below the sum of the weights, so holding every weight at once (as the importer did
when it copied each initializer into the store) fails it.
"""

import tracemalloc
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from q35c.compiler.driver import Options, compile_file, compile_to_module
from q35c.compiler.weights import FileWeight, WeightStore, store_of

HIDDEN, VOCAB, LAYERS = 512, 1024, 16
MiB = 1 << 20


def build_model(path: Path) -> dict[str, int]:
    """Write the model (external data beside it); returns initializer name -> bytes."""
    rng = np.random.default_rng(7)
    inits, nodes = [], []

    def weight(name: str, shape: tuple[int, ...]) -> str:
        inits.append(numpy_helper.from_array(
            (0.02 * rng.standard_normal(shape)).astype(np.float32), name))
        return name

    embed = weight("embed", (VOCAB, HIDDEN))
    nodes.append(helper.make_node("Gather", [embed, "ids"], ["x0"]))
    x = "x0"
    for i in range(LAYERS):
        up = weight(f"layers.{i}.up", (HIDDEN, HIDDEN))
        down = weight(f"layers.{i}.down", (HIDDEN, HIDDEN))
        nodes += [helper.make_node("MatMul", [x, up], [f"h{i}"]),
                  helper.make_node("Relu", [f"h{i}"], [f"a{i}"]),
                  helper.make_node("MatMul", [f"a{i}", down], [f"d{i}"]),
                  helper.make_node("Add", [x, f"d{i}"], [f"x{i + 1}"])]
        x = f"x{i + 1}"
    nodes += [helper.make_node("Transpose", [embed], ["embed_t"], perm=[1, 0]),
              helper.make_node("MatMul", [x, "embed_t"], ["logits"])]
    graph = helper.make_graph(
        nodes, "memory_test",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8, VOCAB])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save_model(model, str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=path.stem + ".data",
                    size_threshold=1024)
    return {t.name: int(np.prod(t.dims)) * 4 for t in inits}


def compile_traced(model: Path, out: Path) -> int:
    """Compile `model` (import, quantize-weights, write) and return the traced peak."""
    options = Options(target="mlir", passes="quantize-weights,canonicalize,cse",
                      shapes={"ids": (1, 8)})
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        compile_file(model, out, options)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_import_quantize_memory_follows_largest_tensor(tmp_path):
    model = tmp_path / "model.onnx"
    sizes = build_model(model)
    largest, total = max(sizes.values()), sum(sizes.values())
    compile_file(model, tmp_path / "warm", Options(  # imports, caches, code tables
        target="mlir", passes="quantize-weights,canonicalize,cse", shapes={"ids": (1, 8)}))
    peak = compile_traced(model, tmp_path / "out")
    packed = (tmp_path / "out" / "model.q35w").stat().st_size
    # One weight in fp32, its transposed/quantized/decoded working copies, the packed
    # output (which includes the fp32 embedding table the Gather keeps), and IR objects.
    bound = 4 * largest + packed + 2 * MiB
    assert bound < total, "the bound must fail a compile that holds every weight"
    assert peak < bound, (f"compile peaked at {peak / MiB:.1f} MiB of traced allocations; "
                          f"bound {bound / MiB:.1f} MiB (largest tensor "
                          f"{largest / MiB:.1f} MiB, all weights {total / MiB:.1f} MiB)")
    # Deterministic: the traced compile writes the same bytes as the warm-up one.
    for name in ("model.mlir", "model.q35w"):
        assert (tmp_path / "out" / name).read_bytes() == \
            (tmp_path / "warm" / name).read_bytes()


def test_imported_weights_stay_in_the_file(tmp_path):
    """After import, every large initializer (and the folded transpose of the embedding)
    is a file range in the store, not an array; reading one returns the model's values."""
    model = tmp_path / "model.onnx"
    sizes = build_model(model)
    options = Options(target="mlir", passes="", shapes={"ids": (1, 8)})
    _, module = compile_to_module(model, options)
    store = store_of(module)
    assert not [n for n in store.names() if store.file_weight(n) is None
                and isinstance(store[n], np.ndarray) and store[n].nbytes > 64 * 1024]
    files = {n: store.file_weight(n) for n in store.names() if store.file_weight(n)}
    assert set(sizes) <= set(files)
    transposed = [w for w in files.values() if isinstance(w, FileWeight) and w.transpose]
    assert len(transposed) == 1 and transposed[0].result_shape == (HIDDEN, VOCAB)
    loaded = onnx.load(str(model))
    embed = numpy_helper.to_array(next(t for t in loaded.graph.initializer
                                       if t.name == "embed"))
    assert np.array_equal(store["embed"], embed)
    name_t = next(n for n, w in files.items() if w.transpose)
    assert np.array_equal(store[name_t], embed.T)
    # A store written from file entries reads back the same values.
    store.save(tmp_path / "w.q35w")
    back = WeightStore(tmp_path / "w.q35w")
    assert np.array_equal(back[name_t], embed.T) and np.array_equal(back["embed"], embed)


def test_gemm_trans_b_and_fp16_weights_stay_in_the_file(tmp_path):
    """A `Gemm` transB weight is stored as a C-ordered transposed file range ([K, N]), an fp16
    one as a range read as float32: the values the importer used to hold in memory."""
    rng = np.random.default_rng(3)
    w = (0.02 * rng.standard_normal((384, 256))).astype(np.float32)  # [N, K], transB=1
    w16 = (0.02 * rng.standard_normal((256, 384))).astype(np.float16)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1),
         helper.make_node("MatMul", ["x", "w16"], ["z"])], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 384]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 384])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w16, "w16")])
    model = tmp_path / "gemm.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]),
                    str(model), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="gemm.data", size_threshold=1024)
    _, module = compile_to_module(model, Options(target="mlir", passes=""))
    store = store_of(module)
    assert store.file_weight("w.T") is not None and store.file_weight("w16") is not None
    t = store["w.T"]
    assert t.flags.c_contiguous and np.array_equal(t, w.T)
    assert store["w16"].dtype == np.float32 and np.array_equal(store["w16"], w16)
