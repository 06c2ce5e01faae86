"""gfortran as the oracle for the Fortran frontend.

For one procedure of a corpus file: random inputs in the declared shapes, a generated
Fortran driver program that reads them as raw stream files, calls the procedure and writes
every intent(out)/intent(inout) argument (and a function result) back; the same inputs go
through q35c's interpreter. Arrays cross as raw bytes in Fortran (column-major) order.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from q35c.compiler.frontends.fortran import ast, compile_source
from q35c.compiler.frontends.fortran.diagnostics import Diagnostics
from q35c.compiler.frontends.fortran.parser import parse
from q35c.compiler.frontends.fortran.semantics import FType, ProcInfo, check
from q35c.compiler.weights import WeightStore
from q35c.semantics import run_module
from q35c.targets.c.loops import run as run_c

GFORTRAN_FLAGS = ["-O1", "-fopenmp", "-fwrapv", "-ffp-contract=off", "-ffree-line-length-none",
                  "-fno-range-check"]


def gfortran() -> str | None:
    return shutil.which("gfortran")


def dtype_of(t: FType) -> np.dtype:
    if t.base == "integer":
        return np.dtype(f"int{8 * t.kind}")
    if t.base == "real":
        return np.dtype(np.float32 if t.kind == 4 else np.float64)
    raise ValueError(f"{t} arguments are not supported by the oracle")


def fortran_type(t: FType) -> str:
    return f"{t.base}(kind={t.kind})"


@dataclass
class Case:
    file: str
    entry: str
    scalars: dict[str, object]
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Integer inputs drawn uniformly from [lo, hi]; real inputs are N(0,1) times hi."""
    exact: bool = True
    """Integer kernels: identical results; real32 kernels: <= max_ulp."""
    max_ulp: int = 2
    raise_idioms: bool = False
    extents: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Shapes of allocatable components of derived-type dummies (`"p%w": (4, 3)`): the
    driver allocates them, q35c gets them as arrays of that run-time shape."""


def _eval(expr: ast.Expr, values: dict[str, int], consts) -> int:
    if isinstance(expr, ast.IntLit):
        return expr.value
    if isinstance(expr, ast.Designator):
        name = expr.name
        if name in values:
            return int(values[name])
        return int(consts(name))
    if isinstance(expr, ast.BinOp):
        a, b = _eval(expr.lhs, values, consts), _eval(expr.rhs, values, consts)
        if expr.op == "/":
            return int(a / b)
        return {"+": a + b, "-": a - b, "*": a * b}[expr.op]
    raise ValueError(f"cannot evaluate the bound {expr}")


def shapes(info: ProcInfo, scalars: dict[str, object],
           extents: dict[str, tuple[int, ...]] | None = None) -> dict[str, tuple[int, ...]]:
    values = {k.lower(): v for k, v in scalars.items()}
    extents = {k.lower(): v for k, v in (extents or {}).items()}

    def consts(name):
        sym = info.scope.lookup(name)
        return sym.value

    out = {}
    for sym in info.args:
        if not sym.rank:
            out[sym.name] = ()
            continue
        if sym.allocatable:
            out[sym.name] = tuple(extents[sym.name])
            continue
        dims = []
        for d in sym.dims:
            lo = _eval(d.lower, values, consts) if d.lower is not None else 1
            dims.append(_eval(d.upper, values, consts) - lo + 1)
        out[sym.name] = tuple(dims)
    if info.result is not None:  # an array result (a trailing argument in the IR)
        out["result_"] = tuple(
            _eval(d.upper, values, consts) - (_eval(d.lower, values, consts) if d.lower
                                              is not None else 1) + 1
            for d in info.result.dims or [])
    return out


def procedure(path: Path, entry: str) -> ProcInfo:
    source = path.read_text()
    checked = check(parse(source, str(path)), Diagnostics(str(path), source))
    return next(p for p in checked.procedures if p.proc.name == entry)


def random_inputs(info: ProcInfo, case: Case, rng: np.random.Generator
                  ) -> dict[str, np.ndarray]:
    dims = shapes(info, case.scalars, case.extents)
    inputs = {}
    for sym in info.args:
        spelling = sym.spelling
        if sym.name in {k.lower() for k in case.scalars}:
            value = next(v for k, v in case.scalars.items() if k.lower() == sym.name)
            inputs[spelling] = np.asarray(value, dtype=dtype_of(sym.type))
            continue
        if sym.intent == "out":
            continue
        dtype = dtype_of(sym.type)
        lo, hi = case.ranges.get(spelling, (None, None))
        if dtype.kind == "i":
            info_ = np.iinfo(dtype)
            lo = info_.min if lo is None else lo
            hi = info_.max if hi is None else hi
            inputs[spelling] = rng.integers(lo, hi, size=dims[sym.name], endpoint=True,
                                            dtype=dtype)
        else:
            scale = 1.0 if hi is None else hi
            offset = 0.0 if lo is None else lo
            inputs[spelling] = (offset + scale * rng.standard_normal(dims[sym.name])
                                ).astype(dtype)
    return inputs


def driver_source(module: str | None, info: ProcInfo, dims: dict[str, tuple[int, ...]]
                  ) -> str:
    """A program that reads in_<name>.bin, calls the procedure and writes out_<name>.bin.

    A derived-type dummy is one driver variable; its components (separate arguments in
    q35c's IR, named `p%c`) are read and written one by one."""
    lines = ["program driver"]
    if module:
        lines.append(f"  use {module}")
    lines += ["  implicit none", "  integer :: u"]
    actuals: list[str] = []
    for sym in info.args:
        if sym.parent is not None:
            if f"v_{sym.parent.name}" not in actuals:
                lines.append(f"  type({sym.parent.derived.spelling}) :: v_{sym.parent.name}")
                actuals.append(f"v_{sym.parent.name}")
            continue
        shape = dims[sym.name]
        decl = f"  {fortran_type(sym.type)}"
        if shape:
            decl += f", allocatable :: v_{sym.name}({', '.join(':' for _ in shape)})"
        else:
            decl += f" :: v_{sym.name}"
        lines.append(decl)
        actuals.append(f"v_{sym.name}")
    if info.result is not None and info.result.rank:
        lines.append(f"  {fortran_type(info.result.type)}, allocatable :: "
                     f"v_result_({', '.join(':' for _ in range(info.result.rank))})")
    elif info.result is not None:
        lines.append(f"  {fortran_type(info.result.type)} :: v_result_")
    for sym in info.args:
        shape = dims[sym.name]
        if shape and (sym.parent is None or sym.allocatable):
            lines.append(f"  allocate(v_{sym.name}({', '.join(map(str, shape))}))")
        if sym.intent != "out":
            lines += [f"  open(newunit=u, file='in_{sym.name}.bin', access='stream', "
                      "form='unformatted', status='old')",
                      f"  read(u) v_{sym.name}", "  close(u)"]
        else:
            lines.append(f"  v_{sym.name} = 0")
    name = info.proc.name
    if info.result is not None:
        lines.append(f"  v_result_ = {name}({', '.join(actuals)})")
    else:
        lines.append(f"  call {name}({', '.join(actuals)})")
    outs = [s.name for s in info.args if s.intent in ("out", "inout") or
            (s.intent is None and not s.value_attr)]
    if info.result is not None:
        outs.append("result_")
    for out in outs:
        lines += [f"  open(newunit=u, file='out_{out}.bin', access='stream', "
                  "form='unformatted', status='replace')",
                  f"  write(u) v_{out}", "  close(u)"]
    lines.append("end program driver")
    return "\n".join(lines) + "\n"


def run_gfortran(path: Path, info: ProcInfo, case: Case, inputs: dict[str, np.ndarray],
                 workdir: Path) -> dict[str, np.ndarray]:
    dims = shapes(info, case.scalars, case.extents)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "driver.f90").write_text(driver_source(info.proc.module, info, dims))
    shutil.copy(path, workdir / path.name)
    subprocess.run([gfortran(), *GFORTRAN_FLAGS, "-o", "driver", path.name, "driver.f90"],
                   cwd=workdir, check=True, capture_output=True, text=True)
    by_name = {s.name: s for s in info.args}
    for spelling, value in inputs.items():
        (workdir / f"in_{spelling.lower()}.bin").write_bytes(
            np.asarray(value).tobytes(order="F"))
    subprocess.run(["./driver"], cwd=workdir, check=True, capture_output=True, timeout=60)
    outputs = {}
    for out in workdir.glob("out_*.bin"):
        name = out.stem[4:]
        if name == "result_":
            sym_type, shape, key = info.result.type, dims["result_"], info.result.spelling
            if info.result.name == info.proc.name:
                key = info.proc.spelling
        else:
            sym = by_name[name]
            sym_type, shape, key = sym.type, dims[name], sym.spelling
        data = np.frombuffer(out.read_bytes(), dtype=dtype_of(sym_type))
        outputs[key] = data.reshape(shape, order="F") if shape else data.reshape(())
    return outputs


def run_q35c(path: Path, case: Case, inputs: dict[str, np.ndarray], target: str = "interp"):
    """The procedure run by q35c's interpreter, or compiled to C and run (`target="c"`)."""
    module = compile_source(path.read_text(), str(path), raise_idioms=case.raise_idioms)
    if target == "c":
        return run_c(module, inputs, case.entry)
    return run_module(module, WeightStore(), inputs, case.entry)


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| in units in the last place of their float type (+0 and -0 are 0 apart)."""
    b = np.asarray(b)
    a = np.asarray(a, dtype=b.dtype)
    bits = np.int32 if b.dtype == np.float32 else np.int64
    sign = np.iinfo(bits).max

    def ordered(x):
        i = x.view(bits).astype(object if bits is np.int64 else np.int64)
        return np.where(i < 0, -(i & sign), i)

    return np.abs(ordered(a) - ordered(b)).astype(np.float64)
