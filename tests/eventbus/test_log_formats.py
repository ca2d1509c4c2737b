"""The event logs: JSON Lines and Parquet round trips, torn tails, corruption, versions."""

from __future__ import annotations

import math
import warnings

import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import (
    Bus,
    LogCorruptError,
    RunWarning,
    SchemaVersionError,
    TornLogWarning,
    jsonl,
    read_log,
)
from eventbus import records as r
from eventbus.jsonl import JsonlWriter, truncate_torn_tail
from eventbus.log import last_seq
from eventbus.parquet import ParquetWriter

from hypothesis_profiles import FILES, examples
from record_strategies import any_record, same

HEADER = r.Header(run_id="run", seq=0, time=1.0, created="2026-01-01T00:00:00+00:00",
                  library="eventbus test", meta={"learning_rate": 0.1})
# Each example writes a log and reads it back; ``fmt`` is only the format's name.
tmp_settings = examples(FILES, function_fixture=True)


@st.composite
def runs(draw: st.DrawFn) -> list[r.Record]:
    """A header then records with strictly increasing seq."""
    n = draw(st.integers(0, 12))
    return [HEADER] + [draw(any_record(seq=i + 1)) for i in range(n)]


def write(writer_cls, path, records):
    with writer_cls(path) as writer:
        for record in records:
            writer.write(record.model_dump())
    return path


@pytest.fixture(params=["jsonl", "parquet"])
def fmt(request):
    return request.param


def log_path(tmp_path, fmt, name="events"):
    return tmp_path / f"{name}.{fmt}"


WRITERS = {"jsonl": JsonlWriter, "parquet": ParquetWriter}


@pytest.fixture(scope="module")
def long_log(tmp_path_factory):
    """A log of three 1 MiB reading pieces or more; a NaN in the second sends that piece
    down the careful path (line by line)."""
    path = tmp_path_factory.mktemp("long") / "long.jsonl"
    records = [HEADER] + [r.BatchEnd(run_id="run", seq=i, epoch=0, batch=i, step=i,
                                     logs={"loss": math.nan if i == 8_000 else 1.0 / i})
                          for i in range(1, 30_001)]
    write(JsonlWriter, path, records)
    assert path.stat().st_size > 3 * (1 << 20)
    back = list(read_log(path))
    assert len(back) == 30_001 and math.isnan(back[8_000].logs["loss"])
    assert back[29_999].logs["loss"] == 1 / 29_999
    return path.read_bytes()


class TestRoundTrip:
    @tmp_settings
    @given(records=runs())
    def test_every_record_reads_back_equal(self, tmp_path_factory, fmt, records):
        """record -> log -> record is the identity in both formats, NaN and inf included."""
        path = log_path(tmp_path_factory.mktemp("rt"), fmt)
        write(WRITERS[fmt], path, records)
        back = list(read_log(path))
        assert len(back) == len(records)
        for a, b in zip(back, records):
            assert same(a, b), (a, b)

    @tmp_settings
    @given(records=runs())
    def test_the_last_seq_is_the_highest_read(self, tmp_path_factory, fmt, records):
        path = write(WRITERS[fmt], log_path(tmp_path_factory.mktemp("r"), fmt), records)
        assert last_seq(path) == max(record.seq for record in read_log(path))

    @tmp_settings
    @given(records=runs())
    def test_validated_reading_agrees_with_fast_reading(self, tmp_path_factory, fmt, records):
        """validate=True and the default fast path give the same records."""
        path = log_path(tmp_path_factory.mktemp("v"), fmt)
        write(WRITERS[fmt], path, records)
        fast, slow = list(read_log(path)), list(read_log(path, validate=True))
        assert all(same(a, b) for a, b in zip(fast, slow)) and len(fast) == len(slow)

    @tmp_settings
    @given(records=runs(), wanted=st.sets(st.sampled_from(sorted(r.KINDS))))
    def test_reading_some_kinds_gives_exactly_those_records(self, tmp_path_factory, fmt,
                                                            records, wanted):
        """kinds= leaves out the other records, from a file of either format or from records."""
        path = log_path(tmp_path_factory.mktemp("k"), fmt)
        write(WRITERS[fmt], path, records)
        expected = [rec for rec in records if rec.kind in wanted]
        for source in (path, records):
            got = list(read_log(source, kinds=wanted))
            assert len(got) == len(expected)
            assert all(same(a, b) for a, b in zip(got, expected))

    @pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
    def test_strings_that_spell_a_float_read_back_as_strings(self, tmp_path, suffix):
        """A meta note "NaN" and a detail "~Infinity" are strings, a NaN meta value a float,
        in both formats (the words are escaped with "~" where the reader restores floats)."""
        path = tmp_path / f"run.{suffix}"
        details = {"word": "NaN", "escaped": "~Infinity", "both": [math.inf, "-Infinity"],
                   "near": "NaN~", "tilde": "~"}
        with pytest.warns(RunWarning, match="NaN"), \
                Bus(log=path, meta={"note": "NaN", "dropout": math.nan}) as bus:
            bus.record(r.Warning(message="NaN", details=details))
        header, warning = list(read_log(path))
        assert header.meta["note"] == "NaN" and math.isnan(header.meta["dropout"])
        assert warning.message == "NaN" and warning.details == details

    def test_nonfinite_values_are_stored_as_strings_in_jsonl(self, tmp_path):
        """JSON Lines spells NaN and the infinities as strings, never null."""
        path = write(JsonlWriter, tmp_path / "e.jsonl", [
            HEADER, r.EpochEnd(run_id="run", seq=1, epoch=0,
                               logs={"a": math.nan, "b": math.inf, "c": -math.inf, "d": 1.0})])
        line = path.read_bytes().splitlines()[1]
        assert orjson.loads(line)["logs"] == {"a": "NaN", "b": "Infinity", "c": "-Infinity",
                                              "d": 1.0}


class TestJsonlDamage:
    @pytest.mark.parametrize("change", ["field", "kind"])
    def test_a_field_or_kind_this_reader_does_not_know_is_said_newer_or_damaged(self, log,
                                                                             change):
        """Additive changes keep the schema version: a later release's optional field or new
        kind reaches an older reader, which cannot tell it from damage and says both."""
        path, _ = log
        lines = path.read_bytes().splitlines()
        record = orjson.loads(lines[3])
        if change == "field":
            record["new_optional_field"] = 1
        else:
            record["kind"] = "gradient_norm"
        lines[3] = orjson.dumps(record)
        path.write_bytes(b"\n".join(lines) + b"\n")
        with pytest.raises(LogCorruptError) as info:
            list(read_log(path))
        assert "written by a newer eventbus, or damaged: upgrade eventbus" in str(info.value)
        assert ("new_optional_field" if change == "field" else "gradient_norm") in str(info.value)

    @pytest.fixture()
    def log(self, tmp_path):
        records = [HEADER] + [r.BatchEnd(run_id="run", seq=i, batch=i, step=i,
                                         logs={"loss": 1.0 / i, "acc": math.nan})
                              for i in range(1, 8)]
        return write(JsonlWriter, tmp_path / "events.jsonl", records), records

    @examples(function_fixture=True)  # one log written for all examples; each rewrites cut.jsonl
    @given(data=st.data())
    def test_a_log_cut_at_any_byte_reads_back_as_a_prefix(self, log, tmp_path, data,
                                                          monkeypatch):
        """A crash can cut the file anywhere: what reads back is a prefix of the records."""
        path, records = log
        raw = path.read_bytes()
        cut = data.draw(st.integers(0, len(raw)))
        cut_path = tmp_path / "cut.jsonl"
        cut_path.write_bytes(raw[:cut])
        if cut == 0:
            with pytest.raises(LogCorruptError, match="empty log"):
                list(read_log(cut_path))  # an empty file is not a log
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            back = list(read_log(cut_path))
        assert all(same(a, b) for a, b in zip(back, records))
        whole_lines = raw[:cut].count(b"\n")
        assert len(back) in (whole_lines, whole_lines + 1)
        torn = cut > 0 and raw[cut - 1:cut] != b"\n" and len(back) == whole_lines
        assert any(issubclass(w.category, TornLogWarning) for w in caught) == torn
        # The highest seq, read from the end alone, in pieces down to a few bytes.
        for piece in (5, 64, 1 << 20):
            monkeypatch.setattr(jsonl, "_CHUNK", piece)
            assert last_seq(cut_path) == (back[-1].seq if back else None)

    def test_a_corrupt_line_in_the_middle_names_file_and_line(self, log):
        """Damage that is not at the end is an error with the line number."""
        path, _ = log
        lines = path.read_bytes().splitlines(keepends=True)
        lines[3] = b'{"v":1,"kind": garbage\n'
        path.write_bytes(b"".join(lines))
        with pytest.raises(LogCorruptError, match=r"events\.jsonl:4") as info:
            list(read_log(path))
        assert info.value.line == 4

    @pytest.mark.parametrize("damage", [
        b'{"v":1,"kind": garbage',  # not JSON
        b'{"kind":"batch_end"}',  # no schema version
        b"5",  # JSON, not a record
        b"",  # an empty line
        b'{"v":99,"kind":"batch_end"}',  # a newer schema
    ])
    @pytest.mark.parametrize("where", [2, 9_000, 15_000, 29_999])  # first piece, later ones
    def test_damage_anywhere_in_a_long_log_names_its_line(self, tmp_path, long_log, damage,
                                                           where):
        """Lines are read a megabyte at a time: the numbering holds across the pieces."""
        lines = long_log.split(b"\n")
        lines[where - 1] = damage
        path = tmp_path / "long.jsonl"
        path.write_bytes(b"\n".join(lines))
        expected = SchemaVersionError if b"99" in damage else LogCorruptError
        with pytest.raises(expected, match=rf"long\.jsonl:{where}\b") as info:
            list(read_log(path))
        assert info.value.line == where

    def test_of_two_equal_damaged_lines_the_first_is_named(self, tmp_path, long_log):
        """Equal short lines can be one object in memory; the error still names the first."""
        lines = long_log.split(b"\n")
        lines[9_999] = lines[10_009] = b"7"
        path = tmp_path / "long.jsonl"
        path.write_bytes(b"\n".join(lines))
        with pytest.raises(LogCorruptError, match=r"long\.jsonl:10000\b"):
            list(read_log(path))

    def test_an_unknown_kind_is_corrupt(self, log):
        """A record of a kind this library does not know is refused with its line."""
        path, _ = log
        lines = path.read_bytes().splitlines(keepends=True)
        lines[2] = orjson.dumps({"v": 1, "run_id": "run", "seq": 2, "kind": "explode",
                                 "time": 0.0}) + b"\n"
        path.write_bytes(b"".join(lines))
        with pytest.raises(LogCorruptError, match="unknown record kind 'explode'"):
            list(read_log(path))

    def test_a_reader_of_some_kinds_still_checks_every_line(self, log):
        """Lines of kinds left out are still parsed: damage or an unknown kind is an error."""
        path, _ = log
        lines = path.read_bytes().splitlines(keepends=True)
        lines[2] = orjson.dumps({"v": 1, "run_id": "run", "seq": 2, "kind": "explode",
                                 "time": 0.0}) + b"\n"
        lines[4] = b'{"v":1,"kind": garbage\n'
        path.write_bytes(b"".join(lines))
        with pytest.raises(LogCorruptError, match="unknown record kind 'explode'"):
            list(read_log(path, kinds={"header"}))
        del lines[2]
        path.write_bytes(b"".join(lines))
        with pytest.raises(LogCorruptError, match=r"events\.jsonl:4"):
            list(read_log(path, kinds={"header"}))

    def test_a_newer_major_schema_is_refused_clearly(self, tmp_path):
        """A log from a newer major schema version says so and asks for an upgrade."""
        data = HEADER.model_dump() | {"v": r.SCHEMA_VERSION + 1}
        path = tmp_path / "future.jsonl"
        path.write_bytes(orjson.dumps(data) + b"\n")
        with pytest.raises(SchemaVersionError, match="Upgrade eventbus"):
            list(read_log(path))

    def test_a_log_must_start_with_a_header(self, tmp_path):
        """A file of records with no header is not an event log."""
        path = tmp_path / "nohead.jsonl"
        path.write_bytes(orjson.dumps(r.TrainEnd(seq=1).model_dump()) + b"\n")
        with pytest.raises(LogCorruptError, match="header"):
            list(read_log(path))

    def test_append_cuts_a_torn_tail_first(self, log):
        """Reopening a crashed log for appending removes the torn last line, keeps the rest."""
        path, records = log
        path.write_bytes(path.read_bytes() + b'{"v":1,"ki')
        assert truncate_torn_tail(path) == len(b'{"v":1,"ki')
        with JsonlWriter(path, append=True) as writer:
            writer.write(r.TrainEnd(run_id="run", seq=8).model_dump())
        back = list(read_log(path))
        assert [b.seq for b in back] == [rec.seq for rec in records] + [8]


def test_a_parquet_log_of_many_metric_columns_reads_as_its_json_lines_twin(tmp_path):
    """From 65 metric columns on, each row's metrics are built from the values present (a
    log of thousands of names, each in one record, cost rows x columns to read: minutes).
    The records are those the JSON Lines log holds: a vector of one element, decisions' own
    columns after the metrics."""
    from eventbus import records as rec
    from eventbus.parquet import _SPARSE_FROM
    from plugins import EarlyStopping

    jsonl, parquet = tmp_path / "run.jsonl", tmp_path / "run.parquet"
    with Bus([EarlyStopping(monitor="loss", patience=1)], log=[jsonl, parquet]) as bus:
        bus.train_begin()
        for epoch in range(_SPARSE_FROM + 20):
            bus.epoch_begin(epoch)
            for batch in range(3):
                bus.batch_end(batch, {"loss": 1.0, f"b{epoch}": float(batch)})
            bus.epoch_end(epoch, {"loss": 1.0, f"m{epoch:03d}": 0.5, "f1": [0.25]})
            if bus.stop_training:
                bus.decide(rec.SetLearningRate(value=0.1, reason="go on"))
                bus.stop_training = False
        bus.train_end()
    from_jsonl, from_parquet = list(read_log(jsonl)), list(read_log(parquet))
    assert len(pq.read_schema(next(parquet.glob("*.parquet"))).names) > _SPARSE_FROM + 9
    assert len(from_jsonl) == len(from_parquet)
    assert all(same(a, b) for a, b in zip(from_jsonl, from_parquet))


class TestParquetLayout:
    def test_one_row_per_record_and_one_column_per_metric(self, tmp_path):
        """pandas reads the finished log as it is: metrics are float columns, NaN kept."""
        import pandas as pd

        records = [HEADER, r.EpochEnd(run_id="run", seq=1, epoch=0, logs={"loss": 0.5}),
                   r.EpochEnd(run_id="run", seq=2, epoch=1,
                              logs={"loss": math.nan, "val_acc": 0.75})]
        path = write(ParquetWriter, tmp_path / "events.parquet", records)
        frame = pd.read_parquet(path)
        assert list(frame["seq"]) == [0, 1, 2]
        assert list(frame["kind"].astype(str)) == ["header", "epoch_end", "epoch_end"]
        assert frame["logs.loss"].iloc[1] == 0.5 and math.isnan(frame["logs.loss"].iloc[2])
        assert pd.isna(frame["logs.val_acc"].iloc[1]) and frame["logs.val_acc"].iloc[2] == 0.75

    def test_each_flush_leaves_a_complete_segment(self, tmp_path):
        """Without close() (a crash), every flushed segment is a readable Parquet file."""
        path = tmp_path / "events.parquet"
        writer = ParquetWriter(path)
        writer.write(HEADER.model_dump())
        writer.write(r.EpochEnd(run_id="run", seq=1, epoch=0, logs={"loss": 1.0}).model_dump())
        writer.flush()
        writer.write(r.EpochEnd(run_id="run", seq=2, epoch=1, logs={"acc": 0.5}).model_dump())
        writer.flush()
        writer.write(r.EpochEnd(run_id="run", seq=3, epoch=2, logs={"acc": 0.6}).model_dump())
        # no close: the last record was never flushed, like the JSON Lines buffer
        segments = sorted(path.glob("seg-*.parquet"))
        assert len(segments) == 2
        for segment in segments:
            pq.read_table(segment)
        back = list(read_log(path))
        assert [b.seq for b in back] == [0, 1, 2]
        assert back[2].logs == {"acc": 0.5}

    def test_close_compacts_segments_into_one_file(self, tmp_path):
        """A finished log is one file with the union of the metric columns."""
        path = tmp_path / "events.parquet"
        with ParquetWriter(path) as writer:
            writer.write(HEADER.model_dump())
            writer.flush()
            writer.write(r.EpochEnd(run_id="run", seq=1, epoch=0, logs={"x": 1.0}).model_dump())
            writer.flush()
        files = list(path.glob("seg-*.parquet"))
        assert len(files) == 1
        assert "logs.x" in pq.read_table(files[0]).column_names

    def test_a_crash_during_compaction_loses_and_repeats_nothing(self, tmp_path):
        """Rows in both a compacted file and a leftover segment are read once."""
        import shutil

        path = tmp_path / "events.parquet"
        writer = ParquetWriter(path)
        writer.write(HEADER.model_dump())
        writer.flush()
        writer.write(r.TrainEnd(run_id="run", seq=1).model_dump())
        writer.flush()
        leftover = sorted(path.glob("seg-*.parquet"))[1]
        saved = tmp_path / "saved.parquet"
        shutil.copy(leftover, saved)
        writer.close()
        shutil.copy(saved, path / leftover.name)  # as if the delete never happened
        assert [b.seq for b in read_log(path)] == [0, 1]
        # A resumed run appends and compacts again: the file itself then holds each row once,
        # for pandas and pyarrow too.
        writer = ParquetWriter(path, append=True)
        writer.write(r.Resumed(run_id="run", seq=2, from_seq=1, initial_epoch=0).model_dump())
        writer.close()
        assert len(list(path.glob("*.parquet"))) == 1
        assert pq.read_table(path).column("seq").to_pylist() == [0, 1, 2]


def test_duckdb_reads_an_epoch_metric_of_a_long_epoch_as_the_docs_query_it(tmp_path):
    """docs/sinks/jsonl_parquet.md's recipe: ``read_json_auto(..., sample_size=-1)``. With
    DuckDB's default, the columns were typed from the first 20,480 lines, all batch records
    in a run of 10,300 batches an epoch, and ``logs.val_loss`` was not found."""
    duckdb = pytest.importorskip("duckdb")
    from eventbus import Bus

    path = tmp_path / "events.jsonl"
    with Bus(log=path) as bus:
        bus.train_begin({"epochs": 1})
        bus.epoch_begin(0)
        for batch in range(10_300):
            bus.batch_begin(batch)
            bus.batch_end(batch, {"loss": 1.0})
        bus.epoch_end(0, {"loss": 1.0, "val_loss": 0.4})
        bus.train_end()
    query = f"select max(logs.val_loss::DOUBLE) from read_json_auto('{path}', sample_size=-1)"
    assert duckdb.sql(query).fetchall() == [(0.4,)]
