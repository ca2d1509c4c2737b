"""Vector metrics where they go out: CSVLogger writes them as Keras's own CSVLogger does (read
back with the csv module, compared with Keras's file), RemoteMonitor and the HTTP record stream
send them as JSON lists, BaseLogger averages them element by element. How the bus takes them:
tests/eventbus/test_vector_metrics.py."""

from __future__ import annotations

import csv
import json
import math
import os
from urllib.parse import parse_qs

import numpy as np
import orjson
import pytest

from eventbus import Bus, PluginError
from eventbus.records import decode_nonfinite
from plugins import BaseLogger, CSVLogger, History, RemoteMonitor
from sinks.csv import format_value
from sinks.http import HttpRecordSink

NAN, INF = math.nan, math.inf
#: Epoch logs as Keras's fit gives them with F1Score(average=None): a float32 array per class.
#: Values float32 holds exactly, so Keras's ``str`` of each element and our ``repr`` of its
#: float agree (see docs/plugins/csv_logger.md for the others).
EPOCHS = [
    {"loss": 0.5, "f1": np.array([0.5, 0.25, NAN], dtype=np.float32), "val_loss": 0.75,
     "val_f1": np.array([0.125, INF], dtype=np.float32), "one": np.array([3.0])},
    {"loss": 0.25, "f1": np.array([0.75, 0.5, 0.0], dtype=np.float32), "val_loss": 0.5,
     "val_f1": np.array([-INF, 1.0], dtype=np.float32), "one": np.array([2.5])},
]


def rows(path, separator=","):
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.reader(file, delimiter=separator))


class TestCsv:
    def test_a_vector_cell_is_keras_text(self):
        """Keras's handle_value: ``"[a, b, c]"`` with the quotes; each element a float's text."""
        assert format_value([0.5, NAN, INF, -INF]) == '"[0.5, nan, inf, -inf]"'
        assert format_value([]) == '"[]"'

    @pytest.mark.parametrize("separator", [",", ";"])
    def test_the_file_is_keras_csvloggers(self, tmp_path, separator):
        """The same epoch logs through Keras 3's own CSVLogger and through ours on a bus give
        the same rows, read back by the csv module, and the same bytes. (Keras is imported
        here as the Keras bridge's tests import it: the suite pays for it once.)"""
        os.environ.setdefault("KERAS_BACKEND", "torch")
        keras = pytest.importorskip("keras")
        theirs = tmp_path / "keras.csv"
        callback = keras.callbacks.CSVLogger(str(theirs), separator=separator)
        callback.on_train_begin()
        for epoch, logs in enumerate(EPOCHS):
            # A one-element array is its float on the bus (Keras's fit, with NumPy 2, keeps it
            # an array and writes "[3.0]": a documented difference).
            callback.on_epoch_end(epoch, {k: (v.item() if k == "one" else v)
                                          for k, v in logs.items()})
        callback.on_train_end()

        ours = tmp_path / "ours.csv"
        bus = Bus([CSVLogger(ours, separator=separator)])
        bus.train_begin({"epochs": 2})
        for epoch, logs in enumerate(EPOCHS):
            bus.epoch_begin(epoch)
            bus.epoch_end(epoch, logs)
        bus.train_end()
        bus.close()
        assert rows(ours, separator) == rows(theirs, separator)
        assert rows(ours, separator)[1][1] == '"[0.5, 0.25, nan]"'
        assert ours.read_bytes() == theirs.read_bytes()  # its "\r\n" line ends too

    def test_a_vector_first_seen_later_widens_the_table(self, tmp_path):
        """A vector metric new in a later epoch widens the header as a float one does; the
        rewrite keeps the earlier vector cells as they were."""
        path = tmp_path / "log.csv"
        bus = Bus([CSVLogger(path)])
        bus.train_begin({"epochs": 2})
        bus.epoch_begin(0)
        bus.epoch_end(0, {"f1": [0.5, 0.25]})
        bus.epoch_begin(1)
        bus.epoch_end(1, {"f1": [0.75, 0.5], "val_f1": [1.0, 0.0]})
        bus.train_end()
        bus.close()
        assert rows(path) == [["epoch", "f1", "val_f1"], ["0", '"[0.5, 0.25]"', "NA"],
                              ["1", '"[0.75, 0.5]"', '"[1.0, 0.0]"']]


def fit(bus: Bus) -> None:
    bus.train_begin({"epochs": len(EPOCHS)})
    for epoch, logs in enumerate(EPOCHS):
        bus.epoch_begin(epoch)
        bus.batch_begin(0)
        bus.batch_end(0, {"f1": logs["f1"]})
        bus.epoch_end(epoch, logs)
    bus.train_end()


QUICK = {"timeout": 1.0, "retries": 1, "backoff": 0.01, "flush_timeout": 5.0}


class TestHttp:
    @pytest.mark.parametrize("send_as_json", [True, False])
    def test_remote_monitor_sends_lists(self, server, send_as_json):
        """The payload holds each vector as a JSON list, non-finite elements spelled as in the
        logs ("NaN", "Infinity"): strict JSON either way."""
        collector = server()
        bus = Bus([RemoteMonitor(collector.url, send_as_json=send_as_json, **QUICK)])
        fit(bus)
        bus.close()
        bodies = [body for _, _, body in collector.requests]
        if not send_as_json:
            bodies = [parse_qs(body.decode())["data"][0] for body in bodies]
        sent = [json.loads(body, parse_constant=pytest.fail) for body in bodies]
        assert sent[0]["f1"] == [0.5, 0.25, "NaN"] and sent[0]["val_f1"] == [0.125, "Infinity"]
        assert sent[1]["f1"] == [0.75, 0.5, 0.0] and sent[1]["one"] == 2.5

    def test_the_record_stream_sends_lists(self, server):
        collector = server()
        sink = HttpRecordSink(collector.url, batch_size=1, timeout=1.0, retries=1,
                              backoff=0.01, flush_timeout=5.0, linger=0.05)
        bus = Bus([], log=[sink])
        fit(bus)
        bus.close()
        lines = [line for _, _, body in collector.requests for line in body.splitlines()]
        received = [decode_nonfinite(orjson.loads(line)) for line in lines]
        batch = next(record for record in received if record["kind"] == "batch_end")
        assert batch["logs"]["f1"][:2] == [0.5, 0.25] and math.isnan(batch["logs"]["f1"][2])
        end = next(record for record in received if record["kind"] == "epoch_end")
        assert end["logs"]["val_f1"] == [0.125, INF]


class TestBaseLogger:
    def test_a_vector_is_averaged_element_by_element(self):
        """Size-weighted, as Keras 2's BaseLogger averaged arrays."""
        history = History()
        bus = Bus([BaseLogger(), history])
        bus.train_begin()
        bus.epoch_begin(0)
        bus.batch_end(0, {"f1": np.array([0.0, 1.0]), "size": 1, "loss": 1.0})
        bus.batch_end(1, {"f1": [1.0, 0.0], "size": 3, "loss": 2.0})
        bus.epoch_end(0, {})
        bus.close()
        assert history.history == {"loss": [1.75], "f1": [[0.75, 0.25]]}

    @pytest.mark.parametrize("second", [[1.0, 0.0, 2.0], 0.5])
    def test_a_vector_that_changes_shape_has_no_average_and_says_so(self, second):
        bus = Bus([BaseLogger()])
        bus.train_begin()
        bus.epoch_begin(0)
        bus.batch_end(0, {"f1": [0.0, 1.0]})
        with pytest.raises(PluginError, match=r"failed on batch_end .*BaseLogger: "
                                              r"logs\['f1'\] is .* in this batch and was 2 "
                                              r"values in earlier batches"):
            bus.batch_end(1, {"f1": second})
        bus.close()
