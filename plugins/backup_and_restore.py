"""BackupAndRestore: survive a crash and go on from the last finished epoch, event-sourced.

``backup_dir`` holds the run's event log (``events.jsonl``) and the model's weights
(``latest.weights.h5``, and the one before it, ``previous.weights.h5``), and the weights other
plugins asked the bus to keep (``snapshot.<hash>.weights.h5``, one per ``snapshot_weights``
tag: EarlyStopping's best weights), so ``restore_best_weights`` still works after a crash.
When a run starts and
a backup is there, the plugin restores the weights and hands the log to the bus
(``resume_from``), which replays it into every plugin so each continues from its exact state
(wait counters, best values, cooldowns, learning rate) and sets ``bus.initial_epoch``, the epoch
the loop starts from. After a clean ``train_end`` the backup is deleted.

Why two weight files (``double_checkpoint=True``, the default): the weights of an epoch are
written while the bus handles its ``epoch_end``, just before the bus flushes the log. A crash
between the two leaves weights one epoch ahead of the log; the previous file then still holds the
weights that match the log, and the restore picks the newest backup the log has caught up with.
It also covers a latest file that cannot be read. ``double_checkpoint=False`` (Keras 3's default)
keeps only ``latest.weights.h5``: half the disk space, but after a crash in that window no
weights match the log, and the resumed run keeps the model's current weights (with a warning).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from eventbus import ConfigError, Plugin, hookimpl
from eventbus.jsonl import JsonlWriter
from eventbus.records import Warning, WeightsRestored

from .monitor import require_bool, require_path, require_save_freq

__all__ = ["BackupAndRestore"]

LOG = "events.jsonl"
LATEST = "latest.weights.h5"
PREVIOUS = "previous.weights.h5"
SNAPSHOT = "snapshot.{}.weights.h5"


def snapshot_file(tag: str) -> str:
    """The backup file of the weights kept under ``tag`` (tags may hold any character)."""
    return SNAPSHOT.format(hashlib.sha256(tag.encode()).hexdigest()[:16])


def resume_epoch(log: str) -> tuple[str, int]:
    """The run id of ``log`` and the epoch a resumed run starts from (last finished + 1).

    The same rule as :meth:`eventbus.Bus.resume`: a partial epoch after the last ``epoch_end``
    is run again, and a ``resumed`` record's abandoned records do not count.
    """
    from eventbus import read_header
    from eventbus.effective import resume_point

    last = resume_point(log).epoch  # a quick search, not a full read
    return read_header(log).run_id, (last + 1 if last is not None else 0)


def _count(value: Any) -> bool:
    """Whether ``value`` (from a backup file's metadata) is a whole number, bools excluded."""
    return isinstance(value, int) and not isinstance(value, bool)


class BackupAndRestore(Plugin):
    """Back up the run (event log and weights) in ``backup_dir``; resume from it after a crash.

    ``save_freq="epoch"`` backs the weights up at every epoch end; an int ``N`` also every ``N``
    training batches (counted across epochs). ``double_checkpoint`` keeps the previous weights
    backup next to the latest (see the module docstring for why it defaults to True here).
    ``delete_checkpoint=False`` keeps the backup after a clean end.
    """

    side_effects = True

    def __init__(self, backup_dir: str | os.PathLike[str], save_freq: str | int = "epoch",
                 double_checkpoint: bool = True, delete_checkpoint: bool = True):
        name = type(self).name
        self.backup_dir = require_path(backup_dir, "backup_dir", name)
        if os.path.exists(self.backup_dir) and not os.path.isdir(self.backup_dir):
            raise ConfigError(f"{name}: backup_dir {self.backup_dir} exists and is not a "
                              "directory; give a directory (it is created if missing)",
                              plugin=name, field="backup_dir")
        require_save_freq(save_freq, name)
        self.save_freq = save_freq
        if save_freq == "epoch":
            self.unsubscribe("on_batch_end")  # backing up per epoch costs nothing per batch
        self.double_checkpoint = require_bool(double_checkpoint, "double_checkpoint", name)
        self.delete_checkpoint = require_bool(delete_checkpoint, "delete_checkpoint", name)
        self.log_path = os.path.join(self.backup_dir, LOG)
        self._bus: Any = None
        self._writer: JsonlWriter | None = None
        self._asked = False
        self._started = False
        self._batches = 0
        # Outcomes of the restore, returned from the first hook after it: reported through
        # bus.report() they would be drained while the bus replays the log, and lost.
        self._outbox: list[Any] = []

    def _ensure_dir(self) -> None:
        """Create ``backup_dir``; failing that, a ConfigError naming the plugin and the field
        (a raw ``OSError`` said only "File exists" or "Not a directory")."""
        try:
            os.makedirs(self.backup_dir, exist_ok=True)
        except OSError as exc:
            name = type(self).name
            raise ConfigError(f"{name}: cannot create backup_dir {self.backup_dir}: "
                              f"{exc.strerror or exc}", plugin=name,
                              field="backup_dir") from exc

    # --- starting: a fresh backup, or a resume --------------------------------------------------

    @hookimpl
    def on_attach(self, bus: Any) -> None:
        self._bus = bus

    @hookimpl
    def resume_from(self, bus: Any) -> str | None:
        """Open the backup log; if it holds a run, restore its weights and hand it to the bus."""
        self._asked = True
        self._started = True
        resuming = os.path.exists(self.log_path) and os.path.getsize(self.log_path) > 0
        self._ensure_dir()
        # Appending first also cuts a torn last line, so the bus reads a clean log.
        self._writer = JsonlWriter(self.log_path, append=resuming)
        bus.add_writer(self._writer)
        if not resuming:
            return None
        run_id, initial_epoch = resume_epoch(self.log_path)
        self._restore(run_id, initial_epoch)
        return self.log_path

    def _start(self) -> None:
        """The first hook of a bus that never asked ``resume_from``: the plugin was registered
        after the bus was built (``bus.register``), when the bus had already chosen what to
        resume from. The bus's log is then the record; the plugin keeps and restores the
        weights only.
        """
        self._started = True
        bus = self._bus
        self._outbox.append(Warning(
            source=bus.label(self),
            message=f"{bus.label(self)}: the bus did not ask for a backup log to resume from "
                    "(this plugin was registered after the bus was built; give it in "
                    "Bus(plugins=...)); only the weights are backed up in "
                    f"{self.backup_dir}", details={"backup_dir": self.backup_dir}))
        if bus.initial_epoch > 0:
            self._restore(bus.run_id, bus.initial_epoch)

    # --- weights ---------------------------------------------------------------------------------

    def _restore(self, run_id: str, initial_epoch: int) -> None:
        from sinks.hdf5 import load_checkpoint

        bus = self._bus
        label = bus.label(self)
        candidates = []
        for file in (LATEST, PREVIOUS):
            path = os.path.join(self.backup_dir, file)
            if not os.path.exists(path):
                continue
            try:
                checkpoint = load_checkpoint(path)
            except Exception as exc:  # noqa: BLE001 - a damaged backup: the other may do
                self._outbox.append(Warning(
                    source=label, message=f"{label}: cannot read {path}: "
                    f"{type(exc).__name__}: {exc}", details={"path": path}))
                continue
            meta = checkpoint.metadata
            finished, step = meta.get("epochs_finished"), meta.get("step")
            # A file is untrusted: only whole numbers are compared (a str would raise here).
            if meta.get("run_id") == run_id and _count(finished) and finished <= initial_epoch:
                candidates.append(((finished, step if _count(step) else 0), path, checkpoint))
        if not candidates:
            if bus.model is not None:
                self._outbox.append(Warning(
                    source=label, message=f"{label}: no weights backup in {self.backup_dir} "
                    f"matches the log (run {run_id}, resuming at epoch {initial_epoch}); the "
                    "model keeps its current weights", details={"initial_epoch": initial_epoch}))
            return
        (finished, _), path, checkpoint = max(candidates, key=lambda c: c[0])
        if bus.model is None:
            self._outbox.append(Warning(
                source=label, message=f"{label}: {path} holds weights to restore but the bus "
                "has no model adapter (Bus(model=...))", details={"path": path}))
            return
        bus.model.set_weights(checkpoint.weights)
        if checkpoint.optimizer and callable(getattr(bus.model, "set_optimizer_state", None)):
            bus.model.set_optimizer_state(checkpoint.optimizer)
        if finished < initial_epoch:
            self._outbox.append(Warning(
                source=label, message=f"{label}: the newest usable weights backup is from "
                f"before epoch {finished} ended, the log resumes at epoch {initial_epoch}",
                details={"path": path, "epochs_finished": finished,
                         "initial_epoch": initial_epoch}))
        self._outbox.append(WeightsRestored(
            source=label, tag=f"backup:{os.path.basename(path)}",
            epoch=initial_epoch - 1 if initial_epoch else None))
        self._restore_snapshots(run_id, initial_epoch)

    def _restore_snapshots(self, run_id: str, initial_epoch: int) -> None:
        """Give the bus back the weights kept under each tag before the crash."""
        from sinks.hdf5 import load_checkpoint

        label = self._bus.label(self)
        for name in sorted(os.listdir(self.backup_dir)):
            if not (name.startswith("snapshot.") and name.endswith(".weights.h5")):
                continue
            path = os.path.join(self.backup_dir, name)
            try:
                checkpoint = load_checkpoint(path)
            except Exception as exc:  # noqa: BLE001 - a damaged file: restore the others
                self._outbox.append(Warning(
                    source=label, message=f"{label}: cannot read {path}: "
                    f"{type(exc).__name__}: {exc}", details={"path": path}))
                continue
            meta = checkpoint.metadata
            tag = meta.get("tag")
            # Kept in an epoch the log resumes after: an abandoned epoch's snapshot is stale.
            finished = meta.get("epochs_finished")
            if meta.get("run_id") != run_id or not isinstance(tag, str) or \
                    not _count(finished) or finished > initial_epoch:
                continue
            self._bus.snapshots[tag] = checkpoint.weights
            self._outbox.append(WeightsRestored(source=label, tag=tag, epoch=meta.get("epoch")))

    @hookimpl
    def on_decision(self, decision: Any) -> None:
        """Back up weights as soon as the bus keeps them (``snapshot_weights``)."""
        if decision.kind != "snapshot_weights" or self._bus is None:
            return
        weights = self._bus.snapshots.get(decision.tag)
        if weights is None:
            return  # no model adapter: the bus recorded a warning already
        from sinks.hdf5 import write_checkpoint

        self._ensure_dir()
        write_checkpoint(os.path.join(self.backup_dir, snapshot_file(decision.tag)), weights,
                         metadata={"run_id": self._bus.run_id, "tag": decision.tag,
                                   "epoch": decision.epoch,
                                   "epochs_finished": (decision.epoch or 0) + 1})

    def _save(self, event: Any, epochs_finished: int) -> None:
        from sinks.hdf5 import write_checkpoint

        bus = self._bus
        model = bus.model
        if model is None:
            return  # nothing to back up but the log, which the bus writes
        self._ensure_dir()
        latest = os.path.join(self.backup_dir, LATEST)
        previous = os.path.join(self.backup_dir, PREVIOUS)
        if not self.double_checkpoint:
            if os.path.exists(previous):  # left by a run with double_checkpoint=True
                os.remove(previous)
        elif os.path.exists(latest):
            os.replace(latest, previous)
        optimizer = None
        if callable(getattr(model, "get_optimizer_state", None)):
            optimizer = model.get_optimizer_state()
        write_checkpoint(latest, model.get_weights(), optimizer=optimizer, metadata={
            "run_id": bus.run_id, "epochs_finished": epochs_finished, "epoch": event.epoch,
            "batch": getattr(event, "batch", None), "step": bus.step, "seq": event.seq})

    # --- the run ---------------------------------------------------------------------------------

    def _take(self) -> list[Any] | None:
        out, self._outbox = self._outbox, []
        return out or None

    @hookimpl
    def on_epoch_begin(self, event: Any) -> Any:
        if not self._started:
            self._start()
        if self._writer is not None:
            # The last epoch's records reach the disk before this epoch's weights are written.
            self._writer.sync()
        return self._take()

    @hookimpl
    def on_epoch_end(self, event: Any) -> Any:
        if not self._started:
            self._start()
        self._save(event, event.epoch + 1)
        return self._take()

    @hookimpl
    def on_batch_end(self, event: Any) -> Any:
        if self.save_freq == "epoch":
            return None
        if not self._started:
            self._start()
        self._batches += 1
        if self._batches >= self.save_freq:  # type: ignore[operator]
            self._batches = 0
            self._save(event, event.epoch if event.epoch is not None else 0)
        return self._take()

    @hookimpl
    def on_train_end(self, event: Any) -> Any:
        out = self._take()
        if not self.delete_checkpoint:
            return out
        if self._writer is not None:
            self._bus.remove_writer(self._writer)
            self._writer = None
        snapshots = [name for name in os.listdir(self.backup_dir)
                     if name.startswith("snapshot.") and name.endswith(".weights.h5")] \
            if os.path.isdir(self.backup_dir) else []
        for file in (LOG, LATEST, PREVIOUS, *snapshots):
            path = os.path.join(self.backup_dir, file)
            if os.path.exists(path):
                os.remove(path)
        # Only our files are removed (Keras deletes the whole folder); the folder goes if empty.
        if os.path.isdir(self.backup_dir) and not os.listdir(self.backup_dir):
            os.rmdir(self.backup_dir)
        return out
