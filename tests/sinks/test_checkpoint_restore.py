"""Which checkpoint a resumed run gets back: the newest the log records whose file is intact."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, NumpyModel, Plugin, RunWarning, hookimpl, read_log
from eventbus.jsonl import JsonlWriter
from eventbus.records import SaveCheckpoint
from sinks.hdf5 import HDF5CheckpointWriter

from hypothesis_profiles import FILES, examples


class SaveTo(Plugin):
    """Saves epoch ``e`` to ``paths[e]`` (None: no save that epoch)."""

    def __init__(self, directory: str, paths: list[int | None]):
        self.directory = directory
        self.paths = paths

    @hookimpl
    def on_epoch_end(self, event):
        target = self.paths[event.epoch]
        if target is None:
            return None
        return SaveCheckpoint(reason="save", path=f"{self.directory}/c{target}.h5")


def weights_at(epoch: int) -> float:
    return float(epoch + 1)  # the loop sets w to this during epoch ``epoch``


@examples(FILES)
@given(st.lists(st.one_of(st.none(), st.integers(0, 2)), min_size=1, max_size=6),
       st.sets(st.integers(0, 2)), st.sets(st.integers(0, 2)))
def test_the_newest_intact_checkpoint_comes_back(paths, changed, removed):
    """Saves to three files over a run, the process dies, some files are changed or removed:
    the resumed model holds the weights of the newest save whose file is still the one the log
    recorded (its sha256); with none, it keeps its weights and a warning says they were not
    restored."""
    with tempfile.TemporaryDirectory() as directory:
        log = Path(directory) / "events.jsonl"
        model = NumpyModel({"w": np.zeros(2)})
        writer = JsonlWriter(log)
        bus = Bus([SaveTo(directory, paths), HDF5CheckpointWriter()], model=model, log=writer)
        bus.train_begin({"epochs": len(paths) + 1})
        last_save: dict[int, int] = {}  # file -> the epoch of its newest save
        for epoch, target in enumerate(paths):
            bus.epoch_begin(epoch)
            model.weights["w"][:] = weights_at(epoch)
            bus.epoch_end(epoch, {"loss": 1.0})
            if target is not None:
                last_save[target] = epoch
        bus.flush()
        writer.close()  # the crash: no train_end
        for target in changed & set(last_save):
            (Path(directory) / f"c{target}.h5").write_bytes(b"not the file the log recorded")
        for target in removed & set(last_save):
            (Path(directory) / f"c{target}.h5").unlink(missing_ok=True)

        intact = [(epoch, target) for target, epoch in last_save.items()
                  if target not in changed and target not in removed]
        fresh = NumpyModel({"w": np.zeros(2)})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RunWarning)
            Bus([SaveTo(directory, paths), HDF5CheckpointWriter()], model=fresh, log=log,
                resume=True).close()
        messages = [str(w.message) for w in caught if w.category is RunWarning]
        restored = [r for r in read_log(log) if r.kind == "weights_restored"]
        if intact:
            epoch, target = max(intact)
            assert fresh.weights["w"].tolist() == [weights_at(epoch)] * 2
            assert [r.tag for r in restored] == [f"checkpoint:{directory}/c{target}.h5"]
            # A newer file that is not intact is named, and passed over.
            newer = [t for t, e in last_save.items() if e > epoch]
            assert sum("an older one is tried" in m for m in messages) == len(newer)
            assert not any("were not restored" in m for m in messages)
        else:
            assert fresh.weights["w"].tolist() == [0.0, 0.0]
            assert restored == []
            assert sum("the weights were not restored" in m for m in messages) == 1


def test_a_checkpoint_that_does_not_fit_the_model_gives_way_to_an_older_one(tmp_path):
    """The newest checkpoint the log records holds a weight of another shape than the model
    given to the resume (here the model grew at epoch 2): it is passed over, with a warning
    naming the file and the weight, and the one saved before it is restored. Before, it was
    taken: the model refused it only once restored (a sink_failed at close), no older
    checkpoint was tried, and the run went on with the model's initial weights."""
    directory = str(tmp_path)
    log = tmp_path / "events.jsonl"
    model = NumpyModel({"w": np.zeros(2)})
    writer = JsonlWriter(log)
    bus = Bus([SaveTo(directory, [0, 1, 2]), HDF5CheckpointWriter()], model=model, log=writer)
    bus.train_begin({"epochs": 4})
    for epoch in range(3):
        bus.epoch_begin(epoch)
        if epoch == 2:
            model.weights["w"] = np.zeros(3)
        model.weights["w"][:] = weights_at(epoch)
        bus.epoch_end(epoch, {"loss": 1.0})
    bus.flush()
    writer.close()  # the crash: no train_end
    fresh = NumpyModel({"w": np.zeros(2)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Bus([SaveTo(directory, [0, 1, 2]), HDF5CheckpointWriter()], model=fresh, log=log,
            resume=True).close()
    assert fresh.weights["w"].tolist() == [weights_at(1)] * 2
    restored = [r for r in read_log(log) if r.kind == "weights_restored"]
    assert [r.tag for r in restored] == [f"checkpoint:{directory}/c1.h5"]
    assert not [r for r in read_log(log) if r.kind == "sink_failed"]
    messages = [str(w.message) for w in caught]
    assert any("c2.h5" in m and "/weights/w: does not fit the model: has shape (3,), the "
               "model's is (2,)" in m and "an older one is tried" in m for m in messages), \
        messages
