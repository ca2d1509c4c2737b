"""Keras 3: the plugins go straight into ``model.fit``, or through ``KerasBridge(bus)``.

Drop-in: ``model.fit(x, y, callbacks=[EarlyStopping(), CSVLogger("log.csv")])``. Every plugin
is a Keras callback (:class:`eventbus.plugin.KerasCallbackMethods`): Keras's ``set_model`` puts
the plugins it is given for one call into one :class:`KerasFit`, which builds one bus for them
at Keras's first hook (with a :class:`KerasModel` of the model, and a log only where a plugin
was given ``log=``) and closes it when the call ends. The first plugin hands each Keras call to
the fit's bridge; the others let it pass, so each hook reaches the bus once. Keras's own
History (and any Keras callback in the list) runs beside them. An explicit ``KerasBridge(bus)``
in the same list gives its bus to the plugins instead (they are registered on it if they are
not there yet), and the bridge publishes.

:class:`KerasBridge` is a ``keras.callbacks.Callback`` that publishes every Keras hook (fit,
evaluate and predict, batches included) to a bus and applies the bus's decisions to the Keras
model: ``stop_training`` becomes ``model.stop_training`` (Keras stops after the batch or epoch),
the learning rate goes to ``model.optimizer.learning_rate`` and weights are read and restored
through :class:`KerasModel`, which the bridge attaches to the bus when the bus has no model.

The reverse, any Keras-style callback on the bus, is :func:`from_keras_callback`: the object's
Keras methods are called at the matching events, and a Keras callback that sets
``model.stop_training`` (Keras's own ``EarlyStopping``) produces a ``stop_training`` decision
the bus records and applies. For callbacks written against the bus, subclass
:class:`plugins.callback.Callback` instead. Like every framework bridge, this module does not
import ``plugins``.

Any Keras backend works; the tests use the torch backend (``KERAS_BACKEND=torch``).
"""

from __future__ import annotations

import functools
import sys
import threading
import warnings
import weakref
from typing import Any

import keras

from eventbus import Plugin, hookimpl
from eventbus.errors import ConfigError, PluginError
from eventbus.lock import LogInUseError
from eventbus.policy import SinkFailureWarning
from eventbus.records import SinkFailed, StopTraining

from .keras_model import KerasModel

__all__ = ["KerasBridge", "KerasCallbackPlugin", "KerasFit", "KerasModel",
           "from_keras_callback", "join_fit", "keras_hook"]


class KerasBridge(keras.callbacks.Callback):
    """Publish every Keras hook to ``bus`` and apply its decisions to the model.

    ``attach_model``: give the bus a :class:`KerasModel` of the fitted model when it has no
    model adapter (needed for learning-rate and weight decisions and checkpoints). The bus is
    not closed by the bridge: the caller owns it (``with bus: model.fit(...)``). Plugins given
    to the same call beside the bridge run on its bus (see :class:`KerasFit`).
    """

    def __init__(self, bus: Any, *, attach_model: bool = True):
        super().__init__()
        self.bus = bus
        self.attach_model = attach_model
        self._failures_seen = 0
        self._model_faults_shown: set[str] = set()

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        current = self.bus.model
        if self.attach_model and (current is None or (  # a bus reused for another model
                isinstance(current, KerasModel) and current.keras_model is not model)):
            self.bus.model = adapter_of(model)
        join_fit(self, model)  # plugins given to the same fit run on this bus

    def _stop(self) -> None:
        if self.bus.stop_training:
            self.model.stop_training = True
        if len(self.bus.failures) != self._failures_seen:
            self._show_model_faults()

    def _show_model_faults(self) -> None:
        """The model refusing a decision (an optimizer whose rate is a LearningRateSchedule
        refuses set_learning_rate) is shown when it first happens, not only at close()."""
        failures = self.bus.failures
        new, self._failures_seen = failures[self._failures_seen:], len(failures)
        for fault in new:
            if isinstance(fault, SinkFailed) and fault.sink == "model" and \
                    fault.error == "TypeError" and "LearningRateSchedule" in fault.message:
                # An optimizer on a schedule can never take a callback's rate: fit ends with
                # Keras's own TypeError, as it does with Keras's callbacks (in the log already).
                raise TypeError(fault.message)
            if isinstance(fault, SinkFailed) and fault.sink == "model" and \
                    fault.event not in self._model_faults_shown:
                self._model_faults_shown.add(fault.event or "")
                warnings.warn(f"the Keras model refused {fault.event} (seq {fault.cause_seq}): "
                              f"{fault.error}: {fault.message}; training goes on, the decision "
                              "stays in the log as not applied", SinkFailureWarning,
                              stacklevel=3)

    def _register_the_calls_plugins(self) -> None:
        """The plugins given to the same call (all have joined: Keras sets every callback's
        model before the first hook) go on the bus before the call's first event, so the
        log's header lists them and replay rebuilds them."""
        fit = getattr(self, "_keras_fit", None)
        if fit is not None and fit.explicit is self and not fit.started:
            fit.start()

    # fit
    def on_train_begin(self, logs: Any = None) -> None:
        self._register_the_calls_plugins()
        # A resumed run's fit starts after its last finished epoch, as Keras's BackupAndRestore
        # makes it (Keras reads model._initial_epoch after on_train_begin).
        resuming = self.bus.resumed and self.bus.epoch == self.bus.initial_epoch - 1
        self.bus.train_begin(self.params, logs)
        if resuming:
            self.model._initial_epoch = self.bus.initial_epoch
        self._stop()

    def on_train_end(self, logs: Any = None) -> None:
        self.bus.train_end(logs)
        if self.bus.resumed and self.model._initial_epoch == self.bus.initial_epoch:
            self.model._initial_epoch = None  # Keras keeps it: the next fit starts at 0 again
        if len(self.bus.failures) != self._failures_seen:
            self._show_model_faults()

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.bus.epoch_begin(epoch, logs)
        self._stop()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        rate = self.bus.learning_rate  # the epoch's: a cut its end decides is the next one's
        self.bus.epoch_end(epoch, logs)
        if isinstance(logs, dict) and rate is not None and self.bus.logs_learning_rate:
            # What the bus recorded, for the callbacks after this one (Keras's History): Keras's
            # own learning-rate callbacks put the rate in the epoch's logs the same way, and
            # only they do.
            logs.setdefault("learning_rate", rate)
        self._stop()

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self.bus.batch_begin(batch, logs)
        self._stop()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.bus.batch_end(batch, logs)
        self._stop()

    # evaluate (and fit's validation)
    def on_test_begin(self, logs: Any = None) -> None:
        self._register_the_calls_plugins()
        self.bus.test_begin(logs)

    def on_test_end(self, logs: Any = None) -> None:
        self.bus.test_end(logs)

    def on_test_batch_begin(self, batch: int, logs: Any = None) -> None:
        self.bus.test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch: int, logs: Any = None) -> None:
        self.bus.test_batch_end(batch, logs)

    # predict
    def on_predict_begin(self, logs: Any = None) -> None:
        self._register_the_calls_plugins()
        self.bus.predict_begin(logs)

    def on_predict_end(self, logs: Any = None) -> None:
        self.bus.predict_end(logs)

    def on_predict_batch_begin(self, batch: int, logs: Any = None) -> None:
        self.bus.predict_batch_begin(batch, logs)

    def on_predict_batch_end(self, batch: int, logs: Any = None) -> None:
        # Keras passes the batch's outputs ({"outputs": array}); events hold scalar metrics only.
        self.bus.predict_batch_end(batch, None)


def _config_error_as_keras(method: Any) -> Any:
    """A plugin's configuration error (``mode='auto'`` that cannot place its metric, found at
    the first epoch end; a checkpoint path its logs cannot format, found at a batch end)
    leaves ``fit`` as Keras's own callbacks' does: a ValueError, the ConfigError that names
    the plugin, the field and the event. The failure is in the log already."""

    @functools.wraps(method)
    def call(self: KerasBridge, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        except PluginError as exc:
            if isinstance(exc.__cause__, ConfigError):
                raise exc.__cause__ from None
            raise

    return call


for _name, _method in list(vars(KerasBridge).items()):
    if _name.startswith("on_"):
        setattr(KerasBridge, _name, _config_error_as_keras(_method))
del _name, _method


def adapter_of(model: Any) -> Any:
    """The bus's model adapter for what Keras gave ``set_model``: a :class:`KerasModel` for a
    Keras model, the object itself where it has ``get_weights``/``set_weights`` of its own (a
    stand-in model), else None."""
    if isinstance(model, keras.Model):
        return KerasModel(model)
    if callable(getattr(model, "get_weights", None)) and \
            callable(getattr(model, "set_weights", None)):
        return model
    return None


#: The begin and end hooks of one fit, evaluate or predict call.
_BEGINS = frozenset({"on_train_begin", "on_test_begin", "on_predict_begin"})
_ENDS = frozenset({"on_train_end", "on_test_end", "on_predict_end"})
#: Keras 2's batch names, which Keras 3 calls only through a CallbackList's own on_batch_*.
_TRAIN_BATCH = {"on_batch_begin": "on_train_batch_begin", "on_batch_end": "on_train_batch_end"}


class KerasFit:
    """The plugins Keras was given for one ``fit`` (``evaluate``, ``predict``) of one model.

    Built when Keras calls ``set_model`` on the first of them; the others join it, in list
    order, until its first hook. Then it has one bus: an explicit :class:`KerasBridge`'s from
    the same list (the plugins are registered on it), or one of its own with the plugins, a
    :class:`KerasModel` and the logs the plugins were given (``log=``), closed when the call's
    outermost ``on_*_end`` comes.
    """

    def __init__(self, model: Any):
        self.model = model
        #: The plugins, in the order Keras gave them.
        self.members: list[Any] = []
        #: An explicit KerasBridge in the same list, which publishes for everyone.
        self.explicit: KerasBridge | None = None
        self.params: dict[str, Any] = {}
        self.bridge: KerasBridge | None = None
        self.started = False
        self.done = False
        #: The end hook that finished the fit (the other members' calls of it pass).
        self.ended_by: str | None = None
        self._depth = 0
        self._thread: int | None = None

    @property
    def bus(self) -> Any:
        """The fit's bus (None before its first hook)."""
        return None if self.bridge is None else self.bridge.bus

    def join(self, member: Any) -> None:
        if isinstance(member, KerasBridge):
            if self.explicit is None:
                self.explicit = member
        elif not any(m is member for m in self.members):
            self.members.append(member)
        member._keras_fit = self

    def start(self) -> None:
        """Keras's first hook: the bus, built or borrowed, with every plugin on it."""
        self.started = True
        if self.explicit is not None:
            self.bridge = self.explicit
            bus = self.bridge.bus
            for member in self.members:
                if not any(p is member for p in bus.plugins):
                    bus.register(member)
            return
        from eventbus import Bus

        logs: list[Any] = []
        for member in self.members:
            log = member._keras_log
            for target in log if isinstance(log, (list, tuple)) else [log]:
                if target is not None and not any(target is t or target == t for t in logs):
                    logs.append(target)
        try:
            try:
                bus = Bus(self.members, log=logs or None, model=adapter_of(self.model))
            except LogInUseError:
                # A fit an exception left (Keras calls no end hook then) may hold the log in
                # this process, as when a notebook cell that raised is run again with new
                # callbacks: its run is over, so it is finished and the log opened again.
                if not _finish_abandoned(self.model):
                    raise
                bus = Bus(self.members, log=logs or None, model=adapter_of(self.model))
        except BaseException:
            self.done = True
            raise
        self._thread = threading.get_ident()
        _OWN_BUSES.add(self)
        self.bridge = KerasBridge(bus, attach_model=False)
        if self.model is not None:
            keras.callbacks.Callback.set_model(self.bridge, self.model)
        self.bridge.set_params(self.params)

    def call(self, member: Any, method: str, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> None:
        """``member`` called Keras's way: the first member publishes, once per hook."""
        if not self.started:
            self.start()
        attribute = getattr(member, "keras_model_attribute", None)
        if attribute and method == "on_epoch_end" and self.model is not None:
            # Keras's History sets ``model.history = self`` at each epoch end (in fit, Keras's
            # own History comes last and is the one fit returns, as always).
            setattr(self.model, attribute, member)
        if self.explicit is not None or member is not self.members[0]:
            return  # the explicit bridge, or the first plugin, publishes this call
        if method in _BEGINS:
            self._depth += 1
        bridge = self.bridge
        try:
            getattr(bridge, _TRAIN_BATCH.get(method, method))(*args, **kwargs)
        finally:
            if method in _ENDS:
                self._depth -= 1
                if self._depth <= 0:
                    self.ended_by = method
                    self.finish()

    def finish(self) -> None:
        """The call ended (or was left by an exception): the bus of its own is closed."""
        self.done = True
        _OWN_BUSES.discard(self)
        held = _FITS_BY_ID.get(id(self.model))
        if held is not None and held[1] is self:
            del _FITS_BY_ID[id(self.model)]
        if self.explicit is None and self.bridge is not None:
            self.bridge.bus.close()


#: The fit each model's plugins are joining or running (a stand-in without weak references is
#: kept by id, as long as its fit).
_FITS: weakref.WeakKeyDictionary[Any, KerasFit] = weakref.WeakKeyDictionary()
_FITS_BY_ID: dict[int, tuple[Any, KerasFit]] = {}


#: The fits running a bus of their own, until they finish.
_OWN_BUSES: weakref.WeakSet[KerasFit] = weakref.WeakSet()


def _finish_abandoned(model: Any) -> bool:
    """Finish the fits of this thread with a bus of their own whose model has no ``fit``
    (``evaluate``, ``predict``) running but the new one's (``model``'s): an exception left
    them. A fit started inside another's callback (nested) leaves the outer one be, as its
    call is on the stack. Returns whether there were any."""
    ident = threading.get_ident()
    running = _running_models()
    left = [fit for fit in list(_OWN_BUSES) if fit._thread == ident and fit.model is not None
            and sum(m is fit.model for m in running) <= (fit.model is model)]
    for fit in left:
        fit.finish()
    return bool(left)


def _running_models() -> list[Any]:
    """The objects whose ``fit``, ``evaluate`` or ``predict`` is on this thread's stack."""
    models = []
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in ("fit", "evaluate", "predict"):
            model = frame.f_locals.get("self")
            if model is not None:
                models.append(model)
        frame = frame.f_back
    return models


def _fit_of(model: Any) -> KerasFit | None:
    try:
        return _FITS.get(model)
    except TypeError:
        held = _FITS_BY_ID.get(id(model))
        return held[1] if held is not None and held[0] is model else None


def _keep(model: Any, fit: KerasFit) -> None:
    try:
        _FITS[model] = fit
    except TypeError:
        _FITS_BY_ID[id(model)] = (model, fit)


def join_fit(member: Any, model: Any) -> KerasFit:
    """Keras gave ``member`` the model (``set_model``): it joins the model's fit being put
    together, or starts the next one. A fit left by an exception (Keras calls no end hook
    then) is finished when one of its plugins is given to a new call."""
    fit = _fit_of(model)
    if fit is None or fit.started:
        if fit is not None and not fit.done and \
                (member is fit.explicit or any(m is member for m in fit.members)):
            fit.finish()
        fit = KerasFit(model)
        _keep(model, fit)
    old = getattr(member, "_keras_fit", None)
    if old is not None and old is not fit and old.started and not old.done:
        old.finish()
    fit.join(member)
    return fit


def keras_hook(member: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """A plugin's Keras method, called Keras's way: handed to its fit. A plugin Keras never
    gave a model (a test calling ``on_epoch_end(0, logs)``) runs on a fit of its own, with no
    model; so does one whose fit has ended."""
    if method not in _KERAS_HOOKS and method not in _TRAIN_BATCH:
        raise AttributeError(f"{type(member).__name__} has no Keras method {method!r}")
    fit = member._keras_fit
    if fit is not None and fit.done and method in _ENDS and fit.ended_by == method:
        return  # the rest of the call that ended the fit: the first member published it
    if fit is None or fit.done:
        model = None if fit is None else fit.model
        fit = KerasFit(model)
        fit.join(member)
    fit.call(member, method, args, kwargs)


#: Keras 3's callback methods -> the bus hook each runs at, and what it is called with.
_KERAS_HOOKS: dict[str, tuple[str, str]] = {
    "on_train_begin": ("on_train_begin", "logs"), "on_train_end": ("on_train_end", "logs"),
    "on_epoch_begin": ("on_epoch_begin", "epoch"), "on_epoch_end": ("on_epoch_end", "epoch"),
    "on_train_batch_begin": ("on_batch_begin", "batch"),
    "on_train_batch_end": ("on_batch_end", "batch"),
    "on_test_begin": ("on_test_begin", "logs"), "on_test_end": ("on_test_end", "logs"),
    "on_test_batch_begin": ("on_test_batch_begin", "batch"),
    "on_test_batch_end": ("on_test_batch_end", "batch"),
    "on_predict_begin": ("on_predict_begin", "logs"), "on_predict_end": ("on_predict_end", "logs"),
    "on_predict_batch_begin": ("on_predict_batch_begin", "batch"),
    "on_predict_batch_end": ("on_predict_batch_end", "batch"),
}
#: Keras 2's names, which Keras's base class routes the train batch hooks to.
_LEGACY = {"on_train_batch_begin": "on_batch_begin", "on_train_batch_end": "on_batch_end"}


def _overridden(obj: Any, method: str) -> bool:
    fn = getattr(type(obj), method, None)
    if fn is None:
        return False
    return fn is not getattr(keras.callbacks.Callback, method, None)


def _called(obj: Any, method: str) -> str | None:
    """The method of ``obj`` a Keras hook calls: the hook itself, or for a
    ``keras.callbacks.Callback`` its Keras 2 name where only that is overridden; None when the
    object does nothing there."""
    if not callable(getattr(obj, method, None)):
        return None
    if not isinstance(obj, keras.callbacks.Callback) or _overridden(obj, method):
        return method
    legacy = _LEGACY.get(method)
    return legacy if legacy and _overridden(obj, legacy) else None


def _hook(keras_method: str, style: str) -> Any:
    def call(self: KerasCallbackPlugin, event: Any) -> Any:
        if keras_method == "on_train_begin" and callable(getattr(self.callback, "set_params",
                                                                  None)):
            self.callback.set_params(dict(event.params))
        method = self.methods.get(keras_method)
        if method is not None:
            logs = dict(event.logs)  # its own copy, to change at will
            args = (logs,) if style == "logs" else (getattr(event, style), logs)
            getattr(self.callback, method)(*args)
        return self._stop_asked()

    call.__name__ = f"_keras_{keras_method}"
    return hookimpl(specname=_KERAS_HOOKS[keras_method][0])(call)


class KerasCallbackPlugin(Plugin):
    """A Keras-style callback object run on the bus (see :func:`from_keras_callback`)."""

    side_effects = True

    def __init__(self, callback: Any, model: Any = None):
        self.callback = callback
        self.model = model
        #: Keras hook -> the object's method it calls (only those the object does something in).
        self.methods = {hook: m for hook in _KERAS_HOOKS if (m := _called(callback, hook))}
        for hook in _KERAS_HOOKS:
            if hook not in self.methods and hook != "on_train_begin":  # it keeps the params
                self.unsubscribe(f"_keras_{hook}")

    def _stop_asked(self) -> StopTraining | None:
        """A stop the Keras callback asked for by setting ``model.stop_training``."""
        target = self.model if self.model is not None else getattr(self.callback, "model", None)
        if target is not None and getattr(target, "stop_training", False) is True:
            target.stop_training = False  # the bus owns the flag from here on
            name = type(self.callback).__name__
            return StopTraining(reason=f"the Keras callback {name} set model.stop_training",
                                code="keras_stop_training", evidence={"callback": name})
        return None


for _name, (_, _style) in _KERAS_HOOKS.items():
    setattr(KerasCallbackPlugin, f"_keras_{_name}", _hook(_name, _style))
del _name, _style


class _NoModel:
    """The model a Keras callback is given where the loop has none: ``stop_training``, which
    the bus turns into a decision, and for anything else an AttributeError saying what to
    give (``hasattr`` is False, as Keras's callbacks ask)."""

    def __init__(self, callback: str):
        self.stop_training = False
        self._callback = callback

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"{self._callback} needs the Keras model for model.{name}; give "
                             f"it: from_keras_callback(callback, model=keras_model)")


def from_keras_callback(callback: Any, *, model: Any = None) -> KerasCallbackPlugin:
    """Run a Keras-style callback object on a bus; returns the plugin to register.

    Every Keras method the object defines (``on_epoch_end(epoch, logs)`` & co.; for a
    ``keras.callbacks.Callback``, those it overrides, Keras 2's ``on_batch_*`` included) is
    called at the matching event, with its own copy of the logs. ``model`` is passed to
    ``set_model``; without one (a NumPy or PyTorch loop), Keras's own callbacks get a stand-in
    that holds only the ``stop_training`` flag, so its EarlyStopping and TerminateOnNaN stop
    the run in any loop, and one that needs more of the model says so (a callback of the
    user's gets no model, as before); the run's ``params``
    go to ``set_params`` at ``train_begin``. A callback that turns ``model.stop_training`` on
    produces a ``stop_training`` decision naming it. The plugin's records carry the callback's
    class name.
    """
    if model is None and type(callback).__module__.startswith("keras."):
        # Keras's own callbacks, in a loop with no Keras model (NumPy, PyTorch): a stand-in
        # that holds the flag a stopping callback sets (EarlyStopping, TerminateOnNaN).
        # Without one, setting it was an AttributeError exactly when the callback would stop
        # training. A callback of the user's keeps no model, as it always had.
        model = _NoModel(type(callback).__name__)
    if model is not None and callable(getattr(callback, "set_model", None)):
        callback.set_model(model)
    plugin = KerasCallbackPlugin(callback, model)
    plugin.name = type(callback).__name__  # type: ignore[misc]
    return plugin
