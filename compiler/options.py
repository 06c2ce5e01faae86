"""Range checks for pass and target options, called from their `__post_init__`.

An option out of range is the user's mistake (`--passes 'quantize-weights{group-size=7}'`,
`--target 'groq{chips=-3}'`), so it fails before any work with one line that names the
option and its valid range, e.g. `--target groq: option 'chips' must be an integer in
[0, 16], got -3`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from q35c.compiler.diagnostics import Q35cError


class OptionError(Q35cError):
    """An option value outside its valid range; the message is complete (no prefix)."""


def _fail(where: str, option: str, expected: str, value) -> OptionError:
    return OptionError(f"{where}: option '{option}' must be {expected}, got {value!r}")


def check_int(where: str, option: str, value, lo: int, hi: int | None = None,
              multiple_of: int = 1) -> None:
    """`value` is an int (not a bool) in [lo, hi] (no upper end when hi is None) and a
    multiple of `multiple_of`."""
    span = f"[{lo}, {'inf' if hi is None else hi}]"
    expected = (f"a multiple of {multiple_of} in {span}" if multiple_of > 1
                else f"an integer in {span}")
    if (isinstance(value, bool) or not isinstance(value, int) or value < lo
            or (hi is not None and value > hi) or value % multiple_of):
        raise _fail(where, option, expected, value)


def check_float(where: str, option: str, value, lo: float, hi: float = math.inf) -> None:
    """`value` is a finite number in [lo, hi]."""
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not lo <= value <= hi):
        span = f"[{lo:g}, {'inf' if hi == math.inf else f'{hi:g}'}]"
        raise _fail(where, option, f"a finite number in {span}", value)


def check_choice(where: str, option: str, value, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise _fail(where, option, f"one of {', '.join(choices)}", value)


def check_regex(where: str, option: str, value) -> None:
    """`value` is a string that compiles as a Python regular expression."""
    try:
        re.compile(value)
    except (re.error, TypeError, RecursionError, OverflowError) as err:
        raise _fail(where, option, f"a valid regular expression ({err})", value) from None


def check_text(where: str, option: str, value) -> None:
    """`value` is a non-empty single-line string."""
    if not isinstance(value, str) or not value or "\n" in value or "\0" in value:
        raise _fail(where, option, "a non-empty one-line string", value)
