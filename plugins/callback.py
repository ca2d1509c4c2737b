"""Callback: the Keras base class, so Keras-style custom callbacks run on the bus unchanged.

    class LossHistory(Callback):
        def on_train_begin(self, logs={}):
            self.losses = []

        def on_batch_end(self, batch, logs={}):
            self.losses.append(logs.get("loss"))

The bus calls hooks with one argument, the event; Keras calls ``on_epoch_end(epoch, logs)``.
For every Keras method a subclass overrides, ``__init_subclass__`` adds a small hook
implementation (under another attribute name, with pluggy's ``specname``) that unpacks the event
into Keras's arguments. Methods a subclass does not override get no hook, so a callback that
only looks at epochs costs nothing per batch.

Given to Keras's ``model.fit`` directly, the same class is a Keras callback: ``set_model`` puts
Keras-facing methods on the instance, which hand Keras's calls to the bus of the fit
(:mod:`eventbus.integrations.keras`); the bus calls the class's methods back through the hooks
above (``_in_bus`` tells the two callers apart). Without Keras nothing is wrapped: a batch costs
what it did.

``self.model`` is a :class:`ModelView`: the model adapter, where the Keras idioms
``self.model.stop_training = True`` and ``self.model.optimizer.learning_rate = x`` become
decisions the callback returns, recorded with it as their source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from eventbus import Plugin, hookimpl
from eventbus.control import checked_learning_rate
from eventbus.errors import ConfigError
from eventbus.plugin import KERAS_METHODS, keras_call, plugin_name
from eventbus.records import Decision, Record, SetLearningRate, StopTraining
from eventbus.run import Run

__all__ = ["Callback", "ModelView"]


def _epoch(event: Any) -> tuple[Any, ...]:
    return (event.epoch, dict(event.logs))


def _batch(event: Any) -> tuple[Any, ...]:
    return (event.batch, dict(event.logs))


def _logs(event: Any) -> tuple[Any, ...]:
    return (dict(event.logs),)


#: bus hook -> (the Keras method it calls, the Keras methods whose override subscribes it, args)
_HOOKS: dict[str, tuple[str, tuple[str, ...], Callable[[Any], tuple[Any, ...]]]] = {
    "on_train_begin": ("on_train_begin", ("on_train_begin",), _logs),
    "on_train_end": ("on_train_end", ("on_train_end",), _logs),
    "on_epoch_begin": ("on_epoch_begin", ("on_epoch_begin",), _epoch),
    "on_epoch_end": ("on_epoch_end", ("on_epoch_end",), _epoch),
    # Keras's on_train_batch_* call on_batch_* unless overridden: subscribe to either.
    "on_batch_begin": ("on_train_batch_begin", ("on_train_batch_begin", "on_batch_begin"),
                       _batch),
    "on_batch_end": ("on_train_batch_end", ("on_train_batch_end", "on_batch_end"), _batch),
    "on_test_begin": ("on_test_begin", ("on_test_begin",), _logs),
    "on_test_end": ("on_test_end", ("on_test_end",), _logs),
    "on_test_batch_begin": ("on_test_batch_begin", ("on_test_batch_begin",), _batch),
    "on_test_batch_end": ("on_test_batch_end", ("on_test_batch_end",), _batch),
    "on_predict_begin": ("on_predict_begin", ("on_predict_begin",), _logs),
    "on_predict_end": ("on_predict_end", ("on_predict_end",), _logs),
    "on_predict_batch_begin": ("on_predict_batch_begin", ("on_predict_batch_begin",), _batch),
    "on_predict_batch_end": ("on_predict_batch_end", ("on_predict_batch_end",), _batch),
}

_PREFIX = "_eventbus_"


def records_only(out: Any) -> Any:
    """What a Keras-style method returned, if it is records for the bus; otherwise None.

    Keras ignores return values, and callbacks return all sorts (the seed's cleanup lambda
    returns a list of ``None``); only decisions and outcomes are passed on.
    """
    if isinstance(out, Record):
        return out
    if isinstance(out, (list, tuple)) and out and all(isinstance(r, Record) for r in out):
        return out
    return None


def _adapter(hook: str, method: str, args: Callable[[Any], tuple[Any, ...]]) -> Any:
    def call(self: Callback, event: Any) -> Any:
        if self._keras_fit is None:
            if hook == "on_train_begin":
                self.set_params(dict(event.params))
            out = records_only(getattr(self, method)(*args(event)))
        else:  # Keras's fit: the Keras-facing methods run the callback's own
            outer, self._in_bus = self._in_bus, True
            try:
                if hook == "on_train_begin":
                    self.set_params(dict(event.params))
                out = records_only(getattr(self, method)(*args(event)))
            finally:
                self._in_bus = outer
        if self._asked:  # decisions asked for through self.model during the call
            return self.model._take(out)
        return out

    call.__name__ = _PREFIX + hook
    return hookimpl(specname=hook)(call)


def _keras_facing(callback: Callback, method: str) -> Callable[..., Any]:
    """``callback``'s Keras method once Keras has given it a model: Keras's call goes to the
    fit's bus (which calls the method back); the bus's own call runs the class's method."""
    def call(*args: Any, **kwargs: Any) -> Any:
        if callback._in_bus:
            return getattr(type(callback), method)(callback, *args, **kwargs)
        return keras_call(callback, method, args, kwargs)

    call.__name__ = method
    return call


class _OptimizerView:
    """``self.model.optimizer``: its learning rate read from the run and set by a decision;
    anything else is the model's own optimizer."""

    __slots__ = ("_view",)

    def __init__(self, view: ModelView):
        object.__setattr__(self, "_view", view)

    @property
    def learning_rate(self) -> float | None:
        return self._view._learning_rate()

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        self._view._set_learning_rate(value, "self.model.optimizer.learning_rate")

    lr = learning_rate  # Keras 2's name

    def __getattr__(self, name: str) -> Any:
        optimizer = self._view._framework_attr("optimizer")
        if optimizer is None:
            raise AttributeError(f"{self._view._name}: self.model.optimizer has only "
                                 f"learning_rate here (the model adapter has no optimizer to "
                                 f"read {name!r} from)")
        return getattr(optimizer, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("learning_rate", "lr"):
            object.__setattr__(self, name, value)  # the property's setter
            return
        raise AttributeError(f"{self._view._name}: self.model.optimizer.{name} cannot be set "
                             "from a callback; only learning_rate can (it becomes a decision)")


class ModelView:
    """``self.model`` of a :class:`Callback`: the run's model adapter, with Keras's idioms.

    - ``self.model.stop_training = True`` becomes a ``stop_training`` decision the method
      returns (the callback is its source); reading it says whether a stop was asked or the
      framework model is stopping.
    - ``self.model.optimizer.learning_rate = x`` (or ``self.model.learning_rate = x``) becomes
      a ``set_learning_rate`` decision; reading it gives the run's current rate. A run with no
      learning rate at all refuses the assignment with a :class:`~eventbus.ConfigError`.
    - Anything else is read from the framework model behind the adapter, as Keras's callbacks
      read it (a Keras model's ``get_weights()`` list, ``layers``, ``save``, ...), then from the
      adapter itself (a NumpyModel's or a torch module's ``get_weights()`` dict); other
      assignments go to the framework model.
    """

    __slots__ = ("_run", "_callback", "_asked")

    def __init__(self, run: Run, callback: Callback):
        object.__setattr__(self, "_run", run)
        object.__setattr__(self, "_callback", callback)
        object.__setattr__(self, "_asked", [])
        callback._asked = self._asked  # the same list: the hook sees at once that one is asked

    @property
    def _name(self) -> str:
        return plugin_name(self._callback)

    @property
    def adapter(self) -> Any:
        """The bus's model adapter (None without one)."""
        return self._run.model

    def _framework(self) -> Any:
        adapter = self._run.model
        for name in ("keras_model", "module"):
            model = getattr(adapter, name, None)
            if model is not None:
                return model
        return None

    def _framework_attr(self, name: str) -> Any:
        return getattr(self._framework(), name, None)

    # --- the idioms that are decisions ---------------------------------------------------------

    @property
    def stop_training(self) -> bool:
        if any(isinstance(d, StopTraining) for d in self._asked):
            return True
        return bool(self._framework_attr("stop_training"))

    @stop_training.setter
    def stop_training(self, value: Any) -> None:
        if value:
            if not any(isinstance(d, StopTraining) for d in self._asked):
                self._asked.append(StopTraining(
                    reason=f"{self._name} set self.model.stop_training = True",
                    code="model_stop_training", evidence={"callback": self._name}))
        else:  # taking back a stop asked in the same call; a recorded stop stands
            self._asked[:] = [d for d in self._asked if not isinstance(d, StopTraining)]

    @property
    def optimizer(self) -> _OptimizerView:
        return _OptimizerView(self)

    @property
    def learning_rate(self) -> float | None:
        return self._learning_rate()

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        self._set_learning_rate(value, "self.model.learning_rate")

    def _learning_rate(self) -> float | None:
        for decision in reversed(self._asked):
            if isinstance(decision, SetLearningRate):
                return decision.value
        return self._run.learning_rate

    def _set_learning_rate(self, value: Any, written: str) -> None:
        name = self._name
        previous = self._run.learning_rate
        if previous is None:
            raise ConfigError(f"{name}: {written} = {value!r}: the run has no learning rate to "
                              "change (give the bus a model adapter that has one, or "
                              "Bus(learning_rate=...))", plugin=name, field="learning_rate")
        try:
            rate = checked_learning_rate(value, written)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}", plugin=name, field="learning_rate") from None
        self._asked[:] = [d for d in self._asked if not isinstance(d, SetLearningRate)]
        self._asked.append(SetLearningRate(
            value=rate, previous=previous, code="model_learning_rate",
            reason=f"{name} set {written} = {rate:g}", evidence={"callback": name}))

    def _take(self, out: Any) -> list[Any]:
        """The decisions asked for during one call, after what the method returned."""
        asked: list[Decision] = list(self._asked)
        self._asked.clear()
        returned = [] if out is None else [out] if isinstance(out, Record) else list(out)
        return [*returned, *asked]

    # --- everything else: the framework model, then the adapter ---------------------------------

    def __getattr__(self, name: str) -> Any:
        # The framework model first: a Keras callback's self.model.get_weights() is Keras's
        # list, which its self.model.set_weights() takes back.
        model = self._framework()
        if model is not None and hasattr(model, name):
            return getattr(model, name)
        adapter = self._run.model
        if adapter is not None and hasattr(adapter, name):
            return getattr(adapter, name)
        what = "the bus has no model adapter (Bus(model=...))" if adapter is None else \
            f"neither the model adapter ({type(adapter).__name__}) nor its model has it"
        raise AttributeError(f"{self._name}: self.model.{name}: {what}")

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)  # the properties' setters above
            return
        model = self._framework()
        if model is None:
            raise AttributeError(f"{self._name}: self.model.{name} cannot be set: the model "
                                 "adapter has no framework model behind it")
        setattr(model, name, value)

    def __repr__(self) -> str:
        return f"<model of {self._name}: {self._run.model!r}>"


class Callback(Plugin):
    """Base class for Keras-style callbacks: override ``on_epoch_end(self, epoch, logs)`` & co.

    ``self.model`` is the bus's model adapter (``Bus(model=...)``, None without one) and
    ``self.params`` the run's parameters from ``train_begin`` (epochs, steps, verbose, ...).
    ``logs`` is a copy: changing it does not change what other plugins or the log see. A method
    may return a decision (``StopTraining(reason=...)``) for the bus to apply; anything else it
    returns is ignored, as in Keras.

    Callbacks are assumed to have side effects (printing, plotting, files): they are left out
    of replay, and a failing one is recorded as ``sink_failed`` instead of stopping training.
    A subclass that is a pure function of the events can set ``side_effects = False``.
    """

    side_effects: ClassVar[bool] = True

    #: True while the bus calls a method in a Keras fit (the Keras-facing methods then run it).
    _in_bus: bool = False
    #: Decisions asked for through ``self.model`` (the model view's list, once it has one).
    _asked: list[Decision] | tuple[()] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for hook, (method, overridable, args) in _HOOKS.items():
            if hook == "on_train_begin":
                continue  # always subscribed, to keep self.params
            if any(getattr(cls, name) is not getattr(Callback, name) for name in overridable):
                setattr(cls, _PREFIX + hook, _adapter(hook, method, args))

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        """Keras gives the model: the callback joins the fit, and its Keras methods, on this
        instance, hand Keras's calls to the fit's bus. (Without Keras, nothing wraps them.)"""
        super().set_model(model)
        for method in KERAS_METHODS:
            self.__dict__[method] = _keras_facing(self, method)

    @hookimpl
    def on_attach(self, run: Run) -> None:
        self.model = ModelView(run, self)

    # Keras's methods, doing nothing unless overridden. Keras gives ``logs=None`` defaults.

    def on_train_begin(self, logs: dict[str, float] | None = None) -> Any:
        """Training starts."""

    def on_train_end(self, logs: dict[str, float] | None = None) -> Any:
        """Training ended."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> Any:
        """An epoch starts (``epoch`` counts from 0)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> Any:
        """An epoch ended; ``logs`` has its metrics (``val_`` ones included)."""

    def on_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> Any:
        """A training batch starts (``batch`` counts within the epoch)."""

    def on_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> Any:
        """A training batch ended."""

    def on_train_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> Any:
        return self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> Any:
        return self.on_batch_end(batch, logs=logs)

    def on_test_begin(self, logs: dict[str, float] | None = None) -> Any:
        """Evaluation starts."""

    def on_test_end(self, logs: dict[str, float] | None = None) -> Any:
        """Evaluation ended."""

    def on_test_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> Any:
        """An evaluation batch starts."""

    def on_test_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> Any:
        """An evaluation batch ended."""

    def on_predict_begin(self, logs: dict[str, float] | None = None) -> Any:
        """Prediction starts."""

    def on_predict_end(self, logs: dict[str, float] | None = None) -> Any:
        """Prediction ended."""

    def on_predict_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> Any:
        """A prediction batch starts."""

    def on_predict_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> Any:
        """A prediction batch ended."""


# on_train_begin is subscribed for every callback (it sets self.params).
Callback._eventbus_on_train_begin = _adapter(  # type: ignore[attr-defined]
    "on_train_begin", "on_train_begin", _logs)
