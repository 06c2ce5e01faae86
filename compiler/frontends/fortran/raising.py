"""Idiom raising: Fortran loop nests that are a quantized matmul become quant3p5 ops.

Recognised idiom (the legacy pair-layout kernel, in any variable names)::

    do j = 1, N                      ! or i outermost
      do i = 1, M
        acc = 0;  sx = 0
        do p = 1, K/2
          <unpack: local integer scalars from W(p, j) only>
          acc = acc + X(i, 2p-1) * E4 + X(i, 2p) * E3      ! int32, in any order
          sx  = sx  + X(i, 2p-1) + X(i, 2p)
        end do
        Y(i, j) = (scale(j) * real(acc) + offset(j) * real(sx)) * xscale(i)
      end do
    end do

with X int8 [M, K], W int8 [K/2, N], scale/offset/xscale real32 and static sizes. It is
raised to::

    quant3p5.pack W, scale, offset          -> !quant3p5.packed<[K, N], K, "pair43">
    quant3p5.matmul_int8 X, xscale, packed  -> tensor<MxNxf32>, stored into Y

The level expressions E4 and E3 are not matched syntactically: the unpack statements and
E4/E3 are evaluated for all 128 pair bytes and must give exactly LEGACY_LEVELS (so any
correct way of decoding the layout is recognised, and a wrong one never is). Sums and
products of integers are compared up to order (exact in two's complement); the real32
rescale must have exactly the operation order quant3p5.matmul_int8 defines, up to operand
swaps of single operations. Loop indices and accumulators must not be used outside the
nest. The raised op assumes valid pair bytes (bit 7 clear), as the layout defines;
the loops would compute something for other bytes, the op rejects them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects import bufferization
from xdsl.dialects.builtin import IntegerAttr, MemRefType, UnitAttr

from q35c.compiler.quant import LEGACY_LEVELS
from q35c.dialects import quant3p5

from . import ast
from .semantics import FType, _walk


@dataclass
class PairMatmul:
    X: str
    W: str
    scale: str
    offset: str
    xscale: str
    Y: str
    shape: tuple[int, int, int]  # M, K, N


class _NoMatch(Exception):
    pass


def _need(cond: bool) -> None:
    if not cond:
        raise _NoMatch


def _name(e: ast.Expr) -> str:
    _need(isinstance(e, ast.Designator) and len(e.parts) == 1 and e.parts[0].args is None)
    return e.name


def _is_one(e: ast.Expr | None) -> bool:
    return isinstance(e, ast.IntLit) and e.value == 1


def _simple_do(stmt) -> ast.Do:
    _need(isinstance(stmt, ast.Do) and stmt.var is not None and _is_one(stmt.start)
          and stmt.step is None)
    return stmt


def _linear(e: ast.Expr, var: str) -> tuple[int, int]:
    """(a, b) with e == a*var + b, for + - * over var and integer literals."""
    if isinstance(e, ast.IntLit):
        return 0, e.value
    if isinstance(e, ast.Designator):
        _need(_name(e) == var)
        return 1, 0
    if isinstance(e, ast.UnOp) and e.op == "-":
        a, b = _linear(e.operand, var)
        return -a, -b
    _need(isinstance(e, ast.BinOp) and e.op in "+-*")
    (a1, b1), (a2, b2) = _linear(e.lhs, var), _linear(e.rhs, var)
    if e.op == "+":
        return a1 + a2, b1 + b2
    if e.op == "-":
        return a1 - a2, b1 - b2
    _need(a1 == 0 or a2 == 0)
    return a1 * b2 + a2 * b1, b1 * b2


def _terms(e: ast.Expr) -> list[ast.Expr]:
    """Operands of an integer sum, flattened (wrapping + is associative)."""
    if isinstance(e, ast.BinOp) and e.op == "+" and e.type.base == "integer":
        return _terms(e.lhs) + _terms(e.rhs)
    return [e]


def _strip_int(e: ast.Expr) -> ast.Expr:
    """`int(x, int32)` -> x, for an integer x (a widening that changes no value)."""
    if isinstance(e, ast.Designator) and e.name == "int" and e.parts[0].args and \
            e.type.base == "integer":
        inner = e.parts[0].args[0]
        if inner.type is not None and inner.type.base == "integer" and \
                inner.type.kind <= e.type.kind:
            return inner
    return e


class Matcher:
    def __init__(self, gen, loop: ast.Do):
        self.gen = gen
        self.loop = loop

    def arg(self, name: str, base: str, kind: int, rank: int) -> MemRefType:
        var = self.gen.vars.get(name)
        _need(var is not None and var.sym.is_arg and var.kind == "array")
        t = var.sym.type
        _need((t.base, t.kind, t.rank) == (base, kind, rank))
        mt = var.value.type
        _need(isinstance(mt, MemRefType) and all(d >= 0 for d in mt.get_shape()))
        _need(all(lb == 1 for lb in var.lbounds))
        return mt

    def local_int(self, name: str, kind: int | None = None) -> None:
        sym = self.gen.scope.lookup(name)
        _need(sym is not None and sym.kind == "var" and not sym.is_arg and not sym.rank
              and sym.type.base == "integer" and (kind is None or sym.type.kind == kind))

    def element(self, e: ast.Expr, array: str | None = None, rank: int | None = None
                ) -> tuple[str, list[ast.Expr]]:
        """An array element `A(s1, ...)` of a variable (not an intrinsic call)."""
        _need(isinstance(e, ast.Designator) and len(e.parts) == 1 and e.parts[0].args)
        _need(array is None or e.name == array)
        _need(e.name in self.gen.vars and self.gen.vars[e.name].kind == "array")
        _need(rank is None or len(e.parts[0].args) == rank)
        args = e.parts[0].args
        _need(not any(isinstance(a, (ast.Section, ast.KeywordArg)) for a in args))
        return e.name, args

    def match(self) -> PairMatmul:
        outer = _simple_do(self.loop)
        _need(len(outer.body) == 1)
        inner = _simple_do(outer.body[0])
        body = inner.body
        _need(len(body) == 4)
        inits, kloop, final = body[:2], _simple_do(body[2]), body[3]
        # final store: Y(i, j) = (scale(j)*real(acc) + offset(j)*real(sx)) * xscale(i)
        _need(isinstance(final, ast.Assign))
        Y, (si, sj) = self.element(final.target, rank=2)
        i, j = _name(si), _name(sj)
        _need({i, j} == {outer.var, inner.var} and i != j)
        for candidate in self.rescale(final.value, i, j):
            try:
                return self.match_roles(outer, inner, inits, kloop, Y, i, j, *candidate)
            except _NoMatch:
                continue
        raise _NoMatch

    def match_roles(self, outer, inner, inits, kloop, Y, i, j, acc, sx, scale, offset,
                    xscale) -> PairMatmul:
        # accumulator initialisation
        zeros = set()
        for s in inits:
            _need(isinstance(s, ast.Assign) and isinstance(s.value, ast.IntLit)
                  and s.value.value == 0)
            zeros.add(_name(s.target))
        _need(zeros == {acc, sx} and acc != sx)
        for v in (acc, sx):
            self.local_int(v, 4)
        p = kloop.var
        for v in (i, j, p):
            self.local_int(v)
        # the k loop: unpack statements, then the two accumulations
        kbody = kloop.body
        _need(len(kbody) >= 2)
        updates = {}
        for s in kbody[-2:]:
            _need(isinstance(s, ast.Assign))
            updates[_name(s.target)] = s.value
        _need(set(updates) == {acc, sx})
        unpack = kbody[:-2]
        X, W, e4, e3 = self.accumulation(updates[acc], acc, i, p)
        self.activation_sum(updates[sx], sx, X, i, p)
        unpack_vars = self.check_unpack(unpack, W, p, j, {acc, sx, i, j, p})
        self.check_levels(unpack, W, e4, e3)
        # types and sizes
        W = self.W
        xt = self.arg(X, "integer", 1, 2)
        wt = self.arg(W, "integer", 1, 2)
        yt = self.arg(Y, "real", 4, 2)
        st = self.arg(scale, "real", 4, 1)
        ot = self.arg(offset, "real", 4, 1)
        rt = self.arg(xscale, "real", 4, 1)
        _need(self.gen.vars[Y].sym.intent in ("out", "inout"))
        _need(len({X, W, Y, scale, offset, xscale}) == 6)
        m, k = xt.get_shape()
        kp, n = wt.get_shape()
        _need(k % 2 == 0 and kp == k // 2 and yt.get_shape() == (m, n))
        _need(st.get_shape() == (n,) and ot.get_shape() == (n,) and rt.get_shape() == (m,))
        loops = {outer.var: outer.stop, inner.var: inner.stop}
        _need(self.const(loops[i]) == m and self.const(loops[j]) == n)
        _need(self.const(kloop.stop) == k // 2)
        self.unused_elsewhere({acc, sx, i, j, p} | unpack_vars)
        return PairMatmul(X, W, scale, offset, xscale, Y, (m, k, n))

    def const(self, e: ast.Expr) -> int:
        value = self.gen.fold(e)
        _need(value is not None and not np.ndim(value))
        return int(value)

    def rescale(self, e: ast.Expr, i: str, j: str) -> list[tuple]:
        """Candidate (acc, sx, scale, offset, xscale) readings of the final store."""
        _need(isinstance(e, ast.BinOp) and e.op == "*" and e.type == FType("real", 4))
        found = []
        for total, row in ((e.lhs, e.rhs), (e.rhs, e.lhs)):
            try:
                xscale, (ri,) = self.element(row, rank=1)
                _need(_name(ri) == i)
                _need(isinstance(total, ast.BinOp) and total.op == "+")
                for a, b in ((total.lhs, total.rhs), (total.rhs, total.lhs)):
                    try:
                        scale, acc = self.column_times(a, j)
                        offset, sx = self.column_times(b, j)
                        found.append((acc, sx, scale, offset, xscale))
                    except _NoMatch:
                        continue
            except _NoMatch:
                continue
        return found

    def column_times(self, e: ast.Expr, j: str) -> tuple[str, str]:
        """`col(j) * real(v)` (either order) -> (col, v)."""
        _need(isinstance(e, ast.BinOp) and e.op == "*" and e.type == FType("real", 4))
        for a, b in ((e.lhs, e.rhs), (e.rhs, e.lhs)):
            try:
                col, (cj,) = self.element(a, rank=1)
                _need(_name(cj) == j)
                _need(isinstance(b, ast.Designator) and b.name == "real" and
                      b.type == FType("real", 4) and b.parts[0].args)
                return col, _name(b.parts[0].args[0])
            except _NoMatch:
                continue
        raise _NoMatch

    def x_element(self, e: ast.Expr, i: str, p: str, array: str | None = None):
        """X(i, a*p + b) (possibly widened by int()) -> (X, (a, b))."""
        name, (ei, ek) = self.element(_strip_int(e), array, rank=2)
        _need(_name(ei) == i)
        return name, _linear(ek, p)

    def accumulation(self, e: ast.Expr, acc: str, i: str, p: str):
        terms = _terms(e)
        _need(len(terms) == 3 and e.type == FType("integer", 4))
        rest = [t for t in terms if not (isinstance(t, ast.Designator) and t.name == acc
                                         and t.parts[0].args is None)]
        _need(len(rest) == 2)
        found = {}
        X = None
        for t in rest:
            _need(isinstance(t, ast.BinOp) and t.op == "*" and t.type == FType("integer", 4))
            for xe, level in ((t.lhs, t.rhs), (t.rhs, t.lhs)):
                try:
                    name, form = self.x_element(xe, i, p, X)
                except _NoMatch:
                    continue
                X = name
                found[form] = level
                break
            else:
                raise _NoMatch
        _need(set(found) == {(2, -1), (2, 0)})
        e4, e3 = found[(2, -1)], found[(2, 0)]
        _need(not self.mentions(e4, {X}) and not self.mentions(e3, {X}))
        W = self.w_array(e4) or self.w_array(e3)
        return X, W, e4, e3

    def activation_sum(self, e: ast.Expr, sx: str, X: str, i: str, p: str) -> None:
        terms = _terms(e)
        _need(len(terms) == 3 and e.type == FType("integer", 4))
        forms = set()
        for t in terms:
            if isinstance(t, ast.Designator) and t.name == sx and t.parts[0].args is None:
                continue
            forms.add(self.x_element(t, i, p, X)[1])
        _need(forms == {(2, -1), (2, 0)})

    def w_array(self, e: ast.Expr) -> str | None:
        names = set()
        for d in _designators(e):
            if d.parts[0].args and d.name in self.gen.vars and \
                    self.gen.vars[d.name].kind == "array":
                names.add(d.name)
        return names.pop() if len(names) == 1 else None

    def mentions(self, e: ast.Expr, names: set[str]) -> bool:
        return any(d.name in names for d in _designators(e))

    def check_unpack(self, stmts, W: str | None, p: str, j: str, reserved: set[str]
                     ) -> set[str]:
        """Unpack statements assign local integer scalars from W(p, j) and constants."""
        targets = set()
        for s in _walk(stmts):
            if isinstance(s, ast.Assign):
                name = _name(s.target)
                _need(name not in reserved)
                self.local_int(name)
                targets.add(name)
            else:
                _need(isinstance(s, ast.If))
        self.W_name = W
        self.p, self.j = p, j
        return targets

    def check_levels(self, unpack, W: str | None, e4: ast.Expr, e3: ast.Expr) -> None:
        """Run the unpack statements and E4/E3 on every pair byte: must be LEGACY_LEVELS."""
        if W is None:
            for s in _walk(unpack):
                for d in _designators_of_stmt(s):
                    if d.parts[0].args and d.name in self.gen.vars:
                        W = d.name
        _need(W is not None)
        self.W_name = W
        for byte in range(128):
            env: dict[str, int] = {}
            self.byte = byte
            _run(self, unpack, env)
            got = (_eval(self, e4, env), _eval(self, e3, env))
            _need(got == (int(LEGACY_LEVELS[byte, 0]), int(LEGACY_LEVELS[byte, 1])))
        self.W = W

    def unused_elsewhere(self, names: set[str]) -> None:
        proc = self.gen.info.proc
        inside = {id(s) for s in _walk([self.loop])}
        for s in _walk(proc.body):
            if id(s) in inside or isinstance(s, ast.Decl):
                continue
            for d in _designators_of_stmt(s):
                _need(d.name not in names)
            for attr in ("var",):
                _need(getattr(s, attr, None) not in names)


def _designators(e) -> list[ast.Designator]:
    out = []
    if isinstance(e, ast.Designator):
        out.append(e)
        for a in e.parts[0].args or []:
            out += _designators(a)
    elif isinstance(e, ast.BinOp):
        out += _designators(e.lhs) + _designators(e.rhs)
    elif isinstance(e, ast.UnOp):
        out += _designators(e.operand)
    elif isinstance(e, (ast.Section,)):
        for x in (e.lo, e.hi, e.step):
            if x is not None:
                out += _designators(x)
    elif isinstance(e, ast.KeywordArg):
        out += _designators(e.value)
    elif isinstance(e, ast.ArrayCtor):
        for x in e.items:
            out += _designators(x)
    return out


def _designators_of_stmt(s) -> list[ast.Designator]:
    exprs = []
    if isinstance(s, ast.Assign):
        exprs = [s.target, s.value]
    elif isinstance(s, ast.If):
        exprs = [c for c, _ in s.branches]
    elif isinstance(s, ast.Do):
        exprs = [e for e in (s.start, s.stop, s.step) if e is not None]
    elif isinstance(s, ast.DoWhile):
        exprs = [s.cond]
    elif isinstance(s, ast.DoConcurrent):
        exprs = [e for spec in s.specs for e in spec[1:] if e is not None]
    elif isinstance(s, ast.Select):
        exprs = [s.expr]
    elif isinstance(s, ast.Call):
        exprs = [s.callee]
    elif isinstance(s, (ast.Allocate, ast.Deallocate)):
        exprs = list(s.items)
    out = []
    for e in exprs:
        out += _designators(e)
    return out


# -- a tiny evaluator for the unpack statements (integer scalars only) ---------------------


def _wrap(v: int, t: FType) -> int:
    _need(t is not None and t.base in ("integer", "logical") and not t.rank)
    if t.base == "logical":
        return int(bool(v))
    bits = 8 * t.kind
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >= 1 << (bits - 1) else v


def _unsigned(v: int, t: FType) -> int:
    return v & ((1 << (8 * t.kind)) - 1)


def _run(m: Matcher, stmts, env: dict[str, int]) -> None:
    for s in stmts:
        if isinstance(s, ast.Assign):
            env[_name(s.target)] = _wrap(_eval(m, s.value, env), s.target.type)
        elif isinstance(s, ast.If):
            for cond, body in s.branches:
                if _eval(m, cond, env):
                    _run(m, body, env)
                    break
            else:
                _run(m, s.orelse or [], env)
        else:
            raise _NoMatch


def _eval(m: Matcher, e: ast.Expr, env: dict[str, int]) -> int:
    t = e.type
    if isinstance(e, (ast.IntLit, ast.BozLit)):
        return _wrap(e.value, t)
    if isinstance(e, ast.LogicalLit):
        return int(e.value)
    if isinstance(e, ast.UnOp):
        v = _eval(m, e.operand, env)
        if e.op == ".not.":
            return int(not v)
        return _wrap(-v if e.op == "-" else v, t)
    if isinstance(e, ast.BinOp):
        a, b = _eval(m, e.lhs, env), _eval(m, e.rhs, env)
        op = e.op
        if op in ("==", "/=", "<", "<=", ">", ">="):
            _need(e.lhs.type.base == "integer" and e.rhs.type.base == "integer")
            return int({"==": a == b, "/=": a != b, "<": a < b, "<=": a <= b, ">": a > b,
                        ">=": a >= b}[op])
        if op in (".and.", ".or.", ".eqv.", ".neqv."):
            return int({".and.": a and b, ".or.": a or b, ".eqv.": a == b,
                        ".neqv.": a != b}[op])
        _need(t.base == "integer")
        if op == "/":
            _need(b != 0)
            q = abs(a) // abs(b)
            return _wrap(q if (a < 0) == (b < 0) else -q, t)
        if op == "**":
            return _wrap(a ** b, t)
        return _wrap({"+": a + b, "-": a - b, "*": a * b}[op], t)
    if isinstance(e, ast.Designator):
        part = e.parts[0]
        if part.args is None:
            _need(e.name in env)
            return env[e.name]
        if e.name == m.W_name:
            sp, sj = part.args
            _need(_name(sp) == m.p and _name(sj) == m.j)
            return _wrap(m.byte, t)
        return _intrinsic(m, e, env)
    raise _NoMatch


def _intrinsic(m: Matcher, e: ast.Designator, env) -> int:
    name = e.name
    args = e.parts[0].args
    _need(m.gen.is_intrinsic(e) and not any(isinstance(a, ast.KeywordArg) for a in args))
    t = e.type
    v = [_eval(m, a, env) for a in args if a.type is not None and a.type.base == "integer"
         and not (name == "int" and a is not args[0])]
    if name == "int":
        return _wrap(v[0], t)
    if name in ("iand", "ior", "ieor"):
        a, b = v
        return _wrap({"iand": a & b, "ior": a | b, "ieor": a ^ b}[name], t)
    if name == "not":
        return _wrap(~v[0], t)
    if name == "mod":
        a, b = v
        _need(b != 0)
        r = abs(a) % abs(b)
        return _wrap(r if a >= 0 else -r, t)
    if name in ("shiftl", "shiftr", "ishft"):
        a, n = v
        bits = 8 * t.kind
        if name == "ishft":
            if abs(n) >= bits:
                return 0
            return _wrap(a << n if n >= 0 else _unsigned(a, t) >> -n, t)
        _need(0 <= n < bits)
        return _wrap(a << n if name == "shiftl" else _unsigned(a, t) >> n, t)
    if name == "ibits":
        a, pos, ln = v
        return _wrap((_unsigned(a, t) >> pos) & ((1 << ln) - 1), t)
    if name in ("min", "max"):
        return min(v) if name == "min" else max(v)
    if name == "abs":
        return _wrap(abs(v[0]), t)
    raise _NoMatch


# -- emission ------------------------------------------------------------------------------


def match_pair_matmul(gen, loop: ast.Do) -> PairMatmul | None:
    try:
        return Matcher(gen, loop).match()
    except _NoMatch:
        return None
    except (KeyError, ValueError, AttributeError, TypeError, IndexError):
        return None


def emit_pair_matmul(gen, m: PairMatmul, loop: ast.Do) -> None:
    """X, xscale, W, scale, offset (memrefs) -> quant3p5.pack + matmul_int8 -> Y."""
    def tensor(name: str):
        return gen.emit(bufferization.ToTensorOp(gen.vars[name].value, restrict=True))

    x, xs, w, s, o = (tensor(n) for n in (m.X, m.xscale, m.W, m.scale, m.offset))
    _, k, n = m.shape
    packed_type = quant3p5.PackedWeightType((k, n), k, "pair43")
    packed = gen.emit(quant3p5.PackOp(w, s, o, packed_type))
    y = gen.emit(quant3p5.MatmulInt8Op(x, xs, packed))
    op = bufferization.MaterializeInDestinationOp.build(
        operands=[y, gen.vars[m.Y].value], result_types=[[]],
        properties={"restrict": UnitAttr(), "writable": UnitAttr()})
    op.attributes["q35c.raised_from_line"] = IntegerAttr(loop.line, 64)
    gen.emit(op)
