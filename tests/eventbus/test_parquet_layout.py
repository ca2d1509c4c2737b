"""The Parquet log as analysts read it (layout 2): decisions' fields as columns, integers with
nulls as integers, vectors as lists, through pandas and DuckDB; logs of layout 1 still read."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eventbus import Bus, LogCorruptError, SchemaVersionError, read_log, replay
from eventbus import records as r
from eventbus.parquet import LAYOUT_KEY, LAYOUT_VERSION, ParquetWriter, find_kinds
from plugins import EarlyStopping, ReduceLROnPlateau

#: A log written by the Parquet writer before layout 2 (see data/make_parquet_layout1.py).
LAYOUT1 = Path(__file__).parent / "data" / "parquet_layout1.parquet"


def run(path: Path) -> None:
    """A run that stops early and cuts the learning rate, with a vector metric."""
    bus = Bus([EarlyStopping(monitor="val_loss", patience=1),
               ReduceLROnPlateau(monitor="val_loss", patience=1)], log=path, learning_rate=0.1)
    bus.train_begin({"epochs": 5, "steps": 2})
    for epoch in range(5):
        bus.epoch_begin(epoch)
        for batch in range(2):
            bus.batch_begin(batch)
            bus.batch_end(batch, {"loss": 1.0})
        bus.epoch_end(epoch, {"loss": 1.0, "val_loss": 1.0 + epoch, "f1": [0.5, 0.25]})
        if bus.stop_training:
            break
    bus.train_end()
    bus.close()


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("layout") / "run.parquet"
    run(path)
    return path


class TestForAnalysts:
    def test_pandas_reads_decisions_as_columns_and_integers_as_integers(self, log):
        frame = pd.read_parquet(log)
        for name in ("epoch", "batch", "step", "cause_seq"):
            assert str(frame[name].dtype) == "Int64", name  # pandas's integers with nulls
        assert frame["seq"].dtype == "int64" and frame["time"].dtype == "float64"
        decisions = frame[frame["reason"].notna()]
        assert list(decisions["kind"]) == ["stop_training", "set_learning_rate"]
        assert list(decisions["source"]) == ["EarlyStopping", "ReduceLROnPlateau"]
        assert list(decisions["code"]) == ["patience_exhausted", "plateau"]
        end = frame[(frame["kind"] == "epoch_end") & (frame["epoch"] == 1)]
        assert list(decisions["cause_seq"]) == [end["seq"].item()] * 2
        assert list(decisions["epoch"]) == [1, 1]
        assert frame["reason"].str.contains("val_loss did not improve").sum() == 2
        assert [list(v) for v in frame["logs.f1"].dropna()] == [[0.5, 0.25]] * 2

    def test_duckdb_queries_decisions_and_vectors(self, log):
        rows = duckdb.sql(f"select epoch, source, code, cause_seq, reason from '{log}' "
                          "where reason is not null order by seq").fetchall()
        assert [row[:3] for row in rows] == [(1, "EarlyStopping", "patience_exhausted"),
                                              (1, "ReduceLROnPlateau", "plateau")]
        assert all(type(row[3]) is int and "val_loss" in row[4] for row in rows)
        types = dict(duckdb.sql(f"select column_name, column_type from (describe select * "
                                f"from '{log}')").fetchall())
        assert types["epoch"] == types["cause_seq"] == "BIGINT"
        assert types["reason"] == "VARCHAR" and types["logs.f1"] == "DOUBLE[]"
        assert duckdb.sql(f"select \"logs.f1\"[1] from '{log}' where kind = 'epoch_end' "
                          "limit 1").fetchall() == [(0.5,)]

    def test_the_file_says_its_layout(self, log):
        (only,) = log.glob("seg-*.parquet")  # the finished run: one file
        assert pq.read_schema(only).metadata[LAYOUT_KEY] == str(LAYOUT_VERSION).encode()

    def test_the_evidence_stays_json_without_the_columns_fields(self, log):
        payload = pd.read_parquet(log, columns=["kind", "payload"])
        text = payload[payload["kind"] == "stop_training"]["payload"].item()
        assert '"evidence":{"monitor":"val_loss"' in text
        assert '"reason"' not in text and '"source"' not in text and '"code"' not in text


class TestLayout1:
    def test_a_log_of_layout_1_reads_as_it_did(self):
        """The stored file: every field of its decisions and outcomes in the payload."""
        assert LAYOUT_KEY not in (pq.read_schema(LAYOUT1).metadata or {})
        records = list(read_log(LAYOUT1, validate=True))
        decisions = [x for x in records if isinstance(x, r.Decision)]
        assert [(d.kind, d.source, d.code) for d in decisions] == [
            ("set_learning_rate", "ReduceLROnPlateau", "plateau"),
            ("stop_training", "EarlyStopping", "patience_exhausted"),
            ("set_learning_rate", "ReduceLROnPlateau", "plateau")]
        assert all(d.reason and type(d.cause_seq) is int for d in decisions)
        warning = next(x for x in records if x.kind == "warning")
        assert warning.source == "ReduceLROnPlateau" and warning.cause_seq == 7
        assert replay(LAYOUT1, verify=True).ok

    def test_a_log_of_layout_1_resumed_and_compacted_keeps_every_field(self, tmp_path):
        """A log begun by the older writer, continued by this one: its close merges the old
        segment with new ones, and the reader takes each row's fields from wherever they are."""
        path = tmp_path / "run.parquet"
        path.mkdir()
        old = list(read_log(LAYOUT1))
        last = old[-1].seq
        shutil.copy(LAYOUT1, path / f"seg-{0:012d}-{last:012d}.parquet")
        new = [r.Resumed(run_id=old[0].run_id, seq=last + 1, from_seq=last, initial_epoch=4),
               r.StopTraining(run_id=old[0].run_id, seq=last + 2, source="EarlyStopping",
                              reason="again", code=None, cause_seq=last + 1, epoch=4)]
        with ParquetWriter(path, append=True) as writer:
            for record in new:
                writer.write(record.model_dump())
        (merged,) = path.glob("seg-*.parquet")
        assert pq.read_schema(merged).metadata[LAYOUT_KEY] == str(LAYOUT_VERSION).encode()
        back = list(read_log(path, validate=True))
        assert len(back) == len(old) + 2
        assert all(a == b for a, b in zip(back, [*old, *new]))
        assert [x["kind"] for x in find_kinds(path, ["stop_training"])] == ["stop_training"] * 2


class TestDamage:
    def rewrite(self, log: Path, tmp_path: Path, change) -> Path:
        table = change(pq.read_table(log))
        out = tmp_path / "damaged.parquet"
        pq.write_table(table, out)
        return out

    def test_a_newer_layout_is_refused_clearly(self, log, tmp_path):
        newer = self.rewrite(log, tmp_path, lambda t: t.replace_schema_metadata(
            {**t.schema.metadata, LAYOUT_KEY: b"3"}))
        with pytest.raises(SchemaVersionError, match=r"damaged\.parquet: written in Parquet "
                                                     r"layout 3; this eventbus reads layout 2"):
            list(read_log(newer))

    def test_a_layout_that_is_no_number_is_corrupt(self, log, tmp_path):
        bad = self.rewrite(log, tmp_path, lambda t: t.replace_schema_metadata(
            {**t.schema.metadata, LAYOUT_KEY: b"two"}))
        with pytest.raises(LogCorruptError, match="layout version b'two' is not a positive"):
            list(read_log(bad))

    def test_a_field_in_its_column_and_in_the_payload_is_corrupt(self, log, tmp_path):
        def both(table):
            payload = table.column("payload").to_pylist()
            kinds = table.column("kind").to_pylist()
            row = kinds.index("stop_training")
            payload[row] = payload[row][:-1] + ',"reason":"other"}'
            i = table.schema.get_field_index("payload")
            return table.set_column(i, "payload", pa.array(payload, pa.string()))

        damaged = self.rewrite(log, tmp_path, both)
        with pytest.raises(LogCorruptError, match=r"reason is both in its column and in the "
                                                  r"payload") as info:
            list(read_log(damaged))
        assert info.value.field == "reason" and info.value.line is not None

    def test_a_field_column_of_another_type_names_the_column(self, log, tmp_path):
        damaged = self.rewrite(log, tmp_path, lambda t: t.set_column(
            t.schema.get_field_index("cause_seq"), "cause_seq",
            t.column("cause_seq").cast(pa.string())))
        with pytest.raises(LogCorruptError, match="column cause_seq is string, not integers"):
            list(read_log(damaged))

    def test_a_vector_column_of_text_is_refused(self, log, tmp_path):
        damaged = self.rewrite(log, tmp_path, lambda t: t.set_column(
            t.schema.get_field_index("logs.f1"), "logs.f1",
            t.column("logs.f1").cast(pa.list_(pa.string()))))
        with pytest.raises(LogCorruptError, match=r"column logs\.f1 is list<.*string>, not "
                                                  r"numbers or lists of numbers"):
            list(read_log(damaged))


def test_nan_in_a_vector_is_a_nan_not_a_null(tmp_path):
    path = tmp_path / "run.parquet"
    header = r.Header(run_id="x", seq=0, time=1.0, created="c", library="l")
    with ParquetWriter(path) as writer:
        writer.write(header.model_dump())
        writer.write(r.EpochEnd(run_id="x", seq=1, epoch=0,
                                logs={"f1": [math.nan, math.inf]}).model_dump())
    cell = pq.read_table(path).column("logs.f1").to_pylist()[1]
    assert math.isnan(cell[0]) and cell[1] == math.inf
