"""The Cerebras target: machine files, the numeric mode, packing, CSL emission and its
grammar, the tile simulator (bit-exact with the interpreter's numeric mode under several
interleavings; corrupted programs rejected), the estimate, and the CLI."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import EXAMPLES, q35c
from xdsl.dialects import arith, csl, memref
from xdsl.dialects.builtin import (
    AffineMapAttr,
    ArrayAttr,
    IndexType,
    IntAttr,
    IntegerAttr,
    StringAttr,
    i16,
)
from xdsl.ir.affine import AffineExpr, AffineMap
from xdsl.parser import Parser
from xdsl.rewriter import InsertPoint, Rewriter

from q35c.compiler.context import make_context
from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.quant import CODEBOOK, dequantize, quantize
from q35c.compiler.weights import WeightStore, store_of
from q35c.dialects import quant3p5
from q35c.semantics import Interpreter, dequantize_f16, matmul_q3p5_f16, matmul_q3p5_w16
from q35c.targets.cerebras.emit import csl_module
from q35c.targets.cerebras.estimate import estimate, lower_bound
from q35c.targets.cerebras.machine import MACHINES, load_machine
from q35c.targets.cerebras.ops import Copy32Op, SetColorConfigOp
from q35c.targets.cerebras.parse import parse_csl
from q35c.targets.cerebras.plan import GemvPlan, pe_data
from q35c.targets.cerebras.printer import csl_files
from q35c.targets.cerebras.project import Project, simulate
from q35c.targets.cerebras.shape_only import Gemv, placed_rows, tile_of
from q35c.targets.cerebras.simulate import Simulation, SimulationError, check

WSE2 = load_machine("wse2")
WSE3 = load_machine("wse3")
# Several interleaving seeds run in the slow tier; the default tier runs one.
SEEDS = [1, pytest.param(3, marks=pytest.mark.slow)]


def _weights(k: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return quantize((rng.standard_normal((k, n)) / 16).astype(np.float32), group_size=32)


def _project(k: int, n: int, k_tile: int, n_tile: int, seed: int = 0,
             weights: str = "packed") -> Project:
    plan = GemvPlan.choose(k, n, 32, k_tile, n_tile, weights)
    return Project(plan, csl_module(plan), _weights(k, n, seed), "x", "y")


# -- machine model -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wse2", "wse3"])
def test_machine_files_give_every_figure_a_source(name):
    doc = json.loads((MACHINES / f"{name}.json").read_text())
    m = load_machine(name)
    assert m.pe_memory_bytes == 48 * 1024 and m.colors == 24 and m.clock_hz == 850_000_000
    assert doc["wavelet_bits"] == 32 and doc["dsd_element_bits"] == [16, 32]
    assert {21, 22, 23} <= m.reserved_colors
    for key in ("costs", "simd"):  # not public: parameters marked as assumptions
        assert "ASSUMPTION" in doc[key]["source"]
    assert "ASSUMPTION" in doc["link_buffer_source"]
    assert m.color_problem(22) and m.color_problem(24) and m.color_problem(0) is None


def test_unknown_machine_is_a_one_line_error():
    with pytest.raises(Q35cError, match="unknown machine 'wse9' \\(known: wse2, wse3\\)"):
        load_machine("wse9")


# -- numeric mode ------------------------------------------------------------------------


def _mode_by_hand(x, w, k_tile):
    """The order docs/cerebras.md states, one scalar at a time (an independent spelling)."""
    f32 = np.float32
    k, n = w.shape
    lev = np.zeros((-(-k // k_tile) * k_tile, n), f32)
    codes = w.codes()
    for kk in range(k):
        lev[kk] = CODEBOOK[codes[kk // 2], kk % 2]
    scale, offset = w.scales(), w.offsets()
    xr = [f32(np.float16(v)) for v in x] + [f32(0)] * (len(lev) - k)
    out = []
    for col in range(n):
        y = None
        for t in range(len(lev) // k_tile):
            acc = f32(0)
            for g in range(t * k_tile // 32, (t + 1) * k_tile // 32):
                s = xs = f32(0)
                for kk in range(g * 32, g * 32 + 32):
                    s = f32(s + f32(xr[kk] * lev[kk, col]))
                    xs = f32(xs + xr[kk])
                acc = f32(acc + f32(scale[g, col] * s))
                acc = f32(acc + f32(offset[g, col] * xs))
            y = acc if y is None else f32(y + acc)
        out.append(y)
    return np.array(out, f32)


def test_numeric_mode_is_the_stated_order_and_close_to_float():
    w = _weights(128, 5)
    x = np.random.default_rng(1).standard_normal((1, 128)).astype(np.float32)
    got = matmul_q3p5_f16(x, w, 64)[0]
    assert np.array_equal(got.view(np.uint32), _mode_by_hand(x[0], w, 64).view(np.uint32))
    ref = x[0].astype(np.float64) @ dequantize(w).astype(np.float64)
    assert np.allclose(got, ref, rtol=0, atol=4e-3 * np.abs(ref).max())


def test_interpreter_overrides_select_the_numeric_mode(tmp_path):
    _write_model(tmp_path, 128, 16, seed=2)
    out = tmp_path / "o"
    q35c(tmp_path / "gemv.mlir", "--target", "mlir", "-o", out)
    module = Parser(make_context(), (out / "gemv.mlir").read_text()).parse_module()
    store = store_of(module, out)
    w = store["fc.weight.q3p5"]
    x = np.random.default_rng(3).standard_normal((1, 128)).astype(np.float32)
    mode = {quant3p5.MatmulOp: lambda interp, op, args: (matmul_q3p5_f16(*args, 64),)}
    got = Interpreter(module, store, overrides=mode).run({"x": x})["y"]
    assert np.array_equal(got, matmul_q3p5_f16(x, w, 64))
    assert not np.array_equal(Interpreter(module, store).run({"x": x})["y"], got)


# -- packing -----------------------------------------------------------------------------


def test_pe_tiles_unpack_to_the_codes_with_16_bit_shifts():
    """The emitted unpacking, ((w[q] >> sh) | ((w[q+1] << 1) << (15 - sh))) & 0x7F in
    uint16, gives back every pair code of every PE's tile."""
    k, n = 320, 40
    w = _weights(k, n)
    plan = GemvPlan.choose(k, n, 32, 128, 16)
    codes = w.codes()
    for x in range(plan.width):
        for y in range(plan.height):
            words = pe_data(plan, w, x, y)["payload"].reshape(-1, plan.n_tile)
            for g in range(plan.groups):
                for i in range(16):
                    q, sh = divmod(7 * i, 16)
                    lo = words[g * 7 + q] >> np.uint16(sh)
                    hi = (words[g * 7 + q + 1] << np.uint16(1)) << np.uint16(15 - sh)
                    got = (lo | hi) & np.uint16(0x7F)
                    pair = (x * plan.k_tile + g * 32) // 2 + i
                    cols = slice(y * 16, min(y * 16 + 16, n))
                    if pair < len(codes):
                        assert np.array_equal(got[:cols.stop - cols.start], codes[pair, cols])


# -- CSL emission and its grammar --------------------------------------------------------


def test_every_emitted_file_parses_and_slips_do_not():
    files = csl_files(_project(256, 64, 64, 32).csl)
    assert sorted(files) == ["layout.csl", "pe_first.csl", "pe_last_odd.csl",
                             "pe_mid_even.csl", "pe_mid_odd.csl"]
    for name, text in files.items():
        parse_csl(text, name)
    text = files["pe_first.csl"]
    assert "@fmachs(s_dsd, s_dsd, pair0_dsd," in text and "@and16(code0_dsd," in text
    assert "@ptrcast([*]u32, &pair7)[" in text and "-> pair0[ (d0 * 2) ]" in text
    assert "task reduce() void {" in text and ".fabric_color = @get_color(0)" in text
    assert "@set_color_config(1, " in files["layout.csl"]
    for slip in (text.replace("@fs2h(x16_dsd, x_dsd);", "@fs2h(x16_dsd, x_dsd)"),
                 text.replace("fn compute() void {", "fn compute() void"),
                 text + "\nconst v = 3 +;\n"):
        with pytest.raises(Q35cError, match="pe_first.csl:[0-9]+:[0-9]+: not in q35c's CSL"):
            parse_csl(slip, "pe_first.csl")


# -- the simulator -----------------------------------------------------------------------


@pytest.mark.parametrize("seeds", SEEDS)
@pytest.mark.parametrize("weights", ["packed", "decoded", "f16"])
@pytest.mark.parametrize(("k", "n", "k_tile", "n_tile"), [
    (200, 70, 128, 32),  # 2x3 PEs, K and N not multiples of the tiles
    (192, 24, 64, 24),  # 3x1: first, middle and last PE of a chain
    (64, 8, 64, 8),  # one PE, no fabric
    (320, 8, 320, 8),  # f16: unrolled groups, then the loop over the rest
])
def test_simulator_is_bit_exact_with_the_numeric_mode_under_every_seed(k, n, k_tile, n_tile,
                                                                         weights, seeds):
    if k_tile == 320 and weights != "f16":
        pytest.skip("the loop past the unrolled groups is the f16 program's")
    project = _project(k, n, k_tile, n_tile, weights=weights)
    x = np.random.default_rng(k).standard_normal((1, k)).astype(np.float32)
    mode = matmul_q3p5_w16 if weights == "f16" else matmul_q3p5_f16
    want = mode(x, project.weights, project.plan.k_tile)
    for seed in range(seeds):
        got, sim = simulate(project, WSE2, x, seed)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), seed
        assert sim.cycles == max(sum(pe.spent.values()) for pe in sim.pes.values()) > 0
        assert (sim.load_cycles > 0) == (weights == "decoded")


def test_f16_weights_are_the_dequantized_weights_rounded_once():
    """dequantize_f16 against the format's own float64-free decode, an independent path:
    every weight within half an f16 ulp of scale * level + offset (float32), and the
    w16 mode's GEMV within 2e-3 of max |y| of the float64 product."""
    w = _weights(96, 40, 3)
    w16 = dequantize_f16(w, 64)
    assert w16.dtype == np.float16 and w16.shape == (128, 40) and not w16[96:].any()
    exact = dequantize(w).astype(np.float64)
    err = np.abs(w16[:96].astype(np.float64) - exact)
    assert (err <= np.spacing(np.abs(w16[:96]).astype(np.float16)).astype(np.float64) / 2
            + 1e-7).all()
    x = np.random.default_rng(1).standard_normal((1, 96)).astype(np.float32)
    y = matmul_q3p5_w16(x, w, 64)
    ref = x.astype(np.float64) @ exact
    assert np.abs(y - ref).max() <= 2e-3 * np.abs(ref).max()


def test_f16_compute_is_one_fmachs_per_row():
    plan = GemvPlan.choose(192, 16, 32, 192, 16, "f16")
    prog = next(iter(csl_module(plan).ops))
    fn = next(op for op in prog.body.block.ops
              if isinstance(op, csl.FuncOp) and op.sym_name.data == "compute")
    ops = [op.name for op in fn.walk() if isinstance(op, csl.BuiltinDsdOp)]
    assert ops == ["csl.fs2h"] + ["csl.fmachs"] * (4 + 1) * 32  # 4 groups unrolled, a loop
    assert sum(isinstance(op, csl.FuncOp) for op in prog.body.block.ops) == 1  # no decode


def test_decoded_compute_looks_nothing_up_and_keeps_the_packed_tile():
    """weights=decoded: the host copies the same packed arrays; only `decode` reads the
    codebook, and `compute` has no scalar look-up loop over the columns."""
    plan = GemvPlan.choose(128, 16, 32, 64, 16, "decoded")
    prog = next(iter(csl_module(plan).ops))
    fns = {op.sym_name.data: op for op in prog.body.block.ops if isinstance(op, csl.FuncOp)}
    assert set(fns) == {"decode", "compute"}
    names = {op.results[0].name_hint for op in prog.body.block.ops
             if isinstance(op, csl.ZerosOp)}
    assert {"payload", "meta", "lev", "scg", "ofg"} <= names and "pair0" not in names

    def loads(fn):
        return {op.memref.owner.result.name_hint for op in fn.walk()
                if isinstance(op, memref.LoadOp)}
    assert {"cb0", "cb1", "stepm", "gridm"} <= loads(fns["decode"])
    assert loads(fns["compute"]) == {"x16", "xr"}
    want = pe_data(GemvPlan.choose(128, 16, 32, 64, 16), _weights(128, 16), 0, 0)
    got = pe_data(plan, _weights(128, 16), 0, 0)
    assert all(np.array_equal(want[key], got[key]) for key in want)


def test_a_decoded_tile_too_large_for_a_pe_is_caught():
    with pytest.raises(SimulationError, match=r"memory \d+ bytes > 49152"):
        check(_project(512, 64, 512, 64, weights="decoded").csl, WSE2)


def _small():
    return _project(128, 16, 64, 16)


def test_a_dropped_route_is_caught():
    p = _small()
    route = next(op for op in p.csl.walk()
                 if isinstance(op, SetColorConfigOp) and op.rx.data[0].data == "WEST")
    route.detach()
    with pytest.raises(SimulationError, match=r"PE \(1,0\) color 0: wavelets arrive from the "
                       "WEST but the PE has no route for the color"):
        check(p.csl, WSE2)


def _fab(project, program: str, kind: str) -> csl.GetFabDsdOp:
    prog = next(m for m in project.csl.body.ops if m.sym_name.data == program)
    return next(op for op in prog.walk() if isinstance(op, csl.GetFabDsdOp)
                and op.result.type.data.value == kind)


def test_swapped_colors_are_caught_statically_and_deadlock_dynamically():
    p = _small()
    fab = _fab(p, "pe_last_odd", "fabin_dsd")
    fab.properties["fabric_color"] = IntegerAttr(1, fab.fabric_color.type)
    with pytest.raises(SimulationError, match=r"PE \(1,0\) color 0: 16 wavelets arrive, its "
                       "program consumes 0"):
        check(p.csl, WSE2)
    layout = check(_small().csl, WSE2)  # the layout is untouched; run the bad programs
    with pytest.raises(SimulationError, match=r"deadlock: PE \(0,0\) waits to send color 0; "
                       r"PE \(1,0\) waits to receive color 1$"):
        Simulation(p.csl, layout, WSE2, seed=0).run()


def test_one_wavelet_too_many_is_caught():
    p = _small()
    fab = _fab(p, "pe_first", "fabout_dsd")
    extent = fab.sizes[0].owner
    extent.properties["value"] = IntegerAttr(17, i16)
    assert isinstance(extent, arith.ConstantOp)
    with pytest.raises(SimulationError, match=r"PE \(1,0\) color 0: 17 wavelets arrive, its "
                       "program consumes 16"):
        check(p.csl, WSE2)


def test_a_strided_dsd_or_a_pair_copy_leaving_its_array_is_caught():
    """The packed look-up's stride-2 DSDs and 32-bit copies are bounds-checked: a stride
    of 3 over `pair0`, or a copy into the element pair past `pair7`, stops the run."""
    x = np.ones((1, 64), np.float32)
    p = _project(64, 16, 64, 16)
    dsd = next(op for op in p.csl.walk() if isinstance(op, csl.GetMemDsdOp)
               and op.base_addr.owner.result.name_hint == "pair0")
    dsd.properties["tensor_access"] = AffineMapAttr(AffineMap(
        1, 0, (AffineExpr.dimension(0) * 3,)))
    with pytest.raises(SimulationError, match=r"PE \(0,0\): DSD over pair0\[0:46:3\] "
                       r"leaves the array of 32"):
        simulate(p, WSE2, x, 0)
    p = _project(64, 16, 64, 16)
    copy = next(op for op in p.csl.walk() if isinstance(op, Copy32Op)
                and op.dst.owner.result.name_hint == "pair7")
    sixteen = arith.ConstantOp(IntegerAttr(16, IndexType()))
    past = arith.AddiOp(copy.dst_index, sixteen)
    Rewriter.insert_op([sixteen, past], InsertPoint.before(copy))
    copy.operands[1] = past.result
    with pytest.raises(SimulationError, match=r"PE \(0,0\) \(fn compute\): index 33 "
                       r"outside an array of 32"):
        simulate(p, WSE2, x, 0)


def test_memory_overflow_is_caught():
    p = _project(1024, 128, 1024, 128)
    with pytest.raises(SimulationError, match=r"PE \(0,0\) \(pe_single.csl\): memory [0-9]+ "
                       r"bytes > 49152 \(arrays [0-9]+, code [0-9]+, stack 1024, memcpy 4096\)"):
        check(p.csl, WSE2)


def test_reserved_color_is_caught():
    p = _small()
    route = next(op for op in p.csl.walk() if isinstance(op, SetColorConfigOp))
    route.properties["color"] = IntAttr(22)
    with pytest.raises(SimulationError, match=r"PE \(0,0\) route: color 22 is reserved by the "
                       "memcpy runtime on wse2"):
        check(p.csl, WSE2)


def test_estimate_is_above_its_lower_bound():
    plan = GemvPlan.choose(128, 16, 32, 64, 16)
    r = estimate(plan, WSE2)
    lb = lower_bound(plan, WSE2)
    assert r["lower_bound"] == lb and r["cycles"] >= lb["total"] > 0
    assert r["ratio"] == round(r["cycles"] / lb["total"], 2)
    assert sum(r["last_pe"].values()) == r["cycles"] and r["last_pe"]["fabric"] >= 16


@pytest.mark.parametrize("machine", [WSE2, WSE3])
def test_packed_programs_respect_the_lookup_floor(machine):
    """The packed look-up floor (2 scalar operations per pair code, every DSD operation
    overlapped) is a lower bound the packed programs must respect; it is 4x (f16 width 4)
    or 8x (width 8) the multiply-adds of the tile, so no packed program reaches 1.5x of
    the tiling's bound."""
    plan = GemvPlan.choose(128, 16, 32, 64, 16)
    r = estimate(plan, machine)
    f, lb = r["lookup_floor"], r["lower_bound"]
    assert f["scalar"] == 64 // 2 * 16 * 2 * machine.scalar_op
    assert f["scalar"] == lb["compute"] * machine.simd["f16"] * machine.scalar_op
    assert r["cycles"] >= f["total"] > lb["total"]
    assert f["over_bound"] > 1.5


def test_decoded_weights_cut_the_simulated_cycles_of_the_same_tiling():
    packed = estimate(GemvPlan.choose(256, 64, 32, 128, 64), WSE2)
    decoded = estimate(GemvPlan.choose(256, 64, 32, 128, 64, "decoded"), WSE2)
    f16 = estimate(GemvPlan.choose(256, 64, 32, 128, 64, "f16"), WSE2)
    assert f16["lower_bound"] == packed["lower_bound"]
    assert f16["lower_bound"]["total"] <= f16["cycles"] < decoded["cycles"]
    assert decoded["lower_bound"] == packed["lower_bound"]
    assert decoded["lower_bound"]["total"] <= decoded["cycles"] < packed["cycles"]
    assert decoded["load_cycles"] > 0 and "load_cycles" not in packed
    assert "scalar" in packed["last_pe"] and decoded["last_pe"]["scalar"] < \
        packed["last_pe"]["scalar"]


@pytest.mark.parametrize("args, message", [
    (["1024", "256", "--k-tile", "100"], "k_tile 100 must be a multiple of 64"),
    (["0", "16"], "K, N must be positive"),
    (["4096", "4096", "--machine", "nope"], "unknown machine 'nope'"),
    (["100000000", "100000000"], "PE rectangle; wse2's fabric is 750x994"),
    (["64000000", "64", "--k-tile", "64000000"], "bytes packed; a PE has 49152"),
])
def test_estimate_cli_refuses_bad_sizes_in_one_line(args, message, capsys):
    """The estimate's main in-process (each refusal); the module's entry point once below."""
    from q35c.targets.cerebras.estimate import main

    with pytest.raises(SystemExit) as e:
        main(args)
    r = capsys.readouterr()
    assert e.value.code == 2 and r.out == ""
    assert message in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_estimate_module_refuses_in_one_line():
    r = subprocess.run([sys.executable, "-m", "q35c.targets.cerebras.estimate", "0", "16"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert "K, N must be positive" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# -- the CLI -----------------------------------------------------------------------------


def _write_model(tmp, k: int, n: int, seed: int = 0) -> str:
    text = f"""builtin.module attributes {{quant3p5.weights = "gemv.q35w"}} {{
  func.func @main(%x: tensor<1x{k}xf32> {{q35c.name = "x"}})
      -> (tensor<1x{n}xf32> {{q35c.name = "y"}}) {{
    %zero = arith.constant 0.000000e+00 : f32
    %w = quant3p5.weight "fc.weight" : tensor<{k}x{n}xf32>
    %e = tensor.empty() : tensor<1x{n}xf32>
    %a = linalg.fill ins(%zero : f32) outs(%e : tensor<1x{n}xf32>) -> tensor<1x{n}xf32>
    %y = linalg.matmul ins(%x, %w : tensor<1x{k}xf32>, tensor<{k}x{n}xf32>)
                       outs(%a : tensor<1x{n}xf32>) -> tensor<1x{n}xf32>
    func.return %y : tensor<1x{n}xf32>
  }}
}}
"""
    (tmp / "gemv.mlir").write_text(text)
    store = WeightStore()
    rng = np.random.default_rng(seed)
    store["fc.weight"] = (rng.standard_normal((k, n)) / 16).astype(np.float32)
    store.save(tmp / "gemv.q35w")
    return text


@pytest.mark.parametrize("seeds", SEEDS)
def test_cli_writes_the_project_and_runs_it_bit_exactly(tmp_path, seeds):
    _write_model(tmp_path, 128, 24)
    out = tmp_path / "out"
    result = q35c(tmp_path / "gemv.mlir", "--target", "cerebras{k_tile=64 n_tile=16}",
                  "-o", out)
    assert "cerebras target: 2x2 PEs on wse2" in result.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == ["host.npz", "layout.csl", "pe_first.csl", "pe_last_odd.csl",
                     "project.json", "run.py"]
    for f in out.glob("*.csl"):
        parse_csl(f.read_text(), f.name)
    ast.parse((out / "run.py").read_text())
    doc = json.loads((out / "project.json").read_text())
    assert doc["plan"]["width"] == 2 and max(doc["pe_memory_bytes"].values()) <= 49152
    runs = tmp_path / "runs"
    q35c("run", tmp_path / "gemv.mlir", "--target",
         f"cerebras{{k_tile=64 n_tile=16 seeds={seeds}}}", "-o", runs)
    x, y = np.load(runs / "x.npy"), np.load(runs / "y.npy")
    module = Parser(make_context(), (out.parent / "gemv.mlir").read_text()).parse_module()
    w = store_of(module, out.parent)["fc.weight"]
    want = matmul_q3p5_f16(x, quantize(w, group_size=32), 64)
    assert np.array_equal(y.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("weights", ["decoded", "f16"])
def test_cli_decoded_and_f16_weights_write_and_run_bit_exactly(tmp_path, weights):
    _write_model(tmp_path, 128, 24)
    target = f"cerebras{{k_tile=64 n_tile=16 weights={weights}}}"
    q35c(tmp_path / "gemv.mlir", "--target", target, "-o", tmp_path / "out")
    out = tmp_path / "out"
    for f in out.glob("*.csl"):
        parse_csl(f.read_text(), f.name)
    run_py = (out / "run.py").read_text()
    ast.parse(run_py)
    assert ('launch("decode"' in run_py) == (weights == "decoded")
    assert ('"w16"' in run_py) == (weights == "f16")
    assert json.loads((out / "project.json").read_text())["plan"]["weights"] == weights
    host = np.load(out / "host.npz")
    assert ("0_0/w16" in host) == (weights == "f16") and ("cb0" in host) != (weights == "f16")
    q35c("run", tmp_path / "gemv.mlir", "--target", target, "-o", tmp_path / "runs")
    x, y = np.load(tmp_path / "runs" / "x.npy"), np.load(tmp_path / "runs" / "y.npy")
    module = Parser(make_context(), (tmp_path / "gemv.mlir").read_text()).parse_module()
    w = quantize(store_of(module, tmp_path)["fc.weight"], group_size=32)
    want = (matmul_q3p5_w16 if weights == "f16" else matmul_q3p5_f16)(x, w, 64)
    assert np.array_equal(y.view(np.uint32), want.view(np.uint32))
    bad = q35c(tmp_path / "gemv.mlir", "--target", "cerebras{weights=int4}", "-o",
               tmp_path / "o", check=False)
    assert bad.returncode == 2 and "weights" in bad.stderr and not (tmp_path / "o").exists()


def test_unsupported_ops_are_refused_in_one_line(tmp_path):
    model = EXAMPLES / "models" / "encoder_tiny.onnx"  # layer norm, erf GELU
    result = q35c(model, "--target", "cerebras", "--shape", "hidden=1,1,64", "-o",
                  tmp_path / "o", check=False)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("q35c: error: ") and "q35nn.layer_norm" in result.stderr
    assert "target cerebras does not support" in result.stderr and "math.erf" in result.stderr
    for mapped in ("linalg.transpose", "tensor.reshape", "q35nn.softmax", "arith.addf"):
        assert mapped not in result.stderr
    assert not (tmp_path / "o").exists()


def test_a_batch_of_rows_is_refused_in_one_line(tmp_path):
    result = q35c(EXAMPLES / "mlp.mlir", "--target", "cerebras", "-o", tmp_path / "o",
                  check=False)  # x is [4, 128]
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "only one row" in result.stderr and not (tmp_path / "o").exists()


def test_a_gemv_on_a_batch_of_rows_is_refused_in_one_line(tmp_path):
    _write_model(tmp_path, 64, 64)
    text = (tmp_path / "gemv.mlir").read_text().replace("1x", "2x")
    (tmp_path / "gemv.mlir").write_text(text)
    result = q35c(tmp_path / "gemv.mlir", "--target", "cerebras", "-o", tmp_path / "o",
                  check=False)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "only batch-1 GEMV ([1, K]) is mapped" in result.stderr
    assert not (tmp_path / "o").exists()


def test_shape_only_places_every_gemv_of_a_llama_shaped_graph(tmp_path):
    model = tmp_path / "tiny.onnx"
    subprocess.run([sys.executable, EXAMPLES / "models" / "build_llama_shapes.py", "tiny",
                    model, "--layers", "2", "--hidden", "512"], check=True,
                   capture_output=True)
    result = q35c(model, "--shape-only", "--target", "cerebras", "-o", tmp_path / "plan")
    plan = json.loads((tmp_path / "plan" / "cerebras_plan.json").read_text())
    t = plan["totals"]
    assert t["gemvs"] == 15 and sum(r["count"] for r in plan["gemv_shapes"]) == 15
    assert t["pes"] == sum(r["pes"] * r["count"] for r in plan["gemv_shapes"]) <= t["wafer_pes"]
    assert t["cycles_per_token"] == sum(r["cycles"] * r["count"] for r in plan["gemv_shapes"])
    for r in plan["gemv_shapes"]:
        assert r["pe_memory_bytes"] <= 49152
        assert r["rectangle"] == [-(-r["k"] // r["k_tile"]), -(-r["n"] // r["n_tile"])]
    assert "q35nn.rms_norm" in plan["not_costed"] and "quant3p5.matmul" not in \
        plan["not_costed"]
    assert result.stdout == (tmp_path / "plan" / "report.txt").read_text()
    assert "fits on one wafer" in result.stdout and "WaferLLM" in result.stdout
    q35c(model, "--shape-only", "--target", "cerebras{weights=f16}", "-o", tmp_path / "f16")
    f16 = json.loads((tmp_path / "f16" / "cerebras_plan.json").read_text())
    assert f16["weights"] == "f16" and plan["weights"] == "packed"
    assert f16["totals"]["weight_bytes"] == sum(r["k"] * r["n"] * 2 * r["count"]
                                                for r in f16["gemv_shapes"])
    assert f16["totals"]["cycles_per_token"] < t["cycles_per_token"]


def _route(project, x: int, rx: str) -> SetColorConfigOp:
    return next(op for op in project.csl.walk() if isinstance(op, SetColorConfigOp)
                and op.rx.data[0].data == rx and op.x_coord.owner.value.value.data == x)


def _dirs(*names: str) -> ArrayAttr:
    return ArrayAttr([StringAttr(n) for n in names])


def test_a_route_cycle_is_caught():
    p = _project(192, 8, 64, 8)  # a 3-PE chain
    middle = _route(p, 1, "WEST")  # PE 1's color 0: forward to the east, accept from both
    middle.properties["rx"], middle.properties["tx"] = _dirs("WEST", "EAST"), _dirs("EAST")
    last = _route(p, 2, "WEST")  # PE 2 turns color 0 back to the west
    last.properties["color"], last.properties["tx"] = IntAttr(0), _dirs("WEST")
    with pytest.raises(SimulationError, match=r"color 0: the routes form a cycle through PE "
                       r"\(1,0\)"):
        check(p.csl, WSE2)


def test_inject_and_forward_on_one_color_is_caught():
    p = _small()
    _route(p, 0, "RAMP").properties["rx"] = _dirs("RAMP", "EAST")
    with pytest.raises(SimulationError, match=r"PE \(0,0\) color 0: the PE both injects "
                       r"\(RAMP\) and forwards EAST"):
        check(p.csl, WSE2)


def test_a_route_off_the_rectangle_is_caught():
    p = _small()
    _route(p, 1, "WEST").properties["tx"] = _dirs("EAST")
    with pytest.raises(SimulationError, match=r"PE \(1,0\) color 0: route leaves the "
                       "rectangle to the EAST"):
        check(p.csl, WSE2)


def test_a_task_bound_twice_is_caught():
    p = _small()
    prog = next(m for m in p.csl.body.ops if m.sym_name.data == "pe_first")
    task = next(op for op in prog.walk() if isinstance(op, csl.TaskOp))
    twin = task.clone()
    twin.properties["sym_name"] = StringAttr("reduce2")
    prog.body.block.insert_op_after(twin, task)
    with pytest.raises(SimulationError, match="pe_first.csl: task ID 8 bound twice "
                       r"\(task reduce and task reduce2\)"):
        check(p.csl, WSE2)


def test_report_draws_the_pe_grid_and_the_traffic(tmp_path):
    _write_model(tmp_path, 192, 64)
    out = tmp_path / "out"
    q35c(tmp_path / "gemv.mlir", "--target", "cerebras{k_tile=64 n_tile=32}", "-o", out)
    q35c("report", out)
    page = (out / "report.html").read_text()
    assert page.count("<rect ") == 6  # 3x2 PEs
    assert "<title>PE (1,1) pe_mid_odd.csl: " in page and "of 49152 bytes</title>" in page
    doc = json.loads((out / "project.json").read_text())
    chain = {"senders": 2, "wavelets": 64, "link_wavelets": 64}  # one PE per row, 32 each
    assert doc["traffic"] == {"0": chain, "1": chain}
    assert "<tr><td>0</td><td>2</td><td>64</td><td>64</td></tr>" in page
    (out / "project.json").write_text("{}")
    result = q35c("report", out, check=False)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "project.json: not a cerebras project" in result.stderr


def test_placed_rows_stacks_rectangles_where_they_rest_lowest():
    assert placed_rows([(3, 2), (4, 5)], 7) == 5  # side by side
    assert placed_rows([(3, 2), (4, 5), (3, 3)], 7) == 5  # (3, 2) on top of (3, 3)
    assert placed_rows([(3, 2), (4, 5), (4, 1)], 7) == 6  # (4, 1) on top of (4, 5)
    assert placed_rows([(7, 1)] * 3, 7) == 3


def test_shape_only_gives_a_too_tall_gemv_a_wider_tile():
    """A GEMV whose rectangle would be taller than the fabric with the common tile gets
    the smallest wider tile that fits a PE and puts it within the fabric."""
    small = dataclasses.replace(WSE2, name="small", width=40, height=24)
    head = Gemv("lm_head", 512, 2048, 32)
    assert tile_of(head, WSE2, 64, 8) == (64, 8)  # 8 x 256 fits a WSE-2
    kt, nt = tile_of(head, small, 64, 8)
    w, h = -(-512 // kt), -(-2048 // nt)
    assert w <= 40 and h <= 24 and nt >= 2048 // 24
    with pytest.raises(Q35cError, match=r"--shape-only: GEMV lm_head \(512x65536\) needs a "
                       r"8x8192 PE rectangle with 64x8 tiles, and no tile of at most "
                       r"1024x1024 that fits a PE's memory puts it within small's fabric of "
                       r"40x24 PEs"):
        tile_of(Gemv("lm_head", 512, 65536, 32), small, 64, 8)


def test_shape_only_refuses_a_model_too_large_for_the_fabric_in_one_line(tmp_path):
    model = tmp_path / "tiny.onnx"
    subprocess.run([sys.executable, EXAMPLES / "models" / "build_llama_shapes.py", "tiny",
                    model, "--layers", "1", "--hidden", "512", "--vocab", "65536"],
                   check=True, capture_output=True)
    doc = json.loads((MACHINES / "wse2.json").read_text())
    doc["name"], doc["fabric"]["width"], doc["fabric"]["height"] = "small", 40, 24
    (tmp_path / "small.json").write_text(json.dumps(doc))
    result = q35c(model, "--shape-only", "--target",
                  f'cerebras{{machine="{tmp_path / "small.json"}"}}', "-o", tmp_path / "plan",
                  check=False)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "needs a 8x8192 PE rectangle" in result.stderr and \
        "small's fabric of 40x24 PEs" in result.stderr
    assert not (tmp_path / "plan").exists()
