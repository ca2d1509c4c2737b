"""A Keras training run with ModelCheckpoint that SIGKILLs itself, for the resume tests.

    python keras_checkpoint_worker.py DIR KILL_AFTER EPOCHS

Builds the same model with the same initial weights every time, resumes the run in
``DIR/events.jsonl`` if there is one, and fits to ``EPOCHS`` through a KerasBridge; as the first
epoch begins, writes the model's weights to ``DIR/start.npz`` and prints ``started at epoch N``.
Once epoch ``KILL_AFTER`` (0-based) has ended, and the bus has recorded it, the process kills
itself with SIGKILL; -1 never. The checkpoint is ``DIR/last.keras``, saved every epoch.
"""

from __future__ import annotations

import os
import signal
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from eventbus import Bus  # noqa: E402
from eventbus.integrations.keras import KerasBridge  # noqa: E402
from plugins import ModelCheckpoint  # noqa: E402


class Probe(keras.callbacks.Callback):
    """After the bridge: writes the weights the first epoch starts with and says which epoch
    it is; SIGKILLs the process once epoch ``kill_after`` has ended (and been recorded)."""

    def __init__(self, directory: str, kill_after: int):
        super().__init__()
        self.directory = directory
        self.kill_after = kill_after
        self.started = False

    def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
        if not self.started:
            self.started = True
            np.savez(os.path.join(self.directory, "start.npz"), *self.model.get_weights())
            print(f"started at epoch {epoch}", flush=True)

    def on_epoch_end(self, epoch: int, logs: object = None) -> None:
        if epoch == self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))


def run(directory: str, kill_after: int, epochs: int) -> None:
    """The run (the tests call it in their own process to resume, with ``kill_after=-1``)."""
    keras.utils.set_random_seed(1)  # a fresh model starts from the same weights every time
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]])).astype("float32")
    # No model given and no initial_epoch: the bridge attaches the model, the resumed run
    # gets its checkpoint back before the first epoch and fit starts where it stopped.
    bus = Bus([ModelCheckpoint(os.path.join(directory, "last.keras"), monitor="loss")],
              log=os.path.join(directory, "events.jsonl"), resume=True)
    with bus:
        model.fit(x, y, epochs=epochs, batch_size=16, shuffle=False, verbose=0,
                  callbacks=[KerasBridge(bus), Probe(directory, kill_after)])
    print("done", flush=True)


if __name__ == "__main__":
    main()
