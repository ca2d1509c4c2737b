"""What the issue-17 benchmarks share: the metric-reading subscriber, the hand-written floor,
medians of interleaved rounds, a line fit, and the markdown table each script prints.

Only public names of the library are used (``Bus``, ``Plugin``, ``hookimpl``), so the scripts
run against whatever tree they sit in. The floor is bench_core.py's, with the metrics as a
parameter (bench_core's is fixed to two).
"""

from __future__ import annotations

import gc
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/x.py``: the tree's own package
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from eventbus import Bus, Plugin, hookimpl  # noqa: E402

LOGS = {"loss": 0.6931, "acc": 0.5}


def metrics(n: int) -> dict[str, float]:
    """``n`` metrics, ``loss`` and ``acc`` first (the ones the readers read)."""
    logs = dict(LOGS)
    for i in range(len(logs), n):
        logs[f"m{i}"] = 0.25 + i / 1000
    return dict(list(logs.items())[:max(n, 1)])


class MetricReader(Plugin):
    """A subscriber doing what a real cheap one does in every hook: read a few metrics and
    some of its own state (a running sum, a count, a best value, a patience counter)."""

    def __init__(self, monitor: str = "loss") -> None:
        self.monitor = monitor
        self.total = 0.0
        self.count = 0
        self.best = float("inf")
        self.wait = 0

    @hookimpl
    def on_batch_end(self, event: Any) -> None:
        logs = event.logs
        value = logs[self.monitor]
        self.total += value + logs.get("acc", 0.0)
        self.count += 1
        if value < self.best:
            self.best = value
        else:
            self.wait += 1


def hook_of(subscriber: Any, hook: str) -> Callable[[Any], Any]:
    """The function the bus calls for ``subscriber``'s ``hook`` (on a plugin, a method at a
    Keras name is also that Keras method: called with a plain object, it would be taken for
    Keras's call), else the attribute itself."""
    from eventbus.dispatch import Dispatcher

    dispatcher = Dispatcher()
    try:
        dispatcher.register(subscriber)
    except Exception:
        return getattr(subscriber, hook)
    handlers = dispatcher.handlers(hook, subscriber)
    return handlers[0] if handlers else getattr(subscriber, hook)


class _Event:
    """The cheapest object with attributes: what a hand-written bus would hand subscribers."""


def floor(subscribers: list[Any], path: str, logs: Mapping[str, float] = LOGS,
          hook: str = "on_batch_end") -> tuple[Callable[[int], None], Callable[[], None]]:
    """Hand-written dispatch: the record dict, a bare attribute object, pre-bound calls, orjson,
    a 1 MiB buffered file. What any recording bus must at least do (bench_core.py's floor)."""
    calls = [hook_of(s, hook) for s in subscribers]
    out = open(path, "wb", buffering=1 << 20)  # noqa: SIM115
    dumps, option, now = orjson.dumps, orjson.OPT_APPEND_NEWLINE, time.time
    new, setattr_ = object.__new__, object.__setattr__
    template = dict(logs)

    def run(n: int) -> None:
        for i in range(n):
            record = {"v": 1, "run_id": "r", "seq": i, "kind": "batch_end", "time": now(),
                      "logs": template.copy(), "epoch": 0, "batch": i, "step": i}
            event = new(_Event)
            setattr_(event, "__dict__", record)
            for call in calls:
                call(event)
            out.write(dumps(record, option=option))

    return run, out.close


def bus_run(plugins: list[Any], log: Any, logs: Mapping[str, Any] = LOGS,
            kind: str = "batch_end") -> tuple[Callable[[int], None], Callable[[], None]]:
    """The bus with ``plugins`` and ``log``, in a training epoch, publishing ``kind``."""
    bus = Bus(plugins, log=log, learning_rate=0.01)
    bus.train_begin({"epochs": 1})
    bus.epoch_begin(0)
    the_logs = dict(logs)

    def run(n: int) -> None:
        publish = getattr(bus, kind)
        for i in range(n):
            publish(i, the_logs)

    return run, bus.close


def interleaved(runs: Mapping[str, Callable[[int], None]], chunk: int,
                rounds: int) -> dict[str, list[float]]:
    """Microseconds per call of each run in each round; every round times every run.

    The machine's speed drifts from minute to minute: timing every configuration in each
    round makes a ratio compare measurements taken moments apart. Keep rounds short (about a
    millisecond): then many of them run without losing the core to another process.
    """
    samples: dict[str, list[float]] = {label: [] for label in runs}
    for run in runs.values():
        run(max(chunk // 10, 100))  # warm up
    gc.collect()
    gc.freeze()  # what is alive now is never collected: each collect below stays cheap
    for _ in range(rounds):
        for label, run in runs.items():
            gc.collect()
            start = time.perf_counter()
            run(chunk)
            samples[label].append((time.perf_counter() - start) / chunk * 1e6)
    gc.unfreeze()
    return samples


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def ratio(samples: Mapping[str, list[float]], a: str, b: str) -> float:
    """The median over rounds of a / b, each round's pair measured moments apart."""
    return statistics.median(x / y for x, y in zip(samples[a], samples[b]))


def best_ratio(samples: Mapping[str, list[float]], a: str, b: str) -> float:
    """a / b of the best rounds. On a loaded machine a short round is either left alone or
    loses the core for a whole time slice (milliseconds): noise only adds, and the best
    rounds are the work itself. The medians are printed beside it."""
    return min(samples[a]) / min(samples[b])


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def command() -> str:
    """The command that reproduces this run, as typed from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = script.relative_to(ROOT)
    except ValueError:
        shown = script
    return f"python {shlex.join([str(shown), *sys.argv[1:]])}"


def table(title: str, header: list[str], rows: list[list[Any]], note: str = "") -> None:
    """Print one markdown table, with the command that reproduces it under it."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |")
    for row in rows:
        print("| " + " | ".join(_cell(c) for c in row) + " |")
    print(f"\n`{command()}`" + (f" {note}" if note else ""))
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def modes(parser: Any) -> None:
    """The run-length flags every script takes."""
    parser.add_argument("--quick", action="store_true", help="a shorter run (under a minute)")
    parser.add_argument("--smoke", action="store_true",
                        help="a run of a second or two that only checks the script works")
