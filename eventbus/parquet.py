"""The Parquet event log: one row per record, one column per metric.

A Parquet file is only readable once its footer is written, so a single growing file would lose
everything in a crash. The log is therefore a directory of complete segment files, written when
the bus flushes (every epoch end and every decision, as the JSON Lines log) and, between
flushes, when a segment is full or has waited long enough: a crash loses at most the records
since the last flush, as with the JSON Lines log. ``close()`` leaves one file, so
pandas and pyarrow read a finished run as one table (``pandas.read_parquet("events.parquet")``).
:mod:`eventbus.parquet_segments` keeps the files; this module turns records into columns and
back.

Columns (layout 2, :mod:`eventbus.parquet_layout`): ``v``, ``run_id``, ``seq``, ``kind``,
``time``, ``epoch``, ``batch``, ``step``; decisions' and outcomes' ``source``, ``reason``,
``code``, ``cause_seq``; one float64 column ``logs.<name>`` per metric (null where a record does
not have it; NaN and infinities are stored as such), a column of lists of float64 for a vector
metric; ``payload``, the record's other fields as JSON (the header's plugins, a decision's
evidence, ...). pyarrow is imported only when a Parquet log is opened.

Writing: ``write`` keeps the record's fields (in one flat list, read out with one C-level call)
and a copy of its metrics (a payload is encoded there and then), so the log holds each record
as it was when written even if a plugin changes ``event.logs`` afterwards. Every
``chunk_records`` records become NumPy and pyarrow column pieces; a segment is those pieces
joined. Keeping whole segments of dicts instead is slower: their memory defeats
the cache.

Reading: a file's rows a batch at a time, never the whole run as Python objects; a batch of
4096 rows, or fewer where the footer says they are large. A log is untrusted input, and a few
kilobytes of Parquet can stand for gigabytes (one dictionary value in every row), so each row
group is checked before it is decoded, and each batch as it is read, against what the log may
decode to (:class:`~eventbus.parquet_layout.DecodeBudget`: :data:`MAX_RECORD_BYTES` plus
:data:`MAX_DECODED_RATIO` times its files' size; a record at most :data:`MAX_RECORD_BYTES`).
"""

from __future__ import annotations

import math
import os
import weakref
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Iterator
from itertools import repeat
from operator import is_, itemgetter
from pathlib import Path
from time import monotonic
from typing import Any

import orjson

from .errors import LogCorruptError, LogError, SchemaVersionError
from .jsonl import (
    SKIP,
    VALIDATE,
    Where,
    bad_seq,
    built,
    check_version,
    read_plan,
    seq_error,
)
from .lock import lock_exclusive
from .parquet_layout import (
    FIELD_COLUMNS,
    LAYOUT_KEY,
    LAYOUT_VERSION,
    MAX_DECODED_RATIO,
    MAX_RECORD_BYTES,
    METRIC_PREFIX,
    DecodeBudget,
    as_vectors,
    layout_metadata,
    vector_type,
)
from .parquet_segments import SegmentStore, compact, open_regular, remove_temporaries, segments
from .records import (
    BATCH_FIELDS,
    SCHEMA_VERSION,
    Record,
    decode_nonfinite,
    encode_nonfinite,
    set_model_dict,
    writable_text,
)
from .sink import FailingWrites, Sink
from .terminal import printable

__all__ = ["MAX_DECODED_RATIO", "MAX_METRIC_COLUMNS", "MAX_RECORD_BYTES", "ParquetWriter",
           "compact", "find_kinds", "iter_parquet_dicts", "last_seq", "read_parquet"]

_IN_COLUMNS = frozenset(BATCH_FIELDS)  # a record's fields stored as columns, not in the payload
_NO_PAYLOAD = frozenset({
    "train_end", "epoch_begin", "epoch_end", "batch_begin", "batch_end", "test_begin",
    "test_end", "test_batch_begin", "test_batch_end", "predict_begin", "predict_end",
    "predict_batch_begin", "predict_batch_end"})
_REQUIRED_COLUMNS = ("v", "run_id", "seq", "kind", "time", "epoch", "batch", "step", "payload")
_READ_BATCH = 4096  # the most rows turned into Python objects at a time when reading
#: The most metric names (one column each) a chunk of records may hold. A Parquet footer
#: describes every column of every row group, and readers refuse one over 10**6 entries or
#: 100 MB (pyarrow's limits: about 500,000 columns); well before that, a segment a million
#: columns wide takes over a minute and 6 GB to write. 10,000 is far beyond any real run.
MAX_METRIC_COLUMNS = 10_000


class ParquetWriter(Sink):
    """Write records as Parquet segment files under the directory ``path``: the event log as a
    sink.

    A segment is written at every ``flush()``, which returns once it is on disk, and between
    flushes, on a background thread, once it holds ``segment_records`` records or its oldest
    record waited ``segment_seconds`` (checked as each chunk ends). ``chunk_records`` is how
    many records wait as values before they become column pieces.

    A segment that cannot be written (a full disk, a quota) on a bus loses nothing: it is kept
    and written again at the next flush, and the fault is reported once (a ``sink_failed``
    naming the errno). Only when more than ``max_kept_bytes`` of segments wait does the
    failure end the writer. ``close()`` tries for :data:`~eventbus.sink.CLOSE_RETRY_SECONDS`,
    then raises an OSError saying how many records were lost.

    ``append``: as for :class:`~eventbus.jsonl.JsonlWriter` (left out, the bus it is given to
    decides: ``resume=True`` continues the log).
    """

    name = "parquet"
    #: The run's own event log: a bus resumes from it (``eventbus.log.log_path``).
    event_log = True

    def __init__(self, path: str | os.PathLike[str], *, append: bool | None = None,
                 segment_records: int = 1 << 18, chunk_records: int = 4096,
                 segment_seconds: float = 10.0, max_kept_bytes: int = 256 << 20):
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
        self._segment_store: SegmentStore | None = None
        remove_temporaries(self.path)  # left by a process that died mid-run: whatever comes
        if append is not None:
            self.settle(append=append)
        self._limit = segment_records
        self._chunk = chunk_records
        self._seconds = segment_seconds
        self._chunk_began = monotonic()  # no record of the chunk being filled is older
        self._closed = False
        self._max_kept = max_kept_bytes
        self._run: Any = None
        self._failing = FailingWrites()
        self._chunk_no = 0
        self._reset()

    # The segment being filled. The chunk: each record's fields, BATCH_FIELDS-many a row, one
    # flat list (read out as each record comes, so the record itself is not kept), and its
    # metrics, copied as they were when written; the chunks made into pieces; each row's
    # payload JSON and values of FIELD_COLUMNS (decisions and outcomes), by row in the
    # segment; the dictionary codes of the run_id and kind columns, in order of appearance.
    _values: list[Any]
    _logs: list[dict[str, Any]]
    _chunk_no: int  # the chunk's number: a new one for each new chunk
    _due: int  # end the chunk when it holds this many
    _segment_began: float | None  # no record of the segment is older
    _pieces: list[_Piece]
    _payloads: dict[int, bytes]
    _fields: dict[int, tuple[Any, ...]]
    _run_ids: dict[str, int]
    _kinds: dict[str, int]

    def _reset(self) -> None:
        # One statement: an interrupt leaves the state all old or all new (one segment's
        # payloads with another's rows would be put on the wrong records).
        (self._values, self._logs, self._chunk_no, self._due, self._segment_began,
         self._pieces, self._payloads, self._fields, self._run_ids, self._kinds) = (
            [], [], self._chunk_no + 1, min(self._chunk, self._limit), None,
            [], {}, {}, {}, {})

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

    def write_finite(self, record: dict[str, Any]) -> None:
        """``write`` for a batch record the bus has checked (the sink contract's fast path):
        its metrics are a dict of finite floats, its fields in ``BATCH_FIELDS`` order."""
        self._values.extend(record.values())
        chunk = self._logs
        chunk.append(record["logs"].copy())
        if len(chunk) >= self._due:
            self._end_chunk()

    @property
    def _rows(self) -> int:
        """Rows of the segment already in pieces (counted from them, never kept apart from
        them: an interrupt cannot make the two disagree)."""
        return sum(piece.n for piece in self._pieces)

    def _in_pieces(self) -> int:
        """Rows at the head of the chunk being filled that are in the last piece already: an
        interrupt came between the piece's append and the chunk's reset (0 as a rule)."""
        pieces = self._pieces
        return pieces[-1].n if pieces and pieces[-1].chunk == self._chunk_no else 0

    def _encode_payload(self, record: dict[str, Any]) -> dict[str, Any]:
        # Encoded now, not with the chunk: the JSON is the record as it was when written.
        row = self._rows + len(self._logs) - self._in_pieces()
        extra = {k: v for k, v in record.items() if k not in _IN_COLUMNS}
        if not _FIELD_NAMES.isdisjoint(extra):
            values = []
            for name, kind in FIELD_COLUMNS.items():
                value = extra.get(name)
                # A value the column cannot hold (a record not from a bus) stays in the payload;
                # None is a null, which the reader reads as None for a kind with the field.
                if value is None or (type(value) is kind and (
                        kind is str or -(1 << 63) <= value < (1 << 63))):
                    extra.pop(name, None)
                    values.append(value)
                else:
                    values.append(None)
            self._fields[row] = tuple(values)
        try:
            self._payloads[row] = orjson.dumps(encode_nonfinite(extra))
        except orjson.JSONEncodeError:  # a lone surrogate in a message; else raises again
            self._payloads[row] = orjson.dumps(encode_nonfinite(writable_text(extra)))
        return _metrics_of(record)

    def _end_chunk(self) -> None:
        # Each step leaves the chunk whole somewhere, so an interrupt (Ctrl-C) at any line
        # loses at most the record it cut: rows are never held only in locals.
        done = self._in_pieces()
        if done:  # in the last piece already (an interrupt after its append): not twice
            self._values, self._logs, self._chunk_no = (
                self._values[done * _WIDTH:], self._logs[done:], self._chunk_no + 1)
        logs, values = self._logs, self._values
        if not logs:
            return
        if len(values) != len(logs) * _WIDTH:  # a row cut between its fields and its metrics
            del values[len(logs) * _WIDTH:]
        try:
            piece = _Piece(values, logs, self._run_ids, self._kinds)
        except Exception:
            # A record the columns cannot take: the chunk is lost (the caller sees the error,
            # as a failed write). Later rows take its place: its payloads must not stay.
            for row in [row for row in self._payloads if row >= self._rows]:
                del self._payloads[row]
                self._fields.pop(row, None)
            self._values, self._logs, self._chunk_no = [], [], self._chunk_no + 1
            raise
        piece.chunk = self._chunk_no
        self._pieces.append(piece)
        self._values, self._logs, self._chunk_no = [], [], self._chunk_no + 1
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
        # Few rows have these (decisions and outcomes): filled in from the rows that do.
        for i, (name, kind) in enumerate(FIELD_COLUMNS.items()):
            arrow_type = pa.int64() if kind is int else pa.string()
            if not self._fields:
                columns[name] = pa.nulls(n, arrow_type)
                continue
            cells: list[Any] = [None] * n
            for row, values in self._fields.items():
                if row < n:  # (a row whose write a Ctrl-C cut short was never added)
                    cells[row] = values[i]
            columns[name] = pa.array(cells, arrow_type)
        metrics = sorted({key for piece in pieces for key in piece.metrics})
        for key in metrics:
            parts = [piece.metrics.get(key) for piece in pieces]
            if any(part is not None and part.type == vector_type() for part in parts):
                # A vector metric in any chunk: the segment's column holds lists.
                parts = [as_vectors(part) for part in parts]
                arrow_type = vector_type()
            else:
                arrow_type = pa.float64()
            columns[METRIC_PREFIX + key] = pa.concat_arrays([
                pa.nulls(piece.n, arrow_type) if part is None else part
                for piece, part in zip(pieces, parts)])
        if self._payloads:
            payload: list[bytes | None] = [None] * n
            for row, text in self._payloads.items():
                if row < n:
                    payload[row] = text
            columns["payload"] = pa.array(payload, pa.string())
        else:
            columns["payload"] = pa.nulls(n, pa.string())
        return pa.table(columns).replace_schema_metadata(layout_metadata())

    def _take_segment(self) -> tuple[Any, int, int] | None:
        """The rows in pieces as a segment's (table, first seq, last seq); None if none. The
        pieces stay until the store has the segment (see :meth:`_write_segment`)."""
        self._drop_handed_over()
        if not self._rows:
            return None
        table = self._table()
        seq = table.column("seq")
        return table, seq[0].as_py(), seq[-1].as_py()

    def _drop_handed_over(self) -> None:
        """Pieces the store has already (an interrupt came after it took their segment and
        before they were reset) go, so no record is written twice; the rows after them move
        up, with their payloads, in one statement."""
        if self._segment_store is None:
            return  # no store yet: nothing handed over
        pieces, through = self._pieces, self._segment_store.through
        n = 0
        while n < len(pieces) and int(pieces[n].columns["seq"][0][0]) <= through:
            n += 1
        if not n:
            return
        rows = sum(piece.n for piece in pieces[:n])
        self._pieces, self._payloads, self._fields = pieces[n:], {
            row - rows: text for row, text in self._payloads.items() if row >= rows}, {
            row - rows: values for row, values in self._fields.items() if row >= rows}

    def _write_segment(self) -> None:
        segment = self._take_segment()
        if segment is not None:
            store = self._store
            try:
                store.submit(*segment)  # (a segment the store has already is not taken twice)
            except BaseException:  # a Ctrl-C before it was queued: kept for the next wait
                if not store.holds(segment[1]):
                    store.kept.append(segment)
                raise
            finally:
                # The store has the rows (queued or kept), or submit's error ends the writer:
                # the segment starts again. An interrupt before this line leaves the pieces,
                # and the next submit of the same rows is passed over.
                if store.holds(segment[1]):
                    self._reset()
            if store.kept and store.kept_bytes > self._max_kept:
                store.wait()  # written now, or its error ends the writer: memory is bounded

    @property
    def behind(self) -> bool:
        """Whether records it could not write wait for its next flush (a full disk)."""
        return self._failing.fault is not None

    def settle(self, *, append: bool) -> None:
        """Continue the log at the path (``append``) or start it afresh, its segments
        removed; once, before the first segment is written (the bus does it as it takes the
        writer; see ``JsonlWriter``)."""
        if self._segment_store is not None:
            return
        existing = segments(self.path)
        if not append:
            for _, _, seg in existing:
                seg.unlink()
        # The store merges segments as it writes them unless some were here before it.
        self._segment_store = SegmentStore(self.path, merge=not (append and existing))

    @property
    def _store(self) -> SegmentStore:
        if self._segment_store is None:  # written to without a bus: a log of its own
            self.settle(append=False)
        return self._segment_store  # type: ignore[return-value]

    def open(self, run: Any) -> None:
        self._run = run  # to report a fault it keeps going through

    def flush(self) -> None:
        self._end_chunk()  # submits the segment itself when that fills it
        self._write_segment()
        store = self._store
        try:
            store.wait()
        except OSError as exc:
            if self._run is None or store.kept_bytes > self._max_kept:
                raise
            self._failing.failed(self._run, self.name, "flush", exc,
                                 f"{store.kept_records} records kept")
            return
        self._failing.over()

    def sync(self) -> None:
        self.flush()  # each segment is fsynced as it is written

    def close(self) -> None:
        if self._closed:
            self._unlock()  # (once only: an interrupt may have come just before it)
            return
        # An interrupt before the store closes leaves everything as it was: close() again
        # (the bus does, once) finishes it. One after, or during, still lets the path go.
        tail = error = None
        try:
            self._end_chunk()
            tail = self._take_segment()
        except Exception as exc:  # a chunk the columns cannot take: the rest still closes
            error = exc
        try:
            self._closed = True  # the store closes once
            if tail is not None or self._segment_store is not None:
                self._store.close(tail)  # (undecided with nothing written: left as it was)
        finally:
            self._unlock()  # the next writer may take the path
        if error is not None:
            raise error

    def forget_unflushed(self) -> None:
        """Drop the records not yet handed to the store, as a kill now would lose them (see
        ``Recorder.fan_out``: a record whose way to the sinks an interrupt cut)."""
        self._reset()

    def __enter__(self) -> ParquetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_FIELD_NAMES = frozenset(FIELD_COLUMNS)


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

    __slots__ = ("chunk", "columns", "metrics", "n")

    def __init__(self, values: list[Any], logs: list[dict[str, Any]],
                 run_ids: dict[str, int], kinds: dict[str, int]) -> None:
        import numpy as np

        n = self.n = len(logs)
        self.chunk = -1  # the number of the chunk it was made of (ParquetWriter._in_pieces)
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
    if present != n * len(logs[-1]) or len(logs[-1]) > MAX_METRIC_COLUMNS:
        names = _metric_names(logs)
    else:
        try:
            columns = _struct_columns(logs, logs[-1])
            if not any(column.null_count for column in columns.values()):
                return columns
        except (pa.ArrowException, TypeError, ValueError):
            return _sparse_metric_columns(logs)  # a value pyarrow does not take (see below)
        names = _metric_names(logs)
    try:
        columns = _struct_columns(logs, sorted(names))
        # Every null is a name a row lacks; one more is a None value, which NumPy (below) makes
        # NaN, as it always did.
        if sum(column.null_count for column in columns.values()) == n * len(columns) - present:
            return columns
    except (pa.ArrowException, TypeError, ValueError):
        pass  # a value pyarrow does not take as a float (a bool, a numeric string, a huge int)
    return _sparse_metric_columns(logs)


def _metric_names(logs: list[dict[str, Any]]) -> set[str]:
    """Every metric name in a chunk; :class:`LogError` for more than a Parquet log takes."""
    names: set[str] = set().union(*logs)
    if len(names) > MAX_METRIC_COLUMNS:
        raise LogError(f"a Parquet log stores each metric name as a column; these records have "
                       f"{len(names):,} names, more than parquet.MAX_METRIC_COLUMNS "
                       f"({MAX_METRIC_COLUMNS:,}): writing them takes minutes and gigabytes, "
                       "and Parquet readers refuse a file that wide. Keep this run's log in "
                       "JSON Lines")
    return names


def _struct_columns(logs: list[dict[str, Any]], keys: Iterable[str]) -> dict[str, Any]:
    import pyarrow as pa

    struct = pa.array(logs, pa.struct([(key, pa.float64()) for key in keys]))
    return {field.name: struct.field(i) for i, field in enumerate(struct.type)}


def _sparse_metric_columns(logs: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics of a chunk one value at a time, through NumPy's float conversion; a metric
    that is a vector in some row becomes a column of lists (see :func:`vector_type`)."""
    import numpy as np
    import pyarrow as pa

    n = len(logs)
    sparse: dict[str, tuple[list[int], list[Any]]] = {}
    vectors: set[str] = set()
    for row, metrics in enumerate(logs):
        for key, value in metrics.items():
            column = sparse.get(key)
            if column is None:
                column = sparse[key] = ([], [])
            column[0].append(row)
            column[1].append(value)
            if type(value) is list:
                vectors.add(key)
    columns = {}
    for key, (rows, values) in sparse.items():
        if key in vectors:
            cells: list[Any] = [None] * n
            for row, value in zip(rows, values):
                cells[row] = value if type(value) is list else [value]
            columns[key] = pa.array(cells, vector_type())
            continue
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


class _LogFiles:
    """The files of a Parquet log (a segment directory or one file), opened in order.

    The log's writer may be compacting it as it is read: ``close()`` renames the merged file
    into place, then removes the segments it holds. A segment listed before that and opened
    after it is gone; the listing is then taken again and the reading goes on in the merged
    file. So rows can be in two files, as after a crash between a compaction and the removal
    of the segments it merged: the reader skips the rows at the start of a file up to
    ``covered``, read already, and a segment whose name says its rows are all read already,
    unopened, as :func:`compact` skips it.

    ``covered``: the highest seq read so far, set by the reader; None before the first file.
    ``batches`` reads the file last given, within what the log may decode to (``budget``).
    """

    _RETRIES = 100  # listings taken again before a log that never settles is given up on

    def __init__(self, path: Path) -> None:
        self.path = path
        self.covered: int | None = None
        self.budget = DecodeBudget()
        self._source: Any = None  # the pyarrow file the last file given was opened from

    def batches(self, file: Path, parquet: Any, columns: list[str] | None = None
                ) -> Iterator[Any]:
        """The rows of ``file`` (the file last given, opened as ``parquet``) a batch at a time:
        a long run is never all in memory as Python objects. Each row group is checked
        before it is read, and each batch before it is given (:class:`DecodeBudget`): a small
        file that decodes to gigabytes is an error, not gigabytes."""
        try:
            yield from self.budget.batches(file, parquet, self._source, columns, _READ_BATCH)
        except LogError:
            raise
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise LogCorruptError(f"{file}: not a readable Parquet file: {exc}",
                                  path=str(file)) from exc

    def _opened(self, file: Path) -> Any:
        """``file`` opened (see :func:`_open`), its size allowed for in the budget; the file
        given before is closed (its rows were read)."""
        self._close()
        parquet, self._source = _open(file)
        self.budget.add_file(self._source.stored)
        return parquet

    def _close(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            source.close()

    def __iter__(self) -> Iterator[tuple[Path, Any]]:
        try:
            yield from self._files()
        finally:  # read to the end, abandoned or failed: the last file goes too
            self._close()

    def _files(self) -> Iterator[tuple[Path, Any]]:
        path = self.path
        if not path.is_dir():
            try:
                parquet = self._opened(path)
            except FileNotFoundError as exc:
                raise LogError(f"{path}: no such log", path=str(path)) from exc
            yield path, parquet
            return
        listing = self._list()
        i = retries = 0
        while i < len(listing):
            _, last, file = listing[i]
            i += 1
            if self.covered is not None and last <= self.covered:
                continue  # every row is in a file read already: a compaction's leftover
            try:
                parquet = self._opened(file)
            except FileNotFoundError as exc:
                again = self._list()
                if again == listing or retries >= self._RETRIES:
                    raise LogCorruptError(f"{file}: listed in the log but cannot be opened: "
                                          f"{exc}", path=str(file)) from exc
                listing, i, retries = again, 0, retries + 1  # compacted meanwhile
                continue
            yield file, parquet

    def _list(self) -> list[tuple[int, int, Path]]:
        try:
            found = segments(self.path)
        except OSError as exc:
            raise LogError(f"{self.path}: the log's directory cannot be listed: {exc}",
                           path=str(self.path)) from exc
        if not found:
            logs, more = _logs_in(self.path)
            if logs:  # a run's folder (``demo-run``): name the logs it holds
                raise LogCorruptError(
                    f"{self.path}: a folder, not an event log; the logs in it: "
                    f"{', '.join(printable(str(self.path / name)) for name in logs)}"
                    + (f" and {more} more" if more else ""), path=str(self.path))
            raise LogCorruptError(f"{self.path}: no Parquet segments in this directory",
                                  path=str(self.path))
        return found


def _logs_in(folder: Path, most: int = 4) -> tuple[list[str], int]:
    """The names in ``folder`` that look like event logs (``*.jsonl``, ``*.parquet``, not
    hidden: a temporary file is), sorted, at most ``most``, and how many more there are; of
    the first thousands of entries (a folder others can fill)."""
    names: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for i, entry in enumerate(entries):
                if i >= 10_000:
                    break
                if entry.name.endswith((".jsonl", ".parquet")) and \
                        not entry.name.startswith("."):
                    names.append(entry.name)
    except OSError:
        return [], 0
    return sorted(names)[:most], max(0, len(names) - most)


def _open(file: Path) -> tuple[Any, Any]:
    """``file`` opened as a Parquet event log file (FileNotFoundError if it is not there): a
    ``pyarrow.parquet.ParquetFile``, and the pyarrow file it reads (which says the size, and
    reads the file still if a compaction removes it meanwhile)."""
    source = open_regular(file)
    try:
        return _checked(file, source), source
    except BaseException:
        source.close()
        raise


def _checked(file: Path, source: Any) -> Any:
    """The ParquetFile of ``source``, its schema checked as an event log's."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source)
    except FileNotFoundError:
        raise
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise LogCorruptError(f"{file}: not a readable Parquet file: {exc}",
                              path=str(file)) from exc
    schema = parquet.schema_arrow
    names = schema.names
    if len(set(names)) != len(names):
        seen: set[str] = set()  # (a set: the names are the file's, thousands of them)
        twice = next(name for name in names if name in seen or seen.add(name))
        raise LogCorruptError(f"{file}: column {printable(twice)[:60]} appears more than once; "
                              "a log's columns are named once each", path=str(file),
                              field=twice)
    absent = [c for c in _REQUIRED_COLUMNS if c not in names]
    if absent:
        raise LogCorruptError(f"{file}: not an event log (no {', '.join(absent)} column)",
                              path=str(file), field=absent[0])
    _check_layout(file, schema.metadata)
    for field in schema:
        wanted = _column_types(field.name)
        if wanted is not None and not _holds(field.type, *wanted):
            what, nulls = wanted
            raise LogCorruptError(f"{file}: column {field.name} is {field.type}, not {what}"
                                  f"{' (or all null)' if nulls else ''}", path=str(file),
                                  field=field.name)
    return parquet


def _check_layout(file: Path, metadata: dict[bytes, bytes] | None) -> None:
    """Refuse a file of a newer layout than :data:`LAYOUT_VERSION` (no key: layout 1)."""
    text = (metadata or {}).get(LAYOUT_KEY)
    if text is None:
        return
    try:
        layout = int(text)
    except ValueError:
        layout = 0
    if layout < 1:
        raise LogCorruptError(f"{file}: Parquet layout version {text!r:.40} is not a positive "
                              f"integer", path=str(file), field=LAYOUT_KEY.decode())
    if layout > LAYOUT_VERSION:
        raise SchemaVersionError(
            f"{file}: written in Parquet layout {layout}; this eventbus reads layout "
            f"{LAYOUT_VERSION} and older. Upgrade eventbus to read it", path=str(file),
            field=LAYOUT_KEY.decode())


def _column_types(name: str) -> tuple[str, bool] | None:
    """What a column the reader reads must hold ("integers", "numbers" or "strings") and
    whether it may be all null (a column of Arrow's null type); None for any other column."""
    if name in ("v", "seq"):
        return "integers", False
    if name in ("epoch", "batch", "step"):
        return "integers", True
    if name == "time":
        return "numbers", False
    if name in ("run_id", "kind"):
        return "strings", False
    if name == "payload" or name in ("source", "reason", "code"):
        return "strings", True
    if name == "cause_seq":
        return "integers", True
    if name.startswith(METRIC_PREFIX):
        return "numbers or lists of numbers", True
    return None


def _holds(arrow_type: Any, what: str, nulls: bool) -> bool:
    """Whether a column of ``arrow_type`` holds ``what`` (dictionary-encoded or not), as
    Python ints, floats or strs once read."""
    import pyarrow as pa

    types = pa.types
    if nulls and types.is_null(arrow_type):
        return True
    if types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if what == "strings":
        return bool(types.is_string(arrow_type) or types.is_large_string(arrow_type))
    if what == "numbers or lists of numbers":  # a metric: a float, or a vector of them
        if types.is_list(arrow_type) or types.is_large_list(arrow_type):
            arrow_type = arrow_type.value_type
            if types.is_null(arrow_type):
                return True
    integer = bool(types.is_integer(arrow_type))
    if what == "integers":
        return integer
    return integer or bool(types.is_float32(arrow_type) or types.is_float64(arrow_type))


#: From this many metric columns on, a Parquet log's metrics are read sparse (see ``_read``).
_SPARSE_FROM = 64


def _columns(file: Path, batch: Any, row: int, names: list[str]) -> dict[str, list[Any]]:
    """A batch's columns ``names`` as Python lists; a value Arrow cannot convert (text that is
    not UTF-8 in a damaged file) is an error naming the column."""
    columns = {}
    for name in names:
        try:
            columns[name] = batch.column(name).to_pylist()
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise _unreadable(file, batch, row, name, exc) from exc
    return columns


def _present(file: Path, batch: Any, row: int, columns: list[str],
             metrics: list[str]) -> list[dict[str, Any]]:
    """Each row's metrics of a batch with many metric columns, built from the values present
    (found from each column's validity, in Arrow), in column order as a dense read gives
    them: the cost is the values, not rows x columns."""
    import pyarrow.compute as pc

    out: list[dict[str, Any]] = [{} for _ in range(batch.num_rows)]
    for name, key in zip(columns, metrics):
        column = batch.column(name)
        if column.null_count == len(column):
            continue
        try:
            where = pc.indices_nonzero(column.is_valid()).to_pylist()
            values = column.drop_null().to_pylist()
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise _unreadable(file, batch, row, name, exc) from exc
        for i, value in zip(where, values):
            out[i][key] = value
    return out


def _unreadable(file: Path, batch: Any, row: int, name: str, exc: Exception) -> LogCorruptError:
    return LogCorruptError(f"{file} (rows {row + 1} to {row + batch.num_rows}): column {name} "
                           f"cannot be read: {exc}", path=str(file), line=row + 1, field=name)


def _row(file: Path, row: int) -> Where:
    return Where(str(file), row, f"{file} (row {row})")


class _Places:
    """Where each record read from a Parquet log came from, for an error: its file and row.

    Rows follow one another within a file once its leading rows (a compaction's leftovers)
    are passed, so one entry per file is enough.
    """

    def __init__(self) -> None:
        self._numbers: list[int] = []  # the record number each entry starts at
        self._rows: list[tuple[Path, int]] = []  # (file, row) of that record

    def add(self, number: int, file: Path, row: int) -> None:
        self._numbers.append(number)
        self._rows.append((file, row))

    def __call__(self, number: int) -> Where:
        i = bisect_right(self._numbers, number) - 1
        file, row = self._rows[i]
        return _row(file, row + number - self._numbers[i])


def iter_parquet_dicts(path: str | os.PathLike[str], *,
                       places: _Places | None = None) -> Iterator[dict[str, Any]]:
    """Every record of a Parquet log (a segment directory or one file) as a plain dict.

    Checks each file's columns (names and types), each record's schema version and payload,
    and that the log starts with its header; :func:`read_parquet` checks each record's kind,
    shape and seq. ``places`` learns where each record came from, for errors.
    """
    return _read(path, places, None)


def _parquet_plan(validate: bool, kinds: Collection[str] | None) -> dict[str, Any]:
    """jsonl's plan, with each batch kind's entry made for values still in locals: the types
    its epoch and step may have, None standing for a field the kind does not have (a row's
    null there, which adds no field: a value there would, and the count of fields tells)."""
    from .records import KINDS

    plan = read_plan(validate, kinds)
    for kind, known in plan.items():
        if known is not SKIP and known is not VALIDATE:
            fields = KINDS[kind].model_fields
            plan[kind] = (known[0], known[1],
                          _INT_OR_NONE if "epoch" in fields else _NONE,
                          _INT if "step" in fields else _NONE)
    return plan


_INT = frozenset({int})
_INT_OR_NONE = frozenset({int, type(None)})
_NONE = frozenset({type(None)})


def _read(path: str | os.PathLike[str], places: _Places | None,
          plan: dict[str, Any] | None, stop: float = math.inf,
          kept: Callable[[int], bool] | None = None) -> Iterator[Any]:
    """The rows of a Parquet log as dicts (``plan`` None), or as typed records read as
    ``jsonl.typed`` reads the dicts (``plan``: see ``jsonl.read_plan``), in the same loop: the
    envelope and indices are checked while still in locals, not looked up again in the dict.
    ``stop`` and ``kept``: as for ``jsonl.read_jsonl``."""
    from .records import KINDS

    # The epoch/batch/step fields each kind has: null in a column is None there, absent else.
    indices = {kind: frozenset(n for n in ("epoch", "batch", "step") if n in cls.model_fields)
               for kind, cls in KINDS.items()}
    with_logs = _NO_PAYLOAD | {"train_begin"}
    # The FIELD_COLUMNS each kind has: null in their column is None there, absent else.
    fields = {kind: frozenset(FIELD_COLUMNS).intersection(cls.model_fields)
              for kind, cls in KINDS.items()}
    version = SCHEMA_VERSION
    header_seen = False
    count = 0  # records yielded
    previous = -1  # typed records: the seq of the record before
    new, set_fields = object.__new__, set_model_dict
    files = _LogFiles(Path(path))
    for file, parquet in files:
        schema = parquet.schema_arrow  # made anew at each access: once per file, not per column
        names = schema.names
        metric_columns = [name for name in names if name.startswith(METRIC_PREFIX)]
        metrics = [name[len(METRIC_PREFIX):] for name in metric_columns]
        # Metrics whose column holds lists: a list of one element there is a float.
        vectors = [name[len(METRIC_PREFIX):] for name in metric_columns
                   if not _holds(schema.field(name).type, "numbers", True)]
        named = [name for name in FIELD_COLUMNS if name in names]  # none in layout 1
        # Not another column nobody reads; the named fields last, after the metrics.
        wanted = [*_REQUIRED_COLUMNS, *metric_columns, *named]
        # Many metric columns are mostly null (each record has a few): their rows are built
        # from the values present, not from every cell, or rows x columns would be the cost.
        sparse = len(metric_columns) > _SPARSE_FROM
        zipped = [*_REQUIRED_COLUMNS, *named] if sparse else wanted
        dense = 0 if sparse else len(metrics)  # the metric values in a row's ``values``
        row_logs: list[dict[str, Any]] | None = None
        leading = files.covered  # rows up to it that start this file were read already
        if leading is None and places is not None:
            places.add(count + 1, file, 1)
        seq = None
        row = 0
        for batch in files.batches(file, parquet, columns=wanted):
            columns = _columns(file, batch, row, zipped)
            if sparse:
                row_logs = _present(file, batch, row, metric_columns, metrics)
            rows = zip(*(columns[name] for name in zipped))
            for number, (v, run_id, seq, kind, time, epoch, index, step, payload, *values) \
                    in enumerate(rows, row + 1):
                if leading is not None:  # the first rows of a file after the first
                    if type(seq) is not int:
                        raise bad_seq(_row(file, number), seq)
                    if seq <= leading:
                        continue  # rows both in a compacted file and a leftover segment
                    leading = None
                    if places is not None:  # the rest follow this record row by row
                        places.add(count + 1, file, number)
                if v is not version:
                    check_version(v, _row(file, number))
                if not header_seen:
                    if kind != "header":
                        raise LogCorruptError(f"{file} (row {number}): an event log starts "
                                              f"with a header record; found {kind!r}",
                                              path=str(file), line=number, field="kind")
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
                    record.update(_payload(payload, file, number))
                if kind in with_logs:
                    logs = record["logs"] = {key: value for key, value in zip(metrics, values)
                                             if value is not None} if row_logs is None \
                        else row_logs[number - row - 1]
                    for key in vectors:
                        value = logs.get(key)
                        if value is not None and len(value) == 1:
                            logs[key] = value[0]
                elif named:  # decisions, outcomes: their fields with columns of their own
                    _take_fields(record, named, values[dense:], fields.get(kind, ()),
                                 file, number)
                count += 1
                if plan is None:
                    yield record
                    continue
                # typed's checks and build (jsonl.typed), on the values in locals
                if type(seq) is not int or seq <= previous:
                    raise seq_error(places, count, seq, previous)  # type: ignore[arg-type]
                previous = seq
                known = plan.get(kind, VALIDATE)
                if known is SKIP:
                    if seq > stop and (kept is None or kept(seq)):
                        return
                    continue
                if (len(record) == known[1] and payload is None and type(index) is int
                        and type(time) is float and type(run_id) is str
                        and type(epoch) in known[2] and type(step) in known[3]):
                    event = new(known[0])
                    set_fields(event, record)
                    yield event
                    continue
                event = built(record, plan, places(count))  # type: ignore[misc]
                if event is not None:
                    yield event
            row += batch.num_rows
        if leading is None and type(seq) is int:  # the last seq read (typed checks order)
            files.covered = seq if files.covered is None else max(seq, files.covered)


def _take_fields(record: dict[str, Any], named: list[str], values: list[Any],
                 has: Collection[str], file: Path, row: int) -> None:
    """Put a row's values of the columns ``named`` (FIELD_COLUMNS) in its ``record``.

    A null is None for a field the record's kind has (``code``, ``cause_seq``), and leaves
    the field to the payload, where a file compacted from segments of layout 1 keeps it.
    """
    for name, value in zip(named, values):
        if value is None:
            if name in has and name not in record:
                record[name] = None
        elif name in record:
            raise LogCorruptError(f"{file} (row {row}): {name} is both in its column and in "
                                  "the payload", path=str(file), line=row, field=name)
        else:
            record[name] = value


def _payload(text: str, file: Path, row: int) -> dict[str, Any]:
    """A row's payload: a JSON object of the record's fields that are not columns."""
    try:
        fields = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise LogCorruptError(f"{file} (row {row}): payload is not JSON: {exc}",
                              path=str(file), line=row, field="payload") from None
    if type(fields) is not dict:
        raise LogCorruptError(f"{file} (row {row}): payload is a JSON "
                              f"{type(fields).__name__}, not an object of the record's fields",
                              path=str(file), line=row, field="payload")
    columns = _IN_COLUMNS.intersection(fields)
    if columns:
        raise LogCorruptError(f"{file} (row {row}): payload holds {', '.join(sorted(columns))}, "
                              "stored as columns, not in the payload", path=str(file), line=row,
                              field="payload")
    return decode_nonfinite(fields)


def last_seq(path: str | os.PathLike[str]) -> int | None:
    """The highest seq in a Parquet log, from its ``seq`` column alone."""
    import pyarrow.compute as pc

    highest = None
    files = _LogFiles(Path(path))
    for file, parquet in files:
        for batch in files.batches(file, parquet, columns=["seq"]):
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
    files = _LogFiles(Path(path))
    for file, parquet in files:
        covered = files.covered  # rows both in a compacted file and a leftover segment
        highest = covered
        named = [name for name in FIELD_COLUMNS if name in parquet.schema_arrow.names]
        for batch in files.batches(file, parquet, columns=[*_REQUIRED_COLUMNS, *named]):
            try:
                kind = batch.column("kind").cast(pa.string())
                rows = batch.filter(pc.is_in(kind, value_set=wanted)).to_pylist()
                top = pc.max(batch.column("seq")).as_py()
            except Exception as exc:  # pyarrow raises several types for a damaged file
                raise LogCorruptError(f"{file}: not a readable Parquet file: {exc}",
                                      path=str(file)) from exc
            if top is not None and (highest is None or top > highest):
                highest = top
            for row in rows:
                if covered is not None and (row["seq"] is None or row["seq"] <= covered):
                    continue
                payload = row.pop("payload")
                own = {name: row.pop(name) for name in named}
                try:
                    fields = orjson.loads(payload) if payload is not None else {}
                except orjson.JSONDecodeError:
                    fields = None  # damaged: the reader reports it where it is
                if type(fields) is dict and not _IN_COLUMNS.intersection(fields):
                    row.update(fields)
                row.update((name, value) for name, value in own.items() if value is not None)
                found.append(row)
        files.covered = highest
    return found


def read_parquet(path: str | os.PathLike[str], *, validate: bool = False,
                 kinds: Collection[str] | None = None, stop: int | None = None,
                 kept: Callable[[int], bool] | None = None) -> Iterator[Record]:
    """Every record of a Parquet log, typed; see :func:`eventbus.read_log`."""
    return _read(path, _Places(), _parquet_plan(validate, kinds),
                 math.inf if stop is None else stop, kept)
