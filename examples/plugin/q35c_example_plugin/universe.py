"""The plugin's `xdsl.universe` entry point (named in pyproject.toml).

q35c and xdsl-opt import this module at every start, so it holds only lazy factories: the
pass module, and with it numpy and q35c's quantization library, is imported only when the
pass is used (or listed by `q35c passes`); the target module only when `--target histogram`
is asked for (or listed by `q35c targets`).
"""

from xdsl.passes import ModulePass
from xdsl.universe import Universe
from xdsl.utils.target import Target


def _dequantize_weights() -> type[ModulePass]:
    from q35c_example_plugin.dequantize_weights import DequantizeWeightsPass

    return DequantizeWeightsPass


def _histogram() -> type[Target]:
    from q35c_example_plugin.histogram import HistogramTarget

    return HistogramTarget


EXAMPLE_PLUGIN_UNIVERSE = Universe(all_passes={"dequantize-weights": _dequantize_weights},
                                   all_targets={"histogram": _histogram})
