"""Reading and opening event logs in either format, chosen by path.

A path ending in ``.parquet`` (or a directory) is a Parquet log; anything else is JSON Lines.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .errors import LogError
from .records import Header, Record

__all__ = ["RecordWriter", "is_parquet", "last_seq", "open_writer", "read_header", "read_log"]


@runtime_checkable
class RecordWriter(Protocol):
    """Where the bus appends every record, as the plain dict stored in the log.

    ``write`` is on the hot path: keep it cheap and defer I/O to ``flush``. The bus flushes at
    every epoch end and decision, syncs at ``train_end`` and closes at ``close()``. A writer
    with an ``on_attach(bus)`` method is given the bus when it is added (to report failures
    from a background thread through ``bus.report``).

    Two optional fast paths, for batch records whose metrics the bus has seen are all finite
    Python floats: ``write_finite(record)`` (a writer that must otherwise look for NaN can
    skip it; the record's fields are in ``records.BATCH_FIELDS`` order), or, for JSON Lines
    writers, ``append_line`` (a callable taking the record as one ``orjson`` line, encoded once
    by the bus for every such writer) with ``flush_if_full()``, which the bus calls every 64
    records.
    """

    name: str

    def write(self, record: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


def is_parquet(path: str | os.PathLike[str]) -> bool:
    """Whether the log at ``path`` is Parquet: a name ending in ``.parquet``, or a directory.

    A ``.jsonl`` path that is a directory is neither: :class:`LogError` naming it, rather than
    reading or writing Parquet segments under a name that says JSON Lines.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        return True
    if path.is_dir():
        if path.suffix == ".jsonl":
            raise LogError(f"{path}: is a directory, but a .jsonl log is a file; name a "
                           "Parquet log's directory *.parquet", path=str(path))
        return True
    return False


def open_writer(path: str | os.PathLike[str], *, append: bool = False) -> RecordWriter:
    """A writer for the log at ``path``, in the format its name says."""
    if is_parquet(path):
        from .parquet import ParquetWriter

        return ParquetWriter(path, append=append)
    from .jsonl import JsonlWriter

    return JsonlWriter(path, append=append)


def read_log(log: str | os.PathLike[str] | Iterable[Record], *, validate: bool = False,
             kinds: Collection[str] | None = None) -> Iterator[Record]:
    """Every record of a log, header first, as typed records.

    Reads JSON Lines or Parquet (by path). A torn last line is dropped with a warning; a damaged
    record elsewhere raises :class:`~eventbus.errors.LogCorruptError` naming file and line; a log
    from a newer major schema raises :class:`~eventbus.errors.SchemaVersionError`.

    By default records whose stored shape is exactly their kind's are built without field
    validation (fast: logs this library wrote); ``validate=True`` validates every field, for logs
    from elsewhere. An iterable of records is passed through, so functions taking a log also take
    records in memory.

    ``kinds``: only records of these kinds (say, every kind but ``records.BATCH_KINDS``). Every
    line is still read and checked as above, and an unknown kind is still an error; records of
    the other known kinds are just not built, which saves most of the time and memory of
    reading a long run when the batches are not wanted.
    """
    if kinds is not None:
        _check_kinds(kinds)
    if not isinstance(log, (str, os.PathLike)):
        if log is None or not isinstance(log, Iterable):
            raise LogError(f"read_log: log must be a path or records; got "
                           f"{type(log).__name__}")
        if kinds is None:
            yield from log
        else:
            yield from (record for record in log if record.kind in kinds)
        return
    path = Path(log)
    if not path.exists():
        raise LogError(f"{path}: no such log", path=str(path))
    if is_parquet(path):
        from .parquet import read_parquet

        yield from read_parquet(path, validate=validate, kinds=kinds)
    else:
        from .jsonl import read_jsonl

        yield from read_jsonl(path, validate=validate, kinds=kinds)


def _check_kinds(kinds: Collection[str]) -> None:
    from .errors import ConfigError
    from .records import KINDS

    if isinstance(kinds, (str, bytes)):
        raise ConfigError(f"read_log: kinds must be a collection of kinds; got the str "
                          f"{kinds!r} (for one kind: [{kinds!r}])", field="kinds")
    unknown = sorted(str(kind) for kind in kinds if kind not in KINDS)
    if unknown:
        raise ConfigError(f"read_log: unknown record kind(s) {', '.join(map(repr, unknown))} in "
                          f"kinds; the kinds are {', '.join(KINDS)}", field="kinds")


def last_seq(path: str | os.PathLike[str]) -> int | None:
    """The highest seq in the log at ``path`` (None if it holds no record), without reading
    the whole log: the last whole line of JSON Lines, the ``seq`` column of Parquet."""
    if is_parquet(path):
        from .parquet import last_seq as highest
    else:
        from .jsonl import last_seq as highest
    return highest(path)


def read_header(log: str | os.PathLike[str] | Iterable[Record]) -> Header:
    """The header record of a log."""
    for record in read_log(log):
        if isinstance(record, Header):
            return record
        break
    raise LogError(f"{log}: the log has no header record")
