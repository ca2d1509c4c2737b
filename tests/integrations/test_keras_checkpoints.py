"""Checkpoints a Keras user loads, weights keyed stably, and a resume that restores them."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip("these tests run Keras on its torch backend", allow_module_level=True)

from eventbus import Bus, ConfigError, RunWarning, read_log  # noqa: E402
from eventbus.audit import audit, render  # noqa: E402
from eventbus.integrations.keras import KerasBridge, KerasModel  # noqa: E402
from plugins import BackupAndRestore, ModelCheckpoint  # noqa: E402
from sinks.hdf5 import write_checkpoint  # noqa: E402

pytestmark = [
    # Keras's torch backend converts its own tensors the NumPy 1 way; not ours to fix.
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]

WORKER = Path(__file__).with_name("keras_checkpoint_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def auto_named() -> keras.Model:
    """A model as users write it: no names, so Keras numbers them per process."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.BatchNormalization(), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    return model


class InterruptAfter(keras.callbacks.Callback):
    """Ctrl-C once epoch ``epoch`` has ended (and the bus has recorded it)."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: object = None) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


def data(n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x.sum(axis=1, keepdims=True) * 0.5).astype("float32")


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(p, q) for p, q in zip(a, b))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def saved(log: Path) -> list:
    return [r for r in read_log(log) if r.kind == "checkpoint_saved"]


class TestStableKeys:
    def test_a_model_built_again_has_the_same_keys(self):
        """Keras names the second model's variables sequential_1/dense_2/...; the adapter's
        keys are by layer order and role, the same for both."""
        first, second = auto_named(), auto_named()
        assert [v.path for v in first.weights] != [v.path for v in second.weights]
        keys = list(KerasModel(first).get_weights())
        assert keys == list(KerasModel(second).get_weights())
        assert keys[:3] == ["0.dense/kernel", "0.dense/bias", "1.batch_normalization/gamma"]

    def test_weight_paths_tell_each_key_s_keras_path(self):
        """weight_paths(): each stable key with the variable's Keras path, the names a Keras
        user knows the layers by (this process's numbering included)."""
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="hidden"),
                                  keras.layers.Dense(1)])
        paths = KerasModel(model).weight_paths()
        assert list(paths) == list(KerasModel(model).get_weights())
        assert paths["0.dense/kernel"] == f"{model.name}/hidden/kernel"
        assert paths["1.dense/bias"] == model.layers[1].bias.path

    def test_a_rebuilt_model_takes_the_backup_of_the_first(self, tmp_path):
        """A notebook cell run again: the new model resumes from the first one's backup
        (before, Bus() raised unknown weights)."""
        x, y = data()
        first = auto_named()
        with pytest.raises(KeyboardInterrupt), \
                Bus([BackupAndRestore(tmp_path / "bk")], model=KerasModel(first)) as bus:
            # The cell is interrupted: the backup stays.
            first.fit(x, y, epochs=4, batch_size=16, verbose=0,
                      callbacks=[KerasBridge(bus), InterruptAfter(1)])
        second = auto_named()
        bus = Bus([BackupAndRestore(tmp_path / "bk")], model=KerasModel(second))
        assert bus.initial_epoch == 2
        assert same(second.get_weights(), first.get_weights())
        bus.close()

    def test_weights_keyed_by_variable_path_still_load(self, tmp_path):
        """A checkpoint of an earlier version (keys are variable paths, Keras's per-process
        names) loads into a rebuilt model by position, as Keras reads legacy weights."""
        from sinks.hdf5 import load_checkpoint

        old = auto_named()
        old.fit(*data(), epochs=1, verbose=0)
        path = tmp_path / "old.h5"
        write_checkpoint(path, {v.path: v.numpy() for v in old.weights})
        fresh = auto_named()
        KerasModel(fresh).set_weights(load_checkpoint(path).weights)
        assert same(fresh.get_weights(), old.get_weights())

    def test_weights_of_another_model_are_refused_by_name(self):
        model = auto_named()
        with pytest.raises(ConfigError, match=r"unknown weights \['0.dense/kernal'\]"):
            KerasModel(model).set_weights({"0.dense/kernal": np.zeros((4, 3))})


class TestFilesKerasLoads:
    def test_weights_only_loads_with_load_weights(self, tmp_path):
        """save_weights_only=True writes Keras's .weights.h5: model.load_weights reads it."""
        model = auto_named()
        path = tmp_path / "ckpt-{epoch:02d}.weights.h5"
        with Bus([ModelCheckpoint(str(path), save_weights_only=True)],
                 log=tmp_path / "events.jsonl") as bus:
            model.fit(*data(), epochs=2, batch_size=16, verbose=0,
                      callbacks=[KerasBridge(bus)])
        fresh = auto_named()
        fresh.load_weights(tmp_path / "ckpt-02.weights.h5")
        assert same(fresh.get_weights(), model.get_weights())
        records = saved(tmp_path / "events.jsonl")
        assert [Path(r.path).name for r in records] == ["ckpt-01.weights.h5",
                                                        "ckpt-02.weights.h5"]
        assert records[-1].sha256 == sha256(tmp_path / "ckpt-02.weights.h5")
        # Written under a temporary name and renamed: nothing else is left in the folder.
        assert sorted(os.listdir(tmp_path)) == ["ckpt-01.weights.h5", "ckpt-02.weights.h5",
                                                "events.jsonl"]

    def test_the_whole_model_loads_with_load_model(self, tmp_path):
        """save_weights_only=False (the default) writes a .keras model: load_model reads it,
        architecture, weights and optimizer."""
        model = auto_named()
        with Bus([ModelCheckpoint(str(tmp_path / "best.keras"))],
                 log=tmp_path / "events.jsonl") as bus:
            model.fit(*data(), validation_data=data(8), epochs=2, batch_size=16, verbose=0,
                      callbacks=[KerasBridge(bus)])
        loaded = keras.models.load_model(tmp_path / "best.keras")
        assert same(loaded.get_weights(), model.get_weights())
        assert type(loaded.optimizer).__name__ == "SGD"
        assert saved(tmp_path / "events.jsonl")[-1].sha256 == sha256(tmp_path / "best.keras")

    def test_the_seed_example_saves_the_whole_model(self, tmp_path):
        """The seed's ModelCheckpoint(filepath="/tmp/weights.hdf5", verbose=1,
        save_best_only=True) writes a whole model in Keras's HDF5 layout."""
        model = auto_named()
        path = tmp_path / "weights.hdf5"
        with Bus([ModelCheckpoint(filepath=str(path), verbose=1, save_best_only=True)]) as bus:
            model.fit(*data(), validation_data=data(8), epochs=2, batch_size=16, verbose=0,
                      callbacks=[KerasBridge(bus)])
        # compile=False: Keras 3.15 cannot read back a loss given as a string from HDF5.
        loaded = keras.models.load_model(path, compile=False)
        assert [type(layer).__name__ for layer in loaded.layers] == \
            ["Dense", "BatchNormalization", "Dense"]
        assert same(loaded.get_weights(), model.get_weights())
        # Keras's legacy saver takes the optimizer out of the model's compile config; a later
        # .keras save of the same model still holds it (in plain Keras it reloads as RMSprop).
        model.save(tmp_path / "after.keras")
        optimizer = keras.models.load_model(tmp_path / "after.keras").optimizer
        assert type(optimizer).__name__ == "SGD"
        assert float(optimizer.learning_rate) == pytest.approx(0.05)

    def test_weights_only_to_a_plain_h5_loads_with_load_weights(self, tmp_path):
        """A weights file named .h5 is Keras's legacy weights layout, which load_weights reads
        by that name."""
        model = auto_named()
        with Bus([ModelCheckpoint(str(tmp_path / "w.h5"), save_weights_only=True)]) as bus:
            model.fit(*data(), epochs=1, verbose=0, callbacks=[KerasBridge(bus)])
        fresh = auto_named()
        fresh.load_weights(tmp_path / "w.h5")
        assert same(fresh.get_weights(), model.get_weights())

    def test_load_brings_the_optimizer_state_back(self, tmp_path):
        """KerasModel.load (what a resume uses) restores Adam's moments and step count into a
        model that has not trained yet, whose optimizer Keras would otherwise skip."""
        model = auto_named()
        model.compile(keras.optimizers.Adam(0.01), "mse")
        model.fit(*data(), epochs=2, batch_size=16, verbose=0)
        KerasModel(model).save(str(tmp_path / "m.keras"), False)
        fresh = auto_named()
        fresh.compile(keras.optimizers.Adam(0.01), "mse")
        KerasModel(fresh).load(str(tmp_path / "m.keras"))
        assert int(fresh.optimizer.iterations.numpy()) == 4
        assert same([v.numpy() for v in fresh.optimizer.variables],
                    [v.numpy() for v in model.optimizer.variables])

    @pytest.mark.parametrize("name", ["w.weights.h5", "m.h5"])
    def test_a_nearly_full_disk_is_an_oserror_before_keras_writes(self, small_disk, name):
        """Keras writes HDF5 straight to the disk, and HDF5 closing a file a full disk cut
        short crashed the process. With less room than the variables take, the save is an
        OSError first (the checkpoint writer keeps it and tries again); with room, it writes."""
        import errno

        from conftest import leave_room

        model = auto_named()
        leave_room(small_disk, 8192)
        with pytest.raises(OSError) as info:
            KerasModel(model).save(str(small_disk / name), name == "w.weights.h5")
        assert info.value.errno == errno.ENOSPC and "no room for the save" in str(info.value)
        assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]
        (small_disk / "filler").unlink()
        KerasModel(model).save(str(small_disk / name), name == "w.weights.h5")
        assert (small_disk / name).stat().st_size > 0

    def test_the_optimizer_state_goes_back_and_training_goes_on_as_it_would(self):
        """What BackupAndRestore keeps: a fresh model given the weights and the optimizer's
        state (Adam's moments and iteration count, built first) takes the next steps exactly
        as the trained one; a state of another model is refused and changes nothing."""
        x, y = data()
        model = auto_named()
        model.compile(keras.optimizers.Adam(0.05), "mse")
        model.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
        kept = KerasModel(model)
        weights, state = kept.get_weights(), kept.get_optimizer_state()
        assert int(state["0000"]) == 4  # the iterations, first
        fresh = auto_named()
        fresh.compile(keras.optimizers.Adam(0.05), "mse")
        assert KerasModel(fresh).get_optimizer_state() == {}  # not built before a step
        KerasModel(fresh).set_weights(weights)
        KerasModel(fresh).set_optimizer_state(state)
        for m in (model, fresh):
            m.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
        assert same(fresh.get_weights(), model.get_weights())
        with pytest.raises(ConfigError, match="the state has 1 variables"):
            KerasModel(fresh).set_optimizer_state({"0000": np.zeros(())})

    def test_weights_only_to_a_keras_file_is_refused(self):
        with pytest.raises(ConfigError, match="save_weights_only=True.*name the file "
                                              r"\.weights\.h5"):
            ModelCheckpoint("m.keras", save_weights_only=True)


def kill_after(directory: Path, epoch: int, epochs: int = 5) -> None:
    """The worker, SIGKILLed once ``epoch`` has ended."""
    # This checkout's code, whichever one the package is installed from.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, str(WORKER), str(directory), str(epoch),
                           str(epochs)], stdin=subprocess.DEVNULL, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout == "started at epoch 0\n"


def resume(directory: Path, capsys: pytest.CaptureFixture[str], epochs: int = 5) -> str:
    """The worker's run, resumed here (in a process whose Keras names differ)."""
    sys.path.insert(0, str(WORKER.parent))
    try:
        import keras_checkpoint_worker
    finally:
        sys.path.remove(str(WORKER.parent))
    keras_checkpoint_worker.run(str(directory), -1, epochs)
    return capsys.readouterr().out


def start_weights(directory: Path) -> list[np.ndarray]:
    with np.load(directory / "start.npz") as npz:
        return [npz[f"arr_{i}"] for i in range(len(npz.files))]


def test_a_killed_run_goes_on_with_its_checkpointed_weights(tmp_path, capsys):
    """SIGKILLed after epoch 3: the resumed run starts at epoch 4 with the weights of
    last.keras, the file the log vouches for, not fresh ones; the audit says nothing is
    wrong. Then, the checkpoint changed behind the log's back is not loaded: a warning says
    the weights were not restored, and the audit shows it."""
    kill_after(tmp_path, 2)
    log = tmp_path / "events.jsonl"
    assert saved(log)[-1].sha256 == sha256(tmp_path / "last.keras")
    checkpointed = keras.models.load_model(tmp_path / "last.keras").get_weights()
    fresh = start_weights(tmp_path)
    assert not same(fresh, checkpointed)

    assert resume(tmp_path, capsys, epochs=4) == "started at epoch 3\ndone\n"
    assert same(start_weights(tmp_path), checkpointed)
    restored = [r for r in read_log(log) if r.kind == "weights_restored"]
    assert [(r.source, r.tag) for r in restored] == \
        [("HDF5CheckpointWriter", f"checkpoint:{tmp_path / 'last.keras'}")]
    assert "warnings: none" in render(audit(log))

    # The finished run goes on in a second stage, its checkpoint rewritten by someone else.
    keras.models.load_model(tmp_path / "last.keras").save(tmp_path / "last.keras")
    with pytest.warns(RunWarning) as caught:
        assert resume(tmp_path, capsys, epochs=5) == "started at epoch 4\ndone\n"
    messages = [str(w.message) for w in caught]
    assert any("had finished" in m for m in messages)
    # (its size or, where the size is the same, its sha256 differs)
    assert any("last.keras was changed since it was saved" in m for m in messages)
    assert any("the weights were not restored: no checkpoint the log records could be "
               "loaded" in m for m in messages)
    text = render(audit(log))
    assert "warnings: 3" in text and "the weights were not restored" in text


def test_a_checkpoint_of_the_earlier_layout_is_still_restored(tmp_path):
    """A run checkpointed by an earlier eventbus (this library's HDF5, weights keyed by
    variable path) resumes into a rebuilt model: the file goes through set_weights, which
    maps the other process's paths by position."""
    from eventbus.jsonl import JsonlWriter

    class Earlier(KerasModel):
        save = None  # no Keras format: the writer uses its own HDF5 layout

        def get_weights(self):
            return {v.path: np.array(v.numpy()) for v in self.keras_model.weights}

    old = auto_named()
    writer = JsonlWriter(tmp_path / "events.jsonl")
    bus = Bus([ModelCheckpoint(str(tmp_path / "last.h5"))], log=writer, model=Earlier(old))
    with pytest.raises(KeyboardInterrupt):
        old.fit(*data(), epochs=3, batch_size=16, verbose=0,
                callbacks=[KerasBridge(bus), InterruptAfter(1)])
    writer.close()  # the process ends here
    fresh = auto_named()
    Bus([ModelCheckpoint(str(tmp_path / "last.h5"))], log=tmp_path / "events.jsonl",
        model=KerasModel(fresh), resume=True).close()
    assert same(fresh.get_weights(), old.get_weights())


def test_resume_without_anything_to_restore_says_so(tmp_path):
    """A resumed run with a model and nothing that restores weights records a warning."""
    from eventbus.jsonl import JsonlWriter

    model = auto_named()
    writer = JsonlWriter(tmp_path / "events.jsonl")
    bus = Bus([], log=writer, model=KerasModel(model))
    bus.train_begin({"epochs": 3})
    bus.epoch_begin(0)
    bus.epoch_end(0, {"loss": 1.0})
    bus.flush()
    writer.close()  # the crash
    with pytest.warns(RunWarning, match="the weights were not restored: nothing on this bus "
                                        r"restores them.*goes on at epoch 2"):
        Bus([], log=tmp_path / "events.jsonl", model=KerasModel(auto_named()),
            resume=True).close()


def test_a_bus_reused_for_a_second_model_follows_it(tmp_path):
    """The bridge attaches each fitted model: the second model's checkpoints are its own."""
    first, second = auto_named(), auto_named()
    with Bus([ModelCheckpoint(str(tmp_path / "m-{epoch}.keras"))]) as bus:
        first.fit(*data(), epochs=1, verbose=0, callbacks=[KerasBridge(bus)])
        second.fit(*data(), epochs=1, verbose=0, callbacks=[KerasBridge(bus)])
    assert bus.model.keras_model is second
    assert not same(first.get_weights(), second.get_weights())
    assert same(keras.models.load_model(tmp_path / "m-1.keras").get_weights(),
                second.get_weights())


def test_a_second_fit_after_an_interrupted_one_resumes(tmp_path):
    """Keras's BackupAndRestore test, through the bridge: fit is interrupted after epoch 2;
    the same callbacks on a bus built again resume: fit starts at epoch 3 by itself, with the
    weights of the end of epoch 2 (the model was trained further in between), and the backup
    is gone after the clean end."""
    model = auto_named()
    x, y = data()
    backup = BackupAndRestore(tmp_path / "bk")
    interrupt = InterruptAfter(1)
    with pytest.raises(KeyboardInterrupt), Bus([backup]) as bus:
        model.fit(x, y, epochs=4, batch_size=16, verbose=0,
                  callbacks=[KerasBridge(bus), interrupt])
    at_interrupt = model.get_weights()
    model.fit(x, y, epochs=1, verbose=0)  # trained on meanwhile: these weights must not stay
    starts: list[tuple[int, bool]] = []

    class Probe(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            starts.append((epoch, same(self.model.get_weights(), at_interrupt)))

    with Bus([backup]) as bus:
        history = model.fit(x, y, epochs=4, batch_size=16, verbose=0,
                            callbacks=[KerasBridge(bus), Probe()])
    assert history.epoch == [2, 3]
    assert starts[0] == (2, True)
    assert not (tmp_path / "bk").exists()
    assert model._initial_epoch is None  # the next fit starts at 0, as it should
