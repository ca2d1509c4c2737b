"""Reading and opening event logs in either format, chosen by path.

A path ending in ``.parquet`` (or a directory) is a Parquet log; anything else is JSON Lines.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import LogError
from .records import Header, Record

if TYPE_CHECKING:
    from .sink import Sink

__all__ = ["has_records", "is_parquet", "last_seq", "log_path", "log_paths", "open_writer",
           "read_header", "read_log", "resume_source"]


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


def has_records(path: str | os.PathLike[str] | None) -> bool:
    """Whether ``path`` is a log that holds records (a Parquet log: segments)."""
    if path is None:
        return False
    if os.path.isdir(path):
        from .parquet_segments import segments

        return bool(segments(Path(path)))
    return os.path.isfile(path) and os.path.getsize(path) > 0


def log_path(target: object) -> str | None:
    """The path of the event log ``target`` writes: a path given as ``Bus(log=...)``, or the
    path of a log writer given as an object (``JsonlWriter("run.jsonl")``); None for other
    sinks."""
    if isinstance(target, (str, os.PathLike)):
        return os.fspath(target)
    if getattr(type(target), "event_log", False) and isinstance(getattr(target, "path", None),
                                                                (str, os.PathLike)):
        return os.fspath(target.path)  # type: ignore[attr-defined]
    return None


def log_paths(targets: Iterable[object]) -> list[str]:
    """The paths of the event logs among ``targets`` (see :func:`log_path`), in order."""
    return [path for path in map(log_path, targets) if path is not None]


def resume_source(targets: Iterable[object]) -> str | None:
    """The log among ``targets`` to resume from: the first JSON Lines one, else the first
    Parquet one (both are flushed at the same points; JSON Lines also keeps the records of a
    partial epoch, which the resume abandons anyway). A log that holds records comes before
    one that holds none (a new log added beside the run's)."""
    paths = log_paths(targets)
    paths = [p for p in paths if has_records(p)] or paths
    return next((p for p in paths if not is_parquet(p)), paths[0] if paths else None)


def open_writer(path: str | os.PathLike[str], *, append: bool = False) -> Sink:
    """The sink that writes the log at ``path``, in the format its name says."""
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
