"""The abuse harness itself: a refusal that holds today, and a success, both checked."""

from pathlib import Path

from .harness import check_ok, check_refused

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_garbage_onnx_is_refused_cleanly(box):
    model = box.input_dir / "garbage.onnx"
    model.write_bytes(b"\x08\x07not a protobuf at all" * 10)
    check_refused(box, [model, "-o", box.out])


def test_valid_mlir_compiles(box):
    for name in ("mlp.mlir", "mlp.q35w"):
        (box.input_dir / name).write_bytes((EXAMPLES / name).read_bytes())
    check_ok(box, [box.input_dir / "mlp.mlir", "-o", box.out])
    assert (box.out / "mlp.mlir").exists()
