"""A real training run with the built-in plugins, for the crash tests: killed with SIGKILL.

Usage: python crash_worker_builtin.py OUT

A NumPy MLP learns the demo's spirals. EarlyStopping and ReduceLROnPlateau watch val_loss,
ModelCheckpoint keeps the best model and the last one as HDF5 under OUT/checkpoints, CSVLogger
writes OUT/history.csv, TensorBoard OUT/tensorboard, and BackupAndRestore keeps the run's event
log and weights in OUT/backup (kept after the end: ``delete_checkpoint=False``). Run it again
after a kill and BackupAndRestore hands its log to the bus, which resumes from it: it goes on
where it was.

Deterministic across kills: the weights come back from the backup of the last finished epoch,
the learning rate from the log, and each epoch's batch order from a generator seeded by the
epoch alone, so a resumed epoch computes exactly what an uninterrupted one does. It prints a line
per event and waits for the parent's answer: see crash_runs.py.
"""

from __future__ import annotations

import os
import sys

# One BLAS thread: the same sums in the same order, so resumed runs are bit-identical.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402

from eventbus import Bus  # noqa: E402
from eventbus.demo import init_model, make_data  # noqa: E402
from plugins import (  # noqa: E402
    BackupAndRestore,
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TensorBoard,
)

EPOCHS, BATCH, SEED = 30, 32, 3


def plugins(out: str) -> list[object]:
    return [
        ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, min_lr=0.05),
        EarlyStopping(monitor="val_loss", patience=5, min_delta=1e-4),
        ModelCheckpoint(os.path.join(out, "checkpoints", "best-{epoch:02d}-{val_loss:.4f}.h5"),
                        monitor="val_loss", save_best_only=True),
        # The same target every epoch: each save replaces the file a kill may interrupt.
        ModelCheckpoint(os.path.join(out, "checkpoints", "last.h5")),
        CSVLogger(os.path.join(out, "history.csv")),
        TensorBoard(os.path.join(out, "tensorboard")),
        BackupAndRestore(os.path.join(out, "backup"), delete_checkpoint=False),
    ]


def forward(w: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.tanh(x @ w["dense/kernel"] + w["dense/bias"])
    return h, 1.0 / (1.0 + np.exp(-(h @ w["output/kernel"] + w["output/bias"])[:, 0]))


def loss_of(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(y * np.log(p + 1e-7) + (1 - y) * np.log(1 - p + 1e-7)))


def say(line: str) -> None:
    """Tell the parent what was just done; go on when it answers (it may kill us instead)."""
    print(line, flush=True)
    sys.stdin.readline()


def main(out: str) -> None:
    x, y, xv, yv = make_data(SEED, n=300)
    model = init_model(SEED, hidden=16)
    w = model.weights
    steps = -(-len(x) // BATCH)
    # The backup log is what the bus resumes from; the run's own log beside it is given the run
    # so far whenever it is behind (a kill in the first epoch can leave it empty).
    bus = Bus(plugins(out), model=model, log=os.path.join(out, "events.jsonl"), resume=True)
    say(f"started at epoch {bus.initial_epoch}")
    bus.train_begin({"epochs": EPOCHS, "steps": steps})
    say("train_begin")
    for epoch in range(bus.initial_epoch, EPOCHS):
        if bus.stop_training:
            break
        bus.epoch_begin(epoch)
        say(f"epoch_begin {epoch}")
        order = np.random.default_rng([SEED, epoch]).permutation(len(x))
        for batch in range(steps):
            idx = order[batch * BATCH:(batch + 1) * BATCH]
            bus.batch_begin(batch, {"size": len(idx)})
            say(f"batch_begin {epoch} {batch}")
            h, p = forward(w, x[idx])
            dz = (p - y[idx])[:, None] / len(idx)
            dh = (dz @ w["output/kernel"].T) * (1 - h * h)
            lr = model.learning_rate
            w["output/kernel"] -= lr * h.T @ dz
            w["output/bias"] -= lr * dz.sum(axis=0)
            w["dense/kernel"] -= lr * x[idx].T @ dh
            w["dense/bias"] -= lr * dh.sum(axis=0)
            bus.batch_end(batch, {"loss": loss_of(p, y[idx])})
            say(f"batch_end {epoch} {batch}")
        bus.epoch_end(epoch, {"loss": loss_of(forward(w, x)[1], y),
                              "val_loss": loss_of(forward(w, xv)[1], yv)})
        say(f"epoch_end {epoch}")
    bus.train_end()
    say("train_end")
    bus.close()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
