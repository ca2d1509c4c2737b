"""The bus: events in, decisions out, every record to the sinks.

A facade over its parts (``docs/design.md`` draws them), each a module with one job:
:mod:`~eventbus.dispatch` (the plugins, a call table per hook in list order, the one call
loop), :mod:`~eventbus.policy` (what a failure becomes), :mod:`~eventbus.control` (stop flag,
learning rate, kept weights, applying decisions), :mod:`~eventbus.cursor` (where the run is),
:mod:`~eventbus.recorder` (envelope, header, fan-out to the sinks, ``report()``),
:mod:`~eventbus.engine` (one event through the parts: recorded, dispatched, what plugins return
taken in), :mod:`~eventbus.resume` and :mod:`~eventbus.coordination` (processes agreeing).

The bus checks the loop's values and hands each event to the engine; ``batch_end``, the
hottest path, does the engine's work inline. What it tells about the run as it stands (the stop
flag, the learning rate, the position) is :mod:`~eventbus.bus_state`'s.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from . import terminal
from .bus_state import BusState
from .control import Control, ReplayControl
from .coordination import Coordinator
from .cursor import Cursor
from .dispatch import Dispatcher
from .engine import Engine, RunWarning, checked, refuse_oversized_meta
from .errors import ConfigError, EventError
from .events import Event, observation_of_kind
from .keras_names import KerasCallbackListNames
from .metrics import plain_meta, plain_params, to_index
from .plugin import Plugin
from .policy import FailurePolicy, PluginIsolatedWarning, SinkFailureWarning
from .recorder import Recorder, make_header
from .records import (
    Decision,
    Header,
    Observation,
    Outcome,
    Record,
    SinkFailed,
)
from .resume import check_at_most, refuse_a_resume_beside_the_run, resume_source_of
from .resume import resume as resume_run
from .shadow import Shadow
from .sink import Sink
from .termination import TerminationGuard

__all__ = ["Bus", "PluginIsolatedWarning", "RunWarning", "SinkFailureWarning"]


class Bus(BusState, KerasCallbackListNames):
    """Publish training events to plugins; record events and decisions; apply decisions.

    Parameters
    ----------
    plugins:
        Plugin objects, called in this order for every hook (Keras's list order). A plugin
        that is a :class:`~eventbus.Sink` is also written to as one.
    log:
        Where to record: a path (``.jsonl``, or ``.parquet`` for a Parquet segment directory), a
        sink, or a list of them. ``None`` keeps nothing on disk. A sink that is a plugin (a
        ``CSVLogger``, a ``TensorBoard``) is registered after ``plugins``, as if listed last.
    model:
        A model adapter (see :mod:`eventbus.model`); decisions about the learning rate and
        weights are applied to it.
    learning_rate:
        The initial learning rate when there is no model adapter that has one.
    on_plugin_error:
        ``"raise"``: a plugin that raises is recorded as ``plugin_failed`` and a
        :class:`PluginError` propagates. ``"isolate"``: the plugin is recorded, disabled and
        training goes on. Plugins with ``side_effects`` (sinks) are always isolated.
    run_id:
        The run's id in every record; a random one by default.
    meta:
        Extra facts about the run for the log header (plain data).
    resume:
        Continue the run recorded in ``log`` (its first JSON Lines file, else its first Parquet
        log) if there is one: see :mod:`eventbus.resume`. With no log yet, the run simply starts.
    resume_at_most:
        With ``resume``: go on after that finished epoch (0-based) at the latest, the later
        ones run again as a partial epoch is: for a framework whose newest checkpoint is older
        than the log (killed while it wrote the checkpoint of the epoch the log has ended).
    coordinator:
        Where this bus is one process of several that agree (:mod:`eventbus.coordination`).
    shadow:
        Plugins that decide on the run's events without acting: their decisions are recorded
        as ``shadow_decision`` outcomes and never applied (:mod:`eventbus.shadow`).
    """

    def __init__(
        self,
        plugins: Sequence[object] = (),
        *,
        log: str | os.PathLike[str] | Sink | Sequence[Any] | None = None,
        model: Any = None,
        learning_rate: float | None = None,
        on_plugin_error: Literal["raise", "isolate"] = "raise",
        run_id: str | None = None,
        meta: Mapping[str, Any] | None = None,
        resume: bool = False,
        resume_at_most: int | None = None,
        coordinator: Coordinator | None = None,
        shadow: Sequence[object] | None = None,
    ):
        if not isinstance(resume, bool):
            raise ConfigError(f"Bus: resume must be True or False; got {resume!r}",
                              field="resume")
        check_at_most(resume_at_most)
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise ConfigError(f"Bus: run_id must be a non-empty str; got {run_id!r}",
                              field="run_id")
        if isinstance(plugins, (str, bytes)) or not isinstance(plugins, Iterable):
            raise ConfigError(f"Bus: plugins must be a list of plugin objects; got "
                              f"{type(plugins).__name__} {plugins!r}", field="plugins")
        self._meta = plain_meta(meta)
        refuse_oversized_meta(self._meta)
        self._coordinator = coordinator
        self._cursor = Cursor()
        recorder = Recorder(run_id or uuid.uuid4().hex[:16])
        self._dispatch = Dispatcher()
        self._engine = engine = Engine(
            recorder=recorder, cursor=self._cursor, dispatcher=self._dispatch,
            header=self.header, control=Control(
                model, learning_rate,
                hold_stop=None if coordinator is None else coordinator.hold_stop))
        engine.clear_stop, engine.coordinator = self._clear_stop, coordinator
        # A shadow policy's bus sees the live events, not the live decisions: its rate is its own.
        engine.recompute = lambda plugins, rate: type(self).for_replay(
            plugins, run_id=recorder.run_id, learning_rate=rate, follow_log=False)
        self._policy = engine.policy = FailurePolicy(
            on_plugin_error, record=engine.record, disable=engine.disable, flush=engine.flush,
            label=self._dispatch.label)
        # The batch paths are the engine's own methods, bound on the bus itself (unless a
        # subclass has its own): a batch event costs no call more than the engine's.
        if type(self).batch_begin is Bus.batch_begin:
            self.batch_begin = engine.batch_begin  # type: ignore[method-assign]
        if type(self).batch_end is Bus.batch_end:
            self.batch_end = engine.batch_end  # type: ignore[method-assign]
        self._calls = self._dispatch.calls
        #: What plugins and sinks see of the run (:class:`eventbus.run.Run`).
        self.run = engine.run
        #: Sink and plugin faults seen so far (records, also in the log).
        self.failures = engine.failures
        targets = [os.fsdecode(log)] if isinstance(log, bytes) else \
            [log] if isinstance(log, (str, os.PathLike)) or not isinstance(log, Sequence) \
            else list(log)
        if resume and log is not None:
            refuse_a_resume_beside_the_run(targets)
        # A plugin given as a log (a CSVLogger, a TensorBoard) is registered after the plugins,
        # as ``add_sink`` registers one: it needs its label, and the header lists it.
        lent = [t for t in targets if isinstance(t, Plugin)] if log is not None else []
        try:
            for target in targets if log is not None else ():
                if not isinstance(target, Plugin):
                    recorder.attach_target(target, append=resume)
            for plugin in [*plugins, *lent]:
                self.register(plugin)
            if shadow is not None:
                self.register(Shadow(shadow))
            source = resume_source_of(self._calls["resume_from"], self.run,
                                      targets if resume and log is not None else ())
            if source is not None:
                self.resume(source, at_most=resume_at_most)
        except BaseException:
            # No bus to close: the logs it opened (and their locks) are let go here.
            for slot in list(recorder.slots):
                recorder.detach(slot.sink)
                with contextlib.suppress(Exception):
                    slot.call("close")
            raise

    @classmethod
    def for_replay(cls, plugins: Sequence[object] = (), *, run_id: str | None = None,
                   learning_rate: float | None = None, follow_log: bool = True) -> Bus:
        """A bus that recomputes a recorded run: it writes nothing (not even to a sink a
        plugin adds), has no model, shows no warning (it keeps the plugins' for the answer:
        ``held_warnings``); decisions change only its own stop flag and learning rate. Its
        rate starts at ``learning_rate`` and, with ``follow_log``, is the recorded run's where
        the records fed give it (see :class:`~eventbus.control.ReplayControl`)."""
        bus = cls(run_id=run_id)
        bus._engine.recorder.silent, bus._engine.held_warnings = True, []
        bus._engine.control = ReplayControl(learning_rate, follow_log=follow_log)
        bus._engine.register_all(plugins)  # a header may list thousands: tabled once
        return bus

    # --- plugins and sinks -----------------------------------------------------------------------

    def register(self, plugin: object) -> str:
        """Add a plugin after those already there; returns the label its records carry.

        The label is its registered name, with ``#2``, ``#3`` ... for a second or third plugin of
        the same name on this bus. A plugin that is a :class:`~eventbus.Sink` is written to as
        one from now on.
        """
        return self._engine.register(plugin)

    @property
    def plugins(self) -> list[object]:
        """The plugins on this bus, in call order (disabled ones included)."""
        return list(self._dispatch.plugins)

    @property
    def labels(self) -> list[str]:
        """The labels of the plugins, in call order."""
        return [self._dispatch.label(p) for p in self._dispatch.plugins]

    def label(self, plugin: object) -> str:
        """The name ``plugin``'s records carry on this bus."""
        return self._dispatch.label(plugin)

    def subscribes(self, kind: str, *, side_effects: bool = False) -> bool:
        """Whether :meth:`feed` would pass a record of ``kind`` to any plugin."""
        return self._dispatch.subscribes(kind, side_effects=side_effects)

    def subscribers(self, kind: str) -> list[object]:
        """Who gets a record of ``kind``: the plugins whose hook handles it, in call order,
        then the sinks that take it (a plugin that is both is listed once)."""
        return self._engine.subscribers(kind)

    def add_sink(self, sink: Any) -> None:
        """Record to ``sink`` from now on as well (a backup log, a stream to a collector).

        A sink that is a :class:`~eventbus.Plugin` (the checkpoint writer ModelCheckpoint adds)
        is registered as one, so the log header lists it as the run had it.
        """
        self._engine.add_sink(sink)

    def remove_sink(self, sink: Any) -> None:
        """Stop recording to ``sink`` and close it; what it returns as it closes is recorded."""
        self._engine.remove_sink(sink)

    add_writer = add_sink
    remove_writer = remove_sink

    # --- the loop's methods --------------------------------------------------------------------

    def train_begin(self, params: Mapping[str, Any] | None = None,
                    logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        """Training starts; ``params`` as Keras's ``callback.params`` (epochs, steps, ...).

        A new fit starts unstopped: ``stop_training`` is cleared, as Keras's ``fit`` clears
        ``model.stop_training``. On a resumed run whose log already has its ``train_begin``, the
        call is not published again (plugins keep the state just restored, and a recorded stop
        stands); the log's ``resumed`` record stands for it.
        """
        if threading.get_ident() != self._engine.thread:
            self._engine.claim("train_begin")  # before the fit begins: is one under way?
        if not self._cursor.train_begin():
            return ()
        self._clear_stop()
        return self._engine.observe("train_begin", {"params": plain_params(params)}, logs)

    def train_end(self, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        """Training ended. After resuming a finished run with no new epoch, nothing is published."""
        if not self._cursor.train_end():
            return ()
        decisions = self._engine.observe("train_end", {}, logs)
        self._cursor.trained()
        return decisions

    def epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        epoch = to_index(epoch, "epoch", "epoch_begin")
        self._cursor.check_epoch_begin(epoch)
        self._cursor.epoch_begin(epoch)
        return self._engine.observe("epoch_begin", {"epoch": epoch}, logs)

    def epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        epoch = to_index(epoch, "epoch", "epoch_end")
        self._cursor.check_epoch_end(epoch)
        coordinator = self._coordinator
        if coordinator is not None:
            logs = coordinator.epoch_logs(epoch, logs)
        seq = self._engine.recorder.seq
        try:
            decisions = self._engine.observe("epoch_end", {"epoch": epoch}, logs)
        finally:
            if self._engine.recorder.seq > seq:  # recorded, even if a plugin then raised
                self._cursor.epoch_ended(epoch)
        if coordinator is None:
            return decisions
        agreement = coordinator.agree(epoch, seq + 1)
        agreed = [self.decide(decision) for decision in agreement.decisions]
        if agreement.stop:
            self._engine.control.stop()
        return [*decisions, *agreed]

    def batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        """A training batch starts (``batch`` counts within the epoch). A hot path: the
        engine's own method is bound on the bus itself, so calling it costs no extra call."""
        return self._engine.batch_begin(batch, logs)

    def batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        """A training batch ended; ``logs`` has its metrics. The hottest path: bound on the
        bus itself, as ``batch_begin``."""
        return self._engine.batch_end(batch, logs)

    def test_begin(self, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self._engine.observe("test_begin", {"epoch": self._cursor.eval_epoch()}, logs)

    def test_end(self, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self._engine.observe("test_end", {"epoch": self._cursor.eval_epoch()}, logs)

    def test_batch_begin(self, batch: int,
                         logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self._engine.other_batch("test_batch_begin", batch, logs)

    def test_batch_end(self, batch: int,
                       logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self._engine.other_batch("test_batch_end", batch, logs)

    def predict_begin(self, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self._engine.observe("predict_begin", {}, logs)

    def predict_end(self, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self._engine.observe("predict_end", {}, logs)

    def predict_batch_begin(self, batch: int,
                            logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self._engine.other_batch("predict_batch_begin", batch, logs)

    def predict_batch_end(self, batch: int,
                          logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self._engine.other_batch("predict_batch_end", batch, logs)

    def publish(self, event: Observation | Event | str, /, **fields: Any) -> Sequence[Decision]:
        """Publish an observation record built by the caller (or an event a hook received), or
        one named by its kind with its fields (``bus.publish("epoch_end", epoch=0,
        logs={"loss": 0.3})``); returns the decisions it caused.

        The bus stamps the envelope (run id, seq, time). ``epoch`` and ``step`` of batch events
        are the bus's own counters unless the event sets them.
        """
        logs: Any = None
        if isinstance(event, str):
            # The logs go the way a method's do (coerced, NumPy scalars and tensors taken).
            logs = fields.pop("logs", None)
            event = observation_of_kind(event, fields)
        elif fields:
            raise EventError(f"publish: fields ({', '.join(sorted(fields))}) go with a kind "
                             "given as a string, not with an event object",
                             event=getattr(event, "kind", None))
        if not isinstance(event, (Event, Observation)):
            raise EventError(f"publish: expected an observation record (TrainBegin, EpochEnd, "
                             f"...); got {type(event).__name__}",
                             event=getattr(event, "kind", None))
        if logs is None:
            logs = event.logs
        kind, given, fields = event.kind, event.model_fields_set, event.__dict__
        if kind in ("train_begin", "train_end", "epoch_begin", "epoch_end"):
            method = getattr(self, kind)
            return method(fields["params"], logs) if kind == "train_begin" else \
                method(logs) if kind == "train_end" else method(fields["epoch"], logs)
        if kind in ("batch_begin", "batch_end"):
            # Checked before they are kept: every later record carries them.
            cursor = self._cursor
            step = to_index(fields["step"], "step", kind) if "step" in given else cursor.step
            epoch = fields["epoch"] if "epoch" in given else cursor.epoch
            cursor.step, cursor.epoch = step, (None if epoch is None
                                               else to_index(epoch, "epoch", kind))
            return getattr(self, kind)(fields["batch"], logs)  # type: ignore[no-any-return]
        own = {name: fields[name] for name in ("epoch", "batch") if name in fields}
        if "epoch" in own and "epoch" not in given:
            own["epoch"] = self._cursor.eval_epoch()
        return self._engine.observe(kind, own, logs)

    # --- recorded events fed again -------------------------------------------------------------

    def feed(self, record: Record, *, side_effects: bool = False) -> Sequence[Decision]:
        """Dispatch a recorded record as it was (same seq, time and logs); returns decisions.

        Replay and resume use this. Nothing is written to the bus's sinks. By default only pure
        plugins see the record; ``side_effects=True`` includes the hooks of plugins with side
        effects and passes recorded decisions to the ``on_decision`` hooks. While recomputing
        (replay, resume) the learning rate in epoch logs is the recorded run's while the
        recomputed decisions agree with the recorded ones (the rate the live plugins saw), a
        what-if's own once they differ (see :class:`~eventbus.control.ReplayControl`).
        """
        return self._engine.feed(record, side_effects=side_effects)

    def write_recorded(self, record: Record) -> None:
        """Write a recorded record to the sinks as it was (same seq, time and fields), with no
        plugin called: a log written again into another destination (``eventbus convert``).
        The run's position follows the records, as sinks read it (``run.step``); the records
        written this way hold their own header, so the bus writes none."""
        self._engine.write_recorded(record)

    def recomputing(self, learning_rate: float | None = None) -> Any:
        """A context feeding recorded events with no side effect: ``as`` gives its control, with
        no model (a ReplayControl from ``learning_rate``); the recorder writes nothing."""
        return self._engine.recomputing(learning_rate)

    def resume(self, log: str | os.PathLike[str], *, at_most: int | None = None) -> bool:
        """Continue the run recorded in ``log``: restore every plugin's state and the control
        state (see :mod:`eventbus.resume`). Returns False when ``log`` holds no record.
        ``at_most``: go on after that finished epoch at the latest (0-based; -1: from the
        fit's start), the later ones abandoned as a partial epoch is."""
        return resume_run(self, log, at_most=at_most)

    # --- outside inputs ------------------------------------------------------------------------

    def decide(self, decision: Decision, *, flush: bool = True) -> Decision:
        """Record and apply a decision made outside the plugins (a coordinator, a person).

        As for a plugin's decision: stamped, applied, recorded, passed to the sinks and the
        ``on_decision`` hooks, and the log flushed. ``source`` defaults to ``"bus"``. Returns
        the recorded decision.
        """
        if not isinstance(decision, Decision):
            raise EventError(f"decide: expected a decision record; got {type(decision).__name__}")
        if threading.get_ident() != self._engine.thread:
            self._engine.claim("decide()")
        stamped = self._engine.decide(checked(decision, "bus", "decide"),  # type: ignore[arg-type]
                                      source="bus")
        if flush:
            self._engine.flush()
        return stamped

    def record(self, outcome: Outcome, *, flush: bool = True) -> Outcome:
        """Record an outcome now and flush (on the bus's thread; from others, :meth:`report`)."""
        if not isinstance(outcome, Outcome):
            raise EventError(f"record: expected an outcome record; got {type(outcome).__name__}")
        if threading.get_ident() != self._engine.thread:
            self._engine.claim("record()")
        stamped = self._engine.record(checked(outcome, "bus", "record"), source="bus")
        if flush:
            self._engine.flush()
        return stamped  # type: ignore[return-value]

    def report(self, record: Outcome) -> None:
        """Queue an outcome from another thread (a background sink); recorded at the next event.

        Safe to call from any thread: the bus itself is single-threaded and drains the queue on
        its own thread.
        """
        if not isinstance(record, Outcome):
            raise EventError(f"report: expected an outcome record; got {type(record).__name__}")
        self._engine.report(record)

    def restore_kept(self, tag: str, *, source: str) -> None:
        """Put the weights kept under ``tag`` back into the model, as a ``restore_weights``
        decision does (a failure is the model's ``sink_failed``, never a crash), recorded as
        ``weights_restored`` from ``source``. Asked by a sink while a record is written (a
        backup restoring after a resume), it is done once every sink has that record: a
        resume's restore is an effect of resuming, not a decision replay would recompute."""
        self._engine.restore(tag, source=source)

    # --- the header, flushing, closing ---------------------------------------------------------

    def header(self) -> Header:
        """The header record this run's log starts with."""
        return make_header(self.run_id, [(p, self.label(p)) for p in self._dispatch.plugins],
                           self._meta, learning_rate=self.learning_rate, model=self.model,
                           extra=None if self._coordinator is None
                           else self._coordinator.header_meta())

    def flush(self) -> None:
        """Hand what the sinks buffer to their files (the bus does so at every epoch end and
        decision)."""
        self._engine.flush()

    def close(self) -> None:
        """Let plugins flush (``on_close``), then close the sinks, the logs last. Idempotent.

        Sink failures seen during the run are reported here as one :class:`SinkFailureWarning`.
        In a child process forked from the one that runs the bus it does nothing: the sinks,
        their buffers and their locks are the parent's.
        """
        if self._engine.finished or self._engine.forked:
            return
        try:
            self._engine.close()
        except BaseException as exc:
            if isinstance(exc, Exception) or self._engine.finished:
                raise
            self._engine.close()  # an interrupt cut the closing: once more, then it goes on
            raise
        sink_failures = [f for f in self.failures if isinstance(f, SinkFailed)]
        if sink_failures:
            lines = "; ".join(f"{f.sink} on {f.event}: {f.error}: {f.message}"
                              for f in sink_failures[:5])
            more = f" (and {len(sink_failures) - 5} more)" if len(sink_failures) > 5 else ""
            terminal.warn(f"{len(sink_failures)} sink failure(s) during the run: {lines}{more}",
                          SinkFailureWarning)

    def __enter__(self) -> Bus:
        # SIGTERM in the block closes the bus as Ctrl-C would, then ends the process by it.
        self._termination = TerminationGuard()
        self._termination.enter()
        return self

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        guard, self._termination = getattr(self, "_termination", None), None
        with guard.closing(error) if guard is not None else contextlib.nullcontext():
            self._engine.loop_raised(error)
            self.close()
