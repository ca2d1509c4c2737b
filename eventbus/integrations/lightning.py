"""Lightning: ``Trainer(callbacks=[LightningBridge(bus)])`` records and decides through the bus.

:class:`LightningBridge` is a ``lightning.pytorch.Callback``. It publishes, from Lightning's
hooks:

- ``train_begin`` / ``train_end`` (params: ``epochs`` = ``max_epochs``, ``steps`` = training
  batches per epoch);
- ``epoch_begin``, and ``epoch_end`` with ``trainer.callback_metrics`` at
  ``on_train_epoch_end`` (so the epoch's validation metrics, which Lightning computes before
  that hook, are in the same event, as in Keras);
- ``batch_begin`` / ``batch_end`` for training batches, with the step's ``loss`` when the
  training step returns one;
- the validation loop as ``test_begin`` / ``test_batch_end`` / ``test_end``, as Keras reports
  fit's validation. Lightning's sanity-check validation is not published.

Decisions are applied to the trainer: a stop sets ``trainer.should_stop`` (Lightning ends the
run after the epoch, honouring ``min_epochs``); learning-rate changes go to every group of
every optimizer in ``trainer.optimizers`` through :class:`~eventbus.integrations.torch.
TorchModel`, which the bridge attaches to the bus at ``on_train_start`` when the bus has no
model. A learning-rate scheduler configured in the LightningModule also writes the rate: the
last writer wins, so use one or the other.

Metric tensors are converted together, one device sync per event
(:func:`~eventbus.integrations.torch.scalars`); batch events cost no sync when nothing records
or handles them.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from .torch import TorchModel, scalars

__all__ = ["LightningBridge"]


#: Marks a TorchModel a bridge attached to the bus for its trainer.
_ATTACHED = "_attached_by_lightning_bridge"


def _metrics(metrics: Any) -> dict[str, Any]:
    return scalars({k: v for k, v in dict(metrics).items()
                    if not isinstance(v, torch.Tensor) or v.ndim == 0})


class LightningBridge(pl.Callback):
    """Publish a Lightning run's events to ``bus`` and apply its decisions to the trainer.

    ``attach_model``: give the bus a :class:`TorchModel` of the LightningModule and the
    trainer's optimizers when it has no model (learning-rate and weight decisions and
    checkpoints need one). The caller owns and closes the bus.
    """

    def __init__(self, bus: Any, *, attach_model: bool = True):
        super().__init__()
        self.bus = bus
        self.attach_model = attach_model
        self._validated = False  # whether this epoch's validation ran (not the sanity check)

    def _apply(self, trainer: pl.Trainer) -> None:
        if self.bus.stop_training:
            trainer.should_stop = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = self.bus.model
        if self.attach_model and (model is None or getattr(model, _ATTACHED, False)):
            # A model a bridge attached belongs to its trainer: a later trainer on the same
            # bus gets its own, so decisions reach the optimizers that train now.
            model = self.bus.model = TorchModel(pl_module, list(trainer.optimizers))
            setattr(model, _ATTACHED, True)
        steps = trainer.num_training_batches
        self.bus.train_begin({"epochs": trainer.max_epochs,
                              "steps": steps if isinstance(steps, int) else None})
        self._apply(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.bus.train_end(_metrics(trainer.callback_metrics))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validated = False
        self.bus.epoch_begin(trainer.current_epoch)
        self._apply(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = _metrics(trainer.callback_metrics)
        if not self._validated:
            # callback_metrics keeps the last validation's values: an epoch that ran none
            # (check_val_every_n_epoch, max_steps) must not report them as its own.
            metrics = {k: v for k, v in metrics.items() if not k.startswith("val")}
        self.bus.epoch_end(trainer.current_epoch, metrics)
        self._apply(trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self.bus.batch_begin(batch_idx)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if type(outputs) is dict else outputs
        # The bus reads (and syncs) the tensor only if it records or someone listens.
        self.bus.batch_end(batch_idx, None if loss is None else {"loss": loss})
        if self.bus.stop_training:
            trainer.should_stop = True

    def on_validation_epoch_start(self, trainer: pl.Trainer,
                                  pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.bus.test_begin()

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self.bus.test_batch_end(batch_idx)

    def on_validation_epoch_end(self, trainer: pl.Trainer,
                                pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True
            self.bus.test_end({k: v for k, v in _metrics(trainer.callback_metrics).items()
                               if k.startswith("val")})
