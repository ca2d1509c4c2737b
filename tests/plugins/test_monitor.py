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
from eventbus import ConfigError
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
        assert make(monitor="val_top1").monitor.mode == "max"
        assert make(monitor="val_perplexity").monitor.mode == "min"


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
