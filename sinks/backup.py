"""The files of a run's backup: the model's weights, the kept snapshots, and reading them back.

A backup folder holds the run's event log (``events.jsonl``, written by a JSON Lines sink), the
model's weights (``latest.weights.h5``, and the one before it, ``previous.weights.h5``) and the
weights other plugins asked the bus to keep (``snapshot.<hash>.weights.h5``, one per
``snapshot_weights`` tag). :class:`BackupFiles` writes and reads them; the BackupAndRestore
plugin decides when.

Every weights file carries, in its metadata, the run id and how many epochs had finished when
it was written, so a resume picks only the files its log has caught up with.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import warnings
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from eventbus.errors import CheckpointError, ConfigError
from eventbus.records import Warning

from .hdf5 import Checkpoint, Expected, expected_of, load_checkpoint, write_checkpoint

__all__ = ["LATEST", "LOG", "PREVIOUS", "BackupFiles", "Restore", "snapshot_file"]

LOG = "events.jsonl"
LATEST = "latest.weights.h5"
PREVIOUS = "previous.weights.h5"
SNAPSHOT = "snapshot.{}.weights.h5"


def _count(value: Any) -> bool:
    """Whether ``value`` (from a backup file's metadata) is a whole number, bools excluded."""
    return isinstance(value, int) and not isinstance(value, bool)


def snapshot_file(tag: str) -> str:
    """The backup file of the weights kept under ``tag`` (tags may hold any character)."""
    return SNAPSHOT.format(hashlib.sha256(tag.encode()).hexdigest()[:16])


@dataclass
class Restore:
    """What a backup gives back to a resumed run."""

    #: The newest weights file the log has caught up with: (file name, checkpoint), or None.
    latest: tuple[str, Checkpoint] | None
    #: The epochs finished when it was written.
    finished: int
    #: Snapshot tags and their checkpoints (EarlyStopping's best weights).
    snapshots: list[tuple[str, Checkpoint]]
    #: What went wrong on the way (files that cannot be read, weights behind the log).
    warnings: list[Warning]
    #: The weights files refused as not the model's (weights of other names, shapes or dtype
    #: kinds, or declaring more than a backup of it holds).
    misfits: list[str] = field(default_factory=list)


class BackupFiles:
    """The weights files of the backup folder ``directory``."""

    def __init__(self, directory: str, *, double: bool = True, plugin: str = "BackupAndRestore"):
        self.directory = directory
        self.double = double
        self.plugin = plugin
        #: The snapshot files of this run (written now, or found with its run id): the only
        #: ones ``remove`` takes; others in a folder anyone may write are not this run's.
        self._snapshots_of_run: set[str] = set()
        #: What reading each version of each file gave (see _read).
        self._verdicts: dict[tuple[Any, ...], tuple[Checkpoint | None, Warning | None]] = {}

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def make(self) -> None:
        """Create the folder; a path that is a file, or one that cannot be made, is a clear
        error naming the plugin and the folder."""
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise ConfigError(f"{self.plugin}: backup_dir {self.directory} exists and is not a "
                              "directory; give a directory (it is created if missing)",
                              plugin=self.plugin, field="backup_dir")
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:  # a raw OSError would say only "File exists"
            raise ConfigError(f"{self.plugin}: cannot create backup_dir {self.directory}: "
                              f"{exc.strerror or exc}", plugin=self.plugin,
                              field="backup_dir") from exc

    def save(self, model: Any, metadata: dict[str, Any]) -> None:
        """Write the model's weights (and its optimizer's state) as the latest backup; the
        one before it becomes the previous (with ``double``)."""
        self.make()
        latest, previous = self.path(LATEST), self.path(PREVIOUS)
        if not self.double:
            if os.path.exists(previous):  # left by a run with double_checkpoint=True
                os.remove(previous)
        elif os.path.exists(latest):
            if os.path.isdir(previous) and not os.path.islink(previous):
                with contextlib.suppress(OSError):  # an empty folder put at our file's name
                    os.rmdir(previous)
            os.replace(latest, previous)
        optimizer = None
        if callable(getattr(model, "get_optimizer_state", None)):
            optimizer = model.get_optimizer_state()
        write_checkpoint(latest, model.get_weights(), optimizer=optimizer, metadata=metadata)

    def save_snapshot(self, tag: str, weights: Any, metadata: dict[str, Any]) -> None:
        self.make()
        name = snapshot_file(tag)
        write_checkpoint(self.path(name), weights, metadata={**metadata, "tag": tag})
        self._snapshots_of_run.add(name)

    def restore(self, run_id: str, initial_epoch: int, *, have_model: bool | None = None,
                model: Any = None, snapshots: bool = True) -> Restore:
        """The newest weights (and, with ``snapshots``, the kept snapshots) that match a log
        resuming at ``initial_epoch``, and, given the ``model``, fit it: a file whose weights
        are not the model's (names, shapes, dtype kinds) is refused, before its values are
        read, with a warning naming it and the first weight that differs, and the other file
        is used (``Restore.misfits`` names the refused ones). ``have_model``: whether the
        run has a model (by default, whether ``model`` is given)."""
        if have_model is None:
            have_model = model is not None
        expect = None if model is None else expected_of(model)
        found = Restore(None, 0, [], [])
        candidates = []
        for name in (LATEST, PREVIOUS):
            checkpoint = self._read(name, found.warnings, expect, found.misfits)
            if checkpoint is None:
                continue
            meta = checkpoint.metadata
            finished, step = meta.get("epochs_finished"), meta.get("step")
            # A file is untrusted: only whole numbers are compared (a str would raise here).
            if meta.get("run_id") == run_id and not _count(finished):
                found.warnings.append(Warning(
                    message=f"{self.plugin}: {self.path(name)} has epochs_finished="
                    f"{finished!r} in its metadata, not a count of epochs; it is not used",
                    details={"path": self.path(name)}))
            elif meta.get("run_id") == run_id and finished <= initial_epoch:
                candidates.append(((finished, step if _count(step) else 0), name, checkpoint))
        if not candidates:
            if have_model and not found.misfits:
                found.warnings.append(Warning(
                    message=f"{self.plugin}: no weights backup in {self.directory} matches "
                    f"the log (run {run_id}, resuming at epoch {initial_epoch}); the model "
                    "keeps its current weights", details={"initial_epoch": initial_epoch}))
            elif have_model:
                found.warnings.append(Warning(
                    message=f"{self.plugin}: no weights backup in {self.directory} fits the "
                    f"model ({', '.join(found.misfits)} refused); the model keeps its current "
                    "weights", details={"initial_epoch": initial_epoch,
                                        "refused": list(found.misfits)}))
            return found
        (found.finished, _), name, checkpoint = max(candidates, key=lambda c: c[0])
        found.latest = (name, checkpoint)
        if found.finished < initial_epoch:
            found.warnings.append(Warning(
                message=f"{self.plugin}: the newest usable weights backup is from before "
                f"epoch {found.finished} ended, the log resumes at epoch {initial_epoch}",
                details={"path": self.path(name), "epochs_finished": found.finished,
                         "initial_epoch": initial_epoch}))
        if snapshots:
            found.snapshots = self._snapshots(run_id, initial_epoch, found.warnings, expect)
        return found

    def forget(self) -> None:
        """Let go of what the reads of this resume kept (weights included): the resume is
        done with them."""
        self._verdicts.clear()

    def promote_previous(self) -> None:
        """The previous file becomes the latest: a resume restored it because the latest is
        ahead of the log (a crash between its write and the log's record of that epoch) or
        unusable. Left where it was, the next save's rotation would drop it, and a second
        crash before the log caught up would find no backup the log matches."""
        with suppress(OSError):
            os.replace(self.path(PREVIOUS), self.path(LATEST))

    def _snapshots(self, run_id: str, initial_epoch: int, warnings: list[Warning],
                   expect: Expected | None = None) -> list[tuple[str, Checkpoint]]:
        out = []
        # Only the files of tags the backup's log kept weights under are read: every other
        # snapshot.*.weights.h5 in a folder others can write is not this run's, and one the
        # HDF5 library loops on costs a parse's whole deadline (planted by the dozen, minutes).
        tags = self._recorded_tags()
        names = self._snapshot_names()
        if tags is not None:
            names = [n for n in names if n in {snapshot_file(tag) for tag in tags}]
        for name in sorted(names):
            checkpoint = self._read(name, warnings, expect)
            if checkpoint is None:
                continue
            meta = checkpoint.metadata
            if meta.get("run_id") == run_id:
                self._snapshots_of_run.add(name)
            tag = meta.get("tag")
            # Kept in an epoch the log resumes after: an abandoned epoch's snapshot is stale.
            finished = meta.get("epochs_finished")
            if meta.get("run_id") != run_id or not isinstance(tag, str) or \
                    not _count(finished) or finished > initial_epoch:
                continue
            out.append((tag, checkpoint))
        return out

    def _read(self, name: str, warnings: list[Warning], expect: Expected | None = None,
              misfits: list[str] | None = None) -> Checkpoint | None:
        """The backup file ``name``, read without following a link out of the folder (others
        may write it), and read once per version of the file and model: a resume asks twice,
        and a file on which HDF5 loops costs its whole deadline each time. With ``expect``
        (the model's weights), a file whose weights are not the model's is refused before any
        value is read (a few hundred kilobytes of compressed zeros can declare hundreds of
        megabytes), with a warning, and its name goes to ``misfits``."""
        path = self.path(name)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            warnings.append(Warning(message=f"{self.plugin}: cannot read {path}: {exc}",
                                    details={"path": path}))
            return None
        key = (name, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, expect)
        if key not in self._verdicts:
            try:
                self._verdicts[key] = (load_checkpoint(path, follow_links=False,
                                                       expect=expect), None)
            except CheckpointError as exc:
                self._verdicts[key] = (None, self._refused(path, exc))
            except Exception as exc:  # noqa: BLE001 - a damaged backup: another may do
                self._verdicts[key] = (None, Warning(
                    message=f"{self.plugin}: cannot read {path}: {type(exc).__name__}: {exc}",
                    details={"path": path}))
        checkpoint, warning = self._verdicts[key]
        if warning is not None:
            warnings.append(warning)
            if misfits is not None and warning.details.get("misfit"):
                misfits.append(name)
        return checkpoint

    def _refused(self, path: str, exc: CheckpointError) -> Warning:
        """The warning for a file the loader refused: as damaged, or as no backup of the
        model, then naming the first weight that differs."""
        if not exc.misfit:
            return Warning(message=f"{self.plugin}: cannot read {path}: CheckpointError: {exc}",
                           details={"path": path})
        why = str(exc).removeprefix(f"{path}: ")
        return Warning(message=f"{self.plugin}: {path} is not a backup of this model ({why}); "
                       "it is not used",
                       details={"path": path, "dataset": exc.dataset, "misfit": True})

    def _recorded_tags(self) -> set[str] | None:
        """The tags the backup's log has ``snapshot_weights`` decisions for; None when it has
        no log (a BackupAndRestore registered after the bus was built backs up the weights
        alone: the run's own log, resumed, holds the decisions; the snapshot files are then
        told by the run id in them). A log it cannot read names none."""
        from eventbus.log import has_records, read_log

        if not has_records(self.path(LOG)):
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a torn last line: the resume's read says so
                return {record.tag for record in read_log(self.path(LOG),
                                                          kinds=["snapshot_weights"])}
        except Exception:  # noqa: BLE001 - the resume reads the log itself, and says what is wrong
            return set()

    def _snapshot_names(self) -> list[str]:
        if not os.path.isdir(self.directory):
            return []
        return [name for name in os.listdir(self.directory)
                if name.startswith("snapshot.") and name.endswith(".weights.h5")]

    def remove(self) -> None:
        """Remove the backup's files (only this run's: Keras deletes the whole folder), and
        the folder if that leaves it empty. A name that is not a file (a folder, a link
        someone put there) is left, and the others are still removed."""
        for name in (LOG, LATEST, PREVIOUS, *sorted(self._snapshots_of_run)):
            path = self.path(name)
            with suppress(FileNotFoundError):
                if stat.S_ISREG(os.lstat(path).st_mode):
                    os.remove(path)
        if os.path.isdir(self.directory) and not os.listdir(self.directory):
            os.rmdir(self.directory)
