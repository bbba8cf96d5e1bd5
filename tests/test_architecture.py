"""The layering rule (docs/ARCHITECTURE.md): arrows point down only. A module may import
textbatch modules of its own layer or a lower one, never a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "textbatch"
# Lowest first. Top-level modules other than __init__/__main__ are the shared base.
LAYERS = ["base", "data", "batching", "models", "training", "hf", "bench", "cli"]


def layer_of(module: str) -> str:
    """``textbatch.data.dataset`` -> ``data``; ``textbatch.errors`` -> ``base``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else "base"


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every textbatch import in ``path``, function-level ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "textbatch":  # `from textbatch import data`
                names = [f"textbatch.{alias.name}" for alias in node.names]
            found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "textbatch"]


MODULES = sorted(
    p
    for p in PACKAGE.rglob("*.py")
    if p.relative_to(PACKAGE).as_posix() not in ("__init__.py", "__main__.py")
)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_imports_point_down(path):
    own = ".".join(("textbatch", *path.relative_to(PACKAGE).with_suffix("").parts))
    rank = LAYERS.index(layer_of(own))
    upward = [
        f"line {line}: {name} ({layer_of(name)})"
        for line, name in imported_modules(path)
        if LAYERS.index(layer_of(name)) > rank
    ]
    assert not upward, f"{own} ({layer_of(own)}) imports a higher layer: {upward}"


def test_the_rule_catches_an_upward_import(tmp_path):
    module = tmp_path / "sampler.py"
    module.write_text("def f():\n    from textbatch.training.loop import fit\n")
    assert [layer_of(name) for _, name in imported_modules(module)] == ["training"]
    assert layer_of("textbatch.data.dataset") == "data" and layer_of("textbatch.files") == "base"
