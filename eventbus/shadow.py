"""Shadow policies: plugins that decide on the live run's events but never act.

    Bus([EarlyStopping(patience=10), ReduceLROnPlateau(patience=5)], log=...,
        shadow=[EarlyStopping(patience=3), ReduceLROnPlateau(patience=2, factor=0.2)])

Each shadow policy runs as a replay would run it (``eventbus replay --set``), but live: on a
bus of its own with no model, no sinks and its own learning rate, fed every event the run
publishes, stopping where it would have stopped. What it decides is recorded in the run's log
as ``shadow_decision`` outcomes, flagged with the policy, and never applied: no stop, no rate
change, no checkpoint, nothing passed to a sink that acts. The audit reports per policy where it
would have stopped or cut the rate and what it would have saved.

The policies are one plugin on the bus, :class:`Shadow`, which the header records with every
policy's parameters: replay and resume rebuild it, and resume feeds it the recorded events as it
does every pure plugin, so a shadow's patience survives a crash.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._markers import hookimpl
from .cursor import after_stop
from .dispatch import Dispatcher
from .errors import ConfigError
from .filters import filtered, recorded
from .monitor import fmt, guess_mode
from .plugin import Plugin, plugin_name, plugin_spec, why_not_a_plugin
from .records import Decision, Observation, SetLearningRate, ShadowDecision
from .records import Warning as WarningRecord
from .run import Run

__all__ = ["Shadow", "ShadowSummary", "recorded_policies", "summarise"]

#: What a shadow bus is fed: every observation kind the live bus dispatches.
_HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
          "on_batch_begin", "on_batch_end", "on_test_begin", "on_test_end",
          "on_test_batch_begin", "on_test_batch_end")


class _Policy:
    """One shadow policy: its plugin on a replay bus of its own (``run.recompute``)."""

    def __init__(self, plugin: object):
        self.plugin = plugin
        #: How the header records it (its parameters do not change after it is built).
        self.spec = plugin_spec(plugin)
        self.label = _describe(plugin, self.spec.params)
        probe = Dispatcher()
        probe.register(plugin)
        #: The hooks it implements: what a bus of its own would call.
        self.hooks = frozenset(hook for hook, handlers in probe.calls.items() if handlers)
        self.bus: Any = None
        self.stop_epoch: int | None = None
        #: The error that ended this policy (it decides no more), once one has.
        self.failed: BaseException | None = None

    def take(self, event: Observation, run: Run) -> list[Decision]:
        """The decisions the policy makes on ``event``. A policy that raises decides no more
        (the error is kept in ``failed``): a shadow never ends or changes the live run."""
        if self.failed is not None:
            return []
        try:
            return self._take(event, run)
        except Exception as exc:
            self.failed = exc.__cause__ if exc.__cause__ is not None else exc
            return []

    def _take(self, event: Observation, run: Run) -> list[Decision]:
        if event.kind == "train_begin":
            self.stop_epoch = None  # a new fit starts unstopped, as in replay
            if self.bus is None:
                # Its learning rate is its own from here: the live one it starts from.
                self.bus = run.recompute([self.plugin], learning_rate=run.learning_rate)
        elif self.stop_epoch is not None and after_stop(event, self.stop_epoch):
            return []  # the shadow run ended here
        if self.bus is None:
            return []  # no train_begin yet: an evaluation before training
        decisions = list(self.bus.feed(event))
        if self.stop_epoch is None and self.bus.stop_training:
            self.stop_epoch = self.bus.epoch if self.bus.epoch is not None else -1
        return decisions


#: The most shadow policies a log header may record for its Shadow to be rebuilt (a what-if
#: sweep runs a few dozen).
MAX_RECORDED_POLICIES = 256


class Shadow(Plugin):
    """Shadow policies (see the module's doc). ``policies``: plugin instances, or the specs a
    log header recorded for them (``{"name": ..., "params": ..., "filters": ...}``)."""

    name = "Shadow"

    def __init__(self, policies: Sequence[object | Mapping[str, Any]]):
        if isinstance(policies, (str, bytes, Mapping)) or not isinstance(policies, Iterable):
            raise ConfigError(f"Shadow: policies must be a list of plugins; got "
                              f"{type(policies).__name__} {policies!r:.60}", field="shadow",
                              plugin="Shadow")
        policies = list(policies)
        recorded = sum(isinstance(p, Mapping) for p in policies)
        if recorded > MAX_RECORDED_POLICIES:
            # Each policy decides on every event, so a crafted header's thousands would make
            # replay quadratic in the log (checked before any is built).
            raise ConfigError(f"Shadow: the log records {recorded} shadow policies; at most "
                              f"{MAX_RECORDED_POLICIES} are rebuilt", field="shadow",
                              plugin="Shadow")
        built = [_built(p) for p in policies]
        if any(isinstance(p, Shadow) for p in built):
            raise ConfigError("Shadow: a shadow policy cannot be a Shadow (its policies go "
                              "in this one's list)", field="shadow", plugin="Shadow")
        if not built:
            raise ConfigError("Shadow: give at least one policy", field="shadow",
                              plugin="Shadow")
        for plugin in built:
            problem = why_not_a_plugin(plugin)
            if problem:
                raise ConfigError(f"Shadow: a policy given is {problem}", field="shadow",
                                  plugin="Shadow")
            if getattr(plugin, "side_effects", False):
                raise ConfigError(f"Shadow: {plugin_name(plugin)} writes or sends (it has side "
                                  "effects); a shadow policy only decides", field="shadow",
                                  plugin=plugin_name(plugin))
        self.policies = [_Policy(p) for p in built]
        for policy in self.policies:
            if not policy.spec.recordable:
                raise ConfigError(f"Shadow: {policy.spec.name} has parameters a log cannot "
                                  "record; a shadow policy is rebuilt from the log by replay "
                                  "and resume", field="shadow", plugin=policy.spec.name)
        labels = [p.label for p in self.policies]
        for i, label in enumerate(labels):
            if labels.count(label) > 1:
                self.policies[i].label = f"{label}#{labels[:i + 1].count(label)}"
        # Hooks no policy needs are switched off: a shadow of epoch-end policies costs
        # nothing per batch. Train and epoch boundaries are always taken (reset and stop).
        for hook in _HOOKS:
            kind = hook[3:]
            if kind not in ("train_begin", "train_end", "epoch_begin", "epoch_end") and \
                    not any(hook in p.hooks for p in self.policies):
                setattr(self, f"_take_{kind}", None)

    @hookimpl
    def on_attach(self, run: Run) -> None:
        self.run = run

    def get_config(self) -> dict[str, Any]:
        specs = []
        for policy in self.policies:
            spec = policy.spec
            specs.append({"name": spec.name, "params": spec.params, "label": policy.label,
                          **({"filters": spec.filters} if spec.filters else {})})
        return {"policies": specs}

    def _take(self, event: Observation) -> list[ShadowDecision | WarningRecord]:
        out: list[ShadowDecision | WarningRecord] = []
        for policy in self.policies:
            failed = policy.failed
            decisions = policy.take(event, self.run)
            if policy.failed is not None and failed is None:
                error = policy.failed
                out.append(WarningRecord(
                    message=f"shadow policy {policy.label} failed on {event.kind} and decides "
                            f"no more; the run goes on: {type(error).__name__}: {error}",
                    details={"policy": policy.label, "event": event.kind,
                             "error": type(error).__name__}))
            for decision in decisions:
                out.append(ShadowDecision(
                    policy=policy.label, decision=decision.kind, reason=decision.reason,
                    code=decision.code, evidence=dict(decision.evidence),
                    value=decision.value if isinstance(decision, SetLearningRate) else None))
        return out


def _taker(kind: str) -> Any:
    def take(self: Shadow, event: Observation) -> list[ShadowDecision]:
        return self._take(event)

    take.__name__ = f"_take_{kind}"
    return hookimpl(specname=f"on_{kind}", trylast=True)(take)


for _hook in _HOOKS:
    setattr(Shadow, f"_take_{_hook[3:]}", _taker(_hook[3:]))
del _hook


def recorded_policies(params: Mapping[str, Any]) -> list[str]:
    """The policies' labels from the ``Shadow`` plugin's recorded parameters (a header's)."""
    policies = params.get("policies")
    if not isinstance(policies, list):
        return []
    return [p["label"] for p in policies
            if isinstance(p, Mapping) and isinstance(p.get("label"), str)]


def _built(policy: object) -> object:
    if not isinstance(policy, Mapping):
        return policy
    # A spec from a log header: only a registered plugin class, with checked parameters.
    from .registry import registry

    if set(policy) - {"name", "params", "filters", "label"} \
            or not isinstance(policy.get("name"), str) \
            or not isinstance(policy.get("params", {}), Mapping):
        raise ConfigError(f"Shadow: a recorded policy is malformed: {policy!r:.80}",
                          field="shadow", plugin="Shadow")
    if policy["name"] == Shadow.name:
        # Refused before it is built: a log nesting Shadows in Shadows would build each
        # level's policies, and spell each label, again for every level above it.
        raise ConfigError("Shadow: a recorded policy is a Shadow; a shadow policy cannot be "
                          "one", field="shadow", plugin="Shadow")
    plugin = registry.build(policy["name"], dict(policy.get("params", {})))
    return filtered(plugin, *recorded(policy.get("filters", ())))


def _describe(plugin: object, params: Mapping[str, Any]) -> str:
    """``EarlyStopping(patience=3)``: the policy's name and the parameters (``params``, as
    recorded) that differ from its class's defaults (all of them when the class has none)."""
    try:
        defaults = {name: p.default for name, p in
                    inspect.signature(type(plugin)).parameters.items()
                    if p.default is not p.empty}
    except (TypeError, ValueError):
        defaults = {}
    shown = {k: v for k, v in params.items() if k not in defaults or defaults[k] != v}
    inner = ", ".join(f"{k}={v!r}" for k, v in shown.items())
    return f"{plugin_name(plugin)}({inner})"


@dataclass
class ShadowSummary:
    """What one shadow policy would have done to the recorded run (see :func:`summarise`)."""

    policy: str
    #: Epochs the recorded run ran (its last fit), and the epoch (0-based) the shadow would
    #: have stopped at, with its reason; None when it would not have stopped.
    epochs_run: int
    stop_epoch: int | None = None
    stop_reason: str | None = None
    #: (epoch, rate) of each learning-rate change it would have made.
    rate_changes: list[tuple[int | None, float | None]] = field(default_factory=list)
    #: The metric it watched, its best over the recorded run and up to the shadow's stop.
    monitor: str | None = None
    best_recorded: float | None = None
    best_at_stop: float | None = None

    def text(self) -> str:
        """One sentence, epochs counted from 1 as the audit counts them."""
        parts = []
        if self.stop_epoch is not None:
            ran = self.stop_epoch + 1
            saved = 1 - ran / self.epochs_run if self.epochs_run else 0.0
            stop = (f"would have stopped at epoch {ran} of {self.epochs_run}: "
                    f"{saved:.0%} fewer epochs")
            if self.monitor and self.best_at_stop is not None \
                    and self.best_recorded is not None:
                stop += (f"; the same best {self.monitor}, {fmt(self.best_at_stop)}"
                         if self.best_at_stop == self.best_recorded else
                         f"; best {self.monitor} {fmt(self.best_at_stop)} instead of "
                         f"{fmt(self.best_recorded)}")
            parts.append(stop)
        if self.rate_changes:
            cuts = ", ".join(f"{fmt(rate)} at epoch {'-' if e is None else e + 1}"
                             for e, rate in self.rate_changes)
            parts.append(f"would have set the learning rate {len(self.rate_changes)} "
                         f"time(s): {cuts}")
        if not parts:
            parts.append(f"would have decided nothing within the {self.epochs_run} recorded "
                         "epochs")
        return f"shadow {self.policy} " + "; ".join(parts)


def summarise(shadow_decisions: Iterable[ShadowDecision],
              curves: Mapping[str, Sequence[tuple[int, Any]]], epochs_run: int,
              policies: Iterable[str] = ()) -> list[ShadowSummary]:
    """One summary per shadow policy, from its recorded decisions and the run's epoch metrics
    (``curves``: name -> [(epoch, value)], as the audit collects them). ``policies`` lists
    policies that decided nothing, so they are reported too."""
    out: dict[str, ShadowSummary] = {p: ShadowSummary(p, epochs_run) for p in policies}
    for d in shadow_decisions:
        summary = out.setdefault(d.policy, ShadowSummary(d.policy, epochs_run))
        if d.decision == "stop_training" and summary.stop_epoch is None:
            summary.stop_epoch, summary.stop_reason = d.epoch, d.reason
            monitor = d.evidence.get("monitor")
            if isinstance(monitor, str):
                summary.monitor = monitor
                mode = d.evidence.get("mode")
                mode = mode if mode in ("min", "max") else guess_mode(monitor)
                summary.best_recorded = _best(curves.get(monitor, ()), mode, None)
                summary.best_at_stop = _best(curves.get(monitor, ()), mode, d.epoch)
        elif d.decision == "set_learning_rate":
            summary.rate_changes.append((d.epoch, d.value))
    return list(out.values())


def _best(points: Iterable[tuple[int, Any]], mode: str | None, until: int | None) -> float | None:
    values = [v for e, v in points if (until is None or e <= until)
              and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not values or mode not in ("min", "max"):
        return None
    return min(values) if mode == "min" else max(values)
