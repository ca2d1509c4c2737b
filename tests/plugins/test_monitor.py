"""plugins.monitor: the plugins' side of the shared monitor.

The rule itself (mode inference, strict improvement with |min_delta|, best tracking) is the
core's, tested in tests/eventbus/test_monitor_rule.py; here: that the plugins get that very
rule, that they find the direction when they first compare (as Keras 3 does), and the
parameter checks every plugin makes.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import eventbus.monitor
import plugins.monitor
from eventbus import Bus, ConfigError, PluginError, RunWarning
from eventbus.monitor import MAX_WORDS, MIN_WORDS, guess_mode
from eventbus.records import BatchBegin, BatchEnd, EpochBegin, EpochEnd, TrainBegin, TrainEnd
from eventbus.testing import run
from plugins import EarlyStopping, ModelCheckpoint, ReduceLROnPlateau
from plugins.monitor import require_int, require_real

#: drive(), run() and Bus() here have no model: the checkpoint writer says each save wrote no
#: file, which is beside what the tests so marked check (the save decisions).
NO_MODEL = pytest.mark.filterwarnings(
    "ignore:.*save_checkpoint from 'ModelCheckpoint' needs a model adapter:eventbus.RunWarning")
#: Every plugin that compares a metric, built with ``monitor`` and ``**kw``.
MONITORING = [
    lambda **kw: EarlyStopping(**kw), lambda **kw: ReduceLROnPlateau(**kw),
    lambda **kw: ModelCheckpoint("best.h5", save_best_only=True, **kw),
    lambda **kw: ModelCheckpoint("top-{epoch}.h5", save_top_k=2, **kw),
]
MONITORING_IDS = ["EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint",
                  "ModelCheckpoint-top-k"]
#: Names mode='auto' places: one word of a kind (either), with val_ and a neutral word around.
placed_names = st.builds("{}{}{}".format, st.sampled_from(["", "val_"]),
                         st.sampled_from(sorted(MIN_WORDS | MAX_WORDS)),
                         st.sampled_from(["", "_mean", "_2", "_head"]))


class TestTheCoreRule:
    @pytest.mark.parametrize("name", ["MAX_WORDS", "MIN_WORDS", "Mode", "Monitor", "fmt",
                                      "infer_mode", "require_real"])
    def test_names_are_the_cores(self, name: str) -> None:
        """plugins.monitor re-exports the core's objects: one rule, not a copy."""
        assert getattr(plugins.monitor, name) is getattr(eventbus.monitor, name)

    @pytest.mark.parametrize("make", [
        lambda **kw: EarlyStopping(**kw), lambda **kw: ReduceLROnPlateau(**kw),
        lambda **kw: ModelCheckpoint("best.h5", save_best_only=True, **kw),
    ], ids=["EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint"])
    def test_plugins_place_names_by_the_core_rule(self, make) -> None:
        """The plugins that monitor a metric place it by eventbus.monitor's words."""
        assert make(monitor="val_top1").tracker.mode == "max"
        assert make(monitor="val_perplexity").tracker.mode == "min"


def epoch_run(name: str, values: list[float | None]) -> list[Any]:
    """A run whose epoch logs carry ``name`` (None: that epoch's logs lack it)."""
    events: list[Any] = [TrainBegin()]
    for epoch, value in enumerate(values):
        logs = {"loss": 1.0} if value is None else {"loss": 1.0, name: value}
        events += [EpochBegin(epoch=epoch), EpochEnd(epoch=epoch, logs=logs)]
    return events + [TrainEnd()]


def first_failure(plugin: object, events: list[Any]) -> ConfigError:
    """The ConfigError behind the PluginError that publishing ``events`` ends with; the
    missing-monitor warnings before it are expected (and not raised)."""
    bus = Bus([plugin], learning_rate=0.1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RunWarning)
            with pytest.raises(PluginError) as info:
                for event in events:
                    bus.publish(event)
    finally:
        bus.close()
    assert isinstance(info.value.__cause__, ConfigError)
    return info.value.__cause__


class TestLazyDirection:
    """Keras 3 sets a monitoring callback's direction at its first epoch_end
    (``_set_monitor_op``), so a name ``mode="auto"`` cannot place builds, and fails when it
    must be compared. So do these plugins, all through the one rule."""

    @pytest.mark.parametrize("make", MONITORING, ids=MONITORING_IDS)
    def test_every_monitoring_plugin_builds_with_an_unplaceable_name(self, make) -> None:
        """Construction succeeds: mode stays "auto", the direction None, monitor_op None."""
        plugin = make(monitor="val_custom_metric")
        assert (plugin.monitor, plugin.mode) == ("val_custom_metric", "auto")
        assert plugin.tracker.mode is None and plugin.monitor_op is None
        assert plugin.get_config()["monitor"] == "val_custom_metric"

    @pytest.mark.parametrize("make", MONITORING, ids=MONITORING_IDS)
    def test_the_first_value_compared_raises_naming_the_event(self, make) -> None:
        """The first value compared is the ConfigError naming the plugin, the field mode, the
        metric and the event: EarlyStopping's and ReduceLROnPlateau's first epoch_end, as
        Keras 3's (even one without the metric); ModelCheckpoint's first save that carries
        it."""
        plugin = make(monitor="my_metric")
        error = first_failure(plugin, epoch_run("my_metric", [None, 0.5, 0.4]))
        name = type(plugin).__name__
        epoch = 2 if isinstance(plugin, ModelCheckpoint) else 1
        assert (error.plugin, error.field) == (name, "mode")
        # The first epoch lacks the metric: EarlyStopping and ReduceLROnPlateau say so too.
        held = "'loss', 'learning_rate'" if name == "ReduceLROnPlateau" else "'loss'"
        absent = "" if epoch == 2 else \
            f"; and 'my_metric' is not in the logs either (they hold {held}): is it misspelt?"
        assert str(error) == (
            f"{name}: mode='auto' cannot tell whether monitor='my_metric' should be minimised "
            f"or maximised at epoch_end (epoch {epoch}): its name has no word that says which "
            f"way is better. Pass mode='min' or mode='max' to {name}{absent}")

    def test_a_checkpoint_saving_every_n_batches_names_the_batch(self) -> None:
        """save_freq in batches compares at batch_end: the error names that batch."""
        events: list[Any] = [TrainBegin(), EpochBegin(epoch=0)]
        for batch in range(4):
            events += [BatchBegin(batch=batch, step=batch),
                       BatchEnd(batch=batch, step=batch, logs={"my_metric": 0.5})]
        plugin = ModelCheckpoint("m-{batch}.h5", monitor="my_metric", save_best_only=True,
                                 save_freq=2)
        error = first_failure(plugin, events)
        assert "at batch_end (batch 2 of epoch 1)" in str(error)

    @NO_MODEL
    def test_a_checkpoint_that_compares_nothing_never_asks(self) -> None:
        """Without save_best_only or save_top_k nothing is compared, so no direction is
        needed, ever (Keras 3 would still fail at the first epoch_end)."""
        _, records = run([ModelCheckpoint("m.h5", monitor="my_metric")],
                         epoch_run("my_metric", [0.5, 0.4]))
        assert [r.kind for r in records].count("save_checkpoint") == 2

    @NO_MODEL
    @pytest.mark.parametrize("make", MONITORING, ids=MONITORING_IDS)
    @given(name=placed_names, values=st.lists(
        st.one_of(st.none(), st.floats(-2.0, 2.0), st.just(math.nan)), max_size=8))
    def test_a_placed_name_decides_as_before(self, make, name: str,
                                             values: list[float | None]) -> None:
        """Property: for any name the rule places, every plugin makes with mode='auto' the
        decisions it makes with the mode the rule placed at construction."""
        assert guess_mode(name) is not None

        def outcomes(mode: str) -> list[tuple[Any, ...]]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RunWarning)
                _, records = run([make(monitor=name, mode=mode)], epoch_run(name, values),
                                 learning_rate=1.0)
            return [(r.kind, r.epoch, getattr(r, "reason", None)) for r in records
                    if r.category in ("decision", "outcome")]

        assert outcomes("auto") == outcomes(guess_mode(name))


class TestKerasNames:
    """``best`` and ``monitor_op`` as code written against Keras's callbacks uses them."""

    MAKERS = [lambda: EarlyStopping(monitor="loss", patience=3),
              lambda: ReduceLROnPlateau(monitor="loss", patience=1),
              lambda: ModelCheckpoint("best.keras", monitor="loss", save_best_only=True)]

    @pytest.mark.parametrize(("make", "reset"), list(zip(MAKERS, [True, True, False])),
                             ids=["EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint"])
    def test_best_may_be_set_and_train_begin_resets_it_as_keras_does(self, make, reset) -> None:
        """Keras's test_state_reset_across_fit_calls: state set by hand is cleared by the next
        fit's train_begin; ModelCheckpoint's best carries over to the next fit, as Keras's."""
        plugin = make()
        plugin.best = 0.1
        assert plugin.best == 0.1 and plugin.tracker.best == 0.1
        plugin.best = float("inf")  # Keras 2's start, accepted
        assert plugin.best == math.inf
        plugin.best = 0.5
        bus = Bus([plugin])
        bus.train_begin()
        assert plugin.best == (None if reset else 0.5)
        bus.close()

    @pytest.mark.parametrize("make", MAKERS, ids=["EarlyStopping", "ReduceLROnPlateau",
                                                   "ModelCheckpoint"])
    def test_a_best_set_by_hand_is_what_the_next_value_is_compared_with(self, make) -> None:
        plugin = make()
        plugin.best = 0.2
        assert not plugin.tracker.update(0.3)
        assert plugin.tracker.update(0.1) and plugin.best == 0.1

    @pytest.mark.parametrize("value", [math.nan, "0.1", True, [0.1]])
    def test_best_refuses_what_is_not_a_number(self, value: object) -> None:
        plugin = EarlyStopping(monitor="loss")
        with pytest.raises(ConfigError) as info:
            plugin.best = value
        assert (info.value.plugin, info.value.field) == ("EarlyStopping", "best")
        assert plugin.best is None

    def test_a_checkpoint_that_monitors_nothing_has_no_best_to_set(self) -> None:
        plugin = ModelCheckpoint("every.keras")
        assert plugin.best is None and plugin.monitor_op is None
        with pytest.raises(ConfigError, match="save_best_only"):
            plugin.best = 0.1

    @pytest.mark.parametrize("make", [
        lambda **kw: EarlyStopping(**kw), lambda **kw: ReduceLROnPlateau(**kw),
        lambda **kw: ModelCheckpoint("best.keras", save_best_only=True, **kw),
        lambda **kw: ModelCheckpoint("every.keras", **kw),
    ], ids=["EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint", "ModelCheckpoint-every"])
    def test_the_arguments_read_back_by_keras_names(self, make) -> None:
        """Code written against Keras reads ``monitor`` as the metric's name, ``mode`` as given
        and ``min_delta`` as its absolute value (Keras's test_EarlyStopping_reuse and
        friends); the rule object is ``tracker``."""
        default = make()
        assert default.monitor == "val_loss" and default.mode == "auto"
        plugin = make(monitor="val_acc", mode="max")
        assert (plugin.monitor, plugin.mode) == ("val_acc", "max")
        if plugin.tracker is not None:
            assert plugin.tracker.monitor == "val_acc" and plugin.tracker.mode == "max"
        if not isinstance(plugin, ModelCheckpoint):
            assert make(min_delta=-0.5).min_delta == 0.5

    def test_monitor_op_says_which_way_is_better(self) -> None:
        import numpy as np

        assert EarlyStopping(monitor="val_acc").monitor_op(2.0, 1.0)
        assert not EarlyStopping(monitor="val_loss").monitor_op(np.float64(2.0), 1.0)

    def test_get_monitor_value_is_keras_s(self) -> None:
        """EarlyStopping.get_monitor_value(logs): the value, or None and Keras's warning
        listing the metrics there."""
        stopper = EarlyStopping(monitor="val_loss")
        assert stopper.get_monitor_value({"val_loss": 0.25, "loss": 0.5}) == 0.25
        with pytest.warns(UserWarning, match="`val_loss` which is not available. Available "
                                             "metrics are: loss,acc"):
            assert stopper.get_monitor_value({"loss": 0.5, "acc": 0.75}) is None
        with pytest.warns(UserWarning, match="Available metrics are: $"):
            assert stopper.get_monitor_value(None) is None

    def test_other_keras_attributes(self, tmp_path) -> None:
        """CSVLogger's separator reads as Keras's ``sep``; TensorBoard keeps
        ``update_freq="batch"`` as Keras does, as 1 (the log header keeps what was given)."""
        from plugins import CSVLogger, TensorBoard

        assert CSVLogger(str(tmp_path / "t.csv"), separator=";").sep == ";"
        board = TensorBoard(str(tmp_path / "tb"), update_freq="batch")
        assert board.update_freq == 1
        assert board.get_config()["update_freq"] == "batch"
        assert TensorBoard(str(tmp_path / "tb"), update_freq=5).update_freq == 5
        assert TensorBoard(str(tmp_path / "tb")).update_freq == "epoch"


class TestChecks:
    @pytest.mark.parametrize("value", [True, "1", None, 1.5])
    def test_require_int_refuses_non_ints(self, value: object) -> None:
        """Bools, strings and floats are not counts."""
        with pytest.raises(ConfigError, match="patience"):
            require_int(value, "patience", "EarlyStopping")

    @pytest.mark.parametrize("value", [math.nan, math.inf, "0.1", False])
    def test_require_real_refuses_non_finite_and_non_numbers(self, value: object) -> None:
        """A parameter such as min_delta must be a finite real number."""
        with pytest.raises(ConfigError) as info:
            require_real(value, "min_delta", "EarlyStopping")
        assert info.value.field == "min_delta"
