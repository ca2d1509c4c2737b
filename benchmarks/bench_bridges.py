"""Bridge speed: what each framework bridge adds to the bus's own per-batch cost.

Run: ``python benchmarks/bench_bridges.py`` (``--quick`` for a smaller run, ``--check`` to exit
1 when a ratio is above the budget). For every bridge, one training batch (begin and end) is
timed twice in this process: through the bridge's hook methods, and with the same bus called
directly with the same values. The ratio is bridge / direct; the budget is 1.5.

The framework's own dispatch (Keras's CallbackList, Lightning's hook calls) is not timed: it
runs whether or not the bus is there. Two buses: one with a batch subscriber and a JSON Lines
log (a real run), one with the subscriber only (the cheapest bus, so the largest ratio).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eventbus import Bus, Plugin, hookimpl  # noqa: E402

BUDGET = 1.5


def best_of(fn: Any, n: int, repeat: int = 5) -> float:
    """Microseconds per call of fn(n); the best of ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


class Counter(Plugin):
    """A cheap real subscriber: reads the batch's loss."""

    def __init__(self) -> None:
        self.total = 0.0

    @hookimpl
    def on_batch_end(self, event: Any) -> None:
        self.total += event.logs["loss"]


def make_bus(log: str | None, cls: type[Bus] = Bus) -> Bus:
    bus = cls([Counter()], log=log, learning_rate=0.01)
    bus.train_begin({"epochs": 1})
    bus.epoch_begin(0)
    return bus


def direct(bus: Bus, logs: dict[str, Any]) -> Any:
    def run(n: int) -> None:
        begin, end = bus.batch_begin, bus.batch_end
        for i in range(n):
            begin(i)
            end(i, logs)
            if bus.stop_training:  # what any loop checks after a batch
                break

    return run


def keras_cases(log: str | None) -> list[tuple[str, Any, Any]]:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras

        from eventbus.integrations.keras import KerasBridge
    except Exception as exc:  # not installed, or no usable backend
        print(f"keras: skipped ({type(exc).__name__}: {exc})")
        return []
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    logs = {"loss": 0.6931, "accuracy": 0.5}  # Keras hands callbacks Python floats
    bus = make_bus(log)
    bridge = KerasBridge(bus)
    bridge.set_model(model)

    def via(n: int) -> None:
        begin, end = bridge.on_train_batch_begin, bridge.on_train_batch_end
        for i in range(n):
            begin(i, logs)
            end(i, logs)

    # Keras passes logs to batch_begin too; the direct call gets the same.
    def straight(n: int) -> None:
        begin, end = bus.batch_begin, bus.batch_end
        for i in range(n):
            begin(i, logs)
            end(i, logs)
            if bus.stop_training:
                break

    return [("keras", via, straight)]


def lightning_cases(log: str | None) -> list[tuple[str, Any, Any]]:
    try:
        import torch

        from eventbus.integrations.lightning import LightningBridge
    except Exception as exc:
        print(f"lightning: skipped ({type(exc).__name__}: {exc})")
        return []

    class Trainer:  # the attributes the batch hooks touch
        should_stop = False

    loss = torch.tensor(0.6931)
    outputs = {"loss": loss}
    bus = make_bus(log)
    bridge = LightningBridge(bus, attach_model=False)
    trainer = Trainer()

    def via(n: int) -> None:
        begin, end = bridge.on_train_batch_start, bridge.on_train_batch_end
        for i in range(n):
            begin(trainer, None, None, i)
            end(trainer, None, outputs, None, i)

    return [("lightning", via, direct(bus, {"loss": loss.detach()}))]


def torch_cases(log: str | None) -> list[tuple[str, Any, Any]]:
    try:
        import torch

        from eventbus.integrations.distributed import DistributedBus
        from eventbus.integrations.torch import scalars
    except Exception as exc:
        print(f"torch: skipped ({type(exc).__name__}: {exc})")
        return []
    logs = {"loss": torch.tensor(0.6931), "acc": torch.tensor(0.5)}
    bus = make_bus(log)

    def via(n: int) -> None:
        begin, end = bus.batch_begin, bus.batch_end
        for i in range(n):
            begin(i)
            end(i, scalars(logs))  # the bridge's one-copy conversion, in place of the bus's
            if bus.stop_training:
                break

    cases = [("torch scalars()", via, direct(bus, logs))]
    # The distributed bus adds nothing per batch (its agreement is at epoch ends).
    dbus = make_bus(log and log + ".d.jsonl", DistributedBus)
    cases.append(("distributed (1 rank)", direct(dbus, {"loss": 0.6931}),
                  direct(make_bus(log and log + ".p.jsonl"), {"loss": 0.6931})))
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches")
    parser.add_argument("--check", action="store_true", help=f"exit 1 above {BUDGET}x")
    args = parser.parse_args(argv)
    n = 5_000 if args.quick else 30_000
    over = []
    with tempfile.TemporaryDirectory() as tmp:
        for title, log in (("subscriber + JSON Lines log", str(Path(tmp) / "events.jsonl")),
                           ("subscriber only, no log", None)):
            cases = keras_cases(log) + lightning_cases(log) + torch_cases(log)
            print(f"\n{title}: µs per batch (begin + end), best of 30 samples of {n // 10}")
            print(f"  {'bridge':<22} {'direct':>8} {'bridge':>8} {'ratio':>6}")
            for name, via, straight in cases:
                # Many short samples, interleaved, the best of each side: a busy neighbour
                # on a shared machine slows some samples, rarely all of them.
                d = b = float("inf")
                for _ in range(30):
                    d = min(d, best_of(straight, n // 10, repeat=1))
                    b = min(b, best_of(via, n // 10, repeat=1))
                ratio = b / d
                flag = "" if ratio <= BUDGET else f"  over {BUDGET}x"
                if flag:
                    over.append(f"{name} ({title})")
                print(f"  {name:<22} {d:8.2f} {b:8.2f} {ratio:6.2f}{flag}")
    if over:
        print(f"\nover budget: {', '.join(over)}")
    return 1 if args.check and over else 0


if __name__ == "__main__":
    raise SystemExit(main())
