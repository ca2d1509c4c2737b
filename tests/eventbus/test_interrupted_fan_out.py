"""Ctrl-C while the bus hands a record to its sinks: some have it and some not.

The log must not vouch for the rest: it is left as a kill at that moment leaves it (at its last
flush), so a resume makes the cut record again. Before, the log held a save the checkpoint
writer never finished, and the best checkpoint was lost for good; or an epoch CSVLogger never
wrote, and its row was never written.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

import sinks.hdf5
from eventbus import Bus, NumpyModel, RunWarning, read_log
from plugins import CSVLogger, ModelCheckpoint
from sinks.hdf5 import load_checkpoint

VAL = [0.9, 0.5, 0.1, 0.3, 0.4, 0.6]


def train(bus: Bus, model: NumpyModel) -> None:
    bus.train_begin({"epochs": len(VAL)})
    for epoch in range(bus.initial_epoch, len(VAL)):
        bus.epoch_begin(epoch)
        model.weights["w"][:] = epoch  # the weights of epoch e are all e
        bus.epoch_end(epoch, {"loss": VAL[epoch], "val_loss": VAL[epoch]})
    bus.train_end()


@pytest.mark.parametrize("where", ["checkpoint save", "CSV row"])
def test_a_record_cut_on_its_way_to_the_sinks_is_made_again_on_resume(tmp_path, monkeypatch,
                                                                      where):
    log, best, table = tmp_path / "events.jsonl", tmp_path / "best.h5", tmp_path / "h.csv"
    model = NumpyModel({"w": np.zeros(3)}, learning_rate=0.1)
    interrupt = [True]
    if where == "checkpoint save":
        real = sinks.hdf5._Save.__call__

        def cut(self):  # Ctrl-C while epoch 2's best checkpoint is written
            if interrupt[0] and self.metadata.get("epoch") == 2:
                raise KeyboardInterrupt
            return real(self)

        monkeypatch.setattr(sinks.hdf5._Save, "__call__", cut)
    else:
        real = CSVLogger.write

        def cut(self, record):  # Ctrl-C as epoch 2's end reaches CSVLogger
            if interrupt[0] and record["kind"] == "epoch_end" and record["epoch"] == 2:
                raise KeyboardInterrupt
            return real(self, record)

        monkeypatch.setattr(CSVLogger, "write", cut)

    def plugins() -> list:
        return [ModelCheckpoint(str(best), monitor="val_loss", save_best_only=True),
                CSVLogger(str(table))]

    with pytest.raises(KeyboardInterrupt), \
            Bus(plugins(), log=log, model=model, resume=True) as bus:
        train(bus, model)
    # The log is as a kill would leave it: at the flush after epoch 1.
    assert [r.epoch for r in read_log(log) if r.kind == "epoch_end"] == [0, 1]
    interrupt[0] = False
    with Bus(plugins(), log=log, model=model, resume=True) as bus:
        assert bus.initial_epoch == 2  # epoch 2 is done again
        train(bus, model)
    assert load_checkpoint(best).weights["w"][0] == 2  # the best epoch's weights
    with open(table, newline="") as file:
        assert [row["epoch"] for row in csv.DictReader(file)] == ["0", "1", "2", "3", "4", "5"]
    saves = [(r.kind, r.epoch) for r in read_log(log)
             if r.kind in ("save_checkpoint", "checkpoint_saved")]
    assert saves == [(kind, epoch) for epoch in (0, 1, 2)
                     for kind in ("save_checkpoint", "checkpoint_saved")]


def test_ctrl_c_while_a_sink_closes_still_closes_the_others_and_the_logs(tmp_path,
                                                                        monkeypatch):
    """A second Ctrl-C during close(), as CSVLogger closes: the sinks after it, the logs
    last, still close, so every record reaches both logs and their locks are let go."""
    model = NumpyModel({"w": np.zeros(3)}, learning_rate=0.1)
    log, table = tmp_path / "events.jsonl", tmp_path / "events.parquet"

    def cut(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(CSVLogger, "close", cut)
    bus = Bus([CSVLogger(str(tmp_path / "h.csv"))], log=[log, table], model=model)
    train(bus, model)
    with pytest.raises(KeyboardInterrupt):
        bus.close()
    jsonl, parquet = list(read_log(log)), list(read_log(table))
    assert len(jsonl) == len(parquet) and jsonl[-1].kind == parquet[-1].kind == "train_end"
    monkeypatch.undo()
    with pytest.warns(RunWarning, match="had finished"), \
            Bus([], log=[log, table], resume=True):  # the locks were let go
        pass
