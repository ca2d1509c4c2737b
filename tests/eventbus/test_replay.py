"""Replay: the log rebuilds the run's plugins and reproduces their decisions; what-if; verify."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, Plugin, ReplayError, hookimpl, replay
from eventbus import records as r
from eventbus.errors import ConfigError, LogError
from eventbus.registry import Registry
from eventbus.replay import effective_records, replay_each

finite = st.floats(0, 10, allow_nan=False)


class Patience(Plugin):
    """A small deterministic plateau rule: stop after `patience` epochs without improvement,
    and halve the learning rate on each one."""
    logs_learning_rate = True  # its rule reads the rate from the logs

    def __init__(self, patience: int = 2, monitor: str = "val_loss"):
        self.patience = patience
        self.monitor = monitor
        self.best = math.inf
        self.wait = 0

    @hookimpl
    def on_epoch_end(self, event):
        value = event.logs.get(self.monitor)
        if value is None:
            return r.Warning(message=f"{self.monitor} missing", details={"keys": list(event.logs)})
        if value < self.best:
            self.best, self.wait = value, 0
            return None
        self.wait += 1
        lr = event.logs.get("learning_rate")
        out = [r.SetLearningRate(value=lr / 2, previous=lr, reason="plateau",
                                 evidence={"wait": self.wait})] if lr is not None else []
        if self.wait >= self.patience:
            out.append(r.StopTraining(reason=f"{self.monitor} did not improve on {self.best} "
                                             f"for {self.wait} epochs", code="patience_exhausted",
                                      evidence={"best": self.best, "wait": self.wait}))
        return out


class Cut(Plugin):
    """Cuts the rate it reads from the epoch's logs by ``factor`` at every epoch end."""

    logs_learning_rate = True  # its rule reads the rate from the logs

    def __init__(self, factor: float = 0.5):
        self.factor = factor

    @hookimpl
    def on_epoch_end(self, event):
        lr = event.logs["learning_rate"]
        return r.SetLearningRate(value=lr * self.factor, previous=lr, reason="cut")


class Sink(Plugin):
    side_effects = True

    @hookimpl
    def on_epoch_end(self, event):
        raise AssertionError("sinks are never replayed")


@pytest.fixture()
def registry():
    reg = Registry(group="eventbus-tests-none")
    reg.register(Patience)
    reg.register(Sink)
    return reg


def train(path, values, plugins, lr=0.1, decay=None):
    """A run of ``values``; ``decay``: the loop's own scheduler, which multiplies the rate by
    ``decay[epoch - 1]`` (or ``decay``) before each epoch after the first."""
    with Bus(plugins, log=path, learning_rate=lr) as bus:
        bus.train_begin({"epochs": len(values)})
        for epoch, value in enumerate(values):
            if decay is not None and epoch > 0:
                factor = decay[epoch - 1] if isinstance(decay, list) else decay
                bus.learning_rate = bus.learning_rate * factor
            bus.epoch_begin(epoch)
            bus.batch_end(0, {"loss": value})
            bus.epoch_end(epoch, {"val_loss": value})
            if bus.stop_training:
                break
        bus.train_end()
    return bus


class TestReplay:
    @given(values=st.lists(finite, min_size=1, max_size=15), patience=st.integers(1, 4))
    def test_replay_reproduces_the_recorded_decisions(self, tmp_path_factory, values, patience):
        """Plugins rebuilt from the header make exactly the recorded decisions."""
        reg = Registry(group="eventbus-tests-none")
        reg.register(Patience)
        path = tmp_path_factory.mktemp("replay") / "run.jsonl"
        train(path, values, [Patience(patience=patience)])
        result = replay(path, verify=True, registry=reg)
        assert result.ok, result.mismatch
        assert len(result.decisions) == len(result.recorded)
        assert result.diverged_at is None

    @given(values=st.lists(finite, min_size=1, max_size=12),
           patiences=st.lists(st.integers(1, 4), min_size=1, max_size=4))
    def test_replaying_each_variant_in_one_read_is_replaying_each_alone(
            self, tmp_path_factory, values, patiences):
        """A sweep reads the log once; each of its replays is the replay of that variant."""
        reg = Registry(group="eventbus-tests-none")
        reg.register(Patience)
        path = tmp_path_factory.mktemp("sweep") / "run.jsonl"
        train(path, values, [Patience(patience=2)])
        variants = [{"Patience": {"patience": p}} for p in patiences]
        together = replay_each(path, variants, verify=True, registry=reg)
        for variant, result in zip(variants, together, strict=True):
            alone = replay(path, overrides=variant, verify=True, registry=reg)
            assert [(d.kind, d.reason, d.epoch) for d in result.decisions] == \
                [(d.kind, d.reason, d.epoch) for d in alone.decisions]
            assert (result.stopped_at, result.diverged_at, result.ok) == \
                (alone.stopped_at, alone.diverged_at, alone.ok)
            assert result.plugins[0].patience == variant["Patience"]["patience"]

    def test_a_plugin_changing_an_events_logs_does_not_reach_the_other_variants(self,
                                                                               tmp_path):
        """Plugins may add to event.logs (Keras's callbacks may); side-by-side replays do not
        see each other's additions."""

        class Scribble(Plugin):
            def __init__(self, mark: str = "a"):
                self.mark = mark
                self.seen: list[list[str]] = []

            @hookimpl
            def on_epoch_end(self, event):
                self.seen.append(sorted(event.logs))
                event.logs[f"scribbled_{self.mark}"] = 1.0

            @hookimpl
            def on_batch_end(self, event):
                self.seen.append(sorted(event.logs))
                event.logs[f"scribbled_{self.mark}"] = 1.0

        reg = Registry(group="eventbus-tests-none")
        reg.register(Scribble)
        path = tmp_path / "run.jsonl"
        train(path, [1.0, 0.5, 0.7], [Scribble()])
        variants = [{"Scribble": {"mark": mark}} for mark in "xyz"]
        together = replay_each(path, variants, registry=reg)
        for variant, result in zip(variants, together, strict=True):
            alone = replay(path, overrides=variant, registry=reg)
            assert result.plugins[0].seen == alone.plugins[0].seen
            assert all(not any(k.startswith("scribbled") for k in keys)
                       for keys in result.plugins[0].seen)

    def test_instances_are_not_shared_between_variants(self, tmp_path, registry):
        path = tmp_path / "run.jsonl"
        train(path, [1.0, 1.0], [Patience()])
        with pytest.raises(ReplayError, match="shared by the replays"):
            replay_each(path, [{}, {}], plugins=[Patience()], registry=registry)

    def test_parquet_logs_replay_too(self, tmp_path, registry):
        """Replay reads either format."""
        values = [1.0, 0.5, 0.6, 0.7, 0.8]
        train([tmp_path / "run.jsonl", tmp_path / "run.parquet"], values, [Patience()])
        result = replay(tmp_path / "run.parquet", verify=True, registry=registry)
        assert result.ok and result.stopped_at == 3

    def test_plugins_see_what_they_saw_live_though_unseen_kinds_are_not_built(self, tmp_path):
        """Replay builds no record of a kind no plugin subscribes to; a plugin subscribing to
        one still gets every one, and bus.step at each epoch end is what it was live."""

        class Watcher(Plugin):
            def __init__(self, kinds=("epoch_end",)):
                self.kinds = list(kinds)
                self.seen: list[tuple] = []
                self.bus = None
                for hook in ("on_batch_begin", "on_test_batch_end"):
                    if hook[3:] not in self.kinds:
                        self.unsubscribe(hook)

            @hookimpl
            def on_attach(self, bus):
                self.bus = bus

            @hookimpl
            def on_batch_begin(self, event):
                self.seen.append(("batch_begin", event.seq, self.bus.step))

            @hookimpl
            def on_test_batch_end(self, event):
                self.seen.append(("test_batch_end", event.seq, self.bus.step))

            @hookimpl
            def on_epoch_end(self, event):
                self.seen.append(("epoch_end", event.seq, self.bus.step))

        path = tmp_path / "run.jsonl"
        for kinds in (["epoch_end"], ["epoch_end", "batch_begin", "test_batch_end"]):
            live = Watcher(kinds)
            with Bus([live], log=path) as bus:
                bus.train_begin()
                for epoch in range(2):
                    bus.epoch_begin(epoch)
                    for batch in range(3):
                        bus.batch_begin(batch)
                        bus.batch_end(batch, {"loss": 1.0})
                    bus.test_begin()
                    bus.test_batch_end(0, {"loss": 1.0})
                    bus.test_end({"loss": 1.0})
                    bus.epoch_end(epoch, {"loss": 1.0})
                bus.train_end()
            again = Watcher(kinds)
            replay(path, plugins=[again])
            assert again.seen == live.seen
            assert [seen[0] for seen in live.seen].count("epoch_end") == 2
            assert live.seen[-1][2] == 6

    def test_what_if_with_overrides(self, tmp_path, registry):
        """overrides answer 'would patience=3 have stopped later?' from the same log."""
        path = tmp_path / "run.jsonl"
        train(path, [1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95], [Patience(patience=4)])
        result = replay(path, overrides={"Patience": {"patience": 2}}, registry=registry)
        assert result.recorded_stop == 5
        assert result.stopped_at == 3

    def test_verify_reports_the_first_difference(self, tmp_path, registry):
        """verify=True with other parameters points at the first decision that differs."""
        path = tmp_path / "run.jsonl"
        train(path, [1.0, 0.5, 0.6, 0.7, 0.8], [Patience(patience=3)])
        result = replay(path, overrides={"Patience": {"patience": 2}}, verify=True,
                        registry=registry)
        assert not result.ok
        assert result.mismatch.index == 2
        assert "stop_training" in str(result.mismatch)

    def test_a_changed_learning_rate_marks_where_the_replay_diverges(self, tmp_path):
        """Once a replayed learning-rate decision differs, the later metrics are another run's."""
        reg = Registry(group="eventbus-tests-none")
        reg.register(Cut)
        path = tmp_path / "run.jsonl"
        train(path, [1.0, 0.9, 0.8], [Cut()])
        assert replay(path, registry=reg, verify=True).diverged_at is None
        result = replay(path, overrides={"Cut": {"factor": 0.1}}, registry=reg)
        epoch_begins = [rec for rec in effective_records(
            __import__("eventbus").read_log(path)) if rec.kind == "epoch_begin"]
        assert result.diverged_at == epoch_begins[1].seq
        assert [d.value for d in result.decisions] == pytest.approx([0.01, 0.001, 0.0001])

    def test_a_rate_the_loop_moved_itself_is_the_rate_replayed(self, tmp_path, registry):
        """A loop whose own scheduler moves the rate between epochs: the replayed plugins see
        the rate the live ones saw (the epochs' logged rate), so verify passes, exactly."""
        path = tmp_path / "run.jsonl"
        train(path, [1.0, 0.9, 0.95, 0.97, 0.8], [Patience(patience=4)], lr=0.1, decay=0.9)
        result = replay(path, registry=registry, verify=True)
        assert result.ok, result.mismatch
        assert result.diverged_at is None
        assert [d.value for d in result.decisions if d.kind == "set_learning_rate"] == \
            [d.value for d in result.recorded if d.kind == "set_learning_rate"] == \
            pytest.approx([0.1 * 0.9 ** 2 / 2, (0.1 * 0.9 ** 2 / 2) * 0.9 / 2])

    @given(values=st.lists(finite, min_size=1, max_size=12), patience=st.integers(1, 4),
           decay=st.lists(st.floats(0.01, 2.0), min_size=11, max_size=11))
    def test_any_schedule_of_the_loop_s_own_replays_exactly(self, values, patience, decay):
        """Whatever factors the loop moves its rate by, replay makes the recorded decisions."""
        import tempfile

        reg = Registry(group="eventbus-tests-none")
        reg.register(Patience)
        with tempfile.TemporaryDirectory() as directory:
            path = f"{directory}/run.jsonl"
            train(path, values, [Patience(patience=patience)], decay=decay)
            result = replay(path, registry=reg, verify=True)
        assert result.ok, result.mismatch
        assert result.diverged_at is None

    def test_a_what_if_moves_its_rate_as_the_loop_moved_the_recorded_one(self, tmp_path):
        """Once a what-if's rate leaves the recorded one, the loop's own moves are applied to
        it by the same factor: the estimate a schedule that scales its rate would give."""
        reg = Registry(group="eventbus-tests-none")
        reg.register(Cut)
        path = tmp_path / "run.jsonl"
        train(path, [1.0, 0.9, 0.8], [Cut()], lr=1.0, decay=0.9)
        exact = replay(path, registry=reg, verify=True)
        assert exact.ok and exact.diverged_at is None
        result = replay(path, overrides={"Cut": {"factor": 0.1}}, registry=reg)
        epoch_begins = [rec for rec in effective_records(
            __import__("eventbus").read_log(path)) if rec.kind == "epoch_begin"]
        assert result.diverged_at == epoch_begins[1].seq
        # 1.0 cut to 0.1; the loop's 0.9 makes it 0.09, cut to 0.009; then 0.0081, 0.00081.
        assert [d.value for d in result.decisions] == pytest.approx([0.1, 0.009, 0.00081])

    def test_side_effect_plugins_are_left_out(self, tmp_path, registry):
        """Loggers and sinks are not rebuilt: replay writes nothing."""
        path = tmp_path / "run.jsonl"
        bus = Bus([Patience()], log=path)
        bus.register(Sink())  # would raise on epoch_end if replayed...
        bus.train_begin()
        bus.close()
        result = replay(path, registry=registry)
        assert [type(p) for p in result.plugins] == [Patience]

    def test_overrides_of_a_side_effect_plugin_are_refused(self, tmp_path, registry):
        """Replay leaves sinks out, so an override of one would change nothing: an error
        naming the plugin and the parameter, not a silent no-op."""
        path = tmp_path / "run.jsonl"
        bus = Bus([Patience()], log=path)
        bus.register(Sink())
        bus.train_begin()
        bus.close()
        with pytest.raises(ReplayError, match=r"does not run Sink: it has side effects.*"
                                              r"Sink\.flush_every would change nothing.*"
                                              r"replay runs are Patience"):
            replay(path, overrides={"Sink": {"flush_every": 3}}, registry=registry)
        with pytest.raises(ReplayError, match="does not run Sink"):
            replay_each(path, [{}, {"Sink": {"flush_every": 3}}], registry=registry)
        assert replay(path, overrides={"Sink": {}}, registry=registry).ok  # nothing changed

    def test_overrides_of_a_plugin_that_now_has_side_effects_are_refused(self, tmp_path):
        """Recorded as a decision plugin, registered now as a sink: the bus would not feed
        it, so its overrides are refused too."""
        path = tmp_path / "run.jsonl"
        train(path, [1.0, 0.5], [Patience()])

        class NowASink(Patience):
            name = "Patience"
            side_effects = True

        reg = Registry(group="eventbus-tests-none")
        reg.register(NowASink)
        with pytest.raises(ReplayError, match=r"does not run Patience.*Patience\.patience"):
            replay(path, overrides={"Patience": {"patience": 1}}, registry=reg)

    def test_overrides_of_an_added_instance_are_refused(self, tmp_path, registry):
        """An instance not in the log is configured directly; an override of it is an error."""
        class Extra(Plugin):
            def __init__(self, level: int = 1):
                self.level = level

        path = tmp_path / "run.jsonl"
        train(path, [1.0], [Patience()])
        with pytest.raises(ReplayError, match="'Extra'.*configure it directly"):
            replay(path, plugins=[Extra()], overrides={"Extra": {"level": 2}},
                   registry=registry)

    def test_a_plugin_without_parameters_says_it_takes_none(self, tmp_path, registry):
        """Not "its parameters are " followed by nothing."""
        class Bare(Plugin):
            @hookimpl
            def on_epoch_end(self, event):
                return None

        registry.register(Bare)
        path = tmp_path / "run.jsonl"
        train(path, [1.0], [Bare()])
        with pytest.raises(ReplayError, match=r"^Bare has no parameter 'foo'; it takes no "
                                              r"parameters$"):
            replay(path, overrides={"Bare": {"foo": 1}}, registry=registry)

    @pytest.mark.parametrize("overrides,match", [
        ({"Patience": 3}, r"replay: overrides\['Patience'\] must be a mapping of parameter "
                          r"name to value, e\.g\. \{'patience': 3\}; got int 3"),
        (["Patience"], r"replay: overrides must be a mapping of plugin name to parameters, "
                       r"e\.g\. .*; got list \['Patience'\]"),
        ("Patience.patience=3", r"replay: overrides must be a mapping .*; got str "),
        ({5: {"patience": 3}}, r"replay: overrides is keyed by plugin name .*got the key 5"),
        ({"Patience": {1: 2}}, r"overrides\['Patience'\] is keyed by parameter name .*key 1"),
    ])
    def test_overrides_of_the_wrong_shape_are_named(self, tmp_path, registry, overrides,
                                                    match):
        """Not a bare TypeError or "dictionary update sequence" ValueError."""
        path = tmp_path / "run.jsonl"
        train(path, [1.0], [Patience()])
        with pytest.raises(ConfigError, match=match) as caught:
            replay(path, overrides=overrides, registry=registry)
        assert caught.value.field == "overrides"

    @pytest.mark.parametrize("plugins,match", [
        ("Patience", r"replay: plugins must be a list of plugin instances.*got str 'Patience'"
                     r".*use overrides="),
        ([5], r"replay: plugins\[0\] is int 5, not a plugin"),
        ([None], r"replay: plugins\[0\] is NoneType None, not a plugin"),
        ([Patience], r"replay: plugins\[0\] is the class Patience; pass an instance"),
        (5, r"replay: plugins must be a list of plugin instances.*got int 5"),
    ])
    def test_plugins_that_are_not_instances_are_named(self, tmp_path, registry, plugins,
                                                      match):
        """Not "plugin 'str' is already on this bus", and not accepted silently."""
        path = tmp_path / "run.jsonl"
        train(path, [1.0], [Patience()])
        with pytest.raises(ConfigError, match=match) as caught:
            replay(path, plugins=plugins, registry=registry)
        assert caught.value.field == "plugins"

    @pytest.mark.parametrize("log", [None, 5, b"run.jsonl", {"kind": "header"}])
    def test_a_log_that_is_neither_a_path_nor_records_is_named(self, log):
        """Not "'NoneType' object is not iterable"."""
        with pytest.raises(ConfigError, match=r"^replay: log must be a path \(str or "
                                              r"pathlib\.Path\)") as caught:
            replay(log)
        assert caught.value.field == "log"

    def test_records_that_are_not_records_are_named(self, tmp_path, registry):
        """An item that is not a record, or one record alone, is named."""
        path = tmp_path / "run.jsonl"
        train(path, [1.0], [Patience()])
        header = next(iter(__import__("eventbus").read_log(path)))
        with pytest.raises(ConfigError, match=r"replay: log item 1 is dict"):
            replay([header, {"kind": "train_begin"}], registry=registry)
        with pytest.raises(ConfigError, match=r"replay: log is one 'header' record"):
            replay(header, registry=registry)

    def test_no_records_are_not_an_event_log(self, registry):
        """An empty list has no header: a LogError, not an IndexError."""
        with pytest.raises(LogError, match="the records given: not an event log"):
            replay([], registry=registry)

    @pytest.mark.parametrize("variants,match", [
        ("patience", r"replay_each: variants must be a list of overrides"),
        ({"Patience": {"patience": 1}}, r"replay_each: variants must be a list of overrides"),
        ([{}, 3], r"replay_each: variants\[1\] must be a mapping of plugin name"),
    ])
    def test_variants_of_the_wrong_shape_are_named(self, tmp_path, registry, variants, match):
        """replay_each checks each variant as replay checks overrides."""
        path = tmp_path / "run.jsonl"
        train(path, [1.0], [Patience()])
        with pytest.raises(ConfigError, match=match):
            replay_each(path, variants, registry=registry)

    def test_unrecordable_parameters_ask_for_an_instance_to_be_changed(self, tmp_path,
                                                                       registry):
        """A plugin built with a callable cannot come from the log: its recorded decisions
        stand in for it; changing its parameters needs the instance, and the error says so."""
        class Scheduled(Plugin):
            def __init__(self, schedule):
                self.schedule = schedule

        registry.register(Scheduled)
        path = tmp_path / "run.jsonl"
        train(path, [1.0], [Scheduled(lambda e: 0.1)])
        assert replay(path, registry=registry).ok
        with pytest.raises(ReplayError, match=r"schedule.*pass an instance"):
            replay(path, overrides={"Scheduled": {"schedule": 1}}, registry=registry)
        result = replay(path, plugins=[Scheduled(lambda e: 0.1)], registry=registry)
        assert len(result.plugins) == 1

    def test_a_schedule_function_is_replayed_from_the_rates_it_recorded(self, tmp_path):
        """A Keras user's LearningRateScheduler takes a function, which no header records.
        Replay applies the rates it recorded, at the epochs it recorded them: the other
        plugins see the run's learning rate, so --verify passes (the scheduler's decisions
        unchecked), and a what-if of another plugin is exact."""
        from plugins import EarlyStopping, LearningRateScheduler, ReduceLROnPlateau

        path = tmp_path / "run.jsonl"
        plugins = [LearningRateScheduler(lambda epoch, lr: lr * 0.9),
                   ReduceLROnPlateau(patience=1, factor=0.5), EarlyStopping(patience=3)]
        with Bus(plugins, log=path, learning_rate=0.1) as bus:
            bus.train_begin({"epochs": 10})
            for epoch, value in enumerate([1.0, 0.9, 0.95, 0.97, 0.99, 1.0, 1.1, 1.2]):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"val_loss": value})
                if bus.stop_training:
                    break
        result = replay(path, verify=True)
        assert result.ok, result.mismatch
        assert {d.source for d in result.recorded} == {"ReduceLROnPlateau", "EarlyStopping"}
        assert [d.source for d in result.unchecked] == ["LearningRateScheduler"] * 5
        assert result.diverged_at is None and result.stopped_at == result.recorded_stop == 4
        cuts = [d.value for d in result.decisions if d.kind == "set_learning_rate"]
        assert cuts == [d.value for d in result.recorded if d.kind == "set_learning_rate"]
        what_if = replay(path, overrides={"EarlyStopping": {"patience": 1}})
        assert what_if.stopped_at == 2 and what_if.diverged_at is None

    def test_overrides_for_unknown_plugins_are_refused(self, tmp_path, registry):
        """A typo in a plugin name is an error listing the log's plugins."""
        path = tmp_path / "run.jsonl"
        train(path, [1.0], [Patience()])
        with pytest.raises(ReplayError, match=r"Patienc.*\['Patience'\]"):
            replay(path, overrides={"Patienc": {"patience": 1}}, registry=registry)

    def test_unregistered_plugins_name_the_fix(self, tmp_path):
        """A plugin the registry does not know cannot be rebuilt; the message says why."""
        path = tmp_path / "run.jsonl"
        train(path, [1.0], [Patience()])
        with pytest.raises(ReplayError, match="no plugin named 'Patience'"):
            replay(path, registry=Registry(group="eventbus-tests-none"))


class TestEffectiveRecords:
    def test_a_resumed_record_drops_the_abandoned_partial_epoch(self):
        """Records after from_seq and before the resumed record are not part of the run."""
        recs = [r.TrainBegin(seq=1), r.EpochBegin(seq=2, epoch=0), r.EpochEnd(seq=3, epoch=0),
                r.EpochBegin(seq=4, epoch=1), r.BatchEnd(seq=5, batch=0, step=0),
                r.Resumed(seq=6, from_seq=3, initial_epoch=1), r.EpochBegin(seq=7, epoch=1)]
        assert [x.seq for x in effective_records(recs)] == [1, 2, 3, 6, 7]


def test_decisions_of_plugins_the_header_does_not_list_are_said_unchecked(tmp_path, capsys):
    """A plugin registered after the run started is not in the header: replay cannot rebuild
    it, so its decisions are not checked; verify says so instead of 'all 0 match'."""
    from eventbus.cli import main
    from eventbus.engine import RunWarning
    from plugins import EarlyStopping

    path = tmp_path / "late.jsonl"
    with Bus([], log=path) as bus:
        bus.train_begin({"epochs": 5})
        with pytest.warns(RunWarning, match="registered after the run started"):
            bus.register(EarlyStopping(patience=1))
        for epoch, value in enumerate([1.0, 1.0, 1.0]):
            bus.epoch_begin(epoch)
            bus.epoch_end(epoch, {"val_loss": value})
            if bus.stop_training:
                break
        bus.train_end()
    result = replay(path, verify=True)
    assert result.ok and result.decisions == [] and result.recorded == []
    assert [(d.kind, d.source) for d in result.unchecked] == [("stop_training", "EarlyStopping")]
    assert main(["replay", str(path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "verify: all 0 decisions match the log" in out
    assert "1 more decision(s) the log holds, by EarlyStopping, are not checked" in out
