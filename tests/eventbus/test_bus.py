"""The bus: order, dispatch, recording, decisions, failure policy, control state."""

from __future__ import annotations

import math
import os
import threading
import warnings

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import (
    Bus,
    ConfigError,
    EventError,
    MetricValueError,
    NumpyModel,
    Plugin,
    PluginError,
    PluginIsolatedWarning,
    RunWarning,
    SinkFailureWarning,
    hookimpl,
    read_log,
)
from eventbus import records as r
from eventbus.testing import RecordingWriter


class Tracer(Plugin):
    """Appends (name, hook) to a shared list for every hook it sees."""

    def __init__(self, tag: str, calls: list | None = None):
        self.tag = tag
        self.calls = calls if calls is not None else []

    @hookimpl
    def on_train_begin(self, event):
        self.calls.append((self.tag, event.kind))

    @hookimpl
    def on_epoch_end(self, event):
        self.calls.append((self.tag, event.kind))

    @hookimpl
    def on_batch_end(self, event):
        self.calls.append((self.tag, event.kind))


class StopAt(Plugin):
    """Stops training at the epoch given."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    @hookimpl
    def on_epoch_end(self, event):
        if event.epoch == self.epoch:
            return r.StopTraining(reason=f"epoch {event.epoch} reached", code="test",
                                  evidence={"epoch": event.epoch})
        return None


class Boom(Plugin):
    def __init__(self, on: str = "epoch_end"):
        self.on = on

    @hookimpl
    def on_epoch_end(self, event):
        raise RuntimeError("boom")


class TestOrderAndDispatch:
    def test_plugins_run_in_the_order_given(self):
        """Every hook calls plugins in list order (Keras's), not pluggy's reverse order."""
        calls: list = []
        bus = Bus([Tracer("a", calls), Tracer("b", calls), Tracer("c", calls)])
        bus.train_begin()
        bus.batch_end(0, {"loss": 1.0})
        bus.epoch_end(0, {"loss": 1.0})
        assert calls == [(t, k) for k in ("train_begin", "batch_end", "epoch_end")
                         for t in "abc"]

    def test_registered_later_runs_later(self):
        """bus.register() appends to the order."""
        calls: list = []
        bus = Bus([Tracer("a", calls)])
        bus.register(Tracer("z", calls))
        bus.epoch_end(0)
        assert calls == [("a", "epoch_end"), ("z", "epoch_end")]

    def test_unmarked_methods_are_never_called(self):
        """A method named like a hook but not marked @hookimpl is not a subscription."""
        class Plain:
            called = False

            @hookimpl
            def on_epoch_end(self, event):
                pass

            def on_batch_end(self, event):
                Plain.called = True

        bus = Bus([Plain()])
        bus.batch_end(0, {"loss": 1.0})
        assert not Plain.called

    def test_a_plugin_whose_hooks_are_all_unmarked_is_refused(self):
        """Methods named like hooks with none marked (a callback written Keras's way, a
        forgotten @hookimpl) would never be called: a ConfigError naming them and what to do,
        not a run that silently goes without them."""
        class LossHistory:  # the seed's, without its Keras base class
            def on_train_begin(self, logs=None):
                self.losses = []

            def on_epoch_end(self, epoch, logs=None):
                self.losses.append(logs["loss"])

        class Forgotten(Plugin):
            def on_epoch_end(self, event):
                pass

        for plugin, named in ((LossHistory(), "on_train_begin, on_epoch_end"),
                              (Forgotten(), "has on_epoch_end but")):
            with pytest.raises(ConfigError) as info:
                Bus([plugin])
            message = str(info.value)
            assert info.value.plugin == type(plugin).__name__
            assert named in message and "@eventbus.hookimpl" in message
            assert "subclass plugins.Callback" in message

    def test_a_plugin_that_unsubscribed_every_hook_is_taken(self):
        """Its hooks are marked; it switched them off (``unsubscribe``, or the older
        ``self.on_batch_end = None``) because this instance needs none: taken, never called."""
        class Probe(Plugin):
            def __init__(self, off: str):
                if off == "unsubscribe":
                    self.unsubscribe("on_batch_end", "on_epoch_end")
                else:
                    self.on_batch_end = self.on_epoch_end = None

            @hookimpl
            def on_batch_end(self, event):
                raise AssertionError("called")

            @hookimpl
            def on_epoch_end(self, event):
                raise AssertionError("called")

        for off in ("unsubscribe", "None"):
            bus = Bus([Probe(off)])
            bus.batch_end(0, {"loss": 1.0})
            bus.epoch_end(0, {"loss": 1.0})
            assert not bus.failures

    def test_a_plugin_of_no_hook_and_no_hook_named_method_is_taken(self):
        """An object with nothing named like a hook is not a mistaken callback: taken, as
        before (it may be there for its sink, or its name in the header)."""
        class Quiet:
            pass

        assert Bus([Quiet()]).plugins[0].__class__ is Quiet

    def test_a_hook_nobody_implements_calls_nobody(self):
        """Only plugins implementing a hook are in its call list."""
        bus = Bus([StopAt(3)])
        assert bus.subscribers("batch_end") == []
        assert bus.subscribers("epoch_end") == bus.plugins

    def test_a_misspelled_hook_is_a_config_error_naming_plugin_and_hook(self):
        """@hookimpl on an unknown hook name fails at registration with the name."""
        class Typo:
            @hookimpl
            def on_epoch_ended(self, event):
                pass

        with pytest.raises(ConfigError, match="on_epoch_ended") as info:
            Bus([Typo()])
        assert info.value.plugin == "Typo"
        assert "did you mean 'on_epoch_end'" in str(info.value)
        assert " object at 0x" not in str(info.value)  # no internal object's repr

    @pytest.mark.parametrize("hook", ["on_epoch_end", "on_batch_end", "on_train_begin"])
    def test_keras_arguments_on_a_hook_say_what_the_hook_gives(self, hook):
        """A Keras-style method marked as a hook: the error names the arguments the hook does
        not give, what it gives (the event), and where Keras's methods belong."""
        def method(self, epoch, logs=None):
            pass

        plugin_class = type("KerasStyle", (), {hook: hookimpl(method)})
        with pytest.raises(ConfigError) as info:
            Bus([plugin_class()])
        message = str(info.value)
        assert info.value.plugin == "KerasStyle"
        assert f"{hook} takes (epoch)" in message and "called with (event)" in message
        assert "plugins.Callback" in message and "@" not in message

    def test_an_extra_argument_on_a_keyword_hook(self):
        class Attach:
            @hookimpl
            def on_attach(self, run, model):
                pass

        with pytest.raises(ConfigError,
                           match=r"on_attach takes \(model\).*called with \(run, bus\)"):
            Bus([Attach()])

    def test_impl_without_arguments_is_called(self):
        """An implementation may take none of the hook's arguments."""
        seen = []

        class NoArgs:
            @hookimpl
            def on_epoch_end(self):
                seen.append(1)

        Bus([NoArgs()]).epoch_end(0)
        assert seen == [1]

    def test_the_same_plugin_twice_is_refused(self):
        """One object cannot be registered twice on a bus."""
        plugin = StopAt(1)
        with pytest.raises(ConfigError, match="already"):
            Bus([plugin, plugin])

    def test_two_plugins_of_one_name_get_distinct_labels(self):
        """A second plugin of the same name gets the label Name#2 in its records."""
        writer = RecordingWriter()
        bus = Bus([StopAt(0), StopAt(0)], log=writer)
        assert [d.source for d in bus.epoch_end(0)] == ["StopAt", "StopAt#2"]
        header = writer.records[0]
        assert [p["label"] for p in header["plugins"]] == ["", "StopAt#2"]


class TestRecording:
    # The reported warnings are only a handy outcome to queue; that they are shown is not checked.
    @pytest.mark.filterwarnings("ignore::eventbus.RunWarning")
    @given(st.lists(st.sampled_from(["epoch_begin", "epoch_end", "batch_begin", "batch_end",
                                     "test_begin", "predict_batch_end", "report"]),
                    max_size=30))
    def test_seq_is_strictly_increasing_from_the_header(self, calls):
        """Every record gets the next seq; the header is 0; decisions take their own seq;
        outcomes queued by report() go in before the next event, in order too."""
        writer = RecordingWriter()
        bus = Bus([StopAt(1)], log=writer)
        bus.train_begin({"epochs": 3})
        for i, call in enumerate(calls):
            if call == "report":
                bus.report(r.Warning(message=f"queued {i}"))
                continue
            method = getattr(bus, call)
            # Each epoch ends at most once (a second end is refused); batches repeat.
            number = i if call.startswith("epoch") else i % 3
            method(number, {"loss": 0.5}) if call != "test_begin" else method({"loss": 0.5})
        bus.train_end()
        bus.close()
        seqs = [rec["seq"] for rec in writer.records]
        assert seqs == list(range(len(seqs)))
        assert writer.records[0]["kind"] == "header"
        times = [rec["time"] for rec in writer.records]
        assert times == sorted(times)  # the header's time too comes before the first event's
        assert sum(rec["kind"] == "warning" for rec in writer.records) == calls.count("report")
        assert {rec["run_id"] for rec in writer.records} == {bus.run_id}

    def test_records_carry_epoch_batch_and_global_step(self):
        """Batch events know their epoch and a step counted across epochs."""
        writer = RecordingWriter()
        bus = Bus(log=writer)
        for epoch in range(2):
            bus.epoch_begin(epoch)
            for batch in range(3):
                bus.batch_begin(batch, {"size": 32})
                bus.batch_end(batch, {"loss": 1.0})
            bus.epoch_end(epoch)
        ends = [rec for rec in writer.records if rec["kind"] == "batch_end"]
        assert [(e["epoch"], e["batch"], e["step"]) for e in ends] == \
            [(0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 0, 3), (1, 1, 4), (1, 2, 5)]
        begins = [rec for rec in writer.records if rec["kind"] == "batch_begin"]
        assert [b["step"] for b in begins] == [0, 1, 2, 3, 4, 5]
        assert begins[0]["logs"] == {"size": 32.0}

    def test_header_lists_plugins_with_parameters(self, tmp_path):
        """The header names each plugin with its parameters; callables are marked unrecordable."""
        class WithCallable(Plugin):
            def __init__(self, fn, scale: float = 2.0):
                self.fn = fn

        path = tmp_path / "run.jsonl"
        with Bus([StopAt(4), WithCallable(print)], log=path, learning_rate=0.1,
                 meta={"dataset": "toy"}) as bus:
            bus.train_begin()
        header = next(read_log(path))
        assert header.kind == "header" and header.run_id == bus.run_id
        specs = {p.name: p for p in header.plugins}
        assert specs["StopAt"].params == {"epoch": 4} and specs["StopAt"].recordable
        assert not specs["WithCallable"].recordable
        assert specs["WithCallable"].params["scale"] == 2.0
        assert header.meta == {"dataset": "toy", "learning_rate": 0.1}
        assert header.library.startswith("eventbus ")

    def test_log_is_flushed_at_epoch_end_and_synced_at_train_end(self, tmp_path):
        """After epoch_end the records are in the file, before close()."""
        path = tmp_path / "run.jsonl"
        bus = Bus(log=path)
        bus.train_begin()
        bus.epoch_begin(0)
        bus.batch_end(0, {"loss": 1.0})
        bus.epoch_end(0, {"loss": 1.0})
        assert [rec.kind for rec in read_log(path)] == \
            ["header", "train_begin", "epoch_begin", "batch_end", "epoch_end"]
        bus.close()

    def test_publish_is_the_primitive(self):
        """publish() takes a record built by the caller and returns its decisions."""
        writer = RecordingWriter()
        bus = Bus([StopAt(2)], log=writer)
        assert bus.publish(r.EpochEnd(epoch=1, logs={"loss": 1.0})) == ()
        (decision,) = bus.publish(r.EpochEnd(epoch=2, logs={"loss": 1.0}))
        assert decision.kind == "stop_training" and bus.stop_training
        assert [rec["kind"] for rec in writer.records] == \
            ["header", "epoch_end", "epoch_end", "stop_training"]

    def test_publish_by_kind_records_what_the_methods_record(self):
        """``publish("epoch_end", epoch=0, logs=...)`` and Keras's CallbackList names
        (``on_epoch_end``, ``on_train_batch_end``, ...) give the log the methods give it."""
        def drive(bus: Bus, style: str) -> None:
            if style == "methods":
                bus.train_begin({"epochs": 1})
                bus.epoch_begin(0)
                bus.batch_end(0, {"loss": np.float32(0.5)})
                bus.test_batch_end(0, {"loss": 0.7})
                bus.epoch_end(0, {"loss": 0.5, "val_loss": 0.7})
                bus.train_end()
            elif style == "kinds":
                bus.publish("train_begin", params={"epochs": 1})
                bus.publish("epoch_begin", epoch=0)
                bus.publish("batch_end", batch=0, logs={"loss": np.float32(0.5)})
                bus.publish("test_batch_end", batch=0, logs={"loss": 0.7})
                bus.publish("epoch_end", epoch=0, logs={"loss": 0.5, "val_loss": 0.7})
                bus.publish("train_end")
            else:
                bus.train_begin({"epochs": 1})  # Keras gives params by set_params
                bus.on_epoch_begin(0)
                bus.on_train_batch_end(0, {"loss": np.float32(0.5)})
                bus.on_test_batch_end(0, {"loss": 0.7})
                bus.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.7})
                bus.on_train_end()

        logs = {}
        for style in ("methods", "kinds", "keras"):
            writer = RecordingWriter()
            with Bus([StopAt(5)], log=writer) as bus:
                drive(bus, style)
            logs[style] = [{k: v for k, v in rec.items() if k not in ("run_id", "time")}
                           for rec in writer.records[1:]]
        assert logs["methods"] == logs["kinds"] == logs["keras"]
        assert [rec["kind"] for rec in logs["kinds"]] == [
            "train_begin", "epoch_begin", "batch_end", "test_batch_end", "epoch_end", "train_end"]

    @pytest.mark.parametrize(("kind", "fields", "field"), [
        ("epoch_end", {"epoch": "x"}, "epoch"), ("epoch_end", {"epok": 1}, "epok"),
        ("epoch_end", {"seq": 3, "epoch": 0}, "seq"), ("stop_training", {}, None),
        ("no_such_kind", {}, None)])
    def test_publish_by_kind_names_the_kind_and_the_field(self, kind, fields, field):
        writer = RecordingWriter()
        with Bus(log=writer) as bus:
            bus.epoch_begin(0)
            with pytest.raises(EventError) as info:
                bus.publish(kind, **fields)
        assert (info.value.event, info.value.field) == (kind, field)
        assert [rec["kind"] for rec in writer.records] == ["header", "epoch_begin"]

    def test_publish_refuses_non_observations(self):
        """Decisions are made by plugins; the loop publishes observations only."""
        with pytest.raises(ValueError, match="observation"):
            Bus().publish(r.StopTraining(reason="x"))  # type: ignore[arg-type]


class TestDecisions:
    def test_decisions_are_stamped_recorded_and_applied(self):
        """The bus fills source, cause_seq and epoch, records, then sets stop_training."""
        writer = RecordingWriter()
        bus = Bus([StopAt(1)], log=writer)
        bus.epoch_end(0, {"loss": 1.0})
        assert not bus.stop_training
        (decision,) = bus.epoch_end(1, {"loss": 1.0})
        assert bus.stop_training
        assert (decision.source, decision.cause_seq, decision.epoch, decision.seq) == \
            ("StopAt", 2, 1, 3)
        assert writer.records[-1]["reason"] == "epoch 1 reached"

    def test_learning_rate_decisions_reach_the_model_and_the_logs(self):
        """set_learning_rate changes bus.learning_rate, the adapter's, and later epoch logs."""
        class Halve(Plugin):
            logs_learning_rate = True  # its rule reads the rate from the logs
            @hookimpl
            def on_epoch_end(self, event):
                lr = event.logs["learning_rate"]
                return r.SetLearningRate(value=lr / 2, previous=lr, reason="halve")

        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.4)
        writer = RecordingWriter()
        bus = Bus([Halve()], model=model, log=writer)
        bus.epoch_begin(0)
        bus.epoch_end(0, {"loss": 1.0})
        assert bus.learning_rate == model.learning_rate == 0.2
        bus.epoch_begin(1)
        epoch_logs = [rec["logs"]["learning_rate"] for rec in writer.records
                      if rec["kind"] in ("epoch_begin", "epoch_end")]
        assert epoch_logs == [0.4, 0.4, 0.2]

    @given(declares=st.lists(st.booleans(), max_size=4), rate=st.sampled_from([None, 0.25]),
           reported=st.booleans())
    def test_the_rate_is_in_epoch_logs_only_with_a_plugin_that_sets_it(self, declares, rate,
                                                                       reported):
        """Keras's rule: epoch logs carry ``learning_rate`` when a plugin on the bus declares
        ``logs_learning_rate`` and the run has a rate; a rate the loop reports is kept as
        reported either way; plugins get the logs the log holds."""
        seen: list[dict[str, float]] = []

        def plugin(declared: bool) -> object:
            class Watch(Plugin):
                logs_learning_rate = declared

                @hookimpl
                def on_epoch_end(self, event):
                    seen.append(dict(event.logs))
            return Watch()

        writer = RecordingWriter()
        with Bus([plugin(d) for d in declares], log=writer, learning_rate=rate) as bus:
            assert bus.logs_learning_rate == any(declares)
            bus.epoch_begin(0)
            bus.epoch_end(0, {"loss": 1.0, **({"learning_rate": 0.5} if reported else {})})
        expected = {"loss": 1.0}
        if reported:
            expected["learning_rate"] = 0.5
        elif rate is not None and any(declares):
            expected["learning_rate"] = rate
        for logs in [rec["logs"] for rec in writer.records if rec["kind"] == "epoch_end"] + seen:
            assert logs == expected

    def test_loop_changes_to_the_model_learning_rate_are_seen(self):
        """The model adapter is the source of truth for the learning rate."""
        model = NumpyModel({"w": np.zeros(1)}, learning_rate=0.1)
        bus = Bus(model=model, learning_rate=5.0)
        model.learning_rate = 0.05
        assert bus.learning_rate == 0.05

    def test_snapshot_and_restore_weights(self):
        """Weights kept at a snapshot come back on restore, and the restore is recorded."""
        class Best(Plugin):
            @hookimpl
            def on_epoch_end(self, event):
                if event.epoch == 0:
                    return r.SnapshotWeights(tag="best", reason="best so far")
                return None

            @hookimpl
            def on_train_end(self, event):
                return r.RestoreWeights(tag="best", reason="restore best")

        model = NumpyModel({"w": np.array([1.0, 2.0])})
        writer = RecordingWriter()
        bus = Bus([Best()], model=model, log=writer)
        bus.epoch_end(0)
        model.weights["w"] += 10
        bus.epoch_end(1)
        bus.train_end()
        np.testing.assert_array_equal(model.weights["w"], [1.0, 2.0])
        assert writer.kinds()[-2:] == ["restore_weights", "weights_restored"]

    def test_weights_decisions_without_a_model_are_warnings(self):
        """No model adapter: the decision is kept, a warning explains nothing happened."""
        class Snap(Plugin):
            @hookimpl
            def on_epoch_end(self, event):
                return r.SnapshotWeights(tag="x", reason="snap")

        writer = RecordingWriter()
        with pytest.warns(RunWarning, match="bus: snapshot_weights from 'Snap' needs a model"):
            Bus([Snap()], log=writer).epoch_end(0)
        assert writer.kinds()[-2:] == ["snapshot_weights", "warning"]
        assert "model adapter" in writer.records[-1]["message"]

    def test_decisions_are_published_to_on_decision_and_outcomes_recorded(self):
        """Sinks see decisions through on_decision; what they return is recorded."""
        class Saver(Plugin):
            side_effects = True

            @hookimpl
            def on_decision(self, decision):
                if decision.kind == "save_checkpoint":
                    return r.CheckpointSaved(path=decision.path, size=1, sha256="0" * 64)
                return None

        class Decide(Plugin):
            @hookimpl
            def on_epoch_end(self, event):
                return r.SaveCheckpoint(path=f"w{event.epoch}.h5", reason="every epoch")

        writer = RecordingWriter()
        Bus([Decide(), Saver()], log=writer).epoch_end(0)
        saved = writer.records[-1]
        assert saved["kind"] == "checkpoint_saved" and saved["source"] == "Saver"
        assert saved["cause_seq"] == writer.records[-2]["seq"]

    def test_augment_epoch_logs_adds_only_new_keys(self):
        """Plugins may add epoch metrics; what the loop reported wins."""
        class Adds(Plugin):
            @hookimpl
            def augment_epoch_logs(self, logs):
                return {"loss": 99.0, "extra": np.float32(1.5)}

        writer = RecordingWriter()
        Bus([Adds()], log=writer).epoch_end(0, {"loss": 0.5})
        assert writer.records[-1]["logs"] == {"loss": 0.5, "extra": 1.5}


class TestFailurePolicy:
    def test_raise_records_plugin_failed_then_raises_naming_plugin_and_event(self, tmp_path):
        """Default policy: the fault is recorded, flushed, then PluginError propagates."""
        path = tmp_path / "run.jsonl"
        bus = Bus([Boom()], log=path)
        bus.train_begin()
        with pytest.raises(PluginError, match=r"'Boom' failed on epoch_end \(seq 2\)") as info:
            bus.epoch_end(0, {"loss": 1.0})
        assert (info.value.plugin, info.value.event) == ("Boom", "epoch_end")
        assert isinstance(info.value.__cause__, RuntimeError)
        kinds = [rec.kind for rec in read_log(path)]
        assert kinds == ["header", "train_begin", "epoch_end", "plugin_failed"]
        bus.close()  # else its log file is left to the garbage collector (a ResourceWarning)

    def test_isolate_disables_the_plugin_and_training_goes_on(self):
        """on_plugin_error='isolate': recorded, warned, disabled; others keep running."""
        calls: list = []
        writer = RecordingWriter()
        bus = Bus([Boom(), Tracer("t", calls)], log=writer, on_plugin_error="isolate")
        with pytest.warns(PluginIsolatedWarning, match="Boom"):
            bus.epoch_end(0)
        bus.epoch_end(1)
        assert writer.kinds().count("plugin_failed") == 1
        assert calls == [("t", "epoch_end"), ("t", "epoch_end")]

    def test_a_failing_sink_never_stops_training(self):
        """Plugins with side effects are isolated whatever the policy, as sink_failed."""
        class BadSink(Boom):
            side_effects = True

        writer = RecordingWriter()
        bus = Bus([BadSink()], log=writer)
        with pytest.warns(SinkFailureWarning, match="BadSink on epoch_end: RuntimeError: boom"):
            bus.epoch_end(0)  # shown as it happens
        bus.epoch_end(1)
        assert writer.kinds().count("sink_failed") == 1
        with pytest.warns(SinkFailureWarning, match="1 sink failure.*BadSink"):
            bus.close()  # and in the run's summary

    @pytest.mark.parametrize("kind", ["epoch_end", "batch_end"])  # general path, fast path
    def test_a_failing_log_writer_is_recorded_in_the_others(self, kind):
        """A writer that raises is dropped; the other log records why; training goes on."""
        class Broken(RecordingWriter):
            name = "broken"

            def write(self, record):
                if record["kind"] == kind:
                    raise OSError("disk full")
                super().write(record)

        before, bad, after = RecordingWriter(), Broken(), RecordingWriter()
        bus = Bus(log=[before, bad, after])
        getattr(bus, kind)(0, {"loss": 1.0})
        getattr(bus, kind)(1, {"loss": 1.0})
        for good in (before, after):
            assert good.kinds() == ["header", kind, "sink_failed", kind]
            assert good.records[2]["sink"] == "broken"
            assert "disk full" in good.records[2]["message"]
        with pytest.warns(SinkFailureWarning):
            bus.close()

    def test_a_bad_metric_is_refused_and_nothing_recorded_is_lost(self, tmp_path):
        """The error names key, event and type; the event is not recorded; the log is intact."""
        path = tmp_path / "run.jsonl"
        bus = Bus(log=path)
        bus.epoch_end(0, {"loss": 1.0})
        with pytest.raises(MetricValueError, match=r"batch_end: logs\['loss'\].*str"):
            bus.batch_end(0, {"loss": "high"})
        bus.close()
        assert [rec.kind for rec in read_log(path)] == ["header", "epoch_end"]

    def test_a_plugin_returning_garbage_is_a_plugin_failure(self):
        """Returning something that is not a record is the plugin's fault, named as such."""
        class Garbage(Plugin):
            @hookimpl
            def on_epoch_end(self, event):
                return "stop please"

        with pytest.raises(PluginError, match="Garbage.*returned str"):
            Bus([Garbage()]).epoch_end(0)

    def test_bad_indices_are_refused(self):
        """Epoch and batch indices must be integers (numpy integers are fine)."""
        bus = Bus()
        bus.epoch_begin(np.int64(2))
        assert bus.epoch == 2
        with pytest.raises(ValueError, match="epoch must be an int"):
            bus.epoch_end(1.5)


class TestThreadsAndClose:
    def test_report_from_another_thread_is_recorded_on_the_bus_thread(self):
        """bus.report() queues an outcome; it is recorded at the next event."""
        writer = RecordingWriter()
        bus = Bus(log=writer)
        bus.epoch_end(0)
        thread = threading.Thread(target=bus.report, args=(
            r.Warning(source="http", message="3 requests failed"),))
        thread.start()
        thread.join()
        with pytest.warns(RunWarning, match="http: 3 requests failed"):
            bus.epoch_end(1)
        assert writer.kinds() == ["header", "epoch_end", "warning", "epoch_end"]

    def test_close_is_idempotent_and_closes_writers(self):
        """close() twice is fine; writers are closed once."""
        writer = RecordingWriter()
        with Bus(log=writer) as bus:
            bus.train_begin()
        bus.close()
        assert writer.closed

    def test_on_close_outcomes_are_recorded(self):
        """What a sink returns from on_close (e.g. a delivery report) is in the log."""
        class Reporter(Plugin):
            side_effects = True

            @hookimpl
            def on_close(self):
                return r.Warning(message="2 payloads undelivered", details={"undelivered": 2})

        writer = RecordingWriter()
        with pytest.warns(RunWarning, match="Reporter: 2 payloads undelivered"):
            Bus([Reporter()], log=writer).close()
        assert writer.records[-1]["details"] == {"undelivered": 2}
        assert writer.records[-1]["source"] == "Reporter"

    def test_nonfinite_metrics_survive_the_bus_and_the_log(self, tmp_path):
        """NaN and infinities pass through the hot path into the log and back."""
        path = tmp_path / "run.jsonl"
        with Bus(log=path) as bus:
            bus.batch_end(0, {"loss": math.nan, "grad": math.inf})
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            (_, event) = list(read_log(path))
        assert math.isnan(event.logs["loss"]) and event.logs["grad"] == math.inf


class LineAware(RecordingWriter):
    """A sink with the JSON Lines fast path: batch records may come as encoded lines."""

    def __init__(self):
        super().__init__()
        self.line_buffer = bytearray()

    def lines(self) -> list[dict]:
        return [orjson.loads(line) for line in self.line_buffer.splitlines()]


#: What a loop may pass as a metric: Python and NumPy numbers, NaN and infinities included.
batch_values = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**6, 10**6)
                | st.floats(width=32).map(np.float32) | st.floats().map(np.float64))


class TestBatchFastPath:
    """batch_end's inlined path must record exactly what the general path would."""

    @given(st.dictionaries(st.text(min_size=1, max_size=6), batch_values, max_size=4))
    def test_only_all_finite_float_records_skip_the_writers_check(self, logs):
        """A sink's line buffer gets a record only when every value is a finite Python float;
        any other goes through its write, which checks."""
        writer = LineAware()
        bus = Bus(log=writer)
        bus.batch_end(0, logs)
        lines = writer.lines()
        (record,) = lines + [rec for rec in writer.records if rec["kind"] == "batch_end"]
        assert all(type(v) is float for v in record["logs"].values())  # whatever came in
        plain_finite = all(type(v) is float and math.isfinite(v) for v in logs.values())
        assert bool(lines) == plain_finite
        assert tuple(record) == r.BATCH_FIELDS

    @given(st.lists(st.dictionaries(st.text(min_size=1, max_size=6), batch_values, max_size=3),
                    min_size=1, max_size=5))
    def test_the_log_reads_back_what_was_published(self, tmp_path_factory, batches):
        """Through both write paths of the JSON Lines and Parquet writers, every value comes
        back (NaN included), with its record's envelope."""
        folder = tmp_path_factory.mktemp("fast")
        paths = [folder / "run.jsonl", folder / "run.parquet"]
        with Bus(log=paths) as bus:
            bus.epoch_begin(3)
            for i, logs in enumerate(batches):
                bus.batch_end(i, logs)
        for path in paths:
            read = [rec for rec in read_log(path) if rec.kind == "batch_end"]
            assert len(read) == len(batches)
            assert [(rec.epoch, rec.batch, rec.step) for rec in read] == [
                (3, i, i) for i in range(len(batches))]
            assert [rec.seq for rec in read] == list(range(2, 2 + len(batches)))
            for rec, logs in zip(read, batches):
                assert rec.logs.keys() == logs.keys()
                for key, value in logs.items():
                    got, want = rec.logs[key], float(value)
                    assert got == want or (math.isnan(got) and math.isnan(want))

    def test_every_json_lines_log_gets_the_same_lines_and_is_flushed_as_it_fills(self, tmp_path):
        """One encoding feeds both logs; a full buffer is written out during the epoch."""
        from eventbus.jsonl import JsonlWriter

        first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
        small = JsonlWriter(second, buffer_bytes=4096)
        bus = Bus(log=[first, small])
        bus.epoch_begin(0)
        for i in range(200):
            bus.batch_end(i, {"loss": 1.0 / (i + 1)})
        # 200 lines of ~170 bytes overflow 4 KiB: most of them are on disk before any flush.
        assert second.stat().st_size > 200 * 100
        bus.close()
        lines = [path.read_bytes().splitlines() for path in (first, second)]
        assert lines[0] == lines[1]
        assert len(lines[0]) == 202  # header, epoch_begin, 200 batches

    @pytest.mark.parametrize("failing_first", [True, False])
    def test_a_failing_writer_beside_a_json_lines_log_costs_it_nothing(self, tmp_path,
                                                                       failing_first):
        """The JSON Lines log has its line already: a failure elsewhere does not repeat it."""
        class Broken(RecordingWriter):
            name = "broken"

            def write(self, record):
                if record["kind"] == "batch_end":
                    raise OSError("disk full")
                super().write(record)

        path, memory = tmp_path / "run.jsonl", RecordingWriter()
        logs = [Broken(), path, memory]
        bus = Bus(log=logs if failing_first else logs[1:] + logs[:1])
        bus.batch_end(0, {"loss": 1.0})
        bus.batch_end(1, {"loss": 0.5})
        with pytest.warns(SinkFailureWarning, match="broken.*disk full"):
            bus.close()
        kinds = [rec.kind for rec in read_log(path)]
        assert kinds == ["header", "batch_end", "sink_failed", "batch_end"]
        assert memory.kinds() == kinds

    def test_an_index_beyond_64_bits_is_refused_before_anything_is_recorded(self, tmp_path):
        path = tmp_path / "run.jsonl"
        with Bus(log=path) as bus:
            bus.batch_end(0, {"loss": 1.0})
            for bad in (2**70, -1):
                with pytest.raises(EventError, match="batch_end: batch must be 0 or more"):
                    bus.batch_end(bad, {"loss": 1.0})
            bus.batch_end(1, {"loss": 1.0})
        assert [(r.kind, r.seq) for r in read_log(path)] == [
            ("header", 0), ("batch_end", 1), ("batch_end", 2)]

    def test_a_reason_no_utf8_spells_is_written_escaped(self, tmp_path):
        """A decision whose reason holds a lone surrogate (no UTF-8 spells it, as in a path
        ``os.fsdecode`` made): the JSON Lines writer writes the surrogate as a backslash
        escape and stays on (before, it failed the record and was dropped for the run)."""
        class Odd(Plugin):
            @hookimpl
            def on_epoch_end(self, event):
                return r.StopTraining(reason="odd \ud800")

        path = tmp_path / "run.jsonl"
        with Bus([Odd()], log=path) as bus:
            for i in range(3):
                bus.batch_end(i, {"loss": 1.0})
            bus.epoch_end(0, {"loss": 1.0})
        assert bus.failures == []
        records = list(read_log(path))
        assert [x.kind for x in records] == ["header", *["batch_end"] * 3, "epoch_end",
                                             "stop_training"]
        assert records[-1].reason == "odd \\ud800"

    def test_a_plugin_mutating_logs_does_not_change_the_log(self, tmp_path):
        """The line is written before plugins run, and the loop's own dict is never kept."""
        class Vandal(Plugin):
            @hookimpl
            def on_batch_end(self, event):
                event.logs["loss"] = -1.0

        path = tmp_path / "run.jsonl"
        mine = {"loss": 0.5}
        with Bus([Vandal()], log=path) as bus:
            bus.batch_end(0, mine)
        assert mine == {"loss": 0.5}
        (_, event) = list(read_log(path))
        assert event.logs == {"loss": 0.5}


class TestAbort:
    def test_abort_training_goes_through_isolation(self):
        """A plugin raising AbortTraining ends the run even under on_plugin_error='isolate'."""
        from eventbus import AbortTraining

        class Abort(Plugin):
            @hookimpl
            def on_batch_end(self, event):
                raise AbortTraining("loss is NaN")

        writer = RecordingWriter()
        bus = Bus([Abort()], log=writer, on_plugin_error="isolate")
        with pytest.raises(AbortTraining, match="NaN"):
            bus.batch_end(0, {"loss": math.nan})
        assert writer.kinds()[-1] == "plugin_failed"


class TestWritersAndFailures:
    def test_a_sink_is_opened_with_the_run_before_its_first_record(self):
        """Sinks learn the run (to report from a background thread, say) before any record;
        one added once the run has started is opened at once."""
        class Opened(RecordingWriter):
            run = None
            before: list | None = None

            def open(self, run):
                self.run, self.before = run, list(self.records)

        writer = Opened()
        bus = Bus(log=[writer])
        assert writer.run is None
        bus.epoch_begin(0)
        assert writer.run is bus.run and writer.before == []
        later = Opened()
        bus.add_sink(later)
        assert later.run is bus.run

    def test_faults_count_however_they_arrive(self):
        """A sink_failed returned from a hook is a failure like a raised one."""
        class Returns(Plugin):
            side_effects = True

            @hookimpl
            def on_close(self):
                return r.SinkFailed(sink="mine", error="OSError", message="disk full")

        bus = Bus([Returns()])
        with pytest.warns(SinkFailureWarning, match="disk full"):
            bus.close()
        assert [f.sink for f in bus.failures] == ["mine"]


class TestUnsubscribe:
    def test_unsubscribed_hooks_are_never_called(self):
        """Plugin.unsubscribe() in __init__ drops hooks this configuration does not need."""
        calls: list = []

        class Maybe(Plugin):
            def __init__(self, per_batch: bool):
                if not per_batch:
                    self.unsubscribe("on_batch_end")

            @hookimpl
            def on_batch_end(self, event):
                calls.append("batch")

            @hookimpl
            def on_epoch_end(self, event):
                calls.append("epoch")

        bus = Bus([Maybe(per_batch=False)])
        assert bus.subscribers("batch_end") == []
        bus.batch_end(0, {"loss": 1.0})
        bus.epoch_end(0)
        Bus([Maybe(per_batch=True)]).batch_end(0, {"loss": 1.0})
        assert calls == ["epoch", "batch"]


class TestOutsideDecisions:
    def test_a_decision_before_any_event_comes_after_the_header(self):
        """The header is written first, with the earlier time, whatever record comes first."""
        writer = RecordingWriter()
        Bus(log=writer).decide(r.StopTraining(reason="stopped before it began"))
        assert [(rec["seq"], rec["kind"]) for rec in writer.records] == [
            (0, "header"), (1, "stop_training")]
        assert writer.records[0]["time"] <= writer.records[1]["time"]

    def test_decide_records_and_applies_a_decision_from_outside(self):
        """bus.decide() is the path for decisions no plugin made (a coordinator, a person)."""
        seen = []

        class Watcher(Plugin):
            @hookimpl
            def on_decision(self, decision):
                seen.append(decision.kind)

        writer = RecordingWriter()
        bus = Bus([Watcher()], log=writer)
        bus.epoch_begin(3)
        stamped = bus.decide(r.StopTraining(reason="stopped by hand"))
        assert bus.stop_training and seen == ["stop_training"]
        assert (stamped.source, stamped.epoch, stamped.seq) == ("bus", 3, 2)
        assert writer.records[-1]["reason"] == "stopped by hand"

    def test_record_writes_an_outcome_now(self):
        """bus.record() puts an outcome in the log at once (report() waits for an event)."""
        writer = RecordingWriter()
        bus = Bus(log=writer)
        with pytest.warns(RunWarning, match="bus: rank 1 never answered"):
            bus.record(r.Warning(message="rank 1 never answered"))
        assert writer.kinds() == ["header", "warning"] and writer.flushes >= 1
        with pytest.raises(ValueError, match="outcome"):
            bus.record(r.StopTraining(reason="x"))  # type: ignore[arg-type]


def test_a_new_fit_starts_unstopped_and_a_resumed_stop_stands(tmp_path):
    """train_begin clears stop_training, as Keras's fit clears model.stop_training, so a
    second fit on one bus trains; resuming gives the stop of the last fit in the log."""
    path = tmp_path / "run.jsonl"

    def fit(bus):
        bus.train_begin({})
        bus.epoch_begin(0)
        bus.epoch_end(0, {"loss": 1.0})
        assert bus.stop_training

    with Bus([StopAt(0)], log=path) as bus:
        fit(bus)
        bus.train_end()
        bus.train_begin({})
        assert not bus.stop_training
    with Bus([StopAt(0)], log=path, resume=True) as resumed:
        assert not resumed.stop_training  # the second fit had not stopped
        resumed.train_begin({})  # the log has it: not published again
        fit(resumed)
    with Bus([StopAt(0)], log=path, resume=True) as again:
        assert again.stop_training  # the last fit in the log stopped



class TestFastPathFailures:
    def test_a_line_sink_whose_flush_fails_is_a_sink_failure_not_an_exception(self):
        """The JSON Lines fast path flushes a full buffer during batch_end: a failure there is
        a sink_failed like any other write failure, never an OSError out of batch_end."""
        class Failing(LineAware):
            name = "failing"
            buffer_bytes = 64

            def flush(self):
                if len(self.line_buffer) >= self.buffer_bytes:
                    raise OSError(28, "No space left on device")

        memory, failing = RecordingWriter(), Failing()
        bus = Bus(log=[failing, memory])
        bus.epoch_begin(0)
        for i in range(200):  # the buffer is checked every 64 records
            bus.batch_end(i, {"loss": 1.0})
        with pytest.warns(SinkFailureWarning, match="failing.*No space left"):
            bus.close()
        faults = [rec for rec in memory.records if rec["kind"] == "sink_failed"]
        assert [(f["sink"], f["event"]) for f in faults] == [("failing", "batch_end")]
        assert sum(rec["kind"] == "batch_end" for rec in memory.records) == 200


class TestCheckedBatchPath:
    class Checked:
        """A sink with the checked-record fast path, noting which way each record came."""

        name = "checked"

        def __init__(self, fail_at: int | None = None, give_at: int | None = None):
            self.ways: list[tuple[str, int]] = []
            self.fail_at, self.give_at = fail_at, give_at

        def write(self, record):
            self.ways.append(("write", record["seq"]))

        def write_finite(self, record):
            assert list(record) == list(r.BATCH_FIELDS)  # what the fast path may rely on
            self.ways.append(("finite", record["seq"]))
            if record["batch"] == self.fail_at:
                raise OSError(5, "Input/output error")
            if record["batch"] == self.give_at:
                return r.Warning(message="seen")
            return None

        def flush(self):
            pass

        def close(self):
            pass

    def test_checked_batch_records_take_write_finite_and_others_write(self):
        """A batch_end whose metrics are finite floats goes to write_finite; one holding a NaN
        (which the sink must check itself) to write; every other record to write."""
        sink = self.Checked()
        bus = Bus(log=[sink])
        bus.epoch_begin(0)
        bus.batch_end(0, {"loss": 1.0})
        bus.batch_end(1, {"loss": float("nan")})
        bus.epoch_end(0, {})
        bus.close()
        # The header, epoch_begin, the two batches, epoch_end: in seq order, each once.
        assert [way for way, _ in sink.ways][:5] == ["write", "write", "finite", "write", "write"]
        seqs = [seq for _, seq in sink.ways]
        assert seqs == sorted(set(seqs))

    def test_a_failing_or_answering_fast_path_is_settled_and_the_next_sink_still_writes(self):
        """write_finite that raises is a sink_failed, one that returns records has them
        recorded, and the sinks after it get the record, once."""
        failing, answering, memory = self.Checked(fail_at=1), self.Checked(give_at=2), \
            RecordingWriter()
        answering.name = "answering"
        bus = Bus(log=[failing, answering, memory])
        bus.epoch_begin(0)
        with pytest.warns(RunWarning, match="answering: seen"):
            for i in range(4):
                bus.batch_end(i, {"loss": 1.0})
        with pytest.warns(SinkFailureWarning, match="checked.*Input/output error"):
            bus.close()
        assert [way for way, _ in failing.ways] == ["write", "write", "finite", "finite"]
        assert [way for way, _ in answering.ways].count("finite") == 4
        kinds = [rec["kind"] for rec in memory.records]
        assert kinds.count("batch_end") == 4
        assert kinds.count("sink_failed") == 1 and kinds.count("warning") == 1


class TestFileDescriptors:
    def test_a_log_that_cannot_be_written_lets_its_file_go(self, tmp_path):
        """A JSON Lines writer whose last flush fails still closes its file: no descriptor,
        no lock left behind (a second writer may take the path)."""
        from eventbus.jsonl import JsonlWriter

        path = tmp_path / "run.jsonl"
        writer = JsonlWriter(path)
        writer.write({"v": 1, "kind": "header"})
        fd = writer._file.fileno()  # noqa: SLF001 - the descriptor is what the test is about
        os.close(fd)  # the file's descriptor goes bad underneath: every write fails
        with pytest.raises(OSError):
            writer.close()
        assert writer._file.closed  # noqa: SLF001
        JsonlWriter(path).close()  # the path is free
