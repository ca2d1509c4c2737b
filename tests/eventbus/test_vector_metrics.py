"""Vector metrics (Keras's ``F1Score``: one value per class): taken from the loop as 1-D arrays,
lists, tuples and tensors, stored as lists of floats in both logs, read back and replayed; a
monitor given one says so. CSV and RemoteMonitor: tests/plugins/test_vector_metrics_out.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, MetricValueError, PluginError, read_log, replay
from eventbus import records as r
from eventbus.jsonl import JsonlWriter
from eventbus.metrics import coerce_logs, to_metric
from eventbus.parquet import ParquetWriter
from plugins import EarlyStopping, History, ModelCheckpoint, ReduceLROnPlateau

from hypothesis_profiles import FILES, examples
from record_strategies import any_record, same, vector_logs

NAN, INF = math.nan, math.inf
HEADER = r.Header(run_id="run", seq=0, time=1.0, created="2026-01-01T00:00:00+00:00",
                  library="eventbus test", meta={"learning_rate": 0.1})


class TestValues:
    @pytest.mark.parametrize("value, expected", [
        (np.arange(3), [0.0, 1.0, 2.0]),
        (np.array([0.5, 0.25], dtype=np.float32), [0.5, 0.25]),
        ([1, np.float32(0.5), np.array(2.0), torch.tensor(3.0)], [1.0, 0.5, 2.0, 3.0]),
        ((0.5, 0.25), [0.5, 0.25]),
        (torch.tensor([0.5, 0.25], requires_grad=True), [0.5, 0.25]),
        (torch.tensor([1, 2], dtype=torch.int64), [1.0, 2.0]),
        (np.array([NAN, INF, -INF]), [NAN, INF, -INF]),
        (np.array([]), []),
        ([], []),
    ])
    def test_a_1d_value_becomes_a_list_of_floats(self, value, expected):
        """1-D arrays, tensors (torch duck-typed, not imported by the bus), lists and tuples of
        numbers become lists of plain floats; NaN and infinities are kept."""
        got = to_metric(value, "f1", "epoch_end")
        assert type(got) is list and all(type(item) is float for item in got)
        assert same(got, expected)

    @pytest.mark.parametrize("value", [
        np.array([0.75]), np.array([[0.75]]), torch.tensor([0.75]), torch.tensor([[0.75]]),
        [0.75], (np.float64(0.75),)])
    def test_one_element_is_its_float(self, value):
        """A value of one element is its float, as Keras's ``float(value)`` makes it."""
        got = to_metric(value, "f1", "epoch_end")
        assert type(got) is float and got == 0.75

    @pytest.mark.parametrize("value", [np.ones((2, 3)), torch.ones(2, 2), np.ones((1, 2))])
    def test_more_dimensions_are_refused_with_the_shape(self, value):
        with pytest.raises(MetricValueError, match=r"logs\['f1'\] must be a scalar or a 1-D "
                                                   r"vector; got \w+ of shape \(\d, \d\)") as info:
            coerce_logs({"f1": value}, "epoch_end")
        assert info.value.event == "epoch_end" and info.value.field == "logs.f1"

    @pytest.mark.parametrize("value, type_name", [
        ([0.5, True], "bool"), ([0.5, "0.5"], "str"), ([0.5, None], "NoneType"),
        ([0.5, [1.0]], "list"), ([0.5, 1 + 2j], "complex")])
    def test_a_bad_element_is_named_by_its_index(self, value, type_name):
        """The error names the metric, the element, the event and the plugin that gave it."""
        with pytest.raises(MetricValueError) as info:
            coerce_logs({"f1": value}, "batch_end", plugin="BaseLogger")
        message = str(info.value)
        assert "logs['f1'][1]" in message and type_name in message
        assert "batch_end" in message and "BaseLogger" in message
        assert info.value.field == "logs.f1[1]" and info.value.plugin == "BaseLogger"

    def test_an_array_whose_elements_cannot_be_read_is_named(self):
        class Remote:  # a tensor on a device that is gone
            ndim = 1
            shape = (2,)

            def tolist(self):
                raise RuntimeError("device lost")

        with pytest.raises(MetricValueError, match=r"logs\['f1'\].*Remote.*device lost"):
            coerce_logs({"f1": Remote()}, "epoch_end")

    def test_records_validate_vectors_by_the_same_rules(self):
        assert r.EpochEnd(epoch=0, logs={"f1": np.arange(2)}).logs == {"f1": [0.0, 1.0]}
        with pytest.raises(ValueError, match=r"logs\['f1'\]\[0\]"):
            r.EpochEnd(epoch=0, logs={"f1": ["x", 1.0]})


def train(bus: Bus, epochs: int = 3) -> None:
    """Keras's loop with F1Score: vectors on batch_end, epoch_end and the evaluation's logs."""
    bus.train_begin({"epochs": epochs, "steps": 2})
    for epoch in range(epochs):
        bus.epoch_begin(epoch)
        for batch in range(2):
            bus.batch_begin(batch)
            bus.batch_end(batch, {"loss": 1.0 / (epoch + 1),
                                  "f1": np.array([0.1 * epoch, 0.5], dtype=np.float32)})
        bus.test_begin()
        bus.test_batch_end(0, {"loss": 2.0, "f1": torch.tensor([0.25, NAN])})
        bus.test_end({"loss": 2.0, "f1": [0.25, NAN]})
        bus.epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "f1": np.array([0.1 * epoch, 0.5]),
                              "val_loss": 2.0 - epoch / 10, "val_f1": (0.25, INF)})
        if bus.stop_training:
            break
    bus.train_end()


class TestOnTheBus:
    @pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
    def test_vectors_reach_plugins_and_both_logs_as_lists(self, tmp_path, fmt):
        """model.fit with F1Score no longer fails: the vectors reach History and the log, and
        the typed readers give them back as lists, validated or not."""
        history = History()
        path = tmp_path / f"run.{fmt}"
        bus = Bus([history], log=path)
        train(bus)
        bus.close()
        assert history.history["f1"] == [[0.0, 0.5], [0.1, 0.5], [0.2, 0.5]]
        assert history.history["val_f1"] == [[0.25, INF]] * 3
        for validate in (False, True):
            records = list(read_log(path, validate=validate))
            batch = next(x for x in records if x.kind == "batch_end")
            assert batch.logs["f1"] == [0.0, 0.5]
            test_batch = next(x for x in records if x.kind == "test_batch_end")
            assert test_batch.logs["f1"][0] == 0.25 and math.isnan(test_batch.logs["f1"][1])
            ends = [x.logs for x in records if x.kind == "epoch_end"]
            assert [logs["f1"] for logs in ends] == history.history["f1"]
            assert all(logs["val_f1"] == [0.25, INF] for logs in ends)

    @pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
    def test_a_run_with_vectors_replays_to_the_same_decisions(self, tmp_path, fmt):
        """Plugins that monitor a number decide beside vector metrics, live and in replay."""
        path = tmp_path / f"run.{fmt}"
        bus = Bus([EarlyStopping(monitor="val_loss", mode="max", patience=1)], log=path)
        train(bus)
        bus.close()
        result = replay(path, verify=True)
        assert result.ok and [d.kind for d in result.decisions] == ["stop_training"]


def run_of(records: st.SearchStrategy) -> st.SearchStrategy[list[r.Record]]:
    return st.lists(st.integers(), max_size=12).flatmap(
        lambda n: st.tuples(*[records(seq=i + 1) for i in range(len(n))]).map(
            lambda rest: [HEADER, *rest]))


runs = run_of(lambda seq: any_record(seq, metrics=vector_logs))
tmp_settings = examples(FILES, function_fixture=True)
#: Each example writes several segments and merges them at close (about 150 ms an example).
segment_settings = examples(0.3, function_fixture=True)


class TestRoundTrip:
    @tmp_settings
    @given(records=runs)
    def test_jsonl_reads_vectors_back_equal(self, tmp_path_factory, records):
        """record -> JSON Lines -> record is the identity with vectors, NaN and inf in them."""
        path = tmp_path_factory.mktemp("v") / "events.jsonl"
        with JsonlWriter(path) as writer:
            for record in records:
                writer.write(record.model_dump())
        for validate in (False, True):
            back = list(read_log(path, validate=validate))
            assert len(back) == len(records)
            assert all(same(a, b) for a, b in zip(back, records)), (back, records)

    @segment_settings
    @given(records=runs, chunk=st.sampled_from([1, 2, 64]),
           flushes=st.sets(st.integers(0, 12), max_size=4))
    def test_parquet_reads_vectors_back_equal(self, tmp_path_factory, records, chunk,
                                              flushes):
        """record -> Parquet -> record is the identity with vectors, also where a metric is a
        float in one chunk or segment and a vector in another (one column of lists, merged at
        close)."""
        path = tmp_path_factory.mktemp("v") / "events.parquet"
        with ParquetWriter(path, chunk_records=chunk, segment_records=3) as writer:
            for i, record in enumerate(records):
                writer.write(record.model_dump())
                if i in flushes:
                    writer.flush()
        assert len(list(path.glob("seg-*.parquet"))) == 1
        for validate in (False, True):
            back = list(read_log(path, validate=validate))
            assert len(back) == len(records)
            assert all(same(a, b) for a, b in zip(back, records)), (back, records)


class TestMonitors:
    @pytest.mark.parametrize("make", [
        lambda tmp: EarlyStopping(monitor="val_f1", mode="max"),
        lambda tmp: ReduceLROnPlateau(monitor="val_f1", mode="max"),
        lambda tmp: ModelCheckpoint(str(tmp / "m.h5"), monitor="val_f1", mode="max",
                                    save_best_only=True),
    ], ids=["EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint"])
    def test_a_monitored_vector_is_an_error_naming_metric_event_and_plugin(self, tmp_path,
                                                                           make):
        plugin = make(tmp_path)
        name = type(plugin).__name__
        bus = Bus([plugin], learning_rate=0.1)
        with pytest.raises(PluginError) as info:
            train(bus)
        message = str(info.value)
        assert f"plugin {name!r} failed on epoch_end" in message
        assert "monitor='val_f1' is a vector metric (2 values: [0.25, inf])" in message
        assert info.value.plugin == name and info.value.event == "epoch_end"
        assert isinstance(info.value.__cause__, MetricValueError)
        assert info.value.__cause__.field == "logs.val_f1"
        bus.close()

    def test_a_checkpoint_every_n_batches_names_batch_end(self, tmp_path):
        plugin = ModelCheckpoint(str(tmp_path / "m.h5"), monitor="f1", mode="max",
                                 save_best_only=True, save_freq=2)
        bus = Bus([plugin])
        with pytest.raises(PluginError, match=r"failed on batch_end .*monitor='f1' is a "
                                              r"vector metric"):
            train(bus)
        bus.close()
