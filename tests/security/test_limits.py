"""Abuse cases for resource limits, user errors and plugin containment (docs/security.md).

Every input is generated here (onnx.helper for ONNX, strings for Fortran); each case runs
the real `q35c` in a sandbox under the harness's memory and time limits.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.options import OptionError
from q35c.passes.quantize_weights import QuantizeWeightsPass
from q35c.passes.verify_overflow import VerifyOverflowPass
from q35c.passes.verify_quant_error import VerifyQuantErrorPass
from q35c.targets.groq import MAX_CHIPS, GroqTarget
from q35c.targets.groq.plan import PlanOptions

from .harness import check_ok, check_refused

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


# -- plugins -------------------------------------------------------------------------------

PLUGIN_PASS = """\
import sys

from xdsl.passes import ModulePass
from xdsl.universe import Universe


class Escape(BaseException):
    pass


class Misbehave(ModulePass):
    name = "misbehave"

    def apply(self, ctx, op):
        {body}


UNIVERSE = Universe(all_passes={{"misbehave": lambda: Misbehave}})
"""


def install_plugin(site: Path, source: str, name: str = "evil_plugin") -> dict[str, str]:
    """A plugin module `name` with an `xdsl.universe` entry point `name:UNIVERSE`, installed
    as a bare .dist-info in `site`; returns the environment that makes q35c see it."""
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text(source)
    info = site / f"{name}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[xdsl.universe]\n{name} = {name}:UNIVERSE\n")
    return {"PYTHONPATH": str(site)}


def _mlp(box) -> Path:
    for name in ("mlp.mlir", "mlp.q35w"):
        (box.input_dir / name).write_bytes((EXAMPLES / name).read_bytes())
    return box.input_dir / "mlp.mlir"


@pytest.mark.parametrize("body, why", [
    ("raise Escape('out')", "Escape: out"),
    ("sys.exit(0)", "sys.exit(0)"),
    ("sys.exit('bye')", "sys.exit('bye')"),
    ("raise GeneratorExit()", "GeneratorExit"),
    ("raise RecursionError('deep')", "RecursionError: deep"),
])
def test_plugin_pass_cannot_escape_error_handling(box, tmp_path, body, why):
    env = install_plugin(tmp_path / "site", PLUGIN_PASS.format(body=body))
    line = check_refused(box, [_mlp(box), "--passes", "misbehave", "-o", box.out], env=env,
                         names="pass 'misbehave' (plugin 'evil_plugin') failed")
    assert why in line


def test_plugin_that_exits_on_import_is_skipped_and_named(box, tmp_path):
    env = install_plugin(tmp_path / "site", "import sys\nsys.exit(3)\n")
    check_ok(box, [_mlp(box), "-o", box.out], env=env)  # the rest of q35c still works
    line = check_refused(box, [_mlp(box), "--passes", "misbehave", "-o", box.out], env=env,
                         names="plugin 'evil_plugin' failed to load (SystemExit")
    assert "unknown pass 'misbehave'" in line


def test_plugin_pass_class_that_exits_on_load(box, tmp_path):
    source = PLUGIN_PASS.format(body="pass").replace(
        'lambda: Misbehave', 'lambda: sys.exit(0)')
    env = install_plugin(tmp_path / "site", source)
    check_refused(box, [_mlp(box), "--passes", "misbehave", "-o", box.out], env=env,
                  names="pass 'misbehave' (plugin 'evil_plugin') failed to load: SystemExit")


# -- pass and target options ---------------------------------------------------------------

INTS = st.integers(min_value=-(1 << 70), max_value=1 << 70)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)


def _option_outcome(make) -> str | None:
    """None if `make()` accepts the value, else the OptionError's message."""
    try:
        make()
    except OptionError as err:
        return str(err)
    return None


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(INTS, st.sampled_from([0, 15, 16, 32, 48, 65520, 65536])))
def test_quantize_weights_group_size_range(value):
    message = _option_outcome(lambda: QuantizeWeightsPass(group_size=value))
    valid = 16 <= value <= 65520 and value % 16 == 0
    assert (message is None) == valid
    if not valid:
        assert message == ("--passes quantize-weights: option 'group-size' must be a multiple "
                           f"of 16 in [16, 65520], got {value}")


@settings(max_examples=40, deadline=None)
@given(value=INTS)
def test_quantize_weights_min_elements_range(value):
    message = _option_outcome(lambda: QuantizeWeightsPass(min_elements=value))
    assert (message is None) == (value >= 0)
    assert message is None or "option 'min-elements' must be an integer in [0, inf]" in message


@settings(max_examples=60, deadline=None)
@given(option=st.sampled_from(["arg_range", "input_range"]), value=FLOATS)
def test_verify_quant_error_ranges(option, value):
    message = _option_outcome(lambda: VerifyQuantErrorPass(**{option: value}))
    assert (message is None) == (math.isfinite(value) and value >= 0)
    if message is not None:
        assert f"option '{option.replace('_', '-')}' must be a finite number in [0, inf]" \
            in message


@settings(max_examples=40, deadline=None)
@given(lo=INTS, hi=INTS)
def test_verify_overflow_arg_ranges(lo, hi):
    try:
        VerifyOverflowPass(arg_ranges=f"x={lo}:{hi}")
        accepted = True
    except Q35cError as err:
        accepted = False
        assert "option 'arg-ranges' must be NAME=LO:HI,... with integers LO <= HI" in str(err)
    assert accepted == (lo <= hi)


@settings(max_examples=60, deadline=None)
@given(value=INTS)
def test_groq_target_chips_range(value):
    message = _option_outcome(lambda: GroqTarget(chips=value))
    assert (message is None) == (0 <= value <= MAX_CHIPS)
    if message is not None:
        assert message == (f"--target groq: option 'chips' must be an integer in "
                           f"[0, {MAX_CHIPS}], got {value}")


@settings(max_examples=60, deadline=None)
@given(option=st.sampled_from(["chips", "table_bytes", "granule"]), value=INTS)
def test_groq_plan_options_ranges(option, value):
    message = _option_outcome(lambda: PlanOptions(**{option: value}))
    hi = {"chips": math.inf, "table_bytes": 8, "granule": 1024}[option]
    assert (message is None) == (1 <= value <= hi)
    if message is not None:
        assert f"option '{option.replace('_', '-')}' must be an integer in [1, " in message


@pytest.mark.parametrize("args, text", [
    (["--target", "groq{chips=-3}"], "option 'chips' must be an integer in [0, 16], got -3"),
    (["--passes", "quantize-weights{group-size=7}"],
     "option 'group-size' must be a multiple of 16 in [16, 65520], got 7"),
    (["--passes", 'quantize-weights{layout="q9"}'], "option 'layout' must be one of"),
    (["--passes", "default,verify-quant-error{input-range=-2.0}"],
     "option 'input-range' must be a finite number in [0, inf], got -2.0"),
    (["--passes", 'verify-overflow{arg-ranges="x=5:1"}'], "option 'arg-ranges' must be"),
    (["--keep-float", "(unclosed"], "option 'keep-float' must be a valid regular expression"),
])
def test_bad_options_are_refused_up_front(box, args, text):
    check_refused(box, [_mlp(box), *args, "-o", box.out], names=text)
