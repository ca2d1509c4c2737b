"""eventbus.monitor: the one monitor rule (mode from the name, placed at the first comparison
when it must be, strict improvement with |min_delta|, best tracking) that the plugins and the
audit share.

Named test_monitor_rule, not test_monitor: tests/plugins/test_monitor.py exists, and two test
modules with one basename cannot be collected together (the test directories are not packages).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import ConfigError
from eventbus.monitor import (
    MAX_WORDS,
    MIN_WORDS,
    Monitor,
    fmt,
    guess_mode,
    infer_mode,
    why_unplaced,
)

from record_strategies import metric_runs, placed_metric_names

modes = st.sampled_from(["min", "max"])
#: Any float, NaN and the infinities included, with exact repeats so ties happen.
values = st.one_of(st.sampled_from([0.0, 0.5, 1.0, math.nan, math.inf, -math.inf]),
                   st.floats(allow_nan=True, allow_infinity=True))
min_deltas = st.floats(min_value=-1.0, max_value=1.0)
#: Names mode='auto' cannot place: no word of either kind, or both.
UNPLACEABLE = ["val_activation_mean", "learning_rate", "foo", "accuracy_loss",
               "val_false_positives", "true_negatives", "val_custom_metric", "my_metric"]


class TestInferMode:
    @pytest.mark.parametrize(("monitor", "mode"), [
        ("loss", "min"), ("val_loss", "min"), ("val_mean_squared_error", "min"),
        ("mae", "min"), ("output_1_loss", "min"), ("categorical_crossentropy", "min"),
        ("acc", "max"), ("val_acc", "max"), ("accuracy", "max"),
        ("val_sparse_categorical_accuracy", "max"), ("auc", "max"), ("val_precision", "max"),
        ("recall", "max"), ("f1_score", "max"), ("top_k_categorical_accuracy", "max"),
        ("val_AUC", "max"), ("val_top1", "max"), ("top5_accuracy", "max"),
        # Keras's built-in metrics that have a direction, by the names Keras gives them:
        ("val_mean_io_u", "max"), ("binary_io_u", "max"), ("one_hot_mean_io_u", "max"),
        ("log_cosh", "min"), ("val_cosine_similarity", "max"), ("pearson_correlation", "max"),
        ("concordance_correlation", "max"), ("log_cosh_error", "min"), ("r2_score", "max"),
    ])
    def test_places_known_names(self, monitor: str, mode: str) -> None:
        """Losses and errors minimise; accuracy-like names maximise (after removing val_)."""
        assert infer_mode(monitor, plugin="P") == mode

    @pytest.mark.parametrize("monitor", UNPLACEABLE)
    def test_infer_mode_refuses_an_unplaceable_name(self, monitor: str) -> None:
        """The strict rule asks for mode, naming the plugin, the field mode, the metric and,
        when given, the event."""
        with pytest.raises(ConfigError, match="mode='min' or mode='max'") as info:
            infer_mode(monitor, plugin="EarlyStopping", event="epoch_end (epoch 3)")
        assert (info.value.plugin, info.value.field) == ("EarlyStopping", "mode")
        assert f"EarlyStopping: mode='auto' cannot tell whether monitor={monitor!r}" in \
            str(info.value)
        assert "at epoch_end (epoch 3)" in str(info.value)

    @pytest.mark.parametrize("plugin", ["EarlyStopping", "ReduceLROnPlateau"])
    def test_a_name_the_logs_lack_is_said_to_be_absent_too(self, plugin: str) -> None:
        """A misspelt monitor under mode='auto' (``val_los``): the error asks for mode, as
        Keras's does, and also says the metric is not in the logs, naming those that are.
        A name the logs hold is asked for mode alone."""
        import plugins
        from eventbus import Bus

        def first_epoch(monitor: str) -> str:
            bus = Bus([getattr(plugins, plugin)(monitor=monitor)])
            bus.train_begin()
            bus.epoch_begin(0)
            with pytest.raises(ValueError, match="mode='min' or mode='max'") as info:
                bus.epoch_end(0, {"loss": 1.0, "val_loss": 1.0, "my_metric": 0.5})
            return str(info.value)

        assert first_epoch("val_los").endswith(
            "; and 'val_los' is not in the logs either (they hold 'loss', 'val_loss', "
            "'my_metric'): is it misspelt?")
        assert "not in the logs" not in first_epoch("my_metric")

    def test_a_long_list_of_metrics_is_cut_and_says_how_many_more(self) -> None:
        logs = {f"m{i:02d}": 0.0 for i in range(25)}
        with pytest.raises(ConfigError, match=r"they hold 'm00', .*'m19' and 5 more\)"):
            infer_mode("val_los", plugin="EarlyStopping", logs=logs)

    def test_unplaceable_name_is_fine_with_explicit_mode(self) -> None:
        """An explicit mode needs no inference."""
        assert Monitor("val_activation_mean", "max", plugin="P").mode == "max"


class TestLazyMode:
    """As Keras 3 (``_set_monitor_op`` at the first ``epoch_end``): a monitor is built whatever
    its name; a name the rule cannot place is an error at the first comparison."""

    @pytest.mark.parametrize("monitor", UNPLACEABLE)
    def test_unplaceable_name_builds_with_mode_unknown(self, monitor: str) -> None:
        """Building does not need the direction: mode is None until a comparison."""
        tracker = Monitor(monitor, plugin="EarlyStopping")
        assert tracker.mode is None and tracker.best is None
        tracker.reset()  # nothing compared: no error
        assert tracker.missing({"loss": 1.0}, "missing") is not None

    @pytest.mark.parametrize("monitor", UNPLACEABLE)
    def test_resolve_raises_naming_plugin_field_metric_and_event(self, monitor: str) -> None:
        """The first comparison's ConfigError says who, which field, which metric, where."""
        with pytest.raises(ConfigError, match="Pass mode='min' or mode='max'") as info:
            Monitor(monitor, plugin="ReduceLROnPlateau").resolve("epoch_end (epoch 1)")
        assert (info.value.plugin, info.value.field) == ("ReduceLROnPlateau", "mode")
        assert repr(monitor) in str(info.value) and "epoch_end (epoch 1)" in str(info.value)

    @pytest.mark.parametrize("compare", [
        lambda m: m.update(0.5), lambda m: m.improves(0.5), lambda m: m.beats(0.5, None),
        lambda m: m.beats(math.nan, 1.0), lambda m: m.worst(),
    ], ids=["update", "improves", "beats", "beats-nan", "worst"])
    def test_every_comparison_needs_the_direction(self, compare) -> None:
        """Whatever asks first (NaN included), an unplaced name raises and nothing changes."""
        monitor = Monitor("val_activation_mean", plugin="P", initial=None)
        with pytest.raises(ConfigError, match="at its first comparison"):
            compare(monitor)
        assert monitor.mode is None and monitor.best is None

    def test_resolve_of_a_placed_name_is_its_mode(self) -> None:
        """resolve() gives the mode already known, explicit or placed."""
        assert Monitor("val_acc", plugin="P").resolve("x") == "max"
        assert Monitor("val_acc", "min", plugin="P").resolve() == "min"

    def test_a_mode_set_by_hand_before_the_first_comparison_is_used(self) -> None:
        """mode is the direction the comparisons read: set it, and nothing is inferred."""
        monitor = Monitor("val_activation_mean", plugin="P")
        monitor.mode = "max"
        assert monitor.update(1.0) and monitor.update(2.0) and not monitor.update(1.5)

    @given(st.one_of(st.text(min_size=1, max_size=20), placed_metric_names()))
    def test_any_name_builds_and_mode_is_the_lenient_rule(self, name: str) -> None:
        """Property: building never fails on a name; mode is guess_mode's answer, and the
        first comparison raises exactly when that answer is None."""
        monitor = Monitor(name, plugin="P")
        assert monitor.mode == guess_mode(name)
        if monitor.mode is None:
            with pytest.raises(ConfigError) as info:
                monitor.update(1.0)
            assert (info.value.plugin, info.value.field) == ("P", "mode")
        else:
            assert monitor.update(1.0)

    @given(st.data(), metric_runs, min_deltas, st.one_of(st.none(), values))
    def test_a_placed_name_decides_as_the_mode_built_in(self, data: st.DataObject,
                                                        run: list[float], min_delta: float,
                                                        initial: float | None) -> None:
        """Property: for a name the rule places, mode='auto' makes every decision that the
        strict rule's mode given explicitly makes (what building with infer_mode gave)."""
        name = data.draw(placed_metric_names())
        if initial is not None and math.isnan(initial):
            initial = None
        auto = Monitor(name, "auto", min_delta, plugin="P", initial=initial)
        explicit = Monitor(name, infer_mode(name, plugin="P"), min_delta, plugin="P",
                           initial=initial)
        assert [auto.update(v) for v in run] == [explicit.update(v) for v in run]
        assert auto.best == explicit.best
        assert auto.worst() == explicit.worst()

    def test_unknown_mode_is_an_error_not_a_fallback(self) -> None:
        """Keras warns and falls back to auto; here an unknown mode is refused."""
        with pytest.raises(ConfigError, match="mode must be") as info:
            Monitor("val_loss", "minimum", plugin="ReduceLROnPlateau")
        assert (info.value.plugin, info.value.field) == ("ReduceLROnPlateau", "mode")

    def test_the_word_lists_do_not_overlap(self) -> None:
        """No word means both directions."""
        assert not MIN_WORDS & MAX_WORDS


class TestGuessMode:
    """The lenient form, for logs that already exist: None instead of an error."""

    @pytest.mark.parametrize(("name", "why"), [
        ("val_activation_mean", "no word that says which way is better"),
        ("accuracy_loss", "words of both kinds (['loss'] and ['accuracy'])"),
    ])
    def test_unplaceable_name_is_none_with_a_reason(self, name: str, why: str) -> None:
        """guess_mode does not guess: None, and why_unplaced says why."""
        assert guess_mode(name) is None
        assert why in why_unplaced(name)

    @given(st.one_of(st.text(max_size=20), placed_metric_names()))
    def test_is_the_strict_rule_without_the_error(self, name: str) -> None:
        """For any name, guess_mode gives what infer_mode gives, and None where it raises."""
        try:
            strict = infer_mode(name, plugin="P")
        except ConfigError:
            strict = None
        assert guess_mode(name) == strict

    @given(modes, st.data())
    def test_places_generated_names(self, mode: str, data: st.DataObject) -> None:
        """A name with one word of a kind among neutral ones, any case, is placed that way."""
        assert guess_mode(data.draw(placed_metric_names(mode))) == mode


class TestBeats:
    @given(modes, min_deltas, values, values, values)
    def test_is_a_strict_order_consistent_with_mode(self, mode: str, min_delta: float,
                                                    a: float, b: float, c: float) -> None:
        """beats is irreflexive, asymmetric and transitive, and only ever says lower is better
        under min and higher is better under max."""
        monitor = Monitor("x", mode, min_delta, plugin="P")
        assert not monitor.beats(a, a)
        if monitor.beats(a, b):
            assert not monitor.beats(b, a)
            assert (a < b) if mode == "min" else (a > b)
            if monitor.beats(b, c):
                assert monitor.beats(a, c)

    @given(modes, values, values)
    def test_without_min_delta_is_the_plain_comparison(self, mode: str, a: float,
                                                       b: float) -> None:
        """With min_delta 0, a beats b exactly when a < b (min) or a > b (max)."""
        monitor = Monitor("x", mode, plugin="P")
        assert monitor.beats(a, b) is ((a < b) if mode == "min" else (a > b))

    @given(modes, min_deltas, values)
    def test_nan_never_beats_and_none_is_beaten_by_all_else(self, mode: str, min_delta: float,
                                                             value: float) -> None:
        """No reference yet: every value but NaN improves; NaN improves on nothing."""
        monitor = Monitor("x", mode, min_delta, plugin="P")
        assert monitor.beats(value, None) is not math.isnan(value)
        assert not monitor.beats(math.nan, value)

    @given(modes, values)
    def test_worst_is_beaten_by_every_real_number(self, mode: str, value: float) -> None:
        """worst() is the value Keras starts best at: every number but itself beats it."""
        monitor = Monitor("x", mode, plugin="P")
        assert monitor.beats(value, monitor.worst()) is (
            not math.isnan(value) and value != monitor.worst())


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

    @given(modes, values.filter(lambda v: not math.isnan(v)))
    def test_first_value_always_improves(self, mode: str, value: float) -> None:
        """Whatever it is, the first value that is not NaN is the best so far."""
        monitor = Monitor("x", mode, 1.0, plugin="P")
        assert monitor.update(value) and monitor.best == value

    @given(metric_runs, modes)
    def test_nan_never_becomes_best(self, run: list[float], mode: str) -> None:
        """NaN is never an improvement, not even as the first value."""
        monitor = Monitor("x", mode, plugin="P")
        for value in run:
            improved = monitor.update(value)
            assert not (improved and math.isnan(value))
            assert monitor.best is None or not math.isnan(monitor.best)

    @given(metric_runs, min_deltas)
    def test_max_mirrors_min_on_negation(self, run: list[float], min_delta: float) -> None:
        """mode='max' on a sequence improves exactly where mode='min' does on its negation,
        and ends with the negated best."""
        low = Monitor("x", "min", min_delta, plugin="P")
        high = Monitor("x", "max", min_delta, plugin="P")
        assert [high.update(v) for v in run] == [low.update(-v) for v in run]
        assert high.best == (None if low.best is None else -low.best)

    @given(metric_runs, modes)
    def test_best_is_the_running_extreme_without_min_delta(self, run: list[float],
                                                          mode: str) -> None:
        """With min_delta 0, best is the running min (max) of the values that are not NaN."""
        monitor = Monitor("x", mode, plugin="P")
        pick = min if mode == "min" else max
        for i in range(len(run)):
            monitor.update(run[i])
            real = [v for v in run[: i + 1] if not math.isnan(v)]
            assert monitor.best == (pick(real) if real else None)

    def test_initial_value_is_the_first_reference(self) -> None:
        """An initial best (ModelCheckpoint's initial_value_threshold) must be beaten."""
        monitor = Monitor("val_loss", plugin="P", initial=0.5)
        assert not monitor.update(0.6)
        assert monitor.update(0.4)
        monitor.reset()
        assert monitor.best == 0.5

    def test_monitor_has_slots(self) -> None:
        """A monitor is small and fixed: no per-instance dict."""
        with pytest.raises(AttributeError):
            Monitor("val_loss", plugin="P").typo = 1  # type: ignore[attr-defined]


class TestFmt:
    @pytest.mark.parametrize(("value", "text"), [
        (None, "None"), (0.5603478503, "0.560348"), (1e-7, "1e-07"), (math.nan, "nan"),
        (math.inf, "inf"),
    ])
    def test_six_significant_digits(self, value: float | None, text: str) -> None:
        """Reasons show values with six significant digits."""
        assert fmt(value) == text
