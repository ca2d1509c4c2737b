"""SIGTERM inside ``with bus:`` (a scheduler's stop, ``kill``, ``docker stop``): the bus closes
as it does on Ctrl-C, then the process ends by SIGTERM. Real subprocesses, real signals."""

from __future__ import annotations

import signal
import subprocess
import sys

import orjson
import pytest

from eventbus import Bus
from eventbus.termination import Terminated

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")

LOOP = """
import os, signal, sys, time
from eventbus import Bus
from plugins import CSVLogger
out, how = sys.argv[1], sys.argv[2]
if how == "own handler":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
with Bus([CSVLogger(out + "/h.csv")], log=[out + "/events.jsonl"]) as bus:
    bus.train_begin({"epochs": 3})
    for epoch in range(3):
        bus.epoch_begin(epoch)
        for batch in range(100):
            bus.batch_begin(batch)
            bus.batch_end(batch, {"loss": 1.0})
            if epoch == 1 and batch == 40:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the signal lands here, or at the line before
        bus.epoch_end(epoch, {"loss": 1.0})
    bus.train_end()
print("training went on past the signal")
"""


def run(tmp_path, how: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    done = subprocess.run([sys.executable, "-c", LOOP, str(tmp_path), how],
                          capture_output=True, text=True, timeout=120)
    records = [orjson.loads(line) for line in (tmp_path / "events.jsonl").read_bytes()
               .splitlines()]
    return done, records


def test_the_bus_closes_then_the_process_ends_by_sigterm(tmp_path):
    """Before, SIGTERM killed the process as SIGKILL does: the 41 batch records of the epoch
    in progress were lost (a Ctrl-C at the same line kept them)."""
    done, records = run(tmp_path, "default")
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert "training went on" not in done.stdout
    batches = [r for r in records if r["kind"] == "batch_end" and r["epoch"] == 1]
    assert len(batches) == 41
    assert (tmp_path / "h.csv").read_text().splitlines() == ["epoch,loss", "0,1.0"]


def test_a_handler_of_the_users_own_is_left_to_run(tmp_path):
    done, _ = run(tmp_path, "own handler")
    assert done.returncode == 7, done.stderr


def test_the_handler_is_there_only_inside_the_with(tmp_path):
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with Bus([]):
        handler = signal.getsignal(signal.SIGTERM)
        assert handler is not signal.SIG_DFL
        with pytest.raises(Terminated):
            handler(signal.SIGTERM, None)
        with Bus([]):  # a bus inside another: the outer's handler stays
            assert signal.getsignal(signal.SIGTERM) is handler
        assert signal.getsignal(signal.SIGTERM) is handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


FORKED = """
import multiprocessing as mp, os, signal, sys, time
from eventbus import Bus

def child():
    try:
        time.sleep(30)
    except KeyboardInterrupt:
        print("the child took it for Ctrl-C", flush=True)
        sys.exit(3)

with Bus([]):
    process = mp.get_context("fork").Process(target=child)
    process.start()
    time.sleep(0.5)
    process.terminate()
    process.join(20)
    print("child exit", process.exitcode, flush=True)
"""

DURING_CLOSE = """
import os, signal, sys
from eventbus import Bus, Sink

class SlowToClose(Sink):
    def write(self, record): pass
    def flush(self): pass
    def close(self):
        os.kill(os.getpid(), signal.SIGTERM)  # the scheduler's stop, while the bus closes
        for _ in range(10**6):
            pass
        print("the sink finished closing", flush=True)

with Bus([], log=[sys.argv[1] + "/events.jsonl", SlowToClose()]) as bus:
    bus.train_begin({"epochs": 1})
    bus.epoch_begin(0)
    bus.epoch_end(0, {"loss": 1.0})
    bus.train_end()
print("after the with", flush=True)
"""


def test_a_child_forked_in_the_block_ends_by_sigterm_as_it_would_have():
    """The handler is the process's that made the with: a multiprocessing (fork) child, a
    DataLoader worker, got Terminated (a KeyboardInterrupt) instead of ending by SIGTERM."""
    done = subprocess.run([sys.executable, "-c", FORKED], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"child exit {-signal.SIGTERM}" in done.stdout and "Ctrl-C" not in done.stdout


def test_a_sigterm_while_the_bus_closes_lets_it_finish_then_ends_the_process(tmp_path):
    done = subprocess.run([sys.executable, "-c", DURING_CLOSE, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert "the sink finished closing" in done.stdout and "after the with" not in done.stdout
    assert "Traceback" not in done.stderr
    kinds = [orjson.loads(line)["kind"] for line in
             (tmp_path / "events.jsonl").read_bytes().splitlines()]
    assert kinds[-1] == "train_end"


def test_a_handler_installed_in_the_block_decides(tmp_path):
    """Lightning installs its SIGTERM handler in fit, inside the with, and calls the one it
    found (ours) from its own: ours then does nothing, and Lightning ends the fit its way."""
    seen = []
    with Bus([]):
        ours = signal.getsignal(signal.SIGTERM)

        def frameworks(signum, frame):
            seen.append("framework")
            ours(signum, frame)  # raises nothing now that it is not the handler

        previous = signal.signal(signal.SIGTERM, frameworks)
        try:
            frameworks(signal.SIGTERM, None)
        finally:
            signal.signal(signal.SIGTERM, previous)
    assert seen == ["framework"]
