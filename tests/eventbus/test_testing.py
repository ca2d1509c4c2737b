"""eventbus.testing: what plugin authors use to test their plugins."""

from __future__ import annotations

import math

import pytest

from eventbus import Plugin, hookimpl
from eventbus import records as r
from eventbus.testing import RecordingWriter, drive, epochs, logs_of, run


class StopBelow(Plugin):
    def __init__(self, threshold: float):
        self.threshold = threshold

    @hookimpl
    def on_epoch_end(self, event):
        if event.logs["loss"] < self.threshold:
            return r.StopTraining(reason=f"loss below {self.threshold}")
        return None


def test_epochs_builds_a_whole_run():
    """epochs() gives train_begin, a begin/end pair per value, then train_end."""
    events = epochs(loss=[1.0, math.nan], acc=[0.1, 0.2])
    assert [e.kind for e in events] == ["train_begin", "epoch_begin", "epoch_end",
                                        "epoch_begin", "epoch_end", "train_end"]
    assert events[0].params == {"epochs": 2}
    assert events[4].logs["acc"] == 0.2 and math.isnan(events[4].logs["loss"])


def test_epochs_refuses_ragged_metrics():
    """Metric sequences of different lengths are a mistake in the test, said clearly."""
    with pytest.raises(ValueError, match="differ in length"):
        epochs(loss=[1.0], acc=[0.1, 0.2])


def test_drive_returns_the_decisions_and_stops_like_a_loop():
    """drive() runs the plugin on a real bus; after a stop only train_end is published."""
    decisions = drive(StopBelow(0.5), epochs(loss=[0.9, 0.4, 0.3, 0.2]))
    assert [(d.kind, d.epoch, d.source) for d in decisions] == [("stop_training", 1, "StopBelow")]
    everything = drive(StopBelow(0.5), epochs(loss=[0.9, 0.4, 0.3]), stop=False)
    assert [d.epoch for d in everything] == [1, 2]


def test_run_gives_every_record_validated():
    """run() returns the bus and every record it wrote, header first."""
    bus, records = run([StopBelow(0.5)], epochs(loss=[0.9, 0.4]), learning_rate=0.1)
    assert records[0].kind == "header" and bus.stop_training
    assert records[0].meta["learning_rate"] == 0.1
    assert [sorted(logs) for logs in logs_of(records, "epoch_end")] == [["loss"], ["loss"]]


def test_recording_writer_keeps_records_and_counts_flushes():
    """RecordingWriter is a log writer in memory, for asserting on what the bus wrote."""
    writer = RecordingWriter()
    writer.write({"kind": "header"})
    writer.flush()
    writer.close()
    assert writer.kinds() == ["header"] and writer.flushes == 1 and writer.closed
