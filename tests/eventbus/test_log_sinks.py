"""The event logs as sinks (JsonlWriter, ParquetWriter), read back; conversion between them."""

from __future__ import annotations

import math
import warnings

import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, hookimpl, read_log
from eventbus.convert import copy_log as convert
from eventbus.errors import ConfigError
from eventbus.jsonl import JsonlWriter as JsonlSink
from eventbus.parquet import ParquetWriter as ParquetSink
from eventbus.records import StopTraining, decode_nonfinite
from eventbus.testing import RecordingWriter, same

from hypothesis_profiles import FILES, examples

METRICS = st.dictionaries(st.sampled_from(["loss", "acc", "val_loss"]),
                          st.floats(allow_nan=True, allow_infinity=True), max_size=3)


class Stopper:
    """Stops after epoch 1, so logs hold a decision with evidence."""

    name = "Stopper"

    @hookimpl
    def on_epoch_end(self, event):
        if event.epoch == 1:
            return StopTraining(reason="enough", evidence={"loss": event.logs.get("loss")})
        return None


def record_run(log, batches):
    memory = RecordingWriter()
    bus = Bus([Stopper()], log=[memory, *log], learning_rate=0.1)
    bus.train_begin({"epochs": len(batches)})
    for epoch, logs in enumerate(batches):
        if bus.stop_training:
            break
        bus.epoch_begin(epoch)
        bus.batch_begin(0)
        bus.batch_end(0, logs)
        bus.epoch_end(epoch, logs)
    bus.train_end()
    bus.close()
    return memory.records


@examples(FILES)  # a JSON Lines and a Parquet log per example
@given(batches=st.lists(METRICS, min_size=1, max_size=4))
def test_sinks_write_what_the_bus_gives(tmp_path_factory, batches):
    """Property: the JSON Lines and Parquet sinks hold exactly the records the bus wrote."""
    tmp = tmp_path_factory.mktemp("logs")
    records = record_run([JsonlSink(tmp / "run.jsonl"), ParquetSink(tmp / "run.parquet")],
                         batches)
    for path in (tmp / "run.jsonl", tmp / "run.parquet"):
        got = [r.model_dump() for r in read_log(path)]
        assert same(got, [dict(r) for r in records]), path


def test_jsonl_lines_are_json(tmp_path):
    """Every line of the JSON Lines sink is a JSON object a plain JSON reader accepts."""
    record_run([JsonlSink(tmp_path / "run.jsonl")], [{"loss": math.nan}, {"loss": 1.0}])
    lines = (tmp_path / "run.jsonl").read_bytes().splitlines()
    parsed = [decode_nonfinite(orjson.loads(line)) for line in lines]
    assert parsed[0]["kind"] == "header"
    ends = [p for p in parsed if p["kind"] == "epoch_end"]
    assert math.isnan(ends[0]["logs"]["loss"])


def test_parquet_sink_is_a_table_for_pyarrow_and_pandas(tmp_path):
    """pyarrow and pandas read the Parquet sink's directory as one table, a column per metric."""
    records = record_run([ParquetSink(tmp_path / "run.parquet")],
                         [{"loss": 0.5}, {"loss": 0.25, "acc": 0.75}, {"loss": 0.1}])
    table = pq.read_table(tmp_path / "run.parquet")
    assert table.num_rows == len(records)
    frame = pd.read_parquet(tmp_path / "run.parquet")
    ends = frame[frame["kind"] == "epoch_end"]
    assert ends["logs.loss"].tolist() == [0.5, 0.25]
    assert math.isnan(ends["logs.acc"].tolist()[0]) and ends["logs.acc"].tolist()[1] == 0.75
    assert frame["seq"].tolist() == [r["seq"] for r in records]


class TestConvert:
    @examples(FILES)  # three logs converted per example
    @given(batches=st.lists(METRICS, min_size=1, max_size=4))
    def test_round_trip(self, tmp_path_factory, batches):
        """Property: JSON Lines -> Parquet -> JSON Lines gives back the same records."""
        tmp = tmp_path_factory.mktemp("convert")
        records = record_run([JsonlSink(tmp / "a.jsonl")], batches)
        assert convert(tmp / "a.jsonl", tmp / "b.parquet") == len(records)
        assert convert(tmp / "b.parquet", tmp / "c.jsonl") == len(records)
        for path in (tmp / "b.parquet", tmp / "c.jsonl"):
            assert same([r.model_dump() for r in read_log(path)], [dict(r) for r in records])
        assert pq.read_table(tmp / "b.parquet").num_rows == len(records)

    def test_a_csv_of_many_names_is_written_once_and_as_csvlogger_writes_it(self, tmp_path,
                                                                           monkeypatch):
        """A new metric name every epoch: CSVLogger live widens its file each time; convert
        knows every name first and writes the file once (thousands of names in a hostile log
        took minutes), the same file."""
        from eventbus.convert import convert as convert_log
        from plugins import CSVLogger
        from sinks.csv import CsvTable

        log = tmp_path / "run.jsonl"
        with Bus([CSVLogger(str(tmp_path / "live.csv"))], log=log) as bus:
            bus.train_begin()
            for epoch in range(12):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0 / (epoch + 1), f"m{epoch:02d}": 0.5})
            bus.train_end()
        rewrites = []
        real = CsvTable._rewrite
        monkeypatch.setattr(CsvTable, "_rewrite",
                            lambda self, *a: (rewrites.append(a), real(self, *a))[1])
        convert_log(log, tmp_path / "converted.csv")
        assert rewrites == []
        assert (tmp_path / "converted.csv").read_text() == (tmp_path / "live.csv").read_text()

    def test_resumed_log_converts_whole(self, tmp_path):
        """A resumed run's log, resumed record and abandoned records included, converts as is."""
        log = tmp_path / "run.jsonl"
        bus = Bus([], log=log)
        bus.train_begin()
        bus.epoch_begin(0)
        bus.epoch_end(0, {"loss": 1.0})
        bus.epoch_begin(1)
        bus.close()
        bus = Bus([], log=log, resume=True)
        bus.epoch_begin(1)
        bus.epoch_end(1, {"loss": 0.5})
        bus.train_end()
        bus.close()
        convert(log, tmp_path / "run.parquet")
        kinds = [r.kind for r in read_log(tmp_path / "run.parquet")]
        assert kinds == [r.kind for r in read_log(log)] and "resumed" in kinds

    def test_same_path_is_refused(self, tmp_path):
        """Converting a log onto itself is refused rather than destroying it."""
        record_run([JsonlSink(tmp_path / "a.jsonl")], [{"loss": 1.0}])
        with pytest.raises(ConfigError, match="same log"):
            convert(tmp_path / "a.jsonl", tmp_path / "a.jsonl")

    def test_missing_source(self, tmp_path):
        """A source that does not exist is a clear error and creates nothing."""
        with pytest.raises(ConfigError, match="no such log"):
            convert(tmp_path / "missing.jsonl", tmp_path / "out.parquet")
        assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize("lead", [0, 1], ids=["even", "odd"])
def test_line_buffers_reach_the_file_within_an_epoch_whatever_the_seq_parity(tmp_path, lead):
    """The batch paths look at the line buffers' size every 64 seqs: with a batch_begin and a
    batch_end per batch, one of the two has each such seq, whichever parity batch_end's seqs
    have (one lone batch_end first makes them odd)."""
    path = tmp_path / "run.jsonl"
    with Bus([], log=JsonlSink(path, buffer_bytes=4096)) as bus:
        bus.train_begin({})
        bus.epoch_begin(0)
        for i in range(lead):
            bus.batch_end(i, {"loss": 1.0})
        for i in range(lead, 2000):
            bus.batch_begin(i)
            bus.batch_end(i, {"loss": 1.0})
        on_disk = path.stat().st_size  # only the size rule has written so far
        bus.flush()
        assert path.stat().st_size > 300_000
        assert on_disk >= path.stat().st_size - 3 * 4096
        bus.epoch_end(0, {"loss": 1.0})
    assert len(list(read_log(path))) == 3 + 2 * 2000 - lead + 1


class TestNotAFile:
    """A FIFO where a log goes (a backup folder others can write) is an error at once, not a
    run that never starts; so is a device. The log's own path may still be a link to a file."""

    @staticmethod
    def refused_at_once(make) -> str:
        import threading

        errors: list[BaseException] = []
        thread = threading.Thread(target=lambda: errors.append(_raised(make)), daemon=True)
        thread.start()
        thread.join(20)
        assert not thread.is_alive(), "blocked opening the log"
        (error,) = errors
        from eventbus.errors import LogError

        assert isinstance(error, LogError), error
        return str(error)

    def test_a_fifo_as_the_log(self, tmp_path):
        import os

        os.mkfifo(tmp_path / "events.jsonl")
        message = self.refused_at_once(lambda: Bus(log=tmp_path / "events.jsonl"))
        assert "events.jsonl: not a regular file" in message

    def test_a_fifo_in_a_backup_folder(self, tmp_path):
        import os

        from plugins import BackupAndRestore

        (tmp_path / "backup").mkdir()
        os.mkfifo(tmp_path / "backup" / "events.jsonl")
        message = self.refused_at_once(lambda: Bus([BackupAndRestore(tmp_path / "backup")]))
        assert "not a regular file" in message

    def test_a_device_as_the_log(self):
        assert "not a regular file" in self.refused_at_once(lambda: JsonlSink("/dev/null"))

    def test_a_link_to_a_file_is_still_a_log(self, tmp_path):
        (tmp_path / "real.jsonl").touch()
        (tmp_path / "events.jsonl").symlink_to(tmp_path / "real.jsonl")
        with Bus(log=tmp_path / "events.jsonl") as bus:
            bus.train_begin()
        assert [r.kind for r in read_log(tmp_path / "real.jsonl")] == ["header", "train_begin"]


def _raised(make) -> BaseException | None:
    try:
        make()
    except BaseException as exc:  # noqa: BLE001 - handed to the test
        return exc
    return None


class TestABackupFolderOthersCanWrite:
    """BackupAndRestore's log is never written through a link planted in its folder: not to a
    file the link names (created outside the folder), not to another run's log (cut and
    appended to)."""

    @pytest.mark.parametrize("target", ["missing.jsonl", "other.jsonl"])
    def test_a_link_as_the_backup_log_is_refused(self, tmp_path, target):
        from eventbus.errors import LogError
        from plugins import BackupAndRestore

        other = tmp_path / target
        if target == "other.jsonl":
            with Bus(log=other) as bus:
                bus.train_begin()
                bus.epoch_begin(0)
                bus.epoch_end(0, {"loss": 1.0})
            with open(other, "ab") as file:
                file.write(b'{"v": 1, "torn')  # a torn last line the resume would cut
        before = other.read_bytes() if other.exists() else None
        (tmp_path / "backup").mkdir()
        (tmp_path / "backup" / "events.jsonl").symlink_to(other)
        with pytest.raises(LogError, match="events.jsonl: a symbolic link"):
            Bus([BackupAndRestore(tmp_path / "backup")])
        assert (other.read_bytes() if other.exists() else None) == before


def test_ctrl_c_inside_the_accounting_of_a_write_writes_nothing_twice(tmp_path):
    """A KeyboardInterrupt after the file's size was measured and before the bytes written
    left the buffer (a signal lands at any line): the next write, or close(), settles the
    drain that was cut first, so nothing is written again (the whole log was refused)."""
    from eventbus import Bus, read_log
    from eventbus.jsonl import JsonlWriter

    path = tmp_path / "run.jsonl"
    writer = JsonlWriter(path)
    real = writer._count_torn
    calls = []

    def interrupted_once(done: int) -> None:
        real(done)
        calls.append(done)
        if len(calls) == 2:  # the epoch's flush (train_begin's is the first)
            raise KeyboardInterrupt  # between the count and the bytes leaving the buffer

    writer._count_torn = interrupted_once  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt), Bus([], log=writer) as bus:
        bus.train_begin()
        bus.epoch_begin(0)
        for batch in range(50):
            bus.batch_end(batch, {"loss": 1.0})
        bus.epoch_end(0, {"loss": 1.0})  # its flush is interrupted
    records = list(read_log(path))
    seqs = [r.seq for r in records]
    # 54 records, and the bus's word that the block ended by the interrupt.
    assert seqs == list(range(len(seqs))) and len(seqs) == 55
    assert records[-1].kind == "warning" and records[-1].details["raised"] == \
        "builtins.KeyboardInterrupt"


def test_ctrl_c_between_a_write_and_its_count_writes_nothing_twice(tmp_path):
    """A KeyboardInterrupt that lands as a write returns, before the writer counts it: what
    reached the file is measured by its size, so close() writes only the rest (the count cut
    short wrote the buffer twice, and every reader then refused the log: seqs went back)."""
    from eventbus import Bus, read_log
    from eventbus.jsonl import JsonlWriter

    path = tmp_path / "run.jsonl"
    writer = JsonlWriter(path)
    real = writer._file

    class InterruptedOnce:
        interrupted = False

        def write(self, data):
            n = real.write(data)
            del data  # (a signal's frame would not hold the slice written)
            if not InterruptedOnce.interrupted:
                InterruptedOnce.interrupted = True
                raise KeyboardInterrupt  # as a signal between the write and ``done +=``
            return n

        def __getattr__(self, name):
            return getattr(real, name)

    with pytest.raises(KeyboardInterrupt), Bus([], log=writer) as bus:
        bus.train_begin()
        bus.epoch_begin(0)
        for batch in range(50):
            bus.batch_end(batch, {"loss": 1.0})
        writer._file = InterruptedOnce()
        bus.epoch_end(0, {"loss": 1.0})  # its flush is interrupted
    writer._file = real
    records = list(read_log(path))
    seqs = [r.seq for r in records]
    # 54 records, and the bus's word that the block ended by the interrupt.
    assert seqs == list(range(len(seqs))) and len(seqs) == 55
    assert records[-1].kind == "warning" and records[-1].details["raised"] == \
        "builtins.KeyboardInterrupt"


def test_ctrl_c_after_a_full_disk_left_half_a_line_keeps_the_log_resumable(tmp_path):
    """A full disk took half a line (a partial write, then ENOSPC): the writer kept the rest.
    A Ctrl-C then dropped the unflushed records, the rest of that line with them, and the next
    record written (the bus's word on the interrupt) was appended to the half line: damage in
    the middle of the log, which no resume goes on from. The rest of the line is kept."""
    import errno

    from eventbus import Bus, Plugin, hookimpl, read_log
    from eventbus.jsonl import JsonlWriter

    path = tmp_path / "run.jsonl"
    writer = JsonlWriter(path)
    real = writer._file

    class FullOnce:
        """Half of the first write, then ENOSPC; then the disk has room again."""

        state = "partial"

        def write(self, data):
            if FullOnce.state == "room":
                return real.write(data)
            half = bytes(data[:len(data) // 2])
            del data  # (a raising frame must not hold the buffer's view)
            if FullOnce.state == "partial":
                FullOnce.state = "full"
                return real.write(half)
            FullOnce.state = "room"
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(real, name)

    class CtrlC(Plugin):
        @hookimpl
        def on_epoch_end(self, event):
            if event.epoch == 1:
                raise KeyboardInterrupt

    with pytest.warns(Warning), pytest.raises(KeyboardInterrupt), \
            Bus([CtrlC()], log=writer) as bus:
        bus.train_begin({"epochs": 3})
        for epoch in range(3):
            bus.epoch_begin(epoch)
            for batch in range(5):
                bus.batch_end(batch, {"loss": 1.0})
            if epoch == 0:
                writer._file = FullOnce()
            bus.epoch_end(epoch, {"loss": 1.0})  # epoch 0's flush: half a line, then full
            writer._file = real
    assert FullOnce.state == "room"  # the disk was full once, as planned
    records = list(read_log(path))  # whole: every line a record, seqs rising
    seqs = [rec.seq for rec in records]
    assert seqs == sorted(set(seqs))
    assert records[-1].kind == "warning" and "interrupted" in records[-1].message
    with Bus([], log=path, resume=True) as bus:  # goes on from it, after what it holds
        assert bus.initial_epoch == sum(rec.kind == "epoch_end" for rec in records)


@pytest.mark.parametrize("loop", ["test", "predict"])
def test_an_evaluation_or_prediction_of_its_own_is_flushed_at_its_end(tmp_path, loop):
    """Outside a fit no epoch end flushes: an evaluation's records stayed in the buffer until
    close (a kill lost them, and a sink that follows the logs, the HTTP record sink, sent
    none). Its end flushes now; one inside a fit waits for the epoch's end, as before."""
    from eventbus import Bus

    path = tmp_path / "run.jsonl"
    bus = Bus(log=path)
    getattr(bus, f"{loop}_begin")()
    getattr(bus, f"{loop}_batch_end")(0, {"loss": 1.0} if loop == "test" else None)
    getattr(bus, f"{loop}_end")(*([{"loss": 1.0}] if loop == "test" else []))
    assert f'"kind":"{loop}_end"'.encode() in path.read_bytes()
    bus.train_begin({"epochs": 1})
    bus.epoch_begin(0)
    bus.test_begin()
    bus.test_end({"val_loss": 1.0})
    assert b'"val_loss"' not in path.read_bytes()  # with the epoch's end
    bus.epoch_end(0, {"loss": 1.0, "val_loss": 1.0})
    assert b'"val_loss"' in path.read_bytes()
    bus.close()


class TestTheLogRemovedWhileTheRunWritesIt:
    """A cleanup, a logrotate rule or a user removes or renames the log (or its folder) while
    the run goes on. The writer used to go on appending to the file no name leads to: every
    later record gone, no warning, a clean close. At its next flush it now writes the log again
    at its path from the file it holds open, and says so."""

    @staticmethod
    def run(path, between) -> tuple[list[str], list]:
        from eventbus import Bus, read_log

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bus = Bus([], log=path)
            bus.train_begin({"epochs": 4})
            for epoch in range(4):
                bus.epoch_begin(epoch)
                bus.batch_end(0, {"loss": 1.0})
                bus.epoch_end(epoch, {"loss": 1.0})
                if epoch == 1:
                    between()
            bus.train_end()
            bus.close()
        return [r.kind for r in read_log(path)], bus.failures

    @pytest.mark.parametrize("how", ["unlink", "rename", "rmtree", "logrotate create"])
    def test_it_is_written_again_whole_at_its_path(self, tmp_path, how):
        """Also logrotate's default: the log renamed, an empty file made at its name, which
        the writer takes (no writer holds it) rather than failing over it."""
        import shutil

        path = tmp_path / "run" / "events.jsonl"

        def rotate() -> None:
            path.rename(path.with_suffix(".jsonl.1"))
            path.write_bytes(b"")

        act = {"unlink": lambda: path.unlink(),
               "rename": lambda: path.rename(path.with_suffix(".jsonl.1")),
               "rmtree": lambda: shutil.rmtree(path.parent),
               "logrotate create": rotate}[how]
        kinds, failures = self.run(path, act)
        assert failures == []
        assert kinds.count("epoch_end") == 4 and kinds[0] == "header"
        assert kinds[-1] == "train_end" and kinds.count("warning") == 1
        from eventbus import read_log

        (warning,) = [r for r in read_log(path) if r.kind == "warning"]
        assert "removed or renamed while the run wrote it" in warning.message

    def test_a_folder_link_pointed_elsewhere_mid_run_changes_nothing(self, tmp_path):
        """runs/latest -> run1, then pointed to run2 by another job (which makes its own log
        there): the path now names another file, but nobody removed this one; it is written
        on in its folder, held open."""
        from eventbus import Bus, read_log

        (tmp_path / "run1").mkdir()
        (tmp_path / "run2").mkdir()
        latest = tmp_path / "latest"
        latest.symlink_to(tmp_path / "run1", target_is_directory=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with Bus([], log=latest / "events.jsonl") as bus:
                bus.train_begin({"epochs": 3})
                for epoch in range(3):
                    bus.epoch_begin(epoch)
                    bus.epoch_end(epoch, {"loss": 1.0})
                    if epoch == 0:
                        latest.unlink()
                        latest.symlink_to(tmp_path / "run2", target_is_directory=True)
                        (tmp_path / "run2" / "events.jsonl").write_bytes(b"another run\n")
                bus.train_end()
        assert bus.failures == []
        kinds = [r.kind for r in read_log(tmp_path / "run1" / "events.jsonl")]
        assert kinds.count("epoch_end") == 3 and kinds[-1] == "train_end"
        assert (tmp_path / "run2" / "events.jsonl").read_bytes() == b"another run\n"

    def test_a_relative_path_stays_where_it_was_when_the_loop_changes_directory(
            self, tmp_path, monkeypatch):
        """The check of the path at each flush took a relative path from the working
        directory of the moment: a loop that changed directory had its log 'removed', copied
        under the new directory, and the file it had opened ended there."""
        from eventbus import Bus, read_log

        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        monkeypatch.chdir(tmp_path / "a")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning: nothing was removed
            with Bus([], log="run/events.jsonl") as bus:
                bus.train_begin({"epochs": 3})
                for epoch in range(3):
                    bus.epoch_begin(epoch)
                    bus.epoch_end(epoch, {"loss": 1.0})
                    monkeypatch.chdir(tmp_path / "b")
                bus.train_end()
        assert bus.failures == [] and not (tmp_path / "b" / "run").exists()
        kinds = [r.kind for r in read_log(tmp_path / "a" / "run" / "events.jsonl")]
        assert kinds.count("epoch_end") == 3 and kinds[-1] == "train_end"

    @pytest.mark.parametrize("planted", ["a file", "a link to nothing"])
    def test_another_file_at_the_path_is_left_alone_and_the_log_goes_on_beside_it(
            self, tmp_path, planted):
        """A file (a second writer's, come in after the removal), or a link to a missing file
        (the log would be made through it, wherever it points), put at the path after the log
        went: not written to; the run's whole log goes on beside it, and says where."""
        path, target = tmp_path / "events.jsonl", tmp_path / "elsewhere" / "planted.txt"

        def replace() -> None:
            path.unlink()
            if planted == "a file":
                path.write_bytes(b"someone else's\n")
            else:
                path.symlink_to(target)

        from eventbus import Bus

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bus = Bus([], log=path)
            bus.train_begin({"epochs": 3})
            for epoch in range(3):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0})
                if epoch == 0:
                    replace()
            bus.close()
        if planted == "a file":
            assert path.read_bytes() == b"someone else's\n"
        assert not target.exists() and not target.parent.exists()
        assert bus.failures == []
        from eventbus import read_log

        (kept,) = tmp_path.glob("events.*.recovered.jsonl")
        records = list(read_log(kept))
        assert [r.kind for r in records].count("epoch_end") == 3
        (warning,) = [r for r in records if r.kind == "warning"]
        assert "another file is at its path now" in warning.message and str(kept) in \
            warning.message
