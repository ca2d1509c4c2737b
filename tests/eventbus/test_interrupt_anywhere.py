"""Ctrl-C at any line of the log writers, or of the bus's recording and deciding: both logs
read back, agree but for the one record cut, and a resume goes on to a whole run.

A KeyboardInterrupt is raised from a trace function at one line of one writer function (as a
signal lands between two lines), at its first or third run, in a small run with a JSON Lines
and a Parquet log; the lines are drawn by hypothesis. Before, an interrupt in the Parquet
writer lost the chunk or segment being filled, wrote a segment's rows twice (the log then
unreadable), or left the log locked; one in the JSON Lines accounting wrote bytes twice.
"""

from __future__ import annotations

import sys
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventbus.engine
import eventbus.jsonl
import eventbus.parquet
import eventbus.recorder
import eventbus.sink
from eventbus import Bus, Sink, read_log
from eventbus.records import Warning  # noqa: A004 - the record kind
from eventbus.replay import effective_records
from plugins import ReduceLROnPlateau

TARGETS = [eventbus.sink.drain, eventbus.jsonl.JsonlWriter.flush,
           eventbus.jsonl.JsonlWriter.close, eventbus.parquet.ParquetWriter.write,
           eventbus.parquet.ParquetWriter.write_finite, eventbus.parquet.ParquetWriter._end_chunk,
           eventbus.parquet.ParquetWriter._take_segment,
           eventbus.parquet.ParquetWriter._write_segment, eventbus.parquet.ParquetWriter.flush,
           eventbus.parquet.ParquetWriter.close, eventbus.recorder.Recorder.write,
           eventbus.recorder.Recorder.fan_out, eventbus.engine.Engine.observe,
           eventbus.engine.Engine.dispatch, eventbus.engine.Engine.decide,
           eventbus.engine.Engine.close]
POINTS = [(fn, line) for fn in TARGETS
          for line in sorted({line for _, _, line in fn.__code__.co_lines()
                              if line is not None and line > fn.__code__.co_firstlineno})]
EPOCHS, BATCHES = 3, 30


class Answering(Sink):
    """A sink before the logs that answers each batch_end of epoch 1 (where the interrupts
    are set) with an outcome: the batch path then hands the record to the writers after it
    through ``Recorder.fan_out``."""

    name = "answering"
    takes = frozenset({"batch_end"})

    def write(self, record):
        if record["epoch"] == 1:
            return Warning(message=f"batch {record['batch']} looked odd")
        return None


def run(folder, arm=None, answering: bool = False) -> list:
    logs = [folder / "e.jsonl", folder / "e.parquet"]
    with Bus([ReduceLROnPlateau(monitor="loss", patience=0, factor=0.5)],
             log=[Answering(), *logs] if answering else logs,
             resume=True, learning_rate=1.0) as bus:
        bus.train_begin({"epochs": EPOCHS})
        for epoch in range(bus.initial_epoch, EPOCHS):
            bus.epoch_begin(epoch)
            if epoch == 1 and arm is not None:
                arm()
            for batch in range(BATCHES):
                bus.batch_begin(batch)
                bus.batch_end(batch, {"loss": 1.0})
            bus.epoch_end(epoch, {"loss": 1.0})
        bus.train_end()
    return logs


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(point=st.sampled_from(POINTS), hit=st.sampled_from([1, 3]))
def test_an_interrupt_at_any_line_of_a_log_writer(tmp_path_factory, point, hit):
    interrupted_at(tmp_path_factory, point, hit)


#: Every line of the writers the batch paths call without Recorder.write around them.
BATCH_PATH = [(fn, line) for fn, line in POINTS
              if fn is eventbus.parquet.ParquetWriter.write_finite]


@pytest.mark.parametrize("point", BATCH_PATH, ids=lambda point: f"line-{point[1]}")
@pytest.mark.parametrize("hit", [1, 2, 3, 4])  # epoch 1's batch_begin, batch_end, ...
@pytest.mark.parametrize("answering", [False, True], ids=["inlined", "after-an-answer"])
@pytest.mark.filterwarnings("ignore:answering. batch")
def test_an_interrupt_inside_the_batch_paths_writer(tmp_path_factory, point, hit, answering):
    """An interrupt between a batch record's fields and its metrics in the Parquet writer
    left a row half appended; the next record written (the bus's record of the interrupt,
    an outcome at close) joined it, and the log held a record every reader refused. The
    batch paths now drop what is unflushed, as Recorder.write does for every other record:
    in the inlined loop, and after a sink before the log answered."""
    interrupted_at(tmp_path_factory, point, hit, answering)


def interrupted_at(tmp_path_factory, point, hit, answering: bool = False) -> None:
    fn, line = point
    folder = tmp_path_factory.mktemp("run")
    count = [0]

    def local(frame, event, arg):
        if event == "line" and frame.f_lineno == line:
            count[0] += 1
            if count[0] == hit:
                sys.settrace(None)
                raise KeyboardInterrupt
        return local

    def watch(frame, event, arg):
        return local if frame.f_code is fn.__code__ else None

    try:
        run(folder, lambda: sys.settrace(watch), answering)
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what the interrupt cut short is warned of
        jsonl = {r.seq for r in read_log(folder / "e.jsonl")}
        parquet = {r.seq for r in read_log(folder / "e.parquet")}
        assert len(jsonl ^ parquet) <= 1, (fn.__qualname__, line, hit)
        logs = run(folder, answering=answering)
    for log in logs:
        done = effective_records(list(read_log(log)))
        assert [r.epoch for r in done if r.kind == "epoch_end"] == list(range(EPOCHS))
        assert sum(r.kind == "batch_end" for r in done) == EPOCHS * BATCHES
