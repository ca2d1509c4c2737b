"""plugins.Callback's ``self.model``: Keras's idioms as the callback's decisions, on a bus."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, NumpyModel, SinkFailureWarning
from plugins import Callback


class TestModelIdioms:
    """``self.model.stop_training`` and ``self.model.optimizer.learning_rate`` assignments
    become the callback's decisions: what the method meant by the end of the call."""

    @given(st.lists(st.one_of(st.booleans(), st.floats(0.0, 1.0, allow_nan=False)),
                    max_size=8))
    def test_the_last_assignment_of_each_wins(self, assignments):
        class Idioms(Callback):
            def on_epoch_end(self, epoch, logs=None):
                for value in assignments:
                    if isinstance(value, bool):
                        self.model.stop_training = value
                    else:
                        self.model.optimizer.learning_rate = value

        bus = Bus([Idioms()], learning_rate=0.5)
        bus.train_begin()
        bus.epoch_begin(0)
        decisions = bus.epoch_end(0, {"loss": 1.0})
        stops = [v for v in assignments if isinstance(v, bool)]
        rates = [v for v in assignments if not isinstance(v, bool)]
        assert [d.kind for d in decisions if d.kind == "stop_training"] == \
            (["stop_training"] if stops and stops[-1] else [])
        changes = [d for d in decisions if d.kind == "set_learning_rate"]
        assert [d.value for d in changes] == rates[-1:]
        assert all(d.source == "Idioms" and d.previous == 0.5 for d in changes)
        assert bus.stop_training == bool(stops and stops[-1])
        assert bus.learning_rate == (rates[-1] if rates else 0.5)
        bus.close()


def test_everything_else_is_the_adapter():
    """Reads go to the model adapter; with no adapter the error says so."""
    seen = []

    class Reader(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(sorted(self.model.get_weights()))
            seen.append(self.model.weights["w"].shape)

    bus = Bus([Reader()], model=NumpyModel({"w": np.zeros(3)}))
    bus.train_begin()
    bus.epoch_begin(0)
    bus.epoch_end(0, {"loss": 1.0})
    assert seen == [["w"], (3,)]
    bus.close()

    class NoModel(Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.get_weights()

    bus = Bus([NoModel()])
    bus.train_begin()
    bus.epoch_begin(0)
    with pytest.warns(SinkFailureWarning, match="NoModel on epoch_end: AttributeError"):
        bus.epoch_end(0, {"loss": 1.0})
    assert "self.model.get_weights: the bus has no model adapter" in bus.failures[0].message
    with pytest.warns(SinkFailureWarning):
        bus.close()
