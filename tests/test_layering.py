"""Dependencies flow one way: data <- models <- train <- eval/export <- serve; only cli imports
everything. Every `tuneforge.*` import in src/ (module level or inside a function) is checked
against the layer of the package that holds it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tuneforge"

# A package may import its own modules and those of strictly lower layers.
LAYERS = {
    "errors": 0,  # foundation: the one error type, then typed config and atomic file helpers
    "config": 1,
    "fsutil": 1,
    "data": 2,
    "models": 3,
    "train": 4,
    "estimate": 5,  # train's memory/time model, beside eval
    "eval": 5,
    "export": 6,  # round-trip validation predicts the way eval does (eval.predict)
    "compare": 6,  # runs train and eval per variant
    "serve": 7,
    "ui": 8,  # the dashboard's playground talks to serve's engine
    "cli": 9,
    "__main__": 10,
}


def package_of(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def tuneforge_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported top-level package) for every `tuneforge.X` import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "tuneforge" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


SOURCES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


def test_every_package_has_a_layer():
    packages = {package_of(p) for p in SOURCES}
    assert packages <= set(LAYERS), f"give these a layer: {sorted(packages - set(LAYERS))}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_only_point_down(path):
    own = package_of(path)
    upward = [
        f"{path.relative_to(SRC)}:{line} imports tuneforge.{target} (layer {LAYERS[target]})"
        for line, target in tuneforge_imports(path)
        if target != own and LAYERS[target] >= LAYERS[own]
    ]
    assert not upward, f"{own} is layer {LAYERS[own]}; " + "; ".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    # The check itself: a models module importing export must be found.
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    from tuneforge.export.gguf_writer import write_gguf\n")
    assert tuneforge_imports(source) == [(2, "export")]
    assert LAYERS["export"] >= LAYERS["models"]
