"""q35c's `xdsl.universe` entry point: its dialects and passes, as lazy factories.

Registered in pyproject.toml, so stock `xdsl-opt` sees q35c's dialects and passes, and q35c
loads its built-ins through the same mechanism as third-party plugins. Imports happen only
when a factory is called, so listing the universe costs nothing at start-up.
"""

from collections.abc import Callable

from xdsl.ir import Dialect
from xdsl.passes import ModulePass
from xdsl.universe import Universe


def _quant3p5() -> Dialect:
    from q35c.dialects.quant3p5 import Quant3p5

    return Quant3p5


def _q35nn() -> Dialect:
    from q35c.dialects.q35nn import Q35nn

    return Q35nn


def _externalize_constants() -> type[ModulePass]:
    from q35c.passes.externalize_constants import ExternalizeConstantsPass

    return ExternalizeConstantsPass


def _quantize_weights() -> type[ModulePass]:
    from q35c.passes.quantize_weights import QuantizeWeightsPass

    return QuantizeWeightsPass


def _int8_activations() -> type[ModulePass]:
    from q35c.passes.int8_activations import Int8ActivationsPass

    return Int8ActivationsPass


DIALECTS: dict[str, Callable[[], Dialect]] = {"quant3p5": _quant3p5, "q35nn": _q35nn}
PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    "externalize-constants": _externalize_constants,
    "quantize-weights": _quantize_weights,
    "int8-activations": _int8_activations,
}

Q35C_UNIVERSE = Universe(all_dialects=DIALECTS, all_passes=PASSES)
