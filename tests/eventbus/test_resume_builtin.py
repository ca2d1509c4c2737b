"""Resume with the built-in plugins: a real training subprocess killed with SIGKILL, resumed.

The worker (crash_worker_builtin.py) trains a NumPy MLP with EarlyStopping, ReduceLROnPlateau,
two ModelCheckpoints (best-only, and one target replaced every epoch), CSVLogger, TensorBoard and
BackupAndRestore, plus the run's own log (``Bus(log=..., resume=True)``). Each seed kills it at
1 to 3 random events of the run, starting it again after each, until it finishes; the result
must be the uninterrupted run's, file for file, in both logs. ``EVENTBUS_CRASH_SEEDS=N`` runs N
seeds instead of three (a campaign of about 2N kills).
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import orjson
import pytest

from eventbus import read_log
from eventbus import records as r
from eventbus.replay import effective_records
from sinks.tensorboard import iter_event_file

from crash_runs import events_of, kill_points, kill_until_done

WORKER = Path(__file__).with_name("crash_worker_builtin.py")


def run_to_end(out: Path) -> list[str]:
    """The worker run to the end on its own (it waits for no answer); the events it printed."""
    done = subprocess.run([sys.executable, str(WORKER), str(out)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return events_of(done.stdout)


def log_of(out: Path, *, main: bool = False) -> Path:
    """The backup log BackupAndRestore keeps, or (``main``) the log given to the bus."""
    return out / "events.jsonl" if main else out / "backup" / "events.jsonl"


def read_whole(path: Path) -> list[r.Record]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a finished log has no torn line
        return list(read_log(path))


def decisions(out: Path, *, main: bool = False) -> list[bytes]:
    """The run's decisions without the envelope, the output folder written as OUT."""
    kept = effective_records(read_whole(log_of(out, main=main)))
    return [orjson.dumps([d.kind, d.source, d.epoch, d.cause_seq is not None, d.code, d.reason,
                          d.evidence, getattr(d, "value", None), getattr(d, "path", None)])
            .replace(str(out).encode(), b"OUT")
            for d in kept if isinstance(d, r.Decision)]


def csv_rows(out: Path) -> list[list[str]]:
    with open(out / "history.csv", newline="") as file:
        return list(csv.reader(file))


def tensorboard(out: Path) -> list[tuple]:
    """What the run's TensorBoard files hold: (run, tag, step, value or text), sorted; the steps
    of each scalar tag are checked to only go up file after file, those of the decisions never
    to go back (TensorBoard's server drops the values past a step that goes back)."""
    from tensorboardX.proto import event_pb2

    found = []
    for run in ("train", "validation"):
        steps: dict[str, list[int]] = {}
        for path in sorted((out / "tensorboard" / run).glob("*tfevents*")):
            for data in iter_event_file(path):
                event = event_pb2.Event.FromString(data)
                for value in event.summary.value:
                    steps.setdefault(value.tag, []).append(event.step)
                    item = value.tensor.string_val[0].decode().replace(str(out), "OUT") \
                        if value.HasField("tensor") else value.simple_value
                    found.append((run, value.tag, event.step, item))
        for tag, seen in steps.items():
            assert seen == (sorted(seen) if tag == "decisions" else sorted(set(seen))), \
                (run, tag, seen)
    return sorted(found)


def weights(path: Path) -> dict[str, np.ndarray]:
    import h5py

    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as file:
        assert file.attrs["format"] == "eventbus-checkpoint"
        file["weights"].visititems(
            lambda name, obj: out.__setitem__(name, obj[()]) if hasattr(obj, "shape") else None)
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, list[str]]:
    """The uninterrupted run: its output folder, and the events it published, in order."""
    out = tmp_path_factory.mktemp("clean")
    return out, run_to_end(out)


@pytest.fixture(scope="module")
def clean(uninterrupted) -> Path:
    return uninterrupted[0]


def test_the_clean_run_exercises_every_plugin(clean):
    """The reference run cuts the learning rate, saves checkpoints and stops early."""
    kinds = [d.kind for d in read_whole(log_of(clean)) if isinstance(d, r.Decision)]
    assert kinds.count("set_learning_rate") >= 2
    assert kinds.count("save_checkpoint") >= 10
    assert "stop_training" in kinds


# Three seeds in the suite; EVENTBUS_CRASH_SEEDS=50 runs a longer kill campaign.
@pytest.mark.parametrize("seed", range(int(os.environ.get("EVENTBUS_CRASH_SEEDS", "3"))))
def test_killed_at_random_moments_the_run_ends_as_an_uninterrupted_one(tmp_path, uninterrupted,
                                                                       seed):
    """Same decisions, a whole log, whole checkpoints with the same weights, one CSV row each,
    the same TensorBoard scalars and decisions."""
    clean, events = uninterrupted
    points = kill_points(random.Random(seed), events)
    out = tmp_path / "run"
    kills = kill_until_done([sys.executable, str(WORKER), str(out)], events, points)
    assert kills == len(points), [events[p] for p in points]

    # The decisions are the uninterrupted run's, in order, in the backup and in the run's log.
    assert decisions(out) == decisions(clean)
    assert decisions(out, main=True) == decisions(clean, main=True) == decisions(clean)

    # The log reads back whole; seq increases across resumes; each resume is recorded.
    records = read_whole(log_of(out))
    seqs = [rec.seq for rec in records]
    assert seqs == sorted(set(seqs))
    assert sum(rec.kind == "resumed" for rec in records) >= 1

    # No checkpoint target is partial: every file at a target name opens and holds the
    # uninterrupted run's weights; a temporary file never sits at a target name.
    targets = {Path(rec.path).name for rec in records if isinstance(rec, r.SaveCheckpoint)}
    files = {p.name for p in (out / "checkpoints").iterdir()}
    assert {n for n in files if not n.startswith(".")} == targets
    assert {p.name for p in (clean / "checkpoints").iterdir()} == targets
    assert all(n.endswith(".tmp") for n in files - targets)
    for name in sorted(targets):
        got, want = weights(out / "checkpoints" / name), weights(clean / "checkpoints" / name)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name}: {key}")

    # The log's last word on each checkpoint is the file on disk.
    kept = effective_records(records)
    last_saved = {rec.path: rec for rec in kept if isinstance(rec, r.CheckpointSaved)}
    for path, rec in last_saved.items():
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == rec.sha256, path

    # One CSV row per epoch, the same rows as the uninterrupted run's.
    rows = csv_rows(out)
    epochs = [row[0] for row in rows[1:]]
    assert len(epochs) == len(set(epochs))
    assert rows == csv_rows(clean)

    # TensorBoard shows the uninterrupted run: every epoch's scalars and every decision once.
    assert tensorboard(out) == tensorboard(clean)
