"""LearningRateScheduler: the schedule's call form, its result, and replay."""

from __future__ import annotations

import functools
import math
import tempfile
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, ConfigError, NumpyModel, PluginError, ReplayError, replay
from eventbus.testing import drive, epochs, logs_of, run
from plugins import LearningRateScheduler


def rates(schedule: Any, n: int = 3, lr: float | None = 0.1, **params: Any) -> list[Any]:
    decisions = drive(LearningRateScheduler(schedule, **params), epochs(loss=[1.0] * n),
                      learning_rate=lr)
    return [(d.epoch, d.value, d.previous) for d in decisions]


class TestCallForm:
    def test_two_arguments_get_epoch_and_rate(self) -> None:
        """schedule(epoch, lr) gets the rate the epoch starts with."""
        assert rates(lambda epoch, lr: lr * 0.5) == [(0, 0.05, 0.1), (1, 0.025, 0.05),
                                                      (2, 0.0125, 0.025)]

    def test_one_argument_gets_the_epoch(self) -> None:
        """schedule(epoch) is called with the epoch only."""
        assert rates(lambda epoch: 0.1 / (epoch + 1)) == [(1, 0.05, 0.1), (2, 0.1 / 3, 0.05)]

    def test_optional_second_argument_is_passed(self) -> None:
        """A second parameter with a default still receives the rate."""
        assert rates(lambda epoch, lr=1.0: lr + 0.0 if epoch else 0.2, n=2) == \
            [(0, 0.2, 0.1)]

    def test_partial_and_varargs(self) -> None:
        """functools.partial and *args are read from the signature too."""
        assert rates(functools.partial(lambda scale, epoch, lr: lr * scale, 0.5), n=1) == \
            [(0, 0.05, 0.1)]
        assert rates(lambda *args: args[1] * 2, n=1) == [(0, 0.2, 0.1)]

    def test_type_error_inside_the_schedule_is_not_swallowed(self) -> None:
        """Keras retries with one argument on any TypeError; here the schedule's own bug
        surfaces."""
        def schedule(epoch: int, lr: float) -> float:
            return lr + "oops"  # type: ignore[operator]

        with pytest.raises(PluginError) as info:
            rates(schedule)
        assert isinstance(info.value.__cause__, TypeError)

    @pytest.mark.parametrize("schedule", [lambda: 0.1, lambda a, b, c: 0.1, 3.0])
    def test_uncallable_shapes_are_config_errors(self, schedule: Any) -> None:
        """A schedule that cannot be called as schedule(epoch[, lr]) is refused up front."""
        with pytest.raises(ConfigError) as info:
            LearningRateScheduler(schedule)
        assert info.value.field == "schedule"

    def test_rate_unknown_for_a_two_argument_schedule(self) -> None:
        """Without a known rate a two-argument schedule cannot be called: a clear error."""
        with pytest.raises(PluginError, match="does not know it"):
            rates(lambda epoch, lr: lr, lr=None)

    def test_one_argument_schedule_needs_no_known_rate(self) -> None:
        """schedule(epoch) works even when the bus knows no rate."""
        assert rates(lambda epoch: 0.01, n=2, lr=None) == [(0, 0.01, None)]


class TestResult:
    @pytest.mark.parametrize("result", [np.float32(0.5), np.float64(0.5), 1, np.array(0.5)])
    def test_real_numbers_are_accepted(self, result: Any) -> None:
        """Ints and numpy scalars are real numbers (Keras refuses ints)."""
        assert rates(lambda epoch: result, n=1)[0][1] == float(result)

    @pytest.mark.parametrize("result", ["0.1", None, True, [0.1], math.nan, -0.1, math.inf])
    def test_anything_else_is_a_clear_error(self, result: Any) -> None:
        """A result that is not a finite real >= 0 stops the run with the call in the message."""
        with pytest.raises(PluginError, match=r"schedule\(0") as info:
            rates(lambda epoch: result, n=1)
        assert isinstance(info.value.__cause__, ConfigError)

    def test_unchanged_rate_is_no_decision(self) -> None:
        """A schedule that returns the current rate decides nothing."""
        assert rates(lambda epoch, lr: lr) == []

    def test_decision_reason(self) -> None:
        """The reason shows the call and its result."""
        decision = drive(LearningRateScheduler(lambda e, lr: 0.05), epochs(loss=[1.0]),
                         learning_rate=0.1)[0]
        assert decision.reason == "schedule(0, 0.1) = 0.05"
        assert decision.code == "schedule"

    def test_verbose(self, capsys: pytest.CaptureFixture[str]) -> None:
        """verbose=1 prints Keras's line every epoch."""
        rates(lambda epoch: 0.01, n=2, verbose=1)
        assert capsys.readouterr().out == (
            "\nEpoch 1: LearningRateScheduler setting learning rate to 0.01.\n"
            "\nEpoch 2: LearningRateScheduler setting learning rate to 0.01.\n")


class TestWithTheBus:
    def test_rate_reaches_the_model_before_the_epoch_trains(self) -> None:
        """The model adapter has the new rate at epoch_begin; the epoch's logs show it."""
        model = NumpyModel({"w": np.zeros(1)}, learning_rate=1.0)
        _, records = run([LearningRateScheduler(lambda e: 10.0 ** -e)], epochs(loss=[1.0] * 3),
                         model=model)
        assert model.learning_rate == 0.01
        assert [logs["learning_rate"] for logs in logs_of(records, "epoch_end")] == \
            [1.0, 0.1, 0.01]

    def test_replay_needs_the_instance_to_check_it_and_agrees_with_it(self) -> None:
        """A callable cannot be recorded: replay applies the recorded rates, unchecked; to
        change the schedule it asks for the instance; given it, it checks and agrees."""
        def schedule(epoch, lr):
            return lr * 0.9

        with tempfile.TemporaryDirectory() as directory:
            path = f"{directory}/run.jsonl"
            with Bus([LearningRateScheduler(schedule)], log=path, learning_rate=0.1) as bus:
                for event in epochs(loss=[1.0] * 4):
                    bus.publish(event)
            alone = replay(path, verify=True)
            assert alone.ok and not alone.decisions and len(alone.unchecked) == 4
            with pytest.raises(ReplayError, match="schedule"):
                replay(path, overrides={"LearningRateScheduler": {"verbose": 1}})
            result = replay(path, plugins=[LearningRateScheduler(schedule)], verify=True)
        assert result.ok and len(result.decisions) == 4

    @given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=15))
    def test_decisions_follow_the_schedule(self, table: list[float]) -> None:
        """Each epoch's rate is the schedule's value; a decision exactly where it changes."""
        decisions = drive(LearningRateScheduler(lambda epoch: table[epoch]),
                          epochs(loss=[1.0] * len(table)), learning_rate=0.5)
        previous, expected = 0.5, []
        for epoch, value in enumerate(table):
            if value != previous:
                expected.append((epoch, value, previous))
            previous = value
        assert [(d.epoch, d.value, d.previous) for d in decisions] == expected
