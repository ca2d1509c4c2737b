"""The control state decisions change, and applying them to the model.

:class:`Control` holds what the loop reads (``stop_training``, the learning rate) and the
weights kept by ``snapshot_weights`` decisions, and applies each recorded decision: to itself,
and through the model adapter to the model. A side effect on the model that fails (an optimizer
whose rate is a schedule, weights of the wrong shape) becomes a ``sink_failed`` from ``"model"``,
never a crash. :meth:`Control.apply` returns the records its work produced, for the bus to
record.

The learning rate is the run's, not the model's: a rate set while no model adapter can hold it
(restored by a resume, decided, or set by the loop) waits here for the adapter attached next
(:meth:`Control.attach`: a bridge attaching the model at ``fit``), which then trains at it rather
than at its optimizer's initial rate.

:class:`ReplayControl` is the control of a replay or of the state a resume restores: it has no
model and keeps no weights. Its learning rate is the one the recorded run had, read from the
log (each epoch's logged ``learning_rate``, each recorded ``set_learning_rate``), for as long as
the replayed decisions agree with the recorded ones: so a rate the loop moved itself (a
scheduler's step) is the one the replayed plugins see, as the live ones saw it. Once a replayed
decision sets another rate (a what-if), its rate is its own, moved as the loop moved the
recorded one (by the same factor): an estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ConfigError
from .model import adapter_learning_rate
from .records import (
    Decision,
    Record,
    RestoreWeights,
    SetLearningRate,
    SinkFailed,
    SnapshotWeights,
    StopTraining,
    WeightsRestored,
)
from .records import Warning as WarningRecord

__all__ = ["Control", "ReplayControl", "checked_learning_rate"]


def checked_learning_rate(value: Any, field: str = "learning_rate") -> float:
    """A learning rate given to the bus or read from a log: a finite number, 0 or more.

    A str, bytes or a bool is not a number here, whatever ``float()`` makes of it.
    """
    if isinstance(value, (str, bytes, bool)):
        raise ConfigError(f"Bus: {field} must be a number; got {type(value).__name__} "
                          f"{value!r}", field=field)
    try:
        rate = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"Bus: {field} must be a number; got {type(value).__name__} "
                          f"{value!r}", field=field) from None
    if not 0.0 <= rate < float("inf"):
        raise ConfigError(f"Bus: {field} must be a finite number, 0 or more; got {rate}",
                          field=field)
    return rate


class Control:
    """Stop flag, learning rate and kept weights of a live run, with its model adapter.

    ``hold_stop``: consulted for every stop (a decision, or ``stop_training = True``); when it
    returns True the stop is held and applied later by :meth:`stop` (ranks that must agree
    first, see :mod:`eventbus.coordination`).
    """

    #: False for a control that only recomputes (replay): no model, no weights, no warnings.
    live = True

    def __init__(self, model: Any = None, learning_rate: float | None = None, *,
                 hold_stop: Callable[[StopTraining | None], bool] | None = None):
        self.model = model
        self._lr = None if learning_rate is None else checked_learning_rate(learning_rate)
        #: Whether ``_lr`` was set while no adapter could hold it: the next one attached gets
        #: it. A rate only given to the constructor is a default, and a model's own rate wins.
        self._lr_waiting = False
        self._stop = False
        self._hold_stop = hold_stop
        #: Weights kept by ``snapshot_weights`` decisions, by tag (NumPy arrays).
        self.snapshots: dict[str, dict[str, Any]] = {}
        #: Optimizer states kept with some of them (a backup's), by tag.
        self._optimizers: dict[str, Mapping[str, Any]] = {}

    # --- what the loop reads -------------------------------------------------------------------

    @property
    def stop_training(self) -> bool:
        return self._stop

    def request_stop(self, decision: StopTraining | None = None) -> None:
        """Stop, unless the stop is held until the ranks agree."""
        if self._hold_stop is None or not self._hold_stop(decision):
            self._stop = True

    def stop(self) -> None:
        """Stop now (a held stop the ranks agreed on, or one a log recorded)."""
        self._stop = True

    def clear_stop(self) -> None:
        self._stop = False

    @property
    def learning_rate(self) -> float | None:
        """The model adapter's learning rate if it has one, else the one kept here."""
        if self.model is not None:
            value = adapter_learning_rate(self.model)
            if value is not None:
                return value
        return self._lr

    @property
    def kept_learning_rate(self) -> float | None:
        """The rate last set or given here, whatever the model says (what replay compares)."""
        return self._lr

    def set_learning_rate(self, value: Any) -> None:
        """Set the rate here and on the model adapter (which may refuse: the caller records).
        Without an adapter that has a rate, the next one attached gets it."""
        self._lr = checked_learning_rate(value)
        self._lr_waiting = not _has_rate(self.model)
        if not self._lr_waiting:
            self.model.learning_rate = self._lr

    def restore_learning_rate(self, value: Any) -> list[Record]:
        """Restore the run's rate (a resume: the rate the log says the run had at the resume
        point, see :attr:`ReplayControl.recorded_learning_rate`). Given to the adapter only
        where its own rate is another one, so a model whose rate cannot be set (a Keras
        optimizer on a ``LearningRateSchedule``) is left alone while it agrees, and so is one
        already at the run's rate (its optimizer put back from a checkpoint); returns what to
        record: the model refusing the rate."""
        self._lr = checked_learning_rate(value)
        self._lr_waiting = not _has_rate(self.model)
        fault = None if self._lr_waiting else self._offer_rate(self.model)
        return [] if fault is None else [fault]

    def attach(self, model: Any) -> list[Record]:
        """Give the control a model adapter, after it was built (a bridge attaching the model
        at ``fit``, ``bus.model = ...``). A rate set while no adapter could hold it (above all
        a resume's) goes to this one, so it trains at the run's rate, not at its optimizer's
        initial one; returns what to record: the model refusing the rate. An adapter that
        replaces another (a later fit's model) keeps its own rate."""
        self.model = model
        if not self._lr_waiting or self._lr is None or not _has_rate(model):
            return []
        self._lr_waiting = False
        fault = self._offer_rate(model)
        return [] if fault is None else [fault]

    def _offer_rate(self, model: Any) -> SinkFailed | None:
        """Set the kept rate on ``model`` unless it holds it already (to float32's precision,
        a framework's usual): the model's failure to take it, or None."""
        rate = self._lr
        if rate is None:
            return None
        try:
            current = adapter_learning_rate(model)
            if current is not None and math.isclose(current, rate, rel_tol=1e-6, abs_tol=0.0):
                return None
            model.learning_rate = rate
        except Exception as exc:
            return SinkFailed(sink="model", event="set_learning_rate", error=type(exc).__name__,
                              message=str(exc))
        return None

    # --- applying decisions --------------------------------------------------------------------

    def apply(self, decision: Decision) -> list[Record]:
        """Apply a recorded decision; returns the records to record for it (faults at the
        model, weights restored, warnings)."""
        if isinstance(decision, StopTraining):
            self.request_stop(decision)
            return []
        if isinstance(decision, SetLearningRate):
            fault = self._edge(lambda: self.set_learning_rate(decision.value), decision)
            return [] if fault is None else [fault]
        if isinstance(decision, (SnapshotWeights, RestoreWeights)):
            return self._weights(decision)
        return []

    def keep(self, tag: str, weights: dict[str, Any], *,
             optimizer: Mapping[str, Any] | None = None) -> None:
        """Keep ``weights`` (and an optimizer state) under ``tag``, as a ``snapshot_weights``
        decision would: a backup gives back the weights kept before a crash."""
        self.snapshots[tag] = weights
        if optimizer:
            self._optimizers[tag] = optimizer
        else:
            self._optimizers.pop(tag, None)

    def restore(self, tag: str, *, source: str, epoch: int | None,
                cause: Decision | None = None) -> list[Record]:
        """Put the weights kept under ``tag`` into the model; returns what to record: the
        ``weights_restored``, the model's failure, or a warning that nothing was kept."""
        cause_seq = None if cause is None else cause.seq
        what = f"restore_weights from {cause.source!r}" if cause is not None else \
            f"{source}: restoring the weights kept as {tag!r}"
        model = self.model
        if model is None:
            return [WarningRecord(
                source="bus", cause_seq=cause_seq, epoch=epoch,
                message=f"{what} needs a model adapter; the bus has none (Bus(model=...))",
                details={"tag": tag})]
        weights = self.snapshots.get(tag)
        if weights is None:
            return [WarningRecord(
                source="bus", cause_seq=cause_seq, epoch=epoch,
                message=f"{what}: no weights were kept under {tag!r}; the model keeps its "
                        "current weights", details={"tag": tag})]
        optimizer = self._optimizers.get(tag)

        def put() -> None:
            model.set_weights(weights)
            if optimizer and callable(getattr(model, "set_optimizer_state", None)):
                model.set_optimizer_state(optimizer)

        try:
            put()
        except Exception as exc:
            return [SinkFailed(sink="model", event="restore_weights", error=type(exc).__name__,
                               message=str(exc), cause_seq=cause_seq, epoch=epoch)]
        return [WeightsRestored(source=source, tag=tag, cause_seq=cause_seq, epoch=epoch)]

    def _weights(self, decision: SnapshotWeights | RestoreWeights) -> list[Record]:
        if isinstance(decision, RestoreWeights):
            return self.restore(decision.tag, source="bus", epoch=decision.epoch,
                                cause=decision)
        if self.model is None:
            return [WarningRecord(
                source="bus", cause_seq=decision.seq, epoch=decision.epoch,
                message=f"{decision.kind} from {decision.source!r} needs a model adapter; "
                        "the bus has none (Bus(model=...))", details={"tag": decision.tag})]
        model = self.model
        fault = self._edge(lambda: self.keep(decision.tag, model.get_weights()), decision)
        return [] if fault is None else [fault]

    @staticmethod
    def _edge(action: Callable[[], Any], decision: Decision) -> SinkFailed | None:
        """Run a side effect of a decision; its failure is the model's, recorded, not raised."""
        try:
            action()
        except Exception as exc:
            return SinkFailed(sink="model", event=decision.kind, error=type(exc).__name__,
                              message=str(exc), cause_seq=decision.seq, epoch=decision.epoch)
        return None


def _logged_rate(value: Any) -> float | None:
    """A rate a log recorded, or None where it holds none a rate can be (a damaged log's)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and \
            0.0 <= value < float("inf"):
        return float(value)
    return None


def _has_rate(model: Any) -> bool:
    """Whether the bus sets ``model``'s learning rate (an adapter with the attribute)."""
    return model is not None and hasattr(model, "learning_rate")


class ReplayControl(Control):
    """The control of a replay: decisions change the stop flag and the learning rate kept here;
    there is no model and no weights are kept.

    ``follow_log``: take the recorded run's rate where the log gives it (:meth:`follow`,
    :meth:`recorded`), as replay and resume do. Without it (a shadow policy's, fed the live
    events but not the live decisions) the rate is only what its own decisions set.
    """

    live = False

    def __init__(self, learning_rate: float | None = None, *, follow_log: bool = True):
        super().__init__(None, learning_rate)
        self.follow_log = follow_log
        #: The recorded run's rate, as far as the log has told (what the live plugins saw).
        self._recorded = self._lr
        #: Whether the rate handed to the plugins at the last :meth:`follow` differed from
        #: the recorded one (the replay has diverged from the recorded run there).
        self.departed = False

    @property
    def learning_rate(self) -> float | None:
        return self._lr

    def set_learning_rate(self, value: Any) -> None:
        self._lr = checked_learning_rate(value)

    @property
    def recorded_learning_rate(self) -> float | None:
        """The recorded run's rate as far as the log has told: the last epoch's logged
        ``learning_rate``, then the ``set_learning_rate`` decisions recorded after it; the rate
        this control started from where the log told none. What a resume goes on at: the
        rate the run had, not this replay's own (which differs once its decisions do)."""
        return self._recorded

    def recorded(self, decision: SetLearningRate) -> None:
        """A ``set_learning_rate`` the log recorded (from any plugin): the recorded run's rate
        from then on."""
        rate = _logged_rate(decision.value)
        if self.follow_log and rate is not None:
            self._recorded = rate

    def follow(self, logged: Any) -> None:
        """The ``learning_rate`` an epoch's record logged: the rate the live plugins saw there,
        the loop's own moves (a scheduler's step) included.

        While this replay's rate is the recorded one, it takes the logged rate as it is. Once
        its decisions made it another (a what-if), the loop's move is applied to it as a
        factor (``logged / recorded``), as a schedule scales whatever rate it is given; from a
        recorded rate of 0 no factor can be told, and its rate is kept. :attr:`departed` says
        whether the rate now differs from the logged one.
        """
        rate = _logged_rate(logged)
        if not self.follow_log or rate is None:
            self.departed = rate is not None and self._lr is not None and self._lr != rate
            return
        mine, theirs = self._lr, self._recorded
        if mine is None or theirs is None or mine == theirs:
            self._lr = rate
        elif theirs > 0.0 and mine * rate / theirs < float("inf"):
            self._lr = mine * rate / theirs
        self._recorded = rate
        self.departed = self._lr != rate

    def restore_learning_rate(self, value: Any) -> list[Record]:
        self._lr = checked_learning_rate(value)
        return []

    def attach(self, model: Any) -> list[Record]:
        self.model = model  # never touched: a replay has no model to set
        return []

    def _weights(self, decision: SnapshotWeights | RestoreWeights) -> list[Record]:
        return []  # replay recomputes decisions; it has no weights to keep or restore
