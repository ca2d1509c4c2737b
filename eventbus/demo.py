"""``eventbus demo``: a real training run, in plain NumPy, with the built-in plugins switched on.

A two-layer network learns two interleaved noisy spirals from a small training set (so it
starts to overfit) (data made here, nothing downloaded)
with mini-batch SGD. The bus records everything to ``events.jsonl`` and ``events.parquet``;
ReduceLROnPlateau cuts the learning rate when validation loss stalls, EarlyStopping stops the run
and restores the best weights, ModelCheckpoint keeps the best model as HDF5, CSVLogger and
TensorBoard write their files, and the audit at the end says why training did what it did.
Deterministic for a seed. Part of the command line, which wires the core to the plugins.

The demo writes into a directory of the user's: it leaves a manifest there
(``demo-manifest.json``: every file it wrote, with its size and modification time), and a later
demo removes exactly those files, unchanged since, and nothing else. A directory holding any other
file is refused unless ``force`` says to write there anyway.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .bus import Bus
from .errors import ConfigError
from .model import NumpyModel
from .terminal import fit, width_of

__all__ = ["MANIFEST", "check_out", "demo_plugins", "make_data", "run_demo", "train"]

#: The file, in the output directory, listing what the demo wrote there.
MANIFEST = "demo-manifest.json"
_WRITTEN_BY = "eventbus demo"


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


# --- the output directory: what an earlier demo wrote, and only that, is removed --------------

# A file as the manifest knows it: size and modification time. A file changed since the demo
# wrote it (edited, appended to by a resumed run) is no longer the demo's to remove.
Stamp = tuple[int, int]


def _scan(out: Path) -> tuple[dict[str, Stamp], set[str]]:
    """Every entry under ``out`` that is not a directory, by path relative to ``out`` ('/'
    separated), and every directory. Symbolic links are not followed: a link (to a file or a
    directory) is an entry of its own, never the demo's."""
    files: dict[str, Stamp] = {}
    folders: set[str] = set()
    for folder, dirs, names in os.walk(out):
        where = Path(folder)
        for name in dirs:
            if (where / name).is_symlink():
                names.append(name)
            else:
                folders.add((where / name).relative_to(out).as_posix())
        for name in names:
            stat = os.lstat(where / name)
            files[(where / name).relative_to(out).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    files.pop(MANIFEST, None)
    files.pop(MANIFEST + ".tmp", None)
    return files, folders


def _manifest(out: Path) -> tuple[dict[str, Stamp], list[str]] | None:
    """The files and folders an earlier demo wrote in ``out``, or None without a manifest (or
    with a file of that name the demo did not write)."""
    try:
        data = orjson.loads((out / MANIFEST).read_bytes())
        if data.get("written_by") != _WRITTEN_BY:
            return None
        files = {str(k): (int(v["size"]), int(v["mtime_ns"])) for k, v in data["files"].items()}
        return files, [str(f) for f in data["folders"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None  # not a manifest this demo wrote: treated as the user's file


def check_out(out: Path, *, force: bool = False,
              names: tuple[str, str] = ("out", "force=True")) -> tuple[list[str], list[str]]:
    """Check that the demo may write in ``out``; return what an earlier demo wrote there (the
    files and the folders it made) for :func:`run_demo` to remove.

    Raises :class:`ConfigError` (``field="out"``), naming the argument (``names``: how the
    caller spells ``out`` and ``force``, "--out" and "--force" on the command line), when ``out``
    is a file or under one, or cannot be written, or holds a file an earlier demo did not write
    and ``force`` is false. Nothing is removed here.
    """
    flag, force_flag = names
    if (out.exists() or out.is_symlink()) and not out.is_dir():
        what = "a file" if out.exists() else "a broken symbolic link"
        raise ConfigError(f"{flag} {out} is {what}; {flag} must be a directory (a new or an "
                          "existing one)", field="out")
    for parent in (out, *out.parents):  # the nearest that exists must be a writable directory
        if not parent.exists() and not parent.is_symlink():
            continue
        if not parent.is_dir():
            raise ConfigError(f"{flag} {out}: {parent} is a file, not a directory; {flag} must "
                              "be a directory", field="out")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} {out}: no permission to write in {parent}", field="out")
        break
    if not out.is_dir():
        return [], []
    files, found = _scan(out)
    earlier = _manifest(out)
    stamps, folders = earlier if earlier is not None else ({}, [])
    ours = sorted(p for p, stamp in files.items() if stamps.get(p) == stamp)
    others = sorted(set(files) - set(ours))
    if earlier is None and (out / MANIFEST).exists():
        others.insert(0, MANIFEST)
    if others and not force:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3
                                         else "")
        raise ConfigError(f"{flag} {out} holds {len(others)} file(s) no earlier demo wrote "
                          f"({shown}); name a new or empty directory, or add {force_flag} to "
                          "write there anyway (those files are kept)", field="out")
    # Only folders that are there, below out and reached through no link, as the scan found
    # them: a manifest anyone could write must not name "/srv/x", "../x" or "link/x".
    return ours, sorted(found.intersection(folders))


def _clean(out: Path, files: list[str], folders: list[str]) -> None:
    """Remove what an earlier demo wrote in ``out`` (as :func:`check_out` found it), and the
    folders it made once they are empty; nothing else."""
    for name in files:
        (out / name).unlink(missing_ok=True)
    for name in sorted(folders, key=lambda f: f.count("/"), reverse=True):  # deepest first
        try:
            (out / name).rmdir()
        except OSError:  # not empty (a file of the user's), or gone
            pass
    if _manifest(out) is not None:
        (out / MANIFEST).unlink()


def _write_manifest(out: Path, before: tuple[dict[str, Stamp], set[str]]) -> None:
    """List in ``out`` what this demo wrote: every file new or changed since ``before``, and
    the folders it made. Written when the run ends however it ends (Ctrl-C, a closed stdout),
    so a run cut short is cleaned up too; a run killed outright leaves none, and its files
    count as the user's (the next demo refuses rather than guesses)."""
    try:
        files, folders = _scan(out)
        data = {"written_by": _WRITTEN_BY,
                "files": {p: {"size": s[0], "mtime_ns": s[1]} for p, s in sorted(files.items())
                          if before[0].get(p) != s},
                "folders": sorted(folders - before[1])}
        tmp = out / (MANIFEST + ".tmp")
        tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
        os.replace(tmp, out / MANIFEST)
    except OSError as exc:  # not over the error that may be on its way out
        warnings.warn(f"demo: could not write {out / MANIFEST} ({exc}); the next demo in {out} "
                      "will treat these files as not its own", stacklevel=2)


def _check_int(name: str, value: object, least: int) -> None:
    # The log header records the seed and train_begin the epochs: 64-bit integers at most.
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value < 2**63:
        raise ConfigError(f"run_demo: {name} must be an int from {least} to 2**63 - 1; got "
                          f"{value!r}", field=name)


def run_demo(*, out: Path, epochs: int = 40, seed: int = 0, progress: bool = True,
             force: bool = False) -> int:
    """Train the demo model into ``out`` and print its audit; returns the exit status (0).

    What an earlier demo wrote in ``out`` is removed first, and nothing else; ``out`` holding any
    other file is a :class:`ConfigError` unless ``force`` (those files are then kept, but the
    demo's own ``events.jsonl``, ``events.parquet`` segments and ``history.csv`` replace any of
    the same name).
    """
    _check_int("epochs", epochs, 1)
    _check_int("seed", seed, 0)
    out = Path(out)
    files, folders = check_out(out, force=force)
    out.mkdir(parents=True, exist_ok=True)
    _clean(out, files, folders)
    before = _scan(out)
    try:
        return _run(out, epochs=epochs, seed=seed, progress=progress)
    finally:
        _write_manifest(out, before)


def demo_plugins(out: Path, *, progress: bool = True) -> list[Any]:
    """The demo's plugins, writing under ``out`` (History last)."""
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

    return [
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
        History(),
    ]


def _run(out: Path, *, epochs: int, seed: int, progress: bool) -> int:
    from .audit import audit, render

    model = init_model(seed)
    plugins = demo_plugins(out, progress=progress)
    history = plugins[-1]
    started = time.perf_counter()
    log = out / "events.jsonl"
    with Bus(plugins, log=[log, out / "events.parquet"], model=model,
             meta={"demo": "two spirals, numpy MLP", "seed": seed}) as bus:
        train(bus, model, make_data(seed), epochs=epochs, batch_size=32, seed=seed)
    elapsed = time.perf_counter() - started
    width = width_of(sys.stdout)  # a terminal's: lines broken at spaces, not mid-word
    print(f"\ntrained {len(history.epoch)} epochs in {elapsed:.1f} s; wrote {out}/\n")
    print(fit(render(audit(log)), width))
    print("\nnext, try:")
    for says, commands in (
            ("this summary again (--json, --plot FILE.png)", [f"eventbus audit {log}"]),
            ("recompute every decision from the log", [f"eventbus replay {log} --verify"]),
            ("what-ifs: another patience; a sweep of ReduceLROnPlateau's",
             [f"eventbus replay {log} --set EarlyStopping.patience=3",
              f"eventbus replay {log} --sweep ReduceLROnPlateau.patience=1,2,4"]),
            ("the epochs as a CSV table", [f"eventbus convert {log} {out.name}-history.csv"]),
            ("one page: curves, decisions, why it stopped",
             [f"eventbus report {log} -o {out.name}-report.html"]),
            ("the decisions in the Text tab, parameters in HParams",
             [f"tensorboard --logdir {out}"])):
        # The comments fitted to the terminal, each command on one line whatever its width:
        # a terminal wraps it softly and copies it whole, where a line broken here would not
        # paste as the command.
        for line in fit(says, None if width is None else max(width - 4, 20)).splitlines():
            print(f"  # {line}")  # each line of a comment a comment: the block pastes whole
        for command in commands:
            print(f"  {command}")
    sys.stdout.flush()
    return 0
