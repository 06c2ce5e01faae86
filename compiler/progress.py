"""Progress bars for long work: shown on a terminal, silent when stderr is not a tty."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int, desc: str) -> tqdm:
    """A transient bar on an interactive stderr (a no-op object otherwise); call .update()."""
    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False,
                disable=not sys.stderr.isatty(), dynamic_ncols=True)
