"""plugins.History: Keras's History.history (only the keys each epoch reports), the aligned view,
reachable from the bus, replayable."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, replay
from eventbus.records import EpochBegin, EpochEnd, TrainBegin, TrainEnd
from eventbus.testing import epochs, run
from plugins import History, LearningRateScheduler


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

    def test_learning_rate_only_with_a_plugin_that_sets_it(self):
        """As Keras's History: the rate is a key only when a rate-setting plugin is on the
        bus (it then puts the rate in every epoch's logs); a bus that merely knows it does
        not add it."""
        history = History()
        run([history], epochs(loss=[0.5, 0.4]), learning_rate=0.01)
        assert set(history.history) == {"loss"}
        history = History()
        run([history, LearningRateScheduler(lambda epoch, lr: lr / 2)], epochs(loss=[0.5, 0.4]),
            learning_rate=0.01)
        assert history.history["learning_rate"] == [0.005, 0.0025]

    def test_an_epoch_appends_only_the_keys_it_reports(self):
        """As Keras 3: validation every 2 epochs of 4 gives val_loss 2 values, not 4."""
        history = History()
        run([history], [TrainBegin()] + [
            EpochEnd(epoch=e, logs={"loss": 1.0 - e / 10, **({"val_loss": 0.5} if e % 2 else {})})
            for e in range(4)] + [TrainEnd()])
        assert history.epoch == [0, 1, 2, 3]
        assert history.history == {"loss": [1.0, 0.9, 0.8, 0.7], "val_loss": [0.5, 0.5]}

    def test_late_and_missing_keys_are_not_padded(self):
        """A key first seen in epoch 2 starts there; a key that stops stops growing."""
        history = History()
        run([history], [TrainBegin(), EpochEnd(epoch=0, logs={"loss": 1.0}),
                         EpochEnd(epoch=1, logs={"loss": 0.5, "val_loss": 0.7}),
                         EpochEnd(epoch=2, logs={"val_loss": 0.6}), TrainEnd()])
        assert history.history == {"loss": [1.0, 0.5], "val_loss": [0.7, 0.6]}

    def test_aligned_pads_with_nan_to_the_epochs(self):
        """aligned(): one entry per epoch, NaN where the epoch lacked the metric."""
        history = History()
        run([history], [TrainBegin(), EpochEnd(epoch=0, logs={"loss": 1.0}),
                         EpochEnd(epoch=1, logs={"loss": 0.5, "val_loss": 0.7}),
                         EpochEnd(epoch=2, logs={"val_loss": 0.6}), TrainEnd()])
        aligned = history.aligned()
        assert nan_equal(aligned["loss"], [1.0, 0.5, math.nan])
        assert nan_equal(aligned["val_loss"], [math.nan, 0.7, 0.6])

    def test_aligned_is_a_copy(self):
        """Changing what aligned() returned leaves history as it was."""
        history = History()
        run([history], epochs(loss=[0.5, 0.4]))
        history.aligned()["loss"].append(0.3)
        assert history.history == {"loss": [0.5, 0.4]}

    def test_aligned_after_lists_changed_by_hand(self):
        """A list shortened or replaced by hand never misplaces or invents a value."""
        history = History()
        run([history], epochs(loss=[0.5, 0.4, 0.3]))
        history.history["loss"].pop()
        history.history["acc"] = [0.9, 0.8, 0.7]  # no record of where these came from
        aligned = history.aligned()
        assert nan_equal(aligned["loss"], [0.5, 0.4, math.nan])
        assert all(math.isnan(v) for v in aligned["acc"]) and len(aligned["acc"]) == 3

    def test_new_training_run_resets_the_aligned_view(self):
        """train_begin starts aligned() afresh too: no position from an earlier fit."""
        history = History()
        bus = Bus([history])
        bus.train_begin()
        bus.epoch_begin(0)
        bus.epoch_end(0, {"loss": 0.3, "val_loss": 0.4})
        bus.train_end()
        bus.train_begin()
        bus.epoch_begin(0)
        bus.epoch_end(0, {"loss": 0.2})
        bus.train_end()
        bus.close()
        assert history.aligned() == {"loss": [0.2]}

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
        assert rebuilt.aligned() == history.aligned()

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


epoch_logs = st.lists(st.dictionaries(st.sampled_from(["loss", "acc", "val_loss"]),
                                      st.floats(allow_nan=False), max_size=3), max_size=6)


def history_of(epoch_logs):
    history = History()
    events = [TrainBegin()]
    for epoch, logs in enumerate(epoch_logs):
        events += [EpochBegin(epoch=epoch), EpochEnd(epoch=epoch, logs=logs)]
    run([history], events + [TrainEnd()])
    return history


@given(epoch_logs)
def test_lists_are_what_the_epochs_reported(epoch_logs):
    """Property (Keras 3's rule): each list holds, in order, the values of the epochs whose
    logs had the key, and nothing for the others."""
    history = history_of(epoch_logs)
    assert history.epoch == list(range(len(epoch_logs)))
    keys = {key for logs in epoch_logs for key in logs}
    assert set(history.history) == keys
    for key in keys:
        assert history.history[key] == [logs[key] for logs in epoch_logs if key in logs]


@given(epoch_logs)
def test_aligned_lists_align_with_epochs(epoch_logs):
    """Property: every aligned list has one entry per epoch, equal to that epoch's value or
    NaN, and without its NaN gaps it is the Keras list."""
    history = history_of(epoch_logs)
    aligned = history.aligned()
    assert aligned.keys() == history.history.keys()
    for key, values in aligned.items():
        assert len(values) == len(epoch_logs)
        for logs, value in zip(epoch_logs, values):
            assert value == logs[key] if key in logs else math.isnan(value)
        assert [v for v in values if not math.isnan(v)] == history.history[key]
