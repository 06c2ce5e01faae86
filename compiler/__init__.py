"""q35c compiler driver, CLI, frontends and the Q3P5 quantization library."""
