"""ProgbarLogger away from a terminal: the cadence of its lines, logging, notebooks, the means.

The cadence is decided on the records' times, so these tests give the sink records with the
times they choose: hours of training checked without sleeping.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus
from plugins import ProgbarLogger
from plugins.progbar_logger import RunningMeans
from sinks import console


@pytest.fixture(autouse=True)
def interactive_logging_as_it_was(monkeypatch):
    """Each test starts with the switch unset (following Keras, or on) and leaves it so."""
    monkeypatch.setattr(console, "_interactive", None)


def feed(plugin: ProgbarLogger, times: list[float], *, start: float = 0.0, epochs: int = 1,
         logs=None) -> None:
    """An epoch per ``epochs`` whose batches end at ``times`` (seconds after its begin)."""
    plugin.write({"kind": "train_begin", "time": start, "params": {"epochs": epochs,
                                                                     "steps": len(times)}})
    for epoch in range(epochs):
        plugin.write({"kind": "epoch_begin", "time": start, "epoch": epoch, "logs": {}})
        for batch, t in enumerate(times):
            plugin.write({"kind": "batch_end", "time": start + t, "epoch": epoch,
                          "batch": batch, "logs": (logs or {"loss": float(batch)})})
        end = start + (times[-1] if times else 0.0)
        plugin.write({"kind": "epoch_end", "time": end, "epoch": epoch,
                      "logs": {"val_loss": 0.5}})
        start = end
    plugin.write({"kind": "train_end", "time": start, "logs": {}})


class TestCadence:
    def test_a_line_every_ten_seconds_by_default(self) -> None:
        """A 95-second epoch of one batch a second, piped: lines at 10, 20, ... 90 s, then the
        epoch's line."""
        out = io.StringIO()
        feed(ProgbarLogger(file=out), [float(t) for t in range(1, 96)])
        lines = out.getvalue().splitlines()
        assert [re.search(r" - (\d+)/95 steps - ", line).group(1) for line in lines] == \
            [str(n) for n in range(10, 100, 10)] + ["95"]
        assert lines[0] == ("Epoch 1/1 - 10/95 steps - 10.0s - ETA 1:25 - 1s/step - "
                            "loss: 4.5000")
        assert lines[-1] == "Epoch 1/1 - 95/95 steps - 95.0s - 1s/step - loss: 47.0000 - " \
            "val_loss: 0.5000"

    @given(st.lists(st.floats(0.0, 30.0), max_size=60), st.floats(0.0, 60.0))
    def test_no_gap_longer_than_the_interval_and_no_two_lines_closer(self, gaps,
                                                                     interval) -> None:
        """Progress lines are at least ``line_interval`` apart (the first that long after the
        epoch begins), and no batch that ends that long after the last line goes without one;
        the epoch's own line comes last."""
        times, t = [], 0.0
        for gap in gaps:
            t += gap
            times.append(t)
        out = io.StringIO()
        feed(ProgbarLogger(file=out, line_interval=interval), times)
        *progress, end = out.getvalue().splitlines()
        assert " - ETA " not in end and end.startswith("Epoch 1/1 - ")
        lined = [int(re.search(r" - (\d+)/\d+ steps - ", line).group(1)) for line in progress]
        last = 0.0
        for batch, t in enumerate(times, start=1):
            if batch in lined:
                assert t - last >= interval
                last = t
            else:
                assert t - last < interval

    def test_verbose_2_prints_only_the_epochs_lines(self) -> None:
        """verbose=2, as Keras 3: one line per epoch, however long the epoch."""
        out = io.StringIO()
        feed(ProgbarLogger(verbose=2, file=out, line_interval=0.0), [1.0, 2.0, 3.0], epochs=3)
        assert [line.split(" - ")[:2] for line in out.getvalue().splitlines()] == \
            [[f"Epoch {e}/3", "3/3 steps"] for e in (1, 2, 3)]


class TestWhereItGoes:
    def test_logging_while_interactive_logging_is_off(self, caplog, capsys) -> None:
        """With interactive logging off, the lines go to the eventbus.console logger at INFO,
        as Keras's print_msg sends them to logging; nothing to standard output."""
        console.disable_interactive_logging()
        with caplog.at_level(logging.INFO, logger="eventbus.console"):
            feed(ProgbarLogger(line_interval=5.0), [4.0, 8.0, 12.0])
        assert capsys.readouterr().out == ""
        assert [r.getMessage().split(" - ")[1] for r in caplog.records] == \
            ["2/3 steps", "3/3 steps"]
        assert all(r.levelno == logging.INFO and r.name == "eventbus.console"
                   for r in caplog.records)

    def test_standard_output_while_it_is_on(self, caplog, capsys) -> None:
        console.disable_interactive_logging()
        console.enable_interactive_logging()
        with caplog.at_level(logging.INFO, logger="eventbus.console"):
            feed(ProgbarLogger(), [1.0])
        assert capsys.readouterr().out.startswith("Epoch 1/1 - 1/1 steps")
        assert caplog.records == []

    def test_a_file_given_is_written_whatever_the_switch(self) -> None:
        console.disable_interactive_logging()
        out = io.StringIO()
        feed(ProgbarLogger(file=out), [1.0])
        assert out.getvalue().startswith("Epoch 1/1 - 1/1 steps")

    def test_the_console_sink_follows_the_switch(self, caplog, capsys) -> None:
        """Verbose plugins' messages too (sinks.console.print_msg)."""
        from plugins import EarlyStopping

        console.disable_interactive_logging()
        with caplog.at_level(logging.INFO, logger="eventbus.console"), \
                Bus([EarlyStopping(patience=1, verbose=1)]) as bus:
            bus.train_begin({"epochs": 3})
            for epoch, value in enumerate([1.0, 2.0, 3.0]):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"val_loss": value})
                if bus.stop_training:
                    break
            bus.train_end()
        assert capsys.readouterr().out == ""
        assert [r.getMessage() for r in caplog.records] == ["Epoch 2: early stopping"]

    def test_a_notebook_without_widgets_gets_plain_lines(self, monkeypatch) -> None:
        """In a Jupyter kernel tqdm's notebook bar needs ipywidgets; without them (as here) the
        plugin falls back to plain lines, with no warning and no carriage return."""
        monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
        pytest.importorskip("IPython")
        from sinks.progress import notebook_tqdm

        if notebook_tqdm() is not None:
            pytest.skip("ipywidgets is installed: the notebook bar would be used")
        plugin = ProgbarLogger(line_interval=0.0)
        out = io.StringIO()
        monkeypatch.setattr(sys, "stdout", out)
        feed(plugin, [1.0, 2.0])
        assert out.getvalue().splitlines()[0].startswith("Epoch 1/1 - 1/2 steps - ")
        assert "\r" not in out.getvalue()

    def test_a_dumb_terminal_gets_plain_lines(self, monkeypatch) -> None:
        """TERM=dumb cannot move the cursor: lines, as in a file."""
        monkeypatch.setenv("TERM", "dumb")

        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        out = Terminal()
        feed(ProgbarLogger(file=out), [1.0])
        assert "\x1b" not in out.getvalue() and out.getvalue().count("\n") == 1


class TestRunningMeans:
    def test_weighted_as_keras_progbar(self) -> None:
        """Each update weighs as many steps or samples as it adds (at least 1)."""
        means = RunningMeans()
        means.add({"loss": 1.0, "size": 32.0}, 32)
        means.add({"loss": 4.0}, 16)
        means.add({"loss": 100.0}, 0)  # counts once, as Keras's max(current - seen, 1)
        assert means.values() == {"loss": (32 * 1.0 + 16 * 4.0 + 100.0) / 49}

    def test_stateful_metrics_and_the_epochs_values(self) -> None:
        means = RunningMeans(["acc"])
        means.add({"acc": 0.5, "loss": 1.0}, 1)
        means.add({"acc": 0.7, "loss": 3.0}, 1)
        assert means.values() == {"acc": 0.7, "loss": 2.0}
        means.finish({"val_loss": 9.0, "loss": 1.5})
        assert means.values() == {"acc": 0.7, "loss": 1.5, "val_loss": 9.0}

    def test_vectors_element_by_element(self) -> None:
        """A vector metric (F1 per class) is averaged element by element; one whose length
        changes starts again."""
        means = RunningMeans()
        means.add({"f1": [0.5, 1.0]}, 1)
        means.add({"f1": [1.0, 0.0]}, 1)
        assert means.values() == {"f1": [0.75, 0.5]}
        means.add({"f1": [1.0]}, 1)
        assert means.values() == {"f1": [1.0]}
        means.finish({"f1": (0.25, 0.5)})
        assert means.values() == {"f1": [0.25, 0.5]}

    def test_vectors_in_records_are_shown_element_by_element(self) -> None:
        """A record whose logs hold a list (a vector metric, per class) is shown element by
        element, each in the progress bar's number format."""
        out = io.StringIO()
        feed(ProgbarLogger(file=out), [1.0, 2.0], logs={"f1": [0.5, 1.0], "loss": 0.5})
        assert out.getvalue().endswith(" - f1: [0.5000 1.0000] - loss: 0.5000 - "
                                       "val_loss: 0.5000\n")

    def test_every_metric_as_it_comes_with_a_keras_model(self) -> None:
        """Keras's metrics are running means already: with a Keras model on the bus, the bar
        shows them as they come (Keras 3's ProgbarLogger: stateless_metrics=set())."""
        class KerasLike:  # what the bar looks for: a model adapter holding a Keras model
            keras_model = object()
            learning_rate = None

        out = io.StringIO()
        bus = Bus([ProgbarLogger(file=out, line_interval=0.0)], model=KerasLike())
        bus.train_begin({"epochs": 1, "steps": 2})
        bus.epoch_begin(0)
        bus.batch_end(0, {"loss": 1.0})
        bus.batch_end(1, {"loss": 3.0})
        bus.epoch_end(0, {"loss": 3.0})
        bus.train_end()
        bus.close()
        assert out.getvalue().splitlines()[1].endswith(" - loss: 3.0000")


def test_samples_counted_from_batch_begin() -> None:
    """count_mode='samples' takes a batch's size from batch_begin when batch_end has none (the
    demo's loop gives it there)."""
    out = io.StringIO()
    bus = Bus([ProgbarLogger(count_mode="samples", file=out)])
    bus.train_begin({"epochs": 1, "samples": 80})
    bus.epoch_begin(0)
    for batch, size in enumerate([32, 32, 16]):
        bus.batch_begin(batch, {"size": float(size)})
        bus.batch_end(batch, {"loss": float(batch)})
    bus.epoch_end(0, {})
    bus.close()
    line = out.getvalue()
    assert line.startswith("Epoch 1/1 - 80/80 samples - ")
    assert line.endswith(f" - loss: {(0 * 32 + 1 * 32 + 2 * 16) / 80:.4f}\n")
