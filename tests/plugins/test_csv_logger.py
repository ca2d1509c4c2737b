"""plugins.CSVLogger on a bus: Keras's file, append, resume without duplicate rows."""

from __future__ import annotations

import csv
import json
import math

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventbus import Bus, SinkFailureWarning, read_log
from eventbus.replay import effective_records
from eventbus.testing import RecordingWriter, epochs, run
from plugins import CSVLogger


def rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def train(bus, losses, start=0, batches=2):
    """A loop: epochs from ``start`` with the given losses, ``batches`` batches each."""
    for epoch in range(start, len(losses)):
        bus.epoch_begin(epoch)
        for b in range(batches):
            bus.batch_begin(b)
            bus.batch_end(b, {"loss": losses[epoch] + b})
        bus.epoch_end(epoch, {"loss": losses[epoch], "val_loss": losses[epoch] + 0.5})


def crash_after(log, epoch):
    """Cut the JSON Lines log after the epoch_end of ``epoch``: what a crash leaves on disk."""
    lines = log.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        record = json.loads(line)
        if record["kind"] == "epoch_end" and record["epoch"] == epoch:
            log.write_text("".join(lines[:i + 1]))
            return
    raise AssertionError(f"no epoch_end {epoch} in {log}")


class TestCSVLogger:
    def test_keras_layout_through_the_bus(self, tmp_path):
        """One row per epoch: epoch, then the keys sorted (learning_rate from the bus too)."""
        path = tmp_path / "log.csv"
        run([CSVLogger(path)], epochs(loss=[0.5, 0.25], val_loss=[0.6, 0.3]), learning_rate=0.1)
        frame = pd.read_csv(path)
        assert list(frame.columns) == ["epoch", "learning_rate", "loss", "val_loss"]
        assert frame["loss"].tolist() == [0.5, 0.25]
        assert frame["learning_rate"].tolist() == [0.1, 0.1]

    def test_append_false_overwrites_at_train_begin(self, tmp_path):
        """A second run without append starts the file afresh, as Keras."""
        path = tmp_path / "log.csv"
        run([CSVLogger(path)], epochs(loss=[0.5, 0.4, 0.3]))
        run([CSVLogger(path)], epochs(loss=[0.9]))
        assert [r["loss"] for r in rows(path)] == ["0.9"]

    def test_append_true_continues(self, tmp_path):
        """With append, a second run's epochs replace rows of the same epoch, others stay."""
        path = tmp_path / "log.csv"
        run([CSVLogger(path)], epochs(loss=[0.5, 0.4, 0.3]))
        run([CSVLogger(path, append=True)], epochs(loss=[0.9]))
        assert [(r["epoch"], r["loss"]) for r in rows(path)] == [
            ("0", "0.9"), ("1", "0.4"), ("2", "0.3")]

    def test_nan_loss(self, tmp_path):
        """A NaN loss is written and read back as NaN by pandas."""
        path = tmp_path / "log.csv"
        run([CSVLogger(path)], epochs(loss=[math.nan, 1.0]))
        assert math.isnan(pd.read_csv(path)["loss"][0])

    def test_unwritable_file_is_a_sink_failure(self, tmp_path):
        """A file that cannot be opened is recorded as sink_failed; training goes on."""
        (tmp_path / "dir.csv").mkdir()
        with pytest.warns(SinkFailureWarning, match="CSVLogger"):
            bus, records = run([CSVLogger(tmp_path / "dir.csv")], epochs(loss=[0.5, 0.4]))
        failed = [r for r in records if r.kind == "sink_failed"]
        assert len(failed) == 1 and failed[0].sink == "CSVLogger"
        assert [r.kind for r in records].count("epoch_end") == 2

    def test_config_is_recordable(self, tmp_path):
        """The header records the file name as text, so the log can be read anywhere."""
        writer = RecordingWriter()
        bus = Bus([CSVLogger(tmp_path / "log.csv", separator=";")], log=writer)
        bus.close()
        spec = writer.records[0]["plugins"][0]
        assert spec["params"] == {"filename": str(tmp_path / "log.csv"), "separator": ";",
                                  "append": False}
        assert spec["recordable"] and spec["side_effects"]

    def test_bad_separator(self, tmp_path):
        """A separator of more than one character is refused at construction."""
        with pytest.raises(ValueError, match="separator"):
            CSVLogger(tmp_path / "log.csv", separator="::")


class TestResume:
    def test_resumed_run_writes_no_duplicate_rows(self, tmp_path):
        """A crash after epoch 2's row but before the log kept it: epoch 2 is written once."""
        path, log = tmp_path / "log.csv", tmp_path / "run.jsonl"
        bus = Bus([CSVLogger(path)], log=log)
        bus.train_begin({"epochs": 5})
        train(bus, [0.9, 0.8, 0.7])
        bus.close()
        crash_after(log, 1)
        assert [r["epoch"] for r in rows(path)] == ["0", "1", "2"]

        bus = Bus([CSVLogger(path)], log=log, resume=True)
        assert bus.initial_epoch == 2
        bus.train_begin({"epochs": 5})
        train(bus, [0.9, 0.8, 0.65, 0.6, 0.5], start=bus.initial_epoch)
        bus.train_end()
        bus.close()
        table = rows(path)
        assert [r["epoch"] for r in table] == ["0", "1", "2", "3", "4"]
        assert [float(r["loss"]) for r in table] == [0.9, 0.8, 0.65, 0.6, 0.5]

    @settings(max_examples=8, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(losses=st.lists(st.floats(0, 10), min_size=2, max_size=5), data=st.data())
    def test_resumed_file_equals_the_log(self, tmp_path_factory, losses, data):
        """Property: after a crash anywhere and a resume, the CSV holds the log's epochs once."""
        tmp = tmp_path_factory.mktemp("resume")
        path, log = tmp / "log.csv", tmp / "run.jsonl"
        done = data.draw(st.integers(1, len(losses)), label="epochs before the crash")
        kept = data.draw(st.integers(0, done - 1), label="last epoch the log kept")
        bus = Bus([CSVLogger(path)], log=log)
        bus.train_begin({"epochs": len(losses)})
        train(bus, losses[:done])
        bus.close()
        crash_after(log, kept)
        bus = Bus([CSVLogger(path)], log=log, resume=True)
        bus.train_begin({"epochs": len(losses)})
        train(bus, [x + 1 for x in losses], start=bus.initial_epoch)
        bus.train_end()
        bus.close()
        ends = [r for r in effective_records(read_log(log)) if r.kind == "epoch_end"]
        table = rows(path)
        assert [int(r["epoch"]) for r in table] == [e.epoch for e in ends]
        assert [float(r["loss"]) for r in table] == [e.logs["loss"] for e in ends]
