"""eventbus.integrations.keras: Keras 3 fit, evaluate and predict on the torch backend."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip("these tests run Keras on its torch backend", allow_module_level=True)

from eventbus import Bus, ConfigError, read_log, replay  # noqa: E402
from eventbus.integrations.keras import KerasBridge, KerasModel, from_keras_callback  # noqa: E402
from eventbus.records import SetLearningRate, StopTraining  # noqa: E402
from eventbus.testing import RecordingWriter, epochs  # noqa: E402
from plugins import EarlyStopping, ReduceLROnPlateau  # noqa: E402

# Keras's torch backend converts its own tensors the NumPy 1 way; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


def tiny_model(lr: float = 0.1) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, name="dense")],
                             name="sequential")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
    return model


def noise(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype("float32"), rng.normal(size=(n, 1)).astype("float32")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One fit through the bridge, shared by the tests that read its log."""
    log = tmp_path_factory.mktemp("keras") / "events.jsonl"
    model = tiny_model()
    x, y = noise(64, 0)
    vx, vy = noise(32, 1)
    bus = Bus([ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_delta=1e-3),
               EarlyStopping(monitor="val_loss", patience=3, min_delta=1e-3)], log=log)
    with bus:
        history = model.fit(x, y, validation_data=(vx, vy), epochs=40, batch_size=16,
                            verbose=0, callbacks=[KerasBridge(bus)])
        model.evaluate(vx, vy, verbose=0, callbacks=[KerasBridge(bus)])
        model.predict(vx, batch_size=16, verbose=0, callbacks=[KerasBridge(bus)])
    return model, history, list(read_log(log)), log


class TestFit:
    def test_stop_reaches_keras(self, fitted):
        """EarlyStopping's decision ends fit at the decided epoch."""
        _, history, records, _ = fitted
        stops = [r for r in records if isinstance(r, StopTraining)]
        assert stops, "noise targets should stop improving"
        assert len(history.history["loss"]) == stops[0].epoch + 1 < 40

    def test_learning_rate_reaches_the_optimizer(self, fitted):
        """ReduceLROnPlateau's last value is the optimizer's learning rate."""
        model, _, records, _ = fitted
        cuts = [r for r in records if isinstance(r, SetLearningRate)]
        assert cuts and cuts[0].previous == pytest.approx(0.1)
        assert float(model.optimizer.learning_rate) == pytest.approx(cuts[-1].value)

    def test_every_hook_is_published(self, fitted):
        """fit, its validation, evaluate and predict all reach the log, batches included."""
        _, history, records, _ = fitted
        kinds = {r.kind for r in records}
        assert {"train_begin", "epoch_begin", "batch_begin", "batch_end", "epoch_end",
                "test_begin", "test_batch_end", "test_end", "train_end", "predict_begin",
                "predict_batch_end", "predict_end"} <= kinds
        assert sum(r.kind == "batch_end" for r in records) == 4 * len(history.history["loss"])
        header = records[0]
        assert header.meta["model"]["weights"]["0.dense/kernel"] == [4, 1]

    def test_log_replays_with_verify(self, fitted):
        """The recorded decisions come back from a replay of the log."""
        *_, log = fitted
        result = replay(log, verify=True)
        assert result.ok and result.decisions


class TestKerasModel:
    def test_weights_round_trip(self):
        """Weights by layer order and role; set_weights assigns them back into the model."""
        model = tiny_model()
        adapter = KerasModel(model)
        weights = adapter.get_weights()
        assert set(weights) == {"0.dense/kernel", "0.dense/bias"}
        weights["0.dense/bias"] = np.array([3.0], dtype="float32")
        adapter.set_weights(weights)
        assert float(model.layers[0].bias.numpy()[0]) == 3.0

    def test_learning_rate(self):
        """The adapter reads and writes optimizer.learning_rate."""
        model = tiny_model(lr=0.2)
        adapter = KerasModel(model)
        assert adapter.learning_rate == pytest.approx(0.2)
        adapter.learning_rate = 0.05
        assert float(model.optimizer.learning_rate) == pytest.approx(0.05)

    def test_putting_an_optimizer_state_back_leaves_the_rate(self, tmp_path):
        """A backup's optimizer state, or a whole-model checkpoint, holds the rate of the epoch
        it was written in; restoring either keeps the run's rate (the bus sets it from the
        log), and restores the rest (the step count)."""
        model = tiny_model(lr=0.08)
        x, y = noise(32, 0)
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        adapter = KerasModel(model)
        state = adapter.get_optimizer_state()
        path = str(tmp_path / "whole.keras")
        adapter.save(path, weights_only=False)
        for restore in (adapter.set_optimizer_state, adapter.load):
            fresh = tiny_model(lr=0.08)
            KerasModel(fresh).learning_rate = 0.04
            getattr(KerasModel(fresh), restore.__name__)(state if restore.__name__ ==
                                                         "set_optimizer_state" else path)
            assert float(fresh.optimizer.learning_rate) == pytest.approx(0.04)
            assert int(fresh.optimizer.iterations) == 2


class TestKerasCallbacksOnTheBus:
    def test_keras_early_stopping_becomes_a_decision(self):
        """Keras's own EarlyStopping, run on the bus, stops it through a recorded decision."""
        model = tiny_model()
        writer = RecordingWriter()
        bus = Bus([from_keras_callback(keras.callbacks.EarlyStopping(patience=1), model=model)],
                  log=writer)
        for event in epochs(val_loss=[0.5, 0.6, 0.7, 0.8]):
            bus.publish(event)
            if bus.stop_training:
                break
        stops = [r for r in writer.records if r["kind"] == "stop_training"]
        assert len(stops) == 1
        assert stops[0]["source"] == "EarlyStopping"
        assert stops[0]["code"] == "keras_stop_training" and stops[0]["epoch"] == 1
        assert model.stop_training is False  # the bus owns the flag

    def test_a_keras_callback_given_unwrapped_is_refused_naming_the_wrapper(self):
        """Keras's own callback handed to the bus as it is would never be called (its methods
        take Keras's arguments): a ConfigError saying to wrap it, not a run that trains on
        past the stop it was given for."""
        with pytest.raises(ConfigError) as info:
            Bus([keras.callbacks.EarlyStopping(patience=1)])
        assert info.value.plugin == "EarlyStopping"
        assert "is a Keras callback" in str(info.value)
        assert "from_keras_callback(callback, model=keras_model)" in str(info.value)

    def test_keras_early_stopping_stops_a_loop_with_no_keras_model(self):
        """A NumPy or PyTorch loop has no Keras model to give: Keras's EarlyStopping set
        ``stop_training`` on None, an AttributeError exactly when it should stop, and the run
        trained on. It gets a stand-in holding the flag; the bus stops where Keras would."""
        bus = Bus([from_keras_callback(keras.callbacks.EarlyStopping(patience=1))])
        stopped = None
        for event in epochs(val_loss=[0.5, 0.4, 0.45, 0.3, 0.2]):
            bus.publish(event)
            if bus.stop_training:
                stopped = event.epoch
                break
        assert stopped == 2 and not bus.failures

    def test_a_keras_callback_needing_the_model_says_to_give_it(self):
        """What else one of Keras's callbacks reads of the stand-in is an error naming the
        fix; a callback of the user's gets no model, as before (one that checks
        ``self.model is None`` goes on as it did)."""
        stopper = keras.callbacks.EarlyStopping(patience=1, restore_best_weights=True)
        bus = Bus([from_keras_callback(stopper)])
        with pytest.warns(Warning, match=r"EarlyStopping needs the Keras model for "
                                         r"model.get_weights; give it: from_keras_callback"):
            for event in epochs(val_loss=[0.5]):
                bus.publish(event)
            bus.close()

        class Careful(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if self.model is not None:
                    self.model.save("elsewhere.keras")

        bus = Bus([from_keras_callback(Careful())])
        for event in epochs(val_loss=[0.5]):
            bus.publish(event)
        assert not bus.failures
        bus.close()

    def test_plain_object_with_keras_methods(self):
        """Any object with Keras's method names runs; only the methods it has are called."""

        class Seen:
            def __init__(self):
                self.calls = []

            def on_epoch_end(self, epoch, logs=None):
                self.calls.append((epoch, logs["val_loss"]))

        seen = Seen()
        bus = Bus([from_keras_callback(seen)])
        for event in epochs(val_loss=[0.5, 0.4]):
            bus.publish(event)
        assert seen.calls == [(0, 0.5), (1, 0.4)]
        assert bus.label(bus.plugins[0]) == "Seen"


def test_a_checkpoint_loads_back_into_the_keras_model(tmp_path):
    """The way keras.md gives: a weights checkpoint is Keras's, model.load_weights reads it."""
    from plugins import ModelCheckpoint

    model = tiny_model()
    x, y = noise(64, 0)
    path = str(tmp_path / "best.weights.h5")
    with Bus([ModelCheckpoint(path, save_weights_only=True)]) as bus:
        model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[KerasBridge(bus)])
    saved = [w.copy() for w in model.get_weights()]
    fresh = tiny_model()
    fresh.set_weights([np.zeros_like(w) for w in saved])
    fresh.load_weights(path)
    assert all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), saved))


def test_a_second_fit_on_one_bus_trains(tmp_path):
    """The bus clears stop_training at train_begin, as Keras's fit does."""
    model = tiny_model()
    x, y = noise(64, 0)
    with Bus([EarlyStopping(monitor="loss", patience=0, mode="max")]) as bus:
        model.fit(x, y, epochs=5, batch_size=16, verbose=0, callbacks=[KerasBridge(bus)])
        assert bus.stop_training
        history = model.fit(x, y, epochs=2, batch_size=16, verbose=0,
                            callbacks=[KerasBridge(bus)])
    assert len(history.epoch) == 2


class Rates(keras.callbacks.Callback):
    """The optimizer's learning rate as each epoch begins (after the callbacks before it)."""

    def __init__(self):
        super().__init__()
        self.rates: dict[int, float] = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.rates[epoch] = float(self.model.optimizer.learning_rate)


class Interrupt(keras.callbacks.Callback):
    """Ctrl-C as epoch ``at`` ends (after the bridge has published it)."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


def test_a_resumed_bus_gives_its_rate_to_the_model_the_bridge_attaches(tmp_path):
    """Bus(resume=True) has no model; the bridge attaches the Keras model at fit. The model
    trains on at the rate the log ends with (0.04, cut from 0.08 as epoch 1 ended), not at its
    optimizer's initial one, and the next cut is an uninterrupted fit's: replay verifies."""
    log = tmp_path / "events.jsonl"
    x, y = noise(32, 0)

    def plateau():
        return ReduceLROnPlateau(monitor="loss", min_delta=100.0, patience=1, factor=0.5)

    with Bus([plateau()], log=log, resume=True) as bus, pytest.raises(KeyboardInterrupt):
        tiny_model(lr=0.08).fit(x, y, epochs=4, batch_size=16, verbose=0, shuffle=False,
                                callbacks=[KerasBridge(bus), Interrupt(at=1)])
    rates = Rates()
    with Bus([plateau()], log=log, resume=True) as bus:
        model = tiny_model(lr=0.08)
        model.fit(x, y, epochs=4, batch_size=16, verbose=0, shuffle=False,
                  callbacks=[KerasBridge(bus), rates])
    assert rates.rates == pytest.approx({2: 0.04, 3: 0.02})
    cuts = [rec.value for rec in read_log(log) if isinstance(rec, SetLearningRate)]
    assert cuts == pytest.approx([0.04, 0.02, 0.01])
    assert replay(log, verify=True).ok
