"""plugins.LambdaCallback: Keras's argument conventions; the seed's examples as written."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from eventbus import Bus, SinkFailureWarning
from eventbus.errors import ConfigError
from eventbus.records import StopTraining
from eventbus.testing import RecordingWriter
from plugins import LambdaCallback


def fit(plugins, epochs=2, batches=3, **bus_options):
    bus = Bus(plugins, **bus_options)
    bus.train_begin({"epochs": epochs})
    for epoch in range(epochs):
        if bus.stop_training:
            break
        bus.epoch_begin(epoch)
        for b in range(batches):
            bus.batch_begin(b, {"size": 4})
            bus.batch_end(b, {"loss": 1.0 / (b + 1)})
        bus.epoch_end(epoch, {"loss": 0.5 / (epoch + 1)})
    bus.train_end({"done": 1.0})
    bus.close()
    return bus


class TestSeedExamples:
    def test_print_the_batch_number(self, capsys):
        """The seed's batch_print_callback prints each batch number."""
        batch_print_callback = LambdaCallback(
            on_batch_begin=lambda batch,logs: print(batch))  # noqa: E231 - as in the seed
        fit([batch_print_callback], epochs=1)
        assert capsys.readouterr().out.split() == ["0", "1", "2"]

    def test_terminate_processes_at_train_end(self):
        """The seed's cleanup_callback terminates live processes when training ends."""
        processes = [multiprocessing.Process(target=time.sleep, args=(30,)) for _ in range(2)]
        for p in processes:
            p.start()
        cleanup_callback = LambdaCallback(
            on_train_end=lambda logs: [
            p.terminate() for p in processes if p.is_alive()])
        bus = fit([cleanup_callback], epochs=1)
        for p in processes:
            p.join(timeout=5)
        assert not any(p.is_alive() for p in processes)
        assert bus.failures == []  # the list of None it returns is ignored

    def test_plot_loss(self, tmp_path):
        """The seed's plot callback draws a line per epoch where matplotlib is installed, and
        nothing fails: a plot that raised would only be recorded as sink_failed, since the bus
        isolates a callback's failure, so that record must be absent and the lines present.

        As printed, the seed plots np.arange(epoch) against one number, which matplotlib
        refuses for every epoch but 1; the y values are repeated to match here.
        """
        matplotlib = pytest.importorskip("matplotlib")
        matplotlib.use("Agg")  # files only, whatever display the machine has
        import matplotlib.pyplot as plt
        import numpy as np

        figure = plt.figure()
        try:
            plot_loss_callback = LambdaCallback(
                on_epoch_end=lambda epoch, logs: plt.plot(np.arange(epoch),
                                  [logs['loss']] * epoch))
            writer = RecordingWriter()
            bus = fit([plot_loss_callback], log=writer)
            assert bus.failures == []
            assert [r for r in writer.records if r["kind"] == "sink_failed"] == []
            # Epoch 0 plots no point; epoch 1 one, at its loss (0.5 / 2).
            assert [(list(line.get_xdata()), list(line.get_ydata()))
                    for line in figure.gca().get_lines()] == [([], []), ([0], [0.25])]
            figure.savefig(tmp_path / "loss.png")
            assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        finally:
            plt.close(figure)


class TestConventions:
    def test_arguments(self):
        """(epoch, logs), (batch, logs) and (logs), positionally, with copies of the logs."""
        calls = []
        cb = LambdaCallback(
            on_epoch_begin=lambda e, logs: calls.append(("epoch_begin", e)),
            on_epoch_end=lambda e, logs: calls.append(("epoch_end", e, logs["loss"])),
            on_batch_begin=lambda b, logs: calls.append(("batch_begin", b, logs["size"])),
            on_batch_end=lambda b, logs: calls.append(("batch_end", b)),
            on_train_begin=lambda logs: calls.append(("train_begin", dict(logs))),
            on_train_end=lambda logs: calls.append(("train_end", logs["done"])))
        fit([cb], epochs=1, batches=2)
        assert calls == [("train_begin", {}), ("epoch_begin", 0), ("batch_begin", 0, 4.0),
                         ("batch_end", 0), ("batch_begin", 1, 4.0), ("batch_end", 1),
                         ("epoch_end", 0, 0.5), ("train_end", 1.0)]

    def test_only_given_hooks_are_subscribed(self):
        """A callback with only on_epoch_end costs nothing per batch."""
        bus = Bus([LambdaCallback(on_epoch_end=lambda e, logs: None)])
        assert bus.subscribers("batch_begin") == [] and bus.subscribers("batch_end") == []
        assert len(bus.subscribers("epoch_end")) == 1
        bus.close()

    def test_changing_logs_does_not_change_the_log(self):
        """A function that edits its logs does not change what is recorded."""
        writer = RecordingWriter()
        fit([LambdaCallback(on_epoch_end=lambda e, logs: logs.update(loss=99.0))], epochs=1,
            log=writer)
        (end,) = [r for r in writer.records if r["kind"] == "epoch_end"]
        assert end["logs"]["loss"] == 0.5

    def test_keras3_and_evaluation_hooks(self):
        """on_train_batch_end and on_test_end are accepted as keywords."""
        seen = []
        bus = Bus([LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(b),
                                  on_test_end=lambda logs: seen.append(logs["val"]))])
        bus.batch_begin(0)
        bus.batch_end(0)
        bus.test_end({"val": 2.0})
        bus.close()
        assert seen == [0, 2.0]

    def test_returning_a_decision(self):
        """A function may return a decision: the bus applies it."""
        stop = LambdaCallback(on_epoch_end=lambda e, logs: StopTraining(reason="enough")
                              if e == 0 else None)
        bus = fit([stop], epochs=3)
        assert bus.stop_training

    def test_a_failing_function_does_not_stop_training(self):
        """An exception in a function is recorded as sink_failed (Keras would raise); the
        callback is disabled, so none of its functions runs again, and training goes on."""
        writer = RecordingWriter()
        calls = []

        def boom(epoch, logs):
            calls.append(epoch)
            raise ValueError("user bug")

        with pytest.warns(SinkFailureWarning, match="ValueError: user bug"):
            bus = fit([LambdaCallback(on_epoch_end=boom,
                                      on_epoch_begin=lambda e, logs: calls.append(-1))],
                      epochs=3, log=writer)
        failed = [r for r in writer.records if r["kind"] == "sink_failed"]
        assert [(r["sink"], r["event"], r["error"]) for r in failed] == \
            [("LambdaCallback", "epoch_end", "ValueError")]
        assert calls == [-1, 0]  # disabled after the failure: no epoch_begin of epoch 1 either
        assert [r["kind"] for r in writer.records].count("epoch_end") == 3
        assert not bus.stop_training


class TestPositionalArguments:
    """Keras 2 and Keras 3 disagree on the third to sixth positional arguments; only the
    first two, which they share, are positional here."""

    def test_epoch_hooks_positionally(self):
        """on_epoch_begin and on_epoch_end may be given positionally, in Keras's order."""
        calls = []
        fit([LambdaCallback(lambda e, logs: calls.append(("begin", e)),
                            lambda e, logs: calls.append(("end", e)))], epochs=1)
        assert calls == [("begin", 0), ("end", 0)]

    @pytest.mark.parametrize("count", [3, 4, 5, 6])
    def test_a_third_positional_argument_is_refused(self, count):
        """Keras 2's LambdaCallback(eb, ee, batch_begin, ...) and Keras 3's
        LambdaCallback(eb, ee, train_begin, ...) both fail with a TypeError naming the class
        and the keyword names, instead of running a function at the wrong moment."""
        with pytest.raises(TypeError, match=r"LambdaCallback\(\) takes at most 2 positional "
                                            r"arguments.*on_batch_begin.*on_train_begin"):
            LambdaCallback(*([print] * count))

    @pytest.mark.parametrize(("name", "hook_calls"), [
        ("on_batch_begin", ["batch_begin"]), ("on_train_batch_begin", ["batch_begin"]),
        ("on_batch_end", ["batch_end"]), ("on_train_batch_end", ["batch_end"]),
        ("on_train_begin", ["train_begin"]), ("on_train_end", ["train_end"])])
    def test_keras2_and_keras3_keywords(self, name, hook_calls):
        """Every name either Keras version takes positionally works as a keyword."""
        calls = []
        fit([LambdaCallback(**{name: lambda *args: calls.append(hook_calls[0])})], epochs=1,
            batches=1)
        assert calls == hook_calls

    @pytest.mark.parametrize("kwargs", [{"on_epoch_ended": print}, {"on_epoch_end": 3}])
    def test_bad_arguments(self, kwargs):
        """Unknown hook names and non-callables are refused, naming the argument."""
        with pytest.raises(ConfigError, match=next(iter(kwargs))):
            LambdaCallback(**kwargs)
