"""Event filters: every / once / before / after / seconds on any plugin, recorded and replayed."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

import eventbus.engine
from eventbus import Bus, ConfigError, Plugin, Sink, hookimpl, replay
from eventbus.filters import EventFilter, after, before, every, every_seconds, filtered, once
from eventbus.log import read_header
from plugins import EarlyStopping


class Seen(Plugin):
    def __init__(self):
        self.epochs: list[tuple[str, int]] = []
        self.batches: list[tuple[int, int, int]] = []

    @hookimpl
    def on_epoch_begin(self, event):
        self.epochs.append(("begin", event.epoch))

    @hookimpl
    def on_epoch_end(self, event):
        self.epochs.append(("end", event.epoch))

    @hookimpl
    def on_batch_end(self, event):
        self.batches.append((event.epoch, event.batch, event.step))


def train(plugins, n_epochs=6, n_batches=4, log=None, val_loss=lambda epoch: 1 / (epoch + 1)):
    with Bus(plugins, log=log) as bus:
        bus.train_begin()
        for epoch in range(n_epochs):
            bus.epoch_begin(epoch)
            for batch in range(n_batches):
                bus.batch_begin(batch)
                bus.batch_end(batch, {"loss": 1.0})
            bus.epoch_end(epoch, {"val_loss": val_loss(epoch)})
            if bus.stop_training:
                break
        bus.train_end()
    return bus


def expected(index, f: EventFilter) -> bool:
    return ((f.every is None or (index + 1) % f.every == 0)
            and (f.once is None or index == f.once)
            and (f.before is None or index < f.before)
            and (f.after is None or index > f.after))


index_filters = st.fixed_dictionaries(
    {"on": st.sampled_from(["epoch", "batch", "step"])},
    optional={"every": st.integers(1, 5), "once": st.integers(0, 8),
              "before": st.integers(0, 8), "after": st.integers(0, 8)},
).filter(lambda d: len(d) > 1).map(lambda d: EventFilter(**d))


@given(st.lists(index_filters, min_size=1, max_size=3))
def test_a_plugin_sees_exactly_the_events_its_filters_pass(filters):
    seen = filtered(Seen(), *filters)
    train([seen], n_epochs=5, n_batches=3)
    epoch_filters = [f for f in filters if f.on == "epoch"]
    want_epochs = [(when, e) for e in range(5) for when in ("begin", "end")
                   if all(expected(e, f) for f in epoch_filters)]
    assert seen.epochs == want_epochs
    batch_filters = [f for f in filters if f.on != "epoch"]
    want_batches = [(e, b, e * 3 + b) for e in range(5) for b in range(3)
                    if all(expected(b if f.on == "batch" else e * 3 + b, f)
                           for f in batch_filters)]
    assert seen.batches == want_batches


def test_the_shorthands():
    assert every(2, Seen()).event_filters == (EventFilter(every=2),)
    assert once(3, Seen(), on="step").event_filters == (EventFilter(on="step", once=3),)
    assert before(4, Seen()).event_filters == (EventFilter(before=4),)
    assert after(1, Seen(), on="batch").event_filters == (EventFilter(on="batch", after=1),)
    plugin = Seen()
    assert every(2, after(1, plugin)) is plugin
    assert len(plugin.event_filters) == 2


class Times(Plugin):
    def __init__(self):
        self.times: list[tuple[int, float]] = []

    @hookimpl
    def on_batch_end(self, event):
        self.times.append((event.step, event.time))


def test_a_time_filter_passes_events_at_least_that_far_apart_by_their_times(monkeypatch):
    clock = itertools.count(0.0, 0.25)  # every record a quarter second after the last
    monkeypatch.setattr(eventbus.engine, "_time", lambda: next(clock))
    filtered_times, every_time = every_seconds(1.9, Times(), on="batch"), Times()
    train([filtered_times, every_time], n_epochs=3, n_batches=10)
    want, last = [], None
    for step, time in every_time.times:
        if last is None or time - last >= 1.9:
            want.append((step, time))
            last = time
    assert filtered_times.times == want
    assert 4 < len(want) < len(every_time.times)


def test_a_time_filter_passes_the_first_event_after_the_clock_steps_back(monkeypatch):
    """The clock steps back an hour (NTP, a resume on a machine whose clock is behind): the
    next event passes and the interval counts from it; waiting for the clock to catch up
    skipped an hour of checkpoints."""
    times = iter([*range(0, 200, 10), *range(200 - 3600, 400 - 3600, 10)])
    monkeypatch.setattr(eventbus.engine, "_time", lambda: float(next(times)))
    seen = every_seconds(60, Times(), on="batch")
    bus = Bus([seen])
    bus.train_begin()
    bus.epoch_begin(0)
    for batch in range(38):
        bus.batch_end(batch, {"loss": 1.0})
    passed = [time for _, time in seen.times]
    gaps = [b - a for a, b in zip(passed, passed[1:])]
    assert sum(gap < 0 for gap in gaps) == 1  # the step back, passed at once
    assert all(gap >= 60 for gap in gaps if gap >= 0)
    assert max(gap for gap in gaps if gap >= 0) < 80


@pytest.mark.parametrize("bad, field", [
    (dict(on="week", every=2), "on"), (dict(every=0), "every"), (dict(once=-1), "once"),
    (dict(seconds=float("nan")), "seconds"), (dict(every=True), "every"), ({}, "every"),
])
def test_a_bad_filter_is_refused_naming_the_field(bad, field):
    with pytest.raises(ConfigError) as info:
        EventFilter(**bad)
    assert info.value.field == field


def test_junk_in_event_filters_is_refused_when_the_plugin_is_added():
    plugin = Seen()
    plugin.event_filters = ("every 2",)
    with pytest.raises(ConfigError, match="not an EventFilter"):
        Bus([plugin])


def test_the_header_records_the_filters_and_replay_applies_them(tmp_path):
    log = tmp_path / "run.jsonl"
    # val_loss rises every epoch: unfiltered, patience=1 stops at epoch 1; seeing only the
    # epochs after 2, the first it judges is 3 and it stops at 4.
    stopper = after(2, EarlyStopping(monitor="val_loss", patience=1))
    bus = train([stopper], n_epochs=6, log=log, val_loss=float)
    assert bus.stop_training
    spec = read_header(log).plugins[0]
    assert spec.filters == [{"on": "epoch", "after": 2}]
    result = replay(log, verify=True)
    assert result.ok
    assert result.plugins[0].event_filters == (EventFilter(after=2),)
    assert result.stopped_at == result.recorded_stop == 4


# --- a plugin that is also a sink: its writes are filtered as its hooks are ------------------


class SeenSink(Plugin, Sink):
    """Takes records as a sink does (CSVLogger, TensorBoard), no hooks at all."""

    takes = frozenset({"epoch_begin", "epoch_end", "batch_end", "train_end"})

    def __init__(self):
        self.records: list[tuple[str, int | None, int | None, int | None]] = []

    def write(self, record):
        self.records.append((record["kind"], record.get("epoch"), record.get("batch"),
                             record.get("step")))


@given(st.lists(index_filters, min_size=1, max_size=3))
def test_a_sink_plugin_is_written_exactly_the_records_its_filters_pass(filters):
    """every(5, TensorBoard(...)) is every fifth epoch's scalars: a plugin's filters apply to
    the records its ``write`` takes as to its hooks' events (the batch fast path included);
    kinds no filter names (train_end) always reach it."""
    sink = filtered(SeenSink(), *filters)
    train([sink], n_epochs=5, n_batches=3)
    epoch_filters = [f for f in filters if f.on == "epoch"]
    batch_filters = [f for f in filters if f.on != "epoch"]
    want = []
    for e in range(5):
        if all(expected(e, f) for f in epoch_filters):
            want.append(("epoch_begin", e, None, None))
        want += [("batch_end", e, b, e * 3 + b) for b in range(3)
                 if all(expected(b if f.on == "batch" else e * 3 + b, f) for f in batch_filters)]
        if all(expected(e, f) for f in epoch_filters):
            want.append(("epoch_end", e, None, None))
    want.append(("train_end", None, None, None))
    assert sink.records == want


def test_every_n_csvlogger_and_tensorboard_write_every_nth_epoch(tmp_path):
    """The filters page's own examples, read back with the csv module and TensorBoard's
    reader."""
    import csv

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from plugins import CSVLogger, TensorBoard

    table = tmp_path / "every-2nd-epoch.csv"
    train([every(2, CSVLogger(str(table))), every(5, TensorBoard(str(tmp_path / "tb")))],
          n_epochs=12, n_batches=2)
    with open(table, newline="") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [1, 3, 5, 7, 9, 11]
    scalars = EventAccumulator(str(tmp_path / "tb" / "validation"))  # val_loss, as Keras
    scalars.Reload()
    assert [e.step for e in scalars.Scalars("epoch_loss")] == [4, 9]


RUN_AND_DIE = """
import os, sys
from eventbus import Bus
from eventbus.filters import every
from plugins import TensorBoard
bus = Bus([every(2, TensorBoard(sys.argv[2]))], log=sys.argv[1])
bus.train_begin({"epochs": 6})
for epoch in range(4):
    bus.epoch_begin(epoch)
    bus.epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
bus.flush()
os._exit(0)  # killed: nothing closed
"""


def test_a_resume_writes_back_to_a_filtered_tensorboard_only_what_it_would_have_written(
        tmp_path):
    import shutil
    import subprocess
    import sys

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from plugins import TensorBoard

    log, logdir = tmp_path / "run.jsonl", tmp_path / "tb"
    subprocess.run([sys.executable, "-c", RUN_AND_DIE, str(log), str(logdir)], check=True,
                   timeout=60)
    shutil.rmtree(logdir)  # the event files lost: the resume writes them back from the log
    with Bus([every(2, TensorBoard(str(logdir)))], log=log, resume=True) as bus:
        for epoch in range(bus.initial_epoch, 6):
            bus.epoch_begin(epoch)
            bus.epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
        bus.train_end()
    scalars = EventAccumulator(str(logdir / "train"))
    scalars.Reload()
    assert [e.step for e in scalars.Scalars("epoch_loss")] == [1, 3, 5]
