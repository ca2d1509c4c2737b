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

import errno
import os
import re
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from .errors import LogCorruptError, LogError, SchemaVersionError
from .lock import lock_exclusive
from .records import (
    BATCH_KINDS,
    KINDS,
    SCHEMA_VERSION,
    TRUSTED,
    Record,
    SinkFailed,
    decode_nonfinite,
    encode_nonfinite,
    parse_record,
    set_model_dict,
    trusted,
)
from .sink import Sink

__all__ = ["JsonlWriter", "TornLogWarning", "find_kinds", "iter_jsonl_dicts", "last_seq",
           "prepare_append",
           "read_jsonl", "truncate_torn_tail"]

_OPTIONS = orjson.OPT_APPEND_NEWLINE
_dumps = orjson.dumps
# A compiled search: ``b"null" in line`` costs twice as much (bytes.__contains__ first tries
# the needle as an int and builds, then discards, a TypeError).
_find_null = re.compile(b"null").search
_CHUNK = 1 << 20  # read and write in 1 MiB pieces


class TornLogWarning(UserWarning):
    """The last line of a log was cut short, most likely by a crash mid-write."""


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


def prepare_append(path: str | os.PathLike[str]) -> None:
    """Make the log at ``path`` ready to append to, refusing a file that is not an event log.

    A last line without its newline is ended if it is a whole record (a crash can cut a write
    just before the newline; the reader returns that record, so it is the run's), and cut off
    if it is torn.
    """
    with open(path, "rb+") as file:
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


class JsonlWriter(Sink):
    """Append records to a JSON Lines file: the event log as a sink.

    ``append=True`` continues an existing log (after cutting a torn last line); otherwise the
    file is created or emptied. It takes the bus's fast path: finite batch records arrive as
    lines already encoded, appended to ``line_buffer``.

    A write that fails (a full disk, a quota) on a bus loses nothing: what did not reach the
    file stays in the buffer and is written at the next flush, and the fault is reported once
    (a ``sink_failed`` naming the errno, which the log itself holds once the disk has room).
    Only when more than ``max_kept_bytes`` wait does the failure end the writer, as any sink
    failure does.
    """

    name = "jsonl"

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False,
                 buffer_bytes: int = 1 << 20, max_kept_bytes: int = 256 << 20):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered file: the bytearray is the buffer, one write per flush. (Many small bytes
        # objects kept in a list cost several times more: their memory is fresh each round.)
        # Opened to append, and locked, before anything in it changes: a second writer of the
        # path is refused before it can truncate or cut the first's log.
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115
        try:
            lock_exclusive(self._file.fileno(), self.path)
            if not append:
                os.ftruncate(self._file.fileno(), 0)
            elif self.path.stat().st_size:
                prepare_append(self.path)
        except BaseException:
            self._file.close()
            raise
        self._buffer = self.line_buffer = bytearray()
        self._limit = self.buffer_bytes = buffer_bytes
        self._max_kept = max_kept_bytes
        self._run: Any = None
        self._failing: OSError | None = None  # the fault of the failing flushes, reported once
        #: The name its records are reported under: which log, where there are several.
        self.name = f"jsonl {self.path}"

    def open(self, run: Any) -> None:
        self._run = run  # to report a fault it keeps going through

    def write(self, record: dict[str, Any]) -> None:
        line = _dumps(record, option=_OPTIONS)
        # orjson writes NaN and infinities as null: only a line with a null can hold one.
        if _find_null(line):
            line = _dumps(encode_nonfinite(record), option=_OPTIONS)
        buffer = self._buffer
        buffer += line
        if len(buffer) >= self._limit:
            self.flush()

    def flush(self) -> None:
        buffer = self._buffer
        if not buffer:
            return
        done = 0
        try:
            with memoryview(buffer) as view:
                while done < len(view):  # a raw write may be partial
                    done += self._file.write(view[done:])
        except OSError as exc:
            del buffer[:done]  # what reached the file is not written again
            if self._run is None or len(buffer) > self._max_kept:
                raise
            self._keep(exc)
            return
        buffer.clear()
        self._failing = None

    def _keep(self, exc: OSError) -> None:
        """The buffer stays for the next flush; the fault is reported once while it lasts."""
        if self._failing is not None:
            return
        self._failing = exc
        code = errno.errorcode.get(exc.errno or 0, "") if exc.errno else ""
        self._run.report(SinkFailed(
            sink=self.name, event="flush", error=type(exc).__name__,
            message=f"{exc.strerror or exc} (errno {exc.errno}{', ' + code if code else ''}); "
                    f"{len(self._buffer)} bytes kept, written at the next flush that can"))

    def sync(self) -> None:
        self.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            try:
                self.sync()
            finally:  # a file that cannot be written is still let go (its descriptor, its lock)
                self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _torn(path: Path, number: int, line: bytes) -> None:
    warnings.warn(f"{path}: the last line (line {number}, {len(line)} bytes) is incomplete, "
                  "most likely cut by a crash mid-write; ignored", TornLogWarning, stacklevel=4)


def _bad_line(path: Path, number: int, line: bytes, exc: Exception) -> LogCorruptError:
    what = "not JSON" if isinstance(exc, orjson.JSONDecodeError) else \
        "not a record (needs 'kind' and 'v')"
    return LogCorruptError(f"{path}:{number}: line is {what}: {exc}", path=str(path),
                           line=number)


def iter_jsonl_dicts(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every record of a JSON Lines log as a plain dict (non-finite floats restored).

    Checks that each line is a JSON record of a schema version this library reads and that the
    log starts with its header; :func:`read_jsonl` checks each record's kind and shape. Reads
    1 MiB at a time and looks for non-finite spellings once per piece, not once per line; line
    numbers are worked out only for an error.
    """
    path = Path(path)
    loads = orjson.loads
    version = SCHEMA_VERSION
    before = 0  # lines in the pieces already read
    rest = b""
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            data = rest + chunk if rest else chunk
            lines = data.split(b"\n")
            rest = lines.pop()  # the start of a line the next piece finishes (or a torn one)
            if not lines:
                continue
            special = _may_hold_nonfinite(data)
            if not before:
                yield _first_record(path, lines[0])
                del lines[0]
                before = 1
            for line in lines:
                try:
                    record = loads(line)
                    if record["v"] != version:
                        check_version(record["v"], path, before + _index(lines, line) + 1)
                except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                    raise _bad_line(path, before + _index(lines, line) + 1, line, exc) from None
                if special and _may_hold_nonfinite(line):
                    decode_nonfinite(record)
                yield record
            before += len(lines)
    if rest:  # a last line without its newline: whole, or cut by a crash mid-write
        number = before + 1
        try:
            record = loads(rest)
        except orjson.JSONDecodeError:
            if not before and not rest.startswith(b"{"):  # no crash cuts a log to that
                raise LogCorruptError(f"{path}: not an event log: it does not start with a "
                                      "JSON record", path=str(path), line=1) from None
            _torn(path, number, rest)
            return
        try:
            record["v"]  # KeyError or TypeError: whole JSON, but not a record (no cut makes it)
        except (KeyError, TypeError) as exc:
            raise _bad_line(path, number, rest, exc) from None
        yield _checked(record, path, number)
    elif not before:
        raise LogCorruptError(f"{path}: empty log (no header record)", path=str(path))


def _may_hold_nonfinite(data: bytes) -> bool:
    """Whether ``data`` may spell a NaN or an infinity ("NaN", "Infinity", "-Infinity").

    A search for one byte is many times faster than one for a word: a piece of batch records
    usually has neither capital, and only then is the words' search skipped.
    """
    return (b"N" in data or b"I" in data) and (b'"NaN"' in data or b'Infinity"' in data)


def _index(lines: list[bytes], line: bytes) -> int:
    """Where ``line`` is in ``lines``: the first of its value that is also the same object
    (equal one-byte lines can be one object; the first of them is the one that failed)."""
    return next(i for i, item in enumerate(lines) if item is line)


def _first_record(path: Path, line: bytes) -> dict[str, Any]:
    try:
        record = orjson.loads(line)
        record["v"]  # KeyError or TypeError: not a record
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise _bad_line(path, 1, line, exc) from None
    return _checked(record, path, 1)


def _checked(record: dict[str, Any], path: Path, number: int) -> dict[str, Any]:
    """A record read off its own (the first line, or a last one without its newline): its
    schema version checked, the header checked if it is the first, non-finite values restored."""
    if record["v"] != SCHEMA_VERSION:
        check_version(record["v"], path, number)
    if number == 1:
        _check_header(record, path)
    return decode_nonfinite(record)


def _check_header(record: dict[str, Any], path: Path) -> None:
    if record.get("kind") != "header":
        raise LogCorruptError(f"{path}:1: an event log starts with a header record; found "
                              f"{record.get('kind')!r}", path=str(path), line=1)


def check_version(version: Any, path: Path, number: int) -> None:
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise LogCorruptError(f"{path}:{number}: schema version {version!r} is not a "
                              "positive integer", path=str(path), line=number)
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path}:{number}: written with schema version {version}; this eventbus reads "
            f"version {SCHEMA_VERSION} and older. Upgrade eventbus to read it",
            path=str(path), line=number)


_SHAPES = {kind: frozenset(cls.model_fields) for kind, cls in KINDS.items()}


def to_record(data: dict[str, Any], *, validate: bool, where: str = "",
              line: int | None = None) -> Record:
    """The typed record for a stored dict: validated, or trusted when it has the exact shape."""
    kind = data.get("kind")
    shape = _SHAPES.get(kind)  # type: ignore[arg-type]
    if shape is None:
        what = f"unknown record kind {kind!r}" if "kind" in data else "record has no 'kind'"
        raise LogCorruptError(f"{where}: {what}", path=where, line=line)
    # Only batch records are trusted (see _FAST): the rest are few, and what audit stands on.
    if not validate and kind in _FAST and data.keys() == shape:
        return trusted(KINDS[kind], data)  # type: ignore[index]
    try:
        return parse_record(data)
    except ValueError as exc:
        raise LogCorruptError(f"{where}: invalid {kind} record: {_problems(exc)}", path=where,
                              line=line) from None


def _problems(exc: ValueError) -> str:
    """A validation error on one line, each problem as ``field: what is wrong``."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for error in errors():
        loc = [str(part) for part in error.get("loc", ())[1:]]  # [0] names the union's member
        parts.append(f"{'.'.join(loc) or 'record'}: {error.get('msg', '')}")
    return "; ".join(parts)


def last_seq(path: str | os.PathLike[str]) -> int | None:
    """The seq of the last whole record of a JSON Lines log, read from its end: the highest,
    since seq only grows. Lines that are not records (a torn tail) are passed over."""
    with open(path, "rb") as file:
        pos = file.seek(0, os.SEEK_END)
        start = b""  # the first, maybe partial, line of the piece read last
        while pos > 0:
            step = min(_CHUNK, pos)
            pos -= step
            file.seek(pos)
            lines = (file.read(step) + start).split(b"\n")
            start = lines.pop(0) if pos > 0 else b""
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
    faster than one for ``\\u``). Nothing is checked: a damaged line is left to the reader,
    which reports it where it is.
    """
    needles = [kind.encode() for kind in kinds] + [b"\\"]
    wanted = frozenset(kinds)
    found: list[tuple[int, dict[str, Any]]] = []  # (where, record): the file's order, sorted last
    offset = 0  # of ``data`` in the file
    rest = b""
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            data = rest + chunk if rest else chunk
            cut = data.rfind(b"\n") + 1
            data, rest = data[:cut], data[cut:]
            starts: set[int] = set()
            for needle in needles:
                at = data.find(needle)
                while at >= 0:
                    start = data.rfind(b"\n", 0, at) + 1
                    end = data.find(b"\n", at)
                    if start not in starts:
                        starts.add(start)
                        _add_found(data[start:end], offset + start, wanted, found)
                    at = data.find(needle, end)
            offset += cut
    if rest:
        _add_found(rest, offset, wanted, found)
    return [record for _, record in sorted(found, key=lambda item: item[0])]


def _add_found(line: bytes, where: int, wanted: frozenset[str],
               found: list[tuple[int, dict[str, Any]]]) -> None:
    try:
        record = orjson.loads(line)
        if record["kind"] in wanted:
            found.append((where, record))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass  # not a record, or damaged: the reader reports a damaged line


# kind -> (the shape a record of it has, the class a trusted one is made as), for the batch
# kinds: nearly all of a log, made without validation when their shape is exact. The few
# others (epochs, decisions, the header) are validated: they are what audit, replay and the
# plugins' decisions stand on, so a damaged value there is reported where it is.
_FAST = {kind: (_SHAPES[kind], TRUSTED[KINDS[kind]]) for kind in BATCH_KINDS}
_new = object.__new__


def _skipped(kinds: Collection[str] | None) -> frozenset[str]:
    """The known kinds a reader asked for ``kinds`` leaves out (an unknown kind is never
    skipped: it is an error wherever it is)."""
    return frozenset() if kinds is None else frozenset(KINDS) - frozenset(kinds)


def read_jsonl(path: str | os.PathLike[str], *, validate: bool = False,
               kinds: Collection[str] | None = None) -> Iterator[Record]:
    """Every record of a JSON Lines log, typed; see :func:`eventbus.read_log`."""
    return typed(iter_jsonl_dicts(path), lambda number: f"{path}:{number}", validate=validate,
                 kinds=kinds)


def typed(records: Iterable[dict[str, Any]], where: Callable[[int], str], *, validate: bool,
          kinds: Collection[str] | None) -> Iterator[Record]:
    """Stored dicts as typed records (see :func:`eventbus.read_log` for ``validate`` and
    ``kinds``). ``where(number)`` names a record in an error; it is called for no other."""
    fast = {} if validate else _FAST
    skipped = _skipped(kinds)
    for number, record in enumerate(records, 1):
        try:
            kind = record["kind"]
        except KeyError:
            kind = None  # to_record reports it
        if kind in skipped:
            continue
        known = fast.get(kind)
        if known is not None and record.keys() == known[0]:
            # A record this library wrote: made as its model without re-validation.
            event = _new(known[1])
            set_model_dict(event, record)
            yield event
        else:
            yield to_record(record, validate=validate, where=where(number), line=number)
