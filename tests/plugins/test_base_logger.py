"""plugins.BaseLogger: size-weighted epoch averages of batch metrics, as Keras 2's."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventbus import Bus
from eventbus.testing import RecordingWriter
from plugins import BaseLogger, History


def epoch_logs(plugins, batches, epoch_logs=None):
    """Run one epoch with ``batches`` (batch logs); return the recorded epoch_end logs."""
    writer = RecordingWriter()
    bus = Bus(plugins, log=writer)
    bus.train_begin()
    bus.epoch_begin(0)
    for i, logs in enumerate(batches):
        bus.batch_begin(i)
        bus.batch_end(i, logs)
    bus.epoch_end(0, epoch_logs)
    bus.train_end()
    bus.close()
    (end,) = [r for r in writer.records if r["kind"] == "epoch_end"]
    return end["logs"]


class TestBaseLogger:
    def test_weighted_by_size(self):
        """The epoch value is sum(value * size) / sum(size), Keras 2's formula."""
        logs = epoch_logs([BaseLogger()], [{"loss": 1.0, "size": 30}, {"loss": 2.0, "size": 10}])
        assert logs["loss"] == pytest.approx(1.25)
        assert "size" not in logs

    def test_loop_value_wins(self):
        """A metric the loop reports at epoch end keeps the loop's value."""
        logs = epoch_logs([BaseLogger()], [{"loss": 1.0, "size": 1}], {"loss": 9.0})
        assert logs["loss"] == 9.0

    def test_no_size_means_equal_weights(self):
        """Without size every batch counts once (Keras would divide by zero)."""
        logs = epoch_logs([BaseLogger()], [{"acc": 0.5}, {"acc": 1.0}])
        assert logs["acc"] == pytest.approx(0.75)

    def test_metric_in_some_batches_only(self):
        """A metric reported by some batches is averaged over those batches only."""
        logs = epoch_logs([BaseLogger()], [{"loss": 1.0, "size": 10},
                                           {"loss": 3.0, "aux": 4.0, "size": 10}])
        assert logs["aux"] == 4.0 and logs["loss"] == 2.0

    def test_stateful_metrics_keep_the_last_value(self):
        """stateful_metrics get the last batch value, not an average."""
        logs = epoch_logs([BaseLogger(stateful_metrics=["acc"])],
                          [{"acc": 0.2, "size": 5}, {"acc": 0.6, "size": 5}])
        assert logs["acc"] == 0.6

    def test_epochs_are_independent(self):
        """Averages restart at each epoch_begin."""
        history = History()
        bus = Bus([BaseLogger(), history])
        bus.train_begin()
        for epoch, value in enumerate([1.0, 3.0]):
            bus.epoch_begin(epoch)
            bus.batch_begin(0)
            bus.batch_end(0, {"loss": value, "size": 4})
            bus.epoch_end(epoch)
        bus.close()
        assert history.history["loss"] == [1.0, 3.0]

    def test_nan_propagates(self):
        """A NaN batch loss makes the epoch average NaN: it is not hidden."""
        logs = epoch_logs([BaseLogger()], [{"loss": math.nan, "size": 1}, {"loss": 1.0}])
        assert math.isnan(logs["loss"])

    def test_zero_size_batches_are_ignored(self):
        """A batch of size 0 carries no weight."""
        logs = epoch_logs([BaseLogger()], [{"loss": 5.0, "size": 0}, {"loss": 1.0, "size": 2}])
        assert logs["loss"] == 1.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.integers(1, 512)), min_size=1, max_size=20))
def test_average_matches_the_formula(batches):
    """Property: the epoch value equals the size-weighted mean of the batch values."""
    logs = epoch_logs([BaseLogger()], [{"loss": v, "size": s} for v, s in batches])
    expected = sum(v * s for v, s in batches) / sum(s for _, s in batches)
    assert logs["loss"] == pytest.approx(expected, rel=1e-9, abs=1e-9)
