"""Expression lowering of the IR generator (irgen.py): variables and their element indices,
stores, operators, comparisons and designators."""

from __future__ import annotations

import numpy as np
from xdsl.dialects import arith, math as xmath, memref
from xdsl.dialects.builtin import (
    DenseIntOrFPElementsAttr,
    MemRefType,
    StringAttr,
    TensorType,
    UnitAttr,
    i1,
)
from xdsl.ir import SSAValue

from . import ast
from .irgen_common import INDEX, Var, mlir_type
from .semantics import FType, Symbol, _promote


class ExpressionGen:
    """IRGen's variables and expressions (a mixin of `IRGen`)."""

    def var(self, d: ast.Designator) -> Var:
        name = d.name
        if self.info.result is not None and name == self.info.proc.name and \
                self.info.result.name == name:
            name = self.info.result.name
        if name in self.vars:
            return self.vars[name]
        sym = self.scope.lookup(name)
        if sym is not None and sym.kind == "param":
            return self.param_var(sym)
        if sym is not None and sym.allocatable:
            raise self.err(d, f"'{sym.spelling}' is used before it is allocated")
        raise self.err(d, f"'{d.parts[0].spelling}' cannot be used here")

    def param_var(self, sym: Symbol) -> Var:
        value = np.asarray(sym.value)
        if not value.ndim:
            return Var(sym, "const", None)
        gname = self.global_for(sym)
        t = MemRefType(mlir_type(sym.type), list(value.shape))
        ref = self.emit(memref.GetGlobalOp(gname, t))
        lbs = [int(self.fold(d.lower)) if d.lower is not None else 1 for d in sym.dims]
        return Var(sym, "array", ref, lbs, list(value.shape))

    def global_for(self, sym: Symbol) -> str:
        if id(sym) in self.globals:
            return self.globals[id(sym)]
        name = f"{sym.name}"
        taken = {g for g in self.globals.values()}
        k = 0
        while name in taken:
            k += 1
            name = f"{sym.name}_{k}"
        value = np.asarray(sym.value)
        elem = mlir_type(sym.type)
        t = MemRefType(elem, list(value.shape))
        flat = value.flatten().tolist()
        if sym.type.base == "logical":
            flat = [int(bool(x)) for x in flat]
        dense = DenseIntOrFPElementsAttr.from_list(TensorType(elem, list(value.shape)), flat)
        op = memref.GlobalOp.get(StringAttr(name), t, dense, constant=UnitAttr())
        self.module.body.block.insert_op_before(op, self.module.body.block.first_op)
        self.globals[id(sym)] = name
        return name

    def element_indices(self, var: Var, part: ast.Part, ivs: list | None) -> list[SSAValue]:
        """0-based memref indices of `part` (subscripts and sections) at positions `ivs`."""
        out = []
        it = iter(ivs or [])
        args = part.args
        for dim in range(var.sym.rank if var.sym.rank else len(var.extents)):
            lb = var.lbounds[dim]
            if args is None:
                out.append(next(it))
                continue
            a = args[dim]
            if isinstance(a, ast.Section):
                pos = next(it)
                lo = self.index(self.expr(a.lo)) if a.lo is not None else None
                if a.step is not None:
                    pos = self.emit(arith.MuliOp(pos, self.index(self.expr(a.step))))
                if lo is not None:
                    pos = self.emit(arith.AddiOp(pos, self.emit(arith.SubiOp(
                        lo, self.index(lb)))))
                out.append(pos)
                continue
            loop_var = self.vars.get(a.name) if isinstance(a, ast.Designator) and \
                a.parts[0].args is None else None
            if loop_var is not None and loop_var.index_base is not None and \
                    isinstance(lb, int):
                iv, start = loop_var.index_base
                out.append(iv if start == lb else self.emit(arith.AddiOp(
                    iv, self.const_int(start - lb, INDEX))))
                continue
            sub = self.index(self.expr(a))
            if isinstance(lb, int) and lb == 0:
                out.append(sub)
            else:
                out.append(self.emit(arith.SubiOp(sub, self.index(lb))))
        return out

    def extents_of(self, e: ast.Expr) -> list:
        """Extents (int or index value) of an array-valued expression."""
        if id(e) in self.temps:
            return list(self.temps[id(e)].extents)
        if isinstance(e, ast.Designator) and not self.is_intrinsic(e) and \
                not self.is_proc(e):
            var = self.var(e)
            args = e.parts[0].args
            if args is None:
                return list(var.extents)
            out = []
            for dim, a in enumerate(args):
                if not isinstance(a, ast.Section):
                    continue
                if a.lo is None and a.hi is None and a.step is None:  # `:`, the whole dim
                    out.append(var.extents[dim])
                    continue
                lb = var.lbounds[dim]
                lo = self.index(self.expr(a.lo)) if a.lo is not None else self.index(lb)
                if a.hi is not None:
                    hi = self.index(self.expr(a.hi))
                else:
                    hi = self.emit(arith.SubiOp(self.emit(arith.AddiOp(
                        self.index(lb), self.index(var.extents[dim]))), self.const_int(1, INDEX)))
                if a.step is None:
                    n = self.emit(arith.AddiOp(self.emit(arith.SubiOp(hi, lo)),
                                               self.const_int(1, INDEX)))
                else:
                    st = self.index(self.expr(a.step))
                    n = self.emit(arith.DivSIOp(self.emit(arith.AddiOp(
                        self.emit(arith.SubiOp(hi, lo)), st)), st))
                out.append(self.emit(arith.MaxSIOp(n, self.const_int(0, INDEX))))
            return out
        if isinstance(e, ast.BinOp):
            side = e.lhs if e.lhs.type.rank else e.rhs
            return self.extents_of(side)
        if isinstance(e, ast.UnOp):
            return self.extents_of(e.operand)
        if isinstance(e, ast.ArrayCtor):
            return [len(e.items)]
        if isinstance(e, ast.Designator) and e.parts[0].name in (
                "sum", "product", "maxval", "minval", "count", "any", "all"):
            from .semantics_reductions import reduction_args  # a reduction along dim=

            a, dim, _, _ = reduction_args(e.parts[0])
            extents = self.extents_of(a)
            k = int(self.fold(dim)) - 1
            return extents[:k] + extents[k + 1:]
        if isinstance(e, ast.Designator):  # elemental intrinsic or function on arrays
            for a in e.parts[0].args:
                a = a.value if isinstance(a, ast.KeywordArg) else a
                if a.type is not None and a.type.rank:
                    return self.extents_of(a)
        raise self.err(e, "cannot determine the shape of this array expression")

    def store(self, target: ast.Designator, v: SSAValue, ivs: list | None = None) -> None:
        var = self.var(target)
        if var.kind == "scalar":
            self.emit(memref.StoreOp.get(v, var.value, []))
            return
        if var.kind != "array":
            raise self.err(target, f"cannot assign to '{target.parts[0].spelling}'")
        idx = self.element_indices(var, target.parts[0], ivs)
        self.emit(memref.StoreOp.get(v, var.value, idx))

    def is_proc(self, d: ast.Designator) -> bool:
        """A call of a user function (not a reference to the result variable)."""
        sym = self.scope.lookup(d.name)
        return sym is not None and sym.kind == "proc" and not (
            self.info.result is not None and d.name == self.info.result.name)

    def is_intrinsic(self, d: ast.Designator) -> bool:
        sym = self.scope.lookup(d.name)
        if sym is not None and sym.kind == "intrinsic":  # from an intrinsic module (omp_lib)
            return d.parts[0].args is not None
        return (sym is None or (sym.kind == "var" and not sym.declared)) and \
            d.parts[0].args is not None and d.name not in self.vars

    def expr(self, e: ast.Expr, ivs: list | None = None) -> SSAValue:
        """The scalar value of `e`; for an array expression, its element at `ivs`."""
        t = e.type
        if id(e) in self.temps:  # an array constructor or array-valued call (irgen_arrays)
            return self.load_temp(e, ivs)
        if isinstance(e, ast.IntLit):
            return self.const_int(e.value, mlir_type(t))
        if isinstance(e, ast.BozLit):
            return self.const_int(e.value, mlir_type(t))
        if isinstance(e, ast.RealLit):
            value = np.float64(e.text) if t.kind == 8 else np.float32(e.text)
            return self.const_float(float(value), mlir_type(t))
        if isinstance(e, ast.LogicalLit):
            return self.const_int(1 if e.value else 0, i1)
        if isinstance(e, ast.UnOp):
            v = self.expr(e.operand, ivs)
            if e.op == ".not.":
                return self.emit(arith.XOrIOp(v, self.const_int(1, i1)))
            if e.op == "+":
                return v
            if t.base == "real":
                return self.emit(arith.NegfOp(v))
            return self.emit(arith.SubiOp(self.const_int(0, mlir_type(t)), v))
        if isinstance(e, ast.BinOp):
            return self.binop(e, ivs)
        if isinstance(e, ast.Designator):
            return self.designator(e, ivs)
        raise self.err(e, f"unsupported expression {type(e).__name__}")

    def binop(self, e: ast.BinOp, ivs) -> SSAValue:
        op = e.op
        a = self.expr(e.lhs, ivs if e.lhs.type.rank else None)
        if op in (".and.", ".or.", ".eqv.", ".neqv."):
            b = self.expr(e.rhs, ivs if e.rhs.type.rank else None)
            cls = {".and.": arith.AndIOp, ".or.": arith.OrIOp, ".neqv.": arith.XOrIOp}.get(op)
            if cls is not None:
                return self.emit(cls(a, b))
            return self.emit(arith.CmpiOp(a, b, "eq"))
        if op == "**" and e.rhs.type.base == "integer" and not e.rhs.type.rank:
            n = int(self.fold(e.rhs))
            return self.power(a, n, e.type)
        b = self.expr(e.rhs, ivs if e.rhs.type.rank else None)
        if op in ("==", "/=", "<", "<=", ">", ">="):
            common = _promote(e.lhs.type, e.rhs.type)
            return self.cmp(op, self.convert(a, e.lhs.type, common),
                            self.convert(b, e.rhs.type, common), common)
        a = self.convert(a, e.lhs.type, t := e.type)
        b = self.convert(b, e.rhs.type, t)
        if t.base == "real":
            cls = {"+": arith.AddfOp, "-": arith.SubfOp, "*": arith.MulfOp, "/": arith.DivfOp,
                   "**": xmath.PowFOp}[op]
        else:
            cls = {"+": arith.AddiOp, "-": arith.SubiOp, "*": arith.MuliOp,
                   "/": arith.DivSIOp}[op]
        return self.emit(cls(a, b))

    def power(self, x: SSAValue, n: int, t: FType) -> SSAValue:
        """x**n for a constant n >= 0 by square-and-multiply, like gfortran's powi."""
        if n == 0:
            return self.const_float(1.0, x.type) if t.base == "real" else \
                self.const_int(1, x.type)
        mul = arith.MulfOp if t.base == "real" else arith.MuliOp
        if n == 1:
            return x
        half = self.power(x, n // 2, t)
        sq = self.emit(mul(half, half))
        return self.emit(mul(sq, x)) if n % 2 else sq

    def cmp(self, op: str, a: SSAValue, b: SSAValue, t: FType) -> SSAValue:
        if t.base == "real":
            pred = {"==": "oeq", "/=": "une", "<": "olt", "<=": "ole", ">": "ogt",
                    ">=": "oge"}[op]
            return self.emit(arith.CmpfOp(a, b, pred))
        pred = {"==": "eq", "/=": "ne", "<": "slt", "<=": "sle", ">": "sgt", ">=": "sge"}[op]
        return self.emit(arith.CmpiOp(a, b, pred))

    def designator(self, d: ast.Designator, ivs) -> SSAValue:
        part = d.parts[0]
        sym = self.scope.lookup(d.name)
        if self.is_intrinsic(d):
            return self.intrinsic(d, ivs)
        if self.is_proc(d):
            return self.call(d, ivs)
        var = self.var(d)
        if var.kind == "const":
            value = sym.value
            if sym.type.base == "real":
                return self.const_float(float(value), mlir_type(sym.type))
            return self.const_int(int(value), mlir_type(sym.type))
        if var.kind == "value":
            return var.value
        if var.kind == "scalar":
            return self.emit(memref.LoadOp.get(var.value, []))
        idx = self.element_indices(var, part, ivs)
        return self.emit(memref.LoadOp.get(var.value, idx))
