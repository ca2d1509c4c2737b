"""LearningRateScheduler: set the learning rate at the start of every epoch from a schedule.

``schedule(epoch, lr)`` or ``schedule(epoch)``: which one is decided once, from the function's
signature (Keras calls ``schedule(epoch, lr)`` and retries with one argument on *any* TypeError,
which also swallows TypeErrors raised inside a two-argument schedule and calls it wrongly).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any

from eventbus import ConfigError, Plugin, hookimpl
from eventbus.records import EpochBegin, SetLearningRate
from eventbus.run import Run
from sinks import console

from .monitor import fmt, require_verbose

__all__ = ["LearningRateScheduler"]


def _arity(schedule: Callable[..., Any], plugin: str) -> int:
    """How many positional arguments to pass the schedule: 2 (epoch, lr) or 1 (epoch)."""
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):
        return 2  # a builtin without a signature: Keras's modern call
    positional = 0
    required = 0
    for param in signature.parameters.values():
        if param.kind is param.VAR_POSITIONAL:
            return 2
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            positional += 1
            required += param.default is param.empty
        elif param.kind is param.KEYWORD_ONLY and param.default is param.empty:
            raise ConfigError(f"{plugin}: schedule has a required keyword-only parameter "
                              f"{param.name!r}; it is called as schedule(epoch, lr) or "
                              "schedule(epoch)", plugin=plugin, field="schedule")
    if positional >= 2 and required <= 2:
        return 2
    if positional >= 1 and required <= 1:
        return 1
    raise ConfigError(f"{plugin}: schedule{signature} cannot be called as schedule(epoch, lr) "
                      "or schedule(epoch)", plugin=plugin, field="schedule")


class LearningRateScheduler(Plugin):
    """At every ``epoch_begin``, set the learning rate to ``schedule(epoch, lr)``.

    The schedule is a Python callable, so the log header cannot record it: replay needs the
    instance (``replay(log, plugins=[LearningRateScheduler(schedule)])``).
    """

    logs_learning_rate = True  # as Keras's: the epoch's logs carry the rate

    def __init__(self, schedule: Callable[..., Any], verbose: int = 0):
        name = type(self).name
        if not callable(schedule):
            raise ConfigError(f"{name}: schedule must be callable, as schedule(epoch, lr) or "
                              f"schedule(epoch); got {type(schedule).__name__}", plugin=name,
                              field="schedule")
        self.schedule = schedule
        self.verbose = require_verbose(verbose, name)
        self._arity = _arity(schedule, name)

    @hookimpl
    def on_attach(self, run: Run) -> None:
        if self.verbose > 0:
            console.attach(run)  # the messages are the decisions; a console sink prints them

    @hookimpl
    def on_epoch_begin(self, event: EpochBegin) -> Any:
        name = type(self).name
        epoch: int = event.epoch
        lr = event.logs.get("learning_rate")
        if self._arity == 2:
            if lr is None:
                raise ConfigError(
                    f"{name}: the schedule takes the current learning rate, but the bus does not "
                    "know it at epoch_begin; give the bus a model adapter with a learning_rate, "
                    "or Bus(learning_rate=...)", plugin=name, field="schedule")
            result = self.schedule(epoch, lr)
            call = f"schedule({epoch}, {lr!r})"
        else:
            result = self.schedule(epoch)
            call = f"schedule({epoch})"
        new_lr = self._check(result, call)
        if lr is not None and new_lr == lr:
            return None  # nothing changes: no decision to record
        return SetLearningRate(value=new_lr, previous=lr, code="schedule",
                               reason=f"{call} = {fmt(new_lr)}",
                               evidence={"epoch": epoch, "learning_rate": lr, "value": new_lr})

    def _check(self, result: Any, call: str) -> float:
        name = type(self).name
        value: float | None = None
        if isinstance(result, numbers.Real) and not isinstance(result, bool):
            value = float(result)
        elif getattr(result, "ndim", None) == 0 and callable(getattr(result, "item", None)):
            item = result.item()  # a numpy 0-d array or a framework scalar tensor
            if isinstance(item, numbers.Real) and not isinstance(item, bool):
                value = float(item)
        if value is None:
            raise ConfigError(f"{name}: {call} returned {type(result).__name__} {result!r}; the "
                              "schedule must return a real number (the new learning rate)",
                              plugin=name, field="schedule")
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name}: {call} returned {value}; a learning rate is a finite "
                              "number >= 0", plugin=name, field="schedule")
        return value
