"""q35c code-generation targets, looked up lazily by name.

`mlir` writes the final IR (generic syntax, readable by upstream MLIR tools) and its weight
store; `interp` runs the reference interpreter; `c` writes C99 sources and runs them
(targets/c); `groq` writes a statically scheduled TSP program and simulates it
(targets/groq). The targets named in PLANNED are not implemented yet and are reported as
such.
"""

from collections.abc import Callable

from q35c.targets.target import Q35cTarget


def _mlir() -> type[Q35cTarget]:
    from q35c.targets.mlir import MLIRTarget

    return MLIRTarget


def _c() -> type[Q35cTarget]:
    from q35c.targets.c import CTarget

    return CTarget


def _groq() -> type[Q35cTarget]:
    from q35c.targets.groq import GroqTarget

    return GroqTarget


def _interp() -> type[Q35cTarget]:
    from q35c.targets.interp import InterpTarget

    return InterpTarget


TARGETS: dict[str, Callable[[], type[Q35cTarget]]] = {"mlir": _mlir, "interp": _interp,
                                                       "c": _c, "groq": _groq}
PLANNED = ("cerebras", "cuda")
