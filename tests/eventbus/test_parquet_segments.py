"""A Parquet log's files: segments written on a background thread, one file left at close.

Every test reads the directory back with pyarrow (what a user's tools see) and with
``read_log``; the shape of the file left at close (one row group per segment when merged as
the segments were written, one in all when compacted from them) tells the two paths apart.
"""

from __future__ import annotations

import gc
import re
import shutil
import signal
import sys
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eventbus import Bus, SinkFailureWarning, parquet_segments, read_log
from eventbus import records as r
from eventbus.parquet import ParquetWriter

from crash_runs import running
from record_strategies import same

HEADER = r.Header(run_id="run", seq=0, time=1.0, created="2026-01-01T00:00:00+00:00",
                  library="eventbus test")


def batch(seq: int, logs: dict[str, float] | None = None) -> dict:
    return r.BatchEnd(run_id="run", seq=seq, epoch=0, batch=seq, step=seq,
                      logs={"loss": 1.0 / seq} if logs is None else logs).model_dump()


def write_log(path, records: list[dict], *, flush_at=(), **sizes) -> None:
    """Write ``records`` to a new Parquet log, flushing after the seqs in ``flush_at``."""
    writer = ParquetWriter(path, **sizes)
    for record in records:
        writer.write(record)
        if record["seq"] in flush_at:
            writer.flush()
    writer.close()


def files(path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def the_file(path):
    (only,) = path.glob("seg-*.parquet")
    return pq.ParquetFile(only)


@pytest.fixture
def compactions(monkeypatch) -> list:
    """The directories close() compacted (read back and wrote again) instead of renaming the
    file it merged as the segments were written."""
    calls = []
    real = parquet_segments.compact

    def recorded(directory):
        calls.append(directory)
        real(directory)

    monkeypatch.setattr(parquet_segments, "compact", recorded)
    return calls


class TestMergedAtClose:
    def test_segments_are_merged_as_written_and_the_segments_go(self, tmp_path, compactions):
        """Five flushed segments leave one file, not compacted at close: one row group,
        strings for run_id and kind, every record back in order."""
        path = tmp_path / "events.parquet"
        records = [HEADER.model_dump()] + [batch(seq) for seq in range(1, 25)]
        writer = ParquetWriter(path, chunk_records=4)
        for record in records:
            writer.write(record)
            if record["seq"] % 5 == 4:
                writer.flush()
        assert len(list(path.glob("seg-*.parquet"))) == 5  # and the merged file, hidden
        writer.close()
        assert files(path) == ["seg-000000000000-000000000024.parquet"]
        assert compactions == []
        merged = the_file(path)
        assert merged.metadata.num_row_groups == 1
        table = merged.read()
        assert table.schema.field("run_id").type == table.schema.field("kind").type == pa.string()
        assert table.column("seq").to_pylist() == list(range(25))
        frame = pd.read_parquet(path)
        assert frame["seq"].tolist() == list(range(25))
        assert frame["logs.loss"].tolist()[1:] == [1.0 / seq for seq in range(1, 25)]
        assert [rec.seq for rec in read_log(path)] == list(range(25))

    def test_a_bus_run_s_log_is_the_file_merged_as_it_went(self, tmp_path, compactions):
        """A run on a bus: its first segment is the header and train_begin, flushed before
        any metric. The merged file took that segment's columns, no later segment fitted it,
        and every run's close read the whole log back to compact it."""
        from eventbus import Bus

        path = tmp_path / "events.parquet"
        with Bus([], log=path) as bus:
            bus.train_begin({"epochs": 3})
            for epoch in range(3):
                bus.epoch_begin(epoch)
                for b in range(50):
                    bus.batch_end(b, {"loss": 1.0 / (b + 1)})
                bus.epoch_end(epoch, {"loss": 0.5, "val_loss": 0.6 + epoch})
            bus.train_end()
        assert compactions == []
        table = the_file(path).read()
        assert table.column("logs.val_loss").to_pylist()[-2] == 2.6  # before train_end
        assert [rec.seq for rec in read_log(path)] == table.column("seq").to_pylist()

    def test_a_metric_a_float_then_a_vector_is_merged_as_vectors(self, tmp_path, compactions):
        """A metric first a number, then a vector (a per-class metric from epoch 1): the merged
        file's column holds lists, the number a list of one, as a compaction makes it. Its
        column kept the first type it saw, and close() compacted the whole log instead."""
        from eventbus import Bus

        path = tmp_path / "events.parquet"
        with Bus([], log=path) as bus:
            bus.train_begin({"epochs": 3})
            for epoch in range(3):
                bus.epoch_begin(epoch)
                bus.batch_end(0, {"loss": 1.0})
                bus.epoch_end(epoch, {"f1": 0.5 if epoch == 0 else [0.1, 0.2]})
            bus.train_end()
        assert compactions == []
        assert [r.logs["f1"] for r in read_log(path) if r.kind == "epoch_end"] == \
            [0.5, [0.1, 0.2], [0.1, 0.2]]

    def test_small_segments_gather_into_row_groups(self, tmp_path, monkeypatch, compactions):
        """Segments of a run flushed often are written as row groups of at least
        _ROW_GROUP_ROWS rows (the last may be smaller): fewer, larger groups read faster."""
        monkeypatch.setattr(parquet_segments, "_ROW_GROUP_ROWS", 10)
        path = tmp_path / "events.parquet"
        records = [HEADER.model_dump()] + [batch(seq) for seq in range(1, 25)]
        write_log(path, records, flush_at=range(4, 25, 5))
        assert compactions == []
        meta = the_file(path).metadata
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [10, 10, 5]
        assert [rec.seq for rec in read_log(path)] == list(range(25))

    def test_integer_columns_are_delta_encoded(self, tmp_path):
        path = tmp_path / "events.parquet"
        with ParquetWriter(path) as writer:
            writer.write(HEADER.model_dump())
            for seq in range(1, 100):
                writer.write(batch(seq))
        meta = the_file(path).metadata.row_group(0)
        encodings = {meta.column(i).path_in_schema: meta.column(i).encodings
                     for i in range(meta.num_columns)}
        for name in ("v", "seq", "epoch", "batch", "step"):
            assert "DELTA_BINARY_PACKED" in encodings[name], (name, encodings[name])

    @pytest.mark.parametrize("group_rows", [None, 3])
    def test_a_metric_first_seen_in_a_later_segment(self, tmp_path, monkeypatch, compactions,
                                                    group_rows):
        """The merged file's columns are those of the segments it holds until its first row
        group is written: a metric first seen later joins it (the log's first segment is the
        header, with no metric, and a file of its columns made every run compact at close).
        After that row group (``group_rows``), a new metric makes close() compact the
        segments, with every column and value."""
        if group_rows is not None:
            monkeypatch.setattr(parquet_segments, "_ROW_GROUP_ROWS", group_rows)
        path = tmp_path / "events.parquet"
        records = ([HEADER.model_dump()] + [batch(seq) for seq in range(1, 6)]
                   + [batch(seq, {"loss": 0.5, "gnorm": float(seq)}) for seq in range(6, 9)])
        write_log(path, records, flush_at=(3, 6))
        assert compactions == ([] if group_rows is None else [path])
        data = the_file(path).read().to_pydict()
        assert data["logs.gnorm"] == [None] * 6 + [6.0, 7.0, 8.0]
        assert not [p for p in path.iterdir() if p.name.startswith(".")]
        back = list(read_log(path))
        assert all(same(b.model_dump(), w) for b, w in zip(back, records, strict=True))

    @pytest.mark.parametrize("group_rows", [None, 2])
    def test_a_new_metric_in_the_records_close_writes_last_is_kept(self, tmp_path, monkeypatch,
                                                                    compactions, group_rows):
        """The records after the last flush go into the merged file, a new metric with them,
        while it has written no row group; after one, a new metric among them makes a last
        segment, and all are compacted."""
        if group_rows is not None:
            monkeypatch.setattr(parquet_segments, "_ROW_GROUP_ROWS", group_rows)
        path = tmp_path / "events.parquet"
        records = ([HEADER.model_dump()] + [batch(seq) for seq in range(1, 5)]
                   + [batch(5, {"loss": 0.5, "lr": 0.01})])
        write_log(path, records, flush_at=(2, 4))
        assert compactions == ([] if group_rows is None else [path])
        assert files(path) == ["seg-000000000000-000000000005.parquet"]
        assert the_file(path).read().column("logs.lr").to_pylist() == [None] * 5 + [0.01]
        back = list(read_log(path))
        assert all(same(b.model_dump(), w) for b, w in zip(back, records, strict=True))

    def test_a_metric_missing_from_a_later_segment_is_null_there(self, tmp_path, compactions):
        path = tmp_path / "events.parquet"
        records = ([HEADER.model_dump()] + [batch(seq, {"loss": 1.0, "acc": 0.5})
                                            for seq in range(1, 4)]
                   + [batch(seq, {"loss": 2.0}) for seq in range(4, 7)])
        write_log(path, records, flush_at=(3,))
        assert compactions == []
        merged = the_file(path)
        assert merged.read().column("logs.acc").to_pylist() == [None] + [0.5] * 3 + [None] * 3
        back = list(read_log(path))
        assert all(same(b.model_dump(), w) for b, w in zip(back, records, strict=True))

    def test_resuming_onto_segments_compacts_old_and_new(self, tmp_path, compactions):
        """A writer appending to segments a dead process left merges all of them at close,
        and clears the half-merged file that process left."""
        path = tmp_path / "events.parquet"
        first = ParquetWriter(path)
        first.write(HEADER.model_dump())
        for seq in range(1, 4):
            first.write(batch(seq))
        first.flush()  # then "dies": no close()
        del first  # and what it held (the log's lock) goes with it
        gc.collect()
        (path / ".merged.parquet.tmp").write_bytes(b"PAR1 half a file")
        second = ParquetWriter(path, append=True)
        assert not (path / ".merged.parquet.tmp").exists()
        for seq in range(4, 9):
            second.write(batch(seq))
            if seq == 6:
                second.flush()
        second.close()
        assert compactions == [path]
        assert files(path) == ["seg-000000000000-000000000008.parquet"]
        assert [rec.seq for rec in read_log(path)] == list(range(9))

    def test_one_segment_stays_as_it_is(self, tmp_path):
        path = tmp_path / "events.parquet"
        with ParquetWriter(path) as writer:
            writer.write(HEADER.model_dump())
            writer.write(batch(1))
        assert files(path) == ["seg-000000000000-000000000001.parquet"]


class TestWhenSegmentsAreWritten:
    def ten_records(self, path, *, segment_seconds: float) -> ParquetWriter:
        """A writer given seqs 0 to 9 in chunks of 3, and not flushed."""
        writer = ParquetWriter(path, chunk_records=3, segment_seconds=segment_seconds)
        writer.write(HEADER.model_dump())
        for seq in range(1, 10):
            writer.write(batch(seq))
        return writer

    def wait_for_segments(self, path, n: int) -> list[str]:
        deadline = time.monotonic() + 30
        while len(list(path.glob("seg-*.parquet"))) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return sorted(p.name for p in path.glob("seg-*.parquet"))

    def test_a_segment_whose_oldest_record_waited_long_enough_is_written(self, tmp_path):
        """segment_seconds=0: every chunk that ends writes its segment, with no flush."""
        path = tmp_path / "events.parquet"
        writer = self.ten_records(path, segment_seconds=0)
        assert self.wait_for_segments(path, 3) == [
            "seg-000000000000-000000000002.parquet", "seg-000000000003-000000000005.parquet",
            "seg-000000000006-000000000008.parquet"]
        writer.close()
        assert [rec.seq for rec in read_log(path)] == list(range(10))

    def test_before_that_a_segment_waits_for_its_size_or_a_flush(self, tmp_path):
        path = tmp_path / "events.parquet"
        writer = self.ten_records(path, segment_seconds=3600)
        time.sleep(0.1)  # time for a background write that should not happen
        assert list(path.glob("seg-*.parquet")) == []
        writer.flush()
        assert self.wait_for_segments(path, 1) == ["seg-000000000000-000000000009.parquet"]
        writer.close()

    @pytest.mark.parametrize("seconds", [-1, float("nan")])
    def test_a_wait_that_is_not_a_duration_is_refused(self, tmp_path, seconds):
        with pytest.raises(ValueError, match="segment_seconds"):
            ParquetWriter(tmp_path / "events.parquet", segment_seconds=seconds)


class TestBackgroundFailures:
    def test_a_segment_that_cannot_be_written_fails_the_flush(self, tmp_path):
        """A full segment fails on the background thread (its directory is gone); the error
        comes out of the next flush, not lost with the thread."""
        path = tmp_path / "events.parquet"
        writer = ParquetWriter(path, chunk_records=2, segment_records=4)
        writer.write(HEADER.model_dump())
        shutil.rmtree(path)
        for seq in range(1, 6):
            try:
                writer.write(batch(seq))
            except OSError:
                break  # an earlier segment's failure may surface here already
        with pytest.raises(OSError):
            writer.flush()

    def test_through_the_bus_the_json_lines_log_keeps_everything(self, tmp_path):
        """The Parquet log's failure is a sink_failed in the JSON Lines log beside it, which
        loses nothing; training goes on."""
        jsonl, parquet = tmp_path / "events.jsonl", tmp_path / "events.parquet"
        bus = Bus(log=[jsonl, parquet])
        bus.train_begin()  # flushed: its segment is written in the background
        bus.epoch_begin(0)
        bus.flush()  # waits for it, so the folder is removed whole
        shutil.rmtree(parquet)
        for i in range(3):
            bus.batch_end(i, {"loss": 1.0})
        bus.epoch_end(0, {"loss": 1.0})  # the flush: the segment's failure shows here
        bus.epoch_begin(1)
        bus.batch_end(0, {"loss": 0.5})
        with pytest.warns(SinkFailureWarning, match="parquet"):
            bus.close()
        kinds = [rec.kind for rec in read_log(jsonl)]
        assert kinds.count("batch_end") == 4 and kinds.count("sink_failed") == 1
        failed = next(rec for rec in read_log(jsonl) if rec.kind == "sink_failed")
        assert failed.sink == f"parquet {parquet}"  # which log, of the two


CRASH_WORKER = """
import sys
from eventbus import Bus
from eventbus.parquet import ParquetWriter

jsonl, parquet = sys.argv[1], sys.argv[2]
bus = Bus(log=[jsonl, ParquetWriter(parquet, chunk_records=8, segment_records=50)])
bus.train_begin({"epochs": 10_000})
print("started", flush=True)
for epoch in range(10_000):
    bus.epoch_begin(epoch)
    for batch in range(40):
        bus.batch_end(batch, {"loss": 1.0 / (epoch * 40 + batch + 1)})
    bus.epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
    print("epoch", epoch, flush=True)
"""


class TestKilled:
    @pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
    def test_sigkill_keeps_every_flushed_record_and_no_broken_file(self, tmp_path, delay):
        """A run killed at any moment, with segments in flight on the background thread:
        what is on disk reads back, has no gap, agrees with the JSON Lines log, and holds
        every epoch the run reported finished."""
        jsonl, parquet = tmp_path / "events.jsonl", tmp_path / "events.parquet"
        with running([sys.executable, "-c", CRASH_WORKER, str(jsonl), str(parquet)]) as proc:
            assert proc.stdout.readline().startswith("started"), proc.stderr.read()
            finished = -1
            for line in iter(proc.stdout.readline, ""):
                finished = int(line.split()[1])
                if finished >= 3:
                    break
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            # Only whole "epoch N" lines count: the kill can cut the last line short.
            finished = max([finished] + [int(m[1]) for line in proc.stdout
                                         if (m := re.fullmatch(r"epoch (\d+)\n", line))])
        assert proc.returncode == -signal.SIGKILL
        stored = list(read_log(parquet))
        assert [rec.seq for rec in stored] == list(range(len(stored)))
        ended = [rec.epoch for rec in stored if rec.kind == "epoch_end"]
        assert ended[-1] >= finished
        logged = {rec.seq: rec for rec in read_log(jsonl)}
        assert len(logged) > 100
        assert all(same(rec, logged[rec.seq]) for rec in stored if rec.seq in logged)


def test_a_segment_turned_into_a_fifo_after_the_listing_is_refused_not_waited_on(
        tmp_path, monkeypatch):
    """The reader opens a segment once, without blocking, and checks what it opened: a name
    swapped for a FIFO between a check and the open (a race another user can win) held
    read_log in the kernel for ever; now it is a LogCorruptError at once."""
    import os
    import threading

    from eventbus import LogCorruptError

    fifo = tmp_path / "seg.parquet"
    os.mkfifo(fifo)
    regular = tmp_path / "regular"
    regular.write_bytes(b"PAR1")
    # What a check by name saw a moment before the swap: a regular file.
    seen = os.stat(regular)
    real_stat = os.stat
    monkeypatch.setattr(parquet_segments.os, "stat",
                        lambda path, *a, **k: seen if str(path) == str(fifo)
                        else real_stat(path, *a, **k))
    outcome: list[BaseException] = []

    def open_it() -> None:
        try:
            parquet_segments.open_regular(fifo)
        except BaseException as exc:  # noqa: BLE001 - kept for the assertion
            outcome.append(exc)

    worker = threading.Thread(target=open_it, daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():  # let the blocked open go before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("open_regular blocked on a FIFO")
    assert isinstance(outcome[0], LogCorruptError) and "a FIFO" in str(outcome[0])


def test_ctrl_c_inside_a_record_s_write_loses_nothing_else(tmp_path, monkeypatch):
    """A KeyboardInterrupt while the writer took a decision record (its payload kept, its row
    not yet added) left a row the table could not hold, and close() dropped every record of
    the segment. The log now ends as a kill at that moment leaves it: at its last flush, the
    end of epoch 0 (the cut decision's epoch is made again by a resume); nothing before it
    is lost."""
    import eventbus.parquet as parquet_module
    from eventbus import Plugin, hookimpl

    class Stopper(Plugin):
        @hookimpl
        def on_epoch_end(self, event):
            return r.StopTraining(reason="now") if event.epoch == 1 else None

    real, calls = parquet_module._metrics_of, []

    def metrics_of(record):
        calls.append(record["kind"])
        if record["kind"] == "stop_training":
            raise KeyboardInterrupt
        return real(record)

    monkeypatch.setattr(parquet_module, "_metrics_of", metrics_of)
    log = tmp_path / "run.parquet"
    with pytest.raises(KeyboardInterrupt), Bus([Stopper()], log=log) as bus:
        bus.train_begin()
        for epoch in range(3):
            bus.epoch_begin(epoch)
            for batch in range(100):
                bus.batch_end(batch, {"loss": 1.0})
            bus.epoch_end(epoch, {"loss": 1.0})
    records = list(read_log(log))
    assert sum(x.kind == "batch_end" for x in records) == 100
    assert [x.epoch for x in records if x.kind == "epoch_end"] == [0]
    assert "stop_training" in calls


def test_segments_after_one_the_disk_refused_wait_behind_it(tmp_path, monkeypatch):
    """The files on disk are always a prefix of the log: a later segment is not written
    ahead of one the disk refused (a crash then left a hole, and the readers refused the
    log). Once the disk has room, all are written, in order."""
    import errno

    from eventbus.parquet_segments import SegmentStore, segment_name

    real, refuse = parquet_segments.write_atomically, [True]

    def write_atomically(table, target):
        if refuse[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(table, target)

    monkeypatch.setattr(parquet_segments, "write_atomically", write_atomically)
    store = SegmentStore(tmp_path, merge=False)
    table = pa.table({"seq": [0]})
    store.submit(table, 0, 0)
    with pytest.raises(OSError):
        store.wait()  # refused: kept
    refuse[0] = False
    store.submit(table, 1, 1)  # the disk has room now, but the first is still kept
    while store._pending:
        store._settle(store._pending.popleft())
    assert files(tmp_path) == []  # nothing written ahead of the kept one
    store.wait()
    assert files(tmp_path) == [segment_name(0, 0), segment_name(1, 1)]
    store.close()
