"""A Parquet log on disk: segment files, written in the background and merged into one at close.

A Parquet file is readable only once its footer is written, so a log is a directory of complete
segment files, ``seg-<first seq>-<last seq>.parquet``, each written to a hidden temporary file,
fsynced and renamed into place. A temporary file is created anew under a name nobody can guess
(``O_CREAT | O_EXCL``: a link or file planted where it goes is never written through); those a
dead process left go when the next writer opens the log. :class:`SegmentStore` writes the
segments on one background thread: pyarrow encodes with the GIL released, so a segment is
written while the training loop goes on, and a flush waits only for the segments handed to it
so far (a crash loses no more than the records since the last flush, as with the JSON Lines
log).

pandas, pyarrow and DuckDB read such a directory as one table, but take its columns from the
first file (by name): a column the first file lacks is dropped from the table, or refused. So
before a segment that brings a column the log's first file lacks is written, the first file is
written again, with every column the log has so far (null in its rows), and renamed over
itself, its name and rows unchanged (:meth:`SegmentStore._write`). That first file is the
header and ``train_begin`` as a rule: a few rows, written again when a metric is first seen.

The same thread gathers the segments into row groups of a hidden merged file as well;
``close()`` adds the records since the last flush to it and renames it into place as the
compacted log before the segments go. Its columns are those of the segments it holds until
it writes its first row group (``_ROW_GROUP_ROWS`` rows), which fixes them. Where that is not
possible (a metric first seen after that row group, a log resumed onto segments already on
disk), ``close()`` merges the segments the slow way: read them all, write them again
(:func:`compact`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import secrets
import stat
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from time import monotonic
from typing import Any

from .errors import LogCorruptError, LogError
from .openflags import NO_FOLLOW
from .outputs import file_type, open_checked, stored_size
from .parquet_layout import METRIC_PREFIX, DecodeBudget, as_vectors, layout_metadata, vector_type
from .sink import given_up, is_transient, keep_trying

__all__ = ["SegmentStore", "compact", "open_regular", "remove_temporaries", "segment_name",
           "segments"]

_SEGMENT = re.compile(r"^seg-(\d{12})-(\d{12})\.parquet$")
_MERGED = "merged.parquet"  # the merged file's temporary name is made of it
# The hidden temporary files of this module (neither a segment nor read as one): the name of
# what they become, a random part, ".tmp"; without the random part, as versions before made
# them (".merged.parquet.tmp").
_TEMPORARY = re.compile(r"^\.(seg-\d{12}-\d{12}\.parquet|merged\.parquet)(\.[0-9a-f]+)?\.tmp$")
# How a temporary file is created: O_EXCL refuses any name that is there, a link included;
# O_NOFOLLOW, where the system has it, says so again.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW

# Dictionary encoding pays only for the columns of few distinct values; for the rest (seq,
# time, the metrics) it costs twice the time of the whole write and makes the file larger.
# Delta encoding suits the integer columns (counters, or constant over long runs): it halves
# the file and is faster to write than plain values compressed.
_WRITE_OPTIONS: dict[str, Any] = {
    "use_dictionary": ["run_id", "kind"],
    "column_encoding": dict.fromkeys(("v", "seq", "epoch", "batch", "step"),
                                     "DELTA_BINARY_PACKED"),
}
# Segments queued for the background thread before ``submit`` waits for the oldest: keeps the
# memory of a loop that outruns the disk bounded.
_MAX_QUEUED = 2
# Seconds before the first file's rewrite is tried again after a full disk refused it twice
# in a row, and the most (each further failure doubles the wait).
_FIRST_WIDEN_WAIT = 2.0
_MOST_WIDEN_WAIT = 300.0
# Rows the merged file gathers before it writes a row group: a run flushed every epoch makes
# many small segments, and a file of many small row groups is larger and slower to read.
_ROW_GROUP_ROWS = 1 << 18


def segment_name(first: int, last: int) -> str:
    return f"seg-{first:012d}-{last:012d}.parquet"


def segments(directory: Path) -> list[tuple[int, int, Path]]:
    """The segment files under ``directory`` as (first seq, last seq, path)."""
    found = []
    for entry in directory.iterdir():
        match = _SEGMENT.match(entry.name)
        if match:
            found.append((int(match[1]), int(match[2]), entry))
    # Lowest first seq first; of two that start together, the wider (a compacted one) first.
    return sorted(found, key=lambda s: (s[0], -s[1]))


def write_atomically(table: Any, target: Path) -> None:
    import pyarrow.parquet as pq

    _replace(target, lambda file: pq.write_table(table, file, **_WRITE_OPTIONS))


def _replace(target: Path, write: Callable[[Any], None]) -> None:
    """``write(file)`` into a new temporary file beside ``target``, on disk, then renamed over
    it: a crash at any point leaves the old file or the new one. pyarrow is handed the open
    file, never the name: a name it would read as a URI (``file:/elsewhere/x``, ``s3:...``) or
    could not encode (not UTF-8) is only a name."""
    tmp = _temporary(target.parent, target.name)
    try:
        with open(tmp, "r+b") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _temporary(directory: Path, name: str) -> Path:
    """A new empty hidden file in ``directory`` for what becomes ``name``, under a name
    nobody can guess, created here and now (never a link or file that was there), with the
    permissions any new file of this process gets (the umask applies, as for the file it
    becomes)."""
    for _ in range(100):
        tmp = directory / f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            os.close(os.open(tmp, _CREATE, 0o666))
        except FileExistsError:
            continue  # 64 random bits taken: something planted, or very bad luck; again
        return tmp
    raise FileExistsError(f"{directory}: no new temporary file for {name} could be created")


def remove_temporaries(directory: Path) -> None:
    """Remove the temporary files a dead process left in ``directory`` (a link among them is
    removed, not followed). A folder at such a name is no file of ours: it is left, and stops
    no writer (a writer's own temporary names are new, unguessable ones)."""
    for entry in directory.iterdir():
        if _TEMPORARY.match(entry.name):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                if not stat.S_ISDIR(entry.lstat().st_mode):
                    entry.unlink()


def compact(directory: str | os.PathLike[str]) -> None:
    """Merge the segments under ``directory`` into one file (a no-op for one segment).

    The merged file holds exactly what a reader of the directory reads: the segments in the
    reader's order, each row once, the files passed over as the reader passes over them. A
    segment's name only orders it and lets one be passed over; what was read is told by the
    seqs in the files (a name claiming more than its file holds, planted or copied, must not
    make the rows after it vanish). The merged file is in place before the segments go, so a
    crash in between leaves rows twice, never none; only the files whose rows are all in it go.
    """
    import pyarrow.compute as pc

    directory = Path(directory)
    found = segments(directory)
    if len(found) < 2:
        return
    tables, merged_from, passed = [], [], []
    budget = DecodeBudget()  # segments may be anyone's: read within what they may decode to
    covered = -1  # the highest seq read so far (a segment's rows are in order)
    for _, last, seg in found:  # lowest first seq first; of two such, the wider first
        if last <= covered:
            passed.append(seg)  # as the reader passes it over: all read already, by its name
            continue
        table = _read_checked(seg, budget)
        if table.num_rows and pc.min(table.column("seq")).as_py() <= covered:
            table = table.filter(pc.greater(table.column("seq"), covered))
        if table.num_rows:
            tables.append(table)
            covered = max(covered, pc.max(table.column("seq")).as_py())
        merged_from.append(seg)
    if not tables:
        return
    table = _concat(tables)
    seqs = table.column("seq")
    merged = segment_name(pc.min(seqs).as_py(), pc.max(seqs).as_py())
    write_atomically(table, directory / merged)
    # A file passed over by its name goes only if its seqs say it holds nothing more.
    gone = [*merged_from, *(seg for seg in passed if _highest_seq(seg, budget) <= covered)]
    for seg in gone:
        if seg.name != merged:
            seg.unlink()


@functools.cache
def _source_class() -> Any:
    import pyarrow as pa

    class Source(pa.PythonFile):  # type: ignore[misc]
        """A pyarrow file that knows the bytes it stores (``stored``): what a decode budget
        is drawn from, not the size a sparse file claims."""

        stored = 0

    return Source


def open_regular(file: Path) -> Any:
    """``file`` opened as a pyarrow file once it is known to be a regular file (a FIFO would
    block the open, a directory is no segment); FileNotFoundError if it is not there."""
    try:
        fd, mode = open_checked(file)
    except FileNotFoundError:
        raise  # the caller lists the files again
    except OSError as exc:  # a link that loops, a file that may not be read
        raise LogError(f"{file}: cannot be read: {exc}", path=str(file)) from exc
    try:
        if not stat.S_ISREG(mode):
            raise LogCorruptError(f"{file}: not a regular file ({file_type(mode)}); a Parquet "
                                  "log holds only Parquet files", path=str(file))
        source = _source_class()(os.fdopen(fd, "rb"), mode="r")
        source.stored = stored_size(os.fstat(fd))
        return source
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise


def _read_checked(file: Path, budget: DecodeBudget, columns: list[str] | None = None) -> Any:
    """The whole of ``file`` (or its ``columns``), once each row group is checked against
    ``budget`` (its footer, and the dictionaries of its strings): a small segment that decodes
    to gigabytes is a ``LogCorruptError``, not gigabytes."""
    import pyarrow.parquet as pq

    with open_regular(file) as source:
        try:
            parquet = pq.ParquetFile(source)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise LogCorruptError(f"{file}: not a readable Parquet file: {exc}",
                                  path=str(file)) from exc
        budget.add_file(source.stored)
        first = 1
        for group in range(parquet.metadata.num_row_groups):
            budget.plan(file, parquet, source, group, first, columns, 1)
            first += parquet.metadata.row_group(group).num_rows
        # a segment is small: threads cost more
        return parquet.read(columns=columns, use_threads=False)


def _highest_seq(file: Path, budget: DecodeBudget) -> float:
    """The highest seq ``file`` holds (infinite when it cannot be read: it is kept)."""
    import pyarrow.compute as pc

    try:
        seqs = _read_checked(file, budget, ["seq"]).column("seq")
    except (LogError, OSError):
        return math.inf
    highest = pc.max(seqs).as_py()
    return -1 if highest is None else highest


def _wider(known: Any, other: Any) -> Any:
    """The type of a column that is ``known`` in some files and ``other`` in others: a metric
    that is a vector anywhere holds lists; a column all null in one file is typed by another."""
    import pyarrow as pa

    if known == vector_type() or other == vector_type():
        return vector_type()
    return other if pa.types.is_null(known) else known


def _log_columns(directory: Path) -> tuple[tuple[str, frozenset[str]] | None, dict[str, Any]]:
    """The first segment of ``directory`` by name, with its columns, and every metric column
    of its segments with its type (``_wider`` of theirs), from their footers; a file that
    cannot be read is passed over (the reader reports it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    first = None
    columns: dict[str, Any] = {}
    for _, _, seg in sorted(segments(directory), key=lambda s: s[2].name):
        try:
            with open_regular(seg) as source:
                schema = pq.ParquetFile(source).schema_arrow
        except Exception:  # noqa: BLE001 - damaged, gone, not a file: not a column of the log
            continue
        if first is None:
            first = (seg.name, frozenset(schema.names))
        for field in schema:
            # Only a metric's column, of a type this writer writes, is carried into the first
            # file: the files are anyone's, and a column of another type (a fixed-size binary
            # of 128 MiB a row) would be made, null, for every row of it.
            if field.name.startswith(METRIC_PREFIX) and \
                    (field.type in (pa.float64(), vector_type()) or pa.types.is_null(field.type)):
                known = columns.get(field.name)
                columns[field.name] = field.type if known is None else \
                    _wider(known, field.type)
    return first, columns


def _with_columns(schema: Any, columns: dict[str, Any]) -> Any:
    """``schema`` with the ``columns`` it lacks (name: type) added: the metrics sorted by name,
    before ``payload`` as a segment has them, anything else before the metrics."""
    import pyarrow as pa

    missing = [pa.field(name, kind) for name, kind in columns.items()
               if schema.get_field_index(name) < 0]
    if not missing:
        return schema
    own = list(schema)
    metrics = sorted([f for f in [*own, *missing] if f.name.startswith(METRIC_PREFIX)],
                     key=lambda f: f.name)
    others = [f for f in own if not f.name.startswith(METRIC_PREFIX)]
    at = next((i for i, f in enumerate(others) if f.name == "payload"), len(others))
    added = [f for f in missing if not f.name.startswith(METRIC_PREFIX)]
    return pa.schema([*others[:at], *added, *metrics, *others[at:]], metadata=schema.metadata)


def _rewrite_with_columns(file: Path, columns: dict[str, Any]) -> frozenset[str]:
    """Write ``file`` again with the ``columns`` it lacks, null in every row, one row group
    at a time (a compacted log is not read whole), and rename the new file over it: its rows,
    row groups and name stay, and a crash at any point leaves the one or the other. Returns
    the columns it has now."""
    import pyarrow.parquet as pq

    with open_regular(file) as source:
        parquet = pq.ParquetFile(source)
        schema = _with_columns(parquet.schema_arrow, columns)
        if len(schema) == len(parquet.schema_arrow):
            return frozenset(schema.names)
        budget = DecodeBudget()  # a log is anyone's: read within what it may decode to
        budget.add_file(source.stored)

        def write(out: Any) -> None:
            with pq.ParquetWriter(out, schema, **_WRITE_OPTIONS) as writer:
                first = 1
                for group in range(parquet.metadata.num_row_groups):
                    budget.plan(file, parquet, source, group, first, None, 1)
                    table = parquet.read_row_group(group, use_threads=False)
                    writer.write_table(_conform(table, schema))
                    first += table.num_rows

        _replace(file, write)
    return frozenset(schema.names)


def _remove_all_but(found: list[tuple[int, int, Path]], kept: str) -> None:
    for _, _, seg in found:
        if seg.name != kept:
            seg.unlink()


def _plain_schema(schema: Any) -> Any:
    """``schema`` with dictionary columns as their value type: one compacted file has one
    dictionary per column chunk anyway, and readers get plain strings."""
    import pyarrow as pa

    return pa.schema([f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f
                      for f in schema], metadata=schema.metadata)


def _concat(tables: list[Any]) -> Any:
    import pyarrow as pa

    # Segments can have different metric columns; promote to one schema.
    tables = _same_metric_types([t.cast(_plain_schema(t.schema)) for t in tables])
    # The merged file is of this version's layout (a segment of layout 1, from a log begun by
    # an older version, keeps its rows' fields in their payloads, which the reader reads).
    return pa.concat_tables(tables, promote_options="default").replace_schema_metadata(
        layout_metadata())


def _same_metric_types(tables: list[Any], vectors: set[str] | None = None) -> list[Any]:
    """``tables`` with a metric that is a column of lists in one of them (or named in
    ``vectors``) a column of lists in all (a vector metric first seen after the first
    segment, or a float in some segments)."""
    vectors = {field.name for table in tables for field in table.schema
               if field.name.startswith(METRIC_PREFIX) and field.type == vector_type()} | \
        (vectors or set())
    if not vectors:
        return tables
    out = []
    for table in tables:
        for name in vectors.intersection(table.column_names):
            i = table.schema.get_field_index(name)
            if table.schema.field(i).type != vector_type():
                column = as_vectors(table.column(i).combine_chunks())
                table = table.set_column(i, name, column)
        out.append(table)
    return out


def _conform(table: Any, schema: Any) -> Any:
    """``table``, whose columns ``schema`` all has, in ``schema`` (a missing metric column as
    nulls, dictionary columns as plain strings)."""
    import pyarrow as pa

    names = set(table.column_names)
    rows = table.num_rows
    return pa.table([table.column(f.name).cast(f.type) if f.name in names
                     else pa.nulls(rows, f.type) for f in schema], schema=schema)


class _HeldBack(OSError):
    """A segment not written because one before it is kept (see SegmentStore.kept)."""


class SegmentStore:
    """The segment files of one Parquet log, written on a background thread.

    ``merge``: also build the compacted file as segments are written (false when the directory
    already holds segments this store did not write, as when a log is resumed).
    """

    def __init__(self, directory: Path, *, merge: bool) -> None:
        self.directory = directory
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventbus-parquet")
        # Segment writes not yet waited for: (the write, its table, first seq, last seq).
        self._pending: deque[tuple[Future[None], Any, int, int]] = deque()
        #: Segments whose write failed with an OSError (a full disk), in order: kept, and
        #: written again at the next :meth:`wait`; those after them wait behind them.
        self.kept: list[tuple[Any, int, int]] = []
        self._blocked = False  # a segment failed: later ones are kept, not written ahead
        #: The last seq of the segments queued (the writer's pieces up to it are the store's).
        self.through = -1
        # Owned by the background thread until close() has shut it down.
        self._merging = merge
        self._merged: Any = None  # the pyarrow ParquetWriter of the merged file, once opened
        self._merged_file: Any = None  # the open file it writes (pyarrow never gets the name)
        self._merged_schema: Any = None
        self._merged_names: list[str] = []
        self._held: list[Any] = []  # merged tables not yet written as a row group
        self._held_rows = 0
        # (The temporary files a process that died mid-run left are removed by the writer, under
        # its lock, before it makes a store: ParquetWriter.__init__.)
        self._merged_tmp: Path | None = None  # the merged file's temporary file, once made
        self._wrote = False  # whether a segment was handed to this store
        # The log's first file by name (what a dataset reader takes the columns from) and its
        # columns; every column of the log with its type. Read from the directory at the first
        # segment written, then kept as segments are written (see :meth:`_write`).
        self._first: tuple[str, frozenset[str]] | None = None
        self._columns: dict[str, Any] | None = None
        self._widening = True  # false once the first file could not be written again
        # After a rewrite a full disk refused, none until then (monotonic), waiting longer
        # after each failure in a row.
        self._widen_after = 0.0
        self._widen_failures = 0

    def submit(self, table: Any, first: int, last: int) -> None:
        """Queue ``table`` to be written as the segment of seqs ``first`` to ``last``; raises
        the error of an earlier segment that could not be written, unless an OSError (a full
        disk), whose segment is kept for :meth:`wait`."""
        if last <= self.through:
            return  # queued or kept already (submitted again after an interrupt)
        self._reap()
        while len(self._pending) >= _MAX_QUEUED:
            self._settle(self._pending.popleft())
        self._wrote = True
        name = segment_name(first, last)
        written = self._pool.submit(self._write_in_turn, table, self.directory / name)
        self._pending.append((written, table, first, last))
        self.through = last
        if self._merging:
            self._pool.submit(self._merge, table, name, written)

    def _write_in_turn(self, table: Any, target: Path) -> None:
        """On the background thread: write a segment, unless one before it failed and is
        kept. The log's files are then always a prefix of its records: a crash while the
        disk is full leaves no hole for a reader to refuse the log over."""
        if self._blocked:
            raise _HeldBack(f"{target.name}: held behind a segment the disk refused")
        try:
            self._write(table, target)
        except OSError:
            self._blocked = True
            raise

    def _write(self, table: Any, target: Path) -> None:
        """Write ``table`` as the segment ``target``. A segment with a column the log's first
        file lacks has it added there first, so that a reader taking the log's columns from
        that file (pandas, pyarrow, DuckDB) finds it; where the segment becomes the first
        file itself, it is written with every column of the log."""
        first = self._widen(table, target)
        write_atomically(table if first is None else first, target)
        if first is not None:
            self._first = (target.name, frozenset(first.column_names))

    def _widen(self, table: Any, target: Path) -> Any:
        """Before ``table`` is written as ``target``: ``table`` with every column of the log,
        if ``target`` is to be the log's first file; else None, the first file given the
        columns it lacks (tried again with the next segment if that fails: the segment is
        written all the same, and the log reads whole with eventbus's reader)."""
        if not self._widening or monotonic() < self._widen_after:
            return None
        try:
            if self._columns is None:
                self._first, self._columns = _log_columns(self.directory)
            columns = self._columns
            for field in table.schema:
                known = columns.get(field.name)
                columns[field.name] = field.type if known is None else _wider(known, field.type)
            first = self._first
            if first is None or target.name <= first[0]:
                schema = _with_columns(table.schema, columns)
                return _conform(table, schema) if len(schema) > table.num_columns else table
            if not first[1].issuperset(columns):
                self._first = (first[0], _rewrite_with_columns(self.directory / first[0],
                                                               columns))
        except Exception as exc:  # noqa: BLE001 - the segment is written all the same
            cause = exc if isinstance(exc, OSError) else exc.__cause__
            if isinstance(cause, OSError) and is_transient(cause):
                # A full disk, EIO: a blip is tried again with the next segment; a fault that
                # lasts, a while after each failure, longer each time (a rewrite copies the
                # whole first file, which a resumed long run makes large).
                self._widen_failures += 1
                wait = 0.0 if self._widen_failures == 1 else min(
                    _FIRST_WIDEN_WAIT * 2 ** (self._widen_failures - 2), _MOST_WIDEN_WAIT)
                self._widen_after = monotonic() + wait
            else:  # a first file that cannot be read: left as it is
                self._widening = False
            return None
        self._widen_failures = 0
        return None

    def wait(self) -> None:
        """Return once every segment submitted is on disk. Those kept from a failed write are
        written again first, here; the OSError of one that fails again is raised, and it and
        those after it stay kept for the next call."""
        pending = self._pending
        while pending:
            self._settle(pending.popleft())
        kept, self.kept = self.kept, []
        for i, (table, first, last) in enumerate(kept):
            try:
                self._write(table, self.directory / segment_name(first, last))
            except OSError:
                self.kept = kept[i:]
                raise
        self._blocked = False  # every segment is on disk, in order: the next may be written

    def holds(self, first: int) -> bool:
        """Whether the segment starting at seq ``first`` was handed to the store: queued,
        written, or kept to write again."""
        return first <= self.through or any(p[2] == first for p in self._pending) \
            or any(k[1] == first for k in self.kept)

    @property
    def kept_records(self) -> int:
        return sum(table.num_rows for table, _, _ in self.kept)

    @property
    def kept_bytes(self) -> int:
        return sum(table.nbytes for table, _, _ in self.kept)

    def _reap(self) -> None:
        pending = self._pending
        while pending and pending[0][0].done():
            self._settle(pending.popleft())

    def _settle(self, entry: tuple[Future[None], Any, int, int]) -> None:
        written, table, first, last = entry
        try:
            written.result()
        except OSError:
            self.kept.append((table, first, last))  # written again by wait()

    def _merge(self, table: Any, name: str, written: Future[None]) -> None:
        # Runs on the background thread, after ``written`` (one worker: tasks run in order).
        if not self._merging:
            return
        try:
            if written.exception() is not None:
                raise OSError("the segment was not written")
            self._take_columns(table)
            self._hold(table, at_least=_ROW_GROUP_ROWS)
            self._merged_names.append(name)
        except Exception:  # noqa: BLE001 - close() falls back to compact(), which reports
            self._abandon_merge()

    def _hold(self, table: Any, *, at_least: int) -> None:
        """Add ``table`` to the merged file's next row group; write the group once it holds
        ``at_least`` rows."""
        self._held.append(table)
        self._held_rows += table.num_rows
        if self._held_rows >= at_least:
            self._write_held()

    def _fits(self, table: Any) -> bool:
        """Whether the merged file has every column of ``table``."""
        return set(table.column_names) <= set(self._merged_schema.names)

    def _take_columns(self, table: Any) -> None:
        """The merged file's columns take those of ``table`` until its first row group is
        written, which fixes them: the log's first segment is the header and train_begin, with
        no metric, and a file whose columns were that segment's held no later one."""
        if self._merged is not None:
            if not self._fits(table):
                raise ValueError("a column the merged file does not have")
            return
        schema = _plain_schema(table.schema)
        if self._merged_schema is None:
            self._merged_schema = schema
            return
        import pyarrow as pa

        known = self._merged_schema  # a column a vector anywhere holds lists (``_wider``)
        widened = [f.with_type(_wider(f.type, schema.field(f.name).type))
                   if schema.get_field_index(f.name) >= 0 else f for f in known]
        self._merged_schema = _with_columns(pa.schema(widened, metadata=known.metadata),
                                            {f.name: f.type for f in schema})

    def _write_held(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._held and self._merged is None:
            self._merged_tmp = _temporary(self.directory, _MERGED)
            self._merged_file = open(self._merged_tmp, "r+b")  # noqa: SIM115 - kept open
            self._merged = pq.ParquetWriter(self._merged_file, self._merged_schema,
                                            **_WRITE_OPTIONS)
        if self._held:
            # Conformed once per row group, not per segment: the casts cost per call.
            vectors = {f.name for f in self._merged_schema if f.type == vector_type()}
            held = _conform(pa.concat_tables(_same_metric_types(self._held, vectors),
                                             promote_options="default"), self._merged_schema)
            self._held, self._held_rows = [], 0
            self._merged.write_table(held)  # one row group: held is under pyarrow's 1Mi rows

    def _abandon_merge(self) -> None:
        self._merging = False
        self._held, self._held_rows = [], 0
        if self._merged is not None:
            try:
                self._merged.close()
            except Exception:  # noqa: BLE001 - the file is discarded either way
                pass
            self._merged = None
        self._close_merged_file()
        if self._merged_tmp is not None:
            self._merged_tmp.unlink(missing_ok=True)
            self._merged_tmp = None

    def close(self, tail: tuple[Any, int, int] | None = None) -> None:
        """Wait for every segment, then leave one file: the merged one, or compacted now.

        ``tail``: the records since the last flush as (table, first seq, last seq). They go
        straight into the merged file when there is one (a crash before the rename loses
        them, as it would before a flush), else into a last segment.
        """
        try:
            keep_trying(self.wait)
        except OSError as exc:
            self._abandon_merge()
            lost = self.kept_records + (0 if tail is None else tail[0].num_rows)
            raise given_up(exc, f"{self.directory}: {lost} record(s)") from exc
        finally:
            self._pool.shutdown(wait=True)
        if tail is None and not self._wrote:
            # Nothing of this writer's to merge: the files are left as they were (a resume
            # that refused the log closes its writer so, and must change nothing in it).
            self._abandon_merge()
            return
        found = segments(self.directory)
        last = max((last for _, last, _ in found), default=-1)
        holds_all = (self._merging and self._merged_schema is not None
                     and sorted(self._merged_names) == sorted(seg.name for _, _, seg in found))
        parts = len(found)  # segments the merged file would hold
        if tail is not None:
            if holds_all and self._merge_tail(tail[0]):
                last = tail[2]
                parts += 1
            else:
                table, first, tail_last = tail
                target = self.directory / segment_name(first, tail_last)
                try:
                    keep_trying(lambda: self._write(table, target))
                except OSError as exc:
                    self._abandon_merge()
                    raise given_up(exc, f"{self.directory}: the last {table.num_rows} "
                                        "record(s)") from exc
                holds_all = False
        if not holds_all or parts < 2:
            self._abandon_merge()  # segments it does not hold are an earlier process's
            compact(self.directory)
            return
        try:
            self._write_held()
            self._merged.close()
        except Exception:  # noqa: BLE001 - the segments are all there: compact them instead
            self._abandon_merge()
            compact(self.directory)
            return
        self._merged = None
        self._merged_file.flush()
        os.fsync(self._merged_file.fileno())
        self._close_merged_file()
        merged, self._merged_tmp = self._merged_tmp, None
        assert merged is not None  # made with the writer, which there is
        name = segment_name(found[0][0], last)
        os.replace(merged, self.directory / name)
        _remove_all_but(segments(self.directory), name)

    def _close_merged_file(self) -> None:
        file, self._merged_file = self._merged_file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    def _merge_tail(self, table: Any) -> bool:
        """Write the rows still held and ``table`` as the merged file's last row group."""
        if self._merged is not None and not self._fits(table):
            return False
        try:
            self._take_columns(table)
            self._hold(table, at_least=0)
        except Exception:  # noqa: BLE001 - the tail goes into a segment instead
            self._abandon_merge()
            return False
        return True
