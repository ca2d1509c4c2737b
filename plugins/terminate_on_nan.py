"""TerminateOnNaN: stop training when a training batch reports a NaN or infinite loss."""

from __future__ import annotations

import math
from typing import Any

from eventbus import AbortTraining, Plugin, hookimpl
from eventbus.records import BatchEnd, StopTraining
from eventbus.run import Run
from sinks import console

from .monitor import require_bool, require_verbose

__all__ = ["NonFiniteLossError", "TerminateOnNaN"]


class NonFiniteLossError(AbortTraining):
    """A training batch's loss was NaN or infinite and ``raise_error=True`` was asked for."""


class TerminateOnNaN(Plugin):
    """Stop training (or raise, with ``raise_error=True``) on a NaN or infinite batch ``loss``.

    The stop is a ``stop_training`` decision with code ``non_finite_loss``: the loop finishes
    the epoch's bookkeeping and publishes ``train_end`` as after any stop. With ``raise_error``
    the plugin raises :class:`NonFiniteLossError` (an :class:`~eventbus.AbortTraining`, so a
    ``RuntimeError`` as Keras raises); the bus records it as ``plugin_failed``, flushes the log
    and lets that same exception propagate out of ``bus.batch_end``, not wrapped in a
    :class:`~eventbus.PluginError`, whatever ``on_plugin_error`` says. ``train_end`` hooks (a
    backup's clean-up) then do not run, as in Keras.
    """

    def __init__(self, raise_error: bool = False, *, verbose: int = 1):
        self.raise_error = require_bool(raise_error, "raise_error", type(self).name)
        self.verbose = require_verbose(verbose, type(self).name)

    @hookimpl
    def on_attach(self, run: Run) -> None:
        if self.verbose > 0:
            console.attach(run)  # Keras always says it stops; verbose=0 keeps it quiet

    @hookimpl
    def on_batch_end(self, event: BatchEnd) -> Any:
        loss = event.logs.get("loss")
        if loss is None or math.isfinite(loss):
            return None
        batch: int = event.batch
        if self.raise_error:
            raise NonFiniteLossError(f"NaN or Inf loss encountered at batch {batch}. "
                                     f"Loss value: {loss}. Terminating training immediately.")
        return StopTraining(
            code="non_finite_loss",
            reason=f"the loss of batch {batch} (step {event.step}) is {loss}",
            evidence={"loss": loss, "batch": batch, "step": event.step})
