"""The Parquet writer: records kept per chunk, built into columns, written per segment.

Small ``chunk_records`` and ``segment_records`` put chunk and segment boundaries everywhere a
few records can reach; every test reads the log back both with pyarrow and with ``read_log``.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, Plugin, hookimpl, read_log
from eventbus import records as r
from eventbus.parquet import ParquetWriter, iter_parquet_dicts

from hypothesis_profiles import FILES, examples
from record_strategies import any_record, same

HEADER = r.Header(run_id="run", seq=0, time=1.0, created="2026-01-01T00:00:00+00:00",
                  library="eventbus test", meta={"learning_rate": 0.1})
NAN, INF = math.nan, math.inf


def mixed_records() -> list[r.Record]:
    """One of every shape the writer must tell apart, in the order a run makes them."""
    run = {"run_id": "run"}
    return [
        HEADER,
        r.TrainBegin(**run, seq=1, params={"epochs": 2, "steps": None}, logs={"lr": 0.1}),
        r.EpochBegin(**run, seq=2, epoch=0),
        r.BatchBegin(**run, seq=3, epoch=0, batch=0, step=0),
        r.BatchEnd(**run, seq=4, epoch=0, batch=0, step=0, logs={"loss": 1.0, "acc": 0.5}),
        r.BatchEnd(**run, seq=5, epoch=0, batch=1, step=1, logs={"loss": NAN, "acc": INF}),
        r.BatchEnd(**run, seq=6, epoch=None, batch=2, step=2, logs={"acc": 0.7, "loss": -INF}),
        r.TestBatchEnd(**run, seq=7, epoch=0, batch=0, logs={"loss": 2.0}),
        r.PredictBatchEnd(**run, seq=8, batch=0),
        r.EpochEnd(**run, seq=9, epoch=0, logs={"loss": 0.9, "acc": 0.6, "val_loss": NAN,
                                                  "val_acc": -INF}),
        r.StopTraining(**run, seq=10, source="EarlyStopping", reason="no progress",
                       code="patience_exhausted", evidence={"best": NAN, "wait": [1, 2]},
                       cause_seq=9, epoch=0),
        r.CheckpointSaved(**run, seq=11, path="w.h5", size=3, sha256="0" * 64, cause_seq=10),
        r.Warning(**run, seq=12, message="slow", details={"ratio": INF}),
        r.TrainEnd(**run, seq=13, logs={"loss": 0.8}),
    ]


def write_all(path, records, *, flush_after=(), **sizes) -> ParquetWriter:
    writer = ParquetWriter(path, **sizes)
    for i, record in enumerate(records):
        writer.write(record.model_dump())
        if i in flush_after:
            writer.flush()
    return writer


def segment_names(path) -> list[str]:
    return sorted(p.name for p in path.glob("seg-*.parquet"))


def assert_reads_back(path, records) -> None:
    back = list(read_log(path))
    assert len(back) == len(records)
    for got, want in zip(back, records):
        assert same(got, want), (got, want)


class TestColumns:
    @pytest.mark.parametrize("chunk", [1, 3, 64])
    def test_mixed_kinds_in_one_chunk_read_back_exactly(self, tmp_path, chunk):
        """Every kind, NaN and infinities, None epochs, payloads: a chunk of them or many."""
        records = mixed_records()
        path = tmp_path / "events.parquet"
        write_all(path, records, chunk_records=chunk).close()
        assert_reads_back(path, records)

    def test_columns_types_and_nulls(self, tmp_path):
        """The stored table: fixed columns, a decision's and an outcome's fields that have
        columns (layout 2), one float column per metric, null where absent."""
        records = mixed_records()
        path = tmp_path / "events.parquet"
        write_all(path, records).flush()  # one segment, as the bus leaves it before close()
        (segment,) = path.glob("seg-*.parquet")
        table = pq.read_table(segment)
        assert table.column_names == [
            "v", "run_id", "seq", "kind", "time", "epoch", "batch", "step",
            "source", "reason", "code", "cause_seq",
            "logs.acc", "logs.loss", "logs.lr", "logs.val_acc", "logs.val_loss", "payload"]
        types = {field.name: field.type for field in table.schema}
        dictionary = pa.dictionary(pa.int32(), pa.string())
        assert types["v"] == pa.int32() and types["run_id"] == types["kind"] == dictionary
        assert types["seq"] == types["epoch"] == types["batch"] == types["step"] == pa.int64()
        assert all(types[name] == pa.float64() for name in table.column_names
                   if name.startswith("logs."))
        assert types["payload"] == types["source"] == types["reason"] == types["code"] \
            == pa.string()
        assert types["cause_seq"] == pa.int64()
        data = table.to_pydict()
        assert data["source"][10:13] == ["EarlyStopping", "", ""]
        assert data["reason"][10] == "no progress" and data["code"][10] == "patience_exhausted"
        assert data["cause_seq"][10:13] == [9, 10, None]
        assert data["reason"][:10] == data["cause_seq"][:10] == [None] * 10
        assert data["seq"] == list(range(14))
        assert data["epoch"] == [None, None, 0, 0, 0, 0, None, 0, None, 0, 0, None, None, None]
        assert data["step"] == [None, None, None, 0, 0, 1, 2, None, None, None, None, None, None,
                                None]
        assert data["logs.val_loss"][9] != data["logs.val_loss"][9]  # NaN, not null
        assert data["logs.val_acc"][9] == -INF
        assert [i for i, v in enumerate(data["logs.val_acc"]) if v is not None] == [9]
        assert data["logs.loss"][4:7] == [1.0, data["logs.loss"][5], -INF]
        assert math.isnan(data["logs.loss"][5]) and data["logs.acc"][5] == INF
        assert data["logs.loss"][3] is None and data["logs.loss"][8] is None  # empty logs
        payloads = [i for i, p in enumerate(data["payload"]) if p is not None]
        assert payloads == [0, 1, 10, 11, 12]  # the header, train_begin, decision, outcomes
        assert '"best":"NaN"' in data["payload"][10]
        assert '"reason"' not in data["payload"][10] and '"source"' not in data["payload"][11]

    def test_a_metric_new_in_a_later_chunk_is_null_before_it(self, tmp_path):
        """Chunks with different metric names make one column per name over the segment."""
        records = [HEADER] + [
            r.BatchEnd(run_id="run", seq=i, batch=i, step=i,
                       logs={"loss": float(i)} if i < 5 else {"loss": float(i), "gnorm": 1.5})
            for i in range(1, 9)]
        path = tmp_path / "events.parquet"
        write_all(path, records, chunk_records=2).flush()
        (segment,) = path.glob("seg-*.parquet")
        data = pq.read_table(segment).to_pydict()
        assert data["logs.gnorm"] == [None] * 5 + [1.5] * 4
        assert data["logs.loss"] == [None] + [float(i) for i in range(1, 9)]
        assert_reads_back(path, records)

    @pytest.mark.parametrize("chunk", [1, 4])
    def test_metric_values_that_are_not_floats_are_converted_as_numbers(self, tmp_path, chunk):
        """Dicts written directly (not through the bus) may hold ints, bools or None: stored
        as float64, None as NaN (a value, unlike a missing name, which is null)."""
        path = tmp_path / "events.parquet"
        writer = ParquetWriter(path, chunk_records=chunk)
        writer.write(HEADER.model_dump())
        for seq, logs in enumerate([{"n": 3, "ok": True}, {"n": None, "ok": False},
                                    {"n": 2**70}, {"n": 1.5, "ok": 0.0}], 1):
            writer.write({"v": 1, "run_id": "run", "seq": seq, "kind": "epoch_end",
                          "time": 0.0, "epoch": seq, "logs": logs})
        writer.flush()
        (segment,) = path.glob("seg-*.parquet")
        data = pq.read_table(segment).to_pydict()
        assert data["logs.n"][0] is None and data["logs.n"][1] == 3.0
        assert math.isnan(data["logs.n"][2]) and data["logs.n"][3:] == [2.0**70, 1.5]
        assert data["logs.ok"] == [None, 1.0, 0.0, None, 0.0]


class TestChunksAndSegments:
    def test_records_span_chunk_and_segment_boundaries(self, tmp_path):
        """A full segment is written as soon as it fills (on the background thread, with no
        flush asked for), whatever the chunk size."""
        records = [HEADER] + [
            r.EpochEnd(run_id="run", seq=i, epoch=i // 7, logs={"val_loss": 1.0 / i})
            if i % 7 == 0 else
            r.BatchEnd(run_id="run", seq=i, epoch=i // 7, batch=i % 7, step=i,
                       logs={"loss": float(i)})
            for i in range(1, 34)]
        path = tmp_path / "events.parquet"
        writer = write_all(path, records, chunk_records=4, segment_records=10)
        deadline = time.monotonic() + 30
        while len(segment_names(path)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert segment_names(path) == [
            "seg-000000000000-000000000009.parquet", "seg-000000000010-000000000019.parquet",
            "seg-000000000020-000000000029.parquet"]
        writer.flush()
        assert segment_names(path)[-1] == "seg-000000000030-000000000033.parquet"
        for name in segment_names(path):
            assert pq.read_table(path / name).num_rows == (10 if name !=
                                                           segment_names(path)[-1] else 4)
        assert_reads_back(path, records)
        writer.close()
        assert segment_names(path) == ["seg-000000000000-000000000033.parquet"]
        assert_reads_back(path, records)

    def test_a_flush_in_the_middle_of_a_chunk_writes_what_is_there(self, tmp_path):
        """Records still waiting as dicts go into the segment a flush writes."""
        records = [HEADER] + [r.BatchEnd(run_id="run", seq=i, batch=i, step=i,
                                         logs={"loss": float(i)}) for i in range(1, 12)]
        path = tmp_path / "events.parquet"
        writer = write_all(path, records, flush_after={4, 6}, chunk_records=8)
        assert segment_names(path) == ["seg-000000000000-000000000004.parquet",
                                       "seg-000000000005-000000000006.parquet"]
        writer.flush()
        writer.flush()  # nothing new: no empty segment
        assert segment_names(path)[-1] == "seg-000000000007-000000000011.parquet"
        assert len(segment_names(path)) == 3
        assert [d["seq"] for d in iter_parquet_dicts(path)] == list(range(12))

    def test_a_crash_loses_only_what_was_never_flushed(self, tmp_path):
        """A process that dies without close(): the flushed segments read back whole; records
        written since (in finished chunks or not) are simply absent."""
        path = tmp_path / "events.parquet"
        script = textwrap.dedent(f"""
            import os
            from eventbus.parquet import ParquetWriter
            writer = ParquetWriter({str(path)!r}, chunk_records=3, segment_records=100)
            writer.write({HEADER.model_dump()!r})
            for i in range(1, 21):
                writer.write({{"v": 1, "run_id": "run", "seq": i, "kind": "batch_end",
                              "time": float(i), "logs": {{"loss": 1.0 / i}}, "epoch": 0,
                              "batch": i, "step": i}})
                if i == 12:
                    writer.flush()
            os._exit(3)  # no close(), no clean-up
        """)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert done.returncode == 3, done.stderr
        assert segment_names(path) == ["seg-000000000000-000000000012.parquet"]
        back = list(read_log(path))
        assert [b.seq for b in back] == list(range(13))
        assert [b.logs for b in back[1:]] == [{"loss": 1.0 / i} for i in range(1, 13)]

    def test_a_record_without_a_required_field_is_refused_alone(self, tmp_path):
        """A record lacking seq (or v, run_id, kind, time) is refused when written; the
        records around it are kept."""
        path = tmp_path / "events.parquet"
        writer = ParquetWriter(path, chunk_records=2)
        writer.write(HEADER.model_dump())
        broken = r.BatchEnd(run_id="run", seq=1, batch=0, step=0).model_dump()
        del broken["seq"]
        with pytest.raises(KeyError, match="seq"):
            writer.write(broken)
        writer.write(r.TrainEnd(run_id="run", seq=2).model_dump())
        writer.close()
        assert [rec.seq for rec in read_log(path)] == [0, 2]

    def test_a_chunk_that_fails_leaves_later_rows_their_payloads(self, tmp_path):
        """A record the columns cannot take fails its chunk (as a failed write); the records
        after it are written with their own payloads."""
        path = tmp_path / "events.parquet"
        writer = ParquetWriter(path, chunk_records=3)
        writer.write(HEADER.model_dump())
        writer.write(r.TrainBegin(run_id="run", seq=1, params={"a": 1}).model_dump())
        bad = r.BatchEnd(run_id="run", seq=2, batch=0, step=0).model_dump() | {"step": "x"}
        with pytest.raises(ValueError):
            writer.write(bad)  # the chunk ends here: its records are lost with it
        decision = r.StopTraining(run_id="run", seq=3, reason="why", evidence={"k": 1})
        writer.write(decision.model_dump())
        writer.write(r.TrainEnd(run_id="run", seq=4).model_dump())
        writer.flush()
        rows = pq.read_table(path / segment_names(path)[0]).to_pydict()
        assert rows["seq"] == [3, 4]
        assert rows["payload"][0] == '{"evidence":{"k":1}}' and rows["reason"] == ["why", None]
        assert rows["payload"][1] is None


    def test_an_interrupt_while_building_a_chunk_loses_nothing(self, tmp_path, monkeypatch):
        """Ctrl-C during a chunk's conversion: the records stay, and a later flush writes them."""
        import eventbus.parquet as parquet

        real = parquet._Piece
        calls = []

        def interrupted_once(*args):
            calls.append(1)
            if len(calls) == 1:
                raise KeyboardInterrupt
            return real(*args)

        monkeypatch.setattr(parquet, "_Piece", interrupted_once)
        records = [HEADER] + [r.BatchEnd(run_id="run", seq=i, batch=i, step=i,
                                         logs={"loss": float(i)}) for i in range(1, 6)]
        path = tmp_path / "events.parquet"
        writer = ParquetWriter(path, chunk_records=3)
        with pytest.raises(KeyboardInterrupt):
            for record in records:
                writer.write(record.model_dump())
        for record in records[3:]:
            writer.write(record.model_dump())
        writer.close()
        assert_reads_back(path, records)


class TestWriteTimeValues:
    def test_metrics_changed_after_write_are_recorded_as_written(self, tmp_path):
        """The log holds each record as it was when written, whatever its caller does to the
        dicts afterwards: values changed, names added and removed, evidence edited."""
        path = tmp_path / "events.parquet"
        writer = ParquetWriter(path, chunk_records=4)
        expected = []
        for record in mixed_records():
            data = record.model_dump()
            writer.write(data)
            expected.append(record)
            logs = data.get("logs")
            if logs is not None:
                logs.clear() if len(logs) % 2 else logs.update(loss=-1.0, extra=2.0)
            for name in ("evidence", "details", "params"):
                if name in data:
                    data[name]["changed"] = True
        writer.close()
        assert_reads_back(path, expected)

    def test_a_batch_record_keeps_the_metrics_as_written(self, tmp_path):
        """A batch record's metrics are copied when written, not when the chunk ends."""
        path = tmp_path / "events.parquet"
        writer = ParquetWriter(path, chunk_records=8)
        writer.write(HEADER.model_dump())
        data = r.BatchEnd(run_id="run", seq=1, batch=0, step=0,
                          logs={"loss": 0.25}).model_dump()
        writer.write(data)
        data["logs"]["loss"] = 99.0
        data["logs"]["acc"] = 1.0
        writer.close()
        assert [b.logs for b in list(read_log(path))[1:]] == [{"loss": 0.25}]

    def test_a_plugin_that_edits_event_logs_does_not_change_the_log(self, tmp_path):
        """Through the bus: the Parquet log and the JSON Lines log record the same values,
        those the training loop reported, although a plugin rewrites ``event.logs``."""

        class Meddler(Plugin):
            @hookimpl
            def on_batch_end(self, event):
                event.logs["loss"] = -1.0
                event.logs["meddled"] = 1.0

            @hookimpl
            def on_epoch_end(self, event):
                event.logs.clear()

        jsonl, parquet = tmp_path / "events.jsonl", tmp_path / "events.parquet"
        bus = Bus([Meddler()], log=[jsonl, parquet])
        bus.train_begin()
        for epoch in range(2):
            bus.epoch_begin(epoch)
            for batch in range(5):
                bus.batch_begin(batch)
                loss = NAN if batch == 3 else 1.0 / (batch + 1)  # NaN takes the checked path
                bus.batch_end(batch, {"loss": loss, "acc": 0.5})
            bus.epoch_end(epoch, {"loss": 0.5, "val_loss": 0.75})
        bus.train_end()
        bus.close()
        from_jsonl, from_parquet = list(read_log(jsonl)), list(read_log(parquet))
        assert len(from_parquet) == len(from_jsonl) > 20
        assert all(same(a, b) for a, b in zip(from_parquet, from_jsonl))
        batch_ends = [b for b in from_parquet if b.kind == "batch_end"]
        assert batch_ends[0].logs == {"loss": 1.0, "acc": 0.5}
        assert math.isnan(batch_ends[3].logs["loss"])
        assert [b.logs for b in from_parquet if b.kind == "epoch_end"] == [
            {"loss": 0.5, "val_loss": 0.75}] * 2


metric_pool = st.sampled_from(["loss", "acc", "val_loss", "lr", "gnorm"])
metric_value = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def batch_records(draw: st.DrawFn, seq: int) -> r.Record:
    """A batch record with metrics from a small pool, so chunks often share their names."""
    cls = draw(st.sampled_from([r.BatchEnd, r.BatchEnd, r.BatchBegin, r.TestBatchEnd]))
    names = draw(st.sampled_from([(), ("loss",), ("loss", "acc"), ("acc", "loss")])
                 | st.lists(metric_pool, unique=True, max_size=4))
    fields = {"run_id": draw(st.sampled_from(["run", "other"])), "seq": seq,
              "time": float(seq), "batch": draw(st.integers(0, 10**6)),
              "epoch": draw(st.none() | st.integers(0, 3)),
              "logs": {name: draw(metric_value) for name in names}}
    if cls is not r.TestBatchEnd:
        fields["step"] = draw(st.integers(0, 10**6))
    return cls(**fields)


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[r.Record], set[int]]:
    """A header, then batch records and any other records; and where to flush."""
    n = draw(st.integers(0, 60))
    records = [HEADER]
    for seq in range(1, n + 1):
        batch = draw(st.integers(0, 3))  # mostly batch records, as in training
        records.append(draw(batch_records(seq) if batch else any_record(seq=seq)))
    return records, draw(st.sets(st.integers(0, n), max_size=4))


class TestRoundTrip:
    @examples(FILES)  # up to 60 Parquet segments: ~125 ms
    @given(run=runs(), chunk=st.integers(1, 9), segment=st.integers(1, 25))
    def test_any_records_any_sizes_read_back_equal(self, tmp_path_factory, run, chunk,
                                                   segment):
        """Whatever the records, chunk and segment sizes and flushes: the segments, and then
        the compacted file, read back as the records written (NaN equal to NaN)."""
        records, flushes = run
        path = tmp_path_factory.mktemp("rt") / "events.parquet"
        writer = write_all(path, records, flush_after=flushes, chunk_records=chunk,
                           segment_records=segment)
        writer.flush()
        assert_reads_back(path, records)
        rows = sum(pq.read_table(path / name).num_rows for name in segment_names(path))
        assert rows == len(records)
        writer.close()
        assert len(segment_names(path)) == 1
        assert_reads_back(path, records)
