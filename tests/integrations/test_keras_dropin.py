"""The plugins straight into Keras 3's ``model.fit`` (torch backend): one bus per call, Keras's
History beside it, an explicit KerasBridge still supported; Keras's idioms in a Callback."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip("these tests run Keras on its torch backend", allow_module_level=True)

from eventbus import Bus, ConfigError, SinkFailureWarning, read_log  # noqa: E402
from eventbus.integrations.keras import KerasBridge  # noqa: E402
from eventbus.records import SetLearningRate, StopTraining  # noqa: E402
from plugins import (  # noqa: E402
    BackupAndRestore,
    BaseLogger,
    Callback,
    CSVLogger,
    EarlyStopping,
    History,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgbarLogger,
    ReduceLROnPlateau,
    RemoteMonitor,
    TensorBoard,
    TerminateOnNaN,
)

pytestmark = pytest.mark.filterwarnings(  # Keras's torch backend, not ours to fix
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


def tiny_model(lr=0.1, optimizer=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer or keras.optimizers.SGD(learning_rate=lr), loss="mse")
    return model


def noise(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype("float32"), rng.normal(size=(n, 1)).astype("float32")


def fit(model, callbacks, epochs=2, **kwargs):
    x, y = noise()
    return model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=callbacks,
                     **kwargs)


# Every built-in plugin, built for a fit of 2 epochs: tmp is a directory, url a live server,
# log where the fit's bus records.
BUILT_IN = {
    "BackupAndRestore": lambda tmp, url, log: BackupAndRestore(tmp / "backup", log=log),
    "BaseLogger": lambda tmp, url, log: BaseLogger(log=log),
    "CSVLogger": lambda tmp, url, log: CSVLogger(tmp / "log.csv", log=log),
    "EarlyStopping": lambda tmp, url, log: EarlyStopping(monitor="loss", log=log),
    "History": lambda tmp, url, log: History(log=log),
    "LambdaCallback": lambda tmp, url, log: LambdaCallback(
        on_epoch_end=lambda epoch, logs: None, log=log),
    "LearningRateScheduler": lambda tmp, url, log: LearningRateScheduler(lambda epoch: 0.05,
                                                                         log=log),
    "ModelCheckpoint": lambda tmp, url, log: ModelCheckpoint(str(tmp / "ckpt.weights.h5"),
                                                             monitor="loss", log=log),
    "ProgbarLogger": lambda tmp, url, log: ProgbarLogger(file=io.StringIO(), log=log),
    "ReduceLROnPlateau": lambda tmp, url, log: ReduceLROnPlateau(monitor="loss", log=log),
    "RemoteMonitor": lambda tmp, url, log: RemoteMonitor(url, log=log),
    "TensorBoard": lambda tmp, url, log: TensorBoard(tmp / "tb", log=log),
    "TerminateOnNaN": lambda tmp, url, log: TerminateOnNaN(log=log),
}


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_every_built_in_plugin_is_a_keras_callback(name, tmp_path, server):
    """Each plugin alone in ``callbacks=[...]``: fit runs its epochs, Keras's History works,
    and the plugin did its job on a bus of its own (its log, when asked with log=)."""
    collector = server()
    plugin = BUILT_IN[name](tmp_path, collector.url, str(tmp_path / "events.jsonl"))
    history = fit(tiny_model(), [plugin])
    assert len(history.history["loss"]) == 2
    records = list(read_log(tmp_path / "events.jsonl"))
    assert [p.name for p in records[0].plugins][0] == name
    assert [r.kind for r in records].count("epoch_end") == 2
    assert records[-1].kind == "train_end"
    if name == "RemoteMonitor":
        assert len(collector.requests) == 2
    if name == "CSVLogger":
        assert len((tmp_path / "log.csv").read_text().splitlines()) == 3
    if name == "LearningRateScheduler":
        assert history.history["learning_rate"] == [pytest.approx(0.05)] * 2


def test_a_fit_without_a_rate_plugin_keeps_keras_keys(tmp_path):
    """Keras adds learning_rate to the logs only with its rate callbacks: a drop-in fit with
    EarlyStopping and History gives Keras's History, and the log's epochs, the loss alone."""
    plugins = [EarlyStopping(monitor="loss", log=str(tmp_path / "run.jsonl")), History()]
    history = fit(tiny_model(), plugins)
    assert set(history.history) == set(plugins[1].history) == {"loss"}
    epoch_logs = [r.logs for r in read_log(tmp_path / "run.jsonl") if r.kind == "epoch_end"]
    assert [set(logs) for logs in epoch_logs] == [{"loss"}, {"loss"}]


def test_one_bus_for_the_plugins_of_one_fit(tmp_path):
    """Plugins given to one fit share one bus: one log (asked for by log= on any of them),
    listing them in Keras's list order, each event once; Keras's History and a Keras
    callback between them run as usual."""
    seen = []
    keras_cb = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))
    plugins = [ReduceLROnPlateau(monitor="loss", patience=0, factor=0.5, min_delta=10.0),
               EarlyStopping(monitor="loss", patience=2, min_delta=10.0),
               History(log=str(tmp_path / "run.jsonl"))]
    history = fit(tiny_model(), [plugins[0], keras_cb, plugins[1], plugins[2]], epochs=10)
    records = list(read_log(tmp_path / "run.jsonl"))
    header = records[0]
    assert [p.name for p in header.plugins] == ["ReduceLROnPlateau", "EarlyStopping", "History"]
    assert "log" not in header.plugins[2].params  # where to record is not a plugin parameter
    kinds = [r.kind for r in records]
    assert kinds.count("train_begin") == 1 and kinds.count("epoch_end") == 3
    stop = next(r for r in records if isinstance(r, StopTraining))
    assert (stop.source, stop.epoch) == ("EarlyStopping", 2)
    cuts = [r for r in records if isinstance(r, SetLearningRate)]
    assert [c.source for c in cuts] == ["ReduceLROnPlateau"] * 2
    assert seen == [0, 1, 2] and len(history.history["loss"]) == 3
    assert plugins[2].history["loss"] == history.history["loss"]
    # Each epoch's rate, as Keras's own ReduceLROnPlateau logs it: a cut at an epoch's end
    # shows from the next epoch on; the same in the log.
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05])
    assert history.history["learning_rate"] == pytest.approx(
        [r.logs["learning_rate"] for r in records if r.kind == "epoch_end"])


def test_a_second_fit_is_a_new_run(tmp_path):
    """The same plugin in a second fit: a bus of its own, which starts afresh (as Keras's
    EarlyStopping reused across fits), and the log is written anew for it."""
    stopper = EarlyStopping(monitor="loss", patience=1, min_delta=10.0,
                            log=str(tmp_path / "run.jsonl"))
    model = tiny_model()
    first = fit(model, [stopper], epochs=10)
    second = fit(model, [stopper], epochs=10)
    assert len(first.history["loss"]) == len(second.history["loss"]) == 2
    records = list(read_log(tmp_path / "run.jsonl"))
    assert [r.kind for r in records].count("train_begin") == 1


def test_an_explicit_bridge_lends_its_bus(tmp_path):
    """KerasBridge(bus) in the same list: the plugins beside it are registered on its bus
    (a plugin already there is not added twice); the bus is the caller's, left open."""
    early = EarlyStopping(monitor="loss", patience=1, min_delta=10.0)
    logger = History()
    bus = Bus([early], log=tmp_path / "run.jsonl")
    with bus:
        fit(tiny_model(), [early, KerasBridge(bus), logger], epochs=10)
        assert bus.plugins == [early, logger]
        assert len(logger.history["loss"]) == 2
    kinds = [r.kind for r in read_log(tmp_path / "run.jsonl")]
    assert kinds.count("epoch_end") == 2 and kinds.count("stop_training") == 1


def test_plugins_lent_after_the_bridge_are_in_the_header_and_replay(tmp_path):
    """The bridge first in the list publishes the call's first event before the plugins after
    it are called: it registers them first, so the header lists them (no 'registered after
    the run started') and replay --verify checks their decisions (it checked none)."""
    from eventbus import replay

    bus = Bus([], log=tmp_path / "run.jsonl")
    with bus:
        fit(tiny_model(), [KerasBridge(bus), EarlyStopping(monitor="loss", patience=1,
                                                           min_delta=10.0)], epochs=10)
    header, *records = read_log(tmp_path / "run.jsonl")
    assert [p.name for p in header.plugins] == ["EarlyStopping"]
    assert "warning" not in [r.kind for r in records]
    result = replay(tmp_path / "run.jsonl", verify=True)
    assert [d.kind for d in result.decisions] == ["stop_training"]


class StopAtEpoch(Callback):
    """Keras users' way: set the flag and the rate on self.model."""

    def __init__(self, epoch: int, rate: float | None = None):
        super().__init__()
        self.epoch, self.rate = epoch, rate

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            if self.rate is not None:
                self.model.optimizer.learning_rate = self.rate
            self.model.stop_training = True


def test_model_idioms_in_a_keras_fit(tmp_path):
    """In model.fit: ``self.model.stop_training = True`` ends fit after that epoch and
    ``self.model.optimizer.learning_rate = x`` reaches the optimizer, both recorded as the
    callback's decisions."""
    model = tiny_model()
    history = fit(model, [StopAtEpoch(1, rate=0.02, log=str(tmp_path / "run.jsonl"))],
                  epochs=10)
    assert len(history.history["loss"]) == 2
    assert float(model.optimizer.learning_rate) == pytest.approx(0.02)
    decisions = [r for r in read_log(tmp_path / "run.jsonl") if r.category == "decision"]
    assert [(d.kind, d.source, d.epoch) for d in decisions] == [
        ("set_learning_rate", "StopAtEpoch", 1), ("stop_training", "StopAtEpoch", 1)]
    assert decisions[0].previous == pytest.approx(0.1) and decisions[0].value == 0.02


@pytest.mark.parametrize("layer, chosen", [("embedding", None), ("word_embedding", "name"),
                                           ("word_embedding", "path")])
def test_tensorboard_finds_a_keras_embedding_by_its_name_or_path(tmp_path, layer, chosen):
    """embeddings_metadata keyed by the layer's Keras name (``embedding``, as Keras documents
    it), embeddings_layer_names by the name given or the path: the projector has the matrix,
    under its stable key, with its labels, and nothing is warned (a warning fails the test)."""
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_config_pb2

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Embedding(5, 2, name=layer),
                              keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    path = model.layers[0].path  # sequential_<n>/word_embedding: Keras numbers models
    names = {None: None, "name": [layer], "path": [path]}[chosen]
    labels = tmp_path / "words.tsv"
    labels.write_text("".join(f"w{i}\n" for i in range(5)))
    x = np.arange(16).reshape(8, 2) % 5
    model.fit(x, np.zeros((8, 1), "float32"), batch_size=8, epochs=1, verbose=0,
              callbacks=[TensorBoard(tmp_path / "tb", embeddings_freq=1,
                                     embeddings_layer_names=names,
                                     embeddings_metadata={layer: str(labels)})])
    config = text_format.Parse((tmp_path / "tb" / "projector_config.pbtxt").read_text(),
                               projector_config_pb2.ProjectorConfig())
    assert [e.tensor_name for e in config.embeddings] == ["0.embedding/embeddings:00000"]
    assert (tmp_path / "tb" / config.embeddings[0].metadata_path).read_text() == \
        labels.read_text()


def test_model_idioms_on_a_bus():
    """Without Keras, on a bus with a learning rate: the same two decisions, applied by the
    bus, with the callback as source; the flag reads back as set within the call."""
    read = []

    class Stop(Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.optimizer.learning_rate = 0.5 * self.model.optimizer.learning_rate
            self.model.stop_training = True
            read.append((self.model.stop_training, self.model.optimizer.learning_rate))

    bus = Bus([Stop()], learning_rate=0.2)
    bus.train_begin()
    bus.epoch_begin(0)
    decisions = bus.epoch_end(0, {"loss": 1.0})
    assert [type(d) for d in decisions] == [SetLearningRate, StopTraining]  # as assigned
    assert all(d.source == "Stop" for d in decisions)
    assert bus.stop_training and bus.learning_rate == pytest.approx(0.1)
    assert read == [(True, pytest.approx(0.1))]
    bus.close()


def test_a_learning_rate_where_the_run_has_none():
    """No learning rate anywhere: the assignment is a clear error, recorded as the callback's
    failure (callbacks have side effects: training goes on)."""
    bus = Bus([StopAtEpoch(0, rate=0.01)])
    bus.train_begin()
    bus.epoch_begin(0)
    with pytest.warns(SinkFailureWarning, match="StopAtEpoch on epoch_end: ConfigError"):
        bus.epoch_end(0, {"loss": 1.0})
    failure = bus.failures[0]
    assert failure.sink == "StopAtEpoch" and failure.error == "ConfigError"
    assert "self.model.optimizer.learning_rate = 0.01: the run has no learning rate" in \
        failure.message
    with pytest.warns(SinkFailureWarning, match="no learning rate to change"):
        bus.close()


@pytest.mark.parametrize("value", ["0.1", -1.0, float("nan")])
def test_a_bad_learning_rate_names_the_callback(value):
    class Bad(Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.optimizer.learning_rate = value

    bus = Bus([Bad()], learning_rate=0.1)
    bus.train_begin()
    bus.epoch_begin(0)
    with pytest.warns(SinkFailureWarning, match="Bad on epoch_end: ConfigError: Bad: "):
        bus.epoch_end(0, {"loss": 1.0})
    assert "Bad: " in bus.failures[0].message
    assert bus.learning_rate == 0.1
    with pytest.warns(SinkFailureWarning):
        bus.close()


def test_a_schedule_refusing_the_rate_ends_fit_with_keras_s_type_error(tmp_path):
    """An optimizer on a LearningRateSchedule can never take a callback's rate: fit ends with
    Keras's own TypeError at the first refusal, as with Keras's LearningRateScheduler, and the
    refusal is in the log."""
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.9)
    model = tiny_model(optimizer=keras.optimizers.SGD(learning_rate=schedule))
    log = tmp_path / "run.jsonl"
    bus = Bus([LearningRateScheduler(lambda epoch: 0.01)], log=log)
    with pytest.raises(TypeError, match="This optimizer was created with a "
                                        "`LearningRateSchedule`"):
        fit(model, [KerasBridge(bus)], epochs=3)
    assert [(f.sink, f.event) for f in bus.failures] == [("model", "set_learning_rate")]
    with pytest.warns(SinkFailureWarning, match="1 sink failure"):
        bus.close()
    assert "sink_failed" in [r.kind for r in read_log(log)]
    plateau = ReduceLROnPlateau(monitor="loss", patience=0, factor=0.5, min_delta=10.0)
    with pytest.raises(TypeError, match="LearningRateSchedule"):  # the drop-in way too
        fit(tiny_model(optimizer=keras.optimizers.SGD(learning_rate=schedule)), [plateau])
    # The fit that raised is finished by the next one its plugin is given to (its summary).
    with pytest.warns(SinkFailureWarning, match="1 sink failure"):
        fit(tiny_model(), [plateau], epochs=1)


def test_a_callback_s_model_is_keras_s_model_for_weights():
    """A Keras user's callback keeps the best weights the Keras way: self.model.get_weights()
    is Keras's list, and self.model.set_weights() takes it back."""

    class KeepsBest(Callback):
        def on_train_begin(self, logs=None):
            self.best, self.kept = None, None

        def on_epoch_end(self, epoch, logs=None):
            if self.best is None or logs["loss"] < self.best:
                self.best, self.kept = logs["loss"], self.model.get_weights()

        def on_train_end(self, logs=None):
            self.model.set_weights(self.kept)

    model = tiny_model()
    keeper = KeepsBest()
    fit(model, [keeper], epochs=3)
    assert isinstance(keeper.kept, list)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), keeper.kept))


def test_history_called_keras_s_way_is_the_model_s_history():
    """Keras's History makes itself ``model.history`` at each epoch end; so does this one
    called Keras's way (in fit, Keras's own History comes last, as always)."""
    model = tiny_model()
    history = History()
    history.set_model(model)
    history.on_train_begin()
    history.on_epoch_end(0, logs={"loss": 1.0})
    history.on_epoch_end(1, logs={"loss": 0.5})
    assert model.history is history and history.history == {"loss": [1.0, 0.5]}
    history.on_train_end()


@given(st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=12),
       st.integers(0, 3))
def test_keras_calls_decide_as_the_bus(losses, patience):
    """EarlyStopping called Keras's way (set_model, on_epoch_end(epoch, logs=...)) stops at
    the epoch it stops at on a bus fed the same values, and sets the model's flag then."""
    keras_way = EarlyStopping(monitor="loss", patience=patience)
    model = types.SimpleNamespace(stop_training=False)
    keras_way.set_model(model)
    keras_way.on_train_begin()
    keras_stop = None
    for epoch, loss in enumerate(losses):
        keras_way.on_epoch_end(epoch, logs={"loss": loss})
        if model.stop_training:
            keras_stop = epoch
            break
    keras_way.on_train_end()

    bus = Bus([EarlyStopping(monitor="loss", patience=patience)])
    bus.train_begin()
    bus_stop = None
    for epoch, loss in enumerate(losses):
        bus.epoch_begin(epoch)
        bus.epoch_end(epoch, {"loss": loss})
        if bus.stop_training:
            bus_stop = epoch
            break
    bus.train_end()
    bus.close()
    assert keras_stop == bus_stop
    assert keras_way.stopped_epoch == (bus_stop or 0)  # 0 when it did not stop, as Keras's


def test_a_plugin_is_still_called_with_events():
    """The bus's own call (an event) still reaches the hook under the Keras name."""
    stopper = EarlyStopping(monitor="loss")
    bus = Bus([stopper])
    bus.train_begin()
    bus.epoch_begin(0)
    bus.epoch_end(0, {"loss": 1.0})
    assert stopper.best == 1.0
    bus.close()


def test_bad_keras_calls_are_clear():
    """A misspelt hook is an error naming the closest; any other keyword is kept as an
    attribute, as Keras's LambdaCallback keeps it (never called)."""
    with pytest.raises(ConfigError, match="on_epoch_ned= is not a hook .*did you mean "
                                          "on_epoch_end=") as info:
        LambdaCallback(on_epoch_ned=lambda epoch, logs: None)
    assert (info.value.plugin, info.value.field) == ("LambdaCallback", "on_epoch_ned")
    with pytest.raises(ConfigError, match="own attribute 'name'"):
        LambdaCallback(name=lambda logs: None)

    def custom(logs):
        pass

    callback = LambdaCallback(custom_method=custom)
    assert callback.custom_method is custom
    bus = Bus([callback])  # not a hook: never called, and the bus takes it as before
    bus.train_begin()
    bus.close()


def test_import_eventbus_imports_neither_keras_nor_torch():
    code = ("import sys, eventbus, plugins; from plugins import EarlyStopping, Callback; "
            "EarlyStopping(log='x.jsonl'); "
            "print(sorted(m for m in ('keras', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                             os.path.abspath(__file__)))))
    assert out.stdout.strip() == "[]"


def test_a_fit_that_raised_is_closed_by_the_next(tmp_path):
    """Keras calls no end hook when fit raises: the bus stays open (its log locked: a second
    writer would be refused) until one of its plugins is given to the next call, which closes
    it and writes the log anew."""
    class Boom(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("boom")

    stopper = EarlyStopping(monitor="loss", log=str(tmp_path / "run.jsonl"))
    model = tiny_model()
    with pytest.raises(RuntimeError, match="boom"):
        fit(model, [stopper, Boom()])
    history = fit(model, [stopper], epochs=3)
    assert len(history.history["loss"]) == 3
    kinds = [r.kind for r in read_log(tmp_path / "run.jsonl")]
    assert kinds.count("train_begin") == 1 and kinds.count("epoch_end") == 3


@pytest.mark.parametrize("fresh_model", [False, True])
def test_a_fit_that_raised_does_not_hold_its_log_from_new_callbacks(tmp_path, fresh_model):
    """A notebook cell that raised, run again: new callback instances writing the same log or
    backup. The abandoned fit still holds the log's lock in this process, so it is finished
    (its run is over) and the new fit opens the log; the backup resumes where it stopped."""
    class Boom(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("boom")

    x, y = noise()
    model = tiny_model()
    with pytest.raises(RuntimeError, match="boom"):
        model.fit(x, y, epochs=5, verbose=0,
                  callbacks=[BackupAndRestore(tmp_path / "bk"), Boom(),
                             EarlyStopping(monitor="loss", log=str(tmp_path / "ev.jsonl"))])
    if fresh_model:
        model = tiny_model()
    history = model.fit(x, y, epochs=5, verbose=0, callbacks=[
        BackupAndRestore(tmp_path / "bk"),
        EarlyStopping(monitor="loss", patience=99, log=str(tmp_path / "ev.jsonl"))])
    assert history.epoch == [2, 3, 4]  # the backup's run goes on
    records = list(read_log(tmp_path / "ev.jsonl"))  # the other log holds that whole run
    assert [r.epoch for r in records if r.kind == "epoch_end"] == [0, 1, 2, 3, 4]
    seqs = [r.seq for r in records]  # (the interrupted epoch's begin is the backup's alone)
    assert seqs == sorted(set(seqs)) and records[-1].kind == "train_end"


def test_a_fit_inside_a_hook_leaves_the_outer_fit_running(tmp_path):
    """A fit started from a callback of another fit (nested) is not taken for a new one after
    an abandoned fit: the outer one keeps its bus, even when the inner one's log is refused."""
    inner_errors = []

    class FitInside(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            try:  # the same log as the outer fit's: a second writer, refused
                tiny_model().fit(*noise(8), epochs=1, verbose=0, callbacks=[
                    EarlyStopping(monitor="loss", log=str(tmp_path / "outer.jsonl"))])
            except Exception as exc:
                inner_errors.append(type(exc).__name__)

    stopper = EarlyStopping(monitor="loss", patience=99, log=str(tmp_path / "outer.jsonl"))
    history = fit(tiny_model(), [stopper, FitInside()], epochs=2)
    assert history.epoch == [0, 1]
    assert inner_errors == ["LogInUseError"] * 2  # refused, the outer fit unharmed
    kinds = [r.kind for r in read_log(tmp_path / "outer.jsonl")]
    assert kinds.count("epoch_end") == 2 and kinds[-1] == "train_end"


def test_an_instance_still_switches_a_hook_off_by_its_name():
    """``self.on_batch_end = None`` (the old idiom) still leaves the class's hook out, now that
    the hook is kept under another name for Keras's sake; so does unsubscribe()."""
    class Quiet(TerminateOnNaN):
        def __init__(self):
            super().__init__()
            self.on_batch_end = None

    class Unsubscribed(TerminateOnNaN):
        def __init__(self):
            super().__init__()
            self.unsubscribe("on_batch_end")

    for plugin in (Quiet(), Unsubscribed(), TerminateOnNaN()):
        bus = Bus([plugin])
        assert bus.subscribers("batch_end") == ([] if type(plugin) is not TerminateOnNaN
                                                else [plugin])
        bus.close()


def test_a_second_fit_with_the_same_backup_goes_on_where_the_first_was_interrupted(tmp_path):
    """Keras's BackupAndRestore idiom, with the plugin straight in model.fit: a fit that
    raised at epoch 3, then the same fit again with the same callback, trains epochs 3 to 5."""

    class Interrupt(keras.callbacks.Callback):
        raised = False

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3 and not self.raised:
                Interrupt.raised = True
                raise RuntimeError("interrupted")

    model, (x, y) = tiny_model(), noise()
    backup, interrupt = BackupAndRestore(tmp_path / "backup"), Interrupt()
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, epochs=6, verbose=0, callbacks=[backup, interrupt])
    history = model.fit(x, y, epochs=6, verbose=0, callbacks=[backup, interrupt])
    assert history.epoch == [3, 4, 5]


class Rates(Callback):
    """The optimizer's learning rate as each epoch begins (after the plugins before it)."""

    def __init__(self):
        super().__init__()
        self.rates = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.rates[epoch] = float(self.model.optimizer.learning_rate)


class InterruptAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_a_fit_resumed_from_its_backup_trains_at_the_rate_it_was_cut_to(tmp_path):
    """ReduceLROnPlateau cuts 0.08 -> 0.04 as epoch 1 ends, and the fit is interrupted there.
    The backup's optimizer state was written before the cut (Keras keeps the rate with it);
    the resumed fit still trains epoch 2 at 0.04, makes the cut an uninterrupted fit makes
    next, and ends with its rate and weights."""
    from eventbus import replay

    def fit_of(model, callbacks):
        x, y = noise()
        model.fit(x, y, batch_size=16, epochs=4, verbose=0, shuffle=False, callbacks=callbacks)

    def plugins(backup=True):
        plateau = ReduceLROnPlateau(monitor="loss", min_delta=100.0, patience=1, factor=0.5)
        return [plateau, BackupAndRestore(tmp_path / "bk", delete_checkpoint=False)][:1 + backup]

    uninterrupted = tiny_model(lr=0.08)
    fit_of(uninterrupted, plugins(backup=False))
    with pytest.raises(KeyboardInterrupt):
        fit_of(tiny_model(lr=0.08), [*plugins(), InterruptAt(1)])
    model, rates = tiny_model(lr=0.08), Rates()
    fit_of(model, [*plugins(), rates])
    assert rates.rates == pytest.approx({2: 0.04, 3: 0.02})
    assert float(model.optimizer.learning_rate) == \
        pytest.approx(float(uninterrupted.optimizer.learning_rate))
    for mine, theirs in zip(model.get_weights(), uninterrupted.get_weights()):
        assert np.allclose(mine, theirs, atol=1e-6)
    assert replay(tmp_path / "bk" / "events.jsonl", verify=True).ok


def test_a_fit_on_a_rate_schedule_resumes_from_its_backup(tmp_path):
    """An optimizer on a LearningRateSchedule has no rate to set: the resume, which restores
    the run's rate, leaves it alone (it agrees) instead of ending fit with Keras's
    TypeError."""
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)

    def model():
        return tiny_model(optimizer=keras.optimizers.SGD(learning_rate=schedule))

    with pytest.raises(KeyboardInterrupt):
        fit(model(), [BackupAndRestore(tmp_path / "bk"), InterruptAt(1)], epochs=4)
    resumed = model()
    history = fit(resumed, [BackupAndRestore(tmp_path / "bk")], epochs=4)
    assert history.epoch == [2, 3]
    assert int(resumed.optimizer.iterations) == 8  # the backup's 4 steps, then 4 more


def test_a_metric_auto_cannot_place_leaves_fit_as_keras_value_error(tmp_path):
    """As Keras 3's EarlyStopping(monitor="unknown"): fit raises a ValueError at the first
    epoch end; here the ConfigError naming the plugin, mode and the event, after the log
    recorded the epoch and the failure."""
    from eventbus import ConfigError

    log = tmp_path / "run.jsonl"
    with pytest.raises(ValueError, match="mode='auto' cannot tell") as info:
        fit(tiny_model(), [EarlyStopping(monitor="unknown", log=str(log))])
    assert isinstance(info.value, ConfigError)
    assert (info.value.plugin, info.value.field) == ("EarlyStopping", "mode")
    kinds = [r.kind for r in read_log(log)]
    assert kinds[-2:] == ["epoch_end", "plugin_failed"]


def test_a_config_error_at_a_batch_end_leaves_fit_as_a_value_error_too(tmp_path):
    """A checkpoint saved every 2 batches whose path needs {val_loss}, which no batch has:
    the ConfigError names the plugin and the field, whichever hook found it, and an explicit
    bridge raises it the same way."""
    pattern = str(tmp_path / "w-{val_loss:.2f}.weights.h5")
    with pytest.raises(ValueError, match=r"needs \{val_loss\}.* batch 2") as info:
        fit(tiny_model(), [ModelCheckpoint(pattern, save_freq=2, save_weights_only=True)])
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, KeyError)  # what Keras's ModelCheckpoint raises for it
    assert str(info.value).startswith("ModelCheckpoint: filepath")  # not KeyError's repr
    assert (info.value.plugin, info.value.field) == ("ModelCheckpoint", "filepath")
    log = tmp_path / "bridge.jsonl"
    with Bus([ModelCheckpoint(pattern, save_freq=2, save_weights_only=True)],
             log=log) as bus, pytest.raises(ConfigError, match="needs"):
        fit(tiny_model(), [KerasBridge(bus)])
    assert [r.kind for r in read_log(log)][-2:] == ["batch_end", "plugin_failed"]
    assert list(tmp_path.glob("w-*")) == []
