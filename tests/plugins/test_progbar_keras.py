"""ProgbarLogger against Keras itself: the numbers Keras's Progbar shows, Keras's logging switch,
and a real ``model.fit`` whose metrics are already running means."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip("these tests run Keras on its torch backend", allow_module_level=True)

from keras.src.utils.progbar import Progbar  # noqa: E402

from eventbus import Bus  # noqa: E402
from eventbus.integrations.keras import KerasBridge  # noqa: E402
from plugins import ProgbarLogger  # noqa: E402
from sinks import console  # noqa: E402

# Keras's torch backend converts its own tensors the NumPy 1 way; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

_SGR = re.compile(r"\x1b\[[0-9;]*m")
NAMES = ["loss", "acc", "mae", "val_loss"]


def keras_shows(progbar: Progbar, current: int, values: dict[str, float],
                finalize: bool) -> dict[str, str]:
    """The metrics Keras's Progbar prints for this update, as text."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        progbar.update(current, list(values.items()), finalize=finalize)
    last = _SGR.sub("", out.getvalue().split("\r")[-1]).strip()
    return dict(re.findall(r" - (\w+): (\S+)", " " + last.split("/step", 1)[-1]))


def ours_shows(line: str) -> dict[str, str]:
    return dict(item.split(": ") for item in line.split(" - ") if ": " in item)


batches = st.lists(st.tuples(st.integers(0, 64),
                             st.dictionaries(st.sampled_from(NAMES[:3]),
                                             st.floats(-1e4, 1e4, allow_nan=False),
                                             min_size=1)),
                   min_size=1, max_size=12)


@given(batches, st.sets(st.sampled_from(NAMES[:3])), st.sampled_from(["steps", "samples"]),
       st.dictionaries(st.sampled_from(NAMES), st.floats(-10, 10), max_size=2))
def test_the_running_means_keras_progbar_shows(batch_logs, stateful, count_mode,
                                               epoch_logs) -> None:
    """After every batch and at the epoch's end, the metrics shown are the text Keras's own
    Progbar shows for the same updates (weighted by steps or samples, stateful metrics as they
    come, the epoch's values replacing the means)."""
    target = len(batch_logs) if count_mode == "steps" else \
        sum(max(size, 0) for size, _ in batch_logs) or None
    progbar = Progbar(target, verbose=1, interval=0.0, stateful_metrics=stateful)
    out = io.StringIO()
    plugin = ProgbarLogger(count_mode, stateful_metrics=stateful, file=out, line_interval=0.0)
    plugin.write({"kind": "train_begin", "time": 0.0,
                  "params": {"epochs": 1, "steps": len(batch_logs), "samples": target or 0}})
    plugin.write({"kind": "epoch_begin", "time": 0.0, "epoch": 0, "logs": {}})
    expected, current = [], 0
    for batch, (size, logs) in enumerate(batch_logs):
        current += 1 if count_mode == "steps" else size
        expected.append(keras_shows(progbar, current, logs, finalize=False))
        plugin.write({"kind": "batch_end", "time": 1.0 + batch, "epoch": 0, "batch": batch,
                      "logs": {**logs, "size": float(size)}})
    expected.append(keras_shows(progbar, current, epoch_logs, finalize=True))
    plugin.write({"kind": "epoch_end", "time": 99.0, "epoch": 0, "logs": epoch_logs})
    assert [ours_shows(line) for line in out.getvalue().splitlines()] == expected


class TestKerasSwitch:
    def test_keras_disable_interactive_logging_is_honoured(self, caplog, capsys,
                                                           monkeypatch) -> None:
        """With Keras imported and its interactive logging turned off (and eventbus's own
        switch left alone), the bar's lines go to logging, as Keras's own would."""
        monkeypatch.setattr(console, "_interactive", None)
        keras.config.disable_interactive_logging()
        try:
            with caplog.at_level(logging.INFO, logger="eventbus.console"):
                bus = Bus([ProgbarLogger()])
                bus.train_begin({"epochs": 1, "steps": 1})
                bus.epoch_begin(0)
                bus.batch_end(0, {"loss": 0.5})
                bus.epoch_end(0, {})
                bus.close()
            assert console.is_interactive_logging_enabled() is False
        finally:
            keras.config.enable_interactive_logging()
        assert capsys.readouterr().out == ""
        assert [r.getMessage().split(" - ")[0] for r in caplog.records] == ["Epoch 1/1"]

    def test_eventbus_switch_wins_over_keras(self, monkeypatch) -> None:
        monkeypatch.setattr(console, "_interactive", None)
        keras.config.disable_interactive_logging()
        try:
            console.enable_interactive_logging()
            assert console.is_interactive_logging_enabled() is True
        finally:
            keras.config.enable_interactive_logging()


def test_model_fit_shows_keras_running_means_as_they_come() -> None:
    """Through KerasBridge, the batch logs Keras gives are already the epoch's running means:
    each progress line shows exactly the value Keras passed for that batch, not a mean of
    means (as Keras 3's ProgbarLogger, which averages nothing)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse",
                  metrics=["mae"])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")
    given_logs: list[dict[str, float]] = []
    seen = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: given_logs.append(dict(logs)))
    out = io.StringIO()
    with Bus([ProgbarLogger(file=out, line_interval=0.0)]) as bus:
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[KerasBridge(bus), seen])
    *progress, end = out.getvalue().splitlines()
    assert len(progress) == len(given_logs) == 4
    for line, logs in zip(progress, given_logs):
        shown = ours_shows(line)
        assert shown["loss"] == f"{float(logs['loss']):.4f}"
        assert shown["mae"] == f"{float(logs['mae']):.4f}"
