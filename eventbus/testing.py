"""Helpers for testing plugins, this project's and yours.

>>> from eventbus.testing import drive, epochs
>>> from plugins import EarlyStopping
>>> decisions = drive(EarlyStopping(patience=2), epochs(val_loss=[0.5, 0.4, 0.45, 0.47, 0.5]))
>>> [(d.kind, d.epoch) for d in decisions]
[('stop_training', 3)]

:func:`drive` runs the events through a real :class:`~eventbus.Bus` (no log, no model), so a
plugin is tested exactly as it runs in training and in replay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .bus import Bus
from .records import (
    Decision,
    EpochBegin,
    EpochEnd,
    Observation,
    Record,
    TrainBegin,
    TrainEnd,
    parse_record,
)
from .records import same_values as same

__all__ = ["RecordingWriter", "drive", "epochs", "logs_of", "run", "same"]


class RecordingWriter:
    """A log writer that keeps every record in memory (``.records``), for assertions."""

    name = "memory"

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.flushes = 0
        self.closed = False

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def flush(self) -> None:
        self.flushes += 1

    def sync(self) -> None:
        self.flush()

    def close(self) -> None:
        self.closed = True

    def kinds(self) -> list[str]:
        return [r["kind"] for r in self.records]


def epochs(**metrics: Sequence[float]) -> list[Observation]:
    """Observations for a run whose epochs report ``metrics`` (equal-length sequences).

    ``epochs(val_loss=[0.5, 0.4])`` gives train_begin, then epoch_begin/epoch_end per value,
    then train_end. Metrics may hold NaN.
    """
    lengths = {len(v) for v in metrics.values()}
    if len(lengths) > 1:
        raise ValueError(f"epochs(): metric sequences differ in length: "
                         f"{ {k: len(v) for k, v in metrics.items()} }")
    n = lengths.pop() if lengths else 0
    out: list[Observation] = [TrainBegin(params={"epochs": n})]
    for epoch in range(n):
        out.append(EpochBegin(epoch=epoch))
        out.append(EpochEnd(epoch=epoch, logs={k: v[epoch] for k, v in metrics.items()}))
    out.append(TrainEnd())
    return out


def run(plugins: Sequence[object], events: Iterable[Observation], *,
        learning_rate: float | None = None, stop: bool = True,
        **bus_options: Any) -> tuple[Bus, list[Record]]:
    """Publish ``events`` on a bus holding ``plugins``; returns the bus and every record.

    With ``stop=True`` (the default) the run ends as a loop would: after the epoch in which a
    plugin decided to stop training, only ``train_end`` is published.
    """
    writer = RecordingWriter()
    bus = Bus(plugins, log=writer, learning_rate=learning_rate, **bus_options)
    for event in events:
        if stop and bus.stop_training and not isinstance(event, TrainEnd):
            continue
        bus.publish(event)
    bus.close()
    return bus, [parse_record(r) for r in writer.records]


def drive(plugin: object, events: Iterable[Observation], *, learning_rate: float | None = None,
          stop: bool = True, **bus_options: Any) -> list[Decision]:
    """The decisions ``plugin`` makes on ``events`` (see :func:`run`)."""
    _, records = run([plugin], events, learning_rate=learning_rate, stop=stop, **bus_options)
    return [r for r in records if isinstance(r, Decision)]


def logs_of(records: Iterable[Record], kind: str) -> list[Mapping[str, float]]:
    """The ``logs`` of every record of ``kind``."""
    return [r.logs for r in records if r.kind == kind]  # type: ignore[attr-defined]
