"""Bad input gets a clear error naming the field, the event and the plugin, and loses nothing
already recorded: the bus's arguments, the loop's values, what plugins return, and logs."""

from __future__ import annotations

import fractions
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import (
    Bus,
    ConfigError,
    EventError,
    LogCorruptError,
    LogError,
    MetricValueError,
    Plugin,
    PluginError,
    PluginIsolatedWarning,
    RunWarning,
    hookimpl,
    read_log,
)
from eventbus import records as r
from eventbus.testing import RecordingWriter


def kinds(path) -> list[str]:
    return [record.kind for record in read_log(path)]


class Stopper(Plugin):
    @hookimpl
    def on_epoch_end(self, event):
        return r.StopTraining(reason="always")


# --- the bus's own arguments ------------------------------------------------------------------


class TestBusArguments:
    @pytest.mark.parametrize("plugins", [[5], [None], ["EarlyStopping"], [{"a": 1}]])
    def test_an_object_that_is_not_a_plugin_is_refused(self, plugins):
        with pytest.raises(ConfigError, match=r"Bus: a plugin given is \w+ .*, not a plugin") \
                as info:
            Bus(plugins)
        assert info.value.field == "plugins"

    def test_a_plugin_class_asks_for_an_instance(self):
        with pytest.raises(ConfigError, match=r"is the class Stopper; pass an instance "
                                              r"\(Stopper\(...\)\)"):
            Bus([Stopper])

    def test_a_string_for_the_plugin_list_is_refused(self):
        with pytest.raises(ConfigError, match="plugins must be a list"):
            Bus("EarlyStopping")

    @pytest.mark.parametrize("value", [float("nan"), -1, float("inf"), "fast", None.__class__])
    def test_a_learning_rate_that_is_not_a_finite_number_0_or_more(self, value):
        with pytest.raises(ConfigError, match="learning_rate") as info:
            Bus(learning_rate=value)
        assert info.value.field == "learning_rate"

    def test_the_learning_rate_setter_checks_too(self):
        bus = Bus(learning_rate=0.1)
        with pytest.raises(ConfigError, match="learning_rate"):
            bus.learning_rate = float("nan")
        assert bus.learning_rate == 0.1
        bus.learning_rate = 0.0  # a schedule may warm up from 0
        assert bus.learning_rate == 0.0

    @pytest.mark.parametrize(("kw", "field"), [
        ({"resume": "no"}, "resume"), ({"run_id": 5}, "run_id"), ({"run_id": ""}, "run_id"),
        ({"meta": [1, 2]}, "meta"), ({"meta": {"when": object()}}, "meta")])
    def test_bad_arguments_name_their_field(self, kw, field):
        with pytest.raises(ConfigError) as info:
            Bus(**kw)
        assert info.value.field == field

    def test_meta_is_made_plain_data_and_an_unencodable_value_is_named(self, tmp_path):
        path = tmp_path / "run.jsonl"
        with Bus(log=path, meta={"scale": np.float32(0.5), "sizes": (1, 2)}) as bus:
            bus.epoch_end(0, {"loss": 1.0})
        header = next(iter(read_log(path)))
        assert header.meta["scale"] == 0.5 and header.meta["sizes"] == [1, 2]
        with pytest.raises(ConfigError, match=r"meta\.n: int 1180591620717411303424 does not fit"):
            Bus(meta={"n": 2**70})

    def test_a_log_path_that_cannot_be_opened_is_a_log_error_naming_it(self, tmp_path):
        (tmp_path / "afile").write_text("x")
        with pytest.raises(LogError, match="afile/run.jsonl.*cannot be opened"):
            Bus(log=tmp_path / "afile" / "run.jsonl")

    def test_a_log_path_given_as_bytes_is_a_path(self, tmp_path):
        path = tmp_path / "run.jsonl"
        with Bus(log=os.fsencode(path)) as bus:
            bus.epoch_end(0, {"loss": 1.0})
        assert kinds(path) == ["header", "epoch_end"]


# --- the loop's values ------------------------------------------------------------------------


class TestLoopValues:
    @given(st.integers())
    def test_an_index_is_0_or_more_and_fits_in_64_bits(self, index):
        bus = Bus(log=RecordingWriter())
        fits = 0 <= index < 2**63
        for call in (bus.batch_end, bus.batch_begin, bus.epoch_begin, bus.epoch_end):
            if fits:
                call(index, {"loss": 1.0})
            else:
                with pytest.raises(EventError, match="must be 0 or more and fit in 64 bits"):
                    call(index, {"loss": 1.0})

    def test_a_refused_index_records_nothing_and_the_run_goes_on(self, tmp_path):
        path = tmp_path / "run.jsonl"
        with Bus(log=path) as bus:
            bus.epoch_begin(0)
            with pytest.raises(EventError, match="epoch_end: epoch"):
                bus.epoch_end(-1, {"loss": 1.0})
            bus.epoch_end(0, {"loss": 1.0})
        assert kinds(path) == ["header", "epoch_begin", "epoch_end"]
        assert [rec.seq for rec in read_log(path)] == [0, 1, 2]

    def test_an_epoch_cannot_end_twice(self, tmp_path):
        """A second epoch_end for the same epoch would count as another epoch for every
        patience and cooldown: refused, and nothing recorded for it."""
        from plugins import ReduceLROnPlateau

        path = tmp_path / "run.jsonl"
        with Bus([ReduceLROnPlateau(patience=1, factor=0.5)], log=path,
                 learning_rate=0.1) as bus:
            bus.epoch_begin(0)
            bus.epoch_end(0, {"val_loss": 1.0})
            bus.epoch_begin(1)
            bus.epoch_end(1, {"val_loss": 1.0})  # no improvement: the rate is cut once
            for _ in range(2):
                with pytest.raises(EventError, match=r"epoch 1 has already ended.*"
                                                     r"epoch_begin\(2\)"):
                    bus.epoch_end(1, {"val_loss": 1.0})
            assert bus.learning_rate == 0.05
            bus.epoch_begin(2)
            bus.epoch_end(2, {"val_loss": 1.0})
        assert kinds(path).count("epoch_end") == 3

    def test_a_loop_without_epoch_begin_may_end_each_epoch_once(self):
        bus = Bus(log=RecordingWriter())
        for epoch in range(3):
            bus.epoch_end(epoch, {"loss": 1.0})
        with pytest.raises(EventError, match="epoch 2 has already ended"):
            bus.epoch_end(2, {"loss": 1.0})
        bus.train_begin({})  # a new fit starts counting again
        bus.epoch_end(2, {"loss": 1.0})

    def test_an_epoch_end_refused_for_its_logs_may_be_published_again(self):
        bus = Bus(log=RecordingWriter())
        with pytest.raises(MetricValueError):
            bus.epoch_end(0, {"loss": "bad"})
        bus.epoch_end(0, {"loss": 1.0})

    @pytest.mark.parametrize("call", ["batch_end", "batch_begin", "epoch_end"])
    def test_logs_that_are_an_array_name_the_event_and_field(self, call):
        bus = Bus(log=RecordingWriter())
        with pytest.raises(EventError, match=f"{call}: logs must be a mapping") as info:
            getattr(bus, call)(0, np.array([1.0, 2.0]))
        assert info.value.field == "logs"

    def test_a_value_too_large_for_a_float_is_a_metric_error(self):
        bus = Bus(log=RecordingWriter())
        with pytest.raises(MetricValueError, match=r"batch_end: logs\['loss'\].*Fraction"):
            bus.batch_end(0, {"loss": fractions.Fraction(10**400)})

    def test_numpy_longdouble_values_and_str_subclass_keys_are_accepted(self):
        memory = RecordingWriter()
        bus = Bus(log=memory)
        bus.batch_end(0, {np.str_("loss"): np.longdouble(1.5)})
        (logs,) = [rec["logs"] for rec in memory.records if rec["kind"] == "batch_end"]
        assert logs == {"loss": 1.5}
        assert type(next(iter(logs))) is str

    @pytest.mark.parametrize("sinks", ["jsonl", "writer", "none"])
    @given(keys=st.lists(st.one_of(st.text(max_size=4), st.integers(), st.none(),
                                   st.text(max_size=4).map(np.str_)),
                         min_size=1, max_size=4, unique_by=repr))
    def test_metric_keys_are_str_whichever_sinks_take_the_batch(self, tmp_path_factory, sinks,
                                                                 keys):
        """A key that is not a str is refused, naming the event, and the batch is not
        recorded (the next one takes its seq and step); a key that is a str subclass is
        recorded as a str. The same with a JSON Lines log (whose encoder refuses such keys),
        another sink, or only a plugin."""
        seen = []

        class Keep(Plugin):
            @hookimpl
            def on_batch_end(self, event):
                seen.append(event.logs)

        memory = RecordingWriter()
        path = tmp_path_factory.mktemp("keys") / "run.jsonl"
        log = {"jsonl": path, "writer": memory, "none": None}[sinks]
        with Bus([Keep()], log=log) as bus:
            bus.train_begin({})
            bus.epoch_begin(0)
            logs = {key: 1.5 for key in keys}
            if all(isinstance(key, str) for key in keys):
                bus.batch_end(0, logs)
                assert seen[-1] == {str.__str__(key): 1.5 for key in keys}
                assert all(type(key) is str for key in seen[-1])
            else:
                with pytest.raises(EventError, match="batch_end: logs keys must be str"):
                    bus.batch_end(0, logs)
                assert seen == []
            bus.batch_end(1, {"loss": 0.5})
            assert seen[-1] == {"loss": 0.5}
        if sinks == "none":
            return
        records = list(read_log(path)) if sinks == "jsonl" else \
            [r.parse_record(d) for d in memory.records]
        ends = [x for x in records if x.kind == "batch_end"]
        assert [x.seq for x in records] == list(range(len(records)))
        assert ends[-1].batch == 1 and ends[-1].step == len(ends) - 1
        assert all(type(key) is str for x in ends for key in x.logs)

    def test_params_beyond_64_bits_are_refused_at_train_begin(self):
        with pytest.raises(EventError, match=r"train_begin: params\.epochs: int"):
            Bus(log=RecordingWriter()).train_begin({"epochs": 2**64})

    def test_publish_checks_step_and_epoch_before_keeping_them(self):
        memory = RecordingWriter()
        bus = Bus(log=memory)
        with pytest.raises(EventError, match="batch_end: step must be an int"):
            bus.publish(r.BatchEnd.model_construct(batch=1, step="zero", epoch=0, logs={}))
        bus.batch_end(1, {"loss": 1.0})  # the bus still works
        assert memory.records[-1]["step"] == 0

    def test_an_event_after_close_is_refused(self, tmp_path):
        path = tmp_path / "run.jsonl"
        bus = Bus(log=path)
        bus.train_begin({})
        bus.close()
        before = path.read_bytes()
        for call in (lambda: bus.epoch_begin(2), lambda: bus.batch_end(0, {"loss": 1.0}),
                     lambda: bus.train_end()):
            with pytest.raises(EventError, match="the bus is closed"):
                call()
        assert path.read_bytes() == before


# --- what plugins return ----------------------------------------------------------------------


class BadAugmenter(Plugin):
    def __init__(self, extra):
        self.extra = extra

    @hookimpl
    def augment_epoch_logs(self, epoch, logs):
        return self.extra


class TestPluginOutput:
    @pytest.mark.parametrize("extra", [{"x": "bad"}, np.array([1.0, 2.0])])
    def test_bad_augmented_logs_are_the_plugins_failure_and_the_epoch_is_kept(self, extra,
                                                                            tmp_path):
        path = tmp_path / "run.jsonl"
        bus = Bus([BadAugmenter(extra), Stopper()], log=path, on_plugin_error="isolate")
        with pytest.warns(PluginIsolatedWarning, match="BadAugmenter"):
            decisions = bus.epoch_end(0, {"loss": 1.0})
        assert [d.kind for d in decisions] == ["stop_training"]  # the others still ran
        bus.epoch_end(1, {"loss": 1.0})  # disabled: no second failure
        bus.close()
        records = list(read_log(path))
        assert [rec.kind for rec in records] == [
            "header", "epoch_end", "plugin_failed", "stop_training", "epoch_end",
            "stop_training"]
        failed = records[2]
        assert (failed.plugin, failed.event, failed.cause_seq) == ("BadAugmenter", "epoch_end",
                                                                   records[1].seq)

    def test_under_raise_the_epoch_is_recorded_before_the_error(self, tmp_path):
        path = tmp_path / "run.jsonl"
        bus = Bus([BadAugmenter({"x": "bad"})], log=path)
        with pytest.raises(PluginError, match=r"'BadAugmenter' failed on epoch_end.*logs\['x'\]"):
            bus.epoch_end(0, {"loss": 1.0})
        bus.close()
        assert kinds(path) == ["header", "epoch_end", "plugin_failed"]

    def test_a_generator_hook_that_raises_is_the_plugins_failure(self):
        class Gen(Plugin):
            @hookimpl
            def on_epoch_end(self, event):
                yield r.StopTraining(reason="x")
                raise KeyError("inside")

        bus = Bus([Gen()], log=RecordingWriter())
        with pytest.raises(PluginError, match="'Gen' failed on epoch_end.*KeyError"):
            bus.epoch_end(0, {"loss": 1.0})
        bus = Bus([Gen()], on_plugin_error="isolate")
        with pytest.warns(PluginIsolatedWarning):
            bus.epoch_end(0, {"loss": 1.0})
        assert bus.epoch_end(1, {"loss": 1.0}) == ()

    @pytest.mark.parametrize("made", [
        lambda: r.StopTraining.model_construct(),  # no reason
        lambda: r.SetLearningRate(reason="x", value=0.1).model_copy(update={"value": "fast"}),
        lambda: r.StopTraining(reason="x", evidence={"n": 2**70}),
    ])
    def test_an_invalid_decision_is_refused_and_the_log_stays_readable(self, made, tmp_path):
        class Maker(Plugin):
            @hookimpl
            def on_epoch_end(self, event):
                return made()

        path = tmp_path / "run.jsonl"
        bus = Bus([Maker()], log=path, learning_rate=0.5, on_plugin_error="isolate")
        with pytest.warns(PluginIsolatedWarning, match="Maker"):
            bus.epoch_end(0, {"loss": 1.0})
        bus.close()
        assert kinds(path) == ["header", "epoch_end", "plugin_failed"]
        assert bus.learning_rate == 0.5

    def test_a_learning_rate_decision_that_is_nan_never_reaches_the_model(self):
        class NanRate(Plugin):
            @hookimpl
            def on_epoch_end(self, event):
                return r.SetLearningRate(reason="x", value=float("nan"))

        bus = Bus([NanRate()], learning_rate=0.5, on_plugin_error="isolate")
        with pytest.warns(PluginIsolatedWarning, match="finite number"):
            bus.epoch_end(0, {"loss": 1.0})
        assert bus.learning_rate == 0.5

    def test_a_list_with_an_item_that_is_not_a_record_names_it(self):
        class Weird(Plugin):
            @hookimpl
            def on_epoch_end(self, event):
                return [r.StopTraining(reason="x"), "oops"]

        with pytest.raises(PluginError, match=r"list from epoch_end whose item 1 is a str"):
            Bus([Weird()]).epoch_end(0, {"loss": 1.0})

    def test_a_warning_record_is_also_a_python_warning(self):
        class Warner(Plugin):
            @hookimpl
            def on_epoch_end(self, event):
                return r.Warning(message="val_loss is missing")

        with pytest.warns(RunWarning, match="Warner: val_loss is missing"):
            Bus([Warner()]).epoch_end(0, {"loss": 1.0})


# --- logs -------------------------------------------------------------------------------------


def _run(path) -> None:
    with Bus([Stopper()], log=path) as bus:
        bus.train_begin({})
        bus.epoch_begin(0)
        bus.epoch_end(0, {"loss": 1.0})
        bus.train_end()


class TestLogs:
    def test_resume_keeps_a_whole_last_record_without_its_newline(self, tmp_path):
        path = tmp_path / "run.jsonl"
        _run(path)
        whole = list(read_log(path))
        path.write_bytes(path.read_bytes()[:-1])  # the newline cut off, the record whole
        assert len(list(read_log(path))) == len(whole)
        with pytest.warns(RunWarning, match="had finished"):  # _run ends its fit
            bus = Bus([Stopper()], log=path, resume=True)
        assert bus.resumed
        bus.close()
        kept = list(read_log(path))
        assert [rec.seq for rec in kept[:len(whole)]] == [rec.seq for rec in whole]
        assert not Bus().resumed
        assert kept[len(whole)].kind == "resumed"

    @pytest.mark.parametrize("text", [b'{"lr": 0.1}', b"hello", b'{"lr": 0.1}\n{"x": 1}'])
    def test_resume_refuses_a_file_that_is_not_a_log_and_leaves_it(self, text, tmp_path):
        path = tmp_path / "cfg.json"
        path.write_bytes(text)
        with pytest.raises(LogError, match="not an event log"):
            Bus(log=path, resume=True)
        assert path.read_bytes() == text

    @pytest.mark.parametrize("text", [b"hello", b"\x00\x01binary"])
    def test_reading_a_file_that_is_not_a_log_is_an_error_not_an_empty_log(self, text,
                                                                           tmp_path):
        path = tmp_path / "c.jsonl"
        path.write_bytes(text)
        with pytest.raises(LogCorruptError, match="not an event log"):
            list(read_log(path))

    def test_a_whole_last_line_that_is_not_a_record_is_corrupt_not_torn(self, tmp_path):
        path = tmp_path / "run.jsonl"
        _run(path)
        path.write_bytes(path.read_bytes() + b'{"lr": 0.1}')
        with pytest.raises(LogCorruptError, match=r"run.jsonl:\d+: line is not a record"):
            list(read_log(path))

    def test_a_record_without_a_kind_names_its_line(self, tmp_path):
        path = tmp_path / "run.jsonl"
        _run(path)
        lines = path.read_bytes().splitlines(keepends=True)
        lines.insert(2, b'{"v":1,"seq":5}\n')
        path.write_bytes(b"".join(lines))
        with pytest.raises(LogCorruptError, match=r"run.jsonl:3: record has no 'kind'"):
            list(read_log(path))

    @pytest.mark.parametrize(("old", "new", "field"), [
        (b'"loss":1.0', b'"loss":"oops"', "logs"), (b'"epoch":0', b'"epoch":null', "epoch")])
    def test_a_damaged_epoch_record_names_its_line_and_field(self, old, new, field, tmp_path):
        path = tmp_path / "run.jsonl"
        _run(path)
        lines = path.read_bytes().splitlines(keepends=True)
        number = next(i for i, line in enumerate(lines, 1) if b'"kind":"epoch_end"' in line)
        lines[number - 1] = lines[number - 1].replace(old, new)
        path.write_bytes(b"".join(lines))
        with pytest.raises(LogCorruptError, match=rf"run.jsonl:{number}: invalid epoch_end "
                                                  rf"record:.*{field}"):
            list(read_log(path))

    @pytest.mark.parametrize(("given", "message"), [
        ("epoch_end", "kinds must be a collection"), ({"epoch_ends"}, "'epoch_ends'")])
    def test_read_log_checks_its_kinds(self, given, message, tmp_path):
        path = tmp_path / "run.jsonl"
        _run(path)
        with pytest.raises(ConfigError, match=message):
            list(read_log(path, kinds=given))

    def test_a_resume_whose_plugins_decide_differently_warns_at_once(self, tmp_path):
        path = tmp_path / "run.jsonl"
        with Bus([Stopper()], log=path) as bus:
            bus.train_begin({})
            bus.epoch_begin(0)
            bus.epoch_end(0, {"loss": 1.0})

        class Silent(Plugin):
            name = "Stopper"

            @hookimpl
            def on_epoch_end(self, event):
                return r.SetLearningRate(reason="other", value=0.1)

        with pytest.warns(RunWarning, match="resume: the plugins' decisions differ"):
            Bus([Silent()], log=path, resume=True, learning_rate=0.5).close()



class TestUndecodableText:
    """A lone surrogate (what ``os.fsdecode`` makes of an undecodable byte in a file name) is
    not text a log can hold. Given by the loop, it is refused at once, naming the field; every
    record before and after it reaches the log. In a record the bus makes from an error
    message, it is written escaped."""

    BAD = os.fsdecode(b"caf\xe9")

    @pytest.mark.parametrize("log", ["run.jsonl", "run.parquet", None])
    def test_a_metric_name_is_refused_and_nothing_else_is_lost(self, tmp_path, log):
        path = None if log is None else tmp_path / log
        with Bus([], log=path) as bus:
            bus.train_begin({"epochs": 3})
            for epoch in range(3):
                bus.epoch_begin(epoch)
                bad = {f"val_{self.BAD}": 0.5} if epoch == 1 else {"val_loss": 0.5}
                if epoch == 1:
                    if path is not None:  # (a bus with nothing on it looks at no batch)
                        with pytest.raises(EventError, match="lone surrogate") as info:
                            bus.batch_end(0, bad)
                        assert info.value.field == "logs" and info.value.event == "batch_end"
                    with pytest.raises(EventError, match="lone surrogate"):
                        bus.epoch_end(epoch, bad)
                else:
                    bus.batch_end(0, {"loss": 1.0})
                    bus.epoch_end(epoch, bad)
            bus.train_end()
        if path is not None:
            assert [(x.kind, getattr(x, "epoch", None)) for x in read_log(path)][1:] == [
                ("train_begin", None), ("epoch_begin", 0), ("batch_end", 0), ("epoch_end", 0),
                ("epoch_begin", 1), ("epoch_begin", 2), ("batch_end", 2), ("epoch_end", 2),
                ("train_end", None)]

    def test_a_param_or_meta_is_refused_naming_it(self, tmp_path):
        with pytest.raises(ConfigError, match=r"meta\.data: .* lone surrogate"):
            Bus([], meta={"data": self.BAD})
        with Bus([], log=tmp_path / "run.jsonl") as bus:
            with pytest.raises(EventError, match=r"params\.data: .* lone surrogate"):
                bus.train_begin({"data": self.BAD})
            bus.train_begin({"data": "ok"})
        assert kinds(tmp_path / "run.jsonl") == ["header", "train_begin"]

    @pytest.mark.parametrize("log", ["run.jsonl", "run.parquet"])
    def test_a_message_the_bus_records_is_written_escaped(self, tmp_path, log):
        with Bus([], log=tmp_path / log) as bus, pytest.warns(RunWarning, match="cannot open"):
            bus.train_begin()
            bus.record(r.Warning(message=f"cannot open {self.BAD}"))
            bus.train_end()
        warning = next(x for x in read_log(tmp_path / log) if x.kind == "warning")
        assert warning.message == "cannot open caf\\udce9"


class TestRecordsALogCannotReadBack:
    """A record over the readers' limit (jsonl.MAX_LINE_BYTES) would make the whole log
    unreadable to audit, replay and resume: refused when given, naming the largest field;
    what came before and after reads back."""

    @pytest.mark.parametrize("log", ["run.jsonl", "run.parquet"])
    def test_a_huge_param_or_vector_is_refused_and_the_log_stays_readable(self, tmp_path, log,
                                                                           monkeypatch):
        import eventbus.engine
        import eventbus.jsonl

        MAX_LINE_BYTES = 1 << 20  # the limit made small, for the test's time: 64 MiB at rest
        monkeypatch.setattr(eventbus.jsonl, "MAX_LINE_BYTES", MAX_LINE_BYTES)
        monkeypatch.setattr(eventbus.engine, "_LONGEST", MAX_LINE_BYTES - (1 << 16))
        path = tmp_path / log
        with Bus([], log=path) as bus:
            with pytest.raises(EventError, match="'params.notes'") as info:
                bus.train_begin({"notes": "x" * MAX_LINE_BYTES})
            assert (info.value.event, info.value.field) == ("train_begin", "params")
            bus.train_begin({"notes": "short"})
            bus.epoch_begin(0)
            vector = [0.5] * (MAX_LINE_BYTES // 4)
            with pytest.raises(EventError, match="'logs.per_class'"):
                bus.batch_end(0, {"per_class": vector})
            with pytest.raises(EventError, match="'logs.per_class'"):
                bus.epoch_end(0, {"per_class": vector})
            bus.epoch_end(0, {"loss": 0.5})
            bus.train_end()
        assert kinds(path) == ["header", "train_begin", "epoch_begin", "epoch_end", "train_end"]

    def test_the_fast_path_s_limit_is_the_reader_s(self):
        import eventbus.engine
        import eventbus.jsonl

        assert eventbus.engine._LONGEST == eventbus.jsonl.MAX_LINE_BYTES - eventbus.engine._ENVELOPE

    @pytest.mark.parametrize("log", ["run.jsonl", "run.parquet"])
    @pytest.mark.parametrize("publish", ["batch_end", "test_batch_end"])
    def test_the_fast_paths_refuse_it_too(self, tmp_path, monkeypatch, publish, log):
        """A batch_end of finite floats (the inlined path) or an evaluation batch with a
        megabyte metric name: measured and refused as the careful path's records are."""
        import eventbus.engine
        import eventbus.jsonl

        monkeypatch.setattr(eventbus.jsonl, "MAX_LINE_BYTES", 1 << 20)
        monkeypatch.setattr(eventbus.engine, "_LONGEST", (1 << 20) - (1 << 16))
        path = tmp_path / log
        with Bus([], log=path) as bus:
            bus.train_begin()
            bus.epoch_begin(0)
            with pytest.raises(EventError, match="the largest field is 'logs.xxx"):
                getattr(bus, publish)(0, {"x" * (1 << 20): 1.0})
            with pytest.raises(EventError, match="over the"):
                getattr(bus, publish)(0, {f"m{i}": 1.0 for i in range(100_000)})
            getattr(bus, publish)(0, {"loss": 1.0})
        assert kinds(path)[-1] == publish

    def test_huge_meta_is_refused_when_the_bus_is_made(self):
        from eventbus.jsonl import MAX_LINE_BYTES

        with pytest.raises(ConfigError, match="meta takes"):
            Bus([], meta={"notes": "x" * MAX_LINE_BYTES})



def _nested(depth: int) -> list:
    value: list = [1.0]
    for _ in range(depth):
        value = [value]
    return value


class TestValuesTooLargeToShow:
    """A value whose repr is itself an error (an int of 5,000 digits; a list nested 5,000
    deep) is a MetricValueError naming the field, not a ValueError or RecursionError from the
    message; nothing is recorded of it."""

    @pytest.mark.parametrize("value, words", [
        (10**5000, "an int of 16610 bits is too large for a float"),
        (_nested(5000), "must be a real number"),
    ], ids=["int of 5000 digits", "list nested 5000 deep"])
    def test_the_error_names_the_field(self, tmp_path, value, words):
        with Bus([], log=tmp_path / "run.jsonl") as bus:
            bus.train_begin()
            bus.epoch_begin(0)
            with pytest.raises(MetricValueError, match=words) as info:
                bus.epoch_end(0, {"x": value})
            assert info.value.field == "logs.x"
            bus.epoch_end(0, {"x": 1.0})
        assert kinds(tmp_path / "run.jsonl")[-1] == "epoch_end"
