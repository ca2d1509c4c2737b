"""The shape the code keeps: which module may import which, and what no module does.

Read from the source with ``ast``, so a rule broken anywhere (a function-level import included)
fails here with the file and line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("eventbus", "plugins", "sinks")
#: The modules of the core that wire everything together: the command line and its helpers.
WIRING = {"eventbus.cli", "eventbus.demo", "eventbus.convert"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports(module: str, *, top_level_only: bool,
            type_checking: bool = False) -> Iterator[tuple[str, list[str], int]]:
    """(imported module, names imported from it, line) for each import in ``module``; with
    ``top_level_only``, only those run when the module is imported (not in functions); with
    ``type_checking``, those under ``if TYPE_CHECKING:`` too."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))

    def walk(body: list[ast.stmt]) -> Iterator[ast.stmt]:
        for node in body:
            yield node
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) \
                    and not type_checking:
                continue
            if top_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    yield from walk([n for n in inner if isinstance(n, ast.stmt)] +
                                    [s for h in inner if isinstance(h, ast.ExceptHandler)
                                     for s in h.body])

    for node in walk(tree.body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            yield _resolve(module, node), [a.name for a in node.names], node.lineno


def project(name: str) -> str | None:
    """The project module ``name`` is, or is in (``eventbus.records`` for
    ``eventbus.records.Warning``); None outside the project."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def test_no_import_cycles() -> None:
    """No module needs a module that needs it back: not when imported, not in a function that
    imports late, not for type checking. (A package's ``__init__`` re-exports its modules, so
    an edge to a package is not counted: it is what the package is for.)"""
    packages = {m for m, path in MODULES.items() if path.name == "__init__.py"}
    graph = {m: {p for name, names, _ in imports(m, top_level_only=False, type_checking=True)
                 for target in [name, *(f"{name}.{n}" for n in names)]
                 if (p := project(target)) and p != m and p not in packages}
             for m in MODULES}
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(node)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_names_across_modules(module: str) -> None:
    """A module uses another's public names only: ``from x import _y`` is a private contract."""
    bad = [(line, target, name) for target, names, line in imports(module, top_level_only=False)
           if project(target) and project(target) != module
           for name in names if name.startswith("_") and not name.startswith("__")]
    assert bad == [], f"{MODULES[module]} imports private names: {bad}"


def test_the_core_imports_no_plugin_and_no_sink() -> None:
    """The core finds plugins through the registry; only the command line wires plugins in."""
    bad = [(m, line, target) for m in MODULES if m.startswith("eventbus") and m not in WIRING
           for target, _, line in imports(m, top_level_only=False)
           if target.split(".")[0] in ("plugins", "sinks")]
    assert bad == []


def test_bridges_do_not_import_plugins() -> None:
    """A framework bridge adapts a model and a loop; it does not depend on the callbacks."""
    bad = [(m, line, target) for m in MODULES if m.startswith("eventbus.integrations")
           for target, _, line in imports(m, top_level_only=False)
           if target.split(".")[0] == "plugins"]
    assert bad == []


def test_sinks_do_not_import_plugins() -> None:
    bad = [(m, line, target) for m in MODULES if m.startswith("sinks")
           for target, _, line in imports(m, top_level_only=False)
           if target.split(".")[0] == "plugins"]
    assert bad == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("plugins")))
def test_plugins_never_print(module: str) -> None:
    """Messages are data: a plugin returns records, and a console sink prints them."""
    tree = ast.parse(MODULES[module].read_text())
    prints = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
              and isinstance(node.func, ast.Name) and node.func.id == "print"]
    assert prints == [], f"{MODULES[module]} calls print() at lines {prints}"
