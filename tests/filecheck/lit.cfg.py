"""lit configuration for q35c's FileCheck tests (xDSL style: RUN lines in .mlir files).

Tools come from the Python environment running lit: `xdsl-opt` (stock, which sees q35c's
dialects and passes through the xdsl.universe entry point), `q35c` and `filecheck`.
"""

import os
import sys

import lit.formats

config.name = "q35c"
config.test_format = lit.formats.ShTest(preamble_commands=[])
config.suffixes = [".mlir"]
config.test_source_root = os.path.dirname(__file__)
config.excludes = ["Inputs", "lit.cfg.py"]
bin_dir = os.path.dirname(sys.executable)
config.environment["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
config.substitutions.append(("%inputs", os.path.join(config.test_source_root, "Inputs")))
