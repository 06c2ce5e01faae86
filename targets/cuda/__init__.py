"""The CUDA target: a CUDA C++ project for NVIDIA GPUs (sm_90, plus a PTX fallback).

`write` emits model.cuh (load/run/free API), model.cu (the kernels and a host launcher
that replays the model's launches as a CUDA graph), model.bin (the weight blob: Q3P5
tensors stay packed, laid out for the GPU by blob.py), main.cu (a raw-tensor runner with
--bench, timed by CUDA events) and a Makefile for nvcc. `run` builds them with nvcc
(cached by content hash, as the C target's build) and runs the result on the machine's
GPU; without one it says so. docs/cuda.md describes the kernels.

Pipeline: the native lowering shared with the C target (targets/native), then printer.py.
The kernels are in runtime/q35cu.cuh.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp

from q35c.compiler.weights import WeightStore
from q35c.targets.target import Q35cTarget


@dataclass(frozen=True)
class CudaTarget(Q35cTarget):
    """CUDA sources (model.cu, model.cuh, main.cu, Makefile) and the weight blob model.bin."""

    name = "cuda"

    def pipeline(self, shape_only: bool = False) -> str:
        """Gathers from packed embedding tables read decoded float tables (no CUDA kernel
        for `quant3p5.gather` yet: passes/dequantize_gathers.py)."""
        return "dequantize-gathers"

    def accepted_ops(self) -> frozenset[str]:
        """What the native lowering lowers by itself (`lowered_ops`), and the generic ONNX
        op types with CUDA kernels (onnx.py: elementwise maps and gathers); not the C-only
        kernel families (the other ONNX ops, Fortran kernels' loops)."""
        from q35c.targets.cuda.onnx import accepted_keys
        from q35c.targets.native.lower import lowered_ops

        return (lowered_ops() - {"quant3p5.gather"}) | accepted_keys()

    def write(self, ctx: Context, module: ModuleOp, store: WeightStore, out_dir: Path,
              stem: str) -> None:
        from q35c.targets.cuda.emit import emit

        emitted = emit(module, store, None, stem)
        for name, data in emitted.files.items():
            (out_dir / name).write_bytes(data)
        print(emitted.summary())

    def run(self, ctx: Context, module: ModuleOp, store: WeightStore,
            inputs: dict[str, np.ndarray], entry: str | None) -> dict[str, np.ndarray]:
        from q35c.targets.cuda.build import execute, require_gpu
        from q35c.targets.cuda.emit import emit

        require_gpu()
        return execute(emit(module, store, entry, "model"), inputs)
