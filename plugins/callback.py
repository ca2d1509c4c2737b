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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from eventbus import Plugin, hookimpl
from eventbus.records import Record
from eventbus.run import Run

__all__ = ["Callback"]


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
    if hook == "on_train_begin":
        def call(self: Callback, event: Any) -> Any:
            self.set_params(dict(event.params))
            return records_only(getattr(self, method)(*args(event)))
    else:
        def call(self: Callback, event: Any) -> Any:
            return records_only(getattr(self, method)(*args(event)))
    call.__name__ = _PREFIX + hook
    return hookimpl(specname=hook)(call)


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
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    @hookimpl
    def on_attach(self, run: Run) -> None:
        self.set_model(run.model)

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
