"""Statement lowering of the IR generator (irgen.py): statement lists with their jump flags,
`if`/`select case`, assignments, calls and allocation. Loops are in irgen_loops.py."""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.dialects import arith, func, memref, scf
from xdsl.dialects.builtin import IntegerAttr, MemRefType, i1
from xdsl.ir import Operation, SSAValue

from . import ast
from .irgen_common import DYN, INDEX, Var, mlir_type
from .semantics import FType, _promote
from .semantics_intrinsics import INTRINSIC_SUBROUTINES


class StatementGen:
    """IRGen's statements (a mixin of `IRGen`)."""

    def stmts(self, body: list[ast.Stmt]) -> None:
        for i, stmt in enumerate(body):
            self.stmt(stmt)
            flags = self.pending_flags(stmt)
            rest = body[i + 1:]
            if flags and rest:
                go_on = self.not_any(flags)
                self.emit(scf.IfOp(go_on, [], self.in_region(
                    lambda _args, rest=rest: (self.stmts(rest), self.emit(scf.YieldOp())))))
                return

    def pending_flags(self, stmt: ast.Stmt) -> list[SSAValue]:
        """Flag cells a jump inside `stmt` may have set, that the code after it must test."""
        flags: list[SSAValue] = []
        for kind, target in sorted(self.jumps(stmt, [])):
            if kind == "return":
                cell = self.ret_flag
            else:
                ctx = self.loop_flags.get(target)
                cell = None if ctx is None else (ctx.exit_flag if kind == "exit"
                                                 else ctx.cycle_flag)
            if cell is not None and cell not in flags:
                flags.append(cell)
        return flags

    def jumps(self, stmt: ast.Stmt, inner: list) -> set[tuple[str, int]]:
        """(kind, id of target loop) of every exit/cycle/return in `stmt` leaving `stmt`."""
        out: set[tuple[str, int]] = set()
        if isinstance(stmt, ast.Return):
            out.add(("return", 0))
        elif isinstance(stmt, (ast.Exit, ast.Cycle)):
            target = self.jump_target(stmt, inner)
            if target is not None and all(target is not loop for loop in inner):
                out.add(("exit" if isinstance(stmt, ast.Exit) else "cycle", id(target)))
        elif isinstance(stmt, (ast.Do, ast.DoWhile, ast.DoConcurrent)):
            for s in stmt.body:
                out |= self.jumps(s, inner + [stmt])
        elif isinstance(stmt, ast.If):
            for _, b in stmt.branches:
                for s in b:
                    out |= self.jumps(s, inner)
            for s in stmt.orelse or []:
                out |= self.jumps(s, inner)
        elif isinstance(stmt, ast.Select):
            for c in stmt.cases:
                for s in c.body:
                    out |= self.jumps(s, inner)
        return out

    def jump_target(self, stmt, inner: list):
        chain = [c.stmt for c in self.loops] + inner
        if stmt.label is None:
            return chain[-1] if chain else None
        for loop in reversed(chain):
            if getattr(loop, "label", None) == stmt.label:
                return loop
        return None

    def not_any(self, flags: list[SSAValue]) -> SSAValue:
        acc = None
        for cell in flags:
            v = self.emit(memref.LoadOp.get(cell, []))
            acc = v if acc is None else self.emit(arith.OrIOp(acc, v))
        return self.emit(arith.XOrIOp(acc, self.const_int(1, i1)))

    def stmt(self, stmt: ast.Stmt) -> None:
        block, last = self.block, self.block.last_op
        made = self.hoist(stmt)
        getattr(self, "stmt_" + type(stmt).__name__.lower())(stmt)
        self.free(made)
        if stmt.line and block is self.block:
            op = last.next_op if last is not None else block.first_op
            while op is not None:
                _mark_line(op, stmt.line)
                op = op.next_op

    def stmt_continue(self, stmt) -> None:
        pass

    def stmt_return(self, stmt) -> None:
        self.emit(memref.StoreOp.get(self.const_int(1, i1), self.ret_flag, []))

    def stmt_exit(self, stmt) -> None:
        ctx = self.loop_flags[id(self.jump_target(stmt, []))]
        self.emit(memref.StoreOp.get(self.const_int(1, i1), ctx.exit_flag, []))

    def stmt_cycle(self, stmt) -> None:
        ctx = self.loop_flags[id(self.jump_target(stmt, []))]
        self.emit(memref.StoreOp.get(self.const_int(1, i1), ctx.cycle_flag, []))

    def stmt_if(self, stmt: ast.If) -> None:
        taken = self.static_branch(stmt)
        if taken is not None:  # `if (allocated(x)) deallocate(x)`: decided here
            self.stmts(taken)
            return
        self.depth += 1
        self.if_chain(stmt.branches, stmt.orelse)
        self.depth -= 1

    def static_branch(self, stmt: ast.If) -> list[ast.Stmt] | None:
        """The statements an `if` on allocation status runs, when it allocates or
        deallocates: `allocate` and `deallocate` happen at the top level of a procedure only,
        so `allocated(x)` is known at every point of it, and the `if` is decided at compile
        time (its branch then runs at the top level). None for any other `if`."""
        bodies = [body for _, body in stmt.branches] + [stmt.orelse or []]
        if not any(isinstance(s, (ast.Allocate, ast.Deallocate)) for b in bodies for s in b):
            return None
        for cond, body in stmt.branches:
            value = self.allocation_condition(cond)
            if value is None:
                return None
            if value:
                return body
        return stmt.orelse or []

    def allocation_condition(self, e: ast.Expr) -> bool | None:
        """The value of `allocated(x)`, `.not.`, `.and.` and `.or.` of such; else None."""
        if isinstance(e, ast.UnOp) and e.op == ".not.":
            inner = self.allocation_condition(e.operand)
            return None if inner is None else not inner
        if isinstance(e, ast.BinOp) and e.op in (".and.", ".or."):
            a, b = self.allocation_condition(e.lhs), self.allocation_condition(e.rhs)
            if a is None or b is None:
                return None
            return (a and b) if e.op == ".and." else (a or b)
        if isinstance(e, ast.Designator) and e.name == "allocated" and self.is_intrinsic(e):
            return self.allocation_status(e.parts[0].args[0])
        return None

    def allocation_status(self, d: ast.Designator) -> bool:
        """Whether the allocatable `d` is allocated here (allocation is at the top level
        of a procedure only, so this is known at compile time)."""
        return d.name in self.vars

    def if_chain(self, branches, orelse) -> None:
        (cond, body), rest = branches[0], branches[1:]
        c = self.case_cond(cond) if isinstance(cond, _CaseCond) else self.expr(cond)

        def then(_):
            self.stmts(body)
            self.emit(scf.YieldOp())

        def otherwise(_):
            if rest:
                self.if_chain(rest, orelse)
            elif orelse:
                self.stmts(orelse)
            self.emit(scf.YieldOp())

        has_else = bool(rest or orelse)
        self.emit(scf.IfOp(c, [], self.in_region(then),
                           self.in_region(otherwise) if has_else else None))

    def stmt_select(self, stmt: ast.Select) -> None:
        selector = self.expr(stmt.expr)
        st = stmt.expr.type
        branches = []
        default = None
        for case in stmt.cases:
            if case.selectors is None:
                default = case.body
                continue
            branches.append((_CaseCond(case, selector, st), case.body))
        if not branches:
            self.stmts(default or [])
            return
        self.depth += 1
        self.if_chain(branches, default)
        self.depth -= 1

    def case_cond(self, cond: _CaseCond) -> SSAValue:
        acc = None
        for sel in cond.case.selectors:
            if isinstance(sel, ast.Section):
                parts = []
                if sel.lo is not None:
                    parts.append(self.compare(">=", cond.selector, cond.type, sel.lo))
                if sel.hi is not None:
                    parts.append(self.compare("<=", cond.selector, cond.type, sel.hi))
                test = parts[0] if len(parts) == 1 else self.emit(arith.AndIOp(*parts))
            else:
                test = self.compare("==", cond.selector, cond.type, sel)
            acc = test if acc is None else self.emit(arith.OrIOp(acc, test))
        return acc

    def compare(self, op: str, v: SSAValue, vt: FType, rhs: ast.Expr) -> SSAValue:
        r = self.expr(rhs)
        common = _promote(vt, rhs.type) if vt.numeric else vt
        return self.cmp(op, self.convert(v, vt, common), self.convert(r, rhs.type, common),
                        common)

    def stmt_assign(self, stmt: ast.Assign) -> None:
        target, value = stmt.target, stmt.value
        lt = target.type
        if not lt.rank:
            v = self.convert(self.expr(value), value.type, lt)
            self.store(target, v)
            return
        if isinstance(value, ast.Designator) and value.name == "matmul" and \
                value.parts[0].args is not None and self.is_intrinsic(value):
            return self.matmul(target, value)
        if isinstance(value, ast.ArrayCtor) and id(value) not in self.temps:
            return self.store_ctor(target, value)
        extents = self.extents_of(target)
        if self.reads(value, target.name):
            # Fortran evaluates the whole right-hand side first: go through a temporary
            t = MemRefType(mlir_type(lt), [DYN] * lt.rank)
            tmp = self.emit(memref.AllocOp.get(mlir_type(lt), shape=t.get_shape(),
                                               dynamic_sizes=[self.index(e) for e in extents]))
            self.loop_nest(extents, lambda ivs: self.emit(memref.StoreOp.get(
                self.convert(self.expr(value, ivs), value.type, lt), tmp, ivs)))
            self.loop_nest(extents, lambda ivs: self.store(
                target, self.emit(memref.LoadOp.get(tmp, ivs)), ivs))
            self.emit(memref.DeallocOp.get(tmp))
            return
        self.loop_nest(extents, lambda ivs: self.store(
            target, self.convert(self.expr(value, ivs), value.type, lt), ivs))

    def reads(self, expr: ast.Expr, name: str) -> bool:
        found = False

        def visit(e):
            nonlocal found
            if isinstance(e, ast.Designator):
                if e.name == name:
                    found = True
                for a in e.parts[0].args or []:
                    visit(a)
            elif isinstance(e, ast.BinOp):
                visit(e.lhs), visit(e.rhs)
            elif isinstance(e, ast.UnOp):
                visit(e.operand)
            elif isinstance(e, ast.Section):
                for x in (e.lo, e.hi, e.step):
                    if x is not None:
                        visit(x)
            elif isinstance(e, ast.KeywordArg):
                visit(e.value)
            elif isinstance(e, (ast.ArrayCtor, ast.ImpliedDo)):
                for x in e.items:
                    visit(x)
                if isinstance(e, ast.ImpliedDo):
                    for x in (e.start, e.stop, e.step):
                        if x is not None:
                            visit(x)
        visit(expr)
        return found

    def store_ctor(self, target: ast.Designator, ctor: ast.ArrayCtor) -> None:
        lt = target.type
        for k, item in enumerate(ctor.items):
            v = self.convert(self.expr(item), item.type, lt)
            self.store(target, v, [self.const_int(k, INDEX)])

    def loop_nest(self, extents: list, body, ivs: list | None = None) -> None:
        """Loops over 0..extent-1 per dimension, first dimension innermost."""
        ivs = ivs or [None] * len(extents)
        dims = [d for d in range(len(extents)) if ivs[d] is None]
        if not dims:
            body(ivs)
            return
        d = dims[-1]
        ub = self.index(extents[d])

        def region(args):
            inner = list(ivs)
            inner[d] = args[0]
            self.loop_nest(extents, body, inner)
            self.emit(scf.YieldOp())

        self.emit(scf.ForOp(self.const_int(0, INDEX), ub, self.const_int(1, INDEX), [],
                            self.in_region(region, (INDEX,))))

    def matmul(self, target: ast.Designator, value: ast.Designator) -> None:
        a, b = value.parts[0].args
        va, vb = self.array_of(a), self.array_of(b)
        lt = target.type
        et = a.type.scalar()
        m, k = va.extents
        _, n = vb.extents
        ty = mlir_type(et)

        def body(ivs):
            i, j = ivs

            def kloop(args):
                kk, acc = args
                x = self.emit(memref.LoadOp.get(va.value, [i, kk]))
                y = self.emit(memref.LoadOp.get(vb.value, [kk, j]))
                mul = arith.MulfOp if et.base == "real" else arith.MuliOp
                add = arith.AddfOp if et.base == "real" else arith.AddiOp
                self.emit(scf.YieldOp(self.emit(add(acc, self.emit(mul(x, y))))))

            zero = self.const_float(0.0, ty) if et.base == "real" else self.const_int(0, ty)
            loop = self.emit(scf.ForOp(self.const_int(0, INDEX), self.index(k),
                                       self.const_int(1, INDEX), [zero],
                                       self.in_region(kloop, (INDEX, ty))))
            self.store(target, self.convert(loop, et, lt), ivs)

        self.loop_nest([m, n], body)

    def array_of(self, e: ast.Expr) -> Var:
        if not isinstance(e, ast.Designator) or e.parts[0].args is not None:
            raise self.err(e, "this intrinsic needs whole arrays as arguments")
        return self.var(e)

    # calls, allocation

    def stmt_call(self, stmt: ast.Call) -> None:
        if stmt.callee.name in INTRINSIC_SUBROUTINES and self.is_intrinsic(stmt.callee):
            getattr(self, f"stmt_{stmt.callee.name}")(stmt.callee)  # irgen_random.py
            return
        self.call(stmt.callee)

    def call(self, d: ast.Designator, ivs: list | None = None):
        """A call; an elemental function with array arguments is called on their elements
        at `ivs` (scalar arguments are broadcast)."""
        info = self.scope.lookup(d.parts[0].name).proc
        fn = self.funcs[info.proc.name]
        operands = self.call_operands(d, info, fn, ivs)
        outs = list(fn.function_type.outputs)
        op = func.CallOp(info.proc.name, operands, outs)
        self.emit(op)
        return op.results[0] if outs else None

    def call_operands(self, d: ast.Designator, info, fn: func.FuncOp, ivs) -> list[SSAValue]:
        operands = []
        for actual, _dummy, want in zip(d.parts[0].args or [], info.args,
                                        fn.function_type.inputs):
            if isinstance(want, MemRefType):
                var = self.var(actual)
                if var.sym.parent is not None and var.sym.allocatable and \
                        not all(_is_one(lb) for lb in var.lbounds):
                    raise self.err(actual, f"'{var.sym.spelling}' is allocated with lower "
                                           "bounds other than 1; an allocatable component "
                                           "is passed with lower bounds 1, so this is not "
                                           "supported")
                v = var.value
                if v.type != want:
                    v = self.emit(memref.CastOp.get(v, want))
                operands.append(v)
            else:
                operands.append(self.expr(actual, ivs if actual.type.rank else None))
        return operands

    def stmt_allocate(self, stmt: ast.Allocate) -> None:
        if self.depth:
            raise self.err(stmt, "allocate is supported at the top level of a procedure only "
                                 "(not inside loops or if blocks)")
        for item in stmt.items:
            sym = self.scope.lookup(item.name)
            lbs, exts = [], []
            for a in item.parts[0].args:
                if isinstance(a, ast.Section):
                    lo = self.index(self.expr(a.lo)) if a.lo is not None else \
                        self.const_int(1, INDEX)
                    hi = self.index(self.expr(a.hi))
                    known = self.fold(a.lo) if a.lo is not None else 1
                    lbs.append(int(known) if known is not None else lo)
                    ext = self.emit(arith.AddiOp(self.emit(arith.SubiOp(hi, lo)),
                                                 self.const_int(1, INDEX)))
                else:
                    lbs.append(1)
                    ext = self.index(self.expr(a))
                exts.append(self.emit(arith.MaxSIOp(ext, self.const_int(0, INDEX))))
            ref = self.emit(memref.AllocOp.get(mlir_type(sym.type), shape=[DYN] * sym.rank,
                                               dynamic_sizes=exts))
            self.vars[sym.name] = Var(sym, "array", ref, lbs, exts)

    def stmt_deallocate(self, stmt: ast.Deallocate) -> None:
        if self.depth:
            raise self.err(stmt, "deallocate is supported at the top level of a procedure only")
        for item in stmt.items:
            var = self.vars.get(item.name)
            if var is None:
                raise self.err(item, f"'{item.name}' is deallocated before it is allocated")
            self.emit(memref.DeallocOp.get(var.value))
            del self.vars[item.name]


@dataclass
class _CaseCond:
    """A case selector list standing in for an if condition in IRGen.if_chain."""
    case: ast.Case
    selector: SSAValue
    type: FType


def _is_one(bound) -> bool:
    """Whether a lower bound (python int, or an index SSA value: not known) is 1."""
    return isinstance(bound, int) and bound == 1


def _mark_line(op: Operation, line: int) -> None:
    """`q35c.source_line` on a statement-level op a statement emitted at the top of its block:
    stores, calls and control flow (ops with regions). Pure ops (arith) stay unmarked, so CSE
    still merges them across statements; `passes.matching.origin_of` gives them the line of
    the next marked op in their block, the statement they belong to. Ops of a nested
    statement were marked by it (in their own blocks)."""
    if "q35c.source_line" not in op.attributes and (
            isinstance(op, (memref.StoreOp, func.CallOp)) or op.regions):
        op.attributes["q35c.source_line"] = IntegerAttr(line, 64)
