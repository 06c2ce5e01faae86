"""Dialects, passes and targets from xDSL, q35c and third-party `xdsl.universe` plugins.

`Universe.get_multiverse()` fails as a whole when any one plugin fails to import or clashes
with another. q35c loads each entry point on its own instead: xDSL's and q35c's own first,
then plugins in name order. A plugin that fails to load, or that redefines a name, is
recorded in `broken` and skipped, so one bad plugin cannot break the compiler; the failure is
reported when the user asks for something that plugin provides (and by `q35c passes` and
`q35c targets`).

Targets: `targets` holds q35c targets (`Q35cTarget` subclasses: q35c's own and plugins').
xDSL's own targets print xDSL IR to a stream and know nothing of weight stores or output
directories, so `--target` does not offer them; q35c's `mlir` target takes their name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from xdsl.ir import Dialect
from xdsl.passes import ModulePass
from xdsl.universe import Universe
from xdsl.utils.target import Target

from q35c.compiler.diagnostics import Q35cError, first_line

BUILTIN_PLUGINS = ("xdsl", "q35c")


@dataclass
class Registry:
    dialects: dict[str, Callable[[], Dialect]] = field(default_factory=dict)
    passes: dict[str, Callable[[], type[ModulePass]]] = field(default_factory=dict)
    targets: dict[str, Callable[[], type[Target]]] = field(default_factory=dict)
    """q35c targets by `--target` name (xDSL's own text targets are left out)."""
    origin: dict[str, str] = field(default_factory=dict)
    """'pass:NAME' / 'dialect:NAME' / 'target:NAME' -> the plugin (entry point) that defines it."""
    broken: dict[str, str] = field(default_factory=dict)
    """Plugin name -> why it was skipped."""

    def add(self, plugin: str, universe: Universe) -> None:
        tables = (("dialect", universe.all_dialects, self.dialects),
                  ("pass", universe.all_passes, self.passes),
                  ("target", _targets_of(plugin, universe), self.targets))
        clashes = [f"{kind} '{name}' (already defined by {self.origin[f'{kind}:{name}']})"
                   for kind, new, _ in tables for name in new
                   if f"{kind}:{name}" in self.origin]
        if clashes:
            self.broken[plugin] = "redefines " + ", ".join(clashes)
            return
        for kind, new, table in tables:
            for name, factory in new.items():
                table[name] = factory
                self.origin[f"{kind}:{name}"] = plugin

    def plugin_of(self, kind: str, name: str) -> str | None:
        """The third-party plugin defining `name`, or None for xDSL / q35c built-ins."""
        plugin = self.origin.get(f"{kind}:{name}")
        return None if plugin in BUILTIN_PLUGINS else plugin


def _targets_of(plugin: str, universe: Universe) -> dict[str, Callable[[], type[Target]]]:
    """The q35c targets a plugin's universe provides: none of xDSL's, and for q35c also
    those whose name xDSL's universe already uses (compiler/universe.py XDSL_TARGET_NAMES)."""
    if plugin == "xdsl":
        return {}
    if plugin == "q35c":
        from q35c.compiler.universe import TARGETS

        return {**universe.all_targets, **TARGETS}
    return universe.all_targets


@functools.cache
def load_registry() -> Registry:
    """The registry of this Python environment (computed once per process)."""
    registry = Registry()
    points = sorted(entry_points(group="xdsl.universe"),
                    key=lambda ep: (ep.name not in BUILTIN_PLUGINS, ep.name != "xdsl", ep.name))
    for point in points:
        try:
            universe = point.load()
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # a plugin's import error, even sys.exit, is its own
            registry.broken[point.name] = f"failed to load ({type(err).__name__}: {err})"
            continue
        if not isinstance(universe, Universe):
            registry.broken[point.name] = f"{point.value} is not an xdsl Universe"
            continue
        registry.add(point.name, universe)
    return registry


def load_entry(registry: Registry, kind: str, name: str, factory):
    """`factory()` (a pass, dialect or target of the registry); whatever it raises, except
    Ctrl-C, becomes an error naming it and its plugin, so plugin code cannot end q35c."""
    try:
        return factory()
    except KeyboardInterrupt:
        raise
    except BaseException as err:
        raise Q35cError(f"{kind} '{name}'{plugin_note(registry, kind, name)} failed to load: "
                        f"{describe_exception(err)}") from None


def describe_exception(err: BaseException) -> str:
    """`Type: first line` of an exception, with the exit code of a SystemExit."""
    if isinstance(err, SystemExit):
        return f"SystemExit (it called sys.exit({err.code!r}))"
    return f"{type(err).__name__}: {first_line(err)}"


def plugin_note(registry: Registry, kind: str, name: str) -> str:
    plugin = registry.plugin_of(kind, name)
    return f" (plugin '{plugin}')" if plugin else ""
