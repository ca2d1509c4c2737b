"""Keras 3: ``model.fit(..., callbacks=[KerasBridge(bus)])`` gets the log, replay and audit.

:class:`KerasBridge` is a ``keras.callbacks.Callback`` that publishes every Keras hook (fit,
evaluate and predict, batches included) to a bus and applies the bus's decisions to the Keras
model: ``stop_training`` becomes ``model.stop_training`` (Keras stops after the batch or epoch),
the learning rate goes to ``model.optimizer.learning_rate`` and weights are read and restored
through :class:`KerasModel`, which the bridge attaches to the bus when the bus has no model.

The reverse, any Keras-style callback on the bus, is :func:`from_keras_callback`: the object's
Keras methods become a :class:`plugins.lambda_callback.LambdaCallback` (the bus's own way to run
Keras-method-named functions), and a Keras callback that sets ``model.stop_training`` (Keras's
own ``EarlyStopping``) produces a ``stop_training`` decision the bus records and applies.
For callbacks written against the bus, subclass :class:`plugins.callback.Callback` instead.

Any Keras backend works; the tests use the torch backend (``KERAS_BACKEND=torch``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from eventbus.errors import ConfigError
from eventbus.records import StopTraining

__all__ = ["KerasBridge", "KerasModel", "from_keras_callback"]


class KerasModel:
    """The bus's model adapter for a Keras 3 model.

    Weights are keyed by each variable's path (``"sequential/dense/kernel"``); the learning rate
    is ``model.optimizer.learning_rate`` (an optimizer with a ``LearningRateSchedule`` has no
    settable rate: setting it fails and the bus records that as a failure at the edge).
    """

    def __init__(self, model: Any):
        self.keras_model = model

    def _variables(self) -> dict[str, Any]:
        return {v.path: v for v in self.keras_model.weights}

    def get_weights(self) -> dict[str, np.ndarray]:
        return {path: np.array(v.numpy(), copy=True)
                for path, v in self._variables().items()}

    def set_weights(self, weights: Mapping[str, Any]) -> None:
        variables = self._variables()
        unknown = sorted(set(weights) - set(variables))
        if unknown:
            raise ConfigError(f"KerasModel.set_weights: unknown weights {unknown[:5]}; the model "
                              f"has {sorted(variables)[:10]}", field="weights")
        for path, value in weights.items():
            if tuple(np.shape(value)) != tuple(variables[path].shape):
                raise ConfigError(f"KerasModel.set_weights: {path!r} has shape "
                                  f"{tuple(np.shape(value))}, the model's is "
                                  f"{tuple(variables[path].shape)}", field=path)
        for path, value in weights.items():
            variables[path].assign(np.asarray(value))

    @property
    def learning_rate(self) -> float | None:
        optimizer = getattr(self.keras_model, "optimizer", None)
        if optimizer is None:
            return None
        return float(np.asarray(optimizer.learning_rate.numpy()))

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        optimizer = getattr(self.keras_model, "optimizer", None)
        if optimizer is None:
            raise ConfigError("KerasModel: the model is not compiled (no optimizer), so it has "
                              "no learning rate to set", field="optimizer")
        optimizer.learning_rate = float(value)

    def get_config(self) -> dict[str, Any]:
        model = self.keras_model
        config: dict[str, Any] = {
            "framework": f"keras {keras.__version__} ({keras.backend.backend()})",
            "class": type(model).__name__, "name": model.name,
            "weights": {v.path: list(v.shape) for v in model.weights},
        }
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            config["optimizer"] = type(optimizer).__name__
        return config


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
        if self.attach_model and self.bus.model is None:
            self.bus.model = KerasModel(model)

    def _stop(self) -> None:
        if self.bus.stop_training:
            self.model.stop_training = True

    # fit
    def on_train_begin(self, logs: Any = None) -> None:
        self.bus.train_begin(self.params, logs)
        self._stop()

    def on_train_end(self, logs: Any = None) -> None:
        self.bus.train_end(logs)

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


#: Keras 3's callback methods, as LambdaCallback accepts them.
_KERAS_METHODS = (
    "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
    "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
    "on_test_batch_begin", "on_test_batch_end", "on_predict_begin", "on_predict_end",
    "on_predict_batch_begin", "on_predict_batch_end",
)


def _overridden(obj: Any, method: str) -> bool:
    fn = getattr(type(obj), method, None)
    if fn is None:
        return False
    return fn is not getattr(keras.callbacks.Callback, method, None)


def from_keras_callback(callback: Any, *, model: Any = None) -> Any:
    """Run a Keras-style callback object on a bus; returns the plugin to register.

    Every Keras method the object defines (``on_epoch_end(epoch, logs)`` & co.; for a
    ``keras.callbacks.Callback``, those it overrides, Keras 2's ``on_batch_*`` included) is
    called at the matching event, through :class:`~plugins.lambda_callback.LambdaCallback`.
    ``model``, when given, is passed to ``set_model`` (Keras's own callbacks need the Keras
    model); the run's ``params`` go to ``set_params`` at ``train_begin``. A callback that turns
    ``model.stop_training`` on produces a ``stop_training`` decision naming it. The plugin's
    records carry the callback's class name.
    """
    from eventbus import hookimpl
    from plugins.lambda_callback import LambdaCallback

    name = type(callback).__name__
    if model is not None and callable(getattr(callback, "set_model", None)):
        callback.set_model(model)

    def stop_asked() -> Any:
        target = model if model is not None else getattr(callback, "model", None)
        if target is not None and getattr(target, "stop_training", False) is True:
            target.stop_training = False  # the bus owns the flag from here on
            return StopTraining(reason=f"the Keras callback {name} set model.stop_training",
                                code="keras_stop_training", evidence={"callback": name})
        return None

    def wrap(method: str) -> Any:
        fn = getattr(callback, method)
        if method.startswith(("on_epoch", "on_train_batch", "on_test_batch", "on_predict_batch")):
            return lambda index, logs: after(fn(index, logs))
        return lambda logs: after(fn(logs))

    def after(out: Any) -> Any:
        stop = stop_asked()
        return out if stop is None else stop

    given: dict[str, Any] = {}
    for method in _KERAS_METHODS:
        if not callable(getattr(callback, method, None)):
            continue
        if isinstance(callback, keras.callbacks.Callback) and not _overridden(callback, method):
            # Keras's base routes on_train_batch_* to on_batch_*: subscribe where overridden.
            legacy = {"on_train_batch_begin": "on_batch_begin",
                      "on_train_batch_end": "on_batch_end"}.get(method)
            if not (legacy and _overridden(callback, legacy)):
                continue
        given[method] = wrap(method)
    given.setdefault("on_train_begin", lambda logs: None)  # set_params needs the event

    parent = LambdaCallback._hook_on_train_begin  # type: ignore[attr-defined]

    class KerasCallbackPlugin(LambdaCallback):
        side_effects = True

        @hookimpl(specname="on_train_begin")
        def _hook_on_train_begin(self, event: Any) -> Any:
            if callable(getattr(callback, "set_params", None)):
                callback.set_params(dict(event.params))
            return parent(self, event)

    plugin = KerasCallbackPlugin(**given)
    plugin.name = name  # type: ignore[misc]
    return plugin
