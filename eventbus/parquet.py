"""The Parquet event log: one row per record, one column per metric.

A Parquet file is only readable once its footer is written, so a single growing file would lose
everything in a crash. The log is therefore a directory of complete segment files, each written
to a temporary name and renamed into place when the bus flushes (every epoch end and every
decision, as the JSON Lines log): a crash loses no more than it does of the JSON Lines log.
``close()`` compacts the segments into one file, so pandas and pyarrow read a finished run as
one table (``pandas.read_parquet("events.parquet")``).

Columns: ``v``, ``run_id``, ``seq``, ``kind``, ``time``, ``epoch``, ``batch``, ``step``; one
float64 column ``logs.<name>`` per metric (null where a record does not have it; NaN and
infinities are stored as such); ``payload``, the record's other fields as JSON (the header's
plugins, a decision's reason and evidence, ...). pyarrow is imported only when a Parquet log is
opened.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from .errors import LogCorruptError
from .jsonl import _check_version, to_record
from .records import SCHEMA_VERSION, Record, decode_nonfinite, encode_nonfinite

__all__ = ["ParquetWriter", "iter_parquet_dicts", "read_parquet"]

_COLUMNS = ("v", "run_id", "seq", "kind", "time", "epoch", "batch", "step", "logs")
_NO_PAYLOAD = frozenset({
    "train_end", "epoch_begin", "epoch_end", "batch_begin", "batch_end", "test_begin",
    "test_end", "test_batch_begin", "test_batch_end", "predict_begin", "predict_end",
    "predict_batch_begin", "predict_batch_end"})
_SEGMENT = re.compile(r"^seg-(\d{12})-(\d{12})\.parquet$")
METRIC_PREFIX = "logs."
_REQUIRED = ("v", "run_id", "seq", "kind", "time", "epoch", "batch", "step", "payload")


def _segment_name(first: int, last: int) -> str:
    return f"seg-{first:012d}-{last:012d}.parquet"


def _segments(directory: Path) -> list[tuple[int, int, Path]]:
    found = []
    for entry in directory.iterdir():
        match = _SEGMENT.match(entry.name)
        if match:
            found.append((int(match[1]), int(match[2]), entry))
    # Lowest first seq first; of two that start together, the wider (a compacted one) first.
    return sorted(found, key=lambda s: (s[0], -s[1]))


class ParquetWriter:
    """Write records as Parquet segment files under the directory ``path``."""

    name = "parquet"

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False,
                 segment_records: int = 1 << 18):
        import pyarrow

        # Fail at open, not at the first flush; and pay pyarrow's first-array set-up (it
        # imports pandas when installed: about half a second) now, not at the end of epoch 1.
        pyarrow.array([0.0])

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        if not append:
            for _, _, seg in _segments(self.path):
                seg.unlink()
        self._limit = segment_records
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        self._n = 0
        self._v: list[int] = []
        self._run: list[str] = []
        self._seq: list[int] = []
        self._kind: list[str] = []
        self._time: list[float] = []
        self._epoch: list[int | None] = []
        self._batch: list[int | None] = []
        self._step: list[int | None] = []
        self._payload: list[bytes | None] = []
        # metric name -> (row indices, values): sparse until the segment is built
        self._metrics: dict[str, tuple[list[int], list[float]]] = {}

    def write(self, record: dict[str, Any]) -> None:
        get = record.get
        kind = record["kind"]
        self._v.append(record["v"])
        self._run.append(record["run_id"])
        self._seq.append(record["seq"])
        self._kind.append(kind)
        self._time.append(record["time"])
        self._epoch.append(get("epoch"))
        self._batch.append(get("batch"))
        self._step.append(get("step"))
        if kind in _NO_PAYLOAD:
            self._payload.append(None)
        else:
            extra = {k: v for k, v in record.items() if k not in _COLUMNS}
            self._payload.append(orjson.dumps(encode_nonfinite(extra)))
        logs = get("logs")
        if logs:
            row = self._n
            metrics = self._metrics
            for key, value in logs.items():
                column = metrics.get(key)
                if column is None:
                    column = metrics[key] = ([], [])
                column[0].append(row)
                column[1].append(value)
        self._n += 1
        if self._n >= self._limit:
            self.flush()

    def _table(self) -> Any:
        import numpy as np
        import pyarrow as pa

        n = self._n
        columns = {
            "v": _ints(self._v, pa.int32()),
            "run_id": pa.array(self._run, pa.string()).dictionary_encode(),
            "seq": _ints(self._seq, pa.int64()),
            "kind": pa.array(self._kind, pa.string()).dictionary_encode(),
            "time": _numeric(np.array(self._time, dtype=np.float64), pa.float64()),
            "epoch": _ints(self._epoch, pa.int64()),
            "batch": _ints(self._batch, pa.int64()),
            "step": _ints(self._step, pa.int64()),
        }
        for key in sorted(self._metrics):
            rows, values = self._metrics[key]
            data = np.zeros(n)
            missing = np.ones(n, dtype=bool)
            data[rows] = values
            missing[rows] = False
            columns[METRIC_PREFIX + key] = _numeric(data, pa.float64(), missing)
        columns["payload"] = pa.array(self._payload, pa.string())
        return pa.table(columns)

    def flush(self) -> None:
        if not self._n:
            return
        import pyarrow.parquet as pq

        table = self._table()
        name = _segment_name(self._seq[0], self._seq[-1])
        _write_atomically(pq, table, self.path / name)
        self._reset()

    def sync(self) -> None:
        self.flush()  # each segment is fsynced as it is written

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        compact(self.path)

    def __enter__(self) -> ParquetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _numeric(data: Any, arrow_type: Any, missing: Any = None) -> Any:
    """A pyarrow column from a NumPy array, null where ``missing`` is true."""
    import pyarrow as pa

    return pa.array(data, arrow_type, mask=missing)


def _ints(values: list[int | None], arrow_type: Any) -> Any:
    """An integer column, null where a value is None.

    Through NumPy: pyarrow converts a list of Python ints some fifty times slower here.
    """
    import numpy as np

    dtype = np.int32 if str(arrow_type) == "int32" else np.int64
    if None not in values:
        return _numeric(np.array(values, dtype=dtype), arrow_type)
    missing = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    data = np.fromiter((0 if v is None else v for v in values), dtype=dtype, count=len(values))
    return _numeric(data, arrow_type, missing)


def _write_atomically(pq: Any, table: Any, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as file:
        os.fsync(file.fileno())
    os.replace(tmp, target)


def compact(directory: str | os.PathLike[str]) -> None:
    """Merge the segments under ``directory`` into one file (a no-op for one segment).

    The merged file is in place before the segments go, so a crash in between leaves rows twice,
    never none; the reader drops the repeated sequence numbers.
    """
    import pyarrow.parquet as pq

    directory = Path(directory)
    segments = _segments(directory)
    if len(segments) < 2:
        return
    table = _concat([pq.read_table(seg) for _, _, seg in segments])
    merged = _segment_name(segments[0][0], max(last for _, last, _ in segments))
    _write_atomically(pq, table, directory / merged)
    for _, _, seg in segments:
        if seg.name != merged:
            seg.unlink()


def _concat(tables: list[Any]) -> Any:
    import pyarrow as pa

    # Segments can have different metric columns and dictionary types; promote to one schema.
    tables = [t.cast(pa.schema([
        f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f
        for f in t.schema])) for t in tables]
    return pa.concat_tables(tables, promote_options="default")


def iter_parquet_dicts(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every record of a Parquet log (a segment directory or one file) as a plain dict."""
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():
        files = [seg for _, _, seg in _segments(path)]
        if not files:
            raise LogCorruptError(f"{path}: no Parquet segments in this directory",
                                  path=str(path))
    else:
        files = [path]
    last_seq = -1
    header_seen = False
    for file in files:
        try:
            table = pq.read_table(file)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise LogCorruptError(f"{file}: not a readable Parquet file: {exc}",
                                  path=str(file)) from exc
        absent = [c for c in _REQUIRED if c not in table.column_names]
        if absent:
            raise LogCorruptError(f"{file}: not an event log (no {', '.join(absent)} "
                                  "column)", path=str(file))
        metric_columns = [(name[len(METRIC_PREFIX):], name) for name in table.column_names
                          if name.startswith(METRIC_PREFIX)]
        columns = table.to_pydict()
        for i, seq in enumerate(columns["seq"]):
            if seq <= last_seq:
                continue  # rows both in a compacted file and a leftover segment
            last_seq = seq
            record: dict[str, Any] = {
                "v": columns["v"][i], "run_id": columns["run_id"][i], "seq": seq,
                "kind": columns["kind"][i], "time": columns["time"][i]}
            version = record["v"]
            if version != SCHEMA_VERSION:
                _check_version(version, file, i + 1)
            for name in ("epoch", "batch", "step"):
                value = columns[name][i]
                if value is not None:
                    record[name] = value
            kind = record["kind"]
            if not header_seen:
                if kind != "header":
                    raise LogCorruptError(f"{file}: an event log starts with a header record; "
                                          f"found {kind!r}", path=str(file))
                header_seen = True
            payload = columns["payload"][i]
            if payload is not None:
                record.update(decode_nonfinite(orjson.loads(payload)))
            if kind in _NO_PAYLOAD or kind == "train_begin":
                record["logs"] = {key: columns[col][i] for key, col in metric_columns
                                  if columns[col][i] is not None}
            yield _restore_nones(record)


def _restore_nones(record: dict[str, Any]) -> dict[str, Any]:
    # epoch/batch/step columns are null where a kind has no such field or had None; put the
    # field back as None where the kind has it, so the record has its exact shape.
    from .records import KINDS

    cls = KINDS.get(record["kind"])
    if cls is not None:
        for name in ("epoch", "batch", "step"):
            if name in cls.model_fields and name not in record:
                record[name] = None
    return record


def read_parquet(path: str | os.PathLike[str], *, validate: bool = False) -> Iterator[Record]:
    """Every record of a Parquet log, typed; see :func:`eventbus.read_log`."""
    for number, record in enumerate(iter_parquet_dicts(path), 1):
        yield to_record(record, validate=validate, where=f"{path} (record {number})",
                        line=number)
