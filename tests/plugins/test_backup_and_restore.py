"""BackupAndRestore: crash, restart, and go on with the same weights and the same decisions."""

from __future__ import annotations

import gc
import os
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, ConfigError, NumpyModel, RunWarning, SinkFailureWarning, read_log
from eventbus.records import Decision
from eventbus.replay import effective_records
from eventbus.testing import RecordingWriter
from plugins import BackupAndRestore, EarlyStopping, ReduceLROnPlateau
from plugins.backup_and_restore import LATEST
from sinks.hdf5 import load_checkpoint

from hypothesis_profiles import RUNS, examples
from plugin_strategies import decision_view

VALUES = [1.0, 0.9, 0.9, 0.9, 0.9, 0.85, 0.85, 0.85, 0.85, 0.85, 0.8, 0.8]

#: train() with a model that has no learning rate: ReduceLROnPlateau says it cannot cut one,
#: which is beside what the tests so marked check (weights and backup files).
NO_LEARNING_RATE = pytest.mark.filterwarnings(
    "ignore:.*the learning rate is not known:eventbus.RunWarning")


@pytest.fixture(autouse=True)
def objects_before_the_test_are_frozen():
    """die() collects garbage; with everything older than the test frozen, a collection looks
    only at what the test made (the bus, its files), not at every module loaded in this process
    (tensorboard alone brings some 200,000 objects: a tenth of a second or more a collection)."""
    gc.freeze()
    yield
    gc.unfreeze()


def die(*objects: object) -> None:
    """A process death: the objects go without closing anything, so records the log writer
    had not flushed yet are lost and open files are just dropped."""
    del objects
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def train(backup_dir: Path, values: list[float], *, crash_at: int | None = None,
          model: NumpyModel | None = None, save_freq: Any = "epoch",
          delete_checkpoint: bool = True, batches: int = 2,
          double_checkpoint: bool = True) -> tuple[Bus, NumpyModel | None, BackupAndRestore]:
    """A loop whose weights grow by 1 per batch; it dies at ``crash_at``'s second batch."""
    backup = BackupAndRestore(backup_dir, save_freq=save_freq,
                              double_checkpoint=double_checkpoint,
                              delete_checkpoint=delete_checkpoint)
    bus = Bus([ReduceLROnPlateau(patience=2, factor=0.5),
               EarlyStopping(patience=4, restore_best_weights=False), backup],
              model=model, learning_rate=None if model else 0.1)
    bus.train_begin({"epochs": len(values)})
    for epoch in range(bus.initial_epoch, len(values)):
        bus.epoch_begin(epoch)
        for batch in range(batches):
            if epoch == crash_at and batch == 1:
                objects = [bus, backup]
                del bus, backup
                die(*objects.copy())
                objects.clear()
                die()
                return None, model, None  # type: ignore[return-value]
            bus.batch_begin(batch)
            if model is not None:
                model.weights["w"] += 1
            bus.batch_end(batch, {"loss": values[epoch]})
        bus.epoch_end(epoch, {"val_loss": values[epoch]})
        if bus.stop_training:
            break
    bus.train_end()
    bus.close()
    return bus, model, backup


def decisions_of(records: list) -> list[tuple]:
    return [decision_view(r) for r in effective_records(records) if isinstance(r, Decision)]


def recorded(bus: Bus, backup: BackupAndRestore) -> list:
    return list(read_log(backup.log_path))



@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> list[tuple]:
    """The decisions of the run that never crashed: the same for every example of TestResume."""
    bus, _, backup = train(tmp_path_factory.mktemp("whole"), VALUES, delete_checkpoint=False)
    return decisions_of(recorded(bus, backup))


class TestResume:
    def test_weights_epoch_and_state_come_back(self, tmp_path: Path) -> None:
        """After a crash in epoch 5 the run goes on at epoch 5 with epoch 4's weights and
        learning rate, and makes the decisions an uninterrupted run makes."""
        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        train(tmp_path / "bk", VALUES, crash_at=5, model=model, delete_checkpoint=False)
        assert sorted(os.listdir(tmp_path / "bk")) == ["events.jsonl", "latest.weights.h5",
                                                       "previous.weights.h5"]
        assert load_checkpoint(tmp_path / "bk" / "latest.weights.h5").metadata[
            "epochs_finished"] == 5

        fresh = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        backup = BackupAndRestore(tmp_path / "bk", delete_checkpoint=False)
        bus = Bus([ReduceLROnPlateau(patience=2, factor=0.5),
                   EarlyStopping(patience=4), backup], model=fresh)
        assert bus.initial_epoch == 5
        assert fresh.weights["w"].tolist() == [10.0, 10.0]  # 5 epochs of 2 batches
        assert fresh.learning_rate == 0.05  # cut once, at epoch 3, as the log says
        bus.close()

    def test_resumed_run_decides_as_an_uninterrupted_one(self, tmp_path: Path) -> None:
        """Same decisions, same final weights, same stop as a run that never crashed."""
        whole = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        bus, _, backup = train(tmp_path / "a", VALUES, model=whole, delete_checkpoint=False)
        expected = decisions_of(recorded(bus, backup))

        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        train(tmp_path / "b", VALUES, crash_at=6, model=model, delete_checkpoint=False)
        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        bus, model, backup = train(tmp_path / "b", VALUES, model=model, delete_checkpoint=False)
        assert decisions_of(recorded(bus, backup)) == expected
        assert model.weights["w"].tolist() == whole.weights["w"].tolist()
        assert model.learning_rate == whole.learning_rate
        kinds = [r.kind for r in recorded(bus, backup)]
        assert kinds.count("resumed") == 1 and kinds.count("weights_restored") == 1

    # A crash after the run's end resumes a finished run, which the bus says.
    @pytest.mark.filterwarnings("ignore:bus. resume. the run in .* had finished")
    @examples(RUNS)  # three trainings with HDF5 backups per example
    @given(st.integers(0, len(VALUES) - 1), st.integers(0, len(VALUES) - 1))
    def test_two_crashes_anywhere(self, tmp_path_factory: pytest.TempPathFactory,
                                  uninterrupted: list[tuple], first: int, second: int) -> None:
        """Crash twice, at any epochs: the decisions are those of an uninterrupted run."""
        directory = tmp_path_factory.mktemp("bk")
        train(directory / "run", VALUES, crash_at=first, delete_checkpoint=False)
        train(directory / "run", VALUES, crash_at=max(first, second), delete_checkpoint=False)
        bus, _, backup = train(directory / "run", VALUES, delete_checkpoint=False)
        assert decisions_of(recorded(bus, backup)) == uninterrupted

    @NO_LEARNING_RATE
    def test_weights_ahead_of_the_log_use_the_previous_backup(self, tmp_path: Path) -> None:
        """A crash between an epoch's weights and its log records: the previous weights
        file matches the log and is the one restored."""
        model = NumpyModel({"w": np.zeros(2)})
        train(tmp_path / "bk", VALUES, crash_at=4, model=model, delete_checkpoint=False)
        log = tmp_path / "bk" / "events.jsonl"
        lines = log.read_bytes().splitlines(keepends=True)
        last_end = max(i for i, line in enumerate(lines) if b'"kind":"epoch_end"' in line)
        log.write_bytes(b"".join(lines[:last_end]))  # epoch 3's end never reached the disk
        fresh = NumpyModel({"w": np.zeros(2)})
        backup = BackupAndRestore(tmp_path / "bk")
        bus = Bus([ReduceLROnPlateau(patience=2), backup], model=fresh, learning_rate=0.1)
        assert bus.initial_epoch == 3
        assert fresh.weights["w"].tolist() == [6.0, 6.0]  # the end of epoch 2
        assert backup.files._verdicts == {}  # the weights read are not held for the run
        bus.close()

    def test_torn_last_line_is_cut(self, tmp_path: Path) -> None:
        """A line torn by the crash is cut off and the run resumes from the rest."""
        train(tmp_path / "bk", VALUES, crash_at=3, delete_checkpoint=False)
        with open(tmp_path / "bk" / "events.jsonl", "ab") as file:
            file.write(b'{"v":1,"kind":"epoch_be')
        bus = Bus([BackupAndRestore(tmp_path / "bk")], learning_rate=0.1)
        assert bus.initial_epoch == 3
        bus.close()
        assert all(line.endswith(b"}") for line in
                   (tmp_path / "bk" / "events.jsonl").read_bytes().splitlines())

    def test_without_a_model_the_state_still_resumes(self, tmp_path: Path) -> None:
        """No model adapter: no weight files, and the plugins' state still comes back."""
        train(tmp_path / "bk", VALUES, crash_at=4, delete_checkpoint=False)
        assert os.listdir(tmp_path / "bk") == ["events.jsonl"]
        plateau = ReduceLROnPlateau(patience=2, factor=0.5)
        bus = Bus([plateau, BackupAndRestore(tmp_path / "bk")], learning_rate=0.1)
        assert bus.initial_epoch == 4 and plateau.best == 0.9 and plateau.wait == 0
        assert bus.learning_rate == 0.05
        bus.close()


class TestLifecycle:
    def test_backup_is_deleted_after_a_clean_end(self, tmp_path: Path) -> None:
        """train_end removes the backup files and the folder they were alone in."""
        train(tmp_path / "bk", VALUES[:3], model=NumpyModel({"w": np.zeros(2)}))
        assert not (tmp_path / "bk").exists()

    def test_other_files_in_the_folder_survive(self, tmp_path: Path) -> None:
        """Only the plugin's own files go (Keras removes the whole folder)."""
        (tmp_path / "bk").mkdir()
        (tmp_path / "bk" / "notes.txt").write_text("mine")
        train(tmp_path / "bk", VALUES[:3], model=NumpyModel({"w": np.zeros(2)}))
        assert os.listdir(tmp_path / "bk") == ["notes.txt"]

    def test_only_this_runs_snapshots_go(self, tmp_path: Path) -> None:
        """A clean end removes the snapshot files this run wrote (EarlyStopping's best
        weights), not another run's of the same form, and a folder named like a backup file
        stops nothing (the folder may be anyone's to write)."""
        from sinks.backup import BackupFiles, snapshot_file
        from sinks.hdf5 import write_checkpoint

        folder = tmp_path / "bk"
        folder.mkdir()
        other = folder / snapshot_file("another run's tag")
        write_checkpoint(other, {"w": np.ones(2)}, metadata={"run_id": "someone else's"})
        (folder / "previous.weights.h5").mkdir()  # in the way, not a file
        files = BackupFiles(str(folder))
        files.save_snapshot("EarlyStopping/best", {"w": np.zeros(2)}, {"run_id": "r"})
        files.save_snapshot("EarlyStopping#2/best", {"w": np.zeros(2)}, {"run_id": "r"})
        (folder / "latest.weights.h5").write_bytes(b"x")
        files.remove()
        assert sorted(os.listdir(folder)) == sorted([other.name, "previous.weights.h5"])

    def test_delete_checkpoint_false_keeps_it(self, tmp_path: Path) -> None:
        """delete_checkpoint=False keeps the backup after a clean end."""
        train(tmp_path / "bk", VALUES[:3], model=NumpyModel({"w": np.zeros(2)}),
              delete_checkpoint=False)
        assert "events.jsonl" in os.listdir(tmp_path / "bk")

    def test_backup_survives_a_crash(self, tmp_path: Path) -> None:
        """A run that dies keeps its backup: log and weights."""
        train(tmp_path / "bk", VALUES, crash_at=2, model=NumpyModel({"w": np.zeros(2)}))
        assert sorted(os.listdir(tmp_path / "bk")) == ["events.jsonl", "latest.weights.h5",
                                                       "previous.weights.h5"]

    def test_save_freq_in_batches(self, tmp_path: Path) -> None:
        """save_freq=3 backs the weights up every third batch, counted across epochs, and at
        every epoch end, so the weights that match the log's resume point are always there."""
        model = NumpyModel({"w": np.zeros(1)})
        train(tmp_path / "bk", VALUES, crash_at=3, model=model, save_freq=3, batches=2)
        # Batches before the crash: 6 full (epochs 0-2) and 1; batch saves after the 3rd and 6th.
        latest = load_checkpoint(tmp_path / "bk" / "latest.weights.h5").metadata
        previous = load_checkpoint(tmp_path / "bk" / "previous.weights.h5").metadata
        assert (latest["epoch"], latest["batch"], latest["epochs_finished"]) == (2, None, 3)
        assert (previous["epoch"], previous["batch"], previous["epochs_finished"]) == (2, 1, 2)
        fresh = NumpyModel({"w": np.zeros(1)})
        bus = Bus([BackupAndRestore(tmp_path / "bk", save_freq=3)], model=fresh,
                  learning_rate=0.1)
        assert bus.initial_epoch == 3 and fresh.weights["w"].tolist() == [6.0]
        bus.close()

    @pytest.mark.parametrize(("params", "field"), [
        ({"backup_dir": ""}, "backup_dir"), ({"backup_dir": "x", "save_freq": 0}, "save_freq"),
        ({"backup_dir": "x", "save_freq": "batch"}, "save_freq")])
    def test_bad_parameters(self, params: dict[str, Any], field: str) -> None:
        """Bad parameters name the field."""
        with pytest.raises(ConfigError) as info:
            BackupAndRestore(**params)
        assert info.value.field == field


class TestUntrustedBackupDir:
    def test_a_file_at_backup_dir_is_a_config_error(self, tmp_path: Path) -> None:
        """A file where the folder should be: a ConfigError naming the plugin and the field
        when the plugin is built, not "File exists" at the first epoch."""
        (tmp_path / "bk").write_text("not a folder")
        with pytest.raises(ConfigError, match="exists and is not a directory") as info:
            BackupAndRestore(tmp_path / "bk")
        assert (info.value.plugin, info.value.field) == ("BackupAndRestore", "backup_dir")

    def test_a_folder_that_cannot_be_created(self, tmp_path: Path) -> None:
        """A backup_dir under a file cannot be created: a ConfigError naming the plugin, the
        field and the reason when the bus starts, with the OSError as its cause."""
        (tmp_path / "file").write_text("x")
        backup = BackupAndRestore(tmp_path / "file" / "bk")
        with pytest.raises(ConfigError, match=r"cannot create backup_dir .*file/bk: Not a "
                                              r"directory") as info:
            Bus([backup])
        assert (info.value.plugin, info.value.field) == ("BackupAndRestore", "backup_dir")
        assert isinstance(info.value.__cause__, OSError)

    @pytest.mark.parametrize("planted", [".latest.weights.h5.x.tmp.weights.h5",
                                         "previous.weights.h5"])
    def test_a_folder_planted_at_a_name_of_ours_stops_no_backup(self, tmp_path: Path,
                                                                planted: str) -> None:
        """An empty folder put where a crashed save's temporary file would be (every save
        failed removing it: no weights backup at all), or at the previous backup's name
        (every save after the first failed rotating onto it): the saves go on."""
        (tmp_path / "bk").mkdir()
        (tmp_path / "bk" / planted).mkdir()
        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        with warnings.catch_warnings():
            warnings.simplefilter("error", SinkFailureWarning)
            with Bus([BackupAndRestore(tmp_path / "bk")], model=model) as bus:
                bus.train_begin({"epochs": 3})
                for epoch in range(3):
                    bus.epoch_begin(epoch)
                    model.weights["w"][:] = epoch
                    bus.epoch_end(epoch, {"loss": 1.0})
        assert bus.failures == []
        assert load_checkpoint(tmp_path / "bk" / LATEST).weights["w"].tolist() == [2.0, 2.0]

    def test_a_link_planted_as_a_backup_is_not_followed(self, tmp_path: Path) -> None:
        """previous.weights.h5 replaced by a link to a checkpoint elsewhere (the run's id in
        its metadata, read from the folder's own log, and a large step to win): it was
        restored; now a link is never followed and the run's own latest backup is used."""
        from sinks.backup import PREVIOUS
        from sinks.hdf5 import write_checkpoint

        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        train(tmp_path / "bk", VALUES, crash_at=3, model=model, delete_checkpoint=False)
        run_id = next(iter(read_log(tmp_path / "bk" / "events.jsonl"))).run_id
        forged = tmp_path / "forged.h5"
        write_checkpoint(forged, {"w": np.full(2, 666.0)},
                         metadata={"run_id": run_id, "epochs_finished": 3, "step": 10**9})
        (tmp_path / "bk" / PREVIOUS).unlink()
        (tmp_path / "bk" / PREVIOUS).symlink_to(forged)
        fresh = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        with pytest.warns(RunWarning, match="cannot read .*previous.weights.h5"):
            bus = Bus([BackupAndRestore(tmp_path / "bk", delete_checkpoint=False)],
                      model=fresh, learning_rate=0.1)
            bus.epoch_begin(bus.initial_epoch)
        bus.close()
        assert 666.0 not in fresh.weights["w"]

    def test_a_hostile_weights_backup_restores_nothing_foreign(self, tmp_path: Path) -> None:
        """latest.weights.h5 replaced by a checkpoint whose weight is stored in another file:
        the restore refuses it (a warning names the file), falls back on the previous backup,
        and the model never holds the other file's bytes."""
        import h5py

        secret = tmp_path / "secret.bin"
        secret.write_bytes(np.array([1e9, 2e9]).tobytes())
        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        train(tmp_path / "bk", VALUES, crash_at=5, model=model, delete_checkpoint=False)
        latest = tmp_path / "bk" / "latest.weights.h5"
        with h5py.File(latest, "a") as file:
            del file["weights/w"]
            file["weights"].create_dataset("w", shape=(2,), dtype="f8",
                                           external=[(str(secret), 0, 16)])
        fresh = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        writer = RecordingWriter()
        # The resume refuses latest and goes on after the epoch of the previous backup, the
        # one it restores: the weights and the epoch count agree.
        with pytest.warns(RunWarning, match=r"cannot read .*latest\.weights\.h5: Checkpoint"):
            bus = Bus([BackupAndRestore(tmp_path / "bk", delete_checkpoint=False)], model=fresh,
                      log=writer)
        assert bus.initial_epoch == 4
        bus.epoch_begin(bus.initial_epoch)
        assert fresh.weights["w"].tolist() == [8.0, 8.0]  # previous: 4 epochs of 2 batches
        messages = [r["message"] for r in writer.records if r["kind"] == "warning"]
        assert any("latest.weights.h5" in m and "CheckpointError" in m and "external" in m
                   for m in messages), messages
        bus.close()

    def test_a_latest_backup_of_another_shape_gives_way_to_the_previous(self,
                                                                       tmp_path: Path) -> None:
        """latest.weights.h5 whose weight has another shape (another model's backup, or one
        planted): the resume refuses it, with a warning naming the file and the weight, and
        goes on after the previous backup's epoch with its weights. Before, the file was taken
        by its metadata alone: the model refused its weights only once restored (a
        sink_failed at close), and the run went on after the file's epoch with its initial
        weights; the previous file, which fits, was never tried."""
        import h5py

        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        train(tmp_path / "bk", VALUES, crash_at=5, model=model, delete_checkpoint=False)
        latest = tmp_path / "bk" / LATEST
        with h5py.File(latest, "a") as file:
            del file["weights/w"]
            file["weights"].create_dataset("w", data=np.full(3, 7.0))
        fresh = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        writer = RecordingWriter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bus = Bus([BackupAndRestore(tmp_path / "bk", delete_checkpoint=False)], model=fresh,
                      log=writer)
            assert bus.initial_epoch == 4  # after the previous backup's epoch, not the latest's
            bus.epoch_begin(bus.initial_epoch)
            assert fresh.weights["w"].tolist() == [8.0, 8.0]  # previous: 4 epochs of 2 batches
            bus.close()
        assert not [w for w in caught if issubclass(w.category, SinkFailureWarning)]
        messages = [r["message"] for r in writer.records if r["kind"] == "warning"]
        assert any("latest.weights.h5 is not a backup of this model" in m and
                   "/weights/w" in m and "shape (3,), the model's is (2,)" in m
                   for m in messages), messages
        assert not [r for r in writer.records if r["kind"] == "sink_failed"]
        (restored,) = [r for r in writer.records if r["kind"] == "weights_restored"]
        assert restored["tag"] == "backup:previous.weights.h5"

    def test_no_backup_that_fits_the_model_refuses_the_resume(self, tmp_path: Path) -> None:
        """Neither weights file fits the model (a model of another architecture given to the
        resume): a ConfigError naming both files, before anything is recorded; before, the
        run went on after the log's last epoch with weights that never trained them."""
        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        train(tmp_path / "bk", VALUES, crash_at=5, model=model, delete_checkpoint=False)
        log = tmp_path / "bk" / "events.jsonl"
        before = log.read_bytes()
        other = NumpyModel({"w": np.zeros((2, 2))}, learning_rate=0.1)
        with pytest.raises(ConfigError, match=r"no weights backup in .* fits the model: .*"
                           r"latest\.weights\.h5 is not a backup.*previous\.weights\.h5 is not"):
            Bus([BackupAndRestore(tmp_path / "bk", delete_checkpoint=False)], model=other)
        assert log.read_bytes() == before
        assert other.weights["w"].tolist() == [[0.0, 0.0], [0.0, 0.0]]

    def test_a_model_attached_later_still_gets_the_backup_that_fits(self,
                                                                  tmp_path: Path) -> None:
        """A model the bus gets after the resume chose its epoch (as KerasBridge attaches one
        at fit): the latest file, of another shape, gives way to the previous one all the
        same, with warnings naming the file and saying the weights are from an epoch before
        the one the run goes on at. Before, the latest was restored, the model refused it (a
        sink_failed) and kept its initial weights."""
        import h5py

        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        train(tmp_path / "bk", VALUES, crash_at=5, model=model, delete_checkpoint=False)
        with h5py.File(tmp_path / "bk" / LATEST, "a") as file:
            del file["weights/w"]
            file["weights"].create_dataset("w", data=np.full(3, 7.0))
        writer = RecordingWriter()
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            bus = Bus([BackupAndRestore(tmp_path / "bk", delete_checkpoint=False)], log=writer,
                      learning_rate=0.1)
            assert bus.initial_epoch == 5  # no model yet: the files' metadata decide
            fresh = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
            bus.model = fresh
            bus.epoch_begin(bus.initial_epoch)
            bus.close()
        assert fresh.weights["w"].tolist() == [8.0, 8.0]
        assert not [r for r in writer.records if r["kind"] == "sink_failed"]
        messages = [r["message"] for r in writer.records if r["kind"] == "warning"]
        assert any("latest.weights.h5 is not a backup of this model" in m for m in messages)
        assert any("from before epoch 4 ended, the log resumes at epoch 5" in m
                   for m in messages), messages

    def test_a_compressed_backup_declaring_hundreds_of_mib_is_refused_unread(
            self, tmp_path: Path) -> None:
        """latest.weights.h5 of a few hundred KB whose one gzip dataset declares 400 MiB of
        zeros: the resume refuses it from its declared shape, before reading a value, and
        restores the previous backup. Before, every declared byte was decoded twice (in the
        checking child and in the training process), some 480 MB for a model of 16 bytes,
        and only then did the model refuse the array. The resume runs in a subprocess, whose
        peak memory and that of its children are measured."""
        import subprocess
        import sys

        import h5py

        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        train(tmp_path / "bk", VALUES, crash_at=5, model=model, delete_checkpoint=False)
        n = 50 << 20  # float64 zeros: 400 MiB declared
        with h5py.File(tmp_path / "bk" / LATEST, "a") as file:
            del file["weights/w"]
            data = file["weights"].create_dataset("w", shape=(n,), dtype="f8", chunks=(1 << 20,),
                                                  compression="gzip", compression_opts=9)
            for start in range(0, n, 1 << 20):
                data[start:start + (1 << 20)] = 0.0
        assert (tmp_path / "bk" / LATEST).stat().st_size < 1 << 20
        script = (
            "import resource, sys, warnings\n"
            "import numpy as np\n"
            "from eventbus import Bus, NumpyModel\n"
            "from plugins import BackupAndRestore\n"
            "def peak(who): return resource.getrusage(who).ru_maxrss\n"
            "model = NumpyModel({'w': np.zeros(2)}, learning_rate=0.1)\n"
            "before = peak(resource.RUSAGE_SELF)\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    bus = Bus([BackupAndRestore(sys.argv[1], delete_checkpoint=False)], model=model)\n"
            "    bus.epoch_begin(bus.initial_epoch)\n"
            "    print(bus.initial_epoch, model.weights['w'].tolist())\n"
            "    bus.close()\n"
            "print(peak(resource.RUSAGE_SELF) - before, peak(resource.RUSAGE_CHILDREN) - before)\n"
            "for w in caught: print(w.message)\n")
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "bk")], env=env,
                              capture_output=True, text=True, timeout=300, check=True)
        lines = done.stdout.splitlines()
        grown, child = (int(k) * 1024 for k in lines[1].split())  # ru_maxrss: KiB on Linux
        assert grown < 100 << 20 and child < 100 << 20, (grown, child)
        assert lines[0] == "4 [8.0, 8.0]", done.stdout + done.stderr
        assert any("latest.weights.h5 is not a backup of this model" in line and
                   "(52428800,)" in line for line in lines[2:]), done.stdout

    def test_a_damaged_latest_backup_resumes_from_the_previous_epoch(self,
                                                                      tmp_path: Path) -> None:
        """The latest file cut short by a bad disk: the run goes on after the previous file's
        epoch, with its weights, and ends as the run that never crashed."""
        whole = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        bus, _, backup = train(tmp_path / "a", VALUES, model=whole, delete_checkpoint=False)
        expected = decisions_of(recorded(bus, backup))

        train(tmp_path / "b", VALUES, crash_at=6, delete_checkpoint=False,
              model=NumpyModel({"w": np.zeros(2)}, learning_rate=0.1))
        latest = tmp_path / "b" / "latest.weights.h5"
        latest.write_bytes(latest.read_bytes()[:100])
        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        with pytest.warns(RunWarning, match=r"cannot read .*latest\.weights\.h5"):
            bus, model, backup = train(tmp_path / "b", VALUES, model=model,
                                       delete_checkpoint=False)
        resumed = [r for r in recorded(bus, backup) if r.kind == "resumed"]
        assert [r.initial_epoch for r in resumed] == [5]  # the log had 6 finished epochs
        assert decisions_of(recorded(bus, backup)) == expected
        assert model.weights["w"].tolist() == whole.weights["w"].tolist()

    @examples(RUNS)  # two trainings with HDF5 backups per example
    @given(st.integers(2, len(VALUES) - 1))  # from 2 on, a previous file is there
    def test_a_damaged_latest_backup_after_a_crash_anywhere(
            self, tmp_path_factory: pytest.TempPathFactory, crash_at: int) -> None:
        """Crash at any epoch, the latest weights file then unreadable: the run ends with the
        decisions and weights of the run that never crashed."""
        whole = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        bus, _, backup = train(tmp_path_factory.mktemp("a"), VALUES, model=whole,
                               delete_checkpoint=False)
        expected = decisions_of(recorded(bus, backup))
        directory = tmp_path_factory.mktemp("b")
        train(directory, VALUES, crash_at=crash_at, delete_checkpoint=False,
              model=NumpyModel({"w": np.zeros(2)}, learning_rate=0.1))
        (directory / LATEST).write_bytes(b"\0" * 64)
        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        with pytest.warns(RunWarning, match=r"cannot read .*latest\.weights\.h5"):
            bus, model, backup = train(directory, VALUES, model=model, delete_checkpoint=False)
        assert decisions_of(recorded(bus, backup)) == expected
        assert model.weights["w"].tolist() == whole.weights["w"].tolist()

    def test_metadata_of_the_wrong_type_is_skipped(self, tmp_path: Path) -> None:
        """A backup whose epochs_finished is a string is not a candidate (no TypeError, a
        warning): the previous backup is restored, and the run goes on after its epoch."""
        import h5py
        import orjson

        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        train(tmp_path / "bk", VALUES, crash_at=5, model=model, delete_checkpoint=False)
        with h5py.File(tmp_path / "bk" / "latest.weights.h5", "a") as file:
            meta = orjson.loads(file.attrs["metadata"])
            file.attrs["metadata"] = orjson.dumps({**meta, "epochs_finished": "5"}).decode()
        fresh = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        with pytest.warns(RunWarning, match=r"latest\.weights\.h5 has epochs_finished='5' in "
                                            "its metadata, not a count of epochs"):
            bus = Bus([BackupAndRestore(tmp_path / "bk", delete_checkpoint=False)], model=fresh)
        assert bus.initial_epoch == 4 and fresh.weights["w"].tolist() == [8.0, 8.0]
        bus.close()


class TestDoubleCheckpoint:
    """Keras 3's double_checkpoint: the previous weights backup kept next to the latest."""

    def test_keras3_positional_order(self) -> None:
        """backup_dir, save_freq, double_checkpoint, delete_checkpoint: Keras 3's order."""
        backup = BackupAndRestore("bk", "epoch", False, False)
        assert (backup.double_checkpoint, backup.delete_checkpoint) == (False, False)
        assert BackupAndRestore("bk").double_checkpoint is True  # the default, see the docs

    @NO_LEARNING_RATE
    def test_single_checkpoint_keeps_one_weights_file(self, tmp_path: Path) -> None:
        """double_checkpoint=False: only latest.weights.h5, and a crash mid-epoch resumes
        from it as usual."""
        model = NumpyModel({"w": np.zeros(2)})
        train(tmp_path / "bk", VALUES, crash_at=4, model=model, double_checkpoint=False)
        assert sorted(os.listdir(tmp_path / "bk")) == ["events.jsonl", "latest.weights.h5"]
        fresh = NumpyModel({"w": np.zeros(2)})
        bus = Bus([BackupAndRestore(tmp_path / "bk", double_checkpoint=False)], model=fresh,
                  learning_rate=0.1)
        assert bus.initial_epoch == 4 and fresh.weights["w"].tolist() == [8.0, 8.0]
        bus.close()

    @NO_LEARNING_RATE
    def test_single_checkpoint_removes_a_previous_file(self, tmp_path: Path) -> None:
        """A previous.weights.h5 an earlier run left does not linger (it would be stale)."""
        model = NumpyModel({"w": np.zeros(2)})
        train(tmp_path / "bk", VALUES, crash_at=2, model=model)
        assert "previous.weights.h5" in os.listdir(tmp_path / "bk")
        train(tmp_path / "bk", VALUES, crash_at=4, model=model, double_checkpoint=False)
        assert "previous.weights.h5" not in os.listdir(tmp_path / "bk")

    @NO_LEARNING_RATE
    @pytest.mark.parametrize("double", [True, False])
    def test_weights_ahead_of_the_log(self, tmp_path: Path, double: bool) -> None:
        """A crash between an epoch's weights and its log records: with two files the
        previous one matches the log; with one, nothing does, and the model keeps its weights
        with a warning (why double_checkpoint defaults to True here)."""
        model = NumpyModel({"w": np.zeros(2)})
        train(tmp_path / "bk", VALUES, crash_at=4, model=model, delete_checkpoint=False,
              double_checkpoint=double)
        log = tmp_path / "bk" / "events.jsonl"
        lines = log.read_bytes().splitlines(keepends=True)
        last_end = max(i for i, line in enumerate(lines) if b'"kind":"epoch_end"' in line)
        log.write_bytes(b"".join(lines[:last_end]))  # epoch 3's end never reached the disk
        fresh = NumpyModel({"w": np.zeros(2)})
        # With one file nothing matches the log: the resume says so as it starts.
        kept = nullcontext() if double else pytest.warns(
            RunWarning, match="no weights backup in .* matches the log")
        with kept:
            bus = Bus([BackupAndRestore(tmp_path / "bk", double_checkpoint=double)],
                      model=fresh, learning_rate=0.1)
        bus.epoch_begin(bus.initial_epoch)  # the outcomes of the restore are recorded here
        bus.close()
        assert bus.initial_epoch == 3
        restored = [r for r in read_log(log) if r.kind == "weights_restored"]
        if double:
            assert fresh.weights["w"].tolist() == [6.0, 6.0]  # the end of epoch 2
            assert restored[-1].tag == "backup:previous.weights.h5"
            # ... and it is the latest now, so the next save keeps it as the previous one.
            assert load_checkpoint(tmp_path / "bk" / LATEST).weights["w"].tolist() == \
                [6.0, 6.0]
            assert not (tmp_path / "bk" / "previous.weights.h5").exists()
        else:
            assert fresh.weights["w"].tolist() == [0.0, 0.0]
            assert not restored
            assert any(r.kind == "warning" and "no weights backup" in r.message
                       for r in read_log(log))


class TestBestWeightsSurviveACrash:
    def run(self, backup_dir: Path, model: NumpyModel, values: list[float],
            crash_at: int | None) -> Bus | None:
        """EarlyStopping keeps the best weights; the loop dies in epoch ``crash_at``."""
        backup = BackupAndRestore(backup_dir, delete_checkpoint=False)
        bus = Bus([EarlyStopping(patience=3, restore_best_weights=True), backup], model=model)
        bus.train_begin({"epochs": len(values)})
        for epoch in range(bus.initial_epoch, len(values)):
            bus.epoch_begin(epoch)
            model.weights["w"][...] = epoch  # the weights say which epoch made them
            if epoch == crash_at:
                bus = backup = None  # type: ignore[assignment]
                die()
                return None
            bus.epoch_end(epoch, {"val_loss": values[epoch]})
            if bus.stop_training:
                break
        bus.train_end()
        bus.close()
        return bus

    def test_restore_best_weights_after_a_resume(self, tmp_path: Path) -> None:
        """The best epoch came before the crash: the end of the resumed run restores it."""
        values = [1.0, 0.5, 0.7, 0.8, 0.9, 0.95]
        model = NumpyModel({"w": np.zeros(2)})
        assert self.run(tmp_path / "bk", model, values, crash_at=3) is None
        fresh = NumpyModel({"w": np.zeros(2)})
        bus = self.run(tmp_path / "bk", fresh, values, crash_at=None)
        assert bus is not None and bus.stop_training
        np.testing.assert_array_equal(fresh.weights["w"], [1.0, 1.0])  # epoch 1's weights
        kinds = [r.kind for r in read_log(tmp_path / "bk" / "events.jsonl")]
        assert kinds[-2:] == ["restore_weights", "weights_restored"]


    def test_a_snapshot_file_the_log_never_kept_is_never_read(self, tmp_path: Path,
                                                                monkeypatch) -> None:
        """Every snapshot.*.weights.h5 in the folder was parsed on resume: files planted by
        the dozen, each one the HDF5 library loops on, held the resume a whole deadline
        apiece. Only the files of tags the backup's log kept weights under are read now."""
        import sinks.backup

        values = [1.0, 0.5, 0.7, 0.8, 0.9, 0.95]
        assert self.run(tmp_path / "bk", NumpyModel({"w": np.zeros(2)}), values,
                        crash_at=3) is None
        for n in range(5):
            (tmp_path / "bk" / f"snapshot.planted{n}.weights.h5").write_bytes(b"\x89HDF" * 9)
        read: list[str] = []
        real = sinks.backup.BackupFiles._read
        monkeypatch.setattr(sinks.backup.BackupFiles, "_read",
                            lambda self, name, warned, *more: read.append(name) or
                            real(self, name, warned, *more))
        fresh = NumpyModel({"w": np.zeros(2)})
        bus = self.run(tmp_path / "bk", fresh, values, crash_at=None)
        assert bus is not None and not any("planted" in name for name in read)
        assert any(name.startswith("snapshot.") for name in read)  # the run's own, read
        np.testing.assert_array_equal(fresh.weights["w"], [1.0, 1.0])


    def test_registered_after_the_bus_it_still_restores_the_kept_snapshots(self,
                                                                            tmp_path: Path):
        """A BackupAndRestore registered on a bus already built (the weights alone are backed
        up; the run's own log is resumed) writes no backup log: its snapshot files are then
        told by the run id in them, not by the tags of a log it does not have."""
        log, backup = tmp_path / "events.jsonl", tmp_path / "bk"
        losses = [1.0, 0.5, 0.9, 0.95, 0.97, 0.99, 1.0, 1.1]  # the best at epoch 1

        def fit(crash: int | None = None) -> NumpyModel:
            model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RunWarning)
                bus = Bus([EarlyStopping(monitor="loss", patience=4, restore_best_weights=True)],
                          log=log, model=model, resume=True)
                bus.register(BackupAndRestore(backup))
                bus.train_begin({"epochs": 8})
                for epoch in range(bus.initial_epoch, 8):
                    bus.epoch_begin(epoch)
                    model.weights["w"][:] = epoch
                    bus.epoch_end(epoch, {"loss": losses[epoch]})
                    if epoch == crash or bus.stop_training:
                        break
                if crash is None:
                    bus.train_end()
                bus.close()
            return model

        fit(crash=2)
        np.testing.assert_array_equal(fit().weights["w"], [1.0, 1.0])


class TestRestoreThroughTheBus:
    def test_a_model_that_refuses_the_weights_is_a_recorded_failure(self, tmp_path: Path) -> None:
        """The backup's weights go into the model through the bus, as a decision's would: a
        model that refuses them (here, whatever it is given; weights of another shape are
        refused before, by the restore) is the model's sink_failed in the log and the run
        goes on; the plugin never calls set_weights itself."""

        class Refusing(NumpyModel):
            def set_weights(self, weights):
                raise ConfigError("Refusing.set_weights: no weights taken", field="weights")

        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        train(tmp_path / "bk", VALUES, crash_at=5, model=model, delete_checkpoint=False)
        other = Refusing({"w": np.zeros(2)}, learning_rate=0.1)
        writer = RecordingWriter()
        with pytest.warns(SinkFailureWarning, match="model on restore_weights"):
            bus = Bus([BackupAndRestore(tmp_path / "bk", delete_checkpoint=False)],
                      model=other, log=writer)
            assert bus.initial_epoch == 5
            bus.close()
        failed = [r for r in writer.records if r["kind"] == "sink_failed"]
        assert [(f["sink"], f["event"]) for f in failed] == [("model", "restore_weights")]
        assert "no weights taken" in failed[0]["message"]
        assert other.weights["w"].tolist() == [0.0, 0.0]
        kinds = [r["kind"] for r in writer.records]
        assert "weights_restored" not in kinds and kinds.index("resumed") < \
            kinds.index("sink_failed")

    def test_restored_weights_are_recorded_after_the_resume(self, tmp_path: Path) -> None:
        """weights_restored comes after the resumed record, which readers keep: the audit of a
        resumed run shows the restore."""
        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        train(tmp_path / "bk", VALUES, crash_at=5, model=model, delete_checkpoint=False)
        fresh = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        Bus([BackupAndRestore(tmp_path / "bk", delete_checkpoint=False)], model=fresh).close()
        kept = effective_records(read_log(tmp_path / "bk" / "events.jsonl"))
        kinds = [r.kind for r in kept]
        assert kinds.index("resumed") < kinds.index("weights_restored")
        (restored,) = [r for r in kept if r.kind == "weights_restored"]
        assert (restored.source, restored.tag, restored.epoch) == (
            "BackupAndRestore", "backup:latest.weights.h5", 4)


class TestAFullDisk:
    """A backup the disk refuses (ENOSPC) leaves the plugin on: the next save writes newer
    weights, and a snapshot the disk refused is written with the next save, from the weights
    the bus still keeps. The spell is one sink_failed in the backup's log."""

    def test_the_next_epoch_is_backed_up_and_the_snapshot_written_after(self, tmp_path,
                                                                      monkeypatch):
        import errno

        from sinks.backup import BackupFiles, snapshot_file

        real_save, real_snapshot = BackupFiles.save, BackupFiles.save_snapshot
        full = {"epochs": {1, 2}}

        def refuse(epochs_finished):
            if epochs_finished in full["epochs"]:
                raise OSError(errno.ENOSPC, "No space left on device")

        def save(self, model, metadata):
            refuse(metadata["epochs_finished"])
            real_save(self, model, metadata)

        def save_snapshot(self, tag, weights, metadata):
            refuse(metadata["epochs_finished"] if full["epochs"] else None)
            real_snapshot(self, tag, weights, metadata)

        monkeypatch.setattr(BackupFiles, "save", save)
        monkeypatch.setattr(BackupFiles, "save_snapshot", save_snapshot)
        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        backup = BackupAndRestore(tmp_path / "backup", delete_checkpoint=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SinkFailureWarning)
            with Bus([EarlyStopping(monitor="val_loss", patience=9, restore_best_weights=True),
                      backup], model=model) as bus:
                bus.train_begin({"epochs": 5})
                for epoch in range(5):
                    bus.epoch_begin(epoch)
                    model.weights["w"] += 1
                    if epoch == 2:
                        full["epochs"] = set()  # room again
                    bus.epoch_end(epoch, {"val_loss": [0.9, 0.5, 0.6, 0.7, 0.8][epoch]})
                bus.train_end()
        assert [f.error for f in bus.failures] == ["OSError"]  # once for the spell
        latest = load_checkpoint(tmp_path / "backup" / LATEST)
        assert latest.metadata["epochs_finished"] == 5
        assert latest.weights["w"].tolist() == [5.0, 5.0]
        tags = {r.tag for r in read_log(backup.log_path) if r.kind == "snapshot_weights"}
        assert len(tags) == 1
        best = load_checkpoint(tmp_path / "backup" / snapshot_file(tags.pop()))
        assert best.weights["w"].tolist() == [2.0, 2.0]  # epoch 1's, written at epoch 2's save
        faults = [r for r in read_log(backup.log_path) if r.kind == "sink_failed"]
        assert len(faults) == 1 and "errno 28" in faults[0].message
        assert faults[0].sink == "BackupAndRestore"


def test_a_latest_backup_ahead_of_the_log_gives_way_to_the_one_it_matches(tmp_path):
    """Killed after an epoch's weights were renamed into place and before the log had that
    epoch: the resume takes the previous file, and it now becomes the latest, so the next
    save's rotation keeps it. (Left as previous, it was rotated away by that save, and a
    second crash before the log caught up found no backup: the run went on from its initial
    weights.)"""
    from sinks.backup import PREVIOUS, BackupFiles
    from sinks.hdf5 import write_checkpoint

    files = BackupFiles(str(tmp_path))
    write_checkpoint(tmp_path / PREVIOUS, {"w": np.full(2, 5.0)},
                     metadata={"run_id": "r", "epochs_finished": 5})
    write_checkpoint(tmp_path / LATEST, {"w": np.full(2, 6.0)},
                     metadata={"run_id": "r", "epochs_finished": 6})  # ahead of the log
    found = files.restore("r", 5, have_model=True)
    assert found.finished == 5 and found.latest[0] == PREVIOUS
    files.promote_previous()  # what the plugin does once it restored it
    assert load_checkpoint(tmp_path / LATEST).metadata["epochs_finished"] == 5
    assert not (tmp_path / PREVIOUS).exists()
    model = NumpyModel({"w": np.full(2, 6.0)})
    files.save(model, {"run_id": "r", "epochs_finished": 6})  # the epoch trained again
    assert load_checkpoint(tmp_path / PREVIOUS).metadata["epochs_finished"] == 5
    assert files.restore("r", 5, have_model=True).finished == 5  # a second crash: still there


def test_a_resume_that_adds_a_backup_with_nothing_in_it_still_restores_the_checkpoint(
        tmp_path):
    """BackupAndRestore added after a crash (an empty folder) finds no weights: the checkpoint
    the log vouches for is restored, not left unused while the run goes on from whatever the
    model holds (all training before the crash lost)."""
    from plugins import ModelCheckpoint

    log, last = tmp_path / "events.jsonl", str(tmp_path / "last.h5")
    model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
    bus = Bus([ModelCheckpoint(last, monitor="loss")], log=log, model=model)
    bus.train_begin({"epochs": 6})
    for epoch in range(3):
        bus.epoch_begin(epoch)
        model.weights["w"][:] = epoch + 1
        bus.epoch_end(epoch, {"loss": 1.0})
    bus.close()  # the crash: no train_end
    model.weights["w"][:] = 0  # a fresh process's model
    with pytest.warns(RunWarning, match="no weights backup"):
        bus = Bus([ModelCheckpoint(last, monitor="loss"),
                   BackupAndRestore(tmp_path / "backup")], log=log, model=model, resume=True)
        bus.train_begin({"epochs": 6})
    assert bus.initial_epoch == 3 and model.weights["w"].tolist() == [3.0, 3.0]
    bus.close()
