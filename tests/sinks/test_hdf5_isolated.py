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
