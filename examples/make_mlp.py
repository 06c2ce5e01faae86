"""Write examples/mlp.q35w, the float weights of examples/mlp.mlir, from a fixed seed.

    python examples/make_mlp.py

The file is committed; this script documents where it came from and rewrites it
byte-identically.
"""

from pathlib import Path

import numpy as np

from q35c.compiler.weights import WeightStore


def main() -> None:
    rng = np.random.default_rng(35)
    store = WeightStore()
    store["norm.weight"] = (1.0 + 0.1 * rng.standard_normal(128)).astype(np.float32)
    store["fc1.weight"] = (rng.standard_normal((128, 64)) / np.sqrt(128)).astype(np.float32)
    store["fc1.bias"] = (0.1 * rng.standard_normal(64)).astype(np.float32)
    store["fc2.weight"] = (rng.standard_normal((64, 32)) / np.sqrt(64)).astype(np.float32)
    store.save(Path(__file__).with_name("mlp.q35w"))


if __name__ == "__main__":
    main()
