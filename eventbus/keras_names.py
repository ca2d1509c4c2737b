"""Keras's ``CallbackList`` names on the bus, for loops written against Keras's callbacks.

``bus.on_epoch_end(epoch, logs)`` is ``bus.epoch_end(epoch, logs)``, and so on for every hook
Keras calls (``on_batch_begin``/``on_batch_end`` are Keras 2's names of the train batch
hooks). ``on_train_begin`` takes Keras's ``logs`` only: Keras gives ``params`` by
``set_params``, here :meth:`~eventbus.Bus.train_begin`'s first argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .records import Decision

__all__ = ["KerasCallbackListNames"]


class KerasCallbackListNames:
    """Mixed into :class:`~eventbus.Bus`: each name calls the bus's own method."""

    # The bus's methods, which these call.
    train_begin: Any
    train_end: Any
    epoch_begin: Any
    epoch_end: Any
    batch_begin: Any
    batch_end: Any
    test_begin: Any
    test_end: Any
    test_batch_begin: Any
    test_batch_end: Any
    predict_begin: Any
    predict_end: Any
    predict_batch_begin: Any
    predict_batch_end: Any

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        """Keras's ``CallbackList.on_train_begin``: :meth:`train_begin` without params."""
        return self.train_begin(None, logs)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self.train_end(logs)

    def on_epoch_begin(self, epoch: int,
                       logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self.epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int,
                     logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self.epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch: int,
                             logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self.batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int,
                           logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self.batch_end(batch, logs)

    on_batch_begin = on_train_batch_begin  # Keras 2's names
    on_batch_end = on_train_batch_end

    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self.test_begin(logs)

    def on_test_end(self, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self.test_end(logs)

    def on_test_batch_begin(self, batch: int,
                            logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self.test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch: int,
                          logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self.test_batch_end(batch, logs)

    def on_predict_begin(self, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self.predict_begin(logs)

    def on_predict_end(self, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self.predict_end(logs)

    def on_predict_batch_begin(self, batch: int,
                               logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self.predict_batch_begin(batch, logs)

    def on_predict_batch_end(self, batch: int,
                             logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self.predict_batch_end(batch, logs)
