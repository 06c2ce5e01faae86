"""q35c code-generation targets; each implements `Q35cTarget` (targets/target.py).

`mlir` writes the final IR (generic syntax, readable by upstream MLIR tools) and its weight
store; `interp` runs the reference interpreter; `c` writes C99 sources and runs them
(targets/c); `groq` writes a statically scheduled TSP program and simulates it
(targets/groq). They are registered, lazily, in q35c's `xdsl.universe` entry point
(compiler/universe.py), like plugin targets; `q35c targets` lists them.
"""

COMPILE_TARGET = "mlir"
"""The target of `q35c INPUT` without --target."""
RUN_TARGET = "interp"
"""The target of `q35c run INPUT` without --target."""
