"""TerminateOnNaN: a NaN or infinite batch loss stops training, or raises."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import AbortTraining, Bus, ConfigError, PluginError
from eventbus.records import (
    BatchBegin,
    BatchEnd,
    EpochBegin,
    EpochEnd,
    TrainBegin,
    TrainEnd,
)
from eventbus.testing import RecordingWriter, drive, run
from plugins import TerminateOnNaN
from plugins.terminate_on_nan import NonFiniteLossError


def batches(losses: list[float | None], per_epoch: int = 3) -> list:
    """A run whose training batches report ``losses`` (None: the batch has no loss)."""
    events: list = [TrainBegin()]
    for i, loss in enumerate(losses):
        epoch, batch = divmod(i, per_epoch)
        if batch == 0:
            if epoch:
                events.append(EpochEnd(epoch=epoch - 1))
            events.append(EpochBegin(epoch=epoch))
        events.append(BatchBegin(batch=batch, step=i))
        events.append(BatchEnd(batch=batch, step=i, logs={} if loss is None else {"loss": loss}))
    if losses:
        events.append(EpochEnd(epoch=(len(losses) - 1) // per_epoch))
    events.append(TrainEnd())
    return events


class TestTerminateOnNaN:
    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_non_finite_loss_stops(self, bad: float, capsys: pytest.CaptureFixture[str]) -> None:
        """The batch with the bad loss stops training and says so, as Keras prints."""
        decisions = drive(TerminateOnNaN(), batches([0.5, 0.4, bad, 0.3]))
        assert [(d.kind, d.code, d.epoch) for d in decisions] == \
            [("stop_training", "non_finite_loss", 0)]
        assert decisions[0].evidence == {"loss": bad, "batch": 2, "step": 2}
        assert decisions[0].reason == f"the loss of batch 2 (step 2) is {bad}"
        assert capsys.readouterr().out == "Batch 2: Invalid loss, terminating training\n"

    def test_finite_or_missing_loss_does_nothing(self) -> None:
        """Batches with a finite loss, or none, decide nothing."""
        assert drive(TerminateOnNaN(), batches([0.5, None, 1e300, 0.0])) == []

    def test_raise_error_raises(self) -> None:
        """raise_error=True raises its own error; the bus records plugin_failed first."""
        bus = Bus([TerminateOnNaN(raise_error=True)])
        bus.train_begin()
        bus.epoch_begin(0)
        with pytest.raises(NonFiniteLossError, match="NaN or Inf loss encountered at batch 0"):
            bus.batch_end(0, {"loss": math.nan})
        assert bus.failures[0].kind == "plugin_failed"

    @pytest.mark.parametrize("policy", ["raise", "isolate"])
    def test_the_plugins_own_error_propagates_unwrapped(self, policy: str) -> None:
        """What reaches the loop is NonFiniteLossError itself, a RuntimeError as Keras raises,
        never a PluginError wrapping it, whatever the failure policy; the log has it first."""
        writer = RecordingWriter()
        bus = Bus([TerminateOnNaN(raise_error=True)], on_plugin_error=policy, log=writer)
        bus.train_begin()
        bus.epoch_begin(0)
        with pytest.raises(RuntimeError) as info:
            bus.batch_end(0, {"loss": math.nan})
        assert type(info.value) is NonFiniteLossError
        assert isinstance(info.value, AbortTraining) and not isinstance(info.value, PluginError)
        assert info.value.__cause__ is None
        failed = [r for r in writer.records if r["kind"] == "plugin_failed"]
        assert [(r["plugin"], r["error"]) for r in failed] == \
            [("TerminateOnNaN", "NonFiniteLossError")]

    @pytest.mark.parametrize("value", ["yes", 1, None])
    def test_raise_error_must_be_a_bool(self, value: object) -> None:
        """raise_error="yes" (or 1) is a ConfigError naming the field, not a truthy value."""
        with pytest.raises(ConfigError) as info:
            TerminateOnNaN(raise_error=value)
        assert (info.value.plugin, info.value.field) == ("TerminateOnNaN", "raise_error")

    def test_raise_error_ends_the_run_even_when_plugins_are_isolated(self) -> None:
        """Asking to raise ends the run whatever the failure policy."""
        bus = Bus([TerminateOnNaN(raise_error=True)], on_plugin_error="isolate")
        with pytest.raises(NonFiniteLossError):
            bus.batch_end(0, {"loss": math.inf})

    def test_bus_stop_flag(self) -> None:
        """The decision sets bus.stop_training, which the loop reads."""
        bus, _ = run([TerminateOnNaN()], batches([math.nan]))
        assert bus.stop_training

    @given(st.lists(st.one_of(st.floats(-1e3, 1e3), st.sampled_from([math.nan, math.inf]),
                              st.none()), max_size=20))
    def test_stops_at_the_first_bad_batch(self, losses: list[float | None]) -> None:
        """Exactly one stop, at the first non-finite loss, or none if there is none."""
        decisions = drive(TerminateOnNaN(), batches(losses), stop=False)
        first = next((i for i, v in enumerate(losses)
                      if v is not None and not math.isfinite(v)), None)
        stops = [d.evidence["step"] for d in decisions]
        assert stops[:1] == ([] if first is None else [first])
        bad = [i for i, v in enumerate(losses) if v is not None and not math.isfinite(v)]
        assert stops == bad  # stop=False: every bad batch is reported
