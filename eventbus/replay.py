"""Replay: feed a recorded run's observations into fresh plugins and get their decisions back.

Plugins are rebuilt from the log header through the registry (``overrides`` change their
parameters: the what-if), or given as instances. Decision plugins are deterministic functions of
the events, so a replay with the recorded parameters reproduces the recorded decisions;
``verify=True`` reports the first one that differs.

A replay ends where its own decisions stop training, as the loop would have: a what-if that
stops earlier sees no later epochs.

The learning rate the replayed plugins see is the recorded run's: the ``learning_rate`` each
epoch's record logged (a rate the loop moved itself, by a scheduler, included) and the recorded
``set_learning_rate`` decisions (see :class:`~eventbus.control.ReplayControl`).

Where a what-if stops being exact: the recorded metrics describe the run as it went. Once a
replayed learning-rate decision differs from the recorded one, the later metrics are those of a
run trained with another learning rate; :attr:`ReplayResult.diverged_at` gives the first event
where that is so. From there the replay's rate is its own decisions', moved by the factor the
loop moved the recorded rate by.
"""

from __future__ import annotations

import copy
import inspect
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._markers import hookimpl
from .audit import LogArgument, checked_log, header_of
from .bus import Bus
from .control import ReplayControl
from .cursor import after_stop
from .effective import effective_records, read_effective
from .errors import ConfigError, PluginError, ReplayError
from .filters import filtered, recorded
from .log import read_log
from .plugin import plugin_name, why_not_a_plugin
from .records import (
    DECISION_KINDS,
    KINDS,
    OBSERVATION_KINDS,
    Decision,
    Header,
    PluginSpec,
    Record,
    ShadowDecision,
    same_decision,
    trusted,
)
from .records import Warning as WarningRecord
from .registry import Registry
from .registry import registry as default_registry
from .shadow import Shadow

__all__ = ["Mismatch", "ReplayResult", "effective_records", "replay", "replay_each",
           "same_decision"]

_ALWAYS_FED = frozenset({"train_begin", "train_end", "epoch_begin", "epoch_end", "batch_end"})


@dataclass(frozen=True)
class Mismatch:
    """The first difference between the recorded and the replayed decisions."""

    index: int
    recorded: Decision | ShadowDecision | None
    replayed: Decision | ShadowDecision | None
    #: What differs: "decision", or "shadow decision" (a shadow policy's, never applied).
    what: str = "decision"

    def __str__(self) -> str:
        def show(d: Decision | ShadowDecision | None) -> str:
            if d is None:
                return "nothing"
            epoch = "-" if d.epoch is None else d.epoch + 1  # counted from 1, as reasons are
            kind, source = (d.decision, f"shadow {d.policy}") \
                if isinstance(d, ShadowDecision) else (d.kind, d.source)
            return f"{kind} from {source} at epoch {epoch} (event {d.cause_seq}): {d.reason}"

        return (f"{self.what} #{self.index + 1} differs: recorded {show(self.recorded)}; "
                f"replayed {show(self.replayed)}")


@dataclass
class ReplayResult:
    header: Header
    #: The decisions the replayed plugins made, in order.
    decisions: list[Decision]
    #: The decisions the log recorded from the same plugins.
    recorded: list[Decision]
    #: The replayed plugin instances, in their state after the last event.
    plugins: list[object]
    #: With ``verify=True``: the first difference, or None when the decisions agree.
    mismatch: Mismatch | None = None
    #: The seq of the first event whose recorded learning rate differs from the replayed one.
    diverged_at: int | None = None
    #: The epoch at which the replayed decisions stopped training, if they did.
    stopped_at: int | None = field(default=None)
    #: The epoch of the event ``diverged_at`` (0-based), for people: "an estimate from epoch N".
    diverged_epoch: int | None = None
    #: The last epoch the log recorded (0-based), and how many epochs it recorded: the log
    #: ends there, so a what-if that stops no earlier cannot say when it would have stopped.
    last_recorded_epoch: int | None = None
    epochs_recorded: int = 0
    #: The recorded stop_training decisions (of these plugins) the loop did not act on at
    #: once: a later epoch of the same fit ran (Lightning defers a stop until min_epochs).
    recorded_deferred: list[Decision] = field(default_factory=list)
    #: Decisions the log recorded from plugins replay does not rebuild (registered after the
    #: header was written, or not recordable): no replay can check them.
    unchecked: list[Decision] = field(default_factory=list)
    #: What the replayed plugins warned, each message once, in order: a monitor the log never
    #: holds (a what-if on a misspelt metric) is said here, beside an answer it makes moot.
    warnings: list[WarningRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.mismatch is None

    @property
    def recorded_stop(self) -> int | None:
        """The epoch at which the recorded run was stopped by a decision, if it was."""
        return next((d.epoch for d in self.recorded if d.kind == "stop_training"), None)


def _checked_overrides(overrides: Any, caller: str, argument: str) -> dict[str, dict[str, Any]]:
    """``overrides`` as ``{plugin: {param: value}}``, or a :class:`ConfigError` naming it."""
    example = "e.g. {'EarlyStopping': {'patience': 3}}"
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{caller}: {argument} must be a mapping of plugin name to "
                          f"parameters, {example}; got {type(overrides).__name__} "
                          f"{overrides!r:.80}", field=argument)
    out: dict[str, dict[str, Any]] = {}
    for plugin, params in overrides.items():
        if not isinstance(plugin, str) or not plugin:
            raise ConfigError(f"{caller}: {argument} is keyed by plugin name (a str), {example}; "
                              f"got the key {plugin!r}", field=argument)
        if not isinstance(params, Mapping):
            raise ConfigError(f"{caller}: {argument}[{plugin!r}] must be a mapping of parameter "
                              f"name to value, e.g. {{'patience': 3}}; got "
                              f"{type(params).__name__} {params!r:.80}",
                              plugin=plugin, field=argument)
        for param in params:
            if not isinstance(param, str) or not param:
                raise ConfigError(f"{caller}: {argument}[{plugin!r}] is keyed by parameter name "
                                  f"(a str); got the key {param!r}", plugin=plugin,
                                  field=argument)
        out[plugin] = dict(params)
    return out


def _checked_plugins(plugins: Any, caller: str) -> list[object]:
    """``plugins`` as a list of instances, or a :class:`ConfigError` naming the one at fault."""
    if plugins is None:
        return []
    if isinstance(plugins, (str, bytes, Mapping)) or not isinstance(plugins, Iterable):
        hint = (" (a recorded plugin is rebuilt from the log without being named; to change "
                "its parameters, use overrides=...)" if isinstance(plugins, str) else "")
        raise ConfigError(f"{caller}: plugins must be a list of plugin instances, e.g. "
                          f"[EarlyStopping(patience=3)]; got {type(plugins).__name__} "
                          f"{plugins!r:.80}{hint}", field="plugins")
    out = list(plugins)
    for i, plugin in enumerate(out):
        problem = why_not_a_plugin(plugin)
        if problem:
            raise ConfigError(f"{caller}: plugins[{i}] is {problem}", field="plugins",
                              plugin=plugin.__name__ if isinstance(plugin, type) else None)
    return out


def _not_run(label: str, params: Mapping[str, Any], runs: Sequence[str]) -> ReplayError:
    """The error for overrides of a plugin replay leaves out: they would change nothing."""
    changed = ", ".join(f"{label}.{p}" for p in params)
    return ReplayError(f"replay does not run {label}: it has side effects (a logger or sink), "
                       f"and replay writes nothing, so overriding {changed} would change "
                       f"nothing; the plugins replay runs are {', '.join(runs) or 'none'}")


class _Recorded:
    """Stands in for a plugin replay cannot rebuild, whose parameters the log could not record
    (a LearningRateScheduler's function): it hands the decisions the log recorded from that
    plugin back at the events that caused them, so the replayed learning rate follows the
    run's and the other plugins are replayed, verified and asked what-if as they ran. Its
    decisions are listed as unchecked, never compared: they are the log's own."""

    side_effects = False

    def __init__(self, name: str, decisions: Iterable[Decision]):
        self.name = name
        self._by_cause: dict[int | None, list[Decision]] = {}
        for decision in decisions:
            self._by_cause.setdefault(decision.cause_seq, []).append(decision)

    def _at(self, event: Any) -> Any:
        found = self._by_cause.get(event.seq)
        return [d.model_copy(update={"seq": -1}) for d in found] if found else None

    @classmethod
    def of(cls, name: str, decisions: list[Decision], causes: Mapping[int, str]) -> _Recorded:
        """One for plugin ``name``, with a hook for each kind of event its decisions had as
        cause (``causes``: the kind of each seq), and no other: replay builds no record
        nobody takes."""
        kinds = sorted({causes[d.cause_seq] for d in decisions if d.cause_seq in causes})
        hooks = {f"on_{kind}": hookimpl(lambda self, event: self._at(event)) for kind in kinds}
        return type(f"Recorded{name}", (cls,), hooks)(name, decisions)


def _build_plugins(header: Header, instances: Sequence[object],
                   overrides: Mapping[str, Mapping[str, Any]], registry: Registry,
                   stand_in: Any = None) -> list[object]:
    given = {plugin_name(p): p for p in instances}
    known = {spec.label or spec.name for spec in header.plugins} | \
        {spec.name for spec in header.plugins}
    for key in sorted(set(overrides) - known):
        if key in given:
            raise ReplayError(f"plugin {key!r}: overrides apply to plugins rebuilt from the "
                              "log; an instance was given, configure it directly")
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ReplayError(f"overrides name plugins the run did not have: {unknown}; the log's "
                          f"plugins are {sorted(known)}")
    # Replay leaves out the plugins with side effects (below): an override of one alone
    # would be silently unused.
    acts = {id(spec): _acts(spec, registry) for spec in header.plugins}
    runs = [spec.label or spec.name for spec in header.plugins if not acts[id(spec)]]
    for key, params in overrides.items():
        specs = [s for s in header.plugins if key in (s.name, s.label or s.name)]
        if params and all(acts[id(s)] for s in specs):
            raise _not_run(key, params, runs)
    built: list[object] = []
    used: set[str] = set()
    for spec in header.plugins:
        label = spec.label or spec.name
        instance = given.get(label) or given.get(spec.name)
        if instance is not None and id(instance) not in used:
            used.add(id(instance))  # type: ignore[arg-type]
            if label in overrides or spec.name in overrides:
                raise ReplayError(f"plugin {label!r}: overrides apply to plugins rebuilt from the "
                                  "log; an instance was given, configure it directly")
            built.append(instance)
            continue
        if acts[id(spec)]:
            continue  # loggers and sinks: replay writes nothing
        if not spec.recordable and stand_in is not None and \
                not (label in overrides or spec.name in overrides):
            built.append(stand_in(spec, label))
            continue
        built.append(_rebuild(spec, label, overrides, registry))
    built.extend(p for p in instances if id(p) not in used)
    return built


def _acts(spec: PluginSpec, registry: Registry) -> bool:
    """Whether the plugin ``spec`` names writes or sends anything: its class says, never the
    log (a hostile header marking BackupAndRestore pure would have replay write files). A class
    not installed here is taken at the log's word: it cannot be run anyway, so a log can only
    make replay leave a plugin out, never run one that acts."""
    try:
        cls = registry.get(spec.name)
    except Exception:
        return spec.side_effects
    return bool(getattr(cls, "side_effects", False))


def _rebuild(spec: PluginSpec, label: str, overrides: Mapping[str, Mapping[str, Any]],
             registry: Registry) -> object:
    if not spec.recordable:
        opaque = sorted(k for k, v in spec.params.items()
                        if isinstance(v, str) and v.startswith("<unrecordable"))
        raise ReplayError(f"plugin {label!r} has parameters the log could not record "
                          f"({', '.join(opaque)}); pass an instance: "
                          f"replay(log, plugins=[{spec.name}(...)])")
    changes = {**overrides.get(spec.name, {}), **overrides.get(label, {})}
    params = {**spec.params, **changes}
    try:
        cls = registry.get(spec.name)
    except Exception as exc:
        raise ReplayError(f"plugin {label!r} cannot be rebuilt: {exc}") from exc
    if changes and getattr(cls, "side_effects", False):
        # Recorded without side effects, but the class has them now: the bus would not feed it.
        raise _not_run(label, changes, [])
    accepted = _parameters(cls)
    unknown = sorted(set(changes) - accepted) if accepted is not None else []
    if unknown:
        takes = (f"its parameters are {', '.join(sorted(accepted))}" if accepted
                 else "it takes no parameters")
        raise ReplayError(f"{spec.name} has no parameter {', '.join(map(repr, unknown))}; "
                          f"{takes}")
    try:
        plugin = registry.build(spec.name, params)
        return filtered(plugin, *recorded(spec.filters)) if spec.filters else plugin
    except Exception as exc:
        raise ReplayError(f"plugin {label!r} cannot be rebuilt: {exc}") from exc


def _parameters(cls: type) -> set[str] | None:
    """The keyword parameters ``cls`` accepts, or None when it takes any (``**kwargs``)."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return None
    return {name for name, p in signature.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


class _Replaying:
    """One replay under way: the rebuilt plugins on a bus of their own, fed record by record."""

    def __init__(self, header: Header, plugins: Sequence[object],
                 overrides: Mapping[str, Mapping[str, Any]], registry: Registry,
                 stand_in: Any = None):
        self.header = header
        self.plugins = _build_plugins(header, list(plugins), dict(overrides), registry,
                                      stand_in)
        # An empty run_id (a header made without one) is no reason to refuse the replay.
        self.bus = Bus.for_replay(self.plugins, run_id=header.run_id or None,
                                  learning_rate=header.meta.get("learning_rate"))
        #: Its learning rate: the recorded run's until the replayed decisions change it.
        self.control: ReplayControl = self.bus.control  # type: ignore[assignment]
        standing_in = [p for p in self.plugins if isinstance(p, _Recorded)]
        #: The labels of the stand-ins (their decisions are the log's: not compared).
        self.standing_in = {self.bus.label(p) for p in standing_in}
        self.labels = {self.bus.label(p) for p in self.plugins} - self.standing_in
        self.stand_in_stop: int | None = None
        # Shadow policies decide without acting: what they decide is recorded as outcomes,
        # compared by --verify as the decisions are.
        self.shadow_labels: set[str] = set()
        self.shadows: list[ShadowDecision] = []
        self.recorded_shadows: list[ShadowDecision] = []
        for plugin in self.plugins:
            if isinstance(plugin, Shadow):
                self.shadow_labels.add(self.bus.label(plugin))
                plugin._take = self._watch(plugin, plugin._take)  # type: ignore[method-assign]
        self.decisions: list[Decision] = []
        self.recorded: list[Decision] = []
        self.diverged_at: int | None = None
        self.diverged_epoch: int | None = None
        self.stop_epoch: int | None = None
        self.last_epoch: int | None = None
        self.epochs = 0
        self.asked: list[Decision] = []  # recorded stops of this fit no later epoch followed
        self.deferred: list[Decision] = []
        self.unchecked: list[Decision] = []

    def _watch(self, shadow: Shadow, take: Any) -> Any:
        """``take`` of ``shadow``, noting each decision as the bus records it: the shadow's
        label as its source, the event as its cause, the epoch where the run is."""
        label, bus = self.bus.label(shadow), self.bus

        def watched(event: Any) -> Any:
            out = take(event)
            for item in out:
                if isinstance(item, ShadowDecision):
                    self.shadows.append(item.model_copy(update={
                        "source": label, "cause_seq": event.seq,
                        "epoch": item.epoch if item.epoch is not None else bus.epoch}))
            return out

        return watched

    def unseen(self) -> set[str]:
        """Kinds none of the plugins is given: they need not be built. The epochs' and
        batch_end's are always fed: replay looks at the former, the latter keep bus.step."""
        return {kind for kind in OBSERVATION_KINDS if kind not in _ALWAYS_FED
                and not self.bus.subscribes(kind)}

    def take(self, record: Record) -> None:
        bus = self.bus
        if record.category == "observation":  # (isinstance on a record costs a Python call)
            if record.kind == "epoch_end":  # counted whether or not the replay got this far
                epoch = self.last_epoch = record.epoch  # type: ignore[attr-defined]
                self.epochs += 1
                self.deferred += [d for d in self.asked if d.epoch is not None and epoch > d.epoch]
                self.asked = [d for d in self.asked if d.epoch is None or epoch <= d.epoch]
            if record.kind == "train_begin":
                self.asked = []
                self.stop_epoch = None  # a new fit: the loop called fit again after a stop
            elif self.stop_epoch is not None and after_stop(record, self.stop_epoch):
                return  # the replayed run stopped: its loop would have ended here
            made = bus.feed(record)
            if self.diverged_at is None and record.kind in ("epoch_begin", "epoch_end") and \
                    self.control.departed:  # the rate its plugins were given was not the log's
                self.diverged_at = record.seq
                self.diverged_epoch = record.epoch  # type: ignore[attr-defined]
            if made and self.standing_in:
                if self.stand_in_stop is None:  # a recorded stop, handed back, stops it too
                    self.stand_in_stop = next((d.epoch for d in made if d.source in
                                               self.standing_in and d.kind == "stop_training"),
                                              None)
                made = [d for d in made if d.source not in self.standing_in]
            self.decisions.extend(made)
            if self.stop_epoch is None and bus.stop_training:
                self.stop_epoch = bus.epoch if bus.epoch is not None else -1
        elif isinstance(record, Decision):
            if record.kind == "set_learning_rate":
                bus.feed(record)  # the recorded run's rate from here
            if record.source in self.labels:
                self.recorded.append(record)
                if record.kind == "stop_training":
                    self.asked.append(record)
            elif record.source not in _NOT_A_PLUGIN:
                self.unchecked.append(record)
        elif record.kind == "shadow_decision" and record.source in self.shadow_labels:
            self.recorded_shadows.append(record)  # type: ignore[arg-type]

    def result(self, verify: bool) -> ReplayResult:
        decisions, recorded = self.decisions, self.recorded
        mismatch = None
        if verify:
            mismatch = _first_difference(recorded, decisions, "decision") or \
                _first_difference(self.recorded_shadows, self.shadows, "shadow decision")
        stopped = next((d.epoch for d in decisions if d.kind == "stop_training"), None)
        if self.stand_in_stop is not None and (stopped is None or self.stand_in_stop < stopped):
            stopped = self.stand_in_stop
        return ReplayResult(header=self.header, decisions=decisions, recorded=recorded,
                            plugins=self.plugins, mismatch=mismatch,
                            diverged_at=self.diverged_at, stopped_at=stopped,
                            diverged_epoch=self.diverged_epoch,
                            last_recorded_epoch=self.last_epoch, epochs_recorded=self.epochs,
                            recorded_deferred=self.deferred, unchecked=self.unchecked,
                            warnings=_each_once(self.bus.held_warnings))


def _each_once(warnings: Sequence[WarningRecord]) -> list[WarningRecord]:
    """Each message once, as it first came (its epoch the first one's)."""
    first: dict[tuple[str | None, str], WarningRecord] = {}
    for warning in warnings:
        first.setdefault((warning.source, warning.message), warning)
    return list(first.values())


def _first_difference(recorded: Sequence[Any], replayed: Sequence[Any],
                      what: str) -> Mismatch | None:
    """The first place where ``replayed`` differs from ``recorded`` (one of them ending first
    is a difference), or None."""
    for i in range(max(len(recorded), len(replayed))):
        a = recorded[i] if i < len(recorded) else None
        b = replayed[i] if i < len(replayed) else None
        if a is None or b is None or not same_decision(a, b):
            return Mismatch(i, a, b, what)
    return None


#: Sources of decisions that are not plugins: the bus itself, and the ranks' agreement of a
#: distributed run (replayed per rank by ``replay --ranks``).
_NOT_A_PLUGIN = frozenset({"bus", "distributed"})


def _stand_in(log: LogArgument) -> Any:
    """How to make the stand-in (:class:`_Recorded`) of a plugin the log lists but could not
    record, from the decisions the log holds (read once, the first time one is needed)."""
    found: dict[str, Any] = {}

    def read() -> tuple[list[Decision], dict[int, str]]:
        if not found:
            decisions, causes = [], {}
            for record in read_effective(log, kinds=DECISION_KINDS):
                if isinstance(record, Decision):
                    decisions.append(record)
            wanted = {d.cause_seq for d in decisions}
            for record in read_effective(log, kinds=OBSERVATION_KINDS):
                if record.seq in wanted:
                    causes[record.seq] = record.kind
            found["decisions"], found["causes"] = decisions, causes
        return found["decisions"], found["causes"]

    def make(spec: PluginSpec, label: str) -> _Recorded:
        decisions, causes = read()
        return _Recorded.of(spec.name, [d for d in decisions if d.source == label], causes)

    return make


def _raise_damage(log: str | os.PathLike[str]) -> None:
    """The :class:`~eventbus.errors.LogCorruptError` of the first damaged record of ``log``,
    if it has one: for a plugin that failed in replay.

    Replay reads batch records without looking at their metric values (see ``jsonl.typed``),
    so a value that is not a number reaches the plugins. Reading the log again validated,
    only on this error path, names the file, line and field instead of the plugin that choked.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a torn last line was reported by the first reading
        for _ in read_log(log, validate=True):
            pass


def _take_each(replays: list[_Replaying], record: Record) -> None:
    """Feed ``record`` to each of several replays, each seeing it as recorded.

    Plugins may change an event's logs, as Keras's callbacks may: what one replay's plugins
    changed is put back before the next sees the record (cheaper than a copy per replay).
    """
    if record.category != "observation":
        for running in replays:
            running.take(record)
        return
    if "params" in record.__dict__:  # train_begin, once a run: a copy of everything
        for running in replays:
            fields = {**record.__dict__, "logs": dict(record.logs),
                      "params": copy.deepcopy(record.params)}  # type: ignore[attr-defined]
            running.take(trusted(KINDS[record.kind], fields))
        return
    logs = record.logs
    recorded = logs.copy()
    for running in replays:
        running.take(record)
        if logs != recorded:
            logs.clear()
            logs.update(recorded)


def replay(
    log: LogArgument,
    plugins: Sequence[object] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    verify: bool = False,
    *,
    registry: Registry | None = None,
) -> ReplayResult:
    """Recompute a run's decisions from its log.

    ``plugins``: instances to use instead of rebuilding the plugin of the same name (needed for
    plugins whose parameters could not be recorded), or to add. ``overrides``: parameters by
    plugin name (or label), e.g. ``{"EarlyStopping": {"patience": 3}}``. ``verify``: compare the
    replayed decisions with the recorded ones and report the first difference in ``mismatch``.
    A replay prints and writes nothing: plugins only decide, and their messages are records.

    Arguments of the wrong shape raise :class:`~eventbus.errors.ConfigError` naming the
    argument; an override of a plugin replay does not run (one with side effects) or of a
    parameter its plugin does not take raises :class:`~eventbus.errors.ReplayError`.
    """
    variant = _checked_overrides({} if overrides is None else overrides, "replay", "overrides")
    return _replay_each(checked_log(log, "replay"), [variant],
                        _checked_plugins(plugins, "replay"), verify, registry=registry)[0]


def replay_each(
    log: LogArgument,
    variants: Sequence[Mapping[str, Mapping[str, Any]]],
    plugins: Sequence[object] | None = None,
    verify: bool = False,
    *,
    registry: Registry | None = None,
) -> list[ReplayResult]:
    """:func:`replay` once for each of ``variants`` (overrides), reading the log once: a
    sweep of a long run costs one read, not one per value. ``plugins`` are shared by all the
    replays, so give instances only with a single variant."""
    if isinstance(variants, (str, bytes, Mapping)) or not isinstance(variants, Iterable):
        raise ConfigError(f"replay_each: variants must be a list of overrides, e.g. "
                          f"[{{'EarlyStopping': {{'patience': 3}}}}]; got "
                          f"{type(variants).__name__} {variants!r:.80}", field="variants")
    checked = [_checked_overrides(v, "replay_each", f"variants[{i}]")
               for i, v in enumerate(variants)]
    return _replay_each(checked_log(log, "replay_each"), checked,
                        _checked_plugins(plugins, "replay_each"), verify, registry=registry)


def _replay_each(
    log: LogArgument,
    variants: list[dict[str, dict[str, Any]]],
    plugins: list[object],
    verify: bool,
    *,
    registry: Registry | None,
) -> list[ReplayResult]:
    if plugins and len(variants) > 1:
        raise ReplayError("replay_each: plugin instances would be shared by the replays; "
                          "give them to replay() one variant at a time")
    where = str(log)
    if not isinstance(log, (str, os.PathLike)):
        log, where = list(log), "the records given"  # read twice below: the header first
    header = header_of(log, where)
    replays: list[_Replaying] = []
    stand_in = _stand_in(log) if any(not spec.recordable for spec in header.plugins) else None
    try:
        for overrides in variants:
            replays.append(_Replaying(header, plugins or (), overrides,
                                      registry or default_registry, stand_in))
        # Records no replay's plugins are given are not built (their lines are still read
        # and checked): for most runs, every batch_begin.
        unseen = set.intersection(*(r.unseen() for r in replays)) if replays else set()
        records = read_effective(log, kinds=[k for k in KINDS if k not in unseen])
        next(records)  # the header
        try:
            if len(replays) == 1:
                take = replays[0].take
                for record in records:
                    take(record)
            else:
                for record in records:
                    _take_each(replays, record)
        except PluginError:
            if isinstance(log, (str, os.PathLike)):
                _raise_damage(log)
            raise
    finally:
        for running in replays:
            running.bus.close()
    return [running.result(verify) for running in replays]
