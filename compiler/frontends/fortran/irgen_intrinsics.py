"""Intrinsic procedures of the IR generator (irgen.py): elemental intrinsics, shifts,
reductions (`sum`, `dot_product`, ...) accumulated in array element order."""

from __future__ import annotations

import numpy as np
from xdsl.dialects import arith, math as xmath, scf
from xdsl.ir import SSAValue

from . import ast
from .irgen_common import INDEX, mlir_type
from .semantics import FType

SEQUENTIAL_OMP_VALUES = {"omp_get_thread_num": 0, "omp_get_num_threads": 1,
                         "omp_get_max_threads": 1, "omp_get_wtime": 0.0}
"""omp_lib's functions as q35c defines them (docs/fortran.md, OpenMP): the values of a
sequential run, and a clock that reads 0.0 (runs are deterministic; there is no time)."""


class IntrinsicGen:
    """IRGen's intrinsic calls (a mixin of `IRGen`)."""

    def intrinsic(self, d: ast.Designator, ivs) -> SSAValue:
        part = d.parts[0]
        name = part.name
        t = d.type
        pos = [a for a in part.args if not isinstance(a, ast.KeywordArg)]

        def arg(i: int) -> SSAValue:
            a = pos[i]
            return self.expr(a, ivs if a.type.rank else None)

        if name in ("int", "real", "dble"):
            return self.convert(arg(0), pos[0].type, t)
        if name == "allocated":  # known at compile time: see IRGen.allocation_status
            return self.const_int(int(self.allocation_status(pos[0])), mlir_type(t))
        if name in SEQUENTIAL_OMP_VALUES:  # omp_lib as one thread runs it; no clock
            value = SEQUENTIAL_OMP_VALUES[name]
            if t.base == "real":
                return self.const_float(value, mlir_type(t))
            return self.const_int(value, mlir_type(t))
        if name == "nint":
            r = self.emit(xmath.RoundOp(arg(0)))
            return self.convert(r, pos[0].type, t)
        if name == "abs":
            v = arg(0)
            return self.emit(xmath.AbsFOp(v) if t.base == "real" else xmath.AbsIOp(v))
        if name in ("sqrt", "exp", "log", "tanh", "sin", "cos"):
            cls = {"sqrt": xmath.SqrtOp, "exp": xmath.ExpOp, "log": xmath.LogOp,
                   "tanh": xmath.TanhOp, "sin": xmath.SinOp, "cos": xmath.CosOp}[name]
            return self.emit(cls(arg(0)))
        if name in ("min", "max"):
            acc = arg(0)
            for i in range(1, len(pos)):
                b = arg(i)
                if t.base == "real":
                    # gfortran: max(a, b) = b > a ? b : a (a NaN-free select, in order)
                    pred = "ogt" if name == "max" else "olt"
                    acc = self.emit(arith.SelectOp(self.emit(arith.CmpfOp(b, acc, pred)), b, acc))
                else:
                    cls = arith.MaxSIOp if name == "max" else arith.MinSIOp
                    acc = self.emit(cls(acc, b))
            return acc
        if name == "merge":
            return self.emit(arith.SelectOp(arg(2), arg(0), arg(1)))
        if name == "mod":
            return self.emit(arith.RemSIOp(arg(0), arg(1)))
        if name in ("iand", "ior", "ieor"):
            cls = {"iand": arith.AndIOp, "ior": arith.OrIOp, "ieor": arith.XOrIOp}[name]
            return self.emit(cls(arg(0), arg(1)))
        if name == "not":
            return self.emit(arith.XOrIOp(arg(0), self.const_int(-1, mlir_type(t))))
        if name in ("shiftl", "shiftr", "ishft"):
            return self.shift(name, arg(0), pos[1], t, ivs)
        if name == "ibits":
            ty = mlir_type(t)
            p = self.convert(arg(1), pos[1].type, t)
            n = self.convert(arg(2), pos[2].type, t)
            shifted = self.emit(arith.ShRUIOp(arg(0), p))
            ones = self.const_int(-1, ty)
            mask = self.emit(arith.XOrIOp(self.emit(arith.ShLIOp(ones, n)), ones))
            bits = 8 * t.kind
            full = self.emit(arith.CmpiOp(n, self.const_int(bits, ty), "sge"))
            mask = self.emit(arith.SelectOp(full, ones, mask))
            return self.emit(arith.AndIOp(shifted, mask))
        if name in ("sum", "product", "maxval", "minval", "count", "any", "all"):
            return self.reduce(d, ivs)
        if name == "dot_product":
            return self.dot(pos[0], pos[1], t)
        if name in ("size", "lbound", "ubound"):
            var = self.array_of(pos[0])
            if len(pos) == 1:
                total = None
                for e in var.extents:
                    v = self.index(e)
                    total = v if total is None else self.emit(arith.MuliOp(total, v))
                return self.emit(arith.IndexCastOp(total, mlir_type(t)))
            dim = int(self.fold(pos[1])) - 1
            lb = self.index(var.lbounds[dim])
            if name == "lbound":
                v = lb
            elif name == "size":
                v = self.index(var.extents[dim])
            else:
                v = self.emit(arith.SubiOp(self.emit(arith.AddiOp(
                    lb, self.index(var.extents[dim]))), self.const_int(1, INDEX)))
            return self.emit(arith.IndexCastOp(v, mlir_type(t)))
        if name in ("huge", "tiny", "epsilon", "kind"):
            at = pos[0].type
            if name == "kind":
                return self.const_int(at.kind, mlir_type(t))
            if at.base == "integer":
                return self.const_int((1 << (8 * at.kind - 1)) - 1, mlir_type(t))
            info = np.finfo(np.float32 if at.kind == 4 else np.float64)
            value = {"huge": info.max, "tiny": info.tiny, "epsilon": info.eps}[name]
            return self.const_float(float(value), mlir_type(t))
        if name == "matmul":
            raise self.err(d, "matmul is supported as the whole right-hand side of an "
                              "assignment to an array")
        raise self.err(d, f"intrinsic {name} is not supported")

    def shift(self, name: str, x: SSAValue, amount: ast.Expr, t: FType, ivs) -> SSAValue:
        ty = mlir_type(t)
        n = self.convert(self.expr(amount, ivs if amount.type.rank else None), amount.type, t)
        if name == "shiftl":
            return self.emit(arith.ShLIOp(x, n))
        if name == "shiftr":
            return self.emit(arith.ShRUIOp(x, n))
        # ishft: left for n >= 0, logical right for n < 0; |n| >= bits gives 0
        zero = self.const_int(0, ty)
        neg = self.emit(arith.SubiOp(zero, n))
        left = self.emit(arith.ShLIOp(x, n))
        right = self.emit(arith.ShRUIOp(x, neg))
        is_left = self.emit(arith.CmpiOp(n, zero, "sge"))
        v = self.emit(arith.SelectOp(is_left, left, right))
        mag = self.emit(arith.SelectOp(is_left, n, neg))
        big = self.emit(arith.CmpiOp(mag, self.const_int(8 * t.kind, ty), "sge"))
        return self.emit(arith.SelectOp(big, zero, v))

    def reduce(self, d: ast.Designator, ivs) -> SSAValue:
        """sum/product/maxval/minval/count/any/all, in array element order (first index
        fastest); with `dim=` the loop runs over that dimension at the result element `ivs`
        (the other dimensions); with `mask=` an element counts only where the mask is true
        (the accumulator is kept by a select)."""
        from .semantics_reductions import reduction_args

        name, t = d.parts[0].name, d.type
        a, dim, mask, _ = reduction_args(d.parts[0])
        ty = mlir_type(t)
        extents = self.extents_of(a)
        if name in ("sum", "count"):
            init = self.const_float(0.0, ty) if t.base == "real" else self.const_int(0, ty)
        elif name in ("any", "all"):
            init = self.const_int(int(name == "all"), ty)
        elif name == "product":
            init = self.const_float(1.0, ty) if t.base == "real" else self.const_int(1, ty)
        elif t.base == "real":
            big = float(np.finfo(np.float32 if t.kind == 4 else np.float64).max)
            init = self.const_float(-big if name == "maxval" else big, ty)
        else:
            init = self.const_int(-(1 << (8 * t.kind - 1)) if name == "maxval"
                                  else (1 << (8 * t.kind - 1)) - 1, ty)

        def combine(acc, x):
            if name == "count":
                return self.emit(arith.AddiOp(acc, self.emit(arith.SelectOp(
                    x, self.const_int(1, ty), self.const_int(0, ty)))))
            if name in ("any", "all"):
                return self.emit((arith.OrIOp if name == "any" else arith.AndIOp)(acc, x))
            if name == "sum":
                return self.emit((arith.AddfOp if t.base == "real" else arith.AddiOp)(acc, x))
            if name == "product":
                return self.emit((arith.MulfOp if t.base == "real" else arith.MuliOp)(acc, x))
            if t.base == "real":
                pred = "ogt" if name == "maxval" else "olt"
                return self.emit(arith.SelectOp(self.emit(arith.CmpfOp(x, acc, pred)), x, acc))
            return self.emit((arith.MaxSIOp if name == "maxval" else arith.MinSIOp)(acc, x))

        def step(at, acc):
            new = combine(acc, self.expr(a, at))
            if mask is None:
                return new
            return self.emit(arith.SelectOp(self.expr(mask, at if mask.type.rank else None),
                                            new, acc))

        if dim is None:
            return self.fold_loops(extents, init, step)
        k = int(self.fold(dim)) - 1
        outer = list(ivs or [])
        return self.fold_loops([extents[k]], init,
                               lambda inner, acc: step(outer[:k] + inner + outer[k:], acc))

    def dot(self, a: ast.Expr, b: ast.Expr, t: FType) -> SSAValue:
        ty = mlir_type(t)
        init = self.const_float(0.0, ty) if t.base == "real" else self.const_int(0, ty)

        def step(ivs, acc):
            x = self.convert(self.expr(a, ivs), a.type, t)
            y = self.convert(self.expr(b, ivs), b.type, t)
            if t.base == "real":
                return self.emit(arith.AddfOp(acc, self.emit(arith.MulfOp(x, y))))
            return self.emit(arith.AddiOp(acc, self.emit(arith.MuliOp(x, y))))

        return self.fold_loops(self.extents_of(a), init, step)

    def fold_loops(self, extents: list, init: SSAValue, step, ivs=None, dim=None) -> SSAValue:
        """Accumulate `step(ivs, acc)` over all positions, first index fastest."""
        ivs = ivs if ivs is not None else [None] * len(extents)
        dim = len(extents) - 1 if dim is None else dim

        def region(args):
            inner = list(ivs)
            inner[dim] = args[0]
            if dim == 0:
                r = step(inner, args[1])
            else:
                r = self.fold_loops(extents, args[1], step, inner, dim - 1)
            self.emit(scf.YieldOp(r))

        return self.emit(scf.ForOp(self.const_int(0, INDEX), self.index(extents[dim]),
                                   self.const_int(1, INDEX), [init],
                                   self.in_region(region, (INDEX, init.type))))
