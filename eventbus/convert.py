"""``eventbus convert``: a log rewritten in another format, or written into another sink.

JSON Lines and Parquet are copies record for record (:func:`copy_log`). CSV and TensorBoard
are made by writing the recorded records, as they were, to the CSVLogger or TensorBoard sink
(:meth:`eventbus.Bus.write_recorded`), so a converted log looks exactly like one those sinks
wrote live; a resumed run's abandoned partial epochs are left out, so their batches do not show
twice. Part of the command line, which is where the core meets the plugins.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from .bus import Bus, SinkFailureWarning
from .effective import read_effective
from .errors import ConfigError
from .log import is_parquet, open_writer, read_log
from .records import SinkFailed

__all__ = ["FORMATS", "convert", "copy_log"]

FORMATS = ("jsonl", "parquet", "csv", "tensorboard", "mlflow")


def _check_output(src: Path, dst: Path, to: str) -> None:
    """Refuse an output the writer could not use, before anything is read or written.

    CSVLogger and TensorBoard are sinks: a failure to write is recorded and training goes on,
    which is right live and wrong here, where writing is the whole point.
    """
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise ConfigError(f"convert: {dst} is the log being converted; name another output",
                          field="out")
    if dst.is_dir() and to in ("csv", "jsonl"):
        raise ConfigError(f"convert: {dst} is a directory; --to {to} writes a file: name the "
                          "file to write", field="out")
    if dst.exists() and not dst.is_dir() and to in ("parquet", "tensorboard"):
        raise ConfigError(f"convert: {dst} is a file; --to {to} writes a directory: name a "
                          "new or existing directory", field="out")
    for parent in dst.parents:  # the nearest that exists must be a directory we can write in
        if not parent.exists():
            continue
        if not parent.is_dir():
            raise ConfigError(f"convert: cannot write {dst}: {parent} is a file, not a "
                              "directory", field="out")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"convert: cannot write {dst}: no permission to write in "
                              f"{parent}", field="out")
        break


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, to: str) -> int:
    """Write the log ``src`` as ``to`` at ``dst``; returns the number of records read.

    An output that cannot be written (an existing directory where a file goes, a path under a
    file, a sink failing part way) raises :class:`~eventbus.errors.ConfigError`
    (``field="out"``) rather than reporting a count of records nothing holds.
    """
    if to == "mlflow":  # OUT is a tracking URI, not a path: the sink finds the run in it
        from sinks.mlflow import backfill

        return backfill(src, str(dst))
    if to not in FORMATS:
        raise ConfigError(f"convert: unknown format {to!r}; choose one of {', '.join(FORMATS)}",
                          field="to")
    dst = Path(dst)
    _check_output(Path(src), dst, to)
    if to in ("jsonl", "parquet"):
        if (to == "parquet") != is_parquet(dst) or (to == "jsonl" and dst.suffix != ".jsonl"):
            raise ConfigError(f"convert: {dst} is not a .{to} path; name the output "
                              f"something.{to}", field="out")
        return copy_log(src, dst)
    if to == "csv":
        from plugins import CSVLogger

        sink = CSVLogger(str(dst))
    else:
        from plugins import TensorBoard

        sink = TensorBoard(log_dir=str(dst), write_graph=False)
    count = 0
    bus = Bus([sink])
    try:
        # The run as it went on: an abandoned partial epoch's batches would show twice.
        for record in read_effective(src):
            bus.write_recorded(record)
            count += 1
    finally:
        with warnings.catch_warnings():
            # The bus warns of sink failures at close; here they are the error below.
            warnings.simplefilter("ignore", SinkFailureWarning)
            bus.close()
    failed = [f for f in bus.failures if isinstance(f, SinkFailed)]
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more failure(s))" if len(failed) > 1 else ""
        raise ConfigError(f"convert: writing {dst} failed: {first.sink} on {first.event}: "
                          f"{first.error}: {first.message}{more}", plugin=first.sink,
                          field="out")
    return count


def copy_log(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> int:
    """Write the event log ``src`` to ``dst``, each in the format its path says; returns records.

    ``.parquet`` (or a directory) is Parquet, anything else JSON Lines. The records are the
    same, field for field, NaN and infinities included; ``dst`` is replaced. A resumed run's
    log converts whole, the abandoned partial epoch included (readers skip it, as they do in
    the source).
    """
    src_path, dst_path = Path(src), Path(dst)
    if src_path.resolve() == dst_path.resolve():
        raise ConfigError(f"convert: source and destination are the same log: {src_path}",
                          field="dst")
    if not src_path.exists():
        raise ConfigError(f"convert: {src_path}: no such log", field="src")
    count = 0
    writer = open_writer(dst_path)
    try:
        for record in read_log(src_path):
            writer.write(record.model_dump())
            count += 1
    finally:
        writer.close()
    return count
