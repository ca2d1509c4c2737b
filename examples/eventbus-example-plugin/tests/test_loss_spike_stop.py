"""LossSpikeStop tested as its users would test a plugin: with ``eventbus.testing``."""

from __future__ import annotations

import math

import pytest
from eventbus import ConfigError
from eventbus.testing import drive, epochs

from eventbus_example_plugin import LossSpikeStop


def test_a_spike_stops_with_reason_and_evidence():
    """Three normal epochs, then a loss three times their mean: stop on that epoch."""
    decisions = drive(LossSpikeStop(factor=2.0, window=3),
                      epochs(loss=[1.0, 0.9, 0.8, 2.7, 0.7]))
    assert [(d.kind, d.epoch, d.code) for d in decisions] == [("stop_training", 3, "loss_spike")]
    assert decisions[0].source == "LossSpikeStop"
    assert decisions[0].evidence["level"] == pytest.approx(0.9)
    assert decisions[0].evidence["window"] == [1.0, 0.9, 0.8]


def test_patience_needs_consecutive_spikes():
    """With patience=2 one spike is forgiven; two in a row stop."""
    assert drive(LossSpikeStop(patience=2), epochs(loss=[1.0, 1.0, 1.0, 5.0, 1.0, 5.0])) == []
    decisions = drive(LossSpikeStop(patience=2), epochs(loss=[1.0, 1.0, 1.0, 5.0, 6.0]))
    assert [(d.epoch, d.evidence["spikes"]) for d in decisions] == [(4, 2)]


def test_nan_is_ignored_and_infinity_is_a_spike():
    """NaN is TerminateOnNaN's business; an infinite loss is a spike."""
    assert drive(LossSpikeStop(window=1), epochs(loss=[1.0, math.nan, 1.0])) == []
    decisions = drive(LossSpikeStop(window=1), epochs(loss=[1.0, math.inf]))
    assert [d.epoch for d in decisions] == [1]


def test_a_missing_monitor_warns_once():
    """A monitor the logs lack is reported once, as a warning record, not an exception."""
    from eventbus.testing import run

    _, records = run([LossSpikeStop(monitor="val_loss")], epochs(loss=[1.0, 2.0, 3.0]))
    assert [r.kind for r in records].count("warning") == 1


@pytest.mark.parametrize("bad", [{"factor": 0.5}, {"window": 0}, {"patience": 1.5},
                                 {"monitor": ""}])
def test_bad_parameters_are_config_errors(bad):
    """Each bad parameter is a ConfigError naming the field."""
    with pytest.raises(ConfigError) as info:
        LossSpikeStop(**bad)
    assert info.value.field == next(iter(bad))
