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

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._markers import PROJECT_NAME
from .errors import RegistryError
from .terminal import printable

if TYPE_CHECKING:
    from importlib import metadata


def _is_plugin_class(obj: Any) -> bool:
    """Whether ``obj`` is a class a plugin is made from: an ``eventbus.Plugin``, or a class
    with at least one method marked ``@hookimpl`` (a plain plugin, or a sink)."""
    if not isinstance(obj, type):
        return False
    from .dispatch import is_hookimpl
    from .plugin import Plugin
    from .sink import Sink

    if issubclass(obj, (Plugin, Sink)):
        return True
    return any(is_hookimpl(value) for klass in obj.__mro__ for value in vars(klass).values())

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

            self._entry_points = {}
            seen: set[str] = set()
            for dist in metadata.distributions():
                # One distribution at a time: metadata.entry_points() parses every installed
                # distribution's file, and one that is malformed (any group, a stray
                # .dist-info on the path) made every command die with a TypeError.
                try:
                    name = (dist.metadata["Name"] or "").lower().replace("_", "-")
                    if name in seen:
                        continue  # the first on the path wins, as for entry_points()
                    seen.add(name)
                    found = [ep for ep in dist.entry_points if ep.group == self._group]
                except Exception as exc:  # noqa: BLE001 - another package's broken metadata
                    warnings.warn(printable(
                        f"the installed distribution at {getattr(dist, '_path', '?')} has "
                        f"metadata that cannot be read ({type(exc).__name__}: {exc}); its "
                        "plugins, if any, are not known"), RuntimeWarning, stacklevel=3)
                    continue
                for ep in found:
                    self._entry_points.setdefault(ep.name, ep)
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
        if not _is_plugin_class(cls):
            # A log names a plugin and its parameters: what an entry point names is called
            # with them, so it must be a plugin's class (os:system, subprocess:Popen are not).
            raise RegistryError(f"plugin {name!r}: entry point {ep.value} names "
                                f"{type(cls).__name__} {getattr(cls, '__qualname__', cls)!r:.80}"
                                ", not a plugin class (a subclass of eventbus.Plugin, or a "
                                "class with @hookimpl methods)")
        self._classes[name] = cls
        return cls

    def build(self, name: str, params: dict[str, Any]) -> Any:
        """Instantiate the plugin ``name`` with ``params``."""
        cls = self.get(name)
        try:
            return cls(**params)
        except TypeError as exc:
            raise RegistryError(f"plugin {name!r} cannot be built from {params!r:.200}: "
                                f"{exc}") from exc

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
