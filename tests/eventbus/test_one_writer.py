"""One writer per log path: a second writer, in another process or this one, is refused
before it changes anything, and the first writer's log stays whole."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eventbus import Bus, read_log
from eventbus.lock import LogInUseError

# A process that writes a log, says so, and waits for a line before it ends its run.
HOLDER = textwrap.dedent("""
    import sys
    from eventbus import Bus
    bus = Bus(log=sys.argv[1])
    bus.train_begin({"epochs": 2})
    for epoch in range(2):
        bus.epoch_begin(epoch)
        bus.batch_end(0, {"loss": 1.0})
        bus.epoch_end(epoch, {"loss": 1.0})
    print("writing", flush=True)
    sys.stdin.readline()
    bus.train_end()
    bus.close()
    print("done", flush=True)
""")


@pytest.fixture
def holder():
    """Start a process holding a log; yields (path -> process), ends each one afterwards."""
    started: list[subprocess.Popen] = []

    def start(path: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline().strip() == "writing"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.communicate("\n", timeout=60)


@pytest.mark.parametrize("name", ["events.jsonl", "events.parquet"])
@pytest.mark.parametrize("resume", [False, True])
def test_a_second_process_is_refused_and_the_first_log_stays_whole(tmp_path, holder, name,
                                                                   resume):
    """The second writer gets an error naming the path and the process holding it; the first
    finishes its run and its log reads back whole (a Parquet second writer used to delete the
    first's segments; a JSON Lines one to truncate the file)."""
    path = tmp_path / name
    first = holder(path)
    with pytest.raises(LogInUseError) as info:
        Bus(log=path, resume=resume)
    assert str(path) in str(info.value) and f"process {first.pid}" in str(info.value)
    assert info.value.holder == first.pid and info.value.path == str(path)
    first.communicate("\n", timeout=60)
    assert first.returncode == 0
    kinds = [r.kind for r in read_log(path)]
    assert kinds == ["header", "train_begin", "epoch_begin", "batch_end", "epoch_end",
                     "epoch_begin", "batch_end", "epoch_end", "train_end"]


def test_a_rank_is_told_to_use_the_distributed_bus(tmp_path, holder, monkeypatch):
    """A plain Bus on each rank of a process group, one path: the error says what to use."""
    path = tmp_path / "events.jsonl"
    holder(path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(LogInUseError, match="one rank of a process group.*DistributedBus"):
        Bus(log=path)


def test_a_second_writer_in_this_process_is_refused_until_the_first_closes(tmp_path):
    """Two buses of one process on one path: the second waits for the first to close."""
    path = tmp_path / "events.jsonl"
    first = Bus(log=path)
    first.train_begin()
    with pytest.raises(LogInUseError, match="written by this process"):
        Bus(log=path)
    first.close()
    with Bus(log=path, resume=True) as second:
        second.epoch_begin(0)
    assert [r.kind for r in read_log(path)][:2] == ["header", "train_begin"]


def test_a_bus_that_cannot_be_built_lets_its_logs_go(tmp_path):
    """A resume that finds the log damaged raises from Bus(); the logs it had opened are
    closed (their locks released), so the path can be opened again."""
    from eventbus import LogCorruptError

    path = tmp_path / "events.jsonl"
    with Bus(log=path) as bus:
        bus.train_begin()
        bus.epoch_begin(0)
        bus.epoch_end(0, {"loss": 1.0})
    text = path.read_text().splitlines(keepends=True)
    text[2] = text[2].replace('"epoch":0', '"epoch":"zero"')  # the epoch_begin
    path.write_text("".join(text))
    with pytest.raises(LogCorruptError):
        Bus(log=[path, tmp_path / "copy.parquet"], resume=True)
    Bus(log=path).close()  # not "written by this process"
    Bus(log=tmp_path / "copy.parquet").close()
