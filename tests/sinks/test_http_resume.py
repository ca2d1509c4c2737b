"""HttpRecordSink across a SIGKILL and a resume, against a real collector on 127.0.0.1: the
collector never gets a record the event log has not written, so a collector keeping each
(run_id, seq) once ends with the log's run, record for record."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from eventbus import Bus, RunWarning, Sink, SinkFailureWarning, hookimpl
from eventbus.jsonl import JsonlWriter
from eventbus.records import Warning as WarningRecord
from sinks.http import HttpRecordSink

ROOT = Path(__file__).parents[2]

#: A run of 3 epochs of 20 batches, its losses different in the attempt that is killed.
#: ``Between`` takes every record and is flushed with the logs: in "before_log" it is an
#: ordinary one, listed between the HTTP sink and the log; in "after_log" it follows the logs,
#: listed before the HTTP sink. In "log_fails" the log is taken out in epoch 1 (its disk fails)
#: and the run killed in epoch 2. Each kill first lets the sender deliver what it was given.
CHILD = r"""
import errno, os, signal, sys
from eventbus import Bus
from eventbus.jsonl import JsonlWriter
from sinks.http import HttpRecordSink

url, log, kill = sys.argv[1], sys.argv[2], sys.argv[3]


def die(sink):
    sink._sender.flush(10.0)  # whatever the sender was given reaches the collector first
    os.kill(os.getpid(), signal.SIGKILL)


class Between:
    follows_logs = kill == "after_log"

    def __init__(self, sink):
        self.sink, self.ended = sink, False

    def write(self, record):
        self.ended = self.ended or (record["kind"] == "epoch_end" and record["epoch"] == 1)

    def flush(self):
        if self.ended and kill in ("before_log", "after_log"):
            die(self.sink)

    def close(self):
        pass


def failing_log(path):
    # A log that ends once its disk fails: a failed write keeps nothing (max_kept_bytes=0).
    writer = JsonlWriter(path, max_kept_bytes=0)
    write_buffer = writer._write_buffer

    def failing_write_buffer():
        if failing:
            raise OSError(errno.EIO, "Input/output error")
        write_buffer()

    writer._write_buffer = failing_write_buffer
    return writer


failing = False
sink = HttpRecordSink(url, linger=0.01, flush_timeout=10.0)
between = Between(sink)
if kill == "log_fails":
    log = failing_log(log)
logs = [log, between, sink] if kill == "after_log" else [sink, between, log]
with Bus([], log=logs, resume=True) as bus:
    bus.train_begin({"epochs": 3})
    for epoch in range(bus.initial_epoch, 3):
        if kill == "log_fails":
            failing = epoch == 1
            if epoch == 2:
                die(sink)
        bus.epoch_begin(epoch)
        for b in range(20):
            bus.batch_end(b, {"loss": 100.0 * epoch + b + (0.5 if kill != "none" else 0.0)})
            if kill == "mid_epoch" and epoch == 1 and b == 10:
                die(sink)
        bus.epoch_end(epoch, {"loss": float(epoch)})
    bus.train_end()
"""


def run_child(url: str, log: Path, kill: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", CHILD, url, str(log), kill], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def received_by_key(collector) -> dict[tuple[str, int], set[bytes]]:
    """Every distinct line the collector got, by the (run_id, seq) it names."""
    lines: dict[tuple[str, int], set[bytes]] = defaultdict(set)
    for _, _, body in collector.requests:
        for line in body.splitlines():
            record = orjson.loads(line)
            lines[(record["run_id"], record["seq"])].add(line)
    return lines


def assert_the_collector_holds_the_log(collector, log: Path) -> None:
    log_lines = log.read_bytes().splitlines()
    in_log = {(r["run_id"], r["seq"]): line
              for line in log_lines for r in [orjson.loads(line)]}
    received = received_by_key(collector)
    twice = {key: lines for key, lines in received.items() if len(lines) > 1}
    assert not twice, (f"{len(twice)} (run_id, seq) with two different records, from seq "
                       f"{min(seq for _, seq in twice)}")
    assert {key: next(iter(lines)) for key, lines in received.items()} == in_log


@pytest.mark.parametrize("kill", ["mid_epoch", "before_log", "after_log", "log_fails"])
def test_killed_then_resumed_the_collector_holds_each_record_once(server, tmp_path, kill):
    """SIGKILLed once the sender has delivered all it was given: mid-epoch (the log last
    flushed at the previous epoch's end), at an epoch end's flush before the log wrote it (the
    sink listed first in ``log=[...]``), or after the log wrote it and before the sink was
    flushed, or in the epoch after the log was taken out (its disk failed: the sink sent
    nothing more); then resumed to the end. Every (run_id, seq) reached the collector as one
    record, the log's: none of the killed attempt's records the log never had (the resume
    numbers its own records with those seqs), and, from the resume's catch-up, the log's
    records the collector had not got."""
    collector = server()
    log = tmp_path / "run.jsonl"
    killed = run_child(collector.url + "/runs", log, kill)
    assert killed.returncode == -9, killed.stderr
    resumed = run_child(collector.url + "/runs", log, "none")
    assert resumed.returncode == 0, resumed.stderr
    assert_the_collector_holds_the_log(collector, log)
    kinds = [orjson.loads(line)["kind"] for line in log.read_bytes().splitlines()]
    assert "resumed" in kinds and kinds.count("epoch_end") == 3


class CtrlC:
    """Ctrl-C amid epoch 1's end: the logs drop what they had not flushed, as a kill would."""

    @hookimpl
    def on_epoch_end(self, event):
        if event.epoch == 1:
            raise KeyboardInterrupt


def test_ctrl_c_then_resumed_the_collector_holds_each_record_once(server, tmp_path):
    """A Ctrl-C while epoch 1's end is decided on has the logs forget epoch 1
    (``forget_unflushed``): the sink forgets it too, and the resume's records, which take its
    seqs, are the only ones under them."""
    collector = server()
    log = tmp_path / "run.jsonl"
    for plugins, losses_of in (([CtrlC()], lambda e, b: 0.5 + b), ([], lambda e, b: float(b))):
        sink = HttpRecordSink(collector.url, linger=0.01, flush_timeout=10.0)
        try:
            with Bus(plugins, log=[sink, log], resume=True) as bus:
                bus.train_begin({"epochs": 3})
                for epoch in range(bus.initial_epoch, 3):
                    bus.epoch_begin(epoch)
                    for b in range(5):
                        bus.batch_end(b, {"loss": losses_of(epoch, b)})
                    bus.epoch_end(epoch, {"loss": float(epoch)})
                bus.train_end()
        except KeyboardInterrupt:
            assert plugins
    assert_the_collector_holds_the_log(collector, log)


class FailsToClose(JsonlWriter):
    """An event log whose close fails (a full disk): what it had not flushed is lost."""

    def close(self):
        self.forget_unflushed()
        super().close()
        raise OSError(28, "No space left on device")


class SaysAtClose(Sink):
    """Records a warning as it closes, after the bus's last flush."""

    name = "says"
    takes = frozenset({"train_end"})

    def write(self, record):
        pass

    def close(self):
        return WarningRecord(message="closing")


def test_a_log_failing_at_close_keeps_what_it_lacks_from_the_collector(server, tmp_path):
    """The sink closes after the logs, whatever its place in ``log=[...]``; a log whose close
    failed lacks what was recorded since the last flush (a warning a sink returns as it
    closes, the record of its own failure), so none of that is sent: the collector gets only
    records every log holds."""
    collector = server()
    log = tmp_path / "run.jsonl"
    failing = FailsToClose(tmp_path / "failing.jsonl")
    sink = HttpRecordSink(collector.url, linger=0.01, flush_timeout=10.0)
    with pytest.warns(SinkFailureWarning, match="failing.jsonl"), pytest.warns(RunWarning):
        with Bus([], log=[sink, failing, SaysAtClose(), log]) as bus:
            bus.train_begin({"epochs": 1})
            bus.epoch_begin(0)
            bus.epoch_end(0, {"loss": 1.0})
            bus.train_end()
    sent = [line for _, _, body in collector.requests for line in body.splitlines()]
    assert sent and set(sent) <= set(log.read_bytes().splitlines())
    assert set(sent) <= set(failing.path.read_bytes().splitlines())


class FailsAtFlush(JsonlWriter):
    """An event log whose flush fails, once told to, with an error it keeps no records
    through (not an OSError): the bus takes it out."""

    failing = False

    def flush(self):
        if self.failing:
            raise RuntimeError("the log's storage went away")
        super().flush()


def test_a_log_taken_out_mid_run_stops_the_sink_for_the_run(server, tmp_path):
    """The log is taken out at epoch 1's end; the run goes on to its end. The sink forgot
    what the log had not written and sent nothing more: the collector holds only the log's
    records, and the sink's failure, in the log still open, says why it stopped."""
    collector = server()
    lost = FailsAtFlush(tmp_path / "lost.jsonl")
    other = tmp_path / "other.jsonl"
    sink = HttpRecordSink(collector.url, linger=0.01, flush_timeout=10.0)
    with pytest.warns(SinkFailureWarning, match="sends nothing more"):
        with Bus([], log=[lost, str(other), sink]) as bus:
            bus.train_begin({"epochs": 3})
            for epoch in range(3):
                lost.failing = epoch == 1
                bus.epoch_begin(epoch)
                bus.batch_end(0, {"loss": float(epoch)})
                bus.epoch_end(epoch, {"loss": float(epoch)})
            bus.train_end()
    sent = [line for _, _, body in collector.requests for line in body.splitlines()]
    assert sent and set(sent) <= set(lost.path.read_bytes().splitlines())
    failed = [r for line in other.read_bytes().splitlines() for r in [orjson.loads(line)]
              if r["kind"] == "sink_failed"]
    assert [(r["sink"], r["event"]) for r in failed] == [(lost.name, "flush"), ("http", "flush")]
    assert "lost.jsonl" in failed[1]["message"]


class FailsToCloseAudit(Sink):
    """A sink of the user's that takes every record (Sink's default) and is not an event log;
    its close fails."""

    name = "audit"

    def write(self, record):
        pass

    def close(self):
        raise OSError(28, "No space left on device")


def test_a_plain_sink_failing_at_close_holds_nothing_back(server, tmp_path):
    """Only an event log failing at close holds back what the sink had not sent: a sink of the
    user's taking every record holds nothing a resume reads. Listed before the log, its failure
    is recorded in the log, and the collector gets that record too."""
    collector = server()
    log = tmp_path / "run.jsonl"
    sink = HttpRecordSink(collector.url, linger=0.01, flush_timeout=10.0)
    with pytest.warns(SinkFailureWarning, match="audit"):
        with Bus([], log=[FailsToCloseAudit(), log, sink]) as bus:
            bus.train_begin({"epochs": 1})
            bus.epoch_begin(0)
            bus.epoch_end(0, {"loss": 1.0})
            bus.train_end()
    assert_the_collector_holds_the_log(collector, log)
    assert orjson.loads(log.read_bytes().splitlines()[-1])["kind"] == "sink_failed"


def test_a_resume_sends_a_long_log_as_it_reads_it(server, tmp_path, monkeypatch):
    """The resume's catch-up flushes the sink as it goes (what the resumed log holds is
    final): it never holds more than 1024 of the log's records, and the collector gets them
    all."""
    log = tmp_path / "run.jsonl"
    with Bus([], log=log) as bus:
        bus.train_begin({"epochs": 2})
        for epoch in range(2):
            bus.epoch_begin(epoch)
            for b in range(1500):
                bus.batch_end(b, {"loss": float(b)})
            bus.epoch_end(epoch, {"loss": 1.0})
    held: list[int] = []
    flush = HttpRecordSink.flush

    def counting_flush(self):
        held.append(len(self._unflushed))
        flush(self)

    monkeypatch.setattr(HttpRecordSink, "flush", counting_flush)
    collector = server()
    sink = HttpRecordSink(collector.url, linger=0.01, flush_timeout=10.0)
    Bus([], log=[log, sink], resume=True).close()
    assert max(held) <= 1024
    assert_the_collector_holds_the_log(collector, log)
