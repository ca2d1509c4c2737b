"""A child forked while a bus is live (a helper process, ``multiprocessing`` with fork) holds a
copy of the parent's bus: its sinks, their buffers, their locks. The copy must neither close
nor publish: the parent's buffered records would reach the log twice. Real forks, in a
subprocess so the test's own process is never forked."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from eventbus import read_log

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

LOOP = """
import os, sys
from eventbus import Bus
from sinks.jsonl import JsonlWriter
from plugins import CSVLogger
out, how = sys.argv[1], sys.argv[2]
csv = CSVLogger(out + "/h.csv")
with Bus([csv], log=[out + "/events.jsonl", out + "/events.parquet"]) as bus:
    bus.train_begin({"epochs": 3})
    for epoch in range(3):
        bus.epoch_begin(epoch)
        for batch in range(5):
            bus.batch_begin(batch)
            bus.batch_end(batch, {"loss": 1.0})
            if epoch == 1 and batch == 2:
                pid = os.fork()
                if pid == 0:
                    if how == "exits":  # unwinds through the parent's `with bus:`
                        raise SystemExit(0)
                    if how == "raises":
                        raise RuntimeError("the helper's work failed")
                    try:
                        {"publishes": lambda: bus.batch_end(9, {"loss": 2.0}),
                         "flushes": bus.flush,
                         "removes a sink": lambda: bus.remove_sink(csv),
                         "adds a sink": lambda: bus.add_sink(JsonlWriter(out + "/c.jsonl")),
                         "registers": lambda: bus.register(CSVLogger(out + "/c.csv"))}[how]()
                    except Exception as exc:
                        print(f"child: {type(exc).__name__}: {exc}", flush=True)
                        os._exit(3)
                    os._exit(0)
                os.waitpid(pid, 0)
        bus.epoch_end(epoch, {"loss": 1.0 + epoch})
    bus.train_end()
"""


CHILD_REFUSED = ["publishes", "flushes", "removes a sink", "adds a sink", "registers"]


@pytest.mark.parametrize("how", ["exits", "raises", *CHILD_REFUSED])
def test_a_forked_child_leaves_the_parents_bus_alone(tmp_path, how):
    """Before, a child ending by ``SystemExit`` or an exception closed the parent's bus on its
    way out, flushing the parent's buffered records, which the parent wrote again: seq 14 to
    20 twice, and every reader refused the log. Removing a sink in the child closed
    the parent's writer there, with the same result."""
    done = subprocess.run([sys.executable, "-c", LOOP, str(tmp_path), how], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    if how in CHILD_REFUSED:
        assert "child: EventError" in done.stdout and "forked from the process" in done.stdout
    lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
    seqs = [orjson.loads(line)["seq"] for line in lines]
    assert seqs == sorted(set(seqs))
    for log in ("events.jsonl", "events.parquet"):
        records = list(read_log(tmp_path / log))
        assert [r.epoch for r in records if r.kind == "epoch_end"] == [0, 1, 2]
        assert sum(r.kind == "batch_end" for r in records) == 15
        assert records[-1].kind == "train_end"
    rows = (tmp_path / "h.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1", "2"]
