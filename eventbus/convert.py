"""``eventbus convert``: a log rewritten in another format, or written into another sink.

JSON Lines and Parquet are copies record for record (:func:`copy_log`). CSV and TensorBoard
are made by writing the recorded records, as they were, to the CSVLogger or TensorBoard sink
(:meth:`eventbus.Bus.write_recorded`), so a converted log looks exactly like one those sinks
wrote live; a resumed run's abandoned partial epochs are left out, so their batches do not show
twice. Part of the command line, which is where the core meets the plugins.

The format comes from the output's name where it says one (:func:`format_of`); an existing
output is replaced only when asked (``force=True``), and :class:`Converted` says what was
written in the unit of the format: records for a log, rows for CSV, epochs for TensorBoard.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bus import Bus, SinkFailureWarning
from .effective import read_effective
from .errors import ConfigError
from .log import is_parquet, open_writer, read_log
from .outputs import refuse_special, same_file, write_replacing
from .records import SinkFailed

__all__ = ["CSV_ALLOWED_BYTES", "CSV_MAX_RATIO", "FORMATS", "Converted", "convert",
           "copy_log", "format_of"]

FORMATS = ("jsonl", "parquet", "csv", "tensorboard", "mlflow")

#: The formats a file name says; a TensorBoard log directory has no extension of its own.
_EXTENSIONS = {".jsonl": "jsonl", ".parquet": "parquet", ".csv": "csv"}


@dataclass(frozen=True)
class Converted:
    """What :func:`convert` wrote: ``count`` things of ``unit`` ("records", "rows" or
    "epochs") as ``format`` at ``path``, from ``records`` records of the log (for mlflow, the
    records of the kinds the MLflow sink takes)."""

    format: str
    path: str  # OUT as given: a path, or for mlflow a tracking URI
    count: int
    unit: str
    records: int

    def __str__(self) -> str:
        return f"wrote {self.count} {self.unit} to {self.path} ({self.format})"


def format_of(dst: str | os.PathLike[str]) -> str | None:
    """The format ``dst``'s extension names (``.jsonl``, ``.parquet``, ``.csv``), or None."""
    return _EXTENSIONS.get(Path(dst).suffix.lower())


def _chosen_format(dst: Path, to: str | None) -> str:
    """``to``, or the format ``dst``'s name says; a ConfigError when neither says one."""
    named = format_of(dst)
    if to is None:
        if named is None:
            raise ConfigError(f"convert: cannot tell the format from the name {dst}: name the "
                              f"output .jsonl, .parquet or .csv, or give --to (one of "
                              f"{', '.join(FORMATS)}; a TensorBoard log directory needs "
                              "--to tensorboard)", field="to")
        return named
    if to not in FORMATS:
        raise ConfigError(f"convert: unknown format {to!r}; choose one of {', '.join(FORMATS)}",
                          field="to")
    return to


def _check_name(dst: Path, to: str) -> None:
    """A name that says another format than ``to``: ``--to csv`` for ``x.parquet`` is a slip,
    not a wish."""
    named = format_of(dst)
    if named is not None and named != to:
        raise ConfigError(f"convert: {dst} is named as {named} but --to is {to}; name the "
                          f"output for {to}, or leave --to out", field="to")


def _is_taken(dst: Path) -> bool:
    """Whether writing ``dst`` would replace or add to something there: an existing file, or
    a directory with anything in it (an empty one is only a place to write)."""
    if dst.is_dir():
        return any(dst.iterdir())
    return dst.exists() or dst.is_symlink()


def _check_output(src: Path, dst: Path, to: str) -> None:
    """Refuse an output the writer could not use, before anything is read or written.

    CSVLogger and TensorBoard are sinks: a failure to write is recorded and training goes on,
    which is right live and wrong here, where writing is the whole point.
    """
    if dst.exists() and src.exists() and (dst.resolve() == src.resolve()
                                          or same_file(src, dst)):  # a hard link too
        raise ConfigError(f"convert: {dst} is the log being converted; name another output",
                          field="out")
    refuse_special(dst, "convert:")
    if to in ("parquet", "tensorboard"):
        _refuse_link(dst, to)
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


def _refuse_link(dst: Path, to: str) -> None:
    """A directory output is written in place, so a link at its name would be written (and,
    replaced, emptied) through: refused, ``--force`` or not. A file output replaces a link."""
    if dst.is_symlink():
        raise ConfigError(f"convert: {dst} is a link; --to {to} writes a directory in place "
                          "and would write through it: name the directory itself, or a new "
                          "one", field="out")


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
            to: str | None = None, force: bool = False,
            checkpoint_root: str | os.PathLike[str] | None = None) -> Converted:
    """Write the log ``src`` as ``to`` at ``dst`` and say what was written.

    ``to`` defaults to the format ``dst``'s extension names (:func:`format_of`). An existing
    ``dst`` (a file, or a directory with anything in it) is refused unless ``force``, before
    anything is read. An output that cannot be written (an existing directory where a file
    goes, a path under a file, a sink failing part way) raises
    :class:`~eventbus.errors.ConfigError` (``field="out"``) rather than reporting a count of
    records nothing holds.

    ``checkpoint_root`` (``--to mlflow`` only): the folder a checkpoint the log names must be
    below to be uploaded (default: the log's folder; see :mod:`sinks.mlflow`).
    """
    if to == "mlflow":  # OUT is a tracking URI, not a path: the sink finds the run in it
        from sinks.mlflow import backfill

        count = backfill(src, str(dst), checkpoint_root=checkpoint_root)
        return Converted("mlflow", os.fspath(dst), count, "records", count)
    if checkpoint_root is not None:
        raise ConfigError("convert: --checkpoint-root is for --to mlflow (the checkpoints "
                          "uploaded); the other formats hold no checkpoint",
                          field="checkpoint_root")
    dst = Path(dst)
    to = _chosen_format(dst, to)
    _check_output(Path(src), dst, to)
    _check_name(dst, to)
    if not force and _is_taken(dst):
        what = "a directory with files in it" if dst.is_dir() else "a file"
        # TensorBoard adds event files of its own names; it replaces none of those there.
        force_does = "to write into it anyway (TensorBoard adds its event files to those " \
            "there)" if to == "tensorboard" else "to replace it"
        raise ConfigError(f"convert: {dst} exists ({what}); add --force {force_does}, or "
                          "name a new output", field="out")
    if to in ("jsonl", "parquet"):
        if (to == "parquet") != is_parquet(dst) or (to == "jsonl" and dst.suffix != ".jsonl"):
            raise ConfigError(f"convert: {dst} is not a .{to} path; name the output "
                              f"something.{to}", field="out")
        count = copy_log(src, dst)
        return Converted(to, str(dst), count, "records", count)
    if to == "csv":
        from plugins import CSVLogger

        # Every metric name first: the header has them all, and the file is written once
        # (each new name would have CSVLogger rewrite it: minutes for thousands of names).
        size = _TableSize()
        for record in read_effective(src, kinds={"epoch_end"}):
            if record.kind == "epoch_end":
                size.add(record.epoch, record.logs)  # type: ignore[attr-defined]
        _check_size(Path(src), dst, size)
        names = size.names

        class Widened(CSVLogger):
            name = "CSVLogger"  # as errors name it

            def _open(self, append: bool) -> Any:
                table = super()._open(append)
                table.widen(names)
                return table

        counts: list[tuple[int, int]] = []
        dst.parent.mkdir(parents=True, exist_ok=True)  # as the sink would have
        # Beside it, then renamed: a link at DST is replaced, not written through.
        write_replacing(dst, lambda tmp: counts.append(_write_with(Widened(str(tmp)), src,
                                                                   dst)))
        rows = _csv_rows(dst) if counts[0][1] else 0  # no epoch ended: a file with no row
        return Converted(to, str(dst), rows, "rows", counts[0][0])
    from plugins import TensorBoard

    count, epochs = _write_with(TensorBoard(log_dir=str(dst), write_graph=False), src, dst)
    return Converted(to, str(dst), epochs, "epochs", count)


#: A CSV is written when its estimated size is at most ``CSV_MAX_RATIO`` times the log's, or
#: at most ``CSV_ALLOWED_BYTES`` whatever the log. A real run reports about the same metrics
#: every epoch, and its CSV is smaller than its log; a final epoch of 1,000 per-class metrics
#: after 2,000 epochs of 50 fills the table with NA and makes it 3 times the log. A log whose
#: every epoch names a new metric makes a table of epochs x epochs, nearly all NA: 3,000
#: epochs, an 0.8 MB log, made a 27 MB CSV (34 times), and a few tens of MB of log would fill
#: a disk. Bytes are what fill a disk, so bytes are what is bounded.
CSV_MAX_RATIO = 16
CSV_ALLOWED_BYTES = 16 * 2**20


class _TableSize:
    """The size in bytes of the CSV that CSVLogger would write for the epochs added (near
    enough: a header cell is not quoted or escaped here), and of the log's metrics as text."""

    def __init__(self) -> None:
        from sinks.csv import LINE_END, MISSING, format_value

        self._format, self._line_end, self._missing = format_value, LINE_END, MISSING
        self.names: set[str] = set()  # the table's metric columns
        self.rows = self.values = 0
        self.row_bytes = 0  # each row's epoch, separators before its values, values, line end
        self.metric_bytes = 0  # each metric as a log holds it: '"name": value, '

    def add(self, epoch: int, logs: dict[str, Any]) -> None:
        """An epoch_end's row."""
        self.names.update(logs)
        self.rows += 1
        self.values += len(logs)
        self.row_bytes += len(str(epoch)) + len(self._line_end)
        for name, value in logs.items():
            text = self._format(value)
            quoted = 2 + text.count('"') if '"' in text or "," in text else 0
            self.row_bytes += 1 + len(text) + quoted
            self.metric_bytes += len(name) + len(text) + 6

    def estimate(self) -> int:
        """The file's bytes, the header's among them."""
        header = len("epoch") + sum(1 + len(name) for name in self.names) + len(self._line_end)
        empty = self.rows * len(self.names) - self.values  # each a separator and NA
        return header + self.row_bytes + empty * (1 + len(self._missing))


def _log_bytes(src: Path) -> int:
    """The log's size on disk: the file, or a Parquet directory's files."""
    if src.is_dir():
        return sum(f.stat().st_size for f in src.rglob("*") if f.is_file())
    return src.stat().st_size


def _check_size(src: Path, dst: Path, size: _TableSize) -> None:
    """Refuse, before anything is written, a CSV many times the size of the log it comes from.

    The log's size is its size on disk, or the text of its metrics where that is more: a
    Parquet log is compressed, and its CSV is measured against what it holds.
    """
    estimate = size.estimate()
    log = max(_log_bytes(src), size.metric_bytes)
    if estimate > max(CSV_ALLOWED_BYTES, CSV_MAX_RATIO * log):
        mib = 2**20
        raise ConfigError(
            f"convert: {dst} would be a CSV of about {estimate / mib:,.1f} MiB ({size.rows:,} "
            f"rows by {len(size.names):,} metric columns) from a log of {log / mib:,.1f} MiB, more "
            f"than {CSV_MAX_RATIO} times the log and {CSV_ALLOWED_BYTES // mib} MiB: its epochs "
            "report different metrics, so nearly every cell would be NA. Convert it to .jsonl "
            "or .parquet instead, which keep each record as it is", field="out")


def _write_with(sink: Any, src: str | os.PathLike[str], dst: Path) -> tuple[int, int]:
    """Write the log ``src`` through ``sink`` (a plugin that writes); returns the records and
    the epochs written. A failure of the sink is the ConfigError naming ``dst``."""
    count = epochs = 0
    bus = Bus([sink])
    try:
        # The run as it went on: an abandoned partial epoch's batches would show twice.
        for record in read_effective(src):
            bus.write_recorded(record)
            count += 1
            epochs += record.kind == "epoch_end"
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
    return count, epochs


def _csv_rows(path: Path) -> int:
    """Data rows of the CSV written, read back: what a reader of the file will find."""
    if not path.exists():  # no epoch ended: CSVLogger wrote nothing
        return 0
    limit = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)  # a long metric name or vector is one field, read whole
    try:
        with open(path, newline="") as file:
            return max(sum(1 for _ in csv.reader(file)) - 1, 0)  # less the header
    finally:
        csv.field_size_limit(limit)


def copy_log(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> int:
    """Write the event log ``src`` to ``dst``, each in the format its path says; returns records.

    ``.parquet`` (or a directory) is Parquet, anything else JSON Lines. The records are the
    same, field for field, NaN and infinities included; ``dst`` is replaced. A resumed run's
    log converts whole, the abandoned partial epoch included (readers skip it, as they do in
    the source).
    """
    src_path, dst_path = Path(src), Path(dst)
    if src_path.resolve() == dst_path.resolve() or same_file(src_path, dst_path):
        raise ConfigError(f"convert: source and destination are the same log: {src_path}",
                          field="dst")
    if not src_path.exists():
        raise ConfigError(f"convert: {src_path}: no such log", field="src")
    counted: list[int] = []

    def write(path: Path) -> None:
        count = 0
        writer = open_writer(path)
        try:
            # Every record validated (batch records too, which a reader takes on their types
            # alone): the writer of another format must not be the first to meet an index
            # past 2**63 or a metric that is an object.
            for record in read_log(src_path, validate=True):
                writer.write(record.model_dump())
                count += 1
        finally:
            writer.close()
        counted.append(count)

    if is_parquet(dst_path):  # a directory of segments, written in place
        _refuse_link(dst_path, "parquet")
        made = not os.path.lexists(dst_path)
        try:
            write(dst_path)
        except BaseException:
            if made:  # nothing of a failed convert is left where nothing was
                shutil.rmtree(dst_path, ignore_errors=True)
            raise
    else:  # one file: beside it, then renamed (a link at DST is replaced, not followed)
        dst_path.parent.mkdir(parents=True, exist_ok=True)  # as the writer would have
        write_replacing(dst_path, write)
    return counted[0]
