"""A checkpoint is parsed in a child process first (sinks.isolated): a file on which the HDF5
library loops for ever, or crashes, is refused with a CheckpointError naming it within the
deadline, and the run goes on (a backup falls back to its other file).

The loop is real: one byte of a real checkpoint changed (the size of a variable-length string
in HDF5's global heap), as a fuzzer found it; the mechanism is also checked with work that
loops, crashes or fails on purpose, so it holds whatever a given HDF5 release does with the
byte.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sinks.isolated
from eventbus.errors import CheckpointError
from sinks.hdf5 import load_checkpoint, write_checkpoint
from sinks.isolated import run_isolated

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="isolation needs os.fork")


@pytest.fixture(autouse=True)
def _short_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks.isolated, "BASE_SECONDS", 1.0)


def within(seconds: float, fn: Any) -> Any:
    """``fn()``'s outcome (its value or the exception it raised), which must come in time."""
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    assert time.monotonic() - start < seconds
    return out[0]


def looping_checkpoint(path: Path) -> bool:
    """A real checkpoint with the size of the heap string '["m"]' made 255: the file the
    fuzzer found. False when this HDF5 lays the file out otherwise."""
    write_checkpoint(path, {"dense/kernel": np.ones((2, 2)), "dense/bias": np.zeros(2)},
                     metadata={"epoch": 1}, optimizer={"m": np.ones(2)})
    data = bytearray(path.read_bytes())
    where = data.find((5).to_bytes(8, "little") + b'["m"]')
    if where < 0:
        return False
    data[where] = 0xFF
    path.write_bytes(bytes(data))
    return True


class TestTheMechanism:
    def test_work_that_never_returns_is_killed_at_the_deadline(self):
        def spin() -> None:
            while True:
                pass

        error = within(10, lambda: run_isolated(spin, path="x.h5", seconds=1.0))
        assert isinstance(error, CheckpointError) and error.path == "x.h5"
        assert "did not finish within 1 s" in str(error)

    def test_a_crash_is_the_childs_alone(self):
        error = within(10, lambda: run_isolated(
            lambda: os.kill(os.getpid(), signal.SIGSEGV), path="x.h5", seconds=5.0))
        assert isinstance(error, CheckpointError)
        assert f"crashed reading it (signal {int(signal.SIGSEGV)})" in str(error)

    def test_errors_come_back_as_their_kind(self):
        def refuse() -> None:
            raise CheckpointError("x.h5: /weights/w: is a string", path="x.h5",
                                  dataset="/weights/w")

        error = within(10, lambda: run_isolated(refuse, path="x.h5", seconds=5.0))
        assert isinstance(error, CheckpointError)
        assert (str(error), error.dataset) == ("x.h5: /weights/w: is a string", "/weights/w")

        def missing() -> None:
            raise OSError("x.h5: not an HDF5 checkpoint file")

        error = within(10, lambda: run_isolated(missing, path="x.h5", seconds=5.0))
        assert type(error) is OSError and "not an HDF5" in str(error)

        def other() -> None:
            raise MemoryError("the library's own")

        error = within(10, lambda: run_isolated(other, path="x.h5", seconds=5.0))
        assert isinstance(error, CheckpointError)
        assert str(error) == "x.h5: cannot be read as a checkpoint (MemoryError: the library's own)"

    def test_a_value_comes_back_and_nothing_of_the_child_stays(self):
        assert run_isolated(lambda: {"ok": [1, 2]}, path="x.h5", seconds=5.0) == {"ok": [1, 2]}
        with pytest.raises(ChildProcessError):
            os.waitpid(-1, os.WNOHANG)  # no child left behind, not even a zombie

    def test_a_buffered_reader_here_reads_on_where_it_was(self, tmp_path):
        """The child reads the file through the same descriptor, and moves the offset it
        shares with this process; once it is done the offset is back, so a buffered reader
        here that holds the start of the file reads the rest from where it was (a resumed
        Keras run's .weights.h5 checkpoint was refused as "changed while it was read")."""
        data = os.urandom(300_000)
        (tmp_path / "f").write_bytes(data)
        with open(tmp_path / "f", "rb") as handle:
            assert handle.read(8) == data[:8]  # the buffer now holds the file's first 8 KiB

            def read_all() -> None:
                handle.seek(0)
                handle.read()

            run_isolated(read_all, path="f", seconds=5.0, descriptor=handle.fileno())
            handle.seek(0)  # inside the buffer: no lseek of its own
            assert handle.read() == data

    def test_nothing_in_the_child_is_isolated_again(self):
        inner = run_isolated(lambda: run_isolated(lambda: os.getpid(), path="x", seconds=5.0),
                             path="x", seconds=5.0)
        assert inner != os.getpid()  # the inner work ran in the (one) child


class TestACheckpointTheLibraryLoopsOn:
    def test_load_checkpoint_refuses_it_in_time(self, tmp_path):
        path = tmp_path / "ckpt.h5"
        if not looping_checkpoint(path):
            pytest.skip("this HDF5 lays the checkpoint out otherwise")
        error = within(30, lambda: load_checkpoint(path))
        assert isinstance(error, (CheckpointError, OSError)), error  # whatever HDF5 does
        assert str(path) in str(error)

    def test_a_backup_falls_back_to_its_other_file(self, tmp_path):
        from eventbus import Bus, NumpyModel, RunWarning, read_log
        from plugins import BackupAndRestore

        folder = tmp_path / "backup"

        def run(epochs: int, model: NumpyModel) -> Bus:
            bus = Bus([BackupAndRestore(folder)], model=model)
            bus.train_begin({"epochs": 5})
            for epoch in range(bus.initial_epoch, epochs):
                bus.epoch_begin(epoch)
                model.weights["w"][:] = epoch  # the weights each epoch ends with
                bus.epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
            return bus

        run(3, NumpyModel({"w": np.zeros(2)})).close()  # no train_end: the run goes on later
        latest = folder / "latest.weights.h5"
        assert latest.exists() and (folder / "previous.weights.h5").exists()
        if not looping_checkpoint(latest):
            pytest.skip("this HDF5 lays the checkpoint out otherwise")
        model = NumpyModel({"w": np.zeros(2)})
        with pytest.warns(RunWarning, match=r"cannot read .*latest\.weights\.h5: reading it did "
                                            r"not finish within 1 s"):
            bus = within(60, lambda: Bus([BackupAndRestore(folder)], model=model))
        assert isinstance(bus, Bus), bus
        assert bus.initial_epoch == 2 and model.weights["w"].tolist() == [1.0, 1.0]
        warnings = [r.message for r in read_log(folder / "events.jsonl")
                    if r.kind == "warning"]
        assert any("latest.weights.h5" in w for w in warnings), warnings
        bus.close()


def test_a_file_this_process_wrote_and_nobody_changed_needs_no_child(tmp_path, monkeypatch):
    """The child costs a fork (tens of ms in a big process): a checkpoint this process wrote,
    its size, mtime and ctime as written, is parsed directly; any change since (a write, its
    times set back: both move the ctime) sends it through the child again."""
    import sinks.hdf5

    children: list[str] = []
    real = sinks.hdf5.run_isolated

    def counted(work: Any, *, path: str, seconds: float, descriptor: int | None = None) -> Any:
        children.append(path)
        return real(work, path=path, seconds=seconds, descriptor=descriptor)

    monkeypatch.setattr(sinks.hdf5, "run_isolated", counted)
    path = tmp_path / "ckpt.h5"
    write_checkpoint(path, {"w": np.arange(3.0)}, metadata={"epoch": 0})
    assert load_checkpoint(path).weights["w"].tolist() == [0.0, 1.0, 2.0]
    assert children == []
    stat = path.stat()
    time.sleep(0.01)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same times, set again
    assert load_checkpoint(path).weights["w"].tolist() == [0.0, 1.0, 2.0]
    assert children == [str(path)]
    copy = tmp_path / "copy.h5"
    copy.write_bytes(path.read_bytes())  # the same bytes, not written by write_checkpoint
    load_checkpoint(copy)
    assert children == [str(path), str(copy)]


class TestAFrameworksFileIsCheckedAsTheLoadersOwn:
    """A framework's checkpoint (a Keras ``.weights.h5``, a ``.keras`` zip) is read by the
    framework's loader, after ``_walk_isolated``: the walk applies the checks the project's own
    loader makes, so a 19 KB file cannot make Keras inflate a gigabyte, and it reaches into a
    ``.keras`` zip, where a file the library loops on used to hang the resume."""

    @staticmethod
    def framework_file(path: Path, *, bomb: bool, userblock: int = 0) -> Path:
        """Weights laid out as Keras lays them; with ``bomb``, the kernel a single chunk of
        deflate(deflate(64 MiB of zeros)) that declares 16 bytes; ``userblock``: bytes before
        HDF5's superblock."""
        import zlib

        import h5py

        with h5py.File(path, "w", userblock_size=userblock or None) as file:
            group = file.create_group("layers/dense/vars")
            group.create_dataset("1", data=np.zeros(2, dtype="float32"))
            if not bomb:
                group.create_dataset("0", data=np.ones((2, 2), dtype="float32"))
                return path
            stream = zlib.compress(zlib.compress(bytes(64 << 20), 9), 9)
            plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            plist.set_chunk((2, 2))
            for _ in range(2):
                plist.set_filter(h5py.h5z.FILTER_DEFLATE, h5py.h5z.FLAG_OPTIONAL, (9,))
            dataset = h5py.h5d.create(group.id, b"0", h5py.h5t.IEEE_F32LE,
                                      h5py.h5s.create_simple((2, 2)), plist)
            dataset.write_direct_chunk((0, 0), stream, 0)
        return path

    @staticmethod
    def zipped(path: Path, inner: Path) -> Path:
        import zipfile

        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("config.json", "{}")
            archive.writestr("model.weights.h5", inner.read_bytes())
        return path

    @staticmethod
    def walk(path: Path) -> Any:
        from sinks.hdf5 import _walk_isolated

        with open(path, "rb") as handle:
            return within(30, lambda: _walk_isolated(handle, str(path)))

    def test_a_genuine_file_and_its_zip_pass(self, tmp_path):
        genuine = self.framework_file(tmp_path / "ck.weights.h5", bomb=False)
        assert self.walk(genuine) is None
        assert self.walk(self.zipped(tmp_path / "ck.keras", genuine)) is None

    def test_a_double_deflate_chunk_is_refused_in_the_file_and_in_a_zip(self, tmp_path):
        bomb = self.framework_file(tmp_path / "ck.weights.h5", bomb=True)
        error = self.walk(bomb)
        assert isinstance(error, CheckpointError), error
        assert "/layers/dense/vars/0" in str(error) and "filters" in str(error)
        error = self.walk(self.zipped(tmp_path / "ck.keras", bomb))
        assert isinstance(error, CheckpointError), error
        assert "model.weights.h5/layers/dense/vars/0" in str(error)

    @pytest.mark.parametrize("moved", ["a user block", "a byte before the zip"])
    def test_a_file_whose_data_is_not_at_its_first_byte_is_walked_too(self, tmp_path, moved):
        """HDF5 finds its superblock at 512, 1024, ... after a user block, and zipfile an
        archive with bytes before it: the walk chose what to check by the first 8 bytes, and
        such a file passed unchecked to the loader, a bomb or external storage with it."""
        if moved == "a user block":
            path = self.framework_file(tmp_path / "ck.weights.h5", bomb=True, userblock=512)
            assert not path.read_bytes().startswith(b"\x89HDF")
        else:
            bomb = self.framework_file(tmp_path / "ck.weights.h5", bomb=True)
            path = tmp_path / "moved.keras"
            path.write_bytes(b"#" + self.zipped(tmp_path / "ck.keras", bomb).read_bytes())
        error = self.walk(path)
        assert isinstance(error, CheckpointError), error
        assert "filters" in str(error)

    def test_a_zip_member_larger_than_a_checkpoint_of_the_model_is_not_unzipped(self,
                                                                                tmp_path):
        """A .keras of half a megabyte whose weights entry inflates to 512 MiB (within deflate's
        ratio) cost a gigabyte-sized child, then seconds of Keras's own inflating: a member
        larger than what a checkpoint of the model can hold is refused unread."""
        from sinks.hdf5 import _walk_isolated

        genuine = self.framework_file(tmp_path / "ck.weights.h5", bomb=False)
        archive = self.zipped(tmp_path / "ck.keras", genuine)
        size = genuine.stat().st_size
        with open(archive, "rb") as handle:
            assert within(30, lambda: _walk_isolated(handle, str(archive), most=size)) is None
            error = within(30, lambda: _walk_isolated(handle, str(archive), most=size - 1))
        assert isinstance(error, CheckpointError), error
        assert "model.weights.h5" in str(error) and "unzipped" in str(error)

    def test_a_zipped_file_the_library_loops_on_is_refused_in_time(self, tmp_path):
        inner = tmp_path / "inner.h5"
        if not looping_checkpoint(inner):
            pytest.skip("this HDF5 lays the checkpoint out otherwise")
        error = self.walk(self.zipped(tmp_path / "ck.keras", inner))
        assert isinstance(error, CheckpointError), error
        assert "did not finish within 1 s" in str(error)


def test_a_hole_that_claims_a_terabyte_does_not_lengthen_the_deadline(tmp_path, monkeypatch):
    """The parse's deadline grows with the file (a second per 50 MB): drawn from the size it
    claims, a sparse hole of a terabyte in a backup folder others can write held a resume
    about six hours on a file the library loops on. It is drawn from the bytes stored."""
    import sinks.hdf5

    path = tmp_path / "latest.weights.h5"
    write_checkpoint(path, {"w": np.zeros(2)})
    os.truncate(path, path.stat().st_size + (1 << 40))
    if path.stat().st_blocks * 512 >= 1 << 40:
        pytest.skip("this filesystem stores holes")
    deadlines = []
    real = sinks.hdf5.run_isolated

    def timed(work, **kwargs):
        deadlines.append(kwargs["seconds"])
        return real(work, **kwargs)

    monkeypatch.setattr(sinks.hdf5, "run_isolated", timed)
    load_checkpoint(path)
    assert deadlines and max(deadlines) < sinks.isolated.BASE_SECONDS + 1
