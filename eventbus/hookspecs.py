"""The plugin contract: one hook per event kind, plus the hooks around them.

A plugin is any object with methods marked ``@eventbus.hookimpl`` whose names are hooks below.
It implements only the hooks it needs; the bus never calls a plugin for a hook it lacks, so a
plugin that ignores batches costs nothing per batch.

Every observation hook receives the event as ``event``, an immutable :class:`~eventbus.Event`
whose attributes are the fields of its kind's record (``on_epoch_end``'s has those of
:class:`~eventbus.records.EpochEnd`; see :mod:`eventbus.events`): ``seq``, ``time``, ``logs``
and the kind's own fields. ``logs`` is a plain dict shared by every plugin that handles the
event: read it, do not change it. (The annotations below name the record classes: the fields.)

A hook may return ``None``, one record or an iterable of records. Decisions
(``StopTraining``, ``SetLearningRate``, ``SaveCheckpoint``, ``SnapshotWeights``,
``RestoreWeights``) are recorded, applied to the bus's control state and the model, then passed
to every ``on_decision`` implementation. Outcomes (``Warning``, ``CheckpointSaved``, ...) are
recorded. ``source``, ``cause_seq`` and ``epoch`` are filled in by the bus when left empty.

Decision plugins must be deterministic functions of the events they have seen: no clock, no
files, no network, no model access. That is what makes replay, what-if and resume exact.

Plugins run in the order they were given to the bus (Keras's list order), for every hook.

Plugins never get the bus: ``on_attach`` and ``resume_from`` get the run's read-only
description (:class:`~eventbus.run.Run`), under the argument name ``run`` (``bus`` is accepted
too, for plugins written before the name changed; it is the same object). Plugins that write
files or talk to the network are sinks (:class:`~eventbus.Sink`): they take records through the
sink contract, not through hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._markers import hookspec

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .records import (
        BatchBegin,
        BatchEnd,
        Decision,
        EpochBegin,
        EpochEnd,
        PredictBatchBegin,
        PredictBatchEnd,
        PredictBegin,
        PredictEnd,
        TestBatchBegin,
        TestBatchEnd,
        TestBegin,
        TestEnd,
        TrainBegin,
        TrainEnd,
    )
    from .run import Run

# ruff: noqa: ARG001 - hook specifications only declare arguments


@hookspec
def on_attach(run: Run, bus: Run) -> None:
    """Called once when the plugin is registered, with the run it is part of.

    A plugin that writes through a sink of its own adds it here (``run.add_sink``); ``run.label``
    gives the name its records carry. Decision plugins should not need it.
    """


@hookspec
def on_train_begin(event: TrainBegin) -> Any:
    """Training starts; ``event.params`` holds the run's parameters (Keras's ``params``)."""


@hookspec
def on_train_end(event: TrainEnd) -> Any:
    """Training ended (stopped by a decision or finished its epochs)."""


@hookspec
def on_epoch_begin(event: EpochBegin) -> Any:
    """An epoch starts; ``event.epoch`` counts from 0. ``logs`` has ``learning_rate`` if known
    and a plugin on the bus sets the rate (``Plugin.logs_learning_rate``), as Keras's have."""


@hookspec
def on_epoch_end(event: EpochEnd) -> Any:
    """An epoch ended; ``event.logs`` has the epoch's metrics, and ``learning_rate`` as
    :func:`on_epoch_begin`'s."""


@hookspec
def on_batch_begin(event: BatchBegin) -> Any:
    """A training batch starts; ``event.batch`` counts within the epoch, ``event.step`` overall."""


@hookspec
def on_batch_end(event: BatchEnd) -> Any:
    """A training batch ended; ``event.logs`` has the batch's metrics."""


@hookspec
def on_test_begin(event: TestBegin) -> Any:
    """Evaluation starts."""


@hookspec
def on_test_end(event: TestEnd) -> Any:
    """Evaluation ended; ``event.logs`` has the evaluation metrics."""


@hookspec
def on_test_batch_begin(event: TestBatchBegin) -> Any:
    """An evaluation batch starts."""


@hookspec
def on_test_batch_end(event: TestBatchEnd) -> Any:
    """An evaluation batch ended."""


@hookspec
def on_predict_begin(event: PredictBegin) -> Any:
    """Prediction starts."""


@hookspec
def on_predict_end(event: PredictEnd) -> Any:
    """Prediction ended."""


@hookspec
def on_predict_batch_begin(event: PredictBatchBegin) -> Any:
    """A prediction batch starts."""


@hookspec
def on_predict_batch_end(event: PredictBatchEnd) -> Any:
    """A prediction batch ended."""


@hookspec
def on_decision(decision: Decision) -> Any:
    """A decision was recorded and applied; sinks act on it here (e.g. write a checkpoint).

    May return outcomes (``CheckpointSaved``, ``Warning``, ...), which the bus records. Decisions
    returned from here are an error: decisions come from events, not from other decisions.
    """


@hookspec
def augment_epoch_logs(epoch: int, logs: Mapping[str, float]) -> Mapping[str, Any] | None:
    """Contribute metrics to an epoch's logs before the ``epoch_end`` event is recorded.

    Keys the loop already reported win; a returned key that is new is added, so every plugin and
    the log see it. Keras's BaseLogger uses this to add epoch averages of batch metrics.
    """


@hookspec
def resume_from(run: Run, bus: Run) -> str | None:
    """Return the path of a JSON Lines log to resume the run from, or None.

    Asked once, after every plugin is registered, before the run starts. BackupAndRestore
    answers with its backup log (and adds the sink that writes it); the bus then resumes from
    it when its own log holds no record (see :mod:`eventbus.resume`).
    """


@hookspec
def on_close() -> Any:
    """The bus is closing: flush and release what the plugin holds. May return outcomes."""
