"""sinks.csv.CsvTable: Keras's layout, exact values, rows appended, widening, reconciling."""

from __future__ import annotations

import csv
import math
import warnings

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus.errors import ConfigError, LogCorruptError
from eventbus.testing import same
from sinks.csv import MISSING, CsvTable

# "val\nacc" and 'q"r\r': a cell the csv module quotes across lines (a row is not a line).
KEYS = st.sampled_from(["loss", "acc", "val_loss", "val_acc", "learning_rate", "a b", "x,y",
                        "val\nacc", 'q"r\r'])
VALUES = st.floats(allow_nan=True, allow_infinity=True, width=64)
EPOCH_LOGS = st.lists(st.dictionaries(KEYS, VALUES, max_size=5), min_size=1, max_size=6)


def read_rows(path, separator=","):
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file, delimiter=separator))


class TestLayout:
    def test_epoch_column_then_sorted_keys(self, tmp_path):
        """The header is `epoch` and then the metric names in sorted order, as Keras's."""
        path = tmp_path / "log.csv"
        with CsvTable(path) as table:
            table.write(0, {"val_loss": 0.5, "loss": 0.25, "acc": 0.75})
            table.write(1, {"val_loss": 0.4, "loss": 0.2, "acc": 0.8})
        lines = path.read_text().splitlines()
        assert lines[0] == "epoch,acc,loss,val_loss"
        assert lines[1] == "0,0.75,0.25,0.5"
        assert len(lines) == 3

    def test_separator(self, tmp_path):
        """The separator delimits the fields; pandas reads it back with sep=."""
        path = tmp_path / "log.csv"
        with CsvTable(path, separator=";") as table:
            table.write(0, {"loss": 0.5})
        assert path.read_text().splitlines() == ["epoch;loss", "0;0.5"]
        assert pd.read_csv(path, sep=";")["loss"].tolist() == [0.5]

    @pytest.mark.parametrize("separator", ["", ";;", '"', "\n"])
    def test_bad_separator(self, tmp_path, separator):
        """A separator the csv module cannot use is a configuration error naming the field."""
        with pytest.raises(ConfigError, match="separator"):
            CsvTable(tmp_path / "log.csv", separator=separator)

    def test_non_finite_values(self, tmp_path):
        """NaN and infinities are written so that csv+float() and pandas read them back."""
        path = tmp_path / "log.csv"
        with CsvTable(path) as table:
            table.write(0, {"a": math.nan, "b": math.inf, "c": -math.inf})
        row = read_rows(path)[0]
        assert math.isnan(float(row["a"])) and float(row["b"]) == math.inf
        frame = pd.read_csv(path)
        assert math.isnan(frame["a"][0]) and frame["c"][0] == -math.inf


class TestWidening:
    def test_late_key_widens_the_header(self, tmp_path):
        """A metric first seen in epoch 2 gets a column; earlier rows hold NA (Keras drops it)."""
        path = tmp_path / "log.csv"
        with CsvTable(path) as table:
            table.write(0, {"loss": 0.5})
            table.write(1, {"loss": 0.4})
            table.write(2, {"loss": 0.3, "val_loss": 0.35})
            table.write(3, {"loss": 0.2})
        rows = read_rows(path)
        assert list(rows[0]) == ["epoch", "loss", "val_loss"]
        assert [r["val_loss"] for r in rows] == [MISSING, MISSING, "0.35", MISSING]
        frame = pd.read_csv(path)
        assert frame["epoch"].tolist() == [0, 1, 2, 3]
        assert frame["val_loss"].isna().tolist() == [True, True, False, True]

    def test_no_temporary_file_left(self, tmp_path):
        """Widening rewrites through a temporary file that is renamed away."""
        path = tmp_path / "log.csv"
        with CsvTable(path) as table:
            table.write(0, {"a": 1.0})
            table.write(1, {"a": 1.0, "b": 2.0})
        assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]


class TestAppend:
    def test_append_false_starts_afresh(self, tmp_path):
        """Without append the existing file is replaced."""
        path = tmp_path / "log.csv"
        path.write_text("epoch,loss\n0,9.0\n")
        with CsvTable(path) as table:
            table.write(0, {"loss": 0.5})
        assert path.read_text() == "epoch,loss\n0,0.5\n"

    @pytest.mark.parametrize(("before", "rows", "after"), [
        pytest.param("epoch,loss\n0,0.9\n1,0.8\n", [(2, {"loss": 0.7, "acc": 0.5})],
                     "epoch,acc,loss\n0,NA,0.9\n1,NA,0.8\n2,0.5,0.7\n",
                     id="a new metric widens the header, old rows get NA"),
        pytest.param("epoch,loss,acc\n0,0.9,0.1\n", [(1, {"acc": 0.2, "loss": 0.8})],
                     "epoch,loss,acc\n0,0.9,0.1\n1,0.8,0.2\n",
                     id="rows follow the file's own column order"),
        pytest.param("epoch,val_loss,loss\n0,0.9,1.0\n",
                     [(1, {"loss": 0.5, "val_loss": 0.6, "acc": 0.7, "auc": 0.1})],
                     "epoch,val_loss,loss,acc,auc\n0,0.9,1.0,NA,NA\n1,0.6,0.5,0.7,0.1\n",
                     id="widening keeps the file's own order, the new names after it"),
        pytest.param("epoch,loss\n0,0.9\n0,0.8\n", [(0, {"loss": 0.7, "acc": 0.5})],
                     "epoch,acc,loss\n0,NA,0.9\n0,NA,0.8\n0,0.5,0.7\n",
                     id="widening keeps repeated epoch numbers"),
        pytest.param("epoch,loss,acc\n0,0.9,0.1\n1,0.8", [(1, {"loss": 0.8, "acc": 0.2})],
                     "epoch,loss,acc\n0,0.9,0.1\n1,0.8,0.2\n",
                     id="a row torn by a crash is cut"),
        pytest.param("epoch,loss\n0,0.9\n1,", [(1, {"loss": 0.8})],
                     "epoch,loss\n0,0.9\n1,0.8\n", id="a row torn after a separator is cut"),
        pytest.param("epoch,loss\r\n0,0.9\r\n1,0.8", [(2, {"loss": 0.7})],
                     "epoch,loss\n0,0.9\n1,0.8\n2,0.7\n",  # read_text: \r\n read as \n
                     id="a whole last row without its line break is ended, not cut"),
        pytest.param("epoch,loss\n", [(0, {"loss": 1.0})], "epoch,loss\n0,1.0\n",
                     id="a header without rows takes rows under it"),
        pytest.param("", [(0, {"loss": 1.0})], "epoch,loss\n0,1.0\n",
                     id="an empty file is started with a header"),
    ])
    def test_appending_to_an_existing_file(self, tmp_path, before, rows, after):
        path = tmp_path / "log.csv"
        path.write_text(before)
        with CsvTable(path, append=True) as table:
            for epoch, logs in rows:
                table.write(epoch, logs)
        assert path.read_text() == after

    def test_an_epoch_already_there_is_appended_again(self, tmp_path):
        """Rows are always appended, as Keras appends them: a new run counting epochs from 0
        again does not replace the earlier run's rows."""
        path = tmp_path / "log.csv"
        path.write_text("epoch,loss\n0,0.9\n1,0.8\n")
        with CsvTable(path, append=True) as table:
            table.write(0, {"loss": 0.75})
            table.write(1, {"loss": 0.7})
        frame = pd.read_csv(path)
        assert frame["epoch"].tolist() == [0, 1, 0, 1]
        assert frame["loss"].tolist() == [0.9, 0.8, 0.75, 0.7]

    def test_not_an_epoch_table(self, tmp_path):
        """Appending to a file whose first column is not `epoch` is refused, naming the file."""
        path = tmp_path / "other.csv"
        path.write_text("name,value\nx,1\n")
        with pytest.raises(LogCorruptError, match="other.csv"):
            CsvTable(path, append=True)

class TestDropLastRow:
    def test_drops_the_last_row_of_that_epoch(self, tmp_path):
        """The last row goes when it is for the epoch given; rows then append after the rest."""
        path = tmp_path / "log.csv"
        path.write_text("epoch,loss\n0,0.9\n1,0.8\n2,0.7\n")
        with CsvTable(path, append=True) as table:
            assert table.drop_last_row(2)
            table.write(2, {"loss": 0.65})
        assert path.read_text() == "epoch,loss\n0,0.9\n1,0.8\n2,0.65\n"

    @pytest.mark.parametrize("epoch", [0, 1, 3])
    def test_keeps_it_for_another_epoch(self, tmp_path, epoch):
        """Only the last row, and only for its own epoch: an earlier row of the same epoch
        number (another run's) stays."""
        path = tmp_path / "log.csv"
        text = "epoch,loss\n0,0.9\n1,0.8\n2,0.7\n"
        path.write_text(text)
        with CsvTable(path, append=True) as table:
            assert not table.drop_last_row(epoch)
        assert path.read_text() == text

    @pytest.mark.parametrize("text", ["", "epoch,loss\n"])
    def test_nothing_to_drop(self, tmp_path, text):
        """An empty file, or a header alone, has no row to drop."""
        path = tmp_path / "log.csv"
        path.write_text(text)
        with CsvTable(path, append=True) as table:
            assert not table.drop_last_row(0)
            table.write(0, {"loss": 1.0})
        assert path.read_text() == "epoch,loss\n0,1.0\n"

    def test_after_a_torn_line(self, tmp_path):
        """A torn line is cut when the table opens; the row before it is the last row."""
        path = tmp_path / "log.csv"
        path.write_text("epoch,loss\n0,0.9\n1,0.8\n2,")
        with CsvTable(path, append=True) as table:
            assert table.drop_last_row(1)
        assert path.read_text() == "epoch,loss\n0,0.9\n"

    @given(epochs=st.lists(st.integers(0, 3), max_size=6), logs=EPOCH_LOGS,
           target=st.integers(0, 3), separator=st.sampled_from([",", ";", "\t"]))
    def test_removes_exactly_the_matching_last_row(self, tmp_path_factory, epochs, logs,
                                                   target, separator):
        """Property: drop_last_row(e) removes the last row if and only if its epoch is e, and
        every other row (widened headers, quoted names included) stays as it was."""
        path = tmp_path_factory.mktemp("csv") / "log.csv"
        with CsvTable(path, separator=separator) as table:
            for epoch, row_logs in zip(epochs, logs):
                table.write(epoch, row_logs)
        before = read_rows(path, separator) if epochs else []
        with CsvTable(path, separator=separator, append=True) as table:
            dropped = table.drop_last_row(target)
        after = read_rows(path, separator) if path.read_text() else []
        expect = bool(before) and int(before[-1]["epoch"]) == target
        assert dropped == expect
        assert after == (before[:-1] if expect else before)


class TestDropRowsFrom:
    """The rows a crashed attempt wrote past the epoch a resumed run goes on from."""

    def table(self, path, epochs: list[int]) -> CsvTable:
        table = CsvTable(path)
        for epoch in epochs:
            table.write(epoch, {"loss": float(epoch)})
        return table

    @given(n=st.integers(0, 8), at=st.integers(0, 9), name=KEYS)
    def test_a_table_written_alone_keeps_the_epochs_before(self, tmp_path_factory, n, at,
                                                           name):
        """Property: every row at or after ``at`` goes, every row before it stays, whatever
        the header holds (a metric name with a line break moved the cut a line up)."""
        path = tmp_path_factory.mktemp("drop") / "t.csv"
        table = CsvTable(path)
        for epoch in range(n):
            table.write(epoch, {name: float(epoch)})
        assert table.drop_rows_from(at) == max(0, n - at)
        table.write(at, {name: -1.0})  # the resumed run writes its epoch next
        table.close()
        rows = read_rows(path)
        assert [int(r["epoch"]) for r in rows] == [*range(min(n, at)), at]
        assert [float(r[name]) for r in rows] == [*map(float, range(min(n, at))), -1.0]

    def test_after_an_earlier_runs_rows_only_this_runs_are_dropped(self, tmp_path):
        """The earlier run's rows 0..3 stay; this run's rows after its epoch 1 go."""
        path = tmp_path / "t.csv"
        table = self.table(path, [0, 1, 2, 3, 0, 1, 2, 3, 4])
        assert table.drop_rows_from(2, after_other_runs=True) == 3
        table.close()
        assert [int(r["epoch"]) for r in read_rows(path)] == [0, 1, 2, 3, 0, 1]

    @pytest.mark.parametrize(("epochs", "dropped"), [([0, 1, 2, 0], 1), ([0, 1, 2], 0)])
    def test_from_epoch_0_after_other_runs_only_a_last_row_of_epoch_0(self, tmp_path, epochs,
                                                                      dropped):
        """A run that kept no epoch: only a last row of epoch 0 is told apart from an earlier
        run's (documented in docs/sinks/csv.md)."""
        table = self.table(tmp_path / "t.csv", epochs)
        assert table.drop_rows_from(0, after_other_runs=True) == dropped
        table.close()


@given(epochs=EPOCH_LOGS, separator=st.sampled_from([",", ";", "\t"]))
def test_what_is_written_reads_back(tmp_path_factory, epochs, separator):
    """Property: csv and pandas read back exactly the epochs and values written, NA if absent."""
    path = tmp_path_factory.mktemp("csv") / "log.csv"
    with CsvTable(path, separator=separator) as table:
        for epoch, logs in enumerate(epochs):
            table.write(epoch, logs)
    keys = sorted(set().union(*epochs))
    rows = read_rows(path, separator)
    assert list(rows[0]) == ["epoch", *keys]
    assert [int(r["epoch"]) for r in rows] == list(range(len(epochs)))
    frame = pd.read_csv(path, sep=separator)
    for i, logs in enumerate(epochs):
        for key in keys:
            if key in logs:
                assert same(float(rows[i][key]), logs[key])
                assert same(float(frame[key][i]), logs[key])
            else:
                assert rows[i][key] == MISSING
                assert math.isnan(frame[key][i])


@given(first=EPOCH_LOGS, second=EPOCH_LOGS, overlap=st.integers(0, 3))
def test_append_keeps_every_row(tmp_path_factory, first, second, overlap):
    """Property: appending rows, whether or not their epochs are already in the file, keeps
    every earlier row and adds the new ones after them, in order (columns widened as needed)."""
    path = tmp_path_factory.mktemp("csv") / "log.csv"
    with CsvTable(path) as table:
        for epoch, logs in enumerate(first):
            table.write(epoch, logs)
    start = max(0, len(first) - overlap)
    with CsvTable(path, append=True) as table:
        for i, logs in enumerate(second):
            table.write(start + i, logs)
    expected = list(enumerate(first)) + [(start + i, logs) for i, logs in enumerate(second)]
    rows = read_rows(path)
    assert [int(r["epoch"]) for r in rows] == [epoch for epoch, _ in expected]
    for row, (_, logs) in zip(rows, expected):
        for key, text in row.items():
            if key == "epoch":
                continue
            assert (text == MISSING) if key not in logs else same(float(text), logs[key])


def test_a_metric_named_epoch_loses_to_the_epoch_column_and_says_so(tmp_path):
    """The epoch column keeps the epoch's index; the metric named "epoch" is left out with one
    warning per table (it used to be dropped silently)."""
    path = tmp_path / "log.csv"
    with CsvTable(path) as table:
        with pytest.warns(UserWarning, match=r"log\.csv: the metric named 'epoch' is not "
                                             r"written"):
            table.write(0, {"epoch": 7.0, "loss": 0.5})
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            table.write(1, {"epoch": 8.0, "loss": 0.4})
    rows = read_rows(path)
    assert list(rows[0]) == ["epoch", "loss"]
    assert [(r["epoch"], r["loss"]) for r in rows] == [("0", "0.5"), ("1", "0.4")]


class TestFailingWrites:
    """A disk that refuses a write for a while: the row waits, the file never holds half of
    one, and the rows reach the file in order once it can be written."""

    @staticmethod
    def failing_writes(monkeypatch, times: int, *, half: bool):
        import errno
        import os

        import sinks.csv as module

        real = os.write
        left = [times]
        halves = [half]

        def write(fd, data):
            if halves[0] and len(data) > 1:  # a partial write first, then the refusals
                halves[0] = False
                return real(fd, bytes(data[:len(data) // 2]))
            if left[0]:
                left[0] -= 1
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd, data)

        monkeypatch.setattr(module.os, "write", write)

    @pytest.mark.parametrize("half", [False, True])
    def test_a_refused_row_is_kept_cut_back_and_written_next(self, tmp_path, monkeypatch, half):
        path = tmp_path / "t.csv"
        table = CsvTable(path)
        table.write(0, {"loss": 1.0})
        self.failing_writes(monkeypatch, 1, half=half)
        with pytest.raises(OSError, match="No space"):
            table.write(1, {"loss": 0.5})
        assert read_rows(path) == [{"epoch": "0", "loss": "1.0"}]  # no half row
        assert table.kept == [(1, {"loss": 0.5})]
        table.write(2, {"loss": 0.25})
        assert [row["epoch"] for row in read_rows(path)] == ["0", "1", "2"]
        assert table.kept == []
        table.close()

    def test_a_refused_widening_leaves_the_file_and_keeps_the_row(self, tmp_path, monkeypatch):
        import errno

        import sinks.csv as module

        path = tmp_path / "t.csv"
        table = CsvTable(path)
        table.write(0, {"loss": 1.0})
        before = path.read_bytes()

        def refuse(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(module, "write_replacing", refuse)
        with pytest.raises(OSError):
            table.write(1, {"loss": 0.5, "acc": 0.75})
        assert path.read_bytes() == before
        monkeypatch.undo()
        table.flush()
        assert read_rows(path) == [{"epoch": "0", "acc": MISSING, "loss": "1.0"},
                                   {"epoch": "1", "acc": "0.75", "loss": "0.5"}]
        table.close()

    def test_close_tries_then_says_which_rows_were_lost(self, tmp_path, monkeypatch):
        import sinks.csv as module

        monkeypatch.setattr(module, "keep_trying", lambda attempt: attempt())  # one try
        path = tmp_path / "t.csv"
        table = CsvTable(path)
        table.write(0, {"loss": 1.0})
        self.failing_writes(monkeypatch, 10**6, half=False)
        with pytest.raises(OSError):
            table.write(1, {"loss": 0.5})
        with pytest.raises(OSError, match="the rows of epochs 1 .* could not be written"):
            table.close()
        assert read_rows(path) == [{"epoch": "0", "loss": "1.0"}]


def test_a_whole_last_row_is_ended_as_every_row_ends(tmp_path):
    """A spreadsheet's file without a last line break: the row is ended with the table's own
    line end, so no file mixes two."""
    path = tmp_path / "log.csv"
    path.write_bytes(b"epoch,loss\r\n0,1.0\r\n1,0.5")
    with CsvTable(path, append=True) as table:
        table.write(2, {"loss": 0.25})
    assert path.read_bytes() == b"epoch,loss\r\n0,1.0\r\n1,0.5\r\n2,0.25\r\n"


class TestAFileThatIsNotOurs:
    """What is at the table's name may be anything: another program's CSV, a FIFO, a file
    this table cannot read. Nothing hangs, nothing already in the file is lost, and what cannot
    be read is a LogCorruptError naming the file and line."""

    def test_a_fifo_is_refused_at_once(self, tmp_path):
        import os

        from eventbus.errors import LogError

        path = tmp_path / "log.csv"
        os.mkfifo(path)
        for append in (False, True):
            with pytest.raises(LogError, match="a FIFO, not a file"):
                CsvTable(path, append=append)

    def test_a_directory_is_refused_as_the_fifo_is(self, tmp_path):
        """A directory at the name was an IsADirectoryError, not the LogError the docs name."""
        from eventbus.errors import LogError

        path = tmp_path / "log.csv"
        path.mkdir()
        for append in (False, True):
            with pytest.raises(LogError, match="a directory, not a file") as caught:
                CsvTable(path, append=append)
            assert caught.value.path == str(path)

    def test_a_table_that_is_mostly_holes_is_refused_unread(self, tmp_path):
        """A header, a row, a hole of 256 MiB and a torn line (a few KB on disk): appending to
        it, or a resume's cut, read it whole and split it into lines, eight times its claimed
        size in memory. It is refused from what it stores, before any of it is read."""
        import os
        import resource

        path = tmp_path / "log.csv"
        path.write_bytes(b"epoch,loss\n0,1.0\n")
        with open(path, "r+b") as file:
            file.seek(256 << 20)
            file.write(b"1,0.")
        if os.stat(path).st_blocks * 512 > 1 << 20:
            pytest.skip("this file system cannot make a sparse file")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(LogCorruptError, match=r"claims 268,435,460 bytes and stores .* "
                                                  r"\(mostly holes\)") as caught:
            CsvTable(path, append=True)
        assert caught.value.path == str(path)
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 << 10  # KiB
        assert os.stat(path).st_size == (256 << 20) + 4  # left as it was

    def test_a_cell_larger_than_the_csv_modules_limit_reads_back(self, tmp_path):
        """A vector metric of 20,000 values is one 260 KB cell, past the csv module's default
        131,072: the table it wrote must open again (a resume read it)."""
        path = tmp_path / "log.csv"
        with CsvTable(path) as table:
            table.write(0, {"f1": [0.5] * 20_000, "loss": 1.0})
        limit = csv.field_size_limit()
        with CsvTable(path, append=True) as table:
            assert table.drop_rows_from(0) == 1
        assert csv.field_size_limit() == limit  # the process's limit is left as it was
        assert path.read_text() == "epoch,f1,loss\n"

    @pytest.mark.parametrize(("text", "line"), [
        (b"epoch,loss\n0,1.0\n1,\xff\n", 3), (b'epoch,loss\n0,"1.0\n', 2)])
    def test_what_is_not_csv_in_utf8_names_its_line(self, tmp_path, text, line):
        path = tmp_path / "log.csv"
        path.write_bytes(text)
        with pytest.raises(LogCorruptError) as caught:
            CsvTable(path, append=True).drop_rows_from(0)
        assert caught.value.path == str(path) and caught.value.line == line
        assert path.read_bytes() == text  # nothing cut from a file it cannot read


def test_the_sink_writes_csvloggers_file_as_a_plain_log(tmp_path):
    """sinks.csv.CsvSink is the sink CSVLogger is: given to Bus(log=[...]) it writes the same
    bytes, and the header does not list it as a plugin."""
    from eventbus import Bus, read_log
    from plugins import CSVLogger
    from sinks.csv import CsvSink

    for name, plugins, logs in (("plugin", [CSVLogger(tmp_path / "plugin.csv")], []),
                                ("sink", [], [CsvSink(tmp_path / "sink.csv")])):
        with Bus(plugins, log=[tmp_path / f"{name}.jsonl", *logs]) as bus:
            bus.train_begin({"epochs": 3})
            for epoch in range(3):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "acc": epoch / 3})
            bus.train_end()
    assert (tmp_path / "sink.csv").read_bytes() == (tmp_path / "plugin.csv").read_bytes()
    assert next(iter(read_log(tmp_path / "sink.jsonl"))).plugins == []
