"""A training run writing to MLflow, for the crash test: started as a subprocess, SIGKILLed.

Usage: python mlflow_worker.py LOG TRACKING_URI. The decisions are deterministic (val_loss
depends only on the epoch); batch losses differ by attempt. It prints ``started``, then a line
per event it has just published, and ``flushed N`` when the event log has flushed epoch N's end
but the MLflow sink has not yet (a sink between the two waits there), and ``done`` at the end.
After each line but ``done`` it waits for a line on stdin (none at the end of stdin), so the
parent can kill it exactly there.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This checkout's packages, whatever is installed; and the crash test's plugin beside them.
sys.path[:0] = [str(Path(__file__).parents[2]), str(Path(__file__).parents[1] / "eventbus")]

from eventbus import Bus, Plugin, Sink, hookimpl  # noqa: E402
from eventbus import records as r  # noqa: E402
from sinks.mlflow import MLflowSink  # noqa: E402

from crash_worker import Plateau, val_loss  # noqa: E402

EPOCHS, BATCHES = 7, 4


def say(line: str) -> None:
    print(line, flush=True)
    sys.stdin.readline()


class Between(Sink):
    """Listed after the event log and before MLflow: its flush runs when the log has flushed
    and MLflow has not; it says so and waits there."""

    takes = frozenset({"epoch_end"})
    name = "between"

    def __init__(self) -> None:
        self.ended: int | None = None

    def write(self, record):
        self.ended = record["epoch"]

    def flush(self) -> None:
        if self.ended is not None:
            say(f"flushed {self.ended}")
            self.ended = None


class MidEpoch(Plugin):
    """Sets the learning rate at epoch 4's first batch: a decision flushes the bus mid-epoch."""

    @hookimpl
    def on_batch_end(self, event):
        if event.epoch == 4 and event.batch == 0:
            return r.SetLearningRate(value=0.05, reason="mid-epoch")
        return None


def main(log: str, uri: str) -> None:
    sink = MLflowSink(uri, experiment="crash", batch_every=1)
    bus = Bus([Plateau(cut_after=2, stop_after=10), MidEpoch()], log=[log, Between(), sink],
              learning_rate=0.1, resume=True)
    say(f"started at epoch {bus.initial_epoch}")
    # Batch losses differ by attempt (each starts at another epoch): MLflow holding what an
    # abandoned partial epoch sent, instead of what the resumed run logged, shows.
    attempt = bus.initial_epoch * 1e-6
    bus.train_begin({"epochs": EPOCHS})
    for epoch in range(bus.initial_epoch, EPOCHS):
        bus.epoch_begin(epoch)
        for batch in range(BATCHES):
            bus.batch_begin(batch)
            bus.batch_end(batch, {"loss": 1.0 / (1 + epoch + batch / BATCHES) + attempt})
            say(f"batch_end {epoch} {batch}")
        bus.epoch_end(epoch, {"val_loss": val_loss(epoch), "loss": 1.0 / (1 + epoch)})
        say(f"epoch_end {epoch}")
    bus.train_end()
    bus.close()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
