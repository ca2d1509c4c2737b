"""The Hugging Face Trainer bridge on a tiny BERT built from a config (nothing downloaded), CPU.

The Trainer itself needs ``accelerate``; where it is installed, ``TestTrainer`` runs the real
``Trainer``. Every other test drives the bridge through transformers' own callback machinery
(``CallbackHandler`` with the ``DefaultFlowCallback``, ``TrainerState``, ``TrainerControl``,
``TrainingArguments``) with :func:`trainer_loop`: the Trainer's inner loop as transformers 5
runs it (the order of the hooks, gradient accumulation, log / evaluate / save after each
optimizer step and epoch), a real optimizer and a real scheduler, so the order and the
counting are the Trainer's.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers import BertConfig, BertForSequenceClassification, TrainingArguments  # noqa: E402
from transformers.optimization import get_scheduler  # noqa: E402
from transformers.trainer_callback import (  # noqa: E402
    CallbackHandler,
    DefaultFlowCallback,
    TrainerControl,
    TrainerState,
)

from eventbus import Bus, Plugin, hookimpl  # noqa: E402
from eventbus import records as r  # noqa: E402
from eventbus.integrations.transformers import TrainerBridge  # noqa: E402
from eventbus.log import read_log  # noqa: E402

MICRO_BATCHES, BATCH = 6, 4


@pytest.fixture(autouse=True)
def one_thread():
    """A model this small trains fastest on one thread (ten times faster on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=16, num_labels=2)
    return BertForSequenceClassification(config)


def batches(n: int = MICRO_BATCHES, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, 32, (BATCH, 8), generator=generator),
             "labels": torch.randint(0, 2, (BATCH,), generator=generator)} for _ in range(n)]


@dataclass
class CpuArguments(TrainingArguments):
    """TrainingArguments without the device set-up, which alone needs accelerate: the CPU."""

    @cached_property
    def _setup_devices(self) -> torch.device:
        return torch.device("cpu")


def arguments(tmp_path: Path, **overrides) -> CpuArguments:
    options = {"output_dir": str(tmp_path / "out"), "num_train_epochs": 2,
               "gradient_accumulation_steps": 2, "learning_rate": 1e-3, "logging_steps": 1,
               "eval_strategy": "epoch", "save_strategy": "no", "report_to": [],
               "lr_scheduler_type": "constant"}
    return CpuArguments(**{**options, **overrides})


def trainer_loop(args: TrainingArguments, model, callbacks, *, train=None, evaluate=None):
    """The Trainer's ``_inner_training_loop`` / ``_run_epoch`` / ``_maybe_log_save_evaluate``
    in transformers 5, without accelerate: returns the TrainerState."""
    train = train or batches()
    evaluate = evaluate or batches(2, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    ga = args.gradient_accumulation_steps
    per_epoch = math.ceil(len(train) / ga)
    epochs = math.ceil(args.num_train_epochs)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=0,
                              num_training_steps=per_epoch * epochs)
    handler = CallbackHandler([DefaultFlowCallback, *callbacks], model, None, optimizer,
                              scheduler)
    state, control = TrainerState(), TrainerControl()
    state.max_steps, state.num_train_epochs = per_epoch * epochs, epochs
    state.logging_steps, state.eval_steps, state.save_steps = \
        args.logging_steps, args.eval_steps or args.logging_steps, args.save_steps
    running, last_logged, total = 0.0, 0, 0.0

    def log(logs):
        state.log_history.append({**logs, "epoch": state.epoch, "step": state.global_step})
        return handler.on_log(args, state, control, {**logs, "epoch": state.epoch})

    def log_save_evaluate(learning_rate):
        nonlocal control, running, last_logged, total
        if control.should_log and state.global_step > last_logged:
            control = log({"loss": running / (state.global_step - last_logged),
                           "learning_rate": learning_rate})
            total += running
            running, last_logged = 0.0, state.global_step
        if control.should_evaluate:
            model.eval()
            with torch.no_grad():
                losses = [model(**b).loss.item() for b in evaluate]
            model.train()
            metrics = {"eval_loss": sum(losses) / len(losses), "epoch": state.epoch}
            control = log(metrics)
            control = handler.on_evaluate(args, state, control, metrics)
        if control.should_save:
            model.save_pretrained(Path(args.output_dir) / f"checkpoint-{state.global_step}")
            control = handler.on_save(args, state, control)

    model.train()
    control = handler.on_train_begin(args, state, control)
    learning_rate = args.learning_rate
    for epoch in range(epochs):
        control = handler.on_epoch_begin(args, state, control)
        for step, inputs in enumerate(train):
            if step % ga == 0:
                control = handler.on_step_begin(args, state, control)
            loss = model(**inputs).loss / ga
            loss.backward()
            running += loss.item()
            if (step + 1) % ga == 0 or step + 1 == len(train):
                optimizer.step()
                learning_rate = scheduler.get_last_lr()[0]
                scheduler.step()
                model.zero_grad()
                state.global_step += 1
                state.epoch = epoch + (step + 1) / len(train)
                control = handler.on_step_end(args, state, control)
                log_save_evaluate(learning_rate)
            else:
                control = handler.on_substep_end(args, state, control)
            if control.should_epoch_stop or control.should_training_stop:
                break
        control = handler.on_epoch_end(args, state, control)
        log_save_evaluate(learning_rate)
        if control.should_training_stop:
            break
    log({"train_loss": (total + running) / max(state.global_step, 1)})
    handler.on_train_end(args, state, control)
    return state, optimizer


def kinds(log: Path, *wanted: str) -> list:
    return [rec for rec in read_log(log) if rec.kind in wanted]


class StopAfter(Plugin):
    """Stops training at the end of epoch ``epoch``."""

    def __init__(self, epoch: int = 0):
        self.epoch = epoch

    @hookimpl
    def on_epoch_end(self, event):
        if event.epoch >= self.epoch:
            return r.StopTraining(reason="enough")
        return None


class SaveAt(Plugin):
    """Asks for a checkpoint at the end of batch ``batch`` of every epoch."""

    def __init__(self, batch: int = 1):
        self.batch = batch

    @hookimpl
    def on_batch_end(self, event):
        if event.batch == self.batch:
            return r.SaveCheckpoint(path="trainer", reason="a checkpoint here")
        return None


class SetRate(Plugin):
    """Sets the learning rate to ``value`` at the beginning of epoch 1."""

    def __init__(self, value: float = 0.5e-3):
        self.value = value

    @hookimpl
    def on_epoch_begin(self, event):
        if event.epoch == 1:
            return r.SetLearningRate(value=self.value, reason="epoch 1")
        return None


class TestEvents:
    def test_optimizer_steps_are_batches_and_epochs_carry_the_evaluation(self, tmp_path):
        """With gradient accumulation 2, six micro-batches are three batches per epoch; each
        carries its step's logged loss; the epoch's end carries its log and val_loss."""
        log = tmp_path / "run.jsonl"
        with Bus([], log=str(log)) as bus:
            state, _ = trainer_loop(arguments(tmp_path), tiny_model(), [TrainerBridge(bus)])
        assert state.global_step == 6
        [begin] = kinds(log, "train_begin")
        assert begin.params == {"epochs": 2, "steps": 3, "max_steps": 6,
                                "gradient_accumulation_steps": 2}
        ends = kinds(log, "batch_end")
        assert [(b.epoch, b.batch, b.step) for b in ends] == \
            [(0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 0, 3), (1, 1, 4), (1, 2, 5)]
        logged = [h for h in state.log_history if "loss" in h]
        assert [b.logs["loss"] for b in ends] == [h["loss"] for h in logged]
        epochs = kinds(log, "epoch_end")
        evaluations = [h["eval_loss"] for h in state.log_history if "eval_loss" in h]
        assert [e.epoch for e in epochs] == [0, 1]
        assert [e.logs["val_loss"] for e in epochs] == evaluations
        assert [e.logs["loss"] for e in epochs] == [logged[2]["loss"], logged[5]["loss"]]
        assert [t.logs["val_loss"] for t in kinds(log, "test_end")] == evaluations
        [end] = kinds(log, "train_end")
        assert end.logs["train_loss"] == state.log_history[-1]["train_loss"]

    def test_an_epoch_without_evaluation_ends_at_once(self, tmp_path):
        """With no evaluation and no epoch log, the epoch ends when the Trainer's does."""
        log = tmp_path / "run.jsonl"
        with Bus([], log=str(log)) as bus:
            trainer_loop(arguments(tmp_path, eval_strategy="no", logging_steps=2),
                         tiny_model(), [TrainerBridge(bus)])
        order = [(rec.kind, getattr(rec, "step", None)) for rec in
                 kinds(log, "batch_end", "epoch_end")]
        assert order == [("batch_end", 0), ("batch_end", 1), ("batch_end", 2), ("epoch_end", None),
                         ("batch_end", 3), ("batch_end", 4), ("batch_end", 5), ("epoch_end", None)]
        # Steps 2, 4 and 6 (batches done) were logged; the others carry no metrics.
        assert [bool(b.logs) for b in kinds(log, "batch_end")] == \
            [False, True, False, True, False, True]


class TestDecisions:
    def test_a_stop_ends_the_trainer_after_that_epoch(self, tmp_path):
        """A stop decided at epoch 0's end (with its evaluation) ends training there."""
        log = tmp_path / "run.jsonl"
        with Bus([StopAfter(0)], log=str(log)) as bus:
            state, _ = trainer_loop(arguments(tmp_path, num_train_epochs=3), tiny_model(),
                                    [TrainerBridge(bus)])
        assert state.global_step == 3
        assert [e.epoch for e in kinds(log, "epoch_end")] == [0]
        assert len(kinds(log, "stop_training", "train_end")) == 2

    def test_a_rate_change_reaches_the_optimizer_and_outlives_the_scheduler(self, tmp_path):
        """A learning-rate decision sets every group's rate, and the Trainer's scheduler,
        which sets the rate at every step, goes on from it rather than overwriting it."""
        log = tmp_path / "run.jsonl"
        with Bus([SetRate(0.25e-3)], log=str(log)) as bus:
            state, optimizer = trainer_loop(arguments(tmp_path), tiny_model(),
                                            [TrainerBridge(bus)])
        assert [g["lr"] for g in optimizer.param_groups] == [0.25e-3] * len(
            optimizer.param_groups)
        rates = [h["learning_rate"] for h in state.log_history if "learning_rate" in h]
        assert rates == [1e-3] * 3 + [0.25e-3] * 3
        assert [d.value for d in kinds(log, "set_learning_rate")] == [0.25e-3]

    def test_a_rate_change_keeps_a_decaying_schedule_s_shape(self, tmp_path):
        """With a linear decay, the rate after a change follows the schedule scaled by it."""
        with Bus([SetRate(0.25e-3)]) as bus:
            state, optimizer = trainer_loop(arguments(tmp_path, lr_scheduler_type="linear"),
                                            tiny_model(), [TrainerBridge(bus)])
        rates = [h["learning_rate"] for h in state.log_history if "learning_rate" in h]
        # Linear decay over 6 steps: 1e-3 * (6 - step) / 6; halved from epoch 1 on.
        expected = [1e-3 * (6 - s) / 6 * (0.5 if s >= 3 else 1.0) for s in range(6)]
        assert rates == pytest.approx(expected)

    def test_a_checkpoint_decision_makes_the_trainer_save(self, tmp_path):
        """save_checkpoint sets control.should_save: the Trainer saves at that step, and the
        save is recorded as checkpoint_saved with the directory's size and digest."""
        log = tmp_path / "run.jsonl"
        args = arguments(tmp_path)
        with Bus([SaveAt(1)], log=str(log)) as bus:
            trainer_loop(args, tiny_model(), [TrainerBridge(bus)])
        saved = kinds(log, "checkpoint_saved")
        assert [Path(s.path).name for s in saved] == ["checkpoint-2", "checkpoint-5"]
        for record in saved:
            files = sorted(p for p in Path(record.path).rglob("*") if p.is_file())
            digest = hashlib.sha256()
            for file in files:
                digest.update(file.relative_to(record.path).as_posix().encode() + b"\0")
                digest.update(file.read_bytes())
            assert record.size == sum(f.stat().st_size for f in files)
            assert record.sha256 == digest.hexdigest()
        assert sorted(p.name for p in Path(args.output_dir).iterdir()) == \
            ["checkpoint-2", "checkpoint-5"]


class TestTrainer:
    """The real Trainer, where accelerate (which it needs) is installed."""

    def test_the_trainer_publishes_and_obeys(self, tmp_path):
        pytest.importorskip("accelerate")
        from transformers import Trainer

        class Rows(torch.utils.data.Dataset):
            def __init__(self, data):
                self.rows = [{"input_ids": b["input_ids"][i], "labels": b["labels"][i]}
                             for b in data for i in range(BATCH)]

            def __len__(self):
                return len(self.rows)

            def __getitem__(self, i):
                return self.rows[i]

        log = tmp_path / "run.jsonl"
        args = TrainingArguments(
            output_dir=str(tmp_path / "out"), num_train_epochs=3, per_device_train_batch_size=BATCH,
            per_device_eval_batch_size=BATCH, gradient_accumulation_steps=2, logging_steps=1,
            eval_strategy="epoch", save_strategy="no", report_to=[], use_cpu=True,
            dataloader_num_workers=0, disable_tqdm=True)
        with Bus([StopAfter(1)], log=str(log)) as bus:
            trainer = Trainer(model=tiny_model(), args=args, train_dataset=Rows(batches()),
                              eval_dataset=Rows(batches(2, seed=1)),
                              callbacks=[TrainerBridge(bus)])
            trainer.train()
        assert trainer.state.global_step == 6  # stopped after epoch 1 of 3
        assert [b.step for b in kinds(log, "batch_end")] == list(range(6))
        assert [e.epoch for e in kinds(log, "epoch_end")] == [0, 1]
        assert all("val_loss" in e.logs for e in kinds(log, "epoch_end"))
