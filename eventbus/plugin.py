"""What the bus needs to know about a plugin: its name, its parameters, its role.

Any object with ``@hookimpl`` methods is a plugin. Subclassing :class:`Plugin` is optional and
buys three things: the constructor's arguments are recorded automatically (so the log header can
rebuild the plugin for replay), a ``name`` that defaults to the class name, and the two role flags
below. Arguments that do not fit the constructor are a TypeError that names the class and lists
its parameters (``EarlyStopping() got an unexpected keyword argument 'patiense' (did you mean
'patience'?); it takes EarlyStopping(monitor, ...)``), as Python's own message would if the
recording did not come first.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from .filters import filters_of
from .records import PluginSpec

__all__ = ["Plugin", "plugin_name", "plugin_spec", "why_not_a_plugin"]


class Plugin:
    """Optional base class for plugins.

    ``side_effects = True`` marks a plugin that writes files or talks to the network (loggers,
    sinks): its failures are recorded as ``sink_failed`` and never stop training, and replay leaves
    it out. Decision plugins keep the default ``False``: they are pure functions of the events.
    """

    side_effects: ClassVar[bool] = False
    #: The name the plugin is registered and recorded under; defaults to the class name.
    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__ or not cls.__dict__["name"]:
            cls.name = cls.__name__
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_records_config", False):
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def __init__(self: Plugin, *args: Any, **kw: Any) -> None:
            # Only the outermost constructor records: a subclass's arguments win over its base's.
            if not hasattr(self, "_config"):
                try:
                    bound = signature.bind(self, *args, **kw)
                except TypeError as exc:
                    # bind's own message does not say whose arguments were wrong.
                    raise TypeError(_bind_message(type(self).__name__, signature, args, kw,
                                                  exc)) from None
                bound.apply_defaults()
                config = dict(bound.arguments)
                config.pop(next(iter(signature.parameters)))
                for name, param in signature.parameters.items():
                    if param.kind is param.VAR_KEYWORD and name in config:
                        config.update(config.pop(name))
                    elif param.kind is param.VAR_POSITIONAL and name in config:
                        config[name] = list(config[name])
                object.__setattr__(self, "_config", config)
            init(self, *args, **kw)

        __init__._records_config = True  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[method-assign]

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, as given (defaults filled in)."""
        return dict(getattr(self, "_config", {}))

    def unsubscribe(self, *hooks: str) -> None:
        """Leave out hooks this instance does not need, so the bus never calls it for them.

        Call it in ``__init__``, before the plugin is on a bus: e.g. a checkpoint that saves
        once per epoch unsubscribes from ``on_batch_end`` and costs nothing per batch.
        """
        for hook in hooks:
            # pluggy only takes routines as hook implementations: None hides the method.
            setattr(self, hook, None)


def _bind_message(cls: str, signature: inspect.Signature, args: tuple[Any, ...],
                  kw: dict[str, Any], exc: TypeError) -> str:
    """A constructor's argument error as Python words it, naming the class and its parameters."""
    params = list(signature.parameters.values())[1:]  # without self
    listed: list[str] = []
    for param in params:
        if param.kind is param.KEYWORD_ONLY and not any(p.startswith("*") for p in listed):
            listed.append("*")
        listed.append({param.VAR_POSITIONAL: "*", param.VAR_KEYWORD: "**"}.get(param.kind, "")
                      + param.name)
    takes = f"{cls}({', '.join(listed)})"
    positional = [p.name for p in params
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    given = f"{len(args)} {'was' if len(args) == 1 else 'were'} given"
    if str(exc) == "too many positional arguments":
        if not params:
            return f"{cls}() takes no arguments but {given}"
        if not positional:
            return f"{cls}() takes no positional arguments but {given}; pass them by keyword: " \
                   f"{takes}"
        return (f"{cls}() takes at most {len(positional)} positional argument"
                f"{'' if len(positional) == 1 else 's'} ({', '.join(positional)}) but {given}; "
                f"pass the others by keyword: {takes}")
    text = str(exc)
    message = f"{cls}() {'got ' if text.startswith('multiple values') else ''}{text}"
    if "unexpected keyword argument" in text:
        import difflib  # only on this error path: import eventbus stays lean

        names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        unknown = [k for k in kw if k not in names]
        close = difflib.get_close_matches(unknown[0], names, n=1) if unknown else []
        if close:
            message += f" (did you mean {close[0]!r}?)"
    return f"{message}; it takes {takes}"


def why_not_a_plugin(obj: object) -> str | None:
    """What ``obj`` is, worded to follow "is", when it cannot be a plugin (a class, None, plain
    data: a common slip is a plugin's name or class for the plugin); None otherwise."""
    if isinstance(obj, type):
        return f"the class {obj.__name__}; pass an instance ({obj.__name__}(...))"
    if obj is None or isinstance(obj, (str, bytes, int, float, complex, Mapping, list, tuple,
                                       set)):
        return (f"{type(obj).__name__} {obj!r:.60}, not a plugin: a plugin is an object with "
                "@hookimpl methods (to name a built-in one, build it: plugins.EarlyStopping())")
    return None


def plugin_name(plugin: object) -> str:
    """The name a plugin is registered and recorded under."""
    name = getattr(plugin, "name", None)
    if isinstance(name, str) and name:
        return name
    return type(plugin).__name__


def _recordable(params: dict[str, Any]) -> bool:
    try:
        orjson.dumps(params, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return False
    return True


def plugin_spec(plugin: object) -> PluginSpec:
    """How the log header describes ``plugin``.

    Parameters come from ``get_config()`` where the plugin has it. A parameter that is not plain
    data (a callable, an open file) cannot be recorded: the spec then says ``recordable=False``,
    lists the names of those parameters, and replay asks for an instance.
    """
    get_config = getattr(plugin, "get_config", None)
    params: dict[str, Any] = dict(get_config()) if callable(get_config) else {}
    recordable = _recordable(params)
    if not recordable:
        params = {k: (v if _recordable({k: v}) else f"<unrecordable {type(v).__name__}>")
                  for k, v in params.items()}
    cls = type(plugin)
    return PluginSpec(
        name=plugin_name(plugin),
        params=params,
        recordable=recordable,
        side_effects=bool(getattr(plugin, "side_effects", False)),
        cls=f"{cls.__module__}:{cls.__qualname__}",
        filters=[f.as_dict() for f in filters_of(plugin)],
    )
