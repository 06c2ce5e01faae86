"""C renderers for native steps kept out of printer.py: one module per kernel family.

A family module (listed in `FAMILIES`, imported on first use) registers a function
`render(printer, step) -> str` for its kernel names with `@renders("kernel", ...,
runtime="q35rt_family.c")`; `runtime` names the fragment of `runtime/` the kernels call,
which the printer appends to model.c only when a step uses one of them (so models that do
not need a family carry none of its code). Renderers use the printer's helpers
(`printer.ptr(buf)`, `ctype(buf)`) exactly as the printer's own `render_<kernel>` methods do.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable

FAMILIES: tuple[str, ...] = ("onnx_tensor", "onnx_cnn", "onnx_attention", "onnx_quant",
                             "onnx_rnn", "onnx_misc", "onnx_extra", "onnx_control",
                             "quant_gather", "fold")
"""Modules of `q35c.targets.c` that register renderers, imported by `renderer()`."""

Renderer = Callable[..., str]
_RENDERERS: dict[str, Renderer] = {}
_RUNTIME: dict[str, tuple[str, ...]] = {}
_loaded = False


def renders(*kernels: str, runtime: str | tuple[str, ...] | None = None
            ) -> Callable[[Renderer], Renderer]:
    """Register the decorated function as the C renderer of each of `kernels`; `runtime`
    may list several fragments, those the kernels' own fragment (the last) builds on
    first."""
    def register(render: Renderer) -> Renderer:
        for kernel in kernels:
            if kernel in _RENDERERS:
                raise ValueError(f"two C renderers for kernel {kernel}")
            _RENDERERS[kernel] = render
            if runtime is not None:
                _RUNTIME[kernel] = (runtime,) if isinstance(runtime, str) else runtime
        return render
    return register


def _load() -> None:
    global _loaded
    if not _loaded:
        for family in FAMILIES:
            importlib.import_module(f"q35c.targets.c.{family}")
        _loaded = True


def renderer(kernel: str) -> Renderer | None:
    """The registered renderer of `kernel`, if any."""
    _load()
    return _RENDERERS.get(kernel)


def runtime_fragments(steps: Iterable) -> list[str]:
    """The runtime fragments these steps need, in a fixed order: those of their registered
    kernels (by the name of each kernel's own fragment, the fragments it builds on before
    it), and the narrow element types' conversions where a buffer has one."""
    from q35c.targets.c.narrow import RUNTIME as NARROW_RUNTIME, is_narrow

    _load()
    needs: set[tuple[str, ...]] = set()
    for step in steps:
        if step.kernel in _RUNTIME:
            needs.add(_RUNTIME[step.kernel])
        if any(is_narrow(b.dtype) for b in (*step.ins, *step.outs)):
            needs.add((NARROW_RUNTIME,))
    fragments: list[str] = []
    for needed in sorted(needs, key=lambda f: (f[-1], f)):
        fragments += [name for name in needed if name not in fragments]
    return fragments
