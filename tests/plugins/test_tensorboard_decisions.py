"""plugins.TensorBoard: a step's decisions as one table, markers, the HParams session, vector
metrics, embedding metadata by layer name, and no torch on the way."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from eventbus import Bus, NumpyModel, RunWarning, hookimpl
from eventbus.records import SaveCheckpoint, SetLearningRate, StopTraining
from plugins import EarlyStopping, TensorBoard
from plugins.tensorboard import decisions_table, number_text

from hypothesis_profiles import FILES, examples

ALL = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}


def acc(path) -> EventAccumulator:
    accumulator = EventAccumulator(str(path), size_guidance=ALL)
    accumulator.Reload()
    return accumulator


def texts(path, tag="decisions") -> list[tuple[int, str]]:
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc(path).Tensors(tag)]


class Decider:
    """Three decisions at the end of epoch 1, one by one; a stop at epoch 2."""
    logs_learning_rate = True  # its rule reads the rate from the logs

    name = "Decider"

    @hookimpl
    def on_epoch_end(self, event):
        if event.epoch == 1:
            lr = event.logs["learning_rate"]
            return [SetLearningRate(value=lr * 0.1, previous=lr, reason="cut | by 10"),
                    SaveCheckpoint(path="ckpt.h5", reason="a new best"),
                    SaveCheckpoint(path="ckpt2.h5", reason="another copy")]
        if event.epoch == 2:
            return StopTraining(reason="enough")
        return None


class Planner:
    """Decides what a plan says at each epoch's end, and more at train_end."""
    logs_learning_rate = True  # its rule reads the rate from the logs

    name = "Planner"

    def __init__(self, plan, at_end):
        self.plan, self.at_end = plan, at_end

    def _decide(self, kinds, lr):
        out = []
        for i, kind in enumerate(kinds):
            reason = f"{kind} {i}"
            if kind in ("cut", "raise"):
                value = lr / 2 if kind == "cut" else lr * 2
                out.append(SetLearningRate(value=value, previous=lr, reason=reason))
                lr = value
            elif kind == "checkpoint":
                out.append(SaveCheckpoint(path="c.h5", reason=reason))
            else:
                out.append(StopTraining(reason=reason))
        return out

    @hookimpl
    def on_epoch_end(self, event):
        return self._decide(self.plan[event.epoch], event.logs["learning_rate"])

    @hookimpl
    def on_train_end(self, event):
        return self._decide(self.at_end, 0.1)


def train(bus, n, logs=None):
    bus.train_begin({"epochs": n, "batch_size": 8})
    for epoch in range(n):
        bus.epoch_begin(epoch)
        bus.epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "val_loss": 2.0 / (epoch + 1),
                              **(logs or {})})
        if bus.stop_training:
            break
    bus.train_end()


class TestDecisions:
    def test_a_steps_decisions_are_one_table_and_markers(self, tmp_path):
        """Decisions arriving one by one at one epoch are one text entry at that step (a
        table row each, in order), with a marker scalar per kind; numbers without float
        noise."""
        with Bus([Decider(), TensorBoard(tmp_path)], learning_rate=0.1) as bus:
            train(bus, 5)
        entries = texts(tmp_path / "train")
        assert [step for step, _ in entries] == [1, 2]
        first = entries[0][1]
        rows = [line for line in first.splitlines() if line.startswith("| Decider")]
        assert rows == ["| Decider | set_learning_rate 0.1 → 0.01 | cut \\| by 10 |",
                        "| Decider | save_checkpoint | a new best |",
                        "| Decider | save_checkpoint | another copy |"]
        assert first.startswith("Epoch 2 (step 1")
        assert "0.010000000000000002" not in first
        train_acc = acc(tmp_path / "train")
        assert [(e.step, e.value) for e in train_acc.Scalars("decisions/lr_cut")] == [(1, 1.0)]
        assert [(e.step, e.value) for e in train_acc.Scalars("decisions/checkpoint")] == \
            [(1, 2.0)]
        assert [(e.step, e.value) for e in train_acc.Scalars("decisions/stop")] == [(2, 1.0)]

    def test_the_last_epochs_table_is_written_at_train_end(self, tmp_path):
        """Once train_end has returned (its own decisions included), the last epoch's table is
        in the files, though the bus is not closed yet."""
        bus = Bus([Planner([[], ["stop"]], ["checkpoint"]), TensorBoard(tmp_path)],
                  learning_rate=0.1)
        try:
            bus.train_begin()
            for epoch in range(2):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0})
            bus.train_end()
            ((step, text),) = texts(tmp_path / "train")
            assert step == 1 and "stop 0" in text and "checkpoint 0" in text
        finally:
            bus.close()
        assert len(texts(tmp_path / "train")) == 1

    @examples(FILES)  # a run written and read back per example
    @given(plan=st.lists(st.lists(st.sampled_from(["cut", "raise", "checkpoint", "stop"]),
                                  max_size=3), min_size=1, max_size=5),
           at_end=st.lists(st.sampled_from(["checkpoint", "stop"]), max_size=2))
    def test_one_entry_per_step_whatever_arrives_when(self, tmp_path_factory, plan, at_end):
        """Property: whatever decisions arrive at whichever epochs (and at train_end, counted
        with the last epoch), the files hold one entry per epoch with decisions, a row per
        decision in the order recorded, and per marker the count at each of those epochs."""
        log_dir = tmp_path_factory.mktemp("tb")
        planner = Planner(plan, at_end)
        with Bus([planner, TensorBoard(log_dir)], learning_rate=0.1) as bus:
            bus.train_begin()
            for epoch in range(len(plan)):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0})
            bus.train_end()
        # Per epoch, the reasons of its decisions in the order they are recorded.
        wanted = {e: [f"{k} {i}" for i, k in enumerate(kinds)] for e, kinds in enumerate(plan)
                  if kinds}
        if at_end:
            wanted.setdefault(len(plan) - 1, []).extend(f"{k} {i}" for i, k in enumerate(at_end))
        entries = texts(log_dir / "train") if wanted else []
        assert [step for step, _ in entries] == sorted(wanted)
        for step, text in entries:
            reasons = [line.split(" | ")[2].removesuffix(" |") for line in text.splitlines()
                       if line.startswith("| Planner")]
            assert reasons == wanted[step]
        train_acc = acc(log_dir / "train")
        for marker, kind in (("lr_cut", "cut"), ("lr_raise", "raise"),
                             ("checkpoint", "checkpoint"), ("stop", "stop")):
            points = [(e.step, e.value) for e in train_acc.Scalars(f"decisions/{marker}")] \
                if f"decisions/{marker}" in train_acc.Tags()["scalars"] else []
            counts = {step: sum(r.split()[0] == kind for r in reasons)
                      for step, reasons in sorted(wanted.items())}
            assert points == [(step, n) for step, n in counts.items() if n]

    @given(value=st.floats(1e-12, 1e12), digits=st.integers(0, 12))
    def test_numbers_have_at_most_six_significant_digits(self, value, digits):
        """number_text rounds to six significant digits and reads back within that."""
        x = round(value, digits) or value
        text = number_text(x)
        assert len(text.split("e")[0].replace(".", "").replace("-", "").lstrip("0")) <= 6
        assert float(text) == pytest.approx(x, rel=1e-5)

    def test_table_cells_escape_markdown(self):
        table = decisions_table([{"kind": "stop_training", "source": "A|B",
                                  "reason": "x\ny <b> `z` *w*"}])
        assert table.splitlines()[-1] == \
            "| A\\|B | stop_training | x y &lt;b> \\`z\\` \\*w\\* |"


class TestHParams:
    def test_plugin_and_loop_parameters_start_a_session(self, tmp_path):
        """Every deciding plugin's parameters (label.param, unset ones left out), the loop's
        params and the meta go to the log directory's HParams session; train_end ends it."""
        with Bus([EarlyStopping(monitor="loss", patience=5),
                  TensorBoard(tmp_path / "logs", histogram_freq=3)],
                 model=NumpyModel({"w": np.ones(2)}, learning_rate=0.1),
                 meta={"seed": 7, "model": {"layers": 2}}) as bus:
            train(bus, 2)
        root = acc(tmp_path / "logs")
        start = root.SummaryMetadata(hparams_metadata.SESSION_START_INFO_TAG)
        info = hparams_metadata.parse_session_start_info_plugin_data(
            start.plugin_data.content)
        values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                  for k, v in info.hparams.items()}
        assert values["EarlyStopping.patience"] == 5.0
        assert values["EarlyStopping.monitor"] == "loss"
        assert "EarlyStopping.baseline" not in values  # None: unset
        assert not any(k.startswith("TensorBoard.") for k in values)  # output, not training
        assert values["params.epochs"] == 2.0 and values["params.batch_size"] == 8.0
        assert values["meta.seed"] == 7.0 and "meta.model" not in values
        assert info.group_name == bus.run_id
        assert hparams_metadata.SESSION_END_INFO_TAG in root.Tags()["tensors"]


class TestVectorsAndEmbeddings:
    def test_vector_metric_is_one_scalar_per_element(self, tmp_path):
        """A list-valued metric in epoch logs (as the bus passes vector metrics on) is
        epoch_f1/0, epoch_f1/1 in train and validation."""
        plugin = TensorBoard(tmp_path)
        with Bus([plugin]) as bus:
            bus.train_begin()
            bus.epoch_begin(0)
            # Straight to the sink: the record as the bus passes a vector metric on.
            plugin.write({"kind": "epoch_end", "epoch": 0, "time": 1.0, "seq": 3,
                          "logs": {"f1": [0.5, 0.75], "val_f1": [0.25, 1.0]}})
        assert [e.value for e in acc(tmp_path / "train").Scalars("epoch_f1/1")] == [0.75]
        assert [e.value for e in acc(tmp_path / "validation").Scalars("epoch_f1/0")] == [0.25]

    @pytest.mark.parametrize("key", ["embedding", "sequential/embedding"])
    def test_metadata_keyed_by_layer_name_or_path(self, tmp_path, key):
        """embeddings_metadata keyed by the layer's name, as Keras documents it, or by its
        path, labels the projector's matrix."""
        labels = tmp_path / "words.tsv"
        labels.write_text("cat\ndog\n")
        model = NumpyModel({"sequential/embedding/embeddings": np.ones((2, 3))})
        plugin = TensorBoard(tmp_path / "logs", embeddings_freq=1,
                             embeddings_metadata={key: str(labels)})
        with Bus([plugin], model=model) as bus:
            train(bus, 1)
        config = (tmp_path / "logs" / "projector_config.pbtxt").read_text()
        assert "metadata_path" in config

    def test_metadata_for_no_layer_is_a_warning(self, tmp_path):
        labels = tmp_path / "words.tsv"
        labels.write_text("cat\ndog\n")
        model = NumpyModel({"sequential/embedding/embeddings": np.ones((2, 3))})
        plugin = TensorBoard(tmp_path / "logs", embeddings_freq=1,
                             embeddings_metadata={"embeding": str(labels)})
        with pytest.warns(RunWarning, match="embeddings_metadata names \\['embeding'\\]"):
            with Bus([plugin], model=model) as bus:
                train(bus, 1)


def test_the_demos_tensorboard_path_imports_no_torch(tmp_path):
    """The demo's plugins (TensorBoard with histograms among them) train and close in a fresh
    interpreter without importing torch or tensorboardX."""
    code = f"""
import sys
from pathlib import Path
from eventbus.demo import run_demo
run_demo(out=Path({str(tmp_path / 'demo')!r}), epochs=6, progress=False)
print(sorted(m for m in ("torch", "tensorboardX") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    histograms = acc(tmp_path / "demo" / "tensorboard" / "train").Tags()["histograms"]
    assert "dense/kernel/histogram" in histograms


KILLED = """
import sys
from eventbus import Bus, hookimpl
from eventbus.records import SaveCheckpoint, SetLearningRate
from plugins import TensorBoard


class Decider:
    logs_learning_rate = True  # its rule reads the rate from the logs
    name = "Decider"

    @hookimpl
    def on_epoch_end(self, event):
        if event.epoch in (1, 2):
            lr = event.logs["learning_rate"]
            return [SetLearningRate(value=lr / 2, previous=lr, reason=f"halve at {event.epoch}"),
                    SaveCheckpoint(path=f"c{event.epoch}.h5", reason="a new best")]
        return None


out, resume = sys.argv[1], sys.argv[2] == "resume"
bus = Bus([Decider(), TensorBoard(out + "/logs")], log=out + "/run.jsonl", learning_rate=0.1,
          resume=resume)
if not resume:
    bus.train_begin({"epochs": 4})
for epoch in range(bus.initial_epoch, 4):
    bus.epoch_begin(epoch)
    bus.epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
    if epoch == 2 and not resume:
        print("decided", flush=True)
        sys.stdin.readline()  # killed here: epoch 2's table is not in the files yet
bus.train_end()
bus.close()
"""


def test_a_killed_runs_last_decisions_come_back_whole_on_resume(tmp_path):
    """SIGKILLed after epoch 2's decisions (in the log, not yet in the event files), then
    resumed: each epoch with decisions is one entry, epoch 2's with both rows, and its markers
    once."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path), "first"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "decided\n"
        assert [step for step, _ in texts(tmp_path / "logs" / "train")] == [1]
        proc.kill()
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.stdin.close()
        proc.stdout.close()
    done = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path), "resume"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    entries = texts(tmp_path / "logs" / "train")
    assert [step for step, _ in entries] == [1, 2]
    assert [line.split(" | ")[1] for line in entries[1][1].splitlines()
            if line.startswith("| Decider")] == ["set_learning_rate 0.05 → 0.025",
                                                  "save_checkpoint"]
    train_acc = acc(tmp_path / "logs" / "train")
    assert [e.step for e in train_acc.Scalars("decisions/checkpoint")] == [1, 2]
    assert [e.step for e in train_acc.Scalars("epoch_loss")] == [0, 1, 2, 3]
