"""The server's layers import only downward, no servicer imports another, and the README's layout
names every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "server" / "livestate" / "server"
# Bottom to top: a module may import from its own layer or any layer before it.
LAYERS = ("core", "store", "domain", "api", "process")


def _modules() -> dict[str, Path]:
    return {
        ".".join(("livestate", "server", *path.relative_to(PACKAGE).with_suffix("").parts)): path
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py"
    }


def _imports(path: Path) -> set[str]:
    """Every livestate.server module the file imports, at top level or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("livestate.server."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("livestate.server"):
            # `from livestate.server.store import keys` names a module; `from ...keys import Keys`
            # names a member of one.
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in _modules() else node.module)
    return found


def _layer(module: str) -> str:
    return module.split(".")[2]


def test_every_server_module_lives_in_a_layer_package() -> None:
    stray = [m for m in _modules() if _layer(m) not in LAYERS]
    assert stray == []


def test_each_layer_imports_only_its_own_layer_or_those_below() -> None:
    upward = [
        f"{module} imports {imported}"
        for module, path in _modules().items()
        for imported in _imports(path)
        if imported.count(".") >= 2 and _layer(imported) in LAYERS
        if LAYERS.index(_layer(imported)) > LAYERS.index(_layer(module))
    ]
    assert upward == []


def test_no_servicer_imports_another() -> None:
    crossed = [
        f"{module} imports {imported}"
        for module, path in _modules().items()
        if module.endswith("_servicer")
        for imported in _imports(path)
        if imported.endswith("_servicer") and imported != module
    ]
    assert crossed == []


def test_the_readme_layout_names_every_server_module_and_script() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"[\w]+\.(?:py|lua)\b", layout))
    files = {p.name for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    files |= {p.name for p in (PACKAGE / "store" / "lua").rglob("*.lua")}
    assert sorted(files - named) == []
    for layer in LAYERS:
        assert re.search(rf"^\s+{layer}/", layout, re.M), layer
