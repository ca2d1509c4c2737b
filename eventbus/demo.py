"""``eventbus demo``: a real training run, in plain NumPy, with the built-in plugins switched on.

A two-layer network learns two interleaved noisy spirals from a small training set (so it
starts to overfit) (data made here, nothing downloaded)
with mini-batch SGD. The bus records everything to ``events.jsonl`` and ``events.parquet``;
ReduceLROnPlateau cuts the learning rate when validation loss stalls, EarlyStopping stops the run
and restores the best weights, ModelCheckpoint keeps the best model as HDF5, CSVLogger and
TensorBoard write their files, and the audit at the end says why training did what it did.
Deterministic for a seed. Part of the command line, which wires the core to the plugins.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np

from .bus import Bus
from .errors import ConfigError
from .model import NumpyModel

__all__ = ["make_data", "run_demo", "train"]


def make_data(seed: int, n: int = 500) -> tuple[np.ndarray, ...]:
    """Two interleaved spirals with noise and 8% flipped labels; 75% train, 25% validation."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0.05, 1.0, n)) * 3.0 * np.pi
    label = rng.integers(0, 2, n)
    angle = t + np.pi * label
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1) / (3.0 * np.pi)
    x += rng.normal(0.0, 0.06, x.shape)
    flip = rng.uniform(size=n) < 0.08
    y = np.where(flip, 1 - label, label).astype(np.float64)
    split = n * 3 // 4
    return x[:split], y[:split], x[split:], y[split:]


def init_model(seed: int, hidden: int = 64, learning_rate: float = 1.0) -> NumpyModel:
    rng = np.random.default_rng(seed + 1)
    return NumpyModel({
        "dense/kernel": rng.normal(0.0, 1.0, (2, hidden)),
        "dense/bias": np.zeros(hidden),
        "output/kernel": rng.normal(0.0, 1.0 / np.sqrt(hidden), (hidden, 1)),
        "output/bias": np.zeros(1),
    }, learning_rate=learning_rate, config={
        "layers": [f"dense({hidden}, tanh)", "output(1, sigmoid)"],
        "loss": "binary_crossentropy", "optimizer": "sgd"})


def _forward(w: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.tanh(x @ w["dense/kernel"] + w["dense/bias"])
    z = h @ w["output/kernel"] + w["output/bias"]
    return h, 1.0 / (1.0 + np.exp(-z[:, 0]))


def _metrics(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    eps = 1e-7
    loss = -np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))
    return float(loss), float(np.mean((p > 0.5) == y))


def train(bus: Bus, model: NumpyModel, data: tuple[np.ndarray, ...], *, epochs: int,
          batch_size: int, seed: int) -> None:
    """A plain NumPy training loop publishing every Keras hook to ``bus``."""
    x, y, xv, yv = data
    rng = np.random.default_rng(seed + 2)
    steps = int(np.ceil(len(x) / batch_size))
    w = model.weights
    bus.train_begin({"epochs": epochs, "steps": steps, "batch_size": batch_size,
                     "samples": len(x), "verbose": 1})
    for epoch in range(bus.initial_epoch, epochs):
        if bus.stop_training:
            break
        bus.epoch_begin(epoch)
        order = rng.permutation(len(x))
        for batch in range(steps):
            idx = order[batch * batch_size:(batch + 1) * batch_size]
            bus.batch_begin(batch, {"size": len(idx)})
            xb, yb = x[idx], y[idx]
            h, p = _forward(w, xb)
            loss, acc = _metrics(p, yb)
            # Backpropagation of binary cross-entropy through sigmoid and tanh.
            dz = (p - yb)[:, None] / len(idx)
            dh = (dz @ w["output/kernel"].T) * (1 - h * h)
            lr = model.learning_rate
            w["output/kernel"] -= lr * h.T @ dz
            w["output/bias"] -= lr * dz.sum(axis=0)
            w["dense/kernel"] -= lr * xb.T @ dh
            w["dense/bias"] -= lr * dh.sum(axis=0)
            bus.batch_end(batch, {"loss": loss, "acc": acc})
            if bus.stop_training:
                break
        bus.test_begin()
        _, pv = _forward(w, xv)
        val_loss, val_acc = _metrics(pv, yv)
        bus.test_end({"loss": val_loss, "acc": val_acc})
        # loss and acc for the epoch come from BaseLogger: the size-weighted batch averages.
        bus.epoch_end(epoch, {"val_loss": val_loss, "val_acc": val_acc})
    bus.train_end()


def _clean(out: Path) -> None:
    """Remove what an earlier demo left in ``out`` (and only that)."""
    for name in ("events.jsonl", "history.csv"):
        (out / name).unlink(missing_ok=True)
    for name in ("events.parquet", "checkpoints", "tensorboard"):
        shutil.rmtree(out / name, ignore_errors=True)


def _check_int(name: str, value: object, least: int) -> None:
    # The log header records the seed and train_begin the epochs: 64-bit integers at most.
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value < 2**63:
        raise ConfigError(f"run_demo: {name} must be an int from {least} to 2**63 - 1; got "
                          f"{value!r}", field=name)


def run_demo(*, out: Path, epochs: int = 40, seed: int = 0, progress: bool = True) -> int:
    _check_int("epochs", epochs, 1)
    _check_int("seed", seed, 0)
    from plugins import (
        BaseLogger,
        CSVLogger,
        EarlyStopping,
        History,
        ModelCheckpoint,
        ProgbarLogger,
        ReduceLROnPlateau,
        TensorBoard,
        TerminateOnNaN,
    )

    from .audit import audit, render

    out.mkdir(parents=True, exist_ok=True)
    _clean(out)
    model = init_model(seed)
    history = History()
    plugins = [
        # First, so each epoch's line comes before what the other plugins print about it.
        ProgbarLogger(verbose=1 if progress else 0),
        BaseLogger(),
        TerminateOnNaN(),
        ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, min_lr=0.01, verbose=1),
        EarlyStopping(monitor="val_loss", patience=6, min_delta=1e-4, restore_best_weights=True,
                      verbose=1),
        ModelCheckpoint(str(out / "checkpoints" / "best-{epoch:02d}-{val_loss:.4f}.h5"),
                        monitor="val_loss", save_best_only=True),
        CSVLogger(str(out / "history.csv")),
        TensorBoard(log_dir=str(out / "tensorboard"), histogram_freq=5),
        history,
    ]
    started = time.perf_counter()
    log = out / "events.jsonl"
    with Bus(plugins, log=[log, out / "events.parquet"], model=model,
             meta={"demo": "two spirals, numpy MLP", "seed": seed}) as bus:
        train(bus, model, make_data(seed), epochs=epochs, batch_size=32, seed=seed)
    elapsed = time.perf_counter() - started
    print(f"\ntrained {len(history.epoch)} epochs in {elapsed:.1f} s; wrote {out}/\n")
    print(render(audit(log)))
    print(f"""
next, try:
  eventbus audit {log}                       # this summary again (--json, --plot FILE.png)
  eventbus replay {log} --verify              # recompute every decision from the log
  eventbus replay {log} --set EarlyStopping.patience=3
  eventbus replay {log} --sweep ReduceLROnPlateau.patience=1,2,4,8
  eventbus convert {log} {out / 'events.csv'} --to csv
  tensorboard --logdir {out / 'tensorboard'}""")
    sys.stdout.flush()
    return 0
