"""A CSV table of per-epoch metrics, in Keras's CSVLogger layout.

The first column is ``epoch``, then one column per metric, sorted by name; one row per epoch
written. Values are written with ``repr``, the shortest text that reads back as the same float,
so the ``csv`` module (``float(text)``) and pandas read them back exactly; NaN and the infinities
are ``nan``, ``inf`` and ``-inf``. A metric an epoch did not report is ``NA``, as Keras writes it
(pandas reads it as NaN).

Rows are only ever appended, as Keras appends them: a second run into the same file with
``append=True`` adds its rows after the first run's, even where its epochs count from 0 again.
Where Keras loses data, this table does not:

- A metric that first appears in a later epoch widens the header; earlier rows get ``NA``.
  Widening rewrites the file (to a temporary file in the same directory, then renamed into
  place), so a crash leaves the old table or the new one, never half of each.
- Opened with ``append=True`` on an existing table, the header is reconciled with the new
  metrics the same way, and rows follow the file's own column order.
- A last line without its line break is ended when it is a whole row (another program wrote
  the file so), and cut off when it is torn (a crash mid-write): too few cells, an empty one,
  or an epoch that is not an integer.

A metric named ``epoch`` is not written: the ``epoch`` column holds the epoch's index, and the
first such row warns (``UserWarning``, once per table) instead of dropping it silently.

A vector metric (a list of floats: Keras's ``F1Score`` per class) is written as Keras writes a
1-D iterable, ``"[0.5, 0.25, nan]"`` with the double quotes as part of the value (the ``csv``
module then quotes the cell and doubles them in the file: three quotes on each side).

Rows are removed only when a run resumes after a crash, for the epochs it is about to write
again (:meth:`CsvTable.drop_rows_from`, see ``docs/sinks/csv.md``).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import stat
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from eventbus.errors import ConfigError, LogCorruptError, LogError
from eventbus.openflags import UNTTY
from eventbus.outputs import file_type, mostly_holes, open_checked, stored_size, write_replacing
from eventbus.run import Run
from eventbus.sink import (
    FailingWrites,
    Sink,
    describe_os_error,
    given_up,
    is_transient,
    keep_trying,
)

__all__ = ["LINE_END", "MISSING", "CsvSink", "CsvTable", "format_value"]

#: What a row holds for a metric its epoch did not report (Keras's spelling).
MISSING = "NA"
#: How a row ends: the csv module's own (its excel dialect), which Keras's CSVLogger writes.
LINE_END = "\r\n"


def format_value(value: Any) -> str:
    """The text of one metric value: ``repr`` of the float, so it reads back exactly. A vector
    metric is Keras's CSVLogger text for a 1-D iterable, ``"[a, b, c]"`` with the quotes, each
    element written as a float is."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return f'"[{", ".join(map(format_value, value))}]"'
    if isinstance(value, (int, str)):
        return str(value)
    return repr(float(value))


#: How a header cell starts that a spreadsheet takes for a formula (``=HYPERLINK(...)``, ``+``,
#: ``-``, ``@``, a tab or carriage return before one): a metric name from a log someone else
#: wrote must not run as one when the file is opened.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(name: str) -> str:
    """A metric name as its header cell: with a ``'`` in front where it would start a formula,
    or starts with ``'`` already (so :func:`_name` gives every name back as it was)."""
    return f"'{name}" if name.startswith(_FORMULA_START) or name.startswith("'") else name


def _name(cell: str) -> str:
    """The metric name a header cell holds (:func:`_cell` undone)."""
    return cell[1:] if cell.startswith("'") else cell


class CsvTable:
    """One CSV file of epoch rows. ``write`` appends (or, to widen the header, rewrites) and
    flushes.

    ``separator`` is the one-character delimiter; ``append=False`` starts the file afresh,
    ``append=True`` continues an existing one (see the module docstring).

    A row that cannot be written (a full disk, a quota) is kept, the file cut back to where it
    was (no half row), and the OSError raised; :meth:`flush` and the next :meth:`write` write
    the kept rows first, in order. :meth:`close` tries for
    :data:`~eventbus.sink.CLOSE_RETRY_SECONDS`, then raises saying which epochs' rows were lost.
    """

    #: Kept rows at which a write gives up (a RuntimeError): memory stays bounded.
    max_kept_rows = 10_000

    def __init__(self, path: str | os.PathLike[str], *, separator: str = ",",
                 append: bool = False):
        if not isinstance(separator, str) or len(separator) != 1 or separator in '"\r\n':
            raise ConfigError(f"CSV separator must be one character other than a quote or a "
                              f"line break; got {separator!r}", field="separator")
        self.path = Path(path)
        self.separator = separator
        #: The metric columns, in file order (``epoch`` comes first and is not listed).
        self.columns: list[str] = []
        #: Whether the file has its header line (a new or emptied file gets it with the first
        #: row).
        self._headed = False
        self._warned_epoch = False
        self._file: Any = None
        #: Rows not yet in the file (a write failed): (epoch, logs), oldest first.
        self.kept: list[tuple[int, dict[str, Any]]] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()
        if append and os.fstat(self._file.fileno()).st_size > 0:
            self._end_last_line()
            header, _ = self._read()
            self.columns = [_name(cell) for cell in header[1:]]
            self._headed = bool(header)
        if not self._headed:  # a new file, one to start afresh, or one without a header line
            os.ftruncate(self._file.fileno(), 0)

    def _open(self) -> None:
        """Open the file at the path to append to, unbuffered (a failed write leaves nothing
        half in a buffer, only in the file, where it is cut back; appending, so the next write
        goes to the end as cut). Every later read and cut is made through this descriptor, and
        only a regular file is taken: a FIFO at the name would block the run for ever."""
        if self._file is not None:
            self._file.close()
            self._file = None
        try:
            fd, mode = open_checked(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | UNTTY)
        except OSError as exc:
            if exc.errno == getattr(os, "ENXIO", None):  # a FIFO nobody reads
                raise LogError(f"{self.path}: a FIFO, not a file; the CSV table is a regular "
                               "file", path=str(self.path)) from None
            if exc.errno == errno.EISDIR:  # (opened for writing: refused before a stat)
                raise LogError(f"{self.path}: a directory, not a file; the CSV table is a "
                               "regular file", path=str(self.path)) from None
            raise
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise LogError(f"{self.path}: {file_type(mode)}, not a file; the CSV table is a "
                           "regular file", path=str(self.path))
        self._file = os.fdopen(fd, "r+b", buffering=0)

    def _bytes(self) -> bytes:
        """The whole file, read through the table's own descriptor. A file that is mostly holes
        is refused unread: a planted one (a header, a hole, a torn line) was read whole and
        split into lines, eight times its claimed size in memory."""
        fd = self._file.fileno()
        info = os.fstat(fd)
        if mostly_holes(info):
            raise LogCorruptError(f"{self.path}: not a table: it claims {info.st_size:,} bytes "
                                  f"and stores {stored_size(info):,} (mostly holes)",
                                  path=str(self.path))
        return os.pread(fd, info.st_size, 0) if info.st_size else b""

    def _end_last_line(self) -> None:
        """A last line without its line break: ended if it is a whole row, cut off if torn."""
        data = self._bytes()
        if not data or data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        try:
            rows = self._scan(data)
        except LogCorruptError:  # torn inside a quoted cell; or the lines before are not CSV
            self._scan(data[:start])
            os.ftruncate(self._file.fileno(), start)
            return
        header = rows[0][0] if rows else []
        last = rows[-1][0] if rows else []
        # This table writes every cell (``NA`` for a missing value) and a row in one write, so
        # a row it tore lacks cells or ends in an empty one; a row of the header's width, all
        # cells there, came whole from another program (a spreadsheet ends no last line).
        epoch = last[0].strip().lstrip("-") if last else ""
        whole = start > 0 and len(rows) > 1 and len(last) == len(header) and all(last) and \
            epoch.isascii() and epoch.isdigit()
        if whole:
            self._file.write(LINE_END.encode())
        else:
            os.ftruncate(self._file.fileno(), start)

    def _scan(self, data: bytes) -> list[tuple[list[str], int]]:
        """Every row of ``data`` (the header first, blank lines left out), each with the offset
        its last line ends at: a cell may hold a line break (a quoted metric name), so a row is
        not a line. A file that is not CSV in UTF-8 is a LogCorruptError naming the line."""
        rows: list[tuple[list[str], int]] = []
        end = line = 0

        def lines() -> Iterator[str]:
            nonlocal end, line
            for raw in io.BytesIO(data):
                line += 1
                end += len(raw)
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise LogCorruptError(f"{self.path}:{line}: not UTF-8 text ({exc.reason} "
                                          f"at byte {exc.start})", path=str(self.path),
                                          line=line) from None

        limit = csv.field_size_limit()
        # A long metric name or vector is one cell, read whole (the file's size bounds it).
        csv.field_size_limit(max(limit, min(len(data) + 1, sys.maxsize)))
        try:
            # strict: a quote left open or out of place is an error, not a cell read on to the
            # end of the file.
            for row in csv.reader(lines(), delimiter=self.separator, strict=True):
                if row:
                    rows.append((row, end))
        except csv.Error as exc:
            raise LogCorruptError(f"{self.path}:{line}: not a CSV row ({exc})",
                                  path=str(self.path), line=line) from None
        finally:
            csv.field_size_limit(limit)
        return rows

    def _read(self) -> tuple[list[str], list[list[str]]]:
        header, rows, _ = self._read_ends()
        return header, rows

    def _read_ends(self) -> tuple[list[str], list[list[str]], list[int]]:
        """The header, the rows, and the offset each ends at (the header's first)."""
        scanned = self._scan(self._bytes())
        if not scanned:
            return [], [], []
        header = scanned[0][0]
        rows, ends = [row for row, _ in scanned[1:]], [end for _, end in scanned]
        if header[0] != "epoch":
            raise LogCorruptError(f"{self.path}: not an epoch table: the first column is "
                                  f"{header[0]!r}, expected 'epoch' (is the separator "
                                  f"{self.separator!r} right?)", path=str(self.path), line=1)
        return header, rows, ends

    def _epoch_of(self, row: list[str], line: int) -> int:
        try:
            return int(row[0])
        except (ValueError, IndexError):
            raise LogCorruptError(f"{self.path}:{line}: epoch {row[:1]} is not an integer",
                                  path=str(self.path), line=line) from None

    def _line(self, columns: list[str], epoch: int, logs: Mapping[str, Any]) -> list[str]:
        return [str(epoch)] + [format_value(logs[c]) if c in logs else MISSING for c in columns]

    def write(self, epoch: int, logs: Mapping[str, Any]) -> None:
        """Append the row for ``epoch`` (widening the header first if ``logs`` has a new
        metric), after any rows kept from failed writes."""
        if self._file is None:
            raise ValueError(f"{self.path}: the table is closed")
        if len(self.kept) >= self.max_kept_rows:
            # Not an OSError: a writer that keeps rows through those gives this one up.
            raise RuntimeError(f"{self.path}: {len(self.kept)} rows (epochs {self.kept[0][0]} "
                               f"to {self.kept[-1][0]}) could not be written; the table stops")
        self.kept.append((epoch, dict(logs)))
        self.flush()

    def flush(self) -> None:
        """Write the rows kept from failed writes; raises the OSError of one that fails again
        (it and those after it stay kept)."""
        if self._file is None:
            raise ValueError(f"{self.path}: the table is closed")
        while self.kept:
            self._write_row(*self.kept[0])
            self.kept.pop(0)

    def _write_row(self, epoch: int, logs: Mapping[str, Any]) -> None:
        # The epoch column wins over a metric that happens to be called "epoch" (Keras's
        # layout: one epoch column, the epoch's index); the metric is left out, and said so.
        if "epoch" in logs and not self._warned_epoch:
            self._warned_epoch = True
            warnings.warn(f"{self.path}: the metric named 'epoch' is not written: the epoch "
                          "column holds the epoch's index (rename the metric to keep it)",
                          UserWarning, stacklevel=2)
        keys = [key for key in logs if key != "epoch"]
        if not self._headed:
            columns = sorted(set(keys).union(self.columns))  # and those declared (widen)
            self._append([["epoch", *map(_cell, columns)], self._line(columns, epoch, logs)])
            self.columns, self._headed = columns, True
            return
        new = [key for key in keys if key not in self.columns]
        if new:
            self._rewrite(_widened(self.columns, new), [(epoch, logs)])
        else:
            self._append([self._line(self.columns, epoch, logs)])

    def widen(self, columns: Iterable[str]) -> None:
        """Declare metric columns before the first row, so the header has them from the start:
        a writer that knows every name (``eventbus convert``) writes the file once, where each
        new name would rewrite it (a log with thousands of names took minutes)."""
        if self._headed:
            raise ValueError(f"{self.path}: the header is written; columns are widened by "
                             "writing a row that has them")
        self.columns = sorted(set(self.columns).union(columns) - {"epoch"})

    def drop_last_row(self, epoch: int) -> bool:
        """Remove the file's last row if it is the row of ``epoch``; returns whether it was.

        For a run that resumes after a crash: the row of the epoch it is about to write again,
        which the crashed attempt wrote before its event log kept that epoch. The file is cut
        where the row before it ends.
        """
        if self._file is None:
            raise ValueError(f"{self.path}: the table is closed")
        if not self._headed:
            return False
        _, rows, ends = self._read_ends()
        if not rows or self._epoch_of(rows[-1], len(rows) + 1) != epoch:
            return False
        self._cut(ends[-2])
        return True

    def drop_rows_from(self, epoch: int, *, after_other_runs: bool = False) -> int:
        """Remove the rows a crashed attempt wrote for ``epoch`` and later; returns how many.

        A resumed run writes every epoch from ``epoch`` on again. Its crashed attempt may have
        written rows the event log never kept: the row of the epoch it was ending, or several
        when the log could not be written for a while (a full disk). In a table the run wrote
        alone, every row of ``epoch`` or later is the attempt's. In a table appended after
        other runs' rows (``after_other_runs``), the attempt's rows are those after the last
        row of epoch ``epoch - 1`` (the last the log has); for ``epoch`` 0 only a last row of
        epoch 0 can be told apart from an earlier run's.
        """
        if self._file is None:
            raise ValueError(f"{self.path}: the table is closed")
        if not self._headed:
            return 0
        _, rows, ends = self._read_ends()
        epochs = [self._epoch_of(row, line) for line, row in enumerate(rows, 2)]
        keep = len(rows)
        if not after_other_runs:
            while keep and epochs[keep - 1] >= epoch:
                keep -= 1
        elif epoch == 0:
            keep -= bool(epochs) and epochs[-1] == 0
        else:
            last = max((i for i, e in enumerate(epochs) if e == epoch - 1), default=None)
            if last is not None:
                keep = last + 1
        if keep == len(rows):
            return 0
        self._cut(ends[keep])  # where row keep - 1 ends (the header's end for none)
        return len(rows) - keep

    def _cut(self, size: int) -> None:
        """Truncate the file to ``size`` bytes, on disk; the table appends, so it writes on
        from there."""
        fd = self._file.fileno()
        os.ftruncate(fd, size)
        os.fsync(fd)

    def _append(self, rows: list[list[str]]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=self.separator, lineterminator=LINE_END).writerows(rows)
        data = buffer.getvalue().encode("utf-8")
        fd = self._file.fileno()
        size = os.fstat(fd).st_size
        done = 0
        try:
            while done < len(data):  # a raw write may be partial
                done += os.write(fd, data[done:])
        except OSError:
            # No half row: the file is cut back to where it was (a failed write may also have
            # grown it with nothing written, as tmpfs does).
            with contextlib.suppress(OSError):
                if os.fstat(fd).st_size != size:
                    os.ftruncate(fd, size)
            raise

    def _rewrite(self, columns: list[str], extra: list[tuple[int, Mapping[str, Any]]]) -> None:
        """Write the table again under ``columns``, with the rows of ``extra`` added at the end
        (a failure leaves the file as it was)."""
        header, rows = self._read()
        old = [_name(cell) for cell in header[1:]]
        out = [["epoch", *map(_cell, columns)]]
        for row in rows:
            values = dict(zip(old, row[1:]))
            out.append([row[0]] + [values.get(c, MISSING) for c in columns])
        out.extend(self._line(columns, epoch, logs) for epoch, logs in extra)
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as file:
                csv.writer(file, delimiter=self.separator, lineterminator=LINE_END).writerows(out)

        # Beside it under a name nobody can plant a link at, on disk, then renamed over it.
        write_replacing(self.path, write, durable=True)
        self.columns = columns
        self._open()  # the file replaced: write on in the new one

    def close(self) -> None:
        """Write the kept rows (trying for a while), sync and close; an OSError says which
        rows were lost."""
        if self._file is None:
            return
        try:
            if self.kept:
                try:
                    keep_trying(self.flush)
                except OSError as exc:
                    epochs = ", ".join(str(epoch) for epoch, _ in self.kept)
                    self.kept.clear()
                    raise given_up(exc, f"{self.path}: the rows of epochs {epochs}") from exc
            os.fsync(self._file.fileno())
        finally:
            self._file.close()
            self._file = None

    def __enter__(self) -> CsvTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CsvSink(Sink):
    """The run's epochs as a CSV table, on the bus: ``Bus(log=["run.jsonl", CsvSink("h.csv")])``.

    It takes the ``epoch_end`` records (a row each, in :class:`CsvTable`), and ``train_begin``
    and ``train_end`` to open and close the file per fit: afresh, or continued with
    ``append=True``. A run the bus resumed (``run.resumed``; it publishes no ``train_begin``)
    always continues the file, whatever ``append`` says: the rows of the epochs before the
    crash are the run's too. The rows a crashed attempt wrote for the epoch the run resumes
    from, and later ones the event log never kept, are removed before the resumed run writes
    those epochs again (:meth:`CsvTable.drop_rows_from`). A row a full disk refused is kept
    and written at the next flush, the fault reported once while it lasts.

    ``plugins.CSVLogger`` is this sink with Keras's name and parameters, listed in the log's
    header as a plugin.
    """

    name = "csv"
    side_effects = True
    takes = frozenset({"train_begin", "epoch_end", "train_end"})
    #: Rows held while the table cannot be opened, at which the table gives up.
    max_held_rows = CsvTable.max_kept_rows

    def __init__(self, filename: str | os.PathLike[str], separator: str = ",",
                 append: bool = False):
        who = type(self).__name__
        if not isinstance(filename, (str, os.PathLike)) or not os.fspath(filename):
            raise ConfigError(f"{who}: filename must be a file path (a non-empty str or "
                              f"os.PathLike); got {type(filename).__name__} {filename!r}",
                              field="filename")
        if not isinstance(separator, str) or len(separator) != 1:
            raise ConfigError(f"{who}: separator must be one character; got {separator!r}",
                              field="separator")
        if not isinstance(append, bool):
            raise ConfigError(f"{who}: append must be True or False; got {append!r}",
                              field="append")
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = append
        self._table: CsvTable | None = None
        self._run: Run | None = None
        self._failing = FailingWrites()
        #: An opening a full disk refused, still to make: (append, the epoch from which a
        #: resumed run drops the crashed attempt's rows, or None).
        self._opening: tuple[bool, int | None] | None = None
        #: Rows that came while the table could not be opened: (epoch, logs), oldest first.
        self._held: list[tuple[int, dict[str, Any]]] = []

    def _open(self, append: bool) -> CsvTable:
        self._close()
        self._table = CsvTable(self.filename, separator=self.separator, append=append)
        return self._table

    def _start(self, append: bool, drop_from: int | None = None) -> None:
        """Open the table (and, for a resumed run, drop the rows from ``drop_from`` on), now
        or, if the disk refuses it for a while, at the next flush or row that can."""
        self._opening, self._held = (append, drop_from), []
        self._ready("train_begin" if drop_from is None else "resume")

    def _ready(self, event: str, *, strict: bool = False) -> CsvTable | None:
        """The table, its opening made if it waited; None while the disk still refuses it
        (the fault reported once a spell; ``strict``: raised). The rows held meanwhile are
        written first."""
        if self._opening is not None:
            append, drop_from = self._opening
            try:
                table = self._open(append)
                if drop_from is not None:
                    table.drop_rows_from(drop_from, after_other_runs=self.append)
            except OSError as exc:
                self._close()
                if not is_transient(exc):  # refused for good: no opening waits any more
                    held, self._opening, self._held = len(self._held), None, []
                    if held:  # what is lost is said, as a write's close says it
                        raise OSError(exc.errno, f"{self.filename}: the table cannot be "
                                      f"opened ({describe_os_error(exc)}); the {held} row(s) "
                                      "held for it are lost") from exc
                    raise
                if strict or self._run is None:
                    raise
                self._failing.failed(
                    self._run, self._reported_as(self._run), event, exc,
                    "opening the table" + ("" if drop_from is None else
                                           f" and dropping its rows from epoch {drop_from} on")
                    + " waits, with the rows that come meanwhile",
                    then="done at the next flush or row that can")
                return None
            self._opening = None
            self._failing.over()
        table = self._table
        if table is not None and self._held:
            table.kept.extend(self._held)  # before any later row, in order
            self._held.clear()
            self._keeping(table.flush)  # now, not held against the kept rows' limit
        return table

    def _close(self) -> None:
        table, self._table = self._table, None
        if table is not None:
            table.close()

    def _reported_as(self, run: Run) -> str:
        """The name its faults are recorded under."""
        return self.name

    def open(self, run: Run) -> None:
        self._run = run
        self._failing.over()  # a new run: its first failed write is reported
        if run.resumed:
            # The run goes on: its file continues, less what a crashed attempt wrote for the
            # epochs the loop runs again.
            self._start(True, run.initial_epoch)

    def write(self, record: dict[str, Any]) -> None:
        kind = record["kind"]
        if kind == "epoch_end":
            if self._table is None and self._opening is None:
                # A loop that never publishes train_begin opens the file as train_begin would.
                self._start(self.append)
            if self._opening is None:
                self._keeping(self._table.write, record["epoch"], record["logs"])
                return
            # The opening waits: the row waits with the others, written (or counted as lost)
            # with them when the opening is made (or refused for good).
            if len(self._held) >= self.max_held_rows:
                raise RuntimeError(f"{self.filename}: {len(self._held)} rows could not be "
                                   "written (the table could not be opened); the table stops")
            self._held.append((record["epoch"], dict(record["logs"])))
            self._ready("epoch_end")
        elif kind == "train_begin":
            self._start(self.append)
        else:  # train_end
            self._end()

    def flush(self) -> None:
        table = self._ready("flush") if self._opening is not None else self._table
        if table is not None and table.kept:
            self._keeping(table.flush)

    def _keeping(self, call: Any, *args: Any) -> None:
        """``call(*args)``; a row it could not write (a full disk) stays in the table, tried
        again at the next flush, and the fault is reported once while it lasts."""
        try:
            call(*args)
        except OSError as exc:
            if self._run is None or self._table is None:
                raise
            kept = self._table.kept
            self._failing.failed(self._run, self._reported_as(self._run), "epoch_end", exc,
                                 f"the rows of epochs {kept[0][0]} to {kept[-1][0]} kept")
            return
        self._failing.over()

    def close(self) -> None:
        self._end()

    def _end(self) -> None:
        """Close the table (at train_end, and at close), its opening made first if it waited:
        for a while, then what was lost is said."""
        if self._opening is not None and self._run is not None:
            held = len(self._held)
            try:  # the disk refused the opening to the end: a while more, then said
                keep_trying(lambda: self._ready("close", strict=True), transient_only=True)
            except OSError as exc:
                self._held, self._opening = [], None
                if not is_transient(exc):
                    raise  # refused for good: it says what is lost
                raise given_up(exc, f"{self.filename}: the table's opening and {held} "
                                    "row(s)") from exc
        self._close()


def _widened(columns: list[str], new: list[str]) -> list[str]:
    """The header's metric columns with ``new`` ones: sorted, as this writer heads a table;
    or, for a file of another order (``append=True`` to a table someone else wrote), in the
    file's own order with the new names after it, so its columns do not move."""
    if columns == sorted(columns):
        return sorted({*columns, *new})
    return [*columns, *sorted(new)]
