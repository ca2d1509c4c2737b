"""The shared monitor: mode inference, strict improvement with |min_delta|, best tracking."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import ConfigError
from plugins.monitor import Monitor, infer_mode, require_int, require_real

from plugin_strategies import finite_metric, metric_sequences


class TestInferMode:
    @pytest.mark.parametrize(("monitor", "mode"), [
        ("loss", "min"), ("val_loss", "min"), ("val_mean_squared_error", "min"),
        ("mae", "min"), ("output_1_loss", "min"), ("categorical_crossentropy", "min"),
        ("acc", "max"), ("val_acc", "max"), ("accuracy", "max"),
        ("val_sparse_categorical_accuracy", "max"), ("auc", "max"), ("val_precision", "max"),
        ("recall", "max"), ("f1_score", "max"), ("top_k_categorical_accuracy", "max"),
        ("val_AUC", "max"),
    ])
    def test_places_known_names(self, monitor: str, mode: str) -> None:
        """Losses and errors minimise; accuracy-like names maximise (after removing val_)."""
        assert infer_mode(monitor, plugin="P") == mode

    @pytest.mark.parametrize("monitor", ["val_false_positives", "learning_rate", "foo",
                                         "accuracy_loss"])
    def test_unplaceable_name_is_a_config_error(self, monitor: str) -> None:
        """A name that says nothing (or both things) asks for mode, naming plugin and field."""
        with pytest.raises(ConfigError, match="mode='min' or mode='max'") as info:
            Monitor(monitor, plugin="EarlyStopping")
        assert info.value.plugin == "EarlyStopping"
        assert info.value.field == "monitor"
        assert "EarlyStopping" in str(info.value) and monitor in str(info.value)

    def test_unplaceable_name_is_fine_with_explicit_mode(self) -> None:
        """An explicit mode needs no inference."""
        assert Monitor("val_false_positives", "min", plugin="P").mode == "min"

    def test_unknown_mode_is_an_error_not_a_fallback(self) -> None:
        """Keras warns and falls back to auto; here an unknown mode is refused."""
        with pytest.raises(ConfigError, match="mode must be") as info:
            Monitor("val_loss", "minimum", plugin="ReduceLROnPlateau")
        assert (info.value.plugin, info.value.field) == ("ReduceLROnPlateau", "mode")


class TestImprovement:
    @pytest.mark.parametrize(("mode", "min_delta", "best", "value", "improves"), [
        ("min", 0.0, 1.0, 0.999, True),
        ("min", 0.0, 1.0, 1.0, False),          # strict: equal is no improvement
        ("min", 0.1, 1.0, 0.9, False),          # 0.9 + 0.1 < 1.0 is false
        ("min", 0.1, 1.0, 0.89, True),
        ("min", -0.1, 1.0, 0.95, False),        # |min_delta|: a negative delta is positive
        ("max", 0.0, 0.5, 0.51, True),
        ("max", 0.05, 0.5, 0.55, False),
        ("max", 0.05, 0.5, 0.56, True),
        ("max", -0.05, 0.5, 0.54, False),
    ])
    def test_strict_with_absolute_min_delta(self, mode: str, min_delta: float, best: float,
                                            value: float, improves: bool) -> None:
        """min: value + |d| < best; max: value - |d| > best."""
        monitor = Monitor("x", mode, min_delta, plugin="P")
        monitor.update(best)
        assert monitor.improves(value) is improves

    @given(st.sampled_from(["min", "max"]), finite_metric)
    def test_first_value_always_improves(self, mode: str, value: float) -> None:
        """Whatever it is, the first real value is the best so far."""
        monitor = Monitor("x", mode, 1.0, plugin="P")
        assert monitor.update(value) and monitor.best == value

    @given(metric_sequences(), st.sampled_from(["min", "max"]))
    def test_nan_never_becomes_best(self, values: list[float], mode: str) -> None:
        """NaN is never an improvement, not even as the first value."""
        monitor = Monitor("x", mode, plugin="P")
        for value in values:
            improved = monitor.update(value)
            assert not (improved and math.isnan(value))
            assert monitor.best is None or not math.isnan(monitor.best)

    @given(metric_sequences(), st.floats(min_value=-1.0, max_value=1.0))
    def test_max_mirrors_min_on_negation(self, values: list[float], min_delta: float) -> None:
        """mode='max' on a sequence improves exactly where mode='min' does on its negation."""
        low = Monitor("x", "min", min_delta, plugin="P")
        high = Monitor("x", "max", min_delta, plugin="P")
        assert [high.update(v) for v in values] == [low.update(-v) for v in values]

    @given(metric_sequences(nan=False, min_size=1))
    def test_best_is_the_running_extreme_without_min_delta(self, values: list[float]) -> None:
        """With min_delta 0, best is the running minimum under mode='min'."""
        monitor = Monitor("x", "min", plugin="P")
        for i, value in enumerate(values):
            monitor.update(value)
            assert monitor.best == min(values[: i + 1])

    def test_initial_value_is_the_first_reference(self) -> None:
        """An initial best (ModelCheckpoint's initial_value_threshold) must be beaten."""
        monitor = Monitor("val_loss", plugin="P", initial=0.5)
        assert not monitor.update(0.6)
        assert monitor.update(0.4)
        monitor.reset()
        assert monitor.best == 0.5


class TestChecks:
    @pytest.mark.parametrize("value", [True, "1", None, 1.5])
    def test_require_int_refuses_non_ints(self, value: object) -> None:
        """Bools, strings and floats are not counts."""
        with pytest.raises(ConfigError, match="patience"):
            require_int(value, "patience", "EarlyStopping")

    @pytest.mark.parametrize("value", [math.nan, math.inf, "0.1", False])
    def test_require_real_refuses_non_finite_and_non_numbers(self, value: object) -> None:
        """A parameter such as min_delta must be a finite real number."""
        with pytest.raises(ConfigError) as info:
            require_real(value, "min_delta", "EarlyStopping")
        assert info.value.field == "min_delta"
