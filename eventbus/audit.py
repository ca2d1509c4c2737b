"""Audit: what a run did and why, from its log alone.

:func:`audit` reads a log and answers the questions people ask of a finished (or crashed) run:
how many epochs ran, why it ended (which plugin, which rule, on which epoch), the best value of
each monitored metric, every learning-rate change, every checkpoint, and every warning and fault.
:func:`render` prints it; :meth:`Audit.as_dict` gives the same as plain data (``--json``).

Which way a monitored metric should go, and which of its values is the best, follow the plugins'
own rule (:mod:`eventbus.monitor`): the mode a decision's evidence resolved, else the plugin's
``mode`` parameter, else the metric's name placed by the same words the plugins use. A name that
rule cannot place gets no best ("direction unknown"), never a guess.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .effective import effective_records
from .errors import ConfigError, LogError
from .log import read_log
from .monitor import Mode, Monitor, guess_mode, why_unplaced
from .records import (
    BATCH_KINDS,
    KINDS,
    CheckpointDeleted,
    CheckpointSaved,
    Decision,
    DeleteCheckpoint,
    EpochEnd,
    Header,
    PluginFailed,
    Record,
    Resumed,
    SaveCheckpoint,
    SetLearningRate,
    ShadowDecision,
    SinkFailed,
    StopTraining,
    TrainBegin,
    Warning,
)
from .shadow import ShadowSummary, recorded_policies, summarise
from .terminal import inline

# guess_mode is the core's rule (eventbus.monitor), still exported here under its old name.
__all__ = ["Audit", "LogArgument", "MetricSummary", "audit", "checked_log", "guess_mode",
           "header_of", "human_epoch", "only_records", "render"]

_LAST_CHECKPOINTS = 5
_AUDITED = frozenset(KINDS) - frozenset(BATCH_KINDS)

LogArgument = str | os.PathLike[str] | Iterable[Record]


def checked_log(log: Any, caller: str) -> LogArgument:
    """``log`` as :func:`read_log` takes it, or a :class:`ConfigError` naming the argument.

    Shared by :func:`audit` and :func:`~eventbus.replay.replay`: without it a ``None`` fails
    deep in the reader as "'NoneType' object is not iterable". An iterable is checked record by
    record as it is read.
    """
    if isinstance(log, (str, os.PathLike)):
        return log
    what = f"{type(log).__name__} {log!r:.80}"
    if isinstance(log, Record):
        raise ConfigError(f"{caller}: log is one {log.kind!r} record; pass a path or a list of "
                          "records", field="log")
    if isinstance(log, (bytes, bytearray, Mapping)) or not isinstance(log, Iterable):
        raise ConfigError(f"{caller}: log must be a path (str or pathlib.Path) to a .jsonl or "
                          f".parquet log, or an iterable of records; got {what}", field="log")
    return only_records(log, caller)


def only_records(records: Iterable[Any], caller: str) -> Iterator[Record]:
    for i, record in enumerate(records):
        if not isinstance(record, Record):
            raise ConfigError(f"{caller}: log item {i} is {type(record).__name__} "
                              f"{record!r:.60}, not a record (eventbus.records)", field="log")
        yield record


def header_of(log: LogArgument, where: str) -> Header:
    """The header record of ``log``, read alone; a :class:`LogError` if there is none.

    A file holding only a torn line yields nothing but a warning; the warning becomes part of
    the error instead of a second line before it. When there is a header the warnings are
    dropped: the full read that follows gives them again.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reading = read_log(log)
        with contextlib.closing(reading):
            first = next(reading, None)
    if isinstance(first, Header):
        return first
    if first is not None:
        why = f"its first record is {first.kind!r}, not the header"
    else:
        why = "no header record"
        if caught:
            detail = str(caught[0].message)
            detail = detail.removeprefix(f"{where}: ").removeprefix(f"{log}: ")
            why += f"; {detail}"
    path = str(log) if isinstance(log, (str, os.PathLike)) else None
    raise LogError(f"{where}: not an event log ({why})", path=path)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_vector(value: Any) -> bool:
    """A metric of several numbers (per class, per output): kept in the log, but not a curve."""
    return isinstance(value, (list, tuple)) and all(_is_number(v) for v in value)


@dataclass
class MetricSummary:
    """A monitored metric: its best value (NaN is never best) and its last value as reported,
    NaN included; ``last`` is None only when the metric was never reported.

    ``mode`` is None when the log does not say which way the metric should go and its name
    does not tell (:func:`~eventbus.monitor.guess_mode`): then there is no best either."""

    name: str
    mode: Mode | None
    best: float | None
    best_epoch: int | None
    last: float | None


@dataclass
class Audit:
    header: Header
    #: Epochs the last fit ran (a bus may run several fits, each from its ``train_begin``).
    epochs_run: int = 0
    last_epoch: int | None = None
    planned_epochs: int | None = None
    #: The fits in the log (``train_begin`` records), and the epochs all of them ran.
    fits: int = 0
    epochs_in_all: int = 0
    #: What stopped each earlier fit that a stop ended: (its number, from 1; the stop).
    earlier_stops: list[tuple[int, StopTraining]] = field(default_factory=list)
    #: "stopped" (a decision stopped it), "completed", "incomplete" (no train_end: crashed
    #: or still running), or "no_training" (evaluation or prediction only).
    ended: str = "incomplete"
    #: The bus's record of the exception the ``with bus:`` block ended by, when that ended the
    #: run (``ended`` is "incomplete": no train_end came).
    raised: Warning | None = None
    #: The stop_training decision the loop acted on: the first one after which no later epoch
    #: of the same fit ran.
    stop: StopTraining | None = None
    #: stop_training decisions the loop did not act on at once: a later epoch of the same fit
    #: ran (Lightning defers a stop until ``min_epochs``; the plugin then asks again).
    deferred_stops: list[StopTraining] = field(default_factory=list)
    monitors: list[MetricSummary] = field(default_factory=list)
    lr_changes: list[SetLearningRate] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[Warning] = field(default_factory=list)
    faults: list[Record] = field(default_factory=list)
    resumes: list[Resumed] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    #: metric name -> [(epoch, value)], every epoch_end metric, for plots.
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    #: Metrics whose values are lists of numbers (per class, per output): left out of the
    #: curves and the best values, which are of one number an epoch.
    vector_metrics: list[str] = field(default_factory=list)
    #: Values the audit could not use, each ``{"seq", "kind", "epoch", "field", "value",
    #: "message"}``: a metric that is not a number (a log written by other code, or edited).
    bad_records: list[dict[str, Any]] = field(default_factory=list)
    #: What shadow policies (eventbus.shadow) decided, never applied.
    shadows: list[ShadowDecision] = field(default_factory=list)
    #: Where the last fit begins: in ``shadows``, and in each of ``curves``.
    last_fit_shadows: int = 0
    last_fit_points: dict[str, int] = field(default_factory=dict)
    #: refused_by_model's index: (the number of faults it was built from, cause_seq -> why).
    _refusals: tuple[int, dict[int, str]] | None = field(default=None, init=False, repr=False,
                                                         compare=False)

    def shadow_summaries(self) -> list[ShadowSummary]:
        """Per shadow policy: where it would have stopped or changed the rate in the last fit,
        and what it would have saved (policies that decided nothing included)."""
        policies = [label for spec in self.header.plugins if spec.name == "Shadow"
                    for label in recorded_policies(spec.params)]
        curves = {name: points[self.last_fit_points.get(name, 0):]
                  for name, points in self.curves.items()}
        return summarise(self.shadows[self.last_fit_shadows:], curves, self.epochs_run,
                         policies)

    def shadow_lines(self) -> list[str]:
        """:meth:`shadow_summaries` in words, epochs counted from 1."""
        return [s.text() for s in self.shadow_summaries()]

    def refused_by_model(self, decision: Decision) -> str | None:
        """Why the model adapter refused to apply ``decision`` (its ``sink_failed``), or None:
        a Keras optimizer with a LearningRateSchedule has no rate to set, for one."""
        # Asked once per rate change: an index of the faults, not a scan of them each time
        # (rate changes x faults, both as many as a log likes). Built again if faults changed.
        if self._refusals is None or self._refusals[0] != len(self.faults):
            refusals: dict[int, str] = {}
            for fault in self.faults:
                if isinstance(fault, SinkFailed) and fault.sink == "model" and \
                        fault.cause_seq is not None:
                    refusals.setdefault(fault.cause_seq, f"{fault.error}: {fault.message}")
            self._refusals = (len(self.faults), refusals)
        return self._refusals[1].get(decision.seq)

    def as_dict(self) -> dict[str, Any]:
        def rec(r: Record) -> dict[str, Any]:
            return {k: v for k, v in r.model_dump().items() if k not in ("v", "run_id")}

        return {
            # Every epoch in this data (``last_epoch``, ``best_epoch``, each record's ``epoch``)
            # is 0-based, as in the log; the text counts from 1.
            "epochs_counted_from": 0,
            "run_id": self.header.run_id, "created": self.header.created,
            "library": self.header.library,
            "plugins": [p.model_dump() for p in self.header.plugins],
            "epochs_run": self.epochs_run, "last_epoch": self.last_epoch,
            "planned_epochs": self.planned_epochs, "fits": self.fits,
            "epochs_in_all": self.epochs_in_all,
            "earlier_stops": [{"fit": n, **rec(stop)}
                              for n, stop in self.earlier_stops],
            "ended": self.ended,
            "raised": rec(self.raised) if self.raised else None,
            "stop": rec(self.stop) if self.stop else None,
            "deferred_stops": [rec(d) for d in self.deferred_stops],
            "monitors": [m.__dict__ for m in self.monitors],
            "learning_rate_changes": [{**rec(d), "refused": self.refused_by_model(d)}
                                      for d in self.lr_changes],
            "checkpoints": self.checkpoints,
            "warnings": [rec(w) for w in self.warnings],
            "faults": [rec(f) for f in self.faults],
            "resumes": [rec(r) for r in self.resumes],
            "decisions": [rec(d) for d in self.decisions],
            "bad_records": self.bad_records,
            "vector_metrics": self.vector_metrics,
            "shadow": [{**s.__dict__, "text": s.text()} for s in self.shadow_summaries()],
        }


def _monitored(header: Header, decisions: list[Decision]) -> dict[str, Mode | None]:
    """Monitored metric -> mode (None: direction unknown), from the plugins' parameters and the
    decisions' evidence."""
    # A decision's evidence has the mode the plugin resolved; a header may say only "auto".
    resolved: dict[str, Mode] = {}
    for decision in decisions:
        monitor, mode = decision.evidence.get("monitor"), decision.evidence.get("mode")
        if isinstance(monitor, str) and monitor and mode in ("min", "max"):
            resolved.setdefault(monitor, mode)
    found: dict[str, Mode | None] = {}
    for spec in header.plugins:
        monitor, mode = spec.params.get("monitor"), spec.params.get("mode")
        if isinstance(monitor, str) and monitor:
            found.setdefault(monitor, resolved.get(monitor) or (
                mode if mode in ("min", "max") else guess_mode(monitor)))
    for monitor, mode in resolved.items():
        found.setdefault(monitor, mode)
    return found


def _best(name: str, mode: Mode | None,
          points: list[tuple[int, float]]) -> tuple[int | None, float | None]:
    """(epoch, value) of the best of ``points`` as the plugins' monitor tracks it: strict
    improvement, so a tie goes to the first epoch that reached the value; NaN is never best.
    (None, None) when no value is best or the direction is unknown."""
    if mode is None:
        return None, None
    monitor = Monitor(name, mode, plugin="audit")
    best_epoch = None
    for epoch, value in points:
        if monitor.update(value):
            best_epoch = epoch
    return best_epoch, monitor.best


def audit(log: LogArgument) -> Audit:
    """Summarise the run recorded in ``log`` (a path in either format, or records).

    A log with no header record raises :class:`~eventbus.errors.LogError`. A metric that is not
    a number does not stop the audit: it is left out and listed in ``bad_records``.
    """
    log = checked_log(log, "audit")
    where = str(log) if isinstance(log, (str, os.PathLike)) else "the records given"
    if not isinstance(log, (str, os.PathLike)):
        log = list(log)  # read twice: the header alone first
    header_of(log, where)
    # The batches are most of a long run's records and nothing here looks at them. The
    # resumed records are among those kept, so the abandoned ones are found in memory.
    records = effective_records(read_log(log, kinds=_AUDITED))
    header = records[0] if records else None
    if not isinstance(header, Header):  # the file changed since its header was read
        raise LogError(f"{where}: not an event log (no header record)")
    result = Audit(header=header)
    saves: dict[int, SaveCheckpoint] = {}
    deletes: dict[int, DeleteCheckpoint] = {}
    # Everything below is indexed, never scanned per record: a log may hold as many stops,
    # rate changes, checkpoints and faults as it likes, and audit stays linear in it.
    stops: list[StopTraining] = []  # in order, of every fit
    # This fit's stops with an epoch, not yet followed by a later epoch, as a heap of
    # (epoch, order asked, stop): an epoch_end pops only those it defers. A stop without an
    # epoch is never deferred, so it is never put there.
    asked: list[tuple[int, int, StopTraining]] = []
    deferred: set[int] = set()  # id() of every stop in result.deferred_stops
    deferred_in_fit = 0  # how many of ``stops`` are deferred
    live: dict[str, list[dict[str, Any]]] = {}  # path -> its checkpoints not deleted, in order
    vectors: set[str] = set()
    # Metric -> its number of points when this fit first reported it: last_fit_points, kept
    # without copying every curve's length at each train_begin (fits x metrics).
    fit_start: dict[str, int] = {}
    raised: Warning | None = None  # the bus's record of what the ``with bus:`` block raised
    for record in records[1:]:
        kind = record.kind  # (not isinstance: on a record it costs a Python call)
        if kind == "train_begin":
            asked = []  # a new fit: an earlier fit's stop was acted on (it ended that fit)
            ended_by = next((s for s in stops if id(s) not in deferred), None)
            if ended_by is not None:
                result.earlier_stops.append((result.fits, ended_by))
            stops = []  # what ended the run is what ended its last fit
            result.ended, raised = "incomplete", None
            deferred_in_fit = 0
            result.last_fit_shadows = len(result.shadows)
            fit_start = {}
            result.fits += 1
            result.epochs_run = 0
            epochs = record.params.get("epochs")
            result.planned_epochs = epochs if isinstance(epochs, int) else None
        elif kind == "epoch_end":
            result.epochs_run += 1
            result.epochs_in_all += 1
            result.last_epoch = record.epoch
            # A later epoch ran after a stop was asked: the loop deferred that stop. Those
            # deferred at once are listed in the order they were asked.
            now = []
            while asked and asked[0][0] < record.epoch:
                now.append(heapq.heappop(asked))
            for _, _, stop in sorted(now, key=lambda item: item[1]):
                result.deferred_stops.append(stop)
                deferred.add(id(stop))
            deferred_in_fit += len(now)
            for name, value in record.logs.items():
                if _is_vector(value):
                    if name not in vectors:
                        vectors.add(name)
                        result.vector_metrics.append(name)
                    continue
                if not _is_number(value):
                    result.bad_records.append({
                        "seq": record.seq, "kind": record.kind, "epoch": record.epoch,
                        "field": f"logs.{name}", "value": value,
                        "message": f"{name} is {type(value).__name__} {value!r:.40}, not a "
                                   "number: left out of the metrics"})
                    continue
                points = result.curves.setdefault(name, [])
                if name not in fit_start:
                    fit_start[name] = len(points)
                points.append((record.epoch, value))
        elif kind == "train_end":
            # Some stop of this fit was not deferred (each of them is deferred at most once).
            result.ended = "stopped" if len(stops) > deferred_in_fit else "completed"
        elif isinstance(record, Decision):
            result.decisions.append(record)
            if isinstance(record, StopTraining):
                stops.append(record)
                if record.epoch is not None:
                    heapq.heappush(asked, (record.epoch, len(stops), record))
            elif isinstance(record, SetLearningRate):
                result.lr_changes.append(record)
            elif isinstance(record, SaveCheckpoint):
                saves[record.seq] = record
            elif isinstance(record, DeleteCheckpoint):
                deletes[record.seq] = record
        elif isinstance(record, CheckpointSaved):
            save = saves.get(record.cause_seq)  # type: ignore[arg-type]
            evidence = save.evidence if save else {}
            result.checkpoints.append({
                "path": record.path, "epoch": record.epoch, "size": record.size,
                "sha256": record.sha256, "monitor": evidence.get("monitor"),
                "value": evidence.get("value"), "source": save.source if save else record.source,
                "deleted": False})
            live.setdefault(record.path, []).append(result.checkpoints[-1])
        elif isinstance(record, CheckpointDeleted):
            # The newest save of that path is the file removed (save_top_k).
            saved = live.get(record.path)
            entry = saved.pop() if saved else None
            if entry is not None:
                why = deletes.get(record.cause_seq)  # type: ignore[arg-type]
                entry.update(deleted=True, deleted_epoch=record.epoch,
                             deleted_reason=why.reason if why else None)
        elif isinstance(record, Warning):
            result.warnings.append(record)
            if record.source == "bus" and isinstance(record.details.get("raised"), str):
                raised = record
        elif isinstance(record, (PluginFailed, SinkFailed)):
            result.faults.append(record)
        elif isinstance(record, Resumed):
            result.resumes.append(record)
            raised = None  # the run went on: what ended an attempt did not end it
        elif isinstance(record, ShadowDecision):
            result.shadows.append(record)
    if result.fits:  # where the last fit begins, in each curve reported before it
        result.last_fit_points = {
            name: start for name, points in result.curves.items()
            if (start := fit_start.get(name, len(points)))}
    result.stop = next((s for s in stops if id(s) not in deferred), None)
    if result.stop is not None and result.ended == "incomplete":
        result.ended = "stopped"
    elif result.ended == "incomplete" and not any(
            isinstance(r, (TrainBegin, EpochEnd)) for r in records):
        result.ended = "no_training"  # an evaluate or predict only: nothing crashed
    if result.ended == "incomplete":
        result.raised = raised
    for name, mode in _monitored(header, result.decisions).items():
        points = result.curves.get(name, [])
        best_epoch, best = _best(name, mode, points)
        last = points[-1][1] if points else None
        result.monitors.append(MetricSummary(name, mode, best, best_epoch, last))
    return result


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else inline(value)  # evidence values may be any JSON


#: The most curves a drawing of the audit (``audit --plot``, ``report``) draws in one panel of
#: one run, the monitored metrics first: a run logging thousands of metrics draws in seconds,
#: at the size of any other, and reads.
MOST_CURVES = 16


def human_epoch(epoch: int | None) -> str:
    """Epochs as people read them: 1-based, as Keras's progress bar and messages count."""
    return "-" if epoch is None else str(epoch + 1)


def _deferred_lines(result: Audit) -> list[str]:
    """A stop the loop did not act on at once, per plugin: when it first asked, how often it
    asked again, and how far the run went on."""
    by_source: dict[str, list[StopTraining]] = {}
    for stop in result.deferred_stops:
        by_source.setdefault(inline(stop.source), []).append(stop)
    lines = []
    for source, stops in by_source.items():
        first = stops[0]
        rule = f"rule {inline(first.code)}: " if first.code else ""
        again = f" and again at {len(stops) - 1} later epoch(s)" if len(stops) > 1 else ""
        if result.stop is not None:
            then = f"the loop stopped only at epoch {human_epoch(result.stop.epoch)}"
        else:
            then = f"the loop went on to epoch {human_epoch(result.last_epoch)} without stopping"
        lines.append(f"  deferred stop: {source} asked to stop at epoch "
                     f"{human_epoch(first.epoch)} ({rule}{inline(first.reason)}){again}; {then} "
                     "(a loop may defer a stop, as Lightning does until min_epochs)")
    return lines


def render(result: Audit, *, decisions: bool = True) -> str:
    """The audit as text for a terminal: every string from the log through
    :func:`~eventbus.terminal.inline`, so none can act on the terminal or start a line."""
    h = result.header
    lines = [f"run {inline(h.run_id)}  ({inline(h.library)}, started {inline(h.created)}; "
             "epochs counted from 1)"]
    lines.append("  plugins: " + (", ".join(inline(p.label or p.name) for p in h.plugins)
                                  or "none"))
    planned = f" of {result.planned_epochs}" if result.planned_epochs else ""
    fits = f" (the last of {result.fits} fits; {result.epochs_in_all} epochs in all)" \
        if result.fits > 1 else ""
    lines.append(f"  epochs run: {result.epochs_run}{planned}{fits}")
    if result.stop is not None:
        stop = result.stop
        rule = f", rule {inline(stop.code)}" if stop.code else ""
        lines.append(f"  ended: stopped by {inline(stop.source)}{rule} at epoch "
                     f"{human_epoch(stop.epoch)}: {inline(stop.reason)}")
    elif result.ended == "completed":
        # The last epoch, not the count: a fit from initial_epoch runs fewer than planned.
        done = result.last_epoch is not None and result.planned_epochs is not None and \
            result.last_epoch + 1 >= result.planned_epochs
        lines.append("  ended: completed every planned epoch" if done else
                     "  ended: the loop ended training (no plugin stopped it)")
    elif result.ended == "no_training":
        lines.append("  ended: no training in the log (evaluation or prediction only)")
    elif result.raised is not None:
        lines.append(f"  ended: {inline(result.raised.message)} (no train_end in the log)")
    else:
        lines.append("  ended: no train_end in the log: the run crashed or is still running")
    for number, stop in result.earlier_stops:
        lines.append(f"  fit {number} of {result.fits}: stopped by {inline(stop.source)} at "
                     f"epoch {human_epoch(stop.epoch)}: {inline(stop.reason)}")
    lines.extend(_deferred_lines(result))
    for m in result.monitors:
        name = inline(m.name)
        if m.last is None:
            lines.append(f"  {name}: never reported")
        elif m.mode is None:
            lines.append(f"  {name}: no best, direction unknown (the log says neither min nor "
                         f"max for it and {inline(why_unplaced(m.name))}; last {_num(m.last)})")
        elif m.best is None:  # reported, but never a value a best can be taken of
            lines.append(f"  best {name}: none, every value reported is nan ({m.mode}; last "
                         f"{_num(m.last)})")
        else:
            lines.append(f"  best {name}: {_num(m.best)} at epoch {human_epoch(m.best_epoch)} "
                         f"({m.mode}; last {_num(m.last)})")
    if result.lr_changes:
        lines.append("  learning rate:")
        for d in result.lr_changes:
            refused = result.refused_by_model(d)
            not_applied = f"; not applied, the model refused it ({inline(refused[:80])})" \
                if refused else ""
            lines.append(f"    epoch {human_epoch(d.epoch)}: {_num(d.previous)} -> {_num(d.value)} "
                         f"({inline(d.source)}{not_applied})")
    else:
        lines.append("  learning rate: never changed by a plugin")
    if result.checkpoints:
        shown = result.checkpoints[-_LAST_CHECKPOINTS:]
        hidden = len(result.checkpoints) - len(shown)
        deleted = sum(1 for c in result.checkpoints if c["deleted"])
        lines.append(f"  checkpoints: {len(result.checkpoints)}"
                     + (f", {deleted} deleted since" if deleted else "")
                     + (f" (the last {len(shown)} shown; --json lists all)" if hidden else ""))
        for c in shown:
            value = f"  {inline(c['monitor'])}={_num(c['value'])}" if c["monitor"] else ""
            gone = ""
            if c["deleted"]:
                why = f": {inline(c['deleted_reason'])}" if c.get("deleted_reason") else ""
                gone = f"  deleted at epoch {human_epoch(c.get('deleted_epoch'))}{why}"
            lines.append(f"    epoch {human_epoch(c['epoch'])}: {inline(c['path'])}{value}  "
                         f"sha256 {inline(c['sha256'][:16])}…{gone}")
    else:
        lines.append("  checkpoints: none")
    for text in result.shadow_lines():
        lines.append(f"  {inline(text)}")
    for r in result.resumes:
        lines.append(f"  resumed at epoch {human_epoch(r.initial_epoch)} (after seq {r.from_seq})")
    lines.append(f"  warnings: {len(result.warnings) or 'none'}")
    for w in result.warnings:
        lines.append(f"    [{inline(w.source)}] epoch {human_epoch(w.epoch)}: "
                     f"{inline(w.message)}")
    if result.vector_metrics:
        lines.append(f"  metrics of several values an epoch (not summarised here): "
                     f"{', '.join(map(inline, result.vector_metrics))}")
    if result.bad_records:
        lines.append(f"  bad records: {len(result.bad_records)}")
        for bad in result.bad_records:
            lines.append(f"    seq {bad['seq']} ({inline(bad['kind'])}, epoch "
                         f"{human_epoch(bad['epoch'])}): {inline(bad['message'])}")
    lines.append(f"  faults: {len(result.faults) or 'none'}")
    for f in result.faults:
        who = getattr(f, "plugin", None) or getattr(f, "sink", None)
        lines.append(f"    {f.kind} {inline(who)} on {inline(getattr(f, 'event', None))}: "
                     f"{inline(getattr(f, 'error', ''))}: {inline(getattr(f, 'message', ''))}")
    if decisions:
        lines.append("")
        lines.append(f"decisions ({len(result.decisions)})")
        if result.decisions:
            lines.append(f"  {'seq':>6}  {'epoch':>5}  {'kind':<17} {'source':<20} reason")
            for d in result.decisions:
                lines.append(f"  {d.seq:>6}  {human_epoch(d.epoch):>5}  {d.kind:<17} "
                             f"{inline(d.source):<20} {inline(d.reason)}")
    return "\n".join(lines)
