"""Names from a model never become code, never leave their folder, never overwrite each
other (docs/security.md, "Names in generated code").

Model input and output names reach model.c/model.h (string literals, comments,
identifiers), the C runner's .raw files, the .npy files of `q35c run`, the Groq listings
and the HTML timeline. Each goes through one function of `q35c.compiler.codegen_names`;
these tests feed hostile names (quotes, backslashes, `*/`, trigraphs, newlines, NUL,
arbitrary Unicode) through the whole path and compile the C with -Werror.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from onnx import TensorProto, helper

from q35c.compiler import codegen_names as cn
from q35c.compiler.driver import Options, compile_file, run_file

from .harness import check_ok, check_refused, run

GCC_FLAGS = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off"]

# Closes the string literal of the output's name in the old model.c, adds a constructor
# that runs before main() and comments out the rest of the line.
CONSTRUCTOR = ('y", 1, 4, 1, model_outputs_0_shape, 4}};\n'
               'static void pwn(void) __attribute__((constructor));\n'
               'static void pwn(void) { FILE *f = fopen("PWNED", "w"); if (f) fclose(f); }\n'
               'const int q35_pad[] = {0, //')
NASTY = ["a\nb", 'q"uote', "back\\slash", "*/ x /*", "??/", "tri??=", "nul\0byte",
         "../../escape", "/abs/path", ".", "..", "", "é", "e\u0301", "\u202e", "\u2028",
         "<script>alert(1)</script>", "</script><!--", "a\\", "x" * 300]


def _model(path: Path, inputs: list[str], outputs: list[str], op: str = "Relu") -> Path:
    """A float32[2,3] model: output k = op(input k) (Add: input k + input k)."""
    nodes = [helper.make_node(op, [i, i] if op == "Add" else [i], [o])
             for i, o in zip(inputs, outputs)]
    graph = helper.make_graph(
        nodes, "names",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in outputs])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _gcc(directory: Path) -> None:
    """Compile the emitted runner as strictly as the C target promises."""
    cc = shutil.which("gcc") or pytest.skip("gcc is not installed")
    result = subprocess.run([cc, *GCC_FLAGS, "main.c", "model.c", "-o", "main", "-lm"],
                            cwd=directory, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _run_both(model: Path, tmp: Path) -> tuple[dict, dict]:
    """Outputs of `q35c run` on the interpreter and on the C target, same seed."""
    interp = run_file(model, {}, tmp / "interp", Options(target="interp"), seed=3)
    c = run_file(model, {}, tmp / "c", Options(target="c"), seed=3)
    return interp, c


@pytest.fixture(autouse=True)
def _private_c_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("Q35C_CACHE_DIR", str(tmp_path / "c-cache"))


# -- the escaping functions -----------------------------------------------------------------

names = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(NASTY)


@settings(max_examples=300, deadline=None)
@given(names)
def test_c_string_holds_exactly_the_utf8_bytes(name):
    literal = cn.c_string(name)
    assert all(" " <= ch <= "~" for ch in literal)
    assert "??" not in literal
    # the same escapes mean the same bytes in Python ('\?' is C's own escape for '?')
    assert ast.literal_eval("b" + literal.replace("\\?", "?")) == name.encode()


@settings(max_examples=300, deadline=None)
@given(names)
def test_c_comment_is_one_inert_line(name):
    text = cn.c_comment(name)
    assert all(" " <= ch <= "~" for ch in text)
    assert "*/" not in text and "/*" not in text and "??" not in text


@settings(max_examples=300, deadline=None)
@given(st.lists(names, max_size=6))
def test_c_identifiers_are_valid_and_unique(names_):
    idents = cn.c_identifiers(names_, "in_")
    assert len(set(idents)) == len(idents)
    for ident in idents:
        assert ident.isidentifier() and ident.isascii() and len(ident) < 80


@settings(max_examples=300, deadline=None)
@given(st.lists(names, max_size=8))
def test_file_stems_stay_in_their_folder_and_never_collide(names_):
    stems = cn.file_stems(names_)
    folded = [unicodedata.normalize("NFC", s).casefold() for s in stems]
    assert len(set(folded)) == len(folded)
    for stem in stems:
        assert stem and "/" not in stem and "\0" not in stem and stem[0] not in ".-"
        assert len(f"{stem}.npy".encode()) <= 255


def test_file_stems_are_deterministic_and_plain_names_unchanged():
    assert cn.file_stems(["a/b", "a_b", "A_B", "logits"]) == ["a_b", "a_b~2", "A_B~3", "logits"]
    assert cn.file_stems(["x" * 300])[0] == cn.file_stems(["x" * 300])[0]
    assert cn.file_stem("x" * 300) != cn.file_stem("x" * 299 + "y")


@settings(max_examples=300, deadline=None)
@given(names)
def test_asm_symbol_and_plain_text_stay_on_one_line(name):
    for text in (cn.asm_symbol(name), cn.plain_text(name)):
        assert "\n" not in text and "\r" not in text and "\u2028" not in text
    assert ";" not in cn.asm_symbol(name).strip('"') or cn.asm_symbol(name).startswith('"')


# -- C: compile hostile names with -Werror, run, compare with the interpreter ---------------

@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(names.filter(bool), min_size=2, max_size=4, unique=True),
       st.sampled_from(["Relu", "Add"]))
def test_hostile_onnx_names_compile_and_match_the_interpreter(tmp_path_factory, names_, op):
    half = len(names_) // 2
    inputs, outputs = names_[:half], names_[half:2 * half]
    tmp = tmp_path_factory.mktemp("names")
    model = _model(tmp / "m.onnx", inputs, outputs, op)
    compile_file(model, tmp / "c-out", Options(target="c"))
    _gcc(tmp / "c-out")
    interp, c = _run_both(model, tmp)
    assert list(interp) == list(c) == outputs
    for name in outputs:
        np.testing.assert_array_equal(interp[name], c[name])
    written = sorted(p.name for p in (tmp / "c").iterdir())
    assert len(written) == len(inputs) + len(outputs)  # generated inputs too, none lost


def test_constructor_injection_through_an_output_name_is_inert(box):
    """The issue's exploit: an output name that ends the literal and adds a constructor."""
    model = _model(box.input_dir / "model.onnx", ["x"], [CONSTRUCTOR])
    result = run(["run", model, "--target", "c", "-o", box.out], box.root)
    assert list(box.root.rglob("PWNED")) == [], "the model's code ran"
    assert result.returncode == 0, result.stderr
    assert "model_outputs_0_shape" in result.stdout  # the name, printed escaped on one line
    assert len(result.stdout.strip().splitlines()) == 1


def test_newline_names_compile(tmp_path):
    model = _model(tmp_path / "m.onnx", ["in\nput"], ["out\r\nput */"])
    compile_file(model, tmp_path / "out", Options(target="c"))
    _gcc(tmp_path / "out")
    source = (tmp_path / "out" / "model.c").read_text()
    assert '{"in\\012put", ' in source and '{"out\\015\\012put */", ' in source
    interp, c = _run_both(model, tmp_path)
    np.testing.assert_array_equal(interp["out\r\nput */"], c["out\r\nput */"])


def test_hostile_model_file_name_is_inert(tmp_path):
    """The file stem names the C API (`<m>_load`) and appears in comments."""
    model = _model(tmp_path / "q35_evil ?? #include <x> \n.onnx", ["x"], ["y"])
    compile_file(model, tmp_path / "out", Options(target="c"))
    _gcc(tmp_path / "out")
    header = (tmp_path / "out" / "model.h").read_text()
    assert "m_q35_evil_____include__x____load(" in header  # not the runtime's q35_ space
    assert "from 'q35_evil \\?\\? #include <x> \\n'. Do not edit." in header


def test_mlir_argument_and_result_names_are_escaped(tmp_path):
    """Names also come from `q35c.name` attributes of a .mlir input."""
    source = tmp_path / "m.mlir"
    source.write_text(
        'func.func @main(%x: tensor<4xf32> {q35c.name = "a\\22b\\0Ac */"}) -> '
        '(tensor<4xf32> {q35c.name = "../../r\\5C"}) {\n'
        '  %y = arith.addf %x, %x : tensor<4xf32>\n'
        '  func.return %y : tensor<4xf32>\n}\n')
    compile_file(source, tmp_path / "out", Options(target="c"))
    _gcc(tmp_path / "out")
    interp, c = _run_both(source, tmp_path)
    np.testing.assert_array_equal(interp["../../r\\"], c["../../r\\"])
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["_.._.._r_.npy", "a_b_c___.npy"]


def test_names_starting_with_a_non_ascii_letter_import(tmp_path):
    """'º' is alphanumeric but no valid xDSL value name: the importer used to crash."""
    model = _model(tmp_path / "m.onnx", ["º", "é1"], ["ª", "y"], "Add")
    interp, c = _run_both(model, tmp_path)
    np.testing.assert_array_equal(interp["ª"], c["ª"])


def test_c_runner_files_stay_in_their_folder(tmp_path):
    """The runner reads IN_DIR/<stem>.raw and writes OUT_DIR/<stem>.raw, never a raw name."""
    model = _model(tmp_path / "m.onnx", ["../../in"], ["../../out"])
    compile_file(model, tmp_path / "out", Options(target="c"))
    runner = tmp_path / "out"
    _gcc(runner)
    subprocess.run(["./main", "model.bin", "--seed", "1", "res"], cwd=runner, check=True)
    assert sorted(p.name for p in (runner / "res").iterdir()) == ["_.._.._in.raw",
                                                                  "_.._.._out.raw"]
    assert not (tmp_path / "in.raw").exists() and not (tmp_path.parent / "out.raw").exists()


# -- q35c run: file names never collide ------------------------------------------------------


def test_colliding_output_names_get_distinct_files(box):
    model = _model(box.input_dir / "m.onnx", ["x", "X_2"], ["a/b", "a_b"])
    result = check_ok(box, ["run", model, "-o", box.out])
    files = sorted(p.name for p in box.out.iterdir())
    assert files == ["X_2.npy", "a_b.npy", "a_b~2.npy", "x.npy"]
    assert "a_b -> " not in result.stdout and f"a/b: float32[2, 3] -> {box.out}/a_b.npy" \
        in result.stdout and f"a_b: float32[2, 3] -> {box.out}/a_b~2.npy" in result.stdout
    note = [line for line in result.stderr.splitlines() if line.startswith("q35c: note:")]
    assert len(note) == 1 and "output 'a_b' -> a_b~2.npy" in note[0]
    a, b = np.load(box.out / "a_b.npy"), np.load(box.out / "a_b~2.npy")
    np.testing.assert_array_equal(a, np.maximum(np.load(box.out / "x.npy"), 0))
    np.testing.assert_array_equal(b, np.maximum(np.load(box.out / "X_2.npy"), 0))


def test_input_and_output_differing_in_case_do_not_overwrite(box):
    """On a case-insensitive file system `Y.npy` and `y.npy` are one file."""
    model = _model(box.input_dir / "m.onnx", ["Y"], ["y"])
    result = check_ok(box, ["run", model, "-o", box.out])
    assert sorted(p.name for p in box.out.iterdir()) == ["Y~2.npy", "y.npy"]
    assert "input 'Y' -> Y~2.npy" in result.stderr


def test_long_names_fit_the_file_system(box):
    model = _model(box.input_dir / "m.onnx", ["i" * 400, "i" * 401], ["o" * 400, "o" * 401])
    check_ok(box, ["run", model, "-o", box.out])
    files = sorted(p.name for p in box.out.iterdir())
    assert len(files) == 4 and all(len(f.encode()) <= 255 for f in files)


def test_two_outputs_with_one_name_are_refused(box):
    source = box.input_dir / "m.mlir"
    source.write_text(
        'func.func @main(%x: tensor<4xf32>) -> (tensor<4xf32> {q35c.name = "y"}, '
        'tensor<4xf32> {q35c.name = "y"}) {\n'
        '  %y = arith.addf %x, %x : tensor<4xf32>\n'
        '  func.return %y, %x : tensor<4xf32>, tensor<4xf32>\n}\n')
    line = check_refused(box, ["run", source, "-o", box.out], names="m.mlir")
    assert "several outputs are named 'y'" in line


# -- Groq: program.s, report.txt and the HTML timeline -------------------------------------

class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.scripts += tag == "script"


def _groq_model(path: Path, weight: str, folded_from: bool = False) -> Path:
    """x[4,64] @ W[64,32] with a hostile initializer name, so the weight reaches the
    listings; input and output names are hostile too. With `folded_from` the initializer
    is `val_3` and the hostile name is in the exporter metadata that names it (as torch
    dynamo's `pkg.onnxscript.optimizer.folded_from`: frontends/onnx/names.py)."""
    rng = np.random.default_rng(0)
    stored = "val_3" if folded_from else weight
    w = helper.make_tensor(stored, TensorProto.FLOAT, [64, 32],
                           rng.standard_normal((64, 32)).astype(np.float32).ravel())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["<b>x</b>", stored], ["</script><script>alert(1)//"])],
        "g", [helper.make_tensor_value_info("<b>x</b>", TensorProto.FLOAT, [4, 64])],
        [helper.make_tensor_value_info("</script><script>alert(1)//", TensorProto.FLOAT,
                                       [4, 32])], [w])
    if folded_from:
        info = helper.make_tensor_value_info(stored, TensorProto.FLOAT, [64, 32])
        helper.set_metadata_props(info, {"pkg.onnxscript.optimizer.folded_from":
                                         repr([weight])})
        graph.value_info.append(info)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


WEIGHT = '<script>alert(1)</script>\n.unit EVIL ; "q" </title><!--'


@pytest.mark.parametrize("folded_from", [False, True], ids=["initializer", "metadata"])
def test_groq_listings_and_timeline_escape_names(box, folded_from):
    model = _groq_model(box.input_dir / "m.onnx", WEIGHT, folded_from)
    check_ok(box, [model, "--target", "groq", "-o", box.out])
    listing = (box.out / "program.s").read_text()
    units = [line for line in listing.splitlines() if line.startswith(".unit")]
    assert units and all(line.split()[1].startswith(("MXM", "MEM", "VXM", "SXM", "C2C"))
                         for line in units)
    assert all(line.startswith((";", ".unit ", "  ")) or not line
               for line in listing.splitlines())
    assert '("<script>alert(1)</script>\\012.unit EVIL ; \\"q\\" </title><!--.q3p5:t0:c0")' \
        in listing
    report = (box.out / "report.txt").read_text()
    assert not any(line.startswith(".unit") for line in report.splitlines())
    assert "<script>alert(1)</script>\\n.unit" in report
    result = run(["report", box.out], box.root)
    assert result.returncode == 0, result.stderr
    page = (box.out / "timeline.html").read_text()
    parser = _Tags()
    parser.feed(page)
    assert parser.scripts == 1  # the page's own
    assert "alert(1)</script>" not in page and "<!--" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# -- weight names derived from exporter metadata (frontends/onnx/names.py) -----------------

@pytest.mark.parametrize("weight", [WEIGHT, CONSTRUCTOR, "*/ ??/ é\u202e a\\"])
def test_weight_names_from_metadata_compile_and_match_the_interpreter(tmp_path, weight):
    """A torch-style `val_3` named by hostile `folded_from` metadata: the weight is stored
    under the hostile name (kept as it is) and the C it reaches compiles with -Werror."""
    from q35c.compiler.driver import compile_to_module
    from q35c.dialects import quant3p5

    model = _groq_model(tmp_path / "m.onnx", weight, folded_from=True)
    _, module = compile_to_module(model, Options(passes="quantize-weights"))
    names = [(op.weight_name.data, op.attributes["q35c.onnx_name"].data)
             for op in module.walk() if isinstance(op, quant3p5.WeightOp)]
    assert names == [(f"{weight}.q3p5", "val_3")]
    compile_file(model, tmp_path / "out", Options(target="c"))
    _gcc(tmp_path / "out")
    interp, c = _run_both(model, tmp_path)
    out = "</script><script>alert(1)//"  # the C kernels sum in another order
    np.testing.assert_allclose(interp[out], c[out], rtol=1e-5, atol=1e-5)
