"""The q35c command line: outputs, dumps, determinism, and one-line errors with exit code 2."""

import numpy as np
from conftest import EXAMPLES, q35c

MLP = EXAMPLES / "mlp.mlir"


def assert_user_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("q35c: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_compile_to_stdout_prints_quantized_generic_ir():
    out = q35c(MLP, "--target", "mlir").stdout
    assert out.count('"quant3p5.matmul"') == 2
    assert "linalg.matmul" not in out
    assert '!quant3p5.packed<[128 : i64, 64 : i64], 32 : i64, "q3p5">' in out


def test_compile_writes_ir_and_weights_that_run_like_the_source(tmp_path):
    q35c(MLP, "--target", "mlir", "-o", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mlp.mlir", "mlp.q35w"]
    q35c("run", MLP, "-o", tmp_path / "a", "--seed", "3")
    q35c("run", tmp_path / "out" / "mlp.mlir", "--passes", "", "-o", tmp_path / "b",
         "--input", f"x={tmp_path / 'a' / 'x.npy'}")
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "probs.npy"),
                                  np.load(tmp_path / "b" / "probs.npy"))


def test_dump_ir_writes_one_file_per_stage_with_weights_out_of_line(tmp_path):
    q35c(MLP, "--dump-ir", tmp_path / "d", "--passes", "default,int8-activations")
    names = sorted(p.name for p in (tmp_path / "d").iterdir() if p.name != ".q35c-dump")
    assert names == ["00-input.mlir", "01-quantize-weights.mlir", "02-canonicalize.mlir",
                     "03-cse.mlir", "04-int8-activations.mlir", "05-verify-overflow.mlir",
                     "06-verify-quant-error.mlir", "weights.q35w"]
    first = (tmp_path / "d" / "01-quantize-weights.mlir").read_text()
    assert first.startswith("// q35c stage 01: quantize-weights{")
    assert "group_size=32" in first.splitlines()[0]
    assert all(p.stat().st_size < 20_000 for p in (tmp_path / "d").glob("*.mlir"))
    assert '"quant3p5.matmul_int8"' in (tmp_path / "d" / "04-int8-activations.mlir").read_text()


def test_outputs_and_dumps_are_byte_identical_across_runs(tmp_path):
    for run in ("a", "b"):
        q35c(MLP, "-o", tmp_path / run / "out", "--dump-ir", tmp_path / run / "dumps")
    root = tmp_path / "a"
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert len(files) == 10  # + 05-verify-overflow, 06-verify-quant-error, dumps/.q35c-dump
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_print_ir_after_all_goes_to_stderr():
    result = q35c(MLP, "--passes", "quantize-weights", "--print-ir-after-all")
    assert "// -----// IR after quantize-weights{" in result.stderr
    assert "IR after" not in result.stdout


def test_unknown_target_and_pass_are_one_line_errors():
    assert_user_error(q35c(MLP, "--target", "tpu", check=False), "unknown target 'tpu'")
    assert_user_error(q35c(MLP, "--passes", "no-such-pass", check=False),
                      "unknown pass 'no-such-pass'")
    assert_user_error(q35c(MLP, "--passes", "quantize-weights{bogus=1}", check=False),
                      "quantize-weights")


def test_syntax_error_names_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.mlir"
    bad.write_text("func.func @f() {\n  %0 = arith.constant 1 : i32\n  func.return %0 :\n}\n")
    result = q35c(bad, check=False)
    assert_user_error(result, f"{bad}:4:1:")


def test_invalid_ir_names_the_op(tmp_path):
    bad = tmp_path / "bad.mlir"
    bad.write_text(
        'func.func @f(%x: tensor<4x48xf32>, '
        '%p: !quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5">) {\n'
        '  %y = quant3p5.matmul %x, %p : tensor<4x48xf32>, '
        '!quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5"> -> tensor<4x32xf32>\n'
        "  func.return\n}\n")
    assert_user_error(q35c(bad, check=False), str(bad), "quant3p5.matmul: activation reduction")


def test_fortran_syntax_errors_and_missing_files(tmp_path):
    kernel = tmp_path / "kernel.f90"
    kernel.write_text("end\n")
    result = q35c(kernel, check=False)  # Fortran errors add the source line and a caret
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"q35c: error: {kernel}:1:1: syntax error")
    assert result.stderr.splitlines()[1:] == ["end", "^"]
    assert_user_error(q35c(tmp_path / "nope.mlir", check=False), "no such file")
    assert_user_error(q35c(tmp_path / "model.txt", check=False), "no such file")


def test_failing_pass_writes_nothing_to_output(tmp_path):
    result = q35c(MLP, "--passes", 'quantize-weights{layout="bogus"}', "-o", tmp_path / "o",
                  check=False)
    assert_user_error(result, "option 'layout' must be one of q3p5, pair43")
    assert not (tmp_path / "o").exists()


def test_run_generates_missing_inputs_from_seed_and_saves_them(tmp_path):
    result = q35c("run", MLP, "--seed", "7", "-o", tmp_path / "r")
    assert "probs: float32[4, 32]" in result.stdout
    x = np.load(tmp_path / "r" / "x.npy")
    probs = np.load(tmp_path / "r" / "probs.npy")
    assert x.shape == (4, 128) and probs.shape == (4, 32)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    again = q35c("run", MLP, "--seed", "7", "-o", tmp_path / "r2")
    assert again.stdout.replace("r2", "r") == result.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "r2" / "probs.npy"), probs)


def test_run_rejects_bad_inputs(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 2), np.float32))
    assert_user_error(q35c("run", MLP, "--input", f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "o",
                           check=False), "input 'x' has shape (2, 2), expected (4, 128)")
    assert_user_error(q35c("run", MLP, "--input", f"y={tmp_path / 'x.npy'}", "-o", tmp_path / "o",
                           check=False), "unknown input(s) y")
    assert not (tmp_path / "o").exists()


def test_passes_lists_builtin_and_xdsl_passes():
    out = q35c("passes").stdout
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "Quantize float matmul weights" in lines["quantize-weights"]
    assert "int8-activations" in lines and "externalize-constants" in lines
    assert "canonicalize" in lines


def test_irdl_export_lists_q35c_dialects():
    out = q35c("irdl").stdout
    assert "irdl.dialect @quant3p5" in out and "irdl.dialect @q35nn" in out
    assert "irdl.type @packed" in out


def test_run_keeps_output_files_inside_the_output_directory(tmp_path):
    """Value names from models may contain '/' or '..' (torch exporters write '/a/b')."""
    from q35c.compiler.driver import output_file_stem

    assert output_file_stem("../escaped") == "_.._escaped"
    assert output_file_stem("/layers.0/Add_output_0") == "_layers.0_Add_output_0"
    assert output_file_stem("logits") == "logits"


def test_run_binds_dynamic_input_dimensions_from_the_given_arrays(tmp_path):
    """`q35c run` on an ONNX graph with dynamic dims (exporters' batch and sequence axes)
    takes their values from the arrays given with --input; --shape still wins, and an
    array that does not fit the declared shape is a one-line error."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 3])],
        [onnx.numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")])
    model = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    q35c("run", model, "--input", f"x={tmp_path / 'x.npy'}", "--passes", "", "-o",
         tmp_path / "o")
    np.testing.assert_allclose(np.load(tmp_path / "o" / "y.npy"),
                               x @ np.arange(12, dtype=np.float32).reshape(4, 3), rtol=1e-6)
    np.save(tmp_path / "bad.npy", np.zeros((2, 5, 7), np.float32))
    assert_user_error(q35c("run", model, "--input", f"x={tmp_path / 'bad.npy'}", "-o",
                           tmp_path / "o2", check=False),
                      "--input x has shape [2, 5, 7], which does not fit the declared shape")
    assert_user_error(q35c("run", model, "--input", f"x={tmp_path / 'x.npy'}", "--shape",
                           "x=1,5,4", "-o", tmp_path / "o3", check=False),
                      "input 'x' has shape (2, 5, 4), expected (1, 5, 4)")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
