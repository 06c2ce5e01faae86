"""An example q35c plugin: the `dequantize-weights` pass, registered in universe.py."""
