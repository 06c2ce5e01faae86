"""`random_number` and `random_seed` in the IR generator (irgen.py): q35c's own deterministic
generator, computed by the generated IR itself.

The generator is MINSTD (Park and Miller's multiplicative congruential generator with the
revised multiplier 48271, modulus 2^31 - 1, as C++'s `std::minstd_rand`): a state s in
[1, 2^31 - 2] becomes s * 48271 mod (2^31 - 1), computed in 64-bit integers (the product
stays below 2^47, so verify-overflow proves it), and the new state gives the number:
real32 `((s - 1) >> 7) * 2^-24` (24 random bits), real64 `(s - 1) * 2^-31` (31 bits), both in
[0, 1). The state is one mutable `memref.global` (`q35c_random_state`, first value
DEFAULT_SEED) shared by every procedure of the module: a run starts from it, so results are
the same on every run and target. It is not gfortran's generator (xoshiro256**) and gives
different numbers; a kernel's results can be compared with gfortran's only where they do
not depend on the values drawn.
"""

from __future__ import annotations

from xdsl.dialects import arith, memref
from xdsl.dialects.builtin import (
    DenseIntOrFPElementsAttr,
    MemRefType,
    StringAttr,
    TensorType,
    f32,
    i32,
    i64,
)
from xdsl.ir import SSAValue

from . import ast
from .irgen_common import INDEX, mlir_type

MINSTD_MULTIPLIER = 48271
MINSTD_MODULUS = 2**31 - 1
DEFAULT_SEED = 1
"""The state of a fresh run, and after `call random_seed()` (gfortran instead draws a seed
from the operating system there)."""
STATE_NAME = "q35c_random_state"
STATE_TYPE = MemRefType(i32, [1])


class RandomGen:
    """IRGen's random-number subroutines (a mixin of `IRGen`)."""

    def random_state(self) -> SSAValue:
        """The generator's state cell (the global is added to the module on first use)."""
        name = self.globals.get("random")
        if name is None:
            taken = set(self.globals.values())
            name, k = STATE_NAME, 0
            while name in taken:
                k += 1
                name = f"{STATE_NAME}_{k}"
            dense = DenseIntOrFPElementsAttr.from_list(TensorType(i32, [1]), [DEFAULT_SEED])
            op = memref.GlobalOp.get(StringAttr(name), STATE_TYPE, dense)  # not constant
            self.module.body.block.insert_op_before(op, self.module.body.block.first_op)
            self.globals["random"] = name
        return self.emit(memref.GetGlobalOp(name, STATE_TYPE))

    def set_random_state(self, state: SSAValue) -> None:
        self.emit(memref.StoreOp.get(state, self.random_state(), [self.const_int(0, INDEX)]))

    def random_next(self) -> SSAValue:
        """Advance the generator; the new state (i32 in [1, 2^31 - 2])."""
        ref = self.random_state()
        zero = self.const_int(0, INDEX)
        state = self.emit(arith.ExtSIOp(self.emit(memref.LoadOp.get(ref, [zero])), i64))
        product = self.emit(arith.MuliOp(state, self.const_int(MINSTD_MULTIPLIER, i64)))
        wide = self.emit(arith.RemSIOp(product, self.const_int(MINSTD_MODULUS, i64)))
        new = self.emit(arith.TruncIOp(wide, i32))
        self.emit(memref.StoreOp.get(new, ref, [zero]))
        return new

    def random_value(self, element) -> SSAValue:
        """The next number in [0, 1) of real type `element` (f32 or f64)."""
        offset = self.emit(arith.SubiOp(self.random_next(), self.const_int(1, i32)))
        if element == f32:
            bits = self.emit(arith.ShRUIOp(offset, self.const_int(7, i32)))
            scale = 2.0**-24
        else:
            bits, scale = offset, 2.0**-31
        real = self.emit(arith.SIToFPOp(bits, element))
        return self.emit(arith.MulfOp(real, self.const_float(scale, element)))

    def stmt_random_number(self, callee: ast.Designator) -> None:
        harvest = _arguments(callee)["harvest"]
        element = mlir_type(harvest.type.scalar())
        if not harvest.type.rank:
            self.store(harvest, self.random_value(element))
            return
        var = self.var(harvest)
        self.loop_nest(var.extents,
                       lambda ivs: self.store(harvest, self.random_value(element), ivs))

    def stmt_random_seed(self, callee: ast.Designator) -> None:
        args = _arguments(callee)
        zero = self.const_int(0, INDEX)
        if "size" in args:
            target = args["size"]
            self.store(target, self.const_int(1, mlir_type(target.type)))
        elif "put" in args:
            seed = self.var(args["put"])
            value = self.emit(memref.LoadOp.get(seed.value, [zero]))
            value = self.emit(arith.ExtSIOp(value, i64))
            span = self.const_int(MINSTD_MODULUS - 1, i64)
            rem = self.emit(arith.RemSIOp(value, span))
            negative = self.emit(arith.CmpiOp(rem, self.const_int(0, i64), "slt"))
            rem = self.emit(arith.SelectOp(negative, self.emit(arith.AddiOp(rem, span)), rem))
            state = self.emit(arith.AddiOp(rem, self.const_int(1, i64)))
            self.set_random_state(self.emit(arith.TruncIOp(state, i32)))
        elif "get" in args:
            target = self.var(args["get"])
            state = self.emit(memref.LoadOp.get(self.random_state(), [zero]))
            self.emit(memref.StoreOp.get(state, target.value, [zero]))
        else:
            self.set_random_state(self.const_int(DEFAULT_SEED, i32))


def _arguments(callee: ast.Designator) -> dict[str, ast.Expr]:
    """The checked arguments by keyword (semantics_intrinsics.random_subroutine names the
    positional ones)."""
    out = {}
    for a in callee.parts[0].args or []:
        if isinstance(a, ast.KeywordArg):
            out[a.name] = a.value
        else:
            out["harvest" if callee.name == "random_number" else "size"] = a
    return out
