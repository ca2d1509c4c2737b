"""Resume passes over the batch records no plugin takes and no log catches up on (for speed):
it must resume exactly as when every record is fed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from eventbus import Bus, Plugin, hookimpl, read_log


class CountsBatchBegins(Plugin):
    """A pure plugin that takes batch_begin: resume must feed it every one before the point."""

    def __init__(self) -> None:
        self.seen: list[tuple[int | None, int]] = []

    @hookimpl
    def on_batch_begin(self, event) -> None:  # type: ignore[no-untyped-def]
        self.seen.append((event.epoch, event.batch))


def crashed_run(path: Path) -> None:
    """Two finished epochs of three batches, then a batch of epoch 2 and no epoch end."""
    bus = Bus([], log=path)
    bus.train_begin({"epochs": 3})
    for epoch in range(2):
        bus.epoch_begin(epoch)
        for batch in range(3):
            bus.batch_begin(batch)
            bus.batch_end(batch, {"loss": 1.0})
        bus.epoch_end(epoch, {"loss": 1.0})
    bus.epoch_begin(2)
    bus.batch_begin(0)
    bus.flush()  # the crash: nothing after this reaches the log, the bus is never closed


def crash(bus: Bus) -> None:
    """What a killed process leaves: what was flushed, and its log's descriptor (and lock)
    let go by the exit, with nothing more written."""
    bus.flush()
    for slot in bus.recorder.slots:
        slot.sink._file.close()


def crashed_twice(path: Path) -> None:
    """A run that crashed in epoch 1, was resumed, and crashed again in the epoch it reran
    before ending it: the first try's batches are abandoned, past the last epoch end."""
    bus = Bus([], log=path)
    bus.train_begin({"epochs": 3})
    bus.epoch_begin(0)
    bus.batch_begin(0)
    bus.batch_end(0, {"loss": 1.0})
    bus.epoch_end(0, {"loss": 1.0})
    bus.epoch_begin(1)
    bus.batch_begin(0)
    bus.batch_end(0, {"loss": 1.0})
    crash(bus)
    again = Bus([], log=path, resume=True)
    again.epoch_begin(again.initial_epoch)
    again.batch_begin(0)
    again.batch_end(0, {"loss": 1.0})
    again.batch_begin(1)
    crash(again)


def resumed(path: Path, plugins: list[object]) -> tuple[Bus, dict[str, object]]:
    bus = Bus(plugins, log=path, resume=True)
    state = {"initial_epoch": bus.initial_epoch, "seq": bus.seq, "step": bus.cursor.step,
             "epoch": bus.cursor.epoch}
    bus.close()
    mark = [r for r in read_log(path) if r.kind == "resumed"][-1]
    state |= {"from_seq": mark.from_seq, "resumed_epoch": mark.epoch}
    return bus, state


@pytest.mark.parametrize("crash", [crashed_run, crashed_twice])
def test_resume_skipping_unfed_batch_records_matches_feeding_them(tmp_path, crash):
    crash(tmp_path / "run.jsonl")
    for name in ("quiet.jsonl", "fed.jsonl"):
        shutil.copyfile(tmp_path / "run.jsonl", tmp_path / name)
    counter = CountsBatchBegins()
    _, quiet = resumed(tmp_path / "quiet.jsonl", [])
    _, fed = resumed(tmp_path / "fed.jsonl", [counter])
    assert quiet == fed
    if crash is crashed_run:
        assert counter.seen == [(epoch, batch) for epoch in range(2) for batch in range(3)]
        assert quiet["initial_epoch"] == 2 and quiet["resumed_epoch"] == 1
    else:
        assert counter.seen == [(0, 0)]
        assert quiet["initial_epoch"] == 1 and quiet["resumed_epoch"] == 0


def test_a_log_caught_up_beside_the_resumed_one_still_gets_every_batch_record(tmp_path):
    backup = tmp_path / "backup.jsonl"
    crashed_run(backup)

    class FromBackup(Plugin):
        @hookimpl
        def resume_from(self, bus):  # type: ignore[no-untyped-def]
            return str(backup)

    main = tmp_path / "main.jsonl"
    Bus([FromBackup()], log=main).close()
    kinds = [r.kind for r in read_log(main)]
    assert kinds.count("batch_begin") == 6 and kinds.count("batch_end") == 6
