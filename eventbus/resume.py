"""Resume: go on with a run recorded in a log, every plugin's state restored.

The recorded observations up to the last finished epoch are fed again to the pure plugins,
with no side effects (a control without a model, a recorder that writes nothing), so wait
counters, best values, cooldowns and the learning rate are what they were. What the log's
decisions did is what happened: they set the control state even if the plugins given now would
decide otherwise (a ``warning`` record says so). Records after that epoch belong to an epoch
the loop runs again; the ``resumed`` record's ``from_seq`` marks them abandoned, and readers
skip them (:mod:`eventbus.effective`). A decision the plugins make now that the log lacks (the
crash came between an event and its decisions) is recorded and applied.

The log is streamed: where the run goes on is found first by a quick search
(:func:`eventbus.effective.resume_point`), then the log is read once, up to that point.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from .control import Control, checked_learning_rate
from .cursor import Cursor
from .effective import ResumePoint, find_kinds, is_abandoned, read_effective, resume_point
from .errors import ConfigError, LogCorruptError, LogError
from .log import has_records, last_seq, log_paths, resume_source
from .metrics import MAX_INDEX
from .recorder import Recorder, Slot, Trouble
from .records import (
    BATCH_KINDS,
    DECISION_KINDS,
    KINDS,
    OBSERVATION_KINDS,
    Decision,
    Header,
    Outcome,
    Record,
    Resumed,
    SinkFailed,
    parse_record,
    same_decision,
)
from .records import Warning as WarningRecord
from .sink import RecordDict, is_built_in
from .terminal import printable

_OBSERVATIONS = frozenset(OBSERVATION_KINDS)
_DECISIONS = frozenset(DECISION_KINDS)


class Resumable(Protocol):
    """What resuming needs of a bus: its parts, and the ways it records and feeds."""

    @property
    def recorder(self) -> Recorder: ...

    @property
    def control(self) -> Control: ...

    @property
    def cursor(self) -> Cursor: ...

    @property
    def labels(self) -> Sequence[str]: ...

    @property
    def initial_epoch(self) -> int: ...

    def recomputing(self, learning_rate: float | None = None) -> AbstractContextManager[Any]:
        """Feeding with no side effect; ``as`` gives its control (a ReplayControl)."""

    def feed(self, record: Record, *, side_effects: bool = False) -> Sequence[Decision]: ...

    def record(self, outcome: Outcome, *, flush: bool = True) -> Outcome: ...

    def decide(self, decision: Decision, *, flush: bool = True) -> Decision: ...

    def flush(self) -> None: ...

    def subscribes(self, kind: str, *, side_effects: bool = False) -> bool: ...

__all__ = ["Resumable", "resume", "same_path"]


#: The seqs a resumed run must have left before the limit: more records than any run writes
#: (a log claiming a seq within this of the limit would have the run number past it).
ROOM = 1 << 40


def _recover(bus: Any, header: Header, extra: list[Decision], last_end: int) -> None:
    """Carry out the replayed decisions the log lacks, where a crash can have lost them: those
    of the plugins the run had, caused by the last finished epoch's end (the log is flushed
    once its decisions are made; a crash in between keeps the event, not them). An extra
    decision caused earlier means the plugins or their parameters changed: said, not carried
    out (the log's own decisions set the control state). A plugin the run did not have lost
    nothing: its decisions about the epochs before the resume are said, not carried out (a
    ModelCheckpoint added would write the resume's weights under past epochs' names)."""
    had = {spec.label or spec.name for spec in header.plugins}
    added = sorted({d.source for d in extra if d.source not in had})
    if added:
        bus.record(WarningRecord(
            source="bus", message=f"resume: {', '.join(added)} did not run before the resume "
            "(the log's header does not list it): its decisions about the epochs already "
            "trained are not carried out", details={"plugins": added}), flush=False)
    lost = [d for d in extra if d.source in had]
    early = next((d for d in lost if d.cause_seq is None or d.cause_seq < last_end), None)
    if early is not None:
        bus.record(WarningRecord(
            source="bus", message=f"resume: the plugins' decisions differ from the recorded "
            f"ones: they decide what the log does not hold before the last finished epoch "
            f"({early.kind} from {early.source} at epoch {early.epoch}); were the plugins or "
            "their parameters changed? None of it is carried out: the recorded decisions set "
            "the run's state",
            details={"epoch": early.epoch, "source": early.source}), flush=False)
        return
    for decision in lost:
        bus.decide(decision.model_copy(update={"seq": -1}), flush=False)


def check_at_most(value: Any) -> None:
    """``Bus(resume_at_most=...)``: an epoch, 0-based (-1: the fit's start), or None."""
    if value is not None and (type(value) is not int or value < -1):
        raise ConfigError(f"Bus: resume_at_most must be an epoch (0-based; -1: the fit's "
                          f"start) or None; got {value!r}", field="resume_at_most")


def refuse_a_resume_beside_the_run(targets: Sequence[object]) -> None:
    """``resume=True`` with no log at the paths given, but one beside them, the same name in
    the other format (``events.parquet`` given, ``events.jsonl`` there): a run to resume, not a
    new one to start over its checkpoints and CSV. A ConfigError naming both."""
    paths = log_paths(targets)
    if not paths or any(has_records(p) for p in paths):
        return
    for path in paths:
        stem, ending = os.path.splitext(path)
        other = stem + (".jsonl" if ending == ".parquet" else ".parquet")
        if other not in paths and has_records(other):
            raise ConfigError(f"Bus: resume=True, but {path} holds no run, and {other} beside "
                              "it holds one: give it as the log to resume that run (or "
                              "resume=False to start a new run, over that run's checkpoints "
                              "and CSV)", field="log")


def resume_source_of(asked: Sequence[Any], run: Any, targets: Sequence[object]) -> str | None:
    """The log a new bus resumes from: the first of its own logs (``targets``, empty when it
    was not asked to resume) that has records, else a log a plugin answers ``resume_from``
    with (BackupAndRestore's backup). The plugins are always asked, so they can attach their
    writers; the bus's own log, when it has records, is the more complete source."""
    path = resume_source(targets) if targets else None
    for fn in asked:
        found = fn({"run": run, "bus": run})
        if found is not None and not has_records(path) and has_records(found):
            path = os.fspath(found)
    return path if has_records(path) else None


def same_path(sink: object, path: str | os.PathLike[str]) -> bool:
    """Whether ``sink`` writes the file at ``path``."""
    own = getattr(sink, "path", None)
    try:
        return own is not None and os.path.samefile(own, path)
    except OSError:
        return False


def _learning_rate_of(header: Header, log: Any) -> float | None:
    value = header.meta.get("learning_rate")
    if value is None:
        return None
    try:
        return checked_learning_rate(value, "meta.learning_rate")
    except ConfigError as exc:  # a log holds what a bus refuses: the log is damaged
        raise LogCorruptError(f"{log}: cannot resume: the header's {exc}", path=str(log),
                              line=1) from None


def _check_counts(log: str | os.PathLike[str], point: ResumePoint) -> None:
    """Refuse a log whose counts leave the resumed run nothing to count with: an epoch it
    finished, or a seq, at or past the largest index a record may hold (or a negative epoch).
    Read as they are, the run would end at once, or fail to write its next record and train
    on with nothing recorded."""
    seq = last_seq(log) or 0
    if point.epoch is not None and not 0 <= point.epoch < MAX_INDEX:
        raise LogCorruptError(f"{log}: cannot resume: its last finished epoch is {point.epoch}; "
                              f"a run counts epochs from 0 to {MAX_INDEX:,}", path=str(log),
                              field="epoch")
    if not 0 <= seq < MAX_INDEX - ROOM:
        raise LogCorruptError(f"{log}: cannot resume: its seq reaches {seq}, past which too few "
                              f"records can be numbered (a seq is at most {MAX_INDEX:,})",
                              path=str(log), field="seq")


def resume(bus: Resumable, log: str | os.PathLike[str], *,
           at_most: int | None = None) -> bool:
    """Continue the run recorded in ``log`` on ``bus``; False when ``log`` holds no record.

    Afterwards ``bus.initial_epoch`` is the epoch to continue from, ``bus.stop_training`` is
    true if the run had already been stopped, and ``bus.seq`` continues the log's.
    ``at_most``: go on after that finished epoch at the latest (-1: from the fit's start), the
    epochs the log holds after it abandoned as a partial epoch is (the ranks of a distributed
    run go on from the last epoch all of them finished).
    """
    if not has_records(log):
        return False  # nothing was recorded before the crash: a fresh start
    recorder, control, cursor = bus.recorder, bus.control, bus.cursor
    point = resume_point(log)  # where the run goes on, found before the log is read
    point = _weights_point(bus, log, point)
    if at_most is not None:
        point = _no_later_than(log, point, at_most)
    _check_counts(log, point)
    # Records of kinds nothing takes are not even built: most of a log (every batch_begin).
    unbuilt = _unbuilt(bus, log)
    records = read_effective(log, spans=point.spans, stop=-1 if point.seq is None else point.seq,
                             kinds=[kind for kind in KINDS if kind not in unbuilt])
    header = next(records, None)
    if not isinstance(header, Header):
        raise LogError(f"{log}: cannot resume: the log has no header record", path=str(log))
    recorder.run_id = header.run_id
    initial_lr = _learning_rate_of(header, log)
    # Every other log gets what it lacks of the run so far, so it holds the whole run as the
    # resumed log does: a new file (a main log next to a backup) all of it, a log continued
    # beside it what a crash kept from it (killed between the two logs' flushes).
    recorder.started = True
    # The run is a resumed one from here: a sink opened now (a log caught up) learns so.
    cursor.resumed = True
    cursor.initial_epoch = point.epoch + 1 if point.epoch is not None else 0
    catching_up = _CatchUp(recorder, bus.run, log)
    catching_up.write(header)

    labels = set(bus.labels)  # only what these plugins decide is compared
    quiet = catching_up.quiet(bus)
    catching = catching_up.needed  # only ever fewer: a log that fails is dropped
    recorded: list[Decision] = []
    replayed: list[Decision] = []
    stopped = False  # what the log's decisions did to the stop flag
    from_seq = last_end = header.seq
    began = ended = finished = False
    # Each record's group by its kind, not isinstance: a record's class is its kind's
    # (``records.KINDS``), and a check through pydantic's ABC metaclass costs several times a
    # set lookup, for every record of a long log.
    feed, replayed_at = bus.feed, cursor.replayed
    try:
        with bus.recomputing(initial_lr if initial_lr is not None
                             else control.kept_learning_rate) as replaying:
            # Nothing past the header when the run goes on from its start (no epoch ended).
            stop = -1 if point.seq is None else point.seq
            for record in (records if point.seq is not None else ()):
                kind, seq = record.kind, record.seq
                if kind in quiet:  # an Observation: the check below, made short
                    if seq > stop:
                        break
                    from_seq = seq
                    replayed_at(record)  # all that feeding it would do
                    continue
                observation = kind in _OBSERVATIONS
                if observation and seq > stop:
                    break  # past the last finished epoch and its decisions: the loop reruns
                from_seq = seq
                if catching:
                    catching_up.write(record)
                if observation:
                    if kind == "epoch_end":
                        last_end = seq
                    replayed.extend(feed(record))
                    if kind == "train_begin":
                        began, stopped = True, False  # a new fit starts unstopped
                        finished = False
                    elif kind == "train_end":
                        ended = finished = True
                elif kind in _DECISIONS:
                    if record.source in labels:  # type: ignore[attr-defined]
                        recorded.append(record)  # type: ignore[arg-type]
                    if kind == "stop_training":
                        stopped = True
                    elif kind == "set_learning_rate":
                        feed(record)  # the rate the plugins are fed follows the log's
            # The records past the point are read too (checked, not fed): a line there that
            # no reader reads, left behind, would make the log the run appends to unreadable.
            for _ in records:
                pass
    finally:
        records.close()
    # The batch records read on the quick path are checked for their types only (see
    # jsonl.typed): a crafted step would have the run number its next batch past what a log can
    # store, and train on with nothing recorded. Refused before the log is written to.
    if not 0 <= cursor.step < MAX_INDEX:
        raise LogCorruptError(f"{log}: cannot resume: its training steps reach {cursor.step}; a "
                              f"run counts steps from 0 to {MAX_INDEX:,}", path=str(log),
                              field="step")
    # seq goes on after the highest in the log and in any other log being continued: one may
    # be ahead (a backup synced at epoch_begin, the main log flushed at epoch_end).
    recorder.seq = max([last_seq(log) or 0, *_continued_seqs(bus, log)])
    # What the log says happened is what happened to the model.
    if stopped:
        control.request_stop(None)
    # The rate the run had at the resume point, as the feeding followed it: the last finished
    # epoch's logged learning_rate (a rate the loop moved itself, a scheduler's step or a
    # bridge's framework rate, is logged, never decided), then the decisions recorded after it;
    # where the log logged no rate, the last decision's, else the header's. The last decision
    # alone would put a loop that moved its rate since back at the last cut's.
    rate = replaying.recorded_learning_rate
    # On the model now, or on the one a bridge attaches at fit (Control.attach); a model that
    # refuses it (a rate on a schedule) is the model's failure, recorded, not the resume's.
    refused = [] if rate is None else control.restore_learning_rate(checked_learning_rate(rate))
    cursor.resume_at(point.epoch, began=began, ended=ended)
    bus.record(Resumed(source="bus", from_seq=from_seq, initial_epoch=bus.initial_epoch,
                       epoch=point.epoch), flush=False)
    for fault in refused:
        bus.record(fault, flush=False)
    for slot, exc in catching_up.failed:  # in the logs still open, now the run goes on
        bus.record(SinkFailed(sink=slot.name, event="resume", error=type(exc).__name__,
                              message=str(exc), epoch=point.epoch), flush=False)
    # Decisions the crash kept out of the log: record them and let sinks act on them.
    matched = 0
    for mine, theirs in zip(replayed, recorded):
        if not same_decision(mine, theirs):
            bus.record(WarningRecord(
                source="bus", message="resume: the plugins' decisions differ from the "
                f"recorded ones from decision #{matched + 1} on ({mine.kind} from "
                f"{mine.source} vs. recorded {theirs.kind} from {theirs.source}); were the "
                "plugins or their parameters changed?", details={"index": matched}),
                flush=False)
            break
        matched += 1
    else:
        _recover(bus, header, replayed[len(recorded):], last_end)
    if finished:
        bus.record(WarningRecord(
            source="bus", message=f"resume: the run in {os.fspath(log)} had finished: its last "
            f"fit ended after epoch {(point.epoch or 0) + 1}, so that fit has no epoch left to "
            "train (a further fit goes on in this log; for a new run, give a new log)",
            details={"initial_epoch": bus.initial_epoch}), flush=False)
    elif bus.run.model is not None and not any(
            getattr(p, "restores_weights", False) for p in (*bus.run.plugins, *bus.run.sinks)):
        bus.record(WarningRecord(
            source="bus", message=f"resume: the weights were not restored: nothing on this bus "
            "restores them (BackupAndRestore, or ModelCheckpoint's checkpoints); the run goes "
            f"on at epoch {bus.initial_epoch + 1} with the model's current weights",
            details={"initial_epoch": bus.initial_epoch}), flush=False)
    bus.flush()
    return True


def _weights_point(bus: Resumable, log: str | os.PathLike[str],
                   point: ResumePoint) -> ResumePoint:
    """Where the run goes on, moved back to the epoch the newest usable weights backup was
    written after: a plugin with ``resume_epochs(run, log, epochs)`` (BackupAndRestore) says
    how many of the log's ``epochs`` finished epochs its weights can resume after (its latest
    file damaged, the one before is a finished epoch behind). The epochs after it are run
    again, as a partial epoch is, so the weights, the epoch count and every plugin's state
    agree."""
    if point.epoch is None:
        return point
    run = bus.run
    epochs = point.epoch + 1
    for plugin in run.plugins:
        ask = getattr(plugin, "resume_epochs", None)
        if callable(ask):
            found = ask(run, os.fspath(log), epochs)
            if isinstance(found, int) and 0 < found < epochs:
                epochs = found
    return _no_later_than(log, point, epochs - 1)


def _no_later_than(log: str | os.PathLike[str], point: ResumePoint, epoch: int) -> ResumePoint:
    """``point``, moved back to just after finished ``epoch`` (-1: the fit's start) when it is
    later: the records after it are left out of the resume, and abandoned by its ``resumed``."""
    if point.epoch is None or point.epoch <= epoch:
        return point
    kept = [r for r in find_kinds(log, ("train_begin", "epoch_end", "train_end"))
            if type(r.get("seq")) is int and not is_abandoned(r["seq"], point.spans)
            and (point.seq is None or r["seq"] <= point.seq)]
    if epoch < 0:
        begins = [r["seq"] for r in kept if r["kind"] == "train_begin"]
        return ResumePoint(point.spans, begins[-1], None) if begins else point
    ends = [r["seq"] for r in kept if r["kind"] == "epoch_end" and r.get("epoch") == epoch]
    return ResumePoint(point.spans, ends[-1], epoch) if ends else point


class _CatchUp:
    """Every other log of the run gets what it lacks of it, so it holds the whole run as the
    resumed log does: a new file (a main log next to a backup) all of it, a log continued
    beside it what a crash kept from it (killed between the two logs' flushes). Each is opened
    before its first record. Other sinks with a ``catch_up`` method (TensorBoard) get the
    records of the kinds they take, with the run as it stood at each, before they are opened
    (they open once the run is where it goes on from). One that fails is dropped, its failure
    recorded after the resume."""

    def __init__(self, recorder: Recorder, run: Any, log: str | os.PathLike[str]):
        self.recorder = recorder
        self.run = run
        self.log = log
        self.behind: list[tuple[Slot, int]] = []
        self.catchers: list[Slot] = []
        self.failed: list[tuple[Slot, BaseException]] = []
        for slot in recorder.slots:
            if slot.kinds is None and not same_path(slot.sink, log):
                have = _last_seq_of(slot) if slot.continued else -1
                if have is not None:
                    recorder.open_slot(slot, run)
                    self.behind.append((slot, have))
            elif slot.kinds is not None and not slot.opened and \
                    callable(getattr(slot.sink, "catch_up", None)):
                self.catchers.append(slot)

    @property
    def needed(self) -> bool:
        """Whether any log or sink here catches up (else ``write`` does nothing)."""
        return bool(self.behind or self.catchers)

    def quiet(self, bus: Resumable) -> frozenset[str]:
        """The batch kinds no log or sink here catches up on and no plugin is fed: for most of
        a log (every ``batch_begin``), feeding a record only moves the run's position, and
        resume does just that (the engine's ``feed`` does nothing else for a kind no plugin
        takes; a batch record starts no fit, so it clears no stop)."""
        if self.behind:
            return frozenset()
        return frozenset(kind for kind in BATCH_KINDS if not bus.subscribes(kind) and not any(
            kind in slot.kinds for slot in self.catchers))  # type: ignore[operator]

    def write(self, record: Record) -> None:
        if not self.needed:
            return  # nothing to catch up (the usual case): no copies of empty lists per record
        data: dict[str, Any] | None = None
        for item in list(self.behind):
            slot, have = item
            if record.seq > have and item in self.behind:  # (not a follower a log stopped)
                if data is None:
                    if record.kind in BATCH_KINDS:
                        # Read on their types alone (the fast path): checked before another
                        # log's writer gets them, which a metric that is an object would fail
                        # whole, naming nothing.
                        self._validated(record)
                    data = record.model_dump()
                self._check(self.recorder.write_to(slot, data))
                if not record.seq & 1023 and getattr(slot.sink, "follows_logs", False):
                    # What the resumed log holds is final: the HTTP record sink may send it
                    # now, rather than hold a long run's records until the resume's flush.
                    self._check(self._flushed(slot))
        for slot in list(self.catchers):
            if record.kind in slot.kinds:  # type: ignore[operator]
                data = record.model_dump() if data is None else data
                if slot.test is not None and not slot.test(data):
                    continue  # a filtered plugin-sink catches up on what it would have had
                try:
                    # As write: a sink of another package reads the fields as attributes too.
                    slot.sink.catch_up(data if is_built_in(slot.sink) else RecordDict(data),
                                       self.run)
                except Exception as exc:
                    self._check(self.recorder.drop(slot, exc))

    def _flushed(self, slot: Slot) -> list[Trouble] | None:
        try:
            slot.call("flush")
        except Exception as exc:
            return self.recorder.drop(slot, exc)
        return None

    def _validated(self, record: Record) -> None:
        from .jsonl import validation_field, validation_problems  # the readers' own words

        try:
            parse_record(dict(record.__dict__))
        except ValueError as exc:
            raise LogCorruptError(printable(
                f"{self.log}: cannot resume: the {record.kind} record of seq {record.seq} is "
                f"damaged ({validation_problems(exc)})"), path=str(self.log),
                field=validation_field(exc)) from None

    def _check(self, troubles: list[Trouble] | None) -> None:
        for trouble in troubles or ():  # a sink that failed, and the followers a log stopped
            slot = trouble.slot
            self.behind = [item for item in self.behind if item[0] is not slot]
            self.catchers = [other for other in self.catchers if other is not slot]
            self.failed.append((slot, trouble.error))  # type: ignore[arg-type]


#: Batch kinds whose records move nothing resume looks at: a ``batch_begin``'s position is
#: its ``batch_end``'s (replay leaves them out too, when its plugins do not take them).
_BEGINS = ("batch_begin", "test_batch_begin", "predict_batch_begin")


def _unbuilt(bus: Resumable, log: str | os.PathLike[str]) -> frozenset[str]:
    """The kinds resume need not build: batch begins no plugin takes, when no log is caught up
    (it gets every record) and no sink that catches up takes them. Decided before the log is
    read, so a little wider than ``_CatchUp.quiet``: any sink with a ``catch_up`` counts."""
    slots = bus.recorder.slots
    if any(slot.kinds is None and not same_path(slot.sink, log) for slot in slots):
        return frozenset()
    taken = [slot.kinds for slot in slots
             if slot.kinds is not None and callable(getattr(slot.sink, "catch_up", None))]
    return frozenset(kind for kind in _BEGINS if not bus.subscribes(kind)
                     and not any(kind in kinds for kinds in taken))


def _last_seq_of(slot: Any) -> int | None:
    """The highest seq a continued log holds; None when it cannot be read (nothing is added
    to it then: _continued_seqs warns of it)."""
    path = getattr(slot.sink, "path", None)
    try:
        return None if path is None else (last_seq(path) or 0)
    except Exception:
        return None


def _continued_seqs(bus: Resumable, log: str | os.PathLike[str]) -> list[int]:
    """The last seq of every other log the bus appends to."""
    seqs = []
    for slot in bus.recorder.slots:
        path = getattr(slot.sink, "path", None)
        if slot.continued and path is not None and not same_path(slot.sink, log):
            try:
                seq = last_seq(path) or 0
            except Exception as exc:  # a damaged second log must not stop the resume
                warnings.warn(printable(f"resume: cannot read {path} ({type(exc).__name__}: "
                                        f"{exc}); its seq is not taken into account"),
                              stacklevel=4)
                continue
            if not 0 <= seq < MAX_INDEX - ROOM:  # the run would number records past the limit
                raise LogCorruptError(f"{path}: cannot resume: this log, continued beside "
                                      f"{os.fspath(log)}, has seq {seq}, past which too few "
                                      f"records can be numbered (a seq is at most "
                                      f"{MAX_INDEX:,})", path=os.fspath(path), field="seq")
            seqs.append(seq)
    return seqs
