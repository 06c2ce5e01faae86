"""Fortran source -> AST (ast.py), with `file:line:col` syntax errors.

The grammar is grammar.lark (LALR). Before parsing, `!$omp` / `!$acc` directive lines are
blanked out (so they never cause syntax errors, and positions do not move) and remembered
by line; each is attached as a hint to the first statement that follows it.
"""

from __future__ import annotations

import functools
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import lark
from lark import Token, Transformer, v_args

from . import ast
from .diagnostics import Diagnostics

_DIRECTIVE = re.compile(r"^[ \t]*!\$(omp|acc|q35c)\b(.*)$", re.IGNORECASE | re.MULTILINE)
ALLOW_WRAP = "q35c allow-wrap"
"""The directive (a comment line inside a procedure) that makes its integer overflow
intended wrapping: verify-overflow then records possible wraps without failing."""


@functools.cache
def _lark() -> lark.Lark:
    grammar = (Path(__file__).parent / "grammar.lark").read_text()
    return lark.Lark(grammar, parser="lalr", propagate_positions=True,
                     maybe_placeholders=False)


def _pos(meta) -> dict:
    return {"line": getattr(meta, "line", 0), "col": getattr(meta, "column", 0)}


def _tpos(tok: Token) -> dict:
    return {"line": tok.line, "col": tok.column}


def _split_kind(text: str) -> tuple[str, str | None]:
    body, sep, kind = text.partition("_")
    return (body, kind.lower()) if sep else (text, None)


@v_args(meta=True)
class _Builder(Transformer):
    """lark tree -> ast nodes."""

    # -- units --
    def start(self, meta, items):
        modules = [i for i in items if isinstance(i, ast.Module)]
        procs = [i for i in items if isinstance(i, ast.Procedure)]
        return ast.Program(modules=modules, procedures=procs, line=1, col=1)

    def module(self, meta, items):
        name = items[0]
        body = items[1]
        procs = items[2] if len(items) > 3 else []
        mod = ast.Module(name=name.lower(), body=body, procedures=procs, **_pos(meta))
        for p in procs:
            p.module = mod.name
        return mod

    def contains(self, meta, items):
        return list(items)

    def end_module(self, meta, items):
        return None

    def end_procedure(self, meta, items):
        return None

    def procedure(self, meta, items):
        prefixes, return_type, result, bind = [], None, None, None
        kind_tok = name = None
        args: list = []
        body: list = []
        for item in items:
            if isinstance(item, Token) and item.type in ("SUBROUTINE", "FUNCTION"):
                kind_tok = item
            elif isinstance(item, Token) and item.type == "NAME" and name is None:
                name = item
            elif isinstance(item, tuple) and item[0] == "prefix":
                if isinstance(item[1], ast.TypeSpec):
                    return_type = item[1]
                else:
                    prefixes.append(item[1])
            elif isinstance(item, tuple) and item[0] == "args":
                args = item[1]
            elif isinstance(item, tuple) and item[0] == "result":
                result = item[1]
            elif isinstance(item, tuple) and item[0] == "bind":
                bind = item[1]
            elif isinstance(item, list):
                body = item
        return ast.Procedure(kind=str(kind_tok).lower(), name=str(name).lower(),
                             spelling=str(name), args=args, prefixes=prefixes,
                             return_type=return_type, result=result, bind=bind, body=body,
                             **_pos(meta))

    def dummy_args(self, meta, items):
        return ("args", [(str(t).lower(), str(t), t.line, t.column) for t in items])

    def prefix(self, meta, items):
        item = items[0]
        return ("prefix", item if isinstance(item, ast.TypeSpec) else str(item).lower())

    def result_suffix(self, meta, items):
        return ("result", str(items[0]).lower())

    def bind_suffix(self, meta, items):
        name = str(items[2])[1:-1] if len(items) > 2 else None
        return ("bind", name or "")

    def body(self, meta, items):
        return list(items)

    # -- specification --
    def use_nature(self, meta, items):
        return _UseNature(str(items[0]).lower() if items else None, meta.line, meta.column)

    def use_stmt(self, meta, items):
        nature = items.pop(0) if isinstance(items[0], _UseNature) else None
        if nature is not None and nature.name not in (None, "intrinsic", "non_intrinsic"):
            raise _SyntaxProblem(nature.line, nature.col, "a module nature is intrinsic or "
                                 f"non_intrinsic, not '{nature.name}'")
        only = None
        if len(items) > 1:
            only = [(str(t).lower(), t.line, t.column) for t in items[1:]]
        return ast.Use(module=str(items[0]).lower(), only=only,
                       nature=nature.name if nature is not None else None, **_pos(meta))

    def implicit_none(self, meta, items):
        return ast.ImplicitNone(**_pos(meta))

    def access_stmt(self, meta, items):
        return ast.Access(access=str(items[0]).lower(),
                          names=[str(t).lower() for t in items[1:]], **_pos(meta))

    def type_def(self, meta, items):
        decls = [i for i in items if isinstance(i, ast.Decl)]
        return ast.TypeDef(name=str(items[1]).lower(), components=decls, **_pos(meta))

    def decl(self, meta, items):
        spec, attrs, entities = items[0], {}, []
        for item in items[1:]:
            if isinstance(item, ast.Entity):
                entities.append(item)
            else:
                key, value = item
                attrs[key] = value
        return ast.Decl(type_spec=spec, attrs=attrs, entities=entities, **_pos(meta))

    def type_spec(self, meta, items):
        head = items[0]
        base = str(head).lower()
        if head.type == "DOUBLE_PRECISION":
            return ast.TypeSpec(base="real", kind=ast.IntLit(value=8, **_pos(meta)),
                                **_pos(meta))
        if head.type == "TYPE":
            return ast.TypeSpec(base="type", type_name=str(items[1]).lower(), **_pos(meta))
        kind = items[1] if len(items) > 1 else None
        return ast.TypeSpec(base=base, kind=kind, **_pos(meta))

    def kind_sel(self, meta, items):
        item = items[0]
        if isinstance(item, Token):  # `*4`
            return ast.IntLit(value=int(item), **_tpos(item))
        return item

    def attr(self, meta, items):
        return (str(items[0]).lower(), True)

    def intent(self, meta, items):
        return ("intent", re.sub(r"\s+", "", str(items[0]).lower()))

    def dimension(self, meta, items):
        return ("dimension", items[0])

    def entity(self, meta, items):
        name = items[0]
        dims = init = None
        for item in items[1:]:
            if isinstance(item, list):
                dims = item
            else:
                init = item
        return ast.Entity(name=str(name).lower(), spelling=str(name), dims=dims, init=init,
                          **_tpos(name))

    def dims(self, meta, items):
        return list(items)

    def dim_upper(self, meta, items):
        return ast.Dim(lower=None, upper=items[0], **_pos(meta))

    def dim_range(self, meta, items):
        lower = upper = None
        # `lo:hi`, `lo:`, `:hi`, `:` -- lark drops the anonymous ':' so look at positions
        if len(items) == 2:
            lower, upper = items
        elif len(items) == 1:
            (only,) = items
            colon_first = meta.column == only.col and meta.line == only.line
            if colon_first:
                lower = only
            else:
                upper = only
        return ast.Dim(lower=lower, upper=upper, is_range=True, **_pos(meta))

    # -- execution --
    def assign(self, meta, items):
        return ast.Assign(target=items[0], value=items[1], **_pos(meta))

    def call_stmt(self, meta, items):
        return ast.Call(callee=items[0], **_pos(meta))

    def if_block(self, meta, items):
        branches = [(items[1], items[2])]
        orelse = None
        for item in items[3:]:
            if isinstance(item, tuple) and item[0] == "elseif":
                branches.append((item[1], item[2]))
            elif isinstance(item, tuple) and item[0] == "else":
                orelse = item[1]
        return ast.If(branches=branches, orelse=orelse, **_pos(meta))

    def else_if(self, meta, items):
        return ("elseif", items[1], items[2])

    def else_part(self, meta, items):
        return ("else", items[1])

    def if_one(self, meta, items):
        return ast.If(branches=[(items[1], [items[2]])], **_pos(meta))

    def do_loop(self, meta, items):
        label = None
        if isinstance(items[0], Token) and items[0].type == "NAME":
            label = str(items[0]).lower()
            items = items[1:]
        control = items[1] if not isinstance(items[1], list) else None
        body = next(i for i in items if isinstance(i, list))
        end_label = items[-1] if isinstance(items[-1], Token) and items[-1].type == "NAME" else None
        pos = _pos(meta)
        if end_label is not None and str(end_label).lower() != label:
            raise _SyntaxProblem(end_label.line, end_label.column,
                                 f"'end do {end_label}' does not match the loop label "
                                 f"'{label or ''}'")
        if control is None:
            return ast.Do(label=label, body=body, **pos)
        kind = control[0]
        if kind == "while":
            return ast.DoWhile(label=label, cond=control[1], body=body, **pos)
        if kind == "concurrent":
            return ast.DoConcurrent(label=label, specs=control[1], body=body, **pos)
        _, var, start, stop, step = control
        return ast.Do(label=label, var=str(var).lower(), var_line=var.line,
                      var_col=var.column, start=start, stop=stop, step=step, body=body, **pos)

    def counted(self, meta, items):
        var, start, stop = items[0], items[1], items[2]
        step = items[3] if len(items) > 3 else None
        return ("counted", var, start, stop, step)

    def while_control(self, meta, items):
        return ("while", items[0])

    def concurrent(self, meta, items):
        return ("concurrent", list(items))

    def triplet_spec(self, meta, items):
        return (str(items[0]).lower(), items[1], items[2], items[3] if len(items) > 3 else None)

    def select_case(self, meta, items):
        if isinstance(items[0], Token) and items[0].type == "NAME":
            items = items[1:]
        cases = [i for i in items[1:] if isinstance(i, ast.Case)]
        return ast.Select(expr=items[0], cases=cases, **_pos(meta))

    def case_block(self, meta, items):
        selectors = [i for i in items if isinstance(i, ast.Expr)]
        return ast.Case(selectors=selectors, body=items[-1], **_pos(meta))

    def case_default(self, meta, items):
        return ast.Case(selectors=None, body=items[-1], **_pos(meta))

    def case_value(self, meta, items):
        return items[0]

    def case_range(self, meta, items):
        lo = hi = None
        if len(items) == 2:
            lo, hi = items
        elif len(items) == 1:
            if items[0].col == meta.column and items[0].line == meta.line:
                lo = items[0]
            else:
                hi = items[0]
        return ast.Section(lo=lo, hi=hi, **_pos(meta))

    def exit_stmt(self, meta, items):
        return ast.Exit(label=str(items[1]).lower() if len(items) > 1 else None, **_pos(meta))

    def cycle_stmt(self, meta, items):
        return ast.Cycle(label=str(items[1]).lower() if len(items) > 1 else None, **_pos(meta))

    def return_stmt(self, meta, items):
        return ast.Return(**_pos(meta))

    def continue_stmt(self, meta, items):
        return ast.Continue(**_pos(meta))

    def allocate_stmt(self, meta, items):
        return ast.Allocate(items=list(items), **_pos(meta))

    def deallocate_stmt(self, meta, items):
        return ast.Deallocate(items=list(items), **_pos(meta))

    # -- expressions --
    def opseq(self, meta, items):
        stream = []
        for item in items:
            if isinstance(item, _Prefixed):
                stream += [("pre", tok) for tok in item.ops] + [("val", item.operand)]
            elif isinstance(item, Token):
                stream.append(("bin", item))
            else:
                stream.append(("val", item))
        stream.reverse()
        result = _climb(stream, 0)
        return result

    def prefixed(self, meta, items):
        return _Prefixed(items[:-1], items[-1])

    def array_ctor(self, meta, items):
        return ast.ArrayCtor(items=list(items), **_pos(meta))

    def implied_do(self, meta, items):
        at = next(k for k, item in enumerate(items) if isinstance(item, Token))
        var, bounds = items[at], items[at + 1:]
        return ast.ImpliedDo(items=list(items[:at]), var=str(var).lower(), var_spelling=str(var),
                             start=bounds[0], stop=bounds[1],
                             step=bounds[2] if len(bounds) > 2 else None, **_pos(meta))

    def designator(self, meta, items):
        return ast.Designator(parts=list(items), **_pos(meta))

    def part(self, meta, items):
        name = items[0]
        args = list(items[1:]) if len(items) > 1 or _has_parens(meta, name) else None
        return ast.Part(name=str(name).lower(), spelling=str(name), args=args, **_tpos(name))

    def keyword_arg(self, meta, items):
        return ast.KeywordArg(name=str(items[0]).lower(), value=items[1], **_pos(meta))

    def section(self, meta, items):
        # Which of lo, hi, step are present: recover from the source text between the
        # colons (lark drops anonymous tokens), see _section_layout.
        lo = hi = step = None
        present = _section_layout(meta)
        it = iter(items)
        if present[0]:
            lo = next(it)
        if present[1]:
            hi = next(it)
        if present[2]:
            step = next(it)
        return ast.Section(lo=lo, hi=hi, step=step, **_pos(meta))

    def int_lit(self, meta, items):
        tok = items[0]
        digits, kind = _split_kind(str(tok))
        return ast.IntLit(value=int(digits), kind=kind, **_tpos(tok))

    def real_lit(self, meta, items):
        tok = items[0]
        text = str(tok)
        body, sep, kind = text.partition("_")
        double = "d" in body.lower()
        body = body.lower().replace("d", "e")
        return ast.RealLit(text=body, kind=kind.lower() if sep else None, double=double,
                           **_tpos(tok))

    def boz_lit(self, meta, items):
        tok = str(items[0])
        base = {"z": 16, "b": 2, "o": 8}[tok[0].lower()]
        return ast.BozLit(value=int(tok[2:-1], base), **_tpos(items[0]))

    def logical_lit(self, meta, items):
        return ast.LogicalLit(value=str(items[0]).lower().startswith(".true"),
                              **_tpos(items[0]))

    def string_lit(self, meta, items):
        return ast.StringLit(value=str(items[0])[1:-1], **_tpos(items[0]))


@dataclass
class _UseNature:
    """`, intrinsic ::` (name "intrinsic"), `, non_intrinsic ::`, or a bare `::` (None)."""
    name: str | None
    line: int
    col: int


class _Prefixed:
    """Unary operators before an operand, resolved by _climb within the whole sequence."""

    def __init__(self, ops, operand):
        self.ops, self.operand = ops, operand


# Binding powers (left, right) of binary operators: Fortran precedence, loosest first;
# ** is right-associative. A prefix .not. binds its operand up to comparisons, a prefix
# + or - up to * and / (so -a*b is -(a*b) and -a**2 is -(a**2)).
_BINARY_POWER = {".eqv.": (1, 2), ".neqv.": (1, 2), ".or.": (3, 4), ".and.": (5, 6),
                 "cmp": (9, 10), "+": (11, 12), "-": (11, 12), "*": (13, 14), "/": (13, 14),
                 "**": (16, 15)}
_PREFIX_POWER = {".not.": 7, "+": 13, "-": 13}


def _power(op: str) -> tuple[int, int]:
    return _BINARY_POWER.get(op, _BINARY_POWER["cmp"])


def _climb(stream: list, min_power: int):
    """Precedence climbing over a reversed [("pre"|"val"|"bin", item)] stream."""
    kind, item = stream.pop()
    if kind == "pre":
        op = _normalize_op(str(item))
        operand = _climb(stream, _PREFIX_POWER[op])
        lhs = ast.UnOp(op=op, operand=operand, **_tpos(item))
    else:
        lhs = item
    while stream and stream[-1][0] == "bin":
        tok = stream[-1][1]
        op = _normalize_op(str(tok))
        left, right = _power(op)
        if left < min_power:
            break
        stream.pop()
        rhs = _climb(stream, right)
        lhs = ast.BinOp(op=op, lhs=lhs, rhs=rhs, **_tpos(tok))
    return lhs


_SOURCE: list = [""]  # the lines being parsed, for _section_layout/_has_parens


def _text_of(meta) -> str:
    lines = _SOURCE[0]
    if meta.line == meta.end_line:
        return lines[meta.line - 1][meta.column - 1: meta.end_column - 1]
    first = lines[meta.line - 1][meta.column - 1:]
    middle = lines[meta.line: meta.end_line - 1]
    last = lines[meta.end_line - 1][: meta.end_column - 1]
    return "\n".join([first, *middle, last])


def _section_layout(meta) -> tuple[bool, bool, bool]:
    """Which of lo, hi, step a `lo:hi:step` subscript has, read from its source text."""
    text = _strip_nested(_text_of(meta))
    pieces = text.split(":")
    present = [bool(p.strip().strip("&").strip()) for p in pieces] + [False, False]
    return present[0], present[1], present[2] if len(pieces) > 2 else False


def _strip_nested(text: str) -> str:
    """Blank out bracketed sub-expressions so only top-level colons remain."""
    out, depth = [], 0
    for ch in text:
        if ch in "([":
            depth += 1
            out.append("x" if depth == 1 else " ")
            continue
        if ch in ")]":
            depth -= 1
            out.append(" ")
            continue
        out.append(ch if depth == 0 else " ")
    return "".join(out)


def _has_parens(meta, name: Token) -> bool:
    if getattr(meta, "empty", True):
        return False
    return "(" in _text_of(meta)[len(str(name)):]


def _normalize_op(op: str) -> str:
    op = op.lower()
    return {".eq.": "==", ".ne.": "/=", ".lt.": "<", ".le.": "<=", ".gt.": ">",
            ".ge.": ">="}.get(op, op)


class _SyntaxProblem(Exception):
    def __init__(self, line: int, col: int, message: str):
        super().__init__(message)
        self.line, self.col, self.message = line, col, message


_FRIENDLY = {
    "_NL": "end of line", "NAME": "a name", "INT": "an integer", "REALNUM": "a real number",
    "LPAR": "'('", "RPAR": "')'", "COMMA": "','", "EQUAL": "'='", "COLON": "':'",
    "$END": "end of file", "INTENT": "in, out or inout", "ADDOP": "'+' or '-'",
    "MULOP": "'*' or '/'", "BOZ": "a BOZ literal", "LOGICAL_LIT": ".true. or .false.",
    "END_DO": "'end do'", "END_IF": "'end if'", "END_SELECT": "'end select'",
    "END_PROCEDURE": "'end subroutine' or 'end function'", "END_MODULE": "'end module'",
    "END_TYPE": "'end type'", "ELSE_IF": "'else if'", "NOTOP": "'.not.'",
    "CMPOP": "a comparison", "STRING": "a string", "LSQB": "'['", "RSQB": "']'",
    "DOUBLE_PRECISION": "'double precision'", "ANDOP": "'.and.'", "OROP": "'.or.'",
    "EQVOP": "'.eqv.'", "POWOP": "'**'", "PERCENT": "'%'", "DOUBLE_COLON": "'::'",
}


def _describe(token: Token) -> str:
    if token.type == "$END":
        return "end of file"
    if token.type == "_NL":
        return "end of line"
    return f"'{token}'"


def _expected(names) -> str:
    shown = []
    for name in sorted(names):
        if name in _FRIENDLY:
            shown.append(_FRIENDLY[name])
        elif name.startswith("__ANON"):
            continue
        else:
            try:
                pattern = _lark().get_terminal(name).pattern
                shown.append(f"'{pattern.value}'" if pattern.type == "str" else name.lower())
            except KeyError:
                shown.append(name.lower())
    shown = sorted(set(shown))
    if not shown:
        return ""
    if len(shown) > 8:
        shown = shown[:8] + ["..."]
    return "; expected " + ", ".join(shown)


def preprocess(source: str) -> tuple[str, dict[int, str]]:
    """Blank out directive lines; return (text, {line: directive})."""
    directives: dict[int, str] = {}

    def blank(match: re.Match) -> str:
        line = source.count("\n", 0, match.start()) + 1
        directives[line] = f"{match.group(1).lower()}{match.group(2).rstrip()}".strip()
        return " " * len(match.group(0))

    text = _DIRECTIVE.sub(blank, source)
    if not text.endswith("\n"):
        text += "\n"
    return text, directives


MAX_NESTING = 5000
"""The deepest nesting the frontend accepts, in syntax-tree levels: a parenthesis or a
DO/IF block is a few levels, each operand of an operator chain (`a + a + ... + a`) one.
Real kernels stay far below; beyond it is an error at the innermost construct's position,
so absurd nesting never exhausts the interpreter's stack."""
MAX_BLOCK_NESTING = 100
"""The deepest nesting of DO / IF / SELECT CASE constructs: each becomes a nested IR region,
and later stages (xDSL's printer and verifier, the passes) recurse once per region."""
_BLOCKS = {"do_loop", "if_block", "select_case"}
FRAMES_PER_LEVEL = 12
"""Python frames one level may take across the parser, semantics and IR generation."""
_STACK_BYTES = 512 << 20


def run_deep(fn, *args):
    """`fn(*args)` on a thread whose stack and recursion limit hold MAX_NESTING levels of
    the frontend's recursive descent (the main thread's 8 MiB stack and Python's default
    limit of 1000 frames do not: 400-term sums and 200 nested DO loops are real code)."""
    outcome: list = []

    def target() -> None:
        try:
            outcome.append((True, fn(*args)))
        except BaseException as err:  # re-raised on the caller's thread
            outcome.append((False, err))

    old_limit, old_stack = sys.getrecursionlimit(), threading.stack_size()
    sys.setrecursionlimit(max(old_limit, FRAMES_PER_LEVEL * MAX_NESTING + 1000))
    try:
        threading.stack_size(_STACK_BYTES)
        worker = threading.Thread(target=target, name="q35c-fortran", daemon=True)
        threading.stack_size(old_stack)
        worker.start()
        worker.join()
    finally:
        sys.setrecursionlimit(old_limit)
    ok, value = outcome[0]
    if not ok:
        raise value.with_traceback(value.__traceback__)
    return value


def _check_nesting(tree: lark.Tree, diags: Diagnostics) -> None:
    """Refuse a tree nested deeper than MAX_NESTING, at the position where it gets too
    deep; an explicit stack, since the tree is what is too deep to recurse over."""
    stack = [(tree, 1, 0)]
    while stack:
        node, depth, blocks = stack.pop()
        if depth > MAX_NESTING:
            line, col = _position(node)
            raise diags.error(line, col, f"nesting deeper than {MAX_NESTING} levels "
                                         "(parentheses, blocks or operator chains)")
        if isinstance(node, lark.Tree):
            if node.data in _BLOCKS:
                blocks += 1
                if blocks > MAX_BLOCK_NESTING:
                    line, col = _position(node)
                    raise diags.error(line, col, f"constructs (DO, IF, SELECT CASE) nested "
                                                 f"deeper than {MAX_BLOCK_NESTING} levels")
            step = len(node.children) if node.data == "opseq" else 1
            stack.extend((child, depth + step, blocks) for child in node.children)


def _position(node) -> tuple[int, int]:
    if isinstance(node, Token):
        return node.line or 1, node.column or 1
    meta = node.meta
    return getattr(meta, "line", 1) or 1, getattr(meta, "column", 1) or 1


def parse(source: str, path: str = "<input>") -> ast.Program:
    """Parse a Fortran source; raise FortranError (never anything else) on bad syntax."""
    diags = Diagnostics(path, source)
    text, directives = preprocess(source)
    _SOURCE[0] = text.splitlines()
    try:
        tree = _lark().parse(text)
        _check_nesting(tree, diags)
        program = _Builder().transform(tree)
    except lark.exceptions.UnexpectedCharacters as err:
        char = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        raise diags.error(err.line, err.column, f"unexpected character {char!r}") from None
    except lark.exceptions.UnexpectedToken as err:
        tok = err.token
        line, col = getattr(tok, "line", None), getattr(tok, "column", None)
        if line is None:  # end of file
            line = max(1, source.count("\n"))
            col = len(source.splitlines()[-1]) + 1 if source.splitlines() else 1
        raise diags.error(line, col, f"syntax error: unexpected {_describe(tok)}"
                                     f"{_expected(err.expected)}") from None
    except lark.exceptions.UnexpectedEOF as err:
        line = max(1, len(source.splitlines()))
        raise diags.error(line, 1, f"syntax error: unexpected end of file"
                                   f"{_expected(err.expected)}") from None
    except lark.exceptions.VisitError as err:
        inner = err.orig_exc
        if isinstance(inner, _SyntaxProblem):
            raise diags.error(inner.line, inner.col, inner.message) from None
        raise
    _attach_hints(program, directives)
    return program


def _attach_hints(program: ast.Program, directives: dict[int, str]) -> None:
    if not directives:
        return
    stmts: list[ast.Stmt] = []

    def collect(body):
        for stmt in body:
            stmts.append(stmt)
            for child in _children(stmt):
                collect(child)

    for mod in program.modules:
        collect(mod.body)
        for proc in mod.procedures:
            collect(proc.body)
    for proc in program.procedures:
        collect(proc.body)
    stmts.sort(key=lambda s: (s.line, s.col))
    procedures = sorted([p for m in program.modules for p in m.procedures]
                        + list(program.procedures), key=lambda p: p.line)
    for line, text in sorted(directives.items()):
        if text.startswith("q35c"):
            owner = [p for p in procedures if p.line < line]
            if " ".join(text.split()[:2]) == ALLOW_WRAP and owner:
                owner[-1].allow_wrap = True
            continue
        following = next((s for s in stmts if s.line > line), None)
        if following is not None:
            following.hints.append(text)


def _children(stmt: ast.Stmt):
    if isinstance(stmt, ast.If):
        for _, body in stmt.branches:
            yield body
        if stmt.orelse:
            yield stmt.orelse
    elif isinstance(stmt, (ast.Do, ast.DoWhile, ast.DoConcurrent)):
        yield stmt.body
    elif isinstance(stmt, ast.Select):
        for case in stmt.cases:
            yield case.body
