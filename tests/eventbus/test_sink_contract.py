"""eventbus.sink: every built-in sink honours the one contract, on real runs with real
destinations (files under tmp_path, a loopback HTTP server, text streams).

The contract (``eventbus/sink.py``): a sink is opened once, with the run, before the first record
it gets; given only the kinds it ``takes``, in ``seq`` order; closed once, at the end. A replay
writes nothing, so it opens and writes none of a sink; a resume feeds the log again to the
plugins without writing it again to a sink that takes some kinds. A sink that raises is
recorded, taken out of the run, and training goes on.
"""

from __future__ import annotations

import io
import itertools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from eventbus import (
    Bus,
    NumpyModel,
    Plugin,
    RunWarning,
    Sink,
    SinkFailureWarning,
    hookimpl,
    read_log,
    replay,
)
from eventbus import records as r
from eventbus.effective import resume_point
from eventbus.jsonl import JsonlWriter
from eventbus.parquet import ParquetWriter
from eventbus.testing import RecordingWriter
from plugins import BackupAndRestore, CSVLogger, ProgbarLogger, RemoteMonitor, TensorBoard
from sinks.console import ConsoleSink
from sinks.csv import CsvSink
from sinks.hdf5 import HDF5CheckpointWriter
from sinks.http import HttpRecordSink


class Decider(Plugin):
    """Makes every kind of decision over two epochs, so each sink is offered them all."""

    def __init__(self, checkpoint: str):
        self.checkpoint = checkpoint

    @hookimpl
    def on_epoch_end(self, event):
        if event.epoch == 0:
            return [r.SnapshotWeights(reason="best so far", tag="best"),
                    r.SetLearningRate(reason="plateau", value=0.05),
                    r.SaveCheckpoint(reason="epoch done", path=self.checkpoint)]
        return [r.RestoreWeights(reason="best weights", tag="best"),
                r.StopTraining(reason="enough")]


def model() -> NumpyModel:
    return NumpyModel({"w": np.arange(4.0), "b": np.zeros(2)}, learning_rate=0.1)


def epoch(bus: Bus, number: int) -> None:
    """One epoch of a loop: batches, an evaluation, the epoch's end."""
    bus.epoch_begin(number)
    for batch in range(2):
        bus.batch_begin(batch)
        bus.batch_end(batch, {"loss": 0.5 - 0.1 * number})
    bus.test_begin()
    bus.test_batch_begin(0)
    bus.test_batch_end(0, {"loss": 0.6})
    bus.test_end({"loss": 0.6})
    bus.epoch_end(number, {"loss": 0.5, "val_loss": 0.6})


def fit(bus: Bus, epochs: range = range(2)) -> None:
    """A whole fit, then a prediction: every observation kind is published."""
    bus.train_begin({"epochs": 2, "steps": 2})
    for number in epochs:
        epoch(bus, number)
        if bus.stop_training:
            break
    bus.train_end()
    bus.predict_begin()
    bus.predict_batch_begin(0)
    bus.predict_batch_end(0, {})
    bus.predict_end()


@dataclass
class Case:
    """How to build one built-in sink; everything it writes goes under ``base``, to ``url``
    or to ``out``."""

    name: str
    make: Callable[[Path, str, io.StringIO], Any]

    def __str__(self) -> str:
        return self.name


CASES = [
    Case("JsonlWriter", lambda base, url, out: JsonlWriter(base / "events.jsonl")),
    Case("ParquetWriter", lambda base, url, out: ParquetWriter(base / "events.parquet")),
    Case("CSVLogger", lambda base, url, out: CSVLogger(base / "log.csv")),
    Case("CsvSink", lambda base, url, out: CsvSink(base / "table.csv")),
    Case("TensorBoard", lambda base, url, out: TensorBoard(
        base / "tb", update_freq="batch", write_steps_per_second=True, flush_timeout=10.0)),
    Case("RemoteMonitor", lambda base, url, out: RemoteMonitor(
        url, timeout=2.0, retries=0, backoff=0.0, flush_timeout=10.0)),
    Case("ProgbarLogger", lambda base, url, out: ProgbarLogger(file=out)),
    Case("HDF5CheckpointWriter", lambda base, url, out: HDF5CheckpointWriter()),
    Case("BackupAndRestore", lambda base, url, out: BackupAndRestore(base / "backup")),
    Case("ConsoleSink", lambda base, url, out: ConsoleSink(out)),
    Case("HttpRecordSink", lambda base, url, out: HttpRecordSink(
        url, linger=0.05, timeout=2.0, retries=0, backoff=0.0, flush_timeout=10.0)),
]


def watch(sink: Any, now: Callable[[], int] = lambda: -1) -> list[tuple]:
    """Wrap the instance's open, write, close (write_finite and catch_up, if it has them) so
    each call is noted, in order: the run and its resumed flag at open, the kind and seq of
    each record, the bus's seq at close."""
    calls: list[tuple] = []
    opener, writer, closer = sink.open, sink.write, sink.close
    finite = getattr(sink, "write_finite", None)
    if finite is not None:  # the fast path for checked batch records: a write all the same
        def wrote_finite(record):
            calls.append(("write", record["kind"], record["seq"]))
            return finite(record)

        sink.write_finite = wrote_finite
    catcher = getattr(sink, "catch_up", None)
    if catcher is not None:
        def caught_up(record, run):
            calls.append(("catch_up", record["kind"], record["seq"]))
            return catcher(record, run)

        sink.catch_up = caught_up

    def opened(run):
        calls.append(("open", run, run.resumed))
        return opener(run)

    def wrote(record):
        calls.append(("write", record["kind"], record["seq"]))
        return writer(record)

    def closed():
        calls.append(("close", now()))
        return closer()

    sink.open, sink.write, sink.close = opened, wrote, closed
    return calls


def on(sink: Any, base: Path, *, log: list | None = None, **bus_options) -> Bus:
    """A bus with the Decider and ``sink``: a plugin if it is one, else a log."""
    plugins: list = [Decider(os.fspath(base / "ckpt.h5"))]
    logs: list = []
    (plugins if isinstance(sink, Plugin) else logs).append(sink)
    return Bus(plugins, log=logs + (log or []), model=model(), **bus_options)


def received(sink: Any, calls: list[tuple]) -> list[tuple[int, str]]:
    """(seq, kind) of every record the sink got; a JSON Lines log's batch lines come by its
    fast path, not ``write``, so its file says what it got."""
    if isinstance(sink, JsonlWriter):
        return [(rec["seq"], rec["kind"]) for rec in map(orjson.loads,
                                                          sink.path.read_bytes().splitlines())]
    return [(seq, kind) for what, kind, seq in (c for c in calls if c[0] == "write")]


def files_under(base: Path) -> dict[str, int]:
    return {os.fspath(p.relative_to(base)): p.stat().st_size
            for p in base.rglob("*") if p.is_file()} if base.exists() else {}


def quietly_close(sink: Any) -> None:
    """Release what a fresh instance holds (a sender thread, a segment writer)."""
    if isinstance(sink, (HttpRecordSink, ParquetWriter, JsonlWriter)):
        sink.close()


@pytest.fixture(params=CASES, ids=str)
def case(request) -> Case:
    return request.param


class TestContract:
    def test_is_a_sink(self, case, tmp_path, server):
        """Every built-in sink is an eventbus.Sink."""
        sink = case.make(tmp_path, server().url, io.StringIO())
        try:
            assert isinstance(sink, Sink)
        finally:
            quietly_close(sink)

    def test_a_run_opens_it_once_gives_its_kinds_and_closes_it_once(self, case, tmp_path,
                                                                     server):
        """On a real run the sink is opened once with bus.run before any record, given exactly
        the records of the kinds it takes, in seq order, and closed once at the end."""
        collector = server()
        sink = case.make(tmp_path / "sink", collector.url, io.StringIO())
        holder: dict = {}
        calls = watch(sink, now=lambda: holder["bus"].seq)
        log = RecordingWriter()
        bus = holder["bus"] = on(sink, tmp_path, log=[log])
        with warnings.catch_warnings():
            warnings.simplefilter("error", SinkFailureWarning)  # a healthy run
            fit(bus)
            bus.close()
        assert bus.failures == []

        assert [c[0] for c in calls].count("open") == 1
        assert calls[0][:2] == ("open", bus.run)
        assert [c[0] for c in calls].count("close") == 1 and calls[-1][0] == "close"
        closed_at = calls[-1][1]
        takes = sink.takes
        got = received(sink, calls)
        if takes is not None:
            assert {kind for _, kind in got} <= set(takes)
        assert [seq for seq, _ in got] == sorted({seq for seq, _ in got})
        expected = [(rec["seq"], rec["kind"]) for rec in log.records
                    if (takes is None or rec["kind"] in takes) and rec["seq"] <= closed_at]
        assert got == expected
        assert got, "the run offered this sink nothing: the test would prove nothing"

    def test_given_as_a_log_it_gets_what_it_gets_as_a_plugin(self, case, tmp_path, server):
        """``Bus(log=[sink])`` and ``Bus([..., sink])`` are one run for the sink: a sink that
        is a plugin (CSVLogger, TensorBoard) is registered either way, last, and gets the same
        records (a TensorBoard given as a log used to fail its open for want of a label)."""
        got = []
        for placement in ("plugins", "log"):
            collector = server()
            base = tmp_path / placement
            sink = case.make(base / "sink", collector.url, io.StringIO())
            calls = watch(sink)
            plugins: list = [Decider(os.fspath(base / "ckpt.h5"))]
            bus = Bus(plugins + [sink] if placement == "plugins" else plugins,
                      log=[sink] if placement == "log" else [], model=model())
            with warnings.catch_warnings():
                warnings.simplefilter("error", SinkFailureWarning)
                fit(bus)
                bus.close()
            assert bus.failures == []
            if isinstance(sink, Plugin):
                assert bus.header().plugins[-1].name == type(sink).__name__
            got.append([kind for _, kind in received(sink, calls)])
        assert got[0] == got[1] and got[0]

    def test_a_replay_opens_and_writes_none_of_it(self, case, tmp_path, server):
        """A replay given a fresh instance (in place of the one the run had) never opens,
        writes or closes it, and it creates or changes no file and sends nothing."""
        collector = server()
        recorded = tmp_path / "run.jsonl"
        bus = on(case.make(tmp_path / "live", collector.url, io.StringIO()), tmp_path,
                 log=[recorded])
        fit(bus)
        bus.close()
        sent = len(collector.requests)
        checkpoint = tmp_path / "ckpt.h5"  # the replayed decision names it again
        checkpoint.unlink(missing_ok=True)

        out = io.StringIO()
        fresh_base = tmp_path / "fresh"
        fresh = case.make(fresh_base, collector.url, out)
        try:
            before = files_under(fresh_base)
            calls = watch(fresh)
            result = replay(recorded, plugins=[Decider(os.fspath(checkpoint)), fresh],
                            verify=True)
            assert result.ok and result.decisions  # the replay did recompute the run
            assert any(p is fresh for p in result.plugins)
            assert calls == []
            assert files_under(fresh_base) == before and not checkpoint.exists()
            assert out.getvalue() == ""
            assert len(collector.requests) == sent
        finally:
            quietly_close(fresh)

    # The resumed run restores weights it never backed up (no BackupAndRestore): warned of.
    @pytest.mark.filterwarnings("ignore:.*no weights:eventbus.RunWarning")
    def test_a_resume_writes_none_of_the_past_to_it(self, case, tmp_path, server):
        """Resuming a crashed run, the sink is opened once, with the resumed run, before its
        first record; one that takes some kinds gets none of the records the log already had
        (one with ``catch_up`` gets them there, each once, before it is opened), and a log
        (every kind) gets each record of the run once, in seq order."""
        collector = server()
        recorded = tmp_path / "run.jsonl"
        first = Bus([Decider(os.fspath(tmp_path / "ckpt.h5"))], log=recorded, model=model())
        first.train_begin({"epochs": 2, "steps": 2})
        epoch(first, 0)
        first.close()  # the loop died in epoch 1
        crashed_at = first.seq
        # The run up to where it goes on: its last finished epoch and the decisions after it
        # (the records of the epoch it died in are published again).
        point = resume_point(recorded).seq
        past = list(itertools.takewhile(
            lambda rec: rec.seq <= point or rec.category != "observation", read_log(recorded)))

        sink = case.make(tmp_path / "fresh", collector.url, io.StringIO())
        holder: dict = {}
        calls = watch(sink, now=lambda: holder["bus"].seq)
        log = RecordingWriter()
        # Nothing restores the model's weights (no backup, no checkpoint): the bus says so.
        with pytest.warns(RunWarning, match="weights were not restored|no weights backup"):
            bus = holder["bus"] = on(sink, tmp_path, log=[recorded, log], resume=True)
        assert bus.initial_epoch == 1
        fit(bus, range(bus.initial_epoch, 2))
        bus.close()

        opens = [c for c in calls if c[0] == "open"]
        assert len(opens) == 1 and opens[0][1:] == (bus.run, True)
        assert [c[0] for c in calls].count("close") == 1 and calls[-1][0] == "close"
        got = received(sink, calls)
        seqs = [seq for seq, _ in got]
        assert seqs == sorted(set(seqs))
        if sink.takes is not None:
            assert all(seq > crashed_at for seq in seqs)
            caught = [(seq, kind) for what, kind, seq in (c for c in calls if c[0] == "catch_up")]
            if hasattr(sink, "catch_up"):
                taken = [(rec.seq, rec.kind) for rec in past if rec.kind in sink.takes]
                assert taken and caught == taken
            assert [c[0] for c in calls[:len(caught)]] == ["catch_up"] * len(caught)
            assert calls[len(caught)][0] == "open"
        else:  # another log of the run: it is given the run so far, then the rest
            whole = [(rec.seq, rec.kind) for rec in read_log(recorded)]
            assert got == whole

    @pytest.mark.parametrize("make", [
        lambda base, url: JsonlWriter(base / "events.jsonl"),
        lambda base, url: HttpRecordSink(url, linger=0.05, timeout=2.0, retries=0,
                                         flush_timeout=10.0)], ids=["JsonlWriter", "Http"])
    def test_a_resume_opens_a_log_before_its_first_record(self, make, tmp_path, server):
        """On a resume an extra log sink is opened before the run so far is written to it."""
        recorded = tmp_path / "run.jsonl"
        first = Bus(log=recorded)
        first.train_begin()
        epoch(first, 0)
        first.close()
        sink = make(tmp_path / "fresh", server().url)
        calls = watch(sink)
        bus = Bus(log=[recorded, sink], resume=True)
        bus.close()
        assert calls[0][0] == "open"


class Full(Sink):
    """A log whose every write fails (a full disk)."""

    name = "full"

    def write(self, record):
        raise OSError("disk full")


class TestResumeCatchingUpALog:
    def test_a_log_that_fails_while_caught_up_is_dropped(self, tmp_path):
        """An extra log that fails as a resume writes the run so far to it is recorded as
        sink_failed and dropped, and the run resumes."""
        recorded = tmp_path / "run.jsonl"
        first = Bus(log=recorded)
        first.train_begin()
        epoch(first, 0)
        first.close()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SinkFailureWarning)
            bus = Bus(log=[recorded, Full()], resume=True)
            bus.close()
        assert [(f.kind, f.sink) for f in bus.failures] == [("sink_failed", "full")]


class Flaky(Plugin, Sink):
    """A plugin that is a sink: it takes epoch_end records and fails to write epoch 1's."""

    side_effects = True
    takes = frozenset({"epoch_end"})

    def __init__(self):
        self.hooks: list[tuple[str, int]] = []
        self.written: list[int] = []
        self.closes = 0

    def write(self, record):
        if record["epoch"] == 1:
            raise OSError("disk full")
        self.written.append(record["epoch"])

    def close(self):
        self.closes += 1

    @hookimpl
    def on_epoch_end(self, event):
        self.hooks.append(("epoch_end", event.epoch))

    @hookimpl
    def on_epoch_begin(self, event):
        self.hooks.append(("epoch_begin", event.epoch))


class TestAFailingSinkPlugin:
    def test_recorded_once_disabled_and_training_goes_on(self):
        """A plugin that is a Sink and raises in write is recorded once as sink_failed (its
        label, the event, its seq and epoch), closed once, no longer written to nor called,
        and the run goes on to its end."""
        flaky = Flaky()
        log = RecordingWriter()
        bus = Bus([flaky], log=log)
        bus.train_begin()
        for number in range(4):
            bus.epoch_begin(number)
            bus.epoch_end(number, {"loss": 1.0})
        bus.train_end()
        with pytest.warns(SinkFailureWarning, match="Flaky on epoch_end: OSError: disk full"):
            bus.close()

        (fault,) = [rec for rec in log.records if rec["kind"] == "sink_failed"]
        (end_1,) = [rec for rec in log.records
                    if rec["kind"] == "epoch_end" and rec["epoch"] == 1]
        assert (fault["sink"], fault["event"], fault["cause_seq"], fault["epoch"]) == \
            ("Flaky", "epoch_end", end_1["seq"], 1)
        assert (fault["error"], fault["message"]) == ("OSError", "disk full")
        assert [f.kind for f in bus.failures] == ["sink_failed"]
        assert flaky.written == [0] and flaky.closes == 1
        assert flaky.hooks == [("epoch_begin", 0), ("epoch_end", 0), ("epoch_begin", 1)]
        assert bus.plugins == [flaky]  # still listed, as the run had it
        assert [rec["epoch"] for rec in log.records if rec["kind"] == "epoch_end"] == \
            [0, 1, 2, 3]
        assert log.kinds()[-1] == "train_end"


class TestASinkOfAnotherPackage:
    """A sink written elsewhere reads each record as the dict a log stores and, as code written
    for record objects does, by attribute; what it does to its copy reaches no other sink."""

    def test_fields_read_as_keys_and_as_attributes(self):
        class Mine(Sink):
            def __init__(self):
                self.seen = []

            def write(self, record):
                self.seen.append((record.kind, record["kind"], record.get("epoch"),
                                  dict(record.get("logs", {}))))
                record["logs"] = {}  # its own copy

            def flush(self):
                pass

            def close(self):
                pass

        mine, kept = Mine(), RecordingWriter()
        with Bus(log=[mine, kept]) as bus:
            bus.epoch_begin(0)
            bus.epoch_end(0, {"loss": 0.5})
        assert mine.seen == [("header", "header", None, {}), ("epoch_begin", "epoch_begin", 0, {}),
                             ("epoch_end", "epoch_end", 0, {"loss": 0.5})]
        assert kept.records[-1]["logs"] == {"loss": 0.5} and not bus.failures

    def test_a_missing_field_names_the_record_and_its_fields(self):
        from eventbus.sink import RecordDict

        record = RecordDict({"kind": "epoch_end", "epoch": 0, "logs": {}})
        with pytest.raises(AttributeError, match=r"'epoch_end' record has no field 'batch'; "
                                                 r"it has kind, epoch, logs"):
            _ = record.batch

    def test_a_resume_catches_it_up_with_the_same_records(self, tmp_path):
        """catch_up gets what write gets: fields read as attributes too."""
        class Catching(Sink):
            takes = frozenset({"epoch_end"})

            def __init__(self):
                self.caught = []

            def catch_up(self, record, run):
                self.caught.append((record.kind, record.epoch))

            def write(self, record):
                pass

            def flush(self):
                pass

            def close(self):
                pass

        path = tmp_path / "run.jsonl"
        with Bus(log=path) as bus:
            bus.train_begin({"epochs": 3})
            for epoch in range(2):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0})
        sink = Catching()
        with Bus(log=[path, sink], resume=True) as bus:
            assert bus.initial_epoch == 2
        assert sink.caught == [("epoch_end", 0), ("epoch_end", 1)] and not bus.failures
