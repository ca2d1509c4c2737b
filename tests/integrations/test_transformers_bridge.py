"""The Hugging Face Trainer bridge, on the real ``transformers.Trainer``: a tiny BERT built from a
config (nothing is downloaded), random token ids, CPU, one torch thread."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer's device set-up

from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from eventbus import Bus, Plugin, RunWarning, hookimpl, replay  # noqa: E402
from eventbus import records as r  # noqa: E402
from eventbus.integrations.transformers import TrainerBridge  # noqa: E402
from eventbus.log import read_log  # noqa: E402
from plugins import ReduceLROnPlateau  # noqa: E402

#: Six micro-batches of four rows: with gradient accumulation 2, three optimizer steps an epoch.
MICRO_BATCHES, BATCH = 6, 4


@pytest.fixture(autouse=True)
def one_thread():
    """A model this small trains fastest on one thread (ten times faster on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Rows(torch.utils.data.Dataset):
    """``n`` rows of eight random token ids and a random label."""

    def __init__(self, n: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 32, (n, 8), generator=generator)
        self.labels = torch.randint(0, 2, (n,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def tiny_model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=16, num_labels=2)
    return BertForSequenceClassification(config)


def arguments(tmp_path: Path, **overrides) -> TrainingArguments:
    """Two epochs of three optimizer steps, each step logged, an evaluation at each epoch's end,
    no saves, a constant rate of 1e-3 (``overrides`` change any of it)."""
    options = {"output_dir": str(tmp_path / "out"), "num_train_epochs": 2,
               "per_device_train_batch_size": BATCH, "per_device_eval_batch_size": BATCH,
               "gradient_accumulation_steps": 2, "learning_rate": 1e-3, "logging_steps": 1,
               "lr_scheduler_type": "constant", "eval_strategy": "epoch", "save_strategy": "no",
               "use_cpu": True, "report_to": [], "disable_tqdm": True,
               "dataloader_num_workers": 0, "dataloader_pin_memory": False, "seed": 0}
    return TrainingArguments(**{**options, **overrides})


def train(tmp_path: Path, plugins=(), *, callbacks=(), resume_from_checkpoint=None,
          log_name: str = "run.jsonl", resume: bool = False, **overrides) -> tuple[Trainer, Path]:
    """Train the tiny model with the bridge on a bus of ``plugins`` (``callbacks`` after the
    bridge; ``resume``: the bus resumes from its log), with :func:`arguments`. Returns the
    Trainer and the bus's log."""
    log = tmp_path / log_name
    with Bus(list(plugins), log=str(log), resume=resume) as bus:
        trainer = Trainer(model=tiny_model(), args=arguments(tmp_path, **overrides),
                          train_dataset=Rows(MICRO_BATCHES * BATCH, seed=0),
                          eval_dataset=Rows(2 * BATCH, seed=1),
                          callbacks=[TrainerBridge(bus), *callbacks])
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer, log


def kinds(log: Path, *wanted: str) -> list:
    return [rec for rec in read_log(log) if rec.kind in wanted]


def history(trainer: Trainer, key: str) -> list[float]:
    """What the Trainer itself logged under ``key``, in order."""
    return [entry[key] for entry in trainer.state.log_history if key in entry]


class StopAfter(Plugin):
    """Stops training at the end of epoch ``epoch``."""

    def __init__(self, epoch: int = 0):
        self.epoch = epoch

    @hookimpl
    def on_epoch_end(self, event):
        if event.epoch >= self.epoch:
            return r.StopTraining(reason="enough")
        return None


class StopAtStep(Plugin):
    """Stops training at the end of the batch of global step ``step``."""

    def __init__(self, step: int):
        self.step = step

    @hookimpl
    def on_batch_end(self, event):
        if event.step == self.step:
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

    def __init__(self, value: float):
        self.value = value

    @hookimpl
    def on_epoch_begin(self, event):
        if event.epoch == 1:
            return r.SetLearningRate(value=self.value, reason="epoch 1")
        return None


class LogAtStep(TrainerCallback):
    """A Trainer callback that asks for a log at global step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_log = True


class TestEvents:
    def test_optimizer_steps_are_batches_and_epochs_carry_the_evaluation(self, tmp_path):
        """With gradient accumulation 2, six micro-batches are three batches per epoch; each
        carries its step's logged loss; the epoch's end carries its log and val_loss."""
        trainer, log = train(tmp_path)
        assert trainer.state.global_step == 6
        [begin] = kinds(log, "train_begin")
        assert begin.params == {"epochs": 2, "steps": 3, "max_steps": 6,
                                "gradient_accumulation_steps": 2}
        ends = kinds(log, "batch_end")
        assert [(b.epoch, b.batch, b.step) for b in ends] == \
            [(0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 0, 3), (1, 1, 4), (1, 2, 5)]
        losses = history(trainer, "loss")
        assert [b.logs["loss"] for b in ends] == losses
        assert [b.logs["grad_norm"] for b in ends] == history(trainer, "grad_norm")
        epochs = kinds(log, "epoch_end")
        evaluations = history(trainer, "eval_loss")
        assert len(evaluations) == 2
        assert [e.epoch for e in epochs] == [0, 1]
        assert [e.logs["val_loss"] for e in epochs] == evaluations
        assert [e.logs["loss"] for e in epochs] == [losses[2], losses[5]]
        assert [t.logs["val_loss"] for t in kinds(log, "test_end")] == evaluations
        [end] = kinds(log, "train_end")
        assert end.logs["train_loss"] == history(trainer, "train_loss")[0]

    def test_an_epoch_without_evaluation_ends_at_once(self, tmp_path):
        """With no evaluation and no epoch log, the epoch ends when the Trainer's does."""
        trainer, log = train(tmp_path, eval_strategy="no", logging_steps=2)
        order = [(rec.kind, getattr(rec, "step", None)) for rec in
                 kinds(log, "batch_end", "epoch_end")]
        assert order == [("batch_end", 0), ("batch_end", 1), ("batch_end", 2), ("epoch_end", None),
                         ("batch_end", 3), ("batch_end", 4), ("batch_end", 5), ("epoch_end", None)]
        # Steps 2, 4 and 6 (batches done) were logged; the others carry no metrics.
        ends = kinds(log, "batch_end")
        assert [bool(b.logs) for b in ends] == [False, True, False, True, False, True]
        assert [b.logs["loss"] for b in ends if b.logs] == history(trainer, "loss")
        assert not kinds(log, "test_end")

    def test_steps_per_epoch_come_from_the_data_and_a_last_step_evaluation_ends_the_epoch(
            self, tmp_path):
        """With max_steps=4, an epoch still has three steps (the second is cut short). With an
        evaluation every two steps, epoch 0 (ending at step 3) has none of its weights, and
        epoch 1 ends with the one of step 4, which it carries."""
        trainer, log = train(tmp_path, max_steps=4, eval_strategy="steps", eval_steps=2)
        [begin] = kinds(log, "train_begin")
        assert begin.params == {"epochs": 2, "steps": 3, "max_steps": 4,
                                "gradient_accumulation_steps": 2}
        assert [(b.epoch, b.batch) for b in kinds(log, "batch_end")] == \
            [(0, 0), (0, 1), (0, 2), (1, 0)]
        evaluations = history(trainer, "eval_loss")
        assert len(evaluations) == 2  # steps 2 and 4
        first, second = kinds(log, "epoch_end")
        assert "val_loss" not in first.logs
        assert second.logs["val_loss"] == evaluations[1]

    def test_a_resumed_trainer_goes_on_with_the_epoch_s_next_batch(self, tmp_path):
        """A Trainer resumed from a checkpoint at step 2 (in epoch 0) publishes epoch 0 from its
        batch 2, then epoch 1 from batch 0."""
        train(tmp_path, max_steps=2, save_strategy="steps", save_steps=2, eval_strategy="no",
              log_name="first.jsonl")
        checkpoint = tmp_path / "out" / "checkpoint-2"
        _, log = train(tmp_path, resume_from_checkpoint=str(checkpoint), log_name="second.jsonl")
        assert [(rec.kind, rec.epoch, getattr(rec, "batch", None)) for rec in
                kinds(log, "epoch_begin", "batch_end")] == \
            [("epoch_begin", 0, None), ("batch_end", 0, 2),
             ("epoch_begin", 1, None), ("batch_end", 1, 0), ("batch_end", 1, 1),
             ("batch_end", 1, 2)]

    def test_a_resumed_bus_and_trainer_go_on_from_the_same_epoch(self, tmp_path):
        """A run interrupted after epoch 0 with its checkpoint: the bus resumed from its log and
        the Trainer from the checkpoint go on with epoch 1, and the log holds each step once."""
        train(tmp_path, max_steps=3, save_strategy="epoch", eval_strategy="no")
        # The first Trainer ended its fit at max_steps (train_end is in the log): the bus says
        # so, and goes on with a further fit in the same log.
        with pytest.warns(RunWarning, match="had finished"):
            train(tmp_path, resume=True, save_strategy="epoch", eval_strategy="no",
                  resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-3"))
        records = list(read_log(tmp_path / "run.jsonl"))
        [resumed] = [rec for rec in records if rec.kind == "resumed"]
        assert resumed.initial_epoch == 1
        assert [(b.epoch, b.batch, b.step) for b in records if b.kind == "batch_end"] == \
            [(0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 0, 3), (1, 1, 4), (1, 2, 5)]
        assert [e.epoch for e in records if e.kind == "epoch_end"] == [0, 1]
        assert [Path(c.path).name for c in records if c.kind == "checkpoint_saved"] == \
            ["checkpoint-3", "checkpoint-6"]

    def test_a_log_asked_for_after_the_bridge_belongs_to_the_epoch(self, tmp_path):
        """A callback after the bridge that asks for a log at step 3 gets it after that step's
        batch_end: it is in the epoch's end. The epoch's own log (logging_strategy "epoch")
        then has nothing new to log and never comes: the epoch ends with training, before
        train_end, which has only the Trainer's closing numbers."""
        trainer, log = train(tmp_path, callbacks=[LogAtStep(3)], logging_strategy="epoch",
                             eval_strategy="no", num_train_epochs=1)
        [loss] = history(trainer, "loss")
        assert not any(b.logs for b in kinds(log, "batch_end"))
        assert [rec.kind for rec in kinds(log, "epoch_end", "train_end")] == \
            ["epoch_end", "train_end"]
        [epoch] = kinds(log, "epoch_end")
        assert epoch.logs["loss"] == loss
        assert "train_loss" not in epoch.logs
        [end] = kinds(log, "train_end")
        assert "loss" not in end.logs
        assert end.logs["train_loss"] == history(trainer, "train_loss")[0]


class TestDecisions:
    def test_a_stop_ends_the_trainer_after_that_epoch(self, tmp_path):
        """A stop decided at epoch 0's end (with its evaluation) ends training there."""
        trainer, log = train(tmp_path, [StopAfter(0)], num_train_epochs=3)
        assert trainer.state.global_step == 3
        assert [e.epoch for e in kinds(log, "epoch_end")] == [0]
        assert "val_loss" in kinds(log, "epoch_end")[0].logs
        assert [rec.kind for rec in kinds(log, "stop_training", "train_end")] == \
            ["stop_training", "train_end"]

    def test_a_stop_at_a_batch_ends_the_trainer_after_that_step(self, tmp_path):
        """A stop decided at step 1's batch_end ends training after that optimizer step; the
        epoch still ends, with the evaluation the Trainer runs at its end."""
        trainer, log = train(tmp_path, [StopAtStep(1)])
        assert trainer.state.global_step == 2
        assert [b.step for b in kinds(log, "batch_end")] == [0, 1]
        [epoch] = kinds(log, "epoch_end")
        assert epoch.logs["val_loss"] == history(trainer, "eval_loss")[0]

    def test_a_rate_change_reaches_the_optimizer_and_outlives_the_scheduler(self, tmp_path):
        """A learning-rate decision sets every group's rate, and the Trainer's scheduler,
        which sets the rate at every step, goes on from it rather than overwriting it."""
        trainer, log = train(tmp_path, [SetRate(0.25e-3)])
        groups = trainer.optimizer.param_groups
        assert len(groups) == 2  # the Trainer's: with weight decay, and without
        assert [g["lr"] for g in groups] == [0.25e-3] * 2
        assert history(trainer, "learning_rate") == [1e-3] * 3 + [0.25e-3] * 3
        assert [d.value for d in kinds(log, "set_learning_rate")] == [0.25e-3]

    def test_a_rate_change_keeps_a_decaying_schedule_s_shape(self, tmp_path):
        """With a linear decay, the rate after a change follows the schedule scaled by it."""
        trainer, _ = train(tmp_path, [SetRate(0.25e-3)], lr_scheduler_type="linear")
        # Linear decay over 6 steps: 1e-3 * (6 - step) / 6, which is 0.5e-3 at epoch 1's
        # beginning; set to 0.25e-3 there, so halved from then on.
        expected = [1e-3 * (6 - s) / 6 * (0.5 if s >= 3 else 1.0) for s in range(6)]
        assert history(trainer, "learning_rate") == pytest.approx(expected)
        assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([0.0, 0.0])

    def test_a_cut_from_a_decayed_rate_replays_exactly(self, tmp_path):
        """ReduceLROnPlateau with the Trainer's linear decay: the live plugin cuts from the
        decayed rate the epoch logged, and replay (and verify) see that rate too."""
        _, log = train(tmp_path, [ReduceLROnPlateau(patience=0, min_delta=10.0)],
                       lr_scheduler_type="linear", num_train_epochs=3)
        cuts = kinds(log, "set_learning_rate")
        assert len(cuts) == 2 and cuts[0].previous < 1e-3  # cut from the decayed rate
        result = replay(log, verify=True)
        assert result.ok, result.mismatch
        assert result.diverged_at is None

    def test_a_checkpoint_decision_makes_the_trainer_save(self, tmp_path):
        """save_checkpoint sets control.should_save: the Trainer saves at that step, and the
        save is recorded as checkpoint_saved with the directory's size and digest."""
        trainer, log = train(tmp_path, [SaveAt(1)])
        saved = kinds(log, "checkpoint_saved")
        assert [(Path(s.path).name, s.epoch) for s in saved] == \
            [("checkpoint-2", 0), ("checkpoint-5", 1)]
        for record in saved:
            files = sorted(p for p in Path(record.path).rglob("*") if p.is_file())
            assert "model.safetensors" in {f.name for f in files}
            digest = hashlib.sha256()
            for file in files:
                digest.update(file.relative_to(record.path).as_posix().encode() + b"\0")
                digest.update(file.read_bytes())
            assert record.size == sum(f.stat().st_size for f in files)
            assert record.sha256 == digest.hexdigest()
        assert sorted(p.name for p in Path(trainer.args.output_dir).iterdir()) == \
            ["checkpoint-2", "checkpoint-5"]
