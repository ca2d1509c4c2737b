"""BaseLogger: epoch averages of batch metrics, weighted by batch size, as Keras 2's."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from eventbus import MetricValueError, Plugin, hookimpl

from .monitor import require_names

__all__ = ["BaseLogger"]

#: Batch log keys that describe the batch rather than measure it.
_NOT_METRICS = frozenset({"batch", "size", "num_steps"})


class BaseLogger(Plugin):
    """Add to each epoch's logs the size-weighted average of every batch metric.

    A metric the loop already reports at epoch end keeps the loop's value; the average is only
    added for metrics the epoch logs lack. Each batch counts with its ``size`` (its sample
    count), or 1 when the loop gives no ``size``. ``stateful_metrics`` are not averaged: the
    epoch gets their last batch value (for metrics the loop already accumulates, such as a
    running accuracy); a single name may be given as a str.
    """

    def __init__(self, stateful_metrics: Iterable[str] | str | None = None):
        # One str is one metric name, not its letters.
        self.stateful_metrics = sorted(set(require_names(stateful_metrics, "stateful_metrics",
                                                         type(self).name)))
        self._stateful = frozenset(self.stateful_metrics)
        self._sums: dict[str, float] = {}
        self._weights: dict[str, float] = {}
        self._last: dict[str, float] = {}

    @hookimpl
    def on_epoch_begin(self, event: Any) -> None:
        self._sums = {}
        self._weights = {}
        self._last = {}

    @hookimpl
    def on_batch_end(self, event: Any) -> None:
        logs = event.logs
        weight = logs.get("size", 1.0)
        if weight <= 0:
            return
        sums, weights, stateful = self._sums, self._weights, self._stateful
        for key, value in logs.items():
            if key in _NOT_METRICS:
                continue
            if key in stateful:
                self._last[key] = value
            elif type(value) is list or type(sums.get(key)) is list:
                # A vector metric: averaged element by element, as Keras 2 averaged arrays.
                sums[key] = _add_vector(sums.get(key), value, weight, key)
                weights[key] = weights.get(key, 0.0) + weight
            elif key in sums:
                sums[key] += value * weight
                weights[key] += weight
            else:
                sums[key] = value * weight
                weights[key] = weight

    @hookimpl
    def augment_epoch_logs(self, epoch: int, logs: Mapping[str, float]) -> dict[str, float]:
        # Keras divides every metric by all samples seen; each metric's own weight is exact
        # when a metric is only reported for some batches.
        out = {key: ([t / self._weights[key] for t in total] if type(total) is list
                     else total / self._weights[key])
               for key, total in self._sums.items() if key not in logs}
        out.update((k, v) for k, v in self._last.items() if k not in logs)
        return out


def _add_vector(total: list[float] | float | None, value: list[float] | float, weight: float,
                key: str) -> list[float]:
    """``total`` plus ``value * weight``, element by element; a vector whose length changes
    within an epoch (or a metric that is a number in one batch and a vector in another) has
    no average, and says so."""
    if type(value) is list and (total is None or
                                (type(total) is list and len(total) == len(value))):
        scaled = [v * weight for v in value]
        return scaled if total is None else [t + v for t, v in zip(total, scaled)]
    seen = f"{len(total)} values" if type(total) is list else "a number"
    now = f"{len(value)} values" if type(value) is list else "a number"
    raise MetricValueError(f"BaseLogger: logs[{key!r}] is {now} in this batch and was {seen} "
                           "in earlier batches of the epoch: it has no average",
                           event="batch_end", field=f"logs.{key}", plugin="BaseLogger")
