"""A log that cannot be written for a while (a full disk, a quota) loses nothing.

The fault is made real: a subprocess lowers its own file size limit (``RLIMIT_FSIZE``), so the
kernel refuses the log's writes with ``EFBIG`` as a full disk refuses them with ``ENOSPC``, for
a few epochs, then raises it again.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
import warnings

import pytest

from eventbus import read_log

WORKER = textwrap.dedent("""
    import os, resource, signal, sys, warnings
    import eventbus.sink
    from eventbus import Bus, SinkFailureWarning
    eventbus.sink.CLOSE_RETRY_SECONDS = 0.3  # a disk still full at close: given up sooner
    from plugins import CSVLogger, EarlyStopping, TensorBoard
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write is an error, not a signal
    log, table, room_again = sys.argv[1], sys.argv[2], int(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    full = 16 if log.endswith(".parquet") else os.path.getsize  # a segment is a new file
    plugins = [EarlyStopping(patience=100), CSVLogger(table)]
    if log.endswith(".parquet"):
        plugins.append(TensorBoard(os.path.join(os.path.dirname(log), "tb")))
    bus = Bus(plugins, log=log, learning_rate=0.1)
    bus.train_begin({"epochs": 8})
    for epoch in range(8):
        if epoch == 2:  # the disk fills: the log cannot grow past its size now
            limit = full if isinstance(full, int) else full(log) + 100
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        if epoch == room_again:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        bus.epoch_begin(epoch)
        for batch in range(20):
            bus.batch_end(batch, {"loss": 1.0 / (1 + epoch + batch)})
        bus.epoch_end(epoch, {"val_loss": 1.0 / (1 + epoch)})
    bus.train_end()
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        bus.close()
    print("\\n".join(f"{f.sink}: {f.error}: {f.message}" for f in bus.failures))
""")


def run_worker(log, table, room_again: int = 5) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-c", WORKER, str(log), str(table), str(room_again)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def test_a_brief_disk_full_loses_no_record(tmp_path):
    """The epochs written while the log could not grow reach it once it can, in order; the
    fault is in the log as a sink_failed naming the errno; the run never stopped; the log is
    whole, so nothing asks for a resume and the CSV holds each epoch once."""
    log, table = tmp_path / "events.jsonl", tmp_path / "history.csv"
    run_worker(log, table)
    records = list(read_log(log))
    ends = [r.epoch for r in records if r.kind == "epoch_end"]
    assert ends == list(range(8))
    assert sum(r.kind == "batch_end" for r in records) == 8 * 20
    seqs = [r.seq for r in records]
    assert seqs == list(range(len(seqs)))  # every record, once, in order: nothing lost
    faults = [r for r in records if r.kind == "sink_failed"]
    assert len(faults) == 1  # once for the whole spell, not once per flush
    assert faults[0].sink == f"jsonl {log}" and "errno 27" in faults[0].message
    assert [r.kind for r in records][-1] == "train_end"
    assert [int(line.split(",")[0]) for line in table.read_text().splitlines()[1:]] == \
        list(range(8))


def test_a_brief_disk_full_loses_no_record_of_a_parquet_log(tmp_path):
    """The segments that could not be written are kept and written once they can: every
    record, once, and the fault in the log itself (it has room again by the run's end). The
    CSV table and the TensorBoard files, which could not grow either, keep theirs the same
    way: a CSV row per epoch, no half row, every epoch's scalar in TensorBoard's reader."""
    log, table = tmp_path / "events.parquet", tmp_path / "history.csv"
    run_worker(log, table)
    records = list(read_log(log))
    assert [r.seq for r in records] == list(range(len(records)))
    assert [r.epoch for r in records if r.kind == "epoch_end"] == list(range(8))
    assert sum(r.kind == "batch_end" for r in records) == 8 * 20
    faults = [r for r in records if r.kind == "sink_failed"]
    # Once for the spell: each sink, and TensorBoard once per run directory it writes.
    assert sorted(f.sink for f in faults) == ["CSVLogger", "TensorBoard", "TensorBoard",
                                              f"parquet {log}"]
    assert all("rrno 27" in f.message for f in faults)  # naming EFBIG
    assert [r.kind for r in records][-1] == "train_end"
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == list(range(8))
    assert all(float(row["val_loss"]) == 1.0 / (1 + int(row["epoch"])) for row in rows)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(tmp_path / "tb" / "validation"))
    scalars.Reload()
    assert [e.step for e in scalars.Scalars("epoch_loss")] == list(range(8))


@pytest.mark.parametrize("name", ["events.jsonl", "events.parquet"])
def test_a_disk_still_full_at_close_says_what_was_lost_and_leaves_a_whole_log(tmp_path, name):
    """The disk fills in the last epochs and stays full: close() tries for a while, then
    gives the kept records up, saying how many, and the log reads back with no torn line,
    every record in it once and in order."""
    log, table = tmp_path / name, tmp_path / "history.csv"
    done = run_worker(log, table, room_again=99)
    assert "could not be written" in done.stdout and "record(s)" in done.stdout
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn last line would warn
        records = list(read_log(log))
    assert [r.seq for r in records] == list(range(len(records)))
    assert [r.epoch for r in records if r.kind == "epoch_end"] == [0, 1]


NEARLY_FULL = textwrap.dedent("""
    import os, sys
    import numpy as np
    from sinks.hdf5 import write_checkpoint
    root = sys.argv[1]
    room = os.path.join(root, "room")
    with open(room, "wb") as file:
        file.write(b"x" * 8192)
    fd = os.open(os.path.join(root, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:  # every free byte taken, then the 8 KiB of another file given back
        while True:
            os.write(fd, bytes(4096))
    except OSError:
        pass
    try:
        while True:
            os.write(fd, b"0")
    except OSError:
        pass
    os.close(fd)
    os.unlink(room)
    weights = {"dense/kernel": np.ones((300, 16)), "dense/bias": np.ones(16)}
    try:
        write_checkpoint(os.path.join(root, "ckpt.h5"), weights, metadata={"epoch": 3})
        print("written")
    except OSError as exc:
        print("refused", exc.errno)
    os.unlink(os.path.join(root, "filler"))
    print("then", write_checkpoint(os.path.join(root, "ckpt.h5"), weights)[0] > 0)
""")


def test_a_checkpoint_on_a_nearly_full_disk_is_an_oserror_not_a_crash(small_disk):
    """With a few KiB free, HDF5 starts the file, a write fails, and closing it killed the
    process (SIGSEGV): nothing kept, nothing retried. The file is built in memory and
    written by Python: the save is an OSError (which the writer keeps and tries again)."""
    import errno

    done = subprocess.run([sys.executable, "-c", NEARLY_FULL, str(small_disk)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == [f"refused {errno.ENOSPC}", "then True"]
