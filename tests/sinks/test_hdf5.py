"""The HDF5 checkpoint sink: contents read back with h5py, atomic writes, no pickle."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from eventbus import Bus, NumpyModel, Plugin, RunWarning, hookimpl
from eventbus.records import SaveCheckpoint
from eventbus.testing import RecordingWriter
from sinks import hdf5
from sinks.hdf5 import HDF5CheckpointWriter, load_checkpoint, write_checkpoint

from hypothesis_profiles import FILES, examples


def _weights() -> dict[str, np.ndarray]:
    return {"dense/kernel": np.arange(6, dtype=np.float32).reshape(2, 3),
            "dense/bias": np.array([0.5, -1.0, 2.0]), "step": np.array(7, dtype=np.int64)}


class TestWriteAndRead:
    def test_h5py_reads_back_the_weights(self, tmp_path: Path) -> None:
        """Every weight is a dataset at its name; values, dtypes and shapes are kept."""
        path = tmp_path / "ckpt.h5"
        write_checkpoint(path, _weights(), metadata={"epoch": 3, "value": float("nan")},
                         model_config={"layers": 2})
        with h5py.File(path, "r") as file:
            assert file.attrs["format"] == "eventbus-checkpoint"
            for name, array in _weights().items():
                stored = file["weights"][name][()]
                assert stored.dtype == array.dtype and np.array_equal(stored, array)
            assert orjson.loads(file.attrs["model_config"]) == {"layers": 2}
            assert orjson.loads(file.attrs["metadata"]) == {"epoch": 3, "value": "NaN"}

    def test_load_checkpoint_round_trip(self, tmp_path: Path) -> None:
        """load_checkpoint gives back weights in order, metadata (NaN included), config and
        optimizer state."""
        path = tmp_path / "ckpt.h5"
        optimizer = {"adam/m": np.ones(3), "adam/iterations": np.array(4)}
        write_checkpoint(path, _weights(), metadata={"run_id": "r", "value": float("nan")},
                         model_config={"a": [1, 2]}, optimizer=optimizer)
        checkpoint = load_checkpoint(path)
        assert list(checkpoint.weights) == list(_weights())
        for name, array in _weights().items():
            assert np.array_equal(checkpoint.weights[name], array)
        assert checkpoint.metadata["run_id"] == "r" and np.isnan(checkpoint.metadata["value"])
        assert checkpoint.model_config == {"a": [1, 2]}
        assert np.array_equal(checkpoint.optimizer["adam/m"], np.ones(3))

    def test_load_checkpoint_names_a_file_it_cannot_open(self, tmp_path: Path) -> None:
        text = tmp_path / "notes.h5"
        text.write_text("not hdf5")
        with pytest.raises(OSError, match=r"notes\.h5: not an HDF5 checkpoint file"):
            load_checkpoint(text)
        with pytest.raises(FileNotFoundError, match=r"missing\.h5: No such file"):
            load_checkpoint(tmp_path / "missing.h5")

    @examples(FILES, function_fixture=True)  # an HDF5 file per example, rewritten each time
    @given(st.dictionaries(st.from_regex(r"[a-z]{1,6}(/[a-z]{1,6})?", fullmatch=True),
                           hnp.arrays(st.sampled_from([np.float32, np.float64, np.int32]),
                                      hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)),
                           max_size=5))
    def test_any_weights_round_trip(self, tmp_path: Path, weights: dict) -> None:
        """encode -> decode -> equal, for any numeric arrays under non-clashing names."""
        names = sorted(weights)
        if any(b.startswith(a + "/") for a in names for b in names):
            return  # "a" and "a/b" cannot both be datasets in one HDF5 file
        path = tmp_path / "any.h5"
        write_checkpoint(path, weights)
        loaded = load_checkpoint(path).weights
        assert list(loaded) == list(weights)
        for name, array in weights.items():
            assert loaded[name].dtype == array.dtype
            np.testing.assert_array_equal(loaded[name], array)

    def test_size_and_sha256_describe_the_file(self, tmp_path: Path) -> None:
        """The returned size and digest are the file's own."""
        path = tmp_path / "ckpt.h5"
        size, digest = write_checkpoint(path, _weights())
        data = path.read_bytes()
        assert size == len(data) and digest == hashlib.sha256(data).hexdigest()

    @pytest.mark.parametrize("name", ["", "/abs", "a//b", "a/../b"])
    def test_bad_names_are_refused(self, tmp_path: Path, name: str) -> None:
        """Names that are not plain '/'-paths are errors, and nothing is left behind."""
        with pytest.raises(ValueError, match="cannot be stored"):
            write_checkpoint(tmp_path / "x.h5", {name: np.zeros(1)})
        assert os.listdir(tmp_path) == []

    def test_object_arrays_are_refused(self, tmp_path: Path) -> None:
        """Only numeric arrays: nothing that would need pickle."""
        with pytest.raises(ValueError, match="numeric"):
            write_checkpoint(tmp_path / "x.h5", {"w": np.array([object()], dtype=object)})

    def test_not_a_checkpoint(self, tmp_path: Path) -> None:
        """An HDF5 file of another kind is refused with a clear message."""
        path = tmp_path / "other.h5"
        with h5py.File(path, "w") as file:
            file["x"] = np.zeros(1)
        with pytest.raises(ValueError, match="not an eventbus checkpoint"):
            load_checkpoint(path)

    def test_directory_target(self, tmp_path: Path) -> None:
        """A directory at the target path is an error naming it."""
        with pytest.raises(IsADirectoryError):
            write_checkpoint(tmp_path, _weights())


class TestAtomicity:
    def test_fault_mid_write_keeps_the_previous_checkpoint(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A crash after some weights are written leaves the old file intact and no
        partial or temporary file behind."""
        path = tmp_path / "ckpt.h5"
        write_checkpoint(path, {"w": np.zeros(3)}, metadata={"epoch": 1})
        before = path.read_bytes()
        real = hdf5._write_arrays
        written: list[str] = []

        def failing(group, arrays, what):  # type: ignore[no-untyped-def]
            group.create_dataset("first", data=np.ones(1000))  # part of the new content
            written.append("first")
            raise OSError("disk full (injected)")

        monkeypatch.setattr(hdf5, "_write_arrays", failing)
        with pytest.raises(OSError, match="injected"):
            write_checkpoint(path, {"w": np.ones(3), "v": np.ones(3)}, metadata={"epoch": 2})
        monkeypatch.setattr(hdf5, "_write_arrays", real)
        assert written == ["first"]
        assert path.read_bytes() == before
        assert load_checkpoint(path).metadata == {"epoch": 1}
        assert os.listdir(tmp_path) == ["ckpt.h5"]

    def test_fault_at_rename_leaves_no_partial_target(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """With no previous file, a fault before the rename leaves nothing at the target."""
        def no_replace(src: str, dst: str) -> None:
            raise OSError("crash before rename (injected)")

        monkeypatch.setattr(hdf5.os, "replace", no_replace)
        with pytest.raises(OSError, match="injected"):
            write_checkpoint(tmp_path / "new.h5", _weights())
        assert os.listdir(tmp_path) == []

    def test_file_mode_follows_umask(self, tmp_path: Path) -> None:
        """The temporary file's private mode does not stick to the checkpoint."""
        path = tmp_path / "ckpt.h5"
        for mask, mode in ((0o022, 0o644), (0o027, 0o640)):  # the umask of the moment
            previous = os.umask(mask)
            try:
                write_checkpoint(path, _weights())
            finally:
                os.umask(previous)
            assert path.stat().st_mode & 0o777 == mode


class Saver(Plugin):
    """Decides one save per epoch_end, to the paths it is given in turn."""

    def __init__(self, paths: list[str], weights_only: bool = False):
        self.paths = list(paths)
        self.weights_only = weights_only

    @hookimpl
    def on_epoch_end(self, event: Any) -> Any:
        return SaveCheckpoint(path=self.paths[event.epoch], reason="test", code="epoch",
                              weights_only=self.weights_only,
                              evidence={"monitor": "val_loss", "value": 0.3})


def _run(paths: list[str], model: object = None, weights_only: bool = False,
         ) -> list[dict[str, Any]]:
    writer = RecordingWriter()
    bus = Bus([Saver(paths, weights_only), HDF5CheckpointWriter()], model=model, log=writer,
              run_id="run1")
    bus.train_begin()
    for epoch in range(len(paths)):
        bus.epoch_begin(epoch)
        bus.epoch_end(epoch)
    bus.train_end()
    bus.close()
    return writer.records


class TestWriterSink:
    def test_writes_on_save_checkpoint_and_records_checkpoint_saved(self, tmp_path: Path) -> None:
        """A save_checkpoint decision becomes a file and a checkpoint_saved record."""
        model = NumpyModel(_weights(), learning_rate=0.1, config={"name": "m"})
        target = tmp_path / "sub" / "c.h5"
        records = _run([str(target)], model)
        decision = next(r for r in records if r["kind"] == "save_checkpoint")
        saved = [r for r in records if r["kind"] == "checkpoint_saved"]
        assert len(saved) == 1
        data = target.read_bytes()
        assert saved[0]["size"] == len(data)
        assert saved[0]["sha256"] == hashlib.sha256(data).hexdigest()
        assert saved[0]["cause_seq"] == decision["seq"]
        assert saved[0]["source"] == "HDF5CheckpointWriter"
        checkpoint = load_checkpoint(target)
        assert checkpoint.metadata["run_id"] == "run1"
        assert checkpoint.metadata["seq"] == decision["seq"]
        assert checkpoint.metadata["epoch"] == 0
        assert (checkpoint.metadata["monitor"], checkpoint.metadata["value"]) == ("val_loss", 0.3)
        assert checkpoint.metadata["learning_rate"] == 0.1
        assert checkpoint.model_config["name"] == "m"
        for name, array in _weights().items():
            assert np.array_equal(checkpoint.weights[name], array)

    def test_weights_only_leaves_the_config_out(self, tmp_path: Path) -> None:
        """weights_only=True stores weights and metadata only."""
        _run([str(tmp_path / "w.h5")], NumpyModel(_weights(), config={"name": "m"}),
             weights_only=True)
        assert load_checkpoint(tmp_path / "w.h5").model_config is None

    def test_failure_is_recorded_and_the_writer_stays_on(self, tmp_path: Path) -> None:
        """A failed write is a sink_failed record; the next save still happens."""
        (tmp_path / "isdir.h5").mkdir()
        with pytest.warns(UserWarning, match="sink failure"):
            records = _run([str(tmp_path / "isdir.h5"), str(tmp_path / "ok.h5")],
                           NumpyModel(_weights()))
        kinds = [r["kind"] for r in records]
        assert kinds.count("sink_failed") == 1 and kinds.count("checkpoint_saved") == 1
        failed = next(r for r in records if r["kind"] == "sink_failed")
        assert failed["error"] == "IsADirectoryError" and failed["epoch"] == 0
        assert (tmp_path / "ok.h5").exists()

    def test_no_model_is_a_warning(self, tmp_path: Path) -> None:
        """Without a model adapter there is nothing to write: a warning says so."""
        with pytest.warns(RunWarning, match="save_checkpoint from 'Saver' needs a model adapter"):
            records = _run([str(tmp_path / "x.h5")])
        warning = next(r for r in records if r["kind"] == "warning")
        assert "needs a model adapter" in warning["message"]
        assert not (tmp_path / "x.h5").exists()


def test_a_killed_writes_leftover_is_removed_by_the_next_write(tmp_path):
    """A crash mid-write leaves a hidden temporary file; the next write of that target removes
    it, and leaves other targets' files alone."""
    import numpy as np

    from sinks.hdf5 import load_checkpoint, write_checkpoint

    target = tmp_path / "best.h5"
    leftover = tmp_path / ".best.h5.abc123.tmp"
    leftover.write_bytes(b"half a checkpoint")
    other = tmp_path / ".other.h5.xyz.tmp"
    other.write_bytes(b"another target's")
    write_checkpoint(target, {"w": np.ones(3)})
    assert not leftover.exists() and other.exists()
    np.testing.assert_array_equal(load_checkpoint(target).weights["w"], np.ones(3))


KILLED_AFTER_THE_RENAME = """
import os, signal, sys
import numpy as np
import sinks.hdf5 as hdf5
from eventbus import Bus, NumpyModel
from plugins import ModelCheckpoint

folder, kill_at = sys.argv[1], int(sys.argv[2])
target = os.path.join(folder, "last.h5")
real_replace, saves = os.replace, [0]


class KillingOs:
    # sinks.hdf5's os: killed right after the rename of save number kill_at into place,
    # before the bus flushes the records of that save into the log.
    def __getattr__(self, name):
        return getattr(os, name)

    def replace(self, source, destination):
        real_replace(source, destination)
        if os.fspath(destination) == target:
            saves[0] += 1
            if saves[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)


if kill_at:
    hdf5.os = KillingOs()
model = NumpyModel({"w": np.zeros(4)}, learning_rate=0.1)
bus = Bus([ModelCheckpoint(target)], log=os.path.join(folder, "run.jsonl"), model=model,
          resume=True)
print(bus.initial_epoch, float(model.weights["w"][0]), flush=True)
bus.train_begin({"epochs": 6})
for epoch in range(bus.initial_epoch, 6):
    bus.epoch_begin(epoch)
    model.weights["w"] += 1  # the weights count the epochs trained
    bus.epoch_end(epoch, {"loss": 1.0})
bus.train_end()
bus.close()
print(float(model.weights["w"][0]))
"""


def killed_after_the_rename(folder: Path, kill_at: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", KILLED_AFTER_THE_RENAME, str(folder),
                           str(kill_at)], capture_output=True, text=True, timeout=120)


def test_killed_between_a_save_and_its_record_the_resume_restores_the_kept_file(tmp_path):
    """ModelCheckpoint saving every epoch to one path: SIGKILL right after epoch 3's file is
    renamed over epoch 2's, before the log has epoch 3. The log's last checkpoint is epoch 2's,
    which the writer kept beside the new file: the resume restores it (the weights of 3 epochs)
    and the run ends with the weights of all 6; a clean end leaves no kept file."""
    from eventbus import read_log

    killed = killed_after_the_rename(tmp_path, 4)
    assert killed.returncode == -9, killed.stderr
    assert load_checkpoint(tmp_path / "last.h5").weights["w"][0] == 4.0  # ahead of the log
    assert [r.epoch for r in read_log(tmp_path / "run.jsonl") if r.kind == "epoch_end"] == \
        [0, 1, 2]
    resumed = killed_after_the_rename(tmp_path, 0)
    assert resumed.returncode == 0, resumed.stderr
    start, final = resumed.stdout.split("\n")[:2]
    assert start.split() == ["3", "3.0"]  # epoch 3 again, from the weights of epochs 0-2
    assert float(final) == 6.0
    warnings = [r.message for r in read_log(tmp_path / "run.jsonl") if r.kind == "warning"]
    assert any("kept beside it, is restored" in m for m in warnings), warnings
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.h5", "run.jsonl"]


def test_killed_twice_before_the_log_catches_up_the_resume_still_finds_its_file(tmp_path):
    """The resume after the first crash restores the kept file and puts it back at its name,
    so its own first save keeps it beside the new one: a second crash right after that save
    still finds the file the log records (before, that save kept the file that was ahead of
    the log, and the second resume went on from the initial weights)."""
    # After epoch 3's rename (the log has epochs 0-2), then resumed at 3 and killed after its
    # first save's rename.
    assert killed_after_the_rename(tmp_path, 4).returncode == -9
    assert killed_after_the_rename(tmp_path, 1).returncode == -9
    resumed = killed_after_the_rename(tmp_path, 0)
    assert resumed.returncode == 0, resumed.stderr
    start, final = resumed.stdout.split("\n")[:2]
    assert start.split() == ["3", "3.0"] and float(final) == 6.0


SAVING_EVERY_TWO_BATCHES = """
import errno, os, signal, sys
import numpy as np
import sinks.hdf5 as hdf5
from eventbus import Bus, NumpyModel
from plugins import ModelCheckpoint

folder, kill_at, full_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls, real = [0], hdf5.write_checkpoint


def refused_once(*args, **kwargs):
    calls[0] += 1
    if calls[0] == full_at:  # this save: the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(*args, **kwargs)


hdf5.write_checkpoint = refused_once
model = NumpyModel({"w": np.zeros(4)}, learning_rate=0.1)
bus = Bus([ModelCheckpoint(os.path.join(folder, "last.h5"), save_freq=2)],
          log=os.path.join(folder, "run.jsonl"), model=model, resume=True)
print(bus.initial_epoch, float(model.weights["w"][0]), flush=True)
bus.train_begin({"epochs": 4})
for epoch in range(bus.initial_epoch, 4):
    bus.epoch_begin(epoch)
    for batch in range(5):
        if f"{epoch}:{batch}" == kill_at:  # batch 4: after the epoch's batches, before its end
            os.kill(os.getpid(), signal.SIGKILL)
        if batch == 4:
            break
        bus.batch_begin(batch)
        model.weights["w"] += 1  # the weights count the batches trained
        bus.batch_end(batch, {"loss": 1.0})
    bus.epoch_end(epoch, {"loss": 1.0})
bus.train_end()
bus.close()
print(float(model.weights["w"][0]))
"""


def saving_every_two_batches(folder: Path, *, kill_at: str = "never",
                             full_at: int = 0) -> subprocess.CompletedProcess[str]:
    """ModelCheckpoint saving every 2 batches, 4 batches an epoch, no BackupAndRestore, in a
    subprocess: killed at ``kill_at`` ("epoch:batch"), the ``full_at``-th save refused by a
    full disk. It prints the epoch and weight it starts from, then the final weight."""
    return subprocess.run([sys.executable, "-c", SAVING_EVERY_TWO_BATCHES, str(folder),
                           kill_at, str(full_at)], capture_output=True, text=True, timeout=120)


def test_killed_after_two_saves_in_an_unfinished_epoch_the_resume_finds_the_epochs_file(
        tmp_path):
    """A kill after epoch 2's two saves, before its end. The resume goes back to epoch 1's
    end, whose save the log vouches for: the file the first save of epoch 2 replaced, kept
    beside it until the epoch ends. Before, the second save kept the first one's file
    instead, and the resume trained on from the initial weights."""
    assert saving_every_two_batches(tmp_path, kill_at="2:4").returncode == -9
    assert load_checkpoint(tmp_path / "last.h5").weights["w"][0] == 12.0  # ahead of the log
    resumed = saving_every_two_batches(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    start, final = resumed.stdout.split("\n")[:2]
    assert start.split() == ["2", "8.0"]  # epoch 2 again, from the weights of epochs 0-1
    assert float(final) == 16.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.h5", "run.jsonl"]


def test_a_save_a_full_disk_refused_keeps_the_vouched_file_when_written_later(tmp_path):
    """Epoch 1's second save is refused by a full disk and written at epoch 2's start, a new
    window: it keeps the file it replaces, the one the log vouches for (epoch 1's first save,
    w = 6), and a kill before the next flush resumes from it. Before, whether to keep was
    decided when the save was first tried (no: the window's second save), and the resume
    went on from the initial weights."""
    assert saving_every_two_batches(tmp_path, kill_at="2:1", full_at=4).returncode == -9
    resumed = saving_every_two_batches(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split("\n")[0].split() == ["2", "6.0"]
    assert "not restored" not in resumed.stderr


class TestAFullDisk:
    """A save the disk refuses (ENOSPC) is kept, with a copy of the weights it was asked for,
    and written at the writer's next record: the best model of save_best_only is not lost
    for the rest of the run."""

    @staticmethod
    def refusing(monkeypatch, times: int) -> None:
        import errno

        real, left = hdf5.write_checkpoint, [times]

        def write_checkpoint(*args, **kwargs):
            if left[0]:
                left[0] -= 1
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(*args, **kwargs)

        monkeypatch.setattr(hdf5, "write_checkpoint", write_checkpoint)

    def test_the_refused_save_is_written_with_its_own_weights_at_the_next_record(
            self, tmp_path, monkeypatch):
        from plugins import ModelCheckpoint

        self.refusing(monkeypatch, 2)  # epoch 1's save (the best), and the first retry
        model = NumpyModel({"w": np.zeros(3)}, learning_rate=0.1)
        writer = RecordingWriter()
        best = tmp_path / "best.h5"
        with pytest.warns(UserWarning, match="sink failure"), \
                Bus([ModelCheckpoint(str(best), save_best_only=True)], model=model,
                    log=writer) as bus:
            bus.train_begin()
            for epoch, loss in enumerate([0.9, 0.1, 0.5, 0.6, 0.7]):
                bus.epoch_begin(epoch)
                model.weights["w"] += 1  # the weights count the epochs trained
                bus.epoch_end(epoch, {"val_loss": loss})
            bus.train_end()
        records = writer.records
        decisions = [r for r in records if r["kind"] == "save_checkpoint"]
        assert [d["epoch"] for d in decisions] == [0, 1]
        saved = [r for r in records if r["kind"] == "checkpoint_saved"]
        assert [s["cause_seq"] for s in saved] == [d["seq"] for d in decisions]
        checkpoint = load_checkpoint(best)
        assert checkpoint.weights["w"].tolist() == [2.0, 2.0, 2.0]  # epoch 1's, not later
        assert checkpoint.metadata["epoch"] == 1
        failed = [r for r in records if r["kind"] == "sink_failed"]
        assert len(failed) == 1 and "kept and written" in failed[0]["message"]

    def test_still_refused_at_close_it_is_a_sink_failure_naming_it(self, tmp_path, monkeypatch):
        self.refusing(monkeypatch, 10**6)
        with pytest.warns(UserWarning, match="sink failure"):
            records = _run([str(tmp_path / "a.h5")], NumpyModel(_weights()))
        failed = [r for r in records if r["kind"] == "sink_failed"]
        assert [f["event"] for f in failed] == ["save_checkpoint", "close"]
        assert "a.h5 (epoch 0) could not be written" in failed[1]["message"]
        assert not (tmp_path / "a.h5").exists()

    def test_a_kept_save_that_then_fails_for_good_is_given_up_and_the_next_one_written(
            self, tmp_path, monkeypatch):
        """Two saves kept through a full disk; at the retry the first meets an error no disk
        recovers from (a read-only file system): it is given up, named, and the second is
        written and recorded with its own sha256 (the retry once went on with the first's)."""
        import errno

        real, calls = hdf5.write_checkpoint, []

        def write_checkpoint(path, *args, **kwargs):
            calls.append(path)
            if len(calls) <= 3:  # a refused, retried and refused; b refused: both kept
                raise OSError(errno.ENOSPC, "No space left on device")
            if path.endswith("a.h5"):
                raise OSError(errno.EROFS, "Read-only file system")
            return real(path, *args, **kwargs)

        monkeypatch.setattr(hdf5, "write_checkpoint", write_checkpoint)
        paths = [str(tmp_path / "a.h5"), str(tmp_path / "b.h5"), str(tmp_path / "c.h5")]
        with pytest.warns(UserWarning, match="sink failure"):
            records = _run(paths, NumpyModel(_weights()))
        saved = {r["path"]: r for r in records if r["kind"] == "checkpoint_saved"}
        assert sorted(saved) == paths[1:]
        for path, record in saved.items():
            data = Path(path).read_bytes()
            assert record["sha256"] == hashlib.sha256(data).hexdigest()
        given_up = [r for r in records if r["kind"] == "sink_failed"
                    and "is given up" in r["message"]]
        assert len(given_up) == 1 and "a.h5" in given_up[0]["message"]
        assert not (tmp_path / "a.h5").exists()

    def test_a_kept_save_the_run_then_deletes_is_dropped_and_one_pushed_out_is_said(
            self, tmp_path, monkeypatch):
        """save_top_k=1 through a full disk: the kept save of a path a later
        delete_checkpoint names is dropped (written after, it came back), and a kept save
        pushed out by newer ones is a sink_failed naming it, not silence."""
        from plugins import ModelCheckpoint

        self.refusing(monkeypatch, 10**6)
        writer = RecordingWriter()
        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        import warnings

        with warnings.catch_warnings(), \
                Bus([ModelCheckpoint(str(tmp_path / "ckpt-{epoch}.h5"), monitor="loss",
                                     save_top_k=1)], model=model, log=writer) as bus:
            warnings.simplefilter("ignore")  # the records are what is checked
            bus.train_begin()
            for epoch in range(7):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0 - epoch / 10})
            monkeypatch.undo()  # room again: what is still kept is written
            bus.epoch_begin(7)
            bus.train_end()
        deleted = {r["path"] for r in writer.records if r["kind"] == "delete_checkpoint"}
        saved = {r["path"] for r in writer.records if r["kind"] == "checkpoint_saved"}
        assert deleted and not deleted & saved
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-7.h5"]
        assert any(r["kind"] == "warning" and "its kept save is dropped" in r["message"]
                   for r in writer.records)

    def test_a_kept_save_pushed_out_by_newer_ones_is_said(self, tmp_path, monkeypatch):
        """At most four saves are kept (each holds a copy of the weights): a fifth pushes the
        oldest out, and that is a sink_failed naming it, not a save silently gone."""
        self.refusing(monkeypatch, 10**6)
        paths = [str(tmp_path / f"e{i}.h5") for i in range(6)]
        with pytest.warns(UserWarning, match="sink failure"):
            records = _run(paths, NumpyModel(_weights()))
        pushed = [r["message"] for r in records if r["kind"] == "sink_failed"
                  and "newer saves wait" in r["message"]]
        assert [m.split(" (epoch")[0].rsplit("/", 1)[1] for m in pushed] == ["e0.h5", "e1.h5"]
