"""The bus: events in, decisions out, every record to the log.

For each observation the bus (1) checks and copies the loop's values into a record, (2) appends it
to every log writer, (3) calls, in the order the plugins were given, each plugin that implements
the event's hook, and (4) for every decision a plugin returns: records it, applies it (control
state, model adapter) and passes it to the ``on_decision`` hooks, recording what they return.

pluggy registers and validates plugins; calls do not go through pluggy's hook caller but through
a tuple of bound methods per hook, rebuilt whenever the plugins change. That keeps a batch event
that one or two plugins care about at a few microseconds, and a hook nobody implements at nearly
nothing.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import uuid
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from time import time as _time
from typing import Any, Literal

import orjson
import pluggy

from . import hookspecs
from ._markers import PROJECT_NAME
from ._version import __version__
from .errors import AbortTraining, ConfigError, EventError, LogError, PluginError
from .log import RecordWriter, open_writer
from .metrics import coerce_logs
from .model import adapter_learning_rate
from .plugin import plugin_name, plugin_spec, why_not_a_plugin
from .records import (
    BATCH_KINDS,
    KINDS,
    SCHEMA_VERSION,
    BatchBegin,
    BatchEnd,
    Decision,
    Header,
    Observation,
    Outcome,
    PluginFailed,
    PluginSpec,
    Record,
    RestoreWeights,
    Resumed,
    SetLearningRate,
    SinkFailed,
    SnapshotWeights,
    StopTraining,
    WeightsRestored,
    set_model_dict,
)
from .records import (
    TRUSTED as _TRUSTED,
)
from .records import Warning as WarningRecord

__all__ = ["Bus", "PluginIsolatedWarning", "RunWarning", "SinkFailureWarning"]

_EVENT_HOOKS = tuple(f"on_{kind}" for kind, cls in KINDS.items() if cls.category == "observation")
_HOOKS = (*_EVENT_HOOKS, "on_decision", "augment_epoch_logs", "on_close", "on_attach",
          "resume_from")
_new = object.__new__
_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE
_TRUSTED_BATCH_END = _TRUSTED[BatchEnd]


class SinkFailureWarning(UserWarning):
    """A sink failed during the run; training went on and the failure is in the log."""


class PluginIsolatedWarning(UserWarning):
    """A plugin raised and was disabled (``on_plugin_error="isolate"``)."""


class RunWarning(UserWarning):
    """A ``warning`` record the bus or a plugin wrote to the log, shown as it is recorded (a
    resume whose plugins decide differently, a monitored metric missing, ...)."""


#: The largest epoch, batch or step a log stores (a signed 64-bit integer).
_MAX_INDEX = (1 << 63) - 1


def _index(value: Any, field: str, kind: str) -> int:
    """An epoch or batch index as a plain int (numpy integers and 0-d tensors included), 0 or
    more and within 64 bits."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise EventError(f"{kind}: {field} must be an int; got {type(value).__name__} {value!r}",
                         event=kind, field=field)
    try:
        index = value.__index__()
    except Exception as exc:
        raise EventError(f"{kind}: {field}: {type(value).__name__}.__index__() failed: {exc}",
                         event=kind, field=field) from exc
    if not 0 <= index <= _MAX_INDEX:
        raise EventError(f"{kind}: {field} must be 0 or more and fit in 64 bits; got {index}",
                         event=kind, field=field)
    return index


def _learning_rate(value: Any, field: str) -> float:
    """A learning rate given to the bus: a finite number, 0 or more."""
    try:
        rate = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"Bus: {field} must be a number; got {type(value).__name__} "
                          f"{value!r}", field=field) from None
    if not 0.0 <= rate < float("inf"):
        raise ConfigError(f"Bus: {field} must be a finite number, 0 or more; got {rate}",
                          field=field)
    return rate


class Bus:
    """Publish training events to plugins; record events and decisions; apply decisions.

    Parameters
    ----------
    plugins:
        Plugin objects, called in this order for every hook (Keras's list order).
    log:
        Where to record: a path (``.jsonl``, or ``.parquet`` for a Parquet segment directory), a
        writer object, or a list of them. ``None`` keeps nothing on disk.
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
        log) if there is one: see :meth:`resume`. With no log yet, the run simply starts.

    Subclasses (the distributed bus) may override ``_apply(decision)``, calling the base, to see
    every decision as it is applied, and may make ``stop_training`` a property.
    """

    def __init__(
        self,
        plugins: Sequence[object] = (),
        *,
        log: str | os.PathLike[str] | RecordWriter | Sequence[Any] | None = None,
        model: Any = None,
        learning_rate: float | None = None,
        on_plugin_error: Literal["raise", "isolate"] = "raise",
        run_id: str | None = None,
        meta: Mapping[str, Any] | None = None,
        resume: bool = False,
    ):
        if on_plugin_error not in ("raise", "isolate"):
            raise ConfigError(f"Bus: on_plugin_error must be 'raise' or 'isolate'; got "
                              f"{on_plugin_error!r}", field="on_plugin_error")
        if not isinstance(resume, bool):
            raise ConfigError(f"Bus: resume must be True or False; got {resume!r}",
                              field="resume")
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise ConfigError(f"Bus: run_id must be a non-empty str; got {run_id!r}",
                              field="run_id")
        if isinstance(plugins, (str, bytes)) or not isinstance(plugins, Iterable):
            raise ConfigError(f"Bus: plugins must be a list of plugin objects; got "
                              f"{type(plugins).__name__} {plugins!r}", field="plugins")
        self.run_id = run_id or uuid.uuid4().hex[:16]
        self.model = model
        self.on_plugin_error = on_plugin_error
        self.stop_training = False
        #: The epoch a loop should start from; above 0 only for a resumed run.
        self.initial_epoch = 0
        self._resumed = False
        self._ended: int | None = None  # the epoch of the last epoch_end, until an epoch_begin
        self._lr = None if learning_rate is None else _learning_rate(learning_rate,
                                                                      "learning_rate")
        self._meta = _meta(meta)
        self._seq = 0
        self._epoch: int | None = None
        self._step = 0
        self._in_train = False
        self._closed = False
        self._header_written = False
        self._snapshots: dict[str, dict[str, Any]] = {}
        self._pending: deque[Record] = deque()
        # True while the header is unwritten or outcomes wait in _pending: one check per event.
        self._attention = True
        self._replaying = False
        #: Sink and plugin faults seen so far (records, also in the log).
        self.failures: list[Record] = []

        self._skip_train_begin = False
        self._skip_train_end = False
        self._feeding = False
        targets = _as_list(log)
        resume_path = _resume_source(targets) if resume else None
        # Writers whose file already holds this run's records (and so its header).
        self._continued: set[int] = set()
        self._set_writers([self._writer(w, append=resume) for w in targets])
        self._pm = pluggy.PluginManager(PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._plugins: list[object] = []
        self._pure: dict[str, tuple[Any, ...]] = {}
        self._labels: dict[int, str] = {}
        self._disabled: set[int] = set()
        self._resolve()
        for plugin in plugins:
            self.register(plugin)
        # Plugins that keep a backup (BackupAndRestore) are always asked, so they can attach
        # their writers; the bus's own log, when it has records, is the more complete source.
        for fn, _ in self._h_resume_from:  # type: ignore[attr-defined]
            found = fn(bus=self)
            if found is not None and not _has_records(resume_path) and _has_records(found):
                resume_path = os.fspath(found)
        if _has_records(resume_path):
            self.resume(resume_path)  # type: ignore[arg-type]

    # --- plugins -------------------------------------------------------------------------------

    def register(self, plugin: object) -> str:
        """Add a plugin after those already there; returns the label its records carry.

        The label is its registered name, with ``#2``, ``#3`` ... for a second or third plugin of
        the same name on this bus.
        """
        problem = why_not_a_plugin(plugin)
        if problem:
            raise ConfigError(f"Bus: a plugin given is {problem}", field="plugins",
                              plugin=plugin.__name__ if isinstance(plugin, type) else None)
        if any(p is plugin for p in self._plugins):
            raise ConfigError(f"plugin {plugin_name(plugin)!r} is already on this bus",
                              plugin=plugin_name(plugin))
        name = plugin_name(plugin)
        taken = set(self._labels.values())
        label, n = name, 1
        while label in taken:
            n += 1
            label = f"{name}#{n}"
        try:
            self._pm.register(plugin, name=f"{label}@{id(plugin)}")
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self._pm.unregister(plugin)
            raise ConfigError(f"plugin {label!r}: {exc}", plugin=label) from exc
        for hook in _HOOKS:
            for impl in getattr(self._pm.hook, hook).get_hookimpls():
                if impl.plugin is plugin and (impl.hookwrapper or impl.wrapper):
                    self._pm.unregister(plugin)
                    raise ConfigError(f"plugin {label!r}: {hook} is a hook wrapper; the bus "
                                      "calls plugins in list order and has no wrappers",
                                      plugin=label)
        self._plugins.append(plugin)
        self._labels[id(plugin)] = label
        self._resolve()
        if self._header_written:
            self._record(WarningRecord(
                source="bus", message=f"plugin {label!r} was registered after the run started; "
                "the log header does not list it, so replay cannot rebuild it from the log",
                details={"plugin": label}))
        for fn, owner in self._h_on_attach:  # type: ignore[attr-defined]
            if owner is plugin:
                fn(bus=self)
        return label

    @property
    def plugins(self) -> list[object]:
        """The plugins on this bus, in call order (disabled ones included)."""
        return list(self._plugins)

    def label(self, plugin: object) -> str:
        """The name ``plugin``'s records carry on this bus."""
        return self._labels[id(plugin)]

    def _resolve(self) -> None:
        """Rebuild the per-hook call tuples: active plugins, in the order given."""
        order = {id(p): i for i, p in enumerate(self._plugins) if id(p) not in self._disabled}
        self._owner: dict[int, object] = {}
        for hook in _HOOKS:
            impls = [impl for impl in getattr(self._pm.hook, hook).get_hookimpls()
                     if id(impl.plugin) in order]
            impls.sort(key=lambda impl: order[id(impl.plugin)])
            handlers = tuple((_adapt(impl, hook), impl.plugin) for impl in impls)
            setattr(self, f"_h_{hook}", handlers)
            for fn, plugin in handlers:
                self._owner[id(fn)] = plugin
            if hook in _EVENT_HOOKS:
                # Observation hooks are called through bare function tuples (the hot path);
                # replay and resume feed recorded events to pure plugins only.
                setattr(self, f"_f_{hook}", tuple(fn for fn, _ in handlers))
                self._pure[hook] = tuple(fn for fn, plugin in handlers
                                         if not getattr(plugin, "side_effects", False))
        self._refresh_fast_paths()

    def _set_writers(self, writers: list[RecordWriter]) -> None:
        """Every change to the writers goes through here, so the fast paths see it."""
        self._writers = writers
        self._refresh_fast_paths()

    def _refresh_fast_paths(self) -> None:
        # Bound write methods, called per record. For records the bus has seen hold only
        # finite floats: JSON Lines writers (those with ``append_line``) take the line the bus
        # encodes once for all of them; others' optional ``write_finite`` skips their own check.
        # Each tuple of writes has its tuple of owners, to name a writer that fails.
        self._write_owners = tuple(self._writers)
        self._writes = tuple(w.write for w in self._writers)
        self._line_writers = tuple(w for w in self._writers if hasattr(w, "append_line"))
        self._line_appends = tuple(w.append_line for w in self._line_writers)
        self._finite_owners = tuple(w for w in self._writers if not hasattr(w, "append_line"))
        self._finite_writes = tuple(getattr(w, "write_finite", w.write)
                                    for w in self._finite_owners)
        # A batch event nobody records or handles costs one attribute check (see batch_end).
        for kind in BATCH_KINDS:
            idle = not self._writers and not getattr(self, f"_f_on_{kind}", ())
            setattr(self, f"_idle_{kind}", idle)

    def _disable(self, plugin: object) -> None:
        self._disabled.add(id(plugin))
        self._resolve()

    # --- control state -------------------------------------------------------------------------

    @property
    def learning_rate(self) -> float | None:
        """The current learning rate: the model adapter's if it has one, else the bus's own."""
        if self.model is not None and not self._replaying:
            value = adapter_learning_rate(self.model)
            if value is not None:
                return value
        return self._lr

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self._lr = _learning_rate(value, "learning_rate")
        if self.model is not None and not self._replaying and hasattr(self.model, "learning_rate"):
            self.model.learning_rate = self._lr

    @property
    def snapshots(self) -> dict[str, dict[str, Any]]:
        """Weights kept by ``snapshot_weights`` decisions, by tag (copies, NumPy arrays).

        A backup plugin may save and restore this mapping so ``restore_weights`` still finds
        the weights of an epoch before a crash.
        """
        return self._snapshots

    @property
    def resumed(self) -> bool:
        """True once :meth:`resume` has restored a recorded run: the loop goes on from
        ``initial_epoch``, and sinks drop what a crashed attempt wrote past that point."""
        return self._resumed

    @property
    def epoch(self) -> int | None:
        """The epoch in progress (from the last ``epoch_begin``)."""
        return self._epoch

    @property
    def step(self) -> int:
        """Training batches finished so far, across epochs."""
        return self._step

    @property
    def seq(self) -> int:
        """The sequence number of the last record."""
        return self._seq

    # --- the loop's methods --------------------------------------------------------------------

    def train_begin(self, params: Mapping[str, Any] | None = None,
                    logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        """Training starts; ``params`` as Keras's ``callback.params`` (epochs, steps, ...).

        A new fit starts unstopped: ``stop_training`` is cleared, as Keras's ``fit`` clears
        ``model.stop_training``. On a resumed run whose log already has its ``train_begin``, the
        call is not published again (plugins keep the state just restored, and a recorded stop
        stands); the log's ``resumed`` record stands for it.
        """
        self._in_train = True
        self._ended = None
        if self._skip_train_begin:
            self._skip_train_begin = False
            return ()  # a resumed run: a stop it had recorded stands
        self.stop_training = False  # a new fit, as Keras's fit resets model.stop_training
        return self._observe("train_begin", {"params": _params(params)}, logs)

    def train_end(self, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        """Training ended. After resuming a finished run with no new epoch, nothing is published."""
        if self._skip_train_end:
            self._skip_train_end = False
            self._in_train = False
            return ()
        decisions = self._observe("train_end", {}, logs)
        self._in_train = False
        return decisions

    def epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        epoch = _index(epoch, "epoch", "epoch_begin")
        self._epoch = epoch
        self._ended = None
        self._skip_train_end = False  # a resumed finished run trained on: its end is new
        return self._observe("epoch_begin", {"epoch": epoch}, logs)

    def epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        epoch = _index(epoch, "epoch", "epoch_end")
        if epoch == self._ended:
            # Plugins count epochs by their ends: a second end would advance every patience
            # and cooldown (a learning rate cut twice for one epoch).
            raise EventError(f"epoch_end: epoch {epoch} has already ended; publish "
                             f"epoch_begin({epoch + 1}) before ending another epoch",
                             event="epoch_end", field="epoch")
        seq = self._seq
        try:
            return self._observe("epoch_end", {"epoch": epoch}, logs)
        finally:
            if self._seq > seq:  # recorded, even if a plugin then raised
                self._ended = epoch

    def batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        if self._idle_batch_begin:  # type: ignore[attr-defined]
            return ()  # nothing records, nobody listens: not even the logs are examined
        if type(batch) is not int or not 0 <= batch <= 0x7FFFFFFFFFFFFFFF:
            batch = _index(batch, "batch", "batch_begin")
        if self._attention:
            self._attend()
        clean = coerce_logs(logs, "batch_begin") if logs is not None else {}
        self._seq = seq = self._seq + 1
        # Keys in the model's field order, so the record prints as a validated one would.
        record = {"v": SCHEMA_VERSION, "run_id": self.run_id, "seq": seq, "kind": "batch_begin",
                  "time": _time(), "logs": clean,
                  "epoch": self._epoch, "batch": batch, "step": self._step}
        return self._emit(BatchBegin, record, self._f_on_batch_begin)  # type: ignore[attr-defined]

    def batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        # The hottest path of all: _emit's work, inlined, for the common case of a dict of
        # finite Python floats (see docs/performance.md for what each line costs).
        if self._idle_batch_end:  # type: ignore[attr-defined]
            self._step += 1
            return ()
        if type(batch) is not int or not 0 <= batch <= 0x7FFFFFFFFFFFFFFF:  # _MAX_INDEX
            batch = _index(batch, "batch", "batch_end")
        finite = True
        if type(logs) is dict:
            clean = logs.copy()
            for key, value in clean.items():
                # value - value is 0.0 for a finite float, NaN (true) for NaN and infinity
                if type(value) is not float or type(key) is not str or value - value:
                    clean = coerce_logs(logs, "batch_end")
                    finite = False  # may hold NaN or infinity: each writer checks
                    break
        elif logs is None:
            clean = {}
        else:  # another mapping, or not a mapping at all: coerce_logs says which
            clean = coerce_logs(logs, "batch_end")
            finite = False
        if self._attention:
            self._attend()
        self._seq = seq = self._seq + 1
        # In records.BATCH_FIELDS order, which write_finite may rely on.
        record = {"v": SCHEMA_VERSION, "run_id": self.run_id, "seq": seq, "kind": "batch_end",
                  "time": _time(), "logs": clean, "epoch": self._epoch, "batch": batch,
                  "step": self._step}
        self._step += 1
        writes = self._finite_writes if finite else self._writes
        if finite and self._line_appends:
            try:
                line = _dumps(record, option=_NEWLINE)  # one encoding for every JSON Lines log
            except Exception:  # e.g. an index beyond 64 bits: each writer reports it
                writes = self._writes
            else:
                for append in self._line_appends:
                    append(line)
                if not seq & 63:  # nothing else looks at these buffers' size
                    self._call_writers(self._line_writers, "flush_if_full", "flush")
        try:
            for write in writes:
                write(record)
        except Exception as exc:
            owners = self._finite_owners if writes is self._finite_writes else self._write_owners
            self._write_failed(record, write, writes, owners, exc)
        handlers = self._f_on_batch_end  # type: ignore[attr-defined]
        if not handlers:
            return ()
        event = _new(_TRUSTED_BATCH_END)  # the record as its pydantic model, not re-validated
        set_model_dict(event, record)
        decisions: list[Decision] | None = None
        for fn in handlers:
            try:
                out = fn(event)
            except Exception as exc:
                self._plugin_failed(self._owner[id(fn)], "batch_end", seq, exc)
                continue
            if out is not None:
                if decisions is None:
                    decisions = []
                self._accept(self._owner[id(fn)], event, out, decisions)
        if decisions:
            self._flush()
            return decisions
        return ()

    def test_begin(self, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self._observe("test_begin", {"epoch": self._eval_epoch()}, logs)

    def test_end(self, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self._observe("test_end", {"epoch": self._eval_epoch()}, logs)

    def test_batch_begin(self, batch: int,
                         logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        if self._idle_test_batch_begin:  # type: ignore[attr-defined]
            return ()
        return self._observe("test_batch_begin", {
            "epoch": self._eval_epoch(), "batch": _index(batch, "batch", "test_batch_begin")}, logs)

    def test_batch_end(self, batch: int,
                       logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        if self._idle_test_batch_end:  # type: ignore[attr-defined]
            return ()
        return self._observe("test_batch_end", {
            "epoch": self._eval_epoch(), "batch": _index(batch, "batch", "test_batch_end")}, logs)

    def predict_begin(self, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self._observe("predict_begin", {}, logs)

    def predict_end(self, logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        return self._observe("predict_end", {}, logs)

    def predict_batch_begin(self, batch: int,
                            logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        if self._idle_predict_batch_begin:  # type: ignore[attr-defined]
            return ()
        return self._observe("predict_batch_begin",
                             {"batch": _index(batch, "batch", "predict_batch_begin")}, logs)

    def predict_batch_end(self, batch: int,
                          logs: Mapping[str, Any] | None = None) -> Sequence[Decision]:
        if self._idle_predict_batch_end:  # type: ignore[attr-defined]
            return ()
        return self._observe("predict_batch_end",
                             {"batch": _index(batch, "batch", "predict_batch_end")}, logs)

    def publish(self, event: Observation) -> Sequence[Decision]:
        """Publish an observation record built by the caller; returns the decisions it caused.

        The bus stamps the envelope (run id, seq, time). ``epoch`` and ``step`` of batch events
        are the bus's own counters unless the event sets them.
        """
        if not isinstance(event, Observation):
            raise EventError(f"publish: expected an observation record (TrainBegin, EpochEnd, "
                             f"...); got {type(event).__name__}",
                             event=getattr(event, "kind", None))
        kind, logs = event.kind, event.logs
        given = event.model_fields_set
        if kind == "train_begin":
            return self.train_begin(event.params, logs)  # type: ignore[attr-defined]
        if kind == "train_end":
            return self.train_end(logs)
        if kind in ("epoch_begin", "epoch_end"):
            return getattr(self, kind)(event.epoch, logs)  # type: ignore[attr-defined]
        if kind in ("batch_begin", "batch_end"):
            # Checked before they are kept: every later record carries them.
            step = self._step
            if "step" in given:
                step = _index(event.step, "step", kind)  # type: ignore[attr-defined]
            epoch = event.epoch if "epoch" in given else self._epoch  # type: ignore[attr-defined]
            if epoch is not None:
                epoch = _index(epoch, "epoch", kind)
            self._step, self._epoch = step, epoch
            return getattr(self, kind)(event.batch, logs)  # type: ignore[attr-defined]
        fields = {name: getattr(event, name) for name in ("epoch", "batch")
                  if name in type(event).model_fields}
        if "epoch" in fields and "epoch" not in given:
            fields["epoch"] = self._eval_epoch()
        return self._observe(kind, fields, logs)

    def feed(self, record: Record, *, side_effects: bool = False) -> Sequence[Decision]:
        """Dispatch a recorded record as it was (same seq, time and logs); returns decisions.

        Replay, resume and log conversion use this. Nothing is written to the bus's log. By
        default only pure plugins see the record (sinks wrote it once already);
        ``side_effects=True`` includes sinks and also passes recorded decisions to the
        ``on_decision`` hooks (converting a log to CSV or TensorBoard). In replay the learning
        rate in epoch logs is the replayed one, so plugins see a what-if's own changes.
        """
        if isinstance(record, Decision):
            if side_effects:
                for fn, plugin in self._h_on_decision:  # type: ignore[attr-defined]
                    try:
                        fn(record)
                    except Exception as exc:
                        self._plugin_failed(plugin, record.kind, record.seq, exc)
            return ()
        if not isinstance(record, Observation):
            return ()
        kind = record.kind
        self._seq = record.seq
        if kind in ("batch_begin", "batch_end"):
            self._epoch = record.epoch  # type: ignore[attr-defined]
            self._step = record.step + (kind == "batch_end")  # type: ignore[attr-defined]
        elif kind == "epoch_begin":
            self._epoch = record.epoch  # type: ignore[attr-defined]
        elif kind == "train_begin":
            self._in_train = True
            self.stop_training = False  # a new fit starts unstopped, as it did live
        elif kind == "train_end":
            self._in_train = False
        handlers = getattr(self, f"_f_on_{kind}") if side_effects else self._pure[f"on_{kind}"]
        if not handlers:
            return ()  # no plugin sees it: the state above is all it changes
        if self._replaying and kind in ("epoch_begin", "epoch_end") and self._lr is not None:
            record = record.model_copy(
                update={"logs": {**record.logs, "learning_rate": self._lr}})
        self._feeding = True  # outcomes queued by report() wait for the real writers
        try:
            if self._writers:  # nothing fed is written
                with self._writers_aside():
                    return self._dispatch(record, handlers)
            return self._dispatch(record, handlers)
        finally:
            self._feeding = False

    @contextlib.contextmanager
    def _writers_aside(self) -> Iterator[None]:
        """No writer while the block runs (swapped directly, not through _set_writers: the
        fast paths need no rebuilding, they are put back as they were)."""
        saved = (self._writers, self._writes, self._write_owners, self._finite_writes,
                 self._finite_owners, self._line_appends)
        (self._writers, self._writes, self._write_owners, self._finite_writes,
         self._finite_owners, self._line_appends) = [], (), (), (), (), ()
        try:
            yield
        finally:
            (self._writers, self._writes, self._write_owners, self._finite_writes,
             self._finite_owners, self._line_appends) = saved

    def subscribes(self, kind: str, *, side_effects: bool = False) -> bool:
        """Whether :meth:`feed` would pass a record of ``kind`` to any plugin."""
        hook = f"on_{kind}"
        return bool(getattr(self, f"_f_{hook}", ()) if side_effects else self._pure.get(hook))

    # --- recording and dispatch ----------------------------------------------------------------

    def _eval_epoch(self) -> int | None:
        return self._epoch if self._in_train else None

    def _observe(self, kind: str, fields: dict[str, Any],
                 logs: Mapping[str, Any] | None) -> Sequence[Decision]:
        """The general path for every observation but batches (which have their own)."""
        if self._attention:
            self._attend()
        logs = coerce_logs(logs, kind) if logs is not None else {}
        refused: list[tuple[object, Exception]] = []
        if kind in ("epoch_begin", "epoch_end"):
            if kind == "epoch_end":
                refused = self._augment(fields["epoch"], logs)
            lr = self.learning_rate
            if lr is not None and "learning_rate" not in logs:
                logs["learning_rate"] = lr
        self._seq = seq = self._seq + 1
        record = {"v": SCHEMA_VERSION, "run_id": self.run_id, "seq": seq, "kind": kind,
                  "time": _time(), "logs": logs, **fields}
        cls = KINDS[kind]
        if refused:
            decisions = self._emit_after_failures(cls, record, refused)
        else:
            decisions = self._emit(cls, record, getattr(self, f"_f_on_{kind}"))
        if kind == "epoch_end" and not decisions:
            self._flush()
        elif kind == "train_end":
            self._sync()
        return decisions

    def _augment(self, epoch: int, logs: dict[str, float]) -> list[tuple[object, Exception]]:
        """Add what ``augment_epoch_logs`` plugins give to ``logs``; returns the plugins that
        raised or gave something that is not metrics, with their errors."""
        refused: list[tuple[object, Exception]] = []
        for fn, plugin in self._h_augment_epoch_logs:  # type: ignore[attr-defined]
            label = self._labels[id(plugin)]
            try:
                extra = fn(epoch=epoch, logs=dict(logs))
                if extra is not None:
                    extra = coerce_logs(extra, "epoch_end", plugin=label)
            except Exception as exc:
                refused.append((plugin, exc))
                continue
            if extra:
                for key, value in extra.items():
                    logs.setdefault(key, value)
        return refused

    def _emit_after_failures(self, cls: type[Record], record: dict[str, Any],
                             refused: list[tuple[object, Exception]]) -> Sequence[Decision]:
        """``_emit`` for an epoch whose logs some plugins failed to add to: the epoch is
        recorded first (the loop's metrics are not lost with a plugin's), then each failure
        under the bus's policy, then the plugins still on the bus see the event."""
        self._write(record)
        for plugin, exc in refused:
            self._plugin_failed(plugin, record["kind"], record["seq"], exc)
        handlers = getattr(self, f"_f_on_{record['kind']}")  # without any plugin disabled now
        if not handlers:
            return ()
        event = _new(_TRUSTED[cls])
        set_model_dict(event, record)
        return self._dispatch(event, handlers)

    def _emit(self, cls: type[Record], record: dict[str, Any],
              handlers: tuple[Any, ...]) -> Sequence[Decision]:
        # batch_end repeats this and _dispatch inline (a shared helper measured 2-3% of its
        # cost): change them together.
        self._write(record)
        if not handlers:
            return ()
        event = _new(_TRUSTED[cls])  # the record, as its pydantic model, without re-validation
        set_model_dict(event, record)
        return self._dispatch(event, handlers)

    def _dispatch(self, event: Any, handlers: tuple[Any, ...]) -> Sequence[Decision]:
        """Call ``handlers`` with ``event``; record, apply and return the decisions they make."""
        decisions: list[Decision] | None = None
        for fn in handlers:
            try:
                out = fn(event)
            except Exception as exc:
                self._plugin_failed(self._owner[id(fn)], event.kind, event.seq, exc)
                continue
            if out is not None:
                if decisions is None:
                    decisions = []
                self._accept(self._owner[id(fn)], event, out, decisions)
        if decisions:
            self._flush()
            return decisions
        return ()

    def _attend(self) -> None:
        """The rare work before an event: the header, outcomes queued by :meth:`report`.

        Done before the event takes its seq and time, so the log stays in seq order and the
        header's time comes before the first event's.
        """
        if self._feeding:
            return  # outcomes wait for the real writers; replay writes no header
        if self._closed:
            raise EventError("the bus is closed: an event published after close() would not be "
                             "recorded (close the bus after train_end, or use a new bus)")
        if not self._header_written:
            self._write_header()
        self._drain()

    def _accept(self, plugin: object, event: Any, out: Any, decisions: list[Decision]) -> None:
        """Record, apply and pass on what a plugin returned for ``event``."""
        label = self._labels[id(plugin)]
        try:
            items = _as_records(out, label, event.kind)  # a generator hook runs here
        except Exception as exc:
            self._plugin_failed(plugin, event.kind, event.seq, exc)
            return
        for item in items:
            if isinstance(item, (Decision, Outcome)):
                try:
                    item = _checked(item, label, event.kind)
                except EventError as exc:
                    self._plugin_failed(plugin, event.kind, event.seq, exc)
                    continue
            if isinstance(item, Decision):
                decision = self._record(item, source=label, cause=event)
                decisions.append(decision)  # type: ignore[arg-type]
                self._apply(decision)  # type: ignore[arg-type]
            elif isinstance(item, Outcome):
                self._record(item, source=label, cause=event)
            else:
                self._plugin_failed(plugin, event.kind, event.seq, EventError(
                    f"plugin {label!r} returned a {item.kind} record from {event.kind}; plugins "
                    "return decisions or outcomes, the loop publishes observations",
                    event=event.kind, plugin=label))

    def _record(self, item: Record, *, source: str = "", cause: Any = None) -> Record:
        """Stamp ``item`` with the envelope (and source, cause, epoch if unset), then log it."""
        if not self._header_written and not isinstance(item, Header):
            self._write_header()  # first, so its time is before this record's
        self._seq += 1
        update: dict[str, Any] = {"v": SCHEMA_VERSION, "run_id": self.run_id, "seq": self._seq,
                                  "time": _time()}
        if isinstance(item, (Decision, Outcome)):
            if not item.source and source:
                update["source"] = source
            if item.cause_seq is None and cause is not None:
                update["cause_seq"] = cause.seq
            if item.epoch is None:
                epoch = getattr(cause, "epoch", None) if cause is not None else None
                update["epoch"] = epoch if epoch is not None else self._epoch
        stamped = item.model_copy(update=update)
        self._write(stamped.model_dump())
        if isinstance(stamped, (SinkFailed, PluginFailed)):
            self.failures.append(stamped)  # however it arrived: raised, returned or reported
        elif isinstance(stamped, WarningRecord) and not self._replaying:
            warnings.warn(f"{stamped.source or 'bus'}: {stamped.message}", RunWarning,
                          stacklevel=3)
        return stamped

    def _write(self, record: dict[str, Any]) -> None:
        writes = self._writes
        try:
            for write in writes:
                write(record)
        except Exception as exc:
            self._write_failed(record, write, writes, self._write_owners, exc)

    def _write_failed(self, record: dict[str, Any], failed: Any, writes: tuple[Any, ...],
                      owners: tuple[RecordWriter, ...], exc: Exception) -> None:
        """``failed``, one of ``writes`` (made by ``owners``), refused ``record``: give it to
        the writes after it, then record faults.

        Faults are recorded only once every working writer has the record, so each log stays
        in seq order.
        """
        position = writes.index(failed)
        broken = [(owners[position], exc)]
        for later, owner in zip(writes[position + 1:], owners[position + 1:]):
            try:
                later(record)
            except Exception as later_exc:
                broken.append((owner, later_exc))
        for writer, error in broken:
            self._writer_failed(writer, record["kind"], error)

    def _apply(self, decision: Decision) -> None:
        """Apply a recorded decision, then pass it to the ``on_decision`` hooks."""
        if isinstance(decision, StopTraining):
            self.stop_training = True
        elif isinstance(decision, SetLearningRate):
            self._edge(lambda: setattr(self, "learning_rate", decision.value), decision)
        elif isinstance(decision, (SnapshotWeights, RestoreWeights)) and not self._replaying:
            self._weights(decision)
        if self._replaying:
            return
        for fn, plugin in self._h_on_decision:  # type: ignore[attr-defined]
            try:
                out = fn(decision)
            except Exception as exc:
                self._plugin_failed(plugin, decision.kind, decision.seq, exc)
                continue
            label = self._labels[id(plugin)]
            try:
                items = [_checked(item, label, decision.kind) if isinstance(item, Outcome)
                         else item for item in _as_records(out, label, decision.kind)]
            except Exception as exc:
                self._plugin_failed(plugin, decision.kind, decision.seq, exc)
                continue
            for item in items:
                if isinstance(item, Outcome):
                    self._record(item, source=label, cause=decision)
                else:
                    self._plugin_failed(plugin, decision.kind, decision.seq, EventError(
                        f"plugin {label!r} returned a {item.kind} record from on_decision; only "
                        "outcomes may be returned there", event=decision.kind, plugin=label))

    def _weights(self, decision: SnapshotWeights | RestoreWeights) -> None:
        if self.model is None:
            self._record(WarningRecord(
                source="bus", cause_seq=decision.seq, epoch=decision.epoch,
                message=f"{decision.kind} from {decision.source!r} needs a model adapter; "
                        "the bus has none (Bus(model=...))", details={"tag": decision.tag}))
            return
        if isinstance(decision, SnapshotWeights):
            self._edge(lambda: self._snapshots.__setitem__(decision.tag, self.model.get_weights()),
                       decision)
            return
        weights = self._snapshots.get(decision.tag)
        if weights is None:
            self._record(WarningRecord(
                source="bus", cause_seq=decision.seq, epoch=decision.epoch,
                message=f"restore_weights from {decision.source!r}: no weights were kept under "
                        f"{decision.tag!r}; the model keeps its current weights",
                details={"tag": decision.tag}))
            return
        if self._edge(lambda: self.model.set_weights(weights), decision):
            self._record(WeightsRestored(source="bus", tag=decision.tag, cause_seq=decision.seq,
                                         epoch=decision.epoch))

    def _edge(self, action: Any, decision: Decision) -> bool:
        """Run a side effect of a decision; a failure is a sink failure, never a crash."""
        try:
            action()
        except Exception as exc:
            self._fault(SinkFailed(sink="model", event=decision.kind, error=type(exc).__name__,
                                   message=str(exc), cause_seq=decision.seq,
                                   epoch=decision.epoch))
            return False
        return True

    def _fault(self, record: Record) -> Record:
        return self._record(record)  # _record keeps faults in self.failures

    def _plugin_failed(self, plugin: object, kind: str, seq: int | None, exc: Exception) -> None:
        label = self._labels[id(plugin)]
        epoch = self._epoch
        if isinstance(exc, AbortTraining):
            # A plugin asked to end the run by raising (TerminateOnNaN(raise_error=True)):
            # recorded, then raised whatever the policy.
            self._fault(PluginFailed(plugin=label, event=kind, error=type(exc).__name__,
                                     message=str(exc), cause_seq=seq, epoch=epoch))
            self._flush()
            raise exc
        if getattr(plugin, "side_effects", False):
            self._fault(SinkFailed(sink=label, event=kind, error=type(exc).__name__,
                                   message=str(exc), cause_seq=seq, epoch=epoch))
            self._disable(plugin)
            return
        self._fault(PluginFailed(plugin=label, event=kind, error=type(exc).__name__,
                                 message=str(exc), cause_seq=seq, epoch=epoch))
        if self.on_plugin_error == "isolate":
            self._disable(plugin)
            warnings.warn(f"plugin {label!r} raised on {kind} (seq {seq}) and was disabled: "
                          f"{type(exc).__name__}: {exc}", PluginIsolatedWarning, stacklevel=4)
            return
        self._flush()
        raise PluginError(f"plugin {label!r} failed on {kind} (seq {seq}): "
                          f"{type(exc).__name__}: {exc}", plugin=label, event=kind,
                          seq=seq) from exc

    def _writer_failed(self, writer: RecordWriter, kind: str, exc: Exception) -> None:
        if writer in self._writers:
            self._set_writers([w for w in self._writers if w is not writer])
            # Keep what it holds: a record it could not encode leaves its buffer sound.
            with contextlib.suppress(Exception):
                writer.close()
        self._fault(SinkFailed(sink=getattr(writer, "name", type(writer).__name__), event=kind,
                               error=type(exc).__name__, message=str(exc), cause_seq=self._seq,
                               epoch=self._epoch))

    def decide(self, decision: Decision) -> Decision:
        """Record and apply a decision made outside the plugins (a coordinator, a person).

        As for a plugin's decision: stamped, recorded, applied, passed to ``on_decision``, and
        the log flushed. ``source`` defaults to ``"bus"``. Returns the recorded decision.
        """
        if not isinstance(decision, Decision):
            raise EventError(f"decide: expected a decision record; got {type(decision).__name__}")
        decision = _checked(decision, "bus", "decide")  # type: ignore[assignment]
        stamped = self._record(decision, source="bus")
        self._apply(stamped)  # type: ignore[arg-type]
        self._flush()
        return stamped  # type: ignore[return-value]

    def record(self, outcome: Outcome) -> Outcome:
        """Record an outcome now and flush (on the bus's thread; from others, :meth:`report`)."""
        if not isinstance(outcome, Outcome):
            raise EventError(f"record: expected an outcome record; got {type(outcome).__name__}")
        outcome = _checked(outcome, "bus", "record")  # type: ignore[assignment]
        stamped = self._record(outcome, source="bus")
        self._flush()
        return stamped  # type: ignore[return-value]

    @property
    def replaying(self) -> bool:
        """True while recorded events are being fed again (replay, or restoring a resume)."""
        return self._replaying

    def report(self, record: Outcome) -> None:
        """Queue an outcome from another thread (a background sink); recorded at the next event.

        Safe to call from any thread: the bus itself is single-threaded and drains the queue on
        its own thread.
        """
        if not isinstance(record, Outcome):
            raise EventError(f"report: expected an outcome record; got {type(record).__name__}")
        self._pending.append(record)
        self._attention = True

    def _drain(self) -> None:
        self._attention = False  # cleared first: a report() racing with this sets it again
        while self._pending:
            self._record(self._pending.popleft())

    # --- resume --------------------------------------------------------------------------------

    def add_writer(self, writer: RecordWriter) -> None:
        """Record to ``writer`` from now on as well (a backup log, a stream to a collector)."""
        self._set_writers([*self._writers, self._writer(writer)])

    def remove_writer(self, writer: RecordWriter) -> None:
        """Stop recording to ``writer`` and close it."""
        self._set_writers([w for w in self._writers if w is not writer])
        writer.close()

    def resume(self, log: str | os.PathLike[str]) -> bool:
        """Continue the run recorded in ``log``: restore every plugin's state and the control state.

        The recorded observations up to the last finished epoch are fed again to the plugins
        without side effects (the log is not written, sinks are not called), so wait counters,
        best values, cooldowns and the learning rate are what they were. Records after that
        epoch belong to an epoch the loop will run again; the ``resumed`` record's ``from_seq``
        marks them as abandoned, and replay skips them. A decision the plugins make now that the
        log lacks (the crash came between an event and its decisions) is recorded and applied.

        Afterwards ``initial_epoch`` is the epoch to continue from, ``stop_training`` is true if
        the run had already been stopped, and ``seq`` continues the log's. Returns False when
        ``log`` does not exist (nothing to resume).
        """
        from .effective import read_effective, resume_point
        from .log import last_seq
        from .replay import same_decision

        if not _has_records(log):
            return False  # nothing was recorded before the crash: a fresh start
        point = resume_point(log)  # where the run goes on, found before the log is read
        records = read_effective(log, spans=point.spans)
        header = next(records, None)
        if not isinstance(header, Header):
            raise LogError(f"{log}: cannot resume: the log has no header record", path=str(log))
        self.run_id = header.run_id
        # Replay the learning rate from where the run started, as the plugins saw it.
        initial_lr = header.meta.get("learning_rate")
        if initial_lr is not None:
            self._lr = float(initial_lr)
        # A writer that starts a new file (not the log resumed from) gets the run so far, so
        # it holds the whole run as the resumed log does (e.g. a main log next to a backup).
        self._header_written = True
        fresh = [w for w in self._writers
                 if id(w) not in self._continued and not _same_path(w, log)]
        for writer in fresh:
            writer.write(header.model_dump())

        # Compare only what these plugins decide (a subclass may record decisions of its own).
        labels = set(self._labels.values())
        recorded: list[Decision] = []
        replayed: list[Decision] = []
        stopped, lr = False, None  # what the log's decisions did to the control state
        from_seq = header.seq
        began = ended = False
        self._replaying = True
        try:
            with self._writers_aside():  # fed, not written again
                for record in records:
                    if point.seq is None or (record.seq > point.seq
                                             and isinstance(record, Observation)):
                        break  # past the last finished epoch and its decisions: the loop reruns
                    from_seq = record.seq
                    for writer in fresh:
                        writer.write(record.model_dump())
                    if isinstance(record, Observation):
                        replayed.extend(self.feed(record))
                        if record.kind == "train_begin":
                            began, stopped = True, False  # a new fit starts unstopped
                        ended = ended or record.kind == "train_end"
                    elif isinstance(record, Decision):
                        if record.source in labels:
                            recorded.append(record)
                        if isinstance(record, StopTraining):
                            stopped = True
                        elif isinstance(record, SetLearningRate):
                            lr = record.value
        finally:
            self._replaying = False
            records.close()
        # seq goes on after the highest in the log and in any other log being continued: one
        # may be ahead (a backup synced at epoch_begin, the main log flushed at epoch_end).
        self._seq = max([last_seq(log) or 0, *self._continued_seqs(log)])
        # What the log says happened is what happened to the model: it sets the control state
        # even if the plugins given now would decide otherwise (a warning below says so).
        if stopped:
            self.stop_training = True
        if lr is not None:
            self._lr = lr
        if self._lr is not None and self.model is not None and hasattr(self.model,
                                                                       "learning_rate"):
            self.model.learning_rate = self._lr
        finished = point.epoch  # the last finished epoch
        self.initial_epoch = finished + 1 if finished is not None else 0
        # The loop runs unchanged on a resumed run: its train_begin must not reset the plugins'
        # restored state, and a finished run's train_end is not published twice.
        self._skip_train_begin = began
        self._skip_train_end = ended
        self._in_train = began and not ended
        self._epoch = self._ended = finished
        self._resumed = True
        self._record(Resumed(source="bus", from_seq=from_seq, initial_epoch=self.initial_epoch,
                             epoch=self._epoch))
        # Decisions the crash kept out of the log: record them and let sinks act on them.
        matched = 0
        for mine, theirs in zip(replayed, recorded):
            if not same_decision(mine, theirs):
                self._record(WarningRecord(
                    source="bus", message="resume: the plugins' decisions differ from the "
                    f"recorded ones from decision #{matched + 1} on ({mine.kind} from "
                    f"{mine.source} vs. recorded {theirs.kind} from {theirs.source}); were the "
                    "plugins or their parameters changed?", details={"index": matched}))
                break
            matched += 1
        else:
            for decision in replayed[len(recorded):]:
                again = self._record(decision.model_copy(update={"seq": -1}))
                self._apply(again)  # type: ignore[arg-type]
        self._flush()
        return True

    def _continued_seqs(self, log: str | os.PathLike[str]) -> list[int]:
        """The last seq of every other log this bus appends to."""
        from .log import last_seq

        seqs = []
        for writer in self._writers:
            path = getattr(writer, "path", None)
            if id(writer) in self._continued and path is not None and not _same_path(writer, log):
                try:
                    seqs.append(last_seq(path) or 0)
                except Exception as exc:  # a damaged second log must not stop the resume
                    warnings.warn(f"resume: cannot read {path} ({type(exc).__name__}: {exc}); "
                                  "its seq is not taken into account", stacklevel=3)
        return seqs

    # --- the header, flushing, closing -----------------------------------------------------------

    def header(self) -> Header:
        """The header record this run's log starts with."""
        specs: list[PluginSpec] = []
        for plugin in self._plugins:
            spec = plugin_spec(plugin)
            label = self._labels[id(plugin)]
            if label != spec.name:
                spec = spec.model_copy(update={"label": label})
            specs.append(spec)
        meta = dict(self._meta)
        if self.learning_rate is not None:
            meta.setdefault("learning_rate", self.learning_rate)
        if self.model is not None and callable(getattr(self.model, "get_config", None)):
            try:
                meta.setdefault("model", self.model.get_config())
            except Exception as exc:  # the header must not fail a run over a model's config
                meta.setdefault("model_config_error", f"{type(exc).__name__}: {exc}")
        return Header(run_id=self.run_id, seq=0, time=_time(),
                      created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                      library=f"eventbus {__version__}", plugins=specs, meta=meta)

    def _write_header(self) -> None:
        self._header_written = True
        if self._writers:
            self._write(self.header().model_dump())

    def _flush(self) -> None:
        self._call_writers(self._writers, "flush", "flush")

    def _sync(self) -> None:
        self._call_writers(self._writers, "sync", "sync")

    def _call_writers(self, writers: Sequence[RecordWriter], method: str, event: str) -> None:
        """Call ``method`` of each of ``writers``; one that raises is dropped and recorded as
        failing on ``event``."""
        for writer in writers:
            try:
                getattr(writer, method)()
            except Exception as exc:
                self._writer_failed(writer, event, exc)

    def close(self) -> None:
        """Let plugins flush (``on_close``), then sync and close the log. Idempotent.

        Sink failures seen during the run are reported here as one :class:`SinkFailureWarning`.
        """
        if self._closed:
            return
        self._closed = True
        if self._writers and not self._header_written:
            self._write_header()
        for fn, plugin in self._h_on_close:  # type: ignore[attr-defined]
            label = self._labels[id(plugin)]
            try:
                out = fn(None)
            except Exception as exc:
                self._fault(SinkFailed(sink=label, event="close", error=type(exc).__name__,
                                       message=str(exc), epoch=self._epoch))
                continue
            try:
                items = [_checked(item, label, "close") if isinstance(item, (Decision, Outcome))
                         else item for item in _as_records(out, label, "close")]
            except Exception as exc:
                self._fault(SinkFailed(sink=label, event="close", error=type(exc).__name__,
                                       message=str(exc), epoch=self._epoch))
                continue
            for item in items:
                self._record(item, source=label)
        self._drain()
        for writer in list(self._writers):
            try:
                writer.close()
            except Exception as exc:
                self._set_writers([w for w in self._writers if w is not writer])
                self.failures.append(SinkFailed(sink=getattr(writer, "name", "writer"),
                                                event="close", error=type(exc).__name__,
                                                message=str(exc)))
        sink_failures = [f for f in self.failures if isinstance(f, SinkFailed)]
        if sink_failures:
            lines = "; ".join(f"{f.sink} on {f.event}: {f.error}: {f.message}"
                              for f in sink_failures[:5])
            more = f" (and {len(sink_failures) - 5} more)" if len(sink_failures) > 5 else ""
            warnings.warn(f"{len(sink_failures)} sink failure(s) during the run: {lines}{more}",
                          SinkFailureWarning, stacklevel=2)
        self._attention = True  # the next event is refused (see _attend)

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _writer(self, target: Any, *, append: bool = False) -> RecordWriter:
        if isinstance(target, (str, os.PathLike)):
            continued = append and _has_records(target)
            try:
                writer = open_writer(target, append=append)
            except OSError as exc:
                raise LogError(f"Bus: log {os.fspath(target)!r} cannot be opened for writing: "
                               f"{exc.strerror or exc}", path=os.fspath(target)) from exc
            if continued:
                self._continued.add(id(writer))
            return writer
        if all(callable(getattr(target, m, None)) for m in ("write", "flush", "sync", "close")):
            if _has_records(getattr(target, "path", None)):
                self._continued.add(id(target))  # it appends to a file that has the run
            attach = getattr(target, "on_attach", None)
            if callable(attach):
                attach(self)  # e.g. a network writer that reports failures via bus.report()
            return target  # type: ignore[no-any-return]
        raise ConfigError(f"Bus: log must be a path or a writer with write/flush/sync/close; "
                          f"got {type(target).__name__}", field="log")


def _has_records(path: str | os.PathLike[str] | None) -> bool:
    if path is None:
        return False
    if os.path.isdir(path):  # a Parquet log: its segments hold its records
        from .parquet_segments import segments

        return bool(segments(Path(path)))
    return os.path.isfile(path) and os.path.getsize(path) > 0


def _same_path(writer: object, path: str | os.PathLike[str]) -> bool:
    own = getattr(writer, "path", None)
    try:
        return own is not None and os.path.samefile(own, path)
    except OSError:
        return False


def _resume_source(targets: list[Any]) -> str | None:
    """The log among ``targets`` to resume from: the first JSON Lines one, else the first
    Parquet one (both are flushed at the same points; JSON Lines also keeps the records of a
    partial epoch, which the resume abandons anyway)."""
    from .log import is_parquet

    paths = [os.fspath(t) for t in targets if isinstance(t, (str, os.PathLike))]
    return next((p for p in paths if not is_parquet(p)), paths[0] if paths else None)


def _as_list(log: Any) -> list[Any]:
    if log is None:
        return []
    if isinstance(log, bytes):
        return [os.fsdecode(log)]
    if isinstance(log, (str, os.PathLike)) or not isinstance(log, Sequence):
        return [log]
    return list(log)


def _params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise EventError(f"train_begin: params must be a mapping; got {type(params).__name__}",
                         event="train_begin", field="params")
    from .records import _plain

    try:
        return _plain(dict(params))  # type: ignore[no-any-return]
    except ValueError as exc:
        raise EventError(f"train_begin: params.{exc}", event="train_begin",
                         field="params") from None


def _meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ConfigError(f"Bus: meta must be a mapping of plain data; got "
                          f"{type(meta).__name__}", field="meta")
    from .records import _plain

    try:  # checked now: the header is written at the first event, too late to say which
        return _plain(dict(meta), "meta")  # type: ignore[no-any-return]
    except ValueError as exc:
        raise ConfigError(f"Bus: {exc}", field="meta") from None


def _as_records(out: Any, label: str, kind: str) -> Iterable[Record]:
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


def _checked(item: Record, label: str, kind: str) -> Record:
    """A record a plugin returned, validated: one made with ``model_construct`` (or changed
    after construction) could otherwise put a record in the log that no reader accepts."""
    try:
        return type(item).model_validate(dict(item.__dict__))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        who = f"plugin {label!r} returned" if label != "bus" else f"{kind}: given"
        raise EventError(f"{who} an invalid {item.kind} record from {kind}: {exc}",
                         plugin=None if label == "bus" else label, event=kind) from None


def _adapt(impl: Any, hook: str) -> Any:
    """A callable taking the hook's one argument positionally, whatever the impl declares."""
    fn = impl.function
    if hook in ("augment_epoch_logs", "on_attach", "resume_from"):
        # Called with keywords; pluggy lets an impl take any subset of the spec's arguments.
        names = impl.argnames
        return lambda **kw: fn(**{name: kw[name] for name in names})
    if impl.argnames:
        return fn
    return lambda _arg, _fn=fn: _fn()
