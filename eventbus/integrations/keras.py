"""Keras 3: ``model.fit(..., callbacks=[KerasBridge(bus)])`` gets the log, replay and audit.

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

from typing import Any

import keras

from eventbus import Plugin, hookimpl
from eventbus.records import StopTraining

from .keras_model import KerasModel

__all__ = ["KerasBridge", "KerasCallbackPlugin", "KerasModel", "from_keras_callback"]


class KerasBridge(keras.callbacks.Callback):
    """Publish every Keras hook to ``bus`` and apply its decisions to the model.

    ``attach_model``: give the bus a :class:`KerasModel` of the fitted model when it has no
    model adapter (needed for learning-rate and weight decisions and checkpoints). The bus is
    not closed by the bridge: the caller owns it (``with bus: model.fit(...)``).
    """

    def __init__(self, bus: Any, *, attach_model: bool = True):
        super().__init__()
        self.bus = bus
        self.attach_model = attach_model

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        current = self.bus.model
        if self.attach_model and (current is None or (  # a bus reused for another model
                isinstance(current, KerasModel) and current.keras_model is not model)):
            self.bus.model = KerasModel(model)

    def _stop(self) -> None:
        if self.bus.stop_training:
            self.model.stop_training = True

    # fit
    def on_train_begin(self, logs: Any = None) -> None:
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

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.bus.epoch_begin(epoch, logs)
        self._stop()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.bus.epoch_end(epoch, logs)
        self._stop()

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self.bus.batch_begin(batch, logs)
        if self.bus.stop_training:
            self.model.stop_training = True

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.bus.batch_end(batch, logs)
        if self.bus.stop_training:
            self.model.stop_training = True

    # evaluate (and fit's validation)
    def on_test_begin(self, logs: Any = None) -> None:
        self.bus.test_begin(logs)

    def on_test_end(self, logs: Any = None) -> None:
        self.bus.test_end(logs)

    def on_test_batch_begin(self, batch: int, logs: Any = None) -> None:
        self.bus.test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch: int, logs: Any = None) -> None:
        self.bus.test_batch_end(batch, logs)

    # predict
    def on_predict_begin(self, logs: Any = None) -> None:
        self.bus.predict_begin(logs)

    def on_predict_end(self, logs: Any = None) -> None:
        self.bus.predict_end(logs)

    def on_predict_batch_begin(self, batch: int, logs: Any = None) -> None:
        self.bus.predict_batch_begin(batch, logs)

    def on_predict_batch_end(self, batch: int, logs: Any = None) -> None:
        # Keras passes the batch's outputs ({"outputs": array}); events hold scalar metrics only.
        self.bus.predict_batch_end(batch, None)


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


def from_keras_callback(callback: Any, *, model: Any = None) -> KerasCallbackPlugin:
    """Run a Keras-style callback object on a bus; returns the plugin to register.

    Every Keras method the object defines (``on_epoch_end(epoch, logs)`` & co.; for a
    ``keras.callbacks.Callback``, those it overrides, Keras 2's ``on_batch_*`` included) is
    called at the matching event, with its own copy of the logs. ``model``, when given, is
    passed to ``set_model`` (Keras's own callbacks need the Keras model); the run's ``params``
    go to ``set_params`` at ``train_begin``. A callback that turns ``model.stop_training`` on
    produces a ``stop_training`` decision naming it. The plugin's records carry the callback's
    class name.
    """
    if model is not None and callable(getattr(callback, "set_model", None)):
        callback.set_model(model)
    plugin = KerasCallbackPlugin(callback, model)
    plugin.name = type(callback).__name__  # type: ignore[misc]
    return plugin
