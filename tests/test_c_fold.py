"""targets/native/fold.py: the C target's copies of a KV-cache attention are gone, and every
output keeps its bits.

The model is a decode step's attention in the form the dynamo exporter writes for
SmolLM2 (transformers' sdpa path): the new keys and values concatenated to the past ones
(the `present` outputs), broadcast from the KV heads to the query heads (GQA: Unsqueeze,
Expand, Reshape), K transposed, q and k^T each multiplied by a scalar, the mask added,
softmax, p v. It is compiled once and emitted with and without folding; both programs run
on the same inputs and must write the same bytes (float and int8 activations). The plan
checks name what must be gone: the GQA broadcasts and K's transpose (the attention reads
the present buffers in place), the scaled copies, and `func.return`'s copies.

Plan-level tests run `fold_program` on hand-built programs and a numpy model of the steps
(`simulate`, summing in double in k order as the kernels do): the rewrites never change a
result, for random transposes, broadcasts and scales (hypothesis), and refuse what they must
(two multiplies, a source written in between, a dtype-changing view).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

from q35c.targets.native.fold import fold_program
from q35c.targets.native.lower import strides
from q35c.targets.native.program import Buffer, Program, Step

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, PAST = 64, 4, 2, 16, 7


def gqa_attention(seq: int, past: int = PAST) -> onnx.ModelProto:
    """One attention layer over a KV cache, as the dynamo exporter writes SmolLM2's."""
    rng = np.random.default_rng(1)
    group = HEADS // KV_HEADS
    total = past + seq
    inits = [numpy_helper.from_array(v, n) for n, v in {
        "wq": rng.standard_normal((HIDDEN, HEADS * HEAD_DIM)).astype(np.float32) / 8,
        "wk": rng.standard_normal((HIDDEN, KV_HEADS * HEAD_DIM)).astype(np.float32) / 8,
        "wv": rng.standard_normal((HIDDEN, KV_HEADS * HEAD_DIM)).astype(np.float32) / 8,
        "wo": rng.standard_normal((HEADS * HEAD_DIM, HIDDEN)).astype(np.float32) / 8,
        "scale": np.array(1 / math.sqrt(math.sqrt(HEAD_DIM)), np.float32),
        "q_shape": np.array([1, seq, HEADS, HEAD_DIM], np.int64),
        "kv_shape": np.array([1, seq, KV_HEADS, HEAD_DIM], np.int64),
        "expand": np.array([1, KV_HEADS, group, total, HEAD_DIM], np.int64),
        "heads": np.array([1, HEADS, total, HEAD_DIM], np.int64),
        "merge": np.array([1, seq, HEADS * HEAD_DIM], np.int64),
        "axis2": np.array([2], np.int64),
    }.items()]
    nodes = []

    def node(op, ins, out, **attrs):
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    def heads(x, weight, shape, name):
        y = node("Reshape", [node("MatMul", [x, weight], f"{name}/mm"), shape], f"{name}/r")
        return node("Transpose", [y], f"{name}/t", perm=[0, 2, 1, 3])

    q = heads("x", "wq", "q_shape", "q")
    present = {}
    for kind, weight in (("key", "wk"), ("value", "wv")):
        new = heads("x", weight, "kv_shape", kind)
        present[kind] = node("Concat", [f"past.{kind}", new], f"present.{kind}", axis=2)
    wide = {kind: node("Reshape", [node("Expand", [node(
        "Unsqueeze", [p, "axis2"], f"{kind}/u"), "expand"], f"{kind}/e"), "heads"], f"{kind}/h")
        for kind, p in present.items()}
    k_t = node("Transpose", [wide["key"]], "k_t", perm=[0, 1, 3, 2])
    scores = node("MatMul", [node("Mul", [q, "scale"], "q_s"), node("Mul", [k_t, "scale"],
                                                                     "k_s")], "scores")
    probs = node("Softmax", [node("Add", [scores, "mask"], "masked")], "probs", axis=-1)
    ctx = node("Transpose", [node("MatMul", [probs, wide["value"]], "ctx")], "ctx_t",
               perm=[0, 2, 1, 3])
    node("MatMul", [node("Reshape", [ctx, "merge"], "ctx_m"), "wo"], "out")
    kv = [1, KV_HEADS, past, HEAD_DIM]
    graph = helper.make_graph(
        nodes, "gqa_attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, HIDDEN]),
         helper.make_tensor_value_info("past.key", TensorProto.FLOAT, kv),
         helper.make_tensor_value_info("past.value", TensorProto.FLOAT, kv),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, seq, total])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
         for n in ("out", "present.key", "present.value")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


def compile_both(tmp_path, seq: int, act: str, past: int = PAST):
    from q35c.compiler.cli import _options
    from q35c.compiler.driver import compile_to_module, get_target
    from q35c.compiler.weights import store_of
    from q35c.targets.c.emit import emit

    path = tmp_path / "attn.onnx"
    onnx.save_model(gqa_attention(seq, past), path)
    options = _options("c", None, None, False, None, (), None, act=act)
    _, module = compile_to_module(path, options, get_target("c"))
    store = store_of(module)
    return (emit(module, store, None, "model", fold=False),
            emit(module, store, None, "model", fold=True))


def feeds(seq: int, past: int = PAST) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    kv = (1, KV_HEADS, past, HEAD_DIM)
    mask = np.triu(np.full((seq, past + seq), -1e9, np.float32), past + 1)
    mask[:, 0] = -1e9  # a padded slot
    return {"x": rng.standard_normal((1, seq, HIDDEN)).astype(np.float32),
            "past.key": rng.standard_normal(kv).astype(np.float32),
            "past.value": rng.standard_normal(kv).astype(np.float32),
            "mask": mask[None, None]}


@pytest.mark.parametrize("seq,act,past", [(1, "float", PAST), (3, "int8", PAST),
                                          (5, "float", 40)])
def test_kv_cache_attention_reads_the_cache_in_place_with_the_same_bits(tmp_path, seq, act,
                                                                        past):
    """(5, 40): 45 keys, two strips of q35rt_bmm.c's blocks and a tail of 13 columns; 10
    query rows per key head, two blocks of 4 and a short one."""
    from q35c.targets.c.build import execute

    plain, folded = compile_both(tmp_path, seq, act, past)
    inputs = feeds(seq, past)
    want, got = execute(plain, inputs), execute(folded, inputs)
    assert set(want) == set(got) == {"out", "present.key", "present.value"}
    for name in want:
        assert want[name].tobytes() == got[name].tobytes(), name

    steps = folded.program.steps
    assert [s.kernel for s in steps if "batch_matmul" in s.kernel] == \
        ["batch_matmul_strided"] * 2
    assert not [s for s in steps if s.origin == "func.return"]
    wide = HEADS * (past + seq) * HEAD_DIM  # a key or value tensor over the query heads
    assert not [s for s in steps if s.kernel in ("copy_strided", "elementwise")
                and s.outs[0].size >= wide]
    assert [s for s in plain.program.steps if s.kernel == "copy_strided"
            and s.outs[0].size >= wide]  # the test would not notice the copies otherwise
    source = folded.files["model.c"].decode()
    assert source.count("q35_batch_matmul_strided_f32(") == 3  # the definition and 2 calls
    assert "func.return" not in source
    # both attention matmuls read the present outputs themselves
    calls = [line for line in source.splitlines() if "q35_batch_matmul_strided_f32(((" in line]
    assert "out_1_present_key" in calls[0] and "out_2_present_value" in calls[1]
    assert folded.program.arena_bytes < plain.program.arena_bytes


def test_folding_is_deterministic(tmp_path):
    plain, folded = compile_both(tmp_path, 2, "float")
    _, again = compile_both(tmp_path, 2, "float")
    assert folded.files == again.files


# -- plan level: hand-built programs and a numpy model of their steps ----------------------


def simulate(program: Program, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the steps this file uses in numpy, as the C kernels compute them."""
    memory = {id(b): np.zeros(b.size, b.dtype) for b in program.buffers if b.alias_of is None}
    for name, buf in program.inputs:
        memory[id(buf)][:] = inputs[name].ravel()

    def flat(buf):
        return memory[id(buf.root)]

    for step in program.steps:
        q = step.params
        if step.kernel == "copy_strided":
            dst, src = flat(step.outs[0]), flat(step.ins[0])
            for i in np.ndindex(*q["dims"]):
                dst[q["dst_off"] + np.dot(i, q["dst_strides"])] = \
                    src[q["src_off"] + np.dot(i, q["src_strides"])]
        elif step.kernel == "elementwise":
            a, b = (flat(x) for x in step.ins)
            flat(step.outs[0])[:] = a * (b if b.size == a.size else b[0])
        elif step.kernel == "copy":
            flat(step.outs[0])[:] = flat(step.ins[0])
        elif step.kernel in ("batch_matmul", "batch_matmul_strided"):
            m, k, n = q["m"], q["k"], q["n"]
            a, b = (flat(x) for x in step.ins[:2])
            scales = iter(step.ins[2:])
            layout = {}
            for side, cols in (("a", k), ("b", n)):
                row, col, scale = cols, 1, None
                if step.kernel == "batch_matmul_strided":
                    row, col = q[f"{side}_row"], q[f"{side}_col"]
                    if q[f"{side}_scale"] is not None:
                        scale = flat(next(scales))[q[f"{side}_scale"]]
                layout[side] = (row, col, scale)
            out = flat(step.outs[0])
            for t in range(len(q["a_off"])):
                for i in range(m):
                    for j in range(n):
                        total = 0.0
                        for p in range(k):
                            values = []
                            for side, src, r, c in (("a", a, i, p), ("b", b, p, j)):
                                row, col, scale = layout[side]
                                v = src[q[f"{side}_off"][t] + r * row + c * col]
                                values.append(v if scale is None else np.float32(v * scale))
                            total += float(values[0]) * float(values[1])
                        out[t * m * n + i * n + j] = np.float32(total)
        else:
            raise AssertionError(step.kernel)
    return {name: flat(buf).reshape(buf.shape).copy() for name, buf in program.outputs}


class ProgramBuilder:
    def __init__(self):
        self.buffers, self.steps, self.inputs, self.outputs = [], [], [], []

    def buffer(self, shape, kind="arena", dtype=np.float32):
        buf = Buffer(f"t{len(self.buffers)}", np.dtype(dtype), tuple(shape), kind)
        self.buffers.append(buf)
        return buf

    def input(self, name, shape):
        buf = self.buffer(shape, "input")
        self.inputs.append((name, buf))
        return buf

    def view(self, src, shape, dtype=np.float32):
        buf = Buffer(f"t{len(self.buffers)}_v", np.dtype(dtype), tuple(shape), src.root.kind,
                     alias_of=src)
        self.buffers.append(buf)
        return buf

    def transpose(self, src, perm):
        out = self.buffer([src.shape[p] for p in perm])
        st = strides(src.shape)
        self.steps.append(Step("copy_strided", [out], [src], {
            "dims": list(out.shape), "dst_off": 0, "dst_strides": strides(out.shape),
            "src_off": 0, "src_strides": [st[p] for p in perm]}, "linalg.transpose"))
        return out

    def broadcast(self, src, shape, added):
        out = self.buffer(shape)
        src_st = iter(strides(src.shape))
        st = [0 if d in added else next(src_st) for d in range(len(shape))]
        self.steps.append(Step("copy_strided", [out], [src], {
            "dims": list(shape), "dst_off": 0, "dst_strides": strides(shape), "src_off": 0,
            "src_strides": st}, "linalg.broadcast"))
        return out

    def mul(self, x, s):
        out = self.buffer(x.shape)
        self.steps.append(Step("elementwise", [out], [x, s], {"op": "mul"}, "arith.mulf"))
        return out

    def bmm(self, a, b):
        batch, m, k, n = a.shape[:-2], a.shape[-2], a.shape[-1], b.shape[-1]
        out = self.buffer((*batch, m, n))
        count = int(np.prod(batch, dtype=np.int64))
        self.steps.append(Step("batch_matmul", [out], [a, b], {
            "a_off": [t * m * k for t in range(count)],
            "b_off": [t * k * n for t in range(count)], "m": m, "k": k, "n": n},
            "q35nn.batch_matmul"))
        return out

    def output(self, name, value):
        out = self.buffer(value.shape, "output", value.dtype)
        self.steps.append(Step("copy", [out], [value], {}, "func.return"))
        self.outputs.append((name, out))
        return out

    def program(self):
        return Program("p", self.inputs, self.outputs, self.buffers, self.steps, [])


def fold_and_compare(builder: ProgramBuilder, inputs) -> Program:
    """Fold the program; its outputs must be the unfolded program's, bit for bit."""
    want = simulate(builder.program(), inputs)
    program = fold_program(builder.program())
    got = simulate(program, inputs)
    for name in want:
        assert want[name].tobytes() == got[name].tobytes(), name
    return program


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 3), k=st.integers(1, 5), n=st.integers(1, 4),
       kv=st.integers(1, 2), group=st.integers(1, 3), transposed=st.booleans(),
       scale_a=st.booleans(), scale_b=st.booleans(), seed=st.integers(0, 2**16))
def test_folding_never_changes_a_bit(m, k, n, kv, group, transposed, scale_a, scale_b, seed):
    rng = np.random.default_rng(seed)
    p = ProgramBuilder()
    a = p.input("a", (kv * group, m, k))
    src = p.input("b", (kv, n, k) if transposed else (kv, k, n))
    s = p.input("s", (1,))
    wide = p.broadcast(src, (kv, group, *src.shape[1:]), {1})
    b = p.view(wide, (kv * group, *src.shape[1:]))
    if transposed:
        b = p.transpose(b, (0, 2, 1))
    if scale_a:
        a = p.mul(a, s)
    if scale_b:
        b = p.mul(b, s)
    p.output("y", p.bmm(a, b))
    inputs = {"a": rng.standard_normal(a.shape).astype(np.float32),
              "b": rng.standard_normal(src.shape).astype(np.float32),
              "s": np.float32(rng.standard_normal((1,)) * 3)}
    program = fold_and_compare(p, inputs)
    kernels = [step.kernel for step in program.steps]
    assert kernels == ["batch_matmul_strided"]  # every copy and multiply read in place
    assert program.outputs[0][1] is program.steps[0].outs[0].root  # written in place


def test_two_multiplies_are_not_merged():
    rng = np.random.default_rng(0)
    p = ProgramBuilder()
    a, b, s = p.input("a", (1, 2, 3)), p.input("b", (1, 3, 2)), p.input("s", (1,))
    p.output("y", p.bmm(p.mul(p.mul(a, s), s), b))
    inputs = {"a": rng.standard_normal((1, 2, 3)).astype(np.float32),
              "b": rng.standard_normal((1, 3, 2)).astype(np.float32),
              "s": np.float32([0.3])}
    program = fold_and_compare(p, inputs)
    assert [step.kernel for step in program.steps] == ["elementwise", "batch_matmul_strided"]


def test_a_source_written_in_between_is_not_read_around_its_copy():
    p = ProgramBuilder()
    a, b = p.input("a", (1, 2, 3)), p.input("b", (1, 2, 3))
    mid = p.buffer((1, 2, 3))
    p.steps.append(Step("copy", [mid], [b], {}, "x"))
    moved = p.transpose(mid, (0, 2, 1))
    p.steps.append(Step("copy", [mid], [a], {}, "overwrites the copy's source"))
    p.output("y", p.bmm(a, moved))
    p.output("z", mid)
    rng = np.random.default_rng(0)
    inputs = {n: rng.standard_normal((1, 2, 3)).astype(np.float32) for n in "ab"}
    program = fold_and_compare(p, inputs)
    assert "batch_matmul" in [s.kernel for s in program.steps]
    assert "copy_strided" in [s.kernel for s in program.steps]


def test_an_output_is_written_in_place_once_and_inputs_are_copied():
    p = ProgramBuilder()
    a, b = p.input("a", (1, 2, 2)), p.input("b", (1, 2, 2))
    y = p.bmm(a, b)
    p.output("y", y)
    p.output("y_again", y)  # the same value twice: the second copies from the first
    p.output("a", a)  # an input: copied
    rng = np.random.default_rng(0)
    inputs = {n: rng.standard_normal((1, 2, 2)).astype(np.float32) for n in "ab"}
    program = fold_and_compare(p, inputs)
    outs = dict(program.outputs)
    assert y.root is outs["y"]
    copies = [(s.outs[0], s.ins[0].root) for s in program.steps if s.kernel == "copy"]
    assert copies == [(outs["y_again"], outs["y"]), (outs["a"], a)]


def test_an_output_viewed_as_another_element_type_stays_a_copy():
    p = ProgramBuilder()
    a, b = p.input("a", (1, 2, 2)), p.input("b", (1, 2, 2))
    y = p.bmm(a, b)
    p.output("bits", p.view(y, (1, 2, 2), np.int32))
    program = fold_program(p.program())
    assert y.root is y and y.kind == "arena"
    assert [s.kernel for s in program.steps] == ["batch_matmul", "copy"]
