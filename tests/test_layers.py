"""The architecture the README draws: each layer imports only the layers below it.

cli -> quickstart -> service -> distillation -> training -> {evaluation, serving, teachers} -> models -> reports
-> config -> metrics -> data -> targets -> {errors, io, progress}. Packages on one rank (evaluation, serving and
teachers) may not import each other. Imports inside functions count too: moving an import into a function does not hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vlmtune

ROOT = Path(vlmtune.__file__).parent
RANKS = {
    "errors": 0, "io": 0, "progress": 0,
    "targets": 1,
    "data": 2,
    "metrics": 3,
    "config": 4,
    "reports": 5,
    "models": 6,
    "evaluation": 7, "serving": 7, "teachers": 7,
    "training": 8,
    "distillation": 9,
    "service": 10,
    "quickstart": 11,
    "cli": 12,
}


def _package(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vlmtune."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vlmtune.")}
    return found


def test_every_module_has_a_rank():
    tops = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in ROOT.rglob("*.py")} - {"__init__", "__main__"}
    assert tops <= set(RANKS), f"give these a rank in RANKS: {sorted(tops - set(RANKS))}"


def test_layers_only_import_downward():
    upward = []
    for path in ROOT.rglob("*.py"):
        own = path.relative_to(ROOT).parts[0].removesuffix(".py")
        if own not in RANKS:
            continue
        for module in _imports(path):
            other = _package(module)
            if other == own or other not in RANKS:
                continue
            if RANKS[other] >= RANKS[own]:
                upward.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not upward, "imports that go up or sideways:\n" + "\n".join(sorted(upward))
