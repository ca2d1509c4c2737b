"""EarlyStopping: Keras 3.15's rules, the Lightning extras, and the properties of the issue."""

from __future__ import annotations

import math
import tempfile
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import (
    Bus,
    ConfigError,
    NumpyModel,
    Plugin,
    PluginError,
    PluginIsolatedWarning,
    RunWarning,
    hookimpl,
    read_log,
    replay,
)
from eventbus.monitor import MAX_WORDS, MIN_WORDS, guess_mode
from eventbus.records import EpochBegin, EpochEnd, StopTraining, TrainBegin, TrainEnd
from eventbus.testing import RecordingWriter, drive, epochs, run
from plugins import EarlyStopping

from plugin_strategies import metric_sequences, resume_matches, strictly_improving

#: restore_best_weights on a bus without a model (drive, run): the bus says the weights
#: decisions did nothing, which is beside what the tests so marked check (the decisions).
NO_MODEL = pytest.mark.filterwarnings(
    "ignore:.*needs a model adapter; the bus has none:eventbus.RunWarning")


def stops(values: list[float], **params: Any) -> list[tuple[int, str]]:
    """(epoch, code) of every stop decision EarlyStopping(**params) makes on val_loss values."""
    monitor = params.pop("monitor", "val_loss")
    decisions = drive(EarlyStopping(monitor=monitor, **params), epochs(**{monitor: values}))
    return [(d.epoch, d.code) for d in decisions if d.kind == "stop_training"]


def stop_epoch(values: list[float], **params: Any) -> int | None:
    found = stops(values, **params)
    return found[0][0] if found else None


class StopAt(Plugin):
    """Stops training at one epoch: a stop that does not come from EarlyStopping."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    @hookimpl
    def on_epoch_end(self, event: Any) -> Any:
        if event.epoch == self.epoch:
            return StopTraining(reason="test stop")
        return None


class TestKerasExamples:
    """Hand-worked on Keras 3.15's EarlyStopping.on_epoch_end."""

    def test_docstring_example(self) -> None:
        """patience=2: 0.4 at epoch 1 is best, epochs 2 and 3 do not improve: stop at 3."""
        assert stops([0.5, 0.4, 0.45, 0.47, 0.5], patience=2) == [(3, "patience_exhausted")]

    def test_patience_zero_behaves_as_one(self) -> None:
        """patience=0 stops at the first epoch that does not improve."""
        assert stop_epoch([0.5, 0.4, 0.4, 0.3], patience=0) == 2

    def test_patience_zero_never_stops_at_epoch_zero(self) -> None:
        """A first NaN makes wait 1 >= 0, but Keras never stops at epoch 0."""
        assert stop_epoch([math.nan, 0.5, 0.4], patience=0) is None
        assert stop_epoch([math.nan, math.nan], patience=0) == 1

    def test_min_delta(self) -> None:
        """min_delta=0.1: 0.8 is not below 0.85 - 0.1, so epoch 2 does not improve."""
        assert stop_epoch([1.0, 0.85, 0.8, 0.75], patience=1, min_delta=0.1) == 2
        assert stop_epoch([1.0, 0.85, 0.8, 0.75], patience=1, min_delta=-0.1) == 2
        assert stop_epoch([1.0, 0.85, 0.8, 0.75], patience=1) is None

    def test_baseline_not_beaten_keeps_wait_growing(self) -> None:
        """Improvements that miss the baseline do not reset wait: stop at the first plateau."""
        # wait: 1, 2 (improving, baseline missed), 3 at epoch 2 (no improvement) >= 2: stop.
        assert stop_epoch([0.9, 0.8, 0.85, 0.85], patience=2, baseline=0.5) == 2
        # While every epoch improves there is no stop, even above the baseline.
        assert stop_epoch([0.9, 0.8, 0.7, 0.6, 0.55], patience=2, baseline=0.5) is None

    def test_baseline_beaten_resets_wait(self) -> None:
        """Beating the baseline (0.4 < 0.5) resets wait; two flat epochs then stop."""
        assert stop_epoch([0.9, 0.4, 0.45, 0.46, 0.47], patience=2, baseline=0.5) == 3

    def test_baseline_reason_says_baseline(self) -> None:
        """The reason names the baseline when that is what was missed."""
        decision = drive(EarlyStopping(patience=2, baseline=0.5),
                         epochs(val_loss=[0.9, 0.8, 0.85]))[0]
        assert decision.reason == ("val_loss did not improve on the baseline 0.5 in 3 epochs; "
                                   "best 0.8 (epoch 2)")

    def test_start_from_epoch(self) -> None:
        """Epochs before start_from_epoch are ignored; without it the stop comes at 1."""
        values = [0.1, 0.2, 0.5, 0.6, 0.7]
        assert stop_epoch(values, patience=1) == 1
        assert stop_epoch(values, patience=1, start_from_epoch=2) == 3

    def test_mode_max(self) -> None:
        """mode='max' (or accuracy under auto) stops when the metric stops rising."""
        assert stop_epoch([0.5, 0.6, 0.6], monitor="val_accuracy", patience=1) == 2
        assert stop_epoch([0.5, 0.6, 0.6], monitor="score", mode="max", patience=1) == 2

    def test_reason_code_and_evidence(self) -> None:
        """A stop says why in words, by code, and with the numbers behind it."""
        decision = drive(EarlyStopping(patience=2), epochs(val_loss=[0.5, 0.4, 0.45, 0.47]))[0]
        assert decision.reason == "val_loss did not improve on 0.4 (epoch 2) for 2 epochs"
        assert decision.code == "patience_exhausted"
        assert decision.source == "EarlyStopping"
        assert decision.epoch == 3
        assert decision.evidence == {
            "monitor": "val_loss", "value": 0.47, "best": 0.4, "best_epoch": 1, "wait": 2,
            "patience": 2, "min_delta": 0.0, "mode": "min", "baseline": None,
            "start_from_epoch": 0}

    def test_cause_seq_is_the_epoch_end(self) -> None:
        """The decision points at the event that caused it."""
        _, records = run([EarlyStopping(patience=0)], epochs(val_loss=[0.5, 0.6]))
        decision = next(r for r in records if r.kind == "stop_training")
        cause = next(r for r in records if r.seq == decision.cause_seq)
        assert isinstance(cause, EpochEnd) and cause.epoch == 1

    def test_verbose_prints_what_keras_prints(self, capsys: pytest.CaptureFixture[str]) -> None:
        """verbose=1: 'Epoch 4: early stopping' (1-based) at train_end."""
        drive(EarlyStopping(patience=2, verbose=1), epochs(val_loss=[0.5, 0.4, 0.45, 0.47]))
        assert capsys.readouterr().out == "Epoch 4: early stopping\n"

    def test_quiet_by_default(self, capsys: pytest.CaptureFixture[str]) -> None:
        """verbose=0 prints nothing."""
        drive(EarlyStopping(patience=0), epochs(val_loss=[0.5, 0.6]))
        assert capsys.readouterr().out == ""


class TestMissingMonitor:
    def test_warning_lists_keys_and_changes_nothing(self) -> None:
        """A missing monitor records a warning with the keys present; no decision, no wait."""
        plugin = EarlyStopping(patience=0)
        with pytest.warns(RunWarning, match="Early stopping conditioned on metric `val_loss` "
                                            "which is not available") as shown:
            _, records = run([plugin], epochs(loss=[0.5, 0.6, 0.7]), learning_rate=0.1)
        assert len(shown) == 1
        warnings = [r for r in records if r.kind == "warning"]
        assert len(warnings) == 1  # once per run, not once per epoch
        assert warnings[0].details == {"monitor": "val_loss", "available": ["loss"]}
        assert "Available metrics are: loss" in warnings[0].message
        assert not [r for r in records if r.kind == "stop_training"]
        assert plugin.wait == 0 and plugin.best is None


class TestBeyondKeras:
    def test_check_finite_stops_on_nan(self) -> None:
        """check_finite=True stops at once on NaN, whatever the patience."""
        assert stops([0.5, math.nan], patience=5, check_finite=True) == [(1, "non_finite")]
        assert stops([0.5, math.inf], patience=5, check_finite=True) == [(1, "non_finite")]

    def test_nan_counts_as_no_improvement_by_default(self) -> None:
        """Without check_finite NaN is just not an improvement (Keras)."""
        assert stops([0.5, math.nan, math.nan], patience=2) == [(2, "patience_exhausted")]

    def test_stopping_threshold(self) -> None:
        """Stop once the value is strictly better than stopping_threshold."""
        assert stops([0.5, 0.3, 0.29], patience=5, stopping_threshold=0.3) == \
            [(2, "stopping_threshold")]

    def test_stopping_threshold_can_stop_at_epoch_zero(self) -> None:
        """A threshold is not a patience rule: epoch 0 may stop."""
        assert stops([0.1], stopping_threshold=0.3) == [(0, "stopping_threshold")]

    def test_divergence_threshold(self) -> None:
        """Stop once the value is strictly worse than divergence_threshold."""
        assert stops([0.5, 2.0, 2.5], patience=5, divergence_threshold=2.0) == \
            [(2, "divergence_threshold")]

    def test_divergence_threshold_under_max(self) -> None:
        """Under mode='max', worse means lower."""
        assert stops([0.5, 0.05], monitor="val_accuracy", patience=5,
                     divergence_threshold=0.1) == [(1, "divergence_threshold")]

    def test_thresholds_must_be_ordered(self) -> None:
        """A stopping threshold worse than the divergence threshold is a config error."""
        with pytest.raises(ConfigError, match="stopping_threshold"):
            EarlyStopping(stopping_threshold=2.0, divergence_threshold=1.0)

    def test_new_run_on_same_instance_starts_afresh(self) -> None:
        """train_begin resets best and wait, as Keras 3's on_train_begin does."""
        plugin = EarlyStopping(patience=1)
        drive(plugin, epochs(val_loss=[0.1, 0.2]))
        assert stop_epoch([0.5, 0.4, 0.3]) is None
        assert drive(plugin, epochs(val_loss=[0.5, 0.4, 0.3])) == []


class TestNaNFirst:
    """Keras 3.15 takes a first NaN as the best and nothing beats it afterwards; here NaN is
    never an improvement (docs/plugins/early_stopping.md, Differences from Keras)."""

    def test_a_first_nan_is_not_the_best(self) -> None:
        """After a first NaN the next real value is the best; Keras would stop at epoch 2
        (patience 2 after its NaN best), here the run stops at epoch 3."""
        plugin = EarlyStopping(patience=2)
        decisions = drive(plugin, epochs(val_loss=[math.nan, 0.5, 0.6, 0.7]))
        assert [(d.epoch, d.code) for d in decisions] == [(3, "patience_exhausted")]
        assert plugin.best == 0.5

    def test_a_first_inf_is_the_best(self) -> None:
        """A first inf improves (Keras 3.15 takes any first value); a finite value beats it."""
        plugin = EarlyStopping(patience=1)
        drive(plugin, epochs(val_loss=[math.inf]))
        assert plugin.best == math.inf
        assert stops([math.inf, 0.5, 0.4], patience=1) == []

    @NO_MODEL
    def test_restoring_when_no_value_was_ever_a_best_says_so(self) -> None:
        """Every value NaN: the first epoch's weights are kept (as Keras keeps them) and the
        restore's reason names that epoch, not a best value of None."""
        decisions = drive(EarlyStopping(patience=1, restore_best_weights=True),
                          epochs(val_loss=[math.nan, math.nan, math.nan]))
        restore = [d for d in decisions if d.kind == "restore_weights"]
        assert [d.reason for d in restore] == [
            "restore the weights of epoch 1, the first monitored one: no val_loss value "
            "improved on it"]

    @given(metric_sequences(), st.sampled_from(["min", "max"]))
    def test_best_is_the_best_real_value(self, values: list[float], mode: str) -> None:
        """Property: whatever NaNs come (first or later), best is the best non-NaN value seen,
        None while there is none."""
        plugin = EarlyStopping(patience=len(values) + 1, mode=mode)
        drive(plugin, epochs(val_loss=values))
        real = [v for v in values if not math.isnan(v)]
        assert plugin.best == ((min(real) if mode == "min" else max(real)) if real else None)


class TestConfig:
    @pytest.mark.parametrize(("params", "field"), [
        ({"patience": -1}, "patience"), ({"patience": 1.5}, "patience"),
        ({"mode": "up"}, "mode"), ({"monitor": ""}, "monitor"),
        ({"min_delta": "0.1"}, "min_delta"), ({"start_from_epoch": -2}, "start_from_epoch"),
        ({"baseline": math.nan}, "baseline"),
        ({"restore_best_weights": "False"}, "restore_best_weights"),
        ({"restore_best_weights": 1}, "restore_best_weights"),
        ({"check_finite": None}, "check_finite"),
    ])
    def test_bad_parameters_name_the_field(self, params: dict[str, Any], field: str) -> None:
        """Each bad parameter is a ConfigError naming the plugin and the field."""
        with pytest.raises(ConfigError) as info:
            EarlyStopping(**params)
        assert (info.value.plugin, info.value.field) == ("EarlyStopping", field)

    def test_config_is_recorded(self) -> None:
        """The constructor's arguments go to the log header, so replay can rebuild it."""
        config = EarlyStopping(patience=3, baseline=0.5).get_config()
        assert config["patience"] == 3 and config["baseline"] == 0.5
        assert config["monitor"] == "val_loss" and config["check_finite"] is False


def _model() -> NumpyModel:
    return NumpyModel({"w": np.zeros(2)})


def _train(plugins: list[object], model: NumpyModel, values: list[float]) -> Bus:
    """A loop whose weights are the epoch count: after epoch e, w == e + 1."""
    bus = Bus(plugins, model=model)
    bus.train_begin({"epochs": len(values)})
    for epoch, value in enumerate(values):
        bus.epoch_begin(epoch)
        model.weights["w"] += 1
        bus.epoch_end(epoch, {"val_loss": value})
        if bus.stop_training:
            break
    bus.train_end()
    bus.close()
    return bus


class TestRestoreBestWeights:
    def test_restores_the_best_epoch_after_its_own_stop(self) -> None:
        """Best at epoch 1 (w == 2); stop at 3; the model ends with epoch 1's weights."""
        model = _model()
        _train([EarlyStopping(patience=2, restore_best_weights=True)], model,
               [0.5, 0.4, 0.45, 0.47, 0.5])
        assert model.weights["w"].tolist() == [2.0, 2.0]

    def test_restores_when_another_plugin_stopped(self) -> None:
        """The restore happens at train_end whoever stopped training."""
        model = _model()
        _train([EarlyStopping(patience=10, restore_best_weights=True), StopAt(3)], model,
               [0.5, 0.3, 0.45, 0.47, 0.5])
        assert model.weights["w"].tolist() == [2.0, 2.0]

    def test_restores_when_training_ran_to_the_end(self) -> None:
        """No stop at all: the best epoch's weights still come back (as Keras)."""
        model = _model()
        _train([EarlyStopping(patience=10, restore_best_weights=True)], model, [0.5, 0.3, 0.4])
        assert model.weights["w"].tolist() == [2.0, 2.0]

    def test_first_monitored_epoch_counts_until_something_improves(self) -> None:
        """A first NaN epoch is kept as the fallback best, as Keras does."""
        model = _model()
        _train([EarlyStopping(patience=1, restore_best_weights=True)], model,
               [math.nan, math.nan, math.nan])
        assert model.weights["w"].tolist() == [1.0, 1.0]

    @NO_MODEL
    def test_decisions(self) -> None:
        """snapshot_weights at each new best, restore_weights at train_end, one tag."""
        decisions = drive(EarlyStopping(patience=1, restore_best_weights=True, verbose=0),
                          epochs(val_loss=[0.5, 0.4, 0.6]))
        assert [(d.kind, d.epoch) for d in decisions] == [
            ("snapshot_weights", 0), ("snapshot_weights", 1), ("stop_training", 2),
            ("restore_weights", 2)]
        assert {d.tag for d in decisions if d.kind != "stop_training"} == {"EarlyStopping/best"}

    @NO_MODEL
    def test_two_plugins_use_two_tags(self) -> None:
        """A second EarlyStopping on the bus snapshots under its own label."""
        _, records = run([EarlyStopping(restore_best_weights=True),
                          EarlyStopping(monitor="loss", restore_best_weights=True)],
                         epochs(val_loss=[0.5], loss=[0.5]))
        tags = {r.tag for r in records if r.kind == "snapshot_weights"}
        assert tags == {"EarlyStopping/best", "EarlyStopping#2/best"}

    @NO_MODEL
    def test_verbose_restore_message(self, capsys: pytest.CaptureFixture[str]) -> None:
        """verbose=1 prints Keras's restore message with the 1-based best epoch."""
        drive(EarlyStopping(patience=1, restore_best_weights=True, verbose=1),
              epochs(val_loss=[0.5, 0.4, 0.6]))
        assert capsys.readouterr().out == (
            "Epoch 3: early stopping\n"
            "Restoring model weights from the end of the best epoch: 2.\n")


def reference_stop(values: list[float], patience: int, start_from_epoch: int = 0,
                   min_delta: float = 0.0) -> int | None:
    """The first epoch > 0 where the run of non-improving monitored epochs reaches
    max(patience, 1): the rule stated independently of the plugin."""
    best = None
    run_length = 0
    for epoch, value in enumerate(values):
        if epoch < start_from_epoch:
            continue
        if not math.isnan(value) and (best is None or value + abs(min_delta) < best):
            best = value
            run_length = 0
            continue
        run_length += 1
        if run_length >= max(patience, 1) and epoch > 0:
            return epoch
    return None


class TestProperties:
    @given(strictly_improving(), st.integers(0, 5))
    def test_strictly_improving_never_stops(self, values: list[float], patience: int) -> None:
        """Without a baseline, a strictly improving sequence never stops."""
        assert stops(values, patience=patience) == []

    @given(st.floats(0.0, 1.0), st.integers(0, 4), st.sampled_from(["min", "max"]),
           st.data())
    def test_beating_best_by_more_than_min_delta_never_stops(
            self, min_delta: float, patience: int, mode: str, data: st.DataObject) -> None:
        """Every epoch beats the best so far by more than min_delta: no stop, either mode."""
        values = data.draw(strictly_improving(min_delta=min_delta, mode=mode))
        assert stops(values, monitor="score", mode=mode, patience=patience,
                     min_delta=min_delta) == []

    @given(metric_sequences(), st.integers(0, 5), st.integers(0, 4),
           st.sampled_from([0.0, 0.1, 0.5]))
    def test_stop_comes_where_the_run_reaches_patience(
            self, values: list[float], patience: int, start: int, min_delta: float) -> None:
        """The stop is exactly at the first epoch (> 0) whose non-improving run reaches
        max(patience, 1), and nowhere else."""
        expected = reference_stop(values, patience, start, min_delta)
        got = stops(values, patience=patience, start_from_epoch=start, min_delta=min_delta)
        assert got == ([] if expected is None else [(expected, "patience_exhausted")])

    @given(metric_sequences(), st.integers(0, 4), st.floats(0.0, 0.5),
           st.one_of(st.none(), st.floats(-5.0, 5.0)))
    def test_max_on_a_sequence_is_min_on_its_negation(
            self, values: list[float], patience: int, min_delta: float,
            baseline: float | None) -> None:
        """mode='max' decides on x exactly as mode='min' on -x (baseline negated too)."""
        high = stops(values, monitor="score", mode="max", patience=patience,
                     min_delta=min_delta, baseline=baseline)
        low = stops([-v for v in values], monitor="score", mode="min", patience=patience,
                    min_delta=min_delta, baseline=None if baseline is None else -baseline)
        assert high == low

    @NO_MODEL
    @given(metric_sequences(max_size=12), st.integers(0, 3), st.booleans(),
           st.one_of(st.none(), st.floats(0.0, 2.0)))
    def test_replay_gives_the_same_decisions(self, values: list[float], patience: int,
                                             restore: bool, baseline: float | None) -> None:
        """Replaying the log rebuilds EarlyStopping from the header and agrees with it."""
        with tempfile.TemporaryDirectory() as directory:
            path = f"{directory}/run.jsonl"
            with Bus([EarlyStopping(patience=patience, restore_best_weights=restore,
                                    baseline=baseline, check_finite=patience == 3)],
                     log=path) as bus:
                for event in epochs(val_loss=values):
                    if not bus.stop_training or event.kind == "train_end":
                        bus.publish(event)
            result = replay(path, verify=True)
        assert result.ok, result.mismatch
        assert len(result.decisions) == len(result.recorded)

    @NO_MODEL
    @given(metric_sequences(max_size=10), st.integers(0, 3), st.integers(0, 30),
           st.booleans())
    def test_resume_from_any_prefix_gives_the_same_decisions(
            self, values: list[float], patience: int, cut: int, restore: bool) -> None:
        """Crash after any prefix of the events, resume from the log: same decisions as an
        uninterrupted run."""
        full, resumed = resume_matches(
            lambda: [EarlyStopping(patience=patience, restore_best_weights=restore)],
            values, cut)
        assert resumed == full


#: Names mode='auto' cannot place (no word of either kind, or both).
unplaceable_names = st.sampled_from(["val_custom_metric", "my_metric", "val_activation_mean",
                                     "accuracy_loss", "val_false_positives"])
#: Names it places: one word of a kind (either), with val_ and a neutral word around it.
placed_names = st.builds("{}{}{}".format, st.sampled_from(["", "val_"]),
                         st.sampled_from(sorted(MIN_WORDS | MAX_WORDS)),
                         st.sampled_from(["", "_mean", "_2", "_head"]))


def publish(bus: Bus, logs: list[dict[str, float]]) -> None:
    """train_begin, then an epoch per entry of ``logs`` (no train_end)."""
    bus.train_begin()
    for epoch, epoch_logs in enumerate(logs):
        bus.epoch_begin(epoch)
        bus.epoch_end(epoch, epoch_logs)


class TestUnplaceableMonitor:
    """As Keras 3, whose EarlyStopping finds the direction at the first epoch_end
    (``_set_monitor_op``): a name mode='auto' cannot place builds, and is an error only when
    a value of it is first compared."""

    def test_builds_as_keras_does(self) -> None:
        """Construction succeeds; the direction is unknown and monitor_op None until then."""
        plugin = EarlyStopping(monitor="val_custom_metric")
        assert (plugin.monitor, plugin.mode) == ("val_custom_metric", "auto")
        assert plugin.tracker.mode is None and plugin.monitor_op is None

    def test_the_first_epoch_end_raises_and_keeps_the_log(self, tmp_path) -> None:
        """As Keras 3 (_set_monitor_op before the metric is looked up): the first epoch_end
        raises, whether or not its logs carry the metric. The ConfigError names the plugin,
        mode, the metric and the event; the bus raises it as the plugin's failure after
        recording it, and every earlier record is kept."""
        path = tmp_path / "run.jsonl"
        bus = Bus([EarlyStopping(monitor="val_custom_metric")], log=path)
        publish(bus, [])
        with pytest.raises(PluginError, match="failed on epoch_end") as info:
            publish_one(bus, 0, {"loss": 0.9})  # the metric absent: Keras raises all the same
        bus.close()
        cause = info.value.__cause__
        assert isinstance(cause, ConfigError)
        assert (cause.plugin, cause.field) == ("EarlyStopping", "mode")
        assert "monitor='val_custom_metric'" in str(cause)
        assert "at epoch_end (epoch 1)" in str(cause)
        assert "Pass mode='min' or mode='max' to EarlyStopping" in str(cause)
        records = list(read_log(path))
        assert [r.kind for r in records][-3:] == ["epoch_begin", "epoch_end", "plugin_failed"]
        assert records[-2].logs == {"loss": 0.9}
        assert records[-1].error == "ConfigError" and records[-1].cause_seq == records[-2].seq

    def test_raises_within_start_from_epoch_too(self) -> None:
        """As Keras, the direction is set before the warm-up is checked: the error comes at
        the first value, not at start_from_epoch."""
        bus = Bus([EarlyStopping(monitor="my_metric", start_from_epoch=5)])
        with pytest.raises(PluginError, match="epoch_end \\(epoch 1\\)"):
            publish(bus, [{"my_metric": 1.0}])
        bus.close()

    def test_isolated_the_run_goes_on_without_it(self) -> None:
        """on_plugin_error='isolate': the error is a warning, the plugin is disabled, and
        training goes on (nothing it would have stopped)."""
        bus = Bus([EarlyStopping(monitor="my_metric", patience=0)], on_plugin_error="isolate")
        with pytest.warns(PluginIsolatedWarning, match="mode='min' or mode='max'"):
            publish(bus, [{"my_metric": v} for v in [1.0, 2.0, 3.0]])
        assert not bus.stop_training
        bus.close()

    def test_explicit_mode_needs_no_name(self) -> None:
        """With mode given, any name is compared from the first epoch."""
        assert stops([0.5, 0.6], monitor="val_custom_metric", mode="min") == \
            [(1, "patience_exhausted")]
        assert stops([0.5, 0.6], monitor="val_custom_metric", mode="max") == []

    def test_both_thresholds_need_the_direction_when_built(self) -> None:
        """The one comparison made in __init__ (are the thresholds in order?) needs the
        direction: with both thresholds, an unplaceable name is a ConfigError there."""
        with pytest.raises(ConfigError, match="mode='min' or mode='max'") as info:
            EarlyStopping(monitor="my_metric", stopping_threshold=0.1, divergence_threshold=5.0)
        assert (info.value.plugin, info.value.field) == ("EarlyStopping", "mode")
        assert "stopping_threshold and divergence_threshold" in str(info.value)
        plugin = EarlyStopping(monitor="my_metric", mode="min", stopping_threshold=0.1,
                               divergence_threshold=5.0)
        assert plugin.tracker.mode == "min"

    @pytest.mark.parametrize("threshold", ["stopping_threshold", "divergence_threshold"])
    def test_one_threshold_waits_for_the_first_value(self, threshold: str) -> None:
        """One threshold alone compares nothing when built: construction succeeds."""
        plugin = EarlyStopping(monitor="my_metric", **{threshold: 0.5})
        assert plugin.tracker.mode is None

    @given(unplaceable_names, st.integers(0, 4), st.booleans(),
           metric_sequences(min_size=1, max_size=1))
    def test_the_first_epoch_end_raises(self, name: str, first: int, carried: bool,
                                        values: list[float]) -> None:
        """Property: as Keras 3, the first epoch_end raises the ConfigError naming it, whether
        its logs carry the metric (whatever its value, NaN included) or not; nothing is
        decided or warned before."""
        writer = RecordingWriter()
        bus = Bus([EarlyStopping(monitor=name, patience=0)], log=writer)
        try:
            publish(bus, [])
            with pytest.raises(PluginError) as info:
                publish_one(bus, first, {"loss": 1.0, **({name: values[0]} if carried else {})})
        finally:
            bus.close()
        assert isinstance(info.value.__cause__, ConfigError)
        assert info.value.__cause__.field == "mode"
        assert f"epoch_end (epoch {first + 1})" in str(info.value.__cause__)
        kinds = [r["kind"] for r in writer.records]
        assert "stop_training" not in kinds and kinds[-1] == "plugin_failed"
        assert "warning" not in kinds

    @NO_MODEL
    @given(placed_names, metric_sequences(max_size=12), st.integers(0, 3), st.booleans(),
           st.floats(0.0, 0.5))
    def test_a_placed_name_decides_as_before(self, name: str, values: list[float],
                                             patience: int, restore: bool,
                                             min_delta: float) -> None:
        """Property: for any name the rule places, mode='auto' makes the decisions that the
        mode the rule placed at construction made."""
        assert guess_mode(name) is not None
        made = [decision_list(EarlyStopping(monitor=name, mode=mode, patience=patience,
                                            restore_best_weights=restore,
                                            min_delta=min_delta), name, values)
                for mode in ("auto", guess_mode(name))]
        assert made[0] == made[1]


def publish_one(bus: Bus, epoch: int, logs: dict[str, float]) -> None:
    bus.epoch_begin(epoch)
    bus.epoch_end(epoch, logs)


def decision_list(plugin: object, name: str, values: list[float]) -> list[tuple[Any, ...]]:
    """(kind, epoch, code, reason) of every decision ``plugin`` makes on ``name``'s values."""
    events = [TrainBegin()]
    for epoch, value in enumerate(values):
        events += [EpochBegin(epoch=epoch), EpochEnd(epoch=epoch, logs={name: value})]
    decisions = drive(plugin, events + [TrainEnd()])
    return [(d.kind, d.epoch, d.code, d.reason) for d in decisions]


class TestKerasMonitorOp:
    """``monitor_op``, which code written against Keras's callbacks reads: Keras's own op when
    Keras is imported (the monitor's direction), NumPy's of the same name otherwise."""

    @pytest.mark.parametrize("monitor, mode, want", [
        ("val_loss", "auto", "less"), ("val_accuracy", "auto", "greater"),
        ("val_mse", "max", "greater"), ("hinge", "auto", "less"), ("f1_score", "auto", "greater"),
    ])
    def test_follows_the_monitors_direction(self, monitor, mode, want):
        import sys

        import numpy as np

        from plugins import ModelCheckpoint, ReduceLROnPlateau

        ops = sys.modules["keras"].ops if "keras" in sys.modules else np
        for plugin in (EarlyStopping(monitor=monitor, mode=mode),
                       ReduceLROnPlateau(monitor=monitor, mode=mode),
                       ModelCheckpoint("m.h5", monitor=monitor, mode=mode, save_best_only=True)):
            assert plugin.monitor_op is getattr(ops, want)

    def test_none_without_a_comparison(self):
        from plugins import ModelCheckpoint

        assert ModelCheckpoint("m.h5").monitor_op is None

    def test_none_until_an_unplaceable_name_is_compared(self):
        """Keras's monitor_op is None before its first epoch_end; here, while mode='auto'
        has not placed the name (one it places has its op at once)."""
        assert EarlyStopping(monitor="my_metric").monitor_op is None
        assert EarlyStopping(monitor="my_metric", mode="max").monitor_op is not None


class TestBestWeights:
    """Keras's ``best_weights``: the best epoch's weights (the bus's snapshot) as a list, None
    without ``restore_best_weights``; set by hand, kept until ``train_begin`` clears it."""

    @pytest.mark.parametrize("restore", [True, False])
    def test_the_best_epoch_s_weights_or_none(self, restore):
        model = NumpyModel({"w": np.zeros(2), "b": np.zeros(1)}, learning_rate=0.1)
        stopper = EarlyStopping(monitor="loss", patience=5, restore_best_weights=restore)
        with Bus([stopper], model=model) as bus:
            bus.train_begin()
            for epoch, loss in enumerate([1.0, 0.5, 0.7]):
                bus.epoch_begin(epoch)
                model.weights["w"] += 1
                bus.epoch_end(epoch, {"loss": loss})
            if restore:
                assert [a.tolist() for a in stopper.best_weights] == [[2.0, 2.0], [0.0]]
            else:
                assert stopper.best_weights is None
            bus.train_end()

    def test_set_by_hand_then_cleared_by_train_begin(self):
        stopper = EarlyStopping(monitor="loss", restore_best_weights=True)
        marker = object()
        stopper.best_weights = marker
        assert stopper.best_weights is marker
        with Bus([stopper]) as bus:
            bus.train_begin()
            assert stopper.best_weights is None
