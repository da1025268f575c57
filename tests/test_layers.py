"""The package's arrows point one way: cli → steps → report → data → store → method / models → base.

Each module of cisctool/ may import modules of its own floor or of a lower one, never of a higher
one; `base` (config, errors, faults, preemption, console, presets, staleness) imports no other floor. Imports under
`if TYPE_CHECKING:` count too: a type-only arrow is still an arrow.
"""

import ast
from pathlib import Path

import cisctool

PACKAGE = Path(cisctool.__file__).parent
FLOORS = {"base": 0, "models": 1, "method": 1, "store": 2, "data": 3, "report": 4, "steps": 5, "cli": 6}
BASE_MODULES = {"__init__", "config", "errors", "faults", "preemption", "console", "presets", "staleness"}


def floor_of(module: str) -> str:
    """`cisctool.store.locks` → "store"; a top-level module of the base → "base"."""
    parts = module.split(".")
    if len(parts) == 1:
        return "base"
    if parts[1] in BASE_MODULES:
        return "base"
    if parts[1] == "__main__":
        return "cli"
    return parts[1]


def imported_modules(path: Path) -> set[str]:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cisctool"):
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names
                            if (PACKAGE.parent / f"{node.module}.{alias.name}".replace(".", "/")).exists()
                            or (PACKAGE.parent / (f"{node.module}.{alias.name}".replace(".", "/") + ".py")).exists())  # fmt: skip
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names if alias.name.startswith("cisctool"))
    return imported


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def test_every_module_sits_on_a_known_floor():
    unknown = {module_name(path) for path in PACKAGE.rglob("*.py") if floor_of(module_name(path)) not in FLOORS}
    assert not unknown


def test_no_module_imports_upward():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for imported in imported_modules(path):
            if imported == "cisctool":
                continue
            if FLOORS[floor_of(imported)] > FLOORS[floor_of(importer)]:
                upward.append(f"{importer} → {imported}")
    assert not upward, "\n".join(upward)
