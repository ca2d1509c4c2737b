"""Plugin names to plugin classes, for built-ins and third-party plugins alike.

Plugins are found through the ``eventbus`` entry-point group; this project declares its own
built-ins there too, so a third-party plugin is looked up exactly like ``EarlyStopping``. Classes
can also be registered at run time (``registry.register(cls)``), e.g. a plugin defined in a
script that will be replayed in the same process. Entry points are loaded lazily, on the first
lookup that needs them, so ``import eventbus`` stays fast.

Replay rebuilds plugins by name through this registry only: a log names plugins, it never names
code to import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._markers import PROJECT_NAME
from .errors import RegistryError

if TYPE_CHECKING:
    from importlib import metadata

__all__ = ["ENTRY_POINT_GROUP", "PluginInfo", "Registry", "registry"]

ENTRY_POINT_GROUP = PROJECT_NAME


@dataclass(frozen=True)
class PluginInfo:
    """Where a registered plugin comes from."""

    name: str
    target: str
    distribution: str | None
    version: str | None


class Registry:
    def __init__(self, *, group: str = ENTRY_POINT_GROUP):
        self._group = group
        self._classes: dict[str, type] = {}
        self._entry_points: dict[str, metadata.EntryPoint] | None = None

    def _eps(self) -> dict[str, metadata.EntryPoint]:
        if self._entry_points is None:
            # Imported here: importlib.metadata and the email parser it brings cost more than
            # the rest of the registry, and only a lookup by name needs them.
            from importlib import metadata

            self._entry_points = {ep.name: ep for ep in metadata.entry_points(group=self._group)}
        return self._entry_points

    def register(self, cls: type, name: str | None = None) -> None:
        """Make ``cls`` known under ``name`` (default: its ``name`` attribute or class name)."""
        name = name or getattr(cls, "name", None) or cls.__name__
        existing = self._classes.get(name)
        if existing is not None and existing is not cls:
            raise RegistryError(
                f"plugin name {name!r} is already registered to "
                f"{existing.__module__}.{existing.__qualname__}; give one of them another name")
        self._classes[name] = cls

    def get(self, name: str) -> type:
        """The class registered as ``name``; loads its entry point on first use."""
        cls = self._classes.get(name)
        if cls is not None:
            return cls
        ep = self._eps().get(name)
        if ep is None:
            raise RegistryError(
                f"no plugin named {name!r} is registered; known: {', '.join(self.names())}. "
                f"Install the package that provides it, or pass an instance")
        try:
            cls = ep.load()
        except Exception as exc:
            raise RegistryError(f"plugin {name!r}: loading entry point {ep.value} "
                                f"failed: {type(exc).__name__}: {exc}") from exc
        self._classes[name] = cls
        return cls

    def build(self, name: str, params: dict[str, Any]) -> Any:
        """Instantiate the plugin ``name`` with ``params``."""
        cls = self.get(name)
        try:
            return cls(**params)
        except TypeError as exc:
            raise RegistryError(f"plugin {name!r} cannot be built from {params}: {exc}") from exc

    def names(self) -> list[str]:
        return sorted(set(self._classes) | set(self._eps()))

    def info(self) -> list[PluginInfo]:
        """Every known plugin with the distribution and version it comes from."""
        out = []
        eps = self._eps()
        for name in self.names():
            ep = eps.get(name)
            if ep is not None:
                dist = ep.dist
                out.append(PluginInfo(name, ep.value, dist.name if dist else None,
                                      dist.version if dist else None))
            else:
                cls = self._classes[name]
                out.append(PluginInfo(name, f"{cls.__module__}:{cls.__qualname__}", None, None))
        return out

    def __contains__(self, name: object) -> bool:
        return name in self._classes or name in self._eps()


#: The process-wide registry the bus, replay and the command line use.
registry = Registry()
