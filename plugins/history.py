"""History: every epoch's logs, one list per metric, as Keras's ``History.history``."""

from __future__ import annotations

import math
from typing import Any

from eventbus import Plugin, hookimpl
from eventbus.records import EpochEnd, TrainBegin

__all__ = ["History"]


class History(Plugin):
    """Record the epoch logs of a run.

    After training, ``history.epoch`` lists the epochs and ``history.history[key]`` the values
    of each metric in the order the epochs reported them, as Keras 3's History keeps them: an
    epoch appends only the keys its logs hold, so a metric reported every other epoch
    (validation every 2 epochs) has half as many values as ``history.epoch``. :meth:`aligned`
    gives the lists padded with ``nan``, one entry per epoch.

    It is a pure plugin: replay rebuilds it from a log, and a resumed run's History holds the
    epochs before the crash too. The bus it is on gives it as ``bus.history``, and :meth:`of`
    finds it on any bus.
    """

    #: Called Keras's way (``set_model``, then its hooks), it is the model's ``history`` from
    #: the first epoch end, as Keras's History makes itself.
    keras_model_attribute = "history"

    def __init__(self) -> None:
        self.epoch: list[int] = []
        self.history: dict[str, list[Any]] = {}
        # Where each key's values were reported: positions in ``epoch``, for aligned().
        self._at: dict[str, list[int]] = {}

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
        self._at = {}

    @hookimpl
    def on_epoch_end(self, event: EpochEnd) -> None:
        history, at = self.history, self._at
        position = len(self.epoch)
        self.epoch.append(event.epoch)
        for key, value in event.logs.items():
            if key in history:
                history[key].append(value)
                at[key].append(position)
            else:
                history[key] = [value]
                at[key] = [position]

    def aligned(self) -> dict[str, list[Any]]:
        """Every metric's values aligned with ``epoch``: one entry per epoch, ``nan`` where
        that epoch's logs lacked the metric (``val_loss`` reported every 2 epochs of 4 is
        ``[nan, 0.5, nan, 0.4]``). A new dict of new lists; ``history`` is not changed."""
        epochs = len(self.epoch)
        out: dict[str, list[Any]] = {}
        for key, values in self.history.items():
            row: list[Any] = [math.nan] * epochs
            # zip: a list changed by hand cannot put a value past the epochs recorded.
            for position, value in zip(self._at.get(key, ()), values):
                if position < epochs:
                    row[position] = value
            out[key] = row
        return out

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"
