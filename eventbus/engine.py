"""The engine: one event through the run's parts, in fixed phases.

An observation is (1) recorded: stamped and written to every sink that takes its kind; (2)
handed, as an event (:mod:`eventbus.events`: the record's fields on a plain object), to the
plugins of its hook, in list order; (3) what they return is taken in. A decision is checked,
stamped, applied (to the control state and, through the model adapter, the model), written to
the sinks and passed to the ``on_decision`` hooks; an outcome is checked, stamped and written.
Applying a decision before the sinks get it is what lets a sink act on it (a checkpoint writer,
a backup of kept weights) and find it done.

What the fan-out of one record leaves (a sink failed, a sink returned records, a sink asked for
weights to be restored) is settled once every sink has that record, so every log stays in
``seq`` order. The bus is the public facade over this; its ``batch_end`` inlines phases 1 and 2
for speed.

Recorded events fed again (replay, resume) go through phase 2 and 3 with parts that touch
nothing: a control without a model, a recorder that writes nothing (:meth:`Engine.recomputing`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from time import time as _time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import orjson

from . import terminal
from .control import Control, ReplayControl
from .errors import ConfigError, EventError
from .events import EVENTS, event_from, event_of, set_event_fields
from .metrics import MAX_INDEX, PendingLogs, coerce_logs, hold_logs, to_index
from .plugin import Plugin, plugin_name
from .recorder import Recorder, is_event_log
from .records import (
    SCHEMA_VERSION,
    Decision,
    Header,
    Outcome,
    PluginFailed,
    Record,
    SinkFailed,
)
from .records import Warning as WarningRecord
from .sink import Sink

if TYPE_CHECKING:
    from .coordination import Coordinator
    from .cursor import Cursor
    from .dispatch import Dispatcher
    from .policy import FailurePolicy
    from .recorder import Slot, Trouble
    from .run import Run

_new = object.__new__
_get_ident = threading.get_ident
_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE
_BATCH_END_EVENT = EVENTS["batch_end"]


#: How many records may wait for their tensors to be read (see ``Recorder.hold``): 64 batches'
#: begin and end, the interval at which the batch path looks at the line buffers' size.
HOLD_RECORDS = 128

__all__ = ["Engine", "RunView", "RunWarning", "as_records", "checked"]


class RunWarning(UserWarning):
    """A ``warning`` record the bus or a plugin wrote to the log, shown as it is recorded (a
    resume whose plugins decide differently, a monitored metric missing, ...)."""


#: What :func:`refuse_oversized` leaves to the record's envelope and the log's escapes.
_ENVELOPE = 1 << 16
#: A batch line longer than this takes the careful path, which measures and refuses it:
#: ``jsonl.MAX_LINE_BYTES`` less the envelope (not imported: importing the package does not
#: load the log reader; a test holds the two equal).
_LONGEST = (64 << 20) - _ENVELOPE


def refuse_oversized_meta(meta: dict[str, Any]) -> None:
    """A ConfigError for ``Bus(meta=...)`` over half a log's longest record: the header,
    which also holds the plugins' parameters, is read back whole."""
    from .jsonl import MAX_LINE_BYTES

    size = len(orjson.dumps(meta))
    if size > MAX_LINE_BYTES // 2:
        raise ConfigError(f"Bus: meta takes {size} bytes; a log's header (read back whole) "
                          f"holds at most {MAX_LINE_BYTES // 2} of it", field="meta")


def refuse_oversized(kind: str, fields: dict[str, Any], logs: dict[str, Any]) -> None:
    """An EventError naming the largest field, for a record the log's readers would refuse
    (over ``jsonl.MAX_LINE_BYTES``): refused before it is recorded, so the log stays readable.
    Only a record that may be that large is measured (params, vectors, many or long names)."""
    if "params" not in fields and len(logs) < 4096 and \
            all(type(v) is float and len(k) < 4096 for k, v in logs.items()):
        return  # (every batch_end line of the fast path is measured by its length instead)
    from .jsonl import MAX_LINE_BYTES

    parts = {f"params.{k}": v for k, v in fields.get("params", {}).items()}
    parts.update((f"logs.{k}", v) for k, v in logs.items())
    sizes = {name: len(name) + len(orjson.dumps(value)) for name, value in parts.items()}
    if sum(sizes.values()) + _ENVELOPE <= MAX_LINE_BYTES:
        return
    largest = max(sizes, key=sizes.__getitem__)
    raise EventError(f"{kind}: the record would take {sum(sizes.values())} bytes, over the "
                     f"{MAX_LINE_BYTES} a log's reader takes; the largest field is "
                     f"{largest[:60]!r} ({sizes[largest]} bytes)", event=kind,
                     field=largest.partition(".")[0])


#: Every engine alive, so that a forked child can mark them all as its parent's.
_ALIVE: weakref.WeakSet[Engine] = weakref.WeakSet()


def _forked() -> None:
    """In a child just forked: every bus alive is the parent's. The child's copy must neither
    publish (its records would interleave with the parent's) nor close (a child ending by an
    exception unwinds through the parent's ``with bus:`` and would flush the parent's buffered
    records, which the parent writes again: the same seqs twice, a log every reader refuses).
    ``thread`` cleared sends any event to :meth:`Engine.claim`, which refuses it; the batch
    path pays nothing."""
    for engine in list(_ALIVE):
        engine.forked = True
        engine.thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)

#: The events that begin and end an evaluation's or a prediction's loop (see ``Engine.claim``).
_LOOP_EDGES = frozenset({"test_begin", "test_end", "predict_begin", "predict_end"})
_LOOP_ENDS = frozenset({"test_end", "predict_end"})


class Engine:
    """Runs events through the parts (see the module documentation).

    ``recorder`` and ``control`` are the current parts (while recorded events are fed again,
    ones that write and touch nothing); ``header`` makes the run's header record.
    """

    def __init__(self, *, recorder: Recorder, control: Control, cursor: Cursor,
                 dispatcher: Dispatcher, header: Callable[[], Header]):
        self.recorder = recorder
        #: The live recorder, whose queue ``report()`` fills, whatever ``recorder`` is now.
        self.reporting = recorder
        self.control = control
        self.cursor = cursor
        self.dispatcher = dispatcher
        #: The run as plugins and sinks see it.
        self.run: Run = RunView(self)
        self.policy: FailurePolicy  # set by the bus: the policy records through the engine
        self._header = header
        #: Sink and plugin faults seen so far (records, also in the log).
        self.failures: list[Record] = []
        #: Where a bus that shows no warnings (a replay's) keeps them, to be told with its
        #: answer; None on a live bus, which shows each as it comes.
        self.held_warnings: list[WarningRecord] | None = None
        # Weights a sink asked to restore, done once the record being written is settled.
        self._restores: list[tuple[str, str]] = []
        self.closed = False
        #: True once every sink is closed (``closed``: no event is taken any more).
        self.finished = False
        #: True while the logs write what was decided (see :meth:`observe`).
        self.flushing = False
        #: The thread that publishes the run (see :meth:`claim`).
        self.thread: int | None = None
        #: True in a child forked while this engine was alive (see :func:`_forked`).
        self.forked = False
        self.in_loop = False  # an evaluation or a prediction under way (between begin and end)
        _ALIVE.add(self)
        #: True while the header is unwritten, outcomes wait, or the run is closed: the one
        #: check an event makes before it is recorded.
        self.attention = True
        recorder.on_change = dispatcher.on_change = self.refresh
        self.refresh()

    def refresh(self) -> None:
        """Which batch events nothing records and nobody listens to: each then costs one
        attribute check. A closed run is never idle: every event reaches :meth:`attend`. And
        where a batch_end goes, in one tuple: the hottest path reads it at once."""
        tables = self.recorder.tables
        self._batch_end_route = (tables.finite_writes, tables.finite_owners, tables.lines,
                                 self.dispatcher.calls["on_batch_end"])
        self._batch_begin_route = (tables.begin_finite_writes, tables.begin_finite_owners,
                                   tables.begin_lines, self.dispatcher.calls["on_batch_begin"])
        #: Whether a batch_end's tensors may be read late: only line buffers take the record.
        self._holds = "batch_end" in tables.holds
        self._idle_batch_begin = self._is_idle("batch_begin")
        self._idle_batch_end = self._is_idle("batch_end")
        self._idle_other = {kind: self._is_idle(kind) for kind in (
            "test_batch_begin", "test_batch_end", "predict_batch_begin", "predict_batch_end")}

    def _is_idle(self, kind: str) -> bool:
        return not (self.dispatcher.calls[f"on_{kind}"] or self.recorder.wants(kind)
                    or self.closed)

    # --- the batch paths -----------------------------------------------------------------------

    def batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        if self._idle_batch_begin:
            return ()  # nothing records, nobody listens: not even the logs are examined
        if type(batch) is not int or not 0 <= batch <= MAX_INDEX:
            batch = to_index(batch, "batch", "batch_begin")
        if _get_ident() != self.thread:
            self.claim()
        if self.attention:
            self.attend(hold=True)  # its record joins any held (Recorder.write)
        clean = coerce_logs(logs, "batch_begin") if logs is not None else {}
        recorder, cursor = self.recorder, self.cursor
        recorder.seq = seq = recorder.seq + 1
        # Keys in the model's field order, so the record prints as a validated one would.
        record = {"v": SCHEMA_VERSION, "run_id": recorder.run_id, "seq": seq,
                  "kind": "batch_begin", "time": _time(), "logs": clean,
                  "epoch": cursor.epoch, "batch": batch, "step": cursor.step}
        if clean or recorder.held:  # metrics (finite or not), or joining held records
            return self._joining(record)
        # The common case, no metrics: one encoding for every line sink, as batch_end's.
        writes, owners, lines, handlers = self._batch_begin_route
        if lines:
            try:
                line = _dumps(record, option=_NEWLINE)
            except Exception:  # e.g. an index beyond 64 bits: each sink reports it
                return self.emit(record)
            for append in lines:
                append(line)
            if not seq & 63:
                self.settle(recorder.flush_full(), "batch_begin", None)
        if writes:
            self.settle(recorder.fan_out(record, writes, owners, 0), "batch_begin", record)
        if not handlers:
            return ()
        return self.dispatch(event_from(record), handlers)

    def batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        """``Bus.batch_end`` (bound on the bus itself). The hottest path of all: :meth:`emit`'s
        work and the dispatcher's call loop, inlined, for the common case of a dict of finite
        Python floats (a shared helper measured 2-3% of its cost; docs/performance.md has what
        each line costs). Change them together, and with ``_next_batch_end``, which makes the
        record for the careful paths."""
        if self._idle_batch_end:
            self.cursor.step += 1
            return ()
        if type(batch) is not int or not 0 <= batch <= 0x7FFFFFFFFFFFFFFF:  # MAX_INDEX
            batch = to_index(batch, "batch", "batch_end")
        keys_checked = True
        if type(logs) is dict:
            clean = logs.copy()
            if self._batch_end_route[2]:  # a line sink: orjson refuses a key that is not a str
                keys_checked = False
                for value in clean.values():
                    # value - value is 0.0 for a finite float, NaN (true) for NaN and infinity
                    if type(value) is not float or value - value:
                        return self._batch_end_checked(batch, logs)
            else:  # a log of another kind (Parquet) needs its keys to be text it can write
                if len(clean) >= 4096:  # and a record it can read back: measured there
                    return self._batch_end_checked(batch, logs)
                for key, value in clean.items():
                    if type(value) is not float or type(key) is not str or value - value or \
                            not key.isascii() or len(key) >= 4096:
                        return self._batch_end_checked(batch, logs)
        elif logs is None:
            clean = {}
        else:  # another mapping, or not a mapping at all: coerce_logs says which
            return self._batch_end_checked(batch, logs)
        if _get_ident() != self.thread:
            self.claim()
        if self.attention:
            self.attend()
        recorder, cursor = self.recorder, self.cursor
        recorder.seq = seq = recorder.seq + 1
        step = cursor.step
        # In records.BATCH_FIELDS order.
        record = {"v": SCHEMA_VERSION, "run_id": recorder.run_id, "seq": seq,
                  "kind": "batch_end", "time": _time(), "logs": clean, "epoch": cursor.epoch,
                  "batch": batch, "step": step}
        cursor.step = step + 1
        writes, owners, lines, handlers = self._batch_end_route
        if not (lines or keys_checked) and not all(type(key) is str for key in clean):
            recorder.seq, cursor.step = seq - 1, step  # (the line sinks went in attend)
            return self._batch_end_checked(batch, logs)
        if lines:
            try:
                line = _dumps(record, option=_NEWLINE)  # one encoding for every line sink
            except Exception:
                if not keys_checked:
                    # Not recorded: the careful path refuses the keys orjson refused (not a
                    # str, a lone surrogate) with an EventError, or records str subclasses'
                    # text.
                    recorder.seq, cursor.step = seq - 1, step
                    return self._batch_end_checked(batch, logs)
                # e.g. an index beyond 64 bits: each sink reports it
                writes, owners = recorder.route("batch_end")
            else:
                if len(line) > _LONGEST:  # (a key of megabytes) the careful path refuses it
                    recorder.seq, cursor.step = seq - 1, step
                    return self._batch_end_checked(batch, logs)
                for append in lines:
                    append(line)
                if not seq & 63:  # nothing else looks at these buffers' size
                    self.settle(recorder.flush_full(), "batch_end", None)
        if writes:  # the fan-out, inlined: the careful way only from a sink that needs it
            i, out = 0, None
            try:
                for write in writes:
                    out = write(record)
                    if out is not None:
                        break
                    i += 1
            except Exception as exc:
                out = exc
            except BaseException:  # Ctrl-C inside a writer: as Recorder.fan_out does
                recorder.forget_unflushed()  # (a row half appended, which the next would join)
                raise
            if out is not None:
                self.settle(recorder.fan_out(record, writes, owners, i, out), "batch_end",
                            record)
        if not handlers:
            return ()
        event = _new(_BATCH_END_EVENT)  # the record as an event: its dict, not copied
        set_event_fields(event, record)
        decisions: list[Decision] | None = None
        for fn in handlers:
            try:
                out = fn(event)
            except Exception as exc:
                # The owner as the handlers were made: a disable makes new ones.
                self.event_failed(self.dispatcher.owner[id(fn)], event, exc)
                continue
            if out is not None:
                made = self.accept(self.dispatcher.owner[id(fn)], event, out)
                if made:
                    decisions = made if decisions is None else [*decisions, *made]
        if decisions:
            self.flush()
            return decisions
        return ()

    def _batch_end_checked(self, batch: int, logs: Any) -> Sequence[Decision]:
        """A batch_end whose logs are not a dict of finite Python floats under str keys: made
        plain by ``coerce_logs`` (which names a key or value it refuses), or their tensors held
        where only line buffers take the record; then recorded the careful way (each sink
        encodes it, non-finite values included) and handed to the plugins."""
        if self._holds and type(logs) is dict:
            held = hold_logs(logs, "batch_end")
            if type(held) is PendingLogs:
                return self._batch_end_held(batch, held)
            clean = coerce_logs(logs, "batch_end") if held is None else held
        else:
            clean = coerce_logs(logs, "batch_end")
        refuse_oversized("batch_end", {}, clean)
        return self.emit(self._next_batch_end(batch, clean))  # joins any held (Recorder.write)

    def _next_batch_end(self, batch: int, logs: Any) -> dict[str, Any]:
        """The next batch_end record, its seq and step taken (the careful paths' part of what
        ``batch_end`` does inline): after the run's thread is checked and the rare work done,
        records held for their tensors left held for this one to join."""
        if _get_ident() != self.thread:
            self.claim()
        if self.attention:
            self.attend(hold=True)
        recorder, cursor = self.recorder, self.cursor
        recorder.seq = seq = recorder.seq + 1
        step = cursor.step
        cursor.step = step + 1
        return {"v": SCHEMA_VERSION, "run_id": recorder.run_id, "seq": seq,
                "kind": "batch_end", "time": _time(), "logs": logs, "epoch": cursor.epoch,
                "batch": batch, "step": step}

    def _batch_end_held(self, batch: int, logs: PendingLogs) -> Sequence[Decision]:
        """A batch_end whose logs hold tensors, when only line buffers take batch records: the
        record is held, unwritten, and its tensors are read when a plugin reads a value, or
        with the other held records' at the next flush point (``Recorder.hold``). So no device
        sync per batch unless a plugin reads that batch's values."""
        _, _, lines, handlers = self._batch_end_route
        return self._held(self._next_batch_end(batch, logs), bool(lines), handlers)

    def _held(self, record: dict[str, Any], written: bool,
              handlers: Sequence[Any]) -> Sequence[Decision]:
        """Hold ``record`` (logs with tensors unread) if a sink takes it (``written``), then
        hand it to ``handlers``."""
        recorder = self.recorder
        if written:  # else no sink takes it: only the plugins see it
            recorder.hold(record)
            self.attention = True  # the next event that does not join them writes them first
        decisions: Sequence[Decision] = ()
        if handlers:
            # Its logs read the tensors at a plugin's first value read (or dump); decisions
            # flush, which writes the held records.
            decisions = self.dispatch(event_from(record), handlers)
        if len(recorder.held) >= HOLD_RECORDS:
            self.release()
        return decisions

    def _joining(self, record: dict[str, Any]) -> Sequence[Decision]:
        """Emit a batch record that joins any held ones (``Recorder.write``), keeping their
        number bounded."""
        decisions = self.emit(record)
        if len(self.recorder.held) >= HOLD_RECORDS:
            self.release()
        return decisions

    def release(self) -> None:
        """Write the records held for their tensors (see ``Recorder.hold``)."""
        if self.recorder.held:
            self.settle(self.recorder.release(), "batch_end", None)

    def other_batch(self, kind: str, batch: int,
                    logs: Mapping[str, Any] | None) -> Sequence[Decision]:
        """An evaluation batch (of the fit's epoch, or none) or a prediction batch. Where only
        line buffers take its kind, it is a training batch's like: tensors in its logs are held
        unread (no device sync per batch), and it joins the records held for theirs."""
        if self._idle_other[kind]:
            return ()
        fields: dict[str, Any] = {"batch": to_index(batch, "batch", kind)}
        if kind.startswith("test"):
            fields = {"epoch": self.cursor.eval_epoch(), **fields}
        if kind not in self.recorder.tables.holds:  # a sink that is not a line buffer takes it
            return self.observe(kind, fields, logs)
        clean: Any = hold_logs(logs, kind) if type(logs) is dict else None
        if clean is None:
            clean = coerce_logs(logs, kind) if logs is not None else {}
        if type(clean) is dict:
            refuse_oversized(kind, fields, clean)
        if _get_ident() != self.thread:
            self.claim()
        if self.attention:
            self.attend(hold=True)
        recorder = self.recorder
        recorder.seq = seq = recorder.seq + 1
        record = {"v": SCHEMA_VERSION, "run_id": recorder.run_id, "seq": seq, "kind": kind,
                  "time": _time(), "logs": clean, **fields}
        if type(clean) is PendingLogs:
            return self._held(record, recorder.wants(kind), self.dispatcher.calls[f"on_{kind}"])
        return self._joining(record)

    # --- plugins and sinks ---------------------------------------------------------------------

    coordinator: Coordinator | None = None  # set by the bus: who admits a plugin here

    def register_all(self, plugins: Iterable[object]) -> None:
        """:meth:`register` each of ``plugins``, the call tables built once at the end
        (``Dispatcher.deferred``), then each one's ``on_attach`` called, in order."""
        added = []
        with self.dispatcher.deferred():
            for plugin in plugins:
                self.register(plugin, attach=False)
                added.append(plugin)
        for plugin in added:
            self._attach(plugin)

    def register(self, plugin: object, *, attach: bool = True) -> str:
        """Add a plugin (see ``Bus.register``); a plugin that is a sink is written to."""
        self.refuse_in_child("register()")
        name = plugin_name(plugin)
        if self.coordinator is not None and not self.coordinator.admits(name):
            return name  # runs on another process of the job
        self.release()  # held records go to the sinks of their time
        label = self.dispatcher.register(plugin)
        if isinstance(plugin, Sink):
            self.recorder.attach(plugin, label)
        if self.recorder.started:
            self.record(WarningRecord(
                source="bus", message=f"plugin {label!r} was registered after the run started; "
                "the log header does not list it, so replay cannot rebuild it from the log",
                details={"plugin": label}))
        if attach:
            self._attach(plugin)
        return label

    def _attach(self, plugin: object) -> None:
        for fn in self.dispatcher.handlers("on_attach", plugin):
            fn({"run": self.run, "bus": self.run})

    def add_sink(self, sink: Any) -> None:
        """A sink that is a plugin is registered (listed in the header), any other attached."""
        self.refuse_in_child("add_sink()")
        self.release()
        if isinstance(sink, Plugin):
            self.register(sink)
        else:
            self.recorder.attach_target(sink)

    def remove_sink(self, sink: Any) -> None:
        self.refuse_in_child("remove_sink()")
        self.release()
        slot = self.recorder.detach(sink)
        if slot is not None:
            self.close_sink(slot)

    def disable(self, plugin: object) -> None:
        """Take a plugin out of the run: no more hooks, and no more records if it is a sink."""
        self.release()
        self.dispatcher.disable(plugin)
        slot = self.recorder.detach(plugin)
        if slot is not None:
            with contextlib.suppress(Exception):
                slot.call("close")

    def subscribers(self, kind: str) -> list[object]:
        """The plugins whose hook handles ``kind``, in call order, then the sinks taking it."""
        owner = self.dispatcher.owner
        plugins = [owner[id(fn)] for fn in self.dispatcher.calls.get(f"on_{kind}", ())]
        sinks = [slot.sink for slot in self.recorder.tables.owners.get(kind, ())
                 if not any(slot.sink is p for p in plugins)]
        return [*plugins, *sinks]

    # --- observations --------------------------------------------------------------------------

    def refuse_in_child(self, what: str) -> None:
        """A forked child's copy of the bus holds the parent's sinks and their buffers: whatever
        it writes, flushes or closes reaches the parent's files a second time."""
        if self.forked:
            raise EventError(
                f"{what} in process {os.getpid()}, forked from the process that runs this bus: "
                "its sinks and logs are the parent's, whose records would be written twice. "
                "Publish from the parent; a child that needs a log opens a Bus of its own")

    def claim(self, what: str = "an event") -> None:
        """The run is published from one thread at a time: the thread of the fit under way.

        Events from two threads at once would interleave their records (lost records, seq
        out of order). So while a fit, an evaluation or a prediction is under way in one
        thread, an event (or a flush) from another is refused; between them, the next may come
        from any thread.
        """
        ident = threading.get_ident()
        self.refuse_in_child(what)
        if self.thread is not None and (self.cursor.in_train or self.in_loop) and \
                not self.closed:
            raise EventError(
                f"the bus is in use by thread {_thread_name(self.thread)}, where a "
                f"{'fit' if self.cursor.in_train else 'loop'} is under "
                f"way; {what} from thread {_thread_name(ident)} would interleave with its "
                "records. Publish from one thread (from others, bus.report() queues outcomes), "
                "or start the next fit from this thread once that one has ended")
        self.thread = ident

    def attend(self, *, hold: bool = False) -> None:
        """The rare work before an event: the header, outcomes queued by ``report()``, the
        records held for their tensors (written first, unless the event joins them: ``hold``).

        Done before the event takes its seq and time, so the log stays in seq order and the
        header's time comes before the first event's.
        """
        if self.closed:
            raise EventError("the bus is closed: an event published after close() would not be "
                             "recorded (close the bus after train_end, or use a new bus)")
        self.start()
        self.drain()
        if self.recorder.held:
            if hold:
                self.attention = True
            else:
                self.release()

    def report(self, outcome: Outcome) -> None:
        """Queue an outcome from any thread; recorded at the next event."""
        self.reporting.report(outcome)
        self.attention = True

    def drain(self) -> None:
        self.attention = self.closed  # cleared first: a report() racing with this sets it again
        for outcome in self.reporting.take_pending():
            self.record(outcome)

    def observe(self, kind: str, fields: dict[str, Any],
                logs: Mapping[str, Any] | None) -> Sequence[Decision]:
        """Record an observation of ``kind`` and run its plugins (every kind but the bus's
        inlined ``batch_end``)."""
        if _get_ident() != self.thread:
            self.claim()
        if kind in _LOOP_EDGES:  # an evaluation's or a prediction's loop holds the run too
            self.in_loop = kind.endswith("_begin")
        if self.attention:
            self.attend()
        logs = coerce_logs(logs, kind) if logs is not None else {}
        refuse_oversized(kind, fields, logs)
        refused: list[tuple[object, Exception]] = []
        if kind in ("epoch_begin", "epoch_end"):
            if kind == "epoch_end":
                refused = self._augment(fields["epoch"], logs)
            lr = self.control.learning_rate
            if lr is not None and self.dispatcher.logs_learning_rate and \
                    "learning_rate" not in logs:
                logs["learning_rate"] = lr
        recorder = self.recorder
        recorder.seq = seq = recorder.seq + 1
        record = {"v": SCHEMA_VERSION, "run_id": recorder.run_id, "seq": seq, "kind": kind,
                  "time": _time(), "logs": logs, **fields}
        self.flushing = False
        try:
            decisions = self.emit(record, refused)
            # The run's start is kept at once, as an epoch's end is: a kill in the first epoch
            # then leaves a run to resume (whose sinks are cut back), not an empty log.
            if kind in ("epoch_end", "train_begin") and not decisions or \
                    kind in _LOOP_ENDS and not self.cursor.in_train and not decisions:
                self.flush()  # (an evaluation or prediction of its own: its records too)
            elif kind == "train_end":
                self.sync()
        except BaseException as exc:
            if not isinstance(exc, Exception) and not self.flushing:
                recorder.forget_unflushed()  # Ctrl-C amid the event's decisions
            self.flushing = False
            raise
        return decisions

    def emit(self, record: dict[str, Any],
             refused: Sequence[tuple[object, Exception]] = ()) -> Sequence[Decision]:
        """Record ``record``, then hand it, as an event, to the plugins of its hook. Plugins
        whose ``augment_epoch_logs`` failed (``refused``) fail after the record is kept: the
        loop's metrics are not lost with a plugin's."""
        self.settle(self.recorder.write(record), record["kind"], record)
        for plugin, exc in refused:
            self.policy.plugin_failed(plugin, record["kind"], record["seq"], self.cursor.epoch,
                                      exc)
        handlers = self.dispatcher.calls[f"on_{record['kind']}"]
        if not handlers:
            return ()
        return self.dispatch(event_from(record), handlers)  # the record as an event

    def dispatch(self, event: Any, handlers: Sequence[Any]) -> Sequence[Decision]:
        """Call ``handlers`` with ``event``; the decisions they make are applied and returned."""
        decisions = self.dispatcher.call(handlers, event, self.accept, self.event_failed)
        if decisions:
            self.flush()
            return decisions
        return ()

    def _augment(self, epoch: int, logs: dict[str, float]) -> list[tuple[object, Exception]]:
        """Add what ``augment_epoch_logs`` plugins give to ``logs``; returns the plugins that
        raised or gave something that is not metrics, with their errors."""
        refused: list[tuple[object, Exception]] = []

        def took(plugin: object, _arg: Any, extra: Any) -> None:
            try:
                extra = coerce_logs(extra, "epoch_end", plugin=self.dispatcher.label(plugin))
            except Exception as exc:
                refused.append((plugin, exc))
                return
            for key, value in extra.items():
                logs.setdefault(key, value)

        self.dispatcher.call(self.dispatcher.calls["augment_epoch_logs"],
                             {"epoch": epoch, "logs": logs}, took,
                             lambda plugin, _arg, exc: refused.append((plugin, exc)))
        return refused

    # --- recorded events fed again -------------------------------------------------------------

    def feed(self, record: Record, *, side_effects: bool) -> Sequence[Decision]:
        """Dispatch a recorded record as it was, writing nothing (see ``Bus.feed``)."""
        # By category, a class attribute: cheaper than isinstance on a record (pydantic's
        # metaclass checks in Python), and it is asked once for every record fed.
        category = getattr(record, "category", None)
        if category == "decision" and isinstance(record, Decision):
            control = self.control
            if record.kind == "set_learning_rate" and isinstance(control, ReplayControl):
                control.recorded(record)  # the recorded run's rate from here (see follow)
            if side_effects:
                self.dispatcher.call(self.dispatcher.calls["on_decision"], record,
                                     lambda *_: None, self._decision_failed)
            return ()
        if category != "observation":
            return ()
        kind = record.kind
        if self.cursor.replayed(record):
            self.clear_stop()  # a new fit starts unstopped, as it did live
        control = self.control
        epochal = kind in ("epoch_begin", "epoch_end") and isinstance(control, ReplayControl)
        if epochal:
            # The rate the live plugins saw here, a rate the loop moved itself included.
            control.follow(record.logs.get("learning_rate"))
        table = self.dispatcher.calls if side_effects else self.dispatcher.pure
        handlers = table[f"on_{kind}"]
        if not handlers:
            self.recorder.seq = record.seq
            return ()  # no plugin sees it: the position above is all it changes
        if epochal and control.learning_rate is not None and \
                self.dispatcher.logs_learning_rate:
            event = event_from({**record.__dict__, "logs": {
                **record.logs, "learning_rate": control.learning_rate}})
        else:
            event = event_of(record)  # plugins get an event, whether live or fed again
        with self.writing_nothing():
            self.recorder.seq = record.seq
            return self.dispatch(event, handlers)

    def write_recorded(self, record: Record) -> None:
        """Write a recorded record to the sinks as it was (see ``Bus.write_recorded``)."""
        recorder = self.recorder
        recorder.started = True
        if not recorder.opened:
            self.settle(recorder.open(self.run), "open", None)
        if record.category == "observation":
            self.cursor.replayed(record)
        recorder.seq = max(recorder.seq, record.seq)
        self.settle(recorder.write(record.model_dump()), record.kind, record)

    @contextlib.contextmanager
    def recomputing(self, learning_rate: float | None) -> Iterator[ReplayControl]:
        """A control with no model (from ``learning_rate``) and a recorder that writes nothing
        while the block runs; the live parts are put back after. Yields that control: where
        the records fed leave the recorded run's rate (a resume goes on at it)."""
        live = self.control
        self.control = replaying = ReplayControl(learning_rate)
        try:
            with self.writing_nothing():
                yield replaying
        finally:
            self.control = live

    @contextlib.contextmanager
    def writing_nothing(self) -> Iterator[None]:
        live = self.recorder
        if not live.slots:
            yield  # writes nothing already (a replay's)
            return
        silent = Recorder(live.run_id, silent=True)
        silent.started, silent.seq = True, live.seq
        self.recorder = silent
        self.refresh()
        try:
            yield
        finally:
            self.recorder = live
            self.refresh()

    clear_stop: Callable[[], None]  # set by the bus: the coordinator hears of it too
    #: Set by the bus: a replay bus of its class for the given plugins (``run.recompute``).
    recompute: Callable[[Sequence[object], float | None], Any]

    # --- recording -----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the sinks (they learn the run before its first record) and write the header."""
        recorder = self.recorder
        failed = recorder.open(self.run) if not recorder.opened else None
        if not recorder.started:
            recorder.started = True
            if recorder.slots:
                self.settle(recorder.write(self._header().model_dump()), "header", None)
        self.settle(failed, "open", None)

    def record(self, item: Record, *, source: str = "", cause: Any = None) -> Record:
        """Stamp ``item`` with the envelope (and source, cause, epoch if unset), record it."""
        self.start()  # first, so the header's time is before this record's
        stamped = self.recorder.stamp(item, source=source, cause=cause, epoch=self.cursor.epoch)
        self._publish(stamped, ())
        return stamped

    def decide(self, item: Decision, *, source: str = "", cause: Any = None) -> Decision:
        """Stamp a decision, apply it, record it, pass it to the ``on_decision`` hooks."""
        self.start()
        stamped: Decision = self.recorder.stamp(  # type: ignore[assignment]
            item, source=source, cause=cause, epoch=self.cursor.epoch)
        self._publish(stamped, self.control.apply(stamped))
        if self.control.live:
            self.dispatcher.call(self.dispatcher.calls["on_decision"], stamped,
                                 self._outcomes_of, self._decision_failed)
        return stamped

    def _publish(self, stamped: Record, effects: Sequence[Record], *, shown: bool = True) -> None:
        """Write a stamped record to the sinks, then the records its application produced; a
        warning is shown as a RunWarning unless not ``shown``."""
        troubles = self.recorder.write(stamped.model_dump())
        if isinstance(stamped, (SinkFailed, PluginFailed)):
            self.failures.append(stamped)  # however it arrived: raised, returned or reported
        elif isinstance(stamped, WarningRecord):
            if self.held_warnings is not None:
                self.held_warnings.append(stamped)
            elif self.control.live and shown:
                # Shown where the user runs: text from a log (a path, a name) never acts on it.
                terminal.warn(stamped.text, RunWarning)
        for effect in effects:
            self.record(effect)
        self.settle(troubles, stamped.kind, stamped)

    def attach(self, model: Any) -> None:
        """Give the control a model adapter (``bus.model = ...``); the model refusing the rate
        it is given (a resume's, see :meth:`Control.attach`) is recorded."""
        for record in self.control.attach(model):
            self.record(record)

    def restore(self, tag: str, *, source: str) -> None:
        """Put the weights kept under ``tag`` back into the model once the record being written
        is settled (see :meth:`eventbus.Bus.restore_kept`)."""
        self._restores.append((tag, source))

    # --- what a fan-out left --------------------------------------------------------------------

    def settle(self, troubles: list[Trouble] | None, kind: str, cause: Any) -> None:
        """Record what a fan-out left: sinks that failed, records sinks returned, weights a
        sink asked to restore."""
        if troubles:
            seq = cause["seq"] if isinstance(cause, dict) else getattr(cause, "seq", None)
            for trouble in troubles:
                if trouble.error is not None:
                    self.sink_failed(trouble.slot, kind, seq, trouble.error)
                else:
                    self.take_from_sink(trouble.slot, cause, trouble.out)
        while self._restores:
            tag, source = self._restores.pop(0)
            for record in self.control.restore(tag, source=source, epoch=self.cursor.ended):
                self.record(record)

    def sink_failed(self, slot: Slot, kind: str, seq: int | None, exc: BaseException) -> None:
        if any(plugin is slot.sink for plugin in self.dispatcher.plugins):
            self.dispatcher.disable(slot.sink)  # a plugin that is a sink: its hooks go too
        self.policy.sink_failed(slot.name, kind, self.recorder.seq if seq is None else seq,
                                self.cursor.epoch, exc)

    def take_from_sink(self, slot: Slot, cause: Any, out: Any) -> None:
        """Records a sink returned: outcomes recorded, decisions applied and recorded."""
        kind = cause["kind"] if isinstance(cause, dict) else getattr(cause, "kind", "close")
        try:
            items = [checked(item, slot.name, kind) for item in as_records(out, slot.name, kind)]
        except Exception as exc:
            self.sink_failed(slot, kind, None, exc)
            return
        event = _Cause(cause) if isinstance(cause, dict) else cause
        for item in items:
            if isinstance(item, Decision):
                self.decide(item, source=slot.name, cause=event)
            elif isinstance(item, Outcome):
                self.record(item, source=slot.name, cause=event)
            else:
                self.sink_failed(slot, kind, None, EventError(
                    f"sink {slot.name!r} returned a {item.kind} record; sinks return outcomes "
                    "or decisions", event=kind, plugin=slot.name))

    def flush(self) -> None:
        # Refused in a forked child (the buffers are the parent's), and from a second thread
        # during a fit: the writers' buffers are the fit's thread's, which appends to them
        # without a lock (a Parquet log built a segment of lists changing under it).
        if self.forked or threading.get_ident() != self.thread:
            self.claim("flush()")
        # What is written now was all decided: an interrupt in here keeps it (the flag stays
        # up for observe to see, which lowers it).
        self.flushing = True
        self.settle(self.recorder.flush(), "flush", None)
        self.flushing = False

    def sync(self) -> None:
        self.flushing = True
        self.settle(self.recorder.sync(), "train_end", None)
        self.flushing = False

    # --- what plugins return -------------------------------------------------------------------

    def accept(self, plugin: object, event: Any, out: Any) -> list[Decision] | None:
        """Record, apply and pass on what a plugin returned for ``event``."""
        label = self.dispatcher.label(plugin)
        try:
            items = as_records(out, label, event.kind)  # a generator hook runs here
        except Exception as exc:
            self.event_failed(plugin, event, exc)
            return None
        decisions: list[Decision] = []
        for item in items:
            if isinstance(item, (Decision, Outcome)):
                try:
                    item = checked(item, label, event.kind)
                except EventError as exc:
                    self.event_failed(plugin, event, exc)
                    continue
            if isinstance(item, Decision):
                decisions.append(self.decide(item, source=label, cause=event))
            elif isinstance(item, Outcome):
                self.record(item, source=label, cause=event)
            else:
                self.event_failed(plugin, event, EventError(
                    f"plugin {label!r} returned a {item.kind} record from {event.kind}; plugins "
                    "return decisions or outcomes, the loop publishes observations",
                    event=event.kind, plugin=label))
        return decisions

    def event_failed(self, plugin: object, event: Any, exc: Exception) -> None:
        self.policy.plugin_failed(plugin, event.kind, event.seq, self.cursor.epoch, exc)

    def _outcomes_of(self, plugin: object, decision: Decision, out: Any) -> None:
        """What an ``on_decision`` hook returned: outcomes only."""
        label = self.dispatcher.label(plugin)
        try:
            items = [checked(item, label, decision.kind) if isinstance(item, Outcome) else item
                     for item in as_records(out, label, decision.kind)]
        except Exception as exc:
            self._decision_failed(plugin, decision, exc)
            return
        for item in items:
            if isinstance(item, Outcome):
                self.record(item, source=label, cause=decision)
            else:
                self._decision_failed(plugin, decision, EventError(
                    f"plugin {label!r} returned a {item.kind} record from on_decision; only "
                    "outcomes may be returned there", event=decision.kind, plugin=label))

    def _decision_failed(self, plugin: object, decision: Decision, exc: Exception) -> None:
        self.policy.plugin_failed(plugin, decision.kind, decision.seq, self.cursor.epoch, exc)

    # --- closing -------------------------------------------------------------------------------

    def loop_raised(self, error: BaseException | None) -> None:
        """The ``with bus:`` block ended by ``error`` (None: it did not): recorded, as a
        warning of the bus's, before the bus closes. The log then says how the run ended, where
        a crash leaves only "no train_end"; the audit's ``ended:`` line says it."""
        if error is None or self.closed or self.forked or not self.recorder.started:
            return
        from .termination import Terminated

        name = type(error).__name__
        what = "was ended by SIGTERM" if isinstance(error, Terminated) else \
            f"was interrupted ({name})" if isinstance(error, KeyboardInterrupt) else \
            f"raised {name}"
        cursor = self.cursor
        where = "" if not cursor.in_train or cursor.epoch is None else \
            f" after epoch {cursor.epoch + 1}" if cursor.ended == cursor.epoch else \
            f" in epoch {cursor.epoch + 1}"
        text = str(error).strip().partition("\n")[0][:300]
        warning = WarningRecord(
            message=f"the training loop {what}{where}" + (f": {text}" if text else ""),
            details={"raised": f"{type(error).__module__}.{type(error).__qualname__}",
                     "message": text, "step": self.cursor.step})
        with contextlib.suppress(Exception):  # the loop's own error is what goes on, always
            # Not shown as a RunWarning: the traceback on its way says it already.
            self._publish(self.recorder.stamp(warning, source="bus", cause=None,
                                              epoch=self.cursor.epoch), (), shown=False)

    def close(self) -> None:
        """Let plugins flush (``on_close``), then close the sinks, the logs last; what was
        reported is recorded before each sink closes. An interrupt (Ctrl-C) on the way still
        closes every sink, then goes on: else their records and their locks are lost."""
        interrupted: BaseException | None = None
        if not self.closed:  # (once: a close an interrupt cut is called again for the sinks)
            try:
                self._before_the_sinks_close()
                self._hold_back_followers()
            except BaseException as exc:
                if isinstance(exc, Exception):
                    raise
                interrupted = exc
        self.closed = self.attention = True
        # Sinks that take some kinds first, recording what each returns or reports as it
        # closes; then the logs, which take every record, all with the same records; then the
        # HTTP record sink, which sends what the logs wrote (none of it if one failed closing).
        # Only an event log's failure counts: a sink of the user's taking every record holds
        # nothing a resume reads.
        logs_failed = False
        for slot in self.recorder.closing_order():
            self.recorder.detach(slot.sink)
            follower = slot.kinds is None and getattr(slot.sink, "follows_logs", False)
            if follower and logs_failed:
                slot.call("forget_unflushed")
            try:
                if not self.close_sink(slot) and is_event_log(slot):
                    logs_failed = True
                if slot.kinds is not None:
                    self.drain()
            except BaseException as exc:  # Ctrl-C: the other sinks, the logs last, close still
                interrupted = interrupted or exc
                closed = False
                with contextlib.suppress(BaseException):
                    closed = self.close_sink(slot)  # once more: a close the interrupt cut finishes
                if not closed and is_event_log(slot):
                    logs_failed = True
        self.finished = True
        if interrupted is not None:
            raise interrupted

    def _before_the_sinks_close(self) -> None:
        self.release()  # the records held for their tensors, while the run is still open
        self.closed = self.attention = True
        self.policy.closing = True
        self.refresh()
        if self.recorder.slots and not self.recorder.started:
            self.start()
        self.dispatcher.call(self.dispatcher.calls["on_close"], None, self._at_close,
                             lambda plugin, _arg, exc: self.policy.plugin_failed(
                                 plugin, "close", None, self.cursor.epoch, exc))
        self.drain()

    def _hold_back_followers(self) -> None:
        """Before the sinks close (the logs last), the logs write what they hold; while one
        cannot (a full disk), a sink that ``follows_logs`` (MLflow) forgets what it has not
        sent, so what it holds is never ahead of the log a resume reads."""
        slots = self.recorder.slots
        followers = [s for s in slots if getattr(s.sink, "follows_logs", False)]
        if not followers:
            return
        logs = [s for s in slots if s.kinds is None]
        self.settle(self.recorder.call(logs, "flush"), "flush", None)
        if any(getattr(s.sink, "behind", False) for s in logs):
            for slot in followers:
                slot.call("forget_unflushed")

    def close_sink(self, slot: Slot) -> bool:
        """Close a sink taken out of the recorder; what it returns, or its failure, is recorded
        in the sinks still open. False when its close failed."""
        try:
            out = slot.call("close")
        except Exception as exc:
            self.record(SinkFailed(sink=slot.name, event="close", error=type(exc).__name__,
                                   message=str(exc), epoch=self.cursor.epoch))
            return False
        if out is not None:
            self.take_from_sink(slot, {"kind": "close", "seq": None}, out)
        return True

    def _at_close(self, plugin: object, _arg: Any, out: Any) -> None:
        label = self.dispatcher.label(plugin)
        try:
            items = [checked(item, label, "close") if isinstance(item, (Decision, Outcome))
                     else item for item in as_records(out, label, "close")]
        except Exception as exc:
            self.policy.plugin_failed(plugin, "close", None, self.cursor.epoch, exc)
            return
        for item in items:
            self.record(item, source=label)


class _Cause:
    """A written record as the cause of what a sink returned (its seq and epoch)."""

    __slots__ = ("epoch", "kind", "seq")

    def __init__(self, record: dict[str, Any]):
        self.kind = record.get("kind")
        self.seq = record.get("seq")
        self.epoch = record.get("epoch")


def as_records(out: Any, label: str, kind: str) -> Iterable[Record]:
    """What a hook or sink returned, as records; an :class:`EventError` naming who and what."""
    if out is None:
        return ()
    if isinstance(out, Record):
        return (out,)
    if isinstance(out, Iterable) and not isinstance(out, (str, bytes, Mapping)):
        items = tuple(out)
        for i, item in enumerate(items):
            if not isinstance(item, Record):
                raise EventError(f"plugin {label!r} returned a {type(out).__name__} from {kind} "
                                 f"whose item {i} is a {type(item).__name__} ({item!r:.60}), "
                                 "not a record (decision or outcome)", plugin=label, event=kind)
        return items
    raise EventError(f"plugin {label!r} returned {type(out).__name__} from {kind}; a hook "
                     "returns None, a record (decision or outcome) or an iterable of records",
                     plugin=label, event=kind)


def checked(item: Record, label: str, kind: str) -> Record:
    """A record a plugin returned, validated: one made with ``model_construct`` (or changed
    after construction) could otherwise put a record in the log that no reader accepts."""
    try:
        return type(item).model_validate(dict(item.__dict__))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        who = f"plugin {label!r} returned" if label != "bus" else f"{kind}: given"
        raise EventError(f"{who} an invalid {item.kind} record from {kind}: {exc}",
                         plugin=None if label == "bus" else label, event=kind) from None


def _thread_name(ident: int) -> str:
    name = next((t.name for t in threading.enumerate() if t.ident == ident), None)
    return f"{name!r} ({ident})" if name else str(ident)


class RunView:
    """The run as its plugins and sinks see it (:class:`~eventbus.run.Run`), read through the
    engine's parts as they are now."""

    __slots__ = ("_engine",)

    def __init__(self, engine: Engine):
        self._engine = engine

    run_id = property(lambda self: self._engine.recorder.run_id)
    resumed = property(lambda self: self._engine.cursor.resumed)
    initial_epoch = property(lambda self: self._engine.cursor.initial_epoch)
    epoch = property(lambda self: self._engine.cursor.epoch)
    step = property(lambda self: self._engine.cursor.step)
    learning_rate = property(lambda self: self._engine.control.learning_rate)
    model = property(lambda self: self._engine.control.model)
    plugins = property(lambda self: tuple(self._engine.dispatcher.plugins))

    @property
    def logs(self) -> tuple[str, ...]:
        return tuple(os.fspath(s.sink.path) for s in self._engine.recorder.slots
                     if s.kinds is None and getattr(s.sink, "path", None) is not None)

    @property
    def sinks(self) -> tuple[Any, ...]:
        return tuple(s.sink for s in self._engine.recorder.slots)

    @property
    def snapshots(self) -> Mapping[str, Mapping[str, Any]]:
        return MappingProxyType(self._engine.control.snapshots)

    def label(self, plugin: object) -> str:
        return self._engine.dispatcher.label(plugin)

    def report(self, outcome: Outcome) -> None:
        self._engine.report(outcome)

    def add_sink(self, sink: Any) -> None:
        self._engine.add_sink(sink)

    def remove_sink(self, sink: Any) -> None:
        self._engine.remove_sink(sink)

    def keep_weights(self, tag: str, weights: Mapping[str, Any], *,
                     optimizer: Mapping[str, Any] | None = None) -> None:
        self._engine.control.keep(tag, dict(weights), optimizer=optimizer)

    def restore_weights(self, tag: str, *, source: str) -> None:
        self._engine.restore(tag, source=source)

    def recompute(self, plugins: Sequence[object], *, learning_rate: float | None = None) -> Any:
        return self._engine.recompute(plugins, learning_rate)

    def __repr__(self) -> str:
        return f"<run {self.run_id} at epoch {self.epoch}, step {self.step}>"
