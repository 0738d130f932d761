"""The layers: a lower wing imports nothing from a wing above it (docs/ARCHITECTURE.md)."""
from __future__ import annotations
import ast
from conftest import ROOT


PACKAGE = ROOT / "repaint_cli"


def test_runtime_imports_nothing_from_the_wings_above_it():
    for path in sorted((PACKAGE / "runtime").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.split(".")[0] in ("tables", "images", "cli"), (path.name, node.module)
