"""plugins.ProgbarLogger: a bar with its metrics beneath on terminals, plain lines elsewhere."""

from __future__ import annotations

import io

import pytest

from eventbus import Bus
from eventbus.errors import ConfigError
from plugins import ProgbarLogger
from plugins.progbar_logger import format_logs


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def fit(plugin, epochs=2, steps=3, params=True, validate=False, bus=None):
    bus = bus or Bus([plugin])
    bus.train_begin({"epochs": epochs, "steps": steps, "samples": steps * 32} if params else {})
    for epoch in range(epochs):
        bus.epoch_begin(epoch)
        for b in range(steps):
            bus.batch_begin(b)
            bus.batch_end(b, {"loss": 0.5, "size": 32})
        if validate:
            evaluate(bus, steps=2)
        bus.epoch_end(epoch, {"loss": 0.25, "val_loss": 0.5})
    bus.train_end()
    return bus


def evaluate(bus, steps=3):
    bus.test_begin()
    for b in range(steps):
        bus.test_batch_end(b, {"loss": 0.2, "size": 16})
    bus.test_end({"loss": 0.2, "acc": 0.9})


def predict(bus, steps=4):
    bus.predict_begin()
    for b in range(steps):
        bus.predict_batch_end(b)
    bus.predict_end()


class TestPlainLines:
    def test_one_line_per_epoch_when_not_a_terminal(self):
        """verbose=1 writing to a file or a CI log: one readable line per epoch, no \\r."""
        out = io.StringIO()
        fit(ProgbarLogger(file=out)).close()
        lines = out.getvalue().splitlines()
        assert len(lines) == 2 and "\r" not in out.getvalue()
        assert lines[0].startswith("Epoch 1/2 - 3/3 steps - ")
        assert lines[0].endswith("loss: 0.2500 - val_loss: 0.5000")

    def test_verbose_2_on_a_terminal(self):
        """verbose=2 prints one line per epoch even on a terminal."""
        out = Terminal()
        fit(ProgbarLogger(verbose=2, file=out)).close()
        assert out.getvalue().count("\n") == 2 and "\r" not in out.getvalue()

    def test_count_samples(self):
        """count_mode='samples' counts the batches' sizes against params['samples']."""
        out = io.StringIO()
        fit(ProgbarLogger(count_mode="samples", file=out), epochs=1).close()
        assert "96/96 samples" in out.getvalue()

    def test_without_params(self):
        """A resumed run has no train_begin params: epochs and steps are shown without totals."""
        out = io.StringIO()
        fit(ProgbarLogger(file=out), epochs=1, params=False).close()
        assert out.getvalue().startswith("Epoch 1 - 3 steps - ")

    def test_standard_output_by_default(self, capsys):
        """Without file=, lines go to standard output."""
        fit(ProgbarLogger(), epochs=1).close()
        assert capsys.readouterr().out.startswith("Epoch 1/1")


class TestEvaluationAndPrediction:
    def test_an_evaluation_on_its_own_gets_a_line(self):
        """Test events outside training: a line with the steps and the evaluation's metrics."""
        out = io.StringIO()
        bus = Bus([ProgbarLogger(file=out)])
        evaluate(bus)
        bus.close()
        assert out.getvalue().startswith("Evaluation - 3 steps - ")
        assert out.getvalue().endswith(" - loss: 0.2000 - acc: 0.9000\n")

    def test_validation_inside_an_epoch_is_shown_only_in_the_epoch_line(self):
        """As Keras in fit: the test batches of validation move no bar and print no line."""
        out = io.StringIO()
        fit(ProgbarLogger(file=out), validate=True).close()
        lines = out.getvalue().splitlines()
        assert len(lines) == 2 and all(line.startswith("Epoch") for line in lines)
        assert all(" - 3/3 steps - " in line for line in lines)

    def test_a_prediction_gets_a_line_and_counts_samples_if_asked(self):
        out = io.StringIO()
        bus = Bus([ProgbarLogger(file=out)])
        predict(bus)
        evaluate(bus)
        bus.close()
        lines = out.getvalue().splitlines()
        assert lines[0].startswith("Prediction - 4 steps - ") and len(lines) == 2
        out = io.StringIO()
        bus = Bus([ProgbarLogger(count_mode="samples", file=out)])
        evaluate(bus)
        bus.close()
        assert out.getvalue().startswith("Evaluation - 48 samples - ")

    def test_a_prediction_inside_an_epoch_leaves_the_epoch_alone(self):
        """A prediction made mid-epoch (by a callback, say) does not end the epoch's bar."""
        out = io.StringIO()
        bus = Bus([ProgbarLogger(file=out)])
        bus.train_begin({"epochs": 1, "steps": 2})
        bus.epoch_begin(0)
        bus.batch_end(0, {"loss": 1.0})
        predict(bus)
        bus.batch_end(1, {"loss": 1.0})
        bus.epoch_end(0, {"loss": 1.0})
        bus.train_end()
        bus.close()
        (line,) = out.getvalue().splitlines()
        assert line.startswith("Epoch 1/1 - 2/2 steps - ")

    def test_evaluation_after_training_gets_its_own_line(self):
        out = io.StringIO()
        bus = fit(ProgbarLogger(file=out), epochs=1)
        evaluate(bus)
        bus.close()
        lines = out.getvalue().splitlines()
        assert [line.split(" - ")[0] for line in lines] == ["Epoch 1/1", "Evaluation"]

    def test_live_bar_for_an_evaluation(self):
        out = Terminal()
        bus = Bus([ProgbarLogger(file=out, mininterval=0.0)])
        evaluate(bus)
        bus.close()
        text = out.getvalue()
        assert "\r" in text and "Evaluation" in text and "acc: 0.9000" in text


class TestBar:
    def test_live_bar_on_a_terminal(self):
        """On a terminal verbose=1 draws a bar with the epoch, steps and metrics."""
        out = Terminal()
        fit(ProgbarLogger(file=out, mininterval=0.0)).close()
        text = out.getvalue()
        assert "\r" in text and "Epoch 1/2" in text and "Epoch 2/2" in text
        assert "3/3" in text and "loss: 0.2500" in text and "val_loss: 0.5000" in text

    def test_silent(self):
        """verbose=0 takes no record: the bus never calls it."""
        bus = Bus([ProgbarLogger(verbose=0)])
        for kind in ("batch_end", "epoch_end", "test_batch_end", "predict_end"):
            assert bus.subscribers(kind) == [], kind
        bus.close()


def test_format_logs():
    """Keras's progress-bar format: 4 decimals above 1e-3 in magnitude, else scientific; no
    size/batch; train metrics, then val_, then the learning rate."""
    assert format_logs({"val_loss": 0.5, "loss": 0.123456, "lr": 1e-5, "big": 2e6, "zero": 0.0,
                        "size": 32}) == \
        "loss: 0.1235 - big: 2000000.0000 - zero: 0.0000e+00 - val_loss: 0.5000 - lr: 1.0000e-05"


@pytest.mark.parametrize("kwargs", [{"count_mode": "batches"}, {"verbose": 3}])
def test_bad_parameters(kwargs):
    """Unknown count modes and verbosity levels are refused."""
    with pytest.raises(ConfigError):
        ProgbarLogger(**kwargs)
