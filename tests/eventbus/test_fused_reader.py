"""The JSON Lines typed reader reads, checks and builds in one loop (for speed); it must take
and refuse exactly what the dict reader followed by ``typed`` does, with the same errors.

Logs here are real files: a header and batch and epoch records as the bus writes them, then
one line damaged in a way drawn by hypothesis (a field of the wrong type, one missing or extra,
a seq out of order, a kind that is a list, bytes that are no JSON, a line cut short...).
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile_logs import mutate_parquet_table, write_parquet

from eventbus import parquet
from eventbus.errors import LogError
from eventbus.jsonl import _line_at, iter_jsonl_dicts, read_jsonl, typed
from eventbus.parquet import ParquetWriter
from eventbus.records import KINDS

from record_strategies import same


def _log(batches: int) -> list[dict[str, Any]]:
    env = {"v": 1, "run_id": "r1"}
    records: list[dict[str, Any]] = [
        {**env, "seq": 0, "kind": "header", "time": 1.0, "created": "2026-01-01T00:00:00+00:00",
         "library": "eventbus", "plugins": [], "meta": {"learning_rate": 0.1}},
        {**env, "seq": 1, "kind": "train_begin", "time": 1.0, "logs": {}, "params": {}},
        {**env, "seq": 2, "kind": "epoch_begin", "time": 1.0, "logs": {}, "epoch": 0}]
    for batch in range(batches):
        for kind in ("batch_begin", "batch_end"):
            records.append({**env, "seq": len(records), "kind": kind, "time": 2.0 + batch,
                            "logs": {"loss": 0.5, "acc": "NaN"} if kind == "batch_end" else {},
                            "epoch": 0, "batch": batch, "step": batch})
    records.append({**env, "seq": len(records), "kind": "epoch_end", "time": 9.0,
                    "logs": {"loss": 0.5}, "epoch": 0})
    return records


DAMAGE = st.sampled_from([
    ("set", "batch", "1"), ("set", "batch", 1.0), ("set", "batch", True), ("set", "step", None),
    ("set", "epoch", None), ("set", "epoch", "0"), ("set", "time", 1), ("set", "time", "x"),
    ("set", "run_id", 7), ("set", "logs", []), ("set", "logs", {"loss": "high"}),
    ("set", "kind", ["batch_end"]), ("set", "kind", "nope"), ("set", "kind", "epoch_end"),
    ("set", "kind", "test_batch_end"), ("set", "seq", -1), ("set", "seq", "5"),
    ("set", "seq", 10**6), ("set", "v", 2), ("set", "v", True), ("set", "v", 0),
    ("set", "extra", 1), ("del", "step", None), ("del", "epoch", None), ("del", "seq", None),
    ("del", "kind", None), ("del", "v", None), ("del", "logs", None),
    ("line", b"not json", None), ("line", b"[1, 2]", None), ("line", b"", None),
    ("line", b'{"v": 1}', None), ("cut", None, None), ("none", None, None)])


def _outcome(read: Any) -> Any:
    """The records read, or the error (its type and message) and what was read before it."""
    got: list[Any] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for record in read():
                got.append(record)
        except (LogError, ValueError) as exc:
            return got, type(exc), str(exc), [str(w.message) for w in caught]
    return got, None, None, [str(w.message) for w in caught]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.integers(1, 6), at=st.integers(0, 100), damage=DAMAGE, last=st.booleans(),
       validate=st.booleans(),
       kinds=st.none() | st.just(("header", "epoch_end")) | st.just(tuple(KINDS)))
def test_the_one_loop_reader_agrees_with_dicts_then_typed(
        tmp_path: Path, batches: int, at: int, damage: tuple[str, Any, Any], last: bool,
        validate: bool, kinds: tuple[str, ...] | None) -> None:
    records = _log(batches)
    lines = [orjson.dumps(record) for record in records]
    index = len(lines) - 1 if last else at % len(lines)
    how, name, value = damage
    record = dict(records[index])
    if how == "set":
        record[name] = value
        lines[index] = orjson.dumps(record)
    elif how == "del":
        record.pop(name, None)
        lines[index] = orjson.dumps(record)
    elif how == "line":
        lines[index] = name
    text = b"\n".join(lines) + b"\n"
    if how == "cut":  # a crash mid-write: the last line torn, or whole without its newline
        text = text[:-(1 + (at % 3) * 5)]
    path = tmp_path / f"log-{at}-{index}.jsonl"
    path.write_bytes(text)

    one_loop = _outcome(lambda: read_jsonl(path, validate=validate, kinds=kinds))
    reference = _outcome(lambda: typed(iter_jsonl_dicts(path),
                                       lambda number: _line_at(path, number),
                                       validate=validate, kinds=kinds))
    assert one_loop[1:] == reference[1:]
    assert len(one_loop[0]) == len(reference[0])
    for a, b in zip(one_loop[0], reference[0]):
        assert type(a) is type(b)
        assert same(vars(a), vars(b))  # the fields as read (a damaged metric is kept as is)


def test_a_damaged_batch_record_is_named_by_line_and_field(tmp_path: Path) -> None:
    records = _log(3)
    records[5] = {**records[5], "step": "five"}
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    with pytest.raises(LogError, match=r"log\.jsonl:6: invalid batch_begin record: step"):
        list(read_jsonl(path))


@pytest.fixture(scope="module")
def parquet_table(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """A run of batch records (with nulls, a test and a predict batch) written by the
    Parquet writer, as one table."""
    records = _log(4)
    env = {"v": 1, "run_id": "r1", "time": 9.5}
    for kind, extra in (("test_batch_end", {"epoch": None, "batch": 0}),
                        ("predict_batch_end", {"batch": 0})):
        records.append({**env, "seq": len(records), "kind": kind, "logs": {"loss": 1.0},
                        **extra})
    where = tmp_path_factory.mktemp("parquet") / "run.parquet"
    with ParquetWriter(where) as writer:
        for record in records:
            writer.write(record)
    return pa.concat_tables(pq.read_table(file) for file in sorted(where.glob("*.parquet")))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), validate=st.booleans(),
       kinds=st.none() | st.just(("header", "epoch_end")) | st.just(tuple(KINDS)),
       null=st.none() | st.tuples(st.sampled_from(["run_id", "time", "epoch", "batch", "step"]),
                                  st.integers(3, 13)),
       epoch_in_predict=st.booleans())
def test_the_one_loop_parquet_reader_agrees_with_dicts_then_typed(
        tmp_path_factory: pytest.TempPathFactory, parquet_table: pa.Table, seed: int,
        validate: bool, kinds: tuple[str, ...] | None, null: tuple[str, int] | None,
        epoch_in_predict: bool) -> None:
    rng = random.Random(seed)
    table = parquet_table
    if null is not None:  # a null in a batch record's envelope or indices
        name, row = null
        values = table.column(name).to_pylist()
        values[row] = None
        table = table.set_column(table.column_names.index(name), name,
                                 pa.array(values, table.schema.field(name).type))
    if epoch_in_predict:  # an index the kind does not have: a field too many
        values = table.column("epoch").to_pylist()
        values[-1] = 0
        table = table.set_column(table.column_names.index("epoch"), "epoch",
                                 pa.array(values, table.schema.field("epoch").type))
    path = tmp_path_factory.mktemp("log") / "run.parquet"
    if rng.random() < 0.3:  # the hostile tests' damage, on top
        table, _ = mutate_parquet_table(rng, table)
        path, _ = write_parquet(rng, table, path.with_suffix(""))
    else:
        pq.write_table(table, path)

    def reference() -> Any:
        places = parquet._Places()
        return typed(parquet.iter_parquet_dicts(path, places=places), places,
                     validate=validate, kinds=kinds)

    one_loop = _outcome(lambda: parquet.read_parquet(path, validate=validate, kinds=kinds))
    expected = _outcome(reference)
    assert one_loop[1:] == expected[1:]
    assert len(one_loop[0]) == len(expected[0])
    for a, b in zip(one_loop[0], expected[0]):
        assert type(a) is type(b)
        assert same(vars(a), vars(b))  # the fields as read (a damaged metric is kept as is)


@pytest.mark.parametrize("form", ["jsonl", "parquet"])
@given(stop=st.integers(-1, 14), abandoned=st.sets(st.integers(0, 14)))
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_read_told_to_stop_ends_at_the_first_kept_record_left_out_past_it(
        tmp_path_factory: pytest.TempPathFactory, form: str, stop: int,
        abandoned: set[int]) -> None:
    records = _log(4)  # seqs 0 to 11; batch_begin at 3, 5, 7, 9
    path = tmp_path_factory.mktemp("stop") / f"run.{form}"
    if form == "jsonl":
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
        read = read_jsonl
    else:
        with ParquetWriter(path) as writer:
            for record in records:
                writer.write(record)
        read = parquet.read_parquet
    kinds = [kind for kind in KINDS if kind != "batch_begin"]
    got = [r.seq for r in read(path, kinds=kinds, stop=stop, kept=lambda s: s not in abandoned)]
    ends = next((r["seq"] for r in records if r["kind"] == "batch_begin" and r["seq"] > stop
                 and r["seq"] not in abandoned), None)
    assert got == [r["seq"] for r in records if r["kind"] != "batch_begin"
                   and (ends is None or r["seq"] < ends)]
