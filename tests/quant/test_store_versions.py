"""`.q35w` weight stores across Q3P5 format versions: a store of version-1 entries (as written
before format version 2) loads, passes the IR type check and runs bit for bit like the
version-2 store written now; a version-2 entry whose header disagrees with the IR is refused
in one line."""

from __future__ import annotations

import json
import struct

import numpy as np
from conftest import EXAMPLES, q35c

from q35c.compiler.quant import Q3P5Tensor
from q35c.compiler.weights import WeightStore

MLP = EXAMPLES / "mlp.mlir"


def _q3p5_entries(path) -> dict[str, bytes]:
    store = WeightStore(path)
    return {n: store[n].to_bytes() for n in store.names() if isinstance(store[n], Q3P5Tensor)}


def test_version_1_store_runs_like_the_version_2_store(tmp_path, monkeypatch):
    q35c(MLP, "--target", "mlir", "-o", tmp_path / "v2")
    entries = _q3p5_entries(tmp_path / "v2" / "mlp.q35w")
    assert entries and all(struct.unpack_from("<H", b, 4)[0] == 2 for b in entries.values())
    # the same store written with version-1 entries, as the code before version 2 did
    monkeypatch.setattr(Q3P5Tensor, "to_bytes", lambda self, version=1:
                        Q3P5Tensor._to_bytes_v1(self))
    monkeypatch.setattr(Q3P5Tensor, "nbytes", lambda self: len(Q3P5Tensor._to_bytes_v1(self)))
    store = WeightStore(tmp_path / "v2" / "mlp.q35w")
    (tmp_path / "v1").mkdir()
    store.save(tmp_path / "v1" / "mlp.q35w")
    monkeypatch.undo()
    old = _q3p5_entries(tmp_path / "v1" / "mlp.q35w")
    raw = (tmp_path / "v1" / "mlp.q35w").read_bytes()
    assert all(b"Q3P5\x01\x00" + v[6:16] in raw for v in entries.values())  # version-1 headers
    assert b"Q3P5\x02\x00" not in raw
    assert old == entries  # the version-1 entries load as the same tensors
    (tmp_path / "v1" / "mlp.mlir").write_bytes((tmp_path / "v2" / "mlp.mlir").read_bytes())
    q35c("run", MLP, "-o", tmp_path / "x", "--seed", "3")
    x = f"x={tmp_path / 'x' / 'x.npy'}"
    for version in ("v1", "v2"):
        q35c("run", tmp_path / version / "mlp.mlir", "--passes", "", "-o", tmp_path / f"y{version}",
             "--input", x)
    np.testing.assert_array_equal(np.load(tmp_path / "yv1" / "probs.npy"),
                                  np.load(tmp_path / "yv2" / "probs.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "yv2" / "probs.npy"),
                                  np.load(tmp_path / "x" / "probs.npy"))


def test_version_2_entry_that_disagrees_with_the_ir_is_refused(tmp_path):
    q35c(MLP, "--target", "mlir", "-o", tmp_path)
    path = tmp_path / "mlp.q35w"
    data = bytearray(path.read_bytes())
    header_len = struct.unpack_from("<Q", data, 8)[0]
    header = json.loads(bytes(data[16:16 + header_len]))
    name, entry = next((n, e) for n, e in sorted(header.items()) if e["kind"] == "q3p5")
    at = entry["blobs"]["bytes"]["offset"]  # absolute in the file
    assert data[at:at + 6] == b"Q3P5\x02\x00"
    data[at + 6:at + 8] = struct.pack("<H", 16)  # group size 16 where the IR says 32
    path.write_bytes(bytes(data))
    result = q35c("run", tmp_path / "mlp.mlir", "--passes", "", "-o", tmp_path / "y",
                  "--seed", "3", check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert name in result.stderr and "group size 16 does not fit" in result.stderr
