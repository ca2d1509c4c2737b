"""What the bus needs to know about a plugin: its name, its parameters, its role.

Any object with ``@hookimpl`` methods is a plugin. Subclassing :class:`Plugin` is optional and
buys three things: the constructor's arguments are recorded as given (so the log header can
rebuild the plugin for replay; a plain object's are read back from its attributes, where it
keeps them, see :func:`plugin_spec`), a ``name`` that defaults to the class name, and the two
role flags below. Arguments that do not fit the constructor are a TypeError that names the class
and lists its parameters (``EarlyStopping() got an unexpected keyword argument 'patiense' (did
you mean 'patience'?); it takes EarlyStopping(monitor, ...)``), as Python's own message would if
the recording did not come first.

Every plugin is also a Keras callback (:class:`KerasCallbackMethods`): ``model.fit(x, y,
callbacks=[EarlyStopping(), CSVLogger("log.csv")])`` runs the plugins on one bus, built at
Keras's first call (see :mod:`eventbus.integrations.keras`). A hook implementation named after a
Keras method (``on_epoch_end(self, event)``) is kept under ``_bus_on_epoch_end`` for the bus,
and the name itself answers both callers: an event goes to the hook, Keras's ``(epoch, logs)``
to the fit's bus. Keras is imported only when Keras calls.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from ._markers import PROJECT_NAME
from .events import Event
from .filters import filters_of
from .records import PluginSpec, Record

__all__ = ["KERAS_METHODS", "KerasCallbackMethods", "Plugin", "plugin_name", "plugin_spec",
           "set_aside", "why_not_a_plugin"]

#: The methods Keras 3 calls on every callback, with how each takes its arguments.
KERAS_METHODS: dict[str, str] = {
    "on_train_begin": "logs", "on_train_end": "logs",
    "on_epoch_begin": "epoch", "on_epoch_end": "epoch",
    "on_batch_begin": "batch", "on_batch_end": "batch",
    "on_train_batch_begin": "batch", "on_train_batch_end": "batch",
    "on_test_begin": "logs", "on_test_end": "logs",
    "on_test_batch_begin": "batch", "on_test_batch_end": "batch",
    "on_predict_begin": "logs", "on_predict_end": "logs",
    "on_predict_batch_begin": "batch", "on_predict_batch_end": "batch",
}
_MARK = f"{PROJECT_NAME}_impl"  # the attribute pluggy's hookimpl marker sets
_BUS = "_bus_"  # where a hook implementation named after a Keras method is kept


def keras_call(plugin: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A Keras method called Keras's way on ``plugin``: handed to the fit it is part of."""
    try:
        from .integrations.keras import keras_hook
    except ImportError as exc:
        raise TypeError(f"{plugin_name(plugin)}.{method} was called as Keras calls a callback "
                        f"({method}({KERAS_METHODS[method]}, logs)), which needs Keras "
                        f"({exc}); the bus calls it with an event record") from None
    return keras_hook(plugin, method, args, kwargs)


def _keras_entry(method: str, hook: Any) -> Any:
    """The method under a Keras name whose hook implementation moved to ``_bus_<name>``: an
    event (the bus's call, or a test's) goes to the hook, anything else to Keras's fit."""
    takes_event = len(inspect.signature(hook).parameters) > 1

    @functools.wraps(hook)
    def entry(self: Any, *args: Any, **kwargs: Any) -> Any:
        if (args and isinstance(args[0], (Event, Record))) or "event" in kwargs or \
                (not takes_event and not args and not kwargs and self._keras_fit is None):
            return hook(self, *args, **kwargs)
        return keras_call(self, method, args, kwargs)

    del entry.__dict__[_MARK]  # not a hook implementation itself (wraps copied the marker)
    return entry


class _BusHook:
    """A hook implementation named after a Keras method, kept under ``_bus_<name>``. An instance
    that sets the Keras name itself to None (the old way to switch a class's implementation off,
    ``self.on_batch_end = None``) switches this off too."""

    def __init__(self, method: str, hook: Any):
        self.method, self.hook = method, hook

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        if obj is None:
            return self.hook
        if getattr(obj, self.method, self) is None:
            return None
        return self.hook.__get__(obj, cls)


def _keras_method(method: str) -> Any:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return keras_call(self, method, args, kwargs)

    call.__name__ = call.__qualname__ = method
    call.__doc__ = f"Keras's ``{method}``: runs this plugin's fit (see KerasCallbackMethods)."
    return call


class KerasCallbackMethods:
    """What makes an object a Keras 3 callback: ``set_model``, ``set_params`` and every
    ``on_*`` method Keras's ``CallbackList`` calls.

    The plugins Keras is given for one ``fit`` (``evaluate``, ``predict``) are told the model
    through ``set_model`` and share one bus, built at the first call: the first of them hands
    each call to the bus, the others let it pass (see :mod:`eventbus.integrations.keras`).
    None of the methods is marked as Keras's default, so Keras calls them on its training
    thread, in order.
    """

    #: The Keras fit this object is part of (set by ``set_model``).
    _keras_fit: Any = None
    #: Where ``log=`` asked the fit's bus to record (see :class:`Plugin`).
    _keras_log: Any = None

    def set_model(self, model: Any) -> None:
        """Keras gives the model: this object joins the model's fit."""
        from .integrations.keras import join_fit

        self.model = model
        join_fit(self, model)

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params
        if self._keras_fit is not None:
            self._keras_fit.params = params


for _method in KERAS_METHODS:
    setattr(KerasCallbackMethods, _method, _keras_method(_method))
del _method


class Plugin(KerasCallbackMethods):
    """Optional base class for plugins.

    ``side_effects = True`` marks a plugin that writes files or talks to the network (loggers,
    sinks): its failures are recorded as ``sink_failed`` and never stop training, and replay leaves
    it out. Decision plugins keep the default ``False``: they are pure functions of the events.

    Every constructor also takes ``log=`` (unless it names a ``log`` parameter of its own): where
    the bus of a Keras fit the plugin is given to records (a path, a sink or a list of them). It
    is not a parameter of the plugin: not in ``get_config()``, not in the log header.
    """

    side_effects: ClassVar[bool] = False
    #: True for a plugin that sets the learning rate (ReduceLROnPlateau, LearningRateScheduler):
    #: with one on the bus, every epoch's logs carry ``learning_rate``, as Keras's logs do only
    #: when such a callback is in the list.
    logs_learning_rate: ClassVar[bool] = False
    #: The name the plugin is registered and recorded under; defaults to the class name.
    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__ or not cls.__dict__["name"]:
            cls.name = cls.__name__
        for method in KERAS_METHODS:
            hook = cls.__dict__.get(method)
            opts = getattr(hook, _MARK, None)
            if opts is not None:
                # Keras calls this name too: the bus's hook moves aside (pluggy's specname).
                setattr(hook, _MARK, {**opts, "specname": opts.get("specname") or method})
                setattr(cls, _BUS + method, _BusHook(method, hook))
                setattr(cls, method, _keras_entry(method, hook))
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_records_config", False):
            return
        signature = inspect.signature(init)

        takes_log = "log" in signature.parameters

        @functools.wraps(init)
        def __init__(self: Plugin, *args: Any, **kw: Any) -> None:
            if not takes_log and "log" in kw:
                # Where the bus of a Keras fit records (not a parameter of the plugin).
                object.__setattr__(self, "_keras_log", kw.pop("log"))
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
            # pluggy only takes routines as hook implementations: None hides the method (kept
            # under _bus_<hook> when Keras calls the name itself).
            setattr(self, _BUS + hook if hasattr(type(self), _BUS + hook) else hook, None)


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


def set_aside(cls: type, hook: str) -> Any:
    """The implementation of ``hook`` that ``cls`` keeps aside, under ``_bus_<hook>``, because
    Keras calls a method of that name itself (see :class:`Plugin`); None when it keeps none."""
    return getattr(cls, _BUS + hook, None)


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


class _NotKept:
    """A constructor parameter a plain plugin does not keep where :func:`plugin_spec` looks:
    its value is unknown, so the header cannot record it."""

    def __init__(self, text: str):
        self.text = text


def _kept(plugin: object, name: str) -> Any:
    """The value ``plugin`` keeps for its constructor parameter ``name``: the instance
    attribute ``name`` or ``_name`` (Keras's ``get_config`` habit), or a :class:`_NotKept`.

    Only the instance's own attributes count (its ``__dict__``, a slot or a property): a class
    attribute of the same name is a default the constructor may have been given otherwise.
    """
    own = getattr(plugin, "__dict__", None)
    for attr in (name, f"_{name}"):
        if (isinstance(own, dict) and attr in own) or \
                inspect.isdatadescriptor(inspect.getattr_static(type(plugin), attr, None)):
            try:
                return getattr(plugin, attr)
            except Exception:  # an unset slot, a property that raises
                continue
    return _NotKept(f"<unrecordable: not kept as self.{name} or self._{name}>")


def _kept_config(plugin: object) -> dict[str, Any]:
    """The constructor arguments of a plugin without ``get_config`` (not a :class:`Plugin`),
    read back from its attributes by the names of its class's ``__init__`` parameters.

    A parameter the instance does not keep is a :class:`_NotKept`, whatever its default: the
    argument it was built with is unknown, and replay must not guess it. ``*args`` and
    ``**kwargs`` are recorded only when kept and empty; otherwise they cannot be given back by
    name, and are a :class:`_NotKept` too.
    """
    try:
        signature = inspect.signature(type(plugin))
    except (TypeError, ValueError):  # a class whose constructor Python cannot describe
        return {"__init__": _NotKept("<unrecordable: constructor signature unknown>")}
    config: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        value = _kept(plugin, name)
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            stars = "*" if param.kind is param.VAR_POSITIONAL else "**"
            if isinstance(value, _NotKept) or not isinstance(value, (tuple, list, dict)):
                config[name] = _NotKept(f"<unrecordable: {stars}{name} not kept as "
                                        f"self.{name} or self._{name}>")
            elif value:
                config[name] = _NotKept(f"<unrecordable {stars}{name}>")
            continue  # kept and empty: nothing to pass back
        config[name] = value
    return config


def _placeholder(value: Any) -> str:
    """What the header shows for a parameter it cannot record."""
    if isinstance(value, _NotKept):
        return value.text
    return f"<unrecordable {type(value).__name__}>"


def plugin_spec(plugin: object) -> PluginSpec:
    """How the log header describes ``plugin``.

    Parameters come from ``get_config()`` where the plugin has it (every :class:`Plugin` does).
    A plugin without it (a plain object with ``@hookimpl`` methods) is read back the way Keras's
    ``get_config`` habit reads one: each parameter of its class's ``__init__`` from the instance
    attribute of the same name (or ``_name``). A parameter that is not plain data (a callable,
    an open file), or that a plain plugin does not keep, cannot be recorded: the spec then says
    ``recordable=False``, shows those parameters as ``"<unrecordable ...>"``, and replay asks
    for an instance rather than rebuild the plugin with guessed arguments.
    """
    get_config = getattr(plugin, "get_config", None)
    params: dict[str, Any] = dict(get_config()) if callable(get_config) else \
        _kept_config(plugin)
    recordable = _recordable(params)
    if not recordable:
        params = {k: (v if _recordable({k: v}) else _placeholder(v))
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
