"""Abuse cases for resource limits, user errors and plugin containment (docs/security.md).

Every input is generated here (onnx.helper for ONNX, strings for Fortran); each case runs
the real `q35c` in a sandbox under the harness's memory and time limits.
"""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.driver import make_context
from q35c.compiler.frontends import FrontendOptions
from q35c.compiler.frontends.onnx import load_onnx
from q35c.compiler.options import OptionError
from q35c.passes.quantize_weights import QuantizeWeightsPass
from q35c.passes.verify_overflow import VerifyOverflowPass
from q35c.passes.verify_quant_error import VerifyQuantErrorPass
from q35c.targets.groq import MAX_CHIPS, GroqTarget
from q35c.targets.groq.plan import PlanOptions

from .harness import check_ok, check_refused, run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


# -- plugins -------------------------------------------------------------------------------

PLUGIN_PASS = """\
import sys

from xdsl.passes import ModulePass
from xdsl.universe import Universe


class Escape(BaseException):
    pass


class Misbehave(ModulePass):
    name = "misbehave"

    def apply(self, ctx, op):
        {body}


UNIVERSE = Universe(all_passes={{"misbehave": lambda: Misbehave}})
"""


def install_plugin(site: Path, source: str, name: str = "evil_plugin") -> dict[str, str]:
    """A plugin module `name` with an `xdsl.universe` entry point `name:UNIVERSE`, installed
    as a bare .dist-info in `site`; returns the environment that makes q35c see it."""
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text(source)
    info = site / f"{name}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[xdsl.universe]\n{name} = {name}:UNIVERSE\n")
    return {"PYTHONPATH": str(site)}


def _mlp(box) -> Path:
    for name in ("mlp.mlir", "mlp.q35w"):
        (box.input_dir / name).write_bytes((EXAMPLES / name).read_bytes())
    return box.input_dir / "mlp.mlir"


@pytest.mark.parametrize("body, why", [
    ("raise Escape('out')", "Escape: out"),
    ("sys.exit(0)", "sys.exit(0)"),
    pytest.param("sys.exit('bye')", "sys.exit('bye')", marks=pytest.mark.slow),
    pytest.param("raise GeneratorExit()", "GeneratorExit", marks=pytest.mark.slow),
    pytest.param("raise RecursionError('deep')", "RecursionError: deep", marks=pytest.mark.slow),
])
def test_plugin_pass_cannot_escape_error_handling(box, tmp_path, body, why):
    env = install_plugin(tmp_path / "site", PLUGIN_PASS.format(body=body))
    line = check_refused(box, [_mlp(box), "--passes", "misbehave", "-o", box.out], env=env,
                         names="pass 'misbehave' (plugin 'evil_plugin') failed")
    assert why in line


def test_plugin_that_exits_on_import_is_skipped_and_named(box, tmp_path):
    env = install_plugin(tmp_path / "site", "import sys\nsys.exit(3)\n")
    check_ok(box, [_mlp(box), "-o", box.out], env=env)  # the rest of q35c still works
    line = check_refused(box, [_mlp(box), "--passes", "misbehave", "-o", box.out], env=env,
                         names="plugin 'evil_plugin' failed to load (SystemExit")
    assert "unknown pass 'misbehave'" in line


def test_plugin_pass_class_that_exits_on_load(box, tmp_path):
    source = PLUGIN_PASS.format(body="pass").replace(
        'lambda: Misbehave', 'lambda: sys.exit(0)')
    env = install_plugin(tmp_path / "site", source)
    check_refused(box, [_mlp(box), "--passes", "misbehave", "-o", box.out], env=env,
                  names="pass 'misbehave' (plugin 'evil_plugin') failed to load: SystemExit")


def test_plugin_dialect_that_exits_on_load(box, tmp_path):
    source = ("import sys\nfrom xdsl.universe import Universe\n"
              "UNIVERSE = Universe(all_dialects={'evil': lambda: sys.exit(0)})\n")
    env = install_plugin(tmp_path / "site", source)
    model = box.input_dir / "evil.mlir"
    model.write_text('"builtin.module"() ({\n  "evil.op"() : () -> ()\n}) : () -> ()\n')
    check_refused(box, [model, "-o", box.out], env=env,
                  names="dialect 'evil' (plugin 'evil_plugin') failed to load: SystemExit")


# -- pass and target options ---------------------------------------------------------------

INTS = st.integers(min_value=-(1 << 70), max_value=1 << 70)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)


def _option_outcome(make) -> str | None:
    """None if `make()` accepts the value, else the OptionError's message."""
    try:
        make()
    except OptionError as err:
        return str(err)
    return None


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(INTS, st.sampled_from([0, 15, 16, 32, 48, 65520, 65536])))
def test_quantize_weights_group_size_range(value):
    message = _option_outcome(lambda: QuantizeWeightsPass(group_size=value))
    valid = 16 <= value <= 65520 and value % 16 == 0
    assert (message is None) == valid
    if not valid:
        assert message == ("--passes quantize-weights: option 'group-size' must be a multiple "
                           f"of 16 in [16, 65520], got {value}")


@settings(max_examples=40, deadline=None)
@given(value=INTS)
def test_quantize_weights_min_elements_range(value):
    message = _option_outcome(lambda: QuantizeWeightsPass(min_elements=value))
    assert (message is None) == (value >= 0)
    assert message is None or "option 'min-elements' must be an integer in [0, inf]" in message


@settings(max_examples=60, deadline=None)
@given(option=st.sampled_from(["arg_range", "input_range"]), value=FLOATS)
def test_verify_quant_error_ranges(option, value):
    message = _option_outcome(lambda: VerifyQuantErrorPass(**{option: value}))
    assert (message is None) == (math.isfinite(value) and value >= 0)
    if message is not None:
        assert f"option '{option.replace('_', '-')}' must be a finite number in [0, inf]" \
            in message


@settings(max_examples=40, deadline=None)
@given(lo=INTS, hi=INTS)
def test_verify_overflow_arg_ranges(lo, hi):
    try:
        VerifyOverflowPass(arg_ranges=f"x={lo}:{hi}")
        accepted = True
    except Q35cError as err:
        accepted = False
        assert "option 'arg-ranges' must be NAME=LO:HI,... with integers LO <= HI" in str(err)
    assert accepted == (lo <= hi)


@settings(max_examples=60, deadline=None)
@given(value=INTS)
def test_groq_target_chips_range(value):
    message = _option_outcome(lambda: GroqTarget(chips=value))
    assert (message is None) == (0 <= value <= MAX_CHIPS)
    if message is not None:
        assert message == (f"--target groq: option 'chips' must be an integer in "
                           f"[0, {MAX_CHIPS}], got {value}")


@settings(max_examples=60, deadline=None)
@given(option=st.sampled_from(["chips", "table_bytes", "granule"]), value=INTS)
def test_groq_plan_options_ranges(option, value):
    message = _option_outcome(lambda: PlanOptions(**{option: value}))
    hi = {"chips": math.inf, "table_bytes": 8, "granule": 1024}[option]
    assert (message is None) == (1 <= value <= hi)
    if message is not None:
        assert f"option '{option.replace('_', '-')}' must be an integer in [1, " in message


@pytest.mark.parametrize("args, text", [
    (["--target", "groq{chips=-3}"], "option 'chips' must be an integer in [0, 16], got -3"),
    (["--passes", "quantize-weights{group-size=7}"],
     "option 'group-size' must be a multiple of 16 in [16, 65520], got 7"),
    (["--passes", 'quantize-weights{layout="q9"}'], "option 'layout' must be one of"),
    (["--passes", "default,verify-quant-error{input-range=-2.0}"],
     "option 'input-range' must be a finite number in [0, inf], got -2.0"),
    (["--passes", 'verify-overflow{arg-ranges="x=5:1"}'], "option 'arg-ranges' must be"),
    (["--keep-float", "(unclosed"], "option 'keep-float' must be a valid regular expression"),
])
def test_bad_options_are_refused_up_front(box, args, text):
    check_refused(box, [_mlp(box), *args, "-o", box.out], names=text)


# -- ONNX: tensors the frontend materializes -----------------------------------------------

def _onnx_model(nodes, initializers, inputs=(("x", [1]),), output="y", opset=17):
    graph = helper.make_graph(
        nodes, "abuse", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _i64(*values):
    return np.array(values, np.int64)


def _f32(*values):
    return np.array(values, np.float32)


def _blowup(op: str, elements: int) -> onnx.ModelProto:
    """A model of a few hundred bytes whose node `op` folds to about `elements` floats,
    then adds the run-time input (so the folded tensor is used)."""
    side = int(math.isqrt(elements))
    ones = numpy_helper.from_array(_f32(1.0))
    nodes, inits = {
        "ConstantOfShape": ([helper.make_node("ConstantOfShape", ["s"], ["c"], value=ones)],
                            {"s": _i64(elements)}),
        "Expand": ([helper.make_node("Expand", ["one", "s"], ["c"])],
                   {"one": _f32(1.0), "s": _i64(side, side)}),
        "Tile": ([helper.make_node("Tile", ["one", "r"], ["c"])],
                 {"one": _f32(1.0, 2.0), "r": _i64(elements // 2)}),
        "Range": ([helper.make_node("Range", ["a", "b", "d"], ["c"])],
                  {"a": np.float32(0), "b": np.float32(elements), "d": np.float32(1)}),
        "MatMul": ([helper.make_node("MatMul", ["col", "row"], ["c"])],
                   {"col": np.ones((side, 1), np.float32), "row": np.ones((1, side), np.float32)}),
        "Mul": ([helper.make_node("Mul", ["col", "row"], ["c"])],
                {"col": np.ones((side, 1), np.float32), "row": np.ones((1, side), np.float32)}),
        "Where": ([helper.make_node("Where", ["m", "row", "one"], ["c"])],
                  {"m": np.ones((side, 1), bool), "row": np.ones((1, side), np.float32),
                   "one": _f32(1.0)}),
    }[op]
    return _onnx_model([*nodes, helper.make_node("Add", ["x", "c"], ["y"])], inits)


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand", "Tile", "Range", "MatMul", "Mul",
                                "Where"])
def test_folding_is_checked_before_allocating(tmp_path, op):
    """Every blow-up is refused by the node's inferred shape, before numpy allocates."""
    path = tmp_path / f"{op}.onnx"
    onnx.save(_blowup(op, 1 << 24), path)  # 64 MiB of float32 against a 1 MiB limit
    tracemalloc.start()
    try:
        with pytest.raises(Q35cError) as err:
            load_onnx(path, make_context(), FrontendOptions(max_tensor_bytes=1 << 20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{op} allocated {peak} bytes before refusing"
    message = str(err.value)
    assert message.startswith(f"{path}: node '{op}' ({op}): folding would create output 'c'")
    assert "over --max-tensor-bytes 1048576" in message


def test_300_byte_model_cannot_allocate_gigabytes(box):
    """The issue's case: a ConstantOfShape of 1.2 GB from a ~130-byte file."""
    model = box.input_dir / "cos.onnx"
    onnx.save(_blowup("ConstantOfShape", 300_000_000), model)
    assert model.stat().st_size < 300
    line = check_refused(box, [model, "-o", box.out])
    assert "folding would create output 'c' of shape [300000000] (1200000000 bytes), over " \
           "--max-tensor-bytes 1073741824" in line


def test_terabyte_constant_of_shape_is_refused_within_memory_limit(box):
    model = box.input_dir / "huge.onnx"
    onnx.save(_blowup("ConstantOfShape", 1 << 40), model)
    check_refused(box, [model, "-o", box.out], names="huge.onnx: node 'ConstantOfShape'")


def test_max_tensor_bytes_flag_raises_and_lowers_the_limit(box):
    model = box.input_dir / "small.onnx"
    onnx.save(_blowup("ConstantOfShape", 4096), model)  # 16 KiB
    check_refused(box, [model, "--max-tensor-bytes", "8K", "-o", box.out],
                  names="over --max-tensor-bytes 8192")
    check_ok(box, [model, "--max-tensor-bytes", "16K", "-o", box.out])
    check_refused(box, [model, "--max-tensor-bytes", "lots", "-o", box.out / "x"],
                  names="--max-tensor-bytes expects a positive size")


def test_huge_input_shape_is_refused_up_front(box):
    model = box.input_dir / "relu.onnx"
    graph = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "relu",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["a", "b"])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    line = check_refused(box, ["run", model, "--shape", "X=100000,100000", "-o", box.out],
                         names="relu.onnx: input 'X' of shape [100000, 100000] has "
                               "40000000000 bytes, over --max-tensor-bytes")
    assert "raise it" in line


def test_run_time_value_with_huge_static_shape_is_refused(tmp_path):
    """Expand of a run-time input to a huge known shape allocates nothing at import, but
    every later stage would hold the value: the static shape is checked, naming the node."""
    path = tmp_path / "expand.onnx"
    onnx.save(_onnx_model([helper.make_node("Expand", ["x", "s"], ["y"], name="big")],
                          {"s": _i64(1 << 20, 1 << 20)}), path)
    with pytest.raises(Q35cError, match=r"expand.onnx: node 'big' \(Expand\): result 0 of "
                                        r"\S+ of shape \[1048576, 1048576\]"):
        load_onnx(path, make_context(), FrontendOptions())


# -- Fortran: deep inputs and integer overflow ---------------------------------------------

def fortran_refused(box, source: str, *args, where: str, text: str) -> str:
    """A Fortran refusal: rc 2, `q35c: error: FILE:LINE:COL: text` first (the source line
    and a caret follow, as gfortran prints them), no traceback, nothing written."""
    path = box.input_dir / "kernel.f90"
    path.write_text(source)
    result = run([path, *args, "-o", box.out], box.root)
    first = result.stderr.splitlines()[0] if result.stderr else ""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert first.startswith(f"q35c: error: {path}:{where}: {text}"), result.stderr[:500]
    assert not box.out.exists()
    return first


def _sub(body: str, decl: str = "real :: a, x") -> str:
    return f"subroutine s(a, x)\n  {decl}\n{body}\nend subroutine\n"


def test_fortran_400_term_sum_and_500_parentheses_compile(box):
    for name, expr in (("sum", " + ".join(["a"] * 400)), ("paren", "(" * 500 + "a" + ")" * 500)):
        path = box.input_dir / f"{name}.f90"
        path.write_text(_sub(f"  x = {expr}"))
        check_ok(box, [path, "--passes", "", "-o", box.out / name])


def _nested_do(n: int) -> str:
    return ("subroutine s(x)\n  real :: x\n  integer :: " + ", ".join(f"i{k}" for k in range(n))
            + "\n" + "".join(f"do i{k} = 1, 1\n" for k in range(n)) + "x = x + 1.0\n"
            + "end do\n" * n + "end subroutine\n")


def test_fortran_100_nested_do_loops_compile(box):
    path = box.input_dir / "deep.f90"
    path.write_text(_nested_do(100))
    check_ok(box, [path, "--passes", "", "-o", box.out])


def test_fortran_absurd_nesting_is_a_located_error(box):
    fortran_refused(box, _sub("  x = " + "(" * 6000 + "a" + ")" * 6000), where="3:5003",
                    text="nesting deeper than 5000 levels")
    fortran_refused(box, _nested_do(200), where="104:1",
                    text="constructs (DO, IF, SELECT CASE) nested deeper than 100 levels")


@pytest.mark.parametrize("decl, body, where, text", [
    ("integer :: x", "x = 99999999999999999999", "3:7",
     "integer literal 99999999999999999999 is too big for its kind 4"),
    ("integer :: x", "x = -2147483648", "3:8", "integer literal 2147483648 is too big"),
    ("integer(8) :: x", "x = 9223372036854775808_8", "3:7",
     "integer literal 9223372036854775808 is too big for its kind 8"),
    ("integer, parameter :: p = huge(0) + 1\n  integer :: x", "x = p", "2:37",
     "arithmetic overflow in a constant expression: 2147483648 does not fit integer(4)"),
    ("integer, parameter :: p = 65536 * 65536\n  integer :: x", "x = p", "2:35",
     "arithmetic overflow in a constant expression: 4294967296"),
    ("integer :: x", "x = 2000000000 + 2000000000", "3:18", "arithmetic overflow"),
    ("integer :: x", "x = -huge(x) - 2", "3:16", "arithmetic overflow"),
])
def test_fortran_integer_overflow_is_an_error(box, decl, body, where, text):
    fortran_refused(box, f"subroutine s(x)\n  {decl}\n  {body}\nend subroutine\n",
                    where=where, text=text)


@pytest.mark.parametrize("decl, body, value", [
    ("integer :: x", "x = 2147483647", 2147483647),
    pytest.param("integer :: x", "x = -2147483647 - 1", -2147483648, marks=pytest.mark.slow),
    pytest.param("integer(8) :: x", "x = 9223372036854775807_8", 9223372036854775807,
                 marks=pytest.mark.slow),
    ("integer(8) :: x", "x = 2000000000_8 + 2000000000_8", 4000000000),
])
def test_fortran_integer_extremes_that_fit_are_exact(box, decl, body, value):
    path = box.input_dir / "ok.f90"
    path.write_text(f"subroutine s(x)\n  {decl}\n  {body}\nend subroutine\n")
    check_ok(box, ["run", path, "--input", "x=0", "-o", box.out])
    assert int(np.load(box.out / "x.npy")) == value


# -- ONNX: long and deep graphs ------------------------------------------------------------

def _chain(n: int) -> onnx.ModelProto:
    nodes = [helper.make_node("Neg" if i % 2 else "Relu", [f"v{i - 1}" if i else "x"], [f"v{i}"])
             for i in range(n)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info(f"v{n - 1}", TensorProto.FLOAT, [4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_chain_of_2000_nodes_compiles(box):
    model = box.input_dir / "chain.onnx"
    onnx.save(_chain(2000), model)
    check_ok(box, [model, "-o", box.out])


@pytest.mark.slow
def test_onnx_chain_of_10000_nodes_compiles(box):
    model = box.input_dir / "chain.onnx"
    onnx.save(_chain(10000), model)
    check_ok(box, [model, "-o", box.out])


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    key, size, out = (number << 3) | 2, len(payload), bytearray()
    for value in (key, size):
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                break
    return bytes(out) + payload


def _nested_if_model(depth: int) -> bytes:
    """A model whose If node nests `depth` then-branches, encoded by hand: protobuf's own
    encoder refuses such depth, a hostile file need not."""
    graph = _field(1, helper.make_node("Identity", ["x"], ["y"]).SerializeToString())
    for _ in range(depth):
        attribute = _field(1, b"then_branch") + b"\xa0\x01\x05" + _field(6, graph)  # type=GRAPH
        node = _field(1, b"c") + _field(2, b"y") + _field(4, b"If") + _field(5, attribute)
        graph = _field(1, node)
    top = helper.make_graph([], "top", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
                                        helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    return _replace_graph(helper.make_model(top, opset_imports=[helper.make_opsetid("", 17)]),
                          graph)


def _replace_graph(model: onnx.ModelProto, nodes: bytes) -> bytes:
    """`model` serialized with the nodes of `nodes` (a GraphProto's node fields) added."""
    graph = model.graph.SerializeToString() + nodes
    model.ClearField("graph")
    return model.SerializeToString() + _field(7, graph)


@pytest.mark.parametrize("depth", [20, pytest.param(3000, marks=pytest.mark.slow)])
def test_onnx_deeply_nested_subgraphs_are_refused_cleanly(box, depth):
    """20 levels decode and the importer refuses the If node (it never recurses into
    subgraphs); protobuf stops decoding past about 33 levels, which is refused as invalid."""
    model = box.input_dir / "nested.onnx"
    model.write_bytes(_nested_if_model(depth))
    check_refused(box, [model, "-o", box.out])


# -- verify-quant-error memory -------------------------------------------------------------

def test_verify_quant_error_memory_does_not_grow_with_activation_size(box):
    """The issue's case (a Relu at 8192x8192 took 3.2 GB): intervals of a uniform input
    are broadcast views and the analysis stops after the last quantized matmul, so it fits
    the harness's 3 GiB address space with room to spare."""
    model = box.input_dir / "relu.onnx"
    graph = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "relu",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["a", "b"])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    check_ok(box, [model, "--shape", "X=8192,8192", "-o", box.out], memory=2 << 30)
