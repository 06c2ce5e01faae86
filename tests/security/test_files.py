"""Abuse cases for files: what q35c reads (inputs and the files they name) and writes (-o,
--dump-ir), on hostile inputs and odd file systems. docs/security.md, "Files and outputs",
states the guarantees checked here."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from q35c.compiler import outputs
from q35c.compiler.cli import main
from q35c.compiler.diagnostics import Q35cError, quote_source_line
from q35c.compiler.outputs import OWNER_FILE, STAGE_TAG, remove_stale_staging, write_atomically

from .harness import BIN, check_ok, check_refused, run, staging_leftovers

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def copy_example(box, name: str = "mlp") -> Path:
    for suffix in (".mlir", ".q35w"):
        (box.input_dir / f"{name}{suffix}").write_bytes((EXAMPLES / f"mlp{suffix}").read_bytes())
    return box.input_dir / f"{name}.mlir"


def mlir_with_weights(box, location: str) -> Path:
    """The example MLP whose quant3p5.weights attribute says `location`."""
    text = (EXAMPLES / "mlp.mlir").read_text().replace('"mlp.q35w"', json.dumps(location))
    path = box.input_dir / "model.mlir"
    path.write_text(text)
    return path


def onnx_with_external(box, location: str) -> Path:
    """A one-MatMul model whose weight [4, 4] lies in external data at `location`."""
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4])
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value=location)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    path = box.input_dir / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


# -- inputs that are not regular files (item 5) ---------------------------------------------


@pytest.mark.parametrize("suffix", [".onnx", ".f90", ".mlir"])
def test_input_symlinked_to_dev_zero_is_refused(box, suffix):
    model = box.input_dir / f"zero{suffix}"
    model.symlink_to("/dev/zero")
    line = check_refused(box, [model, "-o", box.out], timeout=60)
    assert "character device" in line


@pytest.mark.parametrize("suffix", [".onnx", ".f90", ".mlir"])
def test_input_fifo_is_refused_without_hanging(box, suffix):
    model = box.input_dir / f"pipe{suffix}"
    os.mkfifo(model)
    line = check_refused(box, [model, "-o", box.out], timeout=60)
    assert "FIFO" in line


def test_input_folder_is_refused(box):
    model = box.input_dir / "dir.mlir"
    model.mkdir()
    check_refused(box, [model, "-o", box.out])


def test_input_over_the_size_limit_is_refused_and_the_flag_raises_it(box):
    model = copy_example(box)
    line = check_refused(box, [model, "-o", box.out, "--max-input-bytes", "1K"])
    assert "--max-input-bytes" in line and "1024 bytes" in line
    check_ok(box, [model, "-o", box.out, "--max-input-bytes", "64M"])


def test_max_input_bytes_rejects_a_bad_size(box):
    result = run([copy_example(box), "--max-input-bytes", "lots"], box.root)
    assert result.returncode == 2 and "--max-input-bytes" in result.stderr


def test_npy_input_fifo_is_refused(box):
    model = copy_example(box)
    pipe = box.input_dir / "x.npy"
    os.mkfifo(pipe)
    check_refused(box, ["run", model, "--input", f"x={pipe}", "-o", box.out], names="x.npy",
                  timeout=60)


def test_q35w_symlinked_to_dev_zero_is_refused(box):
    model = copy_example(box)
    (box.input_dir / "mlp.q35w").unlink()
    (box.input_dir / "mlp.q35w").symlink_to("/dev/zero")
    check_refused(box, [model, "-o", box.out], names="mlp.q35w", timeout=60)


@pytest.mark.parametrize("special", ["fifo", "dev-zero"])
def test_onnx_external_data_that_is_not_a_regular_file_is_refused(box, special):
    model = onnx_with_external(box, "w.bin")
    if special == "fifo":
        os.mkfifo(box.input_dir / "w.bin")
    else:
        (box.input_dir / "w.bin").symlink_to("/dev/zero")
    line = check_refused(box, [model, "-o", box.out], timeout=60)
    assert "w.bin" in line


# -- quant3p5.weights stays in the input's directory (item 1) -------------------------------


def _outside_store(box) -> Path:
    store = box.outside / "secret.q35w"
    store.write_bytes((EXAMPLES / "mlp.q35w").read_bytes())
    return store


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink"])
def test_mlir_weights_outside_the_input_directory_are_refused(box, how):
    store = _outside_store(box)
    if how == "symlink":
        (box.input_dir / "link.q35w").symlink_to(store)
    location = {"relative": "../outside/secret.q35w", "absolute": str(store),
                "symlink": "link.q35w"}[how]
    model = mlir_with_weights(box, location)
    line = check_refused(box, [model, "-o", box.out])
    assert "outside the input's directory" in line
    assert not box.out.exists()


def test_mlir_weights_in_a_subfolder_are_read(box):
    (box.input_dir / "w").mkdir()
    (box.input_dir / "w" / "mlp.q35w").write_bytes((EXAMPLES / "mlp.q35w").read_bytes())
    check_ok(box, [mlir_with_weights(box, "w/mlp.q35w"), "-o", box.out])
    assert (box.out / "model.q35w").exists()


# -- corrupt .q35w stores are blamed on the file (item 6) ------------------------------------


def _rewrite_store(box, edit) -> Path:
    """Copy the example with its JSON header changed by `edit(header) -> header` (blobs keep
    their offsets: the new header must fit the space the old one had)."""
    model = copy_example(box)
    data = bytearray((EXAMPLES / "mlp.q35w").read_bytes())
    _, length = struct.unpack("<IQ", data[4:16])
    text = json.dumps(edit(json.loads(data[16:16 + length])), separators=(",", ":")).encode()
    start = min(b["offset"] for e in json.loads(data[16:16 + length]).values()
                for b in e["blobs"].values())
    assert 16 + len(text) <= start
    data[4:16] = struct.pack("<IQ", 1, len(text))
    data[16:start] = text + b" " * (start - 16 - len(text))
    (box.input_dir / "mlp.q35w").write_bytes(bytes(data))
    return model


def _set(entry: str, **blob):
    def edit(header):
        header[entry]["blobs"]["data"].update(blob)
        return header
    return edit


CORRUPTIONS = {
    "shape-against-ir": _set("fc1.weight", shape=[64, 128]),
    "offset-past-end": _set("fc2.weight", offset=1 << 40),
    "offset-in-header": _set("fc2.weight", offset=0),
    "object-dtype": _set("fc1.bias", dtype="|O"),
    "negative-shape": _set("fc1.bias", shape=[-64]),
    "huge-shape": _set("fc1.bias", shape=[1 << 62, 1 << 62]),
    "unknown-kind": lambda h: {**h, "fc1.bias": {**h["fc1.bias"], "kind": "bogus"}},
    "missing-blob": lambda h: {**h, "fc1.bias": {"kind": "tensor", "blobs": {}}},
    "not-an-object": lambda h: [1, 2],
    "packed-kind-for-float": lambda h: {**h, "fc1.weight": {
        "kind": "q3p5", "blobs": {"bytes": {**h["fc1.weight"]["blobs"]["data"],
                                            "dtype": "|u1", "shape": [100]}}}},
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_store_is_refused_naming_it(box, case):
    model = _rewrite_store(box, CORRUPTIONS[case])
    line = check_refused(box, [model, "-o", box.out], names="mlp.q35w")
    assert "quantize-weights" not in line


def test_store_header_length_past_the_end_is_refused(box):
    model = copy_example(box)
    data = bytearray((EXAMPLES / "mlp.q35w").read_bytes())
    data[4:16] = struct.pack("<IQ", 1, 1 << 50)
    (box.input_dir / "mlp.q35w").write_bytes(bytes(data))
    check_refused(box, [model, "-o", box.out], names="mlp.q35w")


def test_truncated_store_is_refused(box):
    model = copy_example(box)
    (box.input_dir / "mlp.q35w").write_bytes((EXAMPLES / "mlp.q35w").read_bytes()[:20000])
    check_refused(box, [model, "-o", box.out], names="mlp.q35w")


# -- long lines and deep nesting (items 7, 8) ------------------------------------------------


def test_syntax_error_on_a_megabyte_line_quotes_a_bounded_excerpt(box):
    source = box.input_dir / "long.f90"
    source.write_text("subroutine f(x)\n  real :: x\n  x = " + "1 + " * 250_000
                      + " @ \nend subroutine\n")
    result = run([source, "-o", box.out], box.root)
    assert result.returncode == 2 and "long.f90:3:" in result.stderr
    assert len(result.stderr) < 1000, len(result.stderr)
    assert "..." in result.stderr and "@" in result.stderr


def test_mlir_error_quoting_a_megabyte_token_stays_short(box):
    model = box.input_dir / "long.mlir"
    model.write_text('"test.op"() {a = @' + "x" * 1_000_000 + '"} : () -> ()\n')
    result = run([model, "-o", box.out], box.root)
    assert result.returncode == 2 and "long.mlir" in result.stderr
    assert len(result.stderr) < 1000, len(result.stderr)


def test_quote_source_line_keeps_the_caret_on_the_column():
    line = "a" * 5000 + "@" + "b" * 5000
    text, col = quote_source_line(line, 5001, width=200)
    assert text[col - 1] == "@" and len(text) <= 206
    assert text.startswith("...") and text.endswith("...")
    assert quote_source_line("short", 3) == ("short", 3)


@pytest.mark.parametrize("kind", ["attributes", "regions"])
def test_deeply_nested_mlir_is_a_located_error(box, kind):
    depth = 5000
    model = box.input_dir / "deep.mlir"
    if kind == "attributes":
        model.write_text('"test.op"() {a = ' + "[" * depth + "1" + "]" * depth + "} : () -> ()\n")
    else:
        model.write_text('builtin.module {\n' + '"test.op"() ({' * depth
                         + "}) : () -> ()" * depth + "\n}\n")
    line = check_refused(box, [model, "-o", box.out], names="deep.mlir:")
    assert "nesting deeper than" in line


def test_nesting_check_ignores_brackets_in_strings_and_arrows(box):
    model = box.input_dir / "ok.mlir"
    model.write_text('"test.op"() {a = "' + "[" * 500 + '"} : () -> ()  // ' + "(" * 500 + "\n")
    result = run([model], box.root)
    assert result.returncode == 0, result.stderr


# -- --dump-ir never deletes what q35c did not write (item 2) --------------------------------


def test_dump_ir_refuses_a_folder_with_user_files(box):
    model = copy_example(box)
    dumps = box.root / "dumps"
    dumps.mkdir()
    (dumps / "01-mine.mlir").write_text("precious\n")
    check_refused(box, [model, "--dump-ir", dumps], names="dumps")
    assert (dumps / "01-mine.mlir").read_text() == "precious\n"


def test_dump_ir_replaces_its_own_stage_files(box):
    model = copy_example(box)
    dumps = box.root / "dumps"
    check_ok(box, [model, "--dump-ir", dumps, "--passes", "canonicalize"])
    assert (dumps / ".q35c-dump").exists() and (dumps / "01-canonicalize.mlir").exists()
    check_ok(box, [model, "--dump-ir", dumps, "--passes", "cse"])
    assert (dumps / "01-cse.mlir").exists() and not (dumps / "01-canonicalize.mlir").exists()


def test_dump_ir_naming_a_file_is_refused(box):
    model = copy_example(box)
    target = box.root / "dumps"
    target.write_text("a file\n")
    check_refused(box, [model, "--dump-ir", target], names="dumps")
    assert target.read_text() == "a file\n"


# -- -o on odd file systems (items 3, 4) -----------------------------------------------------


def test_output_naming_a_file_is_refused(box):
    model = copy_example(box)
    target = box.root / "file"  # not box.out: the harness lists box.out as a folder
    target.write_text("not a folder\n")
    line = check_refused(box, [model, "-o", target], names=str(target))
    assert "not a folder" in line
    assert target.read_text() == "not a folder\n"


def test_output_name_longer_than_255_bytes_is_refused(box):
    model = copy_example(box)
    out = box.root / ("o" * 300)
    check_refused(box, [model, "-o", out], names="o" * 300)


def test_output_in_proc_is_refused(box):
    check_refused(box, [copy_example(box), "-o", "/proc/q35c-out"], names="/proc/q35c-out")


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_unwritable_output_place_is_a_one_line_error(tmp_path, monkeypatch, code):
    """Tests run as root (chmod does not stop root), so the failure is injected."""
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path))
    monkeypatch.setattr(outputs.tempfile, "mkdtemp", refuse)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [str(EXAMPLES / "mlp.mlir"), "-o", str(out)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert f"-o {out}: cannot write in {tmp_path}: {os.strerror(code)}" in lines[0]
    assert "internal error" not in lines[0]


def test_existing_output_is_used_when_its_parent_is_read_only(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    real = outputs.tempfile.mkdtemp

    def mkdtemp(prefix, dir):
        if Path(dir) != out:
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real(prefix=prefix, dir=dir)
    monkeypatch.setattr(outputs.tempfile, "mkdtemp", mkdtemp)
    write_atomically(out, lambda tmp: (tmp / "a.txt").write_text("A"))
    assert (out / "a.txt").read_text() == "A" and not staging_leftovers(out)


def _cross_device(monkeypatch):
    """Make every rename between different folders fail as across a mount point."""
    for name in ("rename", "replace"):
        real = getattr(os, name)

        def moved(src, dst, *args, _real=real, **kwargs):
            if os.path.dirname(os.fspath(src)) != os.path.dirname(os.fspath(dst)):
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            return _real(src, dst, *args, **kwargs)
        monkeypatch.setattr(os, name, moved)


def test_output_that_is_a_mount_point_is_written(tmp_path, monkeypatch):
    out = tmp_path / "mnt"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    (out / "b").mkdir()
    _cross_device(monkeypatch)

    def write(tmp):
        (tmp / "a.txt").write_text("A")
        (tmp / "b").mkdir()
        (tmp / "b" / "c.txt").write_text("C")
    write_atomically(out, write)
    assert (out / "a.txt").read_text() == "A" and (out / "b" / "c.txt").read_text() == "C"
    assert (out / "keep.txt").read_text() == "user file"
    assert not staging_leftovers(out) and not any(STAGE_TAG in p.name for p in out.iterdir())


def test_a_new_output_appears_in_one_rename(tmp_path, monkeypatch):
    renames = []
    real = os.rename
    monkeypatch.setattr(os, "rename", lambda s, d: (renames.append((s, d)), real(s, d)))
    out = tmp_path / "new"
    write_atomically(out, lambda tmp: [(tmp / n).write_text(n) for n in ("a", "b")])
    assert [Path(d) for _, d in renames] == [out]
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]


def test_failed_write_leaves_nothing(tmp_path):
    def write(tmp):
        (tmp / "half.txt").write_text("partial")
        raise Q35cError("target failed")
    with pytest.raises(Q35cError):
        write_atomically(tmp_path / "out", write)
    assert list(tmp_path.iterdir()) == []


def _popen(args, cwd, delay: float) -> subprocess.Popen:
    env = {**os.environ, outputs.TEST_DELAY_ENV: str(delay), "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen([str(BIN / "q35c"), *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_staging(place: Path, proc: subprocess.Popen, name: str) -> Path:
    """The staging folder in `place` once `name` was written into it (the write is done
    and the process sleeps in the test delay)."""
    for _ in range(1200):
        found = [p for p in place.iterdir() if STAGE_TAG in p.name and (p / name).exists()]
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("q35c never staged its output")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_during_write_removes_the_staging_folder(box, sig):
    model = copy_example(box)
    proc = _popen([model, "-o", box.out], box.root, delay=60)
    _wait_for_staging(box.root, proc, "mlp.mlir")
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert not box.out.exists() and not staging_leftovers(box.out)


def test_staging_of_a_killed_run_is_removed_by_the_next_run(box):
    model = copy_example(box)
    box.out.mkdir()
    proc = _popen([model, "-o", box.out], box.root, delay=60)
    staging = _wait_for_staging(box.out, proc, "mlp.mlir")
    proc.kill()
    proc.wait()
    assert (staging / OWNER_FILE).exists()
    check_ok(box, [model, "-o", box.out])
    assert not staging.exists() and (box.out / "mlp.mlir").exists()


def test_stale_staging_cleanup_spares_live_owners_and_foreign_folders(tmp_path):
    def folder(name, owner):
        path = tmp_path / name
        path.mkdir()
        if owner is not None:
            (path / OWNER_FILE).write_text(json.dumps(owner))
        return path

    dead = subprocess.Popen(["true"])
    dead.wait()
    host = os.uname().nodename
    stale = folder(f".out{STAGE_TAG}dead", {"host": host, "pid": dead.pid})
    live = folder(f".out{STAGE_TAG}live", {"host": host, "pid": os.getppid()})
    other_host = folder(f".out{STAGE_TAG}remote", {"host": "elsewhere", "pid": dead.pid})
    unmarked = folder(f".out{STAGE_TAG}user", None)
    user = folder(".cache", {"host": host, "pid": dead.pid})
    remove_stale_staging(tmp_path)
    assert not stale.exists()
    assert live.exists() and other_host.exists() and unmarked.exists() and user.exists()


def test_concurrent_compiles_publish_one_after_the_other(box):
    """The second writer waits for the lock on -o: while it is held, nothing appears."""
    model = copy_example(box)
    box.out.mkdir()
    fd = os.open(box.out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        proc = _popen([model, "-o", box.out], box.root, delay=0)
        _wait_for_staging(box.out, proc, "mlp.q35w")
        time.sleep(1.0)
        assert proc.poll() is None and not (box.out / "mlp.mlir").exists()
    finally:
        os.close(fd)  # releases the lock
    proc.communicate(timeout=120)
    assert proc.returncode == 0 and (box.out / "mlp.mlir").exists()


def test_two_concurrent_compiles_leave_one_complete_output(box):
    """Two compiles with different pipelines into one -o: every file of the result comes
    from the same run."""
    model = copy_example(box)
    variants = {"default": box.root / "ref1", "canonicalize": box.root / "ref2"}
    for passes, ref in variants.items():
        check_ok(box, [model, "--passes", passes, "-o", ref])
    procs = [_popen([model, "--passes", p, "-o", box.out], box.root, delay=0.5)
             for p in variants]
    for proc in procs:
        proc.communicate(timeout=120)
        assert proc.returncode == 0
    result = {p.name: p.read_bytes() for p in box.out.iterdir()}
    refs = [{p.name: p.read_bytes() for p in ref.iterdir()} for ref in variants.values()]
    assert result in refs
    assert not staging_leftovers(box.out)


def test_output_file_name_too_long_is_a_user_error_naming_the_output(tmp_path):
    """E.g. `q35c run` saving a tensor whose name makes a file name over 255 bytes."""
    out = tmp_path / "out"
    with pytest.raises(Q35cError, match=r"-o .*out: File name too long \(.*out/n+\.npy\)"):
        write_atomically(out, lambda tmp: (tmp / ("n" * 300 + ".npy")).write_bytes(b""))
    assert list(tmp_path.iterdir()) == []
