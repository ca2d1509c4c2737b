"""Resume after a crash: real subprocesses killed with SIGKILL at random events of the run."""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from eventbus import Bus, RunWarning, read_log
from eventbus import records as r
from eventbus.replay import effective_records

from crash_runs import events_of, kill_points, kill_until_done
from doubles import ScheduleModel

WORKER = Path(__file__).with_name("crash_worker.py")


def decisions(path: Path) -> list[tuple]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the finished log must read back whole
        records = effective_records(read_log(path))
    return [(d.kind, d.source, d.epoch, d.reason, getattr(d, "value", None))
            for d in records if isinstance(d, r.Decision)]


def run_worker(path: Path, timeout: float = 60) -> str:
    """The worker run to the end on its own (nothing on its stdin: it waits for no answer)."""
    done = subprocess.run([sys.executable, str(WORKER), str(path)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[list[tuple], list[str]]:
    """The uninterrupted run: its decisions, and the events it published, in order."""
    path = tmp_path_factory.mktemp("clean") / "events.jsonl"
    events = events_of(run_worker(path))
    return decisions(path), events


@pytest.fixture(scope="module")
def clean_run(clean) -> list[tuple]:
    return clean[0]


def test_the_clean_run_makes_decisions(clean_run):
    """The reference run cuts the learning rate and stops: resume has state to restore."""
    kinds = [d[0] for d in clean_run]
    assert "set_learning_rate" in kinds and kinds[-1] == "stop_training"


@pytest.mark.parametrize(("seed", "logs"), [
    (0, ["events.jsonl"]), (1, ["events.jsonl"]), (2, ["events.jsonl"]),
    (3, ["events.jsonl", "events.parquet"]), (4, ["events.parquet"]), (5, ["events.parquet"])])
def test_killed_at_random_moments_then_resumed_decides_as_a_clean_run(tmp_path, clean, seed,
                                                                      logs):
    """SIGKILL at random events (1 to 3 kills), resume each time: same decisions, whole logs. A
    Parquet log alone is resumed from; next to a JSON Lines log it is appended to, no row
    written twice."""
    clean_run, events = clean
    points = kill_points(random.Random(seed), events)
    paths = [tmp_path / log for log in logs]
    kills = kill_until_done([sys.executable, str(WORKER), ",".join(map(str, paths))], events,
                            points)
    assert kills == len(points), [events[p] for p in points]
    for path in paths:
        assert decisions(path) == clean_run
        records = list(read_log(path))
        assert sum(rec.kind == "resumed" for rec in records) >= 1
        # As stored: pandas and pyarrow read the file without this library's reader.
        seqs = pq.read_table(path).column("seq").to_pylist() if path.suffix == ".parquet" \
            else [rec.seq for rec in records]
        assert seqs == sorted(set(seqs)), "seq strictly increasing across resumes"


def test_a_finished_run_resumes_as_stopped(tmp_path, clean_run):
    """Resuming a run that had stopped: stop_training is true, nothing is decided twice."""
    path = tmp_path / "events.jsonl"
    run_worker(path)
    with pytest.warns(RunWarning, match="had finished: its last fit ended after epoch"):
        bus = Bus([], log=path, resume=True)
    assert bus.stop_training
    bus.close()
    assert decisions(path) == clean_run


@pytest.mark.parametrize("log", ["new.jsonl", "new.parquet"])
def test_no_log_yet_simply_starts(tmp_path, log):
    """resume=True without a log, or with an empty one, is a fresh run."""
    bus = Bus([], log=tmp_path / log, resume=True)
    assert bus.initial_epoch == 0 and not bus.stop_training
    assert bus.resume(tmp_path / log) is False  # the directory or file is there, empty
    bus.close()


def test_a_decision_lost_in_the_crash_is_recovered(tmp_path):
    """Crash between an event and its decisions: resume records and applies the decision."""
    sys.path.insert(0, str(WORKER.parent))
    try:
        from crash_worker import Plateau
    finally:
        sys.path.remove(str(WORKER.parent))

    path = tmp_path / "events.jsonl"
    bus = Bus([Plateau(cut_after=1, stop_after=1)], log=path, learning_rate=0.1)
    bus.train_begin()
    for epoch, value in enumerate([1.0, 2.0]):
        bus.epoch_begin(epoch)
        bus.epoch_end(epoch, {"val_loss": value})
    bus.close()
    # Cut the decisions off the end, as a crash right after the epoch_end write would.
    lines = path.read_bytes().splitlines(keepends=True)
    kept = [line for line in lines if b'"set_learning_rate"' not in line
            and b'"stop_training"' not in line]
    path.write_bytes(b"".join(kept))
    resumed = Bus([Plateau(cut_after=1, stop_after=1)], log=path, learning_rate=0.1, resume=True)
    assert resumed.stop_training and resumed.learning_rate == 0.05
    resumed.close()
    kinds = [rec.kind for rec in read_log(path)]
    assert kinds[-3:] == ["resumed", "set_learning_rate", "stop_training"]


class TestResumeDetails:
    def test_a_new_log_next_to_the_resumed_one_gets_the_run_so_far(self, tmp_path):
        """Resuming from a backup log into a fresh main log: the main log holds the whole run."""
        from eventbus import Plugin, hookimpl

        backup = tmp_path / "backup.jsonl"
        with Bus([], log=backup) as bus:
            bus.train_begin()
            bus.epoch_begin(0)
            bus.epoch_end(0, {"loss": 1.0})

        class Backup(Plugin):
            @hookimpl
            def resume_from(self, bus):
                return str(backup)

        main = tmp_path / "main.jsonl"
        resumed = Bus([Backup()], log=main)
        assert resumed.initial_epoch == 1
        resumed.close()
        kinds = [rec.kind for rec in read_log(main)]
        assert kinds == ["header", "train_begin", "epoch_begin", "epoch_end", "resumed"]
        assert [rec.seq for rec in read_log(main)][:4] == [rec.seq for rec in read_log(backup)]

    def test_outcomes_reported_during_resume_are_recorded(self, tmp_path):
        """bus.report() while the bus is restoring state lands in the log afterwards."""
        from eventbus import Plugin, hookimpl

        path = tmp_path / "events.jsonl"
        with Bus([], log=path) as bus:
            bus.train_begin()
            bus.epoch_end(0, {"loss": 1.0})

        class Reporter(Plugin):
            @hookimpl
            def resume_from(self, bus):
                bus.report(r.Warning(message="restored weights from backup"))

        resumed = Bus([Reporter()], log=path, resume=True)
        with pytest.warns(RunWarning, match="restored weights from backup"):
            resumed.epoch_begin(1)  # the first event after the resume records it
        resumed.close()
        messages = [rec.message for rec in read_log(path) if rec.kind == "warning"]
        assert messages == ["restored weights from backup"]

    def test_a_finished_run_does_not_publish_train_end_twice(self, tmp_path):
        """The loop runs unchanged after resuming a finished run: its ends are not repeated."""
        path = tmp_path / "events.jsonl"
        for attempt in range(2):
            with pytest.warns(RunWarning, match="had finished") if attempt else \
                    contextlib.nullcontext():
                bus = Bus([], log=path, resume=True)
            with bus:
                bus.train_begin({"epochs": 2})
                for epoch in range(bus.initial_epoch, 2):
                    bus.epoch_begin(epoch)
                    bus.epoch_end(epoch, {"loss": 1.0})
                bus.train_end()
        kinds = [rec.kind for rec in read_log(path)]
        assert kinds.count("train_begin") == 1 and kinds.count("train_end") == 1
        assert kinds[-2:] == ["resumed", "warning"]  # the warning: the run had finished


class TestLogsBehind:
    def test_a_log_behind_the_one_resumed_from_gets_what_it_lacks(self, tmp_path):
        """Killed between the JSON Lines log's flush and the Parquet log's: the Parquet log
        lacks the last epoch the JSON Lines log has. Resume writes those records into it, so
        both hold the whole run, each record once, in seq order."""
        import shutil

        from eventbus.convert import copy_log

        jsonl, parquet = tmp_path / "events.jsonl", tmp_path / "events.parquet"

        def fit(bus, epochs):
            bus.train_begin({"epochs": 6})
            for epoch in range(bus.initial_epoch, epochs):
                bus.epoch_begin(epoch)
                bus.batch_end(0, {"loss": 1.0 / (epoch + 1)})
                bus.epoch_end(epoch, {"val_loss": [1.0, 0.9, 0.95, 0.97, 0.96, 0.99][epoch]})
            return bus

        plateau = dict(learning_rate=0.1)
        from plugins import ReduceLROnPlateau

        bus = fit(Bus([ReduceLROnPlateau(patience=1, factor=0.5)], log=[jsonl, parquet],
                      **plateau), 4)
        bus.close()
        # What the kill left: the Parquet log as it was two epochs before the end.
        lines = jsonl.read_bytes().splitlines(keepends=True)
        ends = [i for i, line in enumerate(lines) if b'"kind":"epoch_end"' in line]
        prefix = tmp_path / "prefix.jsonl"
        prefix.write_bytes(b"".join(lines[:ends[1] + 1]))
        shutil.rmtree(parquet)
        copy_log(prefix, parquet)
        assert max(r.seq for r in read_log(parquet)) < max(r.seq for r in read_log(jsonl))

        bus = Bus([ReduceLROnPlateau(patience=1, factor=0.5)], log=[jsonl, parquet],
                  resume=True, **plateau)
        assert bus.initial_epoch == 4
        fit(bus, 6)
        bus.train_end()
        bus.close()
        assert decisions(parquet) == decisions(jsonl)
        seqs = pq.read_table(parquet).column("seq").to_pylist()
        assert seqs == sorted(set(seqs)) == [r.seq for r in read_log(jsonl)]


class TestValuesFromTheLog:
    @pytest.mark.parametrize("bad", ["NaN", "Infinity", -1.0, [0.1], "fast"])
    def test_a_learning_rate_a_bus_would_refuse_is_refused_from_a_log(self, tmp_path, bad):
        """Resume takes the header's learning rate only if Bus(learning_rate=...) would take
        it: otherwise the log is damaged (LogCorruptError naming the file and the field) and
        the model keeps its rate."""
        import orjson

        from eventbus import LogCorruptError, NumpyModel

        path = tmp_path / "run.jsonl"
        with Bus(log=path, learning_rate=0.1) as bus:
            bus.train_begin()
            bus.epoch_begin(0)
            bus.epoch_end(0, {"loss": 1.0})
        lines = path.read_bytes().splitlines(keepends=True)
        header = orjson.loads(lines[0])
        header["meta"]["learning_rate"] = bad
        path.write_bytes(orjson.dumps(header) + b"\n" + b"".join(lines[1:]))
        model = NumpyModel({"w": [0.0]}, learning_rate=0.5)
        with pytest.raises(LogCorruptError, match=r"meta\.learning_rate") as info:
            Bus(log=path, model=model, resume=True)
        assert info.value.path == str(path)
        assert model.learning_rate == 0.5

    def test_a_recorded_rate_change_that_is_not_a_rate_is_a_damaged_log(self, tmp_path):
        """A set_learning_rate whose value is NaN in the log: reading it names the line."""
        from eventbus import LogCorruptError, NumpyModel

        path = tmp_path / "run.jsonl"
        with Bus(log=path, learning_rate=0.1) as bus:
            bus.train_begin()
            bus.epoch_begin(0)
            bus.epoch_end(0, {"loss": 1.0})
            bus.decide(r.SetLearningRate(value=0.05, reason="by hand"))
        text = path.read_text().replace('"value":0.05', '"value":"NaN"')
        path.write_text(text)
        model = NumpyModel({"w": [0.0]}, learning_rate=0.5)
        with pytest.raises(LogCorruptError, match="set_learning_rate"):
            Bus(log=path, model=model, resume=True)
        assert model.learning_rate == 0.5


class TestTheRateOfAModelAttachedLater:
    """A model adapter that arrives after the resume (a bridge attaching it at fit,
    ``bus.model = ...``) trains at the rate the log ends with, not at its own initial one."""

    @staticmethod
    def plateau():
        from plugins import ReduceLROnPlateau

        return ReduceLROnPlateau(monitor="loss", min_delta=100.0, patience=1, factor=0.5)

    def crashed(self, path: Path) -> None:
        """Two epochs of four on a model at 0.08; the plateau cuts the rate to 0.04 after the
        second, then the run stops there."""
        from eventbus import NumpyModel

        with Bus([self.plateau()], log=path,
                 model=NumpyModel({"w": [0.0]}, learning_rate=0.08)) as bus:
            bus.train_begin({"epochs": 4})
            for epoch in range(2):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0})

    def test_the_resumed_rate_reaches_a_model_attached_after_the_resume(self, tmp_path):
        """The model attached after Bus(resume=True) gets 0.04, and the next cut is the one an
        uninterrupted run makes (0.04 -> 0.02): replay verifies the log."""
        from eventbus import NumpyModel, replay

        path = tmp_path / "events.jsonl"
        self.crashed(path)
        with Bus([self.plateau()], log=path, resume=True) as bus:
            assert bus.initial_epoch == 2 and bus.learning_rate == 0.04
            model = NumpyModel({"w": [0.0]}, learning_rate=0.08)  # its optimizer's initial rate
            bus.model = model
            assert model.learning_rate == 0.04 == bus.learning_rate
            bus.train_begin({"epochs": 4})
            bus.epoch_begin(2)
            bus.epoch_end(2, {"loss": 1.0})
            assert model.learning_rate == 0.02
        cuts = [rec.value for rec in effective_records(read_log(path))
                if rec.kind == "set_learning_rate"]
        assert cuts == [0.04, 0.02]
        assert replay(path, verify=True).ok

    def test_the_header_s_rate_reaches_it_when_no_decision_set_one(self, tmp_path):
        """With no set_learning_rate in the log, the header's initial rate is the run's."""
        from eventbus import NumpyModel

        path = tmp_path / "events.jsonl"
        with Bus(log=path, model=NumpyModel({"w": [0.0]}, learning_rate=0.08)) as bus:
            bus.train_begin()
            bus.epoch_begin(0)
            bus.epoch_end(0, {"loss": 1.0})
        with Bus(log=path, resume=True) as bus:
            model = NumpyModel({"w": [0.0]}, learning_rate=0.5)
            bus.model = model
            assert model.learning_rate == 0.08

    def test_a_rate_the_loop_moved_after_the_last_cut_is_the_one_resumed(self, tmp_path):
        """The loop scales its own rate each epoch and the plateau cuts it once: resumed after
        epoch 3, the run is at the rate it had (not the cut's), an adapter attached then that
        holds it (its optimizer put back from a checkpoint) is left at it, and the next cut
        is the one an uninterrupted run makes."""
        from eventbus import replay
        from plugins import ReduceLROnPlateau

        class Restored:
            """An adapter whose rate came back with its optimizer's state; counts the sets."""

            def __init__(self, rate: float):
                self.rate, self.sets = rate, []

            @property
            def learning_rate(self) -> float:
                return self.rate

            @learning_rate.setter
            def learning_rate(self, value: float) -> None:
                self.sets.append(value)
                self.rate = value

        def plateau():
            return ReduceLROnPlateau(patience=0, factor=0.5)

        path = tmp_path / "events.jsonl"
        bus = Bus([plateau()], log=path, learning_rate=0.1)
        bus.train_begin({"epochs": 6})
        for epoch, value in enumerate([1.0, 1.1, 0.5, 0.4]):  # the cut comes at epoch 1
            if epoch:
                bus.learning_rate = bus.learning_rate * 0.9  # the loop's own scheduler
            bus.epoch_begin(epoch)
            bus.epoch_end(epoch, {"val_loss": value})
        live = bus.learning_rate
        assert live == pytest.approx(0.1 * 0.9 * 0.5 * 0.9 * 0.9)
        bus.close()  # as a crash leaves it: no train_end

        with Bus([plateau()], log=path, resume=True) as bus:
            assert bus.initial_epoch == 4 and bus.learning_rate == live
            model = Restored(live)
            bus.model = model
            assert model.sets == [] and model.learning_rate == live
            bus.train_begin({"epochs": 6})
            bus.learning_rate = bus.learning_rate * 0.9
            bus.epoch_begin(4)
            bus.epoch_end(4, {"val_loss": 0.6})  # no better than 0.4: cut
            assert model.learning_rate == pytest.approx(live * 0.9 * 0.5)
        assert replay(path, verify=True).ok

    def test_a_model_that_refuses_the_rate_is_recorded_not_raised(self, tmp_path):
        """A model whose rate cannot be set (a schedule) and is another: a sink_failed from
        "model" in the log; the run goes on."""
        path = tmp_path / "events.jsonl"
        self.crashed(path)
        bus = Bus([self.plateau()], log=path, resume=True)
        bus.model = ScheduleModel({"w": [0.0]})
        assert [(f.sink, f.event, f.error) for f in bus.failures] == \
            [("model", "set_learning_rate", "TypeError")]
        with pytest.warns(UserWarning, match="1 sink failure"):
            bus.close()
        assert [rec.kind for rec in read_log(path)][-2:] == ["resumed", "sink_failed"]


class TestCountsAtTheLimit:
    """A log whose seq or last epoch leaves the resumed run nothing to count with is refused
    before anything is written: read as they were, the run ended at once, or could not number
    its next record and trained on with nothing recorded."""

    @staticmethod
    def edited(tmp_path: Path, *, seq_shift: int = 0, epoch: int | None = None) -> Path:
        import orjson

        path = tmp_path / "events.jsonl"
        with Bus(log=path) as bus:
            bus.train_begin({"epochs": 3})
            bus.epoch_begin(0)
            bus.epoch_end(0, {"loss": 1.0})
        records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        for record in records[1:]:
            record["seq"] += seq_shift
            if epoch is not None and record["kind"] in ("epoch_begin", "epoch_end"):
                record["epoch"] = epoch
        path.write_bytes(b"".join(orjson.dumps(rec) + b"\n" for rec in records))
        return path

    @pytest.mark.parametrize(("edit", "field", "words"), [
        ({"seq_shift": 2**64 - 10}, "seq", "its seq reaches 18446744073709551609"),
        ({"seq_shift": 2**63 - 3}, "seq", "past which too few records can be numbered"),
        ({"seq_shift": 2**63 - 2**39}, "seq", "past which too few records can be numbered"),
        ({"epoch": 2**63 - 1}, "epoch", "its last finished epoch is 9223372036854775807"),
        ({"epoch": -4}, "epoch", "its last finished epoch is -4"),
    ])
    def test_refused_naming_the_log_and_the_field(self, tmp_path, edit, field, words):
        from eventbus.errors import LogCorruptError

        path = self.edited(tmp_path, **edit)
        before = path.read_bytes()
        with pytest.raises(LogCorruptError, match=words) as info:
            Bus(log=path, resume=True)
        assert (info.value.path, info.value.field) == (str(path), field)
        assert path.read_bytes() == before

    def test_a_continued_second_log_cannot_push_the_seq_past_the_limit(self, tmp_path):
        """A mirror log the run also appends to, its last seq edited near the limit, had the
        run number the main log's records past it: that log could never be resumed again.
        Refused before either log is written to."""
        import orjson

        from eventbus.errors import LogCorruptError

        main, mirror = tmp_path / "main.jsonl", tmp_path / "mirror.jsonl"
        bus = Bus(log=[main, mirror])
        bus.train_begin({"epochs": 3})
        bus.epoch_begin(0)
        bus.epoch_end(0, {"loss": 1.0})
        bus.close()
        lines = mirror.read_bytes().splitlines()
        last = orjson.loads(lines[-1])
        last["seq"] = 2**63 - 3
        mirror.write_bytes(b"\n".join([*lines[:-1], orjson.dumps(last)]) + b"\n")
        before = main.read_bytes(), mirror.read_bytes()
        with pytest.raises(LogCorruptError, match="continued beside") as info:
            Bus(log=[main, mirror], resume=True)
        assert (info.value.path, info.value.field) == (str(mirror), "seq")
        assert (main.read_bytes(), mirror.read_bytes()) == before

    def test_a_seq_past_the_limit_is_refused_by_the_reader(self, tmp_path):
        from eventbus import read_log
        from eventbus.errors import LogCorruptError

        path = self.edited(tmp_path, seq_shift=2**63)
        with pytest.raises(LogCorruptError, match="past the largest a record may hold") as info:
            list(read_log(path))
        assert info.value.field == "seq"

    @pytest.mark.parametrize("step", [2**64 - 1, 2**63 - 1, -7])
    def test_a_step_the_run_cannot_count_on_from_is_refused(self, tmp_path, step):
        """Batch records are read on the quick path, their types checked, not their values:
        the step the run would go on from is checked before the log is written to."""
        import orjson

        from eventbus.errors import LogCorruptError

        path = tmp_path / "events.jsonl"
        with Bus(log=path) as bus:
            bus.train_begin({"epochs": 3})
            bus.epoch_begin(0)
            bus.batch_end(0, {"loss": 1.0})
            bus.epoch_end(0, {"loss": 1.0})
        records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        next(rec for rec in records if rec["kind"] == "batch_end")["step"] = step
        path.write_bytes(b"".join(orjson.dumps(rec) + b"\n" for rec in records))
        before = path.read_bytes()
        with pytest.raises(LogCorruptError, match="its training steps reach") as info:
            Bus(log=path, resume=True)
        assert (info.value.path, info.value.field) == (str(path), "step")
        assert path.read_bytes() == before

    def test_counts_below_the_limit_resume(self, tmp_path):
        path = self.edited(tmp_path, seq_shift=2**62, epoch=2**62)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RunWarning)
            with Bus(log=path, resume=True) as bus:
                assert bus.initial_epoch == 2**62 + 1


class TestTheAbandonedTail:
    """What follows the point a run goes on from is read too: a resume appends to a log only
    if every reader reads it whole (the damaged line need not name any kind)."""

    @staticmethod
    def crashed_run(path: Path) -> None:
        bus = Bus(log=path)
        bus.train_begin({"epochs": 3})
        for epoch in range(2):
            bus.epoch_begin(epoch)
            for batch in range(3):
                bus.batch_begin(batch)
                bus.batch_end(batch, {"loss": 1.0})
            if epoch == 0:
                bus.epoch_end(epoch, {"loss": 1.0})
        bus.close()
        # as a kill in epoch 1 leaves it: nothing after its last batch
        lines = path.read_bytes().splitlines(keepends=True)
        last = max(i for i, line in enumerate(lines) if b'"batch_end"' in line)
        path.write_bytes(b"".join(lines[:last + 1]))

    @pytest.mark.parametrize("damage", [
        b"{,,}", b'{"v":1,"seq":', b"\xff\xfe", b"[1, 2]", b'{"v":1,"seq":100,"kind":"nope"}',
        b'{"v":1,"run_id":"x","seq":100,"kind":"batch_end","time":1.0,"logs":{},"batch":"0",'
        b'"step":0}',
    ])
    def test_a_damaged_line_after_the_point_is_refused(self, tmp_path, damage):
        from eventbus.errors import LogCorruptError

        path = tmp_path / "events.jsonl"
        self.crashed_run(path)
        lines = path.read_bytes().splitlines(keepends=True)
        # the line after epoch 1's second batch_begin, with whole records after it
        at = [i for i, line in enumerate(lines) if b'"batch_begin"' in line][4] + 1
        path.write_bytes(b"".join(lines[:at]) + damage + b"\n" + b"".join(lines[at:]))
        before = path.read_bytes()
        with pytest.raises(LogCorruptError) as info:
            list(read_log(path))
        with pytest.raises(LogCorruptError) as resumed:
            Bus(log=path, resume=True)
        assert (resumed.value.path, resumed.value.line) == (str(path), info.value.line)
        assert path.read_bytes() == before

    def test_a_torn_last_line_still_resumes(self, tmp_path):
        path = tmp_path / "events.jsonl"
        self.crashed_run(path)
        with path.open("ab") as file:
            file.write(b'{"v":1,"run_id":"')
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Bus(log=path, resume=True) as bus:
                assert bus.initial_epoch == 1
        assert [rec.kind for rec in read_log(path)][-1] == "resumed"


_KILLED_IN_EPOCH_0 = """
import os, signal, sys
from eventbus import Bus
from plugins import CSVLogger, TensorBoard
out = sys.argv[1]
board = TensorBoard(out + "/tb", update_freq="batch")
bus = Bus([CSVLogger(out + "/log.csv"), board],
          log=[out + "/events.jsonl", out + "/events.parquet"], learning_rate=0.1)
bus.train_begin({"epochs": 2})
bus.epoch_begin(0)
for batch in range(3):
    bus.batch_begin(batch)
    bus.batch_end(batch, {"loss": 9.0})
board.flush()  # the batch scalars reach the event files, not the log: then the kill
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("log", ["events.jsonl", "events.parquet"])
def test_killed_in_the_first_epoch_the_run_resumes_and_its_sinks_are_cut_back(tmp_path, log):
    """A kill before the first epoch ended used to leave an empty log: the next start was a
    new run, and TensorBoard showed the first steps twice (the killed run's and the new
    one's). The run's start is kept at once, so the restart resumes that run, and the
    resume cuts TensorBoard back to where the run goes on."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from plugins import CSVLogger, TensorBoard

    killed = subprocess.run([sys.executable, "-c", _KILLED_IN_EPOCH_0, str(tmp_path)],
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    started = [rec.kind for rec in read_log(tmp_path / log)]
    assert started == ["header", "train_begin"]

    bus = Bus([CSVLogger(tmp_path / "log.csv"), TensorBoard(tmp_path / "tb", update_freq="batch")],
              log=[tmp_path / "events.jsonl", tmp_path / "events.parquet"], learning_rate=0.1,
              resume=True)
    assert bus.run.resumed and bus.initial_epoch == 0
    bus.train_begin({"epochs": 2})
    for epoch in range(2):
        bus.epoch_begin(epoch)
        for batch in range(3):
            bus.batch_begin(batch)
            bus.batch_end(batch, {"loss": 1.0 + epoch})
        bus.epoch_end(epoch, {"loss": 1.0 + epoch})
    bus.train_end()
    bus.close()

    records = list(read_log(tmp_path / log))
    assert [rec.kind for rec in records].count("header") == 1
    assert "resumed" in [rec.kind for rec in records]
    accumulator = EventAccumulator(str(tmp_path / "tb" / "train"), size_guidance={"scalars": 0})
    accumulator.Reload()
    steps = [(e.step, e.value) for e in accumulator.Scalars("batch_loss")]
    assert steps == [(step + 1, 1.0 + step // 3) for step in range(6)]  # Keras: batches done
    assert (tmp_path / "log.csv").read_text().splitlines() == ["epoch,loss", "0,1.0", "1,2.0"]


class TestPluginsChangedAtTheResume:
    """A resume replays the log into the plugins given now; decisions the log lacks are
    carried out only where a crash can have lost them: the last finished epoch's, of plugins
    the run had. A plugin added, or a parameter changed, used to have its decisions about past
    epochs carried out at the resume, silently."""

    @staticmethod
    def first_attempt(path, values) -> None:
        from eventbus import NumpyModel
        from plugins import EarlyStopping

        model = NumpyModel({"w": np.zeros(2)})
        bus = Bus([EarlyStopping(monitor="loss", patience=10)], log=path, model=model)
        bus.train_begin({"epochs": 10})
        for epoch, value in enumerate(values):
            bus.epoch_begin(epoch)
            model.weights["w"][:] = epoch
            bus.epoch_end(epoch, {"loss": value})
        bus.close()  # no train_end: as a kill after the last epoch's flush leaves the log

    def test_a_plugin_added_saves_nothing_for_past_epochs(self, tmp_path):
        from eventbus import NumpyModel
        from plugins import EarlyStopping, ModelCheckpoint

        path = tmp_path / "events.jsonl"
        self.first_attempt(path, [1.0, 0.9, 0.8])
        template = str(tmp_path / "ck" / "ep{epoch:02d}.h5")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RunWarning)  # also: no weights to restore
            bus = Bus([EarlyStopping(monitor="loss", patience=10), ModelCheckpoint(template)],
                      log=path, model=NumpyModel({"w": np.full(2, 7.0)}), resume=True)
        assert bus.initial_epoch == 3
        bus.close()
        assert not (tmp_path / "ck").exists()
        records = list(read_log(path))
        assert not [r for r in records if r.kind in ("save_checkpoint", "checkpoint_saved")]
        (warning,) = [r for r in records if r.kind == "warning"
                      and "did not run before the resume" in r.message]
        assert "ModelCheckpoint" in warning.message

    def test_a_lowered_patience_stops_nothing_in_the_past_and_says_so(self, tmp_path):
        from eventbus import NumpyModel
        from plugins import EarlyStopping

        path = tmp_path / "events.jsonl"
        self.first_attempt(path, [1.0, 1.1, 1.2, 1.3, 1.4])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RunWarning)  # also: no weights to restore
            bus = Bus([EarlyStopping(monitor="loss", patience=2)], log=path,
                      model=NumpyModel({"w": np.zeros(2)}), resume=True)
        assert bus.initial_epoch == 5 and not bus.stop_training
        bus.close()
        records = list(read_log(path))
        assert not [r for r in records if r.kind == "stop_training"]
        assert [r for r in records if r.kind == "warning" and "differ" in r.message]


@pytest.mark.parametrize(("written", "given"), [("events.jsonl", "events.parquet"),
                                                 ("events.parquet", "events.jsonl")])
def test_a_resume_given_the_other_format_is_refused_naming_the_run_beside_it(tmp_path, written,
                                                                             given):
    """resume=True with no log at the path given but the crashed run's log beside it (the
    format switched, a path mistyped) started a new run over its checkpoints and CSV, in
    silence. Refused, naming both, before anything is written; resume=False starts anew."""
    from eventbus.errors import ConfigError

    bus = Bus([], log=tmp_path / written)
    bus.train_begin({"epochs": 3})
    bus.epoch_begin(0)
    bus.epoch_end(0, {"loss": 1.0})
    bus.close()
    with pytest.raises(ConfigError, match=f"{given} holds no run, and .*{written} beside it "
                                          "holds one") as info:
        Bus([], log=tmp_path / given, resume=True)
    assert info.value.field == "log" and not (tmp_path / given).exists()
    Bus([], log=tmp_path / given).close()


class TestResumeNoLaterThan:
    """``Bus(resume=True, resume_at_most=E)``: a framework killed while it wrote the checkpoint
    of an epoch the log had ended (Lightning orders its ModelCheckpoint after the bridge) can
    only go on from the epoch before; a distributed run's ranks go on from the last epoch all of
    them finished (a job killed between the ranks' flushes left one log an epoch ahead, and
    every resume was refused for good)."""

    @pytest.mark.parametrize("bad", [-2, 1.0, "1", True])
    def test_a_bad_value_is_named(self, tmp_path, bad):
        from eventbus.errors import ConfigError

        with pytest.raises(ConfigError, match="resume_at_most must be an epoch") as info:
            Bus([], log=tmp_path / "e.jsonl", resume=True, resume_at_most=bad)
        assert info.value.field == "resume_at_most"

    @staticmethod
    def crashed(path, epochs: int) -> None:
        bus = Bus([], log=path)
        bus.train_begin({"epochs": 5})
        for epoch in range(epochs):
            bus.epoch_begin(epoch)
            bus.batch_end(0, {"loss": 1.0})
            bus.epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
        bus.close()

    @pytest.mark.parametrize(("at_most", "initial"), [(1, 2), (0, 1), (-1, 0), (2, 3), (7, 3)])
    def test_the_later_epochs_are_run_again_as_a_partial_one_is(self, tmp_path, at_most,
                                                               initial):
        from eventbus.effective import read_effective

        path = tmp_path / "events.jsonl"
        self.crashed(path, 3)
        bus = Bus([], log=path, resume=True, resume_at_most=at_most)
        assert bus.initial_epoch == initial
        for epoch in range(bus.initial_epoch, 4):
            bus.epoch_begin(epoch)
            bus.epoch_end(epoch, {"loss": 0.1})
        bus.train_end()
        bus.close()
        ends = [r.epoch for r in read_effective(path) if r.kind == "epoch_end"]
        assert ends == [0, 1, 2, 3]  # each once: what the resume went back over is abandoned


def test_the_ranks_agree_on_the_last_epoch_all_finished():
    from eventbus.integrations.distributed import _combine_where

    def where(*finished):
        return [{"op": "where", "run_id": "r", "finished": f} for f in finished]

    assert _combine_where(where(2, 1))["finished"] == 1
    assert _combine_where(where(-1, 3))["finished"] == -1
    assert _combine_where(where(None, 3))["finished"] == 3  # no log: the hello check says so
    assert _combine_where(where(None, None))["finished"] is None


def test_a_damaged_batch_record_is_refused_before_a_log_behind_gets_it(tmp_path):
    """Batch records are read on their types alone; a log beside the resumed one that is
    behind (its segments lost) was handed them as read, and one metric that is an object failed
    it whole, naming nothing. They are checked first: the resume is refused, naming the record."""
    import orjson

    from eventbus.errors import LogCorruptError

    jsonl, parquet = tmp_path / "events.jsonl", tmp_path / "events.parquet"
    with Bus([], log=[jsonl]) as bus:
        bus.train_begin({"epochs": 3})
        for epoch in range(2):
            bus.epoch_begin(epoch)
            bus.batch_end(0, {"loss": 1.0})
            bus.epoch_end(epoch, {"loss": 1.0})
    lines = jsonl.read_bytes().splitlines()
    at = next(i for i, line in enumerate(lines) if b'"batch_end"' in line)
    record = orjson.loads(lines[at])
    record["logs"] = {"loss": {}}
    lines[at] = orjson.dumps(record)
    jsonl.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(LogCorruptError, match=rf"seq {record['seq']} is damaged .*logs"):
        Bus([], log=[jsonl, parquet], resume=True)


def _writer(kind: str, path: Path, **kwargs):
    from eventbus.jsonl import JsonlWriter
    from eventbus.parquet import ParquetWriter

    return (JsonlWriter if kind == "jsonl" else ParquetWriter)(path, **kwargs)


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_a_log_given_as_a_writer_resumes_as_one_given_by_its_path(tmp_path, kind):
    """``log=[JsonlWriter(path)]`` is the same log as ``log=path`` (docs/sinks/jsonl_parquet.md),
    so ``resume=True`` goes on from it. Before, the writer emptied the file as it was made:
    the crashed run's log was gone, and the resume started a new run over it, silently."""
    from plugins import EarlyStopping

    path = tmp_path / f"events.{kind}"
    bus = Bus([EarlyStopping(patience=3)], log=[_writer(kind, path)])
    bus.train_begin({"epochs": 5})
    for epoch in range(3):
        bus.epoch_begin(epoch)
        bus.epoch_end(epoch, {"val_loss": 1.0 - epoch / 10})
    bus.close()  # (no train_end: as a crash leaves it)
    before = list(read_log(path))
    with Bus([EarlyStopping(patience=3)], log=[_writer(kind, path)], resume=True) as bus:
        assert bus.initial_epoch == 3
        bus.train_begin({"epochs": 5})
        for epoch in range(3, 5):
            bus.epoch_begin(epoch)
            bus.epoch_end(epoch, {"val_loss": 0.5})
        bus.train_end()
    after = list(read_log(path))
    assert after[:len(before)] == before
    assert [rec.epoch for rec in after if rec.kind == "epoch_end"] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_a_writer_left_to_decide_starts_afresh_without_a_resume(tmp_path, kind):
    """Not resumed, or written to with no bus at all, a writer whose ``append`` is left out
    starts its log afresh, as before; ``append=True`` continues it without a bus."""
    path = tmp_path / f"events.{kind}"
    with Bus([], log=[_writer(kind, path)]) as bus:
        bus.train_begin({"epochs": 1})
    first = list(read_log(path))
    with Bus([], log=[_writer(kind, path)]) as bus:
        bus.train_begin({"epochs": 1})
    second = list(read_log(path))
    assert len(second) == len(first) and second[0].run_id != first[0].run_id
    with _writer(kind, path, append=True) as writer:
        pass
    assert list(read_log(path)) == second
    with _writer(kind, path) as writer:  # closed undecided, nothing written: left as it was
        pass
    assert list(read_log(path)) == second
    with _writer(kind, path) as writer:
        writer.write(first[0].model_dump(mode="json"))
    assert list(read_log(path)) == first[:1]


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_a_writer_that_appends_on_a_bus_not_resuming_is_refused(tmp_path, kind):
    """``append=True`` on a log holding a run, given to a bus that is not resuming: the new
    run numbered its records from 0 again, after the old run's. Every reader then refused the
    JSON Lines log as damaged (the first run lost with it), and the Parquet log's second run
    took the first's segment name and vanished, without a word. Now it is a ConfigError
    saying what to do, and the log is left as it was."""
    from eventbus.errors import ConfigError

    path = tmp_path / f"events.{kind}"
    with Bus([], log=path) as bus:
        bus.train_begin({"epochs": 1})
        bus.train_end()
    before = list(read_log(path))
    writer = _writer(kind, path, append=True)
    with pytest.raises(ConfigError, match=r"not resuming.*resume=True.*append=False") as info:
        Bus([], log=[writer])
    assert info.value.field == "log"
    writer.close()
    assert list(read_log(path)) == before
    with pytest.warns(Warning, match="had finished"), \
            Bus([], log=[_writer(kind, path, append=True)], resume=True) as bus:  # a further fit
        bus.train_begin({"epochs": 2})
        bus.train_end()
    after = list(read_log(path))
    assert after[:len(before)] == before
    assert [rec.seq for rec in after] == list(range(len(after)))


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_a_bus_that_fails_before_it_takes_the_writer_leaves_the_log(tmp_path, kind):
    """``Bus(log=[writer], resume=True)`` refused for another argument never takes the writer:
    closing the writer then leaves the crashed run's log whole (before, the undecided writer
    started it afresh at close, emptying it)."""
    from eventbus.errors import ConfigError

    path = tmp_path / f"events.{kind}"
    bus = Bus([], log=str(path))
    bus.train_begin({"epochs": 3})
    bus.epoch_begin(0)
    bus.epoch_end(0, {"loss": 1.0})
    bus.close()
    before = list(read_log(path))
    with _writer(kind, path) as writer, pytest.raises(ConfigError, match="run_id"):
        Bus([], log=[writer], resume=True, run_id="")
    assert list(read_log(path)) == before
