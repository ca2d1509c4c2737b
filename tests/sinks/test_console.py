"""sinks.console: what verbose plugins print, made from the records, in Keras's words.

Plugins never print; the console sink prints for the plugins whose ``verbose`` is above 0. A
replay or a resume writes through no sink, so it prints nothing: a resumed run says only what
is new.
"""

from __future__ import annotations

import gc
import io
import logging
import math

import pytest

from eventbus import Bus, NumpyModel, replay
from plugins import (
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)
from sinks.console import ConsoleSink


def fit(bus: Bus, values: list[float], *, start: int | None = None, stop_at: int | None = None,
        losses: dict[int, float] | None = None) -> None:
    """A loop publishing ``val_loss`` per epoch; it stops when the bus says so (or dies at
    ``stop_at``, without train_end)."""
    bus.train_begin({"epochs": len(values)})
    for epoch in range(bus.initial_epoch if start is None else start, len(values)):
        if epoch == stop_at:
            return
        bus.epoch_begin(epoch)
        bus.batch_end(0, {"loss": (losses or {}).get(epoch, 1.0)})
        bus.epoch_end(epoch, {"val_loss": values[epoch]})
        if bus.stop_training:
            break
    bus.train_end()


class TestKerasWords:
    def test_early_stopping_says_when_it_stopped_and_what_it_restored(self, capsys) -> None:
        """At train_end, as Keras: the stop epoch, then the best epoch restored."""
        model = NumpyModel({"w": [0.0]}, learning_rate=0.1)
        with Bus([EarlyStopping(patience=2, verbose=1, restore_best_weights=True)],
                 model=model) as bus:
            fit(bus, [1.0, 0.5, 0.6, 0.7, 0.8])
        assert capsys.readouterr().out == ("Epoch 4: early stopping\n"
                                           "Restoring model weights from the end of the best "
                                           "epoch: 2.\n")

    def test_reduce_lr_on_plateau(self, capsys) -> None:
        with Bus([ReduceLROnPlateau(patience=1, factor=0.5, verbose=1)],
                 learning_rate=0.1) as bus:
            fit(bus, [1.0, 1.0, 1.0])
        assert capsys.readouterr().out == (
            "\nEpoch 2: ReduceLROnPlateau reducing learning rate to 0.05.\n"
            "\nEpoch 3: ReduceLROnPlateau reducing learning rate to 0.025.\n")

    def test_learning_rate_scheduler_says_every_epoch(self, capsys) -> None:
        """As Keras, every epoch, the rate unchanged or not."""
        schedule = LearningRateScheduler(lambda epoch, lr: 0.1 if epoch < 2 else lr / 2,
                                         verbose=1)
        with Bus([schedule], learning_rate=0.1) as bus:
            fit(bus, [1.0, 1.0, 1.0])
        assert capsys.readouterr().out == (
            "\nEpoch 1: LearningRateScheduler setting learning rate to 0.1.\n"
            "\nEpoch 2: LearningRateScheduler setting learning rate to 0.1.\n"
            "\nEpoch 3: LearningRateScheduler setting learning rate to 0.05.\n")

    def test_model_checkpoint(self, capsys, tmp_path) -> None:
        """Improved, did not improve, finished saving: Keras's three lines."""
        path = str(tmp_path / "m.h5")
        with Bus([ModelCheckpoint(path, save_best_only=True, verbose=1)],
                 model=NumpyModel({"w": [0.0]})) as bus:
            fit(bus, [0.5, 0.6])
        assert capsys.readouterr().out == (
            f"\nEpoch 1: val_loss improved from inf to 0.50000, saving model to {path}\n"
            f"\nEpoch 1: finished saving model to {path}\n"
            "\nEpoch 2: val_loss did not improve from 0.50000\n")

    def test_terminate_on_nan_speaks_unless_told_not_to(self, capsys) -> None:
        """Keras always prints it; verbose=0 keeps it quiet."""
        for verbose, expected in ((1, "Batch 0: Invalid loss, terminating training\n"), (0, "")):
            with Bus([TerminateOnNaN(verbose=verbose)]) as bus:
                fit(bus, [1.0, 1.0], losses={1: math.nan})
            assert capsys.readouterr().out == expected

    def test_a_quiet_plugin_prints_nothing(self, capsys) -> None:
        with Bus([EarlyStopping(patience=1), ReduceLROnPlateau(patience=1)],
                 learning_rate=0.1) as bus:
            fit(bus, [1.0, 1.0, 1.0, 1.0])
        assert capsys.readouterr().out == ""

    def test_a_logger_instead_of_stdout(self, caplog, capsys) -> None:
        """Given a logger, the lines go to it at INFO (as Keras's print_msg with interactive
        logging off) and nothing to stdout."""
        logger = logging.getLogger("eventbus-test-console")
        sink = ConsoleSink(logger=logger)
        with caplog.at_level(logging.INFO, logger=logger.name), \
                Bus([ReduceLROnPlateau(patience=1, factor=0.5, verbose=1)], log=[sink],
                    learning_rate=0.1) as bus:
            fit(bus, [1.0, 1.0])
        assert capsys.readouterr().out == ""
        assert [r.getMessage() for r in caplog.records] == [
            "\nEpoch 2: ReduceLROnPlateau reducing learning rate to 0.05."]

    def test_one_console_per_run(self) -> None:
        """Several verbose plugins share one console sink."""
        bus = Bus([EarlyStopping(verbose=1), ReduceLROnPlateau(verbose=1),
                   TerminateOnNaN()], learning_rate=0.1)
        assert sum(isinstance(s, ConsoleSink) for s in bus.run.sinks) == 1
        bus.close()


class TestNothingTwice:
    def test_replay_prints_nothing(self, capsys, tmp_path) -> None:
        """Replaying recomputes the decisions; their messages were printed by the live run."""
        log = tmp_path / "run.jsonl"
        with Bus([ReduceLROnPlateau(patience=1, verbose=1), EarlyStopping(patience=2,
                                                                          verbose=1)],
                 log=log, learning_rate=0.1) as bus:
            fit(bus, [1.0, 1.0, 1.0, 1.0])
        assert "reducing learning rate" in capsys.readouterr().out
        result = replay(log, verify=True)
        assert result.ok and result.decisions
        assert capsys.readouterr().out == ""

    def test_a_resumed_run_says_only_what_is_new(self, capsys, tmp_path) -> None:
        """Resume feeds the past epochs again to restore the plugins' state: their cuts are not
        printed a second time, only the cut made after the crash."""
        log = tmp_path / "run.jsonl"
        values = [1.0, 1.0, 1.0, 1.0, 1.0]

        def plateau() -> ReduceLROnPlateau:
            return ReduceLROnPlateau(patience=1, factor=0.5, verbose=1)

        fit(Bus([plateau()], log=log, learning_rate=0.1), values, stop_at=3)  # dies:
        gc.collect()  # what the process held (its log, and the log's lock) goes with it
        first = capsys.readouterr().out
        assert first.count("reducing learning rate") == 2  # epochs 2 and 3
        with Bus([plateau()], log=log, learning_rate=0.1, resume=True) as bus:
            assert bus.initial_epoch == 3
            fit(bus, values)
        assert capsys.readouterr().out == (
            "\nEpoch 4: ReduceLROnPlateau reducing learning rate to 0.0125.\n"
            "\nEpoch 5: ReduceLROnPlateau reducing learning rate to 0.00625.\n")


@pytest.mark.parametrize("stream", [io.StringIO])
def test_a_stream_of_ones_own(stream) -> None:
    """ConsoleSink(stream) writes there (looked up when printing when none is given)."""
    out = stream()
    with Bus([EarlyStopping(patience=1, verbose=1)], log=[ConsoleSink(out)]) as bus:
        fit(bus, [1.0, 2.0, 3.0])
    assert out.getvalue() == "Epoch 2: early stopping\n"
