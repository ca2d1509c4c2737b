"""EarlyStopping: stop training when a monitored metric has stopped improving (Keras 3.15 rules).

A pure state machine over ``epoch_end`` events. It returns ``stop_training`` decisions, and with
``restore_best_weights`` asks the bus to keep the weights of the best epoch (``snapshot_weights``)
and to put them back at ``train_end`` (``restore_weights``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

from eventbus import ConfigError, Plugin, hookimpl
from eventbus.records import EpochEnd, RestoreWeights, SnapshotWeights, StopTraining, TrainEnd
from eventbus.run import Run
from sinks import console

from .monitor import (
    KerasMonitorNames,
    Monitor,
    fmt,
    require_bool,
    require_int,
    require_real,
    require_verbose,
)

__all__ = ["EarlyStopping"]


class EarlyStopping(KerasMonitorNames, Plugin):
    """Stop training when ``monitor`` has stopped improving.

    Keras's parameters and semantics, plus three checks from PyTorch Lightning:
    ``check_finite`` (stop on a NaN or infinite value), ``stopping_threshold`` (stop once the
    value is better than this) and ``divergence_threshold`` (stop once it is worse than this).
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", baseline: float | None = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0, *,
                 check_finite: bool = False, stopping_threshold: float | None = None,
                 divergence_threshold: float | None = None):
        name = type(self).name
        self.tracker = Monitor(monitor, mode, min_delta, plugin=name)
        self._keras_monitor_names(monitor, mode, self.tracker.min_delta)
        self.patience = require_int(patience, "patience", name)
        self.verbose = require_verbose(verbose, name)
        self.baseline = None if baseline is None else require_real(baseline, "baseline", name)
        self.restore_best_weights = require_bool(restore_best_weights, "restore_best_weights",
                                                 name)
        self.start_from_epoch = require_int(start_from_epoch, "start_from_epoch", name)
        self.check_finite = require_bool(check_finite, "check_finite", name)
        self.stopping_threshold = None if stopping_threshold is None else \
            require_real(stopping_threshold, "stopping_threshold", name)
        self.divergence_threshold = None if divergence_threshold is None else \
            require_real(divergence_threshold, "divergence_threshold", name)
        if self.stopping_threshold is not None and self.divergence_threshold is not None:
            # The one comparison made before any epoch, so the one place where a name
            # mode='auto' cannot place fails when the plugin is built.
            self.tracker.resolve("construction (stopping_threshold and divergence_threshold "
                                 "are compared)")
            if not self.tracker.beats(self.stopping_threshold, self.divergence_threshold):
                raise ConfigError(f"{name}: stopping_threshold={self.stopping_threshold} must "
                                  f"be better than divergence_threshold="
                                  f"{self.divergence_threshold} under mode="
                                  f"{self.tracker.mode!r}", plugin=name,
                                  field="stopping_threshold")
        self._tag = f"{name}/best"
        self._run: Run | None = None
        self._reset()

    def _reset(self) -> None:
        self.tracker.reset()
        self.wait = 0
        # Keras's values before any best or stop (code tests ``stopped_epoch > 0``); whether
        # there is a best epoch is ``_has_best_epoch()``.
        self.best_epoch = 0
        self.stopped_epoch = 0
        self._snapshot_taken = False
        self._best_weights_given: Any = None

    @hookimpl
    def on_attach(self, run: Run) -> None:
        # Two EarlyStopping plugins on one bus must not share a weights snapshot.
        self._tag = f"{run.label(self)}/best"
        self._run = run
        if self.verbose > 0:
            console.attach(run)  # the messages are the decisions; a console sink prints them

    @hookimpl
    def on_train_begin(self, event: Any) -> None:
        # A new run on the same instance starts afresh, as Keras 3's on_train_begin does.
        self._reset()

    @hookimpl
    def on_epoch_end(self, event: EpochEnd) -> Any:
        epoch: int = event.epoch
        logs = event.logs
        name = self.tracker.monitor
        if self.tracker.mode is None:
            # As Keras 3's first epoch_end (_set_monitor_op, which runs before the metric is
            # looked up and before the start_from_epoch check): mode='auto' must place the
            # name now, or this raises.
            self.tracker.resolve(f"epoch_end (epoch {epoch + 1})", logs)
        value = logs.get(name)
        if value is None:
            return self.tracker.missing(logs, self._not_available(logs))
        if epoch < self.start_from_epoch:
            return None

        out: list[Any] = []
        self.wait += 1
        improved = self.tracker.update(value)
        first = self.restore_best_weights and not self._snapshot_taken
        if improved or first:
            # As Keras: until something improves, the first monitored epoch counts as best.
            self.best_epoch = epoch
        if self.restore_best_weights and (improved or first):
            self._snapshot_taken = True
            out.append(self._snapshot(epoch, value, "a new best" if improved
                                      else "the first monitored epoch, kept until one improves"))
        # Only restart wait if we beat both the baseline and our previous best.
        if improved and (self.baseline is None or self.tracker.beats(value, self.baseline)):
            self.wait = 0

        stop = self._stop(epoch, value, improved)
        if stop is not None:
            self.stopped_epoch = epoch
            out.append(stop)
        return out or None

    @property
    def best_weights(self) -> Any:
        """Keras's attribute: the weights of the best epoch so far, as the model's list of
        arrays (in the model adapter's order), or None. They are the bus's (this plugin's
        ``snapshot_weights``, with ``restore_best_weights``); a value set by hand, as Keras
        allows, is kept until ``train_begin`` clears it."""
        if self._best_weights_given is not None:
            return self._best_weights_given
        if self._run is None or not self._snapshot_taken:
            return None
        kept = self._run.snapshots.get(self._tag)
        return None if kept is None else list(kept.values())

    @best_weights.setter
    def best_weights(self, value: Any) -> None:
        self._best_weights_given = value

    def get_monitor_value(self, logs: Mapping[str, Any] | None) -> Any:
        """Keras's: the monitored metric's value in ``logs``, or None, with a warning that
        lists the metrics there (a hook records that warning instead)."""
        logs = logs or {}
        value = logs.get(self.tracker.monitor)
        if value is None:
            warnings.warn(self._not_available(logs), stacklevel=2)
        return value

    def _not_available(self, logs: Mapping[str, Any]) -> str:
        return (f"Early stopping conditioned on metric `{self.tracker.monitor}` which is not "
                f"available. Available metrics are: {','.join(logs)}")

    def _stop(self, epoch: int, value: float, improved: bool) -> StopTraining | None:
        name = self.tracker.monitor
        evidence = self._evidence(epoch, value)
        # Lightning's order: a non-finite value, then the thresholds, then patience.
        if self.check_finite and not math.isfinite(value):
            return StopTraining(
                reason=f"{name} is {value}, not a finite number (best {fmt(self.best)})",
                code="non_finite", evidence=evidence)
        if self.stopping_threshold is not None and \
                self._strictly_better(value, self.stopping_threshold):
            return StopTraining(
                reason=f"{name} = {fmt(value)} reached the stopping threshold "
                       f"{fmt(self.stopping_threshold)}",
                code="stopping_threshold", evidence=evidence)
        if self.divergence_threshold is not None and \
                self._strictly_better(self.divergence_threshold, value):
            return StopTraining(
                reason=f"{name} = {fmt(value)} is worse than the divergence threshold "
                       f"{fmt(self.divergence_threshold)}",
                code="divergence_threshold", evidence=evidence)
        if not improved and self.wait >= self.patience and epoch > 0:
            return StopTraining(reason=self._patience_reason(), code="patience_exhausted",
                                evidence=evidence)
        return None

    def _strictly_better(self, a: float, b: float) -> bool:
        if math.isnan(a):
            return False
        return a < b if self.tracker.mode == "min" else a > b

    def _patience_reason(self) -> str:
        name, wait = self.tracker.monitor, self.wait
        epochs = "epoch" if wait == 1 else "epochs"
        if self.best is None:
            return f"{name} has had no comparable value (NaN) for {wait} {epochs}"
        where = f"{fmt(self.best)} (epoch {self.best_epoch + 1})"
        if self.baseline is not None and not self.tracker.beats(self.best, self.baseline):
            return (f"{name} did not improve on the baseline {fmt(self.baseline)} in {wait} "
                    f"{epochs}; best {where}")
        return f"{name} did not improve on {where} for {wait} {epochs}"

    def _has_best_epoch(self) -> bool:
        """Whether ``best_epoch`` names an epoch: a best value, or weights kept as the first."""
        return self.best is not None or self._snapshot_taken

    def _evidence(self, epoch: int, value: float) -> dict[str, Any]:
        return {"monitor": self.tracker.monitor, "value": value, "best": self.best,
                "best_epoch": self.best_epoch if self._has_best_epoch() else None,
                "wait": self.wait, "patience": self.patience,
                "min_delta": self.tracker.min_delta, "mode": self.tracker.mode,
                "baseline": self.baseline, "start_from_epoch": self.start_from_epoch}

    def _snapshot(self, epoch: int, value: float, why: str) -> SnapshotWeights:
        return SnapshotWeights(
            tag=self._tag, code="best_weights",
            reason=f"keep the weights of epoch {epoch + 1} ({self.tracker.monitor} = "
                   f"{fmt(value)}): {why}",
            evidence={"monitor": self.tracker.monitor, "value": value, "best_epoch": epoch})

    @hookimpl
    def on_train_end(self, event: TrainEnd) -> Any:
        if not (self.restore_best_weights and self._snapshot_taken):
            return None
        best_epoch = self.best_epoch  # set with the snapshot
        if self.best is None:  # nothing was ever a best (every value NaN, or never improved)
            reason = (f"restore the weights of epoch {best_epoch + 1}, the first monitored one: "
                      f"no {self.tracker.monitor} value improved on it")
        else:
            reason = (f"restore the weights of the best epoch ({best_epoch + 1}, "
                      f"{self.tracker.monitor} = {fmt(self.best)})")
        return RestoreWeights(
            tag=self._tag, code="restore_best_weights", reason=reason,
            evidence={"monitor": self.tracker.monitor, "best": self.best,
                      "best_epoch": self.best_epoch})
