"""A Parquet log not yet closed (a live run, or one that was killed) is a directory of segments;
pandas, pyarrow and DuckDB read it as one table with every metric column and value.

Those readers take the columns of a directory from its first file (by name), which holds the
header and ``train_begin`` only: the writer writes that file again with each column a later
segment brings. Here real runs are SIGKILLed, and what they left is read with each tool, and
with eventbus's own reader, which must read every segment as before.
"""

from __future__ import annotations

import math
import os
import signal
import sys

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eventbus import Bus, read_log
from eventbus import records as r
from eventbus.parquet import ParquetWriter
from eventbus.parquet_segments import write_atomically

from crash_runs import running
from record_strategies import same

# Epoch e: batches with ``loss``; its epoch_end has ``loss``, ``val_loss`` every other epoch
# from epoch 1 (a validation_freq of 2), ``learning_rate`` from epoch 2 (a rate decided after
# the first epochs) and the vector ``f1`` from epoch 3: each first seen in a later segment.
WORKER = """
import os, sys, time
from eventbus import Bus

path, epochs, die_in = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if die_in != "-":  # killed inside the writing of the log's first file again
    import signal
    from eventbus import parquet_segments
    real = os.replace
    renames = []

    def replace(src, dst):
        if os.path.basename(dst) == "seg-000000000000-000000000001.parquet":
            renames.append(dst)
        if len(renames) < 2:  # the file's first write, or another file
            return real(src, dst)
        if die_in == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)
        os.kill(os.getpid(), signal.SIGKILL)

    parquet_segments.os.replace = replace
bus = Bus(log=[path, path.replace(".parquet", ".jsonl")])
bus.train_begin({"epochs": 100, "steps": 4})
for epoch in range(100):
    bus.epoch_begin(epoch)
    for b in range(4):
        bus.batch_begin(b)
        bus.batch_end(b, {"loss": 1.0 / (epoch * 4 + b + 1)})
    logs = {"loss": 1.0 / (epoch + 1)}
    if epoch % 2 == 1:
        logs["val_loss"] = 2.0 / (epoch + 1)
    if epoch >= 2:
        logs["learning_rate"] = 0.1 / epoch
    if epoch >= 3:
        logs["f1"] = [epoch / 10, epoch / 20]
    bus.epoch_end(epoch, logs)
    print("epoch", epoch, flush=True)
    if epoch + 1 == epochs:
        time.sleep(120)  # killed here
"""


def expected_epoch_logs(epoch: int) -> dict:
    logs: dict = {"loss": 1.0 / (epoch + 1)}
    if epoch % 2 == 1:
        logs["val_loss"] = 2.0 / (epoch + 1)
    if epoch >= 2:
        logs["learning_rate"] = 0.1 / epoch
    if epoch >= 3:
        logs["f1"] = [epoch / 10, epoch / 20]
    return logs


def killed_run(tmp_path, epochs: int = 5, die_in: str = "-"):
    """The Parquet log of a run SIGKILLed once ``epochs`` epochs ended (each flushed), or,
    ``die_in`` "before"/"after", as it renames the first file it wrote again."""
    log = tmp_path / "run.parquet"
    with running([sys.executable, "-c", WORKER, str(log), str(epochs), die_in]) as proc:
        if die_in == "-":
            for line in iter(proc.stdout.readline, ""):
                if line == f"epoch {epochs - 1}\n":
                    break
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    return log, epochs


def epoch_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["kind"].astype(str) == "epoch_end"].sort_values("seq")


def check_epoch_metrics(rows: list[dict], epochs: int) -> None:
    """``rows``: the epoch_end rows read by some tool ({"epoch": e, "logs.<name>": value, ...},
    a missing value null or NaN): each epoch's metrics, exactly."""
    assert [row["epoch"] for row in rows] == list(range(epochs))
    for row in rows:
        want = expected_epoch_logs(row["epoch"])
        for name in ("loss", "val_loss", "learning_rate", "f1"):
            got = row[f"logs.{name}"]
            if name not in want:
                assert got is None or (isinstance(got, float) and math.isnan(got)), (row, name)
            else:
                assert list(got) == want[name] if name == "f1" else got == want[name], (row, name)


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    return killed_run(tmp_path_factory.mktemp("killed"))


class TestAKilledRunReads:

    def test_it_is_segments_and_eventbus_reads_them(self, killed):
        log, epochs = killed
        assert len(list(log.glob("seg-*.parquet"))) > 2  # not compacted: the run never closed
        stored = list(read_log(log))
        assert [rec.seq for rec in stored] == list(range(len(stored)))
        ended = [rec for rec in stored if rec.kind == "epoch_end"]
        assert [dict(rec.logs) for rec in ended] == [expected_epoch_logs(e) for e in range(epochs)]
        logged = {rec.seq: rec for rec in read_log(log.with_suffix(".jsonl"))}
        assert all(same(rec, logged[rec.seq]) for rec in stored)

    def test_pandas_finds_every_metric(self, killed):
        log, epochs = killed
        frame = pd.read_parquet(log)
        assert {"logs.loss", "logs.val_loss", "logs.learning_rate", "logs.f1"} <= set(frame)
        check_epoch_metrics(epoch_rows(frame).to_dict("records"), epochs)
        batches = frame[frame["kind"].astype(str) == "batch_end"].sort_values("seq")
        assert list(batches["logs.loss"]) == [1.0 / n for n in range(1, epochs * 4 + 1)]

    def test_pyarrow_finds_every_metric(self, killed):
        log, epochs = killed
        table = pq.read_table(log)
        rows = [row for row in table.to_pylist() if row["kind"] == "epoch_end"]
        check_epoch_metrics(sorted(rows, key=lambda row: row["seq"]), epochs)

    def test_duckdb_finds_a_metric_every_segment_has_as_the_docs_query_it(self, killed):
        log, epochs = killed
        rows = duckdb.sql(f"""select epoch, "logs.loss" from '{log}' where kind = 'epoch_end'
                              order by seq""").fetchall()
        assert rows == [(e, 1.0 / (e + 1)) for e in range(epochs)]

    def test_duckdb_finds_every_metric_by_name(self, killed):
        log, epochs = killed
        relation = duckdb.sql(f"""select * from read_parquet('{log}/*.parquet',
                                  union_by_name=true) where kind = 'epoch_end' order by seq""")
        rows = [dict(zip(relation.columns, row)) for row in relation.fetchall()]
        check_epoch_metrics(rows, epochs)


@pytest.mark.parametrize("die_in", ["before", "after"])
def test_a_kill_while_the_first_file_is_written_again_loses_nothing(tmp_path, die_in):
    """Killed as the first file, written again, is renamed over itself (just before, just
    after): every record flushed is there, in eventbus's reader and pandas; the next writer
    removes the temporary file and closes the log into one file, every metric in it."""
    log, _ = killed_run(tmp_path, die_in=die_in)
    stored = list(read_log(log))
    assert [rec.seq for rec in stored] == list(range(len(stored)))
    # Killed on the first new metric (epoch 0's segment, with loss): train_begin and the
    # header are there, and what is renamed in or not is the first file, whole.
    assert [rec.kind for rec in stored[:2]] == ["header", "train_begin"]
    left = [p.name for p in log.iterdir() if p.name.startswith(".seg-")]
    assert bool(left) == (die_in == "before")  # the first file's temporary
    frame = pd.read_parquet(log)
    assert len(frame) == len(stored)
    if die_in == "after":
        assert "logs.loss" in frame
    ParquetWriter(log, append=True).close()  # the next writer: the run resumed, then closed
    assert not [p for p in log.iterdir() if p.name.startswith(".")]
    assert [p.name for p in log.iterdir()] == [f"seg-000000000000-{len(stored) - 1:012d}.parquet"]
    again = list(read_log(log))
    assert all(same(a, b) for a, b in zip(again, stored, strict=True))


HEADER = r.Header(run_id="run", seq=0, time=1.0, created="2026-01-01T00:00:00+00:00",
                  library="eventbus test")


def batch(seq: int, logs: dict) -> dict:
    return r.BatchEnd(run_id="run", seq=seq, epoch=0, batch=seq, step=seq,
                      logs=logs).model_dump()


def flushed_batches(path, batches: int) -> ParquetWriter:
    """A writer of ``path`` that has written the header, then ``batches`` batch records of one
    metric, each flushed as a segment of its own; left open."""
    writer = ParquetWriter(path)
    writer.write(HEADER.model_dump())
    writer.flush()
    for seq in range(1, batches + 1):
        writer.write(batch(seq, {"loss": 1.0 / seq}))
        writer.flush()
    return writer


class TestTheFirstFile:
    def test_takes_each_new_column_and_keeps_its_name_and_rows(self, tmp_path):
        path = tmp_path / "events.parquet"
        writer = ParquetWriter(path)
        writer.write(HEADER.model_dump())
        writer.flush()
        first = path / "seg-000000000000-000000000000.parquet"
        assert not [n for n in pq.read_schema(first).names if n.startswith("logs.")]
        writer.write(batch(1, {"loss": 1.0}))
        writer.flush()
        writer.write(batch(2, {"loss": 0.5, "f1": [0.25, 0.5]}))
        writer.write(batch(3, {"acc": 0.75}))
        writer.flush()
        table = pq.read_table(first)
        assert table.num_rows == 1 and table.column("seq").to_pylist() == [0]
        assert table.schema.field("logs.loss").type == pa.float64()
        assert table.schema.field("logs.f1").type == pa.list_(pa.float64())
        assert table.column("logs.acc").to_pylist() == [None]
        assert table.schema.metadata == pq.read_schema(
            path / "seg-000000000002-000000000003.parquet").metadata  # its layout stays
        frame = pd.read_parquet(path)
        assert list(frame["logs.loss"].fillna(-1)) == [-1, 1.0, 0.5, -1]
        assert list(frame["logs.acc"].fillna(-1)) == [-1, -1, -1, 0.75]
        assert [None if v is None else list(v) for v in frame["logs.f1"]] == [
            None, None, [0.25, 0.5], None]
        assert sorted(p.name for p in path.iterdir()) == [
            "seg-000000000000-000000000000.parquet", "seg-000000000001-000000000001.parquet",
            "seg-000000000002-000000000003.parquet"]
        writer.close()
        assert [rec.seq for rec in read_log(path)] == [0, 1, 2, 3]

    def test_of_a_log_resumed_takes_the_columns_of_the_segments_before(self, tmp_path):
        """Segments left by an earlier version, whose first file lacks the metrics: the
        next writer's first segment gives the first file every column of the log."""
        path = tmp_path / "events.parquet"
        old = tmp_path / "old.parquet"
        writer = ParquetWriter(old)
        writer.write(HEADER.model_dump())
        writer.write(batch(1, {"loss": 1.0}))
        writer.close()
        table = pq.read_table(old)
        path.mkdir()
        write_atomically(table.slice(0, 1).drop_columns(["logs.loss"]),
                         path / "seg-000000000000-000000000000.parquet")
        write_atomically(table.slice(1), path / "seg-000000000001-000000000001.parquet")
        assert "logs.loss" not in pd.read_parquet(path)
        writer = ParquetWriter(path, append=True)
        writer.write(batch(2, {"acc": 0.5}))
        writer.flush()
        frame = pd.read_parquet(path)
        assert list(frame["logs.loss"].fillna(-1)) == [-1, 1.0, -1]
        assert list(frame["logs.acc"].fillna(-1)) == [-1, -1, 0.5]
        writer.close()
        assert [dict(rec.logs) for rec in read_log(path) if rec.kind == "batch_end"] == [
            {"loss": 1.0}, {"acc": 0.5}]

    @pytest.mark.parametrize("fault", ["a full disk", "EIO opening it"])
    def test_that_cannot_be_written_again_costs_no_segment(self, tmp_path, monkeypatch,
                                                           fault):
        """A full disk as the first file is written again, or an EIO as it is opened (a
        LogError naming the file): the segment is written all the same, and the first file
        takes the columns with a later segment. Before, the EIO stopped the first file's
        widening for the rest of the run, silently."""
        from eventbus import LogError, parquet_segments

        real = parquet_segments._rewrite_with_columns
        failures = [OSError(28, "No space left on device")]
        if fault == "EIO opening it":
            failure = LogError("seg-0: cannot be read: [Errno 5] Input/output error")
            failure.__cause__ = OSError(5, "Input/output error")
            failures = [failure]

        def full(file, columns):
            if failures:
                raise failures.pop()
            return real(file, columns)

        monkeypatch.setattr(parquet_segments, "_rewrite_with_columns", full)
        path = tmp_path / "events.parquet"
        writer = ParquetWriter(path)
        writer.write(HEADER.model_dump())
        writer.flush()
        writer.write(batch(1, {"loss": 1.0}))
        writer.flush()
        assert "logs.loss" not in pd.read_parquet(path)
        assert [rec.seq for rec in read_log(path)] == [0, 1]
        writer.write(batch(2, {"loss": 0.5}))
        writer.flush()
        assert list(pd.read_parquet(path)["logs.loss"].fillna(-1)) == [-1, 1.0, 0.5]
        writer.close()

    def test_a_disk_that_stays_full_is_not_asked_at_every_flush(self, tmp_path, monkeypatch):
        """Each try copies the whole first file (a resumed long run's is the whole earlier
        run): tried at every flush of a full disk, it stalled every epoch. After a failure it
        is tried with the next segment (a blip), then after a wait, longer each time."""
        from eventbus import parquet_segments

        calls = []

        def full(file, columns):
            calls.append(file)
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(parquet_segments, "_rewrite_with_columns", full)
        monkeypatch.setattr(parquet_segments, "_FIRST_WIDEN_WAIT", 3600.0)  # (a slow machine)
        path = tmp_path / "events.parquet"
        writer = flushed_batches(path, 19)
        assert len(calls) == 2
        writer.close()
        assert [rec.seq for rec in read_log(path)] == list(range(20))

    def test_is_not_written_again_without_a_new_column(self, tmp_path, monkeypatch):
        from eventbus import parquet_segments

        calls = []
        real = parquet_segments._rewrite_with_columns
        monkeypatch.setattr(parquet_segments, "_rewrite_with_columns",
                            lambda file, columns: calls.append(file) or real(file, columns))
        path = tmp_path / "events.parquet"
        writer = flushed_batches(path, 19)
        assert len(calls) == 1
        writer.close()
        assert os.listdir(path) == ["seg-000000000000-000000000019.parquet"]


def test_a_planted_column_is_not_carried_into_the_first_file(tmp_path):
    """A resumed log's first file is written again with the log's metric columns. A zero-row
    segment planted in the folder with a column of 128 MiB a row (a column the readers pass
    over) had it made, null, for every row of that file: gigabytes from kilobytes. Only
    metric columns of the types this writer writes are carried."""
    log, _ = killed_run(tmp_path, epochs=1)
    planted = pq.read_table(sorted(log.glob("seg-*.parquet"))[-1]).slice(0, 0)
    for name, kind in (("x", pa.binary(1 << 27)), ("logs.acc", pa.float64())):
        planted = planted.append_column(name, pa.array([], kind))
    pq.write_table(planted, log / "seg-000000000002-000000000002.parquet")
    bus = Bus(log=log, resume=True)
    bus.epoch_begin(1)
    bus.epoch_end(1, {"loss": 0.5, "val_loss": 0.4})
    bus.flush()
    first = pq.ParquetFile(sorted(log.glob("seg-*.parquet"))[0]).schema_arrow
    assert {"logs.val_loss", "logs.acc"} <= set(first.names)
    assert "x" not in first.names
    bus.close()
