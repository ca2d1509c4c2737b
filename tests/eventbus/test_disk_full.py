"""A log that cannot be written for a while (a full disk, a quota) loses nothing.

The fault is made real: a subprocess lowers its own file size limit (``RLIMIT_FSIZE``), so the
kernel refuses the log's writes with ``EFBIG`` as a full disk refuses them with ``ENOSPC``, for
a few epochs, then raises it again.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from eventbus import read_log

WORKER = textwrap.dedent("""
    import os, resource, signal, sys
    from eventbus import Bus, SinkFailureWarning
    from plugins import CSVLogger, EarlyStopping
    import warnings
    warnings.simplefilter("ignore", SinkFailureWarning)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write is an error, not a signal
    log, table = sys.argv[1], sys.argv[2]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    bus = Bus([EarlyStopping(patience=100), CSVLogger(table)], log=log, learning_rate=0.1)
    bus.train_begin({"epochs": 8})
    for epoch in range(8):
        if epoch == 2:  # the disk fills: the log cannot grow past its size now
            resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(log) + 100, hard))
        if epoch == 5:  # room again
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        bus.epoch_begin(epoch)
        for batch in range(20):
            bus.batch_end(batch, {"loss": 1.0 / (1 + epoch + batch)})
        bus.epoch_end(epoch, {"val_loss": 1.0 / (1 + epoch)})
    bus.train_end()
    bus.close()
    print("failures:", [f.error for f in bus.failures])
""")


def test_a_brief_disk_full_loses_no_record(tmp_path):
    """The epochs written while the log could not grow reach it once it can, in order; the
    fault is in the log as a sink_failed naming the errno; the run never stopped; the log is
    whole, so nothing asks for a resume and the CSV holds each epoch once."""
    log, table = tmp_path / "events.jsonl", tmp_path / "history.csv"
    done = subprocess.run([sys.executable, "-c", WORKER, str(log), str(table)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
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
