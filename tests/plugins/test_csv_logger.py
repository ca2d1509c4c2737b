"""plugins.CSVLogger on a bus: Keras's file, append, resume without duplicate rows."""

from __future__ import annotations

import csv
import json
import math

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, ConfigError, SinkFailureWarning, read_log
from eventbus.replay import effective_records
from eventbus.testing import RecordingWriter, epochs, run
from plugins import CSVLogger, ReduceLROnPlateau


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
    """Cut the JSON Lines log after the epoch_end of ``epoch`` (after train_begin for -1): what
    a crash leaves on disk."""
    lines = log.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        record = json.loads(line)
        if (record["kind"] == "epoch_end" and record["epoch"] == epoch) or \
                (epoch < 0 and record["kind"] == "train_begin"):
            log.write_text("".join(lines[:i + 1]))
            return
    raise AssertionError(f"no epoch_end {epoch} in {log}")


class TestCSVLogger:
    def test_keras_layout_through_the_bus(self, tmp_path):
        """One row per epoch: epoch, then the keys sorted; learning_rate only with a plugin
        that sets the rate, as Keras's columns."""
        path = tmp_path / "log.csv"
        run([CSVLogger(path)], epochs(loss=[0.5, 0.25], val_loss=[0.6, 0.3]), learning_rate=0.1)
        frame = pd.read_csv(path)
        assert list(frame.columns) == ["epoch", "loss", "val_loss"]
        assert frame["loss"].tolist() == [0.5, 0.25]
        run([CSVLogger(path), ReduceLROnPlateau(monitor="loss", patience=0, factor=0.5)],
            epochs(loss=[0.5, 0.75], val_loss=[0.6, 0.3]), learning_rate=0.1)
        frame = pd.read_csv(path)
        assert list(frame.columns) == ["epoch", "learning_rate", "loss", "val_loss"]
        assert frame["learning_rate"].tolist() == [0.1, 0.1]  # the cut lands after the row

    def test_no_placeholder_validation_columns(self, tmp_path):
        """No val_ columns until a val_ metric comes (Keras adds val_<k> columns of NA when the
        first epoch has none); a late val_loss widens the header, columns stay sorted."""
        path = tmp_path / "log.csv"
        bus = Bus([CSVLogger(path)])
        bus.train_begin()
        bus.epoch_begin(0)
        bus.epoch_end(0, {"loss": 0.5, "acc": 0.1})
        assert rows(path)[0].keys() == {"epoch", "acc", "loss"}
        bus.epoch_begin(1)
        bus.epoch_end(1, {"loss": 0.4, "acc": 0.2, "val_loss": 0.6})
        bus.train_end()
        bus.close()
        assert list(pd.read_csv(path).columns) == ["epoch", "acc", "loss", "val_loss"]

    def test_append_false_overwrites_at_train_begin(self, tmp_path):
        """A second run without append starts the file afresh, as Keras."""
        path = tmp_path / "log.csv"
        run([CSVLogger(path)], epochs(loss=[0.5, 0.4, 0.3]))
        run([CSVLogger(path)], epochs(loss=[0.9]))
        assert [r["loss"] for r in rows(path)] == ["0.9"]

    def test_append_true_adds_the_rows_of_a_new_run(self, tmp_path):
        """With append, a second run's rows follow the first run's, even where its epochs
        count from 0 again: nothing of the earlier run is replaced (Keras appends them all)."""
        path = tmp_path / "log.csv"
        run([CSVLogger(path)], epochs(loss=[0.5, 0.4, 0.3]))
        run([CSVLogger(path, append=True)], epochs(loss=[0.9]))
        assert [(r["epoch"], r["loss"]) for r in rows(path)] == [
            ("0", "0.5"), ("1", "0.4"), ("2", "0.3"), ("0", "0.9")]

    @given(runs=st.lists(st.lists(st.floats(0, 10), min_size=1, max_size=3), min_size=1,
                         max_size=4))
    def test_append_keeps_every_run(self, tmp_path_factory, runs):
        """Property: runs with append=True, each counting epochs from 0, leave every row of
        every run in the file, in the order written."""
        path = tmp_path_factory.mktemp("append") / "log.csv"
        for losses in runs:
            run([CSVLogger(path, append=True)], epochs(loss=losses))
        assert [(int(r["epoch"]), float(r["loss"])) for r in rows(path)] == \
            [(epoch, loss) for losses in runs for epoch, loss in enumerate(losses)]

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

    @pytest.mark.parametrize(("params", "field"), [
        ({"filename": 3}, "filename"), ({"filename": None}, "filename"),
        ({"filename": ""}, "filename"), ({"filename": "x.csv", "append": "no"}, "append"),
        ({"filename": "x.csv", "append": 1}, "append"),
        ({"filename": "x.csv", "append": None}, "append")])
    def test_bad_parameters_name_the_field(self, params, field):
        """A filename that is not a path and an append that is not a bool are ConfigErrors
        naming the plugin and the field (not a TypeError from os.fspath, not a truthy "no")."""
        with pytest.raises(ConfigError) as info:
            CSVLogger(**params)
        assert (info.value.plugin, info.value.field) == ("CSVLogger", field)


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

    def test_a_csv_the_resume_cannot_read_fails_its_sink_not_the_resume(self, tmp_path):
        """A CSV that is not UTF-8 CSV (another program's, or damaged) made Bus(resume=True)
        raise from CSVLogger's open. It is a sink failure, as a failed write is: recorded with
        the file and line, the file left as it was, and the run resumes on its log."""
        path, log = tmp_path / "log.csv", tmp_path / "run.jsonl"
        bus = Bus([CSVLogger(path)], log=log)
        bus.train_begin({"epochs": 5})
        train(bus, [0.9, 0.8])
        bus.close()
        crash_after(log, 1)
        path.write_bytes(b"epoch,loss\n0,0.9\n1,\xff\n")
        bus = Bus([CSVLogger(path)], log=log, resume=True)
        assert bus.initial_epoch == 2
        train(bus, [0.9, 0.8, 0.7], start=bus.initial_epoch)
        with pytest.warns(SinkFailureWarning, match="CSVLogger on open"):
            bus.close()
        (failed,) = [r for r in read_log(log) if r.kind == "sink_failed"]
        assert failed.sink == "CSVLogger" and f"{path}:3: not UTF-8" in failed.message
        assert path.read_bytes() == b"epoch,loss\n0,0.9\n1,\xff\n"
        assert [r.epoch for r in read_log(log) if r.kind == "epoch_end"] == [0, 1, 2]

    @pytest.mark.parametrize("when", ["resume's cut", "resume's opening", "fresh run"])
    def test_an_opening_a_full_disk_refused_is_made_at_the_next_row(self, tmp_path,
                                                                      monkeypatch, when):
        """The resume's cut of the crashed attempt's rows, or the opening of the table (a
        resume's, a fresh run's), failed once (EIO, ENOSPC) and took CSVLogger out for the
        rest of the run: the abandoned row stayed, and no later epoch got one. Now the
        opening waits for the next row or flush, the fault reported once, and every epoch has
        the log's row."""
        import errno

        import sinks.csv as module

        path, log = tmp_path / "log.csv", tmp_path / "run.jsonl"
        if when != "fresh run":
            bus = Bus([CSVLogger(path)], log=log)
            bus.train_begin({"epochs": 5})
            train(bus, [0.9, 0.8, 0.7])
            bus.close()
            crash_after(log, 1)
        calls = []
        target = "drop_rows_from" if when == "resume's cut" else "__init__"
        real = getattr(module.CsvTable, target)

        def refused_once(*args, **kwargs):
            calls.append(target)
            if len(calls) == 1:
                raise OSError(errno.ENOSPC if when == "fresh run" else errno.EIO, "refused")
            return real(*args, **kwargs)

        monkeypatch.setattr(module.CsvTable, target, refused_once)
        bus = Bus([CSVLogger(path)], log=log, resume=True)
        bus.train_begin({"epochs": 5})
        losses = [0.9, 0.8, 0.65, 0.6, 0.5]
        train(bus, losses, start=bus.initial_epoch)
        bus.train_end()
        event = "train_begin" if when == "fresh run" else "resume"
        with pytest.warns(SinkFailureWarning, match=rf"1 sink failure.*CSVLogger on {event}"
                                                    r".*opening the table"):
            bus.close()
        assert calls[:2] == [target, target]
        table = rows(path)
        assert [(int(r["epoch"]), float(r["loss"])) for r in table] == list(enumerate(losses))
        assert [(r.epoch, r.logs["loss"]) for r in read_log(log) if r.kind == "epoch_end"] == \
            list(enumerate(losses))

    def test_rows_held_for_an_opening_then_refused_for_good_are_counted(self, tmp_path,
                                                                          monkeypatch):
        """A full disk holds the rows for the table's opening; the next try meets a refusal
        that will not pass: the held rows were dropped unsaid (a bare PermissionError, or
        "0 row(s)" at train_end). The failure says how many are lost."""
        import errno

        import sinks.csv as module

        calls = []

        def refused(*args, **kwargs):
            calls.append(1)
            code = errno.ENOSPC if len(calls) <= 2 else errno.EACCES
            raise OSError(code, "refused")

        monkeypatch.setattr(module, "CsvTable", refused)
        bus = Bus([CSVLogger(tmp_path / "log.csv")])
        with pytest.warns(SinkFailureWarning, match=r"the 1 row\(s\) held for it are lost"):
            bus.train_begin({"epochs": 3})
            bus.epoch_begin(0)
            bus.epoch_end(0, {"loss": 0.9})  # held, then its try is refused for good
            bus.train_end()
            bus.close()

    def test_an_opening_refused_for_good_is_not_tried_again(self, tmp_path, monkeypatch):
        """A table that cannot be opened for good (no permission, a folder at its name) is
        one sink failure at once: it was kept waiting as a full disk's is, and close() spent
        two seconds of the training thread trying it again."""
        import errno

        import sinks.csv as module

        calls = []

        def refused(*args, **kwargs):
            calls.append(1)
            raise OSError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(module, "CsvTable", refused)
        bus = Bus([CSVLogger(tmp_path / "log.csv")])
        with pytest.warns(SinkFailureWarning, match=r"1 sink failure.*CSVLogger on "
                                                    r"train_begin.*Permission denied"):
            bus.train_begin({"epochs": 2})
            train(bus, [0.9, 0.8])
            bus.train_end()
            bus.close()
        assert calls == [1]

    def test_an_opening_the_disk_never_allows_is_given_up_at_close_and_said(self, tmp_path,
                                                                            monkeypatch):
        import errno

        import sinks.csv as module

        def refused(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(module, "CsvTable", refused)
        monkeypatch.setattr(module, "keep_trying", lambda attempt, **_: attempt())  # one try
        bus = Bus([CSVLogger(tmp_path / "log.csv")])
        bus.train_begin({"epochs": 2})
        train(bus, [0.9, 0.8])
        with pytest.warns(SinkFailureWarning, match=r"the table's opening and 2 row\(s\) "
                                                    r"\(tried again at close\) could not be "
                                                    r"written"):
            bus.train_end()
            bus.close()

    def test_resume_drops_only_the_row_of_the_epoch_resumed_from(self, tmp_path):
        """The last row is dropped only if it is for bus.initial_epoch: a crash between two
        epochs leaves every row of the file, and the resumed run appends after them."""
        path, log = tmp_path / "log.csv", tmp_path / "run.jsonl"
        bus = Bus([CSVLogger(path)], log=log)
        bus.train_begin({"epochs": 4})
        train(bus, [0.9, 0.8])
        bus.close()  # a crash between epochs: the log has epoch_end 1, as the file has
        bus = Bus([CSVLogger(path)], log=log, resume=True)
        assert bus.initial_epoch == 2
        train(bus, [0.9, 0.8, 0.7, 0.6], start=bus.initial_epoch)
        bus.train_end()
        bus.close()
        assert [(r["epoch"], r["loss"]) for r in rows(path)] == [
            ("0", "0.9"), ("1", "0.8"), ("2", "0.7"), ("3", "0.6")]

    @given(losses=st.lists(st.floats(0, 10), min_size=2, max_size=5), data=st.data())
    def test_resumed_file_equals_the_log(self, tmp_path_factory, losses, data):
        """Property: after a crash anywhere and a resume, the CSV holds an earlier run's rows
        (append=True) and then the log's epochs once each.

        The bus flushes its log at every epoch end after the plugins ran, so a crash leaves the
        log either with the file's last epoch or one epoch short of it (the row written just
        before the crash)."""
        tmp = tmp_path_factory.mktemp("resume")
        path, log = tmp / "log.csv", tmp / "run.jsonl"
        earlier = data.draw(st.lists(st.floats(0, 10), max_size=3), label="earlier run")
        if earlier:
            run([CSVLogger(path)], epochs(loss=earlier))
        done = data.draw(st.integers(1, len(losses)), label="epochs before the crash")
        kept = data.draw(st.sampled_from([done - 1, done - 2]), label="last epoch the log kept")
        bus = Bus([CSVLogger(path, append=True)], log=log)
        bus.train_begin({"epochs": len(losses)})
        train(bus, losses[:done])
        bus.close()
        crash_after(log, kept)
        bus = Bus([CSVLogger(path, append=True)], log=log, resume=True)
        assert bus.initial_epoch == kept + 1
        bus.train_begin({"epochs": len(losses)})
        train(bus, [x + 1 for x in losses], start=bus.initial_epoch)
        bus.train_end()
        bus.close()
        ends = [r for r in effective_records(read_log(log)) if r.kind == "epoch_end"]
        table = rows(path)
        assert [(int(r["epoch"]), float(r["loss"])) for r in table] == \
            [(e, x) for e, x in enumerate(earlier)] + \
            [(e.epoch, e.logs["loss"]) for e in ends]


    @given(losses=st.lists(st.floats(0, 10), min_size=1, max_size=6), data=st.data())
    def test_a_file_several_epochs_ahead_of_the_log(self, tmp_path_factory, losses, data):
        """Property: when the log lost several epochs the file kept (its writes failed for a
        while, a full disk), the resumed run's file still holds each epoch the log has once,
        then the epochs written again: every row at or after the resume epoch is dropped,
        not only the last. Appended after an earlier run's rows, those stay."""
        tmp = tmp_path_factory.mktemp("ahead")
        path, log = tmp / "log.csv", tmp / "run.jsonl"
        earlier = data.draw(st.lists(st.floats(0, 10), max_size=3), label="earlier run")
        append = data.draw(st.booleans(), label="append")
        if earlier and append:
            run([CSVLogger(path)], epochs(loss=earlier))
        done = len(losses)
        # Appending, a run that kept no epoch cannot be told apart from an earlier run's rows
        # (documented): the log keeps one epoch at least then.
        lowest = 0 if append else -1
        kept = data.draw(st.integers(lowest, done - 1), label="last epoch the log kept")
        bus = Bus([CSVLogger(path, append=append)], log=log)
        bus.train_begin({"epochs": done})
        train(bus, losses)
        bus.close()
        crash_after(log, kept)
        bus = Bus([CSVLogger(path, append=append)], log=log, resume=True)
        bus.train_begin({"epochs": done})
        train(bus, [x + 1 for x in losses], start=bus.initial_epoch)
        bus.train_end()
        bus.close()
        ends = [r for r in effective_records(read_log(log)) if r.kind == "epoch_end"]
        assert [(int(r["epoch"]), float(r["loss"])) for r in rows(path)] == \
            [(e, x) for e, x in enumerate(earlier if append else [])] + \
            [(e.epoch, e.logs["loss"]) for e in ends]


class TestNoTrainBegin:
    """A loop that publishes no train_begin is not a resumed run unless the bus resumed it."""

    @pytest.mark.parametrize(("append", "kept"),
                             [(True, ["0", "1", "0", "1"]), (False, ["0", "1"])])
    def test_the_file_opens_by_append_and_no_row_is_dropped(self, tmp_path, append, kept):
        path = tmp_path / "history.csv"
        with Bus([CSVLogger(path)]) as bus:
            train(bus, [0.5, 0.4])
        with Bus([CSVLogger(path, append=append)]) as bus:
            assert not bus.resumed
            train(bus, [0.3, 0.2])
        assert [row["epoch"] for row in rows(path)] == kept


def test_a_second_run_s_full_disk_is_reported_again(tmp_path, monkeypatch):
    """The same CSVLogger in a second fit: a spell of failed writes that the first run's
    close gave up on does not keep the second run's failures from being reported."""
    import errno
    import warnings

    import sinks.csv as module
    from eventbus import Bus

    real, full = module.os.write, [False]

    def write(fd, data):
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(module.os, "write", write)
    monkeypatch.setattr(module, "keep_trying", lambda attempt: attempt())  # one try at close
    logger = CSVLogger(str(tmp_path / "t.csv"))
    faults = []
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Bus([logger]) as bus:
                bus.train_begin()
                full[0] = False
                bus.epoch_end(0, {"loss": 1.0})
                full[0] = True
                bus.epoch_end(1, {"loss": 0.5})
                bus.train_end()
        faults.append([f.message for f in bus.failures if f.event == "epoch_end"])
    assert all(len(f) == 1 and "errno 28" in f[0] for f in faults), faults


def test_a_metric_name_a_spreadsheet_would_run_as_a_formula_is_written_quoted(tmp_path):
    """A log someone else wrote converts to CSV, and a name such as =HYPERLINK(...) would be a
    live formula in a spreadsheet: a header cell that starts a formula (=, +, -, @) starts with
    a ' instead, as spreadsheets read text; appending reads the names back as they were."""
    path = tmp_path / "h.csv"
    names = ['=HYPERLINK("http://127.0.0.1/x")', "-neg", "+pos", "@at", "'quoted", "loss"]
    for append in (False, True):
        with Bus([CSVLogger(str(path), append=append)]) as bus:
            bus.train_begin()
            bus.epoch_begin(0)
            bus.epoch_end(0, {name: 1.0 for name in names})
            bus.train_end()
    with open(path, newline="") as file:
        header, *rows = list(csv.reader(file))
    assert header == ["epoch", "''quoted", "'+pos", "'-neg", '\'=HYPERLINK("http://127.0.0.1/x")',
                      "'@at", "loss"]
    assert len(rows) == 2 and all(len(row) == len(header) for row in rows)
