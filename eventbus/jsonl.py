"""The JSON Lines event log: one record per line, written through orjson.

Writing: lines collect in a memory buffer and go to the file in one ``write`` when the bus flushes
(every epoch end and every decision) or when the buffer holds ``buffer_bytes``; ``sync()`` also
fsyncs (the bus does so at ``train_end`` and ``close()``). A crash therefore loses at most the
records since the last flush, and can tear at most the last line.

Reading: a torn last line (no newline, not a whole record) is dropped with a
:class:`TornLogWarning`; every complete record before it is returned. Any other bad line raises
:class:`LogCorruptError` with the file and line number.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import stat
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from .errors import LogCorruptError, LogError, SchemaVersionError
from .lock import lock_exclusive
from .metrics import MAX_INDEX
from .openflags import DIR_FD, FOLDER, NO_FOLLOW, NON_BLOCK
from .outputs import file_type, open_checked
from .records import (
    BATCH_KINDS,
    KINDS,
    OBSERVATION_KINDS,
    SCHEMA_VERSION,
    TRUSTED,
    Record,
    decode_nonfinite,
    encode_nonfinite,
    parse_record,
    set_model_dict,
    writable_text,
)
from .records import Warning as WarningRecord
from .sink import DrainMark, FailingWrites, Sink, drain, given_up, keep_trying, settle_drain
from .terminal import printable

__all__ = ["MAX_LINE_BYTES", "JsonlWriter", "TornLogWarning", "encode_line", "find_kinds",
           "iter_jsonl_dicts",
           "find_kinds_from_end", "last_seq", "prepare_append", "read_jsonl", "truncate_torn_tail"]

_OPTIONS = orjson.OPT_APPEND_NEWLINE
_dumps = orjson.dumps
# A line that needs encode_nonfinite: a null (orjson's NaN or infinity), or a string that spells
# one (escaped so it reads back a string). Compiled searches: ``b"null" in line`` costs twice
# as much (bytes.__contains__ first tries the needle as an int and builds, then discards, a
# TypeError). Only the kinds with free text in restored fields (evidence, details, params,
# meta) can hold such a string: an observation's logs hold numbers alone.
_find_null = re.compile(b"null").search
_find_spelled = re.compile(b'NaN"|Infinity"').search
_NUMBERS_ONLY = frozenset(OBSERVATION_KINDS) - {"train_begin"}


def encode_line(record: dict[str, Any]) -> bytes:
    """``record`` as the line a log holds: orjson's bytes, or, where it holds a non-finite
    float (orjson writes null) or a string that spells one, :func:`encode_nonfinite`'s."""
    try:
        line = _dumps(record, option=_OPTIONS)
    except orjson.JSONEncodeError:
        record = writable_text(record)  # a lone surrogate in a message; else raises again
        line = _dumps(record, option=_OPTIONS)
    if _find_null(line) or (record.get("kind") not in _NUMBERS_ONLY and _find_spelled(line)):
        line = _dumps(encode_nonfinite(record), option=_OPTIONS)
    return line
_CHUNK = 1 << 18  # read in 256 KiB pieces: their lines stay in the caches (5% faster than 1 MiB)
#: The longest line a reader takes. No record this library writes comes near it (a header with
#: many plugins is a few kilobytes); a longer line is damage, and refusing it bounds the memory
#: a hostile file can make a reader hold.
MAX_LINE_BYTES = 64 << 20


class TornLogWarning(UserWarning):
    """The last line of a log was cut short, most likely by a crash mid-write."""


class Where(NamedTuple):
    """A record's place, for an error: its file, its line (JSON Lines) or row (Parquet) counted
    from 1, and both as a message begins with them (``run.jsonl:12``, ``seg-....parquet (row
    12)``)."""

    path: str
    line: int
    text: str


def _line_at(path: str | os.PathLike[str], number: int) -> Where:
    return Where(str(path), number, f"{path}:{number}")


def truncate_torn_tail(path: str | os.PathLike[str]) -> int:
    """Cut an unfinished last line off ``path`` so records can be appended; returns bytes cut."""
    with open(path, "rb+") as file:
        end, size = _last_line_start(file)
        if end < size:
            file.truncate(end)
        return size - end


def _last_line_start(file: Any) -> tuple[int, int]:
    """Where the bytes after the last newline of an open file begin, and the file's size."""
    size = pos = file.seek(0, os.SEEK_END)
    while pos > 0:
        step = min(_CHUNK, pos)
        file.seek(pos - step)
        newline = file.read(step).rfind(b"\n")
        if newline != -1:
            return pos - step + newline + 1, size
        pos -= step
    return 0, size


def prepare_append(path: str | os.PathLike[str], fd: int | None = None) -> None:
    """Make the log at ``path`` ready to append to, refusing a file that is not an event log.
    ``fd``: the log already open for reading and appending, worked on instead of opening
    ``path`` again (which may have been replaced since, by a link).

    A last line without its newline is ended if it is a whole record (a crash can cut a write
    just before the newline; the reader returns that record, so it is the run's), and cut off
    if it is torn.
    """
    with (open(path, "rb+") if fd is None else os.fdopen(os.dup(fd), "rb+")) as file:
        file.seek(0)
        first = file.readline()
        if not first:
            return  # empty: appending writes the header first
        try:
            header = orjson.loads(first) if first.endswith(b"\n") else None
        except orjson.JSONDecodeError:
            header = False
        if not first.startswith(b"{") or header is False or (
                header is not None and (not isinstance(header, dict)
                                        or header.get("kind") != "header")):
            raise LogError(f"{path}: not an event log (its first line is not a header record); "
                           "refusing to append to it", path=str(path))
        end, size = _last_line_start(file)
        if end == size:
            return
        file.seek(end)
        tail = file.read()
        try:
            record = orjson.loads(tail)
        except orjson.JSONDecodeError:
            file.truncate(end)  # torn by a crash mid-write
            return
        if end == 0 and (not isinstance(record, dict) or record.get("kind") != "header"):
            raise LogError(f"{path}: not an event log (its first line is not a header "
                           "record); refusing to append to it", path=str(path))
        if not isinstance(record, dict) or "kind" not in record or "v" not in record:
            raise LogCorruptError(f"{path}: the last line is not a record (needs 'kind' and "
                                  "'v'); refusing to append to it", path=str(path))
        file.seek(size)
        file.write(b"\n")


def _open_log_file(path: Path, *, follow_links: bool = True) -> Any:
    """``path`` opened to append (and read, to prepare it), unbuffered: a regular file, or a
    new one. Opened without blocking, so a FIFO put where a log goes (a backup folder others
    can write) is an error now instead of a training run that never starts; a device or
    socket is refused too; with ``follow_links=False`` so is a link at ``path``."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT
    if not follow_links:
        flags |= NO_FOLLOW
    try:
        fd, mode = open_checked(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO with no reader
            raise LogError(f"{path}: not a regular file (a FIFO); a log is a file",
                           path=str(path)) from None
        if exc.errno == errno.ELOOP and not follow_links:
            raise LogError(f"{path}: a symbolic link; this log is never written through one "
                           "(a link planted in a folder others can write would send the "
                           "records elsewhere)", path=str(path)) from None
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise LogError(f"{path}: not a regular file ({file_type(mode)}); a log is a file",
                       path=str(path))
    return os.fdopen(fd, "ab", buffering=0)


def open_for_reading(path: str | os.PathLike[str]) -> Any:
    """The log at ``path`` opened to read: a regular file. Opened without blocking and then
    checked, so a FIFO put where a log is looked for (a rank file, a log in a folder
    ``verify`` walks) is an error now instead of a command that waits for ever; a device or
    socket is refused too, and a directory is the ``IsADirectoryError`` ``open`` gives."""
    fd, mode = open_checked(path)
    try:
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
        if not stat.S_ISREG(mode):
            raise LogCorruptError(f"{os.fspath(path)}: not a regular file ({file_type(mode)}); "
                                  "a log is a file", path=os.fspath(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class JsonlWriter(Sink):
    """Append records to a JSON Lines file: the event log as a sink.

    ``append=True`` continues an existing log (after cutting a torn last line); ``False``
    empties the file at once. Left out, the bus it is given to decides, as for a log given by
    its path: ``Bus(..., resume=True)`` continues it, any other bus starts it afresh; written
    to without a bus, it is emptied as the first records are written to it, and closed with
    none written it leaves the file as it was. (Emptied at once, a crashed run's log was lost
    before ``resume=True`` could read it.) ``follow_links=False`` refuses a link at
    ``path`` (a log in a folder others can write: a backup). It takes the bus's fast path:
    finite batch records arrive as lines already encoded, appended to ``line_buffer``.

    A write that fails (a full disk, a quota) on a bus loses nothing: what did not reach the
    file stays in the buffer and is written at the next flush, and the fault is reported once
    (a ``sink_failed`` naming the errno, which the log itself holds once the disk has room).
    Only when more than ``max_kept_bytes`` wait does the failure end the writer, as any sink
    failure does. ``close()`` tries for :data:`~eventbus.sink.CLOSE_RETRY_SECONDS`; if the
    bytes still cannot be written it cuts a line left half-written (the log ends with whole
    lines) and raises an OSError saying how many records were lost.
    """

    name = "jsonl"
    #: The run's own event log: a bus resumes from it (``eventbus.log.log_path``).
    event_log = True

    def __init__(self, path: str | os.PathLike[str], *, append: bool | None = None,
                 buffer_bytes: int = 1 << 20, max_kept_bytes: int = 256 << 20,
                 follow_links: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered file: the bytearray is the buffer, one write per flush. (Many small bytes
        # objects kept in a list cost several times more: their memory is fresh each round.)
        # Opened to append, and locked, before anything in it changes: a second writer of the
        # path is refused before it can truncate or cut the first's log.
        self._file = _open_log_file(self.path, follow_links=follow_links)
        try:
            fd = self._file.fileno()
            lock_exclusive(fd, self.path)
            self._undecided = True
            if append is not None:
                self.settle(append=append)
        except BaseException:
            self._file.close()
            raise
        self._follow_links = follow_links
        self._identity = _identity(os.fstat(self._file.fileno()))
        # Where the file is, whatever the working directory becomes (the loop may chdir) or a
        # link on the way is pointed to (another run's folder): its folder, held open.
        self._where = Path(os.path.abspath(self.path))
        self._folder = _pin(self._where.parent)
        self._buffer = self.line_buffer = bytearray()
        self._limit = self.buffer_bytes = buffer_bytes
        self._max_kept = max_kept_bytes
        self._run: Any = None
        self._failing = FailingWrites()
        self._torn = 0  # bytes of a line a failed write left half-written at the file's end
        self._drain_mark = DrainMark()
        #: The name its records are reported under: which log, where there are several.
        self.name = f"jsonl {self.path}"

    @property
    def behind(self) -> bool:
        """Whether records it could not write wait for its next flush (a full disk)."""
        return self._failing.fault is not None

    @property
    def size(self) -> int:
        """The bytes in the file now (of the file open, whatever is at its name)."""
        return os.fstat(self._file.fileno()).st_size

    def settle(self, *, append: bool) -> None:
        """Continue the log at the path (``append``) or start it afresh; once, before the
        first record is written (the bus does it as it takes the writer)."""
        if not self._undecided:
            return
        fd = self._file.fileno()
        if not append:
            os.ftruncate(fd, 0)
        elif os.fstat(fd).st_size:
            prepare_append(self.path, fd)  # the file locked, not whatever is at the name
        self._undecided = False

    def open(self, run: Any) -> None:
        self._run = run  # to report a fault it keeps going through

    def write(self, record: dict[str, Any]) -> None:
        line = encode_line(record)
        buffer = self._buffer
        buffer += line
        if len(buffer) >= self._limit:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        if self._undecided:
            self.settle(append=False)
        self._keep_the_name()
        try:
            self._write_buffer()
        except OSError as exc:
            if self._run is None or len(self._buffer) > self._max_kept:
                raise
            self._failing.failed(self._run, self.name, "flush", exc,
                                 f"{len(self._buffer)} bytes kept")
            return
        self._failing.over()

    def _keep_the_name(self) -> None:
        """Make sure the file written is the one at the log's name, in its folder. A log
        removed or renamed while the run writes it (a cleanup, a logrotate rule, its folder
        removed) would take every later record with it, unseen: it is written again under its
        name from the open file, which still holds all of it, locked before anything is
        copied, and a ``warning`` recorded. An empty file put at the name (logrotate's
        ``create``) is taken for it when no writer holds it. Any other file put there since (a
        second writer came in after the removal) is not touched: the log goes on beside it,
        ``<name>.<run id>.recovered<ending>``, written again the same way."""
        name = self._where.name
        if self._folder is not None and _removed(self._folder):
            os.close(self._folder)  # the folder itself was removed: made again by its path
            self._where.parent.mkdir(parents=True, exist_ok=True)
            self._folder = _pin(self._where.parent)
        try:
            at_name = _stat(name, self._folder, self._where, follow=self._follow_links)
        except FileNotFoundError:
            # Nothing, or a link to nothing: a link put there since is someone else's, and
            # the log is never made through it.
            try:
                at_name = _stat(name, self._folder, self._where, follow=False)
            except FileNotFoundError:
                at_name = None
        except OSError:
            return  # cannot tell (a permission): write on where the run has written
        if at_name is not None and _identity(at_name) == self._identity:
            return
        gone = self._where
        new = self._adopt(name) if at_name is not None and stat.S_ISREG(at_name.st_mode) \
            and at_name.st_size == 0 else None
        target = gone
        if new is None:
            if at_name is not None:
                tag = getattr(self._run, "run_id", None) or os.getpid()
                target = gone.with_name(f"{gone.stem}.{tag}.recovered{gone.suffix}")
            new = self._create(target)
        try:
            old = self._file.fileno()
            size, done = os.fstat(old).st_size, 0
            while done < size:
                chunk = os.pread(old, min(1 << 20, size - done), done)
                if not chunk:
                    break
                done += os.write(new.fileno(), chunk)
            os.fsync(new.fileno())
        except BaseException:
            new.close()
            raise
        self._file.close()
        self._file, self._identity = new, _identity(os.fstat(new.fileno()))
        self.path = self._where = target
        if self._run is not None:
            message = (f"{gone}: the log was removed or renamed while the run wrote it; it is "
                       "written again at its path, from the start of the run") \
                if target == gone else \
                (f"{gone}: the log was removed while the run wrote it, and another file is at "
                 f"its path now (a second writer?), left as it is; the run's log goes on in "
                 f"{target}, from the start of the run")
            self._run.report(WarningRecord(source=self.name, message=message,
                                           details={"path": str(target), "bytes": done}))

    def _adopt(self, name: str) -> Any:
        """The empty regular file at ``name`` open and locked, if no writer holds it (what
        logrotate's ``create`` leaves after moving the log away); else None."""
        try:
            fd = os.open(name if self._folder is not None else self._where,
                         os.O_RDWR | os.O_APPEND | NO_FOLLOW | NON_BLOCK,
                         dir_fd=self._folder)
        except OSError:
            return None
        file = os.fdopen(fd, "ab", buffering=0)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size:
                raise LogError(f"{name}: not an empty file")
            lock_exclusive(fd, self._where)
            if os.fstat(fd).st_size:  # written by someone between the check and the lock
                raise LogError(f"{name}: not an empty file")
            os.set_blocking(fd, True)
            return file
        except (OSError, LogError):
            file.close()
            return None

    def _create(self, target: Path) -> Any:
        """A new file at ``target`` (O_EXCL: never through a link, never another's file), in
        the log's folder held open, locked."""
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | NO_FOLLOW
        in_folder = self._folder is not None and target.parent == self._where.parent
        try:
            if in_folder:
                fd = os.open(target.name, flags, 0o666, dir_fd=self._folder)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(target, flags, 0o666)
        except FileExistsError:
            raise LogError(f"{self._where}: another file is now at the log's path (was the log "
                           f"removed and a second writer started on it?), and at {target} too; "
                           "this run's records from here on are lost",
                           path=str(self._where)) from None
        new = os.fdopen(fd, "ab", buffering=0)
        try:
            lock_exclusive(fd, target)
        except BaseException:
            new.close()
            raise
        return new

    def _write_buffer(self) -> None:
        """Write the whole buffer (``sink.drain``), keeping count of a line left
        half-written at the file's end."""
        drain(self._file, self._buffer, self._count_torn, self._drain_mark)

    def _count_torn(self, done: int) -> None:
        end = self._buffer.rfind(b"\n", 0, done)
        self._torn = done - end - 1 if end >= 0 else self._torn + done

    def sync(self) -> None:
        self.flush()
        os.fsync(self._file.fileno())

    def forget_unflushed(self) -> None:
        """Drop the records not yet written, as a kill now would lose them (see
        ``Recorder.fan_out``: a record whose way to the sinks an interrupt cut). The rest of a
        line a failed write left half in the file is kept, for the next flush to end it: a
        record appended to half a line is damage in the middle of the log, which no resume
        goes on from (a kill leaves the half line as the torn tail a resume cuts)."""
        settle_drain(self._file, self._buffer, self._count_torn, self._drain_mark)
        if not self._torn:
            self._buffer.clear()
            return
        end = self._buffer.find(b"\n")  # the end of the half-written line: kept up to it
        if end >= 0:
            del self._buffer[end + 1:]

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            if self._undecided and self._buffer:
                self.settle(append=False)
            # (Closed with nothing written, undecided, it leaves the file as it is: a bus that
            # failed before it took the writer must not empty the log it was to resume.)
            self._keep_the_name()
            if self._buffer:
                try:
                    keep_trying(self._write_buffer)
                except OSError as exc:
                    raise self._given_up(exc) from exc
            os.fsync(self._file.fileno())
        finally:  # a file that cannot be written is still let go (its descriptor, its lock)
            self._file.close()
            if self._folder is not None:
                os.close(self._folder)
                self._folder = None

    def _given_up(self, exc: OSError) -> OSError:
        """The error ``close()`` raises for a buffer it could not write: the file is cut back
        to its last whole line, so the log reads back whole, without the records lost."""
        lost = self._buffer.count(b"\n")
        cut = ""
        if self._torn:
            with contextlib.suppress(OSError):
                os.ftruncate(self._file.fileno(), os.fstat(self._file.fileno()).st_size -
                             self._torn)
                cut = f"; the half-written line ({self._torn} bytes) was cut"
        self._buffer.clear()
        error = given_up(exc, f"{self.path}: the last {lost} record(s)")
        return OSError(error.errno, f"{error.strerror}{cut}")

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _pin(folder: Path) -> int | None:
    """``folder`` held open, so its files are found in it whatever its path comes to mean."""
    if not DIR_FD:
        return None
    try:
        return os.open(folder, FOLDER)
    except OSError:
        return None


def _removed(folder: int) -> bool:
    try:
        return os.fstat(folder).st_nlink == 0
    except OSError:
        return True


def _stat(name: str, folder: int | None, where: Path, *, follow: bool) -> os.stat_result:
    """What is at ``name`` in the folder held open (or at ``where``, without one)."""
    if folder is None:
        return os.stat(where, follow_symlinks=follow)
    return os.stat(name, dir_fd=folder, follow_symlinks=follow)


def _torn(path: Path, number: int, line: bytes) -> None:
    warnings.warn(printable(f"{path}: the last line (line {number}, {len(line)} bytes) is "
                            "incomplete, most likely cut by a crash mid-write; ignored"),
                  TornLogWarning, stacklevel=4)


_BOM = b"\xef\xbb\xbf"


def _opens_a_record(line: bytes) -> bool:
    """Whether ``line`` starts as a JSON record would (blanks and an editor's byte-order mark
    aside: the JSON reader names those): one that does not is another kind of file, not a
    damaged log."""
    return line.removeprefix(_BOM).lstrip().startswith(b"{")


def _not_a_log(path: Path) -> LogCorruptError:
    return LogCorruptError(f"{path}: not an event log: it does not start with a JSON record",
                           path=str(path), line=1)


def _bad_line(path: Path, number: int, line: bytes, exc: Exception) -> LogCorruptError:
    what = "not JSON" if isinstance(exc, orjson.JSONDecodeError) else \
        "not a record (needs 'kind' and 'v')"
    return LogCorruptError(f"{path}:{number}: line is {what}: {exc}", path=str(path),
                           line=number, field=None if what == "not JSON" else "v")


def iter_jsonl_dicts(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every record of a JSON Lines log as a plain dict (non-finite floats restored).

    Checks that each line is a JSON record of a schema version this library reads and that the
    log starts with its header; :func:`read_jsonl` checks each record's kind and shape. Reads
    256 KiB at a time and looks for non-finite spellings once per piece, not once per line; line
    numbers are worked out only for an error. A line longer than :data:`MAX_LINE_BYTES` is a
    :class:`LogCorruptError`, torn or not.
    """
    path = Path(path)
    loads = orjson.loads
    version = SCHEMA_VERSION
    before = 0  # lines in the pieces already read
    tail = b""
    with open_for_reading(path) as file:
        for data, cut in _pieces(path, file):
            if cut < 0:
                tail = data
                break
            lines = data.split(b"\n")
            del lines[-1]  # what follows the last newline: the next piece starts with it
            special = _may_hold_nonfinite(data)
            if not before:
                yield _first_record(path, lines[0])
                del lines[0]
                before = 1
            for line in lines:
                try:
                    record = loads(line)
                    # ``is not``: True == 1, and a bool is no schema version (check_version
                    # passes a 1 that is not the cached one: only the speed rests on it)
                    if record["v"] is not version:
                        check_version(record["v"],
                                       _line_at(path, before + _index(lines, line) + 1))
                except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                    raise _bad_line(path, before + _index(lines, line) + 1, line, exc) from None
                if special and _may_hold_nonfinite(line):
                    decode_nonfinite(record)
                yield record
            before += len(lines)
    if tail:  # a last line without its newline: whole, or cut by a crash mid-write
        record = _tail_record(path, before, tail)
        if record is not None:
            yield record
    elif not before:
        raise LogCorruptError(f"{path}: empty log (no header record)", path=str(path))


def _tail_record(path: Path, before: int, tail: bytes) -> dict[str, Any] | None:
    """The record on a last line without its newline, after ``before`` lines; None (and a
    :class:`TornLogWarning`) when a crash cut it."""
    number = before + 1
    try:
        record = orjson.loads(tail)
    except orjson.JSONDecodeError:
        if not before and not _opens_a_record(tail):  # no crash cuts a log to that
            raise _not_a_log(path) from None
        _torn(path, number, tail)
        return None
    try:
        record["v"]  # KeyError or TypeError: whole JSON, but not a record (no cut makes it)
    except (KeyError, TypeError) as exc:
        raise _bad_line(path, number, tail, exc) from None
    return _checked(record, path, number)


def _pieces(path: Path, file: Any) -> Iterator[tuple[bytes, int]]:
    """``file`` read a piece at a time, as ``(data, cut)``: ``data`` holds whole lines up to
    ``cut`` (just after its last newline) and the start of the next line after it, which the
    next piece begins with again. Last comes ``(what follows the last newline, -1)``: a line
    without its newline, whole or torn (b"" when the file ends with a newline).

    A line longer than a piece is gathered in parts and joined once, when it ends, never copied
    again with every piece; one longer than :data:`MAX_LINE_BYTES` is a
    :class:`LogCorruptError` naming it, before it is held whole."""
    offset = 0  # where ``data`` starts in the file
    rest: list[bytes] = []  # the start of a line the next piece finishes, in parts
    size = 0  # of the bytes in ``rest``
    while chunk := file.read(_CHUNK):
        if rest:
            end = chunk.find(b"\n")
            if size + (len(chunk) if end == -1 else end) > MAX_LINE_BYTES:
                raise _too_long(path, _lines_before(file, offset) + 1)
            rest.append(chunk)
            if end == -1:
                size += len(chunk)
                continue
            data = b"".join(rest)
        else:
            data = chunk
        cut = data.rfind(b"\n") + 1
        size = len(data) - cut
        rest = [data[cut:]] if size else []
        if size > MAX_LINE_BYTES:
            raise _too_long(path, _lines_before(file, offset + cut) + 1)
        if cut:
            yield data, cut
        offset += cut
    yield b"".join(rest), -1


def _too_long(path: Path, number: int) -> LogCorruptError:
    return LogCorruptError(f"{path}:{number}: line is longer than {MAX_LINE_BYTES:,} bytes "
                           f"(jsonl.MAX_LINE_BYTES): no record is that long; the file is "
                           "damaged or not an event log", path=str(path), line=number)


def _lines_before(file: Any, offset: int) -> int:
    """How many newlines the open ``file`` has before ``offset`` (for an error's line)."""
    file.seek(0)
    count = 0
    while offset > 0:
        piece = file.read(min(_CHUNK, offset))
        if not piece:
            break
        count += piece.count(b"\n")
        offset -= len(piece)
    return count


def _may_hold_nonfinite(data: bytes) -> bool:
    """Whether ``data`` may spell a NaN or an infinity ("NaN", "Infinity", "-Infinity").

    A search for one byte is many times faster than one for a word: a piece of batch records
    usually has neither capital, and only then is the words' search skipped.
    """
    return (b"N" in data or b"I" in data) and (b'NaN"' in data or b'Infinity"' in data)


def _index(lines: list[bytes], line: bytes) -> int:
    """Where ``line`` is in ``lines``: the first of its value that is also the same object
    (equal one-byte lines can be one object; the first of them is the one that failed)."""
    return next(i for i, item in enumerate(lines) if item is line)


def _first_record(path: Path, line: bytes) -> dict[str, Any]:
    try:
        record = orjson.loads(line)
        record["v"]  # KeyError or TypeError: not a record
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        if isinstance(exc, orjson.JSONDecodeError) and not _opens_a_record(line):
            raise _not_a_log(path) from None  # a CSV, a checkpoint: the wrong file
        raise _bad_line(path, 1, line, exc) from None
    return _checked(record, path, 1)


def _checked(record: dict[str, Any], path: Path, number: int) -> dict[str, Any]:
    """A record read off its own (the first line, or a last one without its newline): its
    schema version checked, the header checked if it is the first, non-finite values restored."""
    if record["v"] is not SCHEMA_VERSION:
        check_version(record["v"], _line_at(path, number))
    if number == 1:
        _check_header(record, path)
    return decode_nonfinite(record)


def _check_header(record: dict[str, Any], path: Path) -> None:
    if record.get("kind") != "header":
        raise LogCorruptError(f"{path}:1: an event log starts with a header record; found "
                              f"{record.get('kind')!r:.80}", path=str(path), line=1,
                              field="kind")


def check_version(version: Any, where: Where) -> None:
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise LogCorruptError(f"{where.text}: schema version {version!r:.40} is not a "
                              "positive integer", path=where.path, line=where.line, field="v")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where.text}: written with schema version {version}; this eventbus reads "
            f"version {SCHEMA_VERSION} and older. Upgrade eventbus to read it",
            path=where.path, line=where.line, field="v")


def to_record(data: dict[str, Any], *, where: Where) -> Record:
    """The validated record for a stored dict, or a :class:`LogCorruptError` naming the field.

    Beyond its model's validation, a record must mean something a log can hold: a ``resumed``
    record's ``from_seq`` is the seq of a record before it (spans of abandoned records are
    drawn from it: a negative one would abandon the header), and a header's
    ``meta.learning_rate`` is a learning rate (resume and replay start from it).
    """
    kind = data.get("kind")
    if type(kind) is not str or kind not in KINDS:
        what = f"unknown record kind {kind!r:.80} ({_NEWER_OR_DAMAGED})" if "kind" in data \
            else "record has no 'kind'"
        raise _corrupt(where, what, "kind")
    try:
        record = parse_record(data)
    except ValueError as exc:
        raise _corrupt(where, f"invalid {kind} record: {validation_problems(exc)}",
                       validation_field(exc)) from None
    except RecursionError:  # lists nested a thousand deep: no record is
        raise _corrupt(where, f"invalid {kind} record: nested too deeply", None) from None
    if kind == "resumed":
        _check_resumed(data, where)
    elif kind == "header":
        _check_learning_rate(data, where)
    return record


def _corrupt(where: Where, what: str, field: str | None) -> LogCorruptError:
    return LogCorruptError(f"{where.text}: {what}", path=where.path, line=where.line,
                           field=field)


def _check_resumed(data: dict[str, Any], where: Where) -> None:
    # seq is an int here (checked before the record is made); from_seq must be one too, as
    # stored: the quick search for resumed records (effective.spans_of) takes no other.
    from_seq, seq = data["from_seq"], data["seq"]
    if type(from_seq) is not int or not 0 <= from_seq < seq:
        raise _corrupt(where, f"invalid resumed record: from_seq: {from_seq!r:.40} is not the "
                       f"seq of a record before this one (an integer from 0 to {seq - 1})",
                       "from_seq")


def _check_learning_rate(data: dict[str, Any], where: Where) -> None:
    rate = data["meta"].get("learning_rate") if type(data.get("meta")) is dict else None
    if rate is None:
        return
    try:
        value = float(rate) if type(rate) in (int, float) else None
    except OverflowError:  # an int too large for a float
        value = None
    if value is None or not 0.0 <= value < math.inf:
        raise _corrupt(where, f"invalid header record: meta.learning_rate: {rate!r:.40} is not "
                       "a learning rate (a finite number, 0 or more)", "meta.learning_rate")


def bad_seq(where: Where, seq: Any) -> LogCorruptError:
    return _corrupt(where, f"seq: {seq!r:.40} is not an integer", "seq")


def seq_error(where: Callable[[int], Where], number: int, seq: Any,
               previous: int) -> LogCorruptError:
    """The error for a record whose seq is not an integer above the one before it."""
    if type(seq) is not int:
        return bad_seq(where(number), seq)
    if seq > MAX_INDEX:
        return _corrupt(where(number), f"seq {seq} is past the largest a record may hold "
                        f"({MAX_INDEX:,})", "seq")
    if number == 1:
        return _corrupt(where(number), f"seq {seq} is below 0: a log's seqs count from 0, "
                        "the header's", "seq")
    return _corrupt(where(number), f"seq {seq} does not follow seq {previous} of the record "
                    f"before it ({where(number - 1).text}): seq strictly increases through a "
                    "log", "seq")


def validation_field(exc: ValueError) -> str | None:
    """The field of a validation error's first problem (as :func:`validation_problems` names it)."""
    errors = getattr(exc, "errors", None)
    for error in errors() if callable(errors) else ():
        return ".".join(str(part) for part in error.get("loc", ())[1:]) or None
    return None


def validation_problems(exc: ValueError) -> str:
    """A validation error on one line, each problem as ``field: what is wrong``."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    unknown = False
    for error in errors():
        loc = [str(part) for part in error.get("loc", ())[1:]]  # [0] names the union's member
        parts.append(f"{'.'.join(loc) or 'record'}: {error.get('msg', '')}")
        unknown = unknown or error.get("type") == "extra_forbidden"
    return "; ".join(parts) + (f" ({_NEWER_OR_DAMAGED})" if unknown else "")


#: What a field or record kind this reader does not know means (docs/log-format.md, "Schema
#: versions"): added by a later release of the same schema version, or damage.
_NEWER_OR_DAMAGED = "written by a newer eventbus, or damaged: upgrade eventbus to read it"


def last_seq(path: str | os.PathLike[str]) -> int | None:
    """The seq of the last whole record of a JSON Lines log, read from its end: the highest,
    since seq only grows. Lines that are not records (a torn tail) are passed over; a line
    longer than :data:`MAX_LINE_BYTES` is a :class:`LogCorruptError`, as for the reader."""
    with open_for_reading(path) as file:
        pos = file.seek(0, os.SEEK_END)
        # The first, maybe partial, line of the pieces read so far, in pieces, the last first:
        # joined once its start is found, not copied again with every piece.
        start: list[bytes] = []
        size = 0
        while pos > 0:
            step = min(_CHUNK, pos)
            pos -= step
            file.seek(pos)
            piece = file.read(step)
            newline = piece.rfind(b"\n")
            if size + (step if newline == -1 else step - newline - 1) > MAX_LINE_BYTES:
                begins = pos if newline == -1 else pos + newline + 1  # the long line, or a part
                raise _too_long(Path(path), _lines_before(file, begins) + 1)
            if start:
                if newline == -1 and pos > 0:
                    start.append(piece)
                    size += step
                    continue
                start.append(piece)
                piece = b"".join(reversed(start))
            lines = piece.split(b"\n")
            first = lines.pop(0) if pos > 0 else b""
            start, size = ([first], len(first)) if first else ([], 0)
            for line in reversed(lines):
                try:
                    seq = orjson.loads(line)["seq"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue
                if type(seq) is int:
                    return seq
    return None


def find_kinds(path: str | os.PathLike[str], kinds: Collection[str]) -> list[dict[str, Any]]:
    """The records of ``kinds`` in a JSON Lines log, as dicts, found without reading the rest.

    Only lines holding a kind's name, or a backslash (JSON may spell any letter as a ``\\u``
    escape; orjson never does), are parsed: a byte search skips the others, so for rare kinds
    this costs a small part of reading the log (the backslash is a one-byte search, many times
    faster than one for ``\\u``). A line it parses that is not a record (damaged, not JSON)
    is a :class:`LogCorruptError` naming it, as the reader would say, unless it is a torn last
    line (a crash; the reader tolerates it): a resume must not go on from a log its readers
    refuse. A line longer than :data:`MAX_LINE_BYTES` is one too (it is never held whole).
    """
    needles = _needles(kinds)
    wanted = frozenset(kinds)
    found: list[tuple[int, dict[str, Any]]] = []  # (where, record): the file's order, sorted last
    offset = 0  # of ``data`` in the file
    with open_for_reading(path) as file:
        try:
            for data, cut in _pieces(Path(path), file):
                if cut < 0:
                    if data:
                        _add_found(data, offset, wanted, found, last=True)
                    break
                _search(data, cut, offset, needles, wanted, found)
                offset += cut
        except _Damaged as damaged:
            raise _damaged(path, file, damaged) from None
    return [record for _, record in sorted(found, key=lambda item: item[0])]


def find_kinds_from_end(path: str | os.PathLike[str],
                        kinds: Collection[str]) -> Iterator[dict[str, Any]]:
    """The records :func:`find_kinds` finds, the last first, read from the end a piece at a
    time: a caller that wants the last few (where a run goes on) reads only the log's end.

    A line longer than :data:`MAX_LINE_BYTES` among the pieces read is a
    :class:`LogCorruptError`, as for :func:`find_kinds`; one before them is not looked at.
    """
    needles = _needles(kinds)
    wanted = frozenset(kinds)
    with open_for_reading(path) as file:
        for data, offset in _pieces_from_end(Path(path), file):
            found: list[tuple[int, dict[str, Any]]] = []
            try:
                _search(data, len(data), offset, needles, wanted, found)
            except _Damaged as damaged:
                raise _damaged(path, file, damaged) from None
            found.sort(key=lambda item: item[0])
            for _, record in reversed(found):
                yield record


def _needles(kinds: Collection[str]) -> list[bytes]:
    # A kind's name, or a backslash: JSON may spell any letter as a ``\u`` escape.
    return [kind.encode() for kind in kinds] + [b"\\"]


def _search(data: bytes, cut: int, offset: int, needles: list[bytes], wanted: frozenset[str],
            found: list[tuple[int, dict[str, Any]]]) -> None:
    """Add to ``found`` the records of ``wanted`` on the lines of ``data[:cut]`` that hold a
    needle, each with where it starts in the file (``data`` starts at ``offset``).

    A NUL byte on a whole line is damage, as the reader says of that line: JSON never holds
    one raw. Searched for first (one ``memchr`` a piece), since a line of NULs holds no needle
    and would be passed over: a sparse hole of a terabyte, read to its end, before the reader
    refused the log anyway."""
    nul = data.find(b"\0", 0, cut)
    # (On the file's last line, with no line break after it, NULs are a torn tail, as a crash
    # or a power cut leaves one: the readers pass it over, and so do the searches.)
    if nul >= 0 and data.find(b"\n", nul) >= 0:
        raise _Damaged(offset + data.rfind(b"\n", 0, nul) + 1, "line is not JSON: it holds a "
                       "NUL byte (a hole in the file, or bytes that are not text)")
    starts: set[int] = set()
    for needle in needles:
        at = data.find(needle, 0, cut)
        while at >= 0:
            start = data.rfind(b"\n", 0, at) + 1
            end = data.find(b"\n", at)
            last = end == -1  # the last line of the file, without its newline
            if last:
                end = len(data)
            if start not in starts:
                starts.add(start)
                _add_found(data[start:end], offset + start, wanted, found, last=last)
            at = data.find(needle, end, cut)


def _pieces_from_end(path: Path, file: Any) -> Iterator[tuple[bytes, int]]:
    """``file`` read a piece at a time from its end, as ``(data, offset)``: ``data`` holds
    whole lines (the file's last one perhaps without its newline) and starts at ``offset``.

    A line longer than a piece is gathered in parts and joined once its start is found; one
    longer than :data:`MAX_LINE_BYTES` is a :class:`LogCorruptError` naming it, before it is
    held whole (as for :func:`last_seq`)."""
    pos = file.seek(0, os.SEEK_END)
    # The bytes before the lines given so far, up to and with the newline that ends the line
    # they are part of: in parts, the last first, joined once the line's start is found.
    carry: list[bytes] = []
    partial = 0  # the bytes of that line in ``carry``, its newline not counted
    while pos > 0:
        step = min(_CHUNK, pos)
        pos -= step
        file.seek(pos)
        piece = file.read(step)
        last = piece.rfind(b"\n") + 1  # where the line that runs into ``carry`` starts
        if not last and pos > 0:  # that line goes on before this piece
            partial += step
            if partial > MAX_LINE_BYTES:
                raise _too_long(path, _lines_before(file, pos) + 1)
            carry.append(piece)
            continue
        if step - last + partial > MAX_LINE_BYTES:
            raise _too_long(path, _lines_before(file, pos + last) + 1)
        first = piece.find(b"\n") + 1 if pos > 0 else 0  # its first whole line
        data = piece[first:] + b"".join(reversed(carry)) if carry else piece[first:]
        if data:
            yield data, pos + first
        carry, partial = [piece[:first]], max(first - 1, 0)


class _Damaged(Exception):
    """A line the search read is not a record: where it starts, and why (see _add_found)."""

    def __init__(self, where: int, why: str):
        super().__init__(where, why)
        self.where, self.why = where, why


def _add_found(line: bytes, where: int, wanted: frozenset[str],
               found: list[tuple[int, dict[str, Any]]], *, last: bool = False) -> None:
    """Add the record on ``line`` if it is of a ``wanted`` kind. A line that is not a record
    is :class:`_Damaged`, as the reader would say (a resume must not go on from a log its
    readers refuse), unless it is the file's ``last`` line without its newline: torn by a
    crash, which the readers tolerate."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if last:
            return
        raise _Damaged(where, f"line is not JSON: {exc}") from None
    try:
        kind = record["kind"]
    except (KeyError, TypeError):
        if last:
            return
        raise _Damaged(where, "line is not a record (needs 'kind' and 'v')") from None
    if kind in wanted:
        found.append((where, record))


def _damaged(path: str | os.PathLike[str], file: Any, damaged: _Damaged) -> LogCorruptError:
    number = _lines_before(file, damaged.where) + 1
    return LogCorruptError(f"{path}:{number}: {damaged.why}", path=str(path), line=number)


class _Absent:
    """The type of a field a record does not have, in the checks of a trusted batch record."""


_ABSENT = _Absent()
_INT = frozenset({int})
_INT_OR_NONE = frozenset({int, type(None)})
_NOT_THERE = frozenset({_Absent})


def _fast(cls: type[Record]) -> tuple[type[Record], int, frozenset[type], frozenset[type]]:
    fields = cls.model_fields
    return (TRUSTED[cls], len(fields), _INT_OR_NONE if "epoch" in fields else _NOT_THERE,
            _INT if "step" in fields else _NOT_THERE)


# kind -> (the class a trusted record is made as, its number of fields, the types its epoch
# and its step may have) for the batch kinds: nearly all of a log, made without validation
# when their fields and types are exact (see ``typed``). The few others (epochs, decisions,
# the header) are validated: they are what audit, replay and the plugins' decisions stand
# on, so a damaged value there is reported where it is.
_FAST = {kind: _fast(KINDS[kind]) for kind in BATCH_KINDS}
_new = object.__new__
#: In a reader's plan (kind -> what to do), a kind the caller left out: checked, not built.
SKIP = None
#: In a reader's plan, a kind always validated: no record has -1 fields, so the fast path's
#: first test fails and the record is validated (one lookup decides for every known kind).
VALIDATE = (None, -1, frozenset(), frozenset())


def _skipped(kinds: Collection[str] | None) -> frozenset[str]:
    """The known kinds a reader asked for ``kinds`` leaves out (an unknown kind is never
    skipped: it is an error wherever it is)."""
    return frozenset() if kinds is None else frozenset(KINDS) - frozenset(kinds)


def read_plan(validate: bool, kinds: Collection[str] | None) -> dict[str, Any]:
    """Every known kind -> ``SKIP`` for a kind left out, its ``_FAST`` entry for a batch kind
    made without validation when exact, or ``VALIDATE``."""
    plan: dict[str, Any] = dict.fromkeys(KINDS, VALIDATE)
    if not validate:
        plan.update(_FAST)
    plan.update(dict.fromkeys(_skipped(kinds), SKIP))
    return plan


def _exact(record: dict[str, Any], known: tuple[Any, ...]) -> bool:
    """Whether a batch record holds exactly its kind's fields with the envelope's and indices'
    types (see ``typed``); the readers inline this same test in their loops."""
    try:
        return (len(record) == known[1]
                and type(record["batch"]) is int and type(record["time"]) is float
                and type(record["run_id"]) is str and type(record["logs"]) is dict
                and type(record.get("epoch", _ABSENT)) in known[2]
                and type(record.get("step", _ABSENT)) in known[3])
    except (KeyError, TypeError):  # a field missing: validated, which names it
        return False


def built(record: dict[str, Any], plan: dict[str, Any], where: Where) -> Record | None:
    """The typed record for a stored dict whose seq is checked, or None for a kind left out:
    the readers' path for any record their inlined fast path does not take."""
    try:
        known = plan.get(record.get("kind"), VALIDATE)
    except TypeError:  # a kind that is a list: validated, which names the field
        known = VALIDATE
    if known is SKIP:
        return None
    if _exact(record, known):
        event = _new(known[0])
        set_model_dict(event, record)
        return event
    return to_record(record, where=where)


def read_jsonl(path: str | os.PathLike[str], *, validate: bool = False,
               kinds: Collection[str] | None = None, stop: int | None = None,
               kept: Callable[[int], bool] | None = None) -> Iterator[Record]:
    """Every record of a JSON Lines log, typed; see :func:`eventbus.read_log`.

    The checks are :func:`iter_jsonl_dicts`'s and :func:`typed`'s, in the same order for each
    line, in one loop: a generator per record fewer, and the batch records' checks inlined
    (the two together are 2.4x a bare ``orjson.loads`` loop; this is about 2.2x).

    ``stop``: the read ends at the first record of a kind left out whose seq is above it and
    that ``kept(seq)`` keeps (not abandoned: see :mod:`eventbus.effective`), as a reader of
    every record would stop at that one (resume stops at the first observation past where the
    run goes on, left out or not). The lines after it are still read and checked as a read of
    every record checks them, none handed out: a resume appends to a log only if its readers
    read it whole.
    """
    path = Path(path)
    plan = read_plan(validate, kinds)
    loads = orjson.loads
    version = SCHEMA_VERSION
    new, set_fields, absent = _new, set_model_dict, _ABSENT
    stop_at = math.inf if stop is None else stop
    kept = kept or _always
    previous = -1  # the seq of the record before (seqs count from 0, the header's)
    before = 0  # lines in the pieces already read
    tail = b""

    def where(number: int) -> Where:
        return _line_at(path, number)

    with open_for_reading(path) as file:
        pieces = _pieces(path, file)
        for data, cut in pieces:
            if cut < 0:
                tail = data
                break
            lines = data.split(b"\n")
            del lines[-1]  # what follows the last newline: the next piece starts with it
            special = _may_hold_nonfinite(data)
            if not before:
                record = _first_record(path, lines[0])
                previous = _checked_seq(record, 1, previous, where)
                event = built(record, plan, where(1))
                if event is not None:
                    yield event
                elif previous > stop_at and kept(previous):
                    _check_rest(path, pieces, lines[1:], 2, previous, validate)
                    return
                del lines[0]
                before = 1
            for line in lines:
                try:
                    record = loads(line)
                    if record["v"] is not version:  # see iter_jsonl_dicts
                        check_version(record["v"], where(before + _index(lines, line) + 1))
                except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                    raise _bad_line(path, before + _index(lines, line) + 1, line, exc) from None
                if special and _may_hold_nonfinite(line):
                    decode_nonfinite(record)
                try:
                    seq = record["seq"]  # a subscript: half the time of a call to get
                except KeyError:
                    seq = None
                if type(seq) is not int or not previous < seq <= MAX_INDEX:
                    raise seq_error(where, before + _index(lines, line) + 1, seq, previous)
                previous = seq
                # typed's checks, inlined for the batch kinds (a kind that is a list, or a
                # field missing, leaves for built, which validates and names the field)
                try:
                    known = plan[record["kind"]]
                    if known is SKIP:
                        if seq > stop_at and kept(seq):
                            break
                        continue
                    if (len(record) == known[1] and type(record["batch"]) is int
                            and type(record["time"]) is float
                            and type(record["run_id"]) is str and type(record["logs"]) is dict
                            and type(record.get("epoch", absent)) in known[2]
                            and type(record.get("step", absent)) in known[3]):
                        event = new(known[0])
                        set_fields(event, record)
                        yield event
                        continue
                except (KeyError, TypeError):
                    pass
                event = built(record, plan, where(before + _index(lines, line) + 1))
                if event is not None:
                    yield event
                elif seq > stop_at and kept(seq):
                    break
            else:
                before += len(lines)
                continue
            index = _index(lines, line) + 1  # the read stops after this line
            _check_rest(path, pieces, lines[index:], before + index + 1, previous, validate)
            return
    if tail:  # a last line without its newline: whole, or cut by a crash mid-write
        record = _tail_record(path, before, tail)
        if record is not None:
            number = before + 1
            _checked_seq(record, number, previous, where)
            event = built(record, plan, where(number))
            if event is not None:
                yield event
    elif not before:
        raise LogCorruptError(f"{path}: empty log (no header record)", path=str(path))


def _check_rest(path: Path, pieces: Iterator[tuple[bytes, int]], lines: list[bytes],
                number: int, previous: int, validate: bool) -> None:
    """Check the rest of a log whose read stopped early (``read_jsonl``'s ``stop``): ``lines``
    (the first is line ``number``), then the other ``pieces``, each line as a read of every
    record checks it (JSON, version, seq, kind and shape), none kept."""
    plan = read_plan(validate, None)
    while True:
        for line in lines:
            try:
                record = orjson.loads(line)
                if record["v"] is not SCHEMA_VERSION:
                    check_version(record["v"], _line_at(path, number))
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise _bad_line(path, number, line, exc) from None
            if _may_hold_nonfinite(line):
                decode_nonfinite(record)
            previous = _checked_seq(record, number, previous, lambda n: _line_at(path, n))
            built(record, plan, _line_at(path, number))
            number += 1
        data, cut = next(pieces)
        if cut < 0:
            break
        lines = data.split(b"\n")
        del lines[-1]
    if data:  # a last line without its newline: whole, or cut by a crash mid-write
        record = _tail_record(path, number - 1, data)
        if record is not None:
            _checked_seq(record, number, previous, lambda n: _line_at(path, n))
            built(record, plan, _line_at(path, number))


def _always(_seq: int) -> bool:
    return True


def _checked_seq(record: dict[str, Any], number: int, previous: int,
                 where: Callable[[int], Where]) -> int:
    """The record's seq, once checked to be an integer above ``previous``."""
    seq = record.get("seq")
    if type(seq) is not int or not previous < seq <= MAX_INDEX:
        raise seq_error(where, number, seq, previous)
    return seq


def typed(records: Iterable[dict[str, Any]], where: Callable[[int], Where], *, validate: bool,
          kinds: Collection[str] | None) -> Iterator[Record]:
    """Stored dicts as typed records (see :func:`eventbus.read_log` for ``validate`` and
    ``kinds``). ``where(number)`` places a record in an error; it is called for no other.

    Every record's seq, of the kinds left out too, must be an integer above the one before.
    A batch record is made without validation only when its fields are its kind's and the
    envelope and indices have their types (a few type checks: a string ``step`` would
    otherwise reach the bus); any other record is validated, which names the field at fault.
    The metric values are not looked at: that costs 15 to 20% of a typed read (see
    docs/log-format.md); validate=True checks them, and replay, when a plugin fails, reads the
    log again validated to name a damaged value.
    """
    plan = read_plan(validate, kinds)
    new, set_fields, absent = _new, set_model_dict, _ABSENT
    previous = -1  # the seq of the record before (seqs count from 0, the header's)
    for number, record in enumerate(records, 1):
        seq = record.get("seq")
        if type(seq) is not int or not previous < seq <= MAX_INDEX:
            raise seq_error(where, number, seq, previous)
        previous = seq
        try:  # as in read_jsonl: built's fast path, inlined
            known = plan[record["kind"]]
            if known is SKIP:
                continue
            if (len(record) == known[1] and type(record["batch"]) is int
                    and type(record["time"]) is float
                    and type(record["run_id"]) is str and type(record["logs"]) is dict
                    and type(record.get("epoch", absent)) in known[2]
                    and type(record.get("step", absent)) in known[3]):
                event = new(known[0])
                set_fields(event, record)
                yield event
                continue
        except (KeyError, TypeError):
            pass
        event = built(record, plan, where(number))
        if event is not None:
            yield event
