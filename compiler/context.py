"""The xDSL context q35c parses and rewrites IR in.

Below the driver so that targets (the Groq simulator re-reads the IR it wrote) can make one
without importing the driver.
"""

from __future__ import annotations

from xdsl.context import Context

from q35c.compiler.registry import Registry, load_registry


def make_context(registry: Registry | None = None) -> Context:
    """A context that knows every registered dialect (loaded lazily on first use)."""
    registry = registry or load_registry()
    ctx = Context()
    for name, factory in registry.dialects.items():
        ctx.register_dialect(name, factory)
    return ctx
