"""plugins.BaseLogger: size-weighted epoch averages of batch metrics, as Keras 2's."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, ConfigError
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

    def test_one_stateful_metric_as_a_str(self):
        """stateful_metrics="acc" is the metric acc, not the letters a and c."""
        logger = BaseLogger(stateful_metrics="acc")
        assert logger.stateful_metrics == ["acc"]
        logs = epoch_logs([logger], [{"acc": 0.2, "a": 1.0, "size": 5},
                                     {"acc": 0.6, "a": 3.0, "size": 5}])
        assert logs["acc"] == 0.6 and logs["a"] == 2.0

    @pytest.mark.parametrize("value", [5, [1, "acc"], b"acc", {"acc": 1}])
    def test_bad_stateful_metrics(self, value):
        """Anything but None, a str or an iterable of str is a ConfigError naming the field."""
        with pytest.raises(ConfigError) as info:
            BaseLogger(stateful_metrics=value)
        assert (info.value.plugin, info.value.field) == ("BaseLogger", "stateful_metrics")

    def test_num_steps_is_ignored(self):
        """num_steps neither counts as a metric nor changes a batch's weight (its size)."""
        logs = epoch_logs([BaseLogger()], [{"loss": 1.0, "size": 30, "num_steps": 4},
                                           {"loss": 2.0, "size": 10, "num_steps": 1}])
        assert logs["loss"] == pytest.approx(1.25)
        assert "num_steps" not in logs

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


@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.integers(1, 512)), min_size=1, max_size=20))
def test_average_matches_the_formula(batches):
    """Property: the epoch value equals the size-weighted mean of the batch values."""
    logs = epoch_logs([BaseLogger()], [{"loss": v, "size": s} for v, s in batches])
    expected = sum(v * s for v, s in batches) / sum(s for _, s in batches)
    assert logs["loss"] == pytest.approx(expected, rel=1e-9, abs=1e-9)


@given(st.sampled_from(["acc", "loss", "auc", "a"]),
       st.lists(st.dictionaries(st.sampled_from(["acc", "loss", "auc", "a", "c"]),
                                st.floats(-10, 10), min_size=1), min_size=1, max_size=5))
def test_a_name_as_str_is_that_name_in_a_list(name, batches):
    """Property: BaseLogger(stateful_metrics=name) gives the epoch logs of
    BaseLogger(stateful_metrics=[name]), for any batches."""
    assert epoch_logs([BaseLogger(stateful_metrics=name)], batches) == \
        epoch_logs([BaseLogger(stateful_metrics=[name])], batches)
