"""plugins.Callback: Keras-style subclasses run on the bus; the seed's LossHistory unchanged."""

# ruff: noqa: B006 - the seed's example keeps its logs={} defaults, as written

from __future__ import annotations

import numpy as np
import pytest

from eventbus import Bus, NumpyModel
from eventbus.records import StopTraining
from eventbus.testing import RecordingWriter
from plugins import Callback


# The seed's example, with only the import changed (keras.callbacks.Callback -> Callback).
class LossHistory(Callback):
    def on_train_begin(self, logs={}):
        self.losses = []
    def on_batch_end(self, batch, logs={}):
        self.losses.append(logs.get('loss'))


def fit(callbacks, epochs=2, batches=3, model=None, **bus_options):
    """A small loop standing in for model.fit(..., callbacks=[...])."""
    bus = Bus(callbacks, model=model, **bus_options)
    bus.train_begin({"epochs": epochs, "steps": batches, "verbose": 0})
    for epoch in range(epochs):
        if bus.stop_training:
            break
        bus.epoch_begin(epoch)
        for b in range(batches):
            bus.batch_begin(b)
            bus.batch_end(b, {"loss": 1.0 / (epoch * batches + b + 1)})
        bus.epoch_end(epoch, {"loss": 0.1})
    bus.train_end()
    bus.close()
    return bus


class TestSeed:
    def test_loss_history(self):
        """The seed's LossHistory collects every batch loss, as print history.losses shows."""
        history = LossHistory()
        fit([history], epochs=2, batches=3)
        assert history.losses == [1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6]

    def test_only_overridden_methods_are_subscribed(self):
        """LossHistory overrides on_batch_end: it gets batch_end, never batch_begin or epochs."""
        bus = Bus([LossHistory()])
        assert len(bus.subscribers("batch_end")) == 1
        assert bus.subscribers("batch_begin") == [] and bus.subscribers("epoch_end") == []
        bus.close()


class TestKerasInterface:
    def test_model_and_params(self):
        """self.model is the bus's model adapter; self.params the train_begin params."""
        seen = {}

        class Inspect(Callback):
            def on_epoch_end(self, epoch, logs=None):
                seen["params"] = self.params
                seen["weights"] = sorted(self.model.get_weights())

        fit([Inspect()], epochs=1, model=NumpyModel({"w": np.zeros(2)}))
        assert seen == {"params": {"epochs": 1, "steps": 3, "verbose": 0}, "weights": ["w"]}

    def test_argument_conventions(self):
        """Keras's arguments: (epoch, logs), (batch, logs), (logs)."""
        calls = []

        class Everything(Callback):
            def on_train_begin(self, logs=None):
                calls.append(("train_begin", logs))
            def on_epoch_begin(self, epoch, logs=None):
                calls.append(("epoch_begin", epoch))
            def on_batch_begin(self, batch, logs=None):
                calls.append(("batch_begin", batch))
            def on_train_batch_end(self, batch, logs=None):
                calls.append(("train_batch_end", batch, logs["loss"]))
            def on_epoch_end(self, epoch, logs=None):
                calls.append(("epoch_end", epoch, logs["loss"]))
            def on_train_end(self, logs=None):
                calls.append(("train_end",))

        fit([Everything()], epochs=1, batches=1)
        assert calls == [("train_begin", {}), ("epoch_begin", 0), ("batch_begin", 0),
                         ("train_batch_end", 0, 1.0), ("epoch_end", 0, 0.1), ("train_end",)]

    def test_evaluation_and_prediction_hooks(self):
        """on_test_* and on_predict_* are called with Keras's arguments."""
        calls = []

        class Eval(Callback):
            def on_test_batch_end(self, batch, logs=None):
                calls.append(("test_batch_end", batch))
            def on_test_end(self, logs=None):
                calls.append(("test_end", logs))
            def on_predict_batch_begin(self, batch, logs=None):
                calls.append(("predict_batch_begin", batch))

        bus = Bus([Eval()])
        bus.test_batch_end(4, {"loss": 1.0})
        bus.test_end({"loss": 1.0})
        bus.predict_batch_begin(2)
        bus.close()
        assert calls == [("test_batch_end", 4), ("test_end", {"loss": 1.0}),
                         ("predict_batch_begin", 2)]

    def test_returning_a_decision_stops_training(self):
        """A method may return StopTraining: the bus records and applies it."""
        class StopEarly(Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 1:
                    return StopTraining(reason="two epochs are enough")
                return None

        writer = RecordingWriter()
        bus = fit([StopEarly()], epochs=5, log=writer)
        assert bus.stop_training
        assert [r["epoch"] for r in writer.records if r["kind"] == "epoch_end"] == [0, 1]
        (stop,) = [r for r in writer.records if r["kind"] == "stop_training"]
        assert stop["source"] == "StopEarly"

    def test_logs_are_copies(self):
        """Changing logs in a callback changes neither the log nor the next callback's logs."""
        class Vandal(Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs["loss"] = -1.0

        class Reader(Callback):
            def on_epoch_end(self, epoch, logs=None):
                self.loss = logs["loss"]

        reader, writer = Reader(), RecordingWriter()
        fit([Vandal(), reader], epochs=1, log=writer)
        assert reader.loss == 0.1
        assert [r["logs"]["loss"] for r in writer.records if r["kind"] == "epoch_end"] == [0.1]

    def test_failure_is_isolated(self):
        """A callback that raises is recorded as sink_failed and training goes on."""
        class Broken(Callback):
            def on_epoch_end(self, epoch, logs=None):
                raise RuntimeError("plot window closed")

        writer = RecordingWriter()
        with pytest.warns(UserWarning, match="plot window closed"):
            fit([Broken()], epochs=2, log=writer)
        kinds = [r["kind"] for r in writer.records]
        assert kinds.count("epoch_end") == 2 and kinds.count("sink_failed") == 1

    def test_subclass_of_a_subclass(self):
        """Overrides in a further subclass are subscribed too."""
        class Base(Callback):
            def on_epoch_end(self, epoch, logs=None):
                self.epochs = getattr(self, "epochs", 0) + 1

        class Child(Base):
            def on_batch_end(self, batch, logs=None):
                self.batches = getattr(self, "batches", 0) + 1

        child = Child()
        fit([child], epochs=2, batches=2)
        assert (child.epochs, child.batches) == (2, 4)

    def test_pure_callback_is_replayed_on_resume(self, tmp_path):
        """side_effects = False makes a callback part of resume: it sees the earlier epochs."""
        class Count(Callback):
            side_effects = False

            def on_epoch_end(self, epoch, logs=None):
                self.seen = getattr(self, "seen", []) + [epoch]

        log = tmp_path / "run.jsonl"
        bus = Bus([Count()], log=log)
        bus.train_begin()
        bus.epoch_begin(0)
        bus.epoch_end(0)
        bus.close()
        count = Count()
        bus = Bus([count], log=log, resume=True)
        bus.epoch_begin(1)
        bus.epoch_end(1)
        bus.close()
        assert count.seen == [0, 1]
