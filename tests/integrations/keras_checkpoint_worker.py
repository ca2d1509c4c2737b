"""A Keras training run with ModelCheckpoint that SIGKILLs itself, for the resume tests.

    python keras_checkpoint_worker.py DIR KILL_AFTER EPOCHS

Builds the same model with the same initial weights every time, resumes the run in
``DIR/events.jsonl`` if there is one, writes the weights the model has once the bus is built
(after any restore) to ``DIR/start.npz``, prints ``started at epoch N`` and trains to ``EPOCHS``.
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
from eventbus.integrations.keras import KerasBridge, KerasModel  # noqa: E402
from plugins import ModelCheckpoint  # noqa: E402


class KillAfter(keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: object = None) -> None:
        if epoch == self.epoch:
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
    adapter = KerasModel(model)
    bus = Bus([ModelCheckpoint(os.path.join(directory, "last.keras"), monitor="loss")],
              log=os.path.join(directory, "events.jsonl"), model=adapter, resume=True)
    np.savez(os.path.join(directory, "start.npz"), *model.get_weights())
    print(f"started at epoch {bus.initial_epoch}", flush=True)
    with bus:
        model.fit(x, y, epochs=epochs, initial_epoch=bus.initial_epoch, batch_size=16,
                  shuffle=False, verbose=0, callbacks=[KerasBridge(bus), KillAfter(kill_after)])
    print("done", flush=True)


if __name__ == "__main__":
    main()
