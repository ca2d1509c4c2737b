"""History: every epoch's logs, one list per metric, as Keras's ``History.history``."""

from __future__ import annotations

import math
from typing import Any

from eventbus import Plugin, hookimpl
from eventbus.records import EpochEnd, TrainBegin

__all__ = ["History"]


class History(Plugin):
    """Record the epoch logs of a run.

    After training, ``history.epoch`` lists the epochs and ``history.history[key]`` the values of
    each metric, one per epoch, aligned with ``history.epoch``: a metric missing from an epoch's
    logs (one that first appears late, or stops being reported) holds ``nan`` there, so every
    list has the length of ``history.epoch``.

    It is a pure plugin: replay rebuilds it from a log, and a resumed run's History holds the
    epochs before the crash too. The bus it is on gives it as ``bus.history``, and :meth:`of`
    finds it on any bus.
    """

    def __init__(self) -> None:
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}

    @classmethod
    def of(cls, bus: Any) -> History:
        """The History plugin on ``bus``; LookupError if it has none."""
        for plugin in bus.plugins:
            if isinstance(plugin, cls):
                return plugin
        raise LookupError(f"the bus has no {cls.__name__} plugin")

    @hookimpl
    def on_train_begin(self, event: TrainBegin) -> None:
        # Each training run starts its own history, as Keras's fit() does.
        self.epoch = []
        self.history = {}

    @hookimpl
    def on_epoch_end(self, event: EpochEnd) -> None:
        logs = event.logs
        history = self.history
        done = len(self.epoch)
        self.epoch.append(event.epoch)
        for key in logs.keys() - history.keys():
            history[key] = [math.nan] * done
        for key, values in history.items():
            values.append(logs.get(key, math.nan))

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"
