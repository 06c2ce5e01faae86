"""The plugin's `xdsl.universe` entry point (named in pyproject.toml).

q35c and xdsl-opt import this module at every start, so it holds only lazy factories: the
pass module, and with it numpy and q35c's quantization library, is imported only when the
pass is used (or listed by `q35c passes`).
"""

from xdsl.passes import ModulePass
from xdsl.universe import Universe


def _dequantize_weights() -> type[ModulePass]:
    from q35c_example_plugin.dequantize_weights import DequantizeWeightsPass

    return DequantizeWeightsPass


EXAMPLE_PLUGIN_UNIVERSE = Universe(all_passes={"dequantize-weights": _dequantize_weights})
