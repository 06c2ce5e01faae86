"""Loop lowering of the IR generator (irgen.py): counted `do` loops become `scf.for`, loops left
early (`exit`, `return`, `cycle`) `scf.while` with flag cells; `do while`, `do concurrent`."""

from __future__ import annotations

from xdsl.dialects import arith, memref, scf
from xdsl.dialects.builtin import ArrayAttr, IntegerAttr, StringAttr, UnitAttr, i1
from xdsl.ir import Attribute, SSAValue

from . import ast
from .irgen_common import INDEX, LoopCtx, Var, mlir_type


class LoopGen:
    """IRGen's loops (a mixin of `IRGen`)."""

    def loop_ctx(self, stmt) -> LoopCtx:
        ctx = LoopCtx(stmt)
        kinds = set()
        for kind, target in self._inner_jumps(stmt):
            if target == id(stmt):
                kinds.add(kind)
        if "exit" in kinds:
            ctx.exit_flag = self.flag_cell()
        if "cycle" in kinds:
            ctx.cycle_flag = self.flag_cell()
        self.loop_flags[id(stmt)] = ctx
        return ctx

    def _inner_jumps(self, stmt) -> set:
        self.loops.append(LoopCtx(stmt))
        try:
            out = set()
            for s in stmt.body:
                out |= self.jumps(s, [])
            return out
        finally:
            self.loops.pop()

    def outer_flags(self, stmt, ctx: LoopCtx) -> list[SSAValue]:
        """Flags that end this loop early: its exit, outer exits/cycles, return."""
        self.loops.append(ctx)
        try:
            flags = []
            for s in stmt.body:
                for cell in self.pending_flags(s):
                    if cell is not ctx.cycle_flag and cell not in flags:
                        flags.append(cell)
            return flags
        finally:
            self.loops.pop()

    def loop_body(self, stmt, ctx: LoopCtx, prologue) -> None:
        self.loops.append(ctx)
        self.depth += 1
        try:
            if ctx.cycle_flag is not None:
                self.emit(memref.StoreOp.get(self.const_int(0, i1), ctx.cycle_flag, []))
            prologue()
            for op in self.block.ops:  # the index update belongs to the loop's statement
                op.attributes.setdefault("q35c.source_line", IntegerAttr(stmt.line, 64))
            self.stmts(stmt.body)
        finally:
            self.loops.pop()
            self.depth -= 1

    def hint_attrs(self, stmt) -> dict[str, Attribute]:
        if not stmt.hints:
            return {}
        return {"q35c.hints": ArrayAttr([StringAttr(h) for h in stmt.hints])}

    def stmt_do(self, stmt: ast.Do) -> None:
        if self.raise_idioms:
            from .raising import emit_pair_matmul, match_pair_matmul
            match = match_pair_matmul(self, stmt)
            if match is not None:
                emit_pair_matmul(self, match, stmt)
                return
        ctx = self.loop_ctx(stmt)
        if stmt.var is None:
            return self.endless(stmt, ctx)
        var = self.vars[stmt.var]
        vt = var.sym.type
        cell = var.value
        start = self.expr(stmt.start)
        start = self.convert(start, stmt.start.type, vt)
        stop = self.convert(self.expr(stmt.stop), stmt.stop.type, vt)
        ity = mlir_type(vt)
        if stmt.step is None:
            step = self.const_int(1, ity)
            if self.fold(stmt.start) == 1:
                trip = stop
            else:
                trip = self.emit(arith.AddiOp(self.emit(arith.SubiOp(stop, start)),
                                              self.const_int(1, ity)))
        else:
            step = self.convert(self.expr(stmt.step), stmt.step.type, vt)
            trip = self.emit(arith.DivSIOp(self.emit(arith.AddiOp(
                self.emit(arith.SubiOp(stop, start)), step)), step))
        trip = self.emit(arith.MaxSIOp(trip, self.const_int(0, ity)))
        early = self.outer_flags(stmt, ctx)

        start_const = self.fold(stmt.start) if stmt.step is None else None

        def set_var(iv):
            if stmt.step is None:
                i = self.emit(arith.AddiOp(start, self.emit(arith.IndexCastOp(iv, ity))))
            else:
                i = self.emit(arith.AddiOp(start, self.emit(arith.MuliOp(
                    self.emit(arith.IndexCastOp(iv, ity)), step))))
            if early:  # the value an `exit` leaves behind
                self.emit(memref.StoreOp.get(i, cell, []))
            # Fortran forbids assigning the index inside the loop: read the SSA value
            base = (iv, int(start_const)) if start_const is not None else None
            self.vars[stmt.var] = Var(var.sym, "value", i, index_base=base)

        trip_index = self.index(trip)
        if not early:
            def body(args):
                self.loop_body(stmt, ctx, lambda: set_var(args[0]))
                self.emit(scf.YieldOp())
            loop = scf.ForOp(self.const_int(0, INDEX), trip_index, self.const_int(1, INDEX),
                             [], self.in_region(body, (INDEX,)))
            loop.attributes.update(self.hint_attrs(stmt))
            self.emit(loop)
        else:
            self.while_loop(stmt, ctx, early, trip_index, set_var)
        self.vars[stmt.var] = var
        # the index's value after a completed loop, as in Fortran: start + trip * step
        final = self.emit(arith.AddiOp(start, self.emit(arith.MuliOp(trip, step))))
        if ctx.exit_flag is None:
            self.emit(memref.StoreOp.get(final, cell, []))
            return
        exited = self.emit(memref.LoadOp.get(ctx.exit_flag, []))
        self.emit(scf.IfOp(exited, [], self.in_region(lambda _: self.emit(scf.YieldOp())),
                           self.in_region(lambda _: (self.emit(memref.StoreOp.get(
                               final, cell, [])), self.emit(scf.YieldOp())))))

    def while_loop(self, stmt, ctx, early, trip_index, set_var) -> None:
        """`scf.while` over iv = 0.. with an early-leave test on flag cells."""
        def before(args):
            iv = args[0]
            more = self.emit(arith.CmpiOp(iv, trip_index, "slt")) if trip_index is not None \
                else self.const_int(1, i1)
            go = self.emit(arith.AndIOp(more, self.not_any(early))) if early else more
            self.emit(scf.ConditionOp(go, iv))

        def after(args):
            iv = args[0]
            self.loop_body(stmt, ctx, lambda: set_var(iv) if set_var else None)
            self.emit(scf.YieldOp(self.emit(arith.AddiOp(iv, self.const_int(1, INDEX)))))

        loop = scf.WhileOp([self.const_int(0, INDEX)], [INDEX],
                           self.in_region(before, (INDEX,)), self.in_region(after, (INDEX,)))
        loop.attributes.update(self.hint_attrs(stmt))
        self.emit(loop)

    def endless(self, stmt: ast.Do, ctx: LoopCtx) -> None:
        early = self.outer_flags(stmt, ctx)
        if not early:
            raise self.err(stmt, "a do loop without a control must contain an exit")
        self.while_loop(stmt, ctx, early, None, None)

    def stmt_dowhile(self, stmt: ast.DoWhile) -> None:
        ctx = self.loop_ctx(stmt)
        early = self.outer_flags(stmt, ctx)

        def before(args):
            go = self.guarded_cond(early, stmt.cond) if early else self.expr(stmt.cond)
            self.emit(scf.ConditionOp(go))

        def after(args):
            self.loop_body(stmt, ctx, lambda: None)
            self.emit(scf.YieldOp())

        loop = scf.WhileOp([], [], self.in_region(before), self.in_region(after))
        loop.attributes.update(self.hint_attrs(stmt))
        self.emit(loop)

    def guarded_cond(self, early, cond: ast.Expr) -> SSAValue:
        """`!flags && cond`, evaluating cond only when no flag is set."""
        go_on = self.not_any(early)

        def then(_):
            self.emit(scf.YieldOp(self.expr(cond)))

        def otherwise(_):
            self.emit(scf.YieldOp(self.const_int(0, i1)))

        return self.emit(scf.IfOp(go_on, [i1], self.in_region(then), self.in_region(otherwise)))

    def stmt_doconcurrent(self, stmt: ast.DoConcurrent) -> None:
        ctx = self.loop_ctx(stmt)
        specs = stmt.specs

        def nest(level: int):
            name, lo, hi, step = specs[level]
            var = self.vars[name]
            vt = var.sym.type
            ity = mlir_type(vt)
            lo_v = self.convert(self.expr(lo), lo.type, vt)
            hi_v = self.convert(self.expr(hi), hi.type, vt)
            st_v = self.convert(self.expr(step), step.type, vt) if step is not None else \
                self.const_int(1, ity)
            trip = self.emit(arith.DivSIOp(self.emit(arith.AddiOp(
                self.emit(arith.SubiOp(hi_v, lo_v)), st_v)), st_v))
            trip = self.index(self.emit(arith.MaxSIOp(trip, self.const_int(0, ity))))

            lo_const = self.fold(lo) if step is None else None

            def body(args):
                if step is None:
                    i = self.emit(arith.AddiOp(lo_v, self.emit(arith.IndexCastOp(args[0], ity))))
                else:
                    i = self.emit(arith.AddiOp(lo_v, self.emit(arith.MuliOp(
                        self.emit(arith.IndexCastOp(args[0], ity)), st_v))))
                base = (args[0], int(lo_const)) if lo_const is not None else None
                self.vars[name] = Var(var.sym, "value", i, index_base=base)
                if level + 1 < len(specs):
                    nest(level + 1)
                else:
                    self.loop_body(stmt, ctx, lambda: None)
                self.vars[name] = var
                self.emit(scf.YieldOp())

            loop = scf.ForOp(self.const_int(0, INDEX), trip, self.const_int(1, INDEX), [],
                             self.in_region(body, (INDEX,)))
            loop.attributes["q35c.concurrent"] = UnitAttr()
            if level == 0:
                loop.attributes.update(self.hint_attrs(stmt))
            self.emit(loop)

        nest(0)
