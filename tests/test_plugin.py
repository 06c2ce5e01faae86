"""Plugins end to end: the example plugin (examples/plugin) and two deliberately broken ones.

Every plugin is installed with `pip install --target DIR` into a temporary directory, once
per module, and used by `q35c` / `xdsl-opt` subprocesses whose PYTHONPATH holds DIR. So the
plugins never enter this test process or the Python environment: entry points are found
through the `.dist-info` metadata pip writes into DIR.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN, EXAMPLES, ROOT
from xdsl.parser import Parser

PLUGIN_SOURCE = EXAMPLES / "plugin"
EXAMPLE = EXAMPLES / "mlp.mlir"
DOC = ROOT / "docs" / "writing-a-pass.md"
TARGET_DOC = ROOT / "docs" / "writing-a-target.md"
PLUGIN = "q35c_example_plugin"
FC2_FLOAT = 'default,dequantize-weights{pattern="fc2"}'


# -- installing and running ----------------------------------------------------------------


def _setuptools_builds_wheels() -> bool:
    """Whether pip can build a wheel here with --no-build-isolation.

    setuptools builds wheels by itself from version 70.1; older versions need the `wheel`
    package in the environment.
    """
    if importlib.util.find_spec("setuptools") is None:
        return False
    if importlib.util.find_spec("wheel") is not None:
        return True
    import setuptools

    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1)


def pip_install(package: Path, site: Path) -> Path:
    """Install the package directory `package` into `site` (no dependencies); return `site`.

    The package is copied first so that the build leaves nothing in the source tree. Without
    a usable setuptools, pip builds in an isolated environment (from its configured index).
    """
    source = site.parent / f"{package.name}-src"
    shutil.copytree(package, source, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    isolation = ["--no-build-isolation"] if _setuptools_builds_wheels() else []
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation,
         "--target", str(site), str(source)],
        capture_output=True, text=True)
    assert result.returncode == 0, f"pip install {package} failed:\n{result.stderr}"
    return site


def plugin_env(*sites: Path) -> dict[str, str]:
    """The environment for a subprocess that sees the plugins installed in `sites`."""
    env = dict(os.environ)
    paths = [str(site) for site in sites]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    return env


def _command(name: str, module: str) -> list[str]:
    script = BIN / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


def q35c(*args, sites: tuple[Path, ...], cwd: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_command("q35c", "q35c.compiler.cli"), *map(str, args)],
                          cwd=cwd, env=plugin_env(*sites), capture_output=True, text=True)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited with {result.returncode}:\n{result.stderr}")
    return result


def write_package(root: Path, name: str, module: str, entry_point: str) -> Path:
    """A one-module plugin package `name` whose `xdsl.universe` entry point is `entry_point`."""
    package = root / name
    (package / name).mkdir(parents=True)
    (package / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name.replace('_', '-')}"
        version = "0.0.1"

        [project.entry-points."xdsl.universe"]
        {name} = "{entry_point}"

        [tool.setuptools]
        packages = ["{name}"]
        """))
    (package / name / "__init__.py").write_text(textwrap.dedent(module))
    return package


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    return pip_install(PLUGIN_SOURCE, tmp_path_factory.mktemp("example-plugin") / "site")


FAILING_PLUGIN = """\
    from dataclasses import dataclass

    from xdsl.dialects import func
    from xdsl.passes import ModulePass
    from xdsl.rewriter import InsertPoint, Rewriter
    from xdsl.universe import Universe


    @dataclass(frozen=True)
    class RaisingPass(ModulePass):
        name = "failing-raise"

        def apply(self, ctx, op):
            raise RuntimeError("the plugin gave up")


    @dataclass(frozen=True)
    class InvalidIRPass(ModulePass):
        \"\"\"Inserts a softmax along axis 5 of a 2-D tensor, which its verifier rejects.\"\"\"

        name = "failing-invalid-ir"

        def apply(self, ctx, op):
            from q35c.dialects.q35nn import SoftmaxOp

            fn = next(o for o in op.walk() if isinstance(o, func.FuncOp))
            block = fn.body.block
            Rewriter.insert_op(SoftmaxOp(block.args[0], axis=5), InsertPoint.at_start(block))


    def _missing_target():
        raise ImportError("the target's module is gone")


    UNIVERSE = Universe(all_passes={"failing-raise": lambda: RaisingPass,
                                    "failing-invalid-ir": lambda: InvalidIRPass},
                        all_targets={"failing-not-q35c": lambda: RaisingPass,
                                     "failing-import": _missing_target})
    """


@pytest.fixture(scope="module")
def failing_site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("failing-plugin")
    package = write_package(root, "q35c_failing_plugin", FAILING_PLUGIN,
                            "q35c_failing_plugin:UNIVERSE")
    return pip_install(package, root / "site")


CLASHING_PLUGIN = """\
    from xdsl.universe import Universe

    UNIVERSE = Universe(all_targets={"groq": lambda: None})
    """


@pytest.fixture(scope="module")
def clashing_site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clashing-plugin")
    package = write_package(root, "q35c_clashing_plugin", CLASHING_PLUGIN,
                            "q35c_clashing_plugin:UNIVERSE")
    return pip_install(package, root / "site")


@pytest.fixture(scope="module")
def unimportable_site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("unimportable-plugin")
    package = write_package(root, "q35c_unimportable_plugin",
                            "import q35c_no_such_dependency\n",
                            "q35c_unimportable_plugin:UNIVERSE")
    return pip_install(package, root / "site")


def parse_output(path: Path):
    from q35c.compiler.driver import make_context

    return Parser(make_context(), path.read_text(), str(path)).parse_module()


def matmul_weights(module) -> dict[str, set[str]]:
    """Op name -> names of the weights its second operand comes from."""
    from q35c.dialects import q35nn, quant3p5

    found: dict[str, set[str]] = {"quant3p5.matmul": set(), "q35nn.batch_matmul": set()}
    for op in module.walk():
        if isinstance(op, (quant3p5.MatmulOp, q35nn.BatchMatmulOp)):
            weight = op.operands[1].owner
            assert isinstance(weight, quant3p5.WeightOp)
            found[op.name].add(weight.weight_name.data)
    return found


# -- the example plugin --------------------------------------------------------------------


def test_passes_lists_plugin_pass_with_its_plugin_name(example_site):
    result = ok(q35c("passes", sites=(example_site,)))
    lines = [line for line in result.stdout.splitlines() if line.startswith("dequantize-weights ")]
    assert len(lines) == 1, result.stdout
    assert lines[0].endswith(f"[plugin {PLUGIN}]")
    assert "float matmuls" in lines[0]  # the first line of the pass's docstring
    assert "warning" not in result.stderr


def test_compile_keeps_the_matching_layer_in_float(example_site, tmp_path):
    from q35c.compiler.driver import Options, compile_file
    from q35c.compiler.quant import dequantize
    from q35c.compiler.weights import WeightStore

    ok(q35c(EXAMPLE, "--passes", FC2_FLOAT, "-o", tmp_path / "fc2", sites=(example_site,)))
    module = parse_output(tmp_path / "fc2" / "mlp.mlir")
    assert matmul_weights(module) == {"quant3p5.matmul": {"fc1.weight.q3p5"},
                                      "q35nn.batch_matmul": {"fc2.weight.q3p5.dequantized"}}
    assert "fc2.weight.q3p5\"" not in (tmp_path / "fc2" / "mlp.mlir").read_text()

    # The float matrix is exactly what the default pipeline's packed fc2 decodes to.
    compile_file(EXAMPLE, tmp_path / "default", Options())
    packed = WeightStore(tmp_path / "default" / "mlp.q35w")
    floated = WeightStore(tmp_path / "fc2" / "mlp.q35w")
    assert floated.names() == ["fc1.bias", "fc1.weight.q3p5", "fc2.weight.q3p5.dequantized",
                               "norm.weight"]
    np.testing.assert_array_equal(floated["fc2.weight.q3p5.dequantized"],
                                  dequantize(packed["fc2.weight.q3p5"]))


def test_run_with_dequantized_layers_reproduces_the_quantized_run(example_site, tmp_path):
    from q35c.compiler.driver import Options, run_file

    # In a pipeline string a backslash is escaped: the pass gets the regex `^fc[12]\.`.
    both_float = r'default,dequantize-weights{pattern="^fc[12]\\."}'
    ok(q35c("run", EXAMPLE, "--seed", 7, "-o", tmp_path / "quantized", sites=(example_site,)))
    ok(q35c("run", EXAMPLE, "--seed", 7, "--passes", both_float, "-o", tmp_path / "dequantized",
            "--dump-ir", tmp_path / "dumps", sites=(example_site,)))
    final_ir = (tmp_path / "dumps" / "04-dequantize-weights.mlir").read_text()
    assert final_ir.count('"q35nn.batch_matmul"') == 2 and '"quant3p5.matmul"' not in final_ir
    x = np.load(tmp_path / "quantized" / "x.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "dequantized" / "x.npy"), x)
    quantized = np.load(tmp_path / "quantized" / "probs.npy")
    dequantized = np.load(tmp_path / "dequantized" / "probs.npy")
    # The interpreter computes quant3p5.matmul as x @ dequantize(W): only round-off differs.
    np.testing.assert_allclose(dequantized, quantized, rtol=1e-6, atol=1e-8)

    # ...while the unquantized model differs by the quantization error, far above round-off.
    unquantized = run_file(EXAMPLE, {"x": x}, tmp_path / "float",
                           Options(target="interp", passes="canonicalize"))
    assert np.max(np.abs(unquantized["probs"] - quantized)) > 1e-4


def test_bad_pattern_is_reported_as_an_option_error(example_site, tmp_path):
    result = q35c(EXAMPLE, "--passes", 'dequantize-weights{pattern="fc("}', "-o", tmp_path / "out",
                  sites=(example_site,))
    assert result.returncode == 2
    assert result.stderr.startswith("q35c: error: --passes: dequantize-weights: pattern 'fc(' "
                                    "is not a regular expression")
    assert not (tmp_path / "out").exists()


def small_module(down_layout: str, weights_file: str | None = None) -> str:
    """Two quantized layers, `up` (Q3P5) and `down` (in `down_layout`), and their store file."""
    up_type = '!quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5">'
    down_type = f'!quant3p5.packed<[32 : i64, 16 : i64], 32 : i64, "{down_layout}">'
    attributes = f' attributes {{quant3p5.weights = "{weights_file}"}}' if weights_file else ""
    return textwrap.dedent(f"""\
        builtin.module{attributes} {{
          func.func @main(%x: tensor<2x64xf32>) -> tensor<2x16xf32> {{
            %up = quant3p5.weight "up.q3p5" : {up_type}
            %h = quant3p5.matmul %x, %up : tensor<2x64xf32>, {up_type} -> tensor<2x32xf32>
            %down = quant3p5.weight "down.{down_layout}" : {down_type}
            %y = quant3p5.matmul %h, %down : tensor<2x32xf32>, {down_type} -> tensor<2x16xf32>
            func.return %y : tensor<2x16xf32>
          }}
        }}
        """)


def small_store(down_layout: str):
    from q35c.compiler.quant import quantize, quantize_legacy
    from q35c.compiler.weights import WeightStore

    rng = np.random.default_rng(1)
    up = rng.standard_normal((64, 32)).astype(np.float32)
    down = rng.standard_normal((32, 16)).astype(np.float32)
    store = WeightStore()
    store["up.q3p5"] = quantize(up, group_size=32, name="up")
    store[f"down.{down_layout}"] = (quantize_legacy(down, name="down") if down_layout == "pair43"
                                    else quantize(down, group_size=32, name="down"))
    return store


SMALL_CHECKS = """\
CHECK:      builtin.module attributes {quant3p5.weights = "small.q35w"}
CHECK:      %[[UP:.*]] = quant3p5.weight "up.q3p5" : !quant3p5.packed<[64 : i64, 32 : i64], 32 : i64, "q3p5">
CHECK-NEXT: %[[H:.*]] = quant3p5.matmul %x, %[[UP]]
CHECK-NEXT: %[[DOWN:.*]] = quant3p5.weight "down.q3p5.dequantized" : tensor<32x16xf32>
CHECK-NEXT: %{{.*}} = q35nn.batch_matmul %[[H]], %[[DOWN]] : tensor<2x32xf32>, tensor<32x16xf32> -> tensor<2x16xf32>
CHECK-NOT:  "down.q3p5"
"""  # noqa: E501 (FileCheck lines, kept verbatim)


def test_stock_xdsl_opt_runs_the_plugin_pass_on_q35c_dialects(example_site, tmp_path):
    small_store("q3p5").save(tmp_path / "small.q35w")
    (tmp_path / "small.mlir").write_text(small_module("q3p5", weights_file="small.q35w"))
    (tmp_path / "checks.txt").write_text(SMALL_CHECKS)

    # xdsl-opt opens the weight store relative to its working directory.
    opt = ok(subprocess.run(
        [*_command("xdsl-opt", "xdsl.tools.xdsl_opt"), "small.mlir",
         "-p", 'dequantize-weights{pattern="^down"}'],
        cwd=tmp_path, env=plugin_env(example_site), capture_output=True, text=True))
    ok(subprocess.run([str(BIN / "filecheck"), "checks.txt"], input=opt.stdout, cwd=tmp_path,
                      capture_output=True, text=True))


def load_plugin_pass():
    """The pass class, from the plugin's source file (the plugin is not installed here)."""
    name = "q35c_example_plugin_dequantize_weights_under_test"
    spec = importlib.util.spec_from_file_location(
        name, PLUGIN_SOURCE / "q35c_example_plugin" / "dequantize_weights.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.DequantizeWeightsPass


@pytest.mark.parametrize("layout", ["q3p5", "pair43"])
def test_dequantized_weights_compute_what_the_quantized_matmul_computes(layout):
    from q35c.compiler.driver import make_context, run_pipeline
    from q35c.compiler.weights import attach_store
    from q35c.semantics import run_module

    ctx = make_context()
    module = Parser(ctx, small_module(layout)).parse_module()
    store = small_store(layout)
    attach_store(module, store)
    x = {"arg0": np.random.default_rng(2).standard_normal((2, 64)).astype(np.float32)}
    [quantized] = run_module(module, store, x, None).values()

    run_pipeline(ctx, module, [load_plugin_pass()(pattern="^down")])
    assert matmul_weights(module) == {"quant3p5.matmul": {"up.q3p5"},
                                      "q35nn.batch_matmul": {f"down.{layout}.dequantized"}}
    [dequantized] = run_module(module, store, x, None).values()
    np.testing.assert_allclose(dequantized, quantized, rtol=1e-6, atol=1e-7)


def test_plugin_filecheck_tests_pass(example_site):
    result = subprocess.run([sys.executable, str(BIN / "lit"), "-q",
                             str(PLUGIN_SOURCE / "tests" / "filecheck")],
                            env=plugin_env(example_site), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the example plugin's target ------------------------------------------------------------


def test_targets_lists_the_plugin_target(example_site):
    result = ok(q35c("targets", sites=(example_site,)))
    [line] = [line for line in result.stdout.splitlines() if line.startswith("histogram ")]
    assert "op names (ops.json)" in line and "[--shape-only]" in line
    assert line.endswith(f"[plugin {PLUGIN}]")
    assert {"c", "groq", "interp", "mlir"} <= {line.split()[0]
                                                for line in result.stdout.splitlines()}


def test_plugin_target_writes_the_op_histogram_of_its_final_ir(example_site, tmp_path):
    """`--target histogram`: ops.json counts the ops of the IR after the target's own
    pipeline (`canonicalize`, the last --dump-ir stage), in name order."""
    import json
    from collections import Counter

    ok(q35c(EXAMPLE, "--target", "histogram", "-o", tmp_path / "out", "--dump-ir",
            tmp_path / "dumps", sites=(example_site,)))
    final = tmp_path / "dumps" / "06-canonicalize.mlir"
    assert sorted(p.name for p in (tmp_path / "dumps").glob("*.mlir"))[-1] == final.name
    module = parse_output(final)
    ops = [op for op in module.walk() if op is not module]
    text = (tmp_path / "out" / "ops.json").read_text()
    histogram = json.loads(text)
    assert histogram == {"ops": dict(sorted(Counter(op.name for op in ops).items())),
                         "total": len(ops)}
    assert list(histogram["ops"]) == sorted(histogram["ops"])
    assert histogram["ops"]["quant3p5.matmul"] == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ops.json"]

    # without -o the same JSON goes to stdout; the target's option counts top-level ops only
    assert ok(q35c(EXAMPLE, "--target", "histogram", sites=(example_site,))).stdout == text
    top = json.loads(ok(q35c(EXAMPLE, "--target", "histogram{nested=false}",
                             sites=(example_site,))).stdout)
    assert "linalg.yield" in histogram["ops"] and "linalg.yield" not in top["ops"]


def test_plugin_target_compiles_shape_only(example_site, tmp_path):
    import json

    model = EXAMPLES / "models" / "llama_tiny.onnx"
    ok(q35c(model, "--shape", "input_ids=1,4", "--shape-only", "--target", "histogram",
            "-o", tmp_path / "out", sites=(example_site,)))
    ops = json.loads((tmp_path / "out" / "ops.json").read_text())["ops"]
    assert ops["quant3p5.matmul"] > 0


def test_stock_xdsl_opt_sees_the_plugin_target(example_site, tmp_path):
    import json

    opt = ok(subprocess.run(
        [*_command("xdsl-opt", "xdsl.tools.xdsl_opt"), str(EXAMPLE), "-t", "histogram"],
        env=plugin_env(example_site), capture_output=True, text=True))
    assert json.loads(opt.stdout)["ops"]["linalg.matmul"] == 2  # no pipeline: float matmuls


# -- broken plugins ------------------------------------------------------------------------


@pytest.mark.parametrize("target, failure", [
    ("failing-not-q35c", "is not a q35c target (a Q35cTarget subclass)"),
    ("failing-import", "failed to load: ImportError: the target's module is gone"),
])
def test_broken_plugin_target_is_one_line_and_writes_nothing(failing_site, tmp_path, target,
                                                             failure):
    out = tmp_path / "out"
    result = q35c(EXAMPLE, "--target", target, "-o", out, sites=(failing_site,))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"q35c: error: target '{target}' (plugin 'q35c_failing_plugin') {failure}"]
    assert not out.exists()
    listing = ok(q35c("targets", sites=(failing_site,)))
    assert re.search(rf"^{target} +\(fails to load: .*{re.escape(failure)}", listing.stdout,
                     re.M), listing.stdout


def test_plugin_redefining_a_target_is_skipped(clashing_site, tmp_path):
    listing = ok(q35c("targets", sites=(clashing_site,)))
    assert ("warning: plugin 'q35c_clashing_plugin' skipped: redefines target 'groq' "
            "(already defined by q35c)") in listing.stderr
    ok(q35c(EXAMPLE, "--target", "groq", "-o", tmp_path / "out", sites=(clashing_site,)))
    assert (tmp_path / "out" / "program.json").exists()
    result = q35c(EXAMPLE, "--target", "nope", sites=(clashing_site,))
    assert result.returncode == 2
    assert "plugin 'q35c_clashing_plugin' redefines target 'groq'" in result.stderr



@pytest.mark.parametrize("pass_name, failure", [
    ("failing-raise", "failed: RuntimeError: the plugin gave up"),
    ("failing-invalid-ir", "produced invalid IR: q35nn.softmax: axis 5 is out of range"),
])
def test_failing_plugin_pass_is_reported_in_one_line_and_writes_nothing(
        failing_site, tmp_path, pass_name, failure):
    out = tmp_path / "out"
    result = q35c(EXAMPLE, "--passes", f"default,{pass_name}", "-o", out, sites=(failing_site,))
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(
        f"q35c: error: pass '{pass_name}' (plugin 'q35c_failing_plugin') {failure}")
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_unimportable_plugin_is_skipped_with_a_warning(example_site, unimportable_site,
                                                        tmp_path):
    sites = (example_site, unimportable_site)
    listing = ok(q35c("passes", sites=sites))
    assert re.search(r"^warning: plugin 'q35c_unimportable_plugin' skipped: failed to load "
                     r"\(ModuleNotFoundError: .*q35c_no_such_dependency", listing.stderr, re.M)
    assert "Traceback" not in listing.stderr
    names = {line.split()[0] for line in listing.stdout.splitlines()}
    assert {"quantize-weights", "canonicalize", "dequantize-weights"} <= names

    ok(q35c(EXAMPLE, "-o", tmp_path / "out", sites=sites))
    assert (tmp_path / "out" / "mlp.mlir").exists()


# -- docs/writing-a-pass.md, docs/writing-a-target.md ----------------------------------------

FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.M | re.S)


def doc_blocks(doc: Path = DOC) -> list[tuple[str, dict[str, str], str]]:
    """(language, {key: value} from the info string, code) of each fenced block, in order."""
    blocks = []
    for lang, info, code in FENCE.findall(doc.read_text()):
        attrs = dict(item.split("=", 1) for item in info.split() if "=" in item)
        blocks.append((lang, attrs, code))
    return blocks


def _without_ssa_names(line: str) -> str:
    return re.sub(r"%[\w.$-]+", "%_", line.strip())


def assert_excerpt(code: str, path: Path) -> None:
    """Every line of `code` occurs in `path`, in the same order (SSA value names aside)."""
    lines = [_without_ssa_names(line) for line in path.read_text().splitlines()]
    position = 0
    for line in code.splitlines():
        if not line.strip() or line.strip() == "...":
            continue
        found = [i for i in range(position, len(lines)) if lines[i] == _without_ssa_names(line)]
        assert found, f"{path}: doc line not found (in order): {line!r}"
        position = found[0] + 1


DOC_FILES = {
    DOC: {"examples/plugin/pyproject.toml", "examples/plugin/q35c_example_plugin/universe.py",
          "examples/plugin/q35c_example_plugin/dequantize_weights.py"},
    TARGET_DOC: {"examples/plugin/q35c_example_plugin/universe.py",
                 "examples/plugin/q35c_example_plugin/histogram.py"},
}


@pytest.mark.parametrize("doc", list(DOC_FILES), ids=lambda p: p.name)
def test_doc_code_is_the_plugin_source(doc):
    blocks = doc_blocks(doc)
    files = {attrs["file"]: code for _, attrs, code in blocks if "file" in attrs}
    assert DOC_FILES[doc] <= set(files)
    for name, code in files.items():
        assert code == (ROOT / name).read_text(), f"docs/{doc.name}: block {name} is stale"
    for _, attrs, code in blocks:
        if "excerpt" in attrs and not attrs["excerpt"].startswith("out/"):
            assert_excerpt(code, ROOT / attrs["excerpt"])


SKIPPED_COMMANDS = re.compile(r"^\s*(pip |python -m pip |pytest|python -m pytest)")


@pytest.mark.parametrize("doc, blocks", [(DOC, 4), (TARGET_DOC, 2)], ids=["pass", "target"])
def test_doc_walkthrough_runs(example_site, tmp_path, doc, blocks):
    """Run the doc's shell and Python blocks in order, in a copy of the examples.

    `pip install` lines are skipped (the plugin is on PYTHONPATH instead), and so are pytest
    command lines; a Python block defining tests is run with pytest.
    """
    shutil.copytree(EXAMPLES, tmp_path / "examples", ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", "Output"))
    env = plugin_env(example_site)
    ran = 0
    for index, (lang, attrs, code) in enumerate(doc_blocks(doc)):
        if "file" in attrs or "excerpt" in attrs or lang not in ("sh", "python"):
            continue
        if lang == "sh":
            script = "\n".join(line for line in code.splitlines()
                               if not SKIPPED_COMMANDS.match(line))
            command = ["bash", "-euo", "pipefail", "-c", script]
        else:
            path = tmp_path / f"test_doc_block_{index}.py"
            path.write_text(code)
            command = ([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)]
                       if re.search(r"^def test_", code, re.M) else [sys.executable, str(path)])
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert result.returncode == 0, (
            f"doc block {index} ({lang}) failed:\n{code}\n--- output ---\n"
            f"{result.stdout}\n{result.stderr}")
        ran += 1
    assert ran >= blocks
    for _, attrs, code in doc_blocks(doc):
        if attrs.get("excerpt", "").startswith("out/"):
            assert_excerpt(code, tmp_path / attrs["excerpt"])
