"""LossSpikeStop: stop training when a loss jumps far above its recent level.

An example of a third-party eventbus plugin. It is a pure state machine over ``epoch_end``
events: it keeps the last few values of the monitored loss and, when a value exceeds ``factor``
times their mean for ``patience`` epochs in a row, returns a ``stop_training`` decision whose
reason says why and whose evidence holds the numbers. It reads nothing but the events (no clock,
no files, no model), so ``eventbus replay`` rebuilds it from a log header and gets the same
decision back, and ``eventbus replay --set LossSpikeStop.factor=5`` asks what a laxer rule would
have done.

It is registered through the ``eventbus`` entry-point group in this distribution's
``pyproject.toml``; nothing in eventbus names it.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from eventbus import ConfigError, Plugin, hookimpl
from eventbus.records import StopTraining, Warning

__all__ = ["LossSpikeStop", "__version__"]

__version__ = "0.1.0"


def _number(value: Any, field: str, *, minimum: float, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= minimum:
        what = "an int" if integer else "a number"
        raise ConfigError(f"LossSpikeStop: {field} must be {what} >= {minimum}; got {value!r}",
                          plugin="LossSpikeStop", field=field)
    return value


class LossSpikeStop(Plugin):
    """Stop when ``monitor`` exceeds ``factor`` x its mean over the last ``window`` epochs.

    ``patience`` spiking epochs in a row are needed to stop (1: the first spike stops). A spiking
    value does not enter the window, so consecutive spikes are judged against the level before
    them. Nothing is judged until the window is full. NaN is left to TerminateOnNaN; an infinite
    value is a spike.
    """

    def __init__(self, monitor: str = "loss", factor: float = 2.0, window: int = 3,
                 patience: int = 1):
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(f"LossSpikeStop: monitor must be a metric name; got {monitor!r}",
                              plugin="LossSpikeStop", field="monitor")
        self.monitor = monitor
        self.factor = float(_number(factor, "factor", minimum=1.0))
        self.window = _number(window, "window", minimum=1, integer=True)
        self.patience = _number(patience, "patience", minimum=1, integer=True)
        self._reset()

    def _reset(self) -> None:
        self.recent: deque[float] = deque(maxlen=self.window)
        self.spikes = 0
        self._warned = False

    @hookimpl
    def on_train_begin(self, event: Any) -> None:
        self._reset()

    @hookimpl
    def on_epoch_end(self, event: Any) -> Any:
        value = event.logs.get(self.monitor)
        if value is None:
            if self._warned:
                return None
            self._warned = True
            return Warning(message=f"LossSpikeStop: {self.monitor} is not in the epoch logs "
                                   f"(available: {', '.join(sorted(event.logs))}); not watching",
                           details={"monitor": self.monitor, "available": sorted(event.logs)})
        if math.isnan(value):
            return None
        if len(self.recent) < self.window:
            self.recent.append(value)
            return None
        level = sum(self.recent) / len(self.recent)
        if value <= self.factor * level:
            self.spikes = 0
            self.recent.append(value)
            return None
        self.spikes += 1
        if self.spikes < self.patience:
            return None
        ratio = value / level if level > 0 else math.inf
        return StopTraining(
            code="loss_spike",
            reason=(f"{self.monitor} = {value:.6g} is {ratio:.3g}x its mean over the last "
                    f"{len(self.recent)} epochs ({level:.6g}), above factor {self.factor:g}, "
                    f"for {self.spikes} epoch(s)"),
            evidence={"monitor": self.monitor, "value": value, "level": level,
                      "factor": self.factor, "window": list(self.recent),
                      "spikes": self.spikes, "patience": self.patience})
