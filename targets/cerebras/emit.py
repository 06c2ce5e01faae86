"""Build the CSL program of a GEMV plan as xDSL `csl` IR: one program module per PE role
and one layout module. `printer.py` prints it as CSL files; `simulate.py` runs this IR.

The PE program (`compute`, launched by the host over memcpy's RPC):

    x16 = f16(x); xr = f32(x16); acc = 0
    for each pair of groups (2p, 2p+1):              # scf.for, body unrolled per group
        s = 0
        for each half of the group's 16 pair codes (8 code rows, unrolled):
            code<i> = bits 7i..7i+6 of the group's 7 words    # 16-bit DSD ops, 1-4 each
            for n (one index loop, the 8 code rows unrolled): # scalar: no gather DSD
                pair<i>[2n], pair<i>[2n+1] = cb01[2c], cb01[2c+1] with c = code<i>[n]
                                                              # one 32-bit copy (copy32)
            for each code row i, each of its two weight rows k:
                s += pair<i>[even or odd] * x16[k]             # @fmachs, stride-2 DSD
        xs = sum of xr over the group                          # scalar, k ascending
        b = the group's meta byte                              # @and16 or @slr16
        sc = ss * stepm[b]; of = ob + os * gridm[b]            # look-up, @fmuls/@fadds
        acc += sc * s; acc += of * xs                          # @fmuls, @fadds
    activate(reduce)

A decoded plan (`weights=decoded`) adds the function `decode`, launched once after the
host's copies: the unpacking above and look-ups from `cb0`, `cb1` (one per level),
written to `lev` (f16 levels, row k at k * n_tile) and to `scg`/`ofg` (each group's sc
and of); its `compute` is then, per group,
`s = 0`, 32 `@fmachs(s, s, lev[k], x16[k])`, xs, and the same two `acc +=` steps.

An f16 plan (`weights=f16`) holds the host-decoded float16 weights `w16` (row k at
k * n_tile); its `compute` is `x16 = f16(x)` and one `@fmachs(acc, acc, w16[k], x16[k])`
per row (the first into a zero vector), the first 4 groups unrolled.

and the local task `reduce`: the chain step (`@fmovs` to the fabric on the first PE,
`@fadds(fabout, fabin, acc)` in the middle, `@fadds(y, fabin, acc)` on the last).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.builder import ImplicitBuilder
from xdsl.dialects import arith, csl, memref, scf
from xdsl.dialects.builtin import (
    AffineMapAttr,
    Float16Type,
    Float32Type,
    FloatAttr,
    IndexType,
    IntegerAttr,
    IntegerType,
    MemRefType,
    ModuleOp,
    Signedness,
    StringAttr,
    i16,
)
from xdsl.ir import Attribute, Block, Region, SSAValue
from xdsl.ir.affine import AffineExpr, AffineMap

from q35c.targets.cerebras.ops import Copy32Op, SetColorConfigOp
from q35c.targets.cerebras.plan import (
    CHAIN_COLORS,
    INPUT_QUEUE,
    OUTPUT_QUEUE,
    REDUCE_TASK_ID,
    TABLES,
    WORDS_PER_GROUP,
    GemvPlan,
    role_colors,
)

f16, f32 = Float16Type(), Float32Type()
u16 = IntegerType(16, Signedness.UNSIGNED)
COLOR_ID = IntegerType(5, Signedness.UNSIGNED)
PAIRS = 16
"""Pair codes per group of 32."""
LOOKUP_ROWS = 8
"""Code rows per look-up loop of a packed plan (two loops per group): the loop step costs
1/8 cycle per code, and the code and level arrays take 48 bytes per column (16 rows would
take 96, which keeps 64x256 tiles out of a PE)."""
F16_UNROLLED_GROUPS = 4
"""Groups of an f16 plan's `compute` unrolled with constant offsets (128 rows, about
4 KB of code); the rest run in a loop."""



def host_symbols(plan: GemvPlan) -> tuple[str, ...]:
    """Arrays the host copies into every PE before launching `compute` (run.py)."""
    return (*plan.weight_arrays(), "x", *plan.tables())


def buffers(plan: GemvPlan, role: str) -> dict[str, tuple[Attribute, int]]:
    """Every array of a PE program: name -> (element type, length)."""
    nt, kt = plan.n_tile, plan.k_tile
    if plan.f16:  # f16 weights, row k at k * n_tile; `zero` is never written
        out = {"w16": (f16, kt * nt), "x": (f32, kt), "x16": (f16, kt), "zero": (f32, nt),
               "acc": (f32, nt)}
        if role in ("single", "last_odd", "last_even"):
            out["y"] = (f32, nt)
        return out
    out = {
        "payload": (u16, (plan.groups * WORDS_PER_GROUP + 1) * nt),
        "meta": (u16, plan.groups // 2 * nt),
        "ss": (f32, nt), "ob": (f32, nt), "os": (f32, nt),
        "x": (f32, kt), "x16": (f16, kt), "xr": (f32, kt),
        "cb01": (f16, 256), "stepm": (f32, 128), "gridm": (f32, 128),
        **{f"code{i}": (u16, nt) for i in range(LOOKUP_ROWS)},
        **{f"pair{i}": (f16, 2 * nt) for i in range(LOOKUP_ROWS)},
        "t16": (u16, nt), "e16": (u16, nt),
        "stepv": (f32, nt), "gridv": (f32, nt),
        "s": (f32, nt), "sc": (f32, nt), "of": (f32, nt), "t": (f32, nt), "acc": (f32, nt),
    }
    if plan.decoded:  # the decoded tile: f16 levels, row k at k * n_tile; f32 per group
        for i in range(LOOKUP_ROWS):
            del out[f"code{i}"], out[f"pair{i}"]
        del out["cb01"]
        out.update({"cb0": (f16, 128), "cb1": (f16, 128), "code": (u16, nt)})
        out.update({"lev": (f16, kt * nt), "scg": (f32, plan.groups * nt),
                    "ofg": (f32, plan.groups * nt)})
    if role in ("single", "last_odd", "last_even"):
        out["y"] = (f32, nt)
    return out


def _int(value: int) -> SSAValue:
    return arith.ConstantOp(IntegerAttr(value, i16)).result


def _u16(value: int) -> SSAValue:
    """An unsigned 16-bit constant (arith.constant is signless: cast it)."""
    return csl.SignednessCastOp.build(operands=[_int(value)], result_types=[u16]).result


def _idx(value: int) -> SSAValue:
    """An index constant (costs no operation)."""
    return arith.ConstantOp(IntegerAttr(value, IndexType())).result


def _index(value: SSAValue) -> SSAValue:
    return arith.IndexCastOp(value, IndexType()).result


def declare_arrays(spec: dict[str, tuple[Attribute, int]], dsd_length
                   ) -> tuple[dict[str, SSAValue], dict[str, SSAValue]]:
    """A program's arrays and their DSDs (inside an ImplicitBuilder): one zero-filled
    array per entry of `spec` (name -> (element type, length)) and one DSD over it from
    element 0, `dsd_length(name, length)` elements long (None: no DSD, the array is read
    by scalar code only)."""
    bufs, dsds = {}, {}
    for name, (elem, size) in spec.items():
        buf = csl.ZerosOp(MemRefType(elem, (size,)))
        buf.result.name_hint = name
        if buf.result.name_hint != name:  # xDSL drops hints it cannot print (`x_0`)
            raise ValueError(f"array name {name!r} is not a valid name hint")
        bufs[name] = buf.result
        length = dsd_length(name, size)
        if length is None:
            continue
        dsd = csl.GetMemDsdOp.build(operands=[buf, [_int(length)]],
                                    result_types=[csl.DsdType(csl.DsdKind.mem1d_dsd)])
        dsd.result.name_hint = f"{name}_dsd"
        dsds[name] = dsd.result
    return bufs, dsds


def moved_dsd(dsd: SSAValue, offset: SSAValue, elem: Attribute) -> SSAValue:
    """`dsd` moved to start `offset` elements (of type `elem`) later."""
    return csl.IncrementDsdOffsetOp.build(
        operands=[dsd, offset], properties={"elem_type": elem},
        result_types=[csl.DsdType(csl.DsdKind.mem1d_dsd)]).result


def fab_dsd(kind: str, color: int, queue: int, extent: int) -> SSAValue:
    """A fabric DSD (`fabin_dsd` or `fabout_dsd`) of `extent` wavelets on `color`, through
    input or output queue `queue`."""
    return csl.GetFabDsdOp.build(
        operands=[[_int(extent)]],
        properties={"fabric_color": IntegerAttr(color, COLOR_ID),
                    "queue_id": IntegerAttr(queue, IntegerType(3))},
        result_types=[csl.DsdType(csl.DsdKind(kind))]).result


def chain_step(role: str, extent: int, src: SSAValue, last_dst) -> None:
    """The reduction chain's step of one position (plan.role_colors) over `extent`
    elements of `src`: the first PE sends them east, a middle one adds what arrives from
    the west and sends the sum on, the last adds what arrives into `last_dst()` (built
    after the fabric DSDs), and a PE alone copies `src` there."""
    cin, cout = role_colors(role)
    fin = fab_dsd("fabin_dsd", cin, INPUT_QUEUE, extent) if cin is not None else None
    dst = fab_dsd("fabout_dsd", cout, OUTPUT_QUEUE, extent) if cout is not None \
        else last_dst()
    if fin is None:
        csl.FmovsOp(operands=[[dst, src]])
    else:
        csl.FaddsOp(operands=[[dst, fin, src]])


@dataclass
class _Program:
    """Builds one PE program module (inside an ImplicitBuilder of its body)."""

    plan: GemvPlan
    role: str
    bufs: dict[str, SSAValue] = field(default_factory=dict)
    dsds: dict[str, SSAValue] = field(default_factory=dict)

    def declare(self) -> None:
        """The arrays and one DSD per array: n_tile long (k_tile for the input vector),
        from element 0; the tables, read by scalar code only, get none."""
        plan = self.plan
        self.bufs, self.dsds = declare_arrays(
            buffers(plan, self.role), lambda name, size: None if name in TABLES + (
                "cb01",) or name.startswith("pair") else plan.k_tile if name in (
                "x", "x16", "xr") else plan.n_tile)
        for name in [b for b in self.bufs if b.startswith("pair")]:  # every second
            # element: the even (or, moved by one, the odd) row's levels of a code row
            dsd = csl.GetMemDsdOp.build(
                operands=[self.bufs[name], [_int(plan.n_tile)]],
                properties={"tensor_access": AffineMapAttr(AffineMap(
                    1, 0, (AffineExpr.dimension(0) * 2,)))},
                result_types=[csl.DsdType(csl.DsdKind.mem1d_dsd)])
            dsd.result.name_hint = f"{name}_dsd"
            self.dsds[name] = dsd.result

    def vec(self, name: str, offset: SSAValue | None = None) -> SSAValue:
        """The DSD of `name`, moved to start at element `offset`."""
        dsd = self.dsds[name]
        if offset is not None:
            dsd = moved_dsd(dsd, offset, self.bufs[name].type.get_element_type())
        return dsd

    def lookup(self, pairs: list[tuple[str, str, str]],
               at: list[SSAValue] | None = None, count: int = 0) -> None:
        """for n: dst[n] = table[idx[n]] for each (dst, table, idx): the scalar table
        look-up no DSD operation does; `at[i]`: pair i's dst starts at that element.
        `count`: over n < count with an index-typed loop (no cast of n), else n < n_tile."""
        nt = self.plan.n_tile
        if count:
            loop = scf.ForOp(_idx(0), _idx(count), _idx(1), [],
                             Block(arg_types=[IndexType()]))
        else:
            loop = scf.ForOp(_int(0), _int(nt), _int(1), [], Block(arg_types=[i16]))
        with ImplicitBuilder(loop.body.block) as (n,):
            ni = n if count else _index(n)
            codes: dict[str, SSAValue] = {}
            for i, (dst, table, idx) in enumerate(pairs):
                if idx not in codes:  # one load of each index array per element
                    codes[idx] = _index(memref.LoadOp.get(self.bufs[idx], [ni]).res)
                value = memref.LoadOp.get(self.bufs[table], [codes[idx]]).res
                where = ni if at is None else _index(arith.AddiOp(at[i], n).result)
                memref.StoreOp.get(value, self.bufs[dst], [where])
            scf.YieldOp()

    def pair_lookup(self) -> None:
        """for n < n_tile, for each of LOOKUP_ROWS code rows i (unrolled): pair<i>[2n],
        pair<i>[2n + 1] = cb01[2c], cb01[2c + 1] with c = code<i>[n]: both levels of a
        pair code with one 32-bit load and store (`copy32`)."""
        loop = scf.ForOp(_idx(0), _idx(self.plan.n_tile), _idx(1), [],
                         Block(arg_types=[IndexType()]))
        with ImplicitBuilder(loop.body.block) as (n,):
            for i in range(LOOKUP_ROWS):
                c = _index(memref.LoadOp.get(self.bufs[f"code{i}"], [n]).res)
                Copy32Op(self.bufs[f"pair{i}"], n, self.bufs["cb01"], c)
            scf.YieldOp()

    def unpack(self, base: SSAValue, i: int, dst: str = "code") -> None:
        """dst[n] = pair code i of the group whose payload words start at
        `base`: bits 7i..7i+6 of the group's 7 words. A code within one word (shift sh =
        7i % 16 <= 9) is `(w >> sh) & 0x7F` (no shift for sh 0, no mask for sh 9); one
        that straddles two is `((w0 >> sh) | (w1 << (16 - sh))) & 0x7F`."""
        nt = self.plan.n_tile
        q, sh = divmod(7 * i, 16)
        w0 = self.vec("payload", arith.AddiOp(base, _int(q * nt)).result)
        code = self.vec(dst)
        if sh == 0:
            csl.And16Op(operands=[[code, w0, _u16(0x7F)]])
            return
        csl.Slr16Op(operands=[[code, w0, _u16(sh)]])
        if sh + 7 > 16:
            w1 = self.vec("payload", arith.AddiOp(base, _int((q + 1) * nt)).result)
            t16 = self.vec("t16")
            csl.Sll16Op(operands=[[t16, w1, _u16(16 - sh)]])
            csl.Or16Op(operands=[[code, code, t16]])
        if sh + 7 != 16:
            csl.And16Op(operands=[[code, code, _u16(0x7F)]])

    def xsum(self, kbase: SSAValue, zero: SSAValue) -> SSAValue:
        """The group's sum of x (f32, k ascending, from `zero`)."""
        loop = scf.ForOp(_int(0), _int(self.plan.group), _int(1), [zero],
                         Block(arg_types=[i16, f32]))
        with ImplicitBuilder(loop.body.block) as (k, xs):
            v = memref.LoadOp.get(self.bufs["xr"], [_index(arith.AddiOp(kbase, k).result)]).res
            scf.YieldOp(arith.AddfOp(xs, v))
        return loop.res[0]

    def scale_offset(self, g: SSAValue, parity: int) -> None:
        """sc[n], of[n]: group g's scale and offset (parity: which byte of its meta word)."""
        nt = self.plan.n_tile
        half = arith.DivSIOp(g, _int(2)).result
        meta = self.vec("meta", arith.MuliOp(half, _int(nt)).result)
        e16 = self.vec("e16")  # the group's 7-bit meta code, both tables' index
        if parity:
            csl.Slr16Op(operands=[[e16, meta, _u16(8)]])
        else:
            csl.And16Op(operands=[[e16, meta, _u16(0x7F)]])
        self.lookup([("stepv", "stepm", "e16"), ("gridv", "gridm", "e16")], count=nt)
        v = self.vec
        csl.FmulsOp(operands=[[v("sc"), v("ss"), v("stepv")]])
        csl.FmulsOp(operands=[[v("of"), v("os"), v("gridv")]])
        csl.FaddsOp(operands=[[v("of"), v("ob"), v("of")]])

    def accumulate(self, sc: SSAValue, of: SSAValue, xs: SSAValue) -> None:
        """acc += sc * s; acc += of * xs."""
        v = self.vec
        csl.FmulsOp(operands=[[v("t"), sc, v("s")]])
        csl.FaddsOp(operands=[[v("acc"), v("acc"), v("t")]])
        csl.FmulsOp(operands=[[v("t"), of, xs]])
        csl.FaddsOp(operands=[[v("acc"), v("acc"), v("t")]])

    def group(self, g: SSAValue, parity: int) -> None:
        """The body for group g (parity: which byte of its meta word)."""
        nt, gs = self.plan.n_tile, self.plan.group
        zero = arith.ConstantOp(FloatAttr(0.0, f32)).result
        csl.FmovsOp(operands=[[self.vec("s"), zero]])
        base = arith.MuliOp(g, _int(WORDS_PER_GROUP * nt)).result
        kbase = arith.MuliOp(g, _int(gs)).result
        for first in range(0, PAIRS, LOOKUP_ROWS):  # code rows [first, first + 8)
            rows = range(LOOKUP_ROWS)
            for i in rows:
                self.unpack(base, first + i, f"code{i}")
            self.pair_lookup()
            for i in rows:
                for half in (0, 1):
                    k = arith.AddiOp(kbase, _int(2 * (first + i) + half)).result
                    xk = memref.LoadOp.get(self.bufs["x16"], [_index(k)]).res
                    src = self.vec(f"pair{i}", _int(1) if half else None)
                    csl.FmachsOp(operands=[[self.vec("s"), self.vec("s"), src, xk]])
        xs = self.xsum(kbase, zero)
        self.scale_offset(g, parity)
        self.accumulate(self.vec("sc"), self.vec("of"), xs)

    def decode_group(self, g: SSAValue, parity: int) -> None:
        """Load time (decoded plans): group g's levels into rows of `lev` (row k at k *
        n_tile), its scale and offset into `scg` and `ofg` (at g * n_tile)."""
        nt, gs = self.plan.n_tile, self.plan.group
        base = arith.MuliOp(g, _int(WORDS_PER_GROUP * nt)).result
        rows = arith.MuliOp(g, _int(gs * nt)).result
        for i in range(PAIRS):
            self.unpack(base, i)
            at = [arith.AddiOp(rows, _int(r * nt)).result for r in (2 * i, 2 * i + 1)]
            self.lookup([("lev", "cb0", "code"), ("lev", "cb1", "code")], at)
        self.scale_offset(g, parity)
        col = arith.MuliOp(g, _int(nt)).result
        csl.FmovsOp(operands=[[self.vec("scg", col), self.vec("sc")]])
        csl.FmovsOp(operands=[[self.vec("ofg", col), self.vec("of")]])

    def decoded_group(self, g: SSAValue) -> None:
        """The body for group g of a decoded plan: f16 levels from memory, DSD ops only
        (but x's scalar loads and the group's x sum)."""
        nt, gs = self.plan.n_tile, self.plan.group
        zero = arith.ConstantOp(FloatAttr(0.0, f32)).result
        csl.FmovsOp(operands=[[self.vec("s"), zero]])
        kbase = arith.MuliOp(g, _int(gs)).result
        rows = arith.MuliOp(g, _int(gs * nt)).result
        for k in range(gs):
            xk = memref.LoadOp.get(
                self.bufs["x16"], [_index(arith.AddiOp(kbase, _int(k)).result)]).res
            lev = self.vec("lev", arith.AddiOp(rows, _int(k * nt)).result)
            csl.FmachsOp(operands=[[self.vec("s"), self.vec("s"), lev, xk]])
        xs = self.xsum(kbase, zero)
        col = arith.MuliOp(g, _int(nt)).result
        self.accumulate(self.vec("scg", col), self.vec("ofg", col), xs)

    def f16_rows(self, g: SSAValue | int) -> None:
        """Rows of group g of an f16 plan: acc += w16[k] * x16[k] (@fmachs), k ascending;
        the tile's first row adds to `zero` instead (0 + p, as acc = 0 then acc += p,
        without the f32 pass that setting acc to 0 takes)."""
        nt, gs = self.plan.n_tile, self.plan.group
        const = isinstance(g, int)
        if not const:
            kbase = arith.MuliOp(g, _int(gs)).result
            rows = arith.MuliOp(g, _int(gs * nt)).result
        for k in range(gs):
            if const:  # index constants cost no operation
                kk = arith.ConstantOp(IntegerAttr(g * gs + k, IndexType())).result
                at = _int((g * gs + k) * nt)
            else:
                kk = _index(arith.AddiOp(kbase, _int(k)).result)
                at = arith.AddiOp(rows, _int(k * nt)).result
            xk = memref.LoadOp.get(self.bufs["x16"], [kk]).res
            src = self.vec("zero" if const and g == 0 and k == 0 else "acc")
            csl.FmachsOp(operands=[[self.vec("acc"), src, self.vec("w16", at), xk]])

    def _pairs_of_groups(self, body) -> None:
        """for each pair of groups (2p, 2p+1): body(g, parity), unrolled per group."""
        loop = scf.ForOp(_int(0), _int(self.plan.groups // 2), _int(1), [],
                         Block(arg_types=[i16]))
        with ImplicitBuilder(loop.body.block) as (p,):
            for parity in (0, 1):
                body(arith.AddiOp(arith.MuliOp(p, _int(2)), _int(parity)).result, parity)
            scf.YieldOp()

    def decode(self) -> None:
        """The load-time decode of a decoded plan (run once, after the host's copies)."""
        self._pairs_of_groups(self.decode_group)

    def compute(self) -> None:
        csl.Fs2hOp(operands=[[self.vec("x16"), self.vec("x")]])
        if self.plan.f16:  # the first groups unrolled with constant offsets, then a loop
            unrolled = min(self.plan.groups, F16_UNROLLED_GROUPS)
            for g in range(unrolled):
                self.f16_rows(g)
            if self.plan.groups > unrolled:
                loop = scf.ForOp(_int(unrolled), _int(self.plan.groups), _int(1), [],
                                 Block(arg_types=[i16]))
                with ImplicitBuilder(loop.body.block) as (g,):
                    self.f16_rows(g)
                    scf.YieldOp()
            csl.ActivateOp(REDUCE_TASK_ID, csl.TaskKind.LOCAL)
            return
        csl.Fh2sOp(operands=[[self.vec("xr"), self.vec("x16")]])
        csl.FmovsOp(operands=[[self.vec("acc"), arith.ConstantOp(FloatAttr(0.0, f32))]])
        if self.plan.decoded:
            loop = scf.ForOp(_int(0), _int(self.plan.groups), _int(1), [],
                             Block(arg_types=[i16]))
            with ImplicitBuilder(loop.body.block) as (g,):
                self.decoded_group(g)
                scf.YieldOp()
        else:
            self._pairs_of_groups(self.group)
        csl.ActivateOp(REDUCE_TASK_ID, csl.TaskKind.LOCAL)

    def reduce(self, memcpy: SSAValue) -> None:
        """The chain step of this role, then hand the command stream back to the host."""
        chain_step(self.role, self.plan.n_tile, self.vec("acc"), lambda: self.vec("y"))
        csl.MemberCallOp("unblock_cmd_stream", None, memcpy, [])


def noop_functions(names: tuple[str, ...], memcpy: SSAValue) -> list[csl.FuncOp]:
    """Launch functions of the other stages of a program (graph.py): they only hand the
    command stream back, since the host's launch reaches every PE."""
    out = []
    for name in names:
        fn = csl.FuncOp(name, ((), None))
        with ImplicitBuilder(fn.body.block):
            csl.MemberCallOp("unblock_cmd_stream", None, memcpy, [])
            csl.ReturnOp()
        out.append(fn)
    return out


def program_module(plan: GemvPlan, role: str, name: str | None = None,
                   entry: str = "compute", noops: tuple[str, ...] = ()) -> csl.CslModuleOp:
    """The program of every PE of one role (file pe_<role>.csl, or `name`.csl); `entry`:
    the launch function's name; `noops`: further launch functions that do nothing."""
    module_name = name or f"pe_{role}"
    body = Block()
    prog = _Program(plan, role)
    with ImplicitBuilder(body):
        params = csl.ParamOp("memcpy_params", csl.ComptimeStructType())
        memcpy = csl.ImportModuleConstOp("<memcpy/memcpy>", params)
        prog.declare()
        if plan.decoded:
            decode = csl.FuncOp("decode", ((), None))
            with ImplicitBuilder(decode.body.block):
                prog.decode()
                csl.MemberCallOp("unblock_cmd_stream", None, memcpy.result, [])
                csl.ReturnOp()
        fn = csl.FuncOp(entry, ((), None))
        with ImplicitBuilder(fn.body.block):
            prog.compute()
            csl.ReturnOp()
        others = noop_functions(noops, memcpy.result)
        task = csl.TaskOp("reduce", ((), None), task_kind=csl.TaskKind.LOCAL,
                          id=REDUCE_TASK_ID)
        with ImplicitBuilder(task.body.block):
            prog.reduce(memcpy.result)
            csl.ReturnOp()
        for name in host_symbols(plan) + (("y",) if "y" in prog.bufs else ()):
            elem = prog.bufs[name].type.get_element_type()
            ptr = csl.AddressOfOp(prog.bufs[name], csl.PtrType(
                elem, csl.PtrKindAttr(csl.PtrKind.MANY), csl.PtrConstAttr(csl.PtrConst.VAR)))
            csl.SymbolExportOp(name, ptr.res)
        if plan.decoded:
            csl.SymbolExportOp("decode", decode.function_type)
        for f in (fn, *others):
            csl.SymbolExportOp(f.sym_name.data, f.function_type)
    return csl.CslModuleOp(regions=[Region(body)], properties={
        "kind": csl.ModuleKindAttr(csl.ModuleKind.PROGRAM),
        "sym_name": StringAttr(module_name)})


def routes(plan: GemvPlan, x: int) -> list[tuple[int, tuple[str, ...], tuple[str, ...]]]:
    """The routes of PE column x: (color, rx, tx)."""
    out = []
    cin, cout = role_colors(plan.role(x))
    if cout is not None:
        out.append((cout, ("RAMP",), ("EAST",)))
    if cin is not None:
        out.append((cin, ("WEST",), ("RAMP",)))
    return out


def layout_module(plan: GemvPlan) -> csl.CslModuleOp:
    """The layout: the rectangle, each PE column's program, and the chain's routes."""
    body = Block()
    with ImplicitBuilder(body):
        w, h = _int(plan.width), _int(plan.height)
        get_params = csl.ImportModuleConstOp(
            "<memcpy/get_params>", csl.ConstStructOp(("width", w), ("height", h)))
        layout = csl.LayoutOp(Region(Block()))
        with ImplicitBuilder(layout.body.block):
            csl.SetRectangleOp(operands=[w, h])
            for x in range(plan.width):
                xc = _int(x)
                loop = scf.ForOp(_int(0), h, _int(1), [], Block(arg_types=[i16]))
                with ImplicitBuilder(loop.body.block) as (y,):
                    mp = csl.MemberCallOp("get_params", csl.ComptimeStructType(),
                                          get_params, [xc])
                    params = csl.ConstStructOp(("memcpy_params", mp))
                    csl.SetTileCodeOp(f"pe_{plan.role(x)}.csl", xc, y, params)
                    for color, rx, tx in routes(plan, x):
                        SetColorConfigOp(xc, y, color, rx, tx)
                    scf.YieldOp()
    return csl.CslModuleOp(regions=[Region(body)], properties={
        "kind": csl.ModuleKindAttr(csl.ModuleKind.LAYOUT),
        "sym_name": StringAttr("layout")})


def csl_module(plan: GemvPlan) -> ModuleOp:
    """The whole CSL project as IR: one program module per role, then the layout."""
    module = ModuleOp([*(program_module(plan, r) for r in plan.roles()), layout_module(plan)])
    module.verify()
    return module


__all__ = ["CHAIN_COLORS", "buffers", "csl_module", "host_symbols", "routes"]
