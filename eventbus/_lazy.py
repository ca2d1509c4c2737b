"""Packages whose names load their modules on first use (PEP 562 ``__getattr__``)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any


def lazy_exports(package: str, namespace: dict[str, Any],
                 modules: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list]]:
    """``__getattr__`` and ``__dir__`` for ``package``: name -> submodule that defines it.

    A name is imported from ``package.<submodule>`` the first time it is asked for and kept in
    the package's ``namespace``, so importing the package itself imports none of them.

    A name may be its submodule's own name (``eventbus.replay``, the function in
    ``eventbus/replay.py``). Importing a submodule binds it on its package, which would hide
    such a name behind the module once anything imported ``package.<name>``; the package keeps
    the name instead, as an eager ``from .replay import replay`` would.
    """
    shadowed = frozenset(name for name, module in modules.items() if name == module)
    if shadowed:
        _keep_names_over_submodules(sys.modules[package], shadowed)

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(modules))

    return __getattr__, __dir__


def _keep_names_over_submodules(package: ModuleType, names: frozenset[str]) -> None:
    """Make ``package.<name>`` for each of ``names`` the object of that name in the submodule
    of that name, also when the import system binds the submodule itself there."""
    prefix = package.__name__ + "."

    class Package(type(package)):  # type: ignore[misc]
        def __setattr__(self, name: str, value: Any) -> None:
            if name in names and isinstance(value, ModuleType) and value.__name__ == prefix + name:
                value = getattr(value, name)
            super().__setattr__(name, value)

    package.__class__ = Package
