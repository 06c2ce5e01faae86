"""The import layers of q35c (docs/architecture.md, "Layers"), checked on the source.

Every module's imports are read with `ast`, including imports inside functions, and every
`q35c.*` import is checked against the contract below. A violation names the file, the line
and the import, so the fix is obvious: move the shared code down to a lower layer.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"compiler": "q35c.compiler", "dialects": "q35c.dialects", "passes": "q35c.passes",
            "semantics": "q35c.semantics", "targets": "q35c.targets"}


@dataclass(frozen=True)
class Rule:
    layer: str
    """Modules the rule applies to: this package and everything under it."""
    forbidden: tuple[str, ...] = ()
    """Packages (and their submodules) the layer must not import."""
    allowed_only: tuple[str, ...] | None = None
    """If set, the only q35c packages the layer may import."""

    def violates(self, imported: str) -> bool:
        if self.allowed_only is not None:
            return not any(_within(imported, a) for a in self.allowed_only)
        return any(_within(imported, f) for f in self.forbidden)


CLI = ("q35c.compiler.cli", "q35c.compiler.driver")
RULES = (
    Rule("q35c.dialects", allowed_only=("q35c.dialects", "q35c.compiler.quant",
                                        "q35c.compiler.tensors", "q35c.compiler.diagnostics")),
    Rule("q35c.compiler.frontends", forbidden=("q35c.passes", "q35c.targets", *CLI)),
    Rule("q35c.passes", forbidden=("q35c.targets", "q35c.compiler.frontends", *CLI)),
    Rule("q35c.semantics", forbidden=("q35c.passes", "q35c.targets", "q35c.compiler.frontends",
                                      *CLI)),
    Rule("q35c.targets", forbidden=("q35c.compiler.frontends", *CLI)),
)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [PACKAGES[folder], *rest]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) of every import in `path`, at any depth, made absolute."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # the imported name may be a module: `from q35c.compiler import driver`
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _sources() -> list[Path]:
    return sorted(p for folder in PACKAGES for p in (ROOT / folder).rglob("*.py"))


def layer_violations() -> list[str]:
    violations = []
    for path in _sources():
        module = _module_name(path)
        rules = [r for r in RULES if _within(module, r.layer)]
        for line, imported in _imports(path, module):
            if not _within(imported, "q35c"):
                continue
            for rule in rules:
                if rule.violates(imported):
                    violations.append(f"{path.relative_to(ROOT)}:{line}: {module} imports "
                                      f"{imported}, which layer {rule.layer} must not import")
    return violations


def test_every_module_respects_the_layers():
    violations = layer_violations()
    assert not violations, "layering violations (docs/architecture.md, Layers):\n" + "\n".join(
        violations)


@pytest.mark.parametrize("source, module, expected", [
    ("from q35c.passes.matching import origin_of\n", "q35c.compiler.frontends.onnx.importer",
     "q35c.compiler.frontends.onnx.importer imports q35c.passes.matching"),
    ("def f():\n    from q35c.targets.interp import interpreter\n", "q35c.passes.x",
     "q35c.passes.x imports q35c.targets.interp"),
    ("from q35c import targets\n", "q35c.semantics.arith", "imports q35c.targets"),
    ("from ...compiler import driver\n", "q35c.targets.c.lower",
     "imports q35c.compiler.driver"),
    ("import q35c.compiler.weights\n", "q35c.dialects.q35nn", "imports q35c.compiler.weights"),
])
def test_a_violation_is_reported_with_file_line_and_import(tmp_path, monkeypatch, source,
                                                           module, expected):
    """The checker itself: each kind of import (top level, in a function, `from q35c import`,
    relative, plain `import`) of a forbidden layer is found and named."""
    folder, *rest = module.removeprefix("q35c.").split(".")
    path = tmp_path / folder / Path(*rest).with_suffix(".py")
    path.parent.mkdir(parents=True)
    path.write_text(source)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    violations = layer_violations()
    assert len(violations) == 1
    assert expected in violations[0]
    assert violations[0].startswith(f"{path.relative_to(tmp_path)}:{source.count(chr(10))}:")
