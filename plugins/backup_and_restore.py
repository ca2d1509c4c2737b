"""BackupAndRestore: survive a crash and go on from the last finished epoch, event-sourced.

``backup_dir`` holds the run's event log (``events.jsonl``) and the model's weights
(``latest.weights.h5``, and the one before it, ``previous.weights.h5``), and the weights other
plugins asked the bus to keep (``snapshot.<hash>.weights.h5``, one per ``snapshot_weights``
tag: EarlyStopping's best weights), so ``restore_best_weights`` still works after a crash.

The plugin decides when to back up (every epoch end, or every ``save_freq`` batches) and is a
sink of the records it needs; :class:`sinks.backup.BackupFiles` writes and reads the files.
When a run starts and a backup is there, the plugin hands the backup log to the bus
(``resume_from``), which replays it into every plugin so each continues from its exact state
(wait counters, best values, cooldowns, learning rate) and sets ``bus.initial_epoch``, the epoch
the loop starts from. As the ``resumed`` record is written, the plugin reads the weights files
back and gives them to the bus, which puts them into the model as it applies any decision (a
failure is recorded, never raised) and records ``weights_restored``; a model attached after the
bus was built (by ``KerasBridge``) gets them at the first epoch that begins. The restore is an
effect of resuming, not a decision: a resumed run decides exactly as an uninterrupted one,
which is what replay verifies. After a clean ``train_end`` the backup is deleted.

Why two weight files (``double_checkpoint=True``, the default): the weights of an epoch are
written as its ``epoch_end`` is recorded, before the bus flushes the log. A crash between the
two leaves weights one epoch ahead of the log; the previous file then still holds the weights
that match the log, and the restore picks the newest backup the log has caught up with. It
also covers a latest file that cannot be read. ``double_checkpoint=False`` (Keras 3's default)
keeps only ``latest.weights.h5``: half the disk space, but after a crash in that window no
weights match the log, and the resumed run keeps the model's current weights (with a warning).
"""

from __future__ import annotations

import os
from typing import Any

from eventbus import Plugin, Sink, hookimpl
from eventbus.errors import ConfigError
from eventbus.jsonl import JsonlWriter
from eventbus.records import Warning, WeightsRestored
from eventbus.run import Run
from eventbus.sink import FailingWrites
from sinks.backup import LATEST, LOG, PREVIOUS, BackupFiles, snapshot_file

from .monitor import require_bool, require_path, require_save_freq

__all__ = ["LATEST", "LOG", "PREVIOUS", "BackupAndRestore", "resume_epoch", "snapshot_file"]


def resume_epoch(log: str) -> tuple[str, int]:
    """The run id of ``log`` and the epoch a resumed run starts from (last finished + 1).

    The same rule as the bus's resume: a partial epoch after the last ``epoch_end`` is run
    again, and a ``resumed`` record's abandoned records do not count.
    """
    from eventbus import read_header
    from eventbus.effective import resume_point

    last = resume_point(log).epoch  # a quick search, not a full read
    return read_header(log).run_id, (last + 1 if last is not None else 0)


class BackupAndRestore(Plugin, Sink):
    """Back up the run (event log and weights) in ``backup_dir``; resume from it after a crash.

    ``save_freq="epoch"`` backs the weights up at every epoch end; an int ``N`` also every ``N``
    training batches (counted across epochs). ``double_checkpoint`` keeps the previous weights
    backup next to the latest (see the module docstring for why it defaults to True here).
    ``delete_checkpoint=False`` keeps the backup after a clean end.
    """

    side_effects = True
    #: Puts the model's weights back when a run resumes (see :mod:`eventbus.resume`).
    restores_weights = True
    #: Backs the weights up every epoch: a checkpoint writer leaves the restoring to it.
    backs_up_weights = True
    #: Whether a resume found weights in the backup and gave them to the model: a checkpoint
    #: writer on the same bus then restores nothing (the backup is as new as any checkpoint).
    restored_weights = False

    def __init__(self, backup_dir: str | os.PathLike[str], save_freq: str | int = "epoch",
                 double_checkpoint: bool = True, delete_checkpoint: bool = True):
        name = type(self).name
        self.backup_dir = require_path(backup_dir, "backup_dir", name)
        require_save_freq(save_freq, name)
        self.save_freq = save_freq
        self.double_checkpoint = require_bool(double_checkpoint, "double_checkpoint", name)
        self.delete_checkpoint = require_bool(delete_checkpoint, "delete_checkpoint", name)
        self.log_path = os.path.join(self.backup_dir, LOG)
        self.files = BackupFiles(self.backup_dir, double=self.double_checkpoint, plugin=name)
        if os.path.exists(self.backup_dir) and not os.path.isdir(self.backup_dir):
            self.files.make()  # says the path is a file, at construction
        takes = {"resumed", "epoch_begin", "epoch_end", "snapshot_weights", "train_end"}
        if save_freq != "epoch":
            takes.add("batch_end")  # backing up per epoch costs nothing per batch
        self.takes = frozenset(takes)
        self._run: Run | None = None
        self._writer: JsonlWriter | None = None
        self._asked = False
        self._restored = False
        self._batches = 0
        self._outbox: list[Any] = []
        self._failing = FailingWrites()
        #: Snapshots whose file a full disk refused: tag -> metadata, written at the next save.
        self._unsaved: dict[str, dict[str, Any]] = {}

    # --- starting: a fresh backup, or a resume --------------------------------------------------

    @hookimpl
    def resume_from(self, run: Run) -> str | None:
        """Open the backup log; if it holds a run, hand it to the bus to resume from."""
        self._asked = True
        self.files.make()
        # Appending first also cuts a torn last line, so the bus reads a clean log. Never
        # through a link: the folder may be writable by others (a link planted as the log
        # would send this run's records into another file).
        self._writer = JsonlWriter(self.log_path, append=True, follow_links=False)
        resuming = self._writer.size > 0
        run.add_sink(self._writer)
        return self.log_path if resuming else None

    def resume_epochs(self, run: Run, log: str, epochs: int) -> int | None:
        """How many of the ``epochs`` finished epochs of ``log`` the weights backup can resume
        after: fewer when the latest file cannot be used (damaged, or not the model's) and the
        previous one, a finished epoch behind, is; the bus then resumes after that epoch (see
        :mod:`eventbus.resume`). None: no usable weights file (the restore warns, where there
        is a model). A model on the bus whose weights no backup file of the run fits is a
        ``ConfigError``: going on after the log's epochs with weights that never trained them
        would lose the run's progress without a word, and starting over would abandon it."""
        from eventbus import read_header

        found = self.files.restore(read_header(log).run_id, epochs, have_model=True,
                                   model=run.model,
                                   snapshots=False)  # read when the run restores them
        if found.latest is None and found.misfits:
            refused = "; ".join(w.message.removeprefix(f"{self.files.plugin}: ")
                                for w in found.warnings if w.details.get("misfit"))
            raise ConfigError(f"{self.files.plugin}: cannot resume: no weights backup in "
                              f"{self.backup_dir} fits the model: {refused}. Give the model the "
                              "run was trained with, or another backup_dir to start a new run",
                              plugin=self.files.plugin, field="backup_dir")
        return None if found.latest is None else found.finished

    def open(self, run: Run) -> None:
        self._run = run
        self._failing.over()  # a new run: its first failed write is reported
        if not self._asked:
            # Registered after the bus was built, when it had already chosen what to resume
            # from: the bus's log is then the record; only the weights are backed up here.
            label = run.label(self)
            self._outbox.append(Warning(
                source=label,
                message=f"{label}: the bus did not ask for a backup log to resume from (this "
                        "plugin was registered after the bus was built; give it in "
                        f"Bus(plugins=...)); only the weights are backed up in "
                        f"{self.backup_dir}", details={"backup_dir": self.backup_dir}))

    def _restore(self, run: Run) -> None:
        """Give the resumed run the weights (and kept snapshots) its log has caught up with."""
        self._restored = True
        label = run.label(self)
        found = self.files.restore(run.run_id, run.initial_epoch, model=run.model)
        self.files.forget()  # the weights found are handed to the bus below, not kept here
        self._outbox.extend(warning.model_copy(update={"source": label})
                            for warning in found.warnings)
        if found.latest is None:
            return
        self.restored_weights = True
        name, checkpoint = found.latest
        tag = f"backup:{name}"
        run.keep_weights(tag, checkpoint.weights, optimizer=checkpoint.optimizer)
        run.restore_weights(tag, source=label)
        if name == PREVIOUS:
            self.files.promote_previous()
        for tag, snapshot in found.snapshots:
            run.keep_weights(tag, snapshot.weights)
            self._outbox.append(WeightsRestored(source=label, tag=tag,
                                                epoch=snapshot.metadata.get("epoch")))

    # --- the run ---------------------------------------------------------------------------------

    def write(self, record: dict[str, Any]) -> Any:
        run = self._run
        if run is None:
            return None
        kind = record["kind"]
        # The model may come after the bus (KerasBridge attaches it at fit): the weights go
        # back at the first record that finds it there, before the first batch.
        if not self._restored and (kind == "resumed" or run.resumed) and \
                run.model is not None:
            self._restore(run)
        if kind == "epoch_begin" and self._writer is not None:
            # The last epoch's records reach the disk before this epoch's weights are written.
            self._writer.sync()
        elif kind == "epoch_end":
            self._save(run, record, record["epoch"] + 1)
        elif kind == "batch_end":
            self._batches += 1
            if self._batches >= self.save_freq:  # type: ignore[operator]
                self._batches = 0
                epoch = record["epoch"]
                self._save(run, record, epoch if epoch is not None else 0)
        elif kind == "snapshot_weights":
            self._snapshot(run, record)
        elif kind == "train_end":
            self._end(run)
        out, self._outbox = self._outbox, []
        return out or None

    def _save(self, run: Run, record: dict[str, Any], epochs_finished: int) -> None:
        model = run.model
        if model is None:
            return  # nothing to back up but the log, which the bus writes
        try:
            for tag in list(self._unsaved):  # the bus still keeps their weights
                self._write_snapshot(run, tag, self._unsaved[tag])
            self.files.save(model, {
                "run_id": run.run_id, "epochs_finished": epochs_finished,
                "epoch": record["epoch"], "batch": record.get("batch"), "step": run.step,
                "seq": record["seq"]})
        except OSError as exc:  # a full disk: the next save writes newer weights
            self._failing.failed(run, run.label(self), record["kind"], exc,
                                 f"the backup after epoch {epochs_finished} was not written",
                                 "the next one is tried at the next save")
            return
        self._failing.over()

    def _snapshot(self, run: Run, record: dict[str, Any]) -> None:
        """Back up weights as soon as the bus keeps them (the decision is applied first)."""
        epoch = record.get("epoch")
        metadata = {"run_id": run.run_id, "epoch": epoch, "epochs_finished": (epoch or 0) + 1}
        try:
            self._write_snapshot(run, record["tag"], metadata)
        except OSError as exc:  # kept by the bus: written with the next save
            self._unsaved[record["tag"]] = metadata
            self._failing.failed(run, run.label(self), record["kind"], exc,
                                 f"the weights kept as {record['tag']!r} were not backed up",
                                 "they are tried again at the next save")

    def _write_snapshot(self, run: Run, tag: str, metadata: dict[str, Any]) -> None:
        weights = run.snapshots.get(tag)
        if weights is not None:  # None: no model adapter, the bus recorded a warning already
            self.files.save_snapshot(tag, weights, metadata)
        self._unsaved.pop(tag, None)

    def _end(self, run: Run) -> None:
        if not self.delete_checkpoint:
            return
        if self._writer is not None:
            run.remove_sink(self._writer)
            self._writer = None
        self.files.remove()
