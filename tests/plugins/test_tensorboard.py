"""plugins.TensorBoard: Keras's layout, read back with TensorBoard's EventAccumulator."""

from __future__ import annotations

import inspect
import json
import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from hypothesis import given
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.projector import projector_config_pb2

from eventbus import Bus, NumpyModel, RunWarning, hookimpl
from eventbus.errors import ConfigError
from eventbus.records import (
    BatchBegin,
    BatchEnd,
    EpochBegin,
    EpochEnd,
    SetLearningRate,
    TrainBegin,
    TrainEnd,
)
from eventbus.testing import RecordingWriter, epochs, run
from plugins import TensorBoard
from sinks.tensorboard import frame_records, iter_event_file

from hypothesis_profiles import FILES, examples

ALL = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}


def acc(path) -> EventAccumulator:
    accumulator = EventAccumulator(str(path), size_guidance=ALL)
    accumulator.Reload()
    return accumulator


def scalars(path, tag):
    return [(e.step, e.value) for e in acc(path).Scalars(tag)]


def f32(x):
    return float(np.float32(x))


class HalveAtEpoch1:
    """A pure decision plugin for the tests: halves the learning rate after epoch 1."""
    logs_learning_rate = True  # its rule reads the rate from the logs

    name = "Halver"

    @hookimpl
    def on_epoch_end(self, event):
        if event.epoch == 1:
            lr = event.logs["learning_rate"]
            return SetLearningRate(value=lr / 2, previous=lr, reason="epoch 1 ended",
                                   evidence={"epoch": 1})
        return None


def train(bus, epochs_, start=0, batches=3, shift=0.0):
    for epoch in range(start, epochs_):
        bus.epoch_begin(epoch)
        for b in range(batches):
            bus.batch_begin(b)
            bus.batch_end(b, {"loss": 1.0 / (epoch * batches + b + 1) + shift, "size": 8})
        bus.epoch_end(epoch, {"loss": 1.0 / (epoch + 1) + shift, "val_loss": 2.0 / (epoch + 1)
                              + shift})


class TestLayout:
    def test_train_and_validation_runs(self, tmp_path):
        """epoch_<metric> in train/, val_ metrics without the prefix in validation/, step=epoch."""
        run([TensorBoard(tmp_path)], epochs(loss=[0.5, 0.25], val_loss=[0.75, 0.5],
                                            accuracy=[0.1, 0.2]), learning_rate=0.01)
        assert scalars(tmp_path / "train", "epoch_loss") == [(0, 0.5), (1, 0.25)]
        assert scalars(tmp_path / "train", "epoch_accuracy") == [(0, f32(0.1)), (1, f32(0.2))]
        assert scalars(tmp_path / "train", "epoch_learning_rate") == [(0, f32(0.01)),
                                                                       (1, f32(0.01))]
        assert scalars(tmp_path / "validation", "epoch_loss") == [(0, 0.75), (1, 0.5)]
        assert "epoch_val_loss" not in acc(tmp_path / "train").Tags()["scalars"]

    def test_a_rate_the_loop_moves_itself_is_the_one_written(self, tmp_path):
        """A scheduler of the loop's own (no decision, no rate plugin) moves the model's rate:
        epoch_learning_rate is the model's at each epoch's end, as Keras's TensorBoard reads
        the optimizer's; a conversion of the log, which cannot see it, writes the rate the log
        tells."""
        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        with Bus([TensorBoard(tmp_path / "live")], model=model,
                 log=tmp_path / "run.jsonl") as bus:
            bus.train_begin({"epochs": 3})
            for epoch in range(3):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0})
                model.learning_rate /= 10  # a StepLR of the loop's own
        assert scalars(tmp_path / "live" / "train", "epoch_learning_rate") == [
            (0, f32(0.1)), (1, f32(0.01)), (2, f32(0.001))]
        from eventbus.convert import convert

        convert(tmp_path / "run.jsonl", tmp_path / "converted", to="tensorboard")
        assert scalars(tmp_path / "converted" / "train", "epoch_learning_rate") == [
            (0, f32(0.1)), (1, f32(0.1)), (2, f32(0.1))]

    def test_nan_is_written(self, tmp_path):
        """A NaN loss is a NaN point, not a gap or an error."""
        run([TensorBoard(tmp_path)], epochs(loss=[math.nan, 1.0]))
        values = scalars(tmp_path / "train", "epoch_loss")
        assert math.isnan(values[0][1]) and values[1] == (1, 1.0)

    def test_batch_scalars_every_update_freq(self, tmp_path):
        """update_freq=2: batch_<metric> every 2nd batch at step = batches done; no size/batch."""
        bus = Bus([TensorBoard(tmp_path, update_freq=2)])
        bus.train_begin({"epochs": 2})
        train(bus, 2)
        bus.train_end()
        bus.close()
        assert [s for s, _ in scalars(tmp_path / "train", "batch_loss")] == [2, 4, 6]
        assert scalars(tmp_path / "train", "batch_loss")[0][1] == 0.5
        assert "batch_size" not in acc(tmp_path / "train").Tags()["scalars"]

    def test_epoch_update_freq_does_not_subscribe_to_batches(self, tmp_path):
        """With update_freq='epoch' the bus never calls the plugin for a batch."""
        bus = Bus([TensorBoard(tmp_path)])
        assert bus.subscribers("batch_end") == []
        bus.close()
        batch_bus = Bus([TensorBoard(tmp_path, update_freq="batch")])
        assert len(batch_bus.subscribers("batch_end")) == 1
        batch_bus.close()

    def test_weights_histograms_images_and_graph(self, tmp_path):
        """Histograms every histogram_freq epochs, images alongside, the model config as text."""
        model = NumpyModel({"dense/kernel": np.arange(6.0).reshape(3, 2), "dense/bias": [0, 1]},
                           learning_rate=0.1, config={"name": "tiny"})
        bus = Bus([TensorBoard(tmp_path, histogram_freq=2, write_images=True)], model=model)
        bus.train_begin({"epochs": 3})
        train(bus, 3, batches=1)
        bus.train_end()
        bus.close()
        train_acc = acc(tmp_path / "train")
        histograms = train_acc.Histograms("dense/kernel/histogram")
        assert [h.step for h in histograms] == [0, 2]
        assert histograms[0].histogram_value.num == 6
        assert histograms[0].histogram_value.max == 5
        image = train_acc.Images("dense/kernel/image")[0]
        assert (image.height, image.width) == (2, 3)  # the taller side turned horizontal
        assert [i.step for i in train_acc.Images("dense/bias/image")] == [0, 2]
        config = train_acc.Tensors("model_config")[0].tensor_proto.string_val[0].decode()
        assert '"name": "tiny"' in config

    def test_images_without_histograms(self, tmp_path):
        """write_images with histogram_freq=0 draws every epoch (Keras would draw nothing)."""
        model = NumpyModel({"w": np.ones((2, 2))})
        bus = Bus([TensorBoard(tmp_path, write_images=True)], model=model)
        bus.train_begin()
        train(bus, 2, batches=1)
        bus.close()
        assert [i.step for i in acc(tmp_path / "train").Images("w/image")] == [0, 1]
        assert acc(tmp_path / "train").Tags()["histograms"] == []

    def test_decisions_as_text(self, tmp_path):
        """A learning-rate decision appears as a text entry at its epoch, with its reason."""
        run([HalveAtEpoch1(), TensorBoard(tmp_path)], epochs(loss=[0.5, 0.4, 0.3]),
            learning_rate=0.1)
        (entry,) = acc(tmp_path / "train").Tensors("decisions")
        text = entry.tensor_proto.string_val[0].decode()
        assert entry.step == 1
        assert "set_learning_rate" in text and "epoch 1 ended" in text and "0.05" in text
        assert scalars(tmp_path / "train", "epoch_learning_rate")[-1] == (2, f32(0.05))

    def test_evaluation_during_training(self, tmp_path):
        """test_end during training: evaluation_<metric>_vs_iterations at the batches done."""
        bus = Bus([TensorBoard(tmp_path)])
        bus.train_begin()
        train(bus, 1, batches=4)
        bus.test_begin()
        bus.test_end({"loss": 0.5})
        bus.train_end()
        bus.test_end({"loss": 0.1})  # outside training: no iteration to plot it at
        bus.close()
        assert scalars(tmp_path / "validation", "evaluation_loss_vs_iterations") == [(4, 0.5)]

    def test_embeddings(self, tmp_path):
        """Embedding matrices of the named layers every embeddings_freq epochs, with metadata."""
        labels = tmp_path / "words.tsv"
        labels.write_text("cat\ndog\nemu\n")
        table = np.arange(6.0).reshape(3, 2)
        model = NumpyModel({"embedding/embeddings": table, "dense/kernel": np.ones((2, 2))})
        log_dir = tmp_path / "logs"
        plugin = TensorBoard(log_dir, embeddings_freq=2, embeddings_layer_names=["embedding"],
                             embeddings_metadata={"embedding": str(labels)})
        bus = Bus([plugin], model=model)
        bus.train_begin()
        train(bus, 3, batches=1)
        bus.close()
        config = text_format.Parse((log_dir / "projector_config.pbtxt").read_text(),
                                   projector_config_pb2.ProjectorConfig())
        assert [e.tensor_name for e in config.embeddings] == ["embedding/embeddings:00000",
                                                              "embedding/embeddings:00002"]
        first = config.embeddings[0]
        assert np.array_equal(np.loadtxt(log_dir / first.tensor_path, delimiter="\t"), table)
        assert (log_dir / first.metadata_path).read_text() == "cat\ndog\nemu\n"

    @pytest.mark.parametrize("where", ["log_dir", "nowhere", "a folder"])
    def test_a_label_file_not_found_costs_not_the_matrices(self, tmp_path, monkeypatch, where):
        """Keras reads ``embeddings_metadata`` as a file name in the log directory and writes
        the config whether or not it is there. A label file found neither in the working
        directory nor there used to fail the whole write: no matrices, no config. Now the
        matrices and config are written, naming the file as given; missing, it is one sink
        failure, reported once."""
        monkeypatch.chdir(tmp_path)
        log_dir = tmp_path / "logs"
        if where == "log_dir":
            log_dir.mkdir()
            (log_dir / "words.tsv").write_text("cat\ndog\nemu\n")
        elif where == "a folder":  # not read, once or at every epoch
            (tmp_path / "words.tsv").mkdir()
        model = NumpyModel({"embedding/embeddings": np.ones((3, 2))})
        bus = Bus([TensorBoard(log_dir, embeddings_freq=1,
                               embeddings_metadata={"embedding": "words.tsv"})], model=model)
        bus.train_begin()
        if where == "log_dir":
            train(bus, 2, batches=1)
            bus.close()
        else:
            with pytest.warns(Warning, match=r"1 sink failure.*no label file 'words.tsv'"):
                train(bus, 2, batches=1)
                bus.close()
        config = text_format.Parse((log_dir / "projector_config.pbtxt").read_text(),
                                   projector_config_pb2.ProjectorConfig())
        assert [(e.tensor_name, e.metadata_path) for e in config.embeddings] == [
            ("embedding/embeddings:00000", "words.tsv"), ("embedding/embeddings:00001",
                                                           "words.tsv")]
        assert all(np.loadtxt(log_dir / e.tensor_path, delimiter="\t").shape == (3, 2)
                   for e in config.embeddings)

    def test_embeddings_named_by_the_adapter_s_paths(self, tmp_path):
        """An adapter whose keys are not the layers' names (KerasModel's "0.embedding/...")
        tells their paths with weight_paths(): layer names and metadata keys match those
        (Keras's layer name "word_embedding", its path "sequential/word_embedding"), and the
        files keep the stable key (a warning would fail the test: RunWarning is an error)."""

        class PathsModel(NumpyModel):
            def weight_paths(self):
                return {"0.embedding/embeddings": "sequential/word_embedding/embeddings",
                        "1.embedding/embeddings": "sequential/tags/embeddings",
                        "2.dense/kernel": "sequential/classifier/kernel"}

        words, tags = tmp_path / "words.tsv", tmp_path / "tags.tsv"
        words.write_text("cat\ndog\nemu\n")
        tags.write_text("a\nb\nc\n")
        model = PathsModel({"0.embedding/embeddings": np.ones((3, 2)),
                            "1.embedding/embeddings": np.zeros((3, 2)),
                            "2.dense/kernel": np.ones((2, 2))})
        log_dir = tmp_path / "logs"
        plugin = TensorBoard(log_dir, embeddings_freq=1,
                             embeddings_layer_names=["word_embedding", "sequential/tags"],
                             embeddings_metadata={"word_embedding": str(words),
                                                  "sequential/tags": str(tags)})
        bus = Bus([plugin], model=model)
        bus.train_begin()
        train(bus, 1, batches=1)
        bus.close()
        config = text_format.Parse((log_dir / "projector_config.pbtxt").read_text(),
                                   projector_config_pb2.ProjectorConfig())
        labels = {e.tensor_name: (log_dir / e.metadata_path).read_text()
                  for e in config.embeddings}
        assert labels == {"0.embedding/embeddings:00000": "cat\ndog\nemu\n",
                          "1.embedding/embeddings:00000": "a\nb\nc\n"}

    def test_an_unmatched_metadata_key_is_shown_with_the_paths(self, tmp_path):
        """A metadata key that matches no layer: the warning lists each matrix by its key and
        its path, the names the user can give."""

        class PathsModel(NumpyModel):
            def weight_paths(self):
                return {"0.embedding/embeddings": "sequential/embedding/embeddings"}

        model = PathsModel({"0.embedding/embeddings": np.ones((3, 2))})
        bus = Bus([TensorBoard(tmp_path, embeddings_freq=1,
                               embeddings_metadata={"embeding": "w.tsv"})], model=model)
        with pytest.warns(RunWarning, match=r"\['0.embedding/embeddings "
                                            r"\(sequential/embedding/embeddings\)'\]"):
            bus.train_begin()
            train(bus, 1, batches=1)
        bus.close()

    def test_embeddings_found_by_name(self, tmp_path):
        """Without layer names, every 2-D weight named .../embeddings is written."""
        model = NumpyModel({"words/embeddings": np.ones((4, 2)), "d/kernel": np.ones((2, 2))})
        bus = Bus([TensorBoard(tmp_path, embeddings_freq=1)], model=model)
        bus.train_begin()
        train(bus, 1, batches=1)
        bus.close()
        assert "words/embeddings:00000" in (tmp_path / "projector_config.pbtxt").read_text()
        assert "d/kernel" not in (tmp_path / "projector_config.pbtxt").read_text()

    def test_no_model_is_one_warning(self, tmp_path):
        """Histograms without a model adapter: one warning record, scalars still written."""
        with pytest.warns(RunWarning, match="histograms, images and embeddings need a model "
                                            "adapter") as shown:
            _, records = run([TensorBoard(tmp_path, histogram_freq=1)], epochs(loss=[1.0, 0.5]))
        assert len(shown) == 1
        warnings = [r for r in records if r.kind == "warning"]
        assert len(warnings) == 1 and "model adapter" in warnings[0].message
        assert len(scalars(tmp_path / "train", "epoch_loss")) == 2

    @pytest.mark.parametrize("kwargs", [{"update_freq": 0}, {"update_freq": "step"},
                                        {"histogram_freq": -1}, {"embeddings_freq": 1.5}])
    def test_bad_parameters(self, tmp_path, kwargs):
        """Bad frequencies are refused at construction, naming the parameter."""
        with pytest.raises(ConfigError, match=next(iter(kwargs))):
            TensorBoard(tmp_path, **kwargs)

    def test_nothing_is_created_before_training(self, tmp_path):
        """Making the plugin and the bus writes no file and starts no thread."""
        bus = Bus([TensorBoard(tmp_path / "logs")])
        assert not (tmp_path / "logs").exists()
        bus.close()

    def test_header_records_log_dir_as_text(self, tmp_path):
        """log_dir is recorded as a string, so the header stays plain data."""
        writer = RecordingWriter()
        Bus([TensorBoard(tmp_path)], log=writer).close()
        params = writer.records[0]["plugins"][0]["params"]
        assert params["log_dir"] == str(tmp_path) and params["update_freq"] == "epoch"


def timed_run(epoch_batches, update_freq=1, begins=True):
    """Records of a run whose times are given: ``epoch_batches`` lists, per epoch, each batch's
    (seconds before it starts, its duration); the epoch ends 0.5 s after its last batch."""
    records = [TrainBegin(seq=1, time=1000.0)]
    now, step = 1000.0, 0
    for epoch, batches in enumerate(epoch_batches):
        records.append(EpochBegin(epoch=epoch, seq=len(records) + 1, time=now))
        for batch, (gap, duration) in enumerate(batches):
            now += gap
            if begins:
                records.append(BatchBegin(epoch=epoch, batch=batch, step=step,
                                          seq=len(records) + 1, time=now))
            now += duration
            records.append(BatchEnd(epoch=epoch, batch=batch, step=step, seq=len(records) + 1,
                                    time=now, logs={"loss": 1.0}))
            step += 1
        now += 0.5
        records.append(EpochEnd(epoch=epoch, seq=len(records) + 1, time=now,
                                logs={"loss": 1.0}))
    records.append(TrainEnd(seq=len(records) + 1, time=now))
    return records


def feed(path, records, **params):
    """The plugin fed ``records`` as they were (as ``eventbus convert`` does)."""
    bus = Bus([TensorBoard(path, **params)])
    for record in records:
        bus.write_recorded(record)
    bus.close()


BATCHES = st.lists(st.lists(st.tuples(st.sampled_from([0.0, 0.125, 1.0]),
                                      st.sampled_from([0.0, 0.0625, 0.25, 2.0])),
                            max_size=4), min_size=1, max_size=3)


class TestKeras3Parameters:
    def test_positional_order_is_keras3s(self):
        """log_dir, histogram_freq, write_graph, write_images, write_steps_per_second,
        update_freq, profile_batch, embeddings_freq, embeddings_metadata: Keras 3's order."""
        positional = [p.name for p in inspect.signature(TensorBoard).parameters.values()
                      if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert positional == ["log_dir", "histogram_freq", "write_graph", "write_images",
                              "write_steps_per_second", "update_freq", "profile_batch",
                              "embeddings_freq", "embeddings_metadata"]
        plugin = TensorBoard("logs", 1, False, True, True, 5, 0, 2, "labels.tsv")
        assert (plugin.histogram_freq, plugin.write_graph, plugin.write_images,
                plugin.write_steps_per_second, plugin.update_freq, plugin.embeddings_freq,
                plugin.embeddings_metadata) == (1, False, True, True, 5, 2, "labels.tsv")

    def test_profile_batch_zero_is_off(self):
        """profile_batch=0, Keras's default, is accepted and recorded."""
        assert TensorBoard(profile_batch=0).get_config()["profile_batch"] == 0

    @pytest.mark.parametrize("value", [1, 5, (10, 20), "10,20", True, None, -1])
    def test_profile_batch_anything_else_is_an_error(self, value):
        """Profiling needs TensorFlow's profiler: any other value is a ConfigError naming it."""
        with pytest.raises(ConfigError, match="profiler") as info:
            TensorBoard(profile_batch=value)
        assert (info.value.plugin, info.value.field) == ("TensorBoard", "profile_batch")


class TestStepsPerSecond:
    def test_epoch_and_batch_values(self, tmp_path):
        """epoch_steps_per_second = batches / (epoch_end - epoch_begin); batch_steps_per_second
        = 1 / (batch_end - batch_begin), at the batch metrics' steps, from the events' times."""
        feed(tmp_path, timed_run([[(0.0, 0.5), (0.0, 0.25)], [(0.25, 0.5)]]),
             update_freq=1, write_steps_per_second=True)
        # Epoch 0: 2 batches in 0.5 + 0.25 + 0.5 s; epoch 1: 1 batch in 0.25 + 0.5 + 0.5 s.
        assert scalars(tmp_path / "train", "epoch_steps_per_second") == [(0, f32(1.6)),
                                                                         (1, f32(0.8))]
        assert scalars(tmp_path / "train", "batch_steps_per_second") == \
            [(1, 2.0), (2, 4.0), (3, 2.0)]

    def test_live_run(self, tmp_path):
        """On a live bus (times from the bus) both tags are written, positive, once a step."""
        bus = Bus([TensorBoard(tmp_path, update_freq=2, write_steps_per_second=True)])
        bus.train_begin({"epochs": 2})
        train(bus, 2)
        bus.train_end()
        bus.close()
        epoch = scalars(tmp_path / "train", "epoch_steps_per_second")
        batch = scalars(tmp_path / "train", "batch_steps_per_second")
        assert [s for s, _ in epoch] == [0, 1] and all(v > 0 for _, v in epoch)
        assert [s for s, _ in batch] == [2, 4, 6] and all(v > 0 for _, v in batch)

    def test_off_by_default_and_per_epoch_only_without_batch_updates(self, tmp_path):
        """Off by default; with update_freq='epoch' there is no batch value and the plugin
        subscribes to no batch hook at all."""
        feed(tmp_path / "off", timed_run([[(0.0, 0.5)]]))
        assert "epoch_steps_per_second" not in acc(tmp_path / "off" / "train").Tags()["scalars"]
        feed(tmp_path / "epoch", timed_run([[(0.0, 0.5)]]), write_steps_per_second=True)
        tags = acc(tmp_path / "epoch" / "train").Tags()["scalars"]
        assert "epoch_steps_per_second" in tags and "batch_steps_per_second" not in tags
        bus = Bus([TensorBoard(tmp_path, write_steps_per_second=True)])
        assert bus.subscribers("batch_begin") == [] and bus.subscribers("batch_end") == []
        bus.close()
        bus = Bus([TensorBoard(tmp_path, update_freq=3)])
        assert bus.subscribers("batch_begin") == []  # batch begins matter only to time them
        bus.close()

    @given(batches=BATCHES, every=st.integers(1, 3), begins=st.booleans())
    def test_values_follow_the_event_times(self, tmp_path_factory, batches, every, begins):
        """Property: for any batch timings, each epoch with a batch and a duration gets
        batches / seconds, and each update_freq-th batch with a begin and a duration gets
        1 / seconds; nothing else gets a value (no division by zero)."""
        path = tmp_path_factory.mktemp("sps")
        records = timed_run(batches, begins=begins)
        feed(path, records, update_freq=every, write_steps_per_second=True)
        expected_epochs, expected_batches, step = [], [], 0
        for epoch, epoch_batches in enumerate(batches):
            seconds = sum(g + d for g, d in epoch_batches) + 0.5
            if epoch_batches:
                expected_epochs.append((epoch, f32(len(epoch_batches) / seconds)))
            for _, duration in epoch_batches:
                step += 1
                if begins and duration > 0 and step % every == 0:
                    expected_batches.append((step, f32(1.0 / duration)))
        tags = acc(path / "train").Tags()["scalars"]
        found_epochs = scalars(path / "train", "epoch_steps_per_second") \
            if "epoch_steps_per_second" in tags else []
        found_batches = scalars(path / "train", "batch_steps_per_second") \
            if "batch_steps_per_second" in tags else []
        assert found_epochs == expected_epochs
        assert found_batches == expected_batches


def crash_after(log, epoch):
    lines = log.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        record = json.loads(line)
        if record["kind"] == "epoch_end" and record["epoch"] == epoch:
            log.write_text("".join(lines[:i + 1]))
            return
    raise AssertionError(f"no epoch_end {epoch}")


def crashed_run(log_dir: Path, log: Path, epochs_: int, *, kept: int, **bus: Any) -> None:
    """A run of ``epochs_`` epochs with TensorBoard at ``log_dir``, its log then cut back after
    epoch ``kept``: the event files are ahead of the log, as a crash leaves them."""
    run_bus = Bus([TensorBoard(log_dir)], log=log, **bus)
    run_bus.train_begin({"epochs": epochs_})
    train(run_bus, epochs_)
    run_bus.close()
    crash_after(log, kept)


def crash_and_resume(plugins, log_dir: Path, data, total: int,
                     damage=lambda log_dir, data: None) -> int:
    """A run of ``total`` epochs killed after some, its log cut back to an earlier epoch_end
    (the event files may be ahead of it), ``damage``-d, then resumed and run to its end with
    the losses shifted by 10 from the resume on; returns the last epoch the log kept."""
    log = log_dir.parent / "run.jsonl"
    done = data.draw(st.integers(1, total), label="epochs before the crash")
    kept = data.draw(st.integers(0, done - 1), label="last epoch the log kept")
    model = NumpyModel({"w": np.ones(3)}, learning_rate=0.1)
    bus = Bus(plugins(), log=log, model=model)
    bus.train_begin({"epochs": total})
    train(bus, done)
    bus.close()
    crash_after(log, kept)
    damage(log_dir, data)

    bus = Bus(plugins(), log=log, model=model, resume=True)
    assert bus.initial_epoch == kept + 1
    bus.train_begin({"epochs": total})
    train(bus, total, start=bus.initial_epoch, shift=10.0)
    bus.train_end()
    bus.close()
    return kept


class TestResume:
    @examples(FILES)  # event files written twice and read back
    @given(total=st.integers(2, 4), data=st.data())
    # The model is there for the histograms; nothing restores its weights, which is not the
    # point here (tests/sinks/test_checkpoint_restore.py is about that).
    @pytest.mark.filterwarnings("ignore:bus. resume. the weights were not restored")
    def test_resumed_run_writes_no_step_twice(self, tmp_path_factory, total, data):
        """Property: after a crash and a resume, every tag has each step once, newest values."""
        log_dir = tmp_path_factory.mktemp("tb") / "logs"
        kept = crash_and_resume(lambda: [TensorBoard(log_dir, update_freq=1, histogram_freq=1)],
                                log_dir, data, total)

        train_acc = acc(log_dir / "train")
        epoch_loss = [(e.step, e.value) for e in train_acc.Scalars("epoch_loss")]
        assert [s for s, _ in epoch_loss] == list(range(total))
        assert all(v == f32(1.0 / (s + 1) + (10.0 if s > kept else 0.0)) for s, v in epoch_loss)
        batch_steps = [e.step for e in train_acc.Scalars("batch_loss")]
        assert batch_steps == list(range(1, total * 3 + 1))
        assert [h.step for h in train_acc.Histograms("w/histogram")] == list(range(total))
        validation = [e.step for e in acc(log_dir / "validation").Scalars("epoch_loss")]
        assert validation == list(range(total))

    @pytest.mark.filterwarnings("ignore:bus. resume. the weights were not restored")
    def test_a_cut_a_full_disk_refused_is_made_at_a_later_flush(self, tmp_path, monkeypatch):
        """The resume's rewrite of the crashed attempt's event file needs room for a copy; a
        disk full for that moment left the abandoned values in it for good, and TensorBoard
        showed the resumed steps twice. The rewrite is tried again at the next flush; the
        fault is reported once."""
        import errno

        import sinks.tensorboard as tensorboard_sink

        log_dir = tmp_path / "logs"
        log = tmp_path / "run.jsonl"
        model = NumpyModel({"w": np.ones(3)}, learning_rate=0.1)
        crashed_run(log_dir, log, 4, kept=1, model=model)
        real, calls = tensorboard_sink.write_replacing, []

        def full_once(*args, **kwargs):
            calls.append(args[0])
            if len(calls) == 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(*args, **kwargs)

        monkeypatch.setattr(tensorboard_sink, "write_replacing", full_once)
        bus = Bus([TensorBoard(log_dir)], log=log, model=model, resume=True)
        bus.train_begin({"epochs": 4})
        with pytest.warns(Warning, match=r"1 sink failure.*truncate.*tried again at each "
                                         r"flush"):
            train(bus, 4, start=bus.initial_epoch, shift=10.0)
            bus.train_end()
            bus.close()
        epoch_loss = [(e.step, e.value) for e in acc(log_dir / "train").Scalars("epoch_loss")]
        assert [s for s, _ in epoch_loss] == [0, 1, 2, 3]
        assert all(v == f32(1.0 / (s + 1) + (10.0 if s > 1 else 0.0)) for s, v in epoch_loss)
        assert calls.count(calls[0]) == 2  # the same file, rewritten later

    @pytest.mark.filterwarnings("ignore:bus. resume. the weights were not restored")
    def test_a_cut_the_disk_never_allows_is_given_up_at_close_and_said(self, tmp_path,
                                                                        monkeypatch):
        """A disk full to the end: close tries for a while, then says which file keeps the
        values past the resume point."""
        import errno

        import eventbus.sink
        import sinks.tensorboard as tensorboard_sink

        log_dir, log = tmp_path / "logs", tmp_path / "run.jsonl"
        crashed_run(log_dir, log, 3, kept=0)

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(tensorboard_sink, "write_replacing", full)
        monkeypatch.setattr(eventbus.sink, "CLOSE_RETRY_SECONDS", 0.1)
        bus = Bus([TensorBoard(log_dir)], log=log, resume=True)
        bus.train_begin({"epochs": 3})
        train(bus, 3, start=bus.initial_epoch)
        bus.train_end()
        with pytest.warns(Warning, match=r"the values past the resume point \(tried again at "
                                         r"close\) could not be written"):
            bus.close()

    @pytest.mark.filterwarnings("ignore:bus. resume. the weights were not restored")
    def test_a_cut_refused_for_good_after_a_full_disk_is_said_once_not_retried(
            self, tmp_path, monkeypatch):
        """A full disk, then a refusal that will not pass (no permission): the file left the
        list of cuts to make once the refusal came. It stayed on it, and every flush read the
        file again and recorded the same failure."""
        import errno

        import sinks.tensorboard as tensorboard_sink

        log_dir, log = tmp_path / "logs", tmp_path / "run.jsonl"
        crashed_run(log_dir, log, 6, kept=0)
        calls = []

        def refused(path, *args, **kwargs):
            calls.append(path)
            raise OSError(errno.ENOSPC if calls.count(path) == 1 else errno.EACCES, "refused")

        monkeypatch.setattr(tensorboard_sink, "write_replacing", refused)
        bus = Bus([TensorBoard(log_dir)], log=log, resume=True)
        bus.train_begin({"epochs": 6})
        with pytest.warns(Warning, match="sink failure"):
            train(bus, 6, start=bus.initial_epoch)
            bus.train_end()
            bus.close()
        cut = [f for f in bus.failures if f.event == "truncate"]
        files = set(calls)  # the crashed attempt's train and validation event files
        assert len(files) == 2
        assert all(calls.count(path) == 2 for path in files)  # for want of room, then for good
        assert len(cut) == 2 * len(files)

    @pytest.mark.filterwarnings("ignore:bus. resume. the weights were not restored")
    def test_a_cut_tried_again_is_made_only_on_the_file_found(self, tmp_path, monkeypatch):
        """Between a cut a full disk refused and its next try, the run folder was swapped for
        a link to another run's: the cut, tried again by its path, rewrote the other run's
        event file through it. It is tried only on the file found, reached as it was."""
        import errno
        import shutil

        import sinks.tensorboard as tensorboard_sink

        log_dir, log = tmp_path / "logs", tmp_path / "run.jsonl"
        crashed_run(log_dir, log, 4, kept=0)
        victim = tmp_path / "other-run"
        real, calls = tensorboard_sink.write_replacing, []

        def full_then_swapped(path, *args, **kwargs):
            calls.append(path)
            if len(calls) == 1:  # the train file's cut: refused, and the folder swapped
                shutil.copytree(log_dir / "train", victim)
                shutil.rmtree(log_dir / "train")
                (log_dir / "train").symlink_to(victim, target_is_directory=True)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(path, *args, **kwargs)

        monkeypatch.setattr(tensorboard_sink, "write_replacing", full_then_swapped)
        bus = Bus([TensorBoard(log_dir)], log=log, resume=True)
        steps_before = [e.step for e in acc(victim).Scalars("epoch_loss")]
        bus.train_begin({"epochs": 4})
        with pytest.warns(Warning, match="not the event file the resume found"):
            train(bus, 4, start=bus.initial_epoch)
            bus.train_end()
            bus.close()
        assert steps_before == [0, 1, 2, 3]
        assert [e.step for e in acc(victim).Scalars("epoch_loss")][:4] == [0, 1, 2, 3]
        assert calls[0].parent.name == "train" and calls.count(calls[0]) == 1

    def test_steps_per_second_after_a_resume(self, tmp_path):
        """A resumed run writes each step of the steps-per-second tags once too."""
        log_dir, log = tmp_path / "logs", tmp_path / "run.jsonl"
        bus = Bus([TensorBoard(log_dir, update_freq=1, write_steps_per_second=True)], log=log)
        bus.train_begin({"epochs": 4})
        train(bus, 3)
        bus.close()
        crash_after(log, 1)  # epoch 2's row was written, its epoch_end never reached the log
        bus = Bus([TensorBoard(log_dir, update_freq=1, write_steps_per_second=True)], log=log,
                  resume=True)
        assert bus.initial_epoch == 2
        bus.train_begin({"epochs": 4})
        train(bus, 4, start=bus.initial_epoch)
        bus.train_end()
        bus.close()
        train_acc = acc(log_dir / "train")
        assert [e.step for e in train_acc.Scalars("epoch_steps_per_second")] == [0, 1, 2, 3]
        assert [e.step for e in train_acc.Scalars("batch_steps_per_second")] == \
            list(range(1, 13))


def steps_in_file_order(run_dir: Path) -> dict[str, list[int]]:
    """Per tag, the steps of its values as TensorBoard's server reads them: file after file in
    name order, record after record."""
    from tensorboardX.proto import event_pb2

    steps: dict[str, list[int]] = {}
    for path in sorted(run_dir.glob("*tfevents*")):
        for data in iter_event_file(path):
            event = event_pb2.Event.FromString(data)
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


def cut_events(path: Path, keep: int) -> None:
    """The file as a crash leaves it: its first ``keep`` records, the rest never written."""
    records = list(iter_event_file(path))
    path.write_bytes(frame_records(records[:keep]))


class TestWriteBack:
    @examples(FILES)  # event files written, cut, written back and read back
    @given(total=st.integers(2, 4), data=st.data())
    @pytest.mark.filterwarnings("ignore:bus. resume. the weights were not restored")  # as above
    def test_a_resume_writes_back_what_the_files_lost(self, tmp_path_factory, total, data):
        """Property: event files that lost any tail in a crash get it back on resume, from the
        event log: every tag has each step once with the logged value, and the steps of a tag
        only go up file after file (TensorBoard's server drops values when a step goes back)."""
        log_dir = tmp_path_factory.mktemp("tb") / "logs"

        def plugins():
            return [TensorBoard(log_dir, update_freq=1, write_steps_per_second=True),
                    HalveAtEpoch1()]

        def lose_tails(log_dir, data):
            for run_dir in (log_dir / "train", log_dir / "validation"):
                (path,) = run_dir.glob("*tfevents*")
                size = len(list(iter_event_file(path)))
                cut_events(path, data.draw(st.integers(1, size), label=f"{run_dir.name} kept"))

        kept = crash_and_resume(plugins, log_dir, data, total, lose_tails)

        train_acc = acc(log_dir / "train")
        epoch_loss = [(e.step, e.value) for e in train_acc.Scalars("epoch_loss")]
        assert epoch_loss == [(s, f32(1.0 / (s + 1) + (10.0 if s > kept else 0.0)))
                              for s in range(total)]
        assert [e.step for e in train_acc.Scalars("batch_loss")] == list(range(1, total * 3 + 1))
        assert [e.step for e in train_acc.Scalars("epoch_steps_per_second")] == \
            list(range(total))
        assert [e.step for e in acc(log_dir / "validation").Scalars("epoch_loss")] == \
            list(range(total))
        texts = {tag: [(e.step, e.tensor_proto.string_val[0].decode()) for e in
                       train_acc.Tensors(tag)] for tag in ("decisions", "model_config")}
        assert [step for step, _ in texts["model_config"]] == [0]
        assert [(step, "set_learning_rate" in text) for step, text in texts["decisions"]] == \
            [(1, True)]
        for run_dir in (log_dir / "train", log_dir / "validation"):
            for tag, steps in steps_in_file_order(run_dir).items():
                assert steps == sorted(set(steps)), (run_dir.name, tag)


class TestInterrupted:
    def texts(self, log_dir: Path) -> dict[str, list[int]]:
        train = acc(log_dir / "train")
        tags = train.Tags()["tensors"]
        return {tag: [e.step for e in train.Tensors(tag)] if tag in tags else []
                for tag in ("decisions", "model_config")}

    @pytest.mark.filterwarnings("ignore:bus. resume. the weights were not restored")
    def test_ctrl_c_before_train_begin_writes_the_model_config_once(self, tmp_path):
        """The log holds only its header: the resume writes the model's configuration (open)
        and so does the loop's train_begin; written back once, it is passed over the second
        time."""
        log, log_dir = tmp_path / "run.jsonl", tmp_path / "tb"
        model = NumpyModel({"w": np.zeros(3)}, learning_rate=0.1)
        with pytest.raises(KeyboardInterrupt), \
                Bus([TensorBoard(log_dir)], log=log, model=model, resume=True):
            raise KeyboardInterrupt
        with Bus([TensorBoard(log_dir)], log=log, model=model, resume=True) as bus:
            bus.train_begin({"epochs": 2})  # the log has none: the loop's is published
            train(bus, 2)
            bus.train_end()
        assert self.texts(log_dir)["model_config"] == [0]

    @pytest.mark.filterwarnings("ignore:bus. resume. the weights were not restored")
    def test_ctrl_c_while_a_resume_catches_up_writes_no_half_step(self, tmp_path,
                                                                 monkeypatch):
        """Interrupted while the resume writes a step's decisions back: TensorBoard, only
        caught up, never opened, writes no half table of that step at close (the next resume
        wrote the whole one after it: the step twice, out of order)."""
        log, log_dir = tmp_path / "run.jsonl", tmp_path / "tb"

        def plugins() -> list:
            return [TensorBoard(log_dir), HalveAtEpoch1(), HalveAtEpoch1()]

        bus = Bus(plugins(), log=log, learning_rate=0.1)
        train(bus, 3)
        bus.close()
        for path in (log_dir / "train").glob("*tfevents*"):
            path.unlink()  # a crash kept everything out of the files
        real, seen = TensorBoard.catch_up, []

        def cut(self, record, run):
            if record["kind"] == "set_learning_rate":
                seen.append(record["seq"])
                if len(seen) == 2:  # the step's second decision
                    raise KeyboardInterrupt
            return real(self, record, run)

        monkeypatch.setattr(TensorBoard, "catch_up", cut)
        with pytest.raises(KeyboardInterrupt):
            Bus(plugins(), log=log, resume=True)
        monkeypatch.undo()
        Bus(plugins(), log=log, resume=True).close()
        assert self.texts(log_dir)["decisions"] == [1]


WORKER = """
import sys
import numpy as np
from eventbus import Bus, NumpyModel
from plugins import TensorBoard

out = sys.argv[1]
bus = Bus([TensorBoard(out + "/logs")], log=out + "/run.jsonl",
          model=NumpyModel({"w": np.ones(3)}, learning_rate=0.1))
bus.train_begin({"epochs": 100})
for epoch in range(100):
    bus.epoch_begin(epoch)
    bus.epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "val_loss": 2.0 / (epoch + 1)})
    print(f"epoch_end {epoch}", flush=True)
    if epoch == 2:
        sys.stdin.readline()  # killed here
"""


class TestDurability:
    def test_an_epoch_is_in_the_files_when_epoch_end_returns(self, tmp_path):
        """SIGKILLed right after its third epoch ends, a run's event files hold all three
        epochs, as its event log does: nothing a finished epoch wrote waits in memory (the first
        text of a run, the model's configuration, never waits for tensorboardX's import)."""
        proc = subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            for epoch in range(3):
                assert proc.stdout.readline() == f"epoch_end {epoch}\n"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            proc.kill()
            proc.stdin.close()
            proc.stdout.close()
        assert [e.step for e in acc(tmp_path / "logs" / "train").Scalars("epoch_loss")] == \
            [0, 1, 2]
        assert [e.step for e in acc(tmp_path / "logs" / "validation").Scalars("epoch_loss")] \
            == [0, 1, 2]
        assert len(acc(tmp_path / "logs" / "train").Tensors("model_config")) == 1


class TestNoTrainBegin:
    def test_a_fresh_loop_without_train_begin_keeps_earlier_event_files(self, tmp_path):
        """Only a run the bus resumed drops what an earlier attempt wrote (Keras never does)."""
        with Bus([TensorBoard(tmp_path)]) as bus:
            train(bus, 2)
        before = scalars(tmp_path / "train", "epoch_loss")
        with Bus([TensorBoard(tmp_path)]) as bus:
            assert not bus.resumed
            train(bus, 2, shift=1.0)
        after = scalars(tmp_path / "train", "epoch_loss")
        assert len(after) == 2 * len(before) and all(point in after for point in before)


# A run into a log directory shared with another run, killed after its event log kept epoch
# 2's end and before its event file got epoch 2's scalars: the crash window between the two
# flushes, met at the moment the scalars reach the file.
KILLED_BETWEEN_FLUSHES = """
import os
import signal
import sys
import time

import sinks.tensorboard as tensorboard_sink
from eventbus import Bus
from plugins import TensorBoard
from sinks.tensorboard import parse_event

log, log_dir = sys.argv[1], sys.argv[2]
real_write = tensorboard_sink._RunFile.write


def write(self, records):
    for record in records:
        step, values, _ = parse_event(record)
        if step == 2 and any(tag == "epoch_loss" for tag, _, _ in values):
            # The writer's thread can get here before the log's flush of that epoch end:
            # the kill waits for it, to fall between the two flushes.
            deadline = time.monotonic() + 60
            while open(log, "rb").read().count(b'"kind":"epoch_end"') < 3 and \
                    time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)
    return real_write(self, records)


tensorboard_sink._RunFile.write = write
with Bus([TensorBoard(log_dir)], log=log, run_id="run-b", resume=True) as bus:
    bus.train_begin({"epochs": 6})
    for epoch in range(6):
        bus.epoch_begin(epoch)
        bus.epoch_end(epoch, {"loss": 200.0 + epoch})
"""


class TestRunsSharingALogDir:
    @pytest.mark.filterwarnings("ignore:bus. resume. the weights were not restored")
    def test_a_resume_cuts_and_reads_back_only_its_own_run_s_files(self, tmp_path):
        """Run A finishes into a log directory; run B, a fresh run, adds its files beside A's
        (as Keras does), is SIGKILLed between its log's flush of epoch 2 and its files', and
        is resumed. The resume's cut rewrote A's file too (A lost steps 3 to 5), and its
        write-back counted A's step 5 as B's, so B's epoch 2 was never written back. Each
        file now names its run, and a resume cuts and reads only its own run's."""
        log_dir = tmp_path / "tb"
        with Bus([TensorBoard(log_dir)], log=tmp_path / "a.jsonl", run_id="run-a") as bus:
            bus.train_begin({"epochs": 6})
            for epoch in range(6):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 100.0 + epoch})
            bus.train_end()
        (a_file,) = (log_dir / "train").glob("*tfevents*")
        a_bytes = a_file.read_bytes()

        killed = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_FLUSHES,
                                 str(tmp_path / "b.jsonl"), str(log_dir)], timeout=120)
        assert killed.returncode == -signal.SIGKILL
        with Bus([TensorBoard(log_dir)], log=tmp_path / "b.jsonl", resume=True) as bus:
            assert bus.run_id == "run-b" and bus.initial_epoch == 3
            bus.train_begin({"epochs": 6})
            for epoch in range(bus.initial_epoch, 6):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 200.0 + epoch})
            bus.train_end()

        assert a_file.read_bytes() == a_bytes
        assert ".run_id=run-a" in a_file.name
        b_files = sorted(set((log_dir / "train").glob("*tfevents*")) - {a_file})
        assert len(b_files) == 2 and all(".run_id=run-b" in p.name for p in b_files)
        b_loss = sorted((e.step, e.value) for path in b_files
                        for e in acc(path).Scalars("epoch_loss"))
        assert b_loss == [(epoch, 200.0 + epoch) for epoch in range(6)]
