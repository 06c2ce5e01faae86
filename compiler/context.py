"""The xDSL context q35c parses and rewrites IR in.

Below the driver so that targets (the Groq simulator re-reads the IR it wrote) can make one
without importing the driver.
"""

from __future__ import annotations

import functools

from xdsl.context import Context

from q35c.compiler.registry import Registry, load_entry, load_registry


def make_context(registry: Registry | None = None) -> Context:
    """A context that knows every registered dialect (loaded lazily on first use); whatever
    a plugin's dialect raises when it loads becomes a one-line error naming the plugin."""
    registry = registry or load_registry()
    ctx = Context()
    for name, factory in registry.dialects.items():
        if registry.plugin_of("dialect", name) is not None:
            factory = functools.partial(load_entry, registry, "dialect", name, factory)
        ctx.register_dialect(name, factory)
    return ctx
