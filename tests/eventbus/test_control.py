"""eventbus.control: the stop flag, the learning rate, kept weights, and applying decisions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import ConfigError, NumpyModel
from eventbus import records as r
from eventbus.control import Control, ReplayControl, checked_learning_rate

from doubles import ScheduleModel
from record_strategies import learning_rates


def model(lr: float | None = 0.1) -> NumpyModel:
    return NumpyModel({"w": np.arange(3.0), "b": np.zeros(2)}, learning_rate=lr)


def stamped(decision: r.Decision, seq: int = 7, epoch: int | None = 2) -> r.Decision:
    """A decision as the bus applies it: recorded, with its seq, source and epoch."""
    return decision.model_copy(update={"seq": seq, "epoch": epoch, "source": "Plugin",
                                       "cause_seq": seq - 1})


def set_lr(value: float, **kw) -> r.Decision:
    return stamped(r.SetLearningRate(reason="test", value=value), **kw)


def snapshot(tag: str = "best", **kw) -> r.Decision:
    return stamped(r.SnapshotWeights(reason="test", tag=tag), **kw)


def restore(tag: str = "best", **kw) -> r.Decision:
    return stamped(r.RestoreWeights(reason="test", tag=tag), **kw)


class OptimizerModel(NumpyModel):
    """A NumpyModel with an optimizer state it can give and take back."""

    def __init__(self, with_setter: bool = True):
        super().__init__({"w": np.zeros(2)}, learning_rate=0.1)
        self.optimizer = {"momentum": np.zeros(2)}
        if not with_setter:
            self.set_optimizer_state = None  # type: ignore[assignment]

    def get_optimizer_state(self):
        return {k: v.copy() for k, v in self.optimizer.items()}

    def set_optimizer_state(self, state):
        self.optimizer = {k: np.array(v) for k, v in state.items()}


class Untouchable:
    """A model adapter that fails on any use: proves a control never touches it."""

    @property
    def learning_rate(self):
        raise AssertionError("the model's learning rate was read")

    @learning_rate.setter
    def learning_rate(self, value):
        raise AssertionError("the model's learning rate was set")

    def get_weights(self):
        raise AssertionError("the model's weights were read")

    def set_weights(self, weights):
        raise AssertionError("the model's weights were set")


class TestStop:
    def test_request_stop_then_clear(self):
        """request_stop sets the flag, clear_stop clears it, stop sets it."""
        control = Control()
        assert not control.stop_training
        control.request_stop()
        assert control.stop_training
        control.clear_stop()
        assert not control.stop_training
        control.stop()
        assert control.stop_training

    def test_a_held_stop_waits_for_stop(self):
        """A stop ``hold_stop`` holds is not applied until ``stop()``; the hold sees the
        decision that asked for it."""
        asked: list = []
        control = Control(hold_stop=lambda decision: asked.append(decision) or True)
        decision = stamped(r.StopTraining(reason="patience"))
        assert control.apply(decision) == []
        control.request_stop(None)
        assert not control.stop_training
        assert asked == [decision, None]
        control.stop()
        assert control.stop_training

    def test_a_stop_not_held_is_applied(self):
        """When ``hold_stop`` returns False the stop is applied at once."""
        control = Control(hold_stop=lambda decision: False)
        control.apply(stamped(r.StopTraining(reason="now")))
        assert control.stop_training


class TestLearningRate:
    def test_read_from_the_adapter(self):
        """The adapter's learning rate wins over the one given to the control."""
        control = Control(model(0.1), 0.5)
        assert control.learning_rate == 0.1
        assert control.kept_learning_rate == 0.5

    @pytest.mark.parametrize("adapter", [None, "no rate"])
    def test_kept_without_an_adapter_rate(self, adapter):
        """Without a model, or with one that has no rate, the control's own rate is read."""
        control = Control(None if adapter is None else model(None), 0.5)
        assert control.learning_rate == 0.5
        assert Control().learning_rate is None

    def test_set_on_the_adapter(self):
        """``set_learning_rate`` keeps the rate and sets it on the adapter."""
        numpy_model = model(0.1)
        control = Control(numpy_model)
        control.set_learning_rate(0.02)
        assert numpy_model.learning_rate == 0.02 == control.learning_rate
        assert control.kept_learning_rate == 0.02

    def test_set_on_an_adapter_that_had_none(self):
        """An adapter whose rate is None (but present) is given the rate set."""
        numpy_model = model(None)
        Control(numpy_model).set_learning_rate(0.3)
        assert numpy_model.learning_rate == 0.3

    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.1, -1, None, "fast",
                                       object(), [0.1], {}, 10**400])
    def test_bad_values_are_refused(self, value):
        """NaN, infinities, negatives and non-numbers are a ConfigError; nothing changes."""
        numpy_model = model(0.1)
        control = Control(numpy_model, 0.5)
        with pytest.raises(ConfigError, match="learning_rate") as info:
            control.set_learning_rate(value)
        assert info.value.field == "learning_rate"
        assert (control.kept_learning_rate, numpy_model.learning_rate) == (0.5, 0.1)
        if value is not None:  # None given to the constructor means "no rate"
            with pytest.raises(ConfigError):
                Control(None, value)

    @pytest.mark.parametrize("value", ["0.1", b"0.1", True], ids=["str", "bytes", "bool"])
    def test_strings_and_bools_are_not_numbers(self, value):
        """A string or a bool is not a learning rate, whatever float() makes of it."""
        with pytest.raises(ConfigError):
            checked_learning_rate(value)

    def test_zero_and_numpy_scalars_are_rates(self):
        """0 is a rate, and NumPy scalars are taken as plain floats."""
        assert checked_learning_rate(0) == 0.0
        value = checked_learning_rate(np.float32(0.25))
        assert value == 0.25 and type(value) is float

    @given(st.lists(learning_rates, min_size=1, max_size=10), st.booleans())
    def test_the_last_applied_rate_is_the_rate(self, values, with_model):
        """After any sequence of valid set_learning_rate decisions, the control's rate, and the
        adapter's, is the last one applied."""
        numpy_model = model(0.1) if with_model else None
        control = Control(numpy_model, 0.5)
        for i, value in enumerate(values):
            assert control.apply(set_lr(value, seq=i + 1)) == []
        assert control.learning_rate == values[-1] == control.kept_learning_rate
        if numpy_model is not None:
            assert numpy_model.learning_rate == values[-1]


class TestAModelAttachedLater:
    """``attach``: a model adapter given after the control was built (a bridge attaching the
    model at fit, after a resume restored the rate)."""

    def test_a_rate_set_without_a_model_goes_to_the_model_attached_next(self):
        """A rate restored or decided while no adapter could hold it is the attached model's,
        not the model's own initial one."""
        for give in ("restore_learning_rate", "set_learning_rate"):
            control = Control()
            getattr(control, give)(0.04)
            numpy_model = model(0.08)
            assert control.attach(numpy_model) == []
            assert numpy_model.learning_rate == 0.04 == control.learning_rate
            assert control.model is numpy_model

    def test_an_adapter_without_a_rate_leaves_it_waiting(self):
        """An adapter with no rate attribute cannot take it: the next one with a rate does."""
        control = Control()
        control.restore_learning_rate(0.04)

        class NoRate:
            def get_weights(self):
                return {}

            def set_weights(self, weights):
                pass

        assert control.attach(NoRate()) == [] and control.learning_rate == 0.04
        numpy_model = model(0.08)
        control.attach(numpy_model)
        assert numpy_model.learning_rate == 0.04

    def test_the_constructor_s_rate_is_a_default_the_model_s_own_wins(self):
        """``Control(None, rate)`` only stands in while there is no model rate: a model
        attached later keeps its own."""
        control = Control(None, 0.5)
        numpy_model = model(0.08)
        assert control.attach(numpy_model) == []
        assert numpy_model.learning_rate == 0.08 == control.learning_rate

    def test_an_adapter_replacing_another_keeps_its_own_rate(self):
        """The rate went to the model attached first; a later fit's model keeps its own."""
        control = Control()
        control.restore_learning_rate(0.04)
        first, second = model(0.08), model(0.3)
        control.attach(first)
        control.attach(second)
        assert (first.learning_rate, second.learning_rate) == (0.04, 0.3)

    def test_a_model_refusing_the_rate_is_its_failure(self):
        """A model that cannot take the rate (a schedule) gives a sink_failed from "model" to
        record, not an exception; the control keeps the rate."""
        control = Control()
        control.restore_learning_rate(0.5)
        (fault,) = control.attach(ScheduleModel())
        assert isinstance(fault, r.SinkFailed)
        assert (fault.sink, fault.event, fault.error) == ("model", "set_learning_rate",
                                                          "TypeError")
        assert control.kept_learning_rate == 0.5

    def test_a_model_at_the_rate_already_is_left_alone(self):
        """A model whose rate is the one restored (to float32's precision) is not set: a
        schedule that agrees is no failure."""
        assert Control(ScheduleModel()).restore_learning_rate(0.01) == []
        control = Control()
        control.restore_learning_rate(float(np.float32(0.01)))
        assert control.attach(ScheduleModel()) == []
        (fault,) = Control(ScheduleModel()).restore_learning_rate(0.02)
        assert fault.event == "set_learning_rate"

    def test_a_replay_control_never_touches_the_model(self):
        """A replay's control takes the adapter and leaves it alone."""
        control = ReplayControl()
        control.restore_learning_rate(0.04)
        assert control.attach(Untouchable()) == [] and control.learning_rate == 0.04


class TestApply:
    def test_stop_training(self):
        """A stop_training decision stops, and produces no record."""
        control = Control()
        assert control.apply(stamped(r.StopTraining(reason="done"))) == []
        assert control.stop_training

    def test_a_refused_rate_is_the_models_failure(self):
        """A rate the adapter refuses becomes one sink_failed from "model" naming the
        decision's kind, seq and epoch; it is not raised."""
        control = Control(ScheduleModel())
        (fault,) = control.apply(set_lr(0.5, seq=11, epoch=3))
        assert isinstance(fault, r.SinkFailed)
        assert (fault.sink, fault.event, fault.cause_seq, fault.epoch) == \
            ("model", "set_learning_rate", 11, 3)
        assert fault.error == "TypeError" and "schedule" in fault.message
        assert control.learning_rate == 0.01  # the adapter's, unchanged

    def test_save_checkpoint_is_for_the_sinks(self):
        """A save_checkpoint decision changes nothing in the control."""
        numpy_model = model()
        control = Control(numpy_model)
        before = numpy_model.get_weights()
        decision = stamped(r.SaveCheckpoint(reason="best", path="/nowhere/ckpt.h5"))
        assert control.apply(decision) == []
        assert control.snapshots == {}
        assert all(np.array_equal(before[k], numpy_model.weights[k]) for k in before)

    @pytest.mark.parametrize("make", [snapshot, restore])
    def test_weights_without_a_model_are_a_warning(self, make):
        """Snapshot or restore without a model adapter: one warning record naming the tag,
        with the decision's seq and epoch."""
        (warning,) = Control().apply(make("best", seq=5, epoch=1))
        assert isinstance(warning, r.Warning)
        assert (warning.cause_seq, warning.epoch, warning.details) == (5, 1, {"tag": "best"})
        assert "model adapter" in warning.message

    def test_restore_of_an_unknown_tag_is_a_warning(self):
        """Restoring a tag nothing was kept under is a warning; the weights stay."""
        numpy_model = model()
        (warning,) = Control(numpy_model).apply(restore("never", seq=9, epoch=4))
        assert isinstance(warning, r.Warning) and "never" in warning.message
        assert (warning.cause_seq, warning.epoch) == (9, 4)
        assert np.array_equal(numpy_model.weights["w"], np.arange(3.0))

    def test_snapshot_then_restore_puts_the_weights_back(self):
        """A snapshot keeps a copy; a later restore puts it back into the model's own arrays
        and reports weights_restored for the decision."""
        numpy_model = model()
        control = Control(numpy_model)
        assert control.apply(snapshot("best", seq=3, epoch=0)) == []
        held = numpy_model.weights["w"]  # the loop's reference
        held += 10.0
        assert not np.array_equal(control.snapshots["best"]["w"], held)
        (done,) = control.apply(restore("best", seq=8, epoch=2))
        assert isinstance(done, r.WeightsRestored)
        assert (done.source, done.tag, done.cause_seq, done.epoch) == ("bus", "best", 8, 2)
        assert np.array_equal(numpy_model.weights["w"], np.arange(3.0))
        assert numpy_model.weights["w"] is held

    def test_a_restore_the_model_refuses_is_its_failure(self):
        """Weights of the wrong shape: one sink_failed from "model" on restore_weights."""
        numpy_model = model()
        control = Control(numpy_model)
        control.keep("odd", {"w": np.zeros(5)})
        (fault,) = control.apply(restore("odd", seq=4, epoch=1))
        assert isinstance(fault, r.SinkFailed)
        assert (fault.sink, fault.event, fault.cause_seq, fault.epoch) == \
            ("model", "restore_weights", 4, 1)

    def test_a_snapshot_the_model_cannot_give_is_its_failure(self):
        """A model whose get_weights raises: one sink_failed from "model", nothing kept."""
        control = Control(Untouchable())
        (fault,) = control.apply(snapshot("best", seq=2, epoch=0))
        assert (fault.sink, fault.event, fault.error) == \
            ("model", "snapshot_weights", "AssertionError")
        assert control.snapshots == {}

    def test_kept_optimizer_state_is_restored(self):
        """Weights kept with an optimizer state give both back, the state through
        set_optimizer_state."""
        adapter = OptimizerModel()
        control = Control(adapter)
        control.keep("backup", {"w": np.ones(2)}, optimizer={"momentum": np.full(2, 7.0)})
        (done,) = control.restore("backup", source="BackupAndRestore", epoch=3)
        assert (done.kind, done.source, done.tag, done.epoch, done.cause_seq) == \
            ("weights_restored", "BackupAndRestore", "backup", 3, None)
        assert np.array_equal(adapter.weights["w"], np.ones(2))
        assert np.array_equal(adapter.optimizer["momentum"], np.full(2, 7.0))

    def test_keeping_again_without_optimizer_forgets_it(self):
        """Weights kept again under a tag without an optimizer state restore no old state."""
        adapter = OptimizerModel()
        control = Control(adapter)
        control.keep("t", {"w": np.ones(2)}, optimizer={"momentum": np.full(2, 7.0)})
        control.keep("t", {"w": np.full(2, 2.0)})
        control.restore("t", source="x", epoch=None)
        assert np.array_equal(adapter.optimizer["momentum"], np.zeros(2))
        assert np.array_equal(adapter.weights["w"], np.full(2, 2.0))

    def test_an_adapter_without_set_optimizer_state_gets_the_weights(self):
        """Without set_optimizer_state only the weights are restored, and no failure."""
        adapter = OptimizerModel(with_setter=False)
        control = Control(adapter)
        control.keep("t", {"w": np.ones(2)}, optimizer={"momentum": np.full(2, 7.0)})
        (done,) = control.restore("t", source="x", epoch=1)
        assert done.kind == "weights_restored"
        assert np.array_equal(adapter.weights["w"], np.ones(2))


class TestReplayControl:
    def test_no_model_and_not_live(self):
        """A replay's control has no model and says it is not live."""
        control = ReplayControl(0.1)
        assert control.model is None and not control.live and Control().live

    def test_weights_decisions_do_nothing(self):
        """Snapshot and restore decisions keep nothing, record nothing, even with a model
        assigned."""
        control = ReplayControl(0.1)
        control.model = Untouchable()
        assert control.apply(snapshot()) == []
        assert control.apply(restore()) == []
        assert control.snapshots == {}

    def test_the_rate_follows_its_own_decisions(self):
        """The learning rate starts where given and follows the decisions applied, never a
        model's."""
        control = ReplayControl(0.1)
        control.model = Untouchable()
        assert control.learning_rate == 0.1
        assert control.apply(set_lr(0.05)) == []
        assert control.learning_rate == 0.05 == control.kept_learning_rate
        assert ReplayControl().learning_rate is None

    def test_stop_decisions_stop(self):
        """A replayed stop_training sets the replay's own stop flag."""
        control = ReplayControl()
        control.apply(stamped(r.StopTraining(reason="x")))
        assert control.stop_training

    @given(st.lists(learning_rates, min_size=1, max_size=10))
    def test_the_last_applied_rate_is_the_rate(self, values):
        """After any sequence of valid set_learning_rate decisions its rate is the last."""
        control = ReplayControl(0.5)
        for value in values:
            control.apply(set_lr(value))
        assert control.learning_rate == values[-1]

    @given(st.lists(st.tuples(st.sampled_from(["logged", "decided"]), learning_rates),
                    max_size=12))
    def test_without_a_what_if_the_rate_is_the_log_s(self, steps):
        """Fed logged rates (the loop's own moves) and decisions replayed as they were
        recorded, in any order, its rate is always the last the log gave, never departed."""
        control = ReplayControl(0.5)
        rate = 0.5
        for how, rate in steps:
            if how == "logged":
                control.follow(rate)
                assert not control.departed
            else:
                control.apply(set_lr(rate))
                control.recorded(set_lr(rate))
            assert control.learning_rate == rate

    @given(st.floats(1e-3, 1.0), st.floats(1e-3, 1.0), st.floats(1e-3, 1.0),
           st.lists(st.floats(1e-3, 10.0), min_size=1, max_size=8))
    def test_a_what_if_keeps_its_ratio_to_the_recorded_rate(self, start, mine, theirs, moves):
        """Once its decision set another rate than the recorded one, the loop's later moves
        (logged rates) move it by the same factor, and it says it departed."""
        control = ReplayControl(start)
        control.follow(start)
        control.apply(set_lr(mine))
        control.recorded(set_lr(theirs))
        for logged in moves:
            control.follow(logged)
            assert control.learning_rate == pytest.approx(logged * mine / theirs)
            assert control.departed == (control.learning_rate != logged)

    def test_a_rate_the_log_cannot_hold_is_not_followed(self):
        """A damaged log's rate (text, a list, negative, NaN) leaves the rate as it was."""
        control = ReplayControl(0.5)
        for bad in ("0.1", [0.1], -1.0, math.nan, math.inf, True, None):
            control.follow(bad)
            assert control.learning_rate == 0.5 and not control.departed

    def test_without_following_the_log_only_its_decisions_set_the_rate(self):
        """A shadow policy's control (follow_log=False) keeps its own rate, and says where
        the logged one differs from it."""
        control = ReplayControl(0.5, follow_log=False)
        control.recorded(set_lr(0.1))
        control.follow(0.2)
        assert control.learning_rate == 0.5 and control.departed
        control.apply(set_lr(0.2))
        control.follow(0.2)
        assert control.learning_rate == 0.2 and not control.departed

    def test_bad_values_are_refused(self):
        """A replay's control checks a rate as the live one does."""
        with pytest.raises(ConfigError):
            ReplayControl(-1.0)
        with pytest.raises(ConfigError):
            ReplayControl().set_learning_rate(math.nan)
