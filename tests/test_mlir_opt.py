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


def test_integer_rescale_contract_verifies_in_upstream_mlir_opt(tmp_path):
    """`matmul_int8` with its optional `rescale_rows` (int8-activations{int-rescale=N}):
    IRDL has no optional attributes, so the export leaves it out and mlir-opt accepts it."""
    mlir_opt = require_tool("mlir-opt-22")
    irdl = tmp_path / "q35c.irdl.mlir"
    irdl.write_text(q35c("irdl").stdout)
    q35c(EXAMPLES / "mlp.mlir", "--target", "mlir", "-o", tmp_path / "out", "--passes",
         "default,int8-activations{int-rescale=320}")
    out = tmp_path / "out" / "mlp.mlir"
    assert "rescale_rows = 320" in out.read_text()
    result = subprocess.run([mlir_opt, f"--irdl-file={irdl}", str(out), "-o", "/dev/null"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


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


def test_groq_program_mlir_verifies_in_upstream_mlir_opt(tmp_path):
    """The Groq target's program.mlir (groq dialect, here with C2C send/receive on 2 chips)
    is accepted by mlir-opt-22 with `q35c irdl`; dropping a required attribute is not."""
    mlir_opt = require_tool("mlir-opt-22")
    irdl = tmp_path / "q35c.irdl.mlir"
    irdl.write_text(q35c("irdl").stdout)
    assert "irdl.dialect @groq {" in irdl.read_text()
    for op in ("read", "write", "unpack", "install", "matmul_pass", "macro", "send", "receive"):
        assert f"irdl.operation @{op} {{" in irdl.read_text(), op
    q35c(EXAMPLES / "mlp.mlir", "--target", "groq{chips=2}", "-o", tmp_path / "out")
    program = tmp_path / "out" / "program.mlir"
    text = program.read_text()
    assert '"groq.send"' in text and '"groq.receive"' in text and '"groq.matmul_pass"' in text
    result = subprocess.run([mlir_opt, f"--irdl-file={irdl}", str(program), "-o", "/dev/null"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    bad = tmp_path / "bad.mlir"
    bad.write_text(text.replace('"groq.install"() {id', '"groq.install"() {ident', 1)
                   .replace(", chip = ", ", chap = ", 1))
    result = subprocess.run([mlir_opt, f"--irdl-file={irdl}", str(bad), "-o", "/dev/null"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "is expected but not provided" in result.stderr
