"""Every IR dump q35c writes is accepted by upstream mlir-opt-22 with q35c's IRDL export."""

import subprocess

from conftest import EXAMPLES, q35c, require_tool


def test_dumps_and_output_verify_in_upstream_mlir_opt(tmp_path):
    mlir_opt = require_tool("mlir-opt-22")
    irdl = tmp_path / "q35c.irdl.mlir"
    irdl.write_text(q35c("irdl").stdout)
    q35c(EXAMPLES / "mlp.mlir", "--target", "mlir", "-o", tmp_path / "out",
         "--dump-ir", tmp_path / "dumps", "--passes", "default,int8-activations")
    files = sorted((tmp_path / "dumps").glob("*.mlir")) + [tmp_path / "out" / "mlp.mlir"]
    assert len(files) == 8  # 00..06 dumps (the verify passes run last) + output
    for path in files:
        result = subprocess.run([mlir_opt, f"--irdl-file={irdl}", str(path), "-o", "/dev/null"],
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{path.name}: {result.stderr}"


def test_mlir_opt_rejects_ir_that_breaks_the_exported_constraints(tmp_path):
    """The export is not `irdl.any` everywhere: a packed weight where a tensor belongs fails."""
    mlir_opt = require_tool("mlir-opt-22")
    irdl = tmp_path / "q35c.irdl.mlir"
    irdl.write_text(q35c("irdl").stdout)
    bad = tmp_path / "bad.mlir"
    packed = '!quant3p5.packed<[64 : i64, 32 : i64], 64 : i64, "q3p5">'
    bad.write_text(
        '"builtin.module"() ({\n'
        f'  %p = "quant3p5.weight"() {{name = "w"}} : () -> {packed}\n'
        f'  %y = "quant3p5.dequantize"(%p) : ({packed}) -> {packed}\n'
        '}) : () -> ()\n')
    result = subprocess.run([mlir_opt, f"--irdl-file={irdl}", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "quant3p5.dequantize" in result.stderr
