"""The Fortran AST: what the parser builds and the semantic checker annotates.

Every node carries its 1-based source `line` and `col`. Names are lower-case (Fortran is
case-insensitive); `spelling` keeps what the user wrote where diagnostics need it.
Expressions get a `type` (semantics.FType) from the checker; nothing else is mutated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(kw_only=True)
class Node:
    line: int = 0
    col: int = 0


# -- expressions ---------------------------------------------------------------------------


@dataclass(kw_only=True)
class Expr(Node):
    type: Any = field(default=None, compare=False, repr=False)
    """The FType the checker assigned (None before checking)."""


@dataclass(kw_only=True)
class IntLit(Expr):
    value: int
    kind: str | None = None


@dataclass(kw_only=True)
class RealLit(Expr):
    text: str
    """The digits with Fortran's `d` exponent turned into `e`."""
    kind: str | None = None
    double: bool = False


@dataclass(kw_only=True)
class BozLit(Expr):
    value: int


@dataclass(kw_only=True)
class LogicalLit(Expr):
    value: bool


@dataclass(kw_only=True)
class StringLit(Expr):
    value: str


@dataclass(kw_only=True)
class BinOp(Expr):
    op: str
    """Normalized: + - * / ** == /= < <= > >= .and. .or. .eqv. .neqv."""
    lhs: Expr
    rhs: Expr


@dataclass(kw_only=True)
class UnOp(Expr):
    op: str  # - + .not.
    operand: Expr


@dataclass(kw_only=True)
class Section(Expr):
    """`lo:hi:step` inside a subscript list; missing parts are None."""
    lo: Expr | None
    hi: Expr | None
    step: Expr | None = None


@dataclass(kw_only=True)
class KeywordArg(Expr):
    name: str
    value: Expr


@dataclass(kw_only=True)
class Part(Node):
    name: str
    spelling: str
    args: list[Expr] | None = None
    """None for a bare name, [] for `name()`."""
    expanded: bool = field(default=False, compare=False, repr=False)
    """A call whose derived-type actuals the checker replaced by their components."""


@dataclass(kw_only=True)
class Designator(Expr):
    """`a`, `a(i, j)`, `f(x)`, `t%comp(i)`: resolved by the checker."""
    parts: list[Part]

    @property
    def name(self) -> str:
        return self.parts[0].name


@dataclass(kw_only=True)
class ArrayCtor(Expr):
    items: list[Expr]
    """Scalars, rank-1 arrays (their elements in order) and implied-do loops."""


@dataclass(kw_only=True)
class ImpliedDo(Expr):
    """`(items, var = start, stop[, step])` inside an array constructor: the items for each
    value of `var`, a statement-scope variable that leaves the variable of that name alone."""
    items: list[Expr]
    var: str
    var_spelling: str
    start: Expr
    stop: Expr
    step: Expr | None = None


# -- statements ----------------------------------------------------------------------------


@dataclass(kw_only=True)
class Stmt(Node):
    hints: list[str] = field(default_factory=list)
    """`!$omp` / `!$acc` directives on the lines just before this statement."""


@dataclass(kw_only=True)
class TypeSpec(Node):
    base: str  # integer | real | logical | type
    kind: Expr | None = None
    type_name: str | None = None


@dataclass(kw_only=True)
class Dim(Node):
    lower: Expr | None
    upper: Expr | None
    """`A(n)`: lower None, upper n; `A(:)`: both None; `A(0:n)`: both set."""
    is_range: bool = False


@dataclass(kw_only=True)
class Entity(Node):
    name: str
    spelling: str
    dims: list[Dim] | None = None
    init: Expr | None = None


@dataclass(kw_only=True)
class Decl(Stmt):
    type_spec: TypeSpec
    attrs: dict[str, Any]
    """parameter, allocatable, value, intent ('in'|'out'|'inout'), dimension ([Dim]), ..."""
    entities: list[Entity]


@dataclass(kw_only=True)
class Use(Stmt):
    module: str
    only: list[tuple[str, int, int]] | None = None
    nature: str | None = None
    """`use, intrinsic ::` / `use, non_intrinsic ::`: "intrinsic" / "non_intrinsic"."""


@dataclass(kw_only=True)
class ImplicitNone(Stmt):
    pass


@dataclass(kw_only=True)
class Access(Stmt):
    access: str
    names: list[str]


@dataclass(kw_only=True)
class TypeDef(Stmt):
    name: str
    components: list[Decl]


@dataclass(kw_only=True)
class Assign(Stmt):
    target: Designator
    value: Expr


@dataclass(kw_only=True)
class Call(Stmt):
    callee: Designator


@dataclass(kw_only=True)
class If(Stmt):
    branches: list[tuple[Expr, list[Stmt]]]
    orelse: list[Stmt] | None = None


@dataclass(kw_only=True)
class Do(Stmt):
    label: str | None
    var: str | None = None
    var_line: int = 0
    var_col: int = 0
    start: Expr | None = None
    stop: Expr | None = None
    step: Expr | None = None
    body: list[Stmt] = field(default_factory=list)
    """No var: an endless `do` (left with `exit`)."""


@dataclass(kw_only=True)
class DoWhile(Stmt):
    label: str | None
    cond: Expr
    body: list[Stmt]


@dataclass(kw_only=True)
class DoConcurrent(Stmt):
    label: str | None
    specs: list[tuple[str, Expr, Expr, Expr | None]]
    body: list[Stmt]


@dataclass(kw_only=True)
class Case(Node):
    selectors: list[Expr | Section] | None
    """None for `case default`."""
    body: list[Stmt]


@dataclass(kw_only=True)
class Select(Stmt):
    expr: Expr
    cases: list[Case]


@dataclass(kw_only=True)
class Exit(Stmt):
    label: str | None


@dataclass(kw_only=True)
class Cycle(Stmt):
    label: str | None


@dataclass(kw_only=True)
class Return(Stmt):
    pass


@dataclass(kw_only=True)
class Continue(Stmt):
    pass


@dataclass(kw_only=True)
class Allocate(Stmt):
    items: list[Designator]


@dataclass(kw_only=True)
class Deallocate(Stmt):
    items: list[Designator]


# -- program units -------------------------------------------------------------------------


@dataclass(kw_only=True)
class Procedure(Node):
    kind: str  # subroutine | function
    name: str
    spelling: str
    args: list[tuple[str, str, int, int]]
    """(name, spelling, line, col) of each dummy argument."""
    prefixes: list[str]
    return_type: TypeSpec | None
    result: str | None
    bind: str | None
    body: list[Stmt]
    module: str | None = None
    allow_wrap: bool = False
    """`!$q35c allow-wrap` in the procedure: its integer overflow is intended wrapping."""
    diags: Any = field(default=None, compare=False, repr=False)
    """The Diagnostics of the file that defines it (sources.py; None: the input)."""


@dataclass(kw_only=True)
class Module(Node):
    name: str
    body: list[Stmt]
    procedures: list[Procedure]
    diags: Any = field(default=None, compare=False, repr=False)
    """The Diagnostics of the file that defines it (sources.py; None: the input)."""


@dataclass(kw_only=True)
class Program(Node):
    modules: list[Module]
    procedures: list[Procedure]
    """Procedures outside any module (external procedures)."""
