"""Recording: the envelope, the header once, and the fan-out of every record to the sinks.

The recorder stamps each record with the run's envelope (run id, the next ``seq``, the time)
and hands it, as the plain dict a log stores, to every sink that takes its kind (see
:mod:`eventbus.sink`). It opens the sinks before the first record, and keeps the queue behind
``Bus.report()``: outcomes from other threads, recorded on the bus's thread at the next event.

A recorder with no sinks writes nothing: that is what a replay, and the state a resume
restores, records into.

:meth:`Recorder.write` never raises for a sink: a sink that fails is taken out of the run
(closed, so what it buffered stays) and returned with its error, after every other sink has the
record, for the bus to record as ``sink_failed``; every log so stays in ``seq`` order. What a
sink returns (an outcome, a decision) is returned the same way.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from time import time as _time
from typing import Any

from ._version import __version__
from .errors import ConfigError, DeliveryError, LogError
from .filters import filters_of, record_test
from .log import has_records, log_path, open_writer
from .metrics import PendingLogs, read_pending
from .plugin import plugin_spec
from .records import (
    BATCH_KINDS,
    KINDS,
    SCHEMA_VERSION,
    Decision,
    Header,
    Outcome,
    PluginSpec,
    Record,
)
from .run import Run
from .sink import is_built_in, reading_attributes

__all__ = ["Recorder", "Slot", "Trouble", "is_event_log", "make_header"]

_ALL_KINDS = tuple(KINDS)


@dataclass(eq=False)
class Slot:
    """One sink attached to a recorder, with its methods bound once."""

    sink: Any
    #: The name its failures are recorded under.
    name: str
    kinds: frozenset[str] | None
    write: Callable[[dict[str, Any]], Any]
    #: The JSON Lines fast path (``Sink.line_buffer``), or None.
    buffer: bytearray | None = None
    limit: int = 1 << 20
    #: True when the sink appends to a file that already holds this run (its header too).
    continued: bool = False
    opened: bool = False
    #: A plugin-sink's event filters as a test of records (``filters.record_test``), or None:
    #: ``write`` passes each record through it (no fast path), and so does a resume's catch-up,
    #: so a time filter keeps one clock across both.
    test: Callable[[dict[str, Any]], bool] | None = None

    def call(self, method: str) -> Any:
        fn = getattr(self.sink, method, None)
        if fn is None and method == "sync":
            fn = getattr(self.sink, "flush", None)
        return fn() if callable(fn) else None


def _behind(test: Callable[[dict[str, Any]], bool],
            write: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """``write`` given only the records ``test`` passes."""
    def filtered_write(record: dict[str, Any]) -> Any:
        return write(record) if test(record) else None
    return filtered_write


@dataclass(eq=False)
class Trouble:
    """What the fan-out of one record left to do: a sink failed, or a sink returned records."""

    slot: Slot
    error: BaseException | None = None
    out: Any = None


def _fast_route(owners: tuple[Slot, ...]) -> tuple[tuple[Any, ...], tuple[Slot, ...],
                                                    tuple[Any, ...]]:
    """For a batch kind taken by ``owners``: the line buffers' ``extend``, the other sinks, and
    their writes for a record whose metrics are finite floats (``write_finite`` where they have
    it)."""
    finite_owners = tuple(s for s in owners if s.buffer is None)
    return (tuple(s.buffer.extend for s in owners if s.buffer is not None), finite_owners,
            tuple(s.write if s.test is not None else getattr(s.sink, "write_finite", s.write)
                  for s in finite_owners))


@dataclass(eq=False)
class _Tables:
    """Per kind, what a record of it is written to (rebuilt when the sinks change)."""

    #: kind -> the write methods of the sinks taking it, and those sinks.
    writes: dict[str, tuple[Callable[[dict[str, Any]], Any], ...]] = field(default_factory=dict)
    owners: dict[str, tuple[Slot, ...]] = field(default_factory=dict)
    #: For a batch_end whose metrics are finite floats: the line buffers' ``extend``, and the
    #: writes of the other sinks taking batch_end. ``begin_*``: the same for batch_begin.
    lines: tuple[Callable[[bytes], Any], ...] = ()
    finite_writes: tuple[Callable[[dict[str, Any]], Any], ...] = ()
    finite_owners: tuple[Slot, ...] = ()
    begin_lines: tuple[Callable[[bytes], Any], ...] = ()
    begin_finite_writes: tuple[Callable[[dict[str, Any]], Any], ...] = ()
    begin_finite_owners: tuple[Slot, ...] = ()
    #: The line buffers batch records are appended to (their size is checked every 64 seqs).
    line_slots: tuple[Slot, ...] = ()
    #: The batch kinds only line buffers take: a record of them may wait in ``Recorder.held``.
    holds: frozenset[str] = frozenset()


class Recorder:
    """Stamps records and writes them to the sinks of one run."""

    def __init__(self, run_id: str, on_change: Callable[[], None] = lambda: None, *,
                 silent: bool = False):
        self.run_id = run_id
        #: A recorder that writes nothing (replay's, and a resume's while it recomputes):
        #: sinks given to it are not kept.
        self.silent = silent
        #: Called whenever the sinks change (the bus refreshes its idle checks).
        self.on_change = on_change
        #: The seq of the last record.
        self.seq = 0
        #: True once the run's log has its header (written, or found in a log continued).
        self.started = False
        self.slots: list[Slot] = []
        self.tables = _Tables()
        #: Outcomes reported from other threads, recorded at the next event.
        self.pending: deque[Outcome] = deque()
        #: Batch records waiting, in seq order, for their tensors to be read (see :meth:`hold`).
        self.held: list[dict[str, Any]] = []
        self._run: Run | None = None
        self._rebuild()

    # --- sinks ---------------------------------------------------------------------------------

    def attach_target(self, target: Any, *, append: bool | None = None) -> Slot:
        """Write to ``target``: a log path (in the format its name says; ``append`` continues
        a log there) or a sink object. ``append`` is the bus's word on its ``log=``: whether it
        resumes; None for a sink a plugin adds (``run.add_sink``), which decides for itself."""
        if isinstance(target, (str, os.PathLike)):
            append = bool(append)
            continued = append and has_records(target)
            try:
                writer = open_writer(target, append=append)
            except OSError as exc:
                # The path the system names, where it is another (a file in a log's folder).
                at = f" ({exc.filename})" if exc.filename and \
                    os.fspath(exc.filename) != os.fspath(target) else ""
                raise LogError(f"Bus: log {os.fspath(target)!r} cannot be opened for writing: "
                               f"{exc.strerror or exc}{at}", path=os.fspath(target)) from exc
            return self.attach(writer, writer.name, continued=continued)
        if all(callable(getattr(target, m, None)) for m in ("write", "flush", "close")):
            continued = False
            if getattr(type(target), "event_log", False):
                target.settle(append=bool(append))  # left to decide: as a log by its path
                continued = has_records(target.path)
                if continued and append is False:
                    # A writer made with append=True on a bus that is not resuming: the new
                    # run's seqs would start again at 0, and every reader refuse the log.
                    raise ConfigError(
                        f"Bus: log {os.fspath(target.path)!r} holds a run and its writer "
                        "appends to it (append=True), but this bus is not resuming: a new run "
                        "would number its records from 0 again, and the log would read as "
                        "damaged. Resume it (Bus(..., resume=True)), or give the writer "
                        "append=False (or leave it out) to start the log afresh", field="log")
            else:
                continued = has_records(getattr(target, "path", None))
            return self.attach(target, getattr(target, "name", type(target).__name__),
                               continued=continued)
        raise ConfigError(f"Bus: log must be a path or a sink with write/flush/close; got "
                          f"{type(target).__name__}", field="log")

    def attach(self, sink: Any, name: str, *, continued: bool = False) -> Slot:
        """Write to ``sink`` from now on (opened at once if the run has started)."""
        kinds = getattr(sink, "takes", None)
        buffer = getattr(sink, "line_buffer", None)
        write = sink.write if is_built_in(sink) else reading_attributes(sink.write)
        test = record_test(filters_of(sink))  # every(5, CSVLogger(...)): its writes too
        if test is not None:
            write, buffer = _behind(test, write), None
        slot = Slot(sink, name, None if kinds is None else frozenset(kinds), write,
                    buffer if isinstance(buffer, bytearray) else None,
                    int(getattr(sink, "buffer_bytes", 1 << 20)), continued,
                    test=test)
        if self.silent:
            return slot
        self.slots.append(slot)
        if self._run is not None:
            self.open_slot(slot, self._run)
        self._rebuild()
        return slot

    def detach(self, sink: Any) -> Slot | None:
        """Write to ``sink`` no more (not closed here)."""
        slot = self.slot(sink)
        if slot is not None:
            self.slots.remove(slot)
            self._rebuild()
        return slot

    def slot(self, sink: Any) -> Slot | None:
        return next((s for s in self.slots if s.sink is sink), None)

    @property
    def opened(self) -> bool:
        """True once the sinks have been opened with the run."""
        return self._run is not None

    def open(self, run: Run) -> list[Trouble] | None:
        """Open every sink not yet opened: the run starts, or goes on after a resume. A sink
        whose ``open`` raises is taken out, as one whose ``write`` raises: returned to be
        recorded as failed (a CSV it cannot read must not stop a resume). A ConfigError is
        the user's to fix before the run goes on (an MLflow run id it cannot use): raised."""
        self._run = run
        left: list[Trouble] | None = None
        for slot in list(self.slots):
            if slot not in self.slots:
                continue  # a follower a failed log stopped
            try:
                self.open_slot(slot, run)
            except ConfigError:
                raise
            except Exception as exc:
                self.detach(slot.sink)
                left = (left or []) + [Trouble(slot, error=exc)] + self.stop_followers(slot)
        return left

    @staticmethod
    def open_slot(slot: Slot, run: Run) -> None:
        """Open one sink with the run, unless it is open already."""
        if not slot.opened:
            slot.opened = True
            opener = getattr(slot.sink, "open", None)
            if callable(opener):
                opener(run)

    def route(self, kind: str) -> tuple[tuple[Callable[[dict[str, Any]], Any], ...],
                                        tuple[Slot, ...]]:
        """The write methods of the sinks taking ``kind``, and those sinks."""
        tables = self.tables
        return tables.writes[kind], tables.owners[kind]

    def wants(self, kind: str) -> bool:
        """Whether any sink takes records of ``kind``."""
        return bool(self.tables.writes.get(kind))

    def _rebuild(self) -> None:
        # A new object, so a reference taken before a sink failed stays as it was.
        tables = _Tables()
        for kind in _ALL_KINDS:
            owners = tuple(s for s in self.slots if s.kinds is None or kind in s.kinds)
            tables.owners[kind] = owners
            tables.writes[kind] = tuple(s.write for s in owners)
        tables.lines, tables.finite_owners, tables.finite_writes = \
            _fast_route(tables.owners["batch_end"])
        tables.begin_lines, tables.begin_finite_owners, tables.begin_finite_writes = \
            _fast_route(tables.owners["batch_begin"])
        tables.line_slots = tuple(s for s in self.slots if s.buffer is not None and (
            s.kinds is None or "batch_end" in s.kinds or "batch_begin" in s.kinds))
        tables.holds = frozenset(kind for kind in BATCH_KINDS
                                 if all(s.buffer is not None for s in tables.owners[kind]))
        self.tables = tables
        self.on_change()

    # --- writing -------------------------------------------------------------------------------

    def stamp(self, item: Record, *, source: str = "", cause: Any = None,
              epoch: int | None = None) -> Record:
        """``item`` with the envelope (and ``source``, ``cause_seq``, ``epoch`` if unset)."""
        self.seq += 1
        update: dict[str, Any] = {"v": SCHEMA_VERSION, "run_id": self.run_id, "seq": self.seq,
                                  "time": _time()}
        if isinstance(item, (Decision, Outcome)):
            if not item.source and source:
                update["source"] = source
            if item.cause_seq is None and cause is not None:
                update["cause_seq"] = cause.seq
            if item.epoch is None:
                of_cause = getattr(cause, "epoch", None) if cause is not None else None
                update["epoch"] = of_cause if of_cause is not None else epoch
        return item.model_copy(update=update)

    def write(self, record: dict[str, Any]) -> list[Trouble] | None:
        """Give ``record`` to every sink taking its kind; returns what is left to do. While
        records are held, a batch record only line buffers take joins them; any other is
        written after them (:meth:`release`)."""
        kind = record["kind"]
        left = None
        if self.held:
            if kind in self.tables.holds:
                self.held.append(record)
                return None
            left = self.release()
        writes = self.tables.writes.get(kind)
        if writes is None:  # not a kind of this schema: every sink reports it
            writes, owners = tuple(s.write for s in self.slots), tuple(self.slots)
        else:
            owners = self.tables.owners[kind]
        out = self.fan_out(record, writes, owners, 0)  # (an interrupt: see fan_out)
        return out if left is None else left + (out or [])

    def forget_unflushed(self) -> None:
        """An interrupt cut the bus's work on a record (its way to the sinks, or the
        decisions of its event): the logs are left as a kill at this moment leaves them, at
        their last flush (every epoch end and decision). A resume goes on from there and makes
        what was cut again, where a log holding part of it would vouch for work never done."""
        self.held.clear()
        for slot in self.slots:
            slot.call("forget_unflushed")

    # --- batch records held for their tensors ---------------------------------------------------
    #
    # A batch record whose logs hold tensors (``metrics.PendingLogs``: a batch_end's, an
    # evaluation or prediction batch's) waits in ``held``, unwritten, when only line buffers
    # (JSON Lines) take its kind: so no tensor is read per batch.
    # The held records are written, their tensors read together first (one host copy), before
    # any other record, at every flush and sync, and when the bus says so (every so many batches,
    # a sink added or removed, close). A line buffer is written to its file only at those points
    # anyway, so a crash loses no more than it would have.

    def hold(self, record: dict[str, Any]) -> None:
        """Keep a batch record (a kind in ``tables.holds``) to write at :meth:`release`."""
        self.held.append(record)

    def release(self) -> list[Trouble] | None:
        """Read the held records' tensors (all at once) and write the records, in order."""
        held, self.held = self.held, []
        read_pending([r["logs"] for r in held if type(r["logs"]) is PendingLogs])
        left: list[Trouble] | None = None
        for record in held:
            logs = record["logs"]
            if type(logs) is PendingLogs:
                record["logs"] = logs.logs  # the plugins' events see the same floats
            kind = record["kind"]
            out = self.fan_out(record, self.tables.writes[kind], self.tables.owners[kind], 0)
            if out:
                left = out if left is None else left + out
        return left

    def write_to(self, slot: Slot, record: dict[str, Any]) -> list[Trouble] | None:
        """Write ``record`` to one sink (a log a resume catches up); a sink that fails is taken
        out and closed, and what that left returned (see :meth:`drop`)."""
        try:
            slot.write(record)
        except Exception as exc:
            return self.drop(slot, exc)
        return None

    def drop(self, slot: Slot, error: BaseException) -> list[Trouble]:
        """Take out and close a sink that failed outside the fan-out; returns its failure, and
        those of the followers that stops (:meth:`stop_followers`)."""
        self.detach(slot.sink)
        with contextlib.suppress(Exception):
            slot.call("close")
        return [Trouble(slot, error=error), *self.stop_followers(slot)]

    def stop_followers(self, slot: Slot) -> list[Trouble]:
        """``slot`` was taken out: if it is an event log, every sink that ``follows_logs``
        forgets what it has not sent and is taken out too (closed: what it sent stays sent).
        What it would send next the log lacks, and a resume numbers its own records over the
        log's last one: the collector would hold two records under one seq, and MLflow an
        epoch the resumed run refuses to go on from. A resume sends them the rest, from the
        log. Their failures are returned, to say why they stopped."""
        if not is_event_log(slot):
            return []
        stopped: list[Trouble] = []
        for follower in [s for s in self.slots if _follows(s)]:
            self.detach(follower.sink)
            with contextlib.suppress(Exception):
                follower.call("forget_unflushed")
            with contextlib.suppress(Exception):
                follower.call("close")
            stopped.append(Trouble(follower, error=DeliveryError(
                f"{follower.name}: sends nothing more for this run: the event log "
                f"{slot.name!r} was taken out, and this sink is never ahead of a log a resume "
                "reads; a resume sends the rest from the log")))
        return stopped

    def fan_out(self, record: dict[str, Any], writes: tuple[Any, ...],
                owners: tuple[Slot, ...], start: int, first: Any = None) -> list[Trouble] | None:
        """Write ``record`` with ``writes[start:]`` (made by ``owners``), going on past a sink
        that fails; returns the failures and results, None when there are none. ``first``: what
        ``writes[start]`` gave (its result, or the exception it raised) when the caller made
        that call itself (the batch path's inlined loop): it is not made again."""
        left: list[Trouble] | None = None
        try:
            for i in range(start, len(writes)):
                if i == start and first is not None:
                    out = first
                else:
                    try:
                        out = writes[i](record)
                    except Exception as exc:
                        out = exc
                if out is not None:
                    if left is None:
                        left = []
                    left.append(Trouble(owners[i], error=out) if isinstance(out, Exception)
                                else Trouble(owners[i], out=out))
        except BaseException:  # it goes on past an Exception: an interrupt, Ctrl-C
            # The record reached some sinks and not others (a save the log would hold and the
            # checkpoint writer never finished), or a writer holds half of it (a Parquet row
            # the next record would join): the logs are left as a kill now leaves them.
            self.forget_unflushed()
            raise
        for trouble in left or ():
            if trouble.error is not None:
                self.detach(trouble.slot.sink)
                with contextlib.suppress(Exception):  # keep what it holds
                    trouble.slot.call("close")
        if left is not None:  # then a failed log's followers, which had this record too
            for trouble in list(left):
                if trouble.error is not None:
                    left.extend(self.stop_followers(trouble.slot))
        return left

    def flush_full(self) -> list[Trouble] | None:
        """Flush the line buffers that have reached their size (the batch paths ask every 64
        seqs: nothing else looks at their size)."""
        full = [s for s in self.tables.line_slots if s.buffer is not None
                and len(s.buffer) >= s.limit]
        return self.call(full, "flush") if full else None

    def call(self, slots: Collection[Slot], method: str) -> list[Trouble] | None:
        """Call ``method`` (flush, sync) of each of ``slots``, the logs first; one that raises
        is taken out. A sink that ``follows_logs`` (MLflow, the HTTP record sink: a resume
        never writes again what they hold, or numbers its own records over it) comes after
        the logs, whatever its place in ``log=[...]``; while a log holds records it could not
        write (a full disk: it keeps them for its next flush), it is not flushed: it is never
        ahead of a log. A log that fails stops them for the run (:meth:`stop_followers`)."""
        left: list[Trouble] | None = self.release() if self.held else None
        logs_behind = False
        for slot in _logs_first(slots):
            if logs_behind and getattr(slot.sink, "follows_logs", False):
                continue
            try:
                slot.call(method)
            except Exception as exc:
                left = (left or []) + self.drop(slot, exc)
                logs_behind = logs_behind or is_event_log(slot)  # (its followers are out)
                continue
            if slot.kinds is None and getattr(slot.sink, "behind", False):
                logs_behind = True
        return left

    def flush(self) -> list[Trouble] | None:
        return self.call(self.slots, "flush")

    def sync(self) -> list[Trouble] | None:
        return self.call(self.slots, "sync")

    def closing_order(self) -> list[Slot]:
        """The sinks in the order they close: those taking some kinds first, the logs (every
        record) last, so the logs hold what the others report as they close; a sink taking
        every record that ``follows_logs`` (the HTTP record sink) after the logs, so it sends
        only what they have written."""
        return [s for s in self.slots if s.kinds is not None] + \
            [s for s in self.slots if s.kinds is None and not _follows(s)] + \
            [s for s in self.slots if s.kinds is None and _follows(s)]

    # --- the queue behind report() ---------------------------------------------------------------

    def report(self, outcome: Outcome) -> None:
        """Queue an outcome (from any thread: a deque's append is atomic)."""
        self.pending.append(outcome)

    def take_pending(self) -> list[Outcome]:
        taken: list[Outcome] = []
        while self.pending:
            taken.append(self.pending.popleft())
        return taken


def _follows(slot: Slot) -> bool:
    return bool(getattr(slot.sink, "follows_logs", False))


def is_event_log(slot: Slot) -> bool:
    """Whether ``slot`` writes an event log a resume may read (a JSON Lines or Parquet log,
    given by its path or as a writer), rather than a sink that only takes every record."""
    return slot.kinds is None and not _follows(slot) and log_path(slot.sink) is not None


def _logs_first(slots: Collection[Slot]) -> list[Slot]:
    """``slots`` in the order they flush: the logs, then the sinks taking every record that
    follow them, then the sinks taking some kinds."""
    return [s for s in slots if s.kinds is None and not _follows(s)] + \
        [s for s in slots if s.kinds is None and _follows(s)] + \
        [s for s in slots if s.kinds is not None]


def make_header(run_id: str, plugins: Iterable[tuple[object, str]], meta: Mapping[str, Any], *,
                learning_rate: float | None, model: Any,
                extra: Mapping[str, Any] | None = None) -> Header:
    """The header record a run's log starts with: every plugin (with the label its records
    carry) and its parameters, the run's meta, the learning rate and the model's config."""
    specs: list[PluginSpec] = []
    for plugin, label in plugins:
        spec = plugin_spec(plugin)
        if label != spec.name:
            spec = spec.model_copy(update={"label": label})
        specs.append(spec)
    meta = dict(meta)
    # The header's learning_rate is the run's (resume and replay start from it), never a
    # meta value of the same name.
    meta.pop("learning_rate", None)
    if learning_rate is not None:
        meta["learning_rate"] = learning_rate
    if model is not None and callable(getattr(model, "get_config", None)):
        try:
            meta.setdefault("model", model.get_config())
        except Exception as exc:  # the header must not fail a run over a model's config
            meta.setdefault("model_config_error", f"{type(exc).__name__}: {exc}")
    meta.update(extra or {})
    return Header(run_id=run_id, seq=0, time=_time(),
                  created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  library=f"eventbus {__version__}", plugins=specs, meta=meta)
