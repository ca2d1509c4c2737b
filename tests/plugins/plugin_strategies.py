"""Hypothesis strategies and run helpers shared by the decision plugins' tests."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from eventbus import Bus, read_log
from eventbus.jsonl import JsonlWriter
from eventbus.records import Decision, Observation, TrainEnd
from eventbus.replay import effective_records
from eventbus.testing import epochs

__all__ = ["decision_view", "finite_metric", "metric_sequences", "run_logged",
           "run_with_resume", "strictly_improving"]

#: Metric values with a few exact repeats, so plateaus and ties happen often.
finite_metric = st.one_of(
    st.sampled_from([0.0, 0.25, 0.5, 0.5, 1.0, 1.0, 2.0]),
    st.floats(min_value=-10.0, max_value=10.0, allow_nan=False, allow_infinity=False),
)
metric_value = st.one_of(finite_metric, st.just(math.nan))


def metric_sequences(min_size: int = 1, max_size: int = 25, nan: bool = True) -> Any:
    """Lists of per-epoch metric values (NaN included unless ``nan=False``)."""
    return st.lists(metric_value if nan else finite_metric, min_size=min_size,
                    max_size=max_size)


@st.composite
def strictly_improving(draw: Any, min_delta: float = 0.0, mode: str = "min") -> list[float]:
    """A sequence in which every value beats the previous one by more than ``min_delta``."""
    start = draw(st.floats(min_value=-100.0, max_value=100.0))
    steps = draw(st.lists(st.floats(min_value=abs(min_delta) + 1e-3, max_value=5.0),
                          min_size=0, max_size=25))
    out = [start]
    for step in steps:
        out.append(out[-1] - step if mode == "min" else out[-1] + step)
    return out


def decision_view(decision: Decision) -> tuple[Any, ...]:
    """A decision without its envelope and sequence numbers, for comparing two runs."""
    data = decision.model_dump(exclude={"v", "run_id", "seq", "time", "cause_seq"})
    return tuple(sorted((k, repr(v)) for k, v in data.items()))


def _publish(bus: Bus, events: Sequence[Observation], start_epoch: int = 0) -> None:
    for event in events:
        epoch = getattr(event, "epoch", None)
        if epoch is not None and epoch < start_epoch:
            continue
        if bus.stop_training and not isinstance(event, TrainEnd):
            continue
        bus.publish(event)


def _decisions(path: str) -> list[Decision]:
    return [r for r in effective_records(read_log(path)) if isinstance(r, Decision)]


def run_logged(make_plugins: Callable[[], list[object]], events: Sequence[Observation],
               directory: str, *, learning_rate: float | None = None,
               name: str = "full.jsonl") -> list[Decision]:
    """Run ``events`` uninterrupted on a bus logging to ``directory``; the decisions logged."""
    path = os.path.join(directory, name)
    with Bus(make_plugins(), log=path, learning_rate=learning_rate) as bus:
        _publish(bus, events)
    return _decisions(path)


def run_with_resume(make_plugins: Callable[[], list[object]], events: Sequence[Observation],
                    cut: int, directory: str, *,
                    learning_rate: float | None = None) -> list[Decision]:
    """Crash after ``events[:cut]``, resume with fresh plugins from the log, finish the run."""
    path = os.path.join(directory, "resumed.jsonl")
    writer = JsonlWriter(path)
    bus = Bus(make_plugins(), log=writer, learning_rate=learning_rate)
    _publish(bus, events[:cut])
    writer.close()  # the crash: everything published so far reached the file, nothing more
    with Bus(make_plugins(), log=path, resume=True, learning_rate=learning_rate) as again:
        _publish(again, events, start_epoch=again.initial_epoch)
    return _decisions(path)


def resume_matches(make_plugins: Callable[[], list[object]], values: Sequence[float],
                   cut: int, *, learning_rate: float | None = None,
                   metric: str = "val_loss") -> tuple[list[Any], list[Any]]:
    """The decisions of an uninterrupted run and of one resumed after ``cut`` events."""
    events = epochs(**{metric: list(values)})
    # A crash comes before train_end: resuming a finished run is not a crash recovery.
    cut = min(cut, len(events) - 1)
    with tempfile.TemporaryDirectory() as directory:
        full = run_logged(make_plugins, events, directory, learning_rate=learning_rate)
        resumed = run_with_resume(make_plugins, events, cut, directory,
                                  learning_rate=learning_rate)
    return [decision_view(d) for d in full], [decision_view(d) for d in resumed]
