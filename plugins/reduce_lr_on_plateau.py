"""ReduceLROnPlateau: cut the learning rate when a metric has stopped improving (Keras 3.15 rules).

A pure state machine over ``epoch_end`` events. The learning rate it starts from is the one the
bus puts in the epoch's logs (``learning_rate``), so replay and resume see the same rate the live
run saw; it returns ``set_learning_rate`` decisions, which the bus applies to the model adapter.
"""

from __future__ import annotations

import math
import struct
import warnings
from typing import Any

from eventbus import ConfigError, Plugin, hookimpl
from eventbus.records import EpochEnd, SetLearningRate, TrainBegin, Warning
from eventbus.run import Run
from sinks import console

from .monitor import KerasMonitorNames, Monitor, fmt, require_int, require_real, require_verbose

__all__ = ["ReduceLROnPlateau"]


class ReduceLROnPlateau(KerasMonitorNames, Plugin):
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without improvement.

    ``epsilon`` is Keras 2's name for ``min_delta``: accepted, with a DeprecationWarning.
    """

    logs_learning_rate = True  # as Keras's: the epoch's logs carry the rate

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 verbose: int = 0, mode: str = "auto", min_delta: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0, **kwargs: Any):
        name = type(self).name
        unknown = sorted(set(kwargs) - {"epsilon"})
        if unknown:
            raise ConfigError(f"{name}: unknown parameter(s) {unknown}", plugin=name,
                              field=unknown[0])
        if "epsilon" in kwargs:
            if min_delta != 1e-4:
                raise ConfigError(f"{name}: epsilon is the old name of min_delta; give one of "
                                  "them, not both", plugin=name, field="epsilon")
            warnings.warn(f"{name}: `epsilon` is deprecated; use `min_delta` (Keras 3 ignores "
                          "`epsilon` silently, this plugin takes it as `min_delta`)",
                          DeprecationWarning, stacklevel=3)
            min_delta = kwargs["epsilon"]
        self.factor = require_real(factor, "factor", name, minimum=0.0)
        if self.factor >= 1.0:
            raise ConfigError(f"{name}: factor must be below 1 (new_lr = lr * factor); got "
                              f"{self.factor}", plugin=name, field="factor")
        self.tracker = Monitor(monitor, mode, min_delta, plugin=name)
        self._keras_monitor_names(monitor, mode, self.tracker.min_delta)
        self.patience = require_int(patience, "patience", name)
        self.verbose = require_verbose(verbose, name)
        self.cooldown = require_int(cooldown, "cooldown", name)
        self.min_lr = require_real(min_lr, "min_lr", name, minimum=0.0)
        self._reset()

    def get_config(self) -> dict[str, Any]:
        # The header records the modern name, so a replay rebuilds it without the warning.
        config = super().get_config()
        if "epsilon" in config:
            config["min_delta"] = config.pop("epsilon")
        return config

    def _reset(self) -> None:
        self.tracker.reset()
        self.wait = 0
        self.cooldown_counter = 0
        self._warned: set[str] = set()

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    @hookimpl
    def on_attach(self, run: Run) -> None:
        if self.verbose > 0:
            console.attach(run)  # the messages are the decisions; a console sink prints them

    @hookimpl
    def on_train_begin(self, event: TrainBegin) -> None:
        self._reset()

    @hookimpl
    def on_epoch_end(self, event: EpochEnd) -> Any:
        logs = event.logs
        name = self.tracker.monitor
        if self.tracker.mode is None:
            # As Keras 3's first epoch_end (_set_monitor_op, before the metric is looked up):
            # mode='auto' must place the name now, or this raises.
            self.tracker.resolve(f"epoch_end (epoch {event.epoch + 1})", logs)
        current = logs.get(name)
        if current is None:
            # Nothing else moves: the cooldown does not count down either (as Keras).
            return self.tracker.missing(
                logs, f"Learning rate reduction is conditioned on metric `{name}` which is "
                      f"not available. Available metrics are: {','.join(logs)}.")

        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0

        if self.tracker.update(current):
            self.wait = 0
            return None
        if self.in_cooldown():
            return None
        self.wait += 1
        if self.wait < self.patience:
            return None
        old_lr = logs.get("learning_rate")
        if old_lr is None:
            return self._warn_once("learning_rate", Warning(
                message="ReduceLROnPlateau: the learning rate is not known, so it cannot be "
                        "reduced; give the bus a model adapter with a learning_rate, or "
                        "Bus(learning_rate=...)",
                details={"monitor": name, "wait": self.wait, "patience": self.patience}))
        if not (old_lr > self.min_lr and _float32(old_lr) > _float32(self.min_lr)):
            # At the floor already: wait keeps growing, as in Keras. At it in float32 too, as
            # Keras compares: a framework keeps the rate in float32, and 0.001 held so is
            # 0.0010000000475, above 0.001, which would be "reduced" to 0.001 for ever; a loop
            # that keeps it in float64 holds 1e-4 itself, above 1e-4 in float32.
            return None
        new_lr = max(old_lr * self.factor, self.min_lr)
        decision = SetLearningRate(
            value=new_lr, previous=old_lr, code="plateau",
            reason=f"{name} did not improve on {fmt(self.best)} for {self.wait} "
                   f"epoch{'s' if self.wait != 1 else ''}: learning rate {fmt(old_lr)} -> "
                   f"{fmt(new_lr)}" + (" (the min_lr floor)" if new_lr == self.min_lr else ""),
            evidence={"monitor": name, "value": current, "best": self.best, "wait": self.wait,
                      "patience": self.patience, "factor": self.factor, "min_lr": self.min_lr,
                      "cooldown": self.cooldown, "min_delta": self.tracker.min_delta,
                      "mode": self.tracker.mode})
        self.cooldown_counter = self.cooldown
        self.wait = 0
        return decision

    def _warn_once(self, key: str, warning: Warning) -> Warning | None:
        if key in self._warned:
            return None
        self._warned.add(key)
        return warning


def _float32(value: float) -> float:
    """``value`` rounded to float32 (as ``numpy.float32``, without numpy): beyond its range,
    an infinity."""
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)
