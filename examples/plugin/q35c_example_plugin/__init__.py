"""An example q35c plugin: the `dequantize-weights` pass and the `histogram` target,
registered in universe.py."""
