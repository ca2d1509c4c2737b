"""plugins.monitor: the plugins' side of the shared monitor.

The rule itself (mode inference, strict improvement with |min_delta|, best tracking) is the
core's, tested in tests/eventbus/test_monitor_rule.py; here: that the plugins get that very
rule, and the parameter checks every plugin makes.
"""

from __future__ import annotations

import math

import pytest

import eventbus.monitor
import plugins.monitor
from eventbus import Bus, ConfigError
from plugins import EarlyStopping, ModelCheckpoint, ReduceLROnPlateau
from plugins.monitor import require_int, require_real


class TestTheCoreRule:
    @pytest.mark.parametrize("name", ["MAX_WORDS", "MIN_WORDS", "Mode", "Monitor", "fmt",
                                      "infer_mode", "require_real"])
    def test_names_are_the_cores(self, name: str) -> None:
        """plugins.monitor re-exports the core's objects: one rule, not a copy."""
        assert getattr(plugins.monitor, name) is getattr(eventbus.monitor, name)

    @pytest.mark.parametrize("make", [
        lambda **kw: EarlyStopping(**kw), lambda **kw: ReduceLROnPlateau(**kw),
        lambda **kw: ModelCheckpoint("best.h5", save_best_only=True, **kw),
    ], ids=["EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint"])
    def test_plugins_place_names_by_the_core_rule(self, make) -> None:
        """The plugins that monitor a metric place it by eventbus.monitor's words."""
        assert make(monitor="val_top1").tracker.mode == "max"
        assert make(monitor="val_perplexity").tracker.mode == "min"


class TestKerasNames:
    """``best`` and ``monitor_op`` as code written against Keras's callbacks uses them."""

    MAKERS = [lambda: EarlyStopping(monitor="loss", patience=3),
              lambda: ReduceLROnPlateau(monitor="loss", patience=1),
              lambda: ModelCheckpoint("best.keras", monitor="loss", save_best_only=True)]

    @pytest.mark.parametrize(("make", "reset"), list(zip(MAKERS, [True, True, False])),
                             ids=["EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint"])
    def test_best_may_be_set_and_train_begin_resets_it_as_keras_does(self, make, reset) -> None:
        """Keras's test_state_reset_across_fit_calls: state set by hand is cleared by the next
        fit's train_begin; ModelCheckpoint's best carries over to the next fit, as Keras's."""
        plugin = make()
        plugin.best = 0.1
        assert plugin.best == 0.1 and plugin.tracker.best == 0.1
        plugin.best = float("inf")  # Keras 2's start, accepted
        assert plugin.best == math.inf
        plugin.best = 0.5
        bus = Bus([plugin])
        bus.train_begin()
        assert plugin.best == (None if reset else 0.5)
        bus.close()

    @pytest.mark.parametrize("make", MAKERS, ids=["EarlyStopping", "ReduceLROnPlateau",
                                                   "ModelCheckpoint"])
    def test_a_best_set_by_hand_is_what_the_next_value_is_compared_with(self, make) -> None:
        plugin = make()
        plugin.best = 0.2
        assert not plugin.tracker.update(0.3)
        assert plugin.tracker.update(0.1) and plugin.best == 0.1

    @pytest.mark.parametrize("value", [math.nan, "0.1", True, [0.1]])
    def test_best_refuses_what_is_not_a_number(self, value: object) -> None:
        plugin = EarlyStopping(monitor="loss")
        with pytest.raises(ConfigError) as info:
            plugin.best = value
        assert (info.value.plugin, info.value.field) == ("EarlyStopping", "best")
        assert plugin.best is None

    def test_a_checkpoint_that_monitors_nothing_has_no_best_to_set(self) -> None:
        plugin = ModelCheckpoint("every.keras")
        assert plugin.best is None and plugin.monitor_op is None
        with pytest.raises(ConfigError, match="save_best_only"):
            plugin.best = 0.1

    @pytest.mark.parametrize("make", [
        lambda **kw: EarlyStopping(**kw), lambda **kw: ReduceLROnPlateau(**kw),
        lambda **kw: ModelCheckpoint("best.keras", save_best_only=True, **kw),
        lambda **kw: ModelCheckpoint("every.keras", **kw),
    ], ids=["EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint", "ModelCheckpoint-every"])
    def test_the_arguments_read_back_by_keras_names(self, make) -> None:
        """Code written against Keras reads ``monitor`` as the metric's name, ``mode`` as given
        and ``min_delta`` as its absolute value (Keras's test_EarlyStopping_reuse and
        friends); the rule object is ``tracker``."""
        default = make()
        assert default.monitor == "val_loss" and default.mode == "auto"
        plugin = make(monitor="val_acc", mode="max")
        assert (plugin.monitor, plugin.mode) == ("val_acc", "max")
        if plugin.tracker is not None:
            assert plugin.tracker.monitor == "val_acc" and plugin.tracker.mode == "max"
        if not isinstance(plugin, ModelCheckpoint):
            assert make(min_delta=-0.5).min_delta == 0.5

    def test_monitor_op_says_which_way_is_better(self) -> None:
        import numpy as np

        assert EarlyStopping(monitor="val_acc").monitor_op(2.0, 1.0)
        assert not EarlyStopping(monitor="val_loss").monitor_op(np.float64(2.0), 1.0)


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
