"""The Parquet event log: one row per record, one column per metric.

A Parquet file is only readable once its footer is written, so a single growing file would lose
everything in a crash. The log is therefore a directory of complete segment files, written when
the bus flushes (every epoch end and every decision, as the JSON Lines log) and, between
flushes, when a segment is full or has waited long enough: a crash loses at most the records
since the last flush, as with the JSON Lines log. ``close()`` leaves one file, so
pandas and pyarrow read a finished run as one table (``pandas.read_parquet("events.parquet")``).
:mod:`eventbus.parquet_segments` keeps the files; this module turns records into columns and
back.

Columns: ``v``, ``run_id``, ``seq``, ``kind``, ``time``, ``epoch``, ``batch``, ``step``; one
float64 column ``logs.<name>`` per metric (null where a record does not have it; NaN and
infinities are stored as such); ``payload``, the record's other fields as JSON (the header's
plugins, a decision's reason and evidence, ...). pyarrow is imported only when a Parquet log is
opened.

Writing: ``write`` keeps the record's fields (in one flat list, read out with one C-level call)
and a copy of its metrics (a payload is encoded there and then), so the log holds each record
as it was when written even if a plugin changes ``event.logs`` afterwards. Every
``chunk_records`` records become NumPy and pyarrow column pieces; a segment is those pieces
joined. Keeping whole segments of dicts instead is slower: their memory defeats
the cache.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Collection, Iterable, Iterator
from itertools import repeat
from operator import is_, itemgetter
from pathlib import Path
from time import monotonic
from typing import Any

import orjson

from .errors import LogCorruptError
from .jsonl import check_version, typed
from .lock import lock_exclusive
from .parquet_segments import SegmentStore, compact, segments
from .records import BATCH_FIELDS, SCHEMA_VERSION, Record, decode_nonfinite, encode_nonfinite
from .sink import Sink

__all__ = ["ParquetWriter", "compact", "find_kinds", "iter_parquet_dicts", "last_seq",
           "read_parquet"]

_IN_COLUMNS = frozenset(BATCH_FIELDS)  # a record's fields stored as columns, not in the payload
_NO_PAYLOAD = frozenset({
    "train_end", "epoch_begin", "epoch_end", "batch_begin", "batch_end", "test_begin",
    "test_end", "test_batch_begin", "test_batch_end", "predict_begin", "predict_end",
    "predict_batch_begin", "predict_batch_end"})
METRIC_PREFIX = "logs."
_REQUIRED_COLUMNS = ("v", "run_id", "seq", "kind", "time", "epoch", "batch", "step", "payload")
_READ_BATCH = 4096  # rows turned into Python objects at a time when reading


class ParquetWriter(Sink):
    """Write records as Parquet segment files under the directory ``path``: the event log as a
    sink.

    A segment is written at every ``flush()``, which returns once it is on disk, and between
    flushes, on a background thread, once it holds ``segment_records`` records or its oldest
    record waited ``segment_seconds`` (checked as each chunk ends). ``chunk_records`` is how
    many records wait as values before they become column pieces.
    """

    name = "parquet"

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False,
                 segment_records: int = 1 << 18, chunk_records: int = 4096,
                 segment_seconds: float = 10.0):
        import pyarrow

        if segment_records < 1 or chunk_records < 1:
            raise ValueError("segment_records and chunk_records must be at least 1")
        if not segment_seconds >= 0:
            raise ValueError("segment_seconds must be a number of seconds, 0 or more")
        # Fail at open, not at the first flush; and pay pyarrow's first-array set-up (it
        # imports pandas when installed: about half a second) now, not at the end of epoch 1.
        pyarrow.array([0.0])

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        # The directory is locked before a segment is removed: a second writer of the path is
        # refused before it can delete the first's segments.
        self._lock = os.open(self.path, os.O_RDONLY)
        try:
            lock_exclusive(self._lock, self.path)
        except BaseException:
            os.close(self._lock)
            raise
        # A writer dropped without close() lets the path go, as a dead process's would.
        self._unlock = weakref.finalize(self, os.close, self._lock)
        #: The name its failures are recorded under: which log, where there are several.
        self.name = f"parquet {self.path}"
        existing = segments(self.path)
        if not append:
            for _, _, seg in existing:
                seg.unlink()
        # The store merges segments as it writes them unless some were here before it.
        self._store = SegmentStore(self.path, merge=not (append and existing))
        self._limit = segment_records
        self._chunk = chunk_records
        self._seconds = segment_seconds
        self._chunk_began = monotonic()  # no record of the chunk being filled is older
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        # The chunk being filled: each record's fields, BATCH_FIELDS-many a row, one flat list
        # (read out as each record comes, so the record itself is not kept); and its metrics,
        # copied as they were when written.
        self._values: list[Any] = []
        self._logs: list[dict[str, Any]] = []
        self._rows = 0  # rows of the segment already in pieces
        self._due = min(self._chunk, self._limit)  # end the chunk when it holds this many
        self._segment_began: float | None = None  # no record of the segment is older
        self._pieces: list[_Piece] = []
        self._payloads: dict[int, bytes] = {}  # row in the segment -> payload JSON
        # Dictionary codes of the segment's run_id and kind columns, in order of appearance.
        self._run_ids: dict[str, int] = {}
        self._kinds: dict[str, int] = {}

    def write(self, record: dict[str, Any]) -> None:
        # The hot path: keep the record's fields and a copy of its metrics (the bus hands
        # plugins the same dict, and one may change it after this returns); columns are built
        # per chunk.
        try:
            fields = _IN_ORDER(record)
        except KeyError:
            fields = _some_fields_of(record)
        if record["kind"] in _NO_PAYLOAD:
            try:
                logs = record["logs"].copy()
            except (KeyError, AttributeError):
                logs = _metrics_of(record)
        else:
            logs = self._encode_payload(record)
        self._values.extend(fields)
        chunk = self._logs
        chunk.append(logs)
        if len(chunk) >= self._due:
            self._end_chunk()

    def _encode_payload(self, record: dict[str, Any]) -> dict[str, Any]:
        # Encoded now, not with the chunk: the JSON is the record as it was when written.
        extra = {k: v for k, v in record.items() if k not in _IN_COLUMNS}
        self._payloads[self._rows + len(self._logs)] = orjson.dumps(encode_nonfinite(extra))
        return _metrics_of(record)

    def _end_chunk(self) -> None:
        logs = self._logs
        if not logs:
            return
        values = self._values
        self._values, self._logs = [], []
        try:
            piece = _Piece(values, logs, self._run_ids, self._kinds)
        except Exception:
            # A record the columns cannot take: the chunk is lost (the caller sees the error,
            # as a failed write). Later rows take its place: its payloads must not stay.
            for row in [row for row in self._payloads if row >= self._rows]:
                del self._payloads[row]
            raise
        except BaseException:  # interrupted (Ctrl-C): the records are fine, keep them
            self._values, self._logs = values, logs
            raise
        self._pieces.append(piece)
        self._rows += len(logs)
        if self._segment_began is None:
            self._segment_began = self._chunk_began
        self._chunk_began = now = monotonic()
        if self._rows >= self._limit or now - self._segment_began >= self._seconds:
            self._write_segment()  # in the background: no flush was asked for
        else:
            self._due = min(self._chunk, self._limit - self._rows)

    def _table(self) -> Any:
        import pyarrow as pa

        pieces = self._pieces
        n = self._rows
        columns = {
            "v": _column(pieces, "v", pa.int32()),
            "run_id": _dictionary_column(pieces, "run_id", self._run_ids),
            "seq": _column(pieces, "seq", pa.int64()),
            "kind": _dictionary_column(pieces, "kind", self._kinds),
            "time": _column(pieces, "time", pa.float64()),
            "epoch": _column(pieces, "epoch", pa.int64()),
            "batch": _column(pieces, "batch", pa.int64()),
            "step": _column(pieces, "step", pa.int64()),
        }
        metrics = sorted({key for piece in pieces for key in piece.metrics})
        for key in metrics:
            columns[METRIC_PREFIX + key] = pa.concat_arrays([
                piece.metrics[key] if key in piece.metrics else pa.nulls(piece.n, pa.float64())
                for piece in pieces])
        if self._payloads:
            payload: list[bytes | None] = [None] * n
            for row, text in self._payloads.items():
                payload[row] = text
            columns["payload"] = pa.array(payload, pa.string())
        else:
            columns["payload"] = pa.nulls(n, pa.string())
        return pa.table(columns)

    def _take_segment(self) -> tuple[Any, int, int] | None:
        """The rows in pieces as a segment's (table, first seq, last seq); None if none."""
        if not self._rows:
            return None
        table = self._table()
        seq = table.column("seq")
        self._reset()
        return table, seq[0].as_py(), seq[-1].as_py()

    def _write_segment(self) -> None:
        segment = self._take_segment()
        if segment is not None:
            self._store.submit(*segment)

    def flush(self) -> None:
        self._end_chunk()  # submits the segment itself when that fills it
        self._write_segment()
        self._store.wait()

    def sync(self) -> None:
        self.flush()  # each segment is fsynced as it is written

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tail = None
        try:
            self._end_chunk()
            tail = self._take_segment()
        finally:
            try:
                self._store.close(tail)
            finally:
                self._unlock()  # the next writer may take the path

    def __enter__(self) -> ParquetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _metrics_of(record: dict[str, Any]) -> dict[str, Any]:
    logs = record.get("logs")
    return dict(logs) if logs else _NO_METRICS


_IN_ORDER = itemgetter(*BATCH_FIELDS)  # a batch record has them all: one C-level call
_REQUIRED_FIELDS = itemgetter("v", "run_id", "seq", "kind", "time")
_WIDTH = len(BATCH_FIELDS)
_NO_METRICS: dict[str, Any] = {}  # shared by every record without metrics; never changed


def _some_fields_of(record: dict[str, Any]) -> tuple[Any, ...]:
    """The values of a record without every field, in ``BATCH_FIELDS`` order: None for an
    optional field its kind lacks (``logs``, ``epoch``, ``batch``, ``step``); KeyError for a
    required one."""
    _REQUIRED_FIELDS(record)
    return tuple(map(record.get, BATCH_FIELDS))


class _Piece:
    """One chunk of records as column pieces: ``columns`` maps each fixed column to a NumPy
    (data, missing) pair, missing None when no value is null; ``metrics`` maps each metric
    name in the chunk to a float64 pyarrow array."""

    __slots__ = ("columns", "metrics", "n")

    def __init__(self, values: list[Any], logs: list[dict[str, Any]],
                 run_ids: dict[str, int], kinds: dict[str, int]) -> None:
        import numpy as np

        n = self.n = len(logs)
        # values holds each row's fields in BATCH_FIELDS order; the row's logs are in ``logs``
        v, run_id, seq, kind, time, _, epoch, batch, step = (
            values[i::_WIDTH] for i in range(_WIDTH))
        self.columns = {
            "run_id": (_codes(run_id, run_ids), None),
            "kind": (_codes(kind, kinds), None),
            "v": _ints(v, np.int32, constant=True),
            "seq": _ints(seq, np.int64),
            # fromiter reads None as NaN, as the NumPy conversion always did here
            "time": (np.fromiter(time, np.float64, n), None),
            "epoch": _ints(epoch, np.int64, constant=True),
            "batch": _ints(batch, np.int64),
            "step": _ints(step, np.int64),
        }
        self.metrics = _metric_columns(logs)


def _ints(values: list[Any], dtype: Any, *, constant: bool = False) -> tuple[Any, Any]:
    """An integer column piece, null where a value is None.

    ``constant``: the values are likely all the same object (``v``; ``epoch`` within an
    epoch), which ``list.count`` confirms at a fraction of the cost of converting them.
    """
    import numpy as np

    n = len(values)
    first = values[0]
    if constant and values.count(first) == n:
        if first is None:
            return np.zeros(n, dtype), np.ones(n, dtype=bool)
        return np.full(n, first, dtype), None
    try:
        return np.fromiter(values, dtype, n), None
    except TypeError:
        if None not in values:
            raise
    missing = np.fromiter(map(is_, values, repeat(None)), bool, n)
    data = np.array(values, dtype=object)
    data[missing] = 0
    return data.astype(dtype), missing


def _codes(values: list[str], codes: dict[str, int]) -> Any:
    """Dictionary codes of ``values``, adding new ones to the segment's ``codes``."""
    import numpy as np

    n = len(values)
    first = values[0]
    if values.count(first) == n:
        code = codes.get(first)
        if code is None:
            code = codes[first] = len(codes)
        return np.full(n, code, np.int32)
    for value in dict.fromkeys(values):
        codes.setdefault(value, len(codes))
    return np.fromiter(map(codes.__getitem__, values), np.int32, n)


def _metric_columns(logs: list[dict[str, Any]]) -> dict[str, Any]:
    """Metric name -> float64 pyarrow array (null where a row lacks the metric) for one chunk.

    pyarrow converts the dicts in C (a key a dict lacks is null), given the names: those of
    the last row when every row has as many (the common case, confirmed by there being no
    nulls), else the union of all rows' names.
    """
    import pyarrow as pa

    n = len(logs)
    present = sum(map(len, logs))  # metric values in the chunk
    if not present:
        return {}
    try:
        if present == n * len(logs[-1]):
            columns = _struct_columns(logs, logs[-1])
            if not any(column.null_count for column in columns.values()):
                return columns
        columns = _struct_columns(logs, sorted(set().union(*logs)))
        # Every null is a name a row lacks; one more is a None value, which NumPy (below) makes
        # NaN, as it always did.
        if sum(column.null_count for column in columns.values()) == n * len(columns) - present:
            return columns
    except (pa.ArrowException, TypeError, ValueError):
        pass  # a value pyarrow does not take as a float (a bool, a numeric string, a huge int)
    return _sparse_metric_columns(logs)


def _struct_columns(logs: list[dict[str, Any]], keys: Iterable[str]) -> dict[str, Any]:
    import pyarrow as pa

    struct = pa.array(logs, pa.struct([(key, pa.float64()) for key in keys]))
    return {field.name: struct.field(i) for i, field in enumerate(struct.type)}


def _sparse_metric_columns(logs: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics of a chunk one value at a time, through NumPy's float conversion."""
    import numpy as np
    import pyarrow as pa

    n = len(logs)
    sparse: dict[str, tuple[list[int], list[Any]]] = {}
    for row, metrics in enumerate(logs):
        for key, value in metrics.items():
            column = sparse.get(key)
            if column is None:
                column = sparse[key] = ([], [])
            column[0].append(row)
            column[1].append(value)
    columns = {}
    for key, (rows, values) in sparse.items():
        data = np.zeros(n)
        missing = np.ones(n, dtype=bool)
        data[rows] = values
        missing[rows] = False
        columns[key] = pa.array(data, pa.float64(), mask=missing)
    return columns


def _column(pieces: list[_Piece], name: str, arrow_type: Any) -> Any:
    """A segment's column from the NumPy pieces of its chunks."""
    import numpy as np
    import pyarrow as pa

    data = [piece.columns[name][0] for piece in pieces]
    missing = [piece.columns[name][1] for piece in pieces]
    if all(m is None for m in missing):
        mask = None
    else:
        mask = np.concatenate([np.zeros(p.n, dtype=bool) if m is None else m
                               for p, m in zip(pieces, missing)])
    return pa.array(np.concatenate(data), arrow_type, mask=mask)


def _dictionary_column(pieces: list[_Piece], name: str, codes: dict[str, int]) -> Any:
    import numpy as np
    import pyarrow as pa

    indices = np.concatenate([piece.columns[name][0] for piece in pieces])
    return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()),
                                          pa.array(list(codes), pa.string()))


def _log_files(path: Path) -> list[Path]:
    """The files of a Parquet log: its segments in order, or the one file."""
    if not path.is_dir():
        return [path]
    files = [seg for _, _, seg in segments(path)]
    if not files:
        raise LogCorruptError(f"{path}: no Parquet segments in this directory", path=str(path))
    return files


def _open(file: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(file)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise LogCorruptError(f"{file}: not a readable Parquet file: {exc}",
                              path=str(file)) from exc
    absent = [c for c in _REQUIRED_COLUMNS if c not in parquet.schema_arrow.names]
    if absent:
        raise LogCorruptError(f"{file}: not an event log (no {', '.join(absent)} column)",
                              path=str(file))
    return parquet


def _batches(file: Path, parquet: Any, columns: list[str] | None = None) -> Iterator[Any]:
    """The file's rows a batch at a time: a long run is never all in memory as Python objects."""
    try:
        yield from parquet.iter_batches(batch_size=_READ_BATCH, columns=columns)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise LogCorruptError(f"{file}: not a readable Parquet file: {exc}",
                              path=str(file)) from exc


def iter_parquet_dicts(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every record of a Parquet log (a segment directory or one file) as a plain dict."""
    from .records import KINDS

    # The epoch/batch/step fields each kind has: null in a column is None there, absent else.
    indices = {kind: frozenset(n for n in ("epoch", "batch", "step") if n in cls.model_fields)
               for kind, cls in KINDS.items()}
    with_logs = _NO_PAYLOAD | {"train_begin"}
    last_seq = -1
    header_seen = False
    for file in _log_files(Path(path)):
        parquet = _open(file)
        names = parquet.schema_arrow.names
        metric_columns = [name for name in names if name.startswith(METRIC_PREFIX)]
        metrics = [name[len(METRIC_PREFIX):] for name in metric_columns]
        row = 0
        for batch in _batches(file, parquet):
            columns = batch.to_pydict()
            rows = zip(*(columns[name] for name in (*_REQUIRED_COLUMNS, *metric_columns)))
            for i, (v, run_id, seq, kind, time, epoch, index, step, payload, *values) \
                    in enumerate(rows):
                if seq <= last_seq:
                    continue  # rows both in a compacted file and a leftover segment
                last_seq = seq
                if v != SCHEMA_VERSION:
                    check_version(v, file, row + i + 1)
                if not header_seen:
                    if kind != "header":
                        raise LogCorruptError(f"{file}: an event log starts with a header "
                                              f"record; found {kind!r}", path=str(file))
                    header_seen = True
                record: dict[str, Any] = {"v": v, "run_id": run_id, "seq": seq, "kind": kind,
                                          "time": time}
                has = indices.get(kind, ())
                if epoch is not None or "epoch" in has:
                    record["epoch"] = epoch
                if index is not None or "batch" in has:
                    record["batch"] = index
                if step is not None or "step" in has:
                    record["step"] = step
                if payload is not None:
                    record.update(decode_nonfinite(orjson.loads(payload)))
                if kind in with_logs:
                    record["logs"] = {key: value for key, value in zip(metrics, values)
                                      if value is not None}
                yield record
            row += batch.num_rows


def last_seq(path: str | os.PathLike[str]) -> int | None:
    """The highest seq in a Parquet log, from its ``seq`` column alone."""
    import pyarrow.compute as pc

    highest = None
    for file in _log_files(Path(path)):
        for batch in _batches(file, _open(file), columns=["seq"]):
            top = pc.max(batch.column("seq")).as_py()
            if top is not None and (highest is None or top > highest):
                highest = top
    return highest


def find_kinds(path: str | os.PathLike[str], kinds: Collection[str]) -> list[dict[str, Any]]:
    """The records of ``kinds`` in a Parquet log, found without reading the metric columns:
    dicts of the other fields (the payload's spread out), unchecked."""
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = pa.array(sorted(kinds), pa.string())
    found: list[dict[str, Any]] = []
    seen: set[int] = set()  # rows both in a compacted file and a leftover segment
    for file in _log_files(Path(path)):
        for batch in _batches(file, _open(file), columns=list(_REQUIRED_COLUMNS)):
            rows = batch.filter(pc.is_in(batch.column("kind"), value_set=wanted)).to_pylist()
            for row in rows:
                if row["seq"] in seen:
                    continue
                seen.add(row["seq"])
                payload = row.pop("payload")
                try:
                    row.update(orjson.loads(payload) if payload is not None else {})
                except (orjson.JSONDecodeError, TypeError, ValueError):
                    pass  # damaged: the reader reports it where it is
                found.append(row)
    return found


def read_parquet(path: str | os.PathLike[str], *, validate: bool = False,
                 kinds: Collection[str] | None = None) -> Iterator[Record]:
    """Every record of a Parquet log, typed; see :func:`eventbus.read_log`."""
    return typed(iter_parquet_dicts(path), lambda number: f"{path} (record {number})",
                 validate=validate, kinds=kinds)
