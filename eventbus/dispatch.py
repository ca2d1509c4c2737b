"""Which plugin is called for which hook, in which order, and the one loop that calls them.

pluggy registers and validates plugins (argument names, unknown hooks, no hook wrappers); calls
do not go through pluggy's hook caller. For each hook the dispatcher keeps a tuple of the bound
implementations of the active plugins, in the order the plugins were given (Keras's list order;
pluggy's own is last-registered-first), rebuilt whenever a plugin is added or disabled. A hook
nobody implements costs nothing; the pure subset (plugins without side effects) is what replay
and resume feed.

Every hook call goes through :meth:`Dispatcher.call`: one loop, where a handler that raises is
handed to a failure callback and what it returns to a result callback. The bus's ``batch_end``
has an inlined copy of it (the hottest path; see the comment there).
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import heapq
import inspect
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pluggy

from . import hookspecs
from ._markers import PROJECT_NAME
from .errors import ConfigError
from .filters import filters_of, guard
from .plugin import KERAS_METHODS, Plugin, plugin_name, set_aside, why_not_a_plugin
from .records import KINDS
from .sink import Sink

__all__ = ["EVENT_HOOKS", "HOOKS", "Dispatcher"]

#: The hook of each observation kind (``on_epoch_end`` for ``epoch_end``).
EVENT_HOOKS = tuple(f"on_{kind}" for kind, cls in KINDS.items() if cls.category == "observation")
#: Hooks called with keywords; an implementation may take any subset of their arguments.
_KEYWORD_HOOKS = ("augment_epoch_logs", "on_attach", "resume_from")
HOOKS = (*EVENT_HOOKS, "on_decision", "on_close", *_KEYWORD_HOOKS)

Handler = Callable[[Any], Any]


class Dispatcher:
    """The plugins of a bus, their labels, and a call table per hook.

    ``on_change()`` is called after every rebuild of the tables (the bus refreshes what it
    derives from them).
    """

    def __init__(self, on_change: Callable[[], None] = lambda: None):
        self._pm = pluggy.PluginManager(PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        #: Called after every rebuild of the call tables.
        self.on_change = on_change
        #: Every plugin registered, in call order (disabled ones included).
        self.plugins: list[object] = []
        self._labels: dict[int, str] = {}
        #: id(what pluggy registered) -> the plugin it stands for (see _carrier).
        self._carried: dict[int, object] = {}
        self._disabled: set[int] = set()
        #: (id(plugin), hook, id(function)) -> its handler (see _handler).
        self._handlers: dict[tuple[int, str, int], Handler] = {}
        #: id(plugin) -> its place in call order (list order, moved by run_before/run_after).
        self._rank: dict[int, int] = {}
        #: hook -> the active handlers, in call order. The same dict for the dispatcher's
        #: life, so callers may keep it; its values are replaced on every rebuild.
        self.calls: dict[str, tuple[Handler, ...]] = {}
        #: hook -> the handlers of the plugins without side effects (what replay feeds).
        self.pure: dict[str, tuple[Handler, ...]] = {}
        #: id(handler) -> its plugin, to name the plugin a result or a failure comes from.
        self.owner: dict[int, object] = {}
        #: Whether epoch logs carry the learning rate: a plugin on the bus sets the rate
        #: (``Plugin.logs_learning_rate``). A disabled one counts: the run's columns stay.
        self.logs_learning_rate = False
        #: Inside :meth:`deferred`: plugins are ordered and tabled once, at its end.
        self._deferring = False
        self._taken: set[str] = set()  # the labels given
        self._rebuild()

    # --- plugins -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Plugins registered inside are put in call order, and the call tables built, once at
        the end (per plugin, that work grows with the plugins already there: a replay of a
        header listing thousands took minutes). Their hooks are not called until then."""
        if self._deferring:
            yield
            return
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        self._rank = _call_order(self.plugins)
        self._rebuild()

    def register(self, plugin: object) -> str:
        """Add ``plugin`` after those already there; returns its label (its name, with ``#2``,
        ``#3`` ... for a second or third plugin of one name)."""
        problem = why_not_a_plugin(plugin)
        if problem:
            raise ConfigError(f"Bus: a plugin given is {problem}", field="plugins",
                              plugin=plugin.__name__ if isinstance(plugin, type) else None)
        if id(plugin) in self._labels:
            raise ConfigError(f"plugin {plugin_name(plugin)!r} is already on this bus",
                              plugin=plugin_name(plugin))
        name = plugin_name(plugin)
        taken = self._taken
        label, n = name, 1
        while label in taken:
            n += 1
            label = f"{name}#{n}"
        carrier = self._carrier(plugin)
        try:
            self._pm.register(carrier, name=f"{label}@{id(plugin)}")
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self._pm.is_registered(carrier):  # pluggy 1.7 takes it back itself
                self._pm.unregister(carrier)
            raise ConfigError(f"plugin {label!r}: {_why_invalid(carrier, self._pm) or exc}",
                              plugin=label) from exc
        # (A sink takes the run as records: its methods named like Keras's are for Keras's fit.)
        if not vars(carrier) and not isinstance(plugin, (types.ModuleType, Sink)):
            uncalled = _why_uncalled(plugin)
            if uncalled:
                self._pm.unregister(carrier)
                raise ConfigError(f"plugin {label!r}: {uncalled}", plugin=label)
        for hook in self._hooks_of(carrier):
            for impl in getattr(self._pm.hook, hook).get_hookimpls():
                if impl.plugin is carrier and (impl.hookwrapper or impl.wrapper):
                    self._pm.unregister(carrier)
                    raise ConfigError(f"plugin {label!r}: {hook} is a hook wrapper; the bus "
                                      "calls plugins in list order and has no wrappers",
                                      plugin=label)
        if not self._deferring:
            try:
                rank = _call_order([*self.plugins, plugin])
            except ConfigError:
                self._pm.unregister(carrier)
                raise
            self._rank = rank
        self.plugins.append(plugin)
        self._labels[id(plugin)] = label
        self._taken.add(label)
        self._carried[id(carrier)] = plugin
        if not self._deferring:
            self._rebuild()
        return label

    def _hooks_of(self, carrier: object) -> Iterable[str]:
        """The hooks whose implementations to look at for ``carrier``: those its own marked
        functions name (not every hook's whole list, for every plugin registered), all of them
        for a module."""
        if isinstance(carrier, types.ModuleType):
            return HOOKS
        hooks = set()
        for name, fn in vars(carrier).items():
            opts = getattr(fn, f"{PROJECT_NAME}_impl", None)
            if isinstance(opts, dict):
                hooks.add(opts.get("specname") or name)
        return [hook for hook in HOOKS if hook in hooks]

    def _carrier(self, plugin: object) -> object:
        """What pluggy registers in ``plugin``'s place: an object holding its hook
        implementations, found without ``dir(plugin)``.

        pluggy looks for implementations with ``dir()`` on the plugin, which makes CPython 3.11
        build the instance's ``__dict__``; from then on every attribute read on the plugin, which
        its hooks do on every event, takes about twice as long. Implementations are looked up on
        the class, and on the instance by the hook names; one an instance holds under a name of
        its own (``hookimpl(specname=...)`` set in ``__init__``) is seen among the instance's
        values, and only then is the instance searched with ``dir()``.
        """
        if isinstance(plugin, types.ModuleType):
            return plugin
        names = {n for n in dir(type(plugin)) if not n.startswith("__")} | set(HOOKS)
        found = {name: fn for name in sorted(names)
                 if (fn := _implementation(plugin, name)) is not None}
        known = {id(getattr(fn, "__func__", fn)) for fn in found.values()}
        if any(is_hookimpl(value) and id(getattr(value, "__func__", value)) not in known
               for value in gc.get_referents(plugin)):
            found = {name: fn for name in dir(plugin)
                     if (fn := _implementation(plugin, name)) is not None}
        carrier = _Implementations()
        carrier.__dict__.update(found)
        return carrier

    def label(self, plugin: object) -> str:
        return self._labels[id(plugin)]

    def disable(self, plugin: object) -> None:
        """Call ``plugin`` no more (it stays listed, as the run had it)."""
        self._disabled.add(id(plugin))
        self._rebuild()

    def handlers(self, hook: str, plugin: object) -> tuple[Handler, ...]:
        """``plugin``'s own handlers of ``hook`` (none if it lacks the hook or is disabled)."""
        return tuple(fn for fn in self.calls[hook] if self.owner[id(fn)] is plugin)

    def subscribes(self, kind: str, *, side_effects: bool = False) -> bool:
        """Whether any active plugin (only pure ones unless ``side_effects``) handles
        observations of ``kind``."""
        hook = f"on_{kind}"
        return bool((self.calls if side_effects else self.pure).get(hook))

    def _rebuild(self) -> None:
        rank, disabled, carried = self._rank, self._disabled, self._carried
        self.owner = {}
        for hook in HOOKS:
            # pluggy's tryfirst/trylast move an implementation to the front or back of its
            # hook's table; within each group, the plugins' call order.
            impls = [(impl, plugin) for impl in getattr(self._pm.hook, hook).get_hookimpls()
                     if id(plugin := carried[id(impl.plugin)]) not in disabled]
            impls.sort(key=lambda pair: (_placement(pair[0]), rank[id(pair[1])]))
            pairs = [(self._handler(impl, hook, plugin), plugin) for impl, plugin in impls]
            for fn, plugin in pairs:
                self.owner[id(fn)] = plugin
            self.calls[hook] = tuple(fn for fn, _ in pairs)
            self.pure[hook] = tuple(fn for fn, plugin in pairs
                                    if not getattr(plugin, "side_effects", False))
        self.logs_learning_rate = any(getattr(type(plugin), "logs_learning_rate", False) is True
                                      for plugin in self.plugins)
        self.on_change()

    def _handler(self, impl: Any, hook: str, plugin: object) -> Handler:
        """``impl`` as the call tables hold it: adapted to one argument, behind the plugin's
        event filters. The same object across rebuilds (a filter's clock survives them)."""
        key = (id(plugin), hook, id(impl.function))
        handler = self._handlers.get(key)
        if handler is None:
            handler = guard(hook, filters_of(plugin), _adapt(impl, hook))
            self._handlers[key] = handler
        return handler

    # --- the one call loop ----------------------------------------------------------------------

    def call(self, handlers: Iterable[Handler], arg: Any,
             took: Callable[[object, Any, Any], list[Any] | None],
             failed: Callable[[object, Any, Exception], None]) -> list[Any]:
        """Call each of ``handlers`` with ``arg``, in order.

        A handler that raises is given to ``failed(plugin, arg, exc)`` and the loop goes on
        (``failed`` may raise to end it); what a handler returns, unless None, is given to
        ``took(plugin, arg, out)`` at once, so a later handler sees its effect. Returns
        everything ``took`` returned, in order.
        """
        owner = self.owner
        made: list[Any] = []
        for fn in handlers:
            try:
                out = fn(arg)
            except Exception as exc:
                failed(owner[id(fn)], arg, exc)
                continue
            if out is not None:
                got = took(owner[id(fn)], arg, out)
                if got:
                    made.extend(got)
        return made


def _placement(impl: Any) -> int:
    return 0 if impl.tryfirst else 2 if impl.trylast else 1


def _names(plugin: object, attribute: str) -> tuple[str, ...]:
    value = getattr(plugin, attribute, ())
    names = (value,) if isinstance(value, str) else value
    try:
        names = tuple(names)
    except TypeError:
        names = (value,)
    if not all(isinstance(name, str) for name in names):
        raise ConfigError(f"plugin {plugin_name(plugin)!r}: {attribute} must be a plugin name or "
                          f"a list of plugin names; got {value!r:.80}", field=attribute,
                          plugin=plugin_name(plugin))
    return names


def _call_order(plugins: list[object]) -> dict[int, int]:
    """id(plugin) -> its place in call order: list order, except where a plugin's
    ``run_before`` / ``run_after`` (names of other plugins) asks otherwise.

    A stable topological order: of the plugins free to run next, the earliest in the list goes
    first, so without constraints the order is the list's. A name no plugin on the bus has is
    no constraint (a plugin may say "after CSVLogger" without requiring one). A cycle is an
    error naming it.
    """
    by_name: dict[str, list[int]] = {}
    for i, plugin in enumerate(plugins):
        by_name.setdefault(plugin_name(plugin), []).append(i)
    after: list[set[int]] = [set() for _ in plugins]  # after[i]: plugins i runs after
    for i, plugin in enumerate(plugins):
        for name in _names(plugin, "run_before"):
            for j in by_name.get(name, ()):
                if j != i:
                    after[j].add(i)
        for name in _names(plugin, "run_after"):
            after[i].update(j for j in by_name.get(name, ()) if j != i)
    waiting = [len(a) for a in after]
    unblocks: list[list[int]] = [[] for _ in plugins]
    for i, a in enumerate(after):
        for j in a:
            unblocks[j].append(i)
    ready = [i for i, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for k in unblocks[i]:
            waiting[k] -= 1
            if waiting[k] == 0:
                heapq.heappush(ready, k)
    if len(order) < len(plugins):
        raise ConfigError(f"plugins' run_before/run_after form a cycle: "
                          f"{_cycle(plugins, after, set(order))}", field="run_before")
    return {id(plugins[i]): place for place, i in enumerate(order)}


def _cycle(plugins: list[object], after: list[set[int]], placed: set[int]) -> str:
    """One cycle among the plugins not placed, as 'A runs after B runs after ... A'."""
    i = min(set(range(len(plugins))) - placed)
    path: list[int] = []
    while i not in path:
        path.append(i)
        i = min(j for j in after[i] if j not in placed)
    loop = path[path.index(i):] + [i]
    return " runs after ".join(repr(plugin_name(plugins[k])) for k in loop)


class _Implementations:
    """A plugin's hook implementations, as pluggy registers them (compared by identity)."""


def _implementation(plugin: object, name: str) -> Any:
    """``plugin``'s hook implementation at ``name``, or None.

    Looked up as Python does, so a descriptor that makes one (a hook kept under a Keras
    method's name) gives its bound method: pluggy 1.7 looks without running descriptors and
    would miss it. A property is never run. The carrier then holds plain bound methods, which
    every pluggy finds.
    """
    if isinstance(inspect.getattr_static(type(plugin), name, None), property):
        return None
    try:
        value = getattr(plugin, name)
    except Exception:
        return None
    return value if is_hookimpl(value) else None


def _why_invalid(carrier: object, pm: pluggy.PluginManager) -> str | None:
    """What pluggy refused in ``carrier``, said for a plugin author: a hook name that is not
    one (with the closest), or arguments a hook does not give (hooks take the event)."""
    for name, fn in vars(carrier).items():
        opts = getattr(fn, f"{PROJECT_NAME}_impl", None)
        if not isinstance(opts, dict):
            continue
        hook = opts.get("specname") or name
        caller = getattr(pm.hook, hook, None)
        spec = getattr(caller, "spec", None)
        if spec is None:
            close = difflib.get_close_matches(hook, HOOKS, n=1)
            return (f"{hook!r} is not a hook" + (f" (did you mean {close[0]!r}?)" if close else "")
                    + "; the hooks are those of eventbus.hookspecs")
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            continue
        extra = [p.name for p in params if p.default is p.empty and p.name not in spec.argnames
                 and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if extra:
            given = ", ".join(spec.argnames)
            return (f"{hook} takes ({', '.join(extra)}), which the hook does not give: it is "
                    f"called with ({given})" + (
                        " (the event: event.epoch, event.logs, ...); for methods with "
                        "Keras's arguments (epoch, logs), subclass plugins.Callback"
                        if spec.argnames == ("event",) else ""))
    return None


def _why_uncalled(plugin: object) -> str | None:
    """For a plugin with no hook implementation: why none of its methods named like hooks would
    ever be called (a Keras callback, a callback written Keras's way, a forgotten
    ``@hookimpl``), or None when it has no such method. Looked up on the class: an instance's
    ``__dict__`` is not built for it."""
    cls = type(plugin)
    # Plugin's own Keras methods, which serve Keras's fit, are not the plugin's; nor is a
    # method marked as a hook (kept aside under ``_bus_<name>`` where Keras calls the name):
    # a plugin that unsubscribed every hook it has means to be called for none.
    named = [name for name in dict.fromkeys((*KERAS_METHODS, *HOOKS))
             if callable(method := getattr(cls, name, None))
             and method is not getattr(Plugin, name, None) and not is_hookimpl(method)
             and not is_hookimpl(set_aside(cls, name))]
    if not named:
        return None
    if any(base.__name__ == "Callback" and base.__module__.partition(".")[0] == "keras"
           for base in cls.__mro__):
        return (f"{cls.__name__} is a Keras callback, whose methods take Keras's arguments: the "
                "bus would call none of them. Wrap it: from eventbus.integrations.keras import "
                "from_keras_callback; from_keras_callback(callback, model=keras_model)")
    shown = ", ".join(named[:4]) + (", ..." if len(named) > 4 else "")
    return (f"{cls.__name__} has {shown} but no method marked @eventbus.hookimpl, so the bus "
            "would call none of them. For methods with Keras's arguments (epoch, logs), "
            "subclass plugins.Callback; for hooks taking the event, mark each @hookimpl")


def is_hookimpl(value: object) -> bool:
    return inspect.isroutine(value) and isinstance(
        getattr(value, f"{PROJECT_NAME}_impl", None), dict)


def _adapt(impl: Any, hook: str) -> Handler:
    """A callable taking the hook's one argument positionally, whatever the impl declares.

    Keyword hooks take a dict of their arguments; an impl gets the ones it names (pluggy lets
    it take any subset), ``logs`` as its own copy.
    """
    fn = impl.function
    if hook in _KEYWORD_HOOKS:
        names = tuple(impl.argnames)

        def keywords(arg: dict[str, Any]) -> Any:
            return fn(**{name: dict(arg[name]) if name == "logs" else arg[name]
                         for name in names})

        return keywords
    if impl.argnames:
        return fn  # type: ignore[no-any-return]
    return lambda _arg, _fn=fn: _fn()
