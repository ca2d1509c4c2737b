"""Issue 17, target 1: ``batch_end`` against the floor and against the peers, in one process.

Run: ``python benchmarks/bench_peers.py`` (``--quick``: under a minute; ``--smoke``: a second
or two, without Keras and Lightning). Prints markdown tables of medians over interleaved rounds:

- 12 metric-reading subscribers (``_common.MetricReader``: a few metrics and a few of its own
  attributes per hook), JSON Lines log on: the bus against the hand-written floor, Keras 3's
  ``CallbackList`` (sync, the path Keras takes for callbacks that override
  ``on_train_batch_end`` without ``async_safe = True``; and its async path, the same callbacks
  marked ``async_safe``, torch backend), Lightning's ``_call_callback_hooks`` on a real
  ``Trainer``, ignite's ``_fire_event`` when installed. The peers record nothing.
- every built-in plugin alone on the bus with a JSON Lines log, against the floor calling the
  same plugin's ``batch_end`` hook directly (a fresh instance, never registered);
- growth: ns per extra subscriber (4 to 24) and per extra metric (1 to 32), a fitted line;
- the unsubscribed path: a ``batch_begin`` nobody takes, in µs.

Targets (issue 17): bus / floor <= 1.15x; faster than Keras's sync ``CallbackList``; every
built-in <= 1.15x its direct call; <= 100 ns per subscriber, <= 50 ns per metric; the
unsubscribed event <= 0.2 µs. Nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere

from _common import (  # noqa: E402
    LOGS,
    Bus,
    MetricReader,
    best_ratio,
    bus_run,
    floor,
    interleaved,
    median,
    metrics,
    modes,
    ratio,
    slope,
    table,
)

SUBS = 12


# --- the peers ------------------------------------------------------------------------------

def keras_runs(n_subs: int, logs: dict[str, float], *, async_: bool = False) -> Any:
    """Keras 3's CallbackList with ``n_subs`` metric-reading callbacks, or None."""
    try:
        import keras
    except Exception:  # not installed, or no usable backend
        return None

    class KerasReader(keras.callbacks.Callback):
        async_safe = async_  # Keras dispatches batch ends on a thread only if every one says so

        def __init__(self, monitor: str = "loss") -> None:
            super().__init__()
            self.monitor = monitor
            self.total = 0.0
            self.count = 0
            self.best = float("inf")
            self.wait = 0

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            value = logs[self.monitor]
            self.total += value + logs.get("acc", 0.0)
            self.count += 1
            if value < self.best:
                self.best = value
            else:
                self.wait += 1

    cbs = keras.callbacks.CallbackList([KerasReader() for _ in range(n_subs)],
                                       add_history=False, add_progbar=False)
    assert cbs._async_train is async_, "Keras chose another dispatch than the one measured"
    cbs.on_train_begin()  # starts the executor of the async path
    cbs.on_epoch_begin(0)
    the_logs = dict(logs)

    def run(n: int) -> None:
        end = cbs.on_train_batch_end
        for i in range(n):
            end(i, the_logs)
        if async_:
            cbs.on_epoch_end(0, {})  # waits for the queued batch ends, as Keras does

    return run, lambda: cbs.on_train_end()


def lightning_run(n_subs: int, logs: dict[str, float]) -> Any:
    """Lightning's own callback loop on a real Trainer with a module attached, or None."""
    try:
        import lightning.pytorch as pl
        import torch
        from lightning.pytorch.trainer.call import _call_callback_hooks
    except Exception:
        return None

    class LightningReader(pl.Callback):
        def __init__(self, monitor: str = "loss") -> None:
            self.monitor = monitor
            self.total = 0.0
            self.count = 0
            self.best = float("inf")
            self.wait = 0

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                               batch_idx: int) -> None:
            value = outputs[self.monitor]
            self.total += value + outputs.get("acc", 0.0)
            self.count += 1
            if value < self.best:
                self.best = value
            else:
                self.wait += 1

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

    import logging
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(callbacks=[LightningReader() for _ in range(n_subs)], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.strategy.connect(Module())
    assert len(trainer.callbacks) == n_subs, [type(c).__name__ for c in trainer.callbacks]
    outputs = dict(logs)

    def run(n: int) -> None:
        for i in range(n):
            _call_callback_hooks(trainer, "on_train_batch_end", outputs, None, i)

    return run, lambda: None


def ignite_run(n_subs: int, logs: dict[str, float]) -> Any:
    """ignite's Engine firing ITERATION_COMPLETED to ``n_subs`` handlers, or None."""
    try:
        from ignite.engine import Engine, Events
    except Exception:
        return None
    engine = Engine(lambda e, b: None)
    state = {"total": 0.0}

    def handler(engine: Any) -> None:
        value = engine.state.output["loss"]
        state["total"] += value + engine.state.output.get("acc", 0.0)

    for _ in range(n_subs):
        engine.add_event_handler(Events.ITERATION_COMPLETED, handler)
    engine.state.output = dict(logs)

    def run(n: int) -> None:
        fire = engine._fire_event
        for _ in range(n):
            fire(Events.ITERATION_COMPLETED)

    return run, lambda: None


class _AsHook:
    """A sink's ``write`` called as the floor calls hooks: with the record the event wraps."""

    def __init__(self, write: Any) -> None:
        self.on_batch_end = lambda event: write(event.__dict__)


class _Hook:
    """A hook method under another name, called as the floor calls ``on_batch_end``."""

    def __init__(self, hook: Any) -> None:
        self.on_batch_end = hook


def _hook_named(plugin: Any, spec: str) -> Any:
    """What the bus calls for ``plugin``'s hook ``spec``: the dispatcher's own handler (a hook
    at a Keras method's name is also a Keras method; the bus calls the hook)."""
    from eventbus.dispatch import Dispatcher

    dispatcher = Dispatcher()
    dispatcher.register(plugin)
    handlers = dispatcher.handlers(spec, plugin)
    if not handlers:
        raise LookupError(f"{type(plugin).__name__} has no {spec} hook")
    return handlers[0]


# --- the sections ---------------------------------------------------------------------------

def readers(tmp: Path, chunk: int, rounds: int, peers: bool) -> None:
    runs: dict[str, Any] = {}
    closers = []

    def add(label: str, made: Any) -> None:
        if made is not None:
            runs[label], close = made
            closers.append(close)

    add("floor", floor([MetricReader() for _ in range(SUBS)], str(tmp / "floor.jsonl")))
    add("bus", bus_run([MetricReader() for _ in range(SUBS)], tmp / "bus.jsonl"))
    missing = []
    if peers:
        for label, made in (
                ("keras CallbackList, sync", keras_runs(SUBS, LOGS)),
                ("keras CallbackList, async (torch backend)", keras_runs(SUBS, LOGS, async_=True)),
                ("lightning _call_callback_hooks", lightning_run(SUBS, LOGS)),
                ("ignite _fire_event", ignite_run(SUBS, LOGS))):
            if made is None:
                missing.append(label.split()[0])
            add(label, made)
    samples = interleaved(runs, chunk, rounds)
    for close in closers:
        close()
    rows = []
    for label in runs:
        bus_over = best_ratio(samples, "bus", label)
        rows.append([label, median(samples[label]), min(samples[label]),
                     f"{ratio(samples, 'bus', label):.2f}x", f"{bus_over:.2f}x",
                     "the floor" if label == "floor" else
                     ("" if label == "bus" else
                      ("the bus is faster" if bus_over < 1 else "the bus is slower"))])
    table(f"`batch_end`, {SUBS} metric-reading subscribers, JSON Lines log (the peers record "
          "nothing)", ["", "µs (median)", "µs (best)", "bus / this (median of rounds)",
                       "bus / this (best)", ""], rows,
          f"({rounds} interleaved rounds of {chunk:,} calls; target: bus / floor "
          "<= 1.15x, bus / keras sync < 1x)")
    if missing:
        print(f"\nnot installed or not usable here: {', '.join(missing)}")


def builtin_plugins(tmp: Path) -> list[Any]:
    """One of every built-in plugin, configured to stay quiet (bench_core.py's set)."""
    from bench_core import builtin_plugins as made
    return made(tmp)[0]


def per_plugin(tmp: Path, chunk: int, rounds: int) -> None:
    runs: dict[str, Any] = {}
    closers = []
    names = []
    fresh_ones, probes = builtin_plugins(tmp / "direct"), builtin_plugins(tmp / "probe")
    for i, plugin in enumerate(builtin_plugins(tmp / "bus")):
        name, fresh = type(plugin).__name__, fresh_ones[i]
        probe = Bus([probes[i]])
        taken = probe.subscribers("batch_end")
        subscribed = bool(taken)
        probe.close()
        if not subscribed:
            direct = []
        elif hasattr(fresh, "on_batch_end"):
            direct = [fresh]  # never registered anywhere
        elif hasattr(fresh, "write"):  # a sink: its write gets the record (one lambda more)
            direct = [_AsHook(fresh.write)]
        else:  # a hook under another name (LambdaCallback's, by pluggy's specname)
            direct = [_Hook(_hook_named(fresh, "on_batch_end"))]
        try:
            run, close = floor(direct, str(tmp / f"direct-{i}.jsonl"))
            run(10)  # a plugin that cannot be called without the bus's set-up
        except Exception as exc:
            print(f"{name}: its hook cannot be called directly ({type(exc).__name__}: {exc})")
            continue
        runs[f"{name} direct"], runs[f"{name} bus"] = run, None
        closers.append(close)
        bus, close = bus_run([plugin], tmp / f"bus-{i}.jsonl")
        runs[f"{name} bus"] = bus
        closers.append(close)
        names.append((name, subscribed))
    samples = interleaved(runs, chunk, rounds)
    for close in closers:
        close()
    rows = [[name, "yes" if sub else "no", median(samples[f"{name} direct"]),
             median(samples[f"{name} bus"]),
             f"{ratio(samples, f'{name} bus', f'{name} direct'):.2f}x",
             f"{best_ratio(samples, f'{name} bus', f'{name} direct'):.2f}x"]
            for name, sub in names]
    table("Every built-in plugin on the bus, JSON Lines log, against its `batch_end` hook "
          "called directly (the floor with that one plugin)",
          ["plugin", "takes batch_end", "direct µs (median)", "bus µs (median)",
           "bus / direct (median of rounds)", "bus / direct (best)"], rows,
          "(target <= 1.15x)")


def growth(tmp: Path, chunk: int, rounds: int, peers: bool, smoke: bool = False) -> None:
    subs_axis, metric_axis = [4, 8, 12, 16, 20, 24], [1, 2, 4, 8, 16, 32]
    if smoke:  # the ends only
        subs_axis, metric_axis = [4, 24], [1, 32]
    runs: dict[str, Any] = {}
    closers = []
    systems = ["floor", "bus"] + (["keras sync"] if peers else [])

    def make(system: str, n_subs: int, logs: dict[str, float], tag: str) -> Any:
        if system == "floor":
            return floor([MetricReader() for _ in range(n_subs)], str(tmp / f"g{tag}.jsonl"), logs)
        if system == "bus":
            return bus_run([MetricReader() for _ in range(n_subs)], tmp / f"g{tag}.jsonl", logs)
        return keras_runs(n_subs, logs)

    for system in systems:
        for k in subs_axis:
            made = make(system, k, LOGS, f"{system}-s{k}")
            if made is not None:
                runs[f"{system} s{k}"], close = made
                closers.append(close)
        for m in metric_axis:
            made = make(system, SUBS, metrics(m), f"{system}-m{m}")
            if made is not None:
                runs[f"{system} m{m}"], close = made
                closers.append(close)
    samples = interleaved(runs, chunk, rounds)
    for close in closers:
        close()
    rows = []
    for system in systems:
        if f"{system} s4" not in samples:
            continue
        def fit(axis: list[int], key: str, pick: Any, system: str = system) -> float:
            return slope(axis, [pick(samples[f"{system} {key}{x}"]) for x in axis]) * 1000

        rows.append([system, f"{fit(subs_axis, 's', min):.0f}",
                     f"{fit(subs_axis, 's', median):.0f}", f"{fit(metric_axis, 'm', min):.0f}",
                     f"{fit(metric_axis, 'm', median):.0f}", min(samples[f"{system} s4"]),
                     min(samples[f"{system} s24"]), min(samples[f"{system} m32"])])
    table("Growth: ns per extra subscriber (4 to 24, two metrics) and per extra metric (1 to 32, "
          "12 subscribers), a least-squares line over the best rounds and over the medians",
          ["", "ns / subscriber (best)", "(median)", "ns / metric (best)", "(median)",
           "µs, 4 subs (best)", "µs, 24 subs (best)", "µs, 32 metrics (best)"],
          rows, "(targets: bus <= 100 ns per subscriber, <= 50 ns per metric)")


def unsubscribed(tmp: Path, chunk: int, rounds: int) -> None:
    runs: dict[str, Any] = {}
    closers = []
    for label, plugins, log in (
            ("no plugins, no log", [], None),
            (f"{SUBS} batch_end subscribers, no log", [MetricReader() for _ in range(SUBS)], None),
            (f"{SUBS} batch_end subscribers, JSON Lines log",
             [MetricReader() for _ in range(SUBS)], tmp / "u.jsonl")):
        runs[label], close = bus_run(plugins, log, kind="batch_begin")
        closers.append(close)
    samples = interleaved(runs, chunk, rounds)
    for close in closers:
        close()
    table("`batch_begin` that no plugin subscribes to",
          ["bus", "µs per call (median)", "µs (best)"],
          [[k, median(v), min(v)] for k, v in samples.items()],
          "(target <= 0.2 µs; with a log the event may be recorded, which is not this path)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes(parser)
    parser.add_argument("--only", choices=["readers", "plugins", "growth", "unsubscribed"],
                        action="append", help="run only these sections")
    args = parser.parse_args(argv)
    if args.smoke:
        chunk, rounds = 200, 2
    elif args.quick:  # many short rounds (see _common.interleaved)
        chunk, rounds = 300, 41
    else:
        chunk, rounds = 300, 151
    peers = not args.smoke
    sections = args.only or ["readers", "plugins", "growth", "unsubscribed"]
    warnings.simplefilter("ignore", DeprecationWarning)
    with tempfile.TemporaryDirectory(prefix="eventbus-peers-") as name:
        tmp = Path(name)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; interleaved rounds, "
              "medians; the ratios, not the microseconds, are what compare")
        if "readers" in sections:
            readers(tmp, chunk, rounds, peers)
        if "plugins" in sections:
            per_plugin(tmp, chunk, rounds)
        if "growth" in sections:
            growth(tmp, chunk, rounds, peers, args.smoke)
        if "unsubscribed" in sections:
            unsubscribed(tmp, chunk * 5, rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
