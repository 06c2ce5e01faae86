"""The target interface through the CLI: `q35c targets`, a target's own pipeline in the IR
dumps, the up-front accepted-ops check, --shape-only support and `q35c report` dispatch.

Plugin targets (examples/plugin's `histogram`) are tested in test_plugin.py.
"""

from __future__ import annotations

import re

import pytest
from conftest import EXAMPLES, MODELS_DIR, q35c

MLP = EXAMPLES / "mlp.mlir"
LLAMA = MODELS_DIR / "llama_tiny.onnx"


def assert_one_line_error(result, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("q35c: error: ") and message in result.stderr, result.stderr


def test_targets_lists_builtin_and_planned_targets():
    result = q35c("targets")
    rows = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert list(rows) == ["c", "cerebras", "cuda", "groq", "interp", "mlir"]
    assert "TSP program" in rows["groq"] and "[--shape-only]" in rows["groq"]
    assert "[--shape-only]" in rows["mlir"] and "[--shape-only]" not in rows["c"]
    assert "CSL project" in rows["cerebras"] and "planned" not in rows["cuda"]
    assert "plugin" not in result.stdout and result.stderr == ""


def test_target_pipeline_passes_are_dumped_and_printed(tmp_path):
    """groq's dequantize-gathers, raise-fortran-tensors, unfuse-ops, int8-activations and
    verify-overflow run in the driver, after the user's pipeline: they are stages of
    --dump-ir and --print-ir-after-all like any pass."""
    result = q35c(MLP, "--target", "groq", "-o", tmp_path / "out", "--dump-ir",
                  tmp_path / "dumps", "--print-ir-after-all")
    dumps = sorted(p.name for p in (tmp_path / "dumps").glob("*.mlir"))
    assert dumps == ["00-input.mlir", "01-quantize-weights.mlir", "02-canonicalize.mlir",
                     "03-cse.mlir", "04-verify-overflow.mlir", "05-verify-quant-error.mlir",
                     "06-dequantize-gathers.mlir", "07-raise-fortran-tensors.mlir",
                     "08-unfuse-ops.mlir", "09-int8-activations.mlir",
                     "10-verify-overflow.mlir"]
    assert '"quant3p5.matmul"' in (tmp_path / "dumps" / "05-verify-quant-error.mlir").read_text()
    final = (tmp_path / "dumps" / "10-verify-overflow.mlir").read_text()
    assert '"quant3p5.matmul"' not in final and '"quant3p5.matmul_int8"' in final
    # what the target compiled is the last dump's IR (which names its weight file)
    assert final.replace(' {quant3p5.weights = "weights.q35w"}', "").endswith(
        (tmp_path / "out" / "model.mlir").read_text())
    headers = re.findall(r"^// -----// IR after ([\w-]+)", result.stderr, re.M)
    assert headers[-3:] == ["unfuse-ops", "int8-activations", "verify-overflow"]


def test_mlir_target_adds_no_stages(tmp_path):
    q35c(MLP, "--target", "mlir", "-o", tmp_path / "out", "--dump-ir", tmp_path / "dumps")
    assert sorted(p.name for p in (tmp_path / "dumps").glob("*.mlir"))[-1] == \
        "05-verify-quant-error.mlir"


def test_unsupported_ops_are_listed_in_one_line_with_their_sources(tmp_path):
    """Ops the C target has no kernels for: every kind, with its sources, in one error,
    before anything is written. (A Fortran kernel's loops used to be listed here: the C
    target compiles them now, targets/c/loops.py.)"""
    source = tmp_path / "atan.mlir"
    source.write_text("func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {\n"
                      "  %y = math.atan %x : tensor<4xf32>\n"
                      "  %z = math.atan %y : tensor<4xf32>\n"
                      "  func.return %z : tensor<4xf32>\n}\n")
    out = tmp_path / "out"
    result = q35c(source, "--target", "c", "-o", out, check=False)
    assert_one_line_error(result, "atan.mlir: target c does not support: math.atan x2 "
                                  "(op 0 of @main, op 1 of @main)")
    assert not out.exists()
    q35c(EXAMPLES / "fortran" / "softmax.f90", "--target", "c", "-o", out)
    assert "void softmax_rows(int32_t r, int32_t c, float *s);" in (out / "kernels.h").read_text()


def test_fused_ops_are_accepted_by_the_c_target(tmp_path):
    """What this error used to list (issue #12): the C target now lowers the fused ops."""
    q35c(LLAMA, "--shape", "input_ids=1,4", "--passes", "default,fuse-attention,fuse-swiglu",
         "--target", "c", "-o", tmp_path / "out")
    assert "q35_attention_f32(" in (tmp_path / "out" / "model.c").read_text()


def test_unsupported_op_in_a_fortran_kernel_names_its_line(tmp_path):
    """A Fortran kernel whose loops cannot be raised to groq's tensor ops: the error names
    the file, the routine's line and the reason."""
    result = q35c(EXAMPLES / "fortran" / "softmax.f90", "--target", "groq", "-o",
                  tmp_path / "out", check=False)
    assert_one_line_error(result, "target groq cannot raise 'softmax_rows' to tensor ops: ")
    assert re.search(r"softmax\.f90:\d+: .* array 'S' has a run-time shape", result.stderr), \
        result.stderr


@pytest.mark.parametrize("target", ["c", "interp"])
def test_shape_only_is_refused_by_targets_without_it(target, tmp_path):
    result = q35c(LLAMA, "--shape", "input_ids=1,4", "--shape-only", "--target", target,
                  "-o", tmp_path / "out", check=False)
    assert_one_line_error(result, "--shape-only is supported by --target cerebras and groq "
                                  f"and mlir, not '{target}'")
    assert not (tmp_path / "out").exists()


def test_report_on_a_directory_no_target_wrote(tmp_path):
    """`q35c report` picks the target by its output markers; with none, it names what
    each target with a report looks for."""
    (tmp_path / "out").mkdir()
    result = q35c("report", tmp_path / "out", check=False)
    assert_one_line_error(result, "no target output to report on (cerebras: project.json; "
                          "groq: program.json or plan.json)")


def test_bad_target_option_is_one_line(tmp_path):
    result = q35c(MLP, "--target", "groq{chips=two}", "-o", tmp_path / "out", check=False)
    assert_one_line_error(result, "--target groq: ")
