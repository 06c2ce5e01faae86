"""lit configuration for the example plugin's FileCheck tests.

Run with the plugin installed: `lit -v examples/plugin/tests/filecheck`. `q35c`, `xdsl-opt`
and `filecheck` come from the Python environment running lit, and PYTHONPATH is passed on
so that a plugin installed with `pip install --target DIR` (DIR on PYTHONPATH) is found.
"""

import os
import sys
import tempfile

import lit.formats

config.name = "q35c-example-plugin"
config.test_format = lit.formats.ShTest(preamble_commands=[])
config.suffixes = [".mlir"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(tempfile.gettempdir(), "q35c-example-plugin-lit")
bin_dir = os.path.dirname(sys.executable)
config.environment["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
if "PYTHONPATH" in os.environ:
    config.environment["PYTHONPATH"] = os.environ["PYTHONPATH"]
