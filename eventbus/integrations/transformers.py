"""Hugging Face: ``Trainer(callbacks=[TrainerBridge(bus)])`` records and decides through the bus.

:class:`TrainerBridge` is a ``transformers.TrainerCallback``. It publishes, from the Trainer's
hooks:

- ``train_begin`` / ``train_end`` (params: ``epochs`` = ``num_train_epochs``, ``steps`` =
  optimizer steps per epoch, ``max_steps``, ``gradient_accumulation_steps``; ``train_end``
  gets the Trainer's closing numbers, ``train_loss``, ``train_runtime``, ...);
- ``epoch_begin`` / ``epoch_end``; ``epoch_end`` waits for the log and the evaluation the
  Trainer runs right after its own epoch end, so it carries the epoch's training log (``loss``,
  ``grad_norm``, ``learning_rate`` as the Trainer last logged them) and its evaluation, as in
  Keras;
- ``batch_begin`` / ``batch_end`` per **optimizer step**: with gradient accumulation, the
  micro-batches of one step are one batch (``on_substep_end`` is not published), so ``step``
  counts what ``state.global_step`` counts. A step's ``batch_end`` carries the Trainer's log of
  that step when it logs one (``logging_steps``), else no metrics;
- each evaluation as ``test_begin`` / ``test_end``, its ``eval_<name>`` metrics named
  ``val_<name>`` (Keras's names, which the plugins monitor: ``EarlyStopping()`` watches
  ``val_loss``); an evaluation at an epoch's end is in that ``epoch_end`` too;
- each checkpoint the Trainer saves as a ``checkpoint_saved`` outcome (its directory, total
  size and a SHA-256 over its files).

Decisions are applied to the Trainer through its ``TrainerControl``: a stop sets
``control.should_training_stop`` (the Trainer ends after the step or epoch), a
``save_checkpoint`` sets ``control.should_save`` (the Trainer saves its own checkpoint at that
step). Learning-rate changes go to every group of the Trainer's optimizer through
:class:`~eventbus.integrations.torch.TorchModel`, which the bridge attaches to the bus at
``on_train_begin`` when the bus has no model; the Trainer's learning-rate scheduler is then
rescaled (its ``base_lrs``) so that its next step goes on from the new rate with the schedule's
shape, instead of overwriting the change.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..records import CheckpointSaved
from .torch import TorchModel

__all__ = ["TrainerBridge"]

#: Marks a TorchModel a bridge attached to the bus for its trainer.
_ATTACHED = "_attached_by_trainer_bridge"
#: What the Trainer logs that describes the log rather than the model.
_NOT_METRICS = frozenset({"epoch", "step", "total_flos"})


def _numbers(logs: Mapping[str, Any] | None) -> dict[str, float]:
    return {k: float(v) for k, v in (logs or {}).items()
            if k not in _NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _is_evaluation(logs: Mapping[str, Any]) -> bool:
    return any(k.startswith("eval_") for k in logs)


def _validation(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """An evaluation's metrics under Keras's names: ``eval_loss`` is ``val_loss``."""
    return {("val_" + k[5:] if k.startswith("eval_") else k): v
            for k, v in _numbers(metrics).items()}


def _digest(path: Path) -> tuple[int, str]:
    """Total size and SHA-256 of a checkpoint (a file, or a directory's files by name)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest, size = hashlib.sha256(), 0
    for file in files:
        if file != path:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
    return size, digest.hexdigest()


class TrainerBridge(TrainerCallback):
    """Publish a Hugging Face ``Trainer``'s events to ``bus`` and apply its decisions.

    ``attach_model``: give the bus a :class:`TorchModel` of the Trainer's model and optimizer
    when it has no model (learning-rate and weight decisions need one). The caller owns and
    closes the bus.
    """

    def __init__(self, bus: Any, *, attach_model: bool = True):
        self.bus = bus
        self.attach_model = attach_model
        self._optimizer: Any = None
        self._scheduler: Any = None
        self._epoch = 0
        self._batch = 0
        self._batch_open = False  # a batch_end waiting for its step's log
        # An epoch_end waiting for what the Trainer runs after its own: {"log", "evaluate"}.
        self._epoch_waits: set[str] | None = None
        self._epoch_logs: dict[str, float] = {}
        self._final_logs: dict[str, float] = {}

    # --- decisions -----------------------------------------------------------------------------

    def _rates(self) -> list[float]:
        groups = getattr(self._optimizer, "param_groups", None) or []
        return [group["lr"] for group in groups]

    def _publish(self, control: Any, call: Any, *args: Any) -> None:
        """Make one bus call and apply what was decided to the Trainer."""
        before = self._rates()
        decisions: Sequence[Any] = call(*args) or ()
        if self.bus.stop_training:
            control.should_training_stop = True
        if any(d.kind == "save_checkpoint" for d in decisions):
            control.should_save = True
        after = self._rates()
        if after != before:
            self._rescale_schedule(before, after)

    def _rescale_schedule(self, before: list[float], after: list[float]) -> None:
        """The scheduler sets each group's rate to ``base_lr * factor(step)`` at every step;
        scaling ``base_lrs`` by the change makes it go on from the new rate."""
        scheduler = getattr(self._scheduler, "scheduler", self._scheduler)  # accelerate wraps it
        bases = getattr(scheduler, "base_lrs", None)
        if not isinstance(bases, list) or len(bases) != len(after):
            return
        for i, (old, new) in enumerate(zip(before, after)):
            if old != new:
                bases[i] = bases[i] * new / old if old > 0 else new
        if isinstance(getattr(scheduler, "_last_lr", None), list):
            # What get_last_lr() answers, and the Trainer logs, until the scheduler's next step.
            scheduler._last_lr = list(after)

    # --- what is waiting -----------------------------------------------------------------------

    def _end_batch(self, control: Any, logs: Mapping[str, float] | None = None) -> None:
        if self._batch_open:
            self._batch_open = False
            self._publish(control, self.bus.batch_end, self._batch - 1, dict(logs or {}))

    def _end_epoch(self, control: Any) -> None:
        if self._epoch_waits is not None:
            self._epoch_waits = None
            self._publish(control, self.bus.epoch_end, self._epoch, self._epoch_logs)

    def _settle(self, control: Any) -> None:
        """Publish what still waits for a log or an evaluation that did not come."""
        self._end_batch(control)
        self._end_epoch(control)

    # --- the Trainer's hooks -------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       optimizer: Any = None, lr_scheduler: Any = None, **kwargs: Any) -> None:
        self._optimizer, self._scheduler = optimizer, lr_scheduler
        current = self.bus.model
        if self.attach_model and model is not None and \
                (current is None or getattr(current, _ATTACHED, False)):
            # A model a bridge attached belongs to its trainer: a later Trainer on the same bus
            # gets its own, so decisions reach the optimizer that trains now.
            current = self.bus.model = TorchModel(model, optimizer)
            setattr(current, _ATTACHED, True)
        epochs = math.ceil(state.num_train_epochs) if state.num_train_epochs else None
        per_epoch = state.max_steps // epochs if epochs and state.max_steps % epochs == 0 else None
        self._publish(control, self.bus.train_begin, {
            "epochs": epochs, "steps": per_epoch, "max_steps": state.max_steps,
            "gradient_accumulation_steps": args.gradient_accumulation_steps})

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._settle(control)
        self._publish(control, self.bus.train_end, self._final_logs)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._settle(control)
        # state.epoch is the epochs done, as a float: a whole number between epochs.
        self._epoch = round(state.epoch or 0)
        self._batch = 0
        self._epoch_logs = {}
        self._publish(control, self.bus.epoch_begin, self._epoch)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._end_batch(control)
        # The Trainer's DefaultFlowCallback, before this one, has said what runs next.
        self._epoch_waits = {name for name, flag in (("log", control.should_log),
                                                     ("evaluate", control.should_evaluate))
                             if flag}
        if not self._epoch_waits:
            self._end_epoch(control)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._settle(control)
        self._publish(control, self.bus.batch_begin, self._batch)
        self._batch += 1

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._batch_open = True
        if not control.should_log:  # else the step's log comes next (on_log)
            self._end_batch(control)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
               **kwargs: Any) -> None:
        logs = logs or {}
        if _is_evaluation(logs):  # an evaluation's log; on_evaluate publishes it
            return
        numbers = _numbers(logs)
        if self._batch_open:
            self._epoch_logs.update(numbers)
            self._end_batch(control, numbers)
        elif self._epoch_waits is not None:
            self._epoch_logs.update(numbers)
            self._epoch_waits.discard("log")
            if not self._epoch_waits:
                self._end_epoch(control)
        else:  # the Trainer's closing numbers (train_loss, train_runtime, ...)
            self._final_logs.update(numbers)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None,
                    **kwargs: Any) -> None:
        self._end_batch(control)
        validation = _validation(metrics)
        self._publish(control, self.bus.test_begin)
        self._publish(control, self.bus.test_end, validation)
        if self._epoch_waits is not None:
            self._epoch_logs.update(validation)
            self._epoch_waits = set()
            self._end_epoch(control)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._settle(control)
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not path.exists():  # a save elsewhere (save_strategy "best" keeps its own names)
            return
        size, sha256 = _digest(path)
        self.bus.record(CheckpointSaved(source="TrainerBridge", path=os.fspath(path),
                                        size=size, sha256=sha256, epoch=self._epoch))
