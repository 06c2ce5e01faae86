"""q35c's `xdsl.universe` entry point: its dialects, passes and targets, as lazy factories.

Registered in pyproject.toml, so stock `xdsl-opt` sees q35c's dialects and passes, and q35c
loads its built-ins through the same mechanism as third-party plugins. Imports happen only
when a factory is called, so listing the universe costs nothing at start-up.
"""

import importlib
from collections.abc import Callable

from xdsl.ir import Dialect
from xdsl.passes import ModulePass
from xdsl.universe import Universe
from xdsl.utils.target import Target


def _quant3p5() -> Dialect:
    from q35c.dialects.quant3p5 import Quant3p5

    return Quant3p5


def _q35nn() -> Dialect:
    from q35c.dialects.q35nn import Q35nn

    return Q35nn


def _groq() -> Dialect:
    from q35c.dialects.groq import Groq

    return Groq


def _pass(module: str, cls: str) -> Callable[[], type[ModulePass]]:
    """A factory that imports `q35c.passes.<module>` only when the pass is asked for."""

    def factory() -> type[ModulePass]:
        return getattr(importlib.import_module(f"q35c.passes.{module}"), cls)

    return factory


DIALECTS: dict[str, Callable[[], Dialect]] = {"quant3p5": _quant3p5, "q35nn": _q35nn,
                                              "groq": _groq}
PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    "externalize-constants": _pass("externalize_constants", "ExternalizeConstantsPass"),
    "quantize-weights": _pass("quantize_weights", "QuantizeWeightsPass"),
    "int8-activations": _pass("int8_activations", "Int8ActivationsPass"),
    "fuse-dequant-matmul": _pass("fuse_dequant_matmul", "FuseDequantMatmulPass"),
    "fuse-matmul-bias-act": _pass("fuse_matmul_epilogue", "FuseMatmulBiasActPass"),
    "fuse-residual": _pass("fuse_residual", "FuseResidualPass"),
    "fuse-swiglu": _pass("fuse_swiglu", "FuseSwigluPass"),
    "fuse-gelu": _pass("fuse_gelu", "FuseGeluPass"),
    "fuse-norms": _pass("fuse_norms", "FuseNormsPass"),
    "fuse-attention": _pass("fuse_attention", "FuseAttentionPass"),
    "drop-nan-guards": _pass("drop_nan_guards", "DropNanGuardsPass"),
    "unfuse-ops": _pass("unfuse_ops", "UnfuseOpsPass"),
    "dequantize-gathers": _pass("dequantize_gathers", "DequantizeGathersPass"),
    "verify-overflow": _pass("verify_overflow", "VerifyOverflowPass"),
    "verify-quant-error": _pass("verify_quant_error", "VerifyQuantErrorPass"),
    "raise-fortran-tensors": _pass("raise_fortran_tensors", "RaiseFortranTensorsPass"),
}



def _target(module: str, cls: str) -> Callable[[], type[Target]]:
    """A factory that imports `q35c.targets.<module>` only when the target is asked for."""

    def factory() -> type[Target]:
        return getattr(importlib.import_module(f"q35c.targets.{module}"), cls)

    return factory


TARGETS: dict[str, Callable[[], type[Target]]] = {
    "mlir": _target("mlir", "MLIRTarget"),
    "interp": _target("interp", "InterpTarget"),
    "c": _target("c", "CTarget"),
    "cuda": _target("cuda", "CudaTarget"),
    "groq": _target("groq", "GroqTarget"),
    "cerebras": _target("cerebras", "CerebrasTarget"),
}
"""q35c's code-generation targets (`Q35cTarget` subclasses), by `--target` name."""
PLANNED_TARGETS: dict[str, str] = {}
"""Targets that are planned but not written yet: `--target` names them as such."""
XDSL_TARGET_NAMES = ("mlir",)
"""Names of q35c targets that xDSL's own universe already uses for a target of its own.
A universe may not redefine a name (xdsl-opt's `Universe.get_multiverse` fails on
duplicates), so these stay out of Q35C_UNIVERSE; q35c's registry adds them from TARGETS,
shadowing xDSL's text targets, which `--target` does not offer."""

Q35C_UNIVERSE = Universe(
    all_dialects=DIALECTS, all_passes=PASSES,
    all_targets={name: f for name, f in TARGETS.items() if name not in XDSL_TARGET_NAMES})
