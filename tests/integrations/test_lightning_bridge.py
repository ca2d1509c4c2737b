"""eventbus.integrations.lightning: a tiny LightningModule trained on CPU through the bus."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from lightning.fabric.utilities.warnings import PossibleUserWarning  # noqa: E402

from eventbus import Bus, read_log, replay  # noqa: E402
from eventbus.integrations.lightning import LightningBridge  # noqa: E402
from eventbus.integrations.torch import TorchModel  # noqa: E402
from eventbus.records import SetLearningRate, StopTraining  # noqa: E402
from plugins import EarlyStopping, ReduceLROnPlateau  # noqa: E402


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.2)


def loader(n: int, seed: int) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(seed)
    data = torch.utils.data.TensorDataset(torch.randn(n, 4, generator=g),
                                          torch.randn(n, 1, generator=g))
    return torch.utils.data.DataLoader(data, batch_size=16)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    log = tmp_path_factory.mktemp("lightning") / "events.jsonl"
    torch.manual_seed(0)
    module = Tiny()
    bus = Bus([ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_delta=1e-3),
               EarlyStopping(monitor="val_loss", patience=3, min_delta=1e-3)], log=log)
    trainer = pl.Trainer(max_epochs=40, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[LightningBridge(bus)])
    with bus, warnings.catch_warnings():
        # Lightning's advice on workers and small datasets; the bus's own warnings still show.
        warnings.simplefilter("ignore", PossibleUserWarning)
        trainer.fit(module, loader(64, 0), loader(32, 1))
    return trainer, bus, list(read_log(log)), log


def test_stop_reaches_the_trainer(fitted):
    """EarlyStopping's decision sets trainer.should_stop; training ends at that epoch."""
    trainer, _, records, _ = fitted
    stops = [r for r in records if isinstance(r, StopTraining)]
    assert stops and trainer.should_stop
    assert trainer.current_epoch == stops[0].epoch + 1 < 40


def test_learning_rate_reaches_the_optimizer(fitted):
    """ReduceLROnPlateau's decisions change the trainer's optimizer."""
    trainer, bus, records, _ = fitted
    cuts = [r for r in records if isinstance(r, SetLearningRate)]
    assert cuts and cuts[0].previous == pytest.approx(0.2)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(cuts[-1].value)
    assert isinstance(bus.model, TorchModel)


def test_events_come_from_callback_metrics(fitted):
    """Epoch ends carry train and validation metrics; validation is test_* events."""
    _, _, records, _ = fitted
    ends = [r for r in records if r.kind == "epoch_end"]
    assert {"train_loss", "val_loss", "learning_rate"} <= set(ends[0].logs)
    kinds = [r.kind for r in records]
    assert kinds.count("batch_end") == 4 * len(ends)
    assert kinds.count("test_end") == len(ends)  # the sanity check is not published
    assert kinds.index("test_end") < kinds.index("epoch_end")


def test_log_replays_with_verify(fitted):
    """The log alone rebuilds the plugins and gives back the same decisions."""
    *_, log = fitted
    result = replay(log, verify=True)
    assert result.ok and result.stopped_at is not None


def trainer(bus, **options):
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[LightningBridge(bus)], **options)


def quiet_fit(trainer_, module, val=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PossibleUserWarning)  # as in fitted()
        trainer_.fit(module, loader(64, 0), loader(32, 1) if val else None)


def test_an_epoch_without_validation_reports_no_validation_metrics(tmp_path):
    """callback_metrics keeps the last validation's values; an epoch that ran none must not
    show them (a plateau plugin would count a stale value as a new, non-improving one)."""
    log = tmp_path / "events.jsonl"
    with Bus([], log=log) as bus:
        quiet_fit(trainer(bus, max_epochs=4, check_val_every_n_epoch=2), Tiny())
    ends = [r for r in read_log(log) if r.kind == "epoch_end"]
    assert [("val_loss" in r.logs) for r in ends] == [False, True, False, True]


def test_a_second_trainer_on_one_bus_trains_and_gets_the_decisions(tmp_path):
    """A second fit starts unstopped (as Keras's does), and the learning-rate decisions reach
    the optimizer of the trainer that trains now, not the first one's."""
    torch.manual_seed(0)
    with Bus([ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, mode="max"),
              EarlyStopping(monitor="val_loss", patience=1, mode="max")],
             log=tmp_path / "events.jsonl") as bus:
        first = trainer(bus, max_epochs=6)
        quiet_fit(first, Tiny())
        assert bus.stop_training and first.current_epoch < 6
        second = trainer(bus, max_epochs=3)
        module = Tiny()
        quiet_fit(second, module)
        assert second.current_epoch >= 2  # not stopped at once by the first fit's stop
        assert second.optimizers[0].param_groups[0]["lr"] == pytest.approx(bus.learning_rate)
        assert bus.model.module is module
