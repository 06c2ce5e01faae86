"""Types and kinds of the Fortran checker (semantics.py): `FType`, the supported integer and real
kinds, the kind constants of the intrinsic modules, type promotion, assignability and
values wrapped or converted to a kind."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT_KINDS = (1, 2, 4, 8)
REAL_KINDS = (4, 8)
INTRINSIC_MODULES: dict[str, dict[str, int]] = {
    "iso_fortran_env": {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "real32": 4,
                        "real64": 8},
    "iso_c_binding": {"c_int8_t": 1, "c_int16_t": 2, "c_int32_t": 4, "c_int64_t": 8,
                      "c_int": 4, "c_long": 8, "c_float": 4, "c_double": 8, "c_bool": 1},
    "omp_lib": {},  # no kind constants used; its functions are in INTRINSIC_MODULE_FUNCTIONS
}


@dataclass(frozen=True)
class FType:
    base: str  # integer | real | logical
    kind: int
    rank: int = 0

    def scalar(self) -> FType:
        return FType(self.base, self.kind)

    def with_rank(self, rank: int) -> FType:
        return FType(self.base, self.kind, rank)

    @property
    def numeric(self) -> bool:
        return self.base in ("integer", "real")

    def __str__(self) -> str:
        text = f"{self.base}({self.kind})"
        return text + (f", rank {self.rank}" if self.rank else "")


INTEGER = FType("integer", 4)
REAL = FType("real", 4)
LOGICAL = FType("logical", 4)


def _promote(a: FType, b: FType) -> FType:
    if a.base == "real" and b.base == "real":
        return FType("real", max(a.kind, b.kind))
    if a.base == "real":
        return a.scalar()
    if b.base == "real":
        return b.scalar()
    return FType("integer", max(a.kind, b.kind))


def _assignable(target: FType, value: FType) -> bool:
    if target.base == "logical" or value.base == "logical":
        return target.base == value.base
    return True


def _huge(kind: int) -> int:
    """huge() of integer(kind)."""
    return (1 << (8 * kind - 1)) - 1


def _wrap(value: int, kind: int) -> np.integer:
    bits = 8 * kind
    value &= (1 << bits) - 1
    if value >= 1 << (bits - 1):
        value -= 1 << bits
    return np.dtype(f"int{bits}").type(value)


def _convert(arr: np.ndarray, t: FType) -> np.ndarray:
    if t.base == "logical":
        return arr.astype(bool)
    if t.base == "real":
        return arr.astype(np.float32 if t.kind == 4 else np.float64)
    if arr.dtype.kind == "f":
        arr = np.trunc(arr)
    return arr.astype(np.int64).astype(f"int{8 * t.kind}")


def _fmt_shape(shape) -> str:
    return "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
