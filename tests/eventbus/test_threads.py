"""The run is published from one thread at a time: two threads at once are refused, with
nothing recorded lost; a later fit may come from another thread; other threads report."""

from __future__ import annotations

import threading

import pytest

from eventbus import Bus, EventError, read_log
from eventbus import records as r


def test_a_second_thread_during_a_fit_is_refused_and_nothing_is_lost(tmp_path):
    """Two threads publishing batches at once used to lose thousands of records, put seq out
    of order and kill one thread with a BufferError. Now the second thread's first event is
    an EventError naming both threads, and the first thread's run is recorded whole."""
    path = tmp_path / "events.jsonl"
    bus = Bus(log=path)
    bus.train_begin({"epochs": 1})
    bus.epoch_begin(0)
    errors: list[BaseException] = []
    started = threading.Event()

    def intruder() -> None:
        started.wait()
        try:
            for i in range(1000):
                bus.batch_end(i, {"loss": 2.0})
        except BaseException as exc:  # noqa: BLE001 - the test looks at what it was
            errors.append(exc)

    other = threading.Thread(target=intruder, name="intruder")
    other.start()
    for i in range(20_000):
        bus.batch_end(i, {"loss": 1.0})
        if i == 100:
            started.set()
    other.join()
    bus.epoch_end(0, {"loss": 1.0})
    bus.train_end()
    bus.close()
    assert len(errors) == 1 and isinstance(errors[0], EventError)
    assert "'MainThread'" in str(errors[0]) and "'intruder'" in str(errors[0])
    records = list(read_log(path))
    assert [rec.seq for rec in records] == list(range(len(records)))
    batches = [rec for rec in records if rec.kind == "batch_end"]
    assert len(batches) == 20_000 and {rec.logs["loss"] for rec in batches} == {1.0}


def flush_from_another_thread(bus: Bus) -> BaseException | None:
    """``bus.flush()`` from a thread of its own, named "watchdog"; what it raised, if any."""
    raised: list[BaseException] = []

    def watchdog() -> None:
        try:
            bus.flush()
        except BaseException as exc:  # noqa: BLE001 - the test looks at what it was
            raised.append(exc)

    thread = threading.Thread(target=watchdog, name="watchdog")
    thread.start()
    thread.join()
    return raised[0] if raised else None


def test_a_flush_from_a_second_thread_during_a_fit_is_refused(tmp_path):
    """A watchdog thread flushing the logs while the fit's thread appends to their buffers
    took a Parquet log out of the run (a segment built from lists changing under it: every
    later record lost). Now its flush is an EventError, as its events are; once the fit has
    ended, any thread may flush. Every record of the fit is kept, in order."""
    path = tmp_path / "events.parquet"
    bus = Bus(log=path)
    bus.train_begin({"epochs": 1})
    bus.epoch_begin(0)
    error = None
    for i in range(5_000):
        bus.batch_end(i, {"loss": 1.0})
        if i == 100:
            error = flush_from_another_thread(bus)
    bus.epoch_end(0, {"loss": 1.0})
    bus.train_end()
    assert isinstance(error, EventError)
    assert "flush()" in str(error) and "'watchdog'" in str(error)
    assert flush_from_another_thread(bus) is None  # between fits: taken
    bus.close()
    records = list(read_log(path))
    assert [rec.seq for rec in records] == list(range(len(records)))
    assert [rec.kind for rec in records].count("batch_end") == 5_000
    assert records[-1].kind == "train_end" and not bus.failures


@pytest.mark.parametrize("loop", ["test", "predict"])
def test_a_second_thread_during_an_evaluation_or_a_prediction_is_refused(tmp_path, loop):
    """An evaluation or a prediction outside a fit appends to the same buffers a fit does: a
    watchdog's flush meanwhile corrupted the Parquet log or had it taken out. Refused while
    the loop is under way, as during a fit; taken once it has ended."""
    path = tmp_path / "events.parquet"
    bus = Bus(log=path)
    error = None
    getattr(bus, f"{loop}_begin")()
    for i in range(2_000):
        getattr(bus, f"{loop}_batch_end")(i, {"loss": 1.0} if loop == "test" else None)
        if i == 100:
            error = flush_from_another_thread(bus)
    getattr(bus, f"{loop}_end")(*([{"loss": 1.0}] if loop == "test" else []))
    assert isinstance(error, EventError)
    assert "loop is under way" in str(error) and "'watchdog'" in str(error)
    assert flush_from_another_thread(bus) is None
    bus.close()
    kinds = [rec.kind for rec in read_log(path)]
    assert kinds.count(f"{loop}_batch_end") == 2_000 and kinds[-1] == f"{loop}_end"


def test_the_next_fit_may_come_from_another_thread(tmp_path):
    """A bus built in one thread and fitted in another, then fitted again in a third: each
    fit is published from one thread, so each is accepted."""
    path = tmp_path / "events.jsonl"
    bus = Bus(log=path)

    def fit() -> None:
        bus.train_begin({"epochs": 1})
        bus.epoch_begin(0)
        bus.batch_end(0, {"loss": 1.0})
        bus.epoch_end(0, {"loss": 1.0})
        bus.train_end()

    for _ in range(2):
        worker = threading.Thread(target=fit)
        worker.start()
        worker.join()
    bus.close()
    assert [rec.kind for rec in read_log(path)].count("train_end") == 2


def test_other_threads_report_outcomes(tmp_path):
    """report() is the one way in from another thread (queued, recorded at the next event);
    record() from another thread during a fit is refused like an event."""
    bus = Bus(log=tmp_path / "events.jsonl")
    bus.train_begin()
    saved = r.CheckpointSaved(path="x.h5", size=1, sha256="0" * 64)
    caught: list[BaseException] = []

    def other() -> None:
        bus.report(saved)
        try:
            bus.record(saved)
        except BaseException as exc:  # noqa: BLE001 - the test looks at what it was
            caught.append(exc)

    worker = threading.Thread(target=other)
    worker.start()
    worker.join()
    bus.epoch_begin(0)
    bus.close()
    assert len(caught) == 1 and isinstance(caught[0], EventError)
    assert "record() from thread" in str(caught[0])
    kinds = [rec.kind for rec in read_log(tmp_path / "events.jsonl")]
    assert kinds.count("checkpoint_saved") == 1
