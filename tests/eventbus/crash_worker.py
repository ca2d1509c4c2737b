"""A training run for the crash tests: started as a subprocess and killed with SIGKILL.

Usage: python crash_worker.py LOG[,LOG...]. Deterministic: the metrics depend only on the epoch
and batch, so an interrupted-and-resumed run must decide exactly as a clean one. It prints a line
per event and waits for the parent's answer: see crash_runs.py.
"""

from __future__ import annotations

import math
import sys

from eventbus import Bus, Plugin, hookimpl
from eventbus import records as r

EPOCHS, BATCHES = 12, 8


class Plateau(Plugin):
    """Halves the learning rate after 2 flat epochs; stops after 4 (a stateful rule)."""
    logs_learning_rate = True  # its rule reads the rate from the logs

    def __init__(self, cut_after: int = 2, stop_after: int = 4):
        self.cut_after, self.stop_after = cut_after, stop_after
        self.best, self.wait, self.flat = math.inf, 0, 0

    @hookimpl
    def on_epoch_end(self, event):
        value = event.logs["val_loss"]
        if value < self.best - 1e-9:
            self.best, self.wait, self.flat = value, 0, 0
            return None
        self.wait += 1
        self.flat += 1
        out = []
        if self.flat >= self.cut_after:
            self.flat = 0
            lr = event.logs["learning_rate"]
            out.append(r.SetLearningRate(value=lr / 2, previous=lr, reason="flat",
                                         evidence={"best": self.best}))
        if self.wait >= self.stop_after:
            out.append(r.StopTraining(reason=f"no improvement for {self.wait} epochs",
                                      evidence={"best": self.best, "wait": self.wait}))
        return out


class NanWatch(Plugin):
    """Counts batches (state rebuilt from batch events on resume)."""

    def __init__(self):
        self.batches = 0

    @hookimpl
    def on_batch_end(self, event):
        self.batches += 1
        if event.step == 10_000:
            return r.StopTraining(reason="never")
        return None


def val_loss(epoch: int) -> float:
    return [1.0, 0.8, 0.7, 0.72, 0.71, 0.65, 0.66, 0.67, 0.68, 0.69, 0.6, 0.5][epoch]


def say(line: str) -> None:
    """Tell the parent what was just done; go on when it answers (it may kill us instead)."""
    print(line, flush=True)
    sys.stdin.readline()


def main(path: str) -> None:
    bus = Bus([Plateau(), NanWatch()], log=path.split(","), learning_rate=0.1, resume=True)
    say(f"started at epoch {bus.initial_epoch}")
    bus.train_begin({"epochs": EPOCHS})
    say("train_begin")
    for epoch in range(bus.initial_epoch, EPOCHS):
        if bus.stop_training:
            break
        bus.epoch_begin(epoch)
        say(f"epoch_begin {epoch}")
        for batch in range(BATCHES):
            bus.batch_begin(batch, {"size": 4})
            say(f"batch_begin {epoch} {batch}")
            bus.batch_end(batch, {"loss": 1.0 / (1 + epoch + batch / BATCHES)})
            say(f"batch_end {epoch} {batch}")
        bus.epoch_end(epoch, {"val_loss": val_loss(epoch), "loss": 1.0 / (1 + epoch)})
        say(f"epoch_end {epoch}")
    bus.train_end()
    say("train_end")
    bus.close()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
