"""eventbus.recorder: the envelope, per-kind fan-out to the sinks, opening, and the header."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, ConfigError, LogError, NumpyModel, Plugin, hookimpl
from eventbus import records as r
from eventbus.recorder import Recorder, make_header
from eventbus.records import SCHEMA_VERSION
from eventbus.sink import Sink
from eventbus.testing import RecordingWriter

ALL_KINDS = tuple(r.KINDS)


class Keeper(Sink):
    """A sink that keeps what it is given and counts its calls."""

    def __init__(self, name: str = "keeper", takes=None, *, returns=None, fails_on=(),
                 line_buffer: bool = False, buffer_bytes: int = 1 << 20):
        self.name = name  # type: ignore[misc]
        self.takes = takes
        self.returns = returns
        self.fails_on = set(fails_on)
        self.records: list[dict] = []
        self.calls: list[str] = []
        self.opened_with: list = []
        if line_buffer:
            self.line_buffer = bytearray()
            self.buffer_bytes = buffer_bytes

    def open(self, run):
        self.opened_with.append(run)

    def write(self, record):
        if record["kind"] in self.fails_on:
            raise OSError(f"{self.name} cannot write")
        self.records.append(record)
        return self.returns

    def flush(self):
        self.calls.append("flush")
        if "flush" in self.fails_on:
            raise OSError("flush failed")
        if self.line_buffer is not None:
            self.line_buffer.clear()

    def close(self):
        self.calls.append("close")
        if "close" in self.fails_on:
            raise OSError("close failed")

    def kinds(self) -> list[str]:
        return [rec["kind"] for rec in self.records]


def record_of(kind: str, seq: int = 1) -> dict:
    return {"v": SCHEMA_VERSION, "run_id": "run", "seq": seq, "kind": kind, "time": 1.0}


class TestStamp:
    def test_the_envelope(self):
        """Each stamp gives the next seq, the run id, the schema version and a time, on a copy."""
        recorder = Recorder("run-1")
        event = r.EpochEnd(epoch=2, logs={"loss": 1.0})
        first, second = recorder.stamp(event), recorder.stamp(event)
        assert (first.seq, second.seq, recorder.seq) == (1, 2, 2)
        assert (first.run_id, first.v) == ("run-1", SCHEMA_VERSION)
        assert first.time > 0 and first.epoch == 2 and first.logs == {"loss": 1.0}
        assert event.seq == -1 and event.run_id == ""

    @given(source=st.sampled_from(["", "Mine"]), cause_seq=st.none() | st.integers(0, 99),
           epoch=st.none() | st.integers(0, 99), cause=st.booleans(),
           cause_epoch=st.none() | st.integers(0, 99), current=st.none() | st.integers(0, 99),
           outcome=st.booleans())
    def test_fills_only_what_is_unset(self, source, cause_seq, epoch, cause, cause_epoch,
                                      current, outcome):
        """source, cause_seq and epoch set on a decision or outcome are kept; unset ones come
        from the stamp's source, the cause's seq, and the cause's epoch else the current one."""
        recorder = Recorder("run")
        cls = r.Warning if outcome else r.StopTraining
        text = {"message": "m"} if outcome else {"reason": "m"}
        item = cls(source=source, cause_seq=cause_seq, epoch=epoch, **text)
        # What the bus passes as a cause: a record, or a written record's seq and epoch.
        the_cause = SimpleNamespace(seq=40, epoch=cause_epoch) if cause else None
        out = recorder.stamp(item, source="Stamper", cause=the_cause, epoch=current)
        assert out.source == (source or "Stamper")
        assert out.cause_seq == (cause_seq if cause_seq is not None else
                                 (40 if cause else None))
        if epoch is not None:
            assert out.epoch == epoch
        elif cause and cause_epoch is not None:
            assert out.epoch == cause_epoch
        else:
            assert out.epoch == current

    def test_an_empty_source_stays_empty_without_one(self):
        """With no source given, a decision's empty source stays empty."""
        out = Recorder("run").stamp(r.StopTraining(reason="x"))
        assert out.source == "" and out.cause_seq is None and out.epoch is None


class TestKinds:
    def test_each_sink_gets_the_kinds_it_takes(self):
        """takes={"epoch_end"} gets only those, takes=None every record, takes=frozenset()
        none, in the order written."""
        recorder = Recorder("run")
        some, every, none = Keeper("some", {"epoch_end"}), Keeper("every"), \
            Keeper("none", frozenset())
        for sink in (some, every, none):
            recorder.attach(sink, sink.name)
        for seq, kind in enumerate(ALL_KINDS, 1):
            assert recorder.write(record_of(kind, seq)) is None
        assert some.kinds() == ["epoch_end"]
        assert every.kinds() == list(ALL_KINDS)
        assert none.records == []
        assert recorder.wants("epoch_end") and recorder.wants("batch_begin")
        recorder.detach(every)
        assert not recorder.wants("batch_begin") and recorder.wants("epoch_end")

    @given(st.lists(st.none() | st.frozensets(st.sampled_from(ALL_KINDS)), max_size=5))
    def test_tables_follow_takes(self, takes):
        """For any sinks, each kind's table holds exactly the sinks taking it, in order."""
        recorder = Recorder("run")
        sinks = [Keeper(f"s{i}", t) for i, t in enumerate(takes)]
        for sink in sinks:
            recorder.attach(sink, sink.name)
        for kind in ALL_KINDS:
            owners = [slot.sink for slot in recorder.tables.owners[kind]]
            assert owners == [s for s in sinks if s.takes is None or kind in s.takes]
            assert recorder.wants(kind) == bool(owners)

    def test_a_kind_outside_the_schema_goes_to_every_sink(self):
        """A record of an unknown kind is given to every sink, whatever it takes."""
        recorder = Recorder("run")
        some, none = Keeper("some", {"epoch_end"}), Keeper("none", frozenset())
        recorder.attach(some, "some")
        recorder.attach(none, "none")
        recorder.write(record_of("from_the_future"))
        assert some.kinds() == none.kinds() == ["from_the_future"]

    def test_on_change_when_the_sinks_change(self):
        """on_change is called when a sink is attached or detached."""
        changes: list = []
        recorder = Recorder("run")
        recorder.on_change = lambda: changes.append(len(recorder.slots))
        sink = Keeper()
        recorder.attach(sink, "k")
        recorder.detach(sink)
        assert changes == [1, 0]
        assert recorder.detach(sink) is None and changes == [1, 0]


class TestFanOut:
    def test_goes_on_past_a_failing_sink_then_drops_it(self):
        """A sink that fails does not keep the others from the record; it is detached and
        closed after them, and returned with its error."""
        recorder = Recorder("run")
        before, failing, after = Keeper("before"), Keeper("failing", fails_on={"epoch_end"}), \
            Keeper("after")
        for sink in (before, failing, after):
            recorder.attach(sink, sink.name)
        (trouble,) = recorder.write(record_of("epoch_end"))
        assert trouble.slot.sink is failing and isinstance(trouble.error, OSError)
        assert trouble.out is None
        assert before.kinds() == after.kinds() == ["epoch_end"]
        assert failing.calls == ["close"]
        assert [s.sink for s in recorder.slots] == [before, after]
        recorder.write(record_of("epoch_end", 2))
        assert failing.records == [] and len(after.records) == 2

    def test_a_failing_sink_whose_close_fails_is_still_dropped(self):
        """A failing sink that also fails to close is dropped, the close error swallowed."""
        recorder = Recorder("run")
        sink = Keeper("bad", fails_on={"epoch_end", "close"})
        recorder.attach(sink, "bad")
        (trouble,) = recorder.write(record_of("epoch_end"))
        assert isinstance(trouble.error, OSError) and recorder.slots == []

    def test_what_a_sink_returns_is_returned(self):
        """A sink's return value comes back with its slot; the sink stays."""
        recorder = Recorder("run")
        outcome = r.CheckpointSaved(path="x.h5", size=1, sha256="0" * 64)
        quiet, saying = Keeper("quiet"), Keeper("saying", returns=outcome)
        recorder.attach(quiet, "quiet")
        recorder.attach(saying, "saying")
        (trouble,) = recorder.write(record_of("save_checkpoint"))
        assert trouble.slot.sink is saying and trouble.out is outcome
        assert trouble.error is None and len(recorder.slots) == 2

    def test_flush_drops_a_sink_that_fails(self):
        """flush() and sync() call every sink; one that raises is detached, closed and
        returned."""
        recorder = Recorder("run")
        good, bad = Keeper("good"), Keeper("bad", fails_on={"flush"})
        recorder.attach(bad, "bad")
        recorder.attach(good, "good")
        (trouble,) = recorder.flush()
        assert trouble.slot.sink is bad and bad.calls == ["flush", "close"]
        assert good.calls == ["flush"]
        assert recorder.sync() is None
        assert good.calls == ["flush", "flush"]  # sync falls back to flush

    def test_a_sink_of_three_methods_is_enough(self):
        """A sink with only write/flush/close (no open, no sync) is opened, and synced by its
        flush."""
        class ThreeMethods:
            def __init__(self):
                self.records, self.flushes = [], 0

            def write(self, record):
                self.records.append(record)

            def flush(self):
                self.flushes += 1

            def close(self):
                pass

        recorder = Recorder("run")
        sink = ThreeMethods()
        recorder.attach(sink, "three")
        recorder.open(Bus().run)
        recorder.write(record_of("train_begin"))
        assert recorder.sync() is None
        assert (len(sink.records), sink.flushes) == (1, 1)


class TestFastPath:
    def test_line_buffers_and_finite_writes(self):
        """Sinks with a line buffer taking batch_end are the ``lines``; the other sinks taking
        batch_end are the ``finite_writes``; a sink not taking batch_end is in neither."""
        recorder = Recorder("run")
        lines = Keeper("lines", line_buffer=True)
        lines_elsewhere = Keeper("lines-no-batch", {"epoch_end"}, line_buffer=True)
        plain = Keeper("plain", {"batch_end"})
        other = Keeper("other", {"epoch_end"})
        for sink in (lines, lines_elsewhere, plain, other):
            recorder.attach(sink, sink.name)
        tables = recorder.tables
        assert [s.sink for s in tables.line_slots] == [lines]
        assert len(tables.lines) == 1
        tables.lines[0](b"line\n")
        assert lines.line_buffer == b"line\n"
        assert [s.sink for s in tables.finite_owners] == [plain]
        assert tables.finite_writes == (tables.finite_owners[0].write,)

    def test_a_line_buffer_that_is_not_a_bytearray_is_no_fast_path(self):
        """Only a bytearray is a line buffer; anything else is written record by record."""
        recorder = Recorder("run")
        sink = Keeper("odd")
        sink.line_buffer = b"not mutable"  # type: ignore[assignment]
        recorder.attach(sink, "odd")
        assert recorder.tables.lines == () and recorder.slots[0].buffer is None

    def test_flush_full_flushes_only_full_buffers(self):
        """flush_full flushes the line buffers at or over their size, and no other sink."""
        recorder = Recorder("run")
        full = Keeper("full", line_buffer=True, buffer_bytes=8)
        short = Keeper("short", line_buffer=True, buffer_bytes=8)
        plain = Keeper("plain")
        for sink in (full, short, plain):
            recorder.attach(sink, sink.name)
        assert recorder.flush_full() is None
        full.line_buffer += b"12345678"
        short.line_buffer += b"1234567"
        assert recorder.flush_full() is None
        assert (full.calls, short.calls, plain.calls) == (["flush"], [], [])
        assert full.line_buffer == b""

    def test_a_real_jsonl_log_takes_the_fast_path(self, tmp_path):
        """A JSON Lines log is a line-buffer sink whose limit is its buffer size."""
        recorder = Recorder("run")
        slot = recorder.attach_target(tmp_path / "run.jsonl")
        assert slot.buffer is slot.sink.line_buffer and slot.limit == 1 << 20
        assert recorder.tables.line_slots == (slot,)
        slot.sink.close()


class TestClosingOrder:
    @given(st.lists(st.none() | st.frozensets(st.sampled_from(ALL_KINDS)), max_size=6))
    def test_logs_close_last(self, takes):
        """Sinks taking some kinds close first, in order; those taking every record last."""
        recorder = Recorder("run")
        sinks = [Keeper(f"s{i}", t) for i, t in enumerate(takes)]
        for sink in sinks:
            recorder.attach(sink, sink.name)
        order = [slot.sink for slot in recorder.closing_order()]
        assert order == [s for s in sinks if s.takes is not None] + \
            [s for s in sinks if s.takes is None]


class TestSilent:
    def test_keeps_no_sink(self):
        """A silent recorder returns a slot for a sink given but keeps, opens and writes to
        none."""
        recorder = Recorder("run", silent=True)
        sink = Keeper()
        slot = recorder.attach(sink, "k")
        assert slot.sink is sink and recorder.slots == []
        recorder.open(Bus().run)
        assert recorder.write(record_of("epoch_end")) is None
        assert sink.records == [] and sink.opened_with == []
        assert not recorder.wants("epoch_end")


class TestAttachTarget:
    @pytest.mark.parametrize(("name", "writer", "label"), [
        ("run.jsonl", "JsonlWriter", "jsonl"), ("run.log", "JsonlWriter", "jsonl"),
        ("run.parquet", "ParquetWriter", "parquet")])
    def test_a_path_is_opened_in_its_format(self, tmp_path, name, writer, label):
        """A path is opened as a log in the format its name says, named after the format and
        the path (a run with two logs says which failed)."""
        recorder = Recorder("run")
        slot = recorder.attach_target(os.fspath(tmp_path / name))
        assert type(slot.sink).__name__ == writer and slot.name == f"{label} {tmp_path / name}"
        assert slot.kinds is None and not slot.continued
        slot.sink.close()

    def test_appending_to_a_log_with_records_continues_it(self, tmp_path):
        """append=True on a log that holds records marks the slot continued."""
        path = tmp_path / "run.jsonl"
        path.write_bytes(b"")
        recorder = Recorder("run")
        slot = recorder.attach_target(path, append=True)
        assert not slot.continued  # empty: nothing to continue
        slot.sink.close()
        bus = Bus(log=path)
        bus.epoch_end(0)
        bus.close()
        slot = Recorder("run").attach_target(path, append=True)
        assert slot.continued
        slot.sink.close()

    def test_a_sink_object_is_attached_under_its_name(self):
        """An object with write/flush/close is attached under its ``name``."""
        recorder = Recorder("run")
        writer = RecordingWriter()
        slot = recorder.attach_target(writer)
        assert slot.sink is writer and slot.name == "memory"
        assert recorder.slots == [slot]

    @pytest.mark.parametrize("target", [42, object(), {"path": "x"}, None])
    def test_anything_else_is_refused(self, target):
        """A target that is neither a path nor a sink is a ConfigError naming ``log``."""
        recorder = Recorder("run")
        with pytest.raises(ConfigError, match="log must be a path or a sink") as info:
            recorder.attach_target(target)
        assert info.value.field == "log" and recorder.slots == []

    def test_an_object_missing_a_method_is_refused(self):
        """An object with write but no close is not a sink."""
        class Half:
            def write(self, record):
                pass

            def flush(self):
                pass

        with pytest.raises(ConfigError):
            Recorder("run").attach_target(Half())

    def test_an_unopenable_path_is_a_log_error(self, tmp_path):
        """A path that cannot be opened for writing is a LogError naming it."""
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        path = os.fspath(blocker / "run.jsonl")
        with pytest.raises(LogError) as info:
            Recorder("run").attach_target(path)
        assert info.value.path == path and path in str(info.value)


class TestOpen:
    def test_each_sink_is_opened_once_with_the_run(self):
        """open() opens every sink once with the run; opening again opens none twice."""
        recorder = Recorder("run")
        a, b = Keeper("a"), Keeper("b")
        recorder.attach(a, "a")
        recorder.attach(b, "b")
        assert not recorder.opened
        run = Bus().run
        recorder.open(run)
        recorder.open(run)
        assert recorder.opened
        assert a.opened_with == [run] and b.opened_with == [run]

    def test_a_sink_attached_later_is_opened_at_once(self):
        """A sink attached after the run was opened is opened as it is attached."""
        recorder = Recorder("run")
        run = Bus().run
        recorder.open(run)
        late = Keeper("late")
        recorder.attach(late, "late")
        assert late.opened_with == [run]

    def test_a_sink_attached_before_is_not_opened_yet(self):
        """Attaching before the run opens does not open the sink."""
        recorder = Recorder("run")
        early = Keeper("early")
        recorder.attach(early, "early")
        assert early.opened_with == []


class TestReport:
    def test_pending_outcomes_in_order(self):
        """Reported outcomes are taken in the order reported, once."""
        recorder = Recorder("run")
        first, second = r.Warning(message="1"), r.Warning(message="2")
        recorder.report(first)
        recorder.report(second)
        assert recorder.take_pending() == [first, second]
        assert recorder.take_pending() == []


class Tunable(Plugin):
    @hookimpl
    def on_epoch_end(self, event):
        return None

    def __init__(self, patience: int = 1, monitor: str = "val_loss"):
        self.patience = patience


class FailingConfigModel(NumpyModel):
    def get_config(self):
        raise RuntimeError("config unavailable")


class TestMakeHeader:
    def test_plugins_with_their_labels_and_parameters(self):
        """Each plugin is listed with its parameters; a label other than its name is kept."""
        a, b = Tunable(patience=3), Tunable()
        header = make_header("run-1", [(a, "Tunable"), (b, "Tunable#2")], {},
                             learning_rate=None, model=None)
        assert [(p.name, p.label) for p in header.plugins] == \
            [("Tunable", ""), ("Tunable", "Tunable#2")]
        assert header.plugins[0].params == {"patience": 3, "monitor": "val_loss"}
        assert (header.run_id, header.seq, header.kind) == ("run-1", 0, "header")

    def test_run_facts_in_meta(self):
        """The learning rate and the model's config are in meta, the user's meta kept as
        given, ``extra`` added over it."""
        model = NumpyModel({"w": np.zeros((2, 3))}, config={"layers": 1})
        header = make_header("run", [], {"user": "kept", "token": "mine"}, learning_rate=0.1,
                             model=model, extra={"rank": 0, "user": "extra wins"})
        assert header.meta == {"user": "extra wins", "token": "mine", "learning_rate": 0.1,
                               "model": {"layers": 1, "weights": {"w": [2, 3]}}, "rank": 0}

    def test_a_model_whose_config_fails(self):
        """A model whose get_config raises leaves a note, not a failed run."""
        header = make_header("run", [], {}, learning_rate=None,
                             model=FailingConfigModel({"w": np.zeros(1)}))
        assert header.meta == {"model_config_error": "RuntimeError: config unavailable"}

    def test_no_learning_rate_no_model(self):
        """Without a learning rate or a model, meta holds only what was given."""
        class NoConfig:
            def get_weights(self):
                return {}

            def set_weights(self, weights):
                pass

        header = make_header("run", [], {"a": 1}, learning_rate=None, model=NoConfig())
        assert header.meta == {"a": 1}

    def test_only_secrets_are_redacted(self):
        """A plugin's own redaction (RemoteMonitor's headers) is kept, and nothing else of
        the plugins or the meta is changed."""
        from plugins import EarlyStopping, RemoteMonitor

        monitor = RemoteMonitor("http://127.0.0.1:1", headers={"Authorization": "secret"})
        stopping = EarlyStopping(monitor="val_loss", patience=4)
        header = make_header("run", [(monitor, "RemoteMonitor"), (stopping, "EarlyStopping")],
                             {"note": "Authorization"}, learning_rate=0.5, model=None)
        monitor_spec, stopping_spec = header.plugins
        assert monitor_spec.params["headers"] == {"Authorization": "<redacted>"}
        assert "secret" not in header.model_dump_json()
        assert stopping_spec.params == stopping.get_config()
        assert header.meta == {"note": "Authorization", "learning_rate": 0.5}

    def test_the_header_rate_is_the_runs(self):
        """The header's learning rate, which replay and resume start from, is the run's own,
        whatever a user's meta calls learning_rate."""
        header = make_header("run", [], {"learning_rate": 0.01}, learning_rate=0.1,
                             model=None)
        assert header.meta["learning_rate"] == 0.1

    def test_a_resume_keeps_the_runs_rate(self, tmp_path):
        """A resumed run goes on at the learning rate it had, not at a meta value."""
        log = tmp_path / "run.jsonl"
        bus = Bus(log=log, learning_rate=0.1, meta={"learning_rate": 0.01})
        bus.train_begin()
        bus.epoch_begin(0)
        bus.epoch_end(0, {"loss": 1.0})
        bus.close()  # the loop died before train_end
        again = Bus(log=log, learning_rate=0.1, meta={"learning_rate": 0.01}, resume=True)
        try:
            assert again.learning_rate == 0.1
        finally:
            again.close()

