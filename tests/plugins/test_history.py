"""plugins.History: Keras's History.history, aligned lists, reachable from the bus, replayable."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, replay
from eventbus.records import EpochBegin, EpochEnd, TrainBegin, TrainEnd
from eventbus.testing import epochs, run
from plugins import History


def nan_equal(a, b):
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y))
                                    for x, y in zip(a, b))


class TestHistory:
    def test_lists_per_metric(self):
        """history[key] holds one value per epoch, epoch lists the epochs, as Keras's."""
        history = History()
        run([history], epochs(loss=[0.5, 0.4], val_loss=[0.6, 0.5]))
        assert history.epoch == [0, 1]
        assert history.history == {"loss": [0.5, 0.4], "val_loss": [0.6, 0.5]}

    def test_learning_rate_from_the_bus(self):
        """The learning rate the bus adds to epoch logs is kept like any metric."""
        history = History()
        run([history], epochs(loss=[0.5, 0.4]), learning_rate=0.01)
        assert history.history["learning_rate"] == [0.01, 0.01]

    def test_late_and_missing_keys_are_padded_with_nan(self):
        """A key first seen in epoch 2 has NaN before; a key that stops has NaN after."""
        history = History()
        run([history], [TrainBegin(), EpochEnd(epoch=0, logs={"loss": 1.0}),
                         EpochEnd(epoch=1, logs={"loss": 0.5, "val_loss": 0.7}),
                         EpochEnd(epoch=2, logs={"val_loss": 0.6}), TrainEnd()])
        assert nan_equal(history.history["loss"], [1.0, 0.5, math.nan])
        assert nan_equal(history.history["val_loss"], [math.nan, 0.7, 0.6])

    def test_reachable_from_the_bus(self):
        """After training the bus has the History as bus.history, and History.of finds it."""
        history = History()
        bus, _ = run([history], epochs(loss=[0.1]))
        assert bus.history is history and History.of(bus) is history
        with pytest.raises(LookupError):
            History.of(Bus([]))

    def test_new_training_run_starts_afresh(self):
        """A second train_begin starts a new history, as each Keras fit() does."""
        history = History()
        bus = Bus([history])
        for _ in range(2):
            bus.train_begin()
            bus.epoch_begin(0)
            bus.epoch_end(0, {"loss": 0.3})
            bus.train_end()
        bus.close()
        assert history.epoch == [0] and history.history == {"loss": [0.3]}

    def test_replay_rebuilds_it(self, tmp_path):
        """History is pure: replaying a log rebuilds the same history from the header."""
        history = History()
        log = tmp_path / "run.jsonl"
        bus = Bus([history], log=log)
        for event in epochs(loss=[0.5, 0.4, 0.3]):
            bus.publish(event)
        bus.close()
        result = replay(log)
        (rebuilt,) = [p for p in result.plugins if isinstance(p, History)]
        assert rebuilt.history == history.history and rebuilt.epoch == history.epoch

    def test_resumed_run_keeps_the_epochs_before_the_crash(self, tmp_path):
        """On resume the recorded epochs are replayed into a fresh History."""
        log = tmp_path / "run.jsonl"
        bus = Bus([History()], log=log)
        bus.train_begin()
        for epoch in range(2):
            bus.epoch_begin(epoch)
            bus.epoch_end(epoch, {"loss": 1.0 - epoch / 10})
        bus.close()  # a crash before train_end
        history = History()
        bus = Bus([history], log=log, resume=True)
        bus.train_begin()
        bus.epoch_begin(2)
        bus.epoch_end(2, {"loss": 0.7})
        bus.train_end()
        bus.close()
        assert history.epoch == [0, 1, 2] and history.history["loss"] == [1.0, 0.9, 0.7]


@given(st.lists(st.dictionaries(st.sampled_from(["loss", "acc", "val_loss"]),
                                st.floats(allow_nan=False), max_size=3), max_size=6))
def test_lists_align_with_epochs(epoch_logs):
    """Property: every list has one entry per epoch, equal to that epoch's value or NaN."""
    history = History()
    events = [TrainBegin()]
    for epoch, logs in enumerate(epoch_logs):
        events += [EpochBegin(epoch=epoch), EpochEnd(epoch=epoch, logs=logs)]
    run([history], events + [TrainEnd()])
    assert history.epoch == list(range(len(epoch_logs)))
    for key, values in history.history.items():
        assert len(values) == len(epoch_logs)
        for logs, value in zip(epoch_logs, values):
            assert value == logs[key] if key in logs else math.isnan(value)
