"""ReduceLROnPlateau: Keras 3.15's rules and the properties of the issue."""

from __future__ import annotations

import math
import tempfile
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, ConfigError, NumpyModel, PluginError, RunWarning, read_log, replay
from eventbus.monitor import MAX_WORDS, MIN_WORDS, guess_mode
from eventbus.records import EpochBegin, EpochEnd, TrainBegin, TrainEnd
from eventbus.testing import drive, epochs, logs_of, run
from plugins import ReduceLROnPlateau

from hypothesis_profiles import FILES, examples
from plugin_strategies import metric_sequences, resume_matches


def cuts(values: list[float], lr: float = 1.0, **params: Any) -> list[tuple[int, float]]:
    """(epoch, new learning rate) of every cut on a run of val_loss ``values``."""
    monitor = params.pop("monitor", "val_loss")
    decisions = drive(ReduceLROnPlateau(monitor=monitor, **params),
                      epochs(**{monitor: values}), learning_rate=lr)
    return [(d.epoch, d.value) for d in decisions if d.kind == "set_learning_rate"]


def cut_epochs(values: list[float], **params: Any) -> list[int]:
    return [epoch for epoch, _ in cuts(values, **params)]


class TestKerasExamples:
    """Hand-worked on Keras 3.15's ReduceLROnPlateau.on_epoch_end."""

    def test_patience(self) -> None:
        """patience=2 on a flat metric: epoch 0 is the best, cuts at epochs 2 and 4."""
        assert cuts([1.0] * 5, patience=2, factor=0.5) == [(2, 0.5), (4, 0.25)]

    def test_patience_zero(self) -> None:
        """patience=0 cuts at every epoch that does not improve (epoch 0 always improves)."""
        assert cut_epochs([1.0] * 4, patience=0) == [1, 2, 3]

    def test_cooldown_one_changes_nothing(self) -> None:
        """cooldown=1 is spent the epoch after a cut, which then counts: cuts every epoch."""
        assert cut_epochs([1.0] * 6, patience=1, cooldown=1) == [1, 2, 3, 4, 5]

    def test_cooldown_two(self) -> None:
        """cooldown=2, patience=1: one quiet epoch between cuts."""
        assert cut_epochs([1.0] * 6, patience=1, cooldown=2) == [1, 3, 5]

    def test_cooldown_two_patience_two(self) -> None:
        """cooldown=2, patience=2: cuts 3 epochs apart (2 + 2 - 1)."""
        assert cut_epochs([1.0] * 9, patience=2, cooldown=2) == [2, 5, 8]

    def test_min_lr_floor(self) -> None:
        """The rate never goes below min_lr, and at the floor there is no further decision."""
        assert cuts([1.0] * 6, patience=1, factor=0.1, min_lr=0.05) == [(1, 0.1), (2, 0.05)]

    def test_min_delta(self) -> None:
        """A change smaller than min_delta (1e-4 by default) is no improvement."""
        assert cut_epochs([1.0, 0.99995, 0.9], patience=1) == [1]
        assert cut_epochs([1.0, 0.99995, 0.9], patience=1, min_delta=0.0) == []

    def test_improvement_resets_wait(self) -> None:
        """An improvement in the middle restarts the count."""
        assert cut_epochs([1.0, 1.0, 0.5, 0.5, 0.5], patience=2) == [4]

    def test_mode_max_under_auto(self) -> None:
        """val_accuracy is maximised: a falling accuracy is a plateau."""
        assert cut_epochs([0.5, 0.4, 0.3], monitor="val_accuracy", patience=2) == [2]

    def test_auc_is_maximised(self) -> None:
        """Keras's auto mode maximises only names containing 'acc'; AUC is maximised here."""
        assert cut_epochs([0.5, 0.6, 0.7], monitor="val_auc", patience=1) == []

    def test_reason_and_evidence(self) -> None:
        """The decision says what did not improve and what the rate became."""
        decision = drive(ReduceLROnPlateau(patience=2, factor=0.5), epochs(val_loss=[0.3] * 3),
                         learning_rate=0.1)[0]
        assert decision.reason == ("val_loss did not improve on 0.3 for 2 epochs: learning "
                                   "rate 0.1 -> 0.05")
        assert decision.code == "plateau"
        assert (decision.value, decision.previous) == (0.05, 0.1)
        assert decision.evidence["wait"] == 2 and decision.evidence["best"] == 0.3

    def test_verbose(self, capsys: pytest.CaptureFixture[str]) -> None:
        """verbose=1 prints Keras's message with the 1-based epoch."""
        drive(ReduceLROnPlateau(patience=1, factor=0.5, verbose=1), epochs(val_loss=[1.0] * 2),
              learning_rate=0.002)
        assert capsys.readouterr().out == \
            "\nEpoch 2: ReduceLROnPlateau reducing learning rate to 0.001.\n"


class TestLearningRate:
    def test_rate_reaches_the_model_and_the_logs(self) -> None:
        """The cut is applied to the model adapter; each epoch's logs show the rate it was
        trained with (as Keras, whose logs get the rate before the cut)."""
        model = NumpyModel({"w": np.zeros(1)}, learning_rate=0.1)
        _, records = run([ReduceLROnPlateau(patience=1, factor=0.5)],
                         epochs(val_loss=[1.0, 1.0, 1.0]), model=model)
        assert model.learning_rate == 0.025
        assert [logs["learning_rate"] for logs in logs_of(records, "epoch_end")] == \
            [0.1, 0.1, 0.05]
        assert [logs["learning_rate"] for logs in logs_of(records, "epoch_begin")] == \
            [0.1, 0.1, 0.05]

    def test_a_rate_kept_in_float32_at_the_floor_is_not_cut_again(self) -> None:
        """Keras's own example, min_lr=0.001, with an optimizer that keeps the rate in
        float32 (Keras's does): 0.001 held so is 0.0010000000475, above 0.001 in float64, and
        the rate was "reduced" to 0.001 every patience epochs, printed and recorded each
        time. As Keras, the floor is compared as float32: one cut."""

        class Float32Rate(NumpyModel):
            @property
            def learning_rate(self) -> float:
                return float(np.float32(self._rate))

            @learning_rate.setter
            def learning_rate(self, value: float) -> None:
                self._rate = value

        model = Float32Rate({"w": np.zeros(1)}, learning_rate=0.01)
        _, records = run([ReduceLROnPlateau(factor=0.1, patience=1, min_lr=0.001)],
                         epochs(val_loss=[1.0] * 8), model=model)
        cuts = [(r.previous, r.value) for r in records if r.kind == "set_learning_rate"]
        assert cuts == [(float(np.float32(0.01)), 0.001)]

    @pytest.mark.parametrize("floor", [1e-3, 1e-4, 1e-5, 1e-6, 0.3])
    def test_a_rate_at_the_floor_is_cut_no_more_in_float64_or_float32(self, floor) -> None:
        """A NumPy loop keeps the rate in float64: at min_lr=1e-4 it holds 1e-4 itself, which
        is above float32(1e-4); compared in float32 alone, it was "cut" to 1e-4 again every
        patience epochs. At the floor in either precision, no cut."""
        model = NumpyModel({"w": np.zeros(1)}, learning_rate=floor * 10)
        _, records = run([ReduceLROnPlateau(factor=0.1, patience=1, min_lr=floor)],
                         epochs(val_loss=[1.0] * 8), model=model)
        assert [r.value for r in records if r.kind == "set_learning_rate"] == \
            [max(floor * 10 * 0.1, floor)]  # one cut, then at the floor

    def test_unknown_rate_is_a_warning(self) -> None:
        """Without a known learning rate there is nothing to cut: one warning says so."""
        with pytest.warns(RunWarning, match="the learning rate is not known") as shown:
            _, records = run([ReduceLROnPlateau(patience=1)], epochs(val_loss=[1.0] * 4))
        assert len(shown) == 1
        out = [r for r in records if r.category in ("decision", "outcome")]
        assert [r.kind for r in out] == ["warning"]
        assert "learning rate is not known" in out[0].message
        assert out[0].epoch == 1


class TestMissingMonitor:
    def test_nothing_moves_not_even_the_cooldown(self) -> None:
        """A missing monitor records a warning; wait and cooldown stay as they were."""
        events = [TrainBegin()]
        logs = [{"val_loss": 1.0}, {"val_loss": 1.0}, {"loss": 1.0}, {"val_loss": 1.0},
                {"val_loss": 1.0}]
        for epoch, epoch_logs in enumerate(logs):
            events += [EpochBegin(epoch=epoch), EpochEnd(epoch=epoch, logs=epoch_logs)]
        events.append(TrainEnd())
        missing = "conditioned on metric `val_loss` which is not available"
        with pytest.warns(RunWarning, match=missing):
            decisions = drive(ReduceLROnPlateau(patience=1, cooldown=2), events,
                              learning_rate=1.0)
        # Without the gap the cuts would be at 1 and 3; the gap holds the cooldown for a turn.
        assert [d.epoch for d in decisions] == [1, 4]
        with pytest.warns(RunWarning, match=missing):
            _, records = run([ReduceLROnPlateau(patience=1, cooldown=2)], events,
                             learning_rate=1.0)
        warning = next(r for r in records if r.kind == "warning")
        assert warning.details == {"monitor": "val_loss",
                                   "available": ["loss", "learning_rate"]}


#: Names mode='auto' places: one word of a kind (either), with val_ and a neutral word around.
placed_names = st.builds("{}{}{}".format, st.sampled_from(["", "val_"]),
                         st.sampled_from(sorted(MIN_WORDS | MAX_WORDS)),
                         st.sampled_from(["", "_mean", "_2", "_head"]))


def plateau_events(name: str, values: list[float | None]) -> list[Any]:
    """A run whose epoch logs carry ``name`` (None: that epoch's logs lack it)."""
    events: list[Any] = [TrainBegin()]
    for epoch, value in enumerate(values):
        logs = {"loss": 1.0} if value is None else {"loss": 1.0, name: value}
        events += [EpochBegin(epoch=epoch), EpochEnd(epoch=epoch, logs=logs)]
    return events + [TrainEnd()]


class TestUnplaceableMonitor:
    """As Keras 3, which sets the direction at the first epoch_end: ReduceLROnPlateau builds
    with a name mode='auto' cannot place, and fails only when it must compare."""

    def test_builds_as_keras_does(self) -> None:
        """Construction succeeds; mode stays "auto", the direction unknown, monitor_op None."""
        plugin = ReduceLROnPlateau(monitor="my_metric")
        assert (plugin.monitor, plugin.mode, plugin.tracker.mode) == ("my_metric", "auto", None)
        assert plugin.monitor_op is None

    def test_the_first_epoch_end_raises(self, tmp_path) -> None:
        """As Keras 3 (_set_monitor_op before the metric is looked up): the first epoch_end,
        without the metric here, is the ConfigError naming the plugin, mode, the metric and
        the event, after the epoch is recorded."""
        path = tmp_path / "run.jsonl"
        bus = Bus([ReduceLROnPlateau(monitor="my_metric", patience=0)], log=path,
                  learning_rate=0.1)
        events = plateau_events("my_metric", [None, None, 0.5])
        with pytest.raises(PluginError) as info:
            for event in events:
                bus.publish(event)
        bus.close()
        cause = info.value.__cause__
        assert isinstance(cause, ConfigError)
        assert (cause.plugin, cause.field) == ("ReduceLROnPlateau", "mode")
        assert "monitor='my_metric'" in str(cause) and "epoch_end (epoch 1)" in str(cause)
        assert "Pass mode='min' or mode='max'" in str(cause)
        records = list(read_log(path))
        assert [r.kind for r in records].count("warning") == 0
        assert [r.kind for r in records][-2:] == ["epoch_end", "plugin_failed"]
        assert not [r for r in records if r.kind == "set_learning_rate"]

    def test_explicit_mode_needs_no_name(self) -> None:
        """With mode given, the name is never read for a direction."""
        assert cut_epochs([1.0, 2.0, 3.0], monitor="my_metric", mode="min", patience=1) == \
            [1, 2]
        assert cut_epochs([1.0, 2.0, 3.0], monitor="my_metric", mode="max", patience=1) == []

    @given(placed_names, st.lists(st.one_of(st.none(), st.floats(-2.0, 2.0), st.just(math.nan)),
                                  max_size=10),
           st.integers(0, 3), st.integers(0, 2))
    def test_a_placed_name_decides_as_before(self, name: str, values: list[float | None],
                                             patience: int, cooldown: int) -> None:
        """Property: for any name the rule places, mode='auto' makes the decisions (warnings
        included) that the mode placed at construction made."""
        assert guess_mode(name) is not None
        assert outcomes_of(name, "auto", values, patience, cooldown) == \
            outcomes_of(name, guess_mode(name), values, patience, cooldown)


def outcomes_of(name: str, mode: str, values: list[float | None], patience: int,
                cooldown: int) -> list[tuple[Any, ...]]:
    """(kind, epoch, value) of every decision and outcome of a run on ``values``; the
    missing-monitor warning is among them (and not raised)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunWarning)
        _, records = run([ReduceLROnPlateau(monitor=name, mode=mode, patience=patience,
                                            cooldown=cooldown)],
                         plateau_events(name, values), learning_rate=1.0)
    return [(r.kind, r.epoch, getattr(r, "value", None)) for r in records
            if r.category in ("decision", "outcome")]


class TestConfig:
    @pytest.mark.parametrize("factor", [1.0, 1.5, -0.1])
    def test_factor_must_be_below_one(self, factor: float) -> None:
        """factor >= 1 would not reduce: a ConfigError naming factor."""
        with pytest.raises(ConfigError) as info:
            ReduceLROnPlateau(factor=factor)
        assert (info.value.plugin, info.value.field) == ("ReduceLROnPlateau", "factor")

    def test_epsilon_is_min_delta_with_a_deprecation_warning(self) -> None:
        """Keras 2's epsilon works as min_delta (Keras 3 ignores it silently)."""
        with pytest.warns(DeprecationWarning, match="epsilon"):
            plugin = ReduceLROnPlateau(epsilon=0.5, patience=1)
        assert plugin.tracker.min_delta == 0.5 == plugin.min_delta
        config = plugin.get_config()
        assert config["min_delta"] == 0.5 and "epsilon" not in config
        assert cut_epochs([1.0, 0.6], patience=1, min_delta=0.5) == [1]

    def test_epsilon_and_min_delta_together_are_an_error(self) -> None:
        """Both names at once is ambiguous."""
        with pytest.raises(ConfigError, match="epsilon"):
            ReduceLROnPlateau(epsilon=0.5, min_delta=0.1)

    def test_unknown_keyword_is_an_error(self) -> None:
        """A misspelt parameter is refused (Keras 3 swallows it)."""
        with pytest.raises(ConfigError, match="patiense"):
            ReduceLROnPlateau(patiense=3)

    @pytest.mark.parametrize(("params", "field"), [
        ({"min_lr": -1.0}, "min_lr"), ({"cooldown": -1}, "cooldown"), ({"mode": "x"}, "mode"),
        ({"patience": "3"}, "patience")])
    def test_bad_parameters_name_the_field(self, params: dict[str, Any], field: str) -> None:
        """Each bad parameter names the field."""
        with pytest.raises(ConfigError) as info:
            ReduceLROnPlateau(**params)
        assert info.value.field == field


class TestProperties:
    @given(metric_sequences(), st.integers(0, 4), st.integers(0, 3),
           st.floats(0.0, 0.9), st.sampled_from([0.0, 1e-3, 0.05]),
           st.floats(0.05, 1.0))
    def test_rate_never_rises_nor_drops_below_min_lr(
            self, values: list[float], patience: int, cooldown: int, factor: float,
            min_lr: float, lr: float) -> None:
        """Every decision lowers the rate, and never below min_lr."""
        decisions = drive(ReduceLROnPlateau(patience=patience, cooldown=cooldown,
                                            factor=factor, min_lr=min_lr),
                          epochs(val_loss=values), learning_rate=lr)
        current = lr
        for d in decisions:
            assert d.previous == current
            assert min_lr <= d.value < current
            current = d.value

    @given(st.integers(0, 4), st.integers(0, 4), st.floats(0.1, 0.9),
           st.integers(2, 20), st.floats(-5.0, 5.0))
    def test_constant_metric_cut_spacing(self, patience: int, cooldown: int, factor: float,
                                         n: int, value: float) -> None:
        """Under a constant metric (min_lr=0) the cuts come exactly
        max(patience, 1) + max(cooldown - 1, 0) epochs apart, the first at max(patience, 1)."""
        got = cut_epochs([value] * n, patience=patience, cooldown=cooldown, factor=factor)
        first = max(patience, 1)
        spacing = max(patience, 1) + max(cooldown - 1, 0)
        assert got == list(range(first, n, spacing))

    @given(metric_sequences(), st.integers(0, 4), st.integers(0, 3), st.floats(0.0, 0.5))
    def test_max_on_a_sequence_is_min_on_its_negation(
            self, values: list[float], patience: int, cooldown: int, min_delta: float) -> None:
        """mode='max' on x cuts exactly where mode='min' cuts on -x."""
        params = {"patience": patience, "cooldown": cooldown, "min_delta": min_delta,
                  "monitor": "score"}
        assert cuts(values, mode="max", **params) == cuts([-v for v in values], mode="min",
                                                          **params)

    @examples(FILES)  # a log written and replayed per example
    @given(metric_sequences(max_size=12), st.integers(0, 3), st.integers(0, 3))
    def test_replay_gives_the_same_decisions(self, values: list[float], patience: int,
                                             cooldown: int) -> None:
        """Replaying the log (learning rate included) reproduces every decision."""
        with tempfile.TemporaryDirectory() as directory:
            path = f"{directory}/run.jsonl"
            with Bus([ReduceLROnPlateau(patience=patience, cooldown=cooldown, factor=0.5)],
                     log=path, learning_rate=0.1) as bus:
                for event in epochs(val_loss=values):
                    bus.publish(event)
            result = replay(path, verify=True)
        assert result.ok, result.mismatch
        assert result.diverged_at is None

    @examples(FILES)  # a log written and replayed per example
    @given(metric_sequences(max_size=12), st.integers(0, 3), st.floats(0.05, 1.0))
    def test_replay_sees_a_rate_the_loop_moved_itself(self, values: list[float],
                                                      patience: int, decay: float) -> None:
        """A loop whose own scheduler decays the rate before each epoch (as a Trainer's
        linear decay does): the cuts start from the decayed rate the epoch logged, live and
        replayed alike, so replay verifies, with no divergence."""
        with tempfile.TemporaryDirectory() as directory:
            path = f"{directory}/run.jsonl"
            with Bus([ReduceLROnPlateau(patience=patience, factor=0.5)], log=path,
                     learning_rate=0.1) as bus:
                for event in epochs(val_loss=values):
                    if isinstance(event, EpochBegin) and event.epoch > 0:
                        bus.learning_rate = bus.learning_rate * decay  # the loop's scheduler
                    bus.publish(event)
            records = list(read_log(path))
            logged = {rec.seq: rec.logs.get("learning_rate") for rec in records
                      if rec.kind == "epoch_end"}
            cuts = [d for d in records if d.kind == "set_learning_rate"]
            assert all(d.previous == logged[d.cause_seq] for d in cuts)  # the decayed rate
            result = replay(path, verify=True)
        assert result.ok, result.mismatch
        assert result.diverged_at is None

    def test_a_resume_sees_a_rate_the_loop_moved_itself(self, tmp_path) -> None:
        """Resume feeds the log to the plugins as replay does: with the rate the loop moved
        itself, the recorded cuts are remade, with no warning that they differ."""
        path = tmp_path / "run.jsonl"
        bus = Bus([ReduceLROnPlateau(patience=1, factor=0.5)], log=path, learning_rate=0.1)
        bus.train_begin({"epochs": 4})
        for epoch, value in enumerate([1.0, 1.1, 1.2]):
            if epoch:
                bus.learning_rate = bus.learning_rate * 0.9  # the loop's scheduler
            bus.epoch_begin(epoch)
            bus.epoch_end(epoch, {"val_loss": value})
        bus.close()  # as a crash leaves it: no train_end
        with Bus([ReduceLROnPlateau(patience=1, factor=0.5)], log=path, resume=True) as again:
            assert again.initial_epoch == 3
        warned = [rec.message for rec in read_log(path) if rec.kind == "warning"]
        assert not warned
        assert replay(path, verify=True).ok

    @given(metric_sequences(max_size=10), st.integers(0, 3), st.integers(0, 3),
           st.integers(0, 30))
    def test_resume_from_any_prefix_gives_the_same_decisions(
            self, values: list[float], patience: int, cooldown: int, cut: int) -> None:
        """Crash anywhere, resume from the log: the same cuts, to the same rates."""
        full, resumed = resume_matches(
            lambda: [ReduceLROnPlateau(patience=patience, cooldown=cooldown, factor=0.5,
                                       min_lr=1e-3)],
            values, cut, learning_rate=0.1)
        assert resumed == full


def test_nan_is_never_an_improvement() -> None:
    """A NaN epoch counts toward patience like any epoch that does not improve."""
    assert cut_epochs([1.0, math.nan, math.nan], patience=2) == [2]


def test_a_first_nan_is_an_epoch_without_improvement() -> None:
    """A first NaN is not taken as the best (Keras 3.15 would): with patience=1 the rate is cut
    at epoch 0, as Keras 2 did, and the next real value is then the best."""
    plugin = ReduceLROnPlateau(patience=1)
    decisions = drive(plugin, epochs(val_loss=[math.nan, 0.5, 0.4]), learning_rate=1.0)
    assert [(d.epoch, d.value) for d in decisions] == [(0, 0.1)]
    assert plugin.best == 0.4


@given(metric_sequences())
def test_best_is_the_best_real_value(values: list[float]) -> None:
    """Property: whatever NaNs come, best is the lowest non-NaN value seen (None if none)."""
    plugin = ReduceLROnPlateau(patience=2, min_delta=0)
    drive(plugin, epochs(val_loss=values), learning_rate=1.0)
    real = [v for v in values if not math.isnan(v)]
    assert plugin.best == (min(real) if real else None)
